//! The `recording.json` model (DESIGN §4). Field names are a contract read by outside tools.
//!
//! [`RecordingMeta`] is what the rest of Reel fills in; [`RecordingJson`] is the serialised
//! view (times as RFC 3339 strings, `duration_ms`, `files[]`, `format_version`). The same view
//! is used for the spool's `session.json`, so the crash scan reads what finalize would write.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Version of the `recording.json` layout; bumped only when a field changes meaning.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecordingState {
    Complete,
    Partial,
    NoMedia,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantRecord {
    pub id: String,
    pub aor: Option<String>,
    pub name: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamRecord {
    pub label: String,
    /// `PCMU`, `PCMA`, `G722`, `G729`, `opus`.
    pub codec: String,
    /// The sending participant's id, or null.
    pub participant: Option<String>,
    pub packets: u64,
    pub lost: u64,
    pub ssrcs: Vec<u32>,
    /// RTP payload type and clock rate, and the direction offered (for finalize).
    pub payload_type: u8,
    pub clock_rate: u32,
    /// Packets dropped as duplicates (same SSRC and sequence number), not in `packets`.
    #[serde(default)]
    pub duplicates: u64,
    /// SRTP packets that failed authentication, not in `packets`.
    #[serde(default)]
    pub srtp_failures: u64,
    /// Packets from an unexpected source address, not in `packets`.
    #[serde(default)]
    pub foreign: u64,
    /// Index of the stream's `m=` line in the SDP offer: the `stream` field of journal
    /// records. `streams[]` is in channel order, which need not be m-line order.
    #[serde(default)]
    pub mline: usize,
    /// RFC 4733 telephone-events received on this stream, in order.
    #[serde(default)]
    pub dtmf: Vec<DtmfRecord>,
    /// The local port Reel received the stream's RTP on (RTCP on the next one). A restart
    /// holds the ports of the last run's unfinished calls out of the pool while their RTP
    /// still arrives (`control::ports`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtp_port: Option<u16>,
}

/// One DTMF digit (RFC 4733 telephone-event) as placed on the recording's timeline.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DtmfRecord {
    /// `0`-`9`, `*`, `#`, `A`-`D`, `!` (flash).
    pub digit: String,
    /// Start, in ms from the start of the recording (the 200 OK).
    pub at_ms: u64,
    pub duration_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    /// `audio`, `metadata` or `raw`.
    pub kind: String,
    pub bytes: u64,
    pub sha256: String,
}

/// Everything needed to write a recording folder. Times are kept as `SystemTime` and written
/// as RFC 3339 UTC with milliseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordingMeta {
    pub id: String,
    pub call_id: String,
    pub session_id: Option<String>,
    pub state: RecordingState,
    pub started_at: SystemTime,
    pub ended_at: SystemTime,
    pub participants: Vec<ParticipantRecord>,
    pub streams: Vec<StreamRecord>,
    /// Vendor extension elements, verbatim XML.
    pub extensions: Vec<String>,
    pub warnings: Vec<String>,
    pub replicated_to: Vec<String>,
    /// Why the session ended (`bye`, `cancel`, `ack-timeout`, `session-timer`, `shutdown`,
    /// `recovered` ...).
    pub end_reason: String,
    pub node: String,
}

/// RFC 3339 UTC with milliseconds: `2026-11-25T17:38:25.123Z`.
pub fn rfc3339_millis(t: SystemTime) -> String {
    // humantime panics before 1970; a clock that far off is clamped rather than crashing
    // the writer thread.
    humantime::format_rfc3339_millis(t.max(UNIX_EPOCH)).to_string()
}

/// Parses what [`rfc3339_millis`] writes (any fraction, `Z` or `+00:00`).
pub fn parse_rfc3339(s: &str) -> Result<SystemTime, String> {
    humantime::parse_rfc3339(s).map_err(|e| format!("bad time {s:?}: {e}"))
}

impl RecordingMeta {
    /// A session just started: `ended_at` = `started_at`, no streams yet, state `no-media`
    /// until a packet is recorded.
    pub fn new(id: &str, call_id: &str, started_at: SystemTime, node: &str) -> RecordingMeta {
        RecordingMeta {
            id: id.to_string(),
            call_id: call_id.to_string(),
            session_id: None,
            state: RecordingState::NoMedia,
            started_at,
            ended_at: started_at,
            participants: Vec::new(),
            streams: Vec::new(),
            extensions: Vec::new(),
            warnings: Vec::new(),
            replicated_to: Vec::new(),
            end_reason: String::new(),
            node: node.to_string(),
        }
    }

