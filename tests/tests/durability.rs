//! Durability: an old store opens and is upgraded; `kill -9` at random moments of a scan
//! or a regenerate workflow loses nothing and leaves the store consistent; a full disk is
//! a clear error and the store still opens.
//!
//! Every check of consistency is `certctl store verify`, which reads the whole store and
//! compares records, index entries and file states (see `store/src/verify.rs`).

use std::path::{Path, PathBuf};
use std::process::Command;

use certctl_e2e::*;
use serde_json::Value;

/// The fixture store written by the first release (record format 1), and what that
/// release printed for it (see `tests/fixtures/store-v1/make.sh`).
fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/store-v1")
        .join(name)
}

/// `certctl store verify --json`, asserting a consistent store.
fn assert_consistent(env: &TestEnv, store: &Path, context: &str) -> Value {
    let run = env
        .cmd()
        .store(store)
        .args(["store", "verify", "--json"])
        .run();
    let v = run.json();
    assert_eq!(
        run.code(),
        0,
        "{context}: the store is inconsistent: {v:#}\n{run}"
    );
    assert_eq!(v["problems"], Value::Array(vec![]), "{context}");
    v
}

/// Drops what depends on the clock (`days_left`, `status`) from list entries.
fn timeless(mut items: Vec<Value>) -> Vec<Value> {
    for item in &mut items {
        let obj = item.as_object_mut().expect("list entries are objects");
        obj.remove("days_left");
        obj.remove("status");
    }
    items
}

mod migration {
    use super::*;

    #[test]
    fn a_store_of_the_first_release_opens_upgraded_with_nothing_lost() {
        let env = TestEnv::new();
        let status = Command::new("tar")
            .arg("-xzf")
            .arg(fixture("store.tar.gz"))
            .arg("-C")
            .arg(env.root())
            .status()
            .expect("run tar");
        assert!(status.success(), "unpack the fixture store");
        // The tarball holds `store/`, which is where TestEnv points --store.
        let store = env.store().to_path_buf();
        assert!(
            store.join("db").exists(),
            "the fixture unpacked into {store:?}"
        );

        let expected: Vec<Value> = serde_json::from_str(
            &std::fs::read_to_string(fixture("expected-list.json")).expect("read expected"),
        )
        .expect("expected list is JSON");
        assert_eq!(expected.len(), 7, "the fixture holds 7 certificates");

        // The first command on the old store upgrades it and answers as release 1 did.
        let list = env.cmd().store(&store).args(["list", "--json"]).run();
        list.success();
        let got: Vec<Value> = serde_json::from_value(list.json()).expect("list is an array");
        assert_eq!(timeless(got), timeless(expected.clone()));

        // Key identifiers were hex strings in format 1 and are bytes now: same JSON.
        let with_ski = expected
            .iter()
            .filter(|c| c["subject_key_id"].is_string())
            .count();
        assert!(with_ski >= 6, "the fixture exercises key identifiers");

        // Every record is in the current format and every index agrees.
        let v = assert_consistent(&env, &store, "after the upgrade");
        assert_eq!(v["records"], 7);

        // Queries that use the indexes find the old records.
        let revoked = env
            .cmd()
            .store(&store)
            .args(["show", "agent-3.fleet.example", "--json"])
            .run();
        revoked.success();
        assert_eq!(revoked.json()[0]["revoked"], true, "{revoked}");
        let by_role = env.list_json(&["--role", "agent"]);
        assert_eq!(by_role.len(), 3);
        // The agent index (schema 3) was built at the upgrade: the pending queue answers
        // from it, and `store verify` above checked it against every agent record.
        let pending = env
            .cmd()
            .store(&store)
            .args(["agents", "pending", "--json"])
            .run();
        pending.success();
        let agents: Vec<Value> = serde_json::from_value(pending.json()).expect("an array");
        let names: Vec<&str> = agents.iter().filter_map(|a| a["agent"].as_str()).collect();
        // agent-3's certificate is revoked: not pending.
        assert_eq!(
            names,
            ["agent-1.fleet.example", "agent-2.fleet.example"],
            "{pending}"
        );
        let stats = env.cmd().store(&store).args(["stats", "--json"]).run();
        let expected_stats: Value = serde_json::from_str(
            &std::fs::read_to_string(fixture("expected-stats.json")).expect("read stats"),
        )
        .expect("stats JSON");
        let got_stats = stats.json();
        for field in ["total", "by_role", "by_key", "by_credential_kind"] {
            assert_eq!(got_stats[field], expected_stats[field], "stats {field}");
        }

        // The managed CA of release 1 still issues, and its new certificate is stored.
        env.cmd()
            .store(&store)
            .args([
                "issue",
                "--ca",
                "fixture-root",
                "--cn",
                "after-upgrade.example.net",
                "--role",
                "gateway",
                "--validity",
                "30d",
                "--out",
            ])
            .arg(env.mkdir("issued"))
            .run()
            .success();
        let v = assert_consistent(&env, &store, "after issuing");
        assert_eq!(v["records"], 8);
    }
}

