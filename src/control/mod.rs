//! Recording-session control without I/O: what a SIPREC request means for the recorder.
//!
//! [`Recorder`] owns the SIP transaction layer ([`crate::sip::Endpoint`]) and the sessions. It
//! takes bytes, storage acknowledgements and `now`; it returns transmits, [`StorageOp`]s for the
//! writer thread, and its next deadline. It decides admission (503 when full, draining or out
//! of disk), answers offers, merges metadata, runs session timers and ends sessions.
//!
//! Ports are bound by a [`MediaHost`] the driver passes in, so an SRC sees open RTP ports as
//! soon as it has the answer, and a test can pass a fake one.
//!
//! Must not: parse RTP, touch files or sockets itself, hold locks shared with media threads.

pub mod ports;
pub mod recorder;

pub use ports::PortPool;
pub use recorder::{MediaHost, Recorder, RecorderConfig, SessionKey, StorageOp};
