//! One module per subcommand, cargo style: each owns its clap arguments (`XArgs`) and its
//! `exec`, which resolves a [`Session`](crate::session::Session) from the
//! [`Globals`](crate::session::Globals), calls the engine through it and prints the answer.
//!
//! A command module may import `session`, `output`, `secrets`, `table`, `exit` and the
//! engine (`certctl_daemon`, `certctl_store`); a sibling only for what two commands print
//! alike (`workflows` prints a workflow as `regenerate` does; `remind` takes the policies
//! folder like `policy`). Nothing here imports `args` or `main`: `main.rs` dispatches.

pub mod agents;
pub mod ca;
pub mod check;
pub mod completions;
pub mod crl;
pub mod demo;
pub mod forget;
pub mod history;
pub mod inspect;
pub mod issue;
pub mod list;
pub mod man;
pub mod metrics;
pub mod policy;
pub mod probe;
pub mod regenerate;
pub mod remind;
pub mod renew;
pub mod report;
pub mod revoke;
pub mod scan;
pub mod show;
pub mod snooze;
pub mod snoozed;
pub mod stats;
pub mod status;
pub mod store;
pub mod track;
pub mod untrack;
pub mod workflows;
