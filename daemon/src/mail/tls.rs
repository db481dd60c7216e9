//! The TLS side of the `[smtp]` connection (`security = "starttls"` or `"tls"`): the name the
//! server's certificate must carry (`smtp.host`) and the roots it must chain to — the
//! system's trust store plus, with `smtp.ca_file`, the certificates of that PEM file (a
//! private CA that issued the mail server's certificate).
//!
//! The file is read for every SMTP session, so a replaced file is used at the next delivery
//! without a reload; a missing or unreadable one makes that delivery fail (the reminders stay
//! pending) with an error naming the file.
//!
//! It also words what to do when `security` does not fit the server's port: [`with_hint`]
//! (`tls` against a plain server, rejected certificates) and [`no_greeting`] (`none` or
//! `starttls` against a server that expects TLS from the first byte).

use std::path::{Path, PathBuf};

use openssl::ssl::{SslConnector, SslMethod, SslVersion};
use openssl::x509::X509;

use crate::config::{SmtpConfig, SmtpSecurity};
use crate::mail::smtp::SmtpError;

/// Why the TLS parameters of an SMTP session could not be set up. Sentences name the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SmtpTlsError {
    #[error("cannot read smtp.ca_file {}: {cause}", path.display())]
    Read { path: PathBuf, cause: String },
    #[error("smtp.ca_file {} holds no PEM certificate (expected one or more `-----BEGIN CERTIFICATE-----` blocks)", path.display())]
    NoCertificate { path: PathBuf },
    #[error("smtp.ca_file {}: {cause}", path.display())]
    Invalid { path: PathBuf, cause: String },
    #[error("cannot set up TLS for {host}: {cause}")]
    Setup { host: String, cause: String },
}

/// The TLS client for a session with the configured server (TLS 1.2 or later, the server's
/// certificate verified against the system's roots and `smtp.ca_file`, its name checked by
/// [`crate::mail::smtp`] at the handshake); `None` for `security = "none"`.
pub(crate) fn tls_parameters(config: &SmtpConfig) -> Result<Option<SslConnector>, SmtpTlsError> {
    if config.security == SmtpSecurity::None {
        return Ok(None);
    }
    let roots = match &config.ca_file {
        Some(path) => roots(path)?,
        None => Vec::new(),
    };
    let setup = |e: openssl::error::ErrorStack| SmtpTlsError::Setup {
        host: config.host.clone(),
        cause: e.to_string(),
    };
    let mut builder = SslConnector::builder(SslMethod::tls_client()).map_err(setup)?;
    builder
        .set_min_proto_version(Some(SslVersion::TLS1_2))
        .map_err(setup)?;
    for root in roots {
        builder.cert_store_mut().add_cert(root).map_err(setup)?;
    }
    Ok(Some(builder.build()))
}

/// `cause` (an SMTP session's error, with its causes) followed by what to do when it is a
/// rejected server certificate, or (implicit TLS) a server that answered in plain text.
pub(crate) fn with_hint(cause: String, config: &SmtpConfig) -> String {
    // OpenSSL's word for a plain-text answer (an SMTP greeting) to the TLS handshake.
    if config.security == SmtpSecurity::Tls && cause.contains("wrong version number") {
        return format!(
            "{cause} (the server does not speak TLS at once on port {}: security = \"tls\" is implicit TLS, usually port 465; for a server that offers STARTTLS, usually port 587, set security = \"starttls\")",
            config.port
        );
    }
    if !cause.contains("certificate verify failed") {
        return cause;
    }
    if cause.contains("hostname mismatch") || cause.contains("IP address mismatch") {
        format!(
            "{cause} (the server's certificate does not name smtp.host `{}`: set smtp.host to a name it carries)",
            config.host
        )
    } else {
        format!(
            "{cause} (the server's certificate is not trusted: put the CA certificate that issued it in smtp.ca_file, PEM)"
        )
    }
}

/// The cause to show, instead of a bare timeout, when the server accepted the connection
/// but sent no greeting within `smtp.timeout` while certctl waited for one in plain text
/// (`none`, `starttls`): the port most likely expects TLS from the first byte (SMTPS).
/// `None` for any other failure and with `tls` (where certctl speaks first). Meant for the
/// first step of a session (connect, greeting, EHLO): a server that greets and then falls
/// silent at EHLO is told the same, which is rare enough.
pub(crate) fn no_greeting(e: &SmtpError, config: &SmtpConfig) -> Option<String> {
    if config.security == SmtpSecurity::Tls || !e.is_silent() {
        return None;
    }
    Some(format!(
        "no greeting within {}: if the server expects TLS from the first byte (SMTPS, usually port 465), set security = \"tls\"",
        crate::probe::fmt_duration(config.timeout)
    ))
}

