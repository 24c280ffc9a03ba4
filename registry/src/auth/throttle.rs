//! Failed logins slow down the next ones, and password checks are rationed.
//!
//! Each failure is counted against the user name tried and the client's address. Past a few free
//! failures (`auth.failed_logins`), each one doubles the time before the next attempt for that
//! name, or from that address, is heard at all (capped at a few minutes): a refused attempt costs no bcrypt run, so
//! guessing is slow and cannot turn into a denial of service. A successful login clears its user
//! name (not its address: knowing one password must not reset the guessing of others). Failures
//! are forgotten after a quiet while, and the tables are bounded.
//!
//! bcrypt checks run at most one per core at a time; a login that cannot get a turn soon is
//! refused instead of queueing without end.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use berth_core::config::auth::FailedLogins;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{Semaphore, SemaphorePermit};

/// Failures older than this (counted from the last one) are forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(900);
/// Most names, and most addresses, tracked at once.
const MAX_TRACKED: usize = 50_000;
/// The longest a login waits for a turn at bcrypt.
pub const HASHING_WAIT: Duration = Duration::from_secs(5);

/// What logins cost, for `/metrics`.
#[derive(Clone, Default)]
pub struct LoginMetrics {
    /// Logins refused for a wrong name or password.
    pub failed: Counter,
    /// Logins refused unheard: too many failures, or no turn at password checking.
    pub throttled: Counter,
}

#[derive(Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    until: Instant,
}

/// Failures by key, and how they turn into waits.
struct Table<K> {
    failures: Mutex<HashMap<K, Failures>>,
    free: u32,
    max_wait: Duration,
}

impl<K: Hash + Eq + Clone> Table<K> {
    fn new(policy: &FailedLogins) -> Self {
        Table { failures: Mutex::new(HashMap::new()), free: policy.free, max_wait: policy.max_wait }
    }

    fn wait(&self, key: &K, now: Instant) -> Option<Duration> {
        let map = self.failures.lock().ok()?;
        map.get(key).filter(|f| f.until > now).map(|f| f.until - now)
    }

    fn fail(&self, key: &K, now: Instant) {
        let Ok(mut map) = self.failures.lock() else { return };
        if map.len() >= MAX_TRACKED && !map.contains_key(key) {
            map.retain(|_, f| now.duration_since(f.last) < FORGET_AFTER);
            if map.len() >= MAX_TRACKED {
                // Still full of recent failures: keep the worst offenders' records.
                let least = map.values().map(|f| f.count).min().unwrap_or(0);
                map.retain(|_, f| f.count > least);
            }
        }
        let f = map.entry(key.clone()).or_insert(Failures { count: 0, last: now, until: now });
        if now.duration_since(f.last) >= FORGET_AFTER {
            f.count = 0;
        }
        f.count = f.count.saturating_add(1);
        f.last = now;
        if f.count > self.free {
            let wait = Duration::from_secs(1u64 << (f.count - self.free - 1).min(16)).min(self.max_wait);
            f.until = now + wait;
        }
    }

    fn clear(&self, key: &K) {
        if let Ok(mut map) = self.failures.lock() {
            map.remove(key);
        }
    }
}

pub struct LoginGuard {
    users: Table<String>,
    /// By the network a client holds ([`berth_core::net::client_network`]).
    addresses: Table<IpAddr>,
    hashing: Semaphore,
    hashing_wait: Duration,
    pub metrics: LoginMetrics,
}

impl LoginGuard {
    /// Waits per `policy`; `concurrent_hashes` bcrypt checks at once, each login waiting at most
    /// `hashing_wait` for its turn.
    pub fn new(
        policy: &FailedLogins,
        concurrent_hashes: usize,
        hashing_wait: Duration,
        metrics: LoginMetrics,
    ) -> LoginGuard {
        LoginGuard {
            users: Table::new(policy),
            addresses: Table::new(policy),
            hashing: Semaphore::new(concurrent_hashes.max(1)),
            hashing_wait,
            metrics,
        }
    }

