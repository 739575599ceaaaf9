//! The key-value state machine's rules through its public API: what each write does, the
//! per-client session rules (a retry is answered again and not executed twice, an older
//! write is stale, the least recently written client is forgotten first), malformed
//! requests that change nothing, checkpoints that keep the sessions, and the command codec:
//! every malformed field is refused with its name.

use bytes::Bytes;
use proptest::prelude::*;
use rsl_kv::command::{
    Read, ReadBatch, ReadOutcome, Write, WriteBatch, WriteId, WriteOutcome, WriteResponse, FORMAT_VERSION,
    KEY_BYTES_MAX,
};
use rsl_kv::KvStateMachine;

fn id(client: u64, sequence: u64) -> WriteId {
    WriteId { client, sequence }
}

fn put(client: u64, sequence: u64, key: &str, value: &str) -> Write {
    Write::Put { id: id(client, sequence), key: key.into(), value: Bytes::copy_from_slice(value.as_bytes()) }
}

fn execute(machine: &mut KvStateMachine, slot: u64, write: &Write) -> WriteResponse {
    WriteResponse::decode(&machine.execute_write(slot, &write.encode())).expect("a response")
}

fn get(machine: &KvStateMachine, key: &str) -> ReadOutcome {
    ReadOutcome::decode(&machine.execute_read(&Read::Get { key: key.into() }.encode())).expect("an outcome")
}

fn value(text: &str) -> ReadOutcome {
    ReadOutcome::Value(Some(Bytes::copy_from_slice(text.as_bytes())))
}

// ---- writes ----

#[test]
fn a_put_sets_the_value_and_answers_put() {
    let mut machine = KvStateMachine::new();
    assert_eq!(
        execute(&mut machine, 3, &put(1, 1, "k", "v")),
        WriteResponse { slot: 3, outcome: WriteOutcome::Put }
    );
    assert_eq!(get(&machine, "k"), value("v"));
    assert_eq!(machine.len(), 1);
}

#[test]
fn a_delete_says_whether_the_key_existed() {
    let mut machine = KvStateMachine::new();
    execute(&mut machine, 1, &put(1, 1, "k", "v"));
    let delete = |sequence| Write::Delete { id: id(1, sequence), key: "k".into() };
    assert_eq!(execute(&mut machine, 2, &delete(2)).outcome, WriteOutcome::Deleted { existed: true });
    assert_eq!(execute(&mut machine, 3, &delete(3)).outcome, WriteOutcome::Deleted { existed: false });
    assert_eq!(get(&machine, "k"), ReadOutcome::Value(None));
    assert!(machine.is_empty());
}

#[test]
fn a_cas_on_an_absent_key_expecting_absence_swaps() {
    let mut machine = KvStateMachine::new();
    let cas = Write::Cas { id: id(1, 1), key: "k".into(), expected: None, value: Bytes::from_static(b"new") };
    assert_eq!(
        execute(&mut machine, 1, &cas).outcome,
        WriteOutcome::Cas { swapped: true, current: Some(Bytes::from_static(b"new")) }
    );
}

#[test]
fn a_cas_with_the_wrong_expectation_keeps_the_value_and_reports_it() {
    let mut machine = KvStateMachine::new();
    execute(&mut machine, 1, &put(1, 1, "k", "old"));
    let cas = Write::Cas {
        id: id(1, 2),
        key: "k".into(),
        expected: Some(Bytes::from_static(b"other")),
        value: Bytes::from_static(b"new"),
    };
    assert_eq!(
        execute(&mut machine, 2, &cas).outcome,
        WriteOutcome::Cas { swapped: false, current: Some(Bytes::from_static(b"old")) }
    );
    assert_eq!(get(&machine, "k"), value("old"));
}

#[test]
fn a_cas_expecting_absence_on_a_present_key_does_not_swap() {
    let mut machine = KvStateMachine::new();
    execute(&mut machine, 1, &put(1, 1, "k", "old"));
    let cas = Write::Cas { id: id(1, 2), key: "k".into(), expected: None, value: Bytes::from_static(b"new") };
    assert!(matches!(execute(&mut machine, 2, &cas).outcome, WriteOutcome::Cas { swapped: false, .. }));
}

