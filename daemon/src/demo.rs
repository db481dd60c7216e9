//! Synthetic certificate fleets: the demo fleet behind `certctl demo` and the scan benchmark.
//!
//! This module owns generating certificates that look like a real fleet-management
//! platform's: a two-tier Contoso CA (root and issuing intermediate), an internet gateway,
//! IIS web sites (PEM and a password-protected PKCS#12), site servers and agents with
//! permanent (1 year) or ephemeral (6 hour) client certificates. Every certificate is really
//! generated and signed (rcgen; RSA keys come from OpenSSL), so `openssl verify` accepts the
//! currently valid ones.
//!
//! Validity dates are relative to a caller-given `now`, and [`FleetCounts`] records exactly how
//! many certificates were expired or expiring at that `now`, so a scan can be checked against
//! it. Agents' private keys are never written (they stay on the agents); the only private
//! key on disk is inside the IIS PFX, which, like its password file, is written with mode 0600.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use certctl_store::{Role, UnixTime};
use rayon::prelude::*;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
    SignatureAlgorithm, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384,
};
use serde::Serialize;
use time::OffsetDateTime;

use crate::duration::DAY_SECS;
use crate::files::atomic::{FileMode, Options};

const MINUTE: i64 = 60;
const HOUR: i64 = 3_600;
const DAY: i64 = DAY_SECS;

/// The DNS domain of the demo fleet.
pub const DEMO_DOMAIN: &str = "contoso.example";
/// The organisation named in every demo certificate's subject.
pub const DEMO_ORGANIZATION: &str = "Contoso";
/// "Expiring soon" windows used by [`ExpiryCounts`].
pub(crate) const WITHIN_7_DAYS: i64 = 7 * DAY;
/// The wider "expiring soon" window of [`ExpiryCounts`]: 30 days, in seconds.
pub(crate) const WITHIN_30_DAYS: i64 = 30 * DAY;

/// Validity of a permanent agent certificate.
pub const AGENT_PERMANENT_VALIDITY: i64 = 365 * DAY;
/// Validity of an ephemeral agent certificate.
pub const AGENT_EPHEMERAL_VALIDITY: i64 = 6 * HOUR;
/// Number of agents with a permanent certificate in the demo fleet.
pub const DEMO_PERMANENT_AGENTS: usize = 1_000;
/// Number of agents with an ephemeral certificate in the demo fleet.
pub const DEMO_EPHEMERAL_AGENTS: usize = 200;
/// How the permanent agents' expiry dates are spread (disjoint buckets, summing to
/// [`DEMO_PERMANENT_AGENTS`]): already expired, expiring within 7 days, within 7 to 30 days.
const PERMANENT_EXPIRED: usize = 6;
const PERMANENT_WITHIN_7: usize = 14;
const PERMANENT_WITHIN_30: usize = 35;
/// Ephemeral agents whose certificate already expired (a renewal stall).
const EPHEMERAL_EXPIRED: usize = 16;

/// Most files in one folder written by [`write_bench_files`].
pub const BENCH_FILES_PER_FOLDER: usize = 1_000;

/// Why generating a fleet failed.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// A file or folder of the fleet could not be created or written.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        /// The file or folder that failed.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// rcgen could not generate a key or sign a certificate.
    #[error("cannot generate {what}: {source}")]
    Rcgen {
        /// What was being generated (`the root CA`, a certificate's common name, ...).
        what: String,
        /// rcgen's error.
        #[source]
        source: rcgen::Error,
    },
    /// OpenSSL failed while making the RSA key or the PKCS#12 file.
    #[error("OpenSSL failed to {what}: {source}")]
    OpenSsl {
        /// The step that failed, as a verb phrase (`generate an RSA key`, ...).
        what: String,
        /// OpenSSL's error stack.
        #[source]
        source: openssl::error::ErrorStack,
    },
    /// A validity date (`now` plus or minus an offset, Unix seconds) is outside what a
    /// certificate can hold.
    #[error("time {0} (Unix seconds) cannot be put in a certificate")]
    TimeOutOfRange(UnixTime),
}

/// How many certificates are expired or expiring at the generator's `now`.
///
/// The windows are cumulative and match `Certificate::status(now, window)`:
/// `expiring_within_30_days` includes the `expiring_within_7_days` ones, and neither includes
/// expired certificates. Currently valid ephemeral certificates (6 hours) are counted as
/// expiring within 7 days, because they are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ExpiryCounts {
    /// Distinct certificates.
    pub total: usize,
    /// `not_after <= now`.
    pub expired: usize,
    /// `now < not_after <= now + 7 days`.
    pub expiring_within_7_days: usize,
    /// `now < not_after <= now + 30 days`.
    pub expiring_within_30_days: usize,
}

impl ExpiryCounts {
    fn record(&mut self, not_after: UnixTime, now: UnixTime) {
        self.total += 1;
        if not_after <= now {
            self.expired += 1;
        } else {
            if not_after <= now + WITHIN_7_DAYS {
                self.expiring_within_7_days += 1;
            }
            if not_after <= now + WITHIN_30_DAYS {
                self.expiring_within_30_days += 1;
            }
        }
    }

    fn merge(&mut self, other: &ExpiryCounts) {
        self.total += other.total;
        self.expired += other.expired;
        self.expiring_within_7_days += other.expiring_within_7_days;
        self.expiring_within_30_days += other.expiring_within_30_days;
    }

