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
        let invalid = || format!("{s:?} is not a valid CIDR range");
        let (addr, prefix) = s.split_once('/').unwrap_or((s, ""));
        let addr: IpAddr = addr.parse().map_err(|_| invalid())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = if prefix.is_empty() {
            max
        } else {
            // Digits only: `u8::from_str` would also take `+8`.
            Some(prefix)
                .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|p| p.parse::<u8>().ok())
                .filter(|p| *p <= max)
                .ok_or_else(invalid)?
        };
        // Addresses are judged in their IPv4 form when they are IPv4-mapped (see
        // `canonical`), so a range written in the mapped form is kept in the IPv4 form too;
        // otherwise it could never match anything.
        if let IpAddr::V6(v6) = addr
            && prefix >= 96
            && let Some(v4) = v6.to_ipv4_mapped()
        {
            return Ok(Cidr {
                addr: IpAddr::V4(v4),
                prefix: prefix - 96,
            });
        }
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
        let valid_host = match host.parse::<IpAddr>() {
            Ok(_) => true,
            // Only an IPv6 literal has colons (`foo:bar:80` is no host).
            Err(_) if host.contains(':') => false,
            Err(_) => host == "*" || is_host_name(host.strip_prefix("*.").unwrap_or(host)),
        };
        if !valid_host {
            return Err(format!(
                "{s:?} has an invalid host {host:?}; write a name (api.example.com), \
                 a wildcard (*.example.com or *) or an IP address"
            ));
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

/// Whether `name` is a DNS host name: dot-separated labels of letters, digits and inner
/// hyphens, whose last label is not all digits (so that `127.1` or `2130706433`, which some
/// resolvers read as IPv4 addresses, never pass as names).
fn is_host_name(name: &str) -> bool {
    let labels: Vec<&str> = name.split('.').collect();
    name.len() <= 253
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && labels
            .last()
            .is_some_and(|l| !l.bytes().all(|b| b.is_ascii_digit()))
}

/// Why a destination was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetDenial {
    /// The destination asked for.
    pub target: String,
    /// Why it is refused.
    pub reason: &'static str,
}

impl fmt::Display for NetDenial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is refused: {}", self.target, self.reason)
    }
}

