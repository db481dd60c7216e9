//! How a certificate is shown to scripts: the JSON object and CSV row whose field names are
//! a stable contract (see `docs/cli-contract.md`).
//!
//! Also [`printable`], the one escaping every text renderer applies to text that comes
//! from certificates, scanned files or servers (tables, `show`, `status`, `report`,
//! reminders, CSV cells): a crafted certificate cannot drive the terminal (ESC/OSC/CSI
//! sequences) or forge lines (CR, LF). `--json` needs none (serde escapes control
//! characters). [`html`] adds HTML escaping on top of it.

use certctl_store::{
    rfc3339, Certificate, CertificateFacts, KeyId, Source, SourceLocation, UnixTime,
};
use serde::Serialize;

use crate::duration::{days_left, DAY_SECS};

/// Text from certificates, files or servers made safe for a terminal or a text file:
/// control characters — C0 (including CR, LF, tab and ESC), DEL and C1 (U+0080..U+009F,
/// such as the 8-bit CSI U+009B) — and the Unicode controls that reorder or break what a
/// terminal shows (bidi overrides and isolates, line and paragraph separators) are written
/// as escapes: `\n`, `\r`, `\t`, `\x1b`, `\x7f`, `\u{9b}`, `\u{202e}`. Everything else,
/// backslashes included, is kept as is, so ordinary text is unchanged.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        push_printable(&mut out, c);
    }
    std::borrow::Cow::Owned(out)
}

/// [`printable`] text escaped for HTML element content and quoted attribute values: the
/// reminder e-mails' HTML part and the dashboard's pages.
pub(crate) fn html(text: &str) -> String {
    let text = printable(text);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// [`printable`] as a [`std::fmt::Display`] wrapper, for `format!("{}", Printable(&name))`.
#[derive(Debug, Clone, Copy)]
pub struct Printable<'a>(pub &'a str);

impl std::fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&printable(self.0))
    }
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

fn push_printable(out: &mut String, c: char) {
    use std::fmt::Write as _;
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if !needs_escape(c) => out.push(c),
        c if c.is_ascii() => {
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        }
        c => {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        }
    }
}

/// Certificates within this many seconds of expiry have status `expiring`.
pub const EXPIRING_SECS: i64 = 30 * DAY_SECS;

/// The JSON form of a certificate (`list --json`, `show --json`, `inspect --json`).
#[derive(Debug, Clone, Serialize)]
pub struct CertificateView {
    /// SHA-256 of the certificate's DER, lowercase hex (64 characters): its ID everywhere.
    pub fingerprint_sha256: String,
    /// Subject DN, RFC 2253 string (`CN=gw.example.com,O=Example`).
    pub subject: String,
    /// The subject's first common name; `None` when the subject has none.
    pub subject_cn: Option<String>,
    /// Issuer DN, RFC 2253 string.
    pub issuer: String,
    /// Serial number, lowercase hex without separators or leading zeros (`-` first when negative).
    pub serial: String,
    /// Start of validity, RFC 3339 UTC.
    pub not_before: String,
    /// End of validity, RFC 3339 UTC.
    pub not_after: String,
    /// Whole days from now to `not_after`, rounded down; negative once expired (`-1` on the
    /// first day after expiry).
    pub days_left: i64,
    /// `valid`, `expiring` (within 30 days, [`EXPIRING_SECS`]), `expired`, `revoked` or
    /// `not-yet-valid`; `revoked` only for a stored certificate.
    pub status: &'static str,
    /// `None` for a file inspected without a store.
    pub role: Option<&'static str>,
    /// `permanent` or `ephemeral` (validity of 24 hours or less) for a leaf; `None` for a CA
    /// certificate.
    pub credential_kind: Option<&'static str>,
    /// The public key, e.g. `RSA 2048`, `EC P-256`, `Ed25519` (as `stats`' `by_key` counts it).
    pub key: String,
    /// Signature algorithm name (`sha256WithRSAEncryption`, `ecdsa-with-SHA256`, `ED25519`, ...).
    pub signature_algorithm: String,
    /// The basicConstraints CA flag.
    pub is_ca: bool,
    /// SHA-256 of the DER SubjectPublicKeyInfo, lowercase hex: equal for certificates sharing one
    /// key.
    pub spki_sha256: String,
    /// The subject key identifier, lowercase hex; `None` when the extension is absent.
    pub subject_key_id: Option<String>,
    /// The authority key identifier's keyIdentifier, lowercase hex; `None` when absent.
    pub authority_key_id: Option<String>,
    /// Subject alternative names by kind (`dns`, `ip`, `email`, `uri`).
    pub sans: SansView,
    /// CRL distribution point URLs, in certificate order; empty when none.
    pub crl_distribution_points: Vec<String>,
    /// OCSP responder URLs (authority information access), in certificate order; empty when none.
    pub ocsp_urls: Vec<String>,
    /// Whether a revocation is recorded in the store (always `false` for `inspect`).
    pub revoked: bool,
    /// The recorded revocation (time, reason, who recorded it); `None` when not revoked.
    pub revocation: Option<RevocationView>,
    /// When certctl first saw it, RFC 3339 UTC; `None` for a file inspected without a store.
    pub first_seen: Option<String>,
    /// When a scan or probe last saw it, RFC 3339 UTC; `None` for a file inspected without a store.
    pub last_seen: Option<String>,
    /// Where it was seen (files and TLS endpoints, including ones it is gone from), at most the
    /// store's inline cap; empty for `inspect`.
    pub sources: Vec<SourceView>,
    /// How many further sources were seen beyond those in `sources` (a CA certificate in
    /// thousands of chain files); 0 for `inspect`.
    pub more_sources: u64,
}

