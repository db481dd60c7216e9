//! End-to-end tests of certd's two listening sockets under attack by a local user:
//!
//! - `/metrics` (`[metrics] listen`): idle and slowloris connections cannot keep a scrape
//!   out, and a request whose `Host` is not certd's own address (DNS rebinding: a web page
//!   of `evil.example` resolved to 127.0.0.1) gets 421 Misdirected Request;
//! - the control socket: a request without an end (no newline) gets an error and the
//!   connection is closed, and thirty of them at once leave certd's memory bounded.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use certctl_e2e::daemon::{free_loopback_address, http_get, http_request, Certd, CertdConfig};
use certctl_e2e::*;

/// How long one raw exchange may take in these tests (generous: certd is busy fending off
/// the attacker's connections at the same time).
const RAW_TIMEOUT: Duration = Duration::from_secs(20);

/// Sends `request` as is and returns the status code and the whole answer (`Err` when the
/// connection fails or no answer comes within [`RAW_TIMEOUT`]).
fn raw_http(address: &str, request: &[u8]) -> std::io::Result<(u16, String)> {
    let addr: SocketAddr = address.parse().map_err(std::io::Error::other)?;
    let mut s = TcpStream::connect_timeout(&addr, RAW_TIMEOUT)?;
    s.set_read_timeout(Some(RAW_TIMEOUT))?;
    s.set_write_timeout(Some(RAW_TIMEOUT))?;
    s.write_all(request)?;
    let mut raw = Vec::new();
    s.take(1 << 20).read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {text:?}")))?;
    Ok((code, text))
}

