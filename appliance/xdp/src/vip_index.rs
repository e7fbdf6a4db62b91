//! Where each VIP's copy goes in the program's VIP index (`GH_VIP_INDEX`, an array the
//! program reads without a helper call; `GH_VIPS` stays the table of record). A VIP takes the
//! first free slot of the [`VIP_PROBES`] slots from [`vip_slot`] of its key; a VIP that finds
//! them all taken is not indexed, and the program finds it in `GH_VIPS`.

use gatehouse_ebpf_common::{VIP_PROBES, VipEntry, VipKey, VipValue, vip_slot, vip_tag};

/// The user side's picture of the VIP index: which key each slot holds.
#[derive(Clone, Debug, Default)]
pub(crate) struct VipIndex {
    slots: Vec<Option<VipKey>>,
}

impl VipIndex {
    /// An empty index of `slots` slots (a power of two, `vip_index_slots`).
    pub fn new(slots: u32) -> Self {
        VipIndex { slots: vec![None; slots as usize] }
    }

    /// The probed slots of a key, in the program's order.
    fn probes(&self, key: &VipKey) -> impl Iterator<Item = usize> + use<> {
        let mask = self.slots.len().saturating_sub(1) as u32;
        let start = vip_slot(&key.addr, key.port, key.proto);
        (0..VIP_PROBES).map(move |p| (start.wrapping_add(p) & mask) as usize)
    }

    /// The slot that holds `key`, else a free one of its probes, now the key's; `None`: the
    /// key is not indexed (its probes hold other keys).
    pub fn place(&mut self, key: &VipKey) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        let probes: Vec<usize> = self.probes(key).collect();
        let slot = probes
            .iter()
            .find(|&&i| self.slots[i] == Some(*key))
            .or_else(|| probes.iter().find(|&&i| self.slots[i].is_none()))
            .copied()?;
        self.slots[slot] = Some(*key);
        Some(slot as u32)
    }

    /// The slot that holds `key`, if any.
    pub fn slot(&self, key: &VipKey) -> Option<u32> {
        self.probes(key).find(|&i| self.slots.get(i) == Some(&Some(*key))).map(|i| i as u32)
    }

    /// Every slot and the key it holds.
    pub fn slots(&self) -> impl Iterator<Item = (u32, Option<VipKey>)> + '_ {
        self.slots.iter().enumerate().map(|(i, key)| (i as u32, *key))
    }

    /// Frees the slot of `key`; returns it (`None`: the key was not indexed).
    pub fn remove(&mut self, key: &VipKey) -> Option<u32> {
        let slot = self.slot(key)?;
        self.slots[slot as usize] = None;
        Some(slot)
    }
}

/// The index entry of a VIP, tagged for the program's torn-read check.
pub(crate) fn entry(key: &VipKey, value: &VipValue) -> VipEntry {
    VipEntry { key: *key, value: *value, tag: vip_tag(&key.addr, key.port, key.proto, value) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::applier::vip_key;

    fn key(i: u32) -> VipKey {
        vip_key(format!("10.0.{}.{}", i / 256, i % 256).parse().unwrap_or([0u8; 4].into()), 80, 6)
    }

    #[test]
    fn a_vip_keeps_its_slot_and_a_full_probe_window_leaves_it_to_the_hash_table() {
        let mut index = VipIndex::new(4);
        let first = index.place(&key(1));
        assert!(first.is_some());
        // Placing again (an update) keeps the slot.
        assert_eq!(index.place(&key(1)), first);
        // Fill the table: with 4 slots and 2 probes some keys find no room.
        let placed: Vec<Option<u32>> = (2..40).map(|i| index.place(&key(i))).collect();
        assert!(placed.iter().any(Option::is_none), "some key finds its probes taken");
        let taken: std::collections::BTreeSet<u32> =
            placed.iter().flatten().copied().chain(first).collect();
        assert!(taken.len() <= 4);
        // Each placed key is in one of its own probes, and only there.
        for (i, slot) in (2..40).zip(&placed) {
            if let Some(slot) = slot {
                assert!(index.probes(&key(i)).any(|p| p as u32 == *slot));
            }
        }
        // Freed, the slot serves the next key whose probes include it.
        assert_eq!(index.remove(&key(1)), first);
        assert_eq!(index.remove(&key(1)), None);
    }

    #[test]
    fn entries_carry_a_tag_that_changes_with_any_field() {
        let k = key(7);
        let v =
            VipValue { action: 2, index: 3, ring_offset: 10, ring_size: 17, ..Default::default() };
        let e = entry(&k, &v);
        assert_ne!(e.tag, 0);
        let other = VipValue { ring_offset: 27, ..v };
        assert_ne!(entry(&k, &other).tag, e.tag);
        assert_ne!(entry(&key(8), &v).tag, e.tag);
    }
}
