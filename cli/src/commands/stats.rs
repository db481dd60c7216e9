//! `certctl stats`: counts by role, status and key type.

use anyhow::Result;
use certctl_daemon::api::{Request, Response};
use certctl_daemon::query::Stats;

use crate::exit::Exit;
use crate::output::OutputArgs;
use crate::session::{unexpected, Globals};
use crate::table::Table;

pub fn exec(g: &Globals, a: OutputArgs) -> Result<Exit> {
    let session = &g.existing()?;
    let s: Stats = match session.call(Request::Stats)? {
        Response::Stats { stats } => stats,
        other => return Err(unexpected(&other)),
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(Exit::Success);
    }
    println!("{} certificates", s.total);
    for (title, map) in [
        ("by role", &s.by_role),
        ("by status", &s.by_status),
        ("by key", &s.by_key),
        ("by credential kind", &s.by_credential_kind),
    ] {
        let mut t = Table::new(&[title, "COUNT"]);
        for (k, v) in map {
            t.row(vec![k.clone(), v.to_string()]);
        }
        println!();
        print!("{}", t.render());
    }
    Ok(Exit::Success)
}
