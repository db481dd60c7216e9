//! Probing live TLS endpoints (gateways, IIS sites, site servers): `certctl probe`.
//!
//! This module owns the network side of endpoint monitoring: connecting to `host:port`,
//! completing a TLS client handshake, taking the certificate chain the server presents (as
//! `openssl s_client -showcerts` shows it, leaf first) and judging it. [`probe`] never writes
//! anything; [`record`] merges an outcome into the store (certificates with their
//! `tls://host:port#index` sources, and the [`Endpoint`] state).
//!
//! # Network
//!
//! Every wait is bounded by [`ProbeTarget::timeout`]: the name lookup (run on a helper thread),
//! each TCP connect (`connect_timeout`, one attempt per resolved address) and the whole TLS
//! handshake (every socket read and write gets the time left until one deadline). The
//! handshake is made with `SslVerifyMode::NONE`, so a bad chain never aborts it: the chain is
//! judged afterwards. The client accepts old protocol versions and weak algorithms (TLS 1.0,
//! OpenSSL security level 0) because the point is to *see* what an old server serves; nothing
//! secret is sent. SNI is [`ProbeTarget::sni`], else the host (never an IP literal).
//!
//! # Findings
//!
//! - `unreachable`: the name does not resolve, the connection is refused / times out / is
//!   reset, or the peer does not speak TLS (its first bytes are not a TLS record; they are
//!   quoted when printable, e.g. `HTTP/1.1 200 OK`). [`ProbeOutcome::error`] says why.
//! - `hostname-mismatch`: the leaf's DNS and IP subject alternative names (its CN only when it
//!   has neither) do not cover the SNI name (or the host). `*.example.com` covers exactly one
//!   extra leftmost label.
//! - `self-signed-leaf`: the leaf is issued by itself and its signature verifies with its own
//!   key (reported even when the trust store pins it).
//! - `incomplete-chain` and `chain-untrusted` come from an OpenSSL verification of the leaf,
//!   with the other served certificates as untrusted helpers, against the trust store
//!   ([`ProbeTarget::trust_store`], else OpenSSL's default paths), for the TLS server purpose,
//!   with partial chains allowed (a trusted intermediate is an anchor) and time checks off
//!   (validity is judged separately, against `now`). They are told apart this way:
//!   - the verification fails because the **leaf's** issuer is missing (OpenSSL's "unable to
//!     get (local) issuer certificate" at depth 0, leaf not self-signed): the server sends no
//!     certificate that issued its leaf → `incomplete-chain` (the detail adds that, if that
//!     issuer were a root, it would also be missing from the trust store);
//!   - it succeeds, but only thanks to a *non-self-signed* CA certificate taken from the trust
//!     store whose subject the server does not send at all (the trust store happens to hold
//!     the intermediate the server omits) → `incomplete-chain`, since clients holding only
//!     roots would fail;
//!   - the served certificates link up but the top one's issuer is not trusted (depth > 0),
//!     the server sends an untrusted root, or any other verification error (bad signature,
//!     wrong purpose, unreadable trust store, ...) → `chain-untrusted`;
//!   - a self-signed leaf that is not trusted is only `self-signed-leaf`.
//! - `expired` / `not-yet-valid`: any served certificate, and any trust-store certificate the
//!   verified chain ends with, whose validity does not include `now`.
//! - `chain-too-long`: the server sent more than [`MAX_CHAIN`] certificates; only the first
//!   [`MAX_CHAIN`] are judged and recorded (a server cannot fill the store), the detail says
//!   how many were dropped.
//! - `unexpected-issuer`: [`ProbeTarget::expect_issuer`] is set and the leaf's issuer DN does
//!   not contain it (ASCII case-insensitive): typically a TLS-inspecting proxy.
//!
//! Findings are sorted by kind. Details are sentences naming the certificate, the expected
//! value and the cause. No private key is ever involved.

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use certctl_store::{
    rfc3339, CertificateFacts, Endpoint, Finding, FindingKind, Role, SourceLocation, Store,
    StoreError, UnixTime,
};
use openssl::error::ErrorStack;
use openssl::ssl::{
    ErrorCode, HandshakeError, Ssl, SslContext, SslMethod, SslVerifyMode, SslVersion,
};
use openssl::stack::Stack;
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::{X509PurposeId, X509Ref, X509StoreContext, X509VerifyResult, X509};

use crate::certs::x509::facts_from_der;
use crate::history::AuditAction;

/// The most certificates of a served chain that are judged and recorded; the rest are
/// dropped and reported as `chain-too-long`.
pub const MAX_CHAIN: usize = 20;

/// The wait bound used when none is given (or a zero one is).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// What to probe, and what to expect from it. Also the `certctl probe` request.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProbeTarget {
    /// `host:port` (`[v6]:port` for IPv6 literals).
    pub address: String,
    /// SNI name to send and to check the leaf against; default: the host.
    pub sni: Option<String>,
    /// Role given to the leaf (CA certificates always get `ca`).
    pub role: Option<Role>,
    /// Text the leaf's issuer DN must contain (case-insensitive).
    pub expect_issuer: Option<String>,
    /// Bound on every network wait (lookup, connect, handshake). Zero means the default.
    pub timeout: Duration,
    /// PEM CA bundle to verify against; `None` = OpenSSL's default paths.
    pub trust_store: Option<PathBuf>,
}

impl ProbeTarget {
    /// A target with the defaults: SNI = host, no role, no issuer expectation, 10 s timeout,
    /// system trust store.
    pub fn new(address: impl Into<String>) -> Self {
        ProbeTarget {
            address: address.into(),
            sni: None,
            role: None,
            expect_issuer: None,
            timeout: DEFAULT_TIMEOUT,
            trust_store: None,
        }
    }

    fn effective_timeout(&self) -> Duration {
        if self.timeout.is_zero() {
            DEFAULT_TIMEOUT
        } else {
            self.timeout
        }
    }
}

/// What one probe saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeOutcome {
    /// The target's `host:port`.
    pub address: String,
    /// The certificates served, leaf first, in the order served. Empty when unreachable.
    pub chain: Vec<CertificateFacts>,
    /// What is wrong (empty when all is well), sorted by kind.
    pub findings: Vec<Finding>,
    /// Why no chain could be fetched (the `unreachable` cause), as a sentence.
    pub error: Option<String>,
    /// How long the probe took: resolving, connecting and the handshake, or until it
    /// failed (`certctl_probe_duration_seconds`).
    pub duration: Duration,
}

/// Probes `target` once, judging the chain as of `now`. Blocking; every network wait is
/// bounded by the target's timeout. Never fails: problems are findings.
pub fn probe(target: &ProbeTarget, now: UnixTime) -> ProbeOutcome {
    let address = target.address.clone();
    let started = Instant::now();
    let fetched = split_address(&target.address)
        .and_then(|(host, port)| fetch_chain(target, &host, port).map(|served| (host, served)));
    let duration = started.elapsed();
    let outcome = match fetched {
        Ok((host, served)) => {
            let kept = &served[..served.len().min(MAX_CHAIN)];
            let (chain, mut findings) = judge(target, &host, kept, now);
            if served.len() > MAX_CHAIN {
                findings.push(Finding {
                    kind: FindingKind::ChainTooLong,
                    detail: format!(
                        "{address} served {} certificates; only the first {MAX_CHAIN} were judged and recorded, the other {} were dropped: a TLS server should send its leaf and intermediates (a handful).",
                        served.len(),
                        served.len() - MAX_CHAIN
                    ),
                });
            }
            findings.sort_by_key(|f| f.kind);
            ProbeOutcome {
                address,
                chain,
                findings,
                error: None,
                duration,
            }
        }
        Err(cause) => ProbeOutcome {
            findings: vec![Finding {
                kind: FindingKind::Unreachable,
                detail: format!("{address} could not be probed: {cause}."),
            }],
            address,
            chain: Vec::new(),
            error: Some(cause),
            duration,
        },
    };
    tracing::debug!(
        endpoint = %outcome.address,
        certificates = outcome.chain.len(),
        findings = outcome.findings.len(),
        error = outcome.error.as_deref().unwrap_or(""),
        "probed endpoint"
    );
    outcome
}

