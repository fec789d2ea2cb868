//! The kernel's counters, its event ring buffer, and the policy generation that keeps the
//! write-decision cache honest.
use aya::maps::{Array, HashMap, MapData, PerCpuArray, RingBuf};
use jit_common::{
    event::{DenialCount, DenialKey, counter},
    map_names,
    provenance::{Mark, MarkKey},
};

use super::{BpfError, Enforcer, map_err};

impl Enforcer {
    /// The event ring buffer. Can be taken once; events are read with `RingBuf::next`.
    ///
    /// # Errors
    /// When it was taken already.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, BpfError> {
        let map = self
            .maps
            .remove(map_names::EVENTS)
            .ok_or(BpfError::MissingMap {
                name: map_names::EVENTS,
            })?;
        RingBuf::try_from(map).map_err(map_err(map_names::EVENTS, "open"))
    }

    /// The counters, summed over all CPUs, indexed by `jit_common::event::counter`.
    ///
    /// # Errors
    /// When the map cannot be read.
    pub fn counters(&mut self) -> Result<[u64; counter::COUNT as usize], BpfError> {
        let array: PerCpuArray<_, u64> = self.open(map_names::COUNTERS)?;
        let mut sums = [0u64; counter::COUNT as usize];
        for (index, sum) in (0u32..).zip(sums.iter_mut()) {
            let per_cpu = array
                .get(&index, 0)
                .map_err(map_err(map_names::COUNTERS, "read"))?;
            *sum = per_cpu.iter().sum();
        }
        Ok(sums)
    }

    /// Every entry of the `DENIALS` map: the denials the kernel enforced without a record of
    /// their own, counted since the programs were loaded (see `jit_common::event::DenialKey`).
    ///
    /// # Errors
    /// When the map cannot be read.
    pub fn denials(&mut self) -> Result<Vec<(DenialKey, DenialCount)>, BpfError> {
        let map: HashMap<_, DenialKey, DenialCount> = self.open(map_names::DENIALS)?;
        map.iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_err(map_names::DENIALS, "read"))
    }

    /// The provenance mark of the file `dev`/`ino` (see `jit_common::provenance`), if the
    /// kernel has one; the caller compares its generation with the file's.
    ///
    /// # Errors
    /// When the map cannot be read.
    pub fn mark(&mut self, dev: u64, ino: u64) -> Result<Option<Mark>, BpfError> {
        let map: HashMap<_, MarkKey, Mark> = self.open(map_names::MARKS)?;
        match map.get(&MarkKey { dev, ino }, 0) {
            Ok(mark) => Ok(Some(mark)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(map_names::MARKS, "read")(e)),
        }
    }

    /// How many files carry a provenance mark.
    ///
    /// # Errors
    /// When the map cannot be read.
    pub fn mark_count(&mut self) -> Result<usize, BpfError> {
        let map: HashMap<_, MarkKey, Mark> = self.open(map_names::MARKS)?;
        Ok(map.keys().count())
    }

    /// Turns the write-decision cache (see `jit_common::cache`) on, the default, or off: off,
    /// every write open is decided in full. For measuring what the cache saves.
    ///
    /// # Errors
    /// When the map update fails.
    pub fn set_decision_cache(&mut self, enabled: bool) -> Result<(), BpfError> {
        self.cache_enabled = enabled;
        self.policy_changed()
    }

    /// Invalidates every cached write decision: called after every change to the rules, agent
    /// configurations, scope or protected paths, which the cached decisions were made under.
    /// Writes the next policy generation, or 0 while the cache is off.
    pub(super) fn policy_changed(&mut self) -> Result<(), BpfError> {
        let enabled = self.cache_enabled;
        let mut generation: Array<_, u64> = self.open(map_names::POLICY_GEN)?;
        let current = generation
            .get(&0, 0)
            .map_err(map_err(map_names::POLICY_GEN, "read"))?;
        let next = if enabled {
            current.wrapping_add(1).max(1)
        } else {
            0
        };
        generation
            .set(0, next, 0)
            .map_err(map_err(map_names::POLICY_GEN, "update"))
    }
}