mod crashes {
    //! `kill -9` of certd at random moments. The moments come from a seeded generator; the
    //! seed is printed and can be replayed with `CERTCTL_CRASH_SEED=N`. The number of runs
    //! is `CERTCTL_CRASH_RUNS` (default 20 per test).
    use super::*;
    use certctl_e2e::daemon::{Certd, CertdConfig};
    use rustix::process::Signal;
    use std::collections::BTreeSet;
    use std::time::{Duration, Instant};

    /// xorshift64*: small, deterministic for a seed.
    struct Moments(u64);

    impl Moments {
        fn from_env(test: &str) -> Moments {
            let seed = std::env::var("CERTCTL_CRASH_SEED")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| {
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_nanos() as u64)
                        .unwrap_or(1)
                })
                | 1;
            eprintln!("{test}: CERTCTL_CRASH_SEED={seed}");
            Moments(seed)
        }

        /// A moment in `0..=max`.
        fn up_to(&mut self, max: Duration) -> Duration {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let r = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
            let micros = u64::try_from(max.as_micros()).unwrap_or(u64::MAX).max(1);
            Duration::from_micros(r % (micros + 1))
        }
    }

    fn runs() -> usize {
        std::env::var("CERTCTL_CRASH_RUNS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(20)
    }

    /// The fingerprints `list --json` shows, each once (a duplicate fails the test).
    fn listed_fingerprints(env: &TestEnv) -> BTreeSet<String> {
        let items = env.list_json(&[]);
        let mut set = BTreeSet::new();
        for c in &items {
            let fp = c["fingerprint_sha256"]
                .as_str()
                .expect("fingerprint")
                .to_string();
            assert!(set.insert(fp.clone()), "{fp} is listed twice");
        }
        set
    }

    /// Kills certd with SIGKILL and waits for it to be gone.
    fn kill_9(mut certd: Certd<'_>) {
        certd.signal(Signal::KILL);
        assert!(
            certd.wait_exit(Duration::from_secs(10)).is_some(),
            "certd survived SIGKILL"
        );
    }

    #[test]
    fn kill_9_during_large_scans_keeps_the_store_whole() {
        let env = TestEnv::new();
        let tree = env.mkdir("fleet");
        let mut expected = certctl_e2e::daemon::write_bulk_pems(&tree, 4000, 400);
        let config = CertdConfig::new(env.store()).write(&env.file("etc/certd.toml"));
        let mut moments = Moments::from_env("kill_9_during_large_scans");

        // How long one full scan through certd takes here, so the kills land inside.
        let certd = Certd::start(&env, &config);
        let begun = Instant::now();
        env.certctl(&["scan", "--full", s(&tree)]).success();
        let scan_time = begun.elapsed();
        certd.stop_ok();
        assert_eq!(listed_fingerprints(&env).len(), expected.len());

        let mut killed_mid_scan = 0;
        for run in 0..runs() {
            // Each run also brings new files, so every scan has new records to write.
            let more = env.mkdir(&format!("fleet/new-{run:02}"));
            expected.extend(certctl_e2e::daemon::write_bulk_pems(&more, 200, 100));
            let certd = Certd::start(&env, &config);
            let moment = moments.up_to(scan_time);
            let result = std::thread::scope(|scope| {
                let scan = scope.spawn(|| env.certctl(&["scan", "--full", s(&tree)]));
                std::thread::sleep(moment);
                kill_9(certd);
                scan.join().expect("scan thread")
            });
            if result.code() != 0 {
                killed_mid_scan += 1;
            }
            // certd is dead: certctl opens the store itself. It must open and be whole.
            assert_consistent(&env, env.store(), &format!("run {run}, after kill -9"));
            let listed = listed_fingerprints(&env);
            assert!(
                listed.is_subset(&expected),
                "run {run}: certificates that were never written: {:?}",
                listed.difference(&expected).take(3).collect::<Vec<_>>()
            );
        }
        eprintln!(
            "{killed_mid_scan} of {} kills hit a running scan (one scan: {scan_time:?})",
            runs()
        );
        assert!(
            killed_mid_scan >= runs() / 4,
            "only {killed_mid_scan} of {} kills hit a running scan: the test did not test",
            runs()
        );

        // One scan to the end: every certificate is there exactly once.
        env.certctl(&["scan", s(&tree)]).success();
        assert_consistent(&env, env.store(), "after the final scan");
        assert_eq!(listed_fingerprints(&env), expected);
        let v = assert_consistent(&env, env.store(), "final");
        assert_eq!(v["records"].as_u64(), Some(expected.len() as u64), "{v}");
    }

    /// The certificates whose subject CN or a SAN is exactly `name` (every renewal).
    fn by_name(env: &TestEnv, name: &str) -> Vec<Value> {
        let r = env.certctl(&["show", name, "--all", "--json"]);
        r.success();
        match r.json() {
            Value::Array(items) => items,
            other => panic!("show --json printed {other}"),
        }
    }

    /// The regenerate workflow that replaces `old`, if one was recorded.
    fn workflow_of(env: &TestEnv, old: &str) -> Option<Value> {
        let r = env.certctl(&["workflows", "--json"]);
        r.success();
        r.json()
            .as_array()
            .expect("workflows --json is an array")
            .iter()
            .find(|w| w["old_fingerprint"] == old)
            .cloned()
    }

    /// Issues `CN` from the managed CA into `deploy/CN/` and inventories the files.
    fn issue_deployed(env: &TestEnv, cn: &str) -> (String, PathBuf) {
        let dir = env.mkdir(&format!("deploy/{cn}"));
        env.certctl(&[
            "issue",
            "--ca",
            "crash-ca",
            "--cn",
            cn,
            "--role",
            "gateway",
            "--validity",
            "30d",
            "--out",
            s(&dir),
        ])
        .success();
        env.certctl(&["scan", s(&dir)]).success();
        let certs = by_name(env, cn);
        assert_eq!(certs.len(), 1, "{cn} issued once");
        let fp = certs[0]["fingerprint_sha256"]
            .as_str()
            .expect("fp")
            .to_string();
        (fp, dir.join(format!("{cn}.pem")))
    }

    fn regenerate_args(fp: &str) -> Vec<String> {
        [
            "regenerate",
            fp,
            "--deploy",
            "--revoke-old",
            "--yes",
            "--json",
        ]
        .map(String::from)
        .to_vec()
    }

    #[test]
    fn kill_9_during_regenerate_workflows_resumes_to_exactly_one_new_certificate_each() {
        let env = TestEnv::new();
        env.certctl(&["ca", "init", "--name", "crash-ca", "--validity", "365d"])
            .success();
        let config = CertdConfig::new(env.store()).write(&env.file("etc/certd.toml"));
        let mut moments = Moments::from_env("kill_9_during_regenerate_workflows");

        // How long one regenerate through certd takes here: the fastest of three, so that a
        // slow first one (cold caches, a busy machine) does not put most kills after the end.
        let regenerate_time = (0..3)
            .map(|n| {
                let (fp, _) = issue_deployed(&env, &format!("calibrate-{n}.crash.example"));
                let certd = Certd::start(&env, &config);
                let begun = Instant::now();
                env.certctl(
                    &regenerate_args(&fp)
                        .iter()
                        .map(String::as_str)
                        .collect::<Vec<_>>(),
                )
                .success();
                let took = begun.elapsed();
                certd.stop_ok();
                took
            })
            .min()
            .unwrap_or_default();

        let (mut interrupted, mut resumed_by_certd) = (0, 0);
        for run in 0..runs() {
            let cn = format!("wf-{run:02}.crash.example");
            let (old, deployed) = issue_deployed(&env, &cn);
            let certd = Certd::start(&env, &config);
            let moment = moments.up_to(regenerate_time);
            let result = std::thread::scope(|scope| {
                let args = regenerate_args(&old);
                let env = &env;
                let regen = scope.spawn(move || {
                    env.certctl(&args.iter().map(String::as_str).collect::<Vec<_>>())
                });
                std::thread::sleep(moment);
                kill_9(certd);
                regen.join().expect("regenerate thread")
            });
            if result.code() != 0 {
                interrupted += 1;
            }
            assert_consistent(&env, env.store(), &format!("{cn}: after kill -9"));

            // certd resumes unfinished workflows when it starts.
            let certd = Certd::start(&env, &config);
            if let Some(wf) = workflow_of(&env, &old) {
                if wf["step"] != "done" {
                    resumed_by_certd += 1;
                }
                certctl_e2e::daemon::wait_for(
                    Duration::from_secs(20),
                    || format!("{cn}: workflow not finished: {:?}", workflow_of(&env, &old)),
                    || workflow_of(&env, &old).filter(|w| w["step"] == "done"),
                );
            }
            certd.stop_ok();
            // Killed before the workflow was even recorded: the admin runs it again.
            if workflow_of(&env, &old).is_none() {
                env.certctl(
                    &regenerate_args(&old)
                        .iter()
                        .map(String::as_str)
                        .collect::<Vec<_>>(),
                )
                .success();
            }

            let wf = workflow_of(&env, &old).expect("a workflow");
            assert_eq!(wf["step"], "done", "{cn}: {wf:#}");
            let certs = by_name(&env, &cn);
            assert_eq!(
                certs.len(),
                2,
                "{cn}: the old and exactly one new certificate: {certs:#?}\nworkflow: {wf:#}"
            );
            let new = certs
                .iter()
                .find(|c| c["fingerprint_sha256"] != old.as_str())
                .expect("the new certificate");
            assert_eq!(wf["new_fingerprint"], new["fingerprint_sha256"], "{cn}");
            let old_cert = certs
                .iter()
                .find(|c| c["fingerprint_sha256"] == old.as_str())
                .expect("the old certificate");
            assert_eq!(old_cert["revoked"], true, "{cn}: old one revoked");
            assert_eq!(new["revoked"], false, "{cn}: new one not revoked");
            // The deployed file holds the new certificate.
            let inspect = env
                .cmd()
                .no_store()
                .args(["inspect", s(&deployed), "--json"])
                .run();
            inspect.success();
            assert_eq!(
                inspect.json()[0]["fingerprint_sha256"],
                new["fingerprint_sha256"],
                "{cn}: {deployed:?} holds the new certificate"
            );
            assert_consistent(&env, env.store(), &format!("{cn}: at the end"));
        }
        eprintln!(
            "{interrupted} of {} regenerations interrupted, {resumed_by_certd} resumed by certd \
             (one regenerate: {regenerate_time:?})",
            runs()
        );
        assert!(
            interrupted >= runs() / 4,
            "only {interrupted} of {} kills interrupted a regenerate: the test did not test",
            runs()
        );
    }
}