/// A certificate's subject alternative names by kind (`sans` of [`CertificateView`]), each
/// list in certificate order and empty when the certificate has none of that kind.
#[derive(Debug, Clone, Serialize)]
pub struct SansView {
    /// DNS names (`dns`).
    pub dns: Vec<String>,
    /// IP addresses, as text (`ip`).
    pub ip: Vec<String>,
    /// E-mail addresses, rfc822Name (`email`).
    pub email: Vec<String>,
    /// URIs (`uri`).
    pub uri: Vec<String>,
}

/// A recorded revocation (`revocation` of [`CertificateView`]).
#[derive(Debug, Clone, Serialize)]
pub struct RevocationView {
    /// When it was revoked, RFC 3339 UTC.
    pub revoked_at: String,
    /// The RFC 5280 reason, kebab-case (`key-compromise`, `superseded`, ...).
    pub reason: String,
    /// Who recorded it: a user name, or the URL of the CRL it was learned from.
    pub revoked_by: String,
}

/// One place a certificate was seen (`sources` of [`CertificateView`]).
#[derive(Debug, Clone, Serialize)]
pub struct SourceView {
    /// `file` or `tls`.
    pub kind: &'static str,
    /// The file's path, for `file`; absent from the JSON for `tls`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The endpoint's `HOST:PORT`, for `tls`; absent from the JSON for `file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// 0-based position: the certificate's place in the file, or in the served chain (0: the
    /// leaf).
    pub index: u32,
    /// When it was first seen there, RFC 3339 UTC.
    pub first_seen: String,
    /// When it was last seen there, RFC 3339 UTC.
    pub last_seen: String,
    /// When it was no longer found there (the file changed or vanished, the endpoint serves
    /// another chain), RFC 3339 UTC; `None` while it is still there.
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
            days_left: days_left(f.not_after, now),
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
    /// `status` and `subject_cn` came later and are last, so column positions stay.
    pub const CSV_HEADER: [&'static str; 17] = [
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
        "status",
        "subject_cn",
    ];

    /// The CSV cells, each through [`printable`] (a CSV file is read in terminals and
    /// spreadsheets: control characters are escaped rather than quoted).
    pub fn csv_row(&self) -> [String; 17] {
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
            self.status.to_string(),
            self.subject_cn.clone().unwrap_or_default(),
        ]
        .map(|cell| printable(&cell).into_owned())
    }
}

impl SourceView {
    /// The JSON form of a stored source.
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

// ---- `list --json` at scale -------------------------------------------------------------

/// Writes `certs` as `list --json` prints them: exactly what serde_json's pretty printer
/// makes of `Vec<CertificateView>` (built at `now`), followed by a newline.
///
/// Built for tens of thousands of certificates: no [`CertificateView`] is built (the
/// strings are borrowed, times and hashes are formatted on the stack), and chunks of the
/// list are rendered in parallel, a few at a time, so memory stays bounded by a window of
/// rendered chunks rather than the whole text.
pub fn write_json_list<W: std::io::Write + ?Sized>(
    certs: &[Certificate],
    now: UnixTime,
    out: &mut W,
) -> std::io::Result<()> {
    let mut list = JsonListWriter::new(out, now);
    list.write(certs)?;
    list.finish()
}

/// [`write_json_list`] for a list that arrives in sorted batches: the same text as one
/// call with all the batches concatenated, while only one batch is held at a time.
pub struct JsonListWriter<'w, W: std::io::Write + ?Sized> {
    out: &'w mut W,
    now: UnixTime,
    /// Nothing written yet (not even the opening bracket).
    empty: bool,
}

