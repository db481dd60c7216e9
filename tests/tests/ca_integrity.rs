//! Regression tests for the integrity of a managed CA's secrets and of `ca init` (issue 13):
//!
//! - `ca init` is atomic: killed (`kill -9`, through the crash-point hook) after any step, or
//!   refused for lack of space, `ca list` and `ca init` agree and a second `ca init` succeeds
//!   (or the CA is complete and usable).
//! - A finished `regenerate` leaves no private key in its workflow folder.
//! - A new CA key is encrypted with a modern work factor (PBKDF2-HMAC-SHA256, ≥ 600,000
//!   iterations); a key encrypted the old way (2,048 iterations) still opens.
//! - Secret files that others can read are refused wherever they are read, and `certd config
//!   check` names every one.
//!
//! Build the binaries first (`cargo build --workspace --bins`).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};

use certctl_e2e::*;
use serde_json::Value;

/// Writes a secret file with `mode`.
fn secret(path: &Path, text: &str, mode: u32) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The names `ca list --json` shows.
fn ca_names(env: &TestEnv) -> Vec<String> {
    let r = env.certctl(&["ca", "list", "--json"]);
    r.success();
    r.json()
        .as_array()
        .unwrap_or_else(|| panic!("ca list --json is not an array{r}"))
        .iter()
        .map(|c| c["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The entries of `STORE/ca` whose names start with a dot (staging or set-aside folders).
fn hidden_ca_entries(env: &TestEnv) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(env.store().join("ca")) else {
        return Vec::new();
    };
    dir.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

/// Asserts that CA `name` is whole: its files are there and it issues a certificate that
/// openssl verifies against it and its CRL.
#[track_caller]
fn assert_ca_works(env: &TestEnv, name: &str, why: &str) {
    let dir = env.store().join("ca").join(name);
    for f in ["ca.key", "ca.pem", "chain.pem", "crl.pem"] {
        assert!(dir.join(f).is_file(), "{why}: {} is missing", f);
    }
    let out = env.mkdir(&format!("issued-{name}-{}", now_nanos()));
    env.certctl(&[
        "issue",
        "--ca",
        name,
        "--cn",
        "leaf.example.com",
        "--role",
        "gateway",
        "--out",
        s(&out),
    ])
    .success();
    openssl_ok(&[
        "verify",
        "-crl_check",
        "-CRLfile",
        s(&dir.join("crl.pem")),
        "-CAfile",
        s(&dir.join("ca.pem")),
        s(&out.join("leaf.example.com.pem")),
    ]);
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

mod ca_init_is_atomic {
    use super::*;

    /// The crash points of `ca init`, in order (see the module doc of `certctl_daemon::ca`).
    const POINTS: [&str; 7] = [
        "ca-init:staged-key",
        "ca-init:staged-cert",
        "ca-init:staged-chain",
        "ca-init:staged-crl",
        "ca-init:moved",
        "ca-init:recorded",
        "ca-init:audited",
    ];

    #[test]
    fn killed_after_any_step_list_and_init_agree_and_a_second_init_works() {
        for point in POINTS {
            let env = TestEnv::new();
            let crl_out = env.root().join("pub/ops.crl");
            let r = env
                .cmd()
                .args(["ca", "init", "--name", "ops", "--crl-out", s(&crl_out)])
                .env("CERTCTL_TEST_CRASH_AT", point)
                .run();
            assert_eq!(r.status.signal(), Some(9), "killed at {point}{r}");

            let listed = ca_names(&env).contains(&"ops".to_string());
            let again = env.certctl(&["ca", "init", "--name", "ops", "--crl-out", s(&crl_out)]);
            if listed {
                // Committed: the CA is whole, and a second init says it exists.
                again.expect_code(again.code().max(1));
                again.stderr_has("already exists");
            } else {
                again.success().stdout_has("created CA `ops`");
            }
            assert_eq!(ca_names(&env), vec!["ops".to_string()], "after {point}");
            assert_ca_works(&env, "ops", point);
            // The CRL copies are where --crl-out said (`ca crl` writes them again if the
            // kill came before they were).
            if !crl_out.exists() {
                let out = env.root().join("crl-again.pem");
                env.certctl(&["ca", "crl", "ops", "--out", s(&out)])
                    .success();
            }
            assert!(crl_out.is_file(), "{point}: no CRL at --crl-out");
            // Staging folders never outlive the next init.
            let hidden = hidden_ca_entries(&env);
            assert!(
                hidden.iter().all(|n| n.starts_with(".orphan-")),
                "{point}: left over in STORE/ca: {hidden:?}"
            );
        }
    }

    #[test]
    fn a_lack_of_space_refuses_init_and_leaves_nothing_behind() {
        let env = TestEnv::new();
        // CERTCTL_TEST_STORE_FREE_BYTES: the file system has 3 MiB free (below the reserve).
        let r = env
            .cmd()
            .args(["ca", "init", "--name", "ops"])
            .env("CERTCTL_TEST_STORE_FREE_BYTES", "3145728")
            .run();
        assert_ne!(r.code(), 0, "refused for lack of space{r}");
        r.stderr_has("space");
        assert!(ca_names(&env).is_empty());
        assert!(
            !env.store().join("ca/ops").exists(),
            "a refused init left its folder behind"
        );
        assert!(
            hidden_ca_entries(&env).is_empty(),
            "{:?}",
            hidden_ca_entries(&env)
        );
        // Space is back: the same init works.
        env.certctl(&["ca", "init", "--name", "ops"])
            .success()
            .stdout_has("created CA `ops`");
        assert_ca_works(&env, "ops", "after space came back");
    }

    #[test]
    fn a_folder_left_by_an_unfinished_init_is_set_aside_with_a_message() {
        let env = TestEnv::new();
        // A store exists (read-only commands never create one) ...
        let empty = env.mkdir("empty");
        env.certctl(&["scan", empty.to_str().unwrap()]).success();
        // ... with what an init killed before its store record (by an older certctl) leaves.
        let dir = env.store().join("ca/ops");
        std::fs::create_dir_all(&dir).unwrap();
        secret(&dir.join("ca.key"), "not a key\n", 0o600);
        assert!(ca_names(&env).is_empty());
        let r = env.certctl(&["ca", "init", "--name", "ops"]);
        r.success().stdout_has("created CA `ops`");
        r.stderr_has("set aside");
        let hidden = hidden_ca_entries(&env);
        assert_eq!(hidden.len(), 1, "{hidden:?}");
        assert!(hidden[0].starts_with(".orphan-ops-"), "{hidden:?}");
        let aside = env.store().join("ca").join(&hidden[0]);
        assert_eq!(
            std::fs::read_to_string(aside.join("ca.key")).unwrap(),
            "not a key\n"
        );
        assert_ca_works(&env, "ops", "after the orphan was set aside");
    }
}

mod workflow_keys {
    use super::*;

    #[test]
    fn a_finished_regenerate_leaves_no_private_key_in_its_folder() {
        let env = TestEnv::new();
        env.certctl(&["ca", "init", "--name", "ops"]).success();
        let issued = env.mkdir("issued");
        env.certctl(&[
            "issue",
            "--ca",
            "ops",
            "--cn",
            "gw.example.com",
            "--role",
            "gateway",
            "--out",
            s(&issued),
        ])
        .success();
        let dep = env.mkdir("deploy");
        std::fs::copy(issued.join("gw.example.com.pem"), dep.join("server.pem")).unwrap();
        std::fs::copy(issued.join("gw.example.com.key"), dep.join("server.key")).unwrap();
        env.certctl(&["scan", s(&dep)]).success();
        let old = env.list_json(&["--name", "gw.example.com"])[0]["fingerprint_sha256"]
            .as_str()
            .unwrap()
            .to_string();
        let r = env.certctl(&["regenerate", &old, "--deploy", "--yes", "--json"]);
        r.success();
        let wf = r.json();
        assert_eq!(wf["step"], "done", "{wf}");
        let dir = PathBuf::from(wf["dir"].as_str().unwrap());
        assert!(dir.is_dir(), "{}", dir.display());
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read(&path).unwrap();
            assert!(
                !String::from_utf8_lossy(&text).contains("PRIVATE KEY"),
                "{} holds a private key after the workflow is done",
                path.display()
            );
        }
        // The key went where the old one was.
        let cert_pub = openssl_ok(&[
            "x509",
            "-in",
            s(&dep.join("server.pem")),
            "-noout",
            "-pubkey",
        ]);
        assert_eq!(
            openssl_ok(&["pkey", "-in", s(&dep.join("server.key")), "-pubout"]),
            cert_pub
        );
        let files: Vec<&Value> = wf["files"].as_array().unwrap().iter().collect();
        assert!(
            files.iter().all(|f| !f.as_str().unwrap().ends_with(".key")),
            "{files:?}"
        );
    }
}

mod key_encryption {
    use super::*;

    /// The PBKDF2 iteration count of an encrypted PKCS#8 PEM file, read by `openssl asn1parse`.
    fn iterations(path: &Path) -> u64 {
        let text = openssl_ok(&["asn1parse", "-in", s(path)]);
        assert!(text.contains("PBES2") && text.contains("PBKDF2"), "{text}");
        let line = text
            .lines()
            .find(|l| l.contains("prim: INTEGER"))
            .unwrap_or_else(|| panic!("no INTEGER in\n{text}"));
        let hex = line.rsplit(':').next().unwrap().trim();
        u64::from_str_radix(hex, 16).unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    #[test]
    fn a_new_ca_key_uses_pbkdf2_sha256_with_600000_iterations_and_old_keys_still_open() {
        let env = TestEnv::new();
        let pass = env.root().join("secrets/ca.pass");
        secret(&pass, "correct horse\n", 0o600);
        env.certctl(&[
            "ca",
            "init",
            "--name",
            "vault",
            "--passphrase-file",
            s(&pass),
        ])
        .success();
        let key = env.store().join("ca/vault/ca.key");
        let n = iterations(&key);
        assert!(n >= 600_000, "{n} PBKDF2 iterations");
        let text = openssl_ok(&["asn1parse", "-in", s(&key)]);
        assert!(text.contains("hmacWithSHA256"), "{text}");
        assert!(text.contains("aes-256-cbc"), "{text}");
        // openssl opens it with the passphrase.
        openssl_ok(&[
            "pkey",
            "-in",
            s(&key),
            "-passin",
            &format!("file:{}", s(&pass)),
            "-noout",
        ]);

        // The same key re-encrypted the old way (2,048 iterations) still opens.
        let old = env.root().join("old.key");
        openssl_ok(&[
            "pkcs8",
            "-topk8",
            "-v2",
            "aes-256-cbc",
            "-iter",
            "2048",
            "-in",
            s(&key),
            "-passin",
            &format!("file:{}", s(&pass)),
            "-passout",
            "pass:correct horse",
            "-out",
            s(&old),
        ]);
        assert_eq!(iterations(&old), 2048);
        std::fs::copy(&old, &key).unwrap();
        let out = env.mkdir("out");
        env.certctl(&[
            "issue",
            "--ca",
            "vault",
            "--cn",
            "a.example.com",
            "--role",
            "gateway",
            "--out",
            s(&out),
            "--passphrase-file",
            s(&pass),
        ])
        .success();
    }
}

mod secret_files {
    use super::*;

    #[test]
    fn ca_init_and_issue_refuse_a_passphrase_file_others_can_read() {
        let env = TestEnv::new();
        let pass = env.root().join("secrets/ca.pass");
        secret(&pass, "correct horse\n", 0o644);
        let r = env.certctl(&[
            "ca",
            "init",
            "--name",
            "vault",
            "--passphrase-file",
            s(&pass),
        ]);
        assert_ne!(r.code(), 0, "a 0644 passphrase file was used{r}");
        r.stderr_has(s(&pass))
            .stderr_has("644")
            .stderr_has("chmod 600");
        assert!(ca_names(&env).is_empty());

        std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
        env.certctl(&[
            "ca",
            "init",
            "--name",
            "vault",
            "--passphrase-file",
            s(&pass),
        ])
        .success();
        let out = env.mkdir("out");
        let issue = |env: &TestEnv| {
            env.certctl(&[
                "issue",
                "--ca",
                "vault",
                "--cn",
                "a.example.com",
                "--role",
                "iis",
                "--out",
                s(&out),
                "--passphrase-file",
                s(&pass),
                "--pfx-password-file",
                s(&env.root().join("secrets/pfx.pass")),
                "--yes",
            ])
        };
        // A group-readable PFX password file is refused too.
        secret(&env.root().join("secrets/pfx.pass"), "pfx\n", 0o640);
        let r = issue(&env);
        assert_ne!(r.code(), 0, "a 0640 PFX password file was used{r}");
        r.stderr_has("pfx.pass")
            .stderr_has("640")
            .stderr_has("chmod 600");
        std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o604)).unwrap();
        std::fs::set_permissions(
            env.root().join("secrets/pfx.pass"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let r = issue(&env);
        assert_ne!(r.code(), 0, "a 0604 passphrase file was used{r}");
        r.stderr_has("ca.pass").stderr_has("604");
        std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o400)).unwrap();
        issue(&env).success();
        // Not a regular file: refused without reading it.
        let r = env.certctl(&[
            "ca",
            "init",
            "--name",
            "other",
            "--passphrase-file",
            "/dev/zero",
        ]);
        assert_ne!(r.code(), 0, "/dev/zero was read as a passphrase{r}");
        r.stderr_has("/dev/zero").stderr_has("regular file");
    }

    #[test]
    fn scan_refuses_a_pfx_password_file_others_can_read() {
        let env = TestEnv::new();
        let dir = env.mkdir("certs");
        let pw = env.root().join("secrets/pfx");
        secret(&pw, "pw\n", 0o644);
        let r = env.certctl(&["scan", s(&dir), "--pfx-password-file", s(&pw)]);
        assert_ne!(r.code(), 0, "{r}");
        r.stderr_has(s(&pw)).stderr_has("chmod 600");
    }

    #[test]
    fn config_check_names_every_secret_file_others_can_read() {
        let env = TestEnv::new();
        let secrets = env.root().join("secrets");
        let smtp = secrets.join("smtp.pass");
        let pfx = secrets.join("source-pfx.pass");
        let wf_pfx = secrets.join("wf-pfx.pass");
        let ca_pass = secrets.join("vault.pass");
        secret(&smtp, "s\n", 0o644);
        secret(&pfx, "p\n", 0o600);
        secret(&wf_pfx, "w\n", 0o640);
        secret(&ca_pass, "v\n", 0o604);
        let watched = env.mkdir("watched");
        let config = env.root().join("certd.toml");
        let text = format!(
            "store = \"{store}\"\n\
             [[source]]\npath = \"{watched}\"\npfx_password_file = \"{pfx}\"\n\
             [smtp]\nhost = \"127.0.0.1\"\nport = 2525\nfrom = \"certd@example.com\"\n\
             username = \"certd\"\npassword_file = \"{smtp}\"\n\
             [workflows]\npfx_password_file = \"{wf_pfx}\"\n\
             [workflows.ca_passphrase_files]\nvault = \"{ca_pass}\"\n",
            store = s(env.store()),
            watched = s(&watched),
            pfx = s(&pfx),
            smtp = s(&smtp),
            wf_pfx = s(&wf_pfx),
            ca_pass = s(&ca_pass),
        );
        std::fs::write(&config, text).unwrap();
        let check = |env: &TestEnv| {
            env.cmd()
                .bin("certd")
                .no_store()
                .args(["config", "check", s(&config)])
                .run()
        };
        let r = check(&env);
        assert_ne!(r.code(), 0, "config check passed with readable secrets{r}");
        let all = format!("{}{}", r.stdout, r.stderr);
        for (bad, mode) in [(&smtp, "644"), (&wf_pfx, "640"), (&ca_pass, "604")] {
            let line = all
                .lines()
                .find(|l| l.contains(s(bad)))
                .unwrap_or_else(|| panic!("{} not named{r}", bad.display()));
            assert!(
                line.contains(mode) && line.contains("chmod 600"),
                "{line}{r}"
            );
        }
        assert!(!all.contains(s(&pfx)), "a 0600 file was reported{r}");
        for f in [&smtp, &wf_pfx, &ca_pass] {
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        check(&env).success();
    }
}
