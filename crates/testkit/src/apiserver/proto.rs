//! Decoding of the few Kubernetes protobuf bodies kubectl sends.
//!
//! kubectl 1.32 uses typed clients with `Content-Type: application/vnd.kubernetes.protobuf` for
//! `kubectl create namespace|configmap|secret`. The fake answers everything in JSON (kubectl
//! accepts that) but must read those request bodies: this module decodes the envelope
//! (`k8s\0` + `runtime.Unknown`) and the Namespace, ConfigMap and Secret messages into JSON.
//! Other kinds are refused with 415 and a message that says to use `kubectl apply -f`.

use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::error::{Error, Result};

const MAGIC: &[u8] = b"k8s\0";

enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

fn malformed() -> Error {
    Error::BadRequest("malformed protobuf body".into())
}

impl<'a> Reader<'a> {
    fn new(b: &'a [u8]) -> Self {
        Self { b, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.b.get(self.pos).ok_or_else(malformed)?;
            self.pos += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(malformed())
    }

    fn next(&mut self) -> Result<Option<(u64, Wire<'a>)>> {
        if self.pos >= self.b.len() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let wire = match tag & 7 {
            0 => Wire::Varint(self.varint()?),
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| malformed())?;
                let end = self
                    .pos
                    .checked_add(len)
                    .filter(|e| *e <= self.b.len())
                    .ok_or_else(malformed)?;
                let s = &self.b[self.pos..end];
                self.pos = end;
                Wire::Bytes(s)
            }
            1 => {
                self.pos += 8;
                Wire::Fixed
            }
            5 => {
                self.pos += 4;
                Wire::Fixed
            }
            _ => return Err(malformed()),
        };
        Ok(Some((tag >> 3, wire)))
    }
}

fn string(b: &[u8]) -> Result<Value> {
    std::str::from_utf8(b).map(Value::from).map_err(|_| malformed())
}

