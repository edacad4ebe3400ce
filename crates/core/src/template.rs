//! Query templates, rendered as Flagger's `RenderQuery` does (pkg/metrics/observers/render.go):
//! Go's text/template with the model's functions and `missingkey=error`, through
//! `aviary-template` (Go's grammar and error texts, checked against Go by a differential test).

use crate::error::{Error, Result};
use crate::ports::MetricModel;

/// Renders `template` with the model's values. Errors carry Flagger's prefixes:
/// `template parsing failed: …` and (sic) `template excution failed: …`.
pub fn render(template: &str, model: &MetricModel) -> Result<String> {
    let parsed = aviary_template::parse(template)
        .map_err(|e| Error::Template(format!("template parsing failed: {e}")))?;
    parsed
        .execute(model)
        .map_err(|e| Error::Template(format!("template excution failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> MetricModel {
        MetricModel {
            service: "podinfo-svc".into(),
            variables: [("cluster".to_string(), "eu-1".to_string())].into(),
            ..crate::fakes::podinfo_model()
        }
    }

    #[test]
    fn renders_flagger_variables() {
        let q = r#"sum(rate(http_requests_total{namespace="{{ namespace }}",pod=~"{{ target }}-[0-9a-z]+",cluster="{{ variables.cluster }}"}[{{ interval }}]))"#;
        assert_eq!(
            render(q, &model()).unwrap(),
            r#"sum(rate(http_requests_total{namespace="test",pod=~"podinfo-[0-9a-z]+",cluster="eu-1"}[1m]))"#
        );
        assert_eq!(
            render("{{name}}/{{service}}/{{ingress}}/{{route}}", &model()).unwrap(),
            "podinfo/podinfo-svc/podinfo/podinfo-00002"
        );
    }

    #[test]
    fn trims_comments_and_literals() {
        assert_eq!(render("a  {{- namespace -}}  b", &model()).unwrap(), "atestb");
        assert_eq!(render("x{{/* note */}}y", &model()).unwrap(), "xy");
        assert_eq!(render(r#"{{ "}}" }}"#, &model()).unwrap(), "}}");
        assert_eq!(render("no actions", &model()).unwrap(), "no actions");
        // a }} outside an action is text (Flagger's CloudWatch queries end in `}}]`)
        assert_eq!(
            render(r#"[{"a":{"b":1}}]"#, &model()).unwrap(),
            r#"[{"a":{"b":1}}]"#
        );
    }

    #[test]
    fn errors_read_like_flaggers() {
        let err = |t: &str| render(t, &model()).unwrap_err().to_string();
        assert_eq!(
            err("{{ variables.region }}"),
            "template excution failed: template: tmpl:1:3: executing \"tmpl\" at <variables>: map has no entry for key \"region\""
        );
        assert_eq!(
            err("a\n{{ nope }}"),
            "template parsing failed: template: tmpl:2: function \"nope\" not defined"
        );
        assert_eq!(
            err("{{ namespace "),
            "template parsing failed: template: tmpl:1: unclosed action"
        );
        assert_eq!(
            err("{{ 1 + 2 }}"),
            "template parsing failed: template: tmpl:1: illegal number syntax: \"+\""
        );
        assert_eq!(
            err("{{ }}"),
            "template parsing failed: template: tmpl:1: missing value for command"
        );
    }
}
