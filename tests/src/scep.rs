//! A real SCEP server for the SCEP tests: Debian's `scep` package (micromdm's `scepserver`,
//! which `scripts/setup` installs when it can) on a free loopback port.
//!
//! [`ScepServer::start`] makes a CA in a fresh depot (`scepserver ca -init`, RSA 2048),
//! starts `scepserver -depot DIR -port P -challenge SECRET -allowrenew 0 -debug -crtvalid D`
//! (365 days unless [`ScepServer::set_validity_days`]), and waits
//! (bounded) until the port accepts; the process is killed on drop. [`ScepServer::stop`] and
//! [`ScepServer::restart`] take it down and bring it back on the same port and depot. Its log
//! ([`ScepServer::log`]) names every operation it served, so a test can show that a client
//! sent nothing after GetCACert; the depot's `index.txt` lists the certificates it issued.
//!
//! `None` from [`ScepServer::start`] means scepserver is not installed: the test then says
//! SKIPPED (only then).

use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::smtp::free_port;

/// How long scepserver may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running (or stopped) scepserver with its depot.
pub struct ScepServer {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    pub challenge: String,
    /// `-crtvalid`: how long issued certificates are valid, in days.
    pub validity_days: u32,
    starts: usize,
}

/// The scepserver binary, when installed.
fn binary() -> Option<PathBuf> {
    ["/usr/bin/scepserver", "/usr/local/bin/scepserver"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

impl ScepServer {
    /// A new CA in `dir/depot` and the server on a free port, requiring `challenge`.
    /// `None` (after printing SKIPPED) when scepserver is not installed.
    pub fn start(dir: &Path, challenge: &str) -> Option<ScepServer> {
        let Some(bin) = binary() else {
            eprintln!(
                "SKIPPED: scepserver is not installed (scripts/setup installs Debian's scep package when it can)"
            );
            return None;
        };
        fs::create_dir_all(dir).expect("create the SCEP server's folder");
        let out = Command::new(&bin)
            .args(["ca", "-init", "-depot", "depot", "-keySize", "2048"])
            .args(["-organization", "certctl-test", "-country", "DE"])
            .current_dir(dir)
            .output()
            .expect("run scepserver ca -init");
        assert!(
            out.status.success(),
            "scepserver ca -init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut server = ScepServer {
            child: None,
            port: free_port(),
            dir: dir.to_path_buf(),
            challenge: challenge.to_string(),
            validity_days: 365,
            starts: 0,
        };
        server.restart();
        Some(server)
    }

    /// Starts the server again (same port, same depot), waiting until it accepts.
    pub fn restart(&mut self) {
        self.stop();
        let bin = binary().expect("scepserver");
        self.starts += 1;
        let log = fs::File::create(self.dir.join(format!("server.{}.log", self.starts)))
            .expect("create the server log");
        let child = Command::new(bin)
            .args(["-depot", "depot", "-port", &self.port.to_string()])
            .args(["-challenge", &self.challenge, "-allowrenew", "0", "-debug"])
            .args(["-crtvalid", &self.validity_days.to_string()])
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start scepserver");
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "scepserver exited ({status}) before accepting:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "scepserver did not accept on port {} within {START_TIMEOUT:?}:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Restarts the server issuing certificates valid for `days`.
    pub fn set_validity_days(&mut self, days: u32) {
        self.validity_days = days;
        self.restart();
    }

    /// Kills the server (the port refuses connections until [`ScepServer::restart`]).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `http://127.0.0.1:PORT/scep`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/scep", self.port)
    }

    /// The CA certificate (PEM) the depot holds.
    pub fn ca_pem(&self) -> PathBuf {
        self.dir.join("depot/ca.pem")
    }

    /// The CA certificate's SHA-256, `aa:bb:...`.
    pub fn ca_fingerprint(&self) -> String {
        let pem = fs::read(self.ca_pem()).expect("read ca.pem");
        let cert = openssl::x509::X509::from_pem(&pem).expect("ca.pem");
        let digest = cert
            .digest(openssl::hash::MessageDigest::sha256())
            .expect("digest");
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    }

    /// Everything the server logged, all its runs.
    pub fn log(&self) -> String {
        (1..=self.starts)
            .map(|n| {
                fs::read_to_string(self.dir.join(format!("server.{n}.log"))).unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("")
    }

    /// The log lines of one operation (`op=GetCACert`, `op=PKIOperation`, ...).
    pub fn served(&self, op: &str) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains(&format!("op={op} ")))
            .count()
    }

    /// How many certificates the CA issued (the depot's index.txt).
    pub fn issued(&self) -> usize {
        fs::read_to_string(self.dir.join("depot/index.txt"))
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count()
    }
}

impl Drop for ScepServer {
    fn drop(&mut self) {
        self.stop();
    }
}
