//! Retention, as an admin of an agent fleet meets it: ephemeral credentials renewed round
//! after round pile up in the store until `certctl store prune` (or certd's `[retention]`
//! job) removes the expired ones no file holds any more, keeping what must stay (revoked,
//! snoozed, a managed CA's) and a per-agent summary that `show` prints. `store verify` is
//! clean after every prune, and after a prune killed between two batches.
//!
//! Every certificate is generated here by the harness's [`CertFactory`]; the rounds are
//! scanned with `CERTCTL_NOW` set to the time of each round (ten days ago onwards).

use std::path::PathBuf;
use std::time::Duration;

use certctl_e2e::daemon::{status_json, wait_for, Certd, CertdConfig};
use certctl_e2e::*;
use serde_json::Value;

const ROUND: i64 = 6 * HOUR;

/// A fleet of agents renewing a 6-hour credential every round: each round replaces every
/// agent's file and is scanned at its own time.
struct Fleet {
    dir: PathBuf,
    agents: usize,
    /// Every credential issued, per agent, oldest first.
    issued: Vec<Vec<GeneratedCert>>,
}

impl Fleet {
    fn new(env: &TestEnv, agents: usize) -> Fleet {
        Fleet {
            dir: env.mkdir("fleet"),
            agents,
            issued: (0..agents).map(|_| Vec::new()).collect(),
        }
    }

    fn name(i: usize) -> String {
        format!("agent-{i:03}")
    }

    /// Issues round `k` (starting at `start`) and scans it at that time.
    fn round(&mut self, env: &TestEnv, factory: &CertFactory, start: i64, k: i64) {
        let at = start + k * ROUND;
        let t = now();
        for i in 0..self.agents {
            let cert = factory.leaf(CertSpec::leaf(&Fleet::name(i)).valid(at - t, at + ROUND - t));
            files::pem(&self.dir.join(format!("{}.pem", Fleet::name(i))), &[&cert]);
            self.issued[i].push(cert);
        }
        env.cmd()
            .env("CERTCTL_NOW", rfc3339(at + 60))
            .args(["scan", "--role", "agent"])
            .arg(&self.dir)
            .run()
            .success();
    }
}

fn total(env: &TestEnv) -> u64 {
    let r = env.certctl(&["stats", "--json"]);
    r.success();
    r.json()["total"].as_u64().expect("total")
}

/// `certctl store verify --json`, asserted consistent.
fn assert_consistent(env: &TestEnv, context: &str) -> Value {
    let run = env.cmd().args(["store", "verify", "--json"]).run();
    let v = run.json();
    assert_eq!(run.code(), 0, "{context}: inconsistent store: {v:#}\n{run}");
    assert_eq!(v["problems"], Value::Array(vec![]), "{context}");
    v
}

fn prune(env: &TestEnv, at: i64, extra: &[&str]) -> RunResult {
    let mut args = vec!["store", "prune", "--json"];
    args.extend_from_slice(extra);
    env.cmd().env("CERTCTL_NOW", rfc3339(at)).args(args).run()
}

fn shows(env: &TestEnv, id: &str) -> bool {
    env.certctl(&["show", id, "--json"]).code() == 0
}