    /// Valid for more than 30 days.
    pub fn healthy(&self) -> usize {
        self.total - self.expired - self.expiring_within_30_days
    }
}

/// What the demo generator wrote, for checking a scan against it exactly.
///
/// Certificates are counted once each (by identity), although the issuing CA also appears in
/// the gateway's chain file and both CAs appear inside the PFX. None is "not yet valid".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FleetCounts {
    /// Distinct certificates by role; [`Role::Ca`] holds the root and the intermediate.
    /// Roles absent from the fleet (`other`) are absent from the map.
    pub by_role: BTreeMap<Role, ExpiryCounts>,
    /// The agents with a permanent certificate (part of `by_role[Agent]`).
    pub agents_permanent: ExpiryCounts,
    /// The agents with an ephemeral certificate (part of `by_role[Agent]`).
    pub agents_ephemeral: ExpiryCounts,
    /// Every distinct certificate.
    pub all: ExpiryCounts,
    /// Certificate files written (PEM and PFX; not the password file).
    pub files: usize,
    /// Certificates in those files, counting repeats (chains, PFX CA certificates).
    pub certificates_in_files: usize,
}

impl FleetCounts {
    /// The counts for one role (zero if the fleet has none).
    pub fn role(&self, role: Role) -> ExpiryCounts {
        self.by_role.get(&role).copied().unwrap_or_default()
    }

    fn record(&mut self, role: Role, not_after: UnixTime, now: UnixTime) {
        self.by_role.entry(role).or_default().record(not_after, now);
        self.all.record(not_after, now);
    }

    fn merge_agents(&mut self, agents: &ExpiryCounts) {
        self.by_role.entry(Role::Agent).or_default().merge(agents);
        self.all.merge(agents);
    }
}

/// The demo fleet on disk.
#[derive(Clone, Debug)]
pub struct DemoFleet {
    /// The folder the fleet was written to.
    pub root: PathBuf,
    /// Folders holding certificate files, with the role of their certificates. None is
    /// inside another, so they can be scanned recursively or not.
    pub folders: Vec<(PathBuf, Role)>,
    /// The root CA certificate (`ca/root.pem`): the trust anchor.
    pub root_ca: PathBuf,
    /// The issuing CA certificate (`ca/intermediate.pem`), signer of every leaf.
    pub intermediate_ca: PathBuf,
    /// The password of `iis/intranet.pfx` (one line, no newline; mode 0600).
    pub pfx_password_file: PathBuf,
    /// The `now` the validity dates are relative to.
    pub now: UnixTime,
    /// What was written, counted by role and expiry, for checking a scan against it exactly.
    pub counts: FleetCounts,
}

/// Writes the demo fleet under `dir` (created if missing) with validity dates relative to
/// `now` (Unix seconds):
///
/// - `ca/root.pem` (P-384, 20 years), `ca/intermediate.pem` (P-256, 10 years, signs the leaves);
/// - `gateway/gateway.pem`: `gw.contoso.example`, leaf + intermediate, expires in ~19 days;
/// - `iis/portal.pem` (RSA 2048, healthy) and `iis/intranet.pfx` (expires in ~4.5 days; its
///   password is in `pfx-password.txt`);
/// - `site-servers/site0{1,2,3}.pem`: healthy, expiring in ~25 days, expired;
/// - `agents/permanent/agent-NNNN.pem`: 1,000 one-year certificates, a few expired, some
///   expiring within 7 or 30 days;
/// - `agents/ephemeral/agent-NNNN.pem`: 200 six-hour certificates, 16 of them expired.
pub fn write_demo_fleet(dir: &Path, now: UnixTime) -> Result<DemoFleet, FleetError> {
    let mut counts = FleetCounts::default();
    let folder = |name: &str| -> Result<PathBuf, FleetError> {
        let path = dir.join(name);
        create_dir(&path)?;
        Ok(path)
    };
    let ca_dir = folder("ca")?;
    let gateway_dir = folder("gateway")?;
    let iis_dir = folder("iis")?;
    let site_dir = folder("site-servers")?;
    let permanent_dir = folder("agents/permanent")?;
    let ephemeral_dir = folder("agents/ephemeral")?;

    let (root, inter) = demo_cas(now)?;
    let root_ca = ca_dir.join("root.pem");
    let intermediate_ca = ca_dir.join("intermediate.pem");
    write_file(&root_ca, root.pem().as_bytes(), FileMode::Public)?;
    write_file(&intermediate_ca, inter.pem().as_bytes(), FileMode::Public)?;
    counts.record(Role::Ca, demo_root_not_after(now), now);
    counts.record(Role::Ca, demo_intermediate_not_after(now), now);
    counts.files += 2;
    counts.certificates_in_files += 2;

    // Agents, in parallel, alongside the RSA key generation (slow: 0.1 to 0.5 s).
    let (portal_key, agents) = rayon::join(rsa_key, || {
        write_agents(&inter, &permanent_dir, &ephemeral_dir, now)
    });
    let (permanent, ephemeral) = agents?;

    write_demo_gateway(&gateway_dir, &inter, now, &mut counts)?;
    write_demo_portal(&iis_dir, portal_key?, &inter, now, &mut counts)?;
    let pfx_password_file = dir.join("pfx-password.txt");
    write_demo_intranet_pfx(
        &iis_dir,
        &pfx_password_file,
        &root,
        &inter,
        now,
        &mut counts,
    )?;
    write_demo_site_servers(&site_dir, &inter, now, &mut counts)?;

    counts.merge_agents(&permanent);
    counts.merge_agents(&ephemeral);
    counts.agents_permanent = permanent;
    counts.agents_ephemeral = ephemeral;
    counts.files += permanent.total + ephemeral.total;
    counts.certificates_in_files += permanent.total + ephemeral.total;

    Ok(DemoFleet {
        root: dir.to_path_buf(),
        folders: vec![
            (ca_dir, Role::Ca),
            (gateway_dir, Role::Gateway),
            (iis_dir, Role::Iis),
            (site_dir, Role::SiteServer),
            (permanent_dir, Role::Agent),
            (ephemeral_dir, Role::Agent),
        ],
        root_ca,
        intermediate_ca,
        pfx_password_file,
        now,
        counts,
    })
}

