//! Every deadline of the poll loop in one hashed, two-level timer wheel.
//!
//! Connect, response-head, stream-age, idle and API-call deadlines and the
//! periodic flush/checkpoint ticks all live here, up to tens of thousands at
//! once. Insert and cancel are O(1); `next_deadline` gives the poll timeout
//! without a per-tick wake-up; `poll_expired` fires what is due and does
//! work bounded by the wheel size and the number of timers it touches, even
//! when `now` jumps hours ahead.
//!
//! # Time
//!
//! Time is counted in whole ticks from the wheel's origin. A deadline is
//! rounded **up** to its tick `x = ceil((deadline - origin) / tick)`, and the
//! timer fires at the first `poll_expired(now)` with
//! `floor((now - origin) / tick) >= x`, i.e. with `now >= origin + x * tick
//! >= deadline`: never early, and at most one tick late when the loop polls
//! at the instants [`TimerWheel::next_deadline`] returns. The wheel keeps
//! `elapsed` (`E`), the last tick it has processed: every timer with
//! `x <= E` has fired or is waiting in the *overdue* list, which holds timers
//! inserted with a deadline at or before `E` and is emptied by the next
//! `poll_expired`, whatever its `now`.
//!
//! # Layout
//!
//! With `S` slots (a power of two) and a block of `H = S / 2` ticks, and
//! `Eb = E / H` the current block:
//!
//! - **level 0**: `S` lists, one per tick, for ticks in blocks `Eb` and
//!   `Eb + 1`: those are `2H = S` consecutive ticks, so each level-0 list
//!   holds timers of exactly one tick, and everything within `H` ticks of `E`
//!   is there;
//! - **level 1**: `S` lists, one per block, for blocks `Eb + 2 ..= Eb + S + 1`
//!   (`S` consecutive blocks, so again one block per list): up to
//!   `(S + 2) * H` ticks ahead, 87 minutes with 10 ms x 1024;
//! - **overflow**: one unsorted list for anything further, with a cached
//!   minimum tick;
//! - **overdue**: one list for timers inserted already due.
//!
//! A bit per level-0 and level-1 list says whether it is non-empty, so the
//! nearest non-empty list is a scan of `2S / 64` words. When `E` enters a new
//! block, the level-1 lists of the blocks it passed or now needs in level 0
//! are re-placed (each timer moves down once: overflow, level 1, level 0),
//! and the overflow list is rescanned only if its minimum may have come into
//! range.
//!
//! *Why a second level rather than one hashed level whose lists mix
//! revolutions?* With mixed lists, every tick walks timers that are not due
//! (a 30-minute idle timer is skipped ~175 times with 10 ms x 1024), and the
//! nearest deadline is no longer "the first non-empty list": it needs either
//! a scan of the timers or a wake-up per revolution. Keeping each list to a
//! single tick (level 0) or a single block (level 1) makes firing touch only
//! due timers and makes `next_deadline` a bitmap scan.
//!
//! # Cost
//!
//! - `insert`, `cancel`: O(1) (a slab entry and a doubly linked list through
//!   the slab). No allocation besides the slab's amortised growth.
//! - `next_deadline`: O(S / 64) bitmap words. Exact when the nearest timer is
//!   due within `H` ticks (5.12 s with 10 ms x 1024) or lies in the overflow
//!   list; when it lies in level 1 it returns the start of that timer's
//!   block, early by less than `H` ticks. Far timers therefore cost **one**
//!   extra wake-up (at the block start, where `poll_expired` moves the block
//!   to level 0 and the next answer is exact), never one per tick or per
//!   revolution: 10 000 timers 30 minutes away mean two wake-ups, one ~5 s
//!   early and one at the deadline. The only O(n) step is recomputing the
//!   overflow minimum after the timer holding it was cancelled, and only when
//!   levels 0 and 1 are empty (all timers more than ~87 minutes away).
//! - `poll_expired(now)`: O(S / 64 + number of timers fired or moved down +
//!   k log k to sort the k fired), plus O(overflow) when the overflow minimum
//!   may have come into range, which happens at most once per block of `H`
//!   ticks. A jump of any length visits each level list at most once.
//!
//! Timer ids carry a generation: the wheel's insertion counter (`u64`, never
//! reused), so an id of a timer that fired or was cancelled can never cancel
//! a newer timer stored in the same slab entry.

use std::time::{Duration, Instant};

use slab::Slab;

/// End of a list.
const NIL: u32 = u32::MAX;
/// `Node::list` of a timer collected by `poll_expired` and about to leave.
const FIRING: u32 = u32::MAX;
/// Ticks are clamped here so block arithmetic cannot overflow; with a 1 ns
/// tick that is 146 years, with 10 ms it is 10^9 years.
const MAX_TICK: u64 = u64::MAX >> 2;
/// Largest wheel, so list numbers fit in a `u32` with room to spare.
const MAX_SLOTS: usize = 1 << 24;

/// A handle to a timer, valid until it fires or is cancelled; afterwards
/// every use of it is a no-op.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId {
    key: u32,
    generation: u64,
}

struct Node<T> {
    payload: T,
    /// The deadline as given, for ordering the timers fired together.
    deadline: Instant,
    /// The deadline rounded up to its tick.
    expiry: u64,
    generation: u64,
    /// Which list holds the node, or `FIRING`.
    list: u32,
    prev: u32,
    next: u32,
}

