//! The `recording.json` model (DESIGN §4). Field names are a contract read by outside tools.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

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

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
    humantime::format_rfc3339_millis(t).to_string()
}
