//! Certificate file formats: turning the bytes of one file into certificates.
//!
//! This module owns recognising what a file is and getting every certificate out of it:
//! - PEM: any number of `CERTIFICATE` (also `X509 CERTIFICATE`, `TRUSTED CERTIFICATE`)
//!   blocks; other blocks (private keys, CSRs, ...) and text around the blocks are skipped.
//! - DER: one certificate (or several concatenated).
//! - PKCS#12 / PFX (binary, or base64 text when named `.pfx`/`.p12`): the end-entity
//!   certificate first, then the CA certificates. Legacy encryption (RC2-40, 3DES, as exported
//!   by Windows/IIS) needs OpenSSL 3's legacy provider, loaded once per process by
//!   [`ensure_legacy_provider`]. Before OpenSSL opens one, [`check_pkcs12_work`] refuses
//!   iteration counts that would keep a CPU busy for minutes ([`crate::certs::pkcs12_guard`]).
//!
//! The format is recognised from the content; the file name only helps with PKCS#12. The
//! position of a certificate in the returned `Vec` is its index within the file. Errors
//! ([`FormatError`]) never contain the path (the caller adds it) nor the PFX password.
//!
//! A scan reads with [`read_certificates_partial`]: a damaged certificate (bad base64, a cut
//! block, invalid DER) stops the reading of its file, but the certificates before it are
//! kept. Text or binary junk outside the PEM blocks is ignored, as OpenSSL does. Whatever the
//! bytes, parsing returns certificates or an error and never panics (checked by the proptest
//! `daemon/tests/parse_props.rs` and the cargo-fuzz target in `fuzz/`).

use std::path::Path;

use certctl_store::model::CertificateFacts;
use openssl::pkcs12::Pkcs12;

use crate::certs::openssl_setup::{ensure_legacy_provider, legacy_provider_error, openssl_reasons};
use crate::certs::x509::{facts_from_der, facts_from_der_prefix, X509Error};

/// Why a file's certificates could not be read. Messages are sentences for an administrator
/// and do not include the path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The file is none of the supported formats; `looks_like` describes what it seems to be
    /// ("an empty file", "a text file without any PEM block", ...).
    #[error("not a certificate file: this looks like {looks_like}")]
    NotACertificate {
        /// A description of the content, without quoting it.
        looks_like: String,
    },
    /// A valid file of a supported format that holds no certificate (a PEM file with only a
    /// private key or a CSR, a DER private key, an empty PKCS#12). Scanners count it as
    /// skipped, not as an error.
    #[error("no certificate in this file (only other objects such as private keys or requests)")]
    NoCertificate,
    /// A PEM certificate block whose base64 text is invalid. `block` is the index of the
    /// certificate block among the file's certificate blocks (0-based, the index the
    /// certificate would have had), `line` the 1-based line of its `BEGIN` line.
    #[error("PEM certificate block #{block} (BEGIN on line {line}) has invalid base64: {detail}")]
    BadBase64 {
        /// 0-based index of the block among the file's certificate blocks.
        block: usize,
        /// 1-based line of the block's `BEGIN` line.
        line: usize,
        /// What is wrong, with the line of the offending character.
        detail: String,
    },
    /// A PEM certificate block without its `END` line.
    #[error("PEM certificate block #{block} (BEGIN on line {line}) has no END line: the file is truncated or damaged")]
    UnterminatedPem {
        /// 0-based index of the block among the file's certificate blocks.
        block: usize,
        /// 1-based line of the block's `BEGIN` line.
        line: usize,
    },
    /// A PEM certificate block whose content is not a valid certificate.
    #[error("PEM certificate block #{block} (BEGIN on line {line}): {source}")]
    BadPemCertificate {
        /// 0-based index of the block among the file's certificate blocks.
        block: usize,
        /// 1-based line of the block's `BEGIN` line.
        line: usize,
        /// Why the DER inside is not a certificate, as the X.509 parser says.
        source: X509Error,
    },
    /// A binary (DER) file that is not a valid certificate; `index` is the certificate's
    /// index when several are concatenated (0 for the first).
    #[error("DER certificate #{index}: {source}")]
    BadDer {
        /// 0-based index of the certificate in the file.
        index: usize,
        /// Why it is not a certificate, as the X.509 parser says.
        source: X509Error,
    },
    /// The PKCS#12 file is protected by a password and none was given.
    #[error("this PKCS#12 (PFX) file is password-protected and no password was given")]
    PfxPasswordRequired,
    /// The given password does not open the PKCS#12 file (MAC verification failed).
    #[error("wrong password for this PKCS#12 (PFX) file (integrity check failed)")]
    WrongPfxPassword,
    /// The password cannot be a PKCS#12 password (it contains a NUL character).
    #[error(
        "the PKCS#12 (PFX) password contains a NUL character, which PKCS#12 passwords cannot hold"
    )]
    PfxPasswordInvalid,
    /// The PKCS#12 file uses legacy encryption (RC2-40-CBC, 3DES, as exported by Windows/IIS)
    /// and OpenSSL's legacy provider is not available.
    #[error("this PKCS#12 (PFX) file uses legacy encryption (RC2/3DES) and OpenSSL's legacy provider is unavailable ({detail}); install the OpenSSL legacy module or point OPENSSL_MODULES at it, or re-export the PFX with AES")]
    PfxLegacyProviderUnavailable {
        /// OpenSSL's own error text.
        detail: String,
    },
    /// The PKCS#12 file asks for more key-derivation work than certctl allows (an iteration
    /// count above `crate::certs::pkcs12_guard::MAX_ITERATIONS`): refused before any KDF runs.
    #[error("{0}")]
    PfxTooCostly(crate::certs::pkcs12_guard::Pkcs12GuardError),
    /// The PKCS#12 file is damaged or not PKCS#12 after all.
    #[error("cannot read this PKCS#12 (PFX) file: {reason}")]
    BadPfx {
        /// What is wrong (cut short, not PKCS#12 DER, ...), with OpenSSL's reasons where any.
        reason: String,
    },
    /// A certificate inside a PKCS#12 file is invalid (index as in the returned list:
    /// 0 is the end-entity certificate).
    #[error("certificate #{index} inside the PKCS#12 (PFX) file: {source}")]
    BadPfxCertificate {
        /// 0-based index in the returned list (0: the end-entity certificate).
        index: usize,
        /// Why it is not a certificate, as the X.509 parser says.
        source: X509Error,
    },
}

