//! The spool (`DATA_DIR/spool/<id>/`) and finalize into `DATA_DIR/recordings/YYYY/MM/DD/<id>/`.
//!
//! Owns every file operation on recordings: the session state file, metadata versions,
//! finalize, the start-up crash scan and quarantine. All I/O is blocking `std::fs`: this runs
//! on the writer thread, never on the async control thread.
//!
//! Crash safety: every file that matters is written to a temp name, fsynced, renamed, and the
//! directory fsynced. A finished folder appears in `recordings/` only by one directory rename,
//! with `recording.json` already inside it. Nothing is deleted on error: what cannot be
//! finalized is moved to `quarantine/` with a `reason.txt`.
//!
//! Journal: when `spool/<id>/journal.bin` exists, finalize renders the audio from it
//! (`record::finalize`) and takes the stream counters from it; the journal is deleted once
//! `recording.json` is in place, unless `record.keep_raw` ([`Spool::set_keep_raw`]), in which
//! case it stays in the folder and is listed in `files[]` as `raw`. Without a journal the audio
//! is silence spanning the timeline, as before journals existed.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use super::finalize::{AudioFormat, Plan, layout_of};
use super::model::{FileEntry, RecordingMeta, RecordingState, rfc3339_millis};
use super::wav;

/// Session state while in progress; superseded by `recording.json`.
pub const SESSION_FILE: &str = "session.json";
pub const RECORDING_FILE: &str = "recording.json";
pub const AUDIO_FILE: &str = "audio.wav";
pub const METADATA_FILE: &str = "metadata.xml";
pub const METADATA_DIR: &str = "metadata";
pub const REASON_FILE: &str = "reason.txt";
/// The packet journal the media writer appends to (`record::journal`).
pub const JOURNAL_FILE: &str = "journal.bin";

#[derive(Clone)]
pub struct Spool {
    data_dir: PathBuf,
    /// `record.audio`: G.711 kept as G.711 in `audio.wav`, or decoded to PCM16.
    audio: AudioFormat,
    /// `record.keep_raw`: keep `journal.bin` in the finished folder.
    keep_raw: bool,
    /// Fsync session state and metadata versions as they are written (default). The writer
    /// thread turns this off and instead syncs the whole file system once per group-commit
    /// interval ([`Spool::sync_all`]): the same crash window as the journal, at one sync per
    /// interval instead of several per call.
    state_fsync: bool,
}

/// What the start-up scan did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Recording folders written (as `partial`, or moved as they were when a crash hit between
    /// writing `recording.json` and the final rename).
    pub finalized: Vec<PathBuf>,
    /// Folders moved to `quarantine/`, each with a `reason.txt`.
    pub quarantined: Vec<PathBuf>,
    /// Spool folders removed: empty ones, a call setup the crash cut short before it wrote
    /// anything (one with its metadata goes to quarantine, saying so).
    pub discarded: Vec<PathBuf>,
}

/// The error of a finalize that panicked, with the panic's message.
#[derive(Debug)]
pub struct FinalizePanicked(pub String);

impl std::fmt::Display for FinalizePanicked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "finalize panicked (a bug): {}", self.0)
    }
}

impl std::error::Error for FinalizePanicked {}

/// Whether `e` is a [`FinalizePanicked`]: retrying would only panic again.
pub fn is_panic(e: &io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.is::<FinalizePanicked>())
}

/// Runs `f`, turning a panic into a [`FinalizePanicked`] error.
fn guarded<T>(f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        Err(io::Error::other(FinalizePanicked(
            crate::panic_text(payload.as_ref()).to_string(),
        )))
    })
}

/// Wraps an io::Error with the operation and path, keeping its kind.
fn ctx(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> io::Error {
    let path = path.to_path_buf();
    move |e| io::Error::new(e.kind(), format!("{op} {}: {e}", path.display()))
}

/// Recording ids become directory names: refuse anything that could escape the spool.
fn check_id(id: &str) -> io::Result<()> {
    let bad = id.is_empty()
        || id.len() > 200
        || id.starts_with('.')
        || id.contains(['/', '\\', '\0'])
        || id.chars().any(char::is_control);
    if bad {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("recording id {id:?} is not usable as a folder name"),
        ));
    }
    Ok(())
}

fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

fn is_temp(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp")
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(ctx("fsync directory", dir))
}

/// Temp file, fsync, rename, fsync the directory: the file is either old or new, never torn.
fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let tmp = temp_name(path);
    let mut f = File::create(&tmp).map_err(ctx("create", &tmp))?;
    fill(&mut f).map_err(ctx("write", &tmp))?;
    f.sync_all().map_err(ctx("fsync", &tmp))?;
    drop(f);
    fs::rename(&tmp, path).map_err(ctx("rename into place", path))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with(path, |f| f.write_all(bytes))
}

/// `path`, or `path-1`, `path-2` ... whichever does not exist yet: never overwrite.
fn unique_dest(parent: &Path, name: &str) -> PathBuf {
    let first = parent.join(name);
    if !first.exists() {
        return first;
    }
    (1u32..)
        .map(|k| parent.join(format!("{name}-{k}")))
        .find(|p| !p.exists())
        .expect("some suffix is free")
}

/// `metadata/NNN.xml` files, ordered by number.
fn metadata_versions(dir: &Path) -> io::Result<Vec<(u32, PathBuf)>> {
    let mdir = dir.join(METADATA_DIR);
    let entries = match fs::read_dir(&mdir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ctx("list", &mdir)(e)),
    };
    let mut versions = Vec::new();
    for entry in entries {
        let entry = entry.map_err(ctx("list", &mdir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(n) = name
            .strip_suffix(".xml")
            .and_then(|n| n.parse::<u32>().ok())
        {
            versions.push((n, entry.path()));
        }
    }
    versions.sort();
    Ok(versions)
}

fn file_kind(rel: &str) -> &'static str {
    let ext = rel.rsplit('.').next().unwrap_or("");
    if matches!(ext, "wav" | "ogg" | "opus") {
        "audio"
    } else if rel == METADATA_FILE || rel.starts_with("metadata/") {
        "metadata"
    } else {
        "raw"
    }
}

