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
    match NameAddr::parse(&first) {
        Ok(a) => Some(a.uri),
        // Tolerated: a `<` never closed (`Contact: <sip:src@host:5060;+sip.src`, as in
        // Metaswitch-style SIPp scripts): the address runs to the end of the value.
        Err(_) if first.contains('<') && !first.contains('>') => {
            NameAddr::parse(&format!("{}>", first.trim_end()))
                .ok()
                .map(|a| a.uri)
        }
        Err(_) => None,
    }
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
        let remote_target = contact_uri(request).ok_or_else(|| {
            if request.headers.get("Contact").is_some() {
                bad_request("Invalid Contact header")
            } else {
                bad_request("Missing Contact")
            }
        })?;
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
        // it), so a new request with the same number is out of order. Except for a BYE: there
        // is one per dialog and it can only mean the end, so a BYE whose number went backwards
        // (an SRC script's typo, as in MiaRec's Webex conference scenario) still ends the
        // recording rather than leave it running with a 500.
        if cseq.seq <= self.remote_seq && request.method != Method::Bye {
            return Err(DialogError {
                status: 500,
                reason: "CSeq out of order".to_string(),
            });
        }
        self.remote_seq = self.remote_seq.max(cseq.seq);
        if matches!(request.method, Method::Invite | Method::Update)
            && let Some(target) = contact_uri(request)
        {
            self.remote_target = target;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{Message, parse_message};
    use crate::sip::transaction::Transport;

    fn flow() -> Flow {
        Flow {
            transport: Transport::Udp,
            local: "10.0.0.1:5060".parse().unwrap(),
            remote: "192.0.2.5:5060".parse().unwrap(),
            conn: None,
        }
    }

    fn invite(extra: &str) -> Request {
        let text = format!(
            "INVITE sip:srs@10.0.0.1 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 192.0.2.5;branch=z9hG4bK1\r\n\
             From: \"Src\" <sip:src@192.0.2.5>;tag=rem\r\n\
             To: <sip:srs@10.0.0.1>\r\n\
             Call-ID: c1\r\n\
             CSeq: 10 INVITE\r\n\
             Contact: <sip:src@192.0.2.5:5070;transport=udp>;+sip.src\r\n\
             {extra}\
             Content-Length: 0\r\n\r\n"
        );
        match parse_message(text.as_bytes()) {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    fn in_dialog(method: &str, cseq: u32, contact: Option<&str>) -> Request {
        let mut r = invite("");
        r.method = Method::parse(method);
        r.headers.set("CSeq", format!("{cseq} {method}"));
        r.headers.remove("Contact");
        if let Some(c) = contact {
            r.headers.push("Contact", c);
        }
        r
    }

    #[test]
    fn new_uas_takes_ids_target_and_seq() {
        let d = Dialog::new_uas(&invite(""), "loc", flow()).unwrap();
        assert_eq!(d.call_id, "c1");
        assert_eq!(
            (d.local_tag.as_str(), d.remote_tag.as_str()),
            ("loc", "rem")
        );
        assert_eq!(d.local_uri, "<sip:srs@10.0.0.1>");
        assert_eq!(d.remote_uri, "\"Src\" <sip:src@192.0.2.5>");
        assert_eq!(d.remote_target, "sip:src@192.0.2.5:5070;transport=udp");
        assert_eq!(d.remote_seq, 10);
        assert!(d.route_set.is_empty());
    }

    #[test]
    fn route_set_keeps_record_route_order() {
        let req = invite("Record-Route: <sip:p1;lr>, <sip:p2;lr>\r\nRecord-Route: <sip:p3;lr>\r\n");
        let d = Dialog::new_uas(&req, "loc", flow()).unwrap();
        assert_eq!(d.route_set, ["<sip:p1;lr>", "<sip:p2;lr>", "<sip:p3;lr>"]);
    }

    #[test]
    fn missing_from_tag_or_contact_is_400() {
        let mut req = invite("");
        req.headers.set("From", "<sip:src@192.0.2.5>");
        assert_eq!(Dialog::new_uas(&req, "l", flow()).unwrap_err().status, 400);
        let mut req = invite("");
        req.headers.remove("Contact");
        assert_eq!(Dialog::new_uas(&req, "l", flow()).unwrap_err().status, 400);
        let mut req = invite("");
        req.headers.set("Contact", "*");
        assert_eq!(Dialog::new_uas(&req, "l", flow()).unwrap_err().status, 400);
    }

    #[test]
    fn a_contact_whose_angle_bracket_is_never_closed_is_taken_to_its_end() {
        let mut req = invite("");
        req.headers
            .set("Contact", "<sip:7602922410@192.0.2.5:5070;+sip.src");
        let d = Dialog::new_uas(&req, "l", flow()).unwrap();
        assert_eq!(d.remote_target, "sip:7602922410@192.0.2.5:5070;+sip.src");
        // Garbage is still garbage.
        req.headers.set("Contact", "<>");
        assert_eq!(Dialog::new_uas(&req, "l", flow()).unwrap_err().status, 400);
    }

    #[test]
    fn lower_or_equal_cseq_is_500_out_of_order() {
        let mut d = Dialog::new_uas(&invite(""), "loc", flow()).unwrap();
        for seq in [9, 10] {
            let err = d.on_request(&in_dialog("UPDATE", seq, None)).unwrap_err();
            assert_eq!(
                (err.status, err.reason.as_str()),
                (500, "CSeq out of order")
            );
        }
        assert_eq!(d.on_request(&in_dialog("UPDATE", 11, None)), Ok(()));
        assert_eq!(d.remote_seq, 11);
        // A BYE ends the dialog whatever its number: one that went backwards is taken.
        assert_eq!(d.on_request(&in_dialog("BYE", 5, None)), Ok(()));
        assert_eq!(d.remote_seq, 11, "the highest number stays");
    }

    #[test]
    fn ack_and_cancel_skip_the_cseq_check() {
        let mut d = Dialog::new_uas(&invite(""), "loc", flow()).unwrap();
        assert_eq!(d.on_request(&in_dialog("ACK", 10, None)), Ok(()));
        assert_eq!(d.remote_seq, 10);
    }

    #[test]
    fn target_refresh_updates_remote_target() {
        let mut d = Dialog::new_uas(&invite(""), "loc", flow()).unwrap();
        d.on_request(&in_dialog("UPDATE", 11, Some("<sip:new@192.0.2.9>")))
            .unwrap();
        assert_eq!(d.remote_target, "sip:new@192.0.2.9");
        d.on_request(&in_dialog("INFO", 12, Some("<sip:other@192.0.2.9>")))
            .unwrap();
        assert_eq!(
            d.remote_target, "sip:new@192.0.2.9",
            "INFO is no target refresh"
        );
        d.on_request(&in_dialog("INVITE", 13, None)).unwrap();
        assert_eq!(d.remote_target, "sip:new@192.0.2.9");
    }

    #[test]
    fn make_request_builds_in_dialog_bye() {
        let req = invite("Record-Route: <sip:p1.example;lr>, <sip:p2.example;lr>\r\n");
        let mut d = Dialog::new_uas(&req, "loc", flow()).unwrap();
        let bye = d.make_request(Method::Bye);
        assert_eq!(bye.uri, "sip:src@192.0.2.5:5070;transport=udp");
        let routes: Vec<&str> = bye.headers.get_all("Route").collect();
        assert_eq!(routes, ["<sip:p1.example;lr>", "<sip:p2.example;lr>"]);
        assert_eq!(bye.headers.get("From"), Some("<sip:srs@10.0.0.1>;tag=loc"));
        assert_eq!(
            bye.headers.get("To"),
            Some("\"Src\" <sip:src@192.0.2.5>;tag=rem")
        );
        assert_eq!(bye.headers.get("Call-ID"), Some("c1"));
        assert_eq!(bye.headers.get("CSeq"), Some("1 BYE"));
        assert_eq!(bye.headers.get("Max-Forwards"), Some("70"));
        assert_eq!(bye.headers.get("Content-Length"), Some("0"));
        assert!(bye.headers.get("Via").is_none());
        assert_eq!(
            d.make_request(Method::Bye).headers.get("CSeq"),
            Some("2 BYE")
        );
    }

    #[test]
    fn strict_router_gets_the_request_uri() {
        let req = invite("Record-Route: <sip:strict.example>, <sip:p2.example;lr>\r\n");
        let mut d = Dialog::new_uas(&req, "loc", flow()).unwrap();
        let bye = d.make_request(Method::Bye);
        assert_eq!(bye.uri, "sip:strict.example");
        let routes: Vec<&str> = bye.headers.get_all("Route").collect();
        assert_eq!(
            routes,
            [
                "<sip:p2.example;lr>",
                "<sip:src@192.0.2.5:5070;transport=udp>"
            ]
        );
    }

    #[test]
    fn tag_response_adds_our_tag_once() {
        let req = invite("");
        let d = Dialog::new_uas(&req, "loc", flow()).unwrap();
        let mut resp = Response::for_request(&req, 200, "");
        d.tag_response(&mut resp);
        assert_eq!(resp.headers.get("To"), Some("<sip:srs@10.0.0.1>;tag=loc"));
        d.tag_response(&mut resp);
        assert_eq!(resp.headers.get("To"), Some("<sip:srs@10.0.0.1>;tag=loc"));
    }
}
