//! Hostile CRL distribution points (issue 13): `certctl crl fetch` and certd's `[crl]`
//! pass against CRL servers written here on 127.0.0.1, with CAs, certificates and CRLs made
//! by rcgen at test time.
//!
//! - `forgery`: a CRL entry revokes a certificate only when the CRL verifies with the key of
//!   that certificate's actual issuer (the CA whose key verifies the certificate's
//!   signature): a look-alike CA (same DN, same SKI, another key) can neither veto the real
//!   CRL nor forge one, and a certificate of an unknown issuer naming the same URL spoils
//!   nothing for the others.
//! - `network`: hostile URLs (CR/LF, spaces, other schemes) are refused before any
//!   connection, hosts outside `[crl] allow` are not contacted, and a CRL server that holds
//!   its answer does not hold the store: scans through certd go on meanwhile.
//!
//! Build the binaries first (`cargo build --workspace --bins`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use certctl_e2e::daemon::{status_json, Certd, CertdConfig};
use certctl_e2e::*;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CrlDistributionPoint,
    DistinguishedName, DnType, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevocationReason, RevokedCertParams, SerialNumber,
};
use serde_json::Value;

/// What the server does with a request for a path.
#[derive(Clone)]
enum Answer {
    /// 200 with this body.
    Body(Vec<u8>),
    /// Nothing until [`CrlServer::release`] (or 90 s), then 404.
    Hold,
}

