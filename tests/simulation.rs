//! Whole SIPREC calls through the sans-IO recorder with virtual time: retransmissions, CANCEL
//! races, BYE before ACK, re-INVITE with metadata, session timers, drain. No sockets.

mod common;

use std::time::Duration;

use common::sim::*;
use reel::control::{RecorderConfig, StorageOp};
use reel::record::RecordingState;

const T1: Duration = Duration::from_millis(500);

fn established(sim: &mut Sim, call_id: &str) -> String {
    sim.send(&siprec_invite(call_id, &format!("z9hG4bK-{call_id}-1")));
    let finals = sim.finals();
    assert_eq!(finals.len(), 1, "one final response");
    assert_eq!(finals[0].status, 200, "{}", finals[0].reason);
    let tag = to_tag(&finals[0]);
    sim.send(&request(
        "ACK",
        call_id,
        &format!("z9hG4bK-{call_id}-ack"),
        1,
        &tag,
        "",
        None,
        "",
    ));
    tag
}

fn bye(sim: &mut Sim, call_id: &str, tag: &str, cseq: u32) {
    sim.send(&request(
        "BYE",
        call_id,
        &format!("z9hG4bK-{call_id}-bye{cseq}"),
        cseq,
        tag,
        "",
        None,
        "",
    ));
}

#[test]
fn basic_call_answers_recvonly_and_finalizes_on_bye() {
    let mut sim = Sim::new();
    sim.send(&siprec_invite("basic", "z9hG4bK-basic-1"));
    let responses = sim.responses();
    assert_eq!(responses[0].status, 100, "100 Trying first");
    let ok = responses.iter().find(|r| r.status == 200).expect("200 OK");
    assert_eq!(ok.headers.get("Content-Type"), Some("application/sdp"));
    let answer = body(ok);
    assert_eq!(answer.matches("m=audio ").count(), 2, "{answer}");
    assert_eq!(answer.matches("a=recvonly").count(), 2, "{answer}");
    assert!(
        answer.contains("a=label:1") && answer.contains("a=label:2"),
        "{answer}"
    );
    assert!(ok.headers.get("Contact").unwrap_or("").contains("+sip.srs"));
    let tag = to_tag(ok);
    sim.send(&request(
        "ACK",
        "basic",
        "z9hG4bK-basic-ack",
        1,
        &tag,
        "",
        None,
        "",
    ));
    sim.run_for(Duration::from_secs(3));
    bye(&mut sim, "basic", &tag, 2);
    let finals = sim.finals();
    assert_eq!(
        finals.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![200]
    );
    let done = sim.finalized();
    assert_eq!(done.len(), 1);
    let m = &done[0];
    assert_eq!(m.call_id, "basic");
    assert_eq!(m.state, RecordingState::NoMedia);
    assert_eq!(m.end_reason, "bye");
    assert_eq!(m.session_id.as_deref(), Some("c2Vzc2lvbjE="));
    assert_eq!(m.participants.len(), 2);
    let labels: Vec<&str> = m.streams.iter().map(|s| s.label.as_str()).collect();
    assert_eq!(labels, vec!["1", "2"], "first participant's stream first");
    assert_eq!(m.streams[0].participant.as_deref(), Some("cGFydDE="));
    assert_eq!(m.streams[1].participant.as_deref(), Some("cGFydDI="));
    assert_eq!(m.streams[0].codec, "PCMU");
    let span = m.ended_at.duration_since(m.started_at).expect("ordered");
    assert_eq!(span, Duration::from_secs(3), "timeline spans 200 OK to BYE");
    assert!(sim.ports.borrow().is_empty(), "ports released");
    assert_eq!(sim.rec.session_count(), 0);
}

#[test]
fn invite_retransmission_creates_one_session() {
    let mut sim = Sim::new();
    sim.auto_store = false;
    let invite = siprec_invite("retx", "z9hG4bK-retx-1");
    sim.send(&invite);
    sim.send(&invite);
    sim.send(&invite);
    let begins = sim
        .storage
        .iter()
        .filter(|op| matches!(op, StorageOp::Begin { .. }))
        .count();
    assert_eq!(begins, 1, "retransmissions are absorbed by the transaction");
    assert!(sim.responses().iter().all(|r| r.status == 100));
    sim.ack_storage(true);
    assert_eq!(sim.finals().len(), 1);
    assert_eq!(sim.rec.session_count(), 1);
}

#[test]
fn the_same_invite_by_a_second_path_is_a_merged_request_482() {
    let mut sim = Sim::new();
    established(&mut sim, "forked");
    // Same Call-ID, From tag and CSeq, another branch: a forking proxy's second copy.
    sim.send(&siprec_invite("forked", "z9hG4bK-forked-other-path"));
    let r = sim.finals().pop().expect("answer");
    assert_eq!(r.status, 482, "{}", r.reason);
    assert_eq!(sim.rec.session_count(), 1, "recorded once");
    // A new CSeq from the same SRC is a new request, not a merge.
    let next =
        siprec_invite("forked", "z9hG4bK-forked-2").replace("CSeq: 1 INVITE", "CSeq: 2 INVITE");
    assert!(next.contains("CSeq: 2 INVITE"));
    sim.send(&next);
    assert_ne!(sim.finals().pop().expect("answer").status, 482);
}

#[test]
fn the_metadata_is_stored_before_the_begin_the_200_waits_for() {
    let mut sim = Sim::new();
    sim.auto_store = false;
    sim.send(&siprec_invite("meta-first", "z9hG4bK-meta-first-1"));
    let kinds: Vec<&str> = sim
        .storage
        .iter()
        .map(|op| match op {
            StorageOp::Metadata { .. } => "metadata",
            StorageOp::Begin { .. } => "begin",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["metadata", "begin"]);
}

#[test]
fn unacknowledged_200_is_retransmitted_then_session_ends_with_bye() {
    let mut sim = Sim::new();
    sim.send(&siprec_invite("noack", "z9hG4bK-noack-1"));
    assert_eq!(sim.finals().len(), 1);
    sim.run_for(T1 * 64 + Duration::from_millis(10));
    let retransmitted = sim.finals().iter().filter(|r| r.status == 200).count();
    // T1 doubling to T2 = 4 s inside 32 s: 0.5, 1, 2, 4, 4, 4 ... -> 10 retransmissions.
    assert!(
        (8..=11).contains(&retransmitted),
        "{retransmitted} retransmissions"
    );
    let byes = sim.requests();
    assert_eq!(byes.len(), 1, "Reel ends the dialog with BYE");
    assert_eq!(byes[0].method, reel::sip::Method::Bye);
    let done = sim.finalized();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].end_reason, "ack-timeout");
}

