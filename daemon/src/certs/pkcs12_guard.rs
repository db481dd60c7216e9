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
//! Limit: bags inside an `encryptedData` container are not visible before decryption. The
//! container's own count is checked, but a shrouded key bag inside one (exporters put keys
//! in a `data` container: Windows, OpenSSL, Java) is decrypted by OpenSSL with a count this
//! check cannot see. Only a file encrypted with the password certctl uses for it (none: the
//! empty password) gets that far.
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
pub(crate) const MAX_ITERATIONS: u64 = 10_000_000;

/// Largest scrypt work `N·r·p` accepted (2^24: `N` = 2^20 with `r` = 8, `p` = 2, or the
/// usual `N` = 2^14..2^17, `r` = 8, `p` = 1 with room to spare).
pub(crate) const MAX_SCRYPT_WORK: u64 = 1 << 24;

/// Deepest nesting of `safeContentsBag`s walked (real files have none).
pub(crate) const MAX_NESTING: usize = 8;

/// Most ASN.1 elements walked in one file (a PFX with a key and a chain of ten certificates
/// has a few hundred).
pub(crate) const MAX_ELEMENTS: usize = 100_000;

/// Why a PKCS#12 file is refused before it is opened. Messages name the count and where it
/// is, never the path (the caller adds it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Pkcs12GuardError {
    /// An iteration count above [`MAX_ITERATIONS`].
    #[error("{kind} iteration count {count} above the limit {limit} (in {place}): the PKCS#12 file is not opened, deriving its keys would keep a CPU busy for minutes")]
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
    #[error("scrypt work N·r·p = {work} above the limit {limit} (in {place}): the PKCS#12 file is not opened, deriving its keys would keep a CPU busy for minutes")]
    ScryptTooCostly {
        /// `N·r·p` in decimal.
        work: String,
        limit: u64,
        place: String,
    },
    /// More nested bags or elements than the walk allows.
    #[error("the PKCS#12 structure is too large or too deeply nested to check ({0}): the file is not opened")]
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
pub(crate) fn check(der: &[u8]) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use openssl::nid::Nid;
    use openssl::pkcs12::Pkcs12;
    use openssl::stack::Stack;
    use openssl::x509::X509;

    use super::*;
    use crate::certs::x509::testutil::{pki, TestPki};

    const KEY_MARKER: u32 = 1111;
    const MAC_MARKER: u32 = 1234;

    /// A PFX with the leaf, its key and the CA, built with the marker counts.
    fn pfx(pki: &TestPki, legacy: bool) -> Vec<u8> {
        let mut ca = Stack::new().expect("stack");
        ca.push(X509::from_der(&pki.ca_der).expect("ca"))
            .expect("push");
        let mut b = Pkcs12::builder();
        b.name("gw")
            .pkey(&pki.leaf_key)
            .cert(&X509::from_der(&pki.leaf_der).expect("leaf"))
            .ca(ca)
            .key_iter(KEY_MARKER)
            .mac_iter(MAC_MARKER);
        if legacy {
            b.key_algorithm(Nid::PBE_WITHSHA1AND3_KEY_TRIPLEDES_CBC)
                .cert_algorithm(Nid::PBE_WITHSHA1AND3_KEY_TRIPLEDES_CBC);
        }
        b.build2("pw").expect("pkcs12").to_der().expect("der")
    }

    fn header(out: &mut Vec<u8>, any: &Any<'_>, constructed: bool) {
        let class = any.class() as u8;
        let tag = u8::try_from(any.tag().0).expect("low tag");
        out.push(class << 6 | u8::from(constructed) << 5 | tag);
    }

    fn length(out: &mut Vec<u8>, len: usize) {
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let b = (len as u32).to_be_bytes();
            let skip = b.iter().take_while(|&&x| x == 0).count();
            out.push(0x80 | (4 - skip) as u8);
            out.extend_from_slice(&b[skip..]);
        }
    }

    /// Re-encodes DER with every INTEGER of value `from` set to the big-endian `to`, inside
    /// OCTET STRINGs holding DER too.
    fn patch(der: &[u8], from: u32, to: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = der;
        while !rest.is_empty() {
            let (next, any) = Any::from_ber(rest).expect("DER");
            rest = next;
            let holds_der = any.tag() == Tag::OctetString
                && any.data.first() == Some(&0x30)
                && Any::from_ber(any.data).is_ok_and(|(r, _)| r.is_empty());
            let content = if any.header.is_constructed() || holds_der {
                patch(any.data, from, to)
            } else if any.tag() == Tag::Integer
                && BigUint::from_bytes_be(any.data) == BigUint::from(from)
            {
                to.to_vec()
            } else {
                any.data.to_vec()
            };
            header(&mut out, &any, any.header.is_constructed());
            length(&mut out, content.len());
            out.extend_from_slice(&content);
        }
        out
    }

    /// The same PFX in BER as Bouncy Castle writes it: indefinite lengths and OCTET STRINGs
    /// cut into segments, the encapsulated bytes (which the MAC covers) unchanged.
    fn to_ber(der: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = der;
        while !rest.is_empty() {
            let (next, any) = Any::from_ber(rest).expect("DER");
            rest = next;
            if any.header.is_constructed() {
                header(&mut out, &any, true);
                out.push(0x80);
                out.extend(to_ber(any.data));
                out.extend([0, 0]);
            } else if any.tag() == Tag::OctetString && any.data.len() > 64 {
                header(&mut out, &any, true);
                out.push(0x80);
                for segment in any.data.chunks(64) {
                    out.push(0x04);
                    length(&mut out, segment.len());
                    out.extend_from_slice(segment);
                }
                out.extend([0, 0]);
            } else {
                header(&mut out, &any, false);
                length(&mut out, any.data.len());
                out.extend_from_slice(any.data);
            }
        }
        out
    }

    fn opens(der: &[u8]) -> bool {
        crate::certs::openssl_setup::ensure_legacy_provider();
        Pkcs12::from_der(der).and_then(|p| p.parse2("pw")).is_ok()
    }

    #[test]
    fn files_as_openssl_writes_them_pass_in_der_and_ber() {
        let pki = pki();
        for legacy in [false, true] {
            let der = pfx(&pki, legacy);
            assert_eq!(check(&der), Ok(()));
            let ber = to_ber(&der);
            assert_ne!(ber, der);
            assert!(opens(&ber), "OpenSSL reads the BER form");
            assert_eq!(check(&ber), Ok(()), "legacy: {legacy}");
        }
    }

    #[test]
    fn counts_above_the_limit_are_refused_where_they_are() {
        let pki = pki();
        let at_limit = 10_000_000u32.to_be_bytes();
        let above = 10_000_001u32.to_be_bytes();
        let refused = |der: &[u8]| match check(der) {
            Err(Pkcs12GuardError::TooManyIterations {
                kind, count, place, ..
            }) => (kind, count, place),
            other => panic!("expected TooManyIterations, got {other:?}"),
        };

        let der = pfx(&pki, false);
        assert_eq!(check(&patch(&der, MAC_MARKER, &at_limit)), Ok(()));
        assert_eq!(check(&patch(&der, KEY_MARKER, &at_limit)), Ok(()));
        let mac = patch(&der, MAC_MARKER, &above);
        assert_eq!(
            refused(&mac),
            ("PKCS#12 MAC", "10000001".into(), "the MAC".into())
        );
        assert_eq!(refused(&to_ber(&mac)).1, "10000001", "also in BER");
        let (kind, count, place) = refused(&patch(&der, KEY_MARKER, &above));
        assert_eq!((kind, count.as_str()), ("PBKDF2", "10000001"));
        assert_eq!(
            place, "encrypted container #1",
            "the certificates come first"
        );

        let legacy = pfx(&pki, true);
        let (kind, _, place) = refused(&patch(&legacy, KEY_MARKER, &above));
        assert_eq!(
            (kind, place.as_str()),
            ("PKCS#12 PBE", "encrypted container #1")
        );

        // A count wider than 64 bits is named in full.
        let wide = [0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        let (_, count, _) = refused(&patch(&der, MAC_MARKER, &wide));
        assert_eq!(count, "2361183241434822606847");
        let err = check(&patch(&der, MAC_MARKER, &wide)).expect_err("refused");
        assert!(
            err.to_string().starts_with(
                "PKCS#12 MAC iteration count 2361183241434822606847 above the limit 10000000"
            ),
            "{err}"
        );
        // A negative count makes OpenSSL run one iteration: nothing to refuse.
        assert_eq!(check(&patch(&der, MAC_MARKER, &[0x80, 0, 0, 0])), Ok(()));
    }

    /// A SafeBag `safeContentsBag` holding `inner` (a SafeContents).
    fn nest(inner: Vec<u8>) -> Vec<u8> {
        let tlv = |tag: u8, content: &[u8]| {
            let mut v = vec![tag];
            length(&mut v, content.len());
            v.extend_from_slice(content);
            v
        };
        // OID 1.2.840.113549.1.12.10.1.6
        let oid = [
            0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x0a, 0x01, 0x06,
        ];
        let mut bag = tlv(0x06, &oid);
        bag.extend(tlv(0xa0, &inner));
        tlv(0x30, &tlv(0x30, &bag))
    }

    /// A PFX without a MAC whose one `data` container holds `contents`.
    fn pfx_with_contents(contents: &[u8]) -> Vec<u8> {
        let tlv = |tag: u8, content: &[u8]| {
            let mut v = vec![tag];
            length(&mut v, content.len());
            v.extend_from_slice(content);
            v
        };
        let data_oid = tlv(
            0x06,
            &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01],
        );
        let content_info = |octets: &[u8]| {
            let mut ci = data_oid.clone();
            ci.extend(tlv(0xa0, &tlv(0x04, octets)));
            tlv(0x30, &ci)
        };
        let auth_safe = content_info(&tlv(0x30, &content_info(contents)));
        let mut pfx = tlv(0x02, &[3]);
        pfx.extend(auth_safe);
        tlv(0x30, &pfx)
    }

    #[test]
    fn nesting_and_garbage_are_refused_without_panicking() {
        let mut contents = vec![0x30, 0x00];
        for _ in 0..=MAX_NESTING + 1 {
            contents = nest(contents);
        }
        assert!(matches!(
            check(&pfx_with_contents(&contents)),
            Err(Pkcs12GuardError::TooComplex(_))
        ));
        let mut ok = vec![0x30, 0x00];
        for _ in 0..MAX_NESTING {
            ok = nest(ok);
        }
        assert_eq!(check(&pfx_with_contents(&ok)), Ok(()));
        // Many elements: bounded too.
        let many: Vec<u8> = std::iter::repeat_n([0x05, 0x00], MAX_ELEMENTS)
            .flatten()
            .collect();
        let mut seq = vec![0x30];
        length(&mut seq, many.len());
        seq.extend(many);
        assert!(matches!(
            check(&pfx_with_contents(&seq)),
            Err(Pkcs12GuardError::TooComplex(_))
        ));

        let der = pfx(&pki(), false);
        for cut in [0, 1, 2, 10, der.len() / 2, der.len() - 1] {
            assert!(
                matches!(check(&der[..cut]), Err(Pkcs12GuardError::Malformed(_))),
                "cut at {cut}"
            );
        }
        // Deeply nested indefinite lengths stop at asn1-rs's recursion limit.
        let mut bomb = vec![0x30, 0x03, 0x02, 0x01, 0x03];
        bomb.extend(std::iter::repeat_n([0x30, 0x80], 10_000).flatten());
        assert!(check(&bomb).is_err());
    }
}
