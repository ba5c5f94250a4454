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
        match token {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "UPDATE" => Method::Update,
            "INFO" => Method::Info,
            "PRACK" => Method::Prack,
            "REGISTER" => Method::Register,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "REFER" => Method::Refer,
            "MESSAGE" => Method::Message,
            "PUBLISH" => Method::Publish,
            other => Method::Other(other.to_string()),
        }
    }
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Update => "UPDATE",
            Method::Info => "INFO",
            Method::Prack => "PRACK",
            Method::Register => "REGISTER",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Refer => "REFER",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            Method::Other(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Compact forms (RFC 3261 §7.3.3 and the IANA registry) and their long names.
const COMPACT: &[(char, &str)] = &[
    ('a', "Accept-Contact"),
    ('b', "Referred-By"),
    ('c', "Content-Type"),
    ('d', "Request-Disposition"),
    ('e', "Content-Encoding"),
    ('f', "From"),
    ('i', "Call-ID"),
    ('j', "Reject-Contact"),
    ('k', "Supported"),
    ('l', "Content-Length"),
    ('m', "Contact"),
    ('n', "Identity-Info"),
    ('o', "Event"),
    ('r', "Refer-To"),
    ('s', "Subject"),
    ('t', "To"),
    ('u', "Allow-Events"),
    ('v', "Via"),
    ('x', "Session-Expires"),
    ('y', "Identity"),
];

/// Long names whose conventional casing is not plain "Title-Case" of what peers send, or that we
/// want written the same way whatever the peer wrote. Anything not listed is kept as written.
const CANONICAL: &[&str] = &[
    "Accept",
    "Accept-Contact",
    "Accept-Encoding",
    "Accept-Language",
    "Accept-Resource-Priority",
    "Alert-Info",
    "Allow",
    "Allow-Events",
    "Authentication-Info",
    "Authorization",
    "Call-ID",
    "Call-Info",
    "Contact",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Content-Length",
    "Content-Type",
    "CSeq",
    "Date",
    "Error-Info",
    "Event",
    "Expires",
    "From",
    "History-Info",
    "Identity",
    "Identity-Info",
    "In-Reply-To",
    "Info-Package",
    "Max-Forwards",
    "MIME-Version",
    "Min-Expires",
    "Min-SE",
    "Organization",
    "P-Asserted-Identity",
    "P-Preferred-Identity",
    "Path",
    "Priority",
    "Privacy",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Proxy-Require",
    "RAck",
    "Reason",
    "Record-Route",
    "Recv-Info",
    "Refer-To",
    "Referred-By",
    "Reject-Contact",
    "Replaces",
    "Reply-To",
    "Request-Disposition",
    "Require",
    "Resource-Priority",
    "Retry-After",
    "Route",
    "RSeq",
    "Server",
    "Service-Route",
    "Session-Expires",
    "Session-ID",
    "Subject",
    "Subscription-State",
    "Supported",
    "Timestamp",
    "To",
    "Unsupported",
    "User-Agent",
    "Via",
    "Warning",
    "WWW-Authenticate",
];

/// The canonical form of a header name: compact forms expanded, known names in their
/// conventional casing, unknown names kept as written.
pub fn canonical_name(name: &str) -> std::borrow::Cow<'_, str> {
    use std::borrow::Cow;
    let mut chars = name.chars();
    if let (Some(c), None) = (chars.next(), chars.next()) {
        let lower = c.to_ascii_lowercase();
        if let Some((_, long)) = COMPACT.iter().find(|(k, _)| *k == lower) {
            return Cow::Borrowed(long);
        }
    }
    match CANONICAL
        .iter()
        .find(|known| known.eq_ignore_ascii_case(name))
    {
        Some(known) => Cow::Borrowed(known),
        None => Cow::Borrowed(name),
    }
}

