//! `aviary validate` end to end: the built binary on the committed examples and fixtures, run
//! from the repository root so that every printed path is the one a user would type.
//!
//! The invalid fixtures are table-driven: each names the exit code and the exact lines expected
//! (`severity kind namespace/name: field.path: message  (file)`), and a fixture without a table
//! entry (or an entry without a fixture) fails the suite.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use aviary_testkit::process::spawn_with_input;

/// Every run is bounded: the validator answers in milliseconds, so a minute means it hangs.
const TIMEOUT: Duration = Duration::from_secs(60);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root exists")
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Output lines without the closing summary (`N resources: …`).
    fn findings(&self) -> Vec<&str> {
        self.stdout.lines().filter(|l| !is_summary(l)).collect()
    }

    /// The summary line.
    fn summary(&self) -> &str {
        self.stdout
            .lines()
            .rfind(|l| is_summary(l))
            .unwrap_or_else(|| panic!("no summary line in:\n{}", self.stdout))
    }
}

fn is_summary(line: &str) -> bool {
    [" resources: ", " resource: "].iter().any(|sep| {
        line.split_once(sep)
            .is_some_and(|(n, _)| n.chars().all(|c| c.is_ascii_digit()))
    })
}

/// The summary line `aviary validate` prints (singular for one).
fn summary_line(resources: usize, errors: usize, warnings: usize, skipped: usize) -> String {
    let plural = |n: usize, word: &str| {
        if n == 1 {
            format!("{n} {word}")
        } else {
            format!("{n} {word}s")
        }
    };
    format!(
        "{}: {errors} with errors, {}, {skipped} skipped",
        plural(resources, "resource"),
        plural(warnings, "warning")
    )
}

/// Runs the built `aviary` from the repository root, feeding `stdin` when given.
fn aviary(args: &[&str], stdin: Option<&[u8]>) -> Run {
    let child = spawn_with_input(
        Command::new(env!("CARGO_BIN_EXE_aviary"))
            .args(args)
            .current_dir(repo_root()),
        stdin,
    );
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(TIMEOUT) {
        Ok(out) => out.expect("wait for aviary"),
        Err(_) => {
            // Ends only the child this test started.
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("aviary {args:?} did not finish within {TIMEOUT:?}");
        }
    };
    let run = Run {
        code: out.status.code().expect("aviary exited (not killed by a signal)"),
        stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(out.stderr).expect("stderr is UTF-8"),
    };
    assert!(
        !run.stderr.contains("panicked"),
        "aviary {args:?} panicked:\n{}",
        run.stderr
    );
    run
}

/// One output line as `aviary validate` prints it.
fn line(severity: &str, kind: &str, rest: &str, file: &str) -> String {
    format!("{severity:<8} {kind} {rest}  ({file})")
}

/// `(fixture under tests/fixtures/invalid, exit code, [(severity, kind, "ns/name: path: message")])`.
type Case = (
    &'static str,
    i32,
    &'static [(&'static str, &'static str, &'static str)],
);

