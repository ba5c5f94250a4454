//! multipart/mixed (RFC 2046) split, tolerant of what real SRCs send: parts in any order, extra
//! parts (e.g. `application/gtd`), quoted or spaced boundary parameters, LF-only line ends, a
//! missing close delimiter, preamble and trailing junk.
//!
//! Owns: turning a message body plus its Content-Type into parts. Does not interpret the parts
//! (that is [`super::sdp`] and [`super::metadata`]).

use super::error::BodyError;

/// More parts than any SRC sends (SDP, metadata, perhaps one vendor part); a cap so a hostile
/// body cannot make us allocate thousands of tiny parts.
pub const MAX_PARTS: usize = 16;

/// MIME's default when a part has no Content-Type (RFC 2046 §5.1).
const DEFAULT_PART_TYPE: &str = "text/plain";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BodyPart {
    /// MIME type, lower-cased, without parameters (`application/sdp`).
    pub content_type: String,
    /// The part's own headers (names as written, values trimmed).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl BodyPart {
    /// The first value of a part header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Splits a message body by its Content-Type header value. A non-multipart body is one part; an
/// empty body is no part. Each part's trailing CRLF before the next delimiter is not body.
pub fn split_body(content_type: Option<&str>, body: &[u8]) -> Result<Vec<BodyPart>, BodyError> {
    if body.is_empty() {
        return Ok(Vec::new());
    }
    let Some(content_type) = content_type else {
        return Ok(vec![BodyPart {
            content_type: DEFAULT_PART_TYPE.to_string(),
            headers: Vec::new(),
            body: body.to_vec(),
        }]);
    };
    let mime = mime_type(content_type);
    if !mime.starts_with("multipart/") {
        return Ok(vec![BodyPart {
            content_type: mime,
            headers: vec![("Content-Type".to_string(), content_type.trim().to_string())],
            body: body.to_vec(),
        }]);
    }
    let boundary = match mime_param(content_type, "boundary") {
        Some(b) if !b.is_empty() => b,
        _ => {
            return Err(BodyError::Malformed(
                "multipart body without boundary".into(),
            ));
        }
    };
    split_multipart(body, boundary.as_bytes())
}

/// The MIME type of a Content-Type value: lower-cased, parameters dropped.
pub fn mime_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// A parameter of a Content-Type value by case-insensitive name, unquoted. Tolerates spaces
/// around `=` and `;`, and `;` inside a quoted value.
pub fn mime_param(content_type: &str, name: &str) -> Option<String> {
    split_outside_quotes(content_type, ';')
        .into_iter()
        .skip(1)
        .find_map(|param| {
            let (key, value) = param.split_once('=')?;
            if !key.trim().eq_ignore_ascii_case(name) {
                return None;
            }
            Some(unquote(value.trim()))
        })
}

fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            c if c == sep && !in_quotes => {
                out.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// Removes surrounding double quotes and quoted-pair escapes; a lone unbalanced quote is kept as
/// written rather than guessed at.
fn unquote(value: &str) -> String {
    match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    if let Some(next) = chars.next() {
                        out.push(next);
                    }
                } else {
                    out.push(c);
                }
            }
            out
        }
        None => value.to_string(),
    }
}

/// A delimiter line found in the body: where it starts, where the part after it starts, and
/// whether it is the close delimiter.
struct Delimiter {
    start: usize,
    after: usize,
    close: bool,
}

fn split_multipart(body: &[u8], boundary: &[u8]) -> Result<Vec<BodyPart>, BodyError> {
    let mut dash_boundary = Vec::with_capacity(boundary.len() + 2);
    dash_boundary.extend_from_slice(b"--");
    dash_boundary.extend_from_slice(boundary);

    let mut from = 0;
    let Some(mut current) = next_delimiter(body, &dash_boundary, &mut from) else {
        return Err(BodyError::Malformed(
            "multipart boundary not found in body".into(),
        ));
    };
    let mut parts = Vec::new();
    while !current.close {
        let next = next_delimiter(body, &dash_boundary, &mut from);
        // No further delimiter: the close delimiter is missing (CUBE, SEMS, Ribbon), so the part
        // runs to the end of the body.
        let end = next.as_ref().map_or(body.len(), |d| d.start);
        let content = strip_one_line_end(body.get(current.after..end).unwrap_or_default());
        if parts.len() == MAX_PARTS {
            return Err(BodyError::Malformed(format!(
                "multipart body has more than {MAX_PARTS} parts"
            )));
        }
        parts.push(parse_part(content));
        match next {
            Some(d) => current = d,
            None => break,
        }
    }
    Ok(parts)
}

