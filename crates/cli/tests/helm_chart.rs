//! The Helm chart `deploy/helm/aviary` with the real helm v4 (built from the Go module proxy by
//! tests/helm/build.sh, cached outside the repository):
//!
//! - `helm lint --strict` and `helm template` with several value sets; every aviary container's
//!   arguments are accepted by this binary (the TLS flags the chart keeps for issue 15 excepted,
//!   while the binary lacks them and only where the values switch them on); bad values fail
//!   with a message naming the value;
//! - the chart README's values table lists exactly the keys and defaults of values.yaml;
//! - with `ci/kustomize.yaml` it renders exactly the objects of deploy/'s kustomizations, and
//!   its CRDs and dashboards are the files of deploy/crds and deploy/grafana;
//! - installed into the real kube-apiserver it creates the agent's Deployment, ServiceAccount,
//!   ClusterRole and ClusterRoleBinding exactly as the kustomize manifests (both as the server
//!   stores them), the Deployment becomes available and the ServiceAccount may do what the agent
//!   needs; every other component passes a strict server-side dry run.
//!
//! Without helm (no Go) or kubectl these tests fail when `CI=true` and print a skip notice
//! otherwise.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use aviary_testkit::Cluster;
use aviary_testkit::kubectl::ensure_namespace;
use aviary_testkit::process::output_ok;
use aviary_testkit::tool::Tool;
use serde_json::Value;

const CHART: &str = "deploy/helm/aviary";
const NEEDED_BY: &str = "the Helm chart tests";
/// The release and namespace the kustomizations stand for.
const RELEASE: &str = "aviary";
const NAMESPACE: &str = "aviary-system";

/// Flags the chart passes only when its TLS values are on: they belong to the mTLS work of
/// issue 15 and may not exist in this binary yet.
const TLS_FLAGS: [&str; 9] = [
    "--tls-cert",
    "--tls-key",
    "--client-ca",
    "--ca",
    "--cert",
    "--key",
    "--etcd-ca",
    "--etcd-cert",
    "--etcd-key",
];

/// Labels helm adds to every object's metadata (never to selectors or pod templates).
const HELM_LABELS: [&str; 5] = [
    "helm.sh/chart",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/part-of",
];

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

fn chart() -> String {
    repo(CHART).display().to_string()
}

fn kustomize_values() -> String {
    repo(&format!("{CHART}/ci/kustomize.yaml")).display().to_string()
}

/// helm without a cluster.
fn helm() -> Option<Tool> {
    Some(Tool::new(aviary_testkit::helm::binary(NEEDED_BY)?, None))
}

