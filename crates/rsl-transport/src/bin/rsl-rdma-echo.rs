//! `rsl-rdma-echo`: an RDMA transport endpoint that sends every message it receives back to
//! its sender (with sender and receiver swapped). The cross-process tests run it as the
//! far end of a ring over the emulated provider; on a machine with an RDMA device (or
//! soft-RoCE) it checks the verbs provider end to end:
//!
//! ```text
//! rsl-rdma-echo --node 2 --listen 0.0.0.0:7100 --peer 1=10.0.0.1:7100 --provider verbs --device rxe0
//! ```
//!
//! It prints `listening <address>` once ready, admits ring 1 for itself and its peer, and
//! exits when its standard input closes.

use rsl_core::{NodeId, RingId};
use rsl_transport::rdma::emulated::EmulatedConfig;
use rsl_transport::rdma::{open_device, Provider, RdmaConfig, RdmaTransport};
use rsl_transport::Transport;
use std::io::{Read, Write};

struct Args {
    node: u64,
    listen: std::net::SocketAddr,
    peer: (u64, String),
    provider: Provider,
    ring_bytes: Option<u64>,
}

fn usage(problem: &str) -> ! {
    eprintln!("rsl-rdma-echo: {problem}");
    eprintln!(
        "usage: rsl-rdma-echo --node N --listen HOST:PORT --peer ID=HOST:PORT \
         [--provider emulated|verbs] [--device NAME] [--port N] [--gid-index N] [--shm-dir DIR] [--ring-bytes N]"
    );
    std::process::exit(2)
}

fn parse() -> Args {
    let mut values = std::collections::HashMap::new();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let Some(name) = flag.strip_prefix("--") else { usage(&format!("unexpected argument {flag:?}")) };
        let Some(value) = args.next() else { usage(&format!("--{name} needs a value")) };
        values.insert(name.to_owned(), value);
    }
    let get = |name: &str| values.get(name).cloned();
    let number = |name: &str| -> Option<u64> {
        get(name)
            .map(|value| value.parse().unwrap_or_else(|_| usage(&format!("--{name}: not a number: {value}"))))
    };
    let node = number("node").unwrap_or_else(|| usage("--node is required"));
    let listen = get("listen")
        .unwrap_or_else(|| usage("--listen is required"))
        .parse()
        .unwrap_or_else(|error| usage(&format!("--listen: {error}")));
    let peer = get("peer").unwrap_or_else(|| usage("--peer is required"));
    let Some((id, address)) = peer.split_once('=') else { usage("--peer must be ID=HOST:PORT") };
    let id = id.parse().unwrap_or_else(|_| usage("--peer: the id is not a number"));
    let provider = match get("provider").as_deref() {
        None | Some("emulated") => {
            let mut config = EmulatedConfig::default();
            if let Some(directory) = get("shm-dir") {
                config.directory = directory.into();
            }
            Provider::Emulated(config)
        }
        Some("verbs") => Provider::Verbs {
            device: get("device"),
            port: number("port").unwrap_or(1) as u8,
            gid_index: number("gid-index").unwrap_or(0) as u8,
        },
        Some(other) => usage(&format!("--provider: expected emulated or verbs, found {other}")),
    };
    Args { node, listen, peer: (id, address.to_owned()), provider, ring_bytes: number("ring-bytes") }
}

fn main() {
    let args = parse();
    let device = open_device(&args.provider).unwrap_or_else(|error| {
        eprintln!("rsl-rdma-echo: {error}");
        std::process::exit(1)
    });
    let mut config = RdmaConfig::default();
    if let Some(ring_bytes) = args.ring_bytes {
        config.ring_bytes = ring_bytes;
        config.frame_bytes_max = config.frame_bytes_max.min(ring_bytes / 2);
    }
    let (transport, mut inbound) = RdmaTransport::builder(NodeId(args.node))
        .config(config)
        .device(device)
        .bind(args.listen)
        .unwrap_or_else(|error| {
            eprintln!("rsl-rdma-echo: {error}");
            std::process::exit(1)
        });
    let (node, peer) = (NodeId(args.node), NodeId(args.peer.0));
    transport.membership().set_members(RingId(1), [node, peer]);
    if let Err(error) = transport.set_peer_address(peer, args.peer.1.into()) {
        usage(&error.to_string());
    }
    println!("listening {}", transport.local_addr());
    let _ = std::io::stdout().flush();
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        std::process::exit(0);
    });
    while let Some(received) = inbound.blocking_recv() {
        let mut message = received.message;
        std::mem::swap(&mut message.from, &mut message.to);
        if let Err(error) = transport.send(received.from, vec![message]) {
            eprintln!("rsl-rdma-echo: send: {error}");
        }
    }
}
