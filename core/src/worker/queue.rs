//! The worker's queue of received messages that no handler has started:
//! the order handlers take them in, with one message per key at a time.

use std::collections::{HashMap, VecDeque};

/// Something queued for a handler, and the key it is ordered by.
pub(super) trait Keyed {
    fn key(&self) -> Option<&str>;
}

/// Messages waiting for a handler. A message whose key has another message
/// ready or running waits behind it, so a key's messages run one at a time
/// in the order they were received; messages without a key never wait.
pub(super) struct Queue<T> {
    ready: VecDeque<T>,
    /// Keys with a message ready or running, each with the messages queued behind it.
    busy_keys: HashMap<String, VecDeque<T>>,
}

impl<T: Keyed> Queue<T> {
    pub(super) fn new() -> Self {
        Queue { ready: VecDeque::new(), busy_keys: HashMap::new() }
    }

    /// Queues `item`; true if a handler may take it now.
    pub(super) fn push(&mut self, item: T) -> bool {
        let Some(key) = item.key() else {
            self.ready.push_back(item);
            return true;
        };
        match self.busy_keys.get_mut(key) {
            Some(behind) => {
                behind.push_back(item);
                false
            }
            None => {
                self.busy_keys.insert(key.to_string(), VecDeque::new());
                self.ready.push_back(item);
                true
            }
        }
    }

    /// The next message a handler may start.
    pub(super) fn take(&mut self) -> Option<T> {
        self.ready.pop_front()
    }

    /// How many messages a handler may start now.
    pub(super) fn ready(&self) -> usize {
        self.ready.len()
    }

    /// Whether a handler may start a message now.
    pub(super) fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// A handler is done with a message of `key`: the next one of that key
    /// becomes ready, or the key is free again.
    pub(super) fn finished(&mut self, key: &str) {
        let Some(behind) = self.busy_keys.get_mut(key) else { return };
        match behind.pop_front() {
            Some(next) => self.ready.push_back(next),
            None => {
                self.busy_keys.remove(key);
            }
        }
    }

    /// Empties the queue (shutdown): every message no handler has started.
    pub(super) fn drain(&mut self) -> Vec<T> {
        let mut all: Vec<T> = self.ready.drain(..).collect();
        all.extend(self.busy_keys.drain().flat_map(|(_, behind)| behind));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Keyed for (u32, Option<&'static str>) {
        fn key(&self) -> Option<&str> {
            self.1
        }
    }

    fn ids(items: impl IntoIterator<Item = (u32, Option<&'static str>)>) -> Vec<u32> {
        items.into_iter().map(|(id, _)| id).collect()
    }

    #[test]
    fn a_key_runs_one_message_at_a_time_in_order() {
        let mut q = Queue::new();
        assert!(q.push((1, Some("a"))));
        assert!(!q.push((2, Some("a"))));
        assert!(q.push((3, None)));
        assert!(q.push((4, Some("b"))));
        assert!(!q.push((5, Some("a"))));
        assert_eq!(ids(std::iter::from_fn(|| q.take())), [1, 3, 4]);
        // b is done and nothing waits behind it: a new b is ready at once.
        q.finished("b");
        assert!(q.take().is_none());
        assert!(q.push((6, Some("b"))));
        q.finished("a");
        assert_eq!(ids(std::iter::from_fn(|| q.take())), [6, 2]);
        q.finished("a");
        assert_eq!(ids(std::iter::from_fn(|| q.take())), [5]);
        q.finished("a");
        assert!(q.take().is_none());
        assert!(q.push((7, Some("a"))), "a is free again");
    }

    #[test]
    fn drain_returns_everything_not_started() {
        let mut q = Queue::new();
        for item in [(1, Some("a")), (2, Some("a")), (3, None), (4, Some("b")), (5, Some("a"))] {
            q.push(item);
        }
        assert_eq!(ids(q.take()), [1]);
        let mut left = ids(q.drain());
        left.sort();
        assert_eq!(left, [2, 3, 4, 5]);
        assert!(q.take().is_none());
        assert!(q.drain().is_empty());
    }
}
