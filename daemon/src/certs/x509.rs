//! Reading one DER-encoded X.509 certificate into [`CertificateFacts`].
//!
//! This module owns the translation from the DER encoding to certctl's domain model:
//! fingerprints (SHA-256 of the whole DER and of the SubjectPublicKeyInfo), RFC 2253
//! distinguished names, the serial number as hex, validity in Unix seconds, subject
//! alternative names, the public key algorithm and size, the signature algorithm name and the
//! extensions certctl cares about (basicConstraints, key identifiers, CRL distribution points,
//! OCSP responders).
//!
//! Parsing is done once per certificate with `x509-parser` (borrowing from the input, no copy
//! of the DER) and each digest is computed once. Errors are phrased for administrators
//! ([`X509Error`]): a truncated file says how many bytes were expected and how many there are.
//!
//! File formats (PEM, PKCS#12, ...) are not handled here; see [`crate::certs::formats`].

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use certctl_store::model::{CertificateFacts, KeyAlgorithm, KeyId, Sha256, SubjectAltNames};
use sha2::Digest as _;
use x509_parser::asn1_rs::{Any, Class, Tag, ToDer as _};
use x509_parser::certificate::X509Certificate;
use x509_parser::error::X509Error as ParseError;
use x509_parser::extensions::{DistributionPointName, GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer as _;
use x509_parser::x509::{SubjectPublicKeyInfo, X509Name};

/// Why bytes could not be read as an X.509 certificate. Messages are complete sentences for an
/// administrator; they never include the file name (the caller adds it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum X509Error {
    /// There were no bytes at all.
    #[error("empty input: there are no bytes to read a certificate from")]
    Empty,
    /// The data does not start with a DER SEQUENCE, so it cannot be a DER certificate.
    #[error(
        "not an X.509 certificate: DER certificates start with a SEQUENCE (byte 0x30) but this data starts with byte 0x{first_byte:02x}{}",
        looks_like_hint(*first_byte)
    )]
    NotASequence {
        /// The first byte of the input.
        first_byte: u8,
    },
    /// The outer DER length field is not valid DER (indefinite or absurdly long length).
    #[error("not an X.509 certificate: the DER length header is invalid ({reason})")]
    BadLength {
        /// What is wrong with the length field.
        reason: &'static str,
    },
    /// The input ends before the end of the certificate announced by its DER header.
    #[error("truncated DER: the certificate needs {needed} bytes but the input has {available}")]
    Truncated {
        /// Bytes the DER header says the certificate occupies (header included).
        needed: usize,
        /// Bytes actually available.
        available: usize,
    },
    /// The certificate is followed by bytes that are not part of it.
    #[error(
        "{extra} unexpected bytes follow the certificate (the certificate itself is {cert_len} bytes)"
    )]
    TrailingData {
        /// Length of the certificate.
        cert_len: usize,
        /// Number of bytes after it.
        extra: usize,
    },
    /// The outer structure is complete but its content is not a valid X.509 certificate.
    #[error("not an X.509 certificate: {reason}")]
    Malformed {
        /// What the parser found wrong, in words.
        reason: String,
    },
}

fn looks_like_hint(first_byte: u8) -> &'static str {
    match first_byte {
        b'-' => " (this looks like PEM text, not DER)",
        b'M' => " (this looks like base64 text, not DER)",
        0xef | 0xfe | 0xff => " (this looks like a text file with a byte order mark)",
        _ => "",
    }
}

/// Parses exactly one DER certificate and extracts its facts.
///
/// The input must be the certificate and nothing else: trailing bytes are an error
/// ([`X509Error::TrailingData`]). Use [`facts_from_der_prefix`] to read a certificate that is
/// followed by other data.
pub(crate) fn facts_from_der(der: &[u8]) -> Result<CertificateFacts, X509Error> {
    let (facts, len) = facts_from_der_prefix(der)?;
    if len != der.len() {
        return Err(X509Error::TrailingData {
            cert_len: len,
            extra: der.len() - len,
        });
    }
    Ok(facts)
}

/// Parses the DER certificate at the start of `der`, returning its facts and its length in
/// bytes. Bytes after the certificate are ignored (for example the trust settings OpenSSL
/// appends in a `TRUSTED CERTIFICATE` PEM block). The fingerprint covers the certificate only.
pub(crate) fn facts_from_der_prefix(der: &[u8]) -> Result<(CertificateFacts, usize), X509Error> {
    let len = der_outer_length(der)?;
    let cert_der = &der[..len];
    // A certificate's first field is the TBSCertificate SEQUENCE; say so plainly for the
    // common case of another DER object (key, PKCS#12, PKCS#7) given as a certificate.
    let header_len = match der.get(1) {
        Some(&l) if l >= 0x80 => 2 + usize::from(l & 0x7f),
        _ => 2,
    };
    match cert_der.get(header_len) {
        Some(0x30) => {}
        Some(&tag) => {
            return Err(X509Error::Malformed {
                reason: format!(
                    "the DER SEQUENCE starts with tag 0x{tag:02x} where a certificate has its body (TBSCertificate SEQUENCE); it is probably another DER object such as a key, a PKCS#12 or a PKCS#7 file"
                ),
            })
        }
        None => {
            return Err(X509Error::Malformed {
                reason: "the DER SEQUENCE is empty".to_owned(),
            })
        }
    }
    let cert = match X509Certificate::from_der(cert_der) {
        Ok((_, cert)) => cert,
        Err(e @ x509_parser::nom::Err::Error(ParseError::InvalidDate))
        | Err(e @ x509_parser::nom::Err::Failure(ParseError::InvalidDate)) => {
            // Dates OpenSSL accepts (a time zone offset, no `Z`): read them leniently, with a
            // note ([`take_lax_date_notes`]); the fingerprint stays that of the bytes given.
            let Some((normalized, note)) = lax::normalize_validity(cert_der) else {
                return Err(malformed(e));
            };
            let cert = match X509Certificate::from_der(&normalized) {
                Ok((_, cert)) => cert,
                Err(_) => return Err(malformed(e)),
            };
            lax::note(note);
            return Ok((facts_from_parsed(cert_der, &cert), len));
        }
        Err(e) => return Err(malformed(e)),
    };
    Ok((facts_from_parsed(cert_der, &cert), len))
}

/// The notes left by certificates whose validity dates were read leniently on this thread
/// since the last call (`validity dates read leniently: ...`), emptied. Callers that read a
/// file take them after parsing it and report them as warnings naming the file.
pub fn take_lax_date_notes() -> Vec<String> {
    lax::take()
}

/// Validity times that are not DER but that OpenSSL accepts: GeneralizedTime or UTCTime
/// with a time zone offset (`+0100`) instead of `Z`, without seconds, or without any zone
/// (read as UTC). The validity is rewritten as DER GeneralizedTime (same instants) so the
/// rest of the certificate can be read by the strict parser.
mod lax {
    use std::cell::RefCell;

    thread_local! {
        static NOTES: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    }

    /// At most this many notes wait on a thread (a reader that never takes them, such as
    /// a probe, cannot grow them without bound).
    const MAX_NOTES: usize = 64;

    pub(super) fn note(text: String) {
        NOTES.with(|n| {
            let mut n = n.borrow_mut();
            if n.len() < MAX_NOTES {
                n.push(text);
            }
        });
    }

    pub(super) fn take() -> Vec<String> {
        NOTES.with(|n| std::mem::take(&mut *n.borrow_mut()))
    }

    /// (tag, content start, end) of the TLV at `i`.
    fn tlv(b: &[u8], i: usize) -> Option<(u8, usize, usize)> {
        let tag = *b.get(i)?;
        let l0 = *b.get(i + 1)?;
        let (start, len) = if l0 < 0x80 {
            (i + 2, usize::from(l0))
        } else {
            let n = usize::from(l0 & 0x7f);
            if n == 0 || n > 4 {
                return None;
            }
            let bytes = b.get(i + 2..i + 2 + n)?;
            (
                i + 2 + n,
                bytes.iter().fold(0usize, |a, &x| (a << 8) | usize::from(x)),
            )
        };
        let end = start.checked_add(len)?;
        (end <= b.len()).then_some((tag, start, end))
    }

