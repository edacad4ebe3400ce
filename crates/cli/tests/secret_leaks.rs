//! Issue 15: credentials never come back out of the local agent or the coordinator. Canaries
//! run on the local platform (`aviary agent --local`, real sample-app processes, linked over
//! mutual TLS to an `aviary coordinator` that pushes the new version with one FleetRollout per
//! canary), both at `--log-level trace`, against
//! careless upstreams (`EchoServer`) that quote every request back in their error answers: a
//! Slack webhook URL and bearer token (an AlertProvider from a Secret, and the global
//! `SLACK_URL`), Datadog keys, Prometheus basic auth, a Prometheus bearer token, and webhook
//! URLs with a token in their query. The agent reads the credentials from `AVIARY_SECRET_*`
//! variables and also has cloud credentials in its environment.
//!
//! The upstreams must have received every credential (so the test cannot pass by not using
//! them), and none may appear, in any form (as is, percent-encoded, JSON-escaped, basic auth's
//! base64), in the agent's log, its events, the canaries' status, any file of its state
//! directory (the workloads' own logs included: they print their environment), the
//! coordinator's answers (rollouts with their verdicts and history, canaries, clusters) or its
//! log with its audit records.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aviary_testkit::EchoServer;
use aviary_testkit::aviary::{Pki, cli, start_coordinator};
use aviary_testkit::manifests::resource;
use aviary_testkit::net::free_port;
use aviary_testkit::netns::Host;
use aviary_testkit::process::Log;
use aviary_testkit::wait::wait_until;
use serde_json::json;

const SLACK_PATH: &str = "/services/T0LEAK1234/B0LEAK5678/slackLeakToken0123456789";
const SLACK_TOKEN: &str = "xoxb-leak-bearer-0123456789";
const GLOBAL_SLACK_PATH: &str = "/services/T0GLOB1234/B0GLOB5678/globalSlackToken01234";
const DD_API_KEY: &str = "dd-leak-api-key-0123456789";
const DD_APP_KEY: &str = "dd-leak-app-key-9876543210";
const PROM_USER: &str = "leak-user-0042";
const PROM_PASSWORD: &str = "leak-pass/word+0123";
const PROM_TOKEN: &str = "prom-leak-bearer-4567/89+x=";
const HOOK_TOKEN: &str = "hook-leak-token-8910";
const EVENT_HOOK_TOKEN: &str = "event-leak-token-1112";
const AWS_SECRET: &str = "aws-leak-secret-access-key-1314";

/// Every form a secret could be written in.
fn forms(secret: &str) -> Vec<String> {
    let encode = |upper: bool| -> String {
        secret
            .bytes()
            .map(|b| match b {
                b if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) => (b as char).to_string(),
                b if upper => format!("%{b:02X}"),
                b => format!("%{b:02x}"),
            })
            .collect()
    };
    let json = serde_json::to_string(secret).unwrap();
    let json = json.trim_matches('"').to_string();
    let mut forms = vec![
        secret.to_string(),
        encode(true),
        encode(false),
        json.replace('/', "\\/"),
    ];
    forms.sort();
    forms.dedup();
    forms
}

fn base64(s: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in s.as_bytes().chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The needles no output may contain.
fn needles() -> Vec<(String, String)> {
    let mut secrets: Vec<&str> = vec![
        SLACK_TOKEN,
        DD_API_KEY,
        DD_APP_KEY,
        PROM_PASSWORD,
        PROM_TOKEN,
        HOOK_TOKEN,
        EVENT_HOOK_TOKEN,
        AWS_SECRET,
        "T0LEAK1234",
        "B0LEAK5678",
        "slackLeakToken0123456789",
        "T0GLOB1234",
        "globalSlackToken01234",
    ];
    secrets.push(PROM_USER);
    let mut out: Vec<(String, String)> = secrets
        .iter()
        .flat_map(|s| forms(s).into_iter().map(move |f| (s.to_string(), f)))
        .collect();
    let basic = base64(&format!("{PROM_USER}:{PROM_PASSWORD}"));
    out.push(("basic auth".into(), basic.trim_end_matches('=').to_string()));
    out
}

fn aviary() -> &'static str {
    env!("CARGO_BIN_EXE_aviary")
}

struct Upstreams {
    slack: EchoServer,
    global_slack: EchoServer,
    datadog: EchoServer,
    prom_basic: EchoServer,
    prom_bearer: EchoServer,
    hooks: EchoServer,
}

