//! `SrvResolver` against a real authoritative DNS server on loopback (tests/common/dns.rs):
//! records, addresses and ports, RFC 2782 order from a real answer, TTL honouring, the error
//! cases, and the blocking entry point from a plain thread.

mod common;

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::dns::{DnsServer, SilentServer, a, aaaa, srv};
use hickory_server::proto::rr::RecordType;
use rand::SeedableRng;
use rand::rngs::StdRng;
use reel::srv::resolve::{MAX_TTL, MIN_TTL};
use reel::srv::{HoldDown, Resolved, Selector, SrvError, SrvRecord, SrvResolver};

const ZONE: &str = "rec.example";
const SIP: &str = "_sip._udp.rec.example";

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

fn sa(last: u8, port: u16) -> SocketAddr {
    SocketAddr::from((ip(last), port))
}

fn resolver(server: &DnsServer) -> SrvResolver {
    SrvResolver::new(Some(server.addr)).expect("resolver for a given server")
}

fn selector(r: Resolved) -> Selector {
    Selector::new(r, HoldDown::new(Duration::from_secs(30)))
}

/// A lookup between `asked` and `answered` whose answer lives `ttl` expires in
/// `asked + ttl ..= answered + ttl` (the clock starts when the query goes out).
fn assert_lives(asked: Instant, answered: Instant, expires: Instant, ttl: Duration) {
    assert!(
        expires >= asked + ttl && expires <= answered + ttl,
        "expires {:?} after the query, want {ttl:?} (lookup took {:?})",
        expires.saturating_duration_since(asked),
        answered - asked
    );
}

/// Two priority-10 targets (one dual-stack) and a priority-20 backup, each on its own port.
fn three_targets(ttl: u32) -> Vec<hickory_server::proto::rr::Record> {
    vec![
        srv(SIP, ttl, 10, 60, 5060, "a.rec.example"),
        srv(SIP, ttl, 10, 40, 5070, "b.rec.example"),
        srv(SIP, ttl, 20, 0, 5080, "c.rec.example"),
        a("a.rec.example", ttl, ip(11)),
        a("b.rec.example", ttl, ip(12)),
        aaaa("b.rec.example", ttl, Ipv6Addr::LOCALHOST),
        a("c.rec.example", ttl, ip(13)),
    ]
}

#[tokio::test(flavor = "current_thread")]
async fn records_and_addresses_come_back_with_ports_applied() {
    let server = DnsServer::start(ZONE, three_targets(60));
    let got = resolver(&server)
        .lookup(SIP)
        .await
        .expect("SRV lookup succeeds");

    let mut records = got.records.clone();
    records.sort_by_key(|r| r.port);
    assert_eq!(
        records,
        vec![
            SrvRecord::new(10, 60, 5060, "a.rec.example"),
            SrvRecord::new(10, 40, 5070, "b.rec.example"),
            SrvRecord::new(20, 0, 5080, "c.rec.example"),
        ]
    );
    let mut addrs = got.addrs.clone();
    for v in addrs.values_mut() {
        v.sort();
    }
    let b6 = SocketAddr::from((Ipv6Addr::LOCALHOST, 5070));
    assert_eq!(
        addrs,
        HashMap::from([
            ("a.rec.example".to_string(), vec![sa(11, 5060)]),
            ("b.rec.example".to_string(), vec![sa(12, 5070), b6]),
            ("c.rec.example".to_string(), vec![sa(13, 5080)]),
        ])
    );
}

#[tokio::test(flavor = "current_thread")]
async fn rfc2782_order_drawn_from_a_real_answer_follows_priority_and_weight() {
    let server = DnsServer::start(ZONE, three_targets(60));
    let got = resolver(&server).lookup(SIP).await.expect("SRV lookup");
    let s = selector(got);
    let mut rng = StdRng::seed_from_u64(2782);
    let now = Instant::now();
    let mut a_first = 0;
    for _ in 0..2000 {
        let c = s.candidates(now, &mut rng);
        assert_eq!(c.len(), 4, "every address once: {c:?}");
        assert_eq!(c[3], sa(13, 5080), "the priority-20 backup is always last");
        match c[0] {
            x if x == sa(11, 5060) => a_first += 1,
            x if x.port() == 5070 => {}
            other => panic!("unexpected first choice {other}"),
        }
    }
    // Weights 60/40: about 1200/800 of 2000.
    assert!(
        (1080..=1320).contains(&a_first),
        "a first {a_first} of 2000"
    );
}

