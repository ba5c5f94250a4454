//! Cutting a TCP/TLS byte stream into SIP messages by Content-Length (RFC 3261 §18.3), with
//! partial and pipelined messages and CRLF keep-alives (RFC 5626 §3.5.1).
//!
//! A message over the size limit whose header section is whole and whose Content-Length is
//! sane is skipped, not fatal: an SBC sends all its recording sessions over one connection,
//! so closing it for one over-size INVITE would disturb every other call on it. The framer
//! hands out the head (for a 513 answer) and discards the body as it arrives. Only a header
//! section that never ends within the limit, a Content-Length that is not a number, or a body
//! beyond [`SKIP_LIMIT`] times the limit closes the connection.

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
    /// A message over the limit: its header section (to answer 513 from) and its whole size.
    /// Its body is discarded as it arrives; the stream goes on after it.
    TooLarge { head: Vec<u8>, total: usize },
}

/// How far past the limit a message may claim to be and still be skipped (its body read and
/// discarded) rather than end the connection: a Content-Length beyond this many times the
/// limit is not a real SIP message.
pub const SKIP_LIMIT: usize = 16;

pub struct StreamFramer {
    max_message: usize,
    buf: Vec<u8>,
    /// How far the search for the end of the header section got, so that a message arriving
    /// byte by byte is not rescanned from the start each time.
    scanned: usize,
    /// End of the header section of the message at the front, once found.
    head_end: Option<usize>,
    /// Body bytes of an over-size message still to be discarded as they arrive.
    skip: usize,
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

/// The header section of a whole message in `buf` (a datagram), blank line included.
pub fn head_of(buf: &[u8]) -> Option<&[u8]> {
    find_head_end(buf, 0).map(|end| &buf[..end])
}

/// The Content-Length of a header section (long or compact name); 0 when absent, as RFC 3261
/// §18.3 makes it mandatory on streams.
/// Two Content-Lengths that disagree are an error: which one the next hop believes decides
/// where the next message starts, so the stream can no longer be cut safely (a smuggled
/// request could hide in a body). Repeats of one value are tolerated.
fn content_length(head: &[u8]) -> Result<usize, FramingError> {
    let mut found: Option<usize> = None;
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
            let len = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
                .ok_or_else(|| FramingError {
                    reason: "Content-Length is too large".to_string(),
                })?;
            if found.is_some_and(|f| f != len) {
                return Err(FramingError {
                    reason: "conflicting Content-Length headers".to_string(),
                });
            }
            found = Some(len);
        }
    }
    Ok(found.unwrap_or(0))
}

