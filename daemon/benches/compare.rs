//! The side-by-side benchmark (issue 7): certctl against what users would otherwise run.
//!
//! Run it with `./scripts/bench-compare [--files N] [--store-certs M]` (that script builds
//! the release binaries and the Python virtualenv first), or, with both in place,
//! `cargo bench -p certctl-daemon --bench compare -- OPTIONS`.
//!
//! Options: `--files N` (default 200000), `--store-certs M` (default 1000000),
//! `--sample K` (the openssl loop reads every K-th file; default 100), `--repeat R` (runs of
//! each short query; default 3), `--dir DIR` (the generated tree, kept between runs; default
//! `target/bench-fleet-N`, shared with the `scan` bench), `--python PATH` (default
//! `target/bench-venv/bin/python`), `--bin-dir DIR` (default `target/release`), `--out FILE`
//! (the results table; default `target/bench-compare/results.md`), `--skip-files`,
//! `--skip-store`, `--certd-env NAME=VALUE` (run certd with this in its environment, e.g.
//! `MALLOC_ARENA_MAX=2`; repeatable), `--store-cache SIZE` (certd's `store_cache`),
//! `--reuse-store` (keep the big store for the next run with the same M:
//! for working on the queries; the figures then include earlier runs' effects).
//!
//! In one run it measures, on the same generated tree of N one-certificate PEM files:
//! 1. `certctl scan` (the real binary) into a fresh store: read, parse, fingerprint, store;
//! 2. `scripts/bench/parse_certs.py`: Python's `cryptography` reading every file and
//!    extracting the same fields, storing nothing (one process);
//! 3. a shell loop of `openssl x509 -noout -enddate -subject -in FILE` over every K-th file
//!    (a process per file; the full tree would take hours), extrapolated to N;
//! 4. an unchanged `certctl scan` (size + mtime only);
//!
//! and on a store of M synthetic certificates (built in-process with the store API, with
//! the file states a scan leaves), directly and through a running `certd`:
//! 5. `certctl list --expiring-within 30d --json`, `certctl check`,
//!    `certctl --config FILE remind --dry-run` (a policy under which thousands are due),
//!    and a `GET /metrics` scrape (through certd only);
//! 6. certd's resident memory after start-up and its peak (VmHWM) after all of that.
//!
//! Wall and CPU times come from `wait4` (child processes, all threads). Figures are printed
//! as a markdown table; nothing is asserted against a clock. The bench refuses to run
//! outside `cargo bench` (under `cargo test --all-targets` it only says so).

use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use certctl_store::*;

const DAY: i64 = 86_400;

struct Args {
    files: usize,
    store_certs: usize,
    sample: usize,
    repeat: usize,
    dir: Option<PathBuf>,
    python: PathBuf,
    bin_dir: PathBuf,
    out: PathBuf,
    skip_files: bool,
    skip_store: bool,
    reuse_store: bool,
    certd_env: Vec<(String, String)>,
    store_cache: Option<String>,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the daemon crate is inside the workspace")
        .to_path_buf()
}

fn args() -> Args {
    let repo = repo();
    let mut a = Args {
        files: 200_000,
        store_certs: 1_000_000,
        sample: 100,
        repeat: 3,
        dir: None,
        python: repo.join("target/bench-venv/bin/python"),
        bin_dir: repo.join("target/release"),
        out: repo.join("target/bench-compare/results.md"),
        skip_files: false,
        skip_store: false,
        reuse_store: false,
        certd_env: Vec::new(),
        store_cache: None,
    };
    let mut it = std::env::args().skip(1);
    let number = |v: Option<String>, name: &str| -> usize {
        v.as_deref()
            .map(|s| s.replace(['_', ','], ""))
            .and_then(|s| s.parse().ok())
            .filter(|n| *n > 0)
            .unwrap_or_else(|| panic!("{name} needs a positive number"))
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--files" => a.files = number(it.next(), "--files"),
            "--store-certs" => a.store_certs = number(it.next(), "--store-certs"),
            "--sample" => a.sample = number(it.next(), "--sample"),
            "--repeat" => a.repeat = number(it.next(), "--repeat"),
            "--dir" => a.dir = it.next().map(PathBuf::from),
            "--python" => a.python = PathBuf::from(it.next().expect("--python PATH")),
            "--bin-dir" => a.bin_dir = PathBuf::from(it.next().expect("--bin-dir DIR")),
            "--out" => a.out = PathBuf::from(it.next().expect("--out FILE")),
            "--skip-files" => a.skip_files = true,
            "--skip-store" => a.skip_store = true,
            "--reuse-store" => a.reuse_store = true,
            "--certd-env" => {
                let kv = it.next().expect("--certd-env NAME=VALUE");
                let (k, v) = kv.split_once('=').expect("--certd-env NAME=VALUE");
                a.certd_env.push((k.to_string(), v.to_string()));
            }
            "--store-cache" => a.store_cache = Some(it.next().expect("--store-cache SIZE")),
            "--bench" => {} // cargo bench passes it
            other => panic!("unknown option {other} (see the top of daemon/benches/compare.rs)"),
        }
    }
    a
}

