//! Manual gates: open/closed flags per canary, optionally persisted in a state file so that they
//! survive a restart (Flagger keeps them in memory only, fluxcd/flagger#1554).
//!
//! A gate is identified by its kind (the rollout gate of `/gate/*` or the rollback gate of
//! `/rollback/*`), the canary's namespace and its name, kept apart: Flagger joins them into one
//! string (`<name>.<namespace>`, `rollback.<name>.<namespace>`), so that a canary named
//! `rollback.app` shares a key with the rollback gate of `app`, and `a.b`/`c` with `a`/`b.c`.
//! An unknown gate is closed, and only open gates are kept, at most [`MAX_OPEN_GATES`].
//!
//! Every change is written to the state file before it takes effect: a new temporary file in the
//! same directory (created exclusively, so an existing file or symlink at its name is never
//! followed or overwritten), fsynced, then renamed over the old one, so a crash leaves either the
//! old or the new state, never a torn file.
//!
//! The file is `{"version": 2, "open": [{"kind": "gate"|"rollback", "namespace", "name"}, …]}`.
//! Version 1 files (`{"version": 1, "gates": {"<key>": bool}}`) are still read: a key starting
//! with `rollback.` is a rollback gate, and the namespace is what follows the last dot (Kubernetes
//! namespaces have no dots), with version 1's ambiguity for canary names starting with
//! `rollback.`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The state file's format version.
const VERSION: u32 = 2;
/// Open gates kept at most: each is a few bytes of memory and of the state file, and opening one
/// needs no more than reaching the load tester.
pub const MAX_OPEN_GATES: usize = 10_000;
/// Temporary file names tried before giving up (each taken name is skipped, never reused).
const TEMP_ATTEMPTS: u32 = 100;

/// Which gate of a canary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum GateKind {
    /// `/gate/open`, `/gate/close`, `/gate/check`.
    Gate,
    /// `/rollback/open`, `/rollback/close`, `/rollback/check`.
    Rollback,
}

/// One gate: its kind and the canary it belongs to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct GateKey {
    pub(crate) kind: GateKind,
    pub(crate) namespace: String,
    pub(crate) name: String,
}

impl GateKey {
    pub(crate) fn new(kind: GateKind, namespace: &str, name: &str) -> Self {
        Self {
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    /// A version 1 key (`<name>.<namespace>` or `rollback.<name>.<namespace>`).
    fn from_v1(key: &str) -> Option<Self> {
        let (kind, rest) = match key.strip_prefix("rollback.") {
            Some(rest) => (GateKind::Rollback, rest),
            None => (GateKind::Gate, key),
        };
        let (name, namespace) = rest.rsplit_once('.')?;
        Some(Self::new(kind, namespace, name))
    }
}

#[derive(Serialize, Deserialize)]
struct StateFile {
    version: u32,
    open: Vec<GateKey>,
}

#[derive(Deserialize)]
struct VersionOnly {
    version: u32,
}

#[derive(Deserialize)]
struct StateFileV1 {
    gates: BTreeMap<String, bool>,
}

/// Why a gate could not be changed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SetError {
    /// [`MAX_OPEN_GATES`] gates are open already.
    Full,
    /// The state file could not be written; nothing changed.
    Persist(String),
}

/// The gates of one load tester.
#[derive(Debug)]
pub(crate) struct Gates {
    open: RwLock<BTreeSet<GateKey>>,
    file: Option<PathBuf>,
    /// Serialises writers so that the file always holds the last change.
    write: tokio::sync::Mutex<()>,
}

impl Gates {
    /// Loads the state file when there is one (a missing file is an empty state).
    pub(crate) fn load(file: Option<PathBuf>) -> Result<Self> {
        let open = match &file {
            Some(path) => read_state(path)?,
            None => BTreeSet::new(),
        };
        Ok(Self {
            open: RwLock::new(open),
            file,
            write: tokio::sync::Mutex::new(()),
        })
    }

    /// Whether the gate is open (unknown gates are closed).
    pub(crate) fn is_open(&self, key: &GateKey) -> bool {
        self.open.read().contains(key)
    }

