//! Policies: which certificates need attention when, which keys are acceptable, who is told.
//!
//! A policies folder holds TOML files (`*.toml`, read in file-name order), each with any
//! number of `[[policy]]` tables:
//!
//! ```toml
//! [[policy]]
//! name = "gateway"                       # unique across the folder
//! roles = ["gateway", "iis"]             # required, at least one
//! credential_kinds = ["permanent"]       # optional: permanent | ephemeral
//! subjects = ["*.contoso.example"]       # optional globs: subject CN or full DN
//! sans = ["*.contoso.example"]           # optional globs: any SAN
//! issuers = ["*Let's Encrypt*"]          # optional globs: issuer DN or issuer CN
//! sources = ["/srv/certs/gateway/*"]     # optional globs: a file the certificate is in
//! endpoints = ["gw.contoso.example:443"] # optional globs: a TLS endpoint serving it
//! remind = ["60d", "30d", "14d", "7d", "1d"]
//! warn = "30d"
//! critical = "7d"
//! renewal_expected = "30d"               # optional: renewed automatically this long before expiry
//! grace = "12h"                          # optional: how long an agent's newest ephemeral
//!                                        # credential may stay expired (a stalled renewal after)
//! min_rsa_bits = 2048                    # optional key rules
//! allowed_curves = ["P-256", "P-384"]
//! forbidden_signatures = ["sha1", "md5"] # case-insensitive substrings of the algorithm name
//! recipients = ["pki-team@contoso.example"]
//! renew = "auto"                         # optional: auto | remind (default: remind)
//! renew_before = "1/3"                   # optional: a duration ("30d") or a fraction of the
//!                                        # lifetime ("1/3", the default with renew = "auto")
//! scep = "corp-ndes"                     # optional: the [[scep]] server (certd.toml) that
//!                                        # renews certificates no managed CA issued
//! ```
//!
//! **Renewal** (`renew = "auto"`, see `crate::pki::renewal`): certd renews the certificate
//! itself once `renew_before` (plus a jitter of up to a tenth of it, fixed per certificate)
//! before its expiry. `remind` (the default) only sends reminders.
//!
//! Globs use `*` (any text, `/` included), `?` and `[abc]`, and ignore case. Every target
//! that a policy sets must match (a list matches when any of its globs does).
//!
//! **Tracked artifacts** (`certctl track`: enrollment bundles, agent packages, gateway
//! backups) have policies of their own: `artifacts = ["enrollment-bundle"]` (artifact kinds)
//! *instead of* `roles`, optionally `sources` (globs on the artifact's file path), the same
//! thresholds and recipients. A policy sets either `roles` or `artifacts`, never both, and an
//! artifact policy cannot set certificate targets (`credential_kinds`, `subjects`, `sans`,
//! `issuers`, `endpoints`), key rules or `renewal_expected`. So a certificate policy never
//! matches an artifact and an artifact policy never matches a certificate.
//!
//! **Precedence** (when several policies match one certificate or artifact, a *conflict*):
//! the most specific policy wins. Specificity is the number of target kinds set besides
//! `roles` / `artifacts` (`credential_kinds`, `subjects`, `sans`, `issuers`, `sources`,
//! `endpoints`); on a tie the policy naming fewer roles (or artifact kinds) wins, then the
//! one in the file whose name sorts first, then the one written first in its file.
//! [`PolicySet::policies`] is kept in that order.
//!
//! **Thresholds**: a reminder is due when a certificate crosses one of its policy's
//! thresholds: the `remind` durations, `warn`, `critical`, and expiry itself (`0s`). With
//! `renewal_expected = R`, the policy stays quiet until R before expiry, and only the
//! thresholds ≤ R (and R itself) count: crossing R while still the newest certificate of
//! its subject means the renewal has stalled.
//!
//! Errors are `FILE:LINE:COLUMN: message` ([`Diagnostic`]), all of them at once.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use certctl_store::{
    Certificate, CredentialKind, Fingerprint, KeyAlgorithm, Role, TrackedArtifact, UnixTime,
};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::config::{diagnostic, Diagnostic};
use crate::duration::Duration;
use crate::duration::DAY_SECS;

/// A policies folder that could not be read or holds invalid policies.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The folder, or a policy file in it, could not be read.
    #[error("{}: cannot read the policies: {source}", path.display())]
    Read {
        /// The folder or file that failed.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The folder holds no `*.toml` file.
    #[error("{}: no policy files (*.toml) in this folder", path.display())]
    Empty {
        /// The policies folder.
        path: PathBuf,
    },
    /// Every problem found, one per line, in file then position order.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Diagnostic>),
}

impl PolicyError {
    /// Every problem found when the policies are invalid ([`PolicyError::Invalid`]); empty for
    /// the other errors.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            PolicyError::Invalid(all) => all,
            _ => &[],
        }
    }
}

/// A glob as written, and its compiled form.
#[derive(Clone, Debug)]
pub struct Glob {
    text: String,
    pattern: glob::Pattern,
}

impl Glob {
    /// Compiles a glob as written in a policy (`*`, `?`, `[abc]`); the error is a sentence
    /// naming the glob.
    pub fn new(text: &str) -> Result<Glob, String> {
        glob::Pattern::new(text)
            .map(|pattern| Glob {
                text: text.to_string(),
                pattern,
            })
            .map_err(|e| format!("invalid glob `{text}`: {}", e.msg))
    }

    /// The glob as written in the policy file.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `s` matches, ignoring case; `*` also matches `/`.
    pub fn matches(&self, s: &str) -> bool {
        self.pattern.matches_with(
            s,
            glob::MatchOptions {
                case_sensitive: false,
                require_literal_separator: false,
                require_literal_leading_dot: false,
            },
        )
    }
}

/// One checked policy.
#[derive(Clone, Debug)]
pub struct Policy {
    /// The policy's `name`, as written (unique across the folder, ignoring case).
    pub name: String,
    /// The file it is in, and the line of its `[[policy]]` table.
    pub file: PathBuf,
    /// 1-based line of the `[[policy]]` table in `file`.
    pub line: usize,
    /// The certificate roles it is for (empty for an artifact policy).
    pub roles: Vec<Role>,
    /// The tracked-artifact kinds it is for (`enrollment-bundle`, ...; empty for a
    /// certificate policy).
    pub artifacts: Vec<String>,
    /// The `credential_kinds` it is for (`permanent`, `ephemeral`); empty: any, CA certificates
    /// included.
    pub credential_kinds: Vec<CredentialKind>,
    /// Globs on the subject CN or the full subject DN (`subjects`); empty: any.
    pub subjects: Vec<Glob>,
    /// Globs on any SAN (`sans`); empty: any.
    pub sans: Vec<Glob>,
    /// Globs on the issuer DN or the issuer's CN (`issuers`); empty: any.
    pub issuers: Vec<Glob>,
    /// Globs on the path of a file the certificate is in now, or of a tracked artifact
    /// (`sources`); empty: any.
    pub sources: Vec<Glob>,
    /// Globs on `HOST:PORT` of a TLS endpoint serving the certificate now (`endpoints`); empty:
    /// any.
    pub endpoints: Vec<Glob>,
    /// Reminder durations before expiry, longest first.
    pub remind: Vec<Duration>,
    /// State `warn` from this long before expiry (`warn`, required; not shorter than `critical`).
    pub warn: Duration,
    /// State `critical` from this long before expiry (`critical`, required).
    pub critical: Duration,
    /// How long before expiry an automatic renewal is expected (`renewal_expected`): before
    /// then the policy stays quiet, after it a certificate not yet renewed is a stalled renewal;
    /// `None`: not set.
    pub renewal_expected: Option<Duration>,
    /// How long past expiry the newest ephemeral credential of an agent may stay before
    /// the agent is a stalled renewal (`crate::fleet::stalled`); `None`: the default there.
    pub grace: Option<Duration>,
    /// Smallest RSA key size accepted, in bits (`min_rsa_bits`); `None`: no rule.
    pub min_rsa_bits: Option<u32>,
    /// Curves accepted for EC and EdDSA keys (`allowed_curves`, e.g. `P-256`, `Ed25519`,
    /// compared ignoring case); empty: any.
    pub allowed_curves: Vec<String>,
    /// Case-insensitive substrings of forbidden signature algorithm names
    /// (`forbidden_signatures`, e.g. `sha1`); empty: none.
    pub forbidden_signatures: Vec<String>,
    /// E-mail addresses, lowercase, in the order written.
    pub recipients: Vec<String>,
    /// Whether certd renews matching certificates itself (`renew`, default `remind`).
    pub renew: crate::policy::RenewMode,
    /// How long before expiry an automatic renewal is due (`renew_before`); `None`: the
    /// default, a third of the lifetime.
    pub renew_before: Option<crate::policy::RenewBefore>,
    /// The `[[scep]]` server (by name) that renews certificates no managed CA issued.
    pub scep: Option<String>,
}

