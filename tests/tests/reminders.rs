//! Policies and e-mail reminders, end to end: the real `certctl` (and `certd`) binaries, a
//! real SMTP server (aiosmtpd on loopback, see `certctl_e2e::smtp`), certificates from the
//! harness's `CertFactory`, and the test clock `CERTCTL_NOW` for "30 days later".

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use certctl_e2e::daemon::Certd;
use certctl_e2e::smtp::{Fault, Mail, SmtpServer, TlsMode};
use certctl_e2e::*;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, SanType,
};
use serde_json::Value;

const MAIL_WAIT: Duration = Duration::from_secs(20);
const OPS: &str = "ops@contoso.example";
const PKI: &str = "pki@contoso.example";

const POLICIES: &str = r#"
[[policy]]
name = "public"
roles = ["gateway", "iis"]
remind = ["60d", "30d", "14d", "7d"]
warn = "30d"
critical = "7d"
recipients = ["ops@contoso.example", "pki@contoso.example"]

[[policy]]
name = "site"
roles = ["site-server"]
remind = ["30d"]
warn = "30d"
critical = "7d"
recipients = ["ops@contoso.example"]
"#;

/// A store, a policies folder, an SMTP server and a certd configuration pointing at both.
struct Setup {
    env: TestEnv,
    smtp: SmtpServer,
    config: PathBuf,
    factory: CertFactory,
}

impl Setup {
    fn new(auth: Option<(&str, &str)>) -> Setup {
        Setup::with(auth, None, POLICIES, "5s")
    }

    /// `certctl --config CONFIG ARGS` with the clock at `when`.
    fn at(&self, when: i64, args: &[&str]) -> RunResult {
        self.env
            .cmd()
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env("CERTCTL_NOW", rfc3339(when))
            .run()
    }

    /// Writes `bundles/NAME` and tracks it as an enrollment bundle issued at `issued`;
    /// returns its path and artifact id.
    fn track_bundle(&self, name: &str, issued: i64) -> (PathBuf, String) {
        let bundle = self.env.mkdir("bundles").join(name);
        std::fs::write(&bundle, format!("opaque enrollment bundle {name}\n")).unwrap();
        let tracked = self.env.certctl(&[
            "track",
            s(&bundle),
            "--kind",
            "enrollment-bundle",
            "--issued",
            &rfc3339(issued),
            "--json",
        ]);
        tracked.success();
        let id = tracked.json()[0]["fingerprint_sha256"]
            .as_str()
            .expect("artifact id")
            .to_string();
        (bundle, id)
    }

    /// A setup with these policies and SMTP timeout, the server misbehaving as `fault` says.
    fn with(
        auth: Option<(&str, &str)>,
        fault: Option<Fault>,
        policies_text: &str,
        timeout: &str,
    ) -> Setup {
        let env = TestEnv::new();
        let smtp = SmtpServer::start_with_fault(&env.mkdir("smtp"), auth, fault);
        let policies = env.mkdir("policies");
        std::fs::write(policies.join("test.toml"), policies_text).unwrap();
        let mut text = format!(
            "store = \"{}\"\n[scan]\nschedule = \"off\"\nwatch = false\n[probe]\nschedule = \"off\"\n\
             [smtp]\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\nfrom = \"certd@contoso.example\"\ntimeout = \"{timeout}\"\n",
            s(env.store()),
            smtp.port
        );
        if let Some((user, _)) = auth {
            let pw = env.file("smtp-password");
            files::secret(&pw, "wrong-password\n");
            text.push_str(&format!(
                "username = \"{user}\"\npassword_file = \"{}\"\n",
                s(&pw)
            ));
        }
        text.push_str(&format!(
            "[reminders]\nschedule = \"0 8 * * 1-5\"\npolicies = \"{}\"\n",
            s(&policies)
        ));
        let config = env.file("certd.toml");
        std::fs::write(&config, text).unwrap();
        Setup {
            env,
            smtp,
            config,
            factory: CertFactory::new(),
        }
    }

    /// Writes the certificates to ROLE/NAME.pem and scans them with that role.
    fn add(&self, role: &str, certs: &[(&str, &GeneratedCert)]) {
        let dir = self.env.mkdir(role);
        for (name, cert) in certs {
            files::pem(&dir.join(format!("{name}.pem")), &[cert]);
        }
        self.env
            .certctl(&["scan", s(&dir), "--role", role])
            .success();
    }

    /// `certctl --config FILE ARGS...` at `now + offset` seconds.
    fn run(&self, offset: i64, args: &[&str]) -> RunResult {
        self.at(now() + offset, args)
    }

    fn remind(&self, offset: i64) -> RunResult {
        self.run(offset, &["remind", "--now"])
    }
}

fn mail_for<'m>(mails: &'m [Mail], to: &str) -> &'m Mail {
    mails
        .iter()
        .find(|m| m.to().contains(to))
        .unwrap_or_else(|| panic!("no mail to {to} among {mails:#?}"))
}

/// The block of the text body about one certificate (from its name to its `inspect:` line).
fn entry<'t>(text: &'t str, cert: &GeneratedCert) -> &'t str {
    let cmd = format!("certctl show {}", cert.fingerprint);
    let end = text
        .find(&cmd)
        .unwrap_or_else(|| panic!("{cmd} is not in:\n{text}"));
    let start = text[..end].rfind("\n  * ").expect("entry start");
    &text[start..end + cmd.len()]
}

#[test]
fn the_digest_arrives_grouped_with_the_right_certificates_and_thresholds() {
    let t = Setup::new(None);
    let f = &t.factory;
    let gw = f.leaf(CertSpec::leaf("gw.contoso.example").expires_in_days(40));
    let far = f.leaf(CertSpec::leaf("far.contoso.example").expires_in_days(200));
    let iis_expired =
        f.leaf(CertSpec::leaf("old.contoso.example").valid(-30 * DAY, -2 * DAY - 12 * HOUR));
    let renewed_old = f.leaf(CertSpec::leaf("renew.contoso.example").expires_in_days(10));
    let renewed_new = f.leaf(CertSpec::leaf("renew.contoso.example").expires_in_days(300));
    let snoozed = f.leaf(CertSpec::leaf("snooze.contoso.example").expires_in_days(20));
    let site = f.leaf(CertSpec::leaf("site1.contoso.example").expires_in_days(5));
    t.add(
        "gateway",
        &[("gw", &gw), ("far", &far), ("snooze", &snoozed)],
    );
    t.add("iis", &[("old", &iis_expired), ("renew", &renewed_old)]);
    // Renewed where it is deployed: the file now holds the new certificate.
    t.add("iis", &[("renew", &renewed_new)]);
    t.add("site-server", &[("site1", &site)]);

    // Snooze one; an expired certificate cannot be snoozed.
    t.run(
        0,
        &[
            "snooze",
            &snoozed.fingerprint,
            "--until",
            &rfc3339(now() + 60 * DAY),
            "--reason",
            "replaced in the January window",
        ],
    )
    .success()
    .stdout_has("snoozed snooze.contoso.example");
    t.run(
        0,
        &[
            "snooze",
            &iis_expired.fingerprint,
            "--until",
            "2099-01-01",
            "--reason",
            "x",
        ],
    )
    .expect_code(4)
    .stderr_has("never silenced");
    let listed = t.run(0, &["snoozed", "--json"]);
    listed.success();
    let listed = listed.json();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(
        listed[0]["fingerprint_sha256"],
        snoozed.fingerprint.as_str()
    );
    assert_eq!(listed[0]["reason"], "replaced in the January window");

    // The dry run shows what would go, sends nothing.
    let dry = t.run(0, &["remind", "--dry-run"]);
    dry.success()
        .stdout_has("dry run: 2 digests with 5 reminders would be sent");
    assert!(t.smtp.messages().is_empty());

    let r = t.remind(0);
    r.success().stdout_has("sent 2 digests with 5 reminders");
    let mails = t.smtp.wait_for_messages(2, MAIL_WAIT);
    assert_eq!(mails.len(), 2, "{mails:#?}");

    let ops = mail_for(&mails, OPS);
    assert!(
        ops.subject().contains("3 certificates need attention"),
        "{}",
        ops.subject()
    );
    assert!(
        ops.subject().contains("1 expired, 1 critical, 1 warn"),
        "{}",
        ops.subject()
    );
    let text = &ops.text;
    let (e, c, w) = (
        text.find("EXPIRED (1)").expect("expired group"),
        text.find("CRITICAL (1)").expect("critical group"),
        text.find("WARNING (1)").expect("warn group"),
    );
    assert!(e < c && c < w, "groups out of order:\n{text}");
    let old = entry(text, &iis_expired);
    assert!(
        old.contains("old.contoso.example (iis): expired 2 days ago"),
        "{old}"
    );
    assert!(old.contains("note:      not renewed"), "{old}");
    assert!(old.contains("threshold: expired (policy public)"), "{old}");
    assert!(
        old.contains(&format!("{}#0", s(&t.env.root().join("iis/old.pem")))),
        "{old}"
    );
    let crit = entry(text, &site);
    assert!(crit.contains("(site-server): 5 days left"), "{crit}");
    assert!(crit.contains("threshold: 7d (policy site)"), "{crit}");
    let warn = entry(text, &gw);
    assert!(warn.contains("(gateway): 40 days left"), "{warn}");
    assert!(warn.contains("threshold: 60d (policy public)"), "{warn}");
    assert!(
        warn.contains("subject:   CN=gw.contoso.example,O=Certctl E2E"),
        "{warn}"
    );
    assert!(e < text.find(&iis_expired.fingerprint).unwrap());
    assert!(w < text.find(&gw.fingerprint).unwrap());
    for quiet in [&far, &renewed_old, &renewed_new, &snoozed] {
        assert!(
            !text.contains(&quiet.fingerprint),
            "{quiet:?} must not be in:\n{text}"
        );
    }
    // The HTML alternative has the same certificates.
    assert!(ops.html.contains("<table"), "{}", ops.html);
    for cert in [&gw, &site, &iis_expired] {
        assert!(ops
            .html
            .contains(&format!("certctl show {}", cert.fingerprint)));
    }

    let pki = mail_for(&mails, PKI);
    assert!(
        pki.subject().contains("2 certificates"),
        "{}",
        pki.subject()
    );
    assert!(pki.text.contains(&gw.fingerprint) && pki.text.contains(&iis_expired.fingerprint));
    assert!(!pki.text.contains(&site.fingerprint));

    // A second pass (a new process: nothing is kept in memory) sends nothing.
    t.remind(HOUR)
        .success()
        .stdout_has("sent 0 digests with 0 reminders");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(t.smtp.messages().len(), 2);

    // The sent reminders are in the audit history of the certificate.
    let status = t.env.certctl(&["status"]);
    status.success();
    assert!(!status.stdout.contains("smtp: last error"), "{status}");
}