/// Every invalid fixture with the exact lines it must produce (errors first, then warnings, each
/// sorted by field path). Exit code 0 marks the warning-only cases.
#[rustfmt::skip]
const INVALID: &[Case] = &[
    ("ab-match-header-without-kind", 1, &[("error", "Canary", "test/podinfo: spec.analysis.match[0].headers.x-canary: set one of exact, prefix, suffix or regex")]),
    ("alert-name-missing", 1, &[("error", "Canary", "test/podinfo: spec.analysis.alerts[0].name: required field is missing: the alert's name")]),
    ("alert-provider-address-and-secret-both", 1, &[("error", "AlertProvider", "flagger-system/on-call: spec: set address or secretRef, not both (Flagger's schema accepts exactly one)")]),
    ("alert-provider-address-and-secret-missing", 1, &[("error", "AlertProvider", "flagger-system/on-call: spec: set address (the hook URL) or secretRef (a Secret with an address key)")]),
    ("alert-provider-address-invalid", 1, &[("error", "AlertProvider", "flagger-system/on-call: spec.address: \"outlook.office.com/webhook/x\" is not a URL (relative URL without a base); expected the hook URL such as http://host:port/")]),
    ("alert-provider-proxy-invalid", 1, &[("error", "AlertProvider", "flagger-system/on-call: spec.proxy: \"socks5://proxy:1080\" must be an http or https URL with a host, got scheme \"socks5\"")]),
    ("alert-provider-ref-missing", 1, &[("error", "Canary", "test/podinfo: spec.analysis.alerts[0].providerRef: required field is missing: {name, namespace} of an AlertProvider")]),
    ("alert-provider-ref-name-missing", 1, &[("error", "Canary", "test/podinfo: spec.analysis.alerts[0].providerRef.name: required field is missing: the AlertProvider's name")]),
    ("alert-provider-secret-ref-name-missing", 1, &[("error", "AlertProvider", "flagger-system/on-call: spec.secretRef.name: required field is missing: the Secret's name")]),
    ("alert-provider-type-enum", 1, &[("error", "AlertProvider", "flagger-system/on-call: spec.type: \"pagerduty\" is not allowed; expected one of \"slack\", \"msteams\", \"discord\", \"rocket\", \"gchat\", \"generic\"")]),
    ("alert-provider-type-missing", 1, &[("error", "AlertProvider", "flagger-system/on-call: spec.type: required field is missing: slack, msteams, discord, rocket, gchat or generic")]),
    ("alert-severity-enum", 1, &[("error", "Canary", "test/podinfo: spec.analysis.alerts[0].severity: \"critical\" is not allowed; expected one of \"\", \"info\", \"warn\", \"error\"")]),
    ("analysis-interval-zero", 1, &[("error", "Canary", "test/podinfo: spec.analysis.interval: \"0s\" is zero: the analysis needs a positive interval such as 1m or 30s")]),
    ("analysis-iterations-zero", 1, &[("error", "Canary", "test/podinfo: spec.analysis.iterations: must be at least 1, got 0")]),
    ("analysis-missing-interval", 1, &[("error", "Canary", "test/podinfo: spec.analysis.interval: required field is missing: how often the analysis runs, e.g. 1m or 30s")]),
    ("analysis-missing-threshold", 1, &[("error", "Canary", "test/podinfo: spec.analysis.threshold: required field is missing: failed checks before rollback, e.g. 5")]),
    ("analysis-missing", 1, &[("error", "Canary", "test/podinfo: spec.analysis: required field is missing: the canary analysis (interval, threshold and steps)")]),
    ("analysis-no-mode", 1, &[("error", "Canary", "test/podinfo: spec.analysis: set exactly one of iterations (blue/green, A/B), stepWeight or stepWeights (canary); found none")]),
    ("analysis-step-weight-and-step-weights", 1, &[("error", "Canary", "test/podinfo: spec.analysis: set exactly one of iterations (blue/green, A/B), stepWeight or stepWeights (canary); found stepWeight and stepWeights")]),
    ("analysis-two-modes", 1, &[("error", "Canary", "test/podinfo: spec.analysis: set exactly one of iterations (blue/green, A/B), stepWeight or stepWeights (canary); found iterations and stepWeight")]),
    ("api-version-v1alpha3", 1, &[("error", "Canary", "test/podinfo: apiVersion: Canary is served as flagger.app/v1beta1 only, got flagger.app/v1alpha3")]),
    ("autoscaler-primary-replicas-inverted", 1, &[("error", "Canary", "test/podinfo: spec.autoscalerRef.primaryScalerReplicas: minReplicas (5) is greater than maxReplicas (2)")]),
    ("autoscaler-primary-replicas", 1, &[
        ("error", "Canary", "test/podinfo: spec.autoscalerRef.primaryScalerReplicas.maxReplicas: must be at least 1, got 0"),
        ("error", "Canary", "test/podinfo: spec.autoscalerRef.primaryScalerReplicas.minReplicas: must be at least 1, got 0"),
    ]),
    ("autoscaler-ref-kind-enum", 1, &[("error", "Canary", "test/podinfo: spec.autoscalerRef.kind: \"VerticalPodAutoscaler\" is not allowed; expected one of \"HorizontalPodAutoscaler\", \"ScaledObject\"")]),
    ("autoscaler-ref-missing-fields", 1, &[
        ("error", "Canary", "test/podinfo: spec.autoscalerRef.apiVersion: required field is missing: e.g. autoscaling/v2"),
        ("error", "Canary", "test/podinfo: spec.autoscalerRef.name: required field is missing: the autoscaler's name"),
    ]),
    ("canary-ready-threshold-range", 1, &[("error", "Canary", "test/podinfo: spec.analysis.canaryReadyThreshold: must be between 0 and 100, got -5")]),
    ("cors-allow-origin-without-kind", 1, &[("error", "Canary", "test/podinfo: spec.service.corsPolicy.allowOrigins[0]: set one of exact, prefix, suffix or regex")]),
    ("delegation-with-hosts", 1, &[("error", "Canary", "test/podinfo: spec.service.delegation: a delegate VirtualService cannot set hosts or gateways; remove them or delegation")]),
    ("duration-analysis-interval", 1, &[("error", "Canary", "test/podinfo: spec.analysis.interval: \"1h\" does not match ^[0-9]+(m|s); use a number of minutes or seconds such as 1m or 30s")]),
    ("duration-interval-unparsable", 0, &[("warning", "Canary", "test/podinfo: spec.analysis.interval: \"5min\" is not a valid duration; Flagger would silently use 60s")]),
    ("duration-metric-interval", 1, &[("error", "Canary", "test/podinfo: spec.analysis.metrics[0].interval: \"2h\" does not match ^[0-9]+(m|s); use a number of minutes or seconds such as 1m or 30s")]),
    ("duration-webhook-timeout", 1, &[("error", "Canary", "test/podinfo: spec.analysis.webhooks[0].timeout: \"30\" does not match ^[0-9]+(m|s); use a number of minutes or seconds such as 1m or 30s")]),
    ("fleet-api-version", 1, &[("error", "FleetRollout", "podinfo-6-0-1: apiVersion: FleetRollout is served as aviary.dev/v1alpha1 only, got aviary.dev/v1")]),
    ("fleet-approval-enum", 1, &[("error", "FleetRollout", "podinfo-6-0-1: spec.waves[1].approval: \"yes-please\" is not allowed; expected one of \"auto\", \"manual\"")]),
    ("fleet-bake-duration", 1, &[("error", "FleetRollout", "podinfo-6-0-1: spec.waves[0].bake.duration: invalid duration \"10 minutes\": unknown unit (use ns, us, ms, s, m or h); use a duration such as 10m")]),
    ("fleet-bake-min-success-rate", 1, &[("error", "FleetRollout", "podinfo-6-0-1: spec.waves[1].bake.minSuccessRate: must be a percentage between 0 and 100, got 150")]),
    ("fleet-by-region-duplicate", 1, &[("error", "FleetRollout", "podinfo-6-0-1: spec.byRegion[2]: region \"us-east-1\" is listed twice")]),
    ("fleet-by-region-empty-name", 1, &[("error", "FleetRollout", "podinfo-6-0-1: spec.byRegion[1]: must not be empty")]),
    ("fleet-by-region-empty", 1, &[("error", "FleetRollout", "podinfo-6-0-1: spec.byRegion: must list at least one region")]),
    ("fleet-canary-missing", 1, &[("error", "FleetRollout", "podinfo-6-0-1: spec.canary: required field is missing: {namespace, name} of the Canary")]),
    ("fleet-canary-namespace-missing", 1, &[("error", "FleetRollout", "podinfo-6-0-1: spec.canary.namespace: required field is missing: the Canary's namespace")]),
    ("fleet-cluster-deadline", 1, &[("error", "FleetRollout", "podinfo-6-0-1: spec.clusterDeadline: invalid duration \"1d\": unknown unit (use ns, us, ms, s, m or h); use a duration such as 30m")]),
    ("fleet-cluster-deadline-zero", 1, &[("error", "FleetRollout", "podinfo-6-0-1: spec.clusterDeadline: must be longer than 0; use a duration such as 30m")]),
    ("fleet-duplicate-wave-name", 1, &[("error", "FleetRollout", "podinfo-6-0-1: spec.waves[1].name: wave name \"first\" is used twice")]),
    ("fleet-max-concurrent-garbage", 1, &[("error", "FleetRollout", "podinfo-6-0-1: spec.waves[1].maxConcurrent: expected a count or a percent such as 25%, got \"half\"")]),
    ("fleet-max-concurrent-percent", 1, &[("error", "FleetRollout", "podinfo-6-0-1: spec.waves[1].maxConcurrent: a percent must be between 0% and 100%, got 150%")]),
    ("fleet-max-concurrent-zero", 1, &[("error", "FleetRollout", "podinfo-6-0-1: spec.waves[1].maxConcurrent: must allow at least one cluster (≥ 1 or > 0%)")]),
    ("fleet-max-failed-clusters", 1, &[("error", "FleetRollout", "podinfo-6-0-1: spec.failurePolicy.maxFailedClusters: must not be negative, got -1")]),
    ("fleet-mode-enum", 1, &[("error", "FleetRollout", "podinfo-6-0-1: spec.mode: \"pull\" is not allowed; expected one of \"push\", \"gate\"")]),
    ("fleet-no-waves", 1, &[("error", "FleetRollout", "podinfo-6-0-1: spec.waves: required field is missing: the waves (or byRegion: [region, …])")]),
    ("fleet-revision-empty-image", 1, &[("error", "FleetRollout", "podinfo-6-0-1: spec.revision.containerImages.podinfod: must not be empty")]),
    ("fleet-revision-empty", 1, &[("error", "FleetRollout", "podinfo-6-0-1: spec.revision: set containerImages (Deployment, Knative) or version (LocalService)")]),
    ("fleet-revision-missing", 1, &[("error", "FleetRollout", "podinfo-6-0-1: spec.revision: required in push mode: containerImages or version")]),
    ("fleet-rollback-enum", 1, &[("error", "FleetRollout", "podinfo-6-0-1: spec.failurePolicy.rollback: \"everything\" is not allowed; expected one of \"cluster\", \"wave\", \"all\"")]),
    ("fleet-selector-operator", 1, &[("error", "FleetRollout", "podinfo-6-0-1: spec.clusters.matchExpressions[0].operator: \"Equals\" is not allowed; expected one of \"In\", \"NotIn\", \"Exists\", \"DoesNotExist\"")]),
    ("fleet-selector-values", 1, &[
        ("error", "FleetRollout", "podinfo-6-0-1: spec.waves[0].clusters.matchExpressions[0].values: In needs at least one value"),
        ("error", "FleetRollout", "podinfo-6-0-1: spec.waves[1].clusters.matchExpressions[0].values: Exists takes no values"),
    ]),
    ("fleet-unknown-field", 1, &[("error", "FleetRollout", "podinfo-6-0-1: spec.waves[1].maxConcurent: unknown field (did you mean maxConcurrent?); the coordinator refuses unknown fields")]),
    ("fleet-unknown-mandatory-wave", 1, &[("error", "FleetRollout", "podinfo-6-0-1: spec.failurePolicy.mandatoryWaves[0]: \"frist\" is not a wave of this rollout; waves are [\"first\", \"rest\"]")]),
    ("fleet-wave-name-missing", 1, &[("error", "FleetRollout", "podinfo-6-0-1: spec.waves[0].name: required field is missing: a unique wave name")]),
    ("fleet-waves-and-by-region", 1, &[("error", "FleetRollout", "podinfo-6-0-1: spec: set waves or byRegion, not both")]),
    ("fleet-waves-empty", 1, &[("error", "FleetRollout", "podinfo-6-0-1: spec.waves: must list at least one wave")]),
    ("gateway-api-without-gateway-refs", 1, &[("error", "Canary", "test/podinfo: spec.service.gatewayRefs: GatewayRefs must be specified when using Gateway API as a provider.")]),
    ("gateway-ref-name-missing", 1, &[("error", "Canary", "test/podinfo: spec.service.gatewayRefs[0].name: required field is missing: the Gateway's name")]),
    ("guide-blue-green-missing-threshold", 1, &[
        ("error", "Canary", "production/user-service: spec.analysis.threshold: required field is missing: failed checks before rollback, e.g. 5"),
        ("warning", "Canary", "production/user-service: spec.analysis.metrics[1].query: inline queries are deprecated; use a MetricTemplate"),
    ]),
    ("guide-mirroring-missing-threshold", 1, &[
        ("error", "Canary", "production/api-gateway: spec.analysis.threshold: required field is missing: failed checks before rollback, e.g. 5"),
        ("warning", "Canary", "production/api-gateway: spec.analysis.metrics[0].query: inline queries are deprecated; use a MetricTemplate"),
        ("warning", "Canary", "production/api-gateway: spec.analysis.metrics[1].query: inline queries are deprecated; use a MetricTemplate"),
        ("warning", "Canary", "production/api-gateway: spec.analysis.metrics[2].query: inline queries are deprecated; use a MetricTemplate"),
    ]),
    ("guide-mobile-ab-interval-hours", 1, &[
        ("error", "Canary", "mobile-backend/recommendation-api: spec.analysis.interval: \"1h\" does not match ^[0-9]+(m|s); use a number of minutes or seconds such as 1m or 30s"),
        ("error", "Canary", "mobile-backend/recommendation-api: spec.analysis.metrics[1].interval: \"1h\" does not match ^[0-9]+(m|s); use a number of minutes or seconds such as 1m or 30s"),
        ("error", "Canary", "mobile-backend/recommendation-api: spec.analysis.metrics[2].interval: \"1h\" does not match ^[0-9]+(m|s); use a number of minutes or seconds such as 1m or 30s"),
        ("error", "Canary", "mobile-backend/recommendation-api: spec.analysis.threshold: required field is missing: failed checks before rollback, e.g. 5"),
        ("warning", "Canary", "mobile-backend/recommendation-api: spec.analysis.metrics[1].query: inline queries are deprecated; use a MetricTemplate"),
        ("warning", "Canary", "mobile-backend/recommendation-api: spec.analysis.metrics[2].query: inline queries are deprecated; use a MetricTemplate"),
    ]),
    ("guide-rollout-speed-step-weight-and-iterations", 1, &[("error", "Canary", "production/myapp: spec.analysis: set exactly one of iterations (blue/green, A/B), stepWeight or stepWeights (canary); found iterations and stepWeight")]),
    ("guide-staging-step-weight-and-iterations", 1, &[
        ("error", "Canary", "staging/myapp: spec.analysis: set exactly one of iterations (blue/green, A/B), stepWeight or stepWeights (canary); found iterations and stepWeight"),
        ("error", "Canary", "staging/myapp: spec.targetRef: required field is missing: the workload under analysis {apiVersion, kind, name}"),
    ]),
    ("interval-below-minimum", 0, &[("warning", "Canary", "test/podinfo: spec.analysis.interval: 5s is below Flagger's 10s minimum; agents raise it to their --min-analysis-interval (10s unless lowered)")]),
    ("kind-in-the-wrong-group", 1, &[("error", "FleetRollout", "podinfo-6-0-1: kind: unknown kind \"FleetRollout\" in flagger.app; FleetRollout is aviary.dev/v1alpha1; flagger.app/v1beta1 has Canary, MetricTemplate, AlertProvider")]),
    ("kind-missing", 1, &[("error", "object", "test/podinfo: kind: required field is missing")]),
    ("kind-misspelt", 1, &[("error", "Canry", "test/podinfo: kind: unknown kind \"Canry\" in flagger.app (did you mean Canary?); flagger.app/v1beta1 has Canary, MetricTemplate, AlertProvider")]),
    ("knative-autoscaler-ref", 1, &[("error", "Canary", "test/podinfo: spec.autoscalerRef: can't use autoscaler with Knative Service; remove autoscalerRef (Knative scales its revisions)")]),
    ("knative-provider-needs-knative-target", 1, &[("error", "Canary", "test/podinfo: spec.targetRef: can't use apps/v1/Deployment as target if provider is set to knative; target a serving.knative.dev/v1 Service")]),
    ("knative-target-api-version", 1, &[("error", "Canary", "test/podinfo: spec.targetRef.apiVersion: Knative Services are supported as serving.knative.dev/v1 only, got \"serving.knative.dev/v1beta1\"")]),
    ("knative-target-default-provider", 1, &[("error", "Canary", "test/podinfo: spec.provider: can't use the default (istio) provider with Knative Service as target; set provider: knative")]),
    ("knative-target-needs-knative-provider", 1, &[("error", "Canary", "test/podinfo: spec.provider: can't use istio provider with Knative Service as target; set provider: knative")]),
    ("local-provider-needs-local-service", 1, &[("error", "Canary", "test/podinfo: spec.targetRef: provider local needs a target of kind LocalService (aviary.dev/v1alpha1), got apps/v1/Deployment")]),
    ("local-service-command-empty", 1, &[("error", "LocalService", "test/podinfo: spec.command: must name a program")]),
    ("local-service-command-missing", 1, &[("error", "LocalService", "test/podinfo: spec.command: required field is missing: the command line, e.g. [aviary, sample-app, --port, \"{{port}}\"]")]),
    ("local-service-no-port-placeholder", 0, &[("warning", "LocalService", "test/podinfo: spec.command: no {{port}} in the command or env: every process must listen on its own port")]),
    ("local-service-port-missing", 1, &[("error", "LocalService", "test/podinfo: spec.port: required field is missing: the port the router listens on")]),
    ("local-service-port-type", 1, &[("error", "LocalService", "test/podinfo: spec.port: invalid value: integer `70000`, expected u16")]),
    ("local-service-port-zero", 1, &[("error", "LocalService", "test/podinfo: spec.port: must be between 1 and 65535, got 0")]),
    ("local-service-readiness-path", 1, &[("error", "LocalService", "test/podinfo: spec.readinessPath: must start with '/', got \"readyz\"")]),
    ("local-service-replicas-zero", 1, &[("error", "LocalService", "test/podinfo: spec.replicas: must be at least 1, got 0")]),
    ("local-service-version-missing", 1, &[("error", "LocalService", "test/podinfo: spec.version: required field is missing: the version to run, e.g. 6.0.0")]),
    ("local-target-api-version", 1, &[("error", "Canary", "test/podinfo: spec.targetRef.apiVersion: a LocalService target has apiVersion aviary.dev/v1alpha1, got \"aviary.dev/v1\"")]),
    ("local-target-needs-local-provider", 1, &[("error", "Canary", "test/podinfo: spec.provider: a LocalService target needs provider: local, got \"istio\"")]),
    ("max-weight-range", 1, &[("error", "Canary", "test/podinfo: spec.analysis.maxWeight: must be between 0 and 100, got 120")]),
    ("metadata-name-missing", 1, &[("error", "Canary", "test/<no name>: metadata.name: required field is missing: the canary's name")]),
    ("metric-name-missing", 1, &[("error", "Canary", "test/podinfo: spec.analysis.metrics[0].name: required field is missing: the metric's name")]),
    ("metric-template-address-invalid", 1, &[("error", "MetricTemplate", "flagger-system/error-rate: spec.provider.address: \"prometheus:9090\" has no http:// or https:// scheme; expected the provider's API address such as http://host:port/")]),
    ("metric-template-address-missing", 1, &[("error", "MetricTemplate", "flagger-system/error-rate: spec.provider.address: required for the prometheus provider: its API address")]),
    ("metric-template-cloudwatch-region", 1, &[("error", "MetricTemplate", "flagger-system/error-rate: spec.provider.region: required for the cloudwatch provider, e.g. us-east-1")]),
    ("metric-template-provider-missing", 1, &[("error", "MetricTemplate", "flagger-system/error-rate: spec.provider: required field is missing: {type, address, …} of the metrics provider")]),
    ("metric-template-provider-type-enum", 1, &[("error", "MetricTemplate", "flagger-system/error-rate: spec.provider.type: \"victoriametrics\" is not allowed; expected one of \"prometheus\", \"influxdb\", \"datadog\", \"externalmetrics\", \"stackdriver\", \"cloudwatch\", \"newrelic\", \"graphite\", \"dynatrace\", \"keptn\", \"splunk\"")]),
    ("metric-template-provider-type-missing", 1, &[("error", "MetricTemplate", "flagger-system/error-rate: spec.provider.type: required field is missing: prometheus, datadog, …")]),
    ("metric-template-query-missing", 1, &[("error", "MetricTemplate", "flagger-system/error-rate: spec.query: required field is missing: the query template")]),
    ("metric-template-ref-name-missing", 1, &[("error", "Canary", "test/podinfo: spec.analysis.metrics[0].templateRef.name: required field is missing: the MetricTemplate's name")]),
    ("metric-template-secret-ref-name-missing", 1, &[("error", "MetricTemplate", "flagger-system/error-rate: spec.provider.secretRef.name: required field is missing: the Secret's name")]),
    ("metric-template-unbalanced-braces", 1, &[("error", "MetricTemplate", "flagger-system/error-rate: spec.query: template parsing failed: template: tmpl:1: unexpected \"}\" in operand")]),
    ("metric-threshold-range-inverted", 1, &[("error", "Canary", "test/podinfo: spec.analysis.metrics[0].thresholdRange: min (99) is greater than max (90)")]),
    ("metric-without-template", 0, &[("warning", "Canary", "test/podinfo: spec.analysis.metrics[0]: \"error-rate\" is not a built-in metric (request-success-rate, request-duration) and has no templateRef or query; it fails every analysis tick (\"no usable metrics template and query were configured\"), so set templateRef to a MetricTemplate")]),
    ("mirror-backend-port-missing", 1, &[("error", "Canary", "test/podinfo: spec.service.mirror[0].backendRef.port: Must have port for Service reference")]),
    ("mirror-backend-ref-missing", 1, &[("error", "Canary", "test/podinfo: spec.service.mirror[0].backendRef: required field is missing: the mirror's backend")]),
    ("mirror-weight-range", 1, &[("error", "Canary", "test/podinfo: spec.analysis.mirrorWeight: must be between 0 and 100, got 150")]),
    ("primary-ready-threshold-range", 1, &[("error", "Canary", "test/podinfo: spec.analysis.primaryReadyThreshold: must be between 0 and 100, got 120")]),
    ("progress-deadline-negative", 1, &[("error", "Canary", "test/podinfo: spec.progressDeadlineSeconds: must not be negative, got -60")]),
    ("provider-enum", 1, &[("error", "Canary", "test/podinfo: spec.provider: \"gatewayapi\" is not a provider (did you mean gatewayapi:v1?); expected one of apisix, appmesh, appmesh:v1beta2, contour, gatewayapi:v1, gatewayapi:v1beta1, gloo, istio, knative, kubernetes, kuma, linkerd, nginx, osm, skipper, smi:v1alpha1, smi:v1alpha2, smi:v1alpha3, traefik, or local")]),
    ("service-missing", 1, &[("error", "Canary", "test/podinfo: spec.service: required for a Deployment target: set service.port, the port of the generated Services")]),
    ("service-port-missing", 1, &[("error", "Canary", "test/podinfo: spec.service.port: required field is missing: the container port the Services expose")]),
    ("service-port-range", 1, &[("error", "Canary", "test/podinfo: spec.service.port: must be between 1 and 65535, got 70000")]),
    ("service-traffic-distribution-enum", 1, &[("error", "Canary", "test/podinfo: spec.service.trafficDistribution: \"Nearest\" is not allowed; expected one of \"PreferClose\", \"PreferSameZone\", \"PreferSameNode\"")]),
    ("session-affinity-equal-cookie-names", 1, &[("error", "Canary", "test/podinfo: spec.analysis.sessionAffinity.primaryCookieName: must differ from cookieName (both are \"flagger-cookie\")")]),
    ("session-affinity-invalid-cookie-name", 1, &[("error", "Canary", "test/podinfo: spec.analysis.sessionAffinity.cookieName: \"canary cookie\" is not a valid cookie name (letters, digits and !#$%&'*+-.^_`|~)")]),
    ("session-affinity-invalid-primary-cookie-name", 1, &[("error", "Canary", "test/podinfo: spec.analysis.sessionAffinity.primaryCookieName: \"primary;cookie\" is not a valid cookie name")]),
    ("session-affinity-max-age-negative", 1, &[("error", "Canary", "test/podinfo: spec.analysis.sessionAffinity.maxAge: must not be negative, got -1")]),
    ("session-affinity-missing-cookie-name", 1, &[("error", "Canary", "test/podinfo: spec.analysis.sessionAffinity.cookieName: required field is missing: the session affinity cookie's name")]),
    ("session-affinity-same-site-enum", 1, &[("error", "Canary", "test/podinfo: spec.analysis.sessionAffinity.sameSite: \"Loose\" is not allowed; expected one of \"Strict\", \"Lax\", \"None\"")]),
    ("step-weight-promotion-range", 1, &[("error", "Canary", "test/podinfo: spec.analysis.stepWeightPromotion: must be between 0 and 100, got 101")]),
    ("step-weight-range", 1, &[("error", "Canary", "test/podinfo: spec.analysis.stepWeight: must be between 1 and 100, got 150")]),
    ("step-weight-zero", 1, &[("error", "Canary", "test/podinfo: spec.analysis.stepWeight: must be between 1 and 100, got 0")]),
    ("step-weights-empty", 1, &[("error", "Canary", "test/podinfo: spec.analysis.stepWeights: must list at least one weight")]),
    ("step-weights-not-increasing", 1, &[("error", "Canary", "test/podinfo: spec.analysis.stepWeights[2]: must be greater than the previous step (30), got 20")]),
    ("step-weights-range", 1, &[("error", "Canary", "test/podinfo: spec.analysis.stepWeights[2]: must be between 1 and 100, got 120")]),
    ("string-match-invalid-regex", 1, &[("error", "Canary", "test/podinfo: spec.analysis.match[0].headers.user-agent.regex: \".*(Chrome.*\" is not a valid RE2-style regular expression: unclosed group")]),
    ("string-match-two-kinds", 1, &[("error", "Canary", "test/podinfo: spec.service.match[0].uri: set exactly one of exact, prefix, suffix or regex; found exact and prefix")]),
    ("target-ref-kind-enum", 1, &[("error", "Canary", "test/podinfo: spec.targetRef.kind: \"StatefulSet\" is not allowed; expected one of \"DaemonSet\", \"Deployment\", \"Service\" (or LocalService with provider: local)")]),
    ("target-ref-missing-fields", 1, &[
        ("error", "Canary", "test/podinfo: spec.targetRef.apiVersion: required field is missing: e.g. apps/v1"),
        ("error", "Canary", "test/podinfo: spec.targetRef.kind: required field is missing: Deployment, DaemonSet or Service"),
    ]),
    ("target-ref-missing-name", 1, &[("error", "Canary", "test/podinfo: spec.targetRef.name: required field is missing: the name of the target")]),
    ("target-ref-missing", 1, &[("error", "Canary", "test/podinfo: spec.targetRef: required field is missing: the workload under analysis {apiVersion, kind, name}")]),
    ("type-error-service-port", 1, &[("error", "Canary", "test/podinfo: spec.service.port: invalid type: string \"http\", expected i32")]),
    ("type-error-step-weight", 1, &[("error", "Canary", "test/podinfo: spec.analysis.stepWeight: invalid type: string \"ten\", expected i32")]),
    ("unknown-field", 0, &[
        ("warning", "Canary", "test/podinfo: spec.analysis.stepWieght: unknown field (did you mean stepWeight?); Flagger's API server would drop it"),
        ("warning", "Canary", "test/podinfo: spec.bogus: unknown field; Flagger's API server would drop it"),
    ]),
    ("webhook-name-missing", 1, &[("error", "Canary", "test/podinfo: spec.analysis.webhooks[0].name: required field is missing: the webhook's name")]),
    ("webhook-retries-negative", 1, &[("error", "Canary", "test/podinfo: spec.analysis.webhooks[0].retries: must not be negative, got -1")]),
    ("webhook-type-enum", 1, &[("error", "Canary", "test/podinfo: spec.analysis.webhooks[0].type: \"pre-rolout\" is not allowed; expected one of \"\", \"confirm-rollout\", \"pre-rollout\", \"rollout\", \"confirm-promotion\", \"post-rollout\", \"event\", \"rollback\", \"confirm-traffic-increase\"")]),
    ("webhook-url-invalid", 1, &[("error", "Canary", "test/podinfo: spec.analysis.webhooks[0].url: \"flagger-loadtester.test/\" is not a URL (relative URL without a base); expected the webhook endpoint such as http://host:port/")]),
    ("webhook-url-missing", 1, &[("error", "Canary", "test/podinfo: spec.analysis.webhooks[0].url: required field is missing: the webhook's URL")]),
];

