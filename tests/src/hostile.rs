//! Hostile inputs for `certctl scan` (issue 7): a corpus built at test time.
//!
//! [`Corpus::build`] writes a folder of everything a scan can meet on a badly kept server —
//! damaged files, files that are not certificates at all, files that are not even files
//! (FIFO, socket, a symlink to `/dev/zero`), symlink loops, a 50 MB random file, a sparse
//! file above the size limit — next to good certificates that are unusual on purpose: 10,000
//! in one file, thousands of SANs, 40-byte and negative serials, GeneralizedTime dates
//! outside 1950–2049, an unknown critical extension. Every certificate is generated on the
//! spot (rcgen, or the openssl crate where rcgen cannot make it); the corpus keeps what each
//! good certificate must look like in the store and the cause each bad file must be reported
//! with.

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::x509::{X509Builder, X509NameBuilder};
use rcgen::{
    CertificateParams, CustomExtension, DistinguishedName, DnType, Issuer, KeyPair, SanType,
    SerialNumber,
};
use time::OffsetDateTime;

use crate::{files, hex, rfc3339, sha256_hex, CertFactory, CertSpec, Sans};

/// Certificates in the big bundle.
pub const BUNDLE_SIZE: usize = 10_000;
/// Size of the random file.
pub const RANDOM_BYTES: usize = 50 << 20;
/// Size of the sparse file (above the scan's 64 MiB limit).
pub const SPARSE_BYTES: u64 = 100 << 20;

/// A good certificate of the corpus and what the store must say about it.
#[derive(Clone, Debug)]
pub struct Expected {
    /// Where it is, and its index in that file.
    pub path: PathBuf,
    pub index: usize,
    /// SHA-256 of the DER, lowercase hex.
    pub fingerprint: String,
    pub cn: String,
    /// The contract's serial: lowercase hex of the DER INTEGER's bytes, no leading zeros.
    pub serial: String,
    /// RFC 3339 UTC.
    pub not_before: String,
    pub not_after: String,
    pub sans: Sans,
}

/// A file the scan must report, and words its cause must contain.
#[derive(Clone, Debug)]
pub struct Bad {
    pub path: PathBuf,
    pub cause: &'static str,
}

/// The corpus: a folder, the good certificates in it, and the bad files.
pub struct Corpus {
    pub dir: PathBuf,
    /// Every good certificate, the bundle's included (in file order).
    pub good: Vec<Expected>,
    pub bad: Vec<Bad>,
    /// The 10,000-certificate PEM file.
    pub bundle: PathBuf,
}