/// Probes a known endpoint again as it was configured (SNI, role, expected issuer; 5 s),
/// the handshake without `lock`, and records the outcome under it: how a revoke or a
/// regenerate workflow checks what the endpoints that served the old certificate serve now.
pub fn reprobe<G>(
    store: &Store,
    endpoint: &Endpoint,
    now: UnixTime,
    lock: &dyn Fn() -> G,
) -> ProbeOutcome {
    let target = ProbeTarget {
        address: endpoint.address.clone(),
        sni: endpoint.sni.clone(),
        role: endpoint.role,
        expect_issuer: endpoint.expect_issuer.clone(),
        timeout: std::time::Duration::from_secs(5),
        trust_store: None,
    };
    let outcome = probe(&target, now);
    {
        let _writer = lock();
        let _ = record(store, &target, &outcome, now);
    }
    outcome
}

/// Records `outcome` in the store as of `now` and returns the endpoint state saved.
///
/// When a chain was fetched, every served certificate is observed at
/// `SourceLocation::Endpoint { address, index }` (the leaf with the target's role; CA
/// certificates get `ca`), certificates the endpoint served before but no longer serves at
/// that position are marked gone from it, and the chain becomes the endpoint's chain. When
/// no chain was fetched, the last good chain and `last_success` are kept; only `last_probe`
/// and the findings change. The store is flushed.
pub fn record(
    store: &Store,
    target: &ProbeTarget,
    outcome: &ProbeOutcome,
    now: UnixTime,
) -> Result<Endpoint, StoreError> {
    let previous = store.endpoint(&target.address)?;
    let location = |i: usize| SourceLocation::Endpoint {
        address: target.address.clone(),
        index: u32::try_from(i).unwrap_or(u32::MAX),
    };
    let mut ingest = store.ingest();
    let success = !outcome.chain.is_empty();
    let (chain, last_success) = if success {
        for (i, facts) in outcome.chain.iter().enumerate() {
            let role = if i == 0 { target.role } else { None };
            ingest.observe(facts.clone(), role, location(i), now)?;
        }
        let chain: Vec<_> = outcome.chain.iter().map(|f| f.fingerprint).collect();
        if let Some(previous) = &previous {
            for (i, fp) in previous.chain.iter().enumerate() {
                if chain.get(i) != Some(fp) {
                    ingest.mark_gone(fp, &location(i), now)?;
                }
            }
        }
        (chain, Some(now))
    } else {
        previous
            .as_ref()
            .map(|p| (p.chain.clone(), p.last_success))
            .unwrap_or_default()
    };
    let endpoint = Endpoint {
        address: target.address.clone(),
        sni: target.sni.clone(),
        role: target.role,
        expect_issuer: target.expect_issuer.clone(),
        last_probe: Some(now),
        last_success,
        chain,
        findings: outcome.findings.clone(),
        last_probe_duration_us: Some(
            u64::try_from(outcome.duration.as_micros()).unwrap_or(u64::MAX),
        ),
    };
    ingest.put_endpoint(endpoint.clone());
    ingest.commit()?;
    store.flush()?;
    Ok(endpoint)
}

/// Why `certctl forget` could not forget an endpoint.
#[derive(Debug, thiserror::Error)]
pub enum ForgetError {
    /// No endpoint with this address is in the store; holds the address (`HOST:PORT`, without
    /// `tls://`).
    #[error("no endpoint `{0}` is known (certctl status lists the probed endpoints)")]
    Unknown(String),
    /// The store could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// `certctl forget HOST:PORT` (or `tls://HOST:PORT`): deletes the state of an endpoint that
/// was probed by hand (its last chain, findings and probe times), marks the certificates it
/// served as gone from it, and records it in the audit history. Returns the state removed.
pub fn forget(store: &Store, address: &str, now: UnixTime) -> Result<Endpoint, ForgetError> {
    let address = address.trim();
    let address = address.strip_prefix("tls://").unwrap_or(address);
    let Some(endpoint) = store.endpoint(address)? else {
        return Err(ForgetError::Unknown(address.to_string()));
    };
    let mut ingest = store.ingest();
    for (i, fp) in endpoint.chain.iter().enumerate() {
        let location = SourceLocation::Endpoint {
            address: endpoint.address.clone(),
            index: u32::try_from(i).unwrap_or(u32::MAX),
        };
        ingest.mark_gone(fp, &location, now)?;
    }
    ingest.forget_endpoint(&endpoint.address);
    ingest.commit()?;
    store.flush()?;
    store.record_audit(&certctl_store::AuditEvent {
        at: now,
        fingerprint: endpoint.chain.first().copied(),
        actor: crate::history::actor(),
        action: AuditAction::EndpointForgotten.into(),
        detail: format!(
            "tls://{} ({} findings, last probe {})",
            endpoint.address,
            endpoint.findings.len(),
            endpoint
                .last_probe
                .map_or("never".to_string(), certctl_store::rfc3339)
        ),
    })?;
    Ok(endpoint)
}

// ---- network -------------------------------------------------------------------------------

/// Splits `host:port` / `[v6]:port` ([`crate::net::address`]), the problem said for `probe`.
fn split_address(address: &str) -> Result<(String, u16), String> {
    use crate::net::address::{split_host_port, AddressProblem as P};
    split_host_port(address).map_err(|problem| {
        let why = match problem {
            P::Url => "a URL: give host:port without a scheme",
            P::NoClosingBracket | P::NotIpv6 => {
                "an IPv6 address in brackets must be followed by :port"
            }
            P::NoPort => "the port is missing",
            P::UnbracketedIpv6 => "write IPv6 addresses in brackets, as [2001:db8::1]:443",
            P::NoHost => "the host is empty",
            P::BadHost => "the host name has spaces or a `/`",
            P::BadPort => "the port must be a number from 1 to 65535",
        };
        format!("`{address}` is not a valid endpoint address ({why}; expected host:port, for example gw.contoso.example:443)")
    })
}

/// Resolves `host`, waiting at most `timeout` (the lookup runs on a helper thread that is
/// left to finish on its own if it takes longer).
fn resolve(host: &str, port: u16, timeout: Duration) -> Result<Vec<SocketAddr>, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let lookup = move |name: &str| -> io::Result<Vec<SocketAddr>> {
        Ok((name, port).to_socket_addrs()?.collect())
    };
    let (tx, rx) = mpsc::channel();
    let name = host.to_owned();
    let spawned = std::thread::Builder::new()
        .name("certctl-resolve".into())
        .spawn(move || {
            let _ = tx.send(lookup(&name));
        });
    let result = match spawned {
        Ok(_) => rx.recv_timeout(timeout).map_err(|_| {
            format!(
                "timed out after {} resolving the host name `{host}`",
                fmt_duration(timeout)
            )
        })?,
        Err(_) => lookup(host),
    };
    let addrs = result.map_err(|e| format!("cannot resolve the host name `{host}`: {e}"))?;
    if addrs.is_empty() {
        return Err(format!("the host name `{host}` has no address"));
    }
    Ok(addrs)
}

/// Connects to the first address that answers.
fn connect(addrs: &[SocketAddr], timeout: Duration) -> Result<TcpStream, String> {
    let mut failures = Vec::new();
    for addr in addrs {
        match TcpStream::connect_timeout(addr, timeout) {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => failures.push(match e.kind() {
                io::ErrorKind::ConnectionRefused => format!(
                    "connection refused by {addr} (nothing listens on that port, or a firewall rejects the connection)"
                ),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => format!(
                    "timed out after {} connecting to {addr}",
                    fmt_duration(timeout)
                ),
                _ => format!("cannot connect to {addr}: {e}"),
            }),
        }
    }
    Err(failures.join("; "))
}

/// The TLS client: no verification during the handshake (the chain is judged afterwards), and
/// lenient enough to talk to old servers.
fn client_context() -> Result<SslContext, ErrorStack> {
    let mut builder = SslContext::builder(SslMethod::tls_client())?;
    builder.set_verify(SslVerifyMode::NONE);
    builder.set_security_level(0);
    builder.set_min_proto_version(Some(SslVersion::TLS1))?;
    // Read whatever has arrived, so a non-TLS answer is seen whole (for the error message).
    builder.set_read_ahead(true);
    Ok(builder.build())
}