/// The warnings `aviary validate -f examples/` prints, each checked against Flagger's behaviour
/// (see the comment at the top of each example): deprecated inline queries, fields Flagger's
/// API server drops, metrics that fail every tick in Flagger and thresholds Flagger reads differently
/// than they look. `(file, kind, "ns/name: path: message")`.
#[rustfmt::skip]
const EXAMPLE_WARNINGS: &[(&str, &str, &str)] = &[
    ("examples/flagger-guide/alert-provider-slack-message-template.yaml", "AlertProvider", "slack-oncall: spec.messageTemplate: unknown field; Flagger's API server would drop it"),
    ("examples/flagger-guide/canary-custom-metric-query.yaml", "Canary", "test/myapp: spec.analysis.metrics[0].query: inline queries are deprecated; use a MetricTemplate"),
    ("examples/flagger-guide/cost-optimized-spot-instances.yaml", "Canary", "myapp: spec.analysis.canaryAnalysis: unknown field; Flagger's API server would drop it"),
    ("examples/flagger-guide/example-blue-green-db-migration.yaml", "Canary", "production/user-service: spec.analysis.metrics[1].query: inline queries are deprecated; use a MetricTemplate"),
    ("examples/flagger-guide/example-mobile-ab-testing.yaml", "Canary", "mobile-backend/recommendation-api: spec.analysis.metrics[1].query: inline queries are deprecated; use a MetricTemplate"),
    ("examples/flagger-guide/example-mobile-ab-testing.yaml", "Canary", "mobile-backend/recommendation-api: spec.analysis.metrics[2].query: inline queries are deprecated; use a MetricTemplate"),
    ("examples/flagger-guide/example-payment-api-canary.yaml", "Canary", "production/payment-api: spec.analysis.metrics[2].query: inline queries are deprecated; use a MetricTemplate"),
    ("examples/flagger-guide/example-traffic-mirroring-api-gateway.yaml", "Canary", "production/api-gateway: spec.analysis.metrics[0].query: inline queries are deprecated; use a MetricTemplate"),
    ("examples/flagger-guide/example-traffic-mirroring-api-gateway.yaml", "Canary", "production/api-gateway: spec.analysis.metrics[1].query: inline queries are deprecated; use a MetricTemplate"),
    ("examples/flagger-guide/example-traffic-mirroring-api-gateway.yaml", "Canary", "production/api-gateway: spec.analysis.metrics[2].query: inline queries are deprecated; use a MetricTemplate"),
    ("examples/flagger-guide/metrics-best-practice-set.yaml", "Canary", "production/myapp: spec.analysis.metrics[1]: \"request-duration-p99\" is not a built-in metric (request-success-rate, request-duration) and has no templateRef or query; it fails every analysis tick (\"no usable metrics template and query were configured\"), so set templateRef to a MetricTemplate"),
    ("examples/flagger-guide/metrics-best-practice-set.yaml", "Canary", "production/myapp: spec.analysis.metrics[2]: \"cpu-usage\" is not a built-in metric (request-success-rate, request-duration) and has no templateRef or query; it fails every analysis tick (\"no usable metrics template and query were configured\"), so set templateRef to a MetricTemplate"),
    ("examples/flagger-guide/metrics-best-practice-set.yaml", "Canary", "production/myapp: spec.analysis.metrics[3]: \"conversion-rate\" is not a built-in metric (request-success-rate, request-duration) and has no templateRef or query; it fails every analysis tick (\"no usable metrics template and query were configured\"), so set templateRef to a MetricTemplate"),
    ("examples/flagger-guide/progressive-traffic-shadowing.yaml", "Canary", "production/myapp: spec.analysis.canaryAnalysis: unknown field; Flagger's API server would drop it"),
    ("examples/flagger-guide/progressive-traffic-shadowing.yaml", "Canary", "production/myapp: spec.analysis.metrics[0]: \"canary-errors\" is not a built-in metric (request-success-rate, request-duration) and has no templateRef or query; it fails every analysis tick (\"no usable metrics template and query were configured\"), so set templateRef to a MetricTemplate"),
    ("examples/flagger-guide/traffic-mirroring.yaml", "Canary", "mirror: spec.analysis.metrics[1]: \"error-rate\" is not a built-in metric (request-success-rate, request-duration) and has no templateRef or query; it fails every analysis tick (\"no usable metrics template and query were configured\"), so set templateRef to a MetricTemplate"),
    ("examples/flagger-guide/troubleshooting-cold-start.yaml", "Canary", "production/myapp: spec.analysis.delay: unknown field; Flagger's API server would drop it"),
    ("examples/flagger-guide/troubleshooting-cold-start.yaml", "Canary", "production/myapp: spec.analysis.metrics[0]: no thresholdRange: the success rate passes at any value (Flagger's minimum is 0); set thresholdRange.min, e.g. 99"),
    ("examples/flagger-guide/troubleshooting-metric-label-mismatch.yaml", "Canary", "production/myapp: spec.analysis.metrics[0]: no thresholdRange: Flagger fails the check on any positive value (it compares value > 0); set thresholdRange.max (or min)"),
];

