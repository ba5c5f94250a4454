//! The spool (`DATA_DIR/spool/<id>/`) and finalize into `DATA_DIR/recordings/YYYY/MM/DD/<id>/`.

use std::io;
use std::path::{Path, PathBuf};

use super::model::RecordingMeta;

pub struct Spool {
    data_dir: PathBuf,
}

impl Spool {
    /// Creates `recordings/`, `spool/` and `quarantine/` under `data_dir` if missing.
    pub fn open(data_dir: &Path) -> io::Result<Spool> {
        Ok(Spool { data_dir: data_dir.to_path_buf() })
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Writes (atomically) the session's current state to `spool/<id>/session.json`, so a crash
    /// can be finalized later. Called at start and on every change.
    pub fn save_state(&self, meta: &RecordingMeta) -> io::Result<()> {
        let _ = meta;
        todo!()
    }

    /// Stores one metadata version as `spool/<id>/metadata/NNN.xml` (001, 002 ...).
    pub fn add_metadata_version(&self, id: &str, xml: &[u8]) -> io::Result<()> {
        let _ = (id, xml);
        todo!()
    }

    /// Finalizes: `audio.wav` (silent, spanning the timeline, when no media was recorded),
    /// `metadata.xml` (the last version; `metadata/NNN.xml` kept when there were several),
    /// `recording.json` last (temp, fsync, rename), then the folder moves into
    /// `recordings/YYYY/MM/DD/<id>/` (date of `started_at`, UTC). Returns the final folder.
    pub fn finalize(&self, meta: &RecordingMeta) -> io::Result<PathBuf> {
        let _ = meta;
        todo!()
    }

    /// Start-up scan: finalizes every spooled session as `partial` (end = last state save or
    /// the newest file time); what cannot be finalized moves to `quarantine/<id>/` with a
    /// `reason.txt`. Returns the folders written.
    pub fn recover(&self) -> Vec<PathBuf> {
        todo!()
    }
}
