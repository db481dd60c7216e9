//! The work a PKCS#12 (PFX) file may ask for, checked before OpenSSL opens it.
//!
//! Opening a PFX runs a password-based key derivation (KDF) for its MAC and for every
//! encrypted part, as many times as the file says. A 1 KB file asking for 2^31-1 iterations
//! keeps a CPU busy for minutes, and OpenSSL cannot be interrupted. So every PFX certctl
//! reads (scan, `inspect`, a deployment to a PFX, the certificate lookups of workflows and
//! CAs) goes through [`check`] first: it walks the file's DER (BER, as OpenSSL accepts it)
//! with asn1-rs and refuses the file when any count the walk can see is above
//! [`MAX_ITERATIONS`], before any KDF runs.
//!
//! What the walk sees (RFC 7292): `PFX ::= SEQUENCE { version, authSafe ContentInfo,
//! macData MacData OPTIONAL }`, with `MacData ::= SEQUENCE { mac DigestInfo, macSalt,
//! iterations INTEGER DEFAULT 1 }` (a PBMAC1 MAC, RFC 9579, carries PBKDF2 parameters in
//! its algorithm instead). The authSafe holds ContentInfos: `encryptedData` (its encryption
//! algorithm and parameters are in the clear) and `data` holding SafeBags, whose
//! `pkcs8ShroudedKeyBag`s have an EncryptedPrivateKeyInfo with its algorithm; nested
//! `safeContentsBag`s are walked too. Algorithms with a work factor: the PKCS#12 PBEs
//! (`pbeWithSHAAnd*`, `{salt, iterations}`), PKCS#5 PBES1 (same shape), PBES2 and PBMAC1
//! (whose PBKDF2-params hold `iterationCount`) and scrypt (`N`, `r`, `p`: the work
//! `N·r·p` is capped at [`MAX_SCRYPT_WORK`]).
//!
//! Bags inside an `encryptedData` container are not visible before decryption. The
//! container's own count is checked; see [`check_decrypted`] for the bags inside.
//!
//! The walk is bounded: [`MAX_NESTING`] levels of nested bags, [`MAX_ELEMENTS`] elements,
//! and it never allocates more than the size of the file. A structure the walk cannot read
//! is refused too (OpenSSL would otherwise get to run on something unchecked).

use std::borrow::Cow;

use x509_parser::asn1_rs::{Any, Class, FromBer, Oid, Tag};
use x509_parser::der_parser::num_bigint::BigUint;

/// Largest iteration count accepted for a PKCS#12 MAC or a PBE/PBKDF2 key derivation.
///
/// Real exports use far less: Windows (certmgr, `Export-PfxCertificate`) and OpenSSL 1.x
/// write 2,000–2,048 (MAC and PBE), OpenSSL 3's PBES2/PBKDF2 default is 2,048, Java's
/// keytool 10,000 (PBES2) and 100,000 for newer MACs, some password managers and
/// compliance-minded tools 100,000–600,000 (OWASP's PBKDF2-HMAC-SHA256 figure). 10 million
/// leaves a wide margin above all of these and still opens in seconds; 2^31-1 would take
/// minutes per derivation.
pub const MAX_ITERATIONS: u64 = 10_000_000;

/// Largest scrypt work `N·r·p` accepted (2^24: `N` = 2^20 with `r` = 8, `p` = 2, or the
/// usual `N` = 2^14..2^17, `r` = 8, `p` = 1 with room to spare).
pub const MAX_SCRYPT_WORK: u64 = 1 << 24;

/// Deepest nesting of `safeContentsBag`s walked (real files have none).
pub const MAX_NESTING: usize = 8;

/// Most ASN.1 elements walked in one file (a PFX with a key and a chain of ten certificates
/// has a few hundred).
pub const MAX_ELEMENTS: usize = 100_000;

/// Why a PKCS#12 file is refused before it is opened. Messages name the count and where it
/// is, never the path (the caller adds it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Pkcs12GuardError {
    /// An iteration count above [`MAX_ITERATIONS`].
    #[error("{kind} iteration count {count} above the limit {limit} (in {place}); refused without deriving any key, as that would keep a CPU busy for minutes")]
    TooManyIterations {
        /// "PKCS#12 MAC", "PKCS#12 PBE", "PKCS#5 PBES1" or "PBKDF2".
        kind: &'static str,
        /// The count, in decimal (it may not fit 64 bits).
        count: String,
        limit: u64,
        /// Where in the file: "the MAC", "encrypted container #1", "key bag #2 of ...".
        place: String,
    },
    /// scrypt parameters whose work `N·r·p` is above [`MAX_SCRYPT_WORK`].
    #[error("scrypt work N·r·p = {work} above the limit {limit} (in {place}); refused without deriving any key")]
    ScryptTooCostly {
        /// `N·r·p` in decimal.
        work: String,
        limit: u64,
        place: String,
    },
    /// More nested bags or elements than the walk allows.
    #[error("the PKCS#12 structure is too large or too deeply nested to check ({0})")]
    TooComplex(String),
    /// The DER cannot be walked.
    #[error("it is not valid PKCS#12 DER ({0})")]
    Malformed(String),
}

