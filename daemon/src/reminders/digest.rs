//! A digest: the reminders one recipient gets in one message, grouped by urgency
//! ([`Urgency`]), with its text and HTML bodies and its Message-ID; [`when`] says a date the
//! way a reminder does.

use certctl_store::{rfc3339, CredentialKind, Role, UnixTime};

use crate::duration::DAY_SECS;
use serde::{Deserialize, Serialize};

/// The digest groups, most urgent first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Urgency {
    /// Past its `not_after`.
    Expired,
    /// Within its policy's `critical` window.
    Critical,
    /// Crossed a reminder threshold, not yet critical.
    Warn,
}

impl Urgency {
    /// `expired`, `critical` or `warn`: the JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Urgency::Expired => "expired",
            Urgency::Critical => "critical",
            Urgency::Warn => "warn",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Urgency::Expired => "EXPIRED",
            Urgency::Critical => "CRITICAL",
            Urgency::Warn => "WARNING",
        }
    }
}

/// One reminder: a certificate (or tracked artifact) that crossed a threshold, for one
/// recipient.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// SHA-256, lowercase hex (a tracked artifact: its id, the SHA-256 of the file).
    pub fingerprint: String,
    /// Subject CN, else first SAN, else the DN (a tracked artifact: its name).
    pub name: String,
    /// The subject DN (a tracked artifact: `KIND PATH`).
    pub subject: String,
    /// `None` for a tracked artifact.
    pub role: Option<Role>,
    /// `permanent` or `ephemeral` (by the certificate's lifetime); `None` for a CA
    /// certificate and a tracked artifact.
    pub credential_kind: Option<CredentialKind>,
    /// A tracked artifact's kind (`enrollment-bundle`, ...); `None` for a certificate.
    #[serde(default)]
    pub artifact_kind: Option<String>,
    /// A tracked artifact's file path; `None` for a certificate.
    #[serde(default)]
    pub path: Option<String>,
    /// Where it is deployed: `path#index` and `tls://host:port#index` (a tracked artifact:
    /// its path).
    pub sources: Vec<String>,
    /// When it expires (Unix seconds; `remind --json` adds `not_after_at`, RFC 3339).
    pub not_after: UnixTime,
    /// Whole days until `not_after`, rounded down (negative once expired).
    pub days_left: i64,
    /// The threshold crossed, in seconds before expiry (0 = expired).
    pub threshold_secs: i64,
    /// The same threshold as the policy writes it (`30d`, `expired`).
    pub threshold: String,
    /// How urgent it is, by its policy's `critical` window: the digest's group.
    pub urgency: Urgency,
    /// The name of the policy whose threshold it crossed.
    pub policy: String,
    /// `renewal stalled for N days` when the policy expects automatic renewal; `renewal
    /// stalled: newest credential of agent X expired at T` for a stalled agent
    /// (`crate::fleet::stalled`).
    pub note: Option<String>,
    /// Key rule violations.
    pub violations: Vec<String>,
}

impl Entry {
    /// The command that shows the certificate (a tracked artifact: `certctl list --name PATH`).
    pub fn command(&self) -> String {
        match &self.path {
            Some(path) if self.artifact_kind.is_some() => {
                format!("certctl list --name {}", shell_quote(path))
            }
            _ => format!("certctl show {}", self.fingerprint),
        }
    }

    /// Whether it is about a tracked artifact rather than a certificate.
    pub fn is_artifact(&self) -> bool {
        self.artifact_kind.is_some()
    }

    /// `gateway` (the role) or `enrollment-bundle` (the artifact kind).
    pub fn what(&self) -> String {
        match (&self.artifact_kind, self.role) {
            (Some(kind), _) => kind.clone(),
            (None, Some(role)) => role.to_string(),
            (None, None) => String::new(),
        }
    }

    /// See [`when`].
    pub fn when(&self, now: UnixTime) -> String {
        when(self.not_after, now)
    }
}

