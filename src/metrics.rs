//! Counters and gauges, defined in one table and rendered in the Prometheus text format.
//!
//! The control thread publishes a [`Snapshot`] about once a second; the HTTP API reads the last
//! one. Nothing here is touched per packet.

use std::collections::BTreeMap;
use std::fmt::Write;

/// The values behind `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub sessions_active: u64,
    pub sessions_started: u64,
    pub sessions_ended: u64,
    pub sip_transactions: u64,
    pub sip_malformed: u64,
    pub sip_messages_received: BTreeMap<&'static str, u64>,
    pub sip_rejected: BTreeMap<u16, u64>,
    pub rtp_ports_in_use: u64,
    pub rtp_ports_capacity: u64,
    pub rtp_ports_held_back: u64,
    pub control_panics: u64,
    pub recordings_finalized: u64,
    pub recordings_recovered: u64,
    pub storage_errors: u64,
    pub draining: bool,
    pub disk_ok: bool,
    pub media: Vec<MediaThreadStats>,
    pub journal_bytes: u64,
    pub journal_commits: u64,
    pub journal_write_latency_us: u64,
    pub journal_errors: u64,
    pub journal_dropped: u64,
}

/// One media thread's counters.
#[derive(Clone, Debug, Default)]
pub struct MediaThreadStats {
    pub packets: u64,
    pub bytes: u64,
    pub foreign: u64,
    pub unrouted: u64,
    pub tproxy_bypass: u64,
    pub duplicates: u64,
    pub srtp_failures: u64,
    pub malformed: u64,
    pub rtcp: u64,
    pub ring_drops: u64,
    pub ring_used_bytes: u64,
    pub enobufs: u64,
    pub wakeups: u64,
    pub streams: u64,
}

fn per_thread(s: &Snapshot, f: fn(&MediaThreadStats) -> u64) -> Vec<(String, u64)> {
    s.media
        .iter()
        .enumerate()
        .map(|(i, t)| (format!("thread=\"{i}\""), f(t)))
        .collect()
}

enum Kind {
    Counter,
    Gauge,
}

/// name, kind, help, value.
type Def = (
    &'static str,
    Kind,
    &'static str,
    fn(&Snapshot) -> Vec<(String, u64)>,
);

fn one(v: u64) -> Vec<(String, u64)> {
    vec![(String::new(), v)]
}

