//! End-to-end tests of the fleet features through the `certctl` binary: agent
//! registrations, the pending queue, approve/block and the deny list; clock skew; every
//! report in JSON against the generated fleet; drift between served and inventoried
//! certificates; tracked enrollment bundles in `list`.
//!
//! Every certificate is generated here by the harness's [`CertFactory`] (weak RSA-1024 /
//! SHA-1 ones by openssl directly); nothing is pasted.

use std::collections::{BTreeMap, BTreeSet};

use certctl_e2e::daemon::CertdConfig;
use certctl_e2e::files;
use certctl_e2e::tls::TlsServer;
use certctl_e2e::*;
use serde_json::Value;

/// `certctl report NAME --json EXTRA...`, asserted successful: its rows.
fn report(env: &TestEnv, name: &str, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["report", name, "--json"];
    args.extend_from_slice(extra);
    let r = env.certctl(&args);
    r.success();
    let v = r.json();
    assert_eq!(v["report"], name, "{r}");
    assert!(v["generated_at"].is_string(), "{r}");
    match &v["rows"] {
        Value::Array(rows) => rows.clone(),
        other => panic!("rows is not an array but {other}{r}"),
    }
}

/// The rows keyed by one column.
fn by<'v>(rows: &'v [Value], column: &str) -> BTreeMap<String, &'v Value> {
    rows.iter()
        .map(|r| (r[column].as_str().unwrap_or("").to_string(), r))
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_str().unwrap_or_default().to_string())
        .collect()
}

fn scan(env: &TestEnv, path: &std::path::Path, role: &str) {
    env.certctl(&["scan", s(path), "--role", role]).success();
}

/// A self-signed RSA-1024 certificate signed with SHA-1 (openssl; rcgen cannot make one).
fn weak_rsa_sha1(cn: &str) -> (String, String) {
    use openssl::asn1::Asn1Time;
    use openssl::bn::BigNum;
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;
    use openssl::x509::{X509Builder, X509NameBuilder};
    let key = PKey::from_rsa(Rsa::generate(1024).expect("RSA-1024")).expect("pkey");
    let mut name = X509NameBuilder::new().expect("name");
    name.append_entry_by_text("CN", cn).expect("CN");
    let name = name.build();
    let mut b = X509Builder::new().expect("builder");
    b.set_version(2).expect("v3");
    let serial = BigNum::from_u32(4242)
        .and_then(|n| n.to_asn1_integer())
        .expect("serial");
    b.set_serial_number(&serial).expect("serial");
    b.set_subject_name(&name).expect("subject");
    b.set_issuer_name(&name).expect("issuer");
    b.set_pubkey(&key).expect("pubkey");
    b.set_not_before(&Asn1Time::days_from_now(0).expect("t"))
        .expect("nb");
    b.set_not_after(&Asn1Time::days_from_now(200).expect("t"))
        .expect("na");
    b.sign(&key, MessageDigest::sha1())
        .expect("SHA-1 signature");
    let cert = b.build();
    let pem = String::from_utf8(cert.to_pem().expect("pem")).expect("ascii");
    (pem, sha256_hex(&cert.to_der().expect("der")))
}

mod agents {
    use super::*;

    /// Six agents: two registered by name, one by fingerprint, one registered with another
    /// certificate (key-mismatch), two unknown (one of them ephemeral).
    struct Fleet {
        env: TestEnv,
        certs: BTreeMap<&'static str, GeneratedCert>,
    }

    fn fleet() -> Fleet {
        let env = TestEnv::new();
        let f = CertFactory::new();
        let mut certs = BTreeMap::new();
        for name in ["agent-1", "agent-2", "agent-3", "agent-4", "agent-5"] {
            certs.insert(name, f.leaf(CertSpec::leaf(name).expires_in_days(200)));
        }
        certs.insert(
            "agent-6",
            f.leaf(CertSpec::leaf("agent-6").valid(-HOUR, 5 * HOUR)),
        );
        for (name, c) in &certs {
            files::pem(&env.file(&format!("agents/{name}.pem")), &[c]);
        }
        scan(&env, &env.root().join("agents"), "agent");
        Fleet { env, certs }
    }

    fn pending(env: &TestEnv) -> Vec<Value> {
        let r = env.certctl(&["agents", "pending", "--json"]);
        r.success();
        r.json().as_array().cloned().unwrap_or_default()
    }

