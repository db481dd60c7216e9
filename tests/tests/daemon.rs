//! End-to-end tests of `certd` with `certctl` in front of it (issue 3, "Tests").
//!
//! Each test starts a real `target/debug/certd run --config FILE` on its own temp dir and
//! store ([`Certd`] guard: bounded start, SIGTERM/SIGKILL on drop), drops certificates into
//! watched folders, runs real TLS servers on 127.0.0.1 ([`TlsServer`], rcgen-made chains)
//! and queries through the built `certctl`, in daemon mode and — after stopping certd — in
//! direct mode, whose answers must be the same. Every wait is a bounded poll.
//!
//! One module per area: [`status`], [`watch`], [`same_answers`], [`same_errors`],
//! [`through_certd`], [`probes`], [`config`], [`signals`], [`exclusive`], [`logs`].
//!
//! Build the binaries first (`cargo build --workspace --bins`, which `scripts/test` does).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use certctl_e2e::daemon::{status_json, wait_for, Certd, CertdConfig, EndpointSpec};
use certctl_e2e::files::{self, Pem};
use certctl_e2e::tls::{closed_port, TlsServer};
use certctl_e2e::*;
use rustix::process::Signal;
use serde_json::{json, Value};

/// How long a certificate dropped into a watched folder may take to reach the store.
const APPEAR_TIMEOUT: Duration = Duration::from_secs(15);
/// The bound on every other wait for certd to do something.
const WAIT: Duration = Duration::from_secs(20);
/// The issuer the good endpoints' leaves carry.
const ISSUING_CA: &str = "Certctl E2E Issuing CA";

// ---- helpers -------------------------------------------------------------------------------

/// A path as a `String`.
fn p(path: &Path) -> String {
    s(path).to_string()
}

/// Waits until `certctl list --json` holds every fingerprint of `want`.
#[track_caller]
fn wait_listed(
    env: &TestEnv,
    certd: &Certd<'_>,
    want: &[&GeneratedCert],
) -> (Vec<Value>, RunResult) {
    let want: BTreeSet<String> = want.iter().map(|c| c.fingerprint.clone()).collect();
    wait_for(
        APPEAR_TIMEOUT,
        || {
            format!(
                "{want:?} in `certctl list`; it lists {:?}{}",
                fingerprints(&env.list_json(&[])),
                certd.describe()
            )
        },
        || {
            let (items, run) = env.list(&[]);
            let have: BTreeSet<String> = fingerprints(&items).into_iter().collect();
            want.is_subset(&have).then_some((items, run))
        },
    )
}

/// A fingerprint inside endpoint states (`probe --json`, `status --json`): lowercase hex.
fn fp_hex(v: &Value) -> String {
    let hex = v
        .as_str()
        .unwrap_or_else(|| panic!("a fingerprint should be a hex string, not {v}"));
    assert_eq!(hex.len(), 64, "not a SHA-256 in hex: {hex}");
    hex.to_string()
}

/// The chain of an endpoint state (`probe --json`'s `endpoint`, `status --json`'s
/// `endpoints[]`), as hex fingerprints.
fn chain_fps(endpoint: &Value) -> Vec<String> {
    endpoint["chain"]
        .as_array()
        .unwrap_or_else(|| panic!("no chain in {endpoint}"))
        .iter()
        .map(fp_hex)
        .collect()
}

/// The finding kinds of an endpoint state.
fn kinds(endpoint: &Value) -> Vec<String> {
    endpoint["findings"]
        .as_array()
        .unwrap_or_else(|| panic!("no findings in {endpoint}"))
        .iter()
        .map(|f| f["kind"].as_str().expect("finding kind").to_string())
        // The probe's own findings. `status` also shows drift findings worked out from the
        // file inventory (these endpoints serve certificates that are in no file); those
        // are tested in tests/fleet.rs.
        .filter(|k| k != "renewed-not-reloaded" && k != "not-in-inventory")
        .collect()
}

/// The `tls` sources of a certificate object as (endpoint, index, gone).
fn tls_sources(cert: &Value) -> Vec<(String, u64, bool)> {
    let mut out: Vec<(String, u64, bool)> = cert["sources"]
        .as_array()
        .unwrap_or_else(|| panic!("no sources in {cert}"))
        .iter()
        .filter(|s| s["kind"] == "tls")
        .map(|s| {
            (
                s["endpoint"]
                    .as_str()
                    .expect("tls source endpoint")
                    .to_string(),
                s["index"].as_u64().expect("source index"),
                !s["gone_since"].is_null(),
            )
        })
        .collect();
    out.sort();
    out
}

/// The endpoint state for `address` in a `status --json`.
#[track_caller]
fn endpoint_in<'v>(status: &'v Value, address: &str) -> &'v Value {
    status["endpoints"]
        .as_array()
        .expect("endpoints array")
        .iter()
        .find(|e| e["address"] == address)
        .unwrap_or_else(|| panic!("no endpoint {address} in status {status:#}"))
}

/// The schedule entry of `job` in a daemon `status --json`.
#[track_caller]
fn schedule<'v>(status: &'v Value, job: &str) -> &'v Value {
    status["daemon"]["schedules"]
        .as_array()
        .unwrap_or_else(|| panic!("no schedules in {status:#}"))
        .iter()
        .find(|j| j["job"] == job)
        .unwrap_or_else(|| panic!("no {job} schedule in {status:#}"))
}

/// Removes the fields that record *when* something was seen (a re-scan of an unchanged
/// file legitimately moves them), everywhere in `v`.
fn strip_seen(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.remove("first_seen");
            map.remove("last_seen");
            map.values_mut().for_each(strip_seen);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_seen),
        _ => {}
    }
}

/// A certificate authority hierarchy for the probe tests, and trust stores on disk.
struct Pki {
    f: CertFactory,
    /// A TLS-inspecting proxy's own root, which re-signs every site.
    proxy_ca: GeneratedCert,
    /// Trusts the factory's root.
    trust: PathBuf,
    /// Trusts the factory's root and the proxy's (a proxy root deployed by policy).
    trust_with_proxy: PathBuf,
    /// Trusts only an unrelated root.
    trust_other: PathBuf,
}

impl Pki {
    fn new(env: &TestEnv) -> Pki {
        let f = CertFactory::new();
        let proxy_ca =
            f.self_signed(CertSpec::ca("Inspecting Proxy CA").org(Some("Middlebox Inc")));
        let other_root = f.self_signed(CertSpec::ca("Unrelated Root CA"));
        let trust = env.file("trust/root.pem");
        files::pem(&trust, &[f.root()]);
        let trust_with_proxy = env.file("trust/root-and-proxy.pem");
        files::pem(&trust_with_proxy, &[f.root(), &proxy_ca]);
        let trust_other = env.file("trust/other.pem");
        files::pem(&trust_other, &[&other_root]);
        Pki {
            f,
            proxy_ca,
            trust,
            trust_with_proxy,
            trust_other,
        }
    }

    /// A leaf for `gw.example` (and 127.0.0.1) with the given validity.
    fn gw_leaf(&self, not_before: i64, not_after: i64) -> GeneratedCert {
        self.f.leaf(
            CertSpec::leaf("gw.example")
                .dns("gw.example")
                .ip("127.0.0.1")
                .valid(not_before, not_after),
        )
    }
}

// ---- status --------------------------------------------------------------------------------

mod status {
    //! `certctl status` against a running certd.
    use super::*;
    use time::{Date, Month, OffsetDateTime};

