//! SIP message model, parser and encoder.
//!
//! The parser is our own (see `docs/protocol.md`, "Why our own SIP parser"): it accepts compact
//! header names, IPv6 references in URIs and Via, folded header lines, LF-only line ends, and
//! never panics on network input.

use std::fmt;

/// A SIP method. Unknown methods are kept as written.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Update,
    Info,
    Prack,
    Register,
    Subscribe,
    Notify,
    Refer,
    Message,
    Publish,
    Other(String),
}

impl Method {
    /// Parses a method token (case-sensitive, as RFC 3261 says; unknown tokens become `Other`).
    pub fn parse(token: &str) -> Method {
        todo!("{token}")
    }
    pub fn as_str(&self) -> &str {
        todo!()
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One header line: the name in its canonical long form (`v` -> `Via`, `call-id` -> `Call-ID`)
/// and the value with surrounding white space trimmed and folding undone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: String,
}

/// Headers in message order. Look-ups are case-insensitive and accept compact or long names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers {
    entries: Vec<Header>,
}

impl Headers {
    pub fn new() -> Headers {
        Headers::default()
    }
    /// First value of the header (as one line; a header that appears in several lines returns
    /// the first line).
    pub fn get(&self, name: &str) -> Option<&str> {
        todo!("{name}")
    }
    /// Every line of the header, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        let _ = name;
        std::iter::empty()
    }
    /// Every comma-separated element of every line of the header, in order, with commas inside
    /// quotes and `<...>` respected (for Via, Contact, Route, Supported, Require, Allow ...).
    pub fn get_list(&self, name: &str) -> Vec<String> {
        todo!("{name}")
    }
    /// Appends a header line (name normalised to its canonical form).
    pub fn push(&mut self, name: &str, value: impl Into<String>) {
        let _ = (name, value.into());
        todo!()
    }
    /// Replaces every line of the header with one line.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        let _ = (name, value.into());
        todo!()
    }
    /// Removes every line of the header.
    pub fn remove(&mut self, name: &str) {
        let _ = name;
        todo!()
    }
    pub fn iter(&self) -> impl Iterator<Item = &Header> {
        self.entries.iter()
    }
    /// True when a comma-separated list header (Require, Supported ...) contains `token`
    /// (case-insensitive).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        let _ = (name, token);
        todo!()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// The Request-URI as written (may be an IPv6 reference, `sip:[::1]:5060`).
    pub uri: String,
    pub headers: Headers,
    pub body: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Headers,
    pub body: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Request(Request),
    Response(Response),
}

/// Why bytes were not a SIP message. `reason` is fit for a Warning header or reason phrase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub reason: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}
impl std::error::Error for ParseError {}

/// Parses one whole message (a datagram, or one frame cut by [`crate::sip::StreamFramer`]).
/// The body is the bytes after the blank line, cut to Content-Length when that is shorter; a
/// Content-Length larger than what is there is an error. Missing Content-Length: the rest.
pub fn parse_message(buf: &[u8]) -> Result<Message, ParseError> {
    let _ = buf;
    todo!()
}

impl Request {
    /// Checks what RFC 3261 §8.1.1 requires of a request (Via, From, To, Call-ID, CSeq whose
    /// method matches the request's). Returns the reason to put in a 400.
    pub fn validate(&self) -> Result<(), String> {
        todo!()
    }
    pub fn call_id(&self) -> Option<&str> {
        self.headers.get("Call-ID")
    }
    /// Serialises with a fresh Content-Length matching the body.
    pub fn encode(&self) -> Vec<u8> {
        todo!()
    }
}

impl Response {
    /// A response to `req` per RFC 3261 §8.2.6: Via (all), From, To, Call-ID and CSeq copied;
    /// the caller adds a To tag where needed. `reason` may be empty for the standard phrase.
    pub fn for_request(req: &Request, status: u16, reason: &str) -> Response {
        let _ = (req, status, reason);
        todo!()
    }
    /// Serialises with a fresh Content-Length matching the body.
    pub fn encode(&self) -> Vec<u8> {
        todo!()
    }
}

/// The standard reason phrase of a status code.
pub fn reason_phrase(status: u16) -> &'static str {
    let _ = status;
    todo!()
}
