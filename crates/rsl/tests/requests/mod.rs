//! The state machine of the large-request tests (the facade's on the in-memory network and
//! `rsl-tests`' over gRPC): it keeps every request's bytes, so replicas compare exactly and a
//! checkpoint carries large values whole.

#![allow(dead_code)]

use std::io::{Read, Write};

use rsl::{Bytes, Slot, StateMachine};

/// The size of the large requests: the default `request_bytes_max`.
pub const LARGE: usize = 64 << 20;

/// Every request executed, in order, bytes and all: two replicas agree exactly when their
/// lists are equal. The answer is the request's length and checksum.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Requests(pub Vec<Bytes>);

pub fn checksum(bytes: &[u8]) -> u64 {
    bytes.chunks(8).fold(0xcbf2_9ce4_8422_2325u64, |hash, word| {
        let mut padded = [0u8; 8];
        padded[..word.len()].copy_from_slice(word);
        (hash ^ u64::from_le_bytes(padded)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

pub fn answer(request: &[u8]) -> Bytes {
    let mut bytes = (request.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&checksum(request).to_le_bytes());
    Bytes::from(bytes)
}

impl StateMachine for Requests {
    fn execute(&mut self, _slot: Slot, request: &[u8]) -> Bytes {
        self.0.push(Bytes::copy_from_slice(request));
        answer(request)
    }

    /// The length and checksum of every request executed.
    fn read(&self, _request: &[u8]) -> Bytes {
        Bytes::from(self.0.iter().flat_map(|r| answer(r).to_vec()).collect::<Vec<u8>>())
    }

    fn save_checkpoint(&self, _slot: Slot, writer: &mut dyn Write) -> std::io::Result<()> {
        for request in &self.0 {
            writer.write_all(&(request.len() as u64).to_le_bytes())?;
            writer.write_all(request)?;
        }
        Ok(())
    }

    fn load_checkpoint(&mut self, _slot: Slot, reader: &mut dyn Read) -> std::io::Result<()> {
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes)?;
        let mut requests = Vec::new();
        let mut at = 0;
        let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "truncated checkpoint");
        while at < bytes.len() {
            let len = bytes.get(at..at + 8).ok_or_else(bad)?;
            let len = u64::from_le_bytes(len.try_into().map_err(|_| bad())?) as usize;
            let request = bytes.get(at + 8..at + 8 + len).ok_or_else(bad)?;
            requests.push(Bytes::copy_from_slice(request));
            at += 8 + len;
        }
        *self = Requests(requests);
        Ok(())
    }
}

/// A 64 MiB request whose every 8-byte word differs.
pub fn large(seed: u64) -> Vec<u8> {
    (0..LARGE as u64 / 8)
        .flat_map(|i| (i ^ seed.rotate_left(17)).wrapping_mul(seed | 1).to_le_bytes())
        .collect()
}

/// A small request: `n` as 8 bytes.
pub fn small(n: u64) -> Vec<u8> {
    n.to_le_bytes().to_vec()
}

/// The state every replica must hold after `requests`, as `Requests::read` reports it.
pub fn expected(requests: &[Vec<u8>]) -> Vec<Bytes> {
    requests.iter().map(|r| answer(r)).collect()
}