/// Splits a comma-separated header value into its elements, leaving commas inside quoted
/// strings (with backslash escapes) and inside `<...>` alone. Elements are trimmed; empty ones
/// are dropped.
pub fn split_list(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut in_quotes = false;
    let mut in_angle = false;
    let mut escaped = false;
    for c in value.chars() {
        if in_quotes {
            current.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_quotes = false;
            }
            continue;
        }
        match c {
            '"' => in_quotes = true,
            '<' => in_angle = true,
            '>' => in_angle = false,
            ',' if !in_angle => {
                let element = current.trim();
                if !element.is_empty() {
                    out.push(element.to_string());
                }
                current.clear();
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    let element = current.trim();
    if !element.is_empty() {
        out.push(element.to_string());
    }
    out
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
        let name = canonical_name(name);
        self.entries
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(&name))
            .map(|h| h.value.as_str())
    }
    /// Every line of the header, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        let name = canonical_name(name);
        self.entries
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(&name))
            .map(|h| h.value.as_str())
    }
    /// Every comma-separated element of every line of the header, in order, with commas inside
    /// quotes and `<...>` respected (for Via, Contact, Route, Supported, Require, Allow ...).
    pub fn get_list(&self, name: &str) -> Vec<String> {
        self.get_all(name).flat_map(split_list).collect()
    }
    /// Appends a header line (name normalised to its canonical form).
    pub fn push(&mut self, name: &str, value: impl Into<String>) {
        self.entries.push(Header {
            name: canonical_name(name).into_owned(),
            value: value.into(),
        });
    }
    /// Inserts a header line before all others (a new top Via on a request we send).
    pub fn push_front(&mut self, name: &str, value: impl Into<String>) {
        self.entries.insert(
            0,
            Header {
                name: canonical_name(name).into_owned(),
                value: value.into(),
            },
        );
    }
    /// Replaces every line of the header with one line.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        let canonical = canonical_name(name).into_owned();
        let value = value.into();
        // Keep the position of the first line so that re-encoding does not reorder headers.
        match self
            .entries
            .iter()
            .position(|h| h.name.eq_ignore_ascii_case(&canonical))
        {
            Some(first) => {
                self.entries[first].value = value;
                self.entries[first].name = canonical.clone();
                let mut index = 0;
                self.entries.retain(|h| {
                    let keep = index <= first || !h.name.eq_ignore_ascii_case(&canonical);
                    index += 1;
                    keep
                });
            }
            None => self.entries.push(Header {
                name: canonical,
                value,
            }),
        }
    }
    /// Replaces the first line of the header only (the top Via on receipt), keeping the others.
    /// Returns false when the header is absent.
    pub fn replace_first(&mut self, name: &str, value: impl Into<String>) -> bool {
        let canonical = canonical_name(name);
        match self
            .entries
            .iter_mut()
            .find(|h| h.name.eq_ignore_ascii_case(&canonical))
        {
            Some(h) => {
                h.value = value.into();
                true
            }
            None => false,
        }
    }
    /// Removes every line of the header.
    pub fn remove(&mut self, name: &str) {
        let canonical = canonical_name(name);
        self.entries
            .retain(|h| !h.name.eq_ignore_ascii_case(&canonical));
    }
    pub fn iter(&self) -> impl Iterator<Item = &Header> {
        self.entries.iter()
    }
    /// True when a comma-separated list header (Require, Supported ...) contains `token`
    /// (case-insensitive).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.get_list(name).iter().any(|element| {
            // Option tags carry no parameters, but tolerate `timer;x=y`-style elements.
            let tag = element.split(';').next().unwrap_or("").trim();
            tag.eq_ignore_ascii_case(token)
        })
    }
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
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

