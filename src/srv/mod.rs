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

pub mod resolve;
pub use resolve::{SrvAnswer, SrvError, SrvResolver, TargetFailure};

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

    /// The target failed (transport error, ICMP error, 503, no final answer in time).
    pub fn mark_down(&mut self, addr: SocketAddr, now: Instant) {
        self.mark_down_at_most(addr, now, None);
    }

    /// The target failed and said when to come back (a 503's Retry-After): held down for
    /// that long when it is shorter than the configured hold-down, never longer.
    pub fn mark_down_at_most(&mut self, addr: SocketAddr, now: Instant, limit: Option<Duration>) {
        let hold = limit.map_or(self.duration, |l| l.min(self.duration));
        // A configured "forever" (Duration::MAX) must not overflow the clock.
        let until = now.checked_add(hold).unwrap_or_else(far_future);
        self.until.insert(addr, until);
    }

    /// The target answered: it is up again at once.
    pub fn mark_up(&mut self, addr: SocketAddr) {
        self.until.remove(&addr);
    }

    pub fn is_down(&self, addr: SocketAddr, now: Instant) -> bool {
        self.until.get(&addr).is_some_and(|&t| now < t)
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
        Resolved::fixed_many(&[addr])
    }

    /// Fixed targets that never expire, tried in the order given (`--target A,B,...`): each
    /// address its own record, priorities 0, 1, 2 ..., so the first is always first choice
    /// and the others are the failover order. One address gives the same as [`Resolved::fixed`].
    pub fn fixed_many(addrs: &[SocketAddr]) -> Resolved {
        let mut records = Vec::with_capacity(addrs.len());
        let mut by_name = HashMap::with_capacity(addrs.len());
        for (i, a) in addrs.iter().enumerate() {
            let name = a.to_string();
            let priority = u16::try_from(i).unwrap_or(u16::MAX);
            records.push(SrvRecord::new(priority, 0, a.port(), &name));
            by_name.insert(name, vec![*a]);
        }
        Resolved {
            records,
            addrs: by_name,
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
            // A target named by several records (one per port) holds the addresses of all of
            // them; each record stands for its own port only.
            for a in self.resolved.addrs.get(&r.target).into_iter().flatten() {
                if a.port() == r.port && !all.contains(a) {
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

    /// A failure with the target's own word on when to retry (a 503's Retry-After), which
    /// shortens the hold-down but never lengthens it.
    pub fn report_failure_retry_after(
        &mut self,
        addr: SocketAddr,
        now: Instant,
        retry_after: Option<Duration>,
    ) {
        self.hold.mark_down_at_most(addr, now, retry_after);
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

    const DRAWS: usize = 10_000;
    /// Percentage points. At 10,000 draws one standard deviation of a 40 % share is about
    /// 0.5 points, so 3 points never flakes, while a wrong method (uniform choice: 33/33/33,
    /// ignoring priority: the backup gets a share) misses by far more.
    const TOLERANCE: f64 = 3.0;

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, last], 5060))
    }

    /// Priority 10 with weights 40/30/30 (targets a, b, c) plus a priority-20 backup (d).
    fn weighted_with_backup() -> Selector {
        let records = vec![
            rec(10, 40, 5060, "a.example"),
            rec(10, 30, 5060, "b.example"),
            rec(10, 30, 5060, "c.example"),
            rec(20, 50, 5060, "d.example"),
        ];
        let addrs = HashMap::from([
            ("a.example".to_string(), vec![addr(1)]),
            ("b.example".to_string(), vec![addr(2)]),
            ("c.example".to_string(), vec![addr(3)]),
            ("d.example".to_string(), vec![addr(4)]),
        ]);
        let resolved = Resolved {
            records,
            addrs,
            expires: Instant::now() + Duration::from_secs(60),
        };
        Selector::new(resolved, HoldDown::new(Duration::from_secs(30)))
    }

    /// Share in percent of each of `addrs` as the first candidate over [`DRAWS`] draws.
    fn first_choice_shares(s: &Selector, now: Instant, addrs: &[SocketAddr]) -> Vec<f64> {
        let mut rng = StdRng::seed_from_u64(2782);
        let mut counts = vec![0usize; addrs.len()];
        for _ in 0..DRAWS {
            let c = s.candidates(now, &mut rng);
            let first = c.first().expect("a selector with targets has candidates");
            let i = addrs
                .iter()
                .position(|a| a == first)
                .expect("first candidate is one of the targets");
            counts[i] += 1;
        }
        counts
            .iter()
            .map(|&n| 100.0 * n as f64 / DRAWS as f64)
            .collect()
    }

    fn assert_shares(got: &[f64], want: &[f64]) {
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= TOLERANCE,
                "target {i}: {g:.1} % first, want {w} % (+/- {TOLERANCE}); all: {got:?}"
            );
        }
    }

    #[test]
    fn rfc2782_weights_40_30_30_give_shares_40_30_30_and_backup_none() {
        let s = weighted_with_backup();
        let all = [addr(1), addr(2), addr(3), addr(4)];
        let got = first_choice_shares(&s, Instant::now(), &all);
        assert_shares(&got, &[40.0, 30.0, 30.0, 0.0]);
        assert_eq!(
            got[3], 0.0,
            "a higher priority number is never first while others are up"
        );
    }

    #[test]
    fn rfc2782_first_target_down_splits_its_share_by_weight() {
        let mut s = weighted_with_backup();
        let now = Instant::now();
        s.report_failure(addr(1), now);
        let all = [addr(1), addr(2), addr(3), addr(4)];
        let got = first_choice_shares(&s, now, &all);
        assert_shares(&got, &[0.0, 50.0, 50.0, 0.0]);
        assert_eq!(got[0], 0.0, "a held-down target is never first");
    }

    #[test]
    fn rfc2782_whole_priority_down_falls_to_the_backup() {
        let mut s = weighted_with_backup();
        let now = Instant::now();
        for a in [addr(1), addr(2), addr(3)] {
            s.report_failure(a, now);
        }
        let all = [addr(1), addr(2), addr(3), addr(4)];
        let got = first_choice_shares(&s, now, &all);
        assert_eq!(got, vec![0.0, 0.0, 0.0, 100.0]);
    }

    #[test]
    fn rfc2782_weight_zero_is_picked_rarely_beside_weighted_records() {
        let recs = vec![
            rec(10, 0, 1, "zero"),
            rec(10, 50, 2, "x"),
            rec(10, 50, 3, "y"),
        ];
        let mut rng = StdRng::seed_from_u64(7);
        let zero_first = (0..DRAWS)
            .filter(|_| rfc2782_order(&recs, &mut rng)[0].target == "zero")
            .count();
        let share = 100.0 * zero_first as f64 / DRAWS as f64;
        // The running-sum method gives it 1 chance in (sum + 1) = 1/101: rare, but not never.
        assert!(zero_first > 0, "weight 0 must keep a small chance");
        assert!(share < 2.5, "weight 0 first in {share:.2} % of draws");
    }

    #[test]
    fn rfc2782_all_weights_zero_still_yields_every_record() {
        let recs = vec![rec(10, 0, 1, "a"), rec(10, 0, 2, "b"), rec(10, 0, 3, "c")];
        let mut rng = StdRng::seed_from_u64(8);
        for _ in 0..1000 {
            let mut got: Vec<String> = rfc2782_order(&recs, &mut rng)
                .into_iter()
                .map(|r| r.target)
                .collect();
            got.sort();
            assert_eq!(got, ["a", "b", "c"]);
        }
    }

    #[test]
    fn rfc2782_full_order_is_a_permutation_in_ascending_priority() {
        let mut rng = StdRng::seed_from_u64(9);
        for round in 0..500 {
            let n = 1 + round % 9;
            let recs: Vec<SrvRecord> = (0..n)
                .map(|i| {
                    rec(
                        rng.random_range(0..4) * 10,
                        rng.random_range(0..4) * 25,
                        5060 + i as u16,
                        &format!("t{i}"),
                    )
                })
                .collect();
            let order = rfc2782_order(&recs, &mut rng);
            assert_eq!(order.len(), recs.len(), "every record exactly once");
            for r in &recs {
                assert_eq!(order.iter().filter(|o| o.target == r.target).count(), 1);
            }
            assert!(
                order.windows(2).all(|w| w[0].priority <= w[1].priority),
                "priorities out of order: {order:?}"
            );
        }
    }

    #[test]
    fn hold_down_expiry_brings_a_target_back() {
        let mut s = weighted_with_backup();
        let t0 = Instant::now();
        let hold = Duration::from_secs(30);
        s.report_failure(addr(1), t0);
        let mut rng = StdRng::seed_from_u64(10);
        let just_before = t0 + hold - Duration::from_millis(1);
        assert!(s.is_down(addr(1), just_before));
        assert!(!s.candidates(just_before, &mut rng).contains(&addr(1)));
        let at = t0 + hold;
        assert!(!s.is_down(addr(1), at));
        assert!(s.candidates(at, &mut rng).contains(&addr(1)));
    }

    #[test]
    fn hold_down_success_report_brings_a_target_back_at_once() {
        let mut s = weighted_with_backup();
        let t0 = Instant::now();
        s.report_failure(addr(2), t0);
        s.report_success(addr(2));
        assert!(!s.is_down(addr(2), t0));
    }

    #[test]
    fn hold_down_of_every_target_still_offers_them_all() {
        let mut s = weighted_with_backup();
        let now = Instant::now();
        for i in 1..=4 {
            s.report_failure(addr(i), now);
        }
        let mut rng = StdRng::seed_from_u64(11);
        let c = s.candidates(now, &mut rng);
        assert_eq!(c.len(), 4, "trying a failed target beats refusing the call");
        assert_eq!(c[3], addr(4), "priority order still holds: {c:?}");
    }

    #[test]
    fn hold_down_forever_does_not_overflow() {
        let mut h = HoldDown::new(Duration::MAX);
        let now = Instant::now();
        h.mark_down(addr(1), now);
        assert!(h.is_down(addr(1), now + Duration::from_secs(86_400)));
    }

    #[test]
    fn ttl_expiry_needs_refresh() {
        let t0 = Instant::now();
        let mut resolved = Resolved::fixed(addr(1));
        resolved.expires = t0 + Duration::from_secs(5);
        let mut s = Selector::new(resolved, HoldDown::new(Duration::from_secs(1)));
        assert!(!s.needs_refresh(t0));
        assert!(!s.needs_refresh(t0 + Duration::from_millis(4999)));
        assert!(s.needs_refresh(t0 + Duration::from_secs(5)));
        let mut fresh = Resolved::fixed(addr(2));
        fresh.expires = t0 + Duration::from_secs(10);
        s.update(fresh);
        assert!(!s.needs_refresh(t0 + Duration::from_secs(5)));
        assert_eq!(s.resolved().records[0].port, 5060);
    }

    #[test]
    fn fixed_target_never_needs_refresh_and_is_the_only_candidate() {
        let s = Selector::new(
            Resolved::fixed(addr(9)),
            HoldDown::new(Duration::from_secs(1)),
        );
        let now = Instant::now();
        assert!(!s.needs_refresh(now + Duration::from_secs(365 * 86_400)));
        let mut rng = StdRng::seed_from_u64(12);
        assert_eq!(s.candidates(now, &mut rng), vec![addr(9)]);
    }

    #[test]
    fn duplicate_addresses_across_targets_appear_once() {
        let resolved = Resolved {
            records: vec![rec(10, 50, 5060, "one"), rec(10, 50, 5060, "two")],
            addrs: HashMap::from([
                ("one".to_string(), vec![addr(1), addr(2)]),
                ("two".to_string(), vec![addr(2), addr(1)]),
            ]),
            expires: Instant::now() + Duration::from_secs(60),
        };
        let s = Selector::new(resolved, HoldDown::new(Duration::from_secs(1)));
        let mut rng = StdRng::seed_from_u64(13);
        for _ in 0..100 {
            let mut c = s.candidates(Instant::now(), &mut rng);
            assert_eq!(c.len(), 2, "{c:?}");
            c.sort();
            assert_eq!(c, vec![addr(1), addr(2)]);
        }
    }

    #[test]
    fn rfc2782_dot_target_answer_gives_no_candidates() {
        let resolved = Resolved {
            records: vec![rec(0, 0, 0, ".")],
            addrs: HashMap::new(),
            expires: Instant::now() + Duration::from_secs(60),
        };
        let s = Selector::new(resolved, HoldDown::new(Duration::from_secs(1)));
        let mut rng = StdRng::seed_from_u64(14);
        assert!(s.candidates(Instant::now(), &mut rng).is_empty());
    }

    #[test]
    fn rfc2782_each_record_stands_for_its_own_port() {
        // One host, two records: port 5080 at priority 10, port 5060 at priority 20.
        let ip = std::net::IpAddr::from([127, 0, 0, 1]);
        let resolved = Resolved {
            records: vec![rec(20, 0, 5060, "h"), rec(10, 0, 5080, "h")],
            addrs: HashMap::from([(
                "h".to_string(),
                vec![SocketAddr::new(ip, 5060), SocketAddr::new(ip, 5080)],
            )]),
            expires: Instant::now() + Duration::from_secs(60),
        };
        let sel = Selector::new(resolved, HoldDown::new(Duration::from_secs(30)));
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..50 {
            assert_eq!(
                sel.candidates(Instant::now(), &mut rng),
                vec![SocketAddr::new(ip, 5080), SocketAddr::new(ip, 5060)]
            );
        }
    }

    #[test]
    fn retry_after_shortens_the_hold_down_but_never_lengthens_it() {
        let a = addr(1);
        let t0 = Instant::now();
        let s = |secs| t0 + Duration::from_secs(secs);
        let mut t = Selector::new(Resolved::fixed(a), HoldDown::new(Duration::from_secs(30)));
        t.report_failure_retry_after(a, t0, Some(Duration::from_secs(5)));
        assert!(t.is_down(a, s(4)));
        assert!(!t.is_down(a, s(5)), "Retry-After 5 s honoured");
        t.report_failure_retry_after(a, t0, Some(Duration::from_secs(600)));
        assert!(t.is_down(a, s(29)));
        assert!(!t.is_down(a, s(30)), "capped at the hold-down");
        t.report_failure_retry_after(a, t0, None);
        t.report_success(a);
        assert!(!t.is_down(a, s(1)), "an answer lifts the hold-down");
    }
}