#[test]
fn ttl_is_honoured_a_changed_record_is_seen_after_its_ttl() {
    let server = DnsServer::start(ZONE, three_targets(2));
    let r = resolver(&server);
    let asked = Instant::now();
    let first = r.lookup_blocking(SIP).expect("first lookup");
    assert_lives(asked, Instant::now(), first.expires, Duration::from_secs(2));
    let mut s = selector(first);

    // The recorder moves: new target, new address, new port.
    server.set_records(vec![
        srv(SIP, 2, 10, 10, 6060, "new.rec.example"),
        a("new.rec.example", 2, ip(42)),
    ]);
    assert!(!s.needs_refresh(Instant::now()), "TTL not yet run out");

    let wait = s
        .resolved()
        .expires
        .saturating_duration_since(Instant::now());
    std::thread::sleep(wait + Duration::from_millis(50));
    assert!(s.needs_refresh(Instant::now()), "TTL ran out");
    s.update(r.lookup_blocking(SIP).expect("lookup after the TTL"));
    let mut rng = StdRng::seed_from_u64(1);
    assert_eq!(s.candidates(Instant::now(), &mut rng), vec![sa(42, 6060)]);
}

#[test]
fn ttl_of_the_answer_is_the_smallest_used_and_capped() {
    // The address TTL is smaller than the SRV TTL: it decides.
    let server = DnsServer::start(
        ZONE,
        vec![
            srv(SIP, 300, 10, 10, 5060, "a.rec.example"),
            a("a.rec.example", 7, ip(11)),
        ],
    );
    let asked = Instant::now();
    let got = resolver(&server).lookup_blocking(SIP).expect("lookup");
    assert_lives(asked, Instant::now(), got.expires, Duration::from_secs(7));

    // A week-long TTL is capped; a TTL of 0 is floored.
    server.set_records(vec![
        srv(SIP, 604_800, 10, 10, 5060, "a.rec.example"),
        a("a.rec.example", 604_800, ip(11)),
    ]);
    let asked = Instant::now();
    let got = resolver(&server).lookup_blocking(SIP).expect("lookup");
    assert_lives(asked, Instant::now(), got.expires, MAX_TTL);

    server.set_records(vec![
        srv(SIP, 0, 10, 10, 5060, "a.rec.example"),
        a("a.rec.example", 0, ip(11)),
    ]);
    let asked = Instant::now();
    let got = resolver(&server).lookup_blocking(SIP).expect("lookup");
    assert_lives(asked, Instant::now(), got.expires, MIN_TTL);
}