#[test]
fn an_ack_with_a_made_up_cseq_still_confirms_the_200_but_not_from_another_dialog() {
    let mut sim = Sim::new();
    sim.send(&siprec_invite("ackseq", "z9hG4bK-ackseq-1"));
    let tag = to_tag(&sim.finals()[0]);
    let ack = |cseq: u32, tag: &str, cseq_method: &str| {
        request(
            "ACK",
            "ackseq",
            "z9hG4bK-ackseq-ack",
            cseq,
            tag,
            "",
            None,
            "",
        )
        .replace(
            &format!("CSeq: {cseq} ACK"),
            &format!("CSeq: {cseq} {cseq_method}"),
        )
    };
    // Another dialog's To tag does not stop the retransmissions.
    sim.send(&ack(832_544_241, "not-reels-tag", "ACK"));
    sim.run_for(Duration::from_millis(600));
    assert_eq!(sim.finals().len(), 1, "still retransmitting the 200");
    // The right dialog with a made-up CSeq number, and its method written INVITE, does.
    sim.send(&ack(832_544_241, &tag, "INVITE"));
    sim.run_for(T1 * 64 + Duration::from_millis(10));
    assert!(sim.finals().is_empty(), "no retransmission after the ACK");
    assert!(sim.requests().is_empty(), "no BYE for want of an ACK");
    assert_eq!(sim.rec.session_count(), 1, "the recording goes on");
    // A BYE without the To tag, its CSeq naming INVITE, ends it.
    sim.send(
        &request("BYE", "ackseq", "z9hG4bK-ackseq-bye", 2, "", "", None, "")
            .replace("CSeq: 2 BYE", "CSeq: 2 INVITE"),
    );
    let r = sim.finals().pop().expect("answer");
    assert_eq!(r.status, 200, "{}", r.reason);
    assert_eq!(to_tag(&r), tag, "answered in the dialog");
    assert_eq!(sim.rec.session_count(), 0);
    assert_eq!(sim.finalized()[0].end_reason, "bye");
}

#[test]
fn a_bye_without_a_to_tag_ends_nothing_it_does_not_name_exactly() {
    let mut sim = Sim::new();
    established(&mut sim, "tagless");
    // Another From tag: not this recording's SRC.
    sim.send(
        &request("BYE", "tagless", "z9hG4bK-tagless-b1", 2, "", "", None, "")
            .replace("tag=srctag1", "tag=someone-else"),
    );
    assert_eq!(sim.finals().pop().expect("answer").status, 481);
    // Another Call-ID.
    sim.send(&request(
        "BYE",
        "other",
        "z9hG4bK-tagless-b2",
        2,
        "",
        "",
        None,
        "",
    ));
    assert_eq!(sim.finals().pop().expect("answer").status, 481);
    assert_eq!(sim.rec.session_count(), 1, "the recording goes on");
    // A request other than BYE is not taken into the dialog without its To tag.
    sim.send(&request(
        "INFO",
        "tagless",
        "z9hG4bK-tagless-i",
        3,
        "",
        "",
        None,
        "",
    ));
    assert_eq!(sim.finals().pop().expect("answer").status, 481);
    sim.send(&request(
        "BYE",
        "tagless",
        "z9hG4bK-tagless-b3",
        4,
        "",
        "",
        None,
        "",
    ));
    assert_eq!(sim.finals().pop().expect("answer").status, 200);
    assert_eq!(sim.rec.session_count(), 0);
}

#[test]
fn cancel_before_answer_gets_487_and_a_cancelled_record() {
    let mut sim = Sim::new();
    sim.auto_store = false;
    sim.send(&siprec_invite("cancel", "z9hG4bK-cancel-1"));
    sim.send(&request(
        "CANCEL",
        "cancel",
        "z9hG4bK-cancel-1",
        1,
        "",
        "",
        None,
        "",
    ));
    sim.ack_storage(true);
    let finals = sim.finals();
    let statuses: Vec<(u16, String)> = finals
        .iter()
        .map(|r| (r.status, r.headers.get("CSeq").unwrap_or("").to_string()))
        .collect();
    assert!(statuses.contains(&(200, "1 CANCEL".into())), "{statuses:?}");
    assert!(statuses.contains(&(487, "1 INVITE".into())), "{statuses:?}");
    assert!(
        !statuses.contains(&(200, "1 INVITE".into())),
        "{statuses:?}"
    );
    let done = sim.finalized();
    assert_eq!(done.len(), 1, "the attempt is kept as a folder");
    assert_eq!(done[0].end_reason, "cancel");
    assert_eq!(done[0].state, RecordingState::NoMedia);
    assert_eq!(sim.rec.session_count(), 0);
    assert!(sim.ports.borrow().is_empty(), "ports released");
}

#[test]
fn cancel_after_answer_changes_nothing() {
    let mut sim = Sim::new();
    let tag = established(&mut sim, "late-cancel");
    sim.send(&request(
        "CANCEL",
        "late-cancel",
        "z9hG4bK-late-cancel-1",
        1,
        "",
        "",
        None,
        "",
    ));
    let finals = sim.finals();
    assert_eq!(finals.len(), 1);
    assert_eq!(finals[0].status, 200);
    assert_eq!(sim.rec.session_count(), 1);
    bye(&mut sim, "late-cancel", &tag, 2);
    assert_eq!(sim.finalized().len(), 1);
}

#[test]
fn bye_before_ack_ends_the_session() {
    let mut sim = Sim::new();
    sim.send(&siprec_invite("byefirst", "z9hG4bK-byefirst-1"));
    let tag = to_tag(&sim.finals()[0]);
    bye(&mut sim, "byefirst", &tag, 2);
    assert_eq!(sim.finals()[0].status, 200);
    assert_eq!(sim.finalized().len(), 1);
    sim.run_for(T1 * 64 + Duration::from_secs(1));
    assert!(
        sim.requests().is_empty(),
        "no BYE from Reel for an ended session"
    );
    assert_eq!(sim.finalized().len(), 1, "finalized once");
}

