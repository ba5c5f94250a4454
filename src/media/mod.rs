//! The media path: which receive backend the host allows (`probe`: io_uring, else epoll) and
//! why; the receive backends (`backend`); RTP parsing and per-stream bookkeeping (`rtp`,
//! `stream`, `dtmf`); SRTP decryption (`srtp`); the packet ring to the writer (`ring`); the
//! media thread loop (`worker`).
//! Everything on the packet path: no allocation, no locks, no logging, no panics on input.
//! Must not: parse SIP, write files, block.

pub mod backend;
pub mod dtmf;
pub mod probe;
pub mod ring;
pub mod rtp;
pub mod srtp;
pub mod stream;
pub mod worker;

pub use probe::{Backend, BackendChoice, choose_backend};
