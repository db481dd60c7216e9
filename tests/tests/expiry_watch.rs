//! Never silently miss an expiry (issue 14), end to end: stalled ephemeral renewals and
//! their grace, the outcome of the last delivery in `status`, deleted tracked files,
//! `forget` for probed endpoints, RFC 3339 times next to Unix seconds, lax certificate
//! dates, relative `track` paths and DNs compared with openssl over a real corpus.
//!
//! Everything runs the real binaries on files generated here, with the test clock
//! `CERTCTL_NOW` where time has to pass.

use std::path::PathBuf;

use certctl_e2e::smtp::SmtpServer;
use certctl_e2e::*;
use serde_json::Value;

const PLATFORM: &str = "platform@contoso.example";

/// A policy for ephemeral agent credentials like the shipped one, with `grace` when given.
fn agent_policies(env: &TestEnv, grace: Option<&str>) -> PathBuf {
    let dir = env.mkdir(&format!("policies-{}", grace.unwrap_or("default")));
    let grace = grace.map_or(String::new(), |g| format!("grace = \"{g}\"\n"));
    std::fs::write(
        dir.join("agents.toml"),
        format!(
            "[[policy]]\nname = \"agents-ephemeral\"\nroles = [\"agent\"]\ncredential_kinds = [\"ephemeral\"]\n\
             remind = []\nwarn = \"0s\"\ncritical = \"0s\"\n{grace}recipients = [\"{PLATFORM}\"]\n"
        ),
    )
    .unwrap();
    dir
}

/// An agent fleet of 6-hour credentials, one file per agent (renewals replace the file):
///
/// - `agent-healthy`: valid for 5 more hours;
/// - `agent-stalled`: its only credential expired 24 hours ago (stopped renewing);
/// - `agent-late`: expired 2 hours ago, within the default grace (12 hours);
/// - `agent-renewed`: an old credential left in `agent-renewed-old.pem` (expired 30 hours
///   ago), and its newest, valid one in `agent-renewed.pem`.
struct AgentFleet {
    env: TestEnv,
    stalled: GeneratedCert,
}

impl AgentFleet {
    fn new() -> AgentFleet {
        let env = TestEnv::new();
        let f = CertFactory::new();
        let dir = env.mkdir("agents");
        let cred = |cn: &str, from: i64| f.leaf(CertSpec::leaf(cn).valid(from, from + 6 * HOUR));
        let healthy = cred("agent-healthy", -HOUR);
        let stalled = cred("agent-stalled", -30 * HOUR);
        let late = cred("agent-late", -8 * HOUR);
        let renewed_old = cred("agent-renewed", -36 * HOUR);
        let renewed = cred("agent-renewed", -HOUR);
        files::pem(&dir.join("agent-healthy.pem"), &[&healthy]);
        files::pem(&dir.join("agent-stalled.pem"), &[&stalled]);
        files::pem(&dir.join("agent-late.pem"), &[&late]);
        files::pem(&dir.join("agent-renewed-old.pem"), &[&renewed_old]);
        files::pem(&dir.join("agent-renewed.pem"), &[&renewed]);
        env.certctl(&["scan", s(&dir), "--role", "agent"]).success();
        AgentFleet { env, stalled }
    }

    /// `certctl ARGS` with the clock `offset` seconds from now.
    fn at(&self, offset: i64, args: &[&str]) -> RunResult {
        self.env
            .cmd()
            .args(args)
            .env("CERTCTL_NOW", rfc3339(now() + offset))
            .run()
    }
}

fn stalled_agents(report: &Value) -> Vec<String> {
    let mut agents: Vec<String> = report["stalled_renewals"]
        .as_array()
        .unwrap_or_else(|| panic!("no stalled_renewals in {report}"))
        .iter()
        .map(|s| s["agent"].as_str().unwrap().to_string())
        .collect();
    agents.sort();
    agents
}