/// How urgent a certificate is under its policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// More than `warn` before expiry.
    Ok,
    /// Within `warn` of expiry, not within `critical`.
    Warn,
    /// Within `critical` of expiry, not expired.
    Critical,
    /// `not_after` has passed.
    Expired,
    /// No policy matches.
    Untracked,
}

impl State {
    /// The lowercase name (`ok`, `warn`, `critical`, `expired`, `untracked`), as printed;
    /// serde writes the same names.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Ok => "ok",
            State::Warn => "warn",
            State::Critical => "critical",
            State::Expired => "expired",
            State::Untracked => "untracked",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The label of a threshold: `expired` for 0, else the duration (`30d`).
pub fn threshold_label(secs: i64) -> String {
    if secs <= 0 {
        "expired".into()
    } else {
        Duration::from_secs(secs).to_string()
    }
}

impl Policy {
    /// Specificity: how many target kinds besides `roles` it sets.
    pub fn specificity(&self) -> usize {
        [
            !self.credential_kinds.is_empty(),
            !self.subjects.is_empty(),
            !self.sans.is_empty(),
            !self.issuers.is_empty(),
            !self.sources.is_empty(),
            !self.endpoints.is_empty(),
        ]
        .into_iter()
        .filter(|set| *set)
        .count()
    }

    /// `file:line` of the policy.
    pub fn location(&self) -> String {
        format!("{}:{}", self.file.display(), self.line)
    }

    /// Why the policy matches `cert` (one sentence per target), or `None` when it does not.
    pub fn matches(&self, cert: &Certificate) -> Option<Vec<String>> {
        let f = &cert.facts;
        let mut why = Vec::new();
        if !self.roles.contains(&cert.role) {
            return None;
        }
        why.push(format!("role `{}` is one of its roles", cert.role));
        if !self.credential_kinds.is_empty() {
            let kind = cert.credential_kind()?;
            if !self.credential_kinds.contains(&kind) {
                return None;
            }
            why.push(format!(
                "credential kind `{kind}` is one of its credential_kinds"
            ));
        }
        let first = |globs: &[Glob], values: &[&str]| -> Option<(String, String)> {
            globs.iter().find_map(|g| {
                values
                    .iter()
                    .find(|v| g.matches(v))
                    .map(|v| (g.as_str().to_string(), v.to_string()))
            })
        };
        if !self.subjects.is_empty() {
            let mut values: Vec<&str> = f.subject_cn.as_deref().into_iter().collect();
            values.push(&f.subject);
            let (g, v) = first(&self.subjects, &values)?;
            why.push(format!("subject `{v}` matches `{g}`"));
        }
        if !self.sans.is_empty() {
            let values: Vec<&str> = f.sans.all().collect();
            let (g, v) = first(&self.sans, &values)?;
            why.push(format!("SAN `{v}` matches `{g}`"));
        }
        if !self.issuers.is_empty() {
            let mut values = vec![f.issuer.as_str()];
            values.extend(issuer_cn(&f.issuer));
            let (g, v) = first(&self.issuers, &values)?;
            why.push(format!("issuer `{v}` matches `{g}`"));
        }
        if !self.sources.is_empty() {
            let values: Vec<&str> = cert
                .current_sources()
                .filter_map(|s| match &s.location {
                    certctl_store::SourceLocation::File { path, .. } => Some(path.as_str()),
                    _ => None,
                })
                .collect();
            let (g, v) = first(&self.sources, &values)?;
            why.push(format!("source `{v}` matches `{g}`"));
        }
        if !self.endpoints.is_empty() {
            let values: Vec<&str> = cert
                .current_sources()
                .filter_map(|s| match &s.location {
                    certctl_store::SourceLocation::Endpoint { address, .. } => {
                        Some(address.as_str())
                    }
                    _ => None,
                })
                .collect();
            let (g, v) = first(&self.endpoints, &values)?;
            why.push(format!("endpoint `{v}` matches `{g}`"));
        }
        Some(why)
    }

    /// Whether it is a policy for tracked artifacts (`artifacts = [...]`) rather than for
    /// certificates.
    pub fn is_for_artifacts(&self) -> bool {
        !self.artifacts.is_empty()
    }

    /// Why the policy matches the tracked artifact `a`, or `None` when it does not (always
    /// `None` for a certificate policy).
    pub fn matches_artifact(&self, a: &TrackedArtifact) -> Option<Vec<String>> {
        if !self
            .artifacts
            .iter()
            .any(|k| k.eq_ignore_ascii_case(&a.kind))
        {
            return None;
        }
        let mut why = vec![format!(
            "artifact kind `{}` is one of its artifacts",
            a.kind
        )];
        if !self.sources.is_empty() {
            let g = self.sources.iter().find(|g| g.matches(&a.path))?;
            why.push(format!("path `{}` matches `{}`", a.path, g.as_str()));
        }
        Some(why)
    }

    /// The thresholds, in seconds before expiry, most distant first; always ends with 0.
    pub fn thresholds(&self) -> Vec<i64> {
        let mut t: Vec<i64> = self.remind.iter().map(|d| d.as_secs()).collect();
        t.push(self.warn.as_secs());
        t.push(self.critical.as_secs());
        t.push(0);
        if let Some(r) = self.renewal_expected {
            t.retain(|s| *s <= r.as_secs());
            t.push(r.as_secs());
        }
        t.retain(|s| *s >= 0);
        t.sort_unstable_by(|a, b| b.cmp(a));
        t.dedup();
        t
    }

    /// The most urgent threshold `cert` has crossed at `now` (0 = expired), if any.
    pub fn crossed(&self, cert: &Certificate, now: UnixTime) -> Option<i64> {
        self.crossed_at(cert.facts.not_after, now)
    }

