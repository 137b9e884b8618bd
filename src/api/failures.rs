//! Failed authentication, limited per client address and written to the audit log. A
//! client trying tokens, with a bearer header or at the dashboard's sign-in, gets
//! `auth.failures_per_minute` refusals a minute (that many at once); past them each try is
//! answered 429 with Retry-After. Sessions are not counted: their ids are 256 random bits.
//!
//! A right token is accepted whatever the address's count, so that a tenant sharing an
//! address (a NAT, a proxy, loopback) with a client that guesses is not shut out; with
//! tokens of 16 characters or more, guessing is hopeless anyway, and the limit is there so
//! that nobody can flood the gateway and its log with tries.
//!
//! Every refusal is a `warn` line of the `offload::audit` target naming the client address,
//! the route and why, never the token.

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::http::Client;

/// Addresses counted at most before those whose counts are back to nothing are forgotten.
const TRACKED: usize = 65_536;

pub struct Failures {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
}

impl Failures {
    pub fn new(per_minute: u32) -> Failures {
        let n = NonZeroU32::new(per_minute.max(1)).expect("at least 1");
        Failures {
            limiter: RateLimiter::keyed(Quota::per_minute(n)),
            clock: DefaultClock::default(),
        }
    }

    /// Counts a failed authentication of `client` at `route` and writes its audit line;
    /// `Some(wait)` when the client is past its budget, for that long.
    pub fn failed(&self, client: &Client, route: &str, why: &str) -> Option<Duration> {
        let limited = self
            .limiter
            .check_key(&bucket(client.addr))
            .err()
            .map(|not_until| not_until.wait_time_from(self.clock.now()));
        if self.limiter.len() > TRACKED {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        tracing::warn!(
            target: "offload::audit",
            client = %client.addr,
            route,
            reason = why,
            limited = limited.is_some(),
            "authentication refused"
        );
        limited
    }
}

/// What one client is counted as: its address, or for IPv6 its /64, which one host
/// usually has whole.
fn bucket(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_host_is_counted_by_its_64_and_a_mapped_v4_as_v4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        assert_eq!(bucket(a), bucket(b));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(bucket(mapped), "10.0.0.1".parse::<IpAddr>().unwrap());
    }
}
