//! The real verbs provider over libibverbs (`rdma-sys`), feature `rdma-verbs`: device
//! discovery, the protection domain, memory registration, completion queues, RC queue
//! pairs taken through INIT, RTR and RTS, RDMA WRITE chains (with or without immediate)
//! posted with one `ibv_post_send`, zero-length receives posted with `ibv_post_recv`,
//! `ibv_poll_cq`, and completion channels (`ibv_comp_channel`, armed with
//! `ibv_req_notify_cq`) that a poller sleeps on with `ppoll` beside an eventfd for local
//! wake-ups.
//!
//! Every call here is FFI; each unsafe block says what it relies on. Handles are owned by
//! one Rust value each and released in `Drop`, children before parents (a region or a
//! queue pair keeps the device context alive through an `Arc`).

use crate::rdma::sys::RegionMemory;
use crate::rdma::verbs::{
    check_requests, Access, Completion, CompletionChannel, CompletionKind, CompletionQueue, CompletionStatus,
    Device, MemoryRegion, QpEndpoint, QpState, QueuePair, Registration, Source, VerbsError, WorkRequest,
    INLINE_BYTES_MAX,
};
use rdma_sys::*;
use std::ffi::CStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn errno(call: &'static str) -> VerbsError {
    VerbsError::Call { call, problem: std::io::Error::last_os_error().to_string() }
}

fn status(call: &'static str, code: i32) -> Result<(), VerbsError> {
    if code == 0 {
        Ok(())
    } else {
        Err(VerbsError::Call { call, problem: std::io::Error::from_raw_os_error(code).to_string() })
    }
}

/// An opened device context and its protection domain.
#[derive(Debug)]
struct Context {
    context: *mut ibv_context,
    pd: *mut ibv_pd,
}

// SAFETY: verbs contexts and protection domains may be used from any thread (libibverbs
// serialises what needs it); this value only frees them, once, in `Drop`.
unsafe impl Send for Context {}
// SAFETY: as for `Send`.
unsafe impl Sync for Context {}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: both handles came from libibverbs and are freed once, the domain first;
        // every child (region, queue, pair) holds an `Arc<Context>`, so none is left.
        unsafe {
            ibv_dealloc_pd(self.pd);
            ibv_close_device(self.context);
        }
    }
}

/// A verbs device: an RDMA NIC (or soft-RoCE) port.
#[derive(Debug)]
pub(crate) struct VerbsDevice {
    context: Arc<Context>,
    name: String,
    port: u8,
    gid_index: u8,
    lid: u16,
    gid: [u8; 16],
    mtu: ibv_mtu::Type,
}

