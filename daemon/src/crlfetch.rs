//! Revocation checking of inventoried certificates from other CAs: fetch the CRLs named in
//! their CRL distribution points (plain HTTP, with a timeout), check each CRL's signature
//! with the issuing CA certificate from the inventory, cache it in the store until its
//! nextUpdate, and mark the certificates it lists as revoked, with the CRL's reason and the
//! URL as `revoked_by`.
//!
//! `certctl crl fetch` runs one pass ([`fetch`]); certd can run the same
//! [`crate::api::Request::CrlFetch`] on a schedule. CRLs of managed CAs are skipped: certctl
//! writes those itself. Only `http://` URLs are fetched (CRLs are signed, so TLS adds
//! nothing, and RFC 5280 CRL distribution points are HTTP or LDAP); others are reported.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration as StdDuration;

use certctl_store::{
    AuditEvent, CachedCrl, Certificate, Revocation, RevocationReason, Role, SourceLocation, Store,
    StoreError, UnixTime,
};
use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::x509::{X509Crl, X509};
use serde::{Deserialize, Serialize};

use crate::ca;

/// The largest CRL accepted (bytes).
pub const MAX_CRL_BYTES: usize = 32 << 20;

/// A pass that could not run at all (individual URLs fail in [`CrlFetchReport::urls`]).
#[derive(Debug, thiserror::Error)]
pub enum CrlFetchError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why one CRL could not be used. Sentences name the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("{url}: only http:// CRL distribution points are fetched")]
    Unsupported { url: String },
    #[error("{url}: {cause}")]
    Http { url: String, cause: String },
    #[error("{url}: not a CRL ({cause})")]
    NotACrl { url: String, cause: String },
    #[error("{url}: cannot check the signature: the issuing CA certificate ({issuer}) is not in the inventory or not readable (scan it)")]
    NoIssuer { url: String, issuer: String },
    #[error("{url}: the CRL's signature does not verify with the key of {issuer}: ignored")]
    BadSignature { url: String, issuer: String },
}

/// How to run a pass.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CrlFetchOptions {
    pub timeout_secs: u64,
    /// Fetch even when the cached CRL is still current.
    pub force: bool,
    /// Password of PKCS#12 files the CA certificates may be in.
    pub pfx_password: Option<ca::Secret>,
}

/// What happened to one URL.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UrlOutcome {
    pub url: String,
    /// `fetched`, `cached`, or `failed`.
    pub state: String,
    pub error: Option<String>,
    pub next_update: Option<UnixTime>,
    /// Certificates checked against it.
    pub checked: usize,
    /// Certificates newly marked revoked.
    pub revoked: Vec<String>,
}

/// What a pass did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CrlFetchReport {
    pub urls: Vec<UrlOutcome>,
    /// Certificates newly marked revoked (fingerprints).
    pub newly_revoked: usize,
}

/// One pass over every certificate with a CRL distribution point.
pub fn fetch(
    store: &Store,
    options: &CrlFetchOptions,
    now: UnixTime,
) -> Result<CrlFetchReport, CrlFetchError> {
    let managed: Vec<Certificate> = store
        .managed_cas()?
        .iter()
        .filter_map(|ca| store.get(&ca.fingerprint).ok().flatten())
        .collect();
    let mut by_url: BTreeMap<String, Vec<Certificate>> = BTreeMap::new();
    for cert in store.iter() {
        let cert = cert?;
        if cert.revocation.is_some() || cert.facts.not_after <= now {
            continue;
        }
        if managed.iter().any(|ca| ca::issued_by(ca, &cert)) {
            continue;
        }
        for url in &cert.facts.crl_distribution_points {
            by_url.entry(url.clone()).or_default().push(cert.clone());
        }
    }
    let mut report = CrlFetchReport::default();
    for (url, certs) in by_url {
        let mut outcome = UrlOutcome {
            url: url.clone(),
            state: "failed".into(),
            error: None,
            next_update: None,
            checked: certs.len(),
            revoked: Vec::new(),
        };
        match current_crl(store, &url, &certs, options, now) {
            Ok((crl, state)) => {
                outcome.state = state.into();
                outcome.next_update = crl.next_update;
                match apply(store, &url, &crl, &certs, now) {
                    Ok(revoked) => outcome.revoked = revoked,
                    Err(e) => {
                        outcome.state = "failed".into();
                        outcome.error = Some(e.to_string());
                    }
                }
            }
            Err(e) => outcome.error = Some(e.to_string()),
        }
        report.newly_revoked += outcome.revoked.len();
        report.urls.push(outcome);
    }
    store.flush()?;
    Ok(report)
}

