//! The reminder pass end to end against in-memory mailers and stores.

use certctl_store::{Fingerprint, Role, Store, UnixTime};

use super::delivery::*;
use super::digest::*;
use super::due::*;
use super::email::*;
use super::pass::*;
use super::snooze::*;
use crate::config::{SmtpConfig, SmtpSecurity};
use crate::policy::{self, PolicySet};
use certctl_store::{CertificateFacts, KeyAlgorithm, Sha256, SourceLocation, SubjectAltNames};
use std::cell::RefCell;

const DAY: i64 = 86_400;

fn facts(cn: &str, n: u8, not_before: i64, not_after: i64) -> CertificateFacts {
    CertificateFacts {
        fingerprint: Sha256([n; 32]),
        subject: format!("CN={cn}"),
        subject_cn: Some(cn.into()),
        issuer: "CN=Issuing CA".into(),
        serial: format!("{n:x}"),
        not_before,
        not_after,
        sans: SubjectAltNames::default(),
        key: KeyAlgorithm::Ec {
            curve: "P-256".into(),
        },
        signature_algorithm: "ecdsa-with-SHA256".into(),
        is_ca: false,
        subject_key_id: None,
        authority_key_id: None,
        spki_sha256: Sha256([n; 32]),
        crl_distribution_points: vec![],
        ocsp_urls: vec![],
    }
}

/// `f` found in its CN's file (a renewal replaces the file: same path).
fn add(store: &Store, f: CertificateFacts, role: Role) {
    let mut ingest = store.ingest();
    let path = format!("/certs/{}.pem", f.subject_cn.as_deref().unwrap_or("x"));
    ingest
        .observe(f, Some(role), SourceLocation::File { path, index: 0 }, 0)
        .unwrap();
    ingest.commit().unwrap();
}

fn policies() -> PolicySet {
    let text = "[[policy]]\nname = \"iis\"\nroles = [\"iis\"]\nremind = [\"60d\", \"30d\", \"14d\"]\nwarn = \"30d\"\ncritical = \"7d\"\nrecipients = [\"a@example.org\", \"b@example.org\"]\n";
    policy::parse_files(&[("/p/x.toml".into(), text.into())]).unwrap()
}

#[derive(Default)]
struct FakeMailer {
    fail: RefCell<Option<String>>,
    sent: RefCell<Vec<Digest>>,
}

impl Mailer for FakeMailer {
    fn send(&self, digest: &Digest, _now: UnixTime) -> Result<(), SendFailure> {
        if let Some(e) = self.fail.borrow().clone() {
            return Err(SendFailure::not_sent(e));
        }
        self.sent.borrow_mut().push(digest.clone());
        Ok(())
    }
}

#[test]
fn once_per_threshold_and_recipient_then_the_next_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    add(&store, facts("a.example", 1, 0, 40 * DAY), Role::Iis);
    add(&store, facts("b.example", 2, 0, 400 * DAY), Role::Iis);
    let set = policies();
    let mailer = FakeMailer::default();

    let r = run_pass(&store, &set, Some(&mailer), 0, PassMode::Now).unwrap();
    assert_eq!((r.digests_sent, r.reminders_sent), (2, 2));
    let sent = mailer.sent.borrow().clone();
    assert_eq!(sent[0].recipient, "a@example.org");
    assert_eq!(sent[0].entries[0].threshold, "60d");
    assert_eq!(sent[0].entries[0].urgency, Urgency::Warn);

    let r = run_pass(&store, &set, Some(&mailer), DAY, PassMode::Now).unwrap();
    assert_eq!(r.reminders_sent, 0);

    // 30 days later: 10 days left, past 30d and 14d: one reminder (14d) each.
    let r = run_pass(&store, &set, Some(&mailer), 30 * DAY, PassMode::Now).unwrap();
    assert_eq!((r.digests_sent, r.reminders_sent), (2, 2));
    assert_eq!(r.digests[0].entries[0].threshold, "14d");
    let r = run_pass(&store, &set, Some(&mailer), 31 * DAY, PassMode::Now).unwrap();
    assert_eq!(r.reminders_sent, 0);
}

