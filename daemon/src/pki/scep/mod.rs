//! SCEP (RFC 8894) enrollment and renewal with an outside CA (AD CS through NDES, an MDM or
//! DLP enrollment service), as `[[scep]]` blocks in certd.toml configure it.
//!
//! One enrollment ([`Client::enroll`]):
//! 1. **GetCACert**: the CA certificate (a single DER certificate, or a degenerate PKCS#7
//!    certs-only answer with the CA and RA certificates). Its SHA-256 must be the pinned
//!    `ca_fingerprint` **before anything else is sent**; an RA certificate is believed only
//!    when the pinned CA signed it.
//! 2. **GetCACaps**: `POSTPKIOperation`, `SHA-256`, `AES`, `Renewal` decide POST or GET,
//!    SHA-256 or SHA-1, AES-128 or 3DES, RenewalReq or PKCSReq.
//! 3. **PKCSReq** (a CSR with the challenge password, signed with a self-signed certificate
//!    of the new key) or **RenewalReq** (signed with the current certificate and key, when
//!    offered and the current key is RSA), encrypted to the RA (or CA) certificate.
//! 4. The **CertRep**: believed only when signed by the RA/CA certificate and answering our
//!    transactionID and nonce ([`message::parse_reply`]). SUCCESS: the certificate is taken
//!    from the envelope; FAILURE: the failInfo in words ([`ScepError::Refused`]); PENDING:
//!    **CertPoll** with backoff from `poll_interval`, for at most `poll_timeout`; still
//!    pending then, [`Outcome::Pending`], and the next attempt resumes with CertPoll.
//!
//! SCEP needs RSA: the CertRep is encrypted to the requester's certificate, so the new key
//! of a SCEP enrollment is RSA. The challenge password is a secret file (0600, never logged).
//! Nothing here touches the store: the caller (the renewal's CSR workflow) gets the
//! certificate and completes the workflow with it.

pub(crate) mod admin;
pub(crate) mod http;
pub(crate) mod message;
pub(crate) mod renew;

use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

use crate::config::sections::ScepConfig;
use message::{Algorithms, FailInfo, MessageType, PkiStatus, Signer};

/// The deadline of one HTTP exchange.
pub(crate) const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_POLL_WAIT: Duration = Duration::from_secs(600);

/// Why an enrollment did not return a certificate, naming the server.
#[derive(Debug, thiserror::Error)]
#[error("SCEP server `{server}`: {failure}")]
pub struct ScepError {
    /// The `[[scep]]` block's `name` in certd.toml.
    pub server: String,
    /// What went wrong with it.
    pub failure: ScepFailure,
}

/// What went wrong with a SCEP server.
#[derive(Debug, thiserror::Error)]
pub enum ScepFailure {
    #[error("{url}: {cause}")]
    Http { url: String, cause: String },
    #[error(
        "the CA certificate's SHA-256 is {actual}, but ca_fingerprint pins {pinned}; refused before sending anything (check the CA, then fix ca_fingerprint)"
    )]
    Fingerprint { pinned: String, actual: String },
    #[error("answered {}: {}{}", info.map_or_else(|| format!("FAILURE (failInfo {})", code.as_deref().unwrap_or("absent")), |i| i.as_str().to_string()), info.map_or("refused", |i| i.meaning()), text.as_deref().map(|t| format!(" ({t})")).unwrap_or_default())]
    Refused {
        info: Option<FailInfo>,
        code: Option<String>,
        text: Option<String>,
    },
    #[error(transparent)]
    Message(#[from] message::MessageError),
    #[error("{0}")]
    Invalid(String),
    #[error("challenge_file {}: {cause}", path.display())]
    Challenge { path: PathBuf, cause: String },
}

/// The server's capabilities (GetCACaps), case-insensitive keywords.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Caps(Vec<String>);

