//! `aviary validate`: read manifests, validate every resource, print one line per finding.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use aviary_api::document::{Resource, parse_documents};
use aviary_api::validate::{Severity, document_error_report, validate};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// A file, a directory (searched recursively for *.yaml and *.yml) or `-` for stdin.
    #[arg(short = 'f', long = "filename", value_name = "PATH|-", required = true)]
    paths: Vec<PathBuf>,

    /// Do not print resources that are ok or skipped.
    #[arg(short, long)]
    quiet: bool,
}

/// Totals over every input.
#[derive(Default)]
struct Summary {
    resources: usize,
    errors: usize,
    warnings: usize,
    skipped: usize,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut inputs = Vec::new();
    for p in &args.paths {
        collect(p, &mut inputs)?;
    }
    let mut summary = Summary::default();
    let mut unreadable = false;
    for input in inputs {
        let (label, text) = match read(&input) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {e:#}");
                unreadable = true;
                continue;
            }
        };
        match parse_documents(&text) {
            Err(e) => {
                eprintln!("error: {label}: {e}");
                unreadable = true;
            }
            Ok(docs) => {
                for doc in docs {
                    report_document(&label, doc, &args, &mut summary);
                }
            }
        }
    }
    if !unreadable && summary.resources == 0 && summary.skipped == 0 {
        let names: Vec<String> = args.paths.iter().map(|p| p.display().to_string()).collect();
        eprintln!(
            "error: no resources in {}: give YAML files (*.yaml, *.yml), a directory of them or - for stdin",
            names.join(", ")
        );
        return Ok(ExitCode::from(2));
    }
    let plural = |n: usize, word: &str| {
        if n == 1 {
            format!("{n} {word}")
        } else {
            format!("{n} {word}s")
        }
    };
    super::out(format_args!(
        "{}: {} with errors, {}, {} skipped",
        plural(summary.resources, "resource"),
        summary.errors,
        plural(summary.warnings, "warning"),
        summary.skipped
    ));
    Ok(if unreadable {
        ExitCode::from(2)
    } else if summary.errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn report_document(
    label: &str,
    doc: Result<aviary_api::document::Parsed, aviary_api::document::DocumentError>,
    args: &Args,
    summary: &mut Summary,
) {
    let report = match doc {
        Ok(parsed) if matches!(parsed.resource, Resource::Other(_)) => {
            summary.skipped += 1;
            if !args.quiet {
                let kind = if parsed.id.api_version.contains('/') {
                    format!(
                        "{}.{}",
                        parsed.id.kind,
                        parsed.id.api_version.split('/').next().unwrap_or("")
                    )
                } else {
                    parsed.id.kind.clone()
                };
                super::out(format_args!("skipped  {kind} {}  ({label})", parsed.id.key()));
            }
            return;
        }
        Ok(parsed) => validate(&parsed),
        Err(e) => document_error_report(&e),
    };
    summary.resources += 1;
    let kind = if report.id.kind.is_empty() {
        "object"
    } else {
        report.id.kind.as_str()
    };
    if report.has_errors() {
        summary.errors += 1;
    }
    if report.diagnostics.is_empty() {
        if !args.quiet {
            super::out(format_args!("ok       {kind} {}  ({label})", report.id.key()));
        }
        return;
    }
    for d in &report.diagnostics {
        if d.severity == Severity::Warning {
            summary.warnings += 1;
        }
        super::out(format_args!(
            "{:<8} {kind} {}  ({label})",
            d.severity.to_string(),
            report.line(d)
        ));
    }
}

/// Expands directories into their YAML files, in a stable order.
fn collect(path: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    if path.as_os_str() == "-" {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !meta.is_dir() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("cannot list {}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for e in entries {
        if e.is_dir() {
            collect(&e, out)?;
        } else if e.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(e);
        }
    }
    Ok(())
}

fn read(path: &Path) -> anyhow::Result<(String, String)> {
    if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("cannot read stdin")?;
        let text = String::from_utf8(buf).context("stdin is not UTF-8 text")?;
        return Ok(("stdin".into(), text));
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    match String::from_utf8(bytes) {
        Ok(t) => Ok((path.display().to_string(), t)),
        Err(_) => bail!("{}: not a text file (not UTF-8)", path.display()),
    }
}
