//! End-to-end tests of certd's fleet duties: Prometheus metrics served over HTTP
//! (`[metrics] listen`), scraped with a plain TCP client and checked against the scanned
//! fleet; the configuration check of the listen address; the deny list of
//! `[agents] deny_list` kept current by certd after its scans.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use certctl_e2e::daemon::{
    free_loopback_address, http_get, http_request, status_json, wait_for, Certd, CertdConfig,
};
use certctl_e2e::files;
use certctl_e2e::*;

use certctl_e2e::prometheus::{parse, Series};

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn get(m: &Series, name: &str, pairs: &[(&str, &str)]) -> Option<f64> {
    m.get(&(name.to_string(), labels(pairs))).copied()
}

fn count(m: &Series, name: &str) -> usize {
    m.keys().filter(|(n, _)| n == name).count()
}

/// certd serves the inventory's metrics on a loopback port: the values are the scanned
/// fleet's, agents are aggregated (per-agent series after a reload with `per_agent`),
/// certd's job series are there, other paths are 404, and the listener closes with certd.
#[test]
fn certd_serves_metrics_over_http_matching_the_scanned_fleet() {
    let env = TestEnv::new();
    let f = CertFactory::new();
    let gw = f.leaf(CertSpec::leaf("gw.example").expires_in_days(20));
    let iis = f.leaf(CertSpec::leaf("www.example").expires_in_days(200));
    let eph: Vec<GeneratedCert> = (0..3)
        .map(|i| f.leaf(CertSpec::leaf(&format!("agent-{i}")).valid(-HOUR, 5 * HOUR)))
        .collect();
    let perm = f.leaf(CertSpec::leaf("agent-0").expires_in_days(200));
    files::pem(&env.file("gw/gw.pem"), &[&gw]);
    files::pem(&env.file("iis/www.pem"), &[&iis]);
    for (i, c) in eph.iter().chain([&perm]).enumerate() {
        files::pem(&env.file(&format!("agents/{i}.pem")), &[c]);
    }
    let address = free_loopback_address();
    let config = CertdConfig::new(env.store())
        .source(&env.root().join("gw"), Some("gateway"))
        .source(&env.root().join("iis"), Some("iis"))
        .source(&env.root().join("agents"), Some("agent"))
        .metrics(&address);
    let config_path = config.write(&env.file("etc/certd.toml"));
    let certd = Certd::start(&env, &config_path);
    // The start-up scan.
    wait_for(
        Duration::from_secs(30),
        || format!("the start-up scan{}", certd.describe()),
        || {
            let st = status_json(&env);
            let scan = st["daemon"]["schedules"]
                .as_array()?
                .iter()
                .find(|j| j["job"] == "scan")?
                .clone();
            scan["last_run"].as_i64().map(|_| ())
        },
    );
    // The start-up prune and CRL upkeep ran too (nothing to do is a success).
    for job in ["retention", "crl-upkeep"] {
        wait_for(
            Duration::from_secs(30),
            || format!("the start-up {job} job{}", certd.describe()),
            || {
                let st = status_json(&env);
                let j = st["daemon"]["schedules"]
                    .as_array()?
                    .iter()
                    .find(|j| j["job"] == job)?
                    .clone();
                j["last_run"].as_i64().map(|_| ())
            },
        );
    }

    let answer = http_get(&address, "/metrics");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        answer.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert_eq!(
        answer.header("content-length"),
        Some(answer.body.len().to_string().as_str())
    );
    let m = parse(&answer.body);
    let body = &answer.body;

    // Per-certificate notAfter for the gateway and the IIS certificate, none for agents.
    let gw_source = format!("{}#0", s(&env.root().join("gw/gw.pem")));
    assert_eq!(
        get(
            &m,
            "certctl_certificate_not_after_seconds",
            &[
                ("cn", "gw.example"),
                ("fingerprint", &gw.fingerprint),
                ("role", "gateway"),
                ("source", &gw_source),
            ]
        ),
        Some(gw.not_after as f64),
        "{body}"
    );
    let iis_source = format!("{}#0", s(&env.root().join("iis/www.pem")));
    assert_eq!(
        get(
            &m,
            "certctl_certificate_not_after_seconds",
            &[
                ("cn", "www.example"),
                ("fingerprint", &iis.fingerprint),
                ("role", "iis"),
                ("source", &iis_source),
            ]
        ),
        Some(iis.not_after as f64),
        "{body}"
    );
    assert_eq!(
        count(&m, "certctl_certificate_not_after_seconds"),
        2,
        "{body}"
    );
    // Counts by role and status, agents aggregated by credential kind and status.
    let certs = |role: &str, status: &str| {
        get(
            &m,
            "certctl_certificates",
            &[("role", role), ("status", status)],
        )
    };
    assert_eq!(certs("gateway", "expiring"), Some(1.0), "{body}");
    assert_eq!(certs("iis", "valid"), Some(1.0), "{body}");
    assert_eq!(certs("agent", "expiring"), Some(3.0), "{body}");
    assert_eq!(certs("agent", "valid"), Some(1.0), "{body}");
    assert_eq!(count(&m, "certctl_certificates"), 4, "{body}");
    let agents = |kind: &str, status: &str| {
        get(
            &m,
            "certctl_agent_certificates",
            &[("credential_kind", kind), ("status", status)],
        )
    };
    assert_eq!(agents("ephemeral", "expiring"), Some(3.0), "{body}");
    assert_eq!(agents("permanent", "valid"), Some(1.0), "{body}");
    assert_eq!(count(&m, "certctl_agent_certificates"), 2, "{body}");
    assert_eq!(get(&m, "certctl_agents_pending", &[]), Some(3.0), "{body}");
    assert_eq!(get(&m, "certctl_agents_blocked", &[]), Some(0.0), "{body}");
    // certd's own series: the scan ran and succeeded; no SMTP trouble.
    let scanned_at = get(
        &m,
        "certctl_job_last_run_timestamp_seconds",
        &[("job", "scan")],
    )
    .unwrap_or_else(|| panic!("no scan run time in{body}"));
    assert!((scanned_at - now() as f64).abs() < 300.0, "{body}");
    assert_eq!(
        get(&m, "certctl_job_last_run_success", &[("job", "scan")]),
        Some(1.0),
        "{body}"
    );
    // A job's own words for success count as success (a prune says "ok: 0 removed in 0
    // batches", the CRL upkeep "ok: 0 CRLs re-signed", which once read as failures).
    for job in ["retention", "crl-upkeep"] {
        assert_eq!(
            get(&m, "certctl_job_last_run_success", &[("job", job)]),
            Some(1.0),
            "{job}: {body}"
        );
    }
    assert_eq!(get(&m, "certctl_smtp_failing", &[]), Some(0.0), "{body}");
    assert_eq!(
        get(&m, "certctl_reminders_pending", &[]),
        Some(0.0),
        "{body}"
    );

    // `certctl metrics` through certd prints the same series.
    let r = env.certctl(&["metrics"]);
    r.success();
    let cli = parse(&r.stdout);
    assert_eq!(
        cli.keys().collect::<Vec<_>>(),
        m.keys().collect::<Vec<_>>(),
        "{r}\nvs HTTP:\n{body}"
    );

    // /metrics, and the dashboard's / and /certificate/FP (tests/tests/dashboard.rs).
    for path in ["/index.html", "/metricsx", "/api/metrics", "/certificate"] {
        let a = http_get(&address, path);
        assert_eq!(a.status, 404, "{path}: {a:?}");
    }
    let a = http_request(&address, "POST", "/metrics").expect("POST");
    assert_eq!(a.status, 405, "{a:?}");
    let a = http_request(&address, "HEAD", "/metrics").expect("HEAD");
    assert_eq!((a.status, a.body.as_str()), (200, ""), "{a:?}");

    // per_agent after a reload: one series per agent certificate too.
    config.clone().metrics_per_agent(true).write(&config_path);
    certd.reload();
    certd.wait_for_log("configuration reloaded", Duration::from_secs(20));
    let m = wait_for(
        Duration::from_secs(20),
        || "per-agent series after the reload".into(),
        || {
            let m = parse(&http_get(&address, "/metrics").body);
            (count(&m, "certctl_certificate_not_after_seconds") == 6).then_some(m)
        },
    );
    assert_eq!(
        get(
            &m,
            "certctl_certificate_not_after_seconds",
            &[
                ("cn", "agent-0"),
                ("fingerprint", &perm.fingerprint),
                ("role", "agent"),
                (
                    "source",
                    &format!("{}#0", s(&env.root().join("agents/3.pem")))
                ),
            ]
        ),
        Some(perm.not_after as f64)
    );

    // The listener goes away with certd.
    certd.stop_ok();
    assert!(
        http_request(&address, "GET", "/metrics").is_err(),
        "metrics still served after certd stopped"
    );
}

