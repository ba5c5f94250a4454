//! Cutting a TCP/TLS byte stream into SIP messages by Content-Length (RFC 3261 §18.3), with
//! partial and pipelined messages and CRLF keep-alives (RFC 5626 §3.5.1).

/// What the framer found wrong; the connection should be closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FramingError {
    pub reason: String,
}

/// One frame cut from the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// One whole SIP message.
    Message(Vec<u8>),
    /// A double-CRLF keep-alive ping, to be answered with a single CRLF.
    Ping,
}

pub struct StreamFramer {
    max_message: usize,
    buf: Vec<u8>,
    /// How far the search for the end of the header section got, so that a message arriving
    /// byte by byte is not rescanned from the start each time.
    scanned: usize,
    /// End of the header section of the message at the front, once found.
    head_end: Option<usize>,
    failed: Option<FramingError>,
}

/// Offset just past the blank line ending the header section: CRLFCRLF, LFLF or LF CRLF.
fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < buf.len() {
        if buf[i] == b'\n' {
            match buf.get(i + 1..) {
                Some([b'\n', ..]) => return Some(i + 2),
                Some([b'\r', b'\n', ..]) => return Some(i + 3),
                _ => {}
            }
        }
        i += 1;
    }
    None
}

/// The Content-Length of a header section (long or compact name); 0 when absent, as RFC 3261
/// §18.3 makes it mandatory on streams.
fn content_length(head: &[u8]) -> Result<usize, FramingError> {
    for line in head.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = line[..colon].trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
            let value = line[colon + 1..].trim_ascii();
            if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
                return Err(FramingError {
                    reason: "Content-Length is not a number".to_string(),
                });
            }
            return std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
                .ok_or_else(|| FramingError {
                    reason: "Content-Length is too large".to_string(),
                });
        }
    }
    Ok(0)
}

impl StreamFramer {
    /// `max_message`: the largest header section plus body accepted.
    pub fn new(max_message: usize) -> StreamFramer {
        StreamFramer {
            max_message,
            buf: Vec::new(),
            scanned: 0,
            head_end: None,
            failed: None,
        }
    }
    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(data);
        }
    }
    /// Bytes held that are not yet part of a returned frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
    /// The next whole frame, if the buffer holds one. After an error the stream is unusable.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FramingError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        match self.cut() {
            Ok(frame) => Ok(frame),
            Err(err) => {
                self.buf = Vec::new();
                self.failed = Some(err.clone());
                Err(err)
            }
        }
    }

    fn cut(&mut self) -> Result<Option<Frame>, FramingError> {
        // Between messages: a CRLFCRLF is a keep-alive ping (RFC 5626 §3.5.1); any other run of
        // line ends is noise to skip (RFC 3261 §7.5). A lone CRLF may be the start of a ping, so
        // wait for what follows it.
        loop {
            match self.buf.as_slice() {
                [b'\r', b'\n', b'\r', b'\n', ..] => {
                    self.consume(4);
                    return Ok(Some(Frame::Ping));
                }
                [] | [b'\r'] | [b'\r', b'\n'] | [b'\r', b'\n', b'\r'] => return Ok(None),
                [b'\r', b'\n', ..] => self.consume(2),
                [b'\n', ..] | [b'\r', ..] => self.consume(1),
                _ => break,
            }
        }
        // A terminator is at most 3 bytes, so back up 2 in case it straddles two pushes.
        let from = self.scanned.saturating_sub(2);
        let Some(head_end) = self.head_end.or_else(|| find_head_end(&self.buf, from)) else {
            if self.buf.len() > self.max_message {
                return Err(FramingError {
                    reason: format!("header section larger than {} bytes", self.max_message),
                });
            }
            self.scanned = self.buf.len();
            return Ok(None);
        };
        let body_len = content_length(&self.buf[..head_end])?;
        let total = head_end.checked_add(body_len).unwrap_or(usize::MAX);
        if total > self.max_message {
            return Err(FramingError {
                reason: format!("message of {total} bytes exceeds {}", self.max_message),
            });
        }
        if self.buf.len() < total {
            // The head end is known; do not rescan it while the body trickles in.
            self.head_end = Some(head_end);
            return Ok(None);
        }
        let rest = self.buf.split_off(total);
        let message = std::mem::replace(&mut self.buf, rest);
        self.scanned = 0;
        self.head_end = None;
        Ok(Some(Frame::Message(message)))
    }

    fn consume(&mut self, n: usize) {
        self.buf.drain(..n.min(self.buf.len()));
        self.scanned = 0;
        self.head_end = None;
    }
}
