//! Property tests of the file-parsing entry point of a scan,
//! [`certctl_daemon::formats::read_certificates_partial`]: whatever the bytes — random, or
//! valid PEM, DER and PKCS#12 files damaged at random — it returns (never panics, never
//! hangs) either certificates or an error, and what it returns is consistent:
//!
//! - no error means at least one certificate; `read_certificates` agrees (all or nothing);
//! - a file cut short yields a prefix of the certificates of the whole file;
//! - an undamaged seed yields exactly its certificates.
//!
//! Bounded and fast in the normal test run (a few hundred cases per property). For a long
//! run: `PROPTEST_CASES=20000 cargo test --release -p certctl-daemon --test parse_props`.
//! The cargo-fuzz target `fuzz/fuzz_targets/read_certificates.rs` drives the same function.

use std::path::Path;
use std::sync::OnceLock;

use certctl_daemon::formats::{read_certificates, read_certificates_partial, FormatError};
use openssl::pkcs12::Pkcs12;
use openssl::pkey::PKey;
use openssl::stack::Stack;
use openssl::x509::X509;
use proptest::prelude::*;
use proptest::test_runner::Config;
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType, IsCa, Issuer,
    KeyPair, SanType, SerialNumber,
};

/// Valid files to damage, and the fingerprints each holds.
struct Seed {
    name: &'static str,
    bytes: Vec<u8>,
    fingerprints: Vec<String>,
}

impl std::fmt::Debug for Seed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({} bytes)", self.name, self.bytes.len())
    }
}

const PFX_PASSWORD: &str = "fuzz-pw";

fn seeds() -> &'static [Seed] {
    static SEEDS: OnceLock<Vec<Seed>> = OnceLock::new();
    SEEDS.get_or_init(make_seeds)
}

fn sha256_hex(der: &[u8]) -> String {
    hex::encode(openssl::sha::sha256(der))
}

fn make_seeds() -> Vec<Seed> {
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut ca_params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Props CA");
    ca_params.distinguished_name = dn;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let issuer = Issuer::from_params(&ca_params, &ca_key);

    // The leaf key comes from openssl so that PKCS#12 can hold it.
    let leaf_pkey = PKey::from_ec_key(
        openssl::ec::EcKey::generate(
            &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1)
                .expect("curve"),
        )
        .expect("ec key"),
    )
    .expect("pkey");
    let leaf_pem_key =
        String::from_utf8(leaf_pkey.private_key_to_pem_pkcs8().expect("pkcs8")).expect("ascii");
    let leaf_key = KeyPair::from_pem(&leaf_pem_key).expect("rcgen key");
    let leaf = |cn: &str, extra: &dyn Fn(&mut CertificateParams)| {
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        p.distinguished_name = dn;
        p.subject_alt_names = vec![SanType::DnsName(cn.try_into().expect("ia5"))];
        extra(&mut p);
        p.signed_by(&leaf_key, &issuer).expect("leaf")
    };
    let plain = leaf("leaf.props.example", &|_| {});
    let odd = leaf("odd.props.example", &|p| {
        p.serial_number = Some(SerialNumber::from_slice(&[0x7f; 40]));
        p.not_before = time::macros::datetime!(1949-01-01 0:00 UTC);
        p.not_after = time::macros::datetime!(9999-12-31 23:59:59 UTC);
        let mut ext = CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 55555, 9], vec![5, 0]);
        ext.set_criticality(true);
        p.custom_extensions.push(ext);
        for i in 0..50 {
            p.subject_alt_names.push(SanType::DnsName(
                format!("n{i}.props.example").try_into().expect("ia5"),
            ));
        }
    });

    let ca_der = ca.der().to_vec();
    let plain_der = plain.der().to_vec();
    let odd_der = odd.der().to_vec();
    let fp = |d: &[u8]| sha256_hex(d);

    let bundle = format!(
        "subject=CN=leaf\n{}{}# trailing comment\n{}",
        plain.pem(),
        leaf_pem_key,
        ca.pem()
    );
    let mut two_der = plain_der.clone();
    two_der.extend_from_slice(&ca_der);
    let pfx = {
        let mut chain = Stack::new().expect("stack");
        chain
            .push(X509::from_der(&ca_der).expect("ca"))
            .expect("push");
        let mut b = Pkcs12::builder();
        b.name("props")
            .pkey(&leaf_pkey)
            .cert(&X509::from_der(&plain_der).expect("leaf"))
            .ca(chain);
        b.build2(PFX_PASSWORD)
            .expect("pkcs12")
            .to_der()
            .expect("der")
    };
    let pfx_base64 = openssl::base64::encode_block(&pfx).into_bytes();

    vec![
        Seed {
            name: "bundle.pem",
            bytes: bundle.into_bytes(),
            fingerprints: vec![fp(&plain_der), fp(&ca_der)],
        },
        Seed {
            name: "odd.pem",
            bytes: odd.pem().into_bytes(),
            fingerprints: vec![fp(&odd_der)],
        },
        Seed {
            name: "odd.der",
            bytes: odd_der.clone(),
            fingerprints: vec![fp(&odd_der)],
        },
        Seed {
            name: "two.der",
            bytes: two_der,
            fingerprints: vec![fp(&plain_der), fp(&ca_der)],
        },
        Seed {
            name: "site.pfx",
            bytes: pfx,
            fingerprints: vec![fp(&plain_der), fp(&ca_der)],
        },
        Seed {
            name: "vault.pfx",
            bytes: pfx_base64,
            fingerprints: vec![fp(&plain_der), fp(&ca_der)],
        },
    ]
}

