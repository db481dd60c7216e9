//! Reading Prometheus text exposition in tests (`certctl metrics`, certd's `/metrics`).

use std::collections::{BTreeMap, BTreeSet};

/// (metric name, labels) → value.
pub type Series = BTreeMap<(String, BTreeMap<String, String>), f64>;

/// Parses the text exposition. Every sample line must be `name{k="v",...} number` or
/// `name number` after a `# TYPE name gauge` (or `counter`) line, and a series must appear
/// once.
pub fn parse(text: &str) -> Series {
    let mut typed = BTreeSet::new();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            typed.insert(parts.next().unwrap().to_string());
            let kind = parts.next();
            assert!(matches!(kind, Some("gauge" | "counter")), "{line}");
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample value");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("number in {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => {
                let l = l.strip_suffix('}').expect("closing brace");
                let labels = l
                    .split("\",")
                    .map(|kv| {
                        let (k, v) = kv.split_once("=\"").expect("label");
                        (k.to_string(), v.trim_end_matches('"').to_string())
                    })
                    .collect();
                (n.to_string(), labels)
            }
            None => (series.to_string(), BTreeMap::new()),
        };
        assert!(typed.contains(&name), "no TYPE line before {line}");
        assert!(
            out.insert((name, labels), value).is_none(),
            "series twice: {line}"
        );
    }
    out
}
