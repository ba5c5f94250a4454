//! Reel: a SIPREC (RFC 7866) session recording server.
//!
//! (Architecture overview: filled in as the modules land; see `docs/architecture.md`.)

pub mod config;
pub mod record;
pub mod sip;
pub mod siprec;
pub mod control;
pub mod driver;
pub mod media;
pub mod metrics;
