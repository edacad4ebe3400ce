//! Amazon CloudWatch `GetMetricData`, over the AWS JSON 1.0 protocol, signed with SigV4.
//!
//! The MetricTemplate's query is a JSON array of `MetricDataQuery` (AWS' field names: `Id`,
//! `Expression`, `MetricStat`, `ReturnData`, …), sent as `MetricDataQueries` with
//! `StartTime` = now − 10 × interval, `EndTime` = now (epoch seconds) and `MaxDatapoints` 20 to
//! `POST https://monitoring.<region>.amazonaws.com/` (`spec.provider.address` overrides the
//! endpoint), header `X-Amz-Target: GraniteServiceVersion20100801.GetMetricData`. `region` is
//! required. The value is `MetricDataResults[0].Values[0]`; no results or no values are no values.
//! Up to 3 attempts on connection errors, throttling and 5xx, as the AWS SDKs do.
//!
//! Credentials: the Secret's `aws_access_key_id`, `aws_secret_access_key` and optional
//! `aws_session_token` when `spec.provider.secretRef` is set; otherwise the agent's
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`. (Flagger uses the SDK's
//! whole default chain; web identity (IRSA) and instance profiles are not read by aviary.)
//!
//! The online check sends an empty `GetMetricData`: a success or a validation error (the request
//! was authenticated and understood) means online.

use std::time::Duration;

use aviary_core::ports::MetricError;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde::Deserialize;
use serde_json::Value;
use url::Url;

use super::{Call, now_unix, parse_interval, send};
use crate::http::body_text;

/// Timeout of one attempt.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts per query (the SDKs' standard retry mode).
pub const ATTEMPTS: u32 = 3;
const TARGET: &str = "GraniteServiceVersion20100801.GetMetricData";
const JSON_1_0: &str = "application/x-amz-json-1.0";

/// AWS credentials. `Debug` shows the key id only.
#[derive(Clone, PartialEq, Eq, derive_more::Debug)]
pub struct AwsCredentials {
    pub access_key_id: String,
    #[debug(skip)]
    pub secret_access_key: String,
    #[debug(skip)]
    pub session_token: Option<String>,
}

impl AwsCredentials {
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`, when the first two
    /// are set.
    pub fn from_env() -> Option<Self> {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Some(Self {
            access_key_id: get("AWS_ACCESS_KEY_ID")?,
            secret_access_key: get("AWS_SECRET_ACCESS_KEY")?,
            session_token: get("AWS_SESSION_TOKEN"),
        })
    }
}

fn credentials(call: &Call<'_>) -> Result<AwsCredentials, MetricError> {
    if let Some(creds) = call.creds {
        return Ok(AwsCredentials {
            access_key_id: creds.require("aws_access_key_id", "cloudwatch")?,
            secret_access_key: creds.require("aws_secret_access_key", "cloudwatch")?,
            session_token: creds.get("aws_session_token"),
        });
    }
    call.aws_env.cloned().ok_or_else(|| {
        MetricError::Provider(
            "cloudwatch needs AWS credentials: set spec.provider.secretRef to a Secret with \
             aws_access_key_id and aws_secret_access_key, or set AWS_ACCESS_KEY_ID and \
             AWS_SECRET_ACCESS_KEY in the agent's environment"
                .into(),
        )
    })
}

fn region(call: &Call<'_>) -> Result<String, MetricError> {
    call.provider
        .region
        .clone()
        .filter(|r| !r.is_empty())
        .ok_or_else(|| {
            MetricError::Provider("spec.provider.region is required for cloudwatch (e.g. us-east-1)".into())
        })
}

fn endpoint(call: &Call<'_>, region: &str) -> Result<Url, MetricError> {
    let suffix = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    let default = format!("https://monitoring.{region}.{suffix}/");
    call.address(Some(&default))
}

