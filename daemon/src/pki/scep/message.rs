//! SCEP messages (RFC 8894 §3): the `pkiMessage` a client sends (PKCSReq, RenewalReq,
//! CertPoll) and the CertRep it gets back.
//!
//! A `pkiMessage` is a CMS SignedData whose content is a `pkcsPKIEnvelope` (an EnvelopedData
//! encrypted to the CA's or RA's certificate) and whose signed attributes carry the SCEP
//! fields (messageType, transactionID, senderNonce, ...). The structures are the RustCrypto
//! `cms`/`x509-cert` types, encoded by `der`; the cryptography (RSA signatures, the envelope's
//! RSA key transport with AES or 3DES) is OpenSSL's. Nothing here does I/O.
//!
//! A CertRep is believed only after its signature verifies with one of the certificates
//! GetCACert returned (the pinned CA or an RA it issued), its messageDigest matches its
//! content, and its transactionID and recipientNonce are the ones of the request.

use cms::builder::{SignedDataBuilder, SignerInfoBuilder};
use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::ContentInfo;
use cms::enveloped_data::{RecipientIdentifier, RecipientInfo};
use cms::signed_data::{EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo};
use const_oid::db::rfc5911::{
    DES_EDE_3_CBC as DES_EDE3_CBC, ID_AES_128_CBC as AES_128_CBC, ID_AES_192_CBC as AES_192_CBC,
    ID_AES_256_CBC as AES_256_CBC,
};
use const_oid::db::rfc5911::{ID_DATA, ID_ENVELOPED_DATA, ID_MESSAGE_DIGEST, ID_SIGNED_DATA};
use const_oid::db::rfc5912::{
    ID_SHA_1, ID_SHA_256, ID_SHA_512, SHA_1_WITH_RSA_ENCRYPTION, SHA_256_WITH_RSA_ENCRYPTION,
};
use const_oid::ObjectIdentifier;
use der::asn1::{OctetString, PrintableString, SetOfVec, Utf8StringRef};
use der::{Any, Decode, Encode, Sequence, Tag, Tagged};
use openssl::hash::MessageDigest;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::pkey::{PKey, Private};
use openssl::stack::Stack;
use openssl::symm::Cipher;
use openssl::x509::X509;
use spki::AlgorithmIdentifierOwned;
use x509_cert::attr::Attribute;
use x509_cert::name::Name;

/// SCEP's attribute types (RFC 8894 §3.2.1, arc 2.16.840.1.113733.1.9).
pub(crate) const MESSAGE_TYPE: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("2.16.840.1.113733.1.9.2");
const PKI_STATUS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.113733.1.9.3");
const FAIL_INFO: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.113733.1.9.4");
pub(crate) const SENDER_NONCE: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("2.16.840.1.113733.1.9.5");
const RECIPIENT_NONCE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.113733.1.9.6");
pub(crate) const TRANSACTION_ID: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("2.16.840.1.113733.1.9.7");
const FAIL_INFO_TEXT: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.113733.1.9.24");
/// PKCS#9 challengePassword, in the CSR.
pub(crate) const CHALLENGE_PASSWORD: &[u64] = &[1, 2, 840, 113549, 1, 9, 7];

/// Why a message could not be built or a CertRep was not believed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MessageError {
    #[error("cannot {what}: {cause}")]
    Build { what: &'static str, cause: String },
    #[error("the CertRep is malformed: {0}")]
    Malformed(String),
    #[error("the CertRep's signature does not verify with the CA's or RA's certificate{0}")]
    BadSignature(String),
    #[error("the CertRep answers transaction {got:?}, not ours ({want:?})")]
    TransactionMismatch { want: String, got: String },
    #[error(
        "the CertRep's recipientNonce is not the nonce we sent (a replayed or misrouted answer)"
    )]
    NonceMismatch,
    #[error("cannot decrypt the CertRep's envelope with the request's key: {0}")]
    Decrypt(String),
}

fn build(what: &'static str) -> impl Fn(String) -> MessageError {
    move |cause| MessageError::Build { what, cause }
}

/// The kind of a `pkiMessage` (messageType).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MessageType {
    CertRep,
    RenewalReq,
    PkcsReq,
    CertPoll,
}

impl MessageType {
    fn code(self) -> &'static str {
        match self {
            MessageType::CertRep => "3",
            MessageType::RenewalReq => "17",
            MessageType::PkcsReq => "19",
            MessageType::CertPoll => "20",
        }
    }
}

