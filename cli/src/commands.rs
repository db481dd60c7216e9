//! One function per subcommand: call the engine, print the answer.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration as StdDuration;

use anyhow::{bail, Context, Result};
use certctl_daemon::api::{self, ProbeReport, Request, Response, StatusReport};
use certctl_daemon::control::Client;
use certctl_daemon::fleet;
use certctl_daemon::formats;
use certctl_daemon::inventory::{self, ScanOptions, ScanProgress, ScanSummary};
use certctl_daemon::probe::ProbeTarget;
use certctl_daemon::query::{self, CheckReport, ListFilter, Stats, Verdict};
use certctl_daemon::view::{CertificateView, Printable, EXPIRING_SECS};
use certctl_store::{now, rfc3339, Certificate, CredentialKind, Role, Store, StoreError, UnixTime};

use crate::args::*;
use crate::table::Table;
use crate::{store_path, Exit};

/// How long certctl waits for certd to answer a query, and a scan or probe.
const QUERY_TIMEOUT: StdDuration = StdDuration::from_secs(120);
const WORK_TIMEOUT: StdDuration = StdDuration::from_secs(3600);

pub fn run(cli: Cli) -> Result<Exit> {
    let config_file = cli.config;
    let store_flag = crate::policy_cmds::store_flag(cli.store, config_file.as_deref())?;
    match cli.command {
        Command::Scan(a) => scan(&Session::open(store_flag)?, a),
        Command::List(a) => crate::fleet_cmds::list(&Session::existing(store_flag)?, a, list),
        Command::Show(a) => show(&Session::existing(store_flag)?, a),
        Command::Inspect(a) => inspect(a),
        Command::Stats(a) => stats(&Session::existing(store_flag)?, a),
        Command::Check(a) => match Session::existing(store_flag).and_then(|s| check(&s, a)) {
            Ok(exit) => Ok(exit),
            // Nagios: the state is unknown when the store, certd or the policies cannot be
            // used.
            Err(e) => {
                println!("UNKNOWN: {}", crate::one_line(&e));
                Ok(Exit::Unknown)
            }
        },
        Command::Probe(a) => probe(&Session::open(store_flag)?, a),
        Command::Status(a) => status(&Session::existing(store_flag)?, a),
        Command::Store(StoreArgs {
            command: StoreCommand::Verify(a),
        }) => verify_store(&Session::existing(store_flag)?, a),
        Command::Store(StoreArgs {
            command: StoreCommand::Backup(a),
        }) => crate::backup_cmds::backup(Session::existing(store_flag)?, a),
        Command::Store(StoreArgs {
            command: StoreCommand::Restore(a),
        }) => crate::backup_cmds::restore(store_flag, a),
        Command::Store(StoreArgs {
            command: StoreCommand::Prune(a),
        }) => prune_store(&Session::existing(store_flag)?, config_file.as_deref(), a),
        Command::Demo(a) => demo(store_flag, a),
        Command::Ca(a) => {
            let session = match a.command {
                crate::ca_args::CaCommand::Init(_) => Session::open(store_flag)?,
                _ => Session::existing(store_flag)?,
            };
            crate::ca_cmds::ca(&session, a)
        }
        Command::Issue(a) => crate::ca_cmds::issue(&Session::open(store_flag)?, a),
        Command::Revoke(a) => crate::ca_cmds::revoke(&Session::existing(store_flag)?, a),
        Command::Regenerate(a) => {
            crate::ca_cmds::regenerate(&Session::existing(store_flag)?, config_file.as_deref(), a)
        }
        Command::Workflows(a) => crate::ca_cmds::workflows(&Session::existing(store_flag)?, a),
        Command::History(a) => crate::ca_cmds::history(&Session::existing(store_flag)?, a),
        Command::Crl(a) => {
            crate::ca_cmds::crl(&Session::existing(store_flag)?, config_file.as_deref(), a)
        }
        Command::Agents(a) => {
            let session = match a.command {
                crate::fleet_cmds::AgentsCommand::ImportRegistrations { .. } => {
                    Session::open(store_flag)?
                }
                _ => Session::existing(store_flag)?,
            };
            crate::fleet_cmds::agents_cmd(&session, config_file.as_deref(), a)
        }
        Command::Report(a) => crate::fleet_cmds::report(&Session::existing(store_flag)?, a),
        Command::Track(a) => crate::fleet_cmds::track(&Session::open(store_flag)?, a),
        Command::Untrack(a) => crate::fleet_cmds::untrack(&Session::existing(store_flag)?, a),
        Command::Forget(a) => forget(&Session::existing(store_flag)?, a),
        Command::Metrics(a) => crate::fleet_cmds::metrics(&Session::existing(store_flag)?, a),
        Command::Policy(a) => crate::policy_cmds::policy(store_flag, config_file.as_deref(), a),
        Command::Remind(a) => crate::policy_cmds::remind(store_flag, config_file.as_deref(), a),
        Command::Snooze(a) => crate::policy_cmds::snooze(&Session::existing(store_flag)?, a),
        Command::Snoozed(a) => crate::policy_cmds::snoozed(&Session::existing(store_flag)?, a),
        Command::Completions(a) => crate::docs_cmds::completions(a),
        Command::Man(a) => crate::docs_cmds::man(a),
    }
}

// ---- direct or through certd ---------------------------------------------------------------

