//! The SRC side of load and integration testing: what `reel load` and the tests use to play a
//! session recording client towards Reel.
//!
//! Owns: generating test media ([`tone`]: sine tones, G.711 encoding, telephone events) and
//! sending it as paced RTP from one thread ([`rtp_send`]), with the impairments a recorder
//! must survive (loss, reordering, duplicates, SSRC change, hold, late start, DTMF, SRTP via
//! a caller-supplied hook).
//!
//! Must not: be used by the recorder itself. Nothing under `media`, `record` or `control`
//! depends on this module; it depends only on `std`, `libc` and `rand`.

pub mod rtp_send;
pub mod tone;