    /// Opens or closes a gate, persisting first.
    pub(crate) async fn set(&self, key: &GateKey, open: bool) -> Result<(), SetError> {
        let _guard = self.write.lock().await;
        {
            let now = self.open.read();
            if now.contains(key) == open {
                return Ok(());
            }
            if open && now.len() >= MAX_OPEN_GATES {
                return Err(SetError::Full);
            }
        }
        if let Some(path) = self.file.clone() {
            let mut next = self.open.read().clone();
            if open {
                next.insert(key.clone());
            } else {
                next.remove(key);
            }
            let snapshot = StateFile {
                version: VERSION,
                open: next.into_iter().collect(),
            };
            let persist = |e: String| SetError::Persist(format!("cannot persist the gate state: {e}"));
            tokio::task::spawn_blocking(move || write_atomically(&path, &snapshot))
                .await
                .map_err(|e| persist(e.to_string()))?
                .map_err(|e| persist(e.to_string()))?;
        }
        let mut now = self.open.write();
        if open {
            now.insert(key.clone());
        } else {
            now.remove(key);
        }
        Ok(())
    }
}

fn read_state(path: &Path) -> Result<BTreeSet<GateKey>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(e) => {
            return Err(Error::State {
                path: path.to_path_buf(),
                message: format!("cannot read it: {e}"),
            });
        }
    };
    parse_state(&bytes).map_err(|message| Error::State {
        path: path.to_path_buf(),
        message,
    })
}

/// The open gates of a state file's bytes (version 1 or [`VERSION`]); the error says what to
/// do.
pub(crate) fn parse_state(bytes: &[u8]) -> Result<BTreeSet<GateKey>, String> {
    let broken = |e: serde_json::Error| format!("not a gate state file ({e}); fix or delete it");
    match serde_json::from_slice::<VersionOnly>(bytes)
        .map_err(broken)?
        .version
    {
        1 => {
            let v1: StateFileV1 = serde_json::from_slice(bytes).map_err(broken)?;
            Ok(v1
                .gates
                .iter()
                .filter(|(_, open)| **open)
                .filter_map(|(key, _)| GateKey::from_v1(key))
                .collect())
        }
        VERSION => {
            let state: StateFile = serde_json::from_slice(bytes).map_err(broken)?;
            Ok(state.open.into_iter().collect())
        }
        other => Err(format!(
            "version {other} is not supported (expected {VERSION}); delete the file"
        )),
    }
}

