//! How stored things read to a person (one line of text) and to a program (a JSON value):
//! records and proposals of the log, configurations, slot ranges. Every command prints
//! through these, so a record looks the same in `inspect`, `dump` and `repair`.

use std::fmt::Write as _;

use rsl::core::{Ballot, Configuration, Proposal, Slot, Value};
use rsl::log::codec::Record;
use serde_json::{json, Value as Json};

/// The kind of a record, as `dump` names it.
pub fn record_kind(record: &Record) -> &'static str {
    match record {
        Record::Persist { .. } => "persist",
        Record::Truncate { .. } => "truncate",
        Record::Snapshot { .. } => "snapshot",
    }
}

/// The proposals a record holds (none for truncations and snapshots).
pub fn proposals(record: &Record) -> &[Proposal] {
    match record {
        Record::Persist { proposals, .. } => proposals,
        _ => &[],
    }
}

/// One line describing `record`, listing only the proposals `keep` admits.
pub fn record_text(record: &Record, keep: &dyn Fn(&Proposal) -> bool, payloads: bool) -> String {
    let mut line = String::from(record_kind(record));
    match record {
        Record::Persist { promise, chosen, proposals } => {
            if let Some(promise) = promise {
                let _ = write!(line, " promise {promise}");
            }
            if let Some(chosen) = chosen {
                let _ = write!(line, " chosen {chosen}");
            }
            for proposal in proposals.iter().filter(|p| keep(p)) {
                let _ = write!(line, " | {}", proposal_text(proposal, payloads));
            }
        }
        Record::Truncate { below } => {
            let _ = write!(line, " below {below}");
        }
        Record::Snapshot { promise, chosen, floor } => {
            let _ = write!(line, " promise {promise} chosen {chosen} floor {floor}");
        }
    }
    line
}

/// `slot 12 ballot 3.1 batch 2 requests 140 bytes` and the like.
pub fn proposal_text(proposal: &Proposal, payloads: bool) -> String {
    let head = format!("slot {} ballot {}", proposal.slot, proposal.ballot);
    let (mut text, requests) = match &proposal.value {
        Value::Noop => return format!("{head} noop"),
        Value::Configuration(configuration) => {
            return format!("{head} {}", configuration_text(configuration))
        }
        Value::Batch(requests) => {
            let bytes: usize = requests.iter().map(|r| r.payload.len()).sum();
            (format!("{head} batch {} requests {bytes} bytes", requests.len()), &requests[..])
        }
        Value::Last(request) => (
            format!("{head} last request {} bytes (closes the ring)", request.payload.len()),
            std::slice::from_ref(request),
        ),
    };
    if payloads {
        for request in requests {
            let _ =
                write!(text, " [{}:{} {}]", request.id.client, request.id.sequence, escape(&request.payload));
        }
    }
    text
}

/// `configuration 2 members [1, 2, 4] from slot 13`.
pub fn configuration_text(configuration: &Configuration) -> String {
    let members: Vec<u64> = configuration.members.iter().map(|n| n.0).collect();
    format!(
        "configuration {} members {members:?} from slot {}",
        configuration.number, configuration.first_slot
    )
}

/// The JSON form of `record`, with only the proposals `keep` admits.
pub fn record_json(record: &Record, keep: &dyn Fn(&Proposal) -> bool, payloads: bool) -> Json {
    match record {
        Record::Persist { promise, chosen, proposals } => json!({
            "kind": "persist",
            "promise": promise.map(ballot_json),
            "chosen": chosen.map(|s| s.0),
            "proposals": proposals.iter().filter(|p| keep(p)).map(|p| proposal_json(p, payloads)).collect::<Vec<_>>(),
        }),
        Record::Truncate { below } => json!({ "kind": "truncate", "below": below.0 }),
        Record::Snapshot { promise, chosen, floor } => json!({
            "kind": "snapshot",
            "promise": ballot_json(*promise),
            "chosen": chosen.0,
            "floor": floor.0,
        }),
    }
}

/// The JSON form of a proposal.
pub fn proposal_json(proposal: &Proposal, payloads: bool) -> Json {
    let request_json = |r: &rsl::core::Request| {
        let mut request = json!({
            "client": r.id.client,
            "sequence": r.id.sequence,
            "bytes": r.payload.len(),
        });
        if payloads {
            request["payload_hex"] = Json::String(hex(&r.payload));
        }
        request
    };
    let value = match &proposal.value {
        Value::Noop => json!({ "noop": {} }),
        Value::Batch(requests) => json!({ "batch": requests.iter().map(request_json).collect::<Vec<_>>() }),
        Value::Configuration(configuration) => json!({ "configuration": configuration_json(configuration) }),
        Value::Last(request) => json!({ "last": request_json(request) }),
    };
    json!({ "slot": proposal.slot.0, "ballot": ballot_json(proposal.ballot), "value": value })
}

/// The JSON form of a configuration.
pub fn configuration_json(configuration: &Configuration) -> Json {
    json!({
        "number": configuration.number,
        "members": configuration.members.iter().map(|n| n.0).collect::<Vec<_>>(),
        "first_slot": configuration.first_slot.0,
    })
}

/// The JSON form of a ballot.
pub fn ballot_json(ballot: Ballot) -> Json {
    json!({ "round": ballot.round, "node": ballot.node.0 })
}

/// `first..=last`, or `none`.
pub fn range_text(range: Option<(Slot, Slot)>) -> String {
    match range {
        Some((first, last)) => format!("{first}..={last}"),
        None => "none".to_owned(),
    }
}

/// Widens `range` to include `slot`.
pub fn widen(range: &mut Option<(Slot, Slot)>, slot: Slot) {
    *range = Some(match *range {
        Some((first, last)) => (first.min(slot), last.max(slot)),
        None => (slot, slot),
    });
}

/// Bytes as text: printable ASCII as is, the rest as `\xNN`.
pub fn escape(bytes: &[u8]) -> String {
    bytes.iter().flat_map(|&b| std::ascii::escape_default(b)).map(char::from).collect()
}

/// Bytes in lowercase hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsl::core::{NodeId, Request, RequestId};

    #[test]
    fn records_read_alike_in_text_and_json() {
        let proposal = Proposal {
            ballot: Ballot::new(3, NodeId(1)),
            slot: Slot(12),
            value: Value::Batch(
                vec![Request {
                    id: RequestId { client: 7, sequence: 2 },
                    payload: bytes::Bytes::from_static(b"k\x00"),
                }]
                .into(),
            ),
        };
        let record = Record::Persist { promise: None, chosen: Some(Slot(11)), proposals: vec![proposal] };
        let all = |_: &Proposal| true;
        assert_eq!(
            record_text(&record, &all, true),
            "persist chosen 11 | slot 12 ballot 3.1 batch 1 requests 2 bytes [7:2 k\\x00]"
        );
        let value = record_json(&record, &all, true);
        assert_eq!(value["proposals"][0]["value"]["batch"][0]["payload_hex"], "6b00");
        assert_eq!(value["chosen"], 11);
        let none = |_: &Proposal| false;
        assert_eq!(record_json(&record, &none, false)["proposals"].as_array().unwrap().len(), 0);
        let mut range = None;
        widen(&mut range, Slot(5));
        widen(&mut range, Slot(2));
        assert_eq!(range_text(range), "2..=5");
    }
}