/// Connects and handshakes; returns the certificates served, leaf first.
fn fetch_chain(target: &ProbeTarget, host: &str, port: u16) -> Result<Vec<X509>, String> {
    let timeout = target.effective_timeout();
    let addrs = resolve(host, port, timeout)?;
    let stream = connect(&addrs, timeout)?;
    let peer = stream
        .peer_addr()
        .map_or_else(|_| target.address.clone(), |a| a.to_string());
    let setup = |e: ErrorStack| {
        format!(
            "TLS handshake failed: the TLS client could not be set up ({})",
            reasons(&e)
        )
    };
    let ctx = client_context().map_err(setup)?;
    let mut ssl = Ssl::new(&ctx).map_err(setup)?;
    let sni = target.sni.as_deref().unwrap_or(host);
    if sni.parse::<IpAddr>().is_err() && !sni.is_empty() {
        ssl.set_hostname(sni).map_err(setup)?;
    }
    let stream = DeadlineStream {
        inner: stream,
        deadline: Instant::now() + timeout,
        received: Vec::new(),
    };
    match ssl.connect(stream) {
        Ok(mut tls) => {
            let ssl = tls.ssl();
            let mut chain: Vec<X509> = ssl
                .peer_cert_chain()
                .map(|s| s.iter().map(ToOwned::to_owned).collect())
                .unwrap_or_default();
            if chain.is_empty() {
                chain.extend(ssl.peer_certificate());
            }
            // Polite close; bounded by the deadline and irrelevant to the outcome.
            let _ = tls.shutdown();
            Ok(chain)
        }
        Err(e) => Err(handshake_failure(e, &peer, timeout)),
    }
}

/// A TCP stream whose reads and writes all end by one deadline, and which keeps the first
/// bytes received (to tell "not TLS" apart).
struct DeadlineStream {
    inner: TcpStream,
    deadline: Instant,
    received: Vec<u8>,
}

/// How many received bytes are kept for the "not TLS" diagnosis.
const SNIFF_BYTES: usize = 64;

impl DeadlineStream {
    fn time_left(&self) -> io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(io::ErrorKind::TimedOut.into())
        } else {
            Ok(left)
        }
    }
}

/// Socket timeouts surface as `WouldBlock` on Unix; OpenSSL would take that for "retry
/// later", so they are reported as `TimedOut`.
fn timed_out(e: io::Error) -> io::Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io::ErrorKind::TimedOut.into(),
        _ => e,
    }
}

impl Read for DeadlineStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.time_left()?;
        self.inner.set_read_timeout(Some(left))?;
        let n = self.inner.read(buf).map_err(timed_out)?;
        let keep = n.min(SNIFF_BYTES.saturating_sub(self.received.len()));
        self.received.extend(buf.iter().take(keep));
        Ok(n)
    }
}

impl Write for DeadlineStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let left = self.time_left()?;
        self.inner.set_write_timeout(Some(left))?;
        self.inner.write(buf).map_err(timed_out)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A sentence for a failed handshake.
fn handshake_failure(e: HandshakeError<DeadlineStream>, peer: &str, timeout: Duration) -> String {
    let mid = match e {
        HandshakeError::SetupFailure(e) => {
            return format!(
                "TLS handshake failed: the TLS client could not be set up ({})",
                reasons(&e)
            )
        }
        HandshakeError::Failure(mid) | HandshakeError::WouldBlock(mid) => mid,
    };
    let received = &mid.get_ref().received;
    if let Some(&first) = received.first() {
        // TLS records start with a content type from 20 (change_cipher_spec) to 24.
        if !(0x14..=0x18).contains(&first) {
            return format!(
                "TLS handshake failed: the peer does not speak TLS (it answered {})",
                describe_bytes(received)
            );
        }
    }
    let error = mid.error();
    let closed = || {
        if received.is_empty() {
            format!("TLS handshake failed: {peer} closed the connection without answering the TLS client hello (it may not speak TLS)")
        } else {
            format!("TLS handshake failed: {peer} closed the connection during the handshake")
        }
    };
    if let Some(io) = error.io_error() {
        return match io.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => format!(
                "timed out after {} waiting for the TLS handshake with {peer}",
                fmt_duration(timeout)
            ),
            io::ErrorKind::ConnectionReset => {
                format!("TLS handshake failed: the connection was reset by {peer}")
            }
            io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof => closed(),
            _ => format!("TLS handshake with {peer} failed: {io}"),
        };
    }
    if let Some(stack) = error.ssl_error() {
        let why = reasons(stack);
        if why.contains("unexpected eof") {
            return closed();
        }
        return format!("TLS handshake with {peer} failed: {why}");
    }
    if error.code() == ErrorCode::SYSCALL || error.code() == ErrorCode::ZERO_RETURN {
        return closed();
    }
    format!("TLS handshake with {peer} failed: {error}")
}

/// The reasons of an OpenSSL error stack (`wrong version number; ...`).
fn reasons(stack: &ErrorStack) -> String {
    let reasons: Vec<&str> = stack.errors().iter().filter_map(|e| e.reason()).collect();
    if reasons.is_empty() {
        stack.to_string()
    } else {
        reasons.join("; ")
    }
}

/// Quotes the first line of a non-TLS answer when it is printable, else shows its first bytes.
fn describe_bytes(bytes: &[u8]) -> String {
    let line: Vec<u8> = bytes
        .iter()
        .copied()
        .take_while(|b| *b != b'\r' && *b != b'\n')
        .take(40)
        .collect();
    if !line.is_empty() && line.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        let text = String::from_utf8_lossy(&line);
        let kind = if text.starts_with("HTTP/") {
            ", which is an HTTP server"
        } else if text.starts_with("SSH-") {
            ", which is an SSH server"
        } else {
            ""
        };
        format!("`{text}`{kind}")
    } else {
        let hex: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
        format!("with the bytes {}", hex.join(" "))
    }
}