/// Decodes a message into JSON with `f(field, wire, out)` for each field.
fn message(
    b: &[u8],
    mut f: impl FnMut(u64, Wire<'_>, &mut Map<String, Value>) -> Result<()>,
) -> Result<Value> {
    let mut r = Reader::new(b);
    let mut out = Map::new();
    while let Some((field, wire)) = r.next()? {
        f(field, wire, &mut out)?;
    }
    Ok(Value::Object(out))
}

/// A `map<string, string>` entry (or `map<string, bytes>` rendered as base64 when `bytes`).
fn map_entry(b: &[u8], bytes: bool, into: &mut Map<String, Value>, key: &str) -> Result<()> {
    let (mut k, mut v) = (String::new(), Value::from(""));
    let mut r = Reader::new(b);
    while let Some((field, wire)) = r.next()? {
        match (field, wire) {
            (1, Wire::Bytes(s)) => k = std::str::from_utf8(s).map_err(|_| malformed())?.to_string(),
            (2, Wire::Bytes(s)) if bytes => {
                v = Value::from(base64::engine::general_purpose::STANDARD.encode(s))
            }
            (2, Wire::Bytes(s)) => v = string(s)?,
            _ => {}
        }
    }
    let m = into.entry(key).or_insert_with(|| json!({}));
    m[k] = v;
    Ok(())
}

fn push(into: &mut Map<String, Value>, key: &str, v: Value) {
    if let Value::Array(a) = into.entry(key).or_insert_with(|| json!([])) {
        a.push(v);
    }
}

fn object_meta(b: &[u8]) -> Result<Value> {
    message(b, |field, wire, out| {
        match (field, wire) {
            (1, Wire::Bytes(s)) => {
                out.insert("name".into(), string(s)?);
            }
            (2, Wire::Bytes(s)) => {
                out.insert("generateName".into(), string(s)?);
            }
            (3, Wire::Bytes(s)) => {
                out.insert("namespace".into(), string(s)?);
            }
            (6, Wire::Bytes(s)) => {
                out.insert("resourceVersion".into(), string(s)?);
            }
            (11, Wire::Bytes(s)) => map_entry(s, false, out, "labels")?,
            (12, Wire::Bytes(s)) => map_entry(s, false, out, "annotations")?,
            (13, Wire::Bytes(s)) => push(out, "ownerReferences", owner_reference(s)?),
            (14, Wire::Bytes(s)) => push(out, "finalizers", string(s)?),
            _ => {}
        }
        Ok(())
    })
}

fn owner_reference(b: &[u8]) -> Result<Value> {
    message(b, |field, wire, out| {
        let key = match field {
            1 => "kind",
            3 => "name",
            4 => "uid",
            5 => "apiVersion",
            6 => "controller",
            7 => "blockOwnerDeletion",
            _ => return Ok(()),
        };
        match wire {
            Wire::Bytes(s) => out.insert(key.into(), string(s)?),
            Wire::Varint(v) => out.insert(key.into(), Value::from(v != 0)),
            Wire::Fixed => None,
        };
        Ok(())
    })
}

fn namespace(b: &[u8]) -> Result<Value> {
    message(b, |field, wire, out| {
        match (field, wire) {
            (1, Wire::Bytes(s)) => {
                out.insert("metadata".into(), object_meta(s)?);
            }
            (2, Wire::Bytes(s)) => {
                let spec = message(s, |f, w, o| {
                    if let (1, Wire::Bytes(s)) = (f, w) {
                        push(o, "finalizers", string(s)?);
                    }
                    Ok(())
                })?;
                out.insert("spec".into(), spec);
            }
            _ => {}
        }
        Ok(())
    })
}

fn config_map(b: &[u8], secret: bool) -> Result<Value> {
    message(b, |field, wire, out| {
        match (field, wire, secret) {
            (1, Wire::Bytes(s), _) => {
                out.insert("metadata".into(), object_meta(s)?);
            }
            (2, Wire::Bytes(s), _) => map_entry(s, secret, out, "data")?,
            (3, Wire::Bytes(s), false) => map_entry(s, true, out, "binaryData")?,
            (3, Wire::Bytes(s), true) => {
                out.insert("type".into(), string(s)?);
            }
            (4, Wire::Bytes(s), true) => map_entry(s, false, out, "stringData")?,
            (4, Wire::Varint(v), false) | (5, Wire::Varint(v), true) => {
                out.insert("immutable".into(), Value::from(v != 0));
            }
            _ => {}
        }
        Ok(())
    })
}

/// Decodes a protobuf request body into the JSON object it encodes.
pub(crate) fn decode(body: &[u8]) -> Result<Value> {
    let rest = body.strip_prefix(MAGIC).ok_or_else(|| {
        Error::BadRequest("protobuf body without the Kubernetes envelope (k8s\\0 prefix)".into())
    })?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    let mut r = Reader::new(rest);
    while let Some((field, wire)) = r.next()? {
        match (field, wire) {
            (1, Wire::Bytes(tm)) => {
                let mut t = Reader::new(tm);
                while let Some((f, w)) = t.next()? {
                    match (f, w) {
                        (1, Wire::Bytes(s)) => api_version = String::from_utf8_lossy(s).into_owned(),
                        (2, Wire::Bytes(s)) => kind = String::from_utf8_lossy(s).into_owned(),
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(s)) => raw = s,
            _ => {}
        }
    }
    let mut obj = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace") => namespace(raw)?,
        ("v1", "ConfigMap") => config_map(raw, false)?,
        ("v1", "Secret") => config_map(raw, true)?,
        _ => {
            return Err(Error::UnsupportedMediaType(format!(
                "the fake API server (a test double) does not decode protobuf bodies of {api_version} {kind}; \
                 send JSON (e.g. `kubectl apply -f` instead of `kubectl create {}`)",
                kind.to_lowercase()
            )));
        }
    };
    obj["apiVersion"] = Value::from(api_version);
    obj["kind"] = Value::from(kind);
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(n: u64, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![((n << 3) | 2) as u8, payload.len() as u8];
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn decodes_a_namespace_envelope() {
        let type_meta = [field(1, b"v1"), field(2, b"Namespace")].concat();
        let label = [field(1, b"team"), field(2, b"a")].concat();
        let meta = [field(1, b"test"), field(11, &label)].concat();
        let ns = field(1, &meta);
        let body = [MAGIC.to_vec(), field(1, &type_meta), field(2, &ns)].concat();
        let obj = decode(&body).unwrap();
        assert_eq!(
            obj,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "test", "labels": {"team": "a"}}})
        );
    }
}
