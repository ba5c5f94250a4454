//! The io_uring receive backend: one ring per media thread.
//!
//! - Setup asks for `IORING_SETUP_SINGLE_ISSUER | DEFER_TASKRUN | COOP_TASKRUN` (completion
//!   work runs only when this thread enters the kernel to wait, in one batch, with no
//!   inter-processor interrupts) and steps down a ladder of weaker flag sets when the kernel
//!   says EINVAL; [`UringBackend::setup_mode`] names the rung that held.
//! - Sockets live in the registered (fixed) file table: `register_files_sparse` once, then
//!   `register_files_update` puts each socket in a free slot and clears it on removal. The
//!   ordinary descriptor is closed right after registration: the slot holds the only
//!   reference, so the socket closes when its slot is cleared, and the process's descriptor
//!   table does not grow with the number of calls.
//! - Receive buffers come from one provided-buffer ring (`IORING_REGISTER_PBUF_RING`,
//!   default 4,096 buffers of 2 KiB) shared by all sockets, and each socket has one
//!   multishot `recvmsg` (`RecvMsgMulti`) outstanding. Each buffer holds
//!   `io_uring_recvmsg_out`, the sender address, the `SO_TIMESTAMPNS` control message and
//!   the payload, in that order ([`HEADER_BYTES`] before the payload).
//! - A multishot receive that ends (a completion without `IORING_CQE_F_MORE`) is re-armed at
//!   the end of the same `poll`, after this poll's buffers went back to the ring. When the ring
//!   is empty the kernel ends the receive with `-ENOBUFS` and leaves the datagram in the
//!   socket queue, so the re-arm picks it up: back-pressure, counted in `enobufs`, never loss.
//! - Removal cancels the multishot receive and waits for its last completion before the slot
//!   is cleared and reused ("state freed only on the last completion"); a generation number
//!   in every `user_data` keeps a late completion from landing on the slot's next socket.
//!
//! Owns: the ring, the buffer ring memory, the fixed-file slots, the wake eventfd. Must not:
//! allocate, log or lock per packet; hold a packet buffer past the callback.
//!
//! Every `unsafe` block of the io_uring path is in this file, each with a `SAFETY:` comment.
//! The invariants they rely on: the buffer ring and buffer memory outlive the ring (field
//! order plus the `Drop` impl), the `msghdr` template and the wake buffer are boxed (stable
//! addresses) and live as long as the backend, and a buffer is read only between the
//! completion that hands it to us and the moment we give it back.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::net::UdpSocket;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use io_uring::types::{CancelBuilder, Fd, Fixed, RecvMsgOut, SubmitArgs, Timespec};
use io_uring::{IoUring, cqueue, opcode, squeue};

use super::epoll::new_eventfd;
use super::{
    BackendConfig, BackendStats, Batch, CONTROL_SPACE, Received, RecvBackend, Waker, parse_control,
    parse_sockaddr, realtime_now_ns, set_timestamping,
};

/// Name space reserved in each buffer: `sockaddr_in6` is 28 bytes; 32 keeps the control
/// message that follows 8-byte aligned.
const NAME_LEN: usize = 32;
/// `struct io_uring_recvmsg_out`: four u32.
const RECVMSG_OUT: usize = 16;
/// Bytes at the front of every provided buffer before the payload starts, so the largest
/// datagram delivered whole is `buf_size - HEADER_BYTES`.
pub const HEADER_BYTES: usize = RECVMSG_OUT + NAME_LEN + CONTROL_SPACE;

/// The one buffer group this backend registers.
const BGID: u16 = 0;
const SQ_ENTRIES: u32 = 256;

// user_data: kind (8 bits) | generation (24 bits) | slot (32 bits).
const KIND_RECV: u64 = 1;
const KIND_WAKE: u64 = 2;
const KIND_CANCEL: u64 = 3;
const GEN_MASK: u32 = 0x00ff_ffff;
/// `IORING_CQE_F_MORE`.
const CQE_F_MORE: u32 = 1 << 1;

fn user_data(kind: u64, generation: u32, slot: u32) -> u64 {
    (kind << 56) | (u64::from(generation & GEN_MASK) << 32) | u64::from(slot)
}

