//! Recording metadata into one model: RFC 7865 (`urn:ietf:params:xml:ns:recording:1`), the older
//! `urn:ietf:params:xml:ns:recording` namespace with `id=` attributes (Oracle/Acme, Metaswitch),
//! the BroadWorks draft schema (`recording_metadata`, `dataMode`, `send/id`), any prefix.
//! `complete` documents replace, `partial` ones merge. Vendor extensions are kept verbatim.
//! No DTD, no entities, bounded size and depth.
//!
//! Owns: reading metadata documents and keeping a recording session's merged view of them
//! (who sends which labelled stream). Does not decide anything about the SIP dialog: problems
//! that are not parse errors come back as [`Metadata::warnings`], never as rejections.

use quick_xml::XmlVersion;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

use super::error::BodyError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DataMode {
    #[default]
    Complete,
    Partial,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Participant {
    /// participant_id / id attribute, or the `<id>` element.
    pub id: String,
    pub aor: Option<String>,
    pub name: Option<String>,
    /// Stream ids this participant sends / receives.
    pub send: Vec<String>,
    pub recv: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct StreamInfo {
    pub id: String,
    pub label: Option<String>,
}

/// One parsed metadata document.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct MetadataDoc {
    pub data_mode: DataMode,
    pub session_id: Option<String>,
    pub participants: Vec<Participant>,
    pub streams: Vec<StreamInfo>,
    /// Vendor extension elements, each verbatim as it stood in the document.
    pub extensions: Vec<String>,
}

/// The merged state of a recording session's metadata.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Metadata {
    pub session_id: Option<String>,
    pub participants: Vec<Participant>,
    pub streams: Vec<StreamInfo>,
    pub extensions: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_bytes: usize,
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 256 * 1024,
            max_depth: 32,
        }
    }
}

/// Namespaces whose elements are the metadata model; anything else is a vendor extension.
const RECORDING_NAMESPACES: &[&str] = &[
    "urn:ietf:params:xml:ns:recording:1",
    "urn:ietf:params:xml:ns:recording",
    "urn:ietf:params:xml:ns:siprec",
];

/// Root element local names we read: RFC 7865 and the BroadWorks draft.
const ROOT_NAMES: &[&str] = &["recording", "recording_metadata"];

/// Parses one document. DOCTYPE/entity declarations, over-size and over-deep documents are
/// errors; trailing junk after the root element is ignored.
pub fn parse_metadata(xml: &[u8], limits: &Limits) -> Result<MetadataDoc, BodyError> {
    if xml.len() > limits.max_bytes {
        return Err(BodyError::TooLarge(format!(
            "metadata: {} bytes over the {} byte limit",
            xml.len(),
            limits.max_bytes
        )));
    }
    // Checked on the raw bytes, before any parsing, so no entity expansion trick (billion
    // laughs, external entities) can reach the XML reader at all.
    if contains_ignore_case(xml, b"<!DOCTYPE") || contains_ignore_case(xml, b"<!ENTITY") {
        return Err(BodyError::Refused("metadata: DTD not allowed".into()));
    }
    let text = String::from_utf8_lossy(xml);
    let mut reader = NsReader::from_str(&text);
    reader.config_mut().check_end_names = true;
    let mut parser = Parser {
        text: &text,
        max_depth: limits.max_depth,
        ..Parser::default()
    };
    loop {
        let before = pos(reader.buffer_position());
        let (foreign, root_ns, event) = match reader.read_resolved_event() {
            Ok((ns, event)) => {
                // Only the root's namespace is remembered (it is "ours" whatever it is).
                let root_ns = match &ns {
                    ResolveResult::Bound(n) if parser.stack.is_empty() => n.as_ref().to_string(),
                    _ => String::new(),
                };
                (parser.is_foreign(&ns), root_ns, event)
            }
            Err(e) => return Err(xml_error(&e, pos(reader.error_position()))),
        };
        let after = pos(reader.buffer_position());
        match event {
            Event::Start(e) => parser.start(&e, &root_ns, foreign, before)?,
            Event::Empty(e) => {
                parser.start(&e, &root_ns, foreign, before)?;
                parser.end(after);
            }
            Event::End(_) => parser.end(after),
            Event::Text(t) => parser.text(&t.xml10_content()),
            Event::CData(c) => parser.text(&c.xml10_content()),
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => Some(c),
                    Ok(None) => predefined_entity(&r),
                    Err(_) => None,
                };
                match resolved {
                    Some(c) => parser.text(c.encode_utf8(&mut [0; 4])),
                    // An unknown entity stays as written: we never expand anything else.
                    None => parser.text(&format!("&{};", &*r)),
                }
            }
            Event::DocType(_) => {
                return Err(BodyError::Refused("metadata: DTD not allowed".into()));
            }
            Event::Eof => {
                return Err(BodyError::Malformed(match parser.stack.last() {
                    Some(frame) => format!("metadata: document ends inside <{}>", frame.name),
                    None => "metadata: no root element".to_string(),
                }));
            }
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) => {}
        }
        if parser.stack.is_empty() && parser.root_ns.is_some() {
            // The root is closed: whatever follows is not ours to read.
            break;
        }
    }
    Ok(parser.finish())
}

