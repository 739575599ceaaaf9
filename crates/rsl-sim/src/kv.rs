//! The simulated clients' state machine: a key-value map with put, get, delete and
//! compare-and-set, de-duplicating retried requests by `(client, sequence)`, and a digest
//! of its whole state that chains every slot applied (so two replicas at one slot have
//! equal digests only if they applied the same slots, each once, from the same state).

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use rsl_core::{Request, RequestId, Slot, Value};

/// One operation on the map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvOp {
    /// Set `key` to `value`.
    Put { key: u8, value: i64 },
    /// Read `key` through the log.
    Get { key: u8 },
    /// Remove `key`.
    Delete { key: u8 },
    /// Set `key` to `new` if it holds `expected` (`None`: absent).
    Cas { key: u8, expected: Option<i64>, new: i64 },
}

impl KvOp {
    /// The key the operation touches.
    pub fn key(&self) -> u8 {
        match self {
            KvOp::Put { key, .. } | KvOp::Get { key } | KvOp::Delete { key } | KvOp::Cas { key, .. } => *key,
        }
    }

    /// Encodes the operation as a request payload.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(20);
        match self {
            KvOp::Put { key, value } => {
                out.put_u8(1);
                out.put_u8(*key);
                out.put_i64_le(*value);
            }
            KvOp::Get { key } => {
                out.put_u8(2);
                out.put_u8(*key);
            }
            KvOp::Delete { key } => {
                out.put_u8(3);
                out.put_u8(*key);
            }
            KvOp::Cas { key, expected, new } => {
                out.put_u8(4);
                out.put_u8(*key);
                out.put_u8(expected.is_some() as u8);
                out.put_i64_le(expected.unwrap_or(0));
                out.put_i64_le(*new);
            }
        }
        out.freeze()
    }

    /// Decodes a payload; `None` when it is not a well-formed operation.
    pub fn decode(mut bytes: &[u8]) -> Option<KvOp> {
        if bytes.remaining() < 2 {
            return None;
        }
        let tag = bytes.get_u8();
        let key = bytes.get_u8();
        let op = match tag {
            1 if bytes.remaining() == 8 => KvOp::Put { key, value: bytes.get_i64_le() },
            2 if bytes.is_empty() => KvOp::Get { key },
            3 if bytes.is_empty() => KvOp::Delete { key },
            4 if bytes.remaining() == 17 => {
                let present = bytes.get_u8() != 0;
                let expected = bytes.get_i64_le();
                let new = bytes.get_i64_le();
                KvOp::Cas { key, expected: present.then_some(expected), new }
            }
            _ => return None,
        };
        Some(op)
    }
}

/// The result of an operation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvResult {
    /// A put or delete took effect.
    Done,
    /// The value read.
    Value(Option<i64>),
    /// Whether the compare-and-set matched.
    Cas(bool),
    /// The payload was not an operation.
    Invalid,
}

/// The map plus the de-duplication table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Kv {
    map: BTreeMap<u8, i64>,
    /// Per client: the last sequence executed and its result.
    sessions: BTreeMap<u64, (u64, KvResult)>,
    /// Every slot applied, chained: `digest(chain, slot, value)`, part of the state (and
    /// of every checkpoint of it).
    chain: u64,
}

/// FNV-1a, 64 bits: a digest that is the same in every run and on every machine.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

impl Kv {
    /// Executes one request; a retried request returns the first execution's result.
    pub fn execute(&mut self, request: &Request) -> KvResult {
        let RequestId { client, sequence } = request.id;
        if let Some((last, result)) = self.sessions.get(&client) {
            if sequence == *last {
                return result.clone();
            }
            if sequence < *last {
                // Superseded: the client has moved on and no longer waits for this.
                return KvResult::Invalid;
            }
        }
        let result = match KvOp::decode(&request.payload) {
            None => KvResult::Invalid,
            Some(KvOp::Put { key, value }) => {
                self.map.insert(key, value);
                KvResult::Done
            }
            Some(KvOp::Get { key }) => KvResult::Value(self.map.get(&key).copied()),
            Some(KvOp::Delete { key }) => {
                self.map.remove(&key);
                KvResult::Done
            }
            Some(KvOp::Cas { key, expected, new }) => {
                if self.map.get(&key).copied() == expected {
                    self.map.insert(key, new);
                    KvResult::Cas(true)
                } else {
                    KvResult::Cas(false)
                }
            }
        };
        self.sessions.insert(client, (sequence, result.clone()));
        result
    }

