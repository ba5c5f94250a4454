//! The writer thread: runs [`StorageOp`]s in order with blocking file I/O, off the control
//! thread; drains the media threads' packet rings into one journal per recording with group
//! commit; finalizes a recording once every stream's end record has arrived.
//!
//! Order matters and is kept by construction: a session's journal opens on `Begin` (before
//! the 200 OK, so before any packet); its packets and then each stream's end record arrive
//! through the ring of the media thread that served the stream; `Finalize` waits for those
//! end records (at most [`END_WAIT`]) so the last packets are in the journal first.

use std::collections::HashMap;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use crate::control::{SessionKey, StorageOp};
use crate::media::ring::{KIND_END, RingReader, StreamTotals};
use crate::record::journal::{JournalWriter, RECORD_HEADER_LEN, parse_record};
use crate::record::{RecordingMeta, Spool};

/// How long a finalize waits for end records that do not come (a media thread stuck or gone).
pub const END_WAIT: Duration = Duration::from_secs(5);
/// How often a recording whose last commit or finalize failed (disk full, I/O error) is
/// tried again; its packets stay buffered meanwhile.
pub const RETRY_EVERY: Duration = Duration::from_secs(5);
/// The writer's tick: how often rings are drained when no storage work arrives. The media
/// threads push about four packets per stream per 80 ms wake, and the 32 MiB rings hold over a
/// second of 1,000 calls, so a 10 ms tick keeps the rings nearly empty at a fifth of the wakes
/// of a 2 ms one.
const TICK: Duration = Duration::from_millis(10);

/// What the writer tells the control thread.
#[derive(Debug)]
pub enum WriterReport {
    Begun {
        session: SessionKey,
        result: Result<(), String>,
    },
    Finalized {
        id: String,
        result: Result<String, String>,
    },
    Recovered {
        count: usize,
    },
    Error,
}

/// Counters the writer publishes.
#[derive(Debug, Default)]
pub struct WriterCounters {
    pub journal_bytes: std::sync::atomic::AtomicU64,
    pub journal_commits: std::sync::atomic::AtomicU64,
    pub journal_write_latency_us: std::sync::atomic::AtomicU64,
    pub journal_errors: std::sync::atomic::AtomicU64,
    /// Packets not journaled because their journal's buffer was full (writes failing).
    pub journal_dropped: std::sync::atomic::AtomicU64,
    pub orphan_packets: std::sync::atomic::AtomicU64,
}

pub struct Writer {
    pub ops: mpsc::Sender<StorageOp>,
    pub handle: thread::JoinHandle<()>,
}

pub struct WriterConfig {
    pub commit_interval: Duration,
    pub commit_bytes: usize,
}

struct OpenRecording {
    id: String,
    journal: Option<JournalWriter>,
    ended: HashMap<u16, StreamTotals>,
    /// Its last journal write failed: the next failures are not logged again (a full disk
    /// would otherwise log every open recording once a second), the next success is.
    failing: bool,
}

/// A recording whose finalize failed, kept with its unwritten packets for the next try.
struct Stalled {
    meta: RecordingMeta,
    rec: Option<OpenRecording>,
    next_try: Instant,
}

struct PendingFinalize {
    slot: u32,
    meta: RecordingMeta,
    streams: Vec<u16>,
    deadline: Instant,
}

/// Hashes a recording slot (our own session counter, not network input, so no flooding
/// concern) with one multiply: the map is looked up once per packet, and SipHash was 9 % of
/// the writer thread.
#[derive(Default)]
struct SlotHasher(u64);

impl std::hash::Hasher for SlotHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0 ^ u64::from(n)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type SlotMap<V> = HashMap<u32, V, std::hash::BuildHasherDefault<SlotHasher>>;