#[test]
fn bye_retransmission_is_answered_without_second_finalize() {
    let mut sim = Sim::new();
    let tag = established(&mut sim, "byeretx");
    bye(&mut sim, "byeretx", &tag, 2);
    bye(&mut sim, "byeretx", &tag, 2);
    let finals = sim.finals();
    assert_eq!(finals.len(), 2, "the retransmission gets the same 200");
    assert!(finals.iter().all(|r| r.status == 200));
    assert_eq!(sim.finalized().len(), 1);
}

#[test]
fn reinvite_hold_with_partial_metadata_then_resume() {
    let mut sim = Sim::new();
    let tag = established(&mut sim, "hold");
    let held = SDP_TWO_STREAMS.replace("a=sendonly", "a=inactive");
    let carol = r#"<participant participant_id="cGFydDM="><nameID aor="sip:carol@example.com"><name>Carol</name></nameID></participant>"#;
    let partial = format!(
        r#"<?xml version="1.0"?><recording xmlns="urn:ietf:params:xml:ns:recording:1"><datamode>partial</datamode>{carol}</recording>"#
    );
    sim.send(&request(
        "INVITE",
        "hold",
        "z9hG4bK-hold-2",
        2,
        &tag,
        "",
        Some("multipart/mixed;boundary=BND"),
        &multipart(&held, &partial),
    ));
    let ok = sim.finals().pop().expect("answer");
    assert_eq!(ok.status, 200);
    assert_eq!(body(&ok).matches("a=inactive").count(), 2, "{}", body(&ok));
    let ports_during_hold = sim.ports.borrow().clone();
    assert_eq!(ports_during_hold.len(), 2, "ports kept on hold");
    sim.send(&request(
        "ACK",
        "hold",
        "z9hG4bK-hold-ack2",
        2,
        &tag,
        "",
        None,
        "",
    ));
    sim.send(&request(
        "INVITE",
        "hold",
        "z9hG4bK-hold-3",
        3,
        &tag,
        "",
        Some("application/sdp"),
        SDP_TWO_STREAMS,
    ));
    let ok = sim.finals().pop().expect("answer");
    assert_eq!(body(&ok).matches("a=recvonly").count(), 2);
    assert_eq!(
        *sim.ports.borrow(),
        ports_during_hold,
        "same ports after resume"
    );
    sim.send(&request(
        "ACK",
        "hold",
        "z9hG4bK-hold-ack3",
        3,
        &tag,
        "",
        None,
        "",
    ));
    bye(&mut sim, "hold", &tag, 4);
    let m = &sim.finalized()[0];
    let names: Vec<_> = m
        .participants
        .iter()
        .filter_map(|p| p.name.clone())
        .collect();
    assert_eq!(
        names,
        vec!["Alice", "Bob", "Carol"],
        "partial update merged"
    );
    let versions = sim
        .storage
        .iter()
        .filter(|op| matches!(op, StorageOp::Metadata { .. }))
        .count();
    assert_eq!(versions, 2, "both metadata versions stored");
}

#[test]
fn metadata_only_update_gets_200_without_sdp() {
    let mut sim = Sim::new();
    let tag = established(&mut sim, "upd");
    let partial = r#"<?xml version="1.0"?><recording xmlns="urn:ietf:params:xml:ns:recording:1"><datamode>partial</datamode><participant participant_id="cGFydDI="><nameID aor="sip:bob@example.com"><name>Robert</name></nameID></participant></recording>"#;
    sim.send(&request(
        "UPDATE",
        "upd",
        "z9hG4bK-upd-2",
        2,
        &tag,
        "",
        Some("application/rs-metadata+xml"),
        partial,
    ));
    let ok = sim.finals().pop().expect("answer");
    assert_eq!(ok.status, 200);
    assert!(
        ok.body.is_empty(),
        "no SDP in the answer to a metadata-only UPDATE"
    );
    bye(&mut sim, "upd", &tag, 3);
    let m = &sim.finalized()[0];
    assert!(
        m.participants
            .iter()
            .any(|p| p.name.as_deref() == Some("Robert"))
    );
}

#[test]
fn reinvite_without_sdp_gets_our_offer() {
    let mut sim = Sim::new();
    let tag = established(&mut sim, "nosdp");
    let partial = metadata("partial", "");
    sim.send(&request(
        "INVITE",
        "nosdp",
        "z9hG4bK-nosdp-2",
        2,
        &tag,
        "",
        Some("application/rs-metadata+xml"),
        &partial,
    ));
    let ok = sim.finals().pop().expect("answer");
    assert_eq!(ok.status, 200);
    assert_eq!(
        body(&ok).matches("m=audio").count(),
        2,
        "current description offered"
    );
}

#[test]
fn in_dialog_request_with_lower_cseq_is_refused() {
    let mut sim = Sim::new();
    let tag = established(&mut sim, "cseq");
    sim.send(&request(
        "INFO",
        "cseq",
        "z9hG4bK-cseq-5",
        5,
        &tag,
        "",
        None,
        "",
    ));
    assert_eq!(sim.finals()[0].status, 200, "INFO gets 200");
    sim.send(&request(
        "INFO",
        "cseq",
        "z9hG4bK-cseq-3",
        3,
        &tag,
        "",
        None,
        "",
    ));
    assert_eq!(sim.finals()[0].status, 500);
}

#[test]
fn a_bye_whose_cseq_went_backwards_still_ends_the_recording() {
    let mut sim = Sim::new();
    let tag = established(&mut sim, "byeseq");
    sim.send(&request(
        "INFO",
        "byeseq",
        "z9hG4bK-byeseq-i",
        7,
        &tag,
        "",
        None,
        "",
    ));
    assert_eq!(sim.finals()[0].status, 200);
    bye(&mut sim, "byeseq", &tag, 3);
    assert_eq!(sim.finals()[0].status, 200, "a BYE can only mean the end");
    assert_eq!(sim.rec.session_count(), 0);
    assert_eq!(sim.finalized()[0].end_reason, "bye");
}