    #[test]
    fn registrations_pending_approve_block_and_deny_list() {
        let Fleet { env, certs } = fleet();
        let other = CertFactory::new().leaf(CertSpec::leaf("agent-4"));
        let csv = format!(
            "agent_name,resource_guid,spki_sha256,fingerprint\n\
             agent-1,11111111-aaaa,,\n\
             AGENT-2,{{22222222-bbbb}},,\n\
             agent-3,33333333-cccc,,{}\n\
             agent-4,44444444-dddd,,{}\n",
            certs["agent-3"].fingerprint_colons(),
            other.fingerprint
        );
        let reg_file = env.file("registrations.csv");
        files::text(&reg_file, &csv);
        let r = env.certctl(&["agents", "import-registrations", s(&reg_file), "--json"]);
        r.success();
        let imported = r.json();
        assert_eq!(imported["imported"], 4, "{r}");
        assert_eq!(imported["registrations"], 4, "{r}");
        assert_eq!(imported["pending"], 3, "{r}");

        let q = pending(&env);
        let q = by(&q, "agent");
        assert_eq!(
            q.keys().cloned().collect::<Vec<_>>(),
            ["agent-4", "agent-5", "agent-6"],
            "{q:?}"
        );
        assert_eq!(q["agent-4"]["reason"], "key-mismatch");
        assert_eq!(
            strings(&q["agent-4"]["registered_guids"]),
            ["44444444-dddd"]
        );
        assert_eq!(q["agent-5"]["reason"], "unregistered");
        for name in ["agent-4", "agent-5", "agent-6"] {
            let row = q[name];
            assert_eq!(
                strings(&row["certificates"]),
                [certs[name].fingerprint.clone()]
            );
            assert_eq!(
                strings(&row["sources"]),
                [s(&env.root().join(format!("agents/{name}.pem"))).to_string()]
            );
            let first_seen = parse_rfc3339(row["first_seen"].as_str().unwrap());
            assert!((first_seen - now()).abs() < 300, "{row}");
        }
        // The table form names them too.
        let r = env.certctl(&["agents", "pending"]);
        r.success()
            .stdout_has("agent-5")
            .stdout_has("3 agents pending");

        // Blocking needs a deny list; nothing is decided without one.
        let r = env.certctl(&["agents", "block", "agent-5"]);
        r.expect_code(4).stderr_has("--deny-list");
        assert_eq!(pending(&env).len(), 3);
        // An unknown name decides nothing, even next to a known one.
        let r = env.certctl(&["agents", "approve", "agent-5", "nobody-here"]);
        r.expect_code(4).stderr_has("nobody-here");
        assert_eq!(pending(&env).len(), 3);

        // Approve by name; block by the registered GUID; then by name with the remembered list.
        env.certctl(&["agents", "approve", "agent-5"]).success();
        let deny = env.root().join("gateway/deny.txt");
        std::fs::create_dir_all(deny.parent().unwrap()).unwrap();
        let r = env.certctl(&[
            "agents",
            "block",
            "{44444444-DDDD}",
            "--deny-list",
            s(&deny),
            "--json",
        ]);
        r.success();
        let d = r.json();
        assert_eq!(d["decided"][0]["agent"], "agent-4", "{r}");
        assert_eq!(d["decided"][0]["decision"], "blocked", "{r}");
        assert_eq!(d["deny_list_entries"], 1, "{r}");
        assert_eq!(
            std::fs::read_to_string(&deny).unwrap(),
            format!("{}\n", certs["agent-4"].fingerprint)
        );
        env.certctl(&["agents", "block", "agent-6"]).success();
        let mut expected = vec![
            certs["agent-4"].fingerprint.clone(),
            certs["agent-6"].fingerprint.clone(),
        ];
        expected.sort();
        let text = std::fs::read_to_string(&deny).unwrap();
        assert_eq!(text.lines().collect::<Vec<_>>(), expected);
        // Only the list itself is in the folder: no temporary file left behind.
        assert_eq!(
            std::fs::read_dir(deny.parent().unwrap()).unwrap().count(),
            1
        );
        assert!(pending(&env).is_empty());

        // Every decision is in the audit history of the agent's certificate.
        let r = env.certctl(&["history", &certs["agent-4"].fingerprint]);
        r.success().stdout_has("agent-blocked");
        let r = env.certctl(&["history", &certs["agent-5"].fingerprint]);
        r.success().stdout_has("agent-approved");

        // A scan finds a renewed and an expired certificate of the blocked agent-6:
        // `agents deny-list` adds the renewed one only (expired ones are left out).
        let f = CertFactory::new();
        let renewed = f.leaf(CertSpec::leaf("agent-6").valid(-MINUTE, 6 * HOUR));
        let expired = f.leaf(CertSpec::leaf("agent-6").valid(-7 * HOUR, -HOUR));
        files::pem(&env.file("agents/agent-6-new.pem"), &[&renewed]);
        files::pem(&env.file("agents/agent-6-old.pem"), &[&expired]);
        scan(&env, &env.root().join("agents"), "agent");
        let r = env.certctl(&["agents", "deny-list", "--json"]);
        r.success();
        assert_eq!(r.json()["deny_list_entries"], 3, "{r}");
        let mut expected = vec![
            certs["agent-4"].fingerprint.clone(),
            certs["agent-6"].fingerprint.clone(),
            renewed.fingerprint.clone(),
        ];
        expected.sort();
        let text = std::fs::read_to_string(&deny).unwrap();
        assert_eq!(text.lines().collect::<Vec<_>>(), expected);
        // Blocked agents stay out of the queue whatever new certificates they present.
        assert!(pending(&env).is_empty());

        // Approving a blocked agent takes it off the deny list.
        env.certctl(&["agents", "approve", "agent-4"]).success();
        let mut expected = vec![
            certs["agent-6"].fingerprint.clone(),
            renewed.fingerprint.clone(),
        ];
        expected.sort();
        let text = std::fs::read_to_string(&deny).unwrap();
        assert_eq!(text.lines().collect::<Vec<_>>(), expected);
        // The decisions, latest per agent.
        let r = env.certctl(&["agents", "decisions", "--json"]);
        r.success();
        let rows = r.json().as_array().cloned().unwrap_or_default();
        let rows = by(&rows, "agent");
        assert_eq!(
            rows.keys().cloned().collect::<Vec<_>>(),
            ["agent-4", "agent-5", "agent-6"]
        );
        assert_eq!(rows["agent-4"]["decision"], "approved");
        assert_eq!(rows["agent-4"]["guid"], "44444444-dddd");
        assert_eq!(rows["agent-6"]["decision"], "blocked");
        assert!(rows["agent-6"]["actor"].is_string());
        // pending-agents report == the (now empty) queue.
        assert!(report(&env, "pending-agents", &[]).is_empty());
    }

