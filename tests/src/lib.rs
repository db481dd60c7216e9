//! Test harness for the certctl end-to-end tests.
//!
//! Three parts, in the spirit of ripgrep's `tests/util.rs`:
//!
//! - [`TestEnv`]: a throw-away directory with a store inside it, and a runner for the built
//!   `certctl` binary ([`TestEnv::certctl`], [`TestEnv::cmd`]) that never inherits `CERTCTL_*`
//!   variables from the developer's shell, never touches the real home directory, and never
//!   hangs (the child is killed after a timeout).
//! - [`RunResult`]: what a run produced; its [`Display`](fmt::Display) shows the command line,
//!   working directory, exit code, stdout and stderr, so every failed assertion that prints it
//!   says exactly what the binary did.
//! - [`CertFactory`] and the writers in [`files`]: certificates generated on the spot (rcgen for
//!   the certificates, the openssl crate for RSA keys, digests and PKCS#12) with the values used
//!   kept alongside, so tests compare the CLI's JSON against what was really put in the file.
//!   No certificate is pasted into the sources.

pub mod daemon;
pub mod hostile;
pub mod prometheus;
pub mod scep;
pub mod smtp;
pub mod tls;

use std::cell::Cell;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use serde_json::{json, Value};
use time::OffsetDateTime;

/// One minute, in seconds (validity offsets are seconds relative to now).
pub const MINUTE: i64 = 60;
/// One hour, in seconds.
pub const HOUR: i64 = 3600;
/// One day, in seconds.
pub const DAY: i64 = 86_400;

/// How long a certificate may be away from expiry and still count as `expiring` (contract).
pub const EXPIRING_WINDOW: i64 = 30 * DAY;

/// Default limit for one run of the binary.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The current time as Unix seconds.
pub fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// Formats Unix seconds as the contract's RFC 3339 UTC form (`2026-11-25T17:00:00Z`).
pub fn rfc3339(t: i64) -> String {
    let dt = OffsetDateTime::from_unix_timestamp(t).expect("timestamp in range");
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    dt.format(&fmt).expect("formattable date")
}

/// Parses the contract's RFC 3339 form back to Unix seconds.
pub fn parse_rfc3339(s: &str) -> i64 {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("`{s}` is not RFC 3339: {e}"))
        .unix_timestamp()
}

/// Lowercase hex of some bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 (computed by openssl) as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&openssl::sha::sha256(bytes))
}

/// A path as `&str`; every path the tests make lives in a UTF-8 temp dir.
pub fn s(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

// ---------------------------------------------------------------------------------------------
// Running the binary
// ---------------------------------------------------------------------------------------------

/// Finds a binary of the workspace in the target directory the tests were built into.
///
/// The test executable is `TARGET/PROFILE/deps/NAME-HASH`, so the binaries sit two levels up.
/// `CARGO_TARGET_DIR` (at run time) and `CARGO_MANIFEST_DIR/../target` are fallbacks for
/// unusual layouts.
pub fn bin_path(name: &str) -> PathBuf {
    let file = format!("{name}{}", std::env::consts::EXE_SUFFIX);
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(profile_dir) = exe.parent().and_then(Path::parent) {
            candidates.push(profile_dir.join(&file));
        }
    }
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(dir).join("debug").join(&file));
    }
    candidates.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/debug")
            .join(&file),
    );
    for c in &candidates {
        if c.is_file() {
            return c.clone();
        }
    }
    panic!(
        "the `{name}` binary was not found (looked at {candidates:?}): \
         run `cargo build --workspace --bins` first"
    );
}

/// A temporary directory with a certctl store inside it.
///
/// Everything lives under one canonical temp path, so the paths the tests pass to the binary
/// are the paths it reports back. `HOME` and `XDG_DATA_HOME` of the child point inside it.
pub struct TestEnv {
    dir: tempfile::TempDir,
    root: PathBuf,
    store: PathBuf,
}

impl Default for TestEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl TestEnv {
    /// A fresh directory; the store path is `ROOT/store` (not created: certctl creates it).
    pub fn new() -> TestEnv {
        let dir = tempfile::Builder::new()
            .prefix("certctl-e2e-")
            .tempdir()
            .expect("create temp dir");
        let root = dir.path().canonicalize().expect("canonical temp dir");
        let store = root.join("store");
        TestEnv { dir, root, store }
    }

    /// The root of the temp directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The store directory passed with `--store`.
    pub fn store(&self) -> &Path {
        &self.store
    }

    /// The fake home directory the child sees (`HOME`; `XDG_DATA_HOME` is `HOME/.local/share`).
    pub fn home(&self) -> PathBuf {
        self.root.join("home")
    }

