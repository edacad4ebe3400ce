//! The report `scripts/differential` prints: per scenario what differed, then the summary line.

use std::fmt::Write as _;

use crate::runner::Outcome;

/// The totals of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Scenarios run.
    pub scenarios: usize,
    /// Scenarios where both sides did exactly the same (after normalisation).
    pub identical: usize,
    /// Documented differences found: (scenario, docs/compatibility.md row) pairs.
    pub documented: usize,
    /// Channels that still differ, summed over the scenarios.
    pub undocumented: usize,
}

impl Summary {
    pub fn of(outcomes: &[Outcome]) -> Self {
        Self {
            scenarios: outcomes.len(),
            identical: outcomes.iter().filter(|o| o.identical()).count(),
            documented: outcomes.iter().map(|o| o.documented.len()).sum(),
            undocumented: outcomes.iter().map(|o| o.undocumented.len()).sum(),
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} scenarios, {} identical, {} documented differences, {} undocumented",
            self.scenarios, self.identical, self.documented, self.undocumented
        )
    }
}

/// The whole report; its last line is the [`Summary`].
pub fn render(outcomes: &[Outcome]) -> String {
    let mut out = String::new();
    for o in outcomes {
        let s = &o.scenario;
        let _ = writeln!(out, "== {} ({}): {}", s.name, s.provider, s.about);
        if o.identical() {
            let _ = writeln!(out, "   identical");
        }
        for d in &o.documented {
            let _ = writeln!(out, "   documented ({}): {}", d.row, d.what);
        }
        for d in &o.undocumented {
            let _ = writeln!(out, "   UNDOCUMENTED {} (- flagger, + aviary):", d.channel);
            for line in d.detail.lines() {
                let _ = writeln!(out, "      {line}");
            }
        }
    }
    let _ = writeln!(out, "{}", Summary::of(outcomes));
    out
}