/// The `not_after` of the demo root CA (20 years from 3 years ago).
fn demo_root_not_after(now: UnixTime) -> UnixTime {
    now - 3 * 365 * DAY + 20 * 365 * DAY
}

/// The `not_after` of the demo issuing CA (10 years from 2 years ago).
fn demo_intermediate_not_after(now: UnixTime) -> UnixTime {
    now - 2 * 365 * DAY + 10 * 365 * DAY
}

/// The demo CAs: a P-384 root and the P-256 issuing CA it signs.
fn demo_cas(
    now: UnixTime,
) -> Result<
    (
        CertifiedIssuer<'static, KeyPair>,
        CertifiedIssuer<'static, KeyPair>,
    ),
    FleetError,
> {
    let root = {
        let mut params = ca_params(
            "Contoso Root CA",
            now - 3 * 365 * DAY,
            demo_root_not_after(now),
            BasicConstraints::Constrained(1),
        )?;
        params.use_authority_key_identifier_extension = false;
        let key = ec_key(&PKCS_ECDSA_P384_SHA384)?;
        CertifiedIssuer::self_signed(params, key).map_err(rcgen_err("the root CA"))?
    };
    let inter = {
        let params = ca_params(
            "Contoso Issuing CA 1",
            now - 2 * 365 * DAY,
            demo_intermediate_not_after(now),
            BasicConstraints::Constrained(0),
        )?;
        let key = ec_key(&PKCS_ECDSA_P256_SHA256)?;
        CertifiedIssuer::signed_by(params, key, &root).map_err(rcgen_err("the issuing CA"))?
    };
    Ok((root, inter))
}

/// The internet gateway: a chain file, expiring in ~19 days.
fn write_demo_gateway(
    gateway_dir: &Path,
    inter: &CertifiedIssuer<'_, KeyPair>,
    now: UnixTime,
    counts: &mut FleetCounts,
) -> Result<(), FleetError> {
    let name = format!("gw.{DEMO_DOMAIN}");
    let not_after = now + 19 * DAY + 6 * HOUR;
    let params = leaf_params(
        &LeafSpec {
            cn: &name,
            sans: &[name.clone(), format!("gateway.{DEMO_DOMAIN}")],
            unit: "Gateways",
            not_before: not_after - 365 * DAY,
            not_after,
            server: true,
            client: false,
            rsa: false,
        },
        random_serial()?,
    )?;
    let key = ec_key(&PKCS_ECDSA_P256_SHA256)?;
    let cert = params.signed_by(&key, inter).map_err(rcgen_err(&name))?;
    let chain = format!("{}{}", cert.pem(), inter.pem());
    write_file(
        &gateway_dir.join("gateway.pem"),
        chain.as_bytes(),
        FileMode::Public,
    )?;
    counts.record(Role::Gateway, not_after, now);
    counts.files += 1;
    counts.certificates_in_files += 2;
    Ok(())
}

/// IIS: a healthy RSA site as PEM (its key is generated alongside the agents).
fn write_demo_portal(
    iis_dir: &Path,
    key: KeyPair,
    inter: &CertifiedIssuer<'_, KeyPair>,
    now: UnixTime,
    counts: &mut FleetCounts,
) -> Result<(), FleetError> {
    let name = format!("portal.{DEMO_DOMAIN}");
    let not_after = now + 240 * DAY;
    let params = leaf_params(
        &LeafSpec {
            cn: &name,
            sans: std::slice::from_ref(&name),
            unit: "Web",
            not_before: not_after - 365 * DAY,
            not_after,
            server: true,
            client: false,
            rsa: true,
        },
        random_serial()?,
    )?;
    let cert = params.signed_by(&key, inter).map_err(rcgen_err(&name))?;
    write_file(
        &iis_dir.join("portal.pem"),
        cert.pem().as_bytes(),
        FileMode::Public,
    )?;
    counts.record(Role::Iis, not_after, now);
    counts.files += 1;
    counts.certificates_in_files += 1;
    Ok(())
}

