//! certd's Prometheus endpoint (`[metrics] listen`): a deliberately tiny HTTP/1.1
//! responder on tokio, with one route.
//!
//! - `GET /metrics` (also `HEAD`): the exposition `certctl metrics` prints —
//!   [`crate::reports::metrics_text`] (which ends with [`smtp_counter_series`], the SMTP
//!   delivery counters) — followed by [`status_series`] (certd's jobs and the SMTP state).
//!   Agents are aggregated unless `[metrics] per_agent = true`.
//! - any other path: 404; another method on `/metrics`: 405; a malformed request: 400.
//!
//! Every connection is closed after one answer. A request (line and headers) may be at
//! most [`MAX_REQUEST`] bytes and must arrive within [`READ_TIMEOUT`]; at most
//! [`MAX_CONNECTIONS`] are served at once (more wait in the listen backlog).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::api::StatusReport;

/// The longest request accepted (request line and headers).
pub const MAX_REQUEST: usize = 8 * 1024;
/// How long a client may take to send its request.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long writing the answer may take.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at the same time.
pub const MAX_CONNECTIONS: usize = 8;

/// The content type of the text exposition format 0.0.4.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

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
            if let Some(outcome) = &j.last_outcome {
                let _ = writeln!(
                    out,
                    "certctl_job_last_run_success{{job=\"{}\"}} {}",
                    j.job,
                    u8::from(job_succeeded(outcome))
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

/// The SMTP delivery counters kept in the store (so they survive restarts and are the same
/// with and without certd): `certctl_smtp_deliveries_total` (digests the server accepted)
/// and `certctl_smtp_delivery_failures_total` (failed attempts, one per digest and
/// attempt). [`crate::reports::metrics_text`] appends them, so `certctl metrics` and
/// certd's `/metrics` both have them.
pub fn smtp_counter_series(
    store: &certctl_store::Store,
) -> Result<String, certctl_store::StoreError> {
    Ok(smtp_counters_text(
        store.smtp_deliveries_total()?,
        store.smtp_delivery_failures_total()?,
    ))
}

fn smtp_counters_text(delivered: u64, failed: u64) -> String {
    let mut out = String::new();
    out.push_str(
        "# HELP certctl_smtp_deliveries_total Reminder digests the SMTP server accepted.\n",
    );
    out.push_str("# TYPE certctl_smtp_deliveries_total counter\n");
    out.push_str(&format!("certctl_smtp_deliveries_total {delivered}\n"));
    out.push_str("# HELP certctl_smtp_delivery_failures_total Failed attempts to deliver a reminder digest (server unreachable, login or message refused, connection broken), one per digest and attempt.\n");
    out.push_str("# TYPE certctl_smtp_delivery_failures_total counter\n");
    out.push_str(&format!("certctl_smtp_delivery_failures_total {failed}\n"));
    out
}

/// A job outcome counts as a success when it is `ok` or starts with `ok` (`ok, 3 new
/// certificates`, `ok with 2 files failing, ...`).
fn job_succeeded(outcome: &str) -> bool {
    outcome == "ok" || outcome.starts_with("ok,") || outcome.starts_with("ok ")
}

/// Serves `/metrics` on `listener` until the task is aborted. `render` makes the body
/// (it runs on a blocking thread); an `Err` becomes a 500 with the message logged.
pub async fn serve<R, F>(listener: TcpListener, render: R)
where
    R: Fn() -> F + Send + Sync + 'static,
    F: Future<Output = Result<String, String>> + Send + 'static,
{
    let render = Arc::new(render);
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "metrics listener: accept failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let render = render.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(stream, &*render).await {
                tracing::debug!(%peer, error = %e, "metrics connection ended early");
            }
            drop(permit);
        });
    }
}

/// What the request asked for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics { head: bool },
    NotFound,
    MethodNotAllowed,
    BadRequest,
    TooLarge,
}