#[test]
fn failures_stay_pending_with_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    add(&store, facts("a.example", 1, 0, 10 * DAY), Role::Iis);
    let set = policies();
    let mailer = FakeMailer::default();
    *mailer.fail.borrow_mut() = Some("connection refused".into());
    let r = run_pass(&store, &set, Some(&mailer), 0, PassMode::Scheduled).unwrap();
    assert_eq!(r.failed.len(), 2);
    assert_eq!(r.failed[0].next_attempt, 60);
    assert_eq!(
        store.smtp_state().unwrap().last_error.as_deref(),
        Some("connection refused")
    );
    // Scheduled passes wait for the backoff; the retry doubles it.
    let r = run_pass(&store, &set, Some(&mailer), 30, PassMode::Scheduled).unwrap();
    assert_eq!((r.failed.len(), r.deferred.len()), (0, 2));
    let r = run_pass(&store, &set, Some(&mailer), 60, PassMode::Scheduled).unwrap();
    assert_eq!(r.failed[0].next_attempt, 180);
    *mailer.fail.borrow_mut() = None;
    let r = run_pass(&store, &set, Some(&mailer), 100, PassMode::Now).unwrap();
    assert_eq!(r.reminders_sent, 2);
    assert!(store.delivery_states().unwrap().is_empty());
    assert_eq!(store.smtp_state().unwrap().last_error, None);
    let r = run_pass(&store, &set, Some(&mailer), 200, PassMode::Now).unwrap();
    assert_eq!(r.reminders_sent, 0);
    assert_eq!(backoff(30), BACKOFF_MAX_SECS);
}

#[test]
fn renewal_expected_stays_quiet_then_reports_the_stall() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    add(&store, facts("acme.example", 1, 0, 90 * DAY), Role::Iis);
    let text = "[[policy]]\nname = \"acme\"\nroles = [\"iis\"]\nremind = [\"60d\", \"30d\", \"14d\"]\nwarn = \"30d\"\ncritical = \"7d\"\nrenewal_expected = \"20d\"\nrecipients = [\"a@example.org\"]\n";
    let set = policy::parse_files(&[("/p/x.toml".into(), text.into())]).unwrap();
    // 60d and 30d were crossed, but renewal is not due before 20d: quiet.
    assert!(due(&store, &set, 65 * DAY).unwrap().is_empty());
    // 15 days left and still the newest: the renewal stalled 5 days ago.
    let d = due(&store, &set, 75 * DAY).unwrap();
    assert_eq!(d.len(), 1);
    let e = &d[0].entries[0];
    assert_eq!(e.threshold, "20d");
    assert_eq!(e.note.as_deref(), Some("renewal stalled for 5 days"));
    // Renewed after all: quiet again.
    add(
        &store,
        facts("acme.example", 2, 74 * DAY, 164 * DAY),
        Role::Iis,
    );
    assert!(due(&store, &set, 75 * DAY).unwrap().is_empty());
}

#[test]
fn renewed_snoozed_and_expired() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    add(&store, facts("a.example", 1, 0, 10 * DAY), Role::Iis);
    add(&store, facts("a.example", 2, 5, 100 * DAY), Role::Iis);
    add(&store, facts("c.example", 3, 0, 10 * DAY), Role::Iis);
    let set = policies();
    // a.example#1 is renewed by #2; c is snoozed.
    let s = snooze(
        &store,
        &"03".repeat(32),
        20 * DAY,
        "change window",
        "alice",
        0,
    )
    .unwrap();
    assert_eq!(s.snooze.by, "alice");
    assert_eq!(
        store.history(&Sha256([3; 32])).unwrap()[0].action,
        "snoozed"
    );
    let d = due(&store, &set, 0).unwrap();
    assert!(d.is_empty(), "{d:?}");
    assert_eq!(snoozed(&store, 0).unwrap().len(), 1);
    // Expired: the snooze no longer silences it.
    let d = due(&store, &set, 11 * DAY).unwrap();
    assert_eq!(d.len(), 2);
    assert_eq!(d[0].entries.len(), 1);
    assert_eq!(d[0].entries[0].urgency, Urgency::Expired);
    assert!(d[0].text(11 * DAY).contains("certctl show 0303"));
    assert!(d[0].html(11 * DAY).contains("EXPIRED"));
    // Snoozing an expired certificate is refused.
    let e = snooze(&store, &"03".repeat(32), 20 * DAY, "x", "alice", 11 * DAY).unwrap_err();
    assert!(e.to_string().contains("never silenced"), "{e}");
}