impl Corpus {
    /// Writes the corpus into `dir` (created). Good certificates are signed by the factory's
    /// intermediate CA.
    pub fn build(f: &CertFactory, dir: &Path) -> Corpus {
        std::fs::create_dir_all(dir).expect("create corpus dir");
        let signer = Signer::new(f);
        let mut c = Corpus {
            dir: dir.to_path_buf(),
            good: Vec::new(),
            bad: Vec::new(),
            bundle: dir.join("bundle-10000.pem"),
        };

        // ---- good certificates -----------------------------------------------------------

        // 10,000 certificates in one PEM file: one key, distinct serials (so 10,000 distinct
        // fingerprints).
        let mut pem = String::with_capacity(BUNDLE_SIZE * 700);
        for i in 0..BUNDLE_SIZE {
            let cn = format!("bulk-{i:05}.hostile.example");
            let mut params = signer.params(&cn);
            params.serial_number = Some(SerialNumber::from(0x4000_0000 + i as u64));
            let (expected, cert_pem) = signer.sign(params, &c.bundle, i);
            pem.push_str(&cert_pem);
            c.good.push(expected);
        }
        write(&c.bundle, pem.as_bytes());

        // Thousands of SANs of every kind.
        {
            let path = dir.join("huge-san.pem");
            let mut params = signer.params("huge-san.hostile.example");
            let mut sans = Sans::default();
            for i in 0..4000 {
                sans.dns.push(format!("host-{i:04}.san.hostile.example"));
            }
            for i in 0..256u32 {
                sans.ip
                    .push(IpAddr::from([10, 7, (i >> 8) as u8, i as u8]).to_string());
            }
            for i in 0..64u16 {
                sans.ip
                    .push(IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 7, i]).to_string());
            }
            for i in 0..64 {
                sans.email.push(format!("ops{i}@hostile.example"));
                sans.uri.push(format!("https://hostile.example/agent/{i}"));
            }
            params.subject_alt_names = rcgen_sans(&sans);
            let (mut e, cert_pem) = signer.sign(params, &path, 0);
            e.sans = sans;
            write(&path, cert_pem.as_bytes());
            c.good.push(e);
        }

        // A 40-byte serial (RFC 5280 allows 20), as DER.
        {
            let path = dir.join("serial-40-bytes.der");
            let mut params = signer.params("serial40.hostile.example");
            let serial: Vec<u8> = (0..40u8)
                .map(|i| 0x11u8.wrapping_mul(i + 1) & 0x7f)
                .collect();
            params.serial_number = Some(SerialNumber::from_slice(&serial));
            let (mut e, _) = signer.sign(params, &path, 0);
            e.serial = minimal_hex(&serial);
            assert_eq!(e.serial.len(), 80, "40 bytes of serial: {}", e.serial);
            write(&path, &signer.last_der());
            c.good.push(e);
        }

        // A negative serial: rcgen always writes positive serials, the openssl crate does not.
        {
            let path = dir.join("serial-negative.pem");
            let serial: i64 = -123_456_789;
            let (der, cert_pem) =
                signer.openssl_negative_serial("negative.hostile.example", serial);
            // DER INTEGERs are two's complement, minimal: drop redundant leading 0xff bytes.
            let mut bytes = serial.to_be_bytes().to_vec();
            while bytes.len() > 1 && bytes[0] == 0xff && bytes[1] & 0x80 != 0 {
                bytes.remove(0);
            }
            assert_eq!(bytes, [0xf8, 0xa4, 0x32, 0xeb]);
            let x509 = openssl::x509::X509::from_der(&der).expect("openssl reads it back");
            assert!(
                x509.serial_number().to_bn().expect("bn").is_negative(),
                "the serial must really be negative"
            );
            c.good.push(Expected {
                path: path.clone(),
                index: 0,
                fingerprint: sha256_hex(&der),
                cn: "negative.hostile.example".into(),
                // Signed, as openssl prints it.
                serial: format!("-{:x}", serial.unsigned_abs()),
                not_before: rfc3339(openssl_time_unix(x509.not_before())),
                not_after: rfc3339(openssl_time_unix(x509.not_after())),
                sans: Sans::default(),
            });
            write(&path, cert_pem.as_bytes());
        }

        // GeneralizedTime validity: before 1950 and from 2050 on (UTCTime cannot say those).
        for (name, nb, na, encoded) in [
            (
                "dates-1949-2050.pem",
                "1949-06-15T12:00:00Z",
                "2050-01-01T00:00:00Z",
                &b"\x18\x0f19490615120000Z"[..],
            ),
            (
                "dates-1901-9999.pem",
                "1901-01-01T00:00:00Z",
                "9999-12-31T23:59:59Z",
                &b"\x18\x0f99991231235959Z"[..],
            ),
            (
                "dates-expired-1949.pem",
                "1940-03-01T08:30:00Z",
                "1949-12-31T23:59:59Z",
                &b"\x18\x0f19491231235959Z"[..],
            ),
        ] {
            let path = dir.join(name);
            let mut params = signer.params(&format!("{}.hostile.example", &name[..name.len() - 4]));
            params.not_before = parse_time(nb);
            params.not_after = parse_time(na);
            let (e, cert_pem) = signer.sign(params, &path, 0);
            let der = signer.last_der();
            assert!(
                der.windows(encoded.len()).any(|w| w == encoded),
                "{name}: rcgen should have written a GeneralizedTime"
            );
            assert_eq!((e.not_before.as_str(), e.not_after.as_str()), (nb, na));
            write(&path, cert_pem.as_bytes());
            c.good.push(e);
        }

        // An unknown critical extension (a relying party must reject the certificate; an
        // inventory must still list it).
        {
            let path = dir.join("critical-extension.crt");
            let mut params = signer.params("critical.hostile.example");
            let mut ext = CustomExtension::from_oid_content(
                &[1, 3, 6, 1, 4, 1, 55555, 7, 1],
                vec![0x04, 0x03, 0x01, 0x02, 0x03],
            );
            ext.set_criticality(true);
            params.custom_extensions.push(ext);
            let (e, cert_pem) = signer.sign(params, &path, 0);
            // OID 1.3.6.1.4.1.55555.7.1, then BOOLEAN TRUE.
            let marker = [
                0x06, 0x0a, 0x2b, 0x06, 0x01, 0x04, 0x01, 0x83, 0xb2, 0x03, 0x07, 0x01, 0x01, 0x01,
                0xff,
            ];
            assert!(
                signer.last_der().windows(marker.len()).any(|w| w == marker),
                "the extension should be encoded as critical"
            );
            write(&path, cert_pem.as_bytes());
            c.good.push(e);
        }

        // PEM with trailing garbage (text and binary) after the END line: PEM readers
        // (OpenSSL, nginx) ignore anything outside the blocks, so the certificate is good.
        {
            let path = dir.join("trailing-garbage.pem");
            let (e, cert_pem) = signer.sign(signer.params("trailing.hostile.example"), &path, 0);
            let mut bytes = cert_pem.into_bytes();
            bytes.extend_from_slice(b"\n#!/bin/sh\nrm -rf --no-preserve-root ~~~ %%% \n");
            bytes.extend(pseudo_random(4096, 7).into_iter().map(|b| b & 0x7f | 0x01));
            write(&path, &bytes);
            c.good.push(e);
        }

        // ---- files that are good and bad at once -------------------------------------------

        // Two good certificates, then a block cut off in the middle: the two are stored and
        // the file is reported.
        {
            let path = dir.join("bundle-then-cut.pem");
            let (e0, p0) = signer.sign(signer.params("cut0.hostile.example"), &path, 0);
            let (e1, p1) = signer.sign(signer.params("cut1.hostile.example"), &path, 1);
            let (_, p2) = signer.sign(signer.params("cut2.hostile.example"), &path, 2);
            let text = format!("{p0}{p1}{}", &p2[..p2.len() / 2]);
            write(&path, text.as_bytes());
            let line = 1 + format!("{p0}{p1}").matches('\n').count();
            c.good.push(e0);
            c.good.push(e1);
            c.bad.push(Bad {
                path,
                cause: leak(format!(
                    "PEM certificate block #2 (BEGIN on line {line}) has no END line: the file is truncated or damaged"
                )),
            });
        }

        // ---- bad files -----------------------------------------------------------------------

        let leaf = f.leaf(CertSpec::leaf("victim.hostile.example"));

        let path = dir.join("truncated.der");
        files::truncated_der(&path, &leaf);
        let half = leaf.der.len() / 2;
        c.bad.push(Bad {
            path,
            cause: leak(format!(
                "DER certificate #0: truncated DER: the certificate needs {} bytes but the input has {half}",
                leaf.der.len()
            )),
        });

        let path = dir.join("bad-base64.pem");
        files::bad_base64_pem(&path);
        c.bad.push(Bad {
            path,
            cause: "PEM certificate block #0 (BEGIN on line 1) has invalid base64: unexpected character '!' on line 2",
        });

        let path = dir.join("empty.pem");
        files::empty(&path);
        c.bad.push(Bad {
            path,
            cause: "not a certificate file: this looks like an empty file",
        });

        // 50 MB of random bytes (the first one not 0x30, so that it does not even start like
        // DER): read, and recognised as not a certificate.
        let path = dir.join("random-50mb.der");
        let mut random = pseudo_random(RANDOM_BYTES, 42);
        random[0] = 0x9c;
        write(&path, &random);
        drop(random);
        c.bad.push(Bad {
            path,
            cause: "not a certificate file: this looks like binary data that is neither DER nor PKCS#12",
        });

        // 100 MiB (sparse: no disk used), above the 64 MiB limit: not read at all.
        let path = dir.join("huge-sparse.cer");
        let file = std::fs::File::create(&path).expect("create sparse file");
        file.set_len(SPARSE_BYTES).expect("sparse file");
        c.bad.push(Bad {
            path,
            cause: leak(format!(
                "the file is {SPARSE_BYTES} bytes, more than the 64 MiB a certificate file may have (not read)"
            )),
        });

        // Not files: a FIFO nobody writes to (a blocking open would hang the scan forever),
        // a socket, and a symlink to a character device that never ends.
        let path = dir.join("pipe.pem");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &path,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .expect("mkfifo");
        c.bad.push(Bad {
            path,
            cause: "not a regular file: this is a FIFO (named pipe), which certctl never reads",
        });
        let path = dir.join("socket.pem");
        drop(std::os::unix::net::UnixListener::bind(&path).expect("bind a unix socket"));
        c.bad.push(Bad {
            path,
            cause: "not a regular file: this is a socket, which certctl never reads",
        });
        let path = dir.join("zero.pem");
        std::os::unix::fs::symlink("/dev/zero", &path).expect("symlink");
        c.bad.push(Bad {
            path,
            cause: "not a regular file: this is a character device, which certctl never reads",
        });

        // Symlink loops: a folder link back up the tree, one to itself, and two file links
        // pointing at each other.
        let loops = dir.join("loops");
        std::fs::create_dir_all(loops.join("deeper")).expect("mkdir");
        let up = loops.join("deeper/up");
        std::os::unix::fs::symlink("../..", &up).expect("symlink");
        c.bad.push(Bad {
            path: up,
            cause: leak(format!(
                "symbolic link loop: it points to {}, a folder that contains it (not followed)",
                dir.display()
            )),
        });
        let itself = loops.join("here");
        std::os::unix::fs::symlink(".", &itself).expect("symlink");
        c.bad.push(Bad {
            path: itself,
            cause: leak(format!(
                "symbolic link loop: it points to {}, a folder that contains it (not followed)",
                loops.display()
            )),
        });
        for (from, to) in [("ring-a.pem", "ring-b.pem"), ("ring-b.pem", "ring-a.pem")] {
            let path = loops.join(from);
            std::os::unix::fs::symlink(to, &path).expect("symlink");
            c.bad.push(Bad {
                path,
                cause: "symbolic link loop: too many levels of symbolic links (not followed)",
            });
        }
        // A good certificate inside the folder with the loops, to show it is walked.
        {
            let path = loops.join("deeper/inside.pem");
            let (e, cert_pem) = signer.sign(signer.params("inside.hostile.example"), &path, 0);
            write(&path, cert_pem.as_bytes());
            c.good.push(e);
        }

        c.bad.sort_by(|a, b| a.path.cmp(&b.path));
        c
    }

    /// The expected good certificate with this fingerprint.
    pub fn good_by_fingerprint(&self) -> std::collections::HashMap<&str, &Expected> {
        self.good
            .iter()
            .map(|e| (e.fingerprint.as_str(), e))
            .collect()
    }
}

