//! `certd run`: the daemon. It owns the store while it runs and:
//!
//! - re-scans the configured sources and probes the configured endpoints on their cron
//!   schedules (UTC), and once at start-up;
//! - watches source folders (notify) and scans what changed within about a second;
//! - answers `certctl` over the control socket ([`crate::api::control`]) with the same
//!   [`crate::api::execute`] that direct mode uses;
//! - serves Prometheus metrics on `[metrics] listen` (`crate::server::metrics_http`), and keeps
//!   the deny list (`[agents] deny_list`, else the remembered `--deny-list`) current after
//!   each scan;
//! - reloads its configuration on SIGHUP (an invalid one is rejected and the running one
//!   kept) and on SIGTERM/SIGINT cancels in-flight scans at a batch boundary, waits for
//!   them, flushes the store and exits 0.
//!
//! Every store write (scans, probes) takes one lock, so the merge logic never races.
//! The scheduler follows mini-redis's purge task: sleep until the next deadline or until
//! something else happens, whichever comes first.
//!
//! The top layer: may import every capability and `api`; nothing imports it but the
//! `certd` binary.

pub(crate) mod metrics_http;
pub(crate) mod signals;

pub use metrics_http::status_series;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration as StdDuration;

use certctl_store::{Store, StoreError, UnixTime};
use notify::Watcher;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::api::control::{ControlError, ControlListener};
use crate::api::{self, DaemonStatus, Request, Response, ScheduleStatus, SourceStatus};
use crate::config::{self, Config, ConfigError};
use crate::inventory::scan::{self, ScanOptions, ScanProgress};
use crate::probe;
use crate::server::signals::{SignalEvent, Signals};

/// certd's clock ([`crate::clock`]): read once; a `$CERTCTL_NOW` that is not a time is
/// logged and the wall clock used.
fn now() -> UnixTime {
    static FROZEN: std::sync::OnceLock<Option<UnixTime>> = std::sync::OnceLock::new();
    let frozen = FROZEN.get_or_init(|| match crate::clock::frozen() {
        Ok(Some(at)) => {
            tracing::warn!(
                now = at,
                "CERTCTL_NOW is set: certd's clock is frozen at it (tests only)"
            );
            Some(at)
        }
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(error = %e, "using the wall clock");
            None
        }
    });
    frozen.unwrap_or_else(certctl_store::now)
}

/// How long to let file events settle before scanning.
const WATCH_SETTLE: StdDuration = StdDuration::from_millis(500);
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: StdDuration = StdDuration::from_secs(10);

/// Why the daemon could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// certd.toml is invalid or cannot be read.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store cannot be opened (another certd holds it, a corrupt or unreadable
    /// folder, ...) or read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The control socket in the store folder cannot be bound (another certd runs, a bad
    /// permission, ...).
    #[error(transparent)]
    Control(#[from] ControlError),
    /// The SIGTERM/SIGINT/SIGHUP handlers cannot be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    /// The file watcher for `[scan] watch` could not be created.
    #[error("cannot watch the source folders: {0}")]
    Watch(#[from] notify::Error),
    /// The `/metrics` listener cannot bind its address.
    #[error("cannot serve metrics on {address} ([metrics] listen): {source}")]
    Metrics {
        /// The address `[metrics] listen` asks for.
        address: std::net::SocketAddr,
        /// Why binding it failed (in use, not permitted, ...).
        #[source]
        source: std::io::Error,
    },
}

/// How a job's last run went: its words (`certctl status`) and whether it succeeded
/// (`certctl_job_last_run_success`), decided where the job knows, never read back from the
/// words.
#[derive(Clone, Debug, PartialEq, Eq)]
struct JobOutcome {
    succeeded: bool,
    text: String,
}

impl JobOutcome {
    fn ok(text: impl Into<String>) -> JobOutcome {
        JobOutcome {
            succeeded: true,
            text: text.into(),
        }
    }

    fn failed(text: impl Into<String>) -> JobOutcome {
        JobOutcome {
            succeeded: false,
            text: text.into(),
        }
    }
}

/// The scheduled jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Job {
    Scan,
    Probe,
    /// Fetch other CAs' CRLs (`[crl]`).
    CrlFetch,
    Remind,
    /// Re-sign the managed CAs' CRLs before they expire, and republish any that is behind
    /// the store (at start-up and every [`CRL_UPKEEP_EVERY_SECS`]).
    CrlUpkeep,
    /// A scheduled backup (`[backup]`).
    Backup,
    /// Remove expired certificates nothing holds any more (`[retention]`, at start-up and
    /// every `[retention] every`).
    Retention,
    /// Renew the due certificates whose policy says `renew = "auto"` (`[renewal]`).
    Renew,
}

/// How often certd looks at the managed CAs' CRLs (re-signing is decided per CA by
/// `[crl] resign_before`, by default half a CRL's validity).
const CRL_UPKEEP_EVERY_SECS: i64 = 600;

impl Job {
    fn name(self) -> &'static str {
        match self {
            Job::Scan => "scan",
            Job::Probe => "probe",
            Job::CrlFetch => "crl-fetch",
            Job::Remind => "remind",
            Job::CrlUpkeep => "crl-upkeep",
            Job::Backup => "backup",
            Job::Retention => "retention",
            Job::Renew => "renew",
        }
    }
}

#[derive(Debug, Default, Clone)]
struct JobState {
    last_run: Option<UnixTime>,
    last_outcome: Option<JobOutcome>,
    next_run: Option<UnixTime>,
    running: bool,
}

