//! End-to-end tests of automatic renewal (issue 20): a policy with `renew = "auto"`, certd's
//! renewal pass (at start-up and on `[renewal] schedule`), `certctl renew`, crash safety of
//! an automatic renewal, `[renewal] max_concurrent`, and failures that stay loud.
//!
//! The clock is moved with `CERTCTL_NOW` (certd runs a renewal pass at start-up; certctl in
//! direct mode reads it per command). What certctl writes is checked with `openssl verify`
//! against the managed CA, and the TLS endpoint with `openssl s_client`.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use certctl_e2e::daemon::{wait_for, Certd, CertdConfig};
use certctl_e2e::*;
use serde_json::Value;

const DAY: i64 = 86_400;

/// SHA-256 of the first certificate of a PEM file, by openssl's parser.
fn file_fingerprint(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let x = openssl::x509::X509::from_pem(&bytes)
        .unwrap_or_else(|e| panic!("{} holds no certificate: {e}", path.display()));
    sha256_hex(&x.to_der().unwrap())
}

/// An admin's site: a managed CA `ops`, a folder of deployed certificates (`deploy/`), a
/// policies folder and certd's configuration.
struct Site {
    env: TestEnv,
    ca_dir: PathBuf,
    deploy: PathBuf,
    policies: PathBuf,
    config: PathBuf,
}

impl Site {
    /// `policy` is the body of one `[[policy]]` for the role `gateway` (its renewal keys);
    /// `extra` more certd.toml text.
    fn new(policy: &str, extra: &str) -> Site {
        Site::with_ca(policy, extra, false)
    }

    /// `encrypted`: the CA key is encrypted with the passphrase `ca-secret`.
    fn with_ca(policy: &str, extra: &str, encrypted: bool) -> Site {
        let env = TestEnv::new();
        // CRLs valid 90 days: the clock moves 25+ days and `check` would say the CRL expired.
        let mut init = env
            .cmd()
            .args(["ca", "init", "--name", "ops", "--crl-validity", "90d"]);
        if encrypted {
            init = init.env("CERTCTL_CA_PASSPHRASE", "ca-secret");
        }
        init.run().success();
        let ca_dir = env.store().join("ca").join("ops");
        let deploy = env.mkdir("deploy");
        let policies = env.mkdir("policies");
        std::fs::write(
            policies.join("gateways.toml"),
            format!(
                "[[policy]]\nname = \"gateways\"\nroles = [\"gateway\"]\nremind = [\"14d\", \"3d\"]\nwarn = \"14d\"\ncritical = \"3d\"\nrecipients = [\"pki@example.com\"]\n{policy}\n"
            ),
        )
        .unwrap();
        let config = env.file("etc/certd.toml");
        let text = format!(
            "{}\n[reminders]\nschedule = \"0 8 * * 1-5\"\npolicies = {:?}\n\n{extra}\n",
            CertdConfig::new(env.store()).to_toml(),
            s(&policies)
        );
        std::fs::create_dir_all(config.parent().unwrap()).unwrap();
        std::fs::write(&config, text).unwrap();
        Site {
            env,
            ca_dir,
            deploy,
            policies,
            config,
        }
    }

    /// Issues `cn` (30 days) from `ops`, copies it and its key to `deploy/CN.pem` and
    /// `deploy/CN.key`, scans them as role `gateway`; returns the fingerprint.
    fn deployed(&self, cn: &str) -> String {
        let out = self.env.mkdir(&format!("issued-{cn}"));
        let r = self
            .env
            .cmd()
            .args([
                "issue",
                "--ca",
                "ops",
                "--cn",
                cn,
                "--san",
                cn,
                "--role",
                "gateway",
                "--out",
                s(&out),
                "--validity",
                "30d",
            ])
            .env("CERTCTL_CA_PASSPHRASE", "ca-secret")
            .run();
        // (The passphrase is ignored by an unencrypted CA.)
        r.success();
        std::fs::copy(out.join(format!("{cn}.pem")), self.cert(cn)).unwrap();
        std::fs::copy(
            out.join(format!("{cn}.key")),
            self.deploy.join(format!("{cn}.key")),
        )
        .unwrap();
        self.env
            .certctl(&["scan", s(&self.cert(cn)), "--role", "gateway"])
            .success();
        file_fingerprint(&self.cert(cn))
    }