/// Finds the next delimiter line at or after `*from`: `--boundary` at the start of a line,
/// followed by `--` (close) or by optional transport padding and a line end (or the end of
/// the body). `*from` moves past what was examined.
fn next_delimiter(body: &[u8], dash_boundary: &[u8], from: &mut usize) -> Option<Delimiter> {
    while *from < body.len() {
        let rel = find(body.get(*from..)?, dash_boundary)?;
        let start = *from + rel;
        let after_name = start + dash_boundary.len();
        *from = after_name;
        if start > 0 && body[start - 1] != b'\n' {
            continue;
        }
        let rest = &body[after_name..];
        if rest.starts_with(b"--") {
            return Some(Delimiter {
                start,
                after: body.len(),
                close: true,
            });
        }
        let padding = rest
            .iter()
            .take_while(|&&b| b == b' ' || b == b'\t')
            .count();
        let rest = &rest[padding..];
        let line_end = if rest.is_empty() {
            0
        } else if rest.starts_with(b"\r\n") {
            2
        } else if rest.starts_with(b"\n") {
            1
        } else {
            // `--boundaryX`: a longer token that merely starts with our boundary.
            continue;
        };
        let after = after_name + padding + line_end;
        *from = after;
        return Some(Delimiter {
            start,
            after,
            close: false,
        });
    }
    None
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The CRLF (or LF) before a delimiter belongs to the delimiter (RFC 2046 §5.1.1).
fn strip_one_line_end(content: &[u8]) -> &[u8] {
    if let Some(c) = content.strip_suffix(b"\r\n") {
        c
    } else if let Some(c) = content.strip_suffix(b"\n") {
        c
    } else {
        content
    }
}

/// Splits a part into headers and body. The headers end at the first empty line; a first line
/// that is not a header means the part has no headers at all (the whole part is body).
fn parse_part(content: &[u8]) -> BodyPart {
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut pos = 0;
    let mut body_start = None;
    while pos < content.len() {
        let (line, next) = match content[pos..].iter().position(|&b| b == b'\n') {
            Some(i) => (&content[pos..pos + i], pos + i + 1),
            None => (&content[pos..], content.len()),
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            body_start = Some(next);
            break;
        }
        let text = String::from_utf8_lossy(line);
        if line[0] == b' ' || line[0] == b'\t' {
            // Folded continuation of the previous header.
            if let Some((_, value)) = headers.last_mut() {
                value.push(' ');
                value.push_str(text.trim());
                pos = next;
                continue;
            }
        }
        match header_line(&text) {
            Some((name, value)) => headers.push((name, value)),
            None => {
                // Not a header: treat everything from here on as body.
                body_start = Some(pos);
                break;
            }
        }
        pos = next;
    }
    let body = body_start.map_or(&[][..], |start| content.get(start..).unwrap_or_default());
    let content_type = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("Content-Type"))
        .map(|(_, v)| mime_type(v))
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| DEFAULT_PART_TYPE.to_string());
    BodyPart {
        content_type,
        headers,
        body: body.to_vec(),
    }
}

