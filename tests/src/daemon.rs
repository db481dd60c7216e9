//! Running a real `certd` in the end-to-end tests.
//!
//! - [`CertdConfig`]: a certd configuration file, written from a few builder calls
//!   (schedules are off and folders are watched unless a test says otherwise).
//! - [`Certd`]: a guard around `target/debug/certd run --config FILE`. [`Certd::start`]
//!   waits (bounded) until `certctl status` answers in daemon mode; the daemon's stderr log
//!   goes to a file in the test's temp dir ([`Certd::log`]); signals are sent with kill(2)
//!   through rustix; dropping the guard sends SIGTERM, then SIGKILL if certd has not exited
//!   after a timeout. Like [`crate::TestEnv`]'s runner, the child never inherits `CERTCTL_*`
//!   variables and never sees the real home directory; its working directory is `/` (as
//!   under systemd), so a relative path certctl forwards to it does not resolve by luck.
//! - [`wait_for`]: the one polling loop every bounded wait uses.
//! - [`write_bulk_pems`]: thousands of small certificate files, fast (one key for all).

use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyUsagePurpose,
    SerialNumber,
};
use rustix::process::{kill_process, Pid, Signal};
use serde_json::Value;
use time::OffsetDateTime;

use crate::{bin_path, now, sha256_hex, KeyKind, RunResult, TestEnv, DAY};

/// How long certd may take to come up (open the store, bind the socket, answer).
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long certd may take to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// How often bounded waits look again.
pub const POLL: Duration = Duration::from_millis(50);

/// Calls `probe` every [`POLL`] until it returns `Some`, for at most `timeout`; panics with
/// `what()` (evaluated only then, so it can show the latest state) when time runs out.
#[track_caller]
pub fn wait_for<T>(
    timeout: Duration,
    what: impl FnOnce() -> String,
    mut probe: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("gave up after {timeout:?} waiting for: {}", what());
        }
        thread::sleep(POLL);
    }
}

/// A TOML string (JSON's escapes are valid in TOML basic strings).
fn toml_str(s: &str) -> String {
    serde_json::to_string(s).expect("string to JSON")
}

/// One `[[source]]`.
#[derive(Clone, Debug)]
pub struct SourceSpec {
    pub path: PathBuf,
    pub role: Option<String>,
}

/// One `[[endpoint]]`.
#[derive(Clone, Debug, Default)]
pub struct EndpointSpec {
    pub address: String,
    pub sni: Option<String>,
    pub role: Option<String>,
    pub expect_issuer: Option<String>,
}

/// A certd configuration file.
#[derive(Clone, Debug)]
pub struct CertdConfig {
    pub store: PathBuf,
    /// `[scan] schedule`; default `off`.
    pub scan_schedule: String,
    /// `[scan] watch`; default true.
    pub watch: bool,
    /// `[probe] schedule`; default `off`.
    pub probe_schedule: String,
    /// `[probe] timeout`; default `5s`.
    pub probe_timeout: String,
    /// `[probe] trust_store`.
    pub trust_store: Option<PathBuf>,
    pub sources: Vec<SourceSpec>,
    pub endpoints: Vec<EndpointSpec>,
    /// `[metrics] listen`; default none (no `[metrics]` section).
    pub metrics_listen: Option<String>,
    /// `[metrics] per_agent`; written only with `metrics_listen`.
    pub metrics_per_agent: bool,
    /// `[agents] deny_list`; default none (no `[agents]` section).
    pub deny_list: Option<PathBuf>,
    /// The body of a `[retention]` section (TOML lines); default none (certd's defaults).
    pub retention: Option<String>,
}

impl CertdConfig {
    /// A configuration for `store`: no sources, no endpoints, schedules off, watching on.
    pub fn new(store: &Path) -> CertdConfig {
        CertdConfig {
            store: store.to_path_buf(),
            scan_schedule: "off".into(),
            watch: true,
            probe_schedule: "off".into(),
            probe_timeout: "5s".into(),
            trust_store: None,
            sources: Vec::new(),
            endpoints: Vec::new(),
            metrics_listen: None,
            metrics_per_agent: false,
            deny_list: None,
            retention: None,
        }
    }