#[test]
fn a_threshold_crossed_later_sends_one_new_reminder() {
    let t = Setup::new(None);
    let gw = t
        .factory
        .leaf(CertSpec::leaf("gw.contoso.example").expires_in_days(40));
    let ca_like = t
        .factory
        .leaf(CertSpec::leaf("later.contoso.example").expires_in_days(400));
    t.add("gateway", &[("gw", &gw), ("later", &ca_like)]);

    t.remind(0)
        .success()
        .stdout_has("sent 2 digests with 2 reminders");
    let first = t.smtp.wait_for_messages(2, MAIL_WAIT);
    assert!(entry(&mail_for(&first, OPS).text, &gw).contains("threshold: 60d"));

    // 30 days later: 10 days left, so both 30d and 14d were crossed: ONE reminder (14d).
    t.remind(30 * DAY)
        .success()
        .stdout_has("sent 2 digests with 2 reminders");
    let all = t.smtp.wait_for_messages(4, MAIL_WAIT);
    assert_eq!(all.len(), 4);
    let later: Vec<Mail> = all[2..].to_vec();
    for to in [OPS, PKI] {
        let m = mail_for(&later, to);
        assert!(
            m.subject()
                .contains("1 certificate needs attention (1 warn)"),
            "{}",
            m.subject()
        );
        let e = entry(&m.text, &gw);
        assert!(e.contains("threshold: 14d"), "{e}");
        assert!(e.contains("10 days left"), "{e}");
        assert!(!m.text.contains(&ca_like.fingerprint));
    }
    // And again the same day: nothing new.
    t.remind(30 * DAY + HOUR)
        .success()
        .stdout_has("sent 0 digests with 0 reminders");
    // Explain says where it stands.
    let explain = t.run(30 * DAY, &["policy", "explain", &gw.fingerprint, "--json"]);
    explain.success();
    let v = explain.json();
    assert_eq!(v[0]["state"], "warn", "{v}");
    assert_eq!(v[0]["crossed"], "14d", "{v}");
    assert_eq!(v[0]["policy"]["name"], "public", "{v}");
}

#[test]
fn smtp_down_loses_nothing_and_delivers_exactly_once_when_back() {
    let mut t = Setup::new(None);
    let gw = t
        .factory
        .leaf(CertSpec::leaf("gw.contoso.example").expires_in_days(20));
    t.add("gateway", &[("gw", &gw)]);

    t.smtp.stop();
    let r = t.remind(0);
    r.expect_code(4)
        .stdout_has(
            "sent 0 digests with 0 reminders; 2 digests (2 reminders) failed and stay pending",
        )
        .stderr_has(&format!("SMTP server 127.0.0.1:{}", t.smtp.port));
    let status = t.env.certctl(&["status"]);
    status
        .success()
        .stdout_has("smtp: last error")
        .stdout_has(&format!("127.0.0.1:{}", t.smtp.port))
        .stdout_has("reminders: 2 pending delivery");
    let json = t.env.certctl(&["status", "--json"]).json();
    assert!(json["smtp_last_error"].as_str().is_some(), "{json}");
    assert_eq!(json["reminders_pending"], 2);

    // Still down an hour later: still pending, nothing recorded as sent.
    t.remind(HOUR).expect_code(4);

    t.smtp.restart();
    t.remind(2 * HOUR)
        .success()
        .stdout_has("sent 2 digests with 2 reminders");
    let mails = t.smtp.wait_for_messages(2, MAIL_WAIT);
    assert!(mail_for(&mails, OPS).text.contains(&gw.fingerprint));
    assert!(mail_for(&mails, PKI).text.contains(&gw.fingerprint));
    t.remind(3 * HOUR)
        .success()
        .stdout_has("sent 0 digests with 0 reminders");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(t.smtp.messages().len(), 2, "delivered exactly once");
    let status = t.env.certctl(&["status", "--json"]).json();
    assert_eq!(status["smtp_last_error"], Value::Null, "{status}");
    assert_eq!(status["reminders_pending"], 0);
}

#[test]
fn a_wrong_smtp_password_is_a_clear_error_in_status() {
    let t = Setup::new(Some(("certd", "right-password")));
    let gw = t
        .factory
        .leaf(CertSpec::leaf("gw.contoso.example").expires_in_days(20));
    t.add("gateway", &[("gw", &gw)]);

    let r = t.remind(0);
    r.expect_code(4)
        .stderr_has("authentication failed for user `certd`");
    let status = t.env.certctl(&["status"]);
    status
        .success()
        .stdout_has("smtp: last error")
        .stdout_has("authentication failed for user `certd`")
        .stdout_has("535");
    assert!(
        !status.stdout.contains("wrong-password"),
        "never show the password: {status}"
    );
    assert!(t.smtp.messages().is_empty());

    // The right password from the environment (it wins over password_file): delivered.
    let ok = t
        .env
        .cmd()
        .arg("--config")
        .arg(&t.config)
        .args(["remind", "--now"])
        .env("CERTCTL_SMTP_PASSWORD", "right-password")
        .run();
    ok.success().stdout_has("sent 2 digests with 2 reminders");
    t.smtp.wait_for_messages(2, MAIL_WAIT);
    let status = t.env.certctl(&["status"]);
    assert!(!status.stdout.contains("smtp: last error"), "{status}");
}

#[test]
fn remind_now_goes_through_certd_when_it_runs() {
    let t = Setup::new(None);
    let gw = t
        .factory
        .leaf(CertSpec::leaf("gw.contoso.example").expires_in_days(20));
    t.add("gateway", &[("gw", &gw)]);
    let certd = Certd::start(&t.env, &t.config);
    // --config alone names the store (no --store): the request goes to certd.
    let r = t
        .env
        .cmd()
        .no_store()
        .arg("--config")
        .arg(&t.config)
        .args(["remind", "--now"])
        .run();
    r.success().stdout_has("sent 2 digests with 2 reminders");
    t.smtp.wait_for_messages(2, MAIL_WAIT);
    let status = t.env.certctl(&["status"]);
    status
        .success()
        .stdout_has("mode: daemon")
        .stdout_has("remind");
    t.remind(0)
        .success()
        .stdout_has("sent 0 digests with 0 reminders");
    drop(certd);
    // After certd stopped, direct mode sees the same sent records.
    t.remind(0)
        .success()
        .stdout_has("sent 0 digests with 0 reminders");
    assert_eq!(t.smtp.messages().len(), 2);
}

fn write_policies(dir: &Path, name: &str, text: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), text).unwrap();
}