fn bundle(store: &Store, path: &str, n: u8, issued: UnixTime) -> certctl_store::TrackedArtifact {
    let a = certctl_store::TrackedArtifact {
        id: Sha256([n; 32]),
        kind: "enrollment-bundle".into(),
        name: path.rsplit('/').next().unwrap_or(path).into(),
        path: path.into(),
        issued,
        expires: issued + 10 * DAY,
        expiry_from: "default".into(),
        tracked_at: issued,
        tracked_by: "me".into(),
    };
    store.put_artifact(&a).unwrap();
    a
}

#[test]
fn tracked_artifacts_are_reminded_once_per_threshold_under_artifact_policies() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // Same id as a certificate fingerprint: their reminders stay apart.
    add(&store, facts("a.example", 1, 0, 5 * DAY), Role::Iis);
    // A real file: a tracked file that is gone is not reminded about.
    let files = tempfile::tempdir().unwrap();
    let path = format!("{}/site a.bundle", files.path().display());
    std::fs::write(&path, "bundle").unwrap();
    bundle(&store, &path, 1, 0);
    let text = "[[policy]]\nname = \"iis\"\nroles = [\"iis\", \"other\"]\nremind = []\nwarn = \"0s\"\ncritical = \"0s\"\nrecipients = [\"a@example.org\"]\n\n[[policy]]\nname = \"bundles\"\nartifacts = [\"enrollment-bundle\"]\nremind = [\"3d\", \"1d\"]\nwarn = \"3d\"\ncritical = \"3d\"\nrecipients = [\"a@example.org\"]\n";
    let set = policy::parse_files(&[("/p/x.toml".into(), text.into())]).unwrap();
    let mailer = FakeMailer::default();
    let r = run_pass(&store, &set, Some(&mailer), 0, PassMode::Now).unwrap();
    assert_eq!(r.reminders_sent, 0, "{r:?}");
    let r = run_pass(&store, &set, Some(&mailer), 7 * DAY, PassMode::Now).unwrap();
    // The certificate expired (policy iis), the bundle crossed 3d (policy bundles).
    assert_eq!((r.digests_sent, r.reminders_sent), (1, 2), "{r:?}");
    let d = &r.digests[0];
    assert_eq!(
        d.subject(),
        "[certctl] 1 certificate and 1 tracked file need attention (1 expired, 1 critical)"
    );
    let e = d.entries.iter().find(|e| e.is_artifact()).unwrap();
    assert_eq!((e.threshold.as_str(), e.policy.as_str()), ("3d", "bundles"));
    assert_eq!((e.days_left, e.urgency), (3, Urgency::Critical));
    assert_eq!(e.command(), format!("certctl list --name '{path}'"));
    let text = d.text(7 * DAY);
    assert!(
        text.contains("site a.bundle (enrollment-bundle): 3 days left"),
        "{text}"
    );
    assert!(text.contains(&format!("file:      {path}")), "{text}");
    assert_eq!(
        store
            .sent_artifact_reminders(&Sha256([1; 32]))
            .unwrap()
            .len(),
        1
    );
    assert_eq!(store.sent_reminders(&Sha256([1; 32])).unwrap().len(), 1);
    let r = run_pass(&store, &set, Some(&mailer), 7 * DAY + 3600, PassMode::Now).unwrap();
    assert_eq!(r.reminders_sent, 0, "{r:?}");
    let r = run_pass(&store, &set, Some(&mailer), 9 * DAY, PassMode::Now).unwrap();
    assert_eq!(r.reminders_sent, 1, "{r:?}");
    assert_eq!(r.digests[0].entries[0].threshold, "1d");
    assert_eq!(
        r.digests[0].subject(),
        "[certctl] 1 tracked file needs attention (1 critical)"
    );
    // Replaced by a new bundle at the same path: the old one is quiet, the new one fresh.
    store.remove_artifact(&Sha256([1; 32])).unwrap();
    bundle(&store, &path, 2, 9 * DAY);
    assert!(due(&store, &set, 9 * DAY + 3600).unwrap().is_empty());
    // Deleted: the next pass marks it gone and reminds nothing about it, even at expiry.
    std::fs::remove_file(&path).unwrap();
    let r = run_pass(&store, &set, Some(&mailer), 19 * DAY, PassMode::Now).unwrap();
    assert_eq!(r.reminders_sent, 0, "{r:?}");
    assert_eq!(
        store.artifacts_gone().unwrap().get(&Sha256([2; 32])),
        Some(&(19 * DAY))
    );
}

