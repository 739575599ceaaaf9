//! Starting a ring: recovery (opening its storage, which replays the log, and loading the
//! newest checkpoint that verifies into the state machine), then building its replica and
//! wiring the group committer, the apply thread and the channels between them and the
//! ring task.

use std::collections::BTreeSet;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rsl_core::{Configuration, NodeId, Replica, RingId, Slot};
use rsl_transport::Transport;
use tokio::sync::{mpsc, watch};

use super::apply::ApplyThread;
use super::checkpoints::{Checkpoints, OldestCheckpoint};
use super::network::Network;
use super::persist::Persist;
use super::reads::{ReadIndexes, SharedReader};
use super::requests::Requests;
use super::task::{Inbox, RingTask};
use super::{Clock, Recovery, Ring, RingShared, RingSpec};
use crate::error::StartError;
use crate::state_machine::StateMachine;
use crate::stats::RingLatencies;
use crate::storage::{Opened, Storage};
use crate::transfer::{ServedRing, SharedFetcher};

/// A ring built and not yet running. The runtime routes its messages to `inbox`, serves
/// its checkpoints from `served`, admits `admitted` on the transport, spawns
/// [`RingTask::run`] and hands out `ring`. Dropping it instead stops the threads it started.
pub(crate) struct Started {
    pub(crate) task: RingTask,
    pub(crate) ring: Ring,
    pub(crate) inbox: Inbox,
    pub(crate) served: ServedRing,
    /// The nodes the transport admits for the ring from the start: the initial members (or
    /// contacts) and those of the configuration recovered. The ring admits the members of
    /// later configurations itself as it enters them.
    pub(crate) admitted: Vec<NodeId>,
}

impl RingTask {
    /// Recovers the storage of `spec` and builds a ring on it; `spec.config` has been
    /// validated and names the runtime's node. The ring sends through `transport`, fetches
    /// checkpoints through the runtime's current fetcher and reads the runtime's `clock`.
    pub(crate) async fn start(
        spec: RingSpec,
        transport: Arc<dyn Transport>,
        fetcher: SharedFetcher,
        clock: Clock,
    ) -> Result<Started, StartError> {
        let RingSpec { mut config, state_machine, storage, options } = spec;
        let (ring, node) = (config.ring, config.node);
        let opened = tokio::task::spawn_blocking(move || open_storage(ring, storage, state_machine)).await;
        let Loaded { opened, state_machine, checkpoint, configuration, last_slot, skipped_checkpoints } =
            match opened {
                Ok(result) => result?,
                Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
                Err(_) => return Err(StartError::RuntimeShutDown),
            };
        let Opened { log, flush_inline, mut durable, checkpoints, report } = opened;
        check_record_limit(&config, log.record_bytes_max())?;
        durable.checkpoint = checkpoint;
        durable.configuration = configuration;
        let recovery = Recovery {
            log_records: report.as_ref().map_or(0, |r| r.records),
            log_bytes: report.as_ref().map_or(0, |r| r.bytes),
            torn_tail: report.and_then(|r| r.torn_tail),
            promise: durable.promise,
            proposals: durable.proposals.len() as u64,
            chosen_hint: durable.chosen,
            checkpoint,
            skipped_checkpoints,
        };

        // Election delays differ across restarts as well as across replicas.
        config.seed ^= crate::entropy();
        let members = config.members.clone();
        // The veto is polled about once per heartbeat: it takes effect well inside an
        // election delay.
        let veto_poll_interval = Duration::from_millis(config.heartbeat_interval_ms);
        let timing = rsl_core::Timing::of(&config);
        let mut replica = Replica::new(config, durable, clock.now())
            .map_err(|source| StartError::Config { ring, source })?;
        if let Some(last_slot) = last_slot {
            // The checkpoint loaded says the ring closed (the log may no longer hold it).
            replica.on_last_slot_known(last_slot);
        }
        let applied = replica.applied();
        let reader = state_machine.reader().map(SharedReader);
        let recovered = replica.status().configuration;
        let admitted: BTreeSet<NodeId> = members.iter().copied().chain(recovered.followers()).collect();

        let persist = Persist::spawn(log, &options.group_commit, flush_inline);
        let oldest_checkpoint = OldestCheckpoint::default();
        oldest_checkpoint.refresh(&checkpoints);
        let store = Arc::new(Mutex::new(checkpoints));
        let local_client = crate::entropy() | 1;

        let (command_sender, commands) = mpsc::channel(options.commands_max.max(1));
        let (inbound_sender, inbound) = mpsc::channel(options.inbound_messages_max.max(1));
        let (status_sender, status) = watch::channel(replica.status());
        let (finished_sender, finished) = watch::channel(false);
        let shared = Arc::new(RingShared {
            ring,
            node,
            counters: Arc::default(),
            latencies: RingLatencies::default(),
            applied: AtomicU64::new(applied.0),
            applied_changed: watch::Sender::new(applied),
            reader,
            stop_reason: Mutex::new(None),
            finished,
            options,
            recovery,
            timing: Mutex::new(timing),
        });

        let (events_sender, events) = mpsc::unbounded_channel();
        let apply = ApplyThread {
            shared: shared.clone(),
            state_machine,
            applied,
            local_client,
            events: events_sender,
            checkpoints: store.clone(),
            oldest_checkpoint: oldest_checkpoint.clone(),
            veto_poll_interval,
            last_slot,
            rewinding: false,
        }
        .spawn()
        .map_err(|source| StartError::Thread { ring, source })?;

        let handle = Ring::new(command_sender, apply.jobs(), status, shared.clone());
        let task = RingTask {
            shared: shared.clone(),
            replica,
            clock,
            commands,
            inbound,
            events,
            persist,
            apply,
            checkpoints: Checkpoints::new(store.clone(), oldest_checkpoint, fetcher),
            requests: Requests::new(local_client, shared.options.request_timeout.as_millis() as u64),
            reads: ReadIndexes::default(),
            network: Network::new(ring, node, transport, admitted.clone(), &recovered),
            status: status_sender,
            finished: finished_sender,
            controls: Default::default(),
        };
        Ok(Started {
            task,
            ring: handle,
            inbox: Inbox::new(inbound_sender, shared.counters.clone()),
            served: ServedRing { store, counters: shared.counters.clone() },
            admitted: admitted.into_iter().collect(),
        })
    }
}