/// Issue 14: "renewed" was decided by subject and role alone. A TLS-inspecting proxy's
/// forgery (same name, a look-alike CA's key) and a renewal on disk that the endpoint does
/// not serve yet silenced the real gateway certificate that expires in 4 days. Only a real
/// renewal, deployed and served, is silent.
#[test]
fn only_a_deployed_and_served_renewal_silences_the_reminder() {
    let env = TestEnv::new();
    let f = CertFactory::new();
    let lookalike = CertFactory::new(); // same CA names, other keys
    let spec = || CertSpec::leaf("gw.contoso.example").dns("gw.contoso.example");
    let old = f.leaf(spec().expires_in_days(4));
    let tls = env.file("gw/tls.pem");
    files::pem(&tls, &[&old]);
    env.certctl(&["scan", s(&tls), "--role", "gateway"])
        .success();
    let policies = env.mkdir("policies");
    write_policies(&policies, "p.toml", POLICIES);
    let dry = || {
        let r = env
            .cmd()
            .args(["remind", "--dry-run", "--json", "--policies", s(&policies)])
            .run();
        r.success();
        let entries: Vec<Value> = r.json()["digests"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|d| d["entries"].as_array().unwrap().clone())
            .collect();
        entries
    };
    let names_of = |entries: &[Value]| -> Vec<String> {
        entries
            .iter()
            .map(|e| e["fingerprint"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(
        names_of(&dry()).contains(&old.fingerprint),
        "reminded at first"
    );
    // A probe of the gateway's address (its exit code depends on the findings).
    let probe = |address: &str| {
        env.cmd()
            .args([
                "probe",
                address,
                "--role",
                "gateway",
                "--sni",
                "gw.contoso.example",
            ])
            .run()
    };

    // 1. The forgery a proxy serves on the gateway's address: not a renewal.
    let forged = lookalike.leaf(spec().expires_in_days(300));
    let proxy = certctl_e2e::tls::TlsServer::serve(&forged, &[lookalike.intermediate()]);
    probe(&proxy.address());
    proxy.stop();
    assert!(
        names_of(&dry()).contains(&old.fingerprint),
        "a forgery must not silence the real certificate"
    );
    let explain = env
        .cmd()
        .args([
            "policy",
            "explain",
            &old.fingerprint,
            "--policies",
            s(&policies),
        ])
        .run();
    assert!(!explain.stdout.contains("renewed"), "{explain}");

    // 2. The renewal replaces the file, but the gateway still serves the old certificate.
    let server = certctl_e2e::tls::TlsServer::serve(&old, &[f.intermediate()]);
    let address = server.address();
    probe(&address);
    let new = f.leaf(spec().expires_in_days(365));
    files::pem(&tls, &[&new]);
    env.certctl(&["scan", s(&tls), "--role", "gateway"])
        .success();
    let entries = dry();
    let entry = entries
        .iter()
        .find(|e| e["fingerprint"] == old.fingerprint.as_str())
        .expect("still reminded while the old one is served");
    let note = entry["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("renewed on disk") && note.contains(&format!("tls://{address}")),
        "{entry}"
    );
    env.cmd()
        .args([
            "policy",
            "explain",
            &old.fingerprint,
            "--policies",
            s(&policies),
        ])
        .run()
        .success()
        .stdout_has("reload the service");
    server.stop();

    // 3. The gateway reloaded: it serves the renewal; the old one is silent.
    let server = certctl_e2e::tls::TlsServer::serve_on(&address, &new, &[f.intermediate()]);
    probe(&address);
    server.stop();
    assert!(
        !names_of(&dry()).contains(&old.fingerprint),
        "a deployed and served renewal silences it"
    );
}

/// Issue 14: `certctl --store S --config C remind --dry-run` failed with "`store` is missing"
/// when C names no store although `--store` was given, and a dry run needed `[smtp]` and a
/// configuration at all. `--store` wins; a dry run needs only the policies.
#[test]
fn a_dry_run_needs_neither_the_configurations_store_nor_smtp() {
    let env = TestEnv::new();
    let f = CertFactory::new();
    let gw = f.leaf(CertSpec::leaf("gw.contoso.example").expires_in_days(5));
    let file = env.file("gw/gw.pem");
    files::pem(&file, &[&gw]);
    env.certctl(&["scan", s(&file), "--role", "gateway"])
        .success();
    let policies = env.mkdir("policies");
    write_policies(&policies, "p.toml", POLICIES);
    // A configuration for certctl's side only: no `store`, no [smtp].
    let config = env.file("client.toml");
    files::text(
        &config,
        &format!(
            "[reminders]\nschedule = \"0 8 * * 1-5\"\npolicies = \"{}\"\n",
            policies.display()
        ),
    );

    // One clock for both runs: the digests carry the time of the pass, and two runs a
    // second apart would differ in it.
    let at = rfc3339(now());
    let with_config = env
        .cmd()
        .env("CERTCTL_NOW", &at)
        .args(["--config", s(&config), "remind", "--dry-run"])
        .run();
    with_config
        .success()
        .stdout_has(&format!("To: {OPS}"))
        .stdout_has("gw.contoso.example")
        .stdout_has("dry run: 2 digests");
    let without_config = env
        .cmd()
        .env("CERTCTL_NOW", &at)
        .args(["remind", "--dry-run", "--policies", s(&policies)])
        .run();
    without_config.success();
    assert_eq!(without_config.stdout, with_config.stdout);

    // Sending still needs the configuration's [smtp], and says so.
    env.cmd()
        .args(["--config", s(&config), "remind", "--now"])
        .run()
        .expect_code(4)
        .stderr_has("no [smtp] section");
    env.cmd()
        .args(["remind", "--now", "--policies", s(&policies)])
        .run()
        .expect_code(4)
        .stderr_has("--config FILE");
}

#[test]
fn policy_check_explain_and_conflicts() {
    let env = TestEnv::new();
    let f = CertFactory::new();
    let gw = f.leaf(CertSpec::leaf("gw.contoso.example").expires_in_days(5));
    let other = f.leaf(CertSpec::leaf("misc.contoso.example").expires_in_days(100));
    let dir = env.mkdir("gw");
    files::pem(&dir.join("gw.pem"), &[&gw]);
    env.certctl(&["scan", s(&dir), "--role", "gateway"])
        .success();
    let dir = env.mkdir("misc");
    files::pem(&dir.join("misc.pem"), &[&other]);
    env.certctl(&["scan", s(&dir)]).success();

    // The shipped defaults are valid.
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    env.certctl(&["policy", "check", s(&shipped)])
        .success()
        .stdout_has("agents-ephemeral")
        .stdout_has("artifacts:enrollment-bundle");

    // Errors: FILE:LINE:COLUMN.
    let bad = env.root().join("bad");
    write_policies(
        &bad,
        "a.toml",
        "[[policy]]\nname = \"x\"\nroles = [\"gw\"]\nremind = [\"30d\"]\nwarn = \"30d\"\ncritical = \"7d\"\nrecipients = [\"ops@contoso.example\"]\n",
    );
    let r = env.certctl(&["policy", "check", s(&bad)]);
    r.expect_code(4).stderr_has(&format!(
        "{}:3:10: policy.roles: unknown role `gw`",
        s(&bad.join("a.toml"))
    ));

    // A policy is for certificates (roles) or tracked artifacts (artifacts), not both.
    let mixed = env.root().join("mixed");
    write_policies(
        &mixed,
        "a.toml",
        "[[policy]]\nname = \"x\"\nroles = [\"other\"]\nartifacts = [\"enrollment-bundle\"]\nremind = [\"3d\"]\nwarn = \"3d\"\ncritical = \"3d\"\nrecipients = [\"ops@contoso.example\"]\n",
    );
    env.certctl(&["policy", "check", s(&mixed)])
        .expect_code(4)
        .stderr_has(&format!(
            "{}:4:13: policy `x`: sets both roles and artifacts",
            s(&mixed.join("a.toml"))
        ));

    // Two policies match the gateway certificate: a conflict; the more specific wins.
    let good = env.root().join("good");
    write_policies(
        &good,
        "10-general.toml",
        "[[policy]]\nname = \"public\"\nroles = [\"gateway\", \"iis\"]\nremind = [\"30d\"]\nwarn = \"30d\"\ncritical = \"7d\"\nrecipients = [\"ops@contoso.example\"]\n",
    );
    write_policies(
        &good,
        "20-gw.toml",
        "[[policy]]\nname = \"contoso-gateways\"\nroles = [\"gateway\"]\nsubjects = [\"*.CONTOSO.example\"]\nremind = [\"14d\"]\nwarn = \"14d\"\ncritical = \"3d\"\nrecipients = [\"gw@contoso.example\"]\n",
    );
    let conflicts = env.certctl(&["policy", "conflicts", "--policies", s(&good), "--json"]);
    conflicts.success();
    let v = conflicts.json();
    assert_eq!(v.as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v[0]["fingerprint_sha256"], gw.fingerprint.as_str());
    assert_eq!(v[0]["applies"], "contoso-gateways");
    assert_eq!(v[0]["policies"][1]["name"], "public");

    let explain = env.certctl(&[
        "policy",
        "explain",
        "gw.contoso.example",
        "--policies",
        s(&good),
    ]);
    explain
        .success()
        .stdout_has("contoso-gateways")
        .stdout_has("subject `gw.contoso.example` matches `*.CONTOSO.example`")
        .stdout_has("state         warn")
        .stdout_has("also matched by public");
    let explain = env.certctl(&[
        "policy",
        "explain",
        &other.fingerprint,
        "--policies",
        s(&good),
        "--json",
    ]);
    explain.success();
    let v = explain.json();
    assert_eq!(v[0]["state"], "untracked", "{v}");
    assert_eq!(v[0]["policy"], Value::Null);

    // Without --policies or --config: a clear usage error.
    env.certctl(&["policy", "conflicts"])
        .expect_code(4)
        .stderr_has("give --policies DIR");
}

#[test]
fn certd_sends_on_its_schedule_once_and_backs_off_when_smtp_is_down() {
    let mut t = Setup::new(None);
    // Every second (6-field form), so the test need not wait for 08:00.
    let text = std::fs::read_to_string(&t.config).unwrap();
    std::fs::write(&t.config, text.replace("0 8 * * 1-5", "* * * * * *")).unwrap();
    let gw = t
        .factory
        .leaf(CertSpec::leaf("gw.contoso.example").expires_in_days(20));
    t.add("gateway", &[("gw", &gw)]);

    let certd = Certd::start(&t.env, &t.config);
    let mails = t.smtp.wait_for_messages(2, MAIL_WAIT);
    assert!(mail_for(&mails, OPS).text.contains(&gw.fingerprint));
    // Several more scheduled passes: nothing is sent twice.
    certctl_e2e::daemon::wait_for(
        MAIL_WAIT,
        || format!("a later remind run:\n{}", t.env.certctl(&["status"])),
        || {
            let st = t.env.certctl(&["status", "--json"]).json();
            let job = st["daemon"]["schedules"]
                .as_array()?
                .iter()
                .find(|j| j["job"] == "remind")?
                .clone();
            job["last_outcome"]
                .as_str()?
                .contains("sent 0 digests")
                .then_some(())
        },
    );
    assert_eq!(t.smtp.messages().len(), 2);

    // A new certificate while the SMTP server is down: the pass fails, the recipients go
    // into backoff (later scheduled passes defer them), status shows the error.
    let iis = t
        .factory
        .leaf(CertSpec::leaf("iis.contoso.example").expires_in_days(3));
    t.smtp.stop();
    t.add("iis", &[("iis", &iis)]);
    certctl_e2e::daemon::wait_for(
        MAIL_WAIT,
        || format!("a deferred remind run:\n{}", t.env.certctl(&["status"])),
        || {
            let r = t.env.certctl(&["status"]);
            (r.stdout.contains("deferred (retry backoff)")
                && r.stdout.contains("smtp: last error")
                && r.stdout.contains("reminders: 2 pending delivery"))
            .then_some(())
        },
    );
    t.smtp.restart();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(t.smtp.messages().len(), 2, "backoff: not retried yet");
    // An explicit pass through certd retries at once: delivered exactly once.
    t.remind(0)
        .success()
        .stdout_has("sent 2 digests with 2 reminders");
    let mails = t.smtp.wait_for_messages(4, MAIL_WAIT);
    assert!(mails[2..].iter().all(|m| m.text.contains(&iis.fingerprint)));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(t.smtp.messages().len(), 4);
    drop(certd);
}

/// The block of a digest's text body about one tracked artifact (from its name to its
/// `inspect:` line, which names the file).
fn artifact_entry<'t>(text: &'t str, path: &Path) -> &'t str {
    let cmd = format!("inspect:   certctl list --name {}", s(path));
    let end = text
        .find(&cmd)
        .unwrap_or_else(|| panic!("{cmd} is not in:\n{text}"));
    let start = text[..end].rfind("\n  * ").expect("entry start");
    &text[start..end + cmd.len()]
}

#[test]
fn an_enrollment_bundle_is_reminded_3_days_before_its_10_day_expiry() {
    let t = Setup::new(None);
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let platform = "platform-team@contoso.example";
    // One fixed "now" for the bundle's issue date and the injected clock, so "day 7" is
    // exactly 3 days before expiry.
    let t0 = now();
    let at = |offset: i64, args: &[&str]| t.at(t0 + offset, args);
    let remind = |offset: i64| at(offset, &["remind", "--now", "--policies", s(&shipped)]);

    let (bundle, id) = t.track_bundle("site-a.bundle", t0);
    // A certificate next to it, so the pass has something else to consider.
    let gw = t
        .factory
        .leaf(CertSpec::leaf("gw.contoso.example").expires_in_days(400));
    t.add("gateway", &[("gw", &gw)]);

    // Certificate policies never match a tracked artifact: with the test's policies (roles
    // only) the bundle is not reminded even once expired.
    at(11 * DAY, &["remind", "--dry-run"])
        .success()
        .stdout_has("dry run: 0 digests with 0 reminders would be sent");

    // Day 0: 10 days left, no threshold crossed.
    remind(0)
        .success()
        .stdout_has("sent 0 digests with 0 reminders");
    // Day 6: 4 days left, still nothing.
    remind(6 * DAY)
        .success()
        .stdout_has("sent 0 digests with 0 reminders");
    assert!(t.smtp.messages().is_empty());

    // Day 7: 3 days left. The dry run shows the entry, then the pass sends it once.
    let dry = at(7 * DAY, &["remind", "--dry-run", "--policies", s(&shipped)]);
    dry.success()
        .stdout_has(&format!("To: {platform}"))
        .stdout_has("site-a.bundle (enrollment-bundle): 3 days left")
        .stdout_has("dry run: 1 digests with 1 reminders would be sent");
    let json = at(
        7 * DAY,
        &["remind", "--dry-run", "--policies", s(&shipped), "--json"],
    );
    json.success();
    let e = &json.json()["digests"][0]["entries"][0];
    assert_eq!(e["artifact_kind"], "enrollment-bundle", "{e}");
    assert_eq!(e["path"], s(&bundle), "{e}");
    assert_eq!(e["fingerprint"], id.as_str(), "{e}");
    assert_eq!(e["days_left"], 3, "{e}");
    assert_eq!(e["threshold"], "3d", "{e}");
    assert_eq!(e["urgency"], "critical", "{e}");
    assert_eq!(e["role"], Value::Null, "{e}");
    assert!(t.smtp.messages().is_empty());

    remind(7 * DAY)
        .success()
        .stdout_has("sent 1 digests with 1 reminders");
    let mails = t.smtp.wait_for_messages(1, MAIL_WAIT);
    let m = mail_for(&mails, platform);
    assert!(
        m.subject()
            .contains("1 tracked file needs attention (1 critical)"),
        "{}",
        m.subject()
    );
    let block = artifact_entry(&m.text, &bundle);
    assert!(
        block.contains("site-a.bundle (enrollment-bundle): 3 days left"),
        "{block}"
    );
    assert!(block.contains("artifact:  enrollment-bundle"), "{block}");
    assert!(
        block.contains(&format!("file:      {}", s(&bundle))),
        "{block}"
    );
    assert!(
        block.contains("threshold: 3d (policy enrollment-bundles)"),
        "{block}"
    );
    assert!(m.html.contains("enrollment-bundle"), "{}", m.html);
    assert!(!m.text.contains(&gw.fingerprint));
    // The inspect command shows the bundle.
    t.env
        .certctl(&["list", "--name", s(&bundle)])
        .success()
        .stdout_has("site-a.bundle");

    // A second pass the same day (a new process) sends nothing.
    remind(7 * DAY + HOUR)
        .success()
        .stdout_has("sent 0 digests with 0 reminders");
    // `policy explain` takes the artifact's path (or id prefix) and says where it stands.
    let explain = at(
        7 * DAY + HOUR,
        &[
            "policy",
            "explain",
            s(&bundle),
            "--policies",
            s(&shipped),
            "--json",
        ],
    );
    explain.success();
    let v = explain.json();
    assert_eq!(v[0]["kind"], "artifact", "{v}");
    assert_eq!(v[0]["policy"]["name"], "enrollment-bundles", "{v}");
    assert_eq!(v[0]["state"], "critical", "{v}");
    assert_eq!(v[0]["crossed"], "3d", "{v}");
    at(
        7 * DAY,
        &["policy", "explain", &id[..12], "--policies", s(&shipped)],
    )
    .success()
    .stdout_has("artifact")
    .stdout_has("kind enrollment-bundle")
    .stdout_has("enrollment-bundles");

    // Day 9: 1 day left: the 1d reminder, once.
    remind(9 * DAY)
        .success()
        .stdout_has("sent 1 digests with 1 reminders");
    let mails = t.smtp.wait_for_messages(2, MAIL_WAIT);
    let block = artifact_entry(&mails[1].text, &bundle);
    assert!(block.contains("1 day left"), "{block}");
    assert!(
        block.contains("threshold: 1d (policy enrollment-bundles)"),
        "{block}"
    );
    remind(9 * DAY + HOUR)
        .success()
        .stdout_has("sent 0 digests with 0 reminders");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(t.smtp.messages().len(), 2, "each threshold once");
}

/// A tracked bundle is snoozed like a certificate (by its path): no reminder while the
/// snooze lasts, `snoozed` and `policy explain` show it, reminders resume when it ends, and
/// an expired bundle is never silenced.
#[test]
fn an_enrollment_bundle_can_be_snoozed_like_a_certificate() {
    let t = Setup::new(None);
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let t0 = now();
    let at = |offset: i64, args: &[&str]| t.at(t0 + offset, args);
    let remind = |offset: i64| at(offset, &["remind", "--now", "--policies", s(&shipped)]);
    let (bundle, id) = t.track_bundle("site-b.bundle", t0);

    // Day 5: snoozed until day 8.5, past the 3-day threshold (day 7).
    let snoozed = at(
        5 * DAY,
        &[
            "snooze",
            s(&bundle),
            "--until",
            &rfc3339(t0 + 8 * DAY + 12 * HOUR),
            "--reason",
            "site B re-enrolls on Monday",
            "--json",
        ],
    );
    snoozed.success();
    let v = snoozed.json();
    assert_eq!(v["fingerprint_sha256"], id.as_str(), "{v}");
    assert_eq!(v["kind"], "artifact", "{v}");
    assert_eq!(v["path"], s(&bundle), "{v}");
    let listed = at(6 * DAY, &["snoozed", "--json"]);
    listed.success();
    assert_eq!(
        listed.json()[0]["name"],
        "site-b.bundle",
        "{}",
        listed.stdout
    );
    at(6 * DAY, &["snoozed"])
        .success()
        .stdout_has("site-b.bundle")
        .stdout_has("0 certificates and 1 tracked files snoozed");
    let explain = at(
        7 * DAY,
        &[
            "policy",
            "explain",
            &id[..12],
            "--policies",
            s(&shipped),
            "--json",
        ],
    );
    explain.success();
    assert_eq!(
        explain.json()[0]["snooze_reason"],
        "site B re-enrolls on Monday",
        "{}",
        explain.stdout
    );

    // Day 7: the 3-day threshold is crossed, but the bundle is snoozed.
    remind(7 * DAY)
        .success()
        .stdout_has("sent 0 digests with 0 reminders");
    assert!(t.smtp.messages().is_empty());
    // Day 9: the snooze has ended (1 day left): the reminder goes out.
    remind(9 * DAY)
        .success()
        .stdout_has("sent 1 digests with 1 reminders");
    let mails = t.smtp.wait_for_messages(1, MAIL_WAIT);
    assert!(
        mails[0]
            .text
            .contains("site-b.bundle (enrollment-bundle): 1 day left"),
        "{}",
        mails[0].text
    );
    // Day 11: expired, so it cannot be snoozed.
    let refused = at(
        11 * DAY,
        &[
            "snooze",
            &id[..12],
            "--until",
            &rfc3339(t0 + 20 * DAY),
            "--reason",
            "too late",
        ],
    );
    assert!(!refused.status.success(), "{refused}");
    assert!(
        refused.stderr.contains("expired") && refused.stderr.contains("site-b.bundle"),
        "{refused}"
    );
}

#[test]
fn enrollment_bundle_reminders_go_through_certd_too() {
    let t = Setup::new(None);
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let t0 = now();
    let (bundle, _) = t.track_bundle("site-b.bundle", t0);
    let certd = Certd::start(&t.env, &t.config);
    let through_certd = |offset: i64, args: &[&str]| {
        t.env
            .cmd()
            .no_store()
            .arg("--config")
            .arg(&t.config)
            .args(args)
            .env("CERTCTL_NOW", rfc3339(t0 + offset))
            .run()
    };
    let pass = |offset: i64| through_certd(offset, &["remind", "--now", "--policies", s(&shipped)]);
    pass(5 * DAY)
        .success()
        .stdout_has("sent 0 digests with 0 reminders");
    pass(7 * DAY)
        .success()
        .stdout_has("sent 1 digests with 1 reminders");
    let mails = t.smtp.wait_for_messages(1, MAIL_WAIT);
    assert!(
        artifact_entry(&mails[0].text, &bundle).contains("3 days left"),
        "{}",
        mails[0].text
    );
    pass(7 * DAY + HOUR)
        .success()
        .stdout_has("sent 0 digests with 0 reminders");
    through_certd(
        7 * DAY,
        &["policy", "explain", s(&bundle), "--policies", s(&shipped)],
    )
    .success()
    .stdout_has("state         critical")
    .stdout_has("enrollment-bundles");
    drop(certd);
    // Direct mode sees the same sent records.
    let direct = t
        .env
        .cmd()
        .arg("--config")
        .arg(&t.config)
        .args(["remind", "--now", "--policies", s(&shipped)])
        .env("CERTCTL_NOW", rfc3339(t0 + 8 * DAY))
        .run();
    direct
        .success()
        .stdout_has("sent 0 digests with 0 reminders");
    assert_eq!(t.smtp.messages().len(), 1);
}

// ---- the SMTP server killed in the middle of a pass -----------------------------------------

const NET: &str = "net@contoso.example";
const WEB: &str = "web@contoso.example";

/// Three teams: the network team owns the gateways, the web team the IIS sites, and ops
/// hears about everything. One threshold (30d) keeps "an hour later" from crossing another.
const TEAM_POLICIES: &str = r#"
[[policy]]
name = "gateways"
roles = ["gateway"]
remind = ["30d", "7d"]
warn = "30d"
critical = "7d"
recipients = ["net@contoso.example", "ops@contoso.example"]

[[policy]]
name = "iis"
roles = ["iis"]
remind = ["30d", "7d"]
warn = "30d"
critical = "7d"
recipients = ["ops@contoso.example", "web@contoso.example"]

[[policy]]
name = "site"
roles = ["site-server"]
remind = ["30d", "7d"]
warn = "30d"
critical = "7d"
recipients = ["ops@contoso.example"]
"#;

/// A generous SMTP timeout: the test, not the timeout, ends the stalled delivery.
const STALL_TIMEOUT: &str = "60s";

/// How long a pass may take, the stalled delivery included.
const PASS_WAIT: Duration = Duration::from_secs(60);

/// 10 gateways, 10 IIS sites and 10 site servers expiring in 16 to 25 days (all past the
/// 30d threshold, none near 7d). Returns every (recipient, fingerprint) reminder due.
fn add_team_fleet(t: &Setup) -> BTreeSet<(String, String)> {
    let mut due = BTreeSet::new();
    for (role, recipients) in [
        ("gateway", &[NET, OPS][..]),
        ("iis", &[OPS, WEB][..]),
        ("site-server", &[OPS][..]),
    ] {
        let certs: Vec<(String, GeneratedCert)> = (0..10)
            .map(|i| {
                let name = format!("{role}-{i:02}");
                let cert = t.factory.leaf(
                    CertSpec::leaf(&format!("{name}.contoso.example")).expires_in_days(16 + i),
                );
                (name, cert)
            })
            .collect();
        let refs: Vec<(&str, &GeneratedCert)> =
            certs.iter().map(|(n, c)| (n.as_str(), c)).collect();
        t.add(role, &refs);
        for (_, cert) in &certs {
            for r in recipients {
                due.insert((r.to_string(), cert.fingerprint.clone()));
            }
        }
    }
    assert_eq!(due.len(), 50);
    due
}

/// The (recipient, fingerprint) reminders a delivered digest holds: its `To:` and the
/// `certctl show FINGERPRINT` lines of its text part.
fn reminders_in(mail: &Mail) -> Vec<(String, String)> {
    let to = [NET, OPS, WEB, PKI]
        .into_iter()
        .find(|r| mail.to().contains(r))
        .unwrap_or_else(|| panic!("unexpected recipient {}", mail.to()));
    mail.text
        .match_indices("certctl show ")
        .map(|(i, m)| {
            mail.text[i + m.len()..]
                .chars()
                .take(64)
                .collect::<String>()
        })
        .map(|fp| {
            assert!(
                fp.len() == 64 && fp.chars().all(|c| c.is_ascii_hexdigit()),
                "{fp}"
            );
            (to.to_string(), fp)
        })
        .collect()
}

/// How often each (recipient, fingerprint) reminder was found.
type Counts = BTreeMap<(String, String), usize>;

/// How often each (recipient, fingerprint) reminder is in the Maildir: counting every
/// message file, and counting each Message-ID once (what a de-duplicating mail store keeps).
fn tally(mails: &[Mail]) -> (Counts, Counts) {
    let mut raw = BTreeMap::new();
    let mut by_id = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for m in mails {
        let id = m.message_id();
        assert!(
            id.starts_with('<') && id.ends_with("@contoso.example>"),
            "every digest has a Message-ID in the sender's domain: {id:?}\n{}",
            m.raw
        );
        let first = seen.insert(id.to_string());
        for r in reminders_in(m) {
            *raw.entry(r.clone()).or_default() += 1;
            if first {
                *by_id.entry(r).or_default() += 1;
            }
        }
    }
    (raw, by_id)
}

/// Asserts that each due reminder is in `counts` exactly once, and nothing else is.
#[track_caller]
fn exactly_once(counts: &Counts, due: &BTreeSet<(String, String)>) {
    let missing: Vec<_> = due.iter().filter(|r| !counts.contains_key(r)).collect();
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
    let unexpected: Vec<_> = counts.keys().filter(|r| !due.contains(r)).collect();
    assert!(
        missing.is_empty() && twice.is_empty() && unexpected.is_empty(),
        "lost: {missing:?}\nnot exactly once: {twice:?}\nnever due: {unexpected:?}"
    );
}

/// Runs `certctl remind --now EXTRA...` at `now + offset` while the SMTP server stalls on a message:
/// waits until it stalls, SIGKILLs it mid-delivery, and returns the pass's result. The
/// server stays down.
fn remind_killing_the_server(t: &Setup, offset: i64, extra: &[&str]) -> (usize, RunResult) {
    // Only the environment and the configuration go to the other thread (the certificate
    // factory is not `Sync`).
    let (env, config) = (&t.env, &t.config);
    std::thread::scope(|scope| {
        let pass = scope.spawn(move || {
            env.cmd()
                .arg("--config")
                .arg(config)
                .args(["remind", "--now"])
                .args(extra)
                .env("CERTCTL_NOW", rfc3339(now() + offset))
                .timeout(PASS_WAIT)
                .run()
        });
        let stalled_at = t.smtp.wait_for_stall(PASS_WAIT);
        t.smtp.kill();
        (stalled_at, pass.join().expect("the remind pass thread"))
    })
}

/// The Message-ID quoted in an error line (`... the same Message-ID <...>`).
fn quoted_message_id(line: &str) -> &str {
    let start = line
        .find("<certctl.")
        .unwrap_or_else(|| panic!("no Message-ID in: {line}"));
    let end = line[start..].find('>').expect("end of the Message-ID") + start + 1;
    &line[start..end]
}

/// The error line `certctl remind` printed about one recipient.
#[track_caller]
fn error_line<'r>(r: &'r RunResult, reminders: usize, to: &str) -> &'r str {
    r.stderr
        .lines()
        .find(|l| {
            l.starts_with(&format!(
                "error: {reminders} reminders for {to} stay pending"
            ))
        })
        .unwrap_or_else(|| panic!("no error line for {to}{r}"))
}