/// The digest for signatures and the cipher for envelopes, from what GetCACaps offers:
/// SHA-256 and AES-128-CBC when offered, else the RFC's fallback SHA-1 and 3DES.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Algorithms {
    pub sha256: bool,
    pub aes: bool,
}

impl Algorithms {
    fn digest(self) -> MessageDigest {
        if self.sha256 {
            MessageDigest::sha256()
        } else {
            MessageDigest::sha1()
        }
    }
    fn digest_id(self) -> AlgorithmIdentifierOwned {
        AlgorithmIdentifierOwned {
            oid: if self.sha256 { ID_SHA_256 } else { ID_SHA_1 },
            parameters: None,
        }
    }
    fn cipher(self) -> Cipher {
        if self.aes {
            Cipher::aes_128_cbc()
        } else {
            Cipher::des_ede3_cbc()
        }
    }
}

/// failInfo (RFC 8894 §3.2.1.4), reported in words. The variants keep the RFC's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)]
pub enum FailInfo {
    BadAlg,
    BadMessageCheck,
    BadRequest,
    BadTime,
    BadCertId,
}

impl FailInfo {
    pub fn from_code(code: &str) -> Option<FailInfo> {
        Some(match code.trim() {
            "0" => FailInfo::BadAlg,
            "1" => FailInfo::BadMessageCheck,
            "2" => FailInfo::BadRequest,
            "3" => FailInfo::BadTime,
            "4" => FailInfo::BadCertId,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            FailInfo::BadAlg => "badAlg",
            FailInfo::BadMessageCheck => "badMessageCheck",
            FailInfo::BadRequest => "badRequest",
            FailInfo::BadTime => "badTime",
            FailInfo::BadCertId => "badCertId",
        }
    }
    /// What it means, for the admin.
    pub fn meaning(self) -> &'static str {
        match self {
            FailInfo::BadAlg => "unrecognized or unsupported algorithm",
            FailInfo::BadMessageCheck => "the request's signature or integrity check failed",
            FailInfo::BadRequest => {
                "transaction not permitted or supported (a wrong or used challenge password?)"
            }
            FailInfo::BadTime => "the request's time is too far from the server's",
            FailInfo::BadCertId => "no certificate matches the request",
        }
    }
}

/// The outcome a CertRep reports (pkiStatus).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PkiStatus {
    /// The issued certificate and whatever else the server put in the degenerate
    /// certs-only answer (DER), still encrypted to the requester.
    Success {
        envelope: Vec<u8>,
    },
    /// Refused; failInfo (`None` when absent or unknown: then `code` says what it was) and
    /// RFC 8894's optional failInfoText.
    Failure {
        info: Option<FailInfo>,
        code: Option<String>,
        text: Option<String>,
    },
    Pending,
}

/// A request as sent: its bytes and what the answer must match.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub der: Vec<u8>,
    pub transaction_id: String,
    pub sender_nonce: [u8; 16],
}

/// Who signs a request: the self-signed certificate of the new key (PKCSReq), or the
/// current certificate and its key (RenewalReq); the CertRep's envelope is encrypted to it.
pub(crate) struct Signer<'a> {
    pub cert: &'a X509,
    pub key: &'a PKey<Private>,
}

/// Builds a `pkiMessage`: `content` (a CSR, or an IssuerAndSubject for CertPoll) encrypted
/// to `recipient`, signed by `signer` with the SCEP attributes.
pub(crate) fn request(
    kind: MessageType,
    content: &[u8],
    recipient: &X509,
    signer: &Signer<'_>,
    algs: Algorithms,
    transaction_id: &str,
) -> Result<Request, MessageError> {
    let mut recipients = Stack::new().map_err(|e| build("encrypt")(e.to_string()))?;
    recipients
        .push(recipient.clone())
        .map_err(|e| build("encrypt")(e.to_string()))?;
    let envelope = Pkcs7::encrypt(&recipients, content, algs.cipher(), Pkcs7Flags::BINARY)
        .and_then(|p| p.to_der())
        .map_err(|e| build("encrypt the pkcsPKIEnvelope")(e.to_string()))?;
    let mut nonce = [0u8; 16];
    openssl::rand::rand_bytes(&mut nonce).map_err(|e| build("make a nonce")(e.to_string()))?;
    let der = signed(kind, &envelope, signer, algs, transaction_id, &nonce, None)?;
    Ok(Request {
        der,
        transaction_id: transaction_id.to_string(),
        sender_nonce: nonce,
    })
}

