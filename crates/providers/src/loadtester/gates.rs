//! Manual gates: open/closed flags per canary, optionally persisted in a state file so that they
//! survive a restart (Flagger keeps them in memory only, fluxcd/flagger#1554).
//!
//! Keys are `<name>.<namespace>` for the rollout gate and `rollback.<name>.<namespace>` for the
//! rollback gate, as in Flagger. An unknown key is closed. Every change is written to the state
//! file (a temporary file in the same directory, fsynced, then renamed over the old one) before
//! it takes effect, so a crash leaves either the old or the new state, never a torn file.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The state file's format version.
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct StateFile {
    version: u32,
    gates: BTreeMap<String, bool>,
}

/// The gates of one load tester.
#[derive(Debug)]
pub(crate) struct Gates {
    state: RwLock<BTreeMap<String, bool>>,
    file: Option<PathBuf>,
    /// Serialises writers so that the file always holds the last change.
    write: tokio::sync::Mutex<()>,
}

impl Gates {
    /// Loads the state file when there is one (a missing file is an empty state).
    pub(crate) fn load(file: Option<PathBuf>) -> Result<Self> {
        let mut state = BTreeMap::new();
        if let Some(path) = &file {
            match std::fs::read(path) {
                Ok(bytes) => {
                    let parsed: StateFile = serde_json::from_slice(&bytes).map_err(|e| Error::State {
                        path: path.clone(),
                        message: format!("not a gate state file ({e}); fix or delete it"),
                    })?;
                    if parsed.version != VERSION {
                        return Err(Error::State {
                            path: path.clone(),
                            message: format!(
                                "version {} is not supported (expected {VERSION}); delete the file",
                                parsed.version
                            ),
                        });
                    }
                    state = parsed.gates;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(Error::State {
                        path: path.clone(),
                        message: format!("cannot read it: {e}"),
                    });
                }
            }
        }
        Ok(Self {
            state: RwLock::new(state),
            file,
            write: tokio::sync::Mutex::new(()),
        })
    }

    /// Whether the gate is open (unknown gates are closed).
    pub(crate) fn is_open(&self, key: &str) -> bool {
        self.state.read().get(key).copied().unwrap_or(false)
    }

    /// Opens or closes a gate, persisting first.
    pub(crate) async fn set(&self, key: &str, open: bool) -> Result<(), String> {
        let _guard = self.write.lock().await;
        let mut next = self.state.read().clone();
        if next.get(key) == Some(&open) {
            return Ok(());
        }
        next.insert(key.to_string(), open);
        if let Some(path) = self.file.clone() {
            let snapshot = StateFile {
                version: VERSION,
                gates: next.clone(),
            };
            tokio::task::spawn_blocking(move || write_atomically(&path, &snapshot))
                .await
                .map_err(|e| format!("cannot persist the gate state: {e}"))?
                .map_err(|e| format!("cannot persist the gate state: {e}"))?;
        }
        *self.state.write() = next;
        Ok(())
    }
}

fn write_atomically(path: &Path, state: &StateFile) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("state");
    let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let bytes = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename itself is durable once the directory is synced.
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn state_survives_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gates.json");
        let gates = Gates::load(Some(path.clone())).unwrap();
        assert!(!gates.is_open("podinfo.test"));
        gates.set("podinfo.test", true).await.unwrap();
        gates.set("rollback.podinfo.test", false).await.unwrap();
        assert!(gates.is_open("podinfo.test"));

        let again = Gates::load(Some(path.clone())).unwrap();
        assert!(again.is_open("podinfo.test"));
        assert!(!again.is_open("rollback.podinfo.test"));
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["gates.json"]);
    }

    #[tokio::test]
    async fn broken_files_are_reported_with_their_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gates.json");
        std::fs::write(&path, "{not json").unwrap();
        let e = Gates::load(Some(path.clone())).unwrap_err().to_string();
        assert!(e.contains("gates.json") && e.contains("fix or delete it"), "{e}");
        std::fs::write(&path, r#"{"version": 9, "gates": {}}"#).unwrap();
        let e = Gates::load(Some(path)).unwrap_err().to_string();
        assert!(e.contains("version 9"), "{e}");
    }

    #[tokio::test]
    async fn a_failed_write_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("gates.json");
        let gates = Gates::load(Some(path)).unwrap();
        let e = gates.set("a.b", true).await.unwrap_err();
        assert!(e.starts_with("cannot persist the gate state"), "{e}");
        assert!(!gates.is_open("a.b"));
    }
}
