//! jit's BPF LSM programs and their maps: the only module that touches aya.
//!
//! [`Enforcer`] owns the programs (or their pins) and a handle on every map userspace drives;
//! its methods live in one file per job: `loader` (load, attach, pin, adopt, detach), `scope`
//! (which cgroups are agents), `rules` (agent configurations and rule sets), `protection`
//! (self-protection), `holds` (the pending map and grants) and `counters` (counters, the event
//! ring buffer and the write-decision cache's generation).
//!
//! In the daemon one component owns the `Enforcer` (docs/ARCHITECTURE.md, I1); everything else
//! sends it commands.
mod counters;
mod error;
mod floor;
mod holds;
mod loader;
mod protection;
mod rules;
mod scope;

use std::{collections::BTreeMap, path::PathBuf};

use aya::{
    Ebpf,
    maps::{Map, MapError},
    programs::lsm::LsmLinkId,
};

pub use self::{
    error::BpfError,
    floor::Floor,
    loader::{DEFAULT_PIN_DIR, Startup, has_ebpf_object, programs_for_this_kernel},
};

enum Programs {
    /// Loaded by this process with links it owns: dropping them detaches the programs.
    Owned {
        ebpf: Ebpf,
        links: Vec<(&'static str, LsmLinkId)>,
    },
    /// Attached through links pinned under `dir`: they stay attached when this process exits.
    Pinned { dir: PathBuf },
}

/// jit's programs, loaded and attached, and handles on their maps.
///
/// Dropping it detaches every program it owns; pinned programs stay attached.
pub struct Enforcer {
    maps: BTreeMap<&'static str, Map>,
    programs: Programs,
    /// Whether [`Enforcer::policy_changed`] keeps the write-decision cache on.
    cache_enabled: bool,
}

impl Enforcer {
    fn map(&mut self, name: &'static str) -> Result<&mut Map, BpfError> {
        self.maps.get_mut(name).ok_or(BpfError::MissingMap { name })
    }

    /// Map `name` as the typed aya map `M` (which checks key and value sizes).
    fn open<'a, M>(&'a mut self, name: &'static str) -> Result<M, BpfError>
    where
        M: TryFrom<&'a mut Map, Error = MapError>,
    {
        M::try_from(self.map(name)?).map_err(map_err(name, "open"))
    }
}

fn map_err(name: &'static str, action: &'static str) -> impl FnOnce(MapError) -> BpfError {
    move |source| BpfError::Map {
        name,
        action,
        source,
    }
}
