//! The load tester's fuzz target (`fuzz/`, feature `fuzzing`; its corpus replays in this
//! crate's tests): hostile JSON through what the load tester reads before it runs anything —
//! the webhook payload with and without a namespace filter, the metadata of the task types that
//! call another server (Concord, nGrinder), and the gate state file.

use std::path::Path;

use super::gates::{GateKey, GateKind, parse_state};
use super::remote::{Concord, NGrinder};
use super::{namespace_filter, parse_payload};

/// The first byte picks the input: odd, a gate state file; even, a webhook payload.
pub fn loadtester_json(data: &[u8]) {
    let Some((first, body)) = data.split_first() else {
        return;
    };
    if first & 1 == 1 {
        if let Ok(open) = parse_state(body) {
            for key in open {
                let _ = format!("{key:?}");
            }
        }
        return;
    }
    let filter = namespace_filter("^(test|prod)$", true).expect("a valid filter");
    let filtered = parse_payload(body, Some(&filter));
    let Ok(p) = parse_payload(body, None) else {
        assert!(
            filtered.is_err(),
            "the filter lets through what the parser refuses"
        );
        return;
    };
    let _ = GateKey::new(GateKind::Gate, &p.namespace, &p.name);
    let _ = GateKey::new(GateKind::Rollback, &p.namespace, &p.name);
    let Some(meta) = p.metadata.as_ref() else {
        return;
    };
    match meta.get("type").map(String::as_str) {
        // A key directory that does not exist: the paths are checked, nothing is read.
        Some("concord") => {
            let _ = Concord::from_metadata(meta, Some(Path::new("/nonexistent/aviary-fuzz")));
        }
        Some("ngrinder") => {
            if let Ok(t) = NGrinder::from_metadata(meta) {
                let _ = t.key();
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_fuzz_corpus_replays_without_a_panic() {
        assert!(aviary_testkit::fuzz::replay("loadtester_json", super::loadtester_json) > 0);
    }
}
