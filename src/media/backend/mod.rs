//! RTP receive backends: one trait, [`RecvBackend`], with two implementations chosen by
//! [`crate::media::probe::choose_backend`]:
//!
//! - [`uring::UringBackend`]: one io_uring per media thread, sockets in the registered (fixed)
//!   file table, a provided-buffer ring, one multishot `recvmsg` per socket.
//! - [`epoll::EpollBackend`]: the fallback, level-triggered epoll plus `recvmmsg` batches.
//!
//! What this module owns: turning bound, non-blocking UDP sockets into a stream of
//! [`Received`] packets (token, bytes, arrival time, source), the per-backend counters
//! ([`BackendStats`]) and the [`Waker`] another thread uses to cut a `poll` short.
//!
//! What it must not do: parse SIP or RTP, write files, log per packet, lock, or allocate per
//! packet inside `poll`. Packets are lent to the callback and their buffers are reused as soon
//! as the callback returns, so the caller copies whatever it keeps (into its journal chunk).
//!
//! Threading: a backend is created, polled and changed (`add_socket`, `remove_socket`) by one
//! thread, the media thread that owns it. It is deliberately not `Send`: the io_uring backend
//! uses `IORING_SETUP_SINGLE_ISSUER`, which binds the ring to the task that created it. Only
//! the [`Waker`] crosses threads.
//!
//! All `unsafe` of the receive path lives in `uring.rs` and, for the few syscalls std has no
//! safe form of (epoll, recvmmsg, eventfd, setsockopt), in `epoll.rs`. This file has none.

use std::fs::File;
use std::io::{self, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use crate::media::probe::Backend;

pub mod epoll;
pub mod uring;

/// One datagram, lent to the `poll` callback. `data` points into a receive buffer that is
/// handed back to the kernel as soon as the callback returns.
#[derive(Debug)]
pub struct Received<'a> {
    /// The token given to [`RecvBackend::add_socket`] for the socket this arrived on.
    pub token: u64,
    /// The datagram (only its first part when `truncated`).
    pub data: &'a [u8],
    /// Arrival time, `CLOCK_REALTIME` nanoseconds: the kernel's `SO_TIMESTAMPNS` receive
    /// timestamp when the socket delivered one, else `clock_gettime` when the backend picked
    /// up the completion (once per batch, not per packet).
    pub arrival_ns: u64,
    /// The sender's address.
    pub source: SocketAddr,
    /// The destination port the datagram was sent to, from `IP_ORIGDSTADDR`, on a socket
    /// opened with [`open_tproxy_socket`] (one socket receiving a whole port range behind an
    /// nftables TPROXY rule); 0 on ordinary sockets.
    pub dst_port: u16,
    /// The datagram was larger than the receive buffer; `data` holds its first bytes only.
    pub truncated: bool,
}

/// Counters since the backend was opened. Read them with [`RecvBackend::stats`]; they are
/// plain integers owned by the media thread, never shared.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendStats {
    /// Datagrams delivered to the callback.
    pub packets: u64,
    /// Bytes delivered (`data.len()` summed).
    pub bytes: u64,
    /// io_uring: multishot receives that ended with `-ENOBUFS` because the buffer ring was
    /// empty. The datagram stays in the socket queue and is picked up after re-arming, so this
    /// is back-pressure, not loss. Always 0 for epoll.
    pub enobufs: u64,
    /// io_uring: multishot receives re-armed after they ended (no `IORING_CQE_F_MORE`).
    pub rearms: u64,
    /// Datagrams larger than the receive buffer (delivered cut, flagged `truncated`).
    pub truncated: u64,
    /// Waits in the kernel that returned (`io_uring_enter` with a wait, `epoll_wait`).
    /// `packets / wakeups` is the batch size a wake brings.
    pub wakeups: u64,
    /// Receive errors other than the above (counted; the receive is re-armed when it can be).
    pub errors: u64,
}

/// A cloneable, `Send` handle that wakes the owning backend's `poll` early: it writes to an
/// eventfd the backend watches (a read SQE for io_uring, an epoll registration for epoll).
/// Wakes coalesce: many `wake()` calls before the next `poll` end one wait.
#[derive(Clone, Debug)]
pub struct Waker {
    eventfd: Arc<File>,
}

impl Waker {
    pub(crate) fn new(eventfd: Arc<File>) -> Waker {
        Waker { eventfd }
    }

    /// Wakes the backend's current or next `poll`. Never blocks in practice (an eventfd write
    /// blocks only when its 64-bit counter would overflow).
    pub fn wake(&self) {
        // Ignoring the error: the only failure (EAGAIN at counter overflow) means a wake is
        // already pending, which is what the caller wants.
        let _ = (&*self.eventfd).write(&1u64.to_ne_bytes());
    }
}

