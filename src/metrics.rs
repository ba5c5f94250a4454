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
    pub recordings_finalized: u64,
    pub recordings_recovered: u64,
    pub storage_errors: u64,
    pub draining: bool,
    pub disk_ok: bool,
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