/// Signs certificates with the factory's intermediate, all for one shared leaf key.
struct Signer<'f> {
    issuer: Issuer<'f, &'f KeyPair>,
    issuer_x509: openssl::x509::X509,
    issuer_pkey: openssl::pkey::PKey<openssl::pkey::Private>,
    leaf_key: KeyPair,
    leaf_pkey: openssl::pkey::PKey<openssl::pkey::Private>,
    last_der: std::cell::RefCell<Vec<u8>>,
}

impl<'f> Signer<'f> {
    fn new(f: &'f CertFactory) -> Signer<'f> {
        let ca = f.intermediate();
        let key_pem = crate::KeyKind::EcP256.generate_pem();
        Signer {
            issuer: Issuer::from_params(&ca.params, &ca.key_pair),
            issuer_x509: ca.x509(),
            issuer_pkey: ca.pkey(),
            leaf_key: KeyPair::from_pem(&key_pem).expect("rcgen reads the key"),
            leaf_pkey: openssl::pkey::PKey::private_key_from_pem(key_pem.as_bytes())
                .expect("openssl reads the key"),
            last_der: Default::default(),
        }
    }

    /// A leaf valid from yesterday for 90 days, CN `cn`, no SANs, a random serial.
    fn params(&self, cn: &str) -> CertificateParams {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        let now = OffsetDateTime::now_utc().replace_nanosecond(0).expect("ns");
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(90);
        params.use_authority_key_identifier_extension = true;
        params
    }

    /// Signs; returns what the store must show and the PEM. The DER is kept for
    /// [`Signer::last_der`].
    fn sign(&self, params: CertificateParams, path: &Path, index: usize) -> (Expected, String) {
        let cert = params
            .signed_by(&self.leaf_key, &self.issuer)
            .expect("sign certificate");
        let der = cert.der().to_vec();
        let x509 = openssl::x509::X509::from_der(&der).expect("openssl reads it back");
        let serial = x509.serial_number().to_bn().expect("serial").to_vec();
        let expected = Expected {
            path: path.to_path_buf(),
            index,
            fingerprint: sha256_hex(&der),
            cn: match params.distinguished_name.get(&DnType::CommonName) {
                Some(rcgen::DnValue::Utf8String(s)) => s.clone(),
                other => panic!("the test certificates have a UTF-8 CN, not {other:?}"),
            },
            serial: minimal_hex(&serial),
            not_before: rfc3339(params.not_before.unix_timestamp()),
            not_after: rfc3339(params.not_after.unix_timestamp()),
            sans: Sans::default(),
        };
        *self.last_der.borrow_mut() = der;
        (expected, cert.pem())
    }

    fn last_der(&self) -> Vec<u8> {
        self.last_der.borrow().clone()
    }

    /// A leaf with a negative serial, made with the openssl crate: (DER, PEM).
    fn openssl_negative_serial(&self, cn: &str, serial: i64) -> (Vec<u8>, String) {
        let mut b = X509Builder::new().expect("builder");
        b.set_version(2).expect("v3");
        let bn = BigNum::from_dec_str(&serial.to_string()).expect("bn");
        b.set_serial_number(&Asn1Integer::from_bn(&bn).expect("asn1 int"))
            .expect("serial");
        let mut name = X509NameBuilder::new().expect("name");
        name.append_entry_by_text("CN", cn).expect("cn");
        let name = name.build();
        b.set_subject_name(&name).expect("subject");
        b.set_issuer_name(self.issuer_x509.subject_name())
            .expect("issuer");
        let now = crate::now();
        b.set_not_before(&Asn1Time::from_unix(now - 86_400).expect("time"))
            .expect("nb");
        b.set_not_after(&Asn1Time::from_unix(now + 60 * 86_400).expect("time"))
            .expect("na");
        b.set_pubkey(&self.leaf_pkey).expect("pubkey");
        b.sign(&self.issuer_pkey, MessageDigest::sha256())
            .expect("sign");
        let x509 = b.build();
        let der = x509.to_der().expect("der");
        let pem = String::from_utf8(x509.to_pem().expect("pem")).expect("ascii");
        (der, pem)
    }
}

/// The time of an openssl `Asn1Time` as Unix seconds.
fn openssl_time_unix(t: &openssl::asn1::Asn1TimeRef) -> i64 {
    let epoch = Asn1Time::from_unix(0).expect("epoch");
    let d = epoch.diff(t).expect("diff");
    i64::from(d.days) * 86_400 + i64::from(d.secs)
}

fn parse_time(s: &str) -> OffsetDateTime {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).expect("RFC 3339")
}

