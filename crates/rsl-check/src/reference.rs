//! Test support: a brute-force reference checker and small random histories.

use std::collections::HashMap;

use proptest::prelude::*;

use crate::{Input, Operation, Output};

/// Brute-force reference: tries every order of every subset of the
/// operations that contains all completed ones, on a whole map of
/// registers (no per-key decomposition).
pub(crate) fn brute_force_linearizable(history: &[Operation]) -> bool {
    fn search(history: &[Operation], used: &mut Vec<bool>, state: &mut HashMap<String, Option<i64>>) -> bool {
        let pending_required = |i: usize, used: &[bool]| !used[i] && history[i].output.is_some();
        if (0..history.len()).all(|i| !pending_required(i, used)) {
            return true;
        }
        for next in 0..history.len() {
            if used[next] {
                continue;
            }
            let call = history[next].call_ns;
            // Every completed operation that returned before `next` was
            // called must already be placed.
            let blocked = (0..history.len()).any(|a| {
                pending_required(a, used) && a != next && history[a].return_ns.is_some_and(|ret| ret < call)
            });
            if blocked {
                continue;
            }
            let op = &history[next];
            let before = state.get(&op.key).copied().flatten();
            // An independent statement of the register's semantics.
            let after = match (&op.input, &op.output) {
                (Input::Put { value }, None | Some(Output::Put)) => Some(Some(*value)),
                (Input::Get, None) => Some(before),
                (Input::Get, Some(Output::Get { value })) => {
                    if *value == before {
                        Some(before)
                    } else {
                        None
                    }
                }
                (Input::Delete, None | Some(Output::Delete)) => Some(None),
                (Input::Cas { expected, new }, output) => {
                    let swaps = *expected == before;
                    match output {
                        None => Some(if swaps { Some(*new) } else { before }),
                        Some(Output::Cas { ok }) if *ok == swaps => {
                            Some(if swaps { Some(*new) } else { before })
                        }
                        Some(_) => None,
                    }
                }
                (_, Some(_)) => None,
            };
            let Some(after) = after else {
                continue;
            };
            used[next] = true;
            state.insert(op.key.clone(), after);
            if search(history, used, state) {
                return true;
            }
            state.insert(op.key.clone(), before);
            used[next] = false;
        }
        false
    }
    search(history, &mut vec![false; history.len()], &mut HashMap::new())
}

pub(crate) fn arb_small_history() -> impl Strategy<Value = Vec<Operation>> {
    let value = prop_oneof![Just(None), (1i64..4).prop_map(Some)];
    let one = (0u8..2, 0u8..4, value.clone(), 1i64..4, value, any::<bool>(), 0u64..10, 0u64..6, 0u8..5)
        .prop_map(|(key, kind, v1, v2, read, ok, call, len, fate)| {
            drawn(if key == 0 { "a" } else { "b" }, kind, (v1, v2, read, ok), (call, len, fate))
        });
    prop::collection::vec(one, 0..8)
}

/// Random histories of up to `max_ops` operations on the single key "a", with
/// values 1 to 3, many compare-and-sets and a quarter of unknown outcomes: dense
/// enough in repeated values and failed comparisons to exercise every pruning rule.
pub(crate) fn arb_key_history(max_ops: usize) -> impl Strategy<Value = Vec<Operation>> {
    let value = prop_oneof![1 => Just(None), 3 => (1i64..4).prop_map(Some)];
    let one = (0u8..5, value.clone(), 1i64..4, value, any::<bool>(), 0u64..16, 0u64..8, 0u8..4).prop_map(
        |(kind, v1, v2, read, ok, call, len, fate)| drawn("a", kind, (v1, v2, read, ok), (call, len, fate)),
    );
    prop::collection::vec(one, 0..=max_ops)
}

/// The operation a random history draws on `key`: `kind` 0 a put of `written`, 1 a get
/// that read `read`, 2 a delete, any other a cas from `expected` to `written` (swapped
/// if `ok`); over `[call, call + len]`, or of unknown outcome if `fate` is 0.
fn drawn(
    key: &str,
    kind: u8,
    (expected, written, read, ok): (Option<i64>, i64, Option<i64>, bool),
    (call, len, fate): (u64, u64, u8),
) -> Operation {
    let (input, output) = match kind {
        0 => (Input::Put { value: written }, Output::Put),
        1 => (Input::Get, Output::Get { value: read }),
        2 => (Input::Delete, Output::Delete),
        _ => (Input::Cas { expected, new: written }, Output::Cas { ok }),
    };
    let completed = fate != 0;
    Operation {
        process: 0,
        key: key.to_owned(),
        input,
        output: completed.then_some(output),
        call_ns: call,
        return_ns: completed.then_some(call + len),
    }
}
