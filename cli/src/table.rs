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
        self.render_block(&mut Vec::new(), true)
    }

    /// The rows (after the header when `header`), aligned to `widths` grown to fit them:
    /// one block of a long table printed as it is read (`list` on a terminal), the next
    /// block aligned to the same widths or wider. [`Table::render`] is the one block.
    pub fn render_block(&self, widths: &mut Vec<usize>, header: bool) -> String {
        if widths.len() < self.header.len() {
            widths.resize(self.header.len(), 0);
        }
        for (w, h) in widths.iter_mut().zip(&self.header) {
            *w = (*w).max(h.chars().count());
        }
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        let mut out = String::new();
        let head = header.then_some(&self.header);
        for row in head.into_iter().chain(&self.rows) {
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