fn sha256_file(path: &Path) -> io::Result<(u64, String)> {
    let mut f = File::open(path).map_err(ctx("open", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(ctx("read", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((total, hex::encode(hasher.finalize())))
}

/// Every file of a folder (recursively) with size and sha256, paths relative with `/`,
/// sorted; leaves out the state files, our temp files and the top-level names in `skip`.
fn list_files(dir: &Path, skip: &[&str]) -> io::Result<Vec<FileEntry>> {
    fn walk(root: &Path, dir: &Path, skip: &[&str], out: &mut Vec<FileEntry>) -> io::Result<()> {
        for entry in fs::read_dir(dir).map_err(ctx("list", dir))? {
            let entry = entry.map_err(ctx("list", dir))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let ty = entry.file_type().map_err(ctx("stat", &path))?;
            if ty.is_dir() {
                walk(root, &path, skip, out)?;
                continue;
            }
            let top = dir == root;
            let state_file = name == SESSION_FILE || name == RECORDING_FILE;
            if is_temp(&name) || (top && (state_file || skip.contains(&name.as_str()))) {
                continue;
            }
            let rel = path
                .strip_prefix(root)
                .expect("walk stays under root")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            let (bytes, sha256) = sha256_file(&path)?;
            out.push(FileEntry {
                kind: file_kind(&rel).to_string(),
                path: rel,
                bytes,
                sha256,
            });
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, skip, &mut out)?;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// When the live session last wrote to its folder: the newest modification time of the journal
/// and of the metadata versions, the only files it writes after `session.json`. Everything
/// else in the folder (`audio.wav`, `metadata.xml`, stored codec files, temporaries) is
/// finalize's output: a crash scan killed half-way leaves those behind with the scan's own
/// time, and counting them would stretch the recording by the whole downtime.
fn last_written(dir: &Path) -> Option<SystemTime> {
    let mtime = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    let versions = metadata_versions(dir).unwrap_or_default();
    std::iter::once(mtime(&dir.join(JOURNAL_FILE)))
        .chain(versions.iter().map(|(_, p)| mtime(p)))
        .flatten()
        .max()
}

/// Our own temp files are half-written copies of files that exist (or never mattered).
fn remove_temp_files(dir: &Path) -> io::Result<()> {
    fn walk(dir: &Path) -> io::Result<()> {
        for entry in fs::read_dir(dir).map_err(ctx("list", dir))? {
            let entry = entry.map_err(ctx("list", dir))?;
            let path = entry.path();
            if entry.file_type().map_err(ctx("stat", &path))?.is_dir() {
                walk(&path)?;
            } else if is_temp(&entry.file_name().to_string_lossy()) {
                fs::remove_file(&path).map_err(ctx("remove temp file", &path))?;
            }
        }
        Ok(())
    }
    walk(dir)
}

/// `syncfs(2)` of the file system holding a spool (see [`Spool::fs_sync`]).
#[derive(Clone, Debug)]
pub struct FsSync {
    dir: PathBuf,
}

impl FsSync {
    pub fn sync(&self) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let dir = File::open(&self.dir).map_err(ctx("open", &self.dir))?;
        // SAFETY: syncfs takes a valid descriptor, which `dir` owns for the whole call.
        let rc = unsafe { libc::syncfs(dir.as_raw_fd()) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error()).map_err(ctx("syncfs", &self.dir))
        }
    }
}

impl Spool {
    /// Creates `recordings/`, `spool/` and `quarantine/` under `data_dir` if missing.
    pub fn open(data_dir: &Path) -> io::Result<Spool> {
        let spool = Spool {
            data_dir: data_dir.to_path_buf(),
            audio: AudioFormat::default(),
            keep_raw: false,
            state_fsync: true,
        };
        for dir in [
            spool.recordings_dir(),
            spool.spool_dir(),
            spool.quarantine_dir(),
        ] {
            fs::create_dir_all(&dir).map_err(ctx("create directory", &dir))?;
        }
        Ok(spool)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// `record.audio` (default `wav-g711`): how finalize writes G.711 into `audio.wav`.
    pub fn set_audio_format(&mut self, audio: AudioFormat) {
        self.audio = audio;
    }

    pub fn audio_format(&self) -> AudioFormat {
        self.audio
    }

    /// `record.keep_raw` (default false): keep `journal.bin` in the finished folder, listed in
    /// `files[]` as `raw`.
    pub fn set_keep_raw(&mut self, keep: bool) {
        self.keep_raw = keep;
    }

    /// `spool/<id>/journal.bin`, for the media writer thread (not created; the spool folder
    /// exists once [`Spool::save_state`] ran). An id that could escape the spool is refused.
    pub fn journal_path(&self, id: &str) -> io::Result<PathBuf> {
        Ok(self.session_dir(id)?.join(JOURNAL_FILE))
    }

    pub fn recordings_dir(&self) -> PathBuf {
        self.data_dir.join("recordings")
    }

    pub fn spool_dir(&self) -> PathBuf {
        self.data_dir.join("spool")
    }

    pub fn quarantine_dir(&self) -> PathBuf {
        self.data_dir.join("quarantine")
    }

    /// `spool/<id>/` (not created).
    pub fn session_dir(&self, id: &str) -> io::Result<PathBuf> {
        check_id(id)?;
        Ok(self.spool_dir().join(id))
    }

    /// `spool/<id>/`, created (with its parent synced) when missing.
    pub fn ensure_session_dir(&self, id: &str) -> io::Result<PathBuf> {
        let dir = self.session_dir(id)?;
        if !dir.is_dir() {
            fs::create_dir_all(&dir).map_err(ctx("create directory", &dir))?;
            if self.state_fsync {
                sync_dir(&self.spool_dir())?;
            }
        }
        Ok(dir)
    }

    /// See the `state_fsync` field.
    pub fn set_state_fsync(&mut self, on: bool) {
        self.state_fsync = on;
    }

    /// One `syncfs(2)` of the file system holding the data directory: every journal write,
    /// state file and rename made so far is durable after it.
    pub fn sync_all(&self) -> io::Result<()> {
        self.fs_sync().sync()
    }

    /// A handle that runs [`Spool::sync_all`] from another thread (the writer's group commit
    /// runs it on its own thread, so a slow sync never holds up call setup).
    pub fn fs_sync(&self) -> FsSync {
        FsSync {
            dir: self.spool_dir(),
        }
    }

    /// Atomic replace (temp, rename), with fsyncs when `state_fsync` is on.
    fn write_state(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        if self.state_fsync {
            return write_atomic(path, bytes);
        }
        let tmp = temp_name(path);
        fs::write(&tmp, bytes).map_err(ctx("write", &tmp))?;
        fs::rename(&tmp, path).map_err(ctx("rename into place", path))
    }

    /// Writes (atomically) the session's current state to `spool/<id>/session.json`, so a crash
    /// can be finalized later. Called at start and on every change.
    ///
    /// `ended_at` is taken as "last seen": the crash scan uses it as the end of the recording.
    pub fn save_state(&self, meta: &RecordingMeta) -> io::Result<()> {
        let dir = self.ensure_session_dir(&meta.id)?;
        self.write_state(&dir.join(SESSION_FILE), meta.to_json(&[]).as_bytes())
    }

    /// Stores one metadata version as `spool/<id>/metadata/NNN.xml` (001, 002 ...).
    pub fn add_metadata_version(&self, id: &str, xml: &[u8]) -> io::Result<()> {
        let dir = self.ensure_session_dir(id)?;
        let mdir = dir.join(METADATA_DIR);
        if !mdir.is_dir() {
            fs::create_dir_all(&mdir).map_err(ctx("create directory", &mdir))?;
            if self.state_fsync {
                sync_dir(&dir)?;
            }
        }
        let next = metadata_versions(&dir)?.last().map_or(1, |(n, _)| n + 1);
        self.write_state(&mdir.join(format!("{next:03}.xml")), xml)
    }

    /// Finalizes: `audio.wav` rendered from `journal.bin` when there is one (plus per-stream
    /// `.opus` / `.g729` files, and the stream counters and DTMF from the journal), else silent
    /// spanning the timeline,
    /// `metadata.xml` (the last version; `metadata/NNN.xml` kept when there were several),
    /// `recording.json` last (temp, fsync, rename), then the folder moves into
    /// `recordings/YYYY/MM/DD/<id>/` (date of `started_at`, UTC). Returns the final folder.
    ///
    /// Without a journal, an `audio.wav` already in the spool folder is kept. With one, the
    /// state is `complete` when any packet was journaled, else `no-media`; `partial` stays
    /// (DESIGN §4). Without one, a `complete` state with no packet counted is `no-media`.
    /// The journal is deleted only after `recording.json` is durable, unless `keep_raw`.
    /// If the destination exists it is not overwritten: the folder gets `-1`, `-2` ...
    pub fn finalize(&self, meta: &RecordingMeta) -> io::Result<PathBuf> {
        let dir = self.ensure_session_dir(&meta.id)?;
        self.finalize_dir(&dir, meta)
    }

    /// A panic while finalizing (a bug met by this recording's data) becomes a
    /// [`FinalizePanicked`] error: the writer quarantines that folder, and the crash scan goes
    /// on with the next, rather than the thread (and every other recording) dying with it.
    fn finalize_dir(&self, dir: &Path, meta: &RecordingMeta) -> io::Result<PathBuf> {
        guarded(|| self.finalize_dir_unguarded(dir, meta))
    }

    fn finalize_dir_unguarded(&self, dir: &Path, meta: &RecordingMeta) -> io::Result<PathBuf> {
        check_id(&meta.id)?;
        if dir.join(RECORDING_FILE).exists() {
            // A retry after a try that failed past recording.json (the move into a read-only
            // or full recordings/): its audio and counts are there, its journal maybe gone.
            return self.finish_rendered(dir);
        }
        let mut meta = meta.clone();
        remove_temp_files(dir)?;

        let audio = dir.join(AUDIO_FILE);
        let journal_path = dir.join(JOURNAL_FILE);
        let journal = match fs::read(&journal_path) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(ctx("read", &journal_path)(e)),
        };
        if let Some(bytes) = &journal {
            self.render_journal(dir, bytes, &mut meta).map_err(|e| {
                io::Error::new(e.kind(), format!("{}: {e}", journal_path.display()))
            })?;
        } else {
            if meta.state == RecordingState::Complete && !meta.has_media() {
                meta.state = RecordingState::NoMedia;
            }
            // Written every time, even over an `audio.wav` an interrupted finalize left: the
            // silence must span this `meta`'s timeline, which may not be the one it had then.
            if meta.has_media() {
                meta.warnings.push(
                    "packets were counted but no audio was journaled: audio.wav is silence".into(),
                );
            }
            write_silent_audio(&audio, &meta, self.audio)?;
        }

        let versions = metadata_versions(dir)?;
        if let Some((_, last)) = versions.last() {
            let xml = fs::read(last).map_err(ctx("read", last))?;
            write_atomic(&dir.join(METADATA_FILE), &xml)?;
        }
        if let [(_, only)] = versions.as_slice() {
            // One version: metadata.xml is it (now durable), the metadata/ folder adds nothing.
            fs::remove_file(only).map_err(ctx("remove", only))?;
            let mdir = dir.join(METADATA_DIR);
            fs::remove_dir(&mdir).map_err(ctx("remove directory", &mdir))?;
            sync_dir(dir)?;
        }

        let drop_journal = journal.is_some() && !self.keep_raw;
        let skip: &[&str] = if drop_journal { &[JOURNAL_FILE] } else { &[] };
        let files = list_files(dir, skip)?;
        // recording.json before removing session.json: a crash between the two leaves a folder
        // the scan just moves; the reverse order could leave one with neither.
        write_atomic(&dir.join(RECORDING_FILE), meta.to_json(&files).as_bytes())?;
        let session = dir.join(SESSION_FILE);
        match fs::remove_file(&session) {
            Ok(()) => sync_dir(dir)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(ctx("remove", &session)(e)),
        }
        // Only now, with the audio and recording.json durable, is the journal redundant. A
        // crash before this line leaves it in a folder whose recording.json does not list it;
        // the scan removes it then (see `recover_one`).
        if drop_journal {
            fs::remove_file(&journal_path).map_err(ctx("remove", &journal_path))?;
            sync_dir(dir)?;
        }
        self.move_to_recordings(dir, &meta)
    }

    /// Reads the journal against `meta`: counters, DTMF and state into `meta`, then
    /// `audio.wav` and the stored per-stream files, each written atomically.
    fn render_journal(
        &self,
        dir: &Path,
        journal: &[u8],
        meta: &mut RecordingMeta,
    ) -> io::Result<()> {
        let plan = Plan::new(journal, meta)?;
        plan.apply_counters(meta);
        meta.warnings.extend(plan.warnings.iter().cloned());
        if meta.state != RecordingState::Partial {
            meta.state = if plan.has_media() {
                RecordingState::Complete
            } else {
                RecordingState::NoMedia
            };
        }
        let meta: &RecordingMeta = meta;
        write_atomic_with(&dir.join(AUDIO_FILE), |f| {
            let mut out = io::BufWriter::with_capacity(256 * 1024, f);
            plan.write_wav(meta, self.audio, &mut out)?;
            out.flush()
        })?;
        for (index, name) in plan.stored_files(meta) {
            write_atomic_with(&dir.join(&name), |f| {
                let mut out = io::BufWriter::with_capacity(256 * 1024, f);
                plan.write_stored(meta, index, &mut out)?;
                out.flush()
            })?;
        }
        Ok(())
    }

    /// Renames the finished spool folder to `recordings/YYYY/MM/DD/<id>[-N]/`.
    fn move_to_recordings(&self, dir: &Path, meta: &RecordingMeta) -> io::Result<PathBuf> {
        let date = rfc3339_millis(meta.started_at);
        let (y, m, d) = (&date[0..4], &date[5..7], &date[8..10]);
        let root = self.recordings_dir();
        let parent = root.join(y).join(m).join(d);
        fs::create_dir_all(&parent).map_err(ctx("create directory", &parent))?;
        // The writer and the crash scan move folders of different ids, and one thread moves
        // each id, so check-then-rename is safe.
        let dest = unique_dest(&parent, &meta.id);
        fs::rename(dir, &dest).map_err(ctx("move recording to", &dest))?;
        // New directory entries are durable only once their parents are synced.
        for p in [
            parent.as_path(),
            &root.join(y).join(m),
            &root.join(y),
            &root,
            &self.spool_dir(),
        ] {
            sync_dir(p)?;
        }
        Ok(dest)
    }

    /// Moves `spool/<id>/` to `quarantine/<id>[-N]/` with a `reason.txt`. For a session that
    /// cannot be finalized; nothing in it is deleted.
    pub fn quarantine(&self, id: &str, reason: &str) -> io::Result<PathBuf> {
        let dir = self.session_dir(id)?;
        self.quarantine_dir_path(&dir, reason)
    }

    fn quarantine_dir_path(&self, dir: &Path, reason: &str) -> io::Result<PathBuf> {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // The reason goes in before the move, so it travels with the data even if the move
        // fails and the folder stays in the spool.
        let text = format!("{}: {reason}\n", rfc3339_millis(SystemTime::now()));
        write_atomic(&dir.join(REASON_FILE), text.as_bytes())?;
        let qdir = self.quarantine_dir();
        fs::create_dir_all(&qdir).map_err(ctx("create directory", &qdir))?;
        let dest = unique_dest(&qdir, &name);
        fs::rename(dir, &dest).map_err(ctx("move to quarantine", &dest))?;
        sync_dir(&qdir)?;
        sync_dir(&self.spool_dir())?;
        Ok(dest)
    }

    /// Start-up scan: finalizes every spooled session as `partial` (end = last state save or
    /// the newest file time); what cannot be finalized moves to `quarantine/<id>/` with a
    /// `reason.txt`. Returns the folders written.
    pub fn recover(&self) -> Vec<PathBuf> {
        self.recover_report().finalized
    }

    /// [`Spool::recover`], also telling what went to quarantine.
    pub fn recover_report(&self) -> Recovery {
        self.recover_dirs(self.spooled())
    }

    /// The folders in `spool/` now, in name order: at start-up, before any session begins,
    /// what the last process left.
    pub fn spooled(&self) -> Vec<PathBuf> {
        let spool = self.spool_dir();
        let entries = match fs::read_dir(&spool) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::error!("crash scan: cannot list {}: {e}", spool.display());
                return Vec::new();
            }
        };
        let mut dirs: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect();
        dirs.sort();
        dirs
    }

    /// The RTP ports the sessions in `dirs` (from [`Spool::spooled`]) were receiving on, as
    /// their `session.json` says: after a crash their SRCs may still be sending there. A
    /// folder without a readable `session.json` gives none.
    pub fn rtp_ports_of(dirs: &[PathBuf]) -> Vec<u16> {
        let mut ports = Vec::new();
        for dir in dirs {
            let Ok(text) = fs::read_to_string(dir.join(SESSION_FILE)) else {
                continue;
            };
            if let Ok((meta, _)) = RecordingMeta::from_json(&text) {
                ports.extend(meta.streams.iter().filter_map(|s| s.rtp_port));
            }
        }
        ports
    }

    /// The crash scan over `dirs` (from [`Spool::spooled`]): each is finalized as partial or
    /// moved to quarantine with its reason.
    pub fn recover_dirs(&self, dirs: Vec<PathBuf>) -> Recovery {
        let mut report = Recovery::default();
        for dir in dirs {
            let one =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.recover_one(&dir)))
                    .unwrap_or_else(|payload| {
                        Err(format!(
                            "recovery panicked (a bug): {}",
                            crate::panic_text(payload.as_ref())
                        ))
                    });
            match one {
                Ok(Recovered::Folder(done)) => {
                    tracing::info!("crash scan: recovered {}", done.display());
                    report.finalized.push(done);
                }
                Ok(Recovered::Discarded) => {
                    tracing::info!(
                        "crash scan: removed {}: an empty folder (a call setup cut short \
                         before it wrote anything)",
                        dir.display()
                    );
                    report.discarded.push(dir);
                }
                Err(reason) => match self.quarantine_dir_path(&dir, &reason) {
                    Ok(q) => {
                        tracing::warn!("crash scan: quarantined {}: {reason}", q.display());
                        report.quarantined.push(q);
                    }
                    Err(e) => tracing::error!(
                        "crash scan: cannot quarantine {} ({reason}): {e}; left in place",
                        dir.display()
                    ),
                },
            }
        }
        report
    }

    /// One spool folder: `Ok` with what became of it, or `Err(reason for quarantine)`.
    /// A folder whose recording.json is written (a finalize that crashed, or failed, after
    /// it): only the leftovers go and the folder moves. Rendering it again would read a
    /// journal that may be gone by now and overwrite the audio with silence.
    fn finish_rendered(&self, dir: &Path) -> io::Result<PathBuf> {
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            io::Error::other(format!("{}: {what}: {e}", dir.display()))
        };
        let text = fs::read_to_string(dir.join(RECORDING_FILE))
            .map_err(|e| fail("recording.json is unreadable", &e))?;
        let (meta, files) =
            RecordingMeta::from_json(&text).map_err(|e| fail("recording.json is not valid", &e))?;
        let session = dir.join(SESSION_FILE);
        if session.exists() {
            fs::remove_file(&session).map_err(|e| fail("cannot remove session.json", &e))?;
        }
        // Finalize rendered the audio and then stopped before deleting the journal: it is
        // redundant when recording.json does not list it (keep_raw lists it).
        let journal = dir.join(JOURNAL_FILE);
        if journal.exists() && !files.iter().any(|f| f.path == JOURNAL_FILE) {
            fs::remove_file(&journal)
                .map_err(|e| fail("cannot remove the rendered journal", &e))?;
        }
        remove_temp_files(dir)?;
        self.move_to_recordings(dir, &meta)
            .map_err(|e| fail("move failed", &e))
    }

    fn recover_one(&self, dir: &Path) -> Result<Recovered, String> {
        if dir.join(RECORDING_FILE).exists() {
            // The crash hit after recording.json was written: the folder is complete.
            return self
                .finish_rendered(dir)
                .map(Recovered::Folder)
                .map_err(|e| e.to_string());
        }
        let state = dir.join(SESSION_FILE);
        if !state.exists() {
            match setup_cut_short(dir) {
                Some(0) => {
                    fs::remove_dir_all(dir).map_err(|e| format!("cannot remove: {e}"))?;
                    return Ok(Recovered::Discarded);
                }
                Some(_) => {
                    return Err(
                        "a call setup cut short before its 200: no session.json, only \
                                what setup writes first (the INVITE's metadata, temporary \
                                files); the INVITE was never answered and no media was \
                                recorded, so this holds no recording (safe to delete)"
                            .into(),
                    );
                }
                None => {}
            }
        }
        let text = fs::read_to_string(&state)
            .map_err(|e| format!("no readable session.json ({e}); cannot tell what this is"))?;
        let (mut meta, _) = RecordingMeta::from_json(&text)
            .map_err(|e| format!("session.json is not valid: {e}"))?;
        meta.state = RecordingState::Partial;
        meta.end_reason = "recovered".into();
        if let Some(t) = last_written(dir) {
            meta.ended_at = meta.ended_at.max(t);
        }
        meta.ended_at = meta.ended_at.max(meta.started_at);
        meta.warnings
            .push("recovered after an unclean stop: the end may be missing".into());
        self.finalize_dir(dir, &meta)
            .map(Recovered::Folder)
            .map_err(|e| format!("finalize failed: {e}"))
    }
}