    /// `ended_at - started_at` in milliseconds (0 if the clock went backwards).
    pub fn duration_ms(&self) -> u64 {
        let d = self
            .ended_at
            .duration_since(self.started_at)
            .unwrap_or(Duration::ZERO);
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether any stream recorded a packet.
    pub fn has_media(&self) -> bool {
        self.streams.iter().any(|s| s.packets > 0)
    }

    /// The serialisable view, with the files of the finished folder.
    pub fn to_json_view(&self, files: &[FileEntry]) -> RecordingJson {
        RecordingJson {
            id: self.id.clone(),
            call_id: self.call_id.clone(),
            session_id: self.session_id.clone(),
            state: self.state,
            started_at: rfc3339_millis(self.started_at),
            ended_at: rfc3339_millis(self.ended_at),
            duration_ms: self.duration_ms(),
            participants: self.participants.clone(),
            streams: self.streams.clone(),
            files: files.to_vec(),
            extensions: self.extensions.clone(),
            warnings: self.warnings.clone(),
            replicated_to: self.replicated_to.clone(),
            node: self.node.clone(),
            end_reason: self.end_reason.clone(),
            format_version: FORMAT_VERSION,
        }
    }

    /// `recording.json` text (pretty, trailing newline).
    pub fn to_json(&self, files: &[FileEntry]) -> String {
        let mut text = serde_json::to_string_pretty(&self.to_json_view(files))
            .expect("plain strings and numbers serialise");
        text.push('\n');
        text
    }

    /// Reads `recording.json` or `session.json` back: the meta and its `files[]`.
    pub fn from_json(text: &str) -> Result<(RecordingMeta, Vec<FileEntry>), String> {
        let view: RecordingJson = serde_json::from_str(text).map_err(|e| e.to_string())?;
        view.into_meta()
    }
}

/// `recording.json` as written. Contract fields first (DESIGN §4), then Reel's extras.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingJson {
    pub id: String,
    pub call_id: String,
    pub session_id: Option<String>,
    pub state: RecordingState,
    pub started_at: String,
    pub ended_at: String,
    pub duration_ms: u64,
    pub participants: Vec<ParticipantRecord>,
    pub streams: Vec<StreamRecord>,
    pub files: Vec<FileEntry>,
    pub extensions: Vec<String>,
    pub warnings: Vec<String>,
    pub replicated_to: Vec<String>,
    #[serde(default)]
    pub node: String,
    #[serde(default)]
    pub end_reason: String,
    #[serde(default = "format_version_default")]
    pub format_version: u32,
}

fn format_version_default() -> u32 {
    FORMAT_VERSION
}

impl RecordingJson {
    pub fn into_meta(self) -> Result<(RecordingMeta, Vec<FileEntry>), String> {
        let meta = RecordingMeta {
            started_at: parse_rfc3339(&self.started_at)?,
            ended_at: parse_rfc3339(&self.ended_at)?,
            id: self.id,
            call_id: self.call_id,
            session_id: self.session_id,
            state: self.state,
            participants: self.participants,
            streams: self.streams,
            extensions: self.extensions,
            warnings: self.warnings,
            replicated_to: self.replicated_to,
            end_reason: self.end_reason,
            node: self.node,
        };
        Ok((meta, self.files))
    }
}

