//! The receive ring: its record layout, the sender's side (`Producer`: where the next
//! record goes, how much the receiver's credit leaves free, wrap-around) and the receiver's
//! side (`Consumer`: which records are complete, when to write credit back).
//!
//! A ring is `capacity` bytes (a power of two) of the receiver's registered memory. The
//! sender builds each record at the same offset of its staging buffer and copies it over
//! with one RDMA WRITE. Positions are byte counts since the connection began; a record at
//! position `p` lives at offset `p % capacity`. Records are 32-byte aligned and never wrap:
//! when one does not fit before the end, a wrap record fills the gap.
//!
//! ```text
//! record at offset o (all words little-endian):
//!   o+0   u32 payload_len   (0xFFFF_FFFF: wrap record, continue at offset 0)
//!   o+4   u32 crc32c(payload)
//!   o+8   u64 stamp         = mix64(key ^ position) | 1
//!   o+16  payload           (payload_len bytes: one rkyv-archived batch), zero padding
//!   o+R-8 u64 stamp         (the trailer; R = record length, a multiple of 32)
//! ```
//!
//! The receiver takes a record only when both stamps equal the stamp of its expected
//! position (the key is fresh per connection, so neither a stale lap nor an earlier
//! connection's bytes match), the length is within bounds and the checksum matches. A write
//! lands in address order, so the trailer is the last word to arrive: a record whose trailer
//! has not arrived is not complete yet, and one whose checksum fails is torn.

use crate::rdma::verbs::MemoryRegion;

/// Bytes before a record's payload.
pub(crate) const HEADER_BYTES: u64 = 16;
/// Bytes after a record's payload (the trailing stamp).
pub(crate) const TRAILER_BYTES: u64 = 8;
/// Records start at multiples of this.
pub(crate) const RECORD_ALIGN: u64 = 32;
/// The smallest ring.
pub(crate) const RING_BYTES_MIN: u64 = 4096;
const WRAP_LEN: u32 = u32::MAX;

const _: () = assert!(HEADER_BYTES + TRAILER_BYTES <= RECORD_ALIGN);
const _: () = assert!(RING_BYTES_MIN % RECORD_ALIGN == 0);

/// Bytes a record of `payload_len` payload bytes occupies.
pub(crate) fn record_len(payload_len: u64) -> u64 {
    (HEADER_BYTES + payload_len + TRAILER_BYTES).next_multiple_of(RECORD_ALIGN)
}

/// The stamp of the record at `position` under `key`; never zero, so zeroed memory never
/// passes for a record.
pub(crate) fn stamp(key: u64, position: u64) -> u64 {
    rsl_core::mix64(key ^ position) | 1
}

/// Bytes of the staging buffer to copy to the same offset of the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RecordRange {
    pub(crate) offset: u64,
    pub(crate) len: u64,
}

/// What `Producer::write_frame` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Placement {
    /// The record is in the staging buffer; post the ranges.
    Written,
    /// Not enough credit now; try again after the receiver's next credit.
    NoRoom,
    /// The payload does not fit even in an empty ring (or over `payload_max`).
    TooLarge,
}

/// A credit that cannot be right: it goes backwards, past what was written, or off the
/// record grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("credit {head} is not a consumed position: previous credit {previous}, written up to {tail}")]
pub(crate) struct CreditError {
    pub(crate) head: u64,
    pub(crate) previous: u64,
    pub(crate) tail: u64,
}

/// The sender's side of one ring.
#[derive(Debug)]
pub(crate) struct Producer {
    capacity: u64,
    key: u64,
    payload_max: u64,
    tail: u64,
    head: u64,
}

impl Producer {
    pub(crate) fn new(capacity: u64, key: u64, payload_max: u64) -> Producer {
        assert!(capacity.is_power_of_two() && capacity >= RING_BYTES_MIN, "ring of {capacity} bytes");
        Producer { capacity, key, payload_max: payload_max.min(capacity - RECORD_ALIGN), tail: 0, head: 0 }
    }

    /// The position after the last record written.
    pub(crate) fn tail(&self) -> u64 {
        self.tail
    }

    /// The receiver's position as last credited.
    #[cfg(test)]
    pub(crate) fn head(&self) -> u64 {
        self.head
    }

    /// The largest payload of one frame.
    pub(crate) fn payload_max(&self) -> u64 {
        self.payload_max
    }

    /// Takes the receiver's credit (its consumed position), checking it.
    pub(crate) fn on_credit(&mut self, head: u64) -> Result<bool, CreditError> {
        if head == self.head {
            return Ok(false);
        }
        if head < self.head || head > self.tail || head % RECORD_ALIGN != 0 {
            return Err(CreditError { head, previous: self.head, tail: self.tail });
        }
        self.head = head;
        Ok(true)
    }