/// Whether certd answers on the store's control socket. Nothing listening (no socket, or a
/// stale one) means direct mode; a socket certctl may not use — another user's store, or a
/// certd of another user, which refuses other users' connections — is an error naming the
/// socket, never a reason to open the store directly.
fn daemon_listens(store: &Path) -> Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let socket = certctl_daemon::control::socket_path(store);
    let me = rustix::process::geteuid().as_raw();
    let run_as = |uid: u32| {
        format!("you are uid {me}; run certctl as uid {uid}, the user certd runs as (for the systemd unit: `sudo -u certd certctl ...`)")
    };
    match std::os::unix::net::UnixStream::connect(&socket) {
        Ok(_) => match std::fs::metadata(&socket) {
            // certd made the socket, so its owner is certd's user: certd answers only it.
            Ok(meta) if meta.uid() != me => bail!(
                "cannot use the control socket {}: permission denied: certd runs as uid {} and answers only that user ({})",
                socket.display(),
                meta.uid(),
                run_as(meta.uid())
            ),
            _ => Ok(true),
        },
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            let owner = std::fs::metadata(store)
                .map(|m| m.uid())
                .ok()
                .filter(|&uid| uid != me);
            bail!(
                "cannot use the control socket {}: permission denied{}",
                socket.display(),
                match owner {
                    Some(uid) => format!(": the store belongs to uid {uid} ({})", run_as(uid)),
                    None => String::new(),
                }
            )
        }
        Err(_) => Ok(false),
    }
}

/// Where requests go: certd when it runs on the store, else the store opened directly.
pub enum Session {
    Direct(Store),
    Daemon(PathBuf),
}

impl Session {
    /// For commands that add to the inventory: the store is created when missing.
    pub fn open(store_flag: Option<PathBuf>) -> Result<Session> {
        Session::connect(store_flag, Store::open)
    }

    /// For commands that read (and act on what is there): a missing store is an error
    /// naming the path, never a new empty store.
    pub fn existing(store_flag: Option<PathBuf>) -> Result<Session> {
        Session::connect(store_flag, Store::open_existing)
    }

    fn connect(
        store_flag: Option<PathBuf>,
        open: fn(&Path) -> Result<Store, StoreError>,
    ) -> Result<Session> {
        let path = store_path(store_flag)?;
        if daemon_listens(&path)? {
            return Ok(Session::Daemon(path));
        }
        match open(&path) {
            Ok(store) => Ok(Session::Direct(store)),
            Err(e @ StoreError::Locked { .. }) => Err(anyhow::Error::new(e).context(format!(
                "no certd answers on {} either; if certd is starting, retry in a moment",
                certctl_daemon::control::socket_path(&path).display()
            ))),
            Err(e) => Err(e.into()),
        }
    }

    pub(crate) fn call(&self, request: Request, timeout: StdDuration) -> Result<Response> {
        let response = match self {
            // `$CERTCTL_NOW` (tests) moves the clock of direct mode.
            Session::Direct(store) => {
                let t = crate::policy_cmds::clock()?;
                api::execute(store, request, t, &ScanProgress::default())
            }
            Session::Daemon(path) => {
                let client = Client::connect(path)
                    .with_context(|| format!("certd stopped answering on {}", path.display()))?;
                client.call(&request, timeout)?
            }
        };
        if let Response::Error { message, .. } = response {
            bail!("{message}");
        }
        Ok(response)
    }

    /// `list --json`: the text goes to stdout as it is made. Through certd it is rendered
    /// there and streamed (no certificate is encoded twice); a certd that does not know
    /// the request yet gets the plain list and the text is rendered here.
    fn list_json(&self, filter: ListFilter, t: UnixTime) -> Result<()> {
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
        let answer = match self {
            Session::Direct(store) => match api::list_json(store, &filter, now(), t, &mut out) {
                Ok(written) => {
                    written?;
                    Response::Stream
                }
                Err(error) => *error,
            },
            Session::Daemon(path) => {
                let client = Client::connect(path)
                    .with_context(|| format!("certd stopped answering on {}", path.display()))?;
                let request = Request::ListJson {
                    filter: filter.clone(),
                    at: t,
                };
                match client.call_streaming(&request, QUERY_TIMEOUT, &mut out)? {
                    Response::Error {
                        kind: api::ErrorKind::Invalid,
                        ..
                    } => {
                        let certs = self.certificates(Request::List { filter })?;
                        certctl_daemon::view::write_json_list(&certs, t, &mut out)?;
                        Response::Stream
                    }
                    other => other,
                }
            }
        };
        match answer {
            Response::Stream => {}
            Response::Error { message, .. } => bail!("{message}"),
            other => return Err(unexpected(&other)),
        }
        out.flush()?;
        Ok(())
    }

    /// `list` as a table or CSV: the certificates handed to `each` batch by batch as they
    /// are read. Through certd they are streamed ([`Request::ListLines`]); a certd that does
    /// not know the request yet gets the plain list (one batch).
    fn list_batches(
        &self,
        filter: ListFilter,
        mut each: impl FnMut(Vec<Certificate>) -> std::io::Result<()>,
    ) -> Result<()> {
        let answer = match self {
            Session::Direct(store) => {
                query::list_batches(store, &filter, now(), |batch| {
                    each(batch).map_err(anyhow::Error::from)
                })?;
                Response::Stream
            }
            Session::Daemon(path) => {
                let client = Client::connect(path)
                    .with_context(|| format!("certd stopped answering on {}", path.display()))?;
                let request = Request::ListLines {
                    filter: filter.clone(),
                };
                let mut lines = certctl_daemon::api::CertificateLines::new(&mut each);
                match client.call_streaming(&request, QUERY_TIMEOUT, &mut lines)? {
                    Response::Error {
                        kind: api::ErrorKind::Invalid,
                        ..
                    } => {
                        let certs = self.certificates(Request::List { filter })?;
                        each(certs)?;
                        Response::Stream
                    }
                    other => other,
                }
            }
        };
        match answer {
            Response::Stream => Ok(()),
            Response::Error { message, .. } => bail!("{message}"),
            other => Err(unexpected(&other)),
        }
    }

