//! Recordings on disk: the spool of sessions in progress, finalize into the folder layout of
//! DESIGN §4 (`recording.json` last and atomically), the start-up scan that finalizes what a
//! crash left in the spool (`state: partial`), and quarantine with a reason. The media writer
//! appends packets to a per-recording journal ([`journal`]); [`finalize`] turns a journal into
//! audio files off the hot path.
//!
//! Must not: know SIP. Everything here is plain data in, files out.

pub mod abandon;
pub mod finalize;
pub mod journal;
pub mod model;
pub mod spool;
pub mod wav;

pub use finalize::AudioFormat;
pub use model::{
    DtmfRecord, FORMAT_VERSION, FileEntry, ParticipantRecord, RecordingJson, RecordingMeta,
    RecordingState, StreamRecord,
};
pub use spool::{Recovery, Spool};
