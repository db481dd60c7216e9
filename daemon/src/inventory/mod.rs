//! The inventory: what certificates exist, where, and what is asked of them. [`scan`] walks
//! files and folders (PEM, DER, PKCS#12) in a parallel walk-parse-store pipeline; [`query`]
//! answers `list`, `show`, `stats` from the store's indexes; [`view`] is the JSON/CSV form
//! of a certificate (a contract for scripts); [`artifacts`] tracks files that expire like
//! certificates (enrollment bundles, agent packages).
//!
//! May import: `certs`, `files`, `duration`, `policy`, `history`.

pub(crate) mod artifacts;
pub(crate) mod query;
pub(crate) mod scan;
pub(crate) mod view;
