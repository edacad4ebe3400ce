//! `splunk`: Splunk Observability Cloud (SignalFx) SignalFlow programs (Flagger's
//! pkg/metrics/providers/splunk.go on github.com/signalfx/signalflow-client-go/v2 v2.3.0).
//!
//! A query is a SignalFlow computation over a WebSocket: connect to
//! `wss://stream.<realm>.signalfx.com/v2/signalflow/connect` (derived from
//! `spec.provider.address` as Flagger does: the first `http` becomes `ws` and the first `api`
//! becomes `stream`), send `authenticate` with the Secret's `sf_token_key`, then `execute` the
//! program over the last 10 × interval with `immediate: true` on channel `ch-1`; the server
//! streams JSON control messages and binary data messages (a 20-byte header, optionally
//! gzip-compressed, then 17-byte points) until `END_OF_CHANNEL`. The value is the last point;
//! points of more than one time series are an error, none are no values. The online check is
//! `GET {api}/v2/metric?limit=1` with the `X-SF-Token` header.

use std::collections::BTreeSet;
use std::io::Read as _;
use std::time::Duration;

use aviary_core::ports::MetricError;
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::{Call, multiple_values, no_values, now_unix, parse_interval, send};
use crate::http::body_text;

const SIGNALFLOW_PATH: &str = "/v2/signalflow";
const VALIDATION_PATH: &str = "/v2/metric?limit=1";
const TOKEN_KEY: &str = "sf_token_key";
/// Flagger's timeout for connecting and sending (splunk.go:71).
const TIMEOUT: Duration = Duration::from_secs(5);
/// The client's read timeout (signalflow client.go:137): the longest wait for one message.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Channel names are `ch-N`; a fresh client's first is `ch-1` (client.go:185-188).
const CHANNEL: &str = "ch-1";

/// The SignalFlow stream endpoint for an address (splunk.go:76).
pub fn stream_url(address: &str) -> String {
    format!("{address}{SIGNALFLOW_PATH}")
        .replacen("http", "ws", 1)
        .replacen("api", "stream", 1)
}

/// The token-validation endpoint for an address (splunk.go:80).
pub fn validation_url(address: &str) -> String {
    format!("{address}{VALIDATION_PATH}")
        .replacen("ws", "http", 1)
        .replacen("stream", "api", 1)
}

fn address<'a>(call: &Call<'a>) -> Result<&'a str, MetricError> {
    call.provider
        .address
        .as_deref()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| MetricError::Provider("splunk endpoint is not set: set spec.provider.address".into()))
}

fn token(call: &Call<'_>) -> Result<String, MetricError> {
    call.require_creds(TOKEN_KEY)?
        .get(TOKEN_KEY)
        .ok_or_else(|| MetricError::Provider("splunk credentials does not contain sf_token_key".into()))
}

/// One point of a data message.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub tsid: i64,
    /// `None` for a value type SignalFlow does not define.
    pub value: Option<f64>,
}

/// A binary data message's channel and points (messages/binary.go:122-188).
pub fn parse_data_message(msg: &[u8]) -> Result<(String, Vec<Point>), String> {
    if msg.len() <= 20 {
        return Err(format!(
            "expected SignalFlow message of at least 21 bytes, got {} bytes",
            msg.len()
        ));
    }
    let flags = msg[2];
    let channel_bytes = &msg[4..20];
    let end = channel_bytes.iter().position(|b| *b == 0).unwrap_or(16);
    let channel = String::from_utf8_lossy(&channel_bytes[..end]).into_owned();
    let mut rest = msg[20..].to_vec();
    if flags & 1 != 0 {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&rest[..])
            .read_to_end(&mut out)
            .map_err(|e| format!("gzip: {e}"))?;
        rest = out;
    }
    if flags & 2 != 0 {
        return Err("cannot handle json binary message".into());
    }
    if rest.len() < 12 {
        return Err("unexpected EOF".into());
    }
    let count = u32::from_be_bytes(rest[8..12].try_into().expect("4 bytes")) as usize;
    let mut points = Vec::with_capacity(count.min(1024));
    for i in 0..count {
        let p = rest
            .get(12 + 17 * i..12 + 17 * (i + 1))
            .ok_or_else(|| "unexpected EOF".to_string())?;
        let tsid = i64::from_be_bytes(p[1..9].try_into().expect("8 bytes"));
        let raw: [u8; 8] = p[9..17].try_into().expect("8 bytes");
        let value = match p[0] {
            1 => Some(i64::from_be_bytes(raw) as f64),
            2 => Some(f64::from_be_bytes(raw)),
            3 => Some(f64::from(i32::from_be_bytes(
                raw[..4].try_into().expect("4 bytes"),
            ))),
            _ => None,
        };
        points.push(Point { tsid, value });
    }
    Ok((channel, points))
}

