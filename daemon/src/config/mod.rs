//! certd's configuration file (TOML): its format, its defaults, and its error messages.
//!
//! This module owns reading the file into a typed, checked [`Config`], in two stages:
//!
//! 1. **Shape**: serde reads the TOML into raw structs that refuse unknown keys and wrong
//!    types. Values that need a semantic check keep their position (`toml::Spanned`).
//! 2. **Meaning**: every value is checked (absolute paths, cron schedules, roles, durations,
//!    `host:port` endpoints, ...) and *all* the problems found are reported together.
//!
//! Every problem is reported as `FILE:LINE:COLUMN: message` ([`Diagnostic`]), one per line,
//! the way compilers do, so editors can jump to it. The file is only read and checked here:
//! whether the paths exist is found out when they are used.
//!
//! [`EXAMPLE`] is a complete, commented configuration (`certd config example` prints it).
//!
//! What `config/` owns besides: the cron schedules ([`schedule`]) and the sections a
//! capability reads ([`sections`]: `[[webhook]]`, `[[scep]]`, `[crl]`), so capabilities
//! import their configuration and never the reverse. May import: `net`, `files`, `duration`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use certctl_store::Role;
use serde::Deserialize;
use toml::Spanned;

pub mod schedule;
pub mod sections;

use crate::config::schedule::Schedule;

/// A complete configuration with every option and a comment on each; it is valid as is.
pub const EXAMPLE: &str = r#"# certd configuration (TOML). Schedules are cron expressions evaluated in UTC:
# 5 fields "minute hour day-of-month month day-of-week" (day-of-week 0 and 7 = Sunday,
# 1-5 = Monday to Friday), or 6/7 fields with seconds first ("0 0 8 * * Mon-Fri", day
# names only), or @hourly, @daily, @weekly. "off" turns a schedule off.
# Durations are a number and a unit: 45s, 10m, 12h, 30d, 2w.

# Where certd keeps its store (sled). Must be an absolute path. The control socket
# certctl talks to is certd.sock in this folder.
store = "/var/lib/certd/store"

# Optional. Memory for the store's page cache (a number of bytes, or a size with a unit:
# KiB, MiB, GiB, or KB, MB, GB), 8MiB to 64GiB. Default "32MiB", which keeps certd
# answering queries, reminder passes and /metrics on 1,000,000 certificates in about
# 260 MB; a bigger cache makes scans of hundreds of thousands of new certificates faster
# (certctl without certd uses 1GiB).
store_cache = "32MiB"

# Optional section. Defaults: schedule = "0 */6 * * *", watch = true.
[scan]
schedule = "0 */6 * * *"   # re-scan all sources; 5-field cron (UTC) or 6/7 fields with seconds
watch = true               # also watch source folders and scan changes within seconds

# Optional section. Defaults: schedule = "*/15 * * * *", timeout = "10s".
[probe]
schedule = "*/15 * * * *"  # probe all endpoints
timeout = "10s"            # per endpoint: connect and TLS handshake
trust_store = "/etc/ssl/certs/ca-certificates.crt"   # optional; default: OpenSSL's default paths

# One [[source]] per file or folder of certificates (PEM, DER, PKCS#12); any number.
[[source]]
path = "/srv/certs/gateway"          # file or folder, absolute
role = "gateway"                     # gateway | iis | site-server | agent | ca | other (optional)
pfx_password_file = "/etc/certd/pfx-password"   # optional: password of the PKCS#12 files

[[source]]
path = "/srv/certs/iis"
role = "iis"

# One [[endpoint]] per TLS endpoint to probe; any number.
[[endpoint]]
address = "gw.contoso.example:443"   # host:port (IPv6 as [::1]:443)
sni = "gw.contoso.example"           # optional: server name sent in the handshake
role = "gateway"                     # optional
expect_issuer = "Contoso Issuing CA" # optional: a TLS-inspecting proxy shows up as a different issuer

[[endpoint]]
address = "[2001:db8::10]:8443"

# Optional section: fetch the CRLs named in inventoried certificates (http:// distribution
# points of other CAs) and mark listed certificates revoked. Off unless a schedule is set,
# because it contacts the URLs found in scanned certificates: anyone who can put a
# certificate in a scanned folder chooses them. `allow` limits the hosts contacted.
[crl]
schedule = "30 * * * *"
timeout = "10s"                # optional: one URL, redirects and answer included
deadline = "5m"                # optional: all downloads of one pass
allow = ["crl.contoso.example", "*.pki.contoso.example", "10.0.0.0/8"]
                               # optional: host names, *.domain, addresses, networks;
                               # absent: any host (URLs in certificates are contacted)
# resign_before = "3d"         # optional: re-sign managed CAs' CRLs this long before their
                               # nextUpdate (default: once half their validity has passed)

# E-mail reminders before expiry (see policies/README.md).
[smtp]
host = "smtp.contoso.example"
port = 587                     # optional; default: 25 (none), 587 (starttls), 465 (tls)
security = "starttls"          # none | starttls | tls (optional; default: starttls)
from = "certd@contoso.example"
username = "certd"             # optional; username and password_file go together
password_file = "/etc/certd/smtp-password"   # optional
# ca_file = "/etc/certd/smtp-ca.pem"   # optional; PEM CA certificate(s) trusted for the
                                       # server's certificate, besides the system's roots
timeout = "30s"                # optional; default: 30s

[reminders]
schedule = "0 8 * * 1-5"
policies = "/etc/certd/policies"   # folder of policy files

# Optional, any number: webhooks a policy can name as a recipient ("webhook:ops-teams"),
# next to e-mail addresses. The same digests, once per threshold, retried with backoff.
[[webhook]]
name = "ops-teams"
url = "https://contoso.webhook.office.com/webhookb2/..."   # http:// or https://
format = "teams"               # json (default: the digest as JSON) | teams | slack
# ca_file = "/etc/certd/webhook-ca.pem"      # optional; more CA certificates (PEM) trusted
# header_file = "/etc/certd/webhook-auth"    # optional secret file: one "Name: value" header
timeout = "10s"                # optional; the whole exchange

# Optional, any number: SCEP servers (RFC 8894: AD CS through NDES, an MDM or DLP
# enrollment service) that renew certificates whose policy says `scep = "NAME"`.
[[scep]]
name = "corp-ndes"
url = "https://ndes.contoso.example/certsrv/mscep/mscep.dll"   # http:// or https://
challenge_file = "/etc/certd/scep-challenge"   # secret file (0600): the challenge password
# SHA-256 of the CA certificate GetCACert returns (colons allowed); nothing is sent to a
# server whose CA does not match. `openssl x509 -in ca.pem -noout -fingerprint -sha256`.
ca_fingerprint = "4f:2b:13:aa:9c:0d:51:7e:88:c2:5a:19:e4:6b:03:d7:21:90:fe:4c:6a:b8:35:12:7f:e0:9d:42:c6:1b:58:a3"
# ca_file = "/etc/certd/ndes-tls-ca.pem"   # optional; more CA certificates (PEM) trusted
                                           # for an https server, besides the system's roots
# poll_interval = "30s"   # optional; first wait while the request is pending (doubles)
# poll_timeout = "1h"     # optional; the longest time polling one request

# Optional section: agent approval (certctl agents ...).
[agents]
# The deny list a gateway consumes (one SHA-256 fingerprint per line). certd rewrites it
# atomically after each scan when its content changed, and `certctl agents block|approve`
# sent through certd write it when --deny-list is not given. Absolute.
deny_list = "/srv/gateway/deny.txt"

# Optional section: secrets certd may use to finish regenerate workflows a crash
# interrupted, when it starts (without them such workflows wait for
# `certctl workflows resume ID`). Each file: the secret alone, mode 0600 or 0400, owned by
# certd's user (or root); a file others can read is refused. The same holds for every
# secret file here (smtp.password_file, pfx_password_file): `certd config check` checks them.
[workflows]
pfx_password_file = "/etc/certd/pfx-password"     # optional; password of deployed PFX files
[workflows.ca_passphrase_files]                    # optional; managed CA name = passphrase file
issuing-ca = "/etc/certd/issuing-ca.passphrase"
# Optional: a command to run after `regenerate --deploy` replaced the files of a target (a
# deployed file, or a folder holding deployed files): argv form, never a shell; killed after
# reload_timeout (default 60s); its output is logged. certctl uses these with
# --config FILE, certd for the regenerates sent to it.
[[workflows.targets]]
path = "/etc/nginx/tls"
reload = ["systemctl", "reload", "nginx"]
reload_timeout = "60s"                             # optional

# Optional section: automatic renewal of the certificates whose policy says renew = "auto"
# (see `certctl policy explain`). Each due certificate gets the same persisted regenerate
# workflow as `certctl regenerate --deploy` (the reload hooks of [[workflows.targets]]);
# encrypted CA keys need their [workflows.ca_passphrase_files] entry. Defaults as shown.
[renewal]
schedule = "0 * * * *"         # when to look for due certificates (cron, UTC; "off": never)
max_concurrent = 4             # at most this many renewals unfinished at once
retry_min = "10m"              # a failed renewal is retried after retry_min, doubling up to
retry_max = "6h"               # retry_max
# revoke_superseded_after = "7d"  # optional; revoke the old certificate (superseded) this
                                  # long after its renewal was deployed ("0s": at once)

# Optional section: Prometheus metrics over HTTP (GET /metrics). Off unless listen is set.
[metrics]
listen = "127.0.0.1:9477"      # IP:port; must be a loopback address unless allow_non_loopback
allow_non_loopback = false     # optional; metrics name every certificate and endpoint
per_agent = false              # optional; one series per agent certificate (200,000 agents!)
allowed_hosts = []             # optional; more Host names answered (e.g. a reverse proxy's):
                               # others than the listen address (and localhost:PORT on loopback)
                               # get 421 Misdirected Request (DNS rebinding)

# Optional section: retention. Expired certificates that no source holds any more are
# removed after these windows (a short summary per agent stays); revoked certificates, CA
# certificates, managed CAs' and what they issued, and certificates named by a workflow,
# an audit event or a snooze are never removed. The defaults keep a 200,000-agent site
# renewing every 6 hours at about a week of renewals (~5.6 million records).
[retention]
ephemeral_after_expiry = "7d"  # optional; ephemeral credentials (validity <= 24h)
gone_after = "90d"             # optional; every other leaf
every = "1h"                   # optional; how often certd prunes in the background
batch = 5000                   # optional; certificates removed per atomic batch
# enabled = false              # optional; prune only with `certctl store prune`

# Optional section: scheduled backups of the store (what `certctl store backup` writes),
# taken while certd runs. Off unless this section is present.
[backup]
schedule = "0 2 * * *"         # when to back up (cron, UTC)
dir = "/var/backups/certd"     # where certctl-backup-<UTC time>.tar files go; absolute
keep = 7                       # optional; the newest N are kept (default 7); older ones are
                               # removed only after a good new backup
warn_after = "2d"              # optional; `check` warns when the newest good backup is older
                               # than this
"#;

