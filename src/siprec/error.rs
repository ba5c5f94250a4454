//! One list of body problems, each with the SIP status it is answered with.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BodyError {
    /// The body (or a part) is not something Reel can read: 400.
    Malformed(String),
    /// A Content-Type Reel does not handle where it matters (no SDP at all ...): 415.
    UnsupportedType(String),
    /// Nothing in the offer can be recorded (no codec, only unsupported crypto ...): 488.
    NotAcceptable(String),
    /// Over a configured size limit (metadata bytes, streams per session): 413.
    TooLarge(String),
    /// Metadata Reel will not read, for safety (a DTD or entities, nesting too deep): 400,
    /// and the whole request is refused (broken but harmless metadata only costs a warning).
    Refused(String),
}

impl BodyError {
    /// The SIP status this problem is answered with.
    pub fn status(&self) -> u16 {
        match self {
            BodyError::Malformed(_) => 400,
            BodyError::UnsupportedType(_) => 415,
            BodyError::NotAcceptable(_) => 488,
            BodyError::TooLarge(_) => 413,
            BodyError::Refused(_) => 400,
        }
    }
    pub fn reason(&self) -> &str {
        match self {
            BodyError::Malformed(r)
            | BodyError::UnsupportedType(r)
            | BodyError::NotAcceptable(r)
            | BodyError::TooLarge(r)
            | BodyError::Refused(r) => r,
        }
    }
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status(), self.reason())
    }
}
impl std::error::Error for BodyError {}
