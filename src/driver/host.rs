//! The real [`MediaHost`]: RTP ports from a [`PortPool`], streams handed to media threads, and
//! the address to advertise. Shared (`Rc<RefCell>`) between the recorder, which calls it, and
//! the control loop, which hears when a media thread closed a stream's sockets.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::rc::Rc;

use crate::control::recorder::MediaSpec;
use crate::control::{MediaHost, PortPool};
use crate::media::worker::{MediaCommand, StreamConfig, StreamUpdate};
use crate::sip::Flow;

use super::media::MediaThread;

pub struct HostState {
    pub pool: PortPool,
    advertise: Option<IpAddr>,
    /// Remote IP -> our outgoing interface address (learned once per peer).
    routes: HashMap<IpAddr, IpAddr>,
    pub media: Vec<MediaThread>,
    latch: bool,
    next_key: u64,
    /// Port -> (stream key, media thread) for streams being recorded.
    started: HashMap<u16, (u64, usize)>,
    /// Stream key -> port, for streams whose media thread has not closed the sockets yet.
    closing: HashMap<u64, u16>,
    /// TPROXY mode: which media thread receives which ports.
    split: Option<PortSplit>,
}

/// TPROXY mode's division of the RTP port range among media threads: contiguous runs of
/// whole RTP/RTCP pairs, one run per thread, so one nftables rule per thread sends a run to
/// that thread's socket and a stream's RTCP goes where its RTP goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortSplit {
    first: u16,
    pairs: usize,
    threads: usize,
}

impl PortSplit {
    /// The even ports of `lo..hi` as the [`PortPool`] hands them out, over `threads`.
    pub fn new(lo: u16, hi: u16, threads: usize) -> PortSplit {
        let first = crate::control::ports::first_rtp_port(lo);
        PortSplit {
            first,
            pairs: (first..hi).step_by(2).count().max(1),
            threads: threads.max(1),
        }
    }

    /// The media thread that receives RTP port `port` (and `port + 1`).
    pub fn thread_of(&self, port: u16) -> usize {
        let pair = usize::from(port.saturating_sub(self.first)) / 2;
        (pair.min(self.pairs - 1) * self.threads / self.pairs).min(self.threads - 1)
    }

    /// Per media thread, the nftables rule that sends its ports to its socket at
    /// `tproxy_port + thread` (table `inet reel`, chain `prerouting`), as `nft` arguments.
    pub fn nft_rules(&self, tproxy_port: u16) -> Vec<String> {
        self.ranges()
            .into_iter()
            .enumerate()
            .map(|(i, (a, b))| {
                format!(
                    "add rule inet reel prerouting udp dport {a}-{b} tproxy ip to :{}",
                    usize::from(tproxy_port) + i
                )
            })
            .collect()
    }

    /// Per thread, the first RTP port and the last RTCP port it receives.
    pub fn ranges(&self) -> Vec<(u16, u16)> {
        (0..self.threads)
            .map(|i| {
                let a = (i * self.pairs).div_ceil(self.threads);
                let b = ((i + 1) * self.pairs).div_ceil(self.threads);
                let port = |pair: usize| self.first as usize + 2 * pair;
                (
                    port(a) as u16,
                    (port(b).saturating_sub(1)).min(65535) as u16,
                )
            })
            .filter(|(a, b)| a <= b)
            .collect()
    }
}

#[derive(Clone)]
pub struct Host(pub Rc<RefCell<HostState>>);

impl Host {
    pub fn new(
        pool: PortPool,
        advertise: Option<IpAddr>,
        media: Vec<MediaThread>,
        latch: bool,
    ) -> Host {
        Host(Rc::new(RefCell::new(HostState {
            pool,
            advertise,
            routes: HashMap::new(),
            media,
            latch,
            next_key: 1,
            started: HashMap::new(),
            closing: HashMap::new(),
            split: None,
        })))
    }

    /// TPROXY mode: a stream goes to the thread whose socket receives its port.
    pub fn with_split(self, split: Option<PortSplit>) -> Host {
        self.0.borrow_mut().split = split;
        self
    }

    /// Holds `ports` (the last run's) out of the pool while RTP reaches them; how many pairs.
    pub fn cool(&self, ports: &[u16], now: std::time::Instant) -> usize {
        self.0
            .borrow_mut()
            .pool
            .cool(ports, now, crate::control::ports::COOL_QUIET)
    }

    /// Gives back the held-back ports that went quiet (per-stream sockets drained here; in
    /// TPROXY mode the media threads count what reached their shared sockets).
    pub fn check_cooling(&self, now: std::time::Instant) -> Vec<u16> {
        let mut h = self.0.borrow_mut();
        if h.pool.cooling() == 0 {
            return Vec::new();
        }
        let activity = h.media.first().and_then(|t| t.activity.clone());
        h.pool.check_cooling(now, activity.as_deref())
    }

    /// A media thread closed a stream's sockets: its port may be reused.
    pub fn stream_closed(&self, key: u64) {
        let mut h = self.0.borrow_mut();
        if let Some(port) = h.closing.remove(&key) {
            h.pool.release(port);
        }
    }
}

impl MediaHost for Host {
    fn allocate_port(&mut self) -> Option<u16> {
        self.0.borrow_mut().pool.allocate()
    }