    #[test]
    fn status_reports_daemon_mode_with_pid_uptime_sources_and_schedules() {
        let env = TestEnv::new();
        let watched = env.mkdir("watched");
        let config = CertdConfig::new(env.store())
            .source(&watched, Some("agent"))
            .scan_schedule("0 0 1 1 *")
            .write(&env.file("etc/certd.toml"));
        let certd = Certd::start(&env, &config);
        let pid = certd.pid();

        let r = env.certctl(&["status"]);
        r.success();
        let first = r.stdout.lines().next().unwrap_or_default();
        assert!(
            first.starts_with(&format!("mode: daemon (certd pid {pid}, up "))
                && first.ends_with(&format!("config {})", config.display())),
            "{r}"
        );
        r.stdout_has(&format!("store: {} (0 certificates)", p(env.store())))
            .stdout_has(&format!("source: {} (role agent, watched)", p(&watched)));
        let scan_row = r
            .stdout
            .lines()
            .find(|l| l.starts_with("scan "))
            .unwrap_or_default();
        assert!(scan_row.contains("0 0 1 1 *"), "{r}");
        let probe_row = r
            .stdout
            .lines()
            .find(|l| l.starts_with("probe "))
            .unwrap_or_default();
        assert!(probe_row.contains("(not scheduled)"), "{r}");

        // The start-up scan runs once; then the schedule says when the next one is.
        let st = wait_for(
            WAIT,
            || {
                format!(
                    "the start-up scan in `certctl status --json`{}",
                    certd.describe()
                )
            },
            || {
                let st = status_json(&env);
                (!schedule(&st, "scan")["last_run"].is_null()).then_some(st)
            },
        );
        assert_eq!(st["mode"], "daemon", "{st:#}");
        assert_eq!(st["store"], p(env.store()), "{st:#}");
        assert_eq!(st["certificates"], 0, "{st:#}");
        assert_eq!(st["endpoints"], json!([]), "{st:#}");
        let d = &st["daemon"];
        assert_eq!(d["pid"], pid, "{st:#}");
        assert!(d["uptime_secs"].as_i64().is_some_and(|u| u >= 0), "{st:#}");
        assert_eq!(d["config"], p(&config), "{st:#}");
        assert_eq!(
            d["sources"],
            json!([{"path": p(&watched), "role": "agent", "watched": true}]),
            "{st:#}"
        );
        let scan = schedule(&st, "scan");
        assert_eq!(scan["schedule"], "0 0 1 1 *", "{st:#}");
        assert!(
            scan["last_outcome"]
                .as_str()
                .is_some_and(|o| o.starts_with("ok")),
            "{st:#}"
        );
        let next_new_year =
            Date::from_calendar_date(OffsetDateTime::now_utc().year() + 1, Month::January, 1)
                .unwrap()
                .midnight()
                .assume_utc()
                .unix_timestamp();
        assert_eq!(scan["next_run"], next_new_year, "schedules are UTC: {st:#}");
        let probe = schedule(&st, "probe");
        assert_eq!(
            probe["next_run"],
            Value::Null,
            "probe schedule is off: {st:#}"
        );

        // Uptime counts.
        wait_for(
            WAIT,
            || format!("uptime_secs to grow{}", certd.describe()),
            || (status_json(&env)["daemon"]["uptime_secs"].as_i64() >= Some(1)).then_some(()),
        );
        certd.stop_ok();

        let r = env.certctl(&["status", "--json"]);
        r.success();
        assert_eq!(r.json()["mode"], "direct", "{r}");
        assert_eq!(r.json()["daemon"], Value::Null, "{r}");
        env.certctl(&["status"])
            .success()
            .stdout_has("mode: direct");
    }
}

// ---- watched folders -----------------------------------------------------------------------

mod watch {
    //! Folder watching: a dropped certificate is in the store within seconds.
    use super::*;

    #[test]
    fn a_certificate_dropped_into_a_watched_folder_is_in_the_store_within_seconds() {
        let f = CertFactory::new();
        let env = TestEnv::new();
        let watched = env.mkdir("watched");
        let config = CertdConfig::new(env.store())
            .source(&watched, Some("agent"))
            .write(&env.file("etc/certd.toml"));
        let certd = Certd::start(&env, &config);
        assert_eq!(env.list_json(&[]), Vec::<Value>::new());

        let leaf = f.leaf(CertSpec::leaf("agent-dropped.example").dns("agent-dropped.example"));
        let path = watched.join("agent-dropped.pem");
        let begun = Instant::now();
        files::pem(&path, &[&leaf]);
        let (items, run) = wait_listed(&env, &certd, &[&leaf]);
        eprintln!("dropped certificate listed after {:?}", begun.elapsed());
        let item = find_fp(&items, &leaf.fingerprint);
        assert_cert_json(item, &leaf, &run);
        assert_eq!(item["role"], "agent", "{item:#}");
        assert_eq!(file_sources(item), vec![(p(&path), 0, false)]);

        // A folder copied in after start: watched too (recursively).
        let leaf2 = f.leaf(CertSpec::leaf("agent-7.example"));
        let sub = watched.join("incoming/site-7");
        std::fs::create_dir_all(&sub).unwrap();
        let bundle = sub.join("bundle.pem");
        files::pem(&bundle, &[&leaf2, f.intermediate()]);
        let (items, run) = wait_listed(&env, &certd, &[&leaf2, f.intermediate()]);
        let item = find_fp(&items, &leaf2.fingerprint);
        assert_cert_json(item, &leaf2, &run);
        assert_eq!(item["role"], "agent", "{item:#}");
        assert_eq!(file_sources(item), vec![(p(&bundle), 0, false)]);
        assert_eq!(find_fp(&items, &f.intermediate().fingerprint)["role"], "ca");
        assert_eq!(items.len(), 3, "{run}");
        certd.stop_ok();
    }
}

// ---- daemon and direct mode give the same answers -------------------------------------------

mod same_answers {
    //! The same queries through certd and directly (after certd stopped) must agree.
    use super::*;

    /// One query's answer: exit code, stdout (JSON without the *seen* times, or text) and
    /// stderr.
    #[derive(Debug, PartialEq)]
    struct Answer {
        code: i32,
        stdout: Value,
        stderr: String,
    }

    fn ask(env: &TestEnv, args: &[&str]) -> (Answer, RunResult) {
        let r = env.certctl(args);
        let stdout = if args.contains(&"--json") && !r.stdout.trim().is_empty() {
            let mut v = r.json();
            strip_seen(&mut v);
            v
        } else {
            Value::String(r.stdout.clone())
        };
        (
            Answer {
                code: r.code(),
                stdout,
                stderr: r.stderr.clone(),
            },
            r,
        )
    }

    #[test]
    fn queries_give_the_same_answers_through_certd_and_directly() {
        let f = CertFactory::new();
        let env = TestEnv::new();
        let watched = env.mkdir("agents");
        let inbox = env.mkdir("inbox");

        // Before certd starts (found by the start-up scan) ...
        let agent_a = f.leaf(CertSpec::leaf("agent-a").email("agent-a@example.com"));
        files::pem(&watched.join("agent-a.pem"), &[&agent_a]);
        let config = CertdConfig::new(env.store())
            .source(&watched, Some("agent"))
            .write(&env.file("etc/certd.toml"));
        let certd = Certd::start(&env, &config);
        // ... dropped while it runs (found by the watcher) ...
        let agent_b = f.leaf(CertSpec::leaf("agent-b").expires_in_days(10));
        files::der(&watched.join("agent-b.der"), &agent_b);
        // ... and scanned by `certctl scan` through certd.
        let gw = f.leaf(
            CertSpec::leaf("gw.example")
                .dns("gw.example")
                .key(KeyKind::Rsa2048)
                .expires_in_days(200),
        );
        let old = f.leaf(
            CertSpec::leaf("old.example")
                .dns("old.example")
                .valid(-400 * DAY, -10 * DAY - 12 * HOUR),
        );
        // The gateway's bundle holds its private key, as such files often do.
        files::pem_parts(
            &inbox.join("gw.pem"),
            &[
                Pem::Cert(&gw),
                Pem::Key(&gw),
                Pem::Cert(f.intermediate()),
                Pem::Cert(f.root()),
            ],
        );
        files::pem(&inbox.join("old.crt"), &[&old]);
        env.certctl(&["scan", s(&inbox), "--role", "gateway"])
            .success();

        let all = [&agent_a, &agent_b, &gw, &old, f.intermediate(), f.root()];
        let (items, _) = wait_listed(&env, &certd, &all);
        assert_eq!(fingerprints(&items), expected_fingerprints(&all));

        let gw_prefix = gw.fingerprint[..16].to_string();
        let missing = p(&env.root().join("gone/missing.pem"));
        let queries: Vec<Vec<&str>> = vec![
            vec!["list", "--json"],
            vec!["list"],
            vec!["list", "--csv"],
            vec!["list", "--json", "--role", "agent"],
            vec!["list", "--json", "--expiring-within", "30d"],
            vec!["list", "--json", "--expired"],
            vec!["list", "--json", "--issuer", "issuing"],
            vec!["list", "--json", "--name", "gw.EXAMPLE"],
            vec!["show", &gw_prefix, "--json"],
            vec!["show", "agent-b", "--json"],
            vec!["show", "agent-b"],
            vec!["show", "deadbeefdeadbeef"],
            vec!["stats", "--json"],
            vec!["stats"],
            vec!["check"],
            vec!["check", "--json"],
            vec!["check", "--warn", "5d", "--critical", "1d"],
            vec!["scan", &missing, "--json"],
        ];
        let through_certd: Vec<(Answer, RunResult)> =
            queries.iter().map(|q| ask(&env, q)).collect();

        // What certd said is right in itself.
        let (list, run) = &through_certd[0];
        assert_eq!(list.code, 0, "{run}");
        assert_eq!(list.stdout.as_array().map(Vec::len), Some(6), "{run}");
        let (check, run) = &through_certd[14];
        assert_eq!(check.code, 2, "an expired certificate is CRITICAL{run}");
        let (not_found, run) = &through_certd[11];
        assert_eq!(not_found.code, 4, "{run}");
        let (stats, run) = &through_certd[12];
        assert_eq!(stats.stdout["total"], 6, "{run}");
        let (scan, run) = &through_certd[17];
        assert_eq!(scan.code, 3, "{run}");
        assert!(
            run.stderr.starts_with(&format!("error: {missing}: ")),
            "{run}"
        );
        // No answer carries the private key that sat next to a certificate.
        let key_body: String = gw
            .key_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        for (_, run) in &through_certd {
            let all = format!("{}{}", run.stdout, run.stderr).replace(['\n', '\\'], "");
            assert!(
                !all.contains("PRIVATE KEY") && !all.contains(&key_body[..40]),
                "{run}"
            );
        }

        let status_daemon = status_json(&env);
        assert_eq!(status_daemon["mode"], "daemon");
        certd.stop_ok();

        let status_direct = status_json(&env);
        assert_eq!(status_direct["mode"], "direct");
        for field in ["store", "certificates", "endpoints"] {
            assert_eq!(
                status_daemon[field], status_direct[field],
                "status `{field}`"
            );
        }
        for (q, (via_certd, run_certd)) in queries.iter().zip(&through_certd) {
            let (direct, run_direct) = ask(&env, q);
            assert_eq!(
                via_certd,
                &direct,
                "`certctl {}` answered differently through certd and directly\n\
                 --- through certd:{run_certd}\n--- direct:{run_direct}",
                q.join(" ")
            );
        }
    }
}