fn pos(p: u64) -> usize {
    usize::try_from(p).unwrap_or(usize::MAX)
}

fn predefined_entity(name: &str) -> Option<char> {
    match name {
        "lt" => Some('<'),
        "gt" => Some('>'),
        "amp" => Some('&'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        _ => None,
    }
}

/// `needle` must start with `<`: only the `<` positions are compared.
fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.iter().enumerate().any(|(i, &b)| {
        b == b'<'
            && haystack
                .get(i..i + needle.len())
                .is_some_and(|w| w.eq_ignore_ascii_case(needle))
    })
}

fn xml_error(e: &quick_xml::Error, at: usize) -> BodyError {
    use quick_xml::errors::IllFormedError;
    let reason = match e {
        quick_xml::Error::IllFormed(IllFormedError::MismatchedEndTag { expected, found }) => {
            format!("metadata: mismatched tag </{found}> at byte {at} (open is <{expected}>)")
        }
        quick_xml::Error::IllFormed(IllFormedError::UnmatchedEndTag(name)) => {
            format!("metadata: unexpected tag </{name}> at byte {at}")
        }
        quick_xml::Error::IllFormed(IllFormedError::MissingEndTag(name)) => {
            format!("metadata: document ends inside <{name}>")
        }
        other => format!("metadata: {other} at byte {at}"),
    };
    BodyError::Malformed(reason)
}

/// What an open element means to the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ctx {
    Root,
    /// The outermost element of a vendor extension, kept verbatim from `start`.
    Extension {
        start: usize,
    },
    /// Read past: unknown elements and everything inside an extension.
    Ignored,
    DataMode,
    Session,
    Participant,
    NameId,
    /// `<name>` (inside `nameID` or directly in `participant`).
    Name,
    /// `<aor>` element (BroadWorks), the other form of `nameID aor=`.
    Aor,
    /// `<id>` child of a participant (BroadWorks).
    ParticipantId,
    Stream,
    Label,
    Assoc,
    /// `<send>`/`<recv>` with the id as text (RFC 7865) or in `<id>` children (BroadWorks).
    List {
        owner: Owner,
        recv: bool,
    },
    ListId {
        owner: Owner,
        recv: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner {
    Participant,
    Assoc,
}

impl Ctx {
    fn collects_text(self) -> bool {
        matches!(
            self,
            Ctx::DataMode
                | Ctx::Name
                | Ctx::Aor
                | Ctx::ParticipantId
                | Ctx::Label
                | Ctx::List { .. }
                | Ctx::ListId { .. }
        )
    }
}

struct Frame {
    name: String,
    ctx: Ctx,
    text: String,
}

#[derive(Default)]
struct Parser<'a> {
    text: &'a str,
    max_depth: usize,
    stack: Vec<Frame>,
    root_ns: Option<String>,
    /// Inside an extension being captured: its contents are not interpreted.
    capturing: bool,
    doc: MetadataDoc,
    /// `participantstreamassoc` entries, merged into participants at the end because they may
    /// come before or after the participant they name.
    assocs: Vec<Participant>,
}

