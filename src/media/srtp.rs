//! SRTP for the media path: SDES keys (RFC 4568), session key derivation (RFC 3711 §4.3),
//! and per-packet protect/unprotect for `AES_CM_128_HMAC_SHA1_80`, `AES_CM_128_HMAC_SHA1_32`
//! (RFC 3711) and `AEAD_AES_128_GCM` (RFC 7714).
//!
//! What this module owns:
//! - [`SrtpSuite`]: the three crypto suites Reel accepts in `a=crypto` and their sizes.
//! - [`SrtpKey`]: one master key and salt parsed from `inline:<base64>[|lifetime][|MKI:len]`.
//! - [`SrtpContext`]: the cryptographic context of one direction of one media stream: session
//!   keys (derived once, key derivation rate 0, so they do not depend on the SSRC) and a small
//!   fixed table of per-SSRC receive state (rollover counter, highest sequence number, 128-entry
//!   replay window per RFC 3711 §3.3.2).
//!
//! A recorder decrypts what the SRC sends, so the key that matters is the one the SRC OFFERED
//! (the SRC protects its packets with its own key). Our answer key would only protect what
//! Reel sends, which is nothing; [`SrtpContext::protect_rtp`] exists for tests and for the load
//! generator that plays the SRC.
//!
//! The receive path ([`SrtpContext::unprotect_rtp`]) works in place on the packet buffer, never
//! allocates, and never panics on input: every length is checked before it is used. State
//! (ROC, highest sequence, replay window) changes only after the packet authenticated, so a
//! forged packet cannot push the window forward and make real packets look like replays.
//!
//! Not here (yet): SRTCP. Reel only counts RTCP packets today, so SRTCP (RFC 3711 §3.4, with
//! its own labels 3..5 in the KDF, the E flag and the 31-bit SRTCP index) is left for when RTCP
//! is parsed. Also not supported: key derivation rate other than 0, `UNENCRYPTED_SRTP` /
//! `UNAUTHENTICATED_SRTP`, MKIs longer than 4 bytes, and more than one master key per stream
//! (with several `inline:` keys only the first is used).

use std::fmt;

use aes::Aes128;
use aes::cipher::{InnerIvInit, KeyInit, StreamCipher};
use aes_gcm::{AeadInOut, Aes128Gcm};
use base64::Engine as _;
use hmac::Mac as _;
use subtle::ConstantTimeEq;

type HmacSha1 = hmac::Hmac<sha1::Sha1>;

/// Fixed RTP header length (RFC 3550 §5.1), before CSRCs and the header extension.
const RTP_HEADER_LEN: usize = 12;
/// How many SSRCs one context follows at once. A SIPREC stream normally carries one SSRC; a
/// few more cover SSRC changes on re-INVITE or a forking SBC. Beyond that the least recently
/// used entry is recycled.
pub const MAX_SSRCS: usize = 8;
/// Replay window size in packets (RFC 3711 §3.3.2 requires at least 64).
pub const REPLAY_WINDOW: u64 = 128;
/// The longest MKI accepted from SDES, in bytes.
pub const MAX_MKI_LEN: usize = 4;
/// Salt buffer size: the AES-CM salt is 112 bits; the GCM salt (96 bits) uses the first 12.
const SALT_BUF: usize = 14;
/// HMAC-SHA1 session authentication key length (RFC 3711 §8.2, n_a = 160).
const AUTH_KEY_LEN: usize = 20;
/// GCM authentication tag length (RFC 7714 §14: AEAD_AES_128_GCM, 16 octets).
const GCM_TAG_LEN: usize = 16;

/// The SDES crypto suites Reel understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SrtpSuite {
    /// `AES_CM_128_HMAC_SHA1_80`: AES-128 counter mode, HMAC-SHA1 tag of 80 bits.
    AesCm128HmacSha1_80,
    /// `AES_CM_128_HMAC_SHA1_32`: as above with a 32-bit tag.
    AesCm128HmacSha1_32,
    /// `AEAD_AES_128_GCM` (RFC 7714): AES-128-GCM, 128-bit tag, 96-bit salt.
    AeadAes128Gcm,
}

impl SrtpSuite {
    /// The suite for an `a=crypto` suite name (case-sensitive, as registered with IANA).
    pub fn from_sdp_name(name: &str) -> Option<SrtpSuite> {
        match name {
            "AES_CM_128_HMAC_SHA1_80" => Some(SrtpSuite::AesCm128HmacSha1_80),
            "AES_CM_128_HMAC_SHA1_32" => Some(SrtpSuite::AesCm128HmacSha1_32),
            "AEAD_AES_128_GCM" => Some(SrtpSuite::AeadAes128Gcm),
            _ => None,
        }
    }

    /// The `a=crypto` name of the suite.
    pub const fn sdp_name(self) -> &'static str {
        match self {
            SrtpSuite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            SrtpSuite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
            SrtpSuite::AeadAes128Gcm => "AEAD_AES_128_GCM",
        }
    }

    /// Master (and session) encryption key length in bytes.
    pub const fn key_len(self) -> usize {
        16
    }

    /// Master (and session) salt length in bytes: 14 for AES-CM, 12 for GCM.
    pub const fn salt_len(self) -> usize {
        match self {
            SrtpSuite::AeadAes128Gcm => 12,
            _ => 14,
        }
    }

    /// Authentication tag length on the wire in bytes.
    pub const fn tag_len(self) -> usize {
        match self {
            SrtpSuite::AesCm128HmacSha1_80 => 10,
            SrtpSuite::AesCm128HmacSha1_32 => 4,
            SrtpSuite::AeadAes128Gcm => GCM_TAG_LEN,
        }
    }

    /// Whether the suite is an AEAD (GCM) suite.
    pub const fn is_aead(self) -> bool {
        matches!(self, SrtpSuite::AeadAes128Gcm)
    }
}

impl fmt::Display for SrtpSuite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.sdp_name())
    }
}

/// Why an SRTP operation or an SDES key failed. Packet errors are distinct so the media
/// thread can count them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SrtpError {
    /// Shorter than an RTP header plus the MKI and tag the suite requires.
    TooShort,
    /// Not RTP version 2, or the CSRC list / header extension runs past the payload.
    Malformed,
    /// The authentication tag did not verify (wrong key, corruption, forgery).
    AuthFailed,
    /// Already received, too old for the replay window, or before the stream's first packet.
    Replay,
    /// The packet's MKI names a master key this context does not hold.
    UnknownMki,
    /// `a=crypto` names a suite Reel does not support.
    UnknownSuite,
    /// The decoded `inline:` key has the wrong length for the suite.
    WrongKeyLength {
        /// key + salt bytes the suite needs
        expected: usize,
        /// bytes the base64 decoded to
        got: usize,
    },
    /// The SDES key parameters are malformed or use an unsupported feature; the text says which.
    BadKeyParams(&'static str),
}

impl fmt::Display for SrtpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SrtpError::TooShort => f.write_str("SRTP packet too short"),
            SrtpError::Malformed => f.write_str("malformed RTP header in SRTP packet"),
            SrtpError::AuthFailed => f.write_str("SRTP authentication failed"),
            SrtpError::Replay => f.write_str("SRTP packet replayed or outside the replay window"),
            SrtpError::UnknownMki => f.write_str("SRTP packet carries an unknown MKI"),
            SrtpError::UnknownSuite => f.write_str("unsupported SRTP crypto suite"),
            SrtpError::WrongKeyLength { expected, got } => write!(
                f,
                "SDES inline key decodes to {got} bytes, the suite needs {expected} (key + salt)"
            ),
            SrtpError::BadKeyParams(why) => write!(f, "bad SDES key parameters: {why}"),
        }
    }
}

impl std::error::Error for SrtpError {}

/// A master key identifier (RFC 3711 §3.1): its value and its length on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mki {
    /// The MKI value, written big-endian in `len` bytes.
    pub value: u32,
    /// Length in bytes, 1..=[`MAX_MKI_LEN`].
    pub len: u8,
}