fn write_atomically(path: &Path, state: &StateFile) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("state");
    let mut bytes = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    let (tmp, mut f) = create_temp(dir, file_name)?;
    let result = (|| {
        f.write_all(&bytes)?;
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

/// A new file `.<name>.<pid>.<n>.tmp` in `dir`, created exclusively (`O_CREAT|O_EXCL`, plus
/// `O_NOFOLLOW`): a file or a symlink someone placed at that name is skipped, never written
/// through.
fn create_temp(dir: &Path, file_name: &str) -> std::io::Result<(PathBuf, std::fs::File)> {
    let pid = std::process::id();
    let mut last = None;
    for n in 0..TEMP_ATTEMPTS {
        let tmp = dir.join(format!(".{file_name}.{pid}.{n}.tmp"));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .mode(0o644)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no temporary file name is free")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(namespace: &str, name: &str) -> GateKey {
        GateKey::new(GateKind::Gate, namespace, name)
    }

    fn rollback(namespace: &str, name: &str) -> GateKey {
        GateKey::new(GateKind::Rollback, namespace, name)
    }

    #[tokio::test]
    async fn state_survives_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gates.json");
        let gates = Gates::load(Some(path.clone())).unwrap();
        assert!(!gates.is_open(&gate("test", "podinfo")));
        gates.set(&gate("test", "podinfo"), true).await.unwrap();
        gates.set(&rollback("test", "podinfo"), false).await.unwrap();
        assert!(gates.is_open(&gate("test", "podinfo")));

        let again = Gates::load(Some(path.clone())).unwrap();
        assert!(again.is_open(&gate("test", "podinfo")));
        assert!(!again.is_open(&rollback("test", "podinfo")));
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["gates.json"]);
    }

    /// Issue 15: a canary named `rollback.app` does not open the rollback gate of `app`, nor
    /// `a.b`/`c` the gate of `a`/`b.c`.
    #[tokio::test]
    async fn gate_keys_do_not_collide() {
        let gates = Gates::load(None).unwrap();
        gates.set(&gate("test", "rollback.app"), true).await.unwrap();
        assert!(!gates.is_open(&rollback("test", "app")));
        gates.set(&gate("c", "a.b"), true).await.unwrap();
        assert!(!gates.is_open(&gate("b.c", "a")));
        assert!(gates.is_open(&gate("c", "a.b")));
    }

    #[tokio::test]
    async fn version_1_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gates.json");
        std::fs::write(
            &path,
            r#"{"version": 1, "gates": {"podinfo.test": true, "rollback.podinfo.test": true,
                "closed.test": false, "web.v2.prod": true, "nodot": true}}"#,
        )
        .unwrap();
        let gates = Gates::load(Some(path.clone())).unwrap();
        assert!(gates.is_open(&gate("test", "podinfo")));
        assert!(gates.is_open(&rollback("test", "podinfo")));
        assert!(gates.is_open(&gate("prod", "web.v2")));
        assert!(!gates.is_open(&gate("test", "closed")));
        assert_eq!(gates.open.read().len(), 3);
        // The next write is version 2.
        gates.set(&gate("test", "podinfo"), false).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["version"], 2);
    }

    #[tokio::test]
    async fn open_gates_are_capped_and_closing_frees_room() {
        let gates = Gates::load(None).unwrap();
        for i in 0..MAX_OPEN_GATES {
            gates.set(&gate("test", &format!("c{i}")), true).await.unwrap();
        }
        assert_eq!(
            gates.set(&gate("test", "one-more"), true).await,
            Err(SetError::Full)
        );
        // Re-opening an open gate and closing unknown ones still work.
        gates.set(&gate("test", "c0"), true).await.unwrap();
        gates.set(&gate("test", "never-opened"), false).await.unwrap();
        gates.set(&gate("test", "c0"), false).await.unwrap();
        gates.set(&gate("test", "one-more"), true).await.unwrap();
    }

    /// Issue 15: a symlink planted at the temporary file's name is not followed: its target is
    /// untouched and the state is written anyway.
    #[tokio::test]
    async fn the_temporary_file_never_follows_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let pid = std::process::id();
        // The names this and earlier versions use.
        for name in [
            format!(".gates.json.{pid}.tmp"),
            format!(".gates.json.{pid}.0.tmp"),
            format!(".gates.json.{pid}.1.tmp"),
        ] {
            std::os::unix::fs::symlink(&victim, dir.path().join(name)).unwrap();
        }
        let path = dir.path().join("gates.json");
        let gates = Gates::load(Some(path.clone())).unwrap();
        gates.set(&gate("test", "podinfo"), true).await.unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert!(!std::fs::symlink_metadata(&path).unwrap().file_type().is_symlink());
        assert!(Gates::load(Some(path)).unwrap().is_open(&gate("test", "podinfo")));
    }

    #[tokio::test]
    async fn broken_files_are_reported_with_their_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gates.json");
        std::fs::write(&path, "{not json").unwrap();
        let e = Gates::load(Some(path.clone())).unwrap_err().to_string();
        assert!(e.contains("gates.json") && e.contains("fix or delete it"), "{e}");
        std::fs::write(&path, r#"{"version": 9, "open": []}"#).unwrap();
        let e = Gates::load(Some(path)).unwrap_err().to_string();
        assert!(e.contains("version 9"), "{e}");
    }

    #[tokio::test]
    async fn a_failed_write_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("gates.json");
        let gates = Gates::load(Some(path)).unwrap();
        let e = gates.set(&gate("b", "a"), true).await.unwrap_err();
        assert!(
            matches!(&e, SetError::Persist(m) if m.starts_with("cannot persist the gate state")),
            "{e:?}"
        );
        assert!(!gates.is_open(&gate("b", "a")));
    }
}