#[test]
fn the_message_id_depends_on_the_recipient_and_its_reminders_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    add(&store, facts("a.example", 1, 0, 40 * DAY), Role::Iis);
    add(&store, facts("b.example", 2, 0, 50 * DAY), Role::Iis);
    let set = policies();
    let d = due(&store, &set, 0).unwrap();
    assert_eq!(d.len(), 2);
    let id = d[0].message_id("contoso.example");
    assert!(
        id.starts_with("<certctl.") && id.ends_with("@contoso.example>"),
        "{id}"
    );
    assert_eq!(id.len(), "<certctl.@contoso.example>".len() + 32, "{id}");
    // An hour later (other text, other days left): the same reminders, the same id.
    let later = due(&store, &set, 3600).unwrap();
    assert_ne!(later[0].text(3600), d[0].text(0));
    assert_eq!(later[0].message_id("contoso.example"), id);
    // The entries' order does not matter.
    let mut reversed = d[0].clone();
    reversed.entries.reverse();
    assert_eq!(reversed.message_id("contoso.example"), id);
    // Another recipient, another threshold, fewer reminders: another id.
    assert_ne!(d[1].message_id("contoso.example"), id);
    let mut other = d[0].clone();
    other.entries[0].threshold_secs = 14 * DAY;
    assert_ne!(other.message_id("contoso.example"), id);
    let mut fewer = d[0].clone();
    fewer.entries.pop();
    assert_ne!(fewer.message_id("contoso.example"), id);
}

/// Fails for one recipient; checks, at each send, that every digest accepted before
/// was already recorded in the store and its session finished.
struct Flaky<'s> {
    store: &'s Store,
    fail_for: &'static str,
    accepted: RefCell<Vec<Digest>>,
    open_session: RefCell<bool>,
    finished: RefCell<usize>,
}

impl Mailer for Flaky<'_> {
    fn send(&self, digest: &Digest, _now: UnixTime) -> Result<(), SendFailure> {
        assert!(
            !*self.open_session.borrow(),
            "finish() after each accepted digest"
        );
        for earlier in self.accepted.borrow().iter() {
            for e in &earlier.entries {
                let fp: Fingerprint = e.fingerprint.parse().unwrap();
                let sent = self.store.sent_reminders(&fp).unwrap();
                assert!(
                    told(&sent, &earlier.recipient, e.threshold_secs),
                    "{} was not recorded before the next send",
                    earlier.recipient
                );
            }
        }
        if digest.recipient == self.fail_for {
            return Err(SendFailure {
                error: "SMTP server 127.0.0.1:25 (none): cannot deliver: no answer".into(),
                maybe_delivered: true,
            });
        }
        self.accepted.borrow_mut().push(digest.clone());
        *self.open_session.borrow_mut() = true;
        Ok(())
    }

    fn finish(&self) {
        *self.open_session.borrow_mut() = false;
        *self.finished.borrow_mut() += 1;
    }
}