/// The SignedData around `envelope` with the SCEP attributes (also used by the tests to
/// play a server: `reply` adds pkiStatus, failInfo and recipientNonce).
pub(crate) fn signed(
    kind: MessageType,
    envelope: &[u8],
    signer: &Signer<'_>,
    algs: Algorithms,
    transaction_id: &str,
    nonce: &[u8; 16],
    reply: Option<(&str, Option<&str>, &[u8])>,
) -> Result<Vec<u8>, MessageError> {
    let fail = build("sign the pkiMessage");
    let cert_der = signer.cert.to_der().map_err(|e| fail(e.to_string()))?;
    let cert = x509_cert::Certificate::from_der(&cert_der).map_err(|e| fail(e.to_string()))?;
    let sid = SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
        issuer: cert.tbs_certificate.issuer.clone(),
        serial_number: cert.tbs_certificate.serial_number.clone(),
    });
    let econtent = if envelope.is_empty() {
        None
    } else {
        Some(
            Any::encode_from(&OctetString::new(envelope).map_err(|e| fail(e.to_string()))?)
                .map_err(|e| fail(e.to_string()))?,
        )
    };
    let content = EncapsulatedContentInfo {
        econtent_type: ID_DATA,
        econtent,
    };
    let rsa = RsaSigner {
        key: signer.key,
        algs,
    };
    let mut info = SignerInfoBuilder::new(&rsa, sid, algs.digest_id(), &content, None)
        .map_err(|e| fail(e.to_string()))?;
    let mut attrs = vec![
        printable(MESSAGE_TYPE, kind.code())?,
        printable(TRANSACTION_ID, transaction_id)?,
        octets(SENDER_NONCE, nonce)?,
    ];
    if let Some((status, fail_info, recipient_nonce)) = reply {
        attrs.push(printable(PKI_STATUS, status)?);
        if let Some(code) = fail_info {
            attrs.push(printable(FAIL_INFO, code)?);
        }
        attrs.push(octets(RECIPIENT_NONCE, recipient_nonce)?);
    }
    for attr in attrs {
        info.add_signed_attribute(attr)
            .map_err(|e| fail(e.to_string()))?;
    }
    let mut data = SignedDataBuilder::new(&content);
    data.add_digest_algorithm(algs.digest_id())
        .and_then(|b| b.add_certificate(CertificateChoices::Certificate(cert)))
        .map_err(|e| fail(e.to_string()))?;
    data.add_signer_info::<RsaSigner<'_>, RsaSignature>(info)
        .map_err(|e| fail(e.to_string()))?;
    data.build()
        .map_err(|e| fail(e.to_string()))?
        .to_der()
        .map_err(|e| fail(e.to_string()))
}

fn attribute(oid: ObjectIdentifier, value: Any) -> Result<Attribute, MessageError> {
    let values =
        SetOfVec::try_from(vec![value]).map_err(|e| build("encode an attribute")(e.to_string()))?;
    Ok(Attribute { oid, values })
}

fn printable(oid: ObjectIdentifier, text: &str) -> Result<Attribute, MessageError> {
    let value = PrintableString::new(text)
        .and_then(|s| Any::encode_from(&s))
        .map_err(|e| build("encode an attribute")(e.to_string()))?;
    attribute(oid, value)
}

fn octets(oid: ObjectIdentifier, bytes: &[u8]) -> Result<Attribute, MessageError> {
    let value = OctetString::new(bytes)
        .and_then(|s| Any::encode_from(&s))
        .map_err(|e| build("encode an attribute")(e.to_string()))?;
    attribute(oid, value)
}

/// The `values` of a CSR's challengePassword attribute (a SET of one DirectoryString:
/// PrintableString when the password allows, else UTF8String).
pub(crate) fn challenge_attribute(password: &str) -> Result<Vec<u8>, MessageError> {
    let fail = build("encode the challenge password");
    let value = match PrintableString::new(password) {
        Ok(p) => Any::encode_from(&p),
        Err(_) => Utf8StringRef::new(password).and_then(|u| Any::encode_from(&u)),
    }
    .map_err(|e| fail(e.to_string()))?;
    SetOfVec::try_from(vec![value])
        .and_then(|set| set.to_der())
        .map_err(|e| fail(e.to_string()))
}

/// CertPoll's content (RFC 8894 §3.3.3): the CA's name and the requested subject.
#[derive(Debug, Clone, PartialEq, Eq, Sequence)]
pub(crate) struct IssuerAndSubject {
    pub issuer: Name,
    pub subject: Name,
}