/// `Name: value` or `Name:value`; the name must be a token (no spaces), which is what tells a
/// header apart from a body line such as `v=0`.
fn header_line(line: &str) -> Option<(String, String)> {
    let (name, value) = line.split_once(':')?;
    let name = name.trim_end();
    let is_token = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.!%*+`'~".contains(&b));
    is_token.then(|| (name.to_string(), value.trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SDP: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=label:1\r\n";
    const XML: &str = "<?xml version=\"1.0\"?>\r\n<recording xmlns='urn:ietf:params:xml:ns:recording:1'><datamode>complete</datamode></recording>";

    fn two_parts(boundary: &str, close: bool) -> Vec<u8> {
        let mut s = format!(
            "--{boundary}\r\nContent-Type: application/sdp\r\n\r\n{SDP}\r\n--{boundary}\r\nContent-Type: application/rs-metadata+xml\r\nContent-Disposition: recording-session\r\n\r\n{XML}\r\n"
        );
        if close {
            s.push_str(&format!("--{boundary}--\r\n"));
        }
        s.into_bytes()
    }

    fn types(parts: &[BodyPart]) -> Vec<&str> {
        parts.iter().map(|p| p.content_type.as_str()).collect()
    }

    #[test]
    fn plain_two_parts() {
        let parts =
            split_body(Some("multipart/mixed;boundary=b1"), &two_parts("b1", true)).unwrap();
        assert_eq!(
            types(&parts),
            ["application/sdp", "application/rs-metadata+xml"]
        );
        assert_eq!(parts[0].body, SDP.as_bytes());
        assert_eq!(parts[1].body, XML.as_bytes());
        assert_eq!(
            parts[1].header("content-disposition"),
            Some("recording-session")
        );
    }

    #[test]
    fn boundary_may_be_quoted() {
        let parts = split_body(
            Some("multipart/mixed; boundary=\"a b;c\""),
            &two_parts("a b;c", true),
        )
        .unwrap();
        assert_eq!(parts.len(), 2);
    }

    #[test]
    fn boundary_param_spaces_and_case() {
        let ct = "Multipart/Mixed ; BOUNDARY = xyz ; charset=utf-8";
        let parts = split_body(Some(ct), &two_parts("xyz", true)).unwrap();
        assert_eq!(
            types(&parts),
            ["application/sdp", "application/rs-metadata+xml"]
        );
    }

    #[test]
    fn multipart_without_boundary_is_malformed() {
        let err = split_body(Some("multipart/mixed"), b"--x\r\n\r\nhi").unwrap_err();
        assert_eq!(
            err,
            BodyError::Malformed("multipart body without boundary".into())
        );
        let err = split_body(Some("multipart/mixed;boundary=\"\""), b"--x\r\n\r\nhi").unwrap_err();
        assert_eq!(err.status(), 400);
    }

    #[test]
    fn boundary_absent_from_body_is_malformed() {
        let err = split_body(Some("multipart/mixed;boundary=zz"), b"hello").unwrap_err();
        assert!(matches!(err, BodyError::Malformed(_)));
    }

    #[test]
    fn metadata_part_before_sdp() {
        let body = format!(
            "--b\r\nContent-Type:application/rs-metadata+xml\r\n\r\n{XML}\r\n--b\r\nContent-Type: application/sdp\r\n\r\n{SDP}\r\n--b--"
        );
        let parts = split_body(Some("multipart/mixed;boundary=b"), body.as_bytes()).unwrap();
        assert_eq!(
            types(&parts),
            ["application/rs-metadata+xml", "application/sdp"]
        );
        assert_eq!(parts[1].body, SDP.as_bytes());
    }

    #[test]
    fn missing_close_delimiter_keeps_last_part() {
        let parts = split_body(Some("multipart/mixed;boundary=b"), &two_parts("b", false)).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1].body, XML.as_bytes());
    }

    #[test]
    fn extra_part_is_kept() {
        let mut body = two_parts("b", false);
        body.extend_from_slice(
            b"--b\r\nContent-Disposition: signal;handling=optional\r\nContent-Type: application/gtd\r\n\r\nIAM,\r\nGCI,abc\r\n",
        );
        let parts = split_body(Some("multipart/mixed;boundary=b"), &body).unwrap();
        assert_eq!(
            types(&parts),
            [
                "application/sdp",
                "application/rs-metadata+xml",
                "application/gtd"
            ]
        );
        assert_eq!(parts[2].body, b"IAM,\r\nGCI,abc");
    }

    #[test]
    fn preamble_and_trailing_junk_ignored() {
        let mut body = b"This is a preamble.\r\n".to_vec();
        body.extend_from_slice(&two_parts("b", true));
        body.extend_from_slice(b"epilogue junk --b\r\nContent-Type: text/evil\r\n\r\nx");
        let parts = split_body(Some("multipart/mixed;boundary=b"), &body).unwrap();
        assert_eq!(
            types(&parts),
            ["application/sdp", "application/rs-metadata+xml"]
        );
    }

    #[test]
    fn close_delimiter_with_trailing_space() {
        let mut body = two_parts("b", false);
        body.extend_from_slice(b"--b-- ");
        let parts = split_body(Some("multipart/mixed;boundary=b"), &body).unwrap();
        assert_eq!(parts.len(), 2);
    }

    #[test]
    fn lf_only_line_endings() {
        let body = String::from_utf8(two_parts("b", true))
            .unwrap()
            .replace("\r\n", "\n");
        let parts = split_body(Some("multipart/mixed;boundary=b"), body.as_bytes()).unwrap();
        assert_eq!(
            types(&parts),
            ["application/sdp", "application/rs-metadata+xml"]
        );
        assert_eq!(parts[0].body, SDP.replace("\r\n", "\n").as_bytes());
    }

    #[test]
    fn part_header_without_space_after_colon() {
        let body = b"--b\r\nContent-Type:application/rs-metadata+xml\r\nContent-ID:<m@x>\r\n\r\n<r/>\r\n--b--";
        let parts = split_body(Some("multipart/mixed;boundary=b"), body).unwrap();
        assert_eq!(parts[0].content_type, "application/rs-metadata+xml");
        assert_eq!(parts[0].header("Content-ID"), Some("<m@x>"));
    }

    #[test]
    fn part_without_content_type_is_text_plain() {
        let body = b"--b\r\nContent-Disposition: foo\r\n\r\nhello\r\n--b--";
        let parts = split_body(Some("multipart/mixed;boundary=b"), body).unwrap();
        assert_eq!(parts[0].content_type, "text/plain");
        assert_eq!(parts[0].body, b"hello");
    }

    #[test]
    fn part_without_headers_is_body() {
        let body = b"--b\r\n\r\nhello\r\n--b--";
        let parts = split_body(Some("multipart/mixed;boundary=b"), body).unwrap();
        assert_eq!(parts[0].content_type, "text/plain");
        assert!(parts[0].headers.is_empty());
        assert_eq!(parts[0].body, b"hello");
    }

    #[test]
    fn part_type_is_lowercased_without_params() {
        let body = b"--b\r\nContent-Type: Application/SDP; charset=x\r\n\r\nv=0\r\n--b--";
        let parts = split_body(Some("multipart/mixed;boundary=b"), body).unwrap();
        assert_eq!(parts[0].content_type, "application/sdp");
        assert_eq!(
            parts[0].header("content-type"),
            Some("Application/SDP; charset=x")
        );
    }

    #[test]
    fn folded_part_header() {
        let body = b"--b\r\nContent-Type: application/sdp;\r\n  charset=x\r\n\r\nv=0\r\n--b--";
        let parts = split_body(Some("multipart/mixed;boundary=b"), body).unwrap();
        assert_eq!(
            parts[0].header("Content-Type"),
            Some("application/sdp; charset=x")
        );
    }

    #[test]
    fn longer_token_is_not_a_delimiter() {
        let body = b"--b\r\nContent-Type: text/plain\r\n\r\n--bx is text\r\n--b--";
        let parts = split_body(Some("multipart/mixed;boundary=b"), body).unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].body, b"--bx is text");
    }

    #[test]
    fn delimiter_must_start_a_line() {
        let body = b"--b\r\nContent-Type: text/plain\r\n\r\nsee --b\r\nmore\r\n--b--";
        let parts = split_body(Some("multipart/mixed;boundary=b"), body).unwrap();
        assert_eq!(parts[0].body, b"see --b\r\nmore");
    }

    #[test]
    fn too_many_parts_is_malformed() {
        let mut body = String::new();
        for _ in 0..=MAX_PARTS {
            body.push_str("--b\r\nContent-Type: text/plain\r\n\r\nx\r\n");
        }
        body.push_str("--b--");
        let err = split_body(Some("multipart/mixed;boundary=b"), body.as_bytes()).unwrap_err();
        assert!(matches!(err, BodyError::Malformed(_)));
        assert!(err.reason().contains("parts"));
    }

    #[test]
    fn max_parts_is_allowed() {
        let body = "--b\r\n\r\nx\r\n".repeat(MAX_PARTS) + "--b--";
        let parts = split_body(Some("multipart/mixed;boundary=b"), body.as_bytes()).unwrap();
        assert_eq!(parts.len(), MAX_PARTS);
    }

    #[test]
    fn non_multipart_body_is_one_part() {
        let parts = split_body(Some("Application/SDP"), SDP.as_bytes()).unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].content_type, "application/sdp");
        assert_eq!(parts[0].body, SDP.as_bytes());
    }

    #[test]
    fn empty_body_is_no_part() {
        assert!(split_body(Some("application/sdp"), b"").unwrap().is_empty());
        assert!(split_body(Some("multipart/mixed"), b"").unwrap().is_empty());
    }

    #[test]
    fn body_without_content_type_is_text_plain() {
        let parts = split_body(None, b"hello").unwrap();
        assert_eq!(parts[0].content_type, "text/plain");
    }

    #[test]
    fn empty_part_before_close() {
        let parts = split_body(Some("multipart/mixed;boundary=b"), b"--b\r\n--b--").unwrap();
        assert_eq!(parts.len(), 1);
        assert!(parts[0].body.is_empty());
    }
}
