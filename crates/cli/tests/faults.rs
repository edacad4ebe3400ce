//! Network partitions with real networking: every process on a host of its own. etcd (three
//! members), three `aviary coordinator --etcd` replicas (the default lease TTL) and three
//! `aviary agent --local` clusters each run in their own network namespace on one bridge
//! ([`Lab`]); the kernel cuts links (nftables drops, a link taken down). One fleet, one rollout
//! per scenario, each checked by the shared history checker:
//!
//! - (a) an agent cut off from every coordinator mid-canary finishes its canary on its own; after
//!   the heal the coordinator shows the outcome, with no duplicate transition;
//! - (b) the leader's host loses its link (cut from etcd and the agents): it stops acting within
//!   its lease, a follower leads within 3 s, and the stale leader wrote nothing after its
//!   successor (the terms of the etcd write history never go back);
//! - (c) a minority etcd member partitioned: the leader keeps leading, the rollout goes on;
//! - (d) the agents' links to the coordinators flap (down and up every 2 s): one promotion per
//!   cluster and a consistent history.
//!
//! `AVIARY_FAULTS_LONG=1` runs the long variants (a 2-minute cut in (a), a minute of
//! flapping in (d)); the suite runs 8 s and 20 s. Without root, `ip`/`nft` or etcd the test
//! prints a skip notice (a failure under `CI=true`). `tc netem` is not used: this kernel has no
//! `sch_netem` (docs/operations.md, Failure modes).

mod ha_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aviary_testkit::FakeWebhook;
use aviary_testkit::aviary::Pki;
use aviary_testkit::history::{self, Checked};
use aviary_testkit::netns::Lab;
use aviary_testkit::process::{Process, announced};
use aviary_testkit::prometheus::Prometheus;
use ha_support::*;
use serde_json::{Value, json};

/// The long variants of the issue (`AVIARY_FAULTS_LONG=1`).
fn long() -> bool {
    std::env::var("AVIARY_FAULTS_LONG").is_ok_and(|v| v == "1")
}

/// What the scenarios did, printed at the end (the closing totals).
#[derive(Default, Debug)]
struct Totals {
    faults: usize,
    partitions: usize,
    checked: Checked,
}

/// The lab, etcd and the fleet of every scenario (dropped in this order: the processes stop
/// before their hosts go).
struct World {
    fleet: HaFleet,
    etcd: aviary_testkit::etcd::LocalEtcd,
    lab: Lab,
    coord_hosts: Vec<Host>,
    agent_hosts: Vec<Host>,
    totals: Totals,
}

impl World {
    fn start(test: &str) -> Option<World> {
        let mut lab = Lab::start_or_skip(test)?;
        let bin = aviary_testkit::etcd::LocalEtcd::binary_or_skip(test)?;
        let mut hosts = |names: [&str; 3]| -> Vec<Host> {
            names.iter().map(|n| lab.host(n).expect("a lab host")).collect()
        };
        let etcd_hosts = hosts(["e0", "e1", "e2"]);
        let coord_hosts = hosts(["c0", "c1", "c2"]);
        let agent_hosts = hosts(["a0", "a1", "a2"]);
        Pki::get(BIN).serve_hosts(&coord_hosts);
        let etcd = aviary_testkit::etcd::LocalEtcd::start_on(&bin, &etcd_hosts).expect("start etcd");
        let three = |h: &[Host]| -> [Host; 3] { [h[0].clone(), h[1].clone(), h[2].clone()] };
        let fleet = HaFleet::start_on(
            &three(&coord_hosts),
            &three(&agent_hosts),
            &etcd.endpoints_csv(),
            None,
        );
        Some(World {
            lab,
            etcd,
            fleet,
            coord_hosts,
            agent_hosts,
            totals: Totals::default(),
        })
    }

    /// Applies rollout `podinfo-6-0-N` (version 6.0.N) once the leader has every cluster
    /// connected; returns its name.
    fn apply(&self, n: u32) -> String {
        wait_leader(&self.fleet.coords, Duration::from_secs(10));
        wait_connected(&self.fleet.urls[0]);
        let name = format!("podinfo-6-0-{n}");
        let yaml = ROLLOUT
            .replace("podinfo-6-0-1", &name)
            .replace("6.0.1", &format!("6.0.{n}"));
        self.fleet.apply(0, &name, &yaml);
        name
    }