fn split_user_data(ud: u64) -> (u64, u32, u32) {
    (ud >> 56, ((ud >> 32) as u32) & GEN_MASK, ud as u32)
}

/// Consecutive failed receives on one socket after which it is no longer re-armed (a
/// permanent error such as EINVAL must not spin).
const MAX_ERRORS_IN_ROW: u32 = 8;
/// Most extra re-arm-and-read rounds in one `poll` (see `ended_early`).
const MAX_EXTRA_ROUNDS: usize = 64;

/// A completion copied out of the completion queue.
#[derive(Clone, Copy, Debug)]
struct Cqe {
    user_data: u64,
    result: i32,
    flags: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotState {
    Free,
    Active,
    Closing,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    token: u64,
    generation: u32,
    state: SlotState,
    /// A multishot receive was pushed and its last completion has not been seen.
    inflight: bool,
    errors_in_row: u32,
}

/// The layout of `struct io_uring_buf`; written field by field through raw pointers so no
/// Rust reference ever covers memory the kernel reads concurrently (the tail in entry 0).
#[repr(C)]
struct RawBuf {
    addr: u64,
    len: u32,
    bid: u16,
    /// In entry 0 this is the ring's tail.
    resv: u16,
}

const _: () =
    assert!(std::mem::size_of::<RawBuf>() == std::mem::size_of::<io_uring::types::BufRingEntry>());

/// An anonymous, populated, page-aligned mapping.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> io::Result<Mapping> {
        // SAFETY: an anonymous private mapping touches no existing memory; the result is
        // checked against MAP_FAILED before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if self.ptr.is_null() {
            return; // leaked on purpose, see `UringBackend::drop`
        }
        // SAFETY: `ptr`/`len` are exactly what mmap returned; nothing uses the memory after
        // this (the ring that could write it is dropped first, see `UringBackend`).
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

/// The provided-buffer ring and its buffers. `tail` is our private producer index; the kernel
/// sees it only when `publish` stores it, once per batch.
struct BufRing {
    ring: Mapping,
    bufs: Mapping,
    count: u32,
    size: u32,
    tail: u16,
}

impl BufRing {
    fn new(count: u32, size: u32) -> io::Result<BufRing> {
        let ring = Mapping::new(count as usize * std::mem::size_of::<RawBuf>())?;
        let bufs = Mapping::new(count as usize * size as usize)?;
        let mut r = BufRing {
            ring,
            bufs,
            count,
            size,
            tail: 0,
        };
        for bid in 0..count {
            r.give_back(bid as u16);
        }
        r.publish();
        Ok(r)
    }