/// `10s`, `1.5s`, `250ms`.
pub(crate) fn fmt_duration(d: Duration) -> String {
    if d.as_secs() == 0 {
        format!("{}ms", d.as_millis())
    } else if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

// ---- judging the chain ---------------------------------------------------------------------

// OpenSSL verification error codes (X509_V_ERR_*, stable across versions).
const V_ERR_UNABLE_TO_GET_ISSUER_CERT: i32 = 2;
const V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT: i32 = 18;
const V_ERR_SELF_SIGNED_CERT_IN_CHAIN: i32 = 19;
const V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY: i32 = 20;
const V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE: i32 = 21;

/// Reads the served certificates and decides the findings (everything but `unreachable`).
fn judge(
    target: &ProbeTarget,
    host: &str,
    served: &[X509],
    now: UnixTime,
) -> (Vec<CertificateFacts>, Vec<Finding>) {
    let mut findings = Vec::new();
    let Some(leaf_x509) = served.first() else {
        findings.push(Finding {
            kind: FindingKind::ChainUntrusted,
            detail: format!(
                "{} completed the TLS handshake without presenting any certificate; a certificate chain was expected.",
                target.address
            ),
        });
        return (Vec::new(), findings);
    };
    let chain = judge_readable_chain(target, served, &mut findings);
    let Some(leaf) = chain.first() else {
        return (chain, findings);
    };
    judge_host_name(target, host, leaf, &mut findings);
    let self_signed = is_self_signed(leaf_x509);
    let trust_desc = match &target.trust_store {
        Some(path) => format!("the trust store {}", path.display()),
        None => "the system trust store".to_owned(),
    };
    let (anchors, self_signed_trusted) = judge_trust(
        target,
        served,
        &chain,
        self_signed,
        &trust_desc,
        &mut findings,
    );
    if self_signed {
        judge_self_signed_leaf(leaf, self_signed_trusted, &trust_desc, &mut findings);
    }
    judge_validity(&chain, &anchors, now, &mut findings);
    judge_issuer(target, leaf, &mut findings);
    (chain, findings)
}

/// The chain as served; it stops before a certificate that cannot be read (a finding).
fn judge_readable_chain(
    target: &ProbeTarget,
    served: &[X509],
    findings: &mut Vec<Finding>,
) -> Vec<CertificateFacts> {
    let mut chain = Vec::with_capacity(served.len());
    for (i, cert) in served.iter().enumerate() {
        match cert
            .to_der()
            .map_err(|e| reasons(&e))
            .and_then(|der| facts_from_der(&der).map_err(|e| e.to_string()))
        {
            Ok(facts) => chain.push(facts),
            Err(e) => {
                findings.push(Finding {
                    kind: FindingKind::ChainUntrusted,
                    detail: format!("Certificate #{i} of the chain served by {} cannot be read ({e}); every served certificate should be a valid X.509 certificate.", target.address),
                });
                break;
            }
        }
    }
    chain
}

/// `hostname-mismatch` when the leaf does not cover the SNI name (or the host name).
fn judge_host_name(
    target: &ProbeTarget,
    host: &str,
    leaf: &CertificateFacts,
    findings: &mut Vec<Finding>,
) {
    let (name, name_origin) = match target.sni.as_deref() {
        Some(sni) => (sni, "the SNI name"),
        None => (host, "the host name"),
    };
    if !leaf_covers(leaf, name) {
        findings.push(Finding {
            kind: FindingKind::HostnameMismatch,
            detail: format!(
                "The leaf certificate `{}` is for {} but not for `{name}`, {name_origin} the endpoint is reached by; clients will reject it.",
                leaf.display_name(),
                leaf_names(leaf)
            ),
        });
    }
}

/// Verifies the served chain against the trust store. Returns the CA certificates taken from
/// the trust store (when the chain verifies) and whether a self-signed leaf is pinned there.
fn judge_trust(
    target: &ProbeTarget,
    served: &[X509],
    chain: &[CertificateFacts],
    self_signed: bool,
    trust_desc: &str,
    findings: &mut Vec<Finding>,
) -> (Vec<CertificateFacts>, bool) {
    let leaf_name = chain.first().map(|f| f.display_name()).unwrap_or_default();
    match trust_store(target.trust_store.as_deref()).and_then(|store| {
        verify(served, &store)
            .map_err(|e| format!("OpenSSL could not run the verification ({})", reasons(&e)))
    }) {
        Err(why) => {
            findings.push(Finding {
                kind: FindingKind::ChainUntrusted,
                detail: format!("The chain of `{leaf_name}` could not be checked: {why}."),
            });
            (Vec::new(), false)
        }
        Ok(v) if v.ok => (
            judge_verified_chain(served, chain, &v, trust_desc, findings),
            self_signed,
        ),
        Ok(v) => {
            judge_unverified_chain(chain, &v, self_signed, trust_desc, findings);
            (Vec::new(), false)
        }
    }
}

/// A chain that verifies: `incomplete-chain` when it only does so thanks to an intermediate
/// the trust store holds but the server does not send. Returns the trust-store certificates.
fn judge_verified_chain(
    served: &[X509],
    chain: &[CertificateFacts],
    v: &Verification,
    trust_desc: &str,
    findings: &mut Vec<Finding>,
) -> Vec<CertificateFacts> {
    let served_der: HashSet<Vec<u8>> = served.iter().filter_map(|c| c.to_der().ok()).collect();
    let from_store: Vec<&X509> = v
        .chain
        .iter()
        .filter(|c| c.to_der().is_ok_and(|der| !served_der.contains(&der)))
        .collect();
    // The lowest certificate taken from the trust store: when it is an intermediate
    // that the server does not send (no served certificate has its subject), the
    // chain only verifies thanks to the local trust store.
    let served_subjects: HashSet<&str> = chain.iter().map(|f| f.subject.as_str()).collect();
    if let Some(first) = from_store.first() {
        let sent = facts_of(first).is_some_and(|f| served_subjects.contains(f.subject.as_str()));
        if !sent && !is_self_signed(first) {
            let leaf_name = chain.first().map(|f| f.display_name()).unwrap_or_default();
            findings.push(Finding {
                kind: FindingKind::IncompleteChain,
                detail: format!(
                    "The chain of `{leaf_name}` only verifies because {trust_desc} holds the intermediate CA `{}`: the server does not send it, so clients that hold only root certificates cannot build the chain; configure the server to send its intermediate certificate(s).",
                    cn_of(first)
                ),
            });
        }
    }
    from_store
        .into_iter()
        .filter_map(|c| c.to_der().ok().and_then(|der| facts_from_der(&der).ok()))
        .collect()
}

/// A chain that does not verify: `incomplete-chain` or `chain-untrusted`, by OpenSSL's code.
fn judge_unverified_chain(
    chain: &[CertificateFacts],
    v: &Verification,
    self_signed: bool,
    trust_desc: &str,
    findings: &mut Vec<Finding>,
) {
    let Some(leaf) = chain.first() else {
        return;
    };
    let leaf_name = leaf.display_name();
    let at = v
        .current
        .as_ref()
        .map(|c| cn_of(c))
        .unwrap_or_else(|| leaf_name.to_owned());
    let issuer = v.current.as_ref().map(|c| issuer_of(c)).unwrap_or_default();
    let (kind, detail) = match v.code {
        V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT => return,
        V_ERR_UNABLE_TO_GET_ISSUER_CERT
        | V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
        | V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE
            if v.depth == 0 && !self_signed =>
        (
            FindingKind::IncompleteChain,
            format!(
                "The server does not send the CA certificate that issued its leaf `{leaf_name}` (issuer `{}`), and {trust_desc} does not hold it either: configure the server to send its intermediate certificate(s) (if that issuer is a root CA, it is also not trusted).",
                leaf.issuer
            ),
        ),
        V_ERR_UNABLE_TO_GET_ISSUER_CERT
        | V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
        | V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE => (
            FindingKind::ChainUntrusted,
            format!(
                "The chain of `{leaf_name}` ends at the CA `{at}`, whose issuer `{issuer}` is not in {trust_desc}; the chain should lead to a trusted root (or the server omits a further intermediate)."
            ),
        ),
        V_ERR_SELF_SIGNED_CERT_IN_CHAIN => (
            FindingKind::ChainUntrusted,
            format!(
                "The chain of `{leaf_name}` ends at the root CA `{at}`, which the server sends but {trust_desc} does not hold; the chain should lead to a trusted root."
            ),
        ),
        _ => (
            FindingKind::ChainUntrusted,
            format!(
                "The chain of `{leaf_name}` does not verify against {trust_desc}: {} (at the certificate `{at}`, depth {}).",
                v.error, v.depth
            ),
        ),
    };
    findings.push(Finding { kind, detail });
}

/// `self-signed-leaf`, saying whether the trust store pins it.
fn judge_self_signed_leaf(
    leaf: &CertificateFacts,
    pinned: bool,
    trust_desc: &str,
    findings: &mut Vec<Finding>,
) {
    let trust = if pinned {
        format!("it is pinned in {trust_desc}, but other clients will reject it")
    } else {
        format!("it is not in {trust_desc}, so clients reject it")
    };
    findings.push(Finding {
        kind: FindingKind::SelfSignedLeaf,
        detail: format!(
            "The leaf certificate `{}` is self-signed (issuer = subject `{}`): {trust}; it should be issued by a CA.",
            leaf.display_name(),
            leaf.subject
        ),
    });
}

/// `expired` / `not-yet-valid` for each served and trust-store certificate, as of `now`.
fn judge_validity(
    chain: &[CertificateFacts],
    anchors: &[CertificateFacts],
    now: UnixTime,
    findings: &mut Vec<Finding>,
) {
    let positions = chain
        .iter()
        .enumerate()
        .map(|(i, f)| (describe_position(i, f), f))
        .chain(anchors.iter().map(|f| {
            (
                format!("trust-store CA certificate `{}`", f.display_name()),
                f,
            )
        }));
    for (what, facts) in positions {
        if facts.not_after <= now {
            findings.push(Finding {
                kind: FindingKind::Expired,
                detail: format!(
                    "The {what} expired on {}; it must be valid at probe time ({}): renew it.",
                    rfc3339(facts.not_after),
                    rfc3339(now)
                ),
            });
        } else if facts.not_before > now {
            findings.push(Finding {
                kind: FindingKind::NotYetValid,
                detail: format!(
                    "The {what} is not valid before {}; it must be valid at probe time ({}): check the issuing CA's or this server's clock.",
                    rfc3339(facts.not_before),
                    rfc3339(now)
                ),
            });
        }
    }
}

/// `unexpected-issuer` when the leaf's issuer does not contain `--expect-issuer`.
fn judge_issuer(target: &ProbeTarget, leaf: &CertificateFacts, findings: &mut Vec<Finding>) {
    let Some(expected) = target.expect_issuer.as_deref().map(str::trim) else {
        return;
    };
    if !leaf
        .issuer
        .to_ascii_lowercase()
        .contains(&expected.to_ascii_lowercase())
    {
        findings.push(Finding {
            kind: FindingKind::UnexpectedIssuer,
            detail: format!(
                "The leaf certificate `{}` is issued by `{}`, which does not contain the expected issuer `{expected}`: a TLS-inspecting proxy may be intercepting the connection, or the certificate was replaced.",
                leaf.display_name(),
                leaf.issuer
            ),
        });
    }
}

/// The result of an OpenSSL chain verification.
struct Verification {
    ok: bool,
    code: i32,
    error: &'static str,
    depth: u32,
    /// The certificate the error is about.
    current: Option<X509>,
    /// The chain built (up to the failure), leaf first.
    chain: Vec<X509>,
}

/// The trust store: the PEM bundle, or OpenSSL's default paths.
fn trust_store(path: Option<&Path>) -> Result<X509Store, String> {
    let fail =
        |e: ErrorStack| format!("OpenSSL could not set up the trust store ({})", reasons(&e));
    let mut builder = X509StoreBuilder::new().map_err(fail)?;
    match path {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| format!("the trust store {} cannot be read: {e}", path.display()))?;
            let certs = X509::stack_from_pem(&pem).map_err(|e| {
                format!(
                    "the trust store {} is not a PEM certificate bundle ({})",
                    path.display(),
                    reasons(&e)
                )
            })?;
            if certs.is_empty() {
                return Err(format!(
                    "the trust store {} holds no PEM certificate",
                    path.display()
                ));
            }
            for cert in certs {
                builder.add_cert(cert).map_err(fail)?;
            }
        }
        None => builder.set_default_paths().map_err(fail)?,
    }
    builder
        .set_flags(X509VerifyFlags::NO_CHECK_TIME | X509VerifyFlags::PARTIAL_CHAIN)
        .map_err(fail)?;
    builder
        .set_purpose(X509PurposeId::SSL_SERVER)
        .map_err(fail)?;
    Ok(builder.build())
}

