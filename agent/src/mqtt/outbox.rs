//! The bounded queue between [`super::Publisher`] handles and the connection task, and what it
//! gives up when the broker is away for long.
//!
//! Policy, by what each message is worth:
//! - progress is disposable (not retained, superseded every second): only the newest unsent one
//!   is kept, so progress never takes room from anything else ("progress is dropped first");
//! - the inventory is retained and only its latest value means anything: the newest replaces an
//!   unsent older one;
//! - state changes must all arrive, in order (a dashboard or audit log replays them): they are
//!   queued FIFO up to `capacity`. Past it the OLDEST unsent state change is dropped (and
//!   counted): the newest state is what the retained topic must end on, and a caller must never
//!   block on a broker that is away. At one change per job step, the default of 256 is hours of
//!   outage.
//!
//! The outbox holds at most `capacity` states + 1 inventory + 1 progress.

use std::collections::VecDeque;

/// Default number of state changes kept while the broker is away.
pub const DEFAULT_CAPACITY: usize = 256;

/// A message that needs a broker acknowledgement (QoS 1, retained).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reliable {
    State,
    Inventory,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Outbox {
    capacity: usize,
    states: VecDeque<Vec<u8>>,
    inventory: Option<Vec<u8>>,
    progress: Option<Vec<u8>>,
    dropped_states: u64,
}

impl Outbox {
    /// An empty outbox for `capacity` state changes (at least 1).
    pub fn new(capacity: usize) -> Outbox {
        Outbox {
            capacity: capacity.max(1),
            states: VecDeque::new(),
            inventory: None,
            progress: None,
            dropped_states: 0,
        }
    }

    /// Queues a state change; returns whether an older one had to be dropped to make room.
    pub fn push_state(&mut self, payload: Vec<u8>) -> bool {
        let dropped = self.states.len() >= self.capacity;
        if dropped {
            self.states.pop_front();
            self.dropped_states += 1;
        }
        self.states.push_back(payload);
        dropped
    }

    /// Replaces the unsent inventory, if any.
    pub fn push_inventory(&mut self, payload: Vec<u8>) {
        self.inventory = Some(payload);
    }

    /// Replaces the unsent progress, if any.
    pub fn push_progress(&mut self, payload: Vec<u8>) {
        self.progress = Some(payload);
    }

    /// The next message to send with QoS 1: the inventory first (it describes the device the
    /// states are about), then state changes in order.
    pub fn pop_reliable(&mut self) -> Option<(Reliable, Vec<u8>)> {
        if let Some(p) = self.inventory.take() {
            return Some((Reliable::Inventory, p));
        }
        self.states.pop_front().map(|p| (Reliable::State, p))
    }

    /// The newest unsent progress.
    pub fn take_progress(&mut self) -> Option<Vec<u8>> {
        self.progress.take()
    }

    /// Whether a progress message waits.
    pub fn has_progress(&self) -> bool {
        self.progress.is_some()
    }

    /// Whether a QoS 1 message waits.
    pub fn has_reliable(&self) -> bool {
        self.inventory.is_some() || !self.states.is_empty()
    }

    /// Queued state changes.
    pub fn states_len(&self) -> usize {
        self.states.len()
    }

    /// State changes dropped for room since the start.
    pub fn dropped_states(&self) -> u64 {
        self.dropped_states
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    #[test]
    fn states_in_order_then_oldest_dropped() {
        let mut o = Outbox::new(3);
        for s in ["s1", "s2", "s3"] {
            assert!(!o.push_state(b(s)));
        }
        assert!(o.push_state(b("s4")), "full: the oldest goes");
        assert_eq!(o.dropped_states(), 1);
        assert_eq!(o.states_len(), 3);
        let got: Vec<_> = std::iter::from_fn(|| o.pop_reliable()).collect();
        assert_eq!(
            got,
            vec![
                (Reliable::State, b("s2")),
                (Reliable::State, b("s3")),
                (Reliable::State, b("s4"))
            ]
        );
        assert!(!o.has_reliable());
    }

    #[test]
    fn progress_never_takes_state_room_and_newest_wins() {
        let mut o = Outbox::new(2);
        o.push_state(b("s1"));
        o.push_progress(b("p1"));
        o.push_progress(b("p2"));
        assert!(
            !o.push_state(b("s2")),
            "progress does not count against states"
        );
        assert!(o.has_progress());
        assert_eq!(o.take_progress(), Some(b("p2")));
        assert_eq!(o.take_progress(), None);
        assert_eq!(o.dropped_states(), 0);
    }

    #[test]
    fn inventory_coalesces_and_goes_first() {
        let mut o = Outbox::new(4);
        o.push_state(b("s1"));
        o.push_inventory(b("i1"));
        o.push_inventory(b("i2"));
        assert_eq!(o.pop_reliable(), Some((Reliable::Inventory, b("i2"))));
        assert_eq!(o.pop_reliable(), Some((Reliable::State, b("s1"))));
        assert_eq!(o.pop_reliable(), None);
    }

    #[test]
    fn zero_capacity_keeps_the_newest() {
        let mut o = Outbox::new(0);
        o.push_state(b("a"));
        assert!(o.push_state(b("b")));
        assert_eq!(o.pop_reliable(), Some((Reliable::State, b("b"))));
    }
}