/// 16 bytes in the 8-4-4-4-12 hex form of a UUID (RFC 9562), as recording ids and
/// `urn:uuid:` metadata ids are written.
pub fn uuid_text(b: &[u8; 16]) -> String {
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// 2026-11-25T17:38:25.123Z
    pub(crate) fn t0() -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_795_628_305_123)
    }

    pub(crate) fn sample_meta() -> RecordingMeta {
        let mut m = RecordingMeta::new("rec-1", "abc@198.51.100.1", t0(), "rec1");
        m.ended_at = t0() + Duration::from_millis(61_500);
        m.state = RecordingState::Complete;
        m.session_id = Some("hVpd7YQgRW2nD22h7q60JQ==".into());
        m.participants = vec![
            ParticipantRecord {
                id: "p1".into(),
                aor: Some("sip:alice@example.com".into()),
                name: Some("Alice".into()),
            },
            ParticipantRecord {
                id: "p2".into(),
                aor: Some("sip:bob@example.com".into()),
                name: None,
            },
        ];
        m.streams = vec![
            StreamRecord {
                label: "1".into(),
                codec: "PCMU".into(),
                participant: Some("p1".into()),
                packets: 3000,
                lost: 2,
                ssrcs: vec![0xdead_beef],
                payload_type: 0,
                clock_rate: 8000,
                ..StreamRecord::default()
            },
            StreamRecord {
                label: "2".into(),
                codec: "PCMU".into(),
                participant: None,
                packets: 0,
                lost: 0,
                ssrcs: vec![],
                payload_type: 0,
                clock_rate: 8000,
                ..StreamRecord::default()
            },
        ];
        m.extensions = vec!["<x:ext xmlns:x=\"urn:example\">v</x:ext>".into()];
        m.warnings = vec!["label 3 has no stream".into()];
        m.end_reason = "bye".into();
        m
    }

    fn files() -> Vec<FileEntry> {
        vec![FileEntry {
            path: "audio.wav".into(),
            kind: "audio".into(),
            bytes: 58,
            sha256: "00".repeat(32),
        }]
    }

    #[test]
    fn recording_json_has_contract_fields() {
        let v: serde_json::Value = serde_json::from_str(&sample_meta().to_json(&files())).unwrap();
        for key in [
            "id",
            "call_id",
            "session_id",
            "state",
            "started_at",
            "ended_at",
            "duration_ms",
            "participants",
            "streams",
            "files",
            "extensions",
            "warnings",
            "replicated_to",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["state"], "complete");
        assert_eq!(v["duration_ms"], 61_500);
        assert_eq!(v["format_version"], 1);
        assert_eq!(v["node"], "rec1");
        assert_eq!(v["end_reason"], "bye");
        for key in ["id", "aor", "name"] {
            assert!(v["participants"][0].get(key).is_some(), "participant {key}");
        }
        assert!(v["participants"][1]["name"].is_null());
        for key in ["path", "kind", "bytes", "sha256"] {
            assert!(v["files"][0].get(key).is_some(), "file {key}");
        }
    }

    #[test]
    fn stream_types_match_contract() {
        let v: serde_json::Value = serde_json::from_str(&sample_meta().to_json(&[])).unwrap();
        let s = &v["streams"][0];
        assert!(s["label"].is_string());
        assert_eq!(s["codec"], "PCMU");
        assert_eq!(s["participant"], "p1");
        assert_eq!(s["packets"], 3000);
        assert_eq!(s["lost"], 2);
        assert_eq!(s["ssrcs"][0], 0xdead_beef_u32);
        assert!(v["streams"][1]["participant"].is_null());
    }

    #[test]
    fn states_are_kebab_case() {
        let mut m = sample_meta();
        for (state, text) in [
            (RecordingState::Complete, "complete"),
            (RecordingState::Partial, "partial"),
            (RecordingState::NoMedia, "no-media"),
        ] {
            m.state = state;
            let v: serde_json::Value = serde_json::from_str(&m.to_json(&[])).unwrap();
            assert_eq!(v["state"], text);
        }
    }

    #[test]
    fn times_are_rfc3339_millis_utc() {
        assert_eq!(rfc3339_millis(t0()), "2026-11-25T17:38:25.123Z");
        assert_eq!(
            rfc3339_millis(UNIX_EPOCH + Duration::from_secs(1)),
            "1970-01-01T00:00:01.000Z"
        );
        let v: serde_json::Value = serde_json::from_str(&sample_meta().to_json(&[])).unwrap();
        assert_eq!(v["started_at"], "2026-11-25T17:38:25.123Z");
        assert_eq!(v["ended_at"], "2026-11-25T17:39:26.623Z");
    }

    #[test]
    fn time_before_epoch_does_not_panic() {
        assert_eq!(
            rfc3339_millis(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn json_round_trips() {
        let m = sample_meta();
        let (back, f) = RecordingMeta::from_json(&m.to_json(&files())).unwrap();
        assert_eq!(back, m);
        assert_eq!(f, files());
    }

    #[test]
    fn sub_millisecond_times_are_truncated_on_round_trip() {
        let mut m = sample_meta();
        m.started_at = t0() + Duration::from_micros(456);
        let (back, _) = RecordingMeta::from_json(&m.to_json(&[])).unwrap();
        assert_eq!(back.started_at, t0());
    }

    #[test]
    fn duration_is_zero_when_clock_went_backwards() {
        let mut m = sample_meta();
        m.ended_at = t0() - Duration::from_secs(1);
        assert_eq!(m.duration_ms(), 0);
    }

    #[test]
    fn extensions_are_kept_verbatim() {
        let v: serde_json::Value = serde_json::from_str(&sample_meta().to_json(&[])).unwrap();
        assert_eq!(
            v["extensions"][0],
            "<x:ext xmlns:x=\"urn:example\">v</x:ext>"
        );
    }

    #[test]
    fn reads_json_without_extra_fields() {
        let text = r#"{"id":"r","call_id":"c","session_id":null,"state":"partial",
            "started_at":"2026-11-25T17:38:25.123Z","ended_at":"2026-11-25T17:38:26.123Z",
            "duration_ms":1000,"participants":[],"streams":[{"label":"1","codec":"PCMA",
            "participant":null,"packets":1,"lost":0,"ssrcs":[1],"payload_type":8,"clock_rate":8000}],
            "files":[],"extensions":[],"warnings":[],"replicated_to":[]}"#;
        let (m, _) = RecordingMeta::from_json(text).unwrap();
        assert_eq!(m.state, RecordingState::Partial);
        assert_eq!(m.duration_ms(), 1000);
        assert_eq!(m.streams[0].duplicates, 0);
    }

    #[test]
    fn bad_time_is_an_error() {
        let text = sample_meta()
            .to_json(&[])
            .replace("2026-11-25T17:38:25.123Z", "yesterday");
        assert!(
            RecordingMeta::from_json(&text)
                .unwrap_err()
                .contains("yesterday")
        );
    }
}
