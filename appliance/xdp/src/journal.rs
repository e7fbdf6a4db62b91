//! The applier's undo log. Each map write of a plan that the program sees at once is made
//! through a [`Journal`], which first reads what the element held and records it (the drop
//! list, an LPM trie whose lookups match prefixes, takes the applier's word). A plan that
//! fails half-way is undone in reverse order: the program passes back through the states it
//! saw on the way in and ends on the generation before. Writes into a VIP's idle ring half are
//! not recorded: no VIP entry points there before the VIP's switch, which is recorded.

use aya::maps::MapError;
use aya::maps::lpm_trie::Key as LpmKey;
use gatehouse_ebpf_common::{
    Addr, Backend, MAP_BACKENDS, MAP_DROP, MAP_OWNED, MAP_RING, MAP_SETTINGS, MAP_VIP_GEN,
    MAP_VIP_INDEX, MAP_VIPS, OwnedKey, RingChunk, Settings, VipEntry, VipKey, VipValue,
};

use crate::applier::Maps;
use crate::error::{XdpError, map_err};

/// One recorded write: the element and what it held before (the settings apart: see
/// [`Journal::settings`]).
#[derive(Debug)]
enum Undo {
    Backend(u32, Backend),
    VipGen(u32, u32),
    /// `None`: the VIP was not in the table.
    Vip(VipKey, Option<VipValue>),
    VipIndex(u32, VipEntry),
    /// The owned address and its value before (`None`: not owned).
    Owned(Addr, Option<u32>),
    /// A drop-list prefix (length in bits, network) and whether it was in the list.
    Drop(u32, Addr, bool),
}

/// Map writes of one plan, with the undo of each (see the module doc).
pub(crate) struct Journal<'m> {
    maps: &'m mut Maps,
    undo: Vec<Undo>,
    /// What the settings go back to, put back last.
    settings: Option<Settings>,
    /// Off for a full write: the maps' contents then are no generation to go back to.
    recording: bool,
}

impl<'m> Journal<'m> {
    pub fn new(maps: &'m mut Maps, recording: bool) -> Self {
        Journal { maps, undo: Vec::new(), settings: None, recording }
    }

    /// The maps, to read.
    pub fn maps(&self) -> &Maps {
        self.maps
    }

    /// Writes the settings; `undo_to` is what an undo writes back, after every other undo
    /// (the plan's first write gives it; its last, the commit, does not).
    pub fn settings(&mut self, value: Settings, undo_to: Option<Settings>) -> Result<(), XdpError> {
        fault(MAP_SETTINGS)?;
        self.maps.settings.set(0, value, 0).map_err(map_err(MAP_SETTINGS))?;
        if self.recording && undo_to.is_some() {
            self.settings = undo_to;
        }
        Ok(())
    }

    pub fn backend(&mut self, id: u32, value: Backend) -> Result<(), XdpError> {
        let before = self.read(|m| m.backends.get(&id, 0), MAP_BACKENDS)?;
        fault(MAP_BACKENDS)?;
        self.maps.backends.set(id, value, 0).map_err(map_err(MAP_BACKENDS))?;
        self.record(Undo::Backend(id, before));
        Ok(())
    }

    /// Writes a chunk of a ring half no VIP entry points to (not recorded).
    pub fn ring(&mut self, index: u32, chunk: RingChunk) -> Result<(), XdpError> {
        fault(MAP_RING)?;
        self.maps.ring.set(index, chunk, 0).map_err(map_err(MAP_RING))
    }

    pub fn vip_gen(&mut self, index: u32, generation: u32) -> Result<(), XdpError> {
        let before = self.read(|m| m.vip_gen.get(&index, 0), MAP_VIP_GEN)?;
        fault(MAP_VIP_GEN)?;
        self.maps.vip_gen.set(index, generation, 0).map_err(map_err(MAP_VIP_GEN))?;
        self.record(Undo::VipGen(index, before));
        Ok(())
    }

    pub fn insert_vip(&mut self, key: VipKey, value: VipValue) -> Result<(), XdpError> {
        let before = self.read_vip(&key)?;
        fault(MAP_VIPS)?;
        self.maps.vips.insert(key, value, 0).map_err(map_err(MAP_VIPS))?;
        self.record(Undo::Vip(key, before));
        Ok(())
    }