/// What the daemon's tasks share.
struct Shared {
    store: Store,
    config_path: PathBuf,
    config: RwLock<Config>,
    started: UnixTime,
    jobs: Mutex<BTreeMap<Job, JobState>>,
    /// Held by every store writer (scans, probes), never during network I/O.
    writer: tokio::sync::Mutex<()>,
    /// Held by a reminder pass from start to end (one pass at a time, so no digest goes out
    /// twice); the pass takes `writer` only around its store work.
    remind: tokio::sync::Mutex<()>,
    /// Held by a renewal pass (scheduled or `certctl renew`) from start to end: one pass at
    /// a time, so `[renewal] max_concurrent` holds and no certificate gets two workflows.
    renew: tokio::sync::Mutex<()>,
    /// Set on shutdown: running scans stop at the next directory.
    cancel: Arc<AtomicBool>,
}

impl Shared {
    fn config(&self) -> Config {
        match self.config.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn job_update(&self, job: Job, f: impl FnOnce(&mut JobState)) {
        let mut jobs = match self.jobs.lock() {
            Ok(j) => j,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(jobs.entry(job).or_default());
    }

    fn progress(&self) -> ScanProgress {
        ScanProgress {
            cancel: self.cancel.clone(),
            ..Default::default()
        }
    }

    fn status(&self) -> Result<api::StatusReport, StoreError> {
        let config = self.config();
        let mut report = api::direct_status(&self.store)?;
        report.mode = "daemon".into();
        let t = now();
        let jobs = match self.jobs.lock() {
            Ok(j) => j.clone(),
            Err(p) => p.into_inner().clone(),
        };
        let schedule_of = |job: Job| match job {
            Job::Scan => config.scan.schedule.as_ref().map(|s| s.to_string()),
            Job::Probe => config.probe.schedule.as_ref().map(|s| s.to_string()),
            Job::CrlFetch => config.crl.schedule.as_ref().map(|s| s.to_string()),
            Job::Remind => config.reminders.as_ref().map(|r| r.schedule.to_string()),
            Job::CrlUpkeep => Some(format!("every {}s", CRL_UPKEEP_EVERY_SECS)),
            Job::Backup => config.backup.as_ref().map(|b| b.schedule.to_string()),
            Job::Retention => config
                .retention
                .enabled
                .then(|| format!("every {}s", config.retention.every.as_secs())),
            Job::Renew => config.renewal.schedule.as_ref().map(|s| s.to_string()),
        };
        report.daemon = Some(DaemonStatus {
            pid: std::process::id(),
            started: self.started,
            uptime_secs: t - self.started,
            config: self.config_path.clone(),
            sources: config
                .sources
                .iter()
                .map(|s| SourceStatus {
                    path: s.path.clone(),
                    role: s.role,
                    watched: config.scan.watch && s.path.is_dir(),
                })
                .collect(),
            schedules: [
                Job::Scan,
                Job::Probe,
                Job::CrlFetch,
                Job::Remind,
                Job::CrlUpkeep,
                Job::Backup,
                Job::Retention,
                Job::Renew,
            ]
            .into_iter()
            .map(|job| {
                let state = jobs.get(&job).cloned().unwrap_or_default();
                ScheduleStatus {
                    job: job.name().into(),
                    schedule: schedule_of(job).unwrap_or_else(|| "(not scheduled)".into()),
                    last_run: state.last_run,
                    last_succeeded: state.last_outcome.as_ref().map(|o| o.succeeded),
                    last_outcome: state.last_outcome.map(|o| o.text),
                    next_run: state.next_run,
                }
            })
            .collect(),
        });
        Ok(report)
    }
}

/// Runs the daemon until SIGTERM/SIGINT.
pub async fn run(config_path: PathBuf, config: Config) -> Result<(), DaemonError> {
    // Signals first: a SIGTERM that arrives while starting must still end certd cleanly.
    let mut signals = Signals::install().map_err(DaemonError::Signals)?;
    // A bounded page cache (`store_cache`, 32 MiB by default) rather than the store's
    // bulk-scan default of 1 GiB: certd runs for months next to other services.
    let store = Store::open_with_cache(&config.store, config.store_cache_bytes)?;
    let listener = ControlListener::bind(&config.store)?;
    tracing::info!(store = %config.store.display(), socket = %listener.path().display(), sources = config.sources.len(), endpoints = config.endpoints.len(), "certd started (schedules are in UTC)");
    let shared = shared_state(store, config_path, config);

    let mut tasks: JoinSet<()> = JoinSet::new();
    let control = tokio::spawn(serve_control(listener, shared.clone()));
    let mut metrics = match start_metrics(&shared, None).await {
        Ok(m) => m,
        Err(e) => {
            control.abort();
            let _ = control.await;
            return Err(e);
        }
    };

    let (watch_tx, mut watch_rx) = mpsc::unbounded_channel::<PathBuf>();
    let mut watcher = start_watcher(&shared.config(), watch_tx.clone())?;

    // Start-up: finish what a crash interrupted, then bring the store up to date at once.
    resume_workflows(&shared).await;
    warn_unsignable_crls(&shared);
    spawn_startup_jobs(&mut tasks, &shared);

    // Each job's next deadline, kept across rounds: a run that fell due while certd was
    // busy (settling file events, reloading) is started late, never skipped.
    let mut due: BTreeMap<Job, UnixTime> = BTreeMap::new();
    loop {
        let sleep = start_due_and_plan(&mut tasks, &shared, &mut due);
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            Some(path) = watch_rx.recv() => {
                tokio::time::sleep(WATCH_SETTLE).await;
                let mut changed = vec![path];
                while let Ok(p) = watch_rx.try_recv() {
                    changed.push(p);
                }
                spawn_watch_scan(&mut tasks, &shared, changed);
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            event = signals.next() => match event {
                SignalEvent::Shutdown => {
                    tracing::info!("shutting down: cancelling in-flight work");
                    break;
                }
                SignalEvent::Reload => {
                    apply_reload(&shared, &mut due, &mut metrics, &mut watcher, &watch_tx).await;
                }
            },
        }
    }

    shared.cancel.store(true, Ordering::Relaxed);
    drop(watcher);
    while tasks.join_next().await.is_some() {}
    control.abort();
    let _ = control.await;
    if let Some(m) = metrics.take() {
        m.task.abort();
        let _ = m.task.await;
    }
    // Wait for in-flight control requests that write.
    let _guard = shared.writer.lock().await;
    shared.store.flush()?;
    tracing::info!("store flushed; certd stopped");
    Ok(())
}

/// The state shared by certd's tasks, before any job has run.
fn shared_state(store: Store, config_path: PathBuf, config: Config) -> Arc<Shared> {
    Arc::new(Shared {
        store,
        config_path,
        config: RwLock::new(config),
        started: now(),
        jobs: Mutex::new(BTreeMap::new()),
        writer: tokio::sync::Mutex::new(()),
        remind: tokio::sync::Mutex::new(()),
        renew: tokio::sync::Mutex::new(()),
        cancel: Arc::new(AtomicBool::new(false)),
    })
}

/// The jobs run once at start-up, before their first scheduled time.
fn spawn_startup_jobs(tasks: &mut JoinSet<()>, shared: &Arc<Shared>) {
    spawn_job(tasks, shared, Job::CrlUpkeep);
    spawn_job(tasks, shared, Job::Scan);
    spawn_job(tasks, shared, Job::Probe);
    if shared.config().retention.enabled {
        spawn_job(tasks, shared, Job::Retention);
    }
    // What fell due while certd was down is renewed now, not at the next scheduled pass.
    if shared.config().renewal.schedule.is_some() && shared.config().reminders.is_some() {
        spawn_job(tasks, shared, Job::Renew);
    }
}

/// One round of the scheduler: starts the jobs whose deadline has passed, plans the next
/// deadline of each job (keeping the earlier one), records them, and returns how long to
/// sleep until the first.
fn start_due_and_plan(
    tasks: &mut JoinSet<()>,
    shared: &Arc<Shared>,
    due: &mut BTreeMap<Job, UnixTime>,
) -> StdDuration {
    let config = shared.config();
    let t = now();
    let ready: Vec<Job> = due
        .iter()
        .filter(|(_, at)| **at <= t)
        .map(|(job, _)| *job)
        .collect();
    for job in ready {
        due.remove(&job);
        spawn_job(tasks, shared, job);
    }
    for (job, at) in planned_runs(&config, &shared.store, t) {
        match at {
            Some(at) => {
                let deadline = due.entry(job).or_insert(at);
                *deadline = (*deadline).min(at);
            }
            None => {
                due.remove(&job);
            }
        }
    }
    for (job, at) in due.iter() {
        shared.job_update(*job, |s| s.next_run = Some(*at));
    }
    // Sleeping whole seconds from a truncated `now` never wakes before the deadline.
    match due.values().min() {
        Some(at) => StdDuration::from_secs((at - t).max(0).unsigned_abs()),
        None => StdDuration::from_secs(3600),
    }
}

/// The next run after `t` of each scheduled job under `config` (`None`: not scheduled).
fn planned_runs(config: &Config, store: &Store, t: UnixTime) -> [(Job, Option<UnixTime>); 8] {
    [
        (
            Job::Scan,
            config.scan.schedule.as_ref().and_then(|s| s.next_after(t)),
        ),
        (
            Job::Probe,
            config.probe.schedule.as_ref().and_then(|s| s.next_after(t)),
        ),
        (
            Job::CrlFetch,
            config.crl.schedule.as_ref().and_then(|s| s.next_after(t)),
        ),
        (Job::Remind, crate::reminders::next_run(config, store, t)),
        (
            Job::CrlUpkeep,
            Some(t - t.rem_euclid(CRL_UPKEEP_EVERY_SECS) + CRL_UPKEEP_EVERY_SECS),
        ),
        (
            Job::Backup,
            config
                .backup
                .as_ref()
                .and_then(|b| b.schedule.next_after(t)),
        ),
        (
            Job::Renew,
            config
                .renewal
                .schedule
                .as_ref()
                .and_then(|s| s.next_after(t)),
        ),
        (Job::Retention, {
            let every = i64::try_from(config.retention.every.as_secs())
                .unwrap_or(i64::MAX)
                .max(1);
            config
                .retention
                .enabled
                .then(|| t - t.rem_euclid(every) + every)
        }),
    ]
}

/// SIGHUP: reloads the configuration; when it is accepted, plans every job afresh and
/// restarts the metrics listener and the folder watcher on the new settings.
async fn apply_reload(
    shared: &Arc<Shared>,
    due: &mut BTreeMap<Job, UnixTime>,
    metrics: &mut Option<MetricsServer>,
    watcher: &mut Option<notify::RecommendedWatcher>,
    watch_tx: &mpsc::UnboundedSender<PathBuf>,
) {
    match reload(shared) {
        Ok(()) => {
            // New schedules: plan every job afresh.
            due.clear();
            match start_metrics(shared, metrics.take()).await {
                Ok(m) => *metrics = m,
                Err(e) => {
                    tracing::error!(error = %e, "metrics are not served until the next reload")
                }
            }
            match start_watcher(&shared.config(), watch_tx.clone()) {
                Ok(w) => *watcher = w,
                Err(e) => tracing::error!(error = %e, "cannot watch the new source folders"),
            }
        }
        Err(e) => tracing::error!(
            "configuration reload rejected, the running configuration stays in force: {e}"
        ),
    }
}

/// The running metrics listener.
struct MetricsServer {
    address: std::net::SocketAddr,
    hosts: crate::server::metrics_http::AllowedHosts,
    task: tokio::task::JoinHandle<()>,
}

/// Starts serving `[metrics] listen`, or keeps `running` when the address and the allowed
/// hosts did not change; a listener on another (or no) address is stopped.
async fn start_metrics(
    shared: &Arc<Shared>,
    running: Option<MetricsServer>,
) -> Result<Option<MetricsServer>, DaemonError> {
    let metrics = shared.config().metrics;
    let wanted = metrics.listen;
    let hosts =
        wanted.map(|a| crate::server::metrics_http::AllowedHosts::new(a, &metrics.allowed_hosts));
    if let Some(m) = running {
        if Some(m.address) == wanted && Some(&m.hosts) == hosts.as_ref() {
            return Ok(Some(m));
        }
        m.task.abort();
        let _ = m.task.await;
        tracing::info!(address = %m.address, "metrics listener stopped");
    }
    let (Some(address), Some(hosts)) = (wanted, hosts) else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| DaemonError::Metrics { address, source })?;
    let shared = shared.clone();
    let serve_hosts = hosts.clone();
    let task = tokio::spawn(crate::server::metrics_http::serve(
        listener,
        serve_hosts,
        move |page| {
            let shared = shared.clone();
            async move {
                blocking(move || render_page(&shared, page))
                    .await
                    .map_err(|e| e.to_string())?
            }
        },
    ));
    tracing::info!(%address, "serving metrics on http://{address}/metrics and the dashboard on http://{address}/");
    Ok(Some(MetricsServer {
        address,
        hosts,
        task,
    }))
}

/// A page of the metrics listener: `/metrics`, or the dashboard's.
fn render_page(
    shared: &Shared,
    page: crate::server::metrics_http::Page,
) -> Result<crate::server::metrics_http::Rendered, String> {
    use crate::server::metrics_http::{Page, Rendered};
    match page {
        Page::Metrics => render_metrics(shared).map(Rendered::Metrics),
        Page::Dashboard => crate::fleet::dashboard::overview(&shared.store, now())
            .map(|o| {
                Rendered::Html(crate::fleet::dashboard::render_overview(
                    &o,
                    crate::fleet::dashboard::Links::Served,
                ))
            })
            .map_err(|e| e.to_string()),
        Page::Certificate(fp) => {
            crate::fleet::dashboard::render_certificate(&shared.store, &fp, now())
                .map(|page| page.map_or(Rendered::NotFound, Rendered::Html))
                .map_err(|e| e.to_string())
        }
    }
}

/// The body of `/metrics`: what `certctl metrics` prints through certd.
fn render_metrics(shared: &Shared) -> Result<String, String> {
    let per_agent = shared.config().metrics.per_agent;
    let mut text = crate::fleet::reports::metrics_text(&shared.store, per_agent, now())
        .map_err(|e| e.to_string())?;
    let status = shared.status().map_err(|e| e.to_string())?;
    text.push_str(&crate::server::metrics_http::status_series(&status));
    if let Some(backup) = shared.config().backup {
        let last = crate::backup::last_success(&backup.dir).unwrap_or(0);
        text.push_str(&format!(
            "# HELP certctl_backup_last_success_timestamp_seconds When the newest good scheduled backup ([backup] dir) was taken (0: none yet).\n\
             # TYPE certctl_backup_last_success_timestamp_seconds gauge\n\
             certctl_backup_last_success_timestamp_seconds {last}\n"
        ));
    }
    Ok(text)
}

/// A backup through certd: the snapshot under the writer lock (scans, probes, reminder
/// bookkeeping and workflow steps wait for it; see [`crate::backup`]), the archive after.
async fn take_backup(
    shared: &Arc<Shared>,
    out: PathBuf,
) -> Result<crate::backup::BackupReport, String> {
    let spool = crate::backup::spool_dir(&out);
    let snapshot = {
        let _writer = shared.writer.lock().await;
        let store = shared.store.clone();
        let t = now();
        tokio::task::spawn_blocking(move || crate::backup::snapshot(&store, &spool, t))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
    };
    tokio::task::spawn_blocking(move || {
        crate::backup::write_archive(snapshot, &out, &Default::default())
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())
}

/// `[backup]`: a backup into `dir`, then the oldest beyond `keep` removed.
async fn scheduled_backup(shared: &Arc<Shared>) -> JobOutcome {
    let Some(config) = shared.config().backup else {
        return JobOutcome::failed("not configured");
    };
    if let Err(e) = crate::files::atomic::create_dir_all(&config.dir, 0o700) {
        tracing::error!(error = %e, "cannot make the backup folder");
        return JobOutcome::failed(format!("failed: {e}"));
    }
    crate::backup::remove_leftovers(&config.dir);
    let out = config.dir.join(crate::backup::scheduled_name(now()));
    match take_backup(shared, out).await {
        Ok(report) => {
            let removed = crate::backup::prune(&config.dir, config.keep);
            tracing::info!(file = %report.file.display(), bytes = report.bytes, snapshot_ms = report.snapshot_ms, removed = removed.len(), "backup written");
            JobOutcome::ok(format!(
                "ok, {} ({} bytes), {} old backups removed",
                report.file.display(),
                report.bytes,
                removed.len()
            ))
        }
        Err(e) => {
            tracing::error!(error = %e, "scheduled backup failed; older backups are kept");
            JobOutcome::failed(format!("failed: {e}"))
        }
    }
}

/// Rewrites the deny list in effect (`[agents] deny_list`, else the path remembered from
/// `--deny-list`) when its content changed. The caller holds the writer lock.
async fn refresh_deny_list(shared: &Arc<Shared>) {
    let configured = shared.config().agents.deny_list;
    let store = shared.store.clone();
    let result = blocking(move || {
        let path = crate::fleet::agents::effective_deny_list(&store, configured.as_deref())?;
        match path {
            Some(path) => crate::fleet::agents::refresh_deny_list(&store, &path, now())
                .map(|written| written.map(|n| (path, n))),
            None => Ok(None),
        }
    })
    .await;
    match result {
        Ok(Ok(Some((path, entries)))) => {
            tracing::info!(deny_list = %path.display(), entries, "deny list rewritten")
        }
        Ok(Ok(None)) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "cannot rewrite the deny list"),
        Err(e) => tracing::error!(error = %e, "deny list rewrite failed"),
    }
}

/// Reads the configuration again; on success it replaces the running one.
fn reload(shared: &Shared) -> Result<(), ConfigError> {
    let new = config::load(&shared.config_path)?;
    let mut current = match shared.config.write() {
        Ok(c) => c,
        Err(p) => p.into_inner(),
    };
    if new.store != current.store {
        tracing::warn!(running = %current.store.display(), configured = %new.store.display(), "the store path changed: restart certd to move to the new store; keeping the current one");
    }
    if new.store_cache_bytes != current.store_cache_bytes {
        tracing::warn!(
            running = current.store_cache_bytes,
            configured = new.store_cache_bytes,
            "store_cache changed: restart certd to resize the store's page cache"
        );
    }
    let (store, cache) = (current.store.clone(), current.store_cache_bytes);
    *current = new;
    current.store = store;
    current.store_cache_bytes = cache;
    tracing::info!(
        sources = current.sources.len(),
        endpoints = current.endpoints.len(),
        "configuration reloaded"
    );
    Ok(())
}

fn start_watcher(
    config: &Config,
    tx: mpsc::UnboundedSender<PathBuf>,
) -> Result<Option<notify::RecommendedWatcher>, DaemonError> {
    if !config.scan.watch {
        return Ok(None);
    }
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            if matches!(event.kind, notify::EventKind::Access(_)) {
                return;
            }
            for path in event.paths {
                let _ = tx.send(path);
            }
        }
    })?;
    for source in &config.sources {
        if source.path.is_dir() {
            if let Err(e) = watcher.watch(&source.path, notify::RecursiveMode::Recursive) {
                tracing::warn!(path = %source.path.display(), error = %e, "cannot watch source folder; it is still scanned on schedule");
            }
        }
    }
    Ok(Some(watcher))
}