type Result<T> = std::result::Result<T, Pkcs12GuardError>;

const OID_DATA: &str = "1.2.840.113549.1.7.1";
const OID_ENCRYPTED_DATA: &str = "1.2.840.113549.1.7.6";
const OID_SHROUDED_KEY_BAG: &str = "1.2.840.113549.1.12.10.1.2";
const OID_SAFE_CONTENTS_BAG: &str = "1.2.840.113549.1.12.10.1.6";
const OID_PKCS12_PBE_PREFIX: &str = "1.2.840.113549.1.12.1.";
const OID_PBES1: [&str; 6] = [
    "1.2.840.113549.1.5.1",
    "1.2.840.113549.1.5.3",
    "1.2.840.113549.1.5.4",
    "1.2.840.113549.1.5.6",
    "1.2.840.113549.1.5.10",
    "1.2.840.113549.1.5.11",
];
const OID_PBKDF2: &str = "1.2.840.113549.1.5.12";
const OID_PBES2: &str = "1.2.840.113549.1.5.13";
const OID_PBMAC1: &str = "1.2.840.113549.1.5.14";
const OID_SCRYPT: &str = "1.3.6.1.4.1.11591.4.11";

/// Checks every work factor of the PKCS#12 DER `der` that is visible without a password:
/// the MAC, the encryption of each `encryptedData` container and of each shrouded key bag
/// outside them. `Ok` means OpenSSL may open the file as far as these go.
pub fn check(der: &[u8]) -> Result<()> {
    let mut walk = Walk::default();
    let pfx = walk.one(der, "the file")?;
    let items = walk.children(&pfx, "the PFX")?;
    let auth_safe = items
        .get(1)
        .ok_or_else(|| malformed("the PFX has no authSafe"))?;
    // OpenSSL checks the MAC first.
    if let Some(mac_data) = items.get(2) {
        walk.mac_data(mac_data)?;
    }
    walk.auth_safe(auth_safe)
}

/// Checks the bags of one decrypted `encryptedData` container (its plaintext, a
/// SafeContents): the same rules as [`check`] applies to the bags of a `data` container.
pub fn check_decrypted(safe_contents: &[u8], container: usize) -> Result<()> {
    let mut walk = Walk::default();
    let place = format!("encrypted container #{container}");
    let contents = walk.one(safe_contents, &place)?;
    walk.safe_contents(&contents, &place, 0)
}

fn malformed(what: impl Into<String>) -> Pkcs12GuardError {
    Pkcs12GuardError::Malformed(what.into())
}

/// One walk over a file: counts the elements it visits.
#[derive(Default)]
struct Walk {
    elements: usize,
}

