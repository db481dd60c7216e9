//! Servers certctl talks to but does not control, misbehaving on purpose: an SMTP server that
//! floods its greeting without ever ending the line, one that drips a byte every 2 seconds
//! while certd holds a reminder pass open, and a TLS endpoint that serves 60 certificates.
//! Each hostile server is written here, on 127.0.0.1, and every wait has a timeout.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use certctl_e2e::daemon::Certd;
use certctl_e2e::smtp::SmtpServer;
use certctl_e2e::tls::TlsServer;
use certctl_e2e::*;
use serde_json::Value;

const OPS: &str = "ops@contoso.example";

/// One recipient, so one SMTP session per pass.
const POLICIES: &str = r#"
[[policy]]
name = "public"
roles = ["gateway"]
remind = ["30d"]
warn = "30d"
critical = "7d"
recipients = ["ops@contoso.example"]
"#;

/// What the hostile SMTP server does once a client is connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Behaviour {
    /// `220 ` and then `A`s without CR LF, as fast as the client reads, up to [`FLOOD_CAP`]
    /// bytes; then silence until the client leaves.
    Flood,
    /// `220 hostile ESMTP` one byte every 2 seconds, up to [`DRIP_BYTES`] bytes.
    Drip,
}

/// Where the flood stops on its own (a client that reads it all has no bound).
const FLOOD_CAP: u64 = 128 << 20;
/// Bytes the drip sends at most (a minute and a half).
const DRIP_BYTES: usize = 45;

/// What happened to one connection.
#[derive(Clone, Debug, Default)]
struct Session {
    /// Bytes written to the client.
    sent: u64,
    /// The client closed the connection (a write failed) before the server was done.
    client_left: bool,
}