#[test]
fn g711_is_answered_over_an_earlier_g729_unless_the_offer_order_is_configured() {
    // Metaswitch-style: G.729 first, G.711 after it.
    let sdp = SDP_TWO_STREAMS
        .replace("RTP/AVP 0 101", "RTP/AVP 18 0 101")
        .replace(
            "a=rtpmap:0 PCMU/8000",
            "a=rtpmap:18 G729/8000\r\na=rtpmap:0 PCMU/8000",
        );
    assert!(sdp.contains("RTP/AVP 18 0 101"), "{sdp}");
    let invite = request(
        "INVITE",
        "g729",
        "z9hG4bK-g729-1",
        1,
        "",
        "Require: siprec\r\n",
        Some("multipart/mixed;boundary=BND"),
        &multipart(&sdp, &metadata("complete", "")),
    );
    for (prefer_wav, want) in [(true, "RTP/AVP 0 101"), (false, "RTP/AVP 18 101")] {
        let config = RecorderConfig {
            prefer_wav_codecs: prefer_wav,
            ..RecorderConfig::default()
        };
        let mut sim = Sim::with(config, 100);
        sim.send(&invite);
        let ok = sim.finals().pop().expect("answer");
        assert_eq!(ok.status, 200, "{}", ok.reason);
        let answer = body(&ok);
        assert_eq!(
            answer.matches(want).count(),
            2,
            "prefer_wav {prefer_wav}: {answer}"
        );
    }
}

#[test]
fn unknown_dialog_gets_481() {
    let mut sim = Sim::new();
    bye(&mut sim, "nobody", "deadbeef", 2);
    assert_eq!(sim.finals()[0].status, 481);
    sim.send(&request(
        "INVITE",
        "nobody",
        "z9hG4bK-nobody-3",
        3,
        "deadbeef",
        "",
        Some("application/sdp"),
        SDP_TWO_STREAMS,
    ));
    assert_eq!(sim.finals()[0].status, 481);
}

#[test]
fn a_request_with_the_dialogs_call_id_and_to_tag_but_another_from_tag_is_481_and_ends_nothing() {
    let mut sim = Sim::new();
    let tag = established(&mut sim, "tags");
    for method in ["BYE", "UPDATE", "INFO"] {
        let body = if method == "UPDATE" {
            SDP_TWO_STREAMS
        } else {
            ""
        };
        let ctype = (method == "UPDATE").then_some("application/sdp");
        sim.send(
            &request(
                method,
                "tags",
                &format!("z9hG4bK-tags-{method}"),
                2,
                &tag,
                "",
                ctype,
                body,
            )
            .replace("tag=srctag1", "tag=someone-else"),
        );
        assert_eq!(sim.finals().pop().expect("answer").status, 481, "{method}");
    }
    assert_eq!(sim.rec.session_count(), 1, "the recording goes on");
    // The real dialog's next request, CSeq 2, is in order: the stray ones changed nothing.
    bye(&mut sim, "tags", &tag, 2);
    assert_eq!(sim.finals()[0].status, 200);
    assert_eq!(sim.rec.session_count(), 0);
}

#[test]
fn in_dialog_options_is_200_for_a_live_recording_even_draining_and_481_for_a_gone_one() {
    let mut sim = Sim::new();
    let tag = established(&mut sim, "ping");
    let ping = |sim: &mut Sim, tag: &str, cseq: u32| {
        sim.send(&request(
            "OPTIONS",
            "ping",
            &format!("z9hG4bK-ping-{cseq}"),
            cseq,
            tag,
            "",
            None,
            "",
        ));
        sim.finals().pop().expect("answer").status
    };
    assert_eq!(ping(&mut sim, &tag, 2), 200);
    sim.rec.start_drain(sim.now);
    assert_eq!(
        ping(&mut sim, &tag, 3),
        200,
        "a live recording runs to its BYE"
    );
    assert_eq!(ping(&mut sim, "a-dialog-of-the-last-process", 4), 481);
    bye(&mut sim, "ping", &tag, 5);
    assert_eq!(sim.finals()[0].status, 200);
    assert_eq!(ping(&mut sim, &tag, 6), 481, "ended: gone");
}

#[test]
fn unknown_require_gets_420_on_options_and_info_but_never_keeps_a_bye_from_ending_the_call() {
    let mut sim = Sim::new();
    let req = |method: &str, call: &str, cseq: u32, tag: &str| {
        request(
            method,
            call,
            &format!("z9hG4bK-req-{method}-{cseq}"),
            cseq,
            tag,
            "Require: foo-ext\r\n",
            None,
            "",
        )
    };
    sim.send(&req("OPTIONS", "opt-require", 1, ""));
    let r = sim.finals().pop().expect("answer");
    assert_eq!(r.status, 420, "out-of-dialog OPTIONS");
    assert_eq!(r.headers.get("Unsupported"), Some("foo-ext"));
    let tag = established(&mut sim, "req");
    for (method, cseq) in [("OPTIONS", 2), ("INFO", 3)] {
        sim.send(&req(method, "req", cseq, &tag));
        let r = sim.finals().pop().expect("answer");
        assert_eq!(r.status, 420, "in-dialog {method}");
        assert_eq!(r.headers.get("Unsupported"), Some("foo-ext"), "{method}");
    }
    assert_eq!(sim.rec.session_count(), 1, "the recording goes on");
    // A BYE is not held to its Require: refusing it would keep a finished call recording.
    sim.send(&req("BYE", "req", 4, &tag));
    assert_eq!(sim.finals().pop().expect("answer").status, 200);
    assert_eq!(sim.rec.session_count(), 0);
}

#[test]
fn options_gets_200_with_siprec_then_503_while_draining() {
    let mut sim = Sim::new();
    sim.send(&request(
        "OPTIONS",
        "opt",
        "z9hG4bK-opt-1",
        1,
        "",
        "",
        None,
        "",
    ));
    let ok = sim.finals().pop().expect("answer");
    assert_eq!(ok.status, 200);
    assert!(ok.headers.has_token("Supported", "siprec"));
    assert!(ok.headers.get("Allow").unwrap_or("").contains("INVITE"));
    assert!(
        ok.headers
            .get("Accept")
            .unwrap_or("")
            .contains("application/sdp")
    );
    sim.rec.start_drain(sim.now);
    sim.send(&request(
        "OPTIONS",
        "opt",
        "z9hG4bK-opt-2",
        2,
        "",
        "",
        None,
        "",
    ));
    let busy = sim.finals().pop().expect("answer");
    assert_eq!(busy.status, 503);
    assert!(busy.headers.get("Retry-After").is_some());
}