/// Every certificate of a PEM file, as roots.
fn roots(path: &Path) -> Result<Vec<X509>, SmtpTlsError> {
    let bytes = std::fs::read(path).map_err(|e| SmtpTlsError::Read {
        path: path.to_path_buf(),
        cause: crate::files::io_cause(&e),
    })?;
    let invalid = |cause: String| SmtpTlsError::Invalid {
        path: path.to_path_buf(),
        cause,
    };
    let certs = X509::stack_from_pem(&bytes).map_err(|e| invalid(e.to_string()))?;
    if certs.is_empty() {
        return Err(SmtpTlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(security: SmtpSecurity, ca_file: Option<PathBuf>) -> SmtpConfig {
        SmtpConfig {
            host: "127.0.0.1".into(),
            port: 587,
            security,
            from: "certd@example.org".into(),
            username: None,
            password_file: None,
            ca_file,
            timeout: std::time::Duration::from_secs(5),
        }
    }

    #[test]
    fn plain_smtp_needs_no_tls() {
        let missing = PathBuf::from("/nonexistent/ca.pem");
        assert!(tls_parameters(&config(SmtpSecurity::None, Some(missing)))
            .expect("not read")
            .is_none());
    }

    #[test]
    fn ca_file_problems_name_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("missing.pem");
        let e = tls_parameters(&config(SmtpSecurity::StartTls, Some(missing.clone())))
            .expect_err("missing file");
        assert_eq!(
            e.to_string(),
            format!(
                "cannot read smtp.ca_file {}: no such file or directory",
                missing.display()
            )
        );
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").expect("write");
        let e = tls_parameters(&config(SmtpSecurity::Tls, Some(junk.clone())))
            .expect_err("no certificate");
        assert!(e.to_string().contains("holds no PEM certificate"), "{e}");
        assert!(e.to_string().contains(&junk.display().to_string()), "{e}");
    }

    #[test]
    fn a_plain_answer_to_implicit_tls_gets_a_hint() {
        let cause =
            "Connection error: error:0A00010B:SSL routines:ssl3_get_record:wrong version number";
        let hint = with_hint(cause.into(), &config(SmtpSecurity::Tls, None));
        assert!(hint.starts_with(cause), "{hint}");
        assert!(hint.contains("set security = \"starttls\""), "{hint}");
        assert_eq!(
            with_hint(cause.into(), &config(SmtpSecurity::StartTls, None)),
            cause
        );
    }

    /// The first step of a session (connect, greeting, EHLO) against `port`.
    fn greet(port: u16, timeout: std::time::Duration) -> SmtpError {
        crate::mail::smtp::Session::connect(
            "127.0.0.1",
            port,
            timeout,
            None,
            &lettre::transport::smtp::extension::ClientId::default(),
        )
        .expect_err("no session")
    }

    #[test]
    fn a_silent_server_gets_the_implicit_tls_hint() {
        // Accepted by the kernel (backlog) but never answered, like an SMTPS port.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        let timeout = std::time::Duration::from_millis(300);
        let started = std::time::Instant::now();
        let e = greet(port, timeout);
        assert!(started.elapsed() < timeout * 5, "{:?}", started.elapsed());
        let mut plain = config(SmtpSecurity::None, None);
        plain.timeout = timeout;
        assert_eq!(
            no_greeting(&e, &plain).as_deref(),
            Some("no greeting within 300ms: if the server expects TLS from the first byte (SMTPS, usually port 465), set security = \"tls\"")
        );
        plain.security = SmtpSecurity::StartTls;
        assert!(no_greeting(&e, &plain).is_some());
        plain.security = SmtpSecurity::Tls;
        assert_eq!(no_greeting(&e, &plain), None);
        drop(listener);
    }

    #[test]
    fn other_connect_failures_get_no_greeting_hint() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("address")
            .port();
        // Nobody listens any more: refused.
        let e = greet(port, std::time::Duration::from_secs(5));
        assert_eq!(no_greeting(&e, &config(SmtpSecurity::None, None)), None);
    }

    #[test]
    fn a_pem_bundle_gives_every_root() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pem: String = (0..2)
            .map(|i| {
                let key = rcgen::KeyPair::generate().expect("key");
                rcgen::CertificateParams::new(vec![format!("ca{i}.example")])
                    .expect("params")
                    .self_signed(&key)
                    .expect("self-signed")
                    .pem()
            })
            .collect();
        let path = dir.path().join("roots.pem");
        std::fs::write(&path, pem).expect("write");
        assert_eq!(roots(&path).expect("roots").len(), 2);
        assert!(tls_parameters(&config(SmtpSecurity::StartTls, Some(path)))
            .expect("parameters")
            .is_some());
    }
}