/// One row of the results table.
struct Row {
    step: String,
    work: String,
    time: String,
    rate: String,
    per_item: String,
    note: String,
}

fn row(
    step: &str,
    work: String,
    time: String,
    rate: String,
    per_item: String,
    note: String,
) -> Row {
    Row {
        step: step.to_string(),
        work,
        time,
        rate,
        per_item,
        note,
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("compare: a long benchmark; run it with scripts/bench-compare or `cargo bench -p certctl-daemon --bench compare`");
        return;
    }
    let a = args();
    let certctl = a.bin_dir.join("certctl");
    let certd = a.bin_dir.join("certd");
    for bin in [&certctl, &certd] {
        assert!(
            bin.exists(),
            "{} is missing: build it first (cargo build --release --bins)",
            bin.display()
        );
    }
    let work = repo().join("target/bench-compare");
    fs::create_dir_all(&work).expect("create target/bench-compare");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mem_gib = mem_total_gib();
    eprintln!(
        "compare: {cores} cores, {mem_gib:.0} GiB; work folder {}",
        work.display()
    );

    let mut rows = Vec::new();
    let mut targets = Vec::new();
    if !a.skip_files {
        compare_files(&a, &certctl, &work, &mut rows, &mut targets);
    }
    if !a.skip_store {
        big_store(&a, &certctl, &certd, &work, &mut rows, &mut targets);
    }

    let mut md = String::new();
    let _ = writeln!(
        md,
        "Measured on {} ({cores} cores, {mem_gib:.0} GiB), release build, files in the page cache:\n",
        &rfc3339(now())[..10]
    );
    let _ = writeln!(
        md,
        "| step | work | time | rate | per item (wall) | notes |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|");
    for r in &rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            r.step, r.work, r.time, r.rate, r.per_item, r.note
        );
    }
    if !targets.is_empty() {
        let _ = writeln!(md, "\n| target | measured | met |\n|---|---|---|");
        for (target, measured, met) in &targets {
            let _ = writeln!(
                md,
                "| {target} | {measured} | {} |",
                if *met { "yes" } else { "no" }
            );
        }
    }
    if let Some(parent) = a.out.parent() {
        fs::create_dir_all(parent).expect("create the results folder");
    }
    fs::write(&a.out, &md).expect("write the results");
    println!("\n{md}");
    eprintln!("compare: results written to {}", a.out.display());
}

// ---- the file tree: certctl vs Python vs openssl ----------------------------------------------

