//! Tests over the real vendor captures in `/work/shared/siprec-samples` (read at test time, never
//! copied into the repo): every good sample goes through the whole body pipeline, and every
//! sample, damaged or mutated, must never panic.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::metadata::{Limits, Metadata, parse_metadata};
use super::sdp::{StreamPlan, answer_crypto, build_answer, parse_sdp};
use super::{BodyPart, is_metadata_type, is_siprec_headers, split_body};

const SAMPLES: &str = "/work/shared/siprec-samples";

/// The `.sip` files of one sample directory, sorted; `None` (with the reason printed) when the
/// samples are not on this machine.
fn sample_files(dir: &str) -> Option<Vec<PathBuf>> {
    let path = Path::new(SAMPLES).join(dir);
    let Ok(entries) = std::fs::read_dir(&path) else {
        println!("skipping: {} not found", path.display());
        return None;
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "sip"))
        .collect();
    files.sort();
    Some(files)
}

/// A SIP request split by hand (the SIP parser is not ours to rely on here).
struct Message {
    name: String,
    content_type: Option<String>,
    require: Vec<String>,
    supported: Vec<String>,
    contacts: Vec<String>,
    body: Vec<u8>,
}

fn read_message(path: &Path) -> Message {
    let bytes = std::fs::read(path).unwrap();
    let split = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&bytes[..split]).into_owned();
    let mut m = Message {
        name: path.file_name().unwrap().to_string_lossy().into_owned(),
        content_type: None,
        require: vec![],
        supported: vec![],
        contacts: vec![],
        body: bytes[split + 4..].to_vec(),
    };
    for line in head.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        let list = || {
            value
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        };
        match name.trim().to_ascii_lowercase().as_str() {
            "content-type" | "c" => m.content_type = Some(value.to_string()),
            "require" => m.require.extend(list()),
            "supported" | "k" => m.supported.extend(list()),
            "contact" | "m" => m.contacts.extend(list()),
            _ => {}
        }
    }
    m
}

fn find_part(parts: &[BodyPart], pred: impl Fn(&str) -> bool) -> Option<&BodyPart> {
    parts.iter().find(|p| pred(&p.content_type))
}

/// What the good samples must yield: (file, per m-line chosen codec, per label its sender's aor).
#[allow(clippy::type_complexity)]
const EXPECTED: &[(&str, &[Option<&str>], &[(&str, Option<&str>)])] = &[
    (
        "avaya_sbce_2017_invite.sip",
        &[Some("PCMU")],
        &[("10", Some("sip:13035381001@10.64.110.65"))],
    ),
    (
        "avaya_sbce_2019.sip",
        &[Some("PCMA"), Some("PCMA")],
        &[
            ("10", Some("sip:9878942259@212.188.68.145")),
            ("20", Some("sip:ASBCE@asbce.com")),
        ],
    ),
    (
        "broadworks_3way_2021.sip",
        &[Some("PCMA")],
        &[(
            "1",
            Some("sip:86074075017412@cloudcalling-e.onestreamnetworks.com"),
        )],
    ),
    (
        "cisco_cube_3part_gtd_2017.sip",
        &[Some("PCMU"), Some("PCMU")],
        &[
            ("1", Some("sip:7301@35.162.237.204")),
            ("2", Some("sip:7300@35.162.237.204")),
        ],
    ),
    (
        "cisco_cube_inactive.sip",
        &[Some("PCMU"), Some("PCMU")],
        &[("1", None), ("2", None)],
    ),
    (
        "cisco_webex_calling_broadworks_2024.sip",
        &[Some("opus")],
        &[("1", Some("sip:kculs9klre@44936045.int10.bcld.webex.com"))],
    ),
    (
        "intrado_viper_asterisk_2022.sip",
        &[Some("PCMU")],
        &[("1", Some("4058327108@10.105.190.136:5060"))],
    ),
    (
        "metaswitch_2017.sip",
        &[Some("G729")],
        &[("1", Some("7602922411"))],
    ),
    (
        "opensips_siprec_connectel_1.sip",
        &[Some("PCMU"), Some("PCMA")],
        &[("1", None), ("2", None)],
    ),
    (
        "opensips_siprec_connectel_2.sip",
        &[Some("PCMU"), Some("PCMA")],
        &[("1", None), ("2", None)],
    ),
    (
        "opensips_siprec_connectel_3.sip",
        &[Some("PCMU"), Some("PCMA")],
        &[("1", None), ("2", None)],
    ),
    (
        "oracle_acme_sbc_2019.sip",
        &[Some("PCMU"), Some("PCMU")],
        &[
            ("16777227", Some("sip:9000@192.168.50.102")),
            ("16777228", Some("sip:1002@192.168.50.10")),
        ],
    ),
    (
        "oracle_acme_sbc_avaya_realm_2020.sip",
        &[Some("PCMA"), Some("PCMA")],
        &[
            ("201835599", Some("sip:31624895902@10.10.128.62")),
            ("201835600", Some("sip:33187164021@sip.webhelpgroupe.lan")),
        ],
    ),
    (
        "ribbon_sonus_sbc.sip",
        &[Some("PCMU"), Some("PCMU")],
        &[
            ("1", Some("2249888012@172.16.195.72")),
            ("2", Some("2249888500@172.16.198.55")),
        ],
    ),
    (
        "sems_sbc_procomm_2017.sip",
        &[Some("PCMA"), Some("PCMA")],
        &[
            ("a_leg", Some("sip:016190200@87.252.209.116")),
            ("b_leg", Some("Extension-016190619@speechpath.ie")),
        ],
    ),
];

