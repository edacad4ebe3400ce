//! The crate's error type.

/// Errors of the Kubernetes adapters. Ports turn them into the texts the engine reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The client could not be configured (kubeconfig, in-cluster settings).
    #[error("{0}")]
    Config(String),
    /// A call to the API server failed.
    #[error("{action}: {}", describe(source))]
    Api {
        action: String,
        #[source]
        source: kube::Error,
    },
    /// A write kept conflicting with other writers.
    #[error(
        "{0} kept changing while it was being updated (409 Conflict); it will be retried on the next tick"
    )]
    Conflict(String),
    /// An object does not have the shape the adapter needs.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub(crate) fn api(action: impl Into<String>, source: kube::Error) -> Self {
        Self::Api {
            action: action.into(),
            source,
        }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The message of a Kubernetes API error (`deployments.apps "x" not found`), or the error.
pub fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if s.code == 403 => match missing_permission(&s.message) {
            Some(permission) => format!(
                "missing permission: {permission} ({}); grant it in the agent's ClusterRole (deploy/rbac/cluster-role.yaml)",
                s.message
            ),
            None => s.message.clone(),
        },
        kube::Error::Api(s) if !s.message.is_empty() => s.message.clone(),
        other => other.to_string(),
    }
}

/// `verb resource.group[/subresource]` from the RBAC authorizer's 403 message (`… cannot patch
/// resource "deployments" in API group "apps" …`, subresources as `"canaries/status"`).
fn missing_permission(message: &str) -> Option<String> {
    let rest = message.split(" cannot ").nth(1)?;
    let (verb, rest) = rest.split_once(" resource \"")?;
    let (resource, rest) = rest.split_once('"')?;
    let group = rest
        .split_once("in API group \"")
        .and_then(|(_, g)| g.split_once('"'))
        .map_or("", |(g, _)| g);
    let (resource, sub) = match resource.split_once('/') {
        Some((r, s)) => (r, format!("/{s}")),
        None => (resource, String::new()),
    };
    let group = if group.is_empty() {
        String::new()
    } else {
        format!(".{group}")
    };
    Some(format!("{verb} {resource}{group}{sub}"))
}
