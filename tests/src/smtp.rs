//! A real SMTP server for the reminder tests: aiosmtpd (from the repository's `.venv`, which
//! `scripts/setup` creates) on a free loopback port, delivering into a Maildir.
//!
//! The server is a small script around aiosmtpd's `Controller` and `Mailbox` handler (the
//! same handler as `python -m aiosmtpd -c aiosmtpd.handlers.Mailbox`), because the
//! command-line entry point cannot require AUTH: with a user and password the server
//! advertises AUTH PLAIN/LOGIN on the plain connection and rejects any other credentials
//! with `535 5.7.8`. Starting waits (bounded) until the port accepts; the process is
//! killed on drop. [`SmtpServer::messages`] parses the Maildir, MIME parts decoded.
//!
//! **STARTTLS.** [`SmtpServer::start_starttls`] gives the server a certificate and key: it
//! offers STARTTLS and answers `530` to mail sent without it (aiosmtpd's `require_starttls`).
//! [`SmtpServer::start_smtps`] speaks TLS from the first byte instead (implicit TLS, "SMTPS",
//! port 465 style: the Controller's `ssl_context`); it never offers STARTTLS, and a client
//! that does not open with a TLS handshake gets no greeting.
//!
//! **Faults.** [`SmtpServer::start_with_fault`] / [`SmtpServer::restart_with_fault`] make the
//! server misbehave at a known point, so a test can kill it mid-delivery deterministically:
//! from the Nth message (DATA) of its life on, the handler never answers. With
//! [`Fault::StallBeforeStoring`] the message is not stored (the client sent it but it was
//! not accepted); with [`Fault::StallAfterStoring`] it is stored in the Maildir first (the
//! server accepted it but died before saying `250`: the one window SMTP cannot close).
//! Either way the handler then writes a marker file ([`SmtpServer::wait_for_stall`] waits
//! for it) and sleeps; the test SIGKILLs the process with [`SmtpServer::kill`] while the
//! client waits for the answer, and [`SmtpServer::restart`] brings a healthy server back on
//! the same port and Maildir.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long the server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a stalled handler sleeps before giving up (the test kills it long before).
const STALL_SECS: u64 = 600;

const SERVER_PY: &str = r#"
import asyncio, os, signal, sys
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import AuthResult, LoginPassword

host, port, maildir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
user = sys.argv[4] if len(sys.argv) > 5 else None
password = sys.argv[5] if len(sys.argv) > 5 else None

# SMTP_FAULT=MODE:N:MARKER:SECS: from the Nth DATA on, never answer (MODE stall-before-store:
# drop the message; stall-after-store: store it first), after writing MARKER (atomically).
fault = os.environ.get("SMTP_FAULT")

class Faulty(Mailbox):
    def __init__(self, maildir, mode, at, marker, secs):
        super().__init__(maildir)
        self.mode, self.at, self.marker, self.secs = mode, at, marker, secs
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        if self.count < self.at:
            return await super().handle_DATA(server, session, envelope)
        if self.mode == "stall-after-store":
            await super().handle_DATA(server, session, envelope)
        with open(self.marker + ".tmp", "w") as f:
            f.write(f"{self.count}\n")
        os.rename(self.marker + ".tmp", self.marker)
        await asyncio.sleep(self.secs)
        return "451 4.3.0 stalled"

if fault:
    mode, at, marker, secs = fault.split(":", 3)
    handler = Faulty(maildir, mode, int(at), marker, int(secs))
else:
    handler = Mailbox(maildir)

def authenticator(server, session, envelope, mechanism, auth_data):
    ok = (isinstance(auth_data, LoginPassword)
          and auth_data.login.decode() == user
          and auth_data.password.decode() == password)
    return AuthResult(success=ok, handled=False)

kwargs = {}
if user is not None:
    kwargs = dict(authenticator=authenticator, auth_required=True, auth_require_tls=False)

# SMTP_TLS_CERT / SMTP_TLS_KEY (PEM files): offer STARTTLS and refuse mail without it; with
# SMTP_TLS_MODE=smtps, speak TLS from the first byte instead (implicit TLS, no STARTTLS).
if os.environ.get("SMTP_TLS_CERT"):
    import ssl
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(os.environ["SMTP_TLS_CERT"], os.environ["SMTP_TLS_KEY"])
    if os.environ.get("SMTP_TLS_MODE") == "smtps":
        kwargs.update(ssl_context=context)
    else:
        kwargs.update(tls_context=context, require_starttls=True)
controller = Controller(handler, hostname=host, port=port, **kwargs)
controller.start()
print("ready", flush=True)
signal.sigwait({signal.SIGTERM, signal.SIGINT})
controller.stop()
"#;

/// The repository's virtualenv Python (with aiosmtpd).
pub fn venv_python() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(
        p.is_file(),
        "{} is missing: run scripts/setup (it creates .venv with aiosmtpd)",
        p.display()
    );
    p
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    l.local_addr().expect("local address").port()
}

/// How the server misbehaves (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// From the Nth message (1-based) on: read it, do not store it, never answer.
    StallBeforeStoring(usize),
    /// From the Nth message on: store it in the Maildir, then never answer `250`.
    StallAfterStoring(usize),
}

