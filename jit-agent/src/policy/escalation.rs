//! `[escalation]`: who can release a hold, and what happens when nobody does in time.
use std::time::Duration;

use toml::Spanned;

use super::{
    LoadOptions, UNRESOLVED_ID,
    error::FileErrors,
    model::{Account, Approvers, Escalation, Grant, Level, OnTimeout, Risk},
    raw::{RawApprovers, RawEscalation, RawLevel},
    values::{duration, duration_or, on_timeout},
};

/// Default of `[escalation] timeout`: long enough for a reviewer at their desk to react, short
/// enough that an unattended agent is not stuck for long.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_mins(5);

/// The escalation settings, with defaults for everything omitted (also for a missing section).
pub(super) fn escalation_of(
    errs: &mut FileErrors<'_>,
    raw: Option<&RawEscalation>,
    options: LoadOptions,
) -> Option<Escalation> {
    let before = errs.errors.len();
    let approvers = raw
        .and_then(|r| r.approvers.as_ref())
        .map(|a| approvers(errs, a.get_ref(), options.resolve_accounts))
        .unwrap_or_default();
    let timeout = raw
        .and_then(|r| r.timeout.as_ref())
        .map_or(Some(DEFAULT_TIMEOUT), |t| duration(errs, t, "timeout"));
    let on_timeout = raw
        .and_then(|r| r.on_timeout.as_ref())
        .map_or(Some(OnTimeout::Deny), |t| on_timeout(errs, t));
    let grant = raw
        .and_then(|r| r.grant.as_ref())
        .map_or(Some(Grant::Once), |g| {
            if g.get_ref() == "once" {
                Some(Grant::Once)
            } else {
                duration_or(errs, g, "grant", "\"once\" or a duration").map(Grant::For)
            }
        });
    let required = match raw.and_then(|r| r.required_approvals.as_ref()) {
        None => Some(1),
        Some(n) => required_approvals(errs, n, Some(&approvers)),
    };
    let mut levels = Vec::new();
    if let Some(raw) = raw {
        for (risk, level) in [
            (Risk::Low, &raw.low),
            (Risk::Medium, &raw.medium),
            (Risk::High, &raw.high),
            (Risk::Critical, &raw.critical),
        ] {
            if let Some(level) = level {
                levels.push((
                    risk,
                    level_of(errs, level, &approvers, required.unwrap_or(1), options),
                ));
            }
        }
    }
    let max_grant = raw
        .and_then(|r| r.max_grant.as_ref())
        .map(|m| (duration(errs, m, "max_grant"), m));
    // The default scope must itself be allowed.
    if let (Some((Some(max), max_at)), Some(Grant::For(grant))) = (&max_grant, &grant)
        && grant > max
    {
        let at = raw
            .and_then(|r| r.grant.as_ref())
            .map_or_else(|| max_at.span(), Spanned::span);
        errs.at(
            &at,
            format!(
                "`grant` is {}, longer than `max_grant` ({})",
                humantime::format_duration(*grant),
                humantime::format_duration(*max)
            ),
        );
    }
    (errs.errors.len() == before).then(|| Escalation {
        approvers,
        timeout: timeout.unwrap_or(DEFAULT_TIMEOUT),
        on_timeout: on_timeout.unwrap_or(OnTimeout::Deny),
        grant: grant.unwrap_or(Grant::Once),
        required_approvals: required.unwrap_or(1),
        self_approval: raw
            .and_then(|r| r.self_approval.as_ref())
            .is_some_and(|s| *s.get_ref()),
        max_grant: max_grant.and_then(|(m, _)| m),
        levels,
    })
}

