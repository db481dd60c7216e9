//! The steady state of issue 16: agents whose ephemeral (6-hour) certificates are renewed
//! four times a day, with certd running and time compressed.
//!
//! Each simulated round (6 hours) replaces every agent's file with a newly issued
//! certificate (new serial, so a new fingerprint), restarts certd with `CERTCTL_NOW` at the
//! round's time (certd's clock is frozen at it), scans the fleet through certd and runs a
//! retention pass through it (`store prune`: certd's own hourly passes run on wall time,
//! which the soak compresses; its background job is off here). After the
//! last round of each simulated day it times `check`, `stats`, `GET /metrics` and
//! `list --expiring-within 30d --json` through certd and reads certd's memory from /proc.
//! A few long-lived site-server certificates (expiring over the next 90 days) give `check`
//! something to find as time moves.
//!
//! - `a_small_soak_keeps_its_invariants` (CI, debug build): 200 agents × 3 days with a
//!   one-day retention window; asserts that `stats`, `check` and `/metrics` agree with a
//!   recount of `list --json`, that the store levels off (six rounds of credentials once
//!   the window passed) and that `store verify` is clean. Never timings.
//! - `soak_benchmark` (ignored): `scripts/bench-soak [--agents N] [--days D]` runs it on the
//!   release binaries and prints the table.

use std::path::Path;
use std::time::{Duration, Instant};

use certctl_e2e::daemon::{free_loopback_address, http_get, Certd, CertdConfig};
use certctl_e2e::{now, rfc3339, KeyKind, TestEnv, DAY};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use serde_json::Value;
use time::OffsetDateTime;

const HOUR: i64 = 3_600;
const ROUND: i64 = 6 * HOUR;
const ROUNDS_PER_DAY: usize = 4;
const FILES_PER_FOLDER: usize = 1_000;
/// Long-lived certificates besides the agents.
const SITE_SERVERS: usize = 60;

struct Options {
    agents: usize,
    days: usize,
    /// Check the answers against recounts (CI).
    verify: bool,
    /// certd's `[retention]` lines; `None`: its defaults (ephemeral credentials removed 7
    /// days after expiry, batches of 5000).
    retention: Option<&'static str>,
    /// `[retention] ephemeral_after_expiry` in seconds (what `retention` says, else the
    /// default), for the number of rounds the store keeps once retention caught up.
    ephemeral_window: i64,
    /// As a site with an approval queue runs: every agent registered (by name, as the
    /// management server exports them), one agent blocked and certd keeping a deny list
    /// (`[agents] deny_list`), so every scan also decides the deny list and every
    /// `/metrics` scrape counts the pending agents against the registrations.
    deny_list: bool,
}

impl Options {
    /// Rounds of agent credentials in the store after round `round`'s scan once retention
    /// runs every round: a credential of round r (expiring 6.5 hours after it started) is
    /// removed from the first round at least `ephemeral_window` past its expiry.
    fn rounds_kept(&self, round: usize) -> usize {
        let lifetime = ROUND + HOUR / 2;
        let kept = (lifetime + self.ephemeral_window + ROUND - 1) / ROUND;
        (round + 1).min(usize::try_from(kept).unwrap_or(usize::MAX))
    }
}

/// One line of the table: the state after a simulated day's last round.
struct DayRow {
    day: usize,
    records: u64,
    store_bytes: u64,
    scan: Duration,
    /// Certificates the day's four retention passes removed, and their time.
    pruned: u64,
    prune: Duration,
    check: Duration,
    stats: Duration,
    metrics: Duration,
    list: Duration,
    list_rows: usize,
    /// `list --expiring-within 30d --json`: its first line, and the first screen (50
    /// lines) of the table on a terminal (script(1)), through certd.
    list_first_line: Duration,
    table_first_screen: Option<Duration>,
    table_whole: Option<Duration>,
    rss_kib: u64,
    peak_kib: u64,
    /// certd's peak RSS after the round's scan, before the queries.
    scan_peak_kib: u64,
}

/// The throw-away CA and the one key every agent certificate uses (signing is the cost
/// that matters; a new serial gives a new fingerprint).
struct Issuing {
    issuer: Issuer<'static, KeyPair>,
    leaf_key: KeyPair,
}

fn issuing(t0: i64) -> Issuing {
    let time = |t: i64| OffsetDateTime::from_unix_timestamp(t).expect("timestamp");
    let mut ca = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Certctl Soak");
    dn.push(DnType::CommonName, "Certctl Soak Agent CA");
    ca.distinguished_name = dn;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = time(t0 - 30 * DAY);
    ca.not_after = time(t0 + 3650 * DAY);
    Issuing {
        issuer: Issuer::new(ca, KeyKind::EcP256.generate()),
        leaf_key: KeyKind::EcP256.generate(),
    }
}

