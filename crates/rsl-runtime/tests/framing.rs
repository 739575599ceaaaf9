//! The ring's record in front of every checkpoint, on arbitrary configurations: it round
//! trips, and every cut of it is refused as invalid data (never a panic, never a wrong
//! configuration).

use std::io::Cursor;

use proptest::prelude::*;
use rsl_core::{Configuration, NodeId, Slot, MEMBERS_MAX};
use rsl_runtime::framing::{read_ring_record, write_ring_record, RingRecord};

fn configuration() -> impl Strategy<Value = Configuration> {
    (1u64..1_000, proptest::collection::btree_set(1u64..10_000, 1..=MEMBERS_MAX), 1u64..1_000_000).prop_map(
        |(number, members, first_slot)| {
            Configuration::new(number, members.into_iter().map(NodeId).collect(), Slot(first_slot))
        },
    )
}

proptest! {
    #[test]
    fn a_ring_record_round_trips(configuration in configuration(), last in proptest::option::of(1u64..)) {
        let last_slot = last.map(Slot);
        let mut bytes = Vec::new();
        write_ring_record(&mut bytes, &configuration, last_slot).unwrap();
        let record = read_ring_record(&mut Cursor::new(&bytes)).unwrap();
        prop_assert_eq!(record, RingRecord { configuration, last_slot });
    }

    #[test]
    fn every_cut_of_a_ring_record_is_refused(configuration in configuration(), last in proptest::option::of(1u64..)) {
        let mut bytes = Vec::new();
        write_ring_record(&mut bytes, &configuration, last.map(Slot)).unwrap();
        for len in 0..bytes.len() {
            let error = read_ring_record(&mut Cursor::new(&bytes[..len])).expect_err("a cut record");
            prop_assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = read_ring_record(&mut Cursor::new(&bytes));
    }
}