    fn certificates(&self, request: Request) -> Result<Vec<Certificate>> {
        match self.call(request, QUERY_TIMEOUT)? {
            Response::Certificates { certificates } => Ok(certificates),
            other => Err(unexpected(&other)),
        }
    }
}

pub(crate) fn unexpected(r: &Response) -> anyhow::Error {
    anyhow::anyhow!("unexpected answer from certd: {r:?}")
}

// ---- scan ----------------------------------------------------------------------------------

/// The PKCS#12 password: from the file, else `$CERTCTL_PFX_PASSWORD` (never from argv).
fn pfx_password(file: Option<&Path>) -> Result<Option<String>> {
    if let Some(f) = file {
        let secret = certctl_daemon::ca::Secret::from_private_file(f)
            .context("cannot use the PFX password file")?;
        return Ok(Some(secret.0));
    }
    Ok(std::env::var("CERTCTL_PFX_PASSWORD").ok())
}

fn scan(session: &Session, a: ScanArgs) -> Result<Exit> {
    let options = ScanOptions {
        role: a.role,
        pfx_password: pfx_password(a.pfx_password_file.as_deref())?,
        full: a.full,
        threads: 0,
    };
    // Absolute paths in both modes: certd does not share our working directory, and the
    // paths in errors and sources read the same whoever scanned. A path that does not
    // exist stays as given and is reported by the scan.
    let paths: Vec<PathBuf> = a
        .paths
        .iter()
        .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
        .collect();
    let summary = match session {
        Session::Direct(store) => scan_with_progress(store, &paths, &options)?,
        Session::Daemon(_) => match session.call(Request::Scan { paths, options }, WORK_TIMEOUT)? {
            Response::Scan { summary } => summary,
            other => return Err(unexpected(&other)),
        },
    };
    print_scan_failures(&summary);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!("{}", scan_summary_line(&summary));
    }
    Ok(if summary.files_failed > 0 {
        Exit::PartialFailure
    } else {
        Exit::Success
    })
}

fn scan_with_progress(
    store: &Store,
    paths: &[PathBuf],
    options: &ScanOptions,
) -> Result<ScanSummary> {
    let progress = ScanProgress::default();
    let show = std::io::stderr().is_terminal();
    let done = std::sync::atomic::AtomicBool::new(false);
    let summary = std::thread::scope(|scope| {
        let ticker = show.then(|| {
            let (progress, done) = (&progress, &done);
            scope.spawn(move || progress_bar(progress, done))
        });
        let result = inventory::scan(store, paths, options, now(), &progress);
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = ticker {
            let _ = t.join();
        }
        result
    })?;
    Ok(summary)
}

fn progress_bar(progress: &ScanProgress, done: &std::sync::atomic::AtomicBool) {
    use std::sync::atomic::Ordering::Relaxed;
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} scanning {pos}/{len} files, {msg} [{elapsed}]",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    while !done.load(Relaxed) {
        bar.set_length(progress.files_found.load(Relaxed));
        bar.set_position(progress.files_done.load(Relaxed));
        bar.set_message(format!(
            "{} certificates",
            progress.certificates.load(Relaxed)
        ));
        std::thread::sleep(StdDuration::from_millis(100));
    }
    bar.finish_and_clear();
}

fn print_scan_failures(summary: &ScanSummary) {
    let stderr = std::io::stderr();
    let mut err = stderr.lock();
    for f in &summary.errors {
        // File names come from the scanned folders: shown escaped.
        let _ = writeln!(
            err,
            "error: {}: {}",
            Printable(&f.path),
            Printable(&f.error)
        );
    }
    for w in &summary.warnings {
        let _ = writeln!(
            err,
            "warning: {}: {}",
            Printable(&w.path),
            Printable(&w.error)
        );
    }
}

fn scan_summary_line(s: &ScanSummary) -> String {
    format!(
        "scanned {} files ({} read, {} unchanged, {} without certificates, {} failed): {} certificates new, {} updated, {} seen; {} sources gone",
        s.files_read + s.files_unchanged + s.files_skipped + s.files_failed,
        s.files_read,
        s.files_unchanged,
        s.files_skipped,
        s.files_failed,
        s.certificates_new,
        s.certificates_updated,
        s.certificates_seen,
        s.sources_gone
    )
}

// ---- queries -------------------------------------------------------------------------------

fn list(session: &Session, a: ListArgs) -> Result<Exit> {
    let filter = ListFilter {
        role: a.role,
        expiring_within: a.expiring_within,
        expired: a.expired,
        issuer: a.issuer,
        name: a.name,
        kind: a.kind,
    };
    let t = now();
    if a.output.json {
        session.list_json(filter, t)?;
        return Ok(Exit::Success);
    }
    if !a.output.csv && std::io::stdout().is_terminal() {
        return list_table_as_read(session, filter, t);
    }
    let mut certs = Vec::new();
    session.list_batches(filter, |batch| {
        certs.extend(batch);
        Ok(())
    })?;
    print_certificates(&certs, t, a.output.json, a.output.csv)?;
    Ok(Exit::Success)
}