    /// Waits for rollout `name` to succeed with one start and one promotion per cluster, then
    /// runs the history checker on it and the agents' statuses.
    fn succeeded(&mut self, name: &str) -> serde_json::Value {
        let r = succeeded(&self.live_urls(), name);
        let agents: Vec<(String, String)> = self
            .fleet
            .agents
            .iter()
            .map(|a| (a.cluster.clone(), a.canary().0))
            .collect();
        self.totals.checked += history::assert_consistent(&r, &agents);
        r
    }

    /// The URLs of the replicas not cut off.
    fn live_urls(&self) -> Vec<String> {
        self.fleet.urls.clone()
    }

    fn coord_refs(&self) -> Vec<&Host> {
        self.coord_hosts.iter().collect()
    }
}

/// (a) An agent cut off from every coordinator while its canary runs.
fn agent_partitioned(w: &mut World) {
    let name = w.apply(2);
    let agent = &w.fleet.agents[0];
    wait_running(&w.fleet.urls, &name, agent);
    let cut = if long() {
        Duration::from_secs(120)
    } else {
        Duration::from_secs(8)
    };
    let host = &w.agent_hosts[0];
    w.lab.cut(host, &w.coord_refs()).unwrap();
    let since = Instant::now();
    w.totals.faults += 1;
    w.totals.partitions += 1;
    // The canary goes on under its own metrics while the coordinator cannot see it.
    wait_until(
        "the cut-off canary to finish on its own",
        cut + Duration::from_secs(60),
        || agent.canary().0 == "Succeeded",
    );
    let finished = since.elapsed();
    std::thread::sleep(cut.saturating_sub(since.elapsed()));
    let r = rollout(&w.fleet.urls, &name).unwrap();
    assert_ne!(
        cluster_phase(&r, &agent.cluster),
        "Succeeded",
        "the coordinator saw the outcome through a cut link"
    );
    w.lab.heal(host, &w.coord_refs()).unwrap();
    let healed = Instant::now();
    wait_until(
        "the coordinator to show the outcome",
        Duration::from_secs(30),
        || rollout(&w.fleet.urls, &name).is_some_and(|r| cluster_phase(&r, &agent.cluster) == "Succeeded"),
    );
    println!(
        "(a) agent cut off {cut:?}: its canary finished {finished:?} into the cut; the coordinator showed it {:?} after the heal",
        healed.elapsed()
    );
    w.succeeded(&name);
}

/// (b) The leader's host loses its link: cut from etcd, the agents and the other replicas.
fn leader_partitioned(w: &mut World) {
    let name = w.apply(3);
    wait_running(&w.fleet.urls, &name, &w.fleet.agents[0]);
    let coords = &w.fleet.coords;
    let old = wait_leader(coords, Duration::from_secs(10));
    let old_fence = fence(&coords[old]);
    let cut = Instant::now();
    w.lab.isolate(&w.coord_hosts[old]).unwrap();
    w.totals.faults += 1;
    w.totals.partitions += 1;
    let (new, took) = next_leader(coords, old, cut, Duration::from_secs(10));
    println!(
        "(b) leader {} isolated: {} leads {took:?} later",
        coords[old].name, coords[new].name
    );
    assert!(took < Duration::from_secs(3), "takeover took {took:?}");
    wait_until(
        "the isolated leader to stop acting",
        Duration::from_secs(5),
        || coords[old].log.find("stepping down", cut).is_some(),
    );
    let stopped = coords[old].log.find("stepping down", cut).unwrap() - cut;
    println!("    the isolated leader stepped down {stopped:?} after the cut");
    // It refuses writes from TTL − 0.2 s after its last renewal was sent (checked before each
    // write); the log line may come a little later on a busy machine.
    assert!(
        stopped < Duration::from_millis(2500),
        "it acted past its lease: {stopped:?}"
    );
    let new_fence = fence(&coords[new]);
    assert!(new_fence > old_fence);
    std::thread::sleep(Duration::from_secs(2));
    w.lab.rejoin(&w.coord_hosts[old]).unwrap();
    w.succeeded(&name);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let fences = rollout_write_terms(&rt, &w.etcd.endpoints_csv(), &name);
    if let Some(p) = fences.iter().position(|f| *f == new_fence) {
        assert!(
            !fences[p..].contains(&old_fence),
            "the stale leader wrote after its successor: {fences:?}"
        );
    }
}