fn invalid_path(name: &str) -> String {
    format!("tests/fixtures/invalid/{name}.yaml")
}

fn expected_lines(case: &Case) -> Vec<String> {
    let file = invalid_path(case.0);
    case.2
        .iter()
        .map(|(severity, kind, rest)| line(severity, kind, rest, &file))
        .collect()
}

/// `*.yaml`/`*.yml` files under `dir`, relative to the repository root, sorted.
fn yaml_files(dir: &str) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("read_dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                let rel = path.strip_prefix(root).expect("under the root");
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    let root = repo_root();
    let mut out = Vec::new();
    walk(&root, &root.join(dir), &mut out);
    out.sort();
    out
}

#[test]
fn every_invalid_fixture_has_a_table_entry() {
    let on_disk: BTreeSet<String> = yaml_files("tests/fixtures/invalid").into_iter().collect();
    let in_table: BTreeSet<String> = INVALID.iter().map(|c| invalid_path(c.0)).collect();
    assert_eq!(
        INVALID.len(),
        in_table.len(),
        "a fixture is listed twice in INVALID"
    );
    let untested: Vec<_> = on_disk.difference(&in_table).collect();
    let missing: Vec<_> = in_table.difference(&on_disk).collect();
    assert!(
        untested.is_empty() && missing.is_empty(),
        "fixtures without a table entry: {untested:?}; table entries without a fixture: {missing:?}"
    );
}