impl Caps {
    pub(crate) fn parse(text: &str) -> Caps {
        Caps(
            text.split(['\n', '\r', ' ', '\t'])
                .filter(|s| !s.is_empty())
                .map(|s| s.to_ascii_lowercase())
                .collect(),
        )
    }
    pub(crate) fn has(&self, cap: &str) -> bool {
        self.0.iter().any(|c| c.eq_ignore_ascii_case(cap))
    }
    pub(crate) fn algorithms(&self) -> Algorithms {
        Algorithms {
            sha256: self.has("SHA-256") || self.has("SCEPStandard"),
            aes: self.has("AES") || self.has("SCEPStandard"),
        }
    }
    pub(crate) fn post(&self) -> bool {
        self.has("POSTPKIOperation") || self.has("SCEPStandard")
    }
    pub(crate) fn renewal(&self) -> bool {
        self.has("Renewal")
    }
}

/// The certificates GetCACert returned, once the pin matched.
#[derive(Debug, Clone)]
pub(crate) struct CaCerts {
    /// The pinned CA certificate.
    pub ca: X509,
    /// Who the request is encrypted to: an RA certificate the CA issued, or the CA.
    pub recipient: X509,
    /// Who may sign a CertRep: the CA and the RA certificates it issued.
    pub signers: Vec<X509>,
}

/// What an enrollment asks for.
pub(crate) struct Enrollment<'a> {
    /// The new key (RSA).
    pub key: &'a PKey<Private>,
    /// The CSR's subject and SANs.
    pub params: rcgen::CertificateParams,
    /// The current certificate and key, for a RenewalReq.
    pub current: Option<(&'a X509, &'a PKey<Private>)>,
    /// A request for this key was answered PENDING before: poll for it (CertPoll) instead
    /// of sending a new one.
    pub resume: bool,
}

/// What an enrollment came to.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    Issued(Enrolled),
    /// Still PENDING after `poll_timeout` of polling: resume later with
    /// [`Enrollment::resume`] (CertPoll for the same transaction).
    Pending {
        transaction_id: String,
        waited: Duration,
    },
}

/// The issued certificate and how it was asked for.
#[derive(Debug, Clone)]
pub(crate) struct Enrolled {
    pub cert: X509,
    /// The other certificates of the answer (the chain), if any.
    pub chain: Vec<X509>,
    /// Whether it was a RenewalReq (else PKCSReq).
    pub renewal: bool,
    pub transaction_id: String,
}

/// A SCEP client for one `[[scep]]` block.
pub(crate) struct Client<'a> {
    config: &'a ScepConfig,
    /// Called before each wait while pending (tests, and the log).
    sleep: Box<dyn Fn(Duration) + 'a>,
}