impl StreamFramer {
    /// `max_message`: the largest header section plus body accepted.
    pub fn new(max_message: usize) -> StreamFramer {
        StreamFramer {
            max_message,
            buf: Vec::new(),
            scanned: 0,
            head_end: None,
            skip: 0,
            failed: None,
        }
    }
    /// Appends received bytes (after the rest of an over-size body, which is dropped).
    pub fn push(&mut self, data: &[u8]) {
        if self.failed.is_none() {
            let dropped = self.skip.min(data.len());
            self.skip -= dropped;
            self.buf.extend_from_slice(&data[dropped..]);
        }
    }
    /// Bytes held or still awaited that are not yet part of a returned frame (a message
    /// being skipped counts until its last byte is in: the same deadline applies to it).
    pub fn buffered(&self) -> usize {
        self.buf.len() + self.skip
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
        let total = head_end.saturating_add(body_len);
        if total > self.max_message {
            if total > self.max_message.saturating_mul(SKIP_LIMIT) {
                return Err(FramingError {
                    reason: format!(
                        "message of {total} bytes exceeds {} by too much to skip",
                        self.max_message
                    ),
                });
            }
            let head = self.buf[..head_end].to_vec();
            let held = self.buf.len().min(total);
            self.consume(held);
            self.skip = total - held;
            return Ok(Some(Frame::TooLarge { head, total }));
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

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: x\r\nContent-Length: 3\r\n\r\nabc";

    fn frames(framer: &mut StreamFramer) -> Vec<Frame> {
        let mut out = Vec::new();
        while let Ok(Some(f)) = framer.next_frame() {
            out.push(f);
        }
        out
    }

    #[test]
    fn whole_message_is_returned() {
        let mut f = StreamFramer::new(4096);
        f.push(MSG);
        assert_eq!(f.next_frame(), Ok(Some(Frame::Message(MSG.to_vec()))));
        assert_eq!(f.next_frame(), Ok(None));
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn pipelined_messages_are_split() {
        let mut f = StreamFramer::new(4096);
        let mut data = MSG.to_vec();
        data.extend_from_slice(b"\r\n");
        data.extend_from_slice(MSG);
        data.extend_from_slice(&MSG[..10]);
        f.push(&data);
        assert_eq!(
            frames(&mut f),
            [Frame::Message(MSG.to_vec()), Frame::Message(MSG.to_vec())]
        );
        f.push(&MSG[10..]);
        assert_eq!(frames(&mut f), [Frame::Message(MSG.to_vec())]);
    }

    #[test]
    fn partial_message_waits_for_body() {
        let mut f = StreamFramer::new(4096);
        f.push(&MSG[..MSG.len() - 2]);
        assert_eq!(f.next_frame(), Ok(None));
        f.push(&MSG[MSG.len() - 2..]);
        assert_eq!(f.next_frame(), Ok(Some(Frame::Message(MSG.to_vec()))));
    }

    #[test]
    fn body_starting_with_line_ends_is_not_mistaken_for_head_end() {
        let msg = b"MESSAGE sip:a@b SIP/2.0\r\nl: 4\r\n\r\n\r\n\r\n";
        let mut f = StreamFramer::new(4096);
        f.push(&msg[..msg.len() - 3]);
        assert_eq!(f.next_frame(), Ok(None));
        f.push(&msg[msg.len() - 3..]);
        assert_eq!(f.next_frame(), Ok(Some(Frame::Message(msg.to_vec()))));
    }

    #[test]
    fn byte_by_byte_delivery_works() {
        let mut f = StreamFramer::new(4096);
        let mut got = Vec::new();
        for b in MSG.iter().chain(MSG) {
            f.push(&[*b]);
            got.extend(frames(&mut f));
        }
        assert_eq!(
            got,
            [Frame::Message(MSG.to_vec()), Frame::Message(MSG.to_vec())]
        );
    }

    #[test]
    fn double_crlf_is_a_ping() {
        let mut f = StreamFramer::new(4096);
        f.push(b"\r\n\r\n");
        assert_eq!(f.next_frame(), Ok(Some(Frame::Ping)));
        f.push(b"\r\n\r\n");
        f.push(MSG);
        assert_eq!(frames(&mut f), [Frame::Ping, Frame::Message(MSG.to_vec())]);
    }

    #[test]
    fn lone_crlf_waits_then_is_skipped() {
        let mut f = StreamFramer::new(4096);
        f.push(b"\r\n");
        assert_eq!(f.next_frame(), Ok(None));
        f.push(MSG);
        assert_eq!(frames(&mut f), [Frame::Message(MSG.to_vec())]);
    }

    #[test]
    fn compact_content_length_and_lf_only_are_accepted() {
        let msg = b"MESSAGE sip:a@b SIP/2.0\nl: 2\n\nhiNEXT";
        let mut f = StreamFramer::new(4096);
        f.push(msg);
        assert_eq!(
            f.next_frame(),
            Ok(Some(Frame::Message(msg[..msg.len() - 4].to_vec())))
        );
    }

    #[test]
    fn missing_content_length_means_empty_body() {
        let mut f = StreamFramer::new(4096);
        f.push(b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: x\r\n\r\n");
        assert!(matches!(f.next_frame(), Ok(Some(Frame::Message(_)))));
    }

    #[test]
    fn non_numeric_content_length_is_an_error() {
        let mut f = StreamFramer::new(4096);
        f.push(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 1x\r\n\r\n");
        assert!(f.next_frame().is_err());
        // The stream stays unusable.
        f.push(MSG);
        assert!(f.next_frame().is_err());
    }

    #[test]
    fn oversized_header_section_is_an_error() {
        let mut f = StreamFramer::new(64);
        f.push(&[b'A'; 65]);
        assert!(f.next_frame().is_err());
    }

    #[test]
    fn an_oversized_message_is_skipped_and_the_stream_goes_on() {
        let head = b"INVITE sip:a@b SIP/2.0\r\nCall-ID: big\r\nContent-Length: 300\r\n\r\n";
        let mut f = StreamFramer::new(100);
        // The head and part of the body arrive, then the rest of the body in pieces, then
        // the next message: the head comes out once, the body is dropped, the next is whole.
        let mut data = head.to_vec();
        data.extend_from_slice(&[b'x'; 120]);
        f.push(&data);
        let total = head.len() + 300;
        assert_eq!(
            frames(&mut f),
            [Frame::TooLarge {
                head: head.to_vec(),
                total
            }]
        );
        assert_eq!(f.buffered(), 180, "the rest of the body is still awaited");
        f.push(&[b'x'; 100]);
        assert_eq!(frames(&mut f), []);
        let mut rest = vec![b'x'; 80];
        rest.extend_from_slice(MSG);
        f.push(&rest);
        assert_eq!(frames(&mut f), [Frame::Message(MSG.to_vec())]);
        assert_eq!(f.buffered(), 0);
        // Head and whole body in one push, then the next message.
        let mut f = StreamFramer::new(100);
        let mut data = head.to_vec();
        data.extend_from_slice(&[b'x'; 300]);
        data.extend_from_slice(MSG);
        f.push(&data);
        assert_eq!(
            frames(&mut f),
            [
                Frame::TooLarge {
                    head: head.to_vec(),
                    total
                },
                Frame::Message(MSG.to_vec())
            ]
        );
    }

    #[test]
    fn conflicting_content_lengths_are_an_error_and_repeats_of_one_are_not() {
        let mut f = StreamFramer::new(4096);
        f.push(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 0\r\nl: 3\r\n\r\nabc");
        assert!(f.next_frame().is_err());
        let mut f = StreamFramer::new(4096);
        let msg = b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 3\r\nl: 3\r\n\r\nabc";
        f.push(msg);
        assert_eq!(f.next_frame(), Ok(Some(Frame::Message(msg.to_vec()))));
    }

    #[test]
    fn a_content_length_far_past_the_limit_is_an_error() {
        let mut f = StreamFramer::new(100);
        f.push(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 1700\r\n\r\n");
        assert!(f.next_frame().is_err());
        let mut f = StreamFramer::new(100);
        f.push(b"OPTIONS sip:a@b SIP/2.0\r\nl: 99999999999999999999999999\r\n\r\n");
        assert!(f.next_frame().is_err());
    }

    #[test]
    fn truncations_and_byte_flips_never_panic() {
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        for end in 0..=MSG.len() {
            for split in [0, end / 2, end] {
                let mut f = StreamFramer::new(200);
                f.push(&MSG[..split]);
                let _ = frames(&mut f);
                f.push(&MSG[split..end]);
                let _ = frames(&mut f);
            }
        }
        for _ in 0..3000 {
            let mut data = MSG.repeat(2);
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let i = (state as usize) % data.len();
            data[i] = (state >> 32) as u8;
            let mut f = StreamFramer::new(200);
            f.push(&data);
            let _ = frames(&mut f);
        }
    }
}
