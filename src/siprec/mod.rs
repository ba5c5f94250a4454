//! SIPREC (RFC 7866) bodies without I/O: request detection, tolerant multipart split, SDP offer
//! to answer, and RFC 7865 metadata (plus the pre-RFC dialects) into one model.
//!
//! Owns: parsing and building bodies. Must not: open sockets or choose ports (control passes the
//! ports it allocated into [`sdp::build_answer`]).

pub mod error;
pub mod metadata;
pub mod multipart;
pub mod sdp;

#[cfg(test)]
mod samples_tests;

pub use error::BodyError;
pub use metadata::{
    DataMode, Limits, Metadata, MetadataDoc, Participant, StreamInfo, parse_metadata,
};
pub use multipart::{BodyPart, split_body};
pub use sdp::{
    Codec, Crypto, Direction, MediaDescription, SessionDescription, StreamPlan, answer_crypto,
    build_answer, parse_sdp,
};

use crate::sip::Request;

/// RFC 7866 §6.1: a request is SIPREC when it requires or supports `siprec`, its Contact has
/// `+sip.src` (or a bare `src`), or its body has an rs-metadata part.
pub fn is_siprec(request: &Request, parts: &[BodyPart]) -> bool {
    is_siprec_headers(
        &request.headers.get_list("Require"),
        &request.headers.get_list("Supported"),
        &request.headers.get_list("Contact"),
        parts,
    )
}

/// [`is_siprec`] on the header values it looks at: the comma-separated elements of Require,
/// Supported and Contact, and the body parts.
pub fn is_siprec_headers(
    require: &[String],
    supported: &[String],
    contacts: &[String],
    parts: &[BodyPart],
) -> bool {
    let siprec_token = |t: &String| t.trim().eq_ignore_ascii_case("siprec");
    require.iter().any(siprec_token)
        || supported.iter().any(siprec_token)
        || contacts.iter().any(|c| contact_has_src(c))
        || parts.iter().any(|p| is_metadata_type(&p.content_type))
}

/// Does one Contact value carry the `+sip.src` feature tag (RFC 7866 §6.1.1), or the bare `src`
/// BroadWorks sends? Avaya puts it inside the URI (`<sip:h;+sip.src>`), so every `;` parameter
/// counts, URI or header, quoted display names excepted.
fn contact_has_src(contact: &str) -> bool {
    let mut in_quotes = false;
    let mut segments = Vec::new();
    let mut start = 0;
    for (i, c) in contact.char_indices() {
        match c {
            '"' => in_quotes = !in_quotes,
            ';' if !in_quotes => {
                segments.push(&contact[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    segments.push(&contact[start..]);
    segments.iter().skip(1).any(|param| {
        let name = param.split('=').next().unwrap_or("");
        let name = name.trim().trim_end_matches('>').trim();
        name.eq_ignore_ascii_case("+sip.src") || name.eq_ignore_ascii_case("src")
    })
}

/// True for `application/rs-metadata+xml` and `application/rs-metadata` (case-insensitive,
/// parameters ignored).
pub fn is_metadata_type(mime: &str) -> bool {
    let mime = multipart::mime_type(mime);
    mime == "application/rs-metadata+xml" || mime == "application/rs-metadata"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn part(content_type: &str) -> BodyPart {
        BodyPart {
            content_type: content_type.into(),
            headers: vec![],
            body: vec![],
        }
    }

    #[test]
    fn metadata_types() {
        assert!(is_metadata_type("application/rs-metadata+xml"));
        assert!(is_metadata_type("Application/RS-Metadata"));
        assert!(is_metadata_type(
            " application/rs-metadata+xml ; charset=utf-8"
        ));
        assert!(!is_metadata_type("application/rs-metadata-request"));
        assert!(!is_metadata_type("application/sdp"));
        assert!(!is_metadata_type("application/ +xml"));
    }

    #[test]
    fn require_siprec_is_siprec() {
        assert!(is_siprec_headers(
            &strings(&["timer", "SIPREC"]),
            &[],
            &[],
            &[]
        ));
    }

    #[test]
    fn supported_siprec_is_siprec() {
        assert!(is_siprec_headers(
            &[],
            &strings(&["resource-priority", " siprec "]),
            &[],
            &[]
        ));
    }

    #[test]
    fn contact_sip_src_after_uri() {
        let c = strings(&["<sip:src@192.0.2.1:5070>;+sip.src"]);
        assert!(is_siprec_headers(&[], &[], &c, &[]));
    }

    #[test]
    fn contact_sip_src_inside_uri() {
        let c = strings(&["\"User 1\" <sip:192.0.2.1:5070;transport=UDP;+sip.src>"]);
        assert!(is_siprec_headers(&[], &[], &c, &[]));
    }

    #[test]
    fn contact_bare_src() {
        let c = strings(&["<sip:192.0.2.1:5070;transport=UDP>;src"]);
        assert!(is_siprec_headers(&[], &[], &c, &[]));
    }

    #[test]
    fn contact_src_in_display_name_does_not_count() {
        let c = strings(&["\"a;src\" <sip:192.0.2.1>"]);
        assert!(!is_siprec_headers(&[], &[], &c, &[]));
    }

    #[test]
    fn contact_src_like_names_do_not_count() {
        let c = strings(&["<sip:src@192.0.2.1;srcport=5>;+sip.srcx"]);
        assert!(!is_siprec_headers(&[], &[], &c, &[]));
    }

    #[test]
    fn metadata_part_is_siprec() {
        let parts = [part("application/sdp"), part("application/rs-metadata")];
        assert!(is_siprec_headers(&[], &[], &[], &parts));
    }

    #[test]
    fn plain_invite_is_not_siprec() {
        let parts = [part("application/sdp")];
        let supported = strings(&["100rel", "timer", "replaces"]);
        let contacts = strings(&["<sip:192.0.2.1:5070;transport=UDP>"]);
        assert!(!is_siprec_headers(&[], &supported, &contacts, &parts));
    }
}