#[test]
fn each_invalid_fixture_fails_with_its_exact_lines() {
    let mut failures = Vec::new();
    for case @ (name, code, findings) in INVALID {
        assert!(!findings.is_empty(), "{name}: a case expects at least one line");
        let file = invalid_path(name);
        let run = aviary(&["validate", "-f", &file], None);
        let got: Vec<&str> = run.findings();
        let want = expected_lines(case);
        let errors = findings.iter().any(|f| f.0 == "error");
        let warnings = findings.iter().filter(|f| f.0 == "warning").count();
        let summary = summary_line(1, usize::from(errors), warnings, 0);
        if run.code != *code || got != want || run.summary() != summary {
            failures.push(format!(
                "{file}: exit {} (want {code})\n  got:\n    {}\n  want:\n    {}\n    {summary}",
                run.code,
                run.stdout.lines().collect::<Vec<_>>().join("\n    "),
                want.join("\n    "),
            ));
        }
        // The exit code follows the severities: 1 exactly when some line is an error.
        assert_eq!(*code, i32::from(errors), "{name}: table exit code vs severities");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn the_invalid_directory_is_walked_in_sorted_order() {
    let run = aviary(&["validate", "-f", "tests/fixtures/invalid"], None);
    assert_eq!(run.code, 1, "{}", run.stdout);
    let mut sorted: Vec<&Case> = INVALID.iter().collect();
    sorted.sort_by_key(|c| invalid_path(c.0));
    let want: Vec<String> = sorted.iter().flat_map(|c| expected_lines(c)).collect();
    let got = run.findings();
    if let Some(i) =
        (0..got.len().max(want.len())).find(|&i| got.get(i).copied() != want.get(i).map(String::as_str))
    {
        panic!(
            "line {} differs:\n  got:  {:?}\n  want: {:?}",
            i + 1,
            got.get(i),
            want.get(i)
        );
    }
    let with_errors = INVALID.iter().filter(|c| c.1 == 1).count();
    let warnings: usize = INVALID
        .iter()
        .map(|c| c.2.iter().filter(|f| f.0 == "warning").count())
        .sum();
    assert_eq!(
        run.summary(),
        summary_line(INVALID.len(), with_errors, warnings, 0)
    );
}

#[test]
fn the_examples_pass_with_only_the_reviewed_warnings() {
    let run = aviary(&["validate", "-f", "examples/"], None);
    assert_eq!(run.code, 0, "examples/ must validate:\n{}", run.stdout);
    let mut warnings = Vec::new();
    let mut files_seen = BTreeSet::new();
    for l in run.findings() {
        let (status, _) = l.split_once(' ').expect("status word");
        assert!(
            matches!(status, "ok" | "warning" | "skipped"),
            "an example resource is not ok: {l}"
        );
        let file = l
            .rsplit_once("  (")
            .and_then(|(_, f)| f.strip_suffix(')'))
            .unwrap_or_else(|| panic!("no file in {l}"));
        files_seen.insert(file.to_string());
        if status == "warning" {
            warnings.push(l.to_string());
        }
    }
    let want: Vec<String> = EXAMPLE_WARNINGS
        .iter()
        .map(|(file, kind, rest)| line("warning", kind, rest, file))
        .collect();
    assert_eq!(
        warnings, want,
        "the warnings on examples/ changed; review each one"
    );
    // `examples/` and `examples` name the same files; every example file is read.
    let all: BTreeSet<String> = yaml_files("examples").into_iter().collect();
    assert_eq!(files_seen, all);
    assert_eq!(
        run.summary(),
        "51 resources: 0 with errors, 19 warnings, 6 skipped"
    );
}

#[test]
fn the_fleet_rollout_examples_validate_without_warnings() {
    let run = aviary(&["validate", "-f", "examples/fleet"], None);
    assert_eq!(run.code, 0, "{}", run.stdout);
    let files = yaml_files("examples/fleet");
    assert!(files.len() >= 4, "{files:?}");
    let lines = run.findings();
    assert_eq!(lines.len(), files.len(), "{}", run.stdout);
    for (l, f) in lines.iter().zip(&files) {
        assert!(
            l.starts_with("ok       FleetRollout ") && l.ends_with(&format!("({f})")),
            "{l}"
        );
    }
}

#[test]
fn the_knative_tutorial_validates() {
    let run = aviary(&["validate", "-f", "examples/knative"], None);
    assert_eq!(run.code, 0);
    assert_eq!(
        run.stdout,
        "ok       Canary test/podinfo  (examples/knative/podinfo-canary.yaml)\n\
         skipped  Service.serving.knative.dev test/podinfo  (examples/knative/podinfo-ksvc.yaml)\n\
         1 resource: 0 with errors, 0 warnings, 1 skipped\n"
    );
}

#[test]
fn the_knative_fixtures_are_the_tutorial_manifests_verbatim() {
    // The two YAML blocks of the seed's Knative tutorial, unchanged (the seed itself lives outside
    // the repository, so the check is on content that identifies them).
    let root = repo_root();
    let ksvc = std::fs::read_to_string(root.join("examples/knative/podinfo-ksvc.yaml")).unwrap();
    let canary = std::fs::read_to_string(root.join("examples/knative/podinfo-canary.yaml")).unwrap();
    assert!(ksvc.starts_with("apiVersion: serving.knative.dev/v1\nkind: Service\n"));
    assert!(ksvc.contains("        - image: ghcr.io/stefanprodan/podinfo:6.0.0\n"));
    assert!(canary.starts_with("apiVersion: flagger.app/v1beta1\nkind: Canary\n"));
    assert!(canary.contains("  provider: knative\n"));
    assert!(canary.contains("      thresholdRange:\n         max: 500\n"));
}

#[test]
fn a_directory_walk_is_recursive_sorted_and_stable() {
    let want = "ok       AlertProvider walk/first  (tests/fixtures/walk/a-dir/first.yml)\n\
                skipped  ConfigMap walk/middle  (tests/fixtures/walk/b-dir/middle.yaml)\n\
                ok       AlertProvider walk/deep  (tests/fixtures/walk/b-dir/nested/deep.yaml)\n\
                ok       AlertProvider walk/z-last  (tests/fixtures/walk/z-last.yaml)\n\
                3 resources: 0 with errors, 0 warnings, 1 skipped\n";
    for _ in 0..3 {
        let run = aviary(&["validate", "-f", "tests/fixtures/walk"], None);
        assert_eq!(run.code, 0);
        // ignored.txt and ignored.json hold Canaries that would fail: they must not be read.
        assert_eq!(run.stdout, want);
    }
}

#[test]
fn several_paths_are_read_in_the_order_given() {
    let run = aviary(
        &[
            "validate",
            "-f",
            "tests/fixtures/walk/z-last.yaml",
            "-f",
            "examples/knative/podinfo-canary.yaml",
        ],
        None,
    );
    assert_eq!(run.code, 0);
    assert_eq!(
        run.findings(),
        [
            "ok       AlertProvider walk/z-last  (tests/fixtures/walk/z-last.yaml)",
            "ok       Canary test/podinfo  (examples/knative/podinfo-canary.yaml)",
        ]
    );
}

#[test]
fn stdin_is_read_with_a_dash() {
    let canary = std::fs::read(repo_root().join("examples/flagger-guide/canary-basic.yaml")).unwrap();
    let run = aviary(&["validate", "-f", "-"], Some(&canary));
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(
        run.stdout,
        "ok       Canary production/myapp  (stdin)\n1 resource: 0 with errors, 0 warnings, 0 skipped\n"
    );

    let broken = std::fs::read(repo_root().join("tests/fixtures/invalid/step-weight-range.yaml")).unwrap();
    let run = aviary(&["validate", "-f", "-"], Some(&broken));
    assert_eq!(run.code, 1);
    assert_eq!(
        run.findings(),
        [
            "error    Canary test/podinfo: spec.analysis.stepWeight: must be between 1 and 100, got 150  (stdin)"
        ]
    );
}

#[test]
fn multi_document_files_report_every_document_in_order() {
    let run = aviary(&["validate", "-f", "tests/fixtures/multi-document.yaml"], None);
    assert_eq!(run.code, 1);
    let f = "tests/fixtures/multi-document.yaml";
    assert_eq!(
        run.findings(),
        [
            line("skipped", "Deployment.apps", "test/podinfo", f),
            line("ok", "Canary", "test/podinfo", f),
            line(
                "error",
                "Canary",
                "test/broken: spec.analysis.stepWeight: must be between 1 and 100, got 150",
                f
            ),
            line("ok", "MetricTemplate", "test/error-rate", f),
        ]
    );
    // The empty document between two `---` is not a resource.
    assert_eq!(run.summary(), "3 resources: 1 with errors, 0 warnings, 1 skipped");
}

#[test]
fn other_kinds_are_listed_as_skipped() {
    let run = aviary(
        &["validate", "-f", "examples/flagger-guide/gitops-flux-app.yaml"],
        None,
    );
    assert_eq!(run.code, 0);
    let f = "examples/flagger-guide/gitops-flux-app.yaml";
    assert_eq!(
        run.findings(),
        [
            line("skipped", "Deployment.apps", "production/myapp", f),
            line("ok", "Canary", "production/myapp", f),
            line(
                "skipped",
                "Kustomization.kustomize.toolkit.fluxcd.io",
                "flux-system/myapp",
                f
            ),
        ]
    );
    assert_eq!(run.summary(), "1 resource: 0 with errors, 0 warnings, 2 skipped");
}

#[test]
fn a_missing_file_exits_2_and_says_so() {
    let run = aviary(&["validate", "-f", "tests/fixtures/does-not-exist.yaml"], None);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .starts_with("error: cannot read tests/fixtures/does-not-exist.yaml: "),
        "{}",
        run.stderr
    );
    assert!(run.findings().is_empty(), "{}", run.stdout);

    // A missing path next to good ones still fails the run.
    let run = aviary(
        &[
            "validate",
            "-f",
            "examples/knative",
            "-f",
            "tests/fixtures/does-not-exist.yaml",
        ],
        None,
    );
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("cannot read tests/fixtures/does-not-exist.yaml")
    );
}

