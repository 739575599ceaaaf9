//! Write and read batches, malformed one field at a time: each is refused naming the
//! batch's field (version, kind, count, a part, trailing bytes), and a batch that does not
//! decode changes nothing in the state machine.

use bytes::Bytes;
use rsl_kv::command::{
    Read, ReadBatch, ReadOutcome, Write, WriteBatch, WriteId, WriteResponse, FORMAT_VERSION,
};

fn write(sequence: u64) -> Write {
    Write::Put { id: WriteId { client: 1, sequence }, key: "k".into(), value: Bytes::from_static(b"v") }
}

fn write_batch(count: u64) -> Vec<u8> {
    let mut batch = WriteBatch::new();
    for sequence in 1..=count {
        batch.push(&write(sequence));
    }
    batch.finish().to_vec()
}

fn write_refusal(bytes: &[u8]) -> (&'static str, String) {
    let error = WriteBatch::split(bytes).expect_err("malformed");
    (error.field, error.problem)
}

#[test]
fn an_empty_write_batch_splits_into_nothing() {
    let bytes = write_batch(0);
    assert!(WriteBatch::is_batch(&bytes));
    assert!(WriteBatch::split(&bytes).unwrap().is_empty());
}

#[test]
fn a_write_batch_of_another_version_is_refused() {
    let mut bytes = write_batch(1);
    bytes[0] = FORMAT_VERSION + 1;
    assert!(!WriteBatch::is_batch(&bytes));
    assert_eq!(write_refusal(&bytes).0, "write_batch");
}

#[test]
fn a_read_batch_is_not_a_write_batch() {
    let mut batch = ReadBatch::new();
    batch.push(&Read::Digest);
    let bytes = batch.finish();
    assert!(!WriteBatch::is_batch(&bytes));
    let (field, problem) = write_refusal(&bytes);
    assert_eq!(field, "write_batch.kind");
    assert!(problem.starts_with("kind "), "{problem}");
}

#[test]
fn a_write_batch_cut_in_its_count_is_refused() {
    assert_eq!(write_refusal(&write_batch(1)[..4]).0, "write_batch.count");
}

#[test]
fn a_write_batch_counting_more_parts_than_fit_is_refused_before_reading_them() {
    let mut bytes = write_batch(1);
    bytes[2..6].copy_from_slice(&1_000_000u32.to_le_bytes());
    let (field, problem) = write_refusal(&bytes);
    assert_eq!(field, "write_batch.count");
    assert!(problem.contains("1000000 parts cannot fit"), "{problem}");
}

#[test]
fn a_write_batch_cut_in_a_part_is_refused_naming_the_part() {
    let bytes = write_batch(2);
    assert_eq!(write_refusal(&bytes[..bytes.len() - 3]).0, "write_batch.write");
}

#[test]
fn a_write_batch_with_trailing_bytes_is_refused() {
    let mut bytes = write_batch(2);
    bytes.push(9);
    let (field, problem) = write_refusal(&bytes);
    assert_eq!((field, problem.as_str()), ("write_batch", "1 trailing bytes"));
}

#[test]
fn a_write_batch_that_does_not_split_changes_nothing_in_the_machine() {
    let mut machine = rsl_kv::KvStateMachine::new();
    let mut bytes = write_batch(2);
    bytes.push(9);
    let answer = WriteResponse::decode(&machine.execute_write(1, &bytes)).unwrap();
    assert!(
        matches!(answer.outcome, rsl_kv::command::WriteOutcome::Malformed { reason } if reason.contains("trailing"))
    );
    assert!(machine.is_empty());
}

#[test]
fn a_read_batch_splits_into_its_reads() {
    let mut batch = ReadBatch::new();
    batch.push(&Read::Get { key: "a".into() });
    batch.push(&Read::Digest);
    assert_eq!(batch.len(), 2);
    let bytes = batch.finish();
    assert!(ReadBatch::is_batch(&bytes));
    let reads: Vec<Read> =
        ReadBatch::split(&bytes).unwrap().into_iter().map(|p| Read::decode(p).unwrap()).collect();
    assert_eq!(reads, vec![Read::Get { key: "a".into() }, Read::Digest]);
}

#[test]
fn a_read_batch_cut_in_a_part_is_refused_naming_the_part() {
    let mut batch = ReadBatch::new();
    batch.push(&Read::Get { key: "abc".into() });
    let bytes = batch.finish();
    let error = ReadBatch::split(&bytes[..bytes.len() - 1]).unwrap_err();
    assert_eq!(error.field, "read_batch.read");
}

#[test]
fn a_read_batch_that_does_not_split_is_answered_malformed() {
    let machine = rsl_kv::KvStateMachine::new();
    let mut batch = ReadBatch::new();
    batch.push(&Read::Digest);
    let mut bytes = batch.finish().to_vec();
    bytes.truncate(bytes.len() - 1);
    let answer = ReadOutcome::decode(&machine.execute_read(&bytes)).unwrap();
    assert!(matches!(answer, ReadOutcome::Malformed { .. }), "{answer:?}");
}

#[test]
fn batch_answers_round_trip() {
    let answers = vec![
        WriteResponse { slot: 3, outcome: rsl_kv::command::WriteOutcome::Put },
        WriteResponse { slot: 3, outcome: rsl_kv::command::WriteOutcome::Deleted { existed: false } },
    ];
    assert_eq!(WriteResponse::decode_batch(&WriteResponse::encode_batch(&answers)).unwrap(), answers);
    let outcomes = vec![ReadOutcome::Value(None), ReadOutcome::Value(Some(Bytes::from_static(b"x")))];
    assert_eq!(ReadOutcome::decode_batch(&ReadOutcome::encode_batch(&outcomes)).unwrap(), outcomes);
}

#[test]
fn a_single_answer_to_a_batch_reads_as_a_list_of_one() {
    // A batch that did not decode at all is answered with one `Malformed` answer.
    let single =
        WriteResponse { slot: 1, outcome: rsl_kv::command::WriteOutcome::Malformed { reason: "x".into() } };
    assert_eq!(WriteResponse::decode_batch(&single.encode()).unwrap(), vec![single]);
    let read = ReadOutcome::Malformed { reason: "y".into() };
    assert_eq!(ReadOutcome::decode_batch(&read.encode()).unwrap(), vec![read]);
}

#[test]
fn garbage_is_no_batch_answer() {
    assert!(WriteResponse::decode_batch(b"\x01").is_err());
    assert!(ReadOutcome::decode_batch(b"").is_err());
}
