//! Revocation checking of inventoried certificates from other CAs: fetch the CRLs named in
//! their CRL distribution points, check each CRL's signature, cache it in the store until
//! its nextUpdate, and mark the certificates it lists as revoked, with the CRL's reason and
//! the URL as `revoked_by`.
//!
//! `certctl crl fetch` runs one pass ([`fetch`]); certd can run the same
//! [`crate::api::Request::CrlFetch`] on a schedule. CRLs of managed CAs are skipped: certctl
//! writes those itself.
//!
//! A pass has two halves, so that no store lock is held while servers answer:
//! [`prepare`] reads the store, downloads and checks (no writes), and
//! [`Prepared::record`] writes the results (certd takes its writer lock only for that).
//!
//! Trust rules:
//! - A CRL entry marks a certificate revoked only when the CRL verifies with the key of
//!   that certificate's actual issuer: the inventoried CA certificate (named as the
//!   certificate's issuer) whose key verifies the certificate's own signature. Every such
//!   candidate is tried, so a look-alike CA (same name, same key identifier, another key)
//!   can neither make the real CRL fail nor make a forged one apply; a certificate whose
//!   issuer is unknown (or that certctl has no readable copy of, such as one only seen at
//!   an endpoint) is never marked, and does not spoil the CRL for the others.
//! - A CRL is kept (cached) only when it is signed by the issuer of at least one
//!   certificate naming its URL.
//!
//! Network rules ([`crate::net::url`], [`http`]): the URLs come from scanned certificates, so each is
//! checked before anything is sent: `http://` only (CRLs are signed, so TLS adds nothing,
//! and RFC 5280 CRL distribution points are HTTP or LDAP), printable ASCII without control
//! characters, spaces or a user part; its host must be in `[crl] allow` when that is set.
//! Downloads run in parallel ([`http::PARALLEL`], [`http::PER_HOST`] per host), each bounded
//! by the per-URL timeout and [`MAX_CRL_BYTES`], all by the pass's deadline.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration as StdDuration, Instant};

use certctl_store::{
    AuditEvent, CachedCrl, Certificate, Fingerprint, Revocation, RevocationReason, Role,
    SourceLocation, Store, StoreError, UnixTime,
};
use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::x509::{X509Crl, X509};
use serde::{Deserialize, Serialize};

use crate::duration::DAY_SECS;
use crate::history::AuditAction;
use crate::pki::ca;

pub(crate) mod http;

use crate::config::sections::DEFAULT_PASS_DEADLINE_SECS;
use crate::net::url;
pub(crate) use crate::net::url::AllowList;

/// The largest CRL accepted (bytes).
pub(crate) const MAX_CRL_BYTES: usize = 32 << 20;

/// A pass that could not run at all (individual URLs fail in [`CrlFetchReport::urls`]).
#[derive(Debug, thiserror::Error)]
pub(crate) enum CrlFetchError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why one CRL could not be used. Sentences name the URL (escaped: URLs come from
/// certificates and may hold control characters).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum UrlError {
    #[error("{url}: only http:// CRL distribution points are fetched")]
    Unsupported { url: String },
    /// Not a URL certctl sends: control characters, spaces, non-ASCII, a user part...
    #[error("{url}: refused, not fetched: {cause}")]
    Invalid { url: String, cause: String },
    /// `[crl] allow` is set and does not name the host or its network.
    #[error("{url}: {host} is not in the [crl] allow list ({allowed}): not contacted")]
    NotAllowed {
        url: String,
        host: String,
        allowed: String,
    },
    /// The per-URL timeout or the pass's deadline passed first.
    #[error(
        "{url}: no complete answer before the deadline (the URL's timeout or the pass's deadline)"
    )]
    Deadline { url: String },
    #[error("{url}: {cause}")]
    Http { url: String, cause: String },
    #[error("{url}: not a CRL ({cause})")]
    NotACrl { url: String, cause: String },
    #[error("{url}: cannot check the signature: no CA certificate named {issuer} is in the inventory and readable (scan it)")]
    NoIssuer { url: String, issuer: String },
    #[error("{url}: the CRL's signature does not verify with the key of any inventoried CA certificate named {issuer}: ignored")]
    BadSignature { url: String, issuer: String },
    /// It verifies with an inventoried CA's key, but that CA issued none of the
    /// certificates naming the URL (a look-alike's forgery, or a misplaced CRL).
    #[error("{url}: the CRL is not signed by the issuer of the certificates naming this URL ({detail}): ignored")]
    NotTheirIssuer { url: String, detail: String },
    #[error("{url}: cannot record the result: {cause}")]
    Store { url: String, cause: String },
}

