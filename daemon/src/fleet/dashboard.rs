//! The dashboard: what needs attention and what expires when, as HTML pages an admin can
//! look at instead of reading 41,000 lines. certd serves them on its opt-in loopback
//! metrics listener (`GET /`, `GET /certificate/FINGERPRINT`); `certctl report NAME --html
//! FILE` writes the same overview as a standalone file to attach to a ticket.
//!
//! Server-side rendered: no JavaScript, no external assets (the timeline is inline SVG),
//! every text from the store escaped ([`esc`]); certd sends it with a Content-Security-Policy
//! that forbids scripts altogether.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use certctl_store::{rfc3339, Certificate, CredentialKind, Role, Store, UnixTime};

use crate::duration::{days_left, DAY_SECS, WEEK_SECS};
use crate::fleet::agents::{self, AgentsError, PendingAgent};
use crate::fleet::check::{self, CheckReport};
use crate::history::{self, HistoryEntry, HistoryError};
use crate::inventory::query::QueryError;
use crate::Duration;

/// Weeks shown on the expiry timeline (about 90 days).
pub(crate) const TIMELINE_WEEKS: usize = 13;
const WEEK: i64 = WEEK_SECS;

/// Thresholds of the needs-attention table (those of `certctl check` by default).
const WARN_DAYS: i64 = 30;
const CRITICAL_DAYS: i64 = 7;

/// At most this many rows per list in the needs-attention table (the totals are shown).
pub(crate) const ROWS_SHOWN: usize = 500;

#[derive(Debug, thiserror::Error)]
pub(crate) enum DashboardError {
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(transparent)]
    Agents(#[from] AgentsError),
    #[error(transparent)]
    Workflow(#[from] HistoryError),
    #[error(transparent)]
    Store(#[from] certctl_store::StoreError),
}

/// Certificates expiring in one week of the timeline, by role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WeekBar {
    /// The week is `[start, start + 7 days)`.
    pub start: UnixTime,
    pub by_role: BTreeMap<Role, u64>,
}

impl WeekBar {
    pub(crate) fn total(&self) -> u64 {
        self.by_role.values().sum()
    }
}

/// Everything the overview page shows, read from the store at `generated_at`.
#[derive(Debug, Clone)]
pub(crate) struct Overview {
    pub generated_at: UnixTime,
    /// [`TIMELINE_WEEKS`] weeks from `generated_at`: certificates still deployed somewhere,
    /// not revoked, and not ephemeral agent credentials (which expire every few hours by
    /// design and would drown the rest).
    pub timeline: Vec<WeekBar>,
    /// What `certctl check` (30 days / 7 days) finds: expired, critical and warning
    /// certificates, endpoint findings, CRLs behind or expiring, unreadable files.
    pub check: CheckReport,
    /// Agents awaiting approval.
    pub pending_agents: Vec<PendingAgent>,
}

/// Reads the overview from the store. Costs what `check` costs plus the certificates
/// expiring within [`TIMELINE_WEEKS`] weeks (read from the expiry index).
pub(crate) fn overview(store: &Store, now: UnixTime) -> Result<Overview, DashboardError> {
    let check = check::check(
        store,
        Duration::days(WARN_DAYS),
        Duration::days(CRITICAL_DAYS),
        None,
        now,
    )?;
    let end = now.saturating_add(TIMELINE_WEEKS as i64 * WEEK);
    let mut timeline: Vec<WeekBar> = (0..TIMELINE_WEEKS)
        .map(|i| WeekBar {
            start: now + i as i64 * WEEK,
            by_role: BTreeMap::new(),
        })
        .collect();
    for cert in store.expiring_between(now, end, None)? {
        if !on_timeline(&cert) {
            continue;
        }
        let week = ((cert.facts.not_after - now) / WEEK) as usize;
        if let Some(bar) = timeline.get_mut(week) {
            *bar.by_role.entry(cert.role).or_default() += 1;
        }
    }
    let pending_agents = agents::pending(store, now)?;
    Ok(Overview {
        generated_at: now,
        timeline,
        check,
        pending_agents,
    })
}

/// Whether a certificate counts on the timeline: deployed, not revoked, not ephemeral.
pub(crate) fn on_timeline(cert: &Certificate) -> bool {
    cert.revocation.is_none()
        && cert.current_sources().next().is_some()
        && cert.credential_kind() != Some(CredentialKind::Ephemeral)
}

/// How links to a certificate's page are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Links {
    /// certd's pages: `/certificate/FINGERPRINT`.
    Served,
    /// A standalone file: no links (the fingerprint is shown instead).
    None,
}

