//! Certificates as bytes: X.509 facts out of DER ([`x509`]), the file formats certificates
//! come in (PEM, DER, PKCS#12/PFX: [`formats`]), the work a PKCS#12 file may ask for, checked
//! before OpenSSL opens it ([`pkcs12_guard`]), and OpenSSL's process-wide setup
//! ([`openssl_setup`]). Nothing here touches the store or the network.
//!
//! May import: `files` only.

pub mod formats;
pub mod openssl_setup;
pub mod pkcs12_guard;
pub mod x509;
