//! The agent history: each agent's most recent denials and holds, for the agent socket
//! (`jitctl agent why`). One task owns it; the event reader sends it the records it reads, the
//! agent socket asks for one agent's. Bounded: [`MAX_LAST`] records per agent id, and agent
//! ids come from the kernel's events (at most one per installed agent; records of agents no
//! longer in the policy age out as the map is capped at [`MAX_AGENTS`]).
use std::collections::{BTreeMap, VecDeque};

use tokio::sync::{mpsc, oneshot};

use crate::{
    agent_api::{AgentRecord, MAX_LAST},
    audit::record::KernelRecord,
};

/// Agents whose history is kept; the one with the oldest newest record goes first.
const MAX_AGENTS: usize = 1024;

enum Command {
    Record(u32, AgentRecord),
    Recent {
        agent_id: u32,
        last: usize,
        reply: oneshot::Sender<Vec<AgentRecord>>,
    },
}

/// The history's clients. Clones share it.
#[derive(Clone)]
pub struct History {
    commands: mpsc::UnboundedSender<Command>,
}

impl History {
    /// Starts the task that owns the history.
    #[must_use]
    pub fn spawn() -> Self {
        let (commands, mut receiver) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut agents: BTreeMap<u32, (u64, VecDeque<AgentRecord>)> = BTreeMap::new();
            let mut counter = 0u64;
            while let Some(command) = receiver.recv().await {
                match command {
                    Command::Record(agent_id, record) => {
                        counter += 1;
                        if !agents.contains_key(&agent_id)
                            && agents.len() >= MAX_AGENTS
                            && let Some(stale) = agents
                                .iter()
                                .min_by_key(|(_, (seen, _))| *seen)
                                .map(|(id, _)| *id)
                        {
                            agents.remove(&stale);
                        }
                        let (seen, records) = agents.entry(agent_id).or_default();
                        *seen = counter;
                        if records.len() >= MAX_LAST {
                            records.pop_back();
                        }
                        records.push_front(record);
                    }
                    Command::Recent {
                        agent_id,
                        last,
                        reply,
                    } => {
                        let records = agents
                            .get(&agent_id)
                            .map(|(_, r)| r.iter().take(last).cloned().collect())
                            .unwrap_or_default();
                        let _ = reply.send(records);
                    }
                }
            }
        });
        Self { commands }
    }

    /// Keeps `record` when it is a denial the kernel enforced or a hold, with the rule's hint.
    pub fn observe(&self, record: &KernelRecord, hint: Option<String>) {
        if let Some(entry) = agent_record(record, hint) {
            let _ = self.commands.send(Command::Record(record.agent_id, entry));
        }
    }

    /// The `last` most recent records of agent `agent_id`, newest first.
    pub async fn recent(&self, agent_id: u32, last: usize) -> Vec<AgentRecord> {
        let (reply, answer) = oneshot::channel();
        if self
            .commands
            .send(Command::Recent {
                agent_id,
                last,
                reply,
            })
            .is_err()
        {
            return Vec::new();
        }
        answer.await.unwrap_or_default()
    }
}

/// What the agent is told of `record`: only denials it felt (`enforced` deny: not a shadow-mode
/// "would deny") and holds.
fn agent_record(record: &KernelRecord, hint: Option<String>) -> Option<AgentRecord> {
    let kind = if record.kind == "hold" {
        "hold"
    } else if record.enforced == "deny" {
        "deny"
    } else {
        return None;
    };
    let path = match record.path_hex.as_deref().and_then(crate::text::from_hex) {
        Some(bytes) => crate::text::escape_bytes(&bytes).into_owned(),
        None => crate::text::escape(&record.path).into_owned(),
    };
    Some(AgentRecord {
        at: format!("{:.0}", jiff::Timestamp::now()),
        kind: kind.to_owned(),
        op: record.op.clone(),
        path,
        rule: record.rule.clone(),
        hint,
        request_id: (kind == "hold").then_some(record.request_id).flatten(),
        pid: record.tgid,
    })
}