#[test]
fn a_cas_with_the_right_expectation_swaps() {
    let mut machine = KvStateMachine::new();
    execute(&mut machine, 1, &put(1, 1, "k", "old"));
    let cas = Write::Cas {
        id: id(1, 2),
        key: "k".into(),
        expected: Some(Bytes::from_static(b"old")),
        value: Bytes::from_static(b"new"),
    };
    assert!(matches!(execute(&mut machine, 2, &cas).outcome, WriteOutcome::Cas { swapped: true, .. }));
    assert_eq!(get(&machine, "k"), value("new"));
}

// ---- sessions ----

#[test]
fn a_retry_is_answered_with_the_first_answer_and_its_slot_without_executing_again() {
    let mut machine = KvStateMachine::new();
    let first = execute(&mut machine, 5, &put(1, 1, "k", "v1"));
    // The same id with another value: the retry of a write already executed.
    let retry = execute(&mut machine, 9, &put(1, 1, "k", "v2"));
    assert_eq!(retry, first);
    assert_eq!(retry.slot, 5);
    assert_eq!(get(&machine, "k"), value("v1"));
}

#[test]
fn an_older_sequence_is_stale_naming_the_newest() {
    let mut machine = KvStateMachine::new();
    execute(&mut machine, 1, &put(1, 1, "k", "a"));
    execute(&mut machine, 2, &put(1, 2, "k", "b"));
    let stale = execute(&mut machine, 3, &put(1, 1, "k", "c"));
    assert_eq!(stale, WriteResponse { slot: 3, outcome: WriteOutcome::Stale { newest: 2 } });
    assert_eq!(get(&machine, "k"), value("b"));
}

#[test]
fn a_sequence_may_skip_ahead() {
    let mut machine = KvStateMachine::new();
    execute(&mut machine, 1, &put(1, 1, "k", "a"));
    assert_eq!(execute(&mut machine, 2, &put(1, 7, "k", "b")).outcome, WriteOutcome::Put);
    assert_eq!(execute(&mut machine, 3, &put(1, 6, "k", "c")).outcome, WriteOutcome::Stale { newest: 7 });
}

#[test]
fn clients_have_sessions_of_their_own() {
    let mut machine = KvStateMachine::new();
    execute(&mut machine, 1, &put(1, 5, "k", "a"));
    assert_eq!(execute(&mut machine, 2, &put(2, 1, "k", "b")).outcome, WriteOutcome::Put);
    assert_eq!(machine.sessions(), 2);
    assert_eq!(get(&machine, "k"), value("b"));
}

#[test]
fn the_least_recently_written_client_is_forgotten_first() {
    let mut machine = KvStateMachine::with_sessions_max(2);
    execute(&mut machine, 1, &put(1, 1, "a", "1"));
    execute(&mut machine, 2, &put(2, 1, "b", "1"));
    execute(&mut machine, 3, &put(1, 2, "a", "2")); // client 1 is now the most recent
    execute(&mut machine, 4, &put(3, 1, "c", "1")); // forgets client 2
    assert_eq!(machine.sessions(), 2);
    // Client 1's retry is still recognised (a retry refreshes nothing)...
    assert_eq!(execute(&mut machine, 5, &put(1, 2, "a", "x")).slot, 3);
    assert_eq!(get(&machine, "a"), value("2"));
    // ...client 2's is executed again: it was forgotten.
    assert_eq!(execute(&mut machine, 6, &put(2, 1, "b", "again")).outcome, WriteOutcome::Put);
    assert_eq!(get(&machine, "b"), value("again"));
}

#[test]
fn sessions_max_is_at_least_one() {
    let mut machine = KvStateMachine::with_sessions_max(0);
    execute(&mut machine, 1, &put(1, 1, "a", "1"));
    assert_eq!(machine.sessions(), 1);
}

#[test]
fn a_malformed_write_changes_nothing_and_opens_no_session() {
    let mut machine = KvStateMachine::new();
    let answer = WriteResponse::decode(&machine.execute_write(4, b"\x01\x09garbage")).unwrap();
    assert_eq!(answer.slot, 4);
    assert!(matches!(answer.outcome, WriteOutcome::Malformed { .. }), "{answer:?}");
    assert!(machine.is_empty());
    assert_eq!(machine.sessions(), 0);
}

