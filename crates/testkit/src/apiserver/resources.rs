//! Resource types the fake serves: the built-in catalogue and the conversion of
//! `apiextensions.k8s.io/v1` CustomResourceDefinitions into the same model.

use std::cmp::Ordering;

use serde_json::Value;

use crate::error::{Error, Result};

/// One served resource type (all versions of one `group/plural`).
///
/// Objects are stored per `group/plural`, independent of the version: a request for another
/// served version only relabels `apiVersion` (no conversion; the built-in multi-version kinds have
/// identical schemas for the fields aviary uses).
#[derive(Clone, Debug)]
pub struct ResourceType {
    /// API group, empty for the core group.
    pub group: String,
    /// Served versions, most preferred first.
    pub versions: Vec<VersionDef>,
    /// Kind, e.g. `Deployment`.
    pub kind: String,
    /// List kind, e.g. `DeploymentList`.
    pub list_kind: String,
    /// Resource name used in URLs, e.g. `deployments`.
    pub plural: String,
    /// Singular resource name, e.g. `deployment`.
    pub singular: String,
    /// Namespaced or cluster scoped.
    pub namespaced: bool,
    /// Short names for kubectl, e.g. `deploy`.
    pub short_names: Vec<String>,
    /// Categories for kubectl, e.g. `all`.
    pub categories: Vec<String>,
    /// Custom-resource semantics: strategic merge patch is refused with 415, as a real API server
    /// does for CRD-backed kinds (Knative, Gateway API and Istio kinds are CRDs in real clusters).
    pub custom: bool,
    /// Whether `metadata.generation` is maintained.
    pub generation: bool,
    /// Whether PUT of a missing object creates it (Events, Leases).
    pub create_on_update: bool,
    /// Field selector labels accepted besides `metadata.name` and `metadata.namespace`.
    pub field_selectors: Vec<String>,
    /// Name of the CRD that defines this type, if any.
    pub crd: Option<String>,
}

/// Per-version details of a [`ResourceType`].
#[derive(Clone, Debug)]
pub struct VersionDef {
    /// Version, e.g. `v1beta1`.
    pub name: String,
    /// Whether the `status` subresource exists (and the main endpoint ignores `.status`).
    pub status_subresource: bool,
    /// Table columns for `kubectl get`, in order.
    pub columns: Vec<Column>,
    /// The `scale` subresource, if any.
    pub scale: Option<ScaleDef>,
}

/// Where the `scale` subresource (`autoscaling/v1` Scale) reads and writes replicas.
#[derive(Clone, Debug)]
pub struct ScaleDef {
    /// Dotted path of the desired replicas, e.g. `.spec.replicas`.
    pub spec_replicas: String,
    /// Dotted path of the observed replicas, e.g. `.status.replicas`.
    pub status_replicas: String,
    /// Dotted path of a label selector string, if any (Deployments use `spec.selector`).
    pub label_selector: Option<String>,
}

/// One column of the server-side table (`meta.k8s.io/v1` Table).
#[derive(Clone, Debug)]
pub struct Column {
    /// Column header, e.g. `Status`.
    pub name: String,
    /// OpenAPI type: `string`, `integer`, `number`, `boolean` or `date`.
    pub type_: String,
    /// OpenAPI format, `name` for the NAME column.
    pub format: String,
    /// Description shown by `kubectl explain`-like tools.
    pub description: String,
    /// 0 = always shown, >0 = only with `-o wide`.
    pub priority: i64,
    /// Where the cell comes from.
    pub source: CellSource,
}

/// How a table cell is computed.
#[derive(Clone, Debug)]
pub enum CellSource {
    /// `metadata.name`.
    Name,
    /// Human age of `metadata.creationTimestamp` (like kubectl's AGE).
    Age,
    /// A simple JSONPath (`.status.phase`, `.a[0].b`, `.m['k\.x']`, `.l[?(@.type=='Ready')].status`).
    JsonPath(String),
    /// Computed by the fake for built-in kinds.
    Computed(fn(&Value) -> Value),
}

impl ResourceType {
    /// `apiVersion` string for `version`.
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    /// The preferred (first) version.
    pub fn preferred_version(&self) -> &str {
        &self.versions[0].name
    }

