//! Certificates as bytes: X.509 facts out of DER ([`x509`]), the file formats certificates
//! come in (PEM, DER, PKCS#12/PFX: [`formats`]), the work a PKCS#12 file may ask for, checked
//! before OpenSSL opens it ([`pkcs12_guard`]), and OpenSSL's process-wide setup
//! ([`openssl_setup`]). Nothing here touches the store or the network.
//!
//! May import: `files` only.

pub(crate) mod formats;
pub(crate) mod openssl_setup;
pub(crate) mod pkcs12_guard;
pub(crate) mod x509;
