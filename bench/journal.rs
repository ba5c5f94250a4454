//! Journal append + group commit: throughput and CPU, buffered `write` + `fdatasync` against
//! `O_DIRECT` (4096-aligned buffer, the partial tail block rewritten on the next commit).
//!
//! Records carry 160-byte payloads (20 ms of G.711), 192 bytes on disk. Two commit sizes:
//! 256 KiB (the size threshold, what a busy journal hits) and ~19 KB (one two-stream call's
//! second: what each of ~1,000 journals commits once a second at the real rate of ~20 MB/s).
//! CPU is process user+system time from `getrusage(RUSAGE_SELF)` around each run; "% core at
//! 20 MB/s" scales the measured CPU-seconds per MB to that rate.
//!
//! Then the kernel's cost of one second of 1,000 calls under seven spool layouts (Reel's one
//! buffered journal per call, the same with `O_DIRECT`, a shared segment three ways, and a
//! shared write-ahead log in front of per-call journals written in whole chunks).
//!
//! Also a criterion benchmark of `encode_into` alone (the per-packet CPU on the writer thread).
//!
//! Run: `cargo bench --bench journal` (files go to `$TMPDIR`, default /tmp; it must be a real
//! disk file system for the fsync figures to mean anything).

#[path = "common/machine.rs"]
mod machine;
use machine::print_machine;

use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use reel::record::journal::{
    JournalReader, JournalRecord, JournalWriter, RecordKind, encode_into, file_header,
};

const PAYLOAD: [u8; 160] = [0x55; 160];
const RECORD: usize = 192;

fn record(i: u64) -> JournalRecord<'static> {
    JournalRecord {
        stream: (i & 1) as u16,
        kind: RecordKind::Audio,
        marker: false,
        payload_type: 0,
        seq: i as u16,
        timestamp: (i as u32).wrapping_mul(160),
        ssrc: 0x5eed_0000 | (i & 1) as u32,
        arrival_ns: 1_795_628_305_000_000_000 + i * 10_000_000,
        payload: &PAYLOAD,
    }
}

fn cpu_time() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we own; no other memory is touched.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

struct Figures {
    wall: Duration,
    cpu: Duration,
    bytes: u64,
    records: u64,
    commits: u64,
}

impl Figures {
    /// A layout's rounds: `bytes` written (counted as 192-byte records), one commit each.
    fn of_rounds(wall: Duration, cpu: Duration, bytes: u64, rounds: u64) -> Figures {
        Figures {
            wall,
            cpu,
            bytes,
            records: bytes / RECORD as u64,
            commits: rounds,
        }
    }

    fn print(&self, name: &str) {
        let mb = self.bytes as f64 / 1e6;
        let mbs = mb / self.wall.as_secs_f64();
        let cpu_per_mb = self.cpu.as_secs_f64() / mb;
        eprintln!(
            "{name:<34} {mbs:>8.1} MB/s {:>8.0} ns/record  commit {:>7.1} us  CPU {:>6.3} s/GB  {:>5.2} % core at 20 MB/s",
            self.wall.as_nanos() as f64 / self.records as f64,
            self.wall.as_secs_f64() * 1e6 / self.commits as f64,
            cpu_per_mb * 1000.0,
            cpu_per_mb * 20.0 * 100.0,
        );
    }
}

fn buffered(dir: &std::path::Path, records: u64, per_commit: u64) -> Figures {
    let path = dir.join("buffered.bin");
    let _ = std::fs::remove_file(&path);
    let mut w = JournalWriter::create(&path).unwrap();
    w.set_commit_policy(Duration::from_secs(3600), usize::MAX);
    let (t, c) = (Instant::now(), cpu_time());
    for i in 0..records {
        w.append(&record(i));
        if (i + 1) % per_commit == 0 {
            w.commit().unwrap();
        }
    }
    w.commit().unwrap();
    let f = Figures {
        wall: t.elapsed(),
        cpu: cpu_time() - c,
        bytes: w.bytes_written(),
        records,
        commits: w.commits(),
    };
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(JournalReader::new(&bytes).unwrap().count() as u64, records);
    f
}

/// 4096-aligned heap buffer for O_DIRECT.
struct Aligned {
    ptr: *mut u8,
    cap: usize,
}

impl Aligned {
    fn new(cap: usize) -> Aligned {
        let layout = std::alloc::Layout::from_size_align(cap, 4096).unwrap();
        // SAFETY: non-zero size, valid alignment; freed in Drop with the same layout.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!ptr.is_null());
        Aligned { ptr, cap }
    }
    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: ptr is valid for cap bytes for the lifetime of self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.cap) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        let layout = std::alloc::Layout::from_size_align(self.cap, 4096).unwrap();
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr, layout) };
    }
}

