//! The store's side of the steady state (issue 16), without parsing or files:
//! `cargo bench -p certctl-store --bench steady [-- --agents N --rounds R --cache BYTES]`.
//!
//! Defaults: 200,000 agents, 8 rounds (two simulated days), a 32 MiB page cache (certd's
//! default `store_cache`). Round 0 imports one 6-hour credential per agent into a new store;
//! each later round replaces every agent's credential by a new one (observed in the same
//! file, the old one marked gone), in commits of 2,048 as a scan makes them. Then the store
//! is reopened (a cold page cache, as certd after a restart) and the 30-day expiry window
//! (the last round's credentials) is read twice: as `list --expiring-within 30d` reads it
//! (one range of the records, which are keyed by expiry) and as a role-filtered list reads
//! it (the expiry index's hits, then their records).
//!
//! It prints per round: the time, per credential, its ratio to the first import, and the
//! sled keys written per credential; then the window's read. Figures are printed, never
//! asserted (machines are noisy).

use std::path::PathBuf;
use std::time::Instant;

use certctl_store::{
    CertificateFacts, KeyAlgorithm, KeyId, Role, Sha256, SourceLocation, Store, SubjectAltNames,
};

/// The allocator the `certctl` and `certd` binaries use, so the figures are theirs.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const ROUND_SECS: i64 = 6 * 3600;
const START: i64 = 1_800_000_000;
const BATCH: usize = 2048;

struct Args {
    agents: u32,
    rounds: u32,
    cache: u64,
    dir: Option<PathBuf>,
}

fn args() -> Args {
    let mut a = Args {
        agents: 200_000,
        rounds: 8,
        cache: 32 << 20,
        dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || -> u64 { it.next().and_then(|v| v.parse().ok()).expect("a number") };
        match arg.as_str() {
            "--agents" => a.agents = u32::try_from(value()).expect("--agents N"),
            "--rounds" => a.rounds = u32::try_from(value()).expect("--rounds R"),
            "--cache" => a.cache = value(),
            "--dir" => a.dir = Some(PathBuf::from(it.next().expect("--dir DIR"))),
            _ => {} // `--bench`, added by cargo
        }
    }
    a
}

/// A well-spread 32-byte fingerprint for credential `n` (splitmix64, four times).
fn fingerprint(n: u64) -> Sha256 {
    let mut out = [0u8; 32];
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for chunk in out.chunks_mut(8) {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        chunk.copy_from_slice(&(z ^ (z >> 31)).to_be_bytes());
    }
    Sha256(out)
}

/// Agent `agent`'s credential of `round`, issued at the round's start for 6 hours.
fn credential(agents: u32, agent: u32, round: u32) -> CertificateFacts {
    let n = u64::from(round) * u64::from(agents) + u64::from(agent);
    let fp = fingerprint(n);
    let issued = START + i64::from(round) * ROUND_SECS;
    let cn = format!("agent-{agent:06}");
    CertificateFacts {
        fingerprint: fp,
        subject: format!("CN={cn}"),
        subject_cn: Some(cn.clone()),
        issuer: "CN=Fleet Agent CA,O=Example".into(),
        serial: format!("{n:x}"),
        not_before: issued - 300,
        not_after: issued + ROUND_SECS,
        sans: SubjectAltNames {
            dns: vec![format!("{cn}.agents.example")],
            ..SubjectAltNames::default()
        },
        key: KeyAlgorithm::Ec {
            curve: "P-256".into(),
        },
        signature_algorithm: "ecdsa-with-SHA256".into(),
        is_ca: false,
        subject_key_id: Some(KeyId(fp.0[..20].to_vec())),
        authority_key_id: Some(KeyId(vec![7; 20])),
        spki_sha256: fingerprint(n ^ (1 << 63)),
        crl_distribution_points: vec!["http://pki.example/agents.crl".into()],
        ocsp_urls: vec![],
    }
}

fn file_of(agent: u32) -> SourceLocation {
    SourceLocation::File {
        path: format!("/fleet/agents/{:03}/agent-{agent:06}.pem", agent / 1000),
        index: 0,
    }
}

fn main() {
    let a = args();
    let tmp = tempfile::tempdir().expect("a temporary folder");
    let path = a.dir.clone().unwrap_or_else(|| tmp.path().join("store"));
    println!(
        "steady: {} agents, {} rounds, page cache {} MiB, store {}",
        a.agents,
        a.rounds,
        a.cache >> 20,
        path.display()
    );
    println!("| round | records | time | per credential | ×first import | sled keys written per credential |");
    println!("|---|---|---|---|---|---|");
    let mut first = None;
    {
        let store = Store::open_with_cache(&path, a.cache).expect("open the store");
        for round in 0..=a.rounds {
            let now = START + i64::from(round) * ROUND_SECS;
            let keys_before = store.keys_written();
            let started = Instant::now();
            let mut ingest = store.scan_ingest().expect("an ingest");
            for agent in 0..a.agents {
                let facts = credential(a.agents, agent, round);
                ingest
                    .observe(facts, Some(Role::Agent), file_of(agent), now)
                    .expect("observe");
                if round > 0 {
                    let old = credential(a.agents, agent, round - 1).fingerprint;
                    ingest
                        .mark_gone(&old, &file_of(agent), now)
                        .expect("mark gone");
                }
                if ingest.len() >= BATCH {
                    ingest.commit().expect("commit");
                }
            }
            ingest.commit().expect("commit");
            let took = started.elapsed();
            let per = took.as_secs_f64() * 1e6 / f64::from(a.agents);
            let first_per = *first.get_or_insert(per);
            let keys = store.keys_written() - keys_before;
            println!(
                "| {round} | {} | {:.2} s | {per:.1} µs | {:.2} | {:.2} |",
                store.len(),
                took.as_secs_f64(),
                per / first_per,
                keys as f64 / f64::from(a.agents),
            );
        }
        store.flush().expect("flush");
    }
    let store = Store::open_with_cache(&path, a.cache).expect("reopen the store");
    let now = START + i64::from(a.rounds) * ROUND_SECS;
    let (from, before) = (now + 1, now + 30 * 86_400 + 1);
    for attempt in 1..=3 {
        let started = Instant::now();
        let mut records = 0usize;
        for slice in store.expiring_slices(from, before, 64, 8192) {
            records += slice.expect("records").len();
        }
        let took = started.elapsed();
        println!(
            "30-day window as a list reads it (one range), read {attempt}: {records} records in {:.0} ms, {:.1} µs per record",
            took.as_secs_f64() * 1e3,
            took.as_secs_f64() * 1e6 / records.max(1) as f64,
        );
    }
    for attempt in 1..=3 {
        let started = Instant::now();
        let hits = store.expiry_hits(from, before, None).expect("hits");
        let index = started.elapsed();
        let mut records = 0usize;
        for slice in hits.chunks(8192) {
            records += store.records_of_hits(slice, None).expect("records").len();
        }
        let took = started.elapsed();
        println!(
            "30-day window through the expiry index, read {attempt}: {records} records ({} hits) in {:.0} ms (index {:.0} ms), {:.1} µs per record",
            hits.len(),
            took.as_secs_f64() * 1e3,
            index.as_secs_f64() * 1e3,
            took.as_secs_f64() * 1e6 / records.max(1) as f64,
        );
    }
}
