//! Entry points for the fuzz targets in `fuzz/`: what a server does with one frame of a
//! client's `Stream` call, short of the ring, so a target runs the server's own checks on
//! arbitrary bytes without a network. Hidden from the documentation and not a stable API.
//!
//! The other decoders a client or a peer reaches need nothing here: commands and their
//! batches decode through [`crate::command`] and run on [`crate::KvStateMachine`]
//! (`execute_write`, `execute_read`), and checkpoints load with
//! [`crate::KvStateMachine::load`].

use bytes::Bytes;
use prost::Message as _;
use tonic::Status;

use crate::command::WriteId;
use crate::proto as pb;
use crate::server::stream;

/// What a server makes of one `Stream` frame before the ring sees it. Every operation of
/// the frame is in exactly one of `refused`, `write_batches`, `read_batch` or `fast_reads`;
/// the write batch the frame carries whole, if any, is in `encoded_write_batch`.
#[derive(Debug)]
pub struct StreamPlan {
    /// Results of the operations refused on the spot, in order.
    pub refused: Vec<pb::OpResult>,
    /// The encoded write batches the ring would replicate, each with the operation id and
    /// write id of each of its writes, in order.
    pub write_batches: Vec<(Bytes, Vec<(u64, WriteId)>)>,
    /// The encoded read batch of the linearizable gets (replicated as one ring read when
    /// not empty) and their operation ids, in order.
    pub read_batch: (Bytes, Vec<u64>),
    /// The fast gets with their operation ids, served one by one.
    pub fast_reads: Vec<(u64, pb::GetRequest)>,
    /// The write batch the client encoded whole (`OpBatch.write_batch`), if any: its id,
    /// and the request the ring would replicate (the frame's own bytes) with its writes'
    /// count, or the status refusing the whole batch.
    pub encoded_write_batch: Option<(u64, Result<EncodedWriteBatch, Status>)>,
}

/// A write batch sent whole and accepted: the request the ring replicates and the number
/// of writes in it.
pub type EncodedWriteBatch = (Bytes, usize);

/// Decodes `frame` as the server's gRPC codec does (a protobuf `OpBatch`; a frame that
/// does not decode ends the stream with `INTERNAL`, as tonic's codec answers) and runs the
/// server's checks on it: `Err` is the status the stream ends with, `Ok` the plan.
/// The transport's bound on a message's size (tonic's) is not applied here.
pub fn plan_stream_frame(frame: &[u8]) -> Result<StreamPlan, Status> {
    // Into one buffer first, as tonic receives a frame, so that `bytes` fields decode as
    // slices of it, as they do in a server.
    let batch = pb::OpBatch::decode(Bytes::copy_from_slice(frame))
        .map_err(|error| Status::internal(error.to_string()))?;
    stream::check_batch_len(&batch)?;
    let plan = stream::plan(batch);
    let write_batches = plan
        .packed
        .batches
        .into_iter()
        .map(|(batch, writes)| {
            (batch.finish(), writes.into_iter().map(|(id, write_id, _)| (id, write_id)).collect())
        })
        .collect();
    Ok(StreamPlan {
        refused: plan.refused,
        write_batches,
        read_batch: (plan.reads.finish(), plan.read_ids),
        fast_reads: plan.fast_reads,
        encoded_write_batch: plan
            .write_batch
            .map(|(id, checked)| (id, checked.map(|checked| (checked.bytes().clone(), checked.len())))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Read, ReadBatch, Write, WriteBatch};

    fn op(id: u64, op: pb::op::Op) -> pb::Op {
        pb::Op { id, op: Some(op) }
    }

    #[test]
    fn a_frame_is_planned_as_the_server_serves_it() {
        let wid = |sequence| Some(pb::WriteId { client: 9, sequence });
        let frame = pb::OpBatch {
            write_batch_id: 0,
            write_batch: Bytes::new(),
            ops: vec![
                op(1, pb::op::Op::Put(pb::PutRequest { id: wid(1), key: "a".into(), value: "x".into() })),
                op(
                    2,
                    pb::op::Op::Get(pb::GetRequest {
                        key: "a".into(),
                        fast: false,
                        min_slot: 0,
                        ..Default::default()
                    }),
                ),
                op(
                    3,
                    pb::op::Op::Get(pb::GetRequest {
                        key: "a".into(),
                        fast: true,
                        min_slot: 4,
                        ..Default::default()
                    }),
                ),
                op(4, pb::op::Op::Delete(pb::DeleteRequest { id: None, key: "a".into() })),
                op(5, pb::op::Op::Put(pb::PutRequest { id: wid(2), key: String::new(), value: "x".into() })),
                pb::Op { id: 6, op: None },
                op(7, pb::op::Op::Delete(pb::DeleteRequest { id: wid(3), key: "b".into() })),
            ],
        }
        .encode_to_vec();
        let plan = plan_stream_frame(&frame).expect("a well-formed frame");
        let refused: Vec<u64> = plan.refused.iter().map(|result| result.id).collect();
        assert_eq!(refused, vec![4, 5, 6]);
        assert_eq!(plan.fast_reads.iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![3]);
        assert_eq!(plan.write_batches.len(), 1);
        let (bytes, ids) = &plan.write_batches[0];
        assert_eq!(
            ids,
            &vec![(1, WriteId { client: 9, sequence: 1 }), (7, WriteId { client: 9, sequence: 3 })]
        );
        let writes: Vec<Write> =
            WriteBatch::split(bytes).unwrap().into_iter().map(|w| Write::decode(w).unwrap()).collect();
        assert_eq!(writes[1], Write::Delete { id: WriteId { client: 9, sequence: 3 }, key: "b".into() });
        let (reads, read_ids) = &plan.read_batch;
        assert_eq!(read_ids, &vec![2]);
        let reads: Vec<Read> =
            ReadBatch::split(reads).unwrap().into_iter().map(|r| Read::decode(r).unwrap()).collect();
        assert_eq!(reads, vec![Read::Get { key: "a".into() }]);
    }

    #[test]
    fn frames_that_do_not_decode_or_carry_too_much_are_refused_whole() {
        let status = plan_stream_frame(&[0x0a, 0x05, 0x08]).expect_err("a truncated frame");
        assert_eq!(status.code(), tonic::Code::Internal);
        let ops = (0..=65_536u64).map(|id| pb::Op { id, op: None }).collect();
        let status = plan_stream_frame(&pb::OpBatch { ops, ..Default::default() }.encode_to_vec())
            .expect_err("too many operations");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("at most 65536"), "{}", status.message());
    }
}