#[test]
fn a_batch_is_executed_in_order_with_one_answer_per_write() {
    let mut machine = KvStateMachine::new();
    let mut batch = WriteBatch::new();
    batch.push(&put(1, 1, "k", "a"));
    batch.push(&put(2, 1, "k", "b"));
    batch.push(&put(1, 1, "k", "retry"));
    let answers = WriteResponse::decode_batch(&machine.execute_write(8, &batch.finish())).unwrap();
    assert_eq!(answers.len(), 3);
    assert!(answers.iter().all(|a| a.slot == 8 && a.outcome == WriteOutcome::Put));
    assert_eq!(get(&machine, "k"), value("b"), "the retry inside the batch did not execute");
}

#[test]
fn a_batch_that_does_not_decode_changes_nothing() {
    let mut machine = KvStateMachine::new();
    let mut batch = WriteBatch::new();
    batch.push(&put(1, 1, "k", "a"));
    let mut bytes = batch.finish().to_vec();
    bytes.truncate(bytes.len() - 1);
    let answer = WriteResponse::decode(&machine.execute_write(2, &bytes)).unwrap();
    assert!(matches!(answer.outcome, WriteOutcome::Malformed { .. }), "{answer:?}");
    assert!(machine.is_empty());
}

#[test]
fn a_read_batch_answers_each_read() {
    let mut machine = KvStateMachine::new();
    execute(&mut machine, 1, &put(1, 1, "k", "v"));
    let mut batch = ReadBatch::new();
    batch.push(&Read::Get { key: "k".into() });
    batch.push(&Read::Get { key: "missing".into() });
    batch.push(&Read::Digest);
    let answers = ReadOutcome::decode_batch(&machine.execute_read(&batch.finish())).unwrap();
    assert_eq!(answers[0], value("v"));
    assert_eq!(answers[1], ReadOutcome::Value(None));
    assert_eq!(answers[2], ReadOutcome::Digest(machine.digest()));
}

#[test]
fn a_malformed_read_is_answered_malformed() {
    let machine = KvStateMachine::new();
    let answer = ReadOutcome::decode(&machine.execute_read(b"\x01")).unwrap();
    assert!(matches!(answer, ReadOutcome::Malformed { .. }), "{answer:?}");
}

#[test]
fn equal_maps_have_equal_digests_and_different_maps_differ() {
    let (mut a, mut b) = (KvStateMachine::new(), KvStateMachine::new());
    execute(&mut a, 1, &put(1, 1, "x", "1"));
    execute(&mut a, 2, &put(1, 2, "y", "2"));
    execute(&mut b, 1, &put(7, 1, "y", "2"));
    execute(&mut b, 2, &put(7, 2, "x", "1"));
    assert_eq!(a.digest(), b.digest(), "order of writes and clients do not matter");
    execute(&mut b, 3, &put(7, 3, "x", "changed"));
    assert_ne!(a.digest(), b.digest());
    assert_eq!(a.digest().keys, 2);
}

#[test]
fn a_checkpoint_keeps_the_map_the_slot_and_the_sessions() {
    let mut machine = KvStateMachine::new();
    execute(&mut machine, 1, &put(1, 1, "k", "v"));
    execute(&mut machine, 2, &put(2, 4, "j", "w"));
    let mut bytes = Vec::new();
    machine.save(2, &mut bytes).unwrap();
    let (slot, mut loaded) = KvStateMachine::load(&mut bytes.as_slice(), 100).unwrap();
    assert_eq!(slot, 2);
    assert_eq!(loaded.digest(), machine.digest());
    assert_eq!(loaded.sessions(), 2);
    // The sessions came along: a retry is still recognised, an old write still stale.
    assert_eq!(execute(&mut loaded, 3, &put(2, 4, "j", "again")).slot, 2);
    assert_eq!(execute(&mut loaded, 4, &put(2, 3, "j", "old")).outcome, WriteOutcome::Stale { newest: 4 });
}

#[test]
fn a_checkpoint_loaded_with_fewer_sessions_keeps_the_most_recent() {
    let mut machine = KvStateMachine::new();
    for client in 1..=5 {
        execute(&mut machine, client, &put(client, 1, "k", "v"));
    }
    let mut bytes = Vec::new();
    machine.save(5, &mut bytes).unwrap();
    let (_, mut loaded) = KvStateMachine::load(&mut bytes.as_slice(), 2).unwrap();
    assert_eq!(loaded.sessions(), 2);
    assert_eq!(execute(&mut loaded, 6, &put(5, 1, "k", "retry")).slot, 5, "client 5 remembered");
}

