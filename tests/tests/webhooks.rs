//! Reminders to webhooks, end to end: a policy names `webhook:ops` among its recipients,
//! certd's configuration says where `ops` is (`[[webhook]]`), and a real HTTPS receiver on
//! 127.0.0.1 (openssl, with a certificate of the test CA given as `ca_file`) takes the POSTs.
//! The receiver fails and comes back: the digest is delivered once, with the same
//! Idempotency-Key on the retry.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use certctl_e2e::*;
use openssl::pkey::PKey;
use openssl::ssl::{SslAcceptor, SslMethod};
use openssl::x509::X509;
use serde_json::Value;

const HOUR: i64 = 3600;

/// One POST as the receiver saw it.
#[derive(Debug, Clone)]
struct Post {
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Post {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTPS receiver on 127.0.0.1: answers each POST with the next status of `statuses`
/// (then 200), records what it got. Stops when dropped (its port then refuses).
struct Receiver {
    port: u16,
    posts: Arc<Mutex<Vec<Post>>>,
    statuses: Arc<Mutex<Vec<u16>>>,
}

impl Receiver {
    fn start(factory: &CertFactory) -> Receiver {
        let cert = factory.leaf(
            CertSpec::leaf("localhost")
                .dns("localhost")
                .ip("127.0.0.1")
                .expires_in_days(30),
        );
        let mut acceptor = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).unwrap();
        acceptor
            .set_private_key(&PKey::private_key_from_pem(cert.key_pem.as_bytes()).unwrap())
            .unwrap();
        acceptor
            .set_certificate(&X509::from_pem(cert.pem.as_bytes()).unwrap())
            .unwrap();
        acceptor
            .add_extra_chain_cert(X509::from_pem(factory.intermediate().pem.as_bytes()).unwrap())
            .unwrap();
        let acceptor = acceptor.build();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let posts = Arc::new(Mutex::new(Vec::new()));
        let statuses = Arc::new(Mutex::new(Vec::new()));
        let (p, st) = (posts.clone(), statuses.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let Ok(mut tls) = acceptor.accept(stream) else {
                    continue;
                };
                let mut reader = BufReader::new(&mut tls);
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let path = line.split(' ').nth(1).unwrap_or_default().to_string();
                let mut headers = Vec::new();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.trim_end().split_once(':') {
                        headers.push((k.trim().to_string(), v.trim().to_string()));
                    }
                }
                let length: usize = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0u8; length.min(1 << 20)];
                let _ = reader.read_exact(&mut body);
                p.lock().unwrap().push(Post {
                    path,
                    headers,
                    body: String::from_utf8_lossy(&body).into_owned(),
                });
                let status = {
                    let mut st = st.lock().unwrap();
                    if st.is_empty() {
                        200
                    } else {
                        st.remove(0)
                    }
                };
                let text = if status == 200 { "ok" } else { "try later" };
                let _ =
                    write!(
                    tls,
                    "HTTP/1.1 {status} {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                    if status == 200 { "OK" } else { "Service Unavailable" },
                    text.len()
                );
                let _ = tls.shutdown();
            }
        });
        Receiver {
            port,
            posts,
            statuses,
        }
    }

    fn posts(&self) -> Vec<Post> {
        self.posts.lock().unwrap().clone()
    }
}

const POLICIES: &str = r#"
[[policy]]
name = "gateways"
roles = ["gateway"]
remind = ["30d", "7d"]
warn = "30d"
critical = "7d"
recipients = ["webhook:ops"]
"#;

struct Setup {
    env: TestEnv,
    config: PathBuf,
    factory: CertFactory,
}

impl Setup {
    /// A store, the policies, and a configuration with only `[[webhook]]` (no `[smtp]`).
    fn new(port: u16, format: &str, factory: CertFactory) -> Setup {
        let env = TestEnv::new();
        let policies = env.mkdir("policies");
        std::fs::write(policies.join("p.toml"), POLICIES).unwrap();
        let ca = env.file("webhook-ca.pem");
        std::fs::write(&ca, &factory.root().pem).unwrap();
        let header = env.file("webhook-auth");
        files::secret(&header, "Authorization: Bearer s3cret-token\n");
        let config = env.file("certd.toml");
        std::fs::write(
            &config,
            format!(
                "store = \"{}\"\n[scan]\nschedule = \"off\"\nwatch = false\n[probe]\nschedule = \"off\"\n\
                 [reminders]\nschedule = \"0 8 * * 1-5\"\npolicies = \"{}\"\n\
                 [[webhook]]\nname = \"ops\"\nurl = \"https://localhost:{port}/hooks/certs?token=url-secret\"\n\
                 format = \"{format}\"\nca_file = \"{}\"\nheader_file = \"{}\"\ntimeout = \"5s\"\n",
                s(env.store()),
                s(&policies),
                s(&ca),
                s(&header)
            ),
        )
        .unwrap();
        Setup {
            env,
            config,
            factory,
        }
    }

    fn remind(&self, offset: i64) -> RunResult {
        self.env
            .cmd()
            .arg("--config")
            .arg(&self.config)
            .args(["remind", "--now"])
            .env("CERTCTL_NOW", rfc3339(now() + offset))
            .run()
    }