#[test]
fn full_recorder_answers_503_with_retry_after() {
    let config = RecorderConfig {
        max_sessions: 1,
        ..RecorderConfig::default()
    };
    let mut sim = Sim::with(config, 1000);
    established(&mut sim, "first");
    sim.send(&siprec_invite("second", "z9hG4bK-second-1"));
    let r = sim.finals().pop().expect("answer");
    assert_eq!(r.status, 503);
    assert_eq!(r.headers.get("Retry-After"), Some("30"));
}

#[test]
fn no_free_ports_answers_503_and_leaks_nothing() {
    let mut sim = Sim::with(RecorderConfig::default(), 1);
    sim.send(&siprec_invite("ports", "z9hG4bK-ports-1"));
    assert_eq!(sim.finals().pop().expect("answer").status, 503);
    assert!(
        sim.ports.borrow().is_empty(),
        "the one allocated port was given back"
    );
    assert_eq!(sim.rec.session_count(), 0);
}

#[test]
fn storage_failure_answers_503() {
    let mut sim = Sim::new();
    sim.auto_store = false;
    sim.send(&siprec_invite("disk", "z9hG4bK-disk-1"));
    sim.ack_storage(false);
    let r = sim.finals().pop().expect("answer");
    assert_eq!(r.status, 503);
    assert!(sim.ports.borrow().is_empty());
}

#[test]
fn session_timer_expiry_ends_the_session_with_bye() {
    let mut sim = Sim::new();
    let invite = request(
        "INVITE",
        "timer",
        "z9hG4bK-timer-1",
        1,
        "",
        "Require: siprec\r\nSupported: timer\r\nSession-Expires: 120\r\n",
        Some("multipart/mixed;boundary=BND"),
        &multipart(SDP_TWO_STREAMS, &metadata("complete", "")),
    );
    sim.send(&invite);
    let ok = sim.finals().pop().expect("answer");
    assert_eq!(ok.status, 200);
    assert!(
        ok.headers
            .get("Session-Expires")
            .unwrap_or("")
            .starts_with("120")
    );
    assert!(ok.headers.has_token("Require", "timer"));
    let tag = to_tag(&ok);
    sim.send(&request(
        "ACK",
        "timer",
        "z9hG4bK-timer-ack",
        1,
        &tag,
        "",
        None,
        "",
    ));
    // A refresh (UPDATE) at 100 s keeps it alive past 120 s.
    sim.run_for(Duration::from_secs(100));
    sim.send(&request(
        "UPDATE",
        "timer",
        "z9hG4bK-timer-2",
        2,
        &tag,
        "Session-Expires: 120;refresher=uac\r\n",
        None,
        "",
    ));
    assert_eq!(sim.finals().pop().expect("answer").status, 200);
    sim.run_for(Duration::from_secs(100));
    assert_eq!(sim.rec.session_count(), 1, "refreshed");
    sim.run_for(Duration::from_secs(30));
    assert_eq!(sim.rec.session_count(), 0, "expired");
    assert!(
        sim.requests()
            .iter()
            .any(|r| r.method == reel::sip::Method::Bye)
    );
    assert_eq!(sim.finalized()[0].end_reason, "session-timer");
}

#[test]
fn session_interval_below_min_se_gets_422() {
    let mut sim = Sim::new();
    let invite = request(
        "INVITE",
        "short",
        "z9hG4bK-short-1",
        1,
        "",
        "Supported: timer\r\nSession-Expires: 30\r\n",
        Some("application/sdp"),
        SDP_TWO_STREAMS,
    );
    sim.send(&invite);
    let r = sim.finals().pop().expect("answer");
    assert_eq!(r.status, 422);
    assert_eq!(r.headers.get("Min-SE"), Some("90"));
}

#[test]
fn a_huge_session_interval_is_answered_with_a_day_in_invite_and_refresh() {
    let mut sim = Sim::new();
    let huge = "Supported: timer\r\nSession-Expires: 9223372036854775807;refresher=uac\r\n";
    let mut tag = String::new();
    // The initial INVITE, then a re-INVITE in its dialog, each acknowledged.
    for cseq in [1, 2] {
        sim.send(&request(
            "INVITE",
            "long",
            &format!("z9hG4bK-long-{cseq}"),
            cseq,
            &tag,
            huge,
            Some("application/sdp"),
            SDP_TWO_STREAMS,
        ));
        let ok = sim.finals().pop().expect("answer");
        assert_eq!(ok.status, 200, "{}", ok.reason);
        assert_eq!(
            ok.headers.get("Session-Expires"),
            Some("86400;refresher=uac")
        );
        tag = to_tag(&ok);
        let ack = format!("z9hG4bK-long-ack{cseq}");
        sim.send(&request("ACK", "long", &ack, cseq, &tag, "", None, ""));
    }
    sim.run_for(Duration::from_secs(60));
    assert_eq!(sim.rec.active_sessions().len(), 1, "still up");
}

#[test]
fn drain_refuses_new_calls_lets_active_finish_then_is_drained() {
    let mut sim = Sim::new();
    let tag = established(&mut sim, "active");
    sim.rec.start_drain(sim.now);
    sim.send(&siprec_invite("late", "z9hG4bK-late-1"));
    let r = sim.finals().pop().expect("answer");
    assert_eq!(r.status, 503);
    assert!(r.headers.get("Retry-After").is_some());
    assert!(!sim.rec.is_drained(sim.now));
    bye(&mut sim, "active", &tag, 2);
    assert!(!sim.rec.is_drained(sim.now), "transactions linger a moment");
    sim.run_for(reel::control::recorder::DRAIN_LINGER);
    assert!(sim.rec.is_drained(sim.now));
    assert_eq!(sim.finalized().len(), 1);
}

#[test]
fn drain_timeout_sends_bye_and_finalizes() {
    let config = RecorderConfig {
        drain_timeout: Duration::from_secs(5),
        ..RecorderConfig::default()
    };
    let mut sim = Sim::with(config, 1000);
    established(&mut sim, "stuck");
    sim.rec.start_drain(sim.now);
    sim.run_for(Duration::from_secs(6));
    assert!(
        sim.requests()
            .iter()
            .any(|r| r.method == reel::sip::Method::Bye)
    );
    assert_eq!(sim.finalized()[0].end_reason, "shutdown");
}

#[test]
fn unsupported_method_gets_405_with_allow() {
    let mut sim = Sim::new();
    sim.send(&request(
        "REGISTER",
        "reg",
        "z9hG4bK-reg-1",
        1,
        "",
        "",
        None,
        "",
    ));
    let r = sim.finals().pop().expect("answer");
    assert_eq!(r.status, 405);
    assert!(r.headers.get("Allow").is_some());
}

