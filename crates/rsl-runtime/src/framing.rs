//! The ring's own record at the start of every checkpoint's data: the configuration in
//! force for the slots after the checkpoint. The state machine's bytes follow it, so a
//! replica that loads a checkpoint (its own at start-up, or one fetched from a peer) learns
//! the ring's members together with the state.
//!
//! Layout (little-endian): magic `RSLCFG\0` and a format version byte (8 bytes),
//! configuration number (u64), first slot (u64), member count (u32), then each member's
//! node id (u64). Version 2 is a ring closed by its last request (see
//! [`rsl_core::Replica::handle_propose_exclusive`]): after the members, the slot of that
//! request (u64), so the closed state travels with the state it closed. Version 3 is a
//! configuration with learners or addresses (written only then, so checkpoints of rings
//! that use neither stay readable by builds before it): after the members, the learner count
//! (u32) and ids (u64 each), the address count (u32) and per address the node (u64), the
//! replica address and the client address (each a u32 length and UTF-8 bytes), then the
//! last slot (u64; 0 for an open ring). A version this build does not read is refused
//! naming it. The checkpoint file's own blocks and CRCs (rsl-log) protect the record like
//! the rest of the data.

use std::io::{self, Read, Write};

use rsl_core::{Configuration, MemberAddress, NodeId, Slot, ADDRESS_BYTES_MAX, MEMBERS_MAX};

/// First bytes of the configuration record of an open ring.
pub const CONFIGURATION_MAGIC: [u8; 8] = *b"RSLCFG\x00\x01";
/// First bytes of the configuration record of a closed ring (followed by its last slot).
pub const CLOSED_CONFIGURATION_MAGIC: [u8; 8] = *b"RSLCFG\x00\x02";
/// First bytes of the record of a configuration with learners or addresses.
pub const MEMBERSHIP_MAGIC: [u8; 8] = *b"RSLCFG\x00\x03";

/// The ring's record at the start of a checkpoint's data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingRecord {
    /// The configuration in force for the slots after the checkpoint.
    pub configuration: Configuration,
    /// The slot of the ring's last request, if the ring is closed.
    pub last_slot: Option<Slot>,
}

/// Writes `configuration` as the record that starts a checkpoint's data of an open ring.
pub fn write_configuration(writer: &mut dyn Write, configuration: &Configuration) -> io::Result<()> {
    write_ring_record(writer, configuration, None)
}

/// Writes the record that starts a checkpoint's data: `configuration`, and `last_slot`
/// when the ring is closed.
pub fn write_ring_record(
    writer: &mut dyn Write,
    configuration: &Configuration,
    last_slot: Option<Slot>,
) -> io::Result<()> {
    let mut record = Vec::with_capacity(36 + configuration.size_bytes() as usize);
    let extended = !configuration.learners.is_empty() || !configuration.addresses.is_empty();
    let magic = match (extended, last_slot.is_some()) {
        (true, _) => MEMBERSHIP_MAGIC,
        (false, true) => CLOSED_CONFIGURATION_MAGIC,
        (false, false) => CONFIGURATION_MAGIC,
    };
    record.extend_from_slice(&magic);
    record.extend_from_slice(&configuration.number.to_le_bytes());
    record.extend_from_slice(&configuration.first_slot.0.to_le_bytes());
    put_nodes(&mut record, &configuration.members);
    if extended {
        put_nodes(&mut record, &configuration.learners);
        record.extend_from_slice(&(configuration.addresses.len() as u32).to_le_bytes());
        for address in &configuration.addresses {
            record.extend_from_slice(&address.node.0.to_le_bytes());
            for text in [&address.replica, &address.client] {
                record.extend_from_slice(&(text.len() as u32).to_le_bytes());
                record.extend_from_slice(text.as_bytes());
            }
        }
        record.extend_from_slice(&last_slot.unwrap_or(Slot::ZERO).0.to_le_bytes());
    } else if let Some(last_slot) = last_slot {
        record.extend_from_slice(&last_slot.0.to_le_bytes());
    }
    writer.write_all(&record)
}

fn put_nodes(record: &mut Vec<u8>, nodes: &[NodeId]) {
    record.extend_from_slice(&(nodes.len() as u32).to_le_bytes());
    for node in nodes {
        record.extend_from_slice(&node.0.to_le_bytes());
    }
}

/// Reads the configuration record at the start of a checkpoint's data; a damaged or
/// missing record is an [`io::ErrorKind::InvalidData`] error that says what is wrong.
pub fn read_configuration(reader: &mut dyn Read) -> io::Result<Configuration> {
    read_ring_record(reader).map(|record| record.configuration)
}