    /// `ROOT/rel`, with its parent directories created.
    pub fn file(&self, rel: &str) -> PathBuf {
        let p = self.root.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("create parent dirs");
        }
        p
    }

    /// `ROOT/rel` as a created directory.
    pub fn mkdir(&self, rel: &str) -> PathBuf {
        let p = self.root.join(rel);
        std::fs::create_dir_all(&p).expect("create dir");
        p
    }

    /// A command for `certctl` with `--store STORE` in front of `args`.
    pub fn cmd(&self) -> Cmd<'_> {
        Cmd {
            env: self,
            program: Program::Workspace("certctl"),
            args: Vec::new(),
            envs: Vec::new(),
            store: StoreArg::Default,
            cwd: self.root.clone(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Runs `certctl --store STORE ARGS...` and returns what happened (no assertion).
    pub fn certctl(&self, args: &[&str]) -> RunResult {
        self.cmd().args(args).run()
    }

    /// `certctl list --json EXTRA...`, asserted successful: the array of certificate objects
    /// and the run (whose time window [`assert_cert_json`] needs).
    pub fn list(&self, extra: &[&str]) -> (Vec<Value>, RunResult) {
        let mut args = vec!["list", "--json"];
        args.extend_from_slice(extra);
        let r = self.certctl(&args);
        r.success();
        match r.json() {
            Value::Array(items) => (items, r),
            other => panic!("`list --json` did not print an array but {other}{r}"),
        }
    }

    /// Like [`TestEnv::list`], only the items.
    pub fn list_json(&self, extra: &[&str]) -> Vec<Value> {
        self.list(extra).0
    }

    /// Keeps the temp dir after the test (for debugging); returns its path.
    pub fn keep(self) -> PathBuf {
        let root = self.root.clone();
        let _ = self.dir.keep();
        root
    }
}

enum Program {
    Workspace(&'static str),
    Path(PathBuf),
}

enum StoreArg {
    Default,
    None,
    Path(PathBuf),
}

/// A command line being put together; [`Cmd::run`] runs it.
pub struct Cmd<'a> {
    env: &'a TestEnv,
    program: Program,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    store: StoreArg,
    cwd: PathBuf,
    timeout: Duration,
}

impl<'a> Cmd<'a> {
    /// Runs another binary of the workspace (`certd`) instead of `certctl`.
    pub fn bin(mut self, name: &'static str) -> Self {
        self.program = Program::Workspace(name);
        self
    }

    /// Runs an arbitrary program (the harness's own tests use stand-ins).
    pub fn program(mut self, path: impl Into<PathBuf>) -> Self {
        self.program = Program::Path(path.into());
        self
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.args.push(a.as_ref().to_owned());
        self
    }

    pub fn args<S: AsRef<OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable for the child (after `CERTCTL_*` were cleared).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.envs
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Passes no `--store` at all.
    pub fn no_store(mut self) -> Self {
        self.store = StoreArg::None;
        self
    }

    /// Passes `--store PATH` (in front of the arguments) instead of the env's store.
    pub fn store(mut self, path: impl Into<PathBuf>) -> Self {
        self.store = StoreArg::Path(path.into());
        self
    }

    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = dir.into();
        self
    }

    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Runs the command to completion (or kills it at the timeout) and returns the result.
    pub fn run(self) -> RunResult {
        let bin = match &self.program {
            Program::Workspace(name) => bin_path(name),
            Program::Path(p) => p.clone(),
        };
        let mut argv: Vec<OsString> = Vec::new();
        match &self.store {
            StoreArg::Default => {
                argv.push("--store".into());
                argv.push(self.env.store.clone().into_os_string());
            }
            StoreArg::Path(p) => {
                argv.push("--store".into());
                argv.push(p.clone().into_os_string());
            }
            StoreArg::None => {}
        }
        argv.extend(self.args.iter().cloned());

        let home = self.env.home();
        std::fs::create_dir_all(&home).expect("create fake home");
        let mut command = Command::new(&bin);
        command
            .args(&argv)
            .current_dir(&self.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("CERTCTL_") {
                command.env_remove(&k);
            }
        }
        command
            .env("HOME", &home)
            .env("XDG_DATA_HOME", home.join(".local/share"))
            .env("NO_COLOR", "1");
        for (k, v) in &self.envs {
            command.env(k, v);
        }

        let cmdline = std::iter::once(bin.as_os_str())
            .chain(argv.iter().map(OsString::as_os_str))
            .map(|a| shell_quote(&a.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(" ");
        let env_note = self
            .envs
            .iter()
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    k.to_string_lossy(),
                    shell_quote(&v.to_string_lossy())
                )
            })
            .collect::<Vec<_>>()
            .join(" ");

        let started = now();
        let begun = Instant::now();
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {cmdline}: {e}"));
        let out_reader = spawn_reader(child.stdout.take().expect("piped stdout"));
        let err_reader = spawn_reader(child.stderr.take().expect("piped stderr"));
        let mut timed_out = false;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for child") {
                break status;
            }
            if begun.elapsed() >= self.timeout {
                timed_out = true;
                let _ = child.kill();
                break child.wait().expect("wait for killed child");
            }
            thread::sleep(Duration::from_millis(5));
        };
        let stdout = out_reader.join().expect("stdout reader");
        let stderr = err_reader.join().expect("stderr reader");
        let result = RunResult {
            cmdline: if env_note.is_empty() {
                cmdline
            } else {
                format!("{env_note} {cmdline}")
            },
            cwd: self.cwd,
            status,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            started,
            finished: now(),
        };
        if timed_out {
            panic!(
                "certctl did not finish within {:?} and was killed\n{result}",
                self.timeout
            );
        }
        result
    }
}

fn spawn_reader(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@%+,".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// What one run of the binary did.
#[derive(Debug)]
pub struct RunResult {
    /// The command line, shell-quoted, with the variables the test set in front.
    pub cmdline: String,
    pub cwd: PathBuf,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// Unix time just before the child started; with `finished`, the window in which the
    /// binary read its clock (for `days_left` and `status`).
    pub started: i64,
    pub finished: i64,
}

impl fmt::Display for RunResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "\n===== command: {}", self.cmdline)?;
        writeln!(f, "===== cwd: {}", self.cwd.display())?;
        match self.status.code() {
            Some(c) => writeln!(f, "===== exit code: {c}")?,
            None => writeln!(f, "===== exit status: {} (no code)", self.status)?,
        }
        writeln!(f, "===== stdout:\n{}", self.stdout)?;
        writeln!(f, "===== stderr:\n{}", self.stderr)?;
        write!(f, "=====")
    }
}

