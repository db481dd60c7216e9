//! SCEP (RFC 8894) against a real SCEP server on 127.0.0.1 (Debian's scepserver, see
//! `certctl_e2e::scep`): an admin configures a `[[scep]]` block, checks it, enrolls and
//! renews with `certd scep enroll`, and sees a wrong challenge or a wrong CA pin refused in
//! words with nothing written. The issued certificates are checked with `openssl verify`
//! against the SCEP CA.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use certctl_e2e::scep::ScepServer;
use certctl_e2e::{s, RunResult, TestEnv};

const CHALLENGE: &str = "s3cret-enrollment";

/// certd.toml with one `[[scep]]` block named `lab`.
fn write_config(
    env: &TestEnv,
    url: &str,
    challenge: &str,
    fingerprint: &str,
) -> std::path::PathBuf {
    let challenge_file = env.file("etc/scep-challenge");
    std::fs::write(&challenge_file, format!("{challenge}\n")).unwrap();
    std::fs::set_permissions(&challenge_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = env.file("etc/certd.toml");
    std::fs::write(
        &config,
        format!(
            "store = \"{}\"\n\n[[scep]]\nname = \"lab\"\nurl = \"{url}\"\nchallenge_file = \"{}\"\nca_fingerprint = \"{fingerprint}\"\n",
            s(env.store()),
            s(&challenge_file)
        ),
    )
    .unwrap();
    config
}

fn certd(env: &TestEnv, args: &[&str]) -> RunResult {
    env.cmd().bin("certd").no_store().args(args).run()
}

fn enroll(env: &TestEnv, config: &Path, name: &str, extra: &[&str]) -> RunResult {
    let key = env.file(&format!("out/{name}.key"));
    let cert = env.file(&format!("out/{name}.pem"));
    let mut args = vec![
        "scep",
        "enroll",
        "--config",
        s(config),
        "--server",
        "lab",
        "--cn",
        "web1.lab.example",
        "--dns",
        "web1.lab.example",
        "--key",
        s(&key),
        "--cert",
        s(&cert),
    ];
    args.extend_from_slice(extra);
    certd(env, &args)
}

/// `openssl verify -CAfile CA CERT` (the first certificate of CERT).
fn openssl_verify(ca: &Path, cert: &Path) -> String {
    let out = Command::new("openssl")
        .args(["verify", "-CAfile", s(ca), s(cert)])
        .output()
        .expect("run openssl verify");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "openssl verify failed: {text}");
    text
}

fn serial_of(cert: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in", s(cert)])
        .output()
        .expect("run openssl x509");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn enroll_with_the_challenge_then_renew() {
    let env = TestEnv::new();
    let Some(server) = ScepServer::start(&env.root().join("scep"), CHALLENGE) else {
        return;
    };
    let config = write_config(&env, &server.url(), CHALLENGE, &server.ca_fingerprint());
    certd(&env, &["config", "check", s(&config)]).success();

    let r = enroll(&env, &config, "web1", &["--json"]);
    r.success();
    let report = r.json();
    assert_eq!(report["request"], "PKCSReq", "{r}");
    let cert = env.root().join("out/web1.pem");
    let key = env.root().join("out/web1.key");
    assert!(openssl_verify(&server.ca_pem(), &cert).contains(": OK"));
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600,
        "the key is private"
    );
    let subject = Command::new("openssl")
        .args([
            "x509",
            "-noout",
            "-subject",
            "-ext",
            "subjectAltName",
            "-in",
            s(&cert),
        ])
        .output()
        .unwrap();
    let subject = String::from_utf8_lossy(&subject.stdout);
    assert!(
        subject.contains("CN = web1.lab.example") && subject.contains("DNS:web1.lab.example"),
        "{subject}"
    );
    assert_eq!(server.issued(), 1);

    // Renewal: scepserver offers "Renewal", so a RenewalReq signed with the current pair.
    let r = enroll(
        &env,
        &config,
        "web1-renewed",
        &["--renew-cert", s(&cert), "--renew-key", s(&key)],
    );
    r.success().stdout_has("RenewalReq");
    let renewed = env.root().join("out/web1-renewed.pem");
    assert!(openssl_verify(&server.ca_pem(), &renewed).contains(": OK"));
    assert_ne!(serial_of(&cert), serial_of(&renewed), "a new certificate");
    assert_ne!(
        std::fs::read(&key).unwrap(),
        std::fs::read(env.root().join("out/web1-renewed.key")).unwrap(),
        "a new key"
    );
    assert_eq!(server.issued(), 2);
}