    fn encode(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = content.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes: Vec<u8> = len
                .to_be_bytes()
                .into_iter()
                .skip_while(|&x| x == 0)
                .collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend(bytes);
        }
        out.extend_from_slice(content);
        out
    }

    /// Unix seconds of a lax UTCTime (0x17) or GeneralizedTime (0x18), and whether it had
    /// no zone at all.
    fn parse_time(tag: u8, text: &str) -> Option<(i64, bool)> {
        let digits = |s: &str| s.bytes().all(|c| c.is_ascii_digit());
        let (year, rest) = match tag {
            0x17 => {
                let yy: i32 = text.get(..2).filter(|s| digits(s))?.parse().ok()?;
                (if yy < 50 { 2000 + yy } else { 1900 + yy }, text.get(2..)?)
            }
            0x18 => (
                text.get(..4).filter(|s| digits(s))?.parse().ok()?,
                text.get(4..)?,
            ),
            _ => return None,
        };
        let two = |s: &str, at: usize| -> Option<u8> {
            s.get(at..at + 2).filter(|x| digits(x))?.parse().ok()
        };
        let (month, day, hour, minute) =
            (two(rest, 0)?, two(rest, 2)?, two(rest, 4)?, two(rest, 6)?);
        let mut tail = rest.get(8..)?;
        let second = match two(tail, 0) {
            Some(s) => {
                tail = tail.get(2..)?;
                s
            }
            None => 0,
        };
        // Fractional seconds (GeneralizedTime): dropped.
        if let Some(frac) = tail.strip_prefix('.') {
            let n = frac.bytes().take_while(u8::is_ascii_digit).count();
            tail = frac.get(n..)?;
        }
        let (offset, no_zone) = match tail {
            "" => (0i64, true),
            "Z" => (0, false),
            z if (z.starts_with('+') || z.starts_with('-')) && z.len() == 5 && digits(&z[1..]) => {
                let h: i64 = z[1..3].parse().ok()?;
                let m: i64 = z[3..5].parse().ok()?;
                if h > 23 || m > 59 {
                    return None;
                }
                let secs = h * 3600 + m * 60;
                (if z.starts_with('-') { -secs } else { secs }, false)
            }
            _ => return None,
        };
        let month = time::Month::try_from(month).ok()?;
        let date = time::Date::from_calendar_date(year, month, day).ok()?;
        let t = date.with_hms(hour, minute, second).ok()?.assume_utc();
        Some((t.unix_timestamp() - offset, no_zone))
    }

    /// The certificate with its validity rewritten as DER GeneralizedTime, and a note that
    /// says what was read; `None` when the times cannot be read even leniently.
    pub(super) fn normalize_validity(der: &[u8]) -> Option<(Vec<u8>, String)> {
        let (_, cert_start, cert_end) = tlv(der, 0)?;
        let (_, tbs_start, tbs_end) = tlv(der, cert_start)?;
        let mut fields = Vec::new();
        let mut i = tbs_start;
        while i < tbs_end {
            let (tag, _, end) = tlv(der, i)?;
            fields.push((tag, i, end));
            i = end;
        }
        let validity = if fields.first()?.0 == 0xa0 { 4 } else { 3 };
        let (_, v_at, _) = *fields.get(validity)?;
        let (_, v_start, v_end) = tlv(der, v_at)?;
        let mut times = Vec::new();
        let mut originals = Vec::new();
        let mut no_zone = false;
        let mut j = v_start;
        while j < v_end {
            let (tag, s, e) = tlv(der, j)?;
            let text = std::str::from_utf8(&der[s..e]).ok()?;
            let (t, nz) = parse_time(tag, text)?;
            no_zone |= nz;
            times.push(t);
            originals.push(text.to_string());
            j = e;
        }
        if times.len() != 2 {
            return None;
        }
        let mut content = Vec::new();
        for t in &times {
            let dt = time::OffsetDateTime::from_unix_timestamp(*t).ok()?;
            let text = format!(
                "{:04}{:02}{:02}{:02}{:02}{:02}Z",
                dt.year(),
                u8::from(dt.month()),
                dt.day(),
                dt.hour(),
                dt.minute(),
                dt.second()
            );
            content.extend(encode(0x18, text.as_bytes()));
        }
        let mut tbs = Vec::new();
        for (k, (_, start, end)) in fields.iter().enumerate() {
            if k == validity {
                tbs.extend(encode(0x30, &content));
            } else {
                tbs.extend_from_slice(&der[*start..*end]);
            }
        }
        let mut body = encode(0x30, &tbs);
        body.extend_from_slice(&der[tbs_end..cert_end]);
        let note = format!(
            "validity dates are not DER ({} / {}){}: read as {} / {}",
            originals[0],
            originals[1],
            if no_zone {
                ", no time zone: taken as UTC"
            } else {
                ""
            },
            certctl_store::rfc3339(times[0]),
            certctl_store::rfc3339(times[1])
        );
        Some((encode(0x30, &body), note))
    }
}

/// Checks the outer `SEQUENCE` header and returns the total length (header + content) of the
/// certificate it announces.
pub(crate) fn der_outer_length(der: &[u8]) -> Result<usize, X509Error> {
    let Some(&first) = der.first() else {
        return Err(X509Error::Empty);
    };
    if first != 0x30 {
        return Err(X509Error::NotASequence { first_byte: first });
    }
    let Some(&len0) = der.get(1) else {
        return Err(X509Error::Truncated {
            needed: 2,
            available: der.len(),
        });
    };
    let (header_len, content_len) = if len0 < 0x80 {
        (2usize, usize::from(len0))
    } else if len0 == 0x80 {
        return Err(X509Error::BadLength {
            reason: "indefinite length, which DER does not allow",
        });
    } else {
        let n = usize::from(len0 & 0x7f);
        if n > 4 {
            return Err(X509Error::BadLength {
                reason: "the length field is longer than 4 bytes",
            });
        }
        let Some(bytes) = der.get(2..2 + n) else {
            return Err(X509Error::Truncated {
                needed: 2 + n,
                available: der.len(),
            });
        };
        let content_len = bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (2 + n, content_len)
    };
    let needed = header_len.saturating_add(content_len);
    if der.len() < needed {
        return Err(X509Error::Truncated {
            needed,
            available: der.len(),
        });
    }
    Ok(needed)
}

/// Turns an `x509-parser` error into a sentence.
fn malformed(e: x509_parser::nom::Err<ParseError>) -> X509Error {
    use x509_parser::nom::Err;
    let reason = match e {
        Err::Incomplete(_) => {
            "a field inside the certificate runs past its end (the DER is inconsistent)".to_owned()
        }
        Err::Error(e) | Err::Failure(e) => match e {
            ParseError::InvalidVersion => "the version field is invalid".to_owned(),
            ParseError::InvalidSerial => "the serial number is invalid".to_owned(),
            ParseError::InvalidAlgorithmIdentifier => {
                "an algorithm identifier is invalid".to_owned()
            }
            ParseError::InvalidX509Name => "the subject or issuer name is invalid".to_owned(),
            ParseError::InvalidDate => "the validity dates are invalid".to_owned(),
            ParseError::InvalidSPKI => {
                "the public key (SubjectPublicKeyInfo) is invalid".to_owned()
            }
            ParseError::InvalidSubjectUID | ParseError::InvalidIssuerUID => {
                "a unique identifier field is invalid".to_owned()
            }
            ParseError::InvalidExtensions => "the extensions are invalid".to_owned(),
            ParseError::DuplicateExtensions => "an extension appears twice".to_owned(),
            ParseError::InvalidSignatureValue => "the signature value is invalid".to_owned(),
            ParseError::InvalidTbsCertificate => {
                "the certificate body (TBSCertificate) is invalid".to_owned()
            }
            other => format!("its DER structure is not that of a certificate ({other})"),
        },
    };
    X509Error::Malformed { reason }
}

