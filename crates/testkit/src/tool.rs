//! Running the real command-line tools the tests drive (kubectl, helm) against a test cluster:
//! each [`Tool`] has a HOME of its own (no user configuration or cache leaks in or out) and
//! `KUBECONFIG` pointing at the cluster; calls are bounded in time.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;

/// How long one call may take.
const CALL_LIMIT: Duration = Duration::from_secs(180);

/// A program on `PATH` (or named by the environment variable `env`), or `None` after printing a
/// skip notice; with `CI=true` a missing program fails the test. `needed_by` says which tests
/// need it and `install` how to get it.
pub fn find(name: &str, env: &str, needed_by: &str, install: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p));
    }
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        skip_or_fail(&format!(
            "{name} not found on PATH; {needed_by} need it ({install}, or set {env}=/path/to/{name})"
        ));
    }
    found
}

/// Fails the test when `CI=true` (a missing tool is an error there); prints a skip notice
/// otherwise.
pub fn skip_or_fail(why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{why} (CI=true: a missing test tool is an error)");
    }
    // Straight to stderr: the test harness would swallow eprintln! of a passing test.
    let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
}

/// One command-line tool with its own HOME and a kubeconfig.
pub struct Tool {
    bin: PathBuf,
    kubeconfig: Option<PathBuf>,
    home: tempfile::TempDir,
}

impl Tool {
    /// `bin`, talking to the cluster of `kubeconfig` (none: the tool's own default).
    pub fn new(bin: impl Into<PathBuf>, kubeconfig: Option<&Path>) -> Self {
        Self {
            bin: bin.into(),
            kubeconfig: kubeconfig.map(Path::to_path_buf),
            home: tempfile::tempdir().expect("a temporary HOME"),
        }
    }

    /// The tool's HOME (scratch space for files a test hands it).
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// Runs the tool with `args` (and `stdin`), whatever its exit status.
    pub async fn output(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let home = self.home.path();
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.args(args)
            .env("HOME", home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_CACHE_HOME", home.join(".cache"))
            .env("XDG_DATA_HOME", home.join(".local/share"))
            .stdin(crate::process::input(stdin.is_some()))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        match &self.kubeconfig {
            Some(k) => cmd.env("KUBECONFIG", k),
            None => cmd.env_remove("KUBECONFIG"),
        };
        let name = self.bin.display();
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
        if let Some(data) = stdin {
            let mut input = child.stdin.take().expect("piped stdin");
            input.write_all(data).await.expect("writing stdin");
            drop(input);
        }
        tokio::time::timeout(CALL_LIMIT, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("{name} {args:?} did not finish in {CALL_LIMIT:?}"))
            .unwrap_or_else(|e| panic!("{name} {args:?}: {e}"))
    }

    /// Runs the tool and returns (stdout, stderr); the test fails with both when it fails.
    pub async fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> (String, String) {
        let out = self.output(args, stdin).await;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "{} {args:?} failed ({}):\n{stdout}\n{stderr}",
            self.bin.display(),
            out.status
        );
        (stdout, stderr)
    }
}
