//! `certctl store backup` / `store restore` and certd's scheduled backups (issue 19), as an
//! administrator would use them: while certd runs and scans, with a regenerate workflow
//! left half-way, restored into another folder on the same machine.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use certctl_e2e::daemon::{wait_for, Certd, CertdConfig};
use certctl_e2e::*;
use serde_json::Value;

fn run(env: &TestEnv, args: &[&str]) -> RunResult {
    env.cmd().args(args).env("USER", "alice").run()
}

fn run_at(env: &TestEnv, store: &Path, args: &[&str]) -> RunResult {
    env.cmd().store(store).args(args).env("USER", "alice").run()
}

/// The CRL number `openssl crl -text` prints for a CRL file.
fn openssl_crl_number(path: &Path) -> u64 {
    let inform = if path.extension().is_some_and(|e| e == "crl") {
        "DER"
    } else {
        "PEM"
    };
    let out = std::process::Command::new("openssl")
        .args(["crl", "-inform", inform, "-noout", "-text", "-in", s(path)])
        .output()
        .expect("openssl");
    assert!(out.status.success(), "openssl crl failed on {}", s(path));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines();
    while let Some(l) = lines.next() {
        if l.contains("X509v3 CRL Number") {
            let n = lines.next().unwrap_or_default().trim();
            return n
                .parse()
                .unwrap_or_else(|_| panic!("CRL number `{n}`:\n{text}"));
        }
    }
    panic!("no CRL number in:\n{text}")
}

/// The manifest of a backup file (`tar -xOf FILE manifest.json`).
fn manifest(file: &Path) -> Value {
    let out = std::process::Command::new("tar")
        .args(["-xOf", s(file), "manifest.json"])
        .output()
        .expect("tar");
    assert!(out.status.success(), "tar could not read {}", s(file));
    serde_json::from_slice(&out.stdout).expect("manifest JSON")
}

/// A managed CA with an encrypted key (so that certd leaves its half-way workflow alone),
/// a certificate it issued, and a regenerate of it aborted after the key step.
fn ca_with_half_way_workflow(env: &TestEnv) -> (std::path::PathBuf, String) {
    let pass = env.file("secrets/ops.pass");
    std::fs::create_dir_all(pass.parent().unwrap()).unwrap();
    std::fs::write(&pass, "ops passphrase\n").unwrap();
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let published = env.mkdir("pub").join("ops.crl");
    run(
        env,
        &[
            "ca",
            "init",
            "--name",
            "ops",
            "--passphrase-file",
            s(&pass),
            "--crl-out",
            s(&published),
        ],
    )
    .success();
    let out = env.mkdir("certs");
    let r = run(
        env,
        &[
            "issue",
            "--ca",
            "ops",
            "--cn",
            "half.example.com",
            "--role",
            "gateway",
            "--out",
            s(&out),
            "--passphrase-file",
            s(&pass),
        ],
    );
    r.success();
    let old = r
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("fingerprint (SHA-256): "))
        .expect("fingerprint line")
        .trim()
        .to_string();
    let r = env
        .cmd()
        .args(["regenerate", &old, "--yes", "--passphrase-file", s(&pass)])
        .env("CERTCTL_TEST_ABORT_AFTER_STEP", "1")
        .run();
    assert_eq!(r.status.signal(), Some(6), "abort after step 1{r}");
    (pass, old)
}

/// The demo fleet written to ROOT/fleet and scanned into `store`; its folder.
fn demo_fleet(env: &TestEnv, store: &Path) -> PathBuf {
    let fleet = env.root().join("fleet");
    env.cmd()
        .store(store)
        .args(["demo", "--dir", s(&fleet)])
        .timeout(Duration::from_secs(600))
        .run()
        .success();
    fleet
}

fn by_name(env: &TestEnv, store: &Path, name: &str) -> Vec<Value> {
    let r = run_at(env, store, &["list", "--json", "--name", name]);
    r.success();
    r.json()
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c["subject_cn"] == name)
        .collect()
}