impl RunResult {
    /// The exit code (panics, with the report, if the process died from a signal).
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| panic!("certctl was killed by a signal\n{self}"))
    }

    /// Asserts exit code 0.
    #[track_caller]
    pub fn success(&self) -> &Self {
        self.expect_code(0)
    }

    /// Asserts a given exit code.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.status.code(),
            Some(code),
            "expected exit code {code}{self}"
        );
        self
    }

    /// Asserts that stderr contains `needle` (case-insensitive).
    #[track_caller]
    pub fn stderr_has(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.to_lowercase().contains(&needle.to_lowercase()),
            "stderr should contain {needle:?}{self}"
        );
        self
    }

    /// Asserts that stdout contains `needle` (case-insensitive).
    #[track_caller]
    pub fn stdout_has(&self, needle: &str) -> &Self {
        assert!(
            self.stdout.to_lowercase().contains(&needle.to_lowercase()),
            "stdout should contain {needle:?}{self}"
        );
        self
    }

    /// Stdout parsed as JSON (panics with the report if it is not).
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}){self}"))
    }

    /// The `error: PATH: CAUSE` lines of stderr, as (path, cause) pairs; the path is matched
    /// against `paths` because a path may contain `: `.
    pub fn error_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| l.starts_with("error: "))
            .collect()
    }

    /// Asserts that stderr has a line `error: PATH: CAUSE` with a non-empty cause, and returns
    /// the cause.
    #[track_caller]
    pub fn error_for(&self, path: &Path) -> String {
        let prefix = format!("error: {}: ", path.display());
        match self.stderr.lines().find(|l| l.starts_with(&prefix)) {
            Some(line) => {
                let cause = line[prefix.len()..].trim().to_string();
                assert!(
                    !cause.is_empty(),
                    "empty cause for {}{self}",
                    path.display()
                );
                cause
            }
            None => panic!("stderr has no line starting with {prefix:?}{self}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------------------------

/// The key of a generated certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyKind {
    EcP256,
    EcP384,
    Ed25519,
    Rsa2048,
}

impl KeyKind {
    pub const ALL: [KeyKind; 4] = [
        KeyKind::EcP256,
        KeyKind::EcP384,
        KeyKind::Ed25519,
        KeyKind::Rsa2048,
    ];

    /// The contract's name for the key (`key` in JSON, `by_key` in stats).
    pub fn label(self) -> &'static str {
        match self {
            KeyKind::EcP256 => "EC P-256",
            KeyKind::EcP384 => "EC P-384",
            KeyKind::Ed25519 => "Ed25519",
            KeyKind::Rsa2048 => "RSA 2048",
        }
    }

    /// A new key pair, made by openssl and handed to rcgen as PKCS#8 PEM: rcgen with ring
    /// cannot generate RSA keys, and OpenSSL 3.0 cannot read ring's PKCS#8 v2 Ed25519 keys,
    /// so openssl makes every key and the PEM is one that both (and the CLI) read.
    pub fn generate(self) -> KeyPair {
        KeyPair::from_pem(&self.generate_pem()).expect("rcgen reads the openssl key")
    }

    /// A new private key as PKCS#8 PEM.
    pub fn generate_pem(self) -> String {
        use openssl::ec::{EcGroup, EcKey};
        use openssl::nid::Nid;
        let ec = |nid: Nid| {
            let group = EcGroup::from_curve_name(nid).expect("curve");
            PKey::from_ec_key(EcKey::generate(&group).expect("EC key")).expect("PKey")
        };
        let pkey = match self {
            KeyKind::EcP256 => ec(Nid::X9_62_PRIME256V1),
            KeyKind::EcP384 => ec(Nid::SECP384R1),
            KeyKind::Ed25519 => PKey::generate_ed25519().expect("Ed25519 key"),
            KeyKind::Rsa2048 => {
                PKey::from_rsa(openssl::rsa::Rsa::generate(2048).expect("RSA key")).expect("PKey")
            }
        };
        let pem = pkey.private_key_to_pem_pkcs8().expect("PKCS#8 PEM");
        String::from_utf8(pem).expect("PEM is ASCII")
    }
}

/// Subject alternative names, as the contract's `sans` object has them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sans {
    pub dns: Vec<String>,
    pub ip: Vec<String>,
    pub email: Vec<String>,
    pub uri: Vec<String>,
}

impl Sans {
    /// `{"dns":[...],"ip":[...],"email":[...],"uri":[...]}`
    pub fn to_json(&self) -> Value {
        json!({"dns": self.dns, "ip": self.ip, "email": self.email, "uri": self.uri})
    }
}

/// What to generate. Validity is given relative to now, in seconds, and always set.
#[derive(Clone, Debug)]
pub struct CertSpec {
    pub cn: Option<String>,
    pub org: Option<String>,
    pub key: KeyKind,
    pub sans: Sans,
    /// Seconds from now (negative: in the past).
    pub not_before: i64,
    /// Seconds from now (negative: in the past).
    pub not_after: i64,
    pub serial: Option<u64>,
    pub is_ca: bool,
}

impl CertSpec {
    /// A leaf: EC P-256, valid from a day ago for 90½ days from now, organisation
    /// `Certctl E2E`.
    pub fn leaf(cn: &str) -> CertSpec {
        CertSpec {
            cn: Some(cn.to_string()),
            org: Some("Certctl E2E".to_string()),
            key: KeyKind::EcP256,
            sans: Sans::default(),
            not_before: -DAY,
            not_after: 90 * DAY + 12 * HOUR,
            serial: None,
            is_ca: false,
        }
    }

    /// A CA: EC P-256, valid from 30 days ago for ten years.
    pub fn ca(cn: &str) -> CertSpec {
        CertSpec {
            is_ca: true,
            not_before: -30 * DAY,
            not_after: 3650 * DAY + 12 * HOUR,
            ..CertSpec::leaf(cn)
        }
    }

    pub fn key(mut self, key: KeyKind) -> Self {
        self.key = key;
        self
    }

    pub fn org(mut self, org: Option<&str>) -> Self {
        self.org = org.map(str::to_string);
        self
    }

    pub fn no_cn(mut self) -> Self {
        self.cn = None;
        self
    }

    pub fn dns(mut self, name: &str) -> Self {
        self.sans.dns.push(name.to_string());
        self
    }

    pub fn ip(mut self, ip: &str) -> Self {
        let parsed: IpAddr = ip.parse().expect("IP address");
        self.sans.ip.push(parsed.to_string());
        self
    }

    pub fn email(mut self, email: &str) -> Self {
        self.sans.email.push(email.to_string());
        self
    }

    pub fn uri(mut self, uri: &str) -> Self {
        self.sans.uri.push(uri.to_string());
        self
    }

    /// Validity from `not_before` to `not_after`, both seconds relative to now.
    pub fn valid(mut self, not_before: i64, not_after: i64) -> Self {
        self.not_before = not_before;
        self.not_after = not_after;
        self
    }

    /// Valid since yesterday, expiring in `days` days and 12 hours (the half day keeps
    /// `days_left` away from a boundary while the test runs).
    pub fn expires_in_days(self, days: i64) -> Self {
        let nb = (-DAY).min(days * DAY - DAY);
        self.valid(nb, days * DAY + 12 * HOUR)
    }

    pub fn serial(mut self, serial: u64) -> Self {
        self.serial = Some(serial);
        self
    }
}

