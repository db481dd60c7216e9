//! How a certificate is shown to scripts: the JSON object and CSV row whose field names are
//! a stable contract (see `docs/cli-contract.md`).

use certctl_store::{
    rfc3339, Certificate, CertificateFacts, KeyId, Source, SourceLocation, UnixTime,
};
use serde::Serialize;

/// Certificates within this many seconds of expiry have status `expiring`.
pub const EXPIRING_SECS: i64 = 30 * 86_400;

/// The JSON form of a certificate (`list --json`, `show --json`, `inspect --json`).
#[derive(Debug, Clone, Serialize)]
pub struct CertificateView {
    pub fingerprint_sha256: String,
    pub subject: String,
    pub subject_cn: Option<String>,
    pub issuer: String,
    pub serial: String,
    pub not_before: String,
    pub not_after: String,
    pub days_left: i64,
    pub status: &'static str,
    /// `None` for a file inspected without a store.
    pub role: Option<&'static str>,
    pub credential_kind: Option<&'static str>,
    pub key: String,
    pub signature_algorithm: String,
    pub is_ca: bool,
    pub spki_sha256: String,
    pub subject_key_id: Option<String>,
    pub authority_key_id: Option<String>,
    pub sans: SansView,
    pub crl_distribution_points: Vec<String>,
    pub ocsp_urls: Vec<String>,
    pub revoked: bool,
    pub revocation: Option<RevocationView>,
    pub first_seen: Option<String>,
    pub last_seen: Option<String>,
    pub sources: Vec<SourceView>,
    pub more_sources: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SansView {
    pub dns: Vec<String>,
    pub ip: Vec<String>,
    pub email: Vec<String>,
    pub uri: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RevocationView {
    pub revoked_at: String,
    pub reason: String,
    pub revoked_by: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SourceView {
    /// `file` or `tls`.
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    pub index: u32,
    pub first_seen: String,
    pub last_seen: String,
    pub gone_since: Option<String>,
}

impl CertificateView {
    /// A stored certificate as of `now`.
    pub fn new(cert: &Certificate, now: UnixTime) -> Self {
        let mut v = Self::from_facts(&cert.facts, now);
        v.status = cert.status(now, EXPIRING_SECS).as_str();
        v.role = Some(cert.role.as_str());
        v.revoked = cert.revocation.is_some();
        v.revocation = cert.revocation.as_ref().map(|r| RevocationView {
            revoked_at: rfc3339(r.revoked_at),
            reason: serde_json::to_value(r.reason)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            revoked_by: r.revoked_by.clone(),
        });
        v.first_seen = Some(rfc3339(cert.first_seen));
        v.last_seen = Some(rfc3339(cert.last_seen));
        v.sources = cert.sources.iter().map(SourceView::new).collect();
        v.more_sources = cert.more_sources;
        v
    }

    /// A parsed certificate that is not in a store (`inspect`).
    pub fn from_facts(f: &CertificateFacts, now: UnixTime) -> Self {
        let status = if f.not_after <= now {
            "expired"
        } else if f.not_before > now {
            "not-yet-valid"
        } else if f.not_after <= now + EXPIRING_SECS {
            "expiring"
        } else {
            "valid"
        };
        CertificateView {
            fingerprint_sha256: f.fingerprint.to_hex(),
            subject: f.subject.clone(),
            subject_cn: f.subject_cn.clone(),
            issuer: f.issuer.clone(),
            serial: f.serial.clone(),
            not_before: rfc3339(f.not_before),
            not_after: rfc3339(f.not_after),
            days_left: (f.not_after - now).div_euclid(86_400),
            status,
            role: None,
            credential_kind: f.credential_kind().map(|k| k.as_str()),
            key: f.key.to_string(),
            signature_algorithm: f.signature_algorithm.clone(),
            is_ca: f.is_ca,
            spki_sha256: f.spki_sha256.to_hex(),
            subject_key_id: f.subject_key_id.as_ref().map(KeyId::to_hex),
            authority_key_id: f.authority_key_id.as_ref().map(KeyId::to_hex),
            sans: SansView {
                dns: f.sans.dns.clone(),
                ip: f.sans.ip.clone(),
                email: f.sans.email.clone(),
                uri: f.sans.uri.clone(),
            },
            crl_distribution_points: f.crl_distribution_points.clone(),
            ocsp_urls: f.ocsp_urls.clone(),
            revoked: false,
            revocation: None,
            first_seen: None,
            last_seen: None,
            sources: Vec::new(),
            more_sources: 0,
        }
    }

    /// The CSV header matching [`CertificateView::csv_row`].
    pub const CSV_HEADER: [&'static str; 15] = [
        "fingerprint_sha256",
        "subject",
        "issuer",
        "serial",
        "not_before",
        "not_after",
        "days_left",
        "role",
        "credential_kind",
        "key",
        "signature_algorithm",
        "spki_sha256",
        "sans",
        "revoked",
        "sources",
    ];

    pub fn csv_row(&self) -> [String; 15] {
        let sans: Vec<&str> = self
            .sans
            .dns
            .iter()
            .chain(&self.sans.ip)
            .chain(&self.sans.email)
            .chain(&self.sans.uri)
            .map(String::as_str)
            .collect();
        let sources: Vec<String> = self
            .sources
            .iter()
            .filter(|s| s.gone_since.is_none())
            .map(SourceView::location)
            .collect();
        [
            self.fingerprint_sha256.clone(),
            self.subject.clone(),
            self.issuer.clone(),
            self.serial.clone(),
            self.not_before.clone(),
            self.not_after.clone(),
            self.days_left.to_string(),
            self.role.unwrap_or("").to_string(),
            self.credential_kind.unwrap_or("").to_string(),
            self.key.clone(),
            self.signature_algorithm.clone(),
            self.spki_sha256.clone(),
            sans.join(";"),
            self.revoked.to_string(),
            sources.join(";"),
        ]
    }
}

impl SourceView {
    pub fn new(s: &Source) -> Self {
        let (kind, path, endpoint, index) = match &s.location {
            SourceLocation::File { path, index } => ("file", Some(path.clone()), None, *index),
            SourceLocation::Endpoint { address, index } => {
                ("tls", None, Some(address.clone()), *index)
            }
        };
        SourceView {
            kind,
            path,
            endpoint,
            index,
            first_seen: rfc3339(s.first_seen),
            last_seen: rfc3339(s.last_seen),
            gone_since: s.gone_since.map(rfc3339),
        }
    }

    /// `path#index` or `tls://host:port#index`.
    pub fn location(&self) -> String {
        match (&self.path, &self.endpoint) {
            (Some(p), _) => format!("{p}#{}", self.index),
            (None, Some(e)) => format!("tls://{e}#{}", self.index),
            (None, None) => String::new(),
        }
    }
}