/// The LocalService `test/NAME` running the sample app (which prints its environment) and its
/// Canary judged on the `metric` template alone, a pre-rollout webhook with a token in its
/// query, and the Slack alert when `alerts`.
fn service_and_canary(
    name: &str,
    port: u16,
    version: &str,
    metric: &str,
    alerts: bool,
    hooks: &str,
) -> String {
    let command = format!(
        "env; exec '{}' sample-app --port {{{{port}}}} --version {{{{version}}}}",
        aviary()
    );
    let service = json!({"port": port, "version": version, "command": ["sh", "-c", command]});
    let mut analysis = json!({
        "interval": "1s",
        "threshold": 2,
        "maxWeight": 50,
        "stepWeight": 50,
        "metrics": [{
            "name": metric,
            "templateRef": {"name": metric},
            "thresholdRange": {"min": 0},
            "interval": "1m",
        }],
        "webhooks": [{
            "name": "smoke",
            "type": "pre-rollout",
            "url": format!("{hooks}/pre?token={HOOK_TOKEN}"),
        }],
    });
    if alerts {
        analysis["alerts"] = json!([{"name": "slack", "severity": "info", "providerRef": {"name": "slack"}}]);
    }
    let canary = json!({
        "provider": "local",
        "targetRef": {"apiVersion": "aviary.dev/v1alpha1", "kind": "LocalService", "name": name},
        "progressDeadlineSeconds": 60,
        "analysis": analysis,
    });
    [
        resource(name, "aviary.dev/v1alpha1", "LocalService", service),
        resource(name, "flagger.app/v1beta1", "Canary", canary),
    ]
    .join("---\n")
}

/// Three canaries (Datadog with the Slack alert, Prometheus with basic auth, Prometheus with a
/// bearer token), their MetricTemplates and the AlertProvider, each with its Secret.
fn config(up: &Upstreams, ports: &[u16; 3], version: &str) -> String {
    let hooks = up.hooks.url();
    let template = |name: &str, kind: &str, address: &str, query: &str| {
        let provider = json!({"type": kind, "address": address, "secretRef": {"name": name}});
        resource(
            name,
            "flagger.app/v1beta1",
            "MetricTemplate",
            json!({"provider": provider, "query": query}),
        )
    };
    [
        service_and_canary("dd", ports[0], version, "datadog", true, hooks),
        service_and_canary("basic", ports[1], version, "prom-basic", false, hooks),
        service_and_canary("bearer", ports[2], version, "prom-bearer", false, hooks),
        template("datadog", "datadog", up.datadog.url(), "avg:requests{service:dd}"),
        template("prom-basic", "prometheus", up.prom_basic.url(), "sum(up)"),
        template("prom-bearer", "prometheus", up.prom_bearer.url(), "sum(up)"),
        resource(
            "slack",
            "flagger.app/v1beta1",
            "AlertProvider",
            json!({"type": "slack", "secretRef": {"name": "slack"}}),
        ),
    ]
    .join("---\n")
}