impl<'w, W: std::io::Write + ?Sized> JsonListWriter<'w, W> {
    /// A writer into `out` with days left and statuses computed at `now`; writes nothing yet.
    pub fn new(out: &'w mut W, now: UnixTime) -> Self {
        JsonListWriter {
            out,
            now,
            empty: true,
        }
    }

    /// Appends `certs` to the list.
    pub fn write(&mut self, certs: &[Certificate]) -> std::io::Result<()> {
        use rayon::prelude::*;
        /// Certificates per rendered chunk, and chunks rendered at once.
        const CHUNK: usize = 256;
        const WINDOW: usize = 16;
        let now = self.now;
        let chunks: Vec<&[Certificate]> = certs.chunks(CHUNK).collect();
        for window in chunks.chunks(WINDOW) {
            let rendered: Vec<serde_json::Result<Vec<u8>>> = window
                .par_iter()
                .map(|chunk| {
                    let items: Vec<CertificateJson<'_>> =
                        chunk.iter().map(|c| CertificateJson::new(c, now)).collect();
                    let mut buf = Vec::with_capacity(chunk.len() * 1600);
                    serde_json::to_writer_pretty(&mut buf, &items)?;
                    Ok(buf)
                })
                .collect();
            for buf in rendered {
                let buf = buf.map_err(std::io::Error::other)?;
                // A non-empty pretty array is `[\n` + its items at indent 1 + `\n]`: the
                // items are exactly what they are inside the whole list.
                let items = buf
                    .get(2..buf.len().saturating_sub(2))
                    .ok_or_else(|| std::io::Error::other("unexpected JSON from serde_json"))?;
                self.out
                    .write_all(if self.empty { b"[\n" } else { b",\n" })?;
                self.out.write_all(items)?;
                self.empty = false;
            }
        }
        // What is written goes out now (a stream's frame, a terminal's screen), not when
        // the next batch has been read.
        self.out.flush()
    }

    /// Closes the list (`[]` when nothing was written).
    pub fn finish(self) -> std::io::Result<()> {
        self.out
            .write_all(if self.empty { b"[]\n" } else { b"\n]\n" })
    }
}

/// [`CertificateView`] with borrowed fields: same field names, same order, same JSON.
#[derive(Serialize)]
struct CertificateJson<'a> {
    fingerprint_sha256: HexJson,
    subject: &'a str,
    subject_cn: Option<&'a str>,
    issuer: &'a str,
    serial: &'a str,
    not_before: TimeJson,
    not_after: TimeJson,
    days_left: i64,
    status: &'static str,
    role: Option<&'static str>,
    credential_kind: Option<&'static str>,
    key: DisplayJson<'a, certctl_store::KeyAlgorithm>,
    signature_algorithm: &'a str,
    is_ca: bool,
    spki_sha256: HexJson,
    subject_key_id: Option<DisplayJson<'a, KeyId>>,
    authority_key_id: Option<DisplayJson<'a, KeyId>>,
    sans: SansJson<'a>,
    crl_distribution_points: &'a [String],
    ocsp_urls: &'a [String],
    revoked: bool,
    revocation: Option<RevocationView>,
    first_seen: Option<TimeJson>,
    last_seen: Option<TimeJson>,
    sources: SourcesJson<'a>,
    more_sources: u64,
}

#[derive(Serialize)]
struct SansJson<'a> {
    dns: &'a [String],
    ip: &'a [String],
    email: &'a [String],
    uri: &'a [String],
}

#[derive(Serialize)]
struct SourceJson<'a> {
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint: Option<&'a str>,
    index: u32,
    first_seen: TimeJson,
    last_seen: TimeJson,
    gone_since: Option<TimeJson>,
}

struct SourcesJson<'a>(&'a [Source]);

impl Serialize for SourcesJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|src| {
            let (kind, path, endpoint, index) = match &src.location {
                SourceLocation::File { path, index } => ("file", Some(path.as_str()), None, *index),
                SourceLocation::Endpoint { address, index } => {
                    ("tls", None, Some(address.as_str()), *index)
                }
            };
            SourceJson {
                kind,
                path,
                endpoint,
                index,
                first_seen: TimeJson(src.first_seen),
                last_seen: TimeJson(src.last_seen),
                gone_since: src.gone_since.map(TimeJson),
            }
        }))
    }
}