#[test]
fn every_good_sample_goes_through_the_pipeline() {
    let Some(files) = sample_files("good") else {
        return;
    };
    assert!(!files.is_empty());
    let mut checked = 0;
    for path in &files {
        let msg = read_message(path);
        let name = msg.name.as_str();
        let parts = split_body(msg.content_type.as_deref(), &msg.body)
            .unwrap_or_else(|e| panic!("{name}: split: {e}"));
        assert!(
            is_siprec_headers(&msg.require, &msg.supported, &msg.contacts, &parts),
            "{name}"
        );

        let sdp_part = find_part(&parts, |t| t == "application/sdp").expect(name);
        let offer = parse_sdp(&sdp_part.body).unwrap_or_else(|e| panic!("{name}: sdp: {e}"));
        let codecs: Vec<_> = offer.media.iter().map(|m| m.choose_codecs()).collect();
        assert!(
            codecs.iter().any(Option::is_some),
            "{name}: nothing recordable"
        );

        let xml = find_part(&parts, is_metadata_type).expect(name);
        let doc = parse_metadata(&xml.body, &Limits::default())
            .unwrap_or_else(|e| panic!("{name}: metadata: {e}"));
        let mut metadata = Metadata::default();
        metadata.apply(doc);

        let labels: Vec<String> = offer.media.iter().filter_map(|m| m.label.clone()).collect();
        for w in metadata.warnings(&labels) {
            println!("{name}: warning: {w}");
        }

        if let Some((_, want_codecs, want_senders)) = EXPECTED.iter().find(|(f, ..)| *f == name) {
            let got: Vec<_> = codecs
                .iter()
                .map(|c| c.as_ref().map(|(codec, _)| codec.name.as_str()))
                .collect();
            assert_eq!(&got, want_codecs, "{name}: codecs");
            for (label, want) in *want_senders {
                let got = metadata
                    .sender_of_label(label)
                    .and_then(|p| p.aor.as_deref());
                assert_eq!(got, *want, "{name}: sender of label {label}");
            }
            checked += 1;
        } else {
            println!("{name}: no expectations pinned, pipeline only");
        }

        let plan: Vec<StreamPlan> = offer
            .media
            .iter()
            .zip(&codecs)
            .enumerate()
            .map(|(i, (m, chosen))| match chosen {
                Some((codec, te)) if m.acceptable_transport() => StreamPlan::Accepted {
                    port: 40000 + 2 * i as u16,
                    codec: codec.clone(),
                    telephone_event: te.clone(),
                    crypto: m.supported_crypto().and_then(answer_crypto),
                },
                _ => StreamPlan::Rejected,
            })
            .collect();
        let local: IpAddr = "203.0.113.5".parse().unwrap();
        let text = build_answer(&offer, &plan, local, 7, 1);
        let answer = parse_sdp(text.as_bytes()).unwrap_or_else(|e| panic!("{name}: answer: {e}"));
        assert_eq!(
            answer.media.len(),
            offer.media.len(),
            "{name}: one m= per offered"
        );
        for ((a, o), p) in answer.media.iter().zip(&offer.media).zip(&plan) {
            assert_eq!(a.media, o.media, "{name}");
            assert_eq!(
                a.label,
                if matches!(p, StreamPlan::Rejected) {
                    None
                } else {
                    o.label.clone()
                }
            );
            match p {
                StreamPlan::Rejected => assert_eq!(a.port, 0, "{name}"),
                StreamPlan::Accepted { port, .. } => assert_eq!(a.port, *port, "{name}"),
            }
        }
    }
    assert_eq!(
        checked,
        EXPECTED.len(),
        "a pinned sample is missing from the directory"
    );
}

#[test]
fn avaya_in_dialog_update_is_metadata_only() {
    let Some(files) = sample_files("in_dialog") else {
        return;
    };
    for path in &files {
        let msg = read_message(path);
        let parts = split_body(msg.content_type.as_deref(), &msg.body).unwrap();
        assert_eq!(parts.len(), 1, "{}", msg.name);
        assert!(is_metadata_type(&parts[0].content_type));
        assert!(is_siprec_headers(
            &msg.require,
            &msg.supported,
            &msg.contacts,
            &parts
        ));
        let doc = parse_metadata(&parts[0].body, &Limits::default()).unwrap();
        let mut metadata = Metadata::default();
        metadata.apply(doc);
        assert!(metadata.sender_of_label("20").is_some(), "{}", msg.name);
    }
}

