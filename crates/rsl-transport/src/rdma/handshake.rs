//! Connection set-up out of band: a small TCP exchange before the first RDMA WRITE; and the
//! opening of a checkpoint transfer, which uses the same listener.
//!
//! A dialer's first record says what it wants (a kind byte after the magic): a connection
//! (`Hello`) or a checkpoint (`CheckpointAsk`, answered by a `CheckpointAnswer` record and
//! then the file, see `checkpoint.rs`).
//!
//! The sender dials the receiver's listening address and says who it is, where its queue
//! pair is and where the receiver should write credits (`Hello`); the receiver answers with
//! its queue pair, the ring it registered for this sender, the ring's stamp key and the
//! largest frame it accepts (`Reply`), or with a refusal and its reason. The socket then
//! stays open for the connection's life and carries nothing more: its end (EOF, reset) is
//! how either side learns that the other process is gone, on any provider.
//!
//! Every message is one length-prefixed record (u32 little-endian length, then the fields
//! little-endian; strings as u16 length and UTF-8 bytes), at most `MESSAGE_BYTES_MAX`.
//! Decoding checks every length and names what is wrong.

use crate::rdma::verbs::{QpEndpoint, RemoteRegion};
use rsl_core::{NodeId, RingId, Slot};
use std::io::{Read, Write};

/// The handshake magic and version: 3 since configurations carry learners and addresses.
const MAGIC: [u8; 8] = *b"RSLRDMA3";
/// The largest handshake record.
pub(crate) const MESSAGE_BYTES_MAX: usize = 4096;
/// Kinds of opening record.
const KIND_CONNECT: u8 = 0;
const KIND_CHECKPOINT: u8 = 1;

/// Why a handshake failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The socket failed or closed.
    #[error("handshake I/O: {0}")]
    Io(String),
    /// The bytes are not a handshake message.
    #[error("malformed handshake message: {0}")]
    Malformed(String),
    /// The receiver refused the connection.
    #[error("refused by the peer: {0}")]
    Refused(String),
}

impl From<std::io::Error> for HandshakeError {
    fn from(error: std::io::Error) -> HandshakeError {
        HandshakeError::Io(error.to_string())
    }
}

/// The sender's opening.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Hello {
    pub(crate) from: NodeId,
    pub(crate) to: NodeId,
    pub(crate) endpoint: QpEndpoint,
    /// Where the receiver writes its consumed position.
    pub(crate) credit: RemoteRegion,
}

/// A fetcher's request for a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CheckpointAsk {
    pub(crate) ring: RingId,
    pub(crate) requester: NodeId,
    /// The node asked.
    pub(crate) to: NodeId,
    /// The oldest checkpoint acceptable.
    pub(crate) min_slot: Slot,
    /// The largest frame the fetcher accepts.
    pub(crate) frame_bytes_max: u32,
}

/// The server's answer to a `CheckpointAsk`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CheckpointAnswer {
    /// The file follows.
    Streaming,
    /// No such ring, or no valid checkpoint at or above the slot asked for.
    NoCheckpoint(String),
    /// The requester may not have it (not a member, or the request is for another node).
    Refused(String),
    /// The server cannot serve now (no source, or the source failed).
    Unavailable(String),
}

/// What a dialer's first record asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Opening {
    Connect(Hello),
    Checkpoint(CheckpointAsk),
}

/// The receiver's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Reply {
    pub(crate) endpoint: QpEndpoint,
    /// The ring registered for this sender.
    pub(crate) ring: RemoteRegion,
    /// The stamp key of this connection's records.
    pub(crate) key: u64,
    /// The largest frame payload the receiver takes.
    pub(crate) payload_max: u64,
}

#[derive(Default)]
struct Encoder(Vec<u8>);

impl Encoder {
    fn u8(&mut self, value: u8) -> &mut Self {
        self.0.push(value);
        self
    }
    fn u16(&mut self, value: u16) -> &mut Self {
        self.0.extend_from_slice(&value.to_le_bytes());
        self
    }
    fn u32(&mut self, value: u32) -> &mut Self {
        self.0.extend_from_slice(&value.to_le_bytes());
        self
    }
    fn u64(&mut self, value: u64) -> &mut Self {
        self.0.extend_from_slice(&value.to_le_bytes());
        self
    }
    fn bytes(&mut self, value: &[u8]) -> &mut Self {
        self.0.extend_from_slice(value);
        self
    }
    fn text(&mut self, value: &str) -> &mut Self {
        let value = &value.as_bytes()[..value.len().min(1024)];
        self.u16(value.len() as u16).bytes(value)
    }
    fn endpoint(&mut self, endpoint: &QpEndpoint) -> &mut Self {
        self.u32(endpoint.qp_number)
            .u16(endpoint.lid)
            .bytes(&endpoint.gid)
            .u32(endpoint.psn)
            .text(&endpoint.name)
    }
    fn region(&mut self, region: &RemoteRegion) -> &mut Self {
        self.u64(region.address).u64(region.len).u32(region.rkey)
    }
}

