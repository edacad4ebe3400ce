//! Secret sources for platforms without Kubernetes Secrets (the local platform, tests).
//!
//! Provider credentials are read through the engine's
//! [`aviary_core::ports::SecretSource`] port: the kube platform reads Kubernetes
//! Secrets, the local platform one of these:
//!
//! - [`FileSecrets`]: a directory tree `<root>/<namespace>/<name>/<key>`; each file holds one
//!   value (the layout of a mounted Secret, one directory per Secret). One trailing newline
//!   (`\n` or `\r\n`) is removed, because editors add one; hidden files (`.…`, such as the
//!   `..data` links of a mounted Secret) are skipped.
//! - [`EnvSecrets`]: environment variables `AVIARY_SECRET_<NAMESPACE>_<NAME>_<KEY>`, where the
//!   namespace and the name are upper-cased with `-` and `.` written as `_`, and the key is the
//!   rest of the variable name, lower-cased. `AVIARY_SECRET_TEST_DATADOG_DATADOG_API_KEY=…` is the
//!   key `datadog_api_key` of the Secret `test/datadog`. Keys with upper-case letters, `-` or `.`
//!   cannot be written this way (use files), and two Secrets whose encoded names share a prefix
//!   (`a`/`b` and `a`/`b-c`) would mix: give them distinct names.
//! - [`StaticSecrets`]: an in-memory map (configuration files, tests).
//! - [`SecretChain`]: the first source that has the Secret wins (e.g. files, then environment).
//!
//! Error texts name the Secret and where it was looked for, never a value.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use aviary_core::ports::SecretSource;

use crate::sources::{ByName, key};

/// Secret data: key → bytes.
pub type SecretData = BTreeMap<String, Vec<u8>>;

/// Secrets as files: `<root>/<namespace>/<name>/<key>`.
#[derive(Debug, Clone)]
pub struct FileSecrets {
    root: PathBuf,
}

impl FileSecrets {
    /// Reads Secrets below `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory of one Secret.
    pub fn dir(&self, namespace: &str, name: &str) -> PathBuf {
        self.root.join(namespace).join(name)
    }
}

fn plain_segment(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains(['/', '\\', '\0'])
}

fn read_dir_secret(dir: &Path) -> std::io::Result<SecretData> {
    let mut data = SecretData::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(key) = entry.file_name().into_string() else {
            continue;
        };
        if key.starts_with('.') {
            continue;
        }
        // `metadata` follows symlinks, as a mounted Secret's keys are links into `..data`.
        let path = entry.path();
        if !std::fs::metadata(&path)?.is_file() {
            continue;
        }
        let mut value = std::fs::read(&path)?;
        if value.ends_with(b"\n") {
            value.pop();
            if value.ends_with(b"\r") {
                value.pop();
            }
        }
        data.insert(key, value);
    }
    Ok(data)
}

#[async_trait]
impl SecretSource for FileSecrets {
    async fn secret(&self, namespace: &str, name: &str) -> Result<SecretData, String> {
        if !plain_segment(namespace) || !plain_segment(name) {
            return Err(format!("secret {namespace}/{name}: not a valid namespace/name"));
        }
        let dir = self.dir(namespace, name);
        let shown = dir.display().to_string();
        let result = tokio::task::spawn_blocking(move || read_dir_secret(&dir))
            .await
            .map_err(|e| format!("secret {namespace}/{name}: reading {shown} failed: {e}"))?;
        match result {
            Ok(data) => Ok(data),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!(
                "secret {namespace}/{name} not found: create the directory {shown} with one file per key"
            )),
            Err(e) => Err(format!("secret {namespace}/{name}: cannot read {shown}: {e}")),
        }
    }
}

/// Secrets from environment variables `AVIARY_SECRET_<NAMESPACE>_<NAME>_<KEY>` (see the module
/// documentation for the encoding). The variables are read once, when the source is built.
/// `Debug` shows variable names, never values.
#[derive(Clone, Default)]
pub struct EnvSecrets {
    vars: BTreeMap<String, String>,
}

impl std::fmt::Debug for EnvSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvSecrets")
            .field("vars", &self.vars.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The prefix of every secret variable.
pub const ENV_PREFIX: &str = "AVIARY_SECRET_";

impl EnvSecrets {
    /// Snapshot of this process' environment.
    pub fn from_env() -> Self {
        Self::from_vars(std::env::vars())
    }

    /// From explicit `(name, value)` pairs (tests, or an env file already parsed).
    pub fn from_vars<I, K, V>(vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let vars = vars
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        Self { vars }
    }

    /// The variable-name prefix of one Secret's keys: `AVIARY_SECRET_<NS>_<NAME>_`.
    pub fn prefix(namespace: &str, name: &str) -> String {
        format!("{ENV_PREFIX}{}_{}_", encode(namespace), encode(name))
    }

    /// The variable name of one key.
    pub fn var_name(namespace: &str, name: &str, key: &str) -> String {
        format!("{}{}", Self::prefix(namespace, name), key.to_ascii_uppercase())
    }
}

fn encode(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '-' | '.' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect()
}

#[async_trait]
impl SecretSource for EnvSecrets {
    async fn secret(&self, namespace: &str, name: &str) -> Result<SecretData, String> {
        let prefix = Self::prefix(namespace, name);
        let data: SecretData = self
            .vars
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(k, _)| k.len() > prefix.len())
            .map(|(k, v)| (k[prefix.len()..].to_ascii_lowercase(), v.clone().into_bytes()))
            .collect();
        if data.is_empty() {
            return Err(format!(
                "secret {namespace}/{name} not found: set environment variables {prefix}<KEY>"
            ));
        }
        Ok(data)
    }
}

