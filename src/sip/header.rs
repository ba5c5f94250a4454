//! Typed views of the headers the transaction and dialog layers need.

use super::message::{Method, ParseError};

/// Parameters `;name=value;flag` as they follow a URI or a Via sent-by. Quoted values keep their
/// quotes; semicolons inside quotes do not split. Names are lower-cased.
fn parse_params(text: &str) -> Result<Vec<(String, Option<String>)>, ParseError> {
    let mut params = Vec::new();
    let mut pieces = Vec::new();
    let mut current = String::new();
    let mut in_quotes = false;
    let mut escaped = false;
    for c in text.chars() {
        if in_quotes {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_quotes = false;
            }
            current.push(c);
            continue;
        }
        match c {
            '"' => {
                in_quotes = true;
                current.push(c);
            }
            ';' => pieces.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    if in_quotes {
        return Err(ParseError::new("Unterminated quoted parameter value"));
    }
    pieces.push(current);
    for piece in pieces {
        let piece = piece.trim();
        if piece.is_empty() {
            continue;
        }
        match piece.split_once('=') {
            Some((name, value)) => {
                let name = name.trim();
                if name.is_empty() {
                    return Err(ParseError::new("Parameter without a name"));
                }
                params.push((name.to_ascii_lowercase(), Some(value.trim().to_string())));
            }
            None => params.push((piece.to_ascii_lowercase(), None)),
        }
    }
    Ok(params)
}

fn find_param<'a>(params: &'a [(String, Option<String>)], name: &str) -> Option<Option<&'a str>> {
    params
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_deref())
}

fn write_params(out: &mut String, params: &[(String, Option<String>)]) {
    for (name, value) in params {
        out.push(';');
        out.push_str(name);
        if let Some(value) = value {
            out.push('=');
            out.push_str(value);
        }
    }
}

/// Reads a quoted string starting at `"`; returns the unescaped content and the rest after the
/// closing quote.
fn parse_quoted(text: &str) -> Result<(String, &str), ParseError> {
    let mut out = String::new();
    let mut escaped = false;
    for (i, c) in text.char_indices().skip(1) {
        if escaped {
            out.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            return Ok((out, &text[i + 1..]));
        } else {
            out.push(c);
        }
    }
    Err(ParseError::new("Unterminated quoted display name"))
}

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
        let value = value.trim();
        if value.is_empty() {
            return Err(ParseError::new("Empty address"));
        }
        let (display, rest) = if value.starts_with('"') {
            let (display, rest) = parse_quoted(value)?;
            let rest = rest.trim_start();
            if !rest.starts_with('<') {
                return Err(ParseError::new("Display name without <URI>"));
            }
            (Some(display), rest)
        } else if let Some(open) = value.find('<') {
            let display = value[..open].trim();
            let display = (!display.is_empty()).then(|| display.to_string());
            (display, &value[open..])
        } else {
            // addr-spec (RFC 3261 §20.10): everything after the first ';' belongs to the header,
            // not to the URI.
            let (uri, params) = match value.split_once(';') {
                Some((uri, params)) => (uri.trim(), parse_params(params)?),
                None => (value, Vec::new()),
            };
            if uri.is_empty() || uri.contains(char::is_whitespace) {
                return Err(ParseError::new("Invalid address"));
            }
            return Ok(NameAddr {
                display: None,
                uri: uri.to_string(),
                params,
            });
        };
        // `rest` starts with '<'.
        let Some(close) = rest.find('>') else {
            return Err(ParseError::new("Missing '>' in address"));
        };
        let uri = rest[1..close].trim();
        if uri.is_empty() {
            return Err(ParseError::new("Empty URI in address"));
        }
        let after = rest[close + 1..].trim();
        let params = match after {
            "" => Vec::new(),
            p if p.starts_with(';') => parse_params(p)?,
            _ => return Err(ParseError::new("Unexpected text after address")),
        };
        Ok(NameAddr {
            display,
            uri: uri.to_string(),
            params,
        })
    }
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        find_param(&self.params, name)
    }
    pub fn tag(&self) -> Option<&str> {
        self.param("tag").flatten().filter(|t| !t.is_empty())
    }
    /// Sets or replaces a header parameter (`tag` on a response's To).
    pub fn set_param(&mut self, name: &str, value: Option<String>) {
        let name = name.to_ascii_lowercase();
        match self.params.iter_mut().find(|(n, _)| *n == name) {
            Some(entry) => entry.1 = value,
            None => self.params.push((name, value)),
        }
    }
    /// Removes a header parameter.
    pub fn remove_param(&mut self, name: &str) {
        self.params.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }
    /// Re-encodes as `"display" <uri>;params` (always with angle brackets).
    pub fn to_header_value(&self) -> String {
        let mut out = String::new();
        if let Some(display) = self.display.as_deref().filter(|d| !d.is_empty()) {
            out.push('"');
            for c in display.chars() {
                if c == '"' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push_str("\" ");
        }
        out.push('<');
        out.push_str(&self.uri);
        out.push('>');
        write_params(&mut out, &self.params);
        out
    }
}