/// `list` on a terminal: each batch of rows is printed as it is read (the first screen
/// at once), its columns aligned with the rows above or wider. Elsewhere (a pipe, a file)
/// the table is printed whole, aligned as one.
fn list_table_as_read(session: &Session, filter: ListFilter, t: UnixTime) -> Result<Exit> {
    let stdout = std::io::stdout();
    let mut widths = Vec::new();
    let mut count = 0usize;
    session.list_batches(filter, |batch| {
        let mut out = stdout.lock();
        let block = certificate_table(&batch, t).render_block(&mut widths, count == 0);
        out.write_all(block.as_bytes())?;
        count += batch.len();
        out.flush()
    })?;
    let mut out = stdout.lock();
    if count == 0 {
        write!(out, "{}", certificate_table(&[], t).render())?;
    }
    writeln!(out, "{count} certificates")?;
    out.flush()?;
    Ok(Exit::Success)
}

fn print_certificates(certs: &[Certificate], t: UnixTime, json: bool, csv: bool) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if json {
        certctl_daemon::view::write_json_list(certs, t, &mut out)?;
    } else if csv {
        let mut w = csv::Writer::from_writer(out);
        w.write_record(CertificateView::CSV_HEADER)?;
        for c in certs {
            w.write_record(CertificateView::new(c, t).csv_row())?;
        }
        w.flush()?;
    } else {
        write!(out, "{}", certificate_table(certs, t).render())?;
        writeln!(out, "{} certificates", certs.len())?;
    }
    out_flush()
}

fn out_flush() -> Result<()> {
    std::io::stdout().flush()?;
    Ok(())
}

fn certificate_table(certs: &[Certificate], t: UnixTime) -> Table {
    let mut table = Table::new(&[
        "EXPIRES",
        "DAYS",
        "STATUS",
        "ROLE",
        "NAME",
        "KEY",
        "FINGERPRINT",
        "WHERE",
    ]);
    for c in certs {
        let where_ = c
            .current_sources()
            .next()
            .map(|s| {
                let more = c.current_sources().count() - 1 + c.more_sources as usize;
                if more > 0 {
                    format!("{} (+{more})", s.location)
                } else {
                    s.location.to_string()
                }
            })
            .unwrap_or_else(|| "(gone)".into());
        let role = match c.credential_kind() {
            Some(CredentialKind::Ephemeral) if c.role == Role::Agent => {
                "agent (ephemeral)".to_string()
            }
            _ => c.role.to_string(),
        };
        table.row(vec![
            rfc3339(c.facts.not_after)[..10].to_string(),
            c.days_left(t).to_string(),
            c.status(t, EXPIRING_SECS).to_string(),
            role,
            c.facts.display_name().to_string(),
            c.facts.key.to_string(),
            c.fingerprint().to_hex()[..16].to_string(),
            where_,
        ]);
    }
    table
}

fn show(session: &Session, a: ShowArgs) -> Result<Exit> {
    let t = now();
    let id = a.id.clone();
    let found = session.certificates(Request::Find { id: a.id })?;
    let (certs, older) = if a.all {
        (found, 0)
    } else {
        current_and_older(found)
    };
    if a.output.json {
        let views: Vec<CertificateView> =
            certs.iter().map(|c| CertificateView::new(c, t)).collect();
        println!("{}", serde_json::to_string_pretty(&views)?);
        return Ok(Exit::Success);
    }
    for (i, c) in certs.iter().enumerate() {
        if i > 0 {
            println!();
        }
        print!("{}", describe(&CertificateView::new(c, t)));
    }
    if older > 0 {
        println!();
        println!(
            "{older} older certificate{} with this name (earlier renewals, no longer in any source): certctl show {} --all",
            if older == 1 { "" } else { "s" },
            Printable(&id)
        );
    }
    // What retention kept of removed renewals (a certd without the request: nothing).
    let named = certs
        .iter()
        .any(|c| c.facts.display_name().eq_ignore_ascii_case(&id));
    if named {
        if let Ok(Response::PrunedRenewals { renewals: Some(p) }) =
            session.call(Request::PrunedRenewals { agent: id }, QUERY_TIMEOUT)
        {
            let every = p
                .renewal_interval_secs()
                .map(|s| format!(", renewed about every {}", human_interval(s)))
                .unwrap_or_default();
            println!(
                "Pruned renewals:      {} removed by retention (first seen {}, last issued {}, last expiry {}{every})",
                p.count,
                rfc3339(p.first_seen),
                rfc3339(p.last_issued),
                rfc3339(p.last_expiry)
            );
        }
    }
    Ok(Exit::Success)
}

/// The certificates a name currently stands for (present in a source; else the newest),
/// and how many older ones there are besides.
fn current_and_older(mut certs: Vec<Certificate>) -> (Vec<Certificate>, usize) {
    if certs.len() <= 1 {
        return (certs, 0);
    }
    let total = certs.len();
    let present: Vec<Certificate> = certs
        .iter()
        .filter(|c| c.current_sources().next().is_some())
        .cloned()
        .collect();
    let current = if present.is_empty() {
        certs.sort_by_key(|c| (c.facts.not_after, c.facts.fingerprint));
        certs.pop().into_iter().collect()
    } else {
        present
    };
    let older = total - current.len();
    (current, older)
}

