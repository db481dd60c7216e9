//! End-to-end tests of the `certctl` binary against `docs/cli-contract.md`.
//!
//! Each test is a short user session: generate certificates (nothing is pasted), write them
//! the way they are found on servers, run the built binary, and compare what it prints with
//! the values the certificates were made from. Build the binaries first
//! (`cargo build --workspace --bins`, which `scripts/test` does).
//!
//! One module per area: [`scan`], [`queries`], [`inspect`], [`check`], [`demo`],
//! [`store_location`], [`regression`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use certctl_e2e::files::{self, Pem};
use certctl_e2e::*;
use serde_json::{json, Value};

/// The `role` of every certificate in a list, by fingerprint.
fn roles(items: &[Value]) -> BTreeMap<String, String> {
    items
        .iter()
        .map(|c| {
            (
                c["fingerprint_sha256"].as_str().unwrap().to_string(),
                c["role"].as_str().unwrap_or("<null>").to_string(),
            )
        })
        .collect()
}

/// The paths of the file sources of a certificate object, sorted and deduplicated.
fn source_paths(cert: &Value) -> BTreeSet<String> {
    file_sources(cert).into_iter().map(|(p, _, _)| p).collect()
}

fn paths<P: AsRef<Path>>(ps: &[P]) -> BTreeSet<String> {
    ps.iter().map(|p| s(p.as_ref()).to_string()).collect()
}

mod scan {
    //! `certctl scan`: every file format, the facts stored, the ephemeral/permanent split,
    //! failures that do not abort the scan, idempotent rescans, sources that disappear, and
    //! `--role`.
    use super::*;

    #[test]
    fn every_format_lands_in_the_store_with_the_generated_facts() {
        let f = CertFactory::new();
        let env = TestEnv::new();
        let gw = f.leaf(
            CertSpec::leaf("gw.example.com")
                .key(KeyKind::EcP256)
                .dns("gw.example.com")
                .dns("gateway.example.com")
                .ip("192.0.2.10")
                .expires_in_days(200),
        );
        let site = f.leaf(
            CertSpec::leaf("site.example.com")
                .key(KeyKind::EcP384)
                .dns("site.example.com")
                .ip("2001:db8::10"),
        );
        let agent = f.leaf(
            CertSpec::leaf("agent-17")
                .key(KeyKind::Rsa2048)
                .email("agent17@example.com")
                .uri("urn:certctl:agent:17"),
        );
        let expired = f.leaf(
            CertSpec::leaf("old.example.com")
                .key(KeyKind::Ed25519)
                .dns("old.example.com")
                .valid(-400 * DAY, -10 * DAY - 12 * HOUR),
        );
        let future = f.leaf(
            CertSpec::leaf("next.example.com")
                .dns("next.example.com")
                .valid(10 * DAY, 400 * DAY),
        );
        let iis = f.leaf(
            CertSpec::leaf("iis.example.com")
                .key(KeyKind::Rsa2048)
                .dns("iis.example.com"),
        );
        let in_txt = f.leaf(CertSpec::leaf("notes.example.com"));

        // A folder as found on a server.
        let dir = env.mkdir("fleet");
        let bundle = dir.join("gateway.pem");
        files::pem_parts(
            &bundle,
            &[
                Pem::Cert(&gw),
                Pem::Key(&gw),
                Pem::Cert(f.intermediate()),
                Pem::Cert(f.root()),
            ],
        );
        let der = dir.join("site.der");
        files::der(&der, &site);
        let pfx = dir.join("agent.pfx");
        files::pkcs12(&pfx, &agent, &[f.intermediate()], "pfx-secret");
        let old = dir.join("old.crt");
        files::pem(&old, &[&expired]);
        let next = dir.join("nested/next.cer");
        files::pem(&next, &[&future]);
        // Not a certificate file name: a folder walk leaves it alone.
        files::pem(&dir.join("notes.txt"), &[&in_txt]);
        let pw = env.file("secrets/pfx-password");
        files::secret(&pw, "pfx-secret");

        let r = env.certctl(&["scan", s(&dir), "--pfx-password-file", s(&pw), "--json"]);
        r.success();
        let summary = r.json();
        assert_eq!(summary["files_read"], 5, "{r}");
        assert_eq!(summary["files_failed"], 0, "{r}");
        // gw, intermediate, root, site, agent, expired, future (the PFX's intermediate is
        // the bundle's).
        assert_eq!(summary["certificates_new"], 7, "{r}");
        assert_eq!(summary["errors"], json!([]), "{r}");

        // A legacy (RC2/3DES) export from an old Windows box, password in the environment.
        let legacy = env.file("inbox/iis-legacy.pfx");
        files::legacy_pkcs12(&legacy, &iis, &[f.intermediate(), f.root()], "legacy-pw");
        let r = env
            .cmd()
            .args(["scan", s(&legacy), "--json"])
            .env("CERTCTL_PFX_PASSWORD", "legacy-pw")
            .run();
        r.success();
        assert_eq!(r.json()["certificates_new"], 1, "{r}");

        let (items, run) = env.list(&[]);
        let all = [
            &gw,
            f.intermediate(),
            f.root(),
            &site,
            &agent,
            &expired,
            &future,
            &iis,
        ];
        assert_eq!(fingerprints(&items), expected_fingerprints(&all), "{run}");
        for cert in all {
            let item = find_fp(&items, &cert.fingerprint);
            assert_cert_json(item, cert, &run);
            let role = if cert.is_ca { "ca" } else { "other" };
            assert_eq!(item["role"], role, "{item}");
            assert_eq!(item["revoked"], false, "{item}");
            assert_eq!(item["revocation"], Value::Null, "{item}");
        }
        assert_eq!(find_fp(&items, &expired.fingerprint)["status"], "expired");
        assert_eq!(find_fp(&items, &expired.fingerprint)["days_left"], -11);
        assert_eq!(
            find_fp(&items, &future.fingerprint)["status"],
            "not-yet-valid"
        );
        assert_eq!(
            find_fp(&items, &gw.fingerprint)["credential_kind"],
            "permanent"
        );
        assert_eq!(find_fp(&items, &agent.fingerprint)["key"], "RSA 2048");

        // Where each one was seen: PEM blocks are indexed in file order, the key block is
        // not a certificate.
        let gw_item = find_fp(&items, &gw.fingerprint);
        assert_eq!(
            file_sources(gw_item),
            vec![(s(&bundle).to_string(), 0, false)]
        );
        let inter = find_fp(&items, &f.intermediate().fingerprint);
        assert!(
            file_sources(inter).contains(&(s(&bundle).to_string(), 1, false)),
            "{inter}"
        );
        assert_eq!(source_paths(inter), paths(&[&bundle, &pfx, &legacy]));
        let root = find_fp(&items, &f.root().fingerprint);
        assert!(
            file_sources(root).contains(&(s(&bundle).to_string(), 2, false)),
            "{root}"
        );
        assert_eq!(source_paths(root), paths(&[&bundle, &legacy]));
        for (cert, path) in [(&site, &der), (&expired, &old), (&future, &next)] {
            let item = find_fp(&items, &cert.fingerprint);
            assert_eq!(file_sources(item), vec![(s(path).to_string(), 0, false)]);
            assert_eq!(item["sources"][0]["kind"], "file");
            assert_eq!(item["more_sources"], 0);
        }
        assert_eq!(
            source_paths(find_fp(&items, &agent.fingerprint)),
            paths(&[&pfx])
        );
    }

    #[test]
    fn short_lived_leaves_are_ephemeral_and_the_rest_permanent() {
        let f = CertFactory::new();
        let env = TestEnv::new();
        let six_hours = f.leaf(CertSpec::leaf("agent-eph").valid(-HOUR, 5 * HOUR));
        let one_day = f.leaf(CertSpec::leaf("agent-24h").valid(-HOUR, 23 * HOUR));
        let day_and_hour = f.leaf(CertSpec::leaf("agent-25h").valid(-HOUR, 24 * HOUR));
        let permanent = f.leaf(CertSpec::leaf("agent-perm"));
        let file = env.file("agents.pem");
        files::pem(
            &file,
            &[
                &six_hours,
                &one_day,
                &day_and_hour,
                &permanent,
                f.intermediate(),
            ],
        );
        env.certctl(&["scan", s(&file), "--role", "agent"])
            .success();

        let (items, run) = env.list(&[]);
        assert_eq!(items.len(), 5, "{run}");
        let kind = |c: &GeneratedCert| find_fp(&items, &c.fingerprint)["credential_kind"].clone();
        assert_eq!(kind(&six_hours), "ephemeral");
        assert_eq!(kind(&one_day), "ephemeral");
        assert_eq!(kind(&day_and_hour), "permanent");
        assert_eq!(kind(&permanent), "permanent");
        assert_eq!(kind(f.intermediate()), Value::Null);
        assert_eq!(
            find_fp(&items, &six_hours.fingerprint)["status"],
            "expiring"
        );
        assert_eq!(find_fp(&items, &six_hours.fingerprint)["days_left"], 0);
    }

