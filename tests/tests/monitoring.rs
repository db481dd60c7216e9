//! What ships for monitoring systems works with them: the Prometheus alert rules load and
//! fire as their unit tests say (`promtool`), the exposition passes `promtool check
//! metrics`, and every series the alert rules and the Grafana dashboard use is one certd
//! really serves (a rename would break them silently otherwise).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use certctl_e2e::daemon::{free_loopback_address, http_get, wait_for, Certd, CertdConfig};
use certctl_e2e::files;
use certctl_e2e::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn promtool() -> Option<PathBuf> {
    let p = PathBuf::from("/usr/bin/promtool");
    if p.is_file() {
        Some(p)
    } else {
        eprintln!("SKIPPED: promtool is not installed (scripts/setup installs it when it can)");
        None
    }
}

/// The `certctl_*` names an expression file mentions.
fn names_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("certctl_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_lowercase() || bytes[end] == b'_') {
            end += 1;
        }
        let before_ok =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        if before_ok {
            out.insert(text[start..end].to_string());
        }
        i = end;
    }
    out
}

/// A TLS server on 127.0.0.1 probed (kept running while the result lives) and a closed
/// port probed: the two endpoints every probe series must tell apart.
fn live_and_dead_endpoints_probed(env: &TestEnv) -> (certctl_e2e::tls::TlsServer, String) {
    let f = CertFactory::new();
    let leaf = f.leaf(
        CertSpec::leaf("localhost")
            .dns("localhost")
            .expires_in_days(40),
    );
    let server = certctl_e2e::tls::TlsServer::serve(&leaf, &[f.intermediate()]);
    let dead = format!("127.0.0.1:{}", certctl_e2e::tls::closed_port());
    env.certctl(&["probe", &server.address(), "--timeout", "5s"]);
    env.certctl(&["probe", &dead, "--timeout", "2s"]);
    (server, dead)
}

/// `certctl_probe_success{endpoint}` as blackbox_exporter's `probe_success`: 1 for an
/// endpoint that served its chain, 0 for one that did not answer.
#[test]
fn probe_success_says_which_endpoint_answered() {
    let env = TestEnv::new();
    let (server, dead) = live_and_dead_endpoints_probed(&env);
    let r = env.certctl(&["metrics"]);
    r.success();
    let value = |endpoint: &str| {
        sample(
            &r.stdout,
            &format!("certctl_probe_success{{endpoint=\"{endpoint}\"}}"),
        )
    };
    assert_eq!(value(&server.address()).as_deref(), Some("1"), "{r}");
    assert_eq!(value(&dead).as_deref(), Some("0"), "{r}");
    assert!(
        r.stdout
            .contains("# TYPE certctl_probe_last_timestamp_seconds gauge"),
        "{r}"
    );
}

