//! The DNS side of SRV: asks a real resolver for the SRV records of a name and the addresses of
//! their targets, and hands back a [`Resolved`] for the sans-IO [`Selector`](super::Selector).
//!
//! Owns: talking to DNS through `hickory-resolver` (the system resolver from /etc/resolv.conf,
//! or one given server over UDP with TCP for truncated answers), turning answers into
//! [`SrvRecord`]s and addresses with the record's port applied, the answer's lifetime (the
//! smallest TTL used, within [`MIN_TTL`]..[`MAX_TTL`]), and errors that say what failed.
//!
//! Must not: order records (RFC 2782 order is [`super::rfc2782_order`], drawn per request, not
//! per lookup), or cache anything across lookups. Each lookup builds its own hickory resolver,
//! so hickory's cache lives for one lookup only. Two reasons: hickory times a cache entry by
//! its answer section alone, so target addresses taken from an SRV answer's additional section
//! could outlive their own TTL; and a resolver's connections belong to the runtime that opened
//! them, while [`SrvResolver::lookup_blocking`] runs each call on a runtime of its own.
//! The owner of the [`Resolved`] is the cache: it looks up again when
//! [`Selector::needs_refresh`](super::Selector::needs_refresh) says the TTL ran out.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::{Duration, Instant};

use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::lookup::Lookup;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use hickory_resolver::{Resolver, TokioResolver};

use super::{Resolved, SrvRecord};

/// Shortest lifetime given to an answer: a TTL of 0 would make every new call a DNS query.
pub const MIN_TTL: Duration = Duration::from_secs(1);
/// Longest lifetime given to an answer, whatever its TTL: a zone with a week-long TTL should
/// not pin a stale target list for a week.
pub const MAX_TTL: Duration = Duration::from_secs(3600);
/// How long one query waits for the server before it counts as a timeout (hickory retries
/// once more, so a dead server costs about twice this).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a lookup gave no usable answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SrvError {
    /// The name is not a valid DNS name.
    BadName { name: String, reason: String },
    /// The server said NXDOMAIN: the name does not exist.
    NoSuchName { name: String },
    /// The name exists but has no SRV records.
    NoSrvRecords { name: String },
    /// No answer from the server in time.
    Timeout { name: String, server: String },
    /// The server answered with an error code (SERVFAIL, REFUSED ...).
    ServerError {
        name: String,
        server: String,
        code: String,
    },
    /// Every target's address lookup failed.
    NoTargetResolved {
        name: String,
        failures: Vec<TargetFailure>,
    },
    /// Anything else from the resolver (I/O error, malformed answer ...).
    Resolver {
        name: String,
        server: String,
        detail: String,
    },
    /// The resolver could not be set up (unreadable /etc/resolv.conf, no runtime).
    Setup(String),
}

impl fmt::Display for SrvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SrvError::BadName { name, reason } => {
                write!(f, "bad DNS name {name:?}: {reason}")
            }
            SrvError::NoSuchName { name } => {
                write!(f, "no such domain (NXDOMAIN): {name}")
            }
            SrvError::NoSrvRecords { name } => write!(f, "no SRV records for {name}"),
            SrvError::Timeout { name, server } => {
                write!(f, "timeout talking to DNS server {server} (SRV {name})")
            }
            SrvError::ServerError { name, server, code } => {
                write!(f, "DNS server {server} answered {code} for SRV {name}")
            }
            SrvError::NoTargetResolved { name, failures } => {
                write!(f, "no SRV target of {name} has an address:")?;
                for t in failures {
                    write!(f, " {t};")?;
                }
                Ok(())
            }
            SrvError::Resolver {
                name,
                server,
                detail,
            } => write!(f, "SRV lookup of {name} via {server} failed: {detail}"),
            SrvError::Setup(why) => write!(f, "cannot set up the DNS resolver: {why}"),
        }
    }
}

impl std::error::Error for SrvError {}

/// A target whose addresses could not be found; the other targets are still used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetFailure {
    pub target: String,
    pub reason: String,
}

impl fmt::Display for TargetFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.target, self.reason)
    }
}

/// An SRV answer plus the targets left out of it and why.
#[derive(Clone, Debug)]
pub struct SrvAnswer {
    pub resolved: Resolved,
    pub warnings: Vec<TargetFailure>,
}

/// Looks up SRV names through the system resolver or one given DNS server.
#[derive(Clone, Debug)]
pub struct SrvResolver {
    config: ResolverConfig,
    opts: ResolverOpts,
    /// For error messages: which server(s) a timeout or error came from.
    server: String,
}

