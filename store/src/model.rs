//! The domain model: what certctl knows about a certificate.
//!
//! A [`Certificate`] is split in two halves:
//! - [`CertificateFacts`]: everything read from the DER encoding. It never changes for a
//!   given fingerprint, so it is parsed once and stored as is.
//! - the tracking half (role, revocation, first/last seen, sources): what the inventory has
//!   learned about that certificate over time.
//!
//! Times are Unix seconds (UTC) in [`UnixTime`]; [`rfc3339`] formats them for people and JSON.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Seconds since 1970-01-01T00:00:00Z.
pub type UnixTime = i64;

/// A certificate whose validity is this long or shorter is an *ephemeral* credential.
pub const EPHEMERAL_MAX_VALIDITY_SECS: i64 = 24 * 3600;

/// A SHA-256 digest: certificate fingerprints (of the DER) and key hashes (of the SPKI).
///
/// Serialized as 32 raw bytes in the store and as lowercase hex in JSON (human-readable
/// formats).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256(pub [u8; 32]);

impl Serialize for Sha256 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Sha256 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let text = String::deserialize(d)?;
            text.parse().map_err(serde::de::Error::custom)
        } else {
            <[u8; 32]>::deserialize(d).map(Sha256)
        }
    }
}

/// The identity of a certificate in the store: SHA-256 of its DER encoding.
pub type Fingerprint = Sha256;

impl Sha256 {
    /// Lowercase hex, 64 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256({})", self.to_hex())
    }
}

impl FromStr for Sha256 {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let cleaned: String = s.chars().filter(|c| *c != ':').collect();
        let bytes = hex::decode(&cleaned).map_err(|e| format!("`{s}` is not hex: {e}"))?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| format!("`{s}` is not a SHA-256 digest (64 hex characters)"))?;
        Ok(Sha256(arr))
    }
}

/// A key identifier (the subjectKeyIdentifier or authorityKeyIdentifier extension).
///
/// Raw bytes in the store; lowercase hex in JSON and on screen.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub Vec<u8>);

impl KeyId {
    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.to_hex())
    }
}

impl FromStr for KeyId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let cleaned: String = s.chars().filter(|c| *c != ':').collect();
        hex::decode(&cleaned)
            .map(KeyId)
            .map_err(|e| format!("`{s}` is not a hex key identifier: {e}"))
    }
}

impl Serialize for KeyId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            s.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for KeyId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let text = String::deserialize(d)?;
            text.parse().map_err(serde::de::Error::custom)
        } else {
            serde_bytes_vec(d).map(KeyId)
        }
    }
}

/// Deserializes a byte string (postcard writes `serialize_bytes` as a length and bytes).
fn serde_bytes_vec<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    struct Bytes;
    impl<'de> serde::de::Visitor<'de> for Bytes {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }
        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }
        fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::new();
            while let Some(b) = seq.next_element()? {
                out.push(b);
            }
            Ok(out)
        }
    }
    d.deserialize_bytes(Bytes)
}

/// What a certificate is used for in the fleet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Internet gateway (the endpoint agents connect through).
    Gateway,
    /// An IIS web site binding.
    Iis,
    /// A site server.
    SiteServer,
    /// An agent's client certificate (permanent or ephemeral).
    Agent,
    /// A certification authority (root or intermediate).
    Ca,
    /// Anything else.
    Other,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Gateway,
        Role::Iis,
        Role::SiteServer,
        Role::Agent,
        Role::Ca,
        Role::Other,
    ];

    /// The name used on the command line and in JSON (`site-server`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Gateway => "gateway",
            Role::Iis => "iis",
            Role::SiteServer => "site-server",
            Role::Agent => "agent",
            Role::Ca => "ca",
            Role::Other => "other",
        }
    }

    /// A stable one-byte code, used in index keys.
    pub fn code(self) -> u8 {
        match self {
            Role::Gateway => 1,
            Role::Iis => 2,
            Role::SiteServer => 3,
            Role::Agent => 4,
            Role::Ca => 5,
            Role::Other => 6,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!(
                    "unknown role `{s}` (expected one of: gateway, iis, site-server, agent, ca, other)"
                )
            })
    }
}

/// Whether a leaf is a long-lived or a short-lived (≤ 24 h) credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CredentialKind {
    Permanent,
    Ephemeral,
}

impl CredentialKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::Permanent => "permanent",
            CredentialKind::Ephemeral => "ephemeral",
        }
    }
}

