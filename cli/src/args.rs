//! The command line: clap definitions only. `main.rs` turns them into work.

use std::path::PathBuf;

use certctl_daemon::Duration;
use certctl_store::{CredentialKind, Role};
use clap::{Args, Parser, Subcommand};

/// certctl — certificate lifecycle manager for a fleet: gateways, IIS sites, site servers
/// and agents.
///
/// Exit codes: 0 success · 1 check: warning · 2 check: critical · 3 scan: some files
/// failed · 4 the command failed · 64 usage error.
/// What the global options do, said once in `certctl --help` (subcommands show one line
/// each).
const GLOBAL_OPTIONS_HELP: &str = "--store DIR and --config FILE go before or after the \
subcommand. --config names certd's configuration file: its `store` (unless --store is given), \
`[smtp]` and `[reminders]` (the policies folder) are used, and with certd stopped its \
`[agents] deny_list` (agents approve|block|deny-list). It is never looked up by default.";

#[derive(Debug, Parser)]
#[command(
    name = "certctl",
    version,
    max_term_width = 100,
    after_help = GLOBAL_OPTIONS_HELP,
    about = "Certificate lifecycle manager for a fleet: gateways, IIS sites, site servers and agents"
)]
pub struct Cli {
    /// The store folder [default: $CERTCTL_STORE, else ~/.local/share/certctl/store].
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        help_heading = "Global options"
    )]
    pub store: Option<PathBuf>,

    /// certd's configuration file (see `certctl --help`) [default: none].
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        help_heading = "Global options"
    )]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Inventory certificate files and folders (PEM, DER, PKCS#12/PFX) into the store.
    Scan(ScanArgs),
    /// List certificates, soonest expiry first.
    List(ListArgs),
    /// Show certificates by fingerprint prefix (≥ 8 hex chars) or exact subject CN / SAN.
    Show(ShowArgs),
    /// Print the certificates of one file, without a store.
    Inspect(InspectArgs),
    /// Count certificates by role, status and key type.
    Stats(OutputArgs),
    /// Monitoring check: exit 0 OK, 1 WARNING, 2 CRITICAL, with a one-line summary.
    Check(CheckArgs),
    /// Fetch the chain a live TLS endpoint serves, record it and report findings.
    Probe(ProbeArgs),
    /// Whether certd runs on this store, and what it is doing.
    Status(OutputArgs),
    /// The store itself: `verify` checks that records, indexes and file states agree.
    Store(StoreArgs),
    /// Build a demo fleet (CAs, gateway, IIS, site servers, 1,200 agents), scan it and
    /// print what needs attention.
    Demo(DemoArgs),
    /// Managed CAs (certctl holds their keys): init, list, export, crl.
    Ca(crate::ca_args::CaArgs),
    /// Issue a certificate from a managed CA: CN.pem, CN.key, CN.chain.pem (and CN.pfx).
    Issue(crate::ca_args::IssueArgs),
    /// Revoke certificates (one, or every one sharing a key or issued by a CA); publishes
    /// the CRL of a managed CA at once.
    Revoke(crate::ca_args::RevokeArgs),
    /// Replace a certificate: new key and certificate from the same managed CA, optionally
    /// deployed over the old files and the old one revoked (a resumable workflow).
    Regenerate(crate::ca_args::RegenerateArgs),
    /// Renew a certificate now by its method (managed CA, SCEP), or every due one
    /// (`--due`; `--dry-run` lists them with method and reason).
    Renew(crate::renew_cmds::RenewArgs),
    /// List regenerate workflows, or resume an interrupted one.
    Workflows(crate::ca_args::WorkflowsArgs),
    /// The audit trail of a certificate, or which certificates were valid at a moment.
    History(crate::ca_args::HistoryArgs),
    /// CRLs of other CAs: fetch them and mark the certificates they list as revoked.
    Crl(crate::ca_args::CrlArgs),
    /// Agents locked out after a registration loss: import registrations, the pending
    /// queue, approve / block (audit history, deny list).
    Agents(crate::fleet_cmds::AgentsArgs),
    /// Fleet reports (by-role, by-issuer, by-gateway, agents-by-credential, expiring,
    /// weak-keys, revoked, pending-agents, endpoint-findings, drift, clock-skew).
    Report(crate::fleet_cmds::ReportArgs),
    /// Track a file that expires like a certificate (an enrollment bundle: issued + 10
    /// days); it then appears in `list`.
    Track(crate::fleet_cmds::TrackArgs),
    /// Stop tracking a file (by id prefix, path or name): no more reminders for it.
    Untrack(crate::fleet_cmds::UntrackArgs),
    /// Forget an endpoint probed by hand (HOST:PORT or tls://HOST:PORT): its state and
    /// findings leave status, check and reports; recorded in the audit history.
    Forget(ForgetArgs),
    /// The inventory as Prometheus metrics (text exposition), on stdout or --out FILE.
    Metrics(crate::fleet_cmds::MetricsArgs),
    /// Policies: check a folder, explain which applies to a certificate, list conflicts.
    Policy(crate::policy_cmds::PolicyArgs),
    /// E-mail the reminders that are due (`--dry-run` prints them); needs --config FILE.
    Remind(crate::policy_cmds::RemindArgs),
    /// Silence reminders for one certificate until a date (expired ones are never silenced).
    Snooze(crate::policy_cmds::SnoozeArgs),
    /// List the snoozed certificates.
    Snoozed(crate::policy_cmds::SnoozedArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(crate::docs_cmds::CompletionsArgs),
    /// Print certctl's manual page (roff; `man -l -` reads it), or write all pages.
    Man(crate::docs_cmds::ManArgs),
}

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Files and folders to scan (folders recursively).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Role of the leaf certificates found [default: other; CA certificates get `ca`].
    #[arg(long, value_parser = parse_role)]
    pub role: Option<Role>,
    /// File holding the PKCS#12/PFX password [else $CERTCTL_PFX_PASSWORD].
    #[arg(long, value_name = "FILE")]
    pub pfx_password_file: Option<PathBuf>,
    /// Read every file, even those unchanged since the last scan.
    #[arg(long)]
    pub full: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only certificates of this role (gateway, iis, site-server, agent, ca, other).
    #[arg(long, value_parser = parse_role)]
    pub role: Option<Role>,
    /// Not yet expired, but expiring within DUR (30d, 12h, 2w).
    #[arg(long, value_name = "DUR")]
    pub expiring_within: Option<Duration>,
    /// Already expired.
    #[arg(long)]
    pub expired: bool,
    /// Issuer DN contains TEXT (case-insensitive).
    #[arg(long, value_name = "TEXT")]
    pub issuer: Option<String>,
    /// Subject CN or a SAN contains TEXT (case-insensitive).
    #[arg(long, value_name = "TEXT")]
    pub name: Option<String>,
    /// Only permanent or only ephemeral (6-hour) credentials, e.g. to keep agents' short-lived
    /// certificates out of the 7-day list. CA certificates have neither kind.
    #[arg(long, value_name = "KIND", value_parser = parse_kind)]
    pub kind: Option<CredentialKind>,
    #[command(flatten)]
    pub output: TableOutputArgs,
}