#[test]
fn check_fails_for_an_agent_that_stopped_renewing_and_not_for_one_within_grace() {
    let fleet = AgentFleet::new();
    let r = fleet.at(0, &["check"]);
    r.expect_code(2)
        .stdout_has("CRITICAL")
        .stdout_has("1 stalled renewals (first: agent agent-stalled");
    let perfdata = r.stdout.trim_end();
    assert!(perfdata.ends_with(" stalled=1"), "{r}");

    let json = fleet.at(0, &["check", "--json"]);
    json.expect_code(2);
    let v = json.json();
    assert_eq!(stalled_agents(&v), vec!["agent-stalled"], "{json}");
    let st = &v["stalled_renewals"][0];
    assert_eq!(
        st["fingerprint_sha256"], fleet.stalled.fingerprint,
        "{json}"
    );
    assert_eq!(st["not_after"], fleet.stalled.not_after_rfc3339(), "{json}");
    assert_eq!(st["grace"], "12h", "{json}");
    assert_eq!(st["grace_policy"], Value::Null, "{json}");
    assert_eq!(v["stalled_renewals_total"], 1);

    // --role filters: stalled renewals are agents'.
    fleet.at(0, &["check", "--role", "gateway"]).success();

    // A policy's grace of 1 hour: the agent 2 hours past expiry is stalled too.
    let strict = agent_policies(&fleet.env, Some("1h"));
    let v = fleet
        .at(0, &["check", "--json", "--policies", s(&strict)])
        .json();
    assert_eq!(stalled_agents(&v), vec!["agent-late", "agent-stalled"]);
    assert_eq!(v["stalled_renewals"][0]["grace_policy"], "agents-ephemeral");

    // 18 hours later nobody renewed: every agent's newest credential is past the grace.
    let later = fleet.at(18 * HOUR, &["check"]);
    later.expect_code(2);
    assert!(later.stdout.trim_end().ends_with(" stalled=4"), "{later}");
}

#[test]
fn remind_dry_run_lists_the_stalled_agent_only() {
    let fleet = AgentFleet::new();
    let policies = agent_policies(&fleet.env, None);
    let r = fleet.at(0, &["remind", "--dry-run", "--policies", s(&policies)]);
    r.success()
        .stdout_has(&format!("To: {PLATFORM}"))
        .stdout_has("agent-stalled")
        .stdout_has(&format!(
            "renewal stalled: newest credential of agent agent-stalled expired at {}",
            fleet.stalled.not_after_rfc3339()
        ))
        .stdout_has("dry run: 1 digests with 1 reminders would be sent");
    for quiet in ["agent-late", "agent-renewed", "agent-healthy"] {
        assert!(!r.stdout.contains(quiet), "{quiet} was reminded about:{r}");
    }

    // policy explain says which agent stalled, and that the late one is within its grace.
    fleet
        .at(
            0,
            &[
                "policy",
                "explain",
                "agent-stalled",
                "--policies",
                s(&policies),
            ],
        )
        .success()
        .stdout_has("STALLED: newest credential of agent agent-stalled");
    let late = fleet.at(
        0,
        &[
            "policy",
            "explain",
            "agent-late",
            "--policies",
            s(&policies),
            "--json",
        ],
    );
    late.success();
    let v = late.json();
    assert_eq!(v[0]["stalled_renewal"]["stalled"], false, "{late}");
    assert_eq!(v[0]["stalled_renewal"]["grace"], "12h", "{late}");
}

// ---- status: the outcome of the last delivery ---------------------------------------------

const OPS: &str = "ops@contoso.example";
const PKI: &str = "pki@contoso.example";

/// A store with a gateway certificate 20 days from expiry, a policy that reminds two
/// recipients at 30 days, a real SMTP server and a certd configuration naming both.
struct Mailing {
    env: TestEnv,
    smtp: SmtpServer,
    config: PathBuf,
}

