//! What the store remembers about live TLS endpoints (gateways, IIS sites, site servers):
//! the chain each one served at its last successful probe, and what is wrong with it.
//!
//! An endpoint record starts with a format byte: format 1 (schema 3 and before) has no
//! probe duration; format 2 (schema 4) adds it. [`decode_endpoint`] reads both (a format-1
//! record reads as "duration unknown"); opening an older store rewrites its endpoint
//! records in format 2 (`migrate::upgrade_endpoints`).

use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};
use crate::model::{Fingerprint, Role, UnixTime};

/// A TLS endpoint, as of its last probe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// `host:port`.
    pub address: String,
    /// The SNI name sent, if different from the host.
    pub sni: Option<String>,
    pub role: Option<Role>,
    /// The issuer text the leaf is expected to carry (detects TLS-inspecting proxies).
    pub expect_issuer: Option<String>,
    pub last_probe: Option<UnixTime>,
    /// Last probe that got a certificate chain.
    pub last_success: Option<UnixTime>,
    /// The chain served at the last successful probe, leaf first. Kept when the endpoint
    /// later becomes unreachable.
    pub chain: Vec<Fingerprint>,
    /// What the last probe found wrong (empty when all is well).
    pub findings: Vec<Finding>,
    /// How long the last probe took (connect and handshake, or until it failed), in
    /// microseconds; `None` for a probe recorded before schema 4.
    pub last_probe_duration_us: Option<u64>,
}

/// Format byte of an endpoint record without the probe duration (schema 3 and before;
/// the version byte every other value starts with).
pub(crate) const ENDPOINT_FORMAT_1: u8 = 1;
/// Format byte of an endpoint record as this release writes it.
pub(crate) const ENDPOINT_FORMAT_2: u8 = 2;

/// An endpoint record in format 1: field for field what schema 3 wrote.
#[derive(Serialize, Deserialize)]
pub(crate) struct EndpointV1 {
    pub(crate) address: String,
    pub(crate) sni: Option<String>,
    pub(crate) role: Option<Role>,
    pub(crate) expect_issuer: Option<String>,
    pub(crate) last_probe: Option<UnixTime>,
    pub(crate) last_success: Option<UnixTime>,
    pub(crate) chain: Vec<Fingerprint>,
    pub(crate) findings: Vec<Finding>,
}

/// Encodes an endpoint record in the current format.
pub(crate) fn encode_endpoint(endpoint: &Endpoint) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(256);
    out.push(ENDPOINT_FORMAT_2);
    postcard::to_io(endpoint, &mut out).map_err(|e| StoreError::Io(e.to_string()))?;
    Ok(out)
}

/// Decodes an endpoint record of either format.
pub(crate) fn decode_endpoint(bytes: &[u8]) -> Result<Endpoint> {
    let corrupt = |what: &'static str, detail: String| StoreError::Corrupt { what, detail };
    match bytes.split_first() {
        Some((&ENDPOINT_FORMAT_1, body)) => {
            let old: EndpointV1 = postcard::from_bytes(body)
                .map_err(|e| corrupt("endpoint (format 1)", e.to_string()))?;
            Ok(Endpoint {
                address: old.address,
                sni: old.sni,
                role: old.role,
                expect_issuer: old.expect_issuer,
                last_probe: old.last_probe,
                last_success: old.last_success,
                chain: old.chain,
                findings: old.findings,
                last_probe_duration_us: None,
            })
        }
        Some((&ENDPOINT_FORMAT_2, body)) => {
            postcard::from_bytes(body).map_err(|e| corrupt("endpoint", e.to_string()))
        }
        Some((v, _)) => Err(corrupt("endpoint", format!("unknown record format {v}"))),
        None => Err(corrupt("endpoint", "empty value".into())),
    }
}

/// One problem found on an endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub kind: FindingKind,
    /// A sentence for the admin (names the certificate, the expected value, the cause).
    pub detail: String,
}

/// The kinds of endpoint problems.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingKind {
    /// Connection refused, timed out, DNS failure, or not TLS.
    Unreachable,
    /// The leaf does not cover the host / SNI name.
    HostnameMismatch,
    /// The chain does not verify against the trust store.
    ChainUntrusted,
    /// The server does not send the intermediates needed to build the chain.
    IncompleteChain,
    SelfSignedLeaf,
    Expired,
    NotYetValid,
    /// The leaf's issuer is not the expected one: typically a TLS-inspecting proxy.
    UnexpectedIssuer,
    /// A newer certificate for the served leaf's subject is on disk, but the endpoint still
    /// serves the old one ("renewed but not reloaded"). Computed from the inventory when
    /// shown, not stored by the probe.
    RenewedNotReloaded,
    /// The endpoint serves a certificate that is in no inventoried file. Computed when
    /// shown, not stored by the probe.
    NotInInventory,
    /// The endpoint serves a leaf the inventory holds as revoked: relying parties that check
    /// revocation fail, and the key may be in an attacker's hands. Computed when shown (the
    /// revocation may come after the probe), until a probe sees another leaf.
    ServingRevoked,
    /// The server sent more certificates than a probe records (the rest were dropped).
    ChainTooLong,
}

