//! What the file journal and the persistent-memory log share above their media: staging
//! persist requests and truncations as framed records until the next flush, the slot
//! index, tickets and statistics, and the one implementation of [`LogStore`] that serves
//! both.
//!
//! A store on a medium ([`crate::FileJournal`], [`crate::PmemLog`]) owns a [`Staging`] and
//! implements [`StagedStore`]: how the staged records become durable on its medium, and how
//! a stored record is read back. Everything else a [`LogStore`] does is here, once:
//! - `append` and `truncate_below` encode a record into the staging buffer behind room for
//!   the medium's frame header (no I/O) and update the current view of the index at once;
//! - `flush` hands the staged records to the medium, which seals their frames, writes them,
//!   makes them durable and reports each run it committed ([`Staging::commit`]), in log
//!   order; a failure poisons the store, except [`LogError::Full`];
//! - `read_range` follows the index to each slot's latest proposal, decoding its record
//!   from the staging buffer or reading it back from the medium.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

use bytes::Bytes;
use rsl_core::{Ballot, DurableState, PersistRequest, Proposal, Slot};

use crate::codec::{encode_persist, Record, RECORD_PERSIST, RECORD_TRUNCATE};
use crate::error::LogError;
use crate::state::{Location, Replay, SlotIndex, Summary};
use crate::store::{LogStatistics, LogStore, ReadBudget, RecoveryReport, Tickets};

/// Where a medium stores a record (a segment and offset, a log position).
pub(crate) trait Address: Copy + Eq + fmt::Debug {
    /// The storage container holding the record, whose live proposals the index counts
    /// (a segment's sequence number, an entry's position).
    fn container(&self) -> u64;
}

/// Where a record is: staged (its number among the staged records) or stored on the
/// medium with a payload of `payload_bytes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RecordAt<A> {
    Staged(u32),
    Stored { address: A, payload_bytes: u32 },
}

/// Where a proposal is: the `index`-th proposal of a staged or a stored record. Kept flat
/// (not a [`RecordAt`] and an index) so that the index's entries stay small.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProposalAt<A> {
    Staged { record: u32, index: u32 },
    Stored { address: A, payload_bytes: u32, index: u32 },
}

impl<A: Copy> ProposalAt<A> {
    fn record(&self) -> RecordAt<A> {
        match *self {
            ProposalAt::Staged { record, .. } => RecordAt::Staged(record),
            ProposalAt::Stored { address, payload_bytes, .. } => RecordAt::Stored { address, payload_bytes },
        }
    }

    fn index(&self) -> u32 {
        match *self {
            ProposalAt::Staged { index, .. } | ProposalAt::Stored { index, .. } => index,
        }
    }
}

impl<A: Address> Location for ProposalAt<A> {
    fn container(&self) -> Option<u64> {
        match self {
            ProposalAt::Staged { .. } => None,
            ProposalAt::Stored { address, .. } => Some(address.container()),
        }
    }
}

/// The largest record a medium accepts; a larger one is [`LogError::TooLarge`], stating
/// the size this limit counts.
#[derive(Clone, Copy, Debug)]
pub(crate) enum SizeLimit {
    /// The payload may hold at most this many bytes.
    Payload(u64),
    /// The whole frame, header and padding included, may hold at most this many bytes.
    Frame(u64),
}

/// How a medium frames its records.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Framing {
    /// Bytes of the frame header in front of each payload, sealed by the medium when it
    /// writes the record.
    pub header_bytes: u64,
    /// Frames start at multiples of this.
    pub alignment: u64,
    /// The largest record accepted.
    pub limit: SizeLimit,
}

impl Framing {
    /// The largest payload a record may carry under this framing's limit.
    pub const fn payload_bytes_max(&self) -> u64 {
        match self.limit {
            SizeLimit::Payload(max) => max,
            // The frame is the payload behind its header, padded up to the alignment.
            SizeLimit::Frame(max) => {
                (max / self.alignment * self.alignment).saturating_sub(self.header_bytes)
            }
        }
    }

    /// `len` rounded up to the alignment.
    pub const fn aligned(&self, len: u64) -> u64 {
        len.div_ceil(self.alignment) * self.alignment
    }
}