/// The overview page: timeline, needs-attention tables, pending agents.
pub(crate) fn render_overview(o: &Overview, links: Links) -> String {
    let mut html = page_start("certctl: certificates");
    let _ = write!(
        html,
        "<h1>Certificates</h1>\n<p class=\"meta\">As of <time datetime=\"{t}\">{t}</time> \
         (UTC). Verdict: <strong class=\"{v}\">{label}</strong></p>\n",
        t = rfc3339(o.generated_at),
        v = o.check.verdict.label().to_lowercase(),
        label = o.check.verdict.label(),
    );
    timeline_svg(&mut html, o);
    attention(&mut html, o, links);
    html.push_str("</body>\n</html>\n");
    html
}

/// `certctl report NAME --html FILE`: the overview (without links: a file attached to a
/// ticket has no server behind it) followed by the named report as a table.
pub(crate) fn render_standalone(o: &Overview, report: &crate::fleet::reports::Report) -> String {
    let mut html = render_overview(o, Links::None);
    let body_end = html.rfind("</body>").unwrap_or(html.len());
    html.truncate(body_end);
    let _ = write!(
        html,
        "<h2>Report {}</h2>\n<table id=\"report\">\n<tr>",
        esc(&report.report)
    );
    for column in &report.columns {
        let _ = write!(html, "<th>{}</th>", esc(column));
    }
    html.push_str("</tr>\n");
    for row in &report.rows {
        html.push_str("<tr>");
        for cell in row {
            let _ = write!(
                html,
                "<td>{}</td>",
                esc(&crate::fleet::reports::cell_text(cell))
            );
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</table>\n</body>\n</html>\n");
    html
}

/// A certificate's own page: the facts `show` prints, where it is deployed, its history.
/// `None` when no certificate has fingerprint `fingerprint_hex` (64 hex characters).
pub(crate) fn render_certificate(
    store: &Store,
    fingerprint_hex: &str,
    now: UnixTime,
) -> Result<Option<String>, DashboardError> {
    if fingerprint_hex.len() != 64 || !fingerprint_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let wanted = fingerprint_hex.to_ascii_lowercase();
    let Ok(fingerprint) = wanted.parse::<certctl_store::Fingerprint>() else {
        return Ok(None);
    };
    if store.get(&fingerprint)?.is_none() {
        return Ok(None);
    }
    let Some(history) = history::history(store, &wanted)?
        .into_iter()
        .find(|h| h.certificate.fingerprint().to_hex() == wanted)
    else {
        return Ok(None);
    };
    let c = &history.certificate;
    let name = c.facts.display_name();
    let mut html = page_start(&format!("certctl: {name}"));
    let _ = write!(
        html,
        "<p><a href=\"/\">&larr; all certificates</a></p>\n<h1>{}</h1>\n<table class=\"facts\">\n",
        esc(name)
    );
    let status = c.status(now, WARN_DAYS * DAY_SECS);
    let sans: Vec<&str> = c.facts.sans.all().collect();
    let rows: Vec<(&str, String)> = vec![
        ("Status", status.as_str().to_string()),
        ("Role", c.role.as_str().to_string()),
        (
            "Credential kind",
            c.credential_kind()
                .map_or("-".to_string(), |k| k.as_str().to_string()),
        ),
        ("Subject", c.facts.subject.clone()),
        ("Issuer", c.facts.issuer.clone()),
        ("Serial", c.facts.serial.clone()),
        ("Not before", rfc3339(c.facts.not_before)),
        ("Not after", rfc3339(c.facts.not_after)),
        (
            "Days left",
            ((c.facts.not_after - now) / DAY_SECS).to_string(),
        ),
        ("Names (SAN)", sans.join(", ")),
        ("Key", c.facts.key.to_string()),
        ("Signature", c.facts.signature_algorithm.clone()),
        ("SHA-256 fingerprint", c.fingerprint().to_hex()),
        ("SPKI SHA-256", c.facts.spki_sha256.to_hex()),
        (
            "Revoked",
            c.revocation.as_ref().map_or("no".to_string(), |r| {
                format!(
                    "{} ({}, by {})",
                    rfc3339(r.revoked_at),
                    crate::pki::crl::reason_name(r.reason),
                    r.revoked_by
                )
            }),
        ),
    ];
    for (k, v) in rows {
        let _ = writeln!(html, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(&v));
    }
    html.push_str("</table>\n<h2>Where it is deployed</h2>\n<table>\n<tr><th>Source</th><th>First seen</th><th>Gone since</th></tr>\n");
    for s in &c.sources {
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&s.location.to_string()),
            rfc3339(s.first_seen),
            s.gone_since.map_or("-".to_string(), rfc3339)
        );
    }
    if c.more_sources > 0 {
        let _ = writeln!(
            html,
            "<tr><td colspan=\"3\">… and {} more</td></tr>",
            c.more_sources
        );
    }
    html.push_str("</table>\n<h2>History</h2>\n<table>\n<tr><th>When</th><th>What</th><th>Who</th><th>Detail</th></tr>\n");
    for HistoryEntry {
        at,
        action,
        actor,
        detail,
    } in &history.entries
    {
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            rfc3339(*at),
            esc(action),
            esc(actor),
            esc(detail)
        );
    }
    html.push_str("</table>\n</body>\n</html>\n");
    Ok(Some(html))
}