/// How to run a pass.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CrlFetchOptions {
    /// Give up on one URL after this many seconds (resolution, connection, redirects and
    /// the whole answer).
    pub timeout_secs: u64,
    /// Fetch even when the cached CRL is still current.
    pub force: bool,
    /// Password of PKCS#12 files the CA certificates may be in.
    pub pfx_password: Option<ca::Secret>,
    /// The hosts and networks CRLs may be fetched from (`[crl] allow`); `None`: any.
    /// Through certd, certd's configuration decides.
    #[serde(default)]
    pub allow: Option<AllowList>,
    /// Give up on the downloads not finished after this many seconds for the whole pass;
    /// `None`: [`DEFAULT_PASS_DEADLINE_SECS`].
    #[serde(default)]
    pub deadline_secs: Option<u64>,
}

/// What happened to one URL.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UrlOutcome {
    /// The CRL distribution point URL, as the certificates name it.
    pub url: String,
    /// `fetched`, `cached`, or `failed`.
    pub state: String,
    /// Why it failed (download, parse or signature); `None` unless `state` is `failed`.
    pub error: Option<String>,
    /// The CRL's nextUpdate (Unix seconds); `None` when it failed or the CRL has none.
    pub next_update: Option<UnixTime>,
    /// Certificates checked against it.
    pub checked: usize,
    /// Certificates newly marked revoked.
    pub revoked: Vec<String>,
    /// The CA certificate whose key signed the CRL (fingerprint), when one did.
    #[serde(default)]
    pub signer: Option<String>,
    /// Certificates the CRL lists by serial that were not marked, and why (their issuer
    /// is unknown, or did not sign this CRL).
    #[serde(default)]
    pub not_applied: Vec<String>,
}

/// What a pass did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CrlFetchReport {
    /// One outcome per distinct CRL URL the certificates name.
    pub urls: Vec<UrlOutcome>,
    /// Certificates newly marked revoked (fingerprints).
    pub newly_revoked: usize,
}

/// One pass over every certificate with a CRL distribution point.
pub(crate) fn fetch(
    store: &Store,
    options: &CrlFetchOptions,
    now: UnixTime,
) -> Result<CrlFetchReport, CrlFetchError> {
    prepare(store, options, now)?.record(store, now)
}

/// A pass's results, ready to be written ([`Prepared::record`]).
#[derive(Debug)]
pub(crate) struct Prepared {
    verdicts: Vec<Verdict>,
}

/// What to do for one URL.
#[derive(Debug)]
struct Verdict {
    outcome: UrlOutcome,
    /// The CRL to cache.
    cache: Option<CachedCrl>,
    /// Certificates to mark, with what to record.
    revoke: Vec<(Fingerprint, Revocation)>,
}

/// What the pass works on, read from the store.
struct Plan {
    /// URL → the certificates naming it (not revoked, not expired, not a managed CA's).
    by_url: BTreeMap<String, Vec<Certificate>>,
    /// The inventory's CA certificates.
    cas: Vec<Certificate>,
    /// URL → its cached CRL, while current (and not `force`).
    cached: BTreeMap<String, CachedCrl>,
}

