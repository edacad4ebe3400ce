//! Generates the aviary.v1 code with protox (a pure-Rust protobuf compiler: no `protoc` on the
//! build machine) and tonic-prost-build, and writes the encoded descriptor set for reflection.

use std::path::PathBuf;

/// Timestamp fields: prost-types has no serde support, so these go through `crate::ts`.
const TIMESTAMPS: &[&str] = &[
    "aviary.v1.Cluster.last_seen",
    "aviary.v1.CanarySnapshot.last_transition_time",
    "aviary.v1.Rollout.created",
    "aviary.v1.Rollout.finished",
    "aviary.v1.WaveStatus.bake_started",
    "aviary.v1.ClusterStatus.started",
    "aviary.v1.ClusterStatus.finished",
    "aviary.v1.HistoryEntry.time",
    "aviary.v1.CanaryEvent.time",
    "aviary.v1.Heartbeat.time",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = ["aviary/v1/fleet.proto", "aviary/v1/agent.proto"];
    for f in &files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let mut compiler = protox::Compiler::new([&root])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(files)?;
    let fds = compiler.file_descriptor_set();
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("aviary_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    let mut builder = tonic_prost_build::configure()
        // `AgentLink.Connect` would clash with the generated `connect` constructor: clients are
        // built with `new(channel)` instead.
        .build_transport(false)
        .btree_map(".")
        .type_attribute(
            ".aviary.v1",
            "#[derive(serde::Serialize)] #[serde(rename_all = \"camelCase\")]",
        );
    for path in TIMESTAMPS {
        builder = builder.field_attribute(path, "#[serde(serialize_with = \"crate::ts::serialize\")]");
    }
    builder.compile_fds(fds)?;
    Ok(())
}
