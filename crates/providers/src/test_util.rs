//! Helpers of the crate's unit tests.

use std::collections::BTreeMap;

/// A string map (labels, metadata) from `(key, value)` pairs.
pub(crate) fn string_map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|&(k, v)| (k.into(), v.into())).collect()
}