/// File extensions (lowercase) of the files a folder scan reads.
const CERTIFICATE_EXTENSIONS: [&str; 8] =
    ["pem", "crt", "cer", "cert", "der", "pfx", "p12", "chain"];

/// Whether a folder walk should read this file: extensions `.pem .crt .cer .cert .der .pfx
/// .p12 .chain`, case-insensitive.
pub(crate) fn looks_like_certificate_file(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
        CERTIFICATE_EXTENSIONS
            .iter()
            .any(|x| e.eq_ignore_ascii_case(x))
    })
}

fn is_pkcs12_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("pfx") || e.eq_ignore_ascii_case("p12"))
}

/// Reads every certificate in the bytes of one file.
///
/// `name_hint` is the file's name (only its extension is used: `.pfx`/`.p12` allow
/// base64-encoded PKCS#12); `pfx_password` opens PKCS#12 files (files without a password are
/// read with or without one). The index of a certificate in the result is its index within
/// the file: PEM block order, DER order, and for PKCS#12 the end-entity certificate first, then
/// the CA certificates.
///
/// All or nothing: a damaged certificate anywhere in the file is an error. A scan uses
/// [`read_certificates_partial`] to keep the certificates before the damage.
pub fn read_certificates(
    bytes: &[u8],
    name_hint: &Path,
    pfx_password: Option<&str>,
) -> Result<Vec<CertificateFacts>, FormatError> {
    let read = read_certificates_partial(bytes, name_hint, pfx_password);
    match read.error {
        Some(e) => Err(e),
        None => Ok(read.certificates),
    }
}

/// What [`read_certificates_partial`] got out of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialRead {
    /// The certificates read, in file order: position `i` is certificate `#i` of the file.
    /// When `error` is set, these are the certificates before the damaged one.
    pub certificates: Vec<CertificateFacts>,
    /// Why the file could not be read to its end (or holds no certificate:
    /// [`FormatError::NoCertificate`]); `None` when every certificate was read.
    pub error: Option<FormatError>,
}

/// Reads the certificates of one file as far as they are readable: the entry point of a scan.
///
/// Like [`read_certificates`], but a damaged certificate does not lose the ones before it: a
/// bundle whose third block is cut off still yields its first two certificates, together
/// with the error about the third. Reading stops at the first damaged certificate, so the
/// positions of the certificates returned are their indexes in the file. Never panics,
/// whatever the bytes.
pub fn read_certificates_partial(
    bytes: &[u8],
    name_hint: &Path,
    pfx_password: Option<&str>,
) -> PartialRead {
    let mut certificates = Vec::new();
    let error = match read_into(bytes, name_hint, pfx_password, &mut certificates) {
        Ok(()) if certificates.is_empty() => Some(FormatError::NoCertificate),
        Ok(()) => None,
        Err(e) => Some(e),
    };
    PartialRead {
        certificates,
        error,
    }
}

/// Recognises the format and appends the certificates to `out` until the end of the file or
/// the first error.
fn read_into(
    bytes: &[u8],
    name_hint: &Path,
    pfx_password: Option<&str>,
    out: &mut Vec<CertificateFacts>,
) -> Result<(), FormatError> {
    let Some(&first) = bytes.first() else {
        return Err(not_a_certificate("an empty file"));
    };
    let text = looks_like_text(bytes);
    if !text {
        if first == 0x30 {
            return match der_kind(bytes) {
                DerKind::Pkcs12 => read_pkcs12(bytes, pfx_password, out),
                DerKind::Certificate => read_der(bytes, out),
                DerKind::PrivateKey => Ok(()),
                DerKind::Pkcs7 => Err(not_a_certificate(
                    "a PKCS#7/CMS container (.p7b), which certctl does not read; convert it with `openssl pkcs7 -print_certs`",
                )),
            };
        }
        // PEM with a stray control character (or binary junk before it) is still PEM.
        if let Some(begin) = find(bytes, b"-----BEGIN ", 0) {
            return read_pem(bytes, begin, out);
        }
        return Err(not_a_certificate(binary_hint(bytes)));
    }
    if let Some(begin) = find(bytes, b"-----BEGIN ", 0) {
        return read_pem(bytes, begin, out);
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(not_a_certificate("a file containing only whitespace"));
    }
    if is_pkcs12_name(name_hint) {
        // Some tools (cloud key vaults, scripts) store a PFX as bare base64 text.
        if let Ok(der) = decode_base64_strict(bytes) {
            if der.first() == Some(&0x30) && der_kind(&der) == DerKind::Pkcs12 {
                return read_pkcs12(&der, pfx_password, out);
            }
        }
        return Err(not_a_certificate(
            "a text file, although its name says PKCS#12 (PFX files are binary)",
        ));
    }
    Err(not_a_certificate("a text file without any PEM block"))
}

