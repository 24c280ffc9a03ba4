//! Who a request comes from, and where clients reach the registry: trusted proxy ranges, the
//! client address behind `X-Forwarded-For`, and the external URL of the token realm.
//!
//! A forwarded header is a claim anyone can make. It is believed only from a peer inside a
//! configured trusted range, and then only as far as the chain stays inside trusted ranges:
//!
//! ```text
//! X-Forwarded-For: 203.0.113.9, 10.0.0.7     peer 10.0.0.2 (trusted: 10.0.0.0/8)
//!                  └ client ┘   └ trusted ┘  → client 203.0.113.9
//! ```

use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

/// An address range: `10.0.0.0/8`, `fd00::/8`, or one address (`192.0.2.7`, `::1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    base: IpAddr,
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let bad = || format!("{s:?} is not an address or a range like 10.0.0.0/8 or fd00::/8");
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().map_err(|_| bad())?)),
            None => (s.trim(), None),
        };
        let base: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if base.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(bad());
        }
        Ok(Cidr { base: mask(base, prefix), prefix })
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        ip.is_ipv4() == self.base.is_ipv4() && mask(ip, self.prefix) == self.base
    }
}

/// IPv4 addresses seen through an IPv6 socket (`::ffff:10.0.0.1`) as the IPv4 address they are.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = u32::MAX.checked_shl(32 - u32::from(prefix.min(32))).unwrap_or(0);
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = u128::MAX.checked_shl(128 - u32::from(prefix.min(128))).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

/// The network one client holds, for limits kept per client: an IPv4 address as it is, an IPv6
/// address's /64. A /64 is what one subscriber or one host is usually given, and whoever has one
/// may use any of its 2^64 addresses: a limit per IPv6 address would limit nothing.
pub fn client_network(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        v6 @ IpAddr::V6(_) => mask(v6, 64),
        v4 => v4,
    }
}

pub fn is_trusted(ip: IpAddr, trusted: &[Cidr]) -> bool {
    trusted.iter().any(|c| c.contains(ip))
}

/// The client's address: `peer` itself, unless `peer` is a trusted proxy, in which case the
/// right-most address of `X-Forwarded-For` (`forwarded`: the header values in order) that is not
/// itself trusted. Anything unparsable in the chain stops the walk at the last address known.
pub fn client_address<'a>(
    peer: IpAddr,
    forwarded: impl IntoIterator<Item = &'a str>,
    trusted: &[Cidr],
) -> IpAddr {
    if !is_trusted(peer, trusted) {
        return canonical(peer);
    }
    let hops: Vec<&str> = forwarded.into_iter().flat_map(|v| v.split(',')).map(str::trim).collect();
    let mut client = canonical(peer);
    for hop in hops.iter().rev() {
        let Some(ip) = parse_hop(hop) else { break };
        client = ip;
        if !is_trusted(ip, trusted) {
            break;
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, possibly bracketed or with a port; nothing else.
pub fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sock) = hop.parse::<std::net::SocketAddr>() {
        return Some(canonical(sock.ip()));
    }
    match hop.strip_prefix('[')?.split_once(']')? {
        (v6, "") => v6.parse::<Ipv6Addr>().ok().map(|ip| canonical(ip.into())),
        _ => None,
    }
}

/// `http://` or `https://`, a host (with an optional port) and an optional path prefix, with no
/// query or fragment: where clients reach the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalUrl {
    pub https: bool,
    /// `host[:port]`, as clients write it.
    pub authority: String,
    /// Empty, or `/prefix` without a trailing slash.
    pub path: String,
}

impl ExternalUrl {
    pub fn parse(s: &str) -> Result<ExternalUrl, String> {
        let bad = |why: &str| format!("{s:?} is not a URL like https://registry.example.com: {why}");
        let (https, rest) = if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(bad("it must start with https:// or http://"));
        };
        if rest.contains(['?', '#']) {
            return Err(bad("no query or fragment"));
        }
        let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        if !is_authority(authority) {
            return Err(bad("the host is not valid"));
        }
        // RFC 3986 path characters only: the URL is put in quoted header parameters and links.
        let path_char = |c: char| c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@%/".contains(c);
        if !path.chars().all(path_char) {
            return Err(bad("the path may hold only URL path characters (no spaces or quotes)"));
        }
        let path = path.trim_end_matches('/');
        Ok(ExternalUrl {
            https,
            authority: authority.to_owned(),
            path: if path.is_empty() { String::new() } else { format!("/{path}") },
        })
    }

    /// `base` + `path` (which starts with `/`).
    pub fn join(&self, path: &str) -> String {
        format!("{}://{}{}{path}", if self.https { "https" } else { "http" }, self.authority, self.path)
    }
}

