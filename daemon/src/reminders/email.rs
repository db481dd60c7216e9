//! Reminders by e-mail: a digest as a message over the bounded SMTP session of
//! [`crate::mail`] ([`SmtpMailer`]).

use certctl_store::UnixTime;

use super::delivery::{Mailer, SendFailure, DEFAULT_MESSAGE_ID_DOMAIN};
use super::digest::Digest;
use crate::config::{SmtpConfig, SmtpSecurity};
use crate::mail::smtp::{Session, SmtpError};

/// The environment variable that holds the SMTP password (it wins over `password_file`).
pub(crate) const PASSWORD_ENV: &str = "CERTCTL_SMTP_PASSWORD";

// ---- SMTP ---------------------------------------------------------------------------------

/// Where an SMTP session broke off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Connecting, the server's greeting, EHLO (with `tls`, the handshake first).
    Greeting,
    /// STARTTLS, AUTH.
    Login,
    /// MAIL FROM, RCPT TO, DATA: nothing of the message was sent yet.
    Envelope,
    /// The message was sent; its answer was awaited.
    Message,
}

/// Why the envelope of a digest was not accepted: the SMTP session failed, or the message
/// needs an extension the server does not offer (then nothing was sent).
enum EnvelopeError {
    Smtp(SmtpError),
    Unsendable(String),
}

/// Delivers digests through the `[smtp]` server: one SMTP session per digest, driven step
/// by step with the bounded [`crate::mail::smtp::Session`] (reply sizes capped, one
/// deadline per session of [`crate::mail::smtp::DEADLINE_FACTOR`] × `smtp.timeout`) so that a failure says whether the message had been sent ([`SendFailure::maybe_delivered`]),
/// and so that the session of an accepted digest is closed (QUIT) only after the pass
/// recorded it ([`Mailer::finish`]), not before.
pub(crate) struct SmtpMailer {
    pub(super) config: SmtpConfig,
    /// The password, or why it could not be read. Never logged.
    password: Result<Option<String>, String>,
    /// The session of the last accepted digest, until [`Mailer::finish`] closes it.
    pub(super) open: std::sync::Mutex<Option<Session>>,
}

impl std::fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpMailer")
            .field("host", &self.config.host)
            .field("port", &self.config.port)
            .finish_non_exhaustive()
    }
}

impl SmtpMailer {
    /// Reads the password now: `$CERTCTL_SMTP_PASSWORD` if set, else `password_file`.
    pub(crate) fn new(config: &SmtpConfig) -> SmtpMailer {
        let password = match (std::env::var(PASSWORD_ENV), &config.password_file) {
            (Ok(p), _) if !p.is_empty() => Ok(Some(p)),
            (_, Some(file)) => crate::pki::ca::Secret::from_private_file(file)
                .map(|p| Some(p.0))
                .map_err(|e| format!("cannot use the SMTP password file: {e}")),
            _ => Ok(None),
        };
        SmtpMailer {
            config: config.clone(),
            password,
            open: std::sync::Mutex::new(None),
        }
    }

    fn server(&self) -> String {
        format!(
            "SMTP server {}:{} ({})",
            self.config.host, self.config.port, self.config.security
        )
    }