/// What the crash scan made of one spool folder.
enum Recovered {
    /// The recording folder it became.
    Folder(PathBuf),
    /// Removed: empty (see [`setup_cut_short`]).
    Discarded,
}

/// Whether a spool folder without `session.json` is a call setup a crash cut short, and then
/// how many files it holds. The 200 waits for `session.json` (DESIGN §1), so such a folder was
/// never answered, and it holds only what setup writes before that: metadata versions and
/// temporary files (the journal is created after `session.json`). `None`: something else is
/// there (a journal, any other file), which that does not explain.
fn setup_cut_short(dir: &Path) -> Option<usize> {
    let mut files = 0;
    for e in fs::read_dir(dir).ok()? {
        let e = e.ok()?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        if !e.file_type().ok()?.is_dir() {
            if !is_temp(&name) {
                return None;
            }
            files += 1;
            continue;
        }
        if name != METADATA_DIR {
            return None;
        }
        for m in fs::read_dir(e.path()).ok()? {
            let m = m.ok()?;
            let n = m.file_name();
            let n = n.to_string_lossy();
            if m.file_type().ok()?.is_dir() || !(n.ends_with(".xml") || is_temp(&n)) {
                return None;
            }
            files += 1;
        }
    }
    Some(files)
}

/// The silent `audio.wav`: the layout finalize would use with no packets (one channel per
/// G.711/G.722 stream in `streams[]` order, A-law only when every one is PCMA, one channel when
/// there is none), spanning the whole timeline.
fn write_silent_audio(path: &Path, meta: &RecordingMeta, audio: AudioFormat) -> io::Result<()> {
    let layout = layout_of(meta, audio, |_| Vec::new());
    let channels = u16::try_from(layout.channels.len().max(1)).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} streams is too many channels", meta.streams.len()),
        )
    })?;
    let frames = layout.frames(meta);
    write_atomic_with(path, |f| {
        // Buffer so the header and the first block go out together.
        let mut out = io::BufWriter::with_capacity(256 * 1024, f);
        wav::write_silent(&mut out, layout.format, channels, layout.rate, frames)?;
        out.flush()
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::record::AudioFormat;
    use crate::record::model::StreamRecord;
    use crate::record::model::tests::{sample_meta, t0};

    fn spool() -> (tempfile::TempDir, Spool) {
        let tmp = tempfile::tempdir().unwrap();
        let spool = Spool::open(&tmp.path().join("data")).unwrap();
        (tmp, spool)
    }

    fn no_media(id: &str, ms: u64) -> RecordingMeta {
        let mut m = RecordingMeta::new(id, "call@host", t0(), "rec1");
        m.ended_at = t0() + Duration::from_millis(ms);
        m.end_reason = "bye".into();
        m
    }

    /// Moves a sample call so that it ended a moment ago, keeping its length.
    fn make_recent(m: &mut RecordingMeta) {
        let len = m.ended_at.duration_since(m.started_at).unwrap();
        m.ended_at = SystemTime::now() - Duration::from_millis(100);
        m.started_at = m.ended_at - len;
    }

    fn read_json(dir: &Path) -> serde_json::Value {
        serde_json::from_str(&fs::read_to_string(dir.join(RECORDING_FILE)).unwrap()).unwrap()
    }

    fn wav_u16(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes([b[at], b[at + 1]])
    }
    fn wav_u32(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn a_panic_while_finalizing_is_an_error_that_says_so_and_is_not_retried() {
        let e = guarded(|| -> io::Result<()> { panic!("boom at sample 7") }).expect_err("caught");
        assert!(is_panic(&e));
        assert!(e.to_string().contains("boom at sample 7"), "{e}");
        let plain = guarded(|| -> io::Result<()> { Err(io::Error::other("disk full")) })
            .expect_err("an error");
        assert!(
            !is_panic(&plain),
            "an I/O error is retried, not quarantined"
        );
        assert_eq!(guarded(|| Ok(5)).ok(), Some(5));
    }

    #[test]
    fn open_creates_the_three_folders() {
        let (_tmp, s) = spool();
        assert!(s.recordings_dir().is_dir());
        assert!(s.spool_dir().is_dir());
        assert!(s.quarantine_dir().is_dir());
    }

    #[test]
    fn save_state_writes_session_json_atomically() {
        let (_tmp, s) = spool();
        let m = sample_meta();
        s.save_state(&m).unwrap();
        let dir = s.session_dir(&m.id).unwrap();
        let text = fs::read_to_string(dir.join(SESSION_FILE)).unwrap();
        assert_eq!(RecordingMeta::from_json(&text).unwrap().0, m);
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from(SESSION_FILE)],
            "no temp file left"
        );
    }

    #[test]
    fn save_state_replaces_previous_state() {
        let (_tmp, s) = spool();
        let mut m = sample_meta();
        s.save_state(&m).unwrap();
        m.ended_at += Duration::from_secs(5);
        s.save_state(&m).unwrap();
        let text = fs::read_to_string(s.session_dir(&m.id).unwrap().join(SESSION_FILE)).unwrap();
        assert_eq!(
            RecordingMeta::from_json(&text).unwrap().0.ended_at,
            m.ended_at
        );
    }

    #[test]
    fn ids_that_escape_the_spool_are_refused() {
        let (_tmp, s) = spool();
        for id in ["", "..", "../x", "a/b", ".hidden", "a\0b"] {
            let mut m = sample_meta();
            m.id = id.into();
            assert_eq!(
                s.save_state(&m).unwrap_err().kind(),
                io::ErrorKind::InvalidInput,
                "{id:?}"
            );
        }
    }

    #[test]
    fn metadata_versions_are_numbered() {
        let (_tmp, s) = spool();
        s.add_metadata_version("r", b"<a/>").unwrap();
        s.add_metadata_version("r", b"<b/>").unwrap();
        let mdir = s.session_dir("r").unwrap().join(METADATA_DIR);
        assert_eq!(fs::read(mdir.join("001.xml")).unwrap(), b"<a/>");
        assert_eq!(fs::read(mdir.join("002.xml")).unwrap(), b"<b/>");
    }

    #[test]
    fn finalize_writes_recording_json_last_and_moves_folder() {
        let (_tmp, s) = spool();
        let m = no_media("r1", 2_000);
        s.save_state(&m).unwrap();
        s.add_metadata_version("r1", b"<recording/>").unwrap();
        let out = s.finalize(&m).unwrap();
        assert_eq!(out, s.recordings_dir().join("2026/11/25/r1"));
        assert!(
            !s.session_dir("r1").unwrap().exists(),
            "spool folder moved away"
        );
        let mut names: Vec<_> = fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["audio.wav", "metadata.xml", "recording.json"]);
        // Written last: no file in the folder is newer than recording.json.
        let mtime = |n: &str| fs::metadata(out.join(n)).unwrap().modified().unwrap();
        assert!(names.iter().all(|n| mtime(n) <= mtime(RECORDING_FILE)));
        let v = read_json(&out);
        assert_eq!(v["id"], "r1");
        assert_eq!(v["duration_ms"], 2_000);
    }

    #[test]
    fn finalize_lists_files_with_size_and_sha256() {
        let (_tmp, s) = spool();
        let m = no_media("r2", 1_000);
        s.add_metadata_version("r2", b"<recording/>").unwrap();
        let out = s.finalize(&m).unwrap();
        let v = read_json(&out);
        let files = v["files"].as_array().unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(files[0]["path"], "audio.wav");
        assert_eq!(files[0]["kind"], "audio");
        assert_eq!(
            files[0]["bytes"],
            fs::metadata(out.join("audio.wav")).unwrap().len()
        );
        assert_eq!(files[1]["path"], "metadata.xml");
        assert_eq!(files[1]["kind"], "metadata");
        // sha256("<recording/>")
        let want = hex::encode(Sha256::digest(b"<recording/>"));
        assert_eq!(files[1]["sha256"], want);
    }

    #[test]
    fn silent_wav_spans_duration() {
        let (_tmp, s) = spool();
        let mut m = no_media("r3", 1_500);
        let stream = |label: &str, codec: &str| StreamRecord {
            label: label.into(),
            codec: codec.into(),
            clock_rate: 8000,
            ..StreamRecord::default()
        };
        m.streams = vec![stream("1", "PCMU"), stream("2", "PCMU")];
        let out = s.finalize(&m).unwrap();
        let b = fs::read(out.join(AUDIO_FILE)).unwrap();
        assert_eq!(wav_u16(&b, 20), 7, "mu-law");
        assert_eq!(wav_u16(&b, 22), 2, "one channel per stream");
        assert_eq!(wav_u32(&b, 24), 8000);
        assert_eq!(wav_u32(&b, 46), 12_000, "1.5 s of frames");
        assert_eq!(b.len(), 58 + 24_000);
        assert!(b[58..].iter().all(|&x| x == 0xFF));
    }

    #[test]
    fn silent_wav_is_alaw_when_every_stream_is_pcma() {
        let (_tmp, s) = spool();
        let mut m = no_media("r4", 100);
        m.streams = vec![StreamRecord {
            label: "1".into(),
            codec: "PCMA".into(),
            ..StreamRecord::default()
        }];
        let b = fs::read(s.finalize(&m).unwrap().join(AUDIO_FILE)).unwrap();
        assert_eq!(wav_u16(&b, 20), 6);
        assert_eq!(wav_u16(&b, 22), 1);
        assert!(b[58..].iter().all(|&x| x == 0xD5));
    }

    #[test]
    fn no_streams_gives_mono_mulaw() {
        let (_tmp, s) = spool();
        let b = fs::read(s.finalize(&no_media("r5", 10)).unwrap().join(AUDIO_FILE)).unwrap();
        assert_eq!(wav_u16(&b, 20), 7);
        assert_eq!(wav_u16(&b, 22), 1);
        assert_eq!(wav_u32(&b, 46), 80);
    }

    #[test]
    fn complete_without_packets_is_written_as_no_media() {
        let (_tmp, s) = spool();
        let mut m = no_media("r6", 10);
        m.state = RecordingState::Complete;
        assert_eq!(read_json(&s.finalize(&m).unwrap())["state"], "no-media");
    }

    #[test]
    fn packets_without_audio_give_silence_and_a_warning() {
        let (_tmp, s) = spool();
        let m = sample_meta(); // complete, stream 1 has packets
        let v = read_json(&s.finalize(&m).unwrap());
        assert_eq!(v["state"], "complete");
        assert!(
            v["warnings"]
                .as_array()
                .unwrap()
                .iter()
                .any(|w| w.as_str().unwrap().contains("silence"))
        );
    }

    #[test]
    fn one_metadata_version_is_only_metadata_xml() {
        let (_tmp, s) = spool();
        s.add_metadata_version("r8", b"<v1/>").unwrap();
        let out = s.finalize(&no_media("r8", 10)).unwrap();
        assert_eq!(fs::read(out.join(METADATA_FILE)).unwrap(), b"<v1/>");
        assert!(!out.join(METADATA_DIR).exists());
    }

    #[test]
    fn two_metadata_versions_are_kept() {
        let (_tmp, s) = spool();
        s.add_metadata_version("r9", b"<v1/>").unwrap();
        s.add_metadata_version("r9", b"<v2/>").unwrap();
        let out = s.finalize(&no_media("r9", 10)).unwrap();
        assert_eq!(fs::read(out.join(METADATA_FILE)).unwrap(), b"<v2/>");
        assert_eq!(fs::read(out.join("metadata/001.xml")).unwrap(), b"<v1/>");
        assert_eq!(fs::read(out.join("metadata/002.xml")).unwrap(), b"<v2/>");
        let v = read_json(&out);
        let paths: Vec<_> = v["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["path"].as_str().unwrap())
            .collect();
        assert_eq!(
            paths,
            [
                "audio.wav",
                "metadata.xml",
                "metadata/001.xml",
                "metadata/002.xml"
            ]
        );
        assert_eq!(v["files"][2]["kind"], "metadata");
    }

    #[test]
    fn no_metadata_means_no_metadata_xml() {
        let (_tmp, s) = spool();
        let out = s.finalize(&no_media("r10", 10)).unwrap();
        assert!(!out.join(METADATA_FILE).exists());
    }

    #[test]
    fn existing_destination_is_not_overwritten() {
        let (_tmp, s) = spool();
        let first = s.finalize(&no_media("dup", 10)).unwrap();
        let second = s.finalize(&no_media("dup", 20)).unwrap();
        let third = s.finalize(&no_media("dup", 30)).unwrap();
        assert_eq!(second, first.with_file_name("dup-1"));
        assert_eq!(third, first.with_file_name("dup-2"));
        assert_eq!(read_json(&first)["duration_ms"], 10);
        assert_eq!(read_json(&second)["duration_ms"], 20);
    }

    #[test]
    fn folder_date_is_utc_date_of_start() {
        let (_tmp, s) = spool();
        let mut m = no_media("late", 10);
        // 2026-12-31T23:59:59.900Z: the call crosses midnight; the folder is the start's date.
        m.started_at = UNIX_EPOCH + Duration::from_millis(1_798_761_599_900);
        m.ended_at = m.started_at + Duration::from_secs(2);
        assert_eq!(
            s.finalize(&m).unwrap(),
            s.recordings_dir().join("2026/12/31/late")
        );
    }

    #[test]
    fn recover_finalizes_spooled_session_as_partial() {
        let (_tmp, s) = spool();
        let mut m = sample_meta();
        m.state = RecordingState::Complete;
        m.end_reason = String::new();
        // Recovery ends the call at its newest file time (now): the call must have started
        // shortly before, or the test would depend on today's date.
        make_recent(&mut m);
        s.save_state(&m).unwrap();
        s.add_metadata_version(&m.id, b"<recording/>").unwrap();
        let out = s.recover();
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].file_name().unwrap(), m.id.as_str());
        assert_eq!(
            out[0]
                .strip_prefix(s.recordings_dir())
                .unwrap()
                .components()
                .count(),
            4,
            "YYYY/MM/DD/<id>: {out:?}"
        );
        let v = read_json(&out[0]);
        assert_eq!(v["state"], "partial");
        assert_eq!(v["end_reason"], "recovered");
        assert!(out[0].join(METADATA_FILE).exists());
        assert!(!out[0].join(SESSION_FILE).exists());
        assert!(
            fs::read_dir(s.spool_dir()).unwrap().next().is_none(),
            "spool is empty"
        );
    }

    #[test]
    fn recover_ends_at_newest_file_time() {
        let (_tmp, s) = spool();
        let mut m = no_media("old", 0);
        let start = SystemTime::now() - Duration::from_secs(600);
        m.started_at = start;
        m.ended_at = start + Duration::from_secs(1);
        s.save_state(&m).unwrap();
        // A journal written after the last state save: it proves the call went on.
        fs::write(s.session_dir("old").unwrap().join("journal.bin"), b"x").unwrap();
        let out = s.recover();
        let v = read_json(&out[0]);
        assert!(
            v["duration_ms"].as_u64().unwrap() >= 599_000,
            "{}",
            v["duration_ms"]
        );
    }

    #[test]
    fn a_scan_killed_half_way_does_not_stretch_the_recording_by_the_downtime() {
        let (_tmp, s) = spool();
        let mut m = no_media("cut", 0);
        let start = SystemTime::now() - Duration::from_secs(600);
        m.started_at = start;
        m.ended_at = start + Duration::from_secs(1);
        s.save_state(&m).unwrap();
        let dir = s.session_dir("cut").unwrap();
        let at = |name: &str, t: SystemTime| {
            let f = fs::File::options()
                .write(true)
                .open(dir.join(name))
                .unwrap();
            f.set_modified(t).unwrap();
        };
        // The call's last journal write, 20 s in; the metadata version, 5 s in.
        s.add_metadata_version("cut", b"<recording/>").unwrap();
        at("metadata/001.xml", start + Duration::from_secs(5));
        fs::write(dir.join(JOURNAL_FILE), b"x").unwrap();
        at(JOURNAL_FILE, start + Duration::from_secs(20));
        // What a scan killed after its first outputs leaves, ten minutes after the crash.
        fs::write(dir.join(AUDIO_FILE), b"RIFF from the killed scan").unwrap();
        fs::write(dir.join(METADATA_FILE), b"<recording/>").unwrap();
        fs::write(dir.join(".audio.wav.tmp"), b"half").unwrap();
        let v = read_json(&s.recover()[0]);
        assert_eq!(v["duration_ms"], 20_000, "ends at the journal's last write");
    }

    #[test]
    fn a_silent_audio_left_by_an_interrupted_finalize_is_rewritten_to_the_timeline() {
        let (_tmp, s) = spool();
        let mut m = no_media("sil", 0);
        m.ended_at = m.started_at + Duration::from_secs(2);
        s.save_state(&m).unwrap();
        let dir = s.session_dir("sil").unwrap();
        fs::write(dir.join(AUDIO_FILE), b"RIFF, but not for this timeline").unwrap();
        let out = s.recover();
        let wav = fs::read(out[0].join(AUDIO_FILE)).unwrap();
        // 2 s of 8 kHz mono G.711 silence after a 44-byte-or-longer header.
        assert!(wav.starts_with(b"RIFF"), "a WAV file");
        assert!(wav.len() >= 16_000, "{} bytes", wav.len());
        assert!(wav.len() < 16_200, "{} bytes", wav.len());
    }

    #[test]
    fn recover_uses_last_state_when_files_are_older() {
        let (_tmp, s) = spool();
        // ended_at in the future of every file mtime: last seen wins.
        let mut m = no_media("fut", 0);
        m.started_at = SystemTime::now();
        m.ended_at = m.started_at + Duration::from_secs(3600);
        s.save_state(&m).unwrap();
        let v = read_json(&s.recover()[0]);
        assert_eq!(v["duration_ms"], 3_600_000);
    }

    #[test]
    fn recover_moves_folder_already_finalized() {
        let (_tmp, s) = spool();
        // Simulate a crash after recording.json was written but before the move.
        let m = no_media("half", 10);
        s.save_state(&m).unwrap();
        let dir = s.session_dir("half").unwrap();
        fs::write(dir.join(RECORDING_FILE), m.to_json(&[])).unwrap();
        let out = s.recover();
        assert_eq!(out.len(), 1);
        assert_eq!(
            read_json(&out[0])["end_reason"],
            "bye",
            "recording.json kept as written"
        );
        assert!(!out[0].join(SESSION_FILE).exists());
    }

    #[test]
    fn unreadable_spool_goes_to_quarantine_with_reason() {
        let (_tmp, s) = spool();
        let dir = s.spool_dir().join("broken");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("journal.bin"), b"precious").unwrap();
        let report = s.recover_report();
        assert!(report.finalized.is_empty());
        assert_eq!(report.quarantined, vec![s.quarantine_dir().join("broken")]);
        let q = &report.quarantined[0];
        assert_eq!(
            fs::read(q.join("journal.bin")).unwrap(),
            b"precious",
            "data kept"
        );
        let reason = fs::read_to_string(q.join(REASON_FILE)).unwrap();
        assert!(reason.contains("session.json"), "{reason}");
    }

    #[test]
    fn a_setup_cut_short_before_its_200_is_named_as_such_and_an_empty_one_removed() {
        let (_tmp, s) = spool();
        // Killed between the metadata and session.json's rename: never answered.
        let cut = s.spool_dir().join("cut");
        fs::create_dir_all(cut.join(METADATA_DIR)).unwrap();
        fs::write(cut.join(METADATA_DIR).join("001.xml"), b"<recording/>").unwrap();
        fs::write(cut.join(".session.json.tmp"), b"{ half").unwrap();
        // Killed between the folder's mkdir and the first file: nothing to keep.
        let empty = s.spool_dir().join("empty");
        fs::create_dir_all(empty.join(METADATA_DIR)).unwrap();
        // No session.json, with a file setup never writes before it: not explained.
        let odd = s.spool_dir().join("odd");
        fs::create_dir_all(odd.join(METADATA_DIR)).unwrap();
        fs::write(odd.join(METADATA_DIR).join("001.xml"), b"<recording/>").unwrap();
        fs::write(odd.join("notes.txt"), b"?").unwrap();
        let mut report = s.recover_report();
        report.quarantined.sort();
        assert_eq!(report.discarded, vec![empty.clone()]);
        assert!(!empty.exists());
        let q = s.quarantine_dir();
        assert_eq!(report.quarantined, vec![q.join("cut"), q.join("odd")]);
        let reason = |d: &str| fs::read_to_string(q.join(d).join(REASON_FILE)).unwrap();
        assert!(
            reason("cut").contains("never answered"),
            "{}",
            reason("cut")
        );
        assert!(
            !reason("odd").contains("never answered"),
            "{}",
            reason("odd")
        );
        assert_eq!(
            fs::read(q.join("cut").join(METADATA_DIR).join("001.xml")).unwrap(),
            b"<recording/>",
            "nothing is deleted that holds data"
        );
        assert!(report.finalized.is_empty());
    }

    #[test]
    fn corrupt_session_json_goes_to_quarantine() {
        let (_tmp, s) = spool();
        let dir = s.spool_dir().join("bad");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(SESSION_FILE), b"{ not json").unwrap();
        let report = s.recover_report();
        assert_eq!(report.quarantined.len(), 1);
        let q = &report.quarantined[0];
        assert_eq!(fs::read(q.join(SESSION_FILE)).unwrap(), b"{ not json");
        assert!(
            fs::read_to_string(q.join(REASON_FILE))
                .unwrap()
                .contains("not valid")
        );
    }

    #[test]
    fn quarantine_does_not_overwrite() {
        let (_tmp, s) = spool();
        fs::create_dir_all(s.quarantine_dir().join("x")).unwrap();
        fs::create_dir_all(s.spool_dir().join("x")).unwrap();
        fs::write(s.spool_dir().join("x").join(JOURNAL_FILE), b"?").unwrap();
        let report = s.recover_report();
        assert_eq!(report.quarantined, vec![s.quarantine_dir().join("x-1")]);
    }

    #[test]
    fn recover_handles_many_and_ignores_stray_files() {
        let (_tmp, s) = spool();
        s.save_state(&no_media("a", 10)).unwrap();
        s.save_state(&no_media("b", 10)).unwrap();
        fs::create_dir_all(s.spool_dir().join("c")).unwrap();
        fs::write(s.spool_dir().join("c").join(JOURNAL_FILE), b"?").unwrap();
        // An empty folder: killed between its mkdir and the first metadata file.
        fs::create_dir_all(s.spool_dir().join("d")).unwrap();
        fs::write(s.spool_dir().join("stray.txt"), b"?").unwrap();
        let report = s.recover_report();
        assert_eq!(report.finalized.len(), 2);
        assert_eq!(report.quarantined.len(), 1);
        assert_eq!(report.discarded, vec![s.spool_dir().join("d")]);
        assert!(s.spool_dir().join("stray.txt").exists());
    }

    #[test]
    fn recover_on_empty_spool_does_nothing() {
        let (_tmp, s) = spool();
        assert!(s.recover().is_empty());
    }

    #[test]
    fn finalize_removes_leftover_temp_files() {
        let (_tmp, s) = spool();
        s.save_state(&no_media("t", 10)).unwrap();
        let dir = s.session_dir("t").unwrap();
        fs::write(dir.join(".session.json.tmp"), b"torn").unwrap();
        let out = s.finalize(&no_media("t", 10)).unwrap();
        assert!(!out.join(".session.json.tmp").exists());
        assert_eq!(read_json(&out)["files"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn manual_quarantine_keeps_files() {
        let (_tmp, s) = spool();
        s.save_state(&no_media("q", 10)).unwrap();
        let q = s.quarantine("q", "disk full while finalizing").unwrap();
        assert!(q.join(SESSION_FILE).exists());
        assert!(
            fs::read_to_string(q.join(REASON_FILE))
                .unwrap()
                .contains("disk full")
        );
    }

    #[test]
    fn io_errors_name_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("not-a-dir");
        fs::write(&file, b"").unwrap();
        let e = Spool::open(&file)
            .err()
            .expect("cannot create dirs under a file");
        assert!(e.to_string().contains("not-a-dir"), "{e}");
    }

    // ---- journal -------------------------------------------------------------------------

    use crate::record::journal::{JournalRecord, JournalWriter, RecordKind};

    fn t0_ns() -> u64 {
        t0().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
    }

    fn pcmu_stream(label: &str, mline: usize) -> StreamRecord {
        StreamRecord {
            label: label.into(),
            codec: "PCMU".into(),
            clock_rate: 8000,
            mline,
            ..StreamRecord::default()
        }
    }

    /// `n` 20 ms mu-law packets of byte `b` on m-line `stream`, from t0.
    fn append_packets(w: &mut JournalWriter, stream: u16, n: u16, b: u8) {
        let payload = [b; 160];
        for i in 0..n {
            w.append(&JournalRecord {
                stream,
                kind: RecordKind::Audio,
                marker: i == 0,
                payload_type: 0,
                seq: i,
                timestamp: u32::from(i) * 160,
                ssrc: 0x1000 + u32::from(stream),
                arrival_ns: t0_ns() + u64::from(i) * 20_000_000,
                payload: &payload,
            });
        }
    }

    fn journaled(s: &Spool, id: &str, ms: u64) -> RecordingMeta {
        let mut m = no_media(id, ms);
        m.state = RecordingState::Complete;
        m.streams = vec![pcmu_stream("1", 0), pcmu_stream("2", 1)];
        s.save_state(&m).unwrap();
        let mut w = JournalWriter::create(&s.journal_path(id).unwrap()).unwrap();
        append_packets(&mut w, 0, 50, 0x11);
        append_packets(&mut w, 1, 25, 0x22);
        w.commit().unwrap();
        m
    }

    #[test]
    fn finalize_renders_the_journal_and_deletes_it() {
        let (_tmp, s) = spool();
        let m = journaled(&s, "j1", 2000);
        let out = s.finalize(&m).unwrap();
        assert!(!out.join(JOURNAL_FILE).exists(), "journal deleted");
        let v = read_json(&out);
        assert_eq!(v["state"], "complete");
        assert_eq!(v["streams"][0]["packets"], 50);
        assert_eq!(v["streams"][1]["packets"], 25);
        assert_eq!(v["streams"][0]["ssrcs"][0], 0x1000);
        assert_eq!(v["streams"][0]["lost"], 0);
        let paths: Vec<_> = v["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["path"].as_str().unwrap())
            .collect();
        assert_eq!(paths, ["audio.wav"]);
        let b = fs::read(out.join(AUDIO_FILE)).unwrap();
        assert_eq!(wav_u16(&b, 22), 2);
        assert_eq!(wav_u32(&b, 46), 16_000, "2 s of frames");
        // Stream 1 for 1 s, stream 2 for 0.5 s, then silence.
        assert_eq!((b[58], b[59]), (0x11, 0x22));
        assert_eq!((b[58 + 2 * 4000], b[58 + 2 * 4000 + 1]), (0x11, 0xFF));
        assert_eq!((b[58 + 2 * 8000], b[58 + 2 * 8000 + 1]), (0xFF, 0xFF));
    }

    #[test]
    fn a_retry_after_the_move_failed_keeps_the_rendered_audio_and_counts() {
        let (_tmp, s) = spool();
        let m = journaled(&s, "j-retry", 2000);
        // The move into recordings/ fails (read-only, full): a file where its year folder goes.
        let date = rfc3339_millis(m.started_at);
        let year = s.recordings_dir().join(&date[0..4]);
        fs::write(&year, b"in the way").unwrap();
        assert!(s.finalize(&m).is_err());
        let dir = s.session_dir("j-retry").unwrap();
        assert!(
            dir.join(RECORDING_FILE).exists(),
            "rendered before the move failed"
        );
        assert!(!dir.join(JOURNAL_FILE).exists(), "the journal went with it");
        fs::remove_file(&year).unwrap();
        // The retry (the same meta, as the writer keeps it) moves what was rendered.
        let out = s.finalize(&m).unwrap();
        let v = read_json(&out);
        assert_eq!(v["state"], "complete");
        assert_eq!(v["streams"][0]["packets"], 50);
        assert_eq!(v["streams"][1]["packets"], 25);
        let b = fs::read(out.join(AUDIO_FILE)).unwrap();
        assert_eq!((b[58], b[59]), (0x11, 0x22), "the audio, not silence");
    }

    #[test]
    fn keep_raw_keeps_the_journal_as_raw_file() {
        let (_tmp, mut s) = spool();
        s.set_keep_raw(true);
        let m = journaled(&s, "j2", 1000);
        let out = s.finalize(&m).unwrap();
        assert!(out.join(JOURNAL_FILE).exists());
        let v = read_json(&out);
        let j = v["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"] == JOURNAL_FILE)
            .expect("journal listed");
        assert_eq!(j["kind"], "raw");
        assert_eq!(
            j["bytes"],
            fs::metadata(out.join(JOURNAL_FILE)).unwrap().len()
        );
    }

    #[test]
    fn journal_without_packets_is_no_media() {
        let (_tmp, s) = spool();
        let mut m = no_media("j3", 500);
        m.state = RecordingState::Complete;
        m.streams = vec![pcmu_stream("1", 0)];
        m.streams[0].packets = 7; // what the media thread thought: the journal is the truth
        s.save_state(&m).unwrap();
        JournalWriter::create(&s.journal_path("j3").unwrap()).unwrap();
        let v = read_json(&s.finalize(&m).unwrap());
        assert_eq!(v["state"], "no-media");
        assert_eq!(v["streams"][0]["packets"], 0);
    }

    #[test]
    fn pcm16_option_is_used() {
        let (_tmp, mut s) = spool();
        s.set_audio_format(AudioFormat::WavPcm16);
        let m = journaled(&s, "j4", 100);
        let b = fs::read(s.finalize(&m).unwrap().join(AUDIO_FILE)).unwrap();
        assert_eq!(wav_u16(&b, 20), 1);
        assert_eq!(wav_u16(&b, 34), 16);
    }

    #[test]
    fn opus_stream_is_listed_with_sha256() {
        let (_tmp, s) = spool();
        let mut m = no_media("j5", 200);
        m.state = RecordingState::Complete;
        m.streams = vec![StreamRecord {
            label: "7".into(),
            codec: "opus".into(),
            payload_type: 111,
            clock_rate: 48_000,
            ..StreamRecord::default()
        }];
        s.save_state(&m).unwrap();
        let mut w = JournalWriter::create(&s.journal_path("j5").unwrap()).unwrap();
        for i in 0..5u16 {
            w.append(&JournalRecord {
                stream: 0,
                kind: RecordKind::Audio,
                marker: false,
                payload_type: 111,
                seq: i,
                timestamp: u32::from(i) * 960,
                ssrc: 5,
                arrival_ns: t0_ns() + u64::from(i) * 20_000_000,
                payload: &[0xFC, 1, 2, 3],
            });
        }
        w.commit().unwrap();
        let out = s.finalize(&m).unwrap();
        let v = read_json(&out);
        let f = v["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"] == "7.opus")
            .expect("opus listed")
            .clone();
        assert_eq!(f["kind"], "audio");
        let bytes = fs::read(out.join("7.opus")).unwrap();
        assert_eq!(&bytes[..4], b"OggS");
        assert_eq!(f["sha256"], hex::encode(Sha256::digest(&bytes)));
        assert_eq!(v["streams"][0]["packets"], 5);
        // audio.wav still spans the timeline (silent mono).
        let b = fs::read(out.join(AUDIO_FILE)).unwrap();
        assert_eq!((wav_u16(&b, 22), wav_u32(&b, 46)), (1, 1600));
    }

    #[test]
    fn recover_after_crash_keeps_committed_audio_as_partial() {
        let (_tmp, s) = spool();
        let mut m = no_media("crash", 0);
        m.streams = vec![pcmu_stream("1", 0)];
        // Last state save says 3 s; the writer committed 1 s, then buffered more and died.
        m.ended_at = t0() + Duration::from_secs(3);
        s.save_state(&m).unwrap();
        let mut w = JournalWriter::create(&s.journal_path("crash").unwrap()).unwrap();
        append_packets(&mut w, 0, 50, 0x11);
        w.commit().unwrap();
        append_packets(&mut w, 0, 50, 0x22); // never committed
        std::mem::forget(w);
        // A torn record at the tail, as a crash mid-write can leave.
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(s.journal_path("crash").unwrap())
            .unwrap();
        f.write_all(&[0xA5, 0, 160, 0, 0, 0]).unwrap();
        drop(f);
        // The crash happened at t0 + 2 s: recovery also ends a call at its newest file time,
        // and without this the test would depend on today's date.
        let dir = s.session_dir("crash").unwrap();
        for e in fs::read_dir(&dir).unwrap() {
            let f = fs::File::options()
                .write(true)
                .open(e.unwrap().path())
                .unwrap();
            f.set_modified(t0() + Duration::from_secs(2)).unwrap();
        }

        let out = s.recover();
        assert_eq!(out.len(), 1);
        let v = read_json(&out[0]);
        assert_eq!(v["state"], "partial");
        assert_eq!(v["streams"][0]["packets"], 50);
        assert!(!out[0].join(JOURNAL_FILE).exists());
        let b = fs::read(out[0].join(AUDIO_FILE)).unwrap();
        let frames = wav_u32(&b, 46) as usize;
        assert!(
            frames >= 24_000,
            "spans at least the last saved end: {frames}"
        );
        assert!(
            b[58..58 + 8000].iter().all(|&x| x == 0x11),
            "committed second"
        );
        assert!(
            b[58 + 8000..58 + frames].iter().all(|&x| x == 0xFF),
            "then silence"
        );
    }

    #[test]
    fn recover_removes_journal_left_after_recording_json() {
        let (_tmp, s) = spool();
        let m = no_media("late-rm", 10);
        s.save_state(&m).unwrap();
        let dir = s.session_dir("late-rm").unwrap();
        fs::write(dir.join(RECORDING_FILE), m.to_json(&[])).unwrap();
        fs::write(dir.join(JOURNAL_FILE), b"rendered already").unwrap();
        let out = s.recover();
        assert!(!out[0].join(JOURNAL_FILE).exists());
    }

    #[test]
    fn foreign_journal_goes_to_quarantine() {
        let (_tmp, s) = spool();
        s.save_state(&no_media("alien", 10)).unwrap();
        fs::write(
            s.journal_path("alien").unwrap(),
            b"definitely not a journal",
        )
        .unwrap();
        let report = s.recover_report();
        assert_eq!(report.quarantined.len(), 1);
        let q = &report.quarantined[0];
        assert!(q.join(JOURNAL_FILE).exists(), "nothing deleted");
        assert!(
            fs::read_to_string(q.join(REASON_FILE))
                .unwrap()
                .contains("journal"),
        );
    }

    #[test]
    fn journal_path_refuses_escaping_ids() {
        let (_tmp, s) = spool();
        assert!(s.journal_path("../x").is_err());
        assert_eq!(
            s.journal_path("ok").unwrap(),
            s.spool_dir().join("ok").join(JOURNAL_FILE)
        );
    }

    #[test]
    fn sox_reads_rendered_wavs() {
        let Ok(v) = std::process::Command::new("sox").arg("--version").output() else {
            println!("skipped: sox is not installed");
            return;
        };
        if !v.status.success() {
            println!("skipped: sox --version failed");
            return;
        }
        for (audio, encoding) in [
            (AudioFormat::WavG711, "u-law"),
            (AudioFormat::WavPcm16, "Signed"),
        ] {
            let (_tmp, mut s) = spool();
            s.set_audio_format(audio);
            let m = journaled(&s, "sox", 1500);
            let out = s.finalize(&m).unwrap();
            let info = std::process::Command::new("sox")
                .arg("--i")
                .arg(out.join(AUDIO_FILE))
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&info.stdout);
            assert!(
                info.status.success(),
                "{}",
                String::from_utf8_lossy(&info.stderr)
            );
            assert!(text.contains("Channels       : 2"), "{text}");
            assert!(text.contains("Sample Rate    : 8000"), "{text}");
            assert!(text.contains("12000 samples"), "{text}");
            assert!(text.contains(encoding), "{text}");
        }
    }
}