pub struct TimerWheel<T> {
    origin: Instant,
    tick_ns: u64,
    /// `S`.
    slots: usize,
    /// `log2(H)`, `H = S / 2` ticks per block.
    block_shift: u32,
    /// `E`: the last tick processed.
    elapsed: u64,
    nodes: Slab<Node<T>>,
    /// `0..S` level 0 by tick, `S..2S` level 1 by block, then overdue and
    /// overflow.
    heads: Box<[u32]>,
    /// One bit per level-0 and level-1 list (bit `i` for `heads[i]`).
    occupied: Box<[u64]>,
    /// A lower bound of the ticks in the overdue list.
    overdue_min: u64,
    /// The smallest tick in the overflow list; only a lower bound when
    /// `overflow_dirty`.
    overflow_min: u64,
    overflow_dirty: bool,
    next_generation: u64,
    /// Timers being fired: (deadline, generation, key). Kept for its
    /// capacity.
    firing: Vec<(Instant, u64, u32)>,
    /// Slot and timer visits, for the tests' work bounds.
    #[cfg(test)]
    work: u64,
}

impl<T> TimerWheel<T> {
    /// `tick`: resolution (the loop uses 10 ms); `slots`: wheel size, a power
    /// of two of at least 2 (e.g. 1024); `now`: the wheel's origin.
    ///
    /// # Panics
    ///
    /// If `tick` is zero or not below 584 years, or `slots` is not a power of
    /// two in `2..=2^24`.
    pub fn new(tick: Duration, slots: usize, now: Instant) -> Self {
        let tick_ns = u64::try_from(tick.as_nanos()).expect("timer wheel tick too long");
        assert!(tick_ns > 0, "timer wheel tick must not be zero");
        assert!(
            slots.is_power_of_two() && (2..=MAX_SLOTS).contains(&slots),
            "timer wheel slots must be a power of two in 2..=2^24, got {slots}"
        );
        let lists = 2 * slots + 2;
        Self {
            origin: now,
            tick_ns,
            slots,
            block_shift: (slots / 2).trailing_zeros(),
            elapsed: 0,
            nodes: Slab::new(),
            heads: vec![NIL; lists].into_boxed_slice(),
            occupied: vec![0; (2 * slots).div_ceil(64)].into_boxed_slice(),
            overdue_min: u64::MAX,
            overflow_min: u64::MAX,
            overflow_dirty: false,
            next_generation: 0,
            firing: Vec::new(),
            #[cfg(test)]
            work: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Adds a timer. O(1). A deadline at or before the last `now` given to
    /// [`poll_expired`](Self::poll_expired) fires at the next call, whatever
    /// its `now`. Deadlines are rounded up to the tick.
    ///
    /// # Panics
    ///
    /// With `u32::MAX - 1` live timers.
    pub fn insert(&mut self, deadline: Instant, payload: T) -> TimerId {
        let expiry = self.ceil_tick(deadline);
        let generation = self.next_generation;
        self.next_generation += 1;
        let key = self.nodes.insert(Node {
            payload,
            deadline,
            expiry,
            generation,
            list: NIL,
            prev: NIL,
            next: NIL,
        });
        let key = match u32::try_from(key) {
            Ok(key) if key != NIL => key,
            _ => panic!("too many live timers"),
        };
        let list = self.list_for(expiry);
        self.link(key, list);
        TimerId { key, generation }
    }

    /// The deadline of a live timer (as given), `None` once it fired or
    /// was cancelled: for checks that a part's timer is really armed.
    pub fn deadline(&self, id: TimerId) -> Option<Instant> {
        self.nodes.get(id.key as usize).filter(|n| n.generation == id.generation).map(|n| n.deadline)
    }

    /// Removes a live timer and returns its payload. O(1). An id whose timer
    /// already fired or was cancelled returns `None` and changes nothing,
    /// even if its storage now holds another timer.
    pub fn cancel(&mut self, id: TimerId) -> Option<T> {
        let node = self.nodes.get(id.key as usize)?;
        if node.generation != id.generation {
            return None;
        }
        debug_assert_ne!(node.list, FIRING);
        self.unlink(id.key);
        Some(self.nodes.remove(id.key as usize).payload)
    }

    /// When the next timer fires (its deadline rounded up to the tick), for
    /// the poll timeout; `None` if there are no timers. Never late. Exact
    /// when that timer is due within half a revolution (`slots / 2` ticks)
    /// or more than `(slots / 2) * (slots + 2)` ticks ahead; otherwise the
    /// start of its level-1 block, early by less than `slots / 2` ticks, and
    /// exact again once `poll_expired` has been called at that instant. So a
    /// far timer costs one extra wake-up, not one per tick or revolution.
    /// An instant in the past means a timer is already due. O(slots / 64);
    /// see the module docs for the rare overflow recompute.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        if self.nodes.is_empty() {
            return None;
        }
        let tick = self.next_tick();
        Some(self.instant_at(tick))
    }

    /// Moves every due timer (rounded-up deadline `<= now`, and every timer
    /// inserted already due) into `out`, each exactly once, ordered by
    /// deadline (then insertion order). The work is bounded by the wheel
    /// size and the timers fired or moved, however far `now` jumped.
    pub fn poll_expired(&mut self, now: Instant, out: &mut Vec<(TimerId, T)>) {
        let overdue = self.overdue_list();
        let head = self.take_list(overdue);
        self.fire_chain(head);
        self.overdue_min = u64::MAX;

        let now_tick = self.floor_tick(now);
        if now_tick > self.elapsed {
            self.advance(now_tick);
        }

        self.firing.sort_unstable();
        out.reserve(self.firing.len());
        for &(_, generation, key) in &self.firing {
            let node = self.nodes.remove(key as usize);
            debug_assert_eq!(node.list, FIRING);
            out.push((TimerId { key, generation }, node.payload));
        }
        self.firing.clear();
    }

