//! The Grafana dashboards of deploy/grafana against a real Prometheus (Debian's package)
//! scraping a real `aviary coordinator --metrics-listen` and two `aviary agent --local`
//! processes (real sample apps, real traffic) during a real fleet rollout: 6.0.1 succeeds in
//! us-east-1, fails its analysis in eu-west-1, and us-east-1a is reverted; an operator pauses and
//! resumes it and asks for a rollout that does not exist.
//!
//! Every PromQL expression of both dashboards (template variables' queries included) must return
//! data, evaluated as Grafana would: template variables take the values their own queries return
//! (a multi-value "All" becomes Grafana's regex of every value), `$__interval` is the step and
//! `$__rate_interval` Grafana's max(interval + scrape interval, 4 × scrape interval); range
//! panels are range queries over the rollout's span, instant ones instant queries at its end.
//! The canary dashboard uses Flagger's metrics only, so it works on Flagger's own as well.
//!
//! Without prometheus the test fails when `CI=true` and prints a skip notice otherwise.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aviary_testkit::aviary::{LocalCluster, Pki, apply, start_coordinator, wait_initialized};
use aviary_testkit::manifests::{LocalCanary, version_rollout};
use aviary_testkit::net::free_port;
use aviary_testkit::netns::Host;
use aviary_testkit::process::{Log, Process};
use aviary_testkit::prometheus::{Job, Prometheus};
use aviary_testkit::traffic::Traffic;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_aviary");
/// Prometheus scrapes every second (aviary_testkit::prometheus); Grafana's step here.
const SCRAPE_SECONDS: u64 = 1;
const STEP_SECONDS: u64 = 1;

// ---- the fleet (processes killed on drop) ----

/// Errors reach the test's output (everything with `GRAFANA_TEST_LOGS` set).
fn worth_echoing(line: &str) -> bool {
    line.contains("ERROR") || std::env::var_os("GRAFANA_TEST_LOGS").is_some()
}

/// One cluster's agent on the local platform: podinfo behind its router, a canary analysed
/// every second on success rate and duration; the sample app answers half the requests with
/// 500 in version `faulty`. The agent and its cluster (service and admin ports).
fn start_agent(
    root: &Path,
    name: &str,
    region: &str,
    faulty: &str,
    coordinator: &str,
) -> (Process, LocalCluster) {
    let cluster = LocalCluster::new(root, name, |port| {
        LocalCanary::faulty_sample_app(BIN, port, faulty)
    });
    let mut args = vec!["--region", region, "--coordinator", coordinator];
    let tls = Pki::get(BIN).agent_args(name);
    args.extend(tls.iter().map(String::as_str));
    (cluster.start(BIN, &args, worth_echoing), cluster)
}