/// Text from the store, escaped for HTML ([`crate::inventory::view::html`]).
pub(crate) fn esc(text: &str) -> String {
    crate::inventory::view::html(text)
}

/// The colour of a role on the timeline (and its legend).
fn role_colour(role: Role) -> &'static str {
    match role {
        Role::Gateway => "#d95f02",
        Role::Iis => "#7570b3",
        Role::SiteServer => "#1b9e77",
        Role::Agent => "#e7298a",
        Role::Ca => "#66a61e",
        Role::Other => "#a6761d",
    }
}

fn page_start(title: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        esc(title)
    )
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;margin:0.5em 0 1.5em}\
th,td{border:1px solid #ccc;padding:0.25em 0.6em;text-align:left;vertical-align:top}\
th{background:#f4f4f4}.meta{color:#555}.ok{color:#1b7e3c}.warning{color:#b36b00}\
.critical{color:#b00020}.legend span{display:inline-block;margin-right:1em}\
.swatch{display:inline-block;width:0.9em;height:0.9em;margin-right:0.3em;vertical-align:middle}";

/// The stacked bar chart: one bar per week, one segment per role.
fn timeline_svg(html: &mut String, o: &Overview) {
    const WIDTH: i64 = 780;
    const HEIGHT: i64 = 220;
    const LEFT: i64 = 40;
    const BOTTOM: i64 = 30;
    let max = o
        .timeline
        .iter()
        .map(WeekBar::total)
        .max()
        .unwrap_or(0)
        .max(1);
    let slot = (WIDTH - LEFT) / TIMELINE_WEEKS as i64;
    let bar = slot * 7 / 10;
    let plot = HEIGHT - BOTTOM - 10;
    let _ = write!(
        html,
        "<h2>Expiring in the next {TIMELINE_WEEKS} weeks</h2>\n<p class=\"meta\">Certificates \
         still deployed, by role and week (ephemeral agent credentials left out).</p>\n\
         <svg id=\"timeline\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" \
         height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" \
         aria-label=\"certificates expiring per week\" data-generated-at=\"{}\" data-max=\"{max}\">\n",
        o.generated_at
    );
    let _ = writeln!(
        html,
        "<line x1=\"{LEFT}\" y1=\"{y}\" x2=\"{WIDTH}\" y2=\"{y}\" stroke=\"#888\"/>\
         <text x=\"{}\" y=\"14\" font-size=\"11\" text-anchor=\"end\">{max}</text>",
        LEFT - 4,
        y = HEIGHT - BOTTOM
    );
    for (i, week) in o.timeline.iter().enumerate() {
        let x = LEFT + i as i64 * slot + (slot - bar) / 2;
        let mut y = HEIGHT - BOTTOM;
        for (role, count) in &week.by_role {
            let h = (*count as i64 * plot / max as i64).max(1);
            y -= h;
            let _ = writeln!(
                html,
                "<rect class=\"bar\" x=\"{x}\" y=\"{y}\" width=\"{bar}\" height=\"{h}\" \
                 fill=\"{}\" data-week=\"{i}\" data-role=\"{}\" data-count=\"{count}\">\
                 <title>{}: {count} expiring in the week of {}</title></rect>",
                role_colour(*role),
                role.as_str(),
                role.as_str(),
                &rfc3339(week.start)[..10]
            );
        }
        let _ = writeln!(
            html,
            "<text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"middle\">{}</text>",
            x + bar / 2,
            HEIGHT - 12,
            &rfc3339(week.start)[5..10]
        );
    }
    html.push_str("</svg>\n<p class=\"legend\">");
    for role in Role::ALL {
        let _ = write!(
            html,
            "<span><span class=\"swatch\" style=\"background:{}\"></span>{}</span>",
            role_colour(role),
            role.as_str()
        );
    }
    html.push_str("</p>\n");
}

fn certificate_cell(c: &Certificate, links: Links) -> String {
    let name = esc(c.facts.display_name());
    match links {
        Links::Served => format!(
            "<a href=\"/certificate/{}\">{name}</a>",
            c.fingerprint().to_hex()
        ),
        Links::None => format!("{name}<br><small>{}</small>", c.fingerprint().to_hex()),
    }
}

/// The needs-attention tables.
fn attention(html: &mut String, o: &Overview, links: Links) {
    let check = &o.check;
    html.push_str("<h2>Needs attention</h2>\n");
    let lists = [
        ("expired", "critical", &check.expired),
        ("critical", "critical", &check.critical),
        ("warning", "warning", &check.warning),
    ];
    let rows: usize = lists.iter().map(|(_, _, l)| l.len()).sum();
    if rows == 0 {
        html.push_str("<p class=\"ok\">No certificate expired or expiring within 30 days.</p>\n");
    } else {
        html.push_str(
            "<table id=\"attention\">\n<tr><th>State</th><th>Certificate</th><th>Role</th>\
             <th>Expires</th><th>Days left</th><th>Issuer</th><th>Deployed at</th></tr>\n",
        );
        for (state, class, list) in lists {
            for c in list.iter().take(ROWS_SHOWN) {
                let deployed = c
                    .current_sources()
                    .next()
                    .map(|s| s.location.to_string())
                    .unwrap_or_default();
                let _ = writeln!(
                    html,
                    "<tr class=\"{class}\" data-state=\"{state}\"><td>{state}</td><td>{}</td>\
                     <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    certificate_cell(c, links),
                    c.role.as_str(),
                    rfc3339(c.facts.not_after),
                    days_left(c.facts.not_after, o.generated_at),
                    esc(&c.facts.issuer),
                    esc(&deployed)
                );
            }
            if list.len() > ROWS_SHOWN {
                let _ = writeln!(
                    html,
                    "<tr><td colspan=\"7\">… {} more {state} (certctl list)</td></tr>",
                    list.len() - ROWS_SHOWN
                );
            }
        }
        html.push_str("</table>\n");
    }
    if !check.findings.is_empty() {
        html.push_str(
            "<h2>Endpoint findings</h2>\n<table id=\"findings\">\n<tr><th>Endpoint</th>\
             <th>Finding</th><th>Detail</th></tr>\n",
        );
        for f in &check.findings {
            let class = if f.critical { "critical" } else { "warning" };
            let _ = writeln!(
                html,
                "<tr class=\"{class}\"><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&f.endpoint),
                esc(&f.kind.to_string()),
                esc(&f.detail)
            );
        }
        html.push_str("</table>\n");
    }
    let mut other: Vec<String> = Vec::new();
    for ca in &check.stale_crls {
        other.push(format!(
            "CA {}: its published CRL misses revocations",
            esc(ca)
        ));
    }
    for crl in &check.crls_expiring {
        other.push(format!(
            "CA {}: CRL nextUpdate {}",
            esc(&crl.ca),
            rfc3339(crl.next_update)
        ));
    }
    for failed in &check.failed_files {
        other.push(format!("unreadable file: {}", esc(failed)));
    }
    if check.not_yet_valid > 0 {
        other.push(format!(
            "{} certificates are not valid yet (clock skew?)",
            check.not_yet_valid
        ));
    }
    if !other.is_empty() {
        html.push_str("<h2>Also</h2>\n<ul id=\"other\">\n");
        for line in other {
            let _ = writeln!(html, "<li>{line}</li>");
        }
        html.push_str("</ul>\n");
    }
    if !o.pending_agents.is_empty() {
        let _ = write!(
            html,
            "<h2>Agents awaiting approval ({})</h2>\n<table id=\"pending\">\n<tr><th>Agent</th>\
             <th>Reason</th><th>First seen</th><th>Reported by</th></tr>\n",
            o.pending_agents.len()
        );
        for a in o.pending_agents.iter().take(ROWS_SHOWN) {
            let _ = writeln!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&a.agent),
                esc(&a.reason),
                rfc3339(a.first_seen),
                esc(&a.sources.join(", "))
            );
        }
        html.push_str("</table>\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_quotes_and_controls() {
        let escaped = esc("<script>alert('x')</script> & \"q\"\u{1b}[31m");
        assert!(
            escaped
                .starts_with("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"),
            "{escaped}"
        );
        assert!(!escaped.contains('\u{1b}'), "{escaped}");
    }

    #[test]
    fn the_timeline_stacks_roles_per_week_with_their_counts() {
        let mut by_role = BTreeMap::new();
        by_role.insert(Role::Gateway, 3);
        by_role.insert(Role::Iis, 1);
        let mut timeline: Vec<WeekBar> = (0..TIMELINE_WEEKS)
            .map(|i| WeekBar {
                start: 1_800_000_000 + i as i64 * WEEK,
                by_role: BTreeMap::new(),
            })
            .collect();
        timeline[2].by_role = by_role;
        let mut html = String::new();
        let o = Overview {
            generated_at: 1_800_000_000,
            timeline,
            check: check::check(
                &Store::open(&tempfile::tempdir().unwrap().path().join("store")).unwrap(),
                Duration::from_secs(1),
                Duration::from_secs(1),
                None,
                1_800_000_000,
            )
            .unwrap(),
            pending_agents: Vec::new(),
        };
        timeline_svg(&mut html, &o);
        assert!(html.contains("data-week=\"2\" data-role=\"gateway\" data-count=\"3\""));
        assert!(html.contains("data-week=\"2\" data-role=\"iis\" data-count=\"1\""));
        assert_eq!(html.matches("<rect").count(), 2, "{html}");
    }
}