fn write(dir: &Path, text: &str) {
    let tmp = dir.join(".canaries.yaml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, dir.join("canaries.yaml")).unwrap();
}

/// The agent process, killed when dropped.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn get(url: &str) -> String {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "5", url])
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn phases(admin: &str) -> Vec<String> {
    let body = get(&format!("{admin}/canaries"));
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let mut items: Vec<(String, String)> = v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["metadata"]["name"].as_str().unwrap_or("").to_string(),
                c["status"]["phase"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    items.sort();
    items.into_iter().map(|(_, p)| p).collect()
}

fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_below(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn no_credential_reaches_logs_events_status_or_state() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let up = rt.block_on(async {
        let hooks = EchoServer::start(500).await.unwrap();
        hooks.set_reply("/pre", 200, "ok");
        Upstreams {
            slack: EchoServer::start(500).await.unwrap(),
            global_slack: EchoServer::start(403).await.unwrap(),
            datadog: EchoServer::start(403).await.unwrap(),
            prom_basic: EchoServer::start(400).await.unwrap(),
            prom_bearer: EchoServer::start(401).await.unwrap(),
            hooks,
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("config");
    let state = tmp.path().join("state");
    std::fs::create_dir_all(&dir).unwrap();
    let ports = [free_port(), free_port(), free_port()];
    write(&dir, &config(&up, &ports, "1.0.0"));

    let coordinator_log = Log::default();
    let (_coordinator, url) = start_coordinator(
        &Host::loopback(),
        aviary(),
        &["--log-level", "trace"],
        "coordinator",
        &coordinator_log,
        |_| false,
    );

    let log_path = tmp.path().join("agent.log");
    let admin_port = free_port();
    let admin = format!("http://127.0.0.1:{admin_port}");
    let agent = aviary_testkit::aviary::local_agent(aviary(), &dir, &state, admin_port, "leak-test")
        .args([
            "--region",
            "leak",
            "--coordinator",
            &url,
            "--log-level",
            "trace",
            "--event-webhook",
            &format!("{}/events?token={EVENT_HOOK_TOKEN}", up.hooks.url()),
        ])
        .env(
            "SLACK_URL",
            format!("{}{GLOBAL_SLACK_PATH}", up.global_slack.url()),
        )
        .env(
            "AVIARY_SECRET_TEST_SLACK_ADDRESS",
            format!("{}{SLACK_PATH}", up.slack.url()),
        )
        .env("AVIARY_SECRET_TEST_SLACK_TOKEN", SLACK_TOKEN)
        .env("AVIARY_SECRET_TEST_DATADOG_DATADOG_API_KEY", DD_API_KEY)
        .env("AVIARY_SECRET_TEST_DATADOG_DATADOG_APPLICATION_KEY", DD_APP_KEY)
        .env("AVIARY_SECRET_TEST_PROM_BASIC_USERNAME", PROM_USER)
        .env("AVIARY_SECRET_TEST_PROM_BASIC_PASSWORD", PROM_PASSWORD)
        .env("AVIARY_SECRET_TEST_PROM_BEARER_TOKEN", PROM_TOKEN)
        .env("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
        .env("DD_API_KEY", DD_API_KEY)
        .args(Pki::get(aviary()).agent_args("leak-test"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .expect("start the agent");
    let mut agent = Agent(agent);

    wait_until("three initialized canaries", Duration::from_secs(60), || {
        phases(&admin) == ["Initialized"; 3]
    });
    // The coordinator pushes 1.0.1 to each canary; each fails on its metrics.
    let fleet = |args: &[&str]| cli(aviary(), &url, "leak-test", args);
    for name in ["dd", "basic", "bearer"] {
        let file = tmp.path().join(format!("{name}.yaml"));
        std::fs::write(
            &file,
            format!(
                "apiVersion: aviary.dev/v1alpha1\nkind: FleetRollout\nmetadata: {{name: leak-{name}}}\nspec:\n  \
                 canary: {{namespace: test, name: {name}}}\n  revision: {{version: 1.0.1}}\n  byRegion: [leak]\n  \
                 clusterDeadline: 2m\n"
            ),
        )
        .unwrap();
        let (code, out, err) = fleet(&["rollout", "apply", "-f", file.to_str().unwrap()]);
        assert_eq!(code, 0, "{out}{err}");
    }
    // What the coordinator says of the canaries while they run and fail, every distinct answer
    // kept.
    let mut live: Vec<String> = Vec::new();
    wait_until("the three rollouts to fail", Duration::from_secs(120), || {
        let (_, canaries, _) = fleet(&["canaries", "-o", "json"]);
        if !live.contains(&canaries) {
            live.push(canaries);
        }
        let (_, list, _) = fleet(&["rollout", "list", "-o", "json"]);
        list.matches("\"Failed\"").count() >= 3
    });
    for name in ["dd", "basic", "bearer"] {
        let (code, out, err) = fleet(&["rollout", "wait", &format!("leak-{name}"), "--timeout", "2m"]);
        assert_eq!(code, 1, "leak-{name} fails on its metrics: {out}{err}");
    }
    assert!(
        live.iter()
            .any(|c| c.contains("\"phase\": \"Progressing\"") && c.contains("\"failedChecks\": 1")),
        "the coordinator's answers are read while the analyses fail: {live:#?}"
    );
    // The alerts of the failure have been sent once the phase is Failed; give the event
    // webhook a moment for the last events.
    std::thread::sleep(Duration::from_secs(1));

    // The upstreams got every credential: the test exercises them all.
    let seen = |server: &EchoServer, what: &str, check: &dyn Fn(&aviary_testkit::EchoedRequest) -> bool| {
        assert!(
            server.requests().iter().any(check),
            "{what} never reached its upstream: {:#?}",
            server.requests()
        );
    };
    let header = |r: &aviary_testkit::EchoedRequest, name: &str| {
        r.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    seen(&up.slack, "the Slack URL and token", &|r| {
        r.path == SLACK_PATH && header(r, "authorization") == format!("Bearer {SLACK_TOKEN}")
    });
    seen(&up.global_slack, "the global Slack URL", &|r| {
        r.path == GLOBAL_SLACK_PATH
    });
    seen(&up.datadog, "the Datadog keys", &|r| {
        header(r, "dd-api-key") == DD_API_KEY && header(r, "dd-application-key") == DD_APP_KEY
    });
    seen(&up.prom_basic, "basic auth", &|r| {
        header(r, "authorization") == format!("Basic {}", base64(&format!("{PROM_USER}:{PROM_PASSWORD}")))
    });
    seen(&up.prom_bearer, "the bearer token", &|r| {
        header(r, "authorization") == format!("Bearer {PROM_TOKEN}")
    });
    seen(&up.hooks, "the webhook token", &|r| r.query.contains(HOOK_TOKEN));
    seen(&up.hooks, "the event webhook token", &|r| {
        r.query.contains(EVENT_HOOK_TOKEN)
    });

    // Everything the agent and the coordinator produced.
    let mut outputs: Vec<(String, String)> = Vec::new();
    let queries: [&[&str]; 6] = [
        &["rollout", "list", "-o", "json"],
        &["rollout", "get", "leak-dd", "-o", "json"],
        &["rollout", "get", "leak-basic", "-o", "json"],
        &["rollout", "get", "leak-bearer", "-o", "json"],
        &["canaries", "-o", "json"],
        &["clusters", "-o", "json"],
    ];
    for args in queries {
        let (code, out, err) = fleet(args);
        assert_eq!(code, 0, "aviary {args:?}: {err}");
        outputs.push((format!("the answer of aviary {}", args.join(" ")), out));
    }
    for (i, canaries) in live.into_iter().enumerate() {
        outputs.push((
            format!("answer {i} of aviary canaries while they failed"),
            canaries,
        ));
    }
    let verdicts = &outputs[1].1;
    assert!(
        verdicts.contains("canary analysis of version 1.0.1 failed") && verdicts.contains("\"history\""),
        "the rollout answer has the verdict and its history: {verdicts}"
    );
    for name in ["dd", "basic", "bearer"] {
        outputs.push((
            format!("events of test/{name}"),
            get(&format!("{admin}/events?canary=test/{name}")),
        ));
    }
    let canaries: serde_json::Value = serde_json::from_str(&get(&format!("{admin}/canaries"))).unwrap();
    for c in canaries["items"].as_array().unwrap() {
        outputs.push((
            format!("status of {}", c["metadata"]["name"]),
            c["status"].to_string(),
        ));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &agent.0.id().to_string()])
        .status();
    let _ = agent.0.wait();
    for path in files_below(&state) {
        let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
        outputs.push((path.display().to_string(), text));
    }
    let log = std::fs::read_to_string(&log_path).unwrap();
    // The log says what happened (the checks above are not vacuous): failed metrics and alerts.
    assert!(log.contains("alert failed"), "no failed alert in the log");
    assert!(
        log.contains("event webhook failed"),
        "no failed event webhook in the log"
    );
    outputs.push(("the agent's log".into(), log));
    let coordinator_log = coordinator_log.lines().join("\n");
    assert!(
        coordinator_log.contains("aviary::audit"),
        "the coordinator's audit records are checked too"
    );
    outputs.push(("the coordinator's log and audit records".into(), coordinator_log));
    let workload_logs = outputs.iter().filter(|(n, _)| n.ends_with(".log")).count();
    assert!(
        workload_logs >= 3,
        "the workloads' logs are checked too: {workload_logs}"
    );

    let mut leaks = Vec::new();
    for (what, text) in &outputs {
        for (secret, form) in needles() {
            if let Some(at) = text.find(&form) {
                let start = text[..at].char_indices().rev().nth(80).map_or(0, |(i, _)| i);
                let end = (at + form.len() + 80).min(text.len());
                let end = (end..=text.len())
                    .find(|i| text.is_char_boundary(*i))
                    .unwrap_or(text.len());
                leaks.push(format!("{secret} (as {form}) in {what}: …{}…", &text[start..end]));
            }
        }
    }
    assert!(leaks.is_empty(), "{} leaks:\n{}", leaks.len(), leaks.join("\n"));
    drop(rt);
}