/// The IssuerAndSubject of a poll for `subject` (DER of a Name) at the CA `ca`.
pub(crate) fn issuer_and_subject(ca: &X509, subject_cert: &X509) -> Result<Vec<u8>, MessageError> {
    let fail = build("encode the CertPoll");
    let name = |c: &X509| -> Result<Name, MessageError> {
        let der = c.to_der().map_err(|e| fail(e.to_string()))?;
        x509_cert::Certificate::from_der(&der)
            .map(|c| c.tbs_certificate.subject)
            .map_err(|e| fail(e.to_string()))
    };
    IssuerAndSubject {
        issuer: name(ca)?,
        subject: name(subject_cert)?,
    }
    .to_der()
    .map_err(|e| fail(e.to_string()))
}

/// RSA PKCS#1 v1.5 signatures by OpenSSL, for `cms`'s SignerInfo builder.
struct RsaSigner<'a> {
    key: &'a PKey<Private>,
    algs: Algorithms,
}

struct RsaSignature(Vec<u8>);

impl spki::SignatureBitStringEncoding for RsaSignature {
    fn to_bitstring(&self) -> der::Result<der::asn1::BitString> {
        der::asn1::BitString::from_bytes(&self.0)
    }
}

impl signature::Keypair for RsaSigner<'_> {
    type VerifyingKey = ();
    fn verifying_key(&self) {}
}

impl spki::DynSignatureAlgorithmIdentifier for RsaSigner<'_> {
    fn signature_algorithm_identifier(&self) -> spki::Result<AlgorithmIdentifierOwned> {
        Ok(AlgorithmIdentifierOwned {
            oid: if self.algs.sha256 {
                SHA_256_WITH_RSA_ENCRYPTION
            } else {
                SHA_1_WITH_RSA_ENCRYPTION
            },
            parameters: Some(Any::null()),
        })
    }
}

impl signature::Signer<RsaSignature> for RsaSigner<'_> {
    fn try_sign(&self, msg: &[u8]) -> Result<RsaSignature, signature::Error> {
        openssl::sign::Signer::new(self.algs.digest(), self.key)
            .and_then(|mut s| s.sign_oneshot_to_vec(msg))
            .map(RsaSignature)
            .map_err(signature::Error::from_source)
    }
}

// ---- the answer ----------------------------------------------------------------------------

/// A CertRep whose signature verified and which answers `request`.
pub(crate) fn parse_reply(
    der: &[u8],
    request: &Request,
    trusted: &[X509],
) -> Result<PkiStatus, MessageError> {
    let bad = |what: &str| MessageError::Malformed(what.to_string());
    let info = ContentInfo::from_der(der).map_err(|e| bad(&format!("not CMS: {e}")))?;
    if info.content_type != ID_SIGNED_DATA {
        return Err(bad("not a SignedData"));
    }
    let data: SignedData = info
        .content
        .decode_as()
        .map_err(|e| bad(&format!("SignedData: {e}")))?;
    let signer = data.signer_infos.0.get(0).ok_or_else(|| bad("no signer"))?;
    let content = match &data.encap_content_info.econtent {
        Some(any) => Some(
            any.decode_as::<OctetString>()
                .map_err(|e| bad(&format!("content: {e}")))?
                .into_bytes(),
        ),
        None => None,
    };
    verify(signer, content.as_deref(), trusted)?;
    let attrs = signer
        .signed_attrs
        .as_ref()
        .ok_or_else(|| bad("no signed attributes"))?;
    let find = |oid: ObjectIdentifier| {
        attrs
            .iter()
            .find(|a| a.oid == oid)
            .and_then(|a| a.values.get(0))
    };
    let text = |oid: ObjectIdentifier| find(oid).and_then(any_text);
    if text(MESSAGE_TYPE).as_deref() != Some(MessageType::CertRep.code()) {
        return Err(bad("messageType is not CertRep"));
    }
    let transaction = text(TRANSACTION_ID).ok_or_else(|| bad("no transactionID"))?;
    if transaction != request.transaction_id {
        return Err(MessageError::TransactionMismatch {
            want: request.transaction_id.clone(),
            got: transaction,
        });
    }
    let nonce = find(RECIPIENT_NONCE)
        .and_then(|a| a.decode_as::<OctetString>().ok())
        .ok_or_else(|| bad("no recipientNonce"))?;
    if nonce.as_bytes() != request.sender_nonce {
        return Err(MessageError::NonceMismatch);
    }
    match text(PKI_STATUS).as_deref() {
        Some("0") => Ok(PkiStatus::Success {
            envelope: content.ok_or_else(|| bad("SUCCESS without content"))?,
        }),
        Some("2") => {
            let code = text(FAIL_INFO);
            Ok(PkiStatus::Failure {
                info: code.as_deref().and_then(FailInfo::from_code),
                code,
                text: text(FAIL_INFO_TEXT)
                    .map(|t| crate::inventory::view::printable(&t).into_owned()),
            })
        }
        Some("3") => Ok(PkiStatus::Pending),
        Some(other) => Err(bad(&format!("unknown pkiStatus {other:?}"))),
        None => Err(bad("no pkiStatus")),
    }
}

