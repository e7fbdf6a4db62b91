//! Per-thread reuse for the request heads the proxy builds: the pseudo-header vectors of
//! finished heads, and the `:path` and `:authority` values of recent requests, shared strings
//! like the common methods and statuses ([`crate::shared_str`]). A proxy thread that serves the
//! same paths and hosts over and over allocates neither per request; a value seen for the
//! first time costs a few comparisons more than a plain allocation. Bounded: at most
//! [`SPARE_VECTORS`] vectors and [`RECENT`] values of each kind per thread, none longer than
//! [`RECENT_LEN`] bytes.

use std::cell::RefCell;
use std::sync::Arc;

/// A head's pseudo-headers.
pub(crate) type Pseudo = Vec<(&'static str, Arc<str>)>;

/// How many emptied vectors a thread keeps.
const SPARE_VECTORS: usize = 16;
/// How many paths (and authorities) a thread keeps.
const RECENT: usize = 8;
/// Longer values are not kept.
const RECENT_LEN: usize = 256;

thread_local! {
    static SPARE: RefCell<Vec<Pseudo>> = const { RefCell::new(Vec::new()) };
    static PATHS: RefCell<Recent> = const { RefCell::new(Recent::new()) };
    static AUTHORITIES: RefCell<Recent> = const { RefCell::new(Recent::new()) };
}

/// An empty vector for a head's pseudo-headers: a spare one of this thread, or a new one.
pub(crate) fn vector() -> Pseudo {
    // `try_with`: a head may be built or dropped while the thread's locals are torn down.
    SPARE.try_with(|spare| spare.borrow_mut().pop()).ok().flatten().unwrap_or_default()
}

/// Keeps `pseudo`'s allocation for a later [`vector`] on this thread (its values are dropped
/// now).
pub(crate) fn give_back(mut pseudo: Pseudo) {
    if pseudo.capacity() == 0 {
        return;
    }
    pseudo.clear();
    let _ = SPARE.try_with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < SPARE_VECTORS {
            spare.push(pseudo);
        }
    });
}

/// `path` as a shared string, the same as a recent request's when they are equal.
pub(crate) fn path(path: &str) -> Arc<str> {
    PATHS.try_with(|recent| recent.borrow_mut().get(path)).unwrap_or_else(|_| Arc::from(path))
}

/// `authority` as a shared string, the same as a recent request's when they are equal.
pub(crate) fn authority(authority: &str) -> Arc<str> {
    AUTHORITIES
        .try_with(|recent| recent.borrow_mut().get(authority))
        .unwrap_or_else(|_| Arc::from(authority))
}

/// The last few values of one kind, replaced in turn.
struct Recent {
    values: Vec<Arc<str>>,
    next: usize,
}

impl Recent {
    const fn new() -> Self {
        Self { values: Vec::new(), next: 0 }
    }

    fn get(&mut self, value: &str) -> Arc<str> {
        if let Some(v) = self.values.iter().find(|v| ***v == *value) {
            return v.clone();
        }
        let v: Arc<str> = Arc::from(value);
        if value.len() <= RECENT_LEN {
            if self.values.len() < RECENT {
                self.values.push(v.clone());
            } else {
                self.values[self.next] = v.clone();
                self.next = (self.next + 1) % RECENT;
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_are_reused_empty_and_bounded() {
        // A thread of its own: nothing else's vectors in its list.
        std::thread::spawn(|| {
            let mut v = vector();
            v.push((":path", Arc::from("/a")));
            let ptr = v.as_ptr();
            give_back(v);
            let again = vector();
            assert_eq!(again.as_ptr(), ptr, "the allocation is reused");
            assert!(again.is_empty(), "nothing of the last head is left");
            for _ in 0..3 * SPARE_VECTORS {
                give_back(Vec::with_capacity(4));
            }
            give_back(Vec::new());
            assert_eq!(SPARE.with_borrow(Vec::len), SPARE_VECTORS);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn recent_values_are_shared_and_bounded() {
        let mut recent = Recent::new();
        let a = recent.get("/index.html");
        assert!(Arc::ptr_eq(&a, &recent.get("/index.html")));
        assert_eq!(&*recent.get("/other"), "/other");
        assert!(!Arc::ptr_eq(&a, &recent.get("/index.htm")), "equal values only");
        for i in 0..3 * RECENT {
            assert_eq!(&*recent.get(&format!("/p{i}")), format!("/p{i}"));
        }
        assert_eq!(recent.values.len(), RECENT);
        let long = "/".repeat(RECENT_LEN + 1);
        assert_eq!(&*recent.get(&long), long);
        assert!(recent.values.iter().all(|v| v.len() <= RECENT_LEN));
        // Threads keep their own.
        assert_eq!(&*path("/x"), "/x");
        assert_eq!(&*authority("example.com"), "example.com");
        assert!(Arc::ptr_eq(&authority("example.com"), &authority("example.com")));
    }
}
