//! The answer cache: upstream answers for allowed names, kept for their TTL
//! (negative answers per RFC 2308), bounded in entries and in memory.
//!
//! Built on moka (already in the tree through hickory-resolver): a
//! concurrent map with TinyLFU admission and LRU eviction, per-entry expiry,
//! and a weight bound. Each entry weighs at least `bytes / entries`, so the
//! one weight bound caps both the entry count and the memory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::Message;
use hickory_proto::rr::{DNSClass, RecordType};
use moka::Expiry;

/// What a cached answer is keyed on. DO and CD change what an upstream
/// returns (DNSSEC records, validation), so they are part of the key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    /// Normalised name.
    pub name: Box<str>,
    /// Question type.
    pub qtype: RecordType,
    /// Question class.
    pub qclass: DNSClass,
    /// EDNS DO bit.
    pub dnssec_ok: bool,
    /// CD bit.
    pub checking_disabled: bool,
}

/// One cached answer.
#[derive(Debug)]
pub(crate) struct Entry {
    /// The upstream answer as decoded.
    pub message: Message,
    /// When it was stored.
    pub stored: Instant,
    /// Seconds it may be served.
    pub ttl: u32,
    /// Approximate memory it takes.
    weight: u32,
}

impl Entry {
    /// Whole seconds since it was stored, or `None` once expired.
    pub(crate) fn age(&self, now: Instant) -> Option<u32> {
        let age = now.saturating_duration_since(self.stored).as_secs();
        u32::try_from(age).ok().filter(|&a| a < self.ttl)
    }
}

struct ByTtl;

impl Expiry<Key, Arc<Entry>> for ByTtl {
    fn expire_after_create(&self, _key: &Key, value: &Arc<Entry>, _now: Instant) -> Option<Duration> {
        Some(Duration::from_secs(u64::from(value.ttl)))
    }
}

/// The bounded TTL cache. With `entries == 0` it stores nothing.
pub(crate) struct AnswerCache {
    inner: Option<moka::sync::Cache<Key, Arc<Entry>>>,
}

impl std::fmt::Debug for AnswerCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnswerCache")
            .field("entries", &self.inner.as_ref().map(moka::sync::Cache::entry_count))
            .finish()
    }
}

/// A decoded message takes several times its wire size in memory (names
/// and records are separate allocations); this factor keeps the bound
/// honest without measuring the heap.
const WIRE_TO_MEMORY: u32 = 4;
/// Fixed overhead per entry: key, `Arc`, moka's own node.
const ENTRY_OVERHEAD: u32 = 256;

impl AnswerCache {
    /// A cache of at most `entries` answers and about `bytes` of memory.
    pub(crate) fn new(entries: usize, bytes: usize) -> Self {
        if entries == 0 || bytes == 0 {
            return Self { inner: None };
        }
        let floor = u32::try_from(bytes / entries).unwrap_or(u32::MAX).max(1);
        let inner = moka::sync::Cache::builder()
            .max_capacity(bytes as u64)
            .weigher(move |_: &Key, e: &Arc<Entry>| e.weight.max(floor))
            .expire_after(ByTtl)
            .build();
        Self { inner: Some(inner) }
    }

    /// A live entry for `key`.
    pub(crate) fn get(&self, key: &Key) -> Option<Arc<Entry>> {
        let entry = self.inner.as_ref()?.get(key)?;
        entry.age(Instant::now()).map(|_| entry)
    }

    /// Stores `message` (whose wire form is `wire_len` bytes) for `ttl` s.
    pub(crate) fn insert(&self, key: Key, message: Message, ttl: u32, wire_len: usize) {
        let Some(inner) = &self.inner else { return };
        let weight = u32::try_from(wire_len)
            .unwrap_or(u32::MAX)
            .saturating_mul(WIRE_TO_MEMORY)
            .saturating_add(ENTRY_OVERHEAD)
            .saturating_add(u32::try_from(key.name.len()).unwrap_or(u32::MAX));
        inner.insert(
            key,
            Arc::new(Entry {
                message,
                stored: Instant::now(),
                ttl,
                weight,
            }),
        );
    }

    /// Entries currently held (approximate: moka applies evictions lazily).
    #[cfg(test)]
    pub(crate) fn len(&self) -> u64 {
        self.inner.as_ref().map_or(0, |c| {
            c.run_pending_tasks();
            c.entry_count()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{MessageType, OpCode};

    fn key(n: usize) -> Key {
        Key {
            name: format!("n{n}.example").into(),
            qtype: RecordType::A,
            qclass: DNSClass::IN,
            dnssec_ok: false,
            checking_disabled: false,
        }
    }

    #[test]
    fn bounded_in_entries() {
        let cache = AnswerCache::new(100, 1 << 20);
        for n in 0..1000 {
            cache.insert(key(n), Message::new(0, MessageType::Response, OpCode::Query), 60, 50);
        }
        assert!(cache.len() <= 100, "{}", cache.len());
    }

    #[test]
    fn bounded_in_memory() {
        // 10 KiB, entries of ~4 KiB weight: at most a couple fit.
        let cache = AnswerCache::new(1000, 10 * 1024);
        for n in 0..100 {
            cache.insert(key(n), Message::new(0, MessageType::Response, OpCode::Query), 60, 1000);
        }
        assert!(cache.len() <= 3, "{}", cache.len());
    }

    #[test]
    fn disabled_stores_nothing() {
        let cache = AnswerCache::new(0, 0);
        cache.insert(key(1), Message::new(0, MessageType::Response, OpCode::Query), 60, 50);
        assert!(cache.get(&key(1)).is_none());
    }

    #[test]
    fn expired_entry_is_a_miss() {
        let entry = Entry {
            message: Message::new(0, MessageType::Response, OpCode::Query),
            stored: Instant::now() - Duration::from_secs(10),
            ttl: 5,
            weight: 1,
        };
        assert_eq!(entry.age(Instant::now()), None);
        let fresh = Entry {
            stored: Instant::now() - Duration::from_secs(2),
            ttl: 5,
            ..entry
        };
        assert_eq!(fresh.age(Instant::now()), Some(2));
    }
}