    /// `[retention]` with these TOML lines, e.g. `ephemeral_after_expiry = "1d"`.
    pub fn retention(mut self, body: &str) -> Self {
        self.retention = Some(body.into());
        self
    }

    /// `[metrics] listen = ADDRESS` (e.g. from [`free_loopback_address`]).
    pub fn metrics(mut self, listen: &str) -> Self {
        self.metrics_listen = Some(listen.into());
        self
    }

    /// `[metrics] per_agent`.
    pub fn metrics_per_agent(mut self, per_agent: bool) -> Self {
        self.metrics_per_agent = per_agent;
        self
    }

    /// `[agents] deny_list = PATH`.
    pub fn deny_list(mut self, path: &Path) -> Self {
        self.deny_list = Some(path.to_path_buf());
        self
    }

    pub fn source(mut self, path: &Path, role: Option<&str>) -> Self {
        self.sources.push(SourceSpec {
            path: path.to_path_buf(),
            role: role.map(str::to_string),
        });
        self
    }

    pub fn endpoint(mut self, endpoint: EndpointSpec) -> Self {
        self.endpoints.push(endpoint);
        self
    }

    pub fn scan_schedule(mut self, schedule: &str) -> Self {
        self.scan_schedule = schedule.into();
        self
    }

    pub fn probe_schedule(mut self, schedule: &str) -> Self {
        self.probe_schedule = schedule.into();
        self
    }

    pub fn trust_store(mut self, path: &Path) -> Self {
        self.trust_store = Some(path.to_path_buf());
        self
    }

    /// The file's text.
    pub fn to_toml(&self) -> String {
        let mut t = format!("store = {}\n\n", toml_str(&self.store.to_string_lossy()));
        t += &format!(
            "[scan]\nschedule = {}\nwatch = {}\n\n",
            toml_str(&self.scan_schedule),
            self.watch
        );
        t += &format!(
            "[probe]\nschedule = {}\ntimeout = {}\n",
            toml_str(&self.probe_schedule),
            toml_str(&self.probe_timeout)
        );
        if let Some(ts) = &self.trust_store {
            t += &format!("trust_store = {}\n", toml_str(&ts.to_string_lossy()));
        }
        for s in &self.sources {
            t += &format!(
                "\n[[source]]\npath = {}\n",
                toml_str(&s.path.to_string_lossy())
            );
            if let Some(r) = &s.role {
                t += &format!("role = {}\n", toml_str(r));
            }
        }
        for e in &self.endpoints {
            t += &format!("\n[[endpoint]]\naddress = {}\n", toml_str(&e.address));
            for (k, v) in [
                ("sni", &e.sni),
                ("role", &e.role),
                ("expect_issuer", &e.expect_issuer),
            ] {
                if let Some(v) = v {
                    t += &format!("{k} = {}\n", toml_str(v));
                }
            }
        }
        if let Some(deny) = &self.deny_list {
            t += &format!(
                "\n[agents]\ndeny_list = {}\n",
                toml_str(&deny.to_string_lossy())
            );
        }
        if let Some(retention) = &self.retention {
            t += &format!("\n[retention]\n{}\n", retention.trim_end());
        }
        if let Some(listen) = &self.metrics_listen {
            t += &format!(
                "\n[metrics]\nlisten = {}\nper_agent = {}\n",
                toml_str(listen),
                self.metrics_per_agent
            );
        }
        t
    }

    /// Writes the file (creating its folder) and returns its path.
    pub fn write(&self, path: &Path) -> PathBuf {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create config folder");
        }
        std::fs::write(path, self.to_toml())
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path.to_path_buf()
    }
}

/// Numbers the log files of the certd processes of one test run.
static INSTANCE: AtomicUsize = AtomicUsize::new(0);

/// How a stopped certd ended.
#[derive(Debug)]
pub struct Stopped {
    pub status: ExitStatus,
    /// From the signal to the exit.
    pub elapsed: Duration,
    /// Its whole stderr.
    pub log: String,
}

