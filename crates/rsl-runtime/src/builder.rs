//! [`RingBuilder`]: assembles a ring replica from a configuration, a state machine, a
//! storage choice and a host (a shared [`Runtime`], or a transport endpoint for a runtime
//! of the ring's own), and starts it.

use std::path::PathBuf;
use std::sync::Arc;

use rsl_core::Config;
use rsl_transport::{Inbound, Transport};
use tokio::sync::mpsc;

use crate::error::StartError;
use crate::ring::{Ring, RingOptions, RingSpec};
use crate::runtime::{Runtime, RuntimeOptions};
use crate::state_machine::StateMachine;
use crate::storage::{FileStorage, Storage};

/// Why a ring could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A required part was not given to the builder.
    #[error("the ring builder needs {what}")]
    Missing {
        /// What is missing.
        what: &'static str,
    },
    /// The ring (or its runtime) failed to start.
    #[error(transparent)]
    Start(#[from] StartError),
}

/// Where the ring runs.
enum Host {
    Shared(Runtime),
    Own { transport: Arc<dyn Transport>, inbound: mpsc::Receiver<Inbound>, options: RuntimeOptions },
}

/// Assembles a ring replica; see [`Ring::builder`].
pub struct RingBuilder {
    config: Config,
    state_machine: Option<Box<dyn StateMachine>>,
    storage: Option<Storage>,
    host: Option<Host>,
    options: RingOptions,
}

impl std::fmt::Debug for RingBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingBuilder")
            .field("config", &self.config)
            .field("state_machine", &self.state_machine.is_some())
            .field("storage", &self.storage)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Ring {
    /// A builder for a replica of the ring `config` describes.
    pub fn builder(config: Config) -> RingBuilder {
        RingBuilder {
            config,
            state_machine: None,
            storage: None,
            host: None,
            options: RingOptions::default(),
        }
    }
}

impl RingBuilder {
    /// The application (required).
    pub fn state_machine(mut self, state_machine: impl StateMachine) -> RingBuilder {
        self.state_machine = Some(Box::new(state_machine));
        self
    }

    /// Where the log and checkpoints live (required): [`MemoryStorage`](crate::MemoryStorage),
    /// [`FileStorage`], or [`Storage::Opened`] for a store opened by hand.
    pub fn storage(mut self, storage: impl Into<Storage>) -> RingBuilder {
        self.storage = Some(storage.into());
        self
    }

    /// File storage in `dir` with default options (the journal in `dir/log`, checkpoints
    /// in `dir/checkpoints`).
    pub fn file_storage(self, dir: impl Into<PathBuf>) -> RingBuilder {
        self.storage(FileStorage::new(dir))
    }

    /// Host the ring in a shared runtime (one per node, many rings, one transport endpoint).
    pub fn runtime(mut self, runtime: &Runtime) -> RingBuilder {
        self.host = Some(Host::Shared(runtime.clone()));
        self
    }

    /// Host the ring in a runtime of its own on this transport endpoint and its inbound
    /// receiver; the runtime stops with the ring.
    pub fn transport(
        mut self,
        transport: Arc<dyn Transport>,
        inbound: mpsc::Receiver<Inbound>,
        options: RuntimeOptions,
    ) -> RingBuilder {
        self.host = Some(Host::Own { transport, inbound, options });
        self
    }

    /// The runtime's per-ring options (timeouts, queue bounds, group commit).
    pub fn options(mut self, options: RingOptions) -> RingBuilder {
        self.options = options;
        self
    }

    /// Recovers the storage, loads the newest checkpoint and starts the replica. Must be
    /// awaited within a tokio runtime.
    pub async fn start(self) -> Result<Ring, BuildError> {
        let state_machine = self.state_machine.ok_or(BuildError::Missing { what: "a state machine" })?;
        let storage = self.storage.ok_or(BuildError::Missing { what: "a storage choice" })?;
        let host = self.host.ok_or(BuildError::Missing { what: "a runtime or a transport" })?;
        let spec = RingSpec { config: self.config, state_machine, storage, options: self.options };
        let ring = match host {
            Host::Shared(runtime) => runtime.start_ring(spec).await?,
            Host::Own { transport, inbound, options } => {
                Runtime::new(transport, inbound, options)?.start_ring_owning(spec).await?
            }
        };
        Ok(ring)
    }
}