/// `6h`, `2d 3h`, `45m`.
fn human_interval(secs: i64) -> String {
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    match (d, h, m) {
        (0, 0, m) => format!("{m}m"),
        (0, h, 0) => format!("{h}h"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, 0, _) => format!("{d}d"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

fn prune_store(session: &Session, config_file: Option<&Path>, a: PruneArgs) -> Result<Exit> {
    if !a.dry_run && !a.yes {
        bail!("refusing to remove certificates without --yes: run `certctl store prune --dry-run` to see what would be removed, then again with --yes");
    }
    let secs = |d: Option<certctl_daemon::Duration>| d.map(|d| d.as_secs());
    let request = certctl_daemon::retention::PruneRequest {
        dry_run: a.dry_run,
        ephemeral_after_expiry: secs(a.ephemeral_after_expiry),
        gone_after: secs(a.gone_after),
        batch: a.batch,
    };
    let summary = match session {
        Session::Direct(store) => {
            // `certctl --config FILE`: certd's windows, as certd would prune.
            let configured = match config_file {
                Some(file) => certctl_daemon::config::load(file)?.retention.policy,
                None => Default::default(),
            };
            let t = crate::policy_cmds::clock()?;
            let terminal = std::io::stderr().is_terminal() && !a.output.json;
            let mut progress = |r: &certctl_store::PruneReport| {
                if terminal {
                    eprint!(
                        "\r{} {} certificates ({} examined, {} batches)",
                        if a.dry_run { "would remove" } else { "removed" },
                        r.removed,
                        r.examined,
                        r.batches
                    );
                }
            };
            let summary =
                certctl_daemon::retention::pass(store, &request, configured, t, &mut progress)?;
            if terminal {
                eprintln!();
            }
            summary
        }
        Session::Daemon(_) => {
            match session.call(Request::Prune { prune: request }, WORK_TIMEOUT)? {
                Response::Prune { summary } => summary,
                other => return Err(unexpected(&other)),
            }
        }
    };
    if a.output.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        let r = &summary.report;
        println!(
            "{} {} expired certificate{} that no source holds ({} ephemeral); {} examined, {} kept (revoked, CA, managed, or named by a workflow, audit event or snooze); {} certificates left",
            if summary.dry_run { "would remove" } else { "removed" },
            r.removed,
            if r.removed == 1 { "" } else { "s" },
            r.removed_ephemeral,
            r.examined,
            r.kept_protected,
            summary.certificates_left
        );
    }
    Ok(Exit::Success)
}

/// The long, human form of one certificate.
fn describe(v: &CertificateView) -> String {
    let mut s = String::new();
    // Values come from the certificate: shown escaped (view::printable).
    let mut line = |k: &str, v: &str| {
        if !v.is_empty() {
            s.push_str(&format!("{k:<22}{}\n", Printable(v)));
        }
    };
    line("Fingerprint (SHA-256)", &v.fingerprint_sha256);
    line("Subject", &v.subject);
    line("Issuer", &v.issuer);
    line("Serial", &v.serial);
    line("Valid from", &v.not_before);
    line(
        "Valid until",
        &format!("{} ({} days left, {})", v.not_after, v.days_left, v.status),
    );
    line("Role", v.role.unwrap_or(""));
    line("Credential", v.credential_kind.unwrap_or(""));
    line("Key", &v.key);
    line("Signature", &v.signature_algorithm);
    line("CA", if v.is_ca { "yes" } else { "no" });
    let sans: Vec<&str> = v
        .sans
        .dns
        .iter()
        .chain(&v.sans.ip)
        .chain(&v.sans.email)
        .chain(&v.sans.uri)
        .map(String::as_str)
        .collect();
    line("SANs", &sans.join(", "));
    line("SPKI SHA-256", &v.spki_sha256);
    line("Subject key id", v.subject_key_id.as_deref().unwrap_or(""));
    line(
        "Authority key id",
        v.authority_key_id.as_deref().unwrap_or(""),
    );
    line("CRL", &v.crl_distribution_points.join(", "));
    line("OCSP", &v.ocsp_urls.join(", "));
    if let Some(r) = &v.revocation {
        line(
            "Revoked",
            &format!("{} ({}, by {})", r.revoked_at, r.reason, r.revoked_by),
        );
    }
    line("First seen", v.first_seen.as_deref().unwrap_or(""));
    line("Last seen", v.last_seen.as_deref().unwrap_or(""));
    for src in &v.sources {
        let state = match &src.gone_since {
            Some(g) => format!("gone since {g}"),
            None => format!("last seen {}", src.last_seen),
        };
        line("Source", &format!("{} ({state})", src.location()));
    }
    if v.more_sources > 0 {
        line("", &format!("... and {} more sources", v.more_sources));
    }
    s
}

fn inspect(a: InspectArgs) -> Result<Exit> {
    formats::ensure_legacy_provider();
    let password = pfx_password(a.pfx_password_file.as_deref())?;
    // Like a scan: never blocks on a FIFO or device, refuses files over the size cap.
    let (bytes, _) = inventory::read_file_bytes(&a.file)
        .map_err(|cause| anyhow::anyhow!("{}: {cause}", a.file.display()))?;
    certctl_daemon::x509::take_lax_date_notes();
    let certs = formats::read_certificates(&bytes, &a.file, password.as_deref())
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.file.display()))?;
    for note in certctl_daemon::x509::take_lax_date_notes() {
        eprintln!(
            "warning: {}: {}",
            Printable(&a.file.to_string_lossy()),
            Printable(&note)
        );
    }
    let t = now();
    let views: Vec<CertificateView> = certs
        .iter()
        .map(|f| CertificateView::from_facts(f, t))
        .collect();
    if a.output.json {
        println!("{}", serde_json::to_string_pretty(&views)?);
    } else if a.check {
        // The one line a monitoring system shows.
    } else {
        for (i, v) in views.iter().enumerate() {
            if i > 0 {
                println!();
            }
            println!("# certificate {i} of {}", a.file.display());
            print!("{}", describe(v));
        }
    }
    if !a.check {
        return Ok(Exit::Success);
    }
    let (verdict, line) = inspect_verdict(&a, &certs, t);
    if !a.output.json {
        println!("{line}");
    }
    Ok(match verdict {
        Verdict::Ok => Exit::Success,
        Verdict::Warning => Exit::Warning,
        Verdict::Critical => Exit::Critical,
    })
}