/// A running `certd run --config FILE`; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Certd<'a> {
    env: &'a TestEnv,
    child: Child,
    config: PathBuf,
    log: PathBuf,
    exited: Option<ExitStatus>,
}

impl<'a> Certd<'a> {
    /// Starts certd and waits until `certctl status` answers in daemon mode.
    #[track_caller]
    pub fn start(env: &'a TestEnv, config: &Path) -> Certd<'a> {
        let mut certd = Certd::spawn(env, config);
        certd.wait_ready();
        certd
    }

    /// Starts certd with extra arguments after `run --config FILE` (e.g. `--log-format
    /// json`) and waits until it is ready.
    #[track_caller]
    pub fn start_with(env: &'a TestEnv, config: &Path, extra: &[&str]) -> Certd<'a> {
        let mut certd = Certd::spawn_with(env, config, extra);
        certd.wait_ready();
        certd
    }

    /// Starts certd with extra environment variables (e.g. `CERTCTL_NOW`, which freezes its
    /// clock) and waits until it is ready.
    #[track_caller]
    pub fn start_with_env(env: &'a TestEnv, config: &Path, vars: &[(&str, &str)]) -> Certd<'a> {
        let mut certd = Certd::spawn_with_vars(env, config, &[], vars);
        certd.wait_ready();
        certd
    }

    /// Starts certd without waiting for it.
    pub fn spawn(env: &'a TestEnv, config: &Path) -> Certd<'a> {
        Certd::spawn_with(env, config, &[])
    }

    /// Starts certd with extra arguments, without waiting for it.
    pub fn spawn_with(env: &'a TestEnv, config: &Path, extra: &[&str]) -> Certd<'a> {
        Certd::spawn_with_vars(env, config, extra, &[])
    }

    /// Starts certd with extra arguments and environment variables (e.g. a
    /// `CERTCTL_TEST_CRASH_AT` point), without waiting for it.
    pub fn spawn_with_vars(
        env: &'a TestEnv,
        config: &Path,
        extra: &[&str],
        vars: &[(&str, &str)],
    ) -> Certd<'a> {
        let n = INSTANCE.fetch_add(1, Ordering::Relaxed);
        let log = env.root().join(format!("certd-{n}.stderr"));
        let out = env.root().join(format!("certd-{n}.stdout"));
        let home = env.home();
        std::fs::create_dir_all(&home).expect("create fake home");
        let mut command = Command::new(bin_path("certd"));
        command
            .arg("run")
            .arg("--config")
            .arg(config)
            .args(extra)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(File::create(&out).expect("create certd stdout file"))
            .stderr(File::create(&log).expect("create certd log file"));
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().into_owned();
            if k.starts_with("CERTCTL_") || k.starts_with("CERTD_") || k == "RUST_LOG" {
                command.env_remove(k);
            }
        }
        command
            .env("HOME", &home)
            .env("XDG_DATA_HOME", home.join(".local/share"))
            // Not NO_COLOR: certd must itself write plain text to a redirected stderr.
            .env_remove("NO_COLOR")
            .env("CERTD_LOG", "info");
        for (k, v) in vars {
            command.env(k, v);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("could not start certd: {e}"));
        Certd {
            env,
            child,
            config: config.to_path_buf(),
            log,
            exited: None,
        }
    }

    /// Waits (bounded by [`READY_TIMEOUT`]) until the control socket accepts connections
    /// and `certctl status` says `mode: daemon` with this process's pid. Panics with the
    /// log if certd exits or does not come up in time.
    ///
    /// certctl is only run once the socket accepts: before that it would open the store
    /// itself and could take the store's lock from under the starting daemon.
    #[track_caller]
    pub fn wait_ready(&mut self) {
        let socket = self.socket();
        let pid = self.pid();
        let env = self.env;
        let mut last: Option<RunResult> = None;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.try_exit() {
                panic!(
                    "certd exited ({status}) before it was ready{}",
                    self.describe()
                );
            }
            if UnixStream::connect(&socket).is_ok() {
                let r = env
                    .cmd()
                    .arg("status")
                    .timeout(Duration::from_secs(15))
                    .run();
                if r.status.success()
                    && r.stdout.starts_with("mode: daemon")
                    && r.stdout.contains(&format!("pid {pid},"))
                {
                    return;
                }
                last = Some(r);
            }
            if Instant::now() >= deadline {
                let last = last.map_or_else(|| "(certctl never ran)".into(), |r| r.to_string());
                panic!(
                    "certd was not ready within {READY_TIMEOUT:?}; last `certctl status`:{last}{}",
                    self.describe()
                );
            }
            thread::sleep(POLL);
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The configuration file it was started with.
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// The control socket certd serves the store on (`STORE/certd.sock`).
    pub fn socket(&self) -> PathBuf {
        self.env.store().join("certd.sock")
    }

    /// Its stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The command, pid and log, for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "\n===== certd run --config {} (pid {})\n===== config:\n{}\n===== certd stderr:\n{}\n=====",
            self.config.display(),
            self.pid(),
            std::fs::read_to_string(&self.config).unwrap_or_default(),
            self.log()
        )
    }

    /// Sends `signal` (kill(2)).
    pub fn signal(&self, signal: Signal) {
        kill_process(Pid::from_child(&self.child), signal)
            .unwrap_or_else(|e| panic!("kill({}, {signal:?}): {e}", self.pid()));
    }

    /// SIGHUP: reload the configuration.
    pub fn reload(&self) {
        self.signal(Signal::HUP);
    }

    /// Waits (bounded) until the log contains `needle`; returns the log.
    #[track_caller]
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        wait_for(
            timeout,
            || format!("{needle:?} in certd's log{}", self.describe()),
            || Some(self.log()).filter(|l| l.contains(needle)),
        )
    }

    /// The exit status, if it has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().expect("wait for certd");
        }
        self.exited
    }

    /// Waits up to `timeout` for it to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_exit() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, and waits (bounded by [`STOP_TIMEOUT`]) for the exit; panics with the log
    /// when certd does not exit in time (the guard then kills it).
    #[track_caller]
    pub fn stop(self) -> Stopped {
        self.stop_with(Signal::TERM)
    }

    /// Like [`Certd::stop`] with another signal (SIGINT, SIGKILL).
    #[track_caller]
    pub fn stop_with(mut self, signal: Signal) -> Stopped {
        let begun = Instant::now();
        if self.try_exit().is_none() {
            self.signal(signal);
        }
        match self.wait_exit(STOP_TIMEOUT) {
            Some(status) => Stopped {
                status,
                elapsed: begun.elapsed(),
                log: self.log(),
            },
            None => panic!(
                "certd did not exit within {STOP_TIMEOUT:?} of SIGTERM{}",
                self.describe()
            ),
        }
    }

    /// Like [`Certd::stop`], and asserts exit code 0 and that the control socket is gone.
    #[track_caller]
    pub fn stop_ok(self) -> Stopped {
        self.stop_ok_with(Signal::TERM)
    }

    /// Like [`Certd::stop_ok`] with another signal (SIGINT).
    #[track_caller]
    pub fn stop_ok_with(self, signal: Signal) -> Stopped {
        let socket = self.socket();
        let describe = self.describe();
        let stopped = self.stop_with(signal);
        assert_eq!(
            stopped.status.code(),
            Some(0),
            "certd should exit 0 on {signal:?} (took {:?}){describe}\n(log at exit:)\n{}",
            stopped.elapsed,
            stopped.log
        );
        assert!(
            !socket.exists(),
            "certd left its control socket {} behind{describe}",
            socket.display()
        );
        stopped
    }
}