    /// Moves `E` to `to`, collecting due timers into `firing`.
    fn advance(&mut self, to: u64) {
        let slots = self.slots as u64;
        let mask = slots - 1;
        let old = self.elapsed;
        let old_block = old >> self.block_shift;
        let new_block = to >> self.block_shift;

        // Level 0 holds ticks in (old, level0_end); each list is one tick.
        let level0_end = (old_block + 2) << self.block_shift;
        let (start, len) = if to >= level0_end - 1 {
            (0, self.slots)
        } else {
            (((old + 1) & mask) as usize, (to - old) as usize)
        };
        let mut from = 0;
        while let Some(offset) = self.find_occupied(0, start, len, from) {
            self.bump_work();
            let list = ((start + offset) & (self.slots - 1)) as u32;
            let head = self.take_list(list);
            self.fire_chain(head);
            from = offset + 1;
        }

        self.elapsed = to;
        if new_block == old_block {
            return;
        }

        // Level 1 held blocks old_block + 2 ..= old_block + S + 1. Those up
        // to new_block + 1 are now due or belong in level 0.
        let first = old_block + 2;
        let last = (new_block + 1).min(old_block + slots + 1);
        if last >= first {
            let start = (first & mask) as usize;
            let len = (last - first + 1) as usize;
            let mut from = 0;
            while let Some(offset) = self.find_occupied(self.slots, start, len, from) {
                self.bump_work();
                let list = (self.slots + ((start + offset) & (self.slots - 1))) as u32;
                let head = self.take_list(list);
                self.replace_chain(head);
                from = offset + 1;
            }
        }

        // The level-1 horizon moved: rescan the overflow list if its
        // minimum may now be within it.
        let overflow = self.overflow_list();
        if self.heads[overflow as usize] != NIL
            && (self.overflow_min >> self.block_shift) <= new_block + slots + 1
        {
            let head = self.take_list(overflow);
            self.overflow_min = u64::MAX;
            self.overflow_dirty = false;
            self.replace_chain(head);
        }
    }

    /// The tick `next_deadline` reports.
    fn next_tick(&mut self) -> u64 {
        if self.heads[self.overdue_list() as usize] != NIL {
            return self.overdue_min;
        }
        let mask = self.slots as u64 - 1;
        let e = self.elapsed;
        // Level 0 holds ticks e + 1 ..= e + S at most, one per list.
        let start = ((e + 1) & mask) as usize;
        if let Some(offset) = self.find_occupied(0, start, self.slots, 0) {
            return e + 1 + offset as u64;
        }
        // Level 1 holds blocks eb + 2 ..= eb + S + 1, one per list.
        let first = (e >> self.block_shift) + 2;
        let start = (first & mask) as usize;
        if let Some(offset) = self.find_occupied(self.slots, start, self.slots, 0) {
            return (first + offset as u64) << self.block_shift;
        }
        if self.overflow_dirty {
            let mut min = u64::MAX;
            let mut key = self.heads[self.overflow_list() as usize];
            while key != NIL {
                let node = &self.nodes[key as usize];
                min = min.min(node.expiry);
                key = node.next;
            }
            self.overflow_min = min;
            self.overflow_dirty = false;
        }
        debug_assert_ne!(self.heads[self.overflow_list() as usize], NIL);
        self.overflow_min
    }

    fn overdue_list(&self) -> u32 {
        (2 * self.slots) as u32
    }

    fn overflow_list(&self) -> u32 {
        (2 * self.slots + 1) as u32
    }

    /// The list a timer due at `expiry` belongs in, given `E`.
    fn list_for(&self, expiry: u64) -> u32 {
        if expiry <= self.elapsed {
            return self.overdue_list();
        }
        let slots = self.slots as u64;
        let mask = slots - 1;
        let current = self.elapsed >> self.block_shift;
        let block = expiry >> self.block_shift;
        if block <= current + 1 {
            (expiry & mask) as u32
        } else if block <= current + slots + 1 {
            (slots + (block & mask)) as u32
        } else {
            self.overflow_list()
        }
    }

    fn link(&mut self, key: u32, list: u32) {
        let head = self.heads[list as usize];
        let node = &mut self.nodes[key as usize];
        node.list = list;
        node.prev = NIL;
        node.next = head;
        let expiry = node.expiry;
        if head != NIL {
            self.nodes[head as usize].prev = key;
        }
        self.heads[list as usize] = key;
        if (list as usize) < 2 * self.slots {
            self.occupied[list as usize / 64] |= 1 << (list % 64);
        } else if list == self.overdue_list() {
            self.overdue_min = self.overdue_min.min(expiry);
        } else {
            self.overflow_min = self.overflow_min.min(expiry);
        }
    }

    fn unlink(&mut self, key: u32) {
        let node = &self.nodes[key as usize];
        let (list, prev, next, expiry) = (node.list, node.prev, node.next, node.expiry);
        if prev == NIL {
            self.heads[list as usize] = next;
        } else {
            self.nodes[prev as usize].next = next;
        }
        if next != NIL {
            self.nodes[next as usize].prev = prev;
        }
        if self.heads[list as usize] == NIL && (list as usize) < 2 * self.slots {
            self.occupied[list as usize / 64] &= !(1 << (list % 64));
        }
        if list == self.overflow_list() && expiry <= self.overflow_min {
            self.overflow_dirty = true;
        }
    }