mod same_errors {
    //! Error lines name the path the user typed, whoever scanned it.
    use super::*;

    #[test]
    fn a_missing_relative_scan_path_is_reported_the_same_through_certd_and_directly() {
        let env = TestEnv::new();
        let config = CertdConfig::new(env.store()).write(&env.file("etc/certd.toml"));
        let certd = Certd::start(&env, &config);
        let scan = || {
            env.cmd()
                .current_dir(env.root())
                .args(["scan", "inbox/missing.pem"])
                .run()
        };
        let via_certd = scan();
        certd.stop_ok();
        let direct = scan();
        direct.expect_code(3);
        via_certd.expect_code(3);
        assert_eq!(
            via_certd.stderr, direct.stderr,
            "`certctl scan inbox/missing.pem` reports the path differently through certd and \
             directly\n--- through certd:{via_certd}\n--- direct:{direct}"
        );
    }
}

// ---- scan and probe are executed by certd ---------------------------------------------------

mod through_certd {
    //! `certctl scan` and `certctl probe` while certd runs: the store is locked by certd, so
    //! certd does the work.
    use super::*;

    /// Issue 16 item 4: `list` on a terminal gets its rows from certd as they are read
    /// (a screenful first) and prints them block by block; the rows are those of the
    /// table printed whole into a pipe, and the header and the count come once.
    #[test]
    fn list_on_a_terminal_prints_certds_streamed_rows() {
        let script = Path::new("/usr/bin/script");
        if !script.is_file() {
            eprintln!("SKIPPED: script(1) is not installed (util-linux), no terminal to test");
            return;
        }
        let env = TestEnv::new();
        let fleet = env.mkdir("fleet");
        certctl_e2e::daemon::write_bulk_pems(&fleet, 150, 50);
        let config = CertdConfig::new(env.store())
            .source(&fleet, Some("site-server"))
            .write(&env.file("etc/certd.toml"));
        let certd = Certd::start(&env, &config);
        wait_for(
            WAIT,
            || format!("the start-up scan{}", certd.describe()),
            || (env.list_json(&[]).len() == 150).then_some(()),
        );
        let piped = env.certctl(&["list", "--expiring-within", "365d"]);
        piped.success();
        // script(1) gives certctl a terminal; what it printed comes back on stdout (with
        // the terminal's CR LF line ends).
        let command = format!(
            "{} --store {} list --expiring-within 365d",
            bin_path("certctl").display(),
            env.store().display()
        );
        let tty = env
            .cmd()
            .program(script)
            .no_store()
            .args(["-qec", &command, "/dev/null"])
            .run();
        tty.success();
        let on_terminal = tty.stdout.replace("\r\n", "\n");
        let rows = |text: &str| -> Vec<String> {
            text.lines()
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect()
        };
        assert_eq!(rows(&on_terminal), rows(&piped.stdout), "{tty}{piped}");
        assert_eq!(on_terminal.matches("EXPIRES").count(), 1, "{tty}");
        assert!(on_terminal.ends_with("150 certificates\n"), "{tty}");
        certd.stop_ok();
    }

    #[test]
    fn scan_and_probe_while_certd_runs_are_executed_by_certd() {
        let env = TestEnv::new();
        let pki = Pki::new(&env);
        let f = &pki.f;
        let config = CertdConfig::new(env.store()).write(&env.file("etc/certd.toml"));
        let certd = Certd::start(&env, &config);

        // A relative path: certctl resolves it against its own directory, not certd's (/).
        let gw = f.leaf(CertSpec::leaf("gw.example").dns("gw.example"));
        let iis = f.leaf(
            CertSpec::leaf("iis.example")
                .dns("iis.example")
                .key(KeyKind::Rsa2048),
        );
        let inbox = env.mkdir("inbox");
        files::pem(&inbox.join("gw.pem"), &[&gw, f.intermediate()]);
        files::der(&inbox.join("iis.der"), &iis);
        let r = env
            .cmd()
            .current_dir(env.root())
            .args(["scan", "inbox", "--role", "gateway", "--json"])
            .run();
        r.success();
        let summary = r.json();
        assert_eq!(summary["files_read"], 2, "{r}");
        assert_eq!(summary["files_failed"], 0, "{r}");
        assert_eq!(summary["certificates_new"], 3, "{r}");
        let (items, run) = env.list(&[]);
        assert_eq!(
            fingerprints(&items),
            expected_fingerprints(&[&gw, &iis, f.intermediate()]),
            "{run}"
        );
        let item = find_fp(&items, &gw.fingerprint);
        assert_cert_json(item, &gw, &run);
        assert_eq!(item["role"], "gateway");
        assert_eq!(
            file_sources(item),
            vec![(p(&inbox.join("gw.pem")), 0, false)]
        );
        assert_eq!(find_fp(&items, &f.intermediate().fingerprint)["role"], "ca");

        // Probe through certd.
        let server = TlsServer::serve(&gw, &[f.intermediate()]);
        let address = server.address();
        let r = env.certctl(&[
            "probe",
            &address,
            "--sni",
            "gw.example",
            "--role",
            "gateway",
            "--trust-store",
            s(&pki.trust),
            "--json",
        ]);
        r.success();
        let report = r.json();
        assert_eq!(report["endpoint"]["address"], address, "{r}");
        assert_eq!(kinds(&report["endpoint"]), Vec::<String>::new(), "{r}");
        assert_eq!(report["error"], Value::Null, "{r}");
        assert_eq!(
            chain_fps(&report["endpoint"]),
            vec![gw.fingerprint.clone(), f.intermediate().fingerprint.clone()],
            "{r}"
        );
        let items = env.list_json(&[]);
        let item = find_fp(&items, &gw.fingerprint);
        assert_eq!(
            tls_sources(item),
            vec![(address.clone(), 0, false)],
            "{item:#}"
        );
        assert_eq!(file_sources(item).len(), 1, "{item:#}");
        let inter = find_fp(&items, &f.intermediate().fingerprint);
        assert_eq!(
            tls_sources(inter),
            vec![(address.clone(), 1, false)],
            "{inter:#}"
        );
        let st = status_json(&env);
        assert_eq!(st["mode"], "daemon");
        assert!(
            !endpoint_in(&st, &address)["last_probe"].is_null(),
            "{st:#}"
        );
        assert!(server.stop() >= 1);
        certd.stop_ok();

        // The results were stored by certd: they are there without it.
        let items = env.list_json(&[]);
        assert_eq!(tls_sources(find_fp(&items, &gw.fingerprint)).len(), 1);
        assert_eq!(items.len(), 3);
    }
}

// ---- live TLS endpoints --------------------------------------------------------------------

mod probes {
    //! Real TLS servers on 127.0.0.1 with good and bad chains; every finding kind, through
    //! certd and directly, on demand and on certd's schedule.
    use super::*;

    /// One endpoint to probe, what it serves and what must be found.
    struct Case {
        name: &'static str,
        server: Option<TlsServer>,
        address: String,
        served: Vec<String>,
        args: Vec<String>,
        want: Vec<&'static str>,
    }

