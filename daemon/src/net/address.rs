//! `host:port` as admins write endpoints (`gw.contoso.example:443`, `[2001:db8::1]:8443`):
//! the one parser, whose problems each caller words for its own context (certd.toml's
//! line, `certctl probe`'s argument).

use std::net::Ipv6Addr;

/// Why a `host:port` is not one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum AddressProblem {
    /// `https://...`: a URL, not an address.
    Url,
    /// `[2001:db8::1` without the closing bracket.
    NoClosingBracket,
    /// `[x]:443` where `x` is not an IPv6 address.
    NotIpv6,
    /// No `:port`.
    NoPort,
    /// `2001:db8::1:443`: an IPv6 address without brackets.
    UnbracketedIpv6,
    /// `:443`.
    NoHost,
    /// A host with spaces or a `/`.
    BadHost,
    /// A port that is not 1 to 65535.
    BadPort,
}

/// Splits `host:port` / `[v6]:port` into the host (without brackets) and the port.
pub(crate) fn split_host_port(address: &str) -> Result<(String, u16), AddressProblem> {
    if address.contains("://") {
        return Err(AddressProblem::Url);
    }
    let (host, port) = if let Some(rest) = address.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or(AddressProblem::NoClosingBracket)?;
        if host.parse::<Ipv6Addr>().is_err() {
            return Err(AddressProblem::NotIpv6);
        }
        (host, after.strip_prefix(':').ok_or(AddressProblem::NoPort)?)
    } else {
        match address.rsplit_once(':') {
            None => return Err(AddressProblem::NoPort),
            Some((host, _)) if host.contains(':') => return Err(AddressProblem::UnbracketedIpv6),
            Some(parts) => parts,
        }
    };
    if host.is_empty() {
        return Err(AddressProblem::NoHost);
    }
    if host.contains(|c: char| c.is_whitespace() || c == '/') {
        return Err(AddressProblem::BadHost);
    }
    if port.is_empty() {
        return Err(AddressProblem::NoPort);
    }
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok((host.to_string(), p)),
        _ => Err(AddressProblem::BadPort),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_ipv6_and_the_problems() {
        assert_eq!(
            split_host_port("gw.example:443"),
            Ok(("gw.example".into(), 443))
        );
        assert_eq!(
            split_host_port("[2001:db8::1]:8443"),
            Ok(("2001:db8::1".into(), 8443))
        );
        for (bad, problem) in [
            ("https://gw:443", AddressProblem::Url),
            ("[2001:db8::1", AddressProblem::NoClosingBracket),
            ("[gw]:443", AddressProblem::NotIpv6),
            ("[::1]", AddressProblem::NoPort),
            ("gw.example", AddressProblem::NoPort),
            ("2001:db8::1:443", AddressProblem::UnbracketedIpv6),
            (":443", AddressProblem::NoHost),
            ("g w:443", AddressProblem::BadHost),
            ("gw:", AddressProblem::NoPort),
            ("gw:0", AddressProblem::BadPort),
            ("gw:70000", AddressProblem::BadPort),
        ] {
            assert_eq!(split_host_port(bad), Err(problem), "{bad}");
        }
    }
}
