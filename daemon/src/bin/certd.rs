//! `certd`: the certificate watcher daemon. Parses arguments, sets up logging and runs
//! `certctl_daemon::server`; everything else lives in the library.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use certctl_daemon::config;
use clap::{Parser, Subcommand, ValueEnum};

/// jemalloc rather than glibc's malloc: certd's queries run on many short-lived blocking
/// threads, and glibc gives each its own arena, which kept hundreds of MB of freed memory
/// resident after a list or a reminder pass over a million certificates.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// certd — watches certificate files and TLS endpoints, keeps the certctl store up to date
/// and serves certctl over a local control socket.
#[derive(Debug, Parser)]
#[command(
    name = "certd",
    version,
    about = "Watches certificate files and TLS endpoints, keeps the certctl store up to date and serves certctl over a local control socket"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon in the foreground (systemd runs it like this).
    Run {
        /// The configuration file (TOML); see `certd config example`.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Log format on stderr.
        #[arg(long, value_enum, default_value_t = LogFormat::Human)]
        log_format: LogFormat,
    },
    /// Configuration helpers.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// SCEP helpers (RFC 8894) for the `[[scep]]` servers of the configuration.
    #[command(subcommand)]
    Scep(ScepCommand),
    /// Print certd's manual page (roff; `man -l -` reads it), or with --out write certd.1,
    /// one page per subcommand and certd.toml.5 into a folder (scripts/install puts them
    /// under $PREFIX/share/man).
    Man {
        /// Folder to write the pages into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print a commented example configuration.
    Example,
    /// Validate a configuration file (errors as FILE:LINE:COLUMN) and the secret files it
    /// names (regular files, readable by their owner only).
    Check { file: PathBuf },
}

#[derive(Debug, Subcommand)]
enum ScepCommand {
    /// Enroll once by hand with a `[[scep]]` server: a new RSA key and a certificate for
    /// CN (and --dns names), written only when the server issued it. With --renew-cert and
    /// --renew-key, a RenewalReq signed with the current certificate where the server offers
    /// renewal. Exit codes: 0 issued, 1 the server refused or could not be used (the cause
    /// in words, e.g. its failInfo), 2 configuration or file error.
    Enroll {
        /// The configuration file (TOML) holding the `[[scep]]` block.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The `[[scep]]` block's name.
        #[arg(long, value_name = "NAME")]
        server: String,
        /// The subject's common name.
        #[arg(long, value_name = "CN")]
        cn: String,
        /// A DNS name for the subjectAltName (repeatable).
        #[arg(long, value_name = "NAME")]
        dns: Vec<String>,
        /// Where the new key goes (PEM, 0600).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// Where the certificate goes (PEM, then the chain the server sent).
        #[arg(long, value_name = "FILE")]
        cert: PathBuf,
        /// The current certificate (PEM), to renew.
        #[arg(long, value_name = "FILE", requires = "renew_key")]
        renew_cert: Option<PathBuf>,
        /// The current certificate's key (PEM), to renew.
        #[arg(long, value_name = "FILE", requires = "renew_cert")]
        renew_key: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

fn main() -> ExitCode {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 64 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match cli.command {
        Command::Config(ConfigCommand::Example) => {
            print!("{}", config::EXAMPLE);
            ExitCode::SUCCESS
        }
        Command::Config(ConfigCommand::Check { file }) => config_check(&file),
        Command::Run { config, log_format } => run(config, log_format),
        Command::Man { out } => man(out.as_deref()),
        Command::Scep(ScepCommand::Enroll {
            config,
            server,
            cn,
            dns,
            key,
            cert,
            renew_cert,
            renew_key,
            json,
        }) => {
            let request = certctl_daemon::scep::EnrollRequest {
                cn,
                dns,
                key_out: key,
                cert_out: cert,
                renew: renew_cert.zip(renew_key),
            };
            scep_enroll(&config, &server, &request, json)
        }
    }
}

/// `certd scep enroll`.
fn scep_enroll(
    file: &Path,
    server: &str,
    request: &certctl_daemon::scep::EnrollRequest,
    json: bool,
) -> ExitCode {
    use certctl_daemon::scep::{enroll, AdminError};
    let c = match config::load(file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let Some(block) = c.scep.iter().find(|s| s.name == server) else {
        eprintln!(
            "certd: {} has no [[scep]] block named `{server}`",
            file.display()
        );
        return ExitCode::from(2);
    };
    match enroll(block, request) {
        Ok(report) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
                println!(
                    "issued by `{}` ({}): {} serial {}, valid until {}\n  certificate {}\n  key {}",
                    report.server,
                    report.request,
                    report.subject,
                    report.serial,
                    report.not_after,
                    report.cert.display(),
                    report.key.display()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e @ (AdminError::Scep(_) | AdminError::Pending { .. })) => {
            eprintln!("certd: {e}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("certd: {e}");
            ExitCode::from(2)
        }
    }
}

/// `certd man [--out DIR]`.
fn man(out: Option<&Path>) -> ExitCode {
    use certctl_daemon::manpages;
    use clap::CommandFactory;
    let mut pages = manpages::section_1(Cli::command());
    pages.push(manpages::certd_toml());
    match out {
        None => {
            use std::io::Write;
            let _ = std::io::stdout().write_all(&pages[0].roff);
            ExitCode::SUCCESS
        }
        Some(dir) => match manpages::write_all(dir, &pages) {
            Ok(paths) => {
                for p in paths {
                    println!("{}", p.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("certd: {e}");
                ExitCode::from(2)
            }
        },
    }
}

/// `certd config check FILE`: the configuration, then every secret file it names (each one
/// that must not be used is an error; one that does not exist yet is a note).
fn config_check(file: &Path) -> ExitCode {
    let c = match config::load(file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let (bad, missing) = c.secret_file_problems();
    if !bad.is_empty() {
        for problem in &bad {
            eprintln!("{}: {problem}", file.display());
        }
        return ExitCode::from(2);
    }
    for m in &missing {
        println!("note: {m} does not exist (yet): certd checks it when it reads it");
    }
    // The policies' references into this file (`policy check DIR` checks the rest of them).
    if let Some(reminders) = &c.reminders {
        match certctl_daemon::policy::load_dir(&reminders.policies) {
            Ok(set) => {
                let unknown = certctl_daemon::renewal::unknown_scep_servers(&c, &set);
                if !unknown.is_empty() {
                    for problem in &unknown {
                        eprintln!("{problem}");
                    }
                    return ExitCode::from(2);
                }
            }
            Err(e) => println!("note: the policies were not checked: {e}"),
        }
    }
    println!(
        "{}: OK ({} sources, {} endpoints, store {})",
        file.display(),
        c.sources.len(),
        c.endpoints.len(),
        c.store.display()
    );
    ExitCode::SUCCESS
}

fn run(config_path: PathBuf, log_format: LogFormat) -> ExitCode {
    init_logging(log_format);
    let config = match config::load(&config_path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("certd cannot start: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("certd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(certctl_daemon::server::run(config_path, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("certd cannot run: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr: colours only on a terminal (a redirected log, or journald, gets plain
/// text; `NO_COLOR` turns them off on a terminal too), or one JSON object per line.
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("CERTD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