const NAMES: [&str; 6] = ["a.pem", "a.der", "a.pfx", "a.p12", "a.crt", "a"];
const PASSWORDS: [Option<&str>; 4] = [None, Some(PFX_PASSWORD), Some("Wr0ng-Pa55"), Some("a\0b")];

/// Calls the entry point and checks what any answer must satisfy; returns the
/// fingerprints read and whether the file was read to its end.
fn parse_and_check(bytes: &[u8], name: &str, password: Option<&str>) -> (Vec<String>, bool) {
    let read = read_certificates_partial(bytes, Path::new(name), password);
    let fps: Vec<String> = read
        .certificates
        .iter()
        .map(|c| c.fingerprint.to_hex())
        .collect();
    match &read.error {
        None => assert!(!fps.is_empty(), "no error and no certificate"),
        Some(FormatError::NoCertificate) => {
            assert!(fps.is_empty(), "NoCertificate with certificates")
        }
        Some(e) => assert!(!e.to_string().trim().is_empty(), "an empty cause"),
    }
    // Messages never carry the PFX password.
    if let (Some(e), Some(pw)) = (&read.error, password) {
        if pw.len() > 3 {
            assert!(!e.to_string().contains(pw), "the password leaked: {e}");
        }
    }
    // The all-or-nothing reader agrees.
    match (
        read_certificates(bytes, Path::new(name), password),
        &read.error,
    ) {
        (Ok(all), None) => assert_eq!(all, read.certificates),
        (Err(e), Some(partial)) => assert_eq!(&e, partial),
        (all, partial) => panic!("read_certificates {all:?} vs partial error {partial:?}"),
    }
    (fps, read.error.is_none())
}

