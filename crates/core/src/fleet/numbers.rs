//! Numbers in stored records: metric values may be NaN or ±Inf (Prometheus answers `+Inf` for
//! `histogram_quantile` over an empty bucket), which JSON cannot hold. serde_json writes them
//! as `null` and then refuses to read that back into an `f64`, so a record holding one could
//! never be loaded again. Here non-finite values are written as the strings `"NaN"`, `"+Inf"`
//! and `"-Inf"` (Prometheus' spelling) and read back from those, from numbers, and from `null`
//! (what earlier versions wrote; read as NaN, the value is lost either way).
//!
//! [`show`] prints one for people.
//!
//! Use with `#[serde(with = "numbers::map")]` on a `BTreeMap<String, f64>` and
//! `#[serde(with = "numbers::option")]` on an `Option<f64>`.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

/// A number as a person reads it: integers as they are, others with two decimals, non-finite
/// values as Prometheus spells them (`99.90`, `120`, `+Inf`).
pub fn show(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// One stored number.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Stored(f64);

impl Serialize for Stored {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let v = self.0;
        if v.is_nan() {
            s.serialize_str("NaN")
        } else if v == f64::INFINITY {
            s.serialize_str("+Inf")
        } else if v == f64::NEG_INFINITY {
            s.serialize_str("-Inf")
        } else {
            s.serialize_f64(v)
        }
    }
}

struct StoredVisitor;

impl<'de> Visitor<'de> for StoredVisitor {
    type Value = Stored;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number, \"NaN\", \"+Inf\", \"-Inf\" or null")
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Stored, E> {
        Ok(Stored(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Stored, E> {
        Ok(Stored(v as f64))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Stored, E> {
        Ok(Stored(v as f64))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Stored, E> {
        match v {
            "NaN" => Ok(Stored(f64::NAN)),
            "+Inf" | "Inf" => Ok(Stored(f64::INFINITY)),
            "-Inf" => Ok(Stored(f64::NEG_INFINITY)),
            other => other
                .parse::<f64>()
                .map(Stored)
                .map_err(|_| E::invalid_value(de::Unexpected::Str(other), &self)),
        }
    }

    fn visit_unit<E: de::Error>(self) -> Result<Stored, E> {
        Ok(Stored(f64::NAN))
    }

    fn visit_none<E: de::Error>(self) -> Result<Stored, E> {
        Ok(Stored(f64::NAN))
    }
}

impl<'de> Deserialize<'de> for Stored {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StoredVisitor)
    }
}

/// `BTreeMap<String, f64>` with non-finite values.
pub mod map {
    use super::*;

    pub fn serialize<S: Serializer>(m: &BTreeMap<String, f64>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(m.iter().map(|(k, v)| (k, Stored(*v))))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, f64>, D::Error> {
        let m = BTreeMap::<String, Stored>::deserialize(d)?;
        Ok(m.into_iter().map(|(k, v)| (k, v.0)).collect())
    }
}

/// `Option<f64>` with non-finite values (`None` stays `null`; a stored `null` reads as `None`).
pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => Stored(*v).serialize(s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        Ok(Option::<Stored>::deserialize(d)?.map(|v| v.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize, Deserialize)]
    struct Record {
        #[serde(with = "map", default)]
        metrics: BTreeMap<String, f64>,
        #[serde(with = "option", default)]
        rate: Option<f64>,
    }

    #[test]
    fn non_finite_values_round_trip_through_json() {
        let cases = [
            0.0,
            -1.5,
            99.9,
            f64::MAX,
            f64::MIN_POSITIVE,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
        ];
        for v in cases {
            let r = Record {
                metrics: [("m".to_string(), v)].into(),
                rate: Some(v),
            };
            let json = serde_json::to_string(&r).unwrap();
            let back: Record = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{v}: {json}: {e}"));
            let got = back.metrics["m"];
            assert!(
                got == v || (got.is_nan() && v.is_nan()),
                "{v} came back as {got} ({json})"
            );
            let rate = back.rate.unwrap();
            assert!(rate == v || (rate.is_nan() && v.is_nan()), "{v}: rate {rate}");
        }
    }

    #[test]
    fn records_written_by_earlier_versions_are_read() {
        // serde_json wrote NaN and ±Inf as null.
        let r: Record = serde_json::from_str(r#"{"metrics": {"p99": null, "ok": 3}, "rate": null}"#).unwrap();
        assert!(r.metrics["p99"].is_nan());
        assert_eq!(r.metrics["ok"], 3.0);
        assert_eq!(r.rate, None);
        let r: Record = serde_json::from_str(r#"{"metrics": {}}"#).unwrap();
        assert_eq!(r.rate, None);
    }

    #[test]
    fn anything_else_is_refused() {
        assert!(serde_json::from_str::<Record>(r#"{"metrics": {"m": "lots"}}"#).is_err());
        assert!(serde_json::from_str::<Record>(r#"{"metrics": {"m": [1]}}"#).is_err());
    }
}