mod disk_full {
    //! A full disk: the write is refused with a clear error before sled sees ENOSPC (sled
    //! 0.34 can lose its log when a write fails half-way), what was stored before stays,
    //! and the store opens and verifies. Once there is space again the same scan completes.
    use super::*;
    use certctl_e2e::daemon::write_bulk_pems;

    /// A small tmpfs mounted for the test, unmounted when dropped.
    struct SmallDisk(PathBuf);

    impl SmallDisk {
        /// Mounts a tmpfs of `mib` MiB at `at`, or says why it cannot (not root, no
        /// CAP_SYS_ADMIN in a container).
        fn mount(at: &Path, mib: u32) -> Result<SmallDisk, String> {
            std::fs::create_dir_all(at).map_err(|e| e.to_string())?;
            let out = Command::new("mount")
                .args([
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={mib}m,mode=0700"),
                    "tmpfs",
                ])
                .arg(at)
                .output()
                .map_err(|e| format!("cannot run mount: {e}"))?;
            if !out.status.success() {
                return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
            }
            Ok(SmallDisk(at.to_path_buf()))
        }
    }

    impl Drop for SmallDisk {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }

    /// The scan of `second` fails for lack of space; what `first` stored stays.
    fn assert_refused_and_whole(
        env: &TestEnv,
        store: &Path,
        second: &Path,
        first_count: usize,
        extra_env: &[(&str, &str)],
    ) {
        let mut cmd = env.cmd().store(store).args(["scan", s(second)]);
        for (k, v) in extra_env {
            cmd = cmd.env(k, v);
        }
        let r = cmd.run();
        r.expect_code(4)
            .stderr_has("not enough free space for the store")
            .stderr_has(s(store))
            .stderr_has("free some space and retry")
            .stderr_has("the scan stopped: 0 new certificates of earlier batches stay stored");
        assert!(!r.stderr.contains("panicked"), "{r}");
        let v = assert_consistent(env, store, "after the refused scan");
        assert_eq!(
            v["records"].as_u64(),
            Some(first_count as u64),
            "the first scan's certificates stay, nothing of the refused one was half-stored"
        );
    }