/// An HTTP/1.0 server on 127.0.0.1 that serves fixed answers by path (404 otherwise), one
/// thread per connection, and records every raw request it receives.
struct CrlServer {
    port: u16,
    stop: Arc<AtomicBool>,
    released: Arc<AtomicBool>,
    answers: Arc<Mutex<BTreeMap<String, Answer>>>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl CrlServer {
    fn start() -> CrlServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("local address").port();
        let stop = Arc::new(AtomicBool::new(false));
        let released = Arc::new(AtomicBool::new(false));
        let answers: Arc<Mutex<BTreeMap<String, Answer>>> = Arc::default();
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let (st, rel, ans, reqs) = (
            stop.clone(),
            released.clone(),
            answers.clone(),
            requests.clone(),
        );
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let (rel, ans, reqs) = (rel.clone(), ans.clone(), reqs.clone());
                std::thread::spawn(move || {
                    conn.set_nonblocking(false).expect("blocking");
                    conn.set_read_timeout(Some(Duration::from_secs(10)))
                        .expect("read timeout");
                    let mut req = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 64 * 1024 {
                        match conn.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&req).into_owned();
                    reqs.lock().unwrap().push(text.clone());
                    let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let answer = ans.lock().unwrap().get(&path).cloned();
                    let response = match answer {
                        Some(Answer::Body(body)) => {
                            let mut r = format!(
                                "HTTP/1.0 200 OK\r\nContent-Type: application/pkix-crl\r\nContent-Length: {}\r\n\r\n",
                                body.len()
                            )
                            .into_bytes();
                            r.extend(body);
                            r
                        }
                        Some(Answer::Hold) => {
                            let until = Instant::now() + Duration::from_secs(90);
                            while !rel.load(Ordering::Relaxed) && Instant::now() < until {
                                std::thread::sleep(Duration::from_millis(20));
                            }
                            b"HTTP/1.0 404 Not Found\r\n\r\n".to_vec()
                        }
                        None => b"HTTP/1.0 404 Not Found\r\n\r\n".to_vec(),
                    };
                    let _ = conn.write_all(&response);
                });
            }
        });
        CrlServer {
            port,
            stop,
            released,
            answers,
            requests,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn serve(&self, path: &str, body: Vec<u8>) {
        self.answers
            .lock()
            .unwrap()
            .insert(path.to_string(), Answer::Body(body));
    }

    fn hold(&self, path: &str) {
        self.answers
            .lock()
            .unwrap()
            .insert(path.to_string(), Answer::Hold);
    }

    fn release(&self) {
        self.released.store(true, Ordering::Relaxed);
    }

    fn is_released(&self) -> bool {
        self.released.load(Ordering::Relaxed)
    }

    /// The raw requests received so far.
    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for CrlServer {
    fn drop(&mut self) {
        self.release();
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn ts(t: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(t).unwrap()
}

/// The subject key identifier both the real CA and its look-alike carry.
const SHARED_SKI: [u8; 20] = [0x5a; 20];

/// CA parameters: `cn`, valid until `days` from now, with the given SKI (else derived).
fn ca_params(cn: &str, days: i64, ski: Option<&[u8]>) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, "Partner");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = ts(now() - DAY);
    p.not_after = ts(now() + days * DAY);
    if let Some(ski) = ski {
        p.key_identifier_method = KeyIdMethod::PreSpecified(ski.to_vec());
    }
    p
}

/// A leaf `cn` with `serial`, naming `crl_url`, signed by `issuer`; returns (DER, PEM).
fn leaf(issuer: &Issuer<'_, &KeyPair>, cn: &str, serial: u64, crl_url: &str) -> (Vec<u8>, String) {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.serial_number = Some(SerialNumber::from(serial));
    p.is_ca = IsCa::ExplicitNoCa;
    p.use_authority_key_identifier_extension = true;
    p.not_before = ts(now() - DAY);
    p.not_after = ts(now() + 100 * DAY);
    p.crl_distribution_points = vec![CrlDistributionPoint {
        uris: vec![crl_url.to_string()],
    }];
    let c = p.signed_by(&KeyPair::generate().unwrap(), issuer).unwrap();
    (c.der().to_vec(), c.pem())
}

/// A CRL signed by `issuer` listing `serials` (key compromise).
fn crl(issuer: &Issuer<'_, &KeyPair>, serials: &[u64]) -> Vec<u8> {
    CertificateRevocationListParams {
        this_update: ts(now() - 60),
        next_update: ts(now() + DAY),
        crl_number: SerialNumber::from(7u64),
        issuing_distribution_point: None,
        revoked_certs: serials
            .iter()
            .map(|serial| RevokedCertParams {
                serial_number: SerialNumber::from(*serial),
                revocation_time: ts(now() - 3600),
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::PreSpecified(SHARED_SKI.to_vec()),
    }
    .signed_by(issuer)
    .unwrap()
    .der()
    .to_vec()
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn show(env: &TestEnv, fp: &str) -> Value {
    let r = env.certctl(&["show", fp, "--json"]);
    r.success();
    r.json()[0].clone()
}

#[track_caller]
fn assert_revoked(env: &TestEnv, fp: &str, want: bool, what: &str, r: &RunResult) {
    let rec = show(env, fp);
    assert_eq!(rec["revoked"], want, "{what}: {rec:#}{r}");
}

mod forgery {
    use super::*;

    /// The real Partner CA (key A) and a look-alike (same DN, same SKI extension, key B).
    /// The look-alike expires first, so it sorts first in the store's CA index: a "first
    /// matching CA" lookup meets it before the real one.
    struct Partner {
        env: TestEnv,
        http: CrlServer,
        real_key: KeyPair,
        real: CertificateParams,
        fake_key: KeyPair,
        fake: CertificateParams,
        /// The real CA's leaves: revoked (0x1001) and good (0x1002), both naming /partner.crl.
        bad: String,
        good: String,
    }

    impl Partner {
        fn new(with_lookalike: bool) -> Partner {
            let env = TestEnv::new();
            let http = CrlServer::start();
            let real_key = KeyPair::generate().unwrap();
            let real = ca_params("Partner CA", 400, Some(&SHARED_SKI));
            let fake_key = KeyPair::generate().unwrap();
            let fake = ca_params("Partner CA", 200, Some(&SHARED_SKI));
            let dir = env.mkdir("partner");
            write(
                &dir.join("real-ca.pem"),
                &real.self_signed(&real_key).unwrap().pem(),
            );
            if with_lookalike {
                write(
                    &dir.join("lookalike-ca.pem"),
                    &fake.self_signed(&fake_key).unwrap().pem(),
                );
            }
            let issuer = Issuer::from_params(&real, &real_key);
            let url = http.url("/partner.crl");
            let (bad_der, bad_pem) = leaf(&issuer, "bad.partner.example", 0x1001, &url);
            let (good_der, good_pem) = leaf(&issuer, "good.partner.example", 0x1002, &url);
            write(&dir.join("bad.pem"), &bad_pem);
            write(&dir.join("good.pem"), &good_pem);
            env.certctl(&["scan", s(&dir), "--role", "gateway"])
                .success();
            let (bad, good) = (sha256_hex(&bad_der), sha256_hex(&good_der));
            Partner {
                env,
                http,
                real_key,
                real,
                fake_key,
                fake,
                bad,
                good,
            }
        }

        fn real_issuer(&self) -> Issuer<'_, &KeyPair> {
            Issuer::from_params(&self.real, &self.real_key)
        }

        fn fake_issuer(&self) -> Issuer<'_, &KeyPair> {
            Issuer::from_params(&self.fake, &self.fake_key)
        }

        fn fetch(&self) -> RunResult {
            self.env.certctl(&["crl", "fetch", "--timeout", "5s"])
        }
    }

    /// (a) With a look-alike CA inventoried next to the real one, the real CRL still applies
    /// to the real CA's leaves.
    #[test]
    fn a_lookalike_ca_does_not_veto_the_real_crl() {
        let p = Partner::new(true);
        p.http
            .serve("/partner.crl", crl(&p.real_issuer(), &[0x1001]));
        let r = p.fetch();
        r.success()
            .stdout_has(&format!("{}: fetched", p.http.url("/partner.crl")))
            .stdout_has("1 certificates newly marked revoked");
        assert_revoked(&p.env, &p.bad, true, "listed by the real CA", &r);
        assert_revoked(&p.env, &p.good, false, "not listed", &r);
        let rec = show(&p.env, &p.bad);
        assert_eq!(rec["revocation"]["reason"], "key-compromise");
        assert_eq!(rec["revocation"]["revoked_by"], p.http.url("/partner.crl"));
    }

    /// (b) A CRL signed by the look-alike, served at the real CDP URL, revokes none of the
    /// real CA's leaves (and is reported).
    #[test]
    fn a_crl_forged_by_the_lookalike_revokes_nothing() {
        let p = Partner::new(true);
        p.http
            .serve("/partner.crl", crl(&p.fake_issuer(), &[0x1001, 0x1002]));
        let r = p.fetch();
        r.expect_code(4)
            .stdout_has("0 certificates newly marked revoked");
        assert!(
            r.stdout.contains("not signed by") || r.stdout.contains("does not verify"),
            "the forgery is reported{r}"
        );
        assert_revoked(&p.env, &p.bad, false, "forged entry", &r);
        assert_revoked(&p.env, &p.good, false, "forged entry", &r);
        // Nor does it stay cached as if it were good: the real CRL is taken next time.
        p.http
            .serve("/partner.crl", crl(&p.real_issuer(), &[0x1001]));
        let r = p.fetch();
        r.success()
            .stdout_has("1 certificates newly marked revoked");
        assert_revoked(&p.env, &p.bad, true, "the real CRL after the forgery", &r);
        assert_revoked(&p.env, &p.good, false, "not listed", &r);
    }

    /// (c) A leaf of an issuer certctl does not know, naming the same CDP URL (and listed in
    /// the CRL by serial), neither makes the real CRL fail for the real leaves nor is marked
    /// revoked.
    #[test]
    fn an_unrelated_leaf_at_the_same_url_neither_vetoes_nor_is_revoked() {
        let p = Partner::new(false);
        let other_key = KeyPair::generate().unwrap();
        let other = ca_params("Unrelated CA", 400, None);
        let other_issuer = Issuer::from_params(&other, &other_key);
        // The unrelated leaf sorts first among the three (by fingerprint, the store's order),
        // so a lookup that judges a URL by its first certificate meets it first.
        let url = p.http.url("/partner.crl");
        let (der, pem) = loop {
            let (der, pem) = leaf(&other_issuer, "stranger.example", 0x1003, &url);
            let fp = sha256_hex(&der);
            if fp < p.bad && fp < p.good {
                break (der, pem);
            }
        };
        let dir = p.env.mkdir("stranger");
        write(&dir.join("stranger.pem"), &pem);
        p.env
            .certctl(&["scan", s(&dir), "--role", "gateway"])
            .success();
        p.http
            .serve("/partner.crl", crl(&p.real_issuer(), &[0x1001, 0x1003]));
        let r = p.fetch();
        r.success()
            .stdout_has(&format!("{}: fetched", url))
            .stdout_has("1 certificates newly marked revoked");
        assert_revoked(&p.env, &p.bad, true, "listed by the real CA", &r);
        assert_revoked(&p.env, &p.good, false, "not listed", &r);
        assert_revoked(
            &p.env,
            &sha256_hex(&der),
            false,
            "listed by serial, but another issuer's certificate",
            &r,
        );
    }
}

mod network {
    use super::*;

    /// A leaf of a fresh CA naming `url`, with its CA, scanned into `env`; returns the leaf's
    /// fingerprint.
    fn scan_leaf_naming(env: &TestEnv, dir: &str, url: &str) -> String {
        let key = KeyPair::generate().unwrap();
        let ca = ca_params("Network CA", 400, None);
        let issuer = Issuer::from_params(&ca, &key);
        let (der, pem) = leaf(&issuer, "leaf.network.example", 0x77, url);
        let dir = env.mkdir(dir);
        write(&dir.join("ca.pem"), &ca.self_signed(&key).unwrap().pem());
        write(&dir.join("leaf.pem"), &pem);
        env.certctl(&["scan", s(&dir), "--role", "gateway"])
            .success();
        sha256_hex(&der)
    }

    /// A CDP URL carrying CR/LF (header injection) is refused before any connection: the
    /// server sees no request, let alone the injected header, and the refusal names the
    /// cause.
    #[test]
    fn a_url_with_crlf_is_refused_and_nothing_is_injected() {
        let env = TestEnv::new();
        let http = CrlServer::start();
        let hostile = format!(
            "{}\r\nX-Injected: yes\r\nX-Other: 1",
            http.url("/partner.crl")
        );
        scan_leaf_naming(&env, "certs", &hostile);
        let r = env.certctl(&["crl", "fetch", "--timeout", "5s"]);
        r.expect_code(4);
        let requests = http.requests();
        assert!(
            !requests.iter().any(|q| q.contains("X-Injected")),
            "the injected header arrived: {requests:?}{r}"
        );
        assert!(requests.is_empty(), "no request at all: {requests:?}{r}");
        r.stdout_has("control character");
        assert!(
            !r.stdout.contains("\r\nX-Injected"),
            "the URL is printed escaped{r}"
        );
    }

    /// With `[crl] allow` naming other hosts/networks, a URL on 127.0.0.1 is not contacted
    /// and is reported; once its network is allowed, it is fetched. Used by `certctl
    /// --config FILE crl fetch` and by certd; `certd config check` validates the entries.
    #[test]
    fn hosts_outside_the_allow_list_are_not_contacted() {
        let env = TestEnv::new();
        let http = CrlServer::start();
        http.serve("/a.crl", b"not a CRL".to_vec());
        scan_leaf_naming(&env, "certs", &http.url("/a.crl"));
        let config = env.file("etc/certd.toml");
        let base = CertdConfig::new(env.store()).to_toml();
        write(
            &config,
            &format!("{base}\n[crl]\nallow = [\"crl.contoso.example\", \"10.0.0.0/8\"]\n"),
        );
        env.cmd()
            .bin("certd")
            .no_store()
            .args(["config", "check", s(&config)])
            .run()
            .success();
        let r = env
            .cmd()
            .args(["--config", s(&config), "crl", "fetch", "--timeout", "5s"])
            .run();
        r.expect_code(4).stdout_has("not in the [crl] allow list");
        assert!(
            http.requests().is_empty(),
            "contacted: {:?}{r}",
            http.requests()
        );

        write(
            &config,
            &format!("{base}\n[crl]\nallow = [\"crl.contoso.example\", \"127.0.0.0/8\"]\n"),
        );
        let r = env
            .cmd()
            .args(["--config", s(&config), "crl", "fetch", "--timeout", "5s"])
            .run();
        r.expect_code(4).stdout_has("not a CRL");
        assert_eq!(http.requests().len(), 1, "{r}");

        // A bad entry is a configuration error with its place.
        write(
            &config,
            &format!("{base}\n[crl]\nallow = [\"10.0.0.0/33\"]\n"),
        );
        let r = env
            .cmd()
            .bin("certd")
            .no_store()
            .args(["config", "check", s(&config)])
            .run();
        assert_eq!(r.code(), 2, "{r}");
        r.stderr_has(&format!(
            "{}:12:10: crl.allow: `10.0.0.0/33`: the prefix length",
            config.display()
        ));

        // Through certd, certd's own list applies.
        write(
            &config,
            &format!("{base}\n[crl]\nallow = [\"crl.contoso.example\"]\n"),
        );
        let certd = Certd::start(&env, &config);
        let r = env.certctl(&["crl", "fetch", "--timeout", "5s", "--force"]);
        r.expect_code(4).stdout_has("not in the [crl] allow list");
        assert_eq!(http.requests().len(), 1, "not contacted through certd{r}");
        drop(certd);
    }

    /// A CRL server that holds its answer far beyond any deadline does not hold the store:
    /// while certd's scheduled fetch waits on it, a `certctl scan` through certd completes.
    #[test]
    fn a_held_crl_download_does_not_block_a_scan_through_certd() {
        let env = TestEnv::new();
        let http = CrlServer::start();
        http.hold("/slow.crl");
        scan_leaf_naming(&env, "certs", &http.url("/slow.crl"));
        let config = env.file("etc/certd.toml");
        write(
            &config,
            &format!(
                "{}\n[crl]\nschedule = \"* * * * * *\"\ntimeout = \"60s\"\n",
                CertdConfig::new(env.store()).to_toml()
            ),
        );
        let certd = Certd::start(&env, &config);
        certctl_e2e::daemon::wait_for(
            Duration::from_secs(20),
            || format!("certd never asked for the CRL: {}", certd.log()),
            || (!http.requests().is_empty()).then_some(()),
        );
        // The download is held; a scan through certd must not wait for it.
        let other = env.mkdir("more");
        let f = CertFactory::new();
        write(
            &other.join("new.pem"),
            &f.leaf(CertSpec::leaf("new.example.com")).pem,
        );
        let r = env
            .cmd()
            .args(["scan", s(&other)])
            .timeout(Duration::from_secs(40))
            .run();
        assert!(
            !http.is_released(),
            "the server was released before the scan ended"
        );
        r.success();
        assert_eq!(
            status_json(&env)["mode"],
            "daemon",
            "the scan went through certd"
        );
        http.release();
        drop(certd);
    }
}
