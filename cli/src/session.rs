//! Where a command's requests go, and what every command shares to get there.
//!
//! [`Globals`] are the global options resolved once: the store folder (`--store`, else the
//! `store` of `--config FILE`, else `$CERTCTL_STORE`, else the per-user data folder),
//! certd's configuration file, and what it names (the policies folder, the deny list).
//!
//! A [`Session`] is certd when it answers on the store's control socket, else the store
//! opened directly. Every request goes through [`Session::call`], the one direct-or-certd
//! call: the timeout comes from the request ([`timeout`]), the clock of direct mode from
//! [`clock`] (`$CERTCTL_NOW` in tests, exactly like certd's), and an error answer becomes an
//! error.
//!
//! This module imports the engine (`certctl_daemon`) and the store, never a command.

use std::fmt::Debug;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration as StdDuration;

use anyhow::{bail, Context, Result};
use certctl_daemon::agents;
use certctl_daemon::api::control::{self, Client};
use certctl_daemon::api::{self, Request, Response, StatusReport};
use certctl_daemon::config;
use certctl_daemon::policy::{self, PolicySet};
use certctl_daemon::query::{self, ListFilter};
use certctl_daemon::remind::Snoozed;
use certctl_daemon::scan::ScanProgress;
use certctl_daemon::{FleetRequest, FleetResponse};
use certctl_store::{Certificate, Store, StoreError, TrackedArtifact, UnixTime};

/// Now, or `$CERTCTL_NOW` (tests): the engine's one clock ([`certctl_daemon::clock`]), for
/// direct mode and the commands that judge time themselves (`policy explain`, `snoozed`).
pub fn clock() -> Result<UnixTime> {
    Ok(certctl_daemon::clock::now()?)
}

/// `2026-12-31` (00:00 UTC) or RFC 3339.
pub fn parse_time(text: &str) -> Result<UnixTime> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(t.unix_timestamp());
    }
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(text, &format).with_context(|| {
        format!("`{text}` is not a date: write 2026-12-31 or 2026-12-31T08:00:00Z")
    })?;
    Ok(date.midnight().assume_utc().unix_timestamp())
}

/// How long certctl waits for certd to answer `request`: a query answers in seconds; CA and
/// fleet operations (signing, deploying, probing the endpoints that served an old
/// certificate) in minutes; scans, probes, reminder passes (SMTP timeouts included), store
/// checks and prunes in up to an hour (renewals, which run workflows, in half an hour); a backup of a large store in hours.
pub fn timeout(request: &Request) -> StdDuration {
    const MINUTE: u64 = 60;
    let secs = match request {
        Request::Backup { .. } => 6 * 60 * MINUTE,
        // Renewals run workflows: reload hooks, endpoints probed until they serve the new one.
        Request::Renew { .. } => 30 * MINUTE,
        Request::Scan { .. }
        | Request::Probe { .. }
        | Request::Remind { .. }
        | Request::VerifyStore
        | Request::Prune { .. } => 60 * MINUTE,
        Request::CaInit { .. }
        | Request::CaList
        | Request::CaExport { .. }
        | Request::CaCrl { .. }
        | Request::Issue { .. }
        | Request::Revoke { .. }
        | Request::Regenerate { .. }
        | Request::Workflows
        | Request::WorkflowResume { .. }
        | Request::WorkflowComplete { .. }
        | Request::History { .. }
        | Request::HistoryAt { .. }
        | Request::CrlFetch { .. }
        | Request::Fleet { .. } => 10 * MINUTE,
        _ => 2 * MINUTE,
    };
    StdDuration::from_secs(secs)
}

/// An answer of a kind the request does not expect (a certd of another version).
pub fn unexpected(r: &impl Debug) -> anyhow::Error {
    anyhow::anyhow!("unexpected answer from certd: {r:?}")
}

/// The global options (`--store`, `--config`), resolved.
#[derive(Debug, Clone, Default)]
pub struct Globals {
    /// `--store`, else the `store` of `--config FILE`; `None`: `$CERTCTL_STORE` or the
    /// per-user default, see [`Globals::store_dir`].
    store: Option<PathBuf>,
    /// `--config FILE`: certd's configuration. Never looked up by default.
    config: Option<PathBuf>,
}

impl Globals {
    pub fn new(store: Option<PathBuf>, config: Option<PathBuf>) -> Result<Globals> {
        let store = match (store, &config) {
            (Some(s), _) => Some(s),
            (None, Some(file)) => Some(config::load(file)?.store),
            (None, None) => None,
        };
        Ok(Globals { store, config })
    }