#[test]
fn binary_input_exits_2_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("binary.yaml");
    let bytes: Vec<u8> = (0u8..=255).cycle().take(4096).collect();
    std::fs::write(&path, &bytes).unwrap();
    let path = path.to_str().unwrap();
    let run = aviary(&["validate", "-f", path], None);
    assert_eq!(run.code, 2);
    assert_eq!(
        run.stderr,
        format!("error: {path}: not a text file (not UTF-8)\n")
    );

    let run = aviary(&["validate", "-f", "-"], Some(&bytes));
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.starts_with("error: ") && run.stderr.contains("UTF-8"),
        "{}",
        run.stderr
    );

    // Valid UTF-8 but control characters: not YAML.
    let run = aviary(&["validate", "-f", "-"], Some(b"\x00\x01\x02 kind: Canary\n"));
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.starts_with("error: ") && run.stderr.contains("document 1: not valid YAML"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_yaml_syntax_error_exits_2_with_the_position() {
    let run = aviary(
        &["validate", "-f", "tests/fixtures/garbage/syntax-error.yaml"],
        None,
    );
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .starts_with("error: tests/fixtures/garbage/syntax-error.yaml: document 1: not valid YAML: ")
            && run.stderr.contains("line 5 column 12"),
        "{}",
        run.stderr
    );
    assert!(run.findings().is_empty());
}