    /// Empties a list, returning its old head; the nodes keep their links.
    fn take_list(&mut self, list: u32) -> u32 {
        let head = std::mem::replace(&mut self.heads[list as usize], NIL);
        if (list as usize) < 2 * self.slots {
            self.occupied[list as usize / 64] &= !(1 << (list % 64));
        }
        head
    }

    fn fire_chain(&mut self, mut key: u32) {
        while key != NIL {
            self.bump_work();
            let node = &mut self.nodes[key as usize];
            node.list = FIRING;
            self.firing.push((node.deadline, node.generation, key));
            key = node.next;
        }
    }

    /// Fires or re-files a detached chain against the current `E`.
    fn replace_chain(&mut self, mut key: u32) {
        while key != NIL {
            self.bump_work();
            let node = &self.nodes[key as usize];
            let (next, expiry) = (node.next, node.expiry);
            if expiry <= self.elapsed {
                let node = &mut self.nodes[key as usize];
                node.list = FIRING;
                self.firing.push((node.deadline, node.generation, key));
            } else {
                let list = self.list_for(expiry);
                debug_assert_ne!(list, self.overdue_list());
                self.link(key, list);
            }
            key = next;
        }
    }

    /// The smallest `offset` in `from..len` whose list
    /// `base + (start + offset) % S` is non-empty (`start < S`, `len <= S`).
    fn find_occupied(&self, base: usize, start: usize, len: usize, from: usize) -> Option<usize> {
        if from >= len {
            return None;
        }
        let slots = self.slots;
        let end = start + len;
        let at = start + from;
        let found = if at < slots {
            find_set(&self.occupied, base + at, base + end.min(slots)).or_else(|| {
                if end > slots {
                    find_set(&self.occupied, base, base + end - slots).map(|p| p + slots)
                } else {
                    None
                }
            })
        } else {
            find_set(&self.occupied, base + at - slots, base + end - slots).map(|p| p + slots)
        };
        found.map(|p| p - base - start)
    }

    fn ceil_tick(&self, deadline: Instant) -> u64 {
        let ns = deadline.saturating_duration_since(self.origin).as_nanos();
        let tick = u128::from(self.tick_ns);
        let up = ns.div_ceil(tick);
        // Round down instead only if rounding up leaves `Instant`'s range.
        let ticks = if self.checked_instant(up).is_some() { up } else { ns / tick };
        u64::try_from(ticks).unwrap_or(MAX_TICK).min(MAX_TICK)
    }

    fn floor_tick(&self, now: Instant) -> u64 {
        let ticks = now.saturating_duration_since(self.origin).as_nanos() / u128::from(self.tick_ns);
        u64::try_from(ticks).unwrap_or(MAX_TICK).min(MAX_TICK)
    }

    fn checked_instant(&self, tick: u128) -> Option<Instant> {
        let ns = tick.checked_mul(u128::from(self.tick_ns))?;
        let secs = u64::try_from(ns / 1_000_000_000).ok()?;
        let nanos = (ns % 1_000_000_000) as u32;
        self.origin.checked_add(Duration::new(secs, nanos))
    }

    /// Every tick the wheel reports is at most the tick of a stored deadline
    /// or of a `now` it was given, so it is representable.
    fn instant_at(&self, tick: u64) -> Instant {
        self.checked_instant(u128::from(tick)).expect("a timer wheel tick at or before a known instant")
    }

    #[inline]
    fn bump_work(&mut self) {
        #[cfg(test)]
        {
            self.work += 1;
        }
    }
}