    #[test]
    fn a_full_file_system_refuses_the_write_and_the_store_stays_usable() {
        let env = TestEnv::new();
        let disk = match SmallDisk::mount(&env.root().join("small"), 48) {
            Ok(d) => d,
            Err(why) => {
                // The injected variant below covers the same path on machines without it.
                eprintln!("SKIPPED: cannot mount a small tmpfs here ({why})");
                return;
            }
        };
        let store = disk.0.join("store");
        let first = write_bulk_pems(&env.mkdir("first"), 2000, 500);
        let second = env.mkdir("second");
        let second_fps = write_bulk_pems(&second, 2000, 500);
        env.cmd()
            .store(&store)
            .args(["scan", s(&env.root().join("first"))])
            .run()
            .success();

        // Something else fills the disk, leaving 2 MiB.
        let filler = disk.0.join("filler");
        let free = rustix::fs::statvfs(&disk.0).expect("statvfs");
        let fill = (free.f_bavail * free.f_frsize).saturating_sub(2 << 20);
        let file = std::fs::File::create(&filler).expect("create filler");
        file.set_len(0).expect("truncate");
        std::io::Write::write_all(
            &mut std::io::BufWriter::new(&file),
            &vec![0u8; usize::try_from(fill).expect("fits")],
        )
        .expect("fill the disk");
        drop(file);

        assert_refused_and_whole(&env, &store, &second, first.len(), &[]);
        let listed = env.cmd().store(&store).args(["list", "--json"]).run();
        assert_eq!(listed.json().as_array().map(Vec::len), Some(first.len()));

        // Space comes back: the same scan now completes.
        std::fs::remove_file(&filler).expect("remove filler");
        env.cmd()
            .store(&store)
            .args(["scan", s(&second)])
            .run()
            .success();
        let v = assert_consistent(&env, &store, "after space came back");
        assert_eq!(
            v["records"].as_u64(),
            Some((first.len() + second_fps.len()) as u64)
        );
    }

