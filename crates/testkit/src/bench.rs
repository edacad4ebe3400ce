//! Command-line flags of the benchmark harnesses (`cargo bench -- --name value`).

/// The number after `name` in `args`, or `default`; panics when it is not a number.
pub fn flag(args: &[String], name: &str, default: u64) -> u64 {
    text_flag(args, name)
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} {v}: not a number")))
        .unwrap_or(default)
}

/// The text after `name` in `args`.
pub fn text_flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}
