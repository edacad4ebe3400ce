//! Running scenarios on both sides: two fresh control planes side by side (one runs Flagger,
//! the other aviary), each scenario in its own namespace with its own controller process
//! (`-namespace`/`--namespace`, the scenario's `-mesh-provider`/`--provider`), its own scripted
//! Prometheus and webhook receiver, and the same driver. Scenarios run at the same time.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aviary_testkit::{Cluster, FakePrometheus, FakeWebhook, Objects};
use serde_json::json;
use tokio::sync::Semaphore;

use crate::compare::{Difference, compare};
use crate::documented::{self, Documented};
use crate::error::{Error, Result};
use crate::record::Recording;
use crate::scenario::{Action, Scenario, Target};
use crate::sides::{self, Launch, Programs, Side};
use crate::trace::{Raw, Trace};

/// After the last step: long enough for the rest of the tick (post-rollout hooks and the final
/// events come after the status write), short of the next tick.
const GRACE: Duration = Duration::from_secs(4);
/// The path of the global event webhook (`-event-webhook`) on each scenario's receiver.
pub const EVENT_WEBHOOK_PATH: &str = "/events";

/// What to run.
pub struct Options {
    pub scenarios: Vec<Scenario>,
    pub programs: Programs,
    /// Controller logs go here (`<scenario>-<side>.log`).
    pub logs: PathBuf,
    /// At most this many scenarios at once (each runs two controllers).
    pub parallel: usize,
}

/// One scenario's result.
#[derive(Debug)]
pub struct Outcome {
    pub scenario: Scenario,
    pub flagger: Trace,
    pub aviary: Trace,
    /// Documented differences found (rules that changed the traces).
    pub documented: Vec<&'static Documented>,
    /// What still differs after the documented rules.
    pub undocumented: Vec<Difference>,
}

impl Outcome {
    pub fn identical(&self) -> bool {
        self.documented.is_empty() && self.undocumented.is_empty()
    }
}

/// One side's cluster and identity.
struct SideEnv {
    side: Side,
    cluster: Cluster,
    kubeconfig: PathBuf,
}

/// Runs every scenario on both sides and compares.
pub async fn run(opts: &Options) -> Result<Vec<Outcome>> {
    std::fs::create_dir_all(&opts.logs)
        .map_err(|e| Error::io(format!("creating {}", opts.logs.display()), e))?;
    let (flagger, aviary) = tokio::try_join!(
        side_env(Side::Flagger, &opts.programs, &opts.logs),
        side_env(Side::Aviary, &opts.programs, &opts.logs)
    )?;
    let (flagger, aviary) = (Arc::new(flagger), Arc::new(aviary));
    let limit = Arc::new(Semaphore::new(opts.parallel.max(1)));
    let runs = opts.scenarios.iter().map(|s| {
        let (flagger, aviary, limit) = (flagger.clone(), aviary.clone(), limit.clone());
        async move {
            let _permit = limit.acquire().await;
            let (f, a) = tokio::join!(
                run_side(&flagger, &opts.programs, s, &opts.logs),
                run_side(&aviary, &opts.programs, s, &opts.logs)
            );
            Ok::<_, Error>(outcome(s.clone(), f?, a?))
        }
    });
    futures::future::try_join_all(runs).await
}

fn outcome(scenario: Scenario, flagger: Trace, aviary: Trace) -> Outcome {
    let (mut f, mut a) = (flagger.clone(), aviary.clone());
    let documented = documented::apply(&scenario, &mut f, &mut a);
    let undocumented = compare(&f, &a);
    Outcome {
        scenario,
        flagger,
        aviary,
        documented,
        undocumented,
    }
}

async fn side_env(side: Side, programs: &Programs, logs: &Path) -> Result<SideEnv> {
    let cluster = Cluster::start().await?;
    let kubeconfig = sides::prepare(side, &cluster, programs, logs).await?;
    Ok(SideEnv {
        side,
        cluster,
        kubeconfig,
    })
}

