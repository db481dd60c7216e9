//! OpenSSL's process-wide setup and its error text: the legacy provider that old PKCS#12
//! files (RC2-40, 3DES) need, loaded once, and an OpenSSL error stack said in one line.

use std::sync::OnceLock;

use openssl::provider::Provider;

static LEGACY_PROVIDER: OnceLock<Result<Provider, String>> = OnceLock::new();

/// Loads OpenSSL 3's legacy provider (RC2, 3DES-era PKCS#12 encryption) into the default
/// library context, once per process, keeping the default provider available. Returns whether
/// it is available. A failure is remembered and reported by PKCS#12 errors, not fatal.
pub fn ensure_legacy_provider() -> bool {
    LEGACY_PROVIDER
        .get_or_init(|| Provider::try_load(None, "legacy", true).map_err(|e| openssl_reasons(&e)))
        .is_ok()
}

pub(crate) fn legacy_provider_error() -> Option<&'static str> {
    LEGACY_PROVIDER
        .get()
        .and_then(|r| r.as_ref().err())
        .map(String::as_str)
}

/// OpenSSL's error reasons, joined, without file/line noise.
pub(crate) fn openssl_reasons(e: &openssl::error::ErrorStack) -> String {
    let mut s = String::new();
    for err in e.errors() {
        if !s.is_empty() {
            s.push_str("; ");
        }
        s.push_str(err.reason().unwrap_or("unknown error"));
        if let Some(data) = err.data() {
            s.push_str(" (");
            s.push_str(data);
            s.push(')');
        }
    }
    if s.is_empty() {
        s.push_str("unknown OpenSSL error");
    }
    s
}