fn rcgen_sans(sans: &Sans) -> Vec<SanType> {
    let mut out = Vec::new();
    for d in &sans.dns {
        out.push(SanType::DnsName(d.as_str().try_into().expect("IA5")));
    }
    for ip in &sans.ip {
        out.push(SanType::IpAddress(ip.parse().expect("IP")));
    }
    for e in &sans.email {
        out.push(SanType::Rfc822Name(e.as_str().try_into().expect("IA5")));
    }
    for u in &sans.uri {
        out.push(SanType::URI(u.as_str().try_into().expect("IA5")));
    }
    out
}

/// Lowercase hex without leading zeros (`"0"` for zero): the contract's serial form.
pub fn minimal_hex(bytes: &[u8]) -> String {
    let h = hex(bytes);
    let t = h.trim_start_matches('0');
    if t.is_empty() {
        "0".into()
    } else {
        t.into()
    }
}

/// Deterministic pseudo-random bytes (xorshift64*), fast enough for 50 MB in a debug build.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Causes are built once per corpus; a `&'static str` keeps [`Bad`] simple.
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// Makes `path` and everything under it owned by `uid:gid` (for scans run as another user).
pub fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).expect("chown");
    if path.is_dir() && !path.is_symlink() {
        for entry in std::fs::read_dir(path).expect("read dir") {
            chown_tree(&entry.expect("entry").path(), uid, gid);
        }
    }
}