impl VerbsDevice {
    /// Opens the device `name` (or the first one) at `port`, addressing with `gid_index`.
    pub(crate) fn open(name: Option<&str>, port: u8, gid_index: u8) -> Result<VerbsDevice, VerbsError> {
        let mut count = 0;
        // SAFETY: `count` is a valid out-pointer; the list is freed below on every path.
        let list = unsafe { ibv_get_device_list(&mut count) };
        if list.is_null() {
            // No list at all: the kernel has no verbs support (ENOSYS) or no device; either
            // way there is no device to open.
            tracing::debug!(error = %std::io::Error::last_os_error(), "ibv_get_device_list returned no list");
            return Err(VerbsError::NoDevice);
        }
        // SAFETY: the list holds `count` valid device pointers until it is freed.
        let devices: Vec<(*mut ibv_device, String)> = (0..count.max(0) as usize)
            .map(|i| unsafe {
                let device = *list.add(i);
                (device, CStr::from_ptr(ibv_get_device_name(device)).to_string_lossy().into_owned())
            })
            .collect();
        let chosen = match name {
            _ if devices.is_empty() => Err(VerbsError::NoDevice),
            None => Ok(devices[0].clone()),
            Some(name) => devices.iter().find(|(_, found)| found == name).cloned().ok_or_else(|| {
                VerbsError::DeviceNotFound {
                    name: name.to_owned(),
                    available: devices.iter().map(|(_, n)| n.as_str()).collect::<Vec<_>>().join(", "),
                }
            }),
        };
        let opened = chosen.and_then(|(device, name)| {
            // SAFETY: `device` is from the list, which is still alive.
            let context = unsafe { ibv_open_device(device) };
            if context.is_null() {
                Err(errno("ibv_open_device"))
            } else {
                Ok((context, name))
            }
        });
        // SAFETY: freed once; opened contexts stay valid after the list is freed.
        unsafe { ibv_free_device_list(list) };
        let (context, name) = opened?;
        // SAFETY: `context` is a valid open context.
        let pd = unsafe { ibv_alloc_pd(context) };
        if pd.is_null() {
            let error = errno("ibv_alloc_pd");
            // SAFETY: closing the context we opened, once.
            unsafe { ibv_close_device(context) };
            return Err(error);
        }
        let context = Arc::new(Context { context, pd });
        // SAFETY: a zeroed attribute struct is a valid out-parameter.
        let mut port_attr: ibv_port_attr = unsafe { std::mem::zeroed() };
        // SAFETY: valid context and out-pointer.
        status("ibv_query_port", unsafe { ___ibv_query_port(context.context, port, &mut port_attr) })?;
        // SAFETY: a zeroed gid is a valid out-parameter.
        let mut gid: ibv_gid = unsafe { std::mem::zeroed() };
        // SAFETY: valid context and out-pointer.
        status("ibv_query_gid", unsafe {
            ibv_query_gid(context.context, port, i32::from(gid_index), &mut gid)
        })?;
        // SAFETY: every bit pattern of the union is a valid byte array.
        let gid = unsafe { gid.raw };
        Ok(VerbsDevice { context, name, port, gid_index, lid: port_attr.lid, gid, mtu: port_attr.active_mtu })
    }
}

/// A registration: deregistered on drop, before the memory is unmapped.
#[derive(Debug)]
struct MrRegistration {
    mr: *mut ibv_mr,
    _context: Arc<Context>,
}

// SAFETY: a memory region handle may be deregistered from any thread; only `Drop` uses it.
unsafe impl Send for MrRegistration {}
// SAFETY: as for `Send`.
unsafe impl Sync for MrRegistration {}
impl Registration for MrRegistration {}

impl Drop for MrRegistration {
    fn drop(&mut self) {
        // SAFETY: registered by `register`, deregistered once.
        unsafe { ibv_dereg_mr(self.mr) };
    }
}

impl Device for VerbsDevice {
    fn name(&self) -> String {
        format!("{}:{} (gid index {})", self.name, self.port, self.gid_index)
    }

    fn register(&self, len: u64, access: Access) -> Result<MemoryRegion, VerbsError> {
        let len = usize::try_from(len)
            .map_err(|_| VerbsError::Call { call: "ibv_reg_mr", problem: "too large".into() })?;
        let memory = Arc::new(
            RegionMemory::anonymous(len)
                .map_err(|e| VerbsError::Call { call: "mmap", problem: e.to_string() })?,
        );
        let mut flags = ibv_access_flags::IBV_ACCESS_LOCAL_WRITE;
        if access == Access::RemoteWrite {
            flags |= ibv_access_flags::IBV_ACCESS_REMOTE_WRITE;
        }
        // SAFETY: the memory is mapped for `len` bytes and outlives the registration (the
        // region drops its registration first).
        let mr = unsafe { ibv_reg_mr(self.context.pd, memory.pointer.as_ptr().cast(), len, flags.0 as i32) };
        if mr.is_null() {
            return Err(errno("ibv_reg_mr"));
        }
        // SAFETY: `mr` is a valid registration.
        let keys = unsafe { ((*mr).lkey, (*mr).rkey) };
        let registration = MrRegistration { mr, _context: Arc::clone(&self.context) };
        Ok(MemoryRegion::new(Box::new(registration), memory, 0, len, keys, access))
    }

    fn create_channel(&self) -> Result<Arc<dyn CompletionChannel>, VerbsError> {
        Ok(Arc::new(VerbsChannel::create(&self.context)?))
    }