    /// A local read (for lease reads).
    pub fn get(&self, key: u8) -> Option<i64> {
        self.map.get(&key).copied()
    }

    /// Chains the slot applied (whatever its value: requests, no-op, configuration) into
    /// the state; call it once per slot, before executing its requests.
    pub fn record_slot(&mut self, slot: Slot, value: &Value) {
        let mut hasher = Fnv::default();
        self.chain.hash(&mut hasher);
        slot.hash(&mut hasher);
        value.hash(&mut hasher);
        self.chain = hasher.finish();
    }

    /// A digest of the whole state: the map, the sessions and the chain of slots applied.
    pub fn digest(&self) -> u64 {
        let mut hasher = Fnv::default();
        self.hash(&mut hasher);
        hasher.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(client: u64, sequence: u64, op: KvOp) -> Request {
        Request { id: RequestId { client, sequence }, payload: op.encode() }
    }

    #[test]
    fn codec_round_trips_every_op() {
        for op in [
            KvOp::Put { key: 3, value: -7 },
            KvOp::Get { key: 0 },
            KvOp::Delete { key: 255 },
            KvOp::Cas { key: 1, expected: None, new: 9 },
            KvOp::Cas { key: 1, expected: Some(4), new: 9 },
        ] {
            assert_eq!(KvOp::decode(&op.encode()), Some(op));
        }
        assert_eq!(KvOp::decode(&[9, 1]), None);
        assert_eq!(KvOp::decode(&[1, 1, 0]), None);
    }

    #[test]
    fn retried_request_executes_once() {
        let mut kv = Kv::default();
        assert_eq!(
            kv.execute(&request(1, 1, KvOp::Cas { key: 1, expected: None, new: 5 })),
            KvResult::Cas(true)
        );
        // The retry reports the first result instead of failing the compare.
        assert_eq!(
            kv.execute(&request(1, 1, KvOp::Cas { key: 1, expected: None, new: 5 })),
            KvResult::Cas(true)
        );
        assert_eq!(kv.execute(&request(1, 2, KvOp::Get { key: 1 })), KvResult::Value(Some(5)));
        assert_eq!(kv.execute(&request(2, 1, KvOp::Delete { key: 1 })), KvResult::Done);
        assert_eq!(kv.get(1), None);
    }

    #[test]
    fn the_digest_tells_apart_a_slot_applied_twice_or_skipped() {
        let put =
            |sequence, value| Value::Batch(vec![request(1, sequence, KvOp::Put { key: 1, value })].into());
        let apply = |kv: &mut Kv, slot: u64, value: &Value| {
            kv.record_slot(Slot(slot), value);
            if let Value::Batch(requests) = value {
                for request in requests {
                    let _ = kv.execute(request);
                }
            }
        };
        let (one, two) = (put(1, 10), put(2, 20));
        let mut straight = Kv::default();
        apply(&mut straight, 1, &one);
        apply(&mut straight, 2, &two);
        // The same map, but slot 2 applied twice (a checkpoint labelled one slot low).
        let mut twice = straight.clone();
        apply(&mut twice, 2, &two);
        assert_eq!(twice.get(1), straight.get(1));
        assert_ne!(twice.digest(), straight.digest());
        // A no-op skipped changes nothing in the map but the digest still differs.
        let mut skipped = Kv::default();
        apply(&mut skipped, 1, &one);
        apply(&mut skipped, 3, &Value::Noop);
        let mut full = Kv::default();
        apply(&mut full, 1, &one);
        apply(&mut full, 2, &Value::Noop);
        apply(&mut full, 3, &Value::Noop);
        assert_ne!(skipped.digest(), full.digest());
        // Equal histories, equal digests.
        let mut again = Kv::default();
        apply(&mut again, 1, &one);
        apply(&mut again, 2, &two);
        assert_eq!(again.digest(), straight.digest());
    }
}
