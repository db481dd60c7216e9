//! The dashboard as an admin meets it: certd serves `GET /` and a page per certificate on
//! its loopback metrics listener; the timeline's bars are the store's counts; hostile
//! names are escaped; `certctl report NAME --html FILE` writes the same overview to a file;
//! and a real headless Chromium loads the page without a console error and screenshots it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use certctl_e2e::daemon::{
    free_loopback_address, http_get, http_request_with_host, wait_for, Certd, CertdConfig,
};
use certctl_e2e::files;
use certctl_e2e::*;
use serde_json::Value;

const DAY: i64 = 86_400;
const WEEK: i64 = 7 * DAY;

/// A fleet with something in every part of the page, and certd serving it.
struct Site<'e> {
    address: String,
    _certd: Certd<'e>,
    gateway: GeneratedCert,
}

fn start(env: &TestEnv) -> Site<'_> {
    let f = CertFactory::new();
    let gateway = f.leaf(CertSpec::leaf("gw.contoso.example").expires_in_days(3));
    let iis = f.leaf(CertSpec::leaf("www.contoso.example").expires_in_days(20));
    let site = f.leaf(CertSpec::leaf("site-a.contoso.example").expires_in_days(45));
    let expired = f.leaf(CertSpec::leaf("old.contoso.example").expires_in_days(-2));
    // A name an attacker chose: it must come out as text, never as markup.
    let hostile =
        f.leaf(CertSpec::leaf("<script>alert(1)</script>\"><img src=x>").expires_in_days(10));
    let permanent_agent = f.leaf(CertSpec::leaf("agent-7").expires_in_days(60));
    let ephemeral: Vec<GeneratedCert> = (0..3)
        .map(|i| f.leaf(CertSpec::leaf(&format!("agent-{i}")).valid(-3600, 5 * 3600)))
        .collect();
    files::pem(&env.file("gw/gw.pem"), &[&gateway]);
    files::pem(&env.file("iis/www.pem"), &[&iis]);
    files::pem(&env.file("iis/hostile.pem"), &[&hostile]);
    files::pem(&env.file("site/site.pem"), &[&site]);
    files::pem(&env.file("site/old.pem"), &[&expired]);
    files::pem(&env.file("agents/perm.pem"), &[&permanent_agent]);
    for (i, c) in ephemeral.iter().enumerate() {
        files::pem(&env.file(&format!("agents/eph-{i}.pem")), &[c]);
    }
    let address = free_loopback_address();
    let config = CertdConfig::new(env.store())
        .source(&env.root().join("gw"), Some("gateway"))
        .source(&env.root().join("iis"), Some("iis"))
        .source(&env.root().join("site"), Some("site-server"))
        .source(&env.root().join("agents"), Some("agent"))
        .metrics(&address)
        .write(&env.file("etc/certd.toml"));
    let certd = Certd::start(env, &config);
    wait_for(
        Duration::from_secs(30),
        || format!("the start-up scan{}", certd.describe()),
        || (env.list_json(&[]).len() == 9).then_some(()),
    );
    Site {
        address,
        _certd: certd,
        gateway,
    }
}

/// `data-week`/`data-role`/`data-count` of every bar, and the page's own clock.
fn bars(html: &str) -> (i64, BTreeMap<(usize, String), u64>) {
    let attr = |tag: &str, name: &str| -> Option<String> {
        let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
        let end = tag[start..].find('"')? + start;
        Some(tag[start..end].to_string())
    };
    let svg_start = html.find("<svg id=\"timeline\"").expect("a timeline");
    let generated: i64 = attr(&html[svg_start..], "data-generated-at")
        .expect("data-generated-at")
        .parse()
        .unwrap();
    let mut out = BTreeMap::new();
    for piece in html.split("<rect").skip(1) {
        let tag = &piece[..piece.find('>').unwrap()];
        let week: usize = attr(tag, "data-week").unwrap().parse().unwrap();
        let role = attr(tag, "data-role").unwrap();
        let count: u64 = attr(tag, "data-count").unwrap().parse().unwrap();
        out.insert((week, role), count);
    }
    (generated, out)
}

/// What the bars must say, computed from `certctl list --json` independently of the
/// dashboard: deployed, not revoked, not ephemeral, expiring within 13 weeks of `t`.
fn expected_bars(items: &[Value], t: i64) -> BTreeMap<(usize, String), u64> {
    let mut out = BTreeMap::new();
    for c in items {
        let not_after = parse_rfc3339(c["not_after"].as_str().unwrap());
        if c["credential_kind"] == "ephemeral" || c["revoked"] == true {
            continue;
        }
        if not_after < t || not_after >= t + 13 * WEEK {
            continue;
        }
        let week = ((not_after - t) / WEEK) as usize;
        *out.entry((week, c["role"].as_str().unwrap().to_string()))
            .or_default() += 1;
    }
    out
}

