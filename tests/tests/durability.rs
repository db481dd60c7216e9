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