/// The first half of a pass: reads the store, downloads the CRLs and checks them. Writes
/// nothing, so it needs no lock; the network is only used here.
pub(crate) fn prepare(
    store: &Store,
    options: &CrlFetchOptions,
    now: UnixTime,
) -> Result<Prepared, CrlFetchError> {
    let plan = plan(store, options, now)?;
    let limits = http::Limits {
        per_url: StdDuration::from_secs(options.timeout_secs.max(1)),
        pass_deadline: Instant::now()
            + StdDuration::from_secs(
                options
                    .deadline_secs
                    .unwrap_or(DEFAULT_PASS_DEADLINE_SECS)
                    .max(1),
            ),
        allow: options.allow.clone(),
    };
    let mut bodies = BTreeMap::new();
    let mut to_fetch = Vec::new();
    for url in plan.by_url.keys() {
        if plan.cached.contains_key(url) {
            continue;
        }
        match http::check(url, options.allow.as_ref()) {
            Ok(parsed) => to_fetch.push((url.clone(), parsed)),
            Err(e) => {
                bodies.insert(url.clone(), Err(e));
            }
        }
    }
    bodies.extend(http::download_all(to_fetch, &limits));
    let mut judge = Judge {
        cas: &plan.cas,
        options,
        x509s: HashMap::new(),
        issuers: HashMap::new(),
    };
    let verdicts = plan
        .by_url
        .iter()
        .map(|(url, certs)| {
            let crl = match plan.cached.get(url) {
                Some(cached) => Ok(Crl::Cached(cached)),
                None => bodies
                    .remove(url)
                    .unwrap_or_else(|| {
                        Err(UrlError::Http {
                            url: url::escaped(url),
                            cause: "not fetched".into(),
                        })
                    })
                    .map(Crl::Fetched),
            };
            judge.url(url, certs, crl, now)
        })
        .collect();
    Ok(Prepared { verdicts })
}

fn plan(store: &Store, options: &CrlFetchOptions, now: UnixTime) -> Result<Plan, CrlFetchError> {
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
            let certs = by_url.entry(url.clone()).or_default();
            if certs.last().map(Certificate::fingerprint) != Some(cert.fingerprint()) {
                certs.push(cert.clone());
            }
        }
    }
    let mut cached = BTreeMap::new();
    if !options.force {
        for url in by_url.keys() {
            // An unreadable cache entry is fetched again.
            if let Ok(Some(c)) = store.cached_crl(url) {
                if c.next_update.is_some_and(|n| n > now) {
                    cached.insert(url.clone(), c);
                }
            }
        }
    }
    Ok(Plan {
        by_url,
        cas: store.by_role(Role::Ca)?,
        cached,
    })
}

/// A URL's CRL: from the cache or as downloaded.
enum Crl<'a> {
    Cached(&'a CachedCrl),
    Fetched(Vec<u8>),
}

/// Checks CRLs against the inventory's CA certificates, reading each certificate's file
/// at most once per pass.
struct Judge<'a> {
    cas: &'a [Certificate],
    options: &'a CrlFetchOptions,
    /// Certificates as read from their files (`None`: no readable copy).
    x509s: HashMap<Fingerprint, Option<X509>>,
    /// Certificate → the index in `cas` of its actual issuer (`None`: unknown).
    issuers: HashMap<Fingerprint, Option<usize>>,
}