/// `inspect --check`: the verdict by the certificate of the file that expires first, and
/// the line that says it.
fn inspect_verdict(
    a: &InspectArgs,
    certs: &[certctl_store::CertificateFacts],
    t: UnixTime,
) -> (Verdict, String) {
    let file = a.file.display();
    let Some(first) = certs.iter().min_by_key(|c| c.not_after) else {
        return (Verdict::Ok, format!("OK: {file}: no certificates"));
    };
    let days = (first.not_after - t).div_euclid(86_400);
    let who = first.display_name();
    let (verdict, when) = if first.not_after <= t {
        (Verdict::Critical, format!("expired {} days ago", -days))
    } else if first.not_after <= t.saturating_add(a.critical.as_secs()) {
        (
            Verdict::Critical,
            format!("expires within {} ({days} days left)", a.critical),
        )
    } else if first.not_after <= t.saturating_add(a.warn.as_secs()) {
        (
            Verdict::Warning,
            format!("expires within {} ({days} days left)", a.warn),
        )
    } else {
        (Verdict::Ok, format!("{days} days left"))
    };
    let label = verdict.label();
    let of = if certs.len() > 1 {
        format!(" (the first to expire of {} certificates)", certs.len())
    } else {
        String::new()
    };
    (verdict, format!("{label}: {file}: {who} {when}{of}"))
}

fn stats(session: &Session, a: OutputArgs) -> Result<Exit> {
    let s: Stats = match session.call(Request::Stats, QUERY_TIMEOUT)? {
        Response::Stats { stats } => stats,
        other => return Err(unexpected(&other)),
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(Exit::Success);
    }
    println!("{} certificates", s.total);
    for (title, map) in [
        ("by role", &s.by_role),
        ("by status", &s.by_status),
        ("by key", &s.by_key),
        ("by credential kind", &s.by_credential_kind),
    ] {
        let mut t = Table::new(&[title, "COUNT"]);
        for (k, v) in map {
            t.row(vec![k.clone(), v.to_string()]);
        }
        println!();
        print!("{}", t.render());
    }
    Ok(Exit::Success)
}

fn verify_store(session: &Session, a: OutputArgs) -> Result<Exit> {
    let v = match session.call(Request::VerifyStore, WORK_TIMEOUT)? {
        Response::Verification { verification } => verification,
        other => return Err(unexpected(&other)),
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for p in &v.problems {
            println!("problem: {p}");
        }
        println!(
            "{}: {} certificates, {} index entries, {} files, {} workflows; {} problems",
            if v.is_ok() {
                "consistent"
            } else {
                "INCONSISTENT"
            },
            v.records,
            v.postings,
            v.files,
            v.workflows,
            v.problems.len()
        );
    }
    Ok(if v.is_ok() {
        Exit::Success
    } else {
        Exit::Failure
    })
}

fn check(session: &Session, a: CheckArgs) -> Result<Exit> {
    let t = crate::policy_cmds::clock()?;
    // Without --json only the summary is printed: certd sends the counts and the first
    // certificates, not every certificate that expires within the window.
    let request = Request::Check {
        warn: a.warn,
        critical: a.critical,
        brief: !a.json,
        role: a.role,
        policies: match &a.policies {
            Some(dir) => Some(std::path::absolute(dir)?),
            None => None,
        },
    };
    let report: CheckReport = match session.call(request, QUERY_TIMEOUT)? {
        Response::Check { report } => report,
        other => return Err(unexpected(&other)),
    };
    if a.json {
        let v = serde_json::json!({
            "verdict": report.verdict,
            "summary": report.summary(t),
            "considered": report.considered,
            "expired": report.expired.iter().map(|c| CertificateView::new(c, t)).collect::<Vec<_>>(),
            "critical": report.critical.iter().map(|c| CertificateView::new(c, t)).collect::<Vec<_>>(),
            "warning": report.warning.iter().map(|c| CertificateView::new(c, t)).collect::<Vec<_>>(),
            "findings": report.findings,
            "not_yet_valid": report.not_yet_valid,
            "stale_crls": report.stale_crls,
            "crls_expiring": report.crls_expiring,
            "failed_files": report.failed_files,
            "failed_files_total": report.failed_files_total,
            "stalled_renewals": report.stalled_renewals.iter().map(stalled_json).collect::<Vec<_>>(),
            "stalled_renewals_total": report.stalled_renewals_total,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&certctl_daemon::view::with_rfc3339_times(&v)?)?
        );
    } else {
        println!("{}", report.summary(t));
    }
    Ok(match report.verdict {
        Verdict::Ok => Exit::Success,
        Verdict::Warning => Exit::Warning,
        Verdict::Critical => Exit::Critical,
    })
}