    /// Definition of `version`, if served.
    pub fn version(&self, version: &str) -> Option<&VersionDef> {
        self.versions.iter().find(|v| v.name == version)
    }

    /// `plural.group` (or `plural` for core), as used in error messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `Kind.group` (or `Kind` for core), as used in Invalid messages.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    /// Whether `field` may be used in a field selector.
    pub fn allows_field(&self, field: &str) -> bool {
        field == "metadata.name"
            || (field == "metadata.namespace" && self.namespaced)
            || self.field_selectors.iter().any(|f| f == field)
    }

    /// The scale subresource of `version`, if any.
    pub fn scale(&self, version: &str) -> Option<&ScaleDef> {
        self.version(version).and_then(|v| v.scale.as_ref())
    }

    /// Whether `version` has the status subresource.
    pub fn has_status(&self, version: &str) -> bool {
        self.version(version).is_some_and(|v| v.status_subresource)
    }

    pub(crate) fn not_found(&self, name: &str) -> Error {
        Error::NotFound {
            message: format!("{} \"{name}\" not found", self.qualified()),
            name: name.to_string(),
            group: self.group.clone(),
            kind: self.plural.clone(),
        }
    }
}

/// Orders versions the way Kubernetes discovery does: GA before beta before alpha, higher
/// numbers first, anything else last and alphabetically.
pub(crate) fn compare_versions(a: &str, b: &str) -> Ordering {
    fn key(v: &str) -> (u8, i64, i64, String) {
        let Some(rest) = v.strip_prefix('v') else {
            return (3, 0, 0, v.to_string());
        };
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let Ok(major) = digits.parse::<i64>() else {
            return (3, 0, 0, v.to_string());
        };
        let tail = &rest[digits.len()..];
        let (class, tail) = if tail.is_empty() {
            return (0, -major, 0, String::new());
        } else if let Some(t) = tail.strip_prefix("beta") {
            (1, t)
        } else if let Some(t) = tail.strip_prefix("alpha") {
            (2, t)
        } else {
            return (3, 0, 0, v.to_string());
        };
        match tail.parse::<i64>() {
            Ok(minor) => (class, -major, -minor, String::new()),
            Err(_) => (3, 0, 0, v.to_string()),
        }
    }
    key(a).cmp(&key(b))
}

// === built-in catalogue ===

fn col(name: &str, type_: &str, priority: i64, source: CellSource) -> Column {
    Column {
        name: name.to_string(),
        type_: type_.to_string(),
        format: if matches!(source, CellSource::Name) {
            "name".into()
        } else {
            String::new()
        },
        description: String::new(),
        priority,
        source,
    }
}

fn name_col() -> Column {
    let mut c = col("Name", "string", 0, CellSource::Name);
    c.description = "Name must be unique within a namespace.".into();
    c
}

fn age_col() -> Column {
    let mut c = col("Age", "string", 0, CellSource::Age);
    c.description = "CreationTimestamp of the object.".into();
    c
}

fn path(name: &str, type_: &str, priority: i64, p: &str) -> Column {
    col(name, type_, priority, CellSource::JsonPath(p.to_string()))
}

fn computed(name: &str, type_: &str, priority: i64, f: fn(&Value) -> Value) -> Column {
    col(name, type_, priority, CellSource::Computed(f))
}

struct Builtin {
    group: &'static str,
    versions: &'static [&'static str],
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
    status: bool,
    scale: bool,
    custom: bool,
    generation: bool,
    create_on_update: bool,
    fields: &'static [&'static str],
    columns: fn() -> Vec<Column>,
}

impl Builtin {
    fn build(&self) -> ResourceType {
        let columns = (self.columns)();
        ResourceType {
            group: self.group.to_string(),
            versions: self
                .versions
                .iter()
                .map(|v| VersionDef {
                    name: v.to_string(),
                    status_subresource: self.status,
                    columns: columns.clone(),
                    scale: self.scale.then(|| ScaleDef {
                        spec_replicas: ".spec.replicas".into(),
                        status_replicas: ".status.replicas".into(),
                        label_selector: None,
                    }),
                })
                .collect(),
            kind: self.kind.to_string(),
            list_kind: format!("{}List", self.kind),
            plural: self.plural.to_string(),
            singular: self.kind.to_lowercase(),
            namespaced: self.namespaced,
            short_names: self.short_names.iter().map(|s| s.to_string()).collect(),
            categories: self.categories.iter().map(|s| s.to_string()).collect(),
            custom: self.custom,
            generation: self.generation,
            create_on_update: self.create_on_update,
            field_selectors: self.fields.iter().map(|s| s.to_string()).collect(),
            crd: None,
        }
    }
}

