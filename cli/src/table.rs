//! Plain-text tables for terminals: left-aligned columns, two spaces apart. Every cell
//! goes through [`certctl_daemon::view::printable`]: names, paths and outcomes come from
//! certificates, files and servers, and a control character in one is shown escaped.

use std::borrow::Cow;

use certctl_daemon::view::printable;

/// A table under construction.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Table {
            header: header.iter().map(|h| printable(h).into_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(
            cells
                .into_iter()
                .map(|c| match printable(&c) {
                    Cow::Borrowed(_) => c,
                    Cow::Owned(escaped) => escaped,
                })
                .collect(),
        );
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let last = row.len().saturating_sub(1);
            for (i, cell) in row.iter().enumerate() {
                out.push_str(cell);
                if i < last {
                    let pad = widths.get(i).copied().unwrap_or(0) - cell.chars().count();
                    out.push_str(&" ".repeat(pad + 2));
                }
            }
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_escaped_and_aligned() {
        let mut t = Table::new(&["NAME", "WHERE"]);
        t.row(vec!["a\x1b[31m\r\nb".into(), "x".into()]);
        t.row(vec!["plain".into(), "y".into()]);
        assert_eq!(
            t.render(),
            "NAME            WHERE\na\\x1b[31m\\r\\nb  x\nplain           y\n"
        );
    }
}