    /// Writes buffer `bid` into the next free ring entry (not yet visible to the kernel).
    fn give_back(&mut self, bid: u16) {
        let idx = usize::from(self.tail) & (self.count as usize - 1);
        let addr = self.bufs.ptr as u64 + u64::from(bid) * u64::from(self.size);
        // SAFETY: `idx < count`, so the entry lies inside the ring mapping. The entry is past
        // the published tail, so the kernel does not read it until `publish`. Only addr, len
        // and bid are written; `resv` (the tail, in entry 0) is left alone.
        unsafe {
            let e = self.ring.ptr.cast::<RawBuf>().add(idx);
            std::ptr::addr_of_mut!((*e).addr).write(addr);
            std::ptr::addr_of_mut!((*e).len).write(self.size);
            std::ptr::addr_of_mut!((*e).bid).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes every buffer given back so far visible to the kernel.
    fn publish(&self) {
        // SAFETY: the tail is the u16 `resv` field of entry 0, inside the mapping and 2-byte
        // aligned (page-aligned base + 14). The kernel reads it with an acquire load; every
        // access from our side goes through this atomic, and the Release store orders the
        // entry writes in `give_back` before it.
        let tail = unsafe {
            &*(self
                .ring
                .ptr
                .add(std::mem::offset_of!(RawBuf, resv))
                .cast::<AtomicU16>())
        };
        tail.store(self.tail, Ordering::Release);
    }

    /// The whole buffer `bid`.
    fn buffer(&self, bid: u16) -> &[u8] {
        debug_assert!(u32::from(bid) < self.count);
        // SAFETY: the caller checked `bid < count`, so the range lies inside the buffer
        // mapping. The kernel wrote this buffer before posting the completion that named it
        // (the completion queue load is an acquire), and does not touch it again until
        // `give_back` returns it to the ring, which happens after the returned slice is dead.
        unsafe {
            std::slice::from_raw_parts(
                self.bufs.ptr.add(usize::from(bid) * self.size as usize),
                self.size as usize,
            )
        }
    }
}

/// Everything but the ring and the buffers, so CQE handling can borrow it while the
/// completion queue is borrowed from the ring.
struct State {
    /// The template every `RecvMsgMulti` points at; only `msg_namelen` and
    /// `msg_controllen` matter. Boxed: the kernel reads it through a raw pointer.
    msghdr: Box<libc::msghdr>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    by_token: HashMap<u64, u32>,
    /// Slots whose multishot receive ended and must be pushed again.
    rearm: Vec<u32>,
    /// Packet completions read while `remove_socket` waited; delivered by the next `poll`.
    stash: Vec<Cqe>,
    eventfd: Arc<File>,
    /// The wake read's destination. Boxed: the kernel writes it through a raw pointer.
    wake_buf: Box<u64>,
    wake_armed: bool,
    batch: Option<Batch>,
    min_timeout: bool,
    cq_entries: u32,
    stats: BackendStats,
    /// A live slot's multishot receive ended on a datagram or on an empty buffer ring, so
    /// its socket may hold more: `poll` re-arms and reads again before it returns.
    ended_early: bool,
}

/// See the module docs.
pub struct UringBackend {
    // Field order is drop order: the ring (and with it every request that could write a
    // buffer) goes before the buffer memory.
    ring: IoUring,
    bufs: BufRing,
    st: State,
    setup_mode: &'static str,
}

/// The setup flag ladder, strongest first.
const SETUP_LADDER: [(&str, bool, bool, bool); 4] = [
    ("single_issuer+defer_taskrun+coop_taskrun", true, true, true),
    ("single_issuer+coop_taskrun", true, false, true),
    ("coop_taskrun", false, false, true),
    ("plain", false, false, false),
];

fn build_ring(cq_entries: u32) -> io::Result<(IoUring, &'static str)> {
    let mut last = None;
    for (name, single, defer, coop) in SETUP_LADDER {
        let mut b = IoUring::builder();
        b.setup_cqsize(cq_entries).setup_clamp();
        if single {
            b.setup_single_issuer();
        }
        if defer {
            b.setup_defer_taskrun();
        }
        if coop {
            b.setup_coop_taskrun();
        }
        match b.build(SQ_ENTRIES) {
            Ok(r) => return Ok((r, name)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EINVAL)))
}

fn unsupported(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, format!("io_uring: {what}"))
}

impl UringBackend {
    /// Creates the ring, registers the sparse file table and the buffer ring, arms the wake
    /// read. Call it on the thread that will poll (single-issuer rings belong to that task).
    pub fn new(config: &BackendConfig) -> io::Result<UringBackend> {
        let count = config.buf_count;
        if !count.is_power_of_two() || count > 32768 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "io_uring: buf_count must be a power of two <= 32768",
            ));
        }
        if (config.buf_size as usize) < HEADER_BYTES + 64 || config.buf_size > 65536 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "io_uring: buf_size must be in {}..=65536",
                    HEADER_BYTES + 64
                ),
            ));
        }
        if config.max_sockets == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "io_uring: max_sockets must be >= 1",
            ));
        }
        // One completion per buffer in flight, plus one final completion per socket and the
        // wake, so the completion queue never overflows in normal running.
        // The kernel refuses (EINVAL) a completion queue smaller than the submission queue.
        let cq_entries = (count + config.max_sockets + 64)
            .next_power_of_two()
            .clamp(2 * SQ_ENTRIES, 65536);
        let (ring, setup_mode) = build_ring(cq_entries)?;
        let params = ring.params();
        if !params.is_feature_ext_arg() {
            return Err(unsupported("no IORING_FEAT_EXT_ARG (kernel < 5.11)"));
        }
        let mut probe = io_uring::Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        if !probe.is_supported(opcode::RecvMsg::CODE) {
            return Err(unsupported("IORING_OP_RECVMSG unsupported"));
        }
        let min_timeout = params.is_feature_min_timeout();
        let cq_entries = params.cq_entries();
        ring.submitter()
            .register_files_sparse(config.max_sockets)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "io_uring: register {} fixed file slots: {e} \
                         (the table is bounded by RLIMIT_NOFILE)",
                        config.max_sockets
                    ),
                )
            })?;
        let bufs = BufRing::new(count, config.buf_size)?;
        // SAFETY: the ring mapping is page-aligned, holds `count` entries and lives until
        // after the ring is dropped (field order; `Drop` below unregisters first).
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                bufs.ring.ptr as u64,
                count as u16,
                BGID,
                0,
            )
        }
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("io_uring: provided buffer ring (kernel >= 5.19): {e}"),
            )
        })?;

        // SAFETY: msghdr is a plain C struct; all-zero (null pointers, zero lengths) is valid.
        let mut msghdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        msghdr.msg_namelen = NAME_LEN as libc::socklen_t;
        msghdr.msg_controllen = CONTROL_SPACE as _;

        let max = config.max_sockets;
        let mut me = UringBackend {
            ring,
            bufs,
            st: State {
                msghdr,
                slots: vec![
                    Slot {
                        token: 0,
                        generation: 0,
                        state: SlotState::Free,
                        inflight: false,
                        errors_in_row: 0,
                    };
                    max as usize
                ],
                free: (0..max).rev().collect(),
                by_token: HashMap::with_capacity(max as usize),
                rearm: Vec::with_capacity(max as usize),
                stash: Vec::new(),
                eventfd: Arc::new(new_eventfd(false)?),
                wake_buf: Box::new(0),
                wake_armed: false,
                batch: config.batch,
                min_timeout,
                cq_entries,
                stats: BackendStats::default(),
                ended_early: false,
            },
            setup_mode,
        };
        me.arm_wake()?;
        me.ring.submit()?;
        Ok(me)
    }

    /// Which setup flags the kernel accepted (for the start-up log line).
    pub fn setup_mode(&self) -> &'static str {
        self.setup_mode
    }

    /// Whether the kernel waits natively for a batch (`IORING_FEAT_MIN_TIMEOUT`, 6.12);
    /// otherwise batched waking takes two waits when idle.
    pub fn has_min_timeout(&self) -> bool {
        self.st.min_timeout
    }

    /// Pushes an SQE, submitting first if the submission queue is full.
    ///
    /// # Safety
    /// Every pointer in `e` must stay valid until the request's last completion.
    unsafe fn push(ring: &mut IoUring, e: &squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: forwarded from the caller.
            if unsafe { ring.submission().push(e) }.is_ok() {
                return Ok(());
            }
            ring.submit()?;
        }
    }

    fn arm_wake(&mut self) -> io::Result<()> {
        let buf: *mut u64 = &mut *self.st.wake_buf;
        let e = opcode::Read::new(Fd(self.st.eventfd.as_raw_fd()), buf.cast(), 8)
            .build()
            .user_data(user_data(KIND_WAKE, 0, 0));
        // SAFETY: `wake_buf` is boxed (stable address) and the eventfd is held by `st`; both
        // live until the backend drops, and `Drop` cancels the read before freeing them.
        unsafe { Self::push(&mut self.ring, &e) }?;
        self.st.wake_armed = true;
        Ok(())
    }

    fn arm_recv(&mut self, slot: u32) -> io::Result<()> {
        let s = self.st.slots[slot as usize];
        let e = opcode::RecvMsgMulti::new(Fixed(slot), &*self.st.msghdr, BGID)
            .build()
            .user_data(user_data(KIND_RECV, s.generation, slot));
        // SAFETY: the msghdr template is boxed and lives as long as the backend; the buffer
        // group's memory outlives the ring (see the struct's field order and `Drop`).
        unsafe { Self::push(&mut self.ring, &e) }?;
        self.st.slots[slot as usize].inflight = true;
        Ok(())
    }

    /// Waits for completions per the batching config. Timeouts and signals are not errors.
    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        self.st.stats.wakeups += 1;
        let cap = self.st.cq_entries;
        match self.st.batch {
            None => enter(&self.ring.submitter(), 1, timeout, None),
            Some(b) if self.st.min_timeout => enter(
                &self.ring.submitter(),
                b.min_complete.clamp(1, cap),
                timeout,
                Some(b.min_wait.min(timeout)),
            ),
            Some(b) => {
                // Emulation without IORING_FEAT_MIN_TIMEOUT: wait for the batch up to
                // min_wait; if nothing at all came, wait for one up to the rest.
                let first = b.min_wait.min(timeout);
                enter(
                    &self.ring.submitter(),
                    b.min_complete.clamp(1, cap),
                    first,
                    None,
                )?;
                if !self.ring.completion().is_empty() || first >= timeout {
                    return Ok(());
                }
                self.st.stats.wakeups += 1;
                enter(&self.ring.submitter(), 1, timeout - first, None)
            }
        }
    }

    /// Handles one completion. Packet completions of live sockets are delivered through
    /// `deliver`, or stashed for the next `poll` when `deliver` is `None`.
    fn handle(
        st: &mut State,
        bufs: &mut BufRing,
        c: Cqe,
        deliver: Option<&mut dyn FnMut(Received<'_>)>,
        fallback_ns: &mut Option<u64>,
    ) -> usize {
        let (kind, generation, slot) = split_user_data(c.user_data);
        match kind {
            KIND_WAKE => {
                st.wake_armed = false;
                return 0;
            }
            KIND_RECV => {}
            _ => return 0, // cancel results: the receive's own last completion is what counts
        }
        let Some(s) = st.slots.get_mut(slot as usize) else {
            st.stats.errors += 1;
            return 0;
        };
        let current = s.generation == generation && s.state != SlotState::Free;
        let live = current && s.state == SlotState::Active;
        let last = !cqueue::more(c.flags);
        let mut delivered = 0;

        if c.result >= 0 {
            match cqueue::buffer_select(c.flags) {
                None => st.stats.errors += 1,
                Some(bid) if u32::from(bid) >= bufs.count => st.stats.errors += 1,
                Some(bid) if !live => bufs.give_back(bid),
                Some(bid) => match deliver {
                    Some(on_packet) => {
                        s.errors_in_row = 0;
                        delivered = deliver_buffer(
                            &mut st.stats,
                            &st.msghdr,
                            bufs,
                            bid,
                            s.token,
                            on_packet,
                            fallback_ns,
                        );
                        bufs.give_back(bid);
                    }
                    // remove_socket is waiting: keep the buffer and deliver at the next poll.
                    // The copy says "more follows" so that replaying it never touches the
                    // slot's arm state, which is settled below, now.
                    None => st.stash.push(Cqe {
                        flags: c.flags | CQE_F_MORE,
                        ..c
                    }),
                },
            }
        } else if c.result == -libc::ENOBUFS {
            st.stats.enobufs += 1;
        } else if c.result != -libc::ECANCELED {
            st.stats.errors += 1;
            if current {
                s.errors_in_row += 1;
            }
        }

        if last && current {
            s.inflight = false;
            if live && s.errors_in_row < MAX_ERRORS_IN_ROW {
                st.rearm.push(slot);
                // A zero-length datagram ends the kernel's multishot recvmsg (its length 0
                // reads as "finished"), and so does an empty buffer ring.
                st.ended_early |= c.result >= 0 || c.result == -libc::ENOBUFS;
            }
        }
        delivered
    }

    /// Reads every completion now in the queue through `handle`.
    fn drain(&mut self, mut deliver: Option<&mut dyn FnMut(Received<'_>)>) -> usize {
        let mut delivered = 0;
        let mut fallback_ns = None;
        // Two passes at most: without DEFER_TASKRUN the kernel may post while we read, and
        // an unbounded loop could starve everything else under a flood.
        for _ in 0..2 {
            let mut cq = self.ring.completion();
            if cq.is_empty() {
                break;
            }
            for e in &mut cq {
                let c = Cqe {
                    user_data: e.user_data(),
                    result: e.result(),
                    flags: e.flags(),
                };
                delivered += Self::handle(
                    &mut self.st,
                    &mut self.bufs,
                    c,
                    match deliver {
                        Some(ref mut f) => Some(&mut **f),
                        None => None,
                    },
                    &mut fallback_ns,
                );
            }
        }
        delivered
    }

    /// After a batch: hand the buffers back (one tail store) and re-arm what ended.
    fn finish_batch(&mut self) -> io::Result<()> {
        self.bufs.publish();
        while let Some(slot) = self.st.rearm.pop() {
            let s = self.st.slots[slot as usize];
            if s.state == SlotState::Active && !s.inflight {
                self.st.stats.rearms += 1;
                self.arm_recv(slot)?;
            }
        }
        if !self.st.wake_armed {
            self.arm_wake()?;
        }
        Ok(())
    }
}

/// Parses buffer `bid` as a `recvmsg` multishot result and hands it to `on_packet`.
fn deliver_buffer(
    stats: &mut BackendStats,
    msghdr: &libc::msghdr,
    bufs: &BufRing,
    bid: u16,
    token: u64,
    on_packet: &mut dyn FnMut(Received<'_>),
    fallback_ns: &mut Option<u64>,
) -> usize {
    let Ok(out) = RecvMsgOut::parse(bufs.buffer(bid), msghdr) else {
        stats.errors += 1;
        return 0;
    };
    let Some(source) = parse_sockaddr(out.name_data()) else {
        stats.errors += 1;
        return 0;
    };
    let data = out.payload_data();
    let truncated = out.is_payload_truncated() || out.incoming_payload_len() as usize > data.len();
    let (stamp, dst_port) = parse_control(out.control_data());
    let arrival_ns = stamp.unwrap_or_else(|| *fallback_ns.get_or_insert_with(realtime_now_ns));
    stats.packets += 1;
    stats.bytes += data.len() as u64;
    stats.truncated += u64::from(truncated);
    on_packet(Received {
        token,
        data,
        arrival_ns,
        source,
        dst_port,
        truncated,
    });
    1
}

/// `io_uring_enter` (via the crate) waiting for `want` completions up to `timeout`, with an
/// optional batch wait. ETIME (timeout), EINTR and EBUSY (completion overflow to flush) end
/// the wait normally.
fn enter(
    submitter: &io_uring::Submitter<'_>,
    want: u32,
    timeout: Duration,
    min_wait: Option<Duration>,
) -> io::Result<()> {
    let ts = Timespec::new()
        .sec(timeout.as_secs())
        .nsec(timeout.subsec_nanos());
    let mut args = SubmitArgs::new().timespec(&ts);
    if let Some(w) = min_wait {
        args = args.min_wait_usec(w.as_micros().min(u128::from(u32::MAX)) as u32);
    }
    match submitter.submit_with_args(want as usize, &args) {
        Ok(_) => Ok(()),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY)
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

impl RecvBackend for UringBackend {
    /// Takes ownership: the socket goes into a fixed-file slot and its ordinary descriptor is
    /// closed; the slot's reference keeps it open until `remove_socket` clears the slot.
    fn add_socket(&mut self, socket: UdpSocket, token: u64) -> io::Result<()> {
        if self.st.by_token.contains_key(&token) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "token already in use",
            ));
        }
        set_timestamping(&socket)?;
        socket.set_nonblocking(true)?;
        let slot = self.st.free.pop().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::OutOfMemory,
                "io_uring: fixed file table full (raise max_sockets)",
            )
        })?;
        if let Err(e) = self
            .ring
            .submitter()
            .register_files_update(slot, &[socket.as_fd().as_raw_fd()])
        {
            self.st.free.push(slot);
            return Err(e);
        }
        drop(socket);
        let s = &mut self.st.slots[slot as usize];
        s.token = token;
        s.generation = s.generation.wrapping_add(1) & GEN_MASK;
        s.state = SlotState::Active;
        s.inflight = false;
        s.errors_in_row = 0;
        self.st.by_token.insert(token, slot);
        // Submitted by the next poll's enter; datagrams that arrive meanwhile wait in the
        // socket queue. If even queueing the SQE fails, the next poll retries the arm.
        if let Err(e) = self.arm_recv(slot) {
            self.st.rearm.push(slot);
            return Err(e);
        }
        Ok(())
    }

    /// Cancels the multishot receive, waits (up to 2 s) for its last completion, then clears
    /// the fixed-file slot, which closes the socket. Completions of other sockets read
    /// meanwhile are kept and delivered by the next `poll`; this token's are dropped.
    fn remove_socket(&mut self, token: u64) -> io::Result<()> {
        let slot = *self
            .st
            .by_token
            .get(&token)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "unknown token"))?;
        self.st.by_token.remove(&token);
        let s = &mut self.st.slots[slot as usize];
        s.state = SlotState::Closing;
        let generation = s.generation;
        if s.inflight {
            let e = opcode::AsyncCancel2::new(CancelBuilder::user_data(user_data(
                KIND_RECV, generation, slot,
            )))
            .build()
            .user_data(user_data(KIND_CANCEL, generation, slot));
            // SAFETY: a cancel request carries no pointers.
            unsafe { Self::push(&mut self.ring, &e) }?;
            let deadline = Instant::now() + Duration::from_secs(2);
            while self.st.slots[slot as usize].inflight {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    // The slot stays Closing (never reused, never delivered); better a leaked
                    // slot than a socket whose late completion hits the next call.
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "io_uring: multishot receive did not end after cancel",
                    ));
                }
                enter(&self.ring.submitter(), 1, left, None)?;
                self.drain(None);
            }
        }
        self.ring.submitter().register_files_update(slot, &[-1])?;
        self.st.slots[slot as usize].state = SlotState::Free;
        self.st.free.push(slot);
        // Buffers of the removed socket's dropped completions go back now.
        self.bufs.publish();
        Ok(())
    }

    fn poll(
        &mut self,
        timeout: Duration,
        on_packet: &mut dyn FnMut(Received<'_>),
    ) -> io::Result<usize> {
        let mut delivered = 0;
        if !self.st.stash.is_empty() {
            let mut stash = std::mem::take(&mut self.st.stash);
            let mut fallback_ns = None;
            for c in stash.drain(..) {
                delivered += Self::handle(
                    &mut self.st,
                    &mut self.bufs,
                    c,
                    Some(&mut *on_packet),
                    &mut fallback_ns,
                );
            }
            self.st.stash = stash; // keep the capacity
        }
        if delivered > 0 || !self.ring.completion().is_empty() {
            // Something to hand out already: just submit pending re-arms, don't wait.
            self.ring.submit()?;
        } else {
            self.wait(timeout)?;
        }
        delivered += self.drain(Some(on_packet));
        self.finish_batch()?;
        // A receive that ended early leaves the rest of its socket's queue unread until it is
        // re-armed: re-arm and read on now, not one datagram per wake (a stream with an empty
        // datagram after each packet went deaf, one packet read per 80 ms wake). Submitting
        // the re-arms runs them at once on what is queued. Bounded, so a flood of empty
        // datagrams costs a few rounds per wake, not the thread.
        for _ in 0..MAX_EXTRA_ROUNDS {
            if !std::mem::take(&mut self.st.ended_early) {
                break;
            }
            self.ring.submit()?;
            delivered += self.drain(Some(&mut *on_packet));
            self.finish_batch()?;
        }
        Ok(delivered)
    }

    fn waker(&self) -> Waker {
        Waker::new(self.st.eventfd.clone())
    }

    fn stats(&self) -> BackendStats {
        self.st.stats
    }

    fn name(&self) -> &'static str {
        "uring"
    }
}

