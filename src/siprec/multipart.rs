//! multipart/mixed (RFC 2046) split, tolerant of what real SRCs send: parts in any order, extra
//! parts (e.g. `application/gtd`), quoted or spaced boundary parameters, LF-only line ends, a
//! missing close delimiter, preamble and trailing junk.

use super::error::BodyError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BodyPart {
    /// MIME type, lower-cased, without parameters (`application/sdp`).
    pub content_type: String,
    /// The part's own headers (names as written, values trimmed).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Splits a message body by its Content-Type header value. A non-multipart body is one part; an
/// empty body is no part. Each part's trailing CRLF before the next delimiter is not body.
pub fn split_body(content_type: Option<&str>, body: &[u8]) -> Result<Vec<BodyPart>, BodyError> {
    let _ = (content_type, body);
    todo!()
}