#[test]
fn a_damaged_checkpoint_is_refused() {
    let mut machine = KvStateMachine::new();
    execute(&mut machine, 1, &put(1, 1, "k", "v"));
    let mut bytes = Vec::new();
    machine.save(1, &mut bytes).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    assert!(KvStateMachine::load(&mut bytes.as_slice(), 10).is_err());
    assert!(KvStateMachine::load(&mut &b"not a checkpoint"[..], 10).is_err());
    assert!(KvStateMachine::load(&mut &bytes[..10], 10).is_err());
}

// ---- the codec: every malformed field named ----

fn field_of(bytes: &[u8]) -> &'static str {
    Write::decode(bytes).expect_err("malformed").field
}

fn encoded_put() -> Vec<u8> {
    put(1, 2, "key", "value").encode().to_vec()
}

#[test]
fn an_empty_write_is_refused_at_its_version() {
    assert_eq!(field_of(&[]), "write");
}

#[test]
fn a_write_of_another_format_version_is_refused_naming_both() {
    let mut bytes = encoded_put();
    bytes[0] = FORMAT_VERSION + 1;
    let error = Write::decode(&bytes).unwrap_err();
    assert_eq!(error.field, "write");
    assert!(error.problem.contains(&format!("expected {FORMAT_VERSION}")), "{error}");
}

#[test]
fn a_write_of_an_unknown_kind_is_refused() {
    let mut bytes = encoded_put();
    bytes[1] = 99;
    let error = Write::decode(&bytes).unwrap_err();
    assert_eq!((error.field, error.problem.as_str()), ("write.kind", "unknown kind 99"));
}

#[test]
fn a_write_cut_in_its_client_id_is_refused_naming_it() {
    assert_eq!(field_of(&encoded_put()[..5]), "write.id.client");
}

#[test]
fn a_write_cut_in_its_sequence_is_refused_naming_it() {
    assert_eq!(field_of(&encoded_put()[..12]), "write.id.sequence");
}

#[test]
fn a_write_cut_in_its_key_is_refused_naming_it() {
    assert_eq!(field_of(&encoded_put()[..20]), "key");
}

#[test]
fn a_put_cut_in_its_value_is_refused_naming_it() {
    let bytes = encoded_put();
    assert_eq!(field_of(&bytes[..bytes.len() - 1]), "put.value");
}

#[test]
fn a_write_with_trailing_bytes_is_refused() {
    let mut bytes = encoded_put();
    bytes.push(0);
    let error = Write::decode(&bytes).unwrap_err();
    assert_eq!((error.field, error.problem.as_str()), ("write", "1 trailing bytes"));
}

#[test]
fn a_key_over_the_limit_is_refused_before_reading_it() {
    let mut bytes = encoded_put();
    bytes[18..22].copy_from_slice(&(KEY_BYTES_MAX as u32 + 1).to_le_bytes());
    let error = Write::decode(&bytes).unwrap_err();
    assert_eq!(error.field, "key");
    assert!(error.problem.contains("exceeds the limit"), "{error}");
}

#[test]
fn an_empty_key_is_refused() {
    let bytes = put(1, 1, "", "v").encode();
    let error = Write::decode(&bytes).unwrap_err();
    assert_eq!((error.field, error.problem.as_str()), ("key", "must not be empty"));
}

#[test]
fn a_key_that_is_not_utf8_is_refused() {
    let mut bytes = encoded_put();
    bytes[22] = 0xff;
    let error = Write::decode(&bytes).unwrap_err();
    assert_eq!(error.field, "key");
    assert!(error.problem.contains("not UTF-8"), "{error}");
}

#[test]
fn a_cas_with_a_bad_presence_flag_is_refused_naming_it() {
    let cas = Write::Cas { id: id(1, 1), key: "k".into(), expected: None, value: Bytes::from_static(b"v") };
    let mut bytes = cas.encode().to_vec();
    // version, kind, client, sequence, key length, "k", then the flag.
    bytes[2 + 16 + 4 + 1] = 7;
    let error = Write::decode(&bytes).unwrap_err();
    assert_eq!(error.field, "cas.expected.present");
    assert!(error.problem.contains("flag byte 7"), "{error}");
}