    fn case(
        name: &'static str,
        leaf: &GeneratedCert,
        chain: &[&GeneratedCert],
        trust: &Path,
        expect_issuer: Option<&str>,
        want: &[&'static str],
    ) -> Case {
        let server = TlsServer::serve(leaf, chain);
        let address = server.address();
        let mut served = vec![leaf.fingerprint.clone()];
        served.extend(chain.iter().map(|c| c.fingerprint.clone()));
        Case {
            name,
            args: probe_args(&address, trust, expect_issuer),
            server: Some(server),
            address,
            served,
            want: want.to_vec(),
        }
    }

    fn probe_args(address: &str, trust: &Path, expect_issuer: Option<&str>) -> Vec<String> {
        let mut args: Vec<String> = [
            "probe",
            address,
            "--sni",
            "gw.example",
            "--role",
            "gateway",
            "--timeout",
            "5s",
            "--trust-store",
            s(trust),
            "--json",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        if let Some(issuer) = expect_issuer {
            args.extend(["--expect-issuer".to_string(), issuer.to_string()]);
        }
        args
    }

    /// Runs the probe of `c`, checks what it served and recorded (not the findings: see
    /// [`findings_table`]), returns the report.
    #[track_caller]
    fn probe(env: &TestEnv, c: &Case, mode: &str) -> Value {
        let args: Vec<&str> = c.args.iter().map(String::as_str).collect();
        let r = env.certctl(&args);
        // Issue 14: the exit code says how bad the worst finding is (docs/cli-contract.md).
        const CRITICAL: [&str; 6] = [
            "unreachable",
            "hostname-mismatch",
            "chain-untrusted",
            "expired",
            "not-yet-valid",
            "unexpected-issuer",
        ];
        let code = if c.want.iter().any(|k| CRITICAL.contains(k)) {
            2
        } else if c.want.is_empty() {
            0
        } else {
            1
        };
        r.expect_code(code);
        let report = r.json();
        let endpoint = &report["endpoint"];
        assert_eq!(endpoint["address"], c.address, "{}/{mode}{r}", c.name);
        // The finding kinds are compared for all cases at once by the caller.
        if c.want == ["unreachable"] {
            assert!(report["error"].is_string(), "{} ({mode}){r}", c.name);
            assert_eq!(report["chain"], json!([]), "{} ({mode}){r}", c.name);
        } else {
            assert_eq!(report["error"], Value::Null, "{} ({mode}){r}", c.name);
            assert_eq!(
                chain_fps(endpoint),
                c.served,
                "{} ({mode}): chain{r}",
                c.name
            );
            // Every served certificate is recorded with its tls source.
            let items = env.list_json(&[]);
            for (i, fp) in c.served.iter().enumerate() {
                let item = find_fp(&items, fp);
                assert!(
                    tls_sources(item).contains(&(c.address.clone(), i as u64, false)),
                    "{} ({mode}): certificate {i} has no source tls://{}#{i}: {item:#}",
                    c.name,
                    c.address
                );
                let role = if i == 0 && !item["is_ca"].as_bool().unwrap() {
                    "gateway"
                } else {
                    "ca"
                };
                assert_eq!(item["role"], role, "{} ({mode}): {item:#}", c.name);
            }
        }
        report
    }

    /// One line per case: `NAME: KIND, KIND` (so one assertion shows every mismatch).
    fn findings_table<'a>(names: impl Iterator<Item = &'a str>, kinds: &[Vec<String>]) -> String {
        names
            .zip(kinds)
            .map(|(name, k)| format!("{name}: {}\n", k.join(", ")))
            .collect()
    }

    /// The endpoint state without the probe times and without the findings' wording (which
    /// may quote times relative to the probe; the kinds are compared separately), for
    /// comparing two runs a second or so apart.
    fn comparable(report: &Value) -> Value {
        let mut r = report.clone();
        for k in [
            "last_probe",
            "last_success",
            "last_probe_at",
            "last_success_at",
            // How long the handshake took: measured, so never the same twice.
            "last_probe_duration_us",
        ] {
            r["endpoint"].as_object_mut().unwrap().remove(k);
        }
        if let Some(findings) = r["endpoint"]["findings"].as_array_mut() {
            for f in findings {
                f.as_object_mut().unwrap().remove("detail");
            }
        }
        r.as_object_mut().unwrap().remove("chain");
        r
    }

    #[test]
    fn every_finding_kind_is_reported_the_same_through_certd_and_directly() {
        let env = TestEnv::new();
        let pki = Pki::new(&env);
        let f = &pki.f;
        let inter = f.intermediate();
        let good = pki.gw_leaf(-DAY, 90 * DAY + 12 * HOUR);
        let expired = pki.gw_leaf(-400 * DAY, -10 * DAY - 12 * HOUR);
        let future = pki.gw_leaf(10 * DAY, 400 * DAY);
        let other_host = f.leaf(CertSpec::leaf("other.example").dns("other.example"));
        let self_signed = f.self_signed(CertSpec::leaf("gw.example").dns("gw.example"));
        let proxied = f.issue(
            CertSpec::leaf("gw.example").dns("gw.example"),
            &pki.proxy_ca,
        );
        let proxy = &pki.proxy_ca;
        let mut cases = vec![
            case(
                "good chain",
                &good,
                &[inter],
                &pki.trust,
                Some(ISSUING_CA),
                &[],
            ),
            case(
                "expired leaf",
                &expired,
                &[inter],
                &pki.trust,
                None,
                &["expired"],
            ),
            case(
                "future leaf",
                &future,
                &[inter],
                &pki.trust,
                None,
                &["not-yet-valid"],
            ),
            case(
                "wrong host",
                &other_host,
                &[inter],
                &pki.trust,
                None,
                &["hostname-mismatch"],
            ),
            case(
                "self-signed leaf",
                &self_signed,
                &[],
                &pki.trust,
                None,
                &["self-signed-leaf"],
            ),
            case(
                "no intermediate",
                &good,
                &[],
                &pki.trust,
                None,
                &["incomplete-chain"],
            ),
            case(
                "untrusted root",
                &good,
                &[inter],
                &pki.trust_other,
                None,
                &["chain-untrusted"],
            ),
            case(
                "inspecting proxy (its root trusted)",
                &proxied,
                &[proxy],
                &pki.trust_with_proxy,
                Some(ISSUING_CA),
                &["unexpected-issuer"],
            ),
            case(
                "inspecting proxy",
                &proxied,
                &[proxy],
                &pki.trust,
                Some(ISSUING_CA),
                &["chain-untrusted", "unexpected-issuer"],
            ),
        ];
        let closed = closed_port();
        let address = format!("127.0.0.1:{closed}");
        cases.push(Case {
            name: "closed port",
            server: None,
            args: probe_args(&address, &pki.trust, None),
            address,
            served: Vec::new(),
            want: vec!["unreachable"],
        });

        let config = CertdConfig::new(env.store()).write(&env.file("etc/certd.toml"));
        let certd = Certd::start(&env, &config);
        let through_certd: Vec<Value> = cases.iter().map(|c| probe(&env, c, "certd")).collect();
        let st = status_json(&env);
        let stored: Vec<Vec<String>> = cases
            .iter()
            .map(|c| kinds(endpoint_in(&st, &c.address)))
            .collect();
        certd.stop_ok();
        let direct: Vec<Value> = cases.iter().map(|c| probe(&env, c, "direct")).collect();

        let names = || cases.iter().map(|c| c.name);
        let want: Vec<Vec<String>> = cases
            .iter()
            .map(|c| c.want.iter().map(|k| k.to_string()).collect())
            .collect();
        let got = |reports: &[Value]| -> Vec<Vec<String>> {
            reports.iter().map(|r| kinds(&r["endpoint"])).collect()
        };
        let want = findings_table(names(), &want);
        assert_eq!(
            findings_table(names(), &got(&through_certd)),
            want,
            "findings through certd (left) and expected (right)"
        );
        assert_eq!(
            findings_table(names(), &stored),
            want,
            "findings in `certctl status --json` through certd"
        );
        assert_eq!(
            findings_table(names(), &got(&direct)),
            want,
            "findings in direct mode (left) and expected (right)"
        );
        for ((c, via_certd), direct) in cases.iter().zip(&through_certd).zip(&direct) {
            assert_eq!(
                comparable(via_certd),
                comparable(direct),
                "{}: probe report differs through certd and directly",
                c.name
            );
        }
        for c in &mut cases {
            if let Some(server) = c.server.take() {
                assert!(
                    server.stop() >= 2,
                    "{}: both probes reached the server",
                    c.name
                );
            }
        }
    }

    #[test]
    fn scheduled_probes_record_endpoint_findings_in_status() {
        let env = TestEnv::new();
        let pki = Pki::new(&env);
        let f = &pki.f;
        let expired = pki.gw_leaf(-400 * DAY, -10 * DAY - 12 * HOUR);
        let proxied = f.issue(
            CertSpec::leaf("gw.example").dns("gw.example"),
            &pki.proxy_ca,
        );
        let expired_server = TlsServer::serve(&expired, &[f.intermediate()]);
        let proxy_server = TlsServer::serve(&proxied, &[&pki.proxy_ca]);
        let config = CertdConfig::new(env.store())
            .probe_schedule("* * * * * *")
            .trust_store(&pki.trust_with_proxy)
            .endpoint(EndpointSpec {
                address: expired_server.address(),
                sni: Some("gw.example".into()),
                role: Some("gateway".into()),
                expect_issuer: None,
            })
            .endpoint(EndpointSpec {
                address: proxy_server.address(),
                sni: Some("gw.example".into()),
                role: Some("iis".into()),
                expect_issuer: Some(ISSUING_CA.into()),
            })
            .write(&env.file("etc/certd.toml"));
        let certd = Certd::start(&env, &config);

        let want = [
            (expired_server.address(), vec!["expired"]),
            (proxy_server.address(), vec!["unexpected-issuer"]),
        ];
        let st = wait_for(
            WAIT,
            || {
                format!(
                    "both endpoints probed with findings {want:?}: {:#}{}",
                    status_json(&env),
                    certd.describe()
                )
            },
            || {
                let st = status_json(&env);
                let ok = want.iter().all(|(a, k)| {
                    st["endpoints"].as_array().into_iter().flatten().any(|e| {
                        e["address"] == a.as_str() && !e["last_probe"].is_null() && kinds(e) == *k
                    })
                });
                ok.then_some(st)
            },
        );
        assert_eq!(
            chain_fps(endpoint_in(&st, &expired_server.address())),
            vec![
                expired.fingerprint.clone(),
                f.intermediate().fingerprint.clone()
            ]
        );
        let probe_job = schedule(&st, "probe");
        assert_eq!(probe_job["schedule"], "* * * * * *", "{st:#}");
        // The schedule (not only the start-up probe) runs: the last run moves on.
        let first_run = wait_for(
            WAIT,
            || format!("a finished probe run{}", certd.describe()),
            || schedule(&status_json(&env), "probe")["last_run"].as_i64(),
        );
        wait_for(
            WAIT,
            || {
                format!(
                    "a scheduled probe run after {first_run}{}",
                    certd.describe()
                )
            },
            || {
                let st = status_json(&env);
                let job = schedule(&st, "probe");
                (job["last_run"].as_i64() > Some(first_run) && job["next_run"].is_i64())
                    .then_some(())
            },
        );

        let r = env.certctl(&["status"]);
        r.success()
            .stdout_has(&format!(
                "endpoint: tls://{} — expired",
                expired_server.address()
            ))
            .stdout_has(&format!(
                "endpoint: tls://{} — unexpected-issuer",
                proxy_server.address()
            ));
        let items = env.list_json(&[]);
        let leaf = find_fp(&items, &proxied.fingerprint);
        assert_eq!(leaf["role"], "iis", "{leaf:#}");
        assert_eq!(
            tls_sources(leaf),
            vec![(proxy_server.address(), 0, false)],
            "{leaf:#}"
        );
        let leaf = find_fp(&items, &expired.fingerprint);
        assert_eq!(leaf["role"], "gateway", "{leaf:#}");
        assert_eq!(
            tls_sources(leaf),
            vec![(expired_server.address(), 0, false)],
            "{leaf:#}"
        );
        certd.stop_ok();

        // Stored: direct mode shows the same endpoint states.
        let direct = status_json(&env);
        for (a, k) in &want {
            assert_eq!(kinds(endpoint_in(&direct, a)), *k, "{direct:#}");
        }
    }

    #[test]
    fn a_relative_trust_store_path_means_the_same_through_certd() {
        let env = TestEnv::new();
        let pki = Pki::new(&env);
        let good = pki.gw_leaf(-DAY, 90 * DAY + 12 * HOUR);
        let server = TlsServer::serve(&good, &[pki.f.intermediate()]);
        let address = server.address();
        let args = [
            "probe",
            &address,
            "--sni",
            "gw.example",
            "--trust-store",
            "trust/root.pem",
            "--json",
        ];
        assert!(env.root().join("trust/root.pem").is_file());
        let config = CertdConfig::new(env.store()).write(&env.file("etc/certd.toml"));
        let certd = Certd::start(&env, &config);
        let via_certd = env.cmd().current_dir(env.root()).args(args).run();
        certd.stop_ok();
        let direct = env.cmd().current_dir(env.root()).args(args).run();
        direct.success();
        assert_eq!(
            kinds(&direct.json()["endpoint"]),
            Vec::<String>::new(),
            "{direct}"
        );
        via_certd.success();
        assert_eq!(
            kinds(&via_certd.json()["endpoint"]),
            kinds(&direct.json()["endpoint"]),
            "`--trust-store trust/root.pem` (relative to certctl's directory) gives other \
             findings through certd than directly\n--- through certd:{via_certd}\n--- direct:{direct}"
        );
    }

    /// Issue 14: several endpoints at once, from the command line and a list file, and an
    /// exit code a monitoring system can use: 0 all good, 2 when one is unreachable.
    #[test]
    fn several_endpoints_are_probed_and_the_worst_sets_the_exit_code() {
        let env = TestEnv::new();
        let pki = Pki::new(&env);
        let a = TlsServer::serve(&pki.gw_leaf(-DAY, 90 * DAY), &[pki.f.intermediate()]);
        let b = TlsServer::serve(&pki.gw_leaf(-DAY, 80 * DAY), &[pki.f.intermediate()]);
        let c = TlsServer::serve(&pki.gw_leaf(-DAY, 70 * DAY), &[pki.f.intermediate()]);
        let list = env.file("endpoints.txt");
        files::text(
            &list,
            &format!(
                "# the gateways\n{}\n\n{}  # second site\n",
                b.address(),
                c.address()
            ),
        );
        let common = [
            "--sni",
            "gw.example",
            "--trust-store",
            s(&pki.trust),
            "--timeout",
            "5s",
        ];
        let run = |extra: &[&str]| {
            let mut args = vec!["probe"];
            args.extend_from_slice(extra);
            args.extend_from_slice(&common);
            env.certctl(&args)
        };
        let r = run(&[&a.address(), "--file", s(&list), "--json"]);
        r.expect_code(0);
        let reports = r.json();
        let addresses: Vec<&str> = reports
            .as_array()
            .expect("several endpoints: an array")
            .iter()
            .map(|r| r["endpoint"]["address"].as_str().unwrap())
            .collect();
        assert_eq!(addresses, [a.address(), b.address(), c.address()], "{r}");

        let closed = format!("127.0.0.1:{}", closed_port());
        let r = run(&[&a.address(), &closed]);
        r.expect_code(2)
            .stdout_has(&format!("tls://{}", a.address()))
            .stdout_has(&format!("tls://{closed}"))
            .stdout_has("finding: unreachable");
        // A list file that cannot be read fails before anything is probed.
        let r = run(&["--file", s(&env.root().join("missing.txt"))]);
        r.expect_code(4).stderr_has("missing.txt");
    }

    #[test]
    fn an_unreachable_endpoint_is_a_finding_and_the_last_good_chain_stays() {
        let env = TestEnv::new();
        let pki = Pki::new(&env);
        let f = &pki.f;
        let config = CertdConfig::new(env.store()).write(&env.file("etc/certd.toml"));
        let certd = Certd::start(&env, &config);

        // Nothing listens.
        let closed = format!("127.0.0.1:{}", closed_port());
        let r = env.certctl(&["probe", &closed, "--timeout", "5s", "--json"]);
        r.expect_code(2);
        let report = r.json();
        assert_eq!(kinds(&report["endpoint"]), ["unreachable"], "{r}");
        assert!(
            report["error"]
                .as_str()
                .is_some_and(|e| e.contains("refused")),
            "{r}"
        );
        assert_eq!(chain_fps(&report["endpoint"]), Vec::<String>::new(), "{r}");
        assert_eq!(report["endpoint"]["last_success"], Value::Null, "{r}");
        let r = env.certctl(&["probe", &closed]);
        r.expect_code(2).stdout_has("finding: unreachable");

        // A good probe, then the server goes away.
        let good = pki.gw_leaf(-DAY, 90 * DAY + 12 * HOUR);
        let server = TlsServer::serve(&good, &[f.intermediate()]);
        let address = server.address();
        let args = [
            "probe",
            &address,
            "--sni",
            "gw.example",
            "--trust-store",
            s(&pki.trust),
            "--timeout",
            "5s",
            "--json",
        ];
        let r = env.certctl(&args);
        r.success();
        let first = r.json();
        assert_eq!(kinds(&first["endpoint"]), Vec::<String>::new(), "{r}");
        let good_chain = vec![
            good.fingerprint.clone(),
            f.intermediate().fingerprint.clone(),
        ];
        assert_eq!(chain_fps(&first["endpoint"]), good_chain, "{r}");
        let last_success = first["endpoint"]["last_success"]
            .as_i64()
            .expect("last_success");
        assert_eq!(server.stop(), 1);

        let r = env.certctl(&args);
        r.expect_code(2);
        let second = r.json();
        assert_eq!(kinds(&second["endpoint"]), ["unreachable"], "{r}");
        assert!(second["error"].is_string(), "{r}");
        assert_eq!(
            chain_fps(&second["endpoint"]),
            good_chain,
            "the last good chain stays{r}"
        );
        assert_eq!(second["endpoint"]["last_success"], last_success, "{r}");
        assert!(
            second["endpoint"]["last_probe"].as_i64() >= Some(last_success),
            "{r}"
        );

        let check_store = |mode: &str| {
            let st = status_json(&env);
            assert_eq!(st["mode"], mode);
            let e = endpoint_in(&st, &address);
            assert_eq!(chain_fps(e), good_chain, "{mode}: {st:#}");
            assert_eq!(kinds(e), ["unreachable"], "{mode}: {st:#}");
            assert_eq!(e["last_success"], last_success, "{mode}: {st:#}");
            let items = env.list_json(&[]);
            assert_eq!(
                tls_sources(find_fp(&items, &good.fingerprint)),
                vec![(address.clone(), 0, false)],
                "{mode}: an unreachable endpoint does not make its chain gone"
            );
            assert_eq!(
                tls_sources(find_fp(&items, &f.intermediate().fingerprint)),
                vec![(address.clone(), 1, false)],
                "{mode}"
            );
        };
        check_store("daemon");
        certd.stop_ok();
        check_store("direct");
    }
}

// ---- configuration errors ------------------------------------------------------------------

mod config {
    //! `certd config check`, `certd config example` and `certd run` with a bad file.
    use super::*;

