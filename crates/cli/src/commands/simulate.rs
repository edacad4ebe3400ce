//! `aviary simulate`: the engine on simulated ports, with virtual time.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use aviary_api::document::{Resource, parse_documents};
use aviary_api::validate::{Severity, validate};
use aviary_core::simulate::{Script, ScriptedWorld, Simulator};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The Canary manifest (YAML; other kinds in the file are ignored), or `-` for stdin.
    #[arg(short = 'f', long = "filename", value_name = "CANARY.yaml")]
    file: PathBuf,

    /// The script: `metrics: {name: [values…]}`, `webhooks: {name: [pass|fail…]}`, `maxTicks`.
    #[arg(long, value_name = "SCRIPT.yaml")]
    script: Option<PathBuf>,

    /// The canary to simulate (`NAMESPACE/NAME`, or `NAME`) when the file has several.
    #[arg(long, value_name = "NS/NAME")]
    canary: Option<String>,

    /// Provider of a canary without spec.provider (the agent's --provider; Flagger's
    /// -mesh-provider).
    #[arg(long, value_name = "NAME", default_value = aviary_core::DEFAULT_PROVIDER)]
    provider: String,

    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Output {
    Text,
    Json,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let text = super::read_input(&args.file)?;
    let docs =
        parse_documents(&text).with_context(|| format!("{} is not readable YAML", args.file.display()))?;
    let mut canaries = Vec::new();
    for doc in docs {
        match doc {
            Ok(parsed) if matches!(parsed.resource, Resource::Canary(_)) => canaries.push(parsed),
            Ok(_) => {}
            Err(e) => {
                eprintln!("error: {}: {}: {}", e.id.key(), e.path, e.message);
                return Ok(ExitCode::from(1));
            }
        }
    }
    let parsed = pick(canaries, args.canary.as_deref(), &args.file)?;
    let report = validate(&parsed);
    for d in &report.diagnostics {
        eprintln!("{}: {}", d.severity, report.line(d));
    }
    if report.diagnostics.iter().any(|d| d.severity == Severity::Error) {
        return Ok(ExitCode::from(1));
    }
    let Resource::Canary(canary) = parsed.resource else {
        unreachable!("filtered above")
    };

    let script = match &args.script {
        Some(p) => {
            let text = super::read_input(p)?;
            Script::from_yaml(&text).with_context(|| format!("{}", p.display()))?
        }
        None => Script::default(),
    };
    // A misspelt name in the script would silently simulate a healthy metric or webhook.
    let analysis = canary.analysis();
    let metrics = names(&analysis.metrics, |m| m.name.as_deref());
    let webhooks = names(&analysis.webhooks, |w| w.name.as_deref());
    let mut unknown = Vec::new();
    for (what, names, known) in [
        ("metric", script.metrics.keys().collect::<Vec<_>>(), &metrics),
        ("webhook", script.webhooks.keys().collect::<Vec<_>>(), &webhooks),
    ] {
        for name in names {
            if !known.contains(&name.as_str()) {
                unknown.push(format!(
                    "the script's {what} {name:?} is not a {what} of canary {}{}; its {what}s are {known:?}",
                    canary.key(),
                    aviary_api::suggest::did_you_mean(name, known.iter().copied()),
                ));
            }
        }
    }
    if !unknown.is_empty() {
        anyhow::bail!("{}", unknown.join("\n"));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let world = ScriptedWorld::default();
    let mut simulator = Simulator::new(*canary, &world);
    simulator.config.default_provider = args.provider;
    let report = rt.block_on(simulator.run(&world, &script));
    match args.output {
        Output::Text => super::out(report.to_text().trim_end()),
        Output::Json => super::out(serde_json::to_string_pretty(&report)?),
    }
    Ok(ExitCode::SUCCESS)
}

/// The canary to simulate: the only one, or the one `--canary` names (`NS/NAME` or `NAME`).
fn pick(
    mut canaries: Vec<aviary_api::document::Parsed>,
    wanted: Option<&str>,
    file: &std::path::Path,
) -> anyhow::Result<aviary_api::document::Parsed> {
    let key = |p: &aviary_api::document::Parsed| match &p.resource {
        Resource::Canary(c) => c.key(),
        _ => String::new(),
    };
    let keys: Vec<String> = canaries.iter().map(key).collect();
    match (wanted, canaries.len()) {
        (_, 0) => anyhow::bail!("{}: no flagger.app/v1beta1 Canary found", file.display()),
        (None, 1) => Ok(canaries.remove(0)),
        (None, n) => anyhow::bail!(
            "{}: {n} Canaries found ({}); pick one with --canary NS/NAME",
            file.display(),
            keys.join(", ")
        ),
        (Some(w), _) => {
            let found = keys
                .iter()
                .position(|k| k == w || k.rsplit_once('/').is_some_and(|(_, name)| name == w));
            match found {
                Some(i) => Ok(canaries.swap_remove(i)),
                None => anyhow::bail!(
                    "--canary {w}: {} has no such Canary{}; it has {}",
                    file.display(),
                    aviary_api::suggest::did_you_mean(w, keys.iter().map(String::as_str)),
                    keys.join(", ")
                ),
            }
        }
    }
}

/// The names of those `items` that have one.
fn names<'a, T>(items: &'a Option<Vec<T>>, name: impl Fn(&'a T) -> Option<&'a str>) -> Vec<&'a str> {
    items.iter().flatten().filter_map(name).collect()
}