impl Drop for UringBackend {
    /// Cancels every request and waits (bounded) for the last completions, so no request can
    /// write a buffer after its memory is unmapped. If the kernel does not confirm in time the
    /// buffer memory is leaked rather than unmapped under a live request.
    fn drop(&mut self) {
        let e = opcode::AsyncCancel2::new(CancelBuilder::any().all())
            .build()
            .user_data(user_data(KIND_CANCEL, 0, 0));
        // SAFETY: a cancel request carries no pointers.
        let pushed = unsafe { Self::push(&mut self.ring, &e) }.is_ok();
        for s in self.st.slots.iter_mut() {
            if s.state == SlotState::Active {
                s.state = SlotState::Closing;
            }
        }
        let busy = |st: &State| st.wake_armed || st.slots.iter().any(|s| s.inflight);
        let deadline = Instant::now() + Duration::from_secs(1);
        while pushed && busy(&self.st) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || enter(&self.ring.submitter(), 1, left, None).is_err() {
                break;
            }
            self.st.stash.clear();
            self.drain(None);
        }
        if busy(&self.st) {
            // Leak the mappings: see the doc comment.
            std::mem::forget(std::mem::replace(
                &mut self.bufs.bufs,
                Mapping {
                    ptr: std::ptr::null_mut(),
                    len: 0,
                },
            ));
            std::mem::forget(std::mem::replace(
                &mut self.bufs.ring,
                Mapping {
                    ptr: std::ptr::null_mut(),
                    len: 0,
                },
            ));
        } else {
            let _ = self.ring.submitter().unregister_buf_ring(BGID);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_round_trips_and_keeps_kinds_apart() {
        for (k, g, s) in [
            (KIND_RECV, 1, 0),
            (KIND_WAKE, 0, 0),
            (KIND_CANCEL, GEN_MASK, u32::MAX),
        ] {
            assert_eq!(split_user_data(user_data(k, g, s)), (k, g, s));
        }
        // The generation wraps inside its 24 bits instead of spilling into the kind.
        assert_eq!(
            split_user_data(user_data(KIND_RECV, GEN_MASK + 1, 7)),
            (KIND_RECV, 0, 7)
        );
    }

    #[test]
    fn header_fits_the_default_buffer_with_room_for_rtp() {
        assert_eq!(HEADER_BYTES % 8, 0);
        assert!(BackendConfig::default().buf_size as usize - HEADER_BYTES >= 1500);
    }

    #[test]
    fn buffer_ring_wraps_and_publishes_the_tail() {
        let mut r = BufRing::new(8, 128).expect("map");
        // All 8 given at creation: tail 8.
        // SAFETY (test): reading the published tail the same way `publish` wrote it.
        let tail = |r: &BufRing| unsafe {
            (*(r.ring.ptr.add(std::mem::offset_of!(RawBuf, resv)) as *const AtomicU16))
                .load(Ordering::Acquire)
        };
        assert_eq!(tail(&r), 8);
        for bid in [3u16, 5, 1] {
            r.give_back(bid);
        }
        assert_eq!(tail(&r), 8, "not visible before publish");
        r.publish();
        assert_eq!(tail(&r), 11);
        // Entry 8 & 7 = 0 holds bid 3 now, entry 1 bid 5; entry 0's tail field survived.
        // SAFETY (test): entries 0..8 lie inside the ring mapping.
        let (bid0, bid1) = unsafe {
            let e = r.ring.ptr.cast::<RawBuf>();
            ((*e).bid, (*e.add(1)).bid)
        };
        assert_eq!((bid0, bid1), (3, 5));
        assert_eq!(r.buffer(7).len(), 128);
    }

    #[test]
    fn setup_falls_back_and_reports_its_mode() {
        if crate::media::probe::probe_uring().is_err() {
            eprintln!("skipped: io_uring unavailable");
            return;
        }
        let b = UringBackend::new(&BackendConfig {
            max_sockets: 16,
            buf_count: 16,
            ..BackendConfig::default()
        })
        .expect("ring");
        assert!(
            SETUP_LADDER
                .iter()
                .any(|(name, ..)| *name == b.setup_mode())
        );
        eprintln!(
            "setup mode: {}, min_timeout: {}",
            b.setup_mode(),
            b.has_min_timeout()
        );
    }
}