    /// The most urgent threshold crossed at `now` by something expiring at `expires`.
    pub fn crossed_at(&self, expires: UnixTime, now: UnixTime) -> Option<i64> {
        let left = expires - now;
        self.thresholds().into_iter().rev().find(|t| left <= *t)
    }

    /// ok / warn / critical / expired at `now`.
    pub fn state(&self, cert: &Certificate, now: UnixTime) -> State {
        self.state_at(cert.facts.not_after, now)
    }

    /// ok / warn / critical / expired at `now` for something expiring at `expires`.
    pub fn state_at(&self, expires: UnixTime, now: UnixTime) -> State {
        let left = expires - now;
        if left <= 0 {
            State::Expired
        } else if left <= self.critical.as_secs() {
            State::Critical
        } else if left <= self.warn.as_secs() {
            State::Warn
        } else {
            State::Ok
        }
    }

    /// Whether the policy is still waiting for an automatic renewal at `now`.
    pub fn renewal_pending(&self, cert: &Certificate, now: UnixTime) -> bool {
        self.renewal_expected
            .is_some_and(|r| now < cert.facts.not_after.saturating_sub(r.as_secs()))
    }

    /// Whole days since the automatic renewal was due, when it was due and has not happened.
    pub fn renewal_stalled_days(&self, cert: &Certificate, now: UnixTime) -> Option<i64> {
        let r = self.renewal_expected?;
        let due = cert.facts.not_after.saturating_sub(r.as_secs());
        (now >= due).then(|| (now - due).div_euclid(DAY_SECS))
    }

    /// What is wrong with the key or signature under the key rules.
    pub fn violations(&self, cert: &Certificate) -> Vec<String> {
        let f = &cert.facts;
        let mut out = Vec::new();
        if let (Some(min), KeyAlgorithm::Rsa { bits }) = (self.min_rsa_bits, &f.key) {
            if *bits < min {
                out.push(format!(
                    "RSA {bits} is below the policy's minimum of {min} bits"
                ));
            }
        }
        if !self.allowed_curves.is_empty() {
            let curve = match &f.key {
                KeyAlgorithm::Ec { curve } => Some(curve.as_str()),
                KeyAlgorithm::Ed25519 => Some("Ed25519"),
                KeyAlgorithm::Ed448 => Some("Ed448"),
                _ => None,
            };
            if let Some(c) = curve {
                if !self
                    .allowed_curves
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(c))
                {
                    out.push(format!(
                        "curve {c} is not one of the allowed curves ({})",
                        self.allowed_curves.join(", ")
                    ));
                }
            }
        }
        let alg = f.signature_algorithm.to_ascii_lowercase();
        for bad in &self.forbidden_signatures {
            if alg.contains(&bad.to_ascii_lowercase()) {
                out.push(format!(
                    "signature algorithm {} is forbidden (`{bad}`)",
                    f.signature_algorithm
                ));
            }
        }
        out
    }
}

fn issuer_cn(dn: &str) -> Option<&str> {
    dn.split(',')
        .map(str::trim)
        .find_map(|rdn| rdn.strip_prefix("CN=").or_else(|| rdn.strip_prefix("cn=")))
}

/// The policies of a folder, in precedence order.
#[derive(Clone, Debug, Default)]
pub struct PolicySet {
    /// The policies folder read by [`load_dir`]; empty when built by [`parse_files`].
    pub dir: PathBuf,
    /// Every policy file, in the order read (file-name order for a folder).
    pub files: Vec<PathBuf>,
    /// Every policy, in precedence order: most specific first (see the module's documentation).
    pub policies: Vec<Policy>,
}

impl PolicySet {
    /// Every policy matching `cert`, in precedence order, with the reasons.
    pub fn matching<'p>(&'p self, cert: &Certificate) -> Vec<(&'p Policy, Vec<String>)> {
        self.policies
            .iter()
            .filter_map(|p| p.matches(cert).map(|why| (p, why)))
            .collect()
    }

    /// The policy that applies to `cert` (the first by precedence).
    pub fn select(&self, cert: &Certificate) -> Option<&Policy> {
        self.policies.iter().find(|p| p.matches(cert).is_some())
    }

    /// Every artifact policy matching the tracked artifact `a`, in precedence order.
    pub fn matching_artifact<'p>(&'p self, a: &TrackedArtifact) -> Vec<(&'p Policy, Vec<String>)> {
        self.policies
            .iter()
            .filter_map(|p| p.matches_artifact(a).map(|why| (p, why)))
            .collect()
    }

    /// The policy that applies to the tracked artifact `a` (the first by precedence).
    pub fn select_artifact(&self, a: &TrackedArtifact) -> Option<&Policy> {
        self.policies
            .iter()
            .find(|p| p.matches_artifact(a).is_some())
    }
}

/// Which certificates were renewed, by the rules that keep a forgery or a renewal nobody
/// deployed from silencing a reminder. B renews A when all of these hold:
///
/// - same subject and role, and B is not revoked;
/// - B is issued by the same CA key as A (equal authority key identifiers; without them,
///   the same issuer DN), so a TLS-inspecting proxy's or a look-alike CA's certificate with
///   A's name does not count;
/// - B's names (CN and SANs) cover A's, and B expires later;
/// - B is deployed at A's place: a file that held A now holds B, or B sits in the folder of
///   one of A's files under the same name stem;
/// - no endpoint still serves A (else it is [`Renewal::NotReloaded`]).
#[derive(Default)]
pub struct Successors {
    candidates: HashMap<(String, Role), Vec<Candidate>>,
    /// Only the subjects already in `candidates` are tracked ([`Successors::watching`]).
    watching: bool,
}

/// What the renewal rules look at in a certificate that could renew another.
struct Candidate {
    fingerprint: Fingerprint,
    not_after: UnixTime,
    issuer_key: IssuerKey,
    names: Vec<String>,
    /// Paths of the files that hold it now.
    files: Vec<String>,
}

/// The CA key that issued a certificate, as far as the certificate says.
#[derive(Clone, PartialEq, Eq)]
enum IssuerKey {
    KeyId(Vec<u8>),
    Dn(String),
}

impl IssuerKey {
    fn of(c: &Certificate) -> IssuerKey {
        match &c.facts.authority_key_id {
            Some(id) => IssuerKey::KeyId(id.0.clone()),
            None => IssuerKey::Dn(c.facts.issuer.to_lowercase()),
        }
    }
}

/// Whether and how a certificate was renewed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    /// Replaced where it was deployed, and nothing serves it any more: no reminder.
    Renewed(Fingerprint),
    /// Its renewal is deployed on disk, but endpoints still serve it: "reload the service".
    NotReloaded {
        /// The renewal: the newer certificate now deployed where this one was.
        by: Fingerprint,
        /// The endpoints still serving this certificate, as `tls://HOST:PORT`.
        endpoints: Vec<String>,
    },
}

fn lowercase_names(c: &Certificate) -> Vec<String> {
    let mut names: Vec<String> = c.facts.names().map(str::to_lowercase).collect();
    names.sort();
    names.dedup();
    names
}

fn file_paths(c: &Certificate, current_only: bool) -> Vec<String> {
    c.sources
        .iter()
        .filter(|s| !current_only || s.gone_since.is_none())
        .filter_map(|s| match &s.location {
            certctl_store::SourceLocation::File { path, .. } => Some(path.clone()),
            certctl_store::SourceLocation::Endpoint { .. } => None,
        })
        .collect()
}