    /// Builds the next record in `staging` (a region of `capacity` bytes mirroring the
    /// ring): `fill` writes the payload into the slice it is given and returns its length,
    /// or `None` when it does not fit. The `(offset, len)` ranges to write to the ring are
    /// appended to `ranges` (a wrap record and the record), also when the result is
    /// `NoRoom` after a wrap.
    pub(crate) fn write_frame(
        &mut self,
        staging: &MemoryRegion,
        ranges: &mut Vec<RecordRange>,
        mut fill: impl FnMut(&mut [u8]) -> Option<usize>,
    ) -> Placement {
        assert_eq!(staging.len(), self.capacity, "staging buffer must mirror the ring");
        let memory = staging.memory();
        loop {
            let offset = self.tail % self.capacity;
            let contiguous = self.capacity - offset;
            let free = self.capacity - (self.tail - self.head);
            let room = free.min(contiguous);
            if room >= RECORD_ALIGN {
                let payload_room = (room - HEADER_BYTES - TRAILER_BYTES).min(self.payload_max);
                let payload = memory.bytes_mut(staging.at(offset + HEADER_BYTES), payload_room as usize);
                if let Some(len) = fill(payload) {
                    assert!(len > 0 && len as u64 <= payload_room, "fill returned {len} of {payload_room}");
                    let crc = crc32c::crc32c(&payload[..len]);
                    let record = record_len(len as u64);
                    let stamp = stamp(self.key, self.tail);
                    memory.store_u64(staging.at(offset), len as u64 | u64::from(crc) << 32);
                    memory.store_u64(staging.at(offset + 8), stamp);
                    memory.store_u64(staging.at(offset + record - TRAILER_BYTES), stamp);
                    ranges.push(RecordRange { offset, len: record });
                    self.tail += record;
                    return Placement::Written;
                }
            }
            if offset != 0 && free > contiguous {
                let stamp = stamp(self.key, self.tail);
                memory.store_u64(staging.at(offset), u64::from(WRAP_LEN));
                memory.store_u64(staging.at(offset + 8), stamp);
                memory.store_u64(staging.at(offset + RECORD_ALIGN - TRAILER_BYTES), stamp);
                ranges.push(RecordRange { offset, len: RECORD_ALIGN });
                self.tail += contiguous;
                continue;
            }
            return if free == self.capacity { Placement::TooLarge } else { Placement::NoRoom };
        }
    }
}

/// Why the receiver refused what it found at its position. The record boundary is lost
/// after any of these: the connection is re-established.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FrameError {
    /// The length is larger than a frame may be, or runs past the ring's end.
    #[error("frame at position {position} declares {len} payload bytes; at most {max} fit")]
    Oversized { position: u64, len: u64, max: u64 },
    /// Both stamps are there but the payload's checksum does not match: a torn write.
    #[error("torn frame at position {position}: checksum {found:#010x}, header says {expected:#010x}")]
    Torn { position: u64, expected: u32, found: u32 },
    /// A record that cannot be: an empty payload, or a wrap record at offset 0.
    #[error("malformed record at position {position}: {problem}")]
    Malformed { position: u64, problem: &'static str },
}

/// A complete record's payload, read in place.
#[derive(Debug)]
pub(crate) struct Frame<'a> {
    pub(crate) payload: &'a [u8],
    pub(crate) position: u64,
    pub(crate) record_len: u64,
}

/// The receiver's side of one ring.
#[derive(Debug)]
pub(crate) struct Consumer {
    capacity: u64,
    key: u64,
    payload_max: u64,
    head: u64,
    credited: u64,
}

impl Consumer {
    pub(crate) fn new(capacity: u64, key: u64, payload_max: u64) -> Consumer {
        assert!(capacity.is_power_of_two() && capacity >= RING_BYTES_MIN, "ring of {capacity} bytes");
        Consumer {
            capacity,
            key,
            payload_max: payload_max.min(capacity - RECORD_ALIGN),
            head: 0,
            credited: 0,
        }
    }

    /// The position of the next record.
    #[cfg(test)]
    pub(crate) fn head(&self) -> u64 {
        self.head
    }