impl Mki {
    /// The bytes packets carry: `value` big-endian in `len` bytes (left-padded/truncated from
    /// the 4-byte form; `from_sdes` guarantees the value fits).
    fn wire(self) -> ([u8; MAX_MKI_LEN], usize) {
        let len = usize::from(self.len).min(MAX_MKI_LEN);
        let be = self.value.to_be_bytes();
        let mut out = [0u8; MAX_MKI_LEN];
        out[..len].copy_from_slice(&be[MAX_MKI_LEN - len..]);
        (out, len)
    }
}

/// One SRTP master key: suite, key and salt, plus the optional lifetime and MKI from SDES.
/// Fixed size, no heap.
#[derive(Clone, PartialEq, Eq)]
pub struct SrtpKey {
    /// The crypto suite the key is for.
    pub suite: SrtpSuite,
    /// The 128-bit master key.
    pub master_key: [u8; 16],
    /// The master salt; only the first [`SrtpSuite::salt_len`] bytes are meaningful, the rest
    /// are zero (the GCM salt is 12 bytes; zero padding is also what the RFC 3711 KDF expects
    /// of it, see RFC 7714 §11).
    pub master_salt: [u8; 14],
    /// Key lifetime in packets, if the offer gave one. Informational: Reel does not rekey.
    pub lifetime: Option<u64>,
    /// The MKI packets carry, if the offer declared one.
    pub mki: Option<Mki>,
}

impl fmt::Debug for SrtpKey {
    // Key material stays out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpKey")
            .field("suite", &self.suite)
            .field("master_key", &"<redacted>")
            .field("lifetime", &self.lifetime)
            .field("mki", &self.mki)
            .finish()
    }
}

impl SrtpKey {
    /// A key from raw parts. `master_salt` must be exactly `suite.salt_len()` bytes.
    pub fn new(
        suite: SrtpSuite,
        master_key: [u8; 16],
        master_salt: &[u8],
    ) -> Result<SrtpKey, SrtpError> {
        if master_salt.len() != suite.salt_len() {
            return Err(SrtpError::WrongKeyLength {
                expected: suite.key_len() + suite.salt_len(),
                got: master_key.len() + master_salt.len(),
            });
        }
        let mut salt = [0u8; SALT_BUF];
        salt[..master_salt.len()].copy_from_slice(master_salt);
        Ok(SrtpKey {
            suite,
            master_key,
            master_salt: salt,
            lifetime: None,
            mki: None,
        })
    }

    /// The meaningful part of the master salt (12 or 14 bytes).
    pub fn salt(&self) -> &[u8] {
        &self.master_salt[..self.suite.salt_len()]
    }

    /// Parses the `<key-params>` of `a=crypto:<tag> <suite> <key-params> [<session-params>]`
    /// (RFC 4568 §9.2): `inline:<base64 key||salt>[|<lifetime>][|<MKI>:<length>]`.
    ///
    /// `key_params` may carry the session parameters after whitespace: `KDR=0`, `WSH=` and
    /// FEC parameters are accepted, a non-zero `KDR` and `UNENCRYPTED_SRTP` /
    /// `UNAUTHENTICATED_SRTP` are rejected because this module does not implement them. Of
    /// several `;`-separated `inline:` keys only the first is used.
    pub fn from_sdes(suite: &str, key_params: &str) -> Result<SrtpKey, SrtpError> {
        let suite = SrtpSuite::from_sdp_name(suite.trim()).ok_or(SrtpError::UnknownSuite)?;
        let mut tokens = key_params.split_ascii_whitespace();
        let first = tokens
            .next()
            .ok_or(SrtpError::BadKeyParams("empty key parameters"))?;
        for session_param in tokens {
            check_session_param(session_param)?;
        }
        let first = first.split(';').next().unwrap_or(first);
        let (method, info) = first
            .split_once(':')
            .ok_or(SrtpError::BadKeyParams("missing 'inline:' key method"))?;
        if !method.eq_ignore_ascii_case("inline") {
            return Err(SrtpError::BadKeyParams("key method is not 'inline'"));
        }
        let mut parts = info.split('|');
        let b64 = parts.next().unwrap_or("");
        let mut lifetime = None;
        let mut mki = None;
        for part in parts {
            if mki.is_some() {
                return Err(SrtpError::BadKeyParams("nothing may follow the MKI"));
            }
            if let Some((value, len)) = part.split_once(':') {
                mki = Some(parse_mki(value, len)?);
            } else if lifetime.is_none() {
                lifetime = Some(parse_lifetime(part)?);
            } else {
                return Err(SrtpError::BadKeyParams("more than one lifetime"));
            }
        }

        let expected = suite.key_len() + suite.salt_len();
        // 30 bytes is 40 base64 characters; anything past 128 is no SDES key and would not fit
        // the decode buffer.
        if b64.len() > 128 {
            return Err(SrtpError::BadKeyParams("inline key is far too long"));
        }
        let mut buf = [0u8; 96];
        let got = base64::engine::general_purpose::STANDARD_PAD_INDIFFERENT
            .decode_slice(b64, &mut buf)
            .map_err(|_| SrtpError::BadKeyParams("inline key is not valid base64"))?;
        if got != expected {
            return Err(SrtpError::WrongKeyLength { expected, got });
        }
        let mut master_key = [0u8; 16];
        master_key.copy_from_slice(&buf[..16]);
        let mut key = SrtpKey::new(suite, master_key, &buf[16..expected])?;
        key.lifetime = lifetime;
        key.mki = mki;
        Ok(key)
    }

    /// The `<key-params>` for this key, `inline:<base64>[|2^N or n][|MKI:len]`, as an SDP
    /// offer or answer carries it.
    pub fn to_sdes(&self) -> String {
        let mut raw = [0u8; 30];
        let n = self.suite.key_len() + self.suite.salt_len();
        raw[..16].copy_from_slice(&self.master_key);
        raw[16..n].copy_from_slice(self.salt());
        let mut out = String::from("inline:");
        base64::engine::general_purpose::STANDARD.encode_string(&raw[..n], &mut out);
        if let Some(lifetime) = self.lifetime {
            if lifetime.is_power_of_two() {
                out.push_str(&format!("|2^{}", lifetime.trailing_zeros()));
            } else {
                out.push_str(&format!("|{lifetime}"));
            }
        }
        if let Some(mki) = self.mki {
            out.push_str(&format!("|{}:{}", mki.value, mki.len));
        }
        out
    }
}

fn check_session_param(param: &str) -> Result<(), SrtpError> {
    match param {
        "UNENCRYPTED_SRTP" => Err(SrtpError::BadKeyParams("UNENCRYPTED_SRTP is not supported")),
        "UNAUTHENTICATED_SRTP" => Err(SrtpError::BadKeyParams(
            "UNAUTHENTICATED_SRTP is not supported",
        )),
        // SRTCP is not decrypted (RTCP is only counted), so its flag does not matter here.
        "UNENCRYPTED_SRTCP" => Ok(()),
        p if p.starts_with("KDR=") => match p[4..].parse::<u8>() {
            Ok(0) => Ok(()),
            Ok(_) => Err(SrtpError::BadKeyParams(
                "a key derivation rate other than 0 is not supported",
            )),
            Err(_) => Err(SrtpError::BadKeyParams("KDR is not a number")),
        },
        // WSH (window size hint), FEC_ORDER, FEC_KEY and unknown extensions: ignorable.
        _ => Ok(()),
    }
}

fn parse_lifetime(text: &str) -> Result<u64, SrtpError> {
    const BAD: SrtpError = SrtpError::BadKeyParams("lifetime is neither 2^N nor a decimal number");
    let value = if let Some(exp) = text.strip_prefix("2^") {
        let exp: u32 = exp.parse().map_err(|_| BAD)?;
        // SRTP indexes are 48 bits; a lifetime beyond 2^48 packets means nothing.
        if exp > 48 {
            return Err(SrtpError::BadKeyParams("lifetime exceeds 2^48 packets"));
        }
        1u64 << exp
    } else {
        text.parse::<u64>().map_err(|_| BAD)?
    };
    if value == 0 {
        return Err(SrtpError::BadKeyParams("lifetime of zero packets"));
    }
    Ok(value)
}