/// `/etc/gw/tls.pem` → (`/etc/gw`, `tls`): where a renewal written next to the old file
/// (`tls.pem` → `tls.pem`, or `tls.crt` → `tls.pem`) is found.
fn dir_and_stem(path: &str) -> (&str, &str) {
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    let stem = name.split('.').next().unwrap_or(name);
    (dir, stem)
}

impl Successors {
    /// From every certificate that could be a successor (revoked ones cannot).
    pub fn new<'c>(certs: impl IntoIterator<Item = &'c Certificate>) -> Successors {
        let mut s = Successors::default();
        for c in certs {
            s.add(c);
        }
        s
    }

    /// Tracks only the subjects and roles of `certs`, so that a pass over a million
    /// certificates that may remind about a few thousand holds only those few thousand.
    pub fn watching<'c>(certs: impl IntoIterator<Item = &'c Certificate>) -> Successors {
        Successors {
            candidates: certs
                .into_iter()
                .map(|c| ((c.facts.subject.to_lowercase(), c.role), Vec::new()))
                .collect(),
            watching: true,
        }
    }

    /// Takes one more certificate into account (revoked ones, and ones no file holds, are
    /// ignored: they cannot be a deployed renewal).
    pub fn add(&mut self, c: &Certificate) {
        if c.revocation.is_some() {
            return;
        }
        let files = file_paths(c, true);
        if files.is_empty() {
            return;
        }
        let key = (c.facts.subject.to_lowercase(), c.role);
        let list = if self.watching {
            match self.candidates.get_mut(&key) {
                Some(list) => list,
                None => return,
            }
        } else {
            self.candidates.entry(key).or_default()
        };
        list.push(Candidate {
            fingerprint: c.fingerprint(),
            not_after: c.facts.not_after,
            issuer_key: IssuerKey::of(c),
            names: lowercase_names(c),
            files,
        });
    }

    /// Whether `cert` was renewed (see the rules on [`Successors`]).
    pub fn renewal(&self, cert: &Certificate) -> Option<Renewal> {
        let key = (cert.facts.subject.to_lowercase(), cert.role);
        let list = self.candidates.get(&key)?;
        let issuer_key = IssuerKey::of(cert);
        let names = lowercase_names(cert);
        let places = file_paths(cert, false);
        let at_its_place = |b: &Candidate| {
            b.files.iter().any(|f| {
                places.iter().any(|p| {
                    p == f || {
                        let (pd, ps) = dir_and_stem(p);
                        let (fd, fs) = dir_and_stem(f);
                        pd == fd && ps == fs
                    }
                })
            })
        };
        let renewal = list
            .iter()
            .filter(|b| b.fingerprint != cert.fingerprint())
            .filter(|b| b.not_after > cert.facts.not_after)
            .filter(|b| b.issuer_key == issuer_key)
            .filter(|b| names.iter().all(|n| b.names.contains(n)))
            .filter(|b| at_its_place(b))
            .max_by_key(|b| (b.not_after, b.fingerprint))?;
        let endpoints: Vec<String> = cert
            .current_sources()
            .filter_map(|s| match &s.location {
                certctl_store::SourceLocation::Endpoint { address, .. } => {
                    Some(format!("tls://{address}"))
                }
                certctl_store::SourceLocation::File { .. } => None,
            })
            .collect();
        Some(if endpoints.is_empty() {
            Renewal::Renewed(renewal.fingerprint)
        } else {
            Renewal::NotReloaded {
                by: renewal.fingerprint,
                endpoints,
            }
        })
    }

    /// The certificate that renewed `cert` where it was deployed, if one did and nothing
    /// serves `cert` any more.
    pub fn successor(&self, cert: &Certificate) -> Option<Fingerprint> {
        match self.renewal(cert)? {
            Renewal::Renewed(fp) => Some(fp),
            Renewal::NotReloaded { .. } => None,
        }
    }
}

// ---- renew and renew_before ---------------------------------------------------------------

/// A policy's `renew`: whether certd renews its certificates itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RenewMode {
    /// Reminders only (the default): nothing is started.
    #[default]
    Remind,
    /// certd starts the renewal when it is due.
    Auto,
}

impl FromStr for RenewMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(RenewMode::Auto),
            "remind" => Ok(RenewMode::Remind),
            _ => Err(format!("`{s}`: write \"auto\" or \"remind\"")),
        }
    }
}

impl fmt::Display for RenewMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RenewMode::Remind => "remind",
            RenewMode::Auto => "auto",
        })
    }
}

/// A policy's `renew_before`: a duration, or a fraction of the certificate's lifetime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RenewBefore {
    /// A fixed duration before expiry (`renew_before = "30d"`).
    Duration(Duration),
    /// `num/den` of the lifetime (0 < num < den).
    Fraction {
        /// Numerator of the fraction.
        num: u32,
        /// Denominator of the fraction.
        den: u32,
    },
}

/// The default `renew_before`: a third of the lifetime.
pub const DEFAULT_RENEW_BEFORE: RenewBefore = RenewBefore::Fraction { num: 1, den: 3 };

impl RenewBefore {
    /// In seconds, for a certificate valid `lifetime_secs`.
    pub fn secs(self, lifetime_secs: i64) -> i64 {
        match self {
            RenewBefore::Duration(d) => d.as_secs(),
            RenewBefore::Fraction { num, den } => {
                lifetime_secs.max(0) / i64::from(den) * i64::from(num)
                    + lifetime_secs.max(0) % i64::from(den) * i64::from(num) / i64::from(den)
            }
        }
    }
}

impl FromStr for RenewBefore {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if let Some((a, b)) = t.split_once('/') {
            let bad = || {
                format!("`{s}`: a fraction of the lifetime is N/M with 0 < N < M (e.g. \"1/3\")")
            };
            let num: u32 = a.trim().parse().map_err(|_| bad())?;
            let den: u32 = b.trim().parse().map_err(|_| bad())?;
            if num == 0 || den == 0 || num >= den || den > 1000 {
                return Err(bad());
            }
            return Ok(RenewBefore::Fraction { num, den });
        }
        let d: Duration = t.parse().map_err(|e: crate::duration::DurationError| {
            format!("{e}; or a fraction of the lifetime such as \"1/3\"")
        })?;
        if d.as_secs() <= 0 {
            return Err(format!("`{s}` must be longer than 0s"));
        }
        Ok(RenewBefore::Duration(d))
    }
}

impl fmt::Display for RenewBefore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RenewBefore::Duration(d) => write!(f, "{d}"),
            RenewBefore::Fraction { num, den } => write!(f, "{num}/{den}"),
        }
    }
}

// ---- loading ------------------------------------------------------------------------------

/// Reads every `*.toml` file of `dir`, in file-name order, and checks the policies.
pub fn load_dir(dir: &Path) -> Result<PolicySet, PolicyError> {
    let read_err = |source| PolicyError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read_err)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(PolicyError::Empty {
            path: dir.to_path_buf(),
        });
    }
    let mut texts = Vec::with_capacity(files.len());
    for f in &files {
        let text = std::fs::read_to_string(f).map_err(|source| PolicyError::Read {
            path: f.clone(),
            source,
        })?;
        texts.push((f.clone(), text));
    }
    let mut set = parse_files(&texts)?;
    set.dir = dir.to_path_buf();
    Ok(set)
}