impl Parser<'_> {
    /// Foreign: bound to a namespace that is neither a recording namespace nor the root's. No
    /// namespace, or an undeclared prefix, reads as ours (tolerance for sloppy SRCs).
    fn is_foreign(&self, ns: &ResolveResult<'_>) -> bool {
        match ns {
            ResolveResult::Bound(ns) => {
                let ns = ns.as_ref();
                self.root_ns.is_some()
                    && !RECORDING_NAMESPACES.contains(&ns)
                    && self.root_ns.as_deref() != Some(ns)
            }
            ResolveResult::Unbound | ResolveResult::Unknown(_) => false,
        }
    }

    fn start(
        &mut self,
        e: &BytesStart<'_>,
        ns: &str,
        foreign: bool,
        before: usize,
    ) -> Result<(), BodyError> {
        let name = e.local_name().as_ref().to_string();
        if self.stack.len() >= self.max_depth {
            return Err(BodyError::Refused(format!(
                "metadata: nesting deeper than {} at byte {before}",
                self.max_depth
            )));
        }
        let attrs = attributes(e, before)?;
        let attr = |names: &[&str]| -> Option<String> {
            names.iter().find_map(|n| {
                attrs
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(n))
                    .map(|(_, v)| v.clone())
            })
        };
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        let parent = self.stack.last().map(|f| f.ctx);
        let ctx = match parent {
            None => {
                if !ROOT_NAMES.iter().any(|r| is(r)) {
                    return Err(BodyError::Malformed(format!(
                        "metadata: root element <{name}> is not <recording>"
                    )));
                }
                self.root_ns = Some(ns.to_string());
                Ctx::Root
            }
            Some(_) if self.capturing => Ctx::Ignored,
            Some(_) if foreign || is("extensiondata") => {
                self.capturing = true;
                Ctx::Extension { start: before }
            }
            Some(Ctx::Root) => {
                if is("datamode") {
                    Ctx::DataMode
                } else if is("session") {
                    if self.doc.session_id.is_none() {
                        self.doc.session_id = attr(&["session_id", "id"]);
                    }
                    Ctx::Session
                } else if is("participant") {
                    let id = attr(&["participant_id", "id"]).unwrap_or_default();
                    self.doc.participants.push(Participant {
                        id,
                        ..Participant::default()
                    });
                    Ctx::Participant
                } else if is("stream") {
                    let id = attr(&["stream_id", "id"]).unwrap_or_default();
                    self.doc.streams.push(StreamInfo { id, label: None });
                    Ctx::Stream
                } else if is("participantstreamassoc") {
                    let id = attr(&["participant_id", "id"]).unwrap_or_default();
                    self.assocs.push(Participant {
                        id,
                        ..Participant::default()
                    });
                    Ctx::Assoc
                } else {
                    Ctx::Ignored
                }
            }
            Some(Ctx::Participant) => {
                if is("nameid") {
                    if let Some(aor) = attr(&["aor"]).filter(|a| !a.trim().is_empty())
                        && let Some(p) = self.doc.participants.last_mut()
                    {
                        p.aor = Some(aor.trim().to_string());
                    }
                    Ctx::NameId
                } else if is("name") {
                    Ctx::Name
                } else if is("aor") {
                    Ctx::Aor
                } else if is("id") {
                    Ctx::ParticipantId
                } else if is("send") || is("recv") {
                    Ctx::List {
                        owner: Owner::Participant,
                        recv: is("recv"),
                    }
                } else {
                    Ctx::Ignored
                }
            }
            Some(Ctx::NameId) if is("name") => Ctx::Name,
            Some(Ctx::NameId) if is("aor") => Ctx::Aor,
            Some(Ctx::Stream) if is("label") => Ctx::Label,
            Some(Ctx::Assoc) if is("send") || is("recv") => Ctx::List {
                owner: Owner::Assoc,
                recv: is("recv"),
            },
            Some(Ctx::List { owner, recv }) if is("id") => Ctx::ListId { owner, recv },
            Some(_) => Ctx::Ignored,
        };
        self.stack.push(Frame {
            name,
            ctx,
            text: String::new(),
        });
        Ok(())
    }

    fn text(&mut self, s: &str) {
        if let Some(frame) = self.stack.last_mut()
            && frame.ctx.collects_text()
        {
            frame.text.push_str(s);
        }
    }

    fn end(&mut self, after: usize) {
        let Some(frame) = self.stack.pop() else {
            return;
        };
        let value = frame.text.trim();
        let value = (!value.is_empty()).then(|| value.to_string());
        match frame.ctx {
            Ctx::Extension { start } => {
                self.capturing = false;
                if let Some(raw) = self.text.get(start..after) {
                    self.doc.extensions.push(raw.to_string());
                }
            }
            Ctx::DataMode => {
                if let Some(v) = value {
                    if v.eq_ignore_ascii_case("partial") {
                        self.doc.data_mode = DataMode::Partial;
                    } else if v.eq_ignore_ascii_case("complete") {
                        self.doc.data_mode = DataMode::Complete;
                    }
                }
            }
            Ctx::Name => {
                if let (Some(v), Some(p)) = (value, self.doc.participants.last_mut()) {
                    p.name = Some(v);
                }
            }
            Ctx::Aor => {
                if let (Some(v), Some(p)) = (value, self.doc.participants.last_mut()) {
                    p.aor = Some(v);
                }
            }
            Ctx::ParticipantId => {
                if let (Some(v), Some(p)) = (value, self.doc.participants.last_mut())
                    && p.id.is_empty()
                {
                    p.id = v;
                }
            }
            Ctx::Label => {
                if let (Some(v), Some(s)) = (value, self.doc.streams.last_mut()) {
                    s.label = Some(v);
                }
            }
            Ctx::List { owner, recv } | Ctx::ListId { owner, recv } => {
                if let Some(v) = value {
                    let target = match owner {
                        Owner::Participant => self.doc.participants.last_mut(),
                        Owner::Assoc => self.assocs.last_mut(),
                    };
                    if let Some(p) = target {
                        push_unique(if recv { &mut p.recv } else { &mut p.send }, v);
                    }
                }
            }
            Ctx::Root
            | Ctx::Ignored
            | Ctx::Session
            | Ctx::Participant
            | Ctx::NameId
            | Ctx::Stream
            | Ctx::Assoc => {}
        }
    }

    fn finish(mut self) -> MetadataDoc {
        for assoc in std::mem::take(&mut self.assocs) {
            let index = self.doc.participants.iter().position(|p| p.id == assoc.id);
            match index {
                Some(i) => {
                    let p = &mut self.doc.participants[i];
                    for id in assoc.send {
                        push_unique(&mut p.send, id);
                    }
                    for id in assoc.recv {
                        push_unique(&mut p.recv, id);
                    }
                }
                // A stream association may name a participant described in an earlier
                // (complete) document; keep it so a partial update can merge it.
                None => self.doc.participants.push(assoc),
            }
        }
        self.doc
    }
}