/// `certctl forget HOST:PORT`: the endpoint's state and findings are deleted (through
/// certd when it runs); an unknown endpoint is an error naming it.
fn forget(session: &Session, a: ForgetArgs) -> Result<Exit> {
    let removed = match session.call(
        Request::Forget {
            address: a.address.clone(),
        },
        QUERY_TIMEOUT,
    )? {
        Response::Endpoints { endpoints } => endpoints,
        other => return Err(unexpected(&other)),
    };
    if a.output.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&certctl_daemon::view::with_rfc3339_times(&removed)?)?
        );
    } else {
        for e in &removed {
            println!(
                "forgot tls://{} ({} findings, last probe {})",
                Printable(&e.address),
                e.findings.len(),
                e.last_probe.map_or("never".into(), rfc3339)
            );
        }
    }
    Ok(Exit::Success)
}

/// A stalled renewal as `check --json` prints it (times in RFC 3339).
pub fn stalled_json(s: &certctl_daemon::stalled::StalledRenewal) -> serde_json::Value {
    serde_json::json!({
        "agent": s.agent,
        "fingerprint_sha256": s.fingerprint.to_hex(),
        "not_after": certctl_store::rfc3339(s.not_after),
        "stalled_since": certctl_store::rfc3339(s.stalled_since()),
        "grace": s.grace.to_string(),
        "grace_policy": s.grace_policy,
        "sources": s.sources,
    })
}

// ---- endpoints and status ------------------------------------------------------------------

/// `certctl probe A:443 [B:443 ...] [--file LIST]`: each endpoint in turn. The exit code
/// is the worst outcome: 0 no finding (or none that matters), 1 a warning finding, 2 a
/// critical one (unreachable, expired, untrusted, wrong name or issuer, not yet valid).
fn probe(session: &Session, a: ProbeArgs) -> Result<Exit> {
    let mut addresses = a.address.clone();
    if let Some(list) = &a.file {
        addresses.extend(probe_list(list)?);
    }
    if addresses.is_empty() {
        bail!("no endpoint to probe: give HOST:PORT or a --file that lists some");
    }
    let mut reports = Vec::with_capacity(addresses.len());
    for address in addresses {
        let target = ProbeTarget {
            address,
            sni: a.sni.clone(),
            role: a.role,
            expect_issuer: a.expect_issuer.clone(),
            timeout: StdDuration::from_secs(a.timeout.as_secs().max(1).unsigned_abs()),
            // certd does not share our working directory.
            trust_store: a
                .trust_store
                .as_ref()
                .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone())),
        };
        let report: ProbeReport = match session.call(Request::Probe { target }, WORK_TIMEOUT)? {
            Response::Probe { report } => report,
            other => return Err(unexpected(&other)),
        };
        if !a.json {
            print_probe(&report);
        }
        reports.push(report);
    }
    if a.json {
        // The served certificates in the same form as `list --json`; one endpoint is one
        // object (as before several could be given), several are an array of them.
        let t = now();
        let objects: Vec<serde_json::Value> = reports
            .iter()
            .map(|r| {
                serde_json::json!({
                    "endpoint": r.endpoint,
                    "error": r.error,
                    "chain": r.chain.iter().map(|c| CertificateView::new(c, t)).collect::<Vec<_>>(),
                })
            })
            .collect();
        let json = match <[serde_json::Value; 1]>::try_from(objects) {
            Ok([one]) => one,
            Err(many) => serde_json::Value::Array(many),
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&certctl_daemon::view::with_rfc3339_times(&json)?)?
        );
    }
    let worst = reports
        .iter()
        .flat_map(|r| &r.endpoint.findings)
        .map(|f| {
            if f.kind.is_critical() {
                Exit::Critical
            } else {
                Exit::Warning
            }
        })
        .max_by_key(|e| e.code())
        .unwrap_or(Exit::Success);
    let failed = reports.iter().any(|r| r.error.is_some());
    Ok(if failed { Exit::Critical } else { worst })
}

