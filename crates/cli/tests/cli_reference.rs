//! docs/cli.md is generated from the command definitions (`aviary cli-reference`): the committed
//! page is exactly what the binary prints, and every flag and argument has its help line.

use std::path::{Path, PathBuf};
use std::process::Command;

const PAGE: &str = "docs/cli.md";
const REGENERATE: &str = "cargo run -p aviary -- cli-reference > docs/cli.md";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn generated() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_aviary"))
        .arg("cli-reference")
        .env("USER", "someone-else") // an environment default must not leak into the page
        .output()
        .expect("run aviary cli-reference");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8")
}

#[test]
fn the_committed_reference_is_what_the_binary_prints() {
    let printed = generated();
    aviary_testkit::generated::assert_committed(
        &printed,
        &repo_root(),
        PAGE,
        "aviary cli-reference",
        REGENERATE,
    );
}

#[test]
fn every_flag_and_argument_has_a_help_line() {
    let page = generated();
    let bare: Vec<&str> = page
        .lines()
        .filter(|l| l.starts_with("- `"))
        .filter(|l| {
            let text = l.split_once("`: ").map_or("", |(_, t)| t.trim());
            text.is_empty() || text.starts_with('[') || text.starts_with('(')
        })
        .collect();
    assert!(bare.is_empty(), "flags without help: {bare:#?}");
    for section in [
        "## Exit codes",
        "## `aviary rollout wait`",
        "## `aviary validate`",
    ] {
        assert!(page.contains(section), "{section}");
    }
}
