//! The network allowlist: `host:port` patterns and CIDR ranges, with loopback, private,
//! link-local and cloud-metadata addresses denied unless a rule names them explicitly.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// An IP network: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is inside this network.
    pub fn contains(self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = s.split_once('/').unwrap_or((s, ""));
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not a valid CIDR range"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = if prefix.is_empty() {
            max
        } else {
            prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?} is not a valid CIDR range"))?
        };
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// One allowlist entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetRule {
    /// A host name (exact, or `*.example.com`), or an IP literal, and a port or `*`.
    HostPort {
        /// The host pattern.
        host: String,
        /// The port, `None` for any.
        port: Option<u16>,
    },
    /// Any address in a network, any port.
    Cidr(Cidr),
}

impl FromStr for NetRule {
    type Err = String;

    /// `api.example.com:443`, `*.example.com:*`, `10.0.0.5:8080`, `[::1]:80`, `10.0.0.0/8`.
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.contains('/') || s.parse::<IpAddr>().is_ok() {
            return s.parse().map(NetRule::Cidr);
        }
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?} is neither HOST:PORT nor a CIDR range"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = match port {
            "*" => None,
            p => Some(
                p.parse::<u16>()
                    .map_err(|_| format!("{s:?} has an invalid port {p:?}"))?,
            ),
        };
        let valid_host = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '*' | ':'))
            && (!host.contains('*')
                || host == "*"
                || (host.starts_with("*.") && !host[2..].contains('*')));
        if !valid_host {
            return Err(format!("{s:?} has an invalid host {host:?}"));
        }
        Ok(NetRule::HostPort {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

impl fmt::Display for NetRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetRule::HostPort { host, port } => {
                let host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host.clone()
                };
                match port {
                    Some(p) => write!(f, "{host}:{p}"),
                    None => write!(f, "{host}:*"),
                }
            }
            NetRule::Cidr(c) => write!(f, "{c}"),
        }
    }
}

/// Why a destination was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetDenial {
    /// The destination asked for.
    pub target: String,
    /// Why it is refused.
    pub reason: &'static str,
}

/// The ranges no broad rule opens: a rule must name them, or an address inside them.
const SPECIAL: &[(&str, &str)] = &[
    ("169.254.169.254/32", "a cloud metadata address"),
    ("100.100.100.200/32", "a cloud metadata address"),
    ("fd00:ec2::254/128", "a cloud metadata address"),
    ("127.0.0.0/8", "a loopback address"),
    ("::1/128", "a loopback address"),
    ("10.0.0.0/8", "a private address"),
    ("172.16.0.0/12", "a private address"),
    ("192.168.0.0/16", "a private address"),
    ("100.64.0.0/10", "a shared (carrier-grade NAT) address"),
    ("fc00::/7", "a private address"),
    ("169.254.0.0/16", "a link-local address"),
    ("fe80::/10", "a link-local address"),
    ("0.0.0.0/32", "the unspecified address"),
    ("::/128", "the unspecified address"),
];

fn special(ip: IpAddr) -> Option<(Cidr, &'static str)> {
    SPECIAL
        .iter()
        .map(|(c, why)| (c.parse::<Cidr>().expect("valid table"), *why))
        .find(|(c, _)| c.contains(ip))
}

/// IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The destinations a guest may reach. Empty (the default) means none.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetworkPolicy {
    /// The allowlist.
    pub allow: Vec<NetRule>,
}

impl NetworkPolicy {
    /// Whether the guest may connect to (or bind) `addr`.
    pub fn check_addr(&self, addr: SocketAddr) -> Result<(), NetDenial> {
        let ip = canonical(addr.ip());
        let deny = |reason| {
            Err(NetDenial {
                target: addr.to_string(),
                reason,
            })
        };
        let special = special(ip);
        for rule in &self.allow {
            let (matches, width) = match rule {
                NetRule::Cidr(c) => (c.contains(ip), Some(*c)),
                NetRule::HostPort { host, port } => {
                    let port_ok = port.is_none_or(|p| p == addr.port());
                    if host == "*" {
                        // Any host: as broad as a rule can be, so never explicit for a special range.
                        (port_ok, None)
                    } else {
                        match host.parse::<IpAddr>() {
                            Ok(literal) => (
                                port_ok && canonical(literal) == ip,
                                Some(Cidr {
                                    addr: ip,
                                    prefix: if ip.is_ipv4() { 32 } else { 128 },
                                }),
                            ),
                            // A name rule never matches a bare address: names are checked by
                            // `check_host` before resolution.
                            Err(_) => (false, None),
                        }
                    }
                }
            };
            if !matches {
                continue;
            }
            match (special, width) {
                (None, _) => return Ok(()),
                // Explicit: the rule's network is no wider than the special range.
                (Some((range, _)), Some(rule)) if rule.prefix >= range.prefix => return Ok(()),
                _ => {}
            }
        }
        match special {
            Some((_, why)) => deny(why),
            None => deny("not in the allowlist"),
        }
    }