impl fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The public key of a certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyAlgorithm {
    Rsa {
        bits: u32,
    },
    /// Named curve, e.g. `P-256`.
    Ec {
        curve: String,
    },
    Ed25519,
    Ed448,
    Dsa {
        bits: u32,
    },
    /// Anything else, by algorithm OID.
    Other {
        oid: String,
    },
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyAlgorithm::Rsa { bits } => write!(f, "RSA {bits}"),
            KeyAlgorithm::Ec { curve } => write!(f, "EC {curve}"),
            KeyAlgorithm::Ed25519 => f.write_str("Ed25519"),
            KeyAlgorithm::Ed448 => f.write_str("Ed448"),
            KeyAlgorithm::Dsa { bits } => write!(f, "DSA {bits}"),
            KeyAlgorithm::Other { oid } => write!(f, "other ({oid})"),
        }
    }
}

/// Subject alternative names, by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectAltNames {
    pub dns: Vec<String>,
    pub ip: Vec<String>,
    pub email: Vec<String>,
    pub uri: Vec<String>,
}

impl SubjectAltNames {
    pub fn is_empty(&self) -> bool {
        self.dns.is_empty() && self.ip.is_empty() && self.email.is_empty() && self.uri.is_empty()
    }

    /// Every name of every kind.
    pub fn all(&self) -> impl Iterator<Item = &str> {
        self.dns
            .iter()
            .chain(&self.ip)
            .chain(&self.email)
            .chain(&self.uri)
            .map(String::as_str)
    }
}

/// Everything read from a certificate's DER encoding. Immutable for a fingerprint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateFacts {
    /// SHA-256 of the DER encoding.
    pub fingerprint: Fingerprint,
    /// Subject DN, RFC 2253 string (`CN=gw.example.com,O=Example`).
    pub subject: String,
    /// The subject's (first) common name, if any.
    pub subject_cn: Option<String>,
    /// Issuer DN, RFC 2253 string.
    pub issuer: String,
    /// Serial number, lowercase hex without separators or leading zeros; a "negative" serial
    /// (which some CAs emit) has a leading `-`, as openssl prints it. Releases before 0.4
    /// wrote a negative serial's two's complement bytes instead (`edcc` for `-1234`); a
    /// scan that reads the certificate again corrects it.
    pub serial: String,
    pub not_before: UnixTime,
    pub not_after: UnixTime,
    pub sans: SubjectAltNames,
    pub key: KeyAlgorithm,
    /// Signature algorithm name (`sha256WithRSAEncryption`, `ecdsa-with-SHA256`, `ED25519`, ...).
    pub signature_algorithm: String,
    /// basicConstraints CA flag.
    pub is_ca: bool,
    /// Subject key identifier.
    pub subject_key_id: Option<KeyId>,
    /// Authority key identifier (its keyIdentifier field).
    pub authority_key_id: Option<KeyId>,
    /// SHA-256 of the DER SubjectPublicKeyInfo: equal for certificates sharing one key.
    pub spki_sha256: Sha256,
    pub crl_distribution_points: Vec<String>,
    pub ocsp_urls: Vec<String>,
}

impl CertificateFacts {
    /// Validity length in seconds.
    pub fn validity_secs(&self) -> i64 {
        self.not_after.saturating_sub(self.not_before)
    }

    /// Credential kind of a leaf (validity ≤ 24 h is ephemeral); `None` for CA certificates.
    pub fn credential_kind(&self) -> Option<CredentialKind> {
        if self.is_ca {
            None
        } else if self.validity_secs() <= EPHEMERAL_MAX_VALIDITY_SECS {
            Some(CredentialKind::Ephemeral)
        } else {
            Some(CredentialKind::Permanent)
        }
    }

    /// The names this certificate answers to: subject CN and every SAN.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.subject_cn
            .as_deref()
            .into_iter()
            .chain(self.sans.all())
    }

    /// A short human label: CN, else first SAN, else the subject DN.
    pub fn display_name(&self) -> &str {
        self.subject_cn
            .as_deref()
            .or_else(|| self.sans.all().next())
            .unwrap_or(&self.subject)
    }
}

/// RFC 5280 revocation reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RevocationReason {
    Unspecified,
    KeyCompromise,
    CaCompromise,
    AffiliationChanged,
    Superseded,
    CessationOfOperation,
    CertificateHold,
    RemoveFromCrl,
    PrivilegeWithdrawn,
    AaCompromise,
}

/// That a certificate was revoked, when, why and by whom.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub revoked_at: UnixTime,
    pub reason: RevocationReason,
    /// Who recorded it (user name, or the CRL URL it was learned from).
    pub revoked_by: String,
}