    fn cert(&self, cn: &str) -> PathBuf {
        self.deploy.join(format!("{cn}.pem"))
    }

    /// certctl at `days` from now (direct mode reads `CERTCTL_NOW`).
    fn at(&self, days: i64, args: &[&str]) -> RunResult {
        self.env
            .cmd()
            .args(args)
            .env("CERTCTL_NOW", rfc3339(now() + days * DAY))
            .run()
    }

    fn workflows(&self) -> Vec<Value> {
        let r = self.env.certctl(&["workflows", "--json"]);
        r.success();
        r.json().as_array().cloned().unwrap_or_default()
    }

    /// The certificates named `cn` in the store.
    fn named(&self, cn: &str) -> Vec<Value> {
        self.env
            .list_json(&["--name", cn])
            .into_iter()
            .filter(|c| c["subject_cn"] == cn)
            .collect()
    }

    /// `openssl verify` of a file against the managed CA, at `days` from now.
    fn verify(&self, path: &Path, days: i64) {
        let at = (now() + days * DAY).to_string();
        openssl_ok(&[
            "verify",
            "-attime",
            &at,
            "-CAfile",
            s(&self.ca_dir.join("ca.pem")),
            s(path),
        ]);
    }
}

const AUTO_20D: &str = "renew = \"auto\"\nrenew_before = \"20d\"";

/// An `openssl s_server` serving `deploy/CN.pem`, (re)started by a script that is also the
/// reload hook of the deploy folder.
struct SServer {
    port: u16,
    script: PathBuf,
    pid_file: PathBuf,
}

impl SServer {
    fn start(site: &Site, cn: &str) -> SServer {
        let port = certctl_e2e::smtp::free_port();
        let dir = site.env.mkdir("s_server");
        let script = dir.join("restart.sh");
        let pid_file = dir.join("pid");
        std::fs::write(
            &script,
            format!(
                r#"set -e
if [ -f {pid} ]; then kill "$(cat {pid})" 2>/dev/null || true; sleep 0.3; fi
openssl s_server -accept {port} -cert {cert} -key {key} -www -quiet </dev/null >>{log} 2>&1 &
echo $! > {pid}
for i in $(seq 1 100); do
  if (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null; then exit 0; fi
  sleep 0.05
done
echo "s_server did not come up" >&2; exit 1
"#,
                pid = s(&pid_file),
                cert = s(&site.cert(cn)),
                key = s(&site.deploy.join(format!("{cn}.key"))),
                log = s(&dir.join("log")),
            ),
        )
        .unwrap();
        let out = std::process::Command::new("bash")
            .arg(&script)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        SServer {
            port,
            script,
            pid_file,
        }
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The fingerprint of the certificate the server presents now.
    fn serves(&self) -> String {
        let out = std::process::Command::new("timeout")
            .args(["10", "openssl", "s_client", "-connect", &self.address()])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let x = openssl::x509::X509::from_pem(text.as_bytes())
            .unwrap_or_else(|e| panic!("no certificate from s_client: {e}\n{text}"));
        sha256_hex(&x.to_der().unwrap())
    }
}

impl Drop for SServer {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.pid_file) {
            let _ = std::process::Command::new("kill").arg(pid.trim()).status();
        }
    }
}

/// `[[workflows.targets]]` for the deploy folder with `argv` as its reload hook.
fn target(site_deploy: &Path, argv: &[&str]) -> String {
    format!(
        "[[workflows.targets]]\npath = {:?}\nreload = {:?}\nreload_timeout = \"30s\"\n",
        s(site_deploy),
        argv
    )
}

mod by_certd {
    use super::*;