fn parse_mki(value: &str, len: &str) -> Result<Mki, SrtpError> {
    let len: u8 = len
        .parse()
        .map_err(|_| SrtpError::BadKeyParams("MKI length is not a number"))?;
    if len == 0 {
        return Err(SrtpError::BadKeyParams("MKI length of zero"));
    }
    if usize::from(len) > MAX_MKI_LEN {
        return Err(SrtpError::BadKeyParams(
            "MKI longer than 4 bytes is not supported",
        ));
    }
    let value: u32 = value
        .parse()
        .map_err(|_| SrtpError::BadKeyParams("MKI value is not a number"))?;
    if len < 4 && value >> (8 * u32::from(len)) != 0 {
        return Err(SrtpError::BadKeyParams("MKI value does not fit its length"));
    }
    Ok(Mki { value, len })
}

// ---------------------------------------------------------------------------------------------
// Key derivation (RFC 3711 §4.3.1 and §4.3.3, KDR = 0)
// ---------------------------------------------------------------------------------------------

/// SRTP key derivation labels (RFC 3711 §4.3.1). SRTCP labels 3..5 are for later.
const LABEL_RTP_ENCRYPTION: u8 = 0x00;
const LABEL_RTP_AUTH: u8 = 0x01;
const LABEL_RTP_SALT: u8 = 0x02;

/// The AES-CM PRF of RFC 3711 §4.3.3 with key derivation rate 0: with r = index DIV kdr = 0,
/// key_id = label || 0^48, x = key_id XOR master_salt, and the output is the AES-CM keystream
/// for IV = x * 2^16, truncated to `out.len()`. A 12-byte GCM salt is zero-padded to 14 bytes
/// before this (RFC 7714 §11; libsrtp does the same), which `SrtpKey` already stores.
fn kdf(master: &Aes128, master_salt: &[u8; SALT_BUF], label: u8, out: &mut [u8]) {
    let mut iv = [0u8; 16];
    iv[..SALT_BUF].copy_from_slice(master_salt);
    // key_id is 56 bits right-aligned in the 112-bit x, so the label lands in byte 7.
    iv[7] ^= label;
    out.fill(0);
    aes_cm_apply(master, &iv, out);
}

/// Session keys of one context.
struct SessionKeys {
    key: [u8; 16],
    salt: [u8; SALT_BUF],
    auth: [u8; AUTH_KEY_LEN],
}

fn derive_session_keys(key: &SrtpKey) -> SessionKeys {
    let master = Aes128::new(&key.master_key.into());
    let mut keys = SessionKeys {
        key: [0; 16],
        salt: [0; SALT_BUF],
        auth: [0; AUTH_KEY_LEN],
    };
    kdf(
        &master,
        &key.master_salt,
        LABEL_RTP_ENCRYPTION,
        &mut keys.key,
    );
    let salt_len = key.suite.salt_len();
    kdf(
        &master,
        &key.master_salt,
        LABEL_RTP_SALT,
        &mut keys.salt[..salt_len],
    );
    if !key.suite.is_aead() {
        kdf(&master, &key.master_salt, LABEL_RTP_AUTH, &mut keys.auth);
    }
    keys
}

// ---------------------------------------------------------------------------------------------
// Transforms
// ---------------------------------------------------------------------------------------------

/// AES-128 in counter mode from the 128-bit counter block `iv`, XORed into `data`. The SRTP
/// counter (RFC 3711 §4.1.1) is the whole IV incremented as a 128-bit big-endian integer; the
/// low 16 bits start at zero, so this is exactly `Ctr128BE`. The key schedule is borrowed, not
/// recomputed per packet.
fn aes_cm_apply(aes: &Aes128, iv: &[u8; 16], data: &mut [u8]) {
    let core = ctr::CtrCore::inner_iv_init(aes, &(*iv).into());
    let mut ctr = ctr::Ctr128BE::<&Aes128>::from_core(core);
    ctr.apply_keystream(data);
}

/// IV = (k_s * 2^16) XOR (SSRC * 2^64) XOR (i * 2^16), RFC 3711 §4.1.1.
fn aes_cm_iv(session_salt: &[u8; SALT_BUF], ssrc: u32, index: u64) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[..SALT_BUF].copy_from_slice(session_salt);
    for (b, s) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
        *b ^= s;
    }
    // The 48-bit index sits in bytes 8..14.
    for (b, s) in iv[8..14].iter_mut().zip(&index.to_be_bytes()[2..]) {
        *b ^= s;
    }
    iv
}

/// IV = (0x0000 || SSRC || ROC || SEQ) XOR salt, RFC 7714 §8.1.
fn gcm_iv(session_salt: &[u8; SALT_BUF], ssrc: u32, roc: u32, seq: u16) -> [u8; 12] {
    let mut iv = [0u8; 12];
    iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
    iv[6..10].copy_from_slice(&roc.to_be_bytes());
    iv[10..12].copy_from_slice(&seq.to_be_bytes());
    for (b, s) in iv.iter_mut().zip(session_salt) {
        *b ^= s;
    }
    iv
}

enum Transform {
    AesCm {
        aes: Aes128,
        salt: [u8; SALT_BUF],
        /// Keyed once; cloned per packet so the key is not re-hashed into ipad/opad each time.
        hmac: HmacSha1,
    },
    Gcm {
        gcm: Aes128Gcm,
        salt: [u8; SALT_BUF],
    },
}

impl Transform {
    fn new(suite: SrtpSuite, keys: &SessionKeys) -> Transform {
        if suite.is_aead() {
            Transform::Gcm {
                gcm: Aes128Gcm::new(&keys.key.into()),
                salt: keys.salt,
            }
        } else {
            // HMAC zero-pads a key shorter than the hash block to the block (RFC 2104 §2), so
            // keying with the padded 64-byte block is the same MAC as keying with the 20 bytes,
            // and needs no fallible `new_from_slice`.
            let mut block = [0u8; 64];
            block[..AUTH_KEY_LEN].copy_from_slice(&keys.auth);
            Transform::AesCm {
                aes: Aes128::new(&keys.key.into()),
                salt: keys.salt,
                hmac: <HmacSha1 as KeyInit>::new(&block.into()),
            }
        }
    }
}

/// Full HMAC-SHA1 over `authenticated || ROC` (RFC 3711 §4.2: M = Authenticated Portion || ROC).
fn hmac_tag(hmac: &HmacSha1, authenticated: &[u8], roc: u32) -> [u8; 20] {
    let mut mac = hmac.clone();
    mac.update(authenticated);
    mac.update(&roc.to_be_bytes());
    mac.finalize().into_bytes().into()
}

// ---------------------------------------------------------------------------------------------
// Per-SSRC state
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, Default)]
struct SsrcState {
    in_use: bool,
    ssrc: u32,
    roc: u32,
    /// s_l: the highest sequence number authenticated so far.
    highest_seq: u16,
    /// Bit n set: the packet with index (highest index - n) was received. Bit 0 is the highest.
    window: u128,
    /// Recency stamp for recycling the least recently used slot.
    last_used: u64,
}

impl SsrcState {
    fn index(&self) -> i64 {
        (i64::from(self.roc) << 16) | i64::from(self.highest_seq)
    }

    /// RFC 3711 Appendix A: the ROC guess v for `seq`, given s_l and ROC. Returns the guessed
    /// ROC (may be -1 or 2^32 at the edges, hence i64) and the packet index it implies.
    fn estimate(&self, seq: u16) -> (i64, i64) {
        let s_l = i64::from(self.highest_seq);
        let seq_i = i64::from(seq);
        let roc = i64::from(self.roc);
        let v = if s_l < 0x8000 {
            if seq_i - s_l > 0x8000 { roc - 1 } else { roc }
        } else if s_l - 0x8000 > seq_i {
            roc + 1
        } else {
            roc
        };
        (v, (v << 16) | seq_i)
    }

    /// Accepts `index` into the window; call only after authentication succeeded.
    fn accept(&mut self, roc: u32, seq: u16, index: i64) {
        let delta = index - self.index();
        if delta > 0 {
            self.window = match u32::try_from(delta) {
                Ok(d) if u64::from(d) < REPLAY_WINDOW => (self.window << d) | 1,
                _ => 1,
            };
            self.roc = roc;
            self.highest_seq = seq;
        } else if let Ok(age) = u32::try_from(-delta)
            && u64::from(age) < REPLAY_WINDOW
        {
            self.window |= 1u128 << age;
        }
    }
}

