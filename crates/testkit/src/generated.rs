//! Generated files committed to the repository (CRDs, the CLI reference): the committed text
//! must be exactly what the generator prints, and a drift fails naming the first differing line
//! and the command that regenerates the file.

use std::path::Path;

/// Panics unless `path` (relative to the repository `root`) holds exactly `printed`, the output
/// of `generator`; the message names the first differing line and `regenerate`.
pub fn assert_committed(printed: &str, root: &Path, path: &str, generator: &str, regenerate: &str) {
    let committed = std::fs::read_to_string(root.join(path))
        .unwrap_or_else(|e| panic!("cannot read {path} ({e}); run `{regenerate}`"));
    if printed == committed {
        return;
    }
    let first = printed
        .lines()
        .zip(committed.lines())
        .position(|(a, b)| a != b)
        .unwrap_or(printed.lines().count().min(committed.lines().count()));
    panic!(
        "{path} differs from `{generator}` (first difference at line {}: printed {:?}, \
         committed {:?}); run `{regenerate}` and commit the result",
        first + 1,
        printed.lines().nth(first).unwrap_or("<end of output>"),
        committed.lines().nth(first).unwrap_or("<end of file>"),
    );
}