fn compare_files(
    a: &Args,
    certctl: &Path,
    work: &Path,
    rows: &mut Vec<Row>,
    targets: &mut Vec<(String, String, bool)>,
) {
    let n = a.files;
    let dir = a
        .dir
        .clone()
        .unwrap_or_else(|| repo().join(format!("target/bench-fleet-{n}")));
    let marker = dir.join(".complete");
    if !marker.exists() {
        let _ = fs::remove_dir_all(&dir);
        eprintln!("compare: generating {n} certificates in {}", dir.display());
        let t = Instant::now();
        certctl_daemon::demo::write_bench_files(&dir, n, now()).expect("generate the tree");
        fs::write(&marker, n.to_string()).expect("write the marker");
        eprintln!("compare: generated in {:.1}s", t.elapsed().as_secs_f64());
    }
    let warm = Instant::now();
    let bytes = read_tree(&dir);
    eprintln!(
        "compare: {n} files ({:.1} MiB) read once into the page cache in {:.1}s",
        bytes as f64 / 1048576.0,
        warm.elapsed().as_secs_f64()
    );

    // 1. certctl scan into a fresh store.
    let store = work.join("scan-store");
    let _ = fs::remove_dir_all(&store);
    let scan = |label: &str| {
        let r = run(
            Command::new(certctl)
                .arg("--store")
                .arg(&store)
                .args(["scan", "--role", "agent"])
                .arg(&dir),
            &work.join(format!("{label}.out")),
            &work.join(format!("{label}.err")),
        );
        assert_eq!(r.code, Some(0), "certctl scan failed: {}", r.stderr_tail());
        eprintln!("compare: certctl {label}: {}", r.stdout.trim());
        r
    };
    // Each run into a new store; the median run is reported (the last store stays for the
    // re-scans below).
    let mut fulls: Vec<Timed> = (0..a.repeat.max(1))
        .map(|k| {
            let _ = fs::remove_dir_all(&store);
            scan(&if k == 0 {
                "scan".to_string()
            } else {
                format!("scan-{k}")
            })
        })
        .collect();
    fulls.sort_by(|x, y| x.wall.total_cmp(&y.wall));
    let best = fulls[0].wall;
    let full = &fulls[fulls.len() / 2];
    let certctl_rate = n as f64 / full.wall;
    rows.push(row(
        "`certctl scan` (new store: read, parse, fingerprint, store with indexes)",
        format!("{} files", thousands(n)),
        format!("{} (best {})", secs(full.wall), secs(best)),
        format!("{} certs/s", thousands(certctl_rate as usize)),
        format!("{:.1} µs", full.wall * 1e6 / n as f64),
        format!(
            "median of {}; all cores; CPU {:.1} µs/cert; peak RSS {} MiB",
            fulls.len(),
            full.cpu * 1e6 / n as f64,
            full.maxrss_kib / 1024
        ),
    ));

    // 2. Python + cryptography.
    let mut python_rate = None;
    if a.python.exists() {
        let r = run(
            Command::new(&a.python)
                .arg(repo().join("scripts/bench/parse_certs.py"))
                .arg(&dir),
            &work.join("python.out"),
            &work.join("python.err"),
        );
        assert_eq!(
            r.code,
            Some(0),
            "parse_certs.py failed: {}",
            r.stderr_tail()
        );
        eprintln!("compare: python: {}", r.stdout.trim());
        assert!(
            r.stdout.contains(&format!("certificates={n} ")),
            "parse_certs.py did not read {n} certificates: {}",
            r.stdout.trim()
        );
        let rate = n as f64 / r.wall;
        python_rate = Some(rate);
        rows.push(row(
            "Python `cryptography` script (`scripts/bench/parse_certs.py`: same fields, stores nothing)",
            format!("{} files", thousands(n)),
            secs(r.wall),
            format!("{} certs/s", thousands(rate as usize)),
            format!("{:.1} µs", r.wall * 1e6 / n as f64),
            format!(
                "1 process; CPU {:.1} µs/cert; **certctl {:.1}× faster**",
                r.cpu * 1e6 / n as f64,
                certctl_rate / rate
            ),
        ));
        targets.push((
            "full scan (storing) ≥ 3× the Python script (storing nothing)".to_string(),
            format!("{:.1}×", certctl_rate / rate),
            certctl_rate / rate >= 3.0,
        ));
    } else {
        eprintln!(
            "compare: {} is missing, skipping the Python comparison (scripts/bench-compare creates it)",
            a.python.display()
        );
    }

    // 3. openssl x509 per file, on a deterministic sample.
    let sample: Vec<PathBuf> = (0..n)
        .step_by(a.sample)
        .map(|i| {
            dir.join(format!(
                "{:05}",
                i / certctl_daemon::demo::BENCH_FILES_PER_FOLDER
            ))
            .join(format!("host-{i:07}.pem"))
        })
        .collect();
    let list = work.join("openssl-sample.txt");
    let mut text = String::new();
    for p in &sample {
        let _ = writeln!(text, "{}", p.display());
    }
    fs::write(&list, text).expect("write the sample list");
    let r = run(
        Command::new("bash").arg("-c").arg(format!(
            "while IFS= read -r f; do openssl x509 -noout -enddate -subject -in \"$f\" || exit 1; done < '{}'",
            list.display()
        )),
        &work.join("openssl.out"),
        &work.join("openssl.err"),
    );
    assert_eq!(
        r.code,
        Some(0),
        "the openssl loop failed: {}",
        r.stderr_tail()
    );
    let lines = count_in_file(&work.join("openssl.out"), "notAfter=");
    assert_eq!(lines, sample.len(), "openssl printed {lines} dates");
    let rate = sample.len() as f64 / r.wall;
    rows.push(row(
        "shell loop of `openssl x509 -noout -enddate -subject` (a process per file)",
        format!("{} files (every {}th)", thousands(sample.len()), a.sample),
        secs(r.wall),
        format!("{rate:.0} files/s"),
        format!("{:.2} ms", r.wall * 1e3 / sample.len() as f64),
        format!(
            "**extrapolated to {} files: {}**; certctl {:.0}× faster",
            thousands(n),
            secs(n as f64 / rate),
            certctl_rate / rate
        ),
    ));
    let _ = python_rate;

    // 4. Unchanged re-scan.
    let mut walls = Vec::new();
    let mut last = None;
    for k in 0..a.repeat {
        let r = scan(&format!("rescan-{k}"));
        walls.push(r.wall);
        last = Some(r);
    }
    let (median, best) = median_best(&walls);
    let last = last.expect("at least one run");
    rows.push(row(
        "unchanged `certctl scan` (size + mtime)",
        format!("{} files", thousands(n)),
        format!("{} (best {})", secs(median), secs(best)),
        format!("{} files/s", thousands((n as f64 / median) as usize)),
        format!("{:.1} µs", median * 1e6 / n as f64),
        format!(
            "median of {}; CPU {:.1} µs/file",
            a.repeat,
            last.cpu * 1e6 / n as f64
        ),
    ));
    let _ = fs::remove_dir_all(&store);
}