    /// With certd stopped, `certctl --config FILE agents ...` uses the configuration's
    /// `[agents] deny_list` as certd would: `--deny-list` given wins, then the configured
    /// path, then the remembered one; without `--config` only `--deny-list` or the
    /// remembered path count.
    #[test]
    fn direct_mode_uses_the_deny_list_of_certds_configuration() {
        let Fleet { env, certs } = fleet();
        let deny = env.mkdir("gateway").join("deny.txt");
        let config = CertdConfig::new(env.store())
            .deny_list(&deny)
            .write(&env.file("etc/certd.toml"));
        // `certctl --config FILE ...`: the store comes from the configuration too.
        let with_config = |args: &[&str]| {
            env.cmd()
                .no_store()
                .arg("--config")
                .arg(&config)
                .args(args)
                .run()
        };
        let lines = |path: &std::path::Path| -> Vec<String> {
            let text = std::fs::read_to_string(path)
                .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            text.lines().map(str::to_string).collect()
        };
        let sorted = |mut v: Vec<String>| {
            v.sort();
            v
        };

        // Without --config the configuration is not read: nothing to write to, nothing decided.
        let r = env.certctl(&["agents", "block", "agent-5"]);
        r.expect_code(4)
            .stderr_has("--deny-list")
            .stderr_has("--config");
        assert!(!deny.exists());
        assert_eq!(pending(&env).len(), 6);

        // With --config (certd not running): the configured file.
        let r = with_config(&["agents", "block", "agent-5", "--json"]);
        r.success();
        assert_eq!(r.json()["deny_list"], s(&deny), "{r}");
        assert_eq!(lines(&deny), [certs["agent-5"].fingerprint.clone()]);
        // The configured path is not remembered: without --config there is still none.
        env.certctl(&["agents", "deny-list"])
            .expect_code(4)
            .stderr_has("--deny-list");

        // --deny-list on the command line wins over the configuration (and is remembered).
        let other = env.root().join("other-deny.txt");
        let r = with_config(&[
            "agents",
            "block",
            "agent-6",
            "--deny-list",
            s(&other),
            "--json",
        ]);
        r.success();
        assert_eq!(r.json()["deny_list"], s(&other), "{r}");
        let both = sorted(vec![
            certs["agent-5"].fingerprint.clone(),
            certs["agent-6"].fingerprint.clone(),
        ]);
        assert_eq!(lines(&other), both);
        assert_eq!(lines(&deny), [certs["agent-5"].fingerprint.clone()]);

        // Without --config: the remembered path, as before.
        let r = env.certctl(&["agents", "deny-list", "--json"]);
        r.success();
        assert_eq!(r.json()["deny_list"], s(&other), "{r}");

        // With --config the configured path comes before the remembered one.
        let r = with_config(&["agents", "approve", "agent-5", "--json"]);
        r.success();
        assert_eq!(r.json()["deny_list"], s(&deny), "{r}");
        assert_eq!(lines(&deny), [certs["agent-6"].fingerprint.clone()]);
        let r = with_config(&["agents", "deny-list"]);
        r.success()
            .stdout_has(&format!("deny list {}: 1 fingerprints", s(&deny)));

        // A configuration that does not parse is an error naming the file (--store given,
        // so only the deny list needs it); nothing is decided.
        let broken = env.file("etc/broken.toml");
        files::text(
            &broken,
            &format!("store = \"{}\"\n[agents]\ndeny_list = 42\n", s(env.store())),
        );
        let r = env
            .cmd()
            .arg("--config")
            .arg(&broken)
            .args(["agents", "block", "agent-1"])
            .run();
        r.expect_code(4).stderr_has(&format!("{}:3:", s(&broken)));
        assert_eq!(lines(&deny), [certs["agent-6"].fingerprint.clone()]);
        assert!(pending(&env).iter().any(|p| p["agent"] == "agent-1"));
    }

    #[test]
    fn json_import_replaces_and_merge_adds() {
        let Fleet { env, certs } = fleet();
        let json_file = env.file("regs.json");
        let spki = certs["agent-2"].spki_sha256();
        files::text(
            &json_file,
            &format!(
                r#"[{{"agent":"agent-1","guid":"g-1"}},{{"agent":"renamed","guid":"g-2","spki_sha256":"{spki}"}}]"#
            ),
        );
        env.certctl(&["agents", "import-registrations", s(&json_file)])
            .success()
            .stdout_has("imported 2 registrations");
        let names: BTreeSet<String> = pending(&env)
            .iter()
            .map(|p| p["agent"].as_str().unwrap().to_string())
            .collect();
        // agent-2 is covered by its key even under another name.
        assert_eq!(
            names,
            ["agent-3", "agent-4", "agent-5", "agent-6"]
                .map(String::from)
                .into()
        );
        let more = env.file("more.csv");
        files::text(&more, "agent,guid\nagent-3,g-3\n");
        env.certctl(&["agents", "import-registrations", s(&more), "--merge"])
            .success();
        assert_eq!(pending(&env).len(), 3);
        // Without --merge the export replaces everything: only agent-3 stays registered.
        env.certctl(&["agents", "import-registrations", s(&more)])
            .success();
        assert_eq!(pending(&env).len(), 5);

        // Errors name the file and the row.
        let bad = env.file("bad.csv");
        files::text(&bad, "agent,guid\nagent-9,\n");
        env.certctl(&["agents", "import-registrations", s(&bad)])
            .expect_code(4)
            .stderr_has(s(&bad))
            .stderr_has("line 2");
    }
}

mod clock_skew {
    use super::*;