const DEFAULT: Builtin = Builtin {
    group: "",
    versions: &["v1"],
    kind: "",
    plural: "",
    namespaced: true,
    short_names: &[],
    categories: &[],
    status: false,
    scale: false,
    custom: false,
    generation: false,
    create_on_update: false,
    fields: &[],
    columns: || vec![name_col(), age_col()],
};

const READY: &str = ".status.conditions[?(@.type=='Ready')].status";
const READY_REASON: &str = ".status.conditions[?(@.type=='Ready')].reason";

/// The kinds served without any CRD, in discovery order (core first).
pub(crate) fn builtins() -> Vec<ResourceType> {
    let list = [
        Builtin {
            kind: "Namespace",
            plural: "namespaces",
            namespaced: false,
            short_names: &["ns"],
            status: true,
            fields: &["status.phase"],
            columns: || {
                vec![
                    name_col(),
                    path("Status", "string", 0, ".status.phase"),
                    age_col(),
                ]
            },
            ..DEFAULT
        },
        Builtin {
            kind: "Service",
            plural: "services",
            short_names: &["svc"],
            categories: &["all"],
            status: true,
            columns: || {
                vec![
                    name_col(),
                    path("Type", "string", 0, ".spec.type"),
                    path("Cluster-IP", "string", 0, ".spec.clusterIP"),
                    computed("External-IP", "string", 0, table_cells::external_ip),
                    computed("Port(s)", "string", 0, table_cells::service_ports),
                    age_col(),
                    computed("Selector", "string", 1, table_cells::service_selector),
                ]
            },
            ..DEFAULT
        },
        Builtin {
            kind: "ConfigMap",
            plural: "configmaps",
            short_names: &["cm"],
            columns: || {
                vec![
                    name_col(),
                    computed("Data", "integer", 0, table_cells::data_count),
                    age_col(),
                ]
            },
            ..DEFAULT
        },
        Builtin {
            kind: "Secret",
            plural: "secrets",
            fields: &["type"],
            columns: || {
                vec![
                    name_col(),
                    path("Type", "string", 0, ".type"),
                    computed("Data", "integer", 0, table_cells::data_count),
                    age_col(),
                ]
            },
            ..DEFAULT
        },
        Builtin {
            kind: "Pod",
            plural: "pods",
            short_names: &["po"],
            categories: &["all"],
            status: true,
            generation: true,
            fields: &[
                "spec.nodeName",
                "spec.restartPolicy",
                "spec.schedulerName",
                "spec.serviceAccountName",
                "spec.hostNetwork",
                "status.phase",
                "status.podIP",
                "status.nominatedNodeName",
            ],
            columns: || {
                vec![
                    name_col(),
                    path("Status", "string", 0, ".status.phase"),
                    age_col(),
                ]
            },
            ..DEFAULT
        },
        Builtin {
            kind: "Event",
            plural: "events",
            short_names: &["ev"],
            create_on_update: true,
            fields: &[
                "involvedObject.kind",
                "involvedObject.namespace",
                "involvedObject.name",
                "involvedObject.uid",
                "involvedObject.apiVersion",
                "involvedObject.resourceVersion",
                "involvedObject.fieldPath",
                "reason",
                "reportingComponent",
                "source",
                "type",
            ],
            columns: || {
                vec![
                    computed("Last Seen", "string", 0, table_cells::event_last_seen),
                    path("Type", "string", 0, ".type"),
                    path("Reason", "string", 0, ".reason"),
                    computed("Object", "string", 0, table_cells::event_object),
                    path("Message", "string", 0, ".message"),
                    computed("Name", "string", 1, |o| o["metadata"]["name"].clone()),
                ]
            },
            ..DEFAULT
        },
        Builtin {
            group: "events.k8s.io",
            kind: "Event",
            plural: "events",
            short_names: &["ev"],
            create_on_update: true,
            fields: &[
                "regarding.kind",
                "regarding.namespace",
                "regarding.name",
                "regarding.uid",
                "reason",
                "reportingController",
                "type",
            ],
            columns: || {
                vec![
                    computed("Last Seen", "string", 0, table_cells::event_last_seen),
                    path("Type", "string", 0, ".type"),
                    path("Reason", "string", 0, ".reason"),
                    computed("Object", "string", 0, table_cells::event_object),
                    path("Message", "string", 0, ".note"),
                ]
            },
            ..DEFAULT
        },
        Builtin {
            group: "apps",
            kind: "Deployment",
            plural: "deployments",
            short_names: &["deploy"],
            categories: &["all"],
            status: true,
            scale: true,
            generation: true,
            columns: || {
                vec![
                    name_col(),
                    computed("Ready", "string", 0, table_cells::deployment_ready),
                    computed("Up-to-date", "integer", 0, |o| {
                        int_or_zero(&o["status"]["updatedReplicas"])
                    }),
                    computed("Available", "integer", 0, |o| {
                        int_or_zero(&o["status"]["availableReplicas"])
                    }),
                    age_col(),
                    computed("Containers", "string", 1, |o| table_cells::containers(o, "name")),
                    computed("Images", "string", 1, |o| table_cells::containers(o, "image")),
                    computed("Selector", "string", 1, table_cells::deployment_selector),
                ]
            },
            ..DEFAULT
        },
        Builtin {
            group: "autoscaling",
            versions: &["v2"],
            kind: "HorizontalPodAutoscaler",
            plural: "horizontalpodautoscalers",
            short_names: &["hpa"],
            categories: &["all"],
            status: true,
            generation: true,
            columns: || {
                vec![
                    name_col(),
                    computed("Reference", "string", 0, table_cells::hpa_reference),
                    path("MinPods", "string", 0, ".spec.minReplicas"),
                    path("MaxPods", "string", 0, ".spec.maxReplicas"),
                    computed("Replicas", "string", 0, |o| {
                        int_or_zero(&o["status"]["currentReplicas"])
                    }),
                    age_col(),
                ]
            },
            ..DEFAULT
        },
        Builtin {
            group: "coordination.k8s.io",
            kind: "Lease",
            plural: "leases",
            create_on_update: true,
            columns: || {
                vec![
                    name_col(),
                    path("Holder", "string", 0, ".spec.holderIdentity"),
                    age_col(),
                ]
            },
            ..DEFAULT
        },
        Builtin {
            group: "apiextensions.k8s.io",
            kind: "CustomResourceDefinition",
            plural: "customresourcedefinitions",
            namespaced: false,
            short_names: &["crd", "crds"],
            categories: &["api-extensions"],
            status: true,
            generation: true,
            columns: || {
                vec![
                    name_col(),
                    path("Created At", "string", 0, ".metadata.creationTimestamp"),
                ]
            },
            ..DEFAULT
        },
        Builtin {
            group: "serving.knative.dev",
            kind: "Service",
            plural: "services",
            short_names: &["kservice", "ksvc"],
            categories: &["all", "knative", "serving"],
            status: true,
            custom: true,
            generation: true,
            columns: || {
                vec![
                    name_col(),
                    path("URL", "string", 0, ".status.url"),
                    path("LatestCreated", "string", 0, ".status.latestCreatedRevisionName"),
                    path("LatestReady", "string", 0, ".status.latestReadyRevisionName"),
                    path("Ready", "string", 0, READY),
                    path("Reason", "string", 0, READY_REASON),
                ]
            },
            ..DEFAULT
        },
        Builtin {
            group: "serving.knative.dev",
            kind: "Revision",
            plural: "revisions",
            short_names: &["rev"],
            categories: &["all", "knative", "serving"],
            status: true,
            custom: true,
            generation: true,
            columns: || {
                vec![
                    name_col(),
                    path(
                        "Config Name",
                        "string",
                        0,
                        ".metadata.labels['serving\\.knative\\.dev/configuration']",
                    ),
                    path(
                        "Generation",
                        "string",
                        0,
                        ".metadata.labels['serving\\.knative\\.dev/configurationGeneration']",
                    ),
                    path("Ready", "string", 0, READY),
                    path("Reason", "string", 0, READY_REASON),
                    path("Actual Replicas", "integer", 0, ".status.actualReplicas"),
                    path("Desired Replicas", "integer", 0, ".status.desiredReplicas"),
                ]
            },
            ..DEFAULT
        },
        Builtin {
            group: "gateway.networking.k8s.io",
            versions: &["v1", "v1beta1"],
            kind: "HTTPRoute",
            plural: "httproutes",
            categories: &["gateway-api"],
            status: true,
            custom: true,
            generation: true,
            columns: || {
                vec![
                    name_col(),
                    path("Hostnames", "string", 0, ".spec.hostnames"),
                    age_col(),
                ]
            },
            ..DEFAULT
        },
        Builtin {
            group: "networking.istio.io",
            versions: &["v1", "v1beta1", "v1alpha3"],
            kind: "VirtualService",
            plural: "virtualservices",
            short_names: &["vs"],
            categories: &["istio-io", "networking-istio-io"],
            status: true,
            custom: true,
            generation: true,
            columns: || {
                vec![
                    name_col(),
                    path("Gateways", "string", 0, ".spec.gateways"),
                    path("Hosts", "string", 0, ".spec.hosts"),
                    age_col(),
                ]
            },
            ..DEFAULT
        },
        Builtin {
            group: "networking.istio.io",
            versions: &["v1", "v1beta1", "v1alpha3"],
            kind: "DestinationRule",
            plural: "destinationrules",
            short_names: &["dr"],
            categories: &["istio-io", "networking-istio-io"],
            status: true,
            custom: true,
            generation: true,
            columns: || vec![name_col(), path("Host", "string", 0, ".spec.host"), age_col()],
            ..DEFAULT
        },
    ];
    list.iter().map(Builtin::build).collect()
}

