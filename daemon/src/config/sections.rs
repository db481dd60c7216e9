//! The sections of certd's configuration that belong to a capability but are read here, so
//! that the capability imports its configuration rather than the configuration importing
//! the capability: `[[webhook]]`, `[[scep]]`, and `[crl]`'s pass deadline.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How a recipient names a webhook in a policy: `webhook:NAME`.
pub const RECIPIENT_PREFIX: &str = "webhook:";

/// The payload's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// `format = "json"` (the default): certctl's own object, `{"source":"certctl",
    /// "idempotency_key","recipient","generated_at","title","entries"}`.
    Json,
    /// `format = "teams"`: a Microsoft Teams `MessageCard` with the title and one line per entry.
    Teams,
    /// `format = "slack"`: a Slack message, `{"text"}` with the title and one line per entry.
    Slack,
}

impl Format {
    /// The `format` value as written in certd.toml (`json`, `teams`, `slack`, lowercase);
    /// `None` for anything else.
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "json" => Some(Format::Json),
            "teams" => Some(Format::Teams),
            "slack" => Some(Format::Slack),
            _ => None,
        }
    }
}

/// A webhook as `[[webhook]]` configures it (checked by [`crate::config`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// The webhook's `name`: what a policy recipient `webhook:NAME` refers to (letters, digits,
    /// `.`, `_`, `-`; unique).
    pub name: String,
    /// Where digests are POSTed (`url`, http or https).
    pub url: url::Url,
    /// The payload's shape (`format`, default [`Format::Json`]).
    pub format: Format,
    /// More CA certificates (PEM) trusted for an `https` receiver.
    pub ca_file: Option<std::path::PathBuf>,
    /// One deadline for the whole exchange.
    pub timeout: Duration,
    /// A secret file holding one `Name: value` header line (e.g. `Authorization: Bearer
    /// ...`), sent with every POST; never logged.
    pub header_file: Option<std::path::PathBuf>,
}

/// Whether `recipient` is a webhook (`webhook:NAME`), and its name.
pub fn webhook_name(recipient: &str) -> Option<&str> {
    recipient.strip_prefix(RECIPIENT_PREFIX)
}

/// Whether `name` may name a webhook: letters, digits, `.`, `_`, `-`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The default first wait between CertPolls (doubled after each, at most 10 minutes).
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(30);
/// The default longest time spent polling a pending request in one attempt (then the
/// renewal pass polls again at its next run).
pub const DEFAULT_POLL_TIMEOUT: Duration = Duration::from_secs(300);

/// A SCEP server as a `[[scep]]` block configures it (checked by [`crate::config`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScepConfig {
    /// The server's `name`: what a policy's `scep = "NAME"` refers to (letters, digits, `.`,
    /// `_`, `-`; unique).
    pub name: String,
    /// The SCEP endpoint (`url`, http or https), as given.
    pub url: url::Url,
    /// The challenge password's file (absolute, 0600, never logged).
    pub challenge_file: PathBuf,
    /// SHA-256 of the CA certificate, 32 bytes.
    pub ca_fingerprint: [u8; 32],
    /// More CA certificates (PEM) trusted for an `https` server.
    pub ca_file: Option<PathBuf>,
    /// The first wait between CertPoll requests while the server answers PENDING
    /// (`poll_interval`, default [`DEFAULT_POLL_INTERVAL`]); doubled after each, at most 10m.
    pub poll_interval: Duration,
    /// How long one attempt polls a PENDING request before giving up until the next renewal
    /// pass (`poll_timeout`, default [`DEFAULT_POLL_TIMEOUT`]).
    pub poll_timeout: Duration,
}

/// How long a pass's downloads may take together when nothing else is configured (s).
pub const DEFAULT_PASS_DEADLINE_SECS: u64 = 300;

/// A `ca_fingerprint` as written in certd.toml: 64 hex digits, colons and spaces allowed.
pub fn parse_fingerprint(text: &str) -> Option<[u8; 32]> {
    let digits: String = text.chars().filter(|c| *c != ':' && *c != ' ').collect();
    let bytes = hex::decode(digits).ok()?;
    bytes.try_into().ok()
}
