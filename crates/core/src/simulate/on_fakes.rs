//! The simulator on the fakes (feature `test-util`): the engine's tests script, swap and inspect
//! the fakes while the [`Simulator`] ticks on them.

use aviary_api::Canary;

use super::{Report, Script, Simulator};
use crate::engine::TickOutcome;
use crate::fakes::Fakes;

/// The simulator on the fakes, which the engine's tests script, swap and inspect; the rest of
/// the [`Simulator`] is reached through `Deref`.
pub struct Simulation {
    pub fakes: Fakes,
    simulator: Simulator,
}

impl Simulation {
    /// A simulation of `canary` (its status is cleared) on fresh fakes.
    pub fn new(canary: Canary) -> Self {
        let fakes = Fakes::default();
        Self {
            simulator: Simulator::new(canary, &fakes),
            fakes,
        }
    }

    /// Loads the script into the fakes.
    pub fn load(&mut self, script: &Script) {
        self.simulator.load(&self.fakes, script);
    }

    /// One tick on the fakes.
    pub async fn tick(&mut self) -> TickOutcome {
        self.simulator.tick(&self.fakes).await
    }

    /// Initializes, presents a new revision, and ticks until the analysis ends.
    pub async fn run(&mut self, script: &Script) -> Report {
        self.simulator.run(&self.fakes, script).await
    }
}

impl std::ops::Deref for Simulation {
    type Target = Simulator;

    fn deref(&self) -> &Self::Target {
        &self.simulator
    }
}

impl std::ops::DerefMut for Simulation {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.simulator
    }
}