/// Receive settings for [`open_backend`]. Sizes are per backend (per media thread).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendConfig {
    /// io_uring: buffers in the provided-buffer ring (a power of two, at most 32768).
    /// epoll: messages per `recvmmsg` call.
    pub buf_count: u32,
    /// Bytes per receive buffer. io_uring puts a small header (sender address and control
    /// data, [`uring::HEADER_BYTES`]) in front of the payload inside each buffer.
    pub buf_size: u32,
    /// io_uring: slots in the registered file table, i.e. the most sockets one ring holds.
    /// Bounded by `RLIMIT_NOFILE`.
    pub max_sockets: u32,
    /// Batched waking: let completions pile up so one wake takes many. `None` wakes on the
    /// first completion.
    pub batch: Option<Batch>,
}

/// Batched waking: `poll` returns once `min_complete` completions are ready, or once
/// `min_wait` has passed and at least one is ready, or at its own timeout. A [`Waker`] wake
/// counts as one completion, so commands can wait up to `min_wait` under light load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batch {
    pub min_complete: u32,
    pub min_wait: Duration,
}

impl Default for BackendConfig {
    /// The figures measured best on this project's reference host for io_uring: 4,096 buffers
    /// of 2 KiB; 64 messages per `recvmmsg` for epoll take `buf_count.min(64)`.
    fn default() -> Self {
        BackendConfig {
            buf_count: 4096,
            buf_size: 2048,
            max_sockets: 4096,
            batch: None,
        }
    }
}

/// The receive interface every media thread drives.
pub trait RecvBackend {
    /// Starts receiving on a bound, non-blocking UDP socket. The backend takes ownership of
    /// the socket (the io_uring backend moves it into its registered file table and closes
    /// the ordinary descriptor; epoll keeps it). `SO_TIMESTAMPNS` is switched on. `token`
    /// comes back with every packet; tokens must be unique among the backend's sockets.
    fn add_socket(&mut self, socket: UdpSocket, token: u64) -> io::Result<()>;

    /// Stops receiving and closes the socket before returning (so its port can be bound
    /// again at once). Packets of this token that were received but not yet delivered by
    /// `poll` are discarded: after the call begins, `token` is never delivered again. Unknown
    /// tokens give `NotFound`.
    fn remove_socket(&mut self, token: u64) -> io::Result<()>;

    /// Waits up to `timeout` for packets, then delivers every ready packet (the whole
    /// completion queue, every readable socket until it would block) to `on_packet` and
    /// returns how many it delivered. A [`Waker`] wake or the timeout returns `Ok(0)`.
    fn poll(
        &mut self,
        timeout: Duration,
        on_packet: &mut dyn FnMut(Received<'_>),
    ) -> io::Result<usize>;

    /// A handle another thread uses to wake `poll` early.
    fn waker(&self) -> Waker;

    fn stats(&self) -> BackendStats;

    /// `"uring"` or `"epoll"`.
    fn name(&self) -> &'static str;
}

/// Opens a backend of `kind`. For io_uring this fails when the kernel lacks a feature the
/// backend needs (provided-buffer rings: 5.19; multishot `recvmsg`: 6.0); the caller then
/// opens epoll and says so in its start-up line. Must be called on the thread that polls.
pub fn open_backend(kind: Backend, config: &BackendConfig) -> io::Result<Box<dyn RecvBackend>> {
    Ok(match kind {
        Backend::Uring => Box::new(uring::UringBackend::new(config)?),
        Backend::Epoll => Box::new(epoll::EpollBackend::new(config)?),
    })
}

/// Opens the socket one media thread receives a whole RTP port range on, behind an nftables
/// TPROXY rule (`media.tproxy_port`): IPv4, `0.0.0.0:port`, `IP_TRANSPARENT` (CAP_NET_ADMIN),
/// each datagram's original destination port reported in [`Received::dst_port`], receive
/// buffer `rcvbuf` bytes.
pub fn open_tproxy_socket(port: u16, rcvbuf: usize) -> io::Result<std::net::UdpSocket> {
    let sock = epoll::tproxy_socket(port)?;
    epoll::set_rcvbuf(sock.as_fd(), rcvbuf)?;
    Ok(sock)
}

/// Switches on `SO_TIMESTAMPNS` (kernel receive timestamps, `CLOCK_REALTIME` ns) for
/// `socket`. Both backends call it in `add_socket`.
pub fn set_timestamping(socket: &impl AsFd) -> io::Result<()> {
    epoll::set_timestampns(socket.as_fd())
}

/// Sets the socket's receive buffer to `bytes` (`SO_RCVBUFFORCE` where permitted, else
/// `SO_RCVBUF`, capped by `net.core.rmem_max`) and returns the size the kernel reports. The
/// socket queue is what absorbs bursts while a media thread is busy: size it for the longest
/// stall to ride out.
pub fn set_receive_buffer(socket: &impl AsFd, bytes: usize) -> io::Result<usize> {
    epoll::set_rcvbuf(socket.as_fd(), bytes)
}

/// `CLOCK_REALTIME` now in ns: the fallback arrival time, and the clock `arrival_ns` is on.
pub fn realtime_now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Decodes a `sockaddr_in` / `sockaddr_in6` as the kernel wrote it (native-endian family,
/// network-order port and address). Safe byte parsing, so a short or odd name yields `None`
/// rather than a wild read.
pub(crate) fn parse_sockaddr(name: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes([*name.first()?, *name.get(1)?]);
    let port = u16::from_be_bytes([*name.get(2)?, *name.get(3)?]);
    if i32::from(family) == libc::AF_INET {
        let ip: [u8; 4] = name.get(4..8)?.try_into().ok()?;
        Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port)))
    } else if i32::from(family) == libc::AF_INET6 {
        let flow = u32::from_be_bytes(name.get(4..8)?.try_into().ok()?);
        let ip: [u8; 16] = name.get(8..24)?.try_into().ok()?;
        let scope = u32::from_ne_bytes(name.get(24..28)?.try_into().ok()?);
        Some(SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(ip),
            port,
            flow,
            scope,
        )))
    } else {
        None
    }
}

