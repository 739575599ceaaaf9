//! The data directory's record of how its ring began (`ring.toml`): a first start writes
//! it, later starts follow it whatever the flags say, and every contradiction is refused
//! naming the directory (bootstrapping twice, another ring, a damaged record, a node that
//! is not an initial member).

use std::path::Path;

use rsl::{NodeId, RingId};
use rsl_kv::bootstrap::{settle, BootstrapError, Start, StartMode, RING_RECORD};

fn nodes(ids: &[u64]) -> Vec<NodeId> {
    ids.iter().copied().map(NodeId).collect()
}

fn settle_as(dir: &Path, node: u64, mode: StartMode, initial: &[u64]) -> Result<Start, BootstrapError> {
    settle(dir, RingId(1), NodeId(node), mode, &nodes(initial))
}

#[test]
fn a_first_bootstrap_records_its_initial_members() {
    let dir = tempfile::tempdir().unwrap();
    let start = settle_as(dir.path(), 1, StartMode::Bootstrap, &[1, 2, 3]).unwrap();
    assert_eq!(start, Start::Bootstrapped(nodes(&[1, 2, 3])));
    let text = std::fs::read_to_string(dir.path().join(RING_RECORD)).unwrap();
    assert!(
        text.contains("origin = \"bootstrapped\"") && text.contains("initial_members = [1, 2, 3]"),
        "{text}"
    );
}

#[test]
fn a_later_start_follows_the_record_not_the_flags() {
    let dir = tempfile::tempdir().unwrap();
    settle_as(dir.path(), 1, StartMode::Bootstrap, &[1, 2, 3]).unwrap();
    let again = settle_as(dir.path(), 1, StartMode::Auto, &[1, 9]).unwrap();
    assert_eq!(again, Start::Bootstrapped(nodes(&[1, 2, 3])));
}

#[test]
fn bootstrapping_twice_is_refused_naming_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    settle_as(dir.path(), 1, StartMode::Bootstrap, &[1, 2, 3]).unwrap();
    let error = settle_as(dir.path(), 1, StartMode::Bootstrap, &[1, 2, 3]).unwrap_err();
    assert!(matches!(error, BootstrapError::AlreadyBootstrapped { ring: 1, .. }), "{error}");
    let text = error.to_string();
    assert!(
        text.contains(&dir.path().display().to_string()) && text.contains("refusing to bootstrap"),
        "{text}"
    );
}

#[test]
fn a_directory_of_another_ring_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    settle_as(dir.path(), 1, StartMode::Bootstrap, &[1]).unwrap();
    let error = settle(dir.path(), RingId(2), NodeId(1), StartMode::Auto, &nodes(&[1])).unwrap_err();
    assert!(matches!(error, BootstrapError::WrongRing { expected: 2, found: 1, .. }), "{error}");
}

#[test]
fn a_joining_replica_records_that_it_joined() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(settle_as(dir.path(), 4, StartMode::Join, &[1, 2, 3]).unwrap(), Start::Joined);
    assert_eq!(settle_as(dir.path(), 4, StartMode::Auto, &[1, 2, 3]).unwrap(), Start::Joined);
}

#[test]
fn an_outsider_is_told_to_join_and_nothing_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let error = settle_as(dir.path(), 4, StartMode::Auto, &[1, 2, 3]).unwrap_err();
    assert!(
        matches!(&error, BootstrapError::NotAnInitialMember { node: 4, initial_members } if initial_members == &[1, 2, 3])
    );
    assert!(error.to_string().contains("--join"), "{error}");
    assert!(!dir.path().join(RING_RECORD).exists(), "nothing recorded");
}

#[test]
fn a_directory_holding_a_log_without_a_record_refuses_a_bootstrap() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("log")).unwrap();
    std::fs::write(dir.path().join("log").join("segment"), b"x").unwrap();
    let error = settle_as(dir.path(), 1, StartMode::Bootstrap, &[1]).unwrap_err();
    assert!(
        matches!(&error, BootstrapError::AlreadyBootstrapped { origin, .. } if origin == "found an existing log")
    );
}

#[test]
fn a_directory_holding_a_log_without_a_record_recovers_as_bootstrapped() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pmem.log"), b"x").unwrap();
    assert_eq!(
        settle_as(dir.path(), 1, StartMode::Auto, &[1, 2]).unwrap(),
        Start::Bootstrapped(nodes(&[1, 2]))
    );
}

#[test]
fn a_damaged_record_is_refused_naming_its_path() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(RING_RECORD), "ring = \"one\"\n").unwrap();
    let error = settle_as(dir.path(), 1, StartMode::Auto, &[1]).unwrap_err();
    assert!(matches!(error, BootstrapError::Record { .. }), "{error}");
    assert!(error.to_string().contains(RING_RECORD), "{error}");
}

#[test]
fn a_record_of_an_unknown_origin_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(RING_RECORD), "ring = 1\norigin = \"imported\"\n").unwrap();
    let error = settle_as(dir.path(), 1, StartMode::Auto, &[1]).unwrap_err();
    assert!(error.to_string().contains("origin `imported`"), "{error}");
}

#[test]
fn a_bootstrapped_record_without_members_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(RING_RECORD), "ring = 1\norigin = \"bootstrapped\"\n").unwrap();
    let error = settle_as(dir.path(), 1, StartMode::Auto, &[1]).unwrap_err();
    assert!(matches!(error, BootstrapError::Record { .. }), "{error}");
}

#[test]
fn a_record_with_an_unknown_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(RING_RECORD), "ring = 1\norigin = \"joined\"\ncolour = \"red\"\n")
        .unwrap();
    let error = settle_as(dir.path(), 1, StartMode::Auto, &[1]).unwrap_err();
    assert!(error.to_string().contains("colour"), "{error}");
}
