//! `stackdriver`: Google Cloud Monitoring's Monitoring Query Language (Flagger's
//! pkg/metrics/providers/stackdriver.go, which calls `QueryTimeSeries` through
//! cloud.google.com/go/monitoring v1.29.0).
//!
//! aviary sends the same call through the API's REST binding: `POST
//! {endpoint}/v3/projects/{project}/timeSeries:query` with `{"query": …}`. The endpoint is
//! `https://monitoring.googleapis.com`, or `spec.provider.address` when set (Flagger ignores the
//! address). Credentials are the Secret's `project` and `serviceAccountKey`, as in Flagger: a
//! service-account key signs a self-signed JWT with the client's default scopes, exactly what
//! Google's Go auth library does for this client (cloud.google.com/go/auth v0.20.0
//! credentials/selfsignedjwt.go; monitoring's `EnableJwtWithScope`); without a key, Google's
//! application default credentials: the key file named by `GOOGLE_APPLICATION_CREDENTIALS`, else
//! the GCE/GKE metadata server's token (`GCE_METADATA_HOST` moves it).

use std::path::PathBuf;
use std::time::Duration;

use aviary_core::ports::MetricError;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Call, Credentials, join_path, no_values, now_unix, parse_base_url, send};
use crate::http::{self, body_text};

/// The API's endpoint.
pub const ENDPOINT: &str = "https://monitoring.googleapis.com";
/// The scopes cloud.google.com/go/monitoring asks for (apiv3/v2/helpers.go:50-57).
pub const SCOPES: &[&str] = &[
    "https://www.googleapis.com/auth/cloud-platform",
    "https://www.googleapis.com/auth/monitoring",
    "https://www.googleapis.com/auth/monitoring.read",
    "https://www.googleapis.com/auth/monitoring.write",
];
const TIMEOUT: Duration = Duration::from_secs(10);
/// Pages read looking for the first series.
const MAX_PAGES: usize = 10;

/// Google's application default credentials, as the agent's environment gives them.
#[derive(Debug, Clone, Default)]
pub struct GoogleEnv {
    /// `GOOGLE_APPLICATION_CREDENTIALS`: a service-account key file.
    pub credentials_file: Option<PathBuf>,
    /// `GCE_METADATA_HOST`, else `metadata.google.internal`: where the metadata server is.
    pub metadata_host: String,
}

impl GoogleEnv {
    /// Reads `GOOGLE_APPLICATION_CREDENTIALS` and `GCE_METADATA_HOST`.
    pub fn from_env() -> Self {
        Self {
            credentials_file: std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            metadata_host: std::env::var("GCE_METADATA_HOST")
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "metadata.google.internal".into()),
        }
    }
}

/// The fields of a service-account key the JWT needs.
#[derive(Deserialize)]
struct ServiceAccountKey {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    client_email: String,
    #[serde(default)]
    private_key: String,
    #[serde(default)]
    private_key_id: String,
}

/// The JWT claims, in the order Google's library writes them (internal/jwt/jwt.go:61-76).
#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    scope: String,
    exp: u64,
    iat: u64,
    aud: &'a str,
    sub: &'a str,
}

/// A token and the secrets behind it, to keep out of error texts.
struct Bearer {
    token: String,
    secrets: Vec<String>,
}

/// Signs a self-signed JWT with a service-account key: RS256, `kid` = the key's id, issuer and
/// subject = the client e-mail, the client's scopes, no audience, valid for an hour.
pub fn self_signed_jwt(key_json: &str, now: u64) -> Result<String, String> {
    let key: ServiceAccountKey = serde_json::from_str(key_json)
        .map_err(|e| format!("serviceAccountKey is not a service-account key file: {e}"))?;
    if key.kind != "service_account" {
        return Err(format!(
            "serviceAccountKey has type {:?}; only service_account keys are supported",
            key.kind
        ));
    }
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": key.private_key_id});
    let claims = Claims {
        iss: &key.client_email,
        scope: SCOPES.join(" "),
        exp: now + 3600,
        iat: now,
        aud: "",
        sub: &key.client_email,
    };
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).map_err(|e| e.to_string())?)
    );
    let der = pem_body(&key.private_key)?;
    let pair = ring::signature::RsaKeyPair::from_pkcs8(&der)
        .map_err(|e| format!("serviceAccountKey: the private_key is not an RSA PKCS#8 key: {e}"))?;
    let mut signature = vec![0; pair.public().modulus_len()];
    pair.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        signing_input.as_bytes(),
        &mut signature,
    )
    .map_err(|_| "serviceAccountKey: signing the JWT failed".to_string())?;
    Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature)))
}

/// The DER inside a PEM block.
fn pem_body(pem: &str) -> Result<Vec<u8>, String> {
    let b64: String = pem
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("-----"))
        .collect();
    STANDARD
        .decode(b64)
        .map_err(|e| format!("serviceAccountKey: the private_key is not PEM: {e}"))
}