    #[test]
    fn certd_renews_a_managed_ca_certificate_past_renew_before_and_the_endpoint_serves_it() {
        // Placeholder site to learn the deploy folder, then the real one with its hook.
        let site = Site::new(AUTO_20D, "");
        let old = site.deployed("gw.example.com");
        let server = SServer::start(&site, "gw.example.com");
        assert_eq!(server.serves(), old);
        // Recorded as serving it (its findings, a self-made CA, do not matter here).
        site.env
            .certctl(&["probe", &server.address()])
            .stdout_has("1 certificates served");
        let script = server.script.to_string_lossy().into_owned();
        let config = std::fs::read_to_string(&site.config).unwrap()
            + &target(&site.deploy, &["bash", &script]);
        std::fs::write(&site.config, config).unwrap();

        // Ten days from now nothing is due (renew_before 20d of a 30-day certificate):
        // certd's pass at start-up starts nothing.
        let certd = Certd::start_with_env(
            &site.env,
            &site.config,
            &[("CERTCTL_NOW", &rfc3339(now() + 5 * DAY))],
        );
        let r = site.env.certctl(&["renew", "--due", "--dry-run", "--json"]);
        r.success();
        assert_eq!(r.json()["due"], Value::Array(vec![]), "{r}");
        certd.stop_ok();
        assert!(site.workflows().is_empty());

        // 25 days from now it is due (20d + at most 2d of jitter before expiry at 30d).
        let certd = Certd::start_with_env(
            &site.env,
            &site.config,
            &[("CERTCTL_NOW", &rfc3339(now() + 25 * DAY))],
        );
        let wf = wait_for(
            Duration::from_secs(60),
            || format!("a finished workflow; log:\n{}", certd.log()),
            || site.workflows().into_iter().find(|w| w["step"] == "done"),
        );
        assert_eq!(wf["old_fingerprint"], old.as_str());
        assert!(
            wf["renewal_reason"].as_str().is_some_and(
                |r| r.starts_with("auto-renewal: expires ") && r.ends_with("renew_before 20d")
            ),
            "{wf}"
        );
        let new = wf["new_fingerprint"].as_str().unwrap().to_string();
        // The file and the endpoint serve the new certificate, which openssl verifies.
        assert_eq!(file_fingerprint(&site.cert("gw.example.com")), new);
        site.verify(&site.cert("gw.example.com"), 25);
        assert_eq!(server.serves(), new);
        // The store says why it was started.
        let history = site.env.certctl(&["history", &old]);
        history.success().stdout_has("renewal-started");
        history.stdout_has("auto-renewal: expires");
        history.stdout_has("renew_before 20d");
        // Another pass renews nothing more.
        site.env.certctl(&["renew", "--due", "--yes"]).success();
        certd.stop_ok();
        assert_eq!(site.workflows().len(), 1);
        assert_eq!(site.named("gw.example.com").len(), 2);
    }

    #[test]
    fn certd_renews_on_its_own_renewal_schedule() {
        // The wall clock (no CERTCTL_NOW): renew_before longer than the 30-day lifetime makes
        // the certificate due at once. It enters the store after certd's start-up pass, so
        // only the schedule (every 2 seconds) can renew it.
        let site = Site::new(
            "renew = \"auto\"\nrenew_before = \"800h\"",
            "[renewal]\nschedule = \"*/2 * * * * *\"\n",
        );
        let certd = Certd::start(&site.env, &site.config);
        // Issued and scanned through certd after its start-up pass.
        let old = site.deployed("cron.example.com");
        let wf = wait_for(
            Duration::from_secs(60),
            || format!("a scheduled renewal; log:\n{}", certd.log()),
            || {
                site.workflows()
                    .into_iter()
                    .find(|w| w["old_fingerprint"] == old.as_str() && w["step"] == "done")
            },
        );
        certd.stop_ok();
        assert_eq!(
            file_fingerprint(&site.cert("cron.example.com")),
            wf["new_fingerprint"].as_str().unwrap()
        );
        site.verify(&site.cert("cron.example.com"), 0);
    }