#[test]
fn each_accepted_digest_is_recorded_before_the_next_and_a_failure_does_not_stop_the_pass() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    add(&store, facts("a.example", 1, 0, 40 * DAY), Role::Iis);
    let text = "[[policy]]\nname = \"iis\"\nroles = [\"iis\"]\nremind = [\"60d\"]\nwarn = \"30d\"\ncritical = \"7d\"\nrecipients = [\"a@example.org\", \"b@example.org\", \"c@example.org\"]\n";
    let set = policy::parse_files(&[("/p/x.toml".into(), text.into())]).unwrap();
    let mailer = Flaky {
        store: &store,
        fail_for: "b@example.org",
        accepted: RefCell::default(),
        open_session: RefCell::new(false),
        finished: RefCell::new(0),
    };
    let r = run_pass(&store, &set, Some(&mailer), 0, PassMode::Now).unwrap();
    assert_eq!((r.digests_sent, r.reminders_sent), (2, 2), "{r:?}");
    assert_eq!(*mailer.finished.borrow(), 2);
    assert_eq!(r.failed.len(), 1);
    let f = &r.failed[0];
    assert_eq!(f.recipient, "b@example.org");
    assert!(f.maybe_delivered);
    let b = r
        .digests
        .iter()
        .find(|d| d.recipient == "b@example.org")
        .unwrap();
    assert_eq!(f.message_id, b.message_id(DEFAULT_MESSAGE_ID_DOMAIN));
    assert_eq!(store.smtp_delivery_failures_total().unwrap(), 1);
    assert_eq!(store.smtp_deliveries_total().unwrap(), 2);
    // The retry sends only b's digest, under the same Message-ID.
    let mailer = FakeMailer::default();
    let r = run_pass(&store, &set, Some(&mailer), 60, PassMode::Now).unwrap();
    assert_eq!((r.digests_sent, r.reminders_sent), (1, 1), "{r:?}");
    let sent = mailer.sent.borrow();
    assert_eq!(sent[0].recipient, "b@example.org");
    assert_eq!(sent[0].message_id(DEFAULT_MESSAGE_ID_DOMAIN), f.message_id);
}

// ---- SmtpMailer against a scripted server --------------------------------------------

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

/// What the scripted server does once it has read the message (after DATA).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Script {
    Accept,
    Refuse,
    /// Closes the connection without answering.
    Vanish,
    /// Closes the connection when asked RCPT TO.
    VanishAtRcpt,
}

/// A one-connection SMTP server on loopback; returns its port and the transcript (the
/// client's lines) once the connection ends.
fn scripted(script: Script) -> (u16, std::thread::JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut out = stream.try_clone().unwrap();
        let mut lines = BufReader::new(stream);
        let mut seen = Vec::new();
        let mut say = |s: &str| out.write_all(s.as_bytes()).is_ok();
        say("220 scripted ESMTP\r\n");
        let mut line = String::new();
        while lines.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            let cmd = line.trim_end().to_string();
            line.clear();
            seen.push(cmd.clone());
            let verb = cmd.split(' ').next().unwrap_or("").to_ascii_uppercase();
            match verb.as_str() {
                "EHLO" => say("250 scripted\r\n"),
                "MAIL" => say("250 ok\r\n"),
                "RCPT" if script == Script::VanishAtRcpt => return seen,
                "RCPT" => say("250 ok\r\n"),
                "DATA" => {
                    say("354 go ahead\r\n");
                    loop {
                        let mut l = String::new();
                        if lines.read_line(&mut l).map(|n| n == 0).unwrap_or(true) {
                            return seen;
                        }
                        if l == ".\r\n" {
                            break;
                        }
                        seen.push(l.trim_end().to_string());
                    }
                    match script {
                        Script::Accept => say("250 2.0.0 queued\r\n"),
                        Script::Refuse => say("554 5.6.0 message refused\r\n"),
                        _ => return seen,
                    }
                }
                "QUIT" => {
                    say("221 bye\r\n");
                    return seen;
                }
                _ => say("502 what?\r\n"),
            };
        }
        seen
    });
    (port, handle)
}