/// The project (`projects/<id>`) and the bearer token of a call.
async fn authorize(call: &Call<'_>) -> Result<(String, Bearer), MetricError> {
    let creds = call.require_creds("project (and serviceAccountKey)")?;
    let project = creds.get("project").ok_or_else(|| {
        MetricError::Provider(format!(
            "stackdriver credentials does not contain a project id: add `project` to the Secret {}/{}",
            creds.namespace, creds.secret
        ))
    })?;
    let bearer = match creds.get("serviceAccountKey") {
        Some(key) => key_bearer(&key)?,
        None => default_bearer(call, creds).await?,
    };
    Ok((format!("projects/{project}"), bearer))
}

fn key_bearer(key_json: &str) -> Result<Bearer, MetricError> {
    let token = self_signed_jwt(key_json, now_unix().as_secs()).map_err(MetricError::Provider)?;
    let mut secrets = vec![token.clone()];
    if let Ok(k) = serde_json::from_str::<ServiceAccountKey>(key_json) {
        secrets.extend([k.private_key, k.private_key_id]);
    }
    Ok(Bearer { token, secrets })
}

/// Application default credentials: the key file, else the metadata server.
async fn default_bearer(call: &Call<'_>, creds: &Credentials) -> Result<Bearer, MetricError> {
    if let Some(path) = &call.google_env.credentials_file {
        let key = std::fs::read_to_string(path).map_err(|e| {
            MetricError::Provider(format!("GOOGLE_APPLICATION_CREDENTIALS {}: {e}", path.display()))
        })?;
        return key_bearer(&key);
    }
    let url = format!(
        "http://{}/computeMetadata/v1/instance/service-accounts/default/token",
        call.google_env.metadata_host
    );
    let url = parse_base_url(&url)?;
    let req = call
        .client
        .get(url.clone())
        .timeout(TIMEOUT)
        .header("Metadata-Flavor", "Google");
    let (status, body) = send(req, "metadata server", &url).await.map_err(|e| {
        MetricError::Provider(format!(
            "no serviceAccountKey in the Secret {}/{} and no application default credentials: {e}",
            creds.namespace, creds.secret
        ))
    })?;
    if status != 200 {
        return Err(MetricError::Provider(format!(
            "the metadata server refused a token ({status}): {}",
            body_text(&body)
        )));
    }
    let token = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["access_token"].as_str().map(str::to_string))
        .ok_or_else(|| {
            MetricError::Provider("the metadata server's token answer has no access_token".into())
        })?;
    Ok(Bearer {
        secrets: vec![token.clone()],
        token,
    })
}

/// A gRPC status as the REST binding reports it.
#[derive(Debug)]
struct Status {
    code: String,
    message: String,
}

impl Status {
    /// Go's `status.Error` text: `rpc error: code = PermissionDenied desc = …`.
    fn rpc(&self) -> String {
        format!("rpc error: code = {} desc = {}", self.code, self.message)
    }
}

/// `PERMISSION_DENIED` → `PermissionDenied` (Go's `codes.Code` names); a bare HTTP status is
/// mapped as Google's REST binding maps codes.
fn status_of(http_status: u16, body: &[u8]) -> Status {
    let parsed = serde_json::from_slice::<Value>(body).ok();
    let err = parsed.as_ref().map(|v| &v["error"]);
    let name = err.and_then(|e| e["status"].as_str()).map(camel);
    let code = name.unwrap_or_else(|| {
        match http_status {
            400 => "InvalidArgument",
            401 => "Unauthenticated",
            403 => "PermissionDenied",
            404 => "NotFound",
            409 => "Aborted",
            429 => "ResourceExhausted",
            499 => "Canceled",
            500 => "Internal",
            501 => "Unimplemented",
            503 => "Unavailable",
            504 => "DeadlineExceeded",
            _ => "Unknown",
        }
        .to_string()
    });
    let message = err
        .and_then(|e| e["message"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| body_text(body));
    Status { code, message }
}

fn camel(upper: &str) -> String {
    match upper {
        "OK" => "OK".into(),
        _ => upper
            .split('_')
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_ascii_uppercase().to_string() + &c.as_str().to_ascii_lowercase())
                    .unwrap_or_default()
            })
            .collect(),
    }
}

/// One `timeSeries:query` page: `Ok(body)` or the call's status.
async fn query_page(
    call: &Call<'_>,
    project: &str,
    bearer: &Bearer,
    query: &str,
    page_token: Option<&str>,
) -> Result<Value, Status> {
    let base = call.address(Some(ENDPOINT)).map_err(|e| Status {
        code: "InvalidArgument".into(),
        message: e.to_string(),
    })?;
    let url = join_path(&base, &format!("/v3/{project}/timeSeries:query"));
    let mut body = json!({"query": query});
    if let Some(t) = page_token {
        body["pageToken"] = Value::from(t);
    }
    let mut auth = HeaderValue::from_str(&format!("Bearer {}", bearer.token)).map_err(|_| Status {
        code: "Unauthenticated".into(),
        message: "the token is not a valid header value".into(),
    })?;
    auth.set_sensitive(true);
    let headers = call.custom_headers().map_err(|e| Status {
        code: "InvalidArgument".into(),
        message: e.to_string(),
    })?;
    let req = call
        .client
        .post(url.clone())
        .timeout(TIMEOUT)
        .headers(headers)
        .header(CONTENT_TYPE, "application/json")
        .header(AUTHORIZATION, auth)
        .body(body.to_string());
    let (status, resp) = send(req, "stackdriver", &url).await.map_err(|e| Status {
        // A connection the client could not make is gRPC's Unavailable.
        code: "Unavailable".into(),
        message: e.to_string(),
    })?;
    if status != 200 {
        return Err(status_of(status.as_u16(), &resp));
    }
    serde_json::from_slice(&resp).map_err(|e| Status {
        code: "Internal".into(),
        message: format!("error unmarshaling response: {e}, '{}'", body_text(&resp)),
    })
}

