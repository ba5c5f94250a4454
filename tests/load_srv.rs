//! Carrier-style SRV spreading and failover, end to end (RFC 2782): a real DNS server on
//! loopback serves SRV and A records for four real `reel serve` processes (priority 10 with
//! weights 40/30/30, and a priority-20 backup); `reel load --srv` shares the calls over the
//! priority-10 group (the weighted draw itself is measured in the `srv` unit tests and in
//! `tests/srv_dns.rs`),
//! fails over when an instance is gone, and the backup takes every call when the whole
//! priority-10 group is down. No call fails in any phase, and every call answered by an
//! instance is recorded there.

mod common;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};

use common::dns::{DnsServer, a, srv};
use common::server::{Server, reel_bin};

const ZONE: &str = "rec.test";
const LOCAL: Ipv4Addr = Ipv4Addr::LOCALHOST;

struct Group {
    servers: Vec<Server>,
    dns: DnsServer,
}

/// r1, r2, r3 at priority 10 (weights 40, 30, 30) and backup at priority 20, for UDP and TCP.
fn group() -> Group {
    let servers: Vec<Server> = (0..4).map(|_| Server::start(&[])).collect();
    let mut records = Vec::new();
    let hosts = ["r1", "r2", "r3", "backup"];
    let prio_weight = [(10, 40), (10, 30), (10, 30), (20, 0)];
    for proto in ["_udp", "_tcp"] {
        for (i, host) in hosts.iter().enumerate() {
            let (p, w) = prio_weight[i];
            records.push(srv(
                &format!("_sip.{proto}.{ZONE}"),
                60,
                p,
                w,
                servers[i].sip_port,
                &format!("{host}.{ZONE}"),
            ));
        }
    }
    for host in hosts {
        records.push(a(&format!("{host}.{ZONE}"), 60, LOCAL));
    }
    let dns = DnsServer::start(ZONE, records);
    Group { servers, dns }
}

