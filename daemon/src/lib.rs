//! certctl's engine: everything between the store and the binaries.
//!
//! - [`x509`] and [`formats`]: reading certificates out of DER, PEM and PKCS#12 bytes.
//! - [`inventory`]: `scan`, the parallel walk-parse-store pipeline over files and folders.
//! - [`query`]: `list`, `show`, `stats`, `check` over the store.
//! - [`view`]: the JSON/CSV form of a certificate (a contract for scripts).
//! - [`fleet`]: the demo fleet and benchmark certificate generator.
//! - [`duration`]: `30d`, `12h`, `2w`.
//!
//! The `certd` daemon binary (src/bin/certd.rs) will drive this engine on a schedule; the
//! `certctl` CLI calls it directly.
#![forbid(unsafe_code)]

pub mod duration;
pub mod fleet;
pub mod formats;
pub mod inventory;
pub mod query;
pub mod view;
pub mod x509;

pub use duration::Duration;