/// A record waiting in the staging buffer for the next flush.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StagedRecord {
    /// Where its frame starts in the staging buffer.
    pub start: usize,
    pub payload_bytes: u32,
    /// Its record type ([`crate::codec`]).
    pub kind: u8,
    /// What it establishes besides its proposals.
    pub promise: Option<Ballot>,
    pub chosen: Option<Slot>,
    pub floor: Option<Slot>,
}

/// A staged proposal the current view of the index points at.
#[derive(Clone, Copy, Debug)]
struct StagedSlot {
    slot: Slot,
    record: u32,
    index: u32,
}

/// Everything of a log store that is not its medium; see the module docs.
pub(crate) struct Staging<A> {
    framing: Framing,
    /// The staged records' frames back to back, each padded to the alignment, headers
    /// left for the medium to seal.
    buffer: Vec<u8>,
    records: Vec<StagedRecord>,
    /// In log order.
    slots: Vec<StagedSlot>,
    /// Staged records (a prefix) already committed by a flush that did not finish (the
    /// persistent-memory log commits a flush in runs when space is short).
    committed_records: usize,
    /// How many of `slots` belong to committed records.
    committed_slots: usize,
    pub index: SlotIndex<ProposalAt<A>>,
    /// What the committed records establish: the content of the next snapshot record.
    pub committed: Summary,
    /// The highest slot a committed record holds (after recovery: any record held).
    pub committed_highest_slot: Slot,
    pub tickets: Tickets,
    pub statistics: LogStatistics,
}

impl<A> fmt::Debug for Staging<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Staging")
            .field("staged_records", &self.records.len())
            .field("staged_bytes", &self.buffer.len())
            .field("appended_ticket", &self.tickets.appended)
            .field("durable_ticket", &self.tickets.durable)
            .finish()
    }
}

impl<A: Address> Staging<A> {
    pub fn new(framing: Framing) -> Staging<A> {
        Staging {
            framing,
            buffer: Vec::new(),
            records: Vec::new(),
            slots: Vec::new(),
            committed_records: 0,
            committed_slots: 0,
            index: SlotIndex::default(),
            committed: Summary::default(),
            committed_highest_slot: Slot::ZERO,
            tickets: Tickets::default(),
            statistics: LogStatistics::default(),
        }
    }

    /// Takes over what recovery replayed from the medium; counts the records and the log's
    /// start in `report` and returns the durable state.
    pub fn recovered(&mut self, replay: Replay<ProposalAt<A>>, report: &mut RecoveryReport) -> DurableState {
        report.records = replay.records;
        let (index, state) = replay.finish();
        self.index = index;
        self.committed = self.index.summary();
        self.committed_highest_slot = self.index.highest_slot();
        report.log_start = self.committed.floor;
        state
    }

    fn append(&mut self, request: &PersistRequest) -> Result<(), LogError> {
        self.tickets.admit(request.ticket)?;
        if !request.is_empty() {
            let record = self.stage(RECORD_PERSIST, |out| encode_persist(request, out))?;
            let staged = &mut self.records[record as usize];
            staged.promise = request.promise;
            staged.chosen = request.chosen;
            self.index.observe(request.promise, request.chosen);
            for (i, proposal) in request.proposals.iter().enumerate() {
                let index = u32::try_from(i).expect("proposal index fits in u32");
                if self.index.put(proposal.slot, ProposalAt::Staged { record, index }) {
                    self.slots.push(StagedSlot { slot: proposal.slot, record, index });
                }
            }
        }
        self.tickets.appended = request.ticket;
        self.statistics.appends += 1;
        Ok(())
    }

    fn truncate_below(&mut self, below: Slot) -> Result<(), LogError> {
        self.tickets.check_usable()?;
        if below <= self.index.summary().floor {
            return Ok(());
        }
        let record = self.stage(RECORD_TRUNCATE, |out| Record::Truncate { below }.encode(out))?;
        self.records[record as usize].floor = Some(below);
        self.index.truncate(below);
        Ok(())
    }