impl Judge<'_> {
    fn x509(&mut self, cert: &Certificate) -> Option<X509> {
        let options = self.options;
        self.x509s
            .entry(cert.fingerprint())
            .or_insert_with(|| certificate_x509(cert, options))
            .clone()
    }

    /// The CA certificate whose key verifies `cert`'s signature, among those named as its
    /// issuer: every candidate is tried.
    fn issuer_of(&mut self, cert: &Certificate) -> Option<usize> {
        if let Some(known) = self.issuers.get(&cert.fingerprint()) {
            return *known;
        }
        let found = self.x509(cert).and_then(|leaf| {
            let cas = self.cas;
            cas.iter().enumerate().find_map(|(i, ca)| {
                let candidate = ca.fingerprint() != cert.fingerprint()
                    && cert.facts.issuer.eq_ignore_ascii_case(&ca.facts.subject);
                let verifies = candidate
                    && self.x509(ca).is_some_and(|x| {
                        x.public_key()
                            .and_then(|k| leaf.verify(&k))
                            .unwrap_or(false)
                    });
                verifies.then_some(i)
            })
        });
        self.issuers.insert(cert.fingerprint(), found);
        found
    }

    /// The CA certificates named as the CRL's issuer whose key verifies it.
    fn signers(&mut self, url: &str, crl: &X509Crl) -> Result<Vec<usize>, UrlError> {
        let mut named = 0;
        let mut signers = Vec::new();
        let cas = self.cas;
        for (i, ca) in cas.iter().enumerate() {
            let Some(x) = self.x509(ca) else { continue };
            let same_name = crl
                .issuer_name()
                .try_cmp(x.subject_name())
                .is_ok_and(|o| o.is_eq());
            if !same_name {
                continue;
            }
            named += 1;
            if x.public_key().and_then(|k| crl.verify(&k)).unwrap_or(false) {
                signers.push(i);
            }
        }
        if !signers.is_empty() {
            return Ok(signers);
        }
        let issuer = name_text(crl.issuer_name());
        let url = url::escaped(url);
        Err(if named == 0 {
            UrlError::NoIssuer { url, issuer }
        } else {
            UrlError::BadSignature { url, issuer }
        })
    }

    /// What to do for one URL and the certificates naming it.
    fn url(
        &mut self,
        url: &str,
        certs: &[Certificate],
        crl: Result<Crl<'_>, UrlError>,
        now: UnixTime,
    ) -> Verdict {
        let mut verdict = Verdict {
            outcome: UrlOutcome {
                url: url.to_string(),
                state: "failed".into(),
                error: None,
                next_update: None,
                checked: certs.len(),
                revoked: Vec::new(),
                signer: None,
                not_applied: Vec::new(),
            },
            cache: None,
            revoke: Vec::new(),
        };
        match self.judge(url, certs, crl, now, &mut verdict) {
            Ok(state) => verdict.outcome.state = state.into(),
            Err(e) => {
                verdict.outcome.error = Some(e.to_string());
                verdict.revoke.clear();
                verdict.cache = None;
            }
        }
        verdict
    }

    fn judge(
        &mut self,
        url: &str,
        certs: &[Certificate],
        crl: Result<Crl<'_>, UrlError>,
        now: UnixTime,
        verdict: &mut Verdict,
    ) -> Result<&'static str, UrlError> {
        let not_a_crl = |e: &dyn std::fmt::Display| UrlError::NotACrl {
            url: url::escaped(url),
            cause: e.to_string(),
        };
        let (der, state) = match crl? {
            Crl::Cached(c) => (c.der.clone(), "cached"),
            Crl::Fetched(body) => {
                let crl = X509Crl::from_der(&body)
                    .or_else(|_| X509Crl::from_pem(&body))
                    .map_err(|e| not_a_crl(&e))?;
                (crl.to_der().map_err(|e| not_a_crl(&e))?, "fetched")
            }
        };
        let crl = X509Crl::from_der(&der).map_err(|e| not_a_crl(&e))?;
        let signers = self.signers(url, &crl)?;
        let signer_keys: HashSet<_> = signers
            .iter()
            .map(|&i| self.cas[i].facts.spki_sha256)
            .collect();
        let signed_by = |i: usize| signer_keys.contains(&self.cas[i].facts.spki_sha256);
        let entries = crate::certs::x509::crl_entries(&der).map_err(|e| not_a_crl(&e))?;
        // The CA certificate (of those sharing the signing key) that issued a certificate
        // naming this URL: the CRL is theirs.
        let mut theirs: Option<usize> = None;
        for cert in certs {
            // Keyed by serial as the inventory stores it (raw INTEGER bytes), not by the
            // number the stored hex would denote: that number is wrong for "negative"
            // serials.
            let Some(entry) = entries.get(&cert.facts.serial) else {
                continue;
            };
            let fp = cert.fingerprint().to_hex();
            match self.issuer_of(cert) {
                Some(i) if signed_by(i) => {
                    theirs = Some(i);
                    let reason = entry
                        .reason_code
                        .map(|code| reason_from_code(i64::from(code)))
                        .unwrap_or(RevocationReason::Unspecified);
                    verdict.revoke.push((
                        cert.fingerprint(),
                        Revocation {
                            revoked_at: entry.revoked_at,
                            reason,
                            revoked_by: url.to_string(),
                        },
                    ));
                }
                Some(i) => verdict.outcome.not_applied.push(format!(
                    "{fp}: listed, but this CRL is not signed by its issuer {} ({}): not applied",
                    self.cas[i].facts.subject,
                    self.cas[i].fingerprint().to_hex()
                )),
                None => verdict.outcome.not_applied.push(format!(
                    "{fp}: listed by serial, but its issuer ({}) is not in the inventory, or no \
                     readable copy of the certificate shows which CA signed it: not applied",
                    cert.facts.issuer
                )),
            }
        }
        if theirs.is_none() {
            theirs = certs.iter().find_map(|c| {
                let i = self.issuer_of(c)?;
                signed_by(i).then_some(i)
            });
        }
        let Some(issuer) = theirs else {
            let signer = &self.cas[signers[0]];
            return Err(UrlError::NotTheirIssuer {
                url: url::escaped(url),
                detail: format!(
                    "it verifies with the key of {} ({}), which issued none of the {} \
                     certificates certctl can check",
                    signer.facts.subject,
                    signer.fingerprint().to_hex(),
                    certs.len()
                ),
            });
        };
        let issuer = &self.cas[issuer];
        verdict.outcome.signer = Some(issuer.fingerprint().to_hex());
        verdict.outcome.next_update = crl.next_update().and_then(unix);
        if state == "fetched" {
            verdict.cache = Some(CachedCrl {
                url: url.to_string(),
                der,
                issuer: issuer.fingerprint(),
                this_update: unix(crl.last_update()).unwrap_or(now),
                next_update: verdict.outcome.next_update,
                fetched: now,
            });
        }
        Ok(state)
    }
}

