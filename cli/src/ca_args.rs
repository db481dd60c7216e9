//! clap definitions of the compromise-response commands: `ca`, `issue`, `revoke`,
//! `regenerate`, `workflows`, `history` (kept apart from `args.rs` to keep that file small).

use std::path::PathBuf;

use certctl_daemon::Duration;
use certctl_store::Role;
use clap::{Args, Subcommand};

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
}

/// Secrets for a managed CA's key.
#[derive(Debug, Args)]
pub struct PassphraseArgs {
    /// File holding the CA key passphrase [else $CERTCTL_CA_PASSPHRASE]: needed to use an
    /// encrypted CA key; at `ca init`, the key is encrypted with it (without one, `ca init`
    /// stores the key unencrypted, 0600).
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CaArgs {
    #[command(subcommand)]
    pub command: CaCommand,
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create a CA (a root, or an intermediate signed by --parent-cert/--parent-key).
    Init(CaInitArgs),
    /// The managed CAs.
    List(CaListArgs),
    /// Write a CA certificate (PEM) for relying parties.
    Export(CaExportArgs),
    /// Sign a fresh CRL (published to the CA's CRL paths) and write a copy.
    Crl(CaCrlArgs),
}

#[derive(Debug, Args)]
pub struct CaInitArgs {
    /// The CA's name in certctl (letters, digits, `.`, `_`, `-`).
    #[arg(long)]
    pub name: String,
    /// Key type: ec-p256, ec-p384, rsa-2048, rsa-3072, rsa-4096, ed25519.
    #[arg(long, default_value = "ec-p256", value_name = "TYPE")]
    pub key: String,
    /// Validity [default: 3650d for a root; up to the parent's expiry for an intermediate].
    #[arg(long, value_name = "DUR")]
    pub validity: Option<Duration>,
    /// Subject CN [default: the name].
    #[arg(long, value_name = "TEXT")]
    pub cn: Option<String>,
    /// Subject O.
    #[arg(long, value_name = "TEXT")]
    pub org: Option<String>,
    /// PEM file of the parent CA certificate (its chain may follow it): makes an intermediate.
    #[arg(long, value_name = "PEM", requires = "parent_key")]
    pub parent_cert: Option<PathBuf>,
    /// PEM file of the parent CA's private key (encrypted: its passphrase from
    /// --parent-passphrase-file, else the new CA's passphrase).
    #[arg(long, value_name = "PEM", requires = "parent_cert")]
    pub parent_key: Option<PathBuf>,
    /// File holding the parent key's passphrase, when it differs from the new CA's.
    #[arg(long, value_name = "FILE", requires = "parent_key")]
    pub parent_passphrase_file: Option<PathBuf>,
    /// Also write each new CRL here (`.der`/`.crl`: DER, else PEM). Repeatable.
    #[arg(long, value_name = "FILE")]
    pub crl_out: Vec<PathBuf>,
    /// CRL distribution point URL to put into the certificates this CA issues. Repeatable.
    #[arg(long, value_name = "URL")]
    pub crl_url: Vec<String>,
    /// nextUpdate of the CRLs, from their thisUpdate.
    #[arg(long, value_name = "DUR", default_value = "7d")]
    pub crl_validity: Duration,
    #[command(flatten)]
    pub passphrase: PassphraseArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CaListArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CaExportArgs {
    /// The managed CA.
    pub name: String,
    /// Where to write the certificate (PEM).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct CaCrlArgs {
    /// The managed CA.
    pub name: String,
    /// Also write a copy here (the CRL is always published to the CA's CRL paths).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Write the copy as DER instead of PEM.
    #[arg(long)]
    pub der: bool,
    #[command(flatten)]
    pub passphrase: PassphraseArgs,
}

#[derive(Debug, Args)]
pub struct IssueArgs {
    /// The managed CA that signs.
    #[arg(long, value_name = "NAME")]
    pub ca: String,
    /// Subject common name; also the file names (DIR/CN.pem, ...).
    #[arg(long, value_name = "CN")]
    pub cn: String,
    /// Subject alternative names (DNS name, IP, e-mail, URI) [default: the CN]. Repeatable.
    #[arg(long, value_name = "NAME")]
    pub san: Vec<String>,
    /// Role recorded in the inventory (iis with --pfx-password-file also writes CN.pfx).
    #[arg(long, value_parser = parse_role)]
    pub role: Role,
    /// Validity.
    #[arg(long, value_name = "DUR", default_value = "365d")]
    pub validity: Duration,
    /// Key type: ec-p256, ec-p384, rsa-2048, rsa-3072, rsa-4096, ed25519.
    #[arg(long, default_value = "ec-p256", value_name = "TYPE")]
    pub key: String,
    /// Folder for the files.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// File holding the PFX password [else $CERTCTL_PFX_PASSWORD].
    #[arg(long, value_name = "FILE")]
    pub pfx_password_file: Option<PathBuf>,
    /// Write the PFX with 3DES and a SHA-1 MAC, for Windows Server 2016 and older (IIS)
    /// [default: AES-256 with PBKDF2 and a SHA-256 MAC].
    #[arg(long)]
    pub pfx_legacy: bool,
    /// Overwrite existing files.
    #[arg(long)]
    pub yes: bool,
    #[command(flatten)]
    pub passphrase: PassphraseArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The certificate: fingerprint prefix (≥ 8 hex characters) or exact subject CN / SAN.
    pub id: Option<String>,
    /// Why (RFC 5280): key-compromise, ca-compromise, affiliation-changed, superseded,
    /// cessation-of-operation, certificate-hold, privilege-withdrawn, unspecified.
    #[arg(long, value_name = "REASON")]
    pub reason: String,
    /// Every certificate with this key (SPKI SHA-256, as `show` prints it).
    #[arg(long, value_name = "HASH")]
    pub spki: Option<String>,
    /// Every certificate issued by this CA certificate (ID as for `show`).
    #[arg(long, value_name = "ID")]
    pub issuer: Option<String>,
    /// Every certificate for the key in FILE (private key, public key or certificate).
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Only list what would be revoked, with where each certificate is deployed.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask (required when stdin is not a terminal).
    #[arg(long)]
    pub yes: bool,
    /// Do not re-probe the TLS endpoints that served a revoked certificate.
    #[arg(long)]
    pub no_probe: bool,
    #[command(flatten)]
    pub passphrase: PassphraseArgs,
    /// List every certificate even when there are many (above 20, a summary per CA and per
    /// deployment folder is printed instead).
    #[arg(long)]
    pub verbose: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RegenerateArgs {
    /// The certificate to replace (fingerprint prefix or exact name).
    pub id: String,
    /// Revoke the old certificate (reason superseded) once the new one is written.
    #[arg(long)]
    pub revoke_old: bool,
    /// Write the new certificate and key over the files where the old one was found
    /// (atomically; the old files are kept as FILE.bak).
    #[arg(long)]
    pub deploy: bool,
    /// Key type of the new key [default: the old one's, made stronger if the policy in
    /// --policies demands it].
    #[arg(long, value_name = "TYPE")]
    pub key: Option<String>,
    /// Policies folder whose key rules (min_rsa_bits, allowed_curves) the new key must meet.
    #[arg(long, value_name = "DIR")]
    pub policies: Option<PathBuf>,
    /// Do not ask (required with --deploy or --revoke-old when stdin is not a terminal).
    #[arg(long)]
    pub yes: bool,
    /// File holding the password of PFX files to deploy to [else $CERTCTL_PFX_PASSWORD].
    #[arg(long, value_name = "FILE")]
    pub pfx_password_file: Option<PathBuf>,
    /// For a certificate whose CA certctl does not hold (a public CA, AD CS): write a CSR
    /// for a new key (same subject and SANs) to OUT and wait for the certificate
    /// (`certctl workflows complete ID --cert FILE`). The key stays in the workflow,
    /// encrypted with the passphrase (--passphrase-file or $CERTCTL_CA_PASSPHRASE) when one
    /// is given, else unencrypted (0600).
    #[arg(long, value_name = "OUT")]
    pub csr: Option<PathBuf>,
    #[command(flatten)]
    pub passphrase: PassphraseArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct WorkflowsArgs {
    #[command(subcommand)]
    pub command: Option<WorkflowsCommand>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum WorkflowsCommand {
    /// Finish an interrupted workflow from its last completed step.
    Resume(ResumeArgs),
    /// Give a `regenerate --csr` workflow the certificate its CA signed, and continue
    /// (deploy, reload, revoke-old).
    Complete(CompleteArgs),
}

#[derive(Debug, Args)]
pub struct CompleteArgs {
    /// The workflow id (see `certctl workflows`).
    pub id: u64,
    /// The certificate (PEM, optionally followed by its chain, or DER).
    #[arg(long, value_name = "FILE")]
    pub cert: PathBuf,
    /// File holding the password of PFX files to deploy to [else $CERTCTL_PFX_PASSWORD].
    #[arg(long, value_name = "FILE")]
    pub pfx_password_file: Option<PathBuf>,
    #[command(flatten)]
    pub passphrase: PassphraseArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// The workflow id (see `certctl workflows`).
    pub id: u64,
    /// File holding the password of PFX files to deploy to [else $CERTCTL_PFX_PASSWORD].
    #[arg(long, value_name = "FILE")]
    pub pfx_password_file: Option<PathBuf>,
    #[command(flatten)]
    pub passphrase: PassphraseArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The certificate (fingerprint prefix or exact name).
    #[arg(required_unless_present = "at", conflicts_with = "at")]
    pub id: Option<String>,
    /// Which certificates were valid at DATE (2026-11-25, 2026-11-25T17:00:00Z; UTC).
    /// Retention (certd's `[retention]`, `store prune`) removes ephemeral credentials 7 days
    /// after they expired and other leaves 90 days after they expired and were last seen
    /// (by default), unless revoked, CA, a managed CA's, or named by a workflow, an audit
    /// event or a snooze: for a DATE before that, only what was kept is listed (the count of
    /// an agent's removed renewals is in `show NAME`).
    #[arg(long, value_name = "DATE")]
    pub at: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CrlArgs {
    #[command(subcommand)]
    pub command: CrlCommand,
}

#[derive(Debug, Subcommand)]
pub enum CrlCommand {
    /// Fetch the CRLs named in inventoried certificates (http:// distribution points),
    /// check their signatures, cache them until nextUpdate, and mark listed certificates
    /// revoked (only those whose own issuer signed the CRL). The URLs come from scanned
    /// certificates: with --config FILE (or through certd), its `[crl] allow` list limits
    /// the hosts contacted, and `[crl] deadline` the whole pass.
    Fetch(CrlFetchArgs),
}

#[derive(Debug, Args)]
pub struct CrlFetchArgs {
    /// Give up on one URL after DUR.
    #[arg(long, value_name = "DUR", default_value = "10s")]
    pub timeout: Duration,
    /// Fetch even when the cached CRL is still current.
    #[arg(long)]
    pub force: bool,
    /// File holding the password of PFX files holding CA certificates [else
    /// $CERTCTL_PFX_PASSWORD].
    #[arg(long, value_name = "FILE")]
    pub pfx_password_file: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}