    #[test]
    fn future_not_before_and_inconsistent_ephemeral_windows_are_flagged() {
        let env = TestEnv::new();
        let f = CertFactory::new();
        let future = f.leaf(CertSpec::leaf("agent-future").valid(2 * HOUR, 8 * HOUR));
        let slight = f.leaf(CertSpec::leaf("agent-slight").valid(MINUTE, 6 * HOUR));
        let long_eph = f.leaf(CertSpec::leaf("agent-long").valid(-HOUR, 11 * HOUR));
        let inverted = f.leaf(CertSpec::leaf("agent-inverted").valid(HOUR, -HOUR));
        let fine = f.leaf(CertSpec::leaf("agent-fine").valid(-HOUR, 5 * HOUR));
        let gw = f.leaf(CertSpec::leaf("gw-future").valid(DAY, 300 * DAY));
        let dir = env.mkdir("agents");
        for c in [&future, &slight, &long_eph, &inverted, &fine] {
            files::pem(&dir.join(format!("{}.pem", c.cn.as_deref().unwrap())), &[c]);
        }
        files::pem(&env.file("gw/gw.pem"), &[&gw]);
        scan(&env, &dir, "agent");
        scan(&env, &env.root().join("gw"), "gateway");

        let rows = report(&env, "clock-skew", &[]);
        let rows_by = by(&rows, "agent");
        assert_eq!(
            rows_by.keys().cloned().collect::<Vec<_>>(),
            ["agent-future", "agent-inverted", "gw-future"],
            "{rows:?}"
        );
        for r in &rows {
            assert_eq!(r["finding"], "clock-skew suspected");
        }
        let fut = rows_by["agent-future"];
        assert_eq!(fut["cause"], "not-before-in-future");
        assert_eq!(fut["fingerprint_sha256"], future.fingerprint.as_str());
        assert_eq!(fut["role"], "agent");
        assert_eq!(fut["not_before"], future.not_before_rfc3339().as_str());
        let skew = fut["skew_secs"].as_i64().unwrap();
        assert!((skew - 2 * HOUR).abs() < 300, "{fut}");
        assert_eq!(
            rows_by["agent-inverted"]["cause"],
            "not-after-before-not-before"
        );
        assert_eq!(rows_by["gw-future"]["role"], "gateway");

        // A configured 6-hour ephemeral lifetime flags the 12-hour ephemeral certificate.
        let rows = report(&env, "clock-skew", &["--ephemeral-lifetime", "6h"]);
        let rows_by = by(&rows, "agent");
        assert_eq!(
            rows_by["agent-long"]["cause"],
            "validity-longer-than-ephemeral-lifetime"
        );
        assert_eq!(rows_by["agent-long"]["skew_secs"], 6 * HOUR);
        assert!(!rows_by.contains_key("agent-fine"));
        // A tolerance of 3 hours forgives the 2-hour skew.
        let rows = report(&env, "clock-skew", &["--tolerance", "3h"]);
        assert!(!by(&rows, "agent").contains_key("agent-future"));
        assert!(by(&rows, "agent").contains_key("agent-inverted"));
        // And a slightly early certificate (1 minute) is never flagged by default.
        assert!(!by(&report(&env, "clock-skew", &[]), "agent").contains_key("agent-slight"));
    }
}

mod reports {
    use super::*;

