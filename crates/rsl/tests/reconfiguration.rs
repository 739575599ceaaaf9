//! Reconfiguration through the facade on an in-memory network: a ring bootstrapped from one
//! replica grows 1 → 3 → 5 with joining replicas, shrinks to 3 without its primary, and
//! keeps every replicated request; refusals and notifications behave.

mod common;

use common::{config, Cluster, Disk, Tally, WAIT};
use rsl::{ChangeConfigurationError, MemoryStorage, NodeId, Ring, RingId, Role, Slot};

const RING: RingId = RingId(11);

/// Starts `node` joining the ring: it knows `contacts` and no configuration yet.
async fn start_joining(cluster: &mut Cluster, node: NodeId, contacts: &[NodeId]) {
    let mut joining = config(RING, node, contacts);
    joining.joining = true;
    cluster.configs.insert((RING, node), joining);
    cluster.disks.insert((RING, node), Disk::Memory(MemoryStorage::new()));
    cluster.restart(RING, node).await.expect("a joining replica starts");
}

/// Waits until `replica` is in a configuration with exactly `members`.
async fn wait_for_members(replica: &Ring, members: &[NodeId]) {
    let mut status = replica.status();
    let reached = tokio::time::timeout(WAIT, status.wait_for(|s| s.configuration.members == members)).await;
    assert!(
        matches!(reached, Ok(Ok(_))),
        "{} never entered a configuration of {members:?}: {:?}",
        replica.node(),
        replica.status().borrow()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grow_from_one_to_five_then_shrink_to_three_without_the_primary() {
    let n = |id: u64| NodeId(id);
    let mut cluster = Cluster::new(5);
    // Bootstrap from a single replica.
    cluster.configs.insert((RING, n(1)), config(RING, n(1), &[n(1)]));
    cluster.disks.insert((RING, n(1)), Disk::Memory(MemoryStorage::new()));
    cluster.restart(RING, n(1)).await.unwrap();
    for id in 2..=5 {
        start_joining(&mut cluster, n(id), &[n(1)]).await;
    }
    let mut expected = Vec::new();
    for request in 1..=5 {
        cluster.replicate(RING, request).await;
        expected.push(request);
    }
    assert!(!cluster.ring(RING, n(2)).status().borrow().member, "a joining replica does not vote");

    // A secondary (here: a joining replica) refuses to change the configuration.
    match cluster.ring(RING, n(2)).change_configuration(vec![n(1), n(2)]).await {
        Err(ChangeConfigurationError::Refused(rsl::core::ChangeError::NotPrimary { .. })) => {}
        other => panic!("a non-primary must refuse, got {other:?}"),
    }

    // 1 -> 3 -> 5: joining replicas catch up and start voting.
    for members in [vec![n(1), n(2), n(3)], vec![n(1), n(2), n(3), n(4), n(5)]] {
        let primary = cluster.primary(RING).await;
        let configuration =
            primary.change_configuration(members.clone()).await.expect("the change is chosen");
        assert_eq!(configuration.members, members);
        for &node in &members {
            wait_for_members(cluster.ring(RING, node), &members).await;
        }
        for request in 0..5 {
            let request = 100 * configuration.number + request;
            cluster.replicate(RING, request).await;
            expected.push(request);
        }
    }
    let primary = cluster.primary(RING).await;
    assert_eq!(primary.status().borrow().configuration.number, 3);

    // Refusals: no change, an empty list, node 0.
    for bad in [vec![n(1), n(2), n(3), n(4), n(5)], vec![], vec![NodeId(0), n(1)]] {
        let result = primary.change_configuration(bad.clone()).await;
        assert!(
            matches!(result, Err(ChangeConfigurationError::Refused(rsl::core::ChangeError::Invalid { .. }))),
            "{bad:?}: {result:?}"
        );
    }

    // Shrink to three members that exclude the current primary: it leaves, the others
    // elect among themselves and keep serving; the removed replicas learn they are out.
    let old_primary = primary.node();
    let remaining: Vec<NodeId> = (1..=5).map(n).filter(|&m| m != old_primary).take(3).collect();
    let configuration = primary.change_configuration(remaining.clone()).await.expect("the change is chosen");
    assert_eq!(configuration.number, 4);
    for &node in &remaining {
        wait_for_members(cluster.ring(RING, node), &remaining).await;
    }
    wait_for_members(cluster.ring(RING, old_primary), &remaining).await;
    let old = cluster.ring(RING, old_primary).status().borrow().clone();
    assert!(
        !old.member && old.role == Role::Secondary,
        "the removed primary steps down and stays out: {old:?}"
    );
    for request in 1000..1010 {
        let tally = cluster.replicate(RING, request).await;
        expected.push(request);
        assert_eq!(tally, Tally::of(expected.iter().copied()));
    }
    let new_primary = cluster.primary(RING).await;
    assert!(remaining.contains(&new_primary.node()));

    // Every member applied the same requests in the same order.
    let chosen = new_primary.status().borrow().chosen;
    for &node in &remaining {
        let replica = cluster.ring(RING, node);
        cluster.applied(replica, chosen).await;
        let state = Tally::decode(&replica.read_fast(Vec::new(), chosen).await.unwrap());
        assert_eq!(state, Tally::of(expected.iter().copied()), "{node}");
    }
    assert!(chosen > Slot(20));
    cluster.shutdown().await;
}