/// Verifies the leaf with the other served certificates as untrusted helpers.
fn verify(served: &[X509], store: &X509Store) -> Result<Verification, ErrorStack> {
    let mut helpers = Stack::new()?;
    for cert in served.iter().skip(1) {
        helpers.push(cert.clone())?;
    }
    let Some(leaf) = served.first() else {
        return Ok(Verification {
            ok: false,
            code: X509VerifyResult::APPLICATION_VERIFICATION.as_raw(),
            error: "no certificate",
            depth: 0,
            current: None,
            chain: Vec::new(),
        });
    };
    let mut ctx = X509StoreContext::new()?;
    ctx.init(store, leaf, &helpers, |ctx| {
        let ok = ctx.verify_cert()?;
        let error = ctx.error();
        Ok(Verification {
            ok,
            code: error.as_raw(),
            error: error.error_string(),
            depth: ctx.error_depth(),
            current: ctx.current_cert().map(ToOwned::to_owned),
            chain: ctx
                .chain()
                .map(|s| s.iter().map(ToOwned::to_owned).collect())
                .unwrap_or_default(),
        })
    })
}

/// Issued by itself (issuer name = subject name), and its signature verifies with its own
/// key. `X509::issued` is not used: it also demands keyCertSign in the key usage, which
/// a server certificate normally lacks, so a self-signed server certificate would pass
/// unnoticed.
fn is_self_signed(cert: &X509Ref) -> bool {
    let same_name = match (cert.subject_name().to_der(), cert.issuer_name().to_der()) {
        (Ok(subject), Ok(issuer)) => subject == issuer,
        _ => false,
    };
    same_name
        && cert
            .public_key()
            .and_then(|key| cert.verify(&key))
            .unwrap_or(false)
}

fn facts_of(cert: &X509Ref) -> Option<CertificateFacts> {
    cert.to_der().ok().and_then(|der| facts_from_der(&der).ok())
}

fn cn_of(cert: &X509Ref) -> String {
    facts_of(cert).map_or_else(
        || "(unreadable)".to_owned(),
        |f| f.display_name().to_owned(),
    )
}

fn issuer_of(cert: &X509Ref) -> String {
    facts_of(cert).map_or_else(|| "(unreadable)".to_owned(), |f| f.issuer)
}

fn describe_position(index: usize, facts: &CertificateFacts) -> String {
    let name = facts.display_name();
    match index {
        0 => format!("leaf certificate `{name}`"),
        _ if facts.is_ca => format!("CA certificate `{name}` (#{index} of the served chain)"),
        _ => format!("certificate `{name}` (#{index} of the served chain)"),
    }
}

/// `gw.example (DNS), 192.0.2.1 (IP)`, capped to a few names.
fn leaf_names(leaf: &CertificateFacts) -> String {
    const SHOWN: usize = 5;
    let names: Vec<String> = leaf
        .sans
        .dns
        .iter()
        .map(|n| format!("{n} (DNS)"))
        .chain(leaf.sans.ip.iter().map(|n| format!("{n} (IP)")))
        .collect();
    if names.is_empty() {
        return match &leaf.subject_cn {
            Some(cn) => format!("{cn} (CN, no subject alternative name)"),
            None => "no name at all (no CN, no subject alternative name)".to_owned(),
        };
    }
    let mut text = names
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        text.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    text
}

// ---- host names ----------------------------------------------------------------------------

/// Whether the leaf covers `name` (a DNS name or an IP literal): DNS and IP SANs, or the CN
/// when the certificate has neither.
fn leaf_covers(leaf: &CertificateFacts, name: &str) -> bool {
    let name = normalize(name);
    let ip = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(&name)
        .parse::<IpAddr>()
        .ok();
    if leaf.sans.dns.is_empty() && leaf.sans.ip.is_empty() {
        return leaf.subject_cn.as_deref().is_some_and(|cn| match ip {
            Some(ip) => cn.trim().parse::<IpAddr>() == Ok(ip),
            None => dns_matches(cn, &name),
        });
    }
    match ip {
        Some(ip) => leaf.sans.ip.iter().any(|s| s.parse::<IpAddr>() == Ok(ip)),
        None => leaf
            .sans
            .dns
            .iter()
            .any(|pattern| dns_matches(pattern, &name)),
    }
}

