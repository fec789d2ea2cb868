//! The kernel handle: the one owner of jit's programs and maps (docs/ARCHITECTURE.md, I1).
//!
//! The [`Enforcer`] lives on its own OS thread (every map operation is a `bpf()` syscall, some
//! wait for an RCU grace period); every other component sends it a command, a closure over
//! `&mut Enforcer`, and gets the closure's typed result back on a oneshot channel. Commands run
//! one at a time in the order they were sent, so no two map updates interleave (the gap-free
//! rule-set switch and the scope rewrite rely on that) and there is no lock to order.
use std::thread;

use tokio::sync::{mpsc, oneshot};

use crate::bpf::Enforcer;

type Command = Box<dyn FnOnce(&mut Enforcer) + Send>;

/// The kernel thread has ended (it panicked, or the daemon is stopping).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the kernel handle has stopped")]
pub struct KernelGone;

/// A handle on the kernel thread; clones share it.
#[derive(Clone)]
pub struct KernelHandle {
    commands: mpsc::UnboundedSender<Command>,
}

impl KernelHandle {
    /// Moves `enforcer` onto a thread of its own. The thread ends when the last handle is
    /// dropped.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn spawn(mut enforcer: Enforcer) -> std::io::Result<Self> {
        let (commands, mut receiver) = mpsc::unbounded_channel::<Command>();
        thread::Builder::new()
            .name("jit-kernel".to_owned())
            .spawn(move || {
                while let Some(command) = receiver.blocking_recv() {
                    command(&mut enforcer);
                }
            })?;
        Ok(Self { commands })
    }

    fn send<T: Send + 'static>(
        &self,
        command: impl FnOnce(&mut Enforcer) -> T + Send + 'static,
    ) -> Result<oneshot::Receiver<T>, KernelGone> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Box::new(move |enforcer| {
                // The asker may have given up; the command ran either way.
                let _ = reply.send(command(enforcer));
            }))
            .map_err(|_| KernelGone)?;
        Ok(answer)
    }

    /// Runs `command` on the kernel thread and returns its result.
    ///
    /// # Errors
    /// [`KernelGone`] when the kernel thread has ended.
    pub async fn call<T: Send + 'static>(
        &self,
        command: impl FnOnce(&mut Enforcer) -> T + Send + 'static,
    ) -> Result<T, KernelGone> {
        self.send(command)?.await.map_err(|_| KernelGone)
    }
}
