//! certd's Prometheus endpoint and dashboard (`[metrics] listen`): a deliberately tiny
//! HTTP/1.1 responder on tokio, with three routes ([`Page`]).
//!
//! - `GET /metrics` (also `HEAD`): the exposition `certctl metrics` prints —
//!   [`crate::fleet::reports::metrics_text`] (which ends with [`crate::fleet::reports::smtp_counter_series`], the SMTP
//!   delivery counters) — followed by [`status_series`] (certd's jobs and the SMTP state).
//!   Agents are aggregated unless `[metrics] per_agent = true`.
//! - `GET /`: the read-only dashboard ([`crate::fleet::dashboard`]); `GET /certificate/FP`: one
//!   certificate's page (404 when no certificate has that SHA-256 fingerprint). HTML with a
//!   Content-Security-Policy that allows no script and nothing from elsewhere.
//! - any other path: 404; another method than GET/HEAD: 405; a malformed request (an
//!   HTTP/1.1 request without `Host`, two `Host` headers): 400.
//! - a request for another host: 421 Misdirected Request. [`AllowedHosts`] answers only
//!   the listen address itself (`127.0.0.1:9477`), `localhost:PORT` when listening on
//!   loopback, any IP literal with the port when listening on `0.0.0.0`/`[::]`, and the
//!   names of `[metrics] allowed_hosts`. A web page whose name an attacker re-binds to
//!   127.0.0.1 (DNS rebinding) sends its own name and is refused.
//!
//! Every connection is closed after one answer. Local users may open connections freely,
//! so none of them may hold the server: a request (line and headers) may be at most
//! [`MAX_REQUEST`] bytes and must be complete within [`READ_TIMEOUT`] of the connection;
//! the accept loop never waits for a client (at most [`MAX_CONNECTIONS`] are open, and when
//! a new one arrives with all of them taken, the oldest one still sending its request is
//! closed); at most [`MAX_RENDERS`] answers are rendered at once.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::task::{AbortHandle, JoinHandle};

use crate::api::StatusReport;

/// The longest request accepted (request line and headers).
pub(crate) const MAX_REQUEST: usize = 8 * 1024;
/// How long a client may take to send its whole request, counted from the connection.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long writing the answer may take.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections open at the same time (well below the usual 1024 file descriptors). When
/// a new one arrives with all taken, the oldest one still sending its request is closed.
pub(crate) const MAX_CONNECTIONS: usize = 256;
/// Answers rendered at the same time (rendering reads the whole inventory).
pub(crate) const MAX_RENDERS: usize = 2;

/// The header of the metrics exposition.
const METRICS_HEADERS: &str = "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n";

/// The headers of an HTML page: no script, no frame, nothing loaded from elsewhere (the
/// pages inline their style and SVG), no content sniffing.
const HTML_HEADERS: &str = "Content-Type: text/html; charset=utf-8\r\n\
Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; img-src data:; \
frame-ancestors 'none'; form-action 'none'; base-uri 'none'\r\n\
X-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n";

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Page {
    /// `/metrics`.
    Metrics,
    /// `/`: the dashboard's overview.
    Dashboard,
    /// `/certificate/FP`: FP as requested (the renderer checks it).
    Certificate(String),
}

/// A rendered answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rendered {
    /// The metrics exposition.
    Metrics(String),
    /// An HTML page.
    Html(String),
    /// Nothing there (an unknown certificate): 404.
    NotFound,
}

