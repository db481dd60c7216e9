//! `certctl snoozed`: the snoozed certificates.

use anyhow::Result;
use certctl_store::rfc3339;
use clap::Args;

use crate::exit::Exit;
use crate::session::{clock, Globals};
use crate::table::Table;

use super::snooze::snooze_json;

#[derive(Debug, Args)]
pub struct SnoozedArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn exec(g: &Globals, a: SnoozedArgs) -> Result<Exit> {
    let session = &g.existing()?;
    let all = session.snoozes(clock()?)?;
    if a.json {
        let v: Vec<serde_json::Value> = all.iter().map(snooze_json).collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(Exit::Success);
    }
    let mut t = Table::new(&["UNTIL", "NAME", "FINGERPRINT", "BY", "REASON"]);
    for s in &all {
        t.row(vec![
            rfc3339(s.snooze.until),
            s.name().unwrap_or("(not in the store)").to_string(),
            s.snooze.fingerprint.to_hex()[..16].to_string(),
            s.snooze.by.clone(),
            s.snooze.reason.clone(),
        ]);
    }
    print!("{}", t.render());
    let files = all.iter().filter(|s| s.artifact.is_some()).count();
    if files == 0 {
        println!("{} certificates snoozed", all.len());
    } else {
        println!(
            "{} certificates and {files} tracked files snoozed",
            all.len() - files
        );
    }
    Ok(Exit::Success)
}