/// Splits `host[:port]` or `[v6]:port`; host without brackets. `None` when malformed.
fn split_host_port(text: &str) -> Option<(String, Option<u16>)> {
    let text = text.trim();
    if let Some(inner) = text.strip_prefix('[') {
        let close = inner.find(']')?;
        let host = &inner[..close];
        let after = &inner[close + 1..];
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?.trim().parse::<u16>().ok()?),
        };
        if host.is_empty() {
            return None;
        }
        return Some((host.to_string(), port));
    }
    let (host, port) = match text.matches(':').count() {
        0 => (text, None),
        1 => {
            let (host, port) = text.split_once(':')?;
            (host, Some(port.trim().parse::<u16>().ok()?))
        }
        // A bare IPv6 address (not allowed in SIP, but seen): no port possible.
        _ => (text, None),
    };
    let host = host.trim();
    if host.is_empty() || host.contains(char::is_whitespace) {
        return None;
    }
    Some((host.to_string(), port))
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
        let value = value.trim();
        let (head, params) = match value.split_once(';') {
            Some((head, params)) => (head, parse_params(params)?),
            None => (value, Vec::new()),
        };
        // sent-protocol allows white space around the slashes (SLASH = SWS "/" SWS).
        let mut parts = head.splitn(3, '/');
        let name = parts.next().unwrap_or("").trim();
        let version = parts.next().unwrap_or("").trim();
        let rest = parts.next().unwrap_or("").trim_start();
        if !name.eq_ignore_ascii_case("SIP") || version.is_empty() {
            return Err(ParseError::new("Via without SIP/2.0/<transport>"));
        }
        let (transport, sent_by) = match rest.split_once(char::is_whitespace) {
            Some((t, s)) => (t, s.trim()),
            None => return Err(ParseError::new("Via without sent-by")),
        };
        if transport.is_empty() {
            return Err(ParseError::new("Via without transport"));
        }
        // A trailing comment `(...)` is allowed after sent-by by some stacks; drop it.
        let sent_by = sent_by.split('(').next().unwrap_or("").trim();
        let Some((host, port)) = split_host_port(sent_by) else {
            return Err(ParseError::new("Invalid Via sent-by"));
        };
        Ok(Via {
            transport: transport.to_ascii_uppercase(),
            host,
            port,
            params,
        })
    }
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        find_param(&self.params, name)
    }
    pub fn branch(&self) -> Option<&str> {
        self.param("branch").flatten()
    }
    /// Sets or replaces a parameter (used for `received` and `rport=` on receipt).
    pub fn set_param(&mut self, name: &str, value: Option<String>) {
        let name = name.to_ascii_lowercase();
        match self.params.iter_mut().find(|(n, _)| *n == name) {
            Some(entry) => entry.1 = value,
            None => self.params.push((name, value)),
        }
    }
    pub fn to_header_value(&self) -> String {
        let mut out = format!("SIP/2.0/{} ", self.transport);
        if self.host.contains(':') {
            out.push('[');
            out.push_str(&self.host);
            out.push(']');
        } else {
            out.push_str(&self.host);
        }
        if let Some(port) = self.port {
            out.push(':');
            out.push_str(&port.to_string());
        }
        write_params(&mut out, &self.params);
        out
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
        let mut parts = value.split_whitespace();
        let (Some(seq), Some(method), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(ParseError::new("CSeq is not '<number> <method>'"));
        };
        // RFC 3261 §8.1.1.5: the number must be less than 2**31.
        let seq = match seq.parse::<u32>() {
            Ok(n) if n < 1 << 31 => n,
            _ => return Err(ParseError::new("Invalid CSeq number")),
        };
        if !method
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.!%*_+`'~".contains(c))
        {
            return Err(ParseError::new("Invalid CSeq method"));
        }
        Ok(CSeq {
            seq,
            method: Method::parse(method),
        })
    }
}

/// The part of a sip/sips URI after the scheme, and the byte offset in it where host starts.
fn after_scheme(uri: &str) -> Option<(&str, usize)> {
    let uri = uri.trim();
    let (scheme, rest) = uri.split_once(':')?;
    if !scheme.eq_ignore_ascii_case("sip") && !scheme.eq_ignore_ascii_case("sips") {
        return None;
    }
    // The userinfo ends at '@', which cannot appear unescaped in the user part. Headers (`?...`)
    // may carry one in practice, so look before the first '?' first; a user part may itself
    // contain '?' though, hence the fallback to the first '@'.
    let before_headers = rest.split('?').next().unwrap_or(rest);
    let host_start = match before_headers.rfind('@') {
        Some(at) => at + 1,
        None => match rest.find('@') {
            Some(at) if !rest[..at].contains(['[', ';']) => at + 1,
            _ => 0,
        },
    };
    Some((rest, host_start))
}

/// Host and port of a SIP/SIPS URI (`sip:user@[2001:db8::1]:5062;transport=tcp`), host without
/// brackets; `None` when the URI is not sip/sips or has no host.
pub fn uri_host_port(uri: &str) -> Option<(String, Option<u16>)> {
    let (rest, host_start) = after_scheme(uri)?;
    let hostport = &rest[host_start..];
    // An IPv6 reference contains ':' but never ';' or '?'.
    let end = hostport.find([';', '?', '>']).unwrap_or(hostport.len());
    split_host_port(&hostport[..end])
}

/// A URI parameter (`;transport=tcp`) of a SIP URI, name compared case-insensitively.
pub fn uri_param<'a>(uri: &'a str, name: &str) -> Option<Option<&'a str>> {
    let (rest, host_start) = after_scheme(uri)?;
    let hostport = &rest[host_start..];
    let params_start = hostport.find(';')?;
    let params = &hostport[params_start + 1..];
    let params = params.split(['?', '>']).next().unwrap_or(params);
    params.split(';').find_map(|piece| {
        let (n, v) = match piece.split_once('=') {
            Some((n, v)) => (n, Some(v.trim())),
            None => (piece, None),
        };
        n.trim().eq_ignore_ascii_case(name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_display_name_with_escapes() {
        let a = NameAddr::parse(r#""Bob \"B\" \\ x" <sip:bob@[::1]:5060>;tag=ab12"#).unwrap();
        assert_eq!(a.display.as_deref(), Some(r#"Bob "B" \ x"#));
        assert_eq!(a.uri, "sip:bob@[::1]:5060");
        assert_eq!(a.tag(), Some("ab12"));
        assert_eq!(
            a.to_header_value(),
            r#""Bob \"B\" \\ x" <sip:bob@[::1]:5060>;tag=ab12"#
        );
    }

    #[test]
    fn unquoted_display_name() {
        let a = NameAddr::parse("Alice Smith <sip:alice@example.com;transport=tcp>;tag=9").unwrap();
        assert_eq!(a.display.as_deref(), Some("Alice Smith"));
        assert_eq!(a.uri, "sip:alice@example.com;transport=tcp");
        assert_eq!(a.params, [("tag".to_string(), Some("9".to_string()))]);
    }

    #[test]
    fn bare_addr_spec_params_are_header_params() {
        let a = NameAddr::parse("sip:a@b;tag=x;Lr").unwrap();
        assert_eq!(a.uri, "sip:a@b");
        assert_eq!(a.tag(), Some("x"));
        assert_eq!(a.param("lr"), Some(None));
        assert_eq!(a.to_header_value(), "<sip:a@b>;tag=x;lr");
    }

    #[test]
    fn contact_flag_params_parse() {
        let a = NameAddr::parse("<sip:7374@10.106.2.10:5060;transport=TCP>;+sip.src").unwrap();
        assert_eq!(a.param("+sip.src"), Some(None));
        assert_eq!(a.tag(), None);
    }

    #[test]
    fn name_addr_errors_do_not_panic() {
        for bad in [
            "",
            "\"unterminated <sip:a@b>",
            "<sip:a@b",
            "<>",
            "\"x\" sip:a@b",
            "a b",
        ] {
            assert!(NameAddr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn via_parses_ipv6_without_brackets() {
        let v = Via::parse("SIP/2.0/udp [2001:db8::1]:5062;branch=z9hG4bKx;rport").unwrap();
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.host, "2001:db8::1");
        assert_eq!(v.port, Some(5062));
        assert_eq!(v.branch(), Some("z9hG4bKx"));
        assert_eq!(v.param("rport"), Some(None));
        assert_eq!(
            v.to_header_value(),
            "SIP/2.0/UDP [2001:db8::1]:5062;branch=z9hG4bKx;rport"
        );
    }

    #[test]
    fn via_tolerates_spaces_around_slashes() {
        let v = Via::parse("SIP / 2.0 / TCP host.example ; branch=z9hG4bK1").unwrap();
        assert_eq!(
            (v.transport.as_str(), v.host.as_str(), v.port),
            ("TCP", "host.example", None)
        );
        assert_eq!(v.branch(), Some("z9hG4bK1"));
    }

    #[test]
    fn via_set_param_replaces_or_appends() {
        let mut v = Via::parse("SIP/2.0/UDP 1.2.3.4:5060;rport;branch=z9hG4bK1").unwrap();
        v.set_param("rport", Some("4000".into()));
        v.set_param("received", Some("5.6.7.8".into()));
        assert_eq!(
            v.to_header_value(),
            "SIP/2.0/UDP 1.2.3.4:5060;rport=4000;branch=z9hG4bK1;received=5.6.7.8"
        );
    }

    #[test]
    fn via_errors() {
        for bad in [
            "",
            "SIP/2.0/UDP",
            "HTTP/1.1/TCP h",
            "SIP/2.0/UDP h:notaport",
            "SIP/2.0/UDP [::1",
        ] {
            assert!(Via::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cseq_parses_and_rejects_garbage() {
        assert_eq!(
            CSeq::parse(" 4711  INVITE ").unwrap(),
            CSeq {
                seq: 4711,
                method: Method::Invite
            }
        );
        for bad in [
            "",
            "1",
            "x INVITE",
            "1 INVITE extra",
            "2147483648 BYE",
            "-1 BYE",
        ] {
            assert!(CSeq::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn uri_host_port_variants() {
        let hp = |u: &str| uri_host_port(u);
        assert_eq!(hp("sip:user@host"), Some(("host".into(), None)));
        assert_eq!(
            hp("sip:host:5070;transport=tcp"),
            Some(("host".into(), Some(5070)))
        );
        assert_eq!(
            hp("SIPS:bob@secure.example:5061"),
            Some(("secure.example".into(), Some(5061)))
        );
        assert_eq!(hp("sip:[::1]:5062"), Some(("::1".into(), Some(5062))));
        assert_eq!(
            hp("sip:u@[2001:db8::1];lr"),
            Some(("2001:db8::1".into(), None))
        );
        assert_eq!(
            hp("sip:a%40b@host.example"),
            Some(("host.example".into(), None))
        );
        assert_eq!(hp("sip:u;isub=1@h:1"), Some(("h".into(), Some(1))));
        assert_eq!(hp("sip:h?subject=x"), Some(("h".into(), None)));
        assert_eq!(hp("tel:+123"), None);
        assert_eq!(hp("sip:"), None);
        assert_eq!(hp("sip:h:99999"), None);
    }

    #[test]
    fn header_parsers_never_panic_on_odd_text() {
        let alphabet: Vec<char> = "sip:@[]<>;=\"\\,? /:éü\u{1F600}0123abc".chars().collect();
        let mut state: u64 = 0xdead_beef_cafe_f00d;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 24) as usize;
            let text: String = (0..len)
                .map(|i| alphabet[((state >> (i % 48)) as usize + i * 7) % alphabet.len()])
                .collect();
            let _ = NameAddr::parse(&text).map(|a| a.to_header_value());
            let _ = Via::parse(&text).map(|v| v.to_header_value());
            let _ = CSeq::parse(&text);
            let _ = uri_host_port(&text);
            let _ = uri_param(&text, "lr");
        }
    }

    #[test]
    fn uri_param_lookup() {
        let uri = "sip:u@[::1]:5060;Transport=TCP;lr?h=1";
        assert_eq!(uri_param(uri, "transport"), Some(Some("TCP")));
        assert_eq!(uri_param(uri, "lr"), Some(None));
        assert_eq!(uri_param(uri, "maddr"), None);
        assert_eq!(uri_param("sip:u@h", "lr"), None);
        assert_eq!(uri_param("sip:a;b=c@h;lr", "b"), None);
    }
}