    #[test]
    fn bad_files_are_reported_and_the_rest_is_scanned() {
        let f = CertFactory::new();
        let env = TestEnv::new();
        let a = f.leaf(CertSpec::leaf("a.example.com"));
        let b = f.leaf(CertSpec::leaf("b.example.com").key(KeyKind::Rsa2048));
        let c = f.leaf(CertSpec::leaf("c.example.com"));
        let dir = env.mkdir("mixed");
        files::pem(&dir.join("a.pem"), &[&a]);
        files::der(&dir.join("b.der"), &b);
        files::pem(&dir.join("chain.pem"), &[f.intermediate(), f.root()]);
        let truncated = dir.join("truncated.der");
        files::truncated_der(&truncated, &a);
        let garbage = dir.join("garbage.pem");
        files::bad_base64_pem(&garbage);
        let readme = dir.join("readme.pem");
        files::text(&readme, "This folder holds the gateway certificates.\n");
        let empty = dir.join("empty.crt");
        files::empty(&empty);
        let locked = dir.join("locked.pem");
        let enforced = files::unreadable_pem(&locked, &c);
        if !enforced {
            eprintln!(
                "note: running as root, mode 000 does not stop reads: \
                 skipping the assertions about the unreadable file"
            );
        }
        let mut bad = vec![&truncated, &garbage, &readme, &empty];
        if enforced {
            bad.push(&locked);
        }
        let mut good = vec![&a, &b, f.intermediate(), f.root()];
        if !enforced {
            good.push(&c);
        }

        // Plain output: one `error: PATH: CAUSE` line per bad file, exit 3.
        let r = env.certctl(&["scan", s(&dir)]);
        r.expect_code(3);
        for path in &bad {
            r.error_for(path);
        }
        assert_eq!(r.error_lines().len(), bad.len(), "{r}");
        if enforced {
            let cause = r.error_for(&locked);
            assert!(cause.to_lowercase().contains("permission"), "{r}");
        }
        assert!(!r.stdout.trim().is_empty(), "a summary on stdout{r}");
        let items = env.list_json(&[]);
        assert_eq!(fingerprints(&items), expected_fingerprints(&good));

        // The JSON summary of the same scan, into a fresh store.
        let other_store = env.root().join("store-json");
        let r = env
            .cmd()
            .store(&other_store)
            .args(["scan", s(&dir), "--json"])
            .run();
        r.expect_code(3);
        let summary = r.json();
        assert_eq!(summary["files_failed"], bad.len(), "{r}");
        assert_eq!(summary["certificates_new"], good.len(), "{r}");
        let errors = summary["errors"].as_array().expect("errors array");
        let error_paths: BTreeSet<String> = errors
            .iter()
            .map(|e| e["path"].as_str().expect("path").to_string())
            .collect();
        assert_eq!(error_paths, paths(&bad), "{r}");
        for e in errors {
            assert!(
                e["error"].as_str().is_some_and(|m| !m.trim().is_empty()),
                "empty cause in {e}"
            );
        }
        for path in &bad {
            r.error_for(path);
        }
    }

    #[test]
    fn a_wrong_pfx_password_names_the_file_and_the_password() {
        let f = CertFactory::new();
        let env = TestEnv::new();
        let leaf = f.leaf(CertSpec::leaf("pfx.example.com").key(KeyKind::Rsa2048));
        let other = f.leaf(CertSpec::leaf("pem.example.com"));
        let dir = env.mkdir("certs");
        let pfx = dir.join("site.p12");
        files::pkcs12(&pfx, &leaf, &[], "right-password");
        files::pem(&dir.join("other.pem"), &[&other]);
        let pw = env.file("wrong-password.txt");
        files::secret(&pw, "wrong-password");

        let r = env.certctl(&["scan", s(&dir), "--pfx-password-file", s(&pw)]);
        r.expect_code(3);
        let cause = r.error_for(&pfx);
        assert!(cause.to_lowercase().contains("password"), "{r}");
        assert_eq!(
            fingerprints(&env.list_json(&[])),
            expected_fingerprints(&[&other])
        );

        // No password at all is the same kind of failure, not a crash.
        let r = env.certctl(&["scan", s(&pfx)]);
        r.expect_code(3);
        assert!(r.error_for(&pfx).to_lowercase().contains("password"), "{r}");

        // The file's password wins over the environment's (fresh stores, so nothing is
        // remembered from the runs above).
        let r = env
            .cmd()
            .store(env.root().join("store-file-wins"))
            .args(["scan", s(&pfx), "--pfx-password-file", s(&pw)])
            .env("CERTCTL_PFX_PASSWORD", "right-password")
            .run();
        r.expect_code(3);
        assert!(r.error_for(&pfx).to_lowercase().contains("password"), "{r}");
        let right = env.file("right-password.txt");
        files::secret(&right, "right-password");
        env.cmd()
            .store(env.root().join("store-file-wins-2"))
            .args(["scan", s(&pfx), "--pfx-password-file", s(&right)])
            .env("CERTCTL_PFX_PASSWORD", "wrong-password")
            .run()
            .success();
    }

    #[test]
    fn a_pfx_that_failed_is_read_once_the_right_password_is_given() {
        // The user first gets the password wrong, then right: the unchanged file must be
        // read again, not skipped as "unchanged" nor failed from memory.
        let f = CertFactory::new();
        let env = TestEnv::new();
        let leaf = f.leaf(CertSpec::leaf("retry.example.com").key(KeyKind::Rsa2048));
        let pfx = env.file("certs/retry.pfx");
        files::pkcs12(&pfx, &leaf, &[], "right-password");
        let r = env
            .cmd()
            .args(["scan", s(&pfx)])
            .env("CERTCTL_PFX_PASSWORD", "typo")
            .run();
        r.expect_code(3);
        let r = env
            .cmd()
            .args(["scan", s(&pfx), "--json"])
            .env("CERTCTL_PFX_PASSWORD", "right-password")
            .run();
        r.success();
        assert_eq!(r.json()["certificates_new"], 1, "{r}");
        assert_eq!(
            fingerprints(&env.list_json(&[])),
            vec![leaf.fingerprint.clone()]
        );
    }

    #[test]
    fn a_second_scan_adds_nothing_and_keeps_first_seen() {
        let f = CertFactory::new();
        let env = TestEnv::new();
        let leaf = f.leaf(CertSpec::leaf("gw.example.com"));
        let agent = f.leaf(CertSpec::leaf("agent-1").key(KeyKind::Rsa2048));
        let dir = env.mkdir("certs");
        files::pem_parts(
            &dir.join("gw.pem"),
            &[
                Pem::Cert(&leaf),
                Pem::Key(&leaf),
                Pem::Cert(f.intermediate()),
            ],
        );
        files::pkcs12(&dir.join("agent.pfx"), &agent, &[f.intermediate()], "pw");
        files::der(&dir.join("root.der"), f.root());
        let pw = env.file("pw");
        files::secret(&pw, "pw");

        let r = env.certctl(&["scan", s(&dir), "--pfx-password-file", s(&pw), "--json"]);
        r.success();
        assert_eq!(r.json()["certificates_new"], 4, "{r}");
        let before = env.list_json(&[]);
        assert_eq!(before.len(), 4);

        // Let the clock move on so a rewritten first_seen would show.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let r = env.certctl(&["scan", s(&dir), "--pfx-password-file", s(&pw), "--json"]);
        r.success();
        let summary = r.json();
        assert_eq!(summary["certificates_new"], 0, "{r}");
        assert_eq!(summary["files_failed"], 0, "{r}");
        assert_eq!(summary["sources_gone"], 0, "{r}");
        assert_eq!(
            summary["files_read"].as_u64().unwrap() + summary["files_unchanged"].as_u64().unwrap(),
            3,
            "every file is either read or known unchanged{r}"
        );

        let r = env.certctl(&[
            "scan",
            s(&dir),
            "--pfx-password-file",
            s(&pw),
            "--full",
            "--json",
        ]);
        r.success();
        assert_eq!(r.json()["certificates_new"], 0, "{r}");
        assert_eq!(r.json()["files_read"], 3, "--full reads every file{r}");

        let after = env.list_json(&[]);
        assert_eq!(fingerprints(&after), fingerprints(&before));
        for b in &before {
            let fp = b["fingerprint_sha256"].as_str().unwrap();
            let a = find_fp(&after, fp);
            assert_eq!(
                a["first_seen"], b["first_seen"],
                "first_seen of {fp} changed"
            );
            assert_eq!(file_sources(a), file_sources(b), "sources of {fp} changed");
            assert!(
                parse_rfc3339(a["last_seen"].as_str().unwrap())
                    >= parse_rfc3339(b["last_seen"].as_str().unwrap())
            );
        }
        let inter = find_fp(&after, &f.intermediate().fingerprint);
        assert_eq!(file_sources(inter).len(), 2, "{inter}");
    }

