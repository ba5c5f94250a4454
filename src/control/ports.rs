//! RTP port allocation: an even RTP port and RTP+1 for RTCP, both bound at once, so the SRC
//! finds open ports as soon as it has the answer. A port returns to the pool only after its
//! sockets are closed, and the pool hands ports out oldest-freed first so late packets of an
//! ended call do not land in a new one.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

/// The sockets of one allocated stream.
#[derive(Debug)]
pub struct StreamSockets {
    pub rtp: UdpSocket,
    pub rtcp: UdpSocket,
}

pub struct PortPool {
    free: VecDeque<u16>,
    bound: HashMap<u16, StreamSockets>,
    /// Ports whose sockets were handed to a media thread: in use until released.
    lent: std::collections::HashSet<u16>,
    bind_ip: IpAddr,
    rcvbuf: usize,
}

/// The first RTP port of a range starting at `lo`: RTP ports are even.
pub fn first_rtp_port(lo: u16) -> u16 {
    if lo.is_multiple_of(2) {
        lo
    } else {
        lo.saturating_add(1)
    }
}

impl PortPool {
    /// A pool over the even ports of `lo..=hi`. Binds to `[::]` (dual-stack) when the host has
    /// IPv6, else `0.0.0.0`.
    pub fn new(lo: u16, hi: u16, rcvbuf: usize) -> PortPool {
        let first = first_rtp_port(lo);
        let mut free: VecDeque<u16> = (first..hi).step_by(2).collect();
        // Start at a random place in the range: after a restart, SRCs may still be sending
        // the last process's streams to the ports it handed out first (from the bottom), and
        // a new call given one of them would record another call's audio.
        if !free.is_empty() {
            let at = rand::random_range(0..free.len());
            free.rotate_left(at);
        }
        let v6 = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
        let bind_ip = match UdpSocket::bind(SocketAddr::new(v6, 0)) {
            Ok(_) => v6,
            Err(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        };
        PortPool {
            free,
            bound: HashMap::new(),
            lent: std::collections::HashSet::new(),
            bind_ip,
            rcvbuf,
        }
    }

    pub fn capacity(&self) -> usize {
        self.free.len() + self.bound.len() + self.lent.len()
    }

    pub fn in_use(&self) -> usize {
        self.bound.len() + self.lent.len()
    }

    /// Hands an allocated pair's sockets to the media path. The port stays in use until
    /// [`PortPool::release`], which the caller makes only once the media thread closed them.
    pub fn take(&mut self, port: u16) -> Option<StreamSockets> {
        let sockets = self.bound.remove(&port)?;
        self.lent.insert(port);
        Some(sockets)
    }

    /// Binds the next free pair. Ports held by another process are skipped (and go to the back
    /// of the queue); `None` when no pair in the range can be bound.
    pub fn allocate(&mut self) -> Option<u16> {
        for _ in 0..self.free.len() {
            let port = self.free.pop_front()?;
            match self.bind_pair(port) {
                Ok(sockets) => {
                    self.bound.insert(port, sockets);
                    return Some(port);
                }
                Err(_) => self.free.push_back(port),
            }
        }
        None
    }

    fn bind_pair(&self, port: u16) -> io::Result<StreamSockets> {
        let rtp = UdpSocket::bind(SocketAddr::new(self.bind_ip, port))?;
        let rtcp = UdpSocket::bind(SocketAddr::new(self.bind_ip, port + 1))?;
        for s in [&rtp, &rtcp] {
            s.set_nonblocking(true)?;
            set_rcvbuf(s, self.rcvbuf);
        }
        Ok(StreamSockets { rtp, rtcp })
    }

    /// Closes the pair's sockets, then returns the port to the pool.
    pub fn release(&mut self, port: u16) {
        if let Some(sockets) = self.bound.remove(&port) {
            drop(sockets);
            self.free.push_back(port);
        } else if self.lent.remove(&port) {
            self.free.push_back(port);
        }
    }

    /// The sockets of an allocated port, for the media path.
    pub fn sockets(&self, port: u16) -> Option<&StreamSockets> {
        self.bound.get(&port)
    }
}

fn set_rcvbuf(socket: &UdpSocket, bytes: usize) {
    use std::os::fd::AsRawFd;
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a valid, live c_int; the fd is
    // owned by `socket` for the whole call. A failure only leaves the kernel default in place.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_range(len: u16) -> (u16, u16) {
        // Tests run in parallel: each call starts its search in its own stretch.
        use std::sync::atomic::{AtomicU16, Ordering};
        static NEXT: AtomicU16 = AtomicU16::new(0);
        let start = 20000
            + NEXT.fetch_add(1, Ordering::SeqCst) * 512
            + (std::process::id() % 64) as u16 * 64;
        for base in (start..32000).step_by(64) {
            let ok = (base..base + len).all(|p| UdpSocket::bind(("0.0.0.0", p)).is_ok());
            if ok {
                return (base, base + len - 1);
            }
        }
        panic!("no free UDP port block on this host");
    }

