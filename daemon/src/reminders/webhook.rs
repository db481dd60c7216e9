//! Webhooks: reminders as an HTTP POST, next to e-mail. A policy names a webhook among its
//! recipients (`recipients = ["pki@contoso.example", "webhook:ops-teams"]`); certd's
//! configuration says where it goes (`[[webhook]] name, url, format, ca_file, timeout,
//! header_file`). A webhook recipient gets the same digests as an e-mail recipient (once
//! per threshold, snoozes, retries with backoff: see [`crate::reminders`]); only the delivery
//! differs ([`WebhookSender`]).
//!
//! Formats: `json` (the digest as JSON, for any receiver), `teams` (a Microsoft Teams
//! MessageCard for an incoming webhook) and `slack` (a Slack incoming-webhook message).
//! Every POST carries an `Idempotency-Key` derived from the digest's content (the same
//! reminders give the same key), so a receiver can drop the copy a retry sends after a
//! connection broke before the answer.
//!
//! Bounded like the rest of certd's network I/O: one deadline for connect, TLS, request and
//! answer; the answer's head and body read at most [`MAX_ANSWER`] bytes; HTTPS with the
//! system's roots plus `ca_file`, TLS 1.2 or later, the host name checked.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::{Duration, Instant};

use certctl_store::{rfc3339, UnixTime};
use openssl::ssl::{SslConnector, SslMethod, SslVersion};
use openssl::x509::X509;
use serde_json::json;

use super::delivery::SendFailure;
use super::digest::Digest;
use crate::config::sections::{webhook_name, Format, WebhookConfig};

/// The most of an answer read (status line, headers and body).
pub(crate) const MAX_ANSWER: usize = 64 * 1024;

/// Delivers digests to the configured webhooks.
#[derive(Debug, Clone, Default)]
pub(crate) struct WebhookSender {
    hooks: BTreeMap<String, WebhookConfig>,
}

impl WebhookSender {
    pub(crate) fn new(hooks: &[WebhookConfig]) -> WebhookSender {
        WebhookSender {
            hooks: hooks.iter().map(|h| (h.name.clone(), h.clone())).collect(),
        }
    }

    /// POSTs `digest` to the webhook its recipient names. `Ok` on a 2xx answer.
    pub(crate) fn send(
        &self,
        digest: &Digest,
        key: &str,
        now: UnixTime,
    ) -> Result<(), SendFailure> {
        let name = webhook_name(&digest.recipient).unwrap_or(&digest.recipient);
        let Some(hook) = self.hooks.get(name) else {
            return Err(SendFailure::not_sent(format!(
                "{}: no [[webhook]] named `{name}` in certd's configuration",
                digest.recipient
            )));
        };
        let body = payload(hook.format, digest, key, now).to_string();
        post(hook, &body, key).map_err(|failure| SendFailure {
            error: format!(
                "webhook `{name}` ({}): {}",
                redacted(&hook.url),
                failure.error
            ),
            maybe_delivered: failure.maybe_delivered,
        })
    }
}

/// The URL without its query (incoming-webhook URLs carry their secret there).
fn redacted(url: &url::Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.set_fragment(None);
    let _ = shown.set_password(None);
    shown.to_string()
}

/// The body of a POST in `format`.
pub(crate) fn payload(
    format: Format,
    digest: &Digest,
    key: &str,
    now: UnixTime,
) -> serde_json::Value {
    let lines: Vec<String> = digest
        .entries
        .iter()
        .map(|e| {
            let what = e
                .role
                .map(|r| r.as_str().to_string())
                .or_else(|| e.artifact_kind.clone())
                .unwrap_or_default();
            format!(
                "{} ({what}): {}",
                e.name,
                super::digest::when(e.not_after, now)
            )
        })
        .collect();
    let title = format!(
        "certctl: {} certificate{} need{} attention",
        digest.entries.len(),
        if digest.entries.len() == 1 { "" } else { "s" },
        if digest.entries.len() == 1 { "s" } else { "" }
    );
    match format {
        Format::Json => json!({
            "source": "certctl",
            "idempotency_key": key,
            "recipient": digest.recipient,
            "generated_at": rfc3339(now),
            "title": title,
            "entries": digest.entries,
        }),
        Format::Teams => json!({
            "@type": "MessageCard",
            "@context": "https://schema.org/extensions",
            "summary": title,
            "title": title,
            "text": lines.iter().map(|l| format!("- {l}")).collect::<Vec<_>>().join("\n"),
        }),
        Format::Slack => json!({
            "text": format!("*{title}*\n{}", lines.iter().map(|l| format!("• {l}")).collect::<Vec<_>>().join("\n")),
        }),
    }
}

/// Why a POST failed, and whether the receiver may have got it.
struct PostFailure {
    error: String,
    maybe_delivered: bool,
}

fn before_sending(error: impl Into<String>) -> PostFailure {
    PostFailure {
        error: error.into(),
        maybe_delivered: false,
    }
}

