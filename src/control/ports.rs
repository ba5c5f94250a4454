//! RTP port allocation: an even RTP port and RTP+1 for RTCP, both bound at once, so the SRC
//! finds open ports as soon as it has the answer. A port returns to the pool only after its
//! sockets are closed, and the pool hands ports out oldest-freed first so late packets of an
//! ended call do not land in a new one.
//!
//! After a crash the SRCs of the calls that were up do not know it: they go on sending RTP
//! to the ports the dead process answered with, until a session refresh, an in-dialog OPTIONS
//! (now 481) or the call's end tells them. A new call given such a port would record another
//! call's audio. So a restart holds those ports (from the spooled `session.json`s) out of the
//! pool, bound, and gives each back only once no datagram reached it for [`COOL_QUIET`]
//! ([`PortPool::cool`], [`PortPool::check_cooling`]).

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::media::worker::PortActivity;

/// How long a held-back port pair must stay quiet before it returns to the pool: longer than
/// the pauses of a live stream (comfort-noise gaps, short holds), short enough that the ports
/// come back soon after the last run's SRCs noticed.
pub const COOL_QUIET: Duration = Duration::from_secs(60);

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
    /// Held back: the last run's ports that may still receive its calls' RTP.
    cooling: HashMap<u16, Cooling>,
    quiet: Duration,
    bind_ip: IpAddr,
    rcvbuf: usize,
}