/// A string attribute value (PrintableString, UTF8String or IA5String).
fn any_text(any: &Any) -> Option<String> {
    matches!(
        any.tag(),
        Tag::PrintableString | Tag::Utf8String | Tag::Ia5String
    )
    .then(|| String::from_utf8(any.value().to_vec()).ok())
    .flatten()
}

/// The signer's signature over the signed attributes, by one of `trusted`, and the
/// messageDigest attribute over the content.
fn verify(
    signer: &SignerInfo,
    content: Option<&[u8]>,
    trusted: &[X509],
) -> Result<(), MessageError> {
    let bad = |what: String| MessageError::BadSignature(format!(" ({what})"));
    let digest = match signer.digest_alg.oid {
        ID_SHA_1 => MessageDigest::sha1(),
        ID_SHA_256 => MessageDigest::sha256(),
        ID_SHA_512 => MessageDigest::sha512(),
        other => return Err(bad(format!("unsupported digest {other}"))),
    };
    let attrs = signer
        .signed_attrs
        .as_ref()
        .ok_or_else(|| bad("no signed attributes".into()))?;
    if let Some(content) = content {
        let want = openssl::hash::hash(digest, content).map_err(|e| bad(e.to_string()))?;
        let got = attrs
            .iter()
            .find(|a| a.oid == ID_MESSAGE_DIGEST)
            .and_then(|a| a.values.get(0))
            .and_then(|a| a.decode_as::<OctetString>().ok())
            .ok_or_else(|| bad("no messageDigest".into()))?;
        if got.as_bytes() != &want[..] {
            return Err(bad("the messageDigest does not match the content".into()));
        }
    }
    let signed = attrs.to_der().map_err(|e| bad(e.to_string()))?;
    let signature = signer.signature.as_bytes();
    let verified = trusted.iter().any(|cert| {
        cert.public_key()
            .and_then(|key| {
                let mut v = openssl::sign::Verifier::new(digest, &key)?;
                v.verify_oneshot(signature, &signed)
            })
            .unwrap_or(false)
    });
    if verified {
        Ok(())
    } else {
        Err(MessageError::BadSignature(String::new()))
    }
}

/// The certificates of a degenerate certs-only SignedData (DER), in order.
pub(crate) fn certs_only(der: &[u8]) -> Result<Vec<X509>, MessageError> {
    let bad = |what: String| MessageError::Malformed(format!("certs-only PKCS#7: {what}"));
    let info = ContentInfo::from_der(der).map_err(|e| bad(e.to_string()))?;
    if info.content_type != ID_SIGNED_DATA {
        return Err(bad("not a SignedData".into()));
    }
    let data: SignedData = info.content.decode_as().map_err(|e| bad(e.to_string()))?;
    let mut out = Vec::new();
    for choice in data.certificates.iter().flat_map(|set| set.0.iter()) {
        if let CertificateChoices::Certificate(cert) = choice {
            let der = cert.to_der().map_err(|e| bad(e.to_string()))?;
            out.push(X509::from_der(&der).map_err(|e| bad(e.to_string()))?);
        }
    }
    Ok(out)
}