/// The YAML documents of a multi-document text, as JSON (empty documents dropped).
fn documents(text: &str) -> Vec<Value> {
    aviary_testkit::crds::documents(text)
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

async fn template(helm: &Tool, args: &[&str]) -> Vec<Value> {
    let chart = chart();
    let mut all = vec!["template", RELEASE, chart.as_str(), "-n", NAMESPACE];
    all.extend_from_slice(args);
    let (out, _) = helm.run(&all, None).await;
    documents(&out)
}

/// Value sets the chart is linted and rendered with: (name, helm arguments).
fn value_sets() -> Vec<(&'static str, Vec<String>)> {
    let set = |s: &str| vec!["--set".to_string(), s.to_string()];
    vec![
        ("defaults", vec![]),
        ("kustomize", vec!["-f".into(), kustomize_values()]),
        (
            "coordinator with its own etcd",
            set("agent.enabled=false,coordinator.enabled=true,grafana.dashboards=true"),
        ),
        (
            "coordinator in memory",
            set(
                "agent.enabled=false,coordinator.enabled=true,coordinator.etcd.mode=memory,coordinator.replicas=1,coordinator.metricsPort=0,coordinator.dashboard.enabled=false",
            ),
        ),
        (
            "coordinator watching FleetRollout objects",
            set(
                "agent.enabled=false,coordinator.enabled=true,coordinator.management.enabled=true,coordinator.management.namespace=releases",
            ),
        ),
        (
            "agent of one namespace",
            set(
                "agent.watchNamespace=apps,agent.cluster=c1,agent.labels.tier=gold,agent.extraArgs={--min-analysis-interval=5s},serviceAccount.name=robot",
            ),
        ),
        (
            "coordinator with mutual TLS and no metrics port",
            set(
                "agent.enabled=false,coordinator.enabled=true,coordinator.tls.enabled=true,coordinator.metricsPort=0",
            ),
        ),
        (
            "everything with mutual TLS",
            set(
                "coordinator.enabled=true,loadtester.enabled=true,grafana.dashboards=true,certManager.enabled=true,coordinator.tls.enabled=true,agent.tls.enabled=true,agent.cluster=c1,agent.coordinator=https://aviary-coordinator.aviary-system:7400,coordinator.etcd.mode=external,coordinator.etcd.endpoints={https://etcd-0.etcd:2379},coordinator.etcd.tls.enabled=true,coordinator.etcd.tls.secretName=etcd-client,coordinator.tls.tokenSecretName=aviary-tokens,coordinator.dashboard.readOnly=true,coordinator.dashboard.service.type=LoadBalancer",
            ),
        ),
    ]
}

fn args_of(container: &Value) -> Vec<String> {
    container["args"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

fn aviary_help(subcommand: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_aviary"))
        .args([subcommand, "--help"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Checks one rendered aviary container's arguments against this binary; returns the TLS flags
/// it passes that the binary does not have yet.
fn check_args(set: &str, args: &[String]) -> Vec<String> {
    let help = aviary_help(&args[0]);
    let flag = |a: &str| a.split('=').next().unwrap_or(a).to_string();
    let (missing, kept): (Vec<&String>, Vec<&String>) = args.iter().partition(|a| {
        let f = flag(a);
        TLS_FLAGS.contains(&f.as_str()) && !help.contains(&format!("{f} "))
    });
    let mut aviary = Command::new(env!("CARGO_BIN_EXE_aviary"));
    let what = format!("{set}: aviary {args:?} is refused");
    output_ok(aviary.args(kept).arg("--help"), &what);
    missing.into_iter().map(|a| flag(a)).collect()
}

/// The coordinator's probes work whatever the gRPC port speaks: Kubernetes' `grpc` probes
/// cannot speak TLS, so with mutual TLS they are `httpGet /healthz` on the plain metrics port
/// (which `--metrics-listen` must serve) or, without that port, a TCP check; plaintext needs
/// `--insecure`. Returns what is wrong.
fn check_coordinator(container: &Value) -> Vec<String> {
    let args = args_of(container);
    let tls = args.iter().any(|a| a.starts_with("--tls-cert"));
    let mut wrong = Vec::new();
    if !tls && !args.iter().any(|a| a == "--insecure") {
        wrong.push("plaintext without --insecure: the coordinator refuses to start".to_string());
    }
    let metrics_port = args
        .iter()
        .find_map(|a| a.strip_prefix("--metrics-listen="))
        .map(|l| l.rsplit(':').next().unwrap().parse::<u64>().unwrap());
    let port_named = |name: &str| {
        container["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == name)
            .and_then(|p| p["containerPort"].as_u64())
    };
    for probe in ["readinessProbe", "livenessProbe"] {
        let p = &container[probe];
        if p.is_null() {
            wrong.push(format!("no {probe}"));
        } else if !p["grpc"].is_null() && tls {
            wrong.push(format!("{probe}: a grpc probe cannot speak TLS"));
        } else if !p["httpGet"].is_null() {
            let port = p["httpGet"]["port"].as_str().and_then(&port_named);
            if p["httpGet"]["path"] != "/healthz" || port.is_none() || port != metrics_port {
                wrong.push(format!(
                    "{probe}: {} is not /healthz on the --metrics-listen port {metrics_port:?}",
                    p["httpGet"]
                ));
            }
        }
    }
    wrong
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_lints_renders_and_passes_only_flags_that_exist() {
    let Some(helm) = helm() else { return };
    let chart = chart();
    for (name, args) in value_sets() {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut lint = vec!["lint", "--strict", chart.as_str()];
        lint.extend_from_slice(&args);
        let (out, _) = helm.run(&lint, None).await;
        assert!(out.contains("0 chart(s) failed"), "{name}: {out}");

        let docs = template(&helm, &args).await;
        assert!(!docs.is_empty(), "{name} renders nothing");
        let mut gated = Vec::new();
        for doc in &docs {
            for c in doc["spec"]["template"]["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| c["image"].as_str().unwrap_or("").contains("aviary"))
            {
                gated.extend(check_args(name, &args_of(c)));
                if args_of(c).first().is_some_and(|a| a == "coordinator") {
                    let wrong = check_coordinator(c);
                    assert!(wrong.is_empty(), "{name}: the coordinator container: {wrong:?}");
                }
            }
        }
        // Issue 15 added the TLS flags: every value set, mutual TLS included, must parse.
        assert!(gated.is_empty(), "{name}: flags this aviary lacks: {gated:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_values_fail_naming_the_value() {
    let Some(helm) = helm() else { return };
    let chart = chart();
    for (set, says) in [
        (
            "coordinator.enabled=true,coordinator.etcd.mode=sqlite",
            "coordinator.etcd.mode",
        ),
        (
            "coordinator.enabled=true,coordinator.etcd.mode=external",
            "coordinator.etcd.endpoints",
        ),
        (
            "coordinator.enabled=true,coordinator.etcd.mode=memory",
            "coordinator.replicas",
        ),
        ("agent.tls.enabled=true", "agent.coordinator"),
        (
            "coordinator.enabled=true,coordinator.etcd.tls.enabled=true,coordinator.etcd.tls.secretName=e",
            "coordinator.etcd.tls.enabled",
        ),
        (
            "coordinator.enabled=true,coordinator.etcd.mode=external,coordinator.etcd.endpoints={http://e:2379},coordinator.etcd.tls.enabled=true,coordinator.etcd.tls.secretName=e",
            "coordinator.etcd.endpoints",
        ),
        (
            "certManager.enabled=true,agent.tls.enabled=true,agent.coordinator=https://c:7400",
            "agent.cluster",
        ),
        ("certManager.enabled=true", "certManager.enabled"),
        (
            "coordinator.enabled=true,coordinator.tls.tokenSecretName=tokens",
            "coordinator.tls.enabled",
        ),
        ("agent.leaderElection.enabled=false", "agent.replicas"),
        (
            "agent.watchNamespace=apps,agent.leaderElection.namespace=kube-system",
            "agent.leaderElection.namespace",
        ),
    ] {
        let out = helm
            .output(&["template", RELEASE, chart.as_str(), "--set", set], None)
            .await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{set} renders");
        assert!(err.contains(says), "{set}: the error should name {says}: {err}");
    }
}

/// values.yaml flattened down to the keys the README table lists (a map the table lists as a
/// whole is one entry).
fn flatten(v: &Value, path: &str, listed: &BTreeMap<String, Value>, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(m) if !m.is_empty() && !listed.contains_key(path) => {
            for (k, x) in m {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                flatten(x, &p, listed, out);
            }
        }
        _ => {
            out.insert(path.to_string(), v.clone());
        }
    }
}

#[test]
fn the_readme_lists_every_value_with_its_default() {
    let readme = std::fs::read_to_string(repo(&format!("{CHART}/README.md"))).unwrap();
    let mut listed = BTreeMap::new();
    for line in readme.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split(" | ").collect();
        let key = cells[0].trim_start_matches("| `").trim_end_matches('`');
        let default = cells[1].trim_matches('`');
        let default: Value = serde_json::from_str(default)
            .unwrap_or_else(|e| panic!("README row {key}: default {default} is not JSON: {e}"));
        assert!(
            cells.get(2).is_some_and(|d| d.trim_end_matches(" |").len() > 10),
            "README row {key} has no description"
        );
        assert!(
            listed.insert(key.to_string(), default).is_none(),
            "{key} is listed twice"
        );
    }
    let text = std::fs::read_to_string(repo(&format!("{CHART}/values.yaml"))).unwrap();
    let values: Value = serde_yaml_ng::from_str(&text).unwrap();
    let mut flat = BTreeMap::new();
    flatten(&values, "", &listed, &mut flat);
    let missing: Vec<&String> = flat.keys().filter(|k| !listed.contains_key(*k)).collect();
    let extra: Vec<&String> = listed.keys().filter(|k| !flat.contains_key(*k)).collect();
    assert!(
        missing.is_empty(),
        "values.yaml keys missing from the README table: {missing:?}"
    );
    assert!(extra.is_empty(), "README rows that values.yaml lacks: {extra:?}");
    for (k, v) in &flat {
        assert_eq!(&listed[k], v, "{k}: README default vs values.yaml");
    }
}

#[test]
fn the_charts_crds_and_dashboards_are_deploys() {
    let same = |a: &str, b: &str| {
        let (x, y) = (
            std::fs::read_to_string(repo(a)).unwrap(),
            std::fs::read_to_string(repo(b)).unwrap_or_else(|e| panic!("{b}: {e}")),
        );
        assert!(x == y, "{b} differs from {a}: cp {a} {b}");
    };
    same(
        "deploy/crds/flagger-crds.yaml",
        &format!("{CHART}/crds/flagger-crds.yaml"),
    );
    let mut dashboards = 0;
    for e in std::fs::read_dir(repo("deploy/grafana")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        same(
            &format!("deploy/grafana/{name}"),
            &format!("{CHART}/dashboards/{name}"),
        );
        dashboards += 1;
    }
    let in_chart = std::fs::read_dir(repo(&format!("{CHART}/dashboards")))
        .unwrap()
        .count();
    assert_eq!(
        (dashboards, in_chart),
        (2, 2),
        "canary.json and fleet.json in both"
    );
}

/// An object as compared: helm's own labels and annotations, the server's bookkeeping, the
/// status and a Service's allocated cluster IPs left out.
fn normalized(mut v: Value) -> Value {
    let meta = v["metadata"].as_object_mut().expect("metadata");
    for k in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "generation",
        "managedFields",
    ] {
        meta.remove(k);
    }
    for (field, drop) in [
        ("labels", &HELM_LABELS[..]),
        (
            "annotations",
            &[
                "meta.helm.sh/release-name",
                "meta.helm.sh/release-namespace",
                "deployment.kubernetes.io/revision",
            ][..],
        ),
    ] {
        if let Some(m) = meta.get_mut(field).and_then(Value::as_object_mut) {
            for k in drop {
                m.remove(*k);
            }
            if m.is_empty() {
                meta.remove(field);
            }
        }
    }
    v.as_object_mut().unwrap().remove("status");
    // Allocated by the server (a dry run allocates a placeholder).
    if v["kind"] == "Service"
        && let Some(spec) = v["spec"].as_object_mut()
    {
        spec.remove("clusterIP");
        spec.remove("clusterIPs");
    }
    v
}

fn key(v: &Value) -> String {
    format!(
        "{} {} {}/{}",
        v["apiVersion"].as_str().unwrap_or(""),
        v["kind"].as_str().unwrap_or(""),
        v["metadata"]["namespace"].as_str().unwrap_or(""),
        v["metadata"]["name"].as_str().unwrap_or("")
    )
}

fn by_key(objects: impl IntoIterator<Item = Value>) -> BTreeMap<String, Value> {
    objects.into_iter().map(|o| (key(&o), normalized(o))).collect()
}

fn assert_same_objects(what: &str, kustomize: &BTreeMap<String, Value>, chart: &BTreeMap<String, Value>) {
    let (k, c): (Vec<&String>, Vec<&String>) = (kustomize.keys().collect(), chart.keys().collect());
    assert_eq!(k, c, "{what}: the objects of the kustomizations vs the chart's");
    for (name, want) in kustomize {
        let got = &chart[name];
        assert!(
            want == got,
            "{what}: {name} differs\nkustomize: {}\nchart:     {}",
            serde_json::to_string(want).unwrap(),
            serde_json::to_string(got).unwrap()
        );
    }
}

/// `kubectl kustomize` of deploy/'s agent (with its RBAC), coordinator and load tester, without
/// the Namespaces (helm does not own its release namespace).
async fn kustomize(kubectl: &Tool, dirs: &[&str]) -> Vec<Value> {
    let mut objects = Vec::new();
    for dir in dirs {
        let (out, _) = kubectl
            .run(&["kustomize", repo(dir).to_str().unwrap()], None)
            .await;
        objects.extend(documents(&out).into_iter().filter(|d| d["kind"] != "Namespace"));
    }
    objects
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_renders_exactly_what_the_kustomizations_do() {
    let Some(helm) = helm() else { return };
    let Some(kubectl) = aviary_testkit::kubectl::binary(NEEDED_BY) else {
        return;
    };
    let kubectl = Tool::new(kubectl, None);
    let values = kustomize_values();
    let chart = by_key(template(&helm, &["-f", &values]).await);
    let kustomized = by_key(
        kustomize(
            &kubectl,
            &["deploy/agent", "deploy/coordinator", "deploy/loadtester"],
        )
        .await,
    );
    assert!(kustomized.len() >= 9, "{:?}", kustomized.keys());
    assert_same_objects("helm template -f ci/kustomize.yaml", &kustomized, &chart);
}

const AGENT_OBJECTS: [&str; 5] = [
    "deployment/aviary-agent",
    "serviceaccount/aviary-agent",
    "service/aviary-agent",
    "clusterrole/aviary-agent",
    "clusterrolebinding/aviary-agent",
];

/// The objects kubectl prints as JSON: one after another, or in a List.
fn objects_of(text: &str) -> Vec<Value> {
    serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .map(|v| v.unwrap_or_else(|e| panic!("kubectl printed no JSON ({e}): {text}")))
        .flat_map(|v| match v["kind"].as_str() {
            Some("List") => v["items"].as_array().cloned().unwrap_or_default(),
            _ => vec![v],
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_installs_the_agent_exactly_as_the_kustomize_manifests_do() {
    let Some(helm_bin) = aviary_testkit::helm::binary(NEEDED_BY) else {
        return;
    };
    let Some(kubectl_bin) = aviary_testkit::kubectl::binary(NEEDED_BY) else {
        return;
    };
    let cluster = Cluster::shared().await;
    let admin = cluster.admin_kubeconfig();
    let kubectl = Tool::new(kubectl_bin, Some(&admin));
    let helm = Tool::new(helm_bin, Some(&admin));
    ensure_namespace(&kubectl, NAMESPACE).await;

    // What the kustomize manifests create, as the server would store it (server-side dry run).
    let agent = kustomize(&kubectl, &["deploy/agent"]).await;
    let yaml: Vec<String> = agent.iter().map(|o| serde_json::to_string(o).unwrap()).collect();
    let (out, _) = kubectl
        .run(
            &["create", "--dry-run=server", "-o", "json", "-f", "-"],
            Some(yaml.join("\n").as_bytes()),
        )
        .await;
    let want = by_key(objects_of(&out));
    assert_eq!(want.len(), AGENT_OBJECTS.len(), "{:?}", want.keys());

    // The chart, installed for real (the kubelet stand-in makes its pods Ready).
    let (chart, values) = (chart(), kustomize_values());
    helm.run(
        &[
            "install",
            RELEASE,
            &chart,
            "-n",
            NAMESPACE,
            "-f",
            &values,
            "--set",
            "coordinator.enabled=false,loadtester.enabled=false",
            "--wait",
            "--timeout",
            "120s",
        ],
        None,
    )
    .await;
    let mut get = vec!["get", "-n", NAMESPACE, "-o", "json"];
    get.extend(AGENT_OBJECTS);
    let (out, _) = kubectl.run(&get, None).await;
    let live = objects_of(&out);
    let deployment = live.iter().find(|o| o["kind"] == "Deployment").unwrap();
    assert_eq!(deployment["status"]["availableReplicas"], 2, "{deployment}");
    assert_same_objects("helm install vs kustomize (as stored)", &want, &by_key(live));

    // The bindings work: the agent's ServiceAccount may patch Deployments, never delete them.
    let who = format!("--as=system:serviceaccount:{NAMESPACE}:aviary-agent");
    for (verb, resource, answer) in [
        ("patch", "deployments.apps", "yes"),
        ("watch", "canaries.flagger.app", "yes"),
        ("create", "leases.coordination.k8s.io", "yes"),
        ("delete", "deployments.apps", "no"),
    ] {
        let out = kubectl
            .output(&["auth", "can-i", verb, resource, "-A", &who], None)
            .await;
        let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(said, answer, "can the agent {verb} {resource}?");
    }
    let (crd, _) = kubectl
        .run(
            &[
                "get",
                "crd",
                "canaries.flagger.app",
                "-o",
                "jsonpath={.status.conditions[?(@.type=='Established')].status}",
            ],
            None,
        )
        .await;
    assert_eq!(crd, "True", "the chart's CRDs are installed");

    // Every other component is accepted by the server as rendered (strict field validation).
    ensure_namespace(&kubectl, "apps").await;
    for set in [
        "agent.enabled=false,coordinator.enabled=true,loadtester.enabled=true,grafana.dashboards=true",
        "agent.enabled=false,coordinator.enabled=true,coordinator.etcd.mode=memory,coordinator.replicas=1",
        "agent.watchNamespace=apps,serviceAccount.name=aviary-agent-apps",
    ] {
        let (rendered, _) = helm
            .run(&["template", "dry", &chart, "-n", NAMESPACE, "--set", set], None)
            .await;
        let (out, err) = kubectl
            .run(
                &["apply", "--dry-run=server", "--validate=strict", "-f", "-"],
                Some(rendered.as_bytes()),
            )
            .await;
        assert!(out.contains("(server dry run)"), "{set}: {out}");
        assert!(!err.to_lowercase().contains("warning"), "{set}: {err}");
    }

    // Uninstalled, the agent's objects go; the CRDs stay (helm.sh/resource-policy: keep).
    helm.run(&["uninstall", RELEASE, "-n", NAMESPACE, "--wait"], None)
        .await;
    let out = kubectl
        .output(
            &[
                "get",
                "clusterrole/aviary-agent",
                "serviceaccount/aviary-agent",
                "-n",
                NAMESPACE,
            ],
            None,
        )
        .await;
    assert!(
        !out.status.success(),
        "the agent's objects are gone after uninstall"
    );
    kubectl.run(&["get", "crd", "canaries.flagger.app"], None).await;
}