fn normalize(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// Exact match, or `*.rest` matching exactly one non-empty leftmost label (`rest` must have
/// at least two labels: `*.com` matches nothing).
fn dns_matches(pattern: &str, name: &str) -> bool {
    let pattern = normalize(pattern);
    if pattern == name {
        return !name.is_empty();
    }
    match pattern.strip_prefix("*.") {
        Some(suffix) if suffix.contains('.') && !suffix.contains('*') => name
            .split_once('.')
            .is_some_and(|(first, rest)| !first.is_empty() && rest == suffix),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};
    use std::thread::JoinHandle;

    use certctl_store::{KeyAlgorithm, Sha256, SubjectAltNames};
    use openssl::pkey::{PKey, Private};
    use openssl::ssl::{SslAcceptor, SslMethod};
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa,
        KeyPair, KeyUsagePurpose,
    };
    use tempfile::NamedTempFile;
    use time::OffsetDateTime;

    use super::*;

    /// 2025-01-01T00:00:00Z
    const NOT_BEFORE: i64 = 1_735_689_600;
    /// 2027-06-30T12:00:00Z
    const NOT_AFTER: i64 = 1_814_356_800;
    /// 2026-01-01T00:00:00Z, the probe time of every test.
    const NOW: i64 = 1_767_225_600;
    /// 2025-12-01T00:00:00Z
    const LAST_MONTH: i64 = 1_764_547_200;

    fn ts(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(secs).expect("valid test time")
    }

    fn params(cn: &str, names: &[&str], validity: (i64, i64)) -> CertificateParams {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut p = CertificateParams::new(names).expect("names");
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Contoso");
        dn.push(DnType::CommonName, cn);
        p.distinguished_name = dn;
        // Always explicit: rcgen's default validity runs to the year 4096.
        p.not_before = ts(validity.0);
        p.not_after = ts(validity.1);
        p
    }

    struct Ca {
        issuer: CertifiedIssuer<'static, KeyPair>,
        x509: X509,
    }

    fn ca_params(cn: &str) -> CertificateParams {
        let mut p = params(cn, &[], (NOT_BEFORE, NOT_AFTER));
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p
    }

    fn root(cn: &str) -> Ca {
        let issuer = CertifiedIssuer::self_signed(ca_params(cn), KeyPair::generate().expect("key"))
            .expect("root");
        let x509 = X509::from_der(issuer.der()).expect("der");
        Ca { issuer, x509 }
    }

    fn intermediate(cn: &str, parent: &Ca) -> Ca {
        let key = KeyPair::generate().expect("key");
        let issuer =
            CertifiedIssuer::signed_by(ca_params(cn), key, &*parent.issuer).expect("intermediate");
        let x509 = X509::from_der(issuer.der()).expect("der");
        Ca { issuer, x509 }
    }

    struct Leaf {
        x509: X509,
        key: PKey<Private>,
    }

    impl Leaf {
        fn facts(&self) -> CertificateFacts {
            facts_from_der(&self.x509.to_der().expect("der")).expect("facts")
        }
    }

    /// A server leaf for `names` (the first is the CN), signed by `issuer` or self-signed.
    fn leaf(names: &[&str], issuer: Option<&Ca>, validity: (i64, i64)) -> Leaf {
        let key = KeyPair::generate().expect("key");
        let mut p = params(names[0], names, validity);
        p.is_ca = IsCa::ExplicitNoCa;
        let cert = match issuer {
            Some(ca) => p.signed_by(&key, &*ca.issuer),
            None => p.self_signed(&key),
        }
        .expect("leaf");
        Leaf {
            x509: X509::from_der(cert.der()).expect("der"),
            key: PKey::private_key_from_pkcs8(&key.serialize_der()).expect("pkcs8"),
        }
    }

    /// Root → intermediate → leaf for gw.example and 127.0.0.1, valid from 2025 to mid-2027.
    struct Pki {
        root: Ca,
        intermediate: Ca,
        leaf: Leaf,
    }

    fn pki() -> Pki {
        let root = root("Contoso Root CA");
        let intermediate = intermediate("Contoso Issuing CA", &root);
        let leaf = leaf(
            &["gw.example", "127.0.0.1"],
            Some(&intermediate),
            (NOT_BEFORE, NOT_AFTER),
        );
        Pki {
            root,
            intermediate,
            leaf,
        }
    }

    fn trust_file(certs: &[&X509]) -> NamedTempFile {
        let mut file = NamedTempFile::new().expect("temp file");
        for cert in certs {
            file.write_all(&cert.to_pem().expect("pem")).expect("write");
        }
        file.flush().expect("flush");
        file
    }

    fn target(address: &str, trust: &NamedTempFile) -> ProbeTarget {
        ProbeTarget {
            sni: Some("gw.example".into()),
            trust_store: Some(trust.path().to_path_buf()),
            ..ProbeTarget::new(address)
        }
    }

    fn kinds(outcome: &ProbeOutcome) -> Vec<FindingKind> {
        outcome.findings.iter().map(|f| f.kind).collect()
    }

    /// A listener on 127.0.0.1:0 whose thread handles at most `connections` connections and
    /// gives up accepting after 20 s, so it never outlives a test by much.
    fn listen(
        connections: usize,
        handle: impl Fn(TcpStream) + Send + 'static,
    ) -> (String, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("addr").to_string();
        listener.set_nonblocking(true).expect("nonblocking");
        let thread = std::thread::spawn(move || {
            let give_up = Instant::now() + Duration::from_secs(20);
            let mut served = 0;
            while served < connections && Instant::now() < give_up {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).expect("blocking");
                        stream
                            .set_read_timeout(Some(Duration::from_secs(5)))
                            .expect("timeout");
                        stream
                            .set_write_timeout(Some(Duration::from_secs(5)))
                            .expect("timeout");
                        handle(stream);
                        served += 1;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        (address, thread)
    }

    /// A TLS server presenting `leaf` followed by `extra`.
    fn serve_tls(leaf: &Leaf, extra: &[&X509], connections: usize) -> (String, JoinHandle<()>) {
        let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).expect("acceptor");
        builder.set_private_key(&leaf.key).expect("key");
        builder.set_certificate(&leaf.x509).expect("cert");
        for cert in extra {
            builder
                .add_extra_chain_cert((*cert).clone())
                .expect("chain");
        }
        builder.check_private_key().expect("key matches");
        let acceptor = builder.build();
        listen(connections, move |stream| {
            if let Ok(mut tls) = acceptor.accept(stream) {
                let _ = tls.shutdown();
            }
        })
    }

    #[test]
    fn good_chain_has_no_findings_and_is_recorded_with_its_sources() {
        let pki = pki();
        let trust = trust_file(&[&pki.root.x509]);
        let (address, server) = serve_tls(&pki.leaf, &[&pki.intermediate.x509], 1);
        let target = ProbeTarget {
            role: Some(Role::Gateway),
            ..target(&address, &trust)
        };

        let outcome = probe(&target, NOW);
        assert_eq!(outcome.error, None);
        assert_eq!(outcome.findings, vec![]);
        assert_eq!(outcome.address, address);
        assert_eq!(outcome.chain.len(), 2);
        assert_eq!(outcome.chain[0], pki.leaf.facts());
        assert_eq!(
            outcome.chain[1].subject_cn.as_deref(),
            Some("Contoso Issuing CA")
        );
        server.join().expect("server thread");

        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("store")).expect("store");
        let endpoint = record(&store, &target, &outcome, NOW).expect("record");
        assert_eq!(store.len(), 2);
        assert_eq!(
            endpoint.chain,
            vec![outcome.chain[0].fingerprint, outcome.chain[1].fingerprint]
        );
        assert_eq!(endpoint.last_probe, Some(NOW));
        assert_eq!(endpoint.last_success, Some(NOW));
        assert_eq!(endpoint.role, Some(Role::Gateway));
        assert_eq!(endpoint.sni.as_deref(), Some("gw.example"));
        assert!(endpoint.findings.is_empty());
        assert_eq!(store.endpoint(&address).expect("read"), Some(endpoint));

        for (index, (facts, role)) in outcome
            .chain
            .iter()
            .zip([Role::Gateway, Role::Ca])
            .enumerate()
        {
            let cert = store.get(&facts.fingerprint).expect("get").expect("stored");
            assert_eq!(cert.role, role);
            assert_eq!(cert.sources.len(), 1);
            let source = &cert.sources[0];
            assert_eq!(
                source.location,
                SourceLocation::Endpoint {
                    address: address.clone(),
                    index: index as u32
                }
            );
            assert_eq!(
                source.location.to_string(),
                format!("tls://{address}#{index}")
            );
            assert!(source.location.to_string().starts_with("tls://127.0.0.1:"));
            assert_eq!((source.first_seen, source.gone_since), (NOW, None));
        }
    }

    #[test]
    fn ip_literal_without_sni_is_checked_against_ip_sans() {
        let pki = pki();
        let trust = trust_file(&[&pki.root.x509]);
        let (address, server) = serve_tls(&pki.leaf, &[&pki.intermediate.x509], 1);
        let outcome = probe(
            &ProbeTarget {
                sni: None,
                ..target(&address, &trust)
            },
            NOW,
        );
        assert_eq!(outcome.error, None);
        assert_eq!(outcome.findings, vec![]);
        assert_eq!(outcome.chain.len(), 2);
        server.join().expect("server thread");
    }

    #[test]
    fn expired_leaf_is_reported_with_its_date() {
        let pki = pki();
        let expired = leaf(
            &["gw.example"],
            Some(&pki.intermediate),
            (NOT_BEFORE, LAST_MONTH),
        );
        let trust = trust_file(&[&pki.root.x509]);
        let (address, server) = serve_tls(&expired, &[&pki.intermediate.x509], 1);
        let outcome = probe(&target(&address, &trust), NOW);
        assert_eq!(outcome.error, None);
        assert_eq!(kinds(&outcome), vec![FindingKind::Expired]);
        let detail = &outcome.findings[0].detail;
        assert!(detail.contains("leaf certificate `gw.example`"), "{detail}");
        assert!(
            detail.contains("expired on 2025-12-01T00:00:00Z"),
            "{detail}"
        );
        assert!(detail.contains("2026-01-01T00:00:00Z"), "{detail}");
        assert_eq!(outcome.chain[0].not_after, LAST_MONTH);
        server.join().expect("server thread");
    }

    #[test]
    fn not_yet_valid_intermediate_is_reported() {
        let root = root("Contoso Root CA");
        let mut p = ca_params("Future Issuing CA");
        p.not_before = ts(NOW + 86_400);
        let future =
            CertifiedIssuer::signed_by(p, KeyPair::generate().expect("key"), &*root.issuer)
                .expect("ca");
        let future = Ca {
            x509: X509::from_der(future.der()).expect("der"),
            issuer: future,
        };
        let leaf = leaf(&["gw.example"], Some(&future), (NOT_BEFORE, NOT_AFTER));
        let trust = trust_file(&[&root.x509]);
        let (address, server) = serve_tls(&leaf, &[&future.x509], 1);
        let outcome = probe(&target(&address, &trust), NOW);
        assert_eq!(kinds(&outcome), vec![FindingKind::NotYetValid]);
        let detail = &outcome.findings[0].detail;
        assert!(
            detail.contains("CA certificate `Future Issuing CA` (#1 of the served chain)"),
            "{detail}"
        );
        assert!(
            detail.contains("not valid before 2026-01-02T00:00:00Z"),
            "{detail}"
        );
        server.join().expect("server thread");
    }

    #[test]
    fn wrong_host_is_a_hostname_mismatch() {
        let pki = pki();
        let other = leaf(
            &["other.example"],
            Some(&pki.intermediate),
            (NOT_BEFORE, NOT_AFTER),
        );
        let trust = trust_file(&[&pki.root.x509]);
        let (address, server) = serve_tls(&other, &[&pki.intermediate.x509], 1);
        let outcome = probe(&target(&address, &trust), NOW);
        assert_eq!(outcome.error, None);
        assert_eq!(kinds(&outcome), vec![FindingKind::HostnameMismatch]);
        let detail = &outcome.findings[0].detail;
        assert!(detail.contains("`other.example`"), "{detail}");
        assert!(detail.contains("other.example (DNS)"), "{detail}");
        assert!(
            detail.contains("not for `gw.example`, the SNI name"),
            "{detail}"
        );
        server.join().expect("server thread");
    }

    #[test]
    fn self_signed_leaf_is_only_self_signed() {
        let pki = pki();
        let selfie = leaf(&["gw.example"], None, (NOT_BEFORE, NOT_AFTER));
        let trust = trust_file(&[&pki.root.x509]);
        let (address, server) = serve_tls(&selfie, &[], 1);
        let outcome = probe(&target(&address, &trust), NOW);
        assert_eq!(outcome.error, None);
        assert_eq!(kinds(&outcome), vec![FindingKind::SelfSignedLeaf]);
        let detail = &outcome.findings[0].detail;
        assert!(detail.contains("`gw.example` is self-signed"), "{detail}");
        assert!(detail.contains("it is not in the trust store"), "{detail}");
        assert_eq!(outcome.chain.len(), 1);
        assert_eq!(outcome.chain[0].issuer, outcome.chain[0].subject);
        server.join().expect("server thread");
    }

    #[test]
    fn leaf_without_its_intermediate_is_an_incomplete_chain() {
        let pki = pki();
        let trust = trust_file(&[&pki.root.x509]);
        let (address, server) = serve_tls(&pki.leaf, &[], 1);
        let outcome = probe(&target(&address, &trust), NOW);
        assert_eq!(outcome.error, None);
        assert_eq!(kinds(&outcome), vec![FindingKind::IncompleteChain]);
        let detail = &outcome.findings[0].detail;
        assert!(detail.contains("leaf `gw.example`"), "{detail}");
        assert!(detail.contains("CN=Contoso Issuing CA"), "{detail}");
        assert_eq!(outcome.chain.len(), 1);
        server.join().expect("server thread");
    }

    #[test]
    fn missing_intermediate_found_only_in_the_trust_store_is_an_incomplete_chain() {
        let pki = pki();
        let trust = trust_file(&[&pki.root.x509, &pki.intermediate.x509]);
        let (address, server) = serve_tls(&pki.leaf, &[], 1);
        let outcome = probe(&target(&address, &trust), NOW);
        assert_eq!(kinds(&outcome), vec![FindingKind::IncompleteChain]);
        let detail = &outcome.findings[0].detail;
        assert!(
            detail.contains("holds the intermediate CA `Contoso Issuing CA`"),
            "{detail}"
        );
        server.join().expect("server thread");
    }

    #[test]
    fn chain_to_an_unknown_root_is_untrusted() {
        let pki = pki();
        let stranger = root("Someone Else Root CA");
        let trust = trust_file(&[&stranger.x509]);
        // Leaf + intermediate: the intermediate's issuer is not trusted.
        let (address, server) = serve_tls(&pki.leaf, &[&pki.intermediate.x509], 1);
        let outcome = probe(&target(&address, &trust), NOW);
        assert_eq!(kinds(&outcome), vec![FindingKind::ChainUntrusted]);
        let detail = &outcome.findings[0].detail;
        assert!(
            detail.contains("ends at the CA `Contoso Issuing CA`"),
            "{detail}"
        );
        assert!(detail.contains("CN=Contoso Root CA"), "{detail}");
        server.join().expect("server thread");

        // Leaf + intermediate + root: the server sends a root nobody trusts.
        let (address, server) = serve_tls(&pki.leaf, &[&pki.intermediate.x509, &pki.root.x509], 1);
        let outcome = probe(&target(&address, &trust), NOW);
        assert_eq!(kinds(&outcome), vec![FindingKind::ChainUntrusted]);
        assert_eq!(outcome.chain.len(), 3);
        let detail = &outcome.findings[0].detail;
        assert!(
            detail.contains("root CA `Contoso Root CA`, which the server sends"),
            "{detail}"
        );
        server.join().expect("server thread");

        // No trust store given: OpenSSL's default paths, which do not know this test root.
        let (address, server) = serve_tls(&pki.leaf, &[&pki.intermediate.x509], 1);
        let outcome = probe(
            &ProbeTarget {
                sni: Some("gw.example".into()),
                ..ProbeTarget::new(&address)
            },
            NOW,
        );
        assert_eq!(kinds(&outcome), vec![FindingKind::ChainUntrusted]);
        let detail = &outcome.findings[0].detail;
        assert!(
            detail.contains("is not in the system trust store"),
            "{detail}"
        );
        server.join().expect("server thread");
    }

    #[test]
    fn unreadable_trust_store_is_reported_as_untrusted() {
        let pki = pki();
        let (address, server) = serve_tls(&pki.leaf, &[&pki.intermediate.x509], 1);
        let outcome = probe(
            &ProbeTarget {
                sni: Some("gw.example".into()),
                trust_store: Some(PathBuf::from("/nonexistent/certctl-ca.pem")),
                ..ProbeTarget::new(&address)
            },
            NOW,
        );
        assert_eq!(kinds(&outcome), vec![FindingKind::ChainUntrusted]);
        let detail = &outcome.findings[0].detail;
        assert!(
            detail.contains("the trust store /nonexistent/certctl-ca.pem cannot be read"),
            "{detail}"
        );
        server.join().expect("server thread");
    }

    #[test]
    fn proxy_issuer_is_an_unexpected_issuer() {
        let pki = pki();
        let proxy = root("Inspecting Proxy CA");
        let forged = leaf(&["gw.example"], Some(&proxy), (NOT_BEFORE, NOT_AFTER));
        // The proxy's CA is trusted on the machine, as inspecting proxies require.
        let trust = trust_file(&[&pki.root.x509, &proxy.x509]);
        let (address, server) = serve_tls(&forged, &[], 1);
        let target = ProbeTarget {
            expect_issuer: Some("contoso issuing".into()),
            ..target(&address, &trust)
        };
        let outcome = probe(&target, NOW);
        assert_eq!(kinds(&outcome), vec![FindingKind::UnexpectedIssuer]);
        let detail = &outcome.findings[0].detail;
        assert!(detail.contains("`gw.example`"), "{detail}");
        assert!(
            detail.contains("issued by `CN=Inspecting Proxy CA,O=Contoso`"),
            "{detail}"
        );
        assert!(
            detail.contains("expected issuer `contoso issuing`"),
            "{detail}"
        );

        // The genuine chain passes the same expectation (case-insensitively).
        let (genuine, genuine_server) = serve_tls(&pki.leaf, &[&pki.intermediate.x509], 1);
        let outcome = probe(
            &ProbeTarget {
                address: genuine,
                ..target
            },
            NOW,
        );
        assert_eq!(outcome.findings, vec![]);
        genuine_server.join().expect("server thread");
        server.join().expect("server thread");
    }

    #[test]
    fn refused_port_is_unreachable() {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("addr").port()
        };
        let address = format!("127.0.0.1:{port}");
        let outcome = probe(&ProbeTarget::new(&address), NOW);
        assert_eq!(kinds(&outcome), vec![FindingKind::Unreachable]);
        assert!(outcome.chain.is_empty());
        let error = outcome.error.as_deref().expect("error");
        assert!(
            error.starts_with(&format!("connection refused by {address}")),
            "{error}"
        );
        assert!(outcome.findings[0].detail.contains(&address));
    }

    #[test]
    fn unreachable_endpoint_keeps_its_last_good_chain() {
        let pki = pki();
        let trust = trust_file(&[&pki.root.x509]);
        let (address, server) = serve_tls(&pki.leaf, &[&pki.intermediate.x509], 1);
        let target = ProbeTarget {
            role: Some(Role::Iis),
            ..target(&address, &trust)
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("store")).expect("store");

        let good = probe(&target, NOW);
        assert_eq!(good.findings, vec![]);
        let first = record(&store, &target, &good, NOW).expect("record");
        // The server handled its one connection and closed its listener: now refused.
        server.join().expect("server thread");

        let later = NOW + 3600;
        let bad = probe(&target, later);
        assert_eq!(kinds(&bad), vec![FindingKind::Unreachable]);
        assert!(bad
            .error
            .as_deref()
            .is_some_and(|e| e.contains("connection refused")));
        let second = record(&store, &target, &bad, later).expect("record");
        assert_eq!(second.chain, first.chain);
        assert_eq!(second.chain.len(), 2);
        assert_eq!(second.last_success, Some(NOW));
        assert_eq!(second.last_probe, Some(later));
        assert_eq!(second.findings, bad.findings);
        assert_eq!(store.endpoint(&address).expect("read"), Some(second));
        // The certificates are still current at the endpoint.
        let leaf = store.get(&first.chain[0]).expect("get").expect("stored");
        assert_eq!(leaf.role, Role::Iis);
        assert_eq!(leaf.sources[0].gone_since, None);
    }

    #[test]
    fn plain_http_server_is_not_tls() {
        let (address, server) = listen(1, |mut stream| {
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
            let _ = stream.shutdown(std::net::Shutdown::Write);
            let _ = stream.read(&mut request);
        });
        let outcome = probe(&ProbeTarget::new(&address), NOW);
        assert_eq!(kinds(&outcome), vec![FindingKind::Unreachable]);
        assert_eq!(
            outcome.error.as_deref(),
            Some("TLS handshake failed: the peer does not speak TLS (it answered `HTTP/1.1 200 OK`, which is an HTTP server)")
        );
        server.join().expect("server thread");
    }

    #[test]
    fn silent_server_times_out() {
        let (address, server) = listen(1, |mut stream| {
            // Never answers; waits for the client to give up (or 5 s).
            let mut buf = [0u8; 4096];
            while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
        });
        let target = ProbeTarget {
            timeout: Duration::from_secs(1),
            ..ProbeTarget::new(&address)
        };
        let started = Instant::now();
        let outcome = probe(&target, NOW);
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(900), "{took:?}");
        assert!(took < Duration::from_secs(4), "{took:?}");
        assert_eq!(kinds(&outcome), vec![FindingKind::Unreachable]);
        assert_eq!(
            outcome.error,
            Some(format!(
                "timed out after 1s waiting for the TLS handshake with {address}"
            ))
        );
        server.join().expect("server thread");
    }

    #[test]
    fn bad_addresses_are_unreachable_without_network() {
        for (address, why) in [
            ("gw.example", "the port is missing"),
            ("gw.example:https", "the port must be a number"),
            ("gw.example:0", "the port must be a number"),
            (":443", "the host is empty"),
            ("2001:db8::1:443", "brackets"),
        ] {
            let outcome = probe(&ProbeTarget::new(address), NOW);
            assert_eq!(kinds(&outcome), vec![FindingKind::Unreachable], "{address}");
            let error = outcome.error.expect("error");
            assert!(error.contains(why), "{address}: {error}");
        }
        assert_eq!(
            split_address("[2001:db8::1]:8443"),
            Ok(("2001:db8::1".to_owned(), 8443))
        );
        assert_eq!(
            split_address("gw.example:443"),
            Ok(("gw.example".to_owned(), 443))
        );
    }

    #[test]
    fn record_marks_a_replaced_certificate_gone_from_the_endpoint() {
        let pki = pki();
        let renewed = leaf(
            &["gw.example"],
            Some(&pki.intermediate),
            (NOT_BEFORE, NOT_AFTER),
        );
        let int_facts =
            facts_from_der(&pki.intermediate.x509.to_der().expect("der")).expect("facts");
        let target = ProbeTarget::new("gw.example:443");
        let outcome = |leaf: &Leaf| ProbeOutcome {
            address: target.address.clone(),
            chain: vec![leaf.facts(), int_facts.clone()],
            findings: vec![],
            error: None,
            duration: Duration::from_millis(3),
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("store")).expect("store");
        record(&store, &target, &outcome(&pki.leaf), NOW).expect("record");
        let state = record(&store, &target, &outcome(&renewed), NOW + 60).expect("record");
        assert_eq!(state.chain[0], renewed.facts().fingerprint);

        let old = store
            .get(&pki.leaf.facts().fingerprint)
            .expect("get")
            .expect("stored");
        assert_eq!(old.sources[0].gone_since, Some(NOW + 60));
        assert_eq!(old.role, Role::Other);
        let new = store
            .get(&renewed.facts().fingerprint)
            .expect("get")
            .expect("stored");
        assert_eq!(new.sources[0].gone_since, None);
        assert_eq!(new.sources[0].first_seen, NOW + 60);
        let int = store
            .get(&int_facts.fingerprint)
            .expect("get")
            .expect("stored");
        assert_eq!(int.sources.len(), 1);
        assert_eq!(int.sources[0].gone_since, None);
        assert_eq!(int.sources[0].last_seen, NOW + 60);
    }

    fn facts_with(cn: Option<&str>, dns: &[&str], ip: &[&str]) -> CertificateFacts {
        CertificateFacts {
            fingerprint: Sha256([0; 32]),
            subject: cn.map(|c| format!("CN={c}")).unwrap_or_default(),
            subject_cn: cn.map(str::to_owned),
            issuer: "CN=Test CA".into(),
            serial: "1".into(),
            not_before: NOT_BEFORE,
            not_after: NOT_AFTER,
            sans: SubjectAltNames {
                dns: dns.iter().map(|s| (*s).to_owned()).collect(),
                ip: ip.iter().map(|s| (*s).to_owned()).collect(),
                ..SubjectAltNames::default()
            },
            key: KeyAlgorithm::Ed25519,
            signature_algorithm: "ED25519".into(),
            is_ca: false,
            subject_key_id: None,
            authority_key_id: None,
            spki_sha256: Sha256([0; 32]),
            crl_distribution_points: vec![],
            ocsp_urls: vec![],
        }
    }

    #[test]
    fn host_names_match_sans_wildcards_ips_and_cn_fallback() {
        let wild = facts_with(
            Some("gw.example.com"),
            &["*.example.com", "Exact.Example.org"],
            &["192.0.2.1", "2001:db8::1"],
        );
        assert!(leaf_covers(&wild, "gw.example.com"));
        assert!(leaf_covers(&wild, "GW.Example.COM."));
        assert!(leaf_covers(&wild, "exact.example.org"));
        assert!(!leaf_covers(&wild, "example.com"));
        assert!(!leaf_covers(&wild, "a.b.example.com"));
        assert!(!leaf_covers(&wild, "other.example.org"));
        assert!(leaf_covers(&wild, "192.0.2.1"));
        assert!(leaf_covers(&wild, "2001:db8:0::1"));
        assert!(!leaf_covers(&wild, "192.0.2.2"));
        // With SANs, the CN is not considered.
        let cn_only_in_cn = facts_with(Some("cn.example.com"), &["san.example.com"], &[]);
        assert!(!leaf_covers(&cn_only_in_cn, "cn.example.com"));
        // Without SANs, it is.
        let legacy = facts_with(Some("legacy.example.com"), &[], &[]);
        assert!(leaf_covers(&legacy, "legacy.example.com"));
        assert!(!leaf_covers(&legacy, "other.example.com"));
        assert!(!leaf_covers(&facts_with(None, &[], &[]), "x.example"));
        // `*.com` and partial wildcards match nothing.
        assert!(!dns_matches("*.com", "example.com"));
        assert!(!dns_matches("f*.example.com", "foo.example.com"));
        assert!(!dns_matches("*.*.example.com", "a.b.example.com"));
    }

    #[test]
    fn durations_and_foreign_bytes_are_described_for_people() {
        assert_eq!(fmt_duration(Duration::from_secs(10)), "10s");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(fmt_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(
            describe_bytes(b"SSH-2.0-OpenSSH_9.6\r\n"),
            "`SSH-2.0-OpenSSH_9.6`, which is an SSH server"
        );
        assert_eq!(
            describe_bytes(&[0, 1, 2, 0xff, 4, 5, 6, 7, 8]),
            "with the bytes 00 01 02 ff 04 05 06 07"
        );
    }
}
