//! CRL distribution point URLs as certificates carry them, checked before anything is sent:
//! [`CrlUrl::parse`] accepts only `http://HOST[:PORT][/PATH]` made of printable ASCII (no
//! control characters, spaces or non-ASCII: they would reach the request line and headers
//! verbatim), with no user part; [`AllowList`] is `[crl] allow`, the hosts and networks
//! CRLs may be fetched from.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// A URL's host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A DNS name, lowercase.
    Name(String),
    Ip(IpAddr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// A checked `http://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CrlUrl {
    pub host: Host,
    pub port: u16,
    /// `host[:port]` as written (the `Host:` header).
    pub authority: String,
    /// The path and query, starting with `/` (the fragment dropped).
    pub path: String,
}

/// Why a URL is not fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UrlProblem {
    /// Another scheme (`ldap://`, `https://`, `file:`...).
    Scheme,
    /// Anything else, said as a phrase.
    Invalid(String),
}

/// The URL with every character outside printable ASCII escaped (`\r`, `\n`, `\u{e9}`),
/// for messages and logs.
pub(crate) fn escaped(url: &str) -> String {
    url.chars()
        .flat_map(|c| {
            let plain = c.is_ascii_graphic() || c == ' ';
            let out: Vec<char> = if plain && c != '\\' {
                vec![c]
            } else {
                c.escape_default().collect()
            };
            out
        })
        .collect()
}

impl CrlUrl {
    /// Checks a URL; only what passes is ever put on the wire.
    pub(crate) fn parse(url: &str) -> Result<CrlUrl, UrlProblem> {
        let bad = |what: String| Err(UrlProblem::Invalid(what));
        if let Some(c) = url.chars().find(|c| c.is_control()) {
            return bad(format!(
                "it holds a control character ({})",
                c.escape_default()
            ));
        }
        if url.contains(' ') {
            return bad("it holds a space".into());
        }
        if let Some(c) = url.chars().find(|c| !c.is_ascii()) {
            return bad(format!(
                "it holds a non-ASCII character ({})",
                c.escape_default()
            ));
        }
        let Some(scheme_end) = url.find("://") else {
            return Err(UrlProblem::Scheme);
        };
        if !url[..scheme_end].eq_ignore_ascii_case("http") {
            return Err(UrlProblem::Scheme);
        }
        let rest = &url[scheme_end + 3..];
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if authority.contains('@') {
            return bad("it holds a user name (`user@host`)".into());
        }
        let (host_text, port) = split_port(authority).map_err(UrlProblem::Invalid)?;
        let host = parse_host(host_text).map_err(UrlProblem::Invalid)?;
        let tail = tail.split('#').next().unwrap_or("");
        let path = if tail.starts_with('/') {
            tail.to_string()
        } else {
            format!("/{tail}")
        };
        Ok(CrlUrl {
            host,
            port,
            authority: authority.to_string(),
            path,
        })
    }

    /// `Location` of a redirect: absolute, or a path on the same host.
    pub(crate) fn join(&self, location: &str) -> Result<CrlUrl, UrlProblem> {
        if location.starts_with('/') && !location.starts_with("//") {
            CrlUrl::parse(&format!("http://{}{location}", self.authority))
        } else {
            CrlUrl::parse(location)
        }
    }

    #[cfg(test)]
    /// The URL as it is requested.
    pub(crate) fn text(&self) -> String {
        format!("http://{}{}", self.authority, self.path)
    }
}

/// `host[:port]` → (host, port), port 80 when absent.
fn split_port(authority: &str) -> Result<(&str, u16), String> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let close = v6.find(']').ok_or("its IPv6 address has no closing `]`")?;
        let after = &v6[close + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(format!("unexpected `{after}` after the IPv6 address")),
        };
        (&authority[..close + 2], port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        None => 80,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(format!("`{p}` is not a port (1 to 65535)")),
        },
    };
    Ok((host, port))
}

