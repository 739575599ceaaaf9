//! Opening the configured log store (and, for the persistent-memory log, its checkpoint
//! directory) before the ring starts.

use rsl::log::{CheckpointOptions, CheckpointStore, PmemLog, PmemOptions, RecoveryPolicy};
use rsl::{FileStorage, MemoryStorage, Storage};

use super::ServerError;
use crate::config::{LogBackend, ServerConfig};

/// Opens the configured log store (and checkpoint directory) off the async threads.
pub(super) async fn open_storage(config: &ServerConfig) -> Result<Storage, ServerError> {
    let dir = config.data_dir.clone();
    match config.log {
        LogBackend::Memory => Ok(Storage::Memory(MemoryStorage::new())),
        LogBackend::File => Ok(Storage::File(FileStorage::new(dir))),
        LogBackend::Pmem => {
            let options = PmemOptions {
                // By default, room for two records of the largest request.
                capacity_bytes: config.tuning.pmem_capacity_bytes.unwrap_or(
                    PmemOptions::default()
                        .capacity_bytes
                        .max(2 * config.ring_config().request_bytes_max + (4 << 20)),
                ),
                flush: config.tuning.pmem_flush.unwrap_or_default(),
                log_id: u128::from(config.ring.0),
            };
            let path = config.pmem_path();
            let opened = tokio::task::spawn_blocking(move || {
                let (log, durable, report) = PmemLog::open(&path, &options, RecoveryPolicy::TruncateTornTail)
                    .map_err(|error| {
                        ServerError::Storage(format!("persistent-memory log {}: {error}", path.display()))
                    })?;
                // Say how stores are persisted: the figure of a benchmark depends on it, and an
                // operator should see that a tmpfs file is not durable.
                tracing::info!(
                    path = %path.display(),
                    flush = ?log.persistence(),
                    requested = %options.flush,
                    "pmem log opened"
                );
                if let Some(cut) = &report.torn_tail {
                    tracing::warn!(
                        offset = cut.offset,
                        bytes = cut.bytes_dropped,
                        "pmem log recovery cut a torn tail"
                    );
                }
                let checkpoints =
                    CheckpointStore::open(dir.join("checkpoints"), &CheckpointOptions::default())
                        .map_err(|error| ServerError::Storage(format!("checkpoints: {error}")))?;
                Ok::<_, ServerError>(Storage::Opened { log: Box::new(log), durable, checkpoints })
            })
            .await
            .map_err(|error| ServerError::Storage(format!("opening the log: {error}")))??;
            Ok(opened)
        }
    }
}
