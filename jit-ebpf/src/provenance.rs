//! Provenance marks (see `jit_common::provenance`): `file_open` marks what agents write,
//! `exec` and the executable mappings read the marks, and the hook here forgets the marks of
//! deleted files.
//!
//! Hook: `inode_free_security` (LSM, no verdict), for every process: an inode leaves memory.
//! Only an inode with no link left (a deleted file) loses its mark; an inode that is merely
//! evicted from the cache keeps it in `MARKS` for when it is read in again. Minimum kernel:
//! 5.7 (BPF LSM); the signature is the same on 6.1 and 6.12.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated::bpf_ktime_get_ns},
    macros::lsm,
    programs::LsmContext,
};
use jit_common::{
    event::{EVENT_FLAG_WRITTEN_BY_AGENT, EVENT_FLAG_WRITTEN_BY_THIS_AGENT, counter},
    provenance::{Mark, MarkKey, WRITER_NONE, WRITER_THIS_AGENT, writer_class},
};

use crate::{
    kernel::{load_btf, load_ptr, offset, read_kernel},
    maps::{MARKS, count},
    resolve::{MountNs, mount_ns},
};

/// `S_IFMT` and `S_IFREG` of `i_mode`.
const S_IFMT: u16 = 0o170_000;
const S_IFREG: u16 = 0o100_000;

#[lsm(hook = "inode_free_security")]
pub fn jit_inode_free_security(ctx: LsmContext) -> i32 {
    // LSM_HOOK(void, LSM_RET_VOID, inode_free_security, struct inode *inode)
    let inode: *const u8 = ctx.arg(0);
    // SAFETY: `inode` is the hook's BTF-typed argument; `i_nlink` is an unsigned int.
    let nlink: u32 = unsafe { load_btf(inode, offset(|l| &l.inode_i_nlink)) };
    if nlink != 0 {
        return 0;
    }
    // SAFETY: as above; `i_mode` is a `umode_t` (u16).
    let mode: u16 = unsafe { load_btf(inode, offset(|l| &l.inode_i_mode)) };
    if mode & S_IFMT != S_IFREG {
        return 0;
    }
    // SAFETY: as above; `i_generation` is a u32.
    let (key, generation) = unsafe {
        (
            mark_key_btf(inode),
            load_btf::<u32>(inode, offset(|l| &l.inode_i_generation)),
        )
    };
    // Only the mark of this very file: another one with the same number (an earlier file's,
    // or one on another subvolume of the same filesystem) stays.
    // SAFETY: the value is read at once.
    if unsafe { MARKS.get(key) }.is_some_and(|m| m.generation == generation) {
        let _ = MARKS.remove(key);
    }
    0
}

/// The `MARKS` key of a BTF-typed `inode`.
#[inline(always)]
unsafe fn mark_key_btf(inode: *const u8) -> MarkKey {
    // SAFETY: `inode` is BTF-typed; `i_sb` is a pointer member, `s_dev` a u32, `i_ino` a u64.
    unsafe {
        let sb = load_ptr(inode, offset(|l| &l.inode_i_sb));
        MarkKey {
            dev: u64::from(load_btf::<u32>(sb, offset(|l| &l.super_block_s_dev))),
            ino: load_btf(inode, offset(|l| &l.inode_i_ino)),
        }
    }
}

