//! The packets a sender has in flight, by packet number: a ring from the oldest unacknowledged
//! packet to the newest one sent, where the packets acknowledged out of order leave holes. New
//! packets take consecutive numbers and the oldest always leaves first or is skipped over, so
//! every operation is O(1) (the span is bounded: a sender sends no packet more than
//! [`super::header::SACK_BITS`] past the oldest unacknowledged one).

use std::collections::VecDeque;
use std::ops::Index;

/// Values by consecutive `u64` keys, the lowest of which is present.
#[derive(Debug)]
pub(super) struct Window<T> {
    /// The key of `slots[0]`.
    base: u64,
    /// `slots[0]`, if any, is `Some`.
    slots: VecDeque<Option<T>>,
    len: usize,
}

impl<T> Window<T> {
    pub(super) fn new() -> Window<T> {
        Window {
            base: 0,
            slots: VecDeque::new(),
            len: 0,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The lowest key.
    pub(super) fn first_key(&self) -> Option<u64> {
        (!self.slots.is_empty()).then_some(self.base)
    }

    pub(super) fn get(&self, key: u64) -> Option<&T> {
        let index = usize::try_from(key.checked_sub(self.base)?).ok()?;
        self.slots.get(index)?.as_ref()
    }

    pub(super) fn get_mut(&mut self, key: u64) -> Option<&mut T> {
        let index = usize::try_from(key.checked_sub(self.base)?).ok()?;
        self.slots.get_mut(index)?.as_mut()
    }

    /// Adds `value` at `key`, which must be past every key added so far.
    pub(super) fn push(&mut self, key: u64, value: T) {
        if self.slots.is_empty() {
            self.base = key;
        }
        let end = self.base + self.slots.len() as u64;
        assert!(key >= end, "keys only grow");
        for _ in end..key {
            self.slots.push_back(None);
        }
        self.slots.push_back(Some(value));
        self.len += 1;
    }

    pub(super) fn remove(&mut self, key: u64) -> Option<T> {
        let index = usize::try_from(key.checked_sub(self.base)?).ok()?;
        let value = self.slots.get_mut(index)?.take()?;
        self.len -= 1;
        self.trim();
        Some(value)
    }

    /// Removes the value of the lowest key.
    pub(super) fn pop_first(&mut self) -> Option<(u64, T)> {
        let key = self.first_key()?;
        let value = self.remove(key).expect("the first slot is full");
        Some((key, value))
    }

    pub(super) fn clear(&mut self) {
        self.slots.clear();
        self.len = 0;
    }

    /// Drops the holes at the front.
    fn trim(&mut self) {
        while let Some(None) = self.slots.front() {
            self.slots.pop_front();
            self.base += 1;
        }
    }
}

impl<T> Index<u64> for Window<T> {
    type Output = T;

    fn index(&self, key: u64) -> &T {
        self.get(key).expect("a key of the window")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holes_are_skipped_and_the_front_moves_on() {
        let mut window = Window::new();
        for key in 10..15 {
            window.push(key, key * 10);
        }
        assert_eq!(window.remove(12), Some(120));
        assert_eq!(window.remove(12), None);
        assert_eq!(window.pop_first(), Some((10, 100)));
        assert_eq!(window.remove(11), Some(110));
        assert_eq!((window.first_key(), window.len), (Some(13), 2));
        assert_eq!((window.get(9), window[14]), (None, 140));
        window.push(20, 200);
        assert_eq!(window.get(17), None);
        window.remove(13);
        window.remove(14);
        assert_eq!(window.pop_first(), Some((20, 200)));
        assert!(window.is_empty() && window.first_key().is_none());
        window.push(3, 30);
        assert_eq!(window.first_key(), Some(3));
    }
}