/// Opens a CertRep's envelope with the request's certificate and key: the certificates in it.
///
/// Decrypted here rather than by OpenSSL's PKCS7_decrypt because servers still answer with
/// single DES (micromdm's scepserver does), which OpenSSL 3 keeps in its legacy provider.
/// The envelope protects only the issued certificate, which is public anyway; what makes
/// the answer trustworthy is the CertRep's signature, checked before.
pub(crate) fn open_envelope(
    envelope: &[u8],
    signer: &Signer<'_>,
) -> Result<Vec<X509>, MessageError> {
    let fail = |what: &str| MessageError::Decrypt(what.to_string());
    let info = ContentInfo::from_der(envelope).map_err(|e| fail(&format!("not CMS: {e}")))?;
    if info.content_type != ID_ENVELOPED_DATA {
        return Err(fail("not an EnvelopedData"));
    }
    let data: Envelope = info
        .content
        .decode_as()
        .map_err(|e| fail(&format!("EnvelopedData: {e}")))?;
    let cert_der = signer.cert.to_der().map_err(|e| fail(&e.to_string()))?;
    let cert = x509_cert::Certificate::from_der(&cert_der).map_err(|e| fail(&e.to_string()))?;
    let ours = |rid: &RecipientIdentifier| match rid {
        RecipientIdentifier::IssuerAndSerialNumber(ias) => {
            ias.issuer == cert.tbs_certificate.issuer
                && ias.serial_number == cert.tbs_certificate.serial_number
        }
        RecipientIdentifier::SubjectKeyIdentifier(_) => true,
    };
    let encrypted_key = data
        .recip_infos
        .0
        .iter()
        .find_map(|ri| match ri {
            RecipientInfo::Ktri(k) if ours(&k.rid) => Some(k.enc_key.as_bytes()),
            _ => None,
        })
        .ok_or_else(|| fail("it is not encrypted to the request's certificate"))?;
    let mut decrypter =
        openssl::encrypt::Decrypter::new(signer.key).map_err(|e| fail(&e.to_string()))?;
    decrypter
        .set_rsa_padding(openssl::rsa::Padding::PKCS1)
        .map_err(|e| fail(&e.to_string()))?;
    let mut key = vec![
        0u8;
        decrypter
            .decrypt_len(encrypted_key)
            .map_err(|e| fail(&e.to_string()))?
    ];
    let n = decrypter
        .decrypt(encrypted_key, &mut key)
        .map_err(|e| fail(&e.to_string()))?;
    key.truncate(n);
    let alg = &data.encrypted_content.content_enc_alg;
    let iv = alg
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<OctetString>().ok())
        .ok_or_else(|| fail("the content encryption has no IV"))?;
    let content = data
        .encrypted_content
        .encrypted_content
        .as_ref()
        .ok_or_else(|| fail("no encrypted content"))?;
    let content = content_octets(content).map_err(|e| fail(&format!("encrypted content: {e}")))?;
    let inner = decrypt_cbc(alg.oid, &key, iv.as_bytes(), &content)?;
    certs_only(&inner)
}

/// EnvelopedData as SCEP servers send it (RFC 5652 §6.1, without originatorInfo and
/// unprotectedAttrs, which SCEP does not use), with the encrypted content kept raw: Go's
/// pkcs7 (micromdm's scepserver) writes `[0]` constructed around an OCTET STRING, a BER
/// form that `cms`'s DER-only EncryptedContentInfo refuses.
#[derive(Sequence)]
struct Envelope {
    version: cms::content_info::CmsVersion,
    recip_infos: cms::enveloped_data::RecipientInfos,
    encrypted_content: RawEncryptedContent,
}

#[derive(Sequence)]
struct RawEncryptedContent {
    content_type: ObjectIdentifier,
    content_enc_alg: AlgorithmIdentifierOwned,
    encrypted_content: Option<Any>,
}

/// The octets of `[0] IMPLICIT OCTET STRING`: primitive (DER), or constructed from OCTET
/// STRING segments (BER).
fn content_octets(any: &Any) -> der::Result<Vec<u8>> {
    if any.tag()
        != (Tag::ContextSpecific {
            constructed: any.tag().is_constructed(),
            number: der::TagNumber::N0,
        })
    {
        return Err(der::Error::from(der::ErrorKind::TagUnexpected {
            expected: None,
            actual: any.tag(),
        }));
    }
    if !any.tag().is_constructed() {
        return Ok(any.value().to_vec());
    }
    let mut reader = der::SliceReader::new(any.value())?;
    let mut out = Vec::new();
    while !der::Reader::is_finished(&reader) {
        let segment: OctetString = der::Decode::decode(&mut reader)?;
        out.extend_from_slice(segment.as_bytes());
    }
    Ok(out)
}

const DES_CBC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.7");

