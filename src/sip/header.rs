//! Typed views of the headers the transaction and dialog layers need.

use super::message::{Method, ParseError};

/// A name-addr or addr-spec with header parameters: `"Bob" <sip:bob@[::1]:5060>;tag=ab12`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameAddr {
    pub display: Option<String>,
    /// The URI without angle brackets.
    pub uri: String,
    /// Header parameters after the URI (outside `<>`), names lower-cased.
    pub params: Vec<(String, Option<String>)>,
}

impl NameAddr {
    pub fn parse(value: &str) -> Result<NameAddr, ParseError> {
        let _ = value;
        todo!()
    }
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        let _ = name;
        todo!()
    }
    pub fn tag(&self) -> Option<&str> {
        todo!()
    }
    /// Re-encodes as `"display" <uri>;params` (always with angle brackets).
    pub fn to_header_value(&self) -> String {
        todo!()
    }
}

/// One Via element: `SIP/2.0/UDP host:port;branch=...;rport;received=...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Via {
    /// Upper-cased transport token (`UDP`, `TCP`, `TLS`, `WS` ...).
    pub transport: String,
    /// Host without brackets for IPv6.
    pub host: String,
    pub port: Option<u16>,
    pub params: Vec<(String, Option<String>)>,
}

impl Via {
    pub fn parse(value: &str) -> Result<Via, ParseError> {
        let _ = value;
        todo!()
    }
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        let _ = name;
        todo!()
    }
    pub fn branch(&self) -> Option<&str> {
        todo!()
    }
    /// Sets or replaces a parameter (used for `received` and `rport=` on receipt).
    pub fn set_param(&mut self, name: &str, value: Option<String>) {
        let _ = (name, value);
        todo!()
    }
    pub fn to_header_value(&self) -> String {
        todo!()
    }
}

/// `CSeq: 4711 INVITE`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

impl CSeq {
    pub fn parse(value: &str) -> Result<CSeq, ParseError> {
        let _ = value;
        todo!()
    }
}

/// Host and port of a SIP/SIPS URI (`sip:user@[2001:db8::1]:5062;transport=tcp`), host without
/// brackets; `None` when the URI is not sip/sips or has no host.
pub fn uri_host_port(uri: &str) -> Option<(String, Option<u16>)> {
    let _ = uri;
    todo!()
}

/// A URI parameter (`;transport=tcp`) of a SIP URI, name compared case-insensitively.
pub fn uri_param<'a>(uri: &'a str, name: &str) -> Option<Option<&'a str>> {
    let _ = (uri, name);
    todo!()
}
