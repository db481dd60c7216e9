//! E-mail out: a bounded SMTP session ([`smtp`]: reply sizes, one deadline per session,
//! STARTTLS or implicit TLS) and its TLS side ([`tls`]: the system roots plus
//! `smtp.ca_file`). What is sent, to whom and when is [`crate::reminders`]' business.
//!
//! May import: `config`, `files`, `duration`.

pub(crate) mod smtp;
pub(crate) mod tls;