/// Bytes a persist record adds around the one large value it carries, at most (ticket,
/// promise, watermark, ballot, slot, request id and length prefixes), with room to spare.
const RECORD_OVERHEAD_BYTES: u64 = 4096;

/// Refuses a ring whose largest request would not fit one record of its log store: the
/// first such request would poison the store and stop the ring.
fn check_record_limit(config: &rsl_core::Config, record_bytes_max: u64) -> Result<(), StartError> {
    let largest = rsl_core::Value::large_size_bytes(config.request_bytes_max);
    if largest.saturating_add(RECORD_OVERHEAD_BYTES) <= record_bytes_max {
        return Ok(());
    }
    let reason = format!(
        "{} bytes: a request that large needs a log record of {} bytes, and the log store takes \
         records of at most {record_bytes_max} bytes (a persistent-memory log's capacity bounds \
         them); lower request_bytes_max or enlarge the log",
        config.request_bytes_max,
        largest + RECORD_OVERHEAD_BYTES
    );
    let source = rsl_core::ConfigError::Invalid { field: "request_bytes_max", reason };
    Err(StartError::Config { ring: config.ring, source })
}

/// Storage opened and a state machine loaded from its newest valid checkpoint.
struct Loaded {
    opened: Opened,
    state_machine: Box<dyn StateMachine>,
    checkpoint: Slot,
    configuration: Option<Configuration>,
    /// The ring's last request, if the checkpoint says the ring is closed.
    last_slot: Option<Slot>,
    skipped_checkpoints: Vec<String>,
}

/// Opens the storage and loads the newest valid checkpoint into the state machine.
/// Blocking I/O.
fn open_storage(
    ring: RingId,
    storage: Storage,
    mut state_machine: Box<dyn StateMachine>,
) -> Result<Loaded, StartError> {
    let opened = storage.open(ring)?;
    if let Some(report) = &opened.report {
        if let Some(cut) = &report.torn_tail {
            tracing::warn!(
                ring = ring.0, file = %cut.file.display(), offset = cut.offset, bytes = cut.bytes_dropped,
                reason = %cut.reason, "log recovery cut a torn tail"
            );
        }
        tracing::info!(ring = ring.0, records = report.records, bytes = report.bytes, log_start = %report.log_start, "log recovered");
    }
    let outcome =
        opened.checkpoints.load_newest().map_err(|source| StartError::Checkpoint { ring, source })?;
    let mut skipped = Vec::new();
    for error in &outcome.skipped {
        tracing::warn!(ring = ring.0, %error, "skipped a checkpoint that fails to verify");
        skipped.push(error.to_string());
    }
    let (slot, configuration, last_slot) = match outcome.checkpoint {
        Some(mut reader) => {
            let slot = reader.slot();
            let record = crate::framing::read_ring_record(&mut reader)
                .map_err(|source| StartError::LoadCheckpoint { ring, slot, source })?;
            let configuration = record.configuration;
            state_machine
                .load_checkpoint(slot, &mut reader)
                .map_err(|source| StartError::LoadCheckpoint { ring, slot, source })?;
            tracing::info!(ring = ring.0, %slot, configuration = configuration.number, "state machine loaded the newest checkpoint");
            (slot, Some(configuration), record.last_slot)
        }
        None => (Slot::ZERO, None, None),
    };
    Ok(Loaded {
        opened,
        state_machine,
        checkpoint: slot,
        configuration,
        last_slot,
        skipped_checkpoints: skipped,
    })
}