/// Runs a GetMetricData query.
pub(crate) async fn query(call: &Call<'_>, interval: &str, query: &str) -> Result<f64, MetricError> {
    let window = parse_interval(interval)? * 10;
    let queries: Value = serde_json::from_str(query).map_err(|e| {
        MetricError::Query(format!(
            "the cloudwatch query must be a JSON array of MetricDataQuery: {e}"
        ))
    })?;
    if !queries.is_array() {
        return Err(MetricError::Query(
            "the cloudwatch query must be a JSON array of MetricDataQuery".into(),
        ));
    }
    let end = now_unix().as_secs();
    let body = serde_json::json!({
        "MetricDataQueries": queries,
        "StartTime": end.saturating_sub(window.as_secs()),
        "EndTime": end,
        "MaxDatapoints": 20,
    });
    let (status, body) = get_metric_data(call, &body).await?;
    if !status.is_success() {
        return Err(aws_error(&body));
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Resp {
        #[serde(default)]
        metric_data_results: Vec<Result_>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Result_ {
        #[serde(default)]
        values: Vec<f64>,
    }
    let resp: Resp = serde_json::from_slice(&body).map_err(|e| super::unmarshal_error(e, &body))?;
    resp.metric_data_results
        .first()
        .and_then(|r| r.values.first().copied())
        .ok_or_else(super::no_values)
}

/// An empty GetMetricData: authenticated and understood (2xx or a validation error) is online.
pub(crate) async fn online(call: &Call<'_>) -> Result<(), MetricError> {
    let end = now_unix().as_secs();
    let body = serde_json::json!({
        "MetricDataQueries": [],
        "StartTime": end.saturating_sub(60),
        "EndTime": end,
    });
    let (status, body) = get_metric_data(call, &body).await?;
    if status.is_success() {
        return Ok(());
    }
    let kind = error_kind(&body);
    if status == 400 && (kind.contains("Validation") || kind.contains("Parameter")) {
        return Ok(());
    }
    Err(aws_error(&body))
}

async fn get_metric_data(
    call: &Call<'_>,
    body: &Value,
) -> Result<(reqwest::StatusCode, bytes::Bytes), MetricError> {
    let creds = credentials(call)?;
    let region = region(call)?;
    let url = endpoint(call, &region)?;
    let payload = body.to_string();
    let mut last = None;
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
        }
        let amz_date = sigv4::amz_date(std::time::SystemTime::now());
        let host = host_header(&url);
        let mut headers: Vec<(String, String)> = vec![
            ("content-type".into(), JSON_1_0.into()),
            ("host".into(), host),
            ("x-amz-date".into(), amz_date.clone()),
            ("x-amz-target".into(), TARGET.into()),
        ];
        if let Some(t) = &creds.session_token {
            headers.push(("x-amz-security-token".into(), t.clone()));
        }
        let auth = sigv4::authorization(
            &creds,
            &sigv4::Request {
                method: "POST",
                path: url.path(),
                query: url.query().unwrap_or(""),
                headers: &headers,
                payload: payload.as_bytes(),
            },
            &amz_date,
            &region,
            "monitoring",
        );
        let mut req = call
            .client
            .post(url.clone())
            .timeout(TIMEOUT)
            .headers(call.custom_headers()?)
            .header(CONTENT_TYPE, JSON_1_0)
            .header("X-Amz-Date", &amz_date)
            .header("X-Amz-Target", TARGET);
        if let Some(t) = &creds.session_token {
            let mut v = HeaderValue::from_str(t)
                .map_err(|_| MetricError::Provider("aws_session_token is not a valid header value".into()))?;
            v.set_sensitive(true);
            req = req.header("X-Amz-Security-Token", v);
        }
        let mut auth = HeaderValue::from_str(&auth)
            .map_err(|_| MetricError::Provider("aws_access_key_id is not a valid header value".into()))?;
        auth.set_sensitive(true);
        req = req.header(AUTHORIZATION, auth).body(payload.clone());
        match send(req, "cloudwatch", &url).await {
            Ok((status, body)) => {
                let throttled = status == 429 || error_kind(&body).contains("Throttling");
                if (status.is_server_error() || throttled) && attempt + 1 < ATTEMPTS {
                    last = Some(Ok((status, body)));
                    continue;
                }
                return Ok((status, body));
            }
            Err(e) => last = Some(Err(e)),
        }
    }
    last.unwrap_or_else(|| Err(MetricError::Query("cloudwatch: no attempt was made".into())))
}

/// The `Host` header reqwest sends: the host, and the port unless it is the scheme's default.
fn host_header(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    }
}

fn error_kind(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("__type").and_then(Value::as_str).map(str::to_string))
        .map(|t| t.rsplit('#').next().unwrap_or_default().to_string())
        .unwrap_or_default()
}

fn aws_error(body: &[u8]) -> MetricError {
    let v: Option<Value> = serde_json::from_slice(body).ok();
    let message = v
        .as_ref()
        .and_then(|v| v.get("message").or_else(|| v.get("Message")))
        .and_then(Value::as_str)
        .map(str::to_string);
    match message {
        Some(m) => MetricError::Query(format!("cloudwatch {}: {m}", error_kind(body))),
        None => MetricError::Query(format!("error response: {}", body_text(body))),
    }
}