/// The scan schedule when `[scan]` does not set one: every 6 hours.
pub const DEFAULT_SCAN_SCHEDULE: &str = "0 */6 * * *";
/// The probe schedule when `[probe]` does not set one: every 15 minutes.
pub const DEFAULT_PROBE_SCHEDULE: &str = "*/15 * * * *";
/// The probe timeout when `[probe]` does not set one.
pub const DEFAULT_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// The SMTP timeout when `[smtp]` does not set one.
pub const DEFAULT_SMTP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// The value that turns a `[scan]` or `[probe]` schedule off.
pub const SCHEDULE_OFF: &str = "off";
/// The control socket's file name, in the store folder.
pub const CONTROL_SOCKET: &str = "certd.sock";
/// The store's page cache when `store_cache` is not set: 32 MiB, so a long-running certd
/// with a large store stays small (`certctl` itself uses the store's larger default, which
/// speeds up bulk scans). Measured with 1,000,000 certificates: 64 MiB costs about 60 MB
/// more at peak for a `list --expiring-within 30d` about 10% faster; the list's 41,000
/// records are spread over most of the store's pages, so no affordable cache holds them.
pub const DEFAULT_STORE_CACHE_BYTES: u64 = 32 << 20;
/// The smallest and largest `store_cache` accepted.
pub const MIN_STORE_CACHE_BYTES: u64 = 8 << 20;
/// The largest `store_cache` accepted: 64 GiB.
pub(crate) const MAX_STORE_CACHE_BYTES: u64 = 64 << 30;

/// certd's configuration, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Where certd keeps its store (a sled folder); absolute.
    pub store: PathBuf,
    /// The store's page cache in bytes (`store_cache`). Default
    /// [`DEFAULT_STORE_CACHE_BYTES`].
    pub store_cache_bytes: u64,
    /// When to scan the sources (`[scan]`).
    pub scan: ScanConfig,
    /// When and how to probe the endpoints (`[probe]`).
    pub probe: ProbeConfig,
    /// Certificate files and folders to scan (`[[source]]`), in file order.
    pub sources: Vec<SourceConfig>,
    /// TLS endpoints to probe (`[[endpoint]]`), in file order.
    pub endpoints: Vec<EndpointConfig>,
    /// The mail server for reminders (`[smtp]`).
    pub smtp: Option<SmtpConfig>,
    /// When to send reminders and by which policies (`[reminders]`).
    pub reminders: Option<RemindersConfig>,
    /// Fetching the CRLs of other CAs (`[crl]`).
    pub crl: CrlConfig,
    /// Agent approval (`[agents]`).
    pub agents: AgentsConfig,
    /// Prometheus metrics over HTTP (`[metrics]`).
    pub metrics: MetricsConfig,
    /// Secrets for resuming interrupted workflows (`[workflows]`).
    pub workflows: WorkflowsConfig,
    /// Where reminders to `webhook:NAME` recipients go (`[[webhook]]`).
    pub webhooks: Vec<crate::config::sections::WebhookConfig>,
    /// SCEP servers that renew certificates (`[[scep]]`).
    pub scep: Vec<crate::config::sections::ScepConfig>,
    /// Scheduled backups of the store (`[backup]`); `None`: none.
    pub backup: Option<BackupConfig>,
    /// Removing expired certificates that nothing holds any more (`[retention]`).
    pub retention: RetentionConfig,
    /// Automatic renewal (`[renewal]`).
    pub renewal: RenewalConfig,
}

/// The renewal schedule when `[renewal]` does not set one: hourly.
pub const DEFAULT_RENEWAL_SCHEDULE: &str = "0 * * * *";

/// `[renewal]`: how certd renews the certificates whose policy says `renew = "auto"`
/// (`crate::pki::renewal`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenewalConfig {
    /// When a renewal pass runs; `None` when `"off"`. Default hourly.
    pub schedule: Option<Schedule>,
    /// At most this many automatic renewals unfinished at once (`max_concurrent`, default 4).
    pub max_concurrent: usize,
    /// The first retry of a failed renewal after this long (`retry_min`, default 10m),
    /// doubling with each failure up to `retry_max` (default 6h).
    pub retry_min: std::time::Duration,
    /// The longest wait between retries of a failed renewal (`retry_max`, default 6h).
    pub retry_max: std::time::Duration,
    /// Revoke the old certificate (`superseded`) this long after its renewal finished;
    /// `None` (the default): never.
    pub revoke_superseded_after: Option<std::time::Duration>,
}

impl Default for RenewalConfig {
    fn default() -> Self {
        RenewalConfig {
            schedule: DEFAULT_RENEWAL_SCHEDULE.parse().ok(),
            max_concurrent: 4,
            retry_min: std::time::Duration::from_secs(600),
            retry_max: std::time::Duration::from_secs(6 * 3600),
            revoke_superseded_after: None,
        }
    }
}

/// `[backup]`: scheduled backups of the store ([`crate::backup`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupConfig {
    /// When to back up.
    pub schedule: Schedule,
    /// The folder of the backup files; absolute.
    pub dir: PathBuf,
    /// How many backups to keep (the newest); at least 1. Default 7.
    pub keep: usize,
    /// `check` warns when the newest good backup is older than this; `None`: never.
    pub warn_after: Option<std::time::Duration>,
}

/// `[retention]`: how long expired certificates that no source holds any more are kept,
/// and how often certd removes those past their time (see `certctl_store::RetentionPolicy`
/// for what is never removed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionConfig {
    /// Whether certd prunes in the background (`enabled`, default `true`).
    pub enabled: bool,
    /// The windows (`ephemeral_after_expiry`, default 7d; `gone_after`, default 90d).
    pub policy: certctl_store::RetentionPolicy,
    /// How often certd runs a prune pass (`every`, default 1h).
    pub every: std::time::Duration,
    /// Certificates removed per atomic batch (`batch`, default 5000); certd releases its
    /// writer lock between batches.
    pub batch: usize,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            enabled: true,
            policy: certctl_store::RetentionPolicy::default(),
            every: std::time::Duration::from_secs(3600),
            batch: crate::retention::DEFAULT_BATCH,
        }
    }
}

/// `[workflows]`: files holding the secrets certd may use to finish interrupted regenerate
/// workflows at start-up (certd never stores secrets; without these files such workflows
/// wait for `certctl workflows resume ID`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkflowsConfig {
    /// Per managed CA (by name): the file holding its key's passphrase; absolute.
    pub ca_passphrase_files: BTreeMap<String, PathBuf>,
    /// The file holding the password of the PKCS#12 files workflows deploy to; absolute.
    pub pfx_password_file: Option<PathBuf>,
    /// Deploy targets with a reload command (`[[workflows.targets]]`).
    pub targets: Vec<certctl_store::ReloadHook>,
}

/// `[agents]`: agent approval.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentsConfig {
    /// The deny list certd keeps current (rewritten after scans when it changed, and used
    /// by `certctl agents approve|block` through certd without `--deny-list`); absolute.
    pub deny_list: Option<PathBuf>,
}

/// `[metrics]`: Prometheus metrics served over HTTP. Off by default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetricsConfig {
    /// The address to serve `GET /metrics` on; `None` (the default): no HTTP listener.
    /// A loopback address unless `allow_non_loopback`.
    pub listen: Option<SocketAddr>,
    /// Whether `listen` may be a non-loopback address. Default `false`.
    pub allow_non_loopback: bool,
    /// One series per agent certificate (else agents are aggregated). Default `false`.
    pub per_agent: bool,
    /// Host names (or IP addresses), lowercase and without port, answered besides the
    /// listen address (and `localhost:PORT` on loopback); requests for any other `Host` get
    /// 421 (`crate::server::metrics_http::AllowedHosts`). Default: none.
    pub allowed_hosts: Vec<String>,
}

/// `[crl]`: fetching the CRLs named in inventoried certificates' CRL distribution points
/// (other CAs' revocations). Off unless a schedule is given: it contacts the URLs found in
/// certificates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrlConfig {
    /// When to fetch; `None` (the default) when absent or `"off"`.
    pub schedule: Option<Schedule>,
    /// How long one download may take. Default [`DEFAULT_PROBE_TIMEOUT`].
    pub timeout: std::time::Duration,
    /// How long a pass's downloads may take together. Default
    /// [`crate::config::sections::DEFAULT_PASS_DEADLINE_SECS`].
    pub deadline: std::time::Duration,
    /// The hosts and networks CRLs may be fetched from; `None` (the default): any, so the
    /// URLs found in scanned certificates are contacted.
    pub allow: Option<crate::net::url::AllowList>,
    /// How long before its nextUpdate certd re-signs a managed CA's CRL; `None` (the
    /// default): once half of the CRL's validity has passed.
    pub resign_before: Option<std::time::Duration>,
}

impl Default for CrlConfig {
    fn default() -> Self {
        CrlConfig {
            schedule: None,
            timeout: DEFAULT_PROBE_TIMEOUT,
            deadline: std::time::Duration::from_secs(
                crate::config::sections::DEFAULT_PASS_DEADLINE_SECS,
            ),
            allow: None,
            resign_before: None,
        }
    }
}

impl Config {
    /// The Unix socket certd listens on for certctl: `certd.sock` in the store folder.
    pub fn control_socket(&self) -> PathBuf {
        self.store.join(CONTROL_SOCKET)
    }

    /// Every secret file the configuration names, with its key (`smtp.password_file`,
    /// `source.pfx_password_file`, `workflows.pfx_password_file`,
    /// `workflows.ca_passphrase_files.NAME`), in file order.
    pub fn secret_files(&self) -> Vec<(String, &Path)> {
        let mut out: Vec<(String, &Path)> = Vec::new();
        for s in &self.sources {
            if let Some(f) = &s.pfx_password_file {
                out.push(("source.pfx_password_file".into(), f));
            }
        }
        if let Some(f) = self.smtp.as_ref().and_then(|s| s.password_file.as_deref()) {
            out.push(("smtp.password_file".into(), f));
        }
        if let Some(f) = &self.workflows.pfx_password_file {
            out.push(("workflows.pfx_password_file".into(), f));
        }
        for (ca, f) in &self.workflows.ca_passphrase_files {
            out.push((format!("workflows.ca_passphrase_files.{ca}"), f));
        }
        for w in &self.webhooks {
            if let Some(f) = &w.header_file {
                out.push((format!("webhook.{}.header_file", w.name), f));
            }
        }
        for s in &self.scep {
            out.push((format!("scep.{}.challenge_file", s.name), &s.challenge_file));
        }
        out
    }

    /// The secret files that must not be used (see `crate::files::read::check_private_file`), each
    /// as `key: FILE: why`; and those that do not exist (yet), each as `key: FILE`.
    pub fn secret_file_problems(&self) -> (Vec<String>, Vec<String>) {
        let mut bad = Vec::new();
        let mut missing = Vec::new();
        for (key, f) in self.secret_files() {
            if std::fs::symlink_metadata(f).is_err() {
                missing.push(format!("{key}: {}", f.display()));
            } else if let Err(e) = crate::files::read::check_private_file(f) {
                bad.push(format!("{key}: {e}"));
            }
        }
        (bad, missing)
    }
}

