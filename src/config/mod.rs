//! Configuration: TOML file (every key optional) + CLI flags into typed, validated settings.
//! Errors name the key (`sip.listen[1]: ...`) and make `reel` exit 2.
//!
//! Owns: the embedded defaults (DESIGN §3, §5), the file format (unknown keys are errors), the
//! CLI overrides, validation, and printing the effective configuration back as TOML.
//! Validation checks that keys are present and well-formed; it does not open certificate or
//! key files (the server does that when it starts, with its own error).
//! Must not: be read by hot paths (they get plain values at start).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A configuration problem, naming the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key (`media.rtp_ports`), or the file path when the file itself is the problem.
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}
impl std::error::Error for ConfigError {}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IoBackend {
    Auto,
    Uring,
    Epoll,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ListenProto {
    Udp,
    Tcp,
    Tls,
}

/// One SIP listener: `udp:0.0.0.0:5060`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Listen {
    pub proto: ListenProto,
    pub addr: SocketAddr,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SipSettings {
    pub listen: Vec<Listen>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Source networks allowed to send requests; empty = everyone.
    pub allow_from: Vec<ipnet::IpNet>,
    pub max_sessions: usize,
    /// Largest SIP message accepted (bytes).
    pub max_message_bytes: usize,
    /// Most `m=` lines per session.
    pub max_streams: usize,
    /// Seconds sent in `Retry-After` with 503.
    pub retry_after_s: u32,
    /// RFC 4028 minimum session interval we accept (Min-SE), seconds.
    pub min_se_s: u32,
    /// Seconds a SIGTERM drain waits for calls to end before Reel sends BYE itself.
    pub drain_timeout_s: u32,
    /// Address put in SDP `c=` and Contact when the listener is a wildcard; `None`: the local
    /// address the request arrived on (or the route towards the sender).
    pub advertise_ip: Option<std::net::IpAddr>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MediaSettings {
    pub rtp_port_lo: u16,
    pub rtp_port_hi: u16,
    pub threads: usize,
    pub cpus: Vec<usize>,
    pub io_backend: IoBackend,
    pub rcvbuf: usize,
    pub journal_fsync_ms: u64,
    /// Record only packets from the first source heard on a stream; others are counted as
    /// `foreign` and dropped.
    pub latch: bool,
    /// 0: every stream is received on its own RTP/RTCP sockets. Otherwise media thread `i`
    /// receives its share of the RTP port range on one socket at `tproxy_port + i`, where an
    /// nftables TPROXY rule sends it (needs CAP_NET_ADMIN; see tuning/README.md).
    pub tproxy_port: u16,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RecordSettings {
    /// `wav-g711` or `wav-pcm16`.
    pub audio: String,
    /// Which offered codec a stream is answered with: `wav` (default: the first offered of
    /// PCMU, PCMA and G722, which `audio.wav` holds; G729 or opus only when nothing else is
    /// offered) or `offer` (the first offered recordable codec, the offerer's preference).
    pub codec_preference: String,
    pub keep_raw: bool,
    /// Largest rs-metadata document (bytes) and element depth.
    pub max_metadata_bytes: usize,
    pub max_metadata_depth: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HttpSettings {
    pub listen: SocketAddr,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReplicationSettings {
    /// `none` (default), `primary`, `standby`, `both`.
    pub role: String,
    pub listen: Option<SocketAddr>,
    pub targets: Vec<String>,
    pub srv: Option<String>,
    /// `on-completion`, `scheduled`, `live`.
    pub mode: String,
    pub window: Option<String>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub ca: Option<PathBuf>,
}

/// The effective, validated configuration.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Config {
    pub node_name: String,
    pub data_dir: PathBuf,
    pub sip: SipSettings,
    pub media: MediaSettings,
    pub record: RecordSettings,
    pub http: HttpSettings,
    pub replication: ReplicationSettings,
}

/// CLI flags that override the file (`reel serve --sip ... --data-dir ...`).
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--sip ADDR:PORT`: replaces the UDP and TCP listeners with this address (TLS listeners
    /// from the file stay).
    pub sip: Option<String>,
    pub data_dir: Option<PathBuf>,
    /// `LO-HI`
    pub rtp_ports: Option<String>,
    pub http: Option<String>,
    /// `auto|uring|epoll`
    pub io_backend: Option<String>,
}

/// Key used when the TOML text itself is malformed; [`Config::load`] replaces it with the path.
const SYNTAX_KEY: &str = "toml";

/// Defaults (DESIGN §3 and §5), named so the sample file, the docs and the tests agree.
pub mod defaults {
    pub const DATA_DIR: &str = "./reel-data";
    pub const SIP_LISTEN: [&str; 2] = ["udp:0.0.0.0:5060", "tcp:0.0.0.0:5060"];
    pub const MAX_SESSIONS: usize = 10_000;
    pub const MAX_MESSAGE_BYTES: usize = 65_535;
    /// A SIPREC INVITE (SDP + metadata) is rarely under 2 KB; below 4 KB real calls would fail.
    pub const MIN_MESSAGE_BYTES: usize = 4_096;
    pub const MAX_STREAMS: usize = 16;
    pub const RETRY_AFTER_S: u32 = 30;
    /// RFC 4028: Min-SE may not be below 90 seconds.
    pub const MIN_SE_S: u32 = 90;
    pub const DRAIN_TIMEOUT_S: u32 = 30;
    pub const RTP_PORT_LO: u16 = 16_384;
    pub const RTP_PORT_HI: u16 = 32_767;
    pub const THREADS: usize = 1;
    pub const RCVBUF: usize = 4 * 1024 * 1024;
    pub const JOURNAL_FSYNC_MS: u64 = 1_000;
    pub const AUDIO: &str = "wav-g711";
    pub const CODEC_PREFERENCE: &str = "wav";
    pub const MAX_METADATA_BYTES: usize = 262_144;
    pub const MAX_METADATA_DEPTH: usize = 32;
    pub const HTTP_LISTEN: &str = "127.0.0.1:8080";
    pub const REPLICATION_ROLE: &str = "none";
    pub const REPLICATION_MODE: &str = "on-completion";
    /// Fallback node name when `/etc/hostname` is missing or empty.
    pub const NODE_NAME: &str = "reel";
}

impl ListenProto {
    pub fn as_str(self) -> &'static str {
        match self {
            ListenProto::Udp => "udp",
            ListenProto::Tcp => "tcp",
            ListenProto::Tls => "tls",
        }
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // SocketAddr's Display already brackets IPv6 (`[::]:5060`).
        write!(f, "{}:{}", self.proto.as_str(), self.addr)
    }
}

impl std::str::FromStr for Listen {
    type Err = String;
    /// `udp:0.0.0.0:5060`, `tcp:[::]:5060`, `tls:10.0.0.1:5061`.
    fn from_str(s: &str) -> Result<Listen, String> {
        let expected = "expected PROTO:ADDR:PORT with PROTO udp, tcp or tls, e.g. \"udp:0.0.0.0:5060\" or \"tcp:[::]:5060\"";
        let Some((proto, addr)) = s.split_once(':') else {
            return Err(format!("{s:?} has no protocol; {expected}"));
        };
        let proto = match proto.to_ascii_lowercase().as_str() {
            "udp" => ListenProto::Udp,
            "tcp" => ListenProto::Tcp,
            "tls" => ListenProto::Tls,
            other => return Err(format!("unknown protocol {other:?} in {s:?}; {expected}")),
        };
        let addr = addr
            .parse::<SocketAddr>()
            .map_err(|_| format!("bad address {addr:?} in {s:?}; {expected}"))?;
        Ok(Listen { proto, addr })
    }
}

impl std::str::FromStr for IoBackend {
    type Err = String;
    fn from_str(s: &str) -> Result<IoBackend, String> {
        match s {
            "auto" => Ok(IoBackend::Auto),
            "uring" => Ok(IoBackend::Uring),
            "epoll" => Ok(IoBackend::Epoll),
            _ => Err(format!(
                "unknown I/O backend {s:?}; expected auto, uring or epoll"
            )),
        }
    }
}

impl IoBackend {
    pub fn as_str(self) -> &'static str {
        match self {
            IoBackend::Auto => "auto",
            IoBackend::Uring => "uring",
            IoBackend::Epoll => "epoll",
        }
    }
}

// ---- The file as written: every key optional, unknown keys rejected by name. ----

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    node_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_dir: Option<String>,
    #[serde(default)]
    sip: RawSip,
    #[serde(default)]
    media: RawMedia,
    #[serde(default)]
    record: RawRecord,
    #[serde(default)]
    http: RawHttp,
    #[serde(default)]
    replication: RawReplication,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawSip {
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_cert: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    allow_from: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_sessions: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_message_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_streams: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_s: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    min_se_s: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    drain_timeout_s: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    advertise_ip: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawMedia {
    #[serde(skip_serializing_if = "Option::is_none")]
    rtp_ports: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    threads: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cpus: Option<Vec<u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    io_backend: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rcvbuf: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    journal_fsync_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    latch: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tproxy_port: Option<u64>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawRecord {
    #[serde(skip_serializing_if = "Option::is_none")]
    audio: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    codec_preference: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    keep_raw: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_metadata_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_metadata_depth: Option<u64>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawReplication {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    targets: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    srv: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    window: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cert: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ca: Option<String>,
}

fn err(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        message: message.into(),
    }
}

impl Default for Config {
    /// The embedded defaults (what `reel serve` with no flags runs on).
    fn default() -> Config {
        // Cannot fail: the defaults are validated by the `defaults_match_design` test.
        Config::from_raw(RawConfig::default()).expect("embedded defaults are valid")
    }
}

impl Config {
    /// Embedded defaults, the file (if any), then the overrides; validated.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let Some(path) = file else {
            return Config::from_raw_with(RawConfig::default(), overrides);
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            err(
                path.display().to_string(),
                format!("cannot read the configuration file: {e}"),
            )
        })?;
        Config::from_toml(&text, overrides).map_err(|mut e| {
            if e.key == SYNTAX_KEY {
                e.key = path.display().to_string();
            }
            e
        })
    }

    /// Parses TOML text (for tests and `check-config`), then validates.
    pub fn from_toml(text: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
        Config::from_raw_with(raw, overrides)
    }

    /// The effective configuration as TOML, for `reel check-config`. [`Config::from_toml`]
    /// accepts it again and yields the same `Config`.
    pub fn to_toml(&self) -> String {
        let path = |p: &Path| p.to_string_lossy().into_owned();
        let raw = RawConfig {
            node_name: Some(self.node_name.clone()),
            data_dir: Some(path(&self.data_dir)),
            sip: RawSip {
                listen: Some(self.sip.listen.iter().map(Listen::to_string).collect()),
                tls_cert: self.sip.tls_cert.as_deref().map(path),
                tls_key: self.sip.tls_key.as_deref().map(path),
                allow_from: Some(self.sip.allow_from.iter().map(|n| n.to_string()).collect()),
                max_sessions: Some(self.sip.max_sessions as u64),
                max_message_bytes: Some(self.sip.max_message_bytes as u64),
                max_streams: Some(self.sip.max_streams as u64),
                retry_after_s: Some(self.sip.retry_after_s),
                min_se_s: Some(self.sip.min_se_s),
                drain_timeout_s: Some(self.sip.drain_timeout_s),
                advertise_ip: self.sip.advertise_ip.map(|ip| ip.to_string()),
            },
            media: RawMedia {
                rtp_ports: Some(format!(
                    "{}-{}",
                    self.media.rtp_port_lo, self.media.rtp_port_hi
                )),
                threads: Some(self.media.threads as u64),
                cpus: Some(self.media.cpus.iter().map(|&c| c as u64).collect()),
                io_backend: Some(self.media.io_backend.as_str().to_string()),
                rcvbuf: Some(self.media.rcvbuf as u64),
                journal_fsync_ms: Some(self.media.journal_fsync_ms),
                latch: Some(self.media.latch),
                tproxy_port: Some(u64::from(self.media.tproxy_port)),
            },
            record: RawRecord {
                audio: Some(self.record.audio.clone()),
                codec_preference: Some(self.record.codec_preference.clone()),
                keep_raw: Some(self.record.keep_raw),
                max_metadata_bytes: Some(self.record.max_metadata_bytes as u64),
                max_metadata_depth: Some(self.record.max_metadata_depth as u64),
            },
            http: RawHttp {
                listen: Some(self.http.listen.to_string()),
            },
            replication: RawReplication {
                role: Some(self.replication.role.clone()),
                listen: self.replication.listen.map(|a| a.to_string()),
                targets: Some(self.replication.targets.clone()),
                srv: self.replication.srv.clone(),
                mode: Some(self.replication.mode.clone()),
                window: self.replication.window.clone(),
                cert: self.replication.cert.as_deref().map(path),
                key: self.replication.key.as_deref().map(path),
                ca: self.replication.ca.as_deref().map(path),
            },
        };
        // Serialising plain strings, integers and arrays into TOML cannot fail.
        toml::to_string(&raw).expect("config serialises to TOML")
    }

    fn from_raw_with(raw: RawConfig, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut config = Config::from_raw(raw)?;
        config.apply_overrides(overrides)?;
        config.check_whole()?;
        Ok(config)
    }

    /// Per-key parsing and range checks (cross-key rules are in `check_whole`, run after the
    /// overrides so that, e.g., `--sip` cannot break the TLS requirement unnoticed).
    fn from_raw(raw: RawConfig) -> Result<Config, ConfigError> {
        let node_name = match raw.node_name {
            Some(n) => {
                if n.trim().is_empty() || n.chars().any(char::is_control) {
                    return Err(err(
                        "node_name",
                        format!(
                            "{n:?} is not a usable name; expected a non-empty name without control characters"
                        ),
                    ));
                }
                n
            }
            None => host_name(),
        };
        let data_dir = match raw.data_dir {
            Some(d) if d.is_empty() => {
                return Err(err(
                    "data_dir",
                    "is empty; expected a directory path such as \"./reel-data\"",
                ));
            }
            Some(d) => PathBuf::from(d),
            None => PathBuf::from(defaults::DATA_DIR),
        };
        Ok(Config {
            node_name,
            data_dir,
            sip: sip_from_raw(raw.sip)?,
            media: media_from_raw(raw.media)?,
            record: record_from_raw(raw.record)?,
            http: HttpSettings {
                listen: parse_socket_addr(
                    "http.listen",
                    raw.http.listen.as_deref().unwrap_or(defaults::HTTP_LISTEN),
                )?,
            },
            replication: replication_from_raw(raw.replication)?,
        })
    }

    fn apply_overrides(&mut self, o: &Overrides) -> Result<(), ConfigError> {
        if let Some(sip) = &o.sip {
            let addr = parse_socket_addr("--sip", sip)?;
            // TLS listeners come only from the file (they need cert and key): keep them.
            self.sip.listen.retain(|l| l.proto == ListenProto::Tls);
            self.sip.listen.insert(
                0,
                Listen {
                    proto: ListenProto::Udp,
                    addr,
                },
            );
            self.sip.listen.insert(
                1,
                Listen {
                    proto: ListenProto::Tcp,
                    addr,
                },
            );
        }
        if let Some(dir) = &o.data_dir {
            if dir.as_os_str().is_empty() {
                return Err(err("--data-dir", "is empty; expected a directory path"));
            }
            self.data_dir = dir.clone();
        }
        if let Some(ports) = &o.rtp_ports {
            let (lo, hi) = parse_port_range("--rtp-ports", ports)?;
            self.media.rtp_port_lo = lo;
            self.media.rtp_port_hi = hi;
        }
        if let Some(http) = &o.http {
            self.http.listen = parse_socket_addr("--http", http)?;
        }
        if let Some(b) = &o.io_backend {
            self.media.io_backend = b.parse().map_err(|m| err("--io-backend", m))?;
        }
        Ok(())
    }

    /// Rules that involve more than one key.
    fn check_whole(&self) -> Result<(), ConfigError> {
        let sip = &self.sip;
        if sip.listen.is_empty() {
            return Err(err(
                "sip.listen",
                "is empty; expected at least one listener such as \"udp:0.0.0.0:5060\"",
            ));
        }
        for (i, l) in sip.listen.iter().enumerate() {
            if sip.listen[..i].contains(l) {
                return Err(err(
                    format!("sip.listen[{i}]"),
                    format!("{l} is listed twice; expected each listener once"),
                ));
            }
        }
        if sip.listen.iter().any(|l| l.proto == ListenProto::Tls) {
            if sip.tls_cert.is_none() {
                return Err(err(
                    "sip.tls_cert",
                    "is required when a tls: listener is configured; expected the path of a PEM certificate chain",
                ));
            }
            if sip.tls_key.is_none() {
                return Err(err(
                    "sip.tls_key",
                    "is required when a tls: listener is configured; expected the path of a PEM private key",
                ));
            }
        }
        let r = &self.replication;
        if r.role == "none" {
            return Ok(());
        }
        // Files are only required to be named here; they are opened when the server starts.
        for (key, value) in [("cert", &r.cert), ("key", &r.key), ("ca", &r.ca)] {
            if value.is_none() {
                return Err(err(
                    format!("replication.{key}"),
                    format!(
                        "is required when replication.role = {:?}; expected a PEM file path",
                        r.role
                    ),
                ));
            }
        }
        if (r.role == "standby" || r.role == "both") && r.listen.is_none() {
            return Err(err(
                "replication.listen",
                format!(
                    "is required when replication.role = {:?} (the standby receives on it); expected ADDR:PORT such as \"0.0.0.0:4433\"",
                    r.role
                ),
            ));
        }
        if (r.role == "primary" || r.role == "both") && r.targets.is_empty() && r.srv.is_none() {
            return Err(err(
                "replication.targets",
                format!(
                    "replication.role = {:?} needs somewhere to send: expected targets = [\"quic://host:port\"] or srv = \"_reel._udp.example.com\"",
                    r.role
                ),
            ));
        }
        Ok(())
    }
}

fn sip_from_raw(raw: RawSip) -> Result<SipSettings, ConfigError> {
    let listen = match raw.listen {
        Some(list) => list
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.parse::<Listen>()
                    .map_err(|m| err(format!("sip.listen[{i}]"), m))
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => defaults::SIP_LISTEN
            .iter()
            .map(|s| s.parse().expect("default listener"))
            .collect(),
    };
    let allow_from = raw
        .allow_from
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, s)| parse_net(s).map_err(|m| err(format!("sip.allow_from[{i}]"), m)))
        .collect::<Result<Vec<_>, _>>()?;
    let max_message_bytes = to_usize(
        "sip.max_message_bytes",
        raw.max_message_bytes,
        defaults::MAX_MESSAGE_BYTES,
    )?;
    if max_message_bytes < defaults::MIN_MESSAGE_BYTES {
        return Err(err(
            "sip.max_message_bytes",
            format!(
                "{max_message_bytes} is too small; expected at least {}",
                defaults::MIN_MESSAGE_BYTES
            ),
        ));
    }
    let min_se_s = raw.min_se_s.unwrap_or(defaults::MIN_SE_S);
    if min_se_s < 90 {
        return Err(err(
            "sip.min_se_s",
            format!("{min_se_s} is below the RFC 4028 minimum; expected at least 90"),
        ));
    }
    let advertise_ip = match raw.advertise_ip {
        None => None,
        Some(s) => {
            let ip = s.parse::<std::net::IpAddr>().map_err(|_| {
                err("sip.advertise_ip", format!("{s:?} is not an IP address; expected e.g. \"192.0.2.10\" or \"2001:db8::10\""))
            })?;
            if ip.is_unspecified() {
                return Err(err(
                    "sip.advertise_ip",
                    format!("{ip} is a wildcard; expected the address peers should send to"),
                ));
            }
            Some(ip)
        }
    };
    Ok(SipSettings {
        listen,
        tls_cert: non_empty_path("sip.tls_cert", raw.tls_cert)?,
        tls_key: non_empty_path("sip.tls_key", raw.tls_key)?,
        allow_from,
        max_sessions: at_least_one("sip.max_sessions", raw.max_sessions, defaults::MAX_SESSIONS)?,
        max_message_bytes,
        max_streams: at_least_one("sip.max_streams", raw.max_streams, defaults::MAX_STREAMS)?,
        retry_after_s: raw.retry_after_s.unwrap_or(defaults::RETRY_AFTER_S),
        min_se_s,
        drain_timeout_s: raw.drain_timeout_s.unwrap_or(defaults::DRAIN_TIMEOUT_S),
        advertise_ip,
    })
}

fn media_from_raw(raw: RawMedia) -> Result<MediaSettings, ConfigError> {
    let (rtp_port_lo, rtp_port_hi) = match raw.rtp_ports {
        Some(s) => parse_port_range("media.rtp_ports", &s)?,
        None => (defaults::RTP_PORT_LO, defaults::RTP_PORT_HI),
    };
    let mut cpus: Vec<usize> = Vec::new();
    for (i, &c) in raw.cpus.unwrap_or_default().iter().enumerate() {
        let c =
            usize::try_from(c).map_err(|_| err(format!("media.cpus[{i}]"), "is out of range"))?;
        if cpus.contains(&c) {
            return Err(err(
                format!("media.cpus[{i}]"),
                format!("core {c} is listed twice; expected distinct core indices"),
            ));
        }
        cpus.push(c);
    }
    let io_backend = match raw.io_backend {
        Some(s) => s.parse().map_err(|m| err("media.io_backend", m))?,
        None => IoBackend::Auto,
    };
    let rcvbuf = to_usize("media.rcvbuf", raw.rcvbuf, defaults::RCVBUF)?;
    if rcvbuf < 65_536 {
        return Err(err(
            "media.rcvbuf",
            format!(
                "{rcvbuf} bytes is too small for RTP bursts; expected at least 65536 (default {})",
                defaults::RCVBUF
            ),
        ));
    }
    let journal_fsync_ms = raw.journal_fsync_ms.unwrap_or(defaults::JOURNAL_FSYNC_MS);
    if !(10..=60_000).contains(&journal_fsync_ms) {
        return Err(err(
            "media.journal_fsync_ms",
            format!("{journal_fsync_ms} is out of range; expected 10..=60000 milliseconds"),
        ));
    }
    let threads = at_least_one("media.threads", raw.threads, defaults::THREADS)?;
    let tproxy_port = match raw.tproxy_port.unwrap_or(0) {
        0 => 0,
        p => {
            let last = p + threads as u64 - 1;
            if last > 65535 {
                return Err(err(
                    "media.tproxy_port",
                    format!("{p} + {threads} media threads runs past port 65535"),
                ));
            }
            if p <= u64::from(rtp_port_hi) && last >= u64::from(rtp_port_lo) {
                return Err(err(
                    "media.tproxy_port",
                    format!("ports {p}-{last} overlap media.rtp_ports {rtp_port_lo}-{rtp_port_hi}"),
                ));
            }
            p as u16
        }
    };
    Ok(MediaSettings {
        rtp_port_lo,
        rtp_port_hi,
        threads,
        cpus,
        io_backend,
        rcvbuf,
        journal_fsync_ms,
        latch: raw.latch.unwrap_or(true),
        tproxy_port,
    })
}

fn record_from_raw(raw: RawRecord) -> Result<RecordSettings, ConfigError> {
    let audio = raw.audio.unwrap_or_else(|| defaults::AUDIO.to_string());
    if audio != "wav-g711" && audio != "wav-pcm16" {
        return Err(err(
            "record.audio",
            format!("unknown audio format {audio:?}; expected \"wav-g711\" or \"wav-pcm16\""),
        ));
    }
    let codec_preference = raw
        .codec_preference
        .unwrap_or_else(|| defaults::CODEC_PREFERENCE.to_string());
    if codec_preference != "wav" && codec_preference != "offer" {
        return Err(err(
            "record.codec_preference",
            format!("unknown codec preference {codec_preference:?}; expected \"wav\" or \"offer\""),
        ));
    }
    let max_metadata_bytes = to_usize(
        "record.max_metadata_bytes",
        raw.max_metadata_bytes,
        defaults::MAX_METADATA_BYTES,
    )?;
    if max_metadata_bytes < 1024 {
        return Err(err(
            "record.max_metadata_bytes",
            format!(
                "{max_metadata_bytes} is too small for any real metadata; expected at least 1024"
            ),
        ));
    }
    let max_metadata_depth = to_usize(
        "record.max_metadata_depth",
        raw.max_metadata_depth,
        defaults::MAX_METADATA_DEPTH,
    )?;
    // RFC 7865 documents nest at least 4 deep (recording/participant/nameID/name).
    if max_metadata_depth < 4 {
        return Err(err(
            "record.max_metadata_depth",
            format!(
                "{max_metadata_depth} is too shallow for RFC 7865 metadata; expected at least 4"
            ),
        ));
    }
    Ok(RecordSettings {
        audio,
        codec_preference,
        keep_raw: raw.keep_raw.unwrap_or(false),
        max_metadata_bytes,
        max_metadata_depth,
    })
}

fn replication_from_raw(raw: RawReplication) -> Result<ReplicationSettings, ConfigError> {
    let role = raw
        .role
        .unwrap_or_else(|| defaults::REPLICATION_ROLE.to_string());
    if !["none", "primary", "standby", "both"].contains(&role.as_str()) {
        return Err(err(
            "replication.role",
            format!(
                "unknown role {role:?}; expected \"none\", \"primary\", \"standby\" or \"both\""
            ),
        ));
    }
    let mode = raw
        .mode
        .unwrap_or_else(|| defaults::REPLICATION_MODE.to_string());
    if !["on-completion", "scheduled", "live"].contains(&mode.as_str()) {
        return Err(err(
            "replication.mode",
            format!("unknown mode {mode:?}; expected \"on-completion\", \"scheduled\" or \"live\""),
        ));
    }
    let listen = raw
        .listen
        .map(|s| parse_socket_addr("replication.listen", &s))
        .transpose()?;
    let targets = raw.targets.unwrap_or_default();
    for (i, t) in targets.iter().enumerate() {
        check_quic_target(t).map_err(|m| err(format!("replication.targets[{i}]"), m))?;
    }
    if let Some(srv) = &raw.srv
        && (srv.is_empty() || srv.contains(char::is_whitespace))
    {
        return Err(err(
            "replication.srv",
            format!("{srv:?} is not a DNS name; expected e.g. \"_reel._udp.example.com\""),
        ));
    }
    if let Some(w) = &raw.window {
        check_window(w).map_err(|m| err("replication.window", m))?;
    }
    if mode == "scheduled" && raw.window.is_none() {
        return Err(err(
            "replication.window",
            "is required when replication.mode = \"scheduled\"; expected \"HH:MM-HH:MM\" such as \"01:00-05:00\"",
        ));
    }
    Ok(ReplicationSettings {
        role,
        listen,
        targets,
        srv: raw.srv,
        mode,
        window: raw.window,
        cert: non_empty_path("replication.cert", raw.cert)?,
        key: non_empty_path("replication.key", raw.key)?,
        ca: non_empty_path("replication.ca", raw.ca)?,
    })
}

/// `/etc/hostname`, else `reel`.
fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .and_then(|s| s.lines().next().map(|l| l.trim().to_string()))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| defaults::NODE_NAME.to_string())
}

fn to_usize(key: &str, v: Option<u64>, default: usize) -> Result<usize, ConfigError> {
    match v {
        None => Ok(default),
        Some(v) => usize::try_from(v).map_err(|_| err(key, format!("{v} is too large"))),
    }
}

fn at_least_one(key: &str, v: Option<u64>, default: usize) -> Result<usize, ConfigError> {
    let v = to_usize(key, v, default)?;
    if v == 0 {
        return Err(err(key, "is 0; expected at least 1"));
    }
    Ok(v)
}

fn non_empty_path(key: &str, v: Option<String>) -> Result<Option<PathBuf>, ConfigError> {
    match v {
        Some(s) if s.is_empty() => Err(err(key, "is empty; expected a file path")),
        other => Ok(other.map(PathBuf::from)),
    }
}

fn parse_socket_addr(key: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse().map_err(|_| {
        err(
            key,
            format!("{s:?} is not ADDR:PORT; expected e.g. \"127.0.0.1:8080\" or \"[::1]:8080\""),
        )
    })
}

/// `LO-HI`: LO even (RTP even, RTCP odd), LO < HI, both within 1024..=65535.
fn parse_port_range(key: &str, s: &str) -> Result<(u16, u16), ConfigError> {
    let expected =
        "expected LO-HI with an even LO below HI, within 1024-65535, e.g. \"16384-32767\"";
    let bad = |what: &str| err(key, format!("{s:?} {what}; {expected}"));
    let (lo, hi) = s.split_once('-').ok_or_else(|| bad("is not a range"))?;
    let lo: u32 = lo
        .trim()
        .parse()
        .map_err(|_| bad("has a low port that is not a number"))?;
    let hi: u32 = hi
        .trim()
        .parse()
        .map_err(|_| bad("has a high port that is not a number"))?;
    if !(1024..=65_535).contains(&lo) || !(1024..=65_535).contains(&hi) {
        return Err(bad("is outside 1024-65535"));
    }
    if !lo.is_multiple_of(2) {
        return Err(bad("starts on an odd port"));
    }
    if lo >= hi {
        return Err(bad("does not hold at least 2 ports"));
    }
    Ok((lo as u16, hi as u16))
}

/// CIDR, or a bare address meaning that one host (/32 or /128).
fn parse_net(s: &str) -> Result<ipnet::IpNet, String> {
    if let Ok(net) = s.parse::<ipnet::IpNet>() {
        return Ok(net);
    }
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        return Ok(ipnet::IpNet::from(ip));
    }
    Err(format!(
        "{s:?} is not a network; expected CIDR such as \"10.0.0.0/8\" or an address such as \"192.0.2.7\""
    ))
}

fn check_quic_target(t: &str) -> Result<(), String> {
    let expected = "expected quic://host:port, e.g. \"quic://standby.example.com:4433\"";
    let rest = t
        .strip_prefix("quic://")
        .ok_or_else(|| format!("{t:?} is not a quic:// URL; {expected}"))?;
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("{t:?} has no port; {expected}"))?;
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
    };
    if !host_ok {
        return Err(format!("{t:?} has a bad host; {expected}"));
    }
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok(()),
        _ => Err(format!("{t:?} has a bad port; {expected}")),
    }
}

/// `HH:MM-HH:MM` (may wrap midnight, e.g. `22:00-04:00`).
fn check_window(w: &str) -> Result<(), String> {
    let expected = "expected \"HH:MM-HH:MM\" such as \"01:00-05:00\"";
    let hhmm = |s: &str| -> Option<u32> {
        let (h, m) = s.split_once(':')?;
        if h.len() != 2 || m.len() != 2 {
            return None;
        }
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60).then_some(h * 60 + m)
    };
    let (a, b) = w
        .split_once('-')
        .ok_or_else(|| format!("{w:?} is not a window; {expected}"))?;
    match (hhmm(a), hhmm(b)) {
        (Some(a), Some(b)) if a != b => Ok(()),
        (Some(_), Some(_)) => Err(format!("{w:?} is empty (start = end); {expected}")),
        _ => Err(format!("{w:?} is not a window; {expected}")),
    }
}

/// Maps a toml/serde error to the dotted key it is about. The error carries only a byte span,
/// so the span is looked up in a spanned parse of the same text.
fn toml_error(text: &str, e: &toml::de::Error) -> ConfigError {
    // serde names Rust types ("expected u64"); say it in the file's terms.
    let message = e
        .message()
        .trim()
        .replace("expected u64", "expected a non-negative integer")
        .replace("expected u32", "expected a non-negative integer below 2^32")
        .replace("expected a boolean", "expected true or false");
    let Some(span) = e.span() else {
        return err(SYNTAX_KEY, message);
    };
    let key = match toml::de::DeTable::parse(text) {
        Ok(table) => find_key(table.get_ref(), span.start, ""),
        // Not even valid TOML: say where, since there is no key to name.
        Err(_) => None,
    };
    match key {
        Some(key) => err(key, message),
        None => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            err(
                SYNTAX_KEY,
                format!("syntax error at line {line}, column {column}: {message}"),
            )
        }
    }
}

fn span_has(span: std::ops::Range<usize>, pos: usize) -> bool {
    span.contains(&pos) || (span.is_empty() && span.start == pos)
}

fn find_key(table: &toml::de::DeTable<'_>, pos: usize, prefix: &str) -> Option<String> {
    for (k, v) in table.iter() {
        let path = if prefix.is_empty() {
            k.get_ref().to_string()
        } else {
            format!("{prefix}.{}", k.get_ref())
        };
        if let Some(deeper) = find_in_value(v, pos, &path) {
            return Some(deeper);
        }
        if span_has(k.span(), pos) || span_has(v.span(), pos) {
            return Some(path);
        }
    }
    None
}

fn find_in_value(
    v: &toml::Spanned<toml::de::DeValue<'_>>,
    pos: usize,
    path: &str,
) -> Option<String> {
    match v.get_ref() {
        toml::de::DeValue::Table(t) => find_key(t, pos, path),
        toml::de::DeValue::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
            let p = format!("{path}[{i}]");
            find_in_value(item, pos, &p).or_else(|| span_has(item.span(), pos).then_some(p))
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, &Overrides::default())
    }

    fn key_of(text: &str) -> String {
        parse(text).expect_err("should be rejected").key
    }

    fn listen(s: &str) -> Listen {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_match_design() {
        let c = parse("").unwrap();
        assert_eq!(c.data_dir, PathBuf::from("./reel-data"));
        assert_eq!(
            c.sip.listen,
            vec![listen("udp:0.0.0.0:5060"), listen("tcp:0.0.0.0:5060")]
        );
        assert_eq!(c.sip.tls_cert, None);
        assert!(c.sip.allow_from.is_empty());
        assert_eq!(c.sip.max_sessions, 10_000);
        assert_eq!(c.sip.max_message_bytes, 65_535);
        assert_eq!(c.sip.max_streams, 16);
        assert_eq!(c.sip.retry_after_s, 30);
        assert_eq!(c.sip.min_se_s, 90);
        assert_eq!(c.sip.drain_timeout_s, 30);
        assert_eq!(c.sip.advertise_ip, None);
        assert_eq!((c.media.rtp_port_lo, c.media.rtp_port_hi), (16_384, 32_767));
        assert_eq!(c.media.threads, 1);
        assert!(c.media.cpus.is_empty());
        assert_eq!(c.media.io_backend, IoBackend::Auto);
        assert_eq!(c.media.rcvbuf, 4 * 1024 * 1024);
        assert_eq!(c.media.journal_fsync_ms, 1000);
        assert_eq!(c.record.audio, "wav-g711");
        assert!(!c.record.keep_raw);
        assert_eq!(c.record.max_metadata_bytes, 262_144);
        assert_eq!(c.record.max_metadata_depth, 32);
        assert_eq!(c.http.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.replication.role, "none");
        assert_eq!(c.replication.mode, "on-completion");
        assert!(c.replication.targets.is_empty());
        assert!(!c.node_name.is_empty());
        assert_eq!(Config::default(), c);
    }

    #[test]
    fn load_without_file_is_defaults() {
        assert_eq!(
            Config::load(None, &Overrides::default()).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let e = parse("[sip]\nmax_sesions = 5\n").unwrap_err();
        assert_eq!(e.key, "sip.max_sesions");
        assert!(e.message.contains("unknown field"), "{e}");
        assert!(
            e.message.contains("max_sessions"),
            "lists the expected keys: {e}"
        );
    }

    #[test]
    fn unknown_top_level_key_is_named() {
        assert_eq!(key_of("colour = \"blue\"\n"), "colour");
        assert_eq!(key_of("[metrics]\nx = 1\n"), "metrics");
    }

    #[test]
    fn type_error_names_key() {
        let e = parse("[sip]\nmax_sessions = \"x\"\n").unwrap_err();
        assert_eq!(e.key, "sip.max_sessions");
        assert!(e.message.contains("invalid type"), "{e}");
    }

    #[test]
    fn type_error_in_array_names_index() {
        assert_eq!(key_of("[media]\ncpus = [0, \"one\"]\n"), "media.cpus[1]");
    }

    #[test]
    fn type_error_in_inline_table_names_key() {
        assert_eq!(key_of("record = { keep_raw = 3 }\n"), "record.keep_raw");
    }

    #[test]
    fn negative_number_names_key() {
        assert_eq!(key_of("[media]\nthreads = -1\n"), "media.threads");
        assert_eq!(
            key_of("[media]\nrtp_ports = \"20000-29999\"\ntproxy_port = 25000\n"),
            "media.tproxy_port"
        );
        assert_eq!(
            key_of("[media]\nthreads = 4\ntproxy_port = 65534\n"),
            "media.tproxy_port"
        );
    }

    #[test]
    fn syntax_error_says_where() {
        let e = parse("node_name = \"a\"\n[sip\n").unwrap_err();
        assert_eq!(e.key, "toml");
        assert!(e.message.contains("line 2"), "{e}");
    }

    #[test]
    fn unreadable_file_error_names_path() {
        let e = Config::load(
            Some(Path::new("/nonexistent/reel.toml")),
            &Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(e.key, "/nonexistent/reel.toml");
        assert!(e.message.contains("cannot read"), "{e}");
    }

    #[test]
    fn syntax_error_in_file_names_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[sip\n").unwrap();
        let e = Config::load(Some(&path), &Overrides::default()).unwrap_err();
        assert_eq!(e.key, path.display().to_string());
    }

    #[test]
    fn load_reads_file_then_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reel.toml");
        std::fs::write(
            &path,
            "data_dir = \"/var/lib/reel\"\n[media]\nthreads = 2\n",
        )
        .unwrap();
        let o = Overrides {
            data_dir: Some("/srv/rec".into()),
            ..Overrides::default()
        };
        let c = Config::load(Some(&path), &o).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/srv/rec"));
        assert_eq!(c.media.threads, 2);
    }

    #[test]
    fn listeners_parse_ipv4_and_ipv6() {
        let c = parse("[sip]\nlisten = [\"udp:[::]:5060\", \"TCP:10.0.0.1:5070\"]\n").unwrap();
        assert_eq!(c.sip.listen[0].proto, ListenProto::Udp);
        assert_eq!(c.sip.listen[0].addr, "[::]:5060".parse().unwrap());
        assert_eq!(c.sip.listen[1], listen("tcp:10.0.0.1:5070"));
    }

    #[test]
    fn bad_listener_names_index() {
        let e =
            parse("[sip]\nlisten = [\"udp:0.0.0.0:5060\", \"sctp:0.0.0.0:5060\"]\n").unwrap_err();
        assert_eq!(e.key, "sip.listen[1]");
        assert!(e.message.contains("udp, tcp or tls"), "{e}");
        assert_eq!(
            key_of("[sip]\nlisten = [\"udp:0.0.0.0\"]\n"),
            "sip.listen[0]"
        );
    }

    #[test]
    fn duplicate_listener_is_rejected() {
        assert_eq!(
            key_of("[sip]\nlisten = [\"udp:0.0.0.0:5060\", \"udp:0.0.0.0:5060\"]\n"),
            "sip.listen[1]"
        );
    }

    #[test]
    fn empty_listener_list_is_rejected() {
        assert_eq!(key_of("[sip]\nlisten = []\n"), "sip.listen");
    }

    #[test]
    fn tls_listener_requires_cert() {
        let e = parse("[sip]\nlisten = [\"tls:0.0.0.0:5061\"]\n").unwrap_err();
        assert_eq!(e.key, "sip.tls_cert");
        let e =
            parse("[sip]\nlisten = [\"tls:0.0.0.0:5061\"]\ntls_cert = \"c.pem\"\n").unwrap_err();
        assert_eq!(e.key, "sip.tls_key");
    }

    #[test]
    fn tls_cert_files_need_not_exist_at_validation() {
        let c = parse("[sip]\nlisten = [\"tls:0.0.0.0:5061\"]\ntls_cert = \"/no/c.pem\"\ntls_key = \"/no/k.pem\"\n").unwrap();
        assert_eq!(c.sip.tls_cert, Some(PathBuf::from("/no/c.pem")));
    }

    #[test]
    fn allow_from_bare_ip_is_single_host() {
        let c = parse("[sip]\nallow_from = [\"10.0.0.0/8\", \"192.0.2.7\", \"2001:db8::1\"]\n")
            .unwrap();
        assert_eq!(c.sip.allow_from[0].to_string(), "10.0.0.0/8");
        assert_eq!(c.sip.allow_from[1].to_string(), "192.0.2.7/32");
        assert_eq!(c.sip.allow_from[2].to_string(), "2001:db8::1/128");
    }

    #[test]
    fn bad_allow_from_names_index() {
        assert_eq!(
            key_of("[sip]\nallow_from = [\"10.0.0.0/8\", \"ten\"]\n"),
            "sip.allow_from[1]"
        );
    }

    #[test]
    fn max_message_bytes_has_minimum() {
        assert_eq!(
            key_of("[sip]\nmax_message_bytes = 4095\n"),
            "sip.max_message_bytes"
        );
        assert_eq!(
            parse("[sip]\nmax_message_bytes = 4096\n")
                .unwrap()
                .sip
                .max_message_bytes,
            4096
        );
    }

    #[test]
    fn min_se_below_90_is_rejected() {
        assert_eq!(key_of("[sip]\nmin_se_s = 89\n"), "sip.min_se_s");
    }

    #[test]
    fn zero_sessions_or_streams_is_rejected() {
        assert_eq!(key_of("[sip]\nmax_sessions = 0\n"), "sip.max_sessions");
        assert_eq!(key_of("[sip]\nmax_streams = 0\n"), "sip.max_streams");
        assert_eq!(key_of("[media]\nthreads = 0\n"), "media.threads");
    }

    #[test]
    fn advertise_ip_must_be_specific() {
        assert_eq!(
            key_of("[sip]\nadvertise_ip = \"0.0.0.0\"\n"),
            "sip.advertise_ip"
        );
        assert_eq!(
            key_of("[sip]\nadvertise_ip = \"host\"\n"),
            "sip.advertise_ip"
        );
        let c = parse("[sip]\nadvertise_ip = \"192.0.2.10\"\n").unwrap();
        assert_eq!(c.sip.advertise_ip, Some("192.0.2.10".parse().unwrap()));
    }

    #[test]
    fn rtp_range_must_start_even() {
        let e = parse("[media]\nrtp_ports = \"16385-32767\"\n").unwrap_err();
        assert_eq!(e.key, "media.rtp_ports");
        assert!(e.message.contains("odd"), "{e}");
        assert!(e.message.contains("expected LO-HI"), "{e}");
    }

    #[test]
    fn rtp_range_must_hold_two_ports() {
        assert_eq!(
            key_of("[media]\nrtp_ports = \"20000-20000\"\n"),
            "media.rtp_ports"
        );
        assert_eq!(
            key_of("[media]\nrtp_ports = \"20002-20000\"\n"),
            "media.rtp_ports"
        );
        let c = parse("[media]\nrtp_ports = \"20000-20001\"\n").unwrap();
        assert_eq!((c.media.rtp_port_lo, c.media.rtp_port_hi), (20_000, 20_001));
    }

    #[test]
    fn rtp_range_within_unprivileged_ports() {
        assert_eq!(
            key_of("[media]\nrtp_ports = \"1000-2000\"\n"),
            "media.rtp_ports"
        );
        assert_eq!(
            key_of("[media]\nrtp_ports = \"60000-70000\"\n"),
            "media.rtp_ports"
        );
        assert_eq!(key_of("[media]\nrtp_ports = \"many\"\n"), "media.rtp_ports");
    }

    #[test]
    fn io_backend_values() {
        assert_eq!(
            parse("[media]\nio_backend = \"epoll\"\n")
                .unwrap()
                .media
                .io_backend,
            IoBackend::Epoll
        );
        assert_eq!(
            key_of("[media]\nio_backend = \"poll\"\n"),
            "media.io_backend"
        );
    }

    #[test]
    fn duplicate_cpu_is_rejected() {
        assert_eq!(key_of("[media]\ncpus = [2, 3, 2]\n"), "media.cpus[2]");
    }

    #[test]
    fn journal_fsync_ms_range() {
        assert_eq!(
            key_of("[media]\njournal_fsync_ms = 9\n"),
            "media.journal_fsync_ms"
        );
        assert_eq!(
            key_of("[media]\njournal_fsync_ms = 60001\n"),
            "media.journal_fsync_ms"
        );
        assert_eq!(
            parse("[media]\njournal_fsync_ms = 10\n")
                .unwrap()
                .media
                .journal_fsync_ms,
            10
        );
    }

    #[test]
    fn rcvbuf_too_small_is_rejected() {
        assert_eq!(key_of("[media]\nrcvbuf = 1024\n"), "media.rcvbuf");
    }

    #[test]
    fn record_audio_values() {
        assert_eq!(
            parse("[record]\naudio = \"wav-pcm16\"\n")
                .unwrap()
                .record
                .audio,
            "wav-pcm16"
        );
        let e = parse("[record]\naudio = \"mp3\"\n").unwrap_err();
        assert_eq!(e.key, "record.audio");
        assert!(e.message.contains("wav-g711"), "{e}");
    }

    #[test]
    fn record_codec_preference_values() {
        assert_eq!(Config::default().record.codec_preference, "wav");
        let c = parse("[record]\ncodec_preference = \"offer\"\n").unwrap();
        assert_eq!(c.record.codec_preference, "offer");
        let e = parse("[record]\ncodec_preference = \"cheap\"\n").unwrap_err();
        assert_eq!(e.key, "record.codec_preference");
        assert!(e.message.contains("\"wav\" or \"offer\""), "{e}");
    }

    #[test]
    fn metadata_limits_have_minimums() {
        assert_eq!(
            key_of("[record]\nmax_metadata_bytes = 10\n"),
            "record.max_metadata_bytes"
        );
        assert_eq!(
            key_of("[record]\nmax_metadata_depth = 2\n"),
            "record.max_metadata_depth"
        );
    }

    #[test]
    fn http_listen_must_be_addr_port() {
        assert_eq!(key_of("[http]\nlisten = \"localhost\"\n"), "http.listen");
    }

    #[test]
    fn empty_node_name_or_data_dir_is_rejected() {
        assert_eq!(key_of("node_name = \"\"\n"), "node_name");
        assert_eq!(key_of("data_dir = \"\"\n"), "data_dir");
    }

    const REPL_TLS: &str = "cert = \"c.pem\"\nkey = \"k.pem\"\nca = \"ca.pem\"\n";

    #[test]
    fn replication_role_requires_cert_key_ca() {
        let e = parse("[replication]\nrole = \"primary\"\ntargets = [\"quic://b:4433\"]\n")
            .unwrap_err();
        assert_eq!(e.key, "replication.cert");
        let e = parse("[replication]\nrole = \"primary\"\ntargets = [\"quic://b:4433\"]\ncert = \"c\"\nkey = \"k\"\n").unwrap_err();
        assert_eq!(e.key, "replication.ca");
    }

    #[test]
    fn replication_target_must_be_quic_url() {
        let text = format!(
            "[replication]\nrole = \"primary\"\ntargets = [\"quic://b.example:4433\", \"https://c:1\"]\n{REPL_TLS}"
        );
        assert_eq!(parse(&text).unwrap_err().key, "replication.targets[1]");
        let text =
            format!("[replication]\nrole = \"primary\"\ntargets = [\"quic://b\"]\n{REPL_TLS}");
        assert_eq!(parse(&text).unwrap_err().key, "replication.targets[0]");
        let text = format!(
            "[replication]\nrole = \"primary\"\ntargets = [\"quic://[2001:db8::2]:4433\"]\n{REPL_TLS}"
        );
        assert_eq!(parse(&text).unwrap().replication.targets.len(), 1);
    }

    #[test]
    fn primary_needs_targets_or_srv() {
        let text = format!("[replication]\nrole = \"primary\"\n{REPL_TLS}");
        assert_eq!(parse(&text).unwrap_err().key, "replication.targets");
        let text = format!(
            "[replication]\nrole = \"primary\"\nsrv = \"_reel._udp.example.com\"\n{REPL_TLS}"
        );
        assert!(parse(&text).is_ok());
    }

    #[test]
    fn standby_needs_listen() {
        let text = format!("[replication]\nrole = \"standby\"\n{REPL_TLS}");
        assert_eq!(parse(&text).unwrap_err().key, "replication.listen");
        let text =
            format!("[replication]\nrole = \"standby\"\nlisten = \"0.0.0.0:4433\"\n{REPL_TLS}");
        assert!(parse(&text).is_ok());
    }

    #[test]
    fn scheduled_mode_requires_window() {
        assert_eq!(
            key_of("[replication]\nmode = \"scheduled\"\n"),
            "replication.window"
        );
        let c = parse("[replication]\nmode = \"scheduled\"\nwindow = \"22:00-04:00\"\n").unwrap();
        assert_eq!(c.replication.window.as_deref(), Some("22:00-04:00"));
    }

    #[test]
    fn window_must_be_hh_mm() {
        assert_eq!(
            key_of("[replication]\nwindow = \"1:00-5:00\"\n"),
            "replication.window"
        );
        assert_eq!(
            key_of("[replication]\nwindow = \"01:00-24:00\"\n"),
            "replication.window"
        );
        assert_eq!(
            key_of("[replication]\nwindow = \"01:00-01:00\"\n"),
            "replication.window"
        );
    }

    #[test]
    fn unknown_role_and_mode_are_rejected() {
        assert_eq!(
            key_of("[replication]\nrole = \"master\"\n"),
            "replication.role"
        );
        assert_eq!(
            key_of("[replication]\nmode = \"sometimes\"\n"),
            "replication.mode"
        );
    }

    #[test]
    fn sip_override_replaces_udp_and_tcp() {
        let o = Overrides {
            sip: Some("127.0.0.1:5080".into()),
            ..Overrides::default()
        };
        let c = Config::from_toml("", &o).unwrap();
        assert_eq!(
            c.sip.listen,
            vec![listen("udp:127.0.0.1:5080"), listen("tcp:127.0.0.1:5080")]
        );
    }

    #[test]
    fn sip_override_keeps_tls_listeners() {
        let text = "[sip]\nlisten = [\"udp:0.0.0.0:5060\", \"tls:0.0.0.0:5061\"]\ntls_cert = \"c\"\ntls_key = \"k\"\n";
        let o = Overrides {
            sip: Some("[::1]:5090".into()),
            ..Overrides::default()
        };
        let c = Config::from_toml(text, &o).unwrap();
        assert_eq!(
            c.sip.listen,
            vec![
                listen("udp:[::1]:5090"),
                listen("tcp:[::1]:5090"),
                listen("tls:0.0.0.0:5061")
            ]
        );
    }

    #[test]
    fn override_errors_name_the_flag() {
        let bad = |o: Overrides| Config::from_toml("", &o).unwrap_err().key;
        assert_eq!(
            bad(Overrides {
                sip: Some("5060".into()),
                ..Default::default()
            }),
            "--sip"
        );
        assert_eq!(
            bad(Overrides {
                rtp_ports: Some("7-9".into()),
                ..Default::default()
            }),
            "--rtp-ports"
        );
        assert_eq!(
            bad(Overrides {
                http: Some("x".into()),
                ..Default::default()
            }),
            "--http"
        );
        assert_eq!(
            bad(Overrides {
                io_backend: Some("kqueue".into()),
                ..Default::default()
            }),
            "--io-backend"
        );
        assert_eq!(
            bad(Overrides {
                data_dir: Some(PathBuf::new()),
                ..Default::default()
            }),
            "--data-dir"
        );
    }

    #[test]
    fn overrides_beat_the_file() {
        let text = "data_dir = \"/a\"\n[media]\nrtp_ports = \"20000-20099\"\nio_backend = \"uring\"\n[http]\nlisten = \"0.0.0.0:9000\"\n";
        let o = Overrides {
            data_dir: Some("/b".into()),
            rtp_ports: Some("30000-30999".into()),
            http: Some("127.0.0.1:9100".into()),
            io_backend: Some("epoll".into()),
            sip: None,
        };
        let c = Config::from_toml(text, &o).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/b"));
        assert_eq!((c.media.rtp_port_lo, c.media.rtp_port_hi), (30_000, 30_999));
        assert_eq!(c.http.listen, "127.0.0.1:9100".parse().unwrap());
        assert_eq!(c.media.io_backend, IoBackend::Epoll);
    }

    #[test]
    fn to_toml_round_trips_defaults() {
        let c = Config::default();
        assert_eq!(
            Config::from_toml(&c.to_toml(), &Overrides::default()).unwrap(),
            c
        );
    }

    #[test]
    fn to_toml_round_trips_everything_set() {
        let text = r#"
node_name = "rec1"
data_dir = "/var/lib/reel"
[sip]
listen = ["udp:[::]:5060", "tcp:0.0.0.0:5060", "tls:0.0.0.0:5061"]
tls_cert = "/etc/reel/sip.crt"
tls_key = "/etc/reel/sip.key"
allow_from = ["10.0.0.0/8", "2001:db8::/32"]
max_sessions = 500
max_message_bytes = 8192
max_streams = 4
retry_after_s = 5
min_se_s = 120
drain_timeout_s = 10
advertise_ip = "192.0.2.10"
[media]
rtp_ports = "20000-29999"
threads = 2
cpus = [2, 3]
io_backend = "uring"
rcvbuf = 8388608
journal_fsync_ms = 500
[record]
audio = "wav-pcm16"
keep_raw = true
max_metadata_bytes = 65536
max_metadata_depth = 16
[http]
listen = "[::1]:8081"
[replication]
role = "both"
listen = "0.0.0.0:4433"
targets = ["quic://standby.example.com:4433"]
srv = "_reel._udp.example.com"
mode = "scheduled"
window = "01:00-05:00"
cert = "/etc/reel/r.crt"
key = "/etc/reel/r.key"
ca = "/etc/reel/ca.crt"
"#;
        let c = parse(text).unwrap();
        let printed = c.to_toml();
        assert_eq!(parse(&printed).unwrap(), c, "printed:\n{printed}");
        assert!(printed.contains("[replication]"));
    }

    #[test]
    fn listen_display_round_trips() {
        for s in [
            "udp:0.0.0.0:5060",
            "tcp:[::]:5060",
            "tls:[2001:db8::1]:5061",
        ] {
            assert_eq!(listen(s).to_string(), s);
        }
    }
}