/// A `Host` value fit to put in a URL: a DNS name or an address (IPv6 in brackets), then an
/// optional port; nothing that could end a quoted header parameter or add a path.
pub fn is_authority(s: &str) -> bool {
    let (host_ok, port) = match s.strip_prefix('[') {
        Some(rest) => {
            let Some((v6, tail)) = rest.split_once(']') else { return false };
            let port = match tail {
                "" => None,
                t => match t.strip_prefix(':') {
                    Some(p) => Some(p),
                    None => return false,
                },
            };
            (v6.parse::<Ipv6Addr>().is_ok(), port)
        }
        None => match s.split_once(':') {
            Some((host, port)) => (is_hostname(host), Some(port)),
            None => (is_hostname(s), None),
        },
    };
    host_ok && port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.parse::<u16>().is_ok())
}

/// DNS labels (letters, digits, `-`, `_`) or an IPv4 address.
fn is_hostname(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges() {
        let net: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains(ip("10.200.1.1")) && !net.contains(ip("11.0.0.1")));
        assert!(net.contains(ip("::ffff:10.0.0.1")), "IPv4 through an IPv6 socket");
        assert!(!net.contains(ip("fd00::1")));
        let one: Cidr = "192.0.2.7".parse().unwrap();
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains(ip("8.8.8.8")));
        assert_eq!("10.1.2.3/8".parse::<Cidr>().unwrap(), net, "host bits are ignored");
        for bad in ["", "10.0.0.0/33", "fd00::/129", "10.0.0/8", "x", "10.0.0.0/", "/8"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_client_holds_an_ipv4_address_or_an_ipv6_slash_64() {
        assert_eq!(client_network(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(client_network(ip("::ffff:192.0.2.7")), ip("192.0.2.7"), "IPv4 through an IPv6 socket");
        let one = client_network(ip("2001:db8:1:2:aaaa::1"));
        assert_eq!(one, ip("2001:db8:1:2::"));
        assert_eq!(client_network(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")), one, "the same /64");
        assert_ne!(client_network(ip("2001:db8:1:3::1")), one, "the next /64");
    }

    #[test]
    fn forwarded_for_counts_only_from_trusted_proxies() {
        let trusted = ["10.0.0.0/8".parse().unwrap()];
        let xff = ["203.0.113.9, 10.0.0.7"];
        // An untrusted peer's claim is ignored.
        assert_eq!(client_address(ip("198.51.100.1"), xff, &trusted), ip("198.51.100.1"));
        // Through trusted proxies to the first address that is not one.
        assert_eq!(client_address(ip("10.0.0.2"), xff, &trusted), ip("203.0.113.9"));
        // A client cannot hide behind an address it prepends.
        let spoofed = ["1.2.3.4", "203.0.113.9"];
        assert_eq!(client_address(ip("10.0.0.2"), spoofed, &trusted), ip("203.0.113.9"));
        // Garbage stops the walk at the last known hop; no header leaves the peer.
        assert_eq!(client_address(ip("10.0.0.2"), ["junk, 10.0.0.9"], &trusted), ip("10.0.0.9"));
        assert_eq!(client_address(ip("10.0.0.2"), [], &trusted), ip("10.0.0.2"));
        assert_eq!(client_address(ip("10.0.0.2"), ["[2001:db8::1]:443"], &trusted), ip("2001:db8::1"));
        assert_eq!(client_address(ip("10.0.0.2"), ["192.0.2.1:5000"], &trusted), ip("192.0.2.1"));
        assert_eq!(client_address(ip("10.0.0.2"), ["[2001:db8::1]"], &trusted), ip("2001:db8::1"));
        // found by fuzzing: a bracketed address followed by anything but a port is garbage
        assert_eq!(client_address(ip("10.0.0.2"), ["[2001:db8::1]:e/"], &trusted), ip("10.0.0.2"));
    }

    #[test]
    fn external_urls() {
        let u = ExternalUrl::parse("https://registry.example.com").unwrap();
        assert_eq!(u.join("/token"), "https://registry.example.com/token");
        let u = ExternalUrl::parse("http://10.1.2.3:5000/berth/").unwrap();
        assert_eq!(u.join("/token"), "http://10.1.2.3:5000/berth/token");
        assert_eq!(ExternalUrl::parse("https://[fd00::1]:443").unwrap().authority, "[fd00::1]:443");
        for bad in [
            "registry.example.com",
            "ftp://x",
            "https://",
            "https://a b",
            "https://x/?q",
            "https://x\"y",
            // found by fuzzing: a space or quote in the path would end the realm parameter
            "https://registry/8m ",
            "https://x/a\"b",
            "https://x/a\\b",
        ] {
            assert!(ExternalUrl::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn authorities() {
        for ok in
            ["registry", "registry.example.com:443", "127.0.0.1:5000", "[::1]:5000", "[fd00::1]", "my_host"]
        {
            assert!(is_authority(ok), "{ok:?}");
        }
        for bad in ["", "a\"b", "evil.com/x", "host:", "host:99999", "[::1", "[zz]:1", "a..b", "a b", "a:1:2"]
        {
            assert!(!is_authority(bad), "{bad:?}");
        }
    }
}