fn sha256(bytes: &[u8]) -> Sha256 {
    Sha256(sha2::Sha256::digest(bytes).into())
}

/// Builds the facts from an already parsed certificate; `der` is exactly its encoding.
fn facts_from_parsed(der: &[u8], cert: &X509Certificate<'_>) -> CertificateFacts {
    let tbs = &cert.tbs_certificate;

    let mut sans = SubjectAltNames::default();
    let mut is_ca = false;
    let mut subject_key_id = None;
    let mut authority_key_id = None;
    let mut crl_distribution_points = Vec::new();
    let mut ocsp_urls = Vec::new();
    for ext in tbs.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    add_san(&mut sans, name);
                }
            }
            ParsedExtension::BasicConstraints(bc) => is_ca = bc.ca,
            ParsedExtension::SubjectKeyIdentifier(kid) => {
                subject_key_id = Some(KeyId(kid.0.to_vec()));
            }
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                if let Some(kid) = &aki.key_identifier {
                    authority_key_id = Some(KeyId(kid.0.to_vec()));
                }
            }
            ParsedExtension::CRLDistributionPoints(points) => {
                for point in &points.points {
                    if let Some(DistributionPointName::FullName(names)) = &point.distribution_point
                    {
                        for name in names {
                            if let GeneralName::URI(uri) = name {
                                crl_distribution_points.push((*uri).to_owned());
                            }
                        }
                    }
                }
            }
            ParsedExtension::AuthorityInfoAccess(aia) => {
                for desc in &aia.accessdescs {
                    if desc.access_method.as_bytes() == oids::AD_OCSP {
                        if let GeneralName::URI(uri) = desc.access_location {
                            ocsp_urls.push(uri.to_owned());
                        }
                    }
                }
            }
            _ => {}
        }
    }

    CertificateFacts {
        fingerprint: sha256(der),
        subject: rfc2253(&tbs.subject),
        subject_cn: first_cn(&tbs.subject),
        issuer: rfc2253(&tbs.issuer),
        serial: serial_hex(tbs.raw_serial()),
        not_before: tbs.validity.not_before.timestamp(),
        not_after: tbs.validity.not_after.timestamp(),
        sans,
        key: key_algorithm(&tbs.subject_pki),
        signature_algorithm: signature_algorithm_name(
            cert.signature_algorithm.algorithm.as_bytes(),
        )
        .map_or_else(
            || cert.signature_algorithm.algorithm.to_id_string(),
            str::to_owned,
        ),
        is_ca,
        subject_key_id,
        authority_key_id,
        spki_sha256: sha256(tbs.subject_pki.raw),
        crl_distribution_points,
        ocsp_urls,
    }
}

fn add_san(sans: &mut SubjectAltNames, name: &GeneralName<'_>) {
    match name {
        GeneralName::DNSName(s) => sans.dns.push((*s).to_owned()),
        GeneralName::RFC822Name(s) => sans.email.push((*s).to_owned()),
        GeneralName::URI(s) => sans.uri.push((*s).to_owned()),
        GeneralName::IPAddress(bytes) => {
            let text = if let Ok(v4) = <[u8; 4]>::try_from(*bytes) {
                Ipv4Addr::from(v4).to_string()
            } else if let Ok(v6) = <[u8; 16]>::try_from(*bytes) {
                Ipv6Addr::from(v6).to_string()
            } else {
                // Not an address (malformed); keep it visible rather than dropping it.
                hex::encode(bytes)
            };
            sans.ip.push(text);
        }
        _ => {}
    }
}

/// Serial number as lowercase hex, no leading zeros, `"0"` for zero, from the raw INTEGER
/// content bytes (two's complement). A "negative" serial (first byte 0x80 or more, which
/// some CAs emit although RFC 5280 forbids it) gets a `-` and its magnitude, as
/// `openssl x509 -serial` prints it: `ed cc` is `-1234`, while `00 ed cc` is `edcc`.
fn serial_hex(raw: &[u8]) -> String {
    match raw.first() {
        Some(&first) if first >= 0x80 => {
            // Two's complement: invert and add one, from the last byte up.
            let mut magnitude: Vec<u8> = raw.iter().map(|b| !b).collect();
            for byte in magnitude.iter_mut().rev() {
                let (sum, carry) = byte.overflowing_add(1);
                *byte = sum;
                if !carry {
                    break;
                }
            }
            format!("-{}", unsigned_hex(&magnitude))
        }
        _ => unsigned_hex(raw),
    }
}

/// Big-endian bytes as minimal lowercase hex (`"0"` for none or all zero).
fn unsigned_hex(raw: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let start = raw.iter().position(|&b| b != 0).unwrap_or(raw.len());
    let bytes = &raw[start..];
    let Some((&first, rest)) = bytes.split_first() else {
        return "0".to_owned();
    };
    let mut s = String::with_capacity(bytes.len() * 2);
    if first >= 0x10 {
        s.push(char::from(HEX[usize::from(first >> 4)]));
    }
    s.push(char::from(HEX[usize::from(first & 0x0f)]));
    for &b in rest {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    s
}

/// One entry of a CRL, keyed in [`crl_entries`] by its serial written like
/// [`CertificateFacts::serial`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CrlEntry {
    /// The entry's revocationDate, Unix seconds.
    pub revoked_at: i64,
    /// The entry's CRLReason code (RFC 5280 5.3.1), when it has one.
    pub reason_code: Option<u8>,
}

/// Why bytes could not be read as a DER CRL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub(crate) struct CrlParseError {
    /// What the parser found wrong.
    pub reason: String,
}