/// `spawn_blocking` that keeps the caller's tracing span, so a log line written on the
/// blocking thread still names its job (`job{job=scan}: ...`, or `"span":{"job":"scan"}`).
fn blocking<F, R>(f: F) -> tokio::task::JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f))
}

fn spawn_job(tasks: &mut JoinSet<()>, shared: &Arc<Shared>, job: Job) {
    let mut already = false;
    shared.job_update(job, |s| {
        already = s.running;
        s.running = true;
    });
    if already {
        tracing::info!(
            job = job.name(),
            "previous run still in progress; skipping this one"
        );
        return;
    }
    let shared = shared.clone();
    let span = tracing::info_span!("job", job = job.name());
    let run = async move {
        let started = now();
        let outcome = match job {
            Job::Scan => scan_sources(&shared, None).await,
            Job::Probe => probe_endpoints(&shared).await,
            Job::CrlFetch => fetch_crls(&shared).await,
            Job::CrlUpkeep => crl_upkeep(&shared).await,
            Job::Backup => scheduled_backup(&shared).await,
            Job::Renew => {
                let request = crate::pki::renewal::RenewRequest {
                    due: true,
                    ..Default::default()
                };
                match renewal_pass(&shared, request).await {
                    Ok(report) => match report.pass {
                        Some(p) if p.failed() > 0 => JobOutcome::failed(p.summary()),
                        Some(p) => JobOutcome::ok(p.summary()),
                        None => JobOutcome::ok("ok"),
                    },
                    Err(e) => {
                        tracing::error!(error = %e, "renewal pass failed");
                        JobOutcome::failed(format!("failed: {e}"))
                    }
                }
            }
            Job::Retention => {
                let config = shared.config().retention;
                let request = crate::retention::PruneRequest {
                    batch: Some(config.batch),
                    ..Default::default()
                };
                match prune_pass(&shared, request).await {
                    Ok(summary) => {
                        if summary.report.removed > 0 {
                            tracing::info!(
                                removed = summary.report.removed,
                                kept_protected = summary.report.kept_protected,
                                batches = summary.report.batches,
                                left = summary.certificates_left,
                                "retention: removed expired certificates nothing holds any more"
                            );
                        }
                        JobOutcome::ok(format!(
                            "ok: {} removed in {} batches",
                            summary.report.removed, summary.report.batches
                        ))
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "retention pass failed");
                        JobOutcome::failed(format!("failed: {e}"))
                    }
                }
            }
            Job::Remind => {
                let _pass = shared.remind.lock().await;
                let (locks, config, path) =
                    (shared.clone(), shared.config(), shared.config_path.clone());
                // The SMTP sessions run without the writer lock (scans go on).
                blocking(move || {
                    let lock = || locks.writer.blocking_lock();
                    crate::reminders::scheduled_pass(&locks.store, &config, &path, now(), &lock)
                })
                .await
                .map_err(|e| format!("failed: {e}"))
                .and_then(|pass| pass)
                .map_or_else(JobOutcome::failed, JobOutcome::ok)
            }
        };
        shared.job_update(job, |s| {
            s.running = false;
            s.last_run = Some(started);
            s.last_outcome = Some(outcome);
        });
    };
    tasks.spawn(tracing::Instrument::instrument(run, span));
}