/// Sets a path's permission bits.
pub fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Everything under `dir` (not `dir` itself) that `uid` does not own.
pub fn not_owned_by(dir: &Path, uid: u32) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let mut foreign = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            let meta = std::fs::symlink_metadata(&path).expect("metadata");
            if meta.uid() != uid {
                foreign.push(path.clone());
            }
            if meta.is_dir() {
                todo.push(path);
            }
        }
    }
    foreign
}

/// The uid/gid the other-user tests switch to (`nobody`) when they run as root.
pub const NOBODY: u32 = 65534;

/// `setpriv`'s arguments that run the program after them as [`NOBODY`].
pub fn setpriv_nobody() -> Vec<String> {
    vec![
        format!("--reuid={NOBODY}"),
        format!("--regid={NOBODY}"),
        "--clear-groups".to_string(),
    ]
}

/// `certctl --store STORE ARGS...` run as [`NOBODY`] through `setpriv` (the caller checks
/// that it runs as root).
pub fn certctl_as_nobody(env: &crate::TestEnv, store: &Path, args: &[&str]) -> crate::RunResult {
    let mut argv = setpriv_nobody();
    argv.push(crate::bin_path("certctl").to_string_lossy().into_owned());
    argv.push("--store".to_string());
    argv.push(store.to_string_lossy().into_owned());
    argv.extend(args.iter().map(|a| a.to_string()));
    env.cmd()
        .program("setpriv")
        .no_store()
        .args(argv)
        .timeout(std::time::Duration::from_secs(30))
        .run()
}