#[test]
fn non_siprec_sample_is_not_siprec() {
    let Some(files) = sample_files("non_siprec") else {
        return;
    };
    for path in &files {
        let msg = read_message(path);
        let parts = split_body(msg.content_type.as_deref(), &msg.body).unwrap();
        assert!(
            !is_siprec_headers(&msg.require, &msg.supported, &msg.contacts, &parts),
            "{}",
            msg.name
        );
        let offer = parse_sdp(&parts[0].body).unwrap();
        assert!(offer.media[0].choose_codecs().is_some());
    }
}

#[test]
fn damaged_sample_is_accepted_or_a_clear_error() {
    let Some(files) = sample_files("damaged") else {
        return;
    };
    for path in &files {
        let msg = read_message(path);
        let parts = match split_body(msg.content_type.as_deref(), &msg.body) {
            Ok(parts) => parts,
            Err(e) => {
                println!("{}: split error {e}", msg.name);
                continue;
            }
        };
        for part in &parts {
            let sdp = parse_sdp(&part.body).map(|s| s.media.len());
            let xml = parse_metadata(&part.body, &Limits::default()).map(|d| d.participants.len());
            println!(
                "{}: part {}: sdp {sdp:?}, metadata {xml:?}",
                msg.name, part.content_type
            );
        }
    }
}

/// Splits `body` and runs every parser on each part; only panics matter.
fn exercise(content_type: Option<&str>, body: &[u8]) {
    let limits = Limits::default();
    if let Ok(parts) = split_body(content_type, body) {
        for part in &parts {
            if let Ok(offer) = parse_sdp(&part.body) {
                for m in &offer.media {
                    let _ = m.choose_codecs();
                    let _ = m.acceptable_transport();
                }
                let _ = build_answer(&offer, &[], "192.0.2.1".parse().unwrap(), 1, 1);
            }
            if let Ok(doc) = parse_metadata(&part.body, &limits) {
                let mut m = Metadata::default();
                m.apply(doc);
                let _ = m.warnings(&["1".to_string()]);
            }
        }
    }
}

#[test]
fn truncations_and_byte_flips_never_panic() {
    let mut files = Vec::new();
    for dir in ["good", "damaged", "in_dialog", "non_siprec"] {
        match sample_files(dir) {
            Some(f) => files.extend(f),
            None => return,
        }
    }
    for path in &files {
        let msg = read_message(path);
        let ct = msg.content_type.as_deref();
        let body = &msg.body;
        for cut in (0..body.len()).step_by(23) {
            exercise(ct, &body[..cut]);
        }
        for at in (0..body.len()).step_by(11) {
            for replacement in [body[at] ^ 0xFF, b'<', b'\n'] {
                let mut mutated = body.clone();
                mutated[at] = replacement;
                exercise(ct, &mutated);
            }
        }
    }
}

/// The RFC 7865 example as AWS reproduced it: its `<naSRCme>` typo must be a clear error, and the
/// document with the typo mended must read completely, its five extensions verbatim.
#[test]
fn rfc7865_reference_example() {
    let path = Path::new(SAMPLES).join("metadata/rfc7865_appendix_example_via_aws_chime_docs.txt");
    let Ok(text) = std::fs::read_to_string(&path) else {
        println!("skipping: {} not found", path.display());
        return;
    };
    let Some(start) = text.find("<?xml") else {
        panic!("no XML in {}", path.display())
    };
    let xml = &text[start..];
    let err = parse_metadata(xml.as_bytes(), &Limits::default()).unwrap_err();
    assert!(
        err.reason().starts_with("metadata: mismatched tag </name>"),
        "{err}"
    );

    let mended = xml.replace("<naSRCme", "<name");
    let doc = parse_metadata(mended.as_bytes(), &Limits::default()).unwrap();
    assert_eq!(doc.session_id.as_deref(), Some("hVpd7YQgRW2nD22h7q60JQ=="));
    assert_eq!(doc.participants.len(), 2);
    assert_eq!(doc.streams.len(), 4);
    assert_eq!(doc.extensions.len(), 5);
    for ext in &doc.extensions {
        assert!(
            mended.contains(ext.as_str()),
            "extension not verbatim: {ext}"
        );
    }
    let mut metadata = Metadata::default();
    metadata.apply(doc);
    let alice = metadata.sender_of_label("96").unwrap();
    assert_eq!(
        (alice.aor.as_deref(), alice.name.as_deref()),
        (Some("sip:alice@atlanta.com"), Some("Alice"))
    );
    assert_eq!(
        metadata
            .sender_of_label("98")
            .and_then(|p| p.name.as_deref()),
        Some("Bob")
    );
    assert!(
        metadata
            .warnings(&["96", "97", "98", "99"].map(String::from))
            .is_empty()
    );
}
