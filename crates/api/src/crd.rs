//! CustomResourceDefinitions generated from the Rust types (kube-derive + schemars), as
//! `aviary crds` prints them and `deploy/crds/` commits them.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube_core::CustomResourceExt;
use serde_json::{Value, json};

use crate::alert_provider::AlertProvider;
use crate::canary::Canary;
use crate::error::{Error, Result};
use crate::fleet::FleetRollout;
use crate::metric_template::MetricTemplate;

/// The three Flagger-compatible CRDs: canaries, metrictemplates and alertproviders.
pub fn flagger_crds() -> Vec<CustomResourceDefinition> {
    [Canary::crd(), MetricTemplate::crd(), AlertProvider::crd()]
        .into_iter()
        .map(normalize)
        .collect()
}

/// aviary's own CRDs for a management cluster: `fleetrollouts.aviary.dev` (the coordinator
/// watches them with `--kubeconfig`/in-cluster configuration and `--namespace`).
pub fn aviary_crds() -> Vec<CustomResourceDefinition> {
    [FleetRollout::crd()].into_iter().map(normalize).collect()
}

/// aviary's CRDs as one multi-document YAML text (`deploy/crds/aviary-crds.yaml`).
pub fn aviary_crds_yaml() -> Result<String> {
    to_yaml(aviary_crds())
}

/// Makes a generated CRD read like Flagger's: the annotation that keeps CRDs on `helm
/// uninstall`, the `apiVersion`/`kind`/`metadata` properties, and no `nullable` (aviary never
/// writes nulls; Option fields are omitted instead).
fn normalize(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    crd.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert("helm.sh/resource-policy".into(), "keep".into());
    for version in &mut crd.spec.versions {
        let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        else {
            continue;
        };
        let mut json = serde_json::to_value(&*schema).expect("a schema is JSON");
        strip_nullable(&mut json);
        if let Some(props) = json.get_mut("properties").and_then(Value::as_object_mut) {
            props.insert(
                "apiVersion".into(),
                json!({"type": "string", "description": API_VERSION_DOC}),
            );
            props.insert("kind".into(), json!({"type": "string", "description": KIND_DOC}));
            props.insert("metadata".into(), json!({"type": "object"}));
        }
        *schema = serde_json::from_value(json).expect("a normalized schema is still a schema");
    }
    crd
}

const API_VERSION_DOC: &str = "APIVersion defines the versioned schema of this representation of an object.";
const KIND_DOC: &str = "Kind is a string value representing the REST resource this object represents.";

fn strip_nullable(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.remove("nullable");
            map.values_mut().for_each(strip_nullable);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nullable),
        _ => {}
    }
}

/// The CRDs as one multi-document YAML text.
pub fn flagger_crds_yaml() -> Result<String> {
    to_yaml(flagger_crds())
}

fn to_yaml(crds: Vec<CustomResourceDefinition>) -> Result<String> {
    let mut out = String::new();
    for crd in crds {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&crd).map_err(Error::Serialize)?);
    }
    Ok(out)
}