    #[test]
    fn a_certificate_removed_from_its_file_is_marked_gone_not_deleted() {
        let f = CertFactory::new();
        let env = TestEnv::new();
        let kept = f.leaf(CertSpec::leaf("kept.example.com"));
        let dropped = f.leaf(CertSpec::leaf("dropped.example.com"));
        let vanished = f.leaf(CertSpec::leaf("vanished.example.com"));
        let dir = env.mkdir("certs");
        let bundle = dir.join("bundle.pem");
        files::pem(&bundle, &[&kept, &dropped]);
        let single = dir.join("single.crt");
        files::pem(&single, &[&vanished]);
        env.certctl(&["scan", s(&dir)]).success();
        assert_eq!(env.list_json(&[]).len(), 3);

        // The bundle is rewritten without `dropped`; `single.crt` is deleted.
        files::pem(&bundle, &[&kept]);
        std::fs::remove_file(&single).unwrap();
        let r = env.certctl(&["scan", s(&dir), "--json"]);
        r.success();
        let summary = r.json();
        assert_eq!(summary["sources_gone"], 2, "{r}");
        assert_eq!(summary["certificates_new"], 0, "{r}");

        let (items, run) = env.list(&[]);
        assert_eq!(
            fingerprints(&items),
            expected_fingerprints(&[&kept, &dropped, &vanished]),
            "nothing is deleted{run}"
        );
        assert_eq!(
            file_sources(find_fp(&items, &kept.fingerprint)),
            vec![(s(&bundle).to_string(), 0, false)]
        );
        assert_eq!(
            file_sources(find_fp(&items, &dropped.fingerprint)),
            vec![(s(&bundle).to_string(), 1, true)]
        );
        assert_eq!(
            file_sources(find_fp(&items, &vanished.fingerprint)),
            vec![(s(&single).to_string(), 0, true)]
        );
        let gone = &find_fp(&items, &dropped.fingerprint)["sources"][0]["gone_since"];
        let gone_at = parse_rfc3339(gone.as_str().expect("gone_since is a timestamp"));
        assert!(
            gone_at >= run.started - 120 && gone_at <= run.finished,
            "{gone}"
        );

        // `show` still finds it, with the same facts.
        let r = env.certctl(&["show", &dropped.fingerprint, "--json"]);
        r.success();
        let shown = r.json();
        assert_eq!(shown.as_array().map(Vec::len), Some(1), "{r}");
        assert_cert_json(&shown[0], &dropped, &r);
    }

    #[test]
    fn role_applies_to_leaves_while_cas_in_the_same_file_stay_ca() {
        let f = CertFactory::new();
        let env = TestEnv::new();
        let gw = f.leaf(CertSpec::leaf("gw.example.com").dns("gw.example.com"));
        let file = env.file("gateway/fullchain.pem");
        files::pem_parts(
            &file,
            &[
                Pem::Cert(&gw),
                Pem::Cert(f.intermediate()),
                Pem::Key(&gw),
                Pem::Cert(f.root()),
            ],
        );
        env.certctl(&["scan", s(&file), "--role", "gateway"])
            .success();
        let items = env.list_json(&[]);
        let want: BTreeMap<String, String> = [
            (gw.fingerprint.clone(), "gateway".to_string()),
            (f.intermediate().fingerprint.clone(), "ca".to_string()),
            (f.root().fingerprint.clone(), "ca".to_string()),
        ]
        .into_iter()
        .collect();
        assert_eq!(roles(&items), want);
        assert_eq!(
            fingerprints(&env.list_json(&["--role", "gateway"])),
            vec![gw.fingerprint.clone()]
        );
    }
}

mod deployed_leaves {
    //! Issue 14: `openssl req -x509` marks a self-signed certificate `CA:TRUE`; deployed as
    //! a server's own certificate (with its key in the file, or served first by an
    //! endpoint) it takes the role given, not `ca`.
    use super::*;

    fn self_signed(dir: &Path, cn: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let (cert, key) = (dir.join(format!("{cn}.crt")), dir.join(format!("{cn}.key")));
        openssl_req_p256(&key, &cert, &format!("/CN={cn}"), &["-x509", "-days", "90"]);
        (cert, key)
    }

    #[test]
    fn a_self_signed_server_certificate_with_its_key_takes_the_given_role() {
        let env = TestEnv::new();
        let dir = env.mkdir("gw");
        let (cert, key) = self_signed(&dir, "gw.example");
        let bundle = dir.join("gw-bundle.pem");
        let text = format!(
            "{}{}",
            std::fs::read_to_string(&cert).unwrap(),
            std::fs::read_to_string(&key).unwrap()
        );
        std::fs::write(&bundle, text).unwrap();
        env.certctl(&["scan", s(&bundle), "--role", "gateway"])
            .success();
        let items = env.list_json(&[]);
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["is_ca"], true, "openssl req -x509 says CA:TRUE");
        assert_eq!(items[0]["role"], "gateway", "{:#}", items[0]);

        // The same kind of certificate without a key next to it is an issuer: `ca`.
        let other = env.mkdir("other");
        let (lone, _) = self_signed(&other, "lone.example");
        std::fs::remove_file(other.join("lone.example.key")).unwrap();
        env.certctl(&["scan", s(&lone), "--role", "gateway"])
            .success();
        let items = env.list_json(&["--name", "lone.example"]);
        assert_eq!(items[0]["role"], "ca", "{:#}", items[0]);
    }

    #[test]
    fn a_ca_true_certificate_an_endpoint_serves_first_takes_the_probes_role() {
        let env = TestEnv::new();
        let f = CertFactory::new();
        let served = f.self_signed(CertSpec::ca("proxy-gw.example"));
        let server = certctl_e2e::tls::TlsServer::serve(&served, &[]);
        env.certctl(&["probe", &server.address(), "--role", "gateway"]);
        server.stop();
        let items = env.list_json(&[]);
        let item = find_fp(&items, &served.fingerprint);
        assert_eq!(item["is_ca"], true);
        assert_eq!(item["role"], "gateway", "{item:#}");
    }
}

mod queries {
    //! `list` filters and formats, `show` by fingerprint prefix or name, `stats`.
    use super::*;

    /// A small fleet, scanned role by role.
    struct Fleet {
        f: CertFactory,
        env: TestEnv,
        gw: GeneratedCert,
        iis: GeneratedCert,
        site: GeneratedCert,
        agent_old: GeneratedCert,
        agent: GeneratedCert,
        partner_ca: GeneratedCert,
        partner: GeneratedCert,
    }

    impl Fleet {
        fn new() -> Fleet {
            let f = CertFactory::new();
            let env = TestEnv::new();
            let gw = f.leaf(
                CertSpec::leaf("gw.example.com")
                    .dns("gw.example.com")
                    .dns("gateway.example.com")
                    .ip("192.0.2.10")
                    .expires_in_days(10),
            );
            let iis = f.leaf(
                CertSpec::leaf("iis.example.com")
                    .key(KeyKind::Rsa2048)
                    .dns("iis.example.com")
                    .expires_in_days(20),
            );
            let site = f.leaf(
                CertSpec::leaf("site.example.com")
                    .key(KeyKind::EcP384)
                    .expires_in_days(200),
            );
            let agent_old = f.leaf(
                CertSpec::leaf("agent-7")
                    .key(KeyKind::Ed25519)
                    .valid(-370 * DAY, -5 * DAY - 12 * HOUR),
            );
            let agent = f.leaf(
                CertSpec::leaf("agent-8")
                    .key(KeyKind::Ed25519)
                    .expires_in_days(365),
            );
            let partner_ca = f.self_signed(
                CertSpec::ca("Partner Issuing CA")
                    .org(Some("Partner Corp"))
                    .key(KeyKind::Rsa2048),
            );
            let partner = f.issue(
                CertSpec::leaf("api.partner.example")
                    .org(Some("Partner Corp"))
                    .dns("api.partner.example")
                    .expires_in_days(45),
                &partner_ca,
            );
            let fleet = Fleet {
                f,
                env,
                gw,
                iis,
                site,
                agent_old,
                agent,
                partner_ca,
                partner,
            };
            let e = &fleet.env;
            let scan = |rel: &str, certs: &[&GeneratedCert], role: Option<&str>| {
                let p = e.file(rel);
                files::pem(&p, certs);
                let mut args = vec!["scan", s(&p)];
                if let Some(role) = role {
                    args.extend(["--role", role]);
                }
                e.certctl(&args).success();
            };
            scan("gw/gw.pem", &[&fleet.gw], Some("gateway"));
            scan("iis/iis.crt", &[&fleet.iis], Some("iis"));
            scan("site/site.pem", &[&fleet.site], Some("site-server"));
            scan(
                "agents/a.pem",
                &[&fleet.agent_old, &fleet.agent],
                Some("agent"),
            );
            scan(
                "partner/chain.pem",
                &[&fleet.partner, &fleet.partner_ca],
                None,
            );
            scan(
                "ca/chain.pem",
                &[fleet.f.intermediate(), fleet.f.root()],
                None,
            );
            fleet
        }

        fn all(&self) -> Vec<&GeneratedCert> {
            vec![
                &self.gw,
                &self.iis,
                &self.site,
                &self.agent_old,
                &self.agent,
                &self.partner_ca,
                &self.partner,
                self.f.intermediate(),
                self.f.root(),
            ]
        }

        /// `list --json ARGS` as sorted fingerprints.
        fn list_fps(&self, args: &[&str]) -> Vec<String> {
            fingerprints(&self.env.list_json(args))
        }
    }

    #[test]
    fn list_shows_everything_sorted_by_not_after() {
        let fleet = Fleet::new();
        let (items, run) = fleet.env.list(&[]);
        assert_eq!(fingerprints(&items), expected_fingerprints(&fleet.all()));
        for cert in fleet.all() {
            assert_cert_json(find_fp(&items, &cert.fingerprint), cert, &run);
        }
        let not_afters: Vec<i64> = items
            .iter()
            .map(|c| parse_rfc3339(c["not_after"].as_str().unwrap()))
            .collect();
        let mut sorted = not_afters.clone();
        sorted.sort();
        assert_eq!(not_afters, sorted, "not sorted by not_after{run}");
        let first: Vec<&Value> = items
            .iter()
            .take(3)
            .map(|c| &c["fingerprint_sha256"])
            .collect();
        assert_eq!(
            first,
            vec![
                &json!(fleet.agent_old.fingerprint),
                &json!(fleet.gw.fingerprint),
                &json!(fleet.iis.fingerprint)
            ]
        );
        assert_eq!(
            roles(&items)[&fleet.site.fingerprint],
            "site-server",
            "{run}"
        );
    }

