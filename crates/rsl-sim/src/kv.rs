//! The simulated clients' state machine: a key-value map with put, get, delete and
//! compare-and-set, de-duplicating retried requests by `(client, sequence)`.

use std::collections::BTreeMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use rsl_core::{Request, RequestId};

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
#[derive(Clone, Debug, PartialEq, Eq)]
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
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Kv {
    map: BTreeMap<u8, i64>,
    /// Per client: the last sequence executed and its result.
    sessions: BTreeMap<u64, (u64, KvResult)>,
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
}