#[test]
fn a_backup_taken_while_certd_scans_restores_elsewhere_and_carries_on() {
    let env = TestEnv::new();
    let (pass, old) = ca_with_half_way_workflow(&env);
    let workflows = run(&env, &["workflows", "--json"]).json();
    assert_eq!(workflows[0]["step"], "key-generated", "{workflows}");
    let published = env.root().join("pub/ops.crl");
    let crl_at_backup = openssl_crl_number(&published);

    // A fleet of a few thousand files for certd to scan while the backup is taken.
    let fleet = demo_fleet(&env, &env.root().join("demo-store"));
    let config = CertdConfig::new(env.store())
        .source(&fleet, None)
        .write(&env.file("etc/certd.toml"));
    let certd = Certd::start(&env, &config);

    let backup = env.root().join("backups/store.tar");
    std::fs::create_dir_all(backup.parent().unwrap()).unwrap();
    let r = run(&env, &["store", "backup", "--out", s(&backup), "--json"]);
    r.success();
    let report = r.json();
    assert_eq!(report["file"], s(&backup));
    let mode = std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the backup holds keys");
    let m = manifest(&backup);
    assert_eq!(m["format"], 1);
    assert!(m["created"].as_str().unwrap().ends_with('Z'), "{m}");
    assert!(m["members"]
        .as_array()
        .unwrap()
        .iter()
        .all(|x| x["sha256"].as_str().unwrap().len() == 64));
    // The CA key is in the backup exactly as stored: still encrypted.
    let key = std::process::Command::new("tar")
        .args(["-xOf", s(&backup), "files/ca/ops/ca.key"])
        .output()
        .unwrap();
    let key = String::from_utf8_lossy(&key.stdout).into_owned();
    assert!(key.contains("BEGIN ENCRYPTED PRIVATE KEY"), "{key}");
    assert_eq!(
        key,
        std::fs::read_to_string(env.store().join("ca/ops/ca.key")).unwrap()
    );

    // After the backup, the running store revokes and publishes a newer CRL.
    let victim_dir = env.mkdir("later");
    let r = run(
        &env,
        &[
            "issue",
            "--ca",
            "ops",
            "--cn",
            "later.example.com",
            "--role",
            "gateway",
            "--out",
            s(&victim_dir),
            "--passphrase-file",
            s(&pass),
        ],
    );
    r.success();
    let later = r
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("fingerprint (SHA-256): "))
        .unwrap()
        .trim()
        .to_string();
    run(
        &env,
        &[
            "revoke",
            &later,
            "--reason",
            "superseded",
            "--yes",
            "--passphrase-file",
            s(&pass),
        ],
    )
    .success();
    let crl_after = openssl_crl_number(&published);
    assert!(crl_after > crl_at_backup);
    drop(certd);

    // Restored into a fresh folder, as another path, on the same machine.
    let restored = env.root().join("elsewhere/store");
    let r = env
        .cmd()
        .no_store()
        .args([
            "store",
            "restore",
            s(&backup),
            "--store",
            s(&restored),
            "--json",
        ])
        .run();
    r.success();
    let rep = r.json();
    assert_eq!(rep["verification"]["problems"], serde_json::json!([]));
    assert_eq!(rep["newer_crls"], serde_json::json!(["ops"]), "{rep}");
    run_at(&env, &restored, &["store", "verify"]).success();

    // The same counts as at the backup point.
    let stats = run_at(&env, &restored, &["stats", "--json"]).json();
    assert_eq!(stats["total"], m["counts"]["certificates"], "{stats}\n{m}");
    assert!(stats["total"].as_u64().unwrap() > 1);

    // status says from when, and which CA published a newer CRL.
    run_at(&env, &restored, &["status"])
        .success()
        .stdout_has("restored: from a backup of")
        .stdout_has("must be redone")
        .stdout_has("newer than the backup: ops");

    // The CA issues and revokes; its CRL number continues above the published one.
    let out2 = env.mkdir("after-restore");
    let r = run_at(
        &env,
        &restored,
        &[
            "issue",
            "--ca",
            "ops",
            "--cn",
            "restored.example.com",
            "--role",
            "gateway",
            "--out",
            s(&out2),
            "--passphrase-file",
            s(&pass),
        ],
    );
    r.success();
    let fresh = r
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("fingerprint (SHA-256): "))
        .unwrap()
        .trim()
        .to_string();
    run_at(
        &env,
        &restored,
        &[
            "revoke",
            &fresh,
            "--reason",
            "superseded",
            "--yes",
            "--passphrase-file",
            s(&pass),
        ],
    )
    .success();
    let crl_now = openssl_crl_number(&published);
    assert!(
        crl_now > crl_after,
        "CRL number {crl_now} reused or went back (published {crl_after})"
    );

    // The half-way workflow resumes (in the restored folder) to exactly one new certificate.
    let id = workflows[0]["id"].to_string();
    run_at(
        &env,
        &restored,
        &["workflows", "resume", &id, "--passphrase-file", s(&pass)],
    )
    .success();
    let wf = run_at(&env, &restored, &["workflows", "--json"]).json();
    assert_eq!(wf[0]["step"], "done", "{wf}");
    let certs = by_name(&env, &restored, "half.example.com");
    assert_eq!(certs.len(), 2, "old and exactly one new: {certs:?}");
    assert!(certs
        .iter()
        .any(|c| c["fingerprint_sha256"] == old.as_str()));
    std::fs::remove_dir_all(&fleet).ok();
}