impl Mailing {
    fn new() -> Mailing {
        let env = TestEnv::new();
        let smtp = SmtpServer::start(&env.mkdir("smtp"), None);
        let policies = env.mkdir("policies");
        std::fs::write(
            policies.join("p.toml"),
            format!(
                "[[policy]]\nname = \"public\"\nroles = [\"gateway\"]\nremind = [\"30d\"]\n\
                 warn = \"30d\"\ncritical = \"7d\"\nrecipients = [\"{OPS}\", \"{PKI}\"]\n"
            ),
        )
        .unwrap();
        let config = env.file("certd.toml");
        std::fs::write(
            &config,
            format!(
                "store = \"{}\"\n[scan]\nschedule = \"off\"\nwatch = false\n[probe]\nschedule = \"off\"\n\
                 [smtp]\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\nfrom = \"certd@contoso.example\"\n\
                 timeout = \"5s\"\n[reminders]\nschedule = \"0 8 * * 1-5\"\npolicies = \"{}\"\n",
                s(env.store()),
                smtp.port,
                s(&policies)
            ),
        )
        .unwrap();
        let gw = CertFactory::new().leaf(CertSpec::leaf("gw.contoso.example").expires_in_days(20));
        let dir = env.mkdir("gateway");
        files::pem(&dir.join("gw.pem"), &[&gw]);
        env.certctl(&["scan", s(&dir), "--role", "gateway"])
            .success();
        Mailing { env, smtp, config }
    }

    /// `certctl --config CONFIG remind --now` at `at`.
    fn remind(&self, at: i64) -> RunResult {
        self.env
            .cmd()
            .arg("--config")
            .arg(&self.config)
            .args(["remind", "--now"])
            .env("CERTCTL_NOW", rfc3339(at))
            .run()
    }
}

#[test]
fn status_shows_the_last_delivery_a_failure_then_the_retry_that_succeeded() {
    let mut m = Mailing::new();
    let t0 = now();
    let server = format!("127.0.0.1:{}", m.smtp.port);

    // The mail server is down: the delivery fails, and status says so with the cause.
    m.smtp.stop();
    m.remind(t0).expect_code(4);
    let status = m.env.certctl(&["status"]);
    status
        .success()
        .stdout_has(&format!("reminders: last delivery {}: FAILED", rfc3339(t0)))
        .stdout_has(&format!("2 recipients not reached: {OPS}: "))
        .stdout_has(&server);
    let v = m.env.certctl(&["status", "--json"]).json();
    let d = &v["last_delivery"];
    assert_eq!(d["outcome"], "failed", "{v}");
    assert_eq!(d["at"], rfc3339(t0), "{v}");
    assert_eq!(d["recipients_failed"], 2, "{v}");
    assert_eq!(d["recipients_delivered"], 0, "{v}");
    assert!(d["error"].as_str().unwrap().contains(&server), "{v}");

    // Back two hours later: the retry succeeds, and status shows that success.
    m.smtp.restart();
    let t1 = t0 + 2 * HOUR;
    m.remind(t1)
        .success()
        .stdout_has("sent 2 digests with 2 reminders");
    m.smtp
        .wait_for_messages(2, std::time::Duration::from_secs(20));
    let status = m.env.certctl(&["status"]);
    status.success().stdout_has(&format!(
        "reminders: last delivery {}: delivered, 2 recipients got 2 reminders (2 after an earlier failure)",
        rfc3339(t1)
    ));
    assert!(!status.stdout.contains("FAILED"), "{status}");
    let v = m.env.certctl(&["status", "--json"]).json();
    let d = &v["last_delivery"];
    assert_eq!(d["outcome"], "delivered", "{v}");
    assert_eq!(d["at"], rfc3339(t1), "{v}");
    assert_eq!(d["recipients_delivered"], 2, "{v}");
    assert_eq!(d["reminders_delivered"], 2, "{v}");
    assert_eq!(d["recipients_retried"], 2, "{v}");
    assert_eq!(d["error"], Value::Null, "{v}");

    // A pass with nothing due leaves the last delivery as it was.
    m.remind(t1 + HOUR).success().stdout_has("sent 0 digests");
    let v = m.env.certctl(&["status", "--json"]).json();
    assert_eq!(v["last_delivery"]["at"], rfc3339(t1), "{v}");
}

// ---- a deleted tracked bundle ------------------------------------------------------------