/// A held-back port pair, bound with the smallest receive buffer so that what arrives costs
/// little and one drain tells whether anything came since the last.
struct Cooling {
    /// `None` while the pair cannot be bound yet: right after a kill -9 the dead process's
    /// io_uring may still hold its sockets for a moment (the kernel tears a ring down after
    /// the process is reaped). Bound at a later check; one still unbindable a quiet time
    /// after the hold began goes back to the pool (whose allocation skips what another
    /// process holds).
    sockets: Option<StreamSockets>,
    /// When a datagram was last seen (or the hold began).
    busy_at: Instant,
    /// TPROXY mode: the media threads' unrouted count for the pair when last checked.
    seen: u32,
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
            cooling: HashMap::new(),
            quiet: COOL_QUIET,
            bind_ip,
            rcvbuf,
        }
    }

    pub fn capacity(&self) -> usize {
        self.free.len() + self.bound.len() + self.lent.len() + self.cooling.len()
    }

    /// Port pairs held back while the last run's RTP may still arrive on them.
    pub fn cooling(&self) -> usize {
        self.cooling.len()
    }

    /// Holds `ports` (the RTP ports of the last run's unfinished calls) out of the pool until
    /// no datagram reached them for `quiet` (see [`PortPool::check_cooling`]). Ports outside
    /// the range are left alone; one that cannot be bound yet is held all the same and bound
    /// at a later check. Returns how many pairs are held.
    pub fn cool(&mut self, ports: &[u16], now: Instant, quiet: Duration) -> usize {
        self.quiet = quiet;
        for &port in ports {
            let Some(at) = self.free.iter().position(|&p| p == port) else {
                continue;
            };
            self.free.remove(at);
            self.cooling.insert(
                port,
                Cooling {
                    // 0 asks for the kernel's smallest buffer (a few datagrams).
                    sockets: bind_pair(self.bind_ip, port, 0).ok(),
                    busy_at: now,
                    seen: 0,
                },
            );
        }
        self.cooling.len()
    }

    /// Drains the held-back pairs and gives back (to the end of the queue) each that nothing
    /// reached for the quiet time: nothing on its own sockets (per-stream sockets) and no
    /// change in `activity`, the media threads' count of datagrams with nowhere to go (TPROXY
    /// mode, where its own sockets see nothing). Returns the ports given back.
    pub fn check_cooling(&mut self, now: Instant, activity: Option<&PortActivity>) -> Vec<u16> {
        let mut back = Vec::new();
        for (&port, c) in self.cooling.iter_mut() {
            if c.sockets.is_none() {
                c.sockets = bind_pair(self.bind_ip, port, 0).ok();
            }
            let Some(sockets) = c.sockets.as_ref() else {
                // Still held elsewhere: nothing can be told of its traffic (and `busy_at` is
                // still when the hold began).
                if now.saturating_duration_since(c.busy_at) >= self.quiet {
                    back.push(port);
                }
                continue;
            };
            let mut busy = drain(&sockets.rtp) | drain(&sockets.rtcp);
            if let Some(a) = activity {
                let seen = a.get(port).wrapping_add(a.get(port.wrapping_add(1)));
                busy |= seen != c.seen;
                c.seen = seen;
            }
            if busy {
                c.busy_at = now;
            } else if now.saturating_duration_since(c.busy_at) >= self.quiet {
                back.push(port);
            }
        }
        back.sort_unstable();
        for &port in &back {
            self.cooling.remove(&port);
            self.free.push_back(port);
        }
        back
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
    /// Only when every other pair is in use does a held-back pair go out, the one quiet the
    /// longest: a call recorded with a risk of stray RTP beats a call refused.
    pub fn allocate(&mut self) -> Option<u16> {
        for _ in 0..self.free.len() {
            let port = self.free.pop_front()?;
            match bind_pair(self.bind_ip, port, self.rcvbuf) {
                Ok(sockets) => {
                    self.bound.insert(port, sockets);
                    return Some(port);
                }
                Err(_) => self.free.push_back(port),
            }
        }
        let port = self
            .cooling
            .iter()
            .min_by_key(|(port, c)| (c.busy_at, **port))
            .map(|(port, _)| *port)?;
        // Closed first: the new pair binds the same ports.
        self.cooling.remove(&port);
        tracing::warn!(
            port,
            "RTP ports exhausted: handing out a port held back since the restart; RTP of the \
             last run's call may still reach it (latching keeps the first source)"
        );
        match bind_pair(self.bind_ip, port, self.rcvbuf) {
            Ok(sockets) => {
                self.bound.insert(port, sockets);
                Some(port)
            }
            Err(_) => {
                self.free.push_back(port);
                None
            }
        }
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

fn bind_pair(ip: IpAddr, port: u16, rcvbuf: usize) -> io::Result<StreamSockets> {
    let rtp = UdpSocket::bind(SocketAddr::new(ip, port))?;
    let rtcp = UdpSocket::bind(SocketAddr::new(ip, port + 1))?;
    for s in [&rtp, &rtcp] {
        s.set_nonblocking(true)?;
        set_rcvbuf(s, rcvbuf);
    }
    Ok(StreamSockets { rtp, rtcp })
}

/// Reads what waits on `socket`; whether anything did. Bounded: a flood cannot hold the
/// control thread here (its smallest receive buffer holds a few datagrams anyway).
fn drain(socket: &UdpSocket) -> bool {
    let mut buf = [0u8; 2048];
    let mut any = false;
    for _ in 0..64 {
        match socket.recv(&mut buf) {
            Ok(_) => any = true,
            Err(_) => break,
        }
    }
    any
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
    fn held_back_ports_stay_out_while_rtp_reaches_them_and_come_back_once_quiet() {
        let (lo, hi) = free_range(8);
        let mut pool = PortPool::new(lo, hi, 65536);
        let t0 = Instant::now();
        let quiet = Duration::from_secs(60);
        // lo + 100: outside the range, left alone.
        assert_eq!(pool.cool(&[lo, lo + 2, lo + 100], t0, quiet), 2);
        assert_eq!(pool.capacity(), 4);
        assert!(
            UdpSocket::bind(("0.0.0.0", lo)).is_err(),
            "a held pair stays bound"
        );
        let mut given = [pool.allocate(), pool.allocate()];
        given.sort();
        assert_eq!(
            given,
            [Some(lo + 4), Some(lo + 6)],
            "held pairs are not handed out"
        );

        let src = UdpSocket::bind(("127.0.0.1", 0)).expect("bind");
        let to = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        src.send_to(&[0x80; 172], to(lo)).expect("send");
        src.send_to(&[0x80; 80], to(lo + 3)).expect("send"); // RTCP of lo + 2
        std::thread::sleep(Duration::from_millis(50));
        // Traffic on both: each stays held, its quiet time restarted.
        assert!(pool.check_cooling(t0 + quiet, None).is_empty());
        src.send_to(&[0x80; 172], to(lo)).expect("send");
        std::thread::sleep(Duration::from_millis(50));
        let later = t0 + quiet + Duration::from_secs(1);
        assert!(
            pool.check_cooling(later, None).is_empty(),
            "lo got RTP again"
        );
        // lo + 2 quiet for a whole quiet time since the RTCP: back; lo not yet.
        let back = pool.check_cooling(t0 + 2 * quiet, None);
        assert_eq!(back, vec![lo + 2]);
        assert_eq!(pool.cooling(), 1);
        assert_eq!(pool.allocate(), Some(lo + 2));
        assert!(pool.check_cooling(later + quiet, None) == vec![lo]);
        assert_eq!(pool.cooling(), 0);
        assert_eq!(pool.capacity(), 4);
        assert_eq!(pool.allocate(), Some(lo));
    }

    #[test]
    fn a_held_pair_the_dead_process_still_holds_is_held_and_bound_once_it_lets_go() {
        let (lo, hi) = free_range(6);
        let mut pool = PortPool::new(lo, hi, 65536);
        let t0 = Instant::now();
        let quiet = Duration::from_secs(60);
        // The last run's sockets, not yet released (a dying io_uring), on lo and lo + 2.
        let ip = pool.bind_ip;
        let dying = bind_pair(ip, lo, 0).expect("bind");
        let other = bind_pair(ip, lo + 2, 0).expect("bind");
        assert_eq!(
            pool.cool(&[lo, lo + 2], t0, quiet),
            2,
            "held although unbindable"
        );
        assert_eq!(pool.allocate(), Some(lo + 4), "neither is handed out");
        drop(dying);
        // The next check binds lo: it is held from then on (RTP may still reach it).
        assert!(
            pool.check_cooling(t0 + Duration::from_secs(1), None)
                .is_empty()
        );
        assert!(bind_pair(ip, lo, 0).is_err(), "bound by the pool now");
        // lo + 2 never comes free: back to the pool after the quiet time, like lo.
        let back = pool.check_cooling(t0 + quiet + Duration::from_secs(1), None);
        assert_eq!(back, vec![lo, lo + 2]);
        drop(other);
        assert_eq!(pool.cooling(), 0);
    }

    #[test]
    fn in_tproxy_mode_the_media_threads_count_tells_a_held_port_is_busy() {
        let (lo, hi) = free_range(4);
        let mut pool = PortPool::new(lo, hi, 65536);
        let t0 = Instant::now();
        let quiet = Duration::from_secs(60);
        pool.cool(&[lo, lo + 2], t0, quiet);
        let activity = PortActivity::new();
        // Datagrams to lo's RTCP port reached a shared socket; its own sockets saw nothing.
        activity.bump(lo + 1);
        assert!(
            pool.check_cooling(t0 + quiet / 2, Some(&activity))
                .is_empty()
        );
        let back = pool.check_cooling(t0 + quiet, Some(&activity));
        assert_eq!(back, vec![lo + 2], "lo was busy at the half");
        activity.bump(lo);
        assert!(
            pool.check_cooling(t0 + quiet + quiet / 2, Some(&activity))
                .is_empty(),
            "busy again"
        );
        // No change since: quiet for a whole quiet time.
        assert_eq!(
            pool.check_cooling(t0 + 2 * quiet + quiet / 2, Some(&activity)),
            vec![lo]
        );
    }

    #[test]
    fn with_every_other_pair_in_use_a_held_back_pair_goes_out_quietest_first() {
        let (lo, hi) = free_range(4);
        let mut pool = PortPool::new(lo, hi, 65536);
        let t0 = Instant::now();
        let quiet = Duration::from_secs(60);
        pool.cool(&[lo, lo + 2], t0, quiet);
        let src = UdpSocket::bind(("127.0.0.1", 0)).expect("bind");
        src.send_to(&[0x80; 172], ("127.0.0.1", lo)).expect("send");
        std::thread::sleep(Duration::from_millis(50));
        pool.check_cooling(t0 + Duration::from_secs(5), None);
        assert_eq!(pool.allocate(), Some(lo + 2), "quiet since the hold began");
        assert_eq!(pool.allocate(), Some(lo));
        assert_eq!(pool.allocate(), None);
        assert_eq!(pool.in_use(), 2);
        assert_eq!(pool.cooling(), 0);
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