    #[test]
    fn every_inventory_report_matches_the_generated_fleet() {
        let env = TestEnv::new();
        let f = CertFactory::new();
        let other_ca = f.self_signed(CertSpec::ca("Other Root"));
        let gw = f.leaf(CertSpec::leaf("gw.example").expires_in_days(20));
        let iis = f.issue(
            CertSpec::leaf("iis.example").expires_in_days(100),
            &other_ca,
        );
        let site = f.leaf(CertSpec::leaf("site.example").expires_in_days(3));
        let old_site = f.leaf(CertSpec::leaf("site-old.example").valid(-20 * DAY, -DAY));
        // agent-a: permanent only; agent-b: ephemeral only; agent-c: both.
        let a_perm = f.leaf(CertSpec::leaf("agent-a").expires_in_days(50));
        let b_eph = f.leaf(CertSpec::leaf("agent-b").valid(-HOUR, 5 * HOUR));
        let c_perm = f.leaf(CertSpec::leaf("agent-c").expires_in_days(10));
        let c_eph = f.leaf(CertSpec::leaf("agent-c").valid(-HOUR, 5 * HOUR));
        let (weak_pem, weak_fp) = weak_rsa_sha1("legacy.example");

        files::pem(&env.file("gw/gw.pem"), &[&gw, f.intermediate()]);
        files::pem(&env.file("iis/iis.pem"), &[&iis, &other_ca]);
        files::pem(&env.file("site/site.pem"), &[&site]);
        files::pem(&env.file("site/old.pem"), &[&old_site]);
        files::text(&env.file("site/legacy.pem"), &weak_pem);
        for (i, c) in [&a_perm, &b_eph, &c_perm, &c_eph].iter().enumerate() {
            files::pem(&env.file(&format!("agents/{i}.pem")), &[c]);
        }
        scan(&env, &env.root().join("gw"), "gateway");
        scan(&env, &env.root().join("iis"), "iis");
        scan(&env, &env.root().join("site"), "site-server");
        scan(&env, &env.root().join("agents"), "agent");
        let t = now();

        // by-role: every role has a row; counts by status.
        let rows = report(&env, "by-role", &[]);
        let rows = by(&rows, "role");
        assert_eq!(rows.len(), 6);
        let expect = |role: &str, total: u64, valid: u64, expiring: u64, expired: u64| {
            let r = rows[role];
            assert_eq!(
                (
                    r["total"].as_u64(),
                    r["valid"].as_u64(),
                    r["expiring"].as_u64(),
                    r["expired"].as_u64()
                ),
                (Some(total), Some(valid), Some(expiring), Some(expired)),
                "{role}: {r}"
            );
            assert_eq!(r["revoked"], 0);
            assert_eq!(r["not_yet_valid"], 0);
        };
        expect("gateway", 1, 0, 1, 0);
        expect("iis", 1, 1, 0, 0);
        expect("site-server", 3, 1, 1, 1);
        expect("agent", 4, 1, 3, 0);
        expect("ca", 2, 2, 0, 0);
        expect("other", 0, 0, 0, 0);

        // by-issuer.
        let rows = report(&env, "by-issuer", &[]);
        let rows = by(&rows, "issuer");
        let issuing = f.intermediate().subject.as_str();
        assert_eq!(rows[issuing]["total"], 7, "{rows:?}");
        assert_eq!(rows["CN=Other Root,O=Certctl E2E"]["total"], 2, "{rows:?}");
        assert_eq!(rows["CN=legacy.example"]["total"], 1);
        assert_eq!(rows.len(), 4, "{rows:?}"); // + the root that signed the intermediate

        // agents-by-credential.
        let rows = report(&env, "agents-by-credential", &[]);
        let rows = by(&rows, "agent");
        assert_eq!(rows.len(), 3);
        assert_eq!(rows["agent-a"]["credential"], "permanent");
        assert_eq!(rows["agent-b"]["credential"], "ephemeral");
        assert_eq!(rows["agent-c"]["credential"], "both");
        assert_eq!(rows["agent-c"]["permanent"], 1);
        assert_eq!(rows["agent-c"]["ephemeral"], 1);

        // expiring: 13 weeks over 90 days; ephemeral and expired certificates excluded.
        let rows = report(&env, "expiring", &[]);
        assert_eq!(rows.len(), 13);
        let mut weeks: BTreeMap<u64, (u64, u64, u64)> = BTreeMap::new();
        for c in [&gw, &site, &a_perm, &c_perm] {
            let w = ((c.not_after - t) / (7 * DAY)) as u64 + 1;
            let e = weeks.entry(w).or_default();
            e.0 += 1;
            if c.cn.as_deref().unwrap().starts_with("agent") {
                e.1 += 1;
            }
            if c.cn.as_deref() == Some("gw.example") {
                e.2 += 1;
            }
        }
        for row in &rows {
            let w = row["week"].as_u64().unwrap();
            let (total, agents, gws) = weeks.get(&w).copied().unwrap_or_default();
            assert_eq!(row["total"], total, "{row}");
            assert_eq!(row["agent"], agents, "{row}");
            assert_eq!(row["gateway"], gws, "{row}");
        }
        assert_eq!(
            rows[0]["from"]
                .as_str()
                .map(parse_rfc3339)
                .map(|x| (x - t).abs() < 300),
            Some(true)
        );

        // weak-keys: the RSA-1024 / SHA-1 certificate only.
        let rows = report(&env, "weak-keys", &[]);
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0]["fingerprint_sha256"], weak_fp.as_str());
        assert_eq!(rows[0]["key"], "RSA 1024");
        assert_eq!(
            strings(&rows[0]["weaknesses"]),
            ["rsa-key-under-2048", "sha1-signature"]
        );

        // revoked: none yet, then the one revoked.
        assert!(report(&env, "revoked", &[]).is_empty());
        env.certctl(&[
            "revoke",
            &site.fingerprint,
            "--reason",
            "key-compromise",
            "--yes",
            "--no-probe",
        ])
        .success();
        let rows = report(&env, "revoked", &[]);
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0]["fingerprint_sha256"], site.fingerprint.as_str());
        assert_eq!(rows[0]["reason"], "key-compromise");
        assert_eq!(rows[0]["still_present"], true);
        let by_role = report(&env, "by-role", &[]);
        assert_eq!(by(&by_role, "role")["site-server"]["revoked"], 1);

        // pending-agents: every agent (no registration imported).
        let rows = report(&env, "pending-agents", &[]);
        assert_eq!(
            by(&rows, "agent").keys().cloned().collect::<Vec<_>>(),
            ["agent-a", "agent-b", "agent-c"]
        );
        assert_eq!(
            strings(&by(&rows, "agent")["agent-c"]["certificates"]).len(),
            2
        );

        // CSV: the columns as header, arrays joined with `;`; a table on a terminal.
        let r = env.certctl(&["report", "weak-keys", "--csv"]);
        r.success();
        let csv = parse_csv(&r.stdout);
        assert_eq!(csv[0][0], "fingerprint_sha256");
        assert_eq!(csv[1][5], "rsa-key-under-2048;sha1-signature");
        env.certctl(&["report", "by-role"])
            .success()
            .stdout_has("ROLE")
            .stdout_has("site-server");
        env.certctl(&["report", "nonsense"]).expect_code(64);
    }
}

mod endpoints {
    use super::*;

