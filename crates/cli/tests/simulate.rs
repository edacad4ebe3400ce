//! `aviary simulate` end to end: the seed canary with the README's scripts.

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn simulate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_aviary"))
        .arg("simulate")
        .args(args)
        .current_dir(root())
        .output()
        .expect("run aviary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn healthy_seed_canary_promotes() {
    let (code, out, _) = simulate(&["-f", "examples/knative/podinfo-canary.yaml"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "# podinfo.test: provider knative, strategy canary, interval 15s"
    );
    assert_eq!(lines[1], "T+0s Normal all the metrics providers are available!");
    assert!(lines.contains(&"T+30s Normal Advance podinfo.test canary weight 10"));
    assert!(lines.contains(&"T+90s Normal Advance podinfo.test canary weight 50"));
    assert!(lines.contains(&"T+105s Normal Copying podinfo.test template spec to podinfo-primary.test"));
    assert_eq!(
        lines[lines.len() - 2],
        "T+135s Normal Promotion completed! Scaling down podinfo.test"
    );
    assert_eq!(
        lines[lines.len() - 1],
        "phase: Succeeded weight: 0 failedChecks: 0 elapsed: 135s"
    );
}

/// Without spec.provider the agent uses istio (its --provider default, Flagger's -mesh-provider
/// default); so does simulate, and --provider changes it as on the agent.
#[test]
fn a_canary_without_provider_runs_on_the_agents_default() {
    let fixture = "tests/fixtures/simulate/deployment-no-provider.yaml";
    let (code, out, _) = simulate(&["-f", fixture]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "# podinfo.test: provider istio (spec.provider is not set: the agent's default; --provider to change), strategy canary, interval 1m0s",
            "T+0s Normal all the metrics providers are available!",
            "T+0s Normal Initialization done! podinfo.test",
            "T+60s Normal New revision detected! Scaling up podinfo.test",
            "T+120s Normal Starting canary analysis for podinfo.test",
            "T+120s Normal Advance podinfo.test canary weight 20",
            "T+180s Normal Advance podinfo.test canary weight 40",
            "T+240s Normal Copying podinfo.test template spec to podinfo-primary.test",
            "T+300s Normal Routing all traffic to primary",
            "T+360s Normal Promotion completed! Scaling down podinfo.test",
            "phase: Succeeded weight: 0 failedChecks: 0 elapsed: 360s",
        ]
    );

    let (code, out, _) = simulate(&["-f", fixture, "--provider", "kubernetes", "-o", "json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["provider"], "kubernetes");
    assert_eq!(v["defaultProvider"], true);
    assert_eq!(
        v["strategy"],
        "blue-green (the kubernetes provider cannot do canary)"
    );
    let messages = aviary_testkit::json::strings(&v["events"], "message");
    assert!(messages.contains(&"Progressive traffic is not supported when using the kubernetes provider"));
}

#[test]
fn falling_success_rate_rolls_back() {
    let (code, out, _) = simulate(&[
        "-f",
        "examples/knative/podinfo-canary.yaml",
        "--script",
        "tests/fixtures/simulate/seed-rollback.yaml",
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("T+75s Warning Halt podinfo.test advancement success rate 69.17% < 99%\n"));
    assert!(out.contains("T+300s Warning Rolling back podinfo.test failed checks threshold reached 15\n"));
    assert!(out.ends_with("T+300s Warning Canary failed! Scaling down podinfo.test\nphase: Failed weight: 0 failedChecks: 15 elapsed: 300s\n"));
}

#[test]
fn json_output_has_the_timeline_and_the_ticks() {
    let (code, out, _) = simulate(&[
        "-f",
        "tests/fixtures/simulate/gated-canary.yaml",
        "--script",
        "tests/fixtures/simulate/seed-confirm-promotion.yaml",
        "-o",
        "json",
    ]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["phase"], "Succeeded");
    let events = v["events"].as_array().unwrap();
    let waiting: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| {
            e["message"] == "Halt podinfo.test advancement waiting for promotion approval confirm-promotion"
        })
        .collect();
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0]["type"], "Warning");
    let phases = aviary_testkit::json::strings(&v["ticks"], "phase");
    assert!(phases.contains(&"WaitingPromotion"));
}

/// `aviary simulate` of the Knative example with the script `script`.
fn simulate_with_script(script: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("script.yaml");
    std::fs::write(&file, script).unwrap();
    simulate(&[
        "-f",
        "examples/knative/podinfo-canary.yaml",
        "--script",
        file.to_str().unwrap(),
    ])
}

#[test]
fn invalid_canary_exits_1_with_the_field_path() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    let text = std::fs::read_to_string(root().join("examples/knative/podinfo-canary.yaml"))
        .unwrap()
        .replace("stepWeight: 10", "stepWeight: 150");
    std::fs::write(&bad, text).unwrap();
    let (code, _, err) = simulate(&["-f", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("test/podinfo: spec.analysis.stepWeight: must be between 1 and 100, got 150"),
        "{err}"
    );
}

#[test]
fn unreadable_input_exits_2() {
    let (code, _, err) = simulate(&["-f", "does/not/exist.yaml"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot read does/not/exist.yaml"), "{err}");
    let (code, _, err) = simulate_with_script("metrics: [1, 2");
    assert_eq!(code, 2);
    assert!(err.contains("script"), "{err}");
}

/// A script naming a metric or webhook the canary does not have is refused with the closest
/// name (it would otherwise simulate a misspelt name as healthy, silently).
#[test]
fn script_names_must_be_the_canarys() {
    let (code, out, err) = simulate_with_script("metrics:\n  request-sucess-rate: [50]\n");
    assert_eq!(code, 2, "{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("the script's metric \"request-sucess-rate\" is not a metric of canary test/podinfo (did you mean request-success-rate?)"),
        "{err}"
    );
    let (code, _, err) = simulate_with_script("webhooks:\n  smoke: [fail]\n");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("its webhooks are [\"load-test\"]"), "{err}");
}

/// A file with several canaries: `--canary NS/NAME` (or NAME) picks one; without it the
/// command names them.
#[test]
fn canary_picks_one_of_several() {
    let file = "tests/fixtures/multi-document.yaml";
    let (code, _, err) = simulate(&["-f", file]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("2 Canaries found (test/podinfo, test/broken); pick one with --canary NS/NAME"),
        "{err}"
    );
    for pick in ["test/podinfo", "podinfo"] {
        let (code, out, err) = simulate(&["-f", file, "--canary", pick]);
        assert_eq!(code, 0, "{pick}: {err}");
        assert!(out.starts_with("# podinfo.test:"), "{out}");
    }
    let (code, _, err) = simulate(&["-f", file, "--canary", "test/podinf"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("(did you mean test/podinfo?)"), "{err}");
}