    #[test]
    fn expiring_within_takes_every_duration_unit_and_leaves_out_expired() {
        let fleet = Fleet::new();
        let (gw, iis, partner) = (&fleet.gw, &fleet.iis, &fleet.partner);
        assert_eq!(
            fleet.list_fps(&["--expiring-within", "30d"]),
            expected_fingerprints(&[gw, iis])
        );
        assert_eq!(
            fleet.list_fps(&["--expiring-within", "2w"]),
            expected_fingerprints(&[gw])
        );
        assert_eq!(
            fleet.list_fps(&["--expiring-within", "400h"]),
            expected_fingerprints(&[gw])
        );
        assert_eq!(
            fleet.list_fps(&["--expiring-within", "50000m"]),
            expected_fingerprints(&[gw, iis])
        );
        assert_eq!(
            fleet.list_fps(&["--expiring-within", "4000000s"]),
            expected_fingerprints(&[gw, iis, partner])
        );
        assert_eq!(
            fleet.list_fps(&["--expiring-within", "1d"]),
            Vec::<String>::new()
        );
    }

    #[test]
    fn expired_and_the_union_with_expiring() {
        let fleet = Fleet::new();
        assert_eq!(
            fleet.list_fps(&["--expired"]),
            expected_fingerprints(&[&fleet.agent_old])
        );
        assert_eq!(
            fleet.list_fps(&["--expired", "--expiring-within", "30d"]),
            expected_fingerprints(&[&fleet.agent_old, &fleet.gw, &fleet.iis])
        );
    }

    #[test]
    fn filters_by_role_issuer_and_name() {
        let fleet = Fleet::new();
        assert_eq!(
            fleet.list_fps(&["--role", "agent"]),
            expected_fingerprints(&[&fleet.agent_old, &fleet.agent])
        );
        assert_eq!(
            fleet.list_fps(&["--role", "ca"]),
            expected_fingerprints(&[&fleet.partner_ca, fleet.f.intermediate(), fleet.f.root()])
        );
        assert_eq!(
            fleet.list_fps(&["--role", "iis"]),
            expected_fingerprints(&[&fleet.iis])
        );
        // Issuer: case-insensitive substring of the issuer DN.
        assert_eq!(
            fleet.list_fps(&["--issuer", "PARTNER issuing"]),
            expected_fingerprints(&[&fleet.partner, &fleet.partner_ca])
        );
        let by_issuing_ca = fleet.list_fps(&["--issuer", "certctl e2e issuing ca"]);
        assert_eq!(
            by_issuing_ca,
            expected_fingerprints(&[
                &fleet.gw,
                &fleet.iis,
                &fleet.site,
                &fleet.agent_old,
                &fleet.agent
            ])
        );
        // Name: subject CN or any SAN, case-insensitive substring.
        assert_eq!(
            fleet.list_fps(&["--name", "GATEWAY.example"]),
            expected_fingerprints(&[&fleet.gw])
        );
        assert_eq!(
            fleet.list_fps(&["--name", "192.0.2.10"]),
            expected_fingerprints(&[&fleet.gw])
        );
        assert_eq!(
            fleet.list_fps(&["--name", "agent-"]),
            expected_fingerprints(&[&fleet.agent_old, &fleet.agent])
        );
        // Filters combine.
        assert_eq!(
            fleet.list_fps(&["--role", "agent", "--expired"]),
            expected_fingerprints(&[&fleet.agent_old])
        );
        assert_eq!(
            fleet.list_fps(&["--name", "nowhere.invalid"]),
            Vec::<String>::new()
        );
    }

    /// Issue 14: the 7-day list without agents' 6-hour credentials (`--kind`).
    #[test]
    fn list_by_credential_kind_keeps_ephemeral_agents_apart() {
        let fleet = Fleet::new();
        let ephemeral = fleet.f.leaf(
            CertSpec::leaf("agent-9")
                .key(KeyKind::EcP256)
                .valid(-HOUR, 5 * HOUR),
        );
        let p = fleet.env.file("agents/ephemeral.pem");
        files::pem(&p, &[&ephemeral]);
        fleet
            .env
            .certctl(&["scan", s(&p), "--role", "agent"])
            .success();

        let week = ["--expiring-within", "7d"];
        assert!(fleet.list_fps(&week).contains(&ephemeral.fingerprint));
        assert_eq!(
            fleet.list_fps(&["--expiring-within", "7d", "--kind", "ephemeral"]),
            vec![ephemeral.fingerprint.clone()]
        );
        let permanent = fleet.list_fps(&["--kind", "permanent"]);
        assert!(!permanent.contains(&ephemeral.fingerprint));
        assert!(permanent.contains(&fleet.gw.fingerprint));
        assert!(
            !permanent.contains(&fleet.f.root().fingerprint),
            "CA certificates have no credential kind"
        );
        fleet
            .env
            .certctl(&["list", "--kind", "forever"])
            .expect_code(64)
            .stderr_has("permanent or ephemeral");
    }

    #[test]
    fn csv_has_the_contract_header_and_one_row_per_certificate() {
        let fleet = Fleet::new();
        let r = fleet.env.certctl(&["list", "--csv"]);
        r.success();
        let rows = parse_csv(&r.stdout);
        assert_eq!(
            rows[0].join(","),
            "fingerprint_sha256,subject,issuer,serial,not_before,not_after,days_left,role,\
             credential_kind,key,signature_algorithm,spki_sha256,sans,revoked,sources,\
             status,subject_cn",
            "{r}"
        );
        let body = &rows[1..];
        assert_eq!(body.len(), fleet.all().len(), "{r}");
        let json_order: Vec<String> = fleet
            .env
            .list_json(&[])
            .iter()
            .map(|c| c["fingerprint_sha256"].as_str().unwrap().to_string())
            .collect();
        let csv_order: Vec<String> = body.iter().map(|row| row[0].clone()).collect();
        assert_eq!(csv_order, json_order, "CSV rows in list order{r}");
        let gw_row = body
            .iter()
            .find(|row| row[0] == fleet.gw.fingerprint)
            .expect("gw row");
        assert_eq!(gw_row.len(), 17, "{gw_row:?}");
        assert_eq!(gw_row[15], "expiring", "issue 14: status column");
        assert_eq!(gw_row[16], "gw.example.com", "issue 14: subject_cn column");
        assert_eq!(gw_row[1], fleet.gw.subject);
        assert_eq!(gw_row[3], fleet.gw.serial_hex());
        assert_eq!(gw_row[5], fleet.gw.not_after_rfc3339());
        assert_eq!(gw_row[7], "gateway");
        assert_eq!(gw_row[9], "EC P-256");
        let sans: BTreeSet<&str> = gw_row[12].split(';').collect();
        assert!(
            ["gw.example.com", "gateway.example.com", "192.0.2.10"]
                .iter()
                .all(|n| sans.contains(n)),
            "{gw_row:?}"
        );
        assert_eq!(gw_row[13], "false");
        assert!(gw_row[14].contains("gw.pem"), "{gw_row:?}");
        // Filters apply to CSV too.
        let r = fleet.env.certctl(&["list", "--csv", "--expired"]);
        r.success();
        let rows = parse_csv(&r.stdout);
        assert_eq!(rows.len(), 2, "{r}");
        assert_eq!(rows[1][0], fleet.agent_old.fingerprint);
    }

    #[test]
    fn show_by_fingerprint_prefix_with_or_without_colons() {
        let fleet = Fleet::new();
        let gw = &fleet.gw;
        for id in [
            gw.fingerprint[..8].to_string(),
            gw.fingerprint.to_uppercase()[..12].to_string(),
            gw.fingerprint_colons()[..11].to_string(), // `AB:CD:EF:01`: 8 hex characters
            gw.fingerprint.clone(),
        ] {
            let r = fleet.env.certctl(&["show", &id, "--json"]);
            r.success();
            let shown = r.json();
            assert_eq!(shown.as_array().map(Vec::len), Some(1), "show {id}{r}");
            assert_cert_json(&shown[0], gw, &r);
            assert_eq!(shown[0]["role"], "gateway");
        }
        // Human output names the certificate.
        let r = fleet.env.certctl(&["show", &gw.fingerprint[..10]]);
        r.success()
            .stdout_has("gw.example.com")
            .stdout_has(&gw.fingerprint);
    }

    #[test]
    fn show_by_cn_or_san_is_case_insensitive() {
        let fleet = Fleet::new();
        for id in ["GW.Example.COM", "gateway.example.com", "192.0.2.10"] {
            let r = fleet.env.certctl(&["show", id, "--json"]);
            r.success();
            assert_eq!(
                fingerprints(r.json().as_array().unwrap()),
                vec![fleet.gw.fingerprint.clone()],
                "show {id}{r}"
            );
        }
        // Exact names only: a substring is not a name.
        fleet
            .env
            .certctl(&["show", "gateway.example"])
            .expect_code(4);
    }

