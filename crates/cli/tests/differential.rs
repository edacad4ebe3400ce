//! Flagger itself next to aviary (crates/differential): every scenario of the catalogue runs on
//! two fresh real control planes, one with Flagger v1.44 (built from the Go module proxy by
//! tests/flagger/build.sh) and one with this `aviary agent`, and what they did is compared. The
//! test fails on any difference that docs/compatibility.md does not list. `scripts/differential`
//! runs the same by hand and prints the report. About 2–3 minutes: the scenarios run at once.

use std::path::{Path, PathBuf};

use aviary_differential::report::{Summary, render};
use aviary_differential::runner::{Options, run};
use aviary_differential::{catalogue, sides::Programs};

#[test]
fn flagger_and_aviary_do_the_same_things() {
    let programs =
        Programs::locate(PathBuf::from(env!("CARGO_BIN_EXE_aviary"))).unwrap_or_else(|e| panic!("{e}"));
    let logs = Path::new(env!("CARGO_TARGET_TMPDIR")).join("differential");
    let scenarios = catalogue::all();
    let opts = Options {
        parallel: scenarios.len(),
        scenarios,
        programs,
        logs: logs.clone(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let outcomes = runtime
        .block_on(run(&opts))
        .unwrap_or_else(|e| panic!("the differential run failed: {e}"));
    let report = render(&outcomes);
    eprintln!("{report}");
    let summary = Summary::of(&outcomes);
    assert_eq!(summary.scenarios, opts.scenarios.len());
    assert_eq!(
        summary.undocumented,
        0,
        "undocumented differences between Flagger and aviary (logs and traces in {}):\n{report}",
        logs.display()
    );
}