impl SrvResolver {
    /// `None`: the system resolver (/etc/resolv.conf). `Some(addr)`: that server only, UDP
    /// with TCP when an answer comes back truncated, and no /etc/hosts.
    pub fn new(dns: Option<SocketAddr>) -> Result<SrvResolver, SrvError> {
        SrvResolver::with_timeout(dns, DEFAULT_TIMEOUT)
    }

    /// As [`SrvResolver::new`], with the per-query timeout given.
    pub fn with_timeout(
        dns: Option<SocketAddr>,
        timeout: Duration,
    ) -> Result<SrvResolver, SrvError> {
        let (config, mut opts) = match dns {
            None => hickory_resolver::system_conf::read_system_conf().map_err(|e| {
                SrvError::Setup(format!("reading the system DNS configuration: {e}"))
            })?,
            Some(addr) => {
                let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                for c in &mut ns.connections {
                    c.port = addr.port();
                }
                let mut opts = ResolverOpts::default();
                // A named server is the whole truth (tests, a lab zone): /etc/hosts must not
                // answer for it.
                opts.use_hosts_file = ResolveHosts::Never;
                (ResolverConfig::from_name_servers(vec![ns]), opts)
            }
        };
        opts.timeout = timeout;
        let server = match dns {
            Some(addr) => addr.to_string(),
            None => describe_servers(&config),
        };
        if config.name_servers().is_empty() {
            return Err(SrvError::Setup(
                "the system DNS configuration lists no name server".into(),
            ));
        }
        Ok(SrvResolver {
            config,
            opts,
            server,
        })
    }

    /// The server(s) asked, as shown in errors.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// SRV records of `name` (taken as fully qualified, e.g. `_sip._udp.rec.example`) and the
    /// addresses of their targets. Targets whose addresses cannot be found are left out and
    /// logged; see [`SrvResolver::lookup_detailed`] to get them.
    pub async fn lookup(&self, name: &str) -> Result<Resolved, SrvError> {
        let answer = self.lookup_detailed(name).await?;
        for w in &answer.warnings {
            tracing::warn!(srv = name, target = %w.target, reason = %w.reason, "SRV target left out");
        }
        Ok(answer.resolved)
    }

    /// [`SrvResolver::lookup`] on a private current-thread runtime, for threads that are not
    /// async. Fails (rather than panics) when called from inside an async runtime.
    pub fn lookup_blocking(&self, name: &str) -> Result<Resolved, SrvError> {
        block_on(self.lookup(name))
    }

    /// [`SrvResolver::lookup_detailed`] on a private current-thread runtime.
    pub fn lookup_detailed_blocking(&self, name: &str) -> Result<SrvAnswer, SrvError> {
        block_on(self.lookup_detailed(name))
    }