/// The CRL of `url`: from the cache while it is current, else fetched and checked.
fn current_crl(
    store: &Store,
    url: &str,
    certs: &[Certificate],
    options: &CrlFetchOptions,
    now: UnixTime,
) -> Result<(CachedCrl, &'static str), UrlError> {
    let stored = |e: StoreError| UrlError::Http {
        url: url.to_string(),
        cause: e.to_string(),
    };
    if !options.force {
        if let Some(cached) = store.cached_crl(url).map_err(stored)? {
            if cached.next_update.is_some_and(|n| n > now) {
                return Ok((cached, "cached"));
            }
        }
    }
    let body = http_get(url, StdDuration::from_secs(options.timeout_secs.max(1)))?;
    let crl = X509Crl::from_der(&body)
        .or_else(|_| X509Crl::from_pem(&body))
        .map_err(|e| UrlError::NotACrl {
            url: url.to_string(),
            cause: e.to_string(),
        })?;
    let der = crl.to_der().map_err(|e| UrlError::NotACrl {
        url: url.to_string(),
        cause: e.to_string(),
    })?;
    // The issuer: a CA certificate of the inventory that issued these certificates.
    let issuer_dn = certs
        .first()
        .map(|c| c.facts.issuer.clone())
        .unwrap_or_default();
    let no_issuer = || UrlError::NoIssuer {
        url: url.to_string(),
        issuer: issuer_dn.clone(),
    };
    let sample = certs.first().ok_or_else(no_issuer)?;
    let cas = store.by_role(Role::Ca).map_err(stored)?;
    let mut issuer = None;
    for ca_cert in cas.iter().filter(|c| ca::issued_by(c, sample)) {
        if let Some(x) = certificate_x509(ca_cert, options) {
            issuer = Some((ca_cert.fingerprint(), x));
            break;
        }
    }
    let (issuer_fp, issuer_x509) = issuer.ok_or_else(no_issuer)?;
    let verified = issuer_x509
        .public_key()
        .and_then(|k| crl.verify(&k))
        .unwrap_or(false);
    let name_matches = crl
        .issuer_name()
        .try_cmp(issuer_x509.subject_name())
        .map(|o| o.is_eq())
        .unwrap_or(false);
    if !verified || !name_matches {
        return Err(UrlError::BadSignature {
            url: url.to_string(),
            issuer: issuer_dn,
        });
    }
    let cached = CachedCrl {
        url: url.to_string(),
        der,
        issuer: issuer_fp,
        this_update: unix(crl.last_update()).unwrap_or(now),
        next_update: crl.next_update().and_then(unix),
        fetched: now,
    };
    store.put_cached_crl(&cached).map_err(stored)?;
    Ok((cached, "fetched"))
}

/// Marks the certificates the CRL lists; returns their fingerprints.
fn apply(
    store: &Store,
    url: &str,
    cached: &CachedCrl,
    certs: &[Certificate],
    now: UnixTime,
) -> Result<Vec<String>, UrlError> {
    // Keyed by serial as the inventory stores it (raw INTEGER bytes), not by the number the
    // stored hex would denote: that number is wrong for "negative" serials.
    let entries = crate::x509::crl_entries(&cached.der).map_err(|e| UrlError::NotACrl {
        url: url.to_string(),
        cause: e.to_string(),
    })?;
    let mut revoked = Vec::new();
    for cert in certs {
        let Some(entry) = entries.get(&cert.facts.serial) else {
            continue;
        };
        let at = entry.revoked_at;
        let reason = entry
            .reason_code
            .map(|code| reason_from_code(i64::from(code)))
            .unwrap_or(RevocationReason::Unspecified);
        let Ok(Some(mut current)) = store.get(&cert.fingerprint()) else {
            continue;
        };
        if current.revocation.is_some() {
            continue;
        }
        current.revocation = Some(Revocation {
            revoked_at: at,
            reason,
            revoked_by: url.to_string(),
        });
        let stored = |e: StoreError| UrlError::Http {
            url: url.to_string(),
            cause: e.to_string(),
        };
        store.put(&current).map_err(stored)?;
        store
            .record_audit(&AuditEvent {
                at: now,
                fingerprint: Some(current.fingerprint()),
                actor: url.to_string(),
                action: "revoked".into(),
                detail: format!(
                    "listed in the CRL at {url} since {} (reason {})",
                    certctl_store::rfc3339(at),
                    crate::revoke::reason_name(reason)
                ),
            })
            .map_err(stored)?;
        revoked.push(current.fingerprint().to_hex());
    }
    Ok(revoked)
}