    fn certd(env: &TestEnv, args: &[&str]) -> RunResult {
        env.cmd().bin("certd").no_store().args(args).run()
    }

    /// Asserts a failed run whose stderr has a line starting `FILE:LINE:COLUMN: ` and
    /// containing `what`.
    #[track_caller]
    fn assert_diagnostic(r: &RunResult, file: &Path, position: &str, what: &str) {
        assert!(r.code() != 0, "a bad configuration must fail{r}");
        let prefix = format!("{}:{position}: ", file.display());
        assert!(
            r.stderr
                .lines()
                .any(|l| l.contains(&prefix) && l.contains(what)),
            "stderr should have a line with {prefix:?} and {what:?}{r}"
        );
    }

    #[test]
    fn config_errors_name_file_line_and_column() {
        let env = TestEnv::new();
        let store = p(env.store());
        let bad_cron = env.file("etc/bad-cron.toml");
        files::text(
            &bad_cron,
            &format!("store = \"{store}\"\n[scan]\nschedule = \"61 * * * *\"\n"),
        );
        let r = certd(&env, &["config", "check", s(&bad_cron)]);
        assert_diagnostic(&r, &bad_cron, "3:12", "scan.schedule");

        let typo = env.file("etc/typo.toml");
        files::text(
            &typo,
            &format!("store = \"{store}\"\n\n[probe]\n  timout = \"5s\"\n"),
        );
        let r = certd(&env, &["config", "check", s(&typo)]);
        assert_diagnostic(&r, &typo, "4:3", "timout");

        let several = env.file("etc/several.toml");
        files::text(
            &several,
            "store = \"relative/store\"\n[[source]]\npath = \"/srv/certs\"\nrole = \"router\"\n\
             [[endpoint]]\naddress = \"gw.example\"\n",
        );
        let r = certd(&env, &["config", "check", s(&several)]);
        assert_diagnostic(&r, &several, "1:9", "absolute");
        assert_diagnostic(&r, &several, "4:8", "router");
        assert_diagnostic(&r, &several, "6:11", "port");

        // `certd run` refuses to start with it, saying why on stderr.
        let r = certd(&env, &["run", "--config", s(&bad_cron)]);
        assert_diagnostic(&r, &bad_cron, "3:12", "scan.schedule");
        assert!(
            !env.store().exists(),
            "no store is created for a bad configuration{r}"
        );
        let missing = env.root().join("etc/missing.toml");
        let r = certd(&env, &["run", "--config", s(&missing)]);
        assert!(r.code() != 0, "{r}");
        r.stderr_has(s(&missing));

        // The example is valid as printed.
        let r = certd(&env, &["config", "example"]);
        r.success();
        let example = env.file("etc/example.toml");
        files::text(&example, &r.stdout);
        let r = certd(&env, &["config", "check", s(&example)]);
        r.success().stdout_has("OK");
        assert!(r.stderr.is_empty(), "{r}");

        // And so is what the tests write.
        let ours = CertdConfig::new(env.store())
            .source(&env.mkdir("certs"), Some("iis"))
            .endpoint(EndpointSpec {
                address: "127.0.0.1:8443".into(),
                ..Default::default()
            })
            .probe_schedule("* * * * * *")
            .write(&env.file("etc/ours.toml"));
        certd(&env, &["config", "check", s(&ours)])
            .success()
            .stdout_has("1 sources, 1 endpoints");
    }

