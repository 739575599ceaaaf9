//! [`KvStateMachine`]: the replicated map, with per-client de-duplication and checkpoints,
//! and [`MachineEvents`], what the ring told it about checkpoints and primacy.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{self, Read as _, Write as _};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use rsl::{Ballot, NodeId, Slot, StateMachine};

use crate::command::{
    Digest, Read, ReadBatch, ReadOutcome, Reader, WriteBatch, WriteId, WriteOutcome, WriteRef, WriteResponse,
    KEY_BYTES_MAX, VALUE_BYTES_MAX,
};

/// Sessions (clients) remembered for de-duplication before the least recently written one
/// is forgotten.
pub const SESSIONS_MAX_DEFAULT: usize = 100_000;

/// First bytes of every checkpoint file.
pub const CHECKPOINT_MAGIC: [u8; 8] = *b"RSLKVCP\0";
/// Version of the checkpoint format written; load accepts only this one.
pub const CHECKPOINT_VERSION: u32 = 1;
/// Largest cached response in a checkpoint (a CAS answer carries a value).
const RESPONSE_BYTES_MAX: usize = VALUE_BYTES_MAX + 64;
/// Bytes before the body: magic, version, slot, body length.
const HEADER_BYTES: usize = 8 + 4 + 8 + 8;

/// The last write of one client session: its number and the answer to repeat if it is
/// retried (which holds the slot it executed in).
#[derive(Clone, Debug)]
struct Session {
    sequence: u64,
    response: WriteResponse,
    /// When it was last written, in writes remembered by this machine: its place in the
    /// eviction order (not part of the replicated state; see `session_order`).
    stamp: u64,
}

/// Executes `write` on `map`.
fn apply(map: &mut BTreeMap<String, Bytes>, write: WriteRef<'_>) -> WriteOutcome {
    match write {
        WriteRef::Put { key, value, .. } => {
            store(map, key, Bytes::copy_from_slice(value));
            WriteOutcome::Put
        }
        WriteRef::Delete { key, .. } => WriteOutcome::Deleted { existed: map.remove(key).is_some() },
        WriteRef::Cas { key, expected, value, .. } => {
            let current = map.get(key);
            if current.map(|current| &current[..]) == expected {
                let value = Bytes::copy_from_slice(value);
                store(map, key, value.clone());
                WriteOutcome::Cas { swapped: true, current: Some(value) }
            } else {
                WriteOutcome::Cas { swapped: false, current: current.cloned() }
            }
        }
    }
}

/// Sets `key` to `value`, allocating the key only when it is new.
fn store(map: &mut BTreeMap<String, Bytes>, key: &str, value: Bytes) {
    match map.get_mut(key) {
        Some(stored) => *stored = value,
        None => {
            map.insert(key.to_owned(), value);
        }
    }
}

/// The hasher of the sessions table.
type SessionHasher = foldhash::fast::RandomState;

/// The replicated key-value map: string keys, byte values.
///
/// - [`Write`](crate::command::Write)s (put, delete, compare-and-set) come through `execute`, in slot order, on
///   every replica. Each carries a [`WriteId`]: the machine remembers the newest sequence
///   number and answer per client, so a retried write (the client did not hear the answer:
///   a timeout, a failover) is answered again without executing twice, and an older one is
///   refused as [`WriteOutcome::Stale`]. At most `sessions_max` clients are remembered;
///   past that the one whose last write is oldest is forgotten (deterministically, so every
///   replica forgets the same one).
/// - [`Read`]s (get, digest) come through `read`.
/// - Checkpoints hold the map and the sessions in a versioned, length-prefixed, CRC32C
///   checked format (see [`KvStateMachine::save`]); loading a damaged one fails with an
///   error naming what is wrong and changes nothing.
///
/// Malformed request bytes never panic: a write answers [`WriteOutcome::Malformed`], a read
/// [`ReadOutcome::Malformed`]. Two machines are equal when their maps and sessions are.
#[derive(Clone, Debug)]
pub struct KvStateMachine {
    map: BTreeMap<String, Bytes>,
    /// Client id → its session. Every write looks its client up and remembers it, so the
    /// table hashes with foldhash (seeded per process), not SipHash; iteration order is
    /// never used (`session_order` is the order).
    sessions: HashMap<u64, Session, SessionHasher>,
    /// The eviction order: (stamp, client) for every write remembered, least recent first.
    /// An entry whose stamp is no longer its session's is stale and skipped; the queue is
    /// compacted when stale entries outnumber live ones three to one. Sessions are forgotten in the
    /// order their last writes executed, which every replica sees alike (and checkpoints
    /// keep it: they list sessions in this order).
    session_order: VecDeque<(u64, u64)>,
    /// The stamp of the newest write remembered.
    stamp: u64,
    sessions_max: usize,
    /// The last slot a write executed in (or the loaded checkpoint's slot): the slot the
    /// state reflects, for a backup's checkpoint ([`Read::Checkpoint`]). Not part of the
    /// compared state.
    applied: u64,
    /// Not replicated state: what this replica's ring told it (shared with every clone).
    events: Arc<MachineEvents>,
}

