//! Differences between Flagger and aviary that are deliberate and listed in
//! docs/compatibility.md ("Deliberate differences"). Each rule names its row there and rewrites
//! the traces so that exactly this difference disappears; the report lists the rules that
//! changed something, and whatever still differs is undocumented. A test checks that every
//! rule's row exists in the document.

use crate::scenario::Scenario;
use crate::trace::Trace;

/// One documented difference.
#[derive(Debug)]
pub struct Documented {
    /// The first cell of its row in docs/compatibility.md's "Deliberate differences" table.
    pub row: &'static str,
    /// What differs, in one line, for the report.
    pub what: &'static str,
    /// Rewrites Flagger's and aviary's traces so that this difference disappears.
    pub apply: fn(&Scenario, &mut Trace, &mut Trace),
}

/// Every rule.
pub static RULES: &[Documented] = &[];

/// Applies every rule; returns those that changed something.
pub fn apply(scenario: &Scenario, flagger: &mut Trace, aviary: &mut Trace) -> Vec<&'static Documented> {
    let mut fired = Vec::new();
    for rule in RULES {
        let before = (flagger.clone(), aviary.clone());
        (rule.apply)(scenario, flagger, aviary);
        if before != (flagger.clone(), aviary.clone()) {
            fired.push(rule);
        }
    }
    fired
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_names_a_row_of_the_compatibility_page() {
        let doc = std::fs::read_to_string(crate::sides::repo().join("docs/compatibility.md")).unwrap();
        for rule in RULES {
            assert!(
                doc.lines().any(|l| l.starts_with(&format!("| {} |", rule.row))),
                "docs/compatibility.md has no row {:?}",
                rule.row
            );
        }
    }
}