    /// Issue 18: one run of `certd config check` names every problem of the file — unknown
    /// keys and tables, a table missing a key, and wrong values — not only the first, so an
    /// admin fixes a file in one pass. `certctl policy check` does the same for policies.
    #[test]
    fn config_and_policy_checks_report_every_error_of_a_file() {
        let env = TestEnv::new();
        let bad = env.file("etc/bad.toml");
        files::text(
            &bad,
            "store = \"relative/store\"\n\
             [scan]\n\
             schedule = \"not a cron\"\n\
             sched = 5\n\
             [[source]]\n\
             path = \"/srv/certs\"\n\
             role = \"wizard\"\n\
             pfx = 1\n\
             [mystery]\n\
             x = 1\n\
             [smtp]\n\
             port = 25\n\
             [metrics]\n\
             listen = \"0.0.0.0:9\"\n",
        );
        let r = certd(&env, &["config", "check", s(&bad)]);
        assert_diagnostic(&r, &bad, "1:9", "absolute");
        assert_diagnostic(&r, &bad, "3:12", "scan.schedule");
        assert_diagnostic(&r, &bad, "4:1", "unknown field `sched`");
        assert_diagnostic(&r, &bad, "7:8", "wizard");
        assert_diagnostic(&r, &bad, "8:1", "unknown field `pfx`");
        assert_diagnostic(&r, &bad, "9:2", "unknown field `mystery`");
        assert_diagnostic(&r, &bad, "11:1", "missing field `host`");
        assert_diagnostic(&r, &bad, "14:10", "loopback");
        // In file order, one per line.
        let lines: Vec<usize> = r
            .stderr
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("{}:", bad.display())))
            .map(|l| l.split(':').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(lines, [1, 3, 4, 7, 8, 9, 11, 14], "{r}");

        let policies = env.mkdir("policies");
        files::text(
            &policies.join("fleet.toml"),
            "[[policy]]\nname = \"no-recipients\"\nroles = [\"gateway\"]\nwarn = \"30d\"\n\
             critical = \"7d\"\n\
             [[policy]]\nname = \"typo\"\nroles = [\"iis\"]\nwarn = \"30d\"\n\
             critical = \"7d\"\nremind = [\"ops@example.com\"]\nrecipients = []\nwran = \"1d\"\n\
             [[policy]]\nname = \"bad-value\"\nroles = [\"agent\"]\nwarn = \"30 parsecs\"\n\
             critical = \"7d\"\nremind = [\"ops@example.com\"]\nrecipients = []\n",
        );
        let r = env
            .cmd()
            .no_store()
            .args(["policy", "check", s(&policies)])
            .run();
        let file = policies.join("fleet.toml");
        assert_diagnostic(&r, &file, "1:1", "missing field");
        assert_diagnostic(&r, &file, "13:1", "unknown field `wran`");
        assert_diagnostic(&r, &file, "17:8", "parsecs");
    }

    /// Issue 13: a duration such as `9223372036854775807s` passed `config check` and made
    /// certd panic when it added it to a clock. It is refused at its line and column.
    #[test]
    fn absurd_durations_are_refused_at_their_line_and_column() {
        let env = TestEnv::new();
        let store = p(env.store());
        for (key, value) in [
            ("timeout", "9223372036854775807s"),
            ("timeout", "106751991167300d"),
            ("timeout", "36526d"),
            ("timeout", "5300w"),
        ] {
            let file = env.file("etc/huge.toml");
            files::text(
                &file,
                &format!("store = \"{store}\"\n[probe]\n{key} = \"{value}\"\n"),
            );
            let r = certd(&env, &["config", "check", s(&file)]);
            assert!(!r.stderr.contains("panicked"), "{r}");
            assert_diagnostic(&r, &file, "3:11", "probe.timeout");
        }
    }
}

// ---- signals -------------------------------------------------------------------------------

mod signals {
    //! SIGHUP reloads (a bad file is rejected), SIGTERM stops cleanly even mid-scan.
    use super::*;

