//! One module per subcommand.

pub(crate) mod crds;
pub(crate) mod validate;