/// A computation error's text (signalflow computation.go:49-65): `code (type): message`.
fn computation_error(m: &Value) -> String {
    let mut e = m["error"]
        .as_f64()
        .map_or_else(|| "0".into(), |c| (c as i64).to_string());
    if let Some(t) = m["errorType"].as_str().filter(|t| !t.is_empty()) {
        e = format!("{e} ({t})");
    }
    if let Some(msg) = m["message"].as_str().filter(|s| !s.is_empty()) {
        e = format!("{e}: {msg}");
    }
    e
}

fn query_error(e: impl std::fmt::Display) -> MetricError {
    MetricError::Query(format!("error executing query: {e}"))
}

/// Executes the SignalFlow program over the last 10 × interval (splunk.go:98-153).
pub(crate) async fn query(call: &Call<'_>, interval: &str, program: &str) -> Result<f64, MetricError> {
    let address = address(call)?;
    let token = token(call)?;
    let from_delta = parse_interval(interval)?.as_millis() as u64 * 10;
    let url = format!("{}/connect", stream_url(address));
    let now = now_unix().as_millis() as u64;
    let (mut ws, _) = tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(url.as_str()))
        .await
        .map_err(|_| query_error("context deadline exceeded"))?
        .map_err(|e| query_error(format!("could not connect Signalflow websocket: {e}")))?;
    let auth = json!({"type": "authenticate", "token": token});
    // Go's field order of ExecuteRequest (requests.go:41-55).
    let execute = format!(
        r#"{{"type":"execute","program":{},"channel":"{CHANNEL}","start":{},"stop":{now},"resolution":0,"maxDelay":0,"immediate":true,"timezone":""}}"#,
        Value::from(program),
        now.saturating_sub(from_delta),
    );
    for text in [auth.to_string(), execute] {
        tokio::time::timeout(TIMEOUT, ws.send(Message::text(text)))
            .await
            .map_err(|_| query_error("context deadline exceeded"))?
            .map_err(query_error)?;
    }
    let points = receive(&mut ws).await;
    let _ = ws.close(None).await;
    let points: Vec<Point> = points?.into_iter().filter(|p| p.value.is_some()).collect();
    let Some(last) = points.last() else {
        return Err(MetricError::NoValues("invalid response: no values found".into()));
    };
    let series: BTreeSet<i64> = points.iter().map(|p| p.tsid).collect();
    if series.len() > 1 {
        return Err(match multiple_values() {
            MetricError::Query(m) => MetricError::Query(format!("invalid response: {m}")),
            other => other,
        });
    }
    last.value.ok_or_else(no_values)
}

/// Reads the channel until it ends: the data points, or the computation's error.
async fn receive<S>(ws: &mut S) -> Result<Vec<Point>, MetricError>
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let mut points = Vec::new();
    loop {
        let msg = match tokio::time::timeout(READ_TIMEOUT, ws.next()).await {
            Err(_) => return Err(query_error("read timeout waiting for the SignalFlow computation")),
            // The connection closed: the channel is closed, with what arrived so far.
            Ok(None) | Ok(Some(Err(_))) => return Ok(points),
            Ok(Some(Ok(m))) => m,
        };
        match msg {
            Message::Binary(b) => {
                let (channel, mut data) = parse_data_message(&b)
                    .map_err(|e| query_error(format!("could not parse SignalFlow message: {e}")))?;
                if channel == CHANNEL {
                    points.append(&mut data);
                }
            }
            Message::Text(t) => {
                let m: Value = serde_json::from_str(t.as_str())
                    .map_err(|e| query_error(format!("couldn't unmarshal JSON websocket message: {e}")))?;
                if m["channel"].as_str().is_some_and(|c| c != CHANNEL) {
                    continue;
                }
                match (m["type"].as_str(), m["event"].as_str()) {
                    (Some("control-message"), Some("END_OF_CHANNEL" | "CHANNEL_ABORT")) => return Ok(points),
                    (Some("error"), _) => return Err(query_error(computation_error(&m))),
                    _ => {}
                }
            }
            Message::Close(_) => return Ok(points),
            _ => {}
        }
    }
}