    /// Removes a VIP's entry (one that is not there is fine).
    pub fn remove_vip(&mut self, key: VipKey) -> Result<(), XdpError> {
        let before = self.read_vip(&key)?;
        if self.recording && before.is_none() {
            return Ok(());
        }
        fault(MAP_VIPS)?;
        remove(self.maps.vips.remove(&key), MAP_VIPS)?;
        self.record(Undo::Vip(key, before));
        Ok(())
    }

    pub fn vip_index(&mut self, slot: u32, entry: VipEntry) -> Result<(), XdpError> {
        let before = self.read(|m| m.vip_index.get(&slot, 0), MAP_VIP_INDEX)?;
        fault(MAP_VIP_INDEX)?;
        self.maps.vip_index.set(slot, entry, 0).map_err(map_err(MAP_VIP_INDEX))?;
        self.record(Undo::VipIndex(slot, before));
        Ok(())
    }

    /// Makes `addr` owned (`true`) or not.
    pub fn owned(&mut self, addr: Addr, owned: bool) -> Result<(), XdpError> {
        let key = OwnedKey { addr };
        let before = if self.recording {
            match self.maps.owned.get(&key, 0) {
                Ok(value) => Some(value),
                Err(e) if is_not_found(&e) => None,
                Err(e) => return Err(map_err(MAP_OWNED)(e)),
            }
        } else {
            None
        };
        fault(MAP_OWNED)?;
        if owned {
            self.maps.owned.insert(key, 0, 0).map_err(map_err(MAP_OWNED))?;
        } else {
            remove(self.maps.owned.remove(&key), MAP_OWNED)?;
        }
        self.record(Undo::Owned(addr, before));
        Ok(())
    }

    /// Puts a prefix into the drop list (`true`) or takes it out. What the list held is the
    /// caller's word (an LPM trie lookup matches prefixes, it cannot tell a key is there).
    pub fn drop_prefix(&mut self, bits: u32, addr: Addr, drop: bool) -> Result<(), XdpError> {
        fault(MAP_DROP)?;
        let key = LpmKey::new(bits, addr);
        if drop {
            self.maps.drop.insert(&key, 1, 0).map_err(map_err(MAP_DROP))?;
        } else {
            remove(self.maps.drop.remove(&key), MAP_DROP)?;
        }
        self.record(Undo::Drop(bits, addr, !drop));
        Ok(())
    }