struct Decoder<'a> {
    bytes: &'a [u8],
}

impl<'a> Decoder<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], HandshakeError> {
        if self.bytes.len() < n {
            return Err(HandshakeError::Malformed(format!(
                "{what}: needs {n} bytes, {} left",
                self.bytes.len()
            )));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], HandshakeError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }
    fn u8(&mut self, what: &str) -> Result<u8, HandshakeError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16, HandshakeError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    fn u32(&mut self, what: &str) -> Result<u32, HandshakeError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64, HandshakeError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    fn text(&mut self, what: &str) -> Result<String, HandshakeError> {
        let len = self.u16(what)? as usize;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| HandshakeError::Malformed(format!("{what}: not UTF-8")))
    }
    fn endpoint(&mut self) -> Result<QpEndpoint, HandshakeError> {
        Ok(QpEndpoint {
            qp_number: self.u32("endpoint.qp_number")?,
            lid: self.u16("endpoint.lid")?,
            gid: self.array("endpoint.gid")?,
            psn: self.u32("endpoint.psn")?,
            name: self.text("endpoint.name")?,
        })
    }
    fn region(&mut self, what: &str) -> Result<RemoteRegion, HandshakeError> {
        Ok(RemoteRegion { address: self.u64(what)?, len: self.u64(what)?, rkey: self.u32(what)? })
    }
    fn magic(&mut self) -> Result<(), HandshakeError> {
        let magic: [u8; 8] = self.array("magic")?;
        if magic != MAGIC {
            return Err(HandshakeError::Malformed(format!("magic {magic:02x?}, expected {MAGIC:02x?}")));
        }
        Ok(())
    }
    fn finish(&self) -> Result<(), HandshakeError> {
        if !self.bytes.is_empty() {
            return Err(HandshakeError::Malformed(format!("{} trailing bytes", self.bytes.len())));
        }
        Ok(())
    }
}

/// `body` with its length before it.
fn framed(body: Encoder) -> Vec<u8> {
    let mut framed = (body.0.len() as u32).to_le_bytes().to_vec();
    framed.extend_from_slice(&body.0);
    framed
}

fn send(stream: &mut impl Write, body: Encoder) -> Result<(), HandshakeError> {
    stream.write_all(&framed(body))?;
    stream.flush()?;
    Ok(())
}

fn receive(stream: &mut impl Read) -> Result<Vec<u8>, HandshakeError> {
    let mut len = [0; 4];
    stream.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MESSAGE_BYTES_MAX {
        return Err(HandshakeError::Malformed(format!(
            "message of {len} bytes, at most {MESSAGE_BYTES_MAX}"
        )));
    }
    let mut body = vec![0; len];
    stream.read_exact(&mut body)?;
    Ok(body)
}

pub(crate) fn write_hello(stream: &mut impl Write, hello: &Hello) -> Result<(), HandshakeError> {
    let mut body = Encoder::default();
    body.bytes(&MAGIC)
        .u8(KIND_CONNECT)
        .u64(hello.from.0)
        .u64(hello.to.0)
        .endpoint(&hello.endpoint)
        .region(&hello.credit);
    send(stream, body)
}

/// A checkpoint request as a framed record.
pub(crate) fn encode_checkpoint_ask(ask: &CheckpointAsk) -> Vec<u8> {
    let mut body = Encoder::default();
    body.bytes(&MAGIC)
        .u8(KIND_CHECKPOINT)
        .u64(ask.ring.0)
        .u64(ask.requester.0)
        .u64(ask.to.0)
        .u64(ask.min_slot.0)
        .u32(ask.frame_bytes_max);
    framed(body)
}

/// Reads a dialer's first record.
pub(crate) fn read_opening(stream: &mut impl Read) -> Result<Opening, HandshakeError> {
    let bytes = receive(stream)?;
    decode_opening(&bytes)
}

