//! The engine's terms in the local platform's: what makes a new revision of a LocalService (its
//! fingerprint), and the engine's split as the local router's routes.

use std::time::Duration;

use aviary_api::local::LocalServiceSpec;
use aviary_api::{Canary, Strategy};
use aviary_core::fingerprint::fingerprint;
use aviary_core::ports::Routes;

use crate::router as lrouter;

/// What makes a new revision of a LocalService: everything but the replica count.
pub(super) fn revision_of(spec: &LocalServiceSpec) -> String {
    fingerprint(&serde_json::json!({
        "version": spec.version,
        "command": spec.command,
        "env": spec.env,
        "readinessPath": spec.readiness_path,
    }))
}

/// `name=value` → value.
fn cookie_value(cookie: &str) -> String {
    cookie
        .split_once('=')
        .map(|(_, v)| v.to_string())
        .unwrap_or_default()
}

fn to_local_match(m: &aviary_api::service::StringMatch) -> Option<lrouter::StringMatch> {
    if let Some(v) = &m.exact {
        return Some(lrouter::StringMatch::Exact(v.clone()));
    }
    if let Some(v) = &m.prefix {
        return Some(lrouter::StringMatch::Prefix(v.clone()));
    }
    if let Some(v) = &m.suffix {
        return Some(lrouter::StringMatch::Suffix(v.clone()));
    }
    m.regex.as_ref().map(|v| lrouter::StringMatch::Regex(v.clone()))
}

/// Translates the engine's split into the local router's routes for this canary.
pub(super) fn local_routes(canary: &Canary, routes: &Routes, interval: Duration) -> lrouter::Routes {
    let a = canary.analysis();
    let mut out = lrouter::Routes::weighted(routes.primary.max(0) as u32, routes.canary.max(0) as u32);
    if canary.strategy() == Strategy::AbTesting {
        out.matches = a
            .match_
            .iter()
            .flatten()
            .map(|m| lrouter::MatchRule {
                headers: m
                    .headers
                    .iter()
                    .flatten()
                    .filter_map(|(name, sm)| {
                        to_local_match(sm).map(|value| lrouter::HeaderMatch {
                            name: name.clone(),
                            value,
                        })
                    })
                    .collect(),
            })
            .collect();
    }
    out.mirror = routes.mirror;
    out.mirror_weight = a.mirror_weight.map(|w| w.clamp(0, 100) as u32);
    if let (Some(sa), Some(cookies)) = (&a.session_affinity, &routes.session) {
        let current = cookies.canary.as_deref().or(cookies.previous.as_deref());
        if let Some(current) = current {
            let mut s = lrouter::SessionAffinity::new(sa.cookie_name.clone().unwrap_or_default());
            s.cookie_value = cookie_value(current);
            s.max_age = sa.max_age.unwrap_or(86400).max(0) as u64;
            if let (Some(name), Some(primary)) = (&sa.primary_cookie_name, &cookies.primary) {
                s.primary_cookie_name = Some(name.clone());
                s.primary_cookie_value = cookie_value(primary);
                s.primary_max_age = interval.as_secs().max(1);
            }
            s.domain = sa.domain.clone();
            s.path = sa.path.clone();
            s.secure = sa.secure.unwrap_or(false);
            s.http_only = sa.http_only.unwrap_or(false);
            s.partitioned = sa.partitioned.unwrap_or(false);
            s.same_site = match sa.same_site.as_deref() {
                Some("Strict") => Some(lrouter::SameSite::Strict),
                Some("Lax") => Some(lrouter::SameSite::Lax),
                Some("None") => Some(lrouter::SameSite::None),
                _ => None,
            };
            out.session_affinity = Some(s);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_ignore_replicas() {
        let a = LocalServiceSpec {
            version: Some("6.0.0".into()),
            replicas: Some(1),
            ..Default::default()
        };
        let b = LocalServiceSpec {
            replicas: Some(3),
            ..a.clone()
        };
        let c = LocalServiceSpec {
            version: Some("6.0.1".into()),
            ..a.clone()
        };
        assert_eq!(revision_of(&a), revision_of(&b));
        assert_ne!(revision_of(&a), revision_of(&c));
    }
}
