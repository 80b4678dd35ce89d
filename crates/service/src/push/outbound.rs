//! HTTP requests that push makes to the outside (gateways, UnifiedPush endpoints, FCM, APNs),
//! restricted to allowed destinations: every address a host name resolves to must be allowed by
//! `[outbound]` (public addresses always, private and loopback ones only when listed), and the
//! connection goes only to those checked addresses, so a second lookup cannot swap them. Redirects
//! are not followed, proxies from the environment are not used.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::config::OutboundConfig;
use crate::{Error, Result};

/// Resolves host names and refuses those with a disallowed address.
struct CheckedResolver {
    outbound: OutboundConfig,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let outbound = self.outbound.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if addrs.is_empty() {
                return Err(format!("{host} has no address").into());
            }
            if let Some(bad) = addrs.iter().find(|a| !outbound.allows(a.ip())) {
                return Err(format!("{host} resolves to {} which is not allowed", bad.ip()).into());
            }
            let it: Addrs = Box::new(addrs.into_iter());
            Ok(it)
        })
    }
}

/// Clients for outbound push requests.
#[derive(Clone)]
pub struct Outbound {
    outbound: OutboundConfig,
    /// HTTP/1.1 or HTTP/2 as negotiated.
    pub client: reqwest::Client,
    /// HTTP/2 only, also over plain HTTP (prior knowledge), for APNs.
    pub h2_client: reqwest::Client,
}

impl Outbound {
    pub fn new(outbound: OutboundConfig, timeout: Duration) -> Result<Self> {
        let build = |h2: bool| {
            let mut b = reqwest::Client::builder()
                .dns_resolver(Arc::new(CheckedResolver {
                    outbound: outbound.clone(),
                }))
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .timeout(timeout)
                .connect_timeout(timeout)
                .user_agent(concat!("Feldpost/", env!("CARGO_PKG_VERSION")));
            if h2 {
                b = b.http2_prior_knowledge();
            }
            b.build()
                .map_err(|e| Error::internal(format!("building the HTTP client: {e}")))
        };
        Ok(Self {
            client: build(false)?,
            h2_client: build(true)?,
            outbound,
        })
    }

    /// Checks a URL before a request: only http(s), and a literal IP address (which skips the
    /// resolver) must be allowed itself.
    pub fn check_url(&self, url: &str) -> Result<reqwest::Url> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| Error::invalid_param(format!("Invalid URL {url:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::invalid_param("Only http and https URLs are allowed"));
        }
        match parsed.host() {
            Some(url::Host::Ipv4(ip)) if !self.outbound.allows(IpAddr::V4(ip)) => {
                Err(Error::forbidden(format!("Destination {ip} is not allowed")))
            }
            Some(url::Host::Ipv6(ip)) if !self.outbound.allows(IpAddr::V6(ip)) => {
                Err(Error::forbidden(format!("Destination {ip} is not allowed")))
            }
            None => Err(Error::invalid_param("URL without a host")),
            _ => Ok(parsed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn literal_and_resolved_addresses_are_checked() {
        let o = Outbound::new(OutboundConfig::default(), Duration::from_secs(1)).unwrap();
        assert!(o.check_url("http://127.0.0.1:1/x").is_err());
        assert!(o.check_url("http://[::1]:1/x").is_err());
        assert!(o.check_url("ftp://example.org/x").is_err());
        // localhost resolves to loopback: refused by the resolver, before any connection.
        let r = o.client.get("http://localhost:9/").send().await;
        assert!(r.is_err());
        let mut allowed = OutboundConfig::default();
        allowed.allow_ranges.push("127.0.0.0/8".parse().unwrap());
        let o = Outbound::new(allowed, Duration::from_secs(1)).unwrap();
        assert!(o.check_url("http://127.0.0.1:1/x").is_ok());
    }
}