    fn create_cq(
        &self,
        depth: u32,
        channel: Option<&Arc<dyn CompletionChannel>>,
    ) -> Result<Arc<dyn CompletionQueue>, VerbsError> {
        let channel = match channel {
            None => None,
            Some(channel) => match channel.as_any().downcast_ref::<VerbsChannel>() {
                Some(verbs) => Some((verbs.channel, Arc::clone(channel))),
                None => {
                    return Err(VerbsError::Call {
                        call: "ibv_create_cq",
                        problem: "not a verbs completion channel".into(),
                    })
                }
            },
        };
        let raw_channel = channel.as_ref().map_or(std::ptr::null_mut(), |(raw, _)| *raw);
        // SAFETY: valid context; the channel (if any) is alive and is kept alive by the
        // queue (`_channel`); no context pointer.
        let cq = unsafe {
            ibv_create_cq(self.context.context, depth as i32, std::ptr::null_mut(), raw_channel, 0)
        };
        if cq.is_null() {
            return Err(errno("ibv_create_cq"));
        }
        Ok(Arc::new(VerbsCq {
            cq,
            has_channel: channel.is_some(),
            _channel: channel.map(|(_, channel)| channel),
            _context: Arc::clone(&self.context),
        }))
    }

    fn create_qp(
        &self,
        cq: &Arc<dyn CompletionQueue>,
        send_queue_depth: u32,
        receive_queue_depth: u32,
    ) -> Result<Box<dyn QueuePair>, VerbsError> {
        let Some(verbs_cq) = cq.as_any().downcast_ref::<VerbsCq>() else {
            return Err(VerbsError::Call {
                call: "ibv_create_qp",
                problem: "not a verbs completion queue".into(),
            });
        };
        // SAFETY: a zeroed init-attribute struct is valid; the fields that matter are set.
        let mut init: ibv_qp_init_attr = unsafe { std::mem::zeroed() };
        init.send_cq = verbs_cq.cq;
        init.recv_cq = verbs_cq.cq;
        init.cap = ibv_qp_cap {
            max_send_wr: send_queue_depth,
            max_recv_wr: receive_queue_depth.max(1),
            max_send_sge: 1,
            max_recv_sge: 1,
            max_inline_data: INLINE_BYTES_MAX as u32,
        };
        init.qp_type = ibv_qp_type::IBV_QPT_RC;
        init.sq_sig_all = 0;
        // SAFETY: valid protection domain and attributes.
        let qp = unsafe { ibv_create_qp(self.context.pd, &mut init) };
        if qp.is_null() {
            return Err(errno("ibv_create_qp"));
        }
        let psn = (rsl_core::mix64(qp as u64 ^ u64::from(std::process::id())) & 0x00ff_ffff) as u32;
        let mut pair = VerbsQp {
            qp,
            state: QpState::Reset,
            port: self.port,
            gid_index: self.gid_index,
            lid: self.lid,
            gid: self.gid,
            mtu: self.mtu,
            psn,
            _cq: Arc::clone(cq),
            _context: Arc::clone(&self.context),
        };
        // SAFETY: zeroed attributes, then the INIT fields.
        let mut attr: ibv_qp_attr = unsafe { std::mem::zeroed() };
        attr.qp_state = ibv_qp_state::IBV_QPS_INIT;
        attr.pkey_index = 0;
        attr.port_num = self.port;
        attr.qp_access_flags =
            (ibv_access_flags::IBV_ACCESS_LOCAL_WRITE | ibv_access_flags::IBV_ACCESS_REMOTE_WRITE).0;
        let mask = ibv_qp_attr_mask::IBV_QP_STATE
            | ibv_qp_attr_mask::IBV_QP_PKEY_INDEX
            | ibv_qp_attr_mask::IBV_QP_PORT
            | ibv_qp_attr_mask::IBV_QP_ACCESS_FLAGS;
        pair.modify(&mut attr, mask, "ibv_modify_qp(INIT)")?;
        pair.state = QpState::Init;
        Ok(Box::new(pair))
    }
}

/// A verbs completion channel, and an eventfd beside it for local wake-ups.
#[derive(Debug)]
struct VerbsChannel {
    channel: *mut ibv_comp_channel,
    /// Written by `wake` while the poller sleeps.
    wake_fd: i32,
    /// Bumped by every `wake`: a `wait` whose token is older returns at once.
    wakes: AtomicU64,
    /// Whether a waiter is inside `ppoll` (or about to be).
    sleeping: AtomicBool,
    _context: Arc<Context>,
}