/// How a server with a certificate speaks TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain greeting, STARTTLS offered and required before mail.
    StartTls,
    /// TLS from the first byte (SMTPS, port 465 style).
    Implicit,
}

/// A running aiosmtpd. Killed on drop.
pub struct SmtpServer {
    pub port: u16,
    pub maildir: PathBuf,
    script: PathBuf,
    /// Written by a faulty server when it stalls.
    marker: PathBuf,
    auth: Option<(String, String)>,
    /// How TLS is spoken, with the certificate and key (PEM files); `None`: plain SMTP.
    tls: Option<(TlsMode, PathBuf, PathBuf)>,
    /// Behind a lock so a test can [`SmtpServer::kill`] it while another thread (running
    /// `certctl remind`) holds a shared reference to the test's setup.
    child: Mutex<Option<Child>>,
}

impl SmtpServer {
    /// Starts a server delivering into `dir/maildir`; with `auth`, AUTH (user, password) is
    /// required.
    pub fn start(dir: &Path, auth: Option<(&str, &str)>) -> SmtpServer {
        SmtpServer::start_with_fault(dir, auth, None)
    }

    /// [`SmtpServer::start`], misbehaving as `fault` says.
    pub fn start_with_fault(
        dir: &Path,
        auth: Option<(&str, &str)>,
        fault: Option<Fault>,
    ) -> SmtpServer {
        SmtpServer::launch(dir, auth, None, fault)
    }

    /// A server delivering into `dir/maildir` that requires STARTTLS, presenting the
    /// certificate (chain) in `cert` with the key in `key` (PEM files).
    pub fn start_starttls(dir: &Path, cert: &Path, key: &Path) -> SmtpServer {
        let tls = (TlsMode::StartTls, cert.to_path_buf(), key.to_path_buf());
        SmtpServer::launch(dir, None, Some(tls), None)
    }

    /// A server delivering into `dir/maildir` that speaks TLS from the first byte (implicit
    /// TLS, SMTPS), presenting the certificate (chain) in `cert` with the key in `key` (PEM
    /// files).
    pub fn start_smtps(dir: &Path, cert: &Path, key: &Path) -> SmtpServer {
        let tls = (TlsMode::Implicit, cert.to_path_buf(), key.to_path_buf());
        SmtpServer::launch(dir, None, Some(tls), None)
    }

    fn launch(
        dir: &Path,
        auth: Option<(&str, &str)>,
        tls: Option<(TlsMode, PathBuf, PathBuf)>,
        fault: Option<Fault>,
    ) -> SmtpServer {
        let script = dir.join("smtp_server.py");
        std::fs::write(&script, SERVER_PY).expect("write the SMTP server script");
        let mut server = SmtpServer {
            port: free_port(),
            maildir: dir.join("maildir"),
            marker: dir.join("smtp-stalled"),
            script,
            auth: auth.map(|(u, p)| (u.to_string(), p.to_string())),
            tls,
            child: Mutex::new(None),
        };
        server.restart_with_fault(fault);
        server
    }