/// certctl's Prometheus series (direct mode): (deliveries, failures) so far.
fn smtp_counters(t: &Setup) -> (f64, f64) {
    let text = t.env.certctl(&["metrics"]);
    text.success();
    let m = certctl_e2e::prometheus::parse(&text.stdout);
    let get = |name: &str| {
        *m.get(&(name.to_string(), BTreeMap::new()))
            .unwrap_or_else(|| panic!("no {name} in:\n{}", text.stdout))
    };
    (
        get("certctl_smtp_deliveries_total"),
        get("certctl_smtp_delivery_failures_total"),
    )
}

#[test]
fn smtp_killed_mid_pass_every_reminder_is_delivered_exactly_once_when_it_returns() {
    // The server takes the first digest, then dies while the second one waits for its
    // answer: it was sent but not accepted (aiosmtpd never stored it).
    let mut t = Setup::with(
        None,
        Some(Fault::StallBeforeStoring(2)),
        TEAM_POLICIES,
        STALL_TIMEOUT,
    );
    let due = add_team_fleet(&t);
    t.run(0, &["remind", "--dry-run"])
        .success()
        .stdout_has("dry run: 3 digests with 50 reminders would be sent");

    // The pass: net@ (10 reminders) is delivered, ops@ (30) is in flight when the server is
    // killed, web@ (10) finds nobody listening. The pass reports both failures, goes on
    // after the first one, and exits 4.
    let (stalled_at, r) = remind_killing_the_server(&t, 0, &[]);
    assert_eq!(stalled_at, 2, "{r}");
    r.expect_code(4).stdout_has(
        "sent 1 digests with 10 reminders; 2 digests (40 reminders) failed and stay pending",
    );
    let server = format!("SMTP server 127.0.0.1:{} (none)", t.smtp.port);
    // In flight: the whole message was sent, the answer never came. certctl cannot know
    // whether the server kept it, says so, and names the Message-ID the retry will carry.
    let ops_error = error_line(&r, 30, OPS);
    assert!(
        ops_error.contains(&format!(
            "{server}: cannot deliver to {OPS}: no answer after the message was sent"
        )),
        "{ops_error}"
    );
    assert!(
        ops_error.contains("the server may have accepted it"),
        "{ops_error}"
    );
    let ops_id = quoted_message_id(ops_error).to_string();
    // Not yet sent: the server was gone.
    let web_error = error_line(&r, 10, WEB);
    assert!(
        web_error.contains(&format!("{server}: cannot deliver to {WEB}: ")),
        "{web_error}"
    );
    // Refused, or reset when another test running alongside picked the freed port in
    // between: either way the digest is not sent and stays pending.
    let lower = web_error.to_lowercase();
    assert!(
        lower.contains("connection refused") || lower.contains("connection reset"),
        "{web_error}"
    );
    let mails = t.smtp.messages();
    assert_eq!(mails.len(), 1, "{mails:#?}");
    assert!(mails[0].to().contains(NET));
    assert_eq!(smtp_counters(&t), (1.0, 2.0));

    let status = t.env.certctl(&["status"]);
    status
        .success()
        .stdout_has("smtp: last error")
        .stdout_has(&server)
        .stdout_has("reminders: 40 pending delivery");

    // The server comes back on the same port and Maildir; the next pass sends the rest.
    t.smtp.restart();
    t.remind(HOUR)
        .success()
        .stdout_has("sent 2 digests with 40 reminders");
    // A third pass has nothing left to send.
    t.remind(2 * HOUR)
        .success()
        .stdout_has("sent 0 digests with 0 reminders");
    std::thread::sleep(Duration::from_millis(300));
    let mails = t.smtp.messages();
    assert_eq!(mails.len(), 3, "{mails:#?}");
    let (raw, by_id) = tally(&mails);
    exactly_once(&raw, &due);
    exactly_once(&by_id, &due);
    // The retried digest carries the Message-ID the error named.
    assert_eq!(mail_for(&mails, OPS).message_id(), ops_id);
    let ids: BTreeSet<&str> = mails.iter().map(Mail::message_id).collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    let status = t.env.certctl(&["status", "--json"]).json();
    assert_eq!(status["smtp_last_error"], Value::Null, "{status}");
    assert_eq!(status["reminders_pending"], 0, "{status}");
    // The failures stay counted after the recovery (a Prometheus counter).
    assert_eq!(smtp_counters(&t), (3.0, 2.0));
}