    #[test]
    fn killed_at_every_step_of_an_automatic_renewal_exactly_one_new_certificate() {
        let site = Site::new(AUTO_20D, &target(Path::new("/nonexistent"), &["true"]));
        let later = rfc3339(now() + 25 * DAY);
        // Workflow steps by number (CERTCTL_TEST_ABORT_AFTER_STEP), and the crash point
        // between recording the renewal and starting its workflow.
        let crashes: Vec<(&str, &str)> = vec![
            ("CERTCTL_TEST_CRASH_AT", "renewal-recorded"),
            ("CERTCTL_TEST_ABORT_AFTER_STEP", "0"),
            ("CERTCTL_TEST_ABORT_AFTER_STEP", "1"),
            ("CERTCTL_TEST_ABORT_AFTER_STEP", "2"),
            ("CERTCTL_TEST_ABORT_AFTER_STEP", "3"),
            ("CERTCTL_TEST_ABORT_AFTER_STEP", "7"),
            ("CERTCTL_TEST_ABORT_AFTER_STEP", "5"),
        ];
        // Recovered by certd's restart (its start-up resume, then its renewal pass), or by
        // `certctl renew --due` without certd (the pass adopts the unfinished workflow).
        for by_certd in [true, false] {
            for (i, (var, value)) in crashes.iter().enumerate() {
                let cn = format!("crash{i}-{by_certd}.example.com");
                let old = site.deployed(&cn);
                let mut certd = Certd::spawn_with_vars(
                    &site.env,
                    &site.config,
                    &[],
                    &[("CERTCTL_NOW", &later), (var, value)],
                );
                let status = certd.wait_exit(Duration::from_secs(60)).unwrap_or_else(|| {
                    panic!("certd did not crash at {var}={value}: {}", certd.log())
                });
                assert!(
                    matches!(status.signal(), Some(6) | Some(9)),
                    "{var}={value}: {status:?} {}",
                    certd.log()
                );
                if by_certd {
                    let certd =
                        Certd::start_with_env(&site.env, &site.config, &[("CERTCTL_NOW", &later)]);
                    wait_for(
                        Duration::from_secs(60),
                        || format!("{cn} renewed after {var}={value}: {}", certd.log()),
                        || {
                            site.workflows().into_iter().find(|w| {
                                w["old_fingerprint"] == old.as_str() && w["step"] == "done"
                            })
                        },
                    );
                    site.env.certctl(&["renew", "--due", "--yes"]).success();
                    certd.stop_ok();
                } else {
                    for _ in 0..2 {
                        site.env
                            .cmd()
                            .args(["renew", "--due", "--yes", "--config", s(&site.config)])
                            .env("CERTCTL_NOW", &later)
                            .run()
                            .success();
                    }
                }
                let certs = site.named(&cn);
                assert_eq!(certs.len(), 2, "{var}={value}: {certs:?}");
                let of_old: Vec<Value> = site
                    .workflows()
                    .into_iter()
                    .filter(|w| w["old_fingerprint"] == old.as_str())
                    .collect();
                assert_eq!(
                    of_old.len(),
                    1,
                    "one workflow after {var}={value}: {of_old:?}"
                );
                assert_eq!(of_old[0]["step"], "done");
                let new = of_old[0]["new_fingerprint"].as_str().unwrap();
                assert_eq!(file_fingerprint(&site.cert(&cn)), new);
                site.verify(&site.cert(&cn), 25);
            }
        }
    }
}

mod limits_and_defaults {
    use super::*;