#[test]
fn a_deleted_tracked_bundle_is_marked_gone_and_no_longer_reminded() {
    let env = TestEnv::new();
    let policies = env.mkdir("policies");
    std::fs::write(
        policies.join("bundles.toml"),
        format!(
            "[[policy]]\nname = \"bundles\"\nartifacts = [\"enrollment-bundle\"]\nremind = [\"3d\", \"1d\"]\n\
             warn = \"3d\"\ncritical = \"1d\"\nrecipients = [\"{PLATFORM}\"]\n"
        ),
    )
    .unwrap();
    // Issued 8 days ago: it expires in 2 days, past its 3-day threshold.
    let bundle = env.mkdir("bundles").join("site-a.bundle");
    std::fs::write(&bundle, "opaque enrollment bundle\n").unwrap();
    env.certctl(&[
        "track",
        s(&bundle),
        "--kind",
        "enrollment-bundle",
        "--issued",
        &rfc3339(now() - 8 * DAY),
    ])
    .success();
    let dry_run = || env.certctl(&["remind", "--dry-run", "--policies", s(&policies)]);
    dry_run().success().stdout_has("site-a.bundle");

    // Deleted: no reminder any more, even before anything marked it.
    std::fs::remove_file(&bundle).unwrap();
    let r = dry_run();
    r.success()
        .stdout_has("dry run: 0 digests with 0 reminders");

    // The next scan marks it gone: list and status say so.
    let certs = env.mkdir("certs");
    env.certctl(&["scan", s(&certs)]).success();
    let items = env.list_json(&[]);
    let item = items
        .iter()
        .find(|i| i["kind"] == "artifact")
        .unwrap_or_else(|| panic!("the bundle is listed: {items:?}"));
    assert_eq!(item["status"], "gone", "{item}");
    assert!(item["gone_since"].is_string(), "{item}");
    assert_eq!(
        item["sources"][0]["gone_since"], item["gone_since"],
        "{item}"
    );
    env.certctl(&["list"]).success().stdout_has("gone");
    env.certctl(&["status"]).success().stdout_has(&format!(
        "tracked: {} (enrollment-bundle, gone since",
        s(&bundle)
    ));
    let v = env.certctl(&["status", "--json"]).json();
    assert_eq!(v["gone_artifacts"].as_array().map(Vec::len), Some(1), "{v}");

    // Back in place: reminded again.
    std::fs::write(&bundle, "opaque enrollment bundle\n").unwrap();
    env.certctl(&["scan", s(&certs)]).success();
    dry_run().success().stdout_has("site-a.bundle");
}

// ---- forget an endpoint probed by hand ---------------------------------------------------

#[test]
fn forget_removes_an_endpoint_probed_once_by_hand() {
    let env = TestEnv::new();
    let f = CertFactory::new();
    let leaf = f.leaf(CertSpec::leaf("lab.contoso.example").dns("lab.contoso.example"));
    let trust = env.file("trust/root.pem");
    files::pem(&trust, &[f.root()]);
    let server = certctl_e2e::tls::TlsServer::serve(&leaf, &[f.intermediate()]);
    let address = server.address();
    let probe = || {
        env.certctl(&[
            "probe",
            &address,
            "--sni",
            "lab.contoso.example",
            "--trust-store",
            s(&trust),
            "--timeout",
            "5s",
        ])
    };
    probe().success();
    server.stop();
    probe().expect_code(2);
    env.certctl(&["status"])
        .success()
        .stdout_has(&format!("endpoint: tls://{address} — unreachable"));
    env.certctl(&["check"])
        .expect_code(2)
        .stdout_has(&format!("tls://{address} unreachable"));

    // Forgotten (given as tls://...): gone from status, check and the endpoints.
    env.certctl(&["forget", &format!("tls://{address}")])
        .success()
        .stdout_has(&format!("forgot tls://{address}"));
    let status = env.certctl(&["status"]);
    status.success();
    assert!(!status.stdout.contains(&address), "{status}");
    let v = env.certctl(&["status", "--json"]).json();
    assert_eq!(v["endpoints"].as_array().map(Vec::len), Some(0), "{v}");
    env.certctl(&["check"]).success().stdout_has("findings=0");
    // The certificate it served is no longer seen there.
    let items = env.list_json(&[]);
    let served = find_fp(&items, &leaf.fingerprint);
    assert!(
        served["sources"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| !s["gone_since"].is_null()),
        "{served}"
    );
    // Audited.
    env.certctl(&["history", &leaf.fingerprint])
        .success()
        .stdout_has("endpoint-forgotten");

    // Unknown: an error naming it.
    env.certctl(&["forget", "127.0.0.1:1"])
        .expect_code(4)
        .stderr_has("no endpoint `127.0.0.1:1` is known");
}

