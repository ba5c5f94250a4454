//! The media path: which receive backend the host allows (io_uring, else epoll) and why
//! (`probe`), the receive backends themselves (`backend`), RTP parsing and per-stream
//! bookkeeping. The media threads' loops and the journal land with the media issue.

pub mod backend;
pub mod dtmf;
pub mod probe;
pub mod rtp;
pub mod stream;

pub use probe::{Backend, BackendChoice, choose_backend};
