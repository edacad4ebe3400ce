//! What a scenario is: the objects a user applies, how the test doubles answer (the scripted
//! Prometheus and webhook receiver answer the n-th matching request the same way on both sides,
//! whenever it comes), and the driver's steps: wait until the canary's status shows something,
//! then act (a new image, other metric answers). Steps wait on state, never on time, so both
//! controllers see the same inputs at the same point of their own schedules.

use std::time::Duration;

use aviary_testkit::Answer;
use serde_json::Value;

/// In object YAML: the webhook receiver's base URL (`http://127.0.0.1:PORT`).
pub const HOOKS: &str = "@HOOKS@";
/// In object YAML: the scripted Prometheus' base URL.
pub const PROMETHEUS: &str = "@PROMETHEUS@";

/// One scenario, run once with Flagger and once with aviary.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Also the namespace it runs in (the same on both clusters, so texts compare as they are).
    pub name: &'static str,
    /// One line for the report.
    pub about: &'static str,
    /// Flagger's `-mesh-provider`, aviary's `--provider`.
    pub provider: &'static str,
    /// YAML documents created in order before the controller starts (placeholders [`HOOKS`],
    /// [`PROMETHEUS`]; the namespace is set by the runner).
    pub objects: Vec<String>,
    /// Scripted Prometheus rules: needles → answers in order (the last repeats).
    pub prometheus: Vec<(Vec<&'static str>, Vec<Answer>)>,
    /// Scripted webhook answers: path → (status, body) in order (the last repeats); other paths
    /// answer 200.
    pub hooks: Vec<(&'static str, Vec<(u16, &'static str)>)>,
    /// The driver.
    pub steps: Vec<Step>,
    /// How long the whole scenario may take on one side.
    pub limit: Duration,
}

/// Wait until `until`, then do `then`.
#[derive(Debug, Clone)]
pub struct Step {
    pub until: Until,
    pub then: Option<Action>,
}

/// A state of the canary the driver waits for.
#[derive(Debug, Clone, PartialEq)]
pub enum Until {
    /// `status.phase`.
    Phase(&'static str),
    /// `status.phase` Progressing and `status.canaryWeight` this value.
    Weight(i64),
    /// `status.phase` Progressing and `status.iterations` this value.
    Iteration(i64),
}

/// What the driver does.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// A new image for the target's first container (a new revision; for Knative a new
    /// Revision), like `kubectl set image` or the tutorial's `kubectl patch`.
    SetImage(&'static str),
    /// Scripts the Prometheus rule with these needles anew.
    Prometheus(Vec<&'static str>, Vec<Answer>),
}

impl Step {
    pub fn wait(until: Until) -> Self {
        Self { until, then: None }
    }

    pub fn then(until: Until, action: Action) -> Self {
        Self {
            until,
            then: Some(action),
        }
    }
}

impl Until {
    /// Whether the canary (as read from the API server) is in this state.
    pub fn holds(&self, canary: &Value) -> bool {
        let s = &canary["status"];
        match self {
            Until::Phase(p) => s["phase"] == *p,
            Until::Weight(w) => s["phase"] == "Progressing" && s["canaryWeight"].as_i64() == Some(*w),
            Until::Iteration(i) => s["phase"] == "Progressing" && s["iterations"].as_i64() == Some(*i),
        }
    }
}

impl std::fmt::Display for Until {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Until::Phase(p) => write!(f, "phase {p}"),
            Until::Weight(w) => write!(f, "canary weight {w}"),
            Until::Iteration(i) => write!(f, "iteration {i}"),
        }
    }
}

/// The kind of a scenario's target, from its Canary's `targetRef`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Deployment,
    Knative,
}

impl Scenario {
    /// The objects with the doubles' URLs and the namespace filled in.
    pub fn objects(&self, hooks: &str, prometheus: &str) -> Result<Vec<Value>, String> {
        self.objects
            .iter()
            .map(|text| {
                let text = text.replace(HOOKS, hooks).replace(PROMETHEUS, prometheus);
                let mut v: Value = serde_yaml_ng::from_str(&text)
                    .map_err(|e| format!("scenario {}: {e}\n{text}", self.name))?;
                v["metadata"]["namespace"] = Value::String(self.name.to_string());
                Ok(v)
            })
            .collect()
    }

    /// The Canary's `targetRef` kind.
    pub fn target(&self) -> Target {
        let knative = self
            .objects
            .iter()
            .any(|o| o.contains("kind: Canary") && o.contains("serving.knative.dev/v1"));
        if knative {
            Target::Knative
        } else {
            Target::Deployment
        }
    }

    /// The name of the Canary (every scenario has one).
    pub fn canary_name(&self) -> String {
        self.objects
            .iter()
            .filter_map(|o| serde_yaml_ng::from_str::<Value>(o).ok())
            .find(|o| o["kind"] == "Canary")
            .and_then(|o| o["metadata"]["name"].as_str().map(str::to_string))
            .unwrap_or_else(|| "podinfo".into())
    }

    /// The name of the target (`targetRef.name`).
    pub fn target_name(&self) -> String {
        self.objects
            .iter()
            .filter_map(|o| serde_yaml_ng::from_str::<Value>(o).ok())
            .find(|o| o["kind"] == "Canary")
            .and_then(|o| o["spec"]["targetRef"]["name"].as_str().map(str::to_string))
            .unwrap_or_else(|| "podinfo".into())
    }
}