#[test]
fn one_unreadable_file_makes_the_run_exit_2_but_the_others_are_still_checked() {
    let run = aviary(
        &[
            "validate",
            "-f",
            "tests/fixtures/garbage/syntax-error.yaml",
            "-f",
            "examples/knative/podinfo-canary.yaml",
        ],
        None,
    );
    assert_eq!(run.code, 2);
    assert_eq!(
        run.findings(),
        ["ok       Canary test/podinfo  (examples/knative/podinfo-canary.yaml)"]
    );
}

/// No input is an error (exit 2), not a silent pass: a CI step pointed at the wrong path must
/// fail.
#[test]
fn no_input_is_an_error() {
    for file in [
        "tests/fixtures/garbage/empty.yaml",
        "tests/fixtures/garbage/comments-only.yaml",
    ] {
        let run = aviary(&["validate", "-f", file], None);
        assert_eq!(run.code, 2, "{file}");
        assert!(
            run.stderr.contains(&format!("error: no resources in {file}")),
            "{}",
            run.stderr
        );
    }
    let run = aviary(&["validate", "-f", "-"], Some(b""));
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("error: no resources in -"), "{}", run.stderr);
}

#[test]
fn documents_that_are_not_objects_are_reported_as_errors() {
    for file in [
        "tests/fixtures/garbage/json-array.yaml",
        "tests/fixtures/garbage/scalar.yaml",
    ] {
        let run = aviary(&["validate", "-f", file], None);
        assert_eq!(run.code, 1, "{file}");
        assert_eq!(
            run.findings(),
            [line(
                "error",
                "object",
                "<no name>: expected a YAML mapping (an object)",
                file
            )]
        );
    }
}

#[test]
fn json_is_yaml() {
    let run = aviary(
        &["validate", "-f", "tests/fixtures/garbage/json-object.yaml"],
        None,
    );
    assert_eq!(run.code, 0);
    assert_eq!(
        run.findings(),
        ["ok       Canary test/podinfo  (tests/fixtures/garbage/json-object.yaml)"]
    );
}

#[test]
fn quiet_prints_only_findings() {
    let run = aviary(
        &["validate", "-q", "-f", "tests/fixtures/multi-document.yaml"],
        None,
    );
    assert_eq!(run.code, 1);
    assert_eq!(
        run.findings(),
        [line(
            "error",
            "Canary",
            "test/broken: spec.analysis.stepWeight: must be between 1 and 100, got 150",
            "tests/fixtures/multi-document.yaml"
        )]
    );
}

#[test]
fn a_closed_stdout_pipe_ends_quietly() {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_aviary"))
        .args(["validate", "-f", "tests/fixtures/invalid", "-f", "examples"])
        .current_dir(repo_root())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run aviary");
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // the reader is dropped here: the pipe is closed while aviary still has lines to print
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!first.is_empty());
    assert!(!stderr.contains("panicked"), "{stderr}");
}