/// Bytes of a `cmsghdr` (`cmsg_len: size_t`, level, type) on this target.
const CMSG_HDR: usize = std::mem::size_of::<libc::cmsghdr>();
const CMSG_ALIGN: usize = std::mem::size_of::<usize>();

/// Control-buffer bytes that hold one `SCM_TIMESTAMPNS` message: `CMSG_SPACE(timespec)`.
pub(crate) const TIMESTAMP_CMSG_SPACE: usize =
    CMSG_HDR + std::mem::size_of::<libc::timespec>().next_multiple_of(CMSG_ALIGN);

/// Control-buffer bytes that hold one `IP_ORIGDSTADDR` message: `CMSG_SPACE(sockaddr_in)`.
pub(crate) const ORIGDST_CMSG_SPACE: usize =
    CMSG_HDR + std::mem::size_of::<libc::sockaddr_in>().next_multiple_of(CMSG_ALIGN);

/// Control-buffer bytes a backend gives each datagram: the timestamp and, on a TPROXY socket,
/// the original destination.
pub(crate) const CONTROL_SPACE: usize = TIMESTAMP_CMSG_SPACE + ORIGDST_CMSG_SPACE;

/// What the control messages of one datagram say, in one walk over them: the kernel receive
/// time (ns) from `SCM_TIMESTAMPNS` and the original destination port from `IP_ORIGDSTADDR`
/// (a `sockaddr_in`, port in network order at bytes 2..4; 0 when absent). Safe byte parsing:
/// a cut or malformed control area yields what was read before it, never a panic.
pub(crate) fn parse_control(control: &[u8]) -> (Option<u64>, u16) {
    let mut stamp = None;
    let mut port = 0u16;
    let mut off = 0usize;
    while let Some((level, kind, data, next)) = cmsg_at(control, off) {
        match (level, kind) {
            (libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS) => stamp = timespec_ns(data),
            (libc::SOL_IP, libc::IP_ORIGDSTADDR) => {
                if let Some(p) = data.get(2..4) {
                    port = u16::from_be_bytes([p[0], p[1]]);
                }
            }
            _ => {}
        }
        off = next;
    }
    (stamp, port)
}

/// The `SCM_TIMESTAMPNS` time in `control` (as the kernel lays out `msg_control`), in ns.
#[cfg(test)]
fn parse_timestampns(control: &[u8]) -> Option<u64> {
    parse_control(control).0
}

/// `struct timespec { time_t tv_sec; long tv_nsec; }` (64- or 32-bit target) as ns.
fn timespec_ns(data: &[u8]) -> Option<u64> {
    let w = std::mem::size_of::<libc::time_t>();
    let sec = i64_from_ne(data.get(..w)?)?;
    let nsec = i64_from_ne(data.get(w..w + std::mem::size_of::<libc::c_long>())?)?;
    if sec < 0 || !(0..1_000_000_000).contains(&nsec) {
        return None;
    }
    Some((sec as u64).saturating_mul(1_000_000_000) + nsec as u64)
}