    /// Undoes every recorded write, last first. An undo that fails does not stop the others
    /// (each brings the maps nearer the generation before); the first failure is returned.
    pub fn undo(self) -> Result<(), XdpError> {
        let Journal { maps, undo, settings, .. } = self;
        let mut first = None;
        for entry in undo.into_iter().rev() {
            if let Err(e) = undo_one(maps, entry) {
                first.get_or_insert(e);
            }
        }
        if let Some(settings) = settings {
            let put_back = fault(MAP_SETTINGS)
                .and_then(|()| maps.settings.set(0, settings, 0).map_err(map_err(MAP_SETTINGS)));
            if let Err(e) = put_back {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    fn record(&mut self, undo: Undo) {
        if self.recording {
            self.undo.push(undo);
        }
    }

    fn read<V: Default>(
        &self,
        get: impl FnOnce(&Maps) -> Result<V, MapError>,
        name: &'static str,
    ) -> Result<V, XdpError> {
        if !self.recording {
            return Ok(V::default());
        }
        get(self.maps).map_err(map_err(name))
    }

    fn read_vip(&self, key: &VipKey) -> Result<Option<VipValue>, XdpError> {
        match self.maps.vips.get(key, 0) {
            Ok(value) => Ok(Some(value)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(map_err(MAP_VIPS)(e)),
        }
    }
}

fn undo_one(maps: &mut Maps, entry: Undo) -> Result<(), XdpError> {
    match entry {
        Undo::Backend(id, value) => {
            fault(MAP_BACKENDS)?;
            maps.backends.set(id, value, 0).map_err(map_err(MAP_BACKENDS))
        }
        Undo::VipGen(index, generation) => {
            fault(MAP_VIP_GEN)?;
            maps.vip_gen.set(index, generation, 0).map_err(map_err(MAP_VIP_GEN))
        }
        Undo::Vip(key, value) => {
            fault(MAP_VIPS)?;
            match value {
                Some(value) => maps.vips.insert(key, value, 0).map_err(map_err(MAP_VIPS)),
                None => remove(maps.vips.remove(&key), MAP_VIPS),
            }
        }
        Undo::VipIndex(slot, entry) => {
            fault(MAP_VIP_INDEX)?;
            maps.vip_index.set(slot, entry, 0).map_err(map_err(MAP_VIP_INDEX))
        }
        Undo::Owned(addr, value) => {
            fault(MAP_OWNED)?;
            let key = OwnedKey { addr };
            match value {
                Some(value) => maps.owned.insert(key, value, 0).map_err(map_err(MAP_OWNED)),
                None => remove(maps.owned.remove(&key), MAP_OWNED),
            }
        }
        Undo::Drop(bits, addr, present) => {
            fault(MAP_DROP)?;
            let key = LpmKey::new(bits, addr);
            if present {
                maps.drop.insert(&key, 1, 0).map_err(map_err(MAP_DROP))
            } else {
                remove(maps.drop.remove(&key), MAP_DROP)
            }
        }
    }
}

/// A removal's result: a key that is not there is no error.
fn remove(result: Result<(), MapError>, name: &'static str) -> Result<(), XdpError> {
    match result {
        Err(e) if !is_not_found(&e) => Err(map_err(name)(e)),
        _ => Ok(()),
    }
}

pub(crate) fn is_not_found(e: &MapError) -> bool {
    matches!(e, MapError::KeyNotFound)
        || matches!(e, MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(2))
}

/// Test-only fault injection: the map writes (forward and undo, counted process-wide from
/// [`faults::fail`]: the plane writes from a thread of its own) whose number is given fail
/// as a kernel error would. A test that injects faults holds [`faults::exclusive`].
#[cfg(test)]
pub(crate) mod faults {
    use std::sync::atomic::{AtomicUsize, Ordering};

    static COUNT: AtomicUsize = AtomicUsize::new(0);
    static FAIL: [AtomicUsize; 2] = [const { AtomicUsize::new(usize::MAX) }; 2];
    static FAIL_FROM: AtomicUsize = AtomicUsize::new(usize::MAX);
    static USER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    /// One fault-injecting test at a time.
    pub fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
        USER.blocking_lock()
    }

    /// From now on, the writes numbered `writes` (at most two; 0 = the next one) fail.
    pub fn fail(writes: &[usize]) {
        assert!(writes.len() <= FAIL.len());
        for (i, slot) in FAIL.iter().enumerate() {
            slot.store(writes.get(i).copied().unwrap_or(usize::MAX), Ordering::SeqCst);
        }
        FAIL_FROM.store(usize::MAX, Ordering::SeqCst);
        COUNT.store(0, Ordering::SeqCst);
    }

    /// From now on, every write from the one numbered `first` on fails.
    pub fn fail_from(first: usize) {
        fail(&[]);
        FAIL_FROM.store(first, Ordering::SeqCst);
    }

    /// Counts one write; true when it must fail.
    pub(super) fn next() -> bool {
        let n = COUNT.fetch_add(1, Ordering::SeqCst);
        n >= FAIL_FROM.load(Ordering::SeqCst) || FAIL.iter().any(|f| f.load(Ordering::SeqCst) == n)
    }
}

#[cfg(test)]
fn fault(name: &'static str) -> Result<(), XdpError> {
    if faults::next() {
        let io_error = std::io::Error::from_raw_os_error(12);
        let source = MapError::SyscallError(aya::sys::SyscallError {
            call: "bpf_map_update_elem",
            io_error,
        });
        return Err(XdpError::Map { name, source });
    }
    Ok(())
}

#[cfg(not(test))]
#[inline]
fn fault(_: &'static str) -> Result<(), XdpError> {
    Ok(())
}

#[cfg(test)]
mod tests;
