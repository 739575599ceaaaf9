//! Large requests (over `batch_bytes_max`): a slot of their own, a window of their own
//! beside the pipeline of batches, a persist request of their own, and a lane of their own
//! in the primary's queue.

use rsl_core::{Action, MessageBody, ProposeError, Value};
use rsl_testkit::{payloads, request, Cluster};

const BATCH: u64 = 100;

fn large(n: usize) -> String {
    format!("{n}:{}", "L".repeat(298))
}

fn cluster(depth: u64, large_bytes: u64) -> Cluster {
    Cluster::new(3, move |c| {
        c.pipeline_depth = depth;
        c.batch_bytes_max = BATCH;
        c.request_bytes_max = 400;
        c.large_bytes_in_flight_max = large_bytes;
        c.message_bytes_max = 1 << 20;
    })
}

#[test]
fn a_large_request_takes_a_slot_of_its_own_beside_a_full_pipeline_of_batches() {
    let depth = 4;
    let mut cluster = cluster(depth, 1 << 20);
    let primary = cluster.elect();
    cluster.node_mut(primary).auto_persist = false;
    let small: Vec<String> = (0..depth).map(|i| format!("s{i}")).collect();
    // A large request between small ones: the small ones still share batches.
    cluster.propose(primary, request(0, &small[0])).unwrap();
    cluster.propose(primary, request(1, &large(1))).unwrap();
    for (i, payload) in small.iter().enumerate().skip(1) {
        cluster.propose(primary, request(i as u64 + 1, payload)).unwrap();
    }
    let replica = cluster.replica(primary);
    assert_eq!(replica.in_flight_slots(), depth + 1, "the large slot does not take a batch's place");
    assert_eq!(replica.statistics().large_requests_proposed, 1);
    cluster.propose(primary, request(9, "waits")).unwrap();
    assert_eq!(cluster.replica(primary).in_flight_slots(), depth + 1, "the batch window is full");
    assert_eq!(cluster.replica(primary).queued_requests(), 1);

    // The large value went alone, in a persist request of its own.
    let withheld = &cluster.node(primary).withheld;
    let with_large: Vec<_> = withheld
        .iter()
        .filter(|w| w.proposals.iter().any(|p| payloads(&p.value) == vec![large(1)]))
        .collect();
    assert_eq!(with_large.len(), 1);
    assert_eq!(with_large[0].proposals.len(), 1, "a large value is alone in its write");

    cluster.node_mut(primary).auto_persist = true;
    cluster.release(primary);
    cluster.settle();
    cluster.advance_ms(100);
    for id in cluster.ids() {
        let applied = cluster.node(id).applied.clone();
        let large_slots: Vec<_> = applied.iter().filter(|(_, v)| payloads(v) == vec![large(1)]).collect();
        assert_eq!(large_slots.len(), 1, "node {id} applied the large request once");
        let total: usize = applied.iter().map(|(_, v)| payloads(v).len()).sum();
        assert_eq!(total, depth as usize + 2, "node {id}");
    }
}

#[test]
fn large_requests_wait_for_their_byte_budget_without_holding_up_batches() {
    // The budget takes one 300-byte request's value, not two.
    let budget = Value::large_size_bytes(400);
    let one = Value::large_size_bytes(large(1).len() as u64);
    assert!(2 * one > budget);
    let mut cluster = cluster(2, budget);
    let primary = cluster.elect();
    cluster.node_mut(primary).auto_persist = false;
    cluster.propose(primary, request(1, &large(1))).unwrap();
    cluster.propose(primary, request(2, &large(2))).unwrap();
    cluster.propose(primary, request(3, "small")).unwrap();
    let replica = cluster.replica(primary);
    assert_eq!(replica.in_flight_slots(), 2, "one large slot (the budget) and the batch");
    assert_eq!(replica.queued_requests(), 1, "the second large request waits");
    // The lane holds at most the budget: a third large request is refused, naming it.
    let error = cluster.propose(primary, request(4, &large(4))).unwrap_err();
    assert_eq!(error, ProposeError::LargeBusy { queued_bytes: one, max: budget });
    assert!(error.to_string().contains("large_bytes_in_flight_max"), "{error}");

    cluster.node_mut(primary).auto_persist = true;
    cluster.release(primary);
    cluster.settle();
    cluster.advance_ms(100);
    for id in cluster.ids() {
        let applied: Vec<String> = cluster.node(id).applied_payloads();
        assert_eq!(applied, vec![large(1), "small".to_owned(), large(2)], "node {id}");
    }
}

#[test]
fn an_over_limit_request_is_refused_naming_the_limit() {
    let mut cluster = cluster(2, 1 << 20);
    let primary = cluster.elect();
    let error = cluster.propose(primary, request(1, &"x".repeat(401))).unwrap_err();
    assert_eq!(error, ProposeError::TooLarge { bytes: 401, max: 400 });
    assert!(error.to_string().contains("request_bytes_max"), "{error}");
    cluster.propose(primary, request(2, &"x".repeat(400))).expect("exactly request_bytes_max fits");
}

#[test]
fn unanswered_large_accepts_are_resent_after_a_growing_wait() {
    let mut cluster = cluster(2, 1 << 20);
    let primary = cluster.elect();
    let other = cluster.ids().find(|&id| id != primary).unwrap();
    // One acceptor is cut off and the other never gets the large accept, so the slot stays
    // unchosen; heartbeats keep the second acceptor live (its accepts are due again).
    let third = cluster.ids().find(|&id| id != primary && id != other).unwrap();
    cluster.set_drop(move |m| {
        m.from.0 == third
            || m.to.0 == third
            || (m.to.0 == other
                && matches!(&m.body, MessageBody::Accept { value, .. } if payloads(value) == vec![large(1)]))
    });
    let since = cluster.now;
    cluster.propose(primary, request(1, &large(1))).unwrap();
    cluster.settle();
    for _ in 0..60 {
        cluster.advance_ms(50);
    }
    let resent = cluster.node(primary).actions.iter().filter(|(t, a)| {
        *t > since
            && matches!(a, Action::Send(m) if m.to.0 == other
                && matches!(&m.body, MessageBody::Accept { value, .. } if payloads(value) == vec![large(1)]))
    });
    // Over three seconds a small accept would go 60 times; a large one after 0.5 s, then
    // 1 s, then 2 s (one send plus three resends at most).
    let count = resent.count();
    assert!((2..=4).contains(&count), "large accept sent {count} times");
}