/// An element's attributes as (local name, value). Values with an unknown entity are kept raw.
fn attributes(e: &BytesStart<'_>, at: usize) -> Result<Vec<(String, String)>, BodyError> {
    let mut out = Vec::new();
    for attr in e.attributes() {
        let attr = attr.map_err(|err| {
            BodyError::Malformed(format!("metadata: bad attribute ({err}) at byte {at}"))
        })?;
        let key = attr.key.local_name().as_ref().to_string();
        let value = match attr.normalized_value(XmlVersion::Implicit1_0) {
            Ok(v) => v.into_owned(),
            Err(_) => attr.value.to_string(),
        };
        out.push((key, value));
    }
    Ok(out)
}

fn push_unique(list: &mut Vec<String>, id: String) {
    if !list.contains(&id) {
        list.push(id);
    }
}

impl Metadata {
    /// Applies a document: `complete` replaces the state, `partial` merges by id (participants,
    /// streams; send/recv lists replaced per participant when given; extensions appended).
    ///
    /// "Given" means non-empty: the model cannot tell an absent `<send>` from none at all, and
    /// dropping a participant's streams on a partial update that did not mention them would lose
    /// the label to participant mapping mid-call.
    pub fn apply(&mut self, doc: MetadataDoc) {
        match doc.data_mode {
            DataMode::Complete => {
                *self = Metadata {
                    session_id: doc.session_id,
                    participants: doc.participants,
                    streams: doc.streams,
                    extensions: doc.extensions,
                };
            }
            DataMode::Partial => {
                if doc.session_id.is_some() {
                    self.session_id = doc.session_id;
                }
                for new in doc.participants {
                    match self.participants.iter_mut().find(|p| p.id == new.id) {
                        Some(old) => {
                            if new.aor.is_some() {
                                old.aor = new.aor;
                            }
                            if new.name.is_some() {
                                old.name = new.name;
                            }
                            if !new.send.is_empty() {
                                old.send = new.send;
                            }
                            if !new.recv.is_empty() {
                                old.recv = new.recv;
                            }
                        }
                        None => self.participants.push(new),
                    }
                }
                for new in doc.streams {
                    match self.streams.iter_mut().find(|s| s.id == new.id) {
                        Some(old) => {
                            if new.label.is_some() {
                                old.label = new.label;
                            }
                        }
                        None => self.streams.push(new),
                    }
                }
                self.extensions.extend(doc.extensions);
            }
        }
    }

    /// The participant that sends the stream labelled `label` (via the stream's id).
    pub fn sender_of_label(&self, label: &str) -> Option<&Participant> {
        let label = label.trim();
        self.streams
            .iter()
            .filter(|s| s.label.as_deref() == Some(label))
            .find_map(|s| self.participants.iter().find(|p| p.send.contains(&s.id)))
    }