/// Checks policy files given as (path, text), in this order.
pub fn parse_files(files: &[(PathBuf, String)]) -> Result<PolicySet, PolicyError> {
    let mut problems = Vec::new();
    let mut policies: Vec<(usize, usize, Policy)> = Vec::new();
    let mut names: HashMap<String, (PathBuf, usize)> = HashMap::new();
    for (file_index, (path, text)) in files.iter().enumerate() {
        // Every shape error of the file (a broken policy is left out and the others are
        // still checked), not only the first.
        let (raw, shape) = crate::config::deserialize_all::<RawFile>(text, path);
        problems.extend(shape);
        let Some(raw) = raw else {
            continue;
        };
        let mut checker = Checker {
            text,
            origin: path,
            problems: Vec::new(),
        };
        for (i, raw_policy) in raw.policy.iter().enumerate() {
            let policy = checker.policy(raw_policy);
            let name_span = raw_policy.name.span();
            let key = policy.name.to_lowercase();
            if let Some((other_file, other_line)) = names.get(&key) {
                checker.report(
                    name_span,
                    format!(
                        "policy `{}` is already defined at {}:{other_line}",
                        policy.name,
                        other_file.display()
                    ),
                );
            } else {
                names.insert(key, (path.clone(), policy.line));
            }
            policies.push((file_index, i, policy));
        }
        checker.problems.sort_by_key(|d| (d.line, d.column));
        problems.extend(checker.problems);
    }
    if !problems.is_empty() {
        return Err(PolicyError::Invalid(problems));
    }
    policies.sort_by(|(fa, ia, a), (fb, ib, b)| {
        b.specificity()
            .cmp(&a.specificity())
            .then((a.roles.len() + a.artifacts.len()).cmp(&(b.roles.len() + b.artifacts.len())))
            .then(fa.cmp(fb))
            .then(ia.cmp(ib))
    });
    Ok(PolicySet {
        dir: PathBuf::new(),
        files: files.iter().map(|(p, _)| p.clone()).collect(),
        policies: policies.into_iter().map(|(_, _, p)| p).collect(),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    policy: Vec<RawPolicy>,
}

type Strings = Spanned<Vec<Spanned<String>>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    name: Spanned<String>,
    #[serde(default)]
    description: Option<String>,
    roles: Option<Strings>,
    artifacts: Option<Strings>,
    credential_kinds: Option<Strings>,
    subjects: Option<Strings>,
    sans: Option<Strings>,
    issuers: Option<Strings>,
    sources: Option<Strings>,
    endpoints: Option<Strings>,
    remind: Strings,
    warn: Spanned<String>,
    critical: Spanned<String>,
    renewal_expected: Option<Spanned<String>>,
    grace: Option<Spanned<String>>,
    min_rsa_bits: Option<Spanned<i64>>,
    allowed_curves: Option<Strings>,
    forbidden_signatures: Option<Strings>,
    recipients: Strings,
    renew: Option<Spanned<String>>,
    renew_before: Option<Spanned<String>>,
    scep: Option<Spanned<String>>,
}

struct Checker<'a> {
    text: &'a str,
    origin: &'a Path,
    problems: Vec<Diagnostic>,
}