    fn child(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Kills the server with SIGKILL (no clean shutdown: whatever it was doing is cut off)
    /// and waits until the port refuses connections.
    pub fn kill(&self) {
        if let Some(mut child) = self.child().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(
                Instant::now() < deadline,
                "port {} still accepts after the SMTP server was killed",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (the port refuses connections afterwards).
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Whether a faulty server has stalled (see [`Fault`]).
    pub fn stalled(&self) -> bool {
        self.marker.is_file()
    }

    /// Waits (bounded) until a faulty server stalls on a message; returns how many messages
    /// it had seen then (the stalled one included).
    pub fn wait_for_stall(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(text) = std::fs::read_to_string(&self.marker) {
                return text
                    .trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("marker {}: {text:?}", self.marker.display()));
            }
            if let Some(child) = self.child().as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("the faulty SMTP server exited ({status}) before it stalled");
                }
            }
            assert!(
                Instant::now() < deadline,
                "the SMTP server did not stall within {timeout:?} ({} messages in {})",
                self.messages().len(),
                self.maildir.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// (Re)starts a healthy server on the same port and Maildir; waits until it accepts.
    pub fn restart(&mut self) {
        self.restart_with_fault(None);
    }

    /// (Re)starts the server on the same port and Maildir, misbehaving as `fault` says;
    /// waits until it accepts.
    pub fn restart_with_fault(&mut self, fault: Option<Fault>) {
        self.kill();
        let _ = std::fs::remove_file(&self.marker);
        let mut cmd = Command::new(venv_python());
        cmd.arg(&self.script)
            .arg("127.0.0.1")
            .arg(self.port.to_string())
            .arg(&self.maildir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env_remove("SMTP_FAULT")
            .env_remove("SMTP_TLS_CERT")
            .env_remove("SMTP_TLS_KEY")
            .env_remove("SMTP_TLS_MODE");
        if let Some((mode, cert, key)) = &self.tls {
            let mode = match mode {
                TlsMode::StartTls => "starttls",
                TlsMode::Implicit => "smtps",
            };
            cmd.env("SMTP_TLS_CERT", cert)
                .env("SMTP_TLS_KEY", key)
                .env("SMTP_TLS_MODE", mode);
        }
        if let Some(fault) = fault {
            let (mode, at) = match fault {
                Fault::StallBeforeStoring(n) => ("stall-before-store", n),
                Fault::StallAfterStoring(n) => ("stall-after-store", n),
            };
            assert!(at >= 1, "messages are counted from 1");
            cmd.env(
                "SMTP_FAULT",
                format!("{mode}:{at}:{}:{STALL_SECS}", self.marker.display()),
            );
        }
        if let Some((u, p)) = &self.auth {
            cmd.arg(u).arg(p);
        }
        let mut child = cmd.spawn().expect("start aiosmtpd");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                panic!(
                    "aiosmtpd exited ({status}) before accepting on port {}:\n{err}",
                    self.port
                );
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "aiosmtpd did not accept on port {} within {START_TIMEOUT:?}",
                    self.port
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        *self.child() = Some(child);
    }

    /// Every message delivered so far, oldest file first.
    pub fn messages(&self) -> Vec<Mail> {
        let mut files = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(entries) = std::fs::read_dir(self.maildir.join(sub)) {
                for e in entries.flatten() {
                    let meta = e.metadata().expect("maildir file metadata");
                    files.push((meta.modified().expect("mtime"), e.path()));
                }
            }
        }
        files.sort();
        files
            .into_iter()
            .map(|(_, p)| {
                let raw = std::fs::read_to_string(&p)
                    .unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
                Mail::parse(&raw)
            })
            .collect()
    }

    /// Waits (bounded) until at least `n` messages were delivered; returns them all.
    pub fn wait_for_messages(&self, n: usize, timeout: Duration) -> Vec<Mail> {
        let deadline = Instant::now() + timeout;
        loop {
            let all = self.messages();
            if all.len() >= n {
                return all;
            }
            assert!(
                Instant::now() < deadline,
                "expected {n} messages in {}, found {} after {timeout:?}",
                self.maildir.display(),
                all.len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One delivered e-mail.
#[derive(Debug, Clone)]
pub struct Mail {
    /// Unfolded headers, names lowercase.
    pub headers: Vec<(String, String)>,
    /// The text/plain part, decoded.
    pub text: String,
    /// The text/html part, decoded.
    pub html: String,
    pub raw: String,
}

impl Mail {
    /// The first header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    pub fn subject(&self) -> &str {
        self.header("subject").unwrap_or("")
    }

    /// The recipient (`To:`).
    pub fn to(&self) -> &str {
        self.header("to").unwrap_or("")
    }

    /// The `Message-ID` header.
    pub fn message_id(&self) -> &str {
        self.header("message-id").unwrap_or("")
    }

    fn parse(raw: &str) -> Mail {
        let unix = raw.replace("\r\n", "\n");
        let (headers, body) = split_part(&unix);
        let mut mail = Mail {
            headers: headers.clone(),
            text: String::new(),
            html: String::new(),
            raw: raw.to_string(),
        };
        collect_parts(&headers, body, &mut mail);
        mail
    }
}

fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn split_part(text: &str) -> (Vec<(String, String)>, &str) {
    let (head, body) = text.split_once("\n\n").unwrap_or((text, ""));
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = headers.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    (headers, body)
}

fn collect_parts(headers: &[(String, String)], body: &str, mail: &mut Mail) {
    let ct = header(headers, "content-type")
        .unwrap_or("text/plain")
        .to_string();
    let lower = ct.to_ascii_lowercase();
    if lower.starts_with("multipart/") {
        let boundary = ct
            .split(';')
            .filter_map(|p| p.trim().strip_prefix("boundary="))
            .next()
            .map(|b| b.trim_matches('"').to_string())
            .expect("multipart boundary");
        let delimiter = format!("--{boundary}");
        for part in body.split(&delimiter).skip(1) {
            if part.starts_with("--") {
                break;
            }
            let part = part.strip_prefix('\n').unwrap_or(part);
            let (h, b) = split_part(part);
            collect_parts(&h, b, mail);
        }
        return;
    }
    let cte = header(headers, "content-transfer-encoding")
        .unwrap_or("7bit")
        .to_ascii_lowercase();
    let decoded = match cte.as_str() {
        "base64" => {
            let joined: String = body.split_whitespace().collect();
            String::from_utf8(openssl::base64::decode_block(&joined).expect("base64 part"))
                .expect("UTF-8 part")
        }
        "quoted-printable" => quoted_printable(body),
        _ => body.to_string(),
    };
    if lower.starts_with("text/html") {
        mail.html.push_str(&decoded);
    } else if lower.starts_with("text/plain") {
        mail.text.push_str(&decoded);
    }
}

fn quoted_printable(body: &str) -> String {
    let joined = body.replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' && i + 2 < bytes.len() + 1 {
            if let Some(hex) = joined.get(i + 1..i + 3) {
                if let Ok(b) = u8::from_str_radix(hex, 16) {
                    out.push(b);
                    i += 3;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