impl ParseError {
    pub(crate) fn new(reason: impl Into<String>) -> ParseError {
        ParseError {
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}
impl std::error::Error for ParseError {}

/// The only version we speak (RFC 3261 §7.1).
pub const SIP_VERSION: &str = "SIP/2.0";

/// A message as far as it could be read, for the endpoint: it answers 400/505 to requests that
/// are damaged but still carry what a response needs.
#[derive(Clone, Debug)]
pub(crate) struct RawMessage {
    pub message: Message,
    /// The SIP-Version token as written (`SIP/2.0`, `SIP/3.0` ...).
    pub version: String,
    /// The first thing wrong with the header section or body, if any.
    pub problem: Option<String>,
}

impl RawMessage {
    pub fn version_ok(&self) -> bool {
        self.version.eq_ignore_ascii_case(SIP_VERSION)
    }
}

/// Parses one whole message (a datagram, or one frame cut by [`crate::sip::StreamFramer`]).
/// The body is the bytes after the blank line, cut to Content-Length when that is shorter.
/// Missing Content-Length, or one larger than what is there: the rest.
pub fn parse_message(buf: &[u8]) -> Result<Message, ParseError> {
    let raw = parse_raw(buf)?;
    if !raw.version_ok() {
        return Err(ParseError::new(format!(
            "Unsupported SIP version {}",
            sanitize(&raw.version)
        )));
    }
    match raw.problem {
        Some(problem) => Err(ParseError::new(problem)),
        None => Ok(raw.message),
    }
}

/// Replaces control characters so that text taken from input is safe in a reason phrase or a
/// quoted Warning text, and caps its length.
pub(crate) fn sanitize(text: &str) -> String {
    text.chars()
        .take(64)
        .map(|c| {
            if c.is_control() || c == '"' || c == '\\' {
                '?'
            } else {
                c
            }
        })
        .collect()
}

/// Splits the buffer into lines up to the blank line. Returns the lines (without their line
/// ends) and the offset of the body. Without a blank line, everything is header section.
fn split_head(buf: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut lines = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let (line, next) = match buf[pos..].iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[pos..pos + i], pos + i + 1),
            None => (&buf[pos..], buf.len()),
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        pos = next;
        if line.is_empty() {
            return (lines, pos);
        }
        lines.push(line);
    }
    (lines, buf.len())
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-.!%*_+`'~".contains(c)
}

/// Parses as much of a message as can be read. Fails only when there is no recognisable start
/// line; problems in headers and body are reported in [`RawMessage::problem`].
pub(crate) fn parse_raw(buf: &[u8]) -> Result<RawMessage, ParseError> {
    // RFC 3261 §7.5: CRLFs before the start line are ignored.
    let skip = buf
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    let buf = &buf[skip..];
    if buf.is_empty() {
        return Err(ParseError::new("Empty message"));
    }
    let (lines, body_start) = split_head(buf);
    let Some((start, header_lines)) = lines.split_first() else {
        return Err(ParseError::new("Empty message"));
    };
    let start = String::from_utf8_lossy(start);
    let mut problem: Option<String> = None;
    let mut note = |p: String| {
        if problem.is_none() {
            problem = Some(p);
        }
    };

    // Header lines, with folding undone (RFC 3261 §7.3.1).
    let mut headers = Headers::new();
    let mut current: Option<(String, String)> = None;
    for line in header_lines {
        let line = String::from_utf8_lossy(line);
        if line.starts_with([' ', '\t']) {
            match current.as_mut() {
                Some((_, value)) => {
                    let more = line.trim();
                    if !more.is_empty() {
                        if !value.is_empty() {
                            value.push(' ');
                        }
                        value.push_str(more);
                    }
                }
                None => note("Continuation line before any header".to_string()),
            }
            continue;
        }
        if let Some((name, value)) = current.take() {
            headers.push(&name, value);
        }
        match line.split_once(':') {
            Some((name, value)) => {
                let name = name.trim();
                if name.is_empty() || !name.chars().all(is_token_char) {
                    note(format!("Invalid header name '{}'", sanitize(name)));
                    continue;
                }
                current = Some((name.to_string(), value.trim().to_string()));
            }
            None => note(format!("Header line without colon '{}'", sanitize(&line))),
        }
    }
    if let Some((name, value)) = current.take() {
        headers.push(&name, value);
    }

    // Body, cut to Content-Length (RFC 3261 §18.3, §20.14). Two that disagree leave the body
    // ambiguous: a 400 (on a stream the framer already closed the connection for it).
    let conflicting = {
        let mut lengths = headers.get_all("Content-Length").map(str::trim);
        lengths
            .next()
            .is_some_and(|first| lengths.any(|other| other != first))
    };
    if conflicting {
        note("Conflicting Content-Length headers".to_string());
    }
    let rest = &buf[body_start..];
    let body = match headers.get("Content-Length") {
        None => rest.to_vec(),
        Some(value) => match value.trim().parse::<usize>() {
            Ok(len) if len <= rest.len() => rest[..len].to_vec(),
            // Larger than what is there. On a stream the framer has waited for every byte, so
            // this is a datagram, and a datagram arrives whole: the sender miscounted (test
            // tools with a hard-coded length do). RFC 3261 §18.3 says SHOULD reject with 400; a
            // recorder would rather record, and the body's own parsers still judge the bytes
            // (a multipart body needs its boundaries, SDP its lines).
            Ok(_) => rest.to_vec(),
            Err(_) => {
                note(format!("Invalid Content-Length '{}'", sanitize(value)));
                rest.to_vec()
            }
        },
    };

    let (message, version) = if let Some(after) = strip_prefix_ci(&start, "SIP/") {
        // Status-Line: SIP-Version SP Status-Code SP Reason-Phrase
        let version = format!("SIP/{}", after.split(' ').next().unwrap_or(""));
        let mut parts = start.splitn(3, ' ');
        let _ = parts.next();
        let code = parts.next().unwrap_or("");
        let reason = parts.next().unwrap_or("").trim().to_string();
        let status = match code.parse::<u16>() {
            Ok(s) if (100..=699).contains(&s) && code.len() == 3 => s,
            _ => {
                return Err(ParseError::new(format!(
                    "Invalid status code '{}'",
                    sanitize(code)
                )));
            }
        };
        (
            Message::Response(Response {
                status,
                reason,
                headers,
                body,
            }),
            version,
        )
    } else {
        // Request-Line: Method SP Request-URI SP SIP-Version. Tolerate runs of white space.
        let parts: Vec<&str> = start.split_whitespace().collect();
        let line = match parts.as_slice() {
            [method, uri, version]
                if method.chars().all(is_token_char)
                    && strip_prefix_ci(version, "SIP/").is_some() =>
            {
                Ok((Method::parse(method), uri.to_string(), version.to_string()))
            }
            [method, _, _] if !method.chars().all(is_token_char) => {
                Err(format!("Invalid method '{}'", sanitize(method)))
            }
            [_, _, version] => Err(format!(
                "Not a SIP request line (version '{}')",
                sanitize(version)
            )),
            _ => Err("Malformed request line".to_string()),
        };
        // A broken request line on what is otherwise a SIP request (its Via and CSeq say where
        // the answer goes and which request it is) makes a request to answer 400, named after
        // its CSeq method (so a broken ACK still gets no answer). Without those it is not
        // worth an answer.
        let (method, uri, version) = match line {
            Ok(line) => line,
            Err(reason) => {
                let cseq = headers
                    .get("CSeq")
                    .and_then(|c| super::header::CSeq::parse(c).ok());
                let (Some(cseq), true) = (cseq, headers.get("Via").is_some()) else {
                    return Err(ParseError::new(reason));
                };
                problem = Some(reason);
                (
                    cseq.method,
                    "sip:invalid".to_string(),
                    "SIP/2.0".to_string(),
                )
            }
        };
        (
            Message::Request(Request {
                method,
                uri,
                headers,
                body,
            }),
            version,
        )
    };
    Ok(RawMessage {
        message,
        version,
        problem,
    })
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

/// True when `uri` looks like `scheme:rest` (RFC 3986 scheme syntax).
fn has_scheme(uri: &str) -> bool {
    match uri.split_once(':') {
        Some((scheme, rest)) => {
            !rest.is_empty()
                && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        }
        None => false,
    }
}

fn encode_into(out: &mut Vec<u8>, start_line: &str, headers: &Headers, body: &[u8]) {
    out.extend_from_slice(start_line.as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in headers.iter() {
        if h.name.eq_ignore_ascii_case("Content-Length") {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
}

impl Request {
    /// Checks what RFC 3261 §8.1.1 requires of a request (Via, From, To, Call-ID, CSeq whose
    /// method matches the request's). Returns the reason to put in a 400.
    pub fn validate(&self) -> Result<(), String> {
        use super::header::{CSeq, NameAddr, Via};
        if !has_scheme(&self.uri) {
            return Err("Invalid Request-URI".to_string());
        }
        let Some(top_via) = self.headers.get_list("Via").into_iter().next() else {
            return Err("Missing Via header".to_string());
        };
        if let Err(e) = Via::parse(&top_via) {
            return Err(format!("Invalid Via header: {e}"));
        }
        for name in ["From", "To"] {
            match self.headers.get(name) {
                None => return Err(format!("Missing {name} header")),
                Some(v) => {
                    if let Err(e) = NameAddr::parse(v) {
                        return Err(format!("Invalid {name} header: {e}"));
                    }
                }
            }
        }
        match self.headers.get("Call-ID") {
            None => return Err("Missing Call-ID header".to_string()),
            Some(v) if v.trim().is_empty() => return Err("Empty Call-ID header".to_string()),
            Some(_) => {}
        }
        let cseq = match self.headers.get("CSeq") {
            None => return Err("Missing CSeq header".to_string()),
            Some(v) => CSeq::parse(v).map_err(|e| format!("Invalid CSeq header: {e}"))?,
        };
        // An ACK or a BYE whose CSeq names another method is taken by its request line: each
        // means one thing only, and SRC test scripts in the field send both (MiaRec's
        // BroadWorks SIPp scenarios: `ACK ...` and `BYE ...` with `CSeq: n INVITE`). Any other
        // request with a mismatch is a 400: an INVITE whose CSeq says BYE is not safe to act on.
        if cseq.method != self.method && !matches!(self.method, Method::Ack | Method::Bye) {
            return Err("CSeq method does not match the request method".to_string());
        }
        if let Some(mf) = self.headers.get("Max-Forwards")
            && mf.trim().parse::<u8>().is_err()
        {
            return Err("Invalid Max-Forwards header".to_string());
        }
        Ok(())
    }
    pub fn call_id(&self) -> Option<&str> {
        self.headers.get("Call-ID")
    }
    /// Serialises with a fresh Content-Length matching the body.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512 + self.body.len());
        let start = format!("{} {} {SIP_VERSION}", self.method, self.uri);
        encode_into(&mut out, &start, &self.headers, &self.body);
        out
    }
}

impl Response {
    /// A response to `req` per RFC 3261 §8.2.6: Via (all), From, To, Call-ID and CSeq copied;
    /// the caller adds a To tag where needed. `reason` may be empty for the standard phrase.
    pub fn for_request(req: &Request, status: u16, reason: &str) -> Response {
        let mut headers = Headers::new();
        for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
            for value in req.headers.get_all(name) {
                headers.push(name, value);
            }
        }
        let reason = if reason.is_empty() {
            reason_phrase(status)
        } else {
            reason
        };
        Response {
            status,
            reason: reason.to_string(),
            headers,
            body: Vec::new(),
        }
    }
    /// Serialises with a fresh Content-Length matching the body.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512 + self.body.len());
        let start = format!("{SIP_VERSION} {} {}", self.status, self.reason);
        encode_into(&mut out, &start, &self.headers, &self.body);
        out
    }
}

/// The standard reason phrase of a status code.
pub fn reason_phrase(status: u16) -> &'static str {
    known_reason(status).unwrap_or(match status {
        // RFC 3261 §21: an unknown code is treated as x00 of its class.
        100..=199 => "Trying",
        200..=299 => "OK",
        300..=399 => "Multiple Choices",
        400..=499 => "Bad Request",
        500..=599 => "Server Internal Error",
        600..=699 => "Global Failure",
        _ => "Unknown",
    })
}

fn known_reason(status: u16) -> Option<&'static str> {
    Some(match status {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        199 => "Early Dialog Terminated",
        200 => "OK",
        202 => "Accepted",
        204 => "No Notification",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Moved Temporarily",
        305 => "Use Proxy",
        380 => "Alternative Service",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        410 => "Gone",
        412 => "Conditional Request Failed",
        413 => "Request Entity Too Large",
        414 => "Request-URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        417 => "Unknown Resource-Priority",
        420 => "Bad Extension",
        421 => "Extension Required",
        422 => "Session Interval Too Small",
        423 => "Interval Too Brief",
        428 => "Use Identity Header",
        429 => "Provide Referrer Identity",
        433 => "Anonymity Disallowed",
        436 => "Bad Identity-Info",
        437 => "Unsupported Certificate",
        438 => "Invalid Identity Header",
        439 => "First Hop Lacks Outbound Support",
        440 => "Max-Breadth Exceeded",
        469 => "Bad Info Package",
        470 => "Consent Needed",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        485 => "Ambiguous",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        489 => "Bad Event",
        491 => "Request Pending",
        493 => "Undecipherable",
        494 => "Security Agreement Required",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        555 => "Push Notification Service Not Supported",
        580 => "Precondition Failure",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        607 => "Unwanted",
        608 => "Rejected",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(text: &str) -> Request {
        match parse_message(text.as_bytes()) {
            Ok(Message::Request(r)) => r,
            other => panic!("not a request: {other:?}"),
        }
    }

    const INVITE: &str = "INVITE sip:srs@10.0.0.1:5060 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK1\r\n\
        Max-Forwards: 70\r\n\
        From: <sip:src@10.0.0.2>;tag=a\r\n\
        To: <sip:srs@10.0.0.1>\r\n\
        Call-ID: c1\r\n\
        CSeq: 1 INVITE\r\n\
        Content-Length: 4\r\n\
        \r\n\
        body";

    #[test]
    fn request_line_and_headers_parse() {
        let r = request(INVITE);
        assert_eq!(r.method, Method::Invite);
        assert_eq!(r.uri, "sip:srs@10.0.0.1:5060");
        assert_eq!(r.call_id(), Some("c1"));
        assert_eq!(r.body, b"body");
        assert_eq!(r.validate(), Ok(()));
    }

    #[test]
    fn ipv6_request_uri_parses() {
        let text = INVITE.replace("sip:srs@10.0.0.1:5060", "sip:[2001:db8::1]:5060");
        assert_eq!(request(&text).uri, "sip:[2001:db8::1]:5060");
    }

    #[test]
    fn status_line_parses() {
        let m = parse_message(b"SIP/2.0 200 OK\r\nCall-ID: x\r\n\r\n").unwrap();
        let Message::Response(r) = m else { panic!() };
        assert_eq!((r.status, r.reason.as_str()), (200, "OK"));
    }

    #[test]
    fn status_line_with_empty_reason_parses() {
        let Ok(Message::Response(r)) = parse_message(b"SIP/2.0 486 \r\n\r\n") else {
            panic!()
        };
        assert_eq!((r.status, r.reason.as_str()), (486, ""));
    }

    #[test]
    fn compact_headers_are_normalised() {
        let text = "OPTIONS sip:a@b SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bKx\r\n\
            f: <sip:x@y>;tag=1\r\nt: <sip:a@b>\r\ni: id\r\nCSeq: 1 OPTIONS\r\nm: <sip:x@y>\r\n\
            k: timer\r\nl: 0\r\nc: application/sdp\r\ne: gzip\r\ns: hi\r\no: dialog\r\n\
            r: <sip:r@r>\r\nb: <sip:b@b>\r\nx: 90\r\nu: talk\r\na: *\r\nj: *\r\nd: proxy\r\n\
            y: abc\r\nn: <http://x>\r\n\r\n";
        let r = request(text);
        let names: Vec<&str> = r.headers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "Via",
                "From",
                "To",
                "Call-ID",
                "CSeq",
                "Contact",
                "Supported",
                "Content-Length",
                "Content-Type",
                "Content-Encoding",
                "Subject",
                "Event",
                "Refer-To",
                "Referred-By",
                "Session-Expires",
                "Allow-Events",
                "Accept-Contact",
                "Reject-Contact",
                "Request-Disposition",
                "Identity",
                "Identity-Info"
            ]
        );
        assert_eq!(r.headers.get("i"), Some("id"));
        assert_eq!(r.headers.get("CALL-ID"), Some("id"));
    }

    #[test]
    fn long_names_get_conventional_casing() {
        let text = "OPTIONS sip:a@b SIP/2.0\r\ncall-id: x\r\ncseq: 1 OPTIONS\r\n\
            www-authenticate: Digest\r\nX-Custom-thing: y\r\n\r\n";
        let r = request(text);
        let names: Vec<&str> = r.headers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(
            names,
            ["Call-ID", "CSeq", "WWW-Authenticate", "X-Custom-thing"]
        );
        assert_eq!(r.headers.get("x-custom-THING"), Some("y"));
    }

    #[test]
    fn folded_lines_are_joined() {
        let text =
            "OPTIONS sip:a@b SIP/2.0\r\nSubject: one\r\n  two\r\n\tthree\r\nCall-ID: x\r\n\r\n";
        assert_eq!(request(text).headers.get("Subject"), Some("one two three"));
    }

    #[test]
    fn lf_only_line_ends_are_tolerated() {
        let text = INVITE.replace("\r\n", "\n");
        let r = request(&text);
        assert_eq!(r.body, b"body");
        assert_eq!(r.validate(), Ok(()));
    }

    #[test]
    fn empty_header_values_are_allowed() {
        let text = "OPTIONS sip:a@b SIP/2.0\r\nSupported:\r\nRecv-Info:\r\nCall-ID: x\r\n\r\n";
        let r = request(text);
        assert_eq!(r.headers.get("Supported"), Some(""));
        assert_eq!(r.headers.get("Recv-Info"), Some(""));
        assert!(r.headers.get_list("Supported").is_empty());
    }

    #[test]
    fn body_is_cut_to_content_length() {
        let text = INVITE.replace("Content-Length: 4", "Content-Length: 2");
        assert_eq!(request(&text).body, b"bo");
    }

    #[test]
    fn content_length_beyond_the_body_takes_what_is_there() {
        let text = INVITE.replace("Content-Length: 4", "Content-Length: 40");
        assert_eq!(request(&text).body, b"body");
    }

    #[test]
    fn conflicting_content_lengths_are_an_error_and_a_repeated_one_is_not() {
        let text = INVITE.replace("Content-Length: 4", "Content-Length: 4\r\nl: 0");
        assert!(parse_message(text.as_bytes()).is_err());
        let text = INVITE.replace("Content-Length: 4", "Content-Length: 4\r\nl: 4");
        assert_eq!(request(&text).body, b"body");
    }

    #[test]
    fn invalid_content_length_is_an_error() {
        let text = INVITE.replace("Content-Length: 4", "Content-Length: four");
        assert!(parse_message(text.as_bytes()).is_err());
    }

    #[test]
    fn missing_content_length_takes_the_rest() {
        let text = INVITE.replace("Content-Length: 4\r\n", "");
        assert_eq!(request(&text).body, b"body");
    }

    #[test]
    fn non_utf8_header_bytes_do_not_panic() {
        let mut data = INVITE.as_bytes().to_vec();
        data.splice(0..0, []);
        let pos = INVITE.find("From: ").unwrap() + 6;
        data.insert(pos, 0xff);
        data.insert(pos, 0xc3);
        assert!(parse_message(&data).is_ok());
    }

    #[test]
    fn other_sip_version_is_detectable() {
        let text = INVITE.replace("SIP/2.0\r\n", "SIP/3.0\r\n");
        assert!(parse_message(text.as_bytes()).is_err());
        let raw = parse_raw(text.as_bytes()).unwrap();
        assert!(!raw.version_ok());
        assert_eq!(raw.version, "SIP/3.0");
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse_message(b"").is_err());
        assert!(parse_message(b"\r\n\r\n").is_err());
        assert!(parse_message(b"hello world").is_err());
        assert!(parse_message(b"GET / HTTP/1.1\r\n\r\n").is_err());
        assert!(parse_message(b"SIP/2.0 abc OK\r\n\r\n").is_err());
    }

    #[test]
    fn header_line_without_colon_is_an_error() {
        let text = INVITE.replace("Max-Forwards: 70", "Max-Forwards 70");
        assert!(parse_message(text.as_bytes()).is_err());
    }

    #[test]
    fn validate_requires_the_mandatory_headers() {
        for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
            let mut r = request(INVITE);
            r.headers.remove(name);
            let err = r.validate().unwrap_err();
            assert!(err.contains(name), "{err}");
        }
    }

    #[test]
    fn validate_checks_cseq_method() {
        let text = INVITE.replace("CSeq: 1 INVITE", "CSeq: 1 BYE");
        assert!(
            request(&text)
                .validate()
                .unwrap_err()
                .contains("CSeq method")
        );
        let ack = INVITE
            .replace("INVITE sip", "ACK sip")
            .replace("1 INVITE", "1 ACK");
        assert_eq!(request(&ack).validate(), Ok(()));
        // Tolerated: an ACK or BYE whose CSeq says INVITE (seen in SRC test scripts).
        for method in ["ACK", "BYE"] {
            let text = INVITE.replace("INVITE sip", &format!("{method} sip"));
            assert_eq!(request(&text).validate(), Ok(()), "{method}");
        }
        let options = INVITE.replace("INVITE sip", "OPTIONS sip");
        assert!(request(&options).validate().is_err());
    }

    #[test]
    fn validate_allows_missing_max_forwards() {
        let text = INVITE.replace("Max-Forwards: 70\r\n", "");
        assert_eq!(request(&text).validate(), Ok(()));
    }

    #[test]
    fn get_list_respects_quotes_and_angle_brackets() {
        let mut h = Headers::new();
        h.push("Contact", "\"a, b\" <sip:x@y;p=1,2>;q=1, <sip:z@w>");
        h.push("m", "sip:third@h");
        assert_eq!(
            h.get_list("Contact"),
            ["\"a, b\" <sip:x@y;p=1,2>;q=1", "<sip:z@w>", "sip:third@h"]
        );
    }

    #[test]
    fn has_token_is_case_insensitive_over_lines() {
        let mut h = Headers::new();
        h.push("Require", "100rel");
        h.push("Require", "SIPREC, timer");
        assert!(h.has_token("require", "siprec"));
        assert!(h.has_token("Require", "Timer"));
        assert!(!h.has_token("Supported", "siprec"));
    }

    #[test]
    fn set_replaces_every_line_in_place() {
        let mut h = Headers::new();
        h.push("Via", "a");
        h.push("To", "t");
        h.push("v", "b");
        h.set("VIA", "c");
        let lines: Vec<(&str, &str)> = h
            .iter()
            .map(|x| (x.name.as_str(), x.value.as_str()))
            .collect();
        assert_eq!(lines, [("Via", "c"), ("To", "t")]);
        h.remove("t");
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn response_for_request_copies_dialog_headers() {
        let mut r = request(INVITE);
        r.headers.push("Via", "SIP/2.0/UDP proxy;branch=z9hG4bK2");
        let resp = Response::for_request(&r, 486, "");
        assert_eq!(resp.reason, "Busy Here");
        assert_eq!(resp.headers.get_all("Via").count(), 2);
        for name in ["From", "To", "Call-ID", "CSeq"] {
            assert_eq!(resp.headers.get(name), r.headers.get(name));
        }
        assert!(resp.headers.get("Max-Forwards").is_none());
    }

    #[test]
    fn encode_writes_canonical_names_and_fresh_content_length() {
        let text = INVITE
            .replace("Call-ID", "i")
            .replace("Content-Length: 4", "l: 99");
        let text = text.replace("l: 99\r\n\r\nbody", "l: 4\r\n\r\nbody");
        let r = request(&text);
        let mut r2 = r.clone();
        r2.body = b"longer body".to_vec();
        let out = String::from_utf8(r2.encode()).unwrap();
        assert!(out.starts_with("INVITE sip:srs@10.0.0.1:5060 SIP/2.0\r\n"));
        assert!(out.contains("\r\nCall-ID: c1\r\n"));
        assert!(out.ends_with("Content-Length: 11\r\n\r\nlonger body"));
        assert_eq!(out.matches("Content-Length").count(), 1);
        assert_eq!(
            parse_message(r.encode().as_slice()),
            Ok(Message::Request(r))
        );
    }

    #[test]
    fn response_encode_round_trips() {
        let resp = Response::for_request(&request(INVITE), 200, "");
        let out = resp.encode();
        assert!(out.starts_with(b"SIP/2.0 200 OK\r\n"));
        let Ok(Message::Response(mut back)) = parse_message(&out) else {
            panic!()
        };
        assert_eq!(back.headers.get("Content-Length"), Some("0"));
        back.headers.remove("Content-Length");
        assert_eq!(back, resp);
    }

    #[test]
    fn reason_phrase_covers_common_codes() {
        for (code, phrase) in [
            (100, "Trying"),
            (180, "Ringing"),
            (183, "Session Progress"),
            (202, "Accepted"),
            (415, "Unsupported Media Type"),
            (420, "Bad Extension"),
            (422, "Session Interval Too Small"),
            (481, "Call/Transaction Does Not Exist"),
            (487, "Request Terminated"),
            (488, "Not Acceptable Here"),
            (491, "Request Pending"),
            (505, "Version Not Supported"),
            (513, "Message Too Large"),
        ] {
            assert_eq!(reason_phrase(code), phrase);
        }
        assert_eq!(reason_phrase(499), "Bad Request");
    }

    #[test]
    fn method_parse_is_case_sensitive() {
        assert_eq!(Method::parse("INVITE"), Method::Invite);
        assert_eq!(Method::parse("invite"), Method::Other("invite".into()));
        assert_eq!(Method::parse("FOO").as_str(), "FOO");
    }

    #[test]
    fn leading_crlfs_before_start_line_are_ignored() {
        let text = format!("\r\n\r\n{INVITE}");
        assert_eq!(request(&text).method, Method::Invite);
    }

    /// Tiny xorshift so the fuzz test needs no extra crate and is repeatable.
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn truncations_and_byte_flips_never_panic() {
        let sample = INVITE.as_bytes();
        for end in 0..=sample.len() {
            let _ = parse_message(&sample[..end]);
            let _ = parse_message(&sample[end..]);
        }
        let mut state = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..5000 {
            let mut data = sample.to_vec();
            for _ in 0..(xorshift(&mut state) % 4 + 1) {
                let i = (xorshift(&mut state) as usize) % data.len();
                data[i] = xorshift(&mut state) as u8;
            }
            if let Ok(Message::Request(r)) = parse_message(&data) {
                let _ = r.validate();
                let _ = r.encode();
            }
        }
    }
}

/// The real vendor requests in the shared sample collection.
#[cfg(test)]
mod sample_tests {
    use super::*;
    use crate::sip::framing::{Frame, StreamFramer};
    use std::path::{Path, PathBuf};

    const SAMPLES: &str = "/work/shared/siprec-samples";

    fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                collect(&path, out);
            } else if path.extension().is_some_and(|e| e == "sip") {
                out.push(path);
            }
        }
    }

    fn samples() -> Vec<(PathBuf, Vec<u8>)> {
        let mut paths = Vec::new();
        collect(Path::new(SAMPLES), &mut paths);
        if paths.is_empty() {
            println!("skipped: no samples under {SAMPLES}");
        }
        paths.sort();
        paths
            .into_iter()
            .filter_map(|p| std::fs::read(&p).ok().map(|d| (p, d)))
            .collect()
    }

    #[test]
    fn vendor_samples_parse_and_validate() {
        for (path, data) in samples() {
            let request = match parse_message(&data) {
                Ok(Message::Request(r)) => r,
                other => panic!("{}: {other:?}", path.display()),
            };
            assert_eq!(request.validate(), Ok(()), "{}", path.display());
            assert!(!request.body.is_empty(), "{}", path.display());
            // Encoding and parsing again gives the same request (Content-Length moves last).
            let Ok(Message::Request(mut again)) = parse_message(&request.encode()) else {
                panic!("{}: re-encoding does not parse", path.display());
            };
            let mut original = request;
            original.headers.remove("Content-Length");
            again.headers.remove("Content-Length");
            assert!(again == original, "{}: round trip differs", path.display());
        }
    }

    #[test]
    fn vendor_samples_frame_from_a_stream() {
        for (path, data) in samples() {
            let mut framer = StreamFramer::new(64 * 1024);
            for chunk in data.chunks(97) {
                framer.push(chunk);
            }
            framer.push(&data);
            assert_eq!(
                framer.next_frame(),
                Ok(Some(Frame::Message(data.clone()))),
                "{}",
                path.display()
            );
            assert_eq!(
                framer.next_frame(),
                Ok(Some(Frame::Message(data.clone()))),
                "{}",
                path.display()
            );
            assert_eq!(framer.next_frame(), Ok(None));
        }
    }

    #[test]
    fn mangled_samples_never_panic() {
        let mut state: u64 = 0x853c_49e6_748f_ea9b;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for (_, data) in samples() {
            for end in (0..=data.len()).step_by(7) {
                let _ = parse_message(&data[..end]);
                let mut framer = StreamFramer::new(4096);
                framer.push(&data[..end]);
                while let Ok(Some(_)) = framer.next_frame() {}
            }
            for _ in 0..300 {
                let mut bytes = data.clone();
                for _ in 0..(next() % 8 + 1) {
                    let i = (next() as usize) % bytes.len();
                    bytes[i] = next() as u8;
                }
                if let Ok(Message::Request(r)) = parse_message(&bytes) {
                    let _ = r.validate();
                }
                let mut framer = StreamFramer::new(4096);
                framer.push(&bytes);
                while let Ok(Some(_)) = framer.next_frame() {}
            }
        }
    }
}
