//! Properties of our side alone (Go is the oracle in differential.rs): any input parses or
//! fails without panicking, text outside actions is copied as is, and the model's functions
//! render their values wherever they appear.

mod common;

use aviary_template::{Model, parse};
use proptest::prelude::*;

fn model() -> Model {
    common::model(&[("cluster", "eu-1")])
}

/// Strings rich in template syntax.
fn template_soup() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        // Weighted so that each word is as likely as each pattern.
        prop_oneof![
            18 => prop::sample::select(&[
                "{{", "}}", "{{- ", " -}}", "namespace", "variables.cluster", "$x := ", "if ",
                "range ", "end", "(", ")", "|", "\"", "`", "'", "/*", "*/",
            ][..])
            .prop_map(str::to_string),
            1 => "[ -~\\n]{0,6}",
            1 => "\\PC{0,3}",
        ],
        0..16,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn any_input_parses_or_fails_without_panicking(t in template_soup()) {
        if let Ok(parsed) = parse(&t) {
            let _ = parsed.execute(&model());
        }
    }

    #[test]
    fn text_without_actions_is_copied(t in "[^{]*(\\{[^{][^{]*)*\\{?") {
        prop_assert!(!t.contains("{{"));
        let parsed = parse(&t).expect("text parses");
        prop_assert_eq!(parsed.execute(&model()).unwrap(), t);
    }

    #[test]
    fn functions_render_between_any_texts(a in "[^{}]{0,20}", b in "[^{}]{0,20}") {
        let t = format!("{a}{{{{ namespace }}}}/{{{{ variables.cluster }}}}{b}");
        prop_assert_eq!(parse(&t).unwrap().execute(&model()).unwrap(), format!("{a}test/eu-1{b}"));
    }

    #[test]
    fn parse_errors_name_the_template_and_a_line(t in template_soup()) {
        if let Err(e) = parse(&t) {
            let lines = t.matches('\n').count() + 1;
            let rest = e.0.strip_prefix("template: tmpl:").expect("Go's prefix");
            let line: usize = rest.split(':').next().unwrap().parse().expect("a line number");
            prop_assert!((1..=lines).contains(&line), "{} in {} lines", e.0, lines);
        }
    }
}