/// The series a `certctl status` report adds to the inventory's: when each certd job last
/// ran and whether it succeeded (only with a daemon), and the SMTP state. `certctl metrics`
/// and certd's `/metrics` both append exactly this.
pub fn status_series(status: &StatusReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if let Some(d) = &status.daemon {
        out.push_str("# HELP certctl_job_last_run_timestamp_seconds When a certd job last ran.\n");
        out.push_str("# TYPE certctl_job_last_run_timestamp_seconds gauge\n");
        for j in &d.schedules {
            if let Some(t) = j.last_run {
                let _ = writeln!(
                    out,
                    "certctl_job_last_run_timestamp_seconds{{job=\"{}\"}} {t}",
                    j.job
                );
            }
        }
        out.push_str("# HELP certctl_job_last_run_success Whether a certd job's last run succeeded (1) or not (0).\n");
        out.push_str("# TYPE certctl_job_last_run_success gauge\n");
        for j in &d.schedules {
            if let Some(succeeded) = j.last_succeeded {
                let _ = writeln!(
                    out,
                    "certctl_job_last_run_success{{job=\"{}\"}} {}",
                    j.job,
                    u8::from(succeeded)
                );
            }
        }
    }
    out.push_str("# HELP certctl_smtp_failing Whether the last attempt to deliver a reminder failed (1) and no delivery succeeded since (0 otherwise).\n");
    out.push_str("# TYPE certctl_smtp_failing gauge\n");
    let _ = writeln!(
        out,
        "certctl_smtp_failing {}",
        u8::from(status.smtp_last_error.is_some())
    );
    if let Some(at) = status.smtp_last_error_at {
        out.push_str("# HELP certctl_smtp_last_failure_timestamp_seconds When talking to the SMTP server last failed.\n");
        out.push_str("# TYPE certctl_smtp_last_failure_timestamp_seconds gauge\n");
        let _ = writeln!(out, "certctl_smtp_last_failure_timestamp_seconds {at}");
    }
    out.push_str(
        "# HELP certctl_reminders_pending Reminders whose digest could not be delivered yet.\n",
    );
    out.push_str("# TYPE certctl_reminders_pending gauge\n");
    let _ = writeln!(
        out,
        "certctl_reminders_pending {}",
        status.reminders_pending
    );
    out
}

/// The `Host` header values certd answers (see the module documentation): anything else
/// gets 421 Misdirected Request, so a web page on another name re-bound to certd's address
/// cannot read the metrics through a browser.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AllowedHosts {
    listen: SocketAddr,
    /// `[metrics] allowed_hosts`, lowercase, matched with any port.
    names: Vec<String>,
}

impl AllowedHosts {
    /// The hosts answered when listening on `listen`, plus `names` (host names or IP
    /// addresses without port, e.g. a reverse proxy's name).
    pub(crate) fn new(listen: SocketAddr, names: &[String]) -> AllowedHosts {
        AllowedHosts {
            listen,
            names: names.iter().map(|n| n.to_ascii_lowercase()).collect(),
        }
    }

    /// Whether a request with `Host: host` is answered.
    pub(crate) fn allows(&self, host: &str) -> bool {
        let Some((name, port)) = split_host_port(host.trim()) else {
            return false;
        };
        let name = name.to_ascii_lowercase();
        if self.names.contains(&name) {
            return true;
        }
        if port.unwrap_or(80) != self.listen.port() {
            return false;
        }
        let bound = self.listen.ip().to_canonical();
        match name.parse::<IpAddr>() {
            Ok(ip) => ip.to_canonical() == bound || bound.is_unspecified(),
            Err(_) => name == "localhost" && bound.is_loopback(),
        }
    }
}

/// `name:port`, `name`, `[v6]:port`, `[v6]` → the name (without brackets) and the port;
/// `None` when malformed (an empty name, a bad port, a bare IPv6 address).
fn split_host_port(host: &str) -> Option<(&str, Option<u16>)> {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let (name, after) = rest.split_once(']')?;
        match after {
            "" => (name, None),
            p => (name, Some(p.strip_prefix(':')?)),
        }
    } else {
        match host.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'))
    {
        return None;
    }
    let port = match port {
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => Some(p.parse().ok()?),
        Some(_) => return None,
        None => None,
    };
    Some((name, port))
}

/// Serves the [`Page`]s on `listener` until the task is aborted, to requests for `hosts`.
/// `render` makes the body (it runs on a blocking thread); an `Err` becomes a 500 with the
/// message logged.
pub(crate) async fn serve<R, F>(listener: TcpListener, hosts: AllowedHosts, render: R)
where
    R: Fn(Page) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Rendered, String>> + Send + 'static,
{
    let render = Arc::new(render);
    let hosts = Arc::new(hosts);
    let renders = Arc::new(Semaphore::new(MAX_RENDERS));
    let slots = Arc::new(Slots::default());
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "metrics listener: accept failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        slots.make_room().await;
        let reading = Arc::new(AtomicBool::new(true));
        let (render, hosts, renders, task_slots, task_reading) = (
            render.clone(),
            hosts.clone(),
            renders.clone(),
            slots.clone(),
            reading.clone(),
        );
        slots.open(reading, move |id| {
            tokio::spawn(async move {
                let answered = connection(stream, &hosts, &task_reading, &renders, &*render).await;
                if let Err(e) = answered {
                    tracing::debug!(%peer, error = %e, "metrics connection ended early");
                }
                task_slots.close(id);
            })
        });
    }
}