#[test]
fn prune_removes_old_renewals_keeps_what_must_stay_and_summarises_each_agent() {
    let env = TestEnv::new();
    let factory = CertFactory::new();
    let start = now() - 10 * DAY;
    let mut fleet = Fleet::new(&env, 4);
    for k in 0..5 {
        fleet.round(&env, &factory, start, k);
    }
    // A permanent gateway certificate, present: never a candidate.
    let gw = factory.leaf(CertSpec::leaf("gw.retention.example"));
    files::pem(&env.file("gw/gw.pem"), &[&gw]);
    env.certctl(&["scan", "--role", "gateway", s(&env.file("gw"))])
        .success();
    let before = total(&env);
    assert_eq!(before, 4 * 5 + 1);

    // What must stay although it is old and no file holds it: a revoked renewal, a
    // snoozed one, and a credential a managed CA issued.
    let revoked = fleet.issued[0][0].fingerprint.clone();
    env.certctl(&[
        "revoke",
        &revoked,
        "--reason",
        "superseded",
        "--yes",
        "--no-probe",
    ])
    .success();
    let snoozed = fleet.issued[1][0].fingerprint.clone();
    // Snoozed while it was valid (an expired certificate is never silenced).
    env.cmd()
        .env("CERTCTL_NOW", rfc3339(start + 60))
        .args([
            "snooze",
            &snoozed,
            "--until",
            "2099-01-01",
            "--reason",
            "kept for the audit",
        ])
        .run()
        .success();
    env.certctl(&["ca", "init", "--name", "fleet-ca"]).success();
    let issued_dir = env.mkdir("issued");
    env.certctl(&[
        "issue",
        "--ca",
        "fleet-ca",
        "--cn",
        "managed-agent",
        "--role",
        "agent",
        "--validity",
        "12h",
        "--out",
        s(&issued_dir),
    ])
    .success();
    env.certctl(&["scan", "--role", "agent", s(&issued_dir)])
        .success();
    std::fs::remove_dir_all(&issued_dir).expect("remove the issued files");
    std::fs::create_dir_all(&issued_dir).expect("empty folder");
    env.certctl(&["scan", "--role", "agent", s(&issued_dir)])
        .success();
    let managed: Vec<Value> = env.list_json(&["--role", "agent"]);
    let managed = managed
        .iter()
        .find(|c| {
            c["subject_cn"] == "managed-agent"
                || c["subject"]
                    .as_str()
                    .is_some_and(|s| s.contains("managed-agent"))
        })
        .map(|c| {
            c["fingerprint_sha256"]
                .as_str()
                .expect("fingerprint")
                .to_string()
        })
        .expect("the managed CA's credential is listed");
    let before = total(&env);

    // A month from now every old renewal is past the 7-day window.
    let later = now() + 30 * DAY;
    let refused = prune(&env, later, &[]);
    assert_ne!(
        refused.code(),
        0,
        "prune without --yes must refuse: {refused}"
    );
    refused.stderr_has("--yes");
    assert_eq!(total(&env), before, "a refused prune removes nothing");

    // Four agents × four earlier renewals, less the revoked and the snoozed one.
    let expected = 4 * 4 - 2;
    let dry = prune(&env, later, &["--dry-run"]);
    dry.success();
    let d = dry.json();
    assert_eq!(d["dry_run"], true, "{dry}");
    assert_eq!(d["removed"], expected, "{dry}");
    assert_eq!(d["removed_ephemeral"], expected, "{dry}");
    assert!(d["kept_protected"].as_u64().expect("kept") >= 3, "{dry}");
    assert_eq!(total(&env), before, "a dry run removes nothing");

    let done = prune(&env, later, &["--yes"]);
    done.success();
    let p = done.json();
    assert_eq!(p["dry_run"], false, "{done}");
    assert_eq!(p["removed"], expected, "{done}");
    assert_eq!(p["certificates_left"], before - expected, "{done}");
    assert_eq!(total(&env), before - expected);
    let v = assert_consistent(&env, "after the prune");
    assert_eq!(v["records"], before - expected);

    // What must stay stayed; each agent's current credential is still there.
    for fp in [&revoked, &snoozed, &managed, &gw.fingerprint] {
        assert!(shows(&env, fp), "{fp} must stay");
    }
    for i in 0..fleet.agents {
        let current = &fleet.issued[i][4].fingerprint;
        assert!(shows(&env, current), "agent {i}'s current credential");
        assert!(
            !shows(&env, &fleet.issued[i][2].fingerprint),
            "agent {i}'s third renewal is gone"
        );
    }

    // `show NAME`: the current credential, the one older kept, and the summary of the
    // removed ones.
    let show = env.certctl(&["show", &Fleet::name(0)]);
    show.success();
    show.stdout_has(&fleet.issued[0][4].fingerprint);
    show.stdout_has("1 older certificate with this name");
    show.stdout_has("Pruned renewals:      3 removed by retention");
    show.stdout_has("renewed about every 6h");
    assert!(
        !show.stdout.contains(&revoked),
        "the older one is counted, not shown: {show}"
    );
    let all = env.certctl(&["show", &Fleet::name(0), "--all", "--json"]);
    all.success();
    assert_eq!(all.json().as_array().expect("array").len(), 2, "{all}");
    let three = env.certctl(&["show", &Fleet::name(3)]);
    three.success();
    three.stdout_has("Pruned renewals:      4 removed by retention");

    // Nothing more to remove.
    let again = prune(&env, later, &["--yes"]);
    again.success();
    assert_eq!(again.json()["removed"], 0, "{again}");
}

