//! The reminder pass: who must be told about which certificate, the digest e-mails, and
//! their delivery over SMTP (lettre).
//!
//! A pass ([`run_pass`]) works from the store and the policies at an injected time `now`:
//!
//! 1. **Due** ([`due`]): for each certificate that is present somewhere, not revoked, not
//!    renewed ([`policy::Successors`]: same CA key, names covered, deployed where it was,
//!    served nowhere any more), and matched by a
//!    policy, the most urgent threshold it has crossed ([`policy::Policy::crossed`]). It
//!    is due for a recipient unless that recipient was already told about that threshold or
//!    a more urgent one (the store keeps every sent (certificate, threshold, recipient)).
//!    Crossing several thresholds between two passes gives one reminder. Snoozed
//!    certificates are skipped until the snooze ends, except once expired. With
//!    `renewal_expected` the policy stays quiet until renewal is overdue. An expired
//!    ephemeral agent credential is due only as a **stalled renewal**
//!    ([`crate::fleet::stalled::stalled_renewals`]): the newest credential of its agent, expired more than
//!    the grace ago, reminded once at the expiry threshold.
//!    **Tracked artifacts** (`certctl track`: enrollment bundles, ...) are due the same way
//!    under the artifact policy that applies to them ([`PolicySet::select_artifact`]), with
//!    their own sent records (once per (artifact, threshold, recipient)). A bundle replaced
//!    by a new file at the same path is no longer in the store, so it is quiet; artifacts
//!    cannot be snoozed.
//! 2. **Digests**: one e-mail per recipient, grouped expired / critical / warn, each entry
//!    with subject, role, sources, days left and the `certctl show` command (a tracked
//!    artifact: its kind, file path, days left and `certctl list --name PATH`); plain text
//!    with an HTML alternative.
//! 3. **Delivery** ([`SmtpMailer`]): one SMTP session per digest, one digest at a time. As
//!    soon as the server answers `250` to a digest, its reminders are recorded (one atomic
//!    batch, flushed to disk) — before the session is closed and before the next digest —
//!    so a restart or a later pass re-sends nothing. A digest the server does not take
//!    stays pending: the recipient's attempt count and next attempt (backoff from 1
//!    minute, doubling, at most 6 hours) and the error (server, recipient, cause) are
//!    stored; the pass goes on with the next recipient; a scheduled pass skips the
//!    recipient until its next attempt, an explicit `certctl remind --now` retries at once.
//!    Nothing is recorded as sent unless the server accepted it.
//!
//!    Each session is bounded ([`crate::mail::smtp`]: reply sizes, one deadline of
//!    [`crate::mail::smtp::DEADLINE_FACTOR`] × `smtp.timeout`), and in certd no store lock
//!    is held while it runs ([`run_pass_locked`]): the writer lock is taken to read what is
//!    due and to record each outcome, so scans go on while a mail server is slow.
//!
//!    **The one window for a duplicate** is inherent to SMTP: when the connection breaks
//!    (or times out) after the whole message was sent but before the server's `250`, the
//!    server may or may not have kept it, and certctl cannot tell. It treats the digest as
//!    not delivered (never lose a reminder) and says so ([`SendFailure::maybe_delivered`],
//!    "the server may have accepted it"); the retry carries the same `Message-ID`
//!    ([`Digest::message_id`], derived from the recipient and the (fingerprint, threshold)
//!    pairs only), so a mail store or client that de-duplicates by Message-ID keeps one
//!    copy. Delivery is therefore at-least-once, and exactly-once counted by Message-ID.
//!    (A crash of certctl between the `250` and the flushed record is the same window,
//!    made as small as it can be.)
//!
//! Inside: [`digest`] (what one recipient gets) ← [`delivery`] (how it is sent) ← [`due`],
//! [`email`], [`webhook`], [`snooze`] ← [`pass`]. May import: `policy`, `config`, `mail`,
//! `inventory`, `pki` (renewal failures), `fleet` (stalled renewals), `history`, `duration`.

pub(crate) mod delivery;
pub(crate) mod digest;
pub(crate) mod due;
pub(crate) mod email;
pub(crate) mod pass;
pub(crate) mod snooze;
pub(crate) mod webhook;

pub use digest::when;
pub use pass::*;
pub use snooze::Snoozed;
pub(crate) use snooze::{snooze, snoozed, SnoozeError};

#[cfg(test)]
mod tests;
