//! `docs/cli.md`, generated from the clap definition (`aviary cli-reference`, hidden): every
//! command with its usage, arguments and flags, and the exit codes. A test keeps the committed
//! page from drifting.

use std::fmt::Write as _;

use clap::{Arg, Command};

const HEADER: &str = "# aviary command-line reference

Generated from the command definitions by `aviary cli-reference > docs/cli.md` (a test fails when
this page and the binary differ). `aviary COMMAND --help` prints the same text.

## Exit codes

| Code | Meaning |
| --- | --- |
| 0 | Success (`rollout wait`/`watch`: the rollout Succeeded; `validate`: no errors) |
| 1 | The rollout Failed or was Aborted (`rollout wait`, `rollout watch`); `validate`: a resource has errors; `simulate`: an invalid canary |
| 2 | An error: bad flags or input, a request the coordinator refused, a `rollout wait --timeout` that expired, no input to `validate` |
| 3 | The coordinator could not be reached (nothing answers at the URL, within about 2 s), the address is not aviary's gRPC port, or the connection was lost during `rollout watch`/`wait` |
";

/// The whole page.
pub(crate) fn markdown(root: &Command) -> String {
    let mut out = String::from(HEADER);
    let mut root = root.clone();
    root.build();
    section(&mut out, &root, "aviary");
    out
}

fn section(out: &mut String, cmd: &Command, path: &str) {
    if cmd.is_hide_set() {
        return;
    }
    let _ = writeln!(out, "\n## `{path}`\n");
    if let Some(about) = cmd.get_long_about().or(cmd.get_about()) {
        let _ = writeln!(out, "{}\n", about.to_string().trim());
    }
    let mut usage = cmd.clone().render_usage().to_string();
    usage = usage.trim_start_matches("Usage: ").to_string();
    let _ = writeln!(out, "```\n{}\n```", usage.trim());
    let args: Vec<&Arg> = cmd
        .get_arguments()
        .filter(|a| !a.is_hide_set() && !matches!(a.get_id().as_str(), "help" | "version"))
        .collect();
    if !args.is_empty() {
        out.push('\n');
        for a in args {
            let _ = writeln!(out, "- {}", describe(a));
        }
    }
    for sub in cmd.get_subcommands() {
        if sub.get_name() != "help" {
            section(out, sub, &format!("{path} {}", sub.get_name()));
        }
    }
}

/// `` `--flag <VALUE>` ``, `-f`: help [default: …] [env: …] [values: …].
fn describe(a: &Arg) -> String {
    let value = a
        .get_value_names()
        .map(|v| v.iter().map(|n| format!("<{n}>")).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| format!("<{}>", a.get_id().as_str().to_uppercase()));
    let takes_value = a.get_num_args().is_some_and(|n| n.takes_values());
    let mut names = Vec::new();
    if let Some(l) = a.get_long() {
        names.push(if takes_value {
            format!("`--{l} {value}`")
        } else {
            format!("`--{l}`")
        });
    }
    if let Some(s) = a.get_short() {
        names.push(format!("`-{s}`"));
    }
    if names.is_empty() {
        names.push(format!("`{value}`"));
    }
    let mut text = a
        .get_long_help()
        .or(a.get_help())
        .map(|h| h.to_string().replace('\n', " "))
        .unwrap_or_default();
    let defaults: Vec<String> = a
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    if takes_value && defaults.iter().any(|d| !d.is_empty()) {
        let _ = write!(text, " [default: {}]", defaults.join(", "));
    }
    if let Some(env) = a.get_env() {
        let _ = write!(text, " [env: {}]", env.to_string_lossy());
    }
    let values: Vec<String> = a
        .get_possible_values()
        .iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| v.get_name().to_string())
        .collect();
    if !values.is_empty() && takes_value {
        let _ = write!(text, " [values: {}]", values.join(", "));
    }
    if a.is_global_set() {
        text.push_str(" (global)");
    }
    format!("{}: {}", names.join(", "), text.trim())
}
