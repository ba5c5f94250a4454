//! The SRC side of load and integration testing: what `reel load` and the tests use to play a
//! session recording client towards Reel.
//!
//! Owns: generating test media ([`tone`]: sine tones, G.711 encoding, telephone events) and
//! sending it as paced RTP from one thread ([`rtp_send`]), with the impairments a recorder
//! must survive (loss, reordering, duplicates, SSRC change, hold, late start, DTMF, SRTP via
//! a caller-supplied hook); the SIPREC request bodies in four vendor dialects ([`body`]); the
//! per-call SIP client state machine without I/O ([`call`]); and the `reel load` run itself
//! ([`run`]): sockets, target selection with failover, pacing of new calls, the report.
//!
//! Must not: be used by the recorder itself. Nothing under `media`, `record` or `control`
//! depends on this module. It uses the recorder's SIP parser and framing (`crate::sip`), the
//! RFC 2782 selector (`crate::srv`) and the G.722 encoder (`crate::codec`), never the
//! recorder's session logic.

pub mod body;
pub mod call;
pub mod rtp_send;
pub mod run;
pub mod tone;