    /// The domain of `smtp.from`, for Message-IDs (`certctl.invalid` if it has none).
    fn domain(&self) -> String {
        self.config
            .from
            .parse::<lettre::message::Mailbox>()
            .map(|m| m.email.domain().to_string())
            .ok()
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| DEFAULT_MESSAGE_ID_DOMAIN.to_string())
    }

    /// Connects, greets, secures the connection as `security` says (with `tls`, see
    /// [`crate::mail::tls`]) and logs in. An error comes with the phase it broke off in.
    fn connect(
        &self,
        password: Option<String>,
        tls: Option<openssl::ssl::SslConnector>,
    ) -> Result<Session, (Phase, SmtpError)> {
        use lettre::transport::smtp::authentication::Credentials;
        use lettre::transport::smtp::extension::ClientId;
        let c = &self.config;
        let hello = ClientId::default();
        let wrapped = tls.as_ref().filter(|_| c.security == SmtpSecurity::Tls);
        let mut conn = Session::connect(&c.host, c.port, c.timeout, wrapped, &hello)
            .map_err(|e| (Phase::Greeting, e))?;
        if let (SmtpSecurity::StartTls, Some(tls)) = (c.security, &tls) {
            conn.starttls(tls, &c.host, &hello)
                .map_err(|e| (Phase::Login, e))?;
        }
        if let (Some(user), Some(password)) = (&c.username, password) {
            conn.auth(&Credentials::new(user.clone(), password))
                .map_err(|e| (Phase::Login, e))?;
        }
        Ok(conn)
    }

    fn message(&self, digest: &Digest, now: UnixTime) -> Result<lettre::Message, String> {
        use lettre::message::{Mailbox, MultiPart};
        let from: Mailbox = self
            .config
            .from
            .parse()
            .map_err(|e| format!("smtp.from `{}`: {e}", self.config.from))?;
        let to: Mailbox = digest
            .recipient
            .parse()
            .map_err(|e| format!("recipient `{}`: {e}", digest.recipient))?;
        lettre::Message::builder()
            .from(from)
            .to(to)
            .message_id(Some(digest.message_id(&self.domain())))
            .subject(digest.subject())
            .multipart(MultiPart::alternative_plain_html(
                digest.text(now),
                digest.html(now),
            ))
            .map_err(|e| format!("cannot build the e-mail to {}: {e}", digest.recipient))
    }

    /// MAIL FROM, RCPT TO, DATA (with 8BITMIME / SMTPUTF8 when the message needs them).
    fn envelope(
        &self,
        conn: &mut Session,
        message: &lettre::Message,
        raw: &[u8],
    ) -> Result<(), EnvelopeError> {
        use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
        use lettre::transport::smtp::extension::{Extension, MailBodyParameter, MailParameter};
        let envelope = message.envelope();
        let mut options = Vec::new();
        let non_ascii = envelope
            .from()
            .into_iter()
            .chain(envelope.to())
            .any(|a| !AsRef::<str>::as_ref(a).is_ascii());
        if non_ascii {
            if !conn.server_info().supports_feature(Extension::SmtpUtfEight) {
                return Err(EnvelopeError::Unsendable(
                    "the addresses are not ASCII and the server does not offer SMTPUTF8".into(),
                ));
            }
            options.push(MailParameter::SmtpUtfEight);
        }
        if !raw.is_ascii() {
            if !conn.server_info().supports_feature(Extension::EightBitMime) {
                return Err(EnvelopeError::Unsendable(
                    "the message is not ASCII and the server does not offer 8BITMIME".into(),
                ));
            }
            options.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        conn.command(&Mail::new(envelope.from().cloned(), options).to_string())
            .map_err(EnvelopeError::Smtp)?;
        for to in envelope.to() {
            conn.command(&Rcpt::new(to.clone(), vec![]).to_string())
                .map_err(EnvelopeError::Smtp)?;
        }
        conn.command(&Data.to_string())
            .map_err(EnvelopeError::Smtp)?;
        Ok(())
    }

    /// The failure of `digest` in `phase`, for admins: the server, the recipient, the cause,
    /// and after the message was sent, that it may have arrived (and its Message-ID).
    fn failure(&self, digest: &Digest, phase: Phase, e: &SmtpError) -> SendFailure {
        // A server that never greeted (an SMTPS port?) gets its own cause, not the raw timeout.
        let silent = match phase {
            Phase::Greeting => crate::mail::tls::no_greeting(e, &self.config),
            _ => None,
        };
        let cause =
            silent.unwrap_or_else(|| crate::mail::tls::with_hint(e.to_string(), &self.config));
        let message_id = digest.message_id(&self.domain());
        // The server answered with an error code: it is alive and did not take the message.
        let refused = e.is_transient() || e.is_permanent();
        let auth = matches!(phase, Phase::Greeting | Phase::Login) && e.is_auth_failure();
        let error = if auth {
            format!(
                "{}: authentication failed for user `{}`: {cause} (check smtp.username and the password in smtp.password_file or ${PASSWORD_ENV})",
                self.server(),
                self.config.username.as_deref().unwrap_or("")
            )
        } else if phase == Phase::Message && !refused {
            format!(
                "{}: cannot deliver to {}: no answer after the message was sent ({cause}): the server may have accepted it; the retry carries the same Message-ID {message_id}",
                self.server(),
                digest.recipient
            )
        } else {
            let when = match phase {
                Phase::Greeting | Phase::Login => "",
                Phase::Envelope => "before the message was sent: ",
                Phase::Message => "the server refused the message: ",
            };
            format!(
                "{}: cannot deliver to {}: {when}{cause}",
                self.server(),
                digest.recipient
            )
        };
        SendFailure {
            error,
            maybe_delivered: phase == Phase::Message && !refused,
        }
    }
}

impl Mailer for SmtpMailer {
    fn send(&self, digest: &Digest, now: UnixTime) -> Result<(), SendFailure> {
        self.finish();
        let message = self.message(digest, now).map_err(SendFailure::not_sent)?;
        let password = self.password.clone().map_err(SendFailure::not_sent)?;
        let raw = message.formatted();
        let tls = crate::mail::tls::tls_parameters(&self.config).map_err(|e| {
            SendFailure::not_sent(format!(
                "{}: cannot deliver to {}: {e}",
                self.server(),
                digest.recipient
            ))
        })?;
        let mut conn = self
            .connect(password, tls)
            .map_err(|(phase, e)| self.failure(digest, phase, &e))?;
        // A server that answered an error is alive: say goodbye (QUIT). After a network
        // error or a timeout, just drop the connection (a QUIT could wait another timeout).
        let close = |mut conn: Session, e: &SmtpError| {
            if e.is_transient() || e.is_permanent() {
                conn.abort();
            }
        };
        match self.envelope(&mut conn, &message, &raw) {
            Ok(()) => {}
            Err(EnvelopeError::Smtp(e)) => {
                close(conn, &e);
                return Err(self.failure(digest, Phase::Envelope, &e));
            }
            Err(EnvelopeError::Unsendable(problem)) => {
                conn.abort();
                return Err(SendFailure::not_sent(format!(
                    "{}: cannot deliver to {}: {problem}",
                    self.server(),
                    digest.recipient
                )));
            }
        }
        match conn.message(&raw) {
            Ok(_) => {
                // Accepted (250). The pass records it before the session is closed.
                *self.open.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn);
                Ok(())
            }
            Err(e) => {
                let failure = self.failure(digest, Phase::Message, &e);
                close(conn, &e);
                Err(failure)
            }
        }
    }

    fn message_id(&self, digest: &Digest) -> String {
        digest.message_id(&self.domain())
    }

    fn finish(&self) {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut conn) = open {
            // Best effort, bounded by the timeout: the message is accepted and recorded.
            let _ = conn.quit();
        }
    }
}