#[test]
fn a_prune_killed_between_batches_leaves_a_consistent_store_and_certd_finishes_it() {
    let env = TestEnv::new();
    let factory = CertFactory::new();
    let start = now() - 10 * DAY;
    let mut fleet = Fleet::new(&env, 12);
    for k in 0..4 {
        fleet.round(&env, &factory, start, k);
    }
    let before = total(&env);
    assert_eq!(before, 12 * 4);

    // Killed (SIGKILL, no cleanup) right after its first batch of five was written.
    let killed = env
        .cmd()
        .env("CERTCTL_TEST_CRASH_AT", "prune-after-batch")
        .args(["store", "prune", "--yes", "--batch", "5"])
        .run();
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            killed.status.signal(),
            Some(9),
            "the crash point must kill certctl: {killed}"
        );
    }
    assert_consistent(&env, "after the kill");
    assert_eq!(total(&env), before - 5, "exactly the first batch is gone");
    for i in 0..fleet.agents {
        assert!(shows(&env, &fleet.issued[i][3].fingerprint));
    }

    // certd's background job finishes the pass (it prunes at start-up, in batches).
    let config = CertdConfig::new(env.store()).source(&fleet.dir, Some("agent"));
    let mut toml = config.to_toml();
    toml.push_str("\n[retention]\nevery = \"1h\"\nbatch = 4\n");
    let config_path = env.file("certd.toml");
    std::fs::write(&config_path, toml).expect("write config");
    let certd = Certd::start(&env, &config_path);
    let expected = 12u64;
    wait_for(
        Duration::from_secs(60),
        || {
            format!(
                "certd's retention job to remove every old renewal{}",
                certd.describe()
            )
        },
        || (total(&env) == expected).then_some(()),
    );
    // Through certd: nothing left to remove.
    let dry = env.certctl(&["store", "prune", "--dry-run", "--json"]);
    dry.success();
    assert_eq!(dry.json()["removed"], 0, "{dry}");
    let status = status_json(&env);
    let retention = status["daemon"]["schedules"]
        .as_array()
        .expect("schedules")
        .iter()
        .find(|s| s["job"] == "retention")
        .cloned()
        .expect("a retention job");
    assert!(
        retention["last_outcome"]
            .as_str()
            .is_some_and(|o| o.starts_with("ok")),
        "{retention}"
    );
    certd.stop_ok();
    assert_consistent(&env, "after certd's prune");
}

#[test]
fn the_deny_list_keeps_a_blocked_agents_current_credentials_through_renewals() {
    let env = TestEnv::new();
    let factory = CertFactory::new();
    // Rounds around now: every credential is still valid, so each belongs in the list.
    let start = now() - 3 * ROUND + HOUR;
    let mut fleet = Fleet::new(&env, 3);
    fleet.round(&env, &factory, start, 0);
    let deny = env.file("gateway/deny.txt");
    env.certctl(&["agents", "block", &Fleet::name(1), "--deny-list", s(&deny)])
        .success();
    for k in 1..4 {
        fleet.round(&env, &factory, start, k);
    }
    env.certctl(&["agents", "deny-list"]).success();
    let list = std::fs::read_to_string(&deny).expect("read the deny list");
    let lines: Vec<&str> = list.lines().collect();
    // Only those not yet expired: the last rounds' (the first expired an hour ago).
    for cert in &fleet.issued[1] {
        let expected = cert.not_after > now();
        assert_eq!(
            lines.contains(&cert.fingerprint.as_str()),
            expected,
            "{} (expires {}) in {list}",
            cert.fingerprint,
            rfc3339(cert.not_after)
        );
    }
    let current = &fleet.issued[1][3].fingerprint;
    assert!(lines.contains(&current.as_str()), "{list}");
    for other in [0usize, 2] {
        for cert in &fleet.issued[other] {
            assert!(!lines.contains(&cert.fingerprint.as_str()), "{list}");
        }
    }
    // The pending queue answers from the agent index: the two unblocked agents, each with
    // its one present credential.
    let pending = env.certctl(&["agents", "pending", "--json"]);
    pending.success();
    let rows = pending.json();
    let rows = rows.as_array().expect("array");
    assert_eq!(rows.len(), 2, "{pending}");
    for row in rows {
        assert_eq!(
            row["certificates"].as_array().map(Vec::len),
            Some(1),
            "{row}"
        );
    }
}