#[test]
fn a_cas_cut_in_its_expected_value_is_refused_naming_it() {
    let cas = Write::Cas {
        id: id(1, 1),
        key: "k".into(),
        expected: Some(Bytes::from_static(b"old")),
        value: Bytes::from_static(b"v"),
    };
    let bytes = cas.encode();
    assert_eq!(field_of(&bytes[..2 + 16 + 4 + 1 + 1 + 4 + 1]), "cas.expected");
}

#[test]
fn a_cas_cut_in_its_new_value_is_refused_naming_it() {
    let cas = Write::Cas { id: id(1, 1), key: "k".into(), expected: None, value: Bytes::from_static(b"v") };
    let bytes = cas.encode();
    assert_eq!(field_of(&bytes[..bytes.len() - 1]), "cas.value");
}

#[test]
fn a_read_of_an_unknown_kind_is_refused() {
    let mut bytes = Read::Digest.encode().to_vec();
    bytes[1] = 77;
    assert!(Read::decode(&bytes).is_err());
}

#[test]
fn reads_round_trip() {
    for read in [Read::Get { key: "k".into() }, Read::Digest, Read::Checkpoint] {
        assert_eq!(Read::decode(&read.encode()).unwrap(), read);
    }
}

#[test]
fn a_write_batch_splits_into_its_writes() {
    let writes = [put(1, 1, "a", "1"), put(1, 2, "b", "2")];
    let mut batch = WriteBatch::new();
    for write in &writes {
        batch.push(write);
    }
    assert_eq!(batch.len(), 2);
    let bytes = batch.finish();
    assert!(WriteBatch::is_batch(&bytes));
    assert!(!WriteBatch::is_batch(&writes[0].encode()));
    let parts = WriteBatch::split(&bytes).unwrap();
    let decoded: Vec<Write> = parts.iter().map(|part| Write::decode(part).unwrap()).collect();
    assert_eq!(decoded, writes);
}

fn arb_bytes() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from)
}

fn arb_write() -> impl Strategy<Value = Write> {
    let key = "[a-z0-9]{1,16}";
    let id = (1u64.., 1u64..).prop_map(|(client, sequence)| WriteId { client, sequence });
    prop_oneof![
        (id.clone(), key, arb_bytes()).prop_map(|(id, key, value)| Write::Put { id, key, value }),
        (id.clone(), key).prop_map(|(id, key)| Write::Delete { id, key }),
        (id, key, proptest::option::of(arb_bytes()), arb_bytes())
            .prop_map(|(id, key, expected, value)| Write::Cas { id, key, expected, value }),
    ]
}

proptest! {
    #[test]
    fn every_write_round_trips_and_every_cut_of_it_is_refused(write in arb_write()) {
        let bytes = write.encode();
        prop_assert_eq!(bytes.len(), write.encoded_len());
        prop_assert_eq!(Write::decode(&bytes).unwrap(), write);
        for cut in 0..bytes.len() {
            prop_assert!(Write::decode(&bytes[..cut]).is_err(), "a cut at {} decoded", cut);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_machine(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
        let mut machine = KvStateMachine::new();
        let answer = machine.execute_write(1, &bytes);
        prop_assert!(WriteResponse::decode(&answer).is_ok() || WriteResponse::decode_batch(&answer).is_ok());
        let read = machine.execute_read(&bytes);
        prop_assert!(ReadOutcome::decode(&read).is_ok() || ReadOutcome::decode_batch(&read).is_ok());
    }

    #[test]
    fn replaying_the_same_writes_gives_the_same_digest(writes in proptest::collection::vec(arb_write(), 0..20)) {
        let (mut a, mut b) = (KvStateMachine::new(), KvStateMachine::new());
        for (slot, write) in writes.iter().enumerate() {
            let first = a.execute_write(slot as u64 + 1, &write.encode());
            let second = b.execute_write(slot as u64 + 1, &write.encode());
            prop_assert_eq!(first, second);
        }
        prop_assert_eq!(a.digest(), b.digest());
    }
}