    #[test]
    fn a_name_on_several_certificates_shows_them_all() {
        let f = CertFactory::new();
        let env = TestEnv::new();
        // A renewal: the old and the new certificate carry the same name.
        let old = f.leaf(CertSpec::leaf("portal.example.com").expires_in_days(5));
        let new = f.leaf(CertSpec::leaf("portal.example.com").expires_in_days(395));
        let unrelated = f.leaf(CertSpec::leaf("other.example.com"));
        let file = env.file("portal.pem");
        files::pem(&file, &[&old, &new, &unrelated]);
        env.certctl(&["scan", s(&file)]).success();
        let r = env.certctl(&["show", "portal.example.com", "--json"]);
        r.success();
        assert_eq!(
            fingerprints(r.json().as_array().unwrap()),
            expected_fingerprints(&[&old, &new]),
            "{r}"
        );
    }

    #[test]
    fn a_prefix_shorter_than_8_hex_characters_is_rejected() {
        let fleet = Fleet::new();
        let short = &fleet.gw.fingerprint[..7];
        let r = fleet.env.certctl(&["show", short, "--json"]);
        r.expect_code(4);
        r.stderr_has(short);
        assert!(
            !r.stdout.contains(&fleet.gw.fingerprint),
            "a 7-character prefix must not select the certificate{r}"
        );
    }

    #[test]
    fn an_unknown_id_exits_4() {
        let fleet = Fleet::new();
        let unknown = "0123456789abcdef".repeat(4);
        assert!(fleet.all().iter().all(|c| c.fingerprint != unknown));
        let r = fleet.env.certctl(&["show", &unknown]);
        r.expect_code(4).stderr_has(&unknown[..8]);
        assert!(r.stdout.trim().is_empty(), "{r}");
        let r = fleet
            .env
            .certctl(&["show", "nothing.example.com", "--json"]);
        r.expect_code(4).stderr_has("nothing.example.com");
    }

    #[test]
    fn stats_counts_by_role_status_and_key() {
        let fleet = Fleet::new();
        let r = fleet.env.certctl(&["stats", "--json"]);
        r.success();
        let stats = r.json();
        let all = fleet.all();
        assert_eq!(stats["total"], all.len(), "{r}");

        let check_counts = |field: &str, want: &[(&str, usize)]| {
            let got = stats[field]
                .as_object()
                .unwrap_or_else(|| panic!("`{field}` is not an object{r}"));
            for (k, n) in want {
                assert_eq!(got.get(*k), Some(&json!(n)), "{field}.{k}{r}");
            }
            for (k, v) in got {
                if !want.iter().any(|(w, _)| w == k) {
                    assert_eq!(v, &json!(0), "unexpected {field}.{k}{r}");
                }
            }
        };
        check_counts(
            "by_role",
            &[
                ("gateway", 1),
                ("iis", 1),
                ("site-server", 1),
                ("agent", 2),
                ("other", 1),
                ("ca", 3),
            ],
        );
        // gw (10 d) and iis (20 d) are expiring; agent-7 expired; the rest valid.
        check_counts(
            "by_status",
            &[
                ("valid", 6),
                ("expiring", 2),
                ("expired", 1),
                ("revoked", 0),
                ("not-yet-valid", 0),
            ],
        );
        let mut by_key: BTreeMap<&str, usize> = BTreeMap::new();
        for c in &all {
            *by_key.entry(c.key.label()).or_default() += 1;
        }
        let want: Vec<(&str, usize)> = by_key.into_iter().collect();
        check_counts("by_key", &want);

        let r = fleet.env.certctl(&["stats"]);
        r.success();
        assert!(r.stdout.contains(&all.len().to_string()), "{r}");
    }
}

mod inspect {
    //! `certctl inspect FILE`: parse one file, no store involved.
    use super::*;

    /// Issue 14: `inspect FILE --check` answers like `check`, for a file no store holds.
    #[test]
    fn inspect_check_exits_by_the_thresholds_of_the_first_certificate_to_expire() {
        let f = CertFactory::new();
        let env = TestEnv::new();
        let in_days = |cn: &str, days: i64| f.leaf(CertSpec::leaf(cn).expires_in_days(days));
        let cases = [
            (vec![in_days("fine.example", 200)], 0, "OK:"),
            (
                vec![in_days("soon.example", 20), in_days("later.example", 300)],
                1,
                "WARNING:",
            ),
            (
                vec![in_days("later.example", 300), in_days("urgent.example", 3)],
                2,
                "CRITICAL:",
            ),
        ];
        for (i, (certs, code, label)) in cases.iter().enumerate() {
            let file = env.file(&format!("case-{i}.pem"));
            files::pem(&file, &certs.iter().collect::<Vec<_>>());
            let r = env
                .cmd()
                .no_store()
                .args(["inspect", s(&file), "--check"])
                .run();
            r.expect_code(*code).stdout_has(label).stdout_has(s(&file));
            assert_eq!(r.stdout.lines().count(), 1, "one line for monitoring\n{r}");
            // --json keeps the array (the contract) and the exit code.
            let j = env
                .cmd()
                .no_store()
                .args(["inspect", s(&file), "--check", "--json"])
                .run();
            j.expect_code(*code);
            assert_eq!(j.json().as_array().map(Vec::len), Some(certs.len()));
        }
        let expired = f.leaf(CertSpec::leaf("gone.example").valid(-30 * DAY, -DAY));
        let file = env.file("expired.pem");
        files::pem(&file, &[&expired]);
        env.cmd()
            .no_store()
            .args([
                "inspect",
                s(&file),
                "--check",
                "--warn",
                "60d",
                "--critical",
                "1d",
            ])
            .run()
            .expect_code(2)
            .stdout_has("gone.example expired");
        // Thresholds without --check are a usage error, not silently ignored.
        env.cmd()
            .no_store()
            .args(["inspect", s(&file), "--warn", "60d"])
            .run()
            .expect_code(64);
    }

    #[test]
    fn inspect_prints_the_certificates_of_a_file_without_a_store() {
        let f = CertFactory::new();
        let env = TestEnv::new();
        let leaf = f.leaf(
            CertSpec::leaf("inspect.example.com")
                .key(KeyKind::EcP384)
                .dns("inspect.example.com")
                .email("pki@example.com")
                .expires_in_days(12),
        );
        let file = env.file("bundle.pem");
        files::pem_parts(
            &file,
            &[
                Pem::Cert(&leaf),
                Pem::Key(&leaf),
                Pem::Cert(f.intermediate()),
            ],
        );
        let r = env
            .cmd()
            .no_store()
            .args(["inspect", s(&file), "--json"])
            .run();
        r.success();
        let items = r.json();
        let items = items.as_array().expect("an array");
        assert_eq!(items.len(), 2, "{r}");
        assert_eq!(
            items[0]["fingerprint_sha256"], leaf.fingerprint,
            "file order{r}"
        );
        assert_eq!(items[1]["fingerprint_sha256"], f.intermediate().fingerprint);
        assert_cert_json(&items[0], &leaf, &r);
        assert_cert_json(&items[1], f.intermediate(), &r);
        for item in items {
            assert_eq!(item["role"], Value::Null, "{item}");
            assert_eq!(item["sources"], json!([]), "{item}");
        }
        assert_eq!(items[0]["status"], "expiring");

        // Nothing was created: neither the --store path nor the default location.
        env.certctl(&["inspect", s(&file)])
            .success()
            .stdout_has("inspect.example.com");
        assert!(!env.store().exists(), "inspect created the store");
        assert!(
            !env.home().join(".local/share/certctl").exists(),
            "inspect created the default store"
        );
    }

    #[test]
    fn inspect_reads_der_and_pkcs12() {
        let f = CertFactory::new();
        let env = TestEnv::new();
        let leaf = f.leaf(CertSpec::leaf("agent-3").key(KeyKind::Rsa2048));
        let der = env.file("agent.der");
        files::der(&der, &leaf);
        let r = env.certctl(&["inspect", s(&der), "--json"]);
        r.success();
        assert_eq!(
            fingerprints(r.json().as_array().unwrap()),
            vec![leaf.fingerprint.clone()]
        );

        let pfx = env.file("agent.pfx");
        files::pkcs12(&pfx, &leaf, &[f.intermediate()], "open sesame");
        let pw = env.file("pw");
        files::secret(&pw, "open sesame");
        let r = env.certctl(&["inspect", s(&pfx), "--pfx-password-file", s(&pw), "--json"]);
        r.success();
        let items = r.json();
        assert_eq!(
            fingerprints(items.as_array().unwrap()),
            expected_fingerprints(&[&leaf, f.intermediate()]),
            "{r}"
        );
        assert_cert_json(
            find_fp(items.as_array().unwrap(), &leaf.fingerprint),
            &leaf,
            &r,
        );
    }

    #[test]
    fn inspect_of_a_bad_file_fails_naming_it() {
        let f = CertFactory::new();
        let env = TestEnv::new();
        let leaf = f.leaf(CertSpec::leaf("x.example.com"));
        let bad = env.file("broken.der");
        files::truncated_der(&bad, &leaf);
        let r = env.certctl(&["inspect", s(&bad), "--json"]);
        r.expect_code(4).stderr_has(s(&bad));
        let missing = env.root().join("missing.pem");
        env.certctl(&["inspect", s(&missing)])
            .expect_code(4)
            .stderr_has(s(&missing));
    }
}

mod check {
    //! `certctl check`: one line and a Nagios-style exit code.
    use super::*;