/// What the ring told a [`KvStateMachine`] through the state machine callbacks, counted
/// (each is also logged). Local to the replica, not part of the replicated state.
#[derive(Debug, Default)]
pub struct MachineEvents {
    /// Checkpoints this replica saved.
    pub checkpoints_saved: AtomicU64,
    /// The slot of the newest checkpoint this replica saved.
    pub last_saved_slot: AtomicU64,
    /// Its size in bytes.
    pub last_saved_bytes: AtomicU64,
    /// Checkpoints copied from a peer and loaded (catching up).
    pub checkpoints_loaded: AtomicU64,
    /// Checkpoints copied from a peer and only kept (as primary, to truncate the log).
    pub checkpoints_kept: AtomicU64,
    /// Times this replica became primary and had executed everything inherited.
    pub primary_recoveries: AtomicU64,
    /// The ring stopped.
    pub shut_down: AtomicBool,
}
impl PartialEq for KvStateMachine {
    fn eq(&self, other: &KvStateMachine) -> bool {
        // Stamps are local counters: sessions compare by content and eviction order; the
        // bound is a setting.
        let content = |machine: &KvStateMachine| {
            machine
                .sessions_in_order()
                .map(|(client, s)| (client, s.sequence, s.response.clone()))
                .collect::<Vec<_>>()
        };
        self.map == other.map
            && self.sessions.len() == other.sessions.len()
            && content(self) == content(other)
    }
}

impl Eq for KvStateMachine {}

impl Default for KvStateMachine {
    fn default() -> Self {
        KvStateMachine::new()
    }
}

/// Why a checkpoint was refused.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointFormatError {
    /// Reading failed.
    #[error("reading the checkpoint: {0}")]
    Io(#[from] io::Error),
    /// The file does not start with the checkpoint magic.
    #[error("not an rsl-kv checkpoint: magic {found:02x?}, expected {CHECKPOINT_MAGIC:02x?}")]
    Magic {
        /// The first bytes found.
        found: Vec<u8>,
    },
    /// A format version this build does not read.
    #[error("checkpoint format version {found}, this build reads version {CHECKPOINT_VERSION}")]
    Version {
        /// The version found.
        found: u32,
    },
    /// The checkpoint is of another slot than the one asked for.
    #[error("checkpoint holds slot {found}, expected slot {expected}")]
    Slot {
        /// The slot asked for.
        expected: u64,
        /// The slot in the file.
        found: u64,
    },
    /// The file ends early.
    #[error("checkpoint truncated: {what} needs {expected} bytes, found {found}")]
    Truncated {
        /// The part that is short.
        what: &'static str,
        /// Bytes expected.
        expected: u64,
        /// Bytes found.
        found: u64,
    },
    /// The checksum does not match the contents.
    #[error("checkpoint checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// CRC32C in the file.
        stored: u32,
        /// CRC32C of the bytes read.
        computed: u32,
    },
    /// The body does not parse (a checksum collision or a writer bug).
    #[error("checkpoint body: {0}")]
    Body(#[from] crate::command::DecodeError),
    /// Bytes follow the checksum.
    #[error("checkpoint has {0} bytes after its checksum")]
    Trailing(u64),
}