#[test]
fn smtp_killed_after_storing_but_before_answering_the_copy_has_the_same_message_id() {
    // The one window SMTP cannot close: the server stores the second digest, then dies
    // before answering 250. certctl cannot know it arrived, so it must send it again.
    let mut t = Setup::with(
        None,
        Some(Fault::StallAfterStoring(2)),
        TEAM_POLICIES,
        STALL_TIMEOUT,
    );
    let due = add_team_fleet(&t);
    let (_, r) = remind_killing_the_server(&t, 0, &["--json"]);
    r.expect_code(4);
    let report = r.json();
    assert_eq!(report["digests_sent"], 1, "{report}");
    let failed = report["failed"].as_array().expect("failed digests");
    assert_eq!(failed.len(), 2, "{report}");
    let (ops, web) = (&failed[0], &failed[1]);
    assert_eq!(ops["recipient"], OPS, "{report}");
    assert_eq!(ops["maybe_delivered"], true, "{report}");
    assert_eq!(web["recipient"], WEB, "{report}");
    assert_eq!(web["maybe_delivered"], false, "{report}");
    let ops_id = ops["message_id"].as_str().expect("message_id").to_string();
    let stored = t.smtp.messages();
    assert_eq!(stored.len(), 2, "net@ and the unconfirmed ops@ digest");
    assert_eq!(mail_for(&stored, OPS).message_id(), ops_id);

    t.smtp.restart();
    t.remind(HOUR)
        .success()
        .stdout_has("sent 2 digests with 40 reminders");
    t.remind(2 * HOUR)
        .success()
        .stdout_has("sent 0 digests with 0 reminders");
    std::thread::sleep(Duration::from_millis(300));
    let mails = t.smtp.messages();
    assert_eq!(mails.len(), 4, "{mails:#?}");
    let ops_copies: Vec<&Mail> = mails.iter().filter(|m| m.to().contains(OPS)).collect();
    assert_eq!(ops_copies.len(), 2);
    assert!(ops_copies.iter().all(|m| m.message_id() == ops_id));
    // Counting message files, ops@'s 30 reminders are there twice (SMTP is at-least-once
    // in this window); counting Message-IDs, as a de-duplicating mail store does, every
    // reminder is there exactly once and none is lost.
    let (raw, by_id) = tally(&mails);
    exactly_once(&by_id, &due);
    let twice: BTreeSet<&(String, String)> = raw
        .iter()
        .filter(|(_, n)| **n == 2)
        .map(|(r, _)| r)
        .collect();
    assert_eq!(twice.len(), 30, "{raw:?}");
    assert!(twice.iter().all(|(to, _)| to == OPS), "{twice:?}");
    assert!(raw.values().all(|n| *n <= 2), "{raw:?}");
    assert_eq!(raw.len(), due.len());
}