    #[test]
    fn at_most_max_concurrent_renewals_are_unfinished_at_once() {
        // The reload hook fails until the service is back (a flag file): the renewals stop
        // at `deployed` and stay open.
        let site = Site::new(
            AUTO_20D,
            "[renewal]\nmax_concurrent = 2\nretry_min = \"10m\"\nretry_max = \"1h\"\n",
        );
        let flag = site.env.file("service-up");
        let config = std::fs::read_to_string(&site.config).unwrap()
            + &target(&site.deploy, &["test", "-f", s(&flag)]);
        std::fs::write(&site.config, config).unwrap();
        let cns: Vec<String> = (0..5).map(|i| format!("n{i}.example.com")).collect();
        for cn in &cns {
            site.deployed(cn);
        }
        let renew = |days_x100: i64| {
            site.env
                .cmd()
                .args([
                    "renew",
                    "--due",
                    "--yes",
                    "--json",
                    "--config",
                    s(&site.config),
                ])
                .env("CERTCTL_NOW", rfc3339(now() + 25 * DAY + days_x100 * 3600))
                .run()
        };
        let open = || {
            site.workflows()
                .into_iter()
                .filter(|w| w["step"] != "done")
                .count()
        };
        let r = renew(0);
        assert_eq!(r.code(), 4, "a failed renewal fails the command{r}");
        let outcomes: Vec<String> = r.json()["pass"]["renewals"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["outcome"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            outcomes.iter().filter(|o| *o == "failed").count(),
            2,
            "{outcomes:?}"
        );
        assert_eq!(
            outcomes.iter().filter(|o| *o == "waiting").count(),
            3,
            "{outcomes:?}"
        );
        assert_eq!(open(), 2);
        // Again at once: backoff, still two.
        renew(0);
        assert_eq!(open(), 2);
        assert_eq!(site.workflows().len(), 2);

        // The hook fixed: hour by hour every certificate is renewed, never more than two
        // unfinished at once.
        std::fs::write(&flag, "").unwrap();
        for hour in 1..=6 {
            renew(hour);
            assert!(open() <= 2, "hour {hour}: {:?}", site.workflows());
        }
        assert_eq!(open(), 0, "{:?}", site.workflows());
        assert_eq!(site.workflows().len(), 5);
        for cn in &cns {
            assert_eq!(site.named(cn).len(), 2, "{cn}");
            site.verify(&site.cert(cn), 26);
        }
    }

    #[test]
    fn the_default_remind_never_starts_a_workflow() {
        let site = Site::new("", "");
        site.deployed("quiet.example.com");
        let r = site.at(
            29,
            &[
                "renew",
                "--due",
                "--dry-run",
                "--json",
                "--config",
                s(&site.config),
            ],
        );
        r.success();
        assert_eq!(r.json()["due"], Value::Array(vec![]));
        site.at(
            29,
            &["renew", "--due", "--yes", "--config", s(&site.config)],
        )
        .success()
        .stdout_has("nothing is due");
        let certd = Certd::start_with_env(
            &site.env,
            &site.config,
            &[("CERTCTL_NOW", &rfc3339(now() + 29 * DAY))],
        );
        wait_for(
            Duration::from_secs(30),
            || certd.log(),
            || {
                let st = certctl_e2e::daemon::status_json(&site.env);
                let renew = st["daemon"]["schedules"]
                    .as_array()?
                    .iter()
                    .find(|j| j["job"] == "renew")?
                    .clone();
                renew["last_run"].is_number().then_some(())
            },
        );
        certd.stop_ok();
        assert!(site.workflows().is_empty());
        assert_eq!(site.named("quiet.example.com").len(), 1);
        // `policy explain` says so.
        let r = site.at(
            29,
            &[
                "policy",
                "explain",
                "quiet.example.com",
                "--policies",
                s(&site.policies),
            ],
        );
        r.success().stdout_has("remind: reminders only");
    }

    #[test]
    fn renew_due_dry_run_lists_method_and_reason_and_renew_id_works_direct_and_through_certd() {
        let site = Site::new(AUTO_20D, "");
        let a = site.deployed("a.example.com");
        let b = site.deployed("b.example.com");
        let r = site.at(
            25,
            &[
                "renew",
                "--due",
                "--dry-run",
                "--json",
                "--config",
                s(&site.config),
            ],
        );
        r.success();
        let due = r.json()["due"].as_array().unwrap().clone();
        assert_eq!(due.len(), 2, "{r}");
        for d in &due {
            assert_eq!(d["method"], "managed-ca");
            assert_eq!(d["ca"], "ops");
            assert_eq!(d["state"], "due");
            assert!(
                d["reason"]
                    .as_str()
                    .unwrap()
                    .starts_with("auto-renewal: expires "),
                "{d}"
            );
            assert_eq!(d["renew_before"], "20d");
        }
        assert!(r.json()["pass"].is_null());
        assert!(site.workflows().is_empty(), "a dry run starts nothing");
        // Without --yes nothing is done.
        site.at(25, &["renew", &a]).expect_code(64);

        // `renew ID` now (not due yet: 1 day from now), direct.
        site.at(1, &["renew", &a, "--yes", "--config", s(&site.config)])
            .success()
            .stdout_has("renewed");
        assert_ne!(file_fingerprint(&site.cert("a.example.com")), a);
        site.verify(&site.cert("a.example.com"), 1);
        // Through certd.
        let certd = Certd::start(&site.env, &site.config);
        site.env
            .certctl(&["renew", &b, "--yes"])
            .success()
            .stdout_has("renewed");
        certd.stop_ok();
        assert_ne!(file_fingerprint(&site.cert("b.example.com")), b);
        assert_eq!(site.workflows().len(), 2);
    }
}

mod superseded {
    use super::*;