    /// `--config FILE`.
    pub fn config_file(&self) -> Option<&Path> {
        self.config.as_deref()
    }

    /// `--store DIR` or the configuration's `store`, when one was given.
    pub fn store_flag(&self) -> Option<&Path> {
        self.store.as_deref()
    }

    /// The store folder: `--store`, else the configuration's, else `$CERTCTL_STORE`, else
    /// the per-user data folder.
    pub fn store_dir(&self) -> Result<PathBuf> {
        if let Some(p) = &self.store {
            return Ok(p.clone());
        }
        if let Some(p) = std::env::var_os("CERTCTL_STORE").filter(|p| !p.is_empty()) {
            return Ok(PathBuf::from(p));
        }
        dirs::data_dir()
            .map(|d| d.join("certctl").join("store"))
            .ok_or_else(|| anyhow::anyhow!("cannot find a data folder for the store (no $HOME?): give --store DIR or set CERTCTL_STORE"))
    }

    /// For commands that add to the inventory: the store is created when missing.
    pub fn open(&self) -> Result<Session> {
        Session::connect(&self.store_dir()?, Store::open)
    }

    /// For commands that read (and act on what is there): a missing store is an error
    /// naming the path, never a new empty store.
    pub fn existing(&self) -> Result<Session> {
        Session::connect(&self.store_dir()?, Store::open_existing)
    }

    /// The policies folder: `--policies`, else the configuration's `[reminders] policies`.
    pub fn policies_dir(&self, flag: Option<PathBuf>) -> Result<PathBuf> {
        if let Some(dir) = flag {
            return Ok(dir);
        }
        let Some(file) = &self.config else {
            bail!("no policies folder: give --policies DIR, or --config FILE whose [reminders] section names one");
        };
        match config::load(file)?.reminders {
            Some(r) => Ok(r.policies),
            None => bail!(
                "{}: no [reminders] section, so no policies folder: add one, or give --policies DIR",
                file.display()
            ),
        }
    }

    /// The policies of [`Globals::policies_dir`].
    pub fn policies(&self, flag: Option<PathBuf>) -> Result<PolicySet> {
        Ok(policy::load_dir(&self.policies_dir(flag)?)?)
    }

    /// The `[agents] deny_list` of `--config FILE` when certctl opens the store itself;
    /// through certd, certd's own configuration applies (and the file is not read).
    pub fn deny_list(&self, session: &Session) -> Result<Option<PathBuf>> {
        match session {
            Session::Direct(_) => Ok(agents::configured_deny_list(self.config_file())?),
            Session::Daemon(_) => Ok(None),
        }
    }
}

