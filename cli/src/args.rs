//! The top-level command line: the global options and the list of subcommands. Each
//! subcommand's arguments live with its code in `commands/`; `main.rs` dispatches.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::commands;
use crate::output::OutputArgs;

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
    Scan(commands::scan::ScanArgs),
    /// List certificates, soonest expiry first.
    List(commands::list::ListArgs),
    /// Show certificates by fingerprint prefix (≥ 8 hex chars) or exact subject CN / SAN.
    Show(commands::show::ShowArgs),
    /// Print the certificates of one file, without a store.
    Inspect(commands::inspect::InspectArgs),
    /// Count certificates by role, status and key type.
    Stats(OutputArgs),
    /// Monitoring check: exit 0 OK, 1 WARNING, 2 CRITICAL, with a one-line summary.
    Check(commands::check::CheckArgs),
    /// Fetch the chain a live TLS endpoint serves, record it and report findings.
    Probe(commands::probe::ProbeArgs),
    /// Whether certd runs on this store, and what it is doing.
    Status(OutputArgs),
    /// The store itself: `verify` checks that records, indexes and file states agree.
    Store(commands::store::StoreArgs),
    /// Build a demo fleet (CAs, gateway, IIS, site servers, 1,200 agents), scan it and
    /// print what needs attention.
    Demo(commands::demo::DemoArgs),
    /// Managed CAs (certctl holds their keys): init, list, export, crl.
    Ca(commands::ca::CaArgs),
    /// Issue a certificate from a managed CA: CN.pem, CN.key, CN.chain.pem (and CN.pfx).
    Issue(commands::issue::IssueArgs),
    /// Revoke certificates (one, or every one sharing a key or issued by a CA); publishes
    /// the CRL of a managed CA at once.
    Revoke(commands::revoke::RevokeArgs),
    /// Replace a certificate: new key and certificate from the same managed CA, optionally
    /// deployed over the old files and the old one revoked (a resumable workflow).
    Regenerate(commands::regenerate::RegenerateArgs),
    /// Renew a certificate now by its method (managed CA, SCEP), or every due one
    /// (`--due`; `--dry-run` lists them with method and reason).
    Renew(commands::renew::RenewArgs),
    /// List regenerate workflows, or resume an interrupted one.
    Workflows(commands::workflows::WorkflowsArgs),
    /// The audit trail of a certificate, or which certificates were valid at a moment.
    History(commands::history::HistoryArgs),
    /// CRLs of other CAs: fetch them and mark the certificates they list as revoked.
    Crl(commands::crl::CrlArgs),
    /// Agents locked out after a registration loss: import registrations, the pending
    /// queue, approve / block (audit history, deny list).
    Agents(commands::agents::AgentsArgs),
    /// Fleet reports (by-role, by-issuer, by-gateway, agents-by-credential, expiring,
    /// weak-keys, revoked, pending-agents, endpoint-findings, drift, clock-skew).
    Report(commands::report::ReportArgs),
    /// Track a file that expires like a certificate (an enrollment bundle: issued + 10
    /// days); it then appears in `list`.
    Track(commands::track::TrackArgs),
    /// Stop tracking a file (by id prefix, path or name): no more reminders for it.
    Untrack(commands::untrack::UntrackArgs),
    /// Forget an endpoint probed by hand (HOST:PORT or tls://HOST:PORT): its state and
    /// findings leave status, check and reports; recorded in the audit history.
    Forget(commands::forget::ForgetArgs),
    /// The inventory as Prometheus metrics (text exposition), on stdout or --out FILE.
    Metrics(commands::metrics::MetricsArgs),
    /// Policies: check a folder, explain which applies to a certificate, list conflicts.
    Policy(commands::policy::PolicyArgs),
    /// E-mail the reminders that are due (`--dry-run` prints them); needs --config FILE.
    Remind(commands::remind::RemindArgs),
    /// Silence reminders for one certificate until a date (expired ones are never silenced).
    Snooze(commands::snooze::SnoozeArgs),
    /// List the snoozed certificates.
    Snoozed(commands::snoozed::SnoozedArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(commands::completions::CompletionsArgs),
    /// Print certctl's manual page (roff; `man -l -` reads it), or write all pages.
    Man(commands::man::ManArgs),
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
