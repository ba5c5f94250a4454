//! A real authoritative DNS server on loopback for tests: `hickory-server` on an ephemeral
//! 127.0.0.1 port (UDP and TCP on the same port), serving one zone built in code. The zone's
//! records can be replaced while it runs (TTL and failover tests), and every query it receives
//! is logged so a test can tell what the client asked. It runs on a thread of its own with its
//! own runtime, so sync and async tests alike can use it; it stops when dropped.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_server::Server;
use hickory_server::net::runtime::{Time, TokioRuntimeProvider};
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::rr::rdata::{A, AAAA, SOA, SRV};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};

fn name(n: &str) -> Name {
    let mut name = Name::from_ascii(n).unwrap_or_else(|e| panic!("test zone name {n:?}: {e}"));
    name.set_fqdn(true);
    name
}

/// `name TTL IN SRV priority weight port target`.
pub fn srv(owner: &str, ttl: u32, priority: u16, weight: u16, port: u16, target: &str) -> Record {
    Record::from_rdata(
        name(owner),
        ttl,
        RData::SRV(SRV::new(priority, weight, port, name(target))),
    )
}

/// `name TTL IN A ip`.
pub fn a(owner: &str, ttl: u32, ip: Ipv4Addr) -> Record {
    Record::from_rdata(name(owner), ttl, RData::A(A(ip)))
}

/// `name TTL IN AAAA ip`.
pub fn aaaa(owner: &str, ttl: u32, ip: Ipv6Addr) -> Record {
    Record::from_rdata(name(owner), ttl, RData::AAAA(AAAA(ip)))
}

/// One query as the server saw it: lower-case name with the trailing dot, its type, and
/// whether it came over TCP (after a truncated UDP answer) rather than UDP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryLog {
    pub name: String,
    pub kind: RecordType,
    pub tcp: bool,
}

/// Answers from whichever catalog is current; `set_records` swaps in a new one.
struct SwappableZone {
    catalog: Arc<RwLock<Arc<Catalog>>>,
    log: Arc<Mutex<Vec<QueryLog>>>,
}

#[async_trait::async_trait]
impl RequestHandler for SwappableZone {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        if let Ok(info) = request.request_info() {
            let entry = QueryLog {
                name: info.query.name().to_string(),
                kind: info.query.query_type(),
                tcp: info.protocol == Protocol::Tcp,
            };
            self.log
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(entry);
        }
        let catalog = current(&self.catalog);
        catalog
            .handle_request::<R, T>(request, response_handle)
            .await
    }
}

fn current(c: &RwLock<Arc<Catalog>>) -> Arc<Catalog> {
    Arc::clone(&c.read().unwrap_or_else(|p| p.into_inner()))
}

/// The zone `origin` holding `records` (plus its SOA, negative TTL 1 s).
fn build_catalog(origin: &str, records: Vec<Record>) -> Catalog {
    let origin = name(origin);
    let mut zone = InMemoryZoneHandler::<TokioRuntimeProvider>::empty(
        origin.clone(),
        ZoneType::Primary,
        AxfrPolicy::Deny,
    );
    let soa = SOA::new(
        name(&format!("ns.{origin}")),
        name(&format!("hostmaster.{origin}")),
        1,
        3600,
        600,
        86_400,
        1,
    );
    assert!(
        zone.upsert_mut(Record::from_rdata(origin.clone(), 1, RData::SOA(soa)), 1),
        "SOA into test zone"
    );
    for r in records {
        let shown = format!("{r:?}");
        assert!(zone.upsert_mut(r, 1), "record into test zone: {shown}");
    }
    let mut catalog = Catalog::new();
    catalog.upsert(LowerName::new(&origin), vec![Arc::new(zone)]);
    catalog
}

/// The running server. `addr` is where it listens, UDP and TCP.
pub struct DnsServer {
    pub addr: SocketAddr,
    origin: String,
    catalog: Arc<RwLock<Arc<Catalog>>>,
    log: Arc<Mutex<Vec<QueryLog>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl DnsServer {
    /// Serves zone `origin` (e.g. "rec.example") with `records` on 127.0.0.1.
    pub fn start(origin: &str, records: Vec<Record>) -> DnsServer {
        let (udp, tcp) = bind_same_port();
        let addr = udp.local_addr().expect("bound UDP socket has an address");
        let catalog = Arc::new(RwLock::new(Arc::new(build_catalog(origin, records))));
        let log = Arc::new(Mutex::new(Vec::new()));
        let handler = SwappableZone {
            catalog: Arc::clone(&catalog),
            log: Arc::clone(&log),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("test-dns".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("test DNS runtime");
                rt.block_on(async move {
                    let mut server = Server::new(handler);
                    server.register_socket(
                        tokio::net::UdpSocket::from_std(udp).expect("UDP socket into tokio"),
                    );
                    server.register_listener(
                        tokio::net::TcpListener::from_std(tcp).expect("TCP listener into tokio"),
                        Duration::from_secs(5),
                        32,
                    );
                    let _ = ready_tx.send(());
                    // Either a stop order or the owner vanished: both mean stop.
                    let _ = stopped.await;
                    server.shutdown_token().cancel();
                });
                // Dropping the runtime ends the listener tasks and closes the sockets.
            })
            .expect("spawn test DNS thread");
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("test DNS server started");
        DnsServer {
            addr,
            origin: origin.to_string(),
            catalog,
            log,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Replaces every record of the zone at once; queries after this see only `records`.
    pub fn set_records(&self, records: Vec<Record>) {
        let fresh = Arc::new(build_catalog(&self.origin, records));
        *self.catalog.write().unwrap_or_else(|p| p.into_inner()) = fresh;
    }

    /// Queries received so far, oldest first.
    pub fn queries(&self) -> Vec<QueryLog> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A UDP socket and a TCP listener on the same ephemeral loopback port (a few tries: the port
/// the kernel gave for UDP may be taken for TCP).
fn bind_same_port() -> (UdpSocket, TcpListener) {
    for _ in 0..20 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind loopback UDP");
        let addr = udp.local_addr().expect("bound UDP socket has an address");
        if let Ok(tcp) = TcpListener::bind(addr) {
            udp.set_nonblocking(true).expect("nonblocking UDP");
            tcp.set_nonblocking(true).expect("nonblocking TCP");
            return (udp, tcp);
        }
    }
    panic!("no loopback port free for both UDP and TCP after 20 tries");
}

/// A UDP socket that reads queries and never answers, for timeout tests. Kept open (so the
/// client sees silence, not ICMP port unreachable) until dropped.
pub struct SilentServer {
    pub addr: SocketAddr,
    _socket: UdpSocket,
    _tcp: TcpListener,
}

impl SilentServer {
    pub fn start() -> SilentServer {
        let (udp, tcp) = bind_same_port();
        SilentServer {
            addr: udp.local_addr().expect("bound UDP socket has an address"),
            _socket: udp,
            _tcp: tcp,
        }
    }
}
