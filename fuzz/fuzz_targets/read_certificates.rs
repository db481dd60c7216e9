//! Fuzzes the scan's file-parsing entry point, `formats::read_certificates_partial`: whatever
//! the bytes, it must return certificates or an error, never panic or hang.
//!
//! The first input byte chooses the file name the bytes are read under (the `.pfx` name lets
//! base64 text be read as PKCS#12) and the PFX password; the rest is the file. `seed.sh`
//! writes a starting corpus of valid files (PEM bundle, DER, PKCS#12) with those bytes in
//! front.
#![no_main]

use std::path::Path;

use certctl_daemon::formats::{read_certificates_partial, FormatError};
use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 4] = ["in.pem", "in.der", "in.pfx", "in.crt"];
const PASSWORDS: [Option<&str>; 3] = [None, Some("fuzz-pw"), Some("a\0b")];

fuzz_target!(|data: &[u8]| {
    let (selector, bytes) = match data.split_first() {
        Some((&s, rest)) => (usize::from(s), rest),
        None => (0, data),
    };
    let name = NAMES[selector % NAMES.len()];
    let password = PASSWORDS[(selector / NAMES.len()) % PASSWORDS.len()];
    let read = read_certificates_partial(bytes, Path::new(name), password);
    match &read.error {
        None => assert!(!read.certificates.is_empty(), "no error and no certificate"),
        Some(FormatError::NoCertificate) => assert!(read.certificates.is_empty()),
        Some(e) => assert!(!e.to_string().trim().is_empty(), "an empty cause"),
    }
});