/// `certd config check` refuses a non-loopback listen address at its line and column, and
/// accepts it with `allow_non_loopback = true`.
#[test]
fn config_check_rejects_a_non_loopback_metrics_address() {
    let env = TestEnv::new();
    let store = s(env.store()).to_string();
    let file = env.file("etc/certd.toml");
    files::text(
        &file,
        &format!(
            "store = \"{store}\"\n\n[metrics]\nper_agent = false\nlisten  = \"0.0.0.0:9477\"\n"
        ),
    );
    let r = env
        .cmd()
        .bin("certd")
        .no_store()
        .args(["config", "check", s(&file)])
        .run();
    assert_eq!(r.code(), 2, "{r}");
    let want = format!(
        "{}:5:11: metrics.listen `0.0.0.0:9477` is not a loopback address",
        file.display()
    );
    assert!(
        r.stderr.lines().any(|l| l.starts_with(&want)),
        "want {want}{r}"
    );
    assert!(r.stderr.contains("allow_non_loopback = true"), "{r}");

    files::text(
        &file,
        &format!(
            "store = \"{store}\"\n[metrics]\nlisten = \"0.0.0.0:9477\"\nallow_non_loopback = true\n"
        ),
    );
    env.cmd()
        .bin("certd")
        .no_store()
        .args(["config", "check", s(&file)])
        .run()
        .success();
}

