//! Dropping the spool entry of a session that never started (cancelled or refused before its
//! 200 OK): no recording exists, so nothing is finalized.

use std::io;

use super::spool::Spool;

impl Spool {
    /// Removes `spool/<id>/`. An id that is not a plain folder name is refused.
    pub fn abandon(&self, id: &str) -> io::Result<()> {
        if id.is_empty() || id.contains(['/', '\\']) || id.starts_with('.') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad spool id {id:?}"),
            ));
        }
        let dir = self.data_dir().join("spool").join(id);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other.map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abandon_removes_only_that_spool_entry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path()).expect("open");
        for id in ["a", "b"] {
            std::fs::create_dir_all(dir.path().join("spool").join(id)).expect("mkdir");
        }
        spool.abandon("a").expect("abandon");
        assert!(!dir.path().join("spool/a").exists());
        assert!(dir.path().join("spool/b").exists());
        assert!(spool.abandon("a").is_ok(), "abandoning twice is fine");
    }

    #[test]
    fn abandon_refuses_paths() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path()).expect("open");
        assert!(spool.abandon("../x").is_err());
        assert!(spool.abandon("").is_err());
    }
}