    #[test]
    fn sighup_rejects_a_bad_config_and_applies_a_good_one() {
        let f = CertFactory::new();
        let env = TestEnv::new();
        let first = env.mkdir("certs/agents");
        let second = env.mkdir("certs/iis");
        let config_path = env.file("etc/certd.toml");
        let config = CertdConfig::new(env.store()).source(&first, Some("agent"));
        config.write(&config_path);
        let certd = Certd::start(&env, &config_path);
        let pid = certd.pid();

        // A broken file: rejected, the running configuration stays.
        files::text(
            &config_path,
            &format!("store = \"{}\"\n[scan\nwatch = true\n", p(env.store())),
        );
        certd.reload();
        let log = certd.wait_for_log("reload rejected", WAIT);
        let line = log.lines().find(|l| l.contains("reload rejected")).unwrap();
        assert!(
            line.contains(&format!("{}:2:", config_path.display())),
            "the rejection names FILE:LINE:COLUMN: {line}"
        );
        let st = status_json(&env);
        assert_eq!(st["mode"], "daemon", "{st:#}");
        assert_eq!(st["daemon"]["pid"], pid, "{st:#}");
        assert_eq!(
            st["daemon"]["sources"],
            json!([{"path": p(&first), "role": "agent", "watched": true}]),
            "{st:#}"
        );
        // ... and still works.
        let agent = f.leaf(CertSpec::leaf("agent-1"));
        files::pem(&first.join("agent-1.pem"), &[&agent]);
        wait_listed(&env, &certd, &[&agent]);

        // A good new file with a second source: applied.
        config
            .clone()
            .source(&second, Some("iis"))
            .write(&config_path);
        certd.reload();
        wait_for(
            WAIT,
            || format!("the second source in `certctl status`{}", certd.describe()),
            || {
                let st = status_json(&env);
                (st["daemon"]["sources"]
                    == json!([
                        {"path": p(&first), "role": "agent", "watched": true},
                        {"path": p(&second), "role": "iis", "watched": true},
                    ]))
                .then_some(())
            },
        );
        certd.wait_for_log("configuration reloaded", WAIT);
        let r = env.certctl(&["status"]);
        r.success()
            .stdout_has(&format!("source: {} (role iis, watched)", p(&second)));
        // The new folder is watched.
        let site = f.leaf(CertSpec::leaf("iis-1.example").dns("iis-1.example"));
        files::pem(&second.join("iis-1.pem"), &[&site]);
        let (items, _) = wait_listed(&env, &certd, &[&site]);
        assert_eq!(find_fp(&items, &site.fingerprint)["role"], "iis");
        assert_eq!(status_json(&env)["daemon"]["pid"], pid);
        certd.stop_ok();
    }

    #[test]
    fn sigterm_mid_scan_exits_0_and_leaves_the_store_intact() {
        const FILES: usize = 3000;
        let env = TestEnv::new();
        let fleet = env.mkdir("fleet");
        let begun = Instant::now();
        let all = certctl_e2e::daemon::write_bulk_pems(&fleet, FILES, 100);
        assert_eq!(all.len(), FILES);
        eprintln!("{FILES} files written in {:?}", begun.elapsed());

        let config = CertdConfig::new(env.store())
            .source(&fleet, Some("agent"))
            .write(&env.file("etc/certd.toml"));
        let certd = Certd::start(&env, &config);
        // The start-up scan is running now.
        let stopped = certd.stop();
        assert_eq!(
            stopped.status.code(),
            Some(0),
            "certd should exit 0 on SIGTERM mid-scan (after {:?})\n{}",
            stopped.elapsed,
            stopped.log
        );
        assert!(stopped.log.contains("store flushed"), "{}", stopped.log);
        assert!(!env.store().join("certd.sock").exists(), "{}", stopped.log);

        // The store opens directly and holds a consistent part of the fleet.
        let (items, run) = env.list(&[]);
        let before: BTreeSet<String> = fingerprints(&items).into_iter().collect();
        assert!(before.is_subset(&all), "{run}");
        eprintln!(
            "SIGTERM right after certd was ready: it exited {:?} later with {} of {FILES} \
             certificates stored",
            stopped.elapsed,
            before.len()
        );
        let r = env.certctl(&["stats", "--json"]);
        r.success();
        assert_eq!(r.json()["total"], before.len(), "{r}");

        // Scanning again completes the inventory: nothing was recorded as read that was not.
        let r = env
            .cmd()
            .args(["scan", s(&fleet), "--role", "agent", "--json"])
            .timeout(Duration::from_secs(120))
            .run();
        r.success();
        let summary = r.json();
        assert_eq!(summary["files_failed"], 0, "{r}");
        assert_eq!(summary["certificates_new"], FILES - before.len(), "{r}");
        let (items, run) = env.list(&[]);
        let after: BTreeSet<String> = fingerprints(&items).into_iter().collect();
        assert_eq!(after.len(), FILES, "{run}");
        assert!(after == all, "every generated certificate is listed");
        assert!(items.iter().all(|c| c["role"] == "agent"));
    }
}

// ---- one certd per store, private socket ---------------------------------------------------

mod exclusive {
    //! One certd per store: a second one is refused, the control socket is private, and
    //! a stale socket left by a killed certd is harmless.
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

    #[test]
    fn a_second_certd_on_the_same_store_is_refused() {
        let env = TestEnv::new();
        let config = CertdConfig::new(env.store())
            .source(&env.mkdir("a"), None)
            .write(&env.file("etc/a.toml"));
        let first = Certd::start(&env, &config);
        let other = CertdConfig::new(env.store())
            .source(&env.mkdir("b"), Some("iis"))
            .write(&env.file("etc/b.toml"));
        let mut second = Certd::spawn(&env, &other);
        let status = second.wait_exit(WAIT).unwrap_or_else(|| {
            panic!(
                "a second certd on the same store kept running{}",
                second.describe()
            )
        });
        let log = second.log();
        assert!(!status.success(), "{status}{}", second.describe());
        let lower = log.to_lowercase();
        assert!(
            lower.contains("in use") || lower.contains("already"),
            "the refusal says why{}",
            second.describe()
        );
        assert!(
            lower.contains(&p(env.store()).to_lowercase()),
            "and names the store: {log}"
        );

        // The first one is untouched.
        let st = status_json(&env);
        assert_eq!(st["daemon"]["pid"], first.pid(), "{st:#}");
        assert_eq!(st["daemon"]["config"], p(&config), "{st:#}");
        assert!(first.socket().exists());
        first.stop_ok();
    }

