//! The store's memory while a scan writes batch after batch (issue 16: certd held 2–3 GB
//! scanning 200,000 new files, with a 32 MiB page cache).
//!
//! A test binary of its own: its global allocator counts the bytes live in the whole
//! process, which only means something when nothing else runs beside the test.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use certctl_store::*;

/// The system allocator, counting live bytes and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let live = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

// SAFETY: every call is passed on to `System` unchanged; only counters are updated.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const MIB: usize = 1 << 20;
const NOW: i64 = 1_800_000_000;

/// Agent `i`'s credential of round `round`: a fingerprint of its own, 6 hours long.
fn credential(i: u32, round: u32) -> CertificateFacts {
    let mut fp = [0u8; 32];
    fp[..4].copy_from_slice(&i.to_be_bytes());
    fp[4..8].copy_from_slice(&round.to_be_bytes());
    fp[8..16].copy_from_slice(
        &u64::from(i)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .to_be_bytes(),
    );
    let cn = format!("agent-{i:06}.fleet.example");
    let not_before = NOW + i64::from(round) * 6 * 3600;
    CertificateFacts {
        fingerprint: Sha256(fp),
        subject: format!("CN={cn},O=Fleet"),
        subject_cn: Some(cn),
        issuer: "CN=Fleet Agent CA,O=Fleet".into(),
        serial: format!("{:x}", u64::from(round) << 32 | u64::from(i)),
        not_before,
        not_after: not_before + 6 * 3600 + 1800,
        sans: SubjectAltNames::default(),
        key: KeyAlgorithm::Ec {
            curve: "P-256".into(),
        },
        signature_algorithm: "ecdsa-with-SHA256".into(),
        is_ca: false,
        subject_key_id: None,
        authority_key_id: None,
        spki_sha256: Sha256([7; 32]),
        crl_distribution_points: vec![],
        ocsp_urls: vec![],
    }
}

/// What one round left live: the peak of live heap bytes over it, and the median of what
/// its commits left live beyond what the batch held before it was committed (the median:
/// a commit made while sled's flusher is pinned cannot free at once, the next one does).
struct RoundMemory {
    peak: usize,
    commit_growth: usize,
}

/// Commits `ingest`, noting what the commit left live in `growths`.
fn commit(ingest: &mut Ingest<'_>, growths: &mut Vec<usize>) {
    let before = LIVE.load(Ordering::Relaxed);
    ingest.commit().expect("commit");
    growths.push(LIVE.load(Ordering::Relaxed).saturating_sub(before));
}

/// One round of a scan's writer: every agent's file holds a new credential (the old one, if
/// any, is marked gone from it), committed every `batch` certificates.
fn round(store: &Store, agents: u32, round: u32, batch: usize) -> RoundMemory {
    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
    let mut growths = Vec::new();
    let mut ingest = store.scan_ingest().expect("scan ingest");
    let now = NOW + i64::from(round) * 6 * 3600;
    for i in 0..agents {
        let location = SourceLocation::File {
            path: format!("/fleet/a{:03}/agent-{i:06}.pem", i / 1000),
            index: 0,
        };
        if round > 0 {
            let old = credential(i, round - 1).fingerprint;
            ingest.mark_gone(&old, &location, now).expect("mark gone");
        }
        ingest
            .observe(credential(i, round), Some(Role::Agent), location, now)
            .expect("observe");
        if ingest.len() >= batch {
            commit(&mut ingest, &mut growths);
        }
    }
    commit(&mut ingest, &mut growths);
    growths.sort_unstable();
    RoundMemory {
        peak: PEAK.load(Ordering::Relaxed),
        commit_growth: growths[growths.len() / 2],
    }
}

/// Every insert makes sled copy a whole tree node and leave the old copy to crossbeam-epoch's
/// collector, which frees a few hundred per 128 pins: before the store ran the collector
/// after its batches, the old copies a commit made stayed live after it (tens of MB per batch
/// of 2,048 certificates here, freed only as other pins came), and a scan of 200,000 files
/// piled them up to GBs. Now a commit leaves live little more than the page cache takes, and
/// what a scan's writer holds stays within a batch's worth, whatever the number of batches.
#[test]
fn a_scan_writer_does_not_pile_up_the_tree_nodes_sled_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open_with_cache(dir.path(), 8 << 20).expect("open");
    let before = LIVE.load(Ordering::Relaxed);
    let agents = 15_000;
    let import = round(&store, agents, 0, 2048);
    let after_import = LIVE.load(Ordering::Relaxed);
    let renewal = round(&store, agents, 1, 2048);
    let after_renewal = LIVE.load(Ordering::Relaxed);
    let mib = |b: usize| b.saturating_sub(before) / MIB;
    eprintln!(
        "live heap above the start: import peak {} MiB, after {} MiB, commits left {} KiB (median); \
         renewal peak {} MiB, after {} MiB, commits left {} KiB (median)",
        mib(import.peak),
        mib(after_import),
        import.commit_growth >> 10,
        mib(renewal.peak),
        mib(after_renewal),
        renewal.commit_growth >> 10,
    );
    assert_eq!(store.len(), 2 * agents as usize);
    for (what, growth) in [
        ("the import", import.commit_growth),
        ("the renewal round", renewal.commit_growth),
    ] {
        assert!(
            growth < 8 * MIB,
            "the commits of {what} left {} KiB live (median; the nodes they replaced)",
            growth >> 10
        );
    }
    for (what, bytes) in [
        ("peak of the import", import.peak),
        ("after the import", after_import),
        ("peak of the renewal round", renewal.peak),
        ("after the renewal round", after_renewal),
    ] {
        assert!(
            mib(bytes) < 120,
            "{what}: {} MiB live above the start (page cache 8 MiB)",
            mib(bytes)
        );
    }
}