    /// Encodes a record of type `kind` behind room for its frame header; returns its number.
    /// A record over the limit poisons the store: its request cannot be made durable.
    fn stage(&mut self, kind: u8, encode: impl FnOnce(&mut Vec<u8>)) -> Result<u32, LogError> {
        let start = self.buffer.len();
        let header_bytes = self.framing.header_bytes;
        self.buffer.resize(start + header_bytes as usize, 0);
        encode(&mut self.buffer);
        let payload_bytes = (self.buffer.len() - start) as u64 - header_bytes;
        let frame_bytes = self.framing.aligned(header_bytes + payload_bytes);
        let (bytes, max) = match self.framing.limit {
            SizeLimit::Payload(max) => (payload_bytes, max),
            SizeLimit::Frame(max) => (frame_bytes, max),
        };
        if bytes > max || payload_bytes > u64::from(u32::MAX) {
            self.buffer.truncate(start);
            return Err(self.tickets.poison(LogError::TooLarge { bytes, max }));
        }
        self.buffer.resize(start + frame_bytes as usize, 0);
        let record = u32::try_from(self.records.len()).expect("staged records fit in u32");
        self.records.push(StagedRecord {
            start,
            payload_bytes: payload_bytes as u32,
            kind,
            promise: None,
            chosen: None,
            floor: None,
        });
        Ok(record)
    }

    /// Whether no record is staged (records committed by a flush that did not finish still
    /// count as staged).
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The staged records.
    pub fn records(&self) -> &[StagedRecord] {
        &self.records
    }

    /// The numbers of the staged records not committed yet.
    pub fn uncommitted(&self) -> Range<usize> {
        self.committed_records..self.records.len()
    }

    /// Where the frame of staged record `i` ends in the staging buffer.
    pub fn frame_end(&self, i: usize) -> usize {
        self.records.get(i + 1).map_or(self.buffer.len(), |next| next.start)
    }

    /// The frames of `records`, back to back.
    pub fn frames(&self, records: Range<usize>) -> &[u8] {
        match records.len() {
            0 => &[],
            _ => &self.buffer[self.records[records.start].start..self.frame_end(records.end - 1)],
        }
    }

    /// Seals the frame of each of `records` with `seal(record, at, frame)`: `at` is where
    /// the frame starts relative to the first of `records` (where the run is written), and
    /// `frame` the buffer from the frame's header on.
    pub fn seal(&mut self, records: Range<usize>, mut seal: impl FnMut(&StagedRecord, u64, &mut [u8])) {
        let Some(first) = self.records.get(records.start) else { return };
        let run_start = first.start;
        for record in &self.records[records] {
            seal(record, (record.start - run_start) as u64, &mut self.buffer[record.start..]);
        }
    }

    /// The medium wrote the uncommitted records before `end` as one run, each at
    /// `address(record, at)` (`at` as for [`Staging::seal`]), and they are (or, for the
    /// journal, become with this flush's sync) durable: the committed view follows them in
    /// log order. Once every record is committed the buffer empties.
    pub fn commit(&mut self, end: usize, mut address: impl FnMut(&StagedRecord, u64) -> A) {
        let first = self.committed_records;
        if first == end {
            return;
        }
        let run_start = self.records[first].start;
        self.statistics.records += (end - first) as u64;
        self.statistics.bytes_written += self.frames(first..end).len() as u64;
        for number in first..end {
            let record = self.records[number];
            let stored = address(&record, (record.start - run_start) as u64);
            self.committed.observe(record.promise, record.chosen, record.floor);
            while let Some(&StagedSlot { slot, record: owner, index }) = self.slots.get(self.committed_slots)
            {
                if owner as usize != number {
                    break;
                }
                let to = ProposalAt::Stored { address: stored, payload_bytes: record.payload_bytes, index };
                self.index.commit_put(slot, ProposalAt::Staged { record: owner, index }, to);
                self.committed_highest_slot = self.committed_highest_slot.max(slot);
                self.committed_slots += 1;
            }
            if let Some(below) = record.floor {
                self.index.commit_truncate(below);
            }
        }
        self.committed_records = end;
        if end == self.records.len() {
            self.buffer.clear();
            self.records.clear();
            self.slots.clear();
            self.committed_records = 0;
            self.committed_slots = 0;
        }
    }