    /// A store holding the given certificates, scanned from one file.
    fn store_with(certs: &[&GeneratedCert]) -> TestEnv {
        let env = TestEnv::new();
        let file = env.file("certs/all.pem");
        files::pem(&file, certs);
        env.certctl(&["scan", s(&file)]).success();
        env
    }

    #[track_caller]
    fn check(env: &TestEnv, args: &[&str], code: i32) -> RunResult {
        let mut argv = vec!["check"];
        argv.extend_from_slice(args);
        let r = env.certctl(&argv);
        r.expect_code(code);
        assert_eq!(
            r.stdout.trim_end().lines().count(),
            1,
            "one summary line{r}"
        );
        r
    }

    #[test]
    fn ok_warning_and_critical_exit_0_1_2() {
        let f = CertFactory::new();
        let fine = f.leaf(CertSpec::leaf("fine.example.com").expires_in_days(120));
        let soon = f.leaf(CertSpec::leaf("soon.example.com").expires_in_days(20));
        let urgent = f.leaf(CertSpec::leaf("urgent.example.com").expires_in_days(3));

        let ok = store_with(&[&fine, f.intermediate()]);
        check(&ok, &[], 0);
        let warning = store_with(&[&fine, &soon]);
        check(&warning, &[], 1);
        let critical = store_with(&[&fine, &soon, &urgent]);
        check(&critical, &[], 2);
    }

    /// Issue 14: perfdata after `|`, `--role`, not-yet-valid certificates (clock skew) and
    /// endpoint findings count, so monitoring never says OK about something it could see
    /// was wrong.
    #[test]
    fn perfdata_role_clock_skew_and_endpoint_findings() {
        let f = CertFactory::new();
        let fine = f.leaf(CertSpec::leaf("fine.example.com").expires_in_days(120));
        let soon = f.leaf(CertSpec::leaf("soon.example.com").expires_in_days(20));
        let env = TestEnv::new();
        let gw = env.file("gw/gw.pem");
        files::pem(&gw, &[&fine]);
        env.certctl(&["scan", s(&gw), "--role", "gateway"])
            .success();
        let iis = env.file("iis/iis.pem");
        files::pem(&iis, &[&soon]);
        env.certctl(&["scan", s(&iis), "--role", "iis"]).success();

        let r = check(&env, &[], 1);
        r.stdout_has(
            "| expired=0 expiring_crit=0 expiring_warn=1 findings=0 not_yet_valid=0 failed_files=0",
        );
        check(&env, &["--role", "gateway"], 0).stdout_has("OK: 1 certificates");
        check(&env, &["--role", "iis"], 1);

        // A certificate whose validity begins tomorrow: the host's clock or the deployment
        // is wrong.
        let early = f.leaf(CertSpec::leaf("early.example.com").valid(DAY, 200 * DAY));
        files::pem(&gw, &[&fine, &early]);
        env.certctl(&["scan", s(&gw), "--role", "gateway"])
            .success();
        check(&env, &["--role", "gateway"], 1)
            .stdout_has("WARNING")
            .stdout_has("1 certificates not yet valid")
            .stdout_has("not_yet_valid=1");

        // An endpoint nobody answers on: a critical finding, even with every file fine.
        let closed = format!("127.0.0.1:{}", certctl_e2e::tls::closed_port());
        env.certctl(&["probe", &closed, "--role", "gateway", "--timeout", "5s"])
            .expect_code(2);
        let r = check(&env, &["--role", "gateway"], 2);
        r.stdout_has("CRITICAL")
            .stdout_has(&format!("tls://{closed} unreachable"))
            .stdout_has("findings=1");
        let j = env.certctl(&["check", "--role", "gateway", "--json"]);
        j.expect_code(2);
        assert_eq!(j.json()["findings"][0]["kind"], "unreachable", "{j}");
        assert_eq!(j.json()["findings"][0]["endpoint"], closed.as_str(), "{j}");
        // The IIS view is not affected by the gateway's endpoint.
        check(&env, &["--role", "iis"], 1);
    }

    /// Issue 14: a file that fails in a scanned folder (its certificates cannot be seen) is
    /// counted in `check`, `status` and the metrics, not only printed once by the scan.
    #[test]
    fn files_that_failed_are_a_warning_until_they_read() {
        let f = CertFactory::new();
        let fine = f.leaf(CertSpec::leaf("fine.example.com").expires_in_days(120));
        let env = TestEnv::new();
        let dir = env.mkdir("site");
        files::pem(&dir.join("fine.pem"), &[&fine]);
        let broken = dir.join("broken.pem");
        files::bad_base64_pem(&broken);
        env.certctl(&["scan", s(&dir)]).expect_code(3);

        check(&env, &[], 1)
            .stdout_has("1 files could not be read")
            .stdout_has(s(&broken))
            .stdout_has("failed_files=1");
        env.certctl(&["status"])
            .success()
            .stdout_has("files: 1 could not be read")
            .stdout_has(s(&broken));
        env.certctl(&["metrics"])
            .success()
            .stdout_has("certctl_source_read_errors 1");

        // Fixed on the server: the next scan reads it and the warning is gone.
        files::pem(&broken, &[&fine]);
        env.certctl(&["scan", s(&dir)]).success();
        check(&env, &[], 0).stdout_has("failed_files=0");
        env.certctl(&["metrics"])
            .success()
            .stdout_has("certctl_source_read_errors 0");
    }

    /// Issue 14: `check --policies DIR` judges each certificate by its own policy's
    /// warn/critical (a gateway's 30 days are critical, a site server's 20 days are fine).
    #[test]
    fn check_with_policies_uses_each_certificates_own_thresholds() {
        let f = CertFactory::new();
        let gw = f.leaf(CertSpec::leaf("gw.example.com").expires_in_days(25));
        let site = f.leaf(CertSpec::leaf("site.example.com").expires_in_days(20));
        let env = TestEnv::new();
        let g = env.file("gw/gw.pem");
        files::pem(&g, &[&gw]);
        env.certctl(&["scan", s(&g), "--role", "gateway"]).success();
        let p = env.file("site/site.pem");
        files::pem(&p, &[&site]);
        env.certctl(&["scan", s(&p), "--role", "site-server"])
            .success();
        let policies = env.mkdir("policies");
        files::text(
            &policies.join("p.toml"),
            "[[policy]]\nname = \"public\"\nroles = [\"gateway\"]\nremind = [\"30d\"]\nwarn = \"60d\"\ncritical = \"30d\"\nrecipients = [\"ops@example.com\"]\n\n[[policy]]\nname = \"sites\"\nroles = [\"site-server\"]\nremind = [\"7d\"]\nwarn = \"10d\"\ncritical = \"3d\"\nrecipients = [\"ops@example.com\"]\n",
        );
        // Default thresholds (30d/7d): two warnings.
        check(&env, &[], 1).stdout_has("expiring_warn=2");
        // Their policies: the gateway is critical, the site server fine.
        check(&env, &["--policies", s(&policies)], 2).stdout_has("expiring_crit=1 expiring_warn=0");
        let j = env.certctl(&["check", "--policies", s(&policies), "--json"]);
        j.expect_code(2);
        assert_eq!(
            j.json()["critical"][0]["fingerprint_sha256"],
            gw.fingerprint.as_str()
        );
        assert_eq!(j.json()["warning"], json!([]));
        // A policies folder that does not load is an error, not an OK.
        env.certctl(&["check", "--policies", s(&env.root().join("nope"))])
            .expect_code(3)
            .stdout_has("UNKNOWN");
    }

    #[test]
    fn an_expired_certificate_is_critical() {
        let f = CertFactory::new();
        let expired = f.leaf(CertSpec::leaf("expired.example.com").valid(-90 * DAY, -DAY));
        let fine = f.leaf(CertSpec::leaf("fine.example.com").expires_in_days(120));
        check(&store_with(&[&fine, &expired]), &[], 2);
    }

    #[test]
    fn thresholds_are_configurable() {
        let f = CertFactory::new();
        let cert = f.leaf(CertSpec::leaf("sixty.example.com").expires_in_days(60));
        let env = store_with(&[&cert]);
        check(&env, &[], 0);
        check(&env, &["--warn", "90d", "--critical", "30d"], 1);
        check(&env, &["--warn", "100d", "--critical", "9w"], 2);
        check(&env, &["--warn", "10d", "--critical", "2d"], 0);
    }

    #[test]
    fn ephemeral_certificates_do_not_alarm() {
        let f = CertFactory::new();
        let eph = f.leaf(CertSpec::leaf("agent-eph").valid(-HOUR, 5 * HOUR));
        let fine = f.leaf(CertSpec::leaf("fine.example.com").expires_in_days(120));
        check(&store_with(&[&fine, &eph]), &[], 0);
    }

    #[test]
    fn certificates_gone_from_every_source_do_not_alarm() {
        let f = CertFactory::new();
        let urgent = f.leaf(CertSpec::leaf("urgent.example.com").expires_in_days(3));
        let fine = f.leaf(CertSpec::leaf("fine.example.com").expires_in_days(120));
        let env = TestEnv::new();
        let file = env.file("certs/site.pem");
        files::pem(&file, &[&fine, &urgent]);
        env.certctl(&["scan", s(&file)]).success();
        check(&env, &[], 2);
        // Replaced on the server: the file now holds only the healthy certificate.
        files::pem(&file, &[&fine]);
        env.certctl(&["scan", s(&file)]).success();
        check(&env, &[], 0);
    }
}

