//! One module per subcommand.

pub(crate) mod crds;
pub(crate) mod simulate;
pub(crate) mod validate;

use std::io::Read;
use std::path::Path;

use anyhow::Context;

/// Reads a file, or stdin for `-`, as UTF-8 text.
pub(crate) fn read_input(path: &Path) -> anyhow::Result<String> {
    let bytes = if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("cannot read stdin")?;
        buf
    } else {
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?
    };
    String::from_utf8(bytes).with_context(|| format!("{}: not a text file (not UTF-8)", path.display()))
}
