//! Process attribution for audit entries, kept off the query path's
//! critical resources: a platform lookup (walking `/proc`) can take
//! milliseconds, so it runs on the blocking pool, at most a few at once,
//! within a time budget, with a short-lived cache per client socket. A
//! lookup that is not possible in time leaves `pid`/`exe` null; it never
//! delays or blocks an answer for long, and a flood cannot queue lookups.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::dns::{PeerAttribution, Transport};

/// Longest wait for one lookup.
const BUDGET: Duration = Duration::from_millis(100);
/// Lookups running at once; more are skipped (null attribution).
const MAX_LOOKUPS: usize = 4;
/// How long a client socket's owner is remembered. Short, because a port
/// may be reused by another process.
const REMEMBER: Duration = Duration::from_secs(1);
/// Client sockets remembered at once.
const MAX_REMEMBERED: u64 = 4096;

type Who = Option<(u32, Option<String>)>;

/// A bounded, cached front for a [`PeerAttribution`].
pub(crate) struct Attributor {
    inner: Option<Arc<dyn PeerAttribution>>,
    cache: moka::sync::Cache<(Transport, SocketAddr), Who>,
    slots: Arc<Semaphore>,
}

impl Attributor {
    pub(crate) fn new(inner: Option<Arc<dyn PeerAttribution>>) -> Self {
        Self {
            inner,
            cache: moka::sync::Cache::builder()
                .max_capacity(MAX_REMEMBERED)
                .time_to_live(REMEMBER)
                .build(),
            slots: Arc::new(Semaphore::new(MAX_LOOKUPS)),
        }
    }

    /// The process behind `peer` if that is known without a lookup (no
    /// platform lookup configured, or remembered); `None` when a lookup is
    /// needed ([`Attributor::lookup`]).
    pub(crate) fn known(&self, transport: Transport, peer: SocketAddr) -> Option<Who> {
        if self.inner.is_none() {
            return Some(None);
        }
        self.cache.get(&(transport, peer))
    }

    /// The process behind `peer`, when it can be told in time.
    pub(crate) async fn lookup(&self, transport: Transport, peer: SocketAddr, local: SocketAddr) -> Who {
        let inner = self.inner.as_ref()?;
        let key = (transport, peer);
        if let Some(known) = self.cache.get(&key) {
            return known;
        }
        let permit = Arc::clone(&self.slots).try_acquire_owned().ok()?;
        let (inner, cache) = (Arc::clone(inner), self.cache.clone());
        let task = tokio::task::spawn_blocking(move || {
            let found = inner.attribute(transport, peer, local);
            cache.insert(key, found.clone());
            drop(permit);
            found
        });
        // Late answers still land in the cache for the client's next query.
        tokio::time::timeout(BUDGET, task).await.ok()?.ok()?
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    struct Counting(AtomicUsize, Duration);

    impl PeerAttribution for Counting {
        fn attribute(&self, _: Transport, peer: SocketAddr, _: SocketAddr) -> Option<(u32, Option<String>)> {
            self.0.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(self.1);
            Some((u32::from(peer.port()), Some("/usr/bin/dig".into())))
        }
    }

    #[tokio::test]
    async fn cached_per_client_socket() {
        let counting = Arc::new(Counting(AtomicUsize::new(0), Duration::ZERO));
        let a = Attributor::new(Some(counting.clone()));
        let local = "127.0.0.1:53".parse().unwrap();
        let peer = "127.0.0.1:4242".parse().unwrap();
        // Not known before the first lookup; known (without one) after it.
        assert_eq!(a.known(Transport::Udp, peer), None);
        assert_eq!(Attributor::new(None).known(Transport::Udp, peer), Some(None));
        for _ in 0..3 {
            assert_eq!(
                a.lookup(Transport::Udp, peer, local).await,
                Some((4242, Some("/usr/bin/dig".into())))
            );
        }
        assert_eq!(
            a.known(Transport::Udp, peer),
            Some(Some((4242, Some("/usr/bin/dig".into()))))
        );
        assert_eq!(counting.0.load(Ordering::SeqCst), 1);
        assert_eq!(Attributor::new(None).lookup(Transport::Udp, peer, local).await, None);
    }

    #[tokio::test]
    async fn slow_lookups_give_up_in_time() {
        let slow = Arc::new(Counting(AtomicUsize::new(0), Duration::from_millis(400)));
        let a = Attributor::new(Some(slow));
        let local = "127.0.0.1:53".parse().unwrap();
        let started = std::time::Instant::now();
        assert_eq!(
            a.lookup(Transport::Udp, "127.0.0.1:1".parse().unwrap(), local).await,
            None
        );
        assert!(started.elapsed() < Duration::from_millis(300));
    }
}
