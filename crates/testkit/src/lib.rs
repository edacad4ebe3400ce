//! Dev-only test support for aviary, written once for every crate's tests. Nothing here runs in
//! production.
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
//! - [`kubectl`]: finding the real `kubectl` for tests (or skipping/failing clearly); [`helm`]:
//!   helm v4 built from the Go module proxy (`tests/helm`); [`tool`]: running either against a
//!   test cluster with a HOME of its own.
//! - [`browser`]: real headless Chromium through chromedriver (WebDriver), killed on drop.
//! - [`prometheus`]: the real Prometheus scraping static targets, and its HTTP API.
//! - [`objects`]: [`Objects`], untyped objects by apiVersion + kind as JSON, with waits.
//! - [`supervised`]: [`Supervised`], a child program killed when its handle drops or the test
//!   process dies (the control plane's programs, controllers under test).
//! - [`proxy`]: [`FaultProxy`], an HTTP proxy in front of the API server that injects errors,
//!   delays and dropped watches.
//! - [`backends`]: scriptable HTTP doubles for the analysis: a Prometheus-compatible query
//!   endpoint ([`FakePrometheus`]), a webhook receiver ([`FakeWebhook`]) and a careless upstream
//!   that quotes requests back ([`EchoServer`]).
//! - [`etcd`]: etcd processes on loopback ports for the coordinator's tests
//!   ([`LocalEtcd`](etcd::LocalEtcd)), one or several members, optionally with TLS and client
//!   certificates, killed on drop.
//! - [`netns`]: [`Lab`](netns::Lab), hosts in network namespaces on a bridge, links cut with
//!   nftables or taken down (partition tests); [`Host`](netns::Host) places processes.
//! - [`history`]: the shared checker of a rollout's audit history and the agents' statuses
//!   (the invariants every fault test asserts).
//! - [`net`]: loopback ports and listeners, `curl`; [`wait`]: polling a condition; [`logs`]:
//!   tracing in the test output.
//! - [`json`]: reading JSON answers in tests.
//! - [`generated`]: committed generated files checked against their generator's output.
//! - [`process`]: child processes killed on drop, captured logs, process trees (orphans).
//! - [`traffic`]: steady HTTP traffic to a service.
//! - [`aviary`]: the aviary binary as a process (coordinator, CLI commands), serving and calling
//!   with mutual TLS from the test binary's [`Pki`](aviary::Pki).
//! - [`manifests`]: LocalService and Canary manifests for local agents, FleetRollouts.
//! - [`kube_env`]: what the Kubernetes tests of several crates share: a test's namespace and its
//!   objects ([`TestNamespace`](kube_env::TestNamespace)), Canary YAML for a provider, Flagger's
//!   CRDs as JSON, the analysis doubles.
//! - [`bench`]: command-line flags of the benchmark harnesses.
//! - [`fuzz`]: the fuzz targets' committed corpus replayed (and mutated, bounded) in the tests.
//! - [`error`]: the crate's [`Error`].

pub mod aviary;
pub mod backends;
pub mod bench;
pub mod browser;
pub mod cluster;
pub mod control_plane;
pub mod crds;
pub mod error;
pub mod etcd;
pub mod fuzz;
pub mod generated;
pub mod helm;
pub mod history;
pub mod ingress_nginx;
pub mod json;
pub mod kube_env;
pub mod kubectl;
pub mod logs;
pub mod manifests;
pub mod net;
pub mod netns;
pub mod objects;
pub mod process;
pub mod prometheus;
pub mod proxy;
pub mod standins;
pub mod supervised;
pub mod tool;
pub mod traffic;
pub mod wait;

pub use backends::{Answer, EchoServer, EchoedRequest, FakePrometheus, FakeWebhook, WebhookCall};
pub use cluster::Cluster;
pub use control_plane::{ControlPlane, Identity};
pub use error::{Error, Result};
pub use ingress_nginx::IngressNginx;
pub use objects::Objects;
pub use proxy::{FaultProxy, Matcher};
pub use standins::{GATEWAY_CONTROLLER_NAME, NEVER_READY_ANNOTATION, StandIns};
pub use supervised::Supervised;