#[test]
fn garbage_between_calls_disturbs_nothing() {
    let mut sim = Sim::new();
    let tag = established(&mut sim, "steady");
    sim.send_bytes(b"\x00\x01garbage\r\n\r\n");
    sim.send_bytes(b"INVITE sip:x SIP/2.0\r\nVia: nonsense\r\n\r\n");
    sim.send_bytes(&[0xff; 3000]);
    bye(&mut sim, "steady", &tag, 2);
    assert_eq!(sim.finals().pop().expect("answer").status, 200);
    assert_eq!(sim.finalized().len(), 1);
}

#[test]
fn recorder_accepts_every_fixture_and_answers_bad_ones_as_documented() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("tests/data") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("sip") {
            continue;
        }
        let mut sim = Sim::new();
        sim.send_bytes(&std::fs::read(&path).expect("read"));
        let finals = sim.finals();
        assert_eq!(finals.len(), 1, "{}: one final", path.display());
        assert_eq!(
            finals[0].status,
            200,
            "{}: {} {:?}",
            path.display(),
            finals[0].reason,
            finals[0].headers.get("Warning")
        );
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} fixtures");
    let expected = std::fs::read_to_string(dir.join("bad/EXPECTED.txt")).expect("EXPECTED.txt");
    let mut bad = 0;
    for line in expected
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        let mut words = line.split_whitespace();
        let (Some(file), Some(status)) = (words.next(), words.next()) else {
            continue;
        };
        let status: u16 = status.parse().expect("status");
        let mut sim = Sim::new();
        sim.send_bytes(&std::fs::read(dir.join("bad").join(file)).expect("read"));
        let finals = sim.finals();
        assert_eq!(finals.len(), 1, "{file}: one final");
        assert_eq!(
            finals[0].status, status,
            "{file}: got {} {}",
            finals[0].status, finals[0].reason
        );
        if status >= 400 {
            let says = finals[0]
                .headers
                .get("Warning")
                .map(str::to_string)
                .unwrap_or(finals[0].reason.clone());
            assert!(!says.is_empty(), "{file}: the answer names the problem");
        }
        bad += 1;
    }
    assert!(bad >= 10, "only {bad} bad fixtures");
}

#[test]
fn recorder_accepts_every_vendor_sample() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/siprec-samples/good");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!(
            "skipped: vendor samples not found at {} (they live beside the project)",
            dir.display()
        );
        return;
    };
    let mut n = 0;
    for entry in entries {
        let path = entry.expect("entry").path();
        let mut sim = Sim::new();
        sim.send_bytes(&std::fs::read(&path).expect("read"));
        let finals = sim.finals();
        assert_eq!(finals.len(), 1, "{}", path.display());
        assert_eq!(
            finals[0].status,
            200,
            "{}: {} {:?}",
            path.display(),
            finals[0].reason,
            finals[0].headers.get("Warning")
        );
        let answer = body(&finals[0]);
        assert!(
            answer.contains("a=recvonly") || answer.contains("a=inactive"),
            "{answer}"
        );
        n += 1;
    }
    assert!(n >= 10);
}

#[test]
fn streams_reach_the_media_path_only_after_the_200() {
    let mut sim = Sim::new();
    sim.auto_store = false;
    sim.send(&siprec_invite("media", "z9hG4bK-media-1"));
    assert!(
        sim.started.borrow().is_empty(),
        "no media before the answer"
    );
    sim.ack_storage(true);
    let started = sim.started.borrow().clone();
    assert_eq!(started.len(), 2);
    assert_eq!(started[0].1.mline, 0);
    assert_eq!(started[1].1.mline, 1);
    assert_eq!(started[0].1.payload_type, 0);
    assert_eq!(started[0].1.event_pt, Some(101));
    let tag = to_tag(&sim.finals()[0]);
    bye(&mut sim, "media", &tag, 2);
    let finalize = sim.storage.iter().find_map(|op| match op {
        StorageOp::Finalize { media_streams, .. } => Some(media_streams.clone()),
        _ => None,
    });
    assert_eq!(
        finalize,
        Some(vec![0, 1]),
        "the writer waits for both streams' end records"
    );
}

#[test]
fn srtp_offer_hands_the_src_key_to_the_media_path() {
    let mut sim = Sim::new();
    let sdp = SDP_TWO_STREAMS.replace("RTP/AVP", "RTP/SAVP").replace(
        "a=sendonly\r\n",
        "a=sendonly\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n",
    );
    let invite = request(
        "INVITE",
        "srtp",
        "z9hG4bK-srtp-1",
        1,
        "",
        "Require: siprec\r\n",
        Some("application/sdp"),
        &sdp,
    );
    sim.send(&invite);
    let ok = sim.finals().pop().expect("answer");
    assert_eq!(ok.status, 200, "{:?}", ok.headers.get("Warning"));
    let answer = body(&ok);
    assert_eq!(answer.matches("RTP/SAVP").count(), 2, "{answer}");
    assert!(
        !answer.contains("WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"),
        "our own key, not theirs"
    );
    let started = sim.started.borrow();
    assert!(started.iter().all(|(_, spec)| spec.srtp.is_some()));
}

#[test]
fn srtp_offer_with_an_unusable_key_gets_488() {
    let mut sim = Sim::new();
    let sdp = SDP_TWO_STREAMS.replace("RTP/AVP", "RTP/SAVP").replace(
        "a=sendonly\r\n",
        "a=sendonly\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:dG9vc2hvcnQ=\r\n",
    );
    let invite = request(
        "INVITE",
        "badkey",
        "z9hG4bK-badkey-1",
        1,
        "",
        "",
        Some("application/sdp"),
        &sdp,
    );
    sim.send(&invite);
    assert_eq!(
        sim.finals().pop().expect("answer").status,
        488,
        "never a plain RTP answer"
    );
}