// SAFETY: the channel's fd is read by the one thread that waits; libibverbs allows
// `ibv_get_cq_event` and queue creation from any thread; `Drop` frees it once.
unsafe impl Send for VerbsChannel {}
// SAFETY: as for `Send`; `wake` only writes the eventfd, which is thread-safe.
unsafe impl Sync for VerbsChannel {}

impl VerbsChannel {
    fn create(context: &Arc<Context>) -> Result<VerbsChannel, VerbsError> {
        // SAFETY: valid context.
        let channel = unsafe { ibv_create_comp_channel(context.context) };
        if channel.is_null() {
            return Err(errno("ibv_create_comp_channel"));
        }
        // SAFETY: a valid channel's fd; reads of it must not block (see `wait`).
        let flags = unsafe { libc::fcntl((*channel).fd, libc::F_GETFL) };
        // SAFETY: as above.
        let nonblocking = unsafe { libc::fcntl((*channel).fd, libc::F_SETFL, flags | libc::O_NONBLOCK) };
        // SAFETY: plain system call.
        let wake_fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if flags < 0 || nonblocking < 0 || wake_fd < 0 {
            let error = errno("eventfd or fcntl for the completion channel");
            if wake_fd >= 0 {
                // SAFETY: closing the eventfd we opened, once.
                unsafe { libc::close(wake_fd) };
            }
            // SAFETY: destroying the channel we created, once; no queue uses it yet.
            unsafe { ibv_destroy_comp_channel(channel) };
            return Err(error);
        }
        Ok(VerbsChannel {
            channel,
            wake_fd,
            wakes: AtomicU64::new(0),
            sleeping: AtomicBool::new(false),
            _context: Arc::clone(context),
        })
    }

    /// Takes every pending queue event (acknowledging each); true if there was one.
    fn drain_events(&self) -> bool {
        let mut any = false;
        loop {
            let mut cq: *mut ibv_cq = std::ptr::null_mut();
            let mut context: *mut std::ffi::c_void = std::ptr::null_mut();
            // SAFETY: a valid channel whose fd is non-blocking, valid out-pointers.
            if unsafe { ibv_get_cq_event(self.channel, &mut cq, &mut context) } != 0 {
                return any;
            }
            // SAFETY: `cq` is the queue the event came from; acknowledged once.
            unsafe { ibv_ack_cq_events(cq, 1) };
            any = true;
        }
    }
}

impl Drop for VerbsChannel {
    fn drop(&mut self) {
        // SAFETY: the eventfd and the channel are ours, freed once; every queue using the
        // channel holds an `Arc` to it, so none is left.
        unsafe {
            libc::close(self.wake_fd);
            ibv_destroy_comp_channel(self.channel);
        }
    }
}

impl CompletionChannel for VerbsChannel {
    fn prepare(&self) -> u64 {
        self.wakes.load(Ordering::SeqCst)
    }

    fn wait(&self, prepared: u64, timeout: Duration) -> bool {
        // `wake` bumps `wakes`, then looks at `sleeping`; this sets `sleeping`, then looks
        // at `wakes`: one of the two sees the other.
        self.sleeping.store(true, Ordering::SeqCst);
        if self.wakes.load(Ordering::SeqCst) != prepared {
            self.sleeping.store(false, Ordering::SeqCst);
            return true;
        }
        // SAFETY: the channel is valid while `self` lives.
        let channel_fd = unsafe { (*self.channel).fd };
        let mut fds = [
            libc::pollfd { fd: channel_fd, events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: self.wake_fd, events: libc::POLLIN, revents: 0 },
        ];
        let timeout = libc::timespec {
            tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
        };
        // SAFETY: two valid pollfds, a valid timeout, no signal mask.
        unsafe { libc::ppoll(fds.as_mut_ptr(), 2, &timeout, std::ptr::null()) };
        self.sleeping.store(false, Ordering::SeqCst);
        let notified = fds[0].revents & libc::POLLIN != 0 && self.drain_events();
        if fds[1].revents & libc::POLLIN != 0 {
            let mut count = 0u64;
            // SAFETY: reads 8 bytes into a u64 from our non-blocking eventfd.
            unsafe { libc::read(self.wake_fd, (&mut count as *mut u64).cast(), 8) };
        }
        notified || self.wakes.load(Ordering::SeqCst) != prepared
    }

