//! End-to-end test: control characters in certificate fields (a crafted certificate dropped
//! into a scanned folder, or served by a probed endpoint) never reach the terminal raw.
//! ESC, OSC and CSI sequences could retitle the window, recolour or clear the screen, and
//! CR/LF forge lines; every text renderer shows them escaped (`\x1b`, `\r`, `\u{9b}`).

use std::path::Path;

use certctl_e2e::tls::TlsServer;
use certctl_e2e::*;

/// A subject CN with an OSC window-title sequence, a CSI colour, CR, LF and the 8-bit CSI.
const EVIL_CN: &str = "evil\x1b]0;pwned\x07\x1b[31mred\r\nforged line\u{9b}2J";
const EVIL_ORG: &str = "Org\x1b[31m\r\u{85}\x7f";
/// SANs are IA5 (ASCII) strings: C0 controls and DEL only.
const EVIL_DNS: &str = "sub\x1b[31m.evil\r\n.example";

/// Fails when the output holds a byte a terminal would act on — a C0 control other than
/// the table's own newlines (and tabs), DEL, or a C1 control (U+0080..U+009F) — or does not
/// show the certificate's ESC escaped (`\x1b`).
#[track_caller]
fn assert_clean(what: &str, r: &RunResult) {
    assert_no_raw_controls(what, r);
    assert!(
        r.stdout.contains("\\x1b"),
        "{what}: no escaped ESC in the output\n{r}"
    );
}

#[track_caller]
fn assert_no_raw_controls(what: &str, r: &RunResult) {
    // `probe` exits 2 for its critical findings (hostname-mismatch here): still an answer.
    if what == "probe" {
        r.expect_code(2);
    } else {
        r.success();
    }
    let text = &r.stdout;
    let bad: Vec<(usize, char)> = text
        .char_indices()
        .filter(|(_, c)| {
            (*c < ' ' && *c != '\n' && *c != '\t')
                || *c == '\x7f'
                || ('\u{80}'..='\u{9f}').contains(c)
        })
        .collect();
    assert!(
        bad.is_empty(),
        "{what}: raw control characters {bad:?} in\n{r}"
    );
    assert!(!text.contains("forged line\n"), "{what}\n{r}");
}

#[test]
fn control_characters_from_certificates_are_escaped_in_every_text_output() {
    let env = TestEnv::new();
    let f = CertFactory::new();
    let evil = f.leaf(
        CertSpec::leaf(EVIL_CN)
            .org(Some(EVIL_ORG))
            .dns(EVIL_DNS)
            .expires_in_days(5),
    );
    files::pem(&env.file("gw/evil.pem"), &[&evil]);
    env.certctl(&["scan", s(&env.root().join("gw")), "--role", "gateway"])
        .success();
    let fp = &evil.fingerprint[..16];

    let list = env.certctl(&["list"]);
    assert_clean("list", &list);
    // The name column shows the CN with each control character escaped.
    list.stdout_has("evil\\x1b]0;pwned\\x07\\x1b[31mred\\r\\nforged line\\u{9b}2J");
    assert_clean("list --csv", &env.certctl(&["list", "--csv"]));
    let show = env.certctl(&["show", fp]);
    assert_clean("show", &show);
    show.stdout_has("sub\\x1b[31m.evil\\r\\n.example");
    // (The reports naming certificates are checked below, with an endpoint's findings.)
    for report in ["expiring", "by-gateway", "weak-keys"] {
        assert_no_raw_controls(report, &env.certctl(&["report", report]));
    }
    // A dry run needs certd's configuration; nothing is sent (no SMTP server listens).
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let config = env.file("certd.toml");
    std::fs::write(
        &config,
        format!(
            "store = \"{}\"\n[smtp]\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\n\
             from = \"certd@contoso.example\"\n[reminders]\nschedule = \"0 8 * * 1-5\"\n\
             policies = \"{}\"\n",
            s(env.store()),
            certctl_e2e::tls::closed_port(),
            s(&shipped)
        ),
    )
    .expect("write config");
    let dry = env
        .cmd()
        .arg("--config")
        .arg(&config)
        .args(["remind", "--dry-run"])
        .run();
    assert_clean("remind --dry-run", &dry);
    dry.stdout_has("To: pki-team@contoso.example");

    // An endpoint serving the certificate: its findings name the certificate.
    let server = TlsServer::serve(&evil, &[]);
    let probe = env.certctl(&["probe", &server.address(), "--sni", "gw.example"]);
    assert_clean("probe", &probe);
    assert_clean("status", &env.certctl(&["status"]));
    assert_clean(
        "report endpoint-findings",
        &env.certctl(&["report", "endpoint-findings"]),
    );
    server.stop();

    // --json is serde's business: the exact text, escaped as JSON.
    let json = env.certctl(&["show", fp, "--json"]);
    json.success();
    assert_eq!(json.json()[0]["subject_cn"], EVIL_CN, "{json}");
}