/// Says at start-up which managed CAs' CRLs certd cannot re-sign (an encrypted key and no
/// passphrase file in `[workflows.ca_passphrase_files]`): they expire unless someone runs
/// `certctl ca crl NAME` in time.
fn warn_unsignable_crls(shared: &Shared) {
    let files = shared.config().workflows.ca_passphrase_files;
    match shared.store.managed_cas() {
        Ok(cas) => {
            for ca in cas
                .iter()
                .filter(|ca| ca.encrypted && !files.contains_key(&ca.name))
            {
                tracing::warn!(
                    ca = %ca.name,
                    "the CA key is encrypted and [workflows.ca_passphrase_files] names no file for it: certd cannot re-sign its CRL, which expires unless `certctl ca crl {}` is run in time",
                    ca.name
                );
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot read the managed CAs"),
    }
}

/// A retention pass under certd's `[retention]` (windows the request leaves out): the
/// writer lock is taken per batch, so scans and requests go on between batches.
async fn prune_pass(
    shared: &Arc<Shared>,
    request: crate::retention::PruneRequest,
) -> Result<crate::retention::PruneSummary, String> {
    let configured = shared.config().retention;
    let policy = request.policy(configured.policy);
    let limit = request.batch.unwrap_or(configured.batch);
    let at = now();
    let mut cursor = certctl_store::PruneCursor::default();
    let mut total = certctl_store::PruneReport::default();
    while !cursor.done {
        if shared.cancel.load(Ordering::Relaxed) {
            break;
        }
        let _writer = shared.writer.lock().await;
        let store = shared.store.clone();
        let (dry_run, mut moved) = (request.dry_run, cursor.clone());
        let (report, moved) = tokio::task::spawn_blocking(move || {
            crate::retention::batch(&store, &policy, at, &mut moved, limit, dry_run)
                .map(|r| (r, moved))
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        cursor = moved;
        total.add(&report);
        drop(_writer);
        tokio::task::yield_now().await;
    }
    let store = shared.store.clone();
    let dry_run = request.dry_run;
    tokio::task::spawn_blocking(move || {
        crate::retention::summary(&store, dry_run, &policy, at, total)
    })
    .await
    .map_err(|e| e.to_string())
}

/// Re-signs the managed CAs' CRLs that are due, with the passphrase files of
/// `[workflows.ca_passphrase_files]` for encrypted CAs (see [`crate::pki::crl::crl_upkeep`]).
async fn crl_upkeep(shared: &Arc<Shared>) -> JobOutcome {
    let config = shared.config();
    let resign_before = config
        .crl
        .resign_before
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let files = config.workflows.ca_passphrase_files.clone();
    let _writer = shared.writer.lock().await;
    let store = shared.store.clone();
    let done = blocking(move || {
        let passphrase = |ca: &certctl_store::ManagedCa| {
            let file = files.get(&ca.name)?;
            match crate::pki::ca::Secret::from_private_file(file) {
                Ok(secret) => Some(secret),
                Err(e) => {
                    tracing::warn!(ca = %ca.name, error = %e, "cannot use the CA passphrase file");
                    None
                }
            }
        };
        crate::pki::crl::crl_upkeep(&store, now(), resign_before, &passphrase)
    })
    .await;
    let results = match done {
        Ok(Ok(results)) => results,
        Ok(Err(e)) => return JobOutcome::failed(format!("failed: {e}")),
        Err(e) => return JobOutcome::failed(format!("failed: {e}")),
    };
    let mut failed = Vec::new();
    let mut published = 0;
    for (ca, outcome) in results {
        match outcome {
            crate::pki::crl::Upkeep::Published(crl) => {
                published += 1;
                tracing::info!(ca = %ca, number = crl.number, next_update = %certctl_store::rfc3339(crl.next_update), "re-signed and published the CRL");
            }
            crate::pki::crl::Upkeep::NeedsPassphrase => {
                tracing::warn!(ca = %ca, "the CRL is due to be re-signed, but the CA key is encrypted and [workflows.ca_passphrase_files] names no file for it: run `certctl ca crl {ca}` before it expires");
                failed.push(format!("{ca}: needs its passphrase file"));
            }
            crate::pki::crl::Upkeep::Failed(e) => {
                tracing::error!(ca = %ca, error = %e, "cannot re-sign the CRL");
                failed.push(format!("{ca}: {e}"));
            }
        }
    }
    if failed.is_empty() {
        JobOutcome::ok(format!("ok: {published} CRLs re-signed"))
    } else {
        JobOutcome::failed(format!("failed: {}", failed.join("; ")))
    }
}

/// A renewal pass with certd's configuration (scheduled, or `certctl renew` sent to certd):
/// one at a time, the writer lock taken per workflow.
async fn renewal_pass(
    shared: &Arc<Shared>,
    request: crate::pki::renewal::RenewRequest,
) -> Result<crate::pki::renewal::RenewReport, String> {
    let _pass = shared.renew.lock().await;
    let (locks, config) = (shared.clone(), shared.config());
    if request.id.is_none() && config.reminders.is_none() {
        return Err("no policies: certd's configuration has no [reminders] policies folder, so no certificate says renew = \"auto\"".into());
    }
    blocking(move || {
        let lock = || locks.writer.blocking_lock();
        crate::pki::renewal::execute(&locks.store, &request, &config, now(), &lock)
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Completes the regenerate workflows a crash interrupted (each step is idempotent, so
/// this never issues a second certificate), with the secrets `[workflows]` names. Workflows
/// that need a secret certd does not have stay for `certctl workflows resume ID`.
async fn resume_workflows(shared: &Arc<Shared>) {
    let config = shared.config().workflows.clone();
    let _writer = shared.writer.lock().await;
    let store = shared.store.clone();
    let resumed = blocking(move || {
        // A secret file that cannot be used is logged; the workflow then fails as without it.
        let read = |what: &str, file: &Path| match crate::pki::ca::Secret::from_private_file(file) {
            Ok(secret) => Some(secret),
            Err(e) => {
                tracing::warn!(error = %e, "cannot use the {what} file");
                None
            }
        };
        let pfx_password = config
            .pfx_password_file
            .as_deref()
            .and_then(|f| read("PFX password", f));
        crate::pki::workflow::resume_all_with(
            &store,
            |wf| crate::pki::workflow::WorkflowSecrets {
                passphrase: config
                    .ca_passphrase_files
                    .get(&wf.ca)
                    .and_then(|f| read("CA passphrase", f)),
                pfx_password: pfx_password.clone(),
            },
            now(),
        )
    })
    .await;
    match resumed {
        Ok(Ok(outcomes)) => {
            for (id, outcome) in outcomes {
                match outcome {
                    Ok(report) => {
                        tracing::info!(workflow = id, step = ?report.workflow.step, "unfinished workflow resumed")
                    }
                    Err(e) => {
                        tracing::warn!(workflow = id, error = %e, "unfinished workflow not resumed; run `certctl workflows resume {id}`")
                    }
                }
            }
        }
        Ok(Err(e)) => tracing::error!(error = %e, "cannot list unfinished workflows"),
        Err(e) => tracing::error!(error = %e, "workflow resume failed"),
    }
}

/// Fetches the CRLs of other CAs and marks listed certificates revoked.
async fn fetch_crls(shared: &Arc<Shared>) -> JobOutcome {
    let options = crate::pki::crlfetch::CrlFetchOptions {
        timeout_secs: shared.config().crl.timeout.as_secs().max(1),
        force: false,
        pfx_password: None,
        allow: None,
        deadline_secs: None,
    };
    match crl_pass(shared, options).await {
        Ok(report) => JobOutcome::ok(format!(
            "ok, {} CRL URLs, {} newly revoked",
            report.urls.len(),
            report.newly_revoked
        )),
        Err(e) => JobOutcome::failed(format!("failed: {e}")),
    }
}

/// One CRL pass under certd's `[crl]` policy (its allow list and deadline, whoever asked):
/// downloads and checks with no lock held, then records under the writer lock.
async fn crl_pass(
    shared: &Arc<Shared>,
    mut options: crate::pki::crlfetch::CrlFetchOptions,
) -> Result<crate::pki::crlfetch::CrlFetchReport, String> {
    let config = shared.config();
    options.allow = config.crl.allow.clone();
    options.deadline_secs = Some(config.crl.deadline.as_secs().max(1));
    let store = shared.store.clone();
    let prepared = blocking(move || crate::pki::crlfetch::prepare(&store, &options, now()))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let _writer = shared.writer.lock().await;
    let store = shared.store.clone();
    blocking(move || prepared.record(&store, now()))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

fn spawn_watch_scan(tasks: &mut JoinSet<()>, shared: &Arc<Shared>, changed: Vec<PathBuf>) {
    let shared = shared.clone();
    tasks.spawn(async move {
        let outcome = scan_sources(&shared, Some(changed)).await;
        tracing::debug!(outcome = %outcome.text, "watched change scanned");
    });
}

/// Scans every configured source, or with `changed`, the folders holding those paths.
async fn scan_sources(shared: &Arc<Shared>, changed: Option<Vec<PathBuf>>) -> JobOutcome {
    let config = shared.config();
    let _writer = shared.writer.lock().await;
    let mut failures = 0u64;
    let mut new = 0u64;
    for source in &config.sources {
        let paths: Vec<PathBuf> = match &changed {
            None => vec![source.path.clone()],
            Some(changed) => {
                let mut dirs: Vec<PathBuf> = changed
                    .iter()
                    .filter(|p| p.starts_with(&source.path))
                    .map(|p| watch_scan_root(p, &source.path))
                    .collect();
                dirs.sort();
                dirs.dedup();
                dirs
            }
        };
        if paths.is_empty() || shared.cancel.load(Ordering::Relaxed) {
            continue;
        }
        let password = match &source.pfx_password_file {
            Some(f) => match crate::pki::ca::Secret::from_private_file(f) {
                Ok(p) => Some(p.0),
                Err(e) => {
                    tracing::error!(file = %f.display(), error = %e, "cannot use the PFX password file");
                    None
                }
            },
            None => None,
        };
        let options = ScanOptions {
            role: source.role,
            pfx_password: password,
            full: false,
            threads: 0,
        };
        let store = shared.store.clone();
        let progress = shared.progress();
        let result = blocking(move || scan::scan(&store, &paths, &options, now(), &progress)).await;
        match result {
            Ok(Ok(summary)) => {
                for f in &summary.errors {
                    tracing::warn!(path = %f.path, error = %f.error, "file not scanned");
                }
                failures += summary.files_failed;
                new += summary.certificates_new;
                tracing::info!(source = %source.path.display(), files_read = summary.files_read, unchanged = summary.files_unchanged, failed = summary.files_failed, new = summary.certificates_new, updated = summary.certificates_updated, gone = summary.sources_gone, "scan finished");
            }
            Ok(Err(e)) => {
                tracing::error!(source = %source.path.display(), error = %e, "scan failed");
                return JobOutcome::failed(format!("failed: {e}"));
            }
            Err(e) => return JobOutcome::failed(format!("failed: {e}")),
        }
    }
    if !shared.cancel.load(Ordering::Relaxed) {
        refresh_deny_list(shared).await;
    }
    if failures > 0 {
        JobOutcome::ok(format!(
            "ok with {failures} files failing, {new} new certificates"
        ))
    } else {
        JobOutcome::ok(format!("ok, {new} new certificates"))
    }
}

/// The folder to re-scan for a changed path: its folder (inside the source), or the
/// source itself when that folder is gone.
fn watch_scan_root(changed: &Path, source: &Path) -> PathBuf {
    if changed.is_dir() {
        return changed.to_path_buf();
    }
    match changed.parent() {
        Some(parent) if parent.starts_with(source) && parent.is_dir() => parent.to_path_buf(),
        _ => source.to_path_buf(),
    }
}

async fn probe_endpoints(shared: &Arc<Shared>) -> JobOutcome {
    let config = shared.config();
    let mut problems = 0usize;
    for endpoint in &config.endpoints {
        if shared.cancel.load(Ordering::Relaxed) {
            break;
        }
        let target = probe::ProbeTarget {
            address: endpoint.address.clone(),
            sni: endpoint.sni.clone(),
            role: endpoint.role,
            expect_issuer: endpoint.expect_issuer.clone(),
            timeout: config.probe.timeout,
            trust_store: config.probe.trust_store.clone(),
        };
        let outcome = {
            let target = target.clone();
            blocking(move || probe::probe(&target, now())).await
        };
        let Ok(outcome) = outcome else {
            problems += 1;
            continue;
        };
        let _writer = shared.writer.lock().await;
        match probe::record(&shared.store, &target, &outcome, now()) {
            Ok(state) => {
                if !state.findings.is_empty() {
                    problems += 1;
                }
                for f in &state.findings {
                    tracing::warn!(endpoint = %state.address, finding = %f.kind, detail = %f.detail, "endpoint finding");
                }
            }
            Err(e) => {
                problems += 1;
                tracing::error!(endpoint = %endpoint.address, error = %e, "cannot record probe");
            }
        }
    }
    JobOutcome::ok(format!(
        "ok, {} endpoints, {problems} with findings",
        config.endpoints.len()
    ))
}

async fn serve_control(listener: ControlListener, shared: Arc<Shared>) {
    loop {
        let mut conn = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "control socket accept failed");
                tokio::time::sleep(StdDuration::from_millis(200)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let response = match conn.request(REQUEST_TIMEOUT).await {
                Ok(Request::ListJson { filter, at }) => {
                    return stream_list(&shared, conn, filter, Some(at)).await
                }
                Ok(Request::ListLines { filter }) => {
                    return stream_list(&shared, conn, filter, None).await
                }
                Ok(request) => answer(&shared, request).await,
                Err(e) => Response::error(api::ErrorKind::Invalid, e),
            };
            if let Err(e) = conn.respond(&response).await {
                tracing::debug!(error = %e, "client went away before the answer");
            }
        });
    }
}

/// `certctl list --json` (`json_at`): the JSON text is rendered here and streamed to the
/// client as it is written; `certctl list` as a table or CSV (no `json_at`): the
/// certificates as JSON lines, streamed as they are read. Read-only: no writer lock, like
/// every other query.
async fn stream_list(
    shared: &Arc<Shared>,
    conn: crate::api::control::Connection,
    filter: crate::inventory::query::ListFilter,
    json_at: Option<UnixTime>,
) {
    let store = shared.store.clone();
    let sent = blocking(move || {
        conn.respond_streaming(|out| match json_at {
            Some(at) => api::list_json(&store, &filter, now(), at, out),
            None => api::list_lines(&store, &filter, now(), out),
        })
    })
    .await;
    match sent {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "client went away before the end of the answer"),
        Err(e) => tracing::error!(error = %e, "list failed"),
    }
}

async fn answer(shared: &Arc<Shared>, request: Request) -> Response {
    let mut request = request;
    // A regenerate sent to certd uses certd's deploy targets unless it names its own.
    if let Request::Regenerate { regenerate } = &mut request {
        if regenerate.reload.is_empty() {
            regenerate.reload = shared.config().workflows.targets.clone();
        }
    }
    if let Request::Status = request {
        return match shared.status() {
            Ok(status) => Response::Status { status },
            Err(e) => Response::error(api::ErrorKind::Failed, e.to_string()),
        };
    }
    // One pass at a time; the writer lock per workflow, not during probes.
    if let Request::Renew { renew } = request {
        return match renewal_pass(shared, renew).await {
            Ok(report) => Response::Renew { report },
            Err(e) => Response::error(api::ErrorKind::Failed, e),
        };
    }
    // Takes the writer lock per batch.
    if let Request::Prune { prune } = request {
        return match prune_pass(shared, prune).await {
            Ok(summary) => Response::Prune { summary },
            Err(e) => Response::error(api::ErrorKind::Failed, e),
        };
    }
    // Takes the writer lock itself, after the downloads.
    if let Request::CrlFetch { options } = request {
        return match crl_pass(shared, options).await {
            Ok(report) => Response::CrlFetch { report },
            Err(e) => Response::error(api::ErrorKind::Failed, e),
        };
    }
    if let Request::Backup { out } = request {
        return match take_backup(shared, out).await {
            Ok(report) => Response::Backup { report },
            Err(e) => Response::error(api::ErrorKind::Failed, e),
        };
    }
    if request.uses_network() {
        return answer_networked(shared, request).await;
    }
    let is_check = matches!(request, Request::Check { .. });
    let writes = request.writes_store();
    let _writer = if writes {
        Some(shared.writer.lock().await)
    } else {
        None
    };
    let store = shared.store.clone();
    let progress = shared.progress();
    let deny_list = shared.config().agents.deny_list;
    let response = blocking(move || match request {
        // certd's configured deny list applies when the command names none.
        Request::Fleet { fleet } => {
            match crate::api::fleet::execute_with(&store, fleet, deny_list.as_deref(), now()) {
                Ok(fleet) => Response::Fleet { fleet },
                Err((kind, message)) => Response::Error { kind, message },
            }
        }
        request => api::execute(&store, request, now(), &progress),
    })
    .await
    .unwrap_or_else(|e| {
        Response::error(api::ErrorKind::Failed, format!("the request failed: {e}"))
    });
    // A scan may have found a blocked agent's new certificate; a decision written to
    // another list (`--deny-list`) leaves the configured one to bring up to date.
    if writes {
        refresh_deny_list(shared).await;
    }
    // `[backup] warn_after`: a backup too old is a warning of `check`.
    match (response, shared.config().backup) {
        (Response::Check { report }, Some(backup)) if is_check => {
            let warning = backup.warn_after.and_then(|age| {
                let age = i64::try_from(age.as_secs()).unwrap_or(i64::MAX);
                crate::backup::stale_warning(&backup.dir, age, now())
            });
            Response::Check {
                report: report.with_backup(warning),
            }
        }
        (response, _) => response,
    }
}

/// `probe` and `remind` from the control socket: the handshake or the SMTP sessions run
/// without the writer lock, which is taken only to read and record (a reminder pass also
/// holds the reminder lock throughout, so two passes never send the same digest).
async fn answer_networked(shared: &Arc<Shared>, request: Request) -> Response {
    let _pass = match request {
        Request::Remind { .. } => Some(shared.remind.lock().await),
        _ => None,
    };
    let locks = shared.clone();
    let progress = shared.progress();
    blocking(move || {
        let lock = || locks.writer.blocking_lock();
        api::execute_networked(&locks.store, request, now(), &progress, &lock)
    })
    .await
    .unwrap_or_else(|e| Response::error(api::ErrorKind::Failed, format!("the request failed: {e}")))
}
