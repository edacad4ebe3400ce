//! aviary's Kubernetes adapters on kube-rs. They implement the engine's ports and hold no
//! decisions: what to do and when is `aviary-core`'s.
//!
//! - [`client`]: connecting (kubeconfig or in-cluster, client-side rate limit), objects as JSON,
//!   read-modify-write with merge patches guarded by resourceVersion, retried on 409.
//! - [`cache`]: (on unless `--no-watch-cache`) watch-backed reads of what every tick reads (Deployments, Services, router
//!   objects), so idle canaries cost the API server nothing; GETs whenever it is not in step,
//!   a periodic metadata list to catch a watch that fell behind.
//! - [`watch`]: watchers for Canary, MetricTemplate and AlertProvider feeding a [`CanarySink`]
//!   (the actor supervisor) and the [`Watched`] caches; validation, the `finalizer.flagger.app`
//!   finalizer and revert on deletion.
//! - [`platform`]: which Target and Router each canary gets, Kubernetes Secrets, the status a
//!   restarted actor resumes from.
//! - [`recorder`]: the Recorder port: status subresource, core/v1 Events (reason `Synced`),
//!   which `events` writes off the tick through a bounded queue.
//! - Targets: [`deployment`] (the `-primary` Deployment, config tracking, readiness),
//!   [`daemonset`] (the `-primary` DaemonSet, scale to zero through a node selector),
//!   [`service_target`] (a core Service copied to `-primary`/`-canary`), [`knative`] (also the
//!   Knative router and the metrics' revision `route`); [`workload`] holds what Deployments and
//!   DaemonSets share, [`autoscaler`] the `-primary` HPA or KEDA ScaledObject.
//! - Routers: [`services`] (the ClusterIP Services of Deployment canaries), [`gatewayapi`],
//!   [`istio`], [`ingress`] (nginx, skipper), [`smi`] (linkerd, smi, osm), [`contour`],
//!   [`gloo`], [`traefik`], [`appmesh`], [`kuma`], [`apisix`], and in [`routing`] the provider
//!   choice, the `kubernetes` no-op router and what routers share: the routing object they own
//!   (with [`routing::ObjectRouter`], the whole Router of the one-object routers), the apex
//!   route's reads, session-affinity routes, match merging, Flux's annotations.
//! - [`lease`]: leader election through a coordination.k8s.io Lease.
//! - [`revisions`]: what the coordinator link reads and pushes: targets' container images, and
//!   retries of the same images.
//! - `error`: the crate's [`Error`].

pub mod apisix;
pub mod appmesh;
pub mod autoscaler;
pub mod cache;
pub mod client;
pub mod contour;
pub mod daemonset;
pub mod deployment;
mod error;
mod events;
pub mod gatewayapi;
pub mod gloo;
pub mod ingress;
pub mod istio;
pub mod knative;
pub mod kuma;
pub mod lease;
pub mod platform;
pub mod recorder;
pub mod revisions;
pub mod routing;
pub mod service_target;
pub mod services;
pub mod smi;
pub mod traefik;
pub mod watch;
pub mod workload;

pub use client::{ClientSettings, Kube, connect};
pub use error::{Error, Result};
pub use lease::{LeaderElector, LeaseEnd, LeaseSettings};
pub use platform::{KubePlatform, KubeSecrets, KubeSettings};
pub use recorder::KubeRecorder;
pub use watch::{CanarySink, FINALIZER, Watched};