    #[test]
    fn allocates_even_rtp_port_with_rtcp_bound() {
        let (lo, hi) = free_range(8);
        let mut pool = PortPool::new(lo, hi, 65536);
        let port = pool.allocate().expect("a pair is free");
        assert_eq!(port % 2, 0);
        assert!(
            UdpSocket::bind(("0.0.0.0", port)).is_err(),
            "RTP port is held"
        );
        assert!(
            UdpSocket::bind(("0.0.0.0", port + 1)).is_err(),
            "RTCP port is held"
        );
    }

    #[test]
    fn released_port_is_closed_and_reused_last() {
        let (lo, hi) = free_range(8);
        let mut pool = PortPool::new(lo, hi, 65536);
        let a = pool.allocate().expect("free");
        pool.release(a);
        assert!(
            UdpSocket::bind(("0.0.0.0", a)).is_ok(),
            "socket closed on release"
        );
        let b = pool.allocate().expect("free");
        assert_ne!(a, b, "freed port goes to the back of the queue");
    }

    #[test]
    fn taken_port_stays_in_use_until_released() {
        let (lo, hi) = free_range(4);
        let mut pool = PortPool::new(lo, hi, 65536);
        let a = pool.allocate().expect("free");
        let sockets = pool.take(a).expect("bound");
        assert_eq!(pool.in_use(), 1);
        assert!(pool.take(a).is_none(), "taken once");
        drop(sockets);
        pool.release(a);
        assert_eq!(pool.in_use(), 0);
        assert_eq!(pool.capacity(), 2);
    }

    #[test]
    fn exhausted_pool_says_none() {
        let (lo, hi) = free_range(4);
        let mut pool = PortPool::new(lo, hi, 65536);
        assert!(pool.allocate().is_some());
        assert!(pool.allocate().is_some());
        assert_eq!(pool.allocate(), None);
    }

    #[test]
    fn a_new_pool_starts_at_a_random_place_and_still_covers_the_range() {
        let (lo, hi) = free_range(64);
        let firsts: std::collections::HashSet<u16> = (0..8)
            .map(|_| PortPool::new(lo, hi, 65536).free[0])
            .collect();
        // Eight pools all starting at the same one of 32 pairs: odds of 1 in 32^7.
        assert!(firsts.len() > 1, "{firsts:?}");
        let pool = PortPool::new(lo, hi, 65536);
        let mut all: Vec<u16> = pool.free.iter().copied().collect();
        all.sort();
        assert_eq!(all, (lo..hi).step_by(2).collect::<Vec<_>>());
    }

    #[test]
    fn port_taken_by_another_process_is_skipped() {
        let (lo, hi) = free_range(4);
        let _other = UdpSocket::bind(("0.0.0.0", lo + 1)).expect("bind");
        let mut pool = PortPool::new(lo, hi, 65536);
        assert_eq!(pool.allocate(), Some(lo + 2));
        assert_eq!(pool.allocate(), None);
    }
}