    /// Problems worth recording, never a rejection: a metadata stream label with no SDP stream,
    /// an SDP label with no metadata stream, a stream no participant sends.
    pub fn warnings(&self, sdp_labels: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        for s in &self.streams {
            match &s.label {
                Some(label) if !sdp_labels.iter().any(|l| l.trim() == label) => {
                    out.push(format!(
                        "metadata stream label \"{label}\" has no SDP stream"
                    ));
                }
                Some(_) => {}
                None => out.push(format!("stream \"{}\" has no label", s.id)),
            }
        }
        for label in sdp_labels {
            if !self
                .streams
                .iter()
                .any(|s| s.label.as_deref() == Some(label.trim()))
            {
                out.push(format!(
                    "SDP stream label \"{label}\" has no metadata stream"
                ));
            }
        }
        for s in &self.streams {
            if !self.participants.iter().any(|p| p.send.contains(&s.id)) {
                out.push(format!("stream \"{}\" has no sending participant", s.id));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(xml: &str) -> MetadataDoc {
        parse_metadata(xml.as_bytes(), &Limits::default()).unwrap()
    }

    fn parse_err(xml: &str) -> BodyError {
        parse_metadata(xml.as_bytes(), &Limits::default()).unwrap_err()
    }

    const RFC7865: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<recording xmlns='urn:ietf:params:xml:ns:recording:1'>
  <datamode>complete</datamode>
  <session session_id="S1==">
    <sipSessionID>abc;remote=def</sipSessionID>
  </session>
  <participant participant_id="PA">
    <nameID aor="sip:alice@example.com">
      <name xml:lang="it">Alice</name>
    </nameID>
  </participant>
  <participant participant_id="PB">
    <nameID aor="sip:bob@example.com"><name xml:lang="it">Bob</name></nameID>
  </participant>
  <stream stream_id="SA" session_id="S1=="><label>96</label></stream>
  <stream stream_id="SB" session_id="S1=="><label>98</label></stream>
  <participantstreamassoc participant_id="PA">
    <send>SA</send>
    <recv>SB</recv>
  </participantstreamassoc>
  <participantstreamassoc participant_id="PB">
    <send>SB</send>
    <recv>SA</recv>
  </participantstreamassoc>
</recording>"#;

    #[test]
    fn rfc7865_participant_stream_assoc() {
        let doc = parse(RFC7865);
        assert_eq!(doc.data_mode, DataMode::Complete);
        assert_eq!(doc.session_id.as_deref(), Some("S1=="));
        assert_eq!(doc.participants.len(), 2);
        let a = &doc.participants[0];
        assert_eq!(a.id, "PA");
        assert_eq!(a.aor.as_deref(), Some("sip:alice@example.com"));
        assert_eq!(a.name.as_deref(), Some("Alice"));
        assert_eq!(a.send, ["SA"]);
        assert_eq!(a.recv, ["SB"]);
        assert_eq!(
            doc.streams,
            [
                StreamInfo {
                    id: "SA".into(),
                    label: Some("96".into())
                },
                StreamInfo {
                    id: "SB".into(),
                    label: Some("98".into())
                },
            ]
        );
    }

    #[test]
    fn assoc_before_participant_still_merges() {
        let doc = parse(
            "<recording xmlns='urn:ietf:params:xml:ns:recording:1'>\
             <participantstreamassoc participant_id='P'><send>S</send></participantstreamassoc>\
             <participant participant_id='P'><nameID aor='sip:p@x'/></participant>\
             </recording>",
        );
        assert_eq!(doc.participants.len(), 1);
        assert_eq!(doc.participants[0].send, ["S"]);
        assert_eq!(doc.participants[0].aor.as_deref(), Some("sip:p@x"));
    }

    #[test]
    fn acme_old_namespace_with_id_attributes() {
        let doc = parse(
            r#"<?xml version='1.0' encoding='UTF-8'?>
<recording xmlns='urn:ietf:params:xml:ns:recording'>
	<datamode>complete</datamode>
	<session id="SESS"><associate-time>2020-01-01T00:00:00</associate-time></session>
	<participant id="P1" session="SESS">
		<nameID aor="sip:100@192.0.2.5"><name>100</name></nameID>
		<send>ST1</send>
		<associate-time>2020-01-01T00:00:00</associate-time>
		<extensiondata xmlns:apkt="http://acmepacket.com/siprec/extensiondata">
			<apkt:callingParty>true</apkt:callingParty>
		</extensiondata>
	</participant>
	<stream id="ST1" session="SESS"><label>1677</label><mode>separate</mode></stream>
</recording>"#,
        );
        assert_eq!(doc.session_id.as_deref(), Some("SESS"));
        let p = &doc.participants[0];
        assert_eq!((p.id.as_str(), p.name.as_deref()), ("P1", Some("100")));
        assert_eq!(p.send, ["ST1"]);
        assert_eq!(
            doc.streams[0],
            StreamInfo {
                id: "ST1".into(),
                label: Some("1677".into())
            }
        );
        assert_eq!(doc.extensions.len(), 1);
        assert!(doc.extensions[0].starts_with("<extensiondata xmlns:apkt="));
        assert!(doc.extensions[0].ends_with("</extensiondata>"));
    }

    #[test]
    fn old_namespace_assoc_with_id_attribute() {
        let doc = parse(
            "<recording xmlns='urn:ietf:params:xml:ns:recording'>\
             <participant id='P'/><participantstreamassoc id='P'><send>S</send><recv>R</recv></participantstreamassoc>\
             </recording>",
        );
        assert_eq!(doc.participants[0].send, ["S"]);
        assert_eq!(doc.participants[0].recv, ["R"]);
    }

    #[test]
    fn metaswitch_mixed_stream_id_and_participant_id() {
        let doc = parse(
            "<recording id='R' xmlns='urn:ietf:params:xml:ns:recording'>\
             <datamode>complete</datamode>\
             <session session_id='S'/>\
             <participant participant_id='P'><nameID aor='760'><name>760</name></nameID></participant>\
             <participantstreamassoc participant_id='P'><send>X</send><recv>X</recv></participantstreamassoc>\
             <stream id='X' session_id='S'><label>1</label></stream>\
             <extensiondata><vendorMeta><callType>terminating</callType></vendorMeta></extensiondata>\
             </recording>",
        );
        assert_eq!(doc.session_id.as_deref(), Some("S"));
        assert_eq!(doc.participants[0].send, ["X"]);
        assert_eq!(doc.streams[0].id, "X");
        assert_eq!(
            doc.extensions,
            [
                "<extensiondata><vendorMeta><callType>terminating</callType></vendorMeta></extensiondata>"
            ]
        );
    }

    #[test]
    fn broadworks_send_id() {
        let doc = parse(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<recording_metadata xmlns="urn:ietf:params:xml:ns:siprec">
<dataMode>complete</dataMode>
<recording id="urn:uuid:r"><requestor>SRC</requestor><type>selective</type></recording>
<session id="urn:uuid:s" group="urn:uuid:g"><start-time>2021-01-01T00:00:00+00:00</start-time></session>
<participant id="urn:uuid:p1" session="urn:uuid:s">
<aor>sip:1000@example.com</aor>
<send>
<id>urn:uuid:st1</id>
</send>
</participant>
<stream id="urn:uuid:st1" session="urn:uuid:s"><label>1</label><mode>mixed</mode></stream>
</recording_metadata>"#,
        );
        assert_eq!(doc.session_id.as_deref(), Some("urn:uuid:s"));
        let p = &doc.participants[0];
        assert_eq!(p.id, "urn:uuid:p1");
        assert_eq!(p.aor.as_deref(), Some("sip:1000@example.com"));
        assert_eq!(p.send, ["urn:uuid:st1"]);
        assert_eq!(doc.streams[0].label.as_deref(), Some("1"));
    }

    #[test]
    fn participant_id_element_and_direct_name() {
        let doc = parse(
            "<recording><participant><id>P9</id><name>Carol</name><aor>sip:c@x</aor></participant></recording>",
        );
        let p = &doc.participants[0];
        assert_eq!(
            (p.id.as_str(), p.name.as_deref(), p.aor.as_deref()),
            ("P9", Some("Carol"), Some("sip:c@x"))
        );
    }

    #[test]
    fn nameid_aor_element() {
        let doc = parse(
            "<recording><participant id='P'><nameID><aor>sip:d@x</aor></nameID></participant></recording>",
        );
        assert_eq!(doc.participants[0].aor.as_deref(), Some("sip:d@x"));
    }

    #[test]
    fn blank_name_is_none() {
        let doc = parse(
            "<recording><participant id='P'><nameID aor='a'><name xml:lang='en'> </name></nameID></participant></recording>",
        );
        assert_eq!(doc.participants[0].name, None);
    }

    #[test]
    fn prefix_does_not_matter() {
        let doc = parse(
            "<tns:recording xmlns:tns='urn:ietf:params:xml:ns:recording'>\
             <tns:datamode>partial</tns:datamode>\
             <tns:session session_id='S'/>\
             <tns:participant participant_id='P'><tns:nameID aor='a@b'><tns:name>Ext</tns:name></tns:nameID></tns:participant>\
             <tns:stream stream_id='X'><tns:label>2</tns:label></tns:stream>\
             <tns:participantstreamassoc participant_id='P'><tns:send>X</tns:send></tns:participantstreamassoc>\
             </tns:recording>",
        );
        assert_eq!(doc.data_mode, DataMode::Partial);
        assert_eq!(doc.participants[0].name.as_deref(), Some("Ext"));
        assert_eq!(doc.participants[0].send, ["X"]);
        assert_eq!(doc.streams[0].label.as_deref(), Some("2"));
        assert!(doc.extensions.is_empty());
    }

    #[test]
    fn undeclared_prefix_reads_as_ours() {
        let doc = parse(
            "<x:recording><x:stream x:stream_id='S'><x:label>1</x:label></x:stream></x:recording>",
        );
        assert_eq!(doc.streams[0].id, "S");
    }

    #[test]
    fn data_mode_is_case_insensitive_and_defaults_complete() {
        assert_eq!(
            parse("<recording><dataMode>PARTIAL</dataMode></recording>").data_mode,
            DataMode::Partial
        );
        assert_eq!(parse("<recording/>").data_mode, DataMode::Complete);
        assert_eq!(
            parse("<recording><datamode>bogus</datamode></recording>").data_mode,
            DataMode::Complete
        );
    }

    #[test]
    fn extensions_kept_verbatim() {
        let ext1 = "<callData xmlns='urn:ietf:params:xml:ns:callData'>\n  <fromhdr>&lt;sip:a@b&gt;;tag=1</fromhdr>\n</callData>";
        let ext2 = "<my:data xmlns:my='http://example.com/my'><my:x a=\"1\"/></my:data>";
        let ext3 = "<extensiondata id='e' parent='s'><bw xmlns='http://example.com/bw' version='1.0'><a>1</a></bw></extensiondata>";
        let doc = parse(&format!(
            "<recording xmlns='urn:ietf:params:xml:ns:recording:1'><group group_id='g'>{ext1}</group>\
             <participant participant_id='P'>{ext2}</participant>{ext3}<empty xmlns='urn:other'/></recording>"
        ));
        assert_eq!(
            doc.extensions,
            [ext1, ext2, ext3, "<empty xmlns='urn:other'/>"]
        );
        assert_eq!(doc.participants.len(), 1);
    }

    #[test]
    fn elements_inside_extension_are_not_model() {
        let doc = parse(
            "<recording><extensiondata><participant participant_id='FAKE'/><stream stream_id='F'/></extensiondata></recording>",
        );
        assert!(doc.participants.is_empty());
        assert!(doc.streams.is_empty());
        assert_eq!(doc.extensions.len(), 1);
    }

    #[test]
    fn extension_not_utf8_is_lossy() {
        let mut xml = b"<recording><extensiondata>caf".to_vec();
        xml.push(0xE9);
        xml.extend_from_slice(b"</extensiondata></recording>");
        let doc = parse_metadata(&xml, &Limits::default()).unwrap();
        assert_eq!(
            doc.extensions,
            ["<extensiondata>caf\u{FFFD}</extensiondata>"]
        );
    }

    #[test]
    fn doctype_is_rejected() {
        let err = parse_err(
            "<?xml version='1.0'?><!DOCTYPE recording SYSTEM 'http://x/r.dtd'><recording/>",
        );
        assert_eq!(err, BodyError::Refused("metadata: DTD not allowed".into()));
    }

    #[test]
    fn billion_laughs_rejected() {
        let xml = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<recording><participant participant_id="&lol3;"/></recording>"#;
        assert_eq!(parse_err(xml).reason(), "metadata: DTD not allowed");
    }

    #[test]
    fn entity_declaration_alone_rejected() {
        assert_eq!(
            parse_err("<recording><!ENTITY x 'y'></recording>").reason(),
            "metadata: DTD not allowed"
        );
    }

    #[test]
    fn unknown_entity_kept_raw() {
        let doc = parse(
            "<recording><participant participant_id='a&foo;b'><name>x&bar;y&amp;&#65;</name></participant></recording>",
        );
        assert_eq!(doc.participants[0].name.as_deref(), Some("x&bar;y&A"));
        assert!(doc.participants[0].id.starts_with('a'));
    }

    #[test]
    fn size_limit() {
        let limits = Limits {
            max_bytes: 64,
            max_depth: 32,
        };
        let xml = format!("<recording>{}</recording>", " ".repeat(64));
        let err = parse_metadata(xml.as_bytes(), &limits).unwrap_err();
        assert!(matches!(err, BodyError::TooLarge(_)));
        assert_eq!(err.status(), 413);
    }

    #[test]
    fn depth_limit() {
        let limits = Limits {
            max_bytes: 1 << 20,
            max_depth: 8,
        };
        let ok = format!(
            "<recording>{}{}</recording>",
            "<a>".repeat(7),
            "</a>".repeat(7)
        );
        assert!(parse_metadata(ok.as_bytes(), &limits).is_ok());
        let deep = format!(
            "<recording>{}{}</recording>",
            "<a>".repeat(8),
            "</a>".repeat(8)
        );
        let err = parse_metadata(deep.as_bytes(), &limits).unwrap_err();
        assert!(
            matches!(err, BodyError::Refused(ref r) if r.contains("deeper")),
            "{err:?}"
        );
    }

    #[test]
    fn depth_limit_inside_extension() {
        let limits = Limits {
            max_bytes: 1 << 20,
            max_depth: 4,
        };
        let deep = "<recording><extensiondata><a><b><c/></b></a></extensiondata></recording>";
        assert!(parse_metadata(deep.as_bytes(), &limits).is_err());
    }

    #[test]
    fn trailing_junk_after_root_is_ignored() {
        let doc =
            parse("<recording><stream stream_id='S'/></recording>\r\n--boundary junk <<<& </x>");
        assert_eq!(doc.streams.len(), 1);
    }

    #[test]
    fn mismatched_tag_names_problem() {
        let err = parse_err(
            "<recording>\n<participant participant_id='p'><nameID><naXme>A</name></nameID></participant></recording>",
        );
        let reason = err.reason();
        assert!(
            reason.starts_with("metadata: mismatched tag </name> at byte "),
            "{reason}"
        );
    }

    #[test]
    fn truncated_document_is_malformed() {
        let err = parse_err("<recording><participant participant_id='p'>");
        assert!(matches!(err, BodyError::Malformed(_)));
        assert!(err.reason().starts_with("metadata:"), "{}", err.reason());
    }

    #[test]
    fn empty_document_is_malformed() {
        assert_eq!(parse_err("").reason(), "metadata: no root element");
        assert_eq!(
            parse_err("  <?xml version='1.0'?>\n").reason(),
            "metadata: no root element"
        );
    }

    #[test]
    fn text_without_tags_is_malformed() {
        assert!(matches!(
            parse_err("completeSRCselective"),
            BodyError::Malformed(_)
        ));
    }

    #[test]
    fn wrong_root_is_malformed() {
        assert!(
            parse_err("<html><body/></html>")
                .reason()
                .contains("<html>")
        );
    }

    #[test]
    fn bad_attribute_is_malformed() {
        assert!(matches!(
            parse_err("<recording><stream stream_id=S/></recording>"),
            BodyError::Malformed(_)
        ));
    }

    #[test]
    fn byte_order_mark_is_tolerated() {
        let doc = parse("\u{FEFF}<?xml version='1.0'?><recording><stream id='S'/></recording>");
        assert_eq!(doc.streams.len(), 1);
    }

    #[test]
    fn empty_root_is_a_document() {
        assert_eq!(parse("<recording/> trailing").streams.len(), 0);
    }

    #[test]
    fn cdata_text_is_read() {
        let doc =
            parse("<recording><stream id='S'><label><![CDATA[7]]></label></stream></recording>");
        assert_eq!(doc.streams[0].label.as_deref(), Some("7"));
    }

    fn participant(id: &str, aor: &str, send: &[&str]) -> Participant {
        Participant {
            id: id.into(),
            aor: Some(aor.into()),
            name: None,
            send: send.iter().map(|s| s.to_string()).collect(),
            recv: vec![],
        }
    }

    fn stream(id: &str, label: &str) -> StreamInfo {
        StreamInfo {
            id: id.into(),
            label: Some(label.into()),
        }
    }

    fn state() -> Metadata {
        let mut m = Metadata::default();
        m.apply(MetadataDoc {
            data_mode: DataMode::Complete,
            session_id: Some("S".into()),
            participants: vec![
                participant("A", "sip:a@x", &["s1"]),
                participant("B", "sip:b@x", &["s2"]),
            ],
            streams: vec![stream("s1", "1"), stream("s2", "2")],
            extensions: vec!["<e1/>".into()],
        });
        m
    }

    #[test]
    fn complete_update_replaces() {
        let mut m = state();
        m.apply(MetadataDoc {
            data_mode: DataMode::Complete,
            session_id: None,
            participants: vec![participant("C", "sip:c@x", &["s3"])],
            streams: vec![stream("s3", "3")],
            extensions: vec![],
        });
        assert_eq!(m.session_id, None);
        assert_eq!(m.participants.len(), 1);
        assert_eq!(m.participants[0].id, "C");
        assert_eq!(m.streams, [stream("s3", "3")]);
        assert!(m.extensions.is_empty());
    }

    #[test]
    fn partial_update_merges_participants() {
        let mut m = state();
        let mut b = participant("B", "sip:b2@x", &["s9"]);
        b.name = Some("Bee".into());
        m.apply(MetadataDoc {
            data_mode: DataMode::Partial,
            session_id: None,
            participants: vec![b, participant("C", "sip:c@x", &[])],
            streams: vec![
                stream("s9", "9"),
                StreamInfo {
                    id: "s1".into(),
                    label: None,
                },
            ],
            extensions: vec!["<e2/>".into()],
        });
        assert_eq!(m.session_id.as_deref(), Some("S"));
        let ids: Vec<_> = m.participants.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["A", "B", "C"]);
        assert_eq!(m.participants[0].send, ["s1"]);
        assert_eq!(m.participants[1].send, ["s9"]);
        assert_eq!(m.participants[1].aor.as_deref(), Some("sip:b2@x"));
        assert_eq!(m.participants[1].name.as_deref(), Some("Bee"));
        assert_eq!(
            m.streams,
            [stream("s1", "1"), stream("s2", "2"), stream("s9", "9")]
        );
        assert_eq!(m.extensions, ["<e1/>", "<e2/>"]);
    }

    #[test]
    fn partial_without_send_keeps_streams() {
        let mut m = state();
        m.apply(MetadataDoc {
            data_mode: DataMode::Partial,
            participants: vec![Participant {
                id: "A".into(),
                ..Participant::default()
            }],
            ..MetadataDoc::default()
        });
        assert_eq!(m.participants[0].send, ["s1"]);
        assert_eq!(m.participants[0].aor.as_deref(), Some("sip:a@x"));
    }

    #[test]
    fn sender_of_label_follows_stream_id() {
        let m = state();
        assert_eq!(m.sender_of_label("2").map(|p| p.id.as_str()), Some("B"));
        assert_eq!(m.sender_of_label("1").map(|p| p.id.as_str()), Some("A"));
        assert!(m.sender_of_label("7").is_none());
    }

    #[test]
    fn sender_of_label_from_parsed_rfc7865() {
        let mut m = Metadata::default();
        m.apply(parse(RFC7865));
        assert_eq!(
            m.sender_of_label("98").and_then(|p| p.name.as_deref()),
            Some("Bob")
        );
    }

    #[test]
    fn warnings_name_each_problem() {
        let mut m = state();
        m.streams.push(stream("s3", "3"));
        let w = m.warnings(&["1".to_string(), "2".to_string(), "4".to_string()]);
        assert_eq!(
            w,
            [
                "metadata stream label \"3\" has no SDP stream",
                "SDP stream label \"4\" has no metadata stream",
                "stream \"s3\" has no sending participant",
            ]
        );
    }

    #[test]
    fn no_warnings_when_consistent() {
        assert!(
            state()
                .warnings(&["1".to_string(), "2".to_string()])
                .is_empty()
        );
    }
}
