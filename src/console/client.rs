//! Who a console request comes from: the peer's address, or, when the
//! peer is one of `trusted_proxies`, the address that proxy names in
//! `X-Forwarded-For` (the rightmost one no trusted proxy added; anything
//! to its left the client could have written itself).

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use ipnet::IpNet;

/// The proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Reads `trusted_proxies`, which the configuration has checked: a
    /// block (`10.0.0.0/8`) or a single address.
    pub fn new(entries: &[String]) -> Self {
        Self(
            entries
                .iter()
                .filter_map(|entry| {
                    entry
                        .parse::<IpNet>()
                        .ok()
                        .or_else(|| entry.parse::<IpAddr>().ok().map(IpNet::from))
                })
                .collect(),
        )
    }

    fn trust(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        self.0.iter().any(|net| net.contains(&address))
    }

    /// The client of a request from `peer` with these headers.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.trust(peer) {
            return peer;
        }
        let mut hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        hops.reverse();
        let mut client = peer;
        for hop in hops {
            match hop.parse::<IpAddr>() {
                Ok(address) => {
                    client = canonical(address);
                    if !self.trust(client) {
                        break;
                    }
                }
                // What a proxy would never write: stop at the last hop
                // that can be believed.
                Err(_) => break,
            }
        }
        client
    }
}

/// An IPv4 address reached over IPv6 is the IPv4 address.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The client address of a console request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress(pub IpAddr);

impl axum::extract::FromRequestParts<super::ConsoleState> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &super::ConsoleState,
    ) -> Result<Self, Self::Rejection> {
        // The console's listener records each connection's peer; without
        // one (a test driving the router directly) the client is unknown.
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([0, 0, 0, 0]), |info| info.0.ip());
        Ok(Self(state.trusted_proxies.client(peer, &parts.headers)))
    }
}

impl std::fmt::Display for ClientAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", value.parse().unwrap());
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn only_a_trusted_proxy_names_the_client() {
        let proxies = TrustedProxies::new(&["10.0.0.0/8".into(), "192.0.2.7".into()]);
        let headers = forwarded(&["203.0.113.9"]);
        // An untrusted peer's header is ignored.
        assert_eq!(
            proxies.client(ip("198.51.100.1"), &headers),
            ip("198.51.100.1")
        );
        assert_eq!(proxies.client(ip("10.1.2.3"), &headers), ip("203.0.113.9"));
        assert_eq!(proxies.client(ip("192.0.2.7"), &headers), ip("203.0.113.9"));
        // The client cannot choose its address by writing the header itself.
        let spoofed = forwarded(&["1.1.1.1, 203.0.113.9", "10.0.0.5"]);
        assert_eq!(proxies.client(ip("10.1.2.3"), &spoofed), ip("203.0.113.9"));
        // No header, or garbage: the proxy itself.
        assert_eq!(
            proxies.client(ip("10.1.2.3"), &HeaderMap::new()),
            ip("10.1.2.3")
        );
        let garbage = forwarded(&["1.1.1.1, not-an-address"]);
        assert_eq!(proxies.client(ip("10.1.2.3"), &garbage), ip("10.1.2.3"));
        // Nobody trusted: the peer, whatever the header says.
        let none = TrustedProxies::default();
        assert_eq!(none.client(ip("10.1.2.3"), &headers), ip("10.1.2.3"));
        // IPv4 over IPv6 is the IPv4 address.
        assert_eq!(
            proxies.client(ip("::ffff:10.1.2.3"), &headers),
            ip("203.0.113.9")
        );
    }
}