/// Reads every file once (so each tool starts with the tree in the page cache); returns
/// the bytes read.
fn read_tree(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    let mut buf = Vec::new();
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                buf.clear();
                total += fs::File::open(&p)
                    .and_then(|mut f| f.read_to_end(&mut buf))
                    .expect("read") as u64;
            }
        }
    }
    total
}

// ---- the big store: queries, reminders, certd's memory -----------------------------------------

fn big_store(
    a: &Args,
    certctl: &Path,
    certd: &Path,
    work: &Path,
    rows: &mut Vec<Row>,
    targets: &mut Vec<(String, String, bool)>,
) {
    let m = a.store_certs;
    let store = work.join("big-store");
    // `--reuse-store` (for working on the queries): the store of the last run with the same
    // M, and the time it was built for.
    let marker = work.join("big-store.built");
    let reused = fs::read_to_string(&marker)
        .ok()
        .and_then(|s| {
            let (count, at) = s.trim().split_once(' ')?;
            (count.parse::<usize>().ok()? == m).then_some(at.parse::<UnixTime>().ok()?)
        })
        .filter(|_| a.reuse_store && store.exists());
    let _ = fs::remove_file(&marker);
    let t = Instant::now();
    let t0 = match reused {
        Some(t0) => t0,
        None => {
            let _ = fs::remove_dir_all(&store);
            let t0 = now();
            build_store(&store, m, t0);
            t0
        }
    };
    let built = t.elapsed().as_secs_f64();
    eprintln!(
        "compare: built a {m}-certificate store in {built:.1}s ({:.1} MiB on disk)",
        dir_size(&store) as f64 / 1048576.0
    );
    let layout = format!(
        "{:.0} MiB on disk; expiry spread over [-3 d, +727 d), files of 1,000 per folder",
        dir_size(&store) as f64 / 1048576.0
    );
    rows.push(match reused {
        Some(_) => row(
            "building the synthetic store (store API, for the rows below)",
            format!("{} certificates", thousands(m)),
            "reused (--reuse-store)".to_string(),
            String::new(),
            String::new(),
            layout,
        ),
        None => row(
            "building the synthetic store (store API, for the rows below)",
            format!("{} certificates", thousands(m)),
            secs(built),
            format!("{} certs/s", thousands((m as f64 / built) as usize)),
            format!("{:.1} µs", built * 1e6 / m as f64),
            layout,
        ),
    });

    // Policies and configuration for the reminder pass and certd.
    let policies = work.join("policies");
    let _ = fs::remove_dir_all(&policies);
    fs::create_dir_all(&policies).expect("policies folder");
    fs::write(
        policies.join("bench.toml"),
        "[[policy]]\nname = \"agents\"\nroles = [\"agent\"]\nremind = [\"7d\", \"1d\"]\nwarn = \"7d\"\ncritical = \"1d\"\nrecipients = [\"platform-team@bench.example\", \"pki-team@bench.example\"]\n",
    )
    .expect("write the policy");
    let metrics_port = free_port();
    let config = work.join("certd.toml");
    fs::write(
        &config,
        format!(
            "store = \"{}\"\n{}[scan]\nschedule = \"off\"\nwatch = false\n[probe]\nschedule = \"off\"\n\
             [smtp]\nhost = \"127.0.0.1\"\nport = 2525\nsecurity = \"none\"\nfrom = \"certd@bench.example\"\n\
             [reminders]\nschedule = \"0 0 1 1 *\"\npolicies = \"{}\"\n\
             [metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n",
            store.display(),
            a.store_cache
                .as_ref()
                .map_or(String::new(), |c| format!("store_cache = \"{c}\"\n")),
            policies.display()
        ),
    )
    .expect("write the configuration");

    let expected_hits = count_expiring(m, t0);
    // Returns the list's median and, through certd, its peak RSS (KiB) after the list,
    // check and reminder rows.
    let queries = |mode: &str, pid: Option<u32>, rows: &mut Vec<Row>| -> (f64, [u64; 3]) {
        let hwm = || pid.map_or(0, |p| proc_status_kib(p, "VmHWM:"));
        let mut peaks = [0; 3];
        // list --expiring-within 30d --json
        let list = repeat(a.repeat, |k| {
            let r = run(
                Command::new(certctl).arg("--store").arg(&store).args([
                    "list",
                    "--expiring-within",
                    "30d",
                    "--json",
                ]),
                &work.join(format!("list-{mode}-{k}.json")),
                &work.join(format!("list-{mode}-{k}.err")),
            );
            assert_eq!(r.code, Some(0), "list failed: {}", r.stderr_tail());
            r
        });
        let out = work.join(format!("list-{mode}-0.json"));
        let hits = count_in_file(&out, "\"fingerprint_sha256\"");
        let size = fs::metadata(&out).map_or(0, |md| md.len());
        assert!(
            hits.abs_diff(expected_hits) <= expected_hits / 100 + 10,
            "{mode} list returned {hits} certificates, about {expected_hits} expected"
        );
        rows.push(row(
            &format!("`certctl list --expiring-within 30d --json` ({mode})"),
            format!("{} certs, {} hits", thousands(m), thousands(hits)),
            format!("{} (best {})", ms(list.median), ms(list.best)),
            format!("{} hits/s", thousands((hits as f64 / list.median) as usize)),
            format!("{:.2} µs/hit", list.median * 1e6 / hits.max(1) as f64),
            format!(
                "median of {}; {:.1} MiB of JSON; client CPU+{}",
                a.repeat,
                size as f64 / 1048576.0,
                if mode == "direct" {
                    "store".to_string()
                } else {
                    "rendering".to_string()
                }
            ),
        ));
        peaks[0] = hwm();
        // check
        let check = repeat(a.repeat, |k| {
            let r = run(
                Command::new(certctl)
                    .arg("--store")
                    .arg(&store)
                    .arg("check"),
                &work.join(format!("check-{mode}-{k}.out")),
                &work.join(format!("check-{mode}-{k}.err")),
            );
            assert!(
                matches!(r.code, Some(0..=2)),
                "check failed: {}",
                r.stderr_tail()
            );
            r
        });
        let summary =
            fs::read_to_string(work.join(format!("check-{mode}-0.out"))).unwrap_or_default();
        rows.push(row(
            &format!("`certctl check` ({mode})"),
            format!("{} certs", thousands(m)),
            format!("{} (best {})", ms(check.median), ms(check.best)),
            format!("{} certs/s", thousands((m as f64 / check.median) as usize)),
            format!("{:.2} µs/cert", check.median * 1e6 / m as f64),
            format!(
                "median of {}; `{}`",
                a.repeat,
                summary.trim().replace('|', "/")
            ),
        ));
        peaks[1] = hwm();
        // remind --dry-run
        let remind = repeat(a.repeat.min(2), |k| {
            let r = run(
                Command::new(certctl).arg("--config").arg(&config).args([
                    "remind",
                    "--dry-run",
                    "--json",
                ]),
                &work.join(format!("remind-{mode}-{k}.json")),
                &work.join(format!("remind-{mode}-{k}.err")),
            );
            assert_eq!(r.code, Some(0), "remind failed: {}", r.stderr_tail());
            r
        });
        let due = count_in_file(
            &work.join(format!("remind-{mode}-0.json")),
            "\"threshold_secs\"",
        );
        rows.push(row(
            &format!("reminder pass, `certctl --config F remind --dry-run --json` ({mode})"),
            format!("{} certs, {} reminders due", thousands(m), thousands(due)),
            format!("{} (best {})", secs(remind.median), secs(remind.best)),
            format!("{} certs/s", thousands((m as f64 / remind.median) as usize)),
            format!("{:.2} µs/cert", remind.median * 1e6 / m as f64),
            format!(
                "median of {}; 2 recipients, thresholds 7d and 1d",
                a.repeat.min(2)
            ),
        ));
        peaks[2] = hwm();
        (list.median, peaks)
    };

    queries("direct", None, rows);

    // certd on the same store.
    let log = work.join("certd.log");
    let started = Instant::now();
    let mut daemon = Command::new(certd)
        .args(["run", "--config"])
        .arg(&config)
        .envs(a.certd_env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).expect("certd log"))
        .spawn()
        .expect("start certd");
    let socket = store.join("certd.sock");
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        if let Ok(Some(status)) = daemon.try_wait() {
            panic!(
                "certd exited ({status}) before answering: {}",
                fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "certd did not answer within 2 min"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let startup = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(500)); // its start-up scan (no sources)
    let rss_started = proc_status_kib(daemon.id(), "VmRSS:");
    let (through, peaks) = queries("through certd", Some(daemon.id()), rows);
    let hwm_queries = peaks[2];
    // Prometheus scrapes.
    let scrape = repeat(a.repeat.min(2), |_| {
        let t = Instant::now();
        let body = http_get(metrics_port, "/metrics");
        let wall = t.elapsed().as_secs_f64();
        assert!(
            body.starts_with("HTTP/1.1 200"),
            "metrics: {}",
            &body[..body.len().min(200)]
        );
        Timed {
            wall,
            cpu: 0.0,
            maxrss_kib: 0,
            code: Some(0),
            stdout: String::new(),
            stderr: String::new(),
        }
    });
    rows.push(row(
        "`GET /metrics` from certd (agents aggregated)",
        format!("{} certs", thousands(m)),
        format!("{} (best {})", secs(scrape.median), secs(scrape.best)),
        format!("{} certs/s", thousands((m as f64 / scrape.median) as usize)),
        format!("{:.2} µs/cert", scrape.median * 1e6 / m as f64),
        format!("median of {}", a.repeat.min(2)),
    ));
    let rss_now = proc_status_kib(daemon.id(), "VmRSS:");
    let hwm = proc_status_kib(daemon.id(), "VmHWM:");
    rows.push(row(
        "certd resident memory",
        format!("{} certs", thousands(m)),
        format!("ready in {}", secs(startup)),
        String::new(),
        String::new(),
        format!(
            "{}store_cache {}: RSS {} MiB after start-up; **peak (VmHWM) {} MiB after the list rows, {} MiB after check**, {} MiB after the reminder pass, {} MiB after `/metrics` ({} MiB at the end)",
            a.certd_env
                .iter()
                .map(|(k, v)| format!("{k}={v}, "))
                .collect::<String>(),
            a.store_cache.as_deref().unwrap_or("default"),
            rss_started / 1024,
            peaks[0] / 1024,
            peaks[1] / 1024,
            peaks[2] / 1024,
            hwm / 1024,
            rss_now / 1024,
        ),
    ));
    stop(&mut daemon);
    targets.push((
        "`list --expiring-within 30d --json` through certd < 100 ms".to_string(),
        format!("{} (median)", ms(through)),
        through < 0.1,
    ));
    targets.push((
        format!(
            "certd peak RSS with {} certificates < 300 MB: serving list and check",
            thousands(m)
        ),
        format!(
            "{:.0} MB ({} MiB)",
            peaks[1] as f64 * 1024.0 / 1e6,
            peaks[1] / 1024
        ),
        (peaks[1] as f64 * 1024.0) < 300e6,
    ));
    targets.push((
        "… and after a reminder pass".to_string(),
        format!(
            "{:.0} MB ({} MiB)",
            hwm_queries as f64 * 1024.0 / 1e6,
            hwm_queries / 1024
        ),
        (hwm_queries as f64 * 1024.0) < 300e6,
    ));
    targets.push((
        "… and with `/metrics` scraped too".to_string(),
        format!("{:.0} MB ({} MiB)", hwm as f64 * 1024.0 / 1e6, hwm / 1024),
        (hwm as f64 * 1024.0) < 300e6,
    ));
    if a.reuse_store {
        fs::write(&marker, format!("{m} {t0}")).expect("write the store marker");
    } else {
        let _ = fs::remove_dir_all(&store);
    }
}

