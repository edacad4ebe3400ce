//! Limits on what a client or an agent may send: every field the coordinator keeps in memory
//! or writes to the store has a bound, and agent reports are checked before they reach the
//! fleet view (weights 0–100, counts ≥ 0, finite percentages, DNS-label names). A message that
//! breaks a limit is refused with the field path and the limit, never stored.

use aviary_api::validate::{is_dns_label, is_image, is_version};
use aviary_proto::v1;

/// Canaries one cluster may report.
pub const MAX_CANARIES_PER_CLUSTER: usize = 10_000;
/// Metric values in one canary report.
pub const MAX_METRICS: usize = 64;
/// Labels of a cluster.
pub const MAX_LABELS: usize = 64;
/// Free text kept from an agent (a canary's message, an event, an ack): longer is cut.
pub const MAX_MESSAGE: usize = 4096;
/// A request's `actor`.
pub const MAX_ACTOR: usize = 256;
/// A verb's `reason`.
pub const MAX_REASON: usize = 1024;
/// Short identifiers (fingerprints, phases, kinds, metric names, command ids).
pub const MAX_SHORT: usize = 253;
/// A container image map of a revision.
pub const MAX_IMAGES: usize = 64;
/// Rollout watches (WatchRollout and WaitRollout) open at once on one replica.
pub const MAX_WATCHES: usize = 1024;
/// How long the canaries of a disconnected cluster stay in the fleet view.
pub const CANARY_TTL: std::time::Duration = std::time::Duration::from_secs(600);
/// How long a cluster's registration outlives its agent's last contact by default
/// (`aviary coordinator --cluster-ttl`).
pub const CLUSTER_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// A page of ListRollouts / ListCanaries when the client does not ask for less.
pub const DEFAULT_PAGE: usize = 1000;
/// The largest page a client may ask for.
pub const MAX_PAGE: usize = 5000;

/// Why a message was refused: the field path and what is wrong.
pub(crate) type Refusal = String;

fn check_len(path: &str, s: &str, max: usize) -> Result<(), Refusal> {
    if s.len() > max {
        return Err(format!("{path}: {} bytes, over the limit of {max}", s.len()));
    }
    if s.chars().any(char::is_control) {
        return Err(format!("{path}: control characters are not allowed"));
    }
    Ok(())
}

fn check_label(path: &str, s: &str) -> Result<(), Refusal> {
    if is_dns_label(s) {
        return Ok(());
    }
    let shown: String = s.chars().take(64).collect();
    Err(format!(
        "{path}: {shown:?} is not a DNS label (1-63 lowercase letters, digits and '-')"
    ))
}

/// A Hello: the cluster and region are DNS labels, labels bounded, every canary valid.
pub(crate) fn check_hello(h: &v1::Hello) -> Result<(), Refusal> {
    check_label("hello.cluster", &h.cluster)?;
    if !h.region.is_empty() {
        check_label("hello.region", &h.region)?;
    }
    check_len("hello.agentVersion", &h.agent_version, 128)?;
    if h.labels.len() > MAX_LABELS {
        return Err(format!(
            "hello.labels: {} labels, over the limit of {MAX_LABELS}",
            h.labels.len()
        ));
    }
    for (k, v) in &h.labels {
        check_len("hello.labels (key)", k, 317)?;
        check_len(&format!("hello.labels.{k}"), v, 63)?;
    }
    if h.canaries.len() > MAX_CANARIES_PER_CLUSTER {
        return Err(format!(
            "hello.canaries: {} canaries, over the limit of {MAX_CANARIES_PER_CLUSTER} per cluster",
            h.canaries.len()
        ));
    }
    for (i, c) in h.canaries.iter().enumerate() {
        check_snapshot(&format!("hello.canaries[{i}]"), c)?;
    }
    Ok(())
}