fn cli(url: &str, args: &[&str]) -> (i32, String, String) {
    aviary_testkit::aviary::cli(BIN, url, "grafana-test", args)
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

// ---- the dashboards, evaluated as Grafana would ----

fn dashboard(name: &str) -> Value {
    let path: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/grafana")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every panel, rows' nested panels included.
fn panels(d: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().into_iter().flatten() {
        out.extend(p["panels"].as_array().into_iter().flatten().cloned());
        out.push(p.clone());
    }
    out
}

/// What the test evaluates against: Prometheus and the dashboard's time range.
struct Grafana<'a> {
    prom: &'a Prometheus,
    start: f64,
    end: f64,
}

impl Grafana<'_> {
    /// `$__interval`, `$__rate_interval` and the variables substituted (longest names first, so
    /// `$target` never eats `$targets`).
    fn expand(&self, expr: &str, vars: &BTreeMap<String, String>) -> String {
        let rate = (STEP_SECONDS + SCRAPE_SECONDS).max(4 * SCRAPE_SECONDS);
        let mut e = expr
            .replace("$__rate_interval", &format!("{rate}s"))
            .replace("$__interval", &format!("{STEP_SECONDS}s"));
        let mut names: Vec<&String> = vars.keys().collect();
        names.sort_by_key(|n| std::cmp::Reverse(n.len()));
        for n in names {
            e = e
                .replace(&format!("${{{n}}}"), &vars[n])
                .replace(&format!("[[{n}]]"), &vars[n])
                .replace(&format!("${n}"), &vars[n]);
        }
        assert!(!e.contains('$'), "an unknown variable is left in {e}");
        e
    }

    /// A query variable's values (`label_values(selector, label)` over the time range).
    fn label_values(&self, query: &str) -> Vec<String> {
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable query {query}: only label_values(…, label) is used"));
        let (selector, label) = inner.rsplit_once(',').unwrap();
        let (start, end) = (self.start.to_string(), self.end.to_string());
        let data = self
            .prom
            .api(
                &format!("label/{}/values", label.trim()),
                &[("match[]", selector.trim()), ("start", &start), ("end", &end)],
            )
            .unwrap();
        data.as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    }

    /// The template variables, resolved in order (each may use the ones before it).
    fn variables(&self, d: &Value, problems: &mut Vec<String>) -> BTreeMap<String, String> {
        let mut vars = BTreeMap::new();
        for v in d["templating"]["list"].as_array().into_iter().flatten() {
            let name = v["name"].as_str().unwrap().to_string();
            match v["type"].as_str() {
                Some("datasource") => continue,
                Some("query") => {}
                other => panic!("variable {name}: type {other:?} is not handled"),
            }
            let query = self.expand(v["query"]["query"].as_str().unwrap(), &vars);
            let values = self.label_values(&query);
            if values.is_empty() {
                problems.push(format!("variable {name}: {query} returns no values"));
                vars.insert(name, "no-value".into());
                continue;
            }
            let all = v["current"]["value"]
                .as_array()
                .is_some_and(|c| c.iter().any(|x| x == "$__all"));
            let value = if all {
                // Grafana's "All" without allValue: every value, regex-escaped, as (a|b).
                let escaped: Vec<String> = values.iter().map(|x| regex_escape(x)).collect();
                format!("({})", escaped.join("|"))
            } else {
                values[0].clone()
            };
            vars.insert(name, value);
        }
        vars
    }

    /// The result of one target as its panel asks for it.
    fn evaluate(&self, target: &Value, expr: &str) -> Result<Vec<Value>, String> {
        let instant = target["instant"] == true && target["range"] != true;
        let (start, end, step) = (
            self.start.to_string(),
            self.end.to_string(),
            STEP_SECONDS.to_string(),
        );
        let data = if instant {
            self.prom.api("query", &[("query", expr), ("time", &end)])
        } else {
            self.prom.api(
                "query_range",
                &[("query", expr), ("start", &start), ("end", &end), ("step", &step)],
            )
        }
        .map_err(|e| e.to_string())?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }
}

/// Grafana's escaping of a multi-value variable's values inside a regex.
fn regex_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if "\\^$.|?*+()[]{}".contains(c) {
            out.push_str("\\\\");
        }
        out.push(c);
    }
    out
}

/// A finite number among a result's samples (an instant `value` or a range's `values`).
fn has_finite_sample(result: &[Value]) -> bool {
    let finite = |s: &Value| {
        s[1].as_str()
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(f64::is_finite)
    };
    result.iter().any(|series| {
        finite(&series["value"]) || series["values"].as_array().into_iter().flatten().any(finite)
    })
}

/// Evaluates every expression of a dashboard; returns the number evaluated and the problems.
fn check_dashboard(grafana: &Grafana<'_>, name: &str) -> (usize, Vec<String>) {
    let d = dashboard(name);
    let mut problems = Vec::new();
    let vars = grafana.variables(&d, &mut problems);
    let mut evaluated = 0;
    for p in panels(&d).iter().filter(|p| p["type"] != "row") {
        let title = p["title"].as_str().unwrap_or("?");
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = grafana.expand(t["expr"].as_str().unwrap(), &vars);
            evaluated += 1;
            match grafana.evaluate(t, &expr) {
                Ok(r) if has_finite_sample(&r) => {}
                Ok(r) => problems.push(format!(
                    "{name} / {title}: {expr} returns no data ({} series)",
                    r.len()
                )),
                Err(e) => problems.push(format!("{name} / {title}: {expr}: {e}")),
            }
        }
    }
    (evaluated, problems)
}