/// O_DIRECT: records are encoded into a Vec then copied into the aligned buffer (what a real
/// implementation would avoid by encoding in place; the copy is ~1% of the cost here). Each
/// commit writes whole blocks from the last block boundary, zero-padding the tail; the partial
/// tail block is written again, completed, by the next commit.
fn direct(dir: &std::path::Path, records: u64, per_commit: u64) -> Option<Figures> {
    let path = dir.join("direct.bin");
    let _ = std::fs::remove_file(&path);
    let file: File = match OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!("O_DIRECT not available here: {e}");
            return None;
        }
    };
    let cap = (per_commit as usize * RECORD + 2 * 4096).next_multiple_of(4096);
    let mut buf = Aligned::new(cap);
    let mut staged: Vec<u8> = Vec::with_capacity(cap);
    staged.extend_from_slice(&file_header());
    let mut file_off = 0u64; // offset of staged[0], always block aligned
    let mut commits = 0;
    let (t, c) = (Instant::now(), cpu_time());
    let mut commit = |staged: &mut Vec<u8>, file_off: &mut u64| {
        let len = staged.len();
        let padded = len.next_multiple_of(4096);
        let b = buf.as_mut();
        b[..len].copy_from_slice(staged);
        b[len..padded].fill(0);
        file.write_all_at(&b[..padded], *file_off).unwrap();
        file.sync_data().unwrap();
        let whole = len / 4096 * 4096;
        staged.drain(..whole);
        *file_off += whole as u64;
        commits += 1;
    };
    for i in 0..records {
        encode_into(&record(i), &mut staged);
        if (i + 1) % per_commit == 0 {
            commit(&mut staged, &mut file_off);
        }
    }
    commit(&mut staged, &mut file_off);
    let f = Figures {
        wall: t.elapsed(),
        cpu: cpu_time() - c,
        bytes: records * RECORD as u64,
        records,
        commits,
    };
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(JournalReader::new(&bytes).unwrap().count() as u64, records);
    Some(f)
}

/// `rounds` rounds of `write` then one `syncfs` (through `sync`), timed (wall, process CPU);
/// like the recorder, a round a second: the flusher writes back in between.
fn timed_rounds(rounds: u64, sync: &File, mut write: impl FnMut()) -> (Duration, Duration) {
    let (mut wall, mut cpu) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..rounds {
        let (t, c) = (Instant::now(), cpu_time());
        write();
        // SAFETY: syncfs on a file descriptor we own; it touches no memory of ours.
        unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(sync)) };
        wall += t.elapsed();
        cpu += cpu_time() - c;
        std::thread::sleep(Duration::from_millis(500));
    }
    (wall, cpu)
}

/// One second of 1,000 two-stream calls (1,000 x 19.2 KB) per round, then one `syncfs`, as
/// the writer's group commit does, in `write_size` writes spread round-robin over `files`
/// files: 1,000 files of one 19.2 KB write each is Reel's layout (one journal per call); one
/// file is a shared segment, buffered or `O_DIRECT`. Answers what a shared journal segment
/// would save. CPU per record counts the bytes actually written (a round of 1 MiB writes
/// rounds up to 19 MiB).
fn layout(dir: &std::path::Path, files: usize, write_size: usize, direct: bool) -> Option<Figures> {
    const ROUND_BYTES: usize = 1000 * 100 * RECORD;
    const ROUNDS: u64 = 8;
    let sub = dir.join(format!("layout-{files}-{write_size}-{direct}"));
    std::fs::create_dir_all(&sub).unwrap();
    let mut opts = OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    if direct {
        opts.custom_flags(libc::O_DIRECT);
    }
    let mut handles = Vec::new();
    for i in 0..files {
        match opts.open(sub.join(format!("j{i}"))) {
            Ok(f) => handles.push(f),
            Err(e) => {
                eprintln!("O_DIRECT not available here: {e}");
                return None;
            }
        }
    }
    let mut buf = Aligned::new(write_size.next_multiple_of(4096));
    buf.as_mut().fill(0x55);
    let writes = ROUND_BYTES.div_ceil(write_size);
    let mut offsets = vec![0u64; files];
    let (wall, cpu) = timed_rounds(ROUNDS, &handles[0], || {
        for w in 0..writes {
            let f = w % files;
            handles[f]
                .write_all_at(&buf.as_mut()[..write_size], offsets[f])
                .unwrap();
            offsets[f] += write_size as u64;
        }
    });
    let _ = std::fs::remove_dir_all(&sub);
    Some(Figures::of_rounds(
        wall,
        cpu,
        ROUNDS * (writes * write_size) as u64,
        ROUNDS,
    ))
}