/// With `[agents] deny_list`, `agents block` through certd writes that file without
/// `--deny-list`, and a new certificate of the blocked agent dropped into a watched folder
/// is in the list after certd's scan; a scan that changes nothing leaves the file alone.
#[test]
fn certd_rewrites_the_configured_deny_list_after_a_scan() {
    let env = TestEnv::new();
    let f = CertFactory::new();
    let bad1 = f.leaf(CertSpec::leaf("agent-bad").expires_in_days(100));
    let bad2 = f.leaf(CertSpec::leaf("agent-bad").valid(-HOUR, 5 * HOUR));
    let good = f.leaf(CertSpec::leaf("agent-good").expires_in_days(100));
    let agents_dir = env.mkdir("agents");
    files::pem(&agents_dir.join("bad1.pem"), &[&bad1]);
    files::pem(&agents_dir.join("good.pem"), &[&good]);
    let deny = env.mkdir("gateway").join("deny.txt");
    let config = CertdConfig::new(env.store())
        .source(&agents_dir, Some("agent"))
        .deny_list(&deny)
        .write(&env.file("etc/certd.toml"));
    let certd = Certd::start(&env, &config);
    wait_for(
        Duration::from_secs(30),
        || format!("agent-bad pending{}", certd.describe()),
        || {
            let r = env.certctl(&["agents", "pending", "--json"]);
            r.stdout.contains("agent-bad").then_some(())
        },
    );

    // No --deny-list: certd's configured path.
    let r = env.certctl(&["agents", "block", "agent-bad", "--json"]);
    r.success();
    assert_eq!(r.json()["deny_list"], s(&deny), "{r}");
    assert_eq!(
        std::fs::read_to_string(&deny).unwrap(),
        format!("{}\n", bad1.fingerprint)
    );

    // A new certificate of the blocked agent appears in a watched folder.
    files::pem(&agents_dir.join("bad2.pem"), &[&bad2]);
    let mut want = [bad1.fingerprint.clone(), bad2.fingerprint.clone()];
    want.sort();
    let want = want.join("\n") + "\n";
    wait_for(
        Duration::from_secs(30),
        || {
            format!(
                "the deny list to hold both certificates, has {:?}{}",
                std::fs::read_to_string(&deny).unwrap_or_default(),
                certd.describe()
            )
        },
        || (std::fs::read_to_string(&deny).ok()? == want).then_some(()),
    );
    certd.wait_for_log("deny list rewritten", Duration::from_secs(10));
    let mode = std::fs::metadata(&deny).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o644);

    // A scan that finds nothing new leaves the file as it is (same inode: not rewritten).
    let inode = std::fs::metadata(&deny).unwrap().ino();
    env.certctl(&["scan", s(&agents_dir), "--role", "agent", "--full"])
        .success();
    assert_eq!(std::fs::metadata(&deny).unwrap().ino(), inode);
    assert_eq!(std::fs::read_to_string(&deny).unwrap(), want);

    // `certctl scan` through certd (a folder certd does not watch) updates it at once.
    let bad3 = f.leaf(CertSpec::leaf("agent-bad").expires_in_days(30));
    let elsewhere = env.mkdir("elsewhere");
    files::pem(&elsewhere.join("bad3.pem"), &[&bad3]);
    env.certctl(&["scan", s(&elsewhere), "--role", "agent"])
        .success();
    let mut all = [
        bad1.fingerprint.clone(),
        bad2.fingerprint.clone(),
        bad3.fingerprint.clone(),
    ];
    all.sort();
    let want = all.join("\n") + "\n";
    assert_eq!(std::fs::read_to_string(&deny).unwrap(), want);

    // --deny-list still wins (and is remembered); certd keeps the configured one current.
    let other = env.root().join("other-deny.txt");
    env.certctl(&["agents", "deny-list", "--deny-list", s(&other)])
        .success();
    assert_eq!(std::fs::read_to_string(&other).unwrap(), want);
    certd.stop_ok();
}