mod demo {
    //! `certctl demo`: writes a demo fleet, scans it, reports what needs attention.
    use super::*;

    #[test]
    fn demo_writes_a_fleet_and_prints_the_expiring_certificates() {
        let env = TestEnv::new();
        let dir = env.root().join("demo-fleet");
        let r = env
            .cmd()
            .args(["demo", "--dir", s(&dir)])
            .timeout(std::time::Duration::from_secs(120))
            .run();
        r.success();
        assert!(dir.is_dir(), "the fleet folder exists{r}");
        assert!(
            env.store().is_dir(),
            "--store is used for the demo store{r}"
        );

        let (expiring, run) = env.list(&["--expiring-within", "30d"]);
        assert!(
            !expiring.is_empty(),
            "the demo fleet has expiring certificates{run}"
        );
        let named = expiring.iter().any(|c| {
            let name = c["subject_cn"].as_str().unwrap_or("");
            !name.is_empty() && r.stdout.contains(name)
        }) || expiring.iter().any(|c| {
            r.stdout
                .contains(&c["fingerprint_sha256"].as_str().unwrap()[..8])
        });
        assert!(named, "demo output names an expiring certificate{r}{run}");
        // The fleet on disk is what was scanned.
        for c in &expiring {
            for (path, _, _) in file_sources(c) {
                assert!(path.starts_with(s(&dir)), "{path} is in the fleet folder");
            }
        }
    }

    #[test]
    fn without_store_the_demo_store_lives_under_the_fleet_folder() {
        let env = TestEnv::new();
        let dir = env.root().join("fleet");
        let r = env
            .cmd()
            .no_store()
            .args(["demo", "--dir", s(&dir)])
            .timeout(std::time::Duration::from_secs(120))
            .run();
        r.success();
        assert!(
            !env.home().join(".local/share/certctl").exists(),
            "the demo must not touch the default store{r}"
        );
        assert!(!env.store().exists());
        // A second run over the same folder works too.
        env.cmd()
            .no_store()
            .args(["demo", "--dir", s(&dir)])
            .timeout(std::time::Duration::from_secs(120))
            .run()
            .success();
    }
}

mod store_location {
    //! Where the store is: `--store` before or after the subcommand, `CERTCTL_STORE`, the
    //! XDG default; created private (0700); an unusable store is exit 4.
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn one_cert(env: &TestEnv) -> (GeneratedCert, std::path::PathBuf) {
        let f = CertFactory::new();
        let c = f.leaf(CertSpec::leaf("where.example.com"));
        let p = env.file("where.pem");
        files::pem(&p, &[&c]);
        (c, p)
    }

    /// Issue 14: `certctl --store /typo check` created an empty store and answered
    /// "OK: 0 certificates". Read-only commands never create a store; `check` says UNKNOWN
    /// (exit 3, Nagios), the others fail (exit 4), each naming the path.
    #[test]
    fn read_only_commands_never_create_a_store() {
        let env = TestEnv::new();
        let typo = env.root().join("stroe");
        let check = env.cmd().store(&typo).args(["check"]).run();
        check
            .expect_code(3)
            .stdout_has("UNKNOWN")
            .stdout_has(s(&typo));
        for args in [
            vec!["list"],
            vec!["list", "--json"],
            vec!["show", "anything"],
            vec!["stats"],
            vec!["status"],
            vec!["report", "by-role"],
            vec!["ca", "list"],
            vec!["workflows"],
            vec!["agents", "pending"],
            vec!["snoozed"],
            vec!["store", "verify"],
        ] {
            let r = env.cmd().store(&typo).args(&args).run();
            r.expect_code(4)
                .stderr_has(s(&typo))
                .stderr_has("no store at");
        }
        assert!(
            !typo.exists(),
            "no command above created {}",
            typo.display()
        );

        // The commands that add to the inventory still create it.
        let (_, p) = one_cert(&env);
        env.cmd().store(&typo).args(["scan", s(&p)]).run().success();
        env.cmd().store(&typo).args(["check"]).run().expect_code(0);
    }

    #[test]
    fn store_option_before_or_after_the_subcommand() {
        let env = TestEnv::new();
        let (c, p) = one_cert(&env);
        let store = env.root().join("custom-store");
        env.cmd()
            .no_store()
            .args(["--store", s(&store), "scan", s(&p)])
            .run()
            .success();
        let r = env
            .cmd()
            .no_store()
            .args(["list", "--json", "--store", s(&store)])
            .run();
        r.success();
        assert_eq!(
            fingerprints(r.json().as_array().unwrap()),
            vec![c.fingerprint.clone()]
        );
        assert!(!env.store().exists());
    }

    #[test]
    fn certctl_store_environment_variable_and_option_precedence() {
        let env = TestEnv::new();
        let (c, p) = one_cert(&env);
        let from_env = env.root().join("env-store");
        env.cmd()
            .no_store()
            .args(["scan", s(&p)])
            .env("CERTCTL_STORE", &from_env)
            .run()
            .success();
        assert!(from_env.is_dir());
        let r = env
            .cmd()
            .no_store()
            .args(["list", "--json"])
            .env("CERTCTL_STORE", &from_env)
            .run();
        r.success();
        assert_eq!(
            fingerprints(r.json().as_array().unwrap()),
            vec![c.fingerprint.clone()]
        );

        // --store wins over the variable: that store was never created, and a read-only
        // command says so rather than answering from the variable's store.
        let r = env
            .cmd()
            .args(["list", "--json"])
            .env("CERTCTL_STORE", &from_env)
            .run();
        r.expect_code(4).stderr_has(s(env.store()));
    }

    #[test]
    fn default_store_is_under_xdg_data_home() {
        let env = TestEnv::new();
        let (c, p) = one_cert(&env);
        env.cmd().no_store().args(["scan", s(&p)]).run().success();
        let default = env.home().join(".local/share/certctl/store");
        assert!(default.is_dir(), "{} was not created", default.display());
        let r = env
            .cmd()
            .no_store()
            .args(["list", "--json", "--store", s(&default)])
            .run();
        r.success();
        assert_eq!(
            fingerprints(r.json().as_array().unwrap()),
            vec![c.fingerprint.clone()]
        );
    }

    #[test]
    fn a_new_store_directory_is_private() {
        let env = TestEnv::new();
        let (_, p) = one_cert(&env);
        let store = env.root().join("deep/nested/store");
        env.cmd()
            .store(&store)
            .args(["scan", s(&p)])
            .run()
            .success();
        let mode = std::fs::metadata(&store).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "store mode is {mode:o}");
    }

    #[test]
    fn a_store_that_cannot_be_opened_is_exit_4() {
        let env = TestEnv::new();
        let not_a_dir = env.file("plain-file");
        files::text(&not_a_dir, "not a store\n");
        let r = env.cmd().store(&not_a_dir).args(["list", "--json"]).run();
        r.expect_code(4);
        assert!(!r.stderr.trim().is_empty(), "{r}");
    }
}

mod regression {
    //! Edge cases of the contract that are easy to get wrong: exit 64 for usage errors,
    //! files named explicitly, missing paths, CRLF PEM, password files, the source cap, and
    //! the full set of JSON keys.
    use super::*;

    #[test]
    fn usage_errors_exit_64() {
        let env = TestEnv::new();
        for args in [
            &["frobnicate"][..],
            &["list", "--no-such-flag"],
            &["list", "--expiring-within", "30x"],
            &["list", "--expiring-within", "d"],
            &["check", "--warn", "soon"],
            &["scan", "--role", "router", "."],
            &["list", "--json", "--csv"],
            &["show"],
        ] {
            let r = env.certctl(args);
            r.expect_code(64);
            assert!(!r.stderr.trim().is_empty(), "{r}");
        }
    }

    #[test]
    fn a_file_named_on_the_command_line_is_read_whatever_its_name() {
        let f = CertFactory::new();
        let env = TestEnv::new();
        let c = f.leaf(CertSpec::leaf("named.example.com"));
        let p = env.file("certificate-backup.txt");
        files::pem(&p, &[&c]);
        env.certctl(&["scan", s(&p)]).success();
        assert_eq!(
            fingerprints(&env.list_json(&[])),
            vec![c.fingerprint.clone()]
        );
    }

    #[test]
    fn every_certificate_extension_is_walked_in_folders() {
        let f = CertFactory::new();
        let env = TestEnv::new();
        let dir = env.mkdir("exts");
        let mut want = Vec::new();
        for ext in ["pem", "crt", "cer", "cert", "der", "pfx", "p12", "chain"] {
            let c = f.leaf(CertSpec::leaf(&format!("{ext}.example.com")));
            let p = dir.join(format!("file.{ext}"));
            match ext {
                "der" => files::der(&p, &c),
                "pfx" | "p12" => files::pkcs12(&p, &c, &[], "pw"),
                _ => files::pem(&p, &[&c]),
            }
            want.push(c);
        }
        let r = env
            .cmd()
            .args(["scan", s(&dir), "--json"])
            .env("CERTCTL_PFX_PASSWORD", "pw")
            .run();
        r.success();
        assert_eq!(r.json()["files_read"], 8, "{r}");
        let want_refs: Vec<&GeneratedCert> = want.iter().collect();
        assert_eq!(
            fingerprints(&env.list_json(&[])),
            expected_fingerprints(&want_refs)
        );
    }