fn check_revision(path: &str, r: &v1::Revision) -> Result<(), Refusal> {
    if !r.version.is_empty() && !is_version(&r.version) {
        return Err(format!(
            "{path}.version: letters, digits, '.', '_', '+', '-' only, at most 128"
        ));
    }
    if r.container_images.len() > MAX_IMAGES {
        return Err(format!("{path}.containerImages: over the limit of {MAX_IMAGES}"));
    }
    for (name, image) in &r.container_images {
        check_len(&format!("{path}.containerImages (name)"), name, 63)?;
        if !image.is_empty() && !is_image(image) {
            return Err(format!(
                "{path}.containerImages.{name}: not an image reference (letters, digits, '._-/:@+', at most 512)"
            ));
        }
    }
    Ok(())
}

/// A canary snapshot from an agent. Its free-text message is cut by [`trim_snapshot`], not
/// refused.
pub(crate) fn check_snapshot(path: &str, s: &v1::CanarySnapshot) -> Result<(), Refusal> {
    if s.namespace.is_empty() || s.name.is_empty() {
        return Err(format!("{path}: namespace and name are required"));
    }
    check_len(&format!("{path}.namespace"), &s.namespace, 63)?;
    check_len(&format!("{path}.name"), &s.name, MAX_SHORT)?;
    for (field, v) in [
        ("targetKind", &s.target_kind),
        ("targetName", &s.target_name),
        ("phase", &s.phase),
        ("lastAppliedSpec", &s.last_applied_spec),
        ("lastPromotedSpec", &s.last_promoted_spec),
        ("rollout", &s.rollout),
    ] {
        check_len(&format!("{path}.{field}"), v, MAX_SHORT)?;
    }
    if !(0..=100).contains(&s.canary_weight) {
        return Err(format!(
            "{path}.canaryWeight: {} is not a weight (0-100)",
            s.canary_weight
        ));
    }
    if s.failed_checks < 0 || s.iterations < 0 {
        return Err(format!(
            "{path}: failedChecks and iterations must not be negative"
        ));
    }
    if let Some(r) = s.primary_success_rate
        && !(r.is_finite() && (0.0..=100.0).contains(&r))
    {
        return Err(format!(
            "{path}.primarySuccessRate: {r} is not a percentage (0-100)"
        ));
    }
    if s.metrics.len() > MAX_METRICS {
        return Err(format!(
            "{path}.metrics: {} values, over the limit of {MAX_METRICS}",
            s.metrics.len()
        ));
    }
    for k in s.metrics.keys() {
        check_len(&format!("{path}.metrics (name)"), k, MAX_SHORT)?;
    }
    for (field, r) in [
        ("targetRevision", &s.target_revision),
        ("primaryRevision", &s.primary_revision),
    ] {
        if let Some(r) = r {
            check_revision(&format!("{path}.{field}"), r)?;
        }
    }
    Ok(())
}

/// Cuts the free text of a snapshot to [`MAX_MESSAGE`].
pub(crate) fn trim_snapshot(mut s: v1::CanarySnapshot) -> v1::CanarySnapshot {
    s.message = cut(&s.message, MAX_MESSAGE);
    s
}

/// A gate request: a short fingerprint and a valid revision.
pub(crate) fn check_gate_request(g: &v1::GateRequest) -> Result<(), Refusal> {
    check_len("gateRequest.namespace", &g.namespace, 63)?;
    check_len("gateRequest.name", &g.name, MAX_SHORT)?;
    check_len("gateRequest.fingerprint", &g.fingerprint, MAX_SHORT)?;
    match &g.revision {
        Some(r) => check_revision("gateRequest.revision", r),
        None => Ok(()),
    }
}

/// `actor` and `reason` of a verb.
pub(crate) fn check_actor(actor: &str, reason: &str) -> Result<(), Refusal> {
    check_len("actor", actor, MAX_ACTOR)?;
    if reason.len() > MAX_REASON {
        return Err(format!(
            "reason: {} bytes, over the limit of {MAX_REASON}",
            reason.len()
        ));
    }
    Ok(())
}

/// The page size a client asked for: 0 is [`DEFAULT_PAGE`], more than [`MAX_PAGE`] is
/// [`MAX_PAGE`].
pub(crate) fn page_size(asked: u32) -> usize {
    match asked as usize {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    }
}

