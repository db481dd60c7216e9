//! `certctl scan PATH...`: inventory certificate files and folders (PEM, DER, PKCS#12/PFX)
//! into the store, with a progress bar on a terminal in direct mode.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration as StdDuration;

use anyhow::Result;
use certctl_daemon::api::{Request, Response};
use certctl_daemon::scan::{self, ScanOptions, ScanProgress, ScanSummary};
use certctl_daemon::view::Printable;
use certctl_store::{now, Role, Store};
use clap::Args;

use crate::exit::Exit;
use crate::output::parse_role;
use crate::secrets::pfx_password_text;
use crate::session::{unexpected, Globals, Session};

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

pub fn exec(g: &Globals, a: ScanArgs) -> Result<Exit> {
    let session = &g.open()?;
    let options = ScanOptions {
        role: a.role,
        pfx_password: pfx_password_text(a.pfx_password_file.as_deref())?,
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
        Session::Daemon(_) => match session.call(Request::Scan { paths, options })? {
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

pub fn scan_with_progress(
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
        let result = scan::scan(store, paths, options, now(), &progress);
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

pub fn print_scan_failures(summary: &ScanSummary) {
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

pub fn scan_summary_line(s: &ScanSummary) -> String {
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
