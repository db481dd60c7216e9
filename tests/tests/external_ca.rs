//! End-to-end tests of replacing certificates whose CA certctl does not hold
//! (`regenerate --csr`, `workflows complete`) and of the post-deploy reload hooks of deploy
//! targets (`[[workflows.targets]] reload = [...]`).
//!
//! The "external CA" is made with the `openssl` command line in each test and signs the
//! CSR certctl writes with `openssl x509 -req`, as a public CA or AD CS would; everything
//! certctl deploys is checked with `openssl` (key matches, `openssl verify`). Build the
//! binaries first (`cargo build --workspace --bins`).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};

use certctl_e2e::*;
use serde_json::Value;

/// A CA certctl does not hold: `DIR/ca.pem`, `DIR/ca.key`.
struct ExternalCa {
    cert: PathBuf,
    key: PathBuf,
}

impl ExternalCa {
    fn new(dir: &Path) -> ExternalCa {
        std::fs::create_dir_all(dir).unwrap();
        let cert = dir.join("ca.pem");
        let key = dir.join("ca.key");
        openssl_req_p256(
            &key,
            &cert,
            "/CN=Example Public CA/O=Example Trust",
            &[
                "-x509",
                "-days",
                "30",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        ExternalCa { cert, key }
    }

    /// Signs `csr` into `out`; `copy_names`: keep the CSR's SANs (as a CA does).
    fn sign(&self, csr: &Path, out: &Path, copy_names: bool) {
        let serial = format!("0x{:016x}", rand_u64());
        let mut args = vec![
            "x509",
            "-req",
            "-in",
            s(csr),
            "-CA",
            s(&self.cert),
            "-CAkey",
            s(&self.key),
            "-set_serial",
            &serial,
            "-days",
            "20",
            "-out",
            s(out),
        ];
        if copy_names {
            args.extend_from_slice(&["-copy_extensions", "copy"]);
        }
        openssl_ok(&args);
    }
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    openssl::rand::rand_bytes(&mut b).unwrap();
    u64::from_be_bytes(b) >> 1
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// SHA-256 of the (first) certificate of a PEM or DER file, lowercase hex.
fn file_fingerprint(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let x = openssl::x509::X509::from_pem(&bytes)
        .or_else(|_| openssl::x509::X509::from_der(&bytes))
        .unwrap_or_else(|e| panic!("{} holds no certificate: {e}", path.display()));
    sha256_hex(&x.to_der().unwrap())
}

/// A certificate of the external CA for `cn` (SANs `cn` and `www.` + `cn`), deployed as
/// PEM + key, a combined PEM, DER and a PFX in `ROOT/deploy-CN`, all scanned.
/// Returns (fingerprint, [pem, key, combined, der, pfx], pfx password file).
fn deployed(env: &TestEnv, ca: &ExternalCa, cn: &str) -> (String, Vec<PathBuf>, PathBuf) {
    let dep = env.mkdir(&format!("deploy-{cn}"));
    let pem = dep.join("server.pem");
    let key = dep.join("server.key");
    let csr = env.file(&format!("tmp/{cn}.csr"));
    std::fs::create_dir_all(csr.parent().unwrap()).unwrap();
    openssl_req_p256(
        &key,
        &csr,
        &format!("/CN={cn}/O=Contoso"),
        &["-addext", &format!("subjectAltName=DNS:{cn},DNS:www.{cn}")],
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    ca.sign(&csr, &pem, true);
    let combined = dep.join("combined.pem");
    std::fs::write(
        &combined,
        format!(
            "{}{}",
            std::fs::read_to_string(&pem).unwrap(),
            std::fs::read_to_string(&key).unwrap()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&combined, std::fs::Permissions::from_mode(0o600)).unwrap();
    let der = dep.join("server.der");
    openssl_ok(&["x509", "-in", s(&pem), "-outform", "DER", "-out", s(&der)]);
    let pfx_pass = env.file(&format!("secrets/{cn}.pfxpass"));
    files::secret(&pfx_pass, "pfx-pw\n");
    let pfx = dep.join("server.pfx");
    openssl_ok(&[
        "pkcs12",
        "-export",
        "-in",
        s(&pem),
        "-inkey",
        s(&key),
        "-passout",
        &format!("file:{}", s(&pfx_pass)),
        "-out",
        s(&pfx),
    ]);
    env.cmd()
        .args([
            "scan",
            s(&dep),
            "--role",
            "gateway",
            "--pfx-password-file",
            s(&pfx_pass),
        ])
        .run()
        .success();
    let fp = file_fingerprint(&pem);
    (fp, vec![pem, key, combined, der, pfx], pfx_pass)
}

fn workflow_of(env: &TestEnv, id: &str) -> Value {
    let list = env.certctl(&["workflows", "--json"]);
    list.success();
    list.json()
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"].as_u64() == id.parse().ok())
        .unwrap_or_else(|| panic!("workflow {id} not listed{list}"))
        .clone()
}

fn by_name(env: &TestEnv, name: &str) -> Vec<Value> {
    env.list_json(&["--name", name])
        .into_iter()
        .filter(|c| c["subject_cn"] == name)
        .collect()
}

mod csr {
    use super::*;

    const PASSPHRASE: &str = "workflow key passphrase";

    #[test]
    fn a_certificate_of_an_external_ca_is_replaced_through_a_csr() {
        let env = TestEnv::new();
        let ca = ExternalCa::new(&env.file("public-ca"));
        let cn = "gw.contoso.example";
        let (old, files, pfx_pass) = deployed(&env, &ca, cn);
        let [pem, key, combined, der, pfx] = &files[..] else {
            panic!("five files")
        };
        let csr = env.file("out/gw.csr");
        std::fs::create_dir_all(csr.parent().unwrap()).unwrap();

        // Without --csr: refused, and the message says what to do instead.
        env.certctl(&["regenerate", &old])
            .expect_code(4)
            .stderr_has("--csr");

        let r = env
            .cmd()
            .args([
                "regenerate",
                &old,
                "--csr",
                s(&csr),
                "--deploy",
                "--revoke-old",
                "--yes",
                "--pfx-password-file",
                s(&pfx_pass),
                "--json",
            ])
            .env("CERTCTL_CA_PASSPHRASE", PASSPHRASE)
            .run();
        r.success();
        let wf = r.json();
        assert_eq!(wf["step"], "awaiting-certificate", "{wf}");
        assert_eq!(wf["csr"], s(&csr));
        assert_eq!(wf["key_encrypted"], true);
        let id = wf["id"].to_string();
        // The new key: 0600, encrypted at rest.
        let new_key = env.store().join("workflows").join(&id).join("new.key");
        assert_eq!(mode(&new_key), 0o600);
        let key_text = std::fs::read_to_string(&new_key).unwrap();
        assert!(
            key_text.contains("BEGIN ENCRYPTED PRIVATE KEY"),
            "{key_text}"
        );
        // The CSR: same subject and SANs, verified by openssl.
        let text = openssl_ok(&["req", "-in", s(&csr), "-verify", "-noout", "-text"]);
        assert!(text.contains("CN = gw.contoso.example"), "{text}");
        assert!(text.contains("O = Contoso"), "{text}");
        assert!(
            text.contains("DNS:gw.contoso.example, DNS:www.gw.contoso.example"),
            "{text}"
        );
        // Listed as waiting, in text and JSON.
        env.certctl(&["workflows"])
            .success()
            .stdout_has("awaiting-certificate");
        assert_eq!(workflow_of(&env, &id)["step"], "awaiting-certificate");
        env.certctl(&["workflows", "resume", &id, "--json"])
            .success()
            .stdout_has("awaiting-certificate");

        // A certificate for another key is refused, naming the mismatch; nothing changes.
        let other = env.file("tmp/other.csr");
        openssl_req_p256(
            &env.file("tmp/other.key"),
            &other,
            &format!("/CN={cn}"),
            &["-addext", &format!("subjectAltName=DNS:{cn},DNS:www.{cn}")],
        );
        let wrong = env.file("tmp/wrong.pem");
        ca.sign(&other, &wrong, true);
        env.cmd()
            .args(["workflows", "complete", &id, "--cert", s(&wrong)])
            .env("CERTCTL_CA_PASSPHRASE", PASSPHRASE)
            .run()
            .expect_code(4)
            .stderr_has("not the workflow's key")
            .stderr_has(s(&wrong));
        // The right key but without the SANs: the missing names are named.
        let no_names = env.file("tmp/no-names.pem");
        ca.sign(&csr, &no_names, false);
        env.cmd()
            .args(["workflows", "complete", &id, "--cert", s(&no_names)])
            .env("CERTCTL_CA_PASSPHRASE", PASSPHRASE)
            .run()
            .expect_code(4)
            .stderr_has("DNS:www.gw.contoso.example");
        // The key is encrypted: without the passphrase, nothing happens.
        let signed = env.file("out/gw.pem");
        ca.sign(&csr, &signed, true);
        env.cmd()
            .args(["workflows", "complete", &id, "--cert", s(&signed)])
            .run()
            .expect_code(4)
            .stderr_has("encrypted");
        assert_eq!(workflow_of(&env, &id)["step"], "awaiting-certificate");
        assert_eq!(file_fingerprint(pem), old, "nothing deployed yet");

        // The CA's certificate, complete, killed right after the deploy step: resume
        // finishes with exactly one new certificate.
        let r = env
            .cmd()
            .args([
                "workflows",
                "complete",
                &id,
                "--cert",
                s(&signed),
                "--pfx-password-file",
                s(&pfx_pass),
            ])
            .env("CERTCTL_CA_PASSPHRASE", PASSPHRASE)
            .env("CERTCTL_TEST_ABORT_AFTER_STEP", "3")
            .run();
        assert_eq!(r.status.signal(), Some(6), "abort after deploy{r}");
        assert_eq!(workflow_of(&env, &id)["step"], "deployed");
        let inode = std::fs::metadata(pem).unwrap().ino();
        for _ in 0..2 {
            let r = env
                .cmd()
                .args([
                    "workflows",
                    "resume",
                    &id,
                    "--pfx-password-file",
                    s(&pfx_pass),
                    "--json",
                ])
                .env("CERTCTL_CA_PASSPHRASE", PASSPHRASE)
                .run();
            r.success();
            assert_eq!(r.json()["step"], "done", "{r}");
        }
        assert_eq!(
            std::fs::metadata(pem).unwrap().ino(),
            inode,
            "resume did not deploy again"
        );
        let new = file_fingerprint(&signed);
        let certs = by_name(&env, cn);
        assert_eq!(certs.len(), 2, "exactly one new certificate: {certs:?}");
        assert!(certs.iter().any(|c| c["fingerprint_sha256"] == new));
        assert_eq!(find_fp(&certs, &old)["revocation"]["reason"], "superseded");

        // The deployed files hold the new certificate and key (openssl checks).
        for cert in [pem, combined, der] {
            assert_eq!(file_fingerprint(cert), new, "{}", cert.display());
        }
        openssl_ok(&["verify", "-CAfile", s(&ca.cert), s(pem)]);
        let cert_pub = openssl_ok(&["x509", "-in", s(pem), "-noout", "-pubkey"]);
        assert_eq!(openssl_ok(&["pkey", "-in", s(key), "-pubout"]), cert_pub);
        assert_eq!(
            openssl_ok(&["pkey", "-in", s(combined), "-pubout"]),
            cert_pub
        );
        assert_eq!(mode(key), 0o600);
        let pass = format!("file:{}", s(&pfx_pass));
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
        assert_eq!(file_fingerprint(&extracted), new);
        let pfx_key = env.file("tmp/pfx-key.pem");
        openssl_ok(&[
            "pkcs12",
            "-in",
            s(pfx),
            "-passin",
            &pass,
            "-nocerts",
            "-nodes",
            "-out",
            s(&pfx_key),
        ]);
        assert_eq!(
            openssl_ok(&["pkey", "-in", s(&pfx_key), "-pubout"]),
            cert_pub
        );
        // The workflow's key is gone once deployed; history has the hand-over.
        assert!(!new_key.exists());
        env.certctl(&["history", &old])
            .success()
            .stdout_has("superseded-by");
        env.certctl(&["history", &new])
            .success()
            .stdout_has("received");
        // A finished workflow cannot be completed again.
        env.cmd()
            .args(["workflows", "complete", &id, "--cert", s(&signed)])
            .env("CERTCTL_CA_PASSPHRASE", PASSPHRASE)
            .run()
            .expect_code(4)
            .stderr_has("awaiting");
    }
}

mod hooks {
    //! `[[workflows.targets]] reload = [...]`: run after the deploy, retried alone by
    //! `workflows resume`, killed at its timeout; then the endpoints that served the old
    //! certificate are probed.
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::time::{Duration, Instant};

    /// An `openssl s_server` on 127.0.0.1:PORT serving DIR/site.pem + DIR/site.key; its pid
    /// is in DIR/server.pid (the reload hook restarts it and writes the new pid there).
    struct Server {
        pid_file: PathBuf,
        port: u16,
        /// The first server (the hook starts the next ones): reaped when dropped.
        first: std::process::Child,
    }

    impl Server {
        fn start(dir: &Path) -> Server {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let first = std::process::Command::new("openssl")
                .args(["s_server", "-quiet", "-www", "-accept"])
                .arg(format!("127.0.0.1:{port}"))
                .arg("-cert")
                .arg(dir.join("site.pem"))
                .arg("-key")
                .arg(dir.join("site.key"))
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("start openssl s_server");
            let pid_file = dir.join("server.pid");
            std::fs::write(&pid_file, first.id().to_string()).unwrap();
            let server = Server {
                pid_file,
                port,
                first,
            };
            server.wait_listening();
            server
        }

        fn address(&self) -> String {
            format!("127.0.0.1:{}", self.port)
        }

        fn wait_listening(&self) {
            let deadline = Instant::now() + Duration::from_secs(10);
            while TcpStream::connect_timeout(
                &self.address().parse().unwrap(),
                Duration::from_millis(200),
            )
            .is_err()
            {
                assert!(Instant::now() < deadline, "s_server does not listen");
                std::thread::sleep(Duration::from_millis(50));
            }
        }

        /// The certificate served now (SHA-256), by openssl s_client.
        fn served(&self) -> String {
            let out = std::process::Command::new("openssl")
                .args(["s_client", "-connect", &self.address()])
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let start = text
                .find("-----BEGIN CERTIFICATE-----")
                .expect("a certificate");
            let end = text.find("-----END CERTIFICATE-----").unwrap() + 25;
            let x = openssl::x509::X509::from_pem(&text.as_bytes()[start..end]).unwrap();
            sha256_hex(&x.to_der().unwrap())
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            if let Ok(pid) = std::fs::read_to_string(&self.pid_file) {
                let _ = std::process::Command::new("kill").arg(pid.trim()).status();
            }
            let _ = self.first.kill();
            let _ = self.first.wait();
        }
    }

    /// A hook script: fails (exit 1) the first `failures` times, then restarts the server
    /// with the deployed files. Every run appends a line to DIR/hook.log.
    fn hook_script(dir: &Path, server: &Server, failures: u32) -> PathBuf {
        let script = dir.join("reload.sh");
        let text = format!(
            r#"#!/bin/bash
cd "{dir}"
echo "run $(date +%s%N) $CERTCTL_CA_PASSPHRASE" >> hook.log
runs=$(wc -l < hook.log)
if [ "$runs" -le {failures} ]; then echo "not yet ($runs)" >&2; exit 1; fi
kill "$(cat server.pid)"
for i in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null || break; sleep 0.05; done
openssl s_server -quiet -www -accept 127.0.0.1:{port} -cert site.pem -key site.key </dev/null >/dev/null 2>&1 &
echo $! > server.pid
for i in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null && {{ echo "reloaded"; exit 0; }}; sleep 0.05; done
echo "the server did not come back" >&2; exit 2
"#,
            dir = s(dir),
            port = server.port,
        );
        std::fs::write(&script, text).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        script
    }

    /// A managed CA's certificate deployed in DIR (site.pem + site.key), served by an
    /// s_server, scanned and probed. Returns (fingerprint, dir, server).
    fn served_site(env: &TestEnv) -> (String, PathBuf, Server) {
        env.certctl(&["ca", "init", "--name", "ops"]).success();
        let dir = env.mkdir("site");
        let r = env.certctl(&[
            "issue",
            "--ca",
            "ops",
            "--cn",
            "site.example.com",
            "--role",
            "gateway",
            "--out",
            s(&env.mkdir("issued")),
        ]);
        r.success();
        std::fs::copy(
            env.file("issued/site.example.com.pem"),
            dir.join("site.pem"),
        )
        .unwrap();
        std::fs::copy(
            env.file("issued/site.example.com.key"),
            dir.join("site.key"),
        )
        .unwrap();
        let server = Server::start(&dir);
        env.certctl(&["scan", s(&dir.join("site.pem")), "--role", "gateway"])
            .success();
        // (An untrusted test CA: a warning, not a failure.)
        env.certctl(&["probe", &server.address(), "--role", "gateway"]);
        let old = file_fingerprint(&dir.join("site.pem"));
        assert_eq!(server.served(), old);
        (old, dir, server)
    }

    fn config(env: &TestEnv, target: &Path, argv: &[&str], timeout: &str) -> PathBuf {
        let path = env.file("etc/certd.toml");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let argv: Vec<String> = argv.iter().map(|a| format!("{a:?}")).collect();
        std::fs::write(
            &path,
            format!(
                "store = {:?}\n[[workflows.targets]]\npath = {:?}\nreload = [{}]\nreload_timeout = {timeout:?}\n",
                s(env.store()),
                s(target),
                argv.join(", ")
            ),
        )
        .unwrap();
        path
    }

    fn events(env: &TestEnv, fp: &str, action: &str) -> usize {
        let r = env.certctl(&["history", fp, "--json"]);
        r.success();
        r.json()[0]["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == action)
            .count()
    }

    #[test]
    fn the_hook_reloads_the_server_and_the_endpoint_serves_the_new_certificate() {
        let env = TestEnv::new();
        let (old, dir, server) = served_site(&env);
        let script = hook_script(&dir, &server, 0);
        let cfg = config(&env, &dir, &[s(&script)], "30s");
        let r = env
            .cmd()
            .args([
                "--config",
                s(&cfg),
                "regenerate",
                &old,
                "--deploy",
                "--yes",
                "--json",
            ])
            .env("CERTCTL_CA_PASSPHRASE", "must-not-leak")
            .run();
        r.success();
        let report = r.json();
        assert_eq!(report["step"], "done", "{report}");
        let new = report["new_fingerprint"].as_str().unwrap().to_string();
        assert_eq!(report["reloads"][0]["ok"], true, "{report}");
        assert_eq!(report["reloads"][0]["stdout"], "reloaded\n");
        assert_eq!(report["endpoints"][0]["endpoint"], server.address());
        assert_eq!(report["endpoints"][0]["state"], "serves-new", "{report}");
        assert_eq!(server.served(), new);
        // The hook ran once, without certctl's secrets in its environment.
        let log = std::fs::read_to_string(dir.join("hook.log")).unwrap();
        assert_eq!(log.lines().count(), 1, "{log}");
        assert!(!log.contains("must-not-leak"), "{log}");
        // The text form says it too.
        assert_eq!(events(&env, &new, "reloaded"), 1);
    }

    /// certd runs the hooks of its own `[[workflows.targets]]` for a regenerate sent to it,
    /// and probes the endpoint with the writer lock released.
    #[test]
    fn certd_runs_its_configured_hooks_for_a_regenerate_sent_to_it() {
        use certctl_e2e::daemon::{Certd, CertdConfig};
        let env = TestEnv::new();
        let (old, dir, server) = served_site(&env);
        let script = hook_script(&dir, &server, 0);
        let cfg = env.file("etc/certd.toml");
        std::fs::create_dir_all(cfg.parent().unwrap()).unwrap();
        std::fs::write(
            &cfg,
            format!(
                "{}\n[[workflows.targets]]\npath = {:?}\nreload = [{:?}]\n",
                CertdConfig::new(env.store()).to_toml(),
                s(&dir),
                s(&script)
            ),
        )
        .unwrap();
        let certd = Certd::start(&env, &cfg);
        env.certctl(&["status"])
            .success()
            .stdout_has("mode: daemon");
        let r = env.certctl(&["regenerate", &old, "--deploy", "--yes", "--json"]);
        r.success();
        let report = r.json();
        assert_eq!(report["step"], "done", "{report}");
        assert_eq!(report["reloads"][0]["ok"], true, "{report}");
        assert_eq!(report["endpoints"][0]["state"], "serves-new", "{report}");
        let new = report["new_fingerprint"].as_str().unwrap().to_string();
        assert_eq!(server.served(), new);
        drop(certd);
    }

    #[test]
    fn a_failed_hook_stops_the_workflow_and_resume_runs_only_the_hook() {
        let env = TestEnv::new();
        let (old, dir, server) = served_site(&env);
        let script = hook_script(&dir, &server, 1);
        let cfg = config(&env, &dir.join("site.pem"), &[s(&script)], "30s");
        let r = env
            .cmd()
            .args(["--config", s(&cfg), "regenerate", &old, "--deploy", "--yes"])
            .run();
        r.expect_code(4)
            .stderr_has("reload hook for")
            .stderr_has("exited 1: not yet (1)")
            .stderr_has("workflows resume");
        let wf = env.certctl(&["workflows", "--json"]).json()[0].clone();
        assert_eq!(wf["step"], "deployed", "{wf}");
        assert!(
            wf["last_error"].as_str().unwrap().contains("exited 1"),
            "{wf}"
        );
        let new = wf["new_fingerprint"].as_str().unwrap().to_string();
        let site = dir.join("site.pem");
        assert_eq!(file_fingerprint(&site), new, "deployed before the hook");
        let before = std::fs::metadata(&site).unwrap();
        assert_eq!(server.served(), old, "not reloaded yet");
        let id = wf["id"].to_string();
        // Resume (without --config: the hook is kept in the workflow).
        let r = env.certctl(&["workflows", "resume", &id]);
        r.success()
            .stdout_has("workflow")
            .stdout_has("done")
            .stdout_has("serves-new");
        let after = std::fs::metadata(&site).unwrap();
        assert_eq!(
            (after.ino(), after.mtime_nsec(), after.mtime()),
            (before.ino(), before.mtime_nsec(), before.mtime()),
            "the deploy did not run again"
        );
        assert_eq!(events(&env, &new, "deployed"), 1);
        assert_eq!(events(&env, &new, "reload-failed"), 1);
        assert_eq!(events(&env, &new, "reloaded"), 1);
        let log = std::fs::read_to_string(dir.join("hook.log")).unwrap();
        assert_eq!(log.lines().count(), 2, "{log}");
        assert_eq!(server.served(), new);
    }

    #[test]
    fn a_hook_past_its_timeout_is_killed_and_reported() {
        let env = TestEnv::new();
        let (old, dir, _server) = served_site(&env);
        let cfg = config(&env, &dir, &["sleep", "600"], "1s");
        let r = env
            .cmd()
            .args(["--config", s(&cfg), "regenerate", &old, "--deploy", "--yes"])
            .run();
        r.expect_code(4)
            .stderr_has("`sleep 600` did not finish within 1s and was killed");
        let wf = env.certctl(&["workflows", "--json"]).json()[0].clone();
        assert_eq!(wf["step"], "deployed", "{wf}");
        // No `sleep 600` is left running.
        let ps = std::process::Command::new("pgrep")
            .args(["-f", "^sleep 600$"])
            .output()
            .unwrap();
        assert!(ps.stdout.is_empty(), "left running: {:?}", ps);
    }
}