/// One side of one scenario, recorded and normalised.
async fn run_side(env: &SideEnv, programs: &Programs, s: &Scenario, logs: &Path) -> Result<Trace> {
    let objects = env.cluster.objects().await?;
    env.cluster.namespace_named(s.name).await?;
    let prom = FakePrometheus::start().await?;
    for (needles, answers) in &s.prometheus {
        prom.script(needles, answers.clone());
    }
    let hooks = FakeWebhook::start().await?;
    for (path, answers) in &s.hooks {
        hooks.script(path, answers.iter().map(|(c, b)| (*c, b.to_string())).collect());
    }
    let mut recording = Recording::start(&objects, s.name, &s.canary_name()).await?;
    for obj in s.objects(hooks.url(), prom.url()).map_err(Error::Setup)? {
        objects.create(obj).await?;
    }
    // The workload is up before the controller starts (as when a canary is added to a running
    // app), so neither side's first tick races the stand-ins.
    target_ready(&objects, s).await?;
    let event_webhook = format!("{}{EVENT_WEBHOOK_PATH}", hooks.url());
    let controller = sides::start(
        env.side,
        programs,
        &Launch {
            kubeconfig: &env.kubeconfig,
            namespace: Some(s.name),
            provider: Some(s.provider),
            metrics_server: prom.url(),
            event_webhook: Some(&event_webhook),
            control_loop_interval: Some("1s"),
            log: logs.join(format!("{}-{}.log", s.name, env.side.name())),
        },
    )?;

    let mut problems = Vec::new();
    let deadline = tokio::time::Instant::now() + s.limit;
    for step in &s.steps {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if let Err(e) = recording.wait(&step.until, left).await {
            problems.push(e);
            break;
        }
        if let Some(action) = &step.then
            && let Err(e) = act(&objects, s, &prom, action).await
        {
            problems.push(format!("{action:?}: {e}"));
            break;
        }
    }
    tokio::time::sleep(GRACE).await;
    let mut controller = controller;
    if let Err(e) = controller.check_running() {
        problems.push(format!("the controller exited: {e}"));
    }
    drop(controller);
    let kube_events = objects.events(s.name).await?;
    let raw = Raw {
        observed: recording.stop(),
        kube_events,
        hook_calls: hooks.calls(),
        queries: prom.answered(),
        problems,
        urls: vec![
            (hooks.url().to_string(), "http://hooks".into()),
            (prom.url().to_string(), "http://prometheus".into()),
            (env.cluster.control_plane().url(), "https://kube-apiserver".into()),
        ],
    };
    let trace = raw.normalise();
    let dump = logs.join(format!("{}-{}.trace.json", s.name, env.side.name()));
    let _ = std::fs::write(
        &dump,
        serde_json::to_string_pretty(&trace.to_json()).unwrap_or_default(),
    );
    Ok(trace)
}

/// How long a scenario's workload may take to come up.
const TARGET_READY: Duration = Duration::from_secs(90);

async fn target_ready(objects: &Objects, s: &Scenario) -> Result<()> {
    let name = s.target_name();
    match s.target() {
        Target::Deployment => {
            objects
                .wait_for("apps/v1", "Deployment", Some(s.name), &name, TARGET_READY, |d| {
                    let st = &d["status"];
                    st["observedGeneration"] == d["metadata"]["generation"]
                        && st["availableReplicas"] == d["spec"]["replicas"]
                })
                .await?;
        }
        Target::Knative => {
            objects
                .wait_for(
                    "serving.knative.dev/v1",
                    "Service",
                    Some(s.name),
                    &name,
                    TARGET_READY,
                    |k| {
                        let st = &k["status"];
                        st["observedGeneration"] == k["metadata"]["generation"]
                            && st["latestReadyRevisionName"].is_string()
                            && st["latestReadyRevisionName"] == st["latestCreatedRevisionName"]
                    },
                )
                .await?;
        }
    }
    Ok(())
}

async fn act(objects: &Objects, s: &Scenario, prom: &FakePrometheus, action: &Action) -> Result<()> {
    match action {
        Action::SetImage(image) => {
            let (av, kind) = match s.target() {
                Target::Deployment => ("apps/v1", "Deployment"),
                Target::Knative => ("serving.knative.dev/v1", "Service"),
            };
            objects
                .update(av, kind, Some(s.name), &s.target_name(), |o| {
                    o["spec"]["template"]["spec"]["containers"][0]["image"] = json!(image);
                })
                .await?;
        }
        Action::Prometheus(needles, answers) => prom.script(needles, answers.clone()),
    }
    Ok(())
}