#[test]
fn unsafe_metadata_is_refused_with_400_and_broken_metadata_only_warns() {
    let invite = |sim: &mut Sim, call_id: &str, xml: &str| {
        let branch = format!("z9hG4bK-{call_id}-1");
        sim.send(&siprec_invite_with_metadata(call_id, &branch, xml));
        sim.finals().pop().expect("answer")
    };
    let mut sim = Sim::new();
    let deep = format!(
        "<recording xmlns=\"urn:ietf:params:xml:ns:recording:1\">{}{}</recording>",
        "<a>".repeat(40),
        "</a>".repeat(40)
    );
    let r = invite(&mut sim, "deep", &deep);
    assert_eq!(r.status, 400, "{}", r.reason);
    let warning = |r: &reel::sip::Response| r.headers.get("Warning").unwrap_or("").to_string();
    assert!(warning(&r).contains("nesting deeper"), "{}", warning(&r));
    let laughs =
        "<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY a \"aaaa\">]><recording>&a;</recording>";
    let r = invite(&mut sim, "dtd", laughs);
    assert_eq!(r.status, 400, "{}", r.reason);
    assert!(warning(&r).contains("DTD"), "{}", warning(&r));
    // Merely broken XML costs the labels, not the recording.
    let r = invite(&mut sim, "broken", "<recording><participant></recording>");
    assert_eq!(r.status, 200, "{}", r.reason);
}

#[test]
fn a_metadata_only_invite_is_offerless_488_and_a_body_with_neither_is_415() {
    let mut sim = Sim::new();
    sim.send(&request(
        "INVITE",
        "meta-only",
        "z9hG4bK-meta-only-1",
        1,
        "",
        "Require: siprec\r\n",
        Some("application/rs-metadata+xml"),
        &metadata("complete", ""),
    ));
    let r = sim.finals().pop().expect("answer");
    assert_eq!(r.status, 488, "{}", r.reason);
    sim.send(&request(
        "INVITE",
        "text",
        "z9hG4bK-text-1",
        1,
        "",
        "",
        Some("text/plain"),
        "hello",
    ));
    let r = sim.finals().pop().expect("answer");
    assert_eq!(r.status, 415, "{}", r.reason);
    assert!(r.headers.get("Accept").is_some());
}

#[test]
fn a_request_whose_handling_panics_gets_500_and_costs_no_other_call() {
    let config = RecorderConfig {
        fault_injection: true,
        ..RecorderConfig::default()
    };
    let mut sim = Sim::with(config, 1000);
    let tag = established(&mut sim, "bystander");
    let poisoned = siprec_invite("poisoned", "z9hG4bK-poisoned-1").replace(
        "Require: siprec\r\n",
        "Require: siprec\r\nX-Reel-Fault: panic\r\n",
    );
    assert!(poisoned.contains("X-Reel-Fault"));
    sim.send(&poisoned);
    let finals = sim.finals();
    assert_eq!(finals.len(), 1);
    assert_eq!(finals[0].status, 500, "{}", finals[0].reason);
    assert_eq!(sim.rec.stats.panics, 1);
    // A poisoned BYE in the live dialog: 500, and the call goes on.
    sim.send(&request(
        "BYE",
        "bystander",
        "z9hG4bK-bystander-bye2",
        2,
        &tag,
        "X-Reel-Fault: panic\r\n",
        None,
        "",
    ));
    assert_eq!(
        sim.finals().iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![500]
    );
    assert_eq!(sim.rec.stats.panics, 2);
    assert_eq!(
        sim.rec.session_count(),
        1,
        "the bystander's recording goes on"
    );
    bye(&mut sim, "bystander", &tag, 3);
    assert_eq!(
        sim.finals().iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![200]
    );
    let done = sim.finalized();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].call_id, "bystander");
    assert_eq!(done[0].end_reason, "bye");
    established(&mut sim, "after");
    assert_eq!(sim.rec.session_count(), 1);
}

/// An in-dialog re-INVITE with this SDP, ACKed; its 200.
fn reoffer(sim: &mut Sim, call_id: &str, tag: &str, cseq: u32, sdp: &str) -> reel::sip::Response {
    sim.send(&request(
        "INVITE",
        call_id,
        &format!("z9hG4bK-{call_id}-re{cseq}"),
        cseq,
        tag,
        "",
        Some("application/sdp"),
        sdp,
    ));
    let ok = sim.finals().pop().expect("answer");
    sim.send(&request(
        "ACK",
        call_id,
        &format!("z9hG4bK-{call_id}-reack{cseq}"),
        cseq,
        tag,
        "",
        None,
        "",
    ));
    ok
}

#[test]
fn a_reoffer_that_moves_the_src_or_changes_payload_types_is_followed_by_the_media_path() {
    let mut sim = Sim::new();
    let tag = established(&mut sim, "moves");
    let started: Vec<_> = sim.started.borrow().clone();
    assert_eq!(
        started.iter().map(|(_, s)| s.source).collect::<Vec<_>>(),
        vec![
            "198.51.100.7:30000".parse().ok(),
            "198.51.100.7:30002".parse().ok()
        ],
        "the SDP's address of each stream goes to the media path"
    );
    // Stream 1 moves to another port (a transfer); stream 2's telephone-event becomes 96.
    let moved = SDP_TWO_STREAMS
        .replacen("m=audio 30000", "m=audio 31000", 1)
        .replace(
            "m=audio 30002 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101",
            "m=audio 30002 RTP/AVP 0 96\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:96",
        );
    assert_ne!(moved, SDP_TWO_STREAMS);
    let ok = reoffer(&mut sim, "moves", &tag, 2, &moved);
    assert_eq!(ok.status, 200);
    assert!(body(&ok).contains("telephone-event"), "{}", body(&ok));
    let updated = sim.updated.borrow().clone();
    assert_eq!(updated.len(), 2, "{updated:?}");
    let (port, spec, relearn) = &updated[0];
    assert_eq!(*port, started[0].0);
    assert_eq!(spec.source, "198.51.100.7:31000".parse().ok());
    assert!(*relearn, "the SRC moved: the latch is learned again");
    let (port, spec, relearn) = &updated[1];
    assert_eq!(*port, started[1].0);
    assert_eq!(spec.event_pt, Some(96));
    assert_eq!(spec.payload_type, 0);
    assert!(!*relearn);
    // The same offer again (a refresh) changes nothing.
    let ok = reoffer(&mut sim, "moves", &tag, 3, &moved);
    assert_eq!(ok.status, 200);
    assert_eq!(sim.updated.borrow().len(), 2);
    // Stream 1 moves from PCMU to PCMA (before its first packet, or mid-call).
    let pcma = moved.replacen(
        "m=audio 31000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000",
        "m=audio 31000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000",
        1,
    );
    assert_ne!(pcma, moved);
    let ok = reoffer(&mut sim, "moves", &tag, 4, &pcma);
    assert_eq!(ok.status, 200);
    assert!(body(&ok).contains("PCMA"), "{}", body(&ok));
    let updated = sim.updated.borrow().clone();
    assert_eq!(updated.len(), 3, "{updated:?}");
    let (port, spec, _) = &updated[2];
    assert_eq!(*port, started[0].0);
    assert_eq!(spec.payload_type, 8);
}

