//! Installing certctl as an admin would: manual pages that `man` renders, shell
//! completions that the shell accepts, and `scripts/install` putting both in place.

use std::path::Path;
use std::process::Command;

use certctl_e2e::*;

/// `man -l PAGE`, as plain text (MANWIDTH fixed so wrapping is stable).
fn render(page: &Path) -> String {
    let out = Command::new("man")
        .arg("-l")
        .arg(page)
        .env("MANWIDTH", "100")
        .env("MANPAGER", "cat")
        .env("PAGER", "cat")
        .output()
        .expect("run man (scripts/setup installs man-db)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "man -l {}: {stderr}", page.display());
    // groff's warnings (a malformed page) go to stderr.
    assert!(
        !stderr.contains("warning") && !stderr.contains("error"),
        "man -l {}: {stderr}",
        page.display()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn listed(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn every_certctl_manual_page_renders_and_documents_its_options() {
    let env = TestEnv::new();
    let dir = env.root().join("man1");
    env.cmd()
        .arg("man")
        .arg("--out")
        .arg(&dir)
        .no_store()
        .run()
        .success();
    let pages = listed(&dir);
    for want in [
        "certctl.1",
        "certctl-scan.1",
        "certctl-check.1",
        "certctl-revoke.1",
        "certctl-store-verify.1",
        "certctl-agents-block.1",
        "certctl-completions.1",
    ] {
        assert!(pages.iter().any(|p| p == want), "no {want} in {pages:?}");
    }
    for page in &pages {
        let text = render(&dir.join(page));
        assert!(
            text.contains("NAME") && text.contains("SYNOPSIS"),
            "{page}:\n{text}"
        );
    }
    // A subcommand's page names its own options and the global ones.
    let check = render(&dir.join("certctl-check.1"));
    for option in ["--warn", "--critical", "--json", "--store"] {
        assert!(
            check.contains(option),
            "certctl-check(1) lacks {option}:\n{check}"
        );
    }
    // Without --out the top page goes to stdout, for `certctl man | man -l -`.
    let top = env.cmd().arg("man").no_store().run();
    top.success().stdout_has(".TH certctl 1");
}

#[test]
fn certd_has_a_manual_page_and_one_for_its_configuration_file() {
    let env = TestEnv::new();
    let dir = env.root().join("man");
    env.cmd()
        .bin("certd")
        .arg("man")
        .arg("--out")
        .arg(&dir)
        .no_store()
        .run()
        .success();
    let pages = listed(&dir);
    assert!(pages.contains(&"certd.1".to_string()), "{pages:?}");
    assert!(pages.contains(&"certd-run.1".to_string()), "{pages:?}");
    let config = render(&dir.join("certd.toml.5"));
    // Every section of the configuration that `certd config example` shows is described.
    let example = env
        .cmd()
        .bin("certd")
        .args(["config", "example"])
        .no_store()
        .run();
    example.success();
    let example = example.stdout.clone();
    for line in example.lines() {
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            let section = section.trim_start_matches('[');
            assert!(
                config.contains(&format!("[{section}]")),
                "certd.toml(5) does not describe [{section}]"
            );
        }
    }
    let run = render(&dir.join("certd-run.1"));
    assert!(run.contains("--log-format"), "{run}");
}

#[test]
fn bash_accepts_the_completion_script_and_completes_subcommands() {
    let env = TestEnv::new();
    let script = env.root().join("certctl.bash");
    let r = env.cmd().args(["completions", "bash"]).no_store().run();
    r.success();
    std::fs::write(&script, &r.stdout).unwrap();
    // Source it, then ask the completion function what follows `certctl sc`.
    let probe = format!(
        "source {}; COMP_WORDS=(certctl sc); COMP_CWORD=1; COMP_LINE='certctl sc'; \
         COMP_POINT=${{#COMP_LINE}}; _certctl certctl sc certctl; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display()
    );
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &probe])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.lines().any(|l| l == "scan"),
        "completions: {stdout:?}"
    );
    for shell in ["zsh", "fish"] {
        let r = env.cmd().args(["completions", shell]).no_store().run();
        r.success().stdout_has("certctl");
    }
    // An unknown shell is a usage error naming the choices.
    env.cmd()
        .args(["completions", "tcsh"])
        .no_store()
        .run()
        .expect_code(64)
        .stderr_has("bash");
}