/// Whether certd answers on the store's control socket. Nothing listening (no socket, or a
/// stale one) means direct mode; a socket certctl may not use — another user's store, or a
/// certd of another user, which refuses other users' connections — is an error naming the
/// socket, never a reason to open the store directly.
fn daemon_listens(store: &Path) -> Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let socket = control::socket_path(store);
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
    fn connect(path: &Path, open: fn(&Path) -> Result<Store, StoreError>) -> Result<Session> {
        if daemon_listens(path)? {
            return Ok(Session::Daemon(path.to_path_buf()));
        }
        match open(path) {
            Ok(store) => Ok(Session::Direct(store)),
            Err(e @ StoreError::Locked { .. }) => Err(anyhow::Error::new(e).context(format!(
                "no certd answers on {} either; if certd is starting, retry in a moment",
                control::socket_path(path).display()
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether the requests go to certd.
    pub fn through_certd(&self) -> bool {
        matches!(self, Session::Daemon(_))
    }

    fn client(path: &Path) -> Result<Client> {
        Client::connect(path)
            .with_context(|| format!("certd stopped answering on {}", path.display()))
    }

    /// The one direct-or-certd call: `request` answered by certd, or by the engine on the
    /// open store. An error answer is an error.
    pub fn call(&self, request: Request) -> Result<Response> {
        let response = match self {
            Session::Direct(store) => {
                api::execute(store, request, clock()?, &ScanProgress::default())
            }
            Session::Daemon(path) => {
                let timeout = timeout(&request);
                Session::client(path)?.call(&request, timeout)?
            }
        };
        if let Response::Error { message, .. } = response {
            bail!("{message}");
        }
        Ok(response)
    }

    /// A fleet request; in direct mode the agents' decisions use `deny_list` (certd uses
    /// its own configuration's).
    pub fn fleet_with(
        &self,
        fleet: FleetRequest,
        deny_list: Option<&Path>,
    ) -> Result<FleetResponse> {
        let response = match self {
            Session::Direct(store) => api::execute_fleet(store, fleet, deny_list, clock()?),
            Session::Daemon(_) => return self.fleet(fleet),
        };
        match response {
            Response::Fleet { fleet } => Ok(fleet),
            Response::Error { message, .. } => bail!("{message}"),
            other => Err(unexpected(&other)),
        }
    }

    /// A fleet request (agents, reports, tracked files, metrics).
    pub fn fleet(&self, fleet: FleetRequest) -> Result<FleetResponse> {
        match self.call(Request::Fleet { fleet })? {
            Response::Fleet { fleet } => Ok(fleet),
            other => Err(unexpected(&other)),
        }
    }

    /// A request answered with certificates (`list`, `find`).
    pub fn certificates(&self, request: Request) -> Result<Vec<Certificate>> {
        match self.call(request)? {
            Response::Certificates { certificates } => Ok(certificates),
            other => Err(unexpected(&other)),
        }
    }

    /// What `status` reports (in direct mode: the store's side of it).
    pub fn status(&self) -> Result<StatusReport> {
        match self {
            Session::Direct(store) => Ok(api::direct_status(store)?),
            Session::Daemon(_) => match self.call(Request::Status)? {
                Response::Status { status } => Ok(status),
                other => Err(unexpected(&other)),
            },
        }
    }

    /// The snoozes in force at `at`.
    pub fn snoozes(&self, at: UnixTime) -> Result<Vec<Snoozed>> {
        match self.call(Request::Snoozed { at: Some(at) })? {
            Response::Snoozed { snoozes } => Ok(snoozes),
            other => Err(unexpected(&other)),
        }
    }

    /// Every tracked artifact (`certctl track`).
    pub fn tracked_artifacts(&self) -> Result<Vec<TrackedArtifact>> {
        match self.fleet(FleetRequest::Artifacts {
            filter: ListFilter::default(),
        })? {
            FleetResponse::Artifacts { artifacts, .. } => Ok(artifacts),
            other => Err(unexpected(&other)),
        }
    }

    /// `list` as a table or CSV: the certificates handed to `each` batch by batch as they
    /// are read. Through certd they are streamed ([`Request::ListLines`]); a certd that does
    /// not know the request yet gets the plain list (one batch).
    pub fn list_batches(
        &self,
        filter: ListFilter,
        mut each: impl FnMut(Vec<Certificate>) -> std::io::Result<()>,
    ) -> Result<()> {
        let answer = match self {
            Session::Direct(store) => {
                query::list_batches(store, &filter, clock()?, |batch| {
                    each(batch).map_err(anyhow::Error::from)
                })?;
                Response::Stream
            }
            Session::Daemon(path) => {
                let request = Request::ListLines {
                    filter: filter.clone(),
                };
                let timeout = timeout(&request);
                let mut lines = api::CertificateLines::new(&mut each);
                match Session::client(path)?.call_streaming(&request, timeout, &mut lines)? {
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

    /// `list --json`: the text goes to stdout as it is made. Through certd it is rendered
    /// there and streamed (no certificate is encoded twice); a certd that does not know
    /// the request yet gets the plain list and the text is rendered here.
    pub fn list_json(&self, filter: ListFilter, t: UnixTime) -> Result<()> {
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
        let answer = match self {
            Session::Direct(store) => match api::list_json(store, &filter, clock()?, t, &mut out) {
                Ok(written) => {
                    written?;
                    Response::Stream
                }
                Err(error) => *error,
            },
            Session::Daemon(path) => {
                let request = Request::ListJson {
                    filter: filter.clone(),
                    at: t,
                };
                let timeout = timeout(&request);
                match Session::client(path)?.call_streaming(&request, timeout, &mut out)? {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_times() {
        assert_eq!(parse_time("1970-01-02").unwrap(), 86_400);
        assert_eq!(parse_time("1970-01-01T00:01:00Z").unwrap(), 60);
        assert!(parse_time("tomorrow").is_err());
    }

    /// Work that takes long gets long; a query that hangs fails in minutes.
    #[test]
    fn the_timeout_comes_from_the_request() {
        assert!(timeout(&Request::Stats) < timeout(&Request::CaList));
        assert!(timeout(&Request::CaList) < timeout(&Request::VerifyStore));
        assert_eq!(timeout(&Request::Status), StdDuration::from_secs(120));
    }
}