    #[test]
    fn a_missing_path_is_a_failed_file_not_an_abort() {
        let f = CertFactory::new();
        let env = TestEnv::new();
        let c = f.leaf(CertSpec::leaf("present.example.com"));
        let present = env.file("present.pem");
        files::pem(&present, &[&c]);
        let missing = env.root().join("no/such/file.pem");
        let r = env.certctl(&["scan", s(&missing), s(&present)]);
        r.expect_code(3);
        r.error_for(&missing);
        assert_eq!(
            fingerprints(&env.list_json(&[])),
            vec![c.fingerprint.clone()]
        );
    }

    #[test]
    fn pem_with_crlf_line_endings_and_surrounding_text() {
        let f = CertFactory::new();
        let env = TestEnv::new();
        let c = f.leaf(CertSpec::leaf("crlf.example.com").key(KeyKind::Rsa2048));
        let text = format!(
            "subject=CN = crlf.example.com\n{}\nsome trailing note\n",
            c.pem.trim_end()
        )
        .replace('\n', "\r\n");
        let p = env.file("windows.crt");
        files::text(&p, &text);
        env.certctl(&["scan", s(&p)]).success();
        assert_eq!(
            fingerprints(&env.list_json(&[])),
            vec![c.fingerprint.clone()]
        );
    }

    #[test]
    fn pfx_password_file_with_a_trailing_newline() {
        // `echo secret > pw` is how people write password files.
        let f = CertFactory::new();
        let env = TestEnv::new();
        let c = f.leaf(CertSpec::leaf("echo.example.com").key(KeyKind::Rsa2048));
        let pfx = env.file("echo.pfx");
        files::pkcs12(&pfx, &c, &[], "secret");
        let pw = env.file("pw");
        files::secret(&pw, "secret\n");
        env.certctl(&["scan", s(&pfx), "--pfx-password-file", s(&pw)])
            .success();
        assert_eq!(
            fingerprints(&env.list_json(&[])),
            vec![c.fingerprint.clone()]
        );
    }

    #[test]
    fn a_ca_in_many_chain_files_keeps_64_sources_and_counts_the_rest() {
        let f = CertFactory::new();
        let env = TestEnv::new();
        let dir = env.mkdir("chains");
        for i in 0..70 {
            files::pem(&dir.join(format!("site{i:02}.chain")), &[f.intermediate()]);
        }
        env.certctl(&["scan", s(&dir)]).success();
        let items = env.list_json(&[]);
        assert_eq!(items.len(), 1);
        let sources = items[0]["sources"].as_array().unwrap();
        assert_eq!(sources.len(), 64, "{}", items[0]);
        assert_eq!(items[0]["more_sources"], 6, "{}", items[0]);
    }

    #[test]
    fn json_objects_carry_every_contract_key() {
        let f = CertFactory::new();
        let env = TestEnv::new();
        let c = f.leaf(CertSpec::leaf("keys.example.com"));
        let p = env.file("keys.pem");
        files::pem(&p, &[&c, f.intermediate()]);
        let r = env.certctl(&["scan", s(&p), "--json"]);
        r.success();
        let summary = r.json();
        for key in [
            "files_read",
            "files_unchanged",
            "files_skipped",
            "files_failed",
            "certificates_new",
            "certificates_updated",
            "certificates_seen",
            "sources_gone",
        ] {
            assert!(
                summary[key].is_u64(),
                "summary `{key}` missing or not a count{r}"
            );
        }
        assert!(summary["errors"].is_array(), "{r}");

        let (items, run) = env.list(&[]);
        let leaf = find_fp(&items, &c.fingerprint);
        for key in [
            "fingerprint_sha256",
            "subject",
            "subject_cn",
            "issuer",
            "serial",
            "not_before",
            "not_after",
            "days_left",
            "status",
            "role",
            "credential_kind",
            "key",
            "signature_algorithm",
            "is_ca",
            "spki_sha256",
            "subject_key_id",
            "authority_key_id",
            "sans",
            "crl_distribution_points",
            "ocsp_urls",
            "revoked",
            "revocation",
            "first_seen",
            "last_seen",
            "sources",
            "more_sources",
        ] {
            assert!(
                leaf.get(key).is_some(),
                "certificate object lacks `{key}`{run}"
            );
        }
        let x = c.x509();
        let skid = x.subject_key_id().map(|k| hex(k.as_slice()));
        assert_eq!(leaf["subject_key_id"], json!(skid), "{leaf}");
        let inter_skid = f
            .intermediate()
            .x509()
            .subject_key_id()
            .map(|k| hex(k.as_slice()));
        assert_eq!(leaf["authority_key_id"], json!(inter_skid), "{leaf}");
        let source = &leaf["sources"][0];
        for key in [
            "kind",
            "path",
            "index",
            "first_seen",
            "last_seen",
            "gone_since",
        ] {
            assert!(source.get(key).is_some(), "source lacks `{key}`: {source}");
        }
        let t = parse_rfc3339(leaf["first_seen"].as_str().unwrap());
        assert!(t >= r.started - 1 && t <= r.finished + 1, "{leaf}");
    }
}

mod names {
    //! Issue 14: subject and issuer keep every attribute, as `openssl x509 -nameopt RFC2253`
    //! prints them (UTF-8 kept as is, hence `-esc_msb`), for a real-world corpus: the
    //! system's trust store, and EV-style names made here with openssl.
    use super::*;
    use std::process::Command;

    /// `(sha256 fingerprint, subject, issuer)` of a PEM file, as openssl prints them.
    fn openssl_names(path: &Path) -> (String, String, String) {
        let out = Command::new("openssl")
            .args([
                "x509",
                "-noout",
                "-fingerprint",
                "-sha256",
                "-subject",
                "-issuer",
            ])
            .args(["-nameopt", "RFC2253,-esc_msb", "-in"])
            .arg(path)
            .output()
            .expect("run openssl");
        assert!(out.status.success(), "openssl x509 {}", path.display());
        let text = String::from_utf8(out.stdout).expect("openssl prints UTF-8 here");
        let field = |prefix: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(prefix))
                .unwrap_or_else(|| panic!("no {prefix} in {text}"))
                .to_string()
        };
        let fp = field("sha256 Fingerprint=").replace(':', "").to_lowercase();
        (fp, field("subject="), field("issuer="))
    }

    fn assert_names_match_openssl(env: &TestEnv, files: &[std::path::PathBuf]) -> usize {
        let items = env.list_json(&[]);
        let mut compared = 0;
        for f in files {
            let (fp, subject, issuer) = openssl_names(f);
            let Some(item) = items
                .iter()
                .find(|c| c["fingerprint_sha256"] == fp.as_str())
            else {
                panic!("{} ({fp}) was not inventoried", f.display());
            };
            assert_eq!(
                item["subject"],
                subject.as_str(),
                "subject of {}",
                f.display()
            );
            assert_eq!(item["issuer"], issuer.as_str(), "issuer of {}", f.display());
            compared += 1;
        }
        compared
    }

    #[test]
    fn ev_style_names_keep_serial_number_and_every_other_attribute() {
        let env = TestEnv::new();
        let dir = env.mkdir("ev");
        let subjects = [
            "/C=US/ST=Washington/L=Redmond/O=Contoso/serialNumber=600413485/businessCategory=Private Organization/jurisdictionC=US/CN=ev.contoso.example",
            "/serialNumber=DEVICE-0042/CN=device-42/O=Contoso Devices",
            "/CN=multi+OU=valued/O=Comma\\, Inc./C=DE",
            "/CN=ünïcødé.example/O=Bücher GmbH",
        ];
        let mut files = Vec::new();
        for (i, subject) in subjects.iter().enumerate() {
            let path = dir.join(format!("ev-{i}.pem"));
            let out = Command::new("openssl")
                .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
                .args(["ec_paramgen_curve:P-256", "-nodes", "-keyout", "/dev/null"])
                .args([
                    "-days",
                    "30",
                    "-utf8",
                    "-multivalue-rdn",
                    "-subj",
                    subject,
                    "-out",
                ])
                .arg(&path)
                .output()
                .expect("run openssl req");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            files.push(path);
        }
        env.certctl(&["scan", s(&dir)]).success();
        assert_eq!(assert_names_match_openssl(&env, &files), subjects.len());
        let items = env.list_json(&[]);
        assert!(
            items.iter().any(|c| c["subject"]
                .as_str()
                .unwrap()
                .contains("serialNumber=600413485")),
            "{items:?}"
        );
    }

    #[test]
    fn the_system_trust_store_names_match_openssl_attribute_by_attribute() {
        let Some(dir) = ["/usr/share/ca-certificates/mozilla", "/etc/ssl/certs"]
            .into_iter()
            .map(Path::new)
            .find(|d| d.is_dir())
        else {
            eprintln!("SKIPPED: no system trust store folder here");
            return;
        };
        let env = TestEnv::new();
        let files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
            .expect("read the trust store")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "crt" || e == "pem"))
            .filter(|p| p.is_file())
            .collect();
        if files.is_empty() {
            eprintln!("SKIPPED: {} holds no certificates", dir.display());
            return;
        }
        let r = env.certctl(&["scan", s(dir)]);
        assert!(r.code() == 0 || r.code() == 3, "{r}");
        let compared = assert_names_match_openssl(&env, &files);
        assert_eq!(compared, files.len());
    }
}