struct SsrcTable {
    slots: [SsrcState; MAX_SSRCS],
    clock: u64,
}

impl SsrcTable {
    fn new() -> SsrcTable {
        SsrcTable {
            slots: [SsrcState::default(); MAX_SSRCS],
            clock: 0,
        }
    }

    fn find(&self, ssrc: u32) -> Option<usize> {
        self.slots.iter().position(|s| s.in_use && s.ssrc == ssrc)
    }

    fn touch(&mut self, slot: usize) {
        self.clock += 1;
        if let Some(s) = self.slots.get_mut(slot) {
            s.last_used = self.clock;
        }
    }

    /// A slot for a new SSRC: a free one, else the least recently used.
    fn insert(&mut self, ssrc: u32, roc: u32, seq: u16) -> usize {
        let slot = self
            .slots
            .iter()
            .position(|s| !s.in_use)
            .or_else(|| {
                self.slots
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, s)| s.last_used)
                    .map(|(i, _)| i)
            })
            .unwrap_or(0);
        self.slots[slot] = SsrcState {
            in_use: true,
            ssrc,
            roc,
            highest_seq: seq,
            window: 1,
            last_used: 0,
        };
        self.touch(slot);
        slot
    }
}

// ---------------------------------------------------------------------------------------------
// RTP header
// ---------------------------------------------------------------------------------------------

/// Length of the RTP header in `buf`: fixed part, CSRCs and header extension (RFC 3550 §5.3.1).
/// SRTP leaves all of it in the clear and encrypts from the byte after it.
fn rtp_header_len(buf: &[u8]) -> Result<usize, SrtpError> {
    let Some(&b0) = buf.first() else {
        return Err(SrtpError::TooShort);
    };
    if buf.len() < RTP_HEADER_LEN {
        return Err(SrtpError::TooShort);
    }
    if b0 >> 6 != 2 {
        return Err(SrtpError::Malformed);
    }
    let mut len = RTP_HEADER_LEN + 4 * usize::from(b0 & 0x0f);
    if b0 & 0x10 != 0 {
        let Some(ext) = buf.get(len..len + 4) else {
            return Err(SrtpError::Malformed);
        };
        let words = usize::from(u16::from_be_bytes([ext[2], ext[3]]));
        len += 4 + 4 * words;
    }
    if len > buf.len() {
        return Err(SrtpError::Malformed);
    }
    Ok(len)
}

fn read_seq_ssrc(packet: &[u8]) -> (u16, u32) {
    // Callers checked packet.len() >= RTP_HEADER_LEN.
    let seq = u16::from_be_bytes([packet[2], packet[3]]);
    let ssrc = u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]);
    (seq, ssrc)
}

// ---------------------------------------------------------------------------------------------
// Context
// ---------------------------------------------------------------------------------------------

/// The SRTP cryptographic context of one direction of one media stream (RFC 3711 §3.2).
///
/// Holds the session keys, derived once at creation (key derivation rate 0: the keys do not
/// depend on the packet index or the SSRC), and receive state for up to [`MAX_SSRCS`] SSRCs.
/// Sending state (used by [`SrtpContext::protect_rtp`]) is kept apart from receive state so a
/// context that both sends and receives the same SSRC (tests, loopback) stays consistent.
pub struct SrtpContext {
    suite: SrtpSuite,
    mki: [u8; MAX_MKI_LEN],
    mki_len: usize,
    transform: Transform,
    rx: SsrcTable,
    tx: SsrcTable,
}

impl fmt::Debug for SrtpContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ssrcs: Vec<u32> = self
            .rx
            .slots
            .iter()
            .filter(|s| s.in_use)
            .map(|s| s.ssrc)
            .collect();
        f.debug_struct("SrtpContext")
            .field("suite", &self.suite)
            .field("mki_len", &self.mki_len)
            .field("rx_ssrcs", &ssrcs)
            .finish_non_exhaustive()
    }
}

impl SrtpContext {
    /// A context for `key`: derives the session keys and starts with no SSRC state.
    pub fn new(key: &SrtpKey) -> SrtpContext {
        let keys = derive_session_keys(key);
        let (mki, mki_len) = key.mki.map(Mki::wire).unwrap_or(([0; MAX_MKI_LEN], 0));
        SrtpContext::with_session_keys(key.suite, &keys, mki, mki_len)
    }

    fn with_session_keys(
        suite: SrtpSuite,
        keys: &SessionKeys,
        mki: [u8; MAX_MKI_LEN],
        mki_len: usize,
    ) -> SrtpContext {
        SrtpContext {
            suite,
            mki,
            mki_len,
            transform: Transform::new(suite, keys),
            rx: SsrcTable::new(),
            tx: SsrcTable::new(),
        }
    }

    /// The suite of this context.
    pub fn suite(&self) -> SrtpSuite {
        self.suite
    }

    /// Bytes SRTP adds to an RTP packet: MKI plus tag.
    pub fn overhead(&self) -> usize {
        self.mki_len + self.suite.tag_len()
    }

    /// The receive rollover counter for `ssrc`, if the context has authenticated a packet of it.
    pub fn roc(&self, ssrc: u32) -> Option<u32> {
        self.rx.find(ssrc).map(|i| self.rx.slots[i].roc)
    }

    /// Authenticates, replay-checks and decrypts one SRTP packet in place. On success the
    /// first `n` bytes of `packet` are the plain RTP packet (header and payload, including any
    /// RTP padding; MKI and tag removed) and `n` is returned. On error the payload bytes may
    /// be left in any state and the receive state is unchanged.
    ///
    /// Does not allocate. Never panics on any input.
    pub fn unprotect_rtp(&mut self, packet: &mut [u8]) -> Result<usize, SrtpError> {
        let tag_len = self.suite.tag_len();
        let trailer = tag_len + self.mki_len;
        let len = packet.len();
        if len < RTP_HEADER_LEN + trailer {
            return Err(SrtpError::TooShort);
        }
        // Everything before the trailer is header + encrypted payload.
        let body_end = len - trailer;
        let header_len = rtp_header_len(&packet[..body_end])?;

        // Layout of the trailer: HMAC suites put the MKI before the tag (RFC 3711 §3.1);
        // for AEAD the tag is part of the ciphertext and the MKI follows it (RFC 7714 §8,
        // as libsrtp does).
        let (mki_at, tag_at) = if self.suite.is_aead() {
            (len - self.mki_len, body_end)
        } else {
            (body_end, body_end + self.mki_len)
        };
        if packet[mki_at..mki_at + self.mki_len] != self.mki[..self.mki_len] {
            return Err(SrtpError::UnknownMki);
        }

        let (seq, ssrc) = read_seq_ssrc(packet);
        let slot = self.rx.find(ssrc);
        let (roc, index) = match slot {
            Some(i) => {
                let state = &self.rx.slots[i];
                let (v, index) = state.estimate(seq);
                // v = -1: the packet would lie before the first one this context accepted
                // (whose ROC is 0 by definition); v = 2^32: the 48-bit index space is used up
                // and the key should long have been changed. Neither can authenticate
                // legitimately.
                let roc = u32::try_from(v).map_err(|_| SrtpError::Replay)?;
                let delta = index - state.index();
                if delta <= 0 {
                    let age = delta.unsigned_abs();
                    if age >= REPLAY_WINDOW || state.window & (1u128 << age) != 0 {
                        return Err(SrtpError::Replay);
                    }
                }
                (roc, index)
            }
            // First packet of an SSRC: RFC 3711 §3.3.1, ROC starts at 0.
            None => (0, i64::from(seq)),
        };

        match &self.transform {
            Transform::AesCm { aes, salt, hmac } => {
                let full = hmac_tag(hmac, &packet[..body_end], roc);
                let tag = &packet[tag_at..tag_at + tag_len];
                if !bool::from(full[..tag_len].ct_eq(tag)) {
                    return Err(SrtpError::AuthFailed);
                }
                let iv = aes_cm_iv(salt, ssrc, (u64::from(roc) << 16) | u64::from(seq));
                aes_cm_apply(aes, &iv, &mut packet[header_len..body_end]);
            }
            Transform::Gcm { gcm, salt } => {
                let iv = gcm_iv(salt, ssrc, roc, seq);
                let mut tag = [0u8; GCM_TAG_LEN];
                tag.copy_from_slice(&packet[tag_at..tag_at + GCM_TAG_LEN]);
                let (header, rest) = packet.split_at_mut(header_len);
                let ciphertext = &mut rest[..body_end - header_len];
                gcm.decrypt_inout_detached(&iv.into(), header, ciphertext.into(), &tag.into())
                    .map_err(|_| SrtpError::AuthFailed)?;
            }
        }

        // Authenticated: now, and only now, the receive state moves.
        match slot {
            Some(i) => {
                self.rx.slots[i].accept(roc, seq, index);
                self.rx.touch(i);
            }
            None => {
                self.rx.insert(ssrc, roc, seq);
            }
        }
        Ok(body_end)
    }