/// The first set bit in `from..to`.
fn find_set(bits: &[u64], from: usize, to: usize) -> Option<usize> {
    let mut i = from;
    while i < to {
        let word = i / 64;
        let masked = bits[word] & (!0u64 << (i % 64));
        if masked != 0 {
            let pos = word * 64 + masked.trailing_zeros() as usize;
            return (pos < to).then_some(pos);
        }
        i = (word + 1) * 64;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashMap};

    const MS: Duration = Duration::from_millis(1);

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: u64) -> u64 {
            if n == 0 {
                0
            } else {
                self.next() % n
            }
        }
    }

    fn poll<T>(w: &mut TimerWheel<T>, now: Instant) -> Vec<(TimerId, T)> {
        let mut out = Vec::new();
        w.poll_expired(now, &mut out);
        out
    }

    /// Instants well after the origin so that deadlines before it exist.
    fn origin() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    #[test]
    fn empty_wheel() {
        let o = origin();
        let mut w: TimerWheel<u8> = TimerWheel::new(10 * MS, 1024, o);
        assert!(w.is_empty());
        assert_eq!(w.len(), 0);
        assert_eq!(w.next_deadline(), None);
        assert!(poll(&mut w, o + Duration::from_secs(1_000_000)).is_empty());
        assert_eq!(w.next_deadline(), None);
    }

    #[test]
    #[should_panic]
    fn slots_must_be_power_of_two() {
        let _ = TimerWheel::<u8>::new(MS, 1000, origin());
    }

    #[test]
    #[should_panic]
    fn tick_must_not_be_zero() {
        let _ = TimerWheel::<u8>::new(Duration::ZERO, 1024, origin());
    }

    #[test]
    fn fires_exactly_once() {
        let o = origin();
        let mut w = TimerWheel::new(10 * MS, 16, o);
        let id = w.insert(o + 35 * MS, "a");
        assert_eq!(w.len(), 1);
        assert!(poll(&mut w, o + 39 * MS).is_empty());
        assert_eq!(poll(&mut w, o + 40 * MS), vec![(id, "a")]);
        assert!(w.is_empty());
        for k in 0..100 {
            assert!(poll(&mut w, o + 40 * MS + k * 100 * MS).is_empty());
        }
        assert_eq!(w.next_deadline(), None);
    }

    #[test]
    fn never_early_at_most_one_tick_late() {
        let o = origin();
        let tick = 10 * MS;
        for slots in [2, 4, 64, 1024] {
            let mut w = TimerWheel::new(tick, slots, o);
            let mut deadlines = HashMap::new();
            // Deadlines at every 7 ms (off and on tick boundaries) up to 30 s.
            for i in 0..4300u32 {
                let d = o + 7 * MS * i;
                deadlines.insert(w.insert(d, i), d);
            }
            // Poll at every tick boundary: lateness is below one tick.
            let mut now = o;
            while !w.is_empty() {
                for (id, _) in poll(&mut w, now) {
                    let d = deadlines.remove(&id).expect("fired once");
                    assert!(now >= d, "early");
                    assert!(now - d < tick, "late by {:?}", now - d);
                }
                now += tick;
                assert!(now < o + Duration::from_secs(60), "timers never fired");
            }
            assert!(deadlines.is_empty());

            // Poll every 3 ms: never early, late by under a tick + 3 ms.
            let mut w = TimerWheel::new(tick, slots, o);
            for i in 0..4300u32 {
                let d = o + 7 * MS * i;
                deadlines.insert(w.insert(d, i), d);
            }
            let mut now = o;
            while !w.is_empty() {
                for (id, _) in poll(&mut w, now) {
                    let d = deadlines.remove(&id).expect("fired once");
                    assert!(now >= d, "early");
                    assert!(now - d < tick + 3 * MS);
                }
                now += 3 * MS;
                assert!(now < o + Duration::from_secs(60), "timers never fired");
            }
            assert!(deadlines.is_empty());
        }
    }

    #[test]
    fn deadline_on_tick_boundary_fires_at_it() {
        let o = origin();
        let mut w = TimerWheel::new(10 * MS, 8, o);
        let id = w.insert(o + 50 * MS, ());
        assert_eq!(w.next_deadline(), Some(o + 50 * MS));
        assert!(poll(&mut w, o + 50 * MS - Duration::from_nanos(1)).is_empty());
        assert_eq!(poll(&mut w, o + 50 * MS), vec![(id, ())]);
        // One nanosecond past a boundary rounds up to the next tick.
        let id = w.insert(o + 60 * MS + Duration::from_nanos(1), ());
        assert_eq!(w.next_deadline(), Some(o + 70 * MS));
        assert!(poll(&mut w, o + 69 * MS).is_empty());
        assert_eq!(poll(&mut w, o + 70 * MS), vec![(id, ())]);
    }

    #[test]
    fn cancel_before_fire() {
        let o = origin();
        let mut w = TimerWheel::new(MS, 8, o);
        let a = w.insert(o + 5 * MS, 'a');
        let b = w.insert(o + 5 * MS, 'b');
        let c = w.insert(o + 500 * MS, 'c'); // level 1 / overflow with 8 slots
        let d = w.insert(o + 5000 * MS, 'd');
        assert_eq!(w.cancel(a), Some('a'));
        assert_eq!(w.cancel(c), Some('c'));
        assert_eq!(w.cancel(d), Some('d'));
        assert_eq!(w.len(), 1);
        assert_eq!(poll(&mut w, o + Duration::from_secs(10)), vec![(b, 'b')]);
        assert!(w.is_empty());
        assert_eq!(w.next_deadline(), None);
    }

    #[test]
    fn cancel_after_fire_or_twice_returns_none() {
        let o = origin();
        let mut w = TimerWheel::new(MS, 8, o);
        let a = w.insert(o + 3 * MS, 1);
        let b = w.insert(o + 30 * MS, 2);
        assert_eq!(w.deadline(a), Some(o + 3 * MS));
        assert_eq!(poll(&mut w, o + 3 * MS), vec![(a, 1)]);
        assert_eq!(w.deadline(a), None);
        assert_eq!(w.cancel(a), None);
        assert_eq!(w.deadline(b), Some(o + 30 * MS));
        assert_eq!(w.cancel(b), Some(2));
        assert_eq!(w.deadline(b), None);
        assert_eq!(w.cancel(b), None);
        assert!(w.is_empty());
    }

    #[test]
    fn stale_id_cannot_touch_reused_storage() {
        let o = origin();
        let mut w = TimerWheel::new(MS, 8, o);
        // Cancelled, then reused.
        let a = w.insert(o + 5 * MS, 'a');
        assert_eq!(w.cancel(a), Some('a'));
        let b = w.insert(o + 5 * MS, 'b');
        assert_eq!(a.key, b.key, "the slab reuses the entry");
        assert_ne!(a, b);
        assert_eq!(w.cancel(a), None);
        assert_eq!(w.len(), 1);
        // Fired, then reused.
        assert_eq!(poll(&mut w, o + 5 * MS), vec![(b, 'b')]);
        let c = w.insert(o + 9 * MS, 'c');
        assert_eq!(b.key, c.key);
        assert_eq!(w.cancel(b), None);
        assert_eq!(w.cancel(a), None);
        assert_eq!(w.next_deadline(), Some(o + 9 * MS));
        assert_eq!(poll(&mut w, o + 9 * MS), vec![(c, 'c')]);
        // Many generations through one entry: only the newest id works.
        let mut old = Vec::new();
        for i in 0..1000 {
            let ch = char::from_u32(0x4e00 + i).unwrap();
            let id = w.insert(o + 20 * MS, ch);
            old.push(id);
            if i < 999 {
                assert_eq!(w.cancel(id), Some(ch));
            }
        }
        for id in &old[..999] {
            assert_eq!(w.cancel(*id), None);
        }
        assert_eq!(w.len(), 1);
        assert_eq!(w.cancel(old[999]), char::from_u32(0x4e00 + 999));
    }

    #[test]
    fn same_slot_different_revolutions() {
        let o = origin();
        let slots = 8u32;
        let mut w = TimerWheel::new(MS, slots as usize, o);
        // Slot 3 of every revolution for 60 revolutions: level 0, level 1
        // and overflow (level 1 reaches (8 + 2) * 4 = 40 ticks).
        let mut want = HashMap::new();
        for rev in (0..60u32).rev() {
            let tick = 3 + rev * slots;
            want.insert(w.insert(o + MS * tick, tick), tick);
        }
        for tick in 0..=3 + 60 * slots {
            let fired = poll(&mut w, o + MS * tick);
            for (id, t) in &fired {
                assert_eq!(*t, tick);
                assert_eq!(want.remove(id), Some(tick));
            }
            assert!(fired.len() <= 1);
        }
        assert!(want.is_empty());
        assert!(w.is_empty());
    }

    #[test]
    fn deadline_in_past_fires_at_next_poll() {
        let o = origin();
        let mut w = TimerWheel::new(10 * MS, 64, o);
        let now = o + Duration::from_secs(5) + 3 * MS;
        assert!(poll(&mut w, now).is_empty());
        let a = w.insert(now - Duration::from_secs(2), 'a');
        let b = w.insert(o - Duration::from_secs(60), 'b'); // before the origin
        let c = w.insert(now, 'c'); // exactly now, mid-tick
        let d = w.insert(o + Duration::from_secs(5), 'd'); // last tick boundary
        let nd = w.next_deadline().unwrap();
        assert!(nd <= now, "past timers need an immediate wake-up");
        // The same `now` (same tick) fires the ones already due.
        let fired = poll(&mut w, now);
        assert_eq!(fired, vec![(b, 'b'), (a, 'a'), (d, 'd')]);
        // `c` is due at the next tick boundary, not before.
        assert_eq!(w.next_deadline(), Some(o + Duration::from_secs(5) + 10 * MS));
        assert_eq!(poll(&mut w, now + 7 * MS), vec![(c, 'c')]);
        // Past deadline on a fresh wheel that was never polled.
        let mut w = TimerWheel::new(10 * MS, 64, o);
        let e = w.insert(o - MS, 'e');
        assert_eq!(w.next_deadline(), Some(o));
        assert_eq!(poll(&mut w, o), vec![(e, 'e')]);
    }

    #[test]
    fn now_going_backwards_fires_nothing() {
        let o = origin();
        let mut w = TimerWheel::new(MS, 16, o);
        assert!(poll(&mut w, o + 100 * MS).is_empty());
        let a = w.insert(o + 105 * MS, 1);
        assert!(poll(&mut w, o + 50 * MS).is_empty());
        assert!(poll(&mut w, o - Duration::from_secs(1)).is_empty());
        assert_eq!(poll(&mut w, o + 105 * MS), vec![(a, 1)]);
    }

    #[test]
    fn fired_in_deadline_then_insertion_order() {
        let o = origin();
        let mut w = TimerWheel::new(10 * MS, 8, o);
        let mut rng = XorShift(7);
        let mut expect = Vec::new();
        for i in 0..2000u32 {
            // Random deadlines over many revolutions, many equal.
            let d = o + MS * (rng.below(3000) as u32);
            expect.push((d, i));
            w.insert(d, i);
        }
        expect.sort();
        let fired = poll(&mut w, o + Duration::from_secs(3));
        let got: Vec<u32> = fired.iter().map(|&(_, i)| i).collect();
        let want: Vec<u32> = expect.iter().map(|&(_, i)| i).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn far_jump_does_bounded_work() {
        let o = origin();
        let slots = 1024;
        let mut w = TimerWheel::new(MS, slots, o);
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let twelve_hours = 12 * 3600 * 1000;
        let n = 10_000u64;
        let mut deadlines = Vec::new();
        for i in 0..n {
            let d = o + MS * rng.below(twelve_hours) as u32;
            deadlines.push((d, i));
            w.insert(d, i);
        }
        let started = Instant::now();
        let now = o + Duration::from_secs(10 * 3600);
        let before = w.work;
        let fired = poll(&mut w, now);
        let work = w.work - before;
        // Each slot and each timer visited a bounded number of times,
        // instead of 36 million ticks.
        assert!(work <= 2 * slots as u64 + 3 * n, "work {work}");
        assert!(started.elapsed() < Duration::from_secs(5));
        deadlines.sort();
        let want: Vec<u64> = deadlines.iter().filter(|(d, _)| *d <= now).map(|&(_, i)| i).collect();
        let got: Vec<u64> = fired.iter().map(|&(_, i)| i).collect();
        assert_eq!(got, want);
        assert_eq!(w.len() as u64, n - want.len() as u64);
        // And again from there: the rest fire on time.
        let rest = poll(&mut w, o + Duration::from_secs(12 * 3600));
        assert_eq!(rest.len() as u64, n - want.len() as u64);
        assert!(w.is_empty());
    }

    #[test]
    fn next_deadline_exact_for_near_timers() {
        let o = origin();
        let tick = 10 * MS;
        let mut w = TimerWheel::new(tick, 1024, o);
        let mut rng = XorShift(42);
        let mut now = o;
        for _ in 0..2000 {
            now += Duration::from_nanos(rng.below(50_000_000));
            assert!(poll(&mut w, now).is_empty());
            // Within half a revolution (5.12 s).
            let d = now + Duration::from_nanos(1 + rng.below(5_000_000_000));
            let id = w.insert(d, 0);
            let rounded = w.instant_at(w.ceil_tick(d));
            assert!(rounded >= d && rounded - d < tick);
            assert_eq!(w.next_deadline(), Some(rounded));
            assert_eq!(w.cancel(id), Some(0));
        }
        // Several near timers: cancelling the nearest moves the answer to the
        // next one exactly.
        let ids: Vec<_> = (1..=5u32).map(|k| w.insert(now + 300 * MS * k, k)).collect();
        for (k, id) in ids.iter().enumerate() {
            let want = w.instant_at(w.ceil_tick(now + 300 * MS * (k as u32 + 1)));
            assert_eq!(w.next_deadline(), Some(want));
            w.cancel(*id).unwrap();
        }
        assert_eq!(w.next_deadline(), None);
    }

    /// Runs the loop as the agent does: sleep until `next_deadline`, poll.
    /// Returns (wake-ups before the first timer fired, total wake-ups).
    fn simulate_loop(
        w: &mut TimerWheel<u32>,
        start: Instant,
        deadlines: &HashMap<TimerId, Instant>,
    ) -> (u32, u32) {
        let tick = Duration::from_nanos(w.tick_ns);
        let mut now = start;
        let mut wakeups = 0;
        let mut before_first = None;
        let mut fired = 0;
        while let Some(next) = w.next_deadline() {
            assert!(next > now || wakeups == 0, "spinning");
            now = now.max(next);
            wakeups += 1;
            for (id, _) in poll(w, now) {
                let d = deadlines[&id];
                assert!(now >= d && now - d < tick, "fired {:?} after deadline", now - d);
                fired += 1;
                before_first.get_or_insert(wakeups);
            }
            assert!(wakeups < 100_000);
        }
        assert_eq!(fired, deadlines.len());
        (before_first.unwrap(), wakeups)
    }

    #[test]
    fn far_timers_few_wakeups() {
        let o = origin();
        let tick = 10 * MS;
        for far in [
            Duration::from_secs(30 * 60),        // level 1
            Duration::from_secs(5 * 3600),       // overflow
            Duration::from_secs(30 * 24 * 3600), // overflow, far
        ] {
            let mut w = TimerWheel::new(tick, 1024, o);
            let mut rng = XorShift(1 + far.as_secs());
            let mut deadlines = HashMap::new();
            let mut distinct_ticks = std::collections::HashSet::new();
            for i in 0..10_000u32 {
                let d = o + far + Duration::from_nanos(rng.below(2_000_000_000));
                distinct_ticks.insert(w.ceil_tick(d));
                deadlines.insert(w.insert(d, i), d);
            }
            let (before_first, total) = simulate_loop(&mut w, o, &deadlines);
            assert!(before_first <= 3, "{before_first} wake-ups before the first fire");
            assert!(total as usize <= distinct_ticks.len() + 3, "{total} wake-ups");
        }
    }

    #[test]
    fn cancelled_overflow_minimum_does_not_wake_early() {
        let o = origin();
        let mut w = TimerWheel::new(10 * MS, 16, o);
        // Level 1 reaches (16 + 2) * 8 ticks = 1.44 s.
        let a = w.insert(o + Duration::from_secs(10), 1);
        let b = w.insert(o + Duration::from_secs(20), 2);
        assert_eq!(w.next_deadline(), Some(o + Duration::from_secs(10)));
        w.cancel(a).unwrap();
        assert_eq!(w.next_deadline(), Some(o + Duration::from_secs(20)));
        let mut deadlines = HashMap::new();
        deadlines.insert(b, o + Duration::from_secs(20));
        let (before_first, _) = simulate_loop(&mut w, o, &deadlines);
        assert_eq!(before_first, 1);
    }

    #[test]
    fn huge_deadline_does_not_panic() {
        let o = origin();
        let mut w = TimerWheel::new(MS, 64, o);
        let far = o + Duration::from_secs(100 * 365 * 24 * 3600);
        let id = w.insert(far, 1);
        let near = w.insert(o + MS, 2);
        assert_eq!(poll(&mut w, o + Duration::from_secs(3600)), vec![(near, 2)]);
        assert!(w.next_deadline().unwrap() <= far);
        assert_eq!(w.cancel(id), Some(1));
    }

    /// The wheel against a sorted map of rounded-up deadlines.
    fn model_run(seed: u64, slots: usize, tick: Duration, ops: usize) {
        let o = origin();
        let mut w: TimerWheel<u64> = TimerWheel::new(tick, slots, o);
        let tick_ns = tick.as_nanos() as u64;
        let half = (slots / 2) as u64;
        let level1_span = (slots as u64 + 2) * half;
        let mut rng = XorShift(seed);
        // (deadline, insertion number) -> (id, payload)
        let mut model: BTreeMap<(Instant, u64), (TimerId, u64)> = BTreeMap::new();
        let mut live: Vec<(TimerId, Instant, u64)> = Vec::new();
        let mut dead: Vec<TimerId> = Vec::new();
        let mut now = o;
        let mut polled_tick = 0u64;
        let mut inserted = 0u64;
        let ceil = |d: Instant| -> u64 {
            let ns = d.saturating_duration_since(o).as_nanos() as u64;
            ns.div_ceil(tick_ns)
        };
        let at = |t: u64| o + Duration::from_nanos(t * tick_ns);
        for step in 0..ops {
            match rng.below(100) {
                0..=44 => {
                    let ticks = match rng.below(10) {
                        0 => -(rng.below(3 * half + 2) as i64),
                        1..=5 => rng.below(2 * slots as u64) as i64,
                        6..=8 => rng.below(2 * level1_span) as i64,
                        _ => rng.below(6 * level1_span) as i64,
                    };
                    let sub = rng.below(tick_ns);
                    let d = if ticks >= 0 {
                        now + Duration::from_nanos(ticks as u64 * tick_ns + sub)
                    } else {
                        now - Duration::from_nanos((-ticks) as u64 * tick_ns + sub)
                    };
                    let payload = rng.next();
                    let id = w.insert(d, payload);
                    model.insert((d, inserted), (id, payload));
                    live.push((id, d, inserted));
                    inserted += 1;
                }
                45..=64 if !live.is_empty() => {
                    let i = rng.below(live.len() as u64) as usize;
                    let (id, d, n) = live.swap_remove(i);
                    let (_, payload) = model.remove(&(d, n)).unwrap();
                    assert_eq!(w.cancel(id), Some(payload));
                    dead.push(id);
                }
                65..=69 if !dead.is_empty() => {
                    let id = dead[rng.below(dead.len() as u64) as usize];
                    assert_eq!(w.cancel(id), None);
                }
                _ => {
                    now = match rng.below(20) {
                        0 => now + Duration::from_nanos(rng.below(4 * level1_span * tick_ns)),
                        1..=4 => w.next_deadline().map_or(now, |d| d.max(now)),
                        _ => now + Duration::from_nanos(rng.below(3 * tick_ns)),
                    };
                    let now_tick = (now - o).as_nanos() as u64 / tick_ns;
                    polled_tick = polled_tick.max(now_tick);
                    let fired = poll(&mut w, now);
                    let mut want = Vec::new();
                    while let Some(entry) = model.first_entry() {
                        if ceil(entry.key().0) > now_tick {
                            break;
                        }
                        let ((d, _), v) = entry.remove_entry();
                        assert!(d <= now);
                        want.push(v);
                    }
                    assert_eq!(fired, want, "step {step}");
                    for (id, _) in &fired {
                        let i = live.iter().position(|(l, _, _)| l == id).unwrap();
                        live.swap_remove(i);
                        dead.push(*id);
                    }
                }
            }
            assert_eq!(w.len(), model.len());
            assert_eq!(w.is_empty(), model.is_empty());
            // next_deadline: never late, exact when near, early by less than
            // half a revolution otherwise, immediate when overdue.
            let next = w.next_deadline();
            match model.first_key_value() {
                None => assert_eq!(next, None),
                Some((&(d, _), _)) => {
                    let next = next.unwrap();
                    let x = ceil(d);
                    if x <= polled_tick {
                        assert!(next <= at(polled_tick), "step {step}");
                    } else {
                        assert!(next <= at(x), "late, step {step}");
                        assert!(at(x) - next < Duration::from_nanos(half * tick_ns), "step {step}");
                        if x <= polled_tick + half {
                            assert_eq!(next, at(x), "step {step}");
                        }
                        assert!(next > at(polled_tick));
                    }
                }
            }
        }
        // Drain everything.
        let fired = poll(&mut w, now + Duration::from_secs(1_000_000));
        assert_eq!(fired.len(), model.len());
        assert!(w.is_empty());
        assert_eq!(w.next_deadline(), None);
    }

    #[test]
    fn randomized_against_model() {
        for (seed, slots, tick) in [
            (1, 2, MS),
            (2, 4, MS),
            (3, 8, 10 * MS),
            (4, 16, Duration::from_nanos(3)),
            (5, 64, 10 * MS),
            (6, 1024, 10 * MS),
            (7, 1024, MS),
            (8, 128, Duration::from_nanos(1_000_003)),
        ] {
            model_run(seed, slots, tick, 20_000);
        }
    }

    #[test]
    fn find_occupied_wraps() {
        let o = origin();
        let mut w: TimerWheel<()> = TimerWheel::new(MS, 128, o);
        w.occupied[0] = 1 << 5;
        w.occupied[1] = 1 << 60; // list 124
        assert_eq!(w.find_occupied(0, 100, 128, 0), Some(24));
        assert_eq!(w.find_occupied(0, 100, 128, 25), Some(33));
        assert_eq!(w.find_occupied(0, 100, 30, 0), Some(24));
        assert_eq!(w.find_occupied(0, 100, 30, 25), None);
        assert_eq!(w.find_occupied(0, 0, 5, 0), None);
        assert_eq!(w.find_occupied(0, 0, 6, 0), Some(5));
        w.occupied[2] = 1 << 3; // level 1 list 3
        assert_eq!(w.find_occupied(128, 64, 128, 0), Some(67));
        w.occupied = vec![0; w.occupied.len()].into_boxed_slice();
        assert_eq!(w.next_deadline(), None);
    }
}