#[test]
fn a_damaged_or_cut_backup_is_refused_naming_the_member_and_nothing_is_left() {
    let env = TestEnv::new();
    let fleet = demo_fleet(&env, env.store());
    let backup = env.root().join("b.tar");
    run(&env, &["store", "backup", "--out", s(&backup)]).success();
    let bytes = std::fs::read(&backup).unwrap();

    // One flipped byte in the middle: inside the store's dump, the largest member.
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 0x01;
    let damaged = env.root().join("damaged.tar");
    std::fs::write(&damaged, &flipped).unwrap();
    let target = env.root().join("restored");
    env.cmd()
        .no_store()
        .args(["store", "restore", s(&damaged), "--store", s(&target)])
        .run()
        .expect_code(4)
        .stderr_has("store/tree.bin");
    assert!(!target.exists(), "nothing restored");

    // Cut short.
    let cut = env.root().join("cut.tar");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let r = env
        .cmd()
        .no_store()
        .args(["store", "restore", s(&cut), "--store", s(&target)])
        .run();
    r.expect_code(4).stderr_has("member `");
    assert!(!target.exists(), "nothing restored");
    let leftovers: Vec<_> = std::fs::read_dir(env.root())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".restore-"))
        .collect();
    assert!(leftovers.is_empty(), "a half-restored folder was left");

    // Into a folder that holds something: refused, naming what is there.
    let busy = env.mkdir("busy");
    std::fs::write(busy.join("notes.txt"), "mine").unwrap();
    env.cmd()
        .no_store()
        .args(["store", "restore", s(&backup), "--store", s(&busy)])
        .run()
        .expect_code(4)
        .stderr_has("notes.txt");

    // The good one restores.
    env.cmd()
        .no_store()
        .args(["store", "restore", s(&backup), "--store", s(&target)])
        .run()
        .success()
        .stdout_has("consistent");
    std::fs::remove_dir_all(&fleet).ok();
}

#[test]
fn kill_9_of_certd_during_a_backup_leaves_nothing_at_the_target_name() {
    let env = TestEnv::new();
    let fleet = demo_fleet(&env, env.store());
    let config = CertdConfig::new(env.store()).write(&env.file("etc/certd.toml"));
    let mut certd = Certd::spawn_with_vars(
        &env,
        &config,
        &[],
        &[("CERTCTL_TEST_CRASH_AT", "backup:half-written")],
    );
    certd.wait_ready();
    let backup = env.root().join("b.tar");
    let r = run(&env, &["store", "backup", "--out", s(&backup)]);
    assert_ne!(r.code(), 0, "certd died mid-way{r}");
    wait_for(
        Duration::from_secs(10),
        || "certd to die".into(),
        || certd.try_exit(),
    );
    assert!(!backup.exists(), "a partial file at the target name");
    drop(certd);
    std::fs::remove_dir_all(&fleet).ok();
}

#[test]
fn scheduled_backups_keep_the_newest_two() {
    let env = TestEnv::new();
    run(&env, &["ca", "init", "--name", "root"]).success();
    let dir = env.root().join("backups");
    let config = CertdConfig::new(env.store()).write(&env.file("etc/certd.toml"));
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[backup]\nschedule = \"* * * * * *\"\ndir = \"{}\"\nkeep = 2\nwarn_after = \"1h\"\n",
        s(&dir)
    ));
    std::fs::write(&config, text).unwrap();
    let certd = Certd::start(&env, &config);
    certd.wait_for_log("backup written", Duration::from_secs(30));
    let names = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("certctl-backup-") && n.ends_with(".tar"))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    wait_for(
        Duration::from_secs(30),
        || format!("three scheduled backups\n{}", certd.log()),
        || (certd.log().matches("backup written").count() >= 3).then_some(()),
    );
    drop(certd);
    let kept = names();
    assert_eq!(kept.len(), 2, "{kept:?}");
    // Each kept one restores.
    let target = env.root().join("r");
    env.cmd()
        .no_store()
        .args([
            "store",
            "restore",
            s(&dir.join(&kept[1])),
            "--store",
            s(&target),
        ])
        .run()
        .success();
}

#[test]
fn check_warns_when_the_newest_backup_is_too_old() {
    let env = TestEnv::new();
    run(&env, &["ca", "init", "--name", "root"]).success();
    let dir = env.mkdir("backups");
    let config = CertdConfig::new(env.store()).write(&env.file("etc/certd.toml"));
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[backup]\nschedule = \"0 0 1 1 *\"\ndir = \"{}\"\nwarn_after = \"1h\"\n",
        s(&dir)
    ));
    std::fs::write(&config, text).unwrap();
    let certd = Certd::start(&env, &config);
    run(&env, &["check"])
        .expect_code(1)
        .stdout_has("no good backup");
    // A backup in the folder under the scheduled name: no more warning.
    let t = now();
    let name = time::OffsetDateTime::from_unix_timestamp(t)
        .unwrap()
        .format(time::macros::format_description!(
            "certctl-backup-[year][month][day]T[hour][minute][second]Z.tar"
        ))
        .unwrap();
    run(&env, &["store", "backup", "--out", s(&dir.join(name))]).success();
    run(&env, &["check"]).success();
    drop(certd);
}