    /// Encrypts and authenticates one RTP packet, appending MKI and tag. The sender's ROC per
    /// SSRC is tracked the same way a receiver guesses it, which is exact as long as
    /// consecutive calls for one SSRC do not jump by 2^15 or more sequence numbers.
    ///
    /// Allocates only if `packet` lacks capacity for the [`SrtpContext::overhead`] bytes.
    pub fn protect_rtp(&mut self, packet: &mut Vec<u8>) -> Result<(), SrtpError> {
        let header_len = rtp_header_len(packet)?;
        let (seq, ssrc) = read_seq_ssrc(packet);
        let roc = match self.tx.find(ssrc) {
            Some(i) => {
                let state = &mut self.tx.slots[i];
                let (v, index) = state.estimate(seq);
                let roc = u32::try_from(v).map_err(|_| SrtpError::Replay)?;
                if index > state.index() {
                    state.roc = roc;
                    state.highest_seq = seq;
                }
                self.tx.touch(i);
                roc
            }
            None => {
                self.tx.insert(ssrc, 0, seq);
                0
            }
        };

        packet.reserve(self.overhead());
        let mki = self.mki;
        let mki = &mki[..self.mki_len];
        match &self.transform {
            Transform::AesCm { aes, salt, hmac } => {
                let iv = aes_cm_iv(salt, ssrc, (u64::from(roc) << 16) | u64::from(seq));
                aes_cm_apply(aes, &iv, &mut packet[header_len..]);
                let full = hmac_tag(hmac, packet, roc);
                packet.extend_from_slice(mki);
                packet.extend_from_slice(&full[..self.suite.tag_len()]);
            }
            Transform::Gcm { gcm, salt } => {
                let iv = gcm_iv(salt, ssrc, roc, seq);
                let (header, payload) = packet.split_at_mut(header_len);
                let tag = gcm
                    .encrypt_inout_detached(&iv.into(), header, payload.into())
                    .map_err(|_| SrtpError::Malformed)?;
                packet.extend_from_slice(&tag);
                packet.extend_from_slice(mki);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        let clean: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        hex::decode(clean).expect("test hex")
    }

    const ALL_SUITES: [SrtpSuite; 3] = [
        SrtpSuite::AesCm128HmacSha1_80,
        SrtpSuite::AesCm128HmacSha1_32,
        SrtpSuite::AeadAes128Gcm,
    ];

    fn test_key(suite: SrtpSuite) -> SrtpKey {
        let salt: Vec<u8> = (0..suite.salt_len() as u8).map(|i| 0xa0 + i).collect();
        SrtpKey::new(suite, *b"0123456789abcdef", &salt).expect("test key")
    }

    fn rtp(seq: u16, ssrc: u32, payload_len: usize) -> Vec<u8> {
        let mut p = Vec::with_capacity(RTP_HEADER_LEN + payload_len + 32);
        p.extend_from_slice(&[0x80, 0x00]);
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend((0..payload_len).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seq as u8)));
        p
    }

    fn protect(ctx: &mut SrtpContext, plain: &[u8]) -> Vec<u8> {
        let mut p = plain.to_vec();
        ctx.protect_rtp(&mut p).expect("protect");
        p
    }

    fn unprotect(ctx: &mut SrtpContext, packet: &[u8]) -> Result<Vec<u8>, SrtpError> {
        let mut p = packet.to_vec();
        let n = ctx.unprotect_rtp(&mut p)?;
        p.truncate(n);
        Ok(p)
    }

    // ----- RFC vectors ------------------------------------------------------------------------

