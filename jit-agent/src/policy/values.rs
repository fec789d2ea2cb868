//! Single TOML values every section shares: named choices (`decision`, `on_timeout`) and
//! durations, checked with errors at their `FILE:LINE:COL`. A leaf: the section parsers
//! ([`super::parse`], [`super::escalation`]) use it and it uses neither.
use std::time::Duration;

use jit_common::policy::Decision;
use toml::Spanned;

use super::{error::FileErrors, model::OnTimeout};

pub(super) fn named<T, const N: usize>(
    errs: &mut FileErrors<'_>,
    value: &Spanned<String>,
    what: &str,
    from_name: impl Fn(&str) -> Option<T>,
    valid: [&str; N],
) -> Option<T> {
    let found = from_name(value.get_ref());
    if found.is_none() {
        errs.at(
            &value.span(),
            format!(
                "unknown {what} `{}`: expected one of {}",
                value.get_ref(),
                valid.join(", ")
            ),
        );
    }
    found
}

pub(super) fn decision(errs: &mut FileErrors<'_>, value: &Spanned<String>) -> Option<Decision> {
    named(
        errs,
        value,
        "decision",
        Decision::from_name,
        Decision::ALL.map(Decision::name),
    )
}

pub(super) fn on_timeout(errs: &mut FileErrors<'_>, value: &Spanned<String>) -> Option<OnTimeout> {
    named(
        errs,
        value,
        "on_timeout",
        OnTimeout::from_name,
        OnTimeout::ALL.map(OnTimeout::name),
    )
}

/// A positive duration such as `30s`, `5m` or `1h30m`.
pub(super) fn duration(
    errs: &mut FileErrors<'_>,
    value: &Spanned<String>,
    what: &str,
) -> Option<Duration> {
    duration_or(errs, value, what, "a duration")
}

/// [`duration`], saying what else `expected` the value could have been in the error.
pub(super) fn duration_or(
    errs: &mut FileErrors<'_>,
    value: &Spanned<String>,
    what: &str,
    expected: &str,
) -> Option<Duration> {
    match humantime::parse_duration(value.get_ref()) {
        Ok(d) if d.is_zero() => {
            errs.at(&value.span(), format!("`{what}` must be longer than 0s"));
            None
        }
        Ok(d) => Some(d),
        Err(e) => {
            errs.at(
                &value.span(),
                format!(
                    "`{what}` = \"{}\" is not {expected} like \"30s\", \"5m\" or \"1h30m\" \
                     ({e})",
                    value.get_ref()
                ),
            );
            None
        }
    }
}