    /// Decodes staged record `record`.
    fn decode(&self, record: u32) -> Record {
        let staged = self.records[record as usize];
        let start = staged.start + self.framing.header_bytes as usize;
        let payload = Bytes::copy_from_slice(&self.buffer[start..start + staged.payload_bytes as usize]);
        Record::decode(staged.kind, &payload).expect("staged records decode")
    }
}

/// A log store made of a medium and a [`Staging`]: what the medium provides to the shared
/// [`LogStore`] implementation.
pub(crate) trait StagedStore: Send + fmt::Debug {
    /// Where the medium stores a record.
    type Address: Address;
    /// What the medium calls a record, in messages.
    const RECORD: &'static str;

    fn staging(&self) -> &Staging<Self::Address>;

    fn staging_mut(&mut self) -> &mut Staging<Self::Address>;

    /// Writes the uncommitted staged records and makes them durable, committing each run
    /// ([`Staging::commit`]) in log order. Called by `flush` only while the store is usable;
    /// any error but [`LogError::Full`] poisons it.
    fn write_staged(&mut self) -> Result<(), LogError>;

    /// Reads back and verifies the record with `payload_bytes` stored at `address`.
    fn read_stored(&self, address: Self::Address, payload_bytes: u32) -> Result<Record, LogError>;

    /// The file and byte offset that an error about the record at `at` names.
    fn locate(&self, at: RecordAt<Self::Address>) -> (PathBuf, u64);
}

impl<S: StagedStore> LogStore for S {
    fn append(&mut self, request: &PersistRequest) -> Result<(), LogError> {
        self.staging_mut().append(request)
    }

    fn truncate_below(&mut self, below: Slot) -> Result<(), LogError> {
        self.staging_mut().truncate_below(below)
    }

    fn flush(&mut self) -> Result<u64, LogError> {
        self.staging().tickets.check_usable()?;
        match self.write_staged() {
            Ok(()) => Ok(self.staging_mut().tickets.flushed()),
            // The runs that fit are committed; the rest stays staged for a later flush.
            Err(error @ LogError::Full { .. }) => Err(error),
            Err(error) => Err(self.staging_mut().tickets.poison(error)),
        }
    }

    fn needs_flush(&self) -> bool {
        !self.staging().is_empty() || self.staging().tickets.unflushed()
    }

    fn record_bytes_max(&self) -> u64 {
        self.staging().framing.payload_bytes_max()
    }

    fn durable_ticket(&self) -> u64 {
        self.staging().tickets.durable
    }

    fn appended_ticket(&self) -> u64 {
        self.staging().tickets.appended
    }

    fn read_range(&mut self, first: Slot, last: Slot, bytes_max: u64) -> Result<Vec<Proposal>, LogError> {
        self.staging().tickets.check_usable()?;
        let locations: Vec<(Slot, ProposalAt<S::Address>)> =
            self.staging().index.range(first, last).collect();
        let mut budget = ReadBudget::new(bytes_max);
        let mut out = Vec::new();
        let mut cached: Option<(RecordAt<S::Address>, Record)> = None;
        for (slot, location) in locations {
            let at = location.record();
            if cached.as_ref().is_none_or(|(cached_at, _)| *cached_at != at) {
                let record = match at {
                    RecordAt::Staged(record) => self.staging().decode(record),
                    RecordAt::Stored { address, payload_bytes } => {
                        self.read_stored(address, payload_bytes)?
                    }
                };
                cached = Some((at, record));
            }
            let (_, record) = cached.as_ref().expect("just cached");
            let index = location.index();
            let proposal = match record {
                Record::Persist { proposals, .. } => proposals.get(index as usize).filter(|p| p.slot == slot),
                _ => None,
            };
            let Some(proposal) = proposal else {
                let (file, offset) = self.locate(at);
                let reason = format!("{} holds no proposal {index} for slot {slot}", S::RECORD);
                return Err(LogError::corrupt(file, offset, reason));
            };
            if !budget.admits(proposal) {
                break;
            }
            out.push(proposal.clone());
        }
        Ok(out)
    }

