//! What the engine decides: an operation of an agent on a place (`Where`), with the file's
//! identity and, for renames and links, the second end.
use core::ffi::c_void;

use jit_common::{AgentCgroup, pending::FileId, policy::Op};

/// How to resolve the path of an action's object.
pub enum Where {
    /// A BTF-typed kernel `struct path *` (inside a hook argument), resolved with `bpf_d_path`
    /// (the exec and open hooks, where every supported kernel allows that helper).
    Path(*const c_void),
    /// A dentry on a mount, resolved by walking the dentry and mount trees: the `path_*` hooks,
    /// where 6.1 does not allow `bpf_d_path`, and entries that do not exist yet.
    Walk { mnt: *const u8, dentry: *const u8 },
}

/// One operation to decide.
pub struct Action {
    pub op: Op,
    pub agent: AgentCgroup,
    /// Where the object is, to resolve its path.
    pub path: Where,
    /// For two-path ops (rename, link): the other end. Both are evaluated and the more severe
    /// decision applies, so a denied file cannot be renamed or linked into an allowed place.
    pub second: Option<Where>,
    /// The object's identity, which answers to holds are bound to.
    pub file: FileId,
    /// For two-path ops, the other end's identity (its directory and name), which answers to
    /// holds are bound to as well; [`FileId::ZERO`] otherwise.
    pub second_file: FileId,
    /// This action cannot be held: a hold verdict is enforced as a denial, reported. Set for
    /// the interpreter pass of a `#!` exec (the script's own pass may have been held already,
    /// and one `execve` cannot be paused twice: its restart would decide the script again) and
    /// for the executable mappings the kernel makes inside `execve` (past the point of no
    /// return, a restart is impossible).
    pub no_hold: bool,
    /// `EVENT_FLAG_*` bits every event of this action carries (e.g. `EVENT_FLAG_MAPPING`).
    pub flags: u32,
}
