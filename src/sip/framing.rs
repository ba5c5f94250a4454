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
    _max_message: usize,
}

impl StreamFramer {
    /// `max_message`: the largest header section plus body accepted.
    pub fn new(max_message: usize) -> StreamFramer {
        StreamFramer { _max_message: max_message }
    }
    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        let _ = data;
        todo!()
    }
    /// The next whole frame, if the buffer holds one. After an error the stream is unusable.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FramingError> {
        todo!()
    }
}