/// Where a certificate was seen.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SourceLocation {
    /// In a file, as the `index`-th certificate (0-based) of that file.
    File { path: String, index: u32 },
    /// Served by a live TLS endpoint (`host:port`), at `index` in the chain (0 = leaf).
    Endpoint { address: String, index: u32 },
}

impl fmt::Display for SourceLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceLocation::File { path, index } => write!(f, "{path}#{index}"),
            SourceLocation::Endpoint { address, index } => write!(f, "tls://{address}#{index}"),
        }
    }
}

/// One place a certificate was seen, with its own timestamps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub location: SourceLocation,
    pub first_seen: UnixTime,
    pub last_seen: UnixTime,
    /// Set when the certificate was no longer found there (the file changed or vanished).
    pub gone_since: Option<UnixTime>,
}

/// A certificate as the inventory knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    pub facts: CertificateFacts,
    pub role: Role,
    pub revocation: Option<Revocation>,
    pub first_seen: UnixTime,
    pub last_seen: UnixTime,
    /// Where it was seen. Capped at [`MAX_INLINE_SOURCES`]; see `more_sources`.
    pub sources: Vec<Source>,
    /// How many further sources were seen beyond the cap (typical for a CA certificate that
    /// sits in thousands of chain files).
    pub more_sources: u64,
}

/// At most this many sources are kept inline in a certificate's record.
pub const MAX_INLINE_SOURCES: usize = 64;

/// A certificate's state at a point in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Valid,
    NotYetValid,
    Expiring,
    Expired,
    Revoked,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Valid => "valid",
            Status::NotYetValid => "not-yet-valid",
            Status::Expiring => "expiring",
            Status::Expired => "expired",
            Status::Revoked => "revoked",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Certificate {
    /// A certificate first seen now, with no sources yet.
    pub fn new(facts: CertificateFacts, role: Role, now: UnixTime) -> Self {
        Certificate {
            facts,
            role,
            revocation: None,
            first_seen: now,
            last_seen: now,
            sources: Vec::new(),
            more_sources: 0,
        }
    }

    pub fn fingerprint(&self) -> Fingerprint {
        self.facts.fingerprint
    }

    pub fn credential_kind(&self) -> Option<CredentialKind> {
        self.facts.credential_kind()
    }

    /// Whole days until expiry (negative once expired), rounded down.
    pub fn days_left(&self, now: UnixTime) -> i64 {
        (self.facts.not_after - now).div_euclid(86_400)
    }

    /// Status at `now`, where "expiring" means within `expiring_within` seconds.
    pub fn status(&self, now: UnixTime, expiring_within: i64) -> Status {
        if self.revocation.is_some() {
            Status::Revoked
        } else if self.facts.not_after <= now {
            Status::Expired
        } else if self.facts.not_before > now {
            Status::NotYetValid
        } else if self.facts.not_after <= now.saturating_add(expiring_within) {
            Status::Expiring
        } else {
            Status::Valid
        }
    }

    /// Sources where the certificate is still present.
    pub fn current_sources(&self) -> impl Iterator<Item = &Source> {
        self.sources.iter().filter(|s| s.gone_since.is_none())
    }
}

/// Formats a Unix time as RFC 3339 UTC (`2026-11-25T17:00:00Z`).
pub fn rfc3339(t: UnixTime) -> String {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|dt| dt.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("@{t}"))
}

/// The current wall-clock time.
pub fn now() -> UnixTime {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_round_trips_through_its_name() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!("router".parse::<Role>().is_err());
    }

    #[test]
    fn sha256_parses_hex_with_or_without_colons() {
        let hex = "ab".repeat(32);
        let with_colons = vec!["AB"; 32].join(":");
        assert_eq!(hex.parse::<Sha256>(), with_colons.parse::<Sha256>());
        assert!("abcd".parse::<Sha256>().is_err());
    }

    #[test]
    fn sha256_is_hex_in_json() {
        let d = Sha256([0xab; 32]);
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{}\"", "ab".repeat(32)));
        assert_eq!(serde_json::from_str::<Sha256>(&json).unwrap(), d);
    }

    #[test]
    fn key_id_is_hex_in_json_and_bytes_in_the_store() {
        let id = KeyId(vec![0x5e, 0xb8, 0x0f]);
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"5eb80f\"");
        assert_eq!(serde_json::from_str::<KeyId>("\"5E:B8:0F\"").unwrap(), id);
        let bytes = postcard::to_stdvec(&id).unwrap();
        assert_eq!(bytes, [3, 0x5e, 0xb8, 0x0f]);
        assert_eq!(postcard::from_bytes::<KeyId>(&bytes).unwrap(), id);
    }

    #[test]
    fn rfc3339_is_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