/// `s` as one shell word (single-quoted unless it is plain).
fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+,:@%=".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// `40 days left`, `expires in 5 hours`, `expired 3 hours ago`, `expired 2 days ago` (whole
/// units, rounded down).
pub fn when(not_after: UnixTime, now: UnixTime) -> String {
    let plural = |n: i64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    let left = not_after - now;
    if left <= 0 {
        let ago = -left;
        if ago < 3600 {
            "expired less than an hour ago".into()
        } else if ago < DAY_SECS {
            format!("expired {} ago", plural(ago / 3600, "hour"))
        } else {
            format!("expired {} ago", plural(ago / DAY_SECS, "day"))
        }
    } else if left < DAY_SECS {
        format!("expires in {}", plural((left / 3600).max(1), "hour"))
    } else {
        format!("{} left", plural(left / DAY_SECS, "day"))
    }
}

/// One recipient's e-mail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    /// The e-mail address it goes to (one of the matching policies' `recipients`).
    pub recipient: String,
    /// Most urgent first, then soonest expiry.
    pub entries: Vec<Entry>,
}

impl Digest {
    /// The digest's `Message-ID`: `<certctl.HASH@DOMAIN>`, HASH derived from the recipient
    /// and every (certificate or artifact fingerprint, threshold) it reminds of, and nothing
    /// else (not the time, not the text). The same reminders to the same recipient always
    /// get the same Message-ID, so when a delivery is retried after the connection broke
    /// between sending the message and the server's `250` (it may have arrived: SMTP cannot
    /// tell), the second copy has the same Message-ID and a mail store or client that
    /// de-duplicates by Message-ID keeps one. A retry that holds more (a threshold crossed
    /// in the meantime) is a different message with a different Message-ID.
    pub fn message_id(&self, domain: &str) -> String {
        use sha2::Digest as _;
        let mut keys: Vec<(bool, &str, i64)> = self
            .entries
            .iter()
            .map(|e| (e.is_artifact(), e.fingerprint.as_str(), e.threshold_secs))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let mut h = sha2::Sha256::new();
        h.update(b"certctl reminder digest v1\n");
        h.update(self.recipient.to_lowercase().as_bytes());
        h.update(b"\n");
        for (artifact, fingerprint, threshold) in keys {
            let kind = if artifact { "artifact" } else { "certificate" };
            h.update(format!("{kind} {fingerprint} {threshold}\n").as_bytes());
        }
        let hash = hex::encode(h.finalize());
        format!("<certctl.{}@{domain}>", &hash[..32])
    }

    fn count(&self, u: Urgency) -> usize {
        self.entries.iter().filter(|e| e.urgency == u).count()
    }

    /// The mail's subject line: `[certctl] 3 certificates need attention (1 expired, 2
    /// warn)`, `[certctl] 1 certificate and 1 tracked file need attention (...)`.
    pub fn subject(&self) -> String {
        let parts: Vec<String> = [Urgency::Expired, Urgency::Critical, Urgency::Warn]
            .into_iter()
            .map(|u| (u, self.count(u)))
            .filter(|(_, n)| *n > 0)
            .map(|(u, n)| format!("{n} {}", u.as_str()))
            .collect();
        let files = self.entries.iter().filter(|e| e.is_artifact()).count();
        let certs = self.entries.len() - files;
        let plural =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let what = match (certs, files) {
            (c, 0) => plural(c, "certificate", "certificates"),
            (0, f) => plural(f, "tracked file", "tracked files"),
            (c, f) => format!(
                "{} and {}",
                plural(c, "certificate", "certificates"),
                plural(f, "tracked file", "tracked files")
            ),
        };
        format!(
            "[certctl] {what} need{} attention ({})",
            if self.entries.len() == 1 { "s" } else { "" },
            parts.join(", ")
        )
    }