#[test]
fn certd_serves_a_dashboard_whose_timeline_matches_the_store() {
    let env = TestEnv::new();
    let site = start(&env);
    let page = http_get(&site.address, "/");
    assert_eq!(page.status, 200, "{page:?}");
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let csp = page.header("content-security-policy").unwrap_or_default();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let html = &page.body;

    // The timeline: the same counts as the inventory says.
    let (generated, shown) = bars(html);
    let expected = expected_bars(&env.list_json(&[]), generated);
    assert_eq!(
        shown, expected,
        "timeline bars against `certctl list --json`"
    );
    assert!(
        shown.contains_key(&(0, "gateway".into())) && shown.contains_key(&(8, "agent".into())),
        "{shown:?}"
    );

    // Needs attention: the expired one, the critical gateway, the 20-day IIS site; each a
    // link to its own page. Ephemeral agents are not listed.
    for name in [
        "old.contoso.example",
        "gw.contoso.example",
        "www.contoso.example",
    ] {
        assert!(html.contains(name), "{name} missing from the page");
    }
    assert!(html.contains("data-state=\"expired\""), "{html}");
    let attention = &html[html
        .find("<table id=\"attention\">")
        .expect("attention table")..];
    let attention = &attention[..attention.find("</table>").unwrap()];
    assert!(
        !attention.contains(">agent-0<"),
        "ephemeral credentials listed"
    );
    // No registrations were imported: the agents await approval.
    assert!(html.contains("<table id=\"pending\">"), "{html}");
    let link = format!("/certificate/{}", site.gateway.fingerprint);
    assert!(html.contains(&format!("href=\"{link}\"")), "{html}");

    // The hostile name is text.
    assert!(
        !html.contains("<script>"),
        "markup from a certificate got through"
    );
    assert!(
        !html.contains("<img src=x>"),
        "markup from a certificate got through"
    );
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );

    // The certificate's page: its facts, where it is deployed, its history.
    let one = http_get(&site.address, &link);
    assert_eq!(one.status, 200, "{one:?}");
    assert!(one.body.contains("gw.contoso.example"), "{}", one.body);
    assert!(one
        .body
        .contains(&s(&env.root().join("gw/gw.pem")).to_string()));
    assert!(one.body.contains("first-seen"), "{}", one.body);
    assert!(
        one.body.contains(&site.gateway.not_after_rfc3339()),
        "{}",
        one.body
    );
    // An unknown or malformed fingerprint is a 404; the Host check applies to the pages too.
    let unknown = http_get(&site.address, &format!("/certificate/{}", "0".repeat(64)));
    assert_eq!(unknown.status, 404, "{unknown:?}");
    let malformed = http_get(&site.address, "/certificate/..%2f..%2fetc%2fpasswd");
    assert_eq!(malformed.status, 404, "{malformed:?}");
    let rebound =
        http_request_with_host(&site.address, "GET", "/", "evil.example").expect("answer");
    assert_eq!(rebound.status, 421, "{rebound:?}");
}

#[test]
fn report_html_writes_the_overview_and_the_report_to_a_private_file() {
    let env = TestEnv::new();
    let site = start(&env);
    let out = env.root().join("ticket/expiring.html");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    env.certctl(&["report", "expiring", "--html", s(&out)])
        .success()
        .stdout_has(s(&out));
    let html = std::fs::read_to_string(&out).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    assert!(html.contains("<svg id=\"timeline\""), "{html}");
    assert!(html.contains("<table id=\"report\">"), "{html}");
    assert!(html.contains("gw.contoso.example"), "{html}");
    // A file has no server behind it: no links to certificate pages.
    assert!(!html.contains("href=\"/certificate/"), "{html}");
    assert!(html.contains(&site.gateway.fingerprint), "{html}");
    assert!(!html.contains("<script>"), "{html}");
    // --html with --json is a usage error.
    env.certctl(&["report", "expiring", "--html", s(&out), "--json"])
        .expect_code(64);
}

/// Chromium, when the machine has it (scripts/setup installs it): the page loads with no
/// console error (a CSP violation would be one), the timeline is drawn, and a screenshot
/// lands under target/ for review.
#[test]
fn a_real_browser_renders_the_dashboard_without_console_errors() {
    let Some(chromium) = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
    else {
        eprintln!("SKIPPED: chromium is not installed (scripts/setup installs it when it can)");
        return;
    };
    let env = TestEnv::new();
    let site = start(&env);
    let url = format!("http://{}/", site.address);
    let screenshot = screenshot_path();
    let profile = env.mkdir("chromium-profile");
    let run = |extra: &[&str]| -> (String, String) {
        let mut child = Command::new(&chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--enable-logging=stderr",
                "--v=0",
                "--window-size=1280,1400",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .arg(&url)
            .env("HOME", env.home())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if child.try_wait().expect("wait for chromium").is_some() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("chromium did not finish within 90 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let out = child.wait_with_output().expect("chromium output");
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (dom, log) = run(&["--dump-dom"]);
    let console: Vec<&str> = log.lines().filter(|l| l.contains("CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:#?}");
    assert!(
        dom.contains("<svg id=\"timeline\""),
        "no timeline in the DOM:\n{dom}"
    );
    let (_, shown) = bars(&dom);
    assert!(!shown.is_empty(), "no bars in the DOM");
    let _ = std::fs::remove_file(&screenshot);
    let (_, log) = run(&[&format!("--screenshot={}", screenshot.display())]);
    let size = std::fs::metadata(&screenshot).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "no screenshot at {} ({size} bytes): {log}",
        screenshot.display()
    );
    eprintln!("dashboard screenshot: {}", screenshot.display());
}

/// `target/dashboard.png`, next to the built binaries.
fn screenshot_path() -> PathBuf {
    let bin = bin_path("certctl");
    let target: &Path = bin
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("."));
    target.join("dashboard.png")
}