/// IIS: a PFX expiring in ~4.5 days, its password in `pfx_password_file`.
fn write_demo_intranet_pfx(
    iis_dir: &Path,
    pfx_password_file: &Path,
    root: &CertifiedIssuer<'_, KeyPair>,
    inter: &CertifiedIssuer<'_, KeyPair>,
    now: UnixTime,
    counts: &mut FleetCounts,
) -> Result<(), FleetError> {
    let name = format!("intranet.{DEMO_DOMAIN}");
    let not_after = now + 4 * DAY + 12 * HOUR;
    let params = leaf_params(
        &LeafSpec {
            cn: &name,
            sans: std::slice::from_ref(&name),
            unit: "Web",
            not_before: not_after - 365 * DAY,
            not_after,
            server: true,
            client: false,
            rsa: false,
        },
        random_serial()?,
    )?;
    let key = ec_key(&PKCS_ECDSA_P256_SHA256)?;
    let cert = params.signed_by(&key, inter).map_err(rcgen_err(&name))?;
    let password = random_password()?;
    let pfx = build_pfx(
        "intranet",
        &key.serialize_der(),
        cert.der(),
        &[inter.der(), root.der()],
        &password,
    )?;
    write_file(pfx_password_file, password.as_bytes(), FileMode::Private)?;
    write_file(&iis_dir.join("intranet.pfx"), &pfx, FileMode::Private)?;
    counts.record(Role::Iis, not_after, now);
    counts.files += 1;
    counts.certificates_in_files += 3;
    Ok(())
}

/// Site servers: healthy, expiring within 30 days, expired.
fn write_demo_site_servers(
    site_dir: &Path,
    inter: &CertifiedIssuer<'_, KeyPair>,
    now: UnixTime,
    counts: &mut FleetCounts,
) -> Result<(), FleetError> {
    for (n, not_after) in [
        (1, now + 300 * DAY),
        (2, now + 25 * DAY + 3 * HOUR),
        (3, now - 12 * DAY - 5 * HOUR),
    ] {
        let name = format!("site{n:02}.{DEMO_DOMAIN}");
        let params = leaf_params(
            &LeafSpec {
                cn: &name,
                sans: std::slice::from_ref(&name),
                unit: "Site Servers",
                not_before: not_after - 2 * 365 * DAY,
                not_after,
                server: true,
                client: true,
                rsa: false,
            },
            random_serial()?,
        )?;
        let key = ec_key(&PKCS_ECDSA_P256_SHA256)?;
        let cert = params.signed_by(&key, inter).map_err(rcgen_err(&name))?;
        write_file(
            &site_dir.join(format!("site{n:02}.pem")),
            cert.pem().as_bytes(),
            FileMode::Public,
        )?;
        counts.record(Role::SiteServer, not_after, now);
        counts.files += 1;
        counts.certificates_in_files += 1;
    }
    Ok(())
}

/// Writes `n` PEM files of one leaf certificate each under `dir`, in subfolders
/// `NNNNN/` of at most [`BENCH_FILES_PER_FOLDER`] files, for the scan benchmark. Each leaf
/// has its own P-256 key and is signed by an in-memory CA that is not written. Expiry dates
/// are spread from ~36 days ago to ~2 years ahead (about 5% expired). Returns the number of
/// files written (`n`).
pub fn write_bench_files(dir: &Path, n: usize, now: UnixTime) -> Result<usize, FleetError> {
    let ca = {
        let params = ca_params(
            "Bench Issuing CA",
            now - 5 * 365 * DAY,
            now + 10 * 365 * DAY,
            BasicConstraints::Constrained(0),
        )?;
        let key = ec_key(&PKCS_ECDSA_P256_SHA256)?;
        CertifiedIssuer::self_signed(params, key).map_err(rcgen_err("the bench CA"))?
    };
    let folders: Vec<PathBuf> = (0..n.div_ceil(BENCH_FILES_PER_FOLDER))
        .map(|f| dir.join(format!("{f:05}")))
        .collect();
    for folder in &folders {
        create_dir(folder)?;
    }
    (0..n).into_par_iter().try_for_each(|i| {
        let h = mix(i as u64);
        // Expiry in [-36 days, +730 days); issued up to ~1 year before now or expiry.
        let not_after = now - 36 * DAY + (h % (766 * DAY as u64)) as i64;
        let not_before = not_after.min(now) - 90 * DAY - ((h >> 32) % 275) as i64 * DAY;
        let name = format!("host-{i:07}.bench.example");
        let params = leaf_params(
            &LeafSpec {
                cn: &name,
                sans: std::slice::from_ref(&name),
                unit: "Bench",
                not_before,
                not_after,
                server: true,
                client: true,
                rsa: false,
            },
            sequential_serial(i as u64),
        )?;
        let key = ec_key(&PKCS_ECDSA_P256_SHA256)?;
        let cert = params.signed_by(&key, &ca).map_err(rcgen_err(&name))?;
        let path = folders[i / BENCH_FILES_PER_FOLDER].join(format!("host-{i:07}.pem"));
        write_file(&path, cert.pem().as_bytes(), FileMode::Public)
    })?;
    Ok(n)
}

/// Seconds from `now` to the expiry of permanent agent `i` (0-based). The agents are
/// permuted so the expired and expiring ones are scattered over the numbering.
fn permanent_agent_expiry(i: usize) -> i64 {
    // 7919 is prime and coprime with 1000: a permutation of 0..1000.
    let r = ((i * 7919) % DEMO_PERMANENT_AGENTS) as i64;
    let (expired, within_7, within_30) = (
        PERMANENT_EXPIRED as i64,
        (PERMANENT_EXPIRED + PERMANENT_WITHIN_7) as i64,
        (PERMANENT_EXPIRED + PERMANENT_WITHIN_7 + PERMANENT_WITHIN_30) as i64,
    );
    if r < expired {
        // Expired 2 hours to ~16 days ago.
        -(2 * HOUR + r * 3 * DAY)
    } else if r < within_7 {
        // 3 hours to ~6.1 days ahead.
        3 * HOUR + (r - expired) * 11 * HOUR
    } else if r < within_30 {
        // 8 to ~27.8 days ahead.
        8 * DAY + (r - within_7) * 14 * HOUR
    } else {
        // 31 days to ~1 year ahead.
        let later = DEMO_PERMANENT_AGENTS as i64 - within_30;
        31 * DAY + (r - within_30) * (333 * DAY / later)
    }
}

