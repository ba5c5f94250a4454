//! `docs/reel.example.toml` is the documented sample (DESIGN §5): it must stay valid and show
//! the embedded defaults, so it cannot drift from the code.

use reel::config::{Config, IoBackend, ListenProto, Overrides};

fn sample() -> Config {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/reel.example.toml");
    let text = std::fs::read_to_string(path).expect("docs/reel.example.toml is readable");
    Config::from_toml(&text, &Overrides::default())
        .unwrap_or_else(|e| panic!("sample is invalid: {e}"))
}

#[test]
fn example_config_is_valid() {
    let c = sample();
    assert_eq!(c.node_name, "rec1");
}

#[test]
fn example_config_shows_the_defaults() {
    let mut c = sample();
    // node_name defaults to the host name, so the sample sets one; everything else is default.
    c.node_name = Config::default().node_name;
    assert_eq!(c, Config::default());
}

#[test]
fn example_config_values() {
    let c = sample();
    assert_eq!(c.sip.listen.len(), 2);
    assert_eq!(c.sip.listen[0].proto, ListenProto::Udp);
    assert_eq!(c.sip.listen[0].addr.port(), 5060);
    assert_eq!((c.media.rtp_port_lo, c.media.rtp_port_hi), (16384, 32767));
    assert_eq!(c.media.io_backend, IoBackend::Auto);
    assert_eq!(c.record.audio, "wav-g711");
    assert_eq!(c.http.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.replication.role, "none");
}

/// The sample with every commented-out `# key = value` line switched on; a later line for the
/// same key replaces the earlier one (the commented alternative wins).
fn uncommented_sample() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/reel.example.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let mut sections: Vec<(String, Vec<(String, String)>)> = vec![(String::new(), Vec::new())];
    for line in text.lines() {
        if line.starts_with('[') {
            sections.push((line.to_string(), Vec::new()));
            continue;
        }
        let line = line.strip_prefix("# ").unwrap_or(line);
        let Some((key, _)) = line.split_once(" = ") else {
            continue;
        };
        if !key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            continue;
        }
        let entries = &mut sections.last_mut().unwrap().1;
        entries.retain(|(k, _)| k != key);
        entries.push((key.to_string(), line.to_string()));
    }
    let mut out = String::new();
    for (header, entries) in sections {
        out.push_str(&header);
        out.push('\n');
        for (_, line) in entries {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

#[test]
fn example_config_commented_lines_are_valid_too() {
    let text = uncommented_sample();
    let c =
        Config::from_toml(&text, &Overrides::default()).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(c.sip.listen.len(), 3);
    assert_eq!(c.sip.listen[2].proto, ListenProto::Tls);
    assert_eq!(c.sip.allow_from.len(), 3);
    assert!(c.sip.advertise_ip.is_some());
    assert_eq!(c.replication.srv.as_deref(), Some("_reel._udp.example.com"));
    assert_eq!(c.replication.window.as_deref(), Some("01:00-05:00"));
}
