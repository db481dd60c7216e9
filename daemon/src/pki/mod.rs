//! The managed PKI: certctl's own CAs ([`ca`]: keys, signing; [`cas`]: `ca init`, `list`,
//! `export`), issuing, CRLs ([`crl`]), revocation ([`revoke`]), the regenerate workflow that
//! survives a crash at every step ([`workflow`], [`workflow::csr`] for outside CAs, [`reload`]
//! for the deploy hooks), automatic renewal ([`renewal`]) by the managed CA or SCEP
//! ([`scep`]), and CRLs of other CAs fetched and checked ([`crlfetch`]).
//!
//! May import: `certs`, `files`, `net`, `config`, `policy`, `history`, `inventory`, `probe`.
//! Inside, the order is ca → crl → cas, revoke → workflow (common → csr → mod) → scep → renewal.

pub(crate) mod ca;
pub(crate) mod cas;
pub(crate) mod crl;
pub(crate) mod crlfetch;
pub(crate) mod reload;
pub(crate) mod renewal;
pub(crate) mod revoke;
pub(crate) mod scep;
pub(crate) mod workflow;