/// A generated certificate with its key and the values it was made from.
pub struct GeneratedCert {
    pub cn: Option<String>,
    /// Subject DN as an RFC 2253 string (`CN=a,O=b`: last RDN first).
    pub subject: String,
    /// Issuer DN as an RFC 2253 string.
    pub issuer: String,
    pub serial: u64,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    pub key: KeyKind,
    pub sans: Sans,
    pub is_ca: bool,
    pub der: Vec<u8>,
    pub pem: String,
    /// PKCS#8 PEM of the private key.
    pub key_pem: String,
    /// SHA-256 of the DER, lowercase hex, computed by openssl.
    pub fingerprint: String,
    key_pair: KeyPair,
    params: CertificateParams,
}

impl fmt::Debug for GeneratedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedCert")
            .field("subject", &self.subject)
            .field("issuer", &self.issuer)
            .field("serial", &self.serial_hex())
            .field("not_before", &rfc3339(self.not_before))
            .field("not_after", &rfc3339(self.not_after))
            .field("key", &self.key)
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

impl GeneratedCert {
    /// The serial as the contract prints it: lowercase hex, no leading zeros.
    pub fn serial_hex(&self) -> String {
        format!("{:x}", self.serial)
    }

    pub fn not_before_rfc3339(&self) -> String {
        rfc3339(self.not_before)
    }

    pub fn not_after_rfc3339(&self) -> String {
        rfc3339(self.not_after)
    }

    /// The fingerprint as `AB:CD:...` (how people paste it).
    pub fn fingerprint_colons(&self) -> String {
        self.fingerprint
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap().to_uppercase())
            .collect::<Vec<_>>()
            .join(":")
    }

    /// `ephemeral` (validity ≤ 24 h), `permanent`, or `None` for a CA.
    pub fn credential_kind(&self) -> Option<&'static str> {
        if self.is_ca {
            None
        } else if self.not_after - self.not_before <= 24 * HOUR {
            Some("ephemeral")
        } else {
            Some("permanent")
        }
    }

    /// The contract's status at time `t` (expiring = within 30 days).
    pub fn status_at(&self, t: i64) -> &'static str {
        if self.not_after <= t {
            "expired"
        } else if self.not_before > t {
            "not-yet-valid"
        } else if self.not_after <= t + EXPIRING_WINDOW {
            "expiring"
        } else {
            "valid"
        }
    }

    /// `days_left` at time `t`: floor((not_after - t) / 86400).
    pub fn days_left_at(&self, t: i64) -> i64 {
        (self.not_after - t).div_euclid(DAY)
    }

    /// The certificate as an openssl object.
    pub fn x509(&self) -> X509 {
        X509::from_der(&self.der).expect("openssl parses the generated DER")
    }

    /// The private key as an openssl object.
    pub fn pkey(&self) -> PKey<Private> {
        PKey::private_key_from_pem(self.key_pem.as_bytes()).expect("openssl reads the key")
    }

    /// SHA-256 of the DER SubjectPublicKeyInfo, computed by openssl from the certificate.
    pub fn spki_sha256(&self) -> String {
        let spki = self
            .x509()
            .public_key()
            .and_then(|k| k.public_key_to_der())
            .expect("SPKI");
        sha256_hex(&spki)
    }

    /// The signature algorithm's long name as openssl reports it (`ecdsa-with-SHA256`,
    /// `sha256WithRSAEncryption`, `ED25519`).
    pub fn signature_algorithm(&self) -> String {
        self.x509()
            .signature_algorithm()
            .object()
            .nid()
            .long_name()
            .expect("known signature algorithm")
            .to_string()
    }
}

/// Makes certificates: a root CA, an intermediate it signed, and leaves signed by the
/// intermediate (or by any other generated CA).
pub struct CertFactory {
    root: GeneratedCert,
    intermediate: GeneratedCert,
    next_serial: Cell<u64>,
}

impl Default for CertFactory {
    fn default() -> Self {
        Self::new()
    }
}

impl CertFactory {
    /// A root (`Certctl E2E Root CA`, EC P-384) and an intermediate
    /// (`Certctl E2E Issuing CA`, EC P-256).
    pub fn new() -> CertFactory {
        // Serials: unique within a factory, high bit clear, with some leading zero nibbles
        // dropped to exercise "no leading zeros".
        let seed = (now() as u64 & 0xffff) << 24;
        let next_serial = Cell::new(0x0a_0000_0000_0000 | seed);
        let mut f = CertFactory {
            root: placeholder(),
            intermediate: placeholder(),
            next_serial,
        };
        let root = f.self_signed(CertSpec::ca("Certctl E2E Root CA").key(KeyKind::EcP384));
        let intermediate = f.issue(CertSpec::ca("Certctl E2E Issuing CA"), &root);
        f.root = root;
        f.intermediate = intermediate;
        f
    }

    pub fn root(&self) -> &GeneratedCert {
        &self.root
    }

    pub fn intermediate(&self) -> &GeneratedCert {
        &self.intermediate
    }

    /// A certificate signed by the intermediate.
    pub fn leaf(&self, spec: CertSpec) -> GeneratedCert {
        self.issue(spec, &self.intermediate)
    }

    /// A certificate signed by `issuer` (which must be a generated CA).
    pub fn issue(&self, spec: CertSpec, issuer: &GeneratedCert) -> GeneratedCert {
        let issuer_handle = Issuer::from_params(&issuer.params, &issuer.key_pair);
        self.build(spec, Some((&issuer_handle, issuer.subject.clone())))
    }