/// (c) A minority etcd member (not the raft leader) partitioned from everyone.
fn etcd_minority_partitioned(w: &mut World) {
    let name = w.apply(4);
    wait_running(&w.fleet.urls, &name, &w.fleet.agents[0]);
    let leading = wait_leader(&w.fleet.coords, Duration::from_secs(10));
    let member = (w.etcd.raft_leader() + 1) % 3;
    let cut = Instant::now();
    w.lab.isolate(w.etcd.host(member)).unwrap();
    w.totals.faults += 1;
    w.totals.partitions += 1;
    let r = w.succeeded(&name);
    println!(
        "(c) etcd member m{member} isolated: the rollout finished {:?} later without a new leader",
        cut.elapsed()
    );
    assert_eq!(r["phase"], "Succeeded");
    for c in &w.fleet.coords {
        assert!(
            c.log.find("stepping down", cut).is_none(),
            "{} stepped down",
            c.name
        );
    }
    assert_eq!(leader(&w.fleet.coords), Some(leading));
    // Back: without pre-vote (etcd 3.4's default) the member that campaigned alone forces a
    // raft election; the replicas may hand over once (fenced), so the next scenario waits for a
    // leader with every cluster connected.
    let rejoined = Instant::now();
    w.lab.rejoin(w.etcd.host(member)).unwrap();
    assert!(
        w.etcd.wait_healthy(member, Duration::from_secs(20)),
        "m{member} rejoined"
    );
    std::thread::sleep(Duration::from_secs(3));
    let elections = w
        .fleet
        .coords
        .iter()
        .filter(|c| c.log.find("elected leader", rejoined).is_some())
        .count();
    println!("    m{member} rejoined; leader elections since: {elections}");
}

/// (d) The agents' links to the coordinators go down and up every 2 s while a rollout runs.
fn flapping_links(w: &mut World) {
    let name = w.apply(5);
    let flap = if long() {
        Duration::from_secs(60)
    } else {
        Duration::from_secs(20)
    };
    let start = Instant::now();
    let mut flaps = 0;
    while start.elapsed() < flap {
        for h in &w.agent_hosts {
            w.lab.cut(h, &w.coord_refs()).unwrap();
        }
        std::thread::sleep(Duration::from_secs(2));
        for h in &w.agent_hosts {
            w.lab.heal(h, &w.coord_refs()).unwrap();
        }
        std::thread::sleep(Duration::from_secs(2));
        flaps += 1;
    }
    w.totals.faults += flaps;
    w.totals.partitions += flaps * w.agent_hosts.len();
    let r = w.succeeded(&name);
    println!(
        "(d) {flaps} flaps of three agent links over {flap:?}: rollout {}, {} history records",
        r["phase"],
        r["history"].as_array().map_or(0, Vec::len)
    );
}

#[test]
fn partitions_during_rollouts_lose_and_duplicate_nothing() {
    let Some(mut w) = World::start("partitions_during_rollouts_lose_and_duplicate_nothing") else {
        return;
    };
    // A clean rollout first: the fleet works across the lab.
    let name = w.apply(1);
    w.succeeded(&name);
    agent_partitioned(&mut w);
    leader_partitioned(&mut w);
    etcd_minority_partitioned(&mut w);
    flapping_links(&mut w);
    println!(
        "totals: {} faults, {} partitions, {} transitions and {} agent statuses checked, 0 lost or duplicated",
        w.totals.faults, w.totals.partitions, w.totals.checked.transitions, w.totals.checked.agents
    );
}

/// The canary of the dependency scenarios: steps of 10% to 100% (about 10 s of analysis),
/// rolled back after 2 failed checks, with `metrics` and `webhooks` besides the built-in ones,
/// and `extra` documents (a MetricTemplate) after it.
fn dependent_canary(port: u16, version: &str, metrics: &[Value], webhooks: &[Value], extra: &str) -> String {
    let c = LocalCanary {
        threshold: 2,
        step_weight: 10,
        max_weight: 100,
        progress_deadline_seconds: Some(120),
        extra_metrics: metrics.to_vec(),
        webhooks: webhooks.to_vec(),
        ..LocalCanary::sample_app(BIN, port, version)
    };
    format!("{}{extra}", c.yaml())
}

/// A canary's config for (port, version).
type CanaryConfig = Box<dyn Fn(u16, &str) -> String>;