/// `s` cut to at most `max` bytes at a character boundary.
pub(crate) fn cut(s: &str, max: usize) -> String {
    aviary_core::fleet::rollout::truncate(s, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap() -> v1::CanarySnapshot {
        v1::CanarySnapshot {
            namespace: "test".into(),
            name: "podinfo".into(),
            phase: "Progressing".into(),
            canary_weight: 10,
            ..Default::default()
        }
    }

    #[test]
    fn reports_outside_their_ranges_are_refused() {
        assert_eq!(check_snapshot("s", &snap()), Ok(()));
        type Change = fn(&mut v1::CanarySnapshot);
        let cases: Vec<(Change, &str)> = vec![
            (|s| s.canary_weight = 101, "s.canaryWeight: 101 is not a weight"),
            (|s| s.canary_weight = -1, "s.canaryWeight: -1"),
            (|s| s.failed_checks = -3, "must not be negative"),
            (|s| s.iterations = -1, "must not be negative"),
            (
                |s| s.primary_success_rate = Some(f64::NAN),
                "s.primarySuccessRate: NaN",
            ),
            (
                |s| s.primary_success_rate = Some(f64::INFINITY),
                "s.primarySuccessRate: inf",
            ),
            (|s| s.primary_success_rate = Some(100.5), "not a percentage"),
            (|s| s.name = String::new(), "namespace and name are required"),
            (
                |s| s.phase = "x".repeat(300),
                "s.phase: 300 bytes, over the limit of 253",
            ),
            (|s| s.rollout = "a\nb".into(), "s.rollout: control characters"),
            (
                |s| s.metrics = (0..65).map(|i| (format!("m{i}"), 1.0)).collect(),
                "s.metrics: 65 values",
            ),
            (
                |s| {
                    s.target_revision = Some(v1::Revision {
                        version: "1.0; rm -rf /".into(),
                        ..Default::default()
                    })
                },
                "s.targetRevision.version",
            ),
        ];
        for (change, want) in cases {
            let mut s = snap();
            change(&mut s);
            let e = check_snapshot("s", &s).unwrap_err();
            assert!(e.contains(want), "{e:?} should contain {want:?}");
        }
        // Metric values themselves may be anything (Prometheus answers +Inf).
        let mut s = snap();
        s.metrics.insert("p99".into(), f64::INFINITY);
        s.metrics.insert("ratio".into(), f64::NAN);
        assert_eq!(check_snapshot("s", &s), Ok(()));
        let long = trim_snapshot(v1::CanarySnapshot {
            message: "é".repeat(10_000),
            ..snap()
        });
        assert!(long.message.len() < MAX_MESSAGE + 64, "{}", long.message.len());
    }

    #[test]
    fn hellos_name_dns_labels_and_stay_bounded() {
        let hello = |cluster: &str| v1::Hello {
            cluster: cluster.into(),
            region: "us-east-1".into(),
            ..Default::default()
        };
        assert_eq!(check_hello(&hello("us-1")), Ok(()));
        for bad in ["", "US-1", "us_1", "a.b", "-a", &"a".repeat(64), "a\u{0}"] {
            assert!(check_hello(&hello(bad)).is_err(), "{bad:?}");
        }
        let mut h = hello("us-1");
        h.canaries = vec![snap(); MAX_CANARIES_PER_CLUSTER + 1];
        assert!(check_hello(&h).unwrap_err().contains("over the limit of 10000"));
        let mut h = hello("us-1");
        h.labels = (0..65).map(|i| (format!("k{i}"), "v".into())).collect();
        assert!(check_hello(&h).unwrap_err().contains("hello.labels"));
        assert!(check_actor(&"a".repeat(257), "").is_err());
        assert!(check_actor("alice", &"r".repeat(1025)).is_err());
        assert!(check_actor("alice\u{1b}[31m", "").is_err());
        assert_eq!(check_actor("alice", "why"), Ok(()));
    }
}