impl Walk {
    /// The one BER element `bytes` starts with.
    fn one<'a>(&mut self, bytes: &'a [u8], place: &str) -> Result<Any<'a>> {
        self.count(1)?;
        Any::from_ber(bytes)
            .map(|(_, any)| any)
            .map_err(|e| malformed(format!("{place}: {e}")))
    }

    /// The elements inside a constructed element (a SEQUENCE, SET or explicit tag).
    fn children<'a>(&mut self, any: &Any<'a>, place: &str) -> Result<Vec<Any<'a>>> {
        if !any.header.is_constructed() {
            return Err(malformed(format!("{place}: a structure was expected")));
        }
        let mut out = Vec::new();
        let mut rest = any.data;
        while !rest.is_empty() {
            self.count(1)?;
            let (next, child) =
                Any::from_ber(rest).map_err(|e| malformed(format!("{place}: {e}")))?;
            out.push(child);
            rest = next;
        }
        Ok(out)
    }

    fn count(&mut self, n: usize) -> Result<()> {
        self.elements += n;
        if self.elements > MAX_ELEMENTS {
            return Err(Pkcs12GuardError::TooComplex(format!(
                "more than {MAX_ELEMENTS} elements"
            )));
        }
        Ok(())
    }

    /// The content of `[0] EXPLICIT` (ContentInfo content, SafeBag value).
    fn explicit0<'a>(&mut self, any: Option<&Any<'a>>, place: &str) -> Result<Any<'a>> {
        let any = any.ok_or_else(|| malformed(format!("{place}: no content")))?;
        if any.class() != Class::ContextSpecific || any.tag() != Tag(0) {
            return Err(malformed(format!("{place}: [0] expected")));
        }
        self.children(any, place)?
            .into_iter()
            .next()
            .ok_or_else(|| malformed(format!("{place}: empty [0]")))
    }

    /// The bytes of an OCTET STRING, primitive or (BER) constructed from segments.
    fn octets<'a>(&mut self, any: &Any<'a>, place: &str, depth: usize) -> Result<Cow<'a, [u8]>> {
        if any.tag() != Tag::OctetString || depth > MAX_NESTING {
            return Err(malformed(format!("{place}: OCTET STRING expected")));
        }
        if !any.header.is_constructed() {
            return Ok(Cow::Borrowed(any.data));
        }
        let mut out = Vec::new();
        for segment in self.children(any, place)? {
            out.extend_from_slice(&self.octets(&segment, place, depth + 1)?);
        }
        Ok(Cow::Owned(out))
    }

    fn mac_data(&mut self, mac_data: &Any<'_>) -> Result<()> {
        let place = "the MAC";
        let items = self.children(mac_data, place)?;
        let digest_info = items
            .first()
            .ok_or_else(|| malformed("the MAC has no DigestInfo"))?;
        if let Some(algorithm) = self.children(digest_info, place)?.first() {
            self.algorithm(algorithm, place, 0)?;
        }
        match items.get(2) {
            Some(iterations) => check_count("PKCS#12 MAC", iterations, place),
            None => Ok(()), // DEFAULT 1
        }
    }

    fn auth_safe(&mut self, auth_safe: &Any<'_>) -> Result<()> {
        let place = "the authSafe";
        let items = self.children(auth_safe, place)?;
        if oid_of(items.first()).as_deref() != Some(OID_DATA) {
            // Public-key integrity mode (signedData): OpenSSL refuses it without deriving
            // any key.
            return Ok(());
        }
        let wrapped = self.explicit0(items.get(1), place)?;
        let content = self.octets(&wrapped, place, 0)?;
        let authenticated_safe = self.one(&content, place)?;
        for (i, content_info) in self
            .children(&authenticated_safe, place)?
            .iter()
            .enumerate()
        {
            self.content_info(content_info, i + 1)?;
        }
        Ok(())
    }

    /// One ContentInfo of the AuthenticatedSafe (`index` from 1).
    fn content_info(&mut self, content_info: &Any<'_>, index: usize) -> Result<()> {
        let items = self.children(content_info, "a ContentInfo")?;
        match oid_of(items.first()).as_deref() {
            Some(OID_DATA) => {
                let place = format!("container #{index}");
                let wrapped = self.explicit0(items.get(1), &place)?;
                let bytes = self.octets(&wrapped, &place, 0)?;
                let contents = self.one(&bytes, &place)?;
                self.safe_contents(&contents, &place, 0)
            }
            Some(OID_ENCRYPTED_DATA) => {
                let place = format!("encrypted container #{index}");
                let encrypted_data = self.explicit0(items.get(1), &place)?;
                let fields = self.children(&encrypted_data, &place)?;
                let info = fields
                    .get(1)
                    .ok_or_else(|| malformed(format!("{place}: no EncryptedContentInfo")))?;
                let info = self.children(info, &place)?;
                let algorithm = info
                    .get(1)
                    .ok_or_else(|| malformed(format!("{place}: no encryption algorithm")))?;
                self.algorithm(algorithm, &place, 0)
            }
            // envelopedData and others: OpenSSL skips them.
            _ => Ok(()),
        }
    }

    /// A SafeContents (SEQUENCE OF SafeBag) found at `place`, `depth` levels of
    /// `safeContentsBag` deep.
    fn safe_contents(&mut self, contents: &Any<'_>, place: &str, depth: usize) -> Result<()> {
        if depth > MAX_NESTING {
            return Err(Pkcs12GuardError::TooComplex(format!(
                "safe contents nested more than {MAX_NESTING} levels deep"
            )));
        }
        for (i, bag) in self.children(contents, place)?.iter().enumerate() {
            let bag_place = format!("bag #{} of {place}", i + 1);
            let items = self.children(bag, &bag_place)?;
            match oid_of(items.first()).as_deref() {
                Some(OID_SHROUDED_KEY_BAG) => {
                    let bag_place = format!("key bag #{} of {place}", i + 1);
                    let info = self.explicit0(items.get(1), &bag_place)?;
                    let fields = self.children(&info, &bag_place)?;
                    let algorithm = fields
                        .first()
                        .ok_or_else(|| malformed(format!("{bag_place}: no algorithm")))?;
                    self.algorithm(algorithm, &bag_place, 0)?;
                }
                Some(OID_SAFE_CONTENTS_BAG) => {
                    let inner = self.explicit0(items.get(1), &bag_place)?;
                    self.safe_contents(&inner, &bag_place, depth + 1)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// An AlgorithmIdentifier: checks the work factor of the password-based ones.
    fn algorithm(&mut self, algorithm: &Any<'_>, place: &str, depth: usize) -> Result<()> {
        let items = self.children(algorithm, place)?;
        let Some(oid) = oid_of(items.first()) else {
            return Err(malformed(format!("{place}: algorithm without an OID")));
        };
        let params = |walk: &mut Walk| -> Result<Vec<Any<'_>>> {
            let p = items
                .get(1)
                .ok_or_else(|| malformed(format!("{place}: {oid} without parameters")))?;
            walk.children(p, place)
        };
        if oid.starts_with(OID_PKCS12_PBE_PREFIX) || OID_PBES1.contains(&oid.as_str()) {
            let kind = if OID_PBES1.contains(&oid.as_str()) {
                "PKCS#5 PBES1"
            } else {
                "PKCS#12 PBE"
            };
            // PBEParameter / pkcs-12PbeParams ::= SEQUENCE { salt, iterations }
            let p = params(self)?;
            check_count(kind, required(&p, 1, place)?, place)
        } else if oid == OID_PBES2 || oid == OID_PBMAC1 {
            // { keyDerivationFunc AlgorithmIdentifier, encryptionScheme / messageAuthScheme }
            if depth > 1 {
                return Err(malformed(format!("{place}: nested key derivations")));
            }
            let p = params(self)?;
            self.algorithm(required(&p, 0, place)?, place, depth + 1)
        } else if oid == OID_PBKDF2 {
            // PBKDF2-params ::= SEQUENCE { salt, iterationCount, keyLength OPTIONAL, prf }
            let p = params(self)?;
            check_count("PBKDF2", required(&p, 1, place)?, place)
        } else if oid == OID_SCRYPT {
            // scrypt-params ::= SEQUENCE { salt, costParameter, blockSize,
            //                              parallelizationParameter, keyLength OPTIONAL }
            let p = params(self)?;
            let mut work = BigUint::from(1u8);
            for i in 1..=3 {
                work *= unsigned(required(&p, i, place)?, place)?;
            }
            if work > BigUint::from(MAX_SCRYPT_WORK) {
                return Err(Pkcs12GuardError::ScryptTooCostly {
                    work: work.to_string(),
                    limit: MAX_SCRYPT_WORK,
                    place: place.to_owned(),
                });
            }
            Ok(())
        } else {
            Ok(())
        }
    }
}

fn required<'b, 'a>(items: &'b [Any<'a>], index: usize, place: &str) -> Result<&'b Any<'a>> {
    items
        .get(index)
        .ok_or_else(|| malformed(format!("{place}: missing algorithm parameter")))
}

fn oid_of(any: Option<&Any<'_>>) -> Option<String> {
    let any = any?;
    (any.tag() == Tag::Oid && !any.header.is_constructed())
        .then(|| Oid::new(Cow::Borrowed(any.data)).to_id_string())
}

/// A non-negative INTEGER's value (a negative one counts as 0: OpenSSL then runs a single
/// iteration).
fn unsigned(any: &Any<'_>, place: &str) -> Result<BigUint> {
    if any.tag() != Tag::Integer || any.header.is_constructed() || any.data.is_empty() {
        return Err(malformed(format!("{place}: INTEGER expected")));
    }
    if any.data[0] & 0x80 != 0 {
        return Ok(BigUint::from(0u8));
    }
    Ok(BigUint::from_bytes_be(any.data))
}

fn check_count(kind: &'static str, count: &Any<'_>, place: &str) -> Result<()> {
    let count = unsigned(count, place)?;
    if count > BigUint::from(MAX_ITERATIONS) {
        return Err(Pkcs12GuardError::TooManyIterations {
            kind,
            count: count.to_string(),
            limit: MAX_ITERATIONS,
            place: place.to_owned(),
        });
    }
    Ok(())
}