/// How long one webhook POST may take by default (connect, TLS, request and answer).
pub const DEFAULT_WEBHOOK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// `[scan]`: scanning the sources.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanConfig {
    /// When to re-scan every source; `None` when set to `"off"`. Default
    /// [`DEFAULT_SCAN_SCHEDULE`].
    pub schedule: Option<Schedule>,
    /// Also watch the source folders and scan what changes within seconds. Default `true`.
    pub watch: bool,
}

impl Default for ScanConfig {
    fn default() -> Self {
        ScanConfig {
            schedule: DEFAULT_SCAN_SCHEDULE.parse().ok(),
            watch: true,
        }
    }
}

/// `[probe]`: probing the endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeConfig {
    /// When to probe every endpoint; `None` when set to `"off"`. Default
    /// [`DEFAULT_PROBE_SCHEDULE`].
    pub schedule: Option<Schedule>,
    /// How long one endpoint may take (connect and handshake). Default
    /// [`DEFAULT_PROBE_TIMEOUT`]; never zero.
    pub timeout: std::time::Duration,
    /// CA certificates (a PEM file) that served chains are verified against; `None` for
    /// OpenSSL's default paths. Absolute.
    pub trust_store: Option<PathBuf>,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            schedule: DEFAULT_PROBE_SCHEDULE.parse().ok(),
            timeout: DEFAULT_PROBE_TIMEOUT,
            trust_store: None,
        }
    }
}

/// `[[source]]`: one certificate file or folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceConfig {
    /// The file or folder; absolute.
    pub path: PathBuf,
    /// Role given to the leaf certificates found there (CA certificates are always `ca`).
    pub role: Option<Role>,
    /// A file holding the password of the PKCS#12 files found there; absolute.
    pub pfx_password_file: Option<PathBuf>,
}

/// `[[endpoint]]`: one TLS endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointConfig {
    /// `host:port` as written (`[::1]:443` for IPv6).
    pub address: String,
    /// The host part: a name or an IP address, IPv6 without its brackets.
    pub host: String,
    /// The port part; never 0.
    pub port: u16,
    /// The server name to send in the handshake (SNI), if set. Never an IP address.
    pub sni: Option<String>,
    /// Role given to the certificates this endpoint serves.
    pub role: Option<Role>,
    /// The issuer (a common name or a full DN) the endpoint's leaf should have; a different
    /// one is reported (a TLS-inspecting proxy shows up that way).
    pub expect_issuer: Option<String>,
}

/// How the connection to the mail server is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SmtpSecurity {
    /// Plain text (`none`), port 25 by default.
    None,
    /// Plain text upgraded with STARTTLS (`starttls`), port 587 by default. The default.
    StartTls,
    /// TLS from the first byte (`tls`), port 465 by default.
    Tls,
}

impl SmtpSecurity {
    /// The name used in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            SmtpSecurity::None => "none",
            SmtpSecurity::StartTls => "starttls",
            SmtpSecurity::Tls => "tls",
        }
    }

    /// The usual port for this kind of connection.
    pub fn default_port(self) -> u16 {
        match self {
            SmtpSecurity::None => 25,
            SmtpSecurity::StartTls => 587,
            SmtpSecurity::Tls => 465,
        }
    }
}

impl fmt::Display for SmtpSecurity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SmtpSecurity {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            SmtpSecurity::None,
            SmtpSecurity::StartTls,
            SmtpSecurity::Tls,
        ]
        .into_iter()
        .find(|v| v.as_str().eq_ignore_ascii_case(s))
        .ok_or_else(|| format!("unknown security `{s}` (expected one of: none, starttls, tls)"))
    }
}

/// `[smtp]`: the mail server reminders are sent through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmtpConfig {
    /// The server's host name or IP address.
    pub host: String,
    /// Its port; default [`SmtpSecurity::default_port`].
    pub port: u16,
    /// How the connection is secured; default [`SmtpSecurity::StartTls`].
    pub security: SmtpSecurity,
    /// The sender address (`certd@example.org` or `certd <certd@example.org>`).
    pub from: String,
    /// The user to log in as; set together with `password_file`.
    pub username: Option<String>,
    /// A file holding the password; absolute; set together with `username`.
    pub password_file: Option<PathBuf>,
    /// A PEM file of CA certificates trusted for the server's certificate (STARTTLS or TLS)
    /// besides the system's roots; absolute. Read at each session (see `crate::mail::tls`).
    pub ca_file: Option<PathBuf>,
    /// How long talking to the server may take. Default [`DEFAULT_SMTP_TIMEOUT`]; never zero.
    pub timeout: std::time::Duration,
}

/// `[reminders]`: when to send reminders, by which policies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemindersConfig {
    /// When to send them.
    pub schedule: Schedule,
    /// The folder of policy files; absolute.
    pub policies: PathBuf,
}

/// One problem in a configuration file, at a place in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file, as given to [`load`] or [`parse`].
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong and, where it helps, what is expected (one sentence, no location).
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// A configuration that could not be read or is not valid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read the configuration: {source}", path.display())]
    Read {
        /// The configuration file given (`--config`).
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Not TOML, or not the expected shape (an unknown key, a wrong type, a missing key).
    #[error("{0}")]
    Syntax(Diagnostic),
    /// Values that do not make sense: all of them, in file order, one per line.
    #[error("{}", lines(.0))]
    Invalid(Vec<Diagnostic>),
}

impl ConfigError {
    /// The problems found in the file (none for [`ConfigError::Read`]).
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Syntax(d) => std::slice::from_ref(d),
            ConfigError::Invalid(all) => all,
        }
    }
}