/// The remind job's last outcome in `certctl status --json` (through certd).
fn remind_outcome(env: &TestEnv) -> Option<String> {
    let st = env.certctl(&["status", "--json"]).json();
    st["daemon"]["schedules"]
        .as_array()?
        .iter()
        .find(|j| j["job"] == "remind")?["last_outcome"]
        .as_str()
        .map(str::to_string)
}

/// certd's first retry comes one minute (the first backoff step) after the failed pass.
const RETRY_WAIT: Duration = Duration::from_secs(150);

#[test]
fn certd_scheduled_pass_with_smtp_killed_mid_delivery_delivers_the_rest_once_on_retry() {
    let mut t = Setup::with(
        None,
        Some(Fault::StallBeforeStoring(2)),
        TEAM_POLICIES,
        STALL_TIMEOUT,
    );
    // Every second (6-field form): certd's own schedule runs the passes, nobody calls
    // `remind --now`.
    let text = std::fs::read_to_string(&t.config).unwrap();
    std::fs::write(&t.config, text.replace("0 8 * * 1-5", "* * * * * *")).unwrap();
    let due = add_team_fleet(&t);
    let certd = Certd::start(&t.env, &t.config);

    // certd's first pass: net@ delivered, ops@ in flight when the server is killed.
    assert_eq!(t.smtp.wait_for_stall(PASS_WAIT), 2);
    t.smtp.kill();
    // The pass's outcome is in `status` only until the next pass a second later, so it is
    // read from certd's log.
    certd.wait_for_log(
        "reminder pass: failed: sent 1 digests with 10 reminders; 2 digests (40 reminders) failed and stay pending",
        PASS_WAIT,
    );
    let log = certd.wait_for_log("reminder digest not delivered", PASS_WAIT);
    for needle in [
        OPS,
        WEB,
        "maybe_delivered=true",
        "no answer after the message was sent",
        &format!("SMTP server 127.0.0.1:{}", t.smtp.port),
    ] {
        assert!(
            log.contains(needle),
            "{needle:?} is not in certd's log:\n{log}"
        );
    }
    assert_eq!(t.smtp.messages().len(), 1);

    // The server is back. Passes keep running every second; the two pending recipients
    // wait for their retry time (backoff), net@ is not told again.
    t.smtp.restart();
    certctl_e2e::daemon::wait_for(
        Duration::from_secs(20),
        || format!("a deferred remind run:\n{}", t.env.certctl(&["status"])),
        || remind_outcome(&t.env).filter(|o| o.contains("2 digests deferred (retry backoff)")),
    );
    // The retry delivers the rest, without anybody asking.
    t.smtp.wait_for_messages(3, RETRY_WAIT);
    certctl_e2e::daemon::wait_for(
        Duration::from_secs(20),
        || {
            format!(
                "a remind run after the retry:\n{}",
                t.env.certctl(&["status"])
            )
        },
        || remind_outcome(&t.env).filter(|o| o == "ok, sent 0 digests with 0 reminders"),
    );
    let mails = t.smtp.messages();
    assert_eq!(mails.len(), 3, "{mails:#?}");
    let (raw, by_id) = tally(&mails);
    exactly_once(&raw, &due);
    exactly_once(&by_id, &due);
    let status = t.env.certctl(&["status", "--json"]).json();
    assert_eq!(status["smtp_last_error"], Value::Null, "{status}");
    assert_eq!(status["reminders_pending"], 0, "{status}");
    // The same counters through certd.
    assert_eq!(smtp_counters(&t), (3.0, 2.0));
    drop(certd);
}