    fn wake(&self) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
        if self.sleeping.load(Ordering::SeqCst) {
            let one = 1u64;
            // SAFETY: writes 8 bytes from a u64 to our eventfd.
            unsafe { libc::write(self.wake_fd, (&one as *const u64).cast(), 8) };
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// A verbs completion queue.
#[derive(Debug)]
struct VerbsCq {
    cq: *mut ibv_cq,
    has_channel: bool,
    _channel: Option<Arc<dyn CompletionChannel>>,
    _context: Arc<Context>,
}

// SAFETY: polling a completion queue is thread-safe in libibverbs; `Drop` frees it once.
unsafe impl Send for VerbsCq {}
// SAFETY: as for `Send`.
unsafe impl Sync for VerbsCq {}

impl Drop for VerbsCq {
    fn drop(&mut self) {
        // SAFETY: created by `create_cq`; every queue pair using it holds an `Arc` to it.
        unsafe { ibv_destroy_cq(self.cq) };
    }
}

impl CompletionQueue for VerbsCq {
    fn poll(&self, completions: &mut Vec<Completion>, max: usize) -> usize {
        let max = max.min(64);
        // SAFETY: zeroed work completions are valid out-parameters.
        let mut entries: Vec<ibv_wc> = (0..max).map(|_| unsafe { std::mem::zeroed() }).collect();
        // SAFETY: `entries` has room for `max` completions.
        let polled = unsafe { ibv_poll_cq(self.cq, max as i32, entries.as_mut_ptr()) };
        let polled = polled.max(0) as usize;
        for entry in &entries[..polled] {
            let status = match entry.status {
                ibv_wc_status::IBV_WC_SUCCESS => CompletionStatus::Success,
                ibv_wc_status::IBV_WC_LOC_PROT_ERR => CompletionStatus::LocalProtection,
                ibv_wc_status::IBV_WC_REM_ACCESS_ERR => CompletionStatus::RemoteAccess,
                ibv_wc_status::IBV_WC_WR_FLUSH_ERR => CompletionStatus::Flushed,
                ibv_wc_status::IBV_WC_RNR_RETRY_EXC_ERR => CompletionStatus::ReceiverNotReady,
                _ => CompletionStatus::RetryExceeded,
            };
            let kind = if entry.opcode == ibv_wc_opcode::IBV_WC_RECV_RDMA_WITH_IMM {
                // SAFETY: a receive completed by a write with immediate carries `imm_data`.
                let immediate = u32::from_be(unsafe { entry.imm_data_invalidated_rkey_union.imm_data });
                CompletionKind::Receive { immediate }
            } else {
                CompletionKind::Write
            };
            completions.push(Completion { id: entry.wr_id, qp_number: entry.qp_num, status, kind });
        }
        polled
    }

    fn arm(&self) -> Result<(), VerbsError> {
        if !self.has_channel {
            return Err(VerbsError::Call {
                call: "ibv_req_notify_cq",
                problem: "the completion queue has no channel".into(),
            });
        }
        // SAFETY: a valid queue created with a channel; any completion, not only solicited.
        status("ibv_req_notify_cq", unsafe { ibv_req_notify_cq(self.cq, 0) })
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// A verbs RC queue pair.
#[derive(Debug)]
struct VerbsQp {
    qp: *mut ibv_qp,
    state: QpState,
    port: u8,
    gid_index: u8,
    lid: u16,
    gid: [u8; 16],
    mtu: ibv_mtu::Type,
    psn: u32,
    _cq: Arc<dyn CompletionQueue>,
    _context: Arc<Context>,
}

// SAFETY: a queue pair is posted to from the one thread that owns this value.
unsafe impl Send for VerbsQp {}

impl VerbsQp {
    fn modify(
        &mut self,
        attr: &mut ibv_qp_attr,
        mask: ibv_qp_attr_mask,
        call: &'static str,
    ) -> Result<(), VerbsError> {
        // SAFETY: valid queue pair and attributes for `mask`.
        status(call, unsafe { ibv_modify_qp(self.qp, attr, mask.0 as i32) })
    }
}

impl Drop for VerbsQp {
    fn drop(&mut self) {
        // SAFETY: created by `create_qp`, destroyed once, before its queue and context.
        unsafe { ibv_destroy_qp(self.qp) };
    }
}

impl QueuePair for VerbsQp {
    fn endpoint(&self) -> QpEndpoint {
        // SAFETY: `qp` is valid while `self` lives.
        let qp_number = unsafe { (*self.qp).qp_num };
        QpEndpoint { qp_number, lid: self.lid, gid: self.gid, psn: self.psn, name: String::new() }
    }

    fn state(&self) -> QpState {
        self.state
    }

    fn connect(&mut self, remote: &QpEndpoint) -> Result<(), VerbsError> {
        if self.state != QpState::Init {
            return Err(VerbsError::QpState {
                qp_number: self.endpoint().qp_number,
                operation: "connect",
                expected: QpState::Init,
                found: self.state,
            });
        }
        // SAFETY: zeroed attributes, then the RTR fields.
        let mut attr: ibv_qp_attr = unsafe { std::mem::zeroed() };
        attr.qp_state = ibv_qp_state::IBV_QPS_RTR;
        attr.path_mtu = self.mtu;
        attr.dest_qp_num = remote.qp_number;
        attr.rq_psn = remote.psn;
        attr.max_dest_rd_atomic = 1;
        attr.min_rnr_timer = 12;
        attr.ah_attr.dlid = remote.lid;
        attr.ah_attr.port_num = self.port;
        if remote.gid != [0; 16] {
            // RoCE addresses by GID: a global route header is required.
            attr.ah_attr.is_global = 1;
            attr.ah_attr.grh.dgid = ibv_gid { raw: remote.gid };
            attr.ah_attr.grh.sgid_index = self.gid_index;
            attr.ah_attr.grh.hop_limit = 64;
        }
        let mask = ibv_qp_attr_mask::IBV_QP_STATE
            | ibv_qp_attr_mask::IBV_QP_AV
            | ibv_qp_attr_mask::IBV_QP_PATH_MTU
            | ibv_qp_attr_mask::IBV_QP_DEST_QPN
            | ibv_qp_attr_mask::IBV_QP_RQ_PSN
            | ibv_qp_attr_mask::IBV_QP_MAX_DEST_RD_ATOMIC
            | ibv_qp_attr_mask::IBV_QP_MIN_RNR_TIMER;
        self.modify(&mut attr, mask, "ibv_modify_qp(RTR)")?;
        self.state = QpState::ReadyToReceive;
        // SAFETY: zeroed attributes, then the RTS fields.
        let mut attr: ibv_qp_attr = unsafe { std::mem::zeroed() };
        attr.qp_state = ibv_qp_state::IBV_QPS_RTS;
        attr.timeout = 14;
        attr.retry_cnt = 7;
        attr.rnr_retry = 7;
        attr.sq_psn = self.psn;
        attr.max_rd_atomic = 1;
        let mask = ibv_qp_attr_mask::IBV_QP_STATE
            | ibv_qp_attr_mask::IBV_QP_TIMEOUT
            | ibv_qp_attr_mask::IBV_QP_RETRY_CNT
            | ibv_qp_attr_mask::IBV_QP_RNR_RETRY
            | ibv_qp_attr_mask::IBV_QP_SQ_PSN
            | ibv_qp_attr_mask::IBV_QP_MAX_QP_RD_ATOMIC;
        self.modify(&mut attr, mask, "ibv_modify_qp(RTS)")?;
        self.state = QpState::ReadyToSend;
        Ok(())
    }

    fn post_write(&mut self, requests: &[WorkRequest<'_>]) -> Result<(), VerbsError> {
        if !matches!(self.state, QpState::ReadyToSend | QpState::Error) {
            return Err(VerbsError::QpState {
                qp_number: self.endpoint().qp_number,
                operation: "post_send",
                expected: QpState::ReadyToSend,
                found: self.state,
            });
        }
        check_requests(requests)?;
        if requests.is_empty() {
            return Ok(());
        }
        let mut sges: Vec<ibv_sge> = requests
            .iter()
            .map(|request| match request.source {
                Source::Region { region, offset, len } => {
                    ibv_sge { addr: region.address() + offset, length: len, lkey: region.lkey() }
                }
                Source::Inline(bytes) => {
                    ibv_sge { addr: bytes.as_ptr() as u64, length: bytes.len() as u32, lkey: 0 }
                }
            })
            .collect();
        // SAFETY: zeroed work requests are valid; each is filled below.
        let mut chain: Vec<ibv_send_wr> =
            (0..requests.len()).map(|_| unsafe { std::mem::zeroed() }).collect();
        let sge_base = sges.as_mut_ptr();
        let chain_base = chain.as_mut_ptr();
        for (i, (request, wr)) in requests.iter().zip(chain.iter_mut()).enumerate() {
            wr.wr_id = request.id;
            // SAFETY: `i` is within `sges` and `chain`, which outlive the post.
            wr.sg_list = unsafe { sge_base.add(i) };
            // A zero-byte write (a pure notification with immediate) has no scatter entry.
            wr.num_sge = i32::from(!request.source.is_empty());
            wr.opcode = match request.immediate {
                None => ibv_wr_opcode::IBV_WR_RDMA_WRITE,
                Some(immediate) => {
                    wr.imm_data_invalidated_rkey_union.imm_data = immediate.to_be();
                    ibv_wr_opcode::IBV_WR_RDMA_WRITE_WITH_IMM
                }
            };
            let mut flags = ibv_send_flags(0);
            if request.signaled {
                flags |= ibv_send_flags::IBV_SEND_SIGNALED;
            }
            if matches!(request.source, Source::Inline(bytes) if !bytes.is_empty()) {
                flags |= ibv_send_flags::IBV_SEND_INLINE;
            }
            wr.send_flags = flags.0;
            wr.wr.rdma = rdma_t { remote_addr: request.remote_address, rkey: request.rkey };
            wr.next = if i + 1 < requests.len() {
                // SAFETY: the next element of `chain`.
                unsafe { chain_base.add(i + 1) }
            } else {
                std::ptr::null_mut()
            };
        }
        let mut bad: *mut ibv_send_wr = std::ptr::null_mut();
        // SAFETY: a valid queue pair and a chain of valid work requests whose scatter lists
        // and inline bytes stay alive for the call (inline data is copied by it).
        let code = unsafe { ibv_post_send(self.qp, chain_base, &mut bad) };
        status("ibv_post_send", code)
    }

    fn post_receive(&mut self, ids: &[u64]) -> Result<(), VerbsError> {
        if ids.is_empty() {
            return Ok(());
        }
        // SAFETY: zeroed receive requests are valid; each is filled below (no scatter
        // entries: a write with immediate consumes the receive without placing bytes in it).
        let mut chain: Vec<ibv_recv_wr> = ids.iter().map(|_| unsafe { std::mem::zeroed() }).collect();
        let chain_base = chain.as_mut_ptr();
        for (i, (id, wr)) in ids.iter().zip(chain.iter_mut()).enumerate() {
            wr.wr_id = *id;
            wr.num_sge = 0;
            wr.next = if i + 1 < ids.len() {
                // SAFETY: the next element of `chain`.
                unsafe { chain_base.add(i + 1) }
            } else {
                std::ptr::null_mut()
            };
        }
        let mut bad: *mut ibv_recv_wr = std::ptr::null_mut();
        // SAFETY: a valid queue pair and a chain of valid receive requests alive for the call.
        let code = unsafe { ibv_post_recv(self.qp, chain_base, &mut bad) };
        status("ibv_post_recv", code)
    }

    fn set_error(&mut self) {
        // SAFETY: zeroed attributes, then the state.
        let mut attr: ibv_qp_attr = unsafe { std::mem::zeroed() };
        attr.qp_state = ibv_qp_state::IBV_QPS_ERR;
        let _ = self.modify(&mut attr, ibv_qp_attr_mask::IBV_QP_STATE, "ibv_modify_qp(ERR)");
        self.state = QpState::Error;
    }
}

/// Opens a verbs device; see `VerbsDevice::open`.
pub(crate) fn open(name: Option<&str>, port: u8, gid_index: u8) -> Result<Arc<dyn Device>, VerbsError> {
    Ok(Arc::new(VerbsDevice::open(name, port, gid_index)?))
}