    #[test]
    fn the_old_certificate_is_revoked_as_superseded_after_the_grace_time() {
        let site = Site::new(AUTO_20D, "[renewal]\nrevoke_superseded_after = \"2d\"\n");
        let old = site.deployed("old.example.com");
        let config = s(&site.config).to_string();
        let renew = |hours: i64| {
            site.env
                .cmd()
                .args(["renew", "--due", "--yes", "--json", "--config", &config])
                .env("CERTCTL_NOW", rfc3339(now() + 25 * DAY + hours * 3600))
                .run()
        };
        assert_eq!(renew(0).json()["pass"]["renewals"][0]["outcome"], "renewed");
        let revocation = || {
            let r = site.env.certctl(&["show", &old, "--json"]);
            r.success();
            r.json()[0]["revocation"].clone()
        };
        // Within the grace time the old certificate stays valid (a rollback is possible).
        let r = renew(47);
        assert_eq!(
            r.json()["pass"]["revoked_superseded"],
            Value::Array(vec![]),
            "{r}"
        );
        assert!(revocation().is_null());
        let r = renew(49);
        assert_eq!(
            r.json()["pass"]["revoked_superseded"][0],
            old.as_str(),
            "{r}"
        );
        assert_eq!(revocation()["reason"], "superseded");
        // The CRL the CA published says so.
        let crl = site.ca_dir.join("crl.pem");
        let bak = site.deploy.join("old.example.com.pem.bak");
        let at = (now() + 27 * DAY).to_string();
        let (ok, text) = openssl(&[
            "verify",
            "-attime",
            &at,
            "-crl_check",
            "-CRLfile",
            s(&crl),
            "-CAfile",
            s(&site.ca_dir.join("ca.pem")),
            s(&bak),
        ]);
        assert!(!ok && text.contains("certificate revoked"), "{text}");
    }
}

mod failures {
    use super::*;
    use certctl_e2e::smtp::SmtpServer;

    fn smtp_toml(smtp: &SmtpServer) -> String {
        format!(
            "[smtp]\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\nfrom = \"certd@example.com\"\ntimeout = \"20s\"\n",
            smtp.port
        )
    }

