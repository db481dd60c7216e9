//! Deterministic crash points for the crash-safety tests.
//!
//! A multi-step operation that must survive `kill -9` at any moment (today: `ca init`, see
//! [`crate::pki::ca`]) calls [`here`] after each durable step with the step's name. In debug
//! builds (the ones the end-to-end tests run), `CERTCTL_TEST_CRASH_AT=NAME` makes the process
//! send itself `SIGKILL` at that point: no destructor, flush or cleanup runs, exactly as if
//! an administrator or the OOM killer had killed it there. Release builds compile the check
//! out; never set the variable in production.
//!
//! The regenerate workflow has its own, older hook (`CERTCTL_TEST_ABORT_AFTER_STEP`, see
//! [`crate::pki::workflow`]).

/// The environment variable naming the crash point (debug builds only).
pub(crate) const VAR: &str = "CERTCTL_TEST_CRASH_AT";

/// Kills the process with `SIGKILL` when [`VAR`] names `point` (debug builds only).
pub(crate) fn here(point: &str) {
    if !cfg!(debug_assertions) {
        return;
    }
    if std::env::var(VAR).is_ok_and(|v| v.trim() == point) {
        eprintln!("{VAR}={point}: killing the process (test hook)");
        let me = rustix::process::getpid();
        let _ = rustix::process::kill_process(me, rustix::process::Signal::KILL);
        // SIGKILL cannot be caught; should it not have been delivered, abort without cleanup.
        std::process::abort();
    }
}
