//! Request-time selection: listener (isolation), hostname, match, backend, endpoint.
//!
//! Everything here reads the immutable table; nothing locks.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::matching::RequestView;
use crate::table::{
    CompiledBackend, CompiledRule, HostRoutes, ListenerRoutes, MatchEntry, SocketRoutes,
};

impl SocketRoutes {
    /// Listener isolation: the most specific listener whose hostname matches `host`
    /// (exact, then longest wildcard, then the catch-all). `host` is lower-case without port.
    pub(crate) fn listener_for(&self, host: &str) -> Option<&Arc<ListenerRoutes>> {
        self.listeners.iter().find(|l| l.hostname.as_ref().is_none_or(|h| h.matches(host)))
    }
}

impl HostRoutes {
    /// The matches of the most specific hostname that matches `host`: exact, then the longest
    /// wildcard, then routes without hostname. No fall-through to less specific hostnames.
    pub(crate) fn bucket(&self, host: &str) -> &[MatchEntry] {
        if let Some(entries) = self.exact.get(host) {
            return entries;
        }
        self.wildcards
            .iter()
            .find(|(h, _)| h.matches(host))
            .map_or(&self.any, |(_, entries)| entries)
    }
}

impl ListenerRoutes {
    /// The highest-precedence match for a request on this listener.
    pub(crate) fn route(&self, host: &str, req: &RequestView<'_>) -> Option<&MatchEntry> {
        self.hosts.bucket(host).iter().find(|e| e.matcher().matches(req))
    }
}

impl CompiledRule {
    /// Weighted random choice; `None` when no backend has a non-zero weight.
    pub(crate) fn pick_backend(&self) -> Option<&CompiledBackend> {
        if self.total_weight == 0 {
            return None;
        }
        let roll = rand::random_range(0..self.total_weight);
        pick_weighted(self.backends.iter().map(|b| b.weight), roll).map(|i| &self.backends[i])
    }
}

/// The index whose cumulative weight range contains `roll` (`roll < sum of weights`).
pub(crate) fn pick_weighted(weights: impl Iterator<Item = u32>, roll: u64) -> Option<usize> {
    let mut acc = 0u64;
    for (i, w) in weights.enumerate() {
        acc += u64::from(w);
        if roll < acc {
            return Some(i);
        }
    }
    None
}

impl CompiledBackend {
    /// Round-robin over the given endpoints.
    pub(crate) fn next_index(&self, len: usize) -> usize {
        self.cursor.fetch_add(1, Ordering::Relaxed) % len.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_pick_skips_zero_weights() {
        let w = [0u32, 2, 0, 1];
        let picks: Vec<_> = (0..3).map(|r| pick_weighted(w.iter().copied(), r)).collect();
        assert_eq!(picks, [Some(1), Some(1), Some(3)]);
        assert_eq!(pick_weighted(w.iter().copied(), 3), None);
        assert_eq!(pick_weighted([0u32, 0].into_iter(), 0), None);
    }
}