    #[test]
    fn a_failing_renewal_is_retried_and_named_by_check_status_metrics_and_the_reminder() {
        let env_dir = tempfile::tempdir().unwrap();
        let smtp = SmtpServer::start(env_dir.path(), None);
        let site = Site::new(
            AUTO_20D,
            &(smtp_toml(&smtp) + "[renewal]\nretry_min = \"1h\"\nretry_max = \"4h\"\n"),
        );
        let old = site.deployed("fail.example.com");
        // The CA's key file is gone (a botched migration): every attempt fails.
        let key = site.ca_dir.join("ca.key");
        let moved = site.ca_dir.join("ca.key.moved");
        std::fs::rename(&key, &moved).unwrap();
        let config = s(&site.config).to_string();
        let at = |hours: i64, args: &[&str]| {
            site.env
                .cmd()
                .args(args)
                .args(["--config", &config])
                .env("CERTCTL_NOW", rfc3339(now() + 25 * DAY + hours * 3600))
                .run()
        };
        let renew = |hours: i64| at(hours, &["renew", "--due", "--yes", "--json"]);
        let r = renew(0);
        assert_eq!(r.code(), 4, "{r}");
        assert_eq!(r.json()["pass"]["renewals"][0]["outcome"], "failed", "{r}");
        // At once again: backed off, not retried.
        assert_eq!(renew(0).json()["pass"]["renewals"][0]["outcome"], "backoff");
        // Retried after 1h, then 2h.
        assert_eq!(renew(2).json()["pass"]["renewals"][0]["outcome"], "failed");
        assert_eq!(renew(5).json()["pass"]["renewals"][0]["outcome"], "failed");
        assert_eq!(site.named("fail.example.com").len(), 1, "nothing issued");

        // `check`: a warning although the certificate is outside check's windows.
        let r = at(5, &["check", "--warn", "2d", "--critical", "1d"]);
        r.expect_code(1)
            .stdout_has("automatic renewals failing")
            .stdout_has("automatic renewal failed 3 times since");
        // Critical once the certificate is within the critical window.
        at(5, &["check", "--warn", "10d", "--critical", "6d"]).expect_code(2);
        // `status`.
        at(5, &["status"])
            .success()
            .stdout_has("automatic renewal failed 3 times since")
            .stdout_has("ca.key");
        // `/metrics` (the same text as `certctl metrics`).
        let m = at(5, &["metrics"]);
        m.success()
            .stdout_has("certctl_renewals_total{method=\"managed-ca\",outcome=\"failure\"} 3")
            .stdout_has("certctl_renewal_failing{method=\"managed-ca\"} 1");
        // The reminder names the failure instead of a plain "expires in".
        at(5, &["remind", "--now"]).success();
        let mails = smtp.wait_for_messages(1, Duration::from_secs(30));
        let text = &mails[0].text;
        assert!(
            text.contains("automatic renewal failed 3 times since") && text.contains("ca.key"),
            "{text}"
        );

        // Fixed: the next attempt renews it, and everything is quiet again.
        std::fs::rename(&moved, &key).unwrap();
        let r = renew(10);
        r.success();
        assert_eq!(r.json()["pass"]["renewals"][0]["outcome"], "renewed", "{r}");
        assert_ne!(file_fingerprint(&site.cert("fail.example.com")), old);
        site.verify(&site.cert("fail.example.com"), 26);
        at(10, &["metrics"])
            .success()
            .stdout_has("certctl_renewals_total{method=\"managed-ca\",outcome=\"success\"} 1")
            .stdout_has("certctl_renewal_failing{method=\"managed-ca\"} 0");
        at(10, &["check", "--warn", "2d", "--critical", "1d"]).success();
    }

    #[test]
    fn a_certificate_no_managed_ca_issued_gets_a_reminder_saying_a_person_must_act() {
        let env_dir = tempfile::tempdir().unwrap();
        let smtp = SmtpServer::start(env_dir.path(), None);
        let site = Site::new(AUTO_20D, &smtp_toml(&smtp));
        // From an outside CA (a public one, AD CS without SCEP): certctl cannot renew it.
        let f = CertFactory::new();
        let outside = f.leaf(CertSpec::leaf("outside.example.com").expires_in_days(5));
        let file = site.deploy.join("outside.pem");
        files::pem(&file, &[&outside]);
        site.env
            .certctl(&["scan", s(&file), "--role", "gateway"])
            .success();
        // No renewal pass ran: the reminder says so anyway.
        site.env
            .cmd()
            .args(["remind", "--now", "--config", s(&site.config)])
            .run()
            .success();
        let mails = smtp.wait_for_messages(1, Duration::from_secs(30));
        let text = &mails[0].text;
        assert!(
            text.contains("a person must act") && text.contains("run certctl regenerate --csr"),
            "{text}"
        );
        let r = site
            .env
            .cmd()
            .args([
                "renew",
                "--due",
                "--dry-run",
                "--json",
                "--config",
                s(&site.config),
            ])
            .run();
        r.success();
        assert_eq!(r.json()["due"][0]["method"], "manual", "{r}");
        assert_eq!(r.json()["due"][0]["state"], "manual", "{r}");
    }

