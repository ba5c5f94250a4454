//! DNS SRV (RFC 2782) target selection and failover hold-down, shared by `reel load` (as a
//! carrier SRC would pick a recorder) and replication (picking a standby).
//!
//! Owns: the RFC 2782 ordering of SRV records (lowest priority first, weighted random within
//! a priority by the running-sum method, weight 0 handling, the "." target), the hold-down of
//! targets that failed, and the [`Selector`] that combines a resolved answer with the
//! hold-down into an ordered list of addresses to try. All of it is sans-IO: the caller passes
//! `now` and the random number generator, so the statistics are testable and reproducible.
//!
//! Must not: cache globally. Every [`Selector`] holds its own answer and hold-down, and is
//! refreshed by its owner when the answer's TTL runs out ([`Selector::needs_refresh`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::Rng;

/// One SRV resource record (RFC 2782 "Priority Weight Port Target").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrvRecord {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// Host name without the trailing dot; "" or "." means "no service at this domain".
    pub target: String,
}

impl SrvRecord {
    pub fn new(priority: u16, weight: u16, port: u16, target: &str) -> SrvRecord {
        SrvRecord {
            priority,
            weight,
            port,
            target: target.trim_end_matches('.').to_string(),
        }
    }

    /// RFC 2782: 'A Target of "." means that the service is decidedly not available at this
    /// domain.'
    pub fn is_no_service(&self) -> bool {
        self.target.is_empty() || self.target == "."
    }
}

/// Orders records per RFC 2782: by priority ascending; within one priority, repeatedly pick
/// a record with probability proportional to its weight using the running-sum method, after
/// putting the weight-0 records first in the list ("those with weight 0 ... placed at the
/// beginning"), so a weight-0 record is chosen only when the running sum lands on it
/// (random number 0) or when only weight-0 records are left. A lone "." record means no
/// service: the result is empty.
pub fn rfc2782_order<R: Rng + ?Sized>(records: &[SrvRecord], rng: &mut R) -> Vec<SrvRecord> {
    if records.len() == 1 && records[0].is_no_service() {
        return Vec::new();
    }
    let mut priorities: Vec<u16> = records.iter().map(|r| r.priority).collect();
    priorities.sort_unstable();
    priorities.dedup();
    let mut out = Vec::with_capacity(records.len());
    for p in priorities {
        // Weight 0 first, then the others in the order received.
        let mut group: Vec<&SrvRecord> = records
            .iter()
            .filter(|r| r.priority == p && r.weight == 0 && !r.is_no_service())
            .collect();
        group.extend(
            records
                .iter()
                .filter(|r| r.priority == p && r.weight > 0 && !r.is_no_service()),
        );
        while !group.is_empty() {
            let total: u32 = group.iter().map(|r| u32::from(r.weight)).sum();
            // "select a uniform random number between 0 and the sum (inclusive)": the first
            // record whose running sum is >= the number is chosen.
            let pick = rng.random_range(0..=total);
            let mut running = 0u32;
            let mut idx = group.len() - 1;
            for (i, r) in group.iter().enumerate() {
                running += u32::from(r.weight);
                if running >= pick {
                    idx = i;
                    break;
                }
            }
            out.push(group.remove(idx).clone());
        }
    }
    out
}

/// Targets that failed recently, by address, each until its own deadline.
#[derive(Clone, Debug)]
pub struct HoldDown {
    duration: Duration,
    until: HashMap<SocketAddr, Instant>,
}

impl HoldDown {
    pub fn new(duration: Duration) -> HoldDown {
        HoldDown {
            duration,
            until: HashMap::new(),
        }
    }

    /// How long a failed target is held down.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// The target failed (transport error, ICMP error, 503, no final answer in time).
    pub fn mark_down(&mut self, addr: SocketAddr, now: Instant) {
        self.until.insert(addr, now + self.duration);
    }

    /// The target answered: it is up again at once.
    pub fn mark_up(&mut self, addr: SocketAddr) {
        self.until.remove(&addr);
    }

    pub fn is_down(&self, addr: SocketAddr, now: Instant) -> bool {
        self.until.get(&addr).is_some_and(|&t| now < t)
    }

