//! Learners on rings of real `rsl-kv-server` processes with authentication on, changed
//! through the steps `rsl-kv reconfigure` takes (`rsl_kv::grow`): replicas that know one
//! contact (`--join-via`, no `--members`) join with a reader's token (refused without one),
//! are added as learners, follow the log, are promoted, serve reads, and count in the quorum
//! once the old primary is gone; a learner paused while writes go on is refused promotion
//! with the LearnerBehind error once the wait runs out, its promotion waits, and succeeds
//! once it is resumed and caught up, and its `/readyz` says `behind` until then.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rsl_kv::auth::Role;
use rsl_kv::grow::{self, Growth};
use rsl_kv::{Client, ClientError, ClientOptions};
use rsl_tests::process::{self, split_response, ClusterOptions, ProcessCluster, HTTP_OK};
use rsl_tests::server;

/// Longest wait for the ring to elect, converge, catch up or serve a request.
const WAIT: Duration = Duration::from_secs(60);

/// `replicas` processes with metrics ports and authentication; none started.
fn cluster(replicas: u64, extra: &[&str]) -> ProcessCluster {
    ProcessCluster::create(server::binary(), ClusterOptions::probed(replicas, extra))
}

/// The flag that gives a joining replica the reader's token for its contact.
fn reader_token(cluster: &ProcessCluster) -> String {
    format!("--join-token-file={}", cluster.token_file(Role::Read).display())
}

/// A client of replica `id` alone, as the admin.
fn client_of(cluster: &ProcessCluster, id: u64) -> Client {
    let options = ClientOptions { deadline: WAIT, security: cluster.security(), ..ClientOptions::default() };
    Client::new([cluster.client_address(id).to_owned()], options).expect("a valid address")
}

/// Waits until replica `id` is a learner of the configuration in force and has applied
/// `slot`.
async fn wait_for_learner(cluster: &ProcessCluster, client: &mut Client, id: u64, slot: u64) {
    process::until(
        &format!("replica {id} follows the log as a learner up to slot {slot}"),
        WAIT,
        async || {
            let status = client.status_of(cluster.client_address(id)).await.ok()?;
            (status.learner && !status.member && status.applied >= slot).then_some(())
        },
    )
    .await;
}

/// The steps' report lines, shared with a task that runs them.
#[derive(Clone, Default)]
struct Report(Arc<Mutex<Vec<String>>>);