fn decode_opening(bytes: &[u8]) -> Result<Opening, HandshakeError> {
    let mut decoder = Decoder { bytes };
    decoder.magic()?;
    let opening = match decoder.u8("kind")? {
        KIND_CONNECT => Opening::Connect(Hello {
            from: NodeId(decoder.u64("from")?),
            to: NodeId(decoder.u64("to")?),
            endpoint: decoder.endpoint()?,
            credit: decoder.region("credit")?,
        }),
        KIND_CHECKPOINT => Opening::Checkpoint(CheckpointAsk {
            ring: RingId(decoder.u64("ring")?),
            requester: NodeId(decoder.u64("requester")?),
            to: NodeId(decoder.u64("to")?),
            min_slot: Slot(decoder.u64("min_slot")?),
            frame_bytes_max: decoder.u32("frame_bytes_max")?,
        }),
        kind => {
            return Err(HandshakeError::Malformed(format!(
                "kind {kind}, expected {KIND_CONNECT} (connect) or {KIND_CHECKPOINT} (checkpoint)"
            )))
        }
    };
    decoder.finish()?;
    if let Opening::Checkpoint(ask) = &opening {
        if ask.frame_bytes_max < crate::rdma::checkpoint::FRAME_BYTES_MIN {
            return Err(HandshakeError::Malformed(format!(
                "frame_bytes_max {}, at least {}",
                ask.frame_bytes_max,
                crate::rdma::checkpoint::FRAME_BYTES_MIN
            )));
        }
    }
    Ok(opening)
}

/// A checkpoint answer as a framed record.
pub(crate) fn encode_checkpoint_answer(answer: &CheckpointAnswer) -> Vec<u8> {
    let mut body = Encoder::default();
    body.bytes(&MAGIC);
    match answer {
        CheckpointAnswer::Streaming => body.u8(0),
        CheckpointAnswer::NoCheckpoint(reason) => body.u8(1).text(reason),
        CheckpointAnswer::Refused(reason) => body.u8(2).text(reason),
        CheckpointAnswer::Unavailable(reason) => body.u8(3).text(reason),
    };
    framed(body)
}

/// Writes a checkpoint answer (blocking).
pub(crate) fn write_checkpoint_answer(
    stream: &mut impl Write,
    answer: &CheckpointAnswer,
) -> Result<(), HandshakeError> {
    stream.write_all(&encode_checkpoint_answer(answer))?;
    stream.flush()?;
    Ok(())
}

/// Decodes a checkpoint answer's body (after its length).
pub(crate) fn decode_checkpoint_answer(bytes: &[u8]) -> Result<CheckpointAnswer, HandshakeError> {
    let mut decoder = Decoder { bytes };
    decoder.magic()?;
    let answer = match decoder.u8("status")? {
        0 => CheckpointAnswer::Streaming,
        1 => CheckpointAnswer::NoCheckpoint(decoder.text("reason")?),
        2 => CheckpointAnswer::Refused(decoder.text("reason")?),
        3 => CheckpointAnswer::Unavailable(decoder.text("reason")?),
        status => return Err(HandshakeError::Malformed(format!("status {status}, expected 0 to 3"))),
    };
    decoder.finish()?;
    Ok(answer)
}

pub(crate) fn write_reply(
    stream: &mut impl Write,
    reply: Result<&Reply, &str>,
) -> Result<(), HandshakeError> {
    let mut body = Encoder::default();
    body.bytes(&MAGIC);
    match reply {
        Ok(reply) => {
            body.u8(0).endpoint(&reply.endpoint).region(&reply.ring).u64(reply.key).u64(reply.payload_max);
        }
        Err(reason) => {
            body.u8(1).text(reason);
        }
    }
    send(stream, body)
}

pub(crate) fn read_reply(stream: &mut impl Read) -> Result<Reply, HandshakeError> {
    let bytes = receive(stream)?;
    decode_reply(&bytes)
}