/// One random edit of a file.
#[derive(Clone, Debug)]
enum Mutation {
    Flip { at: usize, bit: u8 },
    Set { at: usize, byte: u8 },
    Insert { at: usize, bytes: Vec<u8> },
    Delete { at: usize, len: usize },
    Truncate { at: usize },
    Duplicate { at: usize, len: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let at = any::<usize>();
    prop_oneof![
        (at, 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        (
            at,
            prop_oneof![
                Just(0u8),
                Just(0x30),
                Just(0x80),
                Just(0xff),
                Just(b'-'),
                Just(b'='),
                Just(b'\n'),
                any::<u8>()
            ]
        )
            .prop_map(|(at, byte)| Mutation::Set { at, byte }),
        (at, prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (at, 1usize..64).prop_map(|(at, len)| Mutation::Delete { at, len }),
        at.prop_map(|at| Mutation::Truncate { at }),
        (at, 1usize..256).prop_map(|(at, len)| Mutation::Duplicate { at, len }),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let n = bytes.len();
    if n == 0 {
        if let Mutation::Insert { bytes: b, .. } = m {
            bytes.extend_from_slice(b);
        }
        return;
    }
    match *m {
        Mutation::Flip { at, bit } => bytes[at % n] ^= 1 << bit,
        Mutation::Set { at, byte } => bytes[at % n] = byte,
        Mutation::Insert { at, bytes: ref b } => {
            let at = at % (n + 1);
            bytes.splice(at..at, b.iter().copied());
        }
        Mutation::Delete { at, len } => {
            let at = at % n;
            bytes.drain(at..(at + len).min(n));
        }
        Mutation::Truncate { at } => bytes.truncate(at % n),
        Mutation::Duplicate { at, len } => {
            let at = at % n;
            let piece = bytes[at..(at + len).min(n)].to_vec();
            bytes.splice(at..at, piece);
        }
    }
}

fn config(cases: u32) -> Config {
    Config {
        // PROPTEST_CASES overrides this for long runs.
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(cases),
        max_shrink_iters: 2048,
        ..Config::default()
    }
}

#[test]
fn undamaged_seeds_give_exactly_their_certificates() {
    for seed in seeds() {
        let (fps, complete) = parse_and_check(&seed.bytes, seed.name, Some(PFX_PASSWORD));
        assert!(complete, "{} should read completely", seed.name);
        assert_eq!(fps, seed.fingerprints, "{}", seed.name);
    }
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn random_bytes_never_panic(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..2048),
            // Random bytes behind a DER SEQUENCE header, to get past the first checks.
            prop::collection::vec(any::<u8>(), 0..2048).prop_map(|mut v| {
                v.splice(0..0, [0x30, 0x82, (v.len() >> 8) as u8, v.len() as u8]);
                v
            }),
            // Random text inside a PEM block.
            prop::collection::vec(prop::sample::select(
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\n\r -".to_vec()
            ), 0..2048).prop_map(|body| {
                let mut v = b"-----BEGIN CERTIFICATE-----\n".to_vec();
                v.extend_from_slice(&body);
                v.extend_from_slice(b"\n-----END CERTIFICATE-----\n");
                v
            }),
        ],
        name in prop::sample::select(NAMES.to_vec()),
        password in prop::sample::select(PASSWORDS.to_vec()),
    ) {
        parse_and_check(&bytes, name, password);
    }

    #[test]
    fn damaged_files_never_panic(
        seed in 0..seeds().len(),
        mutations in prop::collection::vec(mutation(), 1..8),
        rename in any::<bool>(),
        password in prop::sample::select(PASSWORDS.to_vec()),
    ) {
        let seed = &seeds()[seed];
        let mut bytes = seed.bytes.clone();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        let name = if rename { "renamed.crt" } else { seed.name };
        parse_and_check(&bytes, name, password);
    }

    #[test]
    fn a_file_cut_short_gives_a_prefix_of_its_certificates(
        // PKCS#12 is all or nothing (one signed structure); the others are sequences.
        seed in prop::sample::select(
            seeds().iter().filter(|s| !s.name.ends_with(".pfx")).collect::<Vec<_>>()
        ),
        cut in any::<usize>(),
    ) {
        let cut = cut % (seed.bytes.len() + 1);
        let (fps, _) = parse_and_check(&seed.bytes[..cut], seed.name, None);
        prop_assert!(
            seed.fingerprints.starts_with(&fps),
            "{}: cut at {cut} gave {fps:?}, not a prefix of {:?}", seed.name, seed.fingerprints
        );
    }
}