/// A private CA (issuing the SMTP server's certificate in the TLS tests).
struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

fn ca(cn: &str) -> Ca {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    Ca { params, key, pem }
}

/// Starts a server speaking TLS as `mode` says (STARTTLS required, or implicit TLS) with a
/// certificate for `names` (and 127.0.0.1 when `loopback_ip`) issued by `issuer`; certctl's
/// configuration says `security = "starttls"` or `"tls"` to match and trusts `trusted`
/// (`smtp.ca_file`). One gateway certificate expiring in 20 days is in the store (a digest
/// to OPS and one to PKI are due). Returns the setup and the `ca_file` path.
fn tls_setup(
    mode: TlsMode,
    issuer: &Ca,
    trusted: &Ca,
    names: &[&str],
    loopback_ip: bool,
) -> (Setup, PathBuf) {
    let env = TestEnv::new();
    let tls = env.mkdir("tls");
    let names = names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    let mut params = CertificateParams::new(names).unwrap();
    if loopback_ip {
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
    }
    let key = KeyPair::generate().unwrap();
    let cert = params
        .signed_by(&key, &Issuer::from_params(&issuer.params, &issuer.key))
        .unwrap();
    let (cert_path, key_path) = (tls.join("server.pem"), tls.join("server.key"));
    std::fs::write(&cert_path, cert.pem() + &issuer.pem).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let (smtp, security) = match mode {
        TlsMode::StartTls => (
            SmtpServer::start_starttls(&env.mkdir("smtp"), &cert_path, &key_path),
            "starttls",
        ),
        TlsMode::Implicit => (
            SmtpServer::start_smtps(&env.mkdir("smtp"), &cert_path, &key_path),
            "tls",
        ),
    };
    let ca_file = env.file("etc/smtp-ca.pem");
    std::fs::write(&ca_file, &trusted.pem).unwrap();
    let policies = env.mkdir("policies");
    std::fs::write(policies.join("test.toml"), POLICIES).unwrap();
    let config = env.file("certd.toml");
    std::fs::write(
        &config,
        format!(
            "store = \"{}\"\n[scan]\nschedule = \"off\"\nwatch = false\n[probe]\nschedule = \"off\"\n\
             [smtp]\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"{security}\"\n\
             ca_file = \"{}\"\nfrom = \"certd@contoso.example\"\ntimeout = \"5s\"\n\
             [reminders]\nschedule = \"0 8 * * 1-5\"\npolicies = \"{}\"\n",
            s(env.store()),
            smtp.port,
            s(&ca_file),
            s(&policies)
        ),
    )
    .unwrap();
    let t = Setup {
        env,
        smtp,
        config,
        factory: CertFactory::new(),
    };
    let gw = t
        .factory
        .leaf(CertSpec::leaf("gw.contoso.example").expires_in_days(20));
    t.add("gateway", &[("gw", &gw)]);
    (t, ca_file)
}