const DEFS: &[Def] = &[
    (
        "reel_sessions_active",
        Kind::Gauge,
        "Recording sessions in progress.",
        |s| one(s.sessions_active),
    ),
    (
        "reel_sessions_started_total",
        Kind::Counter,
        "Recording sessions answered 200.",
        |s| one(s.sessions_started),
    ),
    (
        "reel_sessions_ended_total",
        Kind::Counter,
        "Recording sessions ended.",
        |s| one(s.sessions_ended),
    ),
    (
        "reel_sip_transactions",
        Kind::Gauge,
        "Live SIP transactions.",
        |s| one(s.sip_transactions),
    ),
    (
        "reel_sip_malformed_total",
        Kind::Counter,
        "SIP messages that could not be used.",
        |s| one(s.sip_malformed),
    ),
    (
        "reel_sip_messages_received_total",
        Kind::Counter,
        "SIP messages received by transport.",
        |s| {
            s.sip_messages_received
                .iter()
                .map(|(t, v)| (format!("transport=\"{t}\""), *v))
                .collect()
        },
    ),
    (
        "reel_sip_rejected_total",
        Kind::Counter,
        "Requests answered with a failure, by status.",
        |s| {
            s.sip_rejected
                .iter()
                .map(|(c, v)| (format!("status=\"{c}\""), *v))
                .collect()
        },
    ),
    (
        "reel_rtp_ports_in_use",
        Kind::Gauge,
        "RTP port pairs bound.",
        |s| one(s.rtp_ports_in_use),
    ),
    (
        "reel_rtp_ports_capacity",
        Kind::Gauge,
        "RTP port pairs in the range.",
        |s| one(s.rtp_ports_capacity),
    ),
    (
        "reel_control_panics_total",
        Kind::Counter,
        "Panics caught in the control thread (bugs): each cost the input that met it, nothing else.",
        |s| one(s.control_panics),
    ),
    (
        "reel_rtp_ports_held_back",
        Kind::Gauge,
        "RTP port pairs of the last run's unfinished calls, held out of the pool until their RTP stops.",
        |s| one(s.rtp_ports_held_back),
    ),
    (
        "reel_recordings_finalized_total",
        Kind::Counter,
        "Recording folders written.",
        |s| one(s.recordings_finalized),
    ),
    (
        "reel_recordings_recovered_total",
        Kind::Counter,
        "Spooled sessions finalized at start.",
        |s| one(s.recordings_recovered),
    ),
    (
        "reel_storage_errors_total",
        Kind::Counter,
        "Failed spool or finalize operations.",
        |s| one(s.storage_errors),
    ),
    (
        "reel_media_packets_total",
        Kind::Counter,
        "RTP packets recorded, per media thread.",
        |s| per_thread(s, |t| t.packets),
    ),
    (
        "reel_media_bytes_total",
        Kind::Counter,
        "Bytes received on RTP/RTCP ports.",
        |s| per_thread(s, |t| t.bytes),
    ),
    (
        "reel_media_foreign_total",
        Kind::Counter,
        "Packets dropped: not from the latched source.",
        |s| per_thread(s, |t| t.foreign),
    ),
    (
        "reel_media_unrouted_total",
        Kind::Counter,
        "Packets dropped (TPROXY mode): sent to a port no stream is recorded on.",
        |s| per_thread(s, |t| t.unrouted),
    ),
    (
        "reel_media_tproxy_bypass_total",
        Kind::Counter,
        "Packets (TPROXY mode) that reached a stream's own socket instead of the shared one: no or a partial nftables rule, or IPv6 media. Recorded all the same.",
        |s| per_thread(s, |t| t.tproxy_bypass),
    ),
    (
        "reel_media_duplicates_total",
        Kind::Counter,
        "Packets dropped: duplicate or too old.",
        |s| per_thread(s, |t| t.duplicates),
    ),
    (
        "reel_media_srtp_failures_total",
        Kind::Counter,
        "Packets dropped: SRTP authentication or replay.",
        |s| per_thread(s, |t| t.srtp_failures),
    ),
    (
        "reel_media_malformed_total",
        Kind::Counter,
        "Packets dropped: not RTP.",
        |s| per_thread(s, |t| t.malformed),
    ),
    (
        "reel_media_rtcp_total",
        Kind::Counter,
        "RTCP packets (RTP+1 or rtcp-mux), counted.",
        |s| per_thread(s, |t| t.rtcp),
    ),
    (
        "reel_media_ring_drops_total",
        Kind::Counter,
        "Packets dropped: ring to the writer full.",
        |s| per_thread(s, |t| t.ring_drops),
    ),
    (
        "reel_media_ring_used_bytes",
        Kind::Gauge,
        "Bytes waiting in the ring to the writer.",
        |s| per_thread(s, |t| t.ring_used_bytes),
    ),
    (
        "reel_media_enobufs_total",
        Kind::Counter,
        "io_uring receives that found no buffer (re-armed, not lost).",
        |s| per_thread(s, |t| t.enobufs),
    ),
    (
        "reel_media_wakeups_total",
        Kind::Counter,
        "Receive loop wake-ups.",
        |s| per_thread(s, |t| t.wakeups),
    ),
    (
        "reel_media_streams",
        Kind::Gauge,
        "Streams being recorded.",
        |s| per_thread(s, |t| t.streams),
    ),
    (
        "reel_journal_bytes_total",
        Kind::Counter,
        "Bytes written to journals.",
        |s| one(s.journal_bytes),
    ),
    (
        "reel_journal_commits_total",
        Kind::Counter,
        "Journal group commits (write + fdatasync).",
        |s| one(s.journal_commits),
    ),
    (
        "reel_journal_write_latency_us",
        Kind::Gauge,
        "Duration of the last journal commit, microseconds.",
        |s| one(s.journal_write_latency_us),
    ),
    (
        "reel_journal_errors_total",
        Kind::Counter,
        "Failed journal commits.",
        |s| one(s.journal_errors),
    ),
    (
        "reel_journal_dropped_total",
        Kind::Counter,
        "Packets not journaled: their journal already held its most of unwritten bytes (writes failing, e.g. disk full).",
        |s| one(s.journal_dropped),
    ),
    (
        "reel_draining",
        Kind::Gauge,
        "1 while draining after SIGTERM.",
        |s| one(s.draining as u64),
    ),
    (
        "reel_disk_ok",
        Kind::Gauge,
        "0 when free disk space is below the threshold.",
        |s| one(s.disk_ok as u64),
    ),
];

/// Renders the Prometheus text exposition format (version 0.0.4).
pub fn render(s: &Snapshot) -> String {
    let mut out = String::new();
    for (name, kind, help, value) in DEFS {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in value(s) {
            if labels.is_empty() {
                let _ = writeln!(out, "{name} {v}");
            } else {
                let _ = writeln!(out, "{name}{{{labels}}} {v}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_has_help_and_type() {
        let text = render(&Snapshot::default());
        for (name, ..) in DEFS {
            assert!(text.contains(&format!("# HELP {name} ")), "{name} help");
            assert!(text.contains(&format!("# TYPE {name} ")), "{name} type");
        }
    }

    #[test]
    fn labelled_values_render_with_braces() {
        let mut s = Snapshot::default();
        s.sip_rejected.insert(503, 7);
        let text = render(&s);
        assert!(
            text.contains("reel_sip_rejected_total{status=\"503\"} 7"),
            "{text}"
        );
    }
}