/// The open recordings, looked up by slot once per packet. The map holds only a 4-byte index
/// (1,000 calls: 8 KB of table, which stays in cache) and the recordings sit side by side in a
/// vector: with the recordings themselves in the map, each lookup's probe landed on a cold
/// bucket of a 200-byte value, one more cache miss per packet before the copy.
#[derive(Default)]
struct OpenSet {
    index: SlotMap<u32>,
    recordings: Vec<(u32, OpenRecording)>,
}

impl OpenSet {
    #[inline]
    fn get_mut(&mut self, slot: &u32) -> Option<&mut OpenRecording> {
        let i = *self.index.get(slot)? as usize;
        self.recordings.get_mut(i).map(|(_, r)| r)
    }

    fn get(&self, slot: &u32) -> Option<&OpenRecording> {
        let i = *self.index.get(slot)? as usize;
        self.recordings.get(i).map(|(_, r)| r)
    }

    fn insert(&mut self, slot: u32, rec: OpenRecording) {
        if let Some(&i) = self.index.get(&slot) {
            if let Some(entry) = self.recordings.get_mut(i as usize) {
                entry.1 = rec;
            }
            return;
        }
        self.index.insert(slot, self.recordings.len() as u32);
        self.recordings.push((slot, rec));
    }

    /// Removes `slot`'s recording; the last one moves into its place.
    fn remove(&mut self, slot: &u32) -> Option<OpenRecording> {
        let i = self.index.remove(slot)? as usize;
        if i >= self.recordings.len() {
            return None;
        }
        let (_, rec) = self.recordings.swap_remove(i);
        if let Some((moved, _)) = self.recordings.get(i) {
            self.index.insert(*moved, i as u32);
        }
        Some(rec)
    }

    fn retain(&mut self, mut keep: impl FnMut(&OpenRecording) -> bool) {
        let gone: Vec<u32> = self
            .recordings
            .iter()
            .filter(|(_, r)| !keep(r))
            .map(|(s, _)| *s)
            .collect();
        for slot in gone {
            self.remove(&slot);
        }
    }

    fn iter(&self) -> impl Iterator<Item = (&u32, &OpenRecording)> {
        self.recordings.iter().map(|(s, r)| (s, r))
    }

    fn values_mut(&mut self) -> impl Iterator<Item = &mut OpenRecording> {
        self.recordings.iter_mut().map(|(_, r)| r)
    }
}

struct State {
    spool: Spool,
    config: WriterConfig,
    reports: UnboundedSender<WriterReport>,
    counters: std::sync::Arc<WriterCounters>,
    open: OpenSet,
    pending: Vec<PendingFinalize>,
    stalled: Vec<Stalled>,
    /// Group commit across recordings: when the file system was last synced, and whether
    /// anything was written since.
    last_sync: Instant,
    dirty: bool,
    /// Journals whose buffer reached `commit_bytes` since the last commit pass.
    full: Vec<u32>,
    syncer: Syncer,
}

