//! Post-deploy reload hooks: the command a deploy target names (`[[workflows.targets]]`,
//! `reload = ["systemctl", "reload", "nginx"]`) run after the regenerate workflow replaced
//! its files.
//!
//! Rules, because a hook runs with certctl's (often root's) rights:
//! - **argv, never a shell**: the first element is the program (found on `PATH` when it has
//!   no `/`), the others its arguments, passed as they are.
//! - **bounded**: the hook is killed (SIGKILL to its whole process group) after its timeout;
//!   at most [`OUTPUT_LIMIT`] bytes of stdout and of stderr are kept (the rest is read and
//!   dropped, so a chatty hook never blocks), and logged.
//! - **no secrets inherited**: `CERTCTL_CA_PASSPHRASE` and `CERTCTL_PFX_PASSWORD` are removed
//!   from its environment; stdin is `/dev/null`; it runs in `/`.
//! - A program that forks a long-running child (a server restarted in the background) may
//!   keep the output pipes open: once the hook itself exited, its output is collected for at
//!   most [`DRAIN_GRACE`] more, and the child is left alone.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use certctl_store::ReloadHook;
use serde::{Deserialize, Serialize};

/// Bytes of stdout (and of stderr) kept per hook.
pub(crate) const OUTPUT_LIMIT: usize = 16 * 1024;
/// How long the output of an exited hook is still read (a background child may hold it).
pub(crate) const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// The timeout of a hook that names none.
pub(crate) const DEFAULT_TIMEOUT_SECS: u64 = 60;

/// What running one reload hook did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadOutcome {
    /// The target (file or folder) the hook is for.
    pub target: String,
    /// The program and its arguments that ran (no shell).
    pub argv: Vec<String>,
    /// Whether it exited with status 0 within its timeout.
    pub ok: bool,
    /// Its exit status, if it exited.
    pub status: Option<i32>,
    /// Whether it was killed at its timeout.
    pub timed_out: bool,
    /// stdout, at most `OUTPUT_LIMIT` bytes (lossy UTF-8).
    pub stdout: String,
    /// stderr, at most `OUTPUT_LIMIT` bytes (lossy UTF-8).
    pub stderr: String,
    /// One line for the admin: what happened.
    pub detail: String,
}

/// Reads a pipe to its end, keeping the first [`OUTPUT_LIMIT`] bytes.
fn drain(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 8192];
        let mut dropped = false;
        loop {
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let room = OUTPUT_LIMIT.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                    dropped |= n > room;
                }
            }
        }
        let mut text = String::from_utf8_lossy(&kept).into_owned();
        if dropped {
            text.push_str("\n[... output cut]");
        }
        let _ = tx.send(text);
    });
    rx
}

/// Runs one hook to its end or its timeout.
pub(crate) fn run(hook: &ReloadHook) -> ReloadOutcome {
    let mut outcome = ReloadOutcome {
        target: hook.target.clone(),
        argv: hook.argv.clone(),
        ok: false,
        status: None,
        timed_out: false,
        stdout: String::new(),
        stderr: String::new(),
        detail: String::new(),
    };
    let shown = hook.argv.join(" ");
    let Some((program, args)) = hook.argv.split_first() else {
        outcome.detail = "the reload command is empty".into();
        return outcome;
    };
    let spawned = Command::new(program)
        .args(args)
        .env_remove("CERTCTL_CA_PASSPHRASE")
        .env_remove("CERTCTL_PFX_PASSWORD")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            outcome.detail = format!("cannot run `{shown}`: {e}");
            return outcome;
        }
    };
    let out = child.stdout.take().map(drain);
    let err = child.stderr.take().map(drain);
    let timeout = Duration::from_secs(hook.timeout_secs.max(1));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => {
                // The hook and everything it started: it runs in its own process group.
                if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
                    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
                }
                let _ = child.kill();
                let _ = child.wait();
                outcome.timed_out = true;
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                outcome.detail = format!("cannot wait for `{shown}`: {e}");
                let _ = child.kill();
                let _ = child.wait();
                return outcome;
            }
        }
    };
    let grace = Instant::now() + DRAIN_GRACE;
    let collect = |rx: Option<mpsc::Receiver<String>>| {
        rx.and_then(|rx| {
            rx.recv_timeout(grace.saturating_duration_since(Instant::now()))
                .ok()
        })
        .unwrap_or_default()
    };
    outcome.stdout = collect(out);
    outcome.stderr = collect(err);
    match status {
        None => {
            outcome.detail = format!(
                "`{shown}` did not finish within {}s and was killed",
                timeout.as_secs()
            );
        }
        Some(s) => {
            outcome.status = s.code();
            outcome.ok = s.success();
            outcome.detail = match s.code() {
                Some(0) => format!("`{shown}` exited 0"),
                Some(c) => format!("`{shown}` exited {c}"),
                None => format!("`{shown}` was killed by a signal"),
            };
            let last = outcome.stderr.trim().lines().last().unwrap_or("").trim();
            if !outcome.ok && !last.is_empty() {
                outcome.detail.push_str(&format!(": {last}"));
            }
        }
    }
    if outcome.ok {
        tracing::info!(target = %hook.target, command = %shown, stdout = %outcome.stdout, stderr = %outcome.stderr, "reload hook ran");
    } else {
        tracing::warn!(target = %hook.target, command = %shown, stdout = %outcome.stdout, stderr = %outcome.stderr, detail = %outcome.detail, "reload hook failed");
    }
    outcome
}

/// Whether `hook` is for the deployed file `path` (the same path, or a folder above it).
pub(crate) fn applies_to(hook: &ReloadHook, path: &str) -> bool {
    let target = hook.target.trim_end_matches('/');
    path == target
        || path
            .strip_prefix(target)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(argv: &[&str], timeout_secs: u64) -> ReloadHook {
        ReloadHook {
            target: "/etc/x".into(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            timeout_secs,
        }
    }

    #[test]
    fn argv_is_not_a_shell_line() {
        let o = run(&hook(&["echo", "a; false", "$HOME"], 5));
        assert!(o.ok, "{o:?}");
        assert_eq!(o.stdout, "a; false $HOME\n");
    }

    #[test]
    fn failures_say_why() {
        let o = run(&hook(&["sh", "-c", "echo broken >&2; exit 3"], 5));
        assert_eq!((o.ok, o.status), (false, Some(3)));
        assert!(o.detail.contains("exited 3: broken"), "{}", o.detail);
        let o = run(&hook(&["/nonexistent/reload-me"], 5));
        assert!(!o.ok && o.detail.contains("cannot run"), "{}", o.detail);
        let o = run(&hook(&[], 5));
        assert!(!o.ok);
    }

    #[test]
    fn output_is_bounded_and_timeouts_kill() {
        let o = run(&hook(
            &["sh", "-c", "head -c 100000 /dev/zero | tr '\\0' x"],
            10,
        ));
        assert!(o.ok);
        assert!(o.stdout.len() < OUTPUT_LIMIT + 64);
        let o = run(&hook(&["sleep", "30"], 1));
        assert!(o.timed_out && !o.ok, "{o:?}");
        assert!(o.detail.contains("killed"), "{}", o.detail);
    }

    #[test]
    fn targets_match_files_and_folders() {
        let h = hook(&["true"], 1);
        assert!(applies_to(&h, "/etc/x"));
        assert!(applies_to(&h, "/etc/x/site.pem"));
        assert!(!applies_to(&h, "/etc/xy/site.pem"));
    }
}