impl From<CheckpointFormatError> for io::Error {
    fn from(error: CheckpointFormatError) -> io::Error {
        match error {
            CheckpointFormatError::Io(error) => error,
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}

impl KvStateMachine {
    /// An empty map that remembers up to [`SESSIONS_MAX_DEFAULT`] clients.
    pub fn new() -> KvStateMachine {
        KvStateMachine::with_sessions_max(SESSIONS_MAX_DEFAULT)
    }

    /// An empty map that remembers up to `sessions_max` (at least 1) clients.
    pub fn with_sessions_max(sessions_max: usize) -> KvStateMachine {
        KvStateMachine {
            map: BTreeMap::new(),
            sessions: HashMap::default(),
            session_order: VecDeque::new(),
            stamp: 0,
            sessions_max: sessions_max.max(1),
            applied: 0,
            events: Arc::default(),
        }
    }

    /// What the ring told this machine (and every clone of it) so far.
    pub fn events(&self) -> Arc<MachineEvents> {
        self.events.clone()
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Bytes> {
        self.map.get(key)
    }

    /// Every key and its value, in key order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Bytes)> + '_ {
        self.map.iter().map(|(key, value)| (key.as_str(), value))
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Clients remembered for de-duplication.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// CRC32C over every entry in key order, and the number of keys.
    pub fn digest(&self) -> Digest {
        let mut crc = 0u32;
        for (key, value) in &self.map {
            crc = crc32c::crc32c_append(crc, &(key.len() as u32).to_le_bytes());
            crc = crc32c::crc32c_append(crc, key.as_bytes());
            crc = crc32c::crc32c_append(crc, &(value.len() as u32).to_le_bytes());
            crc = crc32c::crc32c_append(crc, value);
        }
        Digest { crc, keys: self.map.len() as u64 }
    }

    /// Executes an encoded [`Write`](crate::command::Write) or [`WriteBatch`] chosen in
    /// `slot` and returns the encoded [`WriteResponse`] (for a batch, the list of its
    /// writes' answers; a batch that does not decode as a whole changes nothing and gets
    /// one `Malformed` answer). Each write is read in place ([`WriteRef`]): only what the
    /// map keeps (a new key, a value) is copied out of `request`.
    pub fn execute_write(&mut self, slot: u64, request: &[u8]) -> Bytes {
        self.applied = self.applied.max(slot);
        if !WriteBatch::is_batch(request) {
            return self.execute_one(slot, request).encode();
        }
        match WriteBatch::split(request) {
            Ok(writes) => {
                let responses: Vec<WriteResponse> =
                    writes.into_iter().map(|write| self.execute_one(slot, write)).collect();
                WriteResponse::encode_batch(&responses)
            }
            Err(error) => {
                WriteResponse { slot, outcome: WriteOutcome::Malformed { reason: error.to_string() } }
                    .encode()
            }
        }
    }

    /// The most sessions remembered before the least recently written is forgotten.
    pub(crate) fn sessions_max(&self) -> usize {
        self.sessions_max
    }

    /// Executes one encoded write, read in place ([`WriteRef`]): nothing of it is copied
    /// but what the map keeps. The client's session is looked up once: a retry or an older
    /// write is answered from it, a new write updates it in place.
    fn execute_one(&mut self, slot: u64, request: &[u8]) -> WriteResponse {
        let write = match WriteRef::decode(request) {
            Ok(write) => write,
            Err(error) => {
                return WriteResponse { slot, outcome: WriteOutcome::Malformed { reason: error.to_string() } }
            }
        };
        let WriteId { client, sequence } = write.id();
        let stamp = self.stamp + 1;
        let response = match self.sessions.entry(client) {
            Entry::Occupied(mut entry) => {
                let session = entry.get_mut();
                if sequence == session.sequence {
                    return session.response.clone();
                }
                if sequence < session.sequence {
                    return WriteResponse { slot, outcome: WriteOutcome::Stale { newest: session.sequence } };
                }
                let response = WriteResponse { slot, outcome: apply(&mut self.map, write) };
                *session = Session { sequence, response: response.clone(), stamp };
                response
            }
            Entry::Vacant(entry) => {
                let response = WriteResponse { slot, outcome: apply(&mut self.map, write) };
                entry.insert(Session { sequence, response: response.clone(), stamp });
                response
            }
        };
        self.remembered(client, stamp);
        response
    }

    /// Serves an encoded [`Read`] and returns the encoded [`ReadOutcome`].
    /// A [`ReadBatch`] gets the list of its reads' answers (one that does not decode as a
    /// whole, a single `Malformed`).
    pub fn execute_read(&self, request: &[u8]) -> Bytes {
        if !ReadBatch::is_batch(request) {
            return self.read_one(request).encode();
        }
        match ReadBatch::split(request) {
            Ok(reads) => {
                let outcomes: Vec<ReadOutcome> = reads.into_iter().map(|read| self.read_one(read)).collect();
                ReadOutcome::encode_batch(&outcomes)
            }
            Err(error) => ReadOutcome::Malformed { reason: error.to_string() }.encode(),
        }
    }

    fn read_one(&self, request: &[u8]) -> ReadOutcome {
        match Read::decode(request) {
            Ok(Read::Get { key }) => ReadOutcome::Value(self.map.get(&key).cloned()),
            Ok(Read::Digest) => ReadOutcome::Digest(self.digest()),
            Ok(Read::Checkpoint) => {
                let mut data = Vec::new();
                match self.save(self.applied, &mut data) {
                    Ok(()) => ReadOutcome::Checkpoint { slot: self.applied, data: Bytes::from(data) },
                    Err(error) => ReadOutcome::Malformed { reason: format!("saving a checkpoint: {error}") },
                }
            }
            Err(error) => ReadOutcome::Malformed { reason: error.to_string() },
        }
    }

    /// The session of `client` was just written with `stamp`: it goes to the back of the
    /// eviction order, and the least recently written sessions past `sessions_max` are
    /// forgotten.
    fn remembered(&mut self, client: u64, stamp: u64) {
        self.stamp = stamp;
        self.session_order.push_back((stamp, client));
        while self.sessions.len() > self.sessions_max {
            let Some((stamp, oldest)) = self.session_order.pop_front() else { break };
            if self.sessions.get(&oldest).is_some_and(|session| session.stamp == stamp) {
                self.sessions.remove(&oldest);
            }
        }
        if self.session_order.len() > 4 * self.sessions.len() + 1024 {
            let sessions = &self.sessions;
            self.session_order
                .retain(|(stamp, client)| sessions.get(client).is_some_and(|s| s.stamp == *stamp));
        }
    }

    /// Every session, least recently written first.
    fn sessions_in_order(&self) -> impl Iterator<Item = (u64, &Session)> + '_ {
        self.session_order.iter().filter_map(|&(stamp, client)| {
            self.sessions
                .get(&client)
                .filter(|session| session.stamp == stamp)
                .map(|session| (client, session))
        })
    }

    /// Writes the checkpoint of this state at `slot`:
    ///
    /// ```text
    /// magic "RSLKVCP\0" (8) | version u32 | slot u64 | body_len u64 | body | crc32c u32
    /// body = entries u64, then per entry: key_len u32, key, value_len u32, value
    ///        sessions u64, then per session: client u64, sequence u64, slot u64,
    ///                                        response_len u32, response
    /// ```
    ///
    /// All integers little-endian; the CRC32C covers everything from `version` to the end
    /// of the body. Entries are in key order and sessions from the least to the most
    /// recently written (the order they are forgotten in), so equal states write equal
    /// files.
    pub fn save(&self, slot: u64, writer: &mut dyn io::Write) -> io::Result<()> {
        let mut body_len = 16u64;
        for (key, value) in &self.map {
            body_len += 8 + key.len() as u64 + value.len() as u64;
        }
        let responses: Vec<(u64, &Session, Bytes)> = self
            .sessions_in_order()
            .map(|(client, session)| (client, session, session.response.encode()))
            .collect();
        for (_, _, response) in &responses {
            body_len += 28 + response.len() as u64;
        }
        writer.write_all(&CHECKPOINT_MAGIC)?;
        let mut out = CrcWriter { inner: writer, crc: 0 };
        out.write_all(&CHECKPOINT_VERSION.to_le_bytes())?;
        out.write_all(&slot.to_le_bytes())?;
        out.write_all(&body_len.to_le_bytes())?;
        out.write_all(&(self.map.len() as u64).to_le_bytes())?;
        for (key, value) in &self.map {
            out.write_all(&(key.len() as u32).to_le_bytes())?;
            out.write_all(key.as_bytes())?;
            out.write_all(&(value.len() as u32).to_le_bytes())?;
            out.write_all(value)?;
        }
        out.write_all(&(responses.len() as u64).to_le_bytes())?;
        for (client, session, response) in responses {
            out.write_all(&client.to_le_bytes())?;
            out.write_all(&session.sequence.to_le_bytes())?;
            out.write_all(&session.response.slot.to_le_bytes())?;
            out.write_all(&(response.len() as u32).to_le_bytes())?;
            out.write_all(&response)?;
        }
        let crc = out.crc;
        writer.write_all(&crc.to_le_bytes())
    }

    /// Reads a checkpoint written by [`KvStateMachine::save`], checking magic, version,
    /// lengths, checksum and every field, and returns its slot and state (remembering up to
    /// `sessions_max` clients). Nothing is trusted before the checksum matches.
    pub fn load(
        reader: &mut dyn io::Read,
        sessions_max: usize,
    ) -> Result<(u64, KvStateMachine), CheckpointFormatError> {
        let mut header = Vec::with_capacity(HEADER_BYTES);
        reader.take(HEADER_BYTES as u64).read_to_end(&mut header)?;
        if header.len() < 8 || header[..8] != CHECKPOINT_MAGIC {
            return Err(CheckpointFormatError::Magic { found: header[..header.len().min(8)].to_vec() });
        }
        if header.len() < HEADER_BYTES {
            return Err(CheckpointFormatError::Truncated {
                what: "the header",
                expected: HEADER_BYTES as u64,
                found: header.len() as u64,
            });
        }
        let mut fields = Reader::new(&header[8..]);
        let version = fields.u32("checkpoint.version")?;
        let slot = fields.u64("checkpoint.slot")?;
        let body_len = fields.u64("checkpoint.body_len")?;
        // The body is read as far as it goes, never allocated from the stored length alone.
        let mut body = Vec::new();
        reader.take(body_len).read_to_end(&mut body)?;
        if (body.len() as u64) < body_len {
            return Err(CheckpointFormatError::Truncated {
                what: "the body",
                expected: body_len,
                found: body.len() as u64,
            });
        }
        let mut trailer = Vec::with_capacity(4);
        reader.take(4).read_to_end(&mut trailer)?;
        if trailer.len() < 4 {
            return Err(CheckpointFormatError::Truncated {
                what: "the checksum",
                expected: 4,
                found: trailer.len() as u64,
            });
        }
        let stored = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
        let computed = crc32c::crc32c_append(crc32c::crc32c(&header[8..]), &body);
        if stored != computed {
            return Err(CheckpointFormatError::Checksum { stored, computed });
        }
        let mut extra = Vec::new();
        reader.take(1 << 20).read_to_end(&mut extra)?;
        if !extra.is_empty() {
            return Err(CheckpointFormatError::Trailing(extra.len() as u64));
        }
        if version != CHECKPOINT_VERSION {
            return Err(CheckpointFormatError::Version { found: version });
        }
        let mut machine = KvStateMachine::with_sessions_max(sessions_max);
        let mut body = Reader::new(&body);
        let entries = body.u64("checkpoint.entries")?;
        for _ in 0..entries {
            let key = body.key()?;
            let value = body.value("checkpoint.value")?;
            machine.map.insert(key, value);
        }
        let sessions = body.u64("checkpoint.sessions")?;
        // Sessions are listed least recently written first (by slot, and within a slot in
        // execution order); files of earlier builds list them by client, so a stable sort
        // by slot gives the order either way.
        let mut loaded: Vec<(u64, u64, WriteResponse)> = Vec::new();
        for _ in 0..sessions {
            let client = body.u64("checkpoint.session.client")?;
            let sequence = body.u64("checkpoint.session.sequence")?;
            let session_slot = body.u64("checkpoint.session.slot")?;
            let response =
                WriteResponse::decode(body.bytes("checkpoint.session.response", RESPONSE_BYTES_MAX)?)?;
            if response.slot != session_slot {
                return Err(CheckpointFormatError::Body(crate::command::DecodeError::new(
                    "checkpoint.session.slot",
                    format!(
                        "session {client:#x}: slot {session_slot}, but its answer says slot {}",
                        response.slot
                    ),
                )));
            }
            loaded.push((client, sequence, response));
        }
        body.end("checkpoint body")?;
        loaded.sort_by_key(|(_, _, response)| response.slot);
        for (client, sequence, response) in loaded {
            let stamp = machine.stamp + 1;
            machine.sessions.insert(client, Session { sequence, response, stamp });
            machine.remembered(client, stamp);
        }
        machine.applied = slot;
        Ok((slot, machine))
    }
}

impl StateMachine for KvStateMachine {
    fn execute(&mut self, slot: Slot, request: &[u8]) -> Bytes {
        self.execute_write(slot.0, request)
    }

    fn read(&self, request: &[u8]) -> Bytes {
        self.execute_read(request)
    }

    fn save_checkpoint(&self, slot: Slot, writer: &mut dyn io::Write) -> io::Result<()> {
        self.save(slot.0, writer)
    }

    fn load_checkpoint(&mut self, slot: Slot, reader: &mut dyn io::Read) -> io::Result<()> {
        let (found, machine) = KvStateMachine::load(reader, self.sessions_max)?;
        if found != slot.0 {
            return Err(CheckpointFormatError::Slot { expected: slot.0, found }.into());
        }
        let events = self.events.clone();
        *self = machine;
        self.events = events;
        Ok(())
    }

    fn checkpoint_saved(&mut self, slot: Slot, data_bytes: u64) {
        let events = &self.events;
        events.checkpoints_saved.fetch_add(1, Ordering::Relaxed);
        events.last_saved_slot.store(slot.0, Ordering::Relaxed);
        events.last_saved_bytes.store(data_bytes, Ordering::Relaxed);
        tracing::debug!(%slot, data_bytes, keys = self.map.len(), "kv checkpoint saved");
    }

    fn checkpoint_copied(&mut self, slot: Slot, from: NodeId, loaded: bool) {
        let counter = if loaded { &self.events.checkpoints_loaded } else { &self.events.checkpoints_kept };
        counter.fetch_add(1, Ordering::Relaxed);
        tracing::info!(%slot, %from, loaded, keys = self.map.len(), "kv checkpoint copied from a peer");
    }

    fn primary_recovered(&mut self, ballot: Ballot, slot: Slot) {
        self.events.primary_recoveries.fetch_add(1, Ordering::Relaxed);
        tracing::info!(%ballot, %slot, keys = self.map.len(), "kv primary recovered: serving from the full state");
    }

    fn shut_down(&mut self) {
        self.events.shut_down.store(true, Ordering::Relaxed);
        tracing::info!(keys = self.map.len(), sessions = self.sessions.len(), "kv state machine shut down");
    }
}

/// Passes bytes through and keeps their CRC32C.
struct CrcWriter<'a> {
    inner: &'a mut dyn io::Write,
    crc: u32,
}

impl io::Write for CrcWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(bytes)?;
        self.crc = crc32c::crc32c_append(self.crc, &bytes[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

// Lengths in the checkpoint are u32: every key, value and response must fit.
const _: () = assert!(KEY_BYTES_MAX <= RESPONSE_BYTES_MAX && RESPONSE_BYTES_MAX < u32::MAX as usize);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Write;

    fn put(client: u64, sequence: u64, key: &str, value: &str) -> Bytes {
        Write::Put {
            id: WriteId { client, sequence },
            key: key.into(),
            value: Bytes::copy_from_slice(value.as_bytes()),
        }
        .encode()
    }

    fn cas(client: u64, sequence: u64, key: &str, expected: Option<&str>, value: &str) -> Bytes {
        Write::Cas {
            id: WriteId { client, sequence },
            key: key.into(),
            expected: expected.map(|e| Bytes::copy_from_slice(e.as_bytes())),
            value: Bytes::copy_from_slice(value.as_bytes()),
        }
        .encode()
    }

    fn delete(client: u64, sequence: u64, key: &str) -> Bytes {
        Write::Delete { id: WriteId { client, sequence }, key: key.into() }.encode()
    }

    const FORMAT_VERSION_FOR_TESTS: u8 = crate::command::FORMAT_VERSION;

    fn outcome(bytes: &[u8]) -> WriteResponse {
        WriteResponse::decode(bytes).expect("a valid response")
    }

    fn get(machine: &KvStateMachine, key: &str) -> Option<Bytes> {
        match ReadOutcome::decode(&machine.execute_read(&Read::Get { key: key.into() }.encode())).unwrap() {
            ReadOutcome::Value(value) => value,
            other => panic!("{other:?}"),
        }
    }

    /// A machine with a few keys and sessions.
    fn sample() -> KvStateMachine {
        let mut machine = KvStateMachine::new();
        machine.execute_write(1, &put(1, 1, "a", "1"));
        machine.execute_write(2, &put(2, 1, "b", "2"));
        machine.execute_write(2, &cas(1, 2, "a", Some("1"), "one"));
        machine.execute_write(3, &put(3, 1, "ключ", "значение"));
        machine.execute_write(4, &delete(3, 2, "b"));
        machine
    }

    fn batch(writes: &[&Bytes]) -> Bytes {
        let mut batch = WriteBatch::new();
        for write in writes {
            batch.push(&Write::decode(write).expect("a valid write"));
        }
        batch.finish()
    }

    #[test]
    fn the_callbacks_are_counted_and_survive_a_load() {
        let mut machine = sample();
        let events = machine.events();
        StateMachine::checkpoint_saved(&mut machine, Slot(4), 123);
        let mut file = Vec::new();
        machine.save_checkpoint(Slot(4), &mut file).unwrap();
        let mut other = KvStateMachine::new();
        other.load_checkpoint(Slot(4), &mut file.as_slice()).unwrap();
        // Loading replaces the state, not the replica's own record.
        machine.load_checkpoint(Slot(4), &mut file.as_slice()).unwrap();
        StateMachine::checkpoint_copied(&mut machine, Slot(4), NodeId(2), true);
        StateMachine::checkpoint_copied(&mut machine, Slot(8), NodeId(3), false);
        machine.primary_recovered(Ballot::new(2, NodeId(1)), Slot(8));
        machine.shut_down();
        assert_eq!(events.checkpoints_saved.load(Ordering::Relaxed), 1);
        assert_eq!(events.last_saved_slot.load(Ordering::Relaxed), 4);
        assert_eq!(events.last_saved_bytes.load(Ordering::Relaxed), 123);
        assert_eq!(events.checkpoints_loaded.load(Ordering::Relaxed), 1);
        assert_eq!(events.checkpoints_kept.load(Ordering::Relaxed), 1);
        assert_eq!(events.primary_recoveries.load(Ordering::Relaxed), 1);
        assert!(events.shut_down.load(Ordering::Relaxed));
        assert_eq!(other.events().checkpoints_saved.load(Ordering::Relaxed), 0, "not shared by loading");
        assert_eq!(machine, other);
    }

    #[test]
    fn a_batch_executes_like_its_writes_one_by_one() {
        let writes = [
            put(1, 1, "a", "1"),
            put(2, 1, "b", "2"),
            cas(1, 2, "a", Some("1"), "one"),
            delete(2, 2, "b"),
            // A retry inside the same batch repeats the first answer.
            cas(1, 2, "a", Some("1"), "one"),
            // Older than the session's newest: stale.
            put(2, 1, "b", "again"),
        ];
        let mut one_by_one = sample();
        let answers: Vec<WriteResponse> =
            writes.iter().map(|w| outcome(&one_by_one.execute_write(9, w))).collect();
        let mut batched = sample();
        let answer = batched.execute_write(9, &batch(&writes.iter().collect::<Vec<_>>()));
        assert_eq!(WriteResponse::decode_batch(&answer).expect("a batch answer"), answers);
        assert_eq!(batched, one_by_one);
        assert_eq!(answers[4], answers[2]);
        assert_eq!(answers[5].outcome, WriteOutcome::Stale { newest: 2 });
        // And a checkpoint taken after a batch loads back equal.
        let mut file = Vec::new();
        batched.save(9, &mut file).unwrap();
        let (slot, loaded) = KvStateMachine::load(&mut file.as_slice(), SESSIONS_MAX_DEFAULT).unwrap();
        assert_eq!((slot, &loaded), (9, &batched));
    }

    #[test]
    fn a_read_batch_answers_like_its_reads_one_by_one() {
        let machine = sample();
        let reads = [Read::Get { key: "a".into() }, Read::Get { key: "b".into() }, Read::Digest];
        let mut batch = ReadBatch::new();
        for read in &reads {
            batch.push(read);
        }
        let one_by_one: Vec<ReadOutcome> =
            reads.iter().map(|r| ReadOutcome::decode(&machine.execute_read(&r.encode())).unwrap()).collect();
        let batched = ReadOutcome::decode_batch(&machine.execute_read(&batch.finish())).unwrap();
        assert_eq!(batched, one_by_one);
        assert_eq!(batched[0], ReadOutcome::Value(Some(Bytes::from_static(b"one"))));
        assert_eq!(batched[1], ReadOutcome::Value(None));
        // A damaged batch is one Malformed answer.
        let mut damaged = ReadBatch::new();
        damaged.push(&Read::Digest);
        let mut bytes = damaged.finish().to_vec();
        bytes.truncate(bytes.len() - 1);
        let answer = ReadOutcome::decode_batch(&machine.execute_read(&bytes)).unwrap();
        assert!(matches!(answer.as_slice(), [ReadOutcome::Malformed { .. }]), "{answer:?}");
    }

    #[test]
    fn a_damaged_batch_changes_nothing_and_a_bad_write_only_itself() {
        let mut machine = sample();
        let before = machine.clone();
        let mut bytes = batch(&[&put(5, 1, "x", "1"), &put(6, 1, "y", "2")]).to_vec();
        bytes.pop();
        let answer = outcome(&machine.execute_write(10, &bytes));
        assert!(matches!(answer.outcome, WriteOutcome::Malformed { .. }), "{answer:?}");
        assert_eq!(machine, before);
        // A batch whose second write is not a write: the first and third still execute.
        let mut batch = WriteBatch::new();
        batch.push(&Write::decode(&put(5, 1, "x", "1")).unwrap());
        let mut raw = batch.finish().to_vec();
        // Version, an unknown kind, client and sequence.
        raw.extend_from_slice(&18u32.to_le_bytes());
        raw.extend_from_slice(&[FORMAT_VERSION_FOR_TESTS, 99]);
        raw.extend_from_slice(&[1; 16]);
        let third = put(6, 1, "y", "2");
        raw.extend_from_slice(&(third.len() as u32).to_le_bytes());
        raw.extend_from_slice(&third);
        raw[2..6].copy_from_slice(&3u32.to_le_bytes());
        let answers = WriteResponse::decode_batch(&machine.execute_write(11, &raw)).unwrap();
        assert_eq!(answers.len(), 3);
        assert_eq!(answers[0].outcome, WriteOutcome::Put);
        assert!(
            matches!(&answers[1].outcome, WriteOutcome::Malformed { reason } if reason.contains("write.kind"))
        );
        assert_eq!(answers[2].outcome, WriteOutcome::Put);
        assert_eq!(machine.get("x").map(|v| v.as_ref()), Some(&b"1"[..]));
        assert_eq!(machine.get("y").map(|v| v.as_ref()), Some(&b"2"[..]));
    }

    #[test]
    fn put_get_delete() {
        let mut machine = KvStateMachine::new();
        assert_eq!(outcome(&machine.execute_write(5, &put(1, 1, "k", "v"))).outcome, WriteOutcome::Put);
        assert_eq!(get(&machine, "k").as_deref(), Some(&b"v"[..]));
        let deleted = outcome(&machine.execute_write(6, &delete(1, 2, "k")));
        assert_eq!(deleted, WriteResponse { slot: 6, outcome: WriteOutcome::Deleted { existed: true } });
        assert_eq!(get(&machine, "k"), None);
        let again = outcome(&machine.execute_write(7, &delete(1, 3, "k")));
        assert_eq!(again.outcome, WriteOutcome::Deleted { existed: false });
    }

    #[test]
    fn cas_swaps_only_on_a_match() {
        let mut machine = KvStateMachine::new();
        // Expecting absence on an absent key creates it.
        let created = outcome(&machine.execute_write(1, &cas(1, 1, "k", None, "v1")));
        assert_eq!(
            created.outcome,
            WriteOutcome::Cas { swapped: true, current: Some(Bytes::from_static(b"v1")) }
        );
        // Expecting absence on a present key fails and reports the value.
        let refused = outcome(&machine.execute_write(2, &cas(1, 2, "k", None, "v2")));
        assert_eq!(
            refused.outcome,
            WriteOutcome::Cas { swapped: false, current: Some(Bytes::from_static(b"v1")) }
        );
        // A wrong expected value fails; the right one swaps.
        let wrong = outcome(&machine.execute_write(3, &cas(1, 3, "k", Some("nope"), "v2")));
        assert!(matches!(wrong.outcome, WriteOutcome::Cas { swapped: false, .. }));
        let swapped = outcome(&machine.execute_write(4, &cas(1, 4, "k", Some("v1"), "v2")));
        assert!(matches!(swapped.outcome, WriteOutcome::Cas { swapped: true, .. }));
        assert_eq!(get(&machine, "k").as_deref(), Some(&b"v2"[..]));
        // Expecting a value on an absent key fails with no current value.
        let absent = outcome(&machine.execute_write(5, &cas(1, 5, "other", Some("x"), "y")));
        assert_eq!(absent.outcome, WriteOutcome::Cas { swapped: false, current: None });
        assert_eq!(get(&machine, "other"), None);
    }

    #[test]
    fn retried_writes_execute_once() {
        let mut machine = KvStateMachine::new();
        let first = machine.execute_write(10, &cas(9, 1, "k", None, "a"));
        assert!(matches!(outcome(&first).outcome, WriteOutcome::Cas { swapped: true, .. }));
        // Another client changes the key; then client 9's retry arrives in a later slot.
        machine.execute_write(11, &put(8, 1, "k", "b"));
        let retry = machine.execute_write(12, &cas(9, 1, "k", None, "a"));
        assert_eq!(retry, first, "the retry gets the first answer, slot included");
        assert_eq!(get(&machine, "k").as_deref(), Some(&b"b"[..]), "the retry did not execute");
        // A put retried after the client moved on is refused as stale.
        machine.execute_write(13, &put(9, 2, "k", "c"));
        let stale = outcome(&machine.execute_write(14, &put(9, 1, "k", "old")));
        assert_eq!(stale, WriteResponse { slot: 14, outcome: WriteOutcome::Stale { newest: 2 } });
        assert_eq!(get(&machine, "k").as_deref(), Some(&b"c"[..]));
        // A sequence gap is fine: numbers only have to increase.
        let later = outcome(&machine.execute_write(15, &put(9, 10, "k", "d")));
        assert_eq!(later.outcome, WriteOutcome::Put);
    }

    #[test]
    fn sessions_are_bounded_and_the_oldest_is_forgotten() {
        let mut machine = KvStateMachine::with_sessions_max(2);
        machine.execute_write(1, &put(1, 1, "a", "1"));
        machine.execute_write(2, &put(2, 1, "b", "2"));
        machine.execute_write(3, &put(1, 2, "a", "3"));
        machine.execute_write(4, &put(3, 1, "c", "4"));
        assert_eq!(machine.sessions(), 2);
        // Client 2 wrote least recently and was forgotten: its retry executes again (and
        // client 3, now the least recent, is forgotten in turn).
        machine.execute_write(5, &put(1, 3, "b", "changed"));
        machine.execute_write(6, &put(2, 1, "b", "2"));
        assert_eq!(get(&machine, "b").as_deref(), Some(&b"2"[..]));
        assert_eq!(machine.sessions(), 2);
        // Client 1 is still remembered: its retry is answered, not executed.
        let retry = outcome(&machine.execute_write(7, &put(1, 3, "b", "changed")));
        assert_eq!(retry.slot, 5);
        assert_eq!(get(&machine, "b").as_deref(), Some(&b"2"[..]));
    }

    #[test]
    fn the_eviction_order_survives_a_checkpoint() {
        // Three sessions written in one slot, in an order that is not their client order.
        let mut live = KvStateMachine::with_sessions_max(3);
        let writes = [put(9, 1, "a", "1"), put(2, 1, "b", "2"), put(5, 1, "c", "3")];
        live.execute_write(1, &batch(&writes.iter().collect::<Vec<_>>()));
        let mut file = Vec::new();
        live.save(1, &mut file).unwrap();
        let (_, mut restored) = KvStateMachine::load(&mut file.as_slice(), 3).unwrap();
        assert_eq!(restored, live);
        // A fourth session evicts client 9 (least recent) on both; its retry executes again.
        for machine in [&mut live, &mut restored] {
            machine.execute_write(2, &put(7, 1, "d", "4"));
            assert_eq!(machine.sessions(), 3);
            let retry = outcome(&machine.execute_write(3, &put(9, 1, "a", "again")));
            assert_eq!(retry.slot, 3, "client 9 was forgotten and its retry executed");
            let kept = outcome(&machine.execute_write(4, &put(5, 1, "c", "again")));
            assert_eq!(kept.slot, 1, "client 5 is remembered");
        }
        assert_eq!(restored, live);
        // Many writes by the same sessions keep the order queue bounded.
        let mut machine = KvStateMachine::with_sessions_max(4);
        for sequence in 1..10_000 {
            machine.execute_write(sequence, &put(1 + sequence % 3, sequence, "k", "v"));
        }
        assert!(
            machine.session_order.len() <= 4 * machine.sessions() + 1025,
            "{}",
            machine.session_order.len()
        );
    }

    #[test]
    fn malformed_requests_are_answered_not_executed() {
        let mut machine = sample();
        let before = machine.clone();
        for bad in [&b""[..], b"\x01", b"\x01\x01garbage", b"\x07\x01"] {
            let response = outcome(&machine.execute_write(9, bad));
            assert!(matches!(response.outcome, WriteOutcome::Malformed { .. }), "{bad:?}: {response:?}");
            let read = ReadOutcome::decode(&machine.execute_read(bad)).unwrap();
            assert!(matches!(read, ReadOutcome::Malformed { .. }), "{bad:?}: {read:?}");
        }
        assert_eq!(machine, before);
    }

    #[test]
    fn checkpoint_round_trip() {
        let machine = sample();
        let mut bytes = Vec::new();
        machine.save(42, &mut bytes).unwrap();
        let (slot, loaded) = KvStateMachine::load(&mut bytes.as_slice(), SESSIONS_MAX_DEFAULT).unwrap();
        assert_eq!(slot, 42);
        assert_eq!(loaded, machine);
        assert_eq!(loaded.digest(), machine.digest());
        // Deterministic: equal states write equal bytes.
        let mut again = Vec::new();
        loaded.save(42, &mut again).unwrap();
        assert_eq!(again, bytes);
        // Through the StateMachine trait, with the slot checked.
        let mut restored = KvStateMachine::new();
        restored.load_checkpoint(Slot(42), &mut bytes.as_slice()).unwrap();
        assert_eq!(restored, machine);
        let error = restored.load_checkpoint(Slot(43), &mut bytes.as_slice()).unwrap_err();
        assert!(error.to_string().contains("holds slot 42, expected slot 43"), "{error}");
        // Sessions survive: a retry after a restore is still de-duplicated.
        let retry = outcome(&restored.execute_write(50, &delete(3, 2, "b")));
        assert_eq!(retry, WriteResponse { slot: 4, outcome: WriteOutcome::Deleted { existed: true } });
        // An empty machine round-trips too.
        let mut empty = Vec::new();
        KvStateMachine::new().save(0, &mut empty).unwrap();
        assert_eq!(KvStateMachine::load(&mut empty.as_slice(), 1).unwrap().1, KvStateMachine::new());
    }

    #[test]
    fn corrupt_checkpoints_are_rejected_with_a_clear_error() {
        let machine = sample();
        let mut bytes = Vec::new();
        machine.save(42, &mut bytes).unwrap();
        let load = |bytes: &[u8]| KvStateMachine::load(&mut &bytes[..], SESSIONS_MAX_DEFAULT).map(|_| ());

        // Every single-bit flip anywhere is caught.
        for at in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x10;
            assert!(load(&flipped).is_err(), "a flip at byte {at} was not detected");
        }
        // Every truncation is caught.
        for len in 0..bytes.len() {
            assert!(load(&bytes[..len]).is_err(), "a truncation to {len} bytes was not detected");
        }
        // The errors say what is wrong.
        let mut flipped = bytes.clone();
        let body_byte = HEADER_BYTES + 3;
        flipped[body_byte] ^= 1;
        let error = load(&flipped).unwrap_err().to_string();
        assert!(error.contains("checksum mismatch"), "{error}");
        let error = load(b"PNG\x00\x00\x00\x00\x00").unwrap_err().to_string();
        assert!(error.contains("not an rsl-kv checkpoint"), "{error}");
        let error = load(&bytes[..bytes.len() - 2]).unwrap_err().to_string();
        assert!(error.contains("truncated") && error.contains("checksum"), "{error}");
        let mut trailing = bytes.clone();
        trailing.extend_from_slice(b"xyz");
        assert_eq!(load(&trailing).unwrap_err().to_string(), "checkpoint has 3 bytes after its checksum");
        // A lying body length does not allocate it.
        let mut huge = bytes.clone();
        huge[20..28].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            KvStateMachine::load(&mut huge.as_slice(), 1),
            Err(CheckpointFormatError::Truncated { what: "the body", .. })
        ));
        // A future version is refused by name (with a valid checksum).
        let mut future = bytes.clone();
        future[8..12].copy_from_slice(&2u32.to_le_bytes());
        let crc = crc32c::crc32c(&future[8..future.len() - 4]);
        let end = future.len();
        future[end - 4..].copy_from_slice(&crc.to_le_bytes());
        let error = load(&future).unwrap_err().to_string();
        assert!(error.contains("format version 2"), "{error}");

        // Through the trait the machine is left unchanged and the error is InvalidData.
        let mut target = sample();
        let mut flipped = bytes.clone();
        flipped[body_byte] ^= 1;
        let error = target.load_checkpoint(Slot(42), &mut flipped.as_slice()).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert_eq!(target, sample());
    }

    #[test]
    fn digest_tracks_contents_not_history() {
        let mut one = KvStateMachine::new();
        one.execute_write(1, &put(1, 1, "a", "1"));
        one.execute_write(2, &put(1, 2, "b", "2"));
        let mut two = KvStateMachine::new();
        two.execute_write(1, &put(5, 1, "b", "2"));
        two.execute_write(2, &put(5, 2, "a", "x"));
        assert_ne!(one.digest(), two.digest());
        two.execute_write(3, &put(5, 3, "a", "1"));
        assert_eq!(one.digest(), two.digest());
        assert_eq!(one.digest().keys, 2);
        // Moving a byte between key and value changes the digest.
        let mut three = KvStateMachine::new();
        three.execute_write(1, &put(1, 1, "ab", ""));
        let mut four = KvStateMachine::new();
        four.execute_write(1, &put(1, 1, "a", "b"));
        assert_ne!(three.digest(), four.digest());
    }
}