/// Seconds from `now` to the expiry of ephemeral agent `i` (0-based).
fn ephemeral_agent_expiry(i: usize) -> i64 {
    // 37 is coprime with 200: a permutation of 0..200.
    let r = ((i * 37) % DEMO_EPHEMERAL_AGENTS) as i64;
    let expired = EPHEMERAL_EXPIRED as i64;
    if r < expired {
        // The renewal stalled: expired 30 minutes to ~45 hours ago.
        -(30 * MINUTE + r * 3 * HOUR)
    } else {
        // Renewed on schedule: expires 10 minutes to ~5h50 ahead.
        let valid = DEMO_EPHEMERAL_AGENTS as i64 - expired;
        10 * MINUTE + (r - expired) * ((5 * HOUR + 40 * MINUTE) / valid)
    }
}

/// Writes the agents in parallel: permanent `agent-0001` ..= `agent-1000`, then ephemeral
/// `agent-1001` ..= `agent-1200`. Returns their counts (permanent, ephemeral).
fn write_agents(
    inter: &CertifiedIssuer<'_, KeyPair>,
    permanent_dir: &Path,
    ephemeral_dir: &Path,
    now: UnixTime,
) -> Result<(ExpiryCounts, ExpiryCounts), FleetError> {
    let write_all =
        |count: usize, first: usize, folder: &Path, validity: i64, expiry: fn(usize) -> i64| {
            (0..count)
                .into_par_iter()
                .map(|i| write_agent(inter, folder, first + i, validity, now + expiry(i)))
                .try_fold(ExpiryCounts::default, |mut c, not_after| {
                    c.record(not_after?, now);
                    Ok::<_, FleetError>(c)
                })
                .try_reduce(ExpiryCounts::default, |mut a, b| {
                    a.merge(&b);
                    Ok(a)
                })
        };
    let permanent = write_all(
        DEMO_PERMANENT_AGENTS,
        1,
        permanent_dir,
        AGENT_PERMANENT_VALIDITY,
        permanent_agent_expiry,
    )?;
    let ephemeral = write_all(
        DEMO_EPHEMERAL_AGENTS,
        DEMO_PERMANENT_AGENTS + 1,
        ephemeral_dir,
        AGENT_EPHEMERAL_VALIDITY,
        ephemeral_agent_expiry,
    )?;
    Ok((permanent, ephemeral))
}

/// Generates and writes `agent-NNNN.pem` (certificate only); returns its `not_after`.
fn write_agent(
    issuer: &CertifiedIssuer<'_, KeyPair>,
    folder: &Path,
    number: usize,
    validity: i64,
    not_after: UnixTime,
) -> Result<UnixTime, FleetError> {
    let name = format!("agent-{number:04}.{DEMO_DOMAIN}");
    let params = leaf_params(
        &LeafSpec {
            cn: &name,
            sans: std::slice::from_ref(&name),
            unit: "Agents",
            not_before: not_after - validity,
            not_after,
            server: false,
            client: true,
            rsa: false,
        },
        random_serial()?,
    )?;
    let key = ec_key(&PKCS_ECDSA_P256_SHA256)?;
    let cert = params.signed_by(&key, issuer).map_err(rcgen_err(&name))?;
    write_file(
        &folder.join(format!("agent-{number:04}.pem")),
        cert.pem().as_bytes(),
        FileMode::Public,
    )?;
    Ok(not_after)
}

/// What varies between leaf certificates.
struct LeafSpec<'a> {
    cn: &'a str,
    sans: &'a [String],
    unit: &'a str,
    not_before: UnixTime,
    not_after: UnixTime,
    server: bool,
    client: bool,
    /// RSA keys also get keyEncipherment.
    rsa: bool,
}

fn leaf_params(spec: &LeafSpec<'_>, serial: SerialNumber) -> Result<CertificateParams, FleetError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = subject(spec.cn, Some(spec.unit));
    params.subject_alt_names = spec
        .sans
        .iter()
        .map(|s| {
            s.clone()
                .try_into()
                .map(SanType::DnsName)
                .map_err(rcgen_err(s))
        })
        .collect::<Result<_, _>>()?;
    params.not_before = to_datetime(spec.not_before)?;
    params.not_after = to_datetime(spec.not_after)?;
    params.serial_number = Some(serial);
    // ExplicitNoCa writes basicConstraints CA:FALSE and the subject key identifier.
    params.is_ca = IsCa::ExplicitNoCa;
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    if spec.rsa {
        params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
    }
    if spec.server {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ServerAuth);
    }
    if spec.client {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ClientAuth);
    }
    Ok(params)
}

fn ca_params(
    cn: &str,
    not_before: UnixTime,
    not_after: UnixTime,
    constraints: BasicConstraints,
) -> Result<CertificateParams, FleetError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = subject(cn, None);
    params.not_before = to_datetime(not_before)?;
    params.not_after = to_datetime(not_after)?;
    params.serial_number = Some(random_serial()?);
    params.is_ca = IsCa::Ca(constraints);
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