fn sign(issuing: &Issuing, cn: &str, serial: u64, not_before: i64, not_after: i64) -> String {
    let time = |t: i64| OffsetDateTime::from_unix_timestamp(t).expect("timestamp");
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Certctl Soak");
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.serial_number = Some(SerialNumber::from(serial));
    params.not_before = time(not_before);
    params.not_after = time(not_after);
    params
        .signed_by(&issuing.leaf_key, &issuing.issuer)
        .expect("sign")
        .pem()
}

/// Replaces every agent's file with a new certificate issued at `t` (atomically: written
/// beside it, then renamed over it), on all cores.
fn renew_agents(dir: &Path, issuing: &Issuing, agents: usize, round: u64, t: i64) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|s| {
        for worker in 0..threads {
            s.spawn(move || {
                for i in (worker..agents).step_by(threads) {
                    let folder = dir.join(format!("a{:03}", i / FILES_PER_FOLDER));
                    if i % FILES_PER_FOLDER == 0 || round == 0 {
                        std::fs::create_dir_all(&folder).expect("create agent folder");
                    }
                    let pem = sign(
                        issuing,
                        &format!("agent-{i:06}.fleet.example"),
                        (round << 32) | i as u64 | 1 << 62,
                        t - 300,
                        t + ROUND + HOUR / 2,
                    );
                    let path = folder.join(format!("agent-{i:06}.pem"));
                    let tmp = folder.join(format!(".agent-{i:06}.pem.new"));
                    std::fs::write(&tmp, pem).expect("write agent certificate");
                    std::fs::rename(&tmp, &path).expect("replace agent certificate");
                }
            });
        }
    });
}

/// Registers every agent by name (the management server's export: name and resource GUID)
/// and blocks agent 0, whose certificates then fill the deny list certd keeps.
fn register_and_block(env: &TestEnv, agents: usize, deny_list: &Path) {
    let mut csv = String::from("agent_name,resource_guid\n");
    for i in 0..agents {
        csv.push_str(&format!(
            "agent-{i:06}.fleet.example,{:08x}-0000-4000-8000-{i:012x}\n",
            i
        ));
    }
    let file = env.root().join("registrations.csv");
    std::fs::write(&file, csv).expect("write the registrations");
    env.cmd()
        .args(["agents", "import-registrations"])
        .arg(&file)
        .run()
        .success();
    let blocked = env.certctl(&["agents", "block", "agent-000000.fleet.example", "--json"]);
    blocked.success();
    let listed = std::fs::read_to_string(deny_list).expect("certd wrote the deny list");
    assert_eq!(
        listed.lines().filter(|l| !l.starts_with('#')).count(),
        1,
        "{listed}"
    );
}

/// Long-lived site-server certificates expiring over the next 90 days.
fn write_site_servers(dir: &Path, issuing: &Issuing, t0: i64) {
    std::fs::create_dir_all(dir).expect("create site-server folder");
    for i in 0..SITE_SERVERS {
        let not_after = t0 + (i as i64 + 1) * 90 * DAY / SITE_SERVERS as i64 + 7 * HOUR;
        let pem = sign(
            issuing,
            &format!("site-{i:03}.fleet.example"),
            (1 << 61) | i as u64,
            t0 - 300 * DAY,
            not_after,
        );
        std::fs::write(dir.join(format!("site-{i:03}.pem")), pem).expect("write site server");
    }
}

fn du(path: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(path) {
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            total += if meta.is_dir() {
                du(&e.path())
            } else {
                meta.len()
            };
        }
    }
    total
}

/// certd's resident and peak resident memory (KiB), from /proc.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Runs `program args` with stdout piped; returns when its first line and its
/// `screen`th line came, and when it ended (bounded: killed after 10 minutes).
fn time_lines(
    env: &TestEnv,
    program: &Path,
    args: &[&str],
    screen: usize,
) -> (Duration, Duration, Duration) {
    use std::io::BufRead as _;
    let start = Instant::now();
    let mut child = std::process::Command::new(program)
        .args(args)
        .env("HOME", env.home())
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the lister");
    let out = child.stdout.take().expect("piped");
    let watchdog_pid = child.id();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watchdog_done = done.clone();
    std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(600);
        while Instant::now() < until {
            if watchdog_done.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = std::process::Command::new("kill")
            .arg(watchdog_pid.to_string())
            .status();
    });
    let mut reader = std::io::BufReader::new(out);
    let (mut first, mut nth) = (None, None);
    let mut line = Vec::new();
    let mut n = 0;
    while reader.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
        n += 1;
        if n == 1 {
            first = Some(start.elapsed());
        }
        if n == screen {
            nth = Some(start.elapsed());
        }
        line.clear();
    }
    let _ = child.wait();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let whole = start.elapsed();
    (first.unwrap_or(whole), nth.unwrap_or(whole), whole)
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