/// The write-ahead design that would keep one journal per recording: each round's 19.2 MB goes
/// once into a shared log (one file, 1 MiB `O_DIRECT` writes, for the 1 s durability) and
/// again into the per-recording files, but only in whole `chunk`-byte `O_DIRECT` writes, each
/// file's turn coming once its chunk has filled (every ~13 s at 256 KiB), round-robin over
/// the 1,000 files; then one `syncfs`. ns/record counts the 19.2 MB once, so it compares with
/// the layouts above as the cost per recorded packet.
fn wal_layout(dir: &std::path::Path, chunk: usize) -> Option<Figures> {
    const ROUND_BYTES: usize = 1000 * 100 * RECORD;
    const ROUNDS: u64 = 8;
    const FILES: usize = 1000;
    let sub = dir.join(format!("wal-{chunk}"));
    std::fs::create_dir_all(&sub).unwrap();
    let mut opts = OpenOptions::new();
    opts.write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT);
    let open = |name: String| match opts.open(sub.join(name)) {
        Ok(f) => Some(f),
        Err(e) => {
            eprintln!("O_DIRECT not available here: {e}");
            None
        }
    };
    let log = open("log".into())?;
    let mut files = Vec::with_capacity(FILES);
    for i in 0..FILES {
        files.push(open(format!("j{i}"))?);
    }
    let mut log_buf = Aligned::new(1 << 20);
    log_buf.as_mut().fill(0x55);
    let mut chunk_buf = Aligned::new(chunk);
    chunk_buf.as_mut().fill(0x55);
    let (mut log_off, mut next, mut offsets) = (0u64, 0usize, vec![0u64; FILES]);
    let (wall, cpu) = timed_rounds(ROUNDS, &log, || {
        for _ in 0..ROUND_BYTES.div_ceil(1 << 20) {
            log.write_all_at(log_buf.as_mut(), log_off).unwrap();
            log_off += 1 << 20;
        }
        for _ in 0..ROUND_BYTES.div_ceil(chunk) {
            files[next]
                .write_all_at(chunk_buf.as_mut(), offsets[next])
                .unwrap();
            offsets[next] += chunk as u64;
            next = (next + 1) % FILES;
        }
    });
    let _ = std::fs::remove_dir_all(&sub);
    Some(Figures::of_rounds(
        wall,
        cpu,
        ROUNDS * ROUND_BYTES as u64,
        ROUNDS,
    ))
}

fn io_figures() {
    let dir = tempfile::tempdir().unwrap();
    eprintln!("journal files in {}", dir.path().display());
    let big = 256 * 1024 / RECORD as u64; // records per 256 KiB commit
    let small = 100; // ~19 KB: one two-stream call's second
    let runs: [(&str, u64, u64); 2] = [
        ("256 KiB commits", 700_000, big),
        ("19 KB commits", 60_000, small),
    ];
    for (name, records, per) in runs {
        buffered(dir.path(), records / 10, per); // warm-up: allocate extents, page cache
        buffered(dir.path(), records, per).print(&format!("buffered, {name}"));
        if let Some(f) = direct(dir.path(), records, per) {
            f.print(&format!("O_DIRECT, {name}"));
        }
    }
    eprintln!(
        "one second of 1,000 calls per round (19.2 MB) + syncfs; ns/record = CPU per 192-B record:"
    );
    let layouts: [(&str, usize, usize, bool); 5] = [
        ("1,000 files x 19.2 KB, buffered", 1000, 100 * RECORD, false),
        // Reel's layout with O_DIRECT: each second's 19.2 KB rounded up to whole blocks.
        ("1,000 files x 20 KiB, O_DIRECT", 1000, 20 * 1024, true),
        ("one file, 19.2 KB writes, buffered", 1, 100 * RECORD, false),
        ("one file, 1 MiB writes, buffered", 1, 1 << 20, false),
        ("one file, 1 MiB writes, O_DIRECT", 1, 1 << 20, true),
    ];
    for (name, files, size, direct) in layouts {
        if let Some(f) = layout(dir.path(), files, size, direct) {
            eprintln!(
                "{name:<40} {:>6.0} ns CPU/record, {:>6.0} ms wall per round",
                f.cpu.as_nanos() as f64 / f.records as f64,
                f.wall.as_secs_f64() * 1000.0 / f.commits as f64
            );
        }
    }
    for chunk in [256 * 1024, 1 << 20] {
        if let Some(f) = wal_layout(dir.path(), chunk) {
            let name = format!("shared log + 1,000 files x {} KiB chunks", chunk / 1024);
            eprintln!(
                "{name:<40} {:>6.0} ns CPU/record, {:>6.0} ms wall per round",
                f.cpu.as_nanos() as f64 / f.records as f64,
                f.wall.as_secs_f64() * 1000.0 / f.commits as f64
            );
        }
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("journal");
    g.throughput(Throughput::Elements(1000));
    let mut out = Vec::with_capacity(1000 * RECORD);
    g.bench_function("encode_into x1000 (160-byte payload)", |b| {
        b.iter(|| {
            out.clear();
            for i in 0..1000 {
                encode_into(black_box(&record(i)), &mut out);
            }
            black_box(out.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);

fn main() {
    print_machine();
    // Under `cargo test --benches` criterion runs each bench once; skip the I/O figures then.
    if !std::env::args().any(|a| a == "--test") {
        io_figures();
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