/// A hostile SMTP server on a free loopback port; one thread per connection, all bounded.
struct Hostile {
    port: u16,
    /// Connections in progress.
    open: Arc<AtomicUsize>,
    /// Connections accepted so far.
    accepted: Arc<AtomicU64>,
    sessions: Arc<Mutex<Vec<Session>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Hostile {
    fn start(behaviour: Behaviour) -> Hostile {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("address").port();
        let open = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicU64::new(0));
        let sessions = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (open, accepted, sessions, stop) = (
                open.clone(),
                accepted.clone(),
                sessions.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                let mut handlers = Vec::new();
                let end = Instant::now() + Duration::from_secs(240);
                while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            accepted.fetch_add(1, Ordering::SeqCst);
                            open.fetch_add(1, Ordering::SeqCst);
                            let (open, sessions, stop) =
                                (open.clone(), sessions.clone(), stop.clone());
                            handlers.push(std::thread::spawn(move || {
                                let s = serve(stream, behaviour, &stop);
                                sessions.lock().unwrap().push(s);
                                open.fetch_sub(1, Ordering::SeqCst);
                            }));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
                for h in handlers {
                    let _ = h.join();
                }
            })
        };
        Hostile {
            port,
            open,
            accepted,
            sessions,
            stop,
            thread: Some(thread),
        }
    }

    fn sessions(&self) -> Vec<Session> {
        self.sessions.lock().unwrap().clone()
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(mut stream: TcpStream, behaviour: Behaviour, stop: &AtomicBool) -> Session {
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .expect("write timeout");
    let mut reader = stream.try_clone().expect("clone");
    let mut session = Session::default();
    let mut write = |bytes: &[u8], session: &mut Session| match stream.write_all(bytes) {
        Ok(()) => {
            session.sent += bytes.len() as u64;
            true
        }
        Err(_) => {
            session.client_left = true;
            false
        }
    };
    match behaviour {
        Behaviour::Flood => {
            if !write(b"220 ", &mut session) {
                return session;
            }
            let chunk = vec![b'A'; 64 << 10];
            while session.sent < FLOOD_CAP && !stop.load(Ordering::Relaxed) {
                if !write(&chunk, &mut session) {
                    return session;
                }
            }
            // Silence until the client gives up (or the test ends).
            let _ = reader.set_read_timeout(Some(Duration::from_millis(200)));
            let end = Instant::now() + Duration::from_secs(60);
            let mut buf = [0u8; 512];
            while Instant::now() < end && !stop.load(Ordering::Relaxed) {
                if let Ok(0) = reader.read(&mut buf) {
                    break;
                }
            }
        }
        Behaviour::Drip => {
            let greeting = b"220 hostile.example ESMTP at your service, slowly......";
            for byte in greeting.iter().take(DRIP_BYTES) {
                if stop.load(Ordering::Relaxed) || !write(&[*byte], &mut session) {
                    return session;
                }
                std::thread::sleep(Duration::from_secs(2));
            }
        }
    }
    session
}

/// A store with one gateway certificate 20 days from expiry, and a configuration whose
/// `[smtp]` server is `port`.
struct Setup {
    env: TestEnv,
    config: PathBuf,
    policies: PathBuf,
}

impl Setup {
    fn new(port: u16, timeout: &str) -> Setup {
        let env = TestEnv::new();
        let policies = env.mkdir("policies");
        std::fs::write(policies.join("test.toml"), POLICIES).unwrap();
        let t = Setup {
            config: env.file("certd.toml"),
            env,
            policies,
        };
        t.write_config(port, timeout);
        let gw = CertFactory::new().leaf(CertSpec::leaf("gw.contoso.example").expires_in_days(20));
        let dir = t.env.mkdir("gateway");
        files::pem(&dir.join("gw.pem"), &[&gw]);
        t.env
            .certctl(&["scan", s(&dir), "--role", "gateway"])
            .success();
        t
    }

    fn write_config(&self, port: u16, timeout: &str) {
        let text = format!(
            "store = \"{}\"\n[scan]\nschedule = \"off\"\nwatch = false\n[probe]\nschedule = \"off\"\n\
             [smtp]\nhost = \"127.0.0.1\"\nport = {port}\nsecurity = \"none\"\nfrom = \"certd@contoso.example\"\ntimeout = \"{timeout}\"\n\
             [reminders]\nschedule = \"0 8 * * 1-5\"\npolicies = \"{}\"\n",
            s(self.env.store()),
            s(&self.policies)
        );
        std::fs::write(&self.config, text).unwrap();
    }

    fn remind(&self) -> RunResult {
        self.env
            .cmd()
            .arg("--config")
            .arg(&self.config)
            .args(["remind", "--now"])
            .timeout(Duration::from_secs(120))
            .run()
    }

    fn pending(&self) -> Value {
        self.env.certctl(&["status", "--json"]).json()["reminders_pending"].clone()
    }
}

/// Waits (at most `limit`) until `f` holds.
fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

#[test]
fn a_greeting_without_end_fails_as_reply_too_long_and_the_reminder_stays_pending() {
    let hostile = Hostile::start(Behaviour::Flood);
    let t = Setup::new(hostile.port, "5s");
    let r = t.remind();
    r.expect_code(4)
        .stdout_has("1 digests (1 reminders) failed and stay pending")
        .stderr_has(&format!(
            "SMTP server 127.0.0.1:{} (none): cannot deliver to {OPS}: ",
            hostile.port
        ))
        .stderr_has("reply too long");
    // certctl hung up after a bounded read: the flood never reached its own cap (what
    // certctl did not read stayed in the kernel's socket buffers).
    assert!(
        wait_until(Duration::from_secs(30), || hostile.sessions().len() == 1),
        "the hostile session did not end"
    );
    let session = &hostile.sessions()[0];
    assert!(
        session.client_left && session.sent < FLOOD_CAP,
        "{session:?}"
    );
    assert_eq!(t.pending(), 1);
}

#[test]
fn a_dripping_server_holds_neither_the_pass_nor_the_store_and_the_reminder_goes_out_once_later() {
    let hostile = Hostile::start(Behaviour::Drip);
    let t = Setup::new(hostile.port, "5s");
    let certd = Certd::start(&t.env, &t.config);
    let inbox = t.env.mkdir("inbox");
    let late = CertFactory::new().leaf(CertSpec::leaf("late.contoso.example").expires_in_days(200));
    files::pem(&inbox.join("late.pem"), &[&late]);

    std::thread::scope(|scope| {
        // The pass runs inside certd (the request goes through its control socket).
        let pass = scope.spawn(|| t.remind());
        assert!(
            wait_until(Duration::from_secs(30), || hostile
                .open
                .load(Ordering::SeqCst)
                == 1),
            "certd never connected to the hostile server"
        );
        // A scan through certd is not held up by the session in progress.
        t.env
            .cmd()
            .args(["scan", s(&inbox), "--role", "gateway"])
            .timeout(Duration::from_secs(60))
            .run()
            .success();
        assert_eq!(
            hostile.open.load(Ordering::SeqCst),
            1,
            "the scan should end while the hostile SMTP session is still in progress"
        );
        let items = t.env.list_json(&[]);
        find_fp(&items, &late.fingerprint);

        // The pass gives up at the session's deadline, long before the drip ends.
        let r = pass.join().expect("pass thread");
        r.expect_code(4)
            .stdout_has("1 digests (1 reminders) failed and stay pending")
            .stderr_has(&format!(
                "SMTP server 127.0.0.1:{} (none): cannot deliver to {OPS}: ",
                hostile.port
            ))
            .stderr_has("timed out");
    });
    assert!(
        wait_until(Duration::from_secs(30), || hostile.sessions().len() == 1),
        "the hostile session did not end"
    );
    let session = &hostile.sessions()[0];
    assert!(
        session.client_left && session.sent < DRIP_BYTES as u64,
        "{session:?}"
    );
    assert_eq!(t.pending(), 1);
    assert_eq!(hostile.accepted.load(Ordering::SeqCst), 1);

    // With a real server, the pending reminder is delivered, once.
    let smtp = SmtpServer::start(&t.env.mkdir("smtp"), None);
    t.write_config(smtp.port, "5s");
    t.remind()
        .success()
        .stdout_has("sent 1 digests with 1 reminders");
    assert_eq!(smtp.wait_for_messages(1, Duration::from_secs(20)).len(), 1);
    t.remind()
        .success()
        .stdout_has("sent 0 digests with 0 reminders");
    assert_eq!(smtp.messages().len(), 1);
    assert_eq!(t.pending(), 0);
    certd.stop_ok();
}

#[test]
fn a_probed_endpoint_cannot_make_certctl_keep_more_than_20_certificates() {
    let f = CertFactory::new();
    let leaf = f.leaf(CertSpec::leaf("long.contoso.example").dns("long.contoso.example"));
    let extra: Vec<GeneratedCert> = (0..59)
        .map(|i| f.leaf(CertSpec::leaf(&format!("junk{i}.contoso.example"))))
        .collect();
    let refs: Vec<&GeneratedCert> = extra.iter().collect();
    let server = TlsServer::serve(&leaf, &refs);
    let env = TestEnv::new();
    let r = env
        .cmd()
        .args([
            "probe",
            &server.address(),
            "--sni",
            "long.contoso.example",
            "--json",
        ])
        .timeout(Duration::from_secs(60))
        .run();
    let report = r.json();
    let endpoint = &report["endpoint"];
    let chain = endpoint["chain"].as_array().expect("chain");
    assert_eq!(chain.len(), 20, "{r}");
    let too_long: Vec<&Value> = endpoint["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["kind"] == "chain-too-long")
        .collect();
    assert_eq!(too_long.len(), 1, "{r}");
    let detail = too_long[0]["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("60 certificates") && detail.contains("40"),
        "{detail}"
    );
    let items = env.list_json(&[]);
    assert_eq!(items.len(), 20, "{items:#?}");
    assert!(server.stop() >= 1);
}