/// Whether a test can run certctl as [`NOBODY`] (it runs as root and `setpriv` can switch);
/// when not, says why the test is skipped.
pub fn can_run_as_nobody() -> bool {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIPPED: not running as root, so `setpriv` cannot run certctl as another user");
        return false;
    }
    if !setpriv_can_switch() {
        eprintln!("SKIPPED: `setpriv` cannot switch to uid {NOBODY}");
        return false;
    }
    true
}

/// Whether `setpriv` can run a program as [`NOBODY`] here (root, and setpriv installed).
pub fn setpriv_can_switch() -> bool {
    std::process::Command::new("setpriv")
        .args(setpriv_nobody())
        .arg("true")
        .status()
        .is_ok_and(|s| s.success())
}

/// Which iteration count of a PKCS#12 file [`pfx_with_huge_count`] makes huge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HugeCount {
    /// The MAC's (`MacData.iterations`).
    Mac,
    /// The PBKDF2 count of the PBES2-encrypted key bag (certificates unencrypted, no MAC).
    KeyBag,
    /// The legacy PKCS#12 PBE count (pbeWithSHAAnd3-KeyTripleDES-CBC) of the encrypted
    /// certificates and of the key bag (no MAC).
    LegacyPbe,
}

/// The count [`pfx_with_huge_count`] writes: 2^31-1, the largest OpenSSL accepts.
pub const HUGE_COUNT: u32 = 0x7fff_ffff;