impl FindingKind {
    /// Whether relying parties fail on it now (monitoring: CRITICAL); the others are worth a
    /// look (WARNING). Unreachable is critical: nothing can be said of what it serves.
    pub fn is_critical(self) -> bool {
        match self {
            FindingKind::Unreachable
            | FindingKind::HostnameMismatch
            | FindingKind::ChainUntrusted
            | FindingKind::Expired
            | FindingKind::NotYetValid
            | FindingKind::UnexpectedIssuer
            | FindingKind::ServingRevoked => true,
            FindingKind::IncompleteChain
            | FindingKind::SelfSignedLeaf
            | FindingKind::RenewedNotReloaded
            | FindingKind::NotInInventory
            | FindingKind::ChainTooLong => false,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::Unreachable => "unreachable",
            FindingKind::HostnameMismatch => "hostname-mismatch",
            FindingKind::ChainUntrusted => "chain-untrusted",
            FindingKind::IncompleteChain => "incomplete-chain",
            FindingKind::SelfSignedLeaf => "self-signed-leaf",
            FindingKind::Expired => "expired",
            FindingKind::NotYetValid => "not-yet-valid",
            FindingKind::UnexpectedIssuer => "unexpected-issuer",
            FindingKind::RenewedNotReloaded => "renewed-not-reloaded",
            FindingKind::NotInInventory => "not-in-inventory",
            FindingKind::ServingRevoked => "serving-revoked",
            FindingKind::ChainTooLong => "chain-too-long",
        }
    }
}

impl std::fmt::Display for FindingKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys;
    use crate::Store;

    /// A schema-3 store's endpoint record (format 1) reads as "duration unknown", and
    /// opening the store rewrites it in format 2 and moves the store to schema 4.
    #[test]
    fn a_schema_3_endpoint_reads_without_a_duration_and_is_upgraded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store");
        let old = EndpointV1 {
            address: "gw.example:443".into(),
            sni: None,
            role: Some(Role::Gateway),
            expect_issuer: None,
            last_probe: Some(1_800_000_000),
            last_success: Some(1_800_000_000),
            chain: vec![crate::Sha256([7; 32])],
            findings: vec![Finding {
                kind: FindingKind::IncompleteChain,
                detail: "no intermediate".into(),
            }],
        };
        {
            let store = Store::open(&path).expect("open");
            let tree = store.tree();
            let value = crate::store::encode(&old).expect("encode");
            assert_eq!(value[0], ENDPOINT_FORMAT_1);
            tree.insert(keys::endpoint_key(&old.address), value)
                .expect("insert");
            tree.insert([keys::META, b's'], &3u32.to_be_bytes())
                .expect("schema 3");
            // Read before the upgrade: the old format is understood as it is.
            let read = store.endpoint(&old.address).expect("read").expect("there");
            assert_eq!(read.last_probe_duration_us, None);
            assert_eq!(read.findings, old.findings);
            store.flush().expect("flush");
        }
        let store = Store::open(&path).expect("reopen");
        let raw = store
            .tree()
            .get(keys::endpoint_key(&old.address))
            .expect("get")
            .expect("kept");
        assert_eq!(raw[0], ENDPOINT_FORMAT_2, "rewritten in format 2");
        let schema = store
            .tree()
            .get([keys::META, b's'])
            .expect("get")
            .expect("schema");
        assert_eq!(schema.as_ref(), &crate::SCHEMA_VERSION.to_be_bytes());
        let endpoints = store.endpoints().expect("endpoints");
        assert_eq!(endpoints.len(), 1);
        let e = &endpoints[0];
        assert_eq!(e.address, old.address);
        assert_eq!(e.chain, old.chain);
        assert_eq!(e.last_probe, old.last_probe);
        assert_eq!(e.last_probe_duration_us, None);

        // A probe written now keeps its duration.
        let mut ingest = store.ingest();
        ingest.put_endpoint(Endpoint {
            last_probe_duration_us: Some(1234),
            ..e.clone()
        });
        ingest.commit().expect("commit");
        let again = store.endpoint(&old.address).expect("read").expect("there");
        assert_eq!(again.last_probe_duration_us, Some(1234));
    }
}