fn parse_host(text: &str) -> Result<Host, String> {
    if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        return inner
            .parse::<std::net::Ipv6Addr>()
            .map(|ip| Host::Ip(IpAddr::V6(ip)))
            .map_err(|_| format!("`{inner}` is not an IPv6 address"));
    }
    if text.is_empty() {
        return Err("it names no host".into());
    }
    if let Ok(ip) = text.parse::<std::net::Ipv4Addr>() {
        return Ok(Host::Ip(IpAddr::V4(ip)));
    }
    let ok = text.len() <= 253
        && text.split('.').enumerate().all(|(i, label)| {
            (!label.is_empty() || (i > 0 && text.ends_with('.')))
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !ok {
        return Err(format!("`{text}` is not a host name"));
    }
    Ok(Host::Name(text.trim_end_matches('.').to_ascii_lowercase()))
}

/// One `[crl] allow` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Allowed {
    /// A host name, exactly (lowercase).
    Name(String),
    /// `*.example.com`: any name under it (not the name itself).
    Under(String),
    /// An address or network: `10.0.0.0/8`, `192.0.2.7`, `fd00::/8`.
    Net(IpAddr, u8),
}

/// `[crl] allow`: the hosts and networks CRLs may be fetched from. Names match the URL's
/// host name; networks match the addresses it is reached at (a name that resolves into
/// an allowed network is allowed, and only those addresses are contacted). An empty list
/// allows nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct AllowList {
    entries: Vec<(String, Allowed)>,
}

impl TryFrom<Vec<String>> for AllowList {
    type Error = String;
    fn try_from(texts: Vec<String>) -> Result<Self, String> {
        AllowList::parse(&texts)
    }
}

impl From<AllowList> for Vec<String> {
    fn from(list: AllowList) -> Self {
        list.entries.into_iter().map(|(text, _)| text).collect()
    }
}

impl AllowList {
    /// Parses the entries; the error names the first bad one.
    pub fn parse<S: AsRef<str>>(texts: &[S]) -> Result<AllowList, String> {
        let entries = texts
            .iter()
            .map(|t| {
                let t = t.as_ref();
                parse_entry(t).map(|a| (t.to_string(), a))
            })
            .collect::<Result<_, _>>()?;
        Ok(AllowList { entries })
    }

    /// Whether the name itself is allowed (then every address it resolves to is).
    pub fn allows_name(&self, host: &Host) -> bool {
        match host {
            Host::Name(name) => self.entries.iter().any(|(_, a)| match a {
                Allowed::Name(n) => n == name,
                Allowed::Under(domain) => name
                    .strip_suffix(domain.as_str())
                    .is_some_and(|head| head.ends_with('.') && head.len() > 1),
                Allowed::Net(..) => false,
            }),
            Host::Ip(ip) => self.allows_ip(*ip),
        }
    }

    /// Whether an address is in one of the networks.
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.entries.iter().any(|(_, a)| match a {
            Allowed::Net(net, prefix) => in_network(ip, *net, *prefix),
            _ => false,
        })
    }

    /// Whether any entry is a network (a name must then be resolved to be judged).
    pub fn has_networks(&self) -> bool {
        self.entries
            .iter()
            .any(|(_, a)| matches!(a, Allowed::Net(..)))
    }
}

impl fmt::Display for AllowList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let texts: Vec<&str> = self.entries.iter().map(|(t, _)| t.as_str()).collect();
        write!(f, "{}", texts.join(", "))
    }
}