#[test]
fn a_wrong_challenge_is_refused_in_words_and_nothing_is_written() {
    let env = TestEnv::new();
    let Some(server) = ScepServer::start(&env.root().join("scep"), CHALLENGE) else {
        return;
    };
    let config = write_config(
        &env,
        &server.url(),
        "not-the-challenge",
        &server.ca_fingerprint(),
    );
    let r = enroll(&env, &config, "web1", &[]);
    r.expect_code(1)
        .stderr_has("SCEP server `lab`: answered badRequest");
    assert!(
        !r.stderr.contains("not-the-challenge"),
        "the challenge is never shown{r}"
    );
    assert!(
        !env.root().join("out/web1.key").exists(),
        "no key written{r}"
    );
    assert!(
        !env.root().join("out/web1.pem").exists(),
        "no certificate written{r}"
    );
    assert_eq!(server.issued(), 0);
    assert_eq!(server.served("PKIOperation"), 1, "{}", server.log());
}

#[test]
fn a_ca_that_does_not_match_the_pin_gets_nothing_but_getcacert() {
    let env = TestEnv::new();
    let Some(server) = ScepServer::start(&env.root().join("scep"), CHALLENGE) else {
        return;
    };
    let real = server.ca_fingerprint();
    // Another CA's fingerprint: a man in the middle, or a server that changed its CA.
    let pinned = format!("00{}", &real[2..]);
    let config = write_config(&env, &server.url(), CHALLENGE, &pinned);
    let r = enroll(&env, &config, "web1", &[]);
    r.expect_code(1)
        .stderr_has(&format!("the CA certificate's SHA-256 is {real}"))
        .stderr_has(&format!("ca_fingerprint pins {pinned}"))
        .stderr_has("refused before sending anything");
    let log = server.log();
    assert_eq!(server.served("GetCACert"), 1, "{log}");
    assert_eq!(
        server.served("GetCACaps"),
        0,
        "nothing after GetCACert: {log}"
    );
    assert_eq!(server.served("PKIOperation"), 0, "no request sent: {log}");
    assert!(!env.root().join("out/web1.key").exists());
    assert_eq!(server.issued(), 0);
}

#[test]
fn a_server_that_is_down_is_named_then_works_once_up() {
    let env = TestEnv::new();
    let Some(mut server) = ScepServer::start(&env.root().join("scep"), CHALLENGE) else {
        return;
    };
    let config = write_config(&env, &server.url(), CHALLENGE, &server.ca_fingerprint());
    server.stop();
    let r = enroll(&env, &config, "web1", &[]);
    r.expect_code(1)
        .stderr_has("SCEP server `lab`: http://127.0.0.1:")
        .stderr_has("cannot connect");
    assert!(!env.root().join("out/web1.pem").exists());
    server.restart();
    enroll(&env, &config, "web1", &[]).success();
    assert!(openssl_verify(&server.ca_pem(), &env.root().join("out/web1.pem")).contains(": OK"));
    assert_eq!(server.issued(), 1, "exactly one certificate");
}

