//! SIP (RFC 3261) without I/O: message parse/encode, typed header helpers, stream framing,
//! server and client transactions with their timers, and dialogs.
//!
//! Owns: bytes <-> [`Message`], the transaction state machines and their retransmissions.
//! Must not: know SDP, media, files or sockets. The driver feeds it bytes and `now`, and sends
//! what [`Endpoint::poll_transmit`] returns.

pub mod dialog;
pub mod framing;
pub mod header;
pub mod message;
pub mod transaction;

pub use dialog::Dialog;
pub use framing::StreamFramer;
pub use header::{CSeq, NameAddr, Via};
pub use message::{Headers, Message, Method, ParseError, Request, Response};
pub use transaction::{ConnId, Endpoint, EndpointConfig, Event, Flow, Transmit, Transport, TxId};