    /// Whether the guest may connect to `host:port` by name (before resolution; the resolved
    /// address must then pass [`NetworkPolicy::check_addr`] too).
    pub fn check_host(&self, host: &str, port: u16) -> Result<(), NetDenial> {
        if let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            return self.check_addr(SocketAddr::new(ip, port));
        }
        let host = host.to_ascii_lowercase();
        let allowed = self.allow.iter().any(|rule| match rule {
            NetRule::HostPort {
                host: pattern,
                port: p,
            } => {
                let port_ok = p.is_none_or(|p| p == port);
                let name_ok = match pattern.strip_prefix("*.") {
                    Some(suffix) => host.ends_with(&format!(".{suffix}")),
                    None => pattern == "*" || *pattern == host,
                };
                port_ok && name_ok
            }
            NetRule::Cidr(_) => false,
        });
        if allowed {
            Ok(())
        } else {
            Err(NetDenial {
                target: format!("{host}:{port}"),
                reason: "not in the allowlist",
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(rules: &[&str]) -> NetworkPolicy {
        NetworkPolicy {
            allow: rules.iter().map(|r| r.parse().unwrap()).collect(),
        }
    }

    fn check(rules: &[&str], addr: &str, allowed: bool) {
        let addr: SocketAddr = addr.parse().unwrap();
        assert_eq!(
            policy(rules).check_addr(addr).is_ok(),
            allowed,
            "{rules:?} {addr}"
        );
    }

    #[test]
    fn addresses() {
        check(&[], "93.184.216.34:443", false);
        check(&["0.0.0.0/0"], "93.184.216.34:443", true);
        check(&["93.184.216.0/24"], "93.184.216.34:80", true);
        check(&["93.184.216.34:443"], "93.184.216.34:443", true);
        check(&["93.184.216.34:443"], "93.184.216.34:80", false);
        check(&["2001:db8::/32"], "[2001:db8::1]:443", true);
        // Broad rules never open the special ranges.
        for special in [
            "127.0.0.1:80",
            "10.1.2.3:80",
            "192.168.1.1:80",
            "169.254.169.254:80",
            "[::1]:80",
            "[::ffff:127.0.0.1]:80",
            "[fd00:ec2::254]:80",
            "0.0.0.0:80",
        ] {
            check(&["0.0.0.0/0", "::/0"], special, false);
        }
        // Naming them does.
        check(&["127.0.0.1:8080"], "127.0.0.1:8080", true);
        check(&["10.0.0.0/8"], "10.1.2.3:80", true);
        check(&["169.254.169.254/32"], "169.254.169.254:80", true);
        check(&["127.0.0.1:8080"], "[::ffff:127.0.0.1]:8080", true);
        check(&["169.254.0.0/16"], "169.254.169.254:80", false);
    }

    #[test]
    fn names() {
        let p = policy(&["api.example.com:443", "*.cdn.example.net:*"]);
        assert!(p.check_host("api.example.com", 443).is_ok());
        assert!(p.check_host("API.example.com", 443).is_ok());
        assert!(p.check_host("api.example.com", 80).is_err());
        assert!(p.check_host("img.cdn.example.net", 8443).is_ok());
        assert!(p.check_host("cdn.example.net", 443).is_err());
        assert!(p.check_host("evil.com", 443).is_err());
        assert!(p.check_host("127.0.0.1", 443).is_err());
    }

    #[test]
    fn rules_parse_and_print() {
        for (text, ok) in [
            ("a.b:1", true),
            ("*.a.b:*", true),
            ("10.0.0.0/33", false),
            ("a.b", false),
            ("a.*.b:1", false),
            ("a.b:99999", false),
            ("[::1]:80", true),
        ] {
            let parsed = text.parse::<NetRule>();
            assert_eq!(parsed.is_ok(), ok, "{text}");
            if let Ok(rule) = parsed {
                assert_eq!(rule.to_string().parse::<NetRule>().unwrap(), rule);
            }
        }
    }
}