/// A local user holding `idle` connections that never send anything (re-opened as soon as
/// certd closes one) and `slow` ones that send a request one byte a second, until dropped.
struct Attacker {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Attacker {
    fn start(address: &str, idle: usize, slow: usize) -> Attacker {
        let addr: SocketAddr = address.parse().expect("address");
        let stop = Arc::new(AtomicBool::new(false));
        let connect = move || {
            let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
            s.set_nonblocking(true).ok()?;
            Some(s)
        };
        let mut threads = Vec::new();
        // The idle holder: checks every 200 ms which connections certd closed and opens them
        // again, so the attacker always holds `idle` of them.
        let holder_stop = stop.clone();
        let mut held: Vec<Option<TcpStream>> = (0..idle).map(|_| connect()).collect();
        threads.push(thread::spawn(move || {
            while !holder_stop.load(Ordering::Relaxed) {
                for slot in held.iter_mut() {
                    let closed = match slot {
                        Some(s) => {
                            let mut b = [0u8; 64];
                            // Data or end of file: certd answered or closed it.
                            match s.read(&mut b) {
                                Ok(n) => n <= b.len(),
                                Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
                            }
                        }
                        None => true,
                    };
                    if closed {
                        *slot = connect();
                    }
                }
                thread::sleep(Duration::from_millis(200));
            }
        }));
        // Slowloris: a request head that never ends, one byte a second.
        let slow_stop = stop.clone();
        let mut slowpokes: Vec<Option<TcpStream>> = (0..slow).map(|_| connect()).collect();
        threads.push(thread::spawn(move || {
            let head = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
            let mut i = 0usize;
            while !slow_stop.load(Ordering::Relaxed) {
                for slot in slowpokes.iter_mut() {
                    let byte = head.get(i).copied().unwrap_or(b'a');
                    let alive = slot.as_mut().is_some_and(|s| s.write(&[byte]).is_ok());
                    if !alive {
                        *slot = connect();
                    }
                }
                i += 1;
                thread::sleep(Duration::from_secs(1));
            }
        }));
        Attacker { stop, threads }
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn certd_with_metrics<'a>(env: &'a TestEnv, extra_metrics_toml: &str) -> (Certd<'a>, String) {
    let address = free_loopback_address();
    let config = CertdConfig::new(env.store()).metrics(&address);
    // `[metrics]` is the last section the helper writes: extra keys belong to it.
    let toml = config.to_toml() + extra_metrics_toml;
    let path = env.file("etc/certd.toml");
    std::fs::create_dir_all(path.parent().expect("parent")).expect("config folder");
    std::fs::write(&path, toml).expect("write config");
    let certd = Certd::start(env, &path);
    (certd, address)
}

/// 300 idle connections (more than certd keeps open, re-opened as soon as certd closes one)
/// and 20 slowloris connections from one local user: a normal scrape still gets its metrics.
#[test]
fn idle_and_slow_connections_cannot_starve_a_scrape() {
    let env = TestEnv::new();
    let (certd, address) = certd_with_metrics(&env, "");
    assert_eq!(http_get(&address, "/metrics").status, 200);

    let attacker = Attacker::start(&address, 300, 20);
    thread::sleep(Duration::from_secs(2));
    for round in 0..3 {
        let started = Instant::now();
        let answer = http_request(&address, "GET", "/metrics").unwrap_or_else(|e| {
            panic!(
                "scrape {round} failed after {:?} while 320 hostile connections are held: {e}\n{}",
                started.elapsed(),
                certd.describe()
            )
        });
        assert_eq!(answer.status, 200, "{answer:?}");
        assert!(
            answer.body.contains("certctl_smtp_failing"),
            "{}",
            answer.body
        );
        thread::sleep(Duration::from_secs(3));
    }
    drop(attacker);
    assert_eq!(http_get(&address, "/metrics").status, 200);
    certd.stop_ok();
}

/// DNS rebinding: a browser visiting `evil.example` (resolved to 127.0.0.1) sends
/// `Host: evil.example:PORT`; certd answers 421. Its own address, `localhost` (it listens on
/// loopback) and the names in `allowed_hosts` are answered.
#[test]
fn metrics_requests_for_another_host_are_misdirected() {
    let env = TestEnv::new();
    let (certd, address) = certd_with_metrics(&env, "allowed_hosts = [\"metrics.internal\"]\n");
    let port = address.rsplit_once(':').expect("port").1;
    let get = |host: &str| {
        let request = format!("GET /metrics HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        raw_http(&address, request.as_bytes())
            .unwrap_or_else(|e| panic!("Host {host}: {e}\n{}", certd.describe()))
    };
    for host in [
        "evil.example".to_string(),
        format!("evil.example:{port}"),
        format!("127.0.0.2:{port}"),
        format!("localhost.evil.example:{port}"),
        format!("127.0.0.1:{port}\r\nHost: evil.example"),
    ] {
        let (code, text) = get(&host);
        assert!(
            code == 421 || (host.contains("\r\n") && code == 400),
            "Host {host:?}: {text}"
        );
        assert!(!text.contains("certctl_"), "Host {host:?}: {text}");
    }
    for host in [
        address.clone(),
        format!("localhost:{port}"),
        format!("LOCALHOST:{port}"),
        "metrics.internal".to_string(),
        format!("metrics.internal:{port}"),
    ] {
        let (code, text) = get(&host);
        assert_eq!(code, 200, "Host {host:?}: {text}");
        assert!(text.contains("certctl_smtp_failing"), "{text}");
    }
    // HTTP/1.1 without Host is malformed.
    let (code, text) = raw_http(&address, b"GET /metrics HTTP/1.1\r\n\r\n").expect("no host");
    assert_eq!(code, 400, "{text}");
    certd.stop_ok();
}

/// certd's peak resident memory (`VmHWM`) in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM line");
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("VmHWM value");
    kb * 1024
}

/// Connects to the control socket, sends `prefix` and `bytes` bytes of `a` without a
/// newline (from a second thread, so certd's answer is read while sending) and returns what
/// certd answered before closing: the connection must end within `RAW_TIMEOUT`.
fn endless_request(socket: &std::path::Path, prefix: &'static str, bytes: usize) -> String {
    let stream = UnixStream::connect(socket).expect("connect to the control socket");
    stream.set_read_timeout(Some(RAW_TIMEOUT)).expect("timeout");
    stream
        .set_write_timeout(Some(RAW_TIMEOUT))
        .expect("timeout");
    let mut writer = stream.try_clone().expect("clone");
    let sender = thread::spawn(move || {
        let chunk = vec![b'a'; 64 << 10];
        if writer.write_all(prefix.as_bytes()).is_err() {
            return;
        }
        let mut sent = 0;
        while sent < bytes {
            if writer.write_all(&chunk).is_err() {
                break;
            }
            sent += chunk.len();
        }
    });
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match (&stream).read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            // certd closed with our unread bytes still queued: the answer came before.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!(
                "certd neither answered nor closed within {:?}: {e}",
                started.elapsed()
            ),
        }
        assert!(answer.len() < 1 << 20, "an endless answer");
    }
    let _ = sender.join();
    String::from_utf8_lossy(&answer).into_owned()
}

/// A client sends 20 MiB without a newline: it gets an error and the connection is closed.
/// Thirty at once leave certd's peak memory well below 200 MB, also when they claim to be
/// the requests that may be longer (a scan's list of paths), and normal requests work
/// afterwards.
#[test]
fn an_endless_control_request_is_refused_with_bounded_memory() {
    let env = TestEnv::new();
    let config = CertdConfig::new(env.store()).write(&env.file("etc/certd.toml"));
    let certd = Certd::start(&env, &config);
    let socket = certd.socket();

    let answer = endless_request(&socket, "", 20 << 20);
    assert!(
        answer.contains("\"error\"") || answer.contains("\"kind\""),
        "no error answer: {answer:?}\n{}",
        certd.describe()
    );

    let clients: Vec<_> = (0..60)
        .map(|i| {
            let socket = socket.clone();
            let prefix = if i % 2 == 0 {
                ""
            } else {
                "{\"request\":\"scan\",\"paths\":[\""
            };
            thread::spawn(move || endless_request(&socket, prefix, 20 << 20))
        })
        .collect();
    for c in clients {
        let answer = c.join().expect("client thread");
        assert!(answer.contains("error"), "{answer:?}");
    }
    let peak = peak_rss(certd.pid());
    assert!(
        peak < 200 << 20,
        "certd's peak memory grew to {} MiB\n{}",
        peak >> 20,
        certd.describe()
    );
    env.certctl(&["status"]).success().stdout_has("daemon");
    certd.stop_ok();
}