/// `GET {api}/v2/metric?limit=1` with `X-SF-Token`: online on 200 (splunk.go:166-194).
pub(crate) async fn online(call: &Call<'_>, interval: &str) -> Result<(), MetricError> {
    let address = address(call)?;
    let token = token(call)?;
    // Flagger builds the provider, which parses the interval, before checking it.
    if !interval.is_empty() {
        parse_interval(interval)?;
    }
    let url = super::parse_base_url(&validation_url(address))?;
    let mut value = reqwest::header::HeaderValue::from_str(&token)
        .map_err(|_| MetricError::Provider("sf_token_key is not a valid header value".into()))?;
    value.set_sensitive(true);
    let req = call
        .client
        .get(url.clone())
        .timeout(TIMEOUT)
        .headers(call.custom_headers()?)
        .header("X-SF-Token", value);
    let (status, body) = send(req, "splunk", &url).await?;
    if status != 200 {
        return Err(MetricError::Query(format!(
            "error response: {}",
            body_text(&body)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_derived_like_flaggers() {
        assert_eq!(
            stream_url("https://api.us1.signalfx.com"),
            "wss://stream.us1.signalfx.com/v2/signalflow"
        );
        assert_eq!(
            stream_url("wss://stream.us1.signalfx.com"),
            "wss://stream.us1.signalfx.com/v2/signalflow"
        );
        assert_eq!(
            validation_url("wss://stream.us1.signalfx.com"),
            "https://api.us1.signalfx.com/v2/metric?limit=1"
        );
        assert_eq!(
            validation_url("https://api.us1.signalfx.com"),
            "https://api.us1.signalfx.com/v2/metric?limit=1"
        );
        assert_eq!(stream_url("http://127.0.0.1:9"), "ws://127.0.0.1:9/v2/signalflow");
    }

    fn message(channel: &str, flags: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![1, 5, flags, 0];
        let mut c = [0u8; 16];
        c[..channel.len()].copy_from_slice(channel.as_bytes());
        m.extend_from_slice(&c);
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn data_messages_decode_every_value_type() {
        let mut body = 1_700_000_000_000u64.to_be_bytes().to_vec();
        body.extend_from_slice(&4u32.to_be_bytes());
        for (t, tsid, v) in [
            (1u8, 7i64, 42i64.to_be_bytes()),
            (2, 7, 0.5f64.to_be_bytes()),
            (3, 8, {
                let mut b = [0u8; 8];
                b[..4].copy_from_slice(&(-3i32).to_be_bytes());
                b
            }),
            (9, 9, [0; 8]),
        ] {
            body.push(t);
            body.extend_from_slice(&tsid.to_be_bytes());
            body.extend_from_slice(&v);
        }
        let (channel, points) = parse_data_message(&message("ch-1", 0, &body)).unwrap();
        assert_eq!(channel, "ch-1");
        let values: Vec<Option<f64>> = points.iter().map(|p| p.value).collect();
        assert_eq!(values, [Some(42.0), Some(0.5), Some(-3.0), None]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &body).unwrap();
        let (_, again) = parse_data_message(&message("ch-1", 1, &gz.finish().unwrap())).unwrap();
        assert_eq!(again, points);
        assert!(
            parse_data_message(&[0; 20])
                .unwrap_err()
                .contains("at least 21 bytes")
        );
        assert_eq!(
            parse_data_message(&message("ch-1", 2, b"{}")).unwrap_err(),
            "cannot handle json binary message"
        );
    }

    #[test]
    fn computation_errors_read_like_the_go_client() {
        assert_eq!(
            computation_error(
                &json!({"error": 400, "errorType": "ANALYTICS_PROGRAM_NAME_ERROR", "message": "data() is not defined"})
            ),
            "400 (ANALYTICS_PROGRAM_NAME_ERROR): data() is not defined"
        );
        assert_eq!(computation_error(&json!({"error": 500})), "500");
    }
}
