//! The two tiers of checks as the integration tests see them: `cargo test -p rsl-core`
//! builds the crate with `contracts` (through its dev-dependency on itself), so a broken
//! precondition stops the test; the safety rules stop a replica in every build.

use rsl_core::{DurableState, Replica, Time};
use rsl_testkit::config;

fn replica() -> Replica {
    Replica::new(config(1, 3), DurableState::default(), Time(1_000)).expect("valid config")
}

// Checked when the tests compile: a build of them without `contracts` fails here.
const _: () =
    assert!(rsl_core::contracts::ENABLED, "cargo test -p rsl-core must build rsl-core with `contracts`");

#[test]
#[should_panic(expected = "precondition failed: time went backwards")]
fn a_broken_precondition_stops_the_test() {
    let mut replica = replica();
    replica.handle_timeout(Time(500));
}

#[test]
#[should_panic(expected = "safety rule violated (nothing is answered or applied before it is durable): \
                           ticket 99 was never issued")]
fn a_broken_safety_rule_stops_the_replica() {
    let mut replica = replica();
    replica.on_persisted(Time(2_000), 99);
}
