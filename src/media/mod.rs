//! The media path: which receive backend the host allows (io_uring, else epoll) and why; RTP
//! header parsing and per-stream bookkeeping (sequence, loss, SSRCs, DTMF); SRTP decryption.
//! Everything here may run per packet: no allocation, no locks, no logging, no panics on input.
//! Must not: parse SIP, write files, block.

pub mod dtmf;
pub mod probe;
pub mod ring;
pub mod rtp;
pub mod srtp;
pub mod stream;

pub use probe::{Backend, BackendChoice, choose_backend};
