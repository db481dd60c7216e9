//! Test helpers shared by the store's unit tests.

use crate::model::*;

/// Plausible facts of certificate number `n` (its fingerprint is `[n; 32]`).
pub(crate) fn facts(n: u8, cn: &str) -> CertificateFacts {
    CertificateFacts {
        fingerprint: Sha256([n; 32]),
        subject: format!("CN={cn}"),
        subject_cn: Some(cn.to_string()),
        issuer: "CN=Issuing CA".into(),
        serial: format!("{n:x}"),
        not_before: 1_700_000_000,
        not_after: 1_800_000_000 + i64::from(n) * 86_400,
        sans: SubjectAltNames::default(),
        key: KeyAlgorithm::Ed25519,
        signature_algorithm: "ED25519".into(),
        is_ca: false,
        subject_key_id: Some(KeyId(vec![n; 20])),
        authority_key_id: None,
        spki_sha256: Sha256([n.wrapping_add(1); 32]),
        crl_distribution_points: vec![],
        ocsp_urls: vec![],
    }
}