/// The open connections, oldest first, and whether each is still sending its request.
#[derive(Default)]
struct Slots {
    table: Mutex<SlotTable>,
    freed: Notify,
}

#[derive(Default)]
struct SlotTable {
    next: u64,
    open: BTreeMap<u64, Slot>,
}

struct Slot {
    reading: Arc<AtomicBool>,
    task: AbortHandle,
}

impl Slots {
    fn lock(&self) -> MutexGuard<'_, SlotTable> {
        match self.table.lock() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Returns when one more connection may be opened: at once while fewer than
    /// [`MAX_CONNECTIONS`] are open, else after closing the oldest one still sending its
    /// request, else (all are being answered) when one of them ends.
    async fn make_room(&self) {
        loop {
            let freed = self.freed.notified();
            {
                let mut table = self.lock();
                if table.open.len() < MAX_CONNECTIONS {
                    return;
                }
                let oldest_reading = table
                    .open
                    .iter()
                    .find(|(_, slot)| slot.reading.load(Ordering::Relaxed))
                    .map(|(id, _)| *id);
                if let Some(slot) = oldest_reading.and_then(|id| table.open.remove(&id)) {
                    slot.task.abort();
                    tracing::debug!(
                        "metrics: {MAX_CONNECTIONS} connections open; closed the oldest one still sending its request"
                    );
                    return;
                }
            }
            freed.await;
        }
    }

    /// Records a connection; `spawn` starts its task given its id.
    fn open(&self, reading: Arc<AtomicBool>, spawn: impl FnOnce(u64) -> JoinHandle<()>) {
        // The table stays locked until the slot is recorded, so a task that ends at once
        // waits in `close` and its slot never outlives it.
        let mut table = self.lock();
        let id = table.next;
        table.next += 1;
        let task = spawn(id).abort_handle();
        table.open.insert(id, Slot { reading, task });
    }

    fn close(&self, id: u64) {
        self.lock().open.remove(&id);
        self.freed.notify_one();
    }
}

/// What the request asked for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Page {
        page: Page,
        head: bool,
    },
    NotFound,
    MethodNotAllowed,
    BadRequest,
    TooLarge,
    /// A `Host` certd does not answer for.
    Misdirected,
}

/// Reads one request (bounded in size and time) and answers it. `reading` is cleared once
/// the request is complete.
async fn connection<R, F>(
    mut stream: TcpStream,
    hosts: &AllowedHosts,
    reading: &AtomicBool,
    renders: &Semaphore,
    render: &R,
) -> std::io::Result<()>
where
    R: Fn(Page) -> F,
    F: Future<Output = Result<Rendered, String>>,
{
    let head = tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await;
    reading.store(false, Ordering::Relaxed);
    let route = match head {
        Ok(Ok(Some(head))) => route(&head, hosts),
        Ok(Ok(None)) => Route::TooLarge,
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no complete request in time",
            ))
        }
    };
    let mut headers = "Content-Type: text/plain; charset=utf-8\r\n";
    let (status, body, head_only) = match route {
        Route::Page { page, head } => match render_one(renders, render, page).await {
            Ok(Rendered::Metrics(text)) => {
                headers = METRICS_HEADERS;
                ("200 OK", text, head)
            }
            Ok(Rendered::Html(html)) => {
                headers = HTML_HEADERS;
                ("200 OK", html, head)
            }
            Ok(Rendered::NotFound) => ("404 Not Found", "no such certificate\n".into(), head),
            Err(e) => {
                tracing::error!(error = %e, "cannot render the page");
                (
                    "500 Internal Server Error",
                    "cannot render the page; see certd's log\n".to_string(),
                    head,
                )
            }
        },
        Route::NotFound => (
            "404 Not Found",
            "not found: certd serves GET /metrics, / and /certificate/FINGERPRINT\n".into(),
            false,
        ),
        Route::MethodNotAllowed => ("405 Method Not Allowed", "use GET\n".into(), false),
        Route::BadRequest => ("400 Bad Request", "bad request\n".into(), false),
        Route::TooLarge => (
            "431 Request Header Fields Too Large",
            "request too large\n".into(),
            false,
        ),
        Route::Misdirected => (
            "421 Misdirected Request",
            "certd answers requests for its listen address only (and localhost when it \
             listens on loopback); add other names to [metrics] allowed_hosts\n"
                .into(),
            false,
        ),
    };
    let allow = if status.starts_with("405") {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        response.extend_from_slice(body.as_bytes());
    }
    let write = async {
        stream.write_all(&response).await?;
        stream.shutdown().await
    };
    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the client did not read the answer in time",
        )),
    }
}

