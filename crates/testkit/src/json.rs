//! Reading JSON answers (`-o json`, the dashboard's API, grpcurl) in tests.

use serde_json::Value;

/// The string `key` of every element of the JSON array `array`; panics, naming `key`, when
/// `array` is not an array or an element has no such string.
pub fn strings<'a>(array: &'a Value, key: &str) -> Vec<&'a str> {
    array
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {array}"))
        .iter()
        .map(|e| {
            e[key]
                .as_str()
                .unwrap_or_else(|| panic!("no string {key:?} in {e}"))
        })
        .collect()
}