// ---- RFC 3339 next to Unix seconds ----------------------------------------------------------

/// Asserts `obj[key]` is Unix seconds and `obj[sibling]` the same time in RFC 3339.
fn same_time(obj: &Value, key: &str, sibling: &str) {
    let t = obj[key]
        .as_i64()
        .unwrap_or_else(|| panic!("{key} is not Unix seconds in {obj}"));
    assert_eq!(obj[sibling], rfc3339(t), "{sibling} in {obj}");
}

#[test]
fn unix_times_in_json_have_rfc3339_siblings() {
    let env = TestEnv::new();
    let f = CertFactory::new();
    let leaf = f.leaf(CertSpec::leaf("lab.contoso.example").dns("lab.contoso.example"));
    let server = certctl_e2e::tls::TlsServer::serve(&leaf, &[f.intermediate()]);
    let address = server.address();
    let probe = env.certctl(&["probe", &address, "--json", "--timeout", "5s"]);
    let v = probe.json();
    same_time(&v["endpoint"], "last_probe", "last_probe_at");
    same_time(&v["endpoint"], "last_success", "last_success_at");

    let status = env.certctl(&["status", "--json"]).json();
    same_time(&status["endpoints"][0], "last_probe", "last_probe_at");

    // check --json: a CRL's next_update; remind --json: the pass's time.
    let policies = agent_policies(&env, None);
    let remind = env
        .cmd()
        .args(["remind", "--dry-run", "--json", "--policies", s(&policies)])
        .env("CERTCTL_NOW", "2026-12-25T08:00:00Z")
        .run();
    remind.success();
    let r = remind.json();
    same_time(&r, "at", "at_rfc3339");
    assert_eq!(r["at_rfc3339"], "2026-12-25T08:00:00Z");

    let forgot = env.certctl(&["forget", &address, "--json"]).json();
    same_time(&forgot[0], "last_probe", "last_probe_at");
    server.stop();
}

// ---- validity dates OpenSSL accepts -------------------------------------------------------

/// (tag, content start, end) of the DER TLV at `i`.
fn tlv(b: &[u8], i: usize) -> (u8, usize, usize) {
    let l0 = b[i + 1];
    let (start, len) = if l0 < 0x80 {
        (i + 2, l0 as usize)
    } else {
        let n = (l0 & 0x7f) as usize;
        (
            i + 2 + n,
            b[i + 2..i + 2 + n]
                .iter()
                .fold(0usize, |a, &x| (a << 8) | x as usize),
        )
    };
    (b[i], start, start + len)
}

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|&x| x == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// `cert` with its validity rewritten as GeneralizedTime `not_before` / `not_after` (any
/// text, e.g. with a `+0100` offset instead of `Z`), re-signed by `issuer`'s key.
fn with_validity(
    cert: &GeneratedCert,
    issuer: &GeneratedCert,
    not_before: &str,
    not_after: &str,
) -> Vec<u8> {
    let d = &cert.der;
    let (_, cert_start, cert_end) = tlv(d, 0);
    let (_, tbs_start, tbs_end) = tlv(d, cert_start);
    let mut fields = Vec::new();
    let mut i = tbs_start;
    while i < tbs_end {
        let (tag, _, end) = tlv(d, i);
        fields.push((tag, i, end));
        i = end;
    }
    let validity_index = if fields[0].0 == 0xa0 { 4 } else { 3 };
    let mut tbs = Vec::new();
    for (k, (_, start, end)) in fields.iter().enumerate() {
        if k == validity_index {
            let mut v = der(0x18, not_before.as_bytes());
            v.extend(der(0x18, not_after.as_bytes()));
            tbs.extend(der(0x30, &v));
        } else {
            tbs.extend_from_slice(&d[*start..*end]);
        }
    }
    let tbs = der(0x30, &tbs);
    let (_, _, alg_end) = tlv(d, tbs_end);
    let algorithm = &d[tbs_end..alg_end];
    assert!(alg_end < cert_end);
    let mut signer =
        openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &issuer.pkey()).unwrap();
    signer.update(&tbs).unwrap();
    let mut bits = vec![0u8];
    bits.extend(signer.sign_to_vec().unwrap());
    let mut body = tbs;
    body.extend_from_slice(algorithm);
    body.extend(der(0x03, &bits));
    der(0x30, &body)
}

