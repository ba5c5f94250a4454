//! UAS dialogs (RFC 3261 §12): what Reel needs to check in-dialog requests and to send its own
//! requests (BYE) in a dialog it accepted.

use super::message::{Request, Response};
use super::transaction::Flow;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dialog {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
    /// Our URI (the To of the initial request) and theirs (its From), as header values without
    /// tags.
    pub local_uri: String,
    pub remote_uri: String,
    /// Remote target: the URI of the peer's Contact (updated by target-refresh requests).
    pub remote_target: String,
    /// Record-Route of the initial request, in order (UAS keeps it as is).
    pub route_set: Vec<String>,
    pub remote_seq: u32,
    pub local_seq: u32,
    /// Where in-dialog requests from Reel go.
    pub flow: Flow,
}

/// Why an in-dialog request is refused (with the status to answer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DialogError {
    pub status: u16,
    pub reason: String,
}

impl Dialog {
    /// Builds the UAS dialog for an initial INVITE answered with a 2xx carrying `local_tag`.
    /// Fails (400) when the request has no From tag or no usable Contact.
    pub fn new_uas(request: &Request, local_tag: &str, flow: Flow) -> Result<Dialog, DialogError> {
        let _ = (request, local_tag, flow);
        todo!()
    }

    /// Checks an in-dialog request's CSeq (§12.2.2: lower than the last one -> 500) and, for
    /// target-refresh requests (re-INVITE, UPDATE), takes the new Contact.
    pub fn on_request(&mut self, request: &Request) -> Result<(), DialogError> {
        let _ = request;
        todo!()
    }

    /// A new in-dialog request from Reel (BYE ...), without Via (the endpoint adds it).
    pub fn make_request(&mut self, method: super::Method) -> Request {
        let _ = method;
        todo!()
    }

    /// Adds our To tag to a response for a request in this dialog (or the initial INVITE).
    pub fn tag_response(&self, response: &mut Response) {
        let _ = response;
        todo!()
    }
}