/// The entries of a DER CRL (the signature is not checked here), keyed by serial in the same
/// form as [`CertificateFacts::serial`] (signed lowercase hex, read from the raw INTEGER
/// bytes), so that a "negative" serial matches only its own entry. When two entries share a
/// key, the first is kept.
pub(crate) fn crl_entries(der: &[u8]) -> Result<BTreeMap<String, CrlEntry>, CrlParseError> {
    use x509_parser::revocation_list::CertificateRevocationList;
    let (_, crl) = CertificateRevocationList::from_der(der).map_err(|e| CrlParseError {
        reason: e.to_string(),
    })?;
    let mut out = BTreeMap::new();
    for entry in crl.iter_revoked_certificates() {
        out.entry(serial_hex(entry.raw_serial()))
            .or_insert_with(|| CrlEntry {
                revoked_at: entry.revocation_date.timestamp(),
                reason_code: entry.reason_code().map(|(_, code)| code.0),
            });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Distinguished names
// ---------------------------------------------------------------------------------------------

/// Formats a name as RFC 2253 (`CN=leaf,O=Example,C=US`): RDNs in reverse order of their
/// encoding, `,` between RDNs, `+` inside multi-valued RDNs (whose values are reversed too,
/// as OpenSSL prints them: RFC 2253 leaves their order open), special characters escaped,
/// non-string values as `#` + hex of their DER. UTF-8 text is kept as is (not `\xx`-escaped).
/// This is the same as `openssl x509 -nameopt RFC2253` for ASCII names.
fn rfc2253(name: &X509Name<'_>) -> String {
    let mut out = String::with_capacity(name.as_raw().len());
    let rdns: Vec<_> = name.iter_rdn().collect();
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let atvs: Vec<_> = rdn.iter().collect();
        for (j, atv) in atvs.iter().rev().enumerate() {
            if j > 0 {
                out.push('+');
            }
            let oid = atv.attr_type();
            match attribute_short_name(oid.as_bytes()) {
                Some(short) => out.push_str(short),
                None => out.push_str(&oid.to_id_string()),
            }
            out.push('=');
            write_value(&mut out, atv.attr_value());
        }
    }
    out
}

/// The subject's first common name (in encoding order), decoded.
fn first_cn(name: &X509Name<'_>) -> Option<String> {
    name.iter_attributes()
        .find(|atv| atv.attr_type().as_bytes() == oids::CN)
        .map(|atv| match decode_string(atv.attr_value()) {
            Some(s) => s.into_owned(),
            None => hex::encode(atv.attr_value().data),
        })
}

/// Appends the RFC 2253 form of an attribute value.
fn write_value(out: &mut String, value: &Any<'_>) {
    if let Some(text) = decode_string(value) {
        escape_2253(out, &text);
    } else {
        out.push('#');
        match value.to_der_vec() {
            Ok(der) => hex_into(out, &der),
            Err(_) => hex_into(out, value.data),
        }
    }
}

fn hex_into(out: &mut String, bytes: &[u8]) {
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
}

/// Decodes the ASN.1 string types found in names (borrowing when the bytes are UTF-8).
/// `None` if the value is not a string.
fn decode_string<'a>(value: &Any<'a>) -> Option<Cow<'a, str>> {
    if value.header.class() != Class::Universal {
        return None;
    }
    let data: &'a [u8] = value.data;
    let latin1 = || data.iter().map(|&b| char::from(b)).collect::<String>();
    Some(match value.tag() {
        // TeletexString/VideotexString are in practice UTF-8 or Latin-1, like the others.
        Tag::Utf8String
        | Tag::PrintableString
        | Tag::Ia5String
        | Tag::NumericString
        | Tag::VisibleString
        | Tag::GeneralString
        | Tag::GraphicString
        | Tag::T61String
        | Tag::VideotexString => match std::str::from_utf8(data) {
            Ok(s) => Cow::Borrowed(s),
            Err(_) => Cow::Owned(latin1()),
        },
        Tag::BmpString => {
            if !data.len().is_multiple_of(2) {
                return None;
            }
            let units = data
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]));
            Cow::Owned(
                char::decode_utf16(units)
                    .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
                    .collect(),
            )
        }
        Tag::UniversalString => {
            if !data.len().is_multiple_of(4) {
                return None;
            }
            Cow::Owned(
                data.chunks_exact(4)
                    .map(|c| {
                        char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                            .unwrap_or(char::REPLACEMENT_CHARACTER)
                    })
                    .collect(),
            )
        }
        _ => return None,
    })
}

/// RFC 2253 section 2.4 escaping.
fn escape_2253(out: &mut String, s: &str) {
    let plain = !s.starts_with([' ', '#'])
        && !s.ends_with(' ')
        && !s.bytes().any(|b| {
            matches!(b, b',' | b'+' | b'"' | b'\\' | b'<' | b'>' | b';') || b < 0x20 || b == 0x7f
        });
    if plain {
        out.push_str(s);
        return;
    }
    let last = s.chars().count().saturating_sub(1);
    for (i, c) in s.chars().enumerate() {
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            c if c.is_ascii_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "\\{b:02x}");
                }
            }
            c => out.push(c),
        }
    }
}

/// Short names for attribute types (those of RFC 2253 plus the ones OpenSSL prints).
fn attribute_short_name(oid: &[u8]) -> Option<&'static str> {
    if let [0x55, 0x04, n] = oid {
        return Some(match n {
            3 => "CN",
            4 => "SN",
            5 => "serialNumber",
            6 => "C",
            7 => "L",
            8 => "ST",
            9 => "STREET",
            10 => "O",
            11 => "OU",
            12 => "title",
            13 => "description",
            15 => "businessCategory",
            17 => "postalCode",
            42 => "GN",
            43 => "initials",
            44 => "generationQualifier",
            46 => "dnQualifier",
            65 => "pseudonym",
            97 => "organizationIdentifier",
            _ => return None,
        });
    }
    Some(match oid {
        oids::DC => "DC",
        oids::UID => "UID",
        oids::EMAIL => "emailAddress",
        oids::JURISDICTION_L => "jurisdictionL",
        oids::JURISDICTION_ST => "jurisdictionST",
        oids::JURISDICTION_C => "jurisdictionC",
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------------
// Algorithms
// ---------------------------------------------------------------------------------------------

/// OpenSSL-style name of a signature algorithm, `None` if unknown (the caller uses the OID).
fn signature_algorithm_name(oid: &[u8]) -> Option<&'static str> {
    Some(match oid {
        oids::SHA256_RSA => "sha256WithRSAEncryption",
        oids::SHA384_RSA => "sha384WithRSAEncryption",
        oids::SHA512_RSA => "sha512WithRSAEncryption",
        oids::SHA224_RSA => "sha224WithRSAEncryption",
        oids::SHA1_RSA => "sha1WithRSAEncryption",
        oids::MD5_RSA => "md5WithRSAEncryption",
        oids::MD4_RSA => "md4WithRSAEncryption",
        oids::MD2_RSA => "md2WithRSAEncryption",
        oids::SHA1_RSA_OIW => "sha1WithRSA",
        oids::RSA_PSS => "RSASSA-PSS",
        oids::ECDSA_SHA256 => "ecdsa-with-SHA256",
        oids::ECDSA_SHA384 => "ecdsa-with-SHA384",
        oids::ECDSA_SHA512 => "ecdsa-with-SHA512",
        oids::ECDSA_SHA224 => "ecdsa-with-SHA224",
        oids::ECDSA_SHA1 => "ecdsa-with-SHA1",
        oids::ED25519 => "ED25519",
        oids::ED448 => "ED448",
        oids::DSA_SHA1 => "dsaWithSHA1",
        oids::DSA_SHA224 => "dsa_with_SHA224",
        oids::DSA_SHA256 => "dsa_with_SHA256",
        _ => return None,
    })
}

fn key_algorithm(spki: &SubjectPublicKeyInfo<'_>) -> KeyAlgorithm {
    let alg = spki.algorithm.algorithm.as_bytes();
    let key = &spki.subject_public_key.data[..];
    match alg {
        oids::RSA_ENCRYPTION | oids::RSA_PSS => {
            // RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }
            let bits = der::read(key, 0x30)
                .and_then(|(seq, _)| der::read(seq, 0x02))
                .map_or(0, |(modulus, _)| bit_length(modulus));
            KeyAlgorithm::Rsa { bits }
        }
        oids::EC_PUBLIC_KEY => {
            let curve = match &spki.algorithm.parameters {
                Some(p) if p.header.class() == Class::Universal && p.tag() == Tag::Oid => {
                    match curve_name(p.data) {
                        Some(name) => name.to_owned(),
                        None => oid_text(p.data),
                    }
                }
                Some(_) => "explicit curve parameters".to_owned(),
                None => "unspecified curve".to_owned(),
            };
            KeyAlgorithm::Ec { curve }
        }
        oids::ED25519 => KeyAlgorithm::Ed25519,
        oids::ED448 => KeyAlgorithm::Ed448,
        oids::DSA => {
            // Dss-Parms ::= SEQUENCE { p INTEGER, q INTEGER, g INTEGER }; without parameters
            // (inherited from the issuer), use the size of the public value y.
            let from_p = spki
                .algorithm
                .parameters
                .as_ref()
                .filter(|p| p.tag() == Tag::Sequence)
                .and_then(|p| der::read(p.data, 0x02))
                .map(|(p, _)| bit_length(p));
            let bits =
                from_p.unwrap_or_else(|| der::read(key, 0x02).map_or(0, |(y, _)| bit_length(y)));
            KeyAlgorithm::Dsa { bits }
        }
        _ => KeyAlgorithm::Other {
            oid: spki.algorithm.algorithm.to_id_string(),
        },
    }
}

/// Bit length of an unsigned big-endian integer (leading zero bytes ignored).
fn bit_length(int: &[u8]) -> u32 {
    let start = int.iter().position(|&b| b != 0).unwrap_or(int.len());
    let int = &int[start..];
    match int.first() {
        Some(&first) => {
            let len = u32::try_from(int.len()).unwrap_or(u32::MAX / 8);
            len.saturating_mul(8).saturating_sub(first.leading_zeros())
        }
        None => 0,
    }
}

fn curve_name(oid: &[u8]) -> Option<&'static str> {
    Some(match oid {
        oids::P256 => "P-256",
        oids::P384 => "P-384",
        oids::P521 => "P-521",
        oids::SECP256K1 => "secp256k1",
        oids::P224 => "P-224",
        oids::P192 => "P-192",
        oids::BRAINPOOL_P256R1 => "brainpoolP256r1",
        oids::BRAINPOOL_P384R1 => "brainpoolP384r1",
        oids::BRAINPOOL_P512R1 => "brainpoolP512r1",
        _ => return None,
    })
}

