//! End-to-end tests of compromise response: managed CAs, issuing, revocation and CRLs,
//! blast radius, the regenerate workflow and its crash safety, and the audit history.
//!
//! Everything certctl writes (certificates, chains, CRLs, PFX files) is checked with an
//! independent implementation: the `openssl` command line (`openssl verify -CAfile`,
//! `openssl crl -verify`, `openssl verify -crl_check`, `openssl pkcs12 -info`). Build the
//! binaries first (`cargo build --workspace --bins`).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use certctl_e2e::files::{self, Pem};
use certctl_e2e::*;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use serde_json::Value;

/// SHA-256 of the (first) certificate of a PEM or DER file, lowercase hex, by openssl.
fn file_fingerprint(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let x = openssl::x509::X509::from_pem(&bytes)
        .or_else(|_| openssl::x509::X509::from_der(&bytes))
        .unwrap_or_else(|e| panic!("{} holds no certificate: {e}", path.display()));
    sha256_hex(&x.to_der().unwrap())
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// `certctl --store S ARGS` with `USER=alice` (the audit actor).
fn run(env: &TestEnv, args: &[&str]) -> RunResult {
    env.cmd().args(args).env("USER", "alice").run()
}

/// Creates a managed CA `name` (EC P-256, unencrypted) and returns its folder in the store.
fn init_ca(env: &TestEnv, name: &str, extra: &[&str]) -> PathBuf {
    let mut args = vec!["ca", "init", "--name", name];
    args.extend_from_slice(extra);
    run(env, &args).success().stdout_has("created CA");
    env.store().join("ca").join(name)
}

/// Issues `cn` from CA `ca` into `dir` and returns the printed fingerprint.
fn issue(env: &TestEnv, ca: &str, cn: &str, role: &str, dir: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "issue",
        "--ca",
        ca,
        "--cn",
        cn,
        "--role",
        role,
        "--out",
        s(dir),
    ];
    args.extend_from_slice(extra);
    let r = run(env, &args);
    r.success();
    let line = r
        .stdout
        .lines()
        .find(|l| l.starts_with("fingerprint (SHA-256): "))
        .unwrap_or_else(|| panic!("no fingerprint line{r}"));
    line["fingerprint (SHA-256): ".len()..].trim().to_string()
}

fn show(env: &TestEnv, id: &str) -> Vec<Value> {
    let r = env.certctl(&["show", id, "--json"]);
    r.success();
    r.json().as_array().cloned().unwrap_or_default()
}

fn by_name(env: &TestEnv, name: &str) -> Vec<Value> {
    env.list_json(&["--name", name])
        .into_iter()
        .filter(|c| c["subject_cn"] == name)
        .collect()
}

/// The serial of a certificate file, as openssl prints it (uppercase hex).
fn openssl_serial(path: &Path) -> String {
    let out = openssl_ok(&["x509", "-in", s(path), "-noout", "-serial"]);
    out.trim().trim_start_matches("serial=").to_string()
}

mod managed_ca {
    //! `ca init`, `ca list`, `ca export`, `issue`.
    use super::*;

    #[test]
    fn a_root_ca_issues_certificates_that_openssl_verifies() {
        let env = TestEnv::new();
        let ca_dir = init_ca(
            &env,
            "ops-root",
            &["--org", "Contoso", "--validity", "400d"],
        );
        assert_eq!(mode(&ca_dir), 0o700);
        assert_eq!(mode(&ca_dir.join("ca.key")), 0o600);
        let key = std::fs::read_to_string(ca_dir.join("ca.key")).unwrap();
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));

        // The CA is in the inventory with role ca, and listed as managed.
        let cas = run(&env, &["ca", "list", "--json"]).json();
        let ca_fp = cas[0]["fingerprint_sha256"].as_str().unwrap().to_string();
        let ca_cert = show(&env, &ca_fp);
        assert_eq!(ca_cert[0]["role"], "ca");
        assert_eq!(ca_cert[0]["subject"], "CN=ops-root,O=Contoso");
        let not_after = parse_rfc3339(ca_cert[0]["not_after"].as_str().unwrap());
        assert!(
            (not_after - now() - 400 * DAY).abs() < 120,
            "explicit validity"
        );

        let exported = env.file("relying/ops-root.pem");
        run(&env, &["ca", "export", "ops-root", "--out", s(&exported)]).success();
        assert_eq!(file_fingerprint(&exported), ca_fp);
        openssl_ok(&["x509", "-in", s(&exported), "-noout"]);

        let out = env.mkdir("gw");
        let fp = issue(
            &env,
            "ops-root",
            "gw.example.com",
            "gateway",
            &out,
            &[
                "--san",
                "gw.example.com",
                "--san",
                "192.0.2.7",
                "--validity",
                "90d",
            ],
        );
        let cert = out.join("gw.example.com.pem");
        let key = out.join("gw.example.com.key");
        let chain = out.join("gw.example.com.chain.pem");
        assert_eq!(file_fingerprint(&cert), fp);
        assert_eq!(mode(&key), 0o600);
        assert!(!out.join("gw.example.com.pfx").exists());
        let verified = openssl_ok(&["verify", "-CAfile", s(&exported), s(&cert)]);
        assert!(verified.contains(": OK"), "{verified}");
        openssl_ok(&["verify", "-CAfile", s(&exported), s(&chain)]);
        // The key belongs to the certificate.
        let pub_from_key = openssl_ok(&["pkey", "-in", s(&key), "-pubout"]);
        let pub_from_cert = openssl_ok(&["x509", "-in", s(&cert), "-noout", "-pubkey"]);
        assert_eq!(pub_from_key, pub_from_cert);
        // SANs and validity as asked.
        let text = openssl_ok(&["x509", "-in", s(&cert), "-noout", "-text"]);
        assert!(text.contains("DNS:gw.example.com") && text.contains("IP Address:192.0.2.7"));

        let recorded = show(&env, &fp);
        assert_eq!(recorded[0]["role"], "gateway");
        let sources: Vec<String> = file_sources(&recorded[0])
            .into_iter()
            .map(|(p, _, _)| p)
            .collect();
        assert!(sources.contains(&s(&cert).to_string()), "{sources:?}");
        let days = recorded[0]["days_left"].as_i64().unwrap();
        assert!((89..=90).contains(&days), "{days}");
        // The private key never appears in the output.
        let r = run(&env, &["show", &fp]);
        assert!(!r.stdout.contains("PRIVATE KEY"));
    }

    #[test]
    fn an_encrypted_rsa_ca_needs_its_passphrase_and_writes_pfx_for_iis() {
        let env = TestEnv::new();
        let pass = env.file("secrets/ca-pass");
        files::secret(&pass, "correct horse\n");
        let wrong = env.file("secrets/wrong");
        files::secret(&wrong, "battery staple\n");
        let ca_dir = init_ca(
            &env,
            "iis-ca",
            &["--key", "rsa-3072", "--passphrase-file", s(&pass)],
        );
        let key = std::fs::read_to_string(ca_dir.join("ca.key")).unwrap();
        assert!(key.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
        let text = openssl_ok(&["x509", "-in", s(&ca_dir.join("ca.pem")), "-noout", "-text"]);
        assert!(text.contains("3072 bit"), "{text}");

        let out = env.mkdir("iis");
        let base = [
            "issue",
            "--ca",
            "iis-ca",
            "--cn",
            "www.example.com",
            "--role",
            "iis",
            "--out",
        ];
        let mut args: Vec<&str> = base.to_vec();
        args.push(s(&out));
        run(&env, &args)
            .expect_code(4)
            .stderr_has("is encrypted")
            .stderr_has("--passphrase-file");
        let mut with_wrong = args.clone();
        with_wrong.extend(["--passphrase-file", s(&wrong)]);
        run(&env, &with_wrong)
            .expect_code(4)
            .stderr_has("wrong passphrase")
            .stderr_has("iis-ca");
        assert!(!out.join("www.example.com.pem").exists());

        let pfx_pass = env.file("secrets/pfx");
        files::secret(&pfx_pass, "pfx-secret\n");
        let fp = issue(
            &env,
            "iis-ca",
            "www.example.com",
            "iis",
            &out,
            &[
                "--pfx-password-file",
                s(&pfx_pass),
                "--passphrase-file",
                s(&pass),
            ],
        );
        let pfx = out.join("www.example.com.pfx");
        assert_eq!(mode(&pfx), 0o600);
        let info = openssl_ok(&[
            "pkcs12",
            "-info",
            "-in",
            s(&pfx),
            "-passin",
            &format!("file:{}", s(&pfx_pass)),
            "-noout",
        ]);
        assert!(info.contains("MAC"), "{info}");
        assert!(
            info.contains("MAC: sha256") && info.contains("AES-256-CBC"),
            "{info}"
        );

        // Issue 15: --pfx-legacy writes 3DES/SHA-1 for older Windows/IIS imports.
        let legacy_out = env.mkdir("iis-legacy");
        issue(
            &env,
            "iis-ca",
            "old.example.com",
            "iis",
            &legacy_out,
            &[
                "--pfx-password-file",
                s(&pfx_pass),
                "--passphrase-file",
                s(&pass),
                "--pfx-legacy",
            ],
        );
        let legacy = legacy_out.join("old.example.com.pfx");
        let info = openssl_ok(&[
            "pkcs12",
            "-info",
            "-in",
            s(&legacy),
            "-passin",
            &format!("file:{}", s(&pfx_pass)),
            "-noout",
        ]);
        assert!(info.contains("MAC: sha1"), "{info}");
        assert!(info.contains("pbeWithSHA1And3-KeyTripleDES-CBC"), "{info}");
        assert!(!info.contains("AES-256"), "{info}");
        // The PFX's certificate is the issued one and verifies against the CA.
        let extracted = env.file("iis/from-pfx.pem");
        openssl_ok(&[
            "pkcs12",
            "-in",
            s(&pfx),
            "-passin",
            &format!("file:{}", s(&pfx_pass)),
            "-nokeys",
            "-clcerts",
            "-out",
            s(&extracted),
        ]);
        assert_eq!(file_fingerprint(&extracted), fp);
        openssl_ok(&[
            "verify",
            "-CAfile",
            s(&ca_dir.join("ca.pem")),
            s(&extracted),
        ]);
        // The environment variable works as well as the file.
        let r = env
            .cmd()
            .args([
                "issue",
                "--ca",
                "iis-ca",
                "--cn",
                "two.example.com",
                "--role",
                "other",
                "--out",
            ])
            .arg(s(&out))
            .env("CERTCTL_CA_PASSPHRASE", "correct horse")
            .run();
        r.success();
    }

    /// Issue 15: the parent's key and the new intermediate may have different passphrases.
    #[test]
    fn an_intermediate_may_have_its_own_passphrase() {
        let env = TestEnv::new();
        let root_pass = env.file("secrets/root");
        files::secret(&root_pass, "root-secret\n");
        let inter_pass = env.file("secrets/inter");
        files::secret(&inter_pass, "inter-secret\n");
        let root_dir = init_ca(&env, "root", &["--passphrase-file", s(&root_pass)]);
        let (root_cert, root_key) = (root_dir.join("ca.pem"), root_dir.join("ca.key"));
        let parent = ["--parent-cert", s(&root_cert), "--parent-key", s(&root_key)];
        // Without the parent's own passphrase, the new CA's does not open the parent key.
        let mut args = vec![
            "ca",
            "init",
            "--name",
            "issuing",
            "--passphrase-file",
            s(&inter_pass),
        ];
        args.extend_from_slice(&parent);
        run(&env, &args).expect_code(4);
        args.extend_from_slice(&["--parent-passphrase-file", s(&root_pass)]);
        run(&env, &args).success().stdout_has("created CA");
        let inter = env.store().join("ca/issuing/ca.pem");
        openssl_ok(&["verify", "-CAfile", s(&root_cert), s(&inter)]);
        // The intermediate's key opens with its own passphrase, not the root's.
        let out = env.mkdir("site");
        issue(
            &env,
            "issuing",
            "site.example.com",
            "site-server",
            &out,
            &["--passphrase-file", s(&inter_pass)],
        );
        let r = run(
            &env,
            &[
                "issue",
                "--ca",
                "issuing",
                "--cn",
                "other.example.com",
                "--role",
                "site-server",
                "--out",
                s(&out),
                "--passphrase-file",
                s(&root_pass),
            ],
        );
        r.expect_code(4);
    }

    #[test]
    fn an_intermediate_signed_by_a_parent_pem_chains_to_it() {
        let env = TestEnv::new();
        let f = CertFactory::new();
        let parent_cert = env.file("parent/root.pem");
        let parent_key = env.file("parent/root.key");
        files::pem(&parent_cert, &[f.root()]);
        files::pem_parts(&parent_key, &[Pem::Key(f.root())]);
        let ca_dir = init_ca(
            &env,
            "issuing",
            &[
                "--parent-cert",
                s(&parent_cert),
                "--parent-key",
                s(&parent_key),
            ],
        );
        let inter = ca_dir.join("ca.pem");
        openssl_ok(&["verify", "-CAfile", s(&parent_cert), s(&inter)]);
        let out = env.mkdir("site");
        issue(
            &env,
            "issuing",
            "site-1.example.com",
            "site-server",
            &out,
            &[],
        );
        let leaf = out.join("site-1.example.com.pem");
        openssl_ok(&[
            "verify",
            "-CAfile",
            s(&parent_cert),
            "-untrusted",
            s(&inter),
            s(&leaf),
        ]);
        // The chain file is leaf + intermediate + parent.
        let chain = std::fs::read_to_string(out.join("site-1.example.com.chain.pem")).unwrap();
        assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 3);
        // A key that is not the parent's is refused.
        let other_key = env.file("parent/other.key");
        files::pem_parts(&other_key, &[Pem::Key(f.intermediate())]);
        run(
            &env,
            &[
                "ca",
                "init",
                "--name",
                "bad",
                "--parent-cert",
                s(&parent_cert),
                "--parent-key",
                s(&other_key),
            ],
        )
        .expect_code(4)
        .stderr_has("does not belong");
    }
}

