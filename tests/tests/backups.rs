//! Backups of a ring of real `rsl-kv-server` processes (etcd's `snapshot save` /
//! `snapshot restore`): a snapshot taken from the running ring by an admin, verified,
//! restored into the data directories of a new ring, which then holds exactly the
//! backed-up state; a non-admin's request, a damaged backup and a directory that already
//! holds a ring are refused.

use std::collections::BTreeMap;
use std::time::Duration;

use rsl_core::{NodeId, RingId};
use rsl_kv::auth::Role;
use rsl_kv::snapshot::{self, SnapshotError};
use rsl_kv::{Client, ClientError, ClientOptions};
use rsl_tests::process::{ClusterOptions, ProcessCluster};
use rsl_tests::server;

/// Longest wait for the ring to elect, converge or serve a request.
const WAIT: Duration = Duration::from_secs(30);

/// What a linearizable read of each key in `keys` gives.
async fn read_all(client: &mut Client, keys: &[String]) -> BTreeMap<String, Option<Vec<u8>>> {
    let mut state = BTreeMap::new();
    for key in keys {
        let value = client.get(key).await.unwrap_or_else(|error| panic!("get {key}: {error}"));
        state.insert(key.clone(), value.map(|v| v.to_vec()));
    }
    state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restored_into_a_new_ring_holds_exactly_the_backed_up_state() {
    let old = ProcessCluster::start(server::binary(), ClusterOptions::default());
    let mut client = old.client(WAIT);
    old.wait_for_primary(&mut client, WAIT).await;
    let mut keys: Vec<String> = (0..60).map(|i| format!("key-{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        client.put(key, format!("value-{i}")).await.unwrap();
    }
    assert!(client.delete("key-3").await.unwrap());
    assert!(client.cas("counter", None, "1").await.unwrap().swapped);
    keys.push("counter".into());
    keys.push("after-backup".into());
    let backed_up = read_all(&mut client, &keys).await;

    // Only an admin may take one.
    let options =
        ClientOptions { deadline: WAIT, security: old.security_as(Role::ReadWrite), ..Default::default() };
    let mut writer = Client::new(old.client_addresses(), options).unwrap();
    match writer.snapshot().await {
        Err(ClientError::Server { code: tonic::Code::PermissionDenied, .. }) => {}
        other => panic!("a read-write user's backup: {other:?}"),
    }

    let (bytes, info) = client.snapshot().await.expect("an admin's backup");
    assert_eq!((info.ring, info.members.clone()), (1, vec![1, 2, 3]));
    let backups = tempfile::tempdir().unwrap();
    let backup = backups.path().join("backup.snap");
    snapshot::write_file(&backup, &bytes).unwrap();
    let verified = snapshot::read(&backup).unwrap();
    let digest = verified.machine.digest();
    assert_eq!(digest.keys, 60, "59 keys and the counter");
    let statuses = old.statuses(&mut client).await;
    let primary_status = statuses.values().find(|s| s.role == "primary").expect("a primary answers");
    assert_eq!(
        (primary_status.digest, primary_status.keys),
        (digest.crc, digest.keys),
        "the ring's own digest"
    );
    // A write after the backup is not in it.
    let after = client.put("after-backup", "x").await.unwrap();
    assert!(after > info.slot);
    drop(old);

    // A new ring: every member restored from the backup, then started.
    let mut new = ProcessCluster::create(server::binary(), ClusterOptions::default());
    let members: Vec<NodeId> = new.ids().into_iter().map(NodeId).collect();
    for id in new.ids() {
        let restored = snapshot::restore(&backup, new.data_dir(id), RingId(1), NodeId(id), &members).unwrap();
        assert_eq!(restored.configuration.first_slot.0, info.slot + 1);
    }
    // A directory that holds a ring is refused.
    let again = snapshot::restore(&backup, new.data_dir(1), RingId(1), NodeId(1), &members).unwrap_err();
    assert!(matches!(again, SnapshotError::DataDir(_)), "{again}");
    for id in new.ids() {
        new.spawn(id, &[]);
    }
    let mut client = new.client(WAIT);
    new.wait_for_primary(&mut client, WAIT).await;
    let restored = read_all(&mut client, &keys).await;
    assert_eq!(restored, backed_up, "exactly the backed-up state");
    let statuses = new.wait_converged(&mut client, info.slot, WAIT).await;
    assert!(statuses.values().all(|s| s.digest == digest.crc && s.keys == digest.keys), "{statuses:?}");
    // The new ring goes on from the snapshot's slot.
    let slot = client.put("after-restore", "y").await.unwrap();
    assert!(slot > info.slot, "slot {slot} after the snapshot's {}", info.slot);

    // A damaged backup is refused before anything is written.
    let mut damaged = bytes.clone();
    damaged[100] ^= 0x10;
    let damaged_file = backups.path().join("damaged.snap");
    std::fs::write(&damaged_file, &damaged).unwrap();
    let fresh = new.dir().join("fresh");
    let error = snapshot::restore(&damaged_file, &fresh, RingId(1), NodeId(1), &members).unwrap_err();
    assert!(matches!(error, SnapshotError::Corrupt { .. }), "{error}");
    assert!(error.to_string().contains("damaged.snap at byte"), "{error}");
    assert!(!fresh.exists(), "nothing written for a damaged backup");
}