/// Reads one request (bounded in size and time) and answers it.
async fn connection<R, F>(mut stream: TcpStream, render: &R) -> std::io::Result<()>
where
    R: Fn() -> F,
    F: Future<Output = Result<String, String>>,
{
    let route = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(Some(head))) => route(&head),
        Ok(Ok(None)) => Route::TooLarge,
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no complete request in time",
            ))
        }
    };
    let (status, body, head_only) = match route {
        Route::Metrics { head } => match render().await {
            Ok(text) => ("200 OK", text, head),
            Err(e) => {
                tracing::error!(error = %e, "cannot render metrics");
                (
                    "500 Internal Server Error",
                    "cannot render the metrics; see certd's log\n".to_string(),
                    head,
                )
            }
        },
        Route::NotFound => (
            "404 Not Found",
            "not found: certd serves GET /metrics only\n".into(),
            false,
        ),
        Route::MethodNotAllowed => ("405 Method Not Allowed", "use GET\n".into(), false),
        Route::BadRequest => ("400 Bad Request", "bad request\n".into(), false),
        Route::TooLarge => (
            "431 Request Header Fields Too Large",
            "request too large\n".into(),
            false,
        ),
    };
    let allow = if status.starts_with("405") {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        if status.starts_with("200") {
            CONTENT_TYPE
        } else {
            "text/plain; charset=utf-8"
        },
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

fn route(head: &[u8]) -> Route {
    if head.len() > MAX_REQUEST {
        return Route::TooLarge;
    }
    let Ok(text) = std::str::from_utf8(head) else {
        return Route::BadRequest;
    };
    let line = text.lines().next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() || !target.starts_with('/') {
        return Route::BadRequest;
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    if path != "/metrics" {
        return Route::NotFound;
    }
    match method {
        "GET" => Route::Metrics { head: false },
        "HEAD" => Route::Metrics { head: true },
        _ => Route::MethodNotAllowed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Metrics { head: false }
        );
        assert_eq!(
            route(b"GET /metrics?name[]=x HTTP/1.0\r\n\r\n"),
            Route::Metrics { head: false }
        );
        assert_eq!(
            route(b"HEAD /metrics HTTP/1.1\r\n\r\n"),
            Route::Metrics { head: true }
        );
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"GET /metrics/x HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(
            route(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Route::MethodNotAllowed
        );
        assert_eq!(route(b"GET /metrics\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b"GET metrics HTTP/1.1\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b"\xff\xfe\r\n\r\n"), Route::BadRequest);
        assert_eq!(find_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nbody"), Some(24));
        assert_eq!(find_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
    }

    #[test]
    fn smtp_counters_are_prometheus_counters_from_the_store() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = certctl_store::Store::open(dir.path()).expect("open");
        let text = smtp_counter_series(&store).expect("series");
        assert!(
            text.contains("\ncertctl_smtp_delivery_failures_total 0\n"),
            "{text}"
        );
        assert!(
            text.contains("\ncertctl_smtp_deliveries_total 0\n"),
            "{text}"
        );
        let failure = |recipient: &str, at| certctl_store::DeliveryState {
            recipient: recipient.into(),
            attempts: 1,
            first_failure: at,
            last_attempt: at,
            next_attempt: at + 60,
            last_error: "SMTP server 127.0.0.1:25 (none): connection refused".into(),
            pending: 3,
        };
        store
            .record_delivery_failure(&failure("a@example.org", 10))
            .expect("failure");
        store
            .record_delivery_failure(&failure("b@example.org", 10))
            .expect("failure");
        store
            .record_delivery("a@example.org", &[], 20)
            .expect("delivery");
        // A success clears the failing state but never lowers the failure counter.
        let text = smtp_counter_series(&store).expect("series");
        assert!(
            text.contains("# TYPE certctl_smtp_delivery_failures_total counter\ncertctl_smtp_delivery_failures_total 2\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "# TYPE certctl_smtp_deliveries_total counter\ncertctl_smtp_deliveries_total 1\n"
            ),
            "{text}"
        );
        assert_eq!(store.smtp_state().expect("state").last_error, None);
    }

    #[test]
    fn job_outcomes() {
        for ok in [
            "ok",
            "ok, 3 new certificates",
            "ok with 2 files failing, 0 new",
        ] {
            assert!(job_succeeded(ok), "{ok}");
        }
        for bad in ["failed: disk", "okay?", ""] {
            assert!(!job_succeeded(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn serves_metrics_and_404_over_tcp() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let server = tokio::spawn(serve(listener, || async {
            Ok::<_, String>("m 1\n".to_string())
        }));
        let ask = |request: &'static [u8]| async move {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            s.write_all(request).await.expect("send");
            let mut answer = String::new();
            s.read_to_string(&mut answer).await.expect("read");
            answer
        };
        let ok = ask(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("version=0.0.4"), "{ok}");
        assert!(ok.ends_with("\r\n\r\nm 1\n"), "{ok}");
        let missing = ask(b"GET /other HTTP/1.1\r\n\r\n").await;
        assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");
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
