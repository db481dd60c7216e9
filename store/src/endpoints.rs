//! What the store remembers about live TLS endpoints (gateways, IIS sites, site servers):
//! the chain each one served at its last successful probe, and what is wrong with it.

use serde::{Deserialize, Serialize};

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