    fn log_start(&self) -> Slot {
        self.staging().index.summary().floor
    }

    fn last_slot(&self) -> Slot {
        self.staging().index.last_slot()
    }

    fn statistics(&self) -> LogStatistics {
        self.staging().statistics
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use rsl_core::{NodeId, Request, RequestId, Value};

    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    struct At(u64);

    impl Address for At {
        fn container(&self) -> u64 {
            self.0
        }
    }

    fn staging(limit: SizeLimit) -> Staging<At> {
        Staging::new(Framing { header_bytes: 16, alignment: 8, limit })
    }

    fn request(ticket: u64, slots: &[u64], payload_bytes: usize) -> PersistRequest {
        let proposals = slots
            .iter()
            .map(|&slot| Proposal {
                ballot: Ballot::new(1, NodeId(1)),
                slot: Slot(slot),
                value: Value::Batch(
                    vec![Request {
                        id: RequestId { client: 1, sequence: slot },
                        payload: Bytes::from(vec![7; payload_bytes]),
                    }]
                    .into(),
                ),
            })
            .collect();
        PersistRequest { ticket, promise: None, proposals, chosen: None }
    }

    #[test]
    fn records_are_staged_in_aligned_frames_and_one_over_the_limit_poisons() {
        let mut staging = staging(SizeLimit::Frame(128));
        staging.append(&request(1, &[1], 3)).unwrap();
        staging.append(&request(2, &[], 0)).unwrap();
        staging.truncate_below(Slot(0)).unwrap();
        staging.truncate_below(Slot(1)).unwrap();
        assert_eq!(
            staging.records().len(),
            2,
            "an empty request and a truncation at the floor stage nothing"
        );
        for (i, record) in staging.records().iter().enumerate() {
            assert_eq!(record.start % 8, 0);
            assert_eq!(
                staging.frame_end(i) - record.start,
                (16 + record.payload_bytes as usize).div_ceil(8) * 8
            );
        }
        assert_eq!(
            staging.decode(0),
            Record::Persist { promise: None, chosen: None, proposals: request(1, &[1], 3).proposals }
        );
        let error = staging.append(&request(3, &[2], 200)).unwrap_err();
        assert!(matches!(error, LogError::TooLarge { max: 128, .. }), "{error}");
        assert!(matches!(staging.append(&request(4, &[], 0)), Err(LogError::Poisoned { .. })));
        assert_eq!(
            (staging.records().len(), staging.tickets.appended),
            (2, 2),
            "nothing of the refused request stayed"
        );
    }

    #[test]
    fn runs_commit_in_log_order_and_the_buffer_empties_after_the_last() {
        let mut staging = staging(SizeLimit::Payload(1 << 20));
        staging.append(&request(1, &[1, 2], 10)).unwrap();
        staging.append(&request(2, &[2, 3], 10)).unwrap();
        staging.truncate_below(Slot(2)).unwrap();
        let first_run = staging.frames(0..1).len() as u64;
        let mut sealed = Vec::new();
        staging.seal(0..1, |record, at, _| sealed.push((record.kind, at)));
        assert_eq!(sealed, vec![(RECORD_PERSIST, 0)]);
        staging.commit(1, |_, at| At(100 + at));
        assert_eq!(staging.uncommitted(), 1..3);
        assert_eq!(staging.index.live(100), 2, "slots 1 and 2 of the first record are durable");
        staging.commit(3, |_, at| At(200 + at));
        assert!(staging.is_empty() && staging.uncommitted().is_empty());
        assert_eq!(staging.index.live(100), 0, "superseded (slot 2) and truncated (slot 1)");
        assert_eq!(staging.index.live(200), 2);
        assert_eq!(staging.committed.floor, Slot(2));
        assert_eq!(staging.committed_highest_slot, Slot(3));
        assert_eq!(staging.statistics.records, 3);
        assert!(staging.statistics.bytes_written > first_run);
        let locations: Vec<_> = staging.index.range(Slot(0), Slot(9)).map(|(slot, _)| slot.0).collect();
        assert_eq!(locations, vec![2, 3]);
    }
}