/// A PKCS#12 file (empty password) for `cert` with one iteration count rewritten to
/// [`HUGE_COUNT`]. Building with such a count would run the KDF for minutes, so the file is
/// built with small marker counts and the marker INTEGERs are re-encoded in the DER (with
/// every enclosing length fixed). The MAC no longer matches: for [`HugeCount::Mac`] that does
/// not matter, since OpenSSL runs the MAC's KDF before it can tell; for the others the MAC is
/// removed (a PFX without a MAC is valid), so that OpenSSL decrypts the bags.
pub fn pfx_with_huge_count(cert: &crate::GeneratedCert, which: HugeCount) -> Vec<u8> {
    use openssl::nid::Nid;
    const KEY_MARKER: u32 = 1111;
    const MAC_MARKER: u32 = 1234;
    let mut b = openssl::pkcs12::Pkcs12::builder();
    b.name("huge-count").pkey(&cert.pkey()).cert(&cert.x509());
    b.key_iter(KEY_MARKER);
    match which {
        HugeCount::Mac => {
            b.mac_iter(MAC_MARKER);
        }
        HugeCount::KeyBag => {
            // -1: certificates not encrypted (PKCS12_create's convention).
            b.cert_algorithm(Nid::from_raw(-1))
                .key_algorithm(Nid::AES_256_CBC);
        }
        HugeCount::LegacyPbe => {
            b.cert_algorithm(Nid::PBE_WITHSHA1AND3_KEY_TRIPLEDES_CBC)
                .key_algorithm(Nid::PBE_WITHSHA1AND3_KEY_TRIPLEDES_CBC);
        }
    }
    let der = b.build2("").expect("build PKCS#12").to_der().expect("DER");
    let marker = if which == HugeCount::Mac {
        MAC_MARKER
    } else {
        KEY_MARKER
    };
    let mut replaced = 0;
    let out = rewrite_integers(&der, marker, HUGE_COUNT, &mut replaced)
        .expect("openssl's PKCS#12 DER re-parses");
    assert!(replaced > 0, "no INTEGER {marker} in the PKCS#12 DER");
    if which == HugeCount::Mac {
        out
    } else {
        // Without a MAC OpenSSL goes straight to decrypting the bags.
        drop_mac(&out)
    }
}

/// Re-encodes a DER sequence of elements with every INTEGER `from` replaced by `to`,
/// descending into constructed elements and into OCTET STRINGs that hold DER (PKCS#12 nests
/// its structures in them). `None` if `der` is not a sequence of DER elements.
fn rewrite_integers(der: &[u8], from: u32, to: u32, replaced: &mut usize) -> Option<Vec<u8>> {
    let minimal = |v: u32| {
        let b = v.to_be_bytes();
        let skip = b.iter().take(3).take_while(|&&x| x == 0).count();
        let mut v = b[skip..].to_vec();
        if v[0] & 0x80 != 0 {
            v.insert(0, 0);
        }
        v
    };
    let mut out = Vec::new();
    for (tag, content) in split_der(der)? {
        let new_content = if tag & 0x20 != 0 {
            rewrite_integers(content, from, to, replaced)?
        } else if tag == 0x04 && content.first() == Some(&0x30) {
            rewrite_integers(content, from, to, replaced).unwrap_or_else(|| content.to_vec())
        } else if tag == 0x02 && content == minimal(from).as_slice() {
            *replaced += 1;
            minimal(to)
        } else {
            content.to_vec()
        };
        encode_der(&mut out, tag, &new_content);
    }
    Some(out)
}

/// The PFX without its `macData` (the third element of the outer SEQUENCE).
fn drop_mac(pfx: &[u8]) -> Vec<u8> {
    let outer = split_der(pfx).expect("PFX DER");
    let (tag, content) = outer[0];
    let mut kept = Vec::new();
    for (tag, content) in split_der(content).expect("PFX DER").into_iter().take(2) {
        encode_der(&mut kept, tag, content);
    }
    let mut out = Vec::new();
    encode_der(&mut out, tag, &kept);
    out
}

/// Splits DER into its elements as (tag, content); only what OpenSSL writes for PKCS#12 is
/// handled: one-byte tags, definite lengths.
fn split_der(der: &[u8]) -> Option<Vec<(u8, &[u8])>> {
    let mut out = Vec::new();
    let mut rest = der;
    while !rest.is_empty() {
        let tag = rest[0];
        let (len, header) = match *rest.get(1)? {
            l if l < 0x80 => (usize::from(l), 2),
            l if (0x81..=0x84).contains(&l) => {
                let n = usize::from(l & 0x7f);
                let bytes = rest.get(2..2 + n)?;
                (bytes.iter().fold(0, |a, &b| a << 8 | usize::from(b)), 2 + n)
            }
            _ => return None,
        };
        out.push((tag, rest.get(header..header + len)?));
        rest = &rest[header + len..];
    }
    Some(out)
}

fn encode_der(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
    out.push(tag);
    match content.len() {
        l if l < 0x80 => out.push(l as u8),
        l => {
            let b = (l as u32).to_be_bytes();
            let skip = b.iter().take_while(|&&x| x == 0).count();
            out.push(0x80 | (4 - skip) as u8);
            out.extend_from_slice(&b[skip..]);
        }
    }
    out.extend_from_slice(content);
}