#[tokio::test(flavor = "current_thread")]
async fn nxdomain_is_a_clear_error() {
    let server = DnsServer::start(ZONE, three_targets(60));
    let name = "_sip._udp.nowhere.rec.example";
    let e = resolver(&server)
        .lookup(name)
        .await
        .expect_err("no such name");
    assert!(matches!(e, SrvError::NoSuchName { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("NXDOMAIN") && msg.contains(name), "{msg}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_refusal_is_reported_with_its_code_and_server() {
    // The server is authoritative for rec.example only and refuses other zones.
    let server = DnsServer::start(ZONE, three_targets(60));
    let e = resolver(&server)
        .lookup("_sip._udp.elsewhere.test")
        .await
        .expect_err("refused");
    assert!(matches!(e, SrvError::ServerError { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.to_lowercase().contains("refused") && msg.contains(&server.addr.to_string()),
        "{msg}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_name_without_srv_records_says_so() {
    let server = DnsServer::start(ZONE, three_targets(60));
    // The name exists (it has an A record) but no SRV.
    let e = resolver(&server)
        .lookup("a.rec.example")
        .await
        .expect_err("no SRV records");
    assert!(matches!(e, SrvError::NoSrvRecords { .. }), "{e:?}");
    assert!(
        e.to_string().contains("no SRV records for a.rec.example"),
        "{e}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn rfc2782_dot_target_gives_no_candidates() {
    let server = DnsServer::start(ZONE, vec![srv(SIP, 60, 0, 0, 0, ".")]);
    let got = resolver(&server)
        .lookup(SIP)
        .await
        .expect("a \".\" answer is an answer, not an error");
    assert_eq!(got.records.len(), 1);
    assert!(got.records[0].is_no_service());
    assert!(got.addrs.is_empty());
    let mut rng = StdRng::seed_from_u64(3);
    assert!(
        selector(got)
            .candidates(Instant::now(), &mut rng)
            .is_empty()
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_target_without_address_is_left_out_and_the_others_still_work() {
    let server = DnsServer::start(
        ZONE,
        vec![
            srv(SIP, 60, 10, 50, 5060, "ghost.rec.example"),
            srv(SIP, 60, 10, 50, 5070, "b.rec.example"),
            a("b.rec.example", 60, ip(12)),
        ],
    );
    let answer = resolver(&server)
        .lookup_detailed(SIP)
        .await
        .expect("one target resolves");
    assert_eq!(answer.resolved.records.len(), 2, "both records kept");
    assert!(!answer.resolved.addrs.contains_key("ghost.rec.example"));
    assert_eq!(answer.resolved.addrs["b.rec.example"], vec![sa(12, 5070)]);
    assert_eq!(answer.warnings.len(), 1, "{:?}", answer.warnings);
    assert_eq!(answer.warnings[0].target, "ghost.rec.example");
    let mut rng = StdRng::seed_from_u64(4);
    let s = selector(answer.resolved);
    for _ in 0..50 {
        assert_eq!(s.candidates(Instant::now(), &mut rng), vec![sa(12, 5070)]);
    }
}

#[tokio::test(flavor = "current_thread")]
async fn no_target_with_an_address_is_an_error_naming_them() {
    let server = DnsServer::start(
        ZONE,
        vec![
            srv(SIP, 60, 10, 50, 5060, "ghost.rec.example"),
            srv(SIP, 60, 10, 50, 5070, "phantom.rec.example"),
        ],
    );
    let e = resolver(&server)
        .lookup(SIP)
        .await
        .expect_err("nothing resolves");
    let SrvError::NoTargetResolved { failures, .. } = &e else {
        panic!("wrong error: {e:?}");
    };
    assert_eq!(failures.len(), 2);
    let msg = e.to_string();
    assert!(
        msg.contains("ghost.rec.example") && msg.contains("phantom.rec.example"),
        "{msg}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn an_ip_literal_target_needs_no_address_query() {
    let server = DnsServer::start(ZONE, vec![srv(SIP, 60, 10, 10, 5062, "127.0.0.20")]);
    let got = resolver(&server).lookup(SIP).await.expect("lookup");
    assert_eq!(got.addrs["127.0.0.20"], vec![sa(20, 5062)]);
    let asked: Vec<_> = server.queries().into_iter().map(|q| q.kind).collect();
    assert_eq!(
        asked,
        vec![RecordType::SRV],
        "only the SRV query: {asked:?}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn additional_section_addresses_spare_the_address_queries() {
    // hickory-server puts the target's A/AAAA records into the SRV answer's additional
    // section; the resolver must use them rather than ask again.
    let server = DnsServer::start(
        ZONE,
        vec![
            srv(SIP, 60, 10, 10, 5060, "a.rec.example"),
            a("a.rec.example", 60, ip(11)),
        ],
    );
    let got = resolver(&server).lookup(SIP).await.expect("lookup");
    assert_eq!(got.addrs["a.rec.example"], vec![sa(11, 5060)]);
    let asked: Vec<_> = server.queries().into_iter().map(|q| q.kind).collect();
    assert_eq!(asked, vec![RecordType::SRV], "{asked:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_truncated_udp_answer_is_fetched_again_over_tcp() {
    // 40 SRV records with long target names do not fit the 1232-byte EDNS payload, so the
    // server truncates the UDP answer and the whole answer must come over TCP.
    let mut records = Vec::new();
    for i in 0..40u8 {
        let target = format!("recorder-{i:02}-with-a-rather-long-host-name.rec.example");
        records.push(srv(SIP, 60, 10, 10, 5060, &target));
        records.push(a(&target, 60, ip(100 + i)));
    }
    let server = DnsServer::start(ZONE, records);
    let got = resolver(&server).lookup(SIP).await.expect("lookup");
    assert_eq!(
        got.records.len(),
        40,
        "the whole answer, not the truncated part"
    );
    assert_eq!(got.addrs.len(), 40);
    let srv_queries: Vec<bool> = server
        .queries()
        .into_iter()
        .filter(|q| q.kind == RecordType::SRV)
        .map(|q| q.tcp)
        .collect();
    assert_eq!(srv_queries, vec![false, true], "UDP first, then TCP");
}

#[test]
fn lookup_blocking_works_from_a_plain_thread() {
    let server = DnsServer::start(ZONE, three_targets(60));
    let r = resolver(&server);
    let got = std::thread::spawn(move || {
        // Twice: each call has its own runtime and resolver, nothing left over from the first.
        r.lookup_blocking(SIP).expect("first blocking lookup");
        r.lookup_blocking(SIP)
    })
    .join()
    .expect("lookup thread did not panic")
    .expect("second blocking lookup");
    assert_eq!(got.records.len(), 3);
    assert_eq!(got.addrs["a.rec.example"], vec![sa(11, 5060)]);
}

#[test]
fn a_silent_server_gives_a_timeout_naming_it() {
    let silent = SilentServer::start();
    let r =
        SrvResolver::with_timeout(Some(silent.addr), Duration::from_millis(200)).expect("resolver");
    let e = r.lookup_blocking(SIP).expect_err("nobody answers");
    assert!(matches!(e, SrvError::Timeout { .. }), "{e:?}");
    assert!(e.to_string().contains(&silent.addr.to_string()), "{e}");
}

#[test]
fn a_bad_name_is_refused_without_a_query() {
    let server = DnsServer::start(ZONE, three_targets(60));
    let e = resolver(&server)
        .lookup_blocking("two words.rec.example")
        .expect_err("bad name");
    assert!(matches!(e, SrvError::BadName { .. }), "{e:?}");
    assert!(server.queries().is_empty());
}