/// Renders an answer once one of the [`MAX_RENDERS`] turns is free.
async fn render_one<R, F>(renders: &Semaphore, render: &R, page: Page) -> Result<Rendered, String>
where
    R: Fn(Page) -> F,
    F: Future<Output = Result<Rendered, String>>,
{
    let _turn = renders
        .acquire()
        .await
        .map_err(|_| "the metrics server is stopping".to_string())?;
    render(page).await
}

/// The request line and headers, up to the blank line; `None` when they exceed
/// [`MAX_REQUEST`]. A body (none is expected) is not read.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = find_end(&buf) {
            buf.truncate(end);
            return Ok(Some(buf));
        }
        if buf.len() > MAX_REQUEST {
            return Ok(None);
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the client closed the connection mid-request",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The end of the head: after `\r\n\r\n` (or a bare `\n\n`).
fn find_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn route(head: &[u8], hosts: &AllowedHosts) -> Route {
    if head.len() > MAX_REQUEST {
        return Route::TooLarge;
    }
    let Ok(text) = std::str::from_utf8(head) else {
        return Route::BadRequest;
    };
    let mut lines = text.lines();
    let line = lines.next().unwrap_or_default();
    let mut host = None;
    for header in lines.take_while(|l| !l.is_empty()) {
        let Some((name, value)) = header.split_once(':') else {
            return Route::BadRequest;
        };
        if name.eq_ignore_ascii_case("host") && host.replace(value).is_some() {
            return Route::BadRequest;
        }
    }
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() || !target.starts_with('/') {
        return Route::BadRequest;
    }
    match host {
        // HTTP/1.0 clients may leave it out (browsers always send it).
        None if version == "HTTP/1.0" => {}
        None => return Route::BadRequest,
        Some(host) if !hosts.allows(host) => return Route::Misdirected,
        Some(_) => {}
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    let page = match path {
        "/metrics" => Page::Metrics,
        "/" => Page::Dashboard,
        _ => match path.strip_prefix("/certificate/") {
            Some(fp) if !fp.is_empty() && !fp.contains('/') => Page::Certificate(fp.to_string()),
            _ => return Route::NotFound,
        },
    };
    match method {
        "GET" => Route::Page { page, head: false },
        "HEAD" => Route::Page { page, head: true },
        _ => Route::MethodNotAllowed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> AllowedHosts {
        AllowedHosts::new("127.0.0.1:9477".parse().expect("address"), &[])
    }

    #[test]
    fn routes() {
        let route = |head: &[u8]| route(head, &local());
        assert_eq!(
            route(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9477\r\n\r\n"),
            Route::Page {
                page: Page::Metrics,
                head: false
            }
        );
        assert_eq!(
            route(b"GET /metrics?name[]=x HTTP/1.0\r\n\r\n"),
            Route::Page {
                page: Page::Metrics,
                head: false
            }
        );
        assert_eq!(
            route(b"HEAD /metrics HTTP/1.1\r\nhost: localhost:9477\r\n\r\n"),
            Route::Page {
                page: Page::Metrics,
                head: true
            }
        );
        assert_eq!(
            route(b"GET / HTTP/1.1\r\nHost: 127.0.0.1:9477\r\n\r\n"),
            Route::Page {
                page: Page::Dashboard,
                head: false
            }
        );
        assert_eq!(
            route(b"GET /certificate/ab12 HTTP/1.0\r\n\r\n"),
            Route::Page {
                page: Page::Certificate("ab12".into()),
                head: false
            }
        );
        assert_eq!(
            route(b"GET /certificate/ HTTP/1.0\r\n\r\n"),
            Route::NotFound
        );
        assert_eq!(
            route(b"GET /certificate/a/b HTTP/1.0\r\n\r\n"),
            Route::NotFound
        );
        assert_eq!(route(b"GET /index.html HTTP/1.0\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"GET /metrics/x HTTP/1.0\r\n\r\n"), Route::NotFound);
        assert_eq!(
            route(b"POST /metrics HTTP/1.0\r\n\r\n"),
            Route::MethodNotAllowed
        );
        assert_eq!(route(b"GET /metrics\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b"GET metrics HTTP/1.1\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b"\xff\xfe\r\n\r\n"), Route::BadRequest);
        // Host: required in HTTP/1.1, once, and ours.
        assert_eq!(route(b"GET /metrics HTTP/1.1\r\n\r\n"), Route::BadRequest);
        assert_eq!(
            route(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9477\r\nHost: evil.example\r\n\r\n"),
            Route::BadRequest
        );
        assert_eq!(
            route(b"GET /metrics HTTP/1.1\r\nHost: evil.example:9477\r\n\r\n"),
            Route::Misdirected
        );
        assert_eq!(
            route(b"GET /elsewhere HTTP/1.0\r\nHost: evil.example\r\n\r\n"),
            Route::Misdirected
        );
        assert_eq!(find_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nbody"), Some(24));
        assert_eq!(find_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
    }

    #[test]
    fn allowed_hosts() {
        let loopback = local();
        for ok in [
            "127.0.0.1:9477",
            "localhost:9477",
            "LocalHost:9477",
            " 127.0.0.1:9477 ",
        ] {
            assert!(loopback.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:9477",
            "127.0.0.1",
            "127.0.0.1:80",
            "127.0.0.2:9477",
            "[::1]:9477",
            "localhost",
            "localhost.:9477",
            "localhost:9477:1",
            "127.0.0.1:+9477",
            "",
            ":9477",
            "::1:9477",
        ] {
            assert!(!loopback.allows(bad), "{bad}");
        }
        let v6 = AllowedHosts::new("[::1]:9477".parse().expect("address"), &[]);
        assert!(v6.allows("[::1]:9477"));
        assert!(v6.allows("localhost:9477"));
        assert!(!v6.allows("127.0.0.1:9477"));
        let any = AllowedHosts::new(
            "0.0.0.0:9477".parse().expect("address"),
            &["Metrics.Example.org".to_string()],
        );
        assert!(any.allows("192.0.2.7:9477"));
        assert!(!any.allows("192.0.2.7:9478"));
        assert!(!any.allows("localhost:9477"));
        assert!(!any.allows("evil.example:9477"));
        assert!(any.allows("metrics.example.org"));
        assert!(any.allows("metrics.example.ORG:443"));
        let http = AllowedHosts::new("127.0.0.1:80".parse().expect("address"), &[]);
        assert!(http.allows("127.0.0.1"));
        assert!(http.allows("localhost"));
    }

    #[tokio::test]
    async fn serves_metrics_and_404_over_tcp() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let hosts = AllowedHosts::new(addr, &[]);
        let server = tokio::spawn(serve(listener, hosts, |page| async move {
            Ok::<_, String>(match page {
                Page::Metrics => Rendered::Metrics("m 1\n".to_string()),
                Page::Dashboard => Rendered::Html("<p>hi</p>".to_string()),
                Page::Certificate(_) => Rendered::NotFound,
            })
        }));
        let ask = |request: &'static str| async move {
            let request = request.replace("HOST", &addr.to_string());
            let mut s = TcpStream::connect(addr).await.expect("connect");
            s.write_all(request.as_bytes()).await.expect("send");
            let mut answer = String::new();
            s.read_to_string(&mut answer).await.expect("read");
            answer
        };
        let ok = ask("GET /metrics HTTP/1.1\r\nHost: HOST\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("version=0.0.4"), "{ok}");
        assert!(ok.ends_with("\r\n\r\nm 1\n"), "{ok}");
        let missing = ask("GET /other HTTP/1.1\r\nHost: HOST\r\n\r\n").await;
        assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");
        let page = ask("GET / HTTP/1.1\r\nHost: HOST\r\n\r\n").await;
        assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
        assert!(
            page.contains("Content-Type: text/html; charset=utf-8\r\n"),
            "{page}"
        );
        assert!(
            page.contains("Content-Security-Policy: default-src 'none'"),
            "{page}"
        );
        assert!(page.ends_with("\r\n\r\n<p>hi</p>"), "{page}");
        let unknown = ask("GET /certificate/00 HTTP/1.1\r\nHost: HOST\r\n\r\n").await;
        assert!(unknown.starts_with("HTTP/1.1 404 "), "{unknown}");
        let rebound = ask("GET /metrics HTTP/1.1\r\nHost: evil.example\r\n\r\n").await;
        assert!(rebound.starts_with("HTTP/1.1 421 "), "{rebound}");
        assert!(!rebound.contains("m 1"), "{rebound}");
        let big = [b'a'; MAX_REQUEST + 10];
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET /metrics HTTP/1.1\r\nX: ")
            .await
            .expect("send");
        let _ = s.write_all(&big).await;
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer).await;
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
        server.abort();
    }
}
