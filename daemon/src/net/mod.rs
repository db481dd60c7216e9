//! Addresses of the servers certctl talks to: `host:port` of endpoints ([`address`]),
//! `http://` URLs checked before anything is sent and the `[crl] allow` list ([`url`]).
//! Nothing here opens a connection; the capabilities that do (probe, mail, CRL fetch, SCEP,
//! webhooks) bound their own I/O.
//!
//! May import: nothing of the crate (the bottom layer).

pub(crate) mod address;
pub(crate) mod url;