    #[test]
    fn an_encrypted_ca_without_a_passphrase_file_falls_back_to_a_reminder_that_says_why() {
        let env_dir = tempfile::tempdir().unwrap();
        let smtp = SmtpServer::start(env_dir.path(), None);
        let site = Site::with_ca(AUTO_20D, &smtp_toml(&smtp), true);
        site.deployed("locked.example.com");
        let config = s(&site.config).to_string();
        let at = |args: &[&str]| {
            site.env
                .cmd()
                .args(args)
                .args(["--config", &config])
                .env("CERTCTL_NOW", rfc3339(now() + 25 * DAY))
                .run()
        };
        let r = at(&["renew", "--due", "--dry-run", "--json"]);
        r.success();
        let d = &r.json()["due"][0];
        assert_eq!(d["method"], "manual", "{r}");
        assert!(d["why"].as_str().unwrap().contains("encrypted"), "{r}");
        at(&["renew", "--due", "--yes"])
            .success()
            .stdout_has("manual");
        assert!(site.workflows().is_empty(), "nothing started");
        at(&["policy", "explain", "locked.example.com"])
            .success()
            .stdout_has("a person must");
        at(&["remind", "--now"]).success();
        let mails = smtp.wait_for_messages(1, Duration::from_secs(30));
        let text = &mails[0].text;
        assert!(
            text.contains("a person must act") && text.contains("[workflows.ca_passphrase_files]"),
            "{text}"
        );
    }
}

mod docs {
    use super::*;

    /// The text between `<!-- NAME -->` and `<!-- /NAME -->` in README.md, inside its fence.
    fn readme_block(name: &str) -> String {
        let readme =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
                .unwrap();
        let start = readme
            .find(&format!("<!-- {name} -->"))
            .unwrap_or_else(|| panic!("README.md has <!-- {name} -->"));
        let end = readme.find(&format!("<!-- /{name} -->")).unwrap();
        let block = &readme[start..end];
        let body = &block[block.find("```toml\n").unwrap() + 8..];
        body[..body.find("```").unwrap()].to_string()
    }

    /// A certd.toml of `store`, a `[reminders]` section naming `policies`, and `part` (a README
    /// block whose `/etc/` paths are moved under `etc`), as `certd config check` sees it.
    fn config_with(env: &TestEnv, policies: &Path, etc: &Path, part: &str) -> PathBuf {
        let part = part.replace("/etc/", &format!("{}/", s(etc)));
        let config = env.file("certd.toml");
        std::fs::write(
            &config,
            format!(
                "store = {:?}\n[reminders]\nschedule = \"0 8 * * 1-5\"\npolicies = {:?}\n{part}",
                s(env.store()),
                s(policies)
            ),
        )
        .unwrap();
        config
    }

    fn config_check(env: &TestEnv, config: &Path) -> RunResult {
        env.cmd()
            .bin("certd")
            .args(["config", "check", s(config)])
            .no_store()
            .run()
    }

    #[test]
    fn the_readme_renewal_examples_work_as_written() {
        let env = TestEnv::new();
        let policies = env.mkdir("policies");
        std::fs::write(policies.join("web.toml"), readme_block("renewal-policy")).unwrap();
        env.certctl(&["policy", "check", s(&policies)]).success();
        // certd's part, with the example's files made.
        let etc = env.mkdir("etc");
        files::secret(&etc.join("certd/issuing-ca.passphrase"), "secret\n");
        let config = config_with(&env, &policies, &etc, &readme_block("renewal-certd"));
        config_check(&env, &config).success();
    }

    /// The SCEP section's `[[scep]]` block and policy, as written (the server itself is
    /// not contacted by a check).
    #[test]
    fn the_readme_scep_examples_work_as_written() {
        let env = TestEnv::new();
        let policies = env.mkdir("policies");
        std::fs::write(policies.join("iis.toml"), readme_block("scep-policy")).unwrap();
        env.certctl(&["policy", "check", s(&policies)]).success();
        let etc = env.mkdir("etc");
        files::secret(&etc.join("certd/scep-challenge"), "PASSWORD\n");
        let config = config_with(&env, &policies, &etc, &readme_block("scep-certd"));
        config_check(&env, &config).success();
        // The policy names the block: a typo is caught by the check, not by a failed renewal.
        std::fs::write(
            policies.join("iis.toml"),
            readme_block("scep-policy").replace("corp-ndes", "corp-ndse"),
        )
        .unwrap();
        config_check(&env, &config)
            .expect_code(2)
            .stderr_has("iis.toml:")
            .stderr_has(
                "names SCEP server `corp-ndse`, which has no [[scep]] block (defined: corp-ndes)",
            );
    }
}