/// The group commit's `syncfs`, on its own thread. With the sync on the writer thread, a
/// slow one (the file system is shared: it flushes whatever else is dirty on it) held every
/// Begin op behind it, i.e. every 200 OK: 1.8 s p50 setup latency in one bench run on a busy
/// machine.
struct Syncer {
    request: mpsc::SyncSender<()>,
    /// Set by the syncer when a sync failed, so the writer asks for another.
    failed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Syncer {
    fn start(
        sync: crate::record::spool::FsSync,
        counters: std::sync::Arc<WriterCounters>,
    ) -> std::io::Result<Syncer> {
        use std::sync::atomic::Ordering::Relaxed;
        let (request, requests) = mpsc::sync_channel::<()>(1);
        let failed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = failed.clone();
        let handle = thread::Builder::new()
            .name("reel-syncer".into())
            .spawn(move || {
                for () in requests {
                    let start = Instant::now();
                    match sync.sync() {
                        Ok(()) => {
                            counters.journal_commits.fetch_add(1, Relaxed);
                            counters
                                .journal_write_latency_us
                                .store(start.elapsed().as_micros() as u64, Relaxed);
                        }
                        Err(e) => {
                            counters.journal_errors.fetch_add(1, Relaxed);
                            flag.store(true, Relaxed);
                            tracing::error!(error = %e, "group commit (syncfs) failed");
                        }
                    }
                }
            })?;
        Ok(Syncer {
            request,
            failed,
            handle: Some(handle),
        })
    }

    /// Waits for the queued sync, if any, and stops the thread.
    fn stop(mut self) {
        drop(self.request);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn slot_of(session: SessionKey) -> u32 {
    // The recording slot is the session number; it wraps only after 4 billion sessions.
    session.0 as u32
}

/// Starts the writer, which takes ops and drains `rings` at once, and beside it the crash
/// scan, which finalizes what the last process left in the spool on a thread of its own: a
/// scan of hundreds of recordings takes seconds, and new calls must not wait for it (their
/// 200 OK waits for the writer's `Begin`).
pub fn start(
    spool: Spool,
    reports: UnboundedSender<WriterReport>,
    mut rings: Vec<RingReader>,
    config: WriterConfig,
    counters: std::sync::Arc<WriterCounters>,
) -> std::io::Result<Writer> {
    let (tx, rx) = mpsc::channel::<StorageOp>();
    let syncer = Syncer::start(spool.fs_sync(), counters.clone())?;
    // Listed before the writer takes its first op, so no new session's folder is in it.
    let left = spool.spooled();
    let scan = if left.is_empty() {
        None
    } else {
        let spool = spool.clone();
        let reports = reports.clone();
        Some(
            thread::Builder::new()
                .name("reel-recovery".into())
                .spawn(move || recover(&spool, left, &reports))?,
        )
    };
    let handle = thread::Builder::new()
        .name("reel-writer".into())
        .spawn(move || {
            // A writer that died would leave the media rings full and every recording open:
            // end the process instead, so the restart's crash scan recovers them.
            let body = move || {
            let mut state = State {
                spool,
                config,
                reports,
                counters,
                open: OpenSet::default(),
                pending: Vec::new(),
                stalled: Vec::new(),
                last_sync: Instant::now(),
                dirty: false,
                full: Vec::new(),
                syncer,
            };
            loop {
                let disconnected = match rx.recv_timeout(TICK) {
                    Ok(op) => {
                        // Packets that arrived before this op belong before it.
                        state.drain(&mut rings);
                        state.run(op);
                        while let Ok(op) = rx.try_recv() {
                            state.run(op);
                        }
                        false
                    }
                    Err(RecvTimeoutError::Timeout) => false,
                    Err(RecvTimeoutError::Disconnected) => true,
                };
                state.drain(&mut rings);
                state.commit_due(Instant::now());
                state.finalize_ready(Instant::now(), disconnected);
                state.retry_stalled(Instant::now(), disconnected);
                if disconnected && state.pending.is_empty() {
                    break;
                }
            }
            // Shutdown: whatever is still open was never finalized (the control thread is gone);
            // commit it so the next start recovers it as partial.
            for rec in state.open.values_mut() {
                if let Some(j) = rec.journal.as_mut() {
                    let _ = j.commit();
                }
            }
            state.syncer.stop();
            // A drain that ends during the scan lets it finish: what it is part-way through
            // would be redone by the next start, but why leave that work.
            if let Some(scan) = scan {
                let _ = scan.join();
            }
            };
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).is_err() {
                tracing::error!(
                    "BUG: the writer thread panicked; exiting (70) so that a restart recovers the recordings"
                );
                std::process::exit(70);
            }
        })?;
    Ok(Writer { ops: tx, handle })
}

/// The crash scan's thread: finalizes `dirs` at a lower CPU priority than the media, writer
/// and control threads, so recording goes on at full speed meanwhile.
fn recover(spool: &Spool, dirs: Vec<std::path::PathBuf>, reports: &UnboundedSender<WriterReport>) {
    super::media::lower_this_thread(10);
    let start = Instant::now();
    tracing::info!(
        count = dirs.len(),
        "crash scan: finalizing what the last run left in the spool, beside new calls"
    );
    let report = spool.recover_dirs(dirs);
    for path in &report.finalized {
        tracing::info!(path = %path.display(), "recovered a spooled session as partial");
    }
    tracing::info!(
        finalized = report.finalized.len(),
        quarantined = report.quarantined.len(),
        discarded = report.discarded.len(),
        seconds = format!("{:.1}", start.elapsed().as_secs_f64()),
        "crash scan: done"
    );
    let _ = reports.send(WriterReport::Recovered {
        count: report.finalized.len(),
    });
}

impl State {
    fn run(&mut self, op: StorageOp) {
        if !matches!(op, StorageOp::Finalize { .. }) {
            self.dirty = true;
        }
        match op {
            StorageOp::Begin { session, meta } => {
                let result = self.begin(session, &meta);
                if let Err(e) = &result {
                    tracing::error!(id = %meta.id, error = %e, "cannot create the spool entry");
                }
                let _ = self.reports.send(WriterReport::Begun { session, result });
            }
            StorageOp::Save { meta } => {
                if let Err(e) = self.spool.save_state(&meta) {
                    tracing::error!(id = %meta.id, error = %e, "cannot save session state");
                    let _ = self.reports.send(WriterReport::Error);
                }
            }
            StorageOp::Metadata { id, xml } => {
                if let Err(e) = self.spool.add_metadata_version(&id, &xml) {
                    tracing::error!(id = %id, error = %e, "cannot store metadata");
                    let _ = self.reports.send(WriterReport::Error);
                }
            }
            StorageOp::Finalize {
                meta,
                media_streams,
            } => {
                let slot = self
                    .open
                    .iter()
                    .find(|(_, r)| r.id == meta.id)
                    .map(|(s, _)| *s);
                match slot {
                    Some(slot) => self.pending.push(PendingFinalize {
                        slot,
                        meta,
                        streams: media_streams,
                        deadline: Instant::now() + END_WAIT,
                    }),
                    None => self.finalize(meta, None),
                }
            }
            StorageOp::Abandon { id } => {
                self.open.retain(|r| r.id != id);
                if let Err(e) = self.spool.abandon(&id) {
                    tracing::warn!(id = %id, error = %e, "cannot remove an abandoned spool entry");
                }
            }
        }
    }

    fn begin(&mut self, session: SessionKey, meta: &RecordingMeta) -> Result<(), String> {
        self.spool.save_state(meta).map_err(|e| e.to_string())?;
        let path = self
            .spool
            .journal_path(&meta.id)
            .map_err(|e| e.to_string())?;
        let mut journal = JournalWriter::create(&path).map_err(|e| e.to_string())?;
        journal.set_commit_policy(self.config.commit_interval, self.config.commit_bytes);
        self.open.insert(
            slot_of(session),
            OpenRecording {
                id: meta.id.clone(),
                journal: Some(journal),
                ended: HashMap::new(),
                failing: false,
            },
        );
        Ok(())
    }

    fn drain(&mut self, rings: &mut [RingReader]) {
        let commit_bytes = self.config.commit_bytes;
        for ring in rings.iter_mut() {
            let open = &mut self.open;
            let counters = &self.counters;
            let full = &mut self.full;
            // Records come out of the ring in the journal's own layout: one or two memcpys
            // into the recording's frame, no decode, no per-record CRC.
            ring.drain_encoded(|slot, kind, a, b| {
                let Some(rec) = open.get_mut(&slot) else {
                    counters
                        .orphan_packets
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return;
                };
                if kind == KIND_END {
                    // Rare (one per stream): join the pieces and read it as a journal record.
                    let mut bytes = [0u8; RECORD_HEADER_LEN + StreamTotals::LEN];
                    let ha = a.len().min(bytes.len());
                    let hb = b.len().min(bytes.len() - ha);
                    bytes[..ha].copy_from_slice(&a[..ha]);
                    bytes[ha..ha + hb].copy_from_slice(&b[..hb]);
                    let (head, totals) = bytes[..ha + hb].split_at(RECORD_HEADER_LEN.min(ha + hb));
                    if let Some(end) = head.try_into().ok().and_then(|h| parse_record(h, totals)) {
                        rec.ended
                            .insert(end.stream, StreamTotals::decode(end.payload));
                    }
                    return;
                }
                let Some(journal) = rec.journal.as_mut() else {
                    return;
                };
                let before = journal.pending_bytes();
                if !journal.append_encoded(a, b) {
                    counters
                        .journal_dropped
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return;
                }
                if before < commit_bytes && journal.pending_bytes() >= commit_bytes {
                    full.push(slot);
                }
            });
        }
    }

    /// Group commit: every `commit_interval`, write every journal's buffer, then one
    /// `syncfs` makes all of them (and the session state files) durable at once — one sync per
    /// interval for the whole recorder instead of one per call. A buffer that reaches
    /// `commit_bytes` earlier is written at once (memory stays bounded) and synced with the
    /// next group.
    fn commit_due(&mut self, now: Instant) {
        use std::sync::atomic::Ordering::Relaxed;
        let group_due =
            now.saturating_duration_since(self.last_sync) >= self.config.commit_interval;
        // Between group commits only the journals that crossed `commit_bytes` are visited
        // (the drain lists them), not every open one on every tick.
        let mut full = std::mem::take(&mut self.full);
        let write = |rec: &mut OpenRecording, counters: &WriterCounters, dirty: &mut bool| {
            let Some(j) = rec.journal.as_mut() else {
                return;
            };
            if j.pending_bytes() == 0 {
                return;
            }
            let before = j.bytes_written();
            match j.write_buffered() {
                Ok(()) => {
                    counters
                        .journal_bytes
                        .fetch_add(j.bytes_written() - before, Relaxed);
                    *dirty = true;
                    if rec.failing {
                        rec.failing = false;
                        tracing::info!(id = %rec.id, "journal writes work again; what was buffered is written");
                    }
                }
                Err(e) => {
                    counters.journal_errors.fetch_add(1, Relaxed);
                    if !rec.failing {
                        rec.failing = true;
                        tracing::error!(id = %rec.id, error = %e,
                            "journal write failed; the data stays buffered and is retried each \
                             commit (logged again only after a success; reel_journal_errors_total counts each)");
                    }
                }
            }
        };
        if group_due {
            for rec in self.open.values_mut() {
                write(rec, &self.counters, &mut self.dirty);
            }
        } else {
            for slot in &full {
                if let Some(rec) = self.open.get_mut(slot) {
                    write(rec, &self.counters, &mut self.dirty);
                }
            }
        }
        full.clear();
        self.full = full;
        if !group_due {
            return;
        }
        self.last_sync = now;
        if self.syncer.failed.swap(false, Relaxed) {
            self.dirty = true; // the last sync failed: what it covered is synced again
        }
        if !self.dirty {
            return;
        }
        // The sync itself runs on the syncer thread: it covers every write made before it
        // starts, and Begin/Save ops (call setup) and ring drains go on meanwhile. A sync
        // already queued covers these writes too, so a full queue means nothing to add.
        match self.syncer.request.try_send(()) {
            Ok(()) | Err(mpsc::TrySendError::Full(())) => self.dirty = false,
            Err(mpsc::TrySendError::Disconnected(())) => {
                self.counters.journal_errors.fetch_add(1, Relaxed);
                tracing::error!("group commit: the syncer thread is gone");
            }
        }
    }

    fn finalize_ready(&mut self, now: Instant, shutting_down: bool) {
        let mut i = 0;
        while i < self.pending.len() {
            let p = &self.pending[i];
            let ended = self.open.get(&p.slot).map(|r| &r.ended);
            let all_in = ended.is_some_and(|e| p.streams.iter().all(|s| e.contains_key(s)));
            if all_in || now >= p.deadline || shutting_down && ended.is_none() {
                let p = self.pending.swap_remove(i);
                if !all_in {
                    tracing::warn!(id = %p.meta.id, "finalizing without every stream's end record");
                }
                let rec = self.open.remove(&p.slot);
                self.finalize(p.meta, rec);
            } else {
                i += 1;
            }
        }
    }

    fn finalize(&mut self, meta: RecordingMeta, rec: Option<OpenRecording>) {
        if let Err(stalled) = self.try_finalize(meta, rec, true) {
            self.stalled.push(*stalled);
        }
    }

    /// The last journal commit, then the folder. Either failing (disk full, I/O error) keeps
    /// the recording, with the packets it still holds, for another try in [`RETRY_EVERY`]:
    /// a call that ends while the disk is full is finalized, whole, once there is room.
    fn try_finalize(
        &mut self,
        mut meta: RecordingMeta,
        mut rec: Option<OpenRecording>,
        first: bool,
    ) -> Result<(), Box<Stalled>> {
        let stalled = |meta, rec| {
            Box::new(Stalled {
                meta,
                rec,
                next_try: Instant::now() + RETRY_EVERY,
            })
        };
        if let Some(r) = rec.as_mut() {
            if let Some(j) = r.journal.as_mut()
                && let Err(e) = j.commit()
            {
                tracing::error!(id = %meta.id, error = %e, buffered = j.pending_bytes(),
                    "last journal commit failed; the packets stay buffered, retrying in 5 s");
                if first {
                    let _ = self.reports.send(WriterReport::Error);
                }
                return Err(stalled(meta, rec));
            }
            if let Some(j) = r.journal.as_ref()
                && j.unlinked()
            {
                self.restore_journal(&mut meta, j);
            }
            r.journal = None;
            for s in &mut meta.streams {
                if let Some(t) = u16::try_from(s.mline).ok().and_then(|m| r.ended.get(&m)) {
                    s.duplicates = t.duplicates;
                    s.foreign = t.foreign;
                    s.srtp_failures = t.srtp_failures;
                }
            }
        }
        if !first && !self.spool.session_dir(&meta.id).is_ok_and(|d| d.exists()) {
            // The failed try got as far as moving the folder (a directory sync failed after
            // it): the recording is there, and finalizing again would write a second one.
            tracing::warn!(id = %meta.id, "the last try had moved the folder already");
            return Ok(());
        }
        match self.spool.finalize(&meta) {
            Ok(path) => {
                tracing::info!(id = %meta.id, call_id = %meta.call_id,
                    reason = %meta.end_reason, path = %path.display(), "recording finalized");
                let _ = self.reports.send(WriterReport::Finalized {
                    id: meta.id.clone(),
                    result: Ok(path.display().to_string()),
                });
                Ok(())
            }
            Err(e) if crate::record::spool::is_panic(&e) => {
                // A bug this recording's data meets: another try would meet it again.
                let reason = e.to_string();
                match self.spool.quarantine(&meta.id, &reason) {
                    Ok(q) => tracing::error!(id = %meta.id, error = %e, path = %q.display(),
                        "finalize panicked; the folder went to quarantine"),
                    Err(qe) => tracing::error!(id = %meta.id, error = %e,
                        "finalize panicked, and quarantine failed ({qe}); left in the spool"),
                }
                let _ = self.reports.send(WriterReport::Finalized {
                    id: meta.id.clone(),
                    result: Err(reason),
                });
                Ok(())
            }
            Err(e) => {
                tracing::error!(id = %meta.id, error = %e,
                    "finalize failed; the spool folder is kept, retrying in 5 s");
                if first {
                    let _ = self.reports.send(WriterReport::Finalized {
                        id: meta.id.clone(),
                        result: Err(e.to_string()),
                    });
                }
                Err(stalled(meta, rec))
            }
        }
    }

    /// The recording's spool folder was deleted under it (the journal file is unlinked, its
    /// data alive in the open file): the folder is made again and the journal copied back,
    /// so finalize renders the audio rather than a silent no-media recording. What else the
    /// folder held (metadata versions, session.json) is lost, and the recording says so.
    fn restore_journal(&mut self, meta: &mut RecordingMeta, j: &JournalWriter) {
        self.counters
            .journal_errors
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let restored = self
            .spool
            .ensure_session_dir(&meta.id)
            .and_then(|dir| j.copy_to(&dir.join(crate::record::spool::JOURNAL_FILE)));
        match restored {
            Ok(bytes) => {
                tracing::error!(id = %meta.id, bytes,
                    "the recording's spool folder was deleted during the call; its journal is restored from the open file, its metadata files are lost");
                meta.warnings.push(
                    "the spool folder was deleted during the call: the audio was restored from \
                     the open journal; metadata files written before were lost"
                        .into(),
                );
            }
            Err(e) => {
                tracing::error!(id = %meta.id, error = %e,
                    "the recording's spool folder was deleted during the call, and restoring its journal failed");
                meta.warnings.push(format!(
                    "the spool folder was deleted during the call and its audio could not be restored: {e}"
                ));
            }
        }
    }

    /// Tries the stalled recordings whose time has come; at shutdown each gets one last try,
    /// and what still fails stays in the spool for the next start's crash scan.
    fn retry_stalled(&mut self, now: Instant, shutting_down: bool) {
        if self.stalled.is_empty() {
            return;
        }
        let mut keep = Vec::new();
        for s in std::mem::take(&mut self.stalled) {
            if !shutting_down && now < s.next_try {
                keep.push(s);
                continue;
            }
            match self.try_finalize(s.meta, s.rec, false) {
                Ok(()) => {}
                Err(s) if shutting_down => tracing::error!(id = %s.meta.id,
                    "shutting down with a recording that could not be finalized: it stays in the spool for the next start"),
                Err(s) => keep.push(*s),
            }
        }
        self.stalled = keep;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str) -> OpenRecording {
        OpenRecording {
            id: id.into(),
            journal: None,
            ended: HashMap::new(),
            failing: false,
        }
    }

    fn id_of(set: &mut OpenSet, slot: u32) -> Option<String> {
        set.get_mut(&slot).map(|r| r.id.clone())
    }

    #[test]
    fn open_set_finds_every_recording_after_removals_move_others() {
        let mut set = OpenSet::default();
        for slot in 1..=5u32 {
            set.insert(slot, rec(&format!("r{slot}")));
        }
        // Removing from the middle moves the last one into the hole: it must still be found.
        assert_eq!(set.remove(&2).map(|r| r.id), Some("r2".into()));
        assert_eq!(set.remove(&2).map(|r| r.id), None, "gone once removed");
        for slot in [1u32, 3, 4, 5] {
            assert_eq!(id_of(&mut set, slot), Some(format!("r{slot}")));
        }
        assert_eq!(id_of(&mut set, 2), None);
        // Removing the last one moves nothing.
        assert_eq!(set.remove(&5).map(|r| r.id), Some("r5".into()));
        assert_eq!(set.get(&4).map(|r| r.id.as_str()), Some("r4"));
        // The same slot inserted again replaces its recording, not a second entry.
        set.insert(3, rec("r3b"));
        assert_eq!(set.iter().count(), 3);
        assert_eq!(id_of(&mut set, 3), Some("r3b".into()));
        set.retain(|r| r.id != "r1");
        let mut left: Vec<u32> = set.iter().map(|(s, _)| *s).collect();
        left.sort();
        assert_eq!(left, vec![3, 4]);
        assert_eq!(id_of(&mut set, 4), Some("r4".into()));
        assert_eq!(set.values_mut().count(), 2);
    }
}
