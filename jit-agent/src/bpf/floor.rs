//! The floor programs (`jit-ebpf/src/floor.rs`) for `jit-bench`: jit's hooks with programs that
//! return at once, what any BPF LSM design costs before it decides anything. The daemon never
//! loads them.
use aya::{Btf, Ebpf};
use jit_common::program_names;

use super::{
    BpfError,
    loader::{attach_lsm, load_object},
};
use crate::btf::KernelBtf;

/// The floor programs, attached; dropping it detaches them.
pub struct Floor {
    /// Owns the programs and their links.
    _ebpf: Ebpf,
    attached: usize,
}

impl Floor {
    /// Loads the eBPF object and attaches the floor program of every hook of
    /// `program_names::ALL` this kernel has (hooks older kernels lack are skipped, as for
    /// jit's own programs). jit's programs in the object are not loaded.
    ///
    /// # Errors
    /// As [`super::Enforcer::load_and_attach`].
    pub fn load_and_attach() -> Result<Self, BpfError> {
        let mut ebpf = load_object()?;
        let btf = Btf::from_sys_fs().map_err(BpfError::Btf)?;
        let kernel = KernelBtf::from_sys_fs().map_err(BpfError::Layout)?;
        let mut attached = 0;
        for (name, hook) in program_names::FLOOR {
            if kernel.func_param_count(&format!("bpf_lsm_{hook}")).is_err() {
                continue;
            }
            attach_lsm(&mut ebpf, name, hook, &btf)?;
            attached += 1;
        }
        Ok(Self {
            _ebpf: ebpf,
            attached,
        })
    }

    /// How many programs are attached (one per hook this kernel has).
    #[must_use]
    pub fn attached(&self) -> usize {
        self.attached
    }
}