/// AWS Signature Version 4 (header signing), as documented in AWS' "Signature Version 4 signing
/// process". Public so that tests (and test servers) can verify a request.
pub mod sigv4 {
    use std::time::SystemTime;

    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256};

    use super::AwsCredentials;

    /// What is signed of a request. Header names must be lower-case; every listed header is
    /// signed.
    #[derive(Debug, Clone, Copy)]
    pub struct Request<'a> {
        pub method: &'a str,
        pub path: &'a str,
        /// The raw query string (without `?`).
        pub query: &'a str,
        pub headers: &'a [(String, String)],
        pub payload: &'a [u8],
    }

    /// `YYYYMMDD'T'HHMMSS'Z'` in UTC.
    pub fn amz_date(t: SystemTime) -> String {
        let ts = jiff::Timestamp::try_from(t).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        ts.strftime("%Y%m%dT%H%M%SZ").to_string()
    }

    fn hex_sha256(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
        mac.update(data);
        mac.finalize().into_bytes().to_vec()
    }

    /// RFC 3986 encoding of everything but the unreserved characters (and `/` when `keep_slash`).
    fn uri_encode(s: &str, keep_slash: bool) -> String {
        let mut out = String::with_capacity(s.len());
        for b in s.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
                b'/' if keep_slash => out.push('/'),
                b => out.push_str(&format!("%{b:02X}")),
            }
        }
        out
    }

    fn canonical_query(query: &str) -> String {
        let mut pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (uri_encode(&k, false), uri_encode(&v, false)))
            .collect();
        pairs.sort();
        pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    }

    /// The canonical request and the signed-headers list.
    pub fn canonical_request(req: &Request<'_>) -> (String, String) {
        let mut headers: Vec<(String, String)> = req
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.to_ascii_lowercase(),
                    v.split_whitespace().collect::<Vec<_>>().join(" "),
                )
            })
            .collect();
        headers.sort();
        let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
        let signed: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
        let signed = signed.join(";");
        let path = if req.path.is_empty() { "/" } else { req.path };
        let canonical = format!(
            "{}\n{}\n{}\n{}\n{}\n{}",
            req.method,
            uri_encode(path, true),
            canonical_query(req.query),
            canonical_headers,
            signed,
            hex_sha256(req.payload)
        );
        (canonical, signed)
    }

    /// The derived signing key of a day, region and service.
    pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
        let k = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
        let k = hmac(&k, region.as_bytes());
        let k = hmac(&k, service.as_bytes());
        hmac(&k, b"aws4_request")
    }

    /// The hex signature of a request.
    pub fn signature(
        secret: &str,
        req: &Request<'_>,
        amz_date: &str,
        region: &str,
        service: &str,
    ) -> (String, String) {
        let date = &amz_date[..8.min(amz_date.len())];
        let (canonical, signed) = canonical_request(req);
        let scope = format!("{date}/{region}/{service}/aws4_request");
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            hex_sha256(canonical.as_bytes())
        );
        let key = signing_key(secret, date, region, service);
        (hex::encode(hmac(&key, to_sign.as_bytes())), signed)
    }

    /// The `Authorization` header value.
    pub fn authorization(
        creds: &AwsCredentials,
        req: &Request<'_>,
        amz_date: &str,
        region: &str,
        service: &str,
    ) -> String {
        let (sig, signed) = signature(&creds.secret_access_key, req, amz_date, region, service);
        let date = &amz_date[..8.min(amz_date.len())];
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{date}/{region}/{service}/aws4_request, SignedHeaders={signed}, Signature={sig}",
            creds.access_key_id
        )
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        // AWS' published example: IAM ListUsers signed on 2015-08-30 with the documentation keys.
        fn example() -> (Vec<(String, String)>, &'static str) {
            (
                vec![
                    (
                        "content-type".into(),
                        "application/x-www-form-urlencoded; charset=utf-8".into(),
                    ),
                    ("host".into(), "iam.amazonaws.com".into()),
                    ("x-amz-date".into(), "20150830T123600Z".into()),
                ],
                "Action=ListUsers&Version=2010-05-08",
            )
        }

        #[test]
        fn aws_documentation_example() {
            let (headers, query) = example();
            let req = Request {
                method: "GET",
                path: "/",
                query,
                headers: &headers,
                payload: b"",
            };
            let (canonical, signed) = canonical_request(&req);
            assert_eq!(signed, "content-type;host;x-amz-date");
            assert_eq!(
                hex_sha256(canonical.as_bytes()),
                "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59"
            );
            let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
            assert_eq!(
                hex::encode(signing_key(secret, "20150830", "us-east-1", "iam")),
                "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9"
            );
            let (sig, _) = signature(secret, &req, "20150830T123600Z", "us-east-1", "iam");
            assert_eq!(
                sig,
                "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
            );
            let creds = AwsCredentials {
                access_key_id: "AKIDEXAMPLE".into(),
                secret_access_key: secret.into(),
                session_token: None,
            };
            assert_eq!(
                authorization(&creds, &req, "20150830T123600Z", "us-east-1", "iam"),
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date, \
                 Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
            );
        }

        #[test]
        fn dates_are_basic_iso8601() {
            let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_440_938_160);
            assert_eq!(amz_date(t), "20150830T123600Z");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_the_key_id_only() {
        let creds = AwsCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI".into(),
            session_token: Some("token-secret".into()),
        };
        assert_eq!(
            format!("{creds:?}"),
            r#"AwsCredentials { access_key_id: "AKIDEXAMPLE", .. }"#
        );
    }
}