/// `aa:bb:...` (lower case) of a fingerprint.
pub(crate) fn colon_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl<'a> Client<'a> {
    pub(crate) fn new(config: &'a ScepConfig) -> Client<'a> {
        Client {
            config,
            sleep: Box::new(thread::sleep),
        }
    }

    #[cfg(test)]
    /// The same client with another way to wait (tests).
    pub(crate) fn with_sleep(mut self, sleep: impl Fn(Duration) + 'a) -> Client<'a> {
        self.sleep = Box::new(sleep);
        self
    }

    fn fail(&self, failure: ScepFailure) -> ScepError {
        ScepError {
            server: self.config.name.clone(),
            failure,
        }
    }

    fn http_err(&self, url: &url::Url) -> impl Fn(String) -> ScepError + '_ {
        let url = redacted(url);
        move |cause| {
            self.fail(ScepFailure::Http {
                url: url.clone(),
                cause,
            })
        }
    }

    fn invalid(&self, cause: impl Into<String>) -> ScepError {
        self.fail(ScepFailure::Invalid(cause.into()))
    }

    fn msg_err(&self) -> impl Fn(message::MessageError) -> ScepError + '_ {
        move |e| self.fail(ScepFailure::Message(e))
    }

    fn operation_url(&self, operation: &str, message: Option<&str>) -> url::Url {
        let mut url = self.config.url.clone();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("operation", operation);
            if let Some(m) = message {
                q.append_pair("message", m);
            }
        }
        url
    }

    fn get(&self, operation: &str, message: Option<&str>) -> Result<http::Answer, ScepError> {
        let url = self.operation_url(operation, message);
        http::exchange(&url, None, self.config.ca_file.as_deref(), EXCHANGE_TIMEOUT)
            .map_err(self.http_err(&url))
    }

    /// GetCACert, checked against the pin. Nothing else is sent before this returns `Ok`.
    pub(crate) fn ca_certs(&self) -> Result<CaCerts, ScepError> {
        let answer = self.get("GetCACert", Some(&self.config.name))?;
        let certs = match X509::from_der(&answer.body) {
            Ok(cert) => vec![cert],
            Err(_) => message::certs_only(&answer.body).map_err(self.msg_err())?,
        };
        if certs.is_empty() {
            return Err(self.invalid("GetCACert returned no certificate"));
        }
        let fingerprint = |c: &X509| -> Result<Vec<u8>, ScepError> {
            c.digest(openssl::hash::MessageDigest::sha256())
                .map(|d| d.to_vec())
                .map_err(|e| self.invalid(e.to_string()))
        };
        let mut ca = None;
        let mut seen = Vec::new();
        for cert in &certs {
            let fp = fingerprint(cert)?;
            if fp == self.config.ca_fingerprint {
                ca = Some(cert.clone());
            }
            seen.push(colon_hex(&fp));
        }
        let Some(ca) = ca else {
            return Err(self.fail(ScepFailure::Fingerprint {
                pinned: colon_hex(&self.config.ca_fingerprint),
                actual: seen.join(", "),
            }));
        };
        let ca_key = ca.public_key().map_err(|e| self.invalid(e.to_string()))?;
        // RA certificates: issued by the pinned CA (their signature verifies with its key).
        let ras: Vec<X509> = certs
            .iter()
            .filter(|c| {
                fingerprint(c).ok().as_deref() != Some(&self.config.ca_fingerprint[..])
                    && c.verify(&ca_key).unwrap_or(false)
            })
            .cloned()
            .collect();
        let encipher = |c: &&X509| {
            let der = c.to_der().unwrap_or_default();
            x509_parser::parse_x509_certificate(&der).is_ok_and(|(_, parsed)| {
                matches!(parsed.key_usage(), Ok(Some(ku)) if ku.value.key_encipherment())
            })
        };
        let recipient = ras
            .iter()
            .find(encipher)
            .or_else(|| ras.first())
            .cloned()
            .unwrap_or_else(|| ca.clone());
        let mut signers = ras;
        signers.push(ca.clone());
        Ok(CaCerts {
            ca,
            recipient,
            signers,
        })
    }

    /// GetCACaps (an empty list when the server answers with nothing).
    pub(crate) fn ca_caps(&self) -> Result<Caps, ScepError> {
        let answer = self.get("GetCACaps", Some(&self.config.name))?;
        Ok(Caps::parse(&String::from_utf8_lossy(&answer.body)))
    }

    fn challenge(&self) -> Result<String, ScepError> {
        let path = &self.config.challenge_file;
        let fail = |cause: String| {
            self.fail(ScepFailure::Challenge {
                path: path.clone(),
                cause,
            })
        };
        let bytes = crate::files::read::read_private_file(path).map_err(|e| fail(e.to_string()))?;
        let text = String::from_utf8(bytes).map_err(|_| fail("not UTF-8".into()))?;
        let password = text.trim_end_matches(['\r', '\n']);
        if password.is_empty() || password.contains(['\r', '\n']) {
            return Err(fail("holds no password, or more than one line".into()));
        }
        Ok(password.to_string())
    }

    /// Sends one pkiMessage and returns the raw CertRep.
    fn pki_operation(&self, caps: &Caps, der: &[u8]) -> Result<Vec<u8>, ScepError> {
        let answer = if caps.post() {
            let url = self.operation_url("PKIOperation", None);
            http::exchange(
                &url,
                Some(der),
                self.config.ca_file.as_deref(),
                EXCHANGE_TIMEOUT,
            )
            .map_err(self.http_err(&url))?
        } else {
            self.get("PKIOperation", Some(&openssl::base64::encode_block(der)))?
        };
        Ok(answer.body)
    }

    /// Enrolls (or renews): the issued certificate, or PENDING after polling
    /// `poll_timeout`.
    pub(crate) fn enroll(&self, req: &Enrollment<'_>) -> Result<Outcome, ScepError> {
        let cas = self.ca_certs()?;
        let caps = self.ca_caps()?;
        let algs = caps.algorithms();
        if req.key.rsa().is_err() {
            return Err(self.invalid("SCEP needs an RSA key (the answer is encrypted to it)"));
        }
        let key_pair =
            crate::pki::ca::rcgen_key(req.key).map_err(|e| self.invalid(e.to_string()))?;
        let self_signed = req
            .params
            .clone()
            .self_signed(&key_pair)
            .map_err(|e| self.invalid(format!("cannot make the request's certificate: {e}")))
            .and_then(|c| X509::from_der(c.der()).map_err(|e| self.invalid(e.to_string())))?;
        let renewal = caps.renewal() && req.current.is_some_and(|(_, key)| key.rsa().is_ok());
        let (kind, signer) = match (renewal, req.current) {
            (true, Some((cert, key))) => (MessageType::RenewalReq, Signer { cert, key }),
            _ => (
                MessageType::PkcsReq,
                Signer {
                    cert: &self_signed,
                    key: req.key,
                },
            ),
        };
        // RFC 8894 §3.2.1.1: the same transactionID for the same key, so a retry after a
        // lost answer is the same transaction.
        let transaction_id = req
            .key
            .public_key_to_der()
            .and_then(|spki| openssl::hash::hash(openssl::hash::MessageDigest::sha256(), &spki))
            .map(|h| hex::encode(&h[..]))
            .map_err(|e| self.invalid(e.to_string()))?;
        let poll = || {
            message::issuer_and_subject(&cas.ca, &self_signed)
                .and_then(|content| {
                    message::request(
                        MessageType::CertPoll,
                        &content,
                        &cas.recipient,
                        &signer,
                        algs,
                        &transaction_id,
                    )
                })
                .map_err(self.msg_err())
        };
        let mut sent = if req.resume {
            poll()?
        } else {
            let password = self.challenge()?;
            let attr = rcgen::Attribute {
                oid: message::CHALLENGE_PASSWORD,
                values: message::challenge_attribute(&password).map_err(self.msg_err())?,
            };
            let csr = req
                .params
                .serialize_request_with_attributes(&key_pair, vec![attr])
                .map_err(|e| self.invalid(format!("cannot make the CSR: {e}")))?;
            message::request(
                kind,
                csr.der(),
                &cas.recipient,
                &signer,
                algs,
                &transaction_id,
            )
            .map_err(self.msg_err())?
        };
        let started = Instant::now();
        let mut wait = self.config.poll_interval.max(Duration::from_secs(1));
        loop {
            let answer = self.pki_operation(&caps, &sent.der)?;
            match message::parse_reply(&answer, &sent, &cas.signers).map_err(self.msg_err())? {
                PkiStatus::Success { envelope } => {
                    let certs =
                        message::open_envelope(&envelope, &signer).map_err(self.msg_err())?;
                    let ours = req.key.public_key_to_der().unwrap_or_default();
                    let (mine, chain): (Vec<X509>, Vec<X509>) = certs.into_iter().partition(|c| {
                        c.public_key()
                            .and_then(|k| k.public_key_to_der())
                            .is_ok_and(|k| k == ours)
                    });
                    let cert = mine.into_iter().next().ok_or_else(|| {
                        self.invalid("the CertRep holds no certificate for the request's key")
                    })?;
                    return Ok(Outcome::Issued(Enrolled {
                        cert,
                        chain,
                        renewal: kind == MessageType::RenewalReq,
                        transaction_id,
                    }));
                }
                PkiStatus::Failure { info, code, text } => {
                    return Err(self.fail(ScepFailure::Refused { info, code, text }))
                }
                PkiStatus::Pending => {
                    let waited = started.elapsed();
                    if waited + wait > self.config.poll_timeout {
                        return Ok(Outcome::Pending {
                            transaction_id,
                            waited,
                        });
                    }
                    tracing::info!(
                        server = %self.config.name,
                        transaction = %transaction_id,
                        "SCEP request pending; polling again in {}s",
                        wait.as_secs()
                    );
                    (self.sleep)(wait);
                    wait = (wait * 2).min(MAX_POLL_WAIT);
                    sent = poll()?;
                }
            }
        }
    }
}