impl Group {
    fn target(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.servers[i].sip_port)
    }

    /// Runs `reel load --srv` and returns its JSON report.
    fn load(&self, transport: &str, calls: usize) -> serde_json::Value {
        Group::report(self.spawn_load(transport, calls, "50"))
    }

    fn spawn_load(&self, transport: &str, calls: usize, rate: &str) -> Child {
        let name = format!("_sip._{transport}.{ZONE}");
        let dns = self.dns.addr.to_string();
        let calls = calls.to_string();
        Command::new(reel_bin())
            .args(["load", "--srv", &name, "--dns", &dns])
            .args(["--transport", transport, "--calls", &calls])
            .args(["--concurrency", "20", "--rate", rate, "--duration-s", "1"])
            .args(["--failover-timeout-ms", "1500", "--json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run reel load")
    }

    fn report(child: Child) -> serde_json::Value {
        let (out, json) = common::load::finish(child);
        assert!(
            out.status.success(),
            "reel load failed: {json}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Kept beside the report so that a failed assertion shows what reel load said.
        let mut json = json;
        json["stderr_tail"] = serde_json::Value::from(
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .rev()
                .take(12)
                .collect::<Vec<_>>()
                .join(" | "),
        );
        json
    }

    /// Calls answered 200 per instance index, from the report's `by_target`.
    fn split(&self, report: &serde_json::Value) -> BTreeMap<usize, u64> {
        let mut out = BTreeMap::new();
        let by_target = report["by_target"].as_object().expect("by_target object");
        for (addr, n) in by_target {
            let i = (0..self.servers.len())
                .find(|&i| self.target(i) == *addr)
                .unwrap_or_else(|| panic!("by_target names an unknown target {addr}"));
            out.insert(i, n.as_u64().expect("count"));
        }
        out
    }
}

fn no_failed_call(report: &serde_json::Value, calls: usize) {
    assert_eq!(report["calls_failed"], 0, "{report}");
    assert_eq!(report["calls_ok"], calls as u64, "{report}");
}

#[test]
fn srv_priority_10_shares_the_calls_failover_skips_a_dead_instance_and_the_backup_takes_over() {
    let mut g = group();

    // 1. All up: priority 10 only, every instance of it used, the backup idle.
    let calls = 60;
    let r = g.load("udp", calls);
    no_failed_call(&r, calls);
    let split = g.split(&r);
    assert_eq!(
        split.get(&3),
        None,
        "backup got calls while priority 10 was up: {r}"
    );
    for i in 0..3 {
        // Expected 24/18/18; below 5 has a probability under 1e-3 for a 30 % share.
        assert!(
            split.get(&i).copied().unwrap_or(0) >= 5,
            "r{} got too few calls for its weight: {r}",
            i + 1
        );
    }
    let mut recorded = 0;
    for (i, s) in g.servers.iter().enumerate() {
        let n = split.get(&i).copied().unwrap_or(0) as usize;
        let recs = s.wait_recordings(n);
        assert_eq!(recs.len(), n, "instance {i} recorded {} of {n}", recs.len());
        recorded += n;
    }
    assert_eq!(recorded, calls);

    // 2. r1 gone (nothing listens on its port): over UDP the ICMP error, over TCP the refused
    //    connection, sends the call to the next target; r1 is held down; no call fails.
    g.servers[0].kill9();
    for transport in ["udp", "tcp"] {
        let calls = 30;
        let r = g.load(transport, calls);
        no_failed_call(&r, calls);
        let split = g.split(&r);
        assert_eq!(split.get(&0), None, "{transport}: dead r1 answered: {r}");
        assert_eq!(
            split.get(&3),
            None,
            "{transport}: backup used while r2, r3 up: {r}"
        );
        assert!(
            split.contains_key(&1) && split.contains_key(&2),
            "{transport}: r2 and r3 share the calls: {r}"
        );
        assert!(
            r["failovers"].as_u64().unwrap_or(0) >= 1,
            "{transport}: no failover counted although r1 (40 %) is dead: {r}"
        );
    }

    // 3. The whole priority-10 group gone: the priority-20 backup takes every call.
    g.servers[1].kill9();
    g.servers[2].kill9();
    let calls = 20;
    let r = g.load("udp", calls);
    no_failed_call(&r, calls);
    let split = g.split(&r);
    assert_eq!(split.len(), 1, "{r}");
    assert_eq!(split.get(&3), Some(&(calls as u64)), "{r}");
    assert_eq!(g.servers[3].wait_recordings(calls).len(), calls);
}

#[test]
fn a_changed_srv_answer_moves_new_calls_after_its_ttl_within_one_run() {
    // The operator moves traffic by DNS: once the TTL of the answer in use runs out, new
    // calls of the same run follow the new records.
    let g = group();
    let only = |i: usize| {
        vec![
            srv(
                &format!("_sip._udp.{ZONE}"),
                1,
                10,
                10,
                g.servers[i].sip_port,
                &format!("h{i}.{ZONE}"),
            ),
            a(&format!("h{i}.{ZONE}"), 1, LOCAL),
        ]
    };
    g.dns.set_records(only(1));
    // 24 calls at 6/s: the run spans 4 s; the records change once the first call is up on
    // r2 (so a slow start cannot send every call to the new records).
    let child = g.spawn_load("udp", 24, "6");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while g.servers[1].sessions_active() == 0 {
        assert!(std::time::Instant::now() < deadline, "no call reached r2");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    g.dns.set_records(only(2));
    let r = Group::report(child);
    no_failed_call(&r, 24);
    let split = g.split(&r);
    assert!(
        split.contains_key(&1),
        "calls before the change went to r2: {r}"
    );
    assert!(
        split.contains_key(&2),
        "no call followed the new SRV answer after its 1 s TTL: {r}"
    );
    assert!(!split.contains_key(&0) && !split.contains_key(&3), "{r}");
}

#[test]
fn a_draining_recorder_answers_503_and_calls_fail_over_to_the_next_priority() {
    // SIGTERM with a call up: the recorder drains (503 with Retry-After to new INVITEs) while
    // that call runs on. A carrier SRC moves new calls to the next priority; so does reel load.
    let mut draining = Server::start_with(Some("[sip]\ndrain_timeout_s = 30\n"), &[]);
    let standby = Server::start(&[]);
    let dns = DnsServer::start(
        ZONE,
        vec![
            srv(
                &format!("_sip._udp.{ZONE}"),
                60,
                10,
                10,
                draining.sip_port,
                &format!("a.{ZONE}"),
            ),
            srv(
                &format!("_sip._udp.{ZONE}"),
                60,
                20,
                10,
                standby.sip_port,
                &format!("b.{ZONE}"),
            ),
            a(&format!("a.{ZONE}"), 60, LOCAL),
            a(&format!("b.{ZONE}"), 60, LOCAL),
        ],
    );
    let mut long = Command::new(reel_bin())
        .args([
            "load",
            "--target",
            &format!("127.0.0.1:{}", draining.sip_port),
        ])
        .args(["--calls", "1", "--duration-s", "20", "--quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the long call");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while draining.sessions_active() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the long call never came up"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let pid = draining.child.as_ref().expect("running").id();
    // SAFETY: kill(2) on a child this test spawned and has not reaped.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    while draining.http_get("/health").map(|r| r.0).unwrap_or(0) != 503 {
        assert!(
            std::time::Instant::now() < deadline,
            "no drain after SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    let g = Group {
        servers: Vec::new(),
        dns,
    };
    let r = Group::report(g.spawn_load("udp", 6, "20"));
    no_failed_call(&r, 6);
    let standby_addr = format!("127.0.0.1:{}", standby.sip_port);
    assert_eq!(r["by_target"][&standby_addr], 6, "{r}");
    assert!(r["responses"]["503"].as_u64().unwrap_or(0) >= 1, "{r}");
    assert!(r["failovers"].as_u64().unwrap_or(0) >= 1, "{r}");
    assert_eq!(
        draining.sessions_active(),
        1,
        "the draining recorder kept its call"
    );
    assert_eq!(standby.wait_recordings(6).len(), 6);

    // End the long call (SIGTERM makes reel load send BYE); the drained recorder exits.
    // SAFETY: kill(2) on a child this test spawned and has not reaped.
    unsafe { libc::kill(long.id() as i32, libc::SIGTERM) };
    let _ = long.wait();
    let status = draining.terminate();
    assert!(status.success(), "drained recorder exit: {status}");
}