/// CBC decryption with PKCS#7 padding for the ciphers SCEP servers use.
fn decrypt_cbc(
    oid: ObjectIdentifier,
    key: &[u8],
    iv: &[u8],
    data: &[u8],
) -> Result<Vec<u8>, MessageError> {
    use cbc::cipher::block_padding::Pkcs7;
    use cbc::cipher::{BlockDecryptMut, KeyIvInit};
    fn run<C: BlockDecryptMut + KeyIvInit>(
        key: &[u8],
        iv: &[u8],
        data: &[u8],
    ) -> Result<Vec<u8>, MessageError> {
        C::new_from_slices(key, iv)
            .map_err(|_| MessageError::Decrypt("wrong key or IV length".into()))?
            .decrypt_padded_vec_mut::<Pkcs7>(data)
            .map_err(|_| MessageError::Decrypt("bad padding (the wrong key?)".into()))
    }
    match oid {
        AES_128_CBC => run::<cbc::Decryptor<aes::Aes128>>(key, iv, data),
        AES_192_CBC => run::<cbc::Decryptor<aes::Aes192>>(key, iv, data),
        AES_256_CBC => run::<cbc::Decryptor<aes::Aes256>>(key, iv, data),
        DES_EDE3_CBC => run::<cbc::Decryptor<des::TdesEde3>>(key, iv, data),
        DES_CBC => run::<cbc::Decryptor<des::Des>>(key, iv, data),
        other => Err(MessageError::Decrypt(format!("unsupported cipher {other}"))),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use openssl::x509::store::X509StoreBuilder;

    /// An RSA key and a self-signed certificate for `cn`.
    pub(crate) fn party(cn: &str) -> (PKey<Private>, X509) {
        let key = crate::pki::ca::KeyKind::Rsa2048.generate().unwrap();
        let pair = crate::pki::ca::rcgen_key(&key).unwrap();
        let params = rcgen::CertificateParams::new(vec![cn.to_string()]).unwrap();
        let cert = params.self_signed(&pair).unwrap();
        (key, X509::from_der(cert.der()).unwrap())
    }

    /// A degenerate certs-only SignedData holding `certs`.
    pub(crate) fn certs_only_der(certs: &[&X509]) -> Vec<u8> {
        let content = EncapsulatedContentInfo {
            econtent_type: ID_DATA,
            econtent: None,
        };
        let mut b = SignedDataBuilder::new(&content);
        for c in certs {
            let cert = x509_cert::Certificate::from_der(&c.to_der().unwrap()).unwrap();
            b.add_certificate(CertificateChoices::Certificate(cert))
                .unwrap();
        }
        b.build().unwrap().to_der().unwrap()
    }

    const ALGS: [Algorithms; 2] = [
        Algorithms {
            sha256: true,
            aes: true,
        },
        // The RFC's fallback: SHA-1 and 3DES.
        Algorithms {
            sha256: false,
            aes: false,
        },
    ];

    /// What a server does with a request: OpenSSL verifies the signature (with the
    /// requester's certificate) and opens the envelope with the CA's key.
    fn server_reads(req: &[u8], client: &X509, ca: (&PKey<Private>, &X509)) -> Vec<u8> {
        let p7 = Pkcs7::from_der(req).unwrap();
        let mut certs = Stack::new().unwrap();
        certs.push(client.clone()).unwrap();
        let store = X509StoreBuilder::new().unwrap().build();
        let mut envelope = Vec::new();
        p7.verify(
            &certs,
            &store,
            None,
            Some(&mut envelope),
            Pkcs7Flags::NOVERIFY | Pkcs7Flags::NOINTERN,
        )
        .expect("OpenSSL verifies the request's signature");
        Pkcs7::from_der(&envelope)
            .unwrap()
            .decrypt(ca.0, ca.1, Pkcs7Flags::empty())
            .expect("the CA opens the envelope")
    }

    #[test]
    fn request_and_certrep_round_trip() {
        let (ca_key, ca) = party("scep-ca");
        let (key, me) = party("web1.lab");
        let (_, issued) = party("issued");
        for algs in ALGS {
            let signer = Signer {
                cert: &me,
                key: &key,
            };
            let req =
                request(MessageType::PkcsReq, b"the CSR", &ca, &signer, algs, "tx-1").unwrap();
            assert_eq!(server_reads(&req.der, &me, (&ca_key, &ca)), b"the CSR");

            // The server's SUCCESS: the certificate in an envelope to the requester.
            let mut to = Stack::new().unwrap();
            to.push(me.clone()).unwrap();
            let inner = certs_only_der(&[&issued, &ca]);
            let envelope = Pkcs7::encrypt(&to, &inner, algs.cipher(), Pkcs7Flags::BINARY)
                .unwrap()
                .to_der()
                .unwrap();
            let ca_signer = Signer {
                cert: &ca,
                key: &ca_key,
            };
            let reply = signed(
                MessageType::CertRep,
                &envelope,
                &ca_signer,
                algs,
                "tx-1",
                &[7; 16],
                Some(("0", None, &req.sender_nonce)),
            )
            .unwrap();
            let PkiStatus::Success { envelope } =
                parse_reply(&reply, &req, std::slice::from_ref(&ca)).unwrap()
            else {
                panic!("not SUCCESS")
            };
            let certs = open_envelope(&envelope, &signer).unwrap();
            assert_eq!(certs.len(), 2);
            assert_eq!(certs[0].to_der().unwrap(), issued.to_der().unwrap());
        }
    }

    fn reply_with(
        status: &str,
        fail_info: Option<&str>,
        tx: &str,
        nonce: &[u8],
    ) -> (Request, Vec<u8>, X509) {
        let (ca_key, ca) = party("scep-ca");
        let (key, me) = party("web1.lab");
        let algs = ALGS[0];
        let signer = Signer {
            cert: &me,
            key: &key,
        };
        let req = request(MessageType::PkcsReq, b"csr", &ca, &signer, algs, "tx-1").unwrap();
        let nonce = if nonce.is_empty() {
            req.sender_nonce.to_vec()
        } else {
            nonce.to_vec()
        };
        let ca_signer = Signer {
            cert: &ca,
            key: &ca_key,
        };
        let reply = signed(
            MessageType::CertRep,
            &[],
            &ca_signer,
            algs,
            tx,
            &[9; 16],
            Some((status, fail_info, &nonce)),
        )
        .unwrap();
        (req, reply, ca)
    }

    #[test]
    fn failure_reports_fail_info() {
        for (code, word) in [
            ("0", "badAlg"),
            ("1", "badMessageCheck"),
            ("2", "badRequest"),
            ("3", "badTime"),
            ("4", "badCertId"),
        ] {
            let (req, reply, ca) = reply_with("2", Some(code), "tx-1", &[]);
            let status = parse_reply(&reply, &req, &[ca]).unwrap();
            let PkiStatus::Failure { info, .. } = status else {
                panic!("{status:?}")
            };
            assert_eq!(info.map(FailInfo::as_str), Some(word));
        }
        let (req, reply, ca) = reply_with("2", Some("99"), "tx-1", &[]);
        assert_eq!(
            parse_reply(&reply, &req, &[ca]).unwrap(),
            PkiStatus::Failure {
                info: None,
                code: Some("99".into()),
                text: None
            }
        );
        let (req, reply, ca) = reply_with("3", None, "tx-1", &[]);
        assert_eq!(
            parse_reply(&reply, &req, &[ca]).unwrap(),
            PkiStatus::Pending
        );
    }

    #[test]
    fn a_certrep_for_another_request_is_not_believed() {
        let (req, reply, ca) = reply_with("0", None, "tx-1", &[0; 16]);
        assert_eq!(
            parse_reply(&reply, &req, &[ca]).unwrap_err(),
            MessageError::NonceMismatch
        );
        let (req, reply, ca) = reply_with("2", Some("2"), "tx-other", &[]);
        assert!(matches!(
            parse_reply(&reply, &req, &[ca]).unwrap_err(),
            MessageError::TransactionMismatch { .. }
        ));
        // Signed by someone else than the CA/RA of GetCACert.
        let (req, reply, _) = reply_with("2", Some("2"), "tx-1", &[]);
        let (_, stranger) = party("scep-ca");
        assert!(matches!(
            parse_reply(&reply, &req, &[stranger]).unwrap_err(),
            MessageError::BadSignature(_)
        ));
        assert!(matches!(
            parse_reply(b"\x30\x03garbage", &req, &[]).unwrap_err(),
            MessageError::Malformed(_)
        ));
    }

    #[test]
    fn certs_only_and_the_ber_envelope() {
        let (_, a) = party("a");
        let (_, b) = party("b");
        let certs = certs_only(&certs_only_der(&[&a, &b])).unwrap();
        assert_eq!(certs.len(), 2);
        // [0] constructed around OCTET STRING segments (BER), as Go's pkcs7 writes it.
        let any = Any::new(
            Tag::ContextSpecific {
                constructed: true,
                number: der::TagNumber::N0,
            },
            [
                OctetString::new(&b"abc"[..]).unwrap().to_der().unwrap(),
                OctetString::new(&b"de"[..]).unwrap().to_der().unwrap(),
            ]
            .concat(),
        )
        .unwrap();
        assert_eq!(content_octets(&any).unwrap(), b"abcde");
        let primitive = Any::new(
            Tag::ContextSpecific {
                constructed: false,
                number: der::TagNumber::N0,
            },
            &b"xyz"[..],
        )
        .unwrap();
        assert_eq!(content_octets(&primitive).unwrap(), b"xyz");
    }

    #[test]
    fn challenge_attribute_encodings() {
        // SET { PrintableString "s3cret" }
        assert_eq!(
            challenge_attribute("s3cret").unwrap(),
            [&[0x31, 8, 0x13, 6][..], b"s3cret"].concat()
        );
        // Not printable: UTF8String.
        assert_eq!(challenge_attribute("p@ss").unwrap()[2], 0x0c);
    }
}
