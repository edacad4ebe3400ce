//! Comparing two traces channel by channel. A difference shows Flagger's lines as `-` and
//! aviary's as `+` (with a little context), and for JSON states the paths that differ.

use serde_json::Value;

use crate::trace::{Channel, Trace};

/// One channel that differs.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    pub channel: String,
    /// `-` Flagger, `+` aviary, ` ` both.
    pub detail: String,
}

/// Lines of context around a change.
const CONTEXT: usize = 2;

/// Every channel that differs between Flagger's trace and aviary's.
pub fn compare(flagger: &Trace, aviary: &Trace) -> Vec<Difference> {
    let mut out = Vec::new();
    if !flagger.problems.is_empty() || !aviary.problems.is_empty() {
        let mut detail = String::new();
        for p in &flagger.problems {
            detail.push_str(&format!("- {p}\n"));
        }
        for p in &aviary.problems {
            detail.push_str(&format!("+ {p}\n"));
        }
        out.push(Difference {
            channel: "run".into(),
            detail,
        });
    }
    let names: std::collections::BTreeSet<&String> =
        flagger.channels.keys().chain(aviary.channels.keys()).collect();
    for name in names {
        let (a, b) = (flagger.channels.get(name), aviary.channels.get(name));
        if a == b {
            continue;
        }
        let empty = Channel::Lines(Vec::new());
        let detail = match (a.unwrap_or(&empty), b.unwrap_or(&empty)) {
            (Channel::Lines(a), Channel::Lines(b)) => line_diff(a, b),
            (Channel::States(a), Channel::States(b)) => state_diff(a, b),
            (Channel::States(a), Channel::Lines(b)) => line_diff(&compact(a), b),
            (Channel::Lines(a), Channel::States(b)) => line_diff(a, &compact(b)),
        };
        out.push(Difference {
            channel: name.clone(),
            detail,
        });
    }
    out
}

fn compact(states: &[Value]) -> Vec<String> {
    states.iter().map(Value::to_string).collect()
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Same(usize, usize),
    Flagger(usize),
    Aviary(usize),
}

/// The longest-common-subsequence edit script of `a` into `b`.
fn edits<T: PartialEq>(a: &[T], b: &[T]) -> Vec<Op> {
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            out.push(Op::Same(i, j));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push(Op::Flagger(i));
            i += 1;
        } else {
            out.push(Op::Aviary(j));
            j += 1;
        }
    }
    out
}

/// Unified-diff-like text of two line sequences (changes with [`CONTEXT`] lines around them).
pub fn line_diff(a: &[String], b: &[String]) -> String {
    let ops = edits(a, b);
    let changed: Vec<bool> = ops.iter().map(|o| !matches!(o, Op::Same(..))).collect();
    let mut out = String::new();
    let mut skipped = false;
    for (k, op) in ops.iter().enumerate() {
        let near = (k.saturating_sub(CONTEXT)..(k + CONTEXT + 1).min(ops.len())).any(|x| changed[x]);
        if !near {
            skipped = true;
            continue;
        }
        if skipped {
            out.push_str("  …\n");
            skipped = false;
        }
        match op {
            Op::Same(i, _) => out.push_str(&format!("  {}\n", a[*i])),
            Op::Flagger(i) => out.push_str(&format!("- {}\n", a[*i])),
            Op::Aviary(j) => out.push_str(&format!("+ {}\n", b[*j])),
        }
    }
    out
}

/// Differences of two state sequences: in each run of changed states, Flagger's and aviary's
/// states are paired in order and shown by path; unpaired ones whole.
fn state_diff(a: &[Value], b: &[Value]) -> String {
    let ops = edits(a, b);
    let mut out = String::new();
    let mut k = 0;
    while k < ops.len() {
        if matches!(ops[k], Op::Same(..)) {
            k += 1;
            continue;
        }
        let run: Vec<Op> = ops[k..]
            .iter()
            .take_while(|o| !matches!(o, Op::Same(..)))
            .copied()
            .collect();
        k += run.len();
        let fl: Vec<usize> = run
            .iter()
            .filter_map(|o| if let Op::Flagger(i) = o { Some(*i) } else { None })
            .collect();
        let av: Vec<usize> = run
            .iter()
            .filter_map(|o| if let Op::Aviary(j) = o { Some(*j) } else { None })
            .collect();
        for (i, j) in fl.iter().zip(&av) {
            out.push_str(&format!("state {} (flagger) / {} (aviary):\n", i + 1, j + 1));
            for line in paths(&a[*i], &b[*j], "") {
                out.push_str(&format!("    {line}\n"));
            }
        }
        for i in fl.iter().skip(av.len()) {
            out.push_str(&format!("- state {}: {}\n", i + 1, a[*i]));
        }
        for j in av.iter().skip(fl.len()) {
            out.push_str(&format!("+ state {}: {}\n", j + 1, b[*j]));
        }
    }
    out
}

/// `path: flagger → aviary` for every leaf that differs.
fn paths(a: &Value, b: &Value, at: &str) -> Vec<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter()
                .flat_map(|k| {
                    paths(
                        x.get(k).unwrap_or(&Value::Null),
                        y.get(k).unwrap_or(&Value::Null),
                        &format!("{at}.{k}"),
                    )
                })
                .collect()
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .flat_map(|(i, (x, y))| paths(x, y, &format!("{at}[{i}]")))
            .collect(),
        _ if a == b => Vec::new(),
        _ => vec![format!(
            "{}: flagger {} | aviary {}",
            if at.is_empty() { "." } else { at },
            shown(a),
            shown(b)
        )],
    }
}

fn shown(v: &Value) -> String {
    if v.is_null() {
        "(absent)".into()
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn line_diffs_mark_each_side() {
        let d = line_diff(&lines(&["a", "b", "c"]), &lines(&["a", "x", "c"]));
        assert_eq!(d, "  a\n- b\n+ x\n  c\n");
        assert_eq!(line_diff(&lines(&["a"]), &lines(&["a"])), "");
    }

    #[test]
    fn state_diffs_name_the_paths() {
        let a = vec![json!({"phase": "Progressing", "canaryWeight": 10})];
        let b = vec![json!({"phase": "Progressing", "canaryWeight": 20, "x": 1})];
        let d = state_diff(&a, &b);
        assert!(d.contains(".canaryWeight: flagger 10 | aviary 20"), "{d}");
        assert!(d.contains(".x: flagger (absent) | aviary 1"), "{d}");
    }

    #[test]
    fn equal_traces_have_no_differences() {
        let mut t = Trace::default();
        t.channels.insert(
            "status".into(),
            Channel::States(vec![json!({"phase": "Initialized"})]),
        );
        assert!(compare(&t, &t.clone()).is_empty());
        let mut u = t.clone();
        u.channels.insert("events".into(), Channel::Lines(lines(&["x"])));
        let d = compare(&t, &u);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].channel, "events");
        assert_eq!(d[0].detail, "+ x\n");
    }
}
