//! The offsets of one partition handed out and not yet committed, each
//! settled or not, in offset order.
//!
//! Offsets are handed out in rising order, so the common cases are a push
//! at the back (hand out), a pop at the front (commit) and a binary search
//! (settle): a sorted ring, not a tree that allocates a node every few
//! inserts and chases pointers on every lookup.

use std::collections::VecDeque;

#[derive(Debug, Default)]
pub(super) struct Outstanding {
    /// (offset, settled), sorted by offset, no offset twice.
    offsets: VecDeque<(i64, bool)>,
    /// How many are not settled.
    unsettled: usize,
}

impl Outstanding {
    fn find(&self, offset: i64) -> Result<usize, usize> {
        // Most lookups are for recent offsets: check the back first.
        match self.offsets.back() {
            Some(&(last, _)) if last == offset => Ok(self.offsets.len() - 1),
            Some(&(last, _)) if last < offset => Err(self.offsets.len()),
            _ => self.offsets.binary_search_by_key(&offset, |&(o, _)| o),
        }
    }

    /// Adds `offset`; false (and no change) if it is there already.
    pub fn insert(&mut self, offset: i64, settled: bool) -> bool {
        match self.find(offset) {
            Ok(_) => false,
            Err(at) => {
                self.offsets.insert(at, (offset, settled));
                self.unsettled += usize::from(!settled);
                true
            }
        }
    }

    /// Whether `offset` is here, settled or not.
    pub fn contains(&self, offset: i64) -> bool {
        self.find(offset).is_ok()
    }

    /// `Some(settled)` for an offset that is here.
    pub fn get(&self, offset: i64) -> Option<bool> {
        self.find(offset).ok().map(|at| self.offsets[at].1)
    }

    /// Marks `offset` settled; false if it is not here or was settled already.
    pub fn settle(&mut self, offset: i64) -> bool {
        match self.find(offset) {
            Ok(at) if !self.offsets[at].1 => {
                self.offsets[at].1 = true;
                self.unsettled -= 1;
                true
            }
            _ => false,
        }
    }

    /// Removes `offset`; `Some(settled)` if it was here.
    pub fn remove(&mut self, offset: i64) -> Option<bool> {
        let at = self.find(offset).ok()?;
        let (_, settled) = self.offsets.remove(at)?;
        self.unsettled -= usize::from(!settled);
        Some(settled)
    }

    /// Drops the settled offsets at the front; returns the lowest offset
    /// left (the first not settled), if any.
    pub fn drop_settled_front(&mut self) -> Option<i64> {
        while let Some(&(offset, settled)) = self.offsets.front() {
            if !settled {
                return Some(offset);
            }
            self.offsets.pop_front();
        }
        None
    }

    /// Whether any offset is not settled.
    pub fn any_unsettled(&self) -> bool {
        self.unsettled > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_stay_in_order_however_they_come() {
        let mut o = Outstanding::default();
        for offset in [5, 7, 9, 6, 1] {
            assert!(o.insert(offset, false));
        }
        assert!(!o.insert(7, true), "an offset is there once");
        assert_eq!(o.offsets.iter().map(|e| e.0).collect::<Vec<_>>(), vec![1, 5, 6, 7, 9]);
        assert!(o.contains(6) && !o.contains(8) && !o.contains(10) && !o.contains(0));
    }

    #[test]
    fn settling_moves_the_front_and_counts_what_is_open() {
        let mut o = Outstanding::default();
        for offset in 10..14 {
            o.insert(offset, false);
        }
        assert!(o.settle(11) && o.settle(12));
        assert!(!o.settle(12), "settled once");
        assert!(!o.settle(20), "never handed out");
        assert_eq!(o.drop_settled_front(), Some(10));
        assert!(o.settle(10));
        assert_eq!(o.drop_settled_front(), Some(13));
        assert_eq!(o.get(13), Some(false));
        assert_eq!(o.get(10), None, "committed offsets are gone");
        assert!(o.any_unsettled());
        assert_eq!(o.remove(13), Some(false));
        assert!(!o.any_unsettled());
        assert_eq!(o.drop_settled_front(), None);
    }

    #[test]
    fn an_offset_added_settled_does_not_count_as_open() {
        let mut o = Outstanding::default();
        o.insert(3, true);
        assert!(!o.any_unsettled());
        assert_eq!(o.get(3), Some(true));
        assert_eq!(o.remove(3), Some(true));
        assert_eq!(o.remove(3), None);
    }
}