/// Dotted text of an encoded OID (content bytes only).
fn oid_text(encoded: &[u8]) -> String {
    match x509_parser::asn1_rs::Oid::new(encoded.into()).to_id_string() {
        s if !s.is_empty() => s,
        _ => hex::encode(encoded),
    }
}

/// A minimal DER reader for the few places where a full parser is overkill.
mod der {
    /// Reads one element with the expected tag (single-byte tags only, definite lengths).
    /// Returns its content and the rest of the input.
    pub(super) fn read(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
        let (&t, rest) = input.split_first()?;
        if t != tag {
            return None;
        }
        let (&l0, rest) = rest.split_first()?;
        let (len, rest) = if l0 < 0x80 {
            (usize::from(l0), rest)
        } else {
            let n = usize::from(l0 & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let (len_bytes, rest) = rest.split_at(n);
            (
                len_bytes
                    .iter()
                    .fold(0usize, |a, &b| (a << 8) | usize::from(b)),
                rest,
            )
        };
        if rest.len() < len {
            return None;
        }
        Some(rest.split_at(len))
    }
}

/// Encoded OIDs (content octets) matched by this module.
mod oids {
    pub(super) const MD2_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x02]; // 1.2.840.113549.1.1.2
    pub(super) const MD4_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x03]; // 1.2.840.113549.1.1.3
    pub(super) const MD5_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x04]; // 1.2.840.113549.1.1.4
    pub(super) const SHA1_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05]; // 1.2.840.113549.1.1.5
    pub(super) const RSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a]; // 1.2.840.113549.1.1.10
    pub(super) const SHA256_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b]; // 1.2.840.113549.1.1.11
    pub(super) const SHA384_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c]; // 1.2.840.113549.1.1.12
    pub(super) const SHA512_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d]; // 1.2.840.113549.1.1.13
    pub(super) const SHA224_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0e]; // 1.2.840.113549.1.1.14
    pub(super) const SHA1_RSA_OIW: &[u8] = &[0x2b, 0x0e, 0x03, 0x02, 0x1d]; // 1.3.14.3.2.29
    pub(super) const ECDSA_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01]; // 1.2.840.10045.4.1
    pub(super) const ECDSA_SHA224: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x01]; // 1.2.840.10045.4.3.1
    pub(super) const ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]; // 1.2.840.10045.4.3.2
    pub(super) const ECDSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03]; // 1.2.840.10045.4.3.3
    pub(super) const ECDSA_SHA512: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04]; // 1.2.840.10045.4.3.4
    pub(super) const DSA_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x38, 0x04, 0x03]; // 1.2.840.10040.4.3
    pub(super) const DSA_SHA224: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x03, 0x01]; // 2.16.840.1.101.3.4.3.1
    pub(super) const DSA_SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x03, 0x02]; // 2.16.840.1.101.3.4.3.2
    pub(super) const ED25519: &[u8] = &[0x2b, 0x65, 0x70]; // 1.3.101.112
    pub(super) const ED448: &[u8] = &[0x2b, 0x65, 0x71]; // 1.3.101.113
    pub(super) const RSA_ENCRYPTION: &[u8] =
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01]; // 1.2.840.113549.1.1.1
    pub(super) const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]; // 1.2.840.10045.2.1
    pub(super) const DSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x38, 0x04, 0x01]; // 1.2.840.10040.4.1
    pub(super) const P192: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x01]; // 1.2.840.10045.3.1.1
    pub(super) const P224: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x21]; // 1.3.132.0.33
    pub(super) const P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]; // 1.2.840.10045.3.1.7
    pub(super) const P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22]; // 1.3.132.0.34
    pub(super) const P521: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x23]; // 1.3.132.0.35
    pub(super) const SECP256K1: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x0a]; // 1.3.132.0.10
    pub(super) const BRAINPOOL_P256R1: &[u8] =
        &[0x2b, 0x24, 0x03, 0x03, 0x02, 0x08, 0x01, 0x01, 0x07]; // 1.3.36.3.3.2.8.1.1.7
    pub(super) const BRAINPOOL_P384R1: &[u8] =
        &[0x2b, 0x24, 0x03, 0x03, 0x02, 0x08, 0x01, 0x01, 0x0b]; // 1.3.36.3.3.2.8.1.1.11
    pub(super) const BRAINPOOL_P512R1: &[u8] =
        &[0x2b, 0x24, 0x03, 0x03, 0x02, 0x08, 0x01, 0x01, 0x0d]; // 1.3.36.3.3.2.8.1.1.13
    pub(super) const AD_OCSP: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01]; // 1.3.6.1.5.5.7.48.1
    pub(super) const CN: &[u8] = &[0x55, 0x04, 0x03]; // 2.5.4.3
    pub(super) const DC: &[u8] = &[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19]; // 0.9.2342.19200300.100.1.25
    pub(super) const UID: &[u8] = &[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01]; // 0.9.2342.19200300.100.1.1
    pub(super) const EMAIL: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01]; // 1.2.840.113549.1.9.1
    pub(super) const JURISDICTION_L: &[u8] = &[
        0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x3c, 0x02, 0x01, 0x01,
    ]; // 1.3.6.1.4.1.311.60.2.1.1
    pub(super) const JURISDICTION_ST: &[u8] = &[
        0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x3c, 0x02, 0x01, 0x02,
    ]; // 1.3.6.1.4.1.311.60.2.1.2
    pub(super) const JURISDICTION_C: &[u8] = &[
        0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x3c, 0x02, 0x01, 0x03,
    ]; // 1.3.6.1.4.1.311.60.2.1.3
}

/// Certificate generators shared by this module's tests and [`crate::certs::formats`]' tests.
#[cfg(test)]
pub(crate) mod testutil {
    use std::path::Path;
    use std::process::Command;

    use openssl::pkey::{PKey, Private};
    use rcgen::{
        BasicConstraints, CertificateParams, CrlDistributionPoint, CustomExtension,
        DistinguishedName, DnType, IsCa, Issuer, KeyPair, SanType, SerialNumber,
    };
    use time::OffsetDateTime;

    /// 2025-01-01T00:00:00Z
    pub(crate) const NOT_BEFORE: i64 = 1_735_689_600;
    /// 2027-06-30T12:00:00Z
    pub(crate) const NOT_AFTER: i64 = 1_814_356_800;

    pub(crate) const LEAF_SERIAL: [u8; 8] = [0x00, 0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f, 0x60];
    pub(crate) const LEAF_SERIAL_HEX: &str = "a1b2c3d4e5f60";
    pub(crate) const CRL_URL: &str = "http://crl.contoso.example/issuing.crl";
    pub(crate) const OCSP_URL: &str = "http://ocsp.contoso.example/";
    pub(crate) const CA_ISSUERS_URL: &str = "http://pki.contoso.example/issuing.crt";

    pub(crate) fn ts(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(secs).expect("valid test time")
    }

