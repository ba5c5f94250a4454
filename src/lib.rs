//! # Reel: a SIPREC session recording server
//!
//! Carriers' session recording clients (SRCs: SBCs, BroadWorks, CUBE ...) fork every call they
//! must record to Reel over SIPREC (RFC 7866, metadata RFC 7865). Reel answers each recording
//! session, receives its RTP, and turns every session into a folder with `recording.json`,
//! the metadata and playable audio.
//!
//! ## Threads
//!
//! ```text
//!  SRC ── SIP (UDP/TCP/TLS) ──> control thread (tokio current_thread, `driver`)
//!                                 sip::Endpoint ─events─> control::Recorder
//!                                    │  StorageOp (ordered channel)      │ ports (bound sockets)
//!                                    v                                  v
//!                               writer thread (`driver::writer`) <── media threads (`media::worker`)
//!                               spool, journals, finalize,   rings   io_uring / epoll, SRTP, RTP
//! ```
//!
//! - The **control thread** runs one single-threaded tokio runtime. It owns every SIP socket,
//!   the HTTP API and the timers, and moves bytes and time into [`control::Recorder`]. It never
//!   touches an RTP packet and never blocks on a file: storage work goes to the writer thread
//!   as [`control::StorageOp`]s, in order, over a channel.
//! - The **writer thread** does all blocking file I/O (spool state, metadata versions, one
//!   append-only journal per recording with group commit, finalize, the start-up crash scan)
//!   and reports back what the control thread waits for.
//! - **Media threads** (`media.threads`, pinned to `media.cpus`) each own one receive backend:
//!   io_uring with multishot `recvmsg` over a provided buffer ring, or epoll + `recvmmsg` where
//!   io_uring is blocked ([`media::choose_backend`] decides and says why). They take each
//!   session's RTP/RTCP sockets from the port pool after the 200 OK, check the source, decrypt
//!   SRTP, parse RTP, and push each packet into a bounded SPSC byte ring to the writer thread.
//!   They wake every few milliseconds and drain everything queued: a recorder needs no
//!   per-packet latency, and batching is what makes a packet cheap.
//!
//! Threads share nothing mutable: they talk through channels (and, on the packet path, bounded
//! SPSC rings whose full state is counted, never waited on).
//!
//! ## Protocol logic without I/O
//!
//! [`sip::Endpoint`] (transactions) and [`control::Recorder`] (sessions) take bytes, events and
//! `now` and return transmits, storage work and their next deadline, in the shape of
//! `quinn-proto`: `handle_*` inputs, commands, `poll_*` outputs. Only files under `driver` do
//! I/O. A whole SIPREC call (INVITE, retransmissions, CANCEL races, re-INVITE, BYE) therefore
//! runs in tests with virtual time and no sockets (`tests/simulation.rs`), and the same code
//! runs on real sockets.
//!
//! ## Time
//!
//! Two clocks: a monotonic `Instant` for every timer (RFC 3261 T1/T2/T4, Timers A-K, RFC 4028
//! session timers, the drain deadline) and the wall clock `SystemTime` only for what a person
//! reads (`started_at`, `ended_at`). Both are passed in; nothing below `driver` reads a clock.
//! A recording's timeline starts when Reel sends the 200 OK to the initial INVITE and ends when
//! the session ends (BYE, missing ACK, session-timer expiry, shutdown).
//!
//! ## Failure policy
//!
//! - No input from the network can panic the process: parsers return errors, and every error
//!   maps to one SIP answer ([`siprec::BodyError::status`], 400/415/420/422/481/488/503).
//! - One bad message never disturbs another call: a request is answered or dropped inside its
//!   own transaction; a broken TCP stream closes that connection only.
//! - A 200 OK promises a recording: the INVITE is answered only after its spool entry exists
//!   on disk. When storage fails or free space is low, new sessions get 503 with Retry-After.
//! - Nothing is deleted on error. What cannot be finalized is moved to `quarantine/` with a
//!   `reason.txt`. At start the writer finalizes every spooled session left by a crash as
//!   `partial`; requests in dialogs that died with the old process get 481.
//! - A bug must not cost every call: a panic while handling one request is caught, logged
//!   and answered 500 (`reel_control_panics_total`); one while finalizing a recording sends
//!   that folder to quarantine with the panic as its reason. A media or writer thread that
//!   panics, or 20 panics of the control loop within a minute, end the process with exit
//!   code 70, and the restart's crash scan recovers the recordings.
//! - SIGTERM drains: new INVITEs and OPTIONS get 503, active sessions run to their BYE (or get
//!   a BYE from Reel at the drain timeout), every recording is finalized, then exit 0.

pub mod codec;
pub mod config;
pub mod control;
pub mod driver;
pub mod load;
pub mod media;
pub mod metrics;
pub mod record;
pub mod sip;
pub mod siprec;
pub mod srv;

/// What a caught panic said (its `&str` or `String` payload).
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}