#[test]
fn dashboards_are_well_formed_and_the_canary_one_uses_flaggers_metrics_only() {
    for name in ["canary.json", "fleet.json"] {
        let d = dashboard(name);
        assert!(
            d["uid"].as_str().is_some_and(|u| u.starts_with("aviary-")),
            "{name}: uid"
        );
        let mut ids = std::collections::BTreeSet::new();
        for p in panels(&d) {
            let title = p["title"].as_str().unwrap_or("?");
            assert!(
                ids.insert(p["id"].as_u64().unwrap()),
                "{name}: panel id of {title} repeats"
            );
            assert!(p["gridPos"]["w"].as_u64().is_some(), "{name} / {title}: gridPos");
            if p["type"] == "row" {
                continue;
            }
            assert_eq!(
                p["datasource"]["uid"], "${datasource}",
                "{name} / {title}: datasource"
            );
            let targets = p["targets"]
                .as_array()
                .unwrap_or_else(|| panic!("{name} / {title}: targets"));
            assert!(!targets.is_empty(), "{name} / {title}: no query");
            for t in targets {
                let expr = t["expr"].as_str().unwrap();
                if name == "canary.json" {
                    for word in expr.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
                        assert!(
                            !word.starts_with("aviary_"),
                            "{name} / {title}: {word} is not a Flagger metric: {expr}"
                        );
                    }
                    assert!(expr.contains("flagger_"), "{name} / {title}: {expr}");
                }
            }
        }
    }
}

#[test]
fn every_dashboard_query_returns_data_during_a_real_fleet_rollout() {
    let Some(prometheus) = aviary_testkit::prometheus::binary("the Grafana dashboard test") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let metrics = free_port();
    let (_coordinator, url) = start_coordinator(
        &Host::loopback(),
        BIN,
        &["--metrics-listen", &format!("127.0.0.1:{metrics}")],
        "coordinator",
        &Log::default(),
        worth_echoing,
    );
    let (_us, us) = start_agent(tmp.path(), "us-east-1a", "us-east-1", "", &url);
    let (_eu, eu) = start_agent(tmp.path(), "eu-west-1a", "eu-west-1", "6.0.1", &url);
    let _traffic = [us.port, eu.port].map(|p| Traffic::start(p, Duration::from_millis(15)));
    let prom = Prometheus::start(
        &prometheus,
        &[
            Job {
                name: "aviary-coordinator".into(),
                targets: vec![format!("127.0.0.1:{metrics}")],
            },
            Job {
                name: "aviary-agent".into(),
                targets: vec![
                    format!("127.0.0.1:{}", us.admin),
                    format!("127.0.0.1:{}", eu.admin),
                ],
            },
        ],
    )
    .unwrap();
    prom.wait_for_targets(Duration::from_secs(60)).unwrap();
    wait_initialized(|args| cli(&url, args), 2, Duration::from_secs(90));

    let start = now() - 5.0;
    let rollout = version_rollout(
        "6.0.1",
        "  waves:
  - {name: us, regions: [us-east-1]}
  - {name: eu, regions: [eu-west-1]}
  failurePolicy: {maxFailedClusters: 0, rollback: all}
",
    );
    apply(|args| cli(&url, args), tmp.path(), &rollout);
    // An operator holds the rollout a moment, and mistypes a name.
    for verb in ["pause", "resume"] {
        let (code, _, err) = cli(
            &url,
            &["rollout", verb, "podinfo-6-0-1", "--reason", "grafana test"],
        );
        assert_eq!(code, 0, "{verb}: {err}");
    }
    let (code, _, _) = cli(&url, &["rollout", "get", "podinfo-6-0-2"]);
    assert_ne!(code, 0, "there is no rollout podinfo-6-0-2");
    let (code, out, err) = cli(&url, &["rollout", "wait", "podinfo-6-0-1", "--timeout", "3m"]);
    assert_eq!(code, 1, "the rollout fails in eu-west-1: {out}{err}");
    // The last scrapes see the end.
    std::thread::sleep(Duration::from_secs(3 * SCRAPE_SECONDS));

    let grafana = Grafana {
        prom: &prom,
        start,
        end: now(),
    };
    let mut all = Vec::new();
    let mut evaluated = 0;
    for name in ["canary.json", "fleet.json"] {
        let (n, problems) = check_dashboard(&grafana, name);
        evaluated += n;
        all.extend(problems);
    }
    assert!(all.is_empty(), "expressions without data:\n{}", all.join("\n"));
    assert!(evaluated >= 25, "only {evaluated} expressions evaluated");
}
