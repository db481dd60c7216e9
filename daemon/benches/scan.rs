//! The scan benchmark: `cargo bench -p certctl-daemon --bench scan [-- OPTIONS]`.
//!
//! Options: `--files N` (default 200000), `--store-certs M` (default 1000000),
//! `--dir DIR` (where the generated files are kept between runs; default
//! `target/bench-fleet-N`), `--skip-big-store`.
//!
//! It measures, on the same files in the same run:
//! 1. a bare single-threaded loop: read each file, decode PEM, parse with x509-parser
//!    (the baseline a scan is compared with);
//! 2. a full scan into a new store (read, parse, fingerprint, store with indexes);
//! 3. an unchanged re-scan (size + mtime check only);
//! 4. a forced re-scan (`--full`: everything parsed again, nothing new);
//! 5. on a store of M synthetic certificates: `list --expiring-within 30d` (answered from
//!    the expiry index) against reading every record.
//!
//! Figures are printed; nothing is asserted (machines are noisy).

use std::path::{Path, PathBuf};
use std::time::Instant;

use certctl_daemon::query::{self, ListFilter};
use certctl_daemon::scan::{scan, ScanOptions, ScanProgress};
use certctl_daemon::Duration;
use certctl_store::*;

/// The allocator the `certctl` and `certd` binaries use, so the figures are theirs.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

struct Args {
    files: usize,
    store_certs: usize,
    dir: Option<PathBuf>,
    skip_big_store: bool,
}

fn args() -> Args {
    let mut a = Args {
        files: 200_000,
        store_certs: 1_000_000,
        dir: None,
        skip_big_store: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--files" => a.files = it.next().and_then(|v| v.parse().ok()).unwrap_or(a.files),
            "--store-certs" => {
                a.store_certs = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(a.store_certs)
            }
            "--dir" => a.dir = it.next().map(PathBuf::from),
            "--skip-big-store" => a.skip_big_store = true,
            _ => {} // cargo bench passes `--bench`
        }
    }
    a
}

fn main() {
    let a = args();
    let now = now();
    let dir = a.dir.clone().unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../target")
            .join(format!("bench-fleet-{}", a.files))
    });
    let marker = dir.join(".complete");
    if !marker.exists() {
        let _ = std::fs::remove_dir_all(&dir);
        let t = Instant::now();
        certctl_daemon::demo::write_bench_files(&dir, a.files, now).expect("generate files");
        std::fs::write(&marker, a.files.to_string()).expect("marker");
        println!(
            "generated {} files in {:.1}s ({})",
            a.files,
            t.elapsed().as_secs_f64(),
            dir.display()
        );
    }
    println!("files: {} in {}", a.files, dir.display());
    println!(
        "cores: {}",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    // 1. Baseline (run twice: the first pass also warms the page cache).
    bare_loop(&dir);
    let (n, secs) = bare_loop(&dir);
    let bare_rate = n as f64 / secs;
    println!("bare read+parse loop (1 thread): {n} certs in {secs:.2}s = {bare_rate:.0} certs/s");

    // 2-4. Scans.
    let store_dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(store_dir.path()).expect("store");
    let paths = vec![dir.clone()];
    let threads: usize = std::env::var("CERTCTL_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut options = ScanOptions {
        role: Some(Role::Agent),
        threads,
        ..Default::default()
    };
    let run_on = |store: &Store, label: &str, options: &ScanOptions| -> f64 {
        settle();
        let t = Instant::now();
        let cpu = cpu_secs();
        let s = scan(store, &paths, options, now, &ScanProgress::default()).expect("scan");
        let secs = t.elapsed().as_secs_f64();
        let cpu = cpu_secs() - cpu;
        let files = s.files_read + s.files_unchanged + s.files_skipped + s.files_failed;
        println!(
            "{label}: {files} files, {} certs new, in {secs:.2}s = {:.0} files/s, {:.0} certs/s ({:.2}x the bare loop, {:.1} µs/file wall, {:.1} µs/file CPU on all threads)",
            s.certificates_new,
            files as f64 / secs,
            s.certificates_seen.max(s.files_unchanged) as f64 / secs,
            (s.certificates_seen.max(s.files_unchanged) as f64 / secs) / bare_rate,
            secs * 1e6 / files.max(1) as f64,
            cpu * 1e6 / files.max(1) as f64,
        );
        assert_eq!(s.files_failed, 0, "{:?}", s.errors.first());
        s.certificates_seen as f64 / secs
    };
    let run = |label: &str, options: &ScanOptions| run_on(&store, label, options);
    // The full scan three times, each into a new store (the last one's store is used by
    // the re-scans): machines are noisy, the median says more than one run.
    let mut full_rates = Vec::new();
    for k in 1..=2 {
        let other = tempfile::tempdir().expect("tempdir");
        let other_store = Store::open(other.path()).expect("store");
        full_rates.push(run_on(
            &other_store,
            &format!("full scan (new store), run {k}"),
            &options,
        ));
    }
    full_rates.push(run("full scan (new store), run 3", &options));
    full_rates.sort_by(f64::total_cmp);
    println!(
        "full scan (new store): median of 3 runs {:.0} certs/s (best {:.0})",
        full_rates[1], full_rates[2]
    );
    run("unchanged re-scan", &options);
    options.full = true;
    run("forced re-scan (--full)", &options);
    println!(
        "store size on disk: {:.1} MiB",
        dir_size(store_dir.path()) as f64 / 1048576.0
    );
    println!("peak RSS so far: {} MiB", peak_rss_mib());
    drop(store);

    if !a.skip_big_store {
        big_store(a.store_certs, now);
    }
}