#[derive(Debug, Args)]
pub struct TableOutputArgs {
    /// Print a JSON array.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// Print CSV.
    #[arg(long)]
    pub csv: bool,
}

#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Fingerprint prefix (≥ 8 hex characters, colons allowed) or exact subject CN / SAN.
    pub id: String,
    /// Every certificate with that name (every renewal), not only the current ones.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The file to read (PEM, DER or PKCS#12/PFX).
    pub file: PathBuf,
    /// File holding the PKCS#12/PFX password [else $CERTCTL_PFX_PASSWORD].
    #[arg(long, value_name = "FILE")]
    pub pfx_password_file: Option<PathBuf>,
    /// For monitoring, like `check`: one line, exit 0 OK / 1 WARNING / 2 CRITICAL by the
    /// soonest expiry in the file (with --json the array is printed and the exit code is the
    /// same).
    #[arg(long)]
    pub check: bool,
    /// With --check: warn when a certificate expires within DUR.
    #[arg(long, value_name = "DUR", default_value = "30d", requires = "check")]
    pub warn: Duration,
    /// With --check: critical when a certificate expires within DUR (or has expired).
    #[arg(long, value_name = "DUR", default_value = "7d", requires = "check")]
    pub critical: Duration,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Warn when a certificate expires within DUR.
    #[arg(long, value_name = "DUR", default_value = "30d")]
    pub warn: Duration,
    /// Critical when a certificate expires within DUR (or has expired).
    #[arg(long, value_name = "DUR", default_value = "7d")]
    pub critical: Duration,
    /// Only certificates and endpoints of this role.
    #[arg(long, value_parser = parse_role)]
    pub role: Option<Role>,
    /// Judge each certificate by the warn/critical of its policy in DIR (see `policy
    /// explain`); certificates no policy matches keep --warn/--critical.
    #[arg(long, value_name = "DIR")]
    pub policies: Option<PathBuf>,
    /// Print the report as JSON (the exit code is the same).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// The endpoint: HOST:PORT or tls://HOST:PORT, as `status` lists it.
    pub address: String,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// The endpoints, `host:port` (IPv6 as `[::1]:443`).
    #[arg(value_name = "HOST:PORT", required_unless_present = "file")]
    pub address: Vec<String>,
    /// Also probe the endpoints listed in FILE (one `host:port` per line; blank lines and
    /// `#` comments are skipped).
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// SNI name to send (default: the host).
    #[arg(long, value_name = "NAME")]
    pub sni: Option<String>,
    /// Role of the served leaf certificate [default: other; a CA certificate gets `ca`].
    #[arg(long, value_parser = parse_role)]
    pub role: Option<Role>,
    /// Text the leaf's issuer must contain; another issuer suggests a TLS-inspecting proxy.
    #[arg(long, value_name = "TEXT")]
    pub expect_issuer: Option<String>,
    /// Give up after DUR (connect, handshake).
    #[arg(long, value_name = "DUR", default_value = "10s")]
    pub timeout: Duration,
    /// PEM bundle of trusted CAs [default: OpenSSL's default paths].
    #[arg(long, value_name = "FILE")]
    pub trust_store: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where to write the fleet [default: a new temporary folder]. Its store goes in
    /// DIR/store unless --store is given.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
}

