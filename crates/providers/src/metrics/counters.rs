//! Raw counters for the statistical judge, read from Prometheus: the cumulative request, 5xx
//! and latency-bucket series of each arm, as they are (never `rate()` or `increase()`, which
//! extrapolate to non-integers); the judge differences two readings series by series with
//! reset handling ([`aviary_core::judge::reading`]). All queries of one reading are evaluated
//! at the same instant.
//!
//! | provider | requests / 5xx | latency buckets | canary / primary |
//! |---|---|---|---|
//! | `istio` | `istio_requests_total` (`response_code=~"5.."`) | `istio_request_duration_milliseconds_bucket` | `destination_workload` = target / target-primary |
//! | `linkerd` | `response_total` (`classification="failure"`) | `response_latency_ms_bucket` | `deployment` = target / target-primary |
//! | `nginx` | `nginx_ingress_controller_requests` (`status=~"5.."`) | `nginx_ingress_controller_request_duration_seconds_bucket` | `canary!=""` / `canary=""` on the ingress |
//! | `kubernetes`, `gatewayapi*` (Envoy Gateway and friends route by weight; the app's histogram) | `http_request_duration_seconds_count` (`status=~"5.."`) | `http_request_duration_seconds_bucket` | pods of target / target-primary |
//! | `knative` | `envoy_cluster_upstream_rq` (`envoy_response_code=~"5.."`) | `envoy_cluster_upstream_rq_time_bucket` | `envoy_cluster_name` = latest revision / the other revisions of the service |

use std::collections::BTreeMap;

use aviary_core::judge::{ArmReading, SeriesHistogram, series_id};
use aviary_core::ports::{MetricError, MetricModel};

use super::prometheus::Series;

/// One arm's three selectors and the latency unit.
#[derive(Debug, Clone, PartialEq)]
pub struct ArmQueries {
    pub requests: String,
    pub errors: String,
    pub buckets: String,
    /// Milliseconds per unit of the bucket bound `le`.
    pub ms_per_unit: f64,
}

/// Which arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arm {
    Canary,
    Primary,
}

