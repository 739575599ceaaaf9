//! The emulated provider across processes: this test process and an `rsl-rdma-echo` child
//! run a ring through shared-memory regions, the child is killed and started again, and
//! the link comes back.
#![cfg(feature = "rdma")]

mod common;

use common::{accept, receive};
use rsl_core::{NodeId, RingId};
use rsl_transport::rdma::emulated::{EmulatedConfig, EmulatedDevice};
use rsl_transport::rdma::{RdmaConfig, RdmaTransport};
use rsl_transport::{Inbound, Transport};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use tokio::sync::mpsc;

/// A child echo process; killed when dropped.
struct Echo {
    child: Child,
    address: String,
}

impl Echo {
    fn start(listen: &str, peer: &str, directory: &std::path::Path) -> Echo {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rsl-rdma-echo"))
            .args(["--node", "2", "--listen", listen, "--peer", &format!("1={peer}")])
            .args(["--ring-bytes", "262144", "--shm-dir"])
            .arg(directory)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start rsl-rdma-echo");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let address = line.trim().strip_prefix("listening ").unwrap_or_else(|| panic!("{line:?}")).to_owned();
        Echo { child, address }
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn files_of(directory: &std::path::Path, pid: u32) -> usize {
    let prefix = format!("rsl-rdma-{pid}-");
    std::fs::read_dir(directory)
        .unwrap()
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().starts_with(&prefix))
        .count()
}

async fn round_trip(local: &RdmaTransport, inbound: &mut mpsc::Receiver<Inbound>, first: u64, count: u64) {
    let sent: Vec<_> =
        (first..first + count).map(|slot| accept(1, 1, 2, slot, (slot % 40) as usize * 50)).collect();
    for chunk in sent.chunks(16) {
        local.send(NodeId(2), chunk.to_vec()).unwrap();
    }
    let echoed = receive(inbound, count as usize).await;
    for (original, echo) in sent.iter().zip(&echoed) {
        let mut expected = original.clone();
        std::mem::swap(&mut expected.from, &mut expected.to);
        assert_eq!(echo.message, expected);
        assert_eq!(echo.from, NodeId(2));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_across_processes_survives_the_peer_being_killed() {
    let directory = std::env::temp_dir().join(format!("rsl-rdma-processes-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let device =
        EmulatedDevice::open(EmulatedConfig { directory: directory.clone(), ..EmulatedConfig::default() })
            .unwrap();
    let config = RdmaConfig {
        ring_bytes: 256 << 10,
        frame_bytes_max: 64 << 10,
        backoff_initial_ms: 5,
        backoff_max_ms: 50,
        ..RdmaConfig::default()
    };
    let (local, mut inbound) = RdmaTransport::builder(NodeId(1))
        .config(config)
        .device(Arc::new(device))
        .bind("127.0.0.1:0".parse().unwrap())
        .unwrap();
    local.membership().set_members(RingId(1), [NodeId(1), NodeId(2)]);
    let peer_address = local.local_addr().to_string();

    let echo = Echo::start("127.0.0.1:0", &peer_address, &directory);
    local.set_peer_address(NodeId(2), echo.address.as_str().into()).unwrap();
    // Enough traffic to wrap both 256 KiB rings several times.
    round_trip(&local, &mut inbound, 0, 2000).await;
    let pid = echo.child.id();
    assert!(files_of(&directory, pid) >= 1, "the child's ring lives in shared memory");
    let address = echo.address.clone();
    echo.kill();
    common::eventually("node 1 to notice the death", || local.rdma_stats().snapshot().connections_reset >= 2)
        .await;

    // Same address, new process: the link is re-established both ways.
    let echo = Echo::start(&address, &peer_address, &directory);
    round_trip(&local, &mut inbound, 10_000, 500).await;
    assert!(local.stats().snapshot().reconnects >= 1);
    // The killed process's files are removed by the next device opened in the directory.
    let _sweeper =
        EmulatedDevice::open(EmulatedConfig { directory: directory.clone(), ..EmulatedConfig::default() });
    assert_eq!(files_of(&directory, pid), 0, "files of a dead process are swept");
    drop(echo);
    local.shutdown();
    let _ = std::fs::remove_dir_all(&directory);
}