fn not_a_certificate(looks_like: &str) -> FormatError {
    FormatError::NotACertificate {
        looks_like: looks_like.to_owned(),
    }
}

/// Text if the first KiB has no control characters other than whitespace (DER always has
/// some within its first bytes).
fn looks_like_text(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(1024)];
    head.iter()
        .all(|&b| (b >= 0x20 && b != 0x7f) || matches!(b, b'\t' | b'\n' | b'\r' | 0x0c))
}

fn binary_hint(bytes: &[u8]) -> &'static str {
    match bytes {
        [0xfe, 0xed, 0xfe, 0xed, ..] => {
            "a Java KeyStore (JKS), which certctl does not read; export its certificates with keytool"
        }
        [0xce, 0xce, 0xce, 0xce, ..] => "a Java JCEKS keystore, which certctl does not read",
        [b'P', b'K', 3, 4, ..] => "a ZIP archive",
        [0x1f, 0x8b, ..] => "a gzip-compressed file",
        [0x7f, b'E', b'L', b'F', ..] => "an ELF executable",
        [b'M', b'Z', ..] => "a Windows executable",
        [0xff, 0xfe, ..] | [0xfe, 0xff, ..] => {
            "a UTF-16 text file (save PEM files as ASCII or UTF-8)"
        }
        _ => "binary data that is neither DER nor PKCS#12",
    }
}

// ---------------------------------------------------------------------------------------------
// DER
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DerKind {
    Certificate,
    Pkcs12,
    PrivateKey,
    Pkcs7,
}

/// Tells DER structures apart by the first element inside the outer SEQUENCE: a certificate
/// starts with the TBSCertificate SEQUENCE, PKCS#12 with `INTEGER 3`, private keys (PKCS#1,
/// PKCS#8, SEC1) with `INTEGER 0` or `1`, PKCS#7 with its content-type OID.
fn der_kind(bytes: &[u8]) -> DerKind {
    let header_len = match bytes.get(1) {
        Some(&l) if l < 0x80 => 2,
        Some(&l) => 2 + usize::from(l & 0x7f),
        None => return DerKind::Certificate,
    };
    match bytes.get(header_len..header_len + 3) {
        Some([0x02, 0x01, 0x03]) => DerKind::Pkcs12,
        Some([0x02, 0x01, 0x00 | 0x01]) => DerKind::PrivateKey,
        Some([0x06, ..]) => DerKind::Pkcs7,
        _ => DerKind::Certificate,
    }
}

