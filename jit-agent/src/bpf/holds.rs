//! Held tasks: the kernel's pending map (answers, clean-up) and time-boxed grants.
use aya::maps::{Array, HashMap, MapError};
use jit_common::{
    map_names,
    pending::{
        ArgsBinding, GrantKey, GrantValue, PendingRequest, STATE_ALLOWED, STATE_DENIED,
        STATE_PENDING,
    },
};

use super::{BpfError, Enforcer, map_err};

/// `bpf_map_update_elem` flag: update an existing element only.
const BPF_EXIST: u64 = 2;

impl Enforcer {
    /// Every held task: `(thread id, request)`, answered or not.
    ///
    /// # Errors
    /// When the map cannot be read.
    pub fn pending_requests(&mut self) -> Result<Vec<(u32, PendingRequest)>, BpfError> {
        let pending: HashMap<_, u32, PendingRequest> = self.open(map_names::PENDING)?;
        pending
            .iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_err(map_names::PENDING, "read"))
    }

    /// Answers held request `request_id` of thread `tid`: records the decision in the kernel,
    /// then continues the process. The restarted syscall consumes the answer once.
    ///
    /// # Errors
    /// [`BpfError::NotPending`] when that request is not waiting (answered already, or another
    /// hold of the thread replaced it); map or signal errors.
    pub fn answer(&mut self, tid: u32, request_id: u64, allow: bool) -> Result<(), BpfError> {
        self.answer_bound(tid, request_id, allow, ArgsBinding::default())
    }

    /// [`Enforcer::answer`] with the argument binding of a held `execve` (see
    /// [`crate::bind`]): the kernel kills the process if the `execve` it restarts copies other
    /// strings, and enforces an approval of an `execve` without a binding as a denial.
    ///
    /// # Errors
    /// As [`Enforcer::answer`].
    pub fn answer_bound(
        &mut self,
        tid: u32,
        request_id: u64,
        allow: bool,
        args: ArgsBinding,
    ) -> Result<(), BpfError> {
        let mut pending: HashMap<_, u32, PendingRequest> = self.open(map_names::PENDING)?;
        let mut request = match pending.get(&tid, 0) {
            Ok(request) if request.request_id == request_id && request.state == STATE_PENDING => {
                request
            }
            Ok(_) | Err(MapError::KeyNotFound) => {
                return Err(BpfError::NotPending { tid, request_id });
            }
            Err(source) => return Err(map_err(map_names::PENDING, "read")(source)),
        };
        request.state = if allow { STATE_ALLOWED } else { STATE_DENIED };
        request.args = if allow { args } else { ArgsBinding::default() };
        // The answer must be in place before the task runs again: it re-enters the hook at once.
        // Only ever an update of the kernel's entry (`BPF_EXIST`), never a new one: the kernel
        // may have removed it meanwhile (its stop failed), and only the kernel makes entries
        // (its hold counters rely on that, see `jit_common::pending::held_slot`).
        match pending.insert(tid, request, BPF_EXIST) {
            Ok(()) => {}
            Err(MapError::SyscallError(err))
                if err.io_error.raw_os_error() == Some(libc::ENOENT) =>
            {
                return Err(BpfError::NotPending { tid, request_id });
            }
            Err(source) => return Err(map_err(map_names::PENDING, "update")(source)),
        }
        let pid = nix::unistd::Pid::from_raw(request.tgid.cast_signed());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).map_err(|source| {
            BpfError::Continue {
                tgid: request.tgid,
                source,
            }
        })
    }

    /// Forgets the pending entry of thread `tid` if it is still request `request_id`: for a
    /// task killed or gone while held (its entry would otherwise stay in the map forever).
    ///
    /// # Errors
    /// When the map cannot be read or updated.
    pub fn remove_pending(&mut self, tid: u32, request_id: u64) -> Result<(), BpfError> {
        let mut pending: HashMap<_, u32, PendingRequest> = self.open(map_names::PENDING)?;
        match pending.get(&tid, 0) {
            Ok(request) if request.request_id == request_id => match pending.remove(&tid) {
                Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
                Err(source) => Err(map_err(map_names::PENDING, "remove")(source)),
            },
            Ok(_) | Err(MapError::KeyNotFound) => Ok(()),
            Err(source) => Err(map_err(map_names::PENDING, "read")(source)),
        }
    }

    /// Approves every held action `key` describes for `duration` from now, enforced by the
    /// kernel's clock (the grant stops working at the deadline even when no daemon runs).
    ///
    /// # Errors
    /// When the clock or the map update fails.
    pub fn grant_for(
        &mut self,
        key: GrantKey,
        duration: std::time::Duration,
        rule_id: u32,
    ) -> Result<(), BpfError> {
        let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map_err(BpfError::Clock)?;
        let now_ns = u64::try_from(std::time::Duration::from(now).as_nanos()).unwrap_or(u64::MAX);
        let expires_ns =
            now_ns.saturating_add(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX));
        let mut grants: HashMap<_, GrantKey, GrantValue> = self.open(map_names::GRANTS)?;
        grants
            .insert(
                key,
                GrantValue {
                    expires_ns,
                    rule_id,
                    pad: 0,
                },
                0,
            )
            .map_err(map_err(map_names::GRANTS, "insert"))
    }

    /// Makes sure the kernel has a secret key for argument bindings (a fresh random one when it
    /// has none; a pinned one is kept, so approvals in flight across a restart stay valid) and
    /// hands it to [`crate::bind`].
    pub(super) fn bind_key(&mut self) -> Result<(), BpfError> {
        let mut map: Array<_, [u64; 2]> = self.open(map_names::BIND_KEY)?;
        let mut key = map
            .get(&0, 0)
            .map_err(map_err(map_names::BIND_KEY, "read"))?;
        if key == [0, 0] {
            key = crate::bind::random_key().map_err(BpfError::Random)?;
            map.set(0, key, 0)
                .map_err(map_err(map_names::BIND_KEY, "update"))?;
        }
        crate::bind::set_key(key);
        Ok(())
    }
}
