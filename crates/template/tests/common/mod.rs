//! The model both test binaries render with: podinfo in `test`, as Flagger fills it in.

use aviary_template::Model;

/// podinfo's model (the names tests/gotemplate/main.go uses too) with these `variables`.
pub(crate) fn model(variables: &[(&str, &str)]) -> Model {
    Model {
        name: "podinfo".into(),
        namespace: "test".into(),
        target: "podinfo".into(),
        service: "podinfo-svc".into(),
        ingress: "podinfo-ing".into(),
        route: "podinfo-00002".into(),
        interval: "1m".into(),
        variables: variables
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}