    /// RFC 3711 Appendix B.2: AES-CM keystream for session key 2B7E...3C, salt F0F1...FD,
    /// SSRC 0, ROC 0, SEQ 0 (so the first counter block is F0F1...FD0000).
    #[test]
    fn rfc3711_b2_aes_cm_keystream() {
        let key: [u8; 16] = unhex("2B7E151628AED2A6ABF7158809CF4F3C")
            .try_into()
            .unwrap();
        let mut salt = [0u8; SALT_BUF];
        salt.copy_from_slice(&unhex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD"));
        let iv = aes_cm_iv(&salt, 0, 0);
        assert_eq!(iv.to_vec(), unhex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000"));

        let mut stream = vec![0u8; 0xFF02 * 16];
        aes_cm_apply(&Aes128::new(&key.into()), &iv, &mut stream);
        let block = |n: usize| stream[n * 16..(n + 1) * 16].to_vec();
        assert_eq!(block(0), unhex("E03EAD0935C95E80E166B16DD92B4EB4"));
        assert_eq!(block(1), unhex("D23513162B02D0F72A43A2FE4A5F97AB"));
        assert_eq!(block(2), unhex("41E95B3BB0A2E8DD477901E4FCA894C0"));
        assert_eq!(block(0xFEFF), unhex("EC8CDF7398607CB0F2D21675EA9EA1E4"));
        assert_eq!(block(0xFF00), unhex("362B7C3C6773516318A077D7FC5073AE"));
        assert_eq!(block(0xFF01), unhex("6A2CC3787889374FBEB4C81B17BA6C44"));
    }

    fn rfc3711_b3_key() -> SrtpKey {
        let master: [u8; 16] = unhex("E1F97A0D3E018BE0D64FA32C06DE4139")
            .try_into()
            .unwrap();
        SrtpKey::new(
            SrtpSuite::AesCm128HmacSha1_80,
            master,
            &unhex("0EC675AD498AFEEBB6960B3AABE6"),
        )
        .unwrap()
    }

    /// RFC 3711 Appendix B.3: session encryption key (label 0).
    #[test]
    fn rfc3711_b3_session_encryption_key() {
        let keys = derive_session_keys(&rfc3711_b3_key());
        assert_eq!(keys.key.to_vec(), unhex("C61E7A93744F39EE10734AFE3FF7A087"));
    }

    /// RFC 3711 Appendix B.3: session salt (label 2).
    #[test]
    fn rfc3711_b3_session_salt() {
        let keys = derive_session_keys(&rfc3711_b3_key());
        assert_eq!(keys.salt.to_vec(), unhex("30CBBC08863D8C85D49DB34A9AE1"));
    }

    /// RFC 3711 Appendix B.3: authentication key (label 1). The RFC lists 94 bytes; HMAC-SHA1
    /// uses the first 20.
    #[test]
    fn rfc3711_b3_session_auth_key() {
        let key = rfc3711_b3_key();
        let keys = derive_session_keys(&key);
        assert_eq!(
            keys.auth.to_vec(),
            unhex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4")
        );

        let mut long = [0u8; 94];
        kdf(
            &Aes128::new(&key.master_key.into()),
            &key.master_salt,
            LABEL_RTP_AUTH,
            &mut long,
        );
        let expected = unhex(
            "CEBE321F6FF7716B6FD4AB49AF256A15 6D38BAA48F0A0ACF3C34E2359E6CDBCE
             E049646C43D9327AD175578EF7227098 6371C10C9A369AC2F94A8C5FBCDDDC25
             6D6E919A48B610EF17C2041E47403576 6B68642C59BBFC2F34DB60DBDFB2",
        );
        assert_eq!(long.to_vec(), expected);
    }

    // RFC 7714 §16.1: session key 000102...0f, session salt 517569642070726f2071756f, RTP
    // header 8040f17b8041f8d35501a0b2, payload "Gallia est omnis divisa in partes tres".
    const RFC7714_PLAIN: &str = "8040f17b8041f8d35501a0b2
        47616c6c696120657374206f6d6e69732064697669736120696e207061727465732074726573";
    const RFC7714_PROTECTED: &str = "8040f17b8041f8d35501a0b2
        f24de3a3fb34de6cacba861c9d7e4bcabe633bd50d294e6f42a5f47a51c7d19b
        36de3adf8833899d7f27beb16a9152cf765ee4390cce";

    fn rfc7714_context() -> SrtpContext {
        let mut salt = [0u8; SALT_BUF];
        salt[..12].copy_from_slice(&unhex("517569642070726f2071756f"));
        let keys = SessionKeys {
            key: unhex("000102030405060708090a0b0c0d0e0f")
                .try_into()
                .unwrap(),
            salt,
            auth: [0; AUTH_KEY_LEN],
        };
        SrtpContext::with_session_keys(SrtpSuite::AeadAes128Gcm, &keys, [0; MAX_MKI_LEN], 0)
    }

    /// RFC 7714 §16 (IV formation): SSRC 5501a0b2, ROC 0, SEQ f17b.
    #[test]
    fn rfc7714_16_gcm_iv() {
        let mut salt = [0u8; SALT_BUF];
        salt[..12].copy_from_slice(&unhex("517569642070726f2071756f"));
        assert_eq!(
            gcm_iv(&salt, 0x5501_a0b2, 0, 0xf17b).to_vec(),
            unhex("51753c6580c2726f20718414")
        );
    }

    /// RFC 7714 §16.1.1: AEAD_AES_128_GCM encryption, byte for byte.
    #[test]
    fn rfc7714_16_1_1_gcm_protect() {
        let mut ctx = rfc7714_context();
        assert_eq!(
            protect(&mut ctx, &unhex(RFC7714_PLAIN)),
            unhex(RFC7714_PROTECTED)
        );
    }

    /// RFC 7714 §16.1.2: AEAD_AES_128_GCM decryption, byte for byte.
    #[test]
    fn rfc7714_16_1_2_gcm_unprotect() {
        let mut ctx = rfc7714_context();
        assert_eq!(
            unprotect(&mut ctx, &unhex(RFC7714_PROTECTED)),
            Ok(unhex(RFC7714_PLAIN))
        );
    }

    // ----- round trips ------------------------------------------------------------------------

    #[test]
    fn protect_then_unprotect_round_trips_every_suite() {
        for suite in ALL_SUITES {
            let key = test_key(suite);
            let (mut tx, mut rx) = (SrtpContext::new(&key), SrtpContext::new(&key));
            for seq in 1000..1010u16 {
                let plain = rtp(seq, 0x1234_5678, 160);
                let wire = protect(&mut tx, &plain);
                assert_eq!(wire.len(), plain.len() + suite.tag_len(), "{suite}");
                assert_ne!(wire[12..172], plain[12..], "{suite}: payload is encrypted");
                assert_eq!(wire[..12], plain[..12], "{suite}: header stays clear");
                assert_eq!(unprotect(&mut rx, &wire), Ok(plain), "{suite}");
            }
        }
    }

    #[test]
    fn round_trip_keeps_csrcs_and_header_extension_clear() {
        for suite in ALL_SUITES {
            let key = test_key(suite);
            let (mut tx, mut rx) = (SrtpContext::new(&key), SrtpContext::new(&key));
            // CC = 2, X = 1, extension of 1 word.
            let mut plain = vec![0x92, 0x00, 0x00, 0x07, 0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef];
            plain.extend_from_slice(&[1, 1, 1, 1, 2, 2, 2, 2]);
            plain.extend_from_slice(&[0xbe, 0xde, 0x00, 0x01, 0x10, 0xaa, 0x00, 0x00]);
            let header_len = plain.len();
            plain.extend_from_slice(b"payload bytes");
            let wire = protect(&mut tx, &plain);
            assert_eq!(wire[..header_len], plain[..header_len], "{suite}");
            assert_ne!(
                wire[header_len..plain.len()],
                plain[header_len..],
                "{suite}"
            );
            assert_eq!(unprotect(&mut rx, &wire), Ok(plain), "{suite}");
        }
    }

    #[test]
    fn empty_payload_round_trips() {
        for suite in ALL_SUITES {
            let key = test_key(suite);
            let (mut tx, mut rx) = (SrtpContext::new(&key), SrtpContext::new(&key));
            let plain = rtp(5, 1, 0);
            assert_eq!(
                unprotect(&mut rx, &protect(&mut tx, &plain)),
                Ok(plain),
                "{suite}"
            );
        }
    }

    #[test]
    fn mki_round_trips_and_sits_where_each_suite_puts_it() {
        for suite in ALL_SUITES {
            let mut key = test_key(suite);
            key.mki = Some(Mki {
                value: 0x0102_0304,
                len: 4,
            });
            let (mut tx, mut rx) = (SrtpContext::new(&key), SrtpContext::new(&key));
            let plain = rtp(9, 7, 40);
            let wire = protect(&mut tx, &plain);
            assert_eq!(wire.len(), plain.len() + 4 + suite.tag_len());
            let mki_at = if suite.is_aead() {
                wire.len() - 4
            } else {
                plain.len()
            };
            assert_eq!(wire[mki_at..mki_at + 4], [1, 2, 3, 4], "{suite}");
            assert_eq!(unprotect(&mut rx, &wire), Ok(plain), "{suite}");
        }
    }

    #[test]
    fn unknown_mki_is_rejected() {
        for suite in ALL_SUITES {
            let mut key = test_key(suite);
            key.mki = Some(Mki { value: 1, len: 1 });
            let mut tx = SrtpContext::new(&key);
            key.mki = Some(Mki { value: 2, len: 1 });
            let mut rx = SrtpContext::new(&key);
            let wire = protect(&mut tx, &rtp(9, 7, 40));
            assert_eq!(
                unprotect(&mut rx, &wire),
                Err(SrtpError::UnknownMki),
                "{suite}"
            );
        }
    }

    // ----- authentication ---------------------------------------------------------------------

    #[test]
    fn tampered_payload_fails_auth() {
        for suite in ALL_SUITES {
            let key = test_key(suite);
            let (mut tx, mut rx) = (SrtpContext::new(&key), SrtpContext::new(&key));
            let mut wire = protect(&mut tx, &rtp(1, 1, 160));
            wire[40] ^= 0x01;
            assert_eq!(
                unprotect(&mut rx, &wire),
                Err(SrtpError::AuthFailed),
                "{suite}"
            );
        }
    }

    #[test]
    fn tampered_header_fails_auth() {
        for suite in ALL_SUITES {
            let key = test_key(suite);
            let (mut tx, mut rx) = (SrtpContext::new(&key), SrtpContext::new(&key));
            let mut wire = protect(&mut tx, &rtp(1, 1, 160));
            wire[1] ^= 0x80; // marker bit
            assert_eq!(
                unprotect(&mut rx, &wire),
                Err(SrtpError::AuthFailed),
                "{suite}"
            );
        }
    }

    #[test]
    fn tampered_tag_fails_auth() {
        for suite in ALL_SUITES {
            let key = test_key(suite);
            let (mut tx, mut rx) = (SrtpContext::new(&key), SrtpContext::new(&key));
            let mut wire = protect(&mut tx, &rtp(1, 1, 160));
            *wire.last_mut().unwrap() ^= 0x40;
            assert_eq!(
                unprotect(&mut rx, &wire),
                Err(SrtpError::AuthFailed),
                "{suite}"
            );
        }
    }

    #[test]
    fn wrong_key_fails_auth() {
        for suite in ALL_SUITES {
            let mut tx = SrtpContext::new(&test_key(suite));
            let mut other = test_key(suite);
            other.master_key[0] ^= 1;
            let mut rx = SrtpContext::new(&other);
            let wire = protect(&mut tx, &rtp(1, 1, 160));
            assert_eq!(
                unprotect(&mut rx, &wire),
                Err(SrtpError::AuthFailed),
                "{suite}"
            );
        }
    }

    #[test]
    fn failed_auth_does_not_move_the_window() {
        let key = test_key(SrtpSuite::AesCm128HmacSha1_80);
        let (mut tx, mut rx) = (SrtpContext::new(&key), SrtpContext::new(&key));
        let first = protect(&mut tx, &rtp(100, 1, 20));
        assert!(unprotect(&mut rx, &first).is_ok());
        // A forgery far ahead: must not advance s_l, or packet 101 would look like a replay.
        let mut forged = rtp(20_000, 1, 20);
        forged.extend_from_slice(&[0; 10]);
        assert_eq!(unprotect(&mut rx, &forged), Err(SrtpError::AuthFailed));
        let next = protect(&mut tx, &rtp(101, 1, 20));
        assert!(unprotect(&mut rx, &next).is_ok());
    }

    // ----- replay -----------------------------------------------------------------------------

    #[test]
    fn replayed_packet_is_rejected() {
        for suite in ALL_SUITES {
            let key = test_key(suite);
            let (mut tx, mut rx) = (SrtpContext::new(&key), SrtpContext::new(&key));
            let wire = protect(&mut tx, &rtp(7, 1, 20));
            assert!(unprotect(&mut rx, &wire).is_ok());
            assert_eq!(unprotect(&mut rx, &wire), Err(SrtpError::Replay), "{suite}");
        }
    }

    #[test]
    fn reordered_packet_inside_the_window_is_accepted_once() {
        let key = test_key(SrtpSuite::AesCm128HmacSha1_80);
        let (mut tx, mut rx) = (SrtpContext::new(&key), SrtpContext::new(&key));
        let wires: Vec<Vec<u8>> = (0..50u16)
            .map(|s| protect(&mut tx, &rtp(s, 1, 20)))
            .collect();
        assert!(unprotect(&mut rx, &wires[0]).is_ok());
        assert!(unprotect(&mut rx, &wires[49]).is_ok());
        assert!(
            unprotect(&mut rx, &wires[10]).is_ok(),
            "late but inside the window"
        );
        assert_eq!(unprotect(&mut rx, &wires[10]), Err(SrtpError::Replay));
        assert_eq!(unprotect(&mut rx, &wires[49]), Err(SrtpError::Replay));
        assert!(unprotect(&mut rx, &wires[48]).is_ok());
    }

    #[test]
    fn packet_far_outside_the_window_is_replay() {
        let key = test_key(SrtpSuite::AesCm128HmacSha1_80);
        let (mut tx, mut rx) = (SrtpContext::new(&key), SrtpContext::new(&key));
        let wires: Vec<Vec<u8>> = (0..300u16)
            .map(|s| protect(&mut tx, &rtp(s, 1, 20)))
            .collect();
        assert!(unprotect(&mut rx, &wires[0]).is_ok());
        assert!(unprotect(&mut rx, &wires[299]).is_ok());
        // 299 - 100 = 199 >= 128: too old to tell apart from a replay, never received or not.
        assert_eq!(unprotect(&mut rx, &wires[100]), Err(SrtpError::Replay));
        // 299 - 172 = 127: the oldest index the window still covers.
        assert!(unprotect(&mut rx, &wires[172]).is_ok());
        assert_eq!(unprotect(&mut rx, &wires[171]), Err(SrtpError::Replay));
    }

    #[test]
    fn packet_before_the_first_one_with_roc_zero_is_replay() {
        let key = test_key(SrtpSuite::AesCm128HmacSha1_80);
        let (mut tx, mut rx) = (SrtpContext::new(&key), SrtpContext::new(&key));
        let first = protect(&mut tx, &rtp(5, 1, 20));
        assert!(unprotect(&mut rx, &first).is_ok());
        // seq 65000 after s_l = 5 guesses ROC - 1 = -1: before the stream began.
        let mut stale = rtp(65000, 1, 20);
        stale.extend_from_slice(&[0; 10]);
        assert_eq!(unprotect(&mut rx, &stale), Err(SrtpError::Replay));
    }

    // ----- rollover ---------------------------------------------------------------------------

    /// 70,000 consecutive sequence numbers from 60,000: the sequence wraps once, ROC goes to 1
    /// on both sides, and every packet round-trips.
    #[test]
    fn roc_rollover_across_seq_65535_to_0_round_trips() {
        for suite in [SrtpSuite::AesCm128HmacSha1_80, SrtpSuite::AeadAes128Gcm] {
            let key = test_key(suite);
            let (mut tx, mut rx) = (SrtpContext::new(&key), SrtpContext::new(&key));
            for n in 0..70_000u32 {
                let seq = (60_000 + n) as u16;
                let plain = rtp(seq, 42, 8);
                let wire = protect(&mut tx, &plain);
                assert_eq!(unprotect(&mut rx, &wire), Ok(plain), "{suite} n={n}");
            }
            assert_eq!(rx.roc(42), Some(1), "{suite}");
        }
    }

    #[test]
    fn reordering_across_the_wrap_uses_the_right_roc() {
        let key = test_key(SrtpSuite::AesCm128HmacSha1_80);
        let (mut tx, mut rx) = (SrtpContext::new(&key), SrtpContext::new(&key));
        let seqs = [65533u16, 65534, 65535, 0, 1, 2];
        let wires: Vec<Vec<u8>> = seqs
            .iter()
            .map(|&s| protect(&mut tx, &rtp(s, 3, 20)))
            .collect();
        for i in [0, 1, 3, 2, 5, 4] {
            assert_eq!(
                unprotect(&mut rx, &wires[i]),
                Ok(rtp(seqs[i], 3, 20)),
                "seq {}",
                seqs[i]
            );
        }
        assert_eq!(rx.roc(3), Some(1));
        assert_eq!(unprotect(&mut rx, &wires[2]), Err(SrtpError::Replay));
    }

    // ----- SSRC table -------------------------------------------------------------------------

    #[test]
    fn ssrcs_are_tracked_apart_and_the_least_recent_is_recycled() {
        let key = test_key(SrtpSuite::AesCm128HmacSha1_80);
        let (mut tx, mut rx) = (SrtpContext::new(&key), SrtpContext::new(&key));
        let first: Vec<Vec<u8>> = (0..MAX_SSRCS as u32)
            .map(|ssrc| protect(&mut tx, &rtp(10, ssrc, 20)))
            .collect();
        for w in &first {
            assert!(unprotect(&mut rx, w).is_ok());
        }
        // Same seq, different SSRCs: each has its own window.
        for w in &first {
            assert_eq!(unprotect(&mut rx, w), Err(SrtpError::Replay));
        }
        // Keep SSRC 0 fresh, then a ninth SSRC evicts SSRC 1, the least recently used.
        assert!(unprotect(&mut rx, &protect(&mut tx, &rtp(11, 0, 20))).is_ok());
        assert!(unprotect(&mut rx, &protect(&mut tx, &rtp(10, 99, 20))).is_ok());
        assert_eq!(rx.roc(1), None);
        assert_eq!(rx.roc(0), Some(0));
        assert_eq!(rx.roc(99), Some(0));
    }

    // ----- malformed input --------------------------------------------------------------------

    #[test]
    fn short_packet_is_too_short() {
        let mut rx = SrtpContext::new(&test_key(SrtpSuite::AesCm128HmacSha1_80));
        assert_eq!(rx.unprotect_rtp(&mut []), Err(SrtpError::TooShort));
        assert_eq!(rx.unprotect_rtp(&mut [0x80; 21]), Err(SrtpError::TooShort));
    }

    #[test]
    fn wrong_version_is_malformed() {
        let mut rx = SrtpContext::new(&test_key(SrtpSuite::AesCm128HmacSha1_80));
        let mut p = rtp(1, 1, 40);
        p[0] = 0x40;
        assert_eq!(rx.unprotect_rtp(&mut p), Err(SrtpError::Malformed));
    }

    #[test]
    fn header_extension_past_the_end_is_malformed() {
        let mut rx = SrtpContext::new(&test_key(SrtpSuite::AesCm128HmacSha1_80));
        let mut p = rtp(1, 1, 0);
        p[0] = 0x90;
        p.extend_from_slice(&[0xbe, 0xde, 0xff, 0xff]);
        p.extend_from_slice(&[0; 10]);
        assert_eq!(rx.unprotect_rtp(&mut p), Err(SrtpError::Malformed));
        let mut csrcs = rtp(1, 1, 20);
        csrcs[0] = 0x8f; // 15 CSRCs = 60 bytes, more than the packet holds
        assert_eq!(rx.unprotect_rtp(&mut csrcs), Err(SrtpError::Malformed));
    }

    /// Random bytes, random lengths and every truncation of a valid packet: errors, no panic.
    #[test]
    fn unprotect_never_panics_on_random_or_truncated_bytes() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for suite in ALL_SUITES {
            let mut key = test_key(suite);
            for mki in [None, Some(Mki { value: 3, len: 2 })] {
                key.mki = mki;
                let mut rx = SrtpContext::new(&key);
                for _ in 0..3000 {
                    let len = (next() % 300) as usize;
                    let mut buf: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                    if len > 0 && next() % 2 == 0 {
                        buf[0] = 0x80 | (buf[0] & 0x3f); // look like RTP v2 more often
                    }
                    let _ = rx.unprotect_rtp(&mut buf);
                }
                let mut tx = SrtpContext::new(&key);
                let wire = protect(&mut tx, &rtp(1, 1, 160));
                for cut in 0..wire.len() {
                    let mut t = wire[..cut].to_vec();
                    assert!(rx.unprotect_rtp(&mut t).is_err(), "{suite} cut {cut}");
                }
            }
        }
    }

    // ----- SDES -------------------------------------------------------------------------------

    #[test]
    fn sdes_suite_names_map_both_ways() {
        for suite in ALL_SUITES {
            assert_eq!(SrtpSuite::from_sdp_name(suite.sdp_name()), Some(suite));
        }
        assert_eq!(SrtpSuite::from_sdp_name("AES_256_CM_HMAC_SHA1_80"), None);
        assert_eq!(SrtpSuite::from_sdp_name("aes_cm_128_hmac_sha1_80"), None);
    }

    #[test]
    fn sdes_inline_key_with_lifetime_and_mki_parses() {
        let key = SrtpKey::from_sdes(
            "AES_CM_128_HMAC_SHA1_80",
            "inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4",
        )
        .unwrap();
        assert_eq!(key.suite, SrtpSuite::AesCm128HmacSha1_80);
        assert_eq!(&key.master_key, b"YS___semctl () {");
        assert_eq!(key.salt(), b"\t220;}\n}\nunles");
        assert_eq!(key.lifetime, Some(1 << 20));
        assert_eq!(key.mki, Some(Mki { value: 1, len: 4 }));
        assert_eq!(
            key.to_sdes(),
            "inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4"
        );
    }

    #[test]
    fn sdes_inline_key_alone_and_with_session_params_parses() {
        let key = SrtpKey::from_sdes(
            "AES_CM_128_HMAC_SHA1_32",
            "inline:cJOJ7kxQjhFBp2fP6AYjs3vKw7CeBdWZCj0isbJv KDR=0 WSH=64",
        )
        .unwrap();
        assert_eq!(key.suite, SrtpSuite::AesCm128HmacSha1_32);
        assert_eq!(key.lifetime, None);
        assert_eq!(key.mki, None);
        let only_mki = SrtpKey::from_sdes(
            "AES_CM_128_HMAC_SHA1_80",
            "inline:cJOJ7kxQjhFBp2fP6AYjs3vKw7CeBdWZCj0isbJv|7:1",
        )
        .unwrap();
        assert_eq!(only_mki.mki, Some(Mki { value: 7, len: 1 }));
    }

    #[test]
    fn sdes_gcm_key_is_28_bytes_with_or_without_padding() {
        let key = SrtpKey::new(SrtpSuite::AeadAes128Gcm, [7; 16], &[9; 12]).unwrap();
        let text = key.to_sdes();
        assert!(text.ends_with('='), "{text}");
        assert_eq!(SrtpKey::from_sdes("AEAD_AES_128_GCM", &text).unwrap(), key);
        let unpadded = text.trim_end_matches('=');
        assert_eq!(
            SrtpKey::from_sdes("AEAD_AES_128_GCM", unpadded).unwrap(),
            key
        );
    }

    #[test]
    fn sdes_wrong_length_is_rejected_with_the_lengths() {
        // 30 bytes is right for AES-CM but not for GCM (28).
        let err = SrtpKey::from_sdes(
            "AEAD_AES_128_GCM",
            "inline:cJOJ7kxQjhFBp2fP6AYjs3vKw7CeBdWZCj0isbJv",
        )
        .unwrap_err();
        assert_eq!(
            err,
            SrtpError::WrongKeyLength {
                expected: 28,
                got: 30
            }
        );
        assert!(err.to_string().contains("30 bytes"), "{err}");
        // A 46-byte AES-256 key offered under a 128-bit suite.
        let err = SrtpKey::from_sdes(
            "AES_CM_128_HMAC_SHA1_80",
            "inline:8AbZePWwsKhLGX3GlXA+yHYPQ3cgraer/9DkFJYCOPZZy3o9wC0NIbIFYZfyHw==",
        )
        .unwrap_err();
        assert_eq!(
            err,
            SrtpError::WrongKeyLength {
                expected: 30,
                got: 46
            }
        );
    }

    #[test]
    fn sdes_bad_base64_is_rejected() {
        let err = SrtpKey::from_sdes(
            "AES_CM_128_HMAC_SHA1_80",
            "inline:cJOJ7kxQjhFBp2fP6AYjs3vKw7CeBdWZCj0isb!!",
        )
        .unwrap_err();
        assert_eq!(
            err,
            SrtpError::BadKeyParams("inline key is not valid base64")
        );
    }

    #[test]
    fn sdes_unknown_suite_is_rejected() {
        assert_eq!(
            SrtpKey::from_sdes(
                "F8_128_HMAC_SHA1_80",
                "inline:cJOJ7kxQjhFBp2fP6AYjs3vKw7CeBdWZCj0isbJv"
            ),
            Err(SrtpError::UnknownSuite)
        );
    }

    #[test]
    fn sdes_malformed_params_are_rejected() {
        let s = "AES_CM_128_HMAC_SHA1_80";
        let k = "cJOJ7kxQjhFBp2fP6AYjs3vKw7CeBdWZCj0isbJv";
        for params in [
            String::new(),
            k.to_string(),
            format!("uri:{k}"),
            format!("inline:{k}|2^99"),
            format!("inline:{k}|soon"),
            format!("inline:{k}|1:0"),
            format!("inline:{k}|1:5"),
            format!("inline:{k}|256:1"),
            format!("inline:{k}|1:4|2^20"),
            format!("inline:{k}|2^20|2^10"),
            format!("inline:{k} UNENCRYPTED_SRTP"),
            format!("inline:{k} KDR=24"),
        ] {
            assert!(
                matches!(
                    SrtpKey::from_sdes(s, &params),
                    Err(SrtpError::BadKeyParams(_))
                ),
                "{params:?}"
            );
        }
    }

    #[test]
    fn sdes_key_decrypts_what_the_same_offer_encrypts() {
        let key = SrtpKey::from_sdes(
            "AES_CM_128_HMAC_SHA1_80",
            "inline:cJOJ7kxQjhFBp2fP6AYjs3vKw7CeBdWZCj0isbJv|2^31|1:1",
        )
        .unwrap();
        let (mut tx, mut rx) = (SrtpContext::new(&key), SrtpContext::new(&key));
        let plain = rtp(4242, 0xabcd, 160);
        assert_eq!(unprotect(&mut rx, &protect(&mut tx, &plain)), Ok(plain));
    }

    #[test]
    fn key_debug_output_hides_the_key() {
        let text = format!("{:?}", test_key(SrtpSuite::AesCm128HmacSha1_80));
        assert!(!text.contains("48, 49"), "{text}");
        assert!(text.contains("redacted"));
    }
}
