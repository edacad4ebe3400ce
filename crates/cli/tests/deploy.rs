//! The manifests under deploy/ render with the real `kubectl kustomize`, and every aviary
//! container's arguments are accepted by this binary's command line.

use std::process::Command;

use aviary_testkit::process::output_ok;

fn kubectl() -> Option<String> {
    let bin = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
    if Command::new(&bin)
        .arg("version")
        .arg("--client")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Some(bin);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("kubectl is required (CI=true); install it or set KUBECTL");
    }
    eprintln!("SKIPPED: kubectl is not installed");
    None
}

#[test]
fn deploy_manifests_render_and_their_args_parse() {
    let Some(kubectl) = kubectl() else { return };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut containers = 0;
    for dir in [
        "deploy/agent",
        "deploy/coordinator",
        "deploy/loadtester",
        "deploy/rbac",
    ] {
        let out = output_ok(Command::new(&kubectl).arg("kustomize").arg(root.join(dir)), dir);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let docs: Vec<serde_json::Value> = text
            .split("\n---\n")
            .filter(|d| !d.trim().is_empty())
            .map(|d| serde_yaml_ng::from_str(d).unwrap_or_else(|e| panic!("{dir}: {e}\n{d}")))
            .collect();
        assert!(!docs.is_empty(), "{dir} renders nothing");
        for doc in &docs {
            for c in doc["spec"]["template"]["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if !c["image"].as_str().unwrap_or("").contains("aviary") {
                    continue;
                }
                containers += 1;
                let args: Vec<String> = c["args"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap().to_string())
                    .collect();
                let mut aviary = Command::new(env!("CARGO_BIN_EXE_aviary"));
                let what = format!("{dir}: aviary {args:?} is refused");
                output_ok(aviary.args(&args).arg("--help"), &what);
            }
        }
    }
    assert_eq!(containers, 3, "agent, coordinator and load tester containers");
}