    /// How long until a login as `user` from `client` is heard; `None`: now.
    pub fn wait(&self, user: &str, client: IpAddr) -> Option<Duration> {
        let now = Instant::now();
        let network = berth_core::net::client_network(client);
        let wait = self.users.wait(&user.to_owned(), now).max(self.addresses.wait(&network, now));
        if wait.is_some() {
            self.metrics.throttled.inc();
        }
        wait
    }

    /// A turn at password checking, or `None` if none came free in time.
    pub async fn hashing_turn(&self) -> Option<SemaphorePermit<'_>> {
        let turn =
            tokio::time::timeout(self.hashing_wait, self.hashing.acquire()).await.ok().and_then(Result::ok);
        if turn.is_none() {
            self.metrics.throttled.inc();
        }
        turn
    }

    pub fn failed(&self, user: &str, client: IpAddr) {
        let now = Instant::now();
        self.users.fail(&user.to_owned(), now);
        self.addresses.fail(&berth_core::net::client_network(client), now);
        self.metrics.failed.inc();
    }

    pub fn succeeded(&self, user: &str) {
        self.users.clear(&user.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_past_the_free_ones_double_the_wait() {
        let policy = FailedLogins::default();
        let g = LoginGuard::new(&policy, 1, HASHING_WAIT, LoginMetrics::default());
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        for _ in 0..policy.free {
            assert_eq!(g.wait("alice", a), None);
            g.failed("alice", a);
        }
        assert_eq!(g.wait("alice", a), None, "the free failures cost nothing");
        g.failed("alice", a);
        let first = g.wait("alice", a).unwrap();
        assert!(first <= Duration::from_secs(1) && first > Duration::ZERO);
        g.failed("alice", a);
        assert!(g.wait("alice", a).unwrap() > Duration::from_millis(1500), "doubled");
        // The name is slowed from any address, the address for any name.
        assert!(g.wait("alice", b).is_some() && g.wait("bob", a).is_some());
        assert!(g.wait("bob", b).is_none());
        // A success clears the name, not the address.
        g.succeeded("alice");
        assert!(g.wait("alice", b).is_none() && g.wait("bob", a).is_some());
        assert_eq!(g.metrics.failed.get(), u64::from(policy.free) + 2);
        assert!(g.metrics.throttled.get() >= 4);
    }

    #[test]
    fn an_ipv6_client_is_slowed_across_its_slash_64() {
        // Whoever holds a /64 may log in from any of its addresses: each would start afresh.
        let policy = FailedLogins::default();
        let g = LoginGuard::new(&policy, 1, HASHING_WAIT, LoginMetrics::default());
        let from = |n: u32| -> IpAddr { format!("2001:db8:7:7::{n:x}").parse().unwrap() };
        for n in 0..=policy.free {
            g.failed(&format!("user{n}"), from(n));
        }
        assert!(g.wait("someone", from(999)).is_some(), "another address of the same /64");
        assert!(g.wait("someone", "2001:db8:7:8::1".parse().unwrap()).is_none(), "another /64");
    }

    #[test]
    fn waits_are_capped_and_tables_bounded() {
        let policy = FailedLogins::default();
        let t: Table<u32> = Table::new(&policy);
        let now = Instant::now();
        for _ in 0..100 {
            t.fail(&7, now);
        }
        assert!(t.wait(&7, now).unwrap() <= policy.max_wait);
        for k in 0..(MAX_TRACKED as u32 + 10) {
            t.fail(&k, now);
        }
        assert!(t.failures.lock().unwrap().len() <= MAX_TRACKED);
        assert!(t.wait(&7, now).is_some(), "the worst offender is still remembered");
    }

    #[tokio::test]
    async fn password_checks_are_rationed() {
        let g =
            LoginGuard::new(&FailedLogins::default(), 1, Duration::from_millis(50), LoginMetrics::default());
        let first = g.hashing_turn().await;
        assert!(first.is_some());
        assert!(g.hashing_turn().await.is_none(), "no second turn while the first is held");
        drop(first);
        assert!(g.hashing_turn().await.is_some());
    }
}