    /// The plain-text body (also what `remind --dry-run` prints). Names, subjects and
    /// paths come from certificates and files: shown through [`crate::inventory::view::printable`],
    /// so none can forge lines of the mail or drive a terminal.
    pub fn text(&self, now: UnixTime) -> String {
        use crate::inventory::view::Printable as P;
        let mut s = format!(
            "certctl reminder for {} ({} UTC)\n\n",
            P(&self.recipient),
            rfc3339(now)
        );
        for u in [Urgency::Expired, Urgency::Critical, Urgency::Warn] {
            let group: Vec<&Entry> = self.entries.iter().filter(|e| e.urgency == u).collect();
            if group.is_empty() {
                continue;
            }
            s.push_str(&format!("{} ({})\n", u.title(), group.len()));
            for e in group {
                s.push_str(&format!(
                    "\n  * {} ({}): {}, not after {}\n",
                    P(&e.name),
                    P(&e.what()),
                    P(&e.when(now)),
                    rfc3339(e.not_after)
                ));
                if let (Some(kind), Some(path)) = (&e.artifact_kind, &e.path) {
                    s.push_str(&format!("    artifact:  {} (tracked file)\n", P(kind)));
                    s.push_str(&format!("    file:      {}\n", P(path)));
                    s.push_str(&format!(
                        "    threshold: {} (policy {})\n",
                        P(&e.threshold),
                        P(&e.policy)
                    ));
                } else {
                    s.push_str(&format!("    subject:   {}\n", P(&e.subject)));
                    s.push_str(&format!(
                        "    threshold: {} (policy {})\n",
                        P(&e.threshold),
                        P(&e.policy)
                    ));
                    let sources = if e.sources.is_empty() {
                        "(none)".to_string()
                    } else {
                        e.sources.join(", ")
                    };
                    s.push_str(&format!("    deployed:  {}\n", P(&sources)));
                }
                if let Some(note) = &e.note {
                    s.push_str(&format!("    note:      {}\n", P(note)));
                }
                for v in &e.violations {
                    s.push_str(&format!("    policy:    {}\n", P(v)));
                }
                s.push_str(&format!("    inspect:   {}\n", P(&e.command())));
            }
            s.push('\n');
        }
        s.push_str("Each reminder is sent once per threshold. Silence one with `certctl snooze ID --until DATE --reason TEXT` (expired certificates are never silenced).\n");
        if self.entries.iter().any(Entry::is_artifact) {
            s.push_str("Tracked files cannot be snoozed: once replaced, track the new file (`certctl track FILE --kind KIND`) and the old one's reminders stop.\n");
        }
        s
    }

    /// The HTML alternative.
    pub fn html(&self, now: UnixTime) -> String {
        let mut s = format!(
            "<!DOCTYPE html>\n<html><body style=\"font-family: sans-serif\">\n<p>certctl reminder for {} ({} UTC)</p>\n",
            esc(&self.recipient),
            rfc3339(now)
        );
        for u in [Urgency::Expired, Urgency::Critical, Urgency::Warn] {
            let group: Vec<&Entry> = self.entries.iter().filter(|e| e.urgency == u).collect();
            if group.is_empty() {
                continue;
            }
            s.push_str(&format!(
                "<h2>{} ({})</h2>\n<table border=\"1\" cellpadding=\"4\" cellspacing=\"0\">\n<tr><th>certificate / file</th><th>role / kind</th><th>when</th><th>threshold</th><th>deployed</th><th>inspect</th></tr>\n",
                u.title(),
                group.len()
            ));
            for e in group {
                let mut notes = String::new();
                for n in e.note.iter().chain(&e.violations) {
                    notes.push_str(&format!("<br><em>{}</em>", esc(n)));
                }
                s.push_str(&format!(
                    "<tr><td><b>{}</b><br><small>{}</small>{notes}</td><td>{}</td><td>{}<br><small>{}</small></td><td>{} ({})</td><td>{}</td><td><code>{}</code></td></tr>\n",
                    esc(&e.name),
                    esc(&e.subject),
                    esc(&e.what()),
                    esc(&e.when(now)),
                    rfc3339(e.not_after),
                    esc(&e.threshold),
                    esc(&e.policy),
                    e.sources.iter().map(|s| esc(s)).collect::<Vec<_>>().join("<br>"),
                    esc(&e.command()),
                ));
            }
            s.push_str("</table>\n");
        }
        s.push_str("</body></html>\n");
        s
    }
}

/// HTML-escapes `s`, control characters first ([`crate::inventory::view::printable`]).
fn esc(s: &str) -> String {
    crate::inventory::view::html(s)
}
