//! Manual pages: rendered from the clap definitions of `certctl` and `certd` (one page for
//! the command and one per subcommand, `certctl-scan(1)` and so on), plus the hand-written
//! `certd.toml(5)` for the configuration file. `certctl man` and `certd man` print or
//! write them; `scripts/install` puts them under `$PREFIX/share/man`.

use std::path::{Path, PathBuf};

use crate::files::atomic::{self, FileMode, Options};

/// certd's configuration file format, section 5 (`docs/man/certd.toml.5`).
pub const CERTD_TOML_5: &str = include_str!("../../docs/man/certd.toml.5");

/// One rendered page: its file name (`certctl-scan.1`) and roff text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManPage {
    /// The page's file name: `NAME.1` for a command or subcommand (`certctl-scan.1`), or
    /// `certd.toml.5`.
    pub file_name: String,
    /// The page's text, in roff (as `man` reads it).
    pub roff: Vec<u8>,
}

/// The pages of `command` in section 1: the command itself, then each visible subcommand
/// as `NAME-SUB` (nested subcommands as `NAME-SUB-SUBSUB`).
pub fn section_1(command: clap::Command) -> Vec<ManPage> {
    let mut command = command;
    command.build();
    let mut pages = Vec::new();
    collect(&command, command.get_name().to_string(), &mut pages);
    pages
}

fn collect(command: &clap::Command, name: String, pages: &mut Vec<ManPage>) {
    let page_command = command
        .clone()
        .name(name.clone())
        .bin_name(name.replace('-', " "));
    let mut roff = Vec::new();
    // Rendering into a Vec cannot fail.
    let _ = clap_mangen::Man::new(page_command).render(&mut roff);
    pages.push(ManPage {
        file_name: format!("{name}.1"),
        roff,
    });
    for sub in command.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        collect(sub, format!("{name}-{}", sub.get_name()), pages);
    }
}

/// `certd.toml(5)`.
pub fn certd_toml() -> ManPage {
    ManPage {
        file_name: "certd.toml.5".to_string(),
        roff: CERTD_TOML_5.as_bytes().to_vec(),
    }
}

/// Writes `pages` into `dir` (created 0755 if missing), each 0644 through the atomic
/// writer; returns the paths written.
pub fn write_all(dir: &Path, pages: &[ManPage]) -> Result<Vec<PathBuf>, atomic::WriteError> {
    atomic::create_dir_all(dir, 0o755)?;
    let mut written = Vec::with_capacity(pages.len());
    for page in pages {
        let path = dir.join(&page.file_name);
        Options::new(FileMode::Public)
            .not_durable()
            .write(&path, &page.roff)?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_visible_subcommand_gets_a_page_named_after_its_path() {
        let command = clap::Command::new("tool")
            .about("a tool")
            .subcommand(
                clap::Command::new("store")
                    .about("store things")
                    .subcommand(clap::Command::new("verify").about("verify it")),
            )
            .subcommand(clap::Command::new("secret").hide(true));
        let names: Vec<String> = section_1(command)
            .into_iter()
            .map(|p| p.file_name)
            .collect();
        assert_eq!(names, ["tool.1", "tool-store.1", "tool-store-verify.1"]);
    }

    #[test]
    fn the_config_page_is_roff_with_the_sections_a_reader_looks_for() {
        let page = certd_toml();
        let text = String::from_utf8(page.roff).unwrap();
        assert!(text.starts_with(".TH CERTD.TOML 5"), "{}", &text[..40]);
        for section in ["NAME", "SYNOPSIS", "DESCRIPTION", "EXAMPLE", "SEE ALSO"] {
            assert!(text.contains(&format!(".SH {section}")), "no {section}");
        }
    }
}