fn int_or_zero(v: &Value) -> Value {
    if v.is_number() { v.clone() } else { Value::from(0) }
}

/// Cells of built-in kinds that are not a single JSONPath.
mod table_cells {
    use serde_json::Value;

    fn join(items: impl Iterator<Item = String>) -> Value {
        let s: Vec<String> = items.filter(|s| !s.is_empty()).collect();
        if s.is_empty() {
            Value::Null
        } else {
            Value::from(s.join(","))
        }
    }

    fn match_labels(selector: &Value) -> Value {
        let labels = selector.as_object().map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
        });
        join(labels.unwrap_or_default().into_iter())
    }

    pub(super) fn deployment_ready(o: &Value) -> Value {
        let ready = o["status"]["readyReplicas"].as_i64().unwrap_or(0);
        let want = o["spec"]["replicas"].as_i64().unwrap_or(1);
        Value::from(format!("{ready}/{want}"))
    }

    pub(super) fn containers(o: &Value, field: &str) -> Value {
        let list = o["spec"]["template"]["spec"]["containers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        join(
            list.iter()
                .map(|c| c[field].as_str().unwrap_or_default().to_string()),
        )
    }

    pub(super) fn deployment_selector(o: &Value) -> Value {
        match_labels(&o["spec"]["selector"]["matchLabels"])
    }

    pub(super) fn service_selector(o: &Value) -> Value {
        match_labels(&o["spec"]["selector"])
    }

    pub(super) fn external_ip(o: &Value) -> Value {
        let ips = o["spec"]["externalIPs"].as_array().cloned().unwrap_or_default();
        let ips = join(ips.iter().map(|v| v.as_str().unwrap_or_default().to_string()));
        if ips.is_null() { Value::from("<none>") } else { ips }
    }

    pub(super) fn service_ports(o: &Value) -> Value {
        let ports = o["spec"]["ports"].as_array().cloned().unwrap_or_default();
        let v = join(ports.iter().map(|p| {
            let proto = p["protocol"].as_str().unwrap_or("TCP");
            match p["nodePort"].as_i64() {
                Some(n) => format!("{}:{n}/{proto}", p["port"]),
                None => format!("{}/{proto}", p["port"]),
            }
        }));
        if v.is_null() { Value::from("<none>") } else { v }
    }

    pub(super) fn data_count(o: &Value) -> Value {
        let n = |k: &str| o[k].as_object().map_or(0, |m| m.len());
        Value::from(n("data") + n("binaryData") + n("stringData"))
    }

    pub(super) fn hpa_reference(o: &Value) -> Value {
        let r = &o["spec"]["scaleTargetRef"];
        Value::from(format!(
            "{}/{}",
            r["kind"].as_str().unwrap_or_default(),
            r["name"].as_str().unwrap_or_default()
        ))
    }

    pub(super) fn event_object(o: &Value) -> Value {
        let r = if o["involvedObject"].is_object() {
            &o["involvedObject"]
        } else {
            &o["regarding"]
        };
        Value::from(format!(
            "{}/{}",
            r["kind"].as_str().unwrap_or_default().to_lowercase(),
            r["name"].as_str().unwrap_or_default()
        ))
    }

    pub(super) fn event_last_seen(o: &Value) -> Value {
        let ts = [
            "lastTimestamp",
            "eventTime",
            "deprecatedLastTimestamp",
            "firstTimestamp",
        ]
        .iter()
        .find_map(|k| o[k].as_str().map(str::to_string))
        .or_else(|| o["metadata"]["creationTimestamp"].as_str().map(str::to_string));
        match ts {
            Some(ts) => Value::from(super::super::table::age_of(&ts)),
            None => Value::from("<unknown>"),
        }
    }
}