fn run(opts: &Options) -> Vec<DayRow> {
    let env = TestEnv::new();
    let fleet = env.mkdir("fleet");
    let sites = env.root().join("sites");
    // Whole hours, so that rounds fall on the same minutes every day.
    let t0 = now() - now().rem_euclid(HOUR);
    let issuing = issuing(t0);
    write_site_servers(&sites, &issuing, t0);
    let metrics = free_loopback_address();
    let mut config = CertdConfig::new(env.store()).metrics(&metrics);
    config.watch = false;
    let deny_list = env.root().join("deny.txt");
    if opts.deny_list {
        config = config.deny_list(&deny_list);
    }
    // certd prunes every `[retention] every` (1 hour) of wall time and at start-up; a
    // simulated round is 6 hours but lasts seconds here, and stopping certd cuts its
    // start-up pass short (the queries also raced it). So the soak runs one whole pass per
    // round itself, through certd at the round's time, as the hourly passes would have.
    config = config.retention(&format!(
        "enabled = false\n{}",
        opts.retention.unwrap_or_default()
    ));
    let config = config.write(&env.root().join("certd.toml"));

    let mut rows = Vec::new();
    let mut first_import = Duration::ZERO;
    let (mut day_pruned, mut day_prune_time) = (0, Duration::ZERO);
    for round in 0..(opts.days * ROUNDS_PER_DAY) {
        let t = t0 + round as i64 * ROUND;
        let ((), generate) = timed(|| renew_agents(&fleet, &issuing, opts.agents, round as u64, t));
        let at = rfc3339(t);
        let certd = Certd::start_with_env(&env, &config, &[("CERTCTL_NOW", &at)]);
        if round == 0 {
            env.cmd()
                .args(["scan", "--role", "site-server"])
                .arg(&sites)
                .run()
                .success();
        }
        let (scan, scan_time) = timed(|| {
            env.cmd()
                .args(["scan", "--role", "agent"])
                .arg(&fleet)
                .timeout(Duration::from_secs(3600))
                .run()
        });
        scan.success();
        if round == 0 && opts.deny_list {
            register_and_block(&env, opts.agents, &deny_list);
        }
        let (_, scan_peak_kib) = memory_kib(certd.pid());
        let (prune, prune_time) = timed(|| {
            env.cmd()
                .args(["store", "prune", "--yes", "--json"])
                .timeout(Duration::from_secs(3600))
                .run()
        });
        prune.success();
        day_pruned += prune.json()["removed"].as_u64().unwrap_or(0);
        day_prune_time += prune_time;
        if round == 0 {
            first_import = scan_time;
        }
        if opts.verify || round % ROUNDS_PER_DAY == ROUNDS_PER_DAY - 1 || round == 0 {
            eprintln!(
                "soak: round {round} at {at}: generated in {:.1} s, scanned in {:.2} s",
                generate.as_secs_f64(),
                scan_time.as_secs_f64()
            );
        }
        if round % ROUNDS_PER_DAY == ROUNDS_PER_DAY - 1 {
            let day = round / ROUNDS_PER_DAY + 1;
            let (check, check_time) = timed(|| env.certctl(&["check", "--json"]));
            assert!([0, 1, 2].contains(&check.code()), "check failed: {check}");
            let (stats, stats_time) = timed(|| env.certctl(&["stats", "--json"]));
            stats.success();
            let (scrape, metrics_time) = timed(|| http_get(&metrics, "/metrics"));
            assert_eq!(scrape.status, 200, "GET /metrics: {}", scrape.body);
            let (list, list_time) =
                timed(|| env.certctl(&["list", "--expiring-within", "30d", "--json"]));
            list.success();
            let listed = list.json().as_array().map_or(0, Vec::len);
            let store_arg = env.store().display().to_string();
            let certctl = certctl_e2e::bin_path("certctl");
            let (list_first_line, _, _) = time_lines(
                &env,
                &certctl,
                &[
                    "--store",
                    &store_arg,
                    "list",
                    "--expiring-within",
                    "30d",
                    "--json",
                ],
                50,
            );
            let script = Path::new("/usr/bin/script");
            let (table_first_screen, table_whole) = if script.is_file() {
                let command = format!(
                    "{} --store {store_arg} list --expiring-within 30d",
                    certctl.display()
                );
                let (_, screen, whole) =
                    time_lines(&env, script, &["-qec", &command, "/dev/null"], 50);
                (Some(screen), Some(whole))
            } else {
                (None, None)
            };
            let (rss_kib, peak_kib) = memory_kib(certd.pid());
            let stats = stats.json();
            if opts.verify {
                verify_answers(&env, &stats, &check.json(), &scrape.body, t, opts);
                // Retention keeps pace: once its window passed, the store holds the same
                // number of rounds every day. The blocked agent's first credential stays:
                // the audit event of the decision names it.
                let kept = opts.rounds_kept(round);
                let named_by_the_block = usize::from(opts.deny_list && kept <= round);
                assert_eq!(
                    stats["total"].as_u64(),
                    Some((kept * opts.agents + SITE_SERVERS + named_by_the_block) as u64),
                    "day {day}: {kept} rounds of {} agents and {SITE_SERVERS} site servers \
                     expected once retention removed the older rounds: {stats}",
                    opts.agents
                );
            }
            let row = DayRow {
                day,
                records: stats["total"].as_u64().unwrap_or(0),
                store_bytes: du(env.store()),
                scan: scan_time,
                pruned: std::mem::take(&mut day_pruned),
                prune: std::mem::take(&mut day_prune_time),
                check: check_time,
                stats: stats_time,
                metrics: metrics_time,
                list: list_time,
                list_rows: listed,
                list_first_line,
                table_first_screen,
                table_whole,
                rss_kib,
                peak_kib,
                scan_peak_kib,
            };
            print_row(&row, first_import, rows.is_empty());
            rows.push(row);
        }
        certd.stop_ok();
    }
    if opts.verify {
        let verify = env.certctl(&["store", "verify", "--json"]);
        verify.success();
        assert_eq!(verify.json()["problems"], serde_json::json!([]), "{verify}");
    }
    // For measurements by hand on the store the run left (remove it afterwards).
    if std::env::var_os("SOAK_KEEP").is_some() {
        eprintln!("soak: kept {} (SOAK_KEEP)", env.keep().display());
    }
    rows
}