fn subject(cn: &str, unit: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, DEMO_ORGANIZATION);
    if let Some(unit) = unit {
        dn.push(DnType::OrganizationalUnitName, unit);
    }
    dn.push(DnType::CommonName, cn);
    dn
}

fn to_datetime(t: UnixTime) -> Result<OffsetDateTime, FleetError> {
    OffsetDateTime::from_unix_timestamp(t).map_err(|_| FleetError::TimeOutOfRange(t))
}

fn ec_key(alg: &'static SignatureAlgorithm) -> Result<KeyPair, FleetError> {
    KeyPair::generate_for(alg).map_err(rcgen_err("an ECDSA key"))
}

/// An RSA 2048 key: ring cannot generate RSA keys, so OpenSSL does and rcgen loads it.
fn rsa_key() -> Result<KeyPair, FleetError> {
    let rsa = openssl::rsa::Rsa::generate(2048).map_err(openssl_err("generate an RSA key"))?;
    let pkey = openssl::pkey::PKey::from_rsa(rsa).map_err(openssl_err("wrap an RSA key"))?;
    let pem = pkey
        .private_key_to_pem_pkcs8()
        .map_err(openssl_err("export an RSA key"))?;
    let pem = String::from_utf8_lossy(&pem).into_owned();
    KeyPair::from_pem(&pem).map_err(rcgen_err("an RSA key pair"))
}

/// A PKCS#12 archive (OpenSSL defaults: AES-256-CBC, PBKDF2, SHA-256 MAC).
fn build_pfx(
    friendly_name: &str,
    pkcs8_key_der: &[u8],
    cert_der: &[u8],
    ca_ders: &[&[u8]],
    password: &str,
) -> Result<Vec<u8>, FleetError> {
    use openssl::x509::X509;
    let pkey = openssl::pkey::PKey::private_key_from_pkcs8(pkcs8_key_der)
        .map_err(openssl_err("load the PFX key"))?;
    let cert = X509::from_der(cert_der).map_err(openssl_err("load the PFX certificate"))?;
    let mut cas = openssl::stack::Stack::new().map_err(openssl_err("allocate a stack"))?;
    for der in ca_ders {
        let ca = X509::from_der(der).map_err(openssl_err("load a PFX CA certificate"))?;
        cas.push(ca).map_err(openssl_err("collect the PFX chain"))?;
    }
    openssl::pkcs12::Pkcs12::builder()
        .name(friendly_name)
        .pkey(&pkey)
        .cert(&cert)
        .ca(cas)
        .build2(password)
        .and_then(|p| p.to_der())
        .map_err(openssl_err("build the PFX"))
}

/// A random positive 16-byte serial number.
fn random_serial() -> Result<SerialNumber, FleetError> {
    let mut bytes = [0u8; 16];
    openssl::rand::rand_bytes(&mut bytes).map_err(openssl_err("draw a serial number"))?;
    bytes[0] = (bytes[0] & 0x7f) | 0x10;
    Ok(SerialNumber::from_slice(&bytes))
}

/// A unique, positive serial number from a counter (cheap, for the bench).
fn sequential_serial(i: u64) -> SerialNumber {
    let mut bytes = [0u8; 9];
    bytes[0] = 0x10;
    bytes[1..].copy_from_slice(&i.to_be_bytes());
    SerialNumber::from_slice(&bytes)
}

/// 20 random alphanumeric characters.
fn random_password() -> Result<String, FleetError> {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut bytes = [0u8; 20];
    openssl::rand::rand_bytes(&mut bytes).map_err(openssl_err("draw a password"))?;
    Ok(bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect())
}