    /// A gateway serving an old certificate while the renewed one is on disk; an IIS site
    /// serving a certificate found in no file; agents issued by the gateway's CA.
    #[test]
    fn drift_gateways_and_endpoint_findings() {
        let env = TestEnv::new();
        let f = CertFactory::new();
        let old = f.leaf(
            CertSpec::leaf("gw.example")
                .dns("localhost")
                .expires_in_days(40),
        );
        let renewed = f.leaf(
            CertSpec::leaf("gw.example")
                .dns("localhost")
                .expires_in_days(400),
        );
        let stray = f.leaf(CertSpec::leaf("iis.example").expires_in_days(60));
        let agent_perm = f.leaf(CertSpec::leaf("agent-1").expires_in_days(100));
        let agent_eph = f.leaf(CertSpec::leaf("agent-1").valid(-HOUR, 5 * HOUR));
        let agent2 = f.leaf(CertSpec::leaf("agent-2").valid(-HOUR, 5 * HOUR));
        let foreign_root = f.self_signed(CertSpec::ca("Foreign Root"));
        let foreign_agent = f.issue(
            CertSpec::leaf("agent-9").expires_in_days(100),
            &foreign_root,
        );

        files::pem(
            &env.file("gw/gw.pem"),
            &[&renewed, f.intermediate(), f.root()],
        );
        for (i, c) in [&agent_perm, &agent_eph, &agent2, &foreign_agent]
            .iter()
            .enumerate()
        {
            files::pem(&env.file(&format!("agents/{i}.pem")), &[c]);
        }
        scan(&env, &env.root().join("gw"), "gateway");
        scan(&env, &env.root().join("agents"), "agent");

        let gw_server = TlsServer::serve(&old, &[f.intermediate()]);
        let iis_server = TlsServer::serve(&stray, &[f.intermediate()]);
        env.certctl(&[
            "probe",
            &gw_server.address(),
            "--role",
            "gateway",
            "--sni",
            "localhost",
        ])
        // The test CA is in no trust store: chain-untrusted, critical.
        .expect_code(2);
        env.certctl(&["probe", &iis_server.address(), "--role", "iis"])
            .expect_code(2);

        // drift: renewed-not-reloaded on the gateway, not-in-inventory on the IIS site.
        let rows = report(&env, "drift", &[]);
        let rows = by(&rows, "endpoint");
        assert_eq!(rows.len(), 2, "{rows:?}");
        let g = rows[&gw_server.address()];
        assert_eq!(g["finding"], "renewed-not-reloaded");
        assert_eq!(g["fingerprint_sha256"], old.fingerprint.as_str());
        assert_eq!(g["newer_fingerprint"], renewed.fingerprint.as_str());
        assert_eq!(g["newer_path"], s(&env.root().join("gw/gw.pem")));
        assert_eq!(g["effective_expiry"], old.not_after_rfc3339().as_str());
        let i = rows[&iis_server.address()];
        assert_eq!(i["finding"], "not-in-inventory");
        assert_eq!(i["fingerprint_sha256"], stray.fingerprint.as_str());

        // endpoint-findings carries the drift findings next to the probe's own.
        let rows = report(&env, "endpoint-findings", &[]);
        let drift: BTreeSet<(String, String)> = rows
            .iter()
            .filter(|r| {
                r["finding"] == "renewed-not-reloaded" || r["finding"] == "not-in-inventory"
            })
            .map(|r| {
                (
                    r["endpoint"].as_str().unwrap().to_string(),
                    r["finding"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            drift,
            [
                (gw_server.address(), "renewed-not-reloaded".to_string()),
                (iis_server.address(), "not-in-inventory".to_string()),
            ]
            .into()
        );
        let gw_row = rows
            .iter()
            .find(|r| r["endpoint"] == gw_server.address().as_str())
            .unwrap();
        assert_eq!(gw_row["role"], "gateway");

        // `status` shows the same drift findings on the endpoints.
        let st = env.certctl(&["status", "--json"]);
        let st = st.json();
        let status_drift: BTreeSet<(String, String)> = st["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|e| {
                let address = e["address"].as_str().unwrap().to_string();
                e["findings"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(move |f| (address.clone(), f["kind"].as_str().unwrap().to_string()))
            })
            .filter(|(_, k)| k == "renewed-not-reloaded" || k == "not-in-inventory")
            .collect();
        assert_eq!(status_drift, drift, "{st:#}");

        // by-gateway: only the gateway; agents issued by its CA (not the foreign one).
        let rows = report(&env, "by-gateway", &[]);
        assert_eq!(rows.len(), 1, "{rows:?}");
        let g = &rows[0];
        assert_eq!(g["endpoint"], gw_server.address().as_str());
        assert_eq!(g["leaf"], "gw.example");
        assert_eq!(g["leaf_fingerprint"], old.fingerprint.as_str());
        assert_eq!(g["chain_certificates"], 2);
        assert_eq!(g["agents"], 2);
        assert_eq!(g["agent_certificates"], 3);
        assert_eq!(g["agents_permanent"], 1);
        assert_eq!(g["agents_ephemeral"], 2);
        assert!(strings(&g["findings"]).contains(&"renewed-not-reloaded".to_string()));
        // The effective expiry is the earliest notAfter of the served chain.
        assert_eq!(g["effective_expiry"], old.not_after_rfc3339().as_str());
    }
}

mod track {
    use super::*;

    /// Issue 14: `untrack` for a file tracked by mistake (or retired): gone from `list`, so
    /// no more reminders; an unknown or ambiguous one is an error.
    #[test]
    fn untrack_stops_tracking_a_file() {
        let env = TestEnv::new();
        let a = env.file("bundles/site-a.bundle");
        files::text(&a, "token a\n");
        let b = env.file("bundles/site-b.bundle");
        files::text(&b, "token b\n");
        for f in [&a, &b] {
            env.certctl(&["track", s(f), "--kind", "enrollment-bundle"])
                .success();
        }
        assert_eq!(env.list_json(&[]).len(), 2);
        env.certctl(&["untrack", s(&a)])
            .success()
            .stdout_has("no longer tracking enrollment-bundle");
        let left = env.list_json(&[]);
        assert_eq!(left.len(), 1);
        assert_eq!(left[0]["sources"][0]["path"], s(&b), "{:#}", left[0]);
        env.certctl(&["untrack", s(&a)])
            .expect_code(4)
            .stderr_has("no tracked file matches");
    }

    #[test]
    fn enrollment_bundles_appear_in_list_with_their_own_expiry() {
        let env = TestEnv::new();
        let f = CertFactory::new();
        let leaf = f.leaf(CertSpec::leaf("gw.example").expires_in_days(60));
        files::pem(&env.file("gw/gw.pem"), &[&leaf]);
        scan(&env, &env.root().join("gw"), "gateway");

        // Without artifacts, `list --json` is certificates only.
        assert_eq!(
            fingerprints(&env.list_json(&[])),
            vec![leaf.fingerprint.clone()]
        );

        let bundle = env.file("bundles/site-a.bundle");
        files::text(&bundle, "opaque enrollment token\n");
        // Half a day off the boundary so days_left does not depend on the second the CLI runs.
        let issued = now() - 3 * DAY + 12 * HOUR;
        let issued_text = rfc3339(issued);
        let r = env.certctl(&[
            "track",
            s(&bundle),
            "--kind",
            "enrollment-bundle",
            "--issued",
            &issued_text,
            "--json",
        ]);
        r.success();
        let tracked = r.json();
        assert_eq!(
            tracked[0]["not_after"],
            rfc3339(issued + 10 * DAY).as_str(),
            "{r}"
        );

        let items = env.list_json(&[]);
        assert_eq!(items.len(), 2);
        // Sorted by expiry: the bundle (7½ days left) first.
        let a = &items[0];
        assert_eq!(a["kind"], "artifact");
        assert_eq!(a["artifact_kind"], "enrollment-bundle");
        assert_eq!(
            a["fingerprint_sha256"],
            sha256_hex(b"opaque enrollment token\n").as_str()
        );
        assert_eq!(a["subject"], "site-a.bundle");
        assert_eq!(a["not_before"], issued_text.as_str());
        assert_eq!(a["days_left"], 7);
        assert_eq!(a["status"], "expiring");
        assert_eq!(a["sources"][0]["path"], s(&bundle));
        assert_eq!(items[1]["fingerprint_sha256"], leaf.fingerprint.as_str());

        // Filters: expiring within 8 days → the bundle only; a role → certificates only.
        let soon = env.list_json(&["--expiring-within", "8d"]);
        assert_eq!(soon.len(), 1);
        assert_eq!(soon[0]["kind"], "artifact");
        let gws = env.list_json(&["--role", "gateway"]);
        assert_eq!(fingerprints(&gws), vec![leaf.fingerprint.clone()]);
        // CSV and table.
        let r = env.certctl(&["list", "--csv"]);
        r.success();
        let rows = parse_csv(&r.stdout);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[1][2], "(tracked enrollment-bundle)");
        env.certctl(&["list"])
            .success()
            .stdout_has("site-a.bundle")
            .stdout_has("1 tracked artifacts");

        // A bundle that states its own expiry wins over issued + 10 days.
        let own = env.file("bundles/b.json");
        files::text(
            &own,
            r#"{"name":"Cloud bundle B","issued_at":"2030-01-01T00:00:00Z","expires_at":"2030-01-04T00:00:00Z"}"#,
        );
        let r = env.certctl(&["track", s(&own), "--kind", "enrollment-bundle", "--json"]);
        r.success();
        assert_eq!(r.json()[0]["not_after"], "2030-01-04T00:00:00Z");
        assert_eq!(r.json()[0]["subject"], "Cloud bundle B");
        assert_eq!(env.list_json(&[]).len(), 3);
        // A kind without a default lifetime needs one.
        env.certctl(&["track", s(&bundle), "--kind", "agent-package"])
            .expect_code(4)
            .stderr_has("--lifetime");
    }
}

mod through_certd {
    use certctl_e2e::daemon::{Certd, CertdConfig};

    use super::*;

    /// The fleet commands give the same answers through certd's control socket.
    #[test]
    fn agents_reports_and_track_work_through_the_daemon() {
        let env = TestEnv::new();
        let f = CertFactory::new();
        let known = f.leaf(CertSpec::leaf("agent-known").expires_in_days(100));
        let lost = f.leaf(CertSpec::leaf("agent-lost").valid(-HOUR, 5 * HOUR));
        let agents_dir = env.mkdir("agents");
        files::pem(&agents_dir.join("known.pem"), &[&known]);
        files::pem(&agents_dir.join("lost.pem"), &[&lost]);
        let config = CertdConfig::new(env.store()).write(&env.file("etc/certd.toml"));
        let _certd = Certd::start(&env, &config);
        env.certctl(&["status"])
            .success()
            .stdout_has("mode: daemon");
        scan(&env, &agents_dir, "agent");

        let regs = env.file("regs.csv");
        files::text(&regs, "agent,guid\nagent-known,g-known\n");
        // Relative paths are resolved by the client, not by certd (whose cwd is `/`).
        env.cmd()
            .current_dir(env.root())
            .args(["agents", "import-registrations", "regs.csv"])
            .run()
            .success();
        let rows = report(&env, "pending-agents", &[]);
        assert_eq!(
            by(&rows, "agent").keys().cloned().collect::<Vec<_>>(),
            ["agent-lost"]
        );
        env.cmd()
            .current_dir(env.root())
            .args(["agents", "block", "agent-lost", "--deny-list", "deny.txt"])
            .run()
            .success();
        assert_eq!(
            std::fs::read_to_string(env.root().join("deny.txt")).unwrap(),
            format!("{}\n", lost.fingerprint)
        );
        let rows = report(&env, "agents-by-credential", &[]);
        assert_eq!(by(&rows, "agent")["agent-lost"]["credential"], "ephemeral");

        let bundle = env.file("b.bundle");
        files::text(&bundle, "token");
        env.certctl(&[
            "track",
            s(&bundle),
            "--kind",
            "enrollment-bundle",
            "--issued",
            "2030-01-01",
        ])
        .success();
        let items = env.list_json(&[]);
        assert_eq!(items.len(), 3);
        assert_eq!(items[2]["kind"], "artifact");
        assert_eq!(items[2]["not_after"], "2030-01-11T00:00:00Z");
    }
}

mod metrics {
    use super::*;

    use certctl_e2e::prometheus::parse;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn metrics_describe_the_inventory_with_agents_aggregated() {
        let env = TestEnv::new();
        let f = CertFactory::new();
        let gw = f.leaf(CertSpec::leaf("gw.example").expires_in_days(20));
        let eph: Vec<GeneratedCert> = (0..3)
            .map(|i| f.leaf(CertSpec::leaf(&format!("agent-{i}")).valid(-HOUR, 5 * HOUR)))
            .collect();
        let perm = f.leaf(CertSpec::leaf("agent-0").expires_in_days(200));
        files::pem(&env.file("gw/gw.pem"), &[&gw]);
        for (i, c) in eph.iter().chain([&perm]).enumerate() {
            files::pem(&env.file(&format!("agents/{i}.pem")), &[c]);
        }
        scan(&env, &env.root().join("gw"), "gateway");
        scan(&env, &env.root().join("agents"), "agent");
        let bundle = env.file("b.bundle");
        files::text(&bundle, "token");
        env.certctl(&[
            "track",
            s(&bundle),
            "--kind",
            "enrollment-bundle",
            "--issued",
            "2030-01-01",
        ])
        .success();

        let r = env.certctl(&["metrics"]);
        r.success();
        let m = parse(&r.stdout);
        let gw_path = format!("{}#0", s(&env.root().join("gw/gw.pem")));
        let key = (
            "certctl_certificate_not_after_seconds".to_string(),
            labels(&[
                ("cn", "gw.example"),
                ("fingerprint", &gw.fingerprint),
                ("role", "gateway"),
                ("source", &gw_path),
            ]),
        );
        assert_eq!(m.get(&key), Some(&(gw.not_after as f64)), "{r}");
        // No per-agent series by default: agents are aggregated.
        let per_cert = m
            .keys()
            .filter(|(n, _)| n == "certctl_certificate_not_after_seconds")
            .count();
        assert_eq!(per_cert, 1, "{r}");
        let agg = |kind: &str, status: &str| {
            m.get(&(
                "certctl_agent_certificates".to_string(),
                labels(&[("credential_kind", kind), ("status", status)]),
            ))
            .copied()
        };
        assert_eq!(agg("ephemeral", "expiring"), Some(3.0), "{r}");
        assert_eq!(agg("permanent", "valid"), Some(1.0), "{r}");
        let count = |role: &str, status: &str| {
            m.get(&(
                "certctl_certificates".to_string(),
                labels(&[("role", role), ("status", status)]),
            ))
            .copied()
        };
        assert_eq!(count("gateway", "expiring"), Some(1.0));
        assert_eq!(count("agent", "expiring"), Some(3.0));
        assert_eq!(
            m.get(&("certctl_agents_pending".to_string(), BTreeMap::new())),
            Some(&3.0)
        );
        assert_eq!(
            m.get(&(
                "certctl_artifact_expiry_seconds".to_string(),
                labels(&[
                    ("kind", "enrollment-bundle"),
                    ("name", "b.bundle"),
                    ("path", s(&bundle))
                ])
            )),
            Some(&(parse_rfc3339("2030-01-11T00:00:00Z") as f64))
        );

        // Per-agent series on request; --out writes the file for a textfile collector.
        let out = env.root().join("certctl.prom");
        env.certctl(&["metrics", "--per-agent", "--out", s(&out)])
            .success();
        let m = parse(&std::fs::read_to_string(&out).unwrap());
        let per_cert = m
            .keys()
            .filter(|(n, _)| n == "certctl_certificate_not_after_seconds")
            .count();
        assert_eq!(per_cert, 5);
    }
}

mod managed_ca {
    use super::*;

    /// Blocking an agent whose CA certctl holds revokes its certificates and publishes the
    /// CRL at once; certificates from other CAs only go to the deny list.
    #[test]
    fn blocking_revokes_certificates_of_a_managed_ca_and_publishes_the_crl() {
        let env = TestEnv::new();
        env.certctl(&["ca", "init", "--name", "agents"]).success();
        let out = env.mkdir("issued");
        let r = env.certctl(&[
            "issue",
            "--ca",
            "agents",
            "--cn",
            "agent-m",
            "--role",
            "agent",
            "--out",
            s(&out),
        ]);
        r.success();
        let fp = r
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("fingerprint (SHA-256): "))
            .unwrap_or_else(|| panic!("no fingerprint line{r}"))
            .trim()
            .to_string();
        let f = CertFactory::new();
        let foreign = f.leaf(CertSpec::leaf("agent-f").expires_in_days(100));
        files::pem(&env.file("foreign/agent-f.pem"), &[&foreign]);
        scan(&env, &out, "agent");
        scan(&env, &env.root().join("foreign"), "agent");

        let deny = env.root().join("deny.txt");
        let r = env.certctl(&[
            "agents",
            "block",
            "agent-m",
            "agent-f",
            "--deny-list",
            s(&deny),
            "--json",
        ]);
        r.success();
        let d = r.json();
        assert_eq!(strings(&d["revoked"]), vec![fp.clone()], "{r}");
        assert_eq!(d["revoke_error"], Value::Null, "{r}");
        let mut expected = vec![fp.clone(), foreign.fingerprint.clone()];
        expected.sort();
        assert_eq!(
            std::fs::read_to_string(&deny)
                .unwrap()
                .lines()
                .collect::<Vec<_>>(),
            expected
        );

        // The certificate is revoked in the store and listed in the CA's CRL.
        let rows = report(&env, "revoked", &[]);
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0]["fingerprint_sha256"], fp.as_str());
        assert_eq!(rows[0]["reason"], "privilege-withdrawn");
        let cert_pem = std::fs::read(out.join("agent-m.pem")).unwrap();
        let cert = openssl::x509::X509::from_pem(&cert_pem).unwrap();
        let crl_pem = std::fs::read(env.store().join("ca/agents/crl.pem")).unwrap();
        let crl = openssl::x509::X509Crl::from_pem(&crl_pem).unwrap();
        let serials: Vec<String> = crl
            .get_revoked()
            .map(|st| {
                st.iter()
                    .map(|r| {
                        r.serial_number()
                            .to_bn()
                            .unwrap()
                            .to_hex_str()
                            .unwrap()
                            .to_string()
                    })
                    .collect()
            })
            .unwrap_or_default();
        let serial = cert
            .serial_number()
            .to_bn()
            .unwrap()
            .to_hex_str()
            .unwrap()
            .to_string();
        assert_eq!(serials, [serial]);
    }
}