/// SMTP failures show up in certd's metrics: a reminder pass against a mail server that
/// is down sets `certctl_smtp_failing`, the failure time and the pending reminders.
#[test]
fn smtp_failures_show_up_in_certds_metrics() {
    let env = TestEnv::new();
    let gw = CertFactory::new().leaf(CertSpec::leaf("gw.contoso.example").expires_in_days(20));
    files::pem(&env.file("gw/gw.pem"), &[&gw]);
    let policies = env.mkdir("policies");
    files::text(
        &policies.join("p.toml"),
        "[[policy]]\nname = \"public\"\nroles = [\"gateway\"]\nremind = [\"30d\"]\n\
         warn = \"30d\"\ncritical = \"7d\"\nrecipients = [\"ops@contoso.example\"]\n",
    );
    // Nobody listens on this port: every delivery fails at once.
    let dead = free_loopback_address();
    let (host, port) = dead.rsplit_once(':').unwrap();
    let address = free_loopback_address();
    let config = env.file("etc/certd.toml");
    files::text(
        &config,
        &format!(
            "store = \"{}\"\n[scan]\nschedule = \"off\"\nwatch = false\n[probe]\nschedule = \"off\"\n\
             [smtp]\nhost = \"{host}\"\nport = {port}\nsecurity = \"none\"\n\
             from = \"certd@contoso.example\"\ntimeout = \"5s\"\n\
             [reminders]\nschedule = \"0 8 * * 1-5\"\npolicies = \"{}\"\n\
             [metrics]\nlisten = \"{address}\"\n",
            s(env.store()),
            s(&policies)
        ),
    );
    let certd = Certd::start(&env, &config);
    let m = parse(&http_get(&address, "/metrics").body);
    assert_eq!(get(&m, "certctl_smtp_failing", &[]), Some(0.0));
    assert_eq!(
        count(&m, "certctl_smtp_last_failure_timestamp_seconds"),
        0,
        "no failure yet"
    );

    env.certctl(&["scan", s(&env.root().join("gw")), "--role", "gateway"])
        .success();
    let r = env
        .cmd()
        .arg("--config")
        .arg(&config)
        .args(["remind", "--now"])
        .run();
    r.expect_code(4);

    let body = http_get(&address, "/metrics").body;
    let m = parse(&body);
    assert_eq!(get(&m, "certctl_smtp_failing", &[]), Some(1.0), "{body}");
    let failed_at = get(&m, "certctl_smtp_last_failure_timestamp_seconds", &[])
        .unwrap_or_else(|| panic!("no failure time in{body}"));
    assert!((failed_at - now() as f64).abs() < 300.0, "{body}");
    assert_eq!(
        get(&m, "certctl_reminders_pending", &[]),
        Some(1.0),
        "{body}"
    );
    certd.stop_ok();
}

/// certd refuses to start when it cannot listen on `[metrics] listen`, and says why.
#[test]
fn certd_refuses_to_start_when_the_metrics_address_is_taken() {
    let env = TestEnv::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = taken.local_addr().unwrap().to_string();
    let config = CertdConfig::new(env.store())
        .metrics(&address)
        .write(&env.file("etc/certd.toml"));
    let mut certd = Certd::spawn(&env, &config);
    let status = certd
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("certd kept running{}", certd.describe()));
    assert!(!status.success(), "{}", certd.describe());
    let log = certd.log();
    assert!(
        log.contains(&format!("cannot serve metrics on {address}")),
        "{log}"
    );
    assert!(!certd.socket().exists(), "control socket left behind");
    drop(taken);
}