#[test]
fn an_srtp_rekey_by_reoffer_answers_the_offered_tag_and_hands_the_new_key_over() {
    let mut sim = Sim::new();
    let k1 = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";
    let k2 = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNk";
    let srtp = |tag: u8, key: &str| {
        SDP_TWO_STREAMS.replace("RTP/AVP", "RTP/SAVP").replace(
            "a=sendonly\r\n",
            &format!("a=sendonly\r\na=crypto:{tag} AES_CM_128_HMAC_SHA1_80 inline:{key}\r\n"),
        )
    };
    sim.send(&request(
        "INVITE",
        "rekey",
        "z9hG4bK-rekey-1",
        1,
        "",
        "Require: siprec\r\n",
        Some("application/sdp"),
        &srtp(1, k1),
    ));
    let ok = sim.finals().pop().expect("answer");
    assert_eq!(ok.status, 200);
    let tag = to_tag(&ok);
    let first_key = sim.started.borrow()[0].1.srtp.clone();
    assert!(first_key.is_some());
    let ok = reoffer(&mut sim, "rekey", &tag, 2, &srtp(2, k2));
    assert_eq!(ok.status, 200);
    let answer = body(&ok);
    assert_eq!(answer.matches("a=crypto:2 ").count(), 2, "{answer}");
    assert!(!answer.contains("a=crypto:1 "), "{answer}");
    let updated = sim.updated.borrow().clone();
    assert_eq!(updated.len(), 2, "{updated:?}");
    assert!(
        updated
            .iter()
            .all(|(_, spec, relearn)| *relearn && spec.srtp.is_some() && spec.srtp != first_key)
    );
    // The same key and tag again: the same answer, nothing for the media path.
    let again = reoffer(&mut sim, "rekey", &tag, 3, &srtp(2, k2));
    let crypto_lines = |r: &reel::sip::Response| -> Vec<String> {
        body(r)
            .lines()
            .filter(|l| l.starts_with("a=crypto"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(crypto_lines(&again), crypto_lines(&ok));
    assert_eq!(sim.updated.borrow().len(), 2);
}

#[test]
fn a_stream_removed_by_a_reoffer_keeps_its_recorded_channel() {
    let mut sim = Sim::new();
    let tag = established(&mut sim, "removed");
    let without_2 = SDP_TWO_STREAMS.replacen("m=audio 30002", "m=audio 0", 1);
    let ok = reoffer(&mut sim, "removed", &tag, 2, &without_2);
    assert_eq!(ok.status, 200);
    assert_eq!(body(&ok).matches("m=audio 0 ").count(), 1, "{}", body(&ok));
    assert_eq!(sim.ports.borrow().len(), 1, "its port is released");
    // SBCs repeat the same SDP in every session refresh: a second offer with the stream
    // still at port 0 must not drop what it recorded either.
    let ok = reoffer(&mut sim, "removed", &tag, 3, &without_2);
    assert_eq!(ok.status, 200);
    bye(&mut sim, "removed", &tag, 4);
    let done = sim.finalized();
    assert_eq!(done.len(), 1);
    let labels: Vec<&str> = done[0].streams.iter().map(|s| s.label.as_str()).collect();
    assert_eq!(
        labels,
        vec!["1", "2"],
        "what stream 2 recorded stays a channel, through a repeated offer too"
    );
    assert_eq!(done[0].streams[1].codec, done[0].streams[0].codec);
}

#[test]
fn reels_bye_follows_the_srcs_new_tcp_connection_or_opens_one_to_its_contact() {
    use reel::sip::{ConnId, Transport};
    let tcp = |conn: u64, port: u16| reel::sip::Flow {
        transport: Transport::Tcp,
        local: "192.0.2.10:5060".parse().expect("addr"),
        remote: std::net::SocketAddr::from(([198, 51, 100, 7], port)),
        conn: Some(ConnId(conn)),
    };
    for reconnects in [true, false] {
        let config = RecorderConfig {
            drain_timeout: Duration::from_secs(5),
            ..RecorderConfig::default()
        };
        let mut sim = Sim::with(config, 1000);
        // The SRC's first connection comes from an ephemeral port; its Contact says 5070.
        sim.flow = tcp(1, 40001);
        sim.send(&siprec_invite("conn", "z9hG4bK-conn-1"));
        let ok = sim.finals().pop().expect("answer");
        assert_eq!(ok.status, 200);
        let tag = to_tag(&ok);
        sim.send(&request(
            "ACK",
            "conn",
            "z9hG4bK-conn-ack",
            1,
            &tag,
            "",
            None,
            "",
        ));
        let (now, wall) = (sim.now, sim.wall);
        sim.rec.handle_connection_closed(now, wall, ConnId(1));
        if reconnects {
            // It comes back on a new connection and pings the dialog there.
            sim.flow = tcp(2, 40002);
            sim.send(&request(
                "OPTIONS",
                "conn",
                "z9hG4bK-conn-2",
                2,
                &tag,
                "",
                None,
                "",
            ));
            assert_eq!(sim.finals().pop().map(|r| r.status), Some(200));
        }
        sim.sent.clear();
        let now = sim.now;
        sim.rec.start_drain(now);
        sim.run_for(Duration::from_secs(6));
        let bye = sim
            .sent
            .iter()
            .find(|(_, m)| matches!(m, reel::sip::message::Message::Request(r) if r.method == reel::sip::Method::Bye))
            .map(|(flow, _)| *flow)
            .expect("Reel ends the recording with a BYE at the drain deadline");
        if reconnects {
            assert_eq!(bye, tcp(2, 40002), "on the connection the SRC uses now");
        } else {
            assert_eq!(bye.conn, None, "a new connection");
            assert_eq!(
                bye.remote,
                "198.51.100.7:5070".parse().expect("addr"),
                "to the Contact, not the closed connection's source port"
            );
        }
    }
}