    /// As [`SrvResolver::lookup`], also returning the targets left out and why.
    pub async fn lookup_detailed(&self, name: &str) -> Result<SrvAnswer, SrvError> {
        let qname = parse_name(name)?;
        let shown = qname.to_ascii();
        let resolver = self.build()?;
        let now = Instant::now();

        let lookup = resolver
            .lookup(qname.clone(), RecordType::SRV)
            .await
            .map_err(|e| self.srv_error(&shown, e))?;

        let mut min_ttl: Option<u32> = None;
        let mut records = Vec::new();
        let mut target_names: Vec<(String, Name)> = Vec::new();
        for r in lookup.answers() {
            let RData::SRV(srv) = &r.data else { continue };
            min_ttl = Some(min_ttl.map_or(r.ttl, |m| m.min(r.ttl)));
            let rec = SrvRecord::new(srv.priority, srv.weight, srv.port, &srv.target.to_ascii());
            if !rec.is_no_service() && !target_names.iter().any(|(t, _)| *t == rec.target) {
                target_names.push((rec.target.clone(), srv.target.clone()));
            }
            records.push(rec);
        }
        if records.is_empty() {
            return Err(SrvError::NoSrvRecords { name: shown });
        }

        // Every target's addresses at once: with several dead targets one after another, a
        // lookup would cost a timeout per target.
        let mut found: Vec<Option<Result<Vec<IpAddr>, String>>> = vec![None; target_names.len()];
        let mut pending = tokio::task::JoinSet::new();
        for (i, (target, tname)) in target_names.iter().enumerate() {
            if let Ok(ip) = IpAddr::from_str(target) {
                found[i] = Some(Ok(vec![ip]));
                continue;
            }
            let (me, resolver, lookup, tname) = (
                self.clone(),
                resolver.clone(),
                lookup.clone(),
                tname.clone(),
            );
            pending.spawn(async move {
                let mut ttl = None;
                let r = me
                    .target_addresses(&resolver, &lookup, &tname, &mut ttl)
                    .await;
                (i, r, ttl)
            });
        }
        while let Some(done) = pending.join_next().await {
            match done {
                Ok((i, r, ttl)) => {
                    if let Some(t) = ttl {
                        min_ttl = Some(min_ttl.map_or(t, |m| m.min(t)));
                    }
                    if let Some(slot) = found.get_mut(i) {
                        *slot = Some(r);
                    }
                }
                // A lookup task that died leaves its slot empty: reported as failed below.
                Err(_) => continue,
            }
        }

        let mut addrs: HashMap<String, Vec<SocketAddr>> = HashMap::new();
        let mut warnings = Vec::new();
        for ((target, _), result) in target_names.iter().zip(found) {
            // `Resolved` keys addresses by target: a target named by two records with
            // different ports holds its addresses with both ports, and `Selector` takes for
            // each record only those with that record's port.
            let ports: Vec<u16> = records
                .iter()
                .filter(|r| r.target == *target)
                .map(|r| r.port)
                .collect();
            let ips = match result {
                Some(Ok(ips)) => ips,
                Some(Err(reason)) => {
                    warnings.push(TargetFailure {
                        target: target.clone(),
                        reason,
                    });
                    continue;
                }
                None => {
                    warnings.push(TargetFailure {
                        target: target.clone(),
                        reason: "address lookup task failed".into(),
                    });
                    continue;
                }
            };
            let mut list = Vec::with_capacity(ips.len() * ports.len());
            for port in &ports {
                for ip in &ips {
                    let a = SocketAddr::new(*ip, *port);
                    if !list.contains(&a) {
                        list.push(a);
                    }
                }
            }
            addrs.insert(target.clone(), list);
        }
        if addrs.is_empty() && !target_names.is_empty() {
            return Err(SrvError::NoTargetResolved {
                name: shown,
                failures: warnings,
            });
        }

        let ttl = Duration::from_secs(u64::from(min_ttl.unwrap_or(0))).clamp(MIN_TTL, MAX_TTL);
        Ok(SrvAnswer {
            resolved: Resolved {
                records,
                addrs,
                expires: now + ttl,
            },
            warnings,
        })
    }

    /// A target's addresses: from the SRV answer's additional section when the server put them
    /// there (RFC 2782: "the additional data section ... will contain A records"), else A and
    /// AAAA queries. Lowers `min_ttl` to the TTLs of the records used.
    async fn target_addresses(
        &self,
        resolver: &TokioResolver,
        srv: &Lookup,
        target: &Name,
        min_ttl: &mut Option<u32>,
    ) -> Result<Vec<IpAddr>, String> {
        let from_additional = addresses_of(srv.additionals(), Some(target), min_ttl);
        if !from_additional.is_empty() {
            return Ok(from_additional);
        }
        let (a, aaaa) = tokio::join!(
            resolver.lookup(target.clone(), RecordType::A),
            resolver.lookup(target.clone(), RecordType::AAAA)
        );
        let mut ips = Vec::new();
        let mut failures = Vec::new();
        for (kind, result) in [("A", a), ("AAAA", aaaa)] {
            match result {
                // The answer may hold a CNAME chain; its address records carry the alias's
                // final name, so take them all.
                Ok(l) => ips.extend(addresses_of(l.answers(), None, min_ttl)),
                Err(e) => failures.push(format!("{kind}: {}", self.describe(e))),
            }
        }
        if ips.is_empty() {
            if failures.is_empty() {
                failures.push("no A or AAAA records".into());
            }
            return Err(failures.join(", "));
        }
        Ok(ips)
    }

    fn build(&self) -> Result<TokioResolver, SrvError> {
        Resolver::builder_with_config(self.config.clone(), TokioRuntimeProvider::default())
            .with_options(self.opts.clone())
            .build()
            .map_err(|e| SrvError::Setup(e.to_string()))
    }

    fn srv_error(&self, name: &str, e: NetError) -> SrvError {
        let name = name.to_string();
        match e {
            NetError::Timeout => SrvError::Timeout {
                name,
                server: self.server.clone(),
            },
            NetError::Dns(DnsError::NoRecordsFound(nr)) => {
                if nr.response_code == ResponseCode::NXDomain {
                    SrvError::NoSuchName { name }
                } else {
                    SrvError::NoSrvRecords { name }
                }
            }
            NetError::Dns(DnsError::ResponseCode(code)) => SrvError::ServerError {
                name,
                server: self.server.clone(),
                code: code.to_string(),
            },
            other => SrvError::Resolver {
                name,
                server: self.server.clone(),
                detail: other.to_string(),
            },
        }
    }