/// One DER certificate, or several concatenated; trailing whitespace or NUL padding is ignored.
fn read_der(bytes: &[u8], out: &mut Vec<CertificateFacts>) -> Result<(), FormatError> {
    let mut rest = bytes;
    loop {
        let index = out.len();
        let (facts, len) =
            facts_from_der_prefix(rest).map_err(|source| FormatError::BadDer { index, source })?;
        out.push(facts);
        rest = rest.get(len..).unwrap_or_default();
        match rest.first() {
            _ if rest.iter().all(|&b| b == 0 || b.is_ascii_whitespace()) => return Ok(()),
            Some(0x30) => {}
            _ => {
                let cert_len = bytes.len() - rest.len();
                return Err(FormatError::BadDer {
                    index,
                    source: X509Error::TrailingData {
                        cert_len,
                        extra: rest.len(),
                    },
                });
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// PEM
// ---------------------------------------------------------------------------------------------

fn is_certificate_label(label: &[u8]) -> bool {
    matches!(
        label,
        b"CERTIFICATE" | b"X509 CERTIFICATE" | b"TRUSTED CERTIFICATE"
    )
}

/// 1-based line number of a byte offset (only computed for errors).
fn line_of(bytes: &[u8], offset: usize) -> usize {
    1 + bytes[..offset.min(bytes.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

fn read_pem(
    bytes: &[u8],
    first_begin: usize,
    out: &mut Vec<CertificateFacts>,
) -> Result<(), FormatError> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    const END: &[u8] = b"-----END ";
    const DASHES: &[u8] = b"-----";

    // One decode buffer for the whole file.
    let mut der = Vec::new();
    let mut next_begin = Some(first_begin);
    while let Some(begin) = next_begin {
        let label_start = begin + BEGIN.len();
        let line_end = bytes[label_start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |p| label_start + p);
        let Some(label_len) =
            find(&bytes[..line_end], DASHES, label_start).map(|p| p - label_start)
        else {
            // Not a real boundary line; look further.
            next_begin = find(bytes, BEGIN, label_start);
            continue;
        };
        let label = &bytes[label_start..label_start + label_len];
        // The body starts right after the closing dashes (usually just a line break remains
        // on the BEGIN line; single-line PEM has the base64 there).
        let body_start = label_start + label_len + DASHES.len();
        let is_cert = is_certificate_label(label);
        // Base64 never contains '-': the body ends at the first dash.
        let body_end = bytes[body_start..]
            .iter()
            .position(|&b| b == b'-')
            .map(|p| body_start + p);
        if !is_cert {
            next_begin = body_end.and_then(|e| find(bytes, BEGIN, e));
            continue;
        }
        let block = out.len();
        let Some(body_end) = body_end else {
            return Err(FormatError::UnterminatedPem {
                block,
                line: line_of(bytes, begin),
            });
        };
        if !bytes[body_end..].starts_with(END) {
            if bytes[body_end..].starts_with(BEGIN) {
                return Err(FormatError::UnterminatedPem {
                    block,
                    line: line_of(bytes, begin),
                });
            }
            return Err(FormatError::BadBase64 {
                block,
                line: line_of(bytes, begin),
                detail: format!(
                    "unexpected character '-' on line {}",
                    line_of(bytes, body_end)
                ),
            });
        }
        if let Err(e) = decode_base64(&bytes[body_start..body_end], &mut der) {
            let detail = match e {
                Base64Error::BadChar { offset, byte } => format!(
                    "unexpected {} on line {}",
                    describe_byte(byte),
                    line_of(bytes, body_start + offset)
                ),
                Base64Error::BadLength => {
                    "the base64 text ends in the middle of a group (a character is missing or extra)"
                        .to_owned()
                }
            };
            return Err(FormatError::BadBase64 {
                block,
                line: line_of(bytes, begin),
                detail,
            });
        }
        // Prefix parse: TRUSTED CERTIFICATE blocks carry OpenSSL trust settings after the
        // certificate; the fingerprint covers the certificate alone.
        match facts_from_der_prefix(&der) {
            Ok((facts, _)) => out.push(facts),
            Err(source) => {
                return Err(FormatError::BadPemCertificate {
                    block,
                    line: line_of(bytes, begin),
                    source,
                })
            }
        }
        next_begin = find(bytes, BEGIN, body_end + END.len());
    }
    Ok(())
}

fn describe_byte(byte: u8) -> String {
    if byte.is_ascii_graphic() {
        format!("character '{}'", char::from(byte))
    } else {
        format!("byte 0x{byte:02x}")
    }
}

/// Position of `needle` in `hay` at or after `from`.
fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let first = *needle.first()?;
    let mut i = from;
    while i < hay.len() {
        let p = i + hay[i..].iter().position(|&b| b == first)?;
        if hay[p..].starts_with(needle) {
            return Some(p);
        }
        i = p + 1;
    }
    None
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Base64Error {
    /// A byte that is not base64, whitespace or trailing padding, at `offset` in the input.
    BadChar { offset: usize, byte: u8 },
    /// The number of base64 characters leaves a single dangling character.
    BadLength,
}

const INVALID: u8 = 0xff;
const SKIP: u8 = 0xfe;
const PAD: u8 = 0xfd;

static BASE64_TABLE: [u8; 256] = {
    let mut t = [INVALID; 256];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut i = 0;
    while i < 64 {
        t[alphabet[i] as usize] = i as u8;
        i += 1;
    }
    t[b' ' as usize] = SKIP;
    t[b'\t' as usize] = SKIP;
    t[b'\r' as usize] = SKIP;
    t[b'\n' as usize] = SKIP;
    t[0x0b] = SKIP;
    t[0x0c] = SKIP;
    t[b'=' as usize] = PAD;
    t
};

/// Decodes standard base64, skipping whitespace, into `out` (cleared first). Padding is
/// optional; after padding only whitespace or more padding may follow.
fn decode_base64(input: &[u8], out: &mut Vec<u8>) -> Result<(), Base64Error> {
    out.clear();
    out.reserve(input.len() / 4 * 3 + 3);
    let mut acc: u32 = 0;
    let mut n = 0u8;
    let mut padded = false;
    for (offset, &byte) in input.iter().enumerate() {
        match BASE64_TABLE[usize::from(byte)] {
            SKIP => {}
            PAD => padded = true,
            v if v < 64 && !padded => {
                acc = (acc << 6) | u32::from(v);
                n += 1;
                if n == 4 {
                    out.extend_from_slice(&[(acc >> 16) as u8, (acc >> 8) as u8, acc as u8]);
                    acc = 0;
                    n = 0;
                }
            }
            _ => return Err(Base64Error::BadChar { offset, byte }),
        }
    }
    match n {
        0 => {}
        2 => out.push((acc >> 4) as u8),
        3 => out.extend_from_slice(&[(acc >> 10) as u8, (acc >> 2) as u8]),
        _ => return Err(Base64Error::BadLength),
    }
    Ok(())
}

fn decode_base64_strict(input: &[u8]) -> Result<Vec<u8>, Base64Error> {
    let mut out = Vec::new();
    decode_base64(input, &mut out)?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// PKCS#12
// ---------------------------------------------------------------------------------------------

fn read_pkcs12(
    bytes: &[u8],
    password: Option<&str>,
    out: &mut Vec<CertificateFacts>,
) -> Result<(), FormatError> {
    // A clearer message than OpenSSL's for the common case of a cut-off file.
    if let Err(X509Error::Truncated { needed, available }) =
        crate::certs::x509::der_outer_length(bytes)
    {
        return Err(FormatError::BadPfx {
            reason: format!("truncated DER: the file needs {needed} bytes but has {available}"),
        });
    }
    check_pkcs12_work(bytes)?;
    ensure_legacy_provider();
    let p12 = Pkcs12::from_der(bytes).map_err(|e| FormatError::BadPfx {
        reason: format!("it is not valid PKCS#12 DER ({})", openssl_reasons(&e)),
    })?;
    let given = password.unwrap_or("");
    if given.contains('\0') {
        return Err(FormatError::PfxPasswordInvalid);
    }
    let parsed = match p12.parse2(given) {
        Ok(parsed) => parsed,
        Err(e) if is_mac_failure(&e) => {
            if given.is_empty() {
                return Err(FormatError::PfxPasswordRequired);
            }
            // A password was configured but the file has none: still readable.
            match p12.parse2("") {
                Ok(parsed) => parsed,
                Err(_) => return Err(FormatError::WrongPfxPassword),
            }
        }
        Err(e) => return Err(pkcs12_error(&e)),
    };

    out.reserve(1 + parsed.ca.as_ref().map_or(0, |ca| ca.len()));
    let certs = parsed
        .cert
        .iter()
        .map(|c| c.as_ref())
        .chain(parsed.ca.iter().flat_map(|ca| ca.iter()));
    for cert in certs {
        let index = out.len();
        let der = cert.to_der().map_err(|e| FormatError::BadPfx {
            reason: format!(
                "certificate #{index} cannot be re-encoded ({})",
                openssl_reasons(&e)
            ),
        })?;
        let facts = facts_from_der(&der)
            .map_err(|source| FormatError::BadPfxCertificate { index, source })?;
        out.push(facts);
    }
    Ok(())
}

/// Refuses PKCS#12 DER whose MAC or encryption asks for more key-derivation work than
/// [`crate::certs::pkcs12_guard`] allows. Every PKCS#12 file certctl opens goes through this before
/// OpenSSL sees it (which runs the KDFs and cannot be interrupted).
pub(crate) fn check_pkcs12_work(bytes: &[u8]) -> Result<(), FormatError> {
    use crate::certs::pkcs12_guard::{check, Pkcs12GuardError};
    check(bytes).map_err(|e| match e {
        Pkcs12GuardError::Malformed(_) => FormatError::BadPfx {
            reason: e.to_string(),
        },
        e => FormatError::PfxTooCostly(e),
    })
}

fn is_mac_failure(e: &openssl::error::ErrorStack) -> bool {
    e.errors().iter().any(|err| {
        err.reason()
            .is_some_and(|r| r.eq_ignore_ascii_case("mac verify failure"))
    })
}

fn pkcs12_error(e: &openssl::error::ErrorStack) -> FormatError {
    let reasons = openssl_reasons(e);
    let unsupported = e.errors().iter().any(|err| {
        let reason = err.reason().unwrap_or_default();
        let data = err.data().unwrap_or_default();
        reason.contains("unsupported")
            || reason.contains("unknown cipher")
            || data.contains("RC2")
            || data.contains("DES")
    });
    match (unsupported, legacy_provider_error()) {
        (true, Some(load_error)) => FormatError::PfxLegacyProviderUnavailable {
            detail: format!("{reasons}; loading the legacy provider failed: {load_error}"),
        },
        _ => FormatError::BadPfx { reason: reasons },
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use openssl::pkcs12::Pkcs12;
    use openssl::stack::Stack;
    use openssl::x509::X509;
    use rcgen::KeyPair;

    use super::*;
    use crate::certs::x509::testutil::*;

    fn path(name: &str) -> PathBuf {
        PathBuf::from(name)
    }

    fn fingerprints(certs: &[CertificateFacts]) -> Vec<String> {
        certs.iter().map(|c| c.fingerprint.to_hex()).collect()
    }

    fn fp(der: &[u8]) -> String {
        crate::certs::x509::facts_from_der(der)
            .expect("test cert parses")
            .fingerprint
            .to_hex()
    }

    #[test]
    fn certificate_file_extensions() {
        for name in [
            "a.pem",
            "a.crt",
            "a.cer",
            "a.cert",
            "a.der",
            "a.pfx",
            "a.p12",
            "a.chain",
            "A.PEM",
            "dir/x.Pfx",
            "x.CeRt",
        ] {
            assert!(looks_like_certificate_file(Path::new(name)), "{name}");
        }
        for name in ["a.key", "a.csr", "pem", "a.pem.bak", "a", "a.txt", ".pem"] {
            assert!(!looks_like_certificate_file(Path::new(name)), "{name}");
        }
    }

    #[test]
    fn pem_bundle_with_a_key_block_in_between() {
        let pki = pki();
        let bundle = format!(
            "Leaf certificate\r\nsubject=whatever\r\n{}{}\n# issuing CA\n{}",
            pki.leaf_pem, pki.leaf_key_pem, pki.ca_pem
        );
        let certs = read_certificates(bundle.as_bytes(), &path("chain.pem"), None).expect("ok");
        assert_eq!(fingerprints(&certs), [fp(&pki.leaf_der), fp(&pki.ca_der)]);
        assert_eq!(certs[0].subject_cn.as_deref(), Some("gw.contoso.example"));
        assert!(certs[1].is_ca);
    }

    #[test]
    fn other_certificate_labels_and_trusted_certificates() {
        let pki = pki();
        let x509_label = pki
            .ca_pem
            .replace("CERTIFICATE-----", "X509 CERTIFICATE-----");
        let certs = read_certificates(x509_label.as_bytes(), &path("ca.crt"), None).expect("ok");
        assert_eq!(fingerprints(&certs), [fp(&pki.ca_der)]);

        // OpenSSL's TRUSTED CERTIFICATE: the certificate followed by trust settings.
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("ca.pem"), &pki.ca_pem).expect("write");
        let trusted = openssl_cli(
            dir.path(),
            &[
                "x509",
                "-in",
                "ca.pem",
                "-trustout",
                "-addtrust",
                "serverAuth",
            ],
        );
        assert!(trusted.contains("BEGIN TRUSTED CERTIFICATE"), "{trusted}");
        let certs = read_certificates(trusted.as_bytes(), &path("ca.pem"), None).expect("ok");
        assert_eq!(fingerprints(&certs), [fp(&pki.ca_der)]);
    }

    #[test]
    fn pem_without_certificates_is_no_certificate() {
        let pki = pki();
        let err = read_certificates(pki.leaf_key_pem.as_bytes(), &path("k.pem"), None);
        assert_eq!(err, Err(FormatError::NoCertificate));

        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let csr = params("csr")
            .serialize_request(&key)
            .expect("csr")
            .pem()
            .expect("pem");
        let both = format!("{csr}{}", key.serialize_pem());
        let err = read_certificates(both.as_bytes(), &path("req.pem"), None);
        assert_eq!(err, Err(FormatError::NoCertificate));
    }

    #[test]
    fn der_files() {
        let pki = pki();
        let certs = read_certificates(&pki.leaf_der, &path("leaf.cer"), None).expect("der");
        assert_eq!(fingerprints(&certs), [fp(&pki.leaf_der)]);

        let mut padded = pki.leaf_der.clone();
        padded.extend_from_slice(b"\r\n\0");
        let certs = read_certificates(&padded, &path("leaf.der"), None).expect("padded");
        assert_eq!(fingerprints(&certs), [fp(&pki.leaf_der)]);

        let mut two = pki.leaf_der.clone();
        two.extend_from_slice(&pki.ca_der);
        let certs = read_certificates(&two, &path("two.der"), None).expect("concatenated");
        assert_eq!(fingerprints(&certs), [fp(&pki.leaf_der), fp(&pki.ca_der)]);

        let mut junk = pki.leaf_der.clone();
        junk.extend_from_slice(&[0x01, 0x02]);
        let err = read_certificates(&junk, &path("junk.der"), None).expect_err("junk");
        assert!(err.to_string().contains("2 unexpected bytes"), "{err}");
    }

    #[test]
    fn truncated_der_is_reported_as_truncated() {
        let pki = pki();
        let err = read_certificates(&pki.leaf_der[..600], &path("leaf.der"), None)
            .expect_err("truncated");
        assert_eq!(
            err,
            FormatError::BadDer {
                index: 0,
                source: X509Error::Truncated {
                    needed: pki.leaf_der.len(),
                    available: 600
                }
            }
        );
        assert!(err.to_string().contains(&format!(
            "truncated DER: the certificate needs {} bytes but the input has 600",
            pki.leaf_der.len()
        )));
    }

    #[test]
    fn bad_base64_names_the_block_and_line() {
        let pki = pki();
        // Damage the second certificate: its third line gets a '!'.
        let mut ca = pki.ca_pem.clone();
        let third_line_start = ca.match_indices('\n').nth(1).expect("lines").0 + 1;
        ca.replace_range(third_line_start + 5..third_line_start + 6, "!");
        let bundle = format!("{}{}{}", pki.leaf_pem, pki.leaf_key_pem, ca);
        let ca_begin_line = 1 + format!("{}{}", pki.leaf_pem, pki.leaf_key_pem)
            .matches('\n')
            .count();
        let err = read_certificates(bundle.as_bytes(), &path("b.pem"), None).expect_err("bad");
        match &err {
            FormatError::BadBase64 {
                block,
                line,
                detail,
            } => {
                assert_eq!(*block, 1);
                assert_eq!(*line, ca_begin_line);
                assert_eq!(
                    detail,
                    &format!("unexpected character '!' on line {}", ca_begin_line + 2)
                );
            }
            other => panic!("expected BadBase64, got {other:?}"),
        }
        assert!(err
            .to_string()
            .starts_with("PEM certificate block #1 (BEGIN on line"));
    }

    #[test]
    fn invalid_certificate_blocks_and_unterminated_blocks() {
        let pki = pki();
        // Valid base64 of something that is not a certificate.
        let garbage = "-----BEGIN CERTIFICATE-----\nMAYCAQUCAQM=\n-----END CERTIFICATE-----\n";
        let err = read_certificates(garbage.as_bytes(), &path("g.pem"), None).expect_err("bad");
        assert!(
            matches!(
                err,
                FormatError::BadPemCertificate {
                    block: 0,
                    line: 1,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("not an X.509 certificate"),
            "{err}"
        );

        // A truncated certificate inside a block.
        let short = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            &pki.leaf_pem.lines().nth(1).expect("line")
        );
        let err = read_certificates(short.as_bytes(), &path("s.pem"), None).expect_err("short");
        assert!(err.to_string().contains("truncated DER"), "{err}");

        let cut = &pki.leaf_pem[..pki.leaf_pem.len() - 30];
        let err = read_certificates(cut.as_bytes(), &path("cut.pem"), None).expect_err("cut");
        assert!(
            matches!(err, FormatError::UnterminatedPem { block: 0, line: 1 }),
            "{err:?}"
        );
    }

    #[test]
    fn a_damaged_block_keeps_the_certificates_before_it() {
        let pki = pki();
        let cut = &pki.leaf_pem[..pki.leaf_pem.len() / 2];
        let bundle = format!("{}{}{}", pki.leaf_pem, pki.ca_pem, cut);
        let read = read_certificates_partial(bundle.as_bytes(), &path("b.pem"), None);
        assert_eq!(
            fingerprints(&read.certificates),
            [fp(&pki.leaf_der), fp(&pki.ca_der)]
        );
        let begin_line = 1 + format!("{}{}", pki.leaf_pem, pki.ca_pem)
            .matches('\n')
            .count();
        assert_eq!(
            read.error,
            Some(FormatError::UnterminatedPem {
                block: 2,
                line: begin_line
            })
        );
        // All or nothing for the other callers.
        assert_eq!(
            read_certificates(bundle.as_bytes(), &path("b.pem"), None),
            Err(FormatError::UnterminatedPem {
                block: 2,
                line: begin_line
            })
        );

        // DER: the first certificate, then a truncated second one.
        let mut der = pki.leaf_der.clone();
        der.extend_from_slice(&pki.ca_der[..100]);
        let read = read_certificates_partial(&der, &path("two.der"), None);
        assert_eq!(fingerprints(&read.certificates), [fp(&pki.leaf_der)]);
        assert!(
            matches!(read.error, Some(FormatError::BadDer { index: 1, .. })),
            "{read:?}"
        );

        // Trailing text after the last block is not damage (OpenSSL ignores it too).
        let trailing = format!("{}\n# 0xdeadbeef ~~~ garbage \u{1}\u{2}\n", pki.leaf_pem);
        let read = read_certificates_partial(trailing.as_bytes(), &path("t.pem"), None);
        assert_eq!(read.error, None);
        assert_eq!(fingerprints(&read.certificates), [fp(&pki.leaf_der)]);

        // Nothing at all: NoCertificate, with no certificates.
        let read = read_certificates_partial(pki.leaf_key_pem.as_bytes(), &path("k.pem"), None);
        assert_eq!(read.error, Some(FormatError::NoCertificate));
        assert!(read.certificates.is_empty());
    }

    #[test]
    fn files_that_are_not_certificates() {
        let hint = |bytes: &[u8], name: &str| match read_certificates(bytes, &path(name), None) {
            Err(FormatError::NotACertificate { looks_like }) => looks_like,
            other => panic!("{name}: expected NotACertificate, got {other:?}"),
        };
        assert_eq!(hint(b"", "empty.pem"), "an empty file");
        assert_eq!(
            hint(b" \n\r\n", "blank.crt"),
            "a file containing only whitespace"
        );
        assert_eq!(
            hint(b"hello world\n", "notes.cer"),
            "a text file without any PEM block"
        );
        assert!(hint(b"MIIB text", "x.pfx").contains("PKCS#12"));
        assert!(hint(&[0xfe, 0xed, 0xfe, 0xed, 0, 0, 0, 2], "store.cer").contains("Java KeyStore"));
        assert!(hint(&[0x00, 0x01, 0x02, 0x03], "x.der").contains("binary data"));
        let err = read_certificates(b"", &path("e.pem"), None).expect_err("empty");
        assert_eq!(
            err.to_string(),
            "not a certificate file: this looks like an empty file"
        );
    }

    #[test]
    fn unusual_but_valid_pem_layouts() {
        let pki = pki();
        // Single-line PEM (base64 on the BEGIN line, no line breaks).
        let body: String = pki
            .leaf_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let one_line = format!("-----BEGIN CERTIFICATE-----{body}-----END CERTIFICATE-----");
        let certs = read_certificates(one_line.as_bytes(), &path("l.pem"), None).expect("1 line");
        assert_eq!(fingerprints(&certs), [fp(&pki.leaf_der)]);
        // A control character in the preamble does not hide the PEM blocks.
        let noisy = format!("\u{1b}[1mcert\u{1b}[0m\0\n{}", pki.ca_pem);
        let certs = read_certificates(noisy.as_bytes(), &path("n.pem"), None).expect("noisy");
        assert_eq!(fingerprints(&certs), [fp(&pki.ca_der)]);
    }

    #[test]
    fn der_keys_and_pkcs7_files() {
        let pki = pki();
        let key_der = pki.leaf_key.private_key_to_der().expect("der key");
        assert_eq!(
            read_certificates(&key_der, &path("k.der"), None),
            Err(FormatError::NoCertificate)
        );
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("c.pem"), &pki.leaf_pem).expect("write");
        openssl_cli(
            dir.path(),
            &[
                "crl2pkcs7",
                "-nocrl",
                "-certfile",
                "c.pem",
                "-outform",
                "DER",
                "-out",
                "c.p7b",
            ],
        );
        let p7 = std::fs::read(dir.path().join("c.p7b")).expect("read");
        match read_certificates(&p7, &path("c.cer"), None) {
            Err(FormatError::NotACertificate { looks_like }) => {
                assert!(looks_like.contains("PKCS#7"), "{looks_like}")
            }
            other => panic!("expected NotACertificate, got {other:?}"),
        }
    }

    fn pfx(pki: &TestPki, password: &str) -> Vec<u8> {
        let leaf = X509::from_der(&pki.leaf_der).expect("leaf");
        let mut ca = Stack::new().expect("stack");
        ca.push(X509::from_der(&pki.ca_der).expect("ca"))
            .expect("push");
        Pkcs12::builder()
            .name("gw")
            .pkey(&pki.leaf_key)
            .cert(&leaf)
            .ca(ca)
            .build2(password)
            .expect("pkcs12")
            .to_der()
            .expect("der")
    }

    #[test]
    fn pfx_with_right_wrong_and_missing_password() {
        let pki = pki();
        let bytes = pfx(&pki, "s3cret!");
        let certs = read_certificates(&bytes, &path("site.pfx"), Some("s3cret!")).expect("ok");
        assert_eq!(fingerprints(&certs), [fp(&pki.leaf_der), fp(&pki.ca_der)]);
        // Detected from the content whatever the name.
        let certs = read_certificates(&bytes, &path("site.bin"), Some("s3cret!")).expect("ok");
        assert_eq!(certs.len(), 2);

        let err = read_certificates(&bytes, &path("site.pfx"), Some("nope")).expect_err("wrong");
        assert_eq!(err, FormatError::WrongPfxPassword);
        assert!(!err.to_string().contains("nope"));
        let err = read_certificates(&bytes, &path("site.p12"), None).expect_err("missing");
        assert_eq!(err, FormatError::PfxPasswordRequired);
        let err = read_certificates(&bytes, &path("site.p12"), Some("a\0b")).expect_err("nul");
        assert_eq!(err, FormatError::PfxPasswordInvalid);

        let err = read_certificates(
            &bytes[..bytes.len() / 2],
            &path("site.pfx"),
            Some("s3cret!"),
        )
        .expect_err("truncated");
        assert!(matches!(err, FormatError::BadPfx { .. }), "{err:?}");
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[test]
    fn pfx_without_password_and_base64_pfx() {
        let pki = pki();
        let bytes = pfx(&pki, "");
        let certs = read_certificates(&bytes, &path("open.pfx"), None).expect("no password");
        assert_eq!(fingerprints(&certs), [fp(&pki.leaf_der), fp(&pki.ca_der)]);
        let certs = read_certificates(&bytes, &path("open.pfx"), Some("configured")).expect("ok");
        assert_eq!(certs.len(), 2);

        let b64 = openssl::base64::encode_block(&pfx(&pki, "pw"));
        let certs = read_certificates(b64.as_bytes(), &path("vault.pfx"), Some("pw")).expect("b64");
        assert_eq!(fingerprints(&certs), [fp(&pki.leaf_der), fp(&pki.ca_der)]);
    }

    #[test]
    fn legacy_pfx_from_the_openssl_command_line() {
        assert!(
            ensure_legacy_provider(),
            "the OpenSSL legacy provider must load"
        );
        let pki = pki();
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("cert.pem"), &pki.leaf_pem).expect("write");
        std::fs::write(dir.path().join("key.pem"), &pki.leaf_key_pem).expect("write");
        openssl_cli(
            dir.path(),
            &[
                "pkcs12",
                "-export",
                "-legacy",
                "-in",
                "cert.pem",
                "-inkey",
                "key.pem",
                "-passout",
                "pass:secret",
                "-out",
                "legacy.pfx",
            ],
        );
        // Make sure the test really exercises RC2.
        let info = openssl_cli(
            dir.path(),
            &[
                "pkcs12",
                "-info",
                "-noout",
                "-legacy",
                "-in",
                "legacy.pfx",
                "-passin",
                "pass:secret",
            ],
        );
        let bytes = std::fs::read(dir.path().join("legacy.pfx")).expect("read");
        let certs = read_certificates(&bytes, &path("legacy.pfx"), Some("secret"))
            .unwrap_or_else(|e| panic!("legacy PFX ({info}): {e}"));
        assert_eq!(fingerprints(&certs), [fp(&pki.leaf_der)]);
        let err = read_certificates(&bytes, &path("legacy.pfx"), Some("wrong")).expect_err("x");
        assert_eq!(err, FormatError::WrongPfxPassword);
    }

    #[test]
    fn base64_decoder() {
        let mut out = Vec::new();
        for (input, expected) in [
            (&b"TWFu"[..], &b"Man"[..]),
            (b"TWE=", b"Ma"),
            (b"TWE", b"Ma"),
            (b"TQ==", b"M"),
            (b"TQ", b"M"),
            (b" T W\r\nF u\t", b"Man"),
            (b"", b""),
        ] {
            decode_base64(input, &mut out).expect("valid");
            assert_eq!(out, expected, "{input:?}");
        }
        assert_eq!(
            decode_base64(b"TW!u", &mut out),
            Err(Base64Error::BadChar {
                offset: 2,
                byte: b'!'
            })
        );
        assert_eq!(
            decode_base64(b"TQ==TQ==", &mut out),
            Err(Base64Error::BadChar {
                offset: 4,
                byte: b'T'
            })
        );
        assert_eq!(
            decode_base64(b"TWFuT", &mut out),
            Err(Base64Error::BadLength)
        );
    }
}
