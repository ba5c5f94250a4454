//! The fallback receive backend: level-triggered epoll over the sockets, and for each readable
//! socket `recvmmsg` batches (default 64 messages of 2 KiB) until the socket's queue is empty.
//! Used where io_uring is blocked (seccomp, `kernel.io_uring_disabled`) or too old.
//!
//! Owns: the epoll instance, the sockets it was given, one set of receive buffers reused by
//! every `recvmmsg`, the wake eventfd. Must not: allocate, log or lock per packet; block
//! anywhere but `epoll_wait`.
//!
//! Why level-triggered: a socket whose drain stops early (a batch shorter than the vector
//! means its queue was empty a moment ago, so we skip the extra `recvmmsg` that would just
//! say EAGAIN) is reported again by the next `epoll_wait` if anything arrived in between. With
//! edge triggering the same shortcut is also correct, but level triggering keeps "no packet is
//! ever stranded in a queue" true without reasoning about edges.
//!
//! Also holds the two raw syscalls both backends share (`eventfd`, `setsockopt
//! SO_TIMESTAMPNS`), so the only `unsafe` of the media path outside `uring.rs` is here.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::net::UdpSocket;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use super::{
    BackendConfig, BackendStats, CONTROL_SPACE, Received, RecvBackend, Waker, parse_control,
    parse_sockaddr, realtime_now_ns, set_timestamping,
};

/// epoll data of the wake eventfd; sockets use their slab index, which never gets this big.
const WAKE_KEY: u64 = u64::MAX;
/// Most messages one `recvmmsg` takes.
const MAX_BATCH: usize = 64;
/// Ready events taken per `epoll_wait`; more ready sockets come in the next call.
const MAX_EVENTS: usize = 512;
/// `u64` words of control buffer per message (the timestamp and the TPROXY destination).
const CONTROL_WORDS: usize = CONTROL_SPACE.div_ceil(8);

/// Switches on `SO_TIMESTAMPNS` for `fd`.
pub(super) fn set_timestampns(fd: BorrowedFd<'_>) -> io::Result<()> {
    setsockopt_int(fd, libc::SO_TIMESTAMPNS, 1)
}

fn setsockopt_int(fd: BorrowedFd<'_>, opt: libc::c_int, value: libc::c_int) -> io::Result<()> {
    setsockopt_at(fd, libc::SOL_SOCKET, opt, value)
}

fn setsockopt_at(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    opt: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: setsockopt reads exactly `size_of::<c_int>()` bytes from `&value`, which lives
    // across the call; `fd` is open for the borrow's lifetime.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// An IPv4 UDP socket on `0.0.0.0:port` that receives datagrams an nftables TPROXY rule sends
/// it for other destination ports (`IP_TRANSPARENT`, needs CAP_NET_ADMIN), and reports each
/// one's original destination (`IP_RECVORIGDSTADDR`). Non-blocking, kernel timestamps on.
pub(super) fn tproxy_socket(port: u16) -> io::Result<std::net::UdpSocket> {
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: socket() takes no pointers; a non-negative result is a new descriptor that only
    // this function owns, handed to OwnedFd at once (closed on every error path below).
    let raw = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a valid descriptor we own (checked above) and nothing else holds it.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    setsockopt_at(fd.as_fd(), libc::SOL_IP, libc::IP_TRANSPARENT, 1).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("IP_TRANSPARENT (needs CAP_NET_ADMIN): {e}"),
        )
    })?;
    setsockopt_at(fd.as_fd(), libc::SOL_IP, libc::IP_RECVORIGDSTADDR, 1)?;
    setsockopt_int(fd.as_fd(), libc::SO_REUSEADDR, 1)?;
    set_timestampns(fd.as_fd())?;
    let sock = std::net::UdpSocket::from(fd);
    bind_any_v4(&sock, port)?;
    Ok(sock)
}

