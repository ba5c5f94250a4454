//! UAS dialogs (RFC 3261 §12): what Reel needs to check in-dialog requests and to send its own
//! requests (BYE) in a dialog it accepted.

use super::header::{CSeq, NameAddr, uri_param};
use super::message::{Method, Request, Response};
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

fn bad_request(reason: &str) -> DialogError {
    DialogError {
        status: 400,
        reason: reason.to_string(),
    }
}

/// A From/To value re-encoded without its tag, as the dialog's local or remote URI.
fn without_tag(mut addr: NameAddr) -> String {
    addr.remove_param("tag");
    addr.to_header_value()
}

/// The URI of the first Contact of a request (not `*`).
fn contact_uri(request: &Request) -> Option<String> {
    let first = request.headers.get_list("Contact").into_iter().next()?;
    if first.trim() == "*" {
        return None;
    }
    NameAddr::parse(&first).ok().map(|a| a.uri)
}

impl Dialog {
    /// Builds the UAS dialog for an initial INVITE answered with a 2xx carrying `local_tag`.
    /// Fails (400) when the request has no From tag or no usable Contact.
    pub fn new_uas(request: &Request, local_tag: &str, flow: Flow) -> Result<Dialog, DialogError> {
        let call_id = request
            .call_id()
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .ok_or_else(|| bad_request("Missing Call-ID"))?;
        let from = request
            .headers
            .get("From")
            .and_then(|v| NameAddr::parse(v).ok())
            .ok_or_else(|| bad_request("Invalid From header"))?;
        let remote_tag = from
            .tag()
            .ok_or_else(|| bad_request("Missing From tag"))?
            .to_string();
        let to = request
            .headers
            .get("To")
            .and_then(|v| NameAddr::parse(v).ok())
            .ok_or_else(|| bad_request("Invalid To header"))?;
        let remote_target = contact_uri(request).ok_or_else(|| bad_request("Missing Contact"))?;
        let cseq = request
            .headers
            .get("CSeq")
            .and_then(|v| CSeq::parse(v).ok())
            .ok_or_else(|| bad_request("Invalid CSeq header"))?;
        Ok(Dialog {
            call_id: call_id.to_string(),
            local_tag: local_tag.to_string(),
            remote_tag,
            local_uri: without_tag(to),
            remote_uri: without_tag(from),
            remote_target,
            // §12.1.1: the UAS keeps the Record-Route values in the order received.
            route_set: request.headers.get_list("Record-Route"),
            remote_seq: cseq.seq,
            // §12.1.1 leaves the UAS's local sequence empty; our first request uses 1.
            local_seq: 0,
            flow,
        })
    }

    /// Checks an in-dialog request's CSeq (§12.2.2: lower than the last one -> 500) and, for
    /// target-refresh requests (re-INVITE, UPDATE), takes the new Contact.
    pub fn on_request(&mut self, request: &Request) -> Result<(), DialogError> {
        // ACK and CANCEL reuse the CSeq number of the request they belong to.
        if matches!(request.method, Method::Ack | Method::Cancel) {
            return Ok(());
        }
        let cseq = request
            .headers
            .get("CSeq")
            .and_then(|v| CSeq::parse(v).ok())
            .ok_or_else(|| bad_request("Invalid CSeq header"))?;
        // Equal is refused too: a retransmission never gets here (the transaction layer absorbs
        // it), so a new request with the same number is out of order.
        if cseq.seq <= self.remote_seq {
            return Err(DialogError {
                status: 500,
                reason: "CSeq out of order".to_string(),
            });
        }
        self.remote_seq = cseq.seq;
        if matches!(request.method, Method::Invite | Method::Update) {
            if let Some(target) = contact_uri(request) {
                self.remote_target = target;
            }
        }
        Ok(())
    }

    /// A new in-dialog request from Reel (BYE ...), without Via (the endpoint adds it).
    pub fn make_request(&mut self, method: super::Method) -> Request {
        self.local_seq = self.local_seq.wrapping_add(1) & 0x7fff_ffff;
        let mut headers = super::Headers::new();
        // §12.2.1.1: with a loose router first (`lr`), the Request-URI is the remote target and
        // the route set goes into Route as is; a strict router gets the Request-URI instead.
        let first_route_uri = self
            .route_set
            .first()
            .and_then(|r| NameAddr::parse(r).ok())
            .map(|a| a.uri);
        let uri = match first_route_uri {
            Some(first) if uri_param(&first, "lr").is_none() => {
                let strict_uri = first.split('?').next().unwrap_or(&first).to_string();
                for route in self.route_set.iter().skip(1) {
                    headers.push("Route", route.clone());
                }
                headers.push("Route", format!("<{}>", self.remote_target));
                strict_uri
            }
            _ => {
                for route in &self.route_set {
                    headers.push("Route", route.clone());
                }
                self.remote_target.clone()
            }
        };
        headers.push("Max-Forwards", "70");
        headers.push("From", format!("{};tag={}", self.local_uri, self.local_tag));
        headers.push("To", format!("{};tag={}", self.remote_uri, self.remote_tag));
        headers.push("Call-ID", self.call_id.clone());
        headers.push("CSeq", format!("{} {}", self.local_seq, method));
        headers.push("Content-Length", "0");
        Request {
            method,
            uri,
            headers,
            body: Vec::new(),
        }
    }

    /// Adds our To tag to a response for a request in this dialog (or the initial INVITE).
    pub fn tag_response(&self, response: &mut Response) {
        let Some(to) = response.headers.get("To") else {
            return;
        };
        match NameAddr::parse(to) {
            Ok(mut addr) => {
                if addr.tag().is_none() {
                    addr.set_param("tag", Some(self.local_tag.clone()));
                    response.headers.set("To", addr.to_header_value());
                }
            }
            Err(_) => {
                // Leave a header we cannot read as it is, apart from the tag we owe the peer.
                if !to.to_ascii_lowercase().contains("tag=") {
                    let value = format!("{to};tag={}", self.local_tag);
                    response.headers.set("To", value);
                }
            }
        }
    }
}