impl Drop for Certd<'_> {
    fn drop(&mut self) {
        if self.try_exit().is_some() {
            return;
        }
        let pid = Pid::from_child(&self.child);
        let _ = kill_process(pid, Signal::TERM);
        if self.wait_exit(Duration::from_secs(10)).is_none() {
            let _ = kill_process(pid, Signal::KILL);
            let _ = self.child.wait();
        }
    }
}

/// `certctl status --json` parsed (asserted successful).
#[track_caller]
pub fn status_json(env: &TestEnv) -> Value {
    let r = env.certctl(&["status", "--json"]);
    r.success();
    r.json()
}

/// Writes `n` PEM files, each one leaf certificate (all signed by one throw-away CA and
/// sharing one key, so thousands take well under a second), `per_dir` files per subfolder
/// of `dir` (`dir/dNNN/bulk-NNNNN.pem`). Returns the fingerprints of the leaves.
pub fn write_bulk_pems(dir: &Path, n: usize, per_dir: usize) -> BTreeSet<String> {
    let t0 = now();
    let time = |t: i64| OffsetDateTime::from_unix_timestamp(t).expect("timestamp");
    let ca_key = KeyKind::EcP256.generate();
    let mut ca = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Certctl E2E");
    dn.push(DnType::CommonName, "Certctl E2E Bulk CA");
    ca.distinguished_name = dn;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = time(t0 - 30 * DAY);
    ca.not_after = time(t0 + 3650 * DAY);
    let issuer = Issuer::from_params(&ca, &ca_key);

    let leaf_key = KeyKind::EcP256.generate();
    let serial_base = ((t0 as u64) & 0xffff_ffff) << 20;
    let mut fingerprints = BTreeSet::new();
    for i in 0..n {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Certctl E2E");
        dn.push(DnType::CommonName, format!("bulk-{i:05}.example"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.serial_number = Some(SerialNumber::from(serial_base + i as u64));
        params.not_before = time(t0 - DAY);
        params.not_after = time(t0 + 200 * DAY + DAY / 2);
        let cert = params
            .signed_by(&leaf_key, &issuer)
            .expect("sign bulk leaf");
        let folder = dir.join(format!("d{:03}", i / per_dir.max(1)));
        std::fs::create_dir_all(&folder).expect("create bulk folder");
        std::fs::write(folder.join(format!("bulk-{i:05}.pem")), cert.pem())
            .expect("write bulk PEM");
        fingerprints.insert(sha256_hex(cert.der()));
    }
    fingerprints
}

/// A loopback address with a port nobody listens on right now (bound, then released), for
/// `[metrics] listen`.
pub fn free_loopback_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").to_string()
}

/// How long one HTTP exchange with certd may take.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(15);

/// An HTTP answer: status code, headers (lowercase names) and body.
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpAnswer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `METHOD PATH HTTP/1.1` to `address` with std's TcpStream: connect, read and write are
/// bounded by [`HTTP_TIMEOUT`], the answer by 64 MiB. `Err` when the connection fails.
pub fn http_request(address: &str, method: &str, path: &str) -> std::io::Result<HttpAnswer> {
    http_request_with_host(address, method, path, address)
}

/// [`http_request`] with another `Host` header (a DNS-rebinding page's name).
pub fn http_request_with_host(
    address: &str,
    method: &str,
    path: &str,
    host: &str,
) -> std::io::Result<HttpAnswer> {
    use std::io::{Read, Write};
    use std::net::{TcpStream, ToSocketAddrs};
    let addr = address
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other("no address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)?;
    stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
    stream.set_write_timeout(Some(HTTP_TIMEOUT))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: certctl-e2e\r\nConnection: close\r\n\r\n"
    )?;
    let deadline = Instant::now() + HTTP_TIMEOUT;
    let mut raw = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if Instant::now() >= deadline || raw.len() > 64 << 20 {
            return Err(std::io::Error::other("answer too slow or too large"));
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8(raw).map_err(std::io::Error::other)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no end of headers in {text:?}")))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(HttpAnswer {
        status,
        headers,
        body: body.to_string(),
    })
}

/// `GET PATH`, retried (bounded by [`READY_TIMEOUT`]) while the connection is refused (the
/// listener may come up just after the control socket).
#[track_caller]
pub fn http_get(address: &str, path: &str) -> HttpAnswer {
    let last = std::cell::RefCell::new(String::new());
    wait_for(
        READY_TIMEOUT,
        || format!("GET http://{address}{path} (last error: {})", last.borrow()),
        || match http_request(address, "GET", path) {
            Ok(a) => Some(a),
            Err(e) => {
                *last.borrow_mut() = e.to_string();
                None
            }
        },
    )
}