    fn add_gateway(&self, cn: &str, days: i64) -> GeneratedCert {
        let cert = self.factory.leaf(CertSpec::leaf(cn).expires_in_days(days));
        let dir = self.env.mkdir("gateway");
        files::pem(&dir.join(format!("{cn}.pem")), &[&cert]);
        self.env
            .certctl(&["scan", s(&dir), "--role", "gateway"])
            .success();
        cert
    }
}

#[test]
fn a_webhook_gets_the_digest_once_with_its_key_and_header() {
    let factory = CertFactory::new();
    let receiver = Receiver::start(&factory);
    let t = Setup::new(receiver.port, "json", factory);
    let gw = t.add_gateway("gw.contoso.example", 5);

    t.remind(0)
        .success()
        .stdout_has("sent 1 digests with 1 reminders");
    let posts = receiver.posts();
    assert_eq!(posts.len(), 1, "{posts:#?}");
    let post = &posts[0];
    assert_eq!(post.path, "/hooks/certs?token=url-secret");
    assert_eq!(post.header("content-type"), Some("application/json"));
    assert_eq!(post.header("authorization"), Some("Bearer s3cret-token"));
    let key = post.header("idempotency-key").expect("Idempotency-Key");
    assert!(key.len() >= 16, "{key}");
    let body: Value = serde_json::from_str(&post.body).expect("JSON body");
    assert_eq!(body["recipient"], "webhook:ops");
    assert_eq!(body["idempotency_key"], key);
    assert_eq!(body["entries"][0]["fingerprint"], gw.fingerprint);
    assert_eq!(body["entries"][0]["name"], "gw.contoso.example");

    // Once per threshold: the next pass sends nothing.
    t.remind(HOUR)
        .success()
        .stdout_has("sent 0 digests with 0 reminders");
    assert_eq!(receiver.posts().len(), 1);
}

#[test]
fn a_failing_receiver_keeps_the_digest_pending_and_gets_it_once_when_back() {
    let factory = CertFactory::new();
    let receiver = Receiver::start(&factory);
    receiver.statuses.lock().unwrap().push(503);
    let t = Setup::new(receiver.port, "teams", factory);
    t.add_gateway("gw.contoso.example", 5);

    let r = t.remind(0);
    r.expect_code(4)
        .stderr_has("webhook `ops`")
        .stderr_has("503");
    // The URL's secret query never reaches the error or the status.
    assert!(!r.stderr.contains("url-secret"), "{r}");
    assert!(!r.stderr.contains("s3cret-token"), "{r}");
    let status = t.env.certctl(&["status", "--json"]).json();
    assert_eq!(status["reminders_pending"], 1, "{status}");

    // Back: the retry goes out (same key), and only once.
    t.remind(2 * HOUR)
        .success()
        .stdout_has("sent 1 digests with 1 reminders");
    t.remind(3 * HOUR)
        .success()
        .stdout_has("sent 0 digests with 0 reminders");
    let posts = receiver.posts();
    assert_eq!(posts.len(), 2, "{posts:#?}");
    assert_eq!(
        posts[0].header("idempotency-key"),
        posts[1].header("idempotency-key"),
        "a retry of the same digest carries the same key"
    );
    let card: Value = serde_json::from_str(&posts[1].body).unwrap();
    assert_eq!(card["@type"], "MessageCard", "{card}");
    assert!(
        card["text"]
            .as_str()
            .unwrap()
            .contains("gw.contoso.example"),
        "{card}"
    );
}

#[test]
fn an_unreachable_or_untrusted_receiver_is_a_clear_error_and_nothing_is_lost() {
    // Nothing listens on the port.
    let free = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let t = Setup::new(port, "slack", CertFactory::new());
    t.add_gateway("gw.contoso.example", 5);
    t.remind(0)
        .expect_code(4)
        .stderr_has("webhook `ops`")
        .stderr_has("cannot connect");

    // A receiver whose certificate another CA issued: refused at the handshake.
    let other = Receiver::start(&CertFactory::new());
    let t = Setup::new(other.port, "slack", CertFactory::new());
    t.add_gateway("gw.contoso.example", 5);
    t.remind(0).expect_code(4).stderr_has("TLS with localhost");
    assert!(
        other.posts().is_empty(),
        "nothing is sent before the server is trusted"
    );
}

#[test]
fn config_check_names_a_bad_webhook() {
    let env = TestEnv::new();
    let config = env.file("certd.toml");
    std::fs::write(
        &config,
        format!(
            "store = \"{}\"\n[[webhook]]\nname = \"ops\"\nurl = \"ftp://example.org/x\"\n\
             [[webhook]]\nname = \"ops\"\nurl = \"https://example.org/x\"\nformat = \"discord\"\n",
            s(env.store())
        ),
    )
    .unwrap();
    let r = env
        .cmd()
        .bin("certd")
        .no_store()
        .args(["config", "check", s(&config)])
        .run();
    r.expect_code(2)
        .stderr_has("webhook.url")
        .stderr_has("defined twice")
        .stderr_has("discord");
}