/// Writes a store of `m` synthetic agent certificates as a scan of `m` files in folders of
/// 1,000 would: records with one file source each, index postings, and per-folder file
/// states (which `list` reads to report when each file was last confirmed).
fn build_store(path: &Path, m: usize, now: UnixTime) {
    let store = Store::open(path).expect("open the big store");
    let mut batch = store.ingest();
    let per_folder = certctl_daemon::demo::BENCH_FILES_PER_FOLDER;
    for folder in 0..m.div_ceil(per_folder) {
        let dir = format!("/srv/fleet/{folder:05}");
        let mut files = Vec::with_capacity(per_folder);
        for i in folder * per_folder..((folder + 1) * per_folder).min(m) {
            let facts = synthetic(i, now);
            let fp = facts.fingerprint;
            let name = format!("host-{i:07}.pem");
            let location = SourceLocation::File {
                path: format!("{dir}/{name}"),
                index: 0,
            };
            batch
                .observe(facts, Some(Role::Agent), location, now)
                .expect("observe");
            files.push(FileState {
                name,
                size: 720,
                modified_ns: i128::from(now - DAY) * 1_000_000_000,
                last_seen: now,
                certificates: vec![fp],
                problem: None,
            });
        }
        batch.replace_dir(&dir, files);
        if batch.len() >= 8192 {
            batch.commit().expect("commit");
        }
    }
    batch.commit().expect("commit");
    store.flush().expect("flush");
}