    fn release_port(&mut self, port: u16) {
        let mut h = self.0.borrow_mut();
        match h.started.remove(&port) {
            Some((key, thread)) => {
                h.closing.insert(key, port);
                if let Some(t) = h.media.get(thread) {
                    t.send(MediaCommand::Remove { key });
                }
            }
            None => h.pool.release(port),
        }
    }

    fn start_stream(&mut self, port: u16, spec: MediaSpec) {
        let mut h = self.0.borrow_mut();
        if h.media.is_empty() {
            return;
        }
        let Some(sockets) = h.pool.take(port) else {
            return;
        };
        let key = h.next_key;
        h.next_key += 1;
        // Streams of one session go to one thread, so its end records arrive in one ring;
        // in TPROXY mode the port decides (the writer waits for every stream's end record,
        // whichever ring brings it).
        let thread = match h.split {
            Some(split) => split.thread_of(port).min(h.media.len() - 1),
            None => (spec.session.0 % h.media.len() as u64) as usize,
        };
        let cfg = StreamConfig {
            key,
            recording: spec.session.0 as u32,
            mline: spec.mline,
            rtp: sockets.rtp,
            rtcp: Some(sockets.rtcp),
            payload_type: spec.payload_type,
            event_pt: spec.event_pt,
            srtp: spec.srtp,
            source: spec.source,
            latch: h.latch,
        };
        h.started.insert(port, (key, thread));
        h.media[thread].send(MediaCommand::Add(Box::new(cfg)));
    }

    fn update_stream(&mut self, port: u16, spec: MediaSpec, relearn: bool) {
        let h = self.0.borrow();
        let Some(&(key, thread)) = h.started.get(&port) else {
            return;
        };
        if let Some(t) = h.media.get(thread) {
            t.send(MediaCommand::Update(Box::new(StreamUpdate {
                key,
                payload_type: spec.payload_type,
                event_pt: spec.event_pt,
                srtp: spec.srtp,
                source: spec.source,
                relearn,
            })));
        }
    }

    fn media_ip(&mut self, flow: &Flow) -> IpAddr {
        let mut h = self.0.borrow_mut();
        if let Some(ip) = h.advertise {
            return ip;
        }
        let local = unmap(flow.local.ip());
        if !local.is_unspecified() {
            return local;
        }
        let remote = unmap(flow.remote.ip());
        if let Some(ip) = h.routes.get(&remote) {
            return *ip;
        }
        // A wildcard listener does not say which address the request came to: ask the kernel
        // which source address it would use towards the sender (connect sends nothing).
        let ip = route_source(remote).unwrap_or(match remote {
            IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        });
        if h.routes.len() > 10_000 {
            h.routes.clear();
        }
        h.routes.insert(remote, ip);
        ip
    }
}

fn route_source(remote: IpAddr) -> Option<IpAddr> {
    let bind: SocketAddr = match remote {
        IpAddr::V4(_) => "0.0.0.0:0".parse().ok()?,
        IpAddr::V6(_) => "[::]:0".parse().ok()?,
    };
    let s = UdpSocket::bind(bind).ok()?;
    s.connect(SocketAddr::new(remote, 9)).ok()?;
    Some(unmap(s.local_addr().ok()?.ip()))
}

fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::Transport;

    #[test]
    fn port_split_rules_cover_each_pair_once_and_match_thread_of() {
        for (lo, hi, threads) in [(20000, 29999, 1), (20000, 29999, 3), (20001, 20010, 4)] {
            let split = PortSplit::new(lo, hi, threads);
            let ranges = split.ranges();
            let pool_ports: Vec<u16> = (split.first..hi).step_by(2).collect();
            for &p in &pool_ports {
                let owners: Vec<usize> = ranges
                    .iter()
                    .enumerate()
                    .filter(|(_, (a, b))| (*a..=*b).contains(&p) && (*a..=*b).contains(&(p + 1)))
                    .map(|(i, _)| i)
                    .collect();
                assert_eq!(
                    owners,
                    vec![split.thread_of(p)],
                    "port {p} of {lo}-{hi}/{threads}"
                );
            }
        }
        // Three threads split 5,000 pairs into contiguous runs.
        let r = PortSplit::new(20000, 29999, 3).ranges();
        assert_eq!(r, vec![(20000, 23333), (23334, 26667), (26668, 29999)]);
    }

    fn flow(local: &str, remote: &str) -> Flow {
        Flow {
            transport: Transport::Udp,
            local: local.parse().expect("addr"),
            remote: remote.parse().expect("addr"),
            conn: None,
        }
    }

    fn host(advertise: Option<IpAddr>) -> Host {
        Host::new(PortPool::new(50000, 50001, 0), advertise, Vec::new(), true)
    }

    #[test]
    fn specific_listener_address_is_advertised() {
        let mut h = host(None);
        assert_eq!(
            h.media_ip(&flow("127.0.0.2:5060", "127.0.0.1:5070"))
                .to_string(),
            "127.0.0.2"
        );
    }

    #[test]
    fn wildcard_listener_uses_route_towards_sender() {
        let mut h = host(None);
        let ip = h.media_ip(&flow("0.0.0.0:5060", "127.0.0.1:5070"));
        assert!(ip.is_loopback(), "{ip}");
    }

    #[test]
    fn configured_advertise_ip_wins() {
        let mut h = host("192.0.2.7".parse().ok());
        assert_eq!(
            h.media_ip(&flow("0.0.0.0:5060", "127.0.0.1:5070"))
                .to_string(),
            "192.0.2.7"
        );
    }
}