    /// Forgets expired entries (so the map stays as small as the set of failing targets).
    pub fn expire(&mut self, now: Instant) {
        self.until.retain(|_, t| now < *t);
    }
}

/// A resolved SRV answer: the records and each target's addresses, valid until `expires`
/// (the smallest TTL of the records used).
#[derive(Clone, Debug)]
pub struct Resolved {
    pub records: Vec<SrvRecord>,
    /// Target host name (as in [`SrvRecord::target`]) -> its addresses, each with the record's
    /// port already applied.
    pub addrs: HashMap<String, Vec<SocketAddr>>,
    pub expires: Instant,
}

impl Resolved {
    /// One fixed target that never expires: `--target HOST:PORT`.
    pub fn fixed(addr: SocketAddr) -> Resolved {
        let name = addr.to_string();
        Resolved {
            records: vec![SrvRecord::new(0, 0, addr.port(), &name)],
            addrs: HashMap::from([(name, vec![addr])]),
            expires: far_future(),
        }
    }
}

fn far_future() -> Instant {
    // About 30 years: Instant has no MAX, and adding too much can overflow.
    let now = Instant::now();
    now.checked_add(Duration::from_secs(30 * 365 * 86_400))
        .unwrap_or(now)
}

/// What a client needs to choose where to send a new request: an answer plus the hold-down,
/// turned into an ordered list of addresses to try.
#[derive(Clone, Debug)]
pub struct Selector {
    resolved: Resolved,
    hold: HoldDown,
}

impl Selector {
    pub fn new(resolved: Resolved, hold: HoldDown) -> Selector {
        Selector { resolved, hold }
    }

    /// Replaces the answer (after a refresh); the hold-down is kept.
    pub fn update(&mut self, resolved: Resolved) {
        self.resolved = resolved;
    }

    pub fn resolved(&self) -> &Resolved {
        &self.resolved
    }

    /// The answer's TTL has run out: resolve again and [`Selector::update`].
    pub fn needs_refresh(&self, now: Instant) -> bool {
        now >= self.resolved.expires
    }

    /// Addresses to try for one new request, first choice first: the records in a fresh
    /// RFC 2782 order, each target's addresses in order, held-down addresses left out.
    /// When every address is held down the full order is returned: trying a target that
    /// failed beats refusing the call outright. Empty only when the answer has no usable
    /// target (the "." record, or no addresses at all).
    pub fn candidates<R: Rng + ?Sized>(&self, now: Instant, rng: &mut R) -> Vec<SocketAddr> {
        let mut all = Vec::new();
        for r in rfc2782_order(&self.resolved.records, rng) {
            for a in self.resolved.addrs.get(&r.target).into_iter().flatten() {
                if !all.contains(a) {
                    all.push(*a);
                }
            }
        }
        let up: Vec<SocketAddr> = all
            .iter()
            .copied()
            .filter(|a| !self.hold.is_down(*a, now))
            .collect();
        if up.is_empty() { all } else { up }
    }

    pub fn report_failure(&mut self, addr: SocketAddr, now: Instant) {
        self.hold.mark_down(addr, now);
    }

    pub fn report_success(&mut self, addr: SocketAddr) {
        self.hold.mark_up(addr);
    }

    pub fn is_down(&self, addr: SocketAddr, now: Instant) -> bool {
        self.hold.is_down(addr, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn rec(p: u16, w: u16, port: u16, t: &str) -> SrvRecord {
        SrvRecord::new(p, w, port, t)
    }

    #[test]
    fn rfc2782_lower_priority_always_first() {
        let recs = vec![rec(20, 100, 1, "b"), rec(10, 1, 2, "a")];
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..100 {
            let o = rfc2782_order(&recs, &mut rng);
            assert_eq!(o[0].target, "a");
            assert_eq!(o[1].target, "b");
        }
    }

    #[test]
    fn rfc2782_single_dot_target_means_no_service() {
        let mut rng = StdRng::seed_from_u64(1);
        assert!(rfc2782_order(&[rec(0, 0, 0, ".")], &mut rng).is_empty());
    }
}