/// The canary's status on the agent's admin endpoint.
fn status(a: &Agent) -> Value {
    aviary_testkit::net::curl_json(&format!("{}/canaries", a.admin))["items"][0]["status"].clone()
}

#[test]
fn dependencies_failing_mid_canary_never_promote() {
    let test = "dependencies_failing_mid_canary_never_promote";
    let Some(prom_bin) = aviary_testkit::prometheus::binary(test) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let hook = rt.block_on(FakeWebhook::start()).unwrap();
    let mut prom = Some(Prometheus::start(&prom_bin, &[]).expect("start prometheus"));
    let mut lt_child = Command::new(BIN)
        .args(["loadtester", "--host", "127.0.0.1", "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the load tester");
    let lt_addr = announced(lt_child.stdout.take().unwrap(), "aviary loadtester listening on ");
    let mut loadtester = Process::new(lt_child);

    // Prometheus answers `vector(1)` while it runs: the check needs at least 1.
    let template = format!(
        "---\napiVersion: flagger.app/v1beta1\nkind: MetricTemplate\nmetadata: {{name: prom, namespace: test}}\nspec:\n  provider: {{type: prometheus, address: \"{}\"}}\n  query: vector(1)\n",
        prom.as_ref().unwrap().url()
    );
    let prom_metric = json!({"name": "prometheus-up", "templateRef": {"name": "prom", "namespace": "test"}, "thresholdRange": {"min": 1}, "interval": "30s"});
    let hook_webhook = json!({"name": "acceptance", "type": "rollout", "url": format!("{}/check", hook.url()), "timeout": "1s"});
    let lt_webhook = json!({"name": "load", "type": "rollout", "url": format!("http://{lt_addr}/"), "timeout": "2s", "metadata": {"type": "bash", "cmd": "true"}});
    let canaries: [(&str, CanaryConfig); 3] = [
        (
            "prometheus",
            Box::new(move |p: u16, v: &str| {
                dependent_canary(p, v, std::slice::from_ref(&prom_metric), &[], &template)
            }),
        ),
        (
            "webhook",
            Box::new(move |p: u16, v: &str| {
                dependent_canary(p, v, &[], std::slice::from_ref(&hook_webhook), "")
            }),
        ),
        (
            "loadtester",
            Box::new(move |p: u16, v: &str| {
                dependent_canary(p, v, &[], std::slice::from_ref(&lt_webhook), "")
            }),
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut agents: Vec<Agent> = canaries
        .iter()
        .map(|(name, yaml)| Agent::launch(&Host::loopback(), dir.path(), name, None, &**yaml))
        .collect();
    initialize(&mut agents);
    for (a, (_, yaml)) in agents.iter().zip(&canaries) {
        a.deploy(&yaml(a.port, "6.0.1"));
    }
    for a in &agents {
        wait_until(
            &format!("{} to progress", a.cluster),
            Duration::from_secs(60),
            || {
                let (phase, weight) = a.canary();
                phase == "Progressing" && weight >= 20
            },
        );
    }
    // The faults, all at once, mid-canary.
    prom.take();
    hook.hang("/check");
    loadtester.kill9();
    let injected = Instant::now();
    let mut done = Vec::new();
    wait_until("every canary to roll back", Duration::from_secs(60), || {
        for a in &agents {
            let (phase, _) = a.canary();
            assert_ne!(phase, "Succeeded", "{} promoted on missing evidence", a.cluster);
            if phase == "Failed" && !done.iter().any(|(c, _)| c == &a.cluster) {
                done.push((a.cluster.clone(), injected.elapsed()));
            }
        }
        done.len() == agents.len()
    });
    for a in &agents {
        let s = status(a);
        println!(
            "{}: rolled back {:?} after the fault: {}",
            a.cluster,
            done.iter().find(|(c, _)| c == &a.cluster).unwrap().1,
            s["conditions"][0]["message"]
        );
        assert_eq!(s["canaryWeight"], 0, "{}: {s}", a.cluster);
        // The primary still serves the old version.
        let body = curl(&format!("http://127.0.0.1:{}/", a.port)).unwrap_or_default();
        assert!(body.contains("6.0.0"), "{}: {body}", a.cluster);
    }
    let hung = hook.calls().iter().filter(|c| c.path == "/check").count();
    assert!(hung >= 2, "the hanging webhook was called {hung} times");
}