impl std::error::Error for NetDenial {}

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
        // `example.com.` is the fully qualified form of `example.com`.
        let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        if !is_host_name(&host) {
            return Err(NetDenial {
                target: format!("{host}:{port}"),
                reason: "not a valid host name",
            });
        }
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

    /// `expected`: `None` when allowed, or the reason of the denial.
    fn check(rules: &[&str], addr: &str, expected: Option<&str>) {
        let addr: SocketAddr = addr.parse().unwrap();
        let got = policy(rules).check_addr(addr).err().map(|d| d.reason);
        assert_eq!(got, expected, "{rules:?} {addr}");
    }

    const ALLOWED: Option<&str> = None;
    const UNLISTED: Option<&str> = Some("not in the allowlist");

    #[test]
    fn addresses() {
        check(&[], "93.184.216.34:443", UNLISTED);
        check(&["0.0.0.0/0"], "93.184.216.34:443", ALLOWED);
        check(&["*:443"], "93.184.216.34:443", ALLOWED);
        check(&["*:443"], "93.184.216.34:80", UNLISTED);
        check(&["*:*"], "93.184.216.34:80", ALLOWED);
        check(&["93.184.216.0/24"], "93.184.216.34:80", ALLOWED);
        check(&["93.184.216.0/24"], "93.184.217.34:80", UNLISTED);
        check(&["93.184.216.34:443"], "93.184.216.34:443", ALLOWED);
        check(&["93.184.216.34:443"], "93.184.216.34:80", UNLISTED);
        check(&["93.184.216.34:*"], "93.184.216.34:80", ALLOWED);
        check(&["93.184.216.34"], "93.184.216.34:22", ALLOWED);
        check(&["2001:db8::/32"], "[2001:db8::1]:443", ALLOWED);
        check(&["2001:db8::/32"], "[2001:db9::1]:443", UNLISTED);
        check(&["[2001:db8::1]:443"], "[2001:db8::1]:443", ALLOWED);
        // A name rule never matches a bare address.
        check(&["example.com:443"], "93.184.216.34:443", UNLISTED);
        // A range written in the IPv4-mapped form means the IPv4 range.
        check(&["::ffff:93.184.216.0/120"], "93.184.216.34:80", ALLOWED);
    }

    #[test]
    fn broad_rules_never_open_the_special_ranges() {
        for (addr, reason) in [
            ("127.0.0.1:80", "a loopback address"),
            ("127.8.9.10:80", "a loopback address"),
            ("[::1]:80", "a loopback address"),
            ("[::ffff:127.0.0.1]:80", "a loopback address"),
            ("10.1.2.3:80", "a private address"),
            ("172.31.0.1:80", "a private address"),
            ("192.168.1.1:80", "a private address"),
            ("[fd12::1]:80", "a private address"),
            ("[::ffff:10.0.0.1]:80", "a private address"),
            ("100.64.0.1:80", "a shared (carrier-grade NAT) address"),
            ("169.254.1.1:80", "a link-local address"),
            ("[fe80::1]:80", "a link-local address"),
            ("0.0.0.0:80", "the unspecified address"),
            ("[::]:80", "the unspecified address"),
            ("169.254.169.254:80", "a cloud metadata address"),
            ("[::ffff:169.254.169.254]:80", "a cloud metadata address"),
            ("[fd00:ec2::254]:80", "a cloud metadata address"),
            ("100.100.100.200:80", "a cloud metadata address"),
        ] {
            check(&["0.0.0.0/0", "::/0"], addr, Some(reason));
            check(&["*:80"], addr, Some(reason));
            check(&["*:*", "::ffff:0:0/96"], addr, Some(reason));
        }
        // Just outside the special ranges, broad rules apply.
        check(&["0.0.0.0/0"], "172.32.0.1:80", ALLOWED);
        check(&["0.0.0.0/0"], "100.128.0.1:80", ALLOWED);
    }

    #[test]
    fn rules_that_name_a_special_range_open_it() {
        check(&["127.0.0.1:8080"], "127.0.0.1:8080", ALLOWED);
        check(
            &["127.0.0.1:8080"],
            "127.0.0.1:8081",
            Some("a loopback address"),
        );
        check(&["127.0.0.1:8080"], "[::ffff:127.0.0.1]:8080", ALLOWED);
        check(&["::ffff:127.0.0.1"], "127.0.0.1:8080", ALLOWED);
        check(&["127.0.0.0/8"], "127.8.9.10:80", ALLOWED);
        check(&["[::1]:80"], "[::1]:80", ALLOWED);
        check(&["10.0.0.0/8"], "10.1.2.3:80", ALLOWED);
        check(&["10.1.2.0/24"], "10.1.2.3:80", ALLOWED);
        check(&["fc00::/7"], "[fd12::1]:80", ALLOWED);
        check(&["0.0.0.0"], "0.0.0.0:80", ALLOWED);
        check(&["169.254.169.254/32"], "169.254.169.254:80", ALLOWED);
        // Wider than the range the address falls in: not explicit.
        check(&["0.0.0.0/1"], "10.1.2.3:80", Some("a private address"));
        check(&["8.0.0.0/6"], "10.1.2.3:80", Some("a private address"));
        check(&["fc00::/6"], "[fd12::1]:80", Some("a private address"));
        // The metadata address is its own range: the link-local /16 does not open it.
        check(
            &["169.254.0.0/16"],
            "169.254.169.254:80",
            Some("a cloud metadata address"),
        );
        check(&["169.254.0.0/16"], "169.254.1.1:80", ALLOWED);
        check(
            &["100.64.0.0/10"],
            "100.100.100.200:80",
            Some("a cloud metadata address"),
        );
        check(
            &["fc00::/7"],
            "[fd00:ec2::254]:80",
            Some("a cloud metadata address"),
        );
    }

    #[test]
    fn names() {
        let check = |rules: &[&str], host: &str, port: u16, allowed: bool| {
            let got = policy(rules).check_host(host, port);
            assert_eq!(got.is_ok(), allowed, "{rules:?} {host}:{port} {got:?}");
        };
        let rules = &["api.example.com:443", "*.cdn.example.net:*"];
        check(rules, "api.example.com", 443, true);
        check(rules, "API.example.com", 443, true);
        check(rules, "api.example.com.", 443, true);
        check(rules, "api.example.com", 80, false);
        check(rules, "x.api.example.com", 443, false);
        check(rules, "img.cdn.example.net", 8443, true);
        check(rules, "a.b.cdn.example.net", 1, true);
        check(rules, "cdn.example.net", 443, false);
        check(rules, "evilcdn.example.net", 443, false);
        check(rules, "evil.com", 443, false);
        check(&["*:443"], "anything.example", 443, true);
        check(&["*:443"], "anything.example", 80, false);
        // Addresses are judged as addresses, names that read as addresses are refused.
        check(&["*:443"], "127.0.0.1", 443, false);
        check(&["*:443"], "[::1]", 443, false);
        check(&["127.0.0.1:443"], "127.0.0.1", 443, true);
        check(&["*:443"], "127.1", 443, false);
        check(&["*:443"], "2130706433", 443, false);
        check(&["*:443"], "", 443, false);
        // A CIDR rule says nothing about names.
        check(&["0.0.0.0/0"], "example.com", 443, false);
    }

    #[test]
    fn rules_parse_and_print() {
        for (text, printed) in [
            ("a.b:1", Some("a.b:1")),
            ("API.Example.com:443", Some("api.example.com:443")),
            ("*.a.b:*", Some("*.a.b:*")),
            ("*:443", Some("*:443")),
            ("[::1]:80", Some("[::1]:80")),
            ("10.0.0.5:8080", Some("10.0.0.5:8080")),
            ("10.0.0.0/8", Some("10.0.0.0/8")),
            ("10.0.0.5", Some("10.0.0.5/32")),
            ("2001:db8::/32", Some("2001:db8::/32")),
            ("2001:db8::1", Some("2001:db8::1/128")),
            ("::ffff:10.0.0.0/104", Some("10.0.0.0/8")),
            ("10.0.0.0/33", None),
            ("10.0.0.0/+8", None),
            ("2001:db8::/129", None),
            ("10.0.0/8", None),
            ("a.b", None),
            ("a.*.b:1", None),
            ("*.:1", None),
            ("a..b:1", None),
            ("-a.b:1", None),
            ("foo:bar:80", None),
            ("a.b:99999", None),
            ("a.b:", None),
            (":443", None),
        ] {
            let parsed = text.parse::<NetRule>();
            assert_eq!(
                parsed.as_ref().ok().map(ToString::to_string).as_deref(),
                printed,
                "{text}: {parsed:?}"
            );
            if let Ok(rule) = parsed {
                assert_eq!(rule.to_string().parse::<NetRule>().unwrap(), rule);
            }
        }
        assert_eq!(
            "10.0.0.0/33".parse::<NetRule>().unwrap_err(),
            "\"10.0.0.0/33\" is not a valid CIDR range"
        );
    }

    #[test]
    fn denials_read_as_sentences() {
        let denial = policy(&[])
            .check_addr("169.254.169.254:80".parse().unwrap())
            .unwrap_err();
        assert_eq!(
            denial.to_string(),
            "169.254.169.254:80 is refused: a cloud metadata address"
        );
    }
}