    /// One line for a failed address query, for [`TargetFailure::reason`].
    fn describe(&self, e: NetError) -> String {
        match e {
            NetError::Timeout => format!("timeout talking to DNS server {}", self.server),
            NetError::Dns(DnsError::NoRecordsFound(nr)) => {
                if nr.response_code == ResponseCode::NXDomain {
                    "no such domain (NXDOMAIN)".into()
                } else {
                    "no records".into()
                }
            }
            NetError::Dns(DnsError::ResponseCode(code)) => format!("server answered {code}"),
            other => other.to_string(),
        }
    }
}

/// A/AAAA addresses among `records` (only those named `name`, when given), lowering `min_ttl`.
fn addresses_of(records: &[Record], name: Option<&Name>, min_ttl: &mut Option<u32>) -> Vec<IpAddr> {
    let mut ips = Vec::new();
    for r in records {
        if name.is_some_and(|n| *n != r.name) {
            continue;
        }
        let ip = match &r.data {
            RData::A(a) => IpAddr::V4(a.0),
            RData::AAAA(a) => IpAddr::V6(a.0),
            _ => continue,
        };
        *min_ttl = Some(min_ttl.map_or(r.ttl, |m| m.min(r.ttl)));
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    ips
}

fn parse_name(name: &str) -> Result<Name, SrvError> {
    let bad = |reason: &str| SrvError::BadName {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    let trimmed = name.trim();
    if trimmed.is_empty() || trimmed == "." {
        return Err(bad("empty"));
    }
    if trimmed.chars().any(|c| c.is_whitespace()) {
        return Err(bad("contains white space"));
    }
    let mut n = Name::from_ascii(trimmed).map_err(|e| bad(&e.to_string()))?;
    // Service names are absolute; a search list appended to `_sip._udp.example.com` would
    // only cost extra queries or find the wrong zone.
    n.set_fqdn(true);
    Ok(n)
}

fn describe_servers(config: &ResolverConfig) -> String {
    let list: Vec<String> = config
        .name_servers()
        .iter()
        .map(|ns| match ns.connections.first() {
            Some(c) => SocketAddr::new(ns.ip, c.port).to_string(),
            None => ns.ip.to_string(),
        })
        .collect();
    format!("system resolver ({})", list.join(", "))
}

fn block_on<T>(f: impl std::future::Future<Output = Result<T, SrvError>>) -> Result<T, SrvError> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(SrvError::Setup(
            "blocking lookup called from inside an async runtime (use the async lookup)".into(),
        ));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| SrvError::Setup(format!("starting a runtime for the lookup: {e}")))?;
    rt.block_on(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_names_are_refused_before_any_query() {
        for n in ["", ".", "two words.example", "a..b"] {
            assert!(
                matches!(parse_name(n), Err(SrvError::BadName { .. })),
                "{n:?} accepted"
            );
        }
        let n = parse_name("_sip._udp.rec.example").expect("valid SRV name");
        assert!(n.is_fqdn());
        assert_eq!(n.to_ascii(), "_sip._udp.rec.example.");
    }

    #[test]
    fn errors_name_the_server_and_the_name() {
        let e = SrvError::Timeout {
            name: "_sip._udp.x.".into(),
            server: "127.0.0.1:5353".into(),
        };
        assert_eq!(
            e.to_string(),
            "timeout talking to DNS server 127.0.0.1:5353 (SRV _sip._udp.x.)"
        );
        let e = SrvError::NoSuchName { name: "x.".into() };
        assert!(e.to_string().contains("NXDOMAIN"));
    }

    #[test]
    fn a_given_server_is_used_alone_on_its_port() {
        let r = SrvResolver::new(Some("127.0.0.1:5353".parse().expect("literal address")))
            .expect("no system configuration needed");
        assert_eq!(r.server(), "127.0.0.1:5353");
        assert_eq!(r.config.name_servers().len(), 1);
        assert!(
            r.config.name_servers()[0]
                .connections
                .iter()
                .all(|c| c.port == 5353)
        );
    }

    #[test]
    fn system_resolver_is_described_or_refused_cleanly() {
        // Reads /etc/resolv.conf only; no query is sent.
        match SrvResolver::new(None) {
            Ok(r) => assert!(
                r.server().starts_with("system resolver ("),
                "{}",
                r.server()
            ),
            Err(e) => assert!(matches!(e, SrvError::Setup(_)), "{e:?}"),
        }
    }

    #[test]
    fn blocking_lookup_inside_a_runtime_is_an_error_not_a_panic() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let r = SrvResolver::new(Some("127.0.0.1:9".parse().expect("literal address")))
            .expect("resolver");
        let e = rt.block_on(async { r.lookup_blocking("_sip._udp.x") });
        assert!(matches!(e, Err(SrvError::Setup(_))), "{e:?}");
    }
}
