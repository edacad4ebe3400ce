//! Dev-only test support for aviary. Nothing here runs in production.
//!
//! Module map:
//! - [`control_plane`]: the real Kubernetes control plane on loopback — etcd, kube-apiserver and
//!   kube-controller-manager built from the Go module proxy (`tests/control-plane`) — with its
//!   certificates, kubeconfigs and supervised processes.
//! - [`cluster`]: [`Cluster`], the control plane with the upstream test CRDs and the stand-ins;
//!   shared per test binary, namespaces and identities for tests.
//! - [`standins`]: test-side stand-ins for controllers the control plane lacks: a kubelet (pods
//!   Ready), Knative Serving's revision controller, a gateway that accepts HTTPRoutes.
//! - [`crds`]: the upstream Knative, Gateway API, Istio, Contour and Traefik CRDs, the other traffic
//!   providers' CRDs written for the tests, and installing CRDs.
//! - [`ingress_nginx`]: [`IngressNginx`], a test-side ingress-nginx stand-in around the real
//!   nginx: Ingresses and canary annotations from the API server, traffic routed by nginx,
//!   ingress-nginx's request metrics from nginx's access log.
//! - [`kubectl`]: finding the real `kubectl` for tests (or skipping/failing clearly).
//! - [`objects`]: [`Objects`], untyped objects by apiVersion + kind as JSON, with waits.
//! - [`prometheus`]: the real Prometheus (Debian's) scraping static targets every second.
//! - [`proxy`]: [`FaultProxy`], an HTTP proxy in front of the API server that injects errors,
//!   delays and dropped watches.
//! - [`backends`]: scriptable HTTP doubles for the analysis: a Prometheus-compatible query
//!   endpoint ([`FakePrometheus`]), a webhook receiver ([`FakeWebhook`]) and a careless upstream
//!   that quotes requests back ([`EchoServer`]).
//! - [`error`]: the crate's [`Error`].

pub mod backends;
pub mod cluster;
pub mod control_plane;
pub mod crds;
pub mod error;
pub mod ingress_nginx;
pub mod kubectl;
pub mod objects;
pub mod prometheus;
pub mod proxy;
pub mod standins;

pub use backends::{EchoServer, EchoedRequest, FakePrometheus, FakeWebhook, WebhookCall};
pub use cluster::Cluster;
pub use control_plane::{ControlPlane, Identity};
pub use error::{Error, Result};
pub use ingress_nginx::IngressNginx;
pub use objects::Objects;
pub use proxy::{FaultProxy, Matcher};
pub use standins::{GATEWAY_CONTROLLER_NAME, NEVER_READY_ANNOTATION, StandIns};
