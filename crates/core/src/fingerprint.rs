//! Stable revision fingerprints: sha256 of canonical JSON (object keys sorted, no whitespace).
//!
//! Flagger hashes a go-spew dump of the pod template, which changes whenever Kubernetes adds a
//! field to the Go structs (Flagger #1673) and cannot be reproduced outside Go. A hash of
//! canonical JSON depends only on the values that are set.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Hex characters kept from the digest (128 bits).
const FINGERPRINT_HEX: usize = 32;

/// Canonical JSON: sorted object keys, no insignificant whitespace.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let sorted: BTreeMap<&String, &Value> = map.iter().collect();
            out.push('{');
            for (i, (k, v)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Hex sha256 of `bytes`, truncated to `hex_chars`.
pub fn sha256_hex(bytes: &[u8], hex_chars: usize) -> String {
    let digest = Sha256::digest(bytes);
    let mut s = String::with_capacity(64);
    for b in digest {
        let _ = write!(s, "{b:02x}");
    }
    s.truncate(hex_chars.min(64));
    s
}

/// The fingerprint of a workload template (or any JSON value).
pub fn fingerprint(value: &Value) -> String {
    sha256_hex(canonical_json(value).as_bytes(), FINGERPRINT_HEX)
}

/// The webhook payload `checksum`: a hash over the tracked configs and the last applied spec.
pub fn checksum(tracked_configs: Option<&BTreeMap<String, String>>, last_applied_spec: &str) -> String {
    let v = serde_json::json!({"trackedConfigs": tracked_configs, "lastAppliedSpec": last_applied_spec});
    fingerprint(&v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_order_and_whitespace_do_not_matter() {
        let a: Value = serde_json::from_str(r#"{"b": 1, "a": {"y": [1, 2], "x": "s"}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":{"x":"s","y":[1,2]},"b":1}"#).unwrap();
        assert_eq!(canonical_json(&a), r#"{"a":{"x":"s","y":[1,2]},"b":1}"#);
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_eq!(fingerprint(&a).len(), 32);
    }

    #[test]
    fn values_matter() {
        let a = json!({"containers": [{"image": "podinfo:6.0.0"}]});
        let b = json!({"containers": [{"image": "podinfo:6.0.1"}]});
        assert_ne!(fingerprint(&a), fingerprint(&b));
    }

    #[test]
    fn checksum_covers_configs() {
        let configs: BTreeMap<String, String> = [("configmap/x".to_string(), "abc".to_string())].into();
        assert_ne!(checksum(Some(&configs), "rev"), checksum(None, "rev"));
        assert_eq!(checksum(None, "rev"), checksum(None, "rev"));
    }
}