impl Checker<'_> {
    fn report(&mut self, span: std::ops::Range<usize>, message: String) {
        self.problems
            .push(diagnostic(self.text, self.origin, span.start, message));
    }

    fn policy(&mut self, raw: &RawPolicy) -> Policy {
        let _ = &raw.description;
        let name = raw.name.get_ref().trim().to_string();
        if name.is_empty() {
            self.report(raw.name.span(), "policy.name is empty".into());
        }
        let line = diagnostic(self.text, self.origin, raw.name.span().start, String::new()).line;
        let roles = self.policy_roles(raw, &name);
        let artifacts = self.policy_artifacts(raw, &name);
        self.check_certificates_or_artifacts(raw, &name);
        let credential_kinds = self.policy_credential_kinds(raw);
        let globs = |this: &mut Self, v: &Option<Strings>, key: &str| match v {
            Some(v) => this.parsed(v, key, Glob::new),
            None => Vec::new(),
        };
        let subjects = globs(self, &raw.subjects, "subjects");
        let sans = globs(self, &raw.sans, "sans");
        let issuers = globs(self, &raw.issuers, "issuers");
        let sources = globs(self, &raw.sources, "sources");
        let endpoints = globs(self, &raw.endpoints, "endpoints");
        let mut remind: Vec<Duration> = self.parsed(&raw.remind, "remind", positive_duration);
        remind.sort_unstable_by(|a, b| b.cmp(a));
        remind.dedup();
        let (warn, critical) = self.policy_thresholds(raw, &name);
        let renewal_expected = raw
            .renewal_expected
            .as_ref()
            .and_then(|r| self.one(r, "renewal_expected", any_duration));
        let grace = raw
            .grace
            .as_ref()
            .and_then(|g| self.one(g, "grace", any_duration));
        let min_rsa_bits = self.policy_min_rsa_bits(raw);
        let plain = |v: &Option<Strings>| -> Vec<String> {
            v.as_ref()
                .map(|v| v.get_ref().iter().map(|s| s.get_ref().clone()).collect())
                .unwrap_or_default()
        };
        let recipients = self.policy_recipients(raw, &name);
        let renew = raw
            .renew
            .as_ref()
            .and_then(|r| self.one(r, "renew", |s| s.parse::<crate::policy::RenewMode>()))
            .unwrap_or_default();
        let renew_before = raw.renew_before.as_ref().and_then(|r| {
            self.one(r, "renew_before", |s| {
                s.parse::<crate::policy::RenewBefore>()
            })
        });
        let scep = self.policy_scep(raw);
        Policy {
            name,
            file: self.origin.to_path_buf(),
            line,
            roles,
            artifacts,
            credential_kinds,
            subjects,
            sans,
            issuers,
            sources,
            endpoints,
            remind,
            warn: warn.unwrap_or(Duration::from_secs(0)),
            critical: critical.unwrap_or(Duration::from_secs(0)),
            renewal_expected,
            grace,
            min_rsa_bits,
            allowed_curves: plain(&raw.allowed_curves),
            forbidden_signatures: plain(&raw.forbidden_signatures),
            recipients,
            renew,
            renew_before,
            scep,
        }
    }

    /// `roles`: each a known role, and not an empty list.
    fn policy_roles(&mut self, raw: &RawPolicy, name: &str) -> Vec<Role> {
        let Some(r) = &raw.roles else {
            return Vec::new();
        };
        if r.get_ref().is_empty() {
            self.report(
                r.span(),
                format!("policy `{name}`: roles is empty: name at least one role"),
            );
        }
        self.parsed(r, "roles", |s| s.parse::<Role>())
    }

    /// `artifacts`: each a known artifact kind (lowercased), and not an empty list.
    fn policy_artifacts(&mut self, raw: &RawPolicy, name: &str) -> Vec<String> {
        let Some(a) = &raw.artifacts else {
            return Vec::new();
        };
        if a.get_ref().is_empty() {
            self.report(
                a.span(),
                format!(
                    "policy `{name}`: artifacts is empty: name at least one artifact kind ({})",
                    certctl_store::ARTIFACT_KINDS.join(", ")
                ),
            );
        }
        self.parsed(a, "artifacts", |s| {
            let k = s.to_ascii_lowercase();
            if certctl_store::ARTIFACT_KINDS.contains(&k.as_str()) {
                Ok(k)
            } else {
                Err(format!(
                    "unknown artifact kind `{s}` (expected one of: {})",
                    certctl_store::ARTIFACT_KINDS.join(", ")
                ))
            }
        })
    }

    /// A policy is for certificates (`roles`) or for tracked artifacts (`artifacts`): exactly
    /// one of the two, and an artifact policy sets none of the certificate-only keys.
    fn check_certificates_or_artifacts(&mut self, raw: &RawPolicy, name: &str) {
        match (&raw.roles, &raw.artifacts) {
            (None, None) => self.report(
                raw.name.span(),
                format!("policy `{name}`: missing field `roles` (certificates) or `artifacts` (tracked artifacts such as enrollment bundles)"),
            ),
            (Some(_), Some(a)) => self.report(
                a.span(),
                format!("policy `{name}`: sets both roles and artifacts: a policy is for certificates (roles) or for tracked artifacts (artifacts), write two policies"),
            ),
            (None, Some(_)) => self.check_no_certificate_keys(raw, name),
            (Some(_), None) => {}
        }
    }

    /// An artifact policy can only target `sources`: every certificate-only key it sets is
    /// reported.
    fn check_no_certificate_keys(&mut self, raw: &RawPolicy, name: &str) {
        let not_for_artifacts: [(&str, Option<std::ops::Range<usize>>); 12] = [
            (
                "credential_kinds",
                raw.credential_kinds.as_ref().map(|v| v.span()),
            ),
            ("subjects", raw.subjects.as_ref().map(|v| v.span())),
            ("sans", raw.sans.as_ref().map(|v| v.span())),
            ("issuers", raw.issuers.as_ref().map(|v| v.span())),
            ("endpoints", raw.endpoints.as_ref().map(|v| v.span())),
            (
                "renewal_expected",
                raw.renewal_expected.as_ref().map(|v| v.span()),
            ),
            ("grace", raw.grace.as_ref().map(|v| v.span())),
            ("min_rsa_bits", raw.min_rsa_bits.as_ref().map(|v| v.span())),
            (
                "allowed_curves",
                raw.allowed_curves.as_ref().map(|v| v.span()),
            ),
            ("renew", raw.renew.as_ref().map(|v| v.span())),
            ("renew_before", raw.renew_before.as_ref().map(|v| v.span())),
            ("scep", raw.scep.as_ref().map(|v| v.span())),
        ];
        let sigs = raw.forbidden_signatures.as_ref().map(|v| v.span());
        for (key, span) in not_for_artifacts
            .into_iter()
            .chain([("forbidden_signatures", sigs)])
        {
            if let Some(span) = span {
                self.report(
                    span,
                    format!("policy `{name}`: {key} is for certificates; an artifact policy (artifacts = [...]) can only target `sources` (globs on the file path)"),
                );
            }
        }
    }

    /// `credential_kinds`: `permanent` or `ephemeral`.
    fn policy_credential_kinds(&mut self, raw: &RawPolicy) -> Vec<CredentialKind> {
        match &raw.credential_kinds {
            Some(k) => self.parsed(k, "credential_kinds", |s| {
                match s.to_ascii_lowercase().as_str() {
                    "permanent" => Ok(CredentialKind::Permanent),
                    "ephemeral" => Ok(CredentialKind::Ephemeral),
                    _ => Err(format!(
                        "unknown credential kind `{s}` (expected permanent or ephemeral)"
                    )),
                }
            }),
            None => Vec::new(),
        }
    }

    /// `warn` and `critical`, critical being the shorter one.
    fn policy_thresholds(
        &mut self,
        raw: &RawPolicy,
        name: &str,
    ) -> (Option<Duration>, Option<Duration>) {
        let warn = self.one(&raw.warn, "warn", any_duration);
        let critical = self.one(&raw.critical, "critical", any_duration);
        if let (Some(w), Some(c)) = (warn, critical) {
            if c > w {
                self.report(
                    raw.critical.span(),
                    format!("policy `{name}`: critical ({c}) is longer than warn ({w}): critical must be the shorter one"),
                );
            }
        }
        (warn, critical)
    }

    /// `min_rsa_bits`: a key size from 512 to 16384.
    fn policy_min_rsa_bits(&mut self, raw: &RawPolicy) -> Option<u32> {
        let b = raw.min_rsa_bits.as_ref()?;
        match u32::try_from(*b.get_ref()) {
            Ok(bits) if (512..=16384).contains(&bits) => Some(bits),
            _ => {
                self.report(
                    b.span(),
                    format!(
                        "min_rsa_bits {} is not a key size (512 to 16384)",
                        b.get_ref()
                    ),
                );
                None
            }
        }
    }

    /// `recipients`: e-mail addresses (lowercased) or `webhook:NAME`, at least one.
    fn policy_recipients(&mut self, raw: &RawPolicy, name: &str) -> Vec<String> {
        let recipients: Vec<String> = self.parsed(&raw.recipients, "recipients", |s| {
            // `webhook:NAME`: a `[[webhook]]` of certd's configuration.
            if let Some(name) = crate::config::sections::webhook_name(s) {
                return if crate::config::sections::valid_name(name) {
                    Ok(s.to_string())
                } else {
                    Err(format!(
                        "`{s}`: a webhook name has letters, digits, `.`, `_` and `-`"
                    ))
                };
            }
            s.parse::<lettre::Address>()
                .map(|a| a.to_string().to_lowercase())
                .map_err(|e| format!("`{s}` is not an e-mail address (or `webhook:NAME`): {e}"))
        });
        if raw.recipients.get_ref().is_empty() {
            self.report(
                raw.recipients.span(),
                format!("policy `{name}`: recipients is empty: name at least one address"),
            );
        }
        recipients
    }

    /// `scep`: the name of a `[[scep]]` server of certd.toml.
    fn policy_scep(&mut self, raw: &RawPolicy) -> Option<String> {
        raw.scep.as_ref().and_then(|s| {
            self.one(s, "scep", |v| {
                if crate::config::sections::valid_name(v) {
                    Ok(v.to_string())
                } else {
                    Err(format!(
                        "`{v}`: name a [[scep]] server of certd.toml (letters, digits, `.`, `_` and `-`)"
                    ))
                }
            })
        })
    }

    fn parsed<T, E: fmt::Display>(
        &mut self,
        values: &Strings,
        key: &str,
        parse: impl Fn(&str) -> Result<T, E>,
    ) -> Vec<T> {
        let mut out = Vec::new();
        for v in values.get_ref() {
            match parse(v.get_ref()) {
                Ok(x) => out.push(x),
                Err(e) => self.report(v.span(), format!("policy.{key}: {e}")),
            }
        }
        out
    }

    fn one<T, E: fmt::Display>(
        &mut self,
        value: &Spanned<String>,
        key: &str,
        parse: impl Fn(&str) -> Result<T, E>,
    ) -> Option<T> {
        match parse(value.get_ref()) {
            Ok(x) => Some(x),
            Err(e) => {
                self.report(value.span(), format!("policy.{key}: {e}"));
                None
            }
        }
    }
}

fn any_duration(s: &str) -> Result<Duration, String> {
    s.parse::<Duration>().map_err(|e| e.to_string())
}

