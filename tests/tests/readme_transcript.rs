//! The README's compromise-response block is a transcript that runs as written.
//!
//! The block between `<!-- compromise-transcript ... -->` and `<!-- /compromise-transcript -->`
//! in README.md is cut into commands (a line ending in `\` continues on the next; comment
//! lines are skipped), and the commands run one after the other in one `bash` (so `export`
//! carries over), in an empty folder, with the built `certctl` and `certd` first on PATH and
//! the default store inside the folder (`HOME`, `XDG_DATA_HOME`). Each must exit 0, or the
//! `N` of a trailing `# exit N` comment. At the end, `openssl verify -crl_check` must reject
//! the revoked certificate (and accept its replacement) with the CRL the transcript
//! published. Build the binaries first (`cargo build --workspace --bins`).

use std::path::Path;
use std::time::Duration;

use certctl_e2e::*;

/// One command of the transcript and the exit status the README documents for it.
#[derive(Debug)]
struct Line {
    command: String,
    exit: i32,
}

/// The commands of the README's compromise transcript.
fn transcript(readme: &str) -> Vec<Line> {
    let start = readme
        .find("<!-- compromise-transcript")
        .expect("README.md has a <!-- compromise-transcript --> marker");
    let end = readme
        .find("<!-- /compromise-transcript -->")
        .expect("README.md has a <!-- /compromise-transcript --> marker");
    let block = &readme[start..end];
    let fence = block
        .find("```sh\n")
        .expect("a ```sh block inside the markers")
        + 6;
    let body = &block[fence..block[fence..].find("```").expect("the closing fence") + fence];
    let mut lines = Vec::new();
    let mut pending = String::new();
    for raw in body.lines() {
        let trimmed = raw.trim();
        if pending.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if let Some(cont) = trimmed.strip_suffix('\\') {
            pending.push_str(cont.trim_end());
            pending.push(' ');
            continue;
        }
        pending.push_str(trimmed);
        let (command, exit) = match pending.rfind("# exit ") {
            Some(i) => (
                pending[..i].trim().to_string(),
                pending[i + 7..].trim().parse().expect("# exit N"),
            ),
            None => {
                // A trailing comment (`  # ...`) is left to bash.
                (pending.trim().to_string(), 0)
            }
        };
        lines.push(Line { command, exit });
        pending.clear();
    }
    lines
}

#[test]
fn the_transcript_is_read_from_the_readme() {
    let lines = transcript(
        "x\n<!-- compromise-transcript -->\n```sh\n# c\na \\\n  b   # exit 4\n\nc  # note\n```\n<!-- /compromise-transcript -->\n",
    );
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!((lines[0].command.as_str(), lines[0].exit), ("a b", 4));
    assert_eq!((lines[1].command.as_str(), lines[1].exit), ("c  # note", 0));
}

#[test]
fn the_compromise_section_of_the_readme_runs_as_written() {
    let readme_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&readme_path).unwrap();
    let lines = transcript(&readme);
    assert!(lines.len() > 10, "{lines:?}");

    let env = TestEnv::new();
    let work = env.mkdir("work");
    let rc_file = env.file("rc.txt");
    let mut script = String::from("set +e\n");
    for (i, line) in lines.iter().enumerate() {
        script.push_str(&format!(
            "echo \"\\$ {}\"\n{}\necho \"{i} $?\" >> {}\n",
            line.command
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('$', "\\$")
                .replace('`', "\\`"),
            line.command,
            s(&rc_file)
        ));
    }
    let script_path = env.file("transcript.sh");
    std::fs::write(&script_path, &script).unwrap();
    let bin_dir = bin_path("certctl").parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        s(&bin_dir),
        std::env::var("PATH").unwrap_or_default()
    );
    let r = env
        .cmd()
        .program("/bin/bash")
        .no_store()
        .arg(s(&script_path))
        .current_dir(&work)
        .env("PATH", path)
        .env("USER", "alice")
        .timeout(Duration::from_secs(240))
        .run();
    let codes: Vec<i32> = std::fs::read_to_string(&rc_file)
        .unwrap_or_default()
        .lines()
        .map(|l| l.split(' ').nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(codes.len(), lines.len(), "every line ran{r}");
    for (line, code) in lines.iter().zip(&codes) {
        assert_eq!(
            *code, line.exit,
            "`{}` exited {code}, the README says {}{r}",
            line.command, line.exit
        );
    }
    // The independent check, whatever the transcript's last lines say.
    let (ok, text) = openssl(&[
        "verify",
        "-crl_check",
        "-CAfile",
        s(&work.join("ops-ca.pem")),
        "-CRLfile",
        s(&work.join("ops-crl.pem")),
        s(&work.join("gw/gw.contoso.example.pem.bak")),
    ]);
    assert!(!ok && text.contains("certificate revoked"), "{text}");
    openssl_ok(&[
        "verify",
        "-crl_check",
        "-CAfile",
        s(&work.join("ops-ca.pem")),
        "-CRLfile",
        s(&work.join("ops-crl.pem")),
        s(&work.join("gw/gw.contoso.example.pem")),
    ]);
}
