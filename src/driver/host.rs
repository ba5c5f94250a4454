//! The real [`MediaHost`]: RTP ports from a [`PortPool`], and the address to advertise.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};

use crate::control::{MediaHost, PortPool};
use crate::sip::Flow;

pub struct Host {
    pub pool: PortPool,
    advertise: Option<IpAddr>,
    /// Remote IP -> our outgoing interface address (learned once per peer).
    routes: HashMap<IpAddr, IpAddr>,
}

impl Host {
    pub fn new(pool: PortPool, advertise: Option<IpAddr>) -> Host {
        Host {
            pool,
            advertise,
            routes: HashMap::new(),
        }
    }
}

impl MediaHost for Host {
    fn allocate_port(&mut self) -> Option<u16> {
        self.pool.allocate()
    }

    fn release_port(&mut self, port: u16) {
        self.pool.release(port)
    }

    fn start_stream(&mut self, _port: u16, _spec: crate::control::recorder::MediaSpec) {}

    fn media_ip(&mut self, flow: &Flow) -> IpAddr {
        if let Some(ip) = self.advertise {
            return ip;
        }
        let local = unmap(flow.local.ip());
        if !local.is_unspecified() {
            return local;
        }
        let remote = unmap(flow.remote.ip());
        if let Some(ip) = self.routes.get(&remote) {
            return *ip;
        }
        // A wildcard listener does not say which address the request came to: ask the kernel
        // which source address it would use towards the sender (connect sends nothing).
        let ip = route_source(remote).unwrap_or(match remote {
            IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        });
        if self.routes.len() > 10_000 {
            self.routes.clear();
        }
        self.routes.insert(remote, ip);
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

    fn flow(local: &str, remote: &str) -> Flow {
        Flow {
            transport: Transport::Udp,
            local: local.parse().expect("addr"),
            remote: remote.parse().expect("addr"),
            conn: None,
        }
    }

    #[test]
    fn specific_listener_address_is_advertised() {
        let mut h = Host::new(PortPool::new(50000, 50001, 0), None);
        assert_eq!(
            h.media_ip(&flow("127.0.0.2:5060", "127.0.0.1:5070"))
                .to_string(),
            "127.0.0.2"
        );
    }

    #[test]
    fn wildcard_listener_uses_route_towards_sender() {
        let mut h = Host::new(PortPool::new(50000, 50001, 0), None);
        let ip = h.media_ip(&flow("0.0.0.0:5060", "127.0.0.1:5070"));
        assert!(ip.is_loopback(), "{ip}");
    }

    #[test]
    fn configured_advertise_ip_wins() {
        let mut h = Host::new(PortPool::new(50000, 50001, 0), "192.0.2.7".parse().ok());
        assert_eq!(
            h.media_ip(&flow("0.0.0.0:5060", "127.0.0.1:5070"))
                .to_string(),
            "192.0.2.7"
        );
    }
}