    /// Issue 13: a command run while the disk is completely full (ENOSPC in the middle of
    /// sled's own snapshot) used to leave a 0-byte `snap.*.generating` file that made every
    /// later open fail with "Read corrupted data" even after space came back.
    #[test]
    fn a_command_on_a_completely_full_disk_leaves_the_store_openable() {
        let env = TestEnv::new();
        let disk = match SmallDisk::mount(&env.root().join("tiny"), 8) {
            Ok(d) => d,
            Err(why) => {
                eprintln!("SKIPPED: cannot mount a small tmpfs here ({why})");
                return;
            }
        };
        let store = disk.0.join("store");
        let first = write_bulk_pems(&env.mkdir("first"), 3, 3);
        let second = write_bulk_pems(&env.mkdir("second"), 40, 40);
        env.cmd()
            .store(&store)
            .args(["scan", s(&env.root().join("first"))])
            .run()
            .success();
        // A reopened store has a snapshot of sled's: the next one is what a full disk breaks.
        env.cmd().store(&store).args(["list"]).run().success();

        // Something else takes every last byte.
        let filler = disk.0.join("filler");
        let mut file = std::fs::File::create(&filler).expect("create filler");
        let chunk = vec![0u8; 4096];
        while std::io::Write::write_all(&mut file, &chunk).is_ok() {}
        drop(file);

        // Commands on the full disk fail (with a clear error, not a panic).
        for args in [
            vec!["scan", s(&env.root().join("second"))],
            vec!["list", "--json"],
        ] {
            let r = env.cmd().store(&store).args(&args).run();
            assert_ne!(r.code(), 0, "{args:?} on a full disk cannot succeed\n{r}");
            assert!(!r.stderr.contains("panicked"), "{r}");
            assert!(
                r.stderr.contains(s(&store)),
                "the error names the store\n{r}"
            );
        }

        // Space comes back: every command works again without anyone deleting files.
        std::fs::remove_file(&filler).expect("remove filler");
        let listed = env.cmd().store(&store).args(["list", "--json"]).run();
        assert_eq!(listed.code(), 0, "the store opens again\n{listed}");
        assert_eq!(listed.json().as_array().map(Vec::len), Some(first.len()));
        env.cmd()
            .store(&store)
            .args(["scan", s(&env.root().join("second"))])
            .run()
            .success();
        let v = assert_consistent(&env, &store, "after space came back");
        assert_eq!(
            v["records"].as_u64(),
            Some((first.len() + second.len()) as u64)
        );
    }

    #[test]
    fn an_injected_lack_of_space_refuses_the_write_and_the_store_stays_usable() {
        let env = TestEnv::new();
        let first = write_bulk_pems(&env.mkdir("first"), 500, 250);
        let second = env.mkdir("second");
        let second_fps = write_bulk_pems(&second, 500, 250);
        env.certctl(&["scan", s(&env.root().join("first"))])
            .success();
        // CERTCTL_TEST_STORE_FREE_BYTES: the file system has 3 MiB free (below the reserve).
        assert_refused_and_whole(
            &env,
            env.store(),
            &second,
            first.len(),
            &[("CERTCTL_TEST_STORE_FREE_BYTES", "3145728")],
        );
        env.certctl(&["scan", s(&second)]).success();
        let v = assert_consistent(&env, env.store(), "after space came back");
        assert_eq!(
            v["records"].as_u64(),
            Some((first.len() + second_fps.len()) as u64)
        );
    }
}
