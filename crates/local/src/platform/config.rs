//! The local platform's configuration: multi-document YAML files holding LocalServices and
//! ordinary Flagger resources (Canary with `provider: local`, MetricTemplate, AlertProvider).
//! Invalid resources are reported and skipped; the others run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use aviary_api::document::{Resource, parse_documents};
use aviary_api::local::LOCAL_API_VERSION;
use aviary_api::validate::{Report, Severity, document_error_report, validate};
use aviary_api::{AlertProvider, Canary, LocalService, MetricTemplate};

/// One invalid resource and why.
#[derive(Debug, Clone)]
pub struct Invalid {
    pub kind: String,
    pub key: String,
    /// The canary as written, when it parsed (shown in `/canaries` with a condition).
    pub canary: Option<Box<Canary>>,
    pub report: Report,
}

/// Everything the files hold.
#[derive(Debug, Clone, Default)]
pub struct LoadedConfig {
    pub services: BTreeMap<String, LocalService>,
    pub canaries: BTreeMap<String, Canary>,
    pub templates: Vec<MetricTemplate>,
    pub alert_providers: Vec<AlertProvider>,
    pub invalid: Vec<Invalid>,
    /// Files that could not be read at all (not YAML, unreadable).
    pub unreadable: Vec<String>,
}

/// A cheap fingerprint of the files (paths, sizes, modification times) to notice edits.
pub type Stamp = Vec<(PathBuf, u64, Option<SystemTime>)>;

/// The [`Stamp`] of the files under `path`.
pub fn stamp(path: &Path) -> Stamp {
    files(path)
        .into_iter()
        .map(|p| {
            let meta = std::fs::metadata(&p).ok();
            let len = meta.as_ref().map(|m| m.len()).unwrap_or(0);
            let modified = meta.and_then(|m| m.modified().ok());
            (p, len, modified)
        })
        .collect()
}

fn files(path: &Path) -> Vec<PathBuf> {
    if path.is_dir() {
        let mut out = Vec::new();
        let mut stack = vec![path.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                    out.push(p);
                }
            }
        }
        out.sort();
        out
    } else {
        vec![path.to_path_buf()]
    }
}

/// Reads and validates every resource under `path`.
pub fn load(path: &Path) -> LoadedConfig {
    let mut cfg = LoadedConfig::default();
    for file in files(path) {
        let label = file.display().to_string();
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => {
                cfg.unreadable.push(format!("{label}: {e}"));
                continue;
            }
        };
        let docs = match parse_documents(&text) {
            Ok(d) => d,
            Err(e) => {
                cfg.unreadable.push(format!("{label}: {e}"));
                continue;
            }
        };
        for doc in docs {
            let parsed = match doc {
                Ok(p) => p,
                Err(e) => {
                    let report = document_error_report(&e);
                    cfg.invalid.push(Invalid {
                        kind: e.id.kind.clone(),
                        key: e.id.key(),
                        canary: None,
                        report,
                    });
                    continue;
                }
            };
            let report = validate(&parsed);
            let errors = report.diagnostics.iter().any(|d| d.severity == Severity::Error);
            for d in report
                .diagnostics
                .iter()
                .filter(|d| d.severity == Severity::Warning)
            {
                tracing::warn!("{label}: {} {}", parsed.id.kind, report.line(d));
            }
            let key = parsed.id.key();
            match parsed.resource {
                Resource::Canary(c) if errors => cfg.invalid.push(Invalid {
                    kind: "Canary".into(),
                    key,
                    canary: Some(c),
                    report,
                }),
                Resource::Canary(c) => {
                    cfg.canaries.insert(key, *c);
                }
                Resource::LocalService(s) if !errors => {
                    cfg.services.insert(key, *s);
                }
                Resource::MetricTemplate(t) if !errors => cfg.templates.push(*t),
                Resource::AlertProvider(a) if !errors => cfg.alert_providers.push(*a),
                Resource::Other(_) | Resource::FleetRollout(_) => {}
                _ => cfg.invalid.push(Invalid {
                    kind: parsed.id.kind.clone(),
                    key,
                    canary: None,
                    report,
                }),
            }
        }
    }
    check_targets(&mut cfg);
    cfg
}

/// A local canary must target a LocalService of this config in its namespace.
fn check_targets(cfg: &mut LoadedConfig) {
    let keys: Vec<String> = cfg.canaries.keys().cloned().collect();
    for key in keys {
        let c = &cfg.canaries[&key];
        let t = c.spec.target_ref.clone().unwrap_or_default();
        let problem = if t.kind.as_deref() != Some("LocalService")
            || t.api_version.as_deref() != Some(LOCAL_API_VERSION)
        {
            Some((
                "spec.targetRef",
                format!(
                    "the local platform runs canaries of LocalServices ({LOCAL_API_VERSION}, kind LocalService); got {}/{}",
                    t.api_version.unwrap_or_default(),
                    t.kind.unwrap_or_default()
                ),
            ))
        } else {
            let target = format!("{}/{}", c.namespace(), c.target_name());
            (!cfg.services.contains_key(&target)).then(|| {
                (
                    "spec.targetRef.name",
                    format!("LocalService {target} is not defined (or is invalid) in the agent's config"),
                )
            })
        };
        if let Some((path, message)) = problem {
            let c = cfg.canaries.remove(&key).expect("key from the map");
            let id = aviary_api::document::ObjectId {
                api_version: "flagger.app/v1beta1".into(),
                kind: "Canary".into(),
                namespace: c.metadata.namespace.clone(),
                name: c.name().into(),
            };
            let report = Report {
                id,
                diagnostics: vec![aviary_api::validate::Diagnostic {
                    severity: Severity::Error,
                    path: path.into(),
                    message,
                }],
            };
            cfg.invalid.push(Invalid {
                kind: "Canary".into(),
                key,
                canary: Some(Box::new(c)),
                report,
            });
        }
    }
}