/// Reads the ring's record at the start of a checkpoint's data (either layout); a damaged
/// or missing record is an [`io::ErrorKind::InvalidData`] error that says what is wrong.
pub fn read_ring_record(reader: &mut dyn Read) -> io::Result<RingRecord> {
    let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let mut head = [0u8; 28];
    reader.read_exact(&mut head).map_err(|e| invalid(format!("checkpoint configuration record: {e}")))?;
    let closed = head[..8] == CLOSED_CONFIGURATION_MAGIC;
    let extended = head[..8] == MEMBERSHIP_MAGIC;
    if head[..7] == CONFIGURATION_MAGIC[..7] && head[7] != CONFIGURATION_MAGIC[7] && !closed && !extended {
        return Err(invalid(format!(
            "checkpoint configuration record version {}; this build reads versions {} to {}",
            head[7], CONFIGURATION_MAGIC[7], MEMBERSHIP_MAGIC[7]
        )));
    }
    if head[..8] != CONFIGURATION_MAGIC && !closed && !extended {
        return Err(invalid(format!(
            "checkpoint data does not start with a configuration record (found {:02x?})",
            &head[..8]
        )));
    }
    let word = |at: usize| u64::from_le_bytes(head[at..at + 8].try_into().expect("8 bytes"));
    let (number, first_slot) = (word(8), word(16));
    let count = u32::from_le_bytes(head[24..28].try_into().expect("4 bytes")) as usize;
    if count == 0 || count > MEMBERS_MAX {
        return Err(invalid(format!("checkpoint configuration {number} has {count} members")));
    }
    let members = read_nodes(reader, count, "members")?;
    let mut configuration = Configuration::new(number, members, Slot(first_slot));
    if configuration.members.len() != count {
        return Err(invalid(format!("checkpoint configuration {number} names a member twice")));
    }
    let mut id = [0u8; 8];
    if extended {
        let learners = read_count(reader, "learner count", MEMBERS_MAX - count)?;
        let learners = read_nodes(reader, learners, "learners")?;
        let addresses = read_count(reader, "address count", MEMBERS_MAX)?;
        let mut read_addresses = Vec::with_capacity(addresses);
        for _ in 0..addresses {
            reader
                .read_exact(&mut id)
                .map_err(|e| invalid(format!("checkpoint configuration address: {e}")))?;
            let node = NodeId(u64::from_le_bytes(id));
            let replica = read_text(reader, "replica address")?;
            let client = read_text(reader, "client address")?;
            read_addresses.push(MemberAddress { node, replica, client });
        }
        let (learner_count, address_count) = (learners.len(), read_addresses.len());
        configuration = configuration.with_learners(learners).with_addresses(read_addresses);
        if configuration.learners.len() != learner_count || configuration.addresses.len() != address_count {
            return Err(invalid(format!(
                "checkpoint configuration {number} names a learner twice or as a member, or an address twice or for a node outside it"
            )));
        }
        reader.read_exact(&mut id).map_err(|e| invalid(format!("checkpoint record's last slot: {e}")))?;
        let last_slot = u64::from_le_bytes(id);
        return Ok(RingRecord { configuration, last_slot: (last_slot != 0).then_some(Slot(last_slot)) });
    }
    let last_slot = if closed {
        reader.read_exact(&mut id).map_err(|e| invalid(format!("checkpoint record's last slot: {e}")))?;
        match u64::from_le_bytes(id) {
            0 => return Err(invalid("checkpoint record's last slot is 0".into())),
            slot => Some(Slot(slot)),
        }
    } else {
        None
    };
    Ok(RingRecord { configuration, last_slot })
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// A u32 count, at most `max`.
fn read_count(reader: &mut dyn Read, what: &str, max: usize) -> io::Result<usize> {
    let mut bytes = [0u8; 4];
    reader.read_exact(&mut bytes).map_err(|e| invalid(format!("checkpoint configuration {what}: {e}")))?;
    let count = u32::from_le_bytes(bytes) as usize;
    if count > max {
        return Err(invalid(format!("checkpoint configuration {what} {count}, more than {max}")));
    }
    Ok(count)
}

fn read_nodes(reader: &mut dyn Read, count: usize, what: &str) -> io::Result<Vec<NodeId>> {
    let mut nodes = Vec::with_capacity(count);
    let mut id = [0u8; 8];
    for _ in 0..count {
        reader.read_exact(&mut id).map_err(|e| invalid(format!("checkpoint configuration {what}: {e}")))?;
        nodes.push(NodeId(u64::from_le_bytes(id)));
    }
    Ok(nodes)
}

fn read_text(reader: &mut dyn Read, what: &str) -> io::Result<String> {
    let len = read_count(reader, &format!("{what} length"), ADDRESS_BYTES_MAX)?;
    let mut text = vec![0u8; len];
    reader.read_exact(&mut text).map_err(|e| invalid(format!("checkpoint configuration {what}: {e}")))?;
    String::from_utf8(text).map_err(|_| invalid(format!("checkpoint configuration {what} is not UTF-8")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_damage() {
        let configuration = Configuration::new(4, vec![NodeId(1), NodeId(3), NodeId(9)], Slot(120));
        let mut bytes = Vec::new();
        write_configuration(&mut bytes, &configuration).unwrap();
        bytes.extend_from_slice(b"state machine");
        let mut reader = bytes.as_slice();
        assert_eq!(read_configuration(&mut reader).unwrap(), configuration);
        assert_eq!(reader, b"state machine", "the state machine's bytes follow untouched");

        let mut no_magic = bytes.clone();
        no_magic[0] ^= 1;
        let error = read_configuration(&mut no_magic.as_slice()).unwrap_err();
        assert!(error.to_string().contains("does not start with a configuration record"), "{error}");
        let mut newer = bytes.clone();
        newer[7] = 4;
        let error = read_configuration(&mut newer.as_slice()).unwrap_err();
        assert!(error.to_string().contains("record version 4; this build reads versions 1 to 3"), "{error}");
        let mut no_members = bytes.clone();
        no_members[24..28].copy_from_slice(&0u32.to_le_bytes());
        assert!(read_configuration(&mut no_members.as_slice())
            .unwrap_err()
            .to_string()
            .contains("0 members"));
        assert!(read_configuration(&mut &bytes[..30]).is_err(), "a truncated record is refused");
    }

    #[test]
    fn a_closed_ring_carries_its_last_slot() {
        let configuration = Configuration::new(2, vec![NodeId(1), NodeId(2)], Slot(9));
        let mut bytes = Vec::new();
        write_ring_record(&mut bytes, &configuration, Some(Slot(77))).unwrap();
        bytes.extend_from_slice(b"state");
        let mut reader = bytes.as_slice();
        let record = read_ring_record(&mut reader).unwrap();
        assert_eq!(record, RingRecord { configuration: configuration.clone(), last_slot: Some(Slot(77)) });
        assert_eq!(reader, b"state");
        assert_eq!(read_configuration(&mut bytes.as_slice()).unwrap(), configuration);
        let mut open = Vec::new();
        write_configuration(&mut open, &configuration).unwrap();
        assert_eq!(read_ring_record(&mut open.as_slice()).unwrap().last_slot, None);
        let cut = bytes.len() - b"state".len() - 3;
        let error = read_ring_record(&mut &bytes[..cut]).unwrap_err();
        assert!(error.to_string().contains("last slot"), "{error}");
    }

    #[test]
    fn learners_and_addresses_use_version_3_open_or_closed() {
        let address = |node: u64| MemberAddress {
            node: NodeId(node),
            replica: format!("http://10.0.0.{node}:7001"),
            client: format!("http://10.0.0.{node}:7000"),
        };
        let configuration = Configuration::new(3, vec![NodeId(1), NodeId(2)], Slot(40))
            .with_learners(vec![NodeId(5)])
            .with_addresses(vec![address(1), address(5)]);
        for last_slot in [None, Some(Slot(41))] {
            let mut bytes = Vec::new();
            write_ring_record(&mut bytes, &configuration, last_slot).unwrap();
            assert_eq!(bytes[..8], MEMBERSHIP_MAGIC);
            bytes.extend_from_slice(b"state");
            let mut reader = bytes.as_slice();
            let record = read_ring_record(&mut reader).unwrap();
            assert_eq!(record, RingRecord { configuration: configuration.clone(), last_slot });
            assert_eq!(reader, b"state");
            let cut = bytes.len() - b"state".len() - 9;
            assert!(read_ring_record(&mut &bytes[..cut]).is_err(), "a truncated record is refused");
        }
        let mut plain = Vec::new();
        write_configuration(&mut plain, &Configuration::new(3, vec![NodeId(1)], Slot(4))).unwrap();
        assert_eq!(plain[..8], CONFIGURATION_MAGIC, "without learners or addresses, version 1 as before");
        // A learner that is also a member is refused.
        let mut bytes = Vec::new();
        write_configuration(&mut bytes, &configuration).unwrap();
        let learner_at = 8 + 16 + 4 + 16 + 4;
        bytes[learner_at..learner_at + 8].copy_from_slice(&1u64.to_le_bytes());
        let error = read_configuration(&mut bytes.as_slice()).unwrap_err();
        assert!(error.to_string().contains("names a learner twice or as a member"), "{error}");
    }
}