/// A copy of the setup's configuration (`name` in the test directory) with each `from`
/// replaced by its `to`.
fn config_variant(t: &Setup, name: &str, edits: &[(&str, &str)]) -> PathBuf {
    let mut text = std::fs::read_to_string(&t.config).unwrap();
    for (from, to) in edits {
        assert!(text.contains(from), "{from:?} is not in:\n{text}");
        text = text.replace(from, to);
    }
    let path = t.env.file(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// `remind --now` sends the gateway's digests to ops@ and pki@; both arrive and nothing
/// stays pending (the TLS tests' good case).
fn delivers_the_gateway_digests(t: &Setup) {
    t.remind(0)
        .success()
        .stdout_has("sent 2 digests with 2 reminders");
    let mails = t.smtp.wait_for_messages(2, MAIL_WAIT);
    assert_eq!(mails.len(), 2, "{mails:#?}");
    assert!(mail_for(&mails, OPS).text.contains("gw.contoso.example"));
    assert!(mail_for(&mails, PKI).text.contains("gw.contoso.example"));
    let status = t.env.certctl(&["status", "--json"]).json();
    assert_eq!(status["reminders_pending"], 0, "{status}");
    assert_eq!(status["smtp_last_error"], Value::Null, "{status}");
}

mod starttls {
    //! `security = "starttls"` against an aiosmtpd that requires STARTTLS, its certificate
    //! issued by a private CA that `smtp.ca_file` trusts (or not).
    use super::*;

    /// A server requiring STARTTLS with a certificate for 127.0.0.1 and localhost issued by
    /// `issuer`; certctl's configuration trusts `trusted` (see [`tls_setup`]).
    fn setup(issuer: &Ca, trusted: &Ca) -> (Setup, PathBuf) {
        setup_named(issuer, trusted, &["localhost"], true)
    }

    /// [`setup`] with a server certificate for `names` (and 127.0.0.1 when `loopback_ip`).
    fn setup_named(
        issuer: &Ca,
        trusted: &Ca,
        names: &[&str],
        loopback_ip: bool,
    ) -> (Setup, PathBuf) {
        tls_setup(TlsMode::StartTls, issuer, trusted, names, loopback_ip)
    }

    #[test]
    fn digests_arrive_over_starttls_with_a_private_ca() {
        let mail_ca = ca("Contoso Mail CA");
        let (t, _) = setup(&mail_ca, &mail_ca);

        // The server really refuses mail without STARTTLS.
        let plain = config_variant(
            &t,
            "plain.toml",
            &[("security = \"starttls\"", "security = \"none\"")],
        );
        let r = t
            .env
            .cmd()
            .args(["--config", s(&plain), "remind", "--now"])
            .run();
        r.expect_code(4).stderr_has("530");
        assert!(t.smtp.messages().is_empty());

        delivers_the_gateway_digests(&t);
    }

    #[test]
    fn an_untrusted_server_certificate_fails_clearly_and_the_reminders_stay_pending() {
        let rogue = ca("Unknown CA");
        let mail_ca = ca("Contoso Mail CA");
        let (t, ca_file) = setup(&rogue, &mail_ca);

        // Through certd, as its scheduled passes would.
        let certd = Certd::start(&t.env, &t.config);
        let r = t.remind(0);
        let server = format!("SMTP server 127.0.0.1:{} (starttls)", t.smtp.port);
        r.expect_code(4)
            .stdout_has("2 digests (2 reminders) failed and stay pending")
            .stderr_has(&format!("{server}: cannot deliver to {OPS}: "))
            .stderr_has("certificate verify failed")
            .stderr_has("not trusted: put the CA certificate that issued it in smtp.ca_file");
        let status = t.env.certctl(&["status", "--json"]).json();
        assert_eq!(status["reminders_pending"], 2, "{status}");
        let last = status["smtp_last_error"].as_str().unwrap_or_default();
        assert!(
            last.contains(&server) && last.contains("certificate verify failed"),
            "{status}"
        );
        drop(certd);
        assert!(t.smtp.messages().is_empty());

        // Trusting the server's CA (the file is read at each session) delivers them.
        std::fs::write(&ca_file, &rogue.pem).unwrap();
        t.remind(HOUR)
            .success()
            .stdout_has("sent 2 digests with 2 reminders");
        assert_eq!(t.smtp.wait_for_messages(2, MAIL_WAIT).len(), 2);
    }

    #[test]
    fn a_server_certificate_for_another_name_is_refused_with_a_hint() {
        let mail_ca = ca("Contoso Mail CA");
        let (t, _) = setup_named(&mail_ca, &mail_ca, &["mail.contoso.example"], false);
        t.remind(0)
            .expect_code(4)
            .stderr_has(&format!(
                "SMTP server 127.0.0.1:{} (starttls): cannot deliver to {OPS}: ",
                t.smtp.port
            ))
            .stderr_has("certificate verify failed")
            .stderr_has("does not name smtp.host `127.0.0.1`");
        assert!(t.smtp.messages().is_empty());
    }
}

mod smtps {
    //! `security = "tls"` (implicit TLS, port 465 style) against an aiosmtpd that speaks TLS
    //! from the first byte, its certificate issued by a private CA in `smtp.ca_file`; a plain
    //! client (`none`, `starttls`) against it; and a client configured for implicit TLS
    //! against a plain server.
    use super::*;

    #[test]
    fn digests_arrive_over_implicit_tls_with_a_private_ca() {
        let mail_ca = ca("Contoso Mail CA");
        let (t, _) = tls_setup(TlsMode::Implicit, &mail_ca, &mail_ca, &["localhost"], true);
        // (That the server really speaks TLS first: `a_plain_client_gets_no_greeting_...`.)
        delivers_the_gateway_digests(&t);
    }

    #[test]
    fn a_plain_client_gets_no_greeting_and_is_told_to_use_tls_and_the_reminders_stay_pending() {
        let mail_ca = ca("Contoso Mail CA");
        let (t, _) = tls_setup(TlsMode::Implicit, &mail_ca, &mail_ca, &["localhost"], true);
        for security in ["none", "starttls"] {
            let plain = config_variant(
                &t,
                &format!("{security}.toml"),
                &[
                    ("security = \"tls\"", &format!("security = \"{security}\"")),
                    ("timeout = \"5s\"", "timeout = \"2s\""),
                ],
            );
            let server = format!("SMTP server 127.0.0.1:{} ({security})", t.smtp.port);
            let hint = "no greeting within 2s: if the server expects TLS from the first byte (SMTPS, usually port 465), set security = \"tls\"";
            let begun = Instant::now();
            let r = t
                .env
                .cmd()
                .args(["--config", s(&plain), "remind", "--now"])
                .timeout(Duration::from_secs(30))
                .run();
            // One session per digest, each given up at the 2s timeout.
            assert!(
                begun.elapsed() < Duration::from_secs(10),
                "{:?}",
                begun.elapsed()
            );
            r.expect_code(4)
                .stdout_has("2 digests (2 reminders) failed and stay pending")
                .stderr_has(&format!("{server}: cannot deliver to {OPS}: {hint}"))
                .stderr_has(&format!("{server}: cannot deliver to {PKI}: {hint}"));
            let status = t.env.certctl(&["status", "--json"]).json();
            assert_eq!(status["reminders_pending"], 2, "{status}");
            let last = status["smtp_last_error"].as_str().unwrap_or_default();
            assert!(last.contains(&server) && last.contains(hint), "{status}");
            assert!(t.smtp.messages().is_empty());
        }

        // Nothing was lost: `security = "tls"` delivers each digest once.
        delivers_the_gateway_digests(&t);
        t.remind(HOUR)
            .success()
            .stdout_has("sent 0 digests with 0 reminders");
        assert_eq!(t.smtp.messages().len(), 2);
    }

    #[test]
    fn implicit_tls_against_a_plain_server_fails_naming_the_host_and_stays_pending() {
        let t = Setup::new(None);
        let gw = t
            .factory
            .leaf(CertSpec::leaf("gw.contoso.example").expires_in_days(20));
        t.add("gateway", &[("gw", &gw)]);
        let tls = config_variant(
            &t,
            "tls.toml",
            &[("security = \"none\"", "security = \"tls\"")],
        );
        let server = format!("SMTP server 127.0.0.1:{} (tls)", t.smtp.port);
        let r = t
            .env
            .cmd()
            .args(["--config", s(&tls), "remind", "--now"])
            .timeout(Duration::from_secs(30))
            .run();
        r.expect_code(4)
            .stdout_has("2 digests (2 reminders) failed and stay pending")
            .stderr_has(&format!("{server}: cannot deliver to {OPS}: "))
            .stderr_has(&format!("{server}: cannot deliver to {PKI}: "))
            .stderr_has(&format!(
                "the server does not speak TLS at once on port {}",
                t.smtp.port
            ))
            .stderr_has("set security = \"starttls\"");
        let status = t.env.certctl(&["status", "--json"]).json();
        assert_eq!(status["reminders_pending"], 2, "{status}");
        let last = status["smtp_last_error"].as_str().unwrap_or_default();
        assert!(last.contains(&server), "{status}");
        assert!(t.smtp.messages().is_empty());

        // Nothing was lost: the right setting delivers them.
        t.remind(HOUR)
            .success()
            .stdout_has("sent 2 digests with 2 reminders");
        assert_eq!(t.smtp.wait_for_messages(2, MAIL_WAIT).len(), 2);
    }
}
