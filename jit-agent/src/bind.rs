//! What an approval of a held `execve` is bound to: the argument and environment strings the
//! daemon read from the held process (and showed the reviewer), as keyed digests the kernel
//! compares with its own copy of the strings (see `jit_common::pending::ArgsBinding`).
//!
//! The key lives in the pinned `BIND_KEY` map: made once from the system's random source when
//! the daemon finds it zero, kept across daemon restarts (approvals in flight stay valid), and
//! readable only through `bpf()`, which agents are refused.

use std::sync::OnceLock;

use jit_common::{pending::ArgsBinding, siphash};

static KEY: OnceLock<[u64; 2]> = OnceLock::new();

/// Records the binding key the kernel uses (once, at start).
pub fn set_key(key: [u64; 2]) {
    let _ = KEY.set(key);
}

/// A fresh random key (never all zero, which the kernel reads as "no key").
///
/// # Errors
/// When the system's random source fails.
pub fn random_key() -> std::io::Result<[u64; 2]> {
    let mut bytes = [0u8; 16];
    // SAFETY: writes at most 16 bytes into a buffer of 16.
    let got = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if usize::try_from(got).ok() != Some(bytes.len()) {
        return Err(std::io::Error::last_os_error());
    }
    let lo = u64::from_le_bytes(bytes[..8].try_into().unwrap_or_default());
    let hi = u64::from_le_bytes(bytes[8..].try_into().unwrap_or_default());
    Ok([lo, hi | 1])
}

/// The binding of an `execve` with arguments `argv` and environment `env` (raw bytes, without
/// terminators) under the key set with [`set_key`]; `None` before one was set.
///
/// The kernel copies `argv[0]\0 … argv[n]\0 env[0]\0 … env[m]\0` in one run; an `execve` without
/// arguments gets an empty `argv[0]` from the kernel, so it is bound as one.
#[must_use]
pub fn exec_binding(argv: &[Vec<u8>], env: &[Vec<u8>]) -> Option<ArgsBinding> {
    binding_under(*KEY.get()?, argv, env)
}

/// [`exec_binding`] under `key`.
#[must_use]
pub fn binding_under(key: [u64; 2], argv: &[Vec<u8>], env: &[Vec<u8>]) -> Option<ArgsBinding> {
    let empty = [Vec::new()];
    let argv = if argv.is_empty() { &empty[..] } else { argv };
    let mut strings = Vec::new();
    for s in argv.iter().chain(env) {
        strings.extend_from_slice(s);
        strings.push(0);
    }
    let argv0 = argv.first().map_or(0, |a| a.len() + 1);
    let tail = strings.get(argv0..)?;
    Some(ArgsBinding {
        full: siphash::digest(key, &strings),
        tail: siphash::digest(key, tail),
        full_len: u32::try_from(strings.len()).ok()?,
        tail_len: u32::try_from(tail.len()).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_all_strings_and_the_part_after_argv0() {
        let key = [1, 2];
        let argv = [b"git".to_vec(), b"push".to_vec()];
        let env = [b"HOME=/root".to_vec()];
        let b = binding_under(key, &argv, &env).unwrap();
        assert_eq!(b.full_len as usize, "git\0push\0HOME=/root\0".len());
        assert_eq!(b.tail_len as usize, "push\0HOME=/root\0".len());
        assert_eq!(b.full, siphash::digest(key, b"git\0push\0HOME=/root\0"));
        assert_eq!(b.tail, siphash::digest(key, b"push\0HOME=/root\0"));
        // A changed environment changes both digests; a changed argv[0] only the full one.
        let preload = [b"HOME=/root".to_vec(), b"LD_PRELOAD=/tmp/x.so".to_vec()];
        let c = binding_under(key, &argv, &preload).unwrap();
        assert_ne!(b.full, c.full);
        assert_ne!(b.tail, c.tail);
        let renamed = [b"sh".to_vec(), b"push".to_vec()];
        let d = binding_under(key, &renamed, &env).unwrap();
        assert_ne!(b.full, d.full);
        assert_eq!(b.tail, d.tail);
    }

    #[test]
    fn an_execve_without_arguments_binds_an_empty_argv0() {
        let b = binding_under([1, 2], &[], &[]).unwrap();
        assert_eq!((b.full_len, b.tail_len), (1, 0));
        assert!(b.is_bound());
    }
}
