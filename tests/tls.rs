//! SIPREC over TLS with a real rustls client (Debian's SIPp has no TLS): INVITE, 200 with a
//! recvonly answer, ACK, BYE, and the recording folder.

mod common;

use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use common::client::{stream_response, stream_send};
use common::server::Server;
use common::sim::{SDP_TWO_STREAMS, metadata, multipart, request, to_tag};
use reel::sip::StreamFramer;

#[test]
fn siprec_call_over_tls_is_recorded() {
    let certs = tempfile::tempdir().expect("tempdir");
    let key = rcgen::KeyPair::generate().expect("key");
    let params = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("params");
    let cert = params.self_signed(&key).expect("cert");
    let cert_path = certs.path().join("cert.pem");
    let key_path = certs.path().join("key.pem");
    std::fs::write(&cert_path, cert.pem()).expect("write");
    std::fs::write(&key_path, key.serialize_pem()).expect("write");
    let config = format!(
        "[sip]\nlisten = [\"tls:127.0.0.1:{{tls_port}}\"]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        cert_path.display(),
        key_path.display()
    );
    let server = Server::start_with(Some(&config), &[]);

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let conn = rustls::ClientConnection::new(Arc::new(client), name).expect("tls");
    let tcp = TcpStream::connect(("127.0.0.1", server.sip_port + 1)).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut framer = StreamFramer::new(65536);

    let invite = request(
        "INVITE",
        "tls-call",
        "z9hG4bK-tls-1",
        1,
        "",
        "Require: siprec\r\n",
        Some("multipart/mixed;boundary=BND"),
        &multipart(SDP_TWO_STREAMS, &metadata("complete", "")),
    )
    .replace("SIP/2.0/UDP", "SIP/2.0/TLS");
    stream_send(&mut tls, &invite);
    let ok = stream_response(&mut tls, &mut framer, 200).expect("final response");
    assert_eq!(ok.status, 200, "{}", server.log_text());
    let answer = String::from_utf8_lossy(&ok.body).into_owned();
    assert_eq!(answer.matches("a=recvonly").count(), 2, "{answer}");
    assert!(
        ok.headers
            .get("Contact")
            .unwrap_or("")
            .contains("transport=tls")
    );
    let tag = to_tag(&ok);
    let ack = request("ACK", "tls-call", "z9hG4bK-tls-ack", 1, &tag, "", None, "")
        .replace("SIP/2.0/UDP", "SIP/2.0/TLS");
    stream_send(&mut tls, &ack);
    std::thread::sleep(Duration::from_millis(300));
    let bye = request("BYE", "tls-call", "z9hG4bK-tls-bye", 2, &tag, "", None, "")
        .replace("SIP/2.0/UDP", "SIP/2.0/TLS");
    stream_send(&mut tls, &bye);
    let ok = stream_response(&mut tls, &mut framer, 200).expect("BYE answered");
    assert_eq!(ok.status, 200);
    assert_eq!(ok.headers.get("CSeq"), Some("2 BYE"));
    let recs = server.wait_recordings(1);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].1["call_id"], "tls-call");
    assert_eq!(recs[0].1["participants"].as_array().map(Vec::len), Some(2));
}

#[test]
fn plain_tcp_to_the_tls_port_does_not_disturb_the_server() {
    let certs = tempfile::tempdir().expect("tempdir");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    std::fs::write(certs.path().join("c.pem"), cert.pem()).expect("write");
    std::fs::write(certs.path().join("k.pem"), key.serialize_pem()).expect("write");
    let config = format!(
        "[sip]\nlisten = [\"tls:127.0.0.1:{{tls_port}}\"]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        certs.path().join("c.pem").display(),
        certs.path().join("k.pem").display()
    );
    let server = Server::start_with(Some(&config), &[]);
    let mut raw = TcpStream::connect(("127.0.0.1", server.sip_port + 1)).expect("connect");
    stream_send(&mut raw, "OPTIONS sip:x SIP/2.0\r\n\r\n");
    drop(raw);
    let (status, _) = server.http_get("/health").expect("health");
    assert_eq!(status, 200, "server still healthy");
}
