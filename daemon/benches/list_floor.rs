//! Where the time of `list --expiring-within 30d --json` goes on a large store:
//! `cargo bench -p certctl-daemon --bench list_floor [-- --store DIR --cache BYTES --rounds N]`.
//!
//! It runs the list as certd does (`query::list_batches`, then the streamed JSON writer), but
//! in one process and timed in two parts: reading the hits (index, records, last-seen
//! refresh) and rendering their JSON into memory. With a page cache big enough to hold every
//! record (`--cache 1073741824`), the later rounds show the floor of a list served from sled.
//! The default store is the one `./scripts/bench-compare` builds (1,000,000 certificates);
//! no certd may have it open.

use std::path::PathBuf;
use std::time::Instant;

use certctl_daemon::query::{self, ListFilter, QueryError};
use certctl_daemon::view::JsonListWriter;
use certctl_daemon::Duration;
use certctl_store::{Certificate, Store};

/// The allocator the `certctl` and `certd` binaries use, so the figures are theirs.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    let mut store =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-compare/big-store");
    let mut cache: u64 = 32 << 20;
    let mut rounds = 3;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--store" => store = PathBuf::from(it.next().expect("--store DIR")),
            "--cache" => {
                cache = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--cache BYTES")
            }
            "--rounds" => rounds = it.next().and_then(|v| v.parse().ok()).expect("--rounds N"),
            _ => {} // `--bench`, added by cargo
        }
    }
    assert!(
        store.join("db").exists(),
        "no store at {} (run ./scripts/bench-compare first, or pass --store DIR)",
        store.display()
    );
    let store = Store::open_with_cache(&store, cache).expect("open the store");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let filter = ListFilter {
        role: None,
        expiring_within: Some("30d".parse::<Duration>().expect("30d")),
        expired: false,
        issuer: None,
        name: None,
        kind: None,
    };
    println!("store page cache: {} MiB", cache >> 20);
    for round in 1..=rounds {
        let t = Instant::now();
        let mut hits: Vec<Certificate> = Vec::new();
        query::list_batches::<QueryError>(&store, &filter, now, |batch| {
            hits.extend(batch);
            Ok(())
        })
        .expect("list");
        let read = t.elapsed();
        let t = Instant::now();
        let mut json: Vec<u8> = Vec::with_capacity(64 << 20);
        let mut writer = JsonListWriter::new(&mut json, now);
        writer.write(&hits).expect("render");
        writer.finish().expect("render");
        let render = t.elapsed();
        println!(
            "round {round}: {} hits; read {:.0} ms ({:.1} µs/hit); JSON rendered in {:.0} ms ({:.1} MiB, {:.0} MiB/s)",
            hits.len(),
            read.as_secs_f64() * 1e3,
            read.as_secs_f64() * 1e6 / hits.len().max(1) as f64,
            render.as_secs_f64() * 1e3,
            json.len() as f64 / 1048576.0,
            json.len() as f64 / 1048576.0 / render.as_secs_f64(),
        );
    }
}