fn reason_from_code(code: i64) -> RevocationReason {
    match code {
        1 => RevocationReason::KeyCompromise,
        2 => RevocationReason::CaCompromise,
        3 => RevocationReason::AffiliationChanged,
        4 => RevocationReason::Superseded,
        5 => RevocationReason::CessationOfOperation,
        6 => RevocationReason::CertificateHold,
        8 => RevocationReason::RemoveFromCrl,
        9 => RevocationReason::PrivilegeWithdrawn,
        10 => RevocationReason::AaCompromise,
        _ => RevocationReason::Unspecified,
    }
}

/// An ASN.1 time as Unix seconds.
fn unix(t: &Asn1TimeRef) -> Option<UnixTime> {
    let epoch = Asn1Time::from_unix(0).ok()?;
    let d = epoch.diff(t).ok()?;
    Some(i64::from(d.days) * 86_400 + i64::from(d.secs))
}

/// The certificate's DER from one of its file sources, as an OpenSSL object.
fn certificate_x509(cert: &Certificate, options: &CrlFetchOptions) -> Option<X509> {
    cert.current_sources().find_map(|s| match &s.location {
        SourceLocation::File { path, index } => ca::cert_der_at(
            std::path::Path::new(path),
            *index,
            &cert.fingerprint(),
            options.pfx_password.as_ref(),
        )
        .and_then(|der| X509::from_der(&der).ok()),
        SourceLocation::Endpoint { .. } => None,
    })
}

/// A minimal HTTP/1.0 GET (CRLs are plain HTTP): bounded in time and size, follows up to
/// three redirects to other `http://` URLs.
pub fn http_get(url: &str, timeout: StdDuration) -> Result<Vec<u8>, UrlError> {
    let mut current = url.to_string();
    for _ in 0..4 {
        let err = |cause: String| UrlError::Http {
            url: url.to_string(),
            cause,
        };
        let rest = current
            .strip_prefix("http://")
            .ok_or_else(|| UrlError::Unsupported {
                url: current.clone(),
            })?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let host_port = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
            && !authority.ends_with(']')
        {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let addr = host_port
            .to_socket_addrs()
            .map_err(|e| err(format!("cannot resolve {authority}: {e}")))?
            .next()
            .ok_or_else(|| err(format!("{authority} has no address")))?;
        let mut stream = TcpStream::connect_timeout(&addr, timeout)
            .map_err(|e| err(format!("cannot connect to {authority}: {e}")))?;
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.set_write_timeout(Some(timeout)))
            .map_err(|e| err(e.to_string()))?;
        let request = format!(
            "GET {path} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: certctl\r\nAccept: application/pkix-crl\r\nConnection: close\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .map_err(|e| err(format!("cannot send the request: {e}")))?;
        let mut response = Vec::new();
        let started = std::time::Instant::now();
        let mut buf = [0u8; 16 * 1024];
        loop {
            if started.elapsed() > timeout {
                return Err(err(format!(
                    "no complete answer within {}s",
                    timeout.as_secs()
                )));
            }
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    response.extend_from_slice(&buf[..n]);
                    if response.len() > MAX_CRL_BYTES {
                        return Err(err(format!("larger than {MAX_CRL_BYTES} bytes")));
                    }
                }
                Err(e) => return Err(err(format!("reading the answer: {e}"))),
            }
        }
        let split = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| err("not an HTTP answer".into()))?;
        let head = String::from_utf8_lossy(&response[..split]).into_owned();
        let body = response[split + 4..].to_vec();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| err("not an HTTP answer".into()))?;
        match status {
            200 => return Ok(body),
            301 | 302 | 303 | 307 | 308 => {
                let location = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.trim()
                            .eq_ignore_ascii_case("location")
                            .then(|| v.trim().to_string())
                    })
                    .ok_or_else(|| err(format!("HTTP {status} without a Location")))?;
                current = location;
            }
            other => return Err(err(format!("HTTP {other}"))),
        }
    }
    Err(UrlError::Http {
        url: url.to_string(),
        cause: "too many redirects".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asn1_times_become_unix_seconds() {
        let t = Asn1Time::from_unix(1_700_000_000).unwrap();
        assert_eq!(unix(&t), Some(1_700_000_000));
    }

    #[test]
    fn only_http_is_fetched() {
        assert!(matches!(
            http_get("ldap://x/y", StdDuration::from_secs(1)),
            Err(UrlError::Unsupported { .. })
        ));
    }

    #[test]
    fn reason_codes_map() {
        assert_eq!(reason_from_code(1), RevocationReason::KeyCompromise);
        assert_eq!(reason_from_code(7), RevocationReason::Unspecified);
    }
}
