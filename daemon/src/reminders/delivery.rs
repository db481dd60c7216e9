//! How a digest is delivered: the [`Mailer`] interface the pass sends through (e-mail and
//! webhooks implement it) and why a delivery failed ([`SendFailure`]).

use certctl_store::UnixTime;

use super::digest::Digest;

/// The right-hand side of Message-IDs when `smtp.from` has no domain.
pub(crate) const DEFAULT_MESSAGE_ID_DOMAIN: &str = "certctl.invalid";

/// Why a digest was not delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SendFailure {
    /// For admins: the server, the recipient and the cause.
    pub error: String,
    /// The whole message had been sent when the connection broke or timed out, before the
    /// server's answer: it may have been delivered (SMTP cannot tell). The retry carries the
    /// same Message-ID, so the copy can be recognised.
    pub maybe_delivered: bool,
}

impl SendFailure {
    /// A failure before anything of the message reached the server.
    pub(crate) fn not_sent(error: impl Into<String>) -> SendFailure {
        SendFailure {
            error: error.into(),
            maybe_delivered: false,
        }
    }
}

/// Sends one digest. [`SmtpMailer`] is the real one; tests use their own.
pub(crate) trait Mailer {
    /// Delivers the digest: `Ok` once the server accepted it (`250` to the message).
    fn send(&self, digest: &Digest, now: UnixTime) -> Result<(), SendFailure>;

    /// Ends what is left of the session of the digest last accepted (SMTP `QUIT`). The pass
    /// calls it after that digest was recorded as sent, so nothing (not even a slow QUIT)
    /// stands between the server's `250` and the record.
    fn finish(&self) {}

    /// The Message-ID the digest goes out with.
    fn message_id(&self, digest: &Digest) -> String {
        digest.message_id(DEFAULT_MESSAGE_ID_DOMAIN)
    }
}
