//! Who holds the open connections. A client without a token can open as many as it likes
//! and hold each with a slow body; capping the count alone lets such clients shut out
//! everyone else, health checks and tenants with tokens included. So each connection is
//! marked trusted once it makes an authenticated request, and at a cap (the total, or one
//! client address's share) a new connection closes the oldest untrusted one to make room;
//! only when every connection in the way is trusted is the newcomer refused.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

/// The client of a connection, as its requests carry it (a request extension).
#[derive(Clone, Debug)]
pub struct Client {
    pub addr: IpAddr,
    trusted: Arc<AtomicBool>,
}

impl Client {
    /// A client not known to come through [`crate::http::serve`] (a router under test).
    pub fn unknown() -> Client {
        Client {
            addr: IpAddr::from([0, 0, 0, 0]),
            trusted: Arc::default(),
        }
    }

    /// Marks the connection as one that made an authenticated request: never closed to
    /// make room for another.
    pub fn trust(&self) {
        self.trusted.store(true, Ordering::Relaxed);
    }
}

struct Open {
    client: Client,
    /// Cancelled to close the connection for a newcomer.
    evict: CancellationToken,
}

#[derive(Default)]
struct State {
    /// Open connections by when they were accepted (oldest first).
    open: BTreeMap<u64, Open>,
    by_address: HashMap<IpAddr, usize>,
    next: u64,
}

pub struct Conns {
    max: usize,
    per_address: usize,
    state: Mutex<State>,
}

/// An open connection's place; dropping it frees the place.
pub struct Place {
    conns: Arc<Conns>,
    id: u64,
    pub client: Client,
    /// Cancelled when a newcomer needs the place.
    pub evicted: CancellationToken,
}

impl Conns {
    pub fn new(max: usize, per_address: usize) -> Arc<Conns> {
        Arc::new(Conns {
            max,
            per_address,
            state: Mutex::default(),
        })
    }

    /// A place for a connection from `addr`, closing the oldest untrusted connection in the
    /// way (another's at the total cap, the same address's at its own); `None` when every
    /// connection in the way is trusted.
    pub fn admit(self: &Arc<Self>, addr: IpAddr) -> Option<Place> {
        let mut state = self.state.lock().unwrap();
        let mine = state.by_address.get(&addr).copied().unwrap_or(0);
        let same_address = mine >= self.per_address;
        if same_address || state.open.len() >= self.max {
            let victim = state
                .open
                .iter()
                .find(|(_, o)| {
                    !o.client.trusted.load(Ordering::Relaxed)
                        && (!same_address || o.client.addr == addr)
                })
                .map(|(id, _)| *id)?;
            let evicted = state.remove(victim).expect("found above");
            evicted.evict.cancel();
            metrics::counter!("offload_http_connections_evicted_total").increment(1);
        }
        let id = state.next;
        state.next += 1;
        let client = Client {
            addr,
            trusted: Arc::default(),
        };
        let evicted = CancellationToken::new();
        *state.by_address.entry(addr).or_insert(0) += 1;
        state.open.insert(
            id,
            Open {
                client: client.clone(),
                evict: evicted.clone(),
            },
        );
        Some(Place {
            conns: self.clone(),
            id,
            client,
            evicted,
        })
    }
}

impl State {
    fn remove(&mut self, id: u64) -> Option<Open> {
        let open = self.open.remove(&id)?;
        if let Some(n) = self.by_address.get_mut(&open.client.addr) {
            *n -= 1;
            if *n == 0 {
                self.by_address.remove(&open.client.addr);
            }
        }
        Some(open)
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.conns.state.lock().unwrap().remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_untrusted_makes_room_and_trusted_ones_never_do() {
        let conns = Conns::new(2, 10);
        let a: IpAddr = [10, 0, 0, 1].into();
        let first = conns.admit(a).unwrap();
        let second = conns.admit(a).unwrap();
        second.client.trust();
        let third = conns.admit(a).unwrap();
        assert!(first.evicted.is_cancelled() && !second.evicted.is_cancelled());
        third.client.trust();
        assert!(conns.admit(a).is_none(), "every place is trusted");
        drop(first);
        assert!(
            conns.admit(a).is_none(),
            "an evicted place is not freed twice"
        );
        drop(third);
        assert!(conns.admit(a).is_some());
    }

    #[test]
    fn an_address_past_its_share_makes_room_among_its_own() {
        let conns = Conns::new(10, 1);
        let (a, b): (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        let of_b = conns.admit(b).unwrap();
        let first = conns.admit(a).unwrap();
        let _second = conns.admit(a).unwrap();
        assert!(first.evicted.is_cancelled() && !of_b.evicted.is_cancelled());
    }
}
