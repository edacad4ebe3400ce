//! aviary's gRPC contracts, generated from `proto/aviary/v1` at build time with protox (no
//! `protoc` needed).
//!
//! - [`v1`]: the messages and the tonic clients and servers of `aviary.v1.Fleet` (operators,
//!   CLI, grpcurl) and `aviary.v1.AgentLink` (one bidirectional stream per agent).
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors (with their imports) for server reflection.
//! - [`ts`]: timestamps to and from `jiff`; `From` conversions between the wire messages and the
//!   aviary-core domain types both ends of the link share (a fleet `Revision`).
//!
//! Every aviary.v1 message also derives `serde::Serialize` with protobuf's JSON field names
//! (lowerCamelCase; timestamps as RFC 3339), so the CLI prints what grpcurl prints.

/// The `aviary.v1` package.
#[allow(clippy::all, unreachable_pub, missing_docs, rust_2018_idioms)]
pub mod v1 {
    tonic::include_proto!("aviary.v1");
}

/// Encoded `google.protobuf.FileDescriptorSet` of fleet.proto, agent.proto and their imports.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/aviary_descriptor.bin"));

/// Timestamps to and from the well-known type.
pub mod ts {
    use prost_types::Timestamp;

    /// A `Timestamp` from a [`jiff::Timestamp`].
    pub fn from_jiff(t: jiff::Timestamp) -> Timestamp {
        Timestamp {
            seconds: t.as_second(),
            nanos: t.subsec_nanosecond(),
        }
    }

    /// A [`jiff::Timestamp`] from a `Timestamp` (`None` if out of range).
    pub fn to_jiff(t: &Timestamp) -> Option<jiff::Timestamp> {
        jiff::Timestamp::new(t.seconds, t.nanos).ok()
    }

    /// Serializes an optional timestamp as RFC 3339 (protobuf's JSON mapping).
    pub fn serialize<S: serde::Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
        match t.as_ref().and_then(to_jiff) {
            Some(t) => s.serialize_str(&t.to_string()),
            None => s.serialize_none(),
        }
    }
}

/// The domain revision of a fleet rollout on the wire, and back.
impl From<&aviary_core::fleet::Revision> for v1::Revision {
    fn from(r: &aviary_core::fleet::Revision) -> Self {
        Self {
            container_images: r.container_images.clone(),
            version: r.version.clone(),
        }
    }
}

impl From<&v1::Revision> for aviary_core::fleet::Revision {
    fn from(r: &v1::Revision) -> Self {
        Self {
            container_images: r.container_images.clone(),
            version: r.version.clone(),
        }
    }
}

/// The judge's evidence on the wire, and back. The cluster is the stream's (its Hello), not a
/// field: an agent cannot report for another cluster.
impl v1::Evidence {
    pub fn from_report(
        namespace: &str,
        name: &str,
        rollout: &str,
        r: &aviary_core::judge::EvidenceReport,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            rollout: rollout.into(),
            run: r.run.clone(),
            interval: r.interval,
            boundaries_ms: r.boundaries_ms.clone(),
            seconds: r.counts.seconds,
            canary: Some(v1::ArmCounts::from(&r.counts.canary)),
            primary: Some(v1::ArmCounts::from(&r.counts.primary)),
        }
    }

    /// The domain report of `cluster` (the sender).
    pub fn to_report(&self, cluster: &str) -> aviary_core::judge::EvidenceReport {
        let arm = |a: &Option<v1::ArmCounts>| {
            a.as_ref()
                .map(aviary_core::judge::ArmCounts::from)
                .unwrap_or_default()
        };
        aviary_core::judge::EvidenceReport {
            cluster: cluster.into(),
            run: self.run.clone(),
            interval: self.interval,
            boundaries_ms: self.boundaries_ms.clone(),
            counts: aviary_core::judge::IntervalCounts {
                seconds: self.seconds,
                canary: arm(&self.canary),
                primary: arm(&self.primary),
            },
        }
    }
}

impl From<&aviary_core::judge::ArmCounts> for v1::ArmCounts {
    fn from(a: &aviary_core::judge::ArmCounts) -> Self {
        Self {
            requests: a.requests,
            errors: a.errors,
            latency_bounds_ms: a
                .latency
                .as_ref()
                .map(|h| h.bounds_ms.clone())
                .unwrap_or_default(),
            latency_cumulative: a
                .latency
                .as_ref()
                .map(|h| h.cumulative.clone())
                .unwrap_or_default(),
        }
    }
}

impl From<&v1::ArmCounts> for aviary_core::judge::ArmCounts {
    fn from(a: &v1::ArmCounts) -> Self {
        Self {
            requests: a.requests,
            errors: a.errors,
            latency: (!a.latency_cumulative.is_empty()).then(|| aviary_core::judge::Histogram {
                bounds_ms: a.latency_bounds_ms.clone(),
                cumulative: a.latency_cumulative.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    #[test]
    fn descriptor_set_names_both_services() {
        let fds = prost_types::FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET).unwrap();
        let services: Vec<String> = fds
            .file
            .iter()
            .filter(|f| f.package() == "aviary.v1")
            .flat_map(|f| f.service.iter().map(|s| s.name().to_string()))
            .collect();
        assert_eq!(services, ["Fleet", "AgentLink"]);
        assert!(
            fds.file
                .iter()
                .any(|f| f.name() == "google/protobuf/timestamp.proto")
        );
    }

    #[test]
    fn evidence_round_trips_through_the_wire() {
        use aviary_core::judge::{ArmCounts, EvidenceReport, Histogram, IntervalCounts};
        let r = EvidenceReport {
            cluster: "eu-1".into(),
            run: "abc@17".into(),
            interval: 3,
            boundaries_ms: vec![100.0],
            counts: IntervalCounts {
                seconds: 15.0,
                canary: ArmCounts {
                    requests: 10,
                    errors: 1,
                    latency: Some(Histogram {
                        bounds_ms: vec![100.0],
                        cumulative: vec![9, 10],
                    }),
                },
                primary: ArmCounts {
                    requests: 90,
                    errors: 0,
                    latency: None,
                },
            },
        };
        let wire = super::v1::Evidence::from_report("test", "podinfo", "r1", &r);
        assert_eq!((wire.namespace.as_str(), wire.rollout.as_str()), ("test", "r1"));
        assert_eq!(wire.to_report("eu-1"), r);
    }

    #[test]
    fn json_uses_camel_case_and_rfc3339() {
        let c = super::v1::Cluster {
            name: "eu-1".into(),
            agent_version: "0.1.0".into(),
            last_seen: Some(super::ts::from_jiff("2025-01-02T03:04:05Z".parse().unwrap())),
            ..Default::default()
        };
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["agentVersion"], "0.1.0");
        assert_eq!(v["lastSeen"], "2025-01-02T03:04:05Z");
    }
}