    /// The next complete record, if any, skipping wrap records.
    pub(crate) fn next<'a>(&mut self, ring: &'a MemoryRegion) -> Result<Option<Frame<'a>>, FrameError> {
        let memory = ring.memory();
        loop {
            let position = self.head;
            let offset = position % self.capacity;
            let stamp = stamp(self.key, position);
            if memory.load_u64(ring.at(offset + 8)) != stamp {
                return Ok(None);
            }
            let word = memory.load_u64(ring.at(offset));
            let len = word as u32;
            if len == WRAP_LEN {
                if memory.load_u64(ring.at(offset + RECORD_ALIGN - TRAILER_BYTES)) != stamp {
                    return Ok(None);
                }
                if offset == 0 {
                    return Err(FrameError::Malformed {
                        position,
                        problem: "wrap record at the ring's start",
                    });
                }
                self.head += self.capacity - offset;
                continue;
            }
            let len = u64::from(len);
            if len == 0 {
                return Err(FrameError::Malformed { position, problem: "empty payload" });
            }
            let record = record_len(len);
            if len > self.payload_max || offset + record > self.capacity {
                let max = self.payload_max.min(self.capacity - offset - HEADER_BYTES - TRAILER_BYTES);
                return Err(FrameError::Oversized { position, len, max });
            }
            if memory.load_u64(ring.at(offset + record - TRAILER_BYTES)) != stamp {
                return Ok(None);
            }
            let payload = memory.bytes(ring.at(offset + HEADER_BYTES), len as usize);
            let expected = (word >> 32) as u32;
            let found = crc32c::crc32c(payload);
            if found != expected {
                return Err(FrameError::Torn { position, expected, found });
            }
            return Ok(Some(Frame { payload, position, record_len: record }));
        }
    }

    /// Marks `frame` consumed: its bytes may be written again once credited.
    pub(crate) fn consume(&mut self, frame: &Frame<'_>) {
        assert_eq!(frame.position, self.head, "frames are consumed in order");
        self.head += frame.record_len;
    }

    /// Whether a record has begun at the head but not completed (its header stamp is there,
    /// its trailer is not): what a sender that died mid-write leaves.
    pub(crate) fn partial(&self, ring: &MemoryRegion) -> bool {
        let offset = self.head % self.capacity;
        ring.memory().load_u64(ring.at(offset + 8)) == stamp(self.key, self.head)
    }

    /// The position to credit now, if any: after a quarter of the ring, or whenever the
    /// receiver has nothing more to read.
    pub(crate) fn credit_due(&self, idle: bool) -> Option<u64> {
        let pending = self.head - self.credited;
        (pending > 0 && (idle || pending >= self.capacity / 4)).then_some(self.head)
    }

    /// Records that `head` was credited.
    pub(crate) fn credited(&mut self, head: u64) {
        self.credited = head;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rdma::emulated::{EmulatedConfig, EmulatedDevice};
    use crate::rdma::verbs::{Access, Device};
    use proptest::prelude::*;

    /// A ring in emulated registered memory and its staging mirror; "posting" a range copies
    /// it across in address order, as the provider does.
    struct Pair {
        staging: MemoryRegion,
        ring: MemoryRegion,
    }

    impl Pair {
        fn new(capacity: u64) -> Pair {
            let device = EmulatedDevice::open(EmulatedConfig::default()).unwrap();
            Pair {
                staging: device.register(capacity, Access::Local).unwrap(),
                ring: device.register(capacity, Access::RemoteWrite).unwrap(),
            }
        }

        fn post(&self, RecordRange { offset, len }: RecordRange, landed: u64) {
            let len = len.min(landed);
            self.staging.memory().copy_to(
                self.staging.at(offset),
                self.ring.memory(),
                self.ring.at(offset),
                len as usize,
            );
        }
    }

    fn fill_with(value: u8, len: usize) -> impl FnMut(&mut [u8]) -> Option<usize> {
        move |room: &mut [u8]| {
            (room.len() >= len).then(|| {
                room[..len].fill(value);
                len
            })
        }
    }

    #[test]
    fn a_record_is_taken_only_once_complete() {
        let pair = Pair::new(4096);
        let mut producer = Producer::new(4096, 7, 4096);
        let mut consumer = Consumer::new(4096, 7, 4096);
        let mut ranges = Vec::new();
        assert_eq!(producer.write_frame(&pair.staging, &mut ranges, fill_with(9, 100)), Placement::Written);
        assert_eq!(ranges, vec![RecordRange { offset: 0, len: 128 }]);
        // Everything but the trailer: not complete, and reported as partial.
        pair.post(ranges[0], 120);
        assert!(consumer.next(&pair.ring).unwrap().is_none());
        assert!(consumer.partial(&pair.ring));
        pair.post(ranges[0], u64::MAX);
        let frame = consumer.next(&pair.ring).unwrap().unwrap();
        assert_eq!(frame.payload, &[9u8; 100][..]);
        consumer.consume(&frame);
        assert_eq!(consumer.head(), 128);
        assert_eq!(consumer.credit_due(false), None);
        assert_eq!(consumer.credit_due(true), Some(128));
    }

    #[test]
    fn torn_oversized_and_malformed_records_are_refused() {
        let pair = Pair::new(4096);
        let mut producer = Producer::new(4096, 3, 4096);
        let mut ranges = Vec::new();
        producer.write_frame(&pair.staging, &mut ranges, fill_with(1, 40));
        // A payload byte changed after the checksum: torn.
        pair.post(ranges[0], u64::MAX);
        pair.ring.memory().write_ordered(pair.ring.at(20), &[0xff]);
        let mut consumer = Consumer::new(4096, 3, 4096);
        assert!(matches!(consumer.next(&pair.ring), Err(FrameError::Torn { position: 0, .. })));
        // A length beyond what the receiver accepts: oversized.
        let mut strict = Consumer::new(4096, 3, 16);
        pair.post(ranges[0], u64::MAX);
        assert_eq!(
            strict.next(&pair.ring).unwrap_err(),
            FrameError::Oversized { position: 0, len: 40, max: 16 }
        );
        // A zero length.
        pair.ring.memory().store_u64(pair.ring.at(0), 0);
        assert!(matches!(consumer.next(&pair.ring), Err(FrameError::Malformed { .. })));
        // Another connection's key never matches.
        let mut other = Consumer::new(4096, 4, 4096);
        assert!(other.next(&pair.ring).unwrap().is_none());
    }

    #[test]
    fn credits_are_checked() {
        let pair = Pair::new(4096);
        let mut producer = Producer::new(4096, 1, 4096);
        let mut ranges = Vec::new();
        producer.write_frame(&pair.staging, &mut ranges, fill_with(1, 4));
        assert_eq!(producer.tail(), 32);
        assert_eq!(producer.on_credit(0), Ok(false));
        assert!(producer.on_credit(64).is_err(), "past the tail");
        assert!(producer.on_credit(8).is_err(), "off the grid");
        assert_eq!(producer.on_credit(32), Ok(true));
        assert!(producer.on_credit(0).is_err(), "backwards");
    }

    #[test]
    fn a_payload_larger_than_the_ring_is_too_large() {
        let pair = Pair::new(4096);
        let mut producer = Producer::new(4096, 1, 1 << 20);
        let mut ranges = Vec::new();
        assert_eq!(producer.write_frame(&pair.staging, &mut ranges, fill_with(1, 5000)), Placement::TooLarge);
        assert!(ranges.is_empty());
    }

    proptest! {
        /// Any sequence of frame sizes, a receiver that reads and credits at its own pace,
        /// and writes that land late: every frame arrives once, intact and in order, the
        /// sender never overwrites unconsumed bytes, and the ring wraps many times.
        #[test]
        fn frames_arrive_in_order_across_wraps(
            sizes in proptest::collection::vec(1usize..1500, 1..200),
            reads in proptest::collection::vec(0usize..4, 1..50),
            credit_every in 1usize..5,
            land_late in any::<bool>(),
        ) {
            let capacity = 4096;
            let pair = Pair::new(capacity);
            let mut producer = Producer::new(capacity, 11, capacity);
            let mut consumer = Consumer::new(capacity, 11, capacity);
            let mut received: Vec<(u8, usize)> = Vec::new();
            let mut pending: Vec<RecordRange> = Vec::new();
            let mut next = 0;
            let mut steps = 0;
            let mut since_credit = 0;
            while received.len() < sizes.len() {
                steps += 1;
                prop_assert!(steps < 100_000, "no progress");
                // Send what credit allows.
                if next < sizes.len() {
                    let mut ranges = Vec::new();
                    let placed = producer.write_frame(&pair.staging, &mut ranges, fill_with(next as u8, sizes[next]));
                    prop_assert_ne!(placed, Placement::TooLarge);
                    if placed == Placement::Written { next += 1; }
                    pending.extend(ranges);
                }
                // Writes land now, or one step late (reordered with the next post).
                if !land_late || pending.len() > 1 {
                    let take = if land_late { pending.len() - 1 } else { pending.len() };
                    for range in pending.drain(..take) { pair.post(range, u64::MAX); }
                }
                if land_late && next == sizes.len() {
                    for range in pending.drain(..) { pair.post(range, u64::MAX); }
                }
                // The receiver reads a few frames.
                for _ in 0..reads[steps % reads.len()].max(1) {
                    let Some(frame) = consumer.next(&pair.ring).unwrap() else { break };
                    received.push((frame.payload[0], frame.payload.len()));
                    prop_assert!(frame.payload.iter().all(|&b| b == frame.payload[0]), "intact");
                    consumer.consume(&frame);
                    since_credit += 1;
                }
                let idle = since_credit >= credit_every;
                if let Some(head) = consumer.credit_due(idle) {
                    consumer.credited(head);
                    prop_assert!(producer.on_credit(head).is_ok());
                    since_credit = 0;
                }
                prop_assert!(producer.tail() - producer.head() <= capacity);
            }
            let expected: Vec<(u8, usize)> = sizes.iter().enumerate().map(|(i, &len)| (i as u8, len)).collect();
            prop_assert_eq!(received, expected);
        }
    }
}