fn decode_reply(bytes: &[u8]) -> Result<Reply, HandshakeError> {
    let mut decoder = Decoder { bytes };
    decoder.magic()?;
    match decoder.u8("status")? {
        0 => {
            let reply = Reply {
                endpoint: decoder.endpoint()?,
                ring: decoder.region("ring")?,
                key: decoder.u64("key")?,
                payload_max: decoder.u64("payload_max")?,
            };
            decoder.finish()?;
            Ok(reply)
        }
        1 => Err(HandshakeError::Refused(decoder.text("reason")?)),
        status => Err(HandshakeError::Malformed(format!("status {status}, expected 0 or 1"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> QpEndpoint {
        QpEndpoint { qp_number: 7, lid: 3, gid: [9; 16], psn: 42, name: "/dev/shm/rsl-rdma-1-ab".to_owned() }
    }

    #[test]
    fn messages_round_trip() {
        let hello = Hello {
            from: NodeId(1),
            to: NodeId(2),
            endpoint: endpoint(),
            credit: RemoteRegion { address: 0x1000, len: 64, rkey: 5 },
        };
        let mut wire = Vec::new();
        write_hello(&mut wire, &hello).unwrap();
        assert_eq!(read_opening(&mut wire.as_slice()).unwrap(), Opening::Connect(hello));
        let ask = CheckpointAsk {
            ring: RingId(3),
            requester: NodeId(2),
            to: NodeId(1),
            min_slot: Slot(40),
            frame_bytes_max: 1 << 20,
        };
        let wire = encode_checkpoint_ask(&ask);
        assert_eq!(read_opening(&mut wire.as_slice()).unwrap(), Opening::Checkpoint(ask));
        for answer in [
            CheckpointAnswer::Streaming,
            CheckpointAnswer::NoCheckpoint("none".into()),
            CheckpointAnswer::Refused("not a member".into()),
            CheckpointAnswer::Unavailable("no source".into()),
        ] {
            let wire = encode_checkpoint_answer(&answer);
            assert_eq!(decode_checkpoint_answer(&wire[4..]).unwrap(), answer);
        }
        let reply = Reply {
            endpoint: endpoint(),
            ring: RemoteRegion { address: 0x2000, len: 1 << 16, rkey: 6 },
            key: 99,
            payload_max: 1 << 15,
        };
        let mut wire = Vec::new();
        write_reply(&mut wire, Ok(&reply)).unwrap();
        assert_eq!(read_reply(&mut wire.as_slice()).unwrap(), reply);
        let mut wire = Vec::new();
        write_reply(&mut wire, Err("not for me")).unwrap();
        assert_eq!(read_reply(&mut wire.as_slice()), Err(HandshakeError::Refused("not for me".to_owned())));
    }

    #[test]
    fn every_truncation_and_bad_magic_is_an_error() {
        let hello = Hello {
            from: NodeId(1),
            to: NodeId(2),
            endpoint: endpoint(),
            credit: RemoteRegion { address: 1, len: 2, rkey: 3 },
        };
        let mut wire = Vec::new();
        write_hello(&mut wire, &hello).unwrap();
        let ask = CheckpointAsk {
            ring: RingId(1),
            requester: NodeId(2),
            to: NodeId(1),
            min_slot: Slot(0),
            frame_bytes_max: 4096,
        };
        for wire in [wire, encode_checkpoint_ask(&ask)] {
            let body = &wire[4..];
            for cut in 0..body.len() {
                let cut_short = decode_opening(&body[..cut]);
                assert!(matches!(cut_short, Err(HandshakeError::Malformed(_))), "cut at {cut}");
            }
            let mut bad = body.to_vec();
            bad[0] ^= 1;
            assert!(decode_opening(&bad).unwrap_err().to_string().contains("magic"));
            let mut long = body.to_vec();
            long.push(0);
            assert!(decode_opening(&long).unwrap_err().to_string().contains("trailing"));
            let mut kind = body.to_vec();
            kind[8] = 7;
            assert!(decode_opening(&kind).unwrap_err().to_string().contains("kind 7"));
        }
        let tiny = encode_checkpoint_ask(&CheckpointAsk { frame_bytes_max: 10, ..ask });
        assert!(decode_opening(&tiny[4..]).unwrap_err().to_string().contains("frame_bytes_max 10"));
        let answer = encode_checkpoint_answer(&CheckpointAnswer::Refused("no".into()));
        for cut in 0..answer.len() - 4 {
            assert!(decode_checkpoint_answer(&answer[4..4 + cut]).is_err(), "answer cut at {cut}");
        }
        let huge = (MESSAGE_BYTES_MAX as u32 + 1).to_le_bytes();
        assert!(read_opening(&mut huge.as_slice()).unwrap_err().to_string().contains("at most"));
    }
}
