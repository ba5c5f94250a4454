//! Recording metadata into one model: RFC 7865 (`urn:ietf:params:xml:ns:recording:1`), the older
//! `urn:ietf:params:xml:ns:recording` namespace with `id=` attributes (Oracle/Acme, Metaswitch),
//! the BroadWorks draft schema (`recording_metadata`, `dataMode`, `send/id`), any prefix.
//! `complete` documents replace, `partial` ones merge. Vendor extensions are kept verbatim.
//! No DTD, no entities, bounded size and depth.

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

pub struct Limits {
    pub max_bytes: usize,
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_bytes: 256 * 1024, max_depth: 32 }
    }
}

/// Parses one document. DOCTYPE/entity declarations, over-size and over-deep documents are
/// errors; trailing junk after the root element is ignored.
pub fn parse_metadata(xml: &[u8], limits: &Limits) -> Result<MetadataDoc, BodyError> {
    let _ = (xml, limits);
    todo!()
}

impl Metadata {
    /// Applies a document: `complete` replaces the state, `partial` merges by id (participants,
    /// streams; send/recv lists replaced per participant when given; extensions appended).
    pub fn apply(&mut self, doc: MetadataDoc) {
        let _ = doc;
        todo!()
    }
    /// The participant that sends the stream labelled `label` (via the stream's id).
    pub fn sender_of_label(&self, label: &str) -> Option<&Participant> {
        let _ = label;
        todo!()
    }
    /// Problems worth recording, never a rejection: a metadata stream label with no SDP stream,
    /// an SDP label with no metadata stream, a stream no participant sends.
    pub fn warnings(&self, sdp_labels: &[String]) -> Vec<String> {
        let _ = sdp_labels;
        todo!()
    }
}