    /// A self-signed certificate.
    pub fn self_signed(&self, spec: CertSpec) -> GeneratedCert {
        self.build(spec, None::<(&Issuer<'_, &KeyPair>, String)>)
    }

    fn build(
        &self,
        spec: CertSpec,
        issuer: Option<(&Issuer<'_, &KeyPair>, String)>,
    ) -> GeneratedCert {
        let serial = spec.serial.unwrap_or_else(|| {
            let s = self.next_serial.get();
            self.next_serial.set(s + 1);
            s
        });
        assert!(serial >> 63 == 0, "keep the serial's high bit clear");
        let t0 = now();
        let not_before = t0 + spec.not_before;
        let not_after = t0 + spec.not_after;

        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        let mut rdns = Vec::new();
        if let Some(org) = &spec.org {
            dn.push(DnType::OrganizationName, org.as_str());
            rdns.push(format!("O={org}"));
        }
        if let Some(cn) = &spec.cn {
            dn.push(DnType::CommonName, cn.as_str());
            rdns.push(format!("CN={cn}"));
        }
        rdns.reverse();
        let subject = rdns.join(",");
        params.distinguished_name = dn;
        params.not_before = OffsetDateTime::from_unix_timestamp(not_before).unwrap();
        params.not_after = OffsetDateTime::from_unix_timestamp(not_after).unwrap();
        params.serial_number = Some(SerialNumber::from(serial));
        params.use_authority_key_identifier_extension = issuer.is_some();
        let mut sans = Vec::new();
        for d in &spec.sans.dns {
            sans.push(SanType::DnsName(
                d.as_str().try_into().expect("IA5 DNS name"),
            ));
        }
        for ip in &spec.sans.ip {
            sans.push(SanType::IpAddress(ip.parse().expect("IP")));
        }
        for e in &spec.sans.email {
            sans.push(SanType::Rfc822Name(
                e.as_str().try_into().expect("IA5 email"),
            ));
        }
        for u in &spec.sans.uri {
            sans.push(SanType::URI(u.as_str().try_into().expect("IA5 URI")));
        }
        params.subject_alt_names = sans;
        if spec.is_ca {
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
        } else {
            params.is_ca = IsCa::ExplicitNoCa;
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
        }

        let key_pem = spec.key.generate_pem();
        let key_pair = KeyPair::from_pem(&key_pem).expect("rcgen reads the openssl key");
        let (cert, issuer_dn) = match issuer {
            Some((issuer, issuer_dn)) => (
                params
                    .signed_by(&key_pair, issuer)
                    .expect("sign certificate"),
                issuer_dn,
            ),
            None => (
                params
                    .self_signed(&key_pair)
                    .expect("self-sign certificate"),
                subject.clone(),
            ),
        };
        let der = cert.der().to_vec();
        GeneratedCert {
            cn: spec.cn,
            subject,
            issuer: issuer_dn,
            serial,
            not_before,
            not_after,
            key: spec.key,
            sans: spec.sans,
            is_ca: spec.is_ca,
            fingerprint: sha256_hex(&der),
            pem: cert.pem(),
            key_pem,
            der,
            key_pair,
            params,
        }
    }
}

/// An empty stand-in while the factory builds its own CAs.
fn placeholder() -> GeneratedCert {
    GeneratedCert {
        cn: None,
        subject: String::new(),
        issuer: String::new(),
        serial: 0,
        not_before: 0,
        not_after: 0,
        key: KeyKind::EcP256,
        sans: Sans::default(),
        is_ca: false,
        der: Vec::new(),
        pem: String::new(),
        key_pem: String::new(),
        fingerprint: String::new(),
        key_pair: KeyKind::EcP256.generate(),
        params: CertificateParams::default(),
    }
}

// ---------------------------------------------------------------------------------------------
// Comparing JSON with generated certificates
// ---------------------------------------------------------------------------------------------

/// Finds the certificate object with a given fingerprint in a JSON array.
#[track_caller]
pub fn find_fp<'v>(items: &'v [Value], fingerprint: &str) -> &'v Value {
    items
        .iter()
        .find(|c| c["fingerprint_sha256"] == fingerprint)
        .unwrap_or_else(|| {
            panic!(
                "no certificate {fingerprint} in\n{}",
                serde_json::to_string_pretty(items).unwrap()
            )
        })
}

/// The `fingerprint_sha256` values of a JSON array, sorted.
pub fn fingerprints(items: &[Value]) -> Vec<String> {
    let mut fps: Vec<String> = items
        .iter()
        .map(|c| {
            c["fingerprint_sha256"]
                .as_str()
                .unwrap_or_else(|| panic!("no fingerprint_sha256 in {c}"))
                .to_string()
        })
        .collect();
    fps.sort();
    fps
}

/// The fingerprints of generated certificates, sorted.
pub fn expected_fingerprints(certs: &[&GeneratedCert]) -> Vec<String> {
    let mut fps: Vec<String> = certs.iter().map(|c| c.fingerprint.clone()).collect();
    fps.sort();
    fps.dedup();
    fps
}

/// Asserts that a JSON certificate object describes `cert`: every field that follows from the
/// generator's values (and, for `days_left`/`status`, from the time window of `run`).
#[track_caller]
pub fn assert_cert_json(actual: &Value, cert: &GeneratedCert, run: &RunResult) {
    let ctx = || {
        format!(
            "\nexpected: {cert:?}\nactual: {}",
            serde_json::to_string_pretty(actual).unwrap()
        )
    };
    let expect = |field: &str, want: Value| {
        assert_eq!(actual[field], want, "field `{field}` differs{}", ctx());
    };
    expect("fingerprint_sha256", json!(cert.fingerprint));
    expect("subject", json!(cert.subject));
    expect("subject_cn", json!(cert.cn));
    expect("issuer", json!(cert.issuer));
    expect("serial", json!(cert.serial_hex()));
    expect("not_before", json!(cert.not_before_rfc3339()));
    expect("not_after", json!(cert.not_after_rfc3339()));
    expect("key", json!(cert.key.label()));
    expect("is_ca", json!(cert.is_ca));
    expect("sans", cert.sans.to_json());
    expect("credential_kind", json!(cert.credential_kind()));
    expect("spki_sha256", json!(cert.spki_sha256()));
    expect("signature_algorithm", json!(cert.signature_algorithm()));

    let days = &actual["days_left"];
    let allowed_days = [
        cert.days_left_at(run.started),
        cert.days_left_at(run.finished),
    ];
    assert!(
        days.as_i64().is_some_and(|d| allowed_days.contains(&d)),
        "field `days_left` is {days}, expected one of {allowed_days:?}{}",
        ctx()
    );
    if actual["revoked"] != json!(true) {
        let status = &actual["status"];
        let allowed = [cert.status_at(run.started), cert.status_at(run.finished)];
        assert!(
            status.as_str().is_some_and(|s| allowed.contains(&s)),
            "field `status` is {status}, expected one of {allowed:?}{}",
            ctx()
        );
    }
}

/// The `{"kind":"file","path","index"}` part of the sources of a certificate object, as
/// (path, index, gone) triples, sorted.
pub fn file_sources(cert: &Value) -> Vec<(String, u64, bool)> {
    let mut out: Vec<(String, u64, bool)> = cert["sources"]
        .as_array()
        .unwrap_or_else(|| panic!("`sources` is not an array in {cert}"))
        .iter()
        .filter(|s| s["kind"] == "file")
        .map(|s| {
            (
                s["path"].as_str().expect("source path").to_string(),
                s["index"].as_u64().expect("source index"),
                !s["gone_since"].is_null(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Parses CSV (RFC 4180: quoted fields, doubled quotes, CRLF or LF) into rows of fields.
pub fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut in_quotes = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, in_quotes) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', true) => in_quotes = false,
            ('"', false) if field.is_empty() => in_quotes = true,
            (',', false) => row.push(std::mem::take(&mut field)),
            ('\r', false) if chars.peek() == Some(&'\n') => {}
            ('\n', false) => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (c, _) => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

/// Writers for the certificate files the tests scan, good and bad.
pub mod files {
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;
    use std::process::Command;

    use openssl::pkcs12::Pkcs12;
    use openssl::stack::Stack;

    use super::GeneratedCert;

    /// One block of a PEM file.
    pub enum Pem<'a> {
        /// The certificate.
        Cert(&'a GeneratedCert),
        /// The certificate's private key (`PRIVATE KEY`).
        Key(&'a GeneratedCert),
    }

    fn write(path: &Path, bytes: &[u8]) {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create parent dirs");
        }
        std::fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// PEM text with the given blocks in order.
    pub fn pem_text(parts: &[Pem<'_>]) -> String {
        let mut out = String::new();
        for part in parts {
            let block = match part {
                Pem::Cert(c) => &c.pem,
                Pem::Key(c) => &c.key_pem,
            };
            out.push_str(block.trim_end());
            out.push('\n');
        }
        out
    }

    /// A PEM file with the certificates, in order.
    pub fn pem(path: &Path, certs: &[&GeneratedCert]) {
        let parts: Vec<Pem<'_>> = certs.iter().map(|c| Pem::Cert(c)).collect();
        pem_parts(path, &parts);
    }

    /// A PEM file with certificate and key blocks in the given order.
    pub fn pem_parts(path: &Path, parts: &[Pem<'_>]) {
        write(path, pem_text(parts).as_bytes());
    }

    /// A DER file.
    pub fn der(path: &Path, cert: &GeneratedCert) {
        write(path, &cert.der);
    }

    /// PKCS#12 bytes (OpenSSL 3 defaults: AES-256-CBC, PBKDF2) with the certificate, its key
    /// and the chain.
    pub fn pkcs12_bytes(cert: &GeneratedCert, chain: &[&GeneratedCert], password: &str) -> Vec<u8> {
        let mut stack = Stack::new().expect("stack");
        for c in chain {
            stack.push(c.x509()).expect("push chain cert");
        }
        let mut builder = Pkcs12::builder();
        builder
            .name("certctl-e2e")
            .pkey(&cert.pkey())
            .cert(&cert.x509());
        if !chain.is_empty() {
            builder.ca(stack);
        }
        builder
            .build2(password)
            .expect("build PKCS#12")
            .to_der()
            .expect("PKCS#12 DER")
    }

    /// A PKCS#12 file (modern algorithms).
    pub fn pkcs12(path: &Path, cert: &GeneratedCert, chain: &[&GeneratedCert], password: &str) {
        write(path, &pkcs12_bytes(cert, chain, password));
    }

    /// A legacy PKCS#12 file (RC2-40 / 3DES, SHA-1 MAC), made by the `openssl` command line
    /// exactly as an old Windows export would be.
    pub fn legacy_pkcs12(
        path: &Path,
        cert: &GeneratedCert,
        chain: &[&GeneratedCert],
        password: &str,
    ) {
        let work = tempfile::tempdir().expect("temp dir");
        let cert_path = work.path().join("c.pem");
        let key_path = work.path().join("k.pem");
        let mut certs = vec![cert];
        certs.extend_from_slice(chain);
        pem(&cert_path, &certs);
        write(&key_path, cert.key_pem.as_bytes());
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create parent dirs");
        }
        let out = Command::new("openssl")
            .args(["pkcs12", "-export", "-legacy", "-in"])
            .arg(&cert_path)
            .arg("-inkey")
            .arg(&key_path)
            .arg("-passout")
            .arg(format!("pass:{password}"))
            .arg("-out")
            .arg(path)
            .output()
            .expect("run `openssl pkcs12` (is the openssl CLI installed? see scripts/setup)");
        assert!(
            out.status.success(),
            "openssl pkcs12 -export -legacy failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The first half of the certificate's DER.
    pub fn truncated_der(path: &Path, cert: &GeneratedCert) {
        write(path, &cert.der[..cert.der.len() / 2]);
    }

    /// A CERTIFICATE block whose body is not base64.
    pub fn bad_base64_pem(path: &Path) {
        write(
            path,
            b"-----BEGIN CERTIFICATE-----\n\
              MIIB!!this*is~not%base64$at#all!!\n\
              ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n\
              -----END CERTIFICATE-----\n",
        );
    }

    /// A plain text file (typically named `.pem`).
    pub fn text(path: &Path, text: &str) {
        write(path, text.as_bytes());
    }

    /// A secret file (passphrase, password): readable by its owner only (0600), as certctl
    /// demands.
    pub fn secret(path: &Path, text: &str) {
        use std::os::unix::fs::PermissionsExt;
        write(path, text.as_bytes());
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .unwrap_or_else(|e| panic!("chmod 600 {}: {e}", path.display()));
    }

    /// An empty file.
    pub fn empty(path: &Path) {
        write(path, b"");
    }

    /// A good PEM file with mode 000. Returns whether that really stops reads: it does not
    /// for root (CAP_DAC_OVERRIDE), as in CI; callers skip only that assertion then.
    pub fn unreadable_pem(path: &Path, cert: &GeneratedCert) -> bool {
        pem(path, &[cert]);
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o000)).expect("chmod 000");
        std::fs::File::open(path).is_err()
    }
}

// ---------------------------------------------------------------------------------------------
// Tests of the harness itself
// ---------------------------------------------------------------------------------------------

/// The openssl command line as the independent judge of what certctl writes.
/// Runs the openssl command line; returns (success, stdout + stderr).
pub fn openssl(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl (install the openssl command line, see scripts/setup)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[track_caller]
pub fn openssl_ok(args: &[&str]) -> String {
    let (ok, text) = openssl(args);
    assert!(ok, "openssl {args:?} failed:\n{text}");
    text
}

/// `openssl req -new` with a new P-256 key (unencrypted, at `key`): a CSR at `out` for
/// `subject`, or with `-x509` among `extra` a self-signed certificate; `extra` goes last
/// (`-addext ...`, `-days N`).
#[track_caller]
pub fn openssl_req_p256(key: &Path, out: &Path, subject: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        s(key),
        "-out",
        s(out),
        "-subj",
        subject,
    ];
    args.extend_from_slice(extra);
    openssl_ok(&args)
}

#[cfg(test)]
mod tests {
    use super::files::{self, Pem};
    use super::*;
    use openssl::pkcs12::Pkcs12;
    use std::process::Command;

    fn openssl(args: &[&str]) -> String {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl CLI");
        assert!(
            out.status.success(),
            "openssl {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn chain_verifies_with_openssl_for_every_key_kind() {
        let f = CertFactory::new();
        let env = TestEnv::new();
        let root = env.file("root.pem");
        let inter = env.file("inter.pem");
        files::pem(&root, &[f.root()]);
        files::pem(&inter, &[f.intermediate()]);
        for kind in KeyKind::ALL {
            let leaf = f.leaf(CertSpec::leaf("verify.example.com").key(kind));
            let path = env.file(&format!("leaf-{kind:?}.pem"));
            files::pem(&path, &[&leaf]);
            let out = openssl(&[
                "verify",
                "-CAfile",
                s(&root),
                "-untrusted",
                s(&inter),
                s(&path),
            ]);
            assert!(out.contains(": OK"), "{out}");
            let text = openssl(&["x509", "-in", s(&path), "-noout", "-text"]);
            let want = match kind {
                KeyKind::EcP256 => "NIST CURVE: P-256",
                KeyKind::EcP384 => "NIST CURVE: P-384",
                KeyKind::Ed25519 => "ED25519",
                KeyKind::Rsa2048 => "(2048 bit)",
            };
            assert!(text.contains(want), "{kind:?}: {text}");
        }
    }

    #[test]
    fn recorded_values_match_what_openssl_reads() {
        let f = CertFactory::new();
        let c = f.leaf(
            CertSpec::leaf("values.example.com")
                .key(KeyKind::Rsa2048)
                .dns("values.example.com")
                .dns("alt.example.com")
                .ip("192.0.2.7")
                .ip("2001:db8::7")
                .email("ops@example.com")
                .uri("https://example.com/id")
                .valid(-3 * DAY, 10 * DAY)
                .serial(0x00ab_cdef),
        );
        let x = c.x509();
        assert_eq!(
            x.serial_number()
                .to_bn()
                .unwrap()
                .to_hex_str()
                .unwrap()
                .to_lowercase(),
            "abcdef"
        );
        assert_eq!(c.serial_hex(), "abcdef");
        assert_eq!(
            c.fingerprint,
            hex(&x.digest(openssl::hash::MessageDigest::sha256()).unwrap())
        );
        assert_eq!(c.subject, "CN=values.example.com,O=Certctl E2E");
        assert_eq!(c.issuer, "CN=Certctl E2E Issuing CA,O=Certctl E2E");
        let env = TestEnv::new();
        let p = env.file("c.pem");
        files::pem(&p, &[&c]);
        let out = openssl(&[
            "x509",
            "-in",
            s(&p),
            "-noout",
            "-subject",
            "-issuer",
            "-dates",
            "-fingerprint",
            "-sha256",
            "-ext",
            "subjectAltName",
            "-nameopt",
            "RFC2253",
        ]);
        assert!(
            out.contains("subject=CN=values.example.com,O=Certctl E2E"),
            "{out}"
        );
        assert!(
            out.contains("issuer=CN=Certctl E2E Issuing CA,O=Certctl E2E"),
            "{out}"
        );
        assert!(out.contains(&c.fingerprint_colons()), "{out}");
        for want in [
            "DNS:values.example.com",
            "DNS:alt.example.com",
            "IP Address:192.0.2.7",
            "IP Address:2001:DB8:0:0:0:0:0:7",
            "email:ops@example.com",
            "URI:https://example.com/id",
        ] {
            assert!(out.contains(want), "missing {want} in {out}");
        }
        // openssl prints `notAfter=Dec  5 17:00:00 2026 GMT`; compare through asn1 times.
        let na = openssl::asn1::Asn1Time::from_unix(c.not_after).unwrap();
        let nb = openssl::asn1::Asn1Time::from_unix(c.not_before).unwrap();
        assert_eq!(
            x.not_after().compare(&na).unwrap(),
            std::cmp::Ordering::Equal
        );
        assert_eq!(
            x.not_before().compare(&nb).unwrap(),
            std::cmp::Ordering::Equal
        );
        assert_eq!(c.not_after - c.not_before, 13 * DAY);
        assert_eq!(c.signature_algorithm(), "ecdsa-with-SHA256");
        assert_eq!(c.credential_kind(), Some("permanent"));
        assert_eq!(f.intermediate().credential_kind(), None);
        let rsa_root = f.self_signed(CertSpec::ca("RSA Root").key(KeyKind::Rsa2048));
        assert_eq!(rsa_root.signature_algorithm(), "sha256WithRSAEncryption");
        assert_eq!(rsa_root.subject, rsa_root.issuer);
    }

    #[test]
    fn validity_is_always_set_and_ephemeral_is_classified() {
        let f = CertFactory::new();
        let eph = f.leaf(CertSpec::leaf("agent").valid(-HOUR, 5 * HOUR));
        assert_eq!(eph.credential_kind(), Some("ephemeral"));
        let t = now();
        assert!(eph.not_after > t && eph.not_after <= t + 5 * HOUR);
        assert!(
            f.root().not_after < t + 3651 * DAY,
            "rcgen default validity leaked"
        );
        let expired = f.leaf(CertSpec::leaf("old").valid(-400 * DAY, -10 * DAY));
        assert_eq!(expired.status_at(t), "expired");
        assert_eq!(expired.days_left_at(t), -10);
        let future = f.leaf(CertSpec::leaf("new").valid(10 * DAY, 400 * DAY));
        assert_eq!(future.status_at(t), "not-yet-valid");
        let soon = f.leaf(CertSpec::leaf("soon").expires_in_days(10));
        assert_eq!(soon.status_at(t), "expiring");
        assert_eq!(soon.days_left_at(t), 10);
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(parse_rfc3339(&rfc3339(soon.not_after)), soon.not_after);
    }

    #[test]
    fn pkcs12_files_open_with_the_password_only() {
        let f = CertFactory::new();
        let leaf = f.leaf(CertSpec::leaf("pfx.example.com").key(KeyKind::Rsa2048));
        let der = files::pkcs12_bytes(&leaf, &[f.intermediate()], "s3cret");
        let p12 = Pkcs12::from_der(&der).unwrap();
        let parsed = p12.parse2("s3cret").unwrap();
        assert_eq!(parsed.cert.unwrap().to_der().unwrap(), leaf.der);
        assert_eq!(parsed.ca.unwrap().len(), 1);
        assert!(Pkcs12::from_der(&der).unwrap().parse2("wrong").is_err());

        let env = TestEnv::new();
        let legacy = env.file("legacy.pfx");
        files::legacy_pkcs12(&legacy, &leaf, &[f.intermediate()], "old-pass");
        let info = Command::new("openssl")
            .args([
                "pkcs12",
                "-info",
                "-noout",
                "-legacy",
                "-passin",
                "pass:old-pass",
                "-in",
            ])
            .arg(&legacy)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&info.stderr).into_owned()
            + &String::from_utf8_lossy(&info.stdout);
        assert!(info.status.success(), "{text}");
        assert!(text.contains("RC2") || text.contains("TripleDES"), "{text}");
    }

    #[test]
    fn pem_bundle_and_corrupt_files_are_what_they_claim() {
        let f = CertFactory::new();
        let leaf = f.leaf(CertSpec::leaf("bundle.example.com").key(KeyKind::Ed25519));
        let env = TestEnv::new();
        let bundle = env.file("b/bundle.pem");
        files::pem_parts(
            &bundle,
            &[
                Pem::Cert(&leaf),
                Pem::Key(&leaf),
                Pem::Cert(f.intermediate()),
                Pem::Cert(f.root()),
            ],
        );
        let text = std::fs::read_to_string(&bundle).unwrap();
        assert_eq!(text.matches("BEGIN CERTIFICATE").count(), 3);
        assert_eq!(text.matches("BEGIN PRIVATE KEY").count(), 1);
        let stack = X509::stack_from_pem(text.as_bytes()).unwrap();
        assert_eq!(stack.len(), 3);
        assert_eq!(stack[0].to_der().unwrap(), leaf.der);
        // The key block really is the leaf's key.
        assert!(leaf.pkey().public_eq(&leaf.x509().public_key().unwrap()));

        let trunc = env.file("b/trunc.der");
        files::truncated_der(&trunc, &leaf);
        assert!(X509::from_der(&std::fs::read(&trunc).unwrap()).is_err());
        let bad = env.file("b/bad.pem");
        files::bad_base64_pem(&bad);
        assert!(X509::from_pem(&std::fs::read(&bad).unwrap()).is_err());
        let unreadable = env.file("b/locked.pem");
        let enforced = files::unreadable_pem(&unreadable, &leaf);
        let is_root = std::fs::File::open(&unreadable).is_ok();
        assert_eq!(enforced, !is_root);
    }

    #[test]
    fn csv_parser_handles_quotes() {
        let rows = parse_csv("a,b,c\r\n\"CN=x,O=y\",\"say \"\"hi\"\"\",\n1,,3\n");
        assert_eq!(
            rows,
            vec![
                vec!["a", "b", "c"],
                vec!["CN=x,O=y", "say \"hi\"", ""],
                vec!["1", "", "3"]
            ]
        );
    }

    #[test]
    fn missing_binary_message_names_the_build_command() {
        let err = std::panic::catch_unwind(|| bin_path("certctl-no-such-binary")).unwrap_err();
        let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains("cargo build --workspace --bins"), "{msg}");
    }

    fn stand_in(env: &TestEnv, name: &str, script: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = env.file(&format!("fakebin/{name}"));
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn runner_kills_a_hung_child_and_reports_it() {
        let env = TestEnv::new();
        let fake = stand_in(&env, "hang", "echo started; exec sleep 60");
        let begun = Instant::now();
        let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            env.cmd()
                .program(&fake)
                .timeout(Duration::from_millis(300))
                .arg("list")
                .run()
        }))
        .unwrap_err();
        assert!(begun.elapsed() < Duration::from_secs(10));
        let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains("was killed"), "{msg}");
        assert!(msg.contains("started"), "partial stdout is shown: {msg}");
        assert!(msg.contains("--store"), "command line is shown: {msg}");
    }

    #[test]
    fn runner_passes_store_and_isolates_the_environment() {
        let env = TestEnv::new();
        let fake = stand_in(
            &env,
            "probe",
            "echo \"args:$*\"; env | sort; echo oops >&2; exit 3",
        );
        // A CERTCTL_ variable of the developer's shell must not reach the child.
        std::env::set_var("CERTCTL_E2E_LEAK_PROBE", "leaked");
        let r = env
            .cmd()
            .program(&fake)
            .args(["scan", "x"])
            .env("CERTCTL_PFX_PASSWORD", "pw")
            .run();
        std::env::remove_var("CERTCTL_E2E_LEAK_PROBE");
        r.expect_code(3);
        assert!(
            r.stdout
                .contains(&format!("args:--store {} scan x", env.store().display())),
            "{r}"
        );
        assert!(!r.stdout.contains("CERTCTL_E2E_LEAK_PROBE"), "{r}");
        assert!(r.stdout.contains("CERTCTL_PFX_PASSWORD=pw"), "{r}");
        assert!(
            r.stdout.contains(&format!("HOME={}", env.home().display())),
            "{r}"
        );
        assert_eq!(r.stderr, "oops\n");
        let shown = r.to_string();
        assert!(
            shown.contains("exit code: 3") && shown.contains("oops"),
            "{shown}"
        );
        let r = env.cmd().program(&fake).no_store().arg("list").run();
        assert!(r.stdout.contains("args:list\n"), "{r}");
    }
}