#[test]
fn config_check_names_the_scep_mistakes_at_their_line() {
    let env = TestEnv::new();
    let challenge = env.file("etc/challenge");
    std::fs::write(&challenge, "x\n").unwrap();
    std::fs::set_permissions(&challenge, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = env.file("etc/certd.toml");
    std::fs::write(
        &config,
        format!(
            "store = \"{}\"\n\n[[scep]]\nname = \"lab\"\nurl = \"ftp://ndes.example/x\"\nchallenge_file = \"{}\"\nca_fingerprint = \"12:34\"\n",
            s(env.store()),
            s(&challenge)
        ),
    )
    .unwrap();
    let r = certd(&env, &["config", "check", s(&config)]);
    r.expect_code(2)
        .stderr_has(&format!("{}:5:", s(&config)))
        .stderr_has("scep.url")
        .stderr_has(&format!("{}:7:", s(&config)))
        .stderr_has("scep.ca_fingerprint");
    // Fixed, the challenge file readable by others is refused like the other secrets.
    std::fs::write(
        &config,
        format!(
            "store = \"{}\"\n\n[[scep]]\nname = \"lab\"\nurl = \"http://ndes.example/x\"\nchallenge_file = \"{}\"\nca_fingerprint = \"{}\"\n",
            s(env.store()),
            s(&challenge),
            "ab".repeat(32)
        ),
    )
    .unwrap();
    let r = certd(&env, &["config", "check", s(&config)]);
    r.expect_code(2).stderr_has("scep.lab.challenge_file");
    std::fs::set_permissions(&challenge, std::fs::Permissions::from_mode(0o600)).unwrap();
    certd(&env, &["config", "check", s(&config)]).success();
}

/// Renewal by certd's renewal pass (`certctl renew --due --yes --config certd.toml`, the pass
/// certd runs on its schedule): a certificate the SCEP CA issued, deployed in `deploy/`, with
/// a policy `renew = "auto"`, `scep = "lab"`.
mod by_the_renewal_pass {
    use super::*;
    use certctl_e2e::{now, rfc3339, sha256_hex, DAY};
    use serde_json::Value;

    struct ScepSite {
        env: TestEnv,
        server: ScepServer,
        config: std::path::PathBuf,
        cert: std::path::PathBuf,
    }

    fn fingerprint(path: &Path) -> String {
        let x = openssl::x509::X509::from_pem(&std::fs::read(path).unwrap()).unwrap();
        sha256_hex(&x.to_der().unwrap())
    }

    impl ScepSite {
        /// `challenge`: what certd's challenge file holds (the server wants CHALLENGE).
        /// `extra`: more certd.toml text.
        fn new(challenge: &str, extra: &str) -> Option<ScepSite> {
            let env = TestEnv::new();
            let mut server = ScepServer::start(&env.root().join("scep"), CHALLENGE)?;
            // The certificate to renew: issued by the SCEP CA for 30 days (by hand, the right
            // challenge), deployed with its key next to it. Renewed ones get 365 days.
            server.set_validity_days(30);
            let first = write_config(&env, &server.url(), CHALLENGE, &server.ca_fingerprint());
            let deploy = env.mkdir("deploy");
            let cert = deploy.join("gw.pem");
            certd(
                &env,
                &[
                    "scep",
                    "enroll",
                    "--config",
                    s(&first),
                    "--server",
                    "lab",
                    "--cn",
                    "gw.lab.example",
                    "--dns",
                    "gw.lab.example",
                    "--key",
                    s(&deploy.join("gw.key")),
                    "--cert",
                    s(&cert),
                ],
            )
            .success();
            env.certctl(&["scan", s(&cert), "--role", "gateway"])
                .success();
            server.set_validity_days(365);
            let policies = env.mkdir("policies");
            std::fs::write(
                policies.join("gateways.toml"),
                "[[policy]]\nname = \"gateways\"\nroles = [\"gateway\"]\nremind = [\"20d\"]\nwarn = \"14d\"\ncritical = \"3d\"\nrecipients = [\"pki@example.com\"]\nrenew = \"auto\"\nrenew_before = \"20d\"\nscep = \"lab\"\n",
            )
            .unwrap();
            let config = write_config(&env, &server.url(), challenge, &server.ca_fingerprint());
            let text = std::fs::read_to_string(&config).unwrap()
                + &format!(
                    "\n[reminders]\nschedule = \"0 8 * * 1-5\"\npolicies = \"{}\"\n\n[renewal]\nretry_min = \"1h\"\nretry_max = \"4h\"\n\n[[workflows.targets]]\npath = \"{}\"\nreload = [\"true\"]\n\n{extra}\n",
                    s(&policies),
                    s(&deploy)
                );
            std::fs::write(&config, text).unwrap();
            Some(ScepSite {
                env,
                server,
                config,
                cert,
            })
        }

        /// certctl ARGS --config certd.toml, 15 days and `hours` from now: the 30-day
        /// certificate is due (renew_before 20d), a renewed 365-day one is not.
        fn at(&self, hours: i64, args: &[&str]) -> RunResult {
            self.env
                .cmd()
                .args(args)
                .args(["--config", s(&self.config)])
                .env("CERTCTL_NOW", rfc3339(now() + 15 * DAY + hours * 3600))
                .timeout(std::time::Duration::from_secs(120))
                .run()
        }

        fn renew(&self, hours: i64) -> (RunResult, Value) {
            let r = self.at(hours, &["renew", "--due", "--yes", "--json"]);
            let outcome = r.json()["pass"]["renewals"][0]["outcome"].clone();
            (r, outcome)
        }
    }

    #[test]
    fn certd_renews_by_scep_and_the_deployed_file_holds_the_new_certificate() {
        let Some(site) = ScepSite::new(CHALLENGE, "") else {
            return;
        };
        let old = fingerprint(&site.cert);
        site.at(0, &["renew", "--due", "--dry-run"])
            .success()
            .stdout_has("scep lab  [due]");
        let (r, outcome) = site.renew(0);
        assert_eq!(
            outcome,
            "renewed",
            "{r}\nserver log:\n{}",
            site.server.log()
        );
        let new = fingerprint(&site.cert);
        assert_ne!(new, old, "the deployed file holds the new certificate");
        assert!(openssl_verify(&site.server.ca_pem(), &site.cert).contains(": OK"));
        // Signed with the deployed certificate and key: a RenewalReq.
        assert!(
            site.server.log().contains("RenewalReq (17)"),
            "{}",
            site.server.log()
        );
        assert_eq!(site.server.issued(), 2, "exactly one new certificate");
        // The deployed key is the new certificate's.
        let key = openssl::pkey::PKey::private_key_from_pem(
            &std::fs::read(site.cert.with_file_name("gw.key")).unwrap(),
        )
        .unwrap();
        let cert = openssl::x509::X509::from_pem(&std::fs::read(&site.cert).unwrap()).unwrap();
        assert!(key.public_eq(&cert.public_key().unwrap()));
        // Nothing more is due.
        let (_, outcome) = site.renew(1);
        assert_eq!(outcome, Value::Null);
        assert_eq!(site.server.issued(), 2);
    }

    #[test]
    fn a_wrong_challenge_fails_in_words_deploys_nothing_and_the_reminder_says_why() {
        let mail = tempfile::tempdir().unwrap();
        let smtp = certctl_e2e::smtp::SmtpServer::start(mail.path(), None);
        let smtp_toml = format!(
            "[smtp]\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\nfrom = \"certd@example.com\"\ntimeout = \"20s\"\n",
            smtp.port
        );
        let Some(site) = ScepSite::new("not-the-challenge", &smtp_toml) else {
            return;
        };
        let old = fingerprint(&site.cert);
        let (r, outcome) = site.renew(0);
        assert_eq!(outcome, "failed", "{r}");
        assert!(
            r.stdout.contains("answered badRequest") || r.stderr.contains("answered badRequest"),
            "{r}"
        );
        assert!(!r.stdout.contains("not-the-challenge") && !r.stderr.contains("not-the-challenge"));
        assert_eq!(fingerprint(&site.cert), old, "nothing deployed");
        assert_eq!(site.server.issued(), 1);
        site.at(0, &["check", "--warn", "2d", "--critical", "1d"])
            .expect_code(1)
            .stdout_has("answered badRequest");
        // The reminder names the failure instead of a plain "expires in".
        site.at(0, &["remind", "--now"]).success();
        let mails = smtp.wait_for_messages(1, std::time::Duration::from_secs(30));
        let text = &mails[0].text;
        assert!(
            text.contains("automatic renewal failed") && text.contains("answered badRequest"),
            "{text}"
        );
        assert!(!text.contains("not-the-challenge"), "{text}");
    }

    /// The same renewal by certd itself: its pass at start-up renews the due certificate.
    #[test]
    fn certd_renews_by_scep_at_its_pass() {
        let Some(site) = ScepSite::new(CHALLENGE, "") else {
            return;
        };
        let old = fingerprint(&site.cert);
        let certd = certctl_e2e::daemon::Certd::start_with_env(
            &site.env,
            &site.config,
            &[("CERTCTL_NOW", &rfc3339(now() + 15 * DAY))],
        );
        let wf = certctl_e2e::daemon::wait_for(
            std::time::Duration::from_secs(60),
            || {
                format!(
                    "a finished workflow; certd log:\n{}\nserver log:\n{}",
                    certd.log(),
                    site.server.log()
                )
            },
            || {
                let r = site.env.certctl(&["workflows", "--json"]);
                r.json()
                    .as_array()
                    .and_then(|a| a.iter().find(|w| w["step"] == "done").cloned())
            },
        );
        certd.stop_ok();
        assert_eq!(wf["old_fingerprint"], old.as_str());
        assert_eq!(wf["new_fingerprint"], fingerprint(&site.cert).as_str());
        assert!(openssl_verify(&site.server.ca_pem(), &site.cert).contains(": OK"));
        assert_eq!(site.server.issued(), 2, "exactly one new certificate");
    }

    #[test]
    fn a_server_down_then_up_is_retried_and_issues_exactly_one_certificate() {
        let Some(mut site) = ScepSite::new(CHALLENGE, "") else {
            return;
        };
        let old = fingerprint(&site.cert);
        site.server.stop();
        let (r, outcome) = site.renew(0);
        assert_eq!(outcome, "failed", "{r}");
        assert!(
            r.stdout.contains("cannot connect") || r.stderr.contains("cannot connect"),
            "{r}"
        );
        assert_eq!(fingerprint(&site.cert), old);
        site.server.restart();
        // Backed off at once, retried after retry_min.
        assert_eq!(site.renew(0).1, "backoff");
        let (r, outcome) = site.renew(2);
        assert_eq!(outcome, "renewed", "{r}\n{}", site.server.log());
        assert_ne!(fingerprint(&site.cert), old);
        assert!(openssl_verify(&site.server.ca_pem(), &site.cert).contains(": OK"));
        assert_eq!(site.server.issued(), 2, "exactly one new certificate");
        assert_eq!(site.renew(3).1, Value::Null);
        assert_eq!(site.server.issued(), 2);
    }

    /// A SCEP server that accepts and then says nothing must not stop certd from serving
    /// certctl's other writes: the exchange happens outside certd's writer lock.
    #[test]
    fn a_silent_scep_server_does_not_block_certd() {
        let Some(site) = ScepSite::new(CHALLENGE, "") else {
            return;
        };
        // Point `lab` at a listener that accepts and never answers (until the test lets go).
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let silent = format!("http://{}/scep", listener.local_addr().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if tx.send(stream).is_err() {
                    return;
                }
            }
        });
        let text = std::fs::read_to_string(&site.config)
            .unwrap()
            .replace(&site.server.url(), &silent);
        std::fs::write(&site.config, text).unwrap();
        let other = site.env.file("other/other.pem");
        std::fs::copy(&site.cert, &other).unwrap();

        let certd = certctl_e2e::daemon::Certd::start_with_env(
            &site.env,
            &site.config,
            &[("CERTCTL_NOW", &rfc3339(now() + 15 * DAY))],
        );
        // certd's pass is now waiting for the silent server's answer (30 s deadline).
        let held = rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("certd's renewal pass connects to the SCEP server");
        // Meanwhile a write through certd goes through at once, not after the SCEP deadline.
        let r = site
            .env
            .cmd()
            .args(["scan", s(&other), "--role", "gateway"])
            .timeout(std::time::Duration::from_secs(15))
            .run();
        drop(held);
        r.success();
        certd.stop_ok();
    }
}