/// Runs an MQL query: the first value of the first point of the first series
/// (stackdriver.go:78-115).
pub(crate) async fn query(call: &Call<'_>, mql: &str) -> Result<f64, MetricError> {
    let (project, bearer) = authorize(call).await?;
    let result = first_value(call, &project, &bearer, mql).await;
    result.map_err(|e| redact(e, &bearer))
}

async fn first_value(call: &Call<'_>, project: &str, bearer: &Bearer, mql: &str) -> Result<f64, MetricError> {
    let mut page_token: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let page = query_page(call, project, bearer, mql, page_token.as_deref())
            .await
            .map_err(|s| MetricError::Query(format!("error requesting stackdriver: {}", s.rpc())))?;
        if let Some(series) = page["timeSeriesData"].as_array().and_then(|d| d.first()) {
            let Some(value) = series["pointData"]
                .as_array()
                .and_then(|p| p.first())
                .and_then(|p| p["values"].as_array())
                .and_then(|v| v.first())
            else {
                return Err(no_values());
            };
            return typed_value(value);
        }
        match page["nextPageToken"].as_str().filter(|t| !t.is_empty()) {
            Some(t) => page_token = Some(t.to_string()),
            None => break,
        }
    }
    Err(no_values())
}

/// A TypedValue's number: `doubleValue`, or `int64Value` (a decimal string in JSON).
fn typed_value(v: &Value) -> Result<f64, MetricError> {
    if let Some(d) = v.get("doubleValue") {
        return d
            .as_f64()
            .or_else(|| d.as_str().and_then(|s| s.parse().ok()))
            .ok_or_else(|| MetricError::Query(format!("invalid doubleValue {d}")));
    }
    if let Some(i) = v.get("int64Value") {
        return i
            .as_str()
            .and_then(|s| s.parse::<i64>().ok())
            .or_else(|| i.as_i64())
            .map(|n| n as f64)
            .ok_or_else(|| MetricError::Query(format!("invalid int64Value {i}")));
    }
    Err(MetricError::Query(format!(
        "the first point's value is not a number: {v}"
    )))
}

/// Online when an empty query is refused as InvalidArgument (or accepted): anything else, a
/// missing permission say, is not (stackdriver.go:117-145).
pub(crate) async fn online(call: &Call<'_>) -> Result<(), MetricError> {
    let (project, bearer) = authorize(call).await?;
    match query_page(call, &project, &bearer, "", None).await {
        Ok(_) => Ok(()),
        Err(s) if s.code == "InvalidArgument" => Ok(()),
        Err(s) => Err(redact(
            MetricError::Query(format!("unexpected status code: {}", s.code)),
            &bearer,
        )),
    }
}

fn redact(e: MetricError, bearer: &Bearer) -> MetricError {
    let mut r = http::Redactor::new();
    for s in &bearer.secrets {
        r.secret(s);
    }
    super::redact_error(e, &r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_codes_are_gos_names() {
        let s = status_of(
            403,
            br#"{"error": {"code": 403, "message": "Permission monitoring.timeSeries.list denied", "status": "PERMISSION_DENIED"}}"#,
        );
        assert_eq!(
            s.rpc(),
            "rpc error: code = PermissionDenied desc = Permission monitoring.timeSeries.list denied"
        );
        assert_eq!(status_of(503, b"upstream gone").code, "Unavailable");
        assert_eq!(camel("INVALID_ARGUMENT"), "InvalidArgument");
    }

    #[test]
    fn values_are_doubles_or_int64s() {
        assert_eq!(typed_value(&json!({"doubleValue": 0.25})).unwrap(), 0.25);
        assert_eq!(typed_value(&json!({"int64Value": "42"})).unwrap(), 42.0);
        assert!(typed_value(&json!({"boolValue": true})).is_err());
    }

    #[test]
    fn keys_must_be_service_account_keys() {
        let e = self_signed_jwt(r#"{"type": "authorized_user"}"#, 0).unwrap_err();
        assert!(e.contains("only service_account keys"), "{e}");
        let e = self_signed_jwt(
            r#"{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}"#,
            0,
        )
        .unwrap_err();
        assert!(e.contains("not an RSA PKCS#8 key"), "{e}");
    }
}
