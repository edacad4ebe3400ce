//! aviary's pure logic. Nothing here does I/O: the world is reached through [`ports`].
//!
//! - [`engine`]: one analysis tick of one canary, exactly as Flagger's `advanceCanary`.
//! - [`ports`]: the traits platforms implement (Target, Router, Metrics, SecretSource, Hooks,
//!   Notifier, Recorder, Gate).
//! - [`fleet`]: the coordinator's rollout sequencer (plan, reconcile, verbs), pure decisions with
//!   time as an argument.
//! - [`judge`]: the statistical judge: anytime-valid canary-vs-primary e-processes per metric,
//!   their verdicts and explanations, the fleet's pooled evidence, and its configuration.
//! - [`weights`]: traffic weight math; [`template`]: query template rendering (Flagger's
//!   RenderQuery over `aviary-template`);
//!   [`fingerprint`]: stable revision hashes; [`gofmt`]: Go's number formatting for event texts.
//! - [`simulate`]: the simulator behind `aviary simulate` (the engine on scripted ports with
//!   virtual time).
//! - `fuzz` (feature `fuzzing`): the manifest and query-template fuzz targets of `fuzz/`.
//! - `fakes` (feature `test-util`): fakes of every port for tests, and the simulator on them.
//! - `error`: the crate's [`Error`].

pub mod engine;
mod error;
pub mod fingerprint;
pub mod fleet;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz;
pub mod gofmt;
pub mod judge;
pub mod ports;
pub mod simulate;
pub mod template;
pub mod weights;

#[cfg(feature = "test-util")]
pub mod fakes;

pub use engine::{DEFAULT_PROVIDER, EngineConfig, TickInput, TickMemory, TickOutcome, tick};
pub use error::{Error, Result};