impl Prepared {
    /// The second half of a pass: caches the CRLs and marks the listed certificates (a
    /// certificate revoked or removed meanwhile is left alone). certd holds its writer
    /// lock for this only.
    pub(crate) fn record(
        self,
        store: &Store,
        now: UnixTime,
    ) -> Result<CrlFetchReport, CrlFetchError> {
        let mut report = CrlFetchReport::default();
        for verdict in self.verdicts {
            let mut outcome = verdict.outcome;
            if let Err(e) = record_one(
                store,
                &outcome.url,
                verdict.cache,
                verdict.revoke,
                now,
                &mut outcome.revoked,
            ) {
                outcome.state = "failed".into();
                outcome.error = Some(e.to_string());
            }
            report.newly_revoked += outcome.revoked.len();
            report.urls.push(outcome);
        }
        store.flush()?;
        Ok(report)
    }
}

fn record_one(
    store: &Store,
    url: &str,
    cache: Option<CachedCrl>,
    revoke: Vec<(Fingerprint, Revocation)>,
    now: UnixTime,
    revoked: &mut Vec<String>,
) -> Result<(), UrlError> {
    let stored = |e: StoreError| UrlError::Store {
        url: url::escaped(url),
        cause: e.to_string(),
    };
    if let Some(cache) = &cache {
        store.put_cached_crl(cache).map_err(stored)?;
    }
    for (fp, revocation) in revoke {
        let Some(mut current) = store.get(&fp).map_err(stored)? else {
            continue;
        };
        if current.revocation.is_some() {
            continue;
        }
        let detail = format!(
            "listed in the CRL at {url} since {} (reason {})",
            certctl_store::rfc3339(revocation.revoked_at),
            crate::pki::crl::reason_name(revocation.reason)
        );
        current.revocation = Some(revocation);
        store.put(&current).map_err(stored)?;
        store
            .record_audit(&AuditEvent {
                at: now,
                fingerprint: Some(fp),
                actor: url.to_string(),
                action: AuditAction::Revoked.into(),
                detail,
            })
            .map_err(stored)?;
        revoked.push(fp.to_hex());
    }
    Ok(())
}

/// A name as one line (OpenSSL's one-line form), for messages.
fn name_text(name: &openssl::x509::X509NameRef) -> String {
    name.entries()
        .map(|e| {
            let key = e.object().nid().short_name().unwrap_or("?");
            let value = String::from_utf8_lossy(e.data().as_slice());
            format!("{key}={value}")
        })
        .collect::<Vec<_>>()
        .join(",")
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
    Some(i64::from(d.days) * DAY_SECS + i64::from(d.secs))
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
            http::check("ldap://x/y", None),
            Err(UrlError::Unsupported { .. })
        ));
    }

    #[test]
    fn reason_codes_map() {
        assert_eq!(reason_from_code(1), RevocationReason::KeyCompromise);
        assert_eq!(reason_from_code(7), RevocationReason::Unspecified);
    }
}