/// Expiry of synthetic certificate `i`: spread over [now - 3 days, now + 727 days).
fn synthetic_not_after(i: usize, now: UnixTime) -> UnixTime {
    let h = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5555;
    now - 3 * DAY + (h % (730 * DAY as u64)) as i64
}

fn count_expiring(m: usize, now: UnixTime) -> usize {
    (0..m)
        .filter(|&i| {
            let t = synthetic_not_after(i, now);
            t > now && t <= now + 30 * DAY
        })
        .count()
}

/// A plausible agent certificate without generating one (as in the `scan` bench).
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
    let not_after = synthetic_not_after(i, now);
    let cn = format!("host-{i:07}.bench.example");
    CertificateFacts {
        fingerprint: Sha256(fp),
        subject: format!("CN={cn},OU=Bench,O=Contoso"),
        subject_cn: Some(cn.clone()),
        issuer: "CN=Bench Issuing CA,O=Contoso".into(),
        serial: format!("{:x}", 0x1000_0000 + i),
        not_before: not_after - 365 * DAY,
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
        authority_key_id: Some(KeyId(vec![0x78; 20])),
        spki_sha256: Sha256(spki),
        crl_distribution_points: vec![],
        ocsp_urls: vec![],
    }
}

// ---- running and timing child processes -------------------------------------------------------

