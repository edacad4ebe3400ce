use std::net::SocketAddr;

/// Everything that can go wrong in the local platform's data plane.
///
/// Messages name the thing (service, process group), the field and what to do, because the agent
/// shows them to users as they are.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not be bound (port in use, permission denied, …).
    #[error("{what}: cannot listen on {addr}: {source}; choose a free port or stop the process using it")]
    Bind {
        what: String,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },

    /// A configuration was rejected before anything changed: `what` names the router, process
    /// group or app, `field` the offending setting.
    #[error("{what}: {field}: {message}")]
    Invalid {
        what: String,
        field: String,
        message: String,
    },

    /// Any other I/O failure, with what we were doing.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn invalid(
        what: impl Into<String>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Error::Invalid {
            what: what.into(),
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// `error: cause: cause…`, for messages that must say why (hyper's errors hide the OS error in
/// their sources).
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