    /// `C=US, O=<o>, CN=<cn>` in that (encoding) order.
    pub(crate) fn dn(cn: &str, o: &str) -> DistinguishedName {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CountryName, "US");
        dn.push(DnType::OrganizationName, o);
        dn.push(DnType::CommonName, cn);
        dn
    }

    /// Parameters with an explicit validity (never rcgen's default that runs to 4096).
    pub(crate) fn params(cn: &str) -> CertificateParams {
        let mut p = CertificateParams::default();
        p.distinguished_name = dn(cn, "Contoso");
        p.not_before = ts(NOT_BEFORE);
        p.not_after = ts(NOT_AFTER);
        p
    }

    /// A 2048-bit RSA key from OpenSSL (rcgen with ring cannot generate RSA keys).
    pub(crate) fn rsa_key() -> (KeyPair, PKey<Private>) {
        let rsa = openssl::rsa::Rsa::generate(2048).expect("rsa keygen");
        let pkey = PKey::from_rsa(rsa).expect("pkey");
        let pem = pkey.private_key_to_pem_pkcs8().expect("pkcs8 pem");
        let pem = String::from_utf8(pem).expect("pem is ASCII");
        (KeyPair::from_pem(&pem).expect("rcgen key from pem"), pkey)
    }

    /// authorityInfoAccess with an OCSP responder and a caIssuers URL, DER-encoded by hand
    /// (rcgen has no AIA support).
    pub(crate) fn aia_extension() -> CustomExtension {
        fn access_description(method_last: u8, url: &str) -> Vec<u8> {
            let mut inner = vec![
                0x06,
                0x08,
                0x2b,
                0x06,
                0x01,
                0x05,
                0x05,
                0x07,
                0x30,
                method_last,
            ];
            inner.push(0x86);
            inner.push(u8::try_from(url.len()).expect("short url"));
            inner.extend_from_slice(url.as_bytes());
            let mut ad = vec![0x30, u8::try_from(inner.len()).expect("short")];
            ad.extend(inner);
            ad
        }
        let mut body = access_description(0x01, OCSP_URL);
        body.extend(access_description(0x02, CA_ISSUERS_URL));
        let mut content = vec![0x30, u8::try_from(body.len()).expect("short")];
        content.extend(body);
        CustomExtension::from_oid_content(&[1, 3, 6, 1, 5, 5, 7, 1, 1], content)
    }

    /// A two-level PKI: a P-384 CA and an RSA-2048 leaf it signs, with every field certctl
    /// reads set on the leaf.
    pub(crate) struct TestPki {
        pub ca_params: CertificateParams,
        pub ca_key: KeyPair,
        pub ca_der: Vec<u8>,
        pub ca_pem: String,
        pub leaf_params: CertificateParams,
        pub leaf_key: PKey<Private>,
        pub leaf_key_pem: String,
        pub leaf_der: Vec<u8>,
        pub leaf_pem: String,
    }

    pub(crate) fn pki() -> TestPki {
        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("p384");
        let mut ca_params = params("Contoso Issuing CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca_params.serial_number = Some(SerialNumber::from_slice(&[0x01]));
        let ca_cert = ca_params.self_signed(&ca_key).expect("ca");

        let (leaf_rcgen_key, leaf_key) = rsa_key();
        let mut leaf_params = params("gw.contoso.example");
        leaf_params.serial_number = Some(SerialNumber::from_slice(&LEAF_SERIAL));
        leaf_params.is_ca = IsCa::ExplicitNoCa;
        leaf_params.use_authority_key_identifier_extension = true;
        leaf_params.subject_alt_names = vec![
            SanType::DnsName("gw.contoso.example".try_into().expect("ia5")),
            SanType::DnsName("*.gw.contoso.example".try_into().expect("ia5")),
            SanType::IpAddress("192.0.2.10".parse().expect("ip")),
            SanType::IpAddress("2001:db8::10".parse().expect("ip")),
            SanType::Rfc822Name("pki@contoso.example".try_into().expect("ia5")),
            SanType::URI("https://gw.contoso.example/agent".try_into().expect("ia5")),
        ];
        leaf_params.crl_distribution_points = vec![CrlDistributionPoint {
            uris: vec![CRL_URL.to_owned()],
        }];
        leaf_params.custom_extensions = vec![aia_extension()];
        let issuer = Issuer::from_params(&ca_params, &ca_key);
        let leaf_cert = leaf_params
            .signed_by(&leaf_rcgen_key, &issuer)
            .expect("leaf");
        let leaf_key_pem =
            String::from_utf8(leaf_key.private_key_to_pem_pkcs8().expect("pem")).expect("ascii");

        TestPki {
            ca_der: ca_cert.der().to_vec(),
            ca_pem: ca_cert.pem(),
            ca_params,
            ca_key,
            leaf_params,
            leaf_key,
            leaf_key_pem,
            leaf_der: leaf_cert.der().to_vec(),
            leaf_pem: leaf_cert.pem(),
        }
    }

    /// Runs the `openssl` command line in `dir`, returning stdout; panics with stderr on failure.
    pub(crate) fn openssl_cli(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl (it must be on PATH)");
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use openssl::asn1::Asn1Time;
    use openssl::bn::BigNum;
    use openssl::hash::MessageDigest;
    use openssl::pkey::{PKey, Private};
    use openssl::x509::{X509Builder, X509NameBuilder, X509};
    use rcgen::{DnType, DnValue, KeyPair, SerialNumber};
    use x509_parser::asn1_rs::Oid;

    use super::testutil::*;
    use super::*;

    fn sha(bytes: &[u8]) -> Sha256 {
        Sha256(sha2::Sha256::digest(bytes).into())
    }

    /// SPKI DER as OpenSSL re-encodes it: an independent check of `spki_sha256`.
    fn openssl_spki(der: &[u8]) -> Vec<u8> {
        X509::from_der(der)
            .expect("openssl parses")
            .public_key()
            .expect("key")
            .public_key_to_der()
            .expect("spki der")
    }

    #[test]
    fn rsa_leaf_signed_by_p384_ca_has_every_field() {
        let pki = pki();
        let f = facts_from_der(&pki.leaf_der).expect("leaf parses");

        assert_eq!(f.fingerprint, sha(&pki.leaf_der));
        assert_eq!(f.subject, "CN=gw.contoso.example,O=Contoso,C=US");
        assert_eq!(f.subject_cn.as_deref(), Some("gw.contoso.example"));
        assert_eq!(f.issuer, "CN=Contoso Issuing CA,O=Contoso,C=US");
        assert_eq!(f.serial, LEAF_SERIAL_HEX);
        assert_eq!(f.not_before, NOT_BEFORE);
        assert_eq!(f.not_after, NOT_AFTER);
        assert_eq!(f.sans.dns, ["gw.contoso.example", "*.gw.contoso.example"]);
        assert_eq!(f.sans.ip, ["192.0.2.10", "2001:db8::10"]);
        assert_eq!(f.sans.email, ["pki@contoso.example"]);
        assert_eq!(f.sans.uri, ["https://gw.contoso.example/agent"]);
        assert_eq!(f.key, KeyAlgorithm::Rsa { bits: 2048 });
        assert_eq!(f.signature_algorithm, "ecdsa-with-SHA384");
        assert!(!f.is_ca);
        let leaf_rcgen_key = KeyPair::from_pem(&pki.leaf_key_pem).expect("key");
        assert_eq!(
            f.subject_key_id.as_ref().map(KeyId::to_hex).as_deref(),
            Some(hex::encode(pki.leaf_params.key_identifier(&leaf_rcgen_key)).as_str())
        );
        let ca_ski = hex::encode(pki.ca_params.key_identifier(&pki.ca_key));
        assert_eq!(
            f.authority_key_id.as_ref().map(KeyId::to_hex).as_deref(),
            Some(ca_ski.as_str())
        );
        assert_eq!(f.spki_sha256, sha(&openssl_spki(&pki.leaf_der)));
        assert_eq!(f.crl_distribution_points, [CRL_URL]);
        assert_eq!(
            f.ocsp_urls,
            [OCSP_URL],
            "caIssuers must not be taken for OCSP"
        );
    }

    #[test]
    fn ca_certificate_is_ca_with_p384_key() {
        let pki = pki();
        let f = facts_from_der(&pki.ca_der).expect("ca parses");
        assert!(f.is_ca);
        assert_eq!(
            f.key,
            KeyAlgorithm::Ec {
                curve: "P-384".into()
            }
        );
        assert_eq!(f.signature_algorithm, "ecdsa-with-SHA384");
        assert_eq!(f.subject, f.issuer);
        assert_eq!(f.serial, "1");
        assert_eq!(f.spki_sha256, sha(&openssl_spki(&pki.ca_der)));
        assert!(f.sans.is_empty());
        assert!(f.crl_distribution_points.is_empty() && f.ocsp_urls.is_empty());
        assert_eq!(
            f.subject_key_id.as_ref().map(KeyId::to_hex).as_deref(),
            Some(hex::encode(pki.ca_params.key_identifier(&pki.ca_key)).as_str())
        );
    }

    #[test]
    fn self_signed_rsa_p256_and_ed25519() {
        let (rsa, _) = rsa_key();
        let der = params("rsa")
            .self_signed(&rsa)
            .expect("rsa cert")
            .der()
            .to_vec();
        let f = facts_from_der(&der).expect("parses");
        assert_eq!(f.key, KeyAlgorithm::Rsa { bits: 2048 });
        assert_eq!(f.signature_algorithm, "sha256WithRSAEncryption");
        assert!(!f.is_ca);

        let p256 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("p256");
        let der = params("p256")
            .self_signed(&p256)
            .expect("cert")
            .der()
            .to_vec();
        let f = facts_from_der(&der).expect("parses");
        assert_eq!(
            f.key,
            KeyAlgorithm::Ec {
                curve: "P-256".into()
            }
        );
        assert_eq!(f.signature_algorithm, "ecdsa-with-SHA256");
        assert_eq!(f.spki_sha256, sha(&openssl_spki(&der)));

        let ed = KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("ed25519");
        let der = params("ed").self_signed(&ed).expect("cert").der().to_vec();
        let f = facts_from_der(&der).expect("parses");
        assert_eq!(f.key, KeyAlgorithm::Ed25519);
        assert_eq!(f.signature_algorithm, "ED25519");
        assert_eq!(f.subject_cn.as_deref(), Some("ed"));
    }

    /// A certificate built with OpenSSL's own builder (digests rcgen cannot sign with).
    fn openssl_cert(key: &PKey<Private>, digest: MessageDigest, cn: &str) -> Vec<u8> {
        let mut name = X509NameBuilder::new().expect("name");
        name.append_entry_by_text("CN", cn).expect("cn");
        let name = name.build();
        let mut b = X509Builder::new().expect("builder");
        b.set_version(2).expect("v3");
        let serial = BigNum::from_u32(0xbeef)
            .expect("bn")
            .to_asn1_integer()
            .expect("int");
        b.set_serial_number(&serial).expect("serial");
        b.set_subject_name(&name).expect("subject");
        b.set_issuer_name(&name).expect("issuer");
        b.set_pubkey(key).expect("pubkey");
        b.set_not_before(&Asn1Time::from_unix(NOT_BEFORE).expect("t"))
            .expect("nb");
        b.set_not_after(&Asn1Time::from_unix(NOT_AFTER).expect("t"))
            .expect("na");
        b.sign(key, digest).expect("sign");
        b.build().to_der().expect("der")
    }

    #[test]
    fn legacy_signature_algorithms_dsa_and_ed448() {
        let (_, rsa) = rsa_key();
        let f = facts_from_der(&openssl_cert(&rsa, MessageDigest::sha1(), "sha1")).expect("sha1");
        assert_eq!(f.signature_algorithm, "sha1WithRSAEncryption");
        assert_eq!(f.serial, "beef");
        let f = facts_from_der(&openssl_cert(&rsa, MessageDigest::md5(), "md5")).expect("md5");
        assert_eq!(f.signature_algorithm, "md5WithRSAEncryption");

        let dsa = openssl::dsa::Dsa::generate(2048).expect("dsa");
        let dsa = PKey::from_dsa(dsa).expect("pkey");
        let f = facts_from_der(&openssl_cert(&dsa, MessageDigest::sha256(), "dsa")).expect("dsa");
        assert_eq!(f.key, KeyAlgorithm::Dsa { bits: 2048 });
        assert_eq!(f.signature_algorithm, "dsa_with_SHA256");

        let ed448 = PKey::generate_ed448().expect("ed448");
        let f = facts_from_der(&openssl_cert(&ed448, MessageDigest::null(), "ed448")).expect("448");
        assert_eq!(f.key, KeyAlgorithm::Ed448);
        assert_eq!(f.signature_algorithm, "ED448");
    }

    #[test]
    fn rsassa_pss_signature_and_p521_from_the_openssl_command_line() {
        let dir = tempfile::tempdir().expect("tmp");
        openssl_cli(
            dir.path(),
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:3072",
                "-nodes",
                "-keyout",
                "pss.key",
                "-subj",
                "/CN=pss",
                "-sigopt",
                "rsa_padding_mode:pss",
                "-sha256",
                "-days",
                "2",
                "-outform",
                "DER",
                "-out",
                "pss.der",
            ],
        );
        let der = std::fs::read(dir.path().join("pss.der")).expect("read");
        let f = facts_from_der(&der).expect("pss parses");
        assert_eq!(f.signature_algorithm, "RSASSA-PSS");
        assert_eq!(f.key, KeyAlgorithm::Rsa { bits: 3072 });

        openssl_cli(
            dir.path(),
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-521",
                "-nodes",
                "-keyout",
                "p521.key",
                "-subj",
                "/CN=p521",
                "-sha512",
                "-days",
                "2",
                "-outform",
                "DER",
                "-out",
                "p521.der",
            ],
        );
        let der = std::fs::read(dir.path().join("p521.der")).expect("read");
        let f = facts_from_der(&der).expect("p521 parses");
        assert_eq!(
            f.key,
            KeyAlgorithm::Ec {
                curve: "P-521".into()
            }
        );
        assert_eq!(f.signature_algorithm, "ecdsa-with-SHA512");
    }

    #[test]
    fn serials_are_minimal_lowercase_hex() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        for (bytes, expected) in [
            (&[0x01][..], "1"),
            (&[0x00][..], "0"),
            (&[0x00, 0x00, 0x0a][..], "a"),
            (&[0x7f, 0xff][..], "7fff"),
            (&[0x80, 0x00][..], "8000"),
            (
                &[0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x01][..],
                "123456789abcdef001",
            ),
        ] {
            let mut p = params("serial");
            p.serial_number = Some(SerialNumber::from_slice(bytes));
            let der = p.self_signed(&key).expect("cert").der().to_vec();
            assert_eq!(
                facts_from_der(&der).expect("parses").serial,
                expected,
                "{bytes:02x?}"
            );
        }
        assert_eq!(serial_hex(&[]), "0");
        assert_eq!(serial_hex(&[0x00, 0x00]), "0");
        assert_eq!(serial_hex(&[0x01, 0x00]), "100");
        assert_eq!(serial_hex(&[0x00, 0xff]), "ff");
        // Negative (two's complement) serials, as openssl prints them.
        assert_eq!(serial_hex(&[0xff]), "-1");
        assert_eq!(serial_hex(&[0x80]), "-80");
        assert_eq!(serial_hex(&[0xed, 0xcc]), "-1234");
        assert_eq!(serial_hex(&[0x00, 0xed, 0xcc]), "edcc");
        assert_eq!(serial_hex(&[0xff, 0x00]), "-100");
        assert_eq!(serial_hex(&[0xf8, 0xa4, 0x32, 0xeb]), "-75bcd15"); // -123456789
    }

    #[test]
    fn crl_entries_are_keyed_like_certificate_serials() {
        use rcgen::{
            CertificateRevocationListParams, Issuer, KeyIdMethod, RevocationReason,
            RevokedCertParams,
        };
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let ca = params("crl issuer");
        let issuer = Issuer::from_params(&ca, &key);
        let at = time::OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("time");
        let entry = |serial: &[u8], reason| RevokedCertParams {
            serial_number: SerialNumber::from_slice(serial),
            revocation_time: at,
            reason_code: reason,
            invalidity_date: None,
        };
        let crl = CertificateRevocationListParams {
            this_update: at,
            next_update: at + time::Duration::days(1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: vec![
                // Encoded 00 80 01 (a positive serial with its high bit set).
                entry(&[0x80, 0x01], Some(RevocationReason::KeyCompromise)),
                entry(&[0x00, 0x0a], None),
            ],
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&issuer)
        .expect("CRL");
        let entries = crl_entries(crl.der()).expect("parses");
        assert_eq!(
            entries.keys().map(String::as_str).collect::<Vec<_>>(),
            ["8001", "a"]
        );
        assert_eq!(
            entries["8001"],
            CrlEntry {
                revoked_at: 1_700_000_000,
                reason_code: Some(1),
            }
        );
        assert_eq!(entries["a"].reason_code, None);
        assert!(crl_entries(b"not a CRL").is_err());
    }

    #[test]
    fn names_are_rfc2253_with_escaping_and_decoded_string_types() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut p = params("x");
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(DnType::CountryName, "DE");
        dn.push(DnType::LocalityName, "Zürich");
        dn.push(
            DnType::OrganizationName,
            DnValue::BmpString("Straße AG".try_into().expect("bmp")),
        );
        dn.push(DnType::OrganizationalUnitName, " a,b+c;\"d\" ");
        dn.push(DnType::CommonName, "#hash <x>");
        p.distinguished_name = dn;
        let der = p.self_signed(&key).expect("cert").der().to_vec();
        let f = facts_from_der(&der).expect("parses");
        assert_eq!(
            f.subject,
            r#"CN=\#hash \<x\>,OU=\ a\,b\+c\;\"d\"\ ,O=Straße AG,L=Zürich,C=DE"#
        );
        assert_eq!(f.subject_cn.as_deref(), Some("#hash <x>"));
        assert_eq!(f.issuer, f.subject);
    }

    #[test]
    fn subject_serial_and_end_date_match_the_openssl_command_line() {
        let pki = pki();
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("leaf.der"), &pki.leaf_der).expect("write");
        let out = openssl_cli(
            dir.path(),
            &[
                "x509", "-inform", "DER", "-in", "leaf.der", "-noout", "-subject", "-serial",
                "-enddate", "-nameopt", "RFC2253",
            ],
        );
        let field = |name: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap_or_else(|| panic!("no {name} in {out}"))
                .to_owned()
        };
        let f = facts_from_der(&pki.leaf_der).expect("parses");
        assert_eq!(f.subject, field("subject="));
        assert_eq!(
            f.serial,
            field("serial=")
                .to_ascii_lowercase()
                .trim_start_matches('0')
        );
        let end = field("notAfter=");
        let format = time::macros::format_description!(
            "[month repr:short] [day padding:space] [hour]:[minute]:[second] [year] GMT"
        );
        let end = time::PrimitiveDateTime::parse(&end, &format)
            .unwrap_or_else(|e| panic!("parse {end}: {e}"))
            .assume_utc();
        assert_eq!(f.not_after, end.unix_timestamp());
    }

    #[test]
    fn truncated_der_says_how_many_bytes_are_missing() {
        let pki = pki();
        let err = facts_from_der(&pki.leaf_der[..600]).expect_err("truncated");
        assert_eq!(
            err,
            X509Error::Truncated {
                needed: pki.leaf_der.len(),
                available: 600
            }
        );
        assert_eq!(
            err.to_string(),
            format!(
                "truncated DER: the certificate needs {} bytes but the input has 600",
                pki.leaf_der.len()
            )
        );
        assert!(matches!(
            facts_from_der(&pki.leaf_der[..3]),
            Err(X509Error::Truncated { available: 3, .. })
        ));
    }

    #[test]
    fn other_bad_input_is_explained() {
        assert_eq!(facts_from_der(&[]), Err(X509Error::Empty));

        let err = facts_from_der(b"-----BEGIN CERTIFICATE-----").expect_err("pem");
        assert!(err.to_string().contains("looks like PEM"), "{err}");

        let pki = pki();
        let mut der = pki.leaf_der.clone();
        der.extend_from_slice(b"\n\n");
        let err = facts_from_der(&der).expect_err("trailing");
        assert!(
            matches!(err, X509Error::TrailingData { extra: 2, .. }),
            "{err:?}"
        );
        let (f, len) = facts_from_der_prefix(&der).expect("prefix parse");
        assert_eq!(len, pki.leaf_der.len());
        assert_eq!(f.fingerprint, sha(&pki.leaf_der));

        // A complete SEQUENCE that is not a certificate (a PKCS#1 RSA public key).
        let err = facts_from_der(&[0x30, 0x06, 0x02, 0x01, 0x05, 0x02, 0x01, 0x03]).expect_err("x");
        assert!(
            err.to_string().starts_with("not an X.509 certificate: ")
                && err.to_string().contains("such as a key"),
            "{err}"
        );

        let err = facts_from_der(&[0x30, 0x80, 0x00, 0x00]).expect_err("indefinite");
        assert!(matches!(err, X509Error::BadLength { .. }), "{err:?}");

        // Damage inside: the signature algorithm OID tag is overwritten.
        let mut der = pki.leaf_der.clone();
        let tbs_len = {
            let (_, cert) = X509Certificate::from_der(&pki.leaf_der).expect("parse");
            cert.tbs_certificate.as_ref().len()
        };
        der[4 + tbs_len] = 0x04;
        let err = facts_from_der(&der).expect_err("damaged");
        assert!(
            err.to_string().starts_with("not an X.509 certificate: "),
            "{err}"
        );
    }

    #[test]
    fn oid_constants_match_their_dotted_form() {
        for (bytes, dotted) in [
            (oids::SHA256_RSA, "1.2.840.113549.1.1.11"),
            (oids::SHA1_RSA, "1.2.840.113549.1.1.5"),
            (oids::MD5_RSA, "1.2.840.113549.1.1.4"),
            (oids::RSA_PSS, "1.2.840.113549.1.1.10"),
            (oids::ECDSA_SHA256, "1.2.840.10045.4.3.2"),
            (oids::DSA_SHA256, "2.16.840.1.101.3.4.3.2"),
            (oids::ED25519, "1.3.101.112"),
            (oids::ED448, "1.3.101.113"),
            (oids::EC_PUBLIC_KEY, "1.2.840.10045.2.1"),
            (oids::DSA, "1.2.840.10040.4.1"),
            (oids::P256, "1.2.840.10045.3.1.7"),
            (oids::P384, "1.3.132.0.34"),
            (oids::P521, "1.3.132.0.35"),
            (oids::SECP256K1, "1.3.132.0.10"),
            (oids::BRAINPOOL_P512R1, "1.3.36.3.3.2.8.1.1.13"),
            (oids::AD_OCSP, "1.3.6.1.5.5.7.48.1"),
            (oids::DC, "0.9.2342.19200300.100.1.25"),
            (oids::EMAIL, "1.2.840.113549.1.9.1"),
            (oids::JURISDICTION_C, "1.3.6.1.4.1.311.60.2.1.3"),
        ] {
            let oid = Oid::from_str(dotted).expect("oid");
            assert_eq!(bytes, oid.as_bytes(), "{dotted}");
        }
        assert_eq!(oid_text(oids::SECP256K1), "1.3.132.0.10");
    }

    #[test]
    fn bit_length_ignores_leading_zeros() {
        assert_eq!(bit_length(&[0x00, 0x80, 0x00]), 16);
        assert_eq!(bit_length(&[0x01, 0x00]), 9);
        assert_eq!(bit_length(&[0x00]), 0);
        assert_eq!(bit_length(&[]), 0);
    }
}
