//! Query templates, as Flagger renders them: Go `text/template` syntax with the functions
//! `name`, `namespace`, `target`, `service`, `ingress`, `route`, `interval` and `variables`
//! (`{{ variables.cluster }}`), `missingkey=error`. aviary implements the subset query templates
//! use — actions with those functions, `{{- -}}` trimming, string literals and comments — and
//! answers anything else with Go's error texts, never a panic.

use crate::error::{Error, Result};
use crate::ports::MetricModel;

/// Renders `template` with the model's values.
pub fn render(template: &str, model: &MetricModel) -> Result<String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    let mut line = 1;
    while let Some(start) = rest.find("{{") {
        let (text, after_open) = (&rest[..start], &rest[start + 2..]);
        let trim_left =
            after_open.starts_with("- ") || after_open.starts_with("-\t") || after_open.starts_with("-\n");
        if trim_left {
            out.push_str(text.trim_end());
        } else {
            out.push_str(text);
        }
        line += text.matches('\n').count();
        let body_start = if trim_left { 1 } else { 0 };
        let close = find_close(&after_open[body_start..])
            .ok_or_else(|| Error::Template(format!("template: tmpl:{line}: unclosed action")))?;
        let mut body = &after_open[body_start..body_start + close];
        let mut trim_right = false;
        if let Some(b) = body
            .strip_suffix(" -")
            .or_else(|| body.strip_suffix("\t-"))
            .or_else(|| body.strip_suffix("\n-"))
        {
            body = b;
            trim_right = true;
        }
        out.push_str(&eval(body.trim(), model, line)?);
        line += body.matches('\n').count();
        rest = &after_open[body_start + close + 2..];
        if trim_right {
            rest = rest.trim_start();
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Index of the `}}` closing an action, skipping string literals and comments.
fn find_close(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut i = 0;
    if s.trim_start().starts_with("/*") {
        let end = s.find("*/")?;
        return s[end..].find("}}").map(|j| end + j);
    }
    while i + 1 < bytes.len() {
        match bytes[i] {
            b'"' | b'`' => {
                let quote = bytes[i];
                i += 1;
                while i < bytes.len() && bytes[i] != quote {
                    if quote == b'"' && bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'}' if bytes[i + 1] == b'}' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

fn eval(body: &str, model: &MetricModel, line: usize) -> Result<String> {
    if body.is_empty() {
        return Err(Error::Template(format!(
            "template: tmpl:{line}: missing value for command"
        )));
    }
    if body.starts_with("/*") {
        return Ok(String::new());
    }
    if let Some(lit) = string_literal(body) {
        return Ok(lit);
    }
    let (func, field) = match body.split_once('.') {
        Some((f, k)) => (f, Some(k)),
        None => (body, None),
    };
    if !func.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || func.is_empty() {
        return Err(Error::Template(format!(
            "template: tmpl:{line}: unsupported expression {body:?}; query templates use {{{{ namespace }}}}, {{{{ target }}}}, {{{{ variables.name }}}}, …"
        )));
    }
    let value = match func {
        "name" => &model.name,
        "namespace" => &model.namespace,
        "target" => &model.target,
        "service" => &model.service,
        "ingress" => &model.ingress,
        "route" => &model.route,
        "interval" => &model.interval,
        "variables" => {
            let Some(key) = field else {
                return Err(Error::Template(format!(
                    "template: tmpl:{line}: {{{{ variables }}}} is a map; use {{{{ variables.<key> }}}}"
                )));
            };
            return model.variables.get(key).cloned().ok_or_else(|| {
                Error::Template(format!(
                    "template: tmpl:{line}: executing \"tmpl\" at <variables.{key}>: map has no entry for key \"{key}\""
                ))
            });
        }
        other => {
            return Err(Error::Template(format!(
                "template: tmpl:{line}: function \"{other}\" not defined"
            )));
        }
    };
    if let Some(f) = field {
        return Err(Error::Template(format!(
            "template: tmpl:{line}: executing \"tmpl\" at <{func}.{f}>: can't evaluate field {f} in type string"
        )));
    }
    Ok(value.clone())
}

fn string_literal(body: &str) -> Option<String> {
    if body.len() >= 2 && body.starts_with('`') && body.ends_with('`') {
        return Some(body[1..body.len() - 1].to_string());
    }
    if body.len() >= 2 && body.starts_with('"') && body.ends_with('"') {
        return serde_json::from_str::<String>(body).ok();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> MetricModel {
        MetricModel {
            name: "podinfo".into(),
            namespace: "test".into(),
            target: "podinfo".into(),
            service: "podinfo-svc".into(),
            ingress: "podinfo".into(),
            route: "podinfo-00002".into(),
            interval: "1m".into(),
            variables: [("cluster".to_string(), "eu-1".to_string())].into(),
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
    }

    #[test]
    fn errors_read_like_go() {
        let err = |t: &str| render(t, &model()).unwrap_err().to_string();
        assert_eq!(
            err("{{ variables.region }}"),
            "template: tmpl:1: executing \"tmpl\" at <variables.region>: map has no entry for key \"region\""
        );
        assert_eq!(
            err("a\n{{ nope }}"),
            "template: tmpl:2: function \"nope\" not defined"
        );
        assert_eq!(err("{{ namespace "), "template: tmpl:1: unclosed action");
        assert!(err("{{ 1 + 2 }}").contains("unsupported expression"));
        assert!(err("{{ }}").contains("missing value"));
    }
}
