//! SIPREC (RFC 7866) bodies without I/O: request detection, tolerant multipart split, SDP offer
//! to answer, and RFC 7865 metadata (plus the pre-RFC dialects) into one model.
//!
//! Owns: parsing and building bodies. Must not: open sockets or choose ports (control passes the
//! ports it allocated into [`sdp::build_answer`]).

pub mod error;
pub mod metadata;
pub mod multipart;
pub mod sdp;

pub use error::BodyError;
pub use metadata::{DataMode, Metadata, MetadataDoc, Participant, StreamInfo};
pub use multipart::{BodyPart, split_body};
pub use sdp::{Codec, Direction, MediaDescription, SessionDescription, StreamPlan};

use crate::sip::Request;

/// RFC 7866 §6.1: a request is SIPREC when it requires or supports `siprec`, its Contact has
/// `+sip.src` (or a bare `src`), or its body has an rs-metadata part.
pub fn is_siprec(request: &Request, parts: &[BodyPart]) -> bool {
    let _ = (request, parts);
    todo!()
}

/// True for `application/rs-metadata+xml` and `application/rs-metadata` (case-insensitive,
/// parameters ignored).
pub fn is_metadata_type(mime: &str) -> bool {
    let _ = mime;
    todo!()
}