mod revocation {
    //! `revoke`, CRLs, blast radius, the no-terminal refusal, and `history`.
    use super::*;

    #[test]
    fn revoking_publishes_a_crl_that_openssl_accepts() {
        let env = TestEnv::new();
        let crl_der = env.root().join("pub/ops.crl");
        let ca_dir = init_ca(&env, "ops", &["--crl-out", s(&crl_der)]);
        let ca_pem = ca_dir.join("ca.pem");
        let crl_pem = ca_dir.join("crl.pem");
        // The first CRL exists from the start, empty, number 1.
        let text = openssl_ok(&["crl", "-in", s(&crl_pem), "-noout", "-text"]);
        assert!(text.contains("No Revoked Certificates"), "{text}");
        let out = env.mkdir("certs");
        let bad = issue(&env, "ops", "leaked.example.com", "gateway", &out, &[]);
        issue(&env, "ops", "fine.example.com", "gateway", &out, &[]);
        let leaked = out.join("leaked.example.com.pem");
        let fine = out.join("fine.example.com.pem");

        let r = run(
            &env,
            &["revoke", &bad[..16], "--reason", "key-compromise", "--yes"],
        );
        r.success()
            .stdout_has("published CRL #2 of CA `ops`")
            .stdout_has(&format!("verified {}", s(&crl_pem)))
            .stdout_has(&format!("verified {}", s(&crl_der)))
            .stdout_has("is signed by the CA and lists serial");

        // openssl: signature, number, entry with its reason, dates.
        let v = openssl_ok(&[
            "crl",
            "-in",
            s(&crl_pem),
            "-CAfile",
            s(&ca_pem),
            "-verify",
            "-noout",
        ]);
        assert!(v.contains("verify OK"), "{v}");
        let text = openssl_ok(&["crl", "-in", s(&crl_pem), "-noout", "-text"]);
        assert!(
            text.contains("CRL Number: \n                2") || text.contains("X509v3 CRL Number")
        );
        assert!(text.contains(&openssl_serial(&leaked)), "{text}");
        assert!(text.contains("Key Compromise"), "{text}");
        assert!(text.contains("Next Update"), "{text}");
        assert!(!text.contains(&openssl_serial(&fine)), "{text}");
        let v = openssl_ok(&[
            "crl",
            "-inform",
            "DER",
            "-in",
            s(&crl_der),
            "-CAfile",
            s(&ca_pem),
            "-verify",
            "-noout",
        ]);
        assert!(v.contains("verify OK"), "{v}");
        // openssl verify -crl_check: the revoked one fails, the other passes.
        let (ok, text) = openssl(&[
            "verify",
            "-crl_check",
            "-CRLfile",
            s(&crl_pem),
            "-CAfile",
            s(&ca_pem),
            s(&leaked),
        ]);
        assert!(!ok && text.contains("certificate revoked"), "{text}");
        openssl_ok(&[
            "verify",
            "-crl_check",
            "-CRLfile",
            s(&crl_pem),
            "-CAfile",
            s(&ca_pem),
            s(&fine),
        ]);

        // The record says revoked, with reason and who.
        let rec = &show(&env, &bad)[0];
        assert_eq!(rec["status"], "revoked");
        assert_eq!(rec["revocation"]["reason"], "key-compromise");
        assert_eq!(rec["revocation"]["revoked_by"], "alice");

        // CRL numbers keep counting: `ca crl` writes number 3 on demand, as DER.
        let extra = env.file("export/ops-now.crl");
        run(&env, &["ca", "crl", "ops", "--out", s(&extra), "--der"])
            .success()
            .stdout_has("CRL #3");
        let text = openssl_ok(&[
            "crl",
            "-inform",
            "DER",
            "-in",
            s(&extra),
            "-CAfile",
            s(&ca_pem),
            "-verify",
            "-noout",
            "-crlnumber",
        ]);
        assert!(
            text.contains("crlNumber=0x03") || text.contains("crlNumber=03"),
            "{text}"
        );

        // Revoking again changes nothing.
        run(&env, &["revoke", &bad, "--reason", "superseded", "--yes"])
            .success()
            .stdout_has("already revoked")
            .stdout_has("nothing to revoke");

        // history ID: issued, revoked (with reason and actor).
        let h = run(&env, &["history", &bad]);
        h.success()
            .stdout_has("issued")
            .stdout_has("revoked")
            .stdout_has("key-compromise")
            .stdout_has("alice");
    }

    #[test]
    fn without_a_terminal_revoke_refuses_unless_yes() {
        let env = TestEnv::new();
        init_ca(&env, "ops", &[]);
        let out = env.mkdir("certs");
        let fp = issue(&env, "ops", "keep.example.com", "gateway", &out, &[]);
        let r = run(&env, &["revoke", &fp, "--reason", "key-compromise"]);
        r.expect_code(4)
            .stderr_has("refusing to revoke")
            .stderr_has("--yes")
            .stdout_has("keep.example.com");
        let rec = &show(&env, &fp)[0];
        assert_eq!(rec["revoked"], false);
        // regenerate --deploy refuses the same way.
        run(&env, &["regenerate", &fp, "--deploy"])
            .expect_code(4)
            .stderr_has("--yes");
        assert_eq!(by_name(&env, "keep.example.com").len(), 1);
    }

