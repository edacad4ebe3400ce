//! The local platform's state directory: what it cannot re-observe after a restart.
//!
//! ```text
//! <state-dir>/canaries/<ns>/<name>.json     the canary's status (the engine's source of truth)
//! <state-dir>/services/<ns>/<name>.json     the promoted spec the primary runs, and the version
//!                                           the coordinator pushed (overrides the file's)
//! <state-dir>/logs/                         process output
//! ```
//!
//! Every write is atomic (write a temporary file, fsync, rename), so a kill at any moment leaves
//! either the old or the new content.

use std::io::Write;
use std::path::{Path, PathBuf};

use aviary_api::CanaryStatus;
use aviary_api::local::LocalServiceSpec;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// What the platform keeps about one LocalService.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceState {
    /// The spec the primary runs (set at initialization and on promotion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<LocalServiceSpec>,
    /// A version pushed by the coordinator; it wins over the config file's until the file's
    /// version changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed: Option<PushedVersion>,
}

/// A version the coordinator asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushedVersion {
    pub version: String,
    /// The config file's version when the push happened; a later edit of the file wins.
    pub file_version: String,
    pub rollout: String,
    /// Bumped by a coordinator retry of the same version: a new revision of the same version.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retry: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// Opens (and creates) the directory.
    pub fn open(root: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(root.join("canaries"))?;
        std::fs::create_dir_all(root.join("services"))?;
        std::fs::create_dir_all(root.join("logs"))?;
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where process output goes.
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }

    fn canary_path(&self, namespace: &str, name: &str) -> PathBuf {
        self.root
            .join("canaries")
            .join(namespace)
            .join(format!("{name}.json"))
    }

    fn service_path(&self, namespace: &str, name: &str) -> PathBuf {
        self.root
            .join("services")
            .join(namespace)
            .join(format!("{name}.json"))
    }

    /// The persisted status of a canary.
    pub fn canary_status(&self, namespace: &str, name: &str) -> Option<CanaryStatus> {
        read_json(&self.canary_path(namespace, name))
    }

    /// Persists a canary's status.
    pub fn save_canary_status(
        &self,
        namespace: &str,
        name: &str,
        status: &CanaryStatus,
    ) -> std::io::Result<()> {
        write_json(&self.canary_path(namespace, name), status)
    }

    /// Forgets a deleted canary.
    pub fn remove_canary(&self, namespace: &str, name: &str) {
        let _ = std::fs::remove_file(self.canary_path(namespace, name));
    }

    /// The persisted state of a service.
    pub fn service(&self, namespace: &str, name: &str) -> ServiceState {
        read_json(&self.service_path(namespace, name)).unwrap_or_default()
    }

    /// Persists a service's state.
    pub fn save_service(&self, namespace: &str, name: &str, state: &ServiceState) -> std::io::Result<()> {
        write_json(&self.service_path(namespace, name), state)
    }
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Option<T> {
    let bytes = std::fs::read(path).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!("ignoring unreadable state file {}: {e}", path.display());
            None
        }
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let dir = path.parent().expect("state paths have a parent");
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("state")
    ));
    let bytes = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_survives_garbage() {
        let dir = std::env::temp_dir().join(format!("aviary-state-{}", std::process::id()));
        let s = StateDir::open(&dir).unwrap();
        assert!(s.canary_status("test", "podinfo").is_none());
        let status = CanaryStatus {
            canary_weight: 30,
            ..Default::default()
        };
        s.save_canary_status("test", "podinfo", &status).unwrap();
        assert_eq!(s.canary_status("test", "podinfo").unwrap().canary_weight, 30);
        std::fs::write(s.canary_path("test", "podinfo"), b"{not json").unwrap();
        assert!(s.canary_status("test", "podinfo").is_none());
        let st = ServiceState {
            primary: Some(LocalServiceSpec {
                version: Some("6.0.0".into()),
                ..Default::default()
            }),
            pushed: None,
        };
        s.save_service("test", "podinfo", &st).unwrap();
        assert_eq!(s.service("test", "podinfo"), st);
        let _ = std::fs::remove_dir_all(dir);
    }
}