/// Binds `sock` to `0.0.0.0:port`.
fn bind_any_v4(sock: &std::net::UdpSocket, port: u16) -> io::Result<()> {
    // SAFETY: sockaddr_in is plain data; all-zero is a valid value we then fill in.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = port.to_be();
    sa.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::UNSPECIFIED).to_be();
    // SAFETY: bind reads `size_of::<sockaddr_in>()` bytes from `sa`, which lives across the
    // call; the descriptor is open for the borrow of `sock`.
    let rc = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Asks for a receive buffer of `bytes`: `SO_RCVBUFFORCE` (ignores `net.core.rmem_max`,
/// needs CAP_NET_ADMIN), else `SO_RCVBUF` (capped by rmem_max). Returns what the kernel set
/// (which it doubles for bookkeeping overhead).
pub(super) fn set_rcvbuf(fd: BorrowedFd<'_>, bytes: usize) -> io::Result<usize> {
    let want = bytes.min(i32::MAX as usize / 2) as libc::c_int;
    if setsockopt_int(fd, libc::SO_RCVBUFFORCE, want).is_err() {
        setsockopt_int(fd, libc::SO_RCVBUF, want)?;
    }
    let mut got: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` (= size_of c_int) bytes into `got`, and `len`
    // back; both live across the call.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&mut got as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(got.max(0) as usize)
}

/// A new close-on-exec eventfd, non-blocking if asked, wrapped as a `File` so reads and writes
/// go through safe std calls.
pub(super) fn new_eventfd(nonblock: bool) -> io::Result<File> {
    let flags = libc::EFD_CLOEXEC | if nonblock { libc::EFD_NONBLOCK } else { 0 };
    // SAFETY: eventfd takes no pointers; the result is checked before use.
    let fd = unsafe { libc::eventfd(0, flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

fn epoll_ctl(epfd: &OwnedFd, op: libc::c_int, fd: BorrowedFd<'_>, key: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: key,
    };
    // SAFETY: `ev` is a valid epoll_event for the duration of the call (ignored for DEL);
    // both descriptors are open for the call.
    let rc = unsafe { libc::epoll_ctl(epfd.as_raw_fd(), op, fd.as_raw_fd(), &mut ev) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

struct Entry {
    socket: UdpSocket,
    token: u64,
}

/// The receive buffers of one `recvmmsg` vector. The `iovec`s and `mmsghdr`s point into the
/// boxed slices next to them; boxes never move their heap memory, so the pointers stay valid
/// for the struct's life even when the struct itself moves.
struct Vectors {
    batch: usize,
    buf_size: usize,
    bufs: Box<[u8]>,
    names: Box<[libc::sockaddr_storage]>,
    controls: Box<[[u64; CONTROL_WORDS]]>,
    iovecs: Box<[libc::iovec]>,
    msgs: Box<[libc::mmsghdr]>,
}

impl Vectors {
    fn new(batch: usize, buf_size: usize) -> Vectors {
        // SAFETY: sockaddr_storage, iovec and mmsghdr are plain C structs for which all-zero
        // bytes are a valid value (null pointers, zero lengths).
        let zero_name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut v = Vectors {
            batch,
            buf_size,
            bufs: vec![0u8; batch * buf_size].into_boxed_slice(),
            names: vec![zero_name; batch].into_boxed_slice(),
            controls: vec![[0u64; CONTROL_WORDS]; batch].into_boxed_slice(),
            // SAFETY: as above, all-zero iovec / mmsghdr are valid.
            iovecs: vec![unsafe { std::mem::zeroed::<libc::iovec>() }; batch].into_boxed_slice(),
            msgs: vec![unsafe { std::mem::zeroed::<libc::mmsghdr>() }; batch].into_boxed_slice(),
        };
        for i in 0..batch {
            v.iovecs[i] = libc::iovec {
                iov_base: v.bufs[i * buf_size..].as_mut_ptr().cast(),
                iov_len: buf_size,
            };
            let hdr = &mut v.msgs[i].msg_hdr;
            hdr.msg_name = (&mut v.names[i] as *mut libc::sockaddr_storage).cast();
            hdr.msg_iov = &mut v.iovecs[i];
            hdr.msg_iovlen = 1;
            hdr.msg_control = v.controls[i].as_mut_ptr().cast();
        }
        v
    }

    /// The kernel overwrites the in/out lengths; set them back before each call.
    fn reset(&mut self) {
        for m in self.msgs.iter_mut() {
            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as _;
            m.msg_hdr.msg_controllen = (CONTROL_WORDS * 8) as _;
            m.msg_hdr.msg_flags = 0;
            m.msg_len = 0;
        }
    }

    /// One `recvmmsg` on `fd`: the number of messages, 0 when the queue is empty.
    fn recv(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        self.reset();
        loop {
            // SAFETY: `msgs` holds `batch` initialised mmsghdrs whose name, iovec and control
            // pointers point into this struct's boxed buffers with the lengths set in
            // `reset`/`new`; all outlive the call. MSG_DONTWAIT keeps it non-blocking.
            let n = unsafe {
                libc::recvmmsg(
                    fd.as_raw_fd(),
                    self.msgs.as_mut_ptr(),
                    self.batch as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock => return Ok(0),
                io::ErrorKind::Interrupted => continue,
                _ => return Err(e),
            }
        }
    }

    /// Message `i` of the last `recv`: (payload, name bytes, control bytes, truncated).
    fn message(&self, i: usize) -> (&[u8], &[u8], &[u8], bool) {
        let m = &self.msgs[i];
        let len = (m.msg_len as usize).min(self.buf_size);
        let data = &self.bufs[i * self.buf_size..i * self.buf_size + len];
        let name_len =
            (m.msg_hdr.msg_namelen as usize).min(std::mem::size_of::<libc::sockaddr_storage>());
        // SAFETY: `names[i]` is a live sockaddr_storage; viewing its first `name_len` (at most
        // its size) bytes as u8 is valid for any bit pattern.
        let name = unsafe {
            std::slice::from_raw_parts(
                (&self.names[i] as *const libc::sockaddr_storage).cast(),
                name_len,
            )
        };
        // `msg_controllen` is size_t on glibc, socklen_t on musl: the cast is needed there.
        #[allow(clippy::unnecessary_cast)]
        let ctl_len = (m.msg_hdr.msg_controllen as usize).min(CONTROL_WORDS * 8);
        // SAFETY: `controls[i]` is CONTROL_WORDS u64s; its first `ctl_len` (at most its size)
        // bytes viewed as u8 are valid.
        let control =
            unsafe { std::slice::from_raw_parts(self.controls[i].as_ptr().cast::<u8>(), ctl_len) };
        let truncated = m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        (data, name, control, truncated)
    }
}

/// See the module docs.
pub struct EpollBackend {
    epfd: OwnedFd,
    eventfd: Arc<File>,
    slab: Vec<Option<Entry>>,
    free: Vec<usize>,
    by_token: HashMap<u64, usize>,
    events: Box<[libc::epoll_event]>,
    vectors: Vectors,
    stats: BackendStats,
}

impl EpollBackend {
    /// An epoll instance with the wake eventfd registered and `config.buf_count.min(64)`
    /// receive slots of `config.buf_size` bytes.
    pub fn new(config: &BackendConfig) -> io::Result<EpollBackend> {
        if config.buf_size < 64 || config.buf_count == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "epoll backend: buf_size must be >= 64 and buf_count >= 1",
            ));
        }
        // SAFETY: epoll_create1 takes no pointers; the result is checked before use.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nobody else.
        let epfd = unsafe { OwnedFd::from_raw_fd(fd) };
        let eventfd = Arc::new(new_eventfd(true)?);
        epoll_ctl(&epfd, libc::EPOLL_CTL_ADD, eventfd.as_fd(), WAKE_KEY)?;
        let batch = (config.buf_count as usize).clamp(1, MAX_BATCH);
        Ok(EpollBackend {
            epfd,
            eventfd,
            slab: Vec::new(),
            free: Vec::new(),
            by_token: HashMap::new(),
            events: vec![libc::epoll_event { events: 0, u64: 0 }; MAX_EVENTS].into_boxed_slice(),
            vectors: Vectors::new(batch, config.buf_size as usize),
            stats: BackendStats::default(),
        })
    }

    fn wait(&mut self, timeout: Duration) -> io::Result<usize> {
        let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
        // SAFETY: `events` is a live buffer of `events.len()` epoll_events the kernel fills.
        let n = unsafe {
            libc::epoll_wait(
                self.epfd.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as libc::c_int,
                ms,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(0)
            } else {
                Err(e)
            };
        }
        Ok(n as usize)
    }
}

impl RecvBackend for EpollBackend {
    /// Keeps the socket (owns it) until `remove_socket` drops it.
    fn add_socket(&mut self, socket: UdpSocket, token: u64) -> io::Result<()> {
        if self.by_token.contains_key(&token) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "token already in use",
            ));
        }
        socket.set_nonblocking(true)?;
        set_timestamping(&socket)?;
        let idx = self.free.pop().unwrap_or(self.slab.len());
        if let Err(e) = epoll_ctl(&self.epfd, libc::EPOLL_CTL_ADD, socket.as_fd(), idx as u64) {
            if idx < self.slab.len() {
                self.free.push(idx);
            }
            return Err(e);
        }
        if idx == self.slab.len() {
            self.slab.push(None);
        }
        self.slab[idx] = Some(Entry { socket, token });
        self.by_token.insert(token, idx);
        Ok(())
    }

    /// Removes from epoll and closes at once; nothing of it is pending between polls, since
    /// each `poll` drains what it reads.
    fn remove_socket(&mut self, token: u64) -> io::Result<()> {
        let idx = self
            .by_token
            .remove(&token)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "unknown token"))?;
        if let Some(entry) = self.slab.get_mut(idx).and_then(Option::take) {
            // A failure here cannot leave events behind: closing the socket below removes it
            // from the epoll set anyway (it is its only descriptor).
            let _ = epoll_ctl(&self.epfd, libc::EPOLL_CTL_DEL, entry.socket.as_fd(), 0);
        }
        self.free.push(idx);
        Ok(())
    }

    fn poll(
        &mut self,
        timeout: Duration,
        on_packet: &mut dyn FnMut(Received<'_>),
    ) -> io::Result<usize> {
        let ready = self.wait(timeout)?;
        self.stats.wakeups += 1;
        let mut delivered = 0usize;
        // One clock read per wake for packets without a kernel timestamp.
        let mut fallback_ns: Option<u64> = None;
        for i in 0..ready {
            let key = self.events[i].u64;
            if key == WAKE_KEY {
                let mut b = [0u8; 8];
                let _ = (&*self.eventfd).read(&mut b);
                continue;
            }
            let Some(Some(entry)) = self.slab.get(key as usize) else {
                continue;
            };
            loop {
                let n = match self.vectors.recv(entry.socket.as_fd()) {
                    Ok(n) => n,
                    Err(_) => {
                        self.stats.errors += 1;
                        break;
                    }
                };
                for j in 0..n {
                    let (data, name, control, truncated) = self.vectors.message(j);
                    let Some(source) = parse_sockaddr(name) else {
                        self.stats.errors += 1;
                        continue;
                    };
                    let (stamp, dst_port) = parse_control(control);
                    let arrival_ns =
                        stamp.unwrap_or_else(|| *fallback_ns.get_or_insert_with(realtime_now_ns));
                    self.stats.packets += 1;
                    self.stats.bytes += data.len() as u64;
                    self.stats.truncated += u64::from(truncated);
                    on_packet(Received {
                        token: entry.token,
                        data,
                        arrival_ns,
                        source,
                        dst_port,
                        truncated,
                    });
                    delivered += 1;
                }
                if n < self.vectors.batch {
                    break;
                }
            }
        }
        Ok(delivered)
    }

    fn waker(&self) -> Waker {
        Waker::new(self.eventfd.clone())
    }

    fn stats(&self) -> BackendStats {
        self.stats
    }

    fn name(&self) -> &'static str {
        "epoll"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_packet_round_trip_with_kernel_timestamp() {
        let mut b = EpollBackend::new(&BackendConfig::default()).expect("epoll");
        let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let to = rx.local_addr().expect("addr");
        b.add_socket(rx, 7).expect("add");
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind tx");
        tx.send_to(b"hello", to).expect("send");
        let mut got = Vec::new();
        let before = realtime_now_ns();
        for _ in 0..50 {
            b.poll(Duration::from_millis(20), &mut |p| {
                got.push((p.token, p.data.to_vec(), p.source, p.arrival_ns))
            })
            .expect("poll");
            if !got.is_empty() {
                break;
            }
        }
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, 7);
        assert_eq!(got[0].1, b"hello");
        assert_eq!(got[0].2, tx.local_addr().expect("tx addr"));
        assert!(got[0].3.abs_diff(before) < 2_000_000_000);
        assert!(
            b.add_socket(UdpSocket::bind("127.0.0.1:0").expect("b"), 7)
                .is_err()
        );
        assert_eq!(
            b.remove_socket(99).map_err(|e| e.kind()),
            Err(io::ErrorKind::NotFound)
        );
    }
}