fn parse_kind(s: &str) -> Result<CredentialKind, String> {
    match s {
        "permanent" => Ok(CredentialKind::Permanent),
        "ephemeral" => Ok(CredentialKind::Ephemeral),
        other => Err(format!(
            "`{other}` is not a credential kind: permanent or ephemeral"
        )),
    }
}

#[derive(Debug, Args)]
pub struct StoreArgs {
    #[command(subcommand)]
    pub command: StoreCommand,
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Check the store: every record decodes and has all its index entries, no index entry
    /// or file state leads nowhere, no file location is claimed twice. Exit 0 when
    /// consistent, 4 when not. Reads everything (minutes on millions of certificates).
    Verify(OutputArgs),
    /// Write a point-in-time copy of the whole store (records, indexes, CA folders with
    /// their keys as stored, workflows, ...) to one file (0600), through certd while it
    /// runs, or directly when it is stopped. Exit 0 written, 4 failed (nothing at FILE).
    Backup(BackupArgs),
    /// Restore a backup into an empty or absent folder (--store DIR): the manifest and every
    /// member's hash are checked before anything is written, then `store verify` runs.
    /// Exit 0 restored, 4 refused or failed (nothing left at DIR).
    Restore(RestoreArgs),
    /// Remove expired certificates that no source holds any more, once past the retention
    /// windows (certd's `[retention]`, else 7d for ephemeral credentials and 90d for other
    /// leaves). Never removed: revoked and CA certificates, managed CAs' and what they
    /// issued, certificates named by a workflow, an audit event or a snooze. What is removed
    /// of an agent's ephemeral credentials stays as a summary (`show NAME`). Through certd
    /// when it runs. Needs --yes unless --dry-run.
    Prune(PruneArgs),
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The backup file to write (replaced atomically when it exists).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup file (`store backup --out FILE`).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Report what would be removed; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Remove without asking (required unless --dry-run).
    #[arg(long)]
    pub yes: bool,
    /// Keep ephemeral credentials this long after expiry [default: certd's, else 7d].
    #[arg(long, value_name = "DUR")]
    pub ephemeral_after_expiry: Option<Duration>,
    /// Keep other leaves this long after expiry [default: certd's, else 90d].
    #[arg(long, value_name = "DUR")]
    pub gone_after: Option<Duration>,
    /// Certificates removed per atomic batch [default: certd's, else 5000].
    #[arg(long, value_name = "N")]
    pub batch: Option<usize>,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every option of every subcommand says what it does in `--help` (and so in the man
    /// pages): an option listed with an empty description is a question the user cannot
    /// answer without the source.
    #[test]
    fn every_option_of_every_command_has_help() {
        fn walk(command: &clap::Command, path: String, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if arg.is_hide_set() || id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} --{id}"));
                }
            }
            for sub in command.get_subcommands() {
                walk(sub, format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut command = Cli::command();
        command.build();
        let mut missing = Vec::new();
        walk(&command, "certctl".to_string(), &mut missing);
        assert!(missing.is_empty(), "options without help: {missing:#?}");
    }
}