/// Marks the file of the BTF-typed `inode`, just opened for writing by a process of agent
/// `agent_id`, as written by it; `false` when it is an unmarked regular file and `MARKS` has
/// no room (the open must then be refused, see `jit_common::provenance::MARKS_ENTRIES`).
#[inline(always)]
pub unsafe fn mark_written(inode: *const u8, agent_id: u32) -> bool {
    // SAFETY: `inode` is BTF-typed; `i_mode` a u16, `i_generation` a u32.
    let (mode, generation) = unsafe {
        (
            load_btf::<u16>(inode, offset(|l| &l.inode_i_mode)),
            load_btf::<u32>(inode, offset(|l| &l.inode_i_generation)),
        )
    };
    if mode & S_IFMT != S_IFREG {
        return true;
    }
    // SAFETY: as above.
    let key = unsafe { mark_key_btf(inode) };
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if let Some(mark) = MARKS.get_ptr_mut(key) {
        // SAFETY: the map value, written in place; a racing writer's fields may interleave
        // with these, each of them an agent that wrote the file.
        unsafe {
            if (*mark).generation == generation {
                (*mark).agent_id = agent_id;
                (*mark).tgid = tgid;
                (*mark).last_ns = now;
                return true;
            }
        }
    }
    let mark = Mark {
        generation,
        agent_id,
        first_agent_id: agent_id,
        tgid,
        first_ns: now,
        last_ns: now,
    };
    // An entry of an earlier inode with this number is replaced; between two first writers,
    // either mark stands. Only a new key can fail, for room.
    if MARKS.insert(key, mark, 0).is_ok() {
        return true;
    }
    count(counter::MARKS_FULL);
    false
}

/// The mark of the file of `inode` (a kernel `struct inode *`, read with probes), when it has
/// one of its own (the generation matches: not an earlier file's with the same number).
#[inline(always)]
fn current_mark(inode: *const u8) -> Option<Mark> {
    let sb: u64 = read_kernel(inode, offset(|l| &l.inode_i_sb));
    let dev: u32 = read_kernel(sb as *const u8, offset(|l| &l.super_block_s_dev));
    let key = MarkKey {
        dev: u64::from(dev),
        ino: read_kernel(inode, offset(|l| &l.inode_i_ino)),
    };
    // SAFETY: the value is copied out at once.
    let mark = *unsafe { MARKS.get(key) }?;
    let generation: u32 = read_kernel(inode, offset(|l| &l.inode_i_generation));
    (mark.generation == generation).then_some(mark)
}

/// The write stamp of the file of `inode` (a kernel `struct inode *`): the time of the last
/// write open by an agent (`Mark::last_ns`), 0 for a file no agent wrote. An answer to a held
/// exec binds to it (in `FileId::name`), so a file an agent rewrites while its exec is held
/// (after the daemon read or hashed it) is held again, not run.
#[inline(always)]
pub fn write_stamp(inode: *const u8) -> u64 {
    current_mark(inode).map_or(0, |m| m.last_ns)
}

/// The `EVENT_FLAG_WRITTEN_BY_*` bits of the file of `inode` (a kernel `struct inode *`) for a
/// process of agent `agent_id`.
#[inline(always)]
pub fn written_by_flags(inode: *const u8, agent_id: u32) -> u32 {
    let Some(mark) = current_mark(inode) else {
        return 0;
    };
    match writer_class(Some(&mark), mark.generation, agent_id) {
        WRITER_NONE => 0,
        WRITER_THIS_AGENT => EVENT_FLAG_WRITTEN_BY_AGENT | EVENT_FLAG_WRITTEN_BY_THIS_AGENT,
        _ => EVENT_FLAG_WRITTEN_BY_AGENT,
    }
}

/// The `EVENT_FLAG_WRITTEN_BY_*` bits for executing `file` (a kernel `struct file *`) in a
/// process of agent `agent_id`. A pseudo file of an internal mount (`memfd`, System V shared
/// memory) has no installer: its bytes came from a process, and it counts as written by this
/// agent.
#[inline(always)]
pub fn exec_flags(file: *const u8, agent_id: u32) -> u32 {
    let path = file.wrapping_add(offset(|l| &l.file_f_path));
    let mnt: u64 = read_kernel(path, offset(|l| &l.path_mnt));
    if mount_ns(mnt) == MountNs::Internal {
        return EVENT_FLAG_WRITTEN_BY_AGENT | EVENT_FLAG_WRITTEN_BY_THIS_AGENT;
    }
    let inode: u64 = read_kernel(file, offset(|l| &l.file_f_inode));
    written_by_flags(inode as *const u8, agent_id)
}