fn parse_entry(text: &str) -> Result<Allowed, String> {
    let t = text.trim();
    if t.contains("://") {
        return Err(format!(
            "`{text}` is a URL: write its host name only (`crl.example.com`)"
        ));
    }
    if let Some((addr, prefix)) = t.split_once('/') {
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{text}`: `{addr}` is not an IP address"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("`{text}`: the prefix length must be 0 to {max}"))?;
        return Ok(Allowed::Net(ip.to_canonical(), prefix));
    }
    if let Ok(ip) = t.parse::<IpAddr>() {
        let ip = ip.to_canonical();
        return Ok(Allowed::Net(ip, if ip.is_ipv4() { 32 } else { 128 }));
    }
    if let Ok(ip) = t
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or("")
        .parse::<IpAddr>()
    {
        return Ok(Allowed::Net(ip.to_canonical(), 128));
    }
    let (under, name) = match t.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, t),
    };
    match parse_host(name) {
        Ok(Host::Name(n)) if under => Ok(Allowed::Under(n)),
        Ok(Host::Name(n)) => Ok(Allowed::Name(n)),
        _ => Err(format!(
            "`{text}` is not a host name (`crl.example.com`, `*.example.com`), an IP address or a network (`10.0.0.0/8`)"
        )),
    }
}

fn in_network(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(url: &str) -> String {
        match CrlUrl::parse(url) {
            Err(UrlProblem::Invalid(why)) => why,
            other => panic!("{url}: {other:?}"),
        }
    }

    #[test]
    fn good_urls_parse() {
        let u = CrlUrl::parse("HTTP://Crl.Example.com/a/b.crl?x=1#frag").unwrap();
        assert_eq!(u.host, Host::Name("crl.example.com".into()));
        assert_eq!((u.port, u.path.as_str()), (80, "/a/b.crl?x=1"));
        let u = CrlUrl::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!((u.port, u.path.as_str()), (8080, "/"));
        let u = CrlUrl::parse("http://[::1]:81/c.crl").unwrap();
        assert_eq!(u.host, Host::Ip("::1".parse().unwrap()));
        assert_eq!((u.port, u.authority.as_str()), (81, "[::1]:81"));
    }

    #[test]
    fn hostile_urls_are_refused() {
        assert!(invalid("http://h/a.crl\r\nX-Injected: 1").contains("control character"));
        assert!(invalid("http://h/a\u{85}b").contains("control character"));
        assert!(invalid("http://h/a b.crl").contains("space"));
        assert!(invalid("http://h/caf\u{e9}.crl").contains("non-ASCII"));
        assert!(invalid("http://user@h/a.crl").contains("user"));
        assert!(invalid("http://h:0/a.crl").contains("port"));
        assert!(invalid("http://h:99999/a.crl").contains("port"));
        assert!(invalid("http://h:+80/a.crl").contains("port"));
        assert!(invalid("http:///a.crl").contains("no host"));
        assert!(invalid("http://a%0d.b/").contains("host name"));
        assert!(invalid("http://[::1/").contains("]"));
        for other in [
            "ldap://h/cn=x",
            "https://h/a.crl",
            "file:///etc/passwd",
            "h/a",
        ] {
            assert_eq!(CrlUrl::parse(other), Err(UrlProblem::Scheme), "{other}");
        }
    }

    #[test]
    fn escaping_shows_what_is_hidden() {
        assert_eq!(
            escaped("http://h/a\r\nX: \u{e9}\u{1b}"),
            "http://h/a\\r\\nX: \\u{e9}\\u{1b}"
        );
    }

    #[test]
    fn redirects_join() {
        let u = CrlUrl::parse("http://h:81/a.crl").unwrap();
        assert_eq!(u.join("/b.crl").unwrap().text(), "http://h:81/b.crl");
        assert_eq!(u.join("http://g/c.crl").unwrap().text(), "http://g/c.crl");
        assert_eq!(u.join("//g/c.crl"), Err(UrlProblem::Scheme));
        assert!(u.join("/x\r\ny").is_err());
    }

    #[test]
    fn the_allow_list_matches_names_and_networks() {
        let list = AllowList::parse(&[
            "crl.contoso.example",
            "*.pki.example",
            "10.0.0.0/8",
            "192.0.2.7",
            "fd00::/8",
        ])
        .unwrap();
        let name = |n: &str| Host::Name(n.into());
        assert!(list.allows_name(&name("crl.contoso.example")));
        assert!(!list.allows_name(&name("evil.contoso.example")));
        assert!(list.allows_name(&name("a.pki.example")));
        assert!(!list.allows_name(&name("pki.example")));
        assert!(!list.allows_name(&name("xpki.example")));
        for ip in ["10.1.2.3", "192.0.2.7", "fd12::1", "::ffff:10.0.0.1"] {
            assert!(list.allows_ip(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["11.0.0.1", "192.0.2.8", "127.0.0.1", "fe80::1"] {
            assert!(!list.allows_ip(ip.parse().unwrap()), "{ip}");
        }
        assert!(list.has_networks());
        assert!(AllowList::parse(&["0.0.0.0/0"])
            .unwrap()
            .allows_ip("8.8.8.8".parse().unwrap()));
    }

    #[test]
    fn bad_allow_entries_are_named() {
        for bad in [
            "10.0.0.0/33",
            "10.0.0/8",
            "fd00::/129",
            "",
            "a b",
            "http://x",
            "*.",
        ] {
            let e = AllowList::parse(&[bad]).expect_err(bad);
            assert!(e.contains(&format!("`{bad}`")), "{e}");
        }
        let json = serde_json::to_string(&AllowList::parse(&["10.0.0.0/8"]).unwrap()).unwrap();
        assert_eq!(json, r#"["10.0.0.0/8"]"#);
        assert!(serde_json::from_str::<AllowList>(r#"["10.0.0.0/99"]"#).is_err());
    }
}