/// The endpoints of `probe --file LIST`: one per line, `#` comments and blank lines skipped.
fn probe_list(list: &Path) -> Result<Vec<String>> {
    // Bounded and never blocking, like every file certctl reads.
    let (bytes, _) = inventory::read_file_bytes(list)
        .map_err(|cause| anyhow::anyhow!("{}: {cause}", list.display()))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("{}: not UTF-8 text", list.display()))?;
    Ok(text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

fn print_probe(report: &ProbeReport) {
    let t = now();
    let e = &report.endpoint;
    match &report.error {
        Some(err) => println!("tls://{}: {err}", e.address),
        None => println!(
            "tls://{}: {} certificates served",
            e.address,
            report.chain.len()
        ),
    }
    if !report.chain.is_empty() {
        print!("{}", certificate_table(&report.chain, t).render());
    }
    if e.findings.is_empty() {
        println!("no findings");
    }
    for f in &e.findings {
        println!("finding: {}: {}", f.kind, Printable(&f.detail));
    }
}

fn status(session: &Session, a: OutputArgs) -> Result<Exit> {
    let status: StatusReport = match session.call(Request::Status, QUERY_TIMEOUT)? {
        Response::Status { status } => status,
        other => return Err(unexpected(&other)),
    };
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&certctl_daemon::view::with_rfc3339_times(&status)?)?
        );
        return Ok(Exit::Success);
    }
    match &status.daemon {
        Some(d) => println!(
            "mode: daemon (certd pid {}, up {}, config {})",
            d.pid,
            human_duration(d.uptime_secs),
            Printable(&d.config.to_string_lossy())
        ),
        None => println!("mode: direct (no certd running on this store; certctl opened it itself)"),
    }
    println!(
        "store: {} ({} certificates)",
        Printable(&status.store.to_string_lossy()),
        status.certificates
    );
    crate::policy_cmds::print_status(&status);
    crate::backup_cmds::print_restored(&status);
    if let Some(d) = &status.daemon {
        for s in &d.sources {
            println!(
                "source: {} (role {}{})",
                Printable(&s.path.to_string_lossy()),
                s.role.map_or("auto", |r| r.as_str()),
                if s.watched { ", watched" } else { "" }
            );
        }
        let mut t = Table::new(&["JOB", "SCHEDULE (UTC)", "LAST RUN", "OUTCOME", "NEXT RUN"]);
        for j in &d.schedules {
            t.row(vec![
                j.job.clone(),
                j.schedule.clone(),
                j.last_run.map_or("-".into(), rfc3339),
                j.last_outcome.clone().unwrap_or_else(|| "-".into()),
                j.next_run.map_or("-".into(), rfc3339),
            ]);
        }
        print!("{}", t.render());
    }
    for e in &status.endpoints {
        let state = if e.findings.is_empty() {
            "ok".to_string()
        } else {
            e.findings
                .iter()
                .map(|f| f.kind.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "endpoint: tls://{} — {state} (last probe {})",
            Printable(&e.address),
            e.last_probe.map_or("never".into(), rfc3339)
        );
        for f in &e.findings {
            println!("  {}: {}", f.kind, Printable(&f.detail));
        }
    }
    Ok(Exit::Success)
}

fn human_duration(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

// ---- demo ----------------------------------------------------------------------------------

fn demo(store_flag: Option<PathBuf>, a: DemoArgs) -> Result<Exit> {
    let dir = match a.dir {
        Some(d) => d,
        None => tempfile_dir()?,
    };
    let t = now();
    eprintln!("Writing the demo fleet to {} ...", dir.display());
    let fleet = fleet::write_demo_fleet(&dir, t).context("cannot write the demo fleet")?;
    let store_dir = store_flag.unwrap_or_else(|| dir.join("store"));
    let store = Store::open(&store_dir)?;
    let password = certctl_daemon::ca::Secret::from_private_file(&fleet.pfx_password_file)
        .context("cannot use the demo fleet's PFX password file")?
        .0;
    let mut total = ScanSummary::default();
    for (folder, role) in &fleet.folders {
        let options = ScanOptions {
            role: Some(*role),
            pfx_password: Some(password.trim_end().to_string()),
            full: false,
            threads: 0,
        };
        let s = scan_with_progress(&store, std::slice::from_ref(folder), &options)?;
        print_scan_failures(&s);
        total.files_read += s.files_read;
        total.files_unchanged += s.files_unchanged;
        total.files_skipped += s.files_skipped;
        total.files_failed += s.files_failed;
        total.certificates_new += s.certificates_new;
        total.certificates_updated += s.certificates_updated;
        total.certificates_seen += s.certificates_seen;
        total.sources_gone += s.sources_gone;
    }
    println!("{}", scan_summary_line(&total));
    println!();

    let attention = query::list(
        &store,
        &ListFilter {
            expiring_within: Some(certctl_daemon::Duration::days(30)),
            expired: true,
            ..Default::default()
        },
        t,
    )?;
    let (ephemeral, mut needs): (Vec<Certificate>, Vec<Certificate>) = attention
        .into_iter()
        .partition(|c| c.credential_kind() == Some(CredentialKind::Ephemeral));
    needs.retain(query::counts_for_check);
    println!(
        "Needs attention: {} certificates expired or expiring within 30 days",
        needs.len()
    );
    // Infrastructure first (gateway, IIS, site servers, CAs), then agents; each by expiry.
    needs.sort_by_key(|c| (c.role == Role::Agent, c.facts.not_after));
    const SHOWN: usize = 25;
    print!(
        "{}",
        certificate_table(&needs[..needs.len().min(SHOWN)], t).render()
    );
    if needs.len() > SHOWN {
        println!(
            "... and {} more agents (`certctl --store {} list --expiring-within 30d --expired`)",
            needs.len() - SHOWN,
            store_dir.display()
        );
    }
    let stalled = ephemeral.iter().filter(|c| c.facts.not_after <= t).count();
    if stalled > 0 {
        println!();
        println!("{stalled} ephemeral agent certificates have expired: check those agents' renewal (`certctl --store {} list --role agent --expired`).", store_dir.display());
    }
    let report = query::check(
        &store,
        certctl_daemon::Duration::days(30),
        certctl_daemon::Duration::days(7),
        None,
        t,
    )?;
    println!();
    println!("{}", report.summary(t));
    println!();
    println!("Try: certctl --store {} stats", store_dir.display());
    println!(
        "     certctl --store {} list --expiring-within 7d",
        store_dir.display()
    );
    println!(
        "     certctl --store {} show gw.contoso.example",
        store_dir.display()
    );
    Ok(Exit::Success)
}

fn tempfile_dir() -> Result<PathBuf> {
    let base = std::env::temp_dir();
    for n in 0..1000u32 {
        let dir = base.join(format!("certctl-demo-{}-{n}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", dir.display())),
        }
    }
    anyhow::bail!("cannot create a temporary folder in {}", base.display())
}
