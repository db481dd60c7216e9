//! `certctl forget HOST:PORT`: drop an endpoint probed by hand.

use anyhow::Result;
use certctl_daemon::api::{Request, Response};
use certctl_daemon::view::Printable;
use certctl_store::rfc3339;
use clap::Args;

use crate::exit::Exit;
use crate::output::OutputArgs;
use crate::session::{unexpected, Globals};

#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// The endpoint: HOST:PORT or tls://HOST:PORT, as `status` lists it.
    pub address: String,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `certctl forget HOST:PORT`: the endpoint's state and findings are deleted (through
/// certd when it runs); an unknown endpoint is an error naming it.
pub fn exec(g: &Globals, a: ForgetArgs) -> Result<Exit> {
    let session = &g.existing()?;
    let removed = match session.call(Request::Forget {
        address: a.address.clone(),
    })? {
        Response::Endpoints { endpoints } => endpoints,
        other => return Err(unexpected(&other)),
    };
    if a.output.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&certctl_daemon::view::with_rfc3339_times(&removed)?)?
        );
    } else {
        for e in &removed {
            println!(
                "forgot tls://{} ({} findings, last probe {})",
                Printable(&e.address),
                e.findings.len(),
                e.last_probe.map_or("never".into(), rfc3339)
            );
        }
    }
    Ok(Exit::Success)
}
