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