fn bare_loop(dir: &Path) -> (usize, f64) {
    let t = Instant::now();
    let cpu = cpu_secs();
    let mut n = 0usize;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "pem") {
                let bytes = std::fs::read(&p).expect("read");
                for pem in x509_parser::pem::Pem::iter_from_buffer(&bytes) {
                    let pem = pem.expect("pem");
                    let (_, cert) =
                        x509_parser::parse_x509_certificate(&pem.contents).expect("x509");
                    std::hint::black_box(cert.validity().not_after);
                    n += 1;
                }
            }
        }
    }
    let cpu = cpu_secs() - cpu;
    println!(
        "  (bare loop CPU: {:.1} µs/cert)",
        cpu * 1e6 / n.max(1) as f64
    );
    (n, t.elapsed().as_secs_f64())
}

fn big_store(m: usize, now: UnixTime) {
    let store_dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(store_dir.path()).expect("store");
    let t = Instant::now();
    let cpu = cpu_secs();
    let mut batch = store.ingest();
    for i in 0..m {
        let facts = synthetic(i, now);
        let location = SourceLocation::File {
            path: format!("/fleet/agents/{:04}/agent-{i:07}.pem", i / 1000),
            index: 0,
        };
        batch
            .observe(facts, Some(Role::Agent), location, now)
            .expect("observe");
        if batch.len() >= 8192 {
            batch.commit().expect("commit");
        }
    }
    batch.commit().expect("commit");
    store.flush().expect("flush");
    let secs = t.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu;
    println!(
        "built a {m}-certificate store in {secs:.1}s ({:.0} certs/s, store writes only; {:.1} µs CPU/cert)",
        m as f64 / secs,
        cpu * 1e6 / m as f64
    );

    let filter = ListFilter {
        expiring_within: Some(Duration::days(30)),
        ..Default::default()
    };
    query::list(&store, &filter, now).expect("warm");
    let t = Instant::now();
    let hits = query::list(&store, &filter, now).expect("list");
    let indexed = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut all = 0usize;
    let mut matching = 0usize;
    for c in store.iter() {
        let c = c.expect("record");
        all += 1;
        if c.facts.not_after > now && c.facts.not_after <= now + 30 * 86_400 {
            matching += 1;
        }
    }
    let full = t.elapsed().as_secs_f64();
    assert_eq!(hits.len(), matching, "index and full scan disagree");
    println!(
        "list --expiring-within 30d on {all} certificates: {} hits in {:.1} ms from the index; reading every record takes {:.1} ms ({:.0}x slower)",
        hits.len(),
        indexed * 1e3,
        full * 1e3,
        full / indexed
    );
    println!(
        "big store size on disk: {:.1} MiB",
        dir_size(store_dir.path()) as f64 / 1048576.0
    );
    println!("peak RSS: {} MiB", peak_rss_mib());
}

/// A plausible certificate without generating one: unique fingerprint and key, expiry
/// spread over two years.
fn synthetic(i: usize, now: UnixTime) -> CertificateFacts {
    let h = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5555;
    let mut fp = [0u8; 32];
    for (k, chunk) in fp.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(
            &h.rotate_left(k as u32 * 17)
                .wrapping_add(i as u64)
                .to_be_bytes(),
        );
    }
    let mut spki = fp;
    spki.reverse();
    let not_after = now - 30 * 86_400 + (h % (730 * 86_400)) as i64;
    let cn = format!("agent-{i:07}.contoso.example");
    CertificateFacts {
        fingerprint: Sha256(fp),
        subject: format!("CN={cn},O=Contoso"),
        subject_cn: Some(cn.clone()),
        issuer: "CN=Contoso Issuing CA 1,O=Contoso".into(),
        serial: format!("{i:x}"),
        not_before: not_after - 365 * 86_400,
        not_after,
        sans: SubjectAltNames {
            dns: vec![cn],
            ..Default::default()
        },
        key: KeyAlgorithm::Ec {
            curve: "P-256".into(),
        },
        signature_algorithm: "ecdsa-with-SHA256".into(),
        is_ca: false,
        subject_key_id: Some(KeyId(spki[..20].to_vec())),
        authority_key_id: Some(KeyId([0x78; 20].to_vec())),
        spki_sha256: Sha256(spki),
        crl_distribution_points: vec![],
        ocsp_urls: vec![],
    }
}

/// CPU time (user + system, all threads) this process used so far, from /proc (10 ms
/// resolution): steadier than wall time on a busy machine.
fn cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which is in parentheses): utime is the 12th, stime 13th.
    let after = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<f64>().ok())
        .sum();
    ticks / 100.0
}

fn dir_size(p: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            total += if path.is_dir() {
                dir_size(&path)
            } else {
                e.metadata().map_or(0, |m| m.len())
            };
        }
    }
    total
}

fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

/// Writes dirty pages out (`sync`) before a timed run, so that the kernel's write-back of
/// the previous run's ~0.5 GB does not take CPU from this one.
fn settle() {
    let _ = std::process::Command::new("sync").status();
}