fn positive_duration(s: &str) -> Result<Duration, String> {
    let d = any_duration(s)?;
    if d.as_secs() <= 0 {
        return Err(format!(
            "`{s}` is not longer than 0s (expiry itself is always a threshold)"
        ));
    }
    Ok(d)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use certctl_store::{CertificateFacts, Sha256, SubjectAltNames};

    pub(crate) fn cert(cn: &str, role: Role, not_before: i64, not_after: i64) -> Certificate {
        let facts = CertificateFacts {
            fingerprint: Sha256([cn.len() as u8 ^ not_after as u8; 32]),
            subject: format!("CN={cn},O=Contoso"),
            subject_cn: Some(cn.into()),
            issuer: "CN=Contoso Issuing CA,O=Contoso".into(),
            serial: "1".into(),
            not_before,
            not_after,
            sans: SubjectAltNames {
                dns: vec![cn.into()],
                ..Default::default()
            },
            key: KeyAlgorithm::Rsa { bits: 1024 },
            signature_algorithm: "sha1WithRSAEncryption".into(),
            is_ca: false,
            subject_key_id: None,
            authority_key_id: None,
            spki_sha256: Sha256([0; 32]),
            crl_distribution_points: vec![],
            ocsp_urls: vec![],
        };
        Certificate::new(facts, role, 0)
    }

    fn set(files: &[(&str, &str)]) -> Result<PolicySet, PolicyError> {
        let files: Vec<(PathBuf, String)> = files
            .iter()
            .map(|(p, t)| (PathBuf::from(p), t.to_string()))
            .collect();
        parse_files(&files)
    }

    const BASE: &str = "remind = [\"60d\", \"30d\"]\nwarn = \"30d\"\ncritical = \"7d\"\nrecipients = [\"ops@example.org\"]\n";

    #[test]
    fn the_default_policies_parse() {
        let text = include_str!("../../policies/default.toml");
        let s = set(&[("policies/default.toml", text)]).unwrap();
        assert!(s.policies.len() >= 6, "{}", s.policies.len());
    }

    #[test]
    fn errors_name_file_line_and_column() {
        let text = format!(
            "[[policy]]\nname = \"a\"\nroles = [\"gateway\", \"router\"]\n{BASE}\n[[policy]]\nname = \"a\"\nroles = [\"iis\"]\n{}",
            BASE.replace("\"7d\"", "\"7x\"")
        );
        let e = set(&[("/p/x.toml", &text)]).unwrap_err();
        let all: Vec<String> = e.diagnostics().iter().map(|d| d.to_string()).collect();
        assert_eq!(all.len(), 3, "{all:#?}");
        assert!(
            all[0].starts_with("/p/x.toml:3:21: policy.roles: unknown role `router`"),
            "{}",
            all[0]
        );
        assert!(
            all[1].starts_with("/p/x.toml:10:8: policy `a` is already defined at /p/x.toml:2"),
            "{}",
            all[1]
        );
        assert!(
            all[2].starts_with("/p/x.toml:14:12: policy.critical: invalid duration"),
            "{}",
            all[2]
        );

        // Every shape error of the file, in file order: the misspelt key, and the policy
        // that (for want of `roles` spelt right) also lacks `remind`.
        let e = set(&[("/p/y.toml", "[[policy]]\nname = \"b\"\nrols = []\n")]).unwrap_err();
        let all: Vec<String> = e.diagnostics().iter().map(|d| d.to_string()).collect();
        assert_eq!(all.len(), 2, "{all:#?}");
        assert!(
            all[0].starts_with("/p/y.toml:1:1: missing field `remind`"),
            "{e}"
        );
        assert!(
            all[1].starts_with("/p/y.toml:3:1: unknown field `rols`"),
            "{e}"
        );
    }

    #[test]
    fn precedence_is_specificity_then_roles_then_file_order() {
        let general =
            format!("[[policy]]\nname = \"agents\"\nroles = [\"agent\", \"other\"]\n{BASE}");
        let narrow = format!("[[policy]]\nname = \"ephemeral\"\nroles = [\"agent\"]\ncredential_kinds = [\"ephemeral\"]\n{BASE}");
        let by_name = format!("[[policy]]\nname = \"one-role\"\nroles = [\"agent\"]\n{BASE}");
        let s = set(&[
            ("/p/a.toml", &general),
            ("/p/b.toml", &narrow),
            ("/p/c.toml", &by_name),
        ])
        .unwrap();
        let names: Vec<&str> = s.policies.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["ephemeral", "one-role", "agents"]);

        let permanent = cert("agent-1", Role::Agent, 0, 400 * 86_400);
        let m = s.matching(&permanent);
        assert_eq!(m.len(), 2);
        assert_eq!(s.select(&permanent).unwrap().name, "one-role");
        let ephemeral = cert("agent-2", Role::Agent, 0, 6 * 3600);
        assert_eq!(s.select(&ephemeral).unwrap().name, "ephemeral");
        assert!(s.select(&cert("gw", Role::Gateway, 0, 1)).is_none());
    }

    #[test]
    fn globs_ignore_case_and_match_cn_dn_sans_issuers() {
        let text = format!("[[policy]]\nname = \"p\"\nroles = [\"gateway\"]\nsubjects = [\"GW.*\"]\nsans = [\"*.example\"]\nissuers = [\"contoso issuing*\"]\n{BASE}");
        let s = set(&[("/p/a.toml", &text)]).unwrap();
        let c = cert("gw.example", Role::Gateway, 0, 1);
        let why = s.policies[0].matches(&c).unwrap();
        assert_eq!(why.len(), 4, "{why:?}");
        assert!(s.policies[0]
            .matches(&cert("www.example", Role::Gateway, 0, 1))
            .is_none());
    }

    #[test]
    fn thresholds_states_and_renewal() {
        let text = format!("[[policy]]\nname = \"p\"\nroles = [\"iis\"]\n{BASE}min_rsa_bits = 2048\nforbidden_signatures = [\"SHA1\"]\n");
        let p = &set(&[("/p/a.toml", &text)]).unwrap().policies[0];
        assert_eq!(p.thresholds(), [60 * 86_400, 30 * 86_400, 7 * 86_400, 0]);
        let day = 86_400;
        let c = cert("iis", Role::Iis, 0, 100 * day);
        assert_eq!(p.crossed(&c, 0), None);
        assert_eq!(p.state(&c, 0), State::Ok);
        assert_eq!(p.crossed(&c, 50 * day), Some(60 * day));
        assert_eq!(p.crossed(&c, 80 * day), Some(30 * day));
        assert_eq!(p.state(&c, 80 * day), State::Warn);
        assert_eq!(p.crossed(&c, 95 * day), Some(7 * day));
        assert_eq!(p.state(&c, 95 * day), State::Critical);
        assert_eq!(p.crossed(&c, 100 * day), Some(0));
        assert_eq!(p.state(&c, 100 * day), State::Expired);
        assert_eq!(p.violations(&c).len(), 2);

        let mut p = p.clone();
        p.renewal_expected = Some(Duration::days(20));
        assert_eq!(p.thresholds(), [20 * day, 7 * day, 0]);
        assert!(p.renewal_pending(&c, 79 * day));
        assert_eq!(p.crossed(&c, 79 * day), None);
        assert_eq!(p.crossed(&c, 85 * day), Some(20 * day));
        assert_eq!(p.renewal_stalled_days(&c, 85 * day), Some(5));
    }

    #[test]
    fn successors_are_newer_certificates_of_the_same_subject_and_role() {
        let old = at(cert("a", Role::Iis, 0, 10), "/iis/a.pem", true);
        let new = at(cert("a", Role::Iis, 5, 20), "/iis/a.pem", false);
        let other_role = at(cert("a", Role::Gateway, 5, 30), "/iis/a.pem", false);
        let all = [old.clone(), new.clone(), other_role];
        let s = Successors::new(&all);
        assert_eq!(s.successor(&old), Some(new.fingerprint()));
        assert_eq!(s.successor(&new), None);
    }

    /// `cert` found at `path` (index 0); `gone`: no longer there.
    fn at(mut c: Certificate, path: &str, gone: bool) -> Certificate {
        c.sources.push(certctl_store::Source {
            location: certctl_store::SourceLocation::File {
                path: path.into(),
                index: 0,
            },
            first_seen: 0,
            last_seen: 0,
            gone_since: gone.then_some(1),
        });
        c
    }

    /// Issue 14: only a renewal by the same CA key, covering the names, deployed at the old
    /// certificate's place counts; one still served is "not reloaded".
    #[test]
    fn a_renewal_must_come_from_the_same_ca_key_cover_the_names_and_be_deployed() {
        let mut old = at(cert("gw", Role::Gateway, 0, 10), "/gw/tls.pem", false);
        old.facts.authority_key_id = Some(certctl_store::KeyId(vec![1; 20]));
        let renewal = |f: &dyn Fn(&mut Certificate)| {
            let mut c = at(cert("gw", Role::Gateway, 5, 20), "/gw/tls.pem", false);
            c.facts.authority_key_id = Some(certctl_store::KeyId(vec![1; 20]));
            c.facts.fingerprint = Sha256([7; 32]);
            f(&mut c);
            c
        };
        let judge = |b: &Certificate, a: &Certificate| Successors::new([a, b]).renewal(a);

        let real = renewal(&|_| {});
        assert_eq!(
            judge(&real, &old),
            Some(Renewal::Renewed(real.fingerprint()))
        );
        // Next to the old file, same stem, other extension: still its place.
        let sibling = renewal(&|c| {
            c.sources.clear();
            *c = at(c.clone(), "/gw/tls.crt", false);
        });
        assert_eq!(
            judge(&sibling, &old),
            Some(Renewal::Renewed(sibling.fingerprint()))
        );
        // A proxy's forgery: another CA key.
        let forged =
            renewal(&|c| c.facts.authority_key_id = Some(certctl_store::KeyId(vec![9; 20])));
        assert_eq!(judge(&forged, &old), None);
        // Fewer names.
        let narrower = renewal(&|c| c.facts.sans.dns.clear());
        let mut wide = old.clone();
        wide.facts.sans.dns.push("gateway.example".into());
        assert_eq!(judge(&narrower, &wide), None);
        // Elsewhere on disk.
        let elsewhere = renewal(&|c| {
            c.sources.clear();
            *c = at(c.clone(), "/tmp/download/gw.pem", false);
        });
        assert_eq!(judge(&elsewhere, &old), None);
        // Deployed, but an endpoint still serves the old one.
        let mut served = old.clone();
        served.sources.push(certctl_store::Source {
            location: certctl_store::SourceLocation::Endpoint {
                address: "gw:443".into(),
                index: 0,
            },
            first_seen: 0,
            last_seen: 0,
            gone_since: None,
        });
        assert_eq!(
            judge(&real, &served),
            Some(Renewal::NotReloaded {
                by: real.fingerprint(),
                endpoints: vec!["tls://gw:443".into()]
            })
        );
    }

    #[test]
    fn artifact_policies_match_artifacts_only() {
        let text = format!(
            "[[policy]]\nname = \"all-other\"\nroles = [\"other\", \"gateway\"]\n{BASE}\n[[policy]]\nname = \"bundles\"\nartifacts = [\"Enrollment-Bundle\"]\n{BASE}\n[[policy]]\nname = \"site-a\"\nartifacts = [\"enrollment-bundle\"]\nsources = [\"/srv/bundles/site-a/*\"]\n{BASE}"
        );
        let s = set(&[("/p/a.toml", &text)]).unwrap();
        let names: Vec<&str> = s.policies.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["site-a", "bundles", "all-other"]);
        let mut a = TrackedArtifact {
            id: certctl_store::Sha256([1; 32]),
            kind: "enrollment-bundle".into(),
            name: "x.bundle".into(),
            path: "/srv/bundles/site-a/x.bundle".into(),
            issued: 0,
            expires: 10 * 86_400,
            expiry_from: "default".into(),
            tracked_at: 0,
            tracked_by: "me".into(),
        };
        let m = s.matching_artifact(&a);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].0.name, "site-a");
        assert_eq!(m[0].1.len(), 2, "{:?}", m[0].1);
        a.path = "/elsewhere/x.bundle".into();
        assert_eq!(s.select_artifact(&a).unwrap().name, "bundles");
        a.kind = "agent-package".into();
        assert!(s.select_artifact(&a).is_none());
        // Certificates never match an artifact policy.
        let c = cert("x", Role::Other, 0, 1);
        assert_eq!(s.matching(&c).len(), 1);
        assert_eq!(s.policies[0].crossed_at(10 * 86_400, 0), Some(30 * 86_400));
        assert_eq!(s.policies[0].state_at(10 * 86_400, 0), State::Warn);
    }

    #[test]
    fn artifact_policies_are_checked() {
        let text = format!(
            "[[policy]]\nname = \"both\"\nroles = [\"other\"]\nartifacts = [\"enrollment-bundle\"]\n{BASE}\n[[policy]]\nname = \"neither\"\n{BASE}\n[[policy]]\nname = \"keys\"\nartifacts = [\"bundle\"]\nmin_rsa_bits = 2048\n{BASE}"
        );
        let e = set(&[("/p/a.toml", &text)]).unwrap_err();
        let all: Vec<String> = e.diagnostics().iter().map(|d| d.to_string()).collect();
        assert_eq!(all.len(), 4, "{all:#?}");
        assert!(all[0].contains("sets both roles and artifacts"), "{all:#?}");
        assert!(all[1].contains("missing field `roles`"), "{all:#?}");
        assert!(
            all[2].contains("unknown artifact kind `bundle`"),
            "{all:#?}"
        );
        assert!(
            all[3].contains("min_rsa_bits is for certificates"),
            "{all:#?}"
        );
    }

    #[test]
    fn grace_is_a_duration_for_certificate_policies_only() {
        let ok =
            format!("[[policy]]\nname = \"agents\"\nroles = [\"agent\"]\ngrace = \"12h\"\n{BASE}");
        let s = set(&[("/p/a.toml", &ok)]).unwrap();
        assert_eq!(s.policies[0].grace, Some(Duration::from_secs(12 * 3600)));
        let bad = format!(
            "[[policy]]\nname = \"a\"\nroles = [\"agent\"]\ngrace = \"soon\"\n{BASE}\n[[policy]]\nname = \"b\"\nartifacts = [\"enrollment-bundle\"]\ngrace = \"1d\"\n{BASE}"
        );
        let e = set(&[("/p/a.toml", &bad)]).unwrap_err();
        let all: Vec<String> = e.diagnostics().iter().map(|d| d.to_string()).collect();
        assert_eq!(all.len(), 2, "{all:#?}");
        assert!(
            all[0].contains("policy.grace: invalid duration `soon`"),
            "{all:#?}"
        );
        assert!(all[1].contains("grace is for certificates"), "{all:#?}");
    }
}