/// The control message at `off`: level, type, data, and where the next one starts.
fn cmsg_at(control: &[u8], off: usize) -> Option<(i32, i32, &[u8], usize)> {
    if off + CMSG_HDR > control.len() {
        return None;
    }
    let len = usize::from_ne_bytes(control.get(off..off + CMSG_ALIGN)?.try_into().ok()?);
    let level = i32::from_ne_bytes(
        control
            .get(off + CMSG_ALIGN..off + CMSG_ALIGN + 4)?
            .try_into()
            .ok()?,
    );
    let kind = i32::from_ne_bytes(
        control
            .get(off + CMSG_ALIGN + 4..off + CMSG_ALIGN + 8)?
            .try_into()
            .ok()?,
    );
    if len < CMSG_HDR {
        return None;
    }
    let data = control.get(off + CMSG_HDR..off.checked_add(len)?)?;
    let next = off.checked_add(len.next_multiple_of(CMSG_ALIGN))?;
    Some((level, kind, data, next))
}

fn i64_from_ne(b: &[u8]) -> Option<i64> {
    match b.len() {
        8 => Some(i64::from_ne_bytes(b.try_into().ok()?)),
        4 => Some(i64::from(i32::from_ne_bytes(b.try_into().ok()?))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmsg(level: i32, kind: i32, data: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&(CMSG_HDR + data.len()).to_ne_bytes());
        v.extend_from_slice(&level.to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(data);
        while v.len() % CMSG_ALIGN != 0 {
            v.push(0);
        }
        v
    }

    fn timespec(sec: i64, nsec: i64) -> Vec<u8> {
        let mut v = sec.to_ne_bytes().to_vec();
        v.extend_from_slice(&nsec.to_ne_bytes());
        v
    }

    #[test]
    fn timestamp_and_tproxy_destination_in_one_walk() {
        let mut sin = vec![0u8; std::mem::size_of::<libc::sockaddr_in>()];
        sin[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        sin[2..4].copy_from_slice(&20002u16.to_be_bytes());
        let stamp = cmsg(libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS, &timespec(5, 6));
        let dst = cmsg(libc::SOL_IP, libc::IP_ORIGDSTADDR, &sin);
        assert_eq!(ORIGDST_CMSG_SPACE, dst.len());
        assert_eq!(CONTROL_SPACE, stamp.len() + dst.len());
        let both = [stamp.clone(), dst.clone()].concat();
        assert_eq!(parse_control(&both), (Some(5_000_000_006), 20002));
        assert_eq!(
            parse_control(&[dst, stamp].concat()),
            (Some(5_000_000_006), 20002)
        );
        // Cut inside the destination: the timestamp before it still counts.
        assert_eq!(
            parse_control(&both[..both.len() - 4]),
            (Some(5_000_000_006), 0)
        );
    }

    #[test]
    fn timestamp_found_after_another_cmsg() {
        let mut c = cmsg(libc::SOL_IP, libc::IP_TOS, &[0x2e, 0, 0, 0]);
        c.extend(cmsg(
            libc::SOL_SOCKET,
            libc::SCM_TIMESTAMPNS,
            &timespec(1_700_000_000, 123),
        ));
        assert_eq!(parse_timestampns(&c), Some(1_700_000_000_000_000_123));
        assert_eq!(
            TIMESTAMP_CMSG_SPACE,
            cmsg(libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS, &timespec(0, 0)).len()
        );
    }

    #[test]
    fn malformed_control_data_is_none_not_a_panic() {
        let good = cmsg(libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS, &timespec(5, 6));
        for cut in 0..good.len() {
            assert_eq!(parse_timestampns(&good[..cut]), None, "cut at {cut}");
        }
        let mut zero_len = good.clone();
        zero_len[..CMSG_ALIGN].fill(0);
        assert_eq!(parse_timestampns(&zero_len), None);
        let mut huge = good.clone();
        huge[..CMSG_ALIGN].copy_from_slice(&usize::MAX.to_ne_bytes());
        assert_eq!(parse_timestampns(&huge), None);
        let bad_nsec = cmsg(
            libc::SOL_SOCKET,
            libc::SCM_TIMESTAMPNS,
            &timespec(5, 2_000_000_000),
        );
        assert_eq!(parse_timestampns(&bad_nsec), None);
    }

    #[test]
    fn sockaddr_v4_v6_and_garbage() {
        let mut v4 = vec![0u8; 16];
        v4[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        v4[2..4].copy_from_slice(&5004u16.to_be_bytes());
        v4[4..8].copy_from_slice(&[127, 0, 0, 9]);
        assert_eq!(
            parse_sockaddr(&v4),
            Some("127.0.0.9:5004".parse().expect("addr"))
        );
        let mut v6 = vec![0u8; 28];
        v6[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        v6[2..4].copy_from_slice(&16384u16.to_be_bytes());
        v6[8..24].copy_from_slice(&Ipv6Addr::LOCALHOST.octets());
        assert_eq!(
            parse_sockaddr(&v6),
            Some("[::1]:16384".parse().expect("addr"))
        );
        assert_eq!(parse_sockaddr(&v6[..20]), None);
        assert_eq!(parse_sockaddr(&[]), None);
        assert_eq!(parse_sockaddr(&[0xff; 28]), None);
    }
}
