//! The ring's own record at the start of every checkpoint's data: the configuration in
//! force for the slots after the checkpoint. The state machine's bytes follow it, so a
//! replica that loads a checkpoint (its own at start-up, or one fetched from a peer) learns
//! the ring's members together with the state.
//!
//! Layout (little-endian): magic `RSLCFG\0` and a format version byte (8 bytes),
//! configuration number (u64), first slot (u64), member count (u32), then each member's
//! node id (u64). Version 2 is a ring closed by its last request (see
//! [`rsl_core::Replica::handle_propose_exclusive`]): after the members, the slot of that
//! request (u64), so the closed state travels with the state it closed. A version this
//! build does not read is refused naming it. The checkpoint file's own blocks and CRCs
//! (rsl-log) protect the record like the rest of the data.

use std::io::{self, Read, Write};

use rsl_core::{Configuration, NodeId, Slot, MEMBERS_MAX};

/// First bytes of the configuration record of an open ring.
pub const CONFIGURATION_MAGIC: [u8; 8] = *b"RSLCFG\x00\x01";
/// First bytes of the configuration record of a closed ring (followed by its last slot).
pub const CLOSED_CONFIGURATION_MAGIC: [u8; 8] = *b"RSLCFG\x00\x02";

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
    let mut record = Vec::with_capacity(36 + 8 * configuration.members.len());
    let magic = if last_slot.is_some() { CLOSED_CONFIGURATION_MAGIC } else { CONFIGURATION_MAGIC };
    record.extend_from_slice(&magic);
    record.extend_from_slice(&configuration.number.to_le_bytes());
    record.extend_from_slice(&configuration.first_slot.0.to_le_bytes());
    record.extend_from_slice(&(configuration.members.len() as u32).to_le_bytes());
    for member in &configuration.members {
        record.extend_from_slice(&member.0.to_le_bytes());
    }
    if let Some(last_slot) = last_slot {
        record.extend_from_slice(&last_slot.0.to_le_bytes());
    }
    writer.write_all(&record)
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
    if head[..7] == CONFIGURATION_MAGIC[..7] && head[7] != CONFIGURATION_MAGIC[7] && !closed {
        return Err(invalid(format!(
            "checkpoint configuration record version {}; this build reads versions {} and {}",
            head[7], CONFIGURATION_MAGIC[7], CLOSED_CONFIGURATION_MAGIC[7]
        )));
    }
    if head[..8] != CONFIGURATION_MAGIC && !closed {
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
    let mut members = Vec::with_capacity(count);
    let mut id = [0u8; 8];
    for _ in 0..count {
        reader.read_exact(&mut id).map_err(|e| invalid(format!("checkpoint configuration members: {e}")))?;
        members.push(NodeId(u64::from_le_bytes(id)));
    }
    let configuration = Configuration::new(number, members, Slot(first_slot));
    if configuration.members.len() != count {
        return Err(invalid(format!("checkpoint configuration {number} names a member twice")));
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
        newer[7] = 3;
        let error = read_configuration(&mut newer.as_slice()).unwrap_err();
        assert!(error.to_string().contains("record version 3; this build reads versions 1 and 2"), "{error}");
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
}