/// `[escalation.<risk>]`; its quorum is checked against its own approvers, else the agent's.
fn level_of(
    errs: &mut FileErrors<'_>,
    raw: &Spanned<RawLevel>,
    agent_approvers: &Approvers,
    agent_quorum: u32,
    options: LoadOptions,
) -> Level {
    let raw = raw.get_ref();
    let own = raw.approvers.as_ref().map(|a| {
        let list = approvers(errs, a.get_ref(), options.resolve_accounts);
        if list.is_empty() {
            errs.at(
                &a.span(),
                "`approvers` lists nobody: leave it out to keep the agent's",
            );
        } else if raw.required_approvals.is_none()
            && list.groups.is_empty()
            && agent_quorum as usize > list.users.len()
        {
            errs.at(
                &a.span(),
                format!(
                    "this level needs {agent_quorum} approvals (the agent's \
                     `required_approvals`), but its approvers list only {} user(s) and no \
                     group: no hold could ever be approved; set `required_approvals` here",
                    list.users.len()
                ),
            );
        }
        list
    });
    Level {
        required_approvals: raw.required_approvals.as_ref().and_then(|n| {
            required_approvals(errs, n, Some(own.as_ref().unwrap_or(agent_approvers)))
        }),
        approvers: own,
        timeout: raw
            .timeout
            .as_ref()
            .and_then(|t| duration(errs, t, "timeout")),
        on_timeout: raw.on_timeout.as_ref().and_then(|t| on_timeout(errs, t)),
    }
}

/// A `required_approvals` value, checked against the approvers who would give them (`None`
/// when those are unknown because of another error: only the lower bound is checked then).
pub(super) fn required_approvals(
    errs: &mut FileErrors<'_>,
    n: &Spanned<i64>,
    approvers: Option<&Approvers>,
) -> Option<u32> {
    let value = *n.get_ref();
    let Some(count) = u32::try_from(value).ok().filter(|&c| c >= 1) else {
        errs.at(
            &n.span(),
            format!("`required_approvals` must be at least 1, not {value}"),
        );
        return None;
    };
    // Group membership changes after load, so only a list of users alone gives a bound.
    if let Some(approvers) = approvers
        && approvers.groups.is_empty()
        && count as usize > approvers.users.len()
    {
        errs.at(
            &n.span(),
            format!(
                "`required_approvals` is {count}, but only {} approver user(s) and no group are \
                 listed: no hold could ever be approved",
                approvers.users.len()
            ),
        );
        return None;
    }
    Some(count)
}

/// Resolves approvers against the host's databases (NSS), so a typo is caught at load time
/// rather than when a hold waits for a reviewer who does not exist.
/// Without `resolve`, names are only checked for duplicates and get [`UNRESOLVED_ID`].
pub(super) fn approvers(errs: &mut FileErrors<'_>, raw: &RawApprovers, resolve: bool) -> Approvers {
    let mut out = Approvers::default();
    for user in &raw.users {
        let name = user.get_ref();
        if out.users.iter().any(|u| u.name == *name) {
            errs.at(
                &user.span(),
                format!("approver user `{name}` is listed twice"),
            );
            continue;
        }
        if !resolve {
            out.users.push(Account {
                name: name.clone(),
                id: UNRESOLVED_ID,
            });
            continue;
        }
        match nix::unistd::User::from_name(name) {
            Ok(Some(u)) => out.users.push(Account {
                name: name.clone(),
                id: u.uid.as_raw(),
            }),
            Ok(None) => errs.at(&user.span(), format!("unknown user `{name}`")),
            Err(e) => errs.at(&user.span(), format!("cannot look up user `{name}`: {e}")),
        }
    }
    for group in &raw.groups {
        let name = group.get_ref();
        if out.groups.iter().any(|g| g.name == *name) {
            errs.at(
                &group.span(),
                format!("approver group `{name}` is listed twice"),
            );
            continue;
        }
        if !resolve {
            out.groups.push(Account {
                name: name.clone(),
                id: UNRESOLVED_ID,
            });
            continue;
        }
        match nix::unistd::Group::from_name(name) {
            Ok(Some(g)) => out.groups.push(Account {
                name: name.clone(),
                id: g.gid.as_raw(),
            }),
            Ok(None) => errs.at(&group.span(), format!("unknown group `{name}`")),
            Err(e) => errs.at(&group.span(), format!("cannot look up group `{name}`: {e}")),
        }
    }
    out
}