/// The value of the series `name{labels}` (the whole label text, e.g. `endpoint="a:1"`).
fn sample(text: &str, series: &str) -> Option<String> {
    let prefix = format!("{series} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
}

/// `certctl_probe_duration_seconds{endpoint}` as blackbox_exporter's
/// `probe_duration_seconds`: how long the last probe of an endpoint took, answered or not.
#[test]
fn probe_duration_is_how_long_the_last_probe_took() {
    let env = TestEnv::new();
    let (server, dead) = live_and_dead_endpoints_probed(&env);
    let r = env.certctl(&["metrics"]);
    r.success();
    for endpoint in [server.address(), dead.clone()] {
        let value = sample(
            &r.stdout,
            &format!("certctl_probe_duration_seconds{{endpoint=\"{endpoint}\"}}"),
        )
        .unwrap_or_else(|| panic!("no probe duration for {endpoint}:\n{r}"));
        let seconds: f64 = value.parse().unwrap_or_else(|_| panic!("{value}: {r}"));
        // Seconds, not milliseconds: within the probe's timeout, and a TLS handshake
        // takes some time.
        assert!((0.0..=5.0).contains(&seconds), "{endpoint}: {seconds}\n{r}");
        if endpoint == server.address() {
            assert!(seconds > 0.0, "{endpoint}: {seconds}\n{r}");
        }
    }
    let help = r
        .stdout
        .lines()
        .filter(|l| l.starts_with("# TYPE certctl_probe_duration_seconds "))
        .collect::<Vec<_>>();
    assert_eq!(help, ["# TYPE certctl_probe_duration_seconds gauge"], "{r}");
}

/// `certctl_source_read_errors{source}` per source folder next to the unlabelled total
/// (a released series: it stays the total).
#[test]
fn source_read_errors_per_source_next_to_the_total() {
    let env = TestEnv::new();
    let f = CertFactory::new();
    let fine = f.leaf(CertSpec::leaf("fine.example.com").expires_in_days(120));
    let good = env.mkdir("good");
    let bad = env.mkdir("bad");
    let other = env.mkdir("other");
    files::pem(&good.join("fine.pem"), &[&fine]);
    files::bad_base64_pem(&bad.join("broken.pem"));
    files::pem(&bad.join("fine.pem"), &[&fine]);
    files::bad_base64_pem(&other.join("one.pem"));
    files::bad_base64_pem(&other.join("two.pem"));
    for dir in [&good, &bad, &other] {
        env.certctl(&["scan", s(dir)]);
    }
    let r = env.certctl(&["metrics"]);
    r.success();
    let text = &r.stdout;
    assert_eq!(
        sample(text, "certctl_source_read_errors").as_deref(),
        Some("3"),
        "{r}"
    );
    let of = |dir: &Path| {
        sample(
            text,
            &format!("certctl_source_read_errors{{source=\"{}\"}}", dir.display()),
        )
    };
    assert_eq!(of(&bad).as_deref(), Some("1"), "{r}");
    assert_eq!(of(&other).as_deref(), Some("2"), "{r}");
    assert_eq!(of(&good), None, "{r}");
    assert_eq!(
        text.matches("# TYPE certctl_source_read_errors gauge\n")
            .count(),
        1,
        "{r}"
    );
    assert!(
        text.contains("# HELP certctl_source_read_errors ") && text.contains("total"),
        "{r}"
    );
}

#[test]
fn the_alert_rules_load_and_fire_as_their_tests_say() {
    let Some(promtool) = promtool() else { return };
    let dir = repo().join("contrib/prometheus");
    for args in [
        vec!["check", "rules", "certctl-alerts.yml"],
        vec!["test", "rules", "certctl-alerts.test.yml"],
    ] {
        let out = Command::new(&promtool)
            .args(&args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn certds_metrics_pass_promtool_and_cover_the_rules_and_the_dashboard() {
    let env = TestEnv::new();
    let f = CertFactory::new();
    let gw = f.leaf(CertSpec::leaf("gw.contoso.example").expires_in_days(20));
    let agent = f.leaf(CertSpec::leaf("agent-1").valid(-3600, 5 * 3600));
    files::pem(&env.file("gw/gw.pem"), &[&gw]);
    files::pem(&env.file("agents/a.pem"), &[&agent]);
    // A file that does not read, so the labelled read-error series is served too.
    files::bad_base64_pem(&env.file("gw/broken.pem"));
    let address = free_loopback_address();
    let config = CertdConfig::new(env.store())
        .source(&env.root().join("gw"), Some("gateway"))
        .source(&env.root().join("agents"), Some("agent"))
        .metrics(&address)
        .write(&env.file("etc/certd.toml"));
    let certd = Certd::start(&env, &config);
    wait_for(
        Duration::from_secs(30),
        || format!("the start-up scan{}", certd.describe()),
        || (env.list_json(&[]).len() == 2).then_some(()),
    );
    let metrics = http_get(&address, "/metrics");
    assert_eq!(metrics.status, 200, "{metrics:?}");
    // Per certificate, next to notAfter: notBefore and an info series with the issuer and
    // serial (bounded: agents' certificates only with per_agent).
    let body = &metrics.body;
    let not_before = format!(
        "certctl_certificate_not_before_timestamp_seconds{{fingerprint=\"{}\"}} {}\n",
        gw.fingerprint, gw.not_before
    );
    assert!(body.contains(&not_before), "{body}");
    let info = body
        .lines()
        .find(|l| {
            l.starts_with(&format!(
                "certctl_certificate_info{{fingerprint=\"{}\"",
                gw.fingerprint
            ))
        })
        .unwrap_or_else(|| panic!("no info series for the gateway:\n{body}"));
    assert!(
        info.contains(&format!("issuer=\"{}\"", gw.issuer)),
        "{info}"
    );
    assert!(
        info.contains("revoked=\"false\"") && info.ends_with(" 1"),
        "{info}"
    );
    assert!(
        !body.contains(&format!(
            "certctl_certificate_info{{fingerprint=\"{}\"",
            agent.fingerprint
        )),
        "{body}"
    );
    let served: BTreeSet<String> = metrics
        .body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_string)
        .collect();
    for file in [
        "contrib/prometheus/certctl-alerts.yml",
        "contrib/grafana/certctl-dashboard.json",
    ] {
        let text = std::fs::read_to_string(repo().join(file)).unwrap();
        let used = names_in(&text);
        assert!(!used.is_empty(), "{file} uses no certctl series");
        let missing: Vec<&String> = used.difference(&served).collect();
        assert!(
            missing.is_empty(),
            "{file} uses series certd does not serve: {missing:?}"
        );
    }
    // The dashboard is JSON Grafana can import: panels with queries.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("contrib/grafana/certctl-dashboard.json")).unwrap(),
    )
    .unwrap();
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.iter().all(|p| p["targets"][0]["expr"].is_string()));

    let Some(promtool) = promtool() else { return };
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let complaints = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && complaints.trim().is_empty(),
        "promtool check metrics:\n{complaints}\n{}",
        metrics.body
    );
}