impl<'a> CertificateJson<'a> {
    fn new(cert: &'a Certificate, now: UnixTime) -> Self {
        let f = &cert.facts;
        CertificateJson {
            fingerprint_sha256: HexJson(f.fingerprint.0),
            subject: &f.subject,
            subject_cn: f.subject_cn.as_deref(),
            issuer: &f.issuer,
            serial: &f.serial,
            not_before: TimeJson(f.not_before),
            not_after: TimeJson(f.not_after),
            days_left: days_left(f.not_after, now),
            status: cert.status(now, EXPIRING_SECS).as_str(),
            role: Some(cert.role.as_str()),
            credential_kind: f.credential_kind().map(|k| k.as_str()),
            key: DisplayJson(&f.key),
            signature_algorithm: &f.signature_algorithm,
            is_ca: f.is_ca,
            spki_sha256: HexJson(f.spki_sha256.0),
            subject_key_id: f.subject_key_id.as_ref().map(DisplayJson),
            authority_key_id: f.authority_key_id.as_ref().map(DisplayJson),
            sans: SansJson {
                dns: &f.sans.dns,
                ip: &f.sans.ip,
                email: &f.sans.email,
                uri: &f.sans.uri,
            },
            crl_distribution_points: &f.crl_distribution_points,
            ocsp_urls: &f.ocsp_urls,
            revoked: cert.revocation.is_some(),
            revocation: cert.revocation.as_ref().map(|r| RevocationView {
                revoked_at: rfc3339(r.revoked_at),
                reason: serde_json::to_value(r.reason)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                revoked_by: r.revoked_by.clone(),
            }),
            first_seen: Some(TimeJson(cert.first_seen)),
            last_seen: Some(TimeJson(cert.last_seen)),
            sources: SourcesJson(&cert.sources),
            more_sources: cert.more_sources,
        }
    }
}

/// A SHA-256 as 64 lowercase hex characters, formatted on the stack.
struct HexJson([u8; 32]);

impl Serialize for HexJson {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 64];
        // Cannot fail: the buffer is exactly twice the input.
        hex::encode_to_slice(self.0, &mut buf).map_err(serde::ser::Error::custom)?;
        s.serialize_str(std::str::from_utf8(&buf).map_err(serde::ser::Error::custom)?)
    }
}

/// A value serialized through its `Display` (no intermediate `String`).
struct DisplayJson<'a, T>(&'a T);

impl<T: std::fmt::Display> Serialize for DisplayJson<'_, T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self.0)
    }
}

/// A Unix time as [`rfc3339`] formats it, without allocating.
struct TimeJson(UnixTime);

