//! Hostile inputs (issue 7): `certctl scan` over a folder of everything that can go wrong
//! must finish, report each bad file with its path and cause, store every good certificate,
//! and never panic.
//!
//! The corpus is generated at test time ([`certctl_e2e::hostile::Corpus`]): truncated DER,
//! bad base64, trailing garbage, an empty file, 50 MB of random bytes, a 100 MiB sparse file,
//! 10,000 certificates in one file, thousands of SANs, 40-byte and negative serials,
//! GeneralizedTime dates (1901, 1949, 2050, 9999-12-31), an unknown critical extension, a
//! FIFO, a socket, a symlink to `/dev/zero`, symlink loops; and, run as an unprivileged user
//! (root reads mode-000 files), an unreadable file and an unreadable folder.
//!
//! What certctl does with each (README, "Hostile inputs and fuzzing"):
//! - damaged or non-certificate content: reported with what is wrong; in a bundle, the
//!   certificates before the damage are stored;
//! - text or binary junk after the last PEM block: ignored, as OpenSSL does;
//! - files above 64 MiB: reported, not read; below, random data is "not a certificate";
//! - FIFOs, sockets, devices: "not a regular file", never opened (so never blocking);
//! - symlink loops: reported as loops, never followed;
//! - unreadable files and folders: "permission denied".

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use certctl_e2e::hostile::{
    certctl_as_nobody, chmod, chown_tree, pfx_with_huge_count, setpriv_can_switch, setpriv_nobody,
    Corpus, Expected, HugeCount, BUNDLE_SIZE, HUGE_COUNT, NOBODY,
};
use certctl_e2e::*;
use serde_json::Value;

/// Generous limit for the scans of the corpus (they take a few seconds in a debug build);
/// reaching it means a hang, and the harness kills certctl and fails the test.
const SCAN_TIMEOUT: Duration = Duration::from_secs(60);

/// Fails if certctl panicked or died from a signal.
#[track_caller]
fn assert_no_panic(r: &RunResult) {
    assert!(r.status.code().is_some(), "certctl died from a signal{r}");
    assert!(
        !r.stderr.contains("panicked") && r.code() != 101,
        "certctl panicked{r}"
    );
}

/// The `errors` of a `scan --json` summary as path → cause.
fn json_errors(summary: &Value, r: &RunResult) -> BTreeMap<String, String> {
    summary["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no `errors` array{r}"))
        .iter()
        .map(|e| {
            (
                e["path"].as_str().expect("path").to_string(),
                e["error"].as_str().expect("error").to_string(),
            )
        })
        .collect()
}

/// Every certificate of the store, `list --json`, with a timeout for 10,000+ of them.
fn list_all(env: &TestEnv) -> Vec<Value> {
    let r = env
        .cmd()
        .args(["list", "--json"])
        .timeout(SCAN_TIMEOUT)
        .run();
    r.success();
    match r.json() {
        Value::Array(items) => items,
        other => panic!("`list --json` printed {other}{r}"),
    }
}

/// Compares a listed certificate with what the corpus put in the file.
#[track_caller]
fn assert_listed_as(item: &Value, e: &Expected) {
    let ctx = || format!("\nexpected: {e:?}\nlisted: {item}");
    assert_eq!(item["subject_cn"], e.cn.as_str(), "subject_cn{}", ctx());
    assert_eq!(item["serial"], e.serial.as_str(), "serial{}", ctx());
    assert_eq!(
        item["not_before"],
        e.not_before.as_str(),
        "not_before{}",
        ctx()
    );
    assert_eq!(
        item["not_after"],
        e.not_after.as_str(),
        "not_after{}",
        ctx()
    );
    assert_eq!(item["sans"], e.sans.to_json(), "sans{}", ctx());
    let place = (s(&e.path).to_string(), e.index as u64, false);
    assert!(
        file_sources(item).contains(&place),
        "source {place:?} missing{}",
        ctx()
    );
}