/// The URL as shown in errors: no user info, no query.
fn redacted(url: &url::Url) -> String {
    let mut u = url.clone();
    let _ = u.set_password(None);
    let _ = u.set_username("");
    u.set_query(None);
    u.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::sections::parse_fingerprint;

    #[test]
    fn caps_choose_the_algorithms() {
        let caps = Caps::parse("Renewal\nSHA-1\nSHA-256\nAES\nDES3\nPOSTPKIOperation\n");
        assert!(caps.renewal() && caps.post());
        assert_eq!(
            caps.algorithms(),
            Algorithms {
                sha256: true,
                aes: true
            }
        );
        let old = Caps::parse("");
        assert!(!old.renewal() && !old.post());
        assert_eq!(
            old.algorithms(),
            Algorithms {
                sha256: false,
                aes: false
            }
        );
    }

    #[test]
    fn fingerprints() {
        let hex64 = "4f2b13aa9c0d517e88c25a19e46b03d72190fe4c6ab835127fe09d42c61b58a3";
        let fp = parse_fingerprint(hex64).unwrap();
        assert_eq!(parse_fingerprint(&colon_hex(&fp)), Some(fp));
        assert_eq!(parse_fingerprint(&hex64.to_uppercase()), Some(fp));
        assert_eq!(parse_fingerprint(&hex64[2..]), None);
        assert_eq!(parse_fingerprint("zz"), None);
    }

    #[test]
    fn refusals_read_in_words() {
        let e = ScepError {
            server: "corp".into(),
            failure: ScepFailure::Refused {
                info: FailInfo::from_code("2"),
                code: Some("2".into()),
                text: None,
            },
        };
        assert_eq!(
            e.to_string(),
            "SCEP server `corp`: answered badRequest: transaction not permitted or supported (a wrong or used challenge password?)"
        );
    }

    /// A SCEP server in a thread: GetCACert, GetCACaps, and PKIOperation answered PENDING
    /// until the `pending`-th message, then SUCCESS with a certificate for the CSR's key.
    mod fake {
        use std::io::{Read, Write};
        use std::net::TcpListener;
        use std::sync::{Arc, Mutex};

        use cms::content_info::ContentInfo;
        use cms::signed_data::SignedData;
        use der::{Decode, Encode};
        use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
        use openssl::pkey::{PKey, Private, Public};
        use openssl::stack::Stack;
        use openssl::x509::store::X509StoreBuilder;
        use openssl::x509::X509;

        use super::super::message::tests::{certs_only_der, party};
        use super::super::message::{self, Algorithms, MessageType, Signer};

        pub(super) struct Fake {
            pub url: String,
            pub ca: X509,
            /// The messageType of every PKIOperation, in order.
            pub seen: Arc<Mutex<Vec<String>>>,
        }

        fn attr(data: &SignedData, oid: const_oid::ObjectIdentifier) -> Vec<u8> {
            let attrs = data
                .signer_infos
                .0
                .get(0)
                .unwrap()
                .signed_attrs
                .as_ref()
                .unwrap();
            let any = attrs
                .iter()
                .find(|a| a.oid == oid)
                .unwrap()
                .values
                .get(0)
                .unwrap();
            any.value().to_vec()
        }

        pub(super) fn start(pending: usize) -> Fake {
            let (ca_key, ca) = party("fake-scep-ca");
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let url = format!("http://{}/scep", listener.local_addr().unwrap());
            let seen = Arc::new(Mutex::new(Vec::new()));
            let (ca2, seen2) = (ca.clone(), seen.clone());
            std::thread::spawn(move || {
                let mut csr_key: Option<PKey<Public>> = None;
                for stream in listener.incoming() {
                    let Ok(mut stream) = stream else { return };
                    let mut raw = Vec::new();
                    let mut buf = [0u8; 65536];
                    // Head, then Content-Length bytes of body.
                    let body = loop {
                        let n = stream.read(&mut buf).unwrap_or(0);
                        if n == 0 {
                            break Vec::new();
                        }
                        raw.extend_from_slice(&buf[..n]);
                        if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&raw[..at]).to_lowercase();
                            let len = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .map_or(0, |v| v.trim().parse().unwrap());
                            while raw.len() < at + 4 + len {
                                let n = stream.read(&mut buf).unwrap();
                                raw.extend_from_slice(&buf[..n]);
                            }
                            break raw[at + 4..].to_vec();
                        }
                    };
                    let head = String::from_utf8_lossy(&raw).to_string();
                    let reply: Vec<u8> = if head.contains("operation=GetCACert") {
                        ca2.to_der().unwrap()
                    } else if head.contains("operation=GetCACaps") {
                        b"Renewal\nSHA-256\nAES\nPOSTPKIOperation\n".to_vec()
                    } else {
                        let p7 = Pkcs7::from_der(&body).unwrap();
                        let mut envelope = Vec::new();
                        let store = X509StoreBuilder::new().unwrap().build();
                        p7.verify(
                            &Stack::new().unwrap(),
                            &store,
                            None,
                            Some(&mut envelope),
                            Pkcs7Flags::NOVERIFY,
                        )
                        .unwrap();
                        let inner = Pkcs7::from_der(&envelope)
                            .unwrap()
                            .decrypt(&ca_key, &ca2, Pkcs7Flags::empty())
                            .unwrap();
                        let info = ContentInfo::from_der(&body).unwrap();
                        let data: SignedData = info.content.decode_as().unwrap();
                        let kind = String::from_utf8(attr(&data, message::MESSAGE_TYPE)).unwrap();
                        let tx = String::from_utf8(attr(&data, message::TRANSACTION_ID)).unwrap();
                        let nonce = attr(&data, message::SENDER_NONCE);
                        let signer_cert = data
                            .certificates
                            .as_ref()
                            .and_then(|c| c.0.iter().next())
                            .map(|c| match c {
                                cms::cert::CertificateChoices::Certificate(c) => {
                                    X509::from_der(&c.to_der().unwrap()).unwrap()
                                }
                                _ => panic!("not a certificate"),
                            })
                            .unwrap();
                        if kind == "19" {
                            let csr = openssl::x509::X509Req::from_der(&inner).unwrap();
                            csr_key = Some(csr.public_key().unwrap());
                        }
                        let count = {
                            let mut s = seen2.lock().unwrap();
                            s.push(kind);
                            s.len()
                        };
                        let algs = Algorithms {
                            sha256: true,
                            aes: true,
                        };
                        let ca_signer = Signer {
                            cert: &ca2,
                            key: &ca_key,
                        };
                        if count < pending {
                            message::signed(
                                MessageType::CertRep,
                                &[],
                                &ca_signer,
                                algs,
                                &tx,
                                &[1; 16],
                                Some(("3", None, &nonce)),
                            )
                            .unwrap()
                        } else {
                            let issued = issue(&ca_key, &ca2, csr_key.as_ref().unwrap());
                            let mut to = Stack::new().unwrap();
                            to.push(signer_cert).unwrap();
                            let env = Pkcs7::encrypt(
                                &to,
                                &certs_only_der(&[&issued]),
                                openssl::symm::Cipher::aes_128_cbc(),
                                Pkcs7Flags::BINARY,
                            )
                            .unwrap()
                            .to_der()
                            .unwrap();
                            message::signed(
                                MessageType::CertRep,
                                &env,
                                &ca_signer,
                                algs,
                                &tx,
                                &[1; 16],
                                Some(("0", None, &nonce)),
                            )
                            .unwrap()
                        }
                    };
                    let _ = stream.write_all(
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", reply.len())
                            .as_bytes(),
                    );
                    let _ = stream.write_all(&reply);
                }
            });
            Fake { url, ca, seen }
        }

        fn issue(ca_key: &PKey<Private>, ca: &X509, key: &PKey<Public>) -> X509 {
            let mut b = X509::builder().unwrap();
            b.set_version(2).unwrap();
            b.set_subject_name(ca.subject_name()).unwrap();
            b.set_issuer_name(ca.subject_name()).unwrap();
            b.set_pubkey(key).unwrap();
            b.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap())
                .unwrap();
            b.set_not_after(&openssl::asn1::Asn1Time::days_from_now(30).unwrap())
                .unwrap();
            let serial = openssl::bn::BigNum::from_u32(7)
                .unwrap()
                .to_asn1_integer()
                .unwrap();
            b.set_serial_number(&serial).unwrap();
            b.sign(ca_key, openssl::hash::MessageDigest::sha256())
                .unwrap();
            b.build()
        }
    }

    fn config_for(fake: &fake::Fake, dir: &std::path::Path, poll_timeout: Duration) -> ScepConfig {
        use std::os::unix::fs::PermissionsExt;
        let challenge_file = dir.join("challenge");
        std::fs::write(&challenge_file, "pw\n").unwrap();
        std::fs::set_permissions(&challenge_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let fp = fake
            .ca
            .digest(openssl::hash::MessageDigest::sha256())
            .unwrap();
        ScepConfig {
            name: "fake".into(),
            url: url::Url::parse(&fake.url).unwrap(),
            challenge_file,
            ca_fingerprint: fp.to_vec().try_into().unwrap(),
            ca_file: None,
            poll_interval: Duration::from_secs(1),
            poll_timeout,
        }
    }

    fn enrollment(key: &PKey<Private>, resume: bool) -> Enrollment<'_> {
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "web1.lab");
        Enrollment {
            key,
            params,
            current: None,
            resume,
        }
    }

    #[test]
    fn a_pending_request_is_polled_with_backoff_until_issued() {
        let fake = fake::start(3);
        let dir = tempfile::tempdir().unwrap();
        let config = config_for(&fake, dir.path(), Duration::from_secs(3600));
        let waits = std::cell::RefCell::new(Vec::new());
        let key = crate::pki::ca::KeyKind::Rsa2048.generate().unwrap();
        let outcome = Client::new(&config)
            .with_sleep(|d| waits.borrow_mut().push(d))
            .enroll(&enrollment(&key, false))
            .unwrap();
        let Outcome::Issued(issued) = outcome else {
            panic!("{outcome:?}")
        };
        assert!(issued.cert.public_key().unwrap().public_eq(&key));
        assert_eq!(*fake.seen.lock().unwrap(), ["19", "20", "20"]);
        assert_eq!(
            *waits.borrow(),
            [Duration::from_secs(1), Duration::from_secs(2)],
            "backoff doubles"
        );
    }

    #[test]
    fn polling_is_bounded_and_resumes_with_certpoll() {
        let fake = fake::start(3);
        let dir = tempfile::tempdir().unwrap();
        // One wait of 1s fits in 1.5s, the next (2s) does not.
        let config = config_for(&fake, dir.path(), Duration::from_millis(1500));
        let key = crate::pki::ca::KeyKind::Rsa2048.generate().unwrap();
        let client = Client::new(&config).with_sleep(|_| {});
        let outcome = client.enroll(&enrollment(&key, false)).unwrap();
        assert!(matches!(outcome, Outcome::Pending { .. }), "{outcome:?}");
        assert_eq!(*fake.seen.lock().unwrap(), ["19", "20"]);
        // The next attempt asks for the same transaction, not again.
        let outcome = client.enroll(&enrollment(&key, true)).unwrap();
        assert!(matches!(outcome, Outcome::Issued(_)), "{outcome:?}");
        assert_eq!(*fake.seen.lock().unwrap(), ["19", "20", "20"]);
    }
}
