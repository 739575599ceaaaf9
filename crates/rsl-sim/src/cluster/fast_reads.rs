//! Fast reads (RSL's `FastRead`) as a replica serves them: any replica, whatever its role,
//! answers from its local state once it applied the slot the core names for the read's
//! minimum slot (`Replica::fast_read_index`). A replica outside the configuration (the
//! runtime stops such a ring) turns the client away. Every answer is recorded with what
//! the staleness checker needs (`crate::checkers::check_fast_reads`).

use rsl_core::Slot;

use super::clients::ClientReply;
use super::Simulation;
use crate::checkers::FastReadAnswer;
use crate::kv::KvResult;

/// A fast read parked until its replica applies `index`.
#[derive(Clone, Copy, Debug)]
pub(super) struct WaitingFastRead {
    index: Slot,
    min_slot: Slot,
    key: u8,
    client: usize,
    attempt: u64,
}

impl Simulation {
    /// A client's fast read of `key` needing `min_slot` arrives at replica `index`.
    pub(super) fn on_fast_read(
        &mut self,
        index: usize,
        key: u8,
        min_slot: Slot,
        client: usize,
        attempt: u64,
    ) {
        let Some(replica) = self.nodes[index].replica.as_ref() else { return };
        let status = replica.status();
        if !status.member {
            self.reply(client, attempt, ClientReply::Redirect(status.primary));
            return;
        }
        let read_index = replica.fast_read_index(min_slot);
        let read = WaitingFastRead { index: read_index, min_slot, key, client, attempt };
        self.nodes[index].waiting_fast_reads.push(read);
        self.serve_fast_reads(index);
    }

    /// Serves every fast read parked at replica `index` whose slot it applied.
    pub(super) fn serve_fast_reads(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        let Some(replica) = node.replica.as_ref() else { return };
        let applied = replica.applied();
        let (ready, waiting): (Vec<WaitingFastRead>, Vec<WaitingFastRead>) =
            node.waiting_fast_reads.drain(..).partition(|read| read.index <= applied);
        node.waiting_fast_reads = waiting;
        for read in ready {
            let value = self.nodes[index].kv.get(read.key);
            self.stats.fast_reads += 1;
            self.fast_reads.push(FastReadAnswer {
                client: read.client,
                key: read.key,
                min_slot: read.min_slot,
                value,
                answered_at: self.now,
                applied_anywhere: Slot(self.stats.slots),
            });
            self.reply(
                read.client,
                read.attempt,
                ClientReply::Ok { result: KvResult::Value(value), slot: applied },
            );
        }
    }
}
