//! Which addresses an `http(s)` input may reach. The filer acts from inside the deployment,
//! where loopback, link-local (the clouds' metadata services, 169.254.169.254) and private
//! addresses lead to what no tenant should read: they are refused unless the operator
//! allows them. A URL's literal address is checked at submit; a host name is checked by
//! the filer's resolver, on every address it resolves to, at the moment it connects (so a
//! name that changes its answer between submit and download gains nothing), and each
//! redirect is checked again.

use std::net::{IpAddr, SocketAddr};

/// Why `ip` may not be reached, if it may not.
pub fn refusal(ip: IpAddr) -> Option<&'static str> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) if v4.is_loopback() => Some("a loopback address"),
        IpAddr::V4(v4) if v4.is_link_local() => Some("a link-local address (cloud metadata)"),
        IpAddr::V4(v4) if v4.is_private() => Some("a private address"),
        IpAddr::V4(v4) if v4.is_unspecified() || v4.is_broadcast() => {
            Some("an unspecified or broadcast address")
        }
        // 100.64.0.0/10, carrier-grade NAT: private in all but name.
        IpAddr::V4(v4) if v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64 => {
            Some("a shared (carrier-grade NAT) address")
        }
        IpAddr::V6(v6) if v6.is_loopback() || v6.is_unspecified() => Some("a loopback address"),
        // fe80::/10 and fc00::/7.
        IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80 => {
            Some("a link-local address (cloud metadata)")
        }
        IpAddr::V6(v6) if (v6.segments()[0] & 0xfe00) == 0xfc00 => Some("a private address"),
        _ => None,
    }
}

/// The host of an `http(s)` URL, without brackets.
fn host(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    parsed.host_str().map(|h| h.trim_matches(['[', ']']).to_string())
}

/// Refuses an `http(s)` URL whose host is an address that may not be reached, or
/// `localhost`; names are left to the filer's resolver.
pub fn literal_host_allowed(url: &str, private: bool) -> Result<(), String> {
    let lower = url.to_ascii_lowercase();
    if private || !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return Ok(());
    }
    let Some(host) = host(url) else {
        return Err(format!("{url:?} is not a URL"));
    };
    if host.eq_ignore_ascii_case("localhost") || host.to_ascii_lowercase().ends_with(".localhost") {
        return Err(format!("{url:?} names localhost, which inputs may not reach (staging.allow_private_addresses)"));
    }
    match host.parse::<IpAddr>().ok().and_then(refusal) {
        Some(what) => Err(format!(
            "{url:?} is {what}, which inputs may not reach (staging.allow_private_addresses)"
        )),
        None => Ok(()),
    }
}

/// A resolver that drops every address an input may not reach, and fails a name that
/// leaves none.
pub struct Guarded;

impl reqwest::dns::Resolve for Guarded {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .collect();
            let kept: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| refusal(a.ip()).is_none())
                .collect();
            if kept.is_empty() {
                let why = found
                    .first()
                    .and_then(|a| refusal(a.ip()))
                    .unwrap_or("no address");
                return Err(format!(
                    "{host} resolves to {why}, which inputs may not reach (staging.allow_private_addresses)"
                )
                .into());
            }
            Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_link_local_and_private_addresses_are_refused() {
        for bad in [
            "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "0.0.0.0",
            "100.64.0.1", "::1", "fe80::1", "fd00::1", "::ffff:127.0.0.1",
        ] {
            assert!(refusal(bad.parse().unwrap()).is_some(), "{bad}");
        }
        for good in ["93.184.216.34", "2606:2800:220:1::1", "100.128.0.1"] {
            assert_eq!(refusal(good.parse().unwrap()), None, "{good}");
        }
        assert!(literal_host_allowed("http://127.0.0.1:8080/x", false).is_err());
        assert!(literal_host_allowed("http://[::1]/x", false).is_err());
        assert!(literal_host_allowed("https://LOCALHOST/x", false).is_err());
        assert!(literal_host_allowed("http://169.254.169.254/latest", false).is_err());
        assert!(literal_host_allowed("http://127.0.0.1:8080/x", true).is_ok());
        assert!(literal_host_allowed("https://example.org/x", false).is_ok());
        assert!(literal_host_allowed("s3://b/k", false).is_ok());
    }
}