    /// Runs certctl under `script` (a pseudo-terminal) answering `answer`; `None` when the
    /// `script` tool (util-linux) is not installed.
    fn on_a_terminal(env: &TestEnv, args: &[&str], answer: &str) -> Option<String> {
        use std::io::Write as _;
        use std::process::Stdio;
        let mut line = format!("{} --store {}", s(&bin_path("certctl")), s(env.store()));
        for a in args {
            line.push(' ');
            line.push_str(a);
        }
        let mut command = Command::new("script");
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("CERTCTL_") {
                command.env_remove(&k);
            }
        }
        let mut child = command
            .args(["-qec", &line, "/dev/null"])
            .env("USER", "alice")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .ok()?;
        std::thread::sleep(std::time::Duration::from_millis(700));
        let mut stdin = child.stdin.take()?;
        let _ = stdin.write_all(answer.as_bytes());
        let out = child.wait_with_output().ok()?;
        Some(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    #[test]
    fn on_a_terminal_revoke_shows_the_certificate_and_asks() {
        let env = TestEnv::new();
        init_ca(&env, "ops", &[]);
        let out = env.mkdir("certs");
        let fp = issue(&env, "ops", "asked.example.com", "gateway", &out, &[]);
        let args = ["revoke", &fp, "--reason", "key-compromise", "--no-probe"];
        let Some(text) = on_a_terminal(&env, &args, "n\n") else {
            eprintln!("skipped: the `script` tool is not installed");
            return;
        };
        assert!(
            text.contains("asked.example.com") && text.contains("[y/N]"),
            "{text}"
        );
        assert!(text.contains("nothing was revoked"), "{text}");
        assert_eq!(show(&env, &fp)[0]["revoked"], false);
        let text = on_a_terminal(&env, &args, "y\n").unwrap_or_default();
        assert!(text.contains("published CRL #2"), "{text}");
        assert_eq!(show(&env, &fp)[0]["revocation"]["reason"], "key-compromise");
    }

    /// A CA that certctl does not hold, two leaves sharing one key and a third with another.
    struct SharedKeyFleet {
        ca_pem: PathBuf,
        shared_key: PathBuf,
        shared: Vec<(String, PathBuf)>,
        other: (String, PathBuf),
    }

    fn shared_key_fleet(env: &TestEnv) -> SharedKeyFleet {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "Outside CA");
        ca_params.distinguished_name = dn;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca_params.not_before = time::OffsetDateTime::from_unix_timestamp(now() - DAY).unwrap();
        ca_params.not_after = time::OffsetDateTime::from_unix_timestamp(now() + 400 * DAY).unwrap();
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::from_params(&ca_params, &ca_key);
        let leaf = |cn: &str, key: &KeyPair| {
            let mut p = CertificateParams::default();
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, cn);
            p.distinguished_name = dn;
            p.subject_alt_names = vec![SanType::DnsName(cn.try_into().unwrap())];
            p.is_ca = IsCa::ExplicitNoCa;
            p.use_authority_key_identifier_extension = true;
            p.not_before = time::OffsetDateTime::from_unix_timestamp(now() - DAY).unwrap();
            p.not_after = time::OffsetDateTime::from_unix_timestamp(now() + 200 * DAY).unwrap();
            p.signed_by(key, &issuer).unwrap()
        };
        let shared_key_pem = KeyKind::EcP256.generate_pem();
        let shared_pair = KeyPair::from_pem(&shared_key_pem).unwrap();
        let other_pair = KeyKind::EcP256.generate();
        let ca_pem = env.file("outside/ca.pem");
        write(&ca_pem, &ca_cert.pem());
        let shared_key = env.file("leak/shared.key");
        write(&shared_key, &shared_key_pem);
        let mut shared = Vec::new();
        for (cn, rel) in [
            ("a.example.com", "site-a/a.pem"),
            ("b.example.com", "site-b/b.pem"),
        ] {
            let c = leaf(cn, &shared_pair);
            let p = env.file(rel);
            write(&p, &c.pem());
            shared.push((sha256_hex(c.der()), p));
        }
        let c = leaf("c.example.com", &other_pair);
        let p = env.file("site-c/c.pem");
        write(&p, &c.pem());
        SharedKeyFleet {
            ca_pem,
            shared_key,
            shared,
            other: (sha256_hex(c.der()), p),
        }
    }

    fn listed_fingerprints(stdout: &str) -> Vec<String> {
        let mut fps: Vec<String> = stdout
            .lines()
            .filter_map(|l| {
                let first = l.split_whitespace().next()?;
                (first.len() == 64 && first.chars().all(|c| c.is_ascii_hexdigit()))
                    .then(|| first.to_string())
            })
            .collect();
        fps.sort();
        fps
    }

    #[test]
    fn blast_radius_dry_run_lists_exactly_what_would_be_revoked() {
        let env = TestEnv::new();
        let fleet = shared_key_fleet(&env);
        for dir in ["outside", "site-a", "site-b", "site-c"] {
            run(
                &env,
                &["scan", s(&env.root().join(dir)), "--role", "gateway"],
            )
            .success();
        }
        let mut shared_fps: Vec<String> = fleet.shared.iter().map(|(f, _)| f.clone()).collect();
        shared_fps.sort();
        let spki = show(&env, &fleet.shared[0].0)[0]["spki_sha256"]
            .as_str()
            .unwrap()
            .to_string();

        // --spki: exactly the two certificates with that key, with where they are deployed.
        let r = run(
            &env,
            &[
                "revoke",
                "--spki",
                &spki,
                "--reason",
                "key-compromise",
                "--dry-run",
            ],
        );
        r.success().stdout_has("would revoke 2 certificate(s)");
        assert_eq!(listed_fingerprints(&r.stdout), shared_fps, "{r}");
        for (_, path) in &fleet.shared {
            r.stdout_has(&format!("deployed at: {}#0", s(path)));
        }
        // --key-file: the same two, from the leaked key itself.
        let r = run(
            &env,
            &[
                "revoke",
                "--key-file",
                s(&fleet.shared_key),
                "--reason",
                "key-compromise",
                "--dry-run",
                "--json",
            ],
        );
        r.success();
        let mut fps: Vec<String> = r.json()["targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                t["certificate"]["fingerprint_sha256"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        fps.sort();
        assert_eq!(fps, shared_fps);
        // --issuer: every leaf of that CA (not the CA itself).
        let ca_fp = file_fingerprint(&fleet.ca_pem);
        let r = run(
            &env,
            &[
                "revoke",
                "--issuer",
                &ca_fp,
                "--reason",
                "ca-compromise",
                "--dry-run",
            ],
        );
        r.success().stdout_has("would revoke 3 certificate(s)");
        let mut all = shared_fps.clone();
        all.push(fleet.other.0.clone());
        all.sort();
        assert_eq!(listed_fingerprints(&r.stdout), all, "{r}");
        // Issue 15: --issuer accepts what certctl prints of the CA: its DN as `show` prints
        // it, its CN, a substring of the DN that names one issuer; an ambiguous one lists the
        // candidates.
        let ca_show = &show(&env, &ca_fp)[0];
        let dn = ca_show["subject"].as_str().unwrap().to_string();
        let cn = ca_show["subject_cn"].as_str().unwrap().to_string();
        let substring = cn[..cn.len() / 2].to_lowercase();
        for id in [dn.as_str(), cn.as_str(), substring.as_str()] {
            let r = run(
                &env,
                &[
                    "revoke",
                    "--issuer",
                    id,
                    "--reason",
                    "ca-compromise",
                    "--dry-run",
                ],
            );
            r.success().stdout_has("would revoke 3 certificate(s)");
            assert_eq!(listed_fingerprints(&r.stdout), all, "--issuer {id}{r}");
        }
        // With a second issuer in the store, "CN=" is in both DNs: nothing is selected.
        let f = CertFactory::new();
        let elsewhere = f.leaf(CertSpec::leaf("elsewhere.example"));
        let p = env.file("elsewhere/e.pem");
        certctl_e2e::files::pem(&p, &[&elsewhere]);
        run(&env, &["scan", s(&p)]).success();
        run(
            &env,
            &[
                "revoke",
                "--issuer",
                "CN=",
                "--reason",
                "ca-compromise",
                "--dry-run",
            ],
        )
        .expect_code(4)
        .stderr_has(&dn);
        // A dry run revokes nothing.
        for fp in &all {
            assert_eq!(show(&env, fp)[0]["revoked"], false);
        }

        // The real thing: tracked only, and the output says the CA must be told.
        let r = run(
            &env,
            &[
                "revoke",
                "--key-file",
                s(&fleet.shared_key),
                "--reason",
                "key-compromise",
                "--yes",
            ],
        );
        r.success()
            .stdout_has("The issuing CA must also be told")
            .stdout_has("CN=Outside CA");
        for fp in &shared_fps {
            let rec = &show(&env, fp)[0];
            assert_eq!(rec["revocation"]["reason"], "key-compromise");
        }
        assert_eq!(show(&env, &fleet.other.0)[0]["revoked"], false);
        let _ = &fleet.other.1;
    }

    /// Issue 15: managed CRLs expired 7 days after the last revoke because nothing
    /// re-signed them. `check` warns before, and is critical after, nextUpdate; certd
    /// re-signs at start-up (and every 10 minutes) once `[crl] resign_before` (default half
    /// the validity) is reached, and openssl accepts the new CRL.
    #[test]
    fn certd_re_signs_a_managed_crl_before_it_expires() {
        let env = TestEnv::new();
        let crl_der = env.root().join("pub/ops.crl");
        let ca_dir = init_ca(
            &env,
            "ops",
            &["--crl-out", s(&crl_der), "--crl-validity", "10m"],
        );
        let crl_number = |path: &Path| {
            let text = openssl_ok(&["crl", "-in", s(path), "-noout", "-crlnumber"]);
            text.trim().trim_start_matches("crlNumber=").to_string()
        };
        assert_eq!(crl_number(&ca_dir.join("crl.pem")), "0x01");
        run(&env, &["check"]).expect_code(0);
        // The clock moved: 4 minutes before nextUpdate (past half), then after it.
        let at = |offset: i64| rfc3339(now() + offset);
        env.cmd()
            .env("CERTCTL_NOW", at(6 * 60 + 30))
            .args(["check"])
            .run()
            .expect_code(1)
            .stdout_has("the CRL of CA `ops` expires");
        env.cmd()
            .env("CERTCTL_NOW", at(11 * 60))
            .args(["check"])
            .run()
            .expect_code(2)
            .stdout_has("the CRL of CA `ops` expired");

        // certd with resign_before = 599s: due one second after the last publish.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let config =
            certctl_e2e::daemon::CertdConfig::new(env.store()).write(&env.file("etc/certd.toml"));
        let mut text = std::fs::read_to_string(&config).unwrap();
        text.push_str("\n[crl]\nresign_before = \"599s\"\n");
        std::fs::write(&config, text).unwrap();
        let certd = certctl_e2e::daemon::Certd::start(&env, &config);
        certd.wait_for_log(
            "re-signed and published the CRL",
            std::time::Duration::from_secs(30),
        );
        let st = certctl_e2e::daemon::status_json(&env);
        let job = st["daemon"]["schedules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["job"] == "crl-upkeep")
            .cloned()
            .unwrap_or_else(|| panic!("no crl-upkeep job in {st:#}"));
        assert_eq!(job["last_outcome"], "ok: 1 CRLs re-signed", "{job}");
        certd.stop_ok();
        assert_eq!(crl_number(&ca_dir.join("crl.pem")), "0x02");
        let v = openssl_ok(&[
            "crl",
            "-inform",
            "DER",
            "-in",
            s(&crl_der),
            "-CAfile",
            s(&ca_dir.join("ca.pem")),
            "-verify",
            "-noout",
            "-crlnumber",
        ]);
        assert!(v.contains("verify OK") && v.contains("0x02"), "{v}");
    }

    /// Issue 15: a bulk revoke printed every certificate (4.6 MB for 10,000); above 20 it
    /// prints counts per CA and per deployment folder, the list only with --verbose.
    #[test]
    fn a_bulk_revoke_prints_a_summary_and_the_list_only_with_verbose() {
        let env = TestEnv::new();
        let bulk = env.mkdir("bulk");
        let fps = certctl_e2e::daemon::write_bulk_pems(&bulk, 30, 15);
        run(&env, &["scan", s(&bulk), "--role", "agent"]).success();
        let args = [
            "revoke",
            "--issuer",
            "Certctl E2E Bulk CA",
            "--reason",
            "key-compromise",
            "--dry-run",
        ];
        let r = run(&env, &args);
        r.success()
            .stdout_has("would revoke 30 certificate(s)")
            .stdout_has("by CA:")
            .stdout_has("by deployment folder")
            .stdout_has("--verbose");
        assert!(listed_fingerprints(&r.stdout).is_empty(), "{r}");
        let folders: Vec<&str> = r.stdout.lines().filter(|l| l.contains(s(&bulk))).collect();
        assert_eq!(folders.len(), 2, "two folders of 15{r}");
        assert!(
            folders.iter().all(|l| l.trim_start().starts_with("15 ")),
            "{r}"
        );
        let mut verbose = args.to_vec();
        verbose.push("--verbose");
        let r = run(&env, &verbose);
        let mut listed = listed_fingerprints(&r.stdout);
        listed.sort();
        let mut want: Vec<String> = fps.into_iter().collect();
        want.sort();
        assert_eq!(listed, want, "{r}");
    }

    /// Issue 15: `regenerate NAME` matching several certificates lists them (as `revoke`
    /// does) instead of only asking for a prefix.
    #[test]
    fn regenerate_with_an_ambiguous_name_lists_the_candidates() {
        let env = TestEnv::new();
        init_ca(&env, "ops", &[]);
        let a = issue(
            &env,
            "ops",
            "twice.example.com",
            "gateway",
            &env.mkdir("a"),
            &[],
        );
        let b = issue(
            &env,
            "ops",
            "twice.example.com",
            "gateway",
            &env.mkdir("b"),
            &[],
        );
        let r = run(&env, &["regenerate", "twice.example.com", "--yes"]);
        r.expect_code(4)
            .stderr_has("names several certificates")
            .stderr_has(&a)
            .stderr_has(&b);
    }

    /// Issue 15: an encrypted CA without a passphrase file in certd's configuration: certd
    /// says at start-up that it cannot re-sign that CA's CRL.
    #[test]
    fn certd_warns_at_start_about_a_crl_it_cannot_re_sign() {
        let env = TestEnv::new();
        let pass = env.file("secrets/ops");
        files::secret(&pass, "ops-secret\n");
        init_ca(&env, "ops", &["--passphrase-file", s(&pass)]);
        init_ca(&env, "plain", &[]);
        let config =
            certctl_e2e::daemon::CertdConfig::new(env.store()).write(&env.file("etc/certd.toml"));
        let certd = certctl_e2e::daemon::Certd::start(&env, &config);
        let log = certd.wait_for_log(
            "certd cannot re-sign its CRL",
            std::time::Duration::from_secs(20),
        );
        assert!(log.contains("ops"), "{log}");
        assert!(
            !log.lines()
                .any(|l| l.contains("cannot re-sign") && l.contains("plain")),
            "{log}"
        );
        certd.stop_ok();
    }

    /// Issue 15: `ca crl NAME` publishes to the CA's CRL paths; `--out` is an optional copy.
    #[test]
    fn ca_crl_publishes_without_out() {
        let env = TestEnv::new();
        let crl_der = env.root().join("pub/ops.crl");
        let ca_dir = init_ca(&env, "ops", &["--crl-out", s(&crl_der)]);
        let r = run(&env, &["ca", "crl", "ops"]);
        r.success()
            .stdout_has("CRL #2 of CA `ops`")
            .stdout_has(&format!("written to {}", s(&crl_der)));
        let v = openssl_ok(&[
            "crl",
            "-inform",
            "DER",
            "-in",
            s(&crl_der),
            "-CAfile",
            s(&ca_dir.join("ca.pem")),
            "-verify",
            "-noout",
            "-text",
        ]);
        assert!(v.contains("verify OK"), "{v}");
        let copy = env.root().join("copy.pem");
        run(&env, &["ca", "crl", "ops", "--out", s(&copy)])
            .success()
            .stdout_has("CRL #3");
        assert!(copy.is_file());
    }

    /// Issue 15: a revocation whose CRL could not be published (here the `--crl-out` folder
    /// is a file; a full disk or a kill -9 between the commit and the publish end the same
    /// way) used to be final: the retry said "nothing to revoke" and the published CRL never
    /// listed the serial. The retry repairs it, `check` says the CRL is behind until then,
    /// and openssl is the judge.
    #[test]
    fn a_revocation_whose_crl_failed_to_publish_is_republished_by_the_retry() {
        let env = TestEnv::new();
        let pub_dir = env.root().join("pub");
        let crl_der = pub_dir.join("ops.crl");
        let ca_dir = init_ca(&env, "ops", &["--crl-out", s(&crl_der)]);
        let ca_pem = ca_dir.join("ca.pem");
        let out = env.mkdir("certs");
        let bad = issue(&env, "ops", "leaked.example.com", "gateway", &out, &[]);
        let leaked = out.join("leaked.example.com.pem");

        // Publishing breaks: the folder is replaced by a file.
        std::fs::remove_dir_all(&pub_dir).unwrap();
        std::fs::write(&pub_dir, b"not a folder").unwrap();
        let revoke = ["revoke", &bad[..16], "--reason", "key-compromise", "--yes"];
        run(&env, &revoke).expect_code(4).stderr_has(s(&pub_dir));
        // The store holds it as revoked, the published CRL does not list it: check says so.
        run(&env, &["check"])
            .expect_code(2)
            .stdout_has("CRL of CA `ops` is behind");
        run(&env, &["status"])
            .success()
            .stdout_has("the published CRL of CA `ops` is behind the store");
        run(&env, &["metrics"])
            .success()
            .stdout_has("certctl_crl_behind{ca=\"ops\"} 1")
            .stdout_has("certctl_crl_next_update_timestamp_seconds{ca=\"ops\"} ");

        // The cause is fixed; the same command repairs, exit 0, and says what it did.
        std::fs::remove_file(&pub_dir).unwrap();
        let r = run(&env, &revoke);
        r.success()
            .stdout_has("CRL republished")
            .stdout_has(&format!("verified {}", s(&crl_der)));
        for crl in [ca_dir.join("crl.pem"), crl_der.clone()] {
            let form = if crl == crl_der { "DER" } else { "PEM" };
            let (ok, text) = openssl(&[
                "verify",
                "-crl_check",
                "-CRLfile",
                s(&crl),
                "-CAfile",
                s(&ca_pem),
                s(&leaked),
            ]);
            if form == "PEM" {
                assert!(!ok && text.contains("certificate revoked"), "{text}");
            } else {
                let text =
                    openssl_ok(&["crl", "-inform", "DER", "-in", s(&crl), "-noout", "-text"]);
                assert!(text.contains(&openssl_serial(&leaked)), "{text}");
            }
        }
        run(&env, &["check"]).expect_code(0);
        run(&env, &["metrics"])
            .success()
            .stdout_has("certctl_crl_behind{ca=\"ops\"} 0");
        // Nothing left to do: the third run is the old "nothing to revoke".
        run(&env, &revoke).success().stdout_has("nothing to revoke");
    }

    /// Issue 13: no store lock during network I/O. `revoke` through certd probes the
    /// endpoints that served what it revoked; an endpoint that accepts and never answers used
    /// to hold certd's writer lock for the whole probe, so scans waited.
    #[test]
    fn a_silent_endpoint_probed_by_revoke_does_not_hold_up_a_scan_through_certd() {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::Arc;
        let env = TestEnv::new();
        let f = CertFactory::new();
        let gw = f.leaf(CertSpec::leaf("gw.example").dns("gw.example"));
        let server = certctl_e2e::tls::TlsServer::serve(&gw, &[f.intermediate()]);
        let address = server.address();
        run(
            &env,
            &[
                "probe",
                &address,
                "--sni",
                "gw.example",
                "--role",
                "gateway",
            ],
        );
        server.stop();
        // The same address now accepts and never says a word.
        let listener = std::net::TcpListener::bind(&address).expect("bind again");
        listener.set_nonblocking(true).unwrap();
        let (open, stop) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let silent = {
            let (open, stop) = (open.clone(), stop.clone());
            std::thread::spawn(move || {
                let end = std::time::Instant::now() + std::time::Duration::from_secs(60);
                let mut held = Vec::new();
                while !stop.load(Ordering::SeqCst) && std::time::Instant::now() < end {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            held.push(stream);
                            open.store(held.len(), Ordering::SeqCst);
                        }
                        Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
                    }
                }
            })
        };
        let config =
            certctl_e2e::daemon::CertdConfig::new(env.store()).write(&env.file("etc/certd.toml"));
        let certd = certctl_e2e::daemon::Certd::start(&env, &config);
        let inbox = env.mkdir("inbox");
        let other = f.leaf(CertSpec::leaf("other.example").expires_in_days(200));
        files::pem(&inbox.join("other.pem"), &[&other]);
        std::thread::scope(|scope| {
            let revoking = scope.spawn(|| {
                env.certctl(&[
                    "revoke",
                    &gw.fingerprint,
                    "--reason",
                    "key-compromise",
                    "--yes",
                ])
            });
            let end = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while open.load(Ordering::SeqCst) == 0 && std::time::Instant::now() < end {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            assert_eq!(
                open.load(Ordering::SeqCst),
                1,
                "revoke never probed the endpoint"
            );
            // While revoke's probe waits on the silent endpoint, a scan goes through.
            env.cmd()
                .args(["scan", s(&inbox)])
                .timeout(std::time::Duration::from_secs(60))
                .run()
                .success();
            assert!(
                !revoking.is_finished(),
                "the scan should end while revoke still waits for the silent endpoint"
            );
            let r = revoking.join().expect("revoke thread");
            r.success()
                .stdout_has(&format!("endpoint tls://{address}: unreachable"));
        });
        stop.store(true, Ordering::SeqCst);
        let _ = silent.join();
        certd.stop_ok();
    }

    #[test]
    fn revoke_says_whether_an_endpoint_still_serves_the_certificate() {
        let env = TestEnv::new();
        let f = CertFactory::new();
        let gw = f.leaf(CertSpec::leaf("gw.example").dns("gw.example"));
        let server = certctl_e2e::tls::TlsServer::serve(&gw, &[f.intermediate()]);
        let address = server.address();
        run(
            &env,
            &[
                "probe",
                &address,
                "--sni",
                "gw.example",
                "--role",
                "gateway",
            ],
        )
        // The test CA is in no trust store: chain-untrusted, critical.
        .expect_code(2);
        let r = run(
            &env,
            &[
                "revoke",
                &gw.fingerprint,
                "--reason",
                "key-compromise",
                "--yes",
            ],
        );
        r.success()
            .stdout_has(&format!("deployed at: tls://{address}#0"))
            .stdout_has(&format!("endpoint tls://{address}: still-serving"))
            .stdout_has("The issuing CA must also be told")
            .stdout_has("CN=Certctl E2E Issuing CA");

        // Issues 14/15: the next probe, `status` and `check` keep saying it until it stops
        // (it used to be said once, then "no findings").
        let probe_args = [
            "probe",
            address.as_str(),
            "--sni",
            "gw.example",
            "--role",
            "gateway",
        ];
        run(&env, &probe_args)
            .expect_code(2)
            .stdout_has("finding: serving-revoked");
        let status = run(&env, &["status", "--json"]);
        let kinds: Vec<String> = status.json()["endpoints"][0]["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["kind"].as_str().unwrap().to_string())
            .collect();
        assert!(kinds.contains(&"serving-revoked".to_string()), "{status}");
        run(&env, &["check", "--role", "gateway"])
            .expect_code(2)
            .stdout_has("serving-revoked");
        server.stop();

        // Its replacement is deployed and served: the finding is gone.
        let new = f.leaf(CertSpec::leaf("gw.example").dns("gw.example"));
        let server = certctl_e2e::tls::TlsServer::serve_on(&address, &new, &[f.intermediate()]);
        let r = run(&env, &probe_args);
        assert!(!r.stdout.contains("serving-revoked"), "{r}");
        let status = run(&env, &["status"]);
        assert!(!status.stdout.contains("serving-revoked"), "{status}");
        server.stop();
    }

    #[test]
    fn history_at_a_date_lists_what_was_valid_then() {
        let env = TestEnv::new();
        init_ca(&env, "ops", &[]);
        let out = env.mkdir("certs");
        let fp = issue(&env, "ops", "then.example.com", "gateway", &out, &[]);
        let before = rfc3339(now());
        std::thread::sleep(std::time::Duration::from_millis(1100));
        run(
            &env,
            &["revoke", &fp, "--reason", "key-compromise", "--yes"],
        )
        .success();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let after = rfc3339(now());
        let r = run(&env, &["history", "--at", &before, "--json"]);
        r.success();
        let then: Vec<String> = r
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                v["certificate"]["fingerprint_sha256"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert!(then.contains(&fp), "{r}");
        let r = run(&env, &["history", "--at", &after, "--json"]);
        let later: Vec<String> = r
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                v["certificate"]["fingerprint_sha256"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert!(!later.contains(&fp), "revoked before `after`{r}");
        run(&env, &["history", "--at", "yesterday"])
            .expect_code(4)
            .stderr_has("invalid date");
    }
}

mod regenerate {
    //! `regenerate --deploy --revoke-old`, and crash safety of every workflow step.
    use super::*;

    /// A gateway certificate from managed CA `ops`, deployed as PEM + key, a combined PEM,
    /// DER and a PFX, all scanned. Returns (old fingerprint, deployed files, pfx password file).
    fn deployed_fleet(env: &TestEnv, cn: &str) -> (String, Vec<PathBuf>, PathBuf) {
        let out = env.mkdir(&format!("issued-{cn}"));
        let fp = issue(env, "ops", cn, "gateway", &out, &[]);
        let cert = out.join(format!("{cn}.pem"));
        let key = out.join(format!("{cn}.key"));
        let dep = env.mkdir(&format!("deploy-{cn}"));
        let pem = dep.join("server.pem");
        let pem_key = dep.join("server.key");
        std::fs::copy(&cert, &pem).unwrap();
        std::fs::copy(&key, &pem_key).unwrap();
        let combined = dep.join("combined.pem");
        let text = format!(
            "{}{}",
            std::fs::read_to_string(&cert).unwrap(),
            std::fs::read_to_string(&key).unwrap()
        );
        write(&combined, &text);
        let der = dep.join("server.der");
        openssl_ok(&["x509", "-in", s(&cert), "-outform", "DER", "-out", s(&der)]);
        let pfx_pass = env.file(&format!("secrets/{cn}.pfxpass"));
        files::secret(&pfx_pass, "pfx-pw\n");
        let pfx = dep.join("server.pfx");
        openssl_ok(&[
            "pkcs12",
            "-export",
            "-in",
            s(&cert),
            "-inkey",
            s(&key),
            "-passout",
            &format!("file:{}", s(&pfx_pass)),
            "-out",
            s(&pfx),
        ]);
        run(
            env,
            &[
                "scan",
                s(&dep),
                "--role",
                "gateway",
                "--pfx-password-file",
                s(&pfx_pass),
            ],
        )
        .success();
        (fp, vec![pem, pem_key, combined, der, pfx], pfx_pass)
    }

    /// Checks the deployed files hold the new certificate and key, that the `.bak` files
    /// hold the old ones, and that nothing half-written is left.
    fn assert_deployed(
        env: &TestEnv,
        ca_dir: &Path,
        files: &[PathBuf],
        pfx_pass: &Path,
        old_fp: &str,
        new_fp: &str,
    ) {
        let ca_pem = ca_dir.join("ca.pem");
        let crl = ca_dir.join("crl.pem");
        let [pem, pem_key, combined, der, pfx] = files else {
            panic!("five files")
        };
        for cert in [pem, combined, der] {
            assert_eq!(&file_fingerprint(cert), new_fp, "{}", cert.display());
            assert_eq!(
                &file_fingerprint(&PathBuf::from(format!("{}.bak", s(cert)))),
                old_fp
            );
        }
        openssl_ok(&[
            "verify",
            "-crl_check",
            "-CRLfile",
            s(&crl),
            "-CAfile",
            s(&ca_pem),
            s(pem),
        ]);
        let (ok, text) = openssl(&[
            "verify",
            "-crl_check",
            "-CRLfile",
            s(&crl),
            "-CAfile",
            s(&ca_pem),
            &format!("{}.bak", s(pem)),
        ]);
        assert!(!ok && text.contains("certificate revoked"), "{text}");
        // Keys follow their certificates.
        let cert_pub = openssl_ok(&["x509", "-in", s(pem), "-noout", "-pubkey"]);
        assert_eq!(
            openssl_ok(&["pkey", "-in", s(pem_key), "-pubout"]),
            cert_pub
        );
        assert_eq!(
            openssl_ok(&["pkey", "-in", s(combined), "-pubout"]),
            cert_pub
        );
        assert_eq!(mode(pem_key), 0o600);
        assert_eq!(mode(&PathBuf::from(format!("{}.bak", s(pem_key)))), 0o600);
        // The PFX opens with the same password and holds the new certificate.
        let pass = format!("file:{}", s(pfx_pass));
        openssl_ok(&["pkcs12", "-info", "-in", s(pfx), "-passin", &pass, "-noout"]);
        let extracted = env.file("tmp/extracted.pem");
        openssl_ok(&[
            "pkcs12",
            "-in",
            s(pfx),
            "-passin",
            &pass,
            "-nokeys",
            "-clcerts",
            "-out",
            s(&extracted),
        ]);
        assert_eq!(&file_fingerprint(&extracted), new_fp);
        // No temporary files left behind.
        for f in files {
            for entry in std::fs::read_dir(f.parent().unwrap()).unwrap() {
                let name = entry.unwrap().file_name().to_string_lossy().into_owned();
                assert!(!name.contains("certctl-tmp"), "left over: {name}");
            }
        }
    }

    #[test]
    fn regenerate_deploys_every_format_and_revokes_the_old_one() {
        let env = TestEnv::new();
        let ca_dir = init_ca(&env, "ops", &[]);
        let (old, files, pfx_pass) = deployed_fleet(&env, "gw.example.com");
        let r = run(
            &env,
            &[
                "regenerate",
                &old,
                "--deploy",
                "--revoke-old",
                "--yes",
                "--pfx-password-file",
                s(&pfx_pass),
                "--json",
            ],
        );
        r.success();
        let report = r.json();
        assert_eq!(report["step"], "done");
        let new = report["new_fingerprint"].as_str().unwrap().to_string();
        assert_ne!(new, old);
        assert_deployed(&env, &ca_dir, &files, &pfx_pass, &old, &new);
        // Same subject, SANs and role; the old one is superseded.
        let certs = by_name(&env, "gw.example.com");
        assert_eq!(certs.len(), 2);
        let new_rec = find_fp(&certs, &new);
        let old_rec = find_fp(&certs, &old);
        assert_eq!(new_rec["subject"], old_rec["subject"]);
        assert_eq!(new_rec["sans"], old_rec["sans"]);
        assert_eq!(new_rec["role"], "gateway");
        assert_eq!(new_rec["key"], old_rec["key"]);
        assert_eq!(old_rec["revocation"]["reason"], "superseded");
        run(&env, &["history", &old])
            .success()
            .stdout_has("superseded-by")
            .stdout_has(&new);
        run(&env, &["history", &new])
            .success()
            .stdout_has("supersedes")
            .stdout_has(&old);
    }

    #[test]
    fn regenerate_uses_a_stronger_key_when_the_policy_demands_it() {
        let env = TestEnv::new();
        init_ca(&env, "ops", &[]);
        let out = env.mkdir("certs");
        let rsa = issue(
            &env,
            "ops",
            "rsa.example.com",
            "gateway",
            &out,
            &["--key", "rsa-2048"],
        );
        let ec = issue(&env, "ops", "ec.example.com", "gateway", &out, &[]);
        let plain = issue(&env, "ops", "plain.example.com", "other", &out, &[]);
        let policies = env.mkdir("policies");
        write(
            &policies.join("gateways.toml"),
            "[[policy]]\nname = \"gateways\"\nroles = [\"gateway\"]\nremind = [\"30d\"]\nwarn = \"30d\"\ncritical = \"7d\"\nrecipients = [\"pki@example.com\"]\nmin_rsa_bits = 3072\nallowed_curves = [\"P-384\"]\n",
        );
        let key_of_new = |fp: &str| {
            let r = run(
                &env,
                &["regenerate", fp, "--policies", s(&policies), "--json"],
            );
            r.success();
            r.json()["new"]["key"].as_str().unwrap().to_string()
        };
        assert_eq!(key_of_new(&rsa), "RSA 3072");
        assert_eq!(key_of_new(&ec), "EC P-384");
        // No policy matches role `other`: the same key type.
        assert_eq!(key_of_new(&plain), "EC P-256");
        // A certificate whose CA certctl does not hold cannot be regenerated.
        let f = CertFactory::new();
        let foreign = f.leaf(CertSpec::leaf("foreign.example.com"));
        let p = env.file("foreign/foreign.pem");
        files::pem(&p, &[&foreign]);
        run(&env, &["scan", s(&p)]).success();
        run(&env, &["regenerate", &foreign.fingerprint])
            .expect_code(4)
            .stderr_has("does not hold the key of the CA");
    }

    #[test]
    fn killed_after_any_step_resume_finishes_with_exactly_one_new_certificate() {
        let env = TestEnv::new();
        let ca_dir = init_ca(&env, "ops", &[]);
        for step in 0..=5u8 {
            let cn = format!("step{step}.example.com");
            let (old, files, pfx_pass) = deployed_fleet(&env, &cn);
            let r = env
                .cmd()
                .args([
                    "regenerate",
                    &old,
                    "--deploy",
                    "--revoke-old",
                    "--yes",
                    "--pfx-password-file",
                    s(&pfx_pass),
                ])
                .env("USER", "alice")
                .env("CERTCTL_TEST_ABORT_AFTER_STEP", step.to_string())
                .run();
            assert_eq!(r.status.signal(), Some(6), "abort after step {step}{r}");

            let list = run(&env, &["workflows", "--json"]).json();
            let wf = list
                .as_array()
                .unwrap()
                .iter()
                .find(|w| w["old_fingerprint"] == Value::String(old.clone()))
                .unwrap_or_else(|| panic!("workflow of {cn} not listed: {list}"))
                .clone();
            let steps = [
                "requested",
                "key-generated",
                "issued",
                "deployed",
                "old-revoked",
                "done",
            ];
            assert_eq!(wf["step"], steps[step as usize], "{wf}");
            let id = wf["id"].as_u64().unwrap().to_string();
            run(&env, &["workflows"]).success().stdout_has(&id);

            // Resume (twice: the second is a no-op).
            for _ in 0..2 {
                let r = run(
                    &env,
                    &[
                        "workflows",
                        "resume",
                        &id,
                        "--pfx-password-file",
                        s(&pfx_pass),
                        "--json",
                    ],
                );
                r.success();
                assert_eq!(r.json()["step"], "done", "{r}");
            }
            let certs = by_name(&env, &cn);
            assert_eq!(
                certs.len(),
                2,
                "exactly one new certificate after step {step}: {certs:?}"
            );
            let new = certs
                .iter()
                .map(|c| c["fingerprint_sha256"].as_str().unwrap().to_string())
                .find(|f| f != &old)
                .unwrap();
            assert_deployed(&env, &ca_dir, &files, &pfx_pass, &old, &new);
            assert_eq!(find_fp(&certs, &old)["revocation"]["reason"], "superseded");
            // The workflow's unencrypted key is gone once deployed; its certificate stays.
            let wf_dir = env.store().join("workflows").join(&id);
            assert!(!wf_dir.join("new.key").exists(), "after step {step}");
            assert_eq!(file_fingerprint(&wf_dir.join("new.pem")), new);
        }
    }
}

mod through_certd {
    //! The same commands while certd runs: certctl sends them over the control socket and
    //! certd does the work (the store is locked by certd, so nothing else could).
    use super::*;
    use certctl_e2e::daemon::{Certd, CertdConfig};

    #[test]
    fn ca_issue_revoke_and_regenerate_work_through_certd() {
        let env = TestEnv::new();
        let config = CertdConfig::new(env.store()).write(&env.file("etc/certd.toml"));
        let certd = Certd::start(&env, &config);
        run(&env, &["status"]).success().stdout_has("mode: daemon");

        // Relative paths are resolved by certctl, not by certd.
        let r = env
            .cmd()
            .current_dir(env.root())
            .args(["ca", "init", "--name", "ops", "--crl-out", "pub/ops.crl"])
            .env("USER", "alice")
            .run();
        r.success().stdout_has("created CA");
        let ca_dir = env.store().join("ca/ops");
        let out = env.mkdir("certs");
        let fp = issue(&env, "ops", "gw.example.com", "gateway", &out, &[]);
        let cert = out.join("gw.example.com.pem");
        openssl_ok(&["verify", "-CAfile", s(&ca_dir.join("ca.pem")), s(&cert)]);
        run(
            &env,
            &["revoke", &fp, "--reason", "key-compromise", "--yes"],
        )
        .success()
        .stdout_has("is signed by the CA and lists serial");
        let crl = env.root().join("pub/ops.crl");
        let (ok, text) = openssl(&[
            "verify",
            "-crl_check",
            "-CRLfile",
            s(&crl),
            "-CAfile",
            s(&ca_dir.join("ca.pem")),
            s(&cert),
        ]);
        assert!(!ok && text.contains("certificate revoked"), "{text}");

        let fp2 = issue(&env, "ops", "app.example.com", "other", &out, &[]);
        let r = run(
            &env,
            &["regenerate", &fp2, "--revoke-old", "--yes", "--json"],
        );
        r.success();
        assert_eq!(r.json()["step"], "done", "{r}");
        run(&env, &["workflows"]).success().stdout_has("done (5/5)");
        run(&env, &["history", &fp]).success().stdout_has("revoked");
        drop(certd);

        // After certd stopped, direct mode sees the same store.
        assert_eq!(show(&env, &fp)[0]["revocation"]["reason"], "key-compromise");
        assert_eq!(by_name(&env, "app.example.com").len(), 2);
    }
}

/// certd finishes a regenerate workflow that a crash interrupted, when it starts.
mod certd_resume {
    use super::*;
    use certctl_e2e::daemon::{Certd, CertdConfig};

    #[test]
    fn certd_completes_an_interrupted_regenerate_at_start_up() {
        let env = TestEnv::new();
        init_ca(&env, "ops", &[]);
        let out = env.mkdir("certs");
        let old = issue(&env, "ops", "resume.example.com", "gateway", &out, &[]);

        // The key is generated, then the process dies before issuing.
        let r = env
            .cmd()
            .args(["regenerate", &old, "--yes"])
            .env("USER", "alice")
            .env("CERTCTL_TEST_ABORT_AFTER_STEP", "1")
            .run();
        assert_eq!(r.status.signal(), Some(6), "abort after step 1{r}");
        let pending = run(&env, &["workflows", "--json"]).json();
        assert_eq!(pending[0]["step"], "key-generated", "{pending}");
        assert_eq!(by_name(&env, "resume.example.com").len(), 1);

        // certd resumes it at start-up: exactly one new certificate, workflow done.
        let config = CertdConfig::new(env.store()).write(&env.file("etc/certd.toml"));
        let certd = Certd::start(&env, &config);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let done = loop {
            let wf = run(&env, &["workflows", "--json"]).json();
            if wf[0]["step"] == "done" {
                break wf;
            }
            assert!(std::time::Instant::now() < deadline, "not resumed: {wf}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        drop(certd);
        let certs = by_name(&env, "resume.example.com");
        assert_eq!(
            certs.len(),
            2,
            "old and exactly one new certificate: {done}"
        );
        assert!(certs
            .iter()
            .any(|c| c["fingerprint_sha256"] == Value::String(old.clone())));
    }
}

/// certd finishes an interrupted regenerate of an encrypted CA only with the passphrase file
/// its `[workflows]` section names (certd never stores secrets).
mod certd_resume_with_passphrase {
    use super::*;
    use certctl_e2e::daemon::{Certd, CertdConfig};
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn certd_resumes_an_encrypted_cas_workflow_with_the_configured_passphrase_file() {
        let env = TestEnv::new();
        let pass = env.file("secrets/vault.pass");
        files::secret(&pass, "vault passphrase\n");
        std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
        init_ca(&env, "vault", &["--passphrase-file", s(&pass)]);
        let out = env.mkdir("certs");
        let old = issue(
            &env,
            "vault",
            "locked.example.com",
            "gateway",
            &out,
            &["--passphrase-file", s(&pass)],
        );
        let r = env
            .cmd()
            .args(["regenerate", &old, "--yes", "--passphrase-file", s(&pass)])
            .env("CERTCTL_TEST_ABORT_AFTER_STEP", "1")
            .run();
        assert_eq!(r.status.signal(), Some(6), "abort after step 1{r}");
        let step = |env: &TestEnv| run(env, &["workflows", "--json"]).json()[0]["step"].clone();
        assert_eq!(step(&env), "key-generated");

        // Without the passphrase, certd leaves the workflow and says what to run.
        let plain = CertdConfig::new(env.store()).write(&env.file("etc/plain.toml"));
        let certd = Certd::start(&env, &plain);
        certd.wait_for_log(
            "certctl workflows resume",
            std::time::Duration::from_secs(20),
        );
        drop(certd);
        assert_eq!(step(&env), "key-generated");

        // A passphrase file others can read is refused (logged), the workflow still waits.
        let config = CertdConfig::new(env.store()).write(&env.file("etc/certd.toml"));
        let mut text = std::fs::read_to_string(&config).unwrap();
        text.push_str(&format!(
            "\n[workflows.ca_passphrase_files]\nvault = \"{}\"\n",
            s(&pass)
        ));
        write(&config, &text);
        std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o644)).unwrap();
        let certd = Certd::start(&env, &config);
        certd.wait_for_log(
            "readable by its owner only",
            std::time::Duration::from_secs(20),
        );
        drop(certd);
        assert_eq!(step(&env), "key-generated");

        // With the file private again, certd finishes it: exactly one new certificate.
        std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
        let certd = Certd::start(&env, &config);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while step(&env) != "done" {
            assert!(
                std::time::Instant::now() < deadline,
                "not resumed: {}",
                certd.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert!(
            !certd.log().contains("vault passphrase"),
            "the secret is never logged"
        );
        drop(certd);
        assert_eq!(by_name(&env, "locked.example.com").len(), 2);
    }
}

mod crl_fetch {
    //! `certctl crl fetch`: CRLs of other CAs from a local HTTP server on 127.0.0.1.
    use super::*;
    use rcgen::{
        CertificateRevocationListParams, CrlDistributionPoint, KeyIdMethod, RevocationReason,
        RevokedCertParams, SerialNumber,
    };
    use std::collections::BTreeMap;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    /// Serves fixed bodies by path over HTTP/1.0; counts the requests.
    struct HttpServer {
        port: u16,
        hits: Arc<AtomicUsize>,
        stop: Arc<AtomicBool>,
        bodies: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
    }

    impl HttpServer {
        fn start() -> HttpServer {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.set_nonblocking(true).unwrap();
            let port = listener.local_addr().unwrap().port();
            let hits = Arc::new(AtomicUsize::new(0));
            let stop = Arc::new(AtomicBool::new(false));
            let bodies: Arc<Mutex<BTreeMap<String, Vec<u8>>>> = Arc::default();
            let (h, st, b) = (hits.clone(), stop.clone(), bodies.clone());
            std::thread::spawn(move || {
                while !st.load(Ordering::Relaxed) {
                    let Ok((mut conn, _)) = listener.accept() else {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                        continue;
                    };
                    h.fetch_add(1, Ordering::Relaxed);
                    conn.set_nonblocking(false).unwrap();
                    let mut req = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&req).into_owned();
                    let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let body = b.lock().unwrap().get(&path).cloned();
                    let response = match body {
                        Some(body) => {
                            let mut r = format!(
                                "HTTP/1.0 200 OK\r\nContent-Type: application/pkix-crl\r\nContent-Length: {}\r\n\r\n",
                                body.len()
                            )
                            .into_bytes();
                            r.extend(body);
                            r
                        }
                        None => b"HTTP/1.0 404 Not Found\r\n\r\n".to_vec(),
                    };
                    let _ = conn.write_all(&response);
                }
            });
            HttpServer {
                port,
                hits,
                stop,
                bodies,
            }
        }

        fn url(&self, path: &str) -> String {
            format!("http://127.0.0.1:{}{path}", self.port)
        }

        fn serve(&self, path: &str, body: Vec<u8>) {
            self.bodies.lock().unwrap().insert(path.to_string(), body);
        }

        fn hits(&self) -> usize {
            self.hits.load(Ordering::Relaxed)
        }
    }

    impl Drop for HttpServer {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
        }
    }

    fn ts(t: i64) -> time::OffsetDateTime {
        time::OffsetDateTime::from_unix_timestamp(t).unwrap()
    }

    fn ca_params(cn: &str) -> CertificateParams {
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        p.distinguished_name = dn;
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p.not_before = ts(now() - DAY);
        p.not_after = ts(now() + 400 * DAY);
        p
    }

    fn crl(issuer: &Issuer<'_, &KeyPair>, revoked: &[(u64, RevocationReason)]) -> Vec<u8> {
        CertificateRevocationListParams {
            this_update: ts(now() - 60),
            next_update: ts(now() + DAY),
            crl_number: SerialNumber::from(7u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|(serial, reason)| RevokedCertParams {
                    serial_number: SerialNumber::from(*serial),
                    revocation_time: ts(now() - 3600),
                    reason_code: Some(*reason),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(issuer)
        .unwrap()
        .der()
        .to_vec()
    }

    #[test]
    fn certd_fetches_crls_on_its_schedule() {
        use certctl_e2e::daemon::{Certd, CertdConfig};
        let env = TestEnv::new();
        let http = HttpServer::start();
        let ca_key = KeyPair::generate().unwrap();
        let ca = ca_params("Partner CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::from_params(&ca, &ca_key);
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "revoked.partner.example");
        p.distinguished_name = dn;
        p.serial_number = Some(SerialNumber::from(0x2001u64));
        p.is_ca = IsCa::ExplicitNoCa;
        p.use_authority_key_identifier_extension = true;
        p.not_before = ts(now() - DAY);
        p.not_after = ts(now() + 100 * DAY);
        p.crl_distribution_points = vec![CrlDistributionPoint {
            uris: vec![http.url("/partner.crl")],
        }];
        let leaf = p.signed_by(&KeyPair::generate().unwrap(), &issuer).unwrap();
        http.serve(
            "/partner.crl",
            crl(&issuer, &[(0x2001, RevocationReason::CessationOfOperation)]),
        );
        let dir = env.mkdir("partner");
        write(&dir.join("ca.pem"), &ca_cert.pem());
        write(&dir.join("leaf.pem"), &leaf.pem());
        run(&env, &["scan", s(&dir), "--role", "gateway"]).success();
        let fp = sha256_hex(leaf.der());
        assert_eq!(show(&env, &fp)[0]["revoked"], false);

        // certd fetches on its `[crl]` schedule (every second here), nobody asks.
        let config = env.file("etc/certd.toml");
        write(
            &config,
            &format!(
                "{}\n[crl]\nschedule = \"* * * * * *\"\ntimeout = \"5s\"\n",
                CertdConfig::new(env.store()).to_toml()
            ),
        );
        let certd = Certd::start(&env, &config);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let rec = &show(&env, &fp)[0];
            if rec["revoked"] == true {
                assert_eq!(rec["revocation"]["reason"], "cessation-of-operation");
                assert_eq!(rec["revocation"]["revoked_by"], http.url("/partner.crl"));
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "not revoked by certd: {rec}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let st = run(&env, &["status", "--json"]).json();
        let job = st["daemon"]["schedules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["job"] == "crl-fetch")
            .cloned()
            .unwrap_or_else(|| panic!("no crl-fetch schedule in {st:#}"));
        assert_eq!(job["schedule"], "* * * * * *", "{job}");
        drop(certd);
        assert!(http.hits() >= 1);
    }

    #[test]
    fn listed_certificates_are_marked_revoked_and_crls_are_cached_and_checked() {
        let env = TestEnv::new();
        let http = HttpServer::start();
        let ca_key = KeyPair::generate().unwrap();
        let ca = ca_params("Partner CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::from_params(&ca, &ca_key);
        let leaf = |cn: &str, serial: u64, crl_path: &str| {
            let mut p = CertificateParams::default();
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, cn);
            p.distinguished_name = dn;
            p.serial_number = Some(SerialNumber::from(serial));
            p.is_ca = IsCa::ExplicitNoCa;
            p.use_authority_key_identifier_extension = true;
            p.not_before = ts(now() - DAY);
            p.not_after = ts(now() + 100 * DAY);
            p.crl_distribution_points = vec![CrlDistributionPoint {
                uris: vec![http.url(crl_path)],
            }];
            let key = KeyPair::generate().unwrap();
            p.signed_by(&key, &issuer).unwrap()
        };
        let bad = leaf("bad.partner.example", 0x1001, "/partner.crl");
        let good = leaf("good.partner.example", 0x1002, "/partner.crl");
        let other = leaf("other.partner.example", 0x1003, "/forged.crl");
        http.serve(
            "/partner.crl",
            crl(&issuer, &[(0x1001, RevocationReason::KeyCompromise)]),
        );
        // Same issuer name, another key: a forgery that must be ignored.
        let forger_key = KeyPair::generate().unwrap();
        let forger = Issuer::from_params(&ca, &forger_key);
        http.serve(
            "/forged.crl",
            crl(&forger, &[(0x1003, RevocationReason::KeyCompromise)]),
        );
        let dir = env.mkdir("partner");
        write(&dir.join("ca.pem"), &ca_cert.pem());
        for (name, c) in [("bad", &bad), ("good", &good), ("other", &other)] {
            write(&dir.join(format!("{name}.pem")), &c.pem());
        }
        run(&env, &["scan", s(&dir), "--role", "gateway"]).success();

        let r = run(&env, &["crl", "fetch", "--timeout", "5s"]);
        r.expect_code(4)
            .stdout_has(&format!("{}: fetched", http.url("/partner.crl")))
            .stdout_has("does not verify")
            .stdout_has("1 certificates newly marked revoked");
        let bad_fp = sha256_hex(bad.der());
        let rec = &show(&env, &bad_fp)[0];
        assert_eq!(rec["revocation"]["reason"], "key-compromise");
        assert_eq!(rec["revocation"]["revoked_by"], http.url("/partner.crl"));
        assert_eq!(show(&env, &sha256_hex(good.der()))[0]["revoked"], false);
        assert_eq!(show(&env, &sha256_hex(other.der()))[0]["revoked"], false);
        assert_eq!(http.hits(), 2);

        // Cached until nextUpdate: no request for the good CRL the second time.
        let r = run(&env, &["crl", "fetch"]);
        r.stdout_has(&format!("{}: cached", http.url("/partner.crl")));
        assert_eq!(http.hits(), 3, "only the forged CRL is fetched again{r}");
        run(&env, &["crl", "fetch", "--force"])
            .stdout_has(&format!("{}: fetched", http.url("/partner.crl")));
        assert_eq!(http.hits(), 5);
        run(&env, &["history", &bad_fp])
            .success()
            .stdout_has("listed in the CRL");
    }

    /// A CA that emits a "negative" serial (first content byte >= 0x80, two's complement
    /// `ed cc`: the inventory shows `-1234`, as openssl does) and a positive one that needs a
    /// leading 0x00 byte (0x8001). Certificates and CRL are made with the openssl command line
    /// (rcgen always encodes positive serials); each CRL entry must match its certificate, and
    /// neither the positive 0x1234 (the same magnitude) nor the positive 0xedcc (the same
    /// bytes) may be marked.
    #[test]
    fn negative_and_zero_padded_serials_match_their_crl_entries() {
        let env = TestEnv::new();
        let http = HttpServer::start();
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca_params("Negative Serial CA")
            .self_signed(&ca_key)
            .unwrap();
        let dir = env.mkdir("partner");
        let work = env.mkdir("openssl");
        let ca_pem = dir.join("ca.pem");
        let ca_key_path = work.join("ca.key");
        write(&ca_pem, &ca_cert.pem());
        write(&ca_key_path, &ca_key.serialize_pem());
        let ext = work.join("leaf.ext");
        write(
            &ext,
            &format!(
                "basicConstraints=CA:FALSE\nauthorityKeyIdentifier=keyid\ncrlDistributionPoints=URI:{}\n",
                http.url("/neg.crl")
            ),
        );
        // Returns the certificate's SHA-256 fingerprint.
        let leaf = |name: &str, serial: &str| -> String {
            let (key, csr) = (
                work.join(format!("{name}.key")),
                work.join(format!("{name}.csr")),
            );
            let subject = format!("/CN={name}.partner.example");
            openssl_req_p256(&key, &csr, &subject, &[]);
            let pem = dir.join(format!("{name}.pem"));
            openssl_ok(&[
                "x509",
                "-req",
                "-in",
                s(&csr),
                "-CA",
                s(&ca_pem),
                "-CAkey",
                s(&ca_key_path),
                "-set_serial",
                serial,
                "-days",
                "30",
                "-extfile",
                s(&ext),
                "-out",
                s(&pem),
            ]);
            let der = work.join(format!("{name}.der"));
            openssl_ok(&["x509", "-in", s(&pem), "-outform", "DER", "-out", s(&der)]);
            sha256_hex(&std::fs::read(&der).unwrap())
        };
        let negative = leaf("negative", "-0x1234");
        let padded = leaf("padded", "0x8001");
        let positive = leaf("positive", "0x1234");
        let same_bytes = leaf("same-bytes", "0xEDCC");

        // `openssl ca -gencrl` from an index that revokes -0x1234 and 0x8001.
        let config = work.join("ca.cnf");
        write(
            &config,
            "[ca]\ndefault_ca = x\n[x]\ndatabase = index.txt\ndefault_md = sha256\n\
             default_crl_days = 1\ncrlnumber = crlnumber\n",
        );
        write(&work.join("crlnumber"), "01\n");
        write(
            &work.join("index.txt"),
            "R\t301231235959Z\t250101000000Z,keyCompromise\t-1234\tunknown\t/CN=negative.partner.example\n\
             R\t301231235959Z\t250101000000Z,superseded\t8001\tunknown\t/CN=padded.partner.example\n",
        );
        let crl_pem = work.join("neg.crl.pem");
        let out = Command::new("openssl")
            .current_dir(&work)
            .args([
                "ca",
                "-gencrl",
                "-config",
                s(&config),
                "-keyfile",
                s(&ca_key_path),
            ])
            .args(["-cert", s(&ca_pem), "-out", s(&crl_pem)])
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl ca -gencrl: {out:?}");
        let listed = openssl_ok(&["crl", "-in", s(&crl_pem), "-noout", "-text"]);
        assert!(listed.contains("Serial Number: -1234"), "{listed}");
        let crl_der = work.join("neg.crl");
        openssl_ok(&[
            "crl",
            "-in",
            s(&crl_pem),
            "-outform",
            "DER",
            "-out",
            s(&crl_der),
        ]);
        http.serve("/neg.crl", std::fs::read(&crl_der).unwrap());

        run(&env, &["scan", s(&dir), "--role", "gateway"]).success();
        assert_eq!(show(&env, &negative)[0]["serial"], "-1234");
        assert_eq!(show(&env, &same_bytes)[0]["serial"], "edcc");
        assert_eq!(show(&env, &padded)[0]["serial"], "8001");
        run(&env, &["crl", "fetch", "--timeout", "5s"])
            .success()
            .stdout_has(&format!("{}: fetched", http.url("/neg.crl")))
            .stdout_has("2 certificates newly marked revoked");
        let rec = &show(&env, &negative)[0];
        assert_eq!(rec["revocation"]["reason"], "key-compromise", "{rec}");
        assert_eq!(rec["revocation"]["revoked_by"], http.url("/neg.crl"));
        let rec = &show(&env, &padded)[0];
        assert_eq!(rec["revocation"]["reason"], "superseded", "{rec}");
        assert_eq!(show(&env, &positive)[0]["revoked"], false);
        assert_eq!(show(&env, &same_bytes)[0]["revoked"], false);
    }
}