// === CRDs ===

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(v, |v, k| v.get(*k))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// Converts a CRD object into the resource type it defines, validating the fields the fake needs.
/// Errors name the CRD, the field path and what to do.
pub(crate) fn from_crd(crd: &Value) -> Result<ResourceType> {
    let name = str_at(crd, &["metadata", "name"]).unwrap_or_default().to_string();
    let invalid = |field: &str, what: &str| {
        Error::Invalid(format!(
            "CustomResourceDefinition.apiextensions.k8s.io \"{name}\" is invalid: {field}: {what}"
        ))
    };
    let spec = &crd["spec"];
    let group = str_at(spec, &["group"]).ok_or_else(|| invalid("spec.group", "Required value"))?;
    if !group.contains('.') {
        return Err(invalid(
            "spec.group",
            &format!("Invalid value: \"{group}\": should be a domain with at least one dot"),
        ));
    }
    let names = &spec["names"];
    let plural = str_at(names, &["plural"]).ok_or_else(|| invalid("spec.names.plural", "Required value"))?;
    let kind = str_at(names, &["kind"]).ok_or_else(|| invalid("spec.names.kind", "Required value"))?;
    if name != format!("{plural}.{group}") {
        return Err(invalid(
            "metadata.name",
            &format!(
                "Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group ({plural}.{group})"
            ),
        ));
    }
    let namespaced = match str_at(spec, &["scope"]) {
        Some("Namespaced") => true,
        Some("Cluster") => false,
        other => {
            return Err(invalid(
                "spec.scope",
                &format!(
                    "Unsupported value: {:?}: supported values: \"Cluster\", \"Namespaced\"",
                    other.unwrap_or("")
                ),
            ));
        }
    };
    let mut versions = Vec::new();
    let mut fields = Vec::new();
    let list = spec["versions"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        return Err(invalid(
            "spec.versions",
            "Required value: must have exactly one version marked as storage version",
        ));
    }
    if list
        .iter()
        .filter(|v| v["storage"].as_bool() == Some(true))
        .count()
        != 1
    {
        return Err(invalid(
            "spec.versions",
            "Invalid value: must have exactly one version marked as storage version",
        ));
    }
    for (i, v) in list.iter().enumerate() {
        let vname = str_at(v, &["name"])
            .ok_or_else(|| invalid(&format!("spec.versions[{i}].name"), "Required value"))?;
        for f in v["selectableFields"].as_array().into_iter().flatten() {
            if let Some(p) = f["jsonPath"].as_str() {
                fields.push(p.trim_start_matches('.').to_string());
            }
        }
        if v["served"].as_bool() != Some(true) {
            continue;
        }
        let printer = v["additionalPrinterColumns"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut columns = vec![name_col()];
        if printer.is_empty() {
            columns.push(age_col());
        }
        for (j, c) in printer.iter().enumerate() {
            let at = |f: &str| format!("spec.versions[{i}].additionalPrinterColumns[{j}].{f}");
            let cname = str_at(c, &["name"]).ok_or_else(|| invalid(&at("name"), "Required value"))?;
            let json_path =
                str_at(c, &["jsonPath"]).ok_or_else(|| invalid(&at("jsonPath"), "Required value"))?;
            let type_ = str_at(c, &["type"]).ok_or_else(|| invalid(&at("type"), "Required value"))?;
            if !["string", "integer", "number", "boolean", "date"].contains(&type_) {
                return Err(invalid(&at("type"), &format!("Unsupported value: \"{type_}\"")));
            }
            if let Err(e) = super::table::JsonPath::parse(json_path) {
                return Err(invalid(
                    &at("jsonPath"),
                    &format!("Invalid value: \"{json_path}\": {e}"),
                ));
            }
            columns.push(Column {
                name: cname.to_string(),
                type_: type_.to_string(),
                format: str_at(c, &["format"]).unwrap_or_default().to_string(),
                description: str_at(c, &["description"]).unwrap_or_default().to_string(),
                priority: c["priority"].as_i64().unwrap_or(0),
                source: CellSource::JsonPath(json_path.to_string()),
            });
        }
        let scale = &v["subresources"]["scale"];
        let scale = if scale.is_object() {
            let path = |f: &str| str_at(scale, &[f]).map(str::to_string);
            Some(ScaleDef {
                spec_replicas: path("specReplicasPath").ok_or_else(|| {
                    invalid(
                        &format!("spec.versions[{i}].subresources.scale.specReplicasPath"),
                        "Required value",
                    )
                })?,
                status_replicas: path("statusReplicasPath").ok_or_else(|| {
                    invalid(
                        &format!("spec.versions[{i}].subresources.scale.statusReplicasPath"),
                        "Required value",
                    )
                })?,
                label_selector: path("labelSelectorPath"),
            })
        } else {
            None
        };
        versions.push(VersionDef {
            name: vname.to_string(),
            status_subresource: v["subresources"].get("status").is_some_and(|s| !s.is_null()),
            columns,
            scale,
        });
    }
    if versions.is_empty() {
        return Err(invalid(
            "spec.versions",
            "Invalid value: at least one version must be served",
        ));
    }
    versions.sort_by(|a, b| compare_versions(&a.name, &b.name));
    Ok(ResourceType {
        group: group.to_string(),
        versions,
        kind: kind.to_string(),
        list_kind: str_at(names, &["listKind"]).map_or_else(|| format!("{kind}List"), str::to_string),
        plural: plural.to_string(),
        singular: str_at(names, &["singular"]).map_or_else(|| kind.to_lowercase(), str::to_string),
        namespaced,
        short_names: strings(&names["shortNames"]),
        categories: strings(&names["categories"]),
        custom: true,
        generation: true,
        create_on_update: false,
        field_selectors: fields,
        crd: Some(name),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_like_kubernetes() {
        let mut v = vec!["v1alpha1", "v1beta1", "v2", "foo", "v1", "v1beta2", "v10"];
        v.sort_by(|a, b| compare_versions(a, b));
        assert_eq!(v, ["v10", "v2", "v1", "v1beta2", "v1beta1", "v1alpha1", "foo"]);
    }

    #[test]
    fn crd_errors_name_the_field() {
        let crd = serde_json::json!({
            "metadata": {"name": "canaries.flagger.app"},
            "spec": {"group": "flagger.app", "names": {"plural": "canaries", "kind": "Canary"}, "scope": "Namespaced",
                      "versions": [{"name": "v1beta1", "served": true, "storage": true,
                                    "additionalPrinterColumns": [{"name": "Status", "jsonPath": ".status.phase"}]}]}
        });
        let err = from_crd(&crd).unwrap_err().to_string();
        assert!(
            err.contains("spec.versions[0].additionalPrinterColumns[0].type: Required value"),
            "{err}"
        );
    }
}