impl Serialize for TimeJson {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match fast_rfc3339(self.0) {
            Some(buf) => {
                s.serialize_str(std::str::from_utf8(&buf).map_err(serde::ser::Error::custom)?)
            }
            None => s.serialize_str(&rfc3339(self.0)),
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` for years 0 to 9999 (what [`rfc3339`] gives there); `None`
/// outside, where the caller falls back to [`rfc3339`].
fn fast_rfc3339(t: UnixTime) -> Option<[u8; 20]> {
    let days = t.div_euclid(DAY_SECS);
    let secs = t.rem_euclid(DAY_SECS);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    if !(0..=9999).contains(&year) {
        return None;
    }
    let mut b = *b"0000-00-00T00:00:00Z";
    let mut put = |at: usize, value: i64, width: usize| {
        let mut v = value;
        for k in (0..width).rev() {
            b[at + k] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, year, 4);
    put(5, month, 2);
    put(8, day, 2);
    put(11, secs / 3600, 2);
    put(14, secs / 60 % 60, 2);
    put(17, secs % 60, 2);
    Some(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use certctl_store::{
        KeyAlgorithm, Revocation, RevocationReason, Role, Sha256, SubjectAltNames,
    };

    fn cert(i: u8, now: UnixTime) -> Certificate {
        let facts = CertificateFacts {
            fingerprint: Sha256([i; 32]),
            subject: format!("CN=host-{i} \"quoted\" \\ é\u{1},O=Contoso"),
            subject_cn: i.is_multiple_of(2).then(|| format!("host-{i}")),
            issuer: "CN=Issuing CA,O=Contoso".into(),
            serial: format!("{i:02x}"),
            not_before: now - 400 * 86_400 + i64::from(i) * 7_777,
            not_after: now - 20 * 86_400 + i64::from(i) * 5 * 86_400 + 3_601,
            sans: SubjectAltNames {
                dns: vec![format!("host-{i}.contoso.example")],
                ip: if i.is_multiple_of(3) {
                    vec!["192.0.2.1".into()]
                } else {
                    vec![]
                },
                email: vec![],
                uri: if i.is_multiple_of(4) {
                    vec!["spiffe://x/y".into()]
                } else {
                    vec![]
                },
            },
            key: if i.is_multiple_of(2) {
                KeyAlgorithm::Ec {
                    curve: "P-256".into(),
                }
            } else {
                KeyAlgorithm::Rsa { bits: 2048 }
            },
            signature_algorithm: "ecdsa-with-SHA256".into(),
            is_ca: i == 3,
            subject_key_id: (i % 2 == 1).then(|| KeyId(vec![0xab; 20])),
            authority_key_id: None,
            spki_sha256: Sha256([i.wrapping_mul(7); 32]),
            crl_distribution_points: if i == 1 {
                vec!["http://crl/x.crl".into()]
            } else {
                vec![]
            },
            ocsp_urls: vec![],
        };
        let mut c = Certificate::new(
            facts,
            if i.is_multiple_of(2) {
                Role::Agent
            } else {
                Role::Gateway
            },
            now - 86_400,
        );
        c.sources.push(Source {
            location: SourceLocation::File {
                path: format!("/srv/certs/{i}.pem"),
                index: u32::from(i % 2),
            },
            first_seen: now - 86_400,
            last_seen: now,
            gone_since: (i == 2).then_some(now - 5),
        });
        if i % 3 == 1 {
            c.sources.push(Source {
                location: SourceLocation::Endpoint {
                    address: "gw.contoso.example:443".into(),
                    index: 0,
                },
                first_seen: now - 50,
                last_seen: now - 40,
                gone_since: None,
            });
            c.more_sources = 3;
        }
        if i == 5 {
            c.revocation = Some(Revocation {
                revoked_at: now - 100,
                reason: RevocationReason::KeyCompromise,
                revoked_by: "admin".into(),
            });
        }
        c
    }

    /// The fast writer gives byte for byte what pretty-printing the views gives.
    #[test]
    fn write_json_list_matches_the_views() {
        let now = 1_795_000_000;
        for n in [0usize, 1, 2, 7, 255, 256, 257, 600, 5000] {
            let certs: Vec<Certificate> = (0..n).map(|i| cert((i % 251) as u8, now)).collect();
            let views: Vec<CertificateView> =
                certs.iter().map(|c| CertificateView::new(c, now)).collect();
            let mut want = serde_json::to_vec_pretty(&views).unwrap();
            want.push(b'\n');
            let mut got = Vec::new();
            write_json_list(&certs, now, &mut got).unwrap();
            assert!(got == want, "{n} certificates: outputs differ");
            // The same list in uneven batches (some empty) gives the same text.
            let mut got = Vec::new();
            let mut list = JsonListWriter::new(&mut got, now);
            let mut rest = &certs[..];
            for size in [0usize, 1, 300, 0, 2, 1000].into_iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (batch, tail) = rest.split_at(size.min(rest.len()));
                list.write(batch).unwrap();
                rest = tail;
            }
            list.finish().unwrap();
            assert!(got == want, "{n} certificates in batches: outputs differ");
        }
    }

    #[test]
    fn printable_escapes_what_a_terminal_acts_on() {
        assert!(matches!(
            printable("CN=www.example, O=Contoso \\, Ltd é 日本"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(
            printable("a\x1b]0;pwned\x07\x1b[31m\r\n\t\u{9b}2J\x7f\u{85}\u{202e}z\0"),
            "a\\x1b]0;pwned\\x07\\x1b[31m\\r\\n\\t\\u{9b}2J\\x7f\\u{85}\\u{202e}z\\x00"
        );
        assert_eq!(Printable("x\ny").to_string(), "x\\ny");
        let mut c = cert(1, 1_000);
        c.facts.subject = "CN=a\x1b[2J\r\nb".into();
        let row = CertificateView::new(&c, 1_000).csv_row();
        assert_eq!(row[1], "CN=a\\x1b[2J\\r\\nb");
    }

    #[test]
    fn fast_times_match_rfc3339() {
        let mut t: i64 = -62_167_219_200 - 86_400 * 3; // just before year 0
        while t < 253_402_300_800 + 86_400 * 3 {
            let want = rfc3339(t);
            match fast_rfc3339(t) {
                Some(b) => assert_eq!(std::str::from_utf8(&b).unwrap(), want, "{t}"),
                None => assert!(want.starts_with('@'), "{t}: {want}"),
            }
            t += 86_400 * 13 + 3_599;
        }
        for t in [
            0,
            1,
            59,
            86_399,
            86_400,
            951_782_400,
            1_795_000_000,
            -1,
            -86_401,
        ] {
            assert_eq!(
                fast_rfc3339(t).map(|b| String::from_utf8(b.to_vec()).unwrap()),
                Some(rfc3339(t)),
                "{t}"
            );
        }
    }
}

/// JSON keys whose integer values are Unix times (seconds) in the JSON that commands print
/// from their reports (`status`, `probe`, `check`, `remind`, `history`, reports, ...).
/// Those fields stay as they are (a contract); [`with_rfc3339_times`] adds an RFC 3339
/// sibling to each (see [`rfc3339_sibling`]).
pub(crate) const UNIX_TIME_KEYS: &[&str] = &[
    "at",
    "created",
    "crl_published",
    "due_at",
    "expires",
    "fetched",
    "first_failure",
    "first_seen",
    "generated_at",
    "imported_at",
    "issued",
    "last_attempt",
    "last_probe",
    "last_run",
    "last_seen",
    "last_success",
    "newer_not_after",
    "next_attempt",
    "next_run",
    "next_update",
    "not_after",
    "not_before",
    "revoked_at",
    "sent_at",
    "served_not_after",
    "since",
    "smtp_last_error_at",
    "started",
    "this_update",
    "tracked_at",
    "until",
    "updated",
];

/// The name of the RFC 3339 sibling of a Unix-time field: `last_probe` → `last_probe_at`;
/// a name that already ends in `at` gets `_rfc3339` (`at` → `at_rfc3339`,
/// `smtp_last_error_at` → `smtp_last_error_at_rfc3339`).
pub(crate) fn rfc3339_sibling(key: &str) -> String {
    if key == "at" || key.ends_with("_at") {
        format!("{key}_rfc3339")
    } else {
        format!("{key}_at")
    }
}

/// `value` as JSON where every field named in `UNIX_TIME_KEYS` holding an integer gets
/// an RFC 3339 sibling (`rfc3339_sibling`), at any depth; nothing else changes (a
/// sibling name already present is left alone).
pub fn with_rfc3339_times<T: Serialize + ?Sized>(
    value: &T,
) -> serde_json::Result<serde_json::Value> {
    let mut v = serde_json::to_value(value)?;
    add_rfc3339_times(&mut v);
    Ok(v)
}

fn add_rfc3339_times(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            let mut siblings = Vec::new();
            for (k, x) in map.iter_mut() {
                add_rfc3339_times(x);
                if let (true, Some(t)) = (UNIX_TIME_KEYS.contains(&k.as_str()), x.as_i64()) {
                    siblings.push((rfc3339_sibling(k), rfc3339(t)));
                }
            }
            for (k, s) in siblings {
                map.entry(k).or_insert(serde_json::Value::String(s));
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(add_rfc3339_times),
        _ => {}
    }
}

#[cfg(test)]
mod rfc3339_times_tests {
    use super::*;

    #[test]
    fn unix_times_get_rfc3339_siblings_and_nothing_else_changes() {
        let v = with_rfc3339_times(&serde_json::json!({
            "endpoints": [{"last_probe": 0, "last_success": null, "address": "a:1"}],
            "smtp_last_error_at": 86_400,
            "at": 1,
            "not_after": "2026-01-01T00:00:00Z",
            "certificates": 5,
        }))
        .unwrap();
        assert_eq!(v["endpoints"][0]["last_probe"], 0);
        assert_eq!(v["endpoints"][0]["last_probe_at"], "1970-01-01T00:00:00Z");
        assert!(v["endpoints"][0].get("last_success_at").is_none());
        assert_eq!(v["smtp_last_error_at_rfc3339"], "1970-01-02T00:00:00Z");
        assert_eq!(v["at_rfc3339"], "1970-01-01T00:00:01Z");
        assert!(v.get("not_after_at").is_none());
        assert!(v.get("certificates_at").is_none());
    }
}