struct Timed {
    wall: f64,
    /// User + system CPU of the child and its waited-for children.
    cpu: f64,
    maxrss_kib: u64,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Timed {
    fn stderr_tail(&self) -> String {
        let s = self.stderr.trim();
        s[s.len().saturating_sub(2000)..].to_string()
    }
}

/// Runs `cmd` with stdout and stderr going to files, and times it with `wait4`. The
/// returned `stdout` holds the first 64 KiB of the output.
fn run(cmd: &mut Command, stdout: &Path, stderr: &Path) -> Timed {
    let out = fs::File::create(stdout).expect("stdout file");
    let err = fs::File::create(stderr).expect("stderr file");
    // Dirty pages of the previous step (a scan writes ~0.5 GB) are written out first, so
    // that the kernel's write-back does not take CPU from this one.
    let _ = Command::new("sync").status();
    let t = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let (status, usage) = wait4(child);
    let wall = t.elapsed().as_secs_f64();
    let head = |p: &Path| {
        let mut s = String::new();
        if let Ok(f) = fs::File::open(p) {
            let _ = f.take(64 << 10).read_to_string(&mut s);
        }
        s
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Timed {
        wall,
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
        maxrss_kib: usage.ru_maxrss as u64,
        code: std::process::ExitStatus::from_raw(status).code(),
        stdout: head(stdout),
        stderr: head(stderr),
    }
}

/// Waits for the child and returns its raw wait status and resource usage.
fn wait4(child: Child) -> (i32, libc::rusage) {
    let pid = child.id() as libc::pid_t;
    // SAFETY: rusage is plain old data; wait4 fills it and the status for our own child,
    // which std never waits for (the Child is dropped without wait).
    #[allow(unsafe_code)]
    unsafe {
        let mut status = 0;
        let mut usage: libc::rusage = std::mem::zeroed();
        let r = libc::wait4(pid, &mut status, 0, &mut usage);
        assert_eq!(r, pid, "wait4: {}", std::io::Error::last_os_error());
        drop(child);
        (status, usage)
    }
}

struct Repeated {
    median: f64,
    best: f64,
}

fn repeat(n: usize, mut f: impl FnMut(usize) -> Timed) -> Repeated {
    let walls: Vec<f64> = (0..n.max(1)).map(|k| f(k).wall).collect();
    let (median, best) = median_best(&walls);
    Repeated { median, best }
}

fn median_best(walls: &[f64]) -> (f64, f64) {
    let mut w = walls.to_vec();
    w.sort_by(|a, b| a.total_cmp(b));
    (w[w.len() / 2], w[0])
}

/// SIGTERM, then wait (certd flushes its store and exits 0).
fn stop(child: &mut Child) {
    #[allow(unsafe_code)]
    // SAFETY: signalling our own child by its pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let status = child.wait().expect("wait for certd");
    assert!(status.success(), "certd exited with {status}");
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn mem_total_gib() -> f64 {
    fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1048576.0)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

fn http_get(port: u16, path: &str) -> String {
    let mut s =
        std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to certd's metrics");
    s.set_read_timeout(Some(Duration::from_secs(300)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut body = Vec::new();
    s.read_to_end(&mut body).expect("read the metrics");
    String::from_utf8_lossy(&body).into_owned()
}

fn count_in_file(path: &Path, needle: &str) -> usize {
    let text = fs::read(path).unwrap_or_default();
    let needle = needle.as_bytes();
    text.windows(needle.len()).filter(|w| *w == needle).count()
}

fn dir_size(p: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = fs::read_dir(p) {
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

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn secs(s: f64) -> String {
    if s >= 3600.0 {
        format!("{:.1} h", s / 3600.0)
    } else if s >= 120.0 {
        format!("{:.1} min", s / 60.0)
    } else if s >= 1.0 {
        format!("{s:.2} s")
    } else {
        ms(s)
    }
}

fn ms(s: f64) -> String {
    format!("{:.0} ms", s * 1e3)
}