    #[test]
    fn the_control_socket_is_private_and_lives_in_the_store() {
        let env = TestEnv::new();
        let config = CertdConfig::new(env.store()).write(&env.file("etc/certd.toml"));
        let certd = Certd::start(&env, &config);
        let socket = certd.socket();
        assert_eq!(socket.parent(), Some(env.store()));
        let meta = std::fs::metadata(&socket).expect("the control socket exists");
        assert!(
            meta.file_type().is_socket(),
            "{} is a socket",
            socket.display()
        );
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o600,
            "socket mode is {:o}",
            meta.permissions().mode() & 0o777
        );
        assert_eq!(meta.uid(), rustix::process::geteuid().as_raw());
        let store_mode = std::fs::metadata(env.store()).unwrap().permissions().mode() & 0o777;
        assert_eq!(store_mode, 0o700, "store folder mode is {store_mode:o}");
        assert_eq!(status_json(&env)["store"], p(env.store()));
        // SIGINT (Ctrl-C in a terminal) stops it as cleanly as SIGTERM.
        let stopped = certd.stop_ok_with(Signal::INT);
        assert!(stopped.log.contains("store flushed"), "{}", stopped.log);
    }

    use certctl_e2e::hostile::{
        can_run_as_nobody, certctl_as_nobody, chmod, chown_tree, not_owned_by, setpriv_nobody,
        NOBODY,
    };

    /// certd runs as the current user; `certctl` as another user (`nobody`, through
    /// setpriv) is refused at each layer with the socket named and "permission denied",
    /// and never falls back to opening the store itself: the store folder (0700), then the
    /// socket's mode (0600, the folder opened up), then certd's peer-credential check (the
    /// socket opened up too).
    #[test]
    fn another_user_is_refused_at_the_control_socket_and_never_opens_the_store() {
        if !can_run_as_nobody() {
            return;
        }
        let f = CertFactory::new();
        let env = TestEnv::new();
        let watched = env.mkdir("watched");
        let leaf = f.leaf(CertSpec::leaf("private.example"));
        files::pem(&watched.join("private.pem"), &[&leaf]);
        let config = CertdConfig::new(env.store())
            .source(&watched, None)
            .write(&env.file("etc/certd.toml"));
        let certd = Certd::start(&env, &config);
        wait_listed(&env, &certd, &[&leaf]);
        let socket = certd.socket();
        // `nobody` may cross the test's temp dir, not more.
        chmod(env.root(), 0o711);
        let as_nobody = |args: &[&str]| certctl_as_nobody(&env, env.store(), args);
        let refused = |r: &RunResult, layer: &str| {
            assert!(
                !r.status.success(),
                "{layer}: certctl as another user must fail{r}"
            );
            assert!(
                r.stderr.contains(&format!("control socket {}", p(&socket)))
                    && r.stderr.contains("permission denied"),
                "{layer}: the refusal names the socket and says permission denied{r}"
            );
            assert!(
                !r.stdout.contains(&leaf.fingerprint),
                "{layer}: nothing of the store is shown{r}"
            );
        };

        // 1. The store folder (0700) keeps the socket out of reach.
        for args in [
            &["status"][..],
            &["list", "--json"],
            &["scan", "/nonexistent"],
        ] {
            refused(&as_nobody(args), &format!("store folder 0700, {args:?}"));
        }
        // 2. The folder opened up: the socket's own mode (0600) refuses the connection, and
        //    the store's files (0600) are not opened instead.
        chmod(env.store(), 0o711);
        refused(&as_nobody(&["list", "--json"]), "socket 0600");
        // 3. The socket opened up too: certd's peer-credential check refuses the peer.
        chmod(&socket, 0o666);
        let r = as_nobody(&["list", "--json"]);
        refused(&r, "peer credentials");
        assert!(r.stderr.contains("uid 0"), "says whom certd serves{r}");
        // certd logs the refusal (its log line may land a moment after certctl's answer).
        certd.wait_for_log(
            "refused a control connection from another user",
            Duration::from_secs(10),
        );

        // certd itself refuses the peer, not only certctl's check: a valid request sent by
        // hand gets no answer as `nobody`, and an answer as the owner.
        let by_hand = |nobody: bool| -> String {
            // Prints the first bytes of the answer, or `closed` when certd hangs up.
            const CLIENT: &str = "import socket, sys\n\
                s = socket.socket(socket.AF_UNIX)\n\
                s.settimeout(20)\n\
                s.connect(sys.argv[1])\n\
                try:\n    \
                    s.sendall(b'{\"request\":\"stats\"}\\n')\n    \
                    print(s.recv(16) or 'closed')\n\
                except (BrokenPipeError, ConnectionResetError):\n    \
                    print('closed')\n";
            let mut cmd = std::process::Command::new(if nobody { "setpriv" } else { PYTHON });
            if nobody {
                cmd.args(setpriv_nobody()).arg(PYTHON);
            }
            let out = cmd.args(["-c", CLIENT, s(&socket)]).output().unwrap();
            assert!(out.status.success(), "python3 client: {out:?}");
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        // The system's Python (one under root's home is out of `nobody`'s reach).
        const PYTHON: &str = "/usr/bin/python3";
        if Path::new(PYTHON).exists() {
            assert_eq!(by_hand(true), "closed", "no answer for another user");
            assert!(by_hand(false).starts_with("b'{"), "an answer for the owner");
        } else {
            eprintln!("skipped the by-hand protocol check: no {PYTHON}");
        }

        // The owner still gets answers through certd, and nothing was written by `nobody`.
        chmod(&socket, 0o600);
        chmod(env.store(), 0o700);
        env.certctl(&["status"])
            .success()
            .stdout_has("mode: daemon");
        assert_eq!(
            fingerprints(&env.list_json(&[])),
            vec![leaf.fingerprint.clone()]
        );
        let foreign = not_owned_by(env.store(), 0);
        assert!(foreign.is_empty(), "files not owned by root: {foreign:?}");
        certd.stop_ok();
    }

    /// Root may read every store, but opening another user's store (its certd stopped) would
    /// leave root-owned files in it that the owner's certd cannot open: certctl refuses and
    /// says whose store it is; the owner's store stays usable and untouched.
    #[test]
    fn root_does_not_open_another_users_store() {
        if !can_run_as_nobody() {
            return;
        }
        let f = CertFactory::new();
        let env = TestEnv::new();
        chmod(env.root(), 0o711);
        let certs = env.mkdir("certs");
        let leaf = f.leaf(CertSpec::leaf("theirs.example"));
        files::pem(&certs.join("theirs.pem"), &[&leaf]);
        chmod(&certs, 0o755);
        chmod(&certs.join("theirs.pem"), 0o644);
        let home = env.mkdir("nobody");
        chown_tree(&home, NOBODY, NOBODY);
        let store = home.join("store");
        let theirs = |args: &[&str]| certctl_as_nobody(&env, &store, args);
        let certs_arg = p(&certs);
        theirs(&["scan", &certs_arg]).success();

        for args in [&["list", "--json"][..], &["scan", &certs_arg], &["status"]] {
            let r = env
                .cmd()
                .no_store()
                .arg("--store")
                .arg(&store)
                .args(args)
                .run();
            assert!(!r.status.success(), "root must not open it ({args:?}){r}");
            assert!(
                r.stderr
                    .contains(&format!("the store {} belongs to uid {NOBODY}", p(&store)))
                    && r.stderr.contains("sudo -u"),
                "the refusal says whose store it is and what to run{r}"
            );
        }
        let foreign = not_owned_by(&store, NOBODY);
        assert!(
            foreign.is_empty(),
            "files not owned by the store's owner: {foreign:?}"
        );
        let listed = theirs(&["list", "--json"]);
        listed.success();
        assert!(listed.stdout.contains(&leaf.fingerprint), "{listed}");
    }

    #[test]
    fn a_killed_certd_leaves_a_stale_socket_that_neither_certctl_nor_the_next_certd_minds() {
        let f = CertFactory::new();
        let env = TestEnv::new();
        let watched = env.mkdir("watched");
        let leaf = f.leaf(CertSpec::leaf("agent-k"));
        files::pem(&watched.join("agent-k.pem"), &[&leaf]);
        let config = CertdConfig::new(env.store())
            .source(&watched, Some("agent"))
            .write(&env.file("etc/certd.toml"));
        let certd = Certd::start(&env, &config);
        wait_listed(&env, &certd, &[&leaf]);
        let socket = certd.socket();
        let stopped = certd.stop_with(Signal::KILL);
        assert_eq!(stopped.status.code(), None, "killed by a signal");
        assert!(socket.exists(), "SIGKILL leaves the socket file behind");

        // certctl falls back to the store itself ...
        let r = env.certctl(&["status"]);
        r.success().stdout_has("mode: direct");
        let items = env.list_json(&[]);
        assert_eq!(fingerprints(&items), expected_fingerprints(&[&leaf]));
        // ... and a new certd replaces the stale socket.
        let certd = Certd::start(&env, &config);
        let items = env.list_json(&[]);
        assert_eq!(fingerprints(&items), expected_fingerprints(&[&leaf]));
        assert_eq!(status_json(&env)["daemon"]["pid"], certd.pid());
        certd.stop_ok();
    }
}

mod logs {
    //! certd's log on stderr.
    use super::*;

    /// A log redirected to a file (or journald) is plain text: no ANSI colour sequences,
    /// which would land in the file as `ESC[32m` noise.
    #[test]
    fn a_redirected_log_has_no_colour_escapes() {
        let env = TestEnv::new();
        let config = CertdConfig::new(env.store())
            .source(&env.mkdir("watched"), Some("agent"))
            .write(&env.file("etc/certd.toml"));
        let certd = Certd::start(&env, &config);
        certd.wait_for_log("scan finished", WAIT);
        let stopped = certd.stop_ok();
        assert!(stopped.log.contains("certd started"), "{}", stopped.log);
        assert!(
            !stopped.log.contains('\x1b'),
            "escape sequences in a redirected log:\n{:?}",
            stopped.log
        );
    }

    #[test]
    fn log_format_json_writes_one_object_per_line() {
        let env = TestEnv::new();
        let config = CertdConfig::new(env.store())
            .source(&env.mkdir("watched"), Some("agent"))
            .write(&env.file("etc/certd.toml"));
        let certd = Certd::start_with(&env, &config, &["--log-format", "json"]);
        certd.wait_for_log("scan finished", WAIT);
        let stopped = certd.stop_ok();
        let lines: Vec<Value> = stopped
            .log
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l}\n{}", stopped.log))
            })
            .collect();
        assert!(lines.len() >= 3, "{}", stopped.log);
        for l in &lines {
            assert!(l["level"].is_string() && l["timestamp"].is_string(), "{l}");
        }
        let messages: Vec<&str> = lines
            .iter()
            .filter_map(|l| l["fields"]["message"].as_str())
            .collect();
        for want in ["certd started", "scan finished", "store flushed"] {
            assert!(
                messages.iter().any(|m| m.contains(want)),
                "no {want:?} message in {messages:?}"
            );
        }
        // A job's lines name the job (a log shipper filters on it) and what they concern.
        let scan = lines
            .iter()
            .find(|l| l["fields"]["message"] == "scan finished")
            .unwrap();
        assert_eq!(scan["span"]["job"], "scan", "{scan}");
        assert!(scan["fields"]["source"].is_string(), "{scan}");
    }
}