fn mailer_for(port: u16) -> SmtpMailer {
    SmtpMailer::new(&SmtpConfig {
        host: "127.0.0.1".into(),
        port,
        security: SmtpSecurity::None,
        from: "certd@contoso.example".into(),
        username: None,
        password_file: None,
        ca_file: None,
        timeout: std::time::Duration::from_secs(10),
    })
}

fn one_digest() -> Digest {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    add(&store, facts("a.example", 1, 0, 40 * DAY), Role::Iis);
    due(&store, &policies(), 0).unwrap().remove(0)
}

#[test]
fn smtp_accepted_carries_the_message_id_and_quits_only_when_finished() {
    let digest = one_digest();
    let (port, server) = scripted(Script::Accept);
    let mailer = mailer_for(port);
    mailer.send(&digest, 0).unwrap();
    assert!(
        mailer.open.lock().unwrap().is_some(),
        "the session stays open"
    );
    mailer.finish();
    let seen = server.join().unwrap();
    let id = digest.message_id("contoso.example");
    assert!(
        seen.iter()
            .any(|l| l.eq_ignore_ascii_case(&format!("message-id: {id}"))),
        "{seen:#?}"
    );
    assert_eq!(seen.last().map(String::as_str), Some("QUIT"), "{seen:#?}");
}

#[test]
fn smtp_no_answer_after_the_message_may_have_delivered_it() {
    let digest = one_digest();
    let (port, server) = scripted(Script::Vanish);
    let e = mailer_for(port).send(&digest, 0).unwrap_err();
    server.join().unwrap();
    assert!(e.maybe_delivered, "{e:?}");
    assert!(
        e.error.starts_with(&format!(
            "SMTP server 127.0.0.1:{port} (none): cannot deliver to a@example.org: no answer after the message was sent"
        )),
        "{e:?}"
    );
    assert!(e.error.contains("the server may have accepted it"), "{e:?}");
    assert!(
        e.error.contains(&digest.message_id("contoso.example")),
        "{e:?}"
    );
}

#[test]
fn smtp_a_server_without_greeting_fails_at_the_timeout_with_the_tls_hint() {
    let digest = one_digest();
    // Connections are accepted (backlog) but nothing is said, like an SMTPS port.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut config = mailer_for(port).config;
    config.timeout = std::time::Duration::from_secs(1);
    let started = std::time::Instant::now();
    let e = SmtpMailer::new(&config).send(&digest, 0).unwrap_err();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(!e.maybe_delivered, "{e:?}");
    assert_eq!(
        e.error,
        format!(
            "SMTP server 127.0.0.1:{port} (none): cannot deliver to a@example.org: no greeting within 1s: if the server expects TLS from the first byte (SMTPS, usually port 465), set security = \"tls\""
        )
    );
    drop(listener);
}

#[test]
fn smtp_failures_before_the_message_or_refusals_are_not_deliveries() {
    let digest = one_digest();
    let (port, server) = scripted(Script::VanishAtRcpt);
    let e = mailer_for(port).send(&digest, 0).unwrap_err();
    server.join().unwrap();
    assert!(!e.maybe_delivered, "{e:?}");
    assert!(
        e.error
            .contains("cannot deliver to a@example.org: before the message was sent"),
        "{e:?}"
    );

    let (port, server) = scripted(Script::Refuse);
    let e = mailer_for(port).send(&digest, 0).unwrap_err();
    let seen = server.join().unwrap();
    assert!(!e.maybe_delivered, "{e:?}");
    assert!(e.error.contains("the server refused the message"), "{e:?}");
    assert!(e.error.contains("554"), "{e:?}");
    assert_eq!(seen.last().map(String::as_str), Some("QUIT"), "{seen:#?}");

    // Nobody listening.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = mailer_for(port).send(&digest, 0).unwrap_err();
    assert!(!e.maybe_delivered, "{e:?}");
    assert!(
        e.error.starts_with(&format!(
            "SMTP server 127.0.0.1:{port} (none): cannot deliver to a@example.org: "
        )),
        "{e:?}"
    );
    assert!(
        e.error.to_lowercase().contains("connection refused"),
        "{e:?}"
    );
}