impl Report {
    fn line(&self) -> impl FnMut(String) + Send + '_ {
        move |line| {
            eprintln!("reconfigure: {line}");
            self.0.lock().unwrap().push(line);
        }
    }

    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_grows_through_learners_that_knew_one_contact() {
    let mut cluster = cluster(5, &["--checkpoint-interval-slots=50", "--log-retain-slots=20"]);
    cluster.join_via(4, 1);
    cluster.join_via(5, 2);
    for id in 1..=3 {
        cluster.spawn(id, &[]);
    }
    let mut client = cluster.client(WAIT);
    let primary = cluster.wait_for_primary(&mut client, WAIT).await;
    let mut acknowledged = BTreeMap::new();
    for i in 0..100 {
        client.put(&format!("before-{i}"), format!("value-{i}")).await.unwrap();
        acknowledged.insert(format!("before-{i}"), format!("value-{i}"));
    }

    // The contact requires authentication: without credentials the joining replica is
    // refused, says what to give, and leaves nothing behind.
    let (status, stderr) = cluster.spawn_expecting_failure(4, &[], WAIT);
    assert!(!status.success());
    for expected in ["cannot join through", "Unauthenticated", "read role", "--join-token-file"] {
        assert!(stderr.contains(expected), "{expected:?} missing from:\n{stderr}");
    }
    assert!(!cluster.data_dir(4).exists(), "a refused join creates no data directory");
    // With a reader's token both join, each knowing one contact.
    let token = reader_token(&cluster);
    for id in [4, 5] {
        cluster.spawn(id, &[&token]);
        let status = client.status_of(cluster.client_address(id)).await.unwrap();
        let book: Vec<u64> = status.members.iter().map(|m| m.node).collect();
        assert_eq!(book, [1, 2, 3, id], "the contact's address book and its own entry");
        assert!(!status.member && !status.learner, "{status:?}");
    }

    // Step 1: learners. They follow the log; the quorum stays the three members.
    let new_replicas: Vec<String> = [4, 5].map(|id| cluster.client_address(id).to_owned()).to_vec();
    let report = Report::default();
    let growth = grow::add_as_learners(&mut client, &[1, 2, 3, 4, 5], &new_replicas, &mut report.line())
        .await
        .unwrap();
    assert_eq!(growth.new, [4, 5]);
    let slot = client.put("while-learning", "1").await.unwrap();
    acknowledged.insert("while-learning".into(), "1".into());
    for id in [4, 5] {
        wait_for_learner(&cluster, &mut client, id, slot).await;
    }
    let status = client.status_of(cluster.client_address(primary)).await.unwrap();
    assert_eq!((status.configuration_members, status.configuration_learners), (vec![1, 2, 3], vec![4, 5]));

    // Step 2: promotion, once they are caught up.
    let promoted = grow::promote(&mut client, &growth, WAIT, &mut report.line()).await.unwrap();
    assert_eq!(promoted.members, [1, 2, 3, 4, 5]);
    assert!(promoted.learners.is_empty());
    let lines = report.lines();
    let steps = [
        "node 4 at",
        "node 5 at",
        "step 1: adding [4, 5] as learners (members stay [1, 2, 3])",
        "members [1, 2, 3], learners [4, 5]",
        "step 2: promoting [4, 5] once caught up",
        "with members [1, 2, 3, 4, 5]",
    ];
    let mut at = 0;
    for step in steps {
        let found = lines[at..].iter().position(|line| line.contains(step));
        at += found.unwrap_or_else(|| panic!("{step:?} missing, or out of order, in {lines:#?}")) + 1;
    }
    for i in 0..50 {
        client.put(&format!("after-{i}"), format!("value-{i}")).await.unwrap();
        acknowledged.insert(format!("after-{i}"), format!("value-{i}"));
    }
    let last = client.put("grown", "1").await.unwrap();
    acknowledged.insert("grown".into(), "1".into());

    // A new member serves reads itself, and votes.
    let mut at_four = client_of(&cluster, 4);
    process::until("the new member applied the last write", WAIT, async || {
        at_four.get_fast("grown", Some(last)).await.ok().flatten()
    })
    .await;
    assert_eq!(at_four.get_fast("before-7", Some(last)).await.unwrap().as_deref(), Some(&b"value-7"[..]));
    let status = at_four.status_of(cluster.client_address(4)).await.unwrap();
    assert!(status.member && !status.learner, "{status:?}");

    // The old primary and another original member die: the one original left and the two
    // new members are the quorum of five, so every write from now on counts both.
    let other = [1, 2, 3].into_iter().find(|&id| id != primary).unwrap();
    cluster.kill(primary);
    cluster.kill(other);
    let after = client.put("after-primary-loss", "1").await.unwrap();
    assert!(after > last);
    acknowledged.insert("after-primary-loss".into(), "1".into());
    for (key, value) in &acknowledged {
        let read = client.get(key).await.unwrap_or_else(|e| panic!("get {key}: {e}"));
        assert_eq!(read.as_deref(), Some(value.as_bytes()), "{key} lost");
    }
    let statuses = cluster.wait_converged(&mut client, after, WAIT).await;
    assert_eq!(statuses.len(), 3, "{statuses:#?}");
    for id in [4, 5] {
        assert!(statuses[&id].member, "{:?}", statuses[&id]);
        assert_eq!(statuses[&id].keys, acknowledged.len() as u64);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_learner_is_refused_then_waited_for_and_promoted_and_readyz_follows_it() {
    // Small bounds: ten slots behind blocks a promotion, five make /readyz fail; a short
    // log makes the paused learner catch up from a checkpoint.
    let mut cluster = cluster(
        4,
        &[
            "--learner-promotion-lag-slots-max=10",
            "--ready-lag-slots-max=5",
            "--checkpoint-interval-slots=20",
            "--log-retain-slots=5",
        ],
    );
    cluster.join_via(4, 1);
    for id in 1..=3 {
        cluster.spawn(id, &[]);
    }
    let token = reader_token(&cluster);
    cluster.spawn(4, &[&token]);
    let mut client = cluster.client(WAIT);
    let primary = cluster.wait_for_primary(&mut client, WAIT).await;
    for i in 0..20 {
        client.put(&format!("key-{i}"), "small").await.unwrap();
    }
    let new_replicas = [cluster.client_address(4).to_owned()];
    let report = Report::default();
    let growth: Growth =
        grow::add_as_learners(&mut client, &[1, 2, 3, 4], &new_replicas, &mut report.line()).await.unwrap();
    let slot = client.put("learning", "1").await.unwrap();
    wait_for_learner(&cluster, &mut client, 4, slot).await;
    process::until("the caught-up learner is ready", WAIT, async || cluster.ready(4).then_some(())).await;

    // Paused, it falls behind while the ring takes writes (large ones: catching up later
    // means fetching several MiB, so /readyz has a while to say it is behind).
    cluster.pause(4);
    let value = vec![7u8; 256 << 10];
    let mut last = 0;
    for i in 0..60 {
        last = client.put(&format!("large-{i}"), value.clone()).await.unwrap();
    }

    // A promotion whose wait runs out is refused with the LearnerBehind error.
    let started = Instant::now();
    let refused = grow::promote(&mut client, &growth, Duration::from_secs(1), &mut report.line()).await;
    match refused {
        Err(ClientError::InvalidArgument(message)) => {
            for expected in ["learner n4", "after waiting", "learner_promotion_lag_slots_max = 10"] {
                assert!(message.contains(expected), "{expected:?} missing from {message:?}");
            }
        }
        other => panic!("a promotion of a learner far behind is refused: {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_secs(1), "the primary waited before refusing");
    let status = client.status_of(cluster.client_address(primary)).await.unwrap();
    assert_eq!((status.configuration_members, status.configuration_learners), (vec![1, 2, 3], vec![4]));

    // Asked with a long wait, the promotion waits (and is not refused) while the learner
    // is still paused.
    let mut promoter = cluster.client(WAIT);
    let waiting = Report::default();
    let promotion = {
        let waiting = waiting.clone();
        tokio::spawn(async move { grow::promote(&mut promoter, &growth, WAIT, &mut waiting.line()).await })
    };
    process::until("the promotion waits for the learner", WAIT, async || {
        waiting
            .lines()
            .iter()
            .any(|line| line.starts_with("waiting:") && line.contains("learner n4"))
            .then_some(())
    })
    .await;
    assert!(!promotion.is_finished(), "still waiting: {:#?}", waiting.lines());

    // Resumed, the learner catches up; its /readyz says why it is not ready until it has.
    // Polled often: the window is as long as fetching what it lacks. Until it hears how far
    // the ring got, it may still answer from what it knew when paused.
    cluster.resume(4);
    let deadline = Instant::now() + WAIT;
    let mut answers: Vec<(String, String)> = Vec::new();
    loop {
        if let Ok(response) = cluster.try_http_get(4, "/readyz", Duration::from_secs(5)) {
            let answer = split_response(&response);
            let done = answer.0 == HTTP_OK && answers.iter().any(|(_, body)| body.contains("behind"));
            if answers.last() != Some(&answer) {
                answers.push(answer);
            }
            if done {
                break;
            }
        }
        assert!(Instant::now() < deadline, "/readyz of the resumed learner: {answers:#?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    eprintln!("/readyz of the resumed learner: {answers:#?}");
    let behind = answers.iter().find(|(_, body)| body.contains("behind")).expect("seen behind");
    assert_eq!(behind.0, "HTTP/1.1 503 Service Unavailable", "{answers:#?}");
    assert!(behind.1.starts_with("ring 1: behind: applied slot"), "{answers:#?}");
    assert!(behind.1.contains("at most 5 allowed"), "{answers:#?}");

    let promoted = promotion.await.unwrap().expect("promoted once caught up");
    assert_eq!(promoted.members, [1, 2, 3, 4]);
    // Promoted within ten slots of the primary, it catches up the rest as a member.
    process::until("the promoted learner votes and applied every write", WAIT, async || {
        let status = client.status_of(cluster.client_address(4)).await.ok()?;
        (status.member && status.applied >= last).then_some(())
    })
    .await;
    process::until("the caught-up member is ready", WAIT, async || cluster.ready(4).then_some(())).await;
}