/// A cheap, well-spread hash of an index (splitmix64 finaliser).
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn create_dir(path: &Path) -> Result<(), FleetError> {
    fs::create_dir_all(path).map_err(|source| FleetError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes a generated file through the one symlink-safe writer (keys and passwords
/// [`FileMode::Private`], the rest [`FileMode::Public`]). Not fsynced: a crash only loses a
/// fixture.
fn write_file(path: &Path, contents: &[u8], mode: FileMode) -> Result<(), FleetError> {
    Options::new(mode)
        .not_durable()
        .write(path, contents)
        .map_err(|e| FleetError::Io {
            path: e.path,
            source: e.source,
        })
}

fn rcgen_err(what: &str) -> impl Fn(rcgen::Error) -> FleetError + '_ {
    move |source| FleetError::Rcgen {
        what: what.to_string(),
        source,
    }
}

fn openssl_err(what: &'static str) -> impl Fn(openssl::error::ErrorStack) -> FleetError {
    move |source| FleetError::OpenSsl {
        what: what.to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::process::Command;

    use sha2::{Digest, Sha256};
    use x509_parser::prelude::*;

    /// 2026-03-01T12:00:00Z.
    const NOW: UnixTime = 1_772_366_400;

    fn pem_blocks(path: &Path) -> Vec<Vec<u8>> {
        let data = fs::read(path).unwrap();
        Pem::iter_from_buffer(&data)
            .map(|p| p.unwrap())
            .filter(|p| p.label == "CERTIFICATE")
            .map(|p| p.contents)
            .collect()
    }

    fn openssl(args: &[&str]) -> (bool, String) {
        let out = Command::new("openssl").args(args).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    fn verify(fleet: &DemoFleet, leaf: &Path) -> (bool, String) {
        let at = NOW.to_string();
        openssl(&[
            "verify",
            "-attime",
            &at,
            "-CAfile",
            fleet.root_ca.to_str().unwrap(),
            "-untrusted",
            fleet.intermediate_ca.to_str().unwrap(),
            leaf.to_str().unwrap(),
        ])
    }

    fn path_str(p: &Path) -> &str {
        p.to_str().unwrap()
    }

    #[test]
    fn demo_fleet_verifies_with_openssl() {
        let tmp = tempfile::tempdir().unwrap();
        let fleet = write_demo_fleet(tmp.path(), NOW).unwrap();
        let root = &fleet.root;

        // `-attime` pins the check to NOW, whatever the wall clock says.
        for leaf in [
            "gateway/gateway.pem",
            "iis/portal.pem",
            "site-servers/site01.pem",
            "site-servers/site02.pem",
            "agents/permanent/agent-0500.pem",
        ] {
            let (ok, text) = verify(&fleet, &root.join(leaf));
            assert!(ok, "{leaf}: {text}");
        }
        // A currently valid and a stalled ephemeral agent.
        let mut valid = 0;
        let mut expired = 0;
        for i in 0..DEMO_EPHEMERAL_AGENTS {
            let path = root.join(format!(
                "agents/ephemeral/agent-{:04}.pem",
                DEMO_PERMANENT_AGENTS + i + 1
            ));
            let expiry = ephemeral_agent_expiry(i);
            if (expiry > 0 && valid == 0) || (expiry <= 0 && expired == 0) {
                let (ok, text) = verify(&fleet, &path);
                assert_eq!(ok, expiry > 0, "{}: {text}", path.display());
                if expiry > 0 {
                    valid += 1;
                } else {
                    assert!(text.contains("expired"), "{text}");
                    expired += 1;
                }
            }
        }
        assert_eq!((valid, expired), (1, 1));
        // The expired site server is rejected for that reason.
        let (ok, text) = verify(&fleet, &root.join("site-servers/site03.pem"));
        assert!(!ok && text.contains("expired"), "{text}");

        // The PFX opens with the password file and holds the leaf and both CAs.
        let pfx = root.join("iis/intranet.pfx");
        let pass = format!("file:{}", path_str(&fleet.pfx_password_file));
        let (ok, text) = openssl(&["pkcs12", "-in", path_str(&pfx), "-passin", &pass, "-nokeys"]);
        assert!(ok, "{text}");
        assert!(text.contains("CN = intranet.contoso.example"), "{text}");
        assert_eq!(text.matches("BEGIN CERTIFICATE").count(), 3, "{text}");
        let extracted = tmp.path().join("intranet-leaf.pem");
        let (ok, text) = openssl(&[
            "pkcs12",
            "-in",
            path_str(&pfx),
            "-passin",
            &pass,
            "-nokeys",
            "-clcerts",
            "-out",
            path_str(&extracted),
        ]);
        assert!(ok, "{text}");
        let (ok, text) = verify(&fleet, &extracted);
        assert!(ok, "intranet: {text}");
        // The key in the PFX belongs to the certificate.
        let password = fs::read_to_string(&fleet.pfx_password_file).unwrap();
        let parsed = openssl::pkcs12::Pkcs12::from_der(&fs::read(&pfx).unwrap())
            .unwrap()
            .parse2(&password)
            .unwrap();
        let (key, cert) = (parsed.pkey.unwrap(), parsed.cert.unwrap());
        assert!(cert.public_key().unwrap().public_eq(&key));

        // RSA where promised.
        let (ok, text) = openssl(&[
            "x509",
            "-in",
            path_str(&root.join("iis/portal.pem")),
            "-noout",
            "-text",
        ]);
        assert!(ok && text.contains("Public-Key: (2048 bit)") && text.contains("rsaEncryption"));
    }

    #[test]
    fn demo_fleet_counts_match_the_files() {
        let tmp = tempfile::tempdir().unwrap();
        let fleet = write_demo_fleet(tmp.path(), NOW).unwrap();
        let c = &fleet.counts;

        // Recount independently from the files: distinct certificates, role by folder (CAs
        // found in a leaf's chain count as CAs).
        let mut seen = HashSet::new();
        let mut serials = HashSet::new();
        let mut recount = FleetCounts::default();
        let mut permanent = ExpiryCounts::default();
        let mut ephemeral = ExpiryCounts::default();
        for (folder, role) in &fleet.folders {
            for entry in fs::read_dir(folder).unwrap() {
                let path = entry.unwrap().path();
                recount.files += 1;
                let ders = if path.extension().is_some_and(|e| e == "pfx") {
                    let password = fs::read_to_string(&fleet.pfx_password_file).unwrap();
                    let p = openssl::pkcs12::Pkcs12::from_der(&fs::read(&path).unwrap())
                        .unwrap()
                        .parse2(&password)
                        .unwrap();
                    let mut ders = vec![p.cert.unwrap().to_der().unwrap()];
                    ders.extend(p.ca.unwrap().iter().map(|c| c.to_der().unwrap()));
                    ders
                } else {
                    let text = fs::read_to_string(&path).unwrap();
                    assert!(!text.contains("PRIVATE KEY"), "{}", path.display());
                    pem_blocks(&path)
                };
                for der in ders {
                    recount.certificates_in_files += 1;
                    if !seen.insert(Sha256::digest(&der)) {
                        continue;
                    }
                    let (_, x509) = X509Certificate::from_der(&der).unwrap();
                    assert!(serials.insert(x509.raw_serial().to_vec()));
                    let not_after = x509.validity().not_after.timestamp();
                    let validity = not_after - x509.validity().not_before.timestamp();
                    let role = if x509.is_ca() { Role::Ca } else { *role };
                    recount.record(role, not_after, NOW);
                    if role == Role::Agent {
                        if folder.ends_with("ephemeral") {
                            assert_eq!(validity, AGENT_EPHEMERAL_VALIDITY);
                            ephemeral.record(not_after, NOW);
                        } else {
                            assert_eq!(validity, AGENT_PERMANENT_VALIDITY);
                            permanent.record(not_after, NOW);
                        }
                    }
                }
            }
        }
        recount.agents_permanent = permanent;
        recount.agents_ephemeral = ephemeral;
        assert_eq!(&recount, c);

        // And the numbers are the ones promised.
        assert_eq!(c.files, 2 + 1 + 2 + 3 + 1_000 + 200);
        assert_eq!(c.all.total, 2 + 1 + 2 + 3 + 1_000 + 200);
        assert_eq!(
            c.role(Role::Ca),
            ExpiryCounts {
                total: 2,
                ..Default::default()
            }
        );
        let one = |expired, w7, w30| ExpiryCounts {
            total: 1,
            expired,
            expiring_within_7_days: w7,
            expiring_within_30_days: w30,
        };
        assert_eq!(c.role(Role::Gateway), one(0, 0, 1));
        assert_eq!(
            c.role(Role::Iis),
            ExpiryCounts {
                total: 2,
                expired: 0,
                expiring_within_7_days: 1,
                expiring_within_30_days: 1
            }
        );
        assert_eq!(
            c.role(Role::SiteServer),
            ExpiryCounts {
                total: 3,
                expired: 1,
                expiring_within_7_days: 0,
                expiring_within_30_days: 1
            }
        );
        assert_eq!(
            c.agents_permanent,
            ExpiryCounts {
                total: 1_000,
                expired: PERMANENT_EXPIRED,
                expiring_within_7_days: PERMANENT_WITHIN_7,
                expiring_within_30_days: PERMANENT_WITHIN_7 + PERMANENT_WITHIN_30,
            }
        );
        assert_eq!(
            c.agents_ephemeral,
            ExpiryCounts {
                total: 200,
                expired: EPHEMERAL_EXPIRED,
                expiring_within_7_days: 200 - EPHEMERAL_EXPIRED,
                expiring_within_30_days: 200 - EPHEMERAL_EXPIRED,
            }
        );
        assert_eq!(c.role(Role::Other), ExpiryCounts::default());

        // Secrets are private.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for p in [
                fleet.pfx_password_file.clone(),
                fleet.root.join("iis/intranet.pfx"),
            ] {
                let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{}", p.display());
            }
        }
    }

    #[test]
    fn bench_files_fill_folders_of_at_most_1000() {
        let tmp = tempfile::tempdir().unwrap();
        let n = 2_345;
        assert_eq!(write_bench_files(tmp.path(), n, NOW).unwrap(), n);
        let mut total = 0;
        let mut folders = 0;
        let mut expired = 0;
        let mut names = HashSet::new();
        for folder in fs::read_dir(tmp.path()).unwrap() {
            let folder = folder.unwrap().path();
            assert!(folder.is_dir());
            folders += 1;
            let files: Vec<_> = fs::read_dir(&folder)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            assert!(files.len() <= BENCH_FILES_PER_FOLDER);
            total += files.len();
            for file in files.iter().step_by(7) {
                let ders = pem_blocks(file);
                assert_eq!(ders.len(), 1);
                let (_, x509) = X509Certificate::from_der(&ders[0]).unwrap();
                assert!(!x509.is_ca());
                assert!(names.insert(x509.subject().to_string()));
                let v = x509.validity();
                assert!(v.not_before.timestamp() < v.not_after.timestamp());
                assert!(v.not_after.timestamp() < NOW + 731 * DAY);
                if v.not_after.timestamp() <= NOW {
                    expired += 1;
                }
            }
        }
        assert_eq!(total, n);
        assert_eq!(folders, 3);
        assert!(expired > 0, "some bench certificates are expired");

        let empty = tempfile::tempdir().unwrap();
        assert_eq!(write_bench_files(empty.path(), 0, NOW).unwrap(), 0);
        assert_eq!(fs::read_dir(empty.path()).unwrap().count(), 0);
    }

    /// Release timings: `cargo test --release -p certctl-daemon --lib fleet::tests::timings
    /// -- --ignored --nocapture` (FLEET_BENCH_N sets the bench size, default 200,000).
    #[test]
    #[ignore]
    fn timings() {
        let tmp = tempfile::tempdir().unwrap();
        let start = std::time::Instant::now();
        write_demo_fleet(&tmp.path().join("demo"), certctl_store::now()).unwrap();
        println!("demo fleet: {:?}", start.elapsed());
        let n = std::env::var("FLEET_BENCH_N").map_or(200_000, |v| v.parse().unwrap());
        let start = std::time::Instant::now();
        write_bench_files(&tmp.path().join("bench"), n, certctl_store::now()).unwrap();
        println!("{n} bench files: {:?}", start.elapsed());
    }

    #[test]
    fn io_errors_name_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        let blocker = tmp.path().join("file");
        fs::write(&blocker, b"x").unwrap();
        let err = write_demo_fleet(&blocker, NOW).unwrap_err();
        assert!(matches!(err, FleetError::Io { .. }));
        assert!(err.to_string().contains(path_str(&blocker)), "{err}");
    }
}
