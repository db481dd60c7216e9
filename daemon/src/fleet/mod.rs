//! The fleet as a whole: agents (registrations, the pending queue, approve/block, the deny
//! list: [`agents`]), agents whose ephemeral credentials stopped being renewed
//! ([`stalled`]), fleet reports and the metrics text ([`reports`]), the HTML overview
//! ([`dashboard`]) and the one verdict for monitoring, `certctl check` ([`check`]).
//!
//! May import: `inventory`, `pki`, `probe`, `policy`, `config`, `history`, `certs`, `files`.

pub(crate) mod agents;
pub(crate) mod check;
pub(crate) mod dashboard;
pub(crate) mod reports;
pub(crate) mod stalled;