#[test]
fn validity_dates_openssl_accepts_are_read_with_a_warning_naming_the_file() {
    let env = TestEnv::new();
    let f = CertFactory::new();
    let leaf = f.leaf(CertSpec::leaf("lax.contoso.example"));
    // GeneralizedTime with a time zone offset instead of `Z`: not DER, OpenSSL takes it.
    let lax = with_validity(
        &leaf,
        f.intermediate(),
        "20260101120000+0100",
        "20361231235959+0100",
    );
    let dir = env.mkdir("lax");
    let path = dir.join("lax.der");
    std::fs::write(&path, &lax).unwrap();
    let dates = openssl_ok(&[
        "x509",
        "-inform",
        "der",
        "-in",
        s(&path),
        "-noout",
        "-dates",
    ]);
    assert!(
        dates.contains("notBefore=Jan  1 11:00:00 2026 GMT"),
        "{dates}"
    );
    assert!(
        dates.contains("notAfter=Dec 31 22:59:59 2036 GMT"),
        "{dates}"
    );
    // Re-signed: the issuer's signature holds (`openssl verify` refuses the date format).
    let parsed = openssl::x509::X509::from_der(&lax).unwrap();
    assert!(parsed
        .verify(&f.intermediate().x509().public_key().unwrap())
        .unwrap());

    let scan = env.certctl(&["scan", s(&dir)]);
    scan.success()
        .stderr_has(&format!(
            "warning: {}: validity dates are not DER",
            s(&path)
        ))
        .stderr_has("20260101120000+0100");
    assert!(!scan.stderr.contains("error:"), "{scan}");
    let items = env.list_json(&[]);
    let fp = sha256_hex(&lax);
    let c = find_fp(&items, &fp);
    assert_eq!(c["not_before"], "2026-01-01T11:00:00Z", "{c}");
    assert_eq!(c["not_after"], "2036-12-31T22:59:59Z", "{c}");
    assert_eq!(c["subject_cn"], "lax.contoso.example", "{c}");
}

// ---- track with a relative path ----------------------------------------------------------

#[test]
fn a_file_tracked_by_a_relative_path_is_found_by_that_path() {
    let env = TestEnv::new();
    let policies = env.mkdir("policies");
    std::fs::write(
        policies.join("bundles.toml"),
        format!(
            "[[policy]]\nname = \"bundles\"\nartifacts = [\"enrollment-bundle\"]\nremind = [\"3d\"]\n\
             warn = \"3d\"\ncritical = \"1d\"\nrecipients = [\"{PLATFORM}\"]\n"
        ),
    )
    .unwrap();
    let work = env.mkdir("work");
    std::fs::create_dir_all(work.join("bundles")).unwrap();
    std::fs::write(work.join("bundles/site-b.bundle"), "opaque\n").unwrap();
    let rel = "bundles/site-b.bundle";
    let at_work = |args: &[&str]| env.cmd().args(args).current_dir(&work).run();
    let tracked = at_work(&["track", rel, "--kind", "enrollment-bundle", "--json"]);
    tracked.success();
    let absolute = work.join(rel);
    assert_eq!(
        tracked.json()[0]["sources"][0]["path"],
        s(&absolute),
        "{tracked}"
    );

    // The path as the user gave it finds it, from the same folder.
    let explain = at_work(&[
        "policy",
        "explain",
        rel,
        "--policies",
        s(&policies),
        "--json",
    ]);
    explain.success();
    assert_eq!(explain.json()[0]["path"], s(&absolute), "{explain}");
    at_work(&[
        "snooze",
        rel,
        "--until",
        &rfc3339(now() + 2 * DAY),
        "--reason",
        "replaced Friday",
    ])
    .success();
    at_work(&["untrack", rel])
        .success()
        .stdout_has("no longer tracking");
}