#[test]
fn a_hostile_folder_is_scanned_to_the_end_and_every_good_certificate_is_stored() {
    let f = CertFactory::new();
    let env = TestEnv::new();
    let built = Instant::now();
    let corpus = Corpus::build(&f, &env.root().join("corpus"));
    eprintln!(
        "corpus: {} good certificates, {} bad files, built in {:?}",
        corpus.good.len(),
        corpus.bad.len(),
        built.elapsed()
    );

    // The admin scans the folder.
    let scanned = Instant::now();
    let r = env
        .cmd()
        .args(["scan", s(&corpus.dir), "--json"])
        .timeout(SCAN_TIMEOUT)
        .run();
    eprintln!("first scan: {:?}", scanned.elapsed());
    assert_no_panic(&r);
    r.expect_code(3);

    // Each bad file is reported once, with its path and its cause; nothing else is.
    let summary = r.json();
    let errors = json_errors(&summary, &r);
    let expected: BTreeMap<String, String> = corpus
        .bad
        .iter()
        .map(|b| (s(&b.path).to_string(), b.cause.to_string()))
        .collect();
    assert_eq!(
        errors.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "the reported files{r}"
    );
    for (path, cause) in &expected {
        assert_eq!(&errors[path], cause, "the cause for {path}{r}");
        assert_eq!(&r.error_for(Path::new(path)), cause, "stderr for {path}");
    }
    assert_eq!(r.error_lines().len(), corpus.bad.len(), "{r}");

    // Every good certificate was stored: the files that held only good certificates were
    // read, and the two before the cut block count too.
    let good_files: BTreeSet<&PathBuf> = corpus.good.iter().map(|e| &e.path).collect();
    let partly_good = corpus
        .bad
        .iter()
        .filter(|b| good_files.contains(&b.path))
        .count();
    assert_eq!(summary["files_read"], good_files.len() - partly_good, "{r}");
    assert_eq!(summary["files_failed"], corpus.bad.len(), "{r}");
    assert_eq!(summary["certificates_new"], corpus.good.len(), "{r}");
    assert_eq!(summary["sources_gone"], 0, "{r}");

    let items = list_all(&env);
    let listed: HashMap<&str, &Value> = items
        .iter()
        .map(|c| (c["fingerprint_sha256"].as_str().expect("fingerprint"), c))
        .collect();
    let by_fp = corpus.good_by_fingerprint();
    assert_eq!(
        by_fp.len(),
        corpus.good.len(),
        "the corpus has no duplicates"
    );
    let missing: Vec<&Expected> = corpus
        .good
        .iter()
        .filter(|e| !listed.contains_key(e.fingerprint.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} good certificates are not in the store, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    assert_eq!(
        items.len(),
        corpus.good.len(),
        "nothing but the good certificates"
    );
    for e in &corpus.good {
        assert_listed_as(listed[e.fingerprint.as_str()], e);
    }

    // Spelled out for the unusual ones, so that a reader sees what "right" means.
    let find = |cn: &str| {
        let e = corpus
            .good
            .iter()
            .find(|e| e.cn == cn)
            .unwrap_or_else(|| panic!("{cn} is in the corpus"));
        listed[e.fingerprint.as_str()]
    };
    let bulk = corpus
        .good
        .iter()
        .filter(|e| e.path == corpus.bundle)
        .count();
    assert_eq!(bulk, BUNDLE_SIZE);
    let huge = find("huge-san.hostile.example");
    assert_eq!(huge["sans"]["dns"].as_array().map(Vec::len), Some(4000));
    assert_eq!(huge["sans"]["ip"].as_array().map(Vec::len), Some(256 + 64));
    assert_eq!(huge["sans"]["ip"][319], "2001:db8::7:3f");
    let serial40 = find("serial40.hostile.example")["serial"]
        .as_str()
        .expect("serial")
        .to_string();
    assert_eq!(serial40.len(), 80, "{serial40}");
    assert_eq!(find("negative.hostile.example")["serial"], "-75bcd15");
    let old = find("dates-1949-2050.hostile.example");
    assert_eq!(old["not_before"], "1949-06-15T12:00:00Z");
    assert_eq!(old["not_after"], "2050-01-01T00:00:00Z");
    let far = find("dates-1901-9999.hostile.example");
    assert_eq!(far["not_before"], "1901-01-01T00:00:00Z");
    assert_eq!(far["not_after"], "9999-12-31T23:59:59Z");
    assert_eq!(far["status"], "valid");
    assert_eq!(
        find("dates-expired-1949.hostile.example")["status"],
        "expired"
    );
    find("critical.hostile.example");
    find("trailing.hostile.example");
    find("inside.hostile.example");

    // The long-expired one is found by `--expired` (a negative not_after in the index).
    let expired = env.list_json(&["--expired"]);
    assert!(
        expired
            .iter()
            .any(|c| c["subject_cn"] == "dates-expired-1949.hostile.example"),
        "{expired:?}"
    );

    // Scanning again: the good files are unchanged, the bad ones are read and reported
    // again (still without hanging), and nothing looks gone.
    let rescanned = Instant::now();
    let again = env
        .cmd()
        .args(["scan", s(&corpus.dir), "--json"])
        .timeout(SCAN_TIMEOUT)
        .run();
    eprintln!("second scan: {:?}", rescanned.elapsed());
    assert_no_panic(&again);
    again.expect_code(3);
    let summary = again.json();
    assert_eq!(json_errors(&summary, &again), expected, "{again}");
    assert_eq!(summary["files_unchanged"], good_files.len() - partly_good);
    assert_eq!(summary["certificates_new"], 0, "{again}");
    assert_eq!(summary["sources_gone"], 0, "{again}");
    assert_eq!(list_all(&env).len(), corpus.good.len());
}

#[test]
fn odd_files_named_on_the_command_line_are_reported_without_blocking() {
    let f = CertFactory::new();
    let env = TestEnv::new();
    let dir = env.mkdir("named");
    let good = f.leaf(CertSpec::leaf("named.hostile.example"));
    let pem = dir.join("good.pem");
    files::pem(&pem, &[&good]);
    let fifo = dir.join("pipe.crt");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .expect("mkfifo");
    let ring = dir.join("ring.pem");
    std::os::unix::fs::symlink("ring.pem", &ring).expect("symlink");

    let r = env
        .cmd()
        .args(["scan", s(&fifo), s(&pem), s(&ring), "/dev/zero"])
        .timeout(Duration::from_secs(30))
        .run();
    assert_no_panic(&r);
    r.expect_code(3);
    assert_eq!(
        r.error_for(&fifo),
        "not a regular file: this is a FIFO (named pipe), which certctl never reads"
    );
    assert_eq!(
        r.error_for(Path::new("/dev/zero")),
        "not a regular file: this is a character device, which certctl never reads"
    );
    assert_eq!(
        r.error_for(&ring),
        "symbolic link loop: too many levels of symbolic links (not followed)"
    );
    assert_eq!(r.error_lines().len(), 3, "{r}");
    assert_eq!(
        fingerprints(&env.list_json(&[])),
        expected_fingerprints(&[&good])
    );
    // `inspect` reads files the same way: a FIFO is an error, not a hang.
    let r = env
        .cmd()
        .no_store()
        .args(["inspect", s(&fifo)])
        .timeout(Duration::from_secs(30))
        .run();
    r.expect_code(4)
        .stderr_has("not a regular file: this is a FIFO (named pipe), which certctl never reads");
}

#[test]
fn unreadable_files_and_folders_are_reported_as_permission_denied() {
    let f = CertFactory::new();
    let env = TestEnv::new();
    let is_root = rustix::process::geteuid().is_root();
    // Root reads mode-000 files (CAP_DAC_OVERRIDE): the scan then runs as `nobody`, through
    // setpriv, on a folder and a store that `nobody` owns.
    let area = env.root().join("unprivileged");
    let dir = area.join("certs");
    let store = area.join("store");
    let open = f.leaf(CertSpec::leaf("open.hostile.example"));
    let locked = f.leaf(CertSpec::leaf("locked.hostile.example"));
    let hidden = f.leaf(CertSpec::leaf("hidden.hostile.example"));
    files::pem(&dir.join("open.pem"), &[&open]);
    let locked_path = dir.join("locked.pem");
    files::pem(&locked_path, &[&locked]);
    let private = dir.join("private");
    files::pem(&private.join("hidden.pem"), &[&hidden]);

    let as_user = |args: &[&str]| -> RunResult {
        if is_root {
            certctl_as_nobody(&env, &store, args)
        } else {
            env.cmd()
                .store(&store)
                .args(args)
                .timeout(Duration::from_secs(30))
                .run()
        }
    };
    if is_root {
        if !setpriv_can_switch() {
            eprintln!(
                "SKIPPED: running as root and `setpriv` cannot switch to uid {NOBODY}, so a \
                 mode-000 file stays readable: the permission-denied assertions cannot be made"
            );
            return;
        }
        // `nobody` may cross the test's temp dir and owns everything below `area`.
        chmod(env.root(), 0o711);
        chown_tree(&area, NOBODY, NOBODY);
    }
    chmod(&locked_path, 0o000);
    chmod(&private, 0o000);
    // Make sure the files really are out of reach for the scanning user.
    let cat = if is_root {
        std::process::Command::new("setpriv")
            .args(setpriv_nobody())
            .arg("cat")
            .arg(&locked_path)
            .output()
    } else {
        std::process::Command::new("cat").arg(&locked_path).output()
    }
    .expect("run cat");
    assert!(!cat.status.success(), "locked.pem should not be readable");

    let r = as_user(&["scan", s(&dir), "--json"]);
    assert_no_panic(&r);
    r.expect_code(3);
    let summary = r.json();
    let errors = json_errors(&summary, &r);
    let expected: BTreeMap<String, String> = [
        (s(&locked_path).to_string(), "permission denied".to_string()),
        (s(&private).to_string(), "permission denied".to_string()),
    ]
    .into();
    assert_eq!(errors, expected, "{r}");
    assert_eq!(r.error_for(&locked_path), "permission denied");
    assert_eq!(r.error_for(&private), "permission denied");

    let listed = as_user(&["list", "--json"]);
    listed.success();
    let items = match listed.json() {
        Value::Array(items) => items,
        other => panic!("`list --json` printed {other}{listed}"),
    };
    assert_eq!(
        fingerprints(&items),
        expected_fingerprints(&[&open]),
        "{listed}"
    );

    // Give the files back so the temp dir can be removed.
    chmod(&private, 0o755);
    chmod(&locked_path, 0o644);
}

/// Issue 13: a 2 KB PKCS#12 file with an iteration count of 2^31-1 (MAC, PBKDF2 of a key
/// bag, legacy PKCS#12 PBE) kept `inspect` and `scan` busy for minutes. The count is now
/// refused before any key derivation runs, with the file and the count named, and the other
/// files of the folder are stored.
#[test]
fn a_pfx_with_a_huge_iteration_count_is_refused_promptly() {
    let f = CertFactory::new();
    let env = TestEnv::new();
    let dir = env.mkdir("pfx");
    let good = f.leaf(CertSpec::leaf("good.pfx.example"));
    files::pem(&dir.join("good.pem"), &[&good]);
    let good_pfx = f.leaf(CertSpec::leaf("good-pfx.pfx.example"));
    files::pkcs12(&dir.join("good.pfx"), &good_pfx, &[], "");
    let victim = f.leaf(CertSpec::leaf("huge.pfx.example"));
    let cases = [
        (HugeCount::Mac, "mac.pfx", "PKCS#12 MAC iteration count"),
        (HugeCount::KeyBag, "keybag.p12", "PBKDF2 iteration count"),
        (
            HugeCount::LegacyPbe,
            "legacy.pfx",
            "PKCS#12 PBE iteration count",
        ),
    ];
    let cause = |what: &str| format!("{what} {HUGE_COUNT} above the limit 10000000");
    for (which, name, what) in cases {
        let path = dir.join(name);
        std::fs::write(&path, pfx_with_huge_count(&victim, which)).expect("write");
        let r = env
            .cmd()
            .no_store()
            .args(["inspect", s(&path)])
            .timeout(SCAN_TIMEOUT)
            .run();
        assert_no_panic(&r);
        r.expect_code(4)
            .stderr_has(s(&path))
            .stderr_has(&cause(what));
    }

    let r = env
        .cmd()
        .args(["scan", s(&dir)])
        .timeout(SCAN_TIMEOUT)
        .run();
    assert_no_panic(&r);
    r.expect_code(3);
    for (_, name, what) in cases {
        let error = r.error_for(&dir.join(name));
        assert!(error.contains(&cause(what)), "{name}: {error}{r}");
    }
    assert_eq!(r.error_lines().len(), cases.len(), "{r}");
    assert_eq!(
        fingerprints(&env.list_json(&[])),
        expected_fingerprints(&[&good, &good_pfx])
    );
    // The files are still there: the next scan refuses them again, as cheaply.
    let r = env
        .cmd()
        .args(["scan", s(&dir)])
        .timeout(SCAN_TIMEOUT)
        .run();
    assert_no_panic(&r);
    r.expect_code(3);
    assert_eq!(r.error_lines().len(), cases.len(), "{r}");
}

/// Issue 13: `--expiring-within 9223372036854775807s` panicked (the duration overflowed when
/// added to the clock). Absurd durations are usage errors now.
#[test]
fn absurd_durations_on_the_command_line_are_usage_errors() {
    let env = TestEnv::new();
    for value in ["9223372036854775807s", "106751991167300d", "5300w"] {
        for args in [
            vec!["list", "--expiring-within", value],
            vec!["check", "--warn", value],
        ] {
            let r = env.cmd().args(&args).timeout(SCAN_TIMEOUT).run();
            assert_no_panic(&r);
            r.expect_code(64).stderr_has(&format!(
                "invalid duration `{value}`: the duration is too large"
            ));
        }
    }
}

/// Issue 13: `track /dev/zero` grew to 4 GB, `track FIFO` hung, and `agents
/// import-registrations` read files the same way. Only regular files are read, up to a cap.
#[test]
fn track_and_import_registrations_read_regular_files_only() {
    let env = TestEnv::new();
    let dir = env.mkdir("odd");
    let fifo = dir.join("bundle.zip");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .expect("mkfifo");
    let big = dir.join("big.csv");
    std::fs::File::create(&big)
        .and_then(|f| f.set_len((64 << 20) + 1))
        .expect("sparse file");
    let zero = Path::new("/dev/zero");
    let cases: [(&[&str], &Path, &str); 5] = [
        (
            &["track", "--kind", "other"],
            &fifo,
            "not a regular file: this is a FIFO (named pipe)",
        ),
        (
            &["track", "--kind", "other"],
            zero,
            "not a regular file: this is a character device",
        ),
        (
            &["track", "--kind", "other"],
            &big,
            "more than the 64 MiB a tracked file may have",
        ),
        (
            &["agents", "import-registrations"],
            &fifo,
            "not a regular file: this is a FIFO",
        ),
        (
            &["agents", "import-registrations"],
            zero,
            "not a regular file: this is a character device",
        ),
    ];
    for (command, path, cause) in cases {
        let r = env
            .cmd()
            .args(command)
            .arg(path)
            .timeout(Duration::from_secs(20))
            .run();
        assert_no_panic(&r);
        assert_ne!(r.code(), 0, "{r}");
        r.stderr_has(s(path)).stderr_has(cause);
    }
    let r = env
        .cmd()
        .args(["agents", "import-registrations", s(&big)])
        .timeout(Duration::from_secs(20))
        .run();
    assert_ne!(r.code(), 0, "{r}");
    r.stderr_has("more than the 16 MiB a registrations file may have");
}