#[test]
fn scripts_install_puts_binaries_pages_and_completions_under_the_prefix() {
    let env = TestEnv::new();
    let prefix = env.root().join("prefix");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let certctl = bin_path("certctl");
    let profile = certctl
        .parent()
        .and_then(|p| p.file_name())
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap();
    let target_dir = certctl.parent().unwrap().parent().unwrap();
    let out = Command::new(repo.join("scripts/install"))
        .args(["--no-build", "--profile", &profile])
        .env("PREFIX", &prefix)
        .env("CARGO_TARGET_DIR", target_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scripts/install: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for rel in [
        "bin/certctl",
        "bin/certd",
        "share/man/man1/certctl.1",
        "share/man/man1/certctl-scan.1",
        "share/man/man1/certd.1",
        "share/man/man5/certd.toml.5",
        "share/bash-completion/completions/certctl",
        "share/zsh/site-functions/_certctl",
        "share/fish/vendor_completions.d/certctl.fish",
    ] {
        assert!(prefix.join(rel).is_file(), "{rel} not installed");
    }
    // `man certd.toml` finds the installed page through MANPATH.
    let out = Command::new("man")
        .args(["-w", "certd.toml"])
        .env("MANPATH", prefix.join("share/man"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("man5/certd.toml.5"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The systemd unit and its drop-in load without a warning (an unknown key or section, a
/// bad value), with ExecStart pointing at the built certd.
#[test]
fn the_systemd_unit_and_its_drop_in_pass_systemd_analyze_verify() {
    let Ok(analyze) = which("systemd-analyze") else {
        eprintln!("SKIPPED: systemd-analyze is not installed");
        return;
    };
    let env = TestEnv::new();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let unit = std::fs::read_to_string(repo.join("contrib/certd.service")).unwrap();
    assert!(unit.contains("ProtectSystem=strict"), "{unit}");
    let certd = bin_path("certd");
    let dir = env.mkdir("units");
    std::fs::write(
        dir.join("certd.service"),
        unit.replace("/usr/local/bin/certd", &certd.to_string_lossy()),
    )
    .unwrap();
    let dropins = env.mkdir("units/certd.service.d");
    std::fs::copy(
        repo.join("contrib/certd.service.d/writable-paths.conf"),
        dropins.join("writable-paths.conf"),
    )
    .unwrap();
    // The unit's Documentation= names man pages, which systemd-analyze looks up: install
    // certd's pages where MANPATH finds them.
    let pages = env.root().join("pages");
    env.cmd()
        .bin("certd")
        .arg("man")
        .arg("--out")
        .arg(&pages)
        .no_store()
        .run()
        .success();
    let manpath = env.root().join("share/man");
    for (page, section) in [("certd.1", "man1"), ("certd.toml.5", "man5")] {
        std::fs::create_dir_all(manpath.join(section)).unwrap();
        std::fs::copy(pages.join(page), manpath.join(section).join(page)).unwrap();
    }
    let verify = || {
        Command::new(&analyze)
            .arg("verify")
            .arg("./certd.service")
            .env("MANPATH", &manpath)
            .current_dir(&dir)
            .output()
            .unwrap()
    };
    let out = verify();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("certd.service"))
        .collect();
    assert!(complaints.is_empty(), "systemd-analyze verify: {stderr}");
    // The drop-in was read: the same check on a drop-in with an unknown key complains, so a
    // silent pass above means the real drop-in is clean.
    std::fs::write(
        dropins.join("zz-typo.conf"),
        "[Service]\nReadWritePath=/srv\n",
    )
    .unwrap();
    let out = verify();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ReadWritePath"),
        "drop-ins not read: {stderr}"
    );
}

fn which(program: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .ok_or(())
}