/// Secrets held in memory. `Debug` shows which Secrets exist, never their data.
#[derive(Debug, Clone, Default)]
pub struct StaticSecrets {
    secrets: ByName<SecretData>,
}

impl StaticSecrets {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a Secret from string values.
    pub fn insert<K, V>(&self, namespace: &str, name: &str, data: impl IntoIterator<Item = (K, V)>)
    where
        K: Into<String>,
        V: Into<Vec<u8>>,
    {
        let data = data.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        self.secrets.insert(key(namespace, name), data);
    }

    /// Removes a Secret.
    pub fn remove(&self, namespace: &str, name: &str) {
        self.secrets.remove(namespace, name);
    }
}

#[async_trait]
impl SecretSource for StaticSecrets {
    async fn secret(&self, namespace: &str, name: &str) -> Result<SecretData, String> {
        let missing = || format!("secret {namespace}/{name} not found");
        self.secrets.require(namespace, name, missing)
    }
}

/// Several sources in order: the first that has the Secret answers. When none has it, the error
/// lists every source's answer.
#[derive(Clone, Default)]
pub struct SecretChain {
    sources: Vec<Arc<dyn SecretSource>>,
}

impl SecretChain {
    /// A chain of `sources`, tried in order.
    pub fn new(sources: Vec<Arc<dyn SecretSource>>) -> Self {
        Self { sources }
    }
}

impl std::fmt::Debug for SecretChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretChain")
            .field("sources", &self.sources.len())
            .finish()
    }
}

#[async_trait]
impl SecretSource for SecretChain {
    async fn secret(&self, namespace: &str, name: &str) -> Result<SecretData, String> {
        let mut errors = Vec::new();
        for source in &self.sources {
            match source.secret(namespace, name).await {
                Ok(data) => return Ok(data),
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            return Err(format!(
                "secret {namespace}/{name} not found: no secret source is configured"
            ));
        }
        Err(errors.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn files_follow_the_namespace_name_key_layout() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("test").join("prom-auth");
        std::fs::create_dir_all(&secret).unwrap();
        std::fs::write(secret.join("token"), "s3cr3t\n").unwrap();
        std::fs::write(secret.join("username"), "admin\r\n").unwrap();
        std::fs::write(secret.join("binary"), [0u8, 1, 2, b'\n', b'\n']).unwrap();
        std::fs::write(secret.join(".hidden"), "x").unwrap();
        std::fs::create_dir(secret.join("subdir")).unwrap();

        let files = FileSecrets::new(dir.path());
        let data = files.secret("test", "prom-auth").await.unwrap();
        assert_eq!(data.keys().collect::<Vec<_>>(), ["binary", "token", "username"]);
        assert_eq!(data["token"], b"s3cr3t");
        assert_eq!(data["username"], b"admin");
        // Only one trailing newline goes.
        assert_eq!(data["binary"], [0u8, 1, 2, b'\n']);

        let err = files.secret("test", "missing").await.unwrap_err();
        assert!(err.contains("secret test/missing not found"), "{err}");
        assert!(err.contains("create the directory"), "{err}");
        let err = files.secret("..", "etc").await.unwrap_err();
        assert!(err.contains("not a valid namespace/name"), "{err}");
    }

    #[tokio::test]
    async fn env_variables_encode_namespace_name_and_key() {
        let env = EnvSecrets::from_vars([
            ("AVIARY_SECRET_TEST_DATADOG_DATADOG_API_KEY", "api"),
            ("AVIARY_SECRET_TEST_DATADOG_DATADOG_APPLICATION_KEY", "app"),
            ("AVIARY_SECRET_MY_NS_PROM_AUTH_TOKEN", "tok"),
            ("AVIARY_SECRET_TEST_DATADOGX_TOKEN", "other"),
            ("PATH", "/usr/bin"),
        ]);
        let data = env.secret("test", "datadog").await.unwrap();
        assert_eq!(data.len(), 2);
        assert_eq!(data["datadog_api_key"], b"api");
        assert_eq!(data["datadog_application_key"], b"app");
        let data = env.secret("my-ns", "prom.auth").await.unwrap();
        assert_eq!(data["token"], b"tok");
        assert_eq!(
            EnvSecrets::var_name("my-ns", "prom.auth", "token"),
            "AVIARY_SECRET_MY_NS_PROM_AUTH_TOKEN"
        );
        assert!(!format!("{env:?}").contains("api"), "Debug shows no values");
        let err = env.secret("test", "nope").await.unwrap_err();
        assert!(err.contains("AVIARY_SECRET_TEST_NOPE_<KEY>"), "{err}");
    }

    #[tokio::test]
    async fn a_chain_answers_with_the_first_source_that_has_the_secret() {
        let a = StaticSecrets::new();
        let b = StaticSecrets::new();
        b.insert("ns", "s", [("token", "from-b")]);
        a.insert("ns", "t", [("token", "from-a")]);
        let chain = SecretChain::new(vec![Arc::new(a.clone()), Arc::new(b)]);
        assert_eq!(chain.secret("ns", "s").await.unwrap()["token"], b"from-b");
        assert_eq!(chain.secret("ns", "t").await.unwrap()["token"], b"from-a");
        assert_eq!(
            format!("{a:?}"),
            r#"StaticSecrets { secrets: ["ns/t"] }"#,
            "names, no data"
        );
        a.remove("ns", "t");
        let err = chain.secret("ns", "t").await.unwrap_err();
        assert_eq!(err, "secret ns/t not found; secret ns/t not found");
    }
}