fn print_row(row: &DayRow, first_import: Duration, header: bool) {
    if header {
        println!(
            "| day | records | store | scan of the round | ×first import | removed by retention (4 passes) | check | stats | GET /metrics | list 30d --json (rows) | its first line | table's first screen (whole) | certd RSS (peak; peak after the scan) |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    }
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
    println!(
        "| {} | {} | {:.1} MB | {:.2} s | {:.2} | {} in {:.1} s | {} | {} | {} | {} ({}) | {} | {} | {} MB ({} MB; {} MB) |",
        row.day,
        row.records,
        row.store_bytes as f64 / 1e6,
        row.scan.as_secs_f64(),
        row.scan.as_secs_f64() / first_import.as_secs_f64().max(1e-9),
        row.pruned,
        row.prune.as_secs_f64(),
        ms(row.check),
        ms(row.stats),
        ms(row.metrics),
        ms(row.list),
        row.list_rows,
        ms(row.list_first_line),
        match (row.table_first_screen, row.table_whole) {
            (Some(screen), Some(whole)) => format!("{} ({})", ms(screen), ms(whole)),
            _ => "n/a".into(),
        },
        row.rss_kib / 1024,
        row.peak_kib / 1024,
        row.scan_peak_kib / 1024,
    );
}

/// The answers through certd equal a recount of every record (`list --json`).
fn verify_answers(
    env: &TestEnv,
    stats: &Value,
    check: &Value,
    metrics: &str,
    t: i64,
    opts: &Options,
) {
    let all = env.list_json(&[]);
    assert_eq!(stats["total"].as_u64(), Some(all.len() as u64), "{stats}");
    let mut by_status = std::collections::BTreeMap::<String, u64>::new();
    let mut by_role = std::collections::BTreeMap::<String, u64>::new();
    let time =
        |c: &Value, field: &str| certctl_e2e::parse_rfc3339(c[field].as_str().expect("a time"));
    for c in &all {
        // At certd's (simulated) time; `list` dates its `status` by the caller's clock.
        let status = if c["revoked"] == true {
            "revoked"
        } else if time(c, "not_after") <= t {
            "expired"
        } else if time(c, "not_before") > t {
            "not-yet-valid"
        } else if time(c, "not_after") <= t + 30 * DAY {
            "expiring"
        } else {
            "valid"
        };
        *by_status.entry(status.to_string()).or_default() += 1;
        *by_role
            .entry(c["role"].as_str().expect("role").to_string())
            .or_default() += 1;
    }
    for (status, n) in &by_status {
        assert_eq!(
            stats["by_status"][status].as_u64(),
            Some(*n),
            "{status}: {stats}"
        );
    }
    for (role, n) in &by_role {
        assert_eq!(stats["by_role"][role].as_u64(), Some(*n), "{role}: {stats}");
    }
    // Everything but the site servers is an agent credential (the current one per agent,
    // and the older rounds retention has not removed yet).
    assert_eq!(
        by_role.get("agent").copied(),
        Some(all.len() as u64 - SITE_SERVERS as u64)
    );
    assert!(all.len() as u64 >= opts.agents as u64);
    // check considers the long-lived site servers; what it lists follows the clock.
    assert_eq!(
        check["considered"], SITE_SERVERS as u64,
        "{}",
        check["summary"]
    );
    let site_servers_within = |from: i64, to: i64| {
        all.iter()
            .filter(|c| c["role"] == "site-server")
            .filter(|c| {
                let na = time(c, "not_after");
                na > from && na <= to
            })
            .count()
    };
    let listed = |field: &str| check[field].as_array().map_or(0, Vec::len);
    let summary = &check["summary"];
    assert_eq!(
        listed("expired"),
        site_servers_within(i64::MIN, t),
        "{summary}"
    );
    assert_eq!(
        listed("critical"),
        site_servers_within(t, t + 7 * DAY),
        "{summary}"
    );
    assert_eq!(
        listed("warning"),
        site_servers_within(t + 7 * DAY, t + 30 * DAY),
        "{summary}"
    );
    // /metrics counts the same records.
    let series = certctl_e2e::prometheus::parse(metrics);
    let counted: f64 = series
        .iter()
        .filter(|((name, _), _)| name == "certctl_certificates")
        .map(|(_, v)| *v)
        .sum();
    assert_eq!(counted as usize, all.len(), "{metrics}");
}

/// With a one-day window so that retention's level is reached within the run (from the
/// sixth round on), in small batches.
#[test]
fn a_small_soak_keeps_its_invariants() {
    run(&Options {
        agents: 200,
        days: 3,
        verify: true,
        retention: Some("ephemeral_after_expiry = \"1d\"\nbatch = 25"),
        ephemeral_window: DAY,
        deny_list: true,
    });
}

/// `scripts/bench-soak`: `SOAK_AGENTS` and `SOAK_DAYS` (defaults 200,000 and 30).
#[test]
#[ignore = "a long benchmark: run it with scripts/bench-soak"]
fn soak_benchmark() {
    let number = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.replace(['_', ','], "").parse().ok())
            .unwrap_or(default)
    };
    let opts = Options {
        agents: number("SOAK_AGENTS", 200_000),
        days: number("SOAK_DAYS", 30),
        verify: false,
        retention: None,
        ephemeral_window: 7 * DAY,
        deny_list: std::env::var("SOAK_DENY_LIST").is_ok_and(|v| v == "1"),
    };
    println!(
        "soak: {} agents, {} simulated days{}, {} cores; started {}",
        opts.agents,
        opts.days,
        if opts.deny_list {
            ", agents registered, one blocked, a deny list kept"
        } else {
            ""
        },
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        rfc3339(now())
    );
    run(&opts);
}

/// Not a test: writes (or renews, `SOAK_ROUND` > 0) a fleet of `SOAK_AGENTS` agent files in
/// `SOAK_FLEET_DIR`, as a round of the benchmark does, for measuring one scan by hand
/// (e.g. certd's memory during a scan of 200,000 files).
#[test]
#[ignore = "a tool for measurements by hand"]
fn write_a_fleet() {
    let Some(dir) = std::env::var_os("SOAK_FLEET_DIR") else {
        eprintln!("SOAK_FLEET_DIR is not set");
        return;
    };
    let number = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.replace(['_', ','], "").parse().ok())
            .unwrap_or(default)
    };
    let agents = number("SOAK_AGENTS", 200_000);
    let round = number("SOAK_ROUND", 0) as u64;
    let t0 = now() - now().rem_euclid(HOUR);
    let issuing = issuing(t0);
    renew_agents(
        Path::new(&dir),
        &issuing,
        agents,
        round,
        t0 + round as i64 * ROUND,
    );
}
