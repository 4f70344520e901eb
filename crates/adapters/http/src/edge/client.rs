//! Who the client is, by network address: the peer, or, behind trusted
//! proxies, the address the nearest untrusted hop connected from.
//!
//! `X-Forwarded-For` is whatever the client says, except for the hops that
//! the server's own proxies appended. So it is read only when the peer is a
//! trusted proxy (`WAITER_TRUSTED_PROXIES`), from the right: each trusted
//! proxy vouches for the hop before it, and the first address that is not a
//! trusted proxy is the client. Without trusted proxies the header is never
//! read.

use std::net::IpAddr;
use std::str::FromStr;

use actix_web::HttpRequest;

/// The client address of a request, as the edge determined it; in the
/// request's extensions for handlers that count by address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientAddress(pub(crate) IpAddr);

/// Networks whose hosts are the server's own reverse proxies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Network>);

/// Why a `WAITER_TRUSTED_PROXIES` value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{network:?} is not an IP address or CIDR network (such as 10.0.0.0/8 or ::1/128)")]
pub struct TrustedProxiesError {
    network: String,
}

/// An IP network: an address and how many leading bits of it count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Network {
    address: IpAddr,
    prefix: u8,
}

impl Network {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.address, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                same_prefix(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                same_prefix(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

/// True when the first `bits` bits of `a` and `b` agree.
fn same_prefix(a: &[u8], b: &[u8], bits: u8) -> bool {
    let whole = usize::from(bits / 8);
    let rest = bits % 8;
    if a[..whole] != b[..whole] {
        return false;
    }
    rest == 0 || {
        let mask = 0xff_u8 << (8 - rest);
        (a[whole] & mask) == (b[whole] & mask)
    }
}

impl FromStr for Network {
    type Err = ();

    fn from_str(raw: &str) -> Result<Self, ()> {
        let (address, prefix) = match raw.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (raw, None),
        };
        let address = address.parse::<IpAddr>().map_err(drop)?.to_canonical();
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix.parse::<u8>().map_err(drop)?,
            None => max,
        };
        if prefix > max {
            return Err(());
        }
        Ok(Self { address, prefix })
    }
}

impl TrustedProxies {
    /// Parses a comma-separated list of addresses and CIDR networks; an
    /// empty list trusts no proxy.
    pub fn parse(raw: &str) -> Result<Self, TrustedProxiesError> {
        raw.split(',')
            .map(str::trim)
            .filter(|network| !network.is_empty())
            .map(|network| {
                network.parse().map_err(|()| TrustedProxiesError {
                    network: network.to_owned(),
                })
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|network| network.contains(ip))
    }

    /// The client address of `req`: its peer, or, when the peer is a trusted
    /// proxy, the rightmost `X-Forwarded-For` hop that is not one. `None`
    /// when the connection has no peer address (only in tests).
    pub(crate) fn client_of(&self, req: &HttpRequest) -> Option<IpAddr> {
        let peer = req.peer_addr()?.ip().to_canonical();
        if self.0.is_empty() {
            return Some(peer);
        }
        let forwarded = req
            .headers()
            .get_all("x-forwarded-for")
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .collect::<Vec<_>>();
        Some(self.nearest_untrusted(peer, forwarded.iter().rev().copied()))
    }

    /// Walks from the peer back through the hops (nearest first) while the
    /// current address is a trusted proxy; a hop that is not an address
    /// stops the walk at the proxy that sent it.
    fn nearest_untrusted<'a>(&self, peer: IpAddr, hops: impl Iterator<Item = &'a str>) -> IpAddr {
        let mut client = peer;
        for hop in hops {
            if !self.trusts(client) {
                break;
            }
            match hop.trim().parse::<IpAddr>() {
                Ok(hop) => client = hop.to_canonical(),
                Err(_) => break,
            }
        }
        client
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(raw: &str) -> IpAddr {
        raw.parse().unwrap()
    }

    #[test]
    fn networks_parse_and_match_by_prefix() {
        let proxies = TrustedProxies::parse("10.0.0.0/8, 192.0.2.7 ,2001:db8::/32").unwrap();
        assert!(proxies.trusts(ip("10.1.2.3")));
        assert!(!proxies.trusts(ip("11.0.0.1")));
        assert!(proxies.trusts(ip("192.0.2.7")));
        assert!(!proxies.trusts(ip("192.0.2.8")));
        assert!(proxies.trusts(ip("2001:db8::1")));
        assert!(!proxies.trusts(ip("2001:db9::1")));
        assert!(proxies.trusts(ip("::ffff:10.0.0.1").to_canonical()));
        assert_eq!(
            TrustedProxies::parse("").unwrap(),
            TrustedProxies::default()
        );
        let odd = TrustedProxies::parse("172.16.0.0/12").unwrap();
        assert!(odd.trusts(ip("172.31.255.255")));
        assert!(!odd.trusts(ip("172.32.0.0")));
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "example.com",
            "10.0.0.0/",
            "10.0.0/8",
        ] {
            assert!(TrustedProxies::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_client_is_the_nearest_hop_no_trusted_proxy_vouches_for() {
        let proxies = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let walk = |peer: &str, header: &str| {
            proxies.nearest_untrusted(
                ip(peer),
                header.split(',').rev().collect::<Vec<_>>().into_iter(),
            )
        };
        // One proxy: the hop it appended.
        assert_eq!(walk("10.0.0.1", "203.0.113.9"), ip("203.0.113.9"));
        // A client that forges the header only adds hops to the left of the real one.
        assert_eq!(
            walk("10.0.0.1", "198.51.100.1, 203.0.113.9"),
            ip("203.0.113.9")
        );
        // Two proxies in a row.
        assert_eq!(walk("10.0.0.1", "203.0.113.9, 10.0.0.2"), ip("203.0.113.9"));
        // A peer that is not a proxy is the client, whatever it claims.
        assert_eq!(walk("203.0.113.5", "198.51.100.1"), ip("203.0.113.5"));
        // Garbage stops at the proxy that passed it on.
        assert_eq!(walk("10.0.0.1", "nonsense"), ip("10.0.0.1"));
    }
}