fn lines(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(Diagnostic::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads and checks the configuration file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// [`load`] for a client that already has its store (`certctl --store S --config FILE`):
/// the file's `store` is not needed, and `store` wins over it.
pub fn load_for_store(path: &Path, store: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut raw = parse_raw(&text, path)?;
    if raw.store.is_none() {
        let absolute = std::path::absolute(store).unwrap_or_else(|_| store.to_path_buf());
        raw.store = Some(Spanned::new(0..0, absolute.display().to_string()));
    }
    let mut config = check(raw, &text, path)?;
    config.store = store.to_path_buf();
    Ok(config)
}

/// Checks the configuration `text`; `origin` names the file in error messages.
pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
    check(parse_raw(text, origin)?, text, origin)
}

fn parse_raw(text: &str, origin: &Path) -> Result<RawConfig, ConfigError> {
    match deserialize_all(text, origin) {
        (Some(raw), shape) if shape.is_empty() => Ok(raw),
        (raw, mut shape) => {
            // Report the values of what could be read too, so one run shows every problem.
            if let Some(raw) = raw {
                if let Err(ConfigError::Invalid(more)) = check(raw, text, origin) {
                    shape.extend(more);
                }
            }
            if shape.len() == 1 {
                Err(ConfigError::Syntax(shape.remove(0)))
            } else {
                shape.sort_by_key(|d| (d.line, d.column));
                Err(ConfigError::Invalid(shape))
            }
        }
    }
}

/// At most this many shape errors of one file are reported.
const MAX_SHAPE_ERRORS: usize = 50;

/// Deserializes `text`, reporting every shape error rather than the first: after an error
/// whose place is clear (an unknown or mistyped `key = value` on one line, or a table
/// whose header is wrong or which lacks a key), that entry or table is blanked out and the
/// rest parsed again. Returns what the rest gave (`None` when it could not be read) and
/// the errors, each at its place in the original text. A TOML syntax error stops there:
/// what follows it cannot be trusted.
pub(crate) fn deserialize_all<T: serde::de::DeserializeOwned>(
    text: &str,
    origin: &Path,
) -> (Option<T>, Vec<Diagnostic>) {
    let mut working = text.to_string();
    let mut problems: Vec<Diagnostic> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    while problems.len() < MAX_SHAPE_ERRORS {
        let e = match toml::from_str::<T>(&working) {
            Ok(value) => {
                problems.sort_by_key(|d| (d.line, d.column));
                return (Some(value), problems);
            }
            Err(e) => e,
        };
        let offset = e.span().map_or(0, |s| s.start);
        problems.push(diagnostic(
            text,
            origin,
            offset,
            e.message().trim().to_string(),
        ));
        let is_syntax = toml::from_str::<toml::Table>(&working).is_err();
        if is_syntax
            || e.span().is_none()
            || !seen.insert(offset)
            || !blank_entry(&mut working, offset)
        {
            break;
        }
    }
    problems.sort_by_key(|d| (d.line, d.column));
    (None, problems)
}

/// Replaces with spaces the entry of `text` at byte `offset`: a whole table (its header
/// line up to the next header) when the offset is on a header line, else the one
/// `key = value` line if its value is complete on that line. False when neither applies.
fn blank_entry(text: &mut String, offset: usize) -> bool {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let line = &text[line_start..line_end];
    let trimmed = line.trim_start();
    let end = if trimmed.starts_with('[') {
        // The table: up to the next header line.
        let mut end = text.len();
        let mut pos = line_end;
        while pos < text.len() {
            let next_end = text[pos + 1..]
                .find('\n')
                .map_or(text.len(), |i| pos + 1 + i);
            if text[pos + 1..next_end].trim_start().starts_with('[') {
                end = pos + 1;
                break;
            }
            pos = next_end;
        }
        end
    } else {
        let balanced = line.matches('[').count() == line.matches(']').count()
            && line.matches('{').count() == line.matches('}').count()
            && !line.contains("\"\"\"")
            && !line.contains("'''")
            && line.contains('=');
        if !balanced {
            return false;
        }
        line_end
    };
    // As many bytes as were there, so the offsets of what follows stay valid.
    let blank: String = text[line_start..end]
        .chars()
        .map(|c| match c {
            '\n' => "\n".to_string(),
            c => " ".repeat(c.len_utf8()),
        })
        .collect();
    text.replace_range(line_start..end, &blank);
    true
}

fn check(raw: RawConfig, text: &str, origin: &Path) -> Result<Config, ConfigError> {
    let mut checker = Checker {
        text,
        origin,
        problems: Vec::new(),
    };
    let config = checker.config(raw);
    if checker.problems.is_empty() {
        Ok(config)
    } else {
        let mut problems = checker.problems;
        problems.sort_by_key(|d| (d.line, d.column));
        Err(ConfigError::Invalid(problems))
    }
}

/// The diagnostic for the byte `offset` of `text` (line and column counted in characters).
/// Shared with the policy files, which report their errors the same way.
pub(crate) fn diagnostic(text: &str, origin: &Path, offset: usize, message: String) -> Diagnostic {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Diagnostic {
        file: origin.to_path_buf(),
        line: before.matches('\n').count() + 1,
        column: before[line_start..].chars().count() + 1,
        message,
    }
}

// Stage 1: the shape of the file.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    store: Option<Spanned<String>>,
    store_cache: Option<Spanned<RawSize>>,
    scan: Option<RawScan>,
    probe: Option<RawProbe>,
    crl: Option<RawCrl>,
    #[serde(default)]
    source: Vec<RawSource>,
    #[serde(default)]
    endpoint: Vec<RawEndpoint>,
    smtp: Option<RawSmtp>,
    reminders: Option<RawReminders>,
    agents: Option<RawAgents>,
    metrics: Option<RawMetrics>,
    workflows: Option<RawWorkflows>,
    #[serde(default)]
    webhook: Vec<RawWebhook>,
    #[serde(default)]
    scep: Vec<RawScep>,
    backup: Option<RawBackup>,
    retention: Option<RawRetention>,
    renewal: Option<RawRenewal>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRenewal {
    schedule: Option<Spanned<String>>,
    max_concurrent: Option<Spanned<i64>>,
    retry_min: Option<Spanned<String>>,
    retry_max: Option<Spanned<String>>,
    revoke_superseded_after: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    name: Spanned<String>,
    url: Spanned<String>,
    format: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    header_file: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScep {
    name: Spanned<String>,
    url: Spanned<String>,
    challenge_file: Spanned<String>,
    ca_fingerprint: Spanned<String>,
    ca_file: Option<Spanned<String>>,
    poll_interval: Option<Spanned<String>>,
    poll_timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackup {
    schedule: Spanned<String>,
    dir: Spanned<String>,
    keep: Option<Spanned<i64>>,
    warn_after: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    enabled: Option<bool>,
    ephemeral_after_expiry: Option<Spanned<String>>,
    gone_after: Option<Spanned<String>>,
    every: Option<Spanned<String>>,
    batch: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkflows {
    #[serde(default)]
    ca_passphrase_files: BTreeMap<String, Spanned<String>>,
    pfx_password_file: Option<Spanned<String>>,
    #[serde(default)]
    targets: Vec<RawTarget>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    path: Spanned<String>,
    reload: Spanned<Vec<String>>,
    reload_timeout: Option<Spanned<String>>,
}

/// A size: a number of bytes, or a string with a unit (`"128MiB"`).
#[derive(Deserialize)]
#[serde(untagged)]
enum RawSize {
    Bytes(i64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgents {
    deny_list: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<Spanned<String>>,
    allow_non_loopback: Option<bool>,
    per_agent: Option<bool>,
    allowed_hosts: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScan {
    schedule: Option<Spanned<String>>,
    watch: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProbe {
    schedule: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    trust_store: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCrl {
    schedule: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    deadline: Option<Spanned<String>>,
    allow: Option<Vec<Spanned<String>>>,
    resign_before: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    path: Spanned<String>,
    role: Option<Spanned<String>>,
    pfx_password_file: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    address: Spanned<String>,
    sni: Option<Spanned<String>>,
    role: Option<Spanned<String>>,
    expect_issuer: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSmtp {
    host: Spanned<String>,
    port: Option<Spanned<i64>>,
    security: Option<Spanned<String>>,
    from: Spanned<String>,
    username: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReminders {
    schedule: Spanned<String>,
    policies: Spanned<String>,
}

// Stage 2: the meaning of the values. Each check reports its problems and returns what it
// could make of the value; the result is only used when no problem was reported.

struct Checker<'a> {
    text: &'a str,
    origin: &'a Path,
    problems: Vec<Diagnostic>,
}

impl Checker<'_> {
    fn report(&mut self, span: Range<usize>, message: String) {
        self.problems
            .push(diagnostic(self.text, self.origin, span.start, message));
    }

    fn config(&mut self, raw: RawConfig) -> Config {
        let store = self.store_path(raw.store.as_ref());
        let store_cache_bytes = match &raw.store_cache {
            Some(size) => self.store_cache(size),
            None => DEFAULT_STORE_CACHE_BYTES,
        };
        let scan = self.scan_config(raw.scan.as_ref());
        let probe = self.probe_config(raw.probe.as_ref());
        let crl = self.crl_config(raw.crl.as_ref());
        let sources = raw.source.iter().map(|s| self.source(s)).collect();
        self.duplicate_sources(&raw.source);
        let endpoints = raw.endpoint.iter().map(|e| self.endpoint(e)).collect();
        self.duplicate_endpoints(&raw.endpoint);
        let smtp = raw.smtp.as_ref().map(|s| self.smtp(s));
        let reminders = raw.reminders.as_ref().and_then(|r| self.reminders(r));
        let agents = AgentsConfig {
            deny_list: raw
                .agents
                .as_ref()
                .and_then(|a| a.deny_list.as_ref())
                .map(|p| self.path("agents.deny_list", p)),
        };
        let metrics = raw
            .metrics
            .as_ref()
            .map(|m| self.metrics(m))
            .unwrap_or_default();
        let workflows = self.workflows_config(raw.workflows.as_ref());
        let webhooks = self.webhooks(&raw.webhook);
        let scep = self.scep(&raw.scep);
        let backup = raw.backup.as_ref().and_then(|b| self.backup(b));
        let retention = raw
            .retention
            .as_ref()
            .map(|r| self.retention(r))
            .unwrap_or_default();
        let renewal = raw
            .renewal
            .as_ref()
            .map(|r| self.renewal(r))
            .unwrap_or_default();
        Config {
            backup,
            store,
            store_cache_bytes,
            scan,
            probe,
            sources,
            endpoints,
            smtp,
            reminders,
            crl,
            agents,
            metrics,
            workflows,
            webhooks,
            scep,
            retention,
            renewal,
        }
    }

    /// `store`: required, an absolute path.
    fn store_path(&mut self, raw: Option<&Spanned<String>>) -> PathBuf {
        match raw {
            Some(store) => self.path("store", store),
            None => {
                self.report(
                    0..0,
                    "`store` is missing: set it to the absolute path of certd's store folder \
                     (e.g. store = \"/var/lib/certd/store\")"
                        .into(),
                );
                PathBuf::new()
            }
        }
    }

    /// `[scan]`: the schedule (default daily) and whether to watch the folders.
    fn scan_config(&mut self, raw: Option<&RawScan>) -> ScanConfig {
        match raw {
            Some(scan) => ScanConfig {
                schedule: match &scan.schedule {
                    Some(s) => self.optional_schedule("scan.schedule", s),
                    None => ScanConfig::default().schedule,
                },
                watch: scan.watch.unwrap_or(true),
            },
            None => ScanConfig::default(),
        }
    }

    /// `[probe]`: the schedule, the timeout and the trust store.
    fn probe_config(&mut self, raw: Option<&RawProbe>) -> ProbeConfig {
        match raw {
            Some(probe) => ProbeConfig {
                schedule: match &probe.schedule {
                    Some(s) => self.optional_schedule("probe.schedule", s),
                    None => ProbeConfig::default().schedule,
                },
                timeout: match &probe.timeout {
                    Some(t) => self.duration("probe.timeout", t),
                    None => DEFAULT_PROBE_TIMEOUT,
                },
                trust_store: probe
                    .trust_store
                    .as_ref()
                    .map(|p| self.path("probe.trust_store", p)),
            },
            None => ProbeConfig::default(),
        }
    }

    /// `[crl]`: the fetch schedule, timeout, deadline and allow list, and when to re-sign.
    fn crl_config(&mut self, raw: Option<&RawCrl>) -> CrlConfig {
        CrlConfig {
            schedule: raw
                .and_then(|c| c.schedule.as_ref())
                .and_then(|s| self.optional_schedule("crl.schedule", s)),
            timeout: match raw.and_then(|c| c.timeout.as_ref()) {
                Some(t) => self.duration("crl.timeout", t),
                None => DEFAULT_PROBE_TIMEOUT,
            },
            deadline: match raw.and_then(|c| c.deadline.as_ref()) {
                Some(t) => self.duration("crl.deadline", t),
                None => CrlConfig::default().deadline,
            },
            allow: raw
                .and_then(|c| c.allow.as_ref())
                .map(|entries| self.crl_allow(entries)),
            resign_before: raw
                .and_then(|c| c.resign_before.as_ref())
                .map(|t| self.duration("crl.resign_before", t)),
        }
    }

    /// `[workflows]`: the CA passphrase files, the PFX password file and the targets.
    fn workflows_config(&mut self, raw: Option<&RawWorkflows>) -> WorkflowsConfig {
        match raw {
            Some(w) => WorkflowsConfig {
                ca_passphrase_files: w
                    .ca_passphrase_files
                    .iter()
                    .map(|(ca, file)| {
                        let key = format!("workflows.ca_passphrase_files.{ca}");
                        (ca.clone(), self.path(&key, file))
                    })
                    .collect(),
                pfx_password_file: w
                    .pfx_password_file
                    .as_ref()
                    .map(|p| self.path("workflows.pfx_password_file", p)),
                targets: w.targets.iter().map(|t| self.target(t)).collect(),
            },
            None => WorkflowsConfig::default(),
        }
    }

    fn renewal(&mut self, raw: &RawRenewal) -> RenewalConfig {
        let defaults = RenewalConfig::default();
        let schedule = match &raw.schedule {
            Some(s) => self.optional_schedule("renewal.schedule", s),
            None => defaults.schedule,
        };
        let max_concurrent = match &raw.max_concurrent {
            Some(n) if (1..=1000).contains(n.get_ref()) => *n.get_ref() as usize,
            Some(n) => {
                self.report(
                    n.span(),
                    format!(
                        "renewal.max_concurrent = {}: renew at least 1 certificate at once (and at most 1000)",
                        n.get_ref()
                    ),
                );
                1
            }
            None => defaults.max_concurrent,
        };
        let retry_min = match &raw.retry_min {
            Some(t) => self.duration("renewal.retry_min", t),
            None => defaults.retry_min,
        };
        let retry_max = match &raw.retry_max {
            Some(t) => self.duration("renewal.retry_max", t),
            None => defaults.retry_max,
        };
        if retry_max < retry_min {
            if let Some(t) = raw.retry_max.as_ref().or(raw.retry_min.as_ref()) {
                self.report(
                    t.span(),
                    "renewal.retry_max is shorter than renewal.retry_min".into(),
                );
            }
        }
        let revoke_superseded_after = raw.revoke_superseded_after.as_ref().and_then(|t| {
            match t.get_ref().parse::<crate::Duration>() {
                Ok(d) => Some(std::time::Duration::from_secs(d.as_secs().unsigned_abs())),
                Err(e) => {
                    self.report(t.span(), format!("renewal.revoke_superseded_after: {e}"));
                    None
                }
            }
        });
        RenewalConfig {
            schedule,
            max_concurrent,
            retry_min,
            retry_max,
            revoke_superseded_after,
        }
    }

    /// `[[scep]]` tables: unique names, an http(s) URL, a SHA-256 fingerprint.
    fn scep(&mut self, raw: &[RawScep]) -> Vec<crate::config::sections::ScepConfig> {
        use crate::config::sections::{
            parse_fingerprint, ScepConfig, DEFAULT_POLL_INTERVAL, DEFAULT_POLL_TIMEOUT,
        };
        let mut out: Vec<ScepConfig> = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        for s in raw {
            let name = s.name.get_ref().clone();
            if !crate::config::sections::valid_name(&name) {
                self.report(
                    s.name.span(),
                    format!(
                        "scep.name `{name}`: use letters, digits, `.`, `_` and `-` (at most 64)"
                    ),
                );
            } else if names.contains(&name.as_str()) {
                self.report(s.name.span(), format!("scep `{name}` is defined twice"));
            }
            names.push(s.name.get_ref());
            let url = match url::Url::parse(s.url.get_ref()) {
                Ok(u) if matches!(u.scheme(), "https" | "http") && u.host_str().is_some() => {
                    Some(u)
                }
                Ok(_) => {
                    self.report(
                        s.url.span(),
                        format!(
                            "scep.url: `{}` is not an http:// or https:// URL with a host",
                            s.url.get_ref()
                        ),
                    );
                    None
                }
                Err(e) => {
                    self.report(s.url.span(), format!("scep.url: {e}"));
                    None
                }
            };
            let fingerprint = parse_fingerprint(s.ca_fingerprint.get_ref());
            if fingerprint.is_none() {
                self.report(
                    s.ca_fingerprint.span(),
                    "scep.ca_fingerprint: expected the CA certificate's SHA-256 as 64 hex digits (colons allowed)".into(),
                );
            }
            let challenge_file = self.path("scep.challenge_file", &s.challenge_file);
            let ca_file = s.ca_file.as_ref().map(|p| self.path("scep.ca_file", p));
            let poll_interval = match &s.poll_interval {
                Some(t) => self.duration("scep.poll_interval", t),
                None => DEFAULT_POLL_INTERVAL,
            };
            let poll_timeout = match &s.poll_timeout {
                Some(t) => self.duration("scep.poll_timeout", t),
                None => DEFAULT_POLL_TIMEOUT,
            };
            if let (Some(url), Some(ca_fingerprint)) = (url, fingerprint) {
                out.push(ScepConfig {
                    name,
                    url,
                    challenge_file,
                    ca_fingerprint,
                    ca_file,
                    poll_interval,
                    poll_timeout,
                });
            }
        }
        out
    }

    fn retention(&mut self, raw: &RawRetention) -> RetentionConfig {
        let defaults = RetentionConfig::default();
        let secs = |d: std::time::Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        let mut policy = defaults.policy;
        if let Some(t) = &raw.ephemeral_after_expiry {
            policy.ephemeral_after_expiry =
                secs(self.duration("retention.ephemeral_after_expiry", t));
        }
        if let Some(t) = &raw.gone_after {
            policy.gone_after = secs(self.duration("retention.gone_after", t));
        }
        let batch = match &raw.batch {
            Some(n) if (1..=1_000_000).contains(n.get_ref()) => {
                usize::try_from(*n.get_ref()).unwrap_or(defaults.batch)
            }
            Some(n) => {
                self.report(
                    n.span(),
                    format!(
                        "retention.batch must be between 1 and 1000000, got {}",
                        n.get_ref()
                    ),
                );
                defaults.batch
            }
            None => defaults.batch,
        };
        RetentionConfig {
            enabled: raw.enabled.unwrap_or(true),
            policy,
            every: match &raw.every {
                Some(t) => self.duration("retention.every", t),
                None => defaults.every,
            },
            batch,
        }
    }

    /// `[[webhook]]` tables: unique names, an http(s) URL, a known format.
    fn webhooks(&mut self, raw: &[RawWebhook]) -> Vec<crate::config::sections::WebhookConfig> {
        use crate::config::sections::{valid_name, Format, WebhookConfig};
        let mut out: Vec<WebhookConfig> = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        for w in raw {
            let name = w.name.get_ref().clone();
            if !valid_name(&name) {
                self.report(
                    w.name.span(),
                    format!(
                        "webhook.name `{name}`: use letters, digits, `.`, `_` and `-` (at most 64)"
                    ),
                );
            } else if names.contains(&name.as_str()) {
                self.report(w.name.span(), format!("webhook `{name}` is defined twice"));
            }
            names.push(w.name.get_ref());
            let url = match url::Url::parse(w.url.get_ref()) {
                Ok(u) if matches!(u.scheme(), "https" | "http") && u.host_str().is_some() => u,
                Ok(u) => {
                    self.report(
                        w.url.span(),
                        format!(
                            "webhook.url: `{}` is not an http:// or https:// URL with a host",
                            u.scheme()
                        ),
                    );
                    continue;
                }
                Err(e) => {
                    self.report(w.url.span(), format!("webhook.url: {e}"));
                    continue;
                }
            };
            let format = match &w.format {
                Some(f) => match Format::parse(f.get_ref()) {
                    Some(f) => f,
                    None => {
                        self.report(
                            f.span(),
                            format!(
                                "webhook.format `{}`: expected json, teams or slack",
                                f.get_ref()
                            ),
                        );
                        Format::Json
                    }
                },
                None => Format::Json,
            };
            out.push(WebhookConfig {
                name,
                url,
                format,
                ca_file: w.ca_file.as_ref().map(|p| self.path("webhook.ca_file", p)),
                timeout: match &w.timeout {
                    Some(t) => self.duration("webhook.timeout", t),
                    None => DEFAULT_WEBHOOK_TIMEOUT,
                },
                header_file: w
                    .header_file
                    .as_ref()
                    .map(|p| self.path("webhook.header_file", p)),
            });
        }
        out
    }

    fn store_cache(&mut self, raw: &Spanned<RawSize>) -> u64 {
        let bytes = match raw.get_ref() {
            RawSize::Bytes(n) => u64::try_from(*n).map_err(|_| format!("{n} is negative")),
            RawSize::Text(text) => parse_size(text),
        };
        match bytes {
            Ok(n) if (MIN_STORE_CACHE_BYTES..=MAX_STORE_CACHE_BYTES).contains(&n) => n,
            Ok(n) => {
                self.report(
                    raw.span(),
                    format!(
                        "store_cache must be between 8MiB and 64GiB, got {n} bytes ({} MiB)",
                        n >> 20
                    ),
                );
                DEFAULT_STORE_CACHE_BYTES
            }
            Err(e) => {
                self.report(raw.span(), format!("store_cache: {e}"));
                DEFAULT_STORE_CACHE_BYTES
            }
        }
    }

    /// `[crl] allow`: each entry checked where it is written.
    fn crl_allow(&mut self, entries: &[Spanned<String>]) -> crate::net::url::AllowList {
        let mut good = Vec::new();
        for entry in entries {
            match crate::net::url::AllowList::parse(&[entry.get_ref()]) {
                Ok(_) => good.push(entry.get_ref().clone()),
                Err(e) => self.report(entry.span(), format!("crl.allow: {e}")),
            }
        }
        crate::net::url::AllowList::parse(&good).unwrap_or_default()
    }

    fn metrics(&mut self, raw: &RawMetrics) -> MetricsConfig {
        let allow_non_loopback = raw.allow_non_loopback.unwrap_or(false);
        let listen = raw.listen.as_ref().and_then(|l| {
            let text = l.get_ref().trim();
            let addr = match text.parse::<SocketAddr>() {
                Ok(addr) => addr,
                Err(_) => {
                    self.report(
                        l.span(),
                        format!(
                            "metrics.listen `{text}` is not an IP address and port (write \
                             e.g. `127.0.0.1:9477` or `[::1]:9477`)"
                        ),
                    );
                    return None;
                }
            };
            if addr.port() == 0 {
                self.report(
                    l.span(),
                    format!("metrics.listen `{text}` needs a port (1 to 65535)"),
                );
                return None;
            }
            if !allow_non_loopback && !addr.ip().to_canonical().is_loopback() {
                self.report(
                    l.span(),
                    format!(
                        "metrics.listen `{text}` is not a loopback address: the metrics name \
                         every certificate and endpoint, so they are served on 127.0.0.1 or \
                         [::1] only unless `allow_non_loopback = true` is set"
                    ),
                );
                return None;
            }
            Some(addr)
        });
        let allowed_hosts = raw
            .allowed_hosts
            .iter()
            .flatten()
            .filter_map(|h| self.allowed_host(h))
            .collect();
        MetricsConfig {
            listen,
            allow_non_loopback,
            per_agent: raw.per_agent.unwrap_or(false),
            allowed_hosts,
        }
    }

    /// One `metrics.allowed_hosts` entry: a host name or IP address, without port.
    fn allowed_host(&mut self, raw: &Spanned<String>) -> Option<String> {
        let text = raw.get_ref().trim();
        let name = text
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .unwrap_or(text);
        let is_ip = name.parse::<std::net::IpAddr>().is_ok();
        let is_name = !name.is_empty()
            && name.len() <= 253
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
        if is_ip || is_name {
            return Some(name.to_ascii_lowercase());
        }
        self.report(
            raw.span(),
            format!(
                "metrics.allowed_hosts entry `{}` is not a host name or IP address (write the \
                 name without scheme or port, e.g. `metrics.example.org`)",
                text.escape_debug()
            ),
        );
        None
    }

    fn source(&mut self, raw: &RawSource) -> SourceConfig {
        SourceConfig {
            path: self.path("source.path", &raw.path),
            role: raw.role.as_ref().and_then(|r| self.role("source.role", r)),
            pfx_password_file: raw
                .pfx_password_file
                .as_ref()
                .map(|p| self.path("source.pfx_password_file", p)),
        }
    }

    fn duplicate_sources(&mut self, raw: &[RawSource]) {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for source in raw {
            let path = source.path.get_ref().trim_end_matches('/');
            let line = diagnostic(
                self.text,
                self.origin,
                source.path.span().start,
                String::new(),
            )
            .line;
            if let Some(first) = seen.get(path) {
                self.report(
                    source.path.span(),
                    format!("source `{path}` is already listed on line {first}"),
                );
            } else {
                seen.insert(path, line);
            }
        }
    }

    fn endpoint(&mut self, raw: &RawEndpoint) -> EndpointConfig {
        let address = raw.address.get_ref();
        let (host, port) = match split_address(address) {
            Ok(parts) => parts,
            Err(message) => {
                self.report(raw.address.span(), format!("endpoint.address: {message}"));
                (String::new(), 0)
            }
        };
        let sni = raw.sni.as_ref().map(|sni| {
            let name = sni.get_ref();
            if name.is_empty() {
                self.report(sni.span(), "endpoint.sni is empty".into());
            } else if name.parse::<IpAddr>().is_ok() {
                self.report(
                    sni.span(),
                    format!("endpoint.sni `{name}` is an IP address: SNI is a host name"),
                );
            } else if name.contains(|c: char| c.is_whitespace() || c == ':' || c == '/') {
                self.report(
                    sni.span(),
                    format!("endpoint.sni `{name}` is not a host name"),
                );
            }
            name.clone()
        });
        let expect_issuer = raw.expect_issuer.as_ref().map(|issuer| {
            if issuer.get_ref().trim().is_empty() {
                self.report(issuer.span(), "endpoint.expect_issuer is empty".into());
            }
            issuer.get_ref().clone()
        });
        EndpointConfig {
            address: address.clone(),
            host,
            port,
            sni,
            role: raw
                .role
                .as_ref()
                .and_then(|r| self.role("endpoint.role", r)),
            expect_issuer,
        }
    }

    fn duplicate_endpoints(&mut self, raw: &[RawEndpoint]) {
        let mut seen: HashMap<(&str, Option<&str>), usize> = HashMap::new();
        for endpoint in raw {
            let key = (
                endpoint.address.get_ref().as_str(),
                endpoint.sni.as_ref().map(|s| s.get_ref().as_str()),
            );
            let span = endpoint.address.span();
            let line = diagnostic(self.text, self.origin, span.start, String::new()).line;
            if let Some(first) = seen.get(&key) {
                self.report(
                    span,
                    format!(
                        "endpoint `{}` (with the same sni) is already listed on line {first}",
                        key.0
                    ),
                );
            } else {
                seen.insert(key, line);
            }
        }
    }

    fn smtp(&mut self, raw: &RawSmtp) -> SmtpConfig {
        let host = raw.host.get_ref();
        if host.trim().is_empty() {
            self.report(raw.host.span(), "smtp.host is empty".into());
        } else if host.contains(|c: char| c.is_whitespace() || c == '/') {
            self.report(
                raw.host.span(),
                format!("smtp.host `{host}` is not a host name or IP address (the port goes in smtp.port)"),
            );
        }
        let security = match &raw.security {
            Some(s) => s.get_ref().parse().unwrap_or_else(|e: String| {
                self.report(s.span(), format!("smtp.security: {e}"));
                SmtpSecurity::StartTls
            }),
            None => SmtpSecurity::StartTls,
        };
        let port = match &raw.port {
            Some(p) => match u16::try_from(*p.get_ref()) {
                Ok(port) if port != 0 => port,
                _ => {
                    self.report(
                        p.span(),
                        format!("smtp.port {} is not a port (1 to 65535)", p.get_ref()),
                    );
                    0
                }
            },
            None => security.default_port(),
        };
        let from = raw.from.get_ref();
        if !looks_like_a_sender(from) {
            self.report(
                raw.from.span(),
                format!(
                    "smtp.from `{from}` is not an e-mail address (write `certd@example.org` \
                     or `certd <certd@example.org>`)"
                ),
            );
        }
        let username = raw.username.as_ref().map(|u| {
            if u.get_ref().is_empty() {
                self.report(u.span(), "smtp.username is empty".into());
            }
            u.get_ref().clone()
        });
        let password_file = raw
            .password_file
            .as_ref()
            .map(|p| self.path("smtp.password_file", p));
        match (&raw.username, &raw.password_file) {
            (Some(u), None) => self.report(
                u.span(),
                "smtp.username is set without smtp.password_file: set both or neither".into(),
            ),
            (None, Some(p)) => self.report(
                p.span(),
                "smtp.password_file is set without smtp.username: set both or neither".into(),
            ),
            _ => {}
        }
        let ca_file = raw.ca_file.as_ref().map(|p| self.path("smtp.ca_file", p));
        SmtpConfig {
            host: host.clone(),
            port,
            security,
            from: from.clone(),
            username,
            password_file,
            ca_file,
            timeout: match &raw.timeout {
                Some(t) => self.duration("smtp.timeout", t),
                None => DEFAULT_SMTP_TIMEOUT,
            },
        }
    }

    fn reminders(&mut self, raw: &RawReminders) -> Option<RemindersConfig> {
        let schedule = self.schedule("reminders.schedule", &raw.schedule);
        let policies = self.path("reminders.policies", &raw.policies);
        Some(RemindersConfig {
            schedule: schedule?,
            policies,
        })
    }

    fn backup(&mut self, raw: &RawBackup) -> Option<BackupConfig> {
        let schedule = self.schedule("backup.schedule", &raw.schedule);
        let dir = self.path("backup.dir", &raw.dir);
        let keep = match &raw.keep {
            Some(k) if (1..=10_000).contains(k.get_ref()) => *k.get_ref() as usize,
            Some(k) => {
                self.report(
                    k.span(),
                    format!(
                        "backup.keep = {}: keep at least 1 backup (and at most 10000)",
                        k.get_ref()
                    ),
                );
                1
            }
            None => 7,
        };
        let warn_after = raw
            .warn_after
            .as_ref()
            .map(|t| self.duration("backup.warn_after", t));
        Some(BackupConfig {
            schedule: schedule?,
            dir,
            keep,
            warn_after,
        })
    }

    fn path(&mut self, key: &str, value: &Spanned<String>) -> PathBuf {
        let text = value.get_ref();
        let path = PathBuf::from(text);
        if text.is_empty() {
            self.report(
                value.span(),
                format!("{key} is empty: write an absolute path"),
            );
        } else if !path.is_absolute() {
            self.report(
                value.span(),
                format!("{key} must be an absolute path, not `{text}`"),
            );
        }
        path
    }

    fn schedule(&mut self, key: &str, value: &Spanned<String>) -> Option<Schedule> {
        match value.get_ref().parse::<Schedule>() {
            Ok(schedule) => Some(schedule),
            Err(e) => {
                self.report(value.span(), format!("{key}: {e}"));
                None
            }
        }
    }

    /// A schedule that may be `"off"`.
    fn optional_schedule(&mut self, key: &str, value: &Spanned<String>) -> Option<Schedule> {
        if value.get_ref().trim().eq_ignore_ascii_case(SCHEDULE_OFF) {
            None
        } else {
            self.schedule(key, value)
        }
    }

    fn duration(&mut self, key: &str, value: &Spanned<String>) -> std::time::Duration {
        match value.get_ref().parse::<crate::Duration>() {
            Ok(d) if d.as_secs() > 0 => std::time::Duration::from_secs(d.as_secs().unsigned_abs()),
            Ok(_) => {
                self.report(value.span(), format!("{key} must be longer than 0s"));
                std::time::Duration::ZERO
            }
            Err(e) => {
                self.report(value.span(), format!("{key}: {e}"));
                std::time::Duration::ZERO
            }
        }
    }

    fn target(&mut self, raw: &RawTarget) -> certctl_store::ReloadHook {
        let path = self.path("workflows.targets.path", &raw.path);
        let argv = raw.reload.get_ref().clone();
        if argv.first().is_none_or(|p| p.trim().is_empty()) {
            self.report(
                raw.reload.span(),
                "workflows.targets.reload: name the program and its arguments, e.g. [\"systemctl\", \"reload\", \"nginx\"]".into(),
            );
        }
        let timeout_secs = match &raw.reload_timeout {
            Some(t) => self
                .duration("workflows.targets.reload_timeout", t)
                .as_secs(),
            None => crate::pki::reload::DEFAULT_TIMEOUT_SECS,
        };
        certctl_store::ReloadHook {
            target: path.to_string_lossy().into_owned(),
            argv,
            timeout_secs,
        }
    }

    fn role(&mut self, key: &str, value: &Spanned<String>) -> Option<Role> {
        match value.get_ref().parse::<Role>() {
            Ok(role) => Some(role),
            Err(e) => {
                self.report(value.span(), format!("{key}: {e}"));
                None
            }
        }
    }
}

/// A size with an optional unit: `134217728`, `128MiB`, `512 MB`, `2GiB` (units are
/// case-insensitive; KiB/MiB/GiB are powers of 1024, KB/MB/GB of 1000; B or none: bytes).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let usage = "write a number of bytes or a size like `128MiB` or `1GiB` (units B, KiB, MiB, GiB, KB, MB, GB)";
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a size: {usage}"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return Err(format!("`{text}` has an unknown unit: {usage}")),
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// `host:port` → (host, port); IPv6 in brackets (`[::1]:443`), returned without them.
fn split_address(address: &str) -> Result<(String, u16), String> {
    use crate::net::address::{split_host_port, AddressProblem as P};
    let usage = "write host:port, e.g. `gw.contoso.example:443` (IPv6 as `[::1]:443`)";
    split_host_port(address).map_err(|problem| match problem {
        P::Url => format!("`{address}` is a URL: {usage}, without a scheme or a path"),
        P::NoClosingBracket => {
            format!("`{address}` has no `]` after the IPv6 address: {usage}")
        }
        P::NotIpv6 => {
            let host = address
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("");
            format!("`{host}` in `{address}` is not an IPv6 address")
        }
        P::NoPort => format!("`{address}` has no port: {usage}"),
        P::UnbracketedIpv6 => format!(
            "`{address}` looks like an IPv6 address: put it in brackets and add \
             the port, e.g. `[::1]:443`"
        ),
        P::NoHost => format!("`{address}` has no host: {usage}"),
        P::BadHost => {
            let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
            format!("`{host}` in `{address}` is not a host name")
        }
        P::BadPort => {
            let port = address.rsplit_once(':').map_or("", |(_, p)| p);
            format!("port `{port}` in `{address}` is not a port (1 to 65535)")
        }
    })
}

/// `local@domain`, optionally as `Name <local@domain>`.
fn looks_like_a_sender(from: &str) -> bool {
    let address = match (from.find('<'), from.strip_suffix('>')) {
        (Some(open), Some(inner)) => &inner[open + 1..],
        (None, None) => from,
        _ => return false,
    };
    match address.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !address.contains(char::is_whitespace)
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> &'static Path {
        Path::new("/etc/certd/certd.toml")
    }

    fn errors(text: &str) -> Vec<String> {
        parse(text, origin())
            .unwrap_err()
            .diagnostics()
            .iter()
            .map(Diagnostic::to_string)
            .collect()
    }

    /// The only error in `text`, which must start with `LINE:COLUMN: ` and contain `what`.
    fn the_error(text: &str, position: &str, what: &str) {
        let all = errors(text);
        assert_eq!(all.len(), 1, "{all:#?}");
        let prefix = format!("/etc/certd/certd.toml:{position}: ");
        assert!(all[0].starts_with(&prefix), "want {prefix}: {}", all[0]);
        assert!(all[0].contains(what), "want {what}: {}", all[0]);
    }

    #[test]
    fn every_shape_error_is_reported_at_its_place_in_the_original_text() {
        // A non-ASCII comment before the errors: blanking keeps byte offsets, so the later
        // positions stay right.
        let text = "store = \"/s\" # «magasin»\n[scan]\nwatchh = true\n[probe]\nmystery = 1\n";
        let all = errors(text);
        assert_eq!(all.len(), 2, "{all:#?}");
        assert!(
            all[0].starts_with("/etc/certd/certd.toml:3:1: "),
            "{all:#?}"
        );
        assert!(
            all[1].starts_with("/etc/certd/certd.toml:5:1: "),
            "{all:#?}"
        );
    }

    #[test]
    fn a_value_spread_over_lines_stops_the_search_rather_than_invent_errors() {
        // `allow` is known; `alow` is not, and its array spans two lines: blanking only its
        // first line would leave `"b"]` behind as a made-up syntax error.
        let text = "store = \"/s\"\n[crl]\nalow = [\"a\",\n\"b\"]\ntimeout = \"x\"\n";
        let all = errors(text);
        assert_eq!(all.len(), 1, "{all:#?}");
        assert!(all[0].contains("alow"), "{all:#?}");
    }

    #[test]
    fn a_syntax_error_is_reported_alone() {
        let all = errors("store = \"/s\"\n[scan\nwatch = 1\n");
        assert_eq!(all.len(), 1, "{all:#?}");
        assert!(all[0].starts_with("/etc/certd/certd.toml:2:"), "{all:#?}");
    }

    #[test]
    fn store_cache_defaults_to_32_mib_and_takes_sizes() {
        let c = parse("store = \"/s\"\n", origin()).unwrap();
        assert_eq!(c.store_cache_bytes, DEFAULT_STORE_CACHE_BYTES);
        assert_eq!(DEFAULT_STORE_CACHE_BYTES, 32 << 20);
        for (value, bytes) in [
            ("\"64MiB\"", 64u64 << 20),
            ("\"1 GiB\"", 1 << 30),
            ("\"512mb\"", 512_000_000),
            ("\"20000KiB\"", 20_000 << 10),
            ("33554432", 32 << 20),
            ("\"33554432B\"", 32 << 20),
        ] {
            let c = parse(
                &format!("store = \"/s\"\nstore_cache = {value}\n"),
                origin(),
            )
            .unwrap_or_else(|e| panic!("{value}: {e}"));
            assert_eq!(c.store_cache_bytes, bytes, "{value}");
        }
        assert_eq!(parse_size("128MiB"), Ok(128 << 20));
        assert!(parse_size("99999999999999GiB")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn store_cache_errors_say_where_and_what() {
        the_error(
            "store = \"/s\"\nstore_cache = \"lots\"\n",
            "2:15",
            "store_cache: `lots` is not a size",
        );
        the_error(
            "store = \"/s\"\nstore_cache = \"128 furlongs\"\n",
            "2:15",
            "unknown unit",
        );
        the_error(
            "store = \"/s\"\nstore_cache = \"1MiB\"\n",
            "2:15",
            "store_cache must be between 8MiB and 64GiB",
        );
        the_error(
            "store = \"/s\"\nstore_cache = \"65GiB\"\n",
            "2:15",
            "between 8MiB and 64GiB",
        );
        the_error(
            "store = \"/s\"\nstore_cache = -5\n",
            "2:15",
            "-5 is negative",
        );
    }

    #[test]
    fn the_example_parses() {
        let c = parse(EXAMPLE, origin()).unwrap();
        assert_eq!(c.store, Path::new("/var/lib/certd/store"));
        assert_eq!(c.store_cache_bytes, 32 << 20);
        assert_eq!(
            c.control_socket(),
            Path::new("/var/lib/certd/store/certd.sock")
        );
        assert_eq!(c.scan.schedule.as_ref().unwrap().as_str(), "0 */6 * * *");
        assert!(c.scan.watch);
        assert_eq!(c.probe.schedule.as_ref().unwrap().as_str(), "*/15 * * * *");
        assert_eq!(c.probe.timeout, std::time::Duration::from_secs(10));
        assert_eq!(
            c.probe.trust_store.as_deref(),
            Some(Path::new("/etc/ssl/certs/ca-certificates.crt"))
        );
        assert_eq!(
            c.sources,
            [
                SourceConfig {
                    path: "/srv/certs/gateway".into(),
                    role: Some(Role::Gateway),
                    pfx_password_file: Some("/etc/certd/pfx-password".into()),
                },
                SourceConfig {
                    path: "/srv/certs/iis".into(),
                    role: Some(Role::Iis),
                    pfx_password_file: None,
                }
            ]
        );
        assert_eq!(
            c.endpoints,
            [
                EndpointConfig {
                    address: "gw.contoso.example:443".into(),
                    host: "gw.contoso.example".into(),
                    port: 443,
                    sni: Some("gw.contoso.example".into()),
                    role: Some(Role::Gateway),
                    expect_issuer: Some("Contoso Issuing CA".into()),
                },
                EndpointConfig {
                    address: "[2001:db8::10]:8443".into(),
                    host: "2001:db8::10".into(),
                    port: 8443,
                    sni: None,
                    role: None,
                    expect_issuer: None,
                }
            ]
        );
        assert_eq!(
            c.smtp,
            Some(SmtpConfig {
                host: "smtp.contoso.example".into(),
                port: 587,
                security: SmtpSecurity::StartTls,
                from: "certd@contoso.example".into(),
                username: Some("certd".into()),
                password_file: Some("/etc/certd/smtp-password".into()),
                ca_file: None,
                timeout: std::time::Duration::from_secs(30),
            })
        );
        let reminders = c.reminders.unwrap();
        assert_eq!(reminders.schedule.as_str(), "0 8 * * 1-5");
        assert_eq!(reminders.policies, Path::new("/etc/certd/policies"));
        assert_eq!(
            c.agents.deny_list.as_deref(),
            Some(Path::new("/srv/gateway/deny.txt"))
        );
        assert_eq!(
            c.metrics,
            MetricsConfig {
                listen: Some("127.0.0.1:9477".parse().unwrap()),
                allow_non_loopback: false,
                per_agent: false,
                allowed_hosts: Vec::new(),
            }
        );
    }

    #[test]
    fn workflow_secret_files_are_absolute_paths_per_ca() {
        let c = parse(
            "store = \"/s\"\n[workflows]\npfx_password_file = \"/etc/certd/pfx\"\n\
             [workflows.ca_passphrase_files]\nissuing-ca = \"/etc/certd/issuing.pass\"\n",
            origin(),
        )
        .unwrap();
        assert_eq!(
            c.workflows.ca_passphrase_files.get("issuing-ca"),
            Some(&PathBuf::from("/etc/certd/issuing.pass"))
        );
        assert_eq!(
            c.workflows.pfx_password_file,
            Some(PathBuf::from("/etc/certd/pfx"))
        );
        assert_eq!(
            parse("store = \"/s\"\n", origin()).unwrap().workflows,
            WorkflowsConfig::default()
        );
        the_error(
            "store = \"/s\"\n[workflows.ca_passphrase_files]\nops = \"ops.pass\"\n",
            "3:7",
            "workflows.ca_passphrase_files.ops must be an absolute path",
        );
    }

    #[test]
    fn deploy_targets_name_a_reload_command_and_a_timeout() {
        let c = parse(
            "store = \"/s\"\n[[workflows.targets]]\npath = \"/etc/nginx/tls\"\n\
             reload = [\"systemctl\", \"reload\", \"nginx\"]\n\
             [[workflows.targets]]\npath = \"/srv/gw.pem\"\nreload = [\"/usr/local/bin/gw-reload\"]\n\
             reload_timeout = \"5s\"\n",
            origin(),
        )
        .unwrap();
        let t = &c.workflows.targets;
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].target, "/etc/nginx/tls");
        assert_eq!(t[0].argv, ["systemctl", "reload", "nginx"]);
        assert_eq!(t[0].timeout_secs, 60);
        assert_eq!(t[1].timeout_secs, 5);
        the_error(
            "store = \"/s\"\n[[workflows.targets]]\npath = \"/x\"\nreload = []\n",
            "4:10",
            "workflows.targets.reload: name the program",
        );
        the_error(
            "store = \"/s\"\n[[workflows.targets]]\npath = \"tls\"\nreload = [\"true\"]\n",
            "3:8",
            "workflows.targets.path must be an absolute path",
        );
    }

    #[test]
    fn crl_allow_and_deadline_are_checked_where_written() {
        let c = parse("store = \"/s\"\n", origin()).unwrap();
        assert_eq!(c.crl, CrlConfig::default());
        assert_eq!(c.crl.allow, None, "absent: any host");
        let c = parse(
            "store = \"/s\"\n[crl]\ndeadline = \"90s\"\nallow = [\"crl.contoso.example\", \"10.0.0.0/8\"]\n",
            origin(),
        )
        .unwrap();
        assert_eq!(c.crl.deadline, std::time::Duration::from_secs(90));
        let allow = c.crl.allow.expect("allow");
        assert!(allow.allows_ip("10.9.8.7".parse().unwrap()));
        assert!(!allow.allows_ip("127.0.0.1".parse().unwrap()));
        the_error(
            "store = \"/s\"\n[crl]\nallow = [\"crl.contoso.example\", \"10.0.0.0/33\"]\n",
            "3:33",
            "crl.allow: `10.0.0.0/33`: the prefix length must be 0 to 32",
        );
        the_error(
            "store = \"/s\"\n[crl]\nallow = [\"http://crl.contoso.example/\"]\n",
            "3:10",
            "is a URL: write its host name only",
        );
        the_error(
            "store = \"/s\"\n[crl]\ndeadline = \"0s\"\n",
            "3:12",
            "crl.deadline must be longer than 0s",
        );
    }

    #[test]
    fn metrics_listen_must_be_loopback_unless_allowed() {
        let listen = |section: &str| parse(&format!("store = \"/s\"\n{section}"), origin());
        let c = listen("[metrics]\nlisten = \"[::1]:9477\"\nper_agent = true\n").unwrap();
        assert_eq!(c.metrics.listen, Some("[::1]:9477".parse().unwrap()));
        assert!(c.metrics.per_agent);
        the_error(
            "store = \"/s\"\n[metrics]\nper_agent = false\nlisten = \"0.0.0.0:9477\"\n",
            "4:10",
            "metrics.listen `0.0.0.0:9477` is not a loopback address",
        );
        the_error(
            "store = \"/s\"\n[metrics]\nlisten = \"192.0.2.7:9477\"\n",
            "3:10",
            "allow_non_loopback = true",
        );
        let c =
            listen("[metrics]\nlisten = \"0.0.0.0:9477\"\nallow_non_loopback = true\n").unwrap();
        assert_eq!(c.metrics.listen, Some("0.0.0.0:9477".parse().unwrap()));
        for (bad, what) in [
            ("localhost:9477", "not an IP address and port"),
            ("127.0.0.1", "not an IP address and port"),
            ("127.0.0.1:0", "needs a port"),
        ] {
            let text = format!("store = \"/s\"\n[metrics]\nlisten = \"{bad}\"\n");
            the_error(&text, "3:10", what);
        }
        // Off by default, and with a [metrics] section that has no listen.
        let c = listen("").unwrap();
        assert_eq!(c.metrics, MetricsConfig::default());
        assert_eq!(c.agents, AgentsConfig::default());
        assert_eq!(
            listen("[metrics]\nper_agent = true\n")
                .unwrap()
                .metrics
                .listen,
            None
        );
        the_error(
            "store = \"/s\"\n[agents]\ndeny_list = \"deny.txt\"\n",
            "3:13",
            "agents.deny_list must be an absolute path",
        );
    }

    #[test]
    fn metrics_allowed_hosts_are_names_without_port() {
        let c = parse(
            "store = \"/s\"\n[metrics]\nlisten = \"127.0.0.1:9477\"\n\
             allowed_hosts = [\"Metrics.Example.org\", \"[::1]\", \"192.0.2.7\"]\n",
            origin(),
        )
        .unwrap();
        assert_eq!(
            c.metrics.allowed_hosts,
            ["metrics.example.org", "::1", "192.0.2.7"]
        );
        for bad in ["metrics.example.org:443", "http://m.example", "", "a b"] {
            let text = format!(
                "store = \"/s\"\n[metrics]\nlisten = \"127.0.0.1:9477\"\nallowed_hosts = [\"{bad}\"]\n"
            );
            the_error(&text, "4:18", "is not a host name or IP address");
        }
    }

    #[test]
    fn defaults_apply_to_a_minimal_file() {
        let c = parse("store = \"/var/lib/certd\"\n", origin()).unwrap();
        assert_eq!(c.store, Path::new("/var/lib/certd"));
        assert_eq!(c.scan, ScanConfig::default());
        assert_eq!(
            c.scan.schedule.as_ref().unwrap().as_str(),
            DEFAULT_SCAN_SCHEDULE
        );
        assert!(c.scan.watch);
        assert_eq!(c.probe, ProbeConfig::default());
        assert_eq!(
            c.probe.schedule.as_ref().unwrap().as_str(),
            DEFAULT_PROBE_SCHEDULE
        );
        assert_eq!(c.probe.timeout, std::time::Duration::from_secs(10));
        assert_eq!(c.probe.trust_store, None);
        assert!(c.sources.is_empty() && c.endpoints.is_empty());
        assert_eq!((c.smtp, c.reminders), (None, None));

        // Sections present but partly filled get the defaults of the keys left out.
        let c = parse(
            "store = \"/s\"\n[scan]\nwatch = false\n[probe]\ntimeout = \"3s\"\n",
            origin(),
        )
        .unwrap();
        assert_eq!(
            c.scan.schedule.as_ref().unwrap().as_str(),
            DEFAULT_SCAN_SCHEDULE
        );
        assert!(!c.scan.watch);
        assert_eq!(
            c.probe.schedule.as_ref().unwrap().as_str(),
            DEFAULT_PROBE_SCHEDULE
        );
        assert_eq!(c.probe.timeout, std::time::Duration::from_secs(3));
    }

    #[test]
    fn schedules_can_be_turned_off() {
        let c = parse(
            "store = \"/s\"\n[scan]\nschedule = \"off\"\n[probe]\nschedule = \"off\"\n",
            origin(),
        )
        .unwrap();
        assert_eq!((c.scan.schedule, c.probe.schedule), (None, None));
    }

    #[test]
    fn smtp_port_defaults_follow_security() {
        let smtp = |security: &str| {
            let text = format!(
                "store = \"/s\"\n[smtp]\nhost = \"mail\"\nfrom = \"a@b\"\nsecurity = \"{security}\"\n"
            );
            parse(&text, origin()).unwrap().smtp.unwrap()
        };
        assert_eq!(smtp("none").port, 25);
        assert_eq!(smtp("starttls").port, 587);
        assert_eq!(smtp("tls").port, 465);
        assert_eq!(smtp("TLS").security, SmtpSecurity::Tls);
        assert_eq!(smtp("tls").timeout, DEFAULT_SMTP_TIMEOUT);
    }

    #[test]
    fn syntax_error() {
        the_error(
            "store = \"/s\"\n[scan\nwatch = true\n",
            "2:6",
            "unclosed table, expected `]`",
        );
        the_error("store = /s\n", "1:9", "string");
    }

    #[test]
    fn unknown_key() {
        the_error(
            "store = \"/s\"\n\n[probe]\n  timout = \"5s\"\n",
            "4:3",
            "unknown field `timout`",
        );
        the_error(
            "store = \"/s\"\nstroe = \"/t\"\n",
            "2:1",
            "unknown field `stroe`",
        );
    }

    #[test]
    fn wrong_type() {
        the_error(
            "store = \"/s\"\n[scan]\nwatch = \"yes\"\n",
            "3:9",
            "invalid type",
        );
    }

    #[test]
    fn bad_cron() {
        the_error(
            "store = \"/s\"\n[scan]\nschedule = \"61 * * * *\"\n",
            "3:12",
            "scan.schedule: invalid schedule `61 * * * *`: minute 61 is out of range (0-59)",
        );
        the_error(
            "store = \"/s\"\n[reminders]\nschedule = \"* * *\"\npolicies = \"/p\"\n",
            "3:12",
            "it has 3 fields",
        );
    }

    #[test]
    fn unknown_role() {
        the_error(
            "store = \"/s\"\n[[source]]\npath = \"/c\"\nrole = \"webserver\"\n",
            "4:8",
            "source.role: unknown role `webserver` (expected one of: gateway, iis",
        );
    }

    #[test]
    fn relative_path() {
        the_error(
            "store = \"var/lib/certd\"\n",
            "1:9",
            "store must be an absolute path, not `var/lib/certd`",
        );
        the_error(
            "store = \"/s\"\n[[source]]\npath = \"/c\"\n[[source]]\n path = \"certs\"\n",
            "5:9",
            "source.path must be an absolute path",
        );
    }

    #[test]
    fn endpoint_without_port() {
        the_error(
            "store = \"/s\"\n[[endpoint]]\naddress = \"gw.contoso.example\"\n",
            "3:11",
            "endpoint.address: `gw.contoso.example` has no port: write host:port",
        );
        for (address, what) in [
            ("gw:", "has no port"),
            ("::1", "put it in brackets"),
            ("[::1]", "has no port"),
            ("[::1:443", "no `]`"),
            ("[nope]:443", "not an IPv6 address"),
            (":443", "has no host"),
            ("gw:https", "not a port"),
            ("gw:0", "not a port"),
            ("gw:65536", "not a port"),
            ("https://gw:443", "is a URL"),
        ] {
            let text = format!("store = \"/s\"\n[[endpoint]]\naddress = \"{address}\"\n");
            the_error(&text, "3:11", what);
        }
        let text = "store = \"/s\"\n[[endpoint]]\naddress = \"[::1]:443\"\n";
        let endpoint = &parse(text, origin()).unwrap().endpoints[0];
        assert_eq!((endpoint.host.as_str(), endpoint.port), ("::1", 443));
    }

    #[test]
    fn bad_duration() {
        the_error(
            "store = \"/s\"\n[probe]\ntimeout = \"10x\"\n",
            "3:11",
            "probe.timeout: invalid duration `10x`: unknown unit",
        );
        the_error(
            "store = \"/s\"\n[probe]\ntimeout = \"0s\"\n",
            "3:11",
            "probe.timeout must be longer than 0s",
        );
    }

    #[test]
    fn missing_key_in_a_table() {
        // Reported at the table's header.
        the_error(
            "store = \"/s\"\n[[source]]\nrole = \"ca\"\n",
            "2:1",
            "missing field `path`",
        );
    }

    #[test]
    fn missing_store() {
        the_error("[scan]\nwatch = false\n", "1:1", "`store` is missing");
    }

    #[test]
    fn smtp_problems() {
        let all = errors(
            "store = \"/s\"\n[smtp]\nhost = \"\"\nport = 70000\nsecurity = \"ssl\"\n\
             from = \"certd\"\nusername = \"u\"\n",
        );
        assert_eq!(all.len(), 5, "{all:#?}");
        assert!(all[0].contains(":3:8: smtp.host is empty"), "{}", all[0]);
        assert!(all[1].contains(":4:8: smtp.port 70000"), "{}", all[1]);
        assert!(
            all[2].contains(":5:12: smtp.security: unknown security `ssl`"),
            "{}",
            all[2]
        );
        assert!(
            all[3].contains(":6:8: smtp.from `certd` is not an e-mail"),
            "{}",
            all[3]
        );
        assert!(
            all[4].contains(":7:12: smtp.username is set without"),
            "{}",
            all[4]
        );
    }

    #[test]
    fn duplicates() {
        let all = errors(
            "store = \"/s\"\n[[source]]\npath = \"/c\"\n[[source]]\npath = \"/c/\"\n\
             [[endpoint]]\naddress = \"a:1\"\n[[endpoint]]\naddress = \"a:1\"\n\
             [[endpoint]]\naddress = \"a:1\"\nsni = \"b\"\n",
        );
        assert_eq!(all.len(), 2, "{all:#?}");
        assert!(
            all[0].contains(":5:8: source `/c` is already listed on line 3"),
            "{}",
            all[0]
        );
        assert!(all[1].contains(":9:11: endpoint `a:1`"), "{}", all[1]);
        assert!(all[1].contains("already listed on line 7"), "{}", all[1]);
    }

    #[test]
    fn several_errors_are_reported_together() {
        let text = "store = \"relative\"\n\
                    [scan]\n\
                    schedule = \"0 25 * * *\"\n\
                    [probe]\n\
                    timeout = \"10x\"\n\
                    [[source]]\n\
                    path = \"/srv/certs\"\n\
                    role = \"router\"\n\
                    [[endpoint]]\n\
                    address = \"gw.example\"\n";
        let e = parse(text, origin()).unwrap_err();
        let all: Vec<String> = e.diagnostics().iter().map(ToString::to_string).collect();
        let positions: Vec<&str> = all
            .iter()
            .map(|d| {
                let rest = &d["/etc/certd/certd.toml:".len()..];
                &rest[..rest.find(": ").unwrap()]
            })
            .collect();
        assert_eq!(
            positions,
            ["1:9", "3:12", "5:11", "8:8", "10:11"],
            "{all:#?}"
        );
        // Display: one problem per line, each FILE:LINE:COLUMN: message.
        let display = e.to_string();
        assert_eq!(display.lines().count(), 5, "{display}");
        assert!(display
            .lines()
            .all(|l| l.starts_with("/etc/certd/certd.toml:")));
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("certd.toml");
        std::fs::write(&path, "store = \"/s\"\n[scan]\nwatch = 1\n").unwrap();
        let e = load(&path).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("{}:3:9: ", path.display())),
            "{e}"
        );
        std::fs::write(&path, EXAMPLE).unwrap();
        assert_eq!(load(&path).unwrap(), parse(EXAMPLE, origin()).unwrap());

        let missing = dir.path().join("missing.toml");
        let e = load(&missing).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }));
        assert!(
            e.to_string().starts_with(&missing.display().to_string()),
            "{e}"
        );
    }

    #[test]
    fn equality_tells_a_changed_configuration() {
        let a = parse(EXAMPLE, origin()).unwrap();
        let b = parse(
            &EXAMPLE.replace("timeout = \"10s\"", "timeout = \"5s\""),
            origin(),
        )
        .unwrap();
        assert_ne!(a, b);
        let c = parse(&format!("# a comment\n{EXAMPLE}"), origin()).unwrap();
        assert_eq!(a, c);
    }

    #[test]
    fn columns_count_characters() {
        the_error(
            "# é\nstore = \"/s\"\n[[source]]\npath = \"/é\"\nrole = \"x\"\n",
            "5:8",
            "unknown role",
        );
        the_error(
            "store = \"/s\"\nsource = [{ path = \"/é\", role = \"x\" }]\n",
            "2:33",
            "unknown role",
        );
    }
}