/// The selectors of `arm` for a canary of `provider`.
pub fn arm_queries(provider: &str, model: &MetricModel, arm: Arm) -> Result<ArmQueries, String> {
    let p = provider.strip_suffix(":service").unwrap_or(provider);
    let ns = &model.namespace;
    let workload = match arm {
        Arm::Canary => model.target.clone(),
        Arm::Primary => format!("{}-primary", model.target),
    };
    let q = |requests: &str, error_label: &str, buckets: &str, sel: String, ms: f64| ArmQueries {
        requests: format!("{requests}{{{sel}}}"),
        errors: format!("{requests}{{{sel},{error_label}}}"),
        buckets: format!("{buckets}{{{sel}}}"),
        ms_per_unit: ms,
    };
    Ok(match p {
        "istio" => q(
            "istio_requests_total",
            r#"response_code=~"5..""#,
            "istio_request_duration_milliseconds_bucket",
            format!(
                r#"reporter="destination",destination_workload_namespace="{ns}",destination_workload="{workload}""#
            ),
            1.0,
        ),
        "linkerd" => q(
            "response_total",
            r#"classification="failure""#,
            "response_latency_ms_bucket",
            format!(r#"namespace="{ns}",deployment="{workload}",direction="inbound""#),
            1.0,
        ),
        "nginx" => {
            let canary = match arm {
                Arm::Canary => r#"canary!="""#,
                Arm::Primary => r#"canary="""#,
            };
            q(
                "nginx_ingress_controller_requests",
                r#"status=~"5..""#,
                "nginx_ingress_controller_request_duration_seconds_bucket",
                format!(r#"namespace="{ns}",ingress="{}",{canary}"#, model.ingress),
                1000.0,
            )
        }
        "kubernetes" => http(ns, &workload),
        p if p.starts_with("gatewayapi") => http(ns, &workload),
        "knative" => {
            let route = format!("{ns}/{}", model.route);
            let cluster = match arm {
                Arm::Canary => format!(r#"envoy_cluster_name="{route}""#),
                Arm::Primary => format!(
                    r#"envoy_cluster_name=~"{ns}/{}-[0-9]+",envoy_cluster_name!="{route}""#,
                    model.target
                ),
            };
            q(
                "envoy_cluster_upstream_rq",
                r#"envoy_response_code=~"5..""#,
                "envoy_cluster_upstream_rq_time_bucket",
                cluster,
                1.0,
            )
        }
        p => {
            return Err(format!(
                "no raw request counters are known for provider {p:?}; the judge reads them for istio, linkerd, nginx, knative, gatewayapi and kubernetes"
            ));
        }
    })
}

fn http(ns: &str, workload: &str) -> ArmQueries {
    let sel = format!(
        r#"kubernetes_namespace="{ns}",kubernetes_pod_name=~"{workload}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)""#
    );
    ArmQueries {
        requests: format!("http_request_duration_seconds_count{{{sel}}}"),
        errors: format!(r#"http_request_duration_seconds_count{{{sel},status=~"5.."}}"#),
        buckets: format!("http_request_duration_seconds_bucket{{{sel}}}"),
        ms_per_unit: 1000.0,
    }
}

/// Canonical label text of a series (sorted, `le` left out).
fn label_text(labels: &BTreeMap<String, String>) -> String {
    let parts: Vec<String> = labels
        .iter()
        .filter(|(k, _)| k.as_str() != "le")
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    format!("{{{}}}", parts.join(","))
}

/// One arm's reading from the answers of its three queries.
pub fn arm_reading(
    requests: Series,
    errors: Series,
    buckets: Series,
    ms_per_unit: f64,
) -> Result<ArmReading, MetricError> {
    let by_id = |s: Series| -> BTreeMap<u64, f64> {
        let mut m = BTreeMap::new();
        for (labels, v) in s {
            *m.entry(series_id(&label_text(&labels))).or_insert(0.0) += v;
        }
        m
    };
    let mut hist: BTreeMap<u64, Vec<(f64, f64)>> = BTreeMap::new();
    for (labels, v) in buckets {
        let le = labels.get("le").map(String::as_str).unwrap_or_default();
        let bound = match le {
            "+Inf" => f64::INFINITY,
            b => b
                .parse::<f64>()
                .map_err(|_| MetricError::Query(format!("histogram bucket with le={b:?} is not a number")))?,
        };
        hist.entry(series_id(&label_text(&labels)))
            .or_default()
            .push((bound, v));
    }
    let latency = hist
        .into_iter()
        .filter_map(|(id, mut buckets)| {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            // A series without its +Inf bucket is incomplete: left out.
            (buckets.last()?.0 == f64::INFINITY).then(|| {
                let bounds_ms = buckets[..buckets.len() - 1]
                    .iter()
                    .map(|(b, _)| b * ms_per_unit)
                    .collect();
                let cumulative = buckets.iter().map(|(_, v)| *v).collect();
                (
                    id,
                    SeriesHistogram {
                        bounds_ms,
                        cumulative,
                    },
                )
            })
        })
        .collect();
    Ok(ArmReading {
        requests: by_id(requests),
        errors: by_id(errors),
        latency,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_util::string_map as labels;
    use aviary_core::fakes::podinfo_model as model;

    #[test]
    fn selectors_per_provider_and_arm() {
        let m = model();
        let cases = [
            (
                "istio",
                Arm::Primary,
                r#"istio_requests_total{reporter="destination",destination_workload_namespace="test",destination_workload="podinfo-primary",response_code=~"5.."}"#,
            ),
            (
                "linkerd",
                Arm::Canary,
                r#"response_total{namespace="test",deployment="podinfo",direction="inbound",classification="failure"}"#,
            ),
            (
                "nginx",
                Arm::Canary,
                r#"nginx_ingress_controller_requests{namespace="test",ingress="podinfo",canary!="",status=~"5.."}"#,
            ),
            (
                "nginx",
                Arm::Primary,
                r#"nginx_ingress_controller_requests{namespace="test",ingress="podinfo",canary="",status=~"5.."}"#,
            ),
            (
                "gatewayapi:v1",
                Arm::Primary,
                r#"http_request_duration_seconds_count{kubernetes_namespace="test",kubernetes_pod_name=~"podinfo-primary-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)",status=~"5.."}"#,
            ),
            (
                "knative",
                Arm::Canary,
                r#"envoy_cluster_upstream_rq{envoy_cluster_name="test/podinfo-00002",envoy_response_code=~"5.."}"#,
            ),
        ];
        for (provider, arm, errors) in cases {
            assert_eq!(
                arm_queries(provider, &m, arm).unwrap().errors,
                errors,
                "{provider} {arm:?}"
            );
        }
        assert_eq!(arm_queries("nginx", &m, Arm::Canary).unwrap().ms_per_unit, 1000.0);
        let e = arm_queries("contour", &m, Arm::Canary).unwrap_err();
        assert!(e.contains("\"contour\""), "{e}");
    }

    #[test]
    fn series_become_a_reading() {
        let requests = vec![(labels(&[("pod", "a")]), 100.0), (labels(&[("pod", "b")]), 50.0)];
        let errors = vec![(labels(&[("pod", "a"), ("response_code", "503")]), 2.0)];
        let buckets = vec![
            (labels(&[("pod", "a"), ("le", "+Inf")]), 100.0),
            (labels(&[("pod", "a"), ("le", "0.1")]), 90.0),
            (labels(&[("pod", "a"), ("le", "0.05")]), 60.0),
            // no +Inf: left out
            (labels(&[("pod", "b"), ("le", "0.05")]), 10.0),
        ];
        let r = arm_reading(requests, errors, buckets, 1000.0).unwrap();
        assert_eq!(r.requests.values().sum::<f64>(), 150.0);
        assert_eq!(r.errors.values().sum::<f64>(), 2.0);
        assert_eq!(r.latency.len(), 1);
        let h = r.latency.values().next().unwrap();
        assert_eq!(h.bounds_ms, vec![50.0, 100.0]);
        assert_eq!(h.cumulative, vec![60.0, 90.0, 100.0]);
        let bad = vec![(labels(&[("le", "fast")]), 1.0)];
        assert!(arm_reading(vec![], vec![], bad, 1.0).is_err());
    }
}
