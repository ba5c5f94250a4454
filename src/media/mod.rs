//! The media path. This milestone holds the backend choice only: which receive backend the
//! host allows (io_uring, else epoll) and why, so `reel serve` can say so at start. The
//! receive loops, rings and journal land with the media issue.

pub mod backend;
pub mod dtmf;
pub mod probe;
pub mod rtp;
pub mod stream;

pub use probe::{Backend, BackendChoice, choose_backend};