/// One POST under one deadline; `Ok` on a 2xx status.
fn post(hook: &WebhookConfig, body: &str, key: &str) -> Result<(), PostFailure> {
    let deadline = Instant::now() + hook.timeout;
    let url = &hook.url;
    let host = url
        .host_str()
        .ok_or_else(|| before_sending("the URL has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = url
        .port_or_known_default()
        .ok_or_else(|| before_sending("the URL has no port"))?;
    let extra_header = match &hook.header_file {
        Some(path) => Some(read_header(path).map_err(before_sending)?),
        None => None,
    };
    let address = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| before_sending(format!("cannot resolve {host}: {e}")))?
        .next()
        .ok_or_else(|| before_sending(format!("{host} has no address")))?;
    let left = |what: &str| -> Result<Duration, PostFailure> {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| before_sending(format!("timed out {what}")))
    };
    let tcp = TcpStream::connect_timeout(&address, left("connecting")?)
        .map_err(|e| before_sending(format!("cannot connect to {address}: {e}")))?;
    let set_timeouts = |t: &TcpStream| -> Result<(), PostFailure> {
        let d = left("")?;
        t.set_read_timeout(Some(d))
            .and_then(|()| t.set_write_timeout(Some(d)))
            .map_err(|e| before_sending(e.to_string()))
    };
    set_timeouts(&tcp)?;
    let mut path = url.path().to_string();
    if let Some(q) = url.query() {
        path.push('?');
        path.push_str(q);
    }
    let authority = match url.port() {
        Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_string(),
    };
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: certctl/{}\r\n\
         Content-Type: application/json\r\nIdempotency-Key: {key}\r\nContent-Length: {}\r\n\
         Connection: close\r\n",
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    if let Some(h) = &extra_header {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    request.push_str(body);
    match url.scheme() {
        "https" => {
            let connector = connector(hook.ca_file.as_deref()).map_err(before_sending)?;
            let mut tls = connector
                .connect(&host, tcp)
                .map_err(|e| before_sending(format!("TLS with {host}: {e}")))?;
            exchange(&mut tls, request.as_bytes())
        }
        _ => {
            let mut tcp = tcp;
            exchange(&mut tcp, request.as_bytes())
        }
    }
}

/// Writes the request and reads the answer's status.
fn exchange<S: Read + Write>(stream: &mut S, request: &[u8]) -> Result<(), PostFailure> {
    stream
        .write_all(request)
        .and_then(|()| stream.flush())
        .map_err(|e| PostFailure {
            error: format!("sending the request: {e}"),
            // Part of it may have arrived; a receiver with the key drops a copy.
            maybe_delivered: true,
        })?;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    while answer.len() < MAX_ANSWER {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(e) if answer.is_empty() => {
                return Err(PostFailure {
                    error: format!("no answer: {e}"),
                    maybe_delivered: true,
                })
            }
            Err(_) => break,
        }
        if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.starts_with(b"HTTP/") {
            // The head is there; the body matters only for the error message.
            if answer.len() > 512 {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&answer);
    let status_line = text.lines().next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| PostFailure {
            error: format!(
                "not an HTTP answer: {:?}",
                crate::inventory::view::printable(
                    &status_line.chars().take(80).collect::<String>()
                )
            ),
            maybe_delivered: true,
        })?;
    if (200..300).contains(&status) {
        return Ok(());
    }
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let excerpt: String = body.chars().take(200).collect();
    Err(PostFailure {
        error: format!(
            "the receiver answered {} {}",
            status_line.split(' ').skip(1).collect::<Vec<_>>().join(" "),
            crate::inventory::view::printable(excerpt.trim())
        ),
        maybe_delivered: false,
    })
}

/// The TLS client: TLS 1.2 or later, the system's roots plus `ca_file`.
pub(crate) fn connector(ca_file: Option<&Path>) -> Result<SslConnector, String> {
    let mut builder = SslConnector::builder(SslMethod::tls_client()).map_err(|e| e.to_string())?;
    builder
        .set_min_proto_version(Some(SslVersion::TLS1_2))
        .map_err(|e| e.to_string())?;
    if let Some(path) = ca_file {
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(1 << 20).read_to_end(&mut bytes))
            .map_err(|e| format!("cannot read ca_file {}: {e}", path.display()))?;
        let roots =
            X509::stack_from_pem(&bytes).map_err(|e| format!("ca_file {}: {e}", path.display()))?;
        if roots.is_empty() {
            return Err(format!(
                "ca_file {} holds no PEM certificate",
                path.display()
            ));
        }
        for root in roots {
            builder
                .cert_store_mut()
                .add_cert(root)
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(builder.build())
}

/// The header line of `header_file`: `Name: value`, printable ASCII, one line.
fn read_header(path: &Path) -> Result<String, String> {
    let secret = crate::files::read::read_private_file(path)
        .map_err(|e| format!("header_file {}: {e}", path.display()))?;
    let text = String::from_utf8(secret)
        .map_err(|_| format!("header_file {}: not UTF-8", path.display()))?;
    let line = text.trim_end_matches(['\r', '\n']);
    let valid = line.split_once(':').is_some_and(|(name, _)| {
        !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    }) && line.bytes().all(|b| (0x20..0x7f).contains(&b));
    if !valid {
        return Err(format!(
            "header_file {}: expected one `Name: value` line of printable ASCII",
            path.display()
        ));
    }
    Ok(line.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::sections::valid_name;

    #[test]
    fn the_url_shown_in_errors_has_no_secret() {
        let url = url::Url::parse("https://user:pw@hooks.example/T0/B1?token=abc#frag").unwrap();
        let shown = redacted(&url);
        assert!(!shown.contains("abc") && !shown.contains("pw"), "{shown}");
        assert!(shown.contains("hooks.example/T0/B1"), "{shown}");
    }

    #[test]
    fn names_and_recipients() {
        assert_eq!(webhook_name("webhook:ops-teams"), Some("ops-teams"));
        assert_eq!(webhook_name("ops@contoso.example"), None);
        assert!(valid_name("ops.teams_1-a"));
        assert!(!valid_name("ops teams") && !valid_name("") && !valid_name("a/b"));
        assert_eq!(Format::parse("slack"), Some(Format::Slack));
        assert_eq!(Format::parse("discord"), None);
    }
}
