//! Unit tests of the pieces; `tests/policy_model.rs` checks the whole against a reference.
use core::mem::{align_of, offset_of, size_of};
use std::{string::ToString, vec::Vec};

use super::*;

const AGENT: u32 = 0x0102_0304;

fn rule(pattern: &str) -> (PolicyKey, RuleShape) {
    PolicyKey::for_rule(AGENT, Op::Write, pattern.as_bytes()).expect("valid pattern")
}

fn rule_err(pattern: &[u8]) -> PatternError {
    PolicyKey::for_rule(AGENT, Op::Write, pattern).expect_err("invalid pattern")
}

fn lookup(path: &[u8]) -> PolicyKey {
    PolicyKey::for_lookup(AGENT, Op::Write, path)
}

fn shape(literal_len: u16, pattern_len: u16, wildcard_component: Option<u32>) -> RuleShape {
    RuleShape {
        literal_len,
        pattern_len,
        wildcard_component,
    }
}

fn value(decision: Decision, rule_id: u32, literal_len: u16, pattern_len: u16) -> PolicyValue {
    shape(literal_len, pattern_len, None).value(decision, rule_id)
}

/// The wildcard key of `path`, or `None`; `out` starts as garbage to catch bytes left unwritten.
fn wildcard(path: &[u8], component: u32) -> Option<PolicyKey> {
    let mut out = PolicyKey {
        prefixlen: 0xdead,
        data: [0xaa; KEY_DATA_LEN],
    };
    wildcard_key(&lookup(path), component, &mut out).then_some(out)
}

#[test]
fn layouts_match_the_kernel_and_aya() {
    assert_eq!(size_of::<PolicyKey>(), 4 + KEY_DATA_LEN);
    assert_eq!(align_of::<PolicyKey>(), 4);
    assert_eq!(offset_of!(PolicyKey, data), 4);
    assert_eq!(size_of::<PolicyValue>(), 12);
    assert_eq!(offset_of!(PolicyValue, rule_id), 4);
    assert_eq!(offset_of!(PolicyValue, literal_len), 8);
    assert_eq!(offset_of!(PolicyValue, pattern_len), 10);
    assert_eq!(size_of::<AgentConfig>(), 12);
    assert_eq!(offset_of!(AgentConfig, wildcard_components), 4);
    assert_eq!(offset_of!(AgentConfig, ruleset), 8);
    assert_eq!(KEY_HEADER_LEN + PATH_CAPACITY, KEY_DATA_LEN);
    assert_eq!(PATH_CAPACITY, 251);
}

#[test]
fn op_conversions_round_trip() {
    let names = [
        "exec", "write", "create", "unlink", "rename", "truncate", "mkdir", "rmdir", "link",
        "symlink", "chmod", "chown", "device", "metadata",
    ];
    assert_eq!(names.len(), Op::ALL.len());
    for (i, (op, name)) in Op::ALL.into_iter().zip(names).enumerate() {
        assert_eq!(op as usize, i);
        assert_eq!(op.name(), name);
        assert_eq!(Op::from_name(name), Some(op));
        assert_eq!(Op::from_u8(op as u8), Some(op));
    }
    assert_eq!(Op::from_u8(14), None);
    assert_eq!(Op::from_u8(255), None);
    assert_eq!(Op::from_name("Exec"), None);
    assert_eq!(Op::from_name(""), None);
}

#[test]
fn decision_and_mode_conversions_round_trip() {
    for (i, (d, name)) in Decision::ALL
        .into_iter()
        .zip(["allow", "audit", "hold", "deny"])
        .enumerate()
    {
        assert_eq!(d as usize, i);
        assert_eq!(d.name(), name);
        assert_eq!(Decision::from_name(name), Some(d));
        assert_eq!(Decision::from_u8(d as u8), Some(d));
        assert_eq!(Decision::from_u8_or_deny(d as u8), d);
    }
    assert_eq!(Decision::from_u8(4), None);
    assert_eq!(Decision::from_u8_or_deny(4), Decision::Deny);
    assert_eq!(Decision::from_u8_or_deny(255), Decision::Deny);
    assert_eq!(Decision::from_name("block"), None);

    for (m, name) in [(Mode::Enforce, "enforce"), (Mode::Shadow, "shadow")] {
        assert_eq!(m.name(), name);
        assert_eq!(Mode::from_name(name), Some(m));
        assert_eq!(Mode::from_u8(m as u8), Some(m));
    }
    assert_eq!((Mode::Enforce as u8, Mode::Shadow as u8), (0, 1));
    assert_eq!(Mode::from_u8(2), None);
    assert_eq!(Mode::from_name("audit"), None);
}

#[test]
fn severity_is_deny_hold_audit_allow_and_matches_the_numbers() {
    use Decision::{Allow, Audit, Deny, Hold};
    assert!(Deny.severity() > Hold.severity());
    assert!(Hold.severity() > Audit.severity());
    assert!(Audit.severity() > Allow.severity());
    for d in Decision::ALL {
        assert_eq!(d.severity(), d as u8);
    }
}

#[test]
fn exact_rule_key_layout() {
    let (key, s) = rule("/etc/passwd");
    assert_eq!(s, shape(12, 12, None));
    assert_eq!(key.prefixlen, 8 * (5 + 11 + 1));
    assert_eq!(&key.data[..5], &[1, 2, 3, 4, Op::Write as u8]);
    assert_eq!(&key.data[5..16], b"/etc/passwd");
    assert_eq!(key.data[16], 0);
    // The exact rule's key is the lookup key of its path.
    assert_eq!(key, lookup(b"/etc/passwd"));
    assert_eq!(key.significant(), lookup(b"/etc/passwd").significant());
}

#[test]
fn directory_rule_key_layout() {
    let (key, s) = rule("/srv/work/");
    assert_eq!(s, shape(10, 10, None));
    assert_eq!(key.prefixlen, 8 * (5 + 10));
    assert_eq!(&key.data[5..15], b"/srv/work/");
    assert_eq!(key.significant().len(), 15);
}

#[test]
fn root_is_a_directory_rule() {
    let (key, s) = rule("/");
    assert_eq!(s, shape(1, 1, None));
    assert_eq!(key.prefixlen, 8 * 6);
    assert_eq!(key.data[5], b'/');
}

#[test]
fn wildcard_rule_shapes() {
    let (key, s) = rule("/home/*/.ssh/");
    assert_eq!(s, shape(6, 13, Some(1)));
    assert_eq!(s.wildcard_mask(), 0b10);
    assert_eq!(&key.data[5..18], b"/home/*/.ssh/");
    assert_eq!(key.prefixlen, 8 * (5 + 13));

    assert_eq!(rule("/home/*").1, shape(6, 8, Some(1)));
    assert_eq!(rule("/*/").1, shape(1, 3, Some(0)));
    assert_eq!(rule("/*").1, shape(1, 3, Some(0)));
    assert_eq!(rule("/a/b").1.wildcard_mask(), 0);
    // The wildcard rule is more specific than the directory it lies under.
    assert!(
        rule("/home/*/.ssh/")
            .1
            .value(Decision::Allow, 1)
            .outranks(&rule("/home/").1.value(Decision::Deny, 2))
    );
}

#[test]
fn specificity_prefers_exact_over_its_directory() {
    // `/a/` and the exact `/a/`-less sibling: an exact rule counts its terminator.
    assert_eq!(rule("/a/b").1, shape(5, 5, None));
    assert_eq!(rule("/a/b/").1, shape(5, 5, None));
    assert_eq!(rule("/a/").1, shape(3, 3, None));
}

#[test]
fn validation_errors() {
    use PatternError::*;
    assert_eq!(rule_err(b""), NotAbsolute);
    assert_eq!(rule_err(b"etc/passwd"), NotAbsolute);
    assert_eq!(rule_err(b"*/x"), NotAbsolute);
    assert_eq!(rule_err(b"//"), EmptyComponent);
    assert_eq!(rule_err(b"/a//b"), EmptyComponent);
    assert_eq!(rule_err(b"/a//"), EmptyComponent);
    assert_eq!(rule_err(b"//a"), EmptyComponent);
    assert_eq!(rule_err(b"/a/./b"), DotComponent);
    assert_eq!(rule_err(b"/a/../b"), DotComponent);
    assert_eq!(rule_err(b"/.."), DotComponent);
    assert_eq!(rule_err(b"/a/./"), DotComponent);
    assert_eq!(rule_err(b"/a\0b"), NulByte);
    assert_eq!(rule_err(b"/a/\0/"), NulByte);
    assert_eq!(rule_err(b"/tmp/*.log"), PartialWildcard);
    assert_eq!(rule_err(b"/tmp/a*"), PartialWildcard);
    assert_eq!(rule_err(b"/tmp/*a*/"), PartialWildcard);
    assert_eq!(rule_err(b"/a/**/b"), RecursiveWildcard);
    assert_eq!(rule_err(b"/a/**"), RecursiveWildcard);
    assert_eq!(rule_err(b"/*/*/"), MultipleWildcards);
    assert_eq!(rule_err(b"/a/*/b/*"), MultipleWildcards);

    // `.` inside a component, `...` and dot files are ordinary names.
    for ok in ["/a/.b", "/a/.../", "/.ssh/", "/a.b/c"] {
        assert!(
            PolicyKey::for_rule(AGENT, Op::Exec, ok.as_bytes()).is_ok(),
            "{ok}"
        );
    }
}

#[test]
fn wildcards_only_in_the_first_32_components() {
    let deep = |star_at: usize| {
        let mut p = Vec::new();
        for i in 0..=star_at {
            p.extend_from_slice(if i == star_at { b"/*" } else { b"/a" });
        }
        p
    };
    let (_, s) = PolicyKey::for_rule(AGENT, Op::Exec, &deep(31)).unwrap();
    assert_eq!(s.wildcard_component, Some(31));
    assert_eq!(s.wildcard_mask(), 1 << 31);
    assert_eq!(
        rule_err(&deep(32)),
        PatternError::WildcardTooDeep { component: 32 }
    );
}

#[test]
fn length_limits() {
    let path = |len: usize, directory: bool| {
        let mut p = std::vec![b'a'; len];
        p[0] = b'/';
        if directory {
            p[len - 1] = b'/';
        }
        p
    };
    let (key, s) = PolicyKey::for_rule(AGENT, Op::Exec, &path(250, false)).unwrap();
    assert_eq!((s.literal_len, s.pattern_len), (251, 251));
    assert_eq!(key.prefixlen, 8 * 256);
    assert_eq!(key.data[255], 0);
    assert_eq!(
        rule_err(&path(251, false)),
        PatternError::TooLong { len: 251, max: 250 }
    );
    let (key, s) = PolicyKey::for_rule(AGENT, Op::Exec, &path(251, true)).unwrap();
    assert_eq!((s.literal_len, s.pattern_len), (251, 251));
    assert_eq!(key.prefixlen, 8 * 256);
    assert_eq!(key.data[255], b'/');
    assert_eq!(
        rule_err(&path(252, true)),
        PatternError::TooLong { len: 252, max: 251 }
    );
}

#[test]
fn error_messages_say_what_is_wrong() {
    let msg = PatternError::PartialWildcard.to_string();
    assert!(
        msg.contains("partial-component wildcards are not supported"),
        "{msg}"
    );
    let msg = PatternError::TooLong { len: 300, max: 250 }.to_string();
    assert!(msg.contains("300") && msg.contains("250"), "{msg}");
    let msg = PatternError::WildcardTooDeep { component: 40 }.to_string();
    assert!(msg.contains("40") && msg.contains("31"), "{msg}");
}

#[test]
fn lookup_keys_terminate_short_paths_and_truncate_long_ones() {
    let key = lookup(b"/");
    assert_eq!(key.prefixlen, 8 * 7);
    assert_eq!(&key.data[5..7], b"/\0");

    let mut p = std::vec![b'x'; 250];
    p[0] = b'/';
    let key = lookup(&p);
    assert_eq!(
        key.prefixlen,
        8 * 256,
        "250 bytes and the terminator fill the key"
    );
    assert_eq!(key.data[255], 0);

    for len in [251, 252, 300, 4095] {
        let mut p = std::vec![b'y'; len];
        p[0] = b'/';
        let key = lookup(&p);
        assert_eq!(key.prefixlen, 8 * 256, "{len}");
        assert_eq!(&key.data[5..], &p[..251], "first 251 bytes, no terminator");
    }
}

#[test]
fn finish_lookup_equals_for_lookup() {
    for len in [1, 10, 249, 250, 251, 260] {
        let mut p = std::vec![b'z'; len];
        p[0] = b'/';
        // The buffer holds garbage past the path, as a per-CPU buffer would.
        let mut key = PolicyKey {
            prefixlen: 7,
            data: [0xee; KEY_DATA_LEN],
        };
        for (slot, b) in key.path_mut().iter_mut().zip(&p) {
            *slot = *b;
        }
        key.finish_lookup(AGENT, Op::Write, len);
        assert_eq!(key, lookup(&p), "{len}");
    }
}

#[test]
fn keys_compare_by_significant_bytes_only() {
    let a = lookup(b"/a");
    let mut b = a;
    b.data[200] = 9;
    assert_eq!(a, b);
    b.data[6] = b'b';
    assert_ne!(a, b);
    let mut c = a;
    c.prefixlen -= 8;
    assert_ne!(a, c);
}

#[test]
fn wildcard_keys_replace_one_component() {
    let path = b"/home/alice/.ssh/id_rsa";
    assert_eq!(wildcard(path, 0), Some(lookup(b"/*/alice/.ssh/id_rsa")));
    assert_eq!(wildcard(path, 1), Some(lookup(b"/home/*/.ssh/id_rsa")));
    assert_eq!(wildcard(path, 2), Some(lookup(b"/home/alice/*/id_rsa")));
    assert_eq!(wildcard(path, 3), Some(lookup(b"/home/alice/.ssh/*")));
    assert_eq!(wildcard(path, 4), None, "no such component");
    assert_eq!(wildcard(path, 31), None);
    assert_eq!(wildcard(path, 32), None, "beyond the mask");
    assert_eq!(wildcard(path, u32::MAX), None);
    // Header copied.
    assert_eq!(
        &wildcard(path, 1).unwrap().data[..5],
        &[1, 2, 3, 4, Op::Write as u8]
    );
    // One-byte component.
    assert_eq!(wildcard(b"/a/b", 1), Some(lookup(b"/a/*")));
    assert_eq!(wildcard(b"/a/*", 1), Some(lookup(b"/a/*")));
}

#[test]
fn wildcard_keys_need_a_non_empty_component() {
    assert_eq!(wildcard(b"/", 0), None);
    assert_eq!(wildcard(b"/a//b", 1), None);
    assert_eq!(wildcard(b"/a//b", 2), Some(lookup(b"/a//*")));
    assert_eq!(wildcard(b"/a/", 1), None);
    assert_eq!(wildcard(b"relative/path", 0), None);
    assert_eq!(wildcard(b"", 0), None);
    // A key with prefix length 0 (never filled in).
    let mut out = PolicyKey::EMPTY;
    assert!(!wildcard_key(&PolicyKey::EMPTY, 0, &mut out));
}

#[test]
fn wildcard_keys_of_long_paths() {
    // 300 bytes: `/d/` + 200 x + `/` + 96 y; the key holds 251 bytes.
    let mut p = b"/d/".to_vec();
    p.extend(std::iter::repeat_n(b'x', 200));
    p.push(b'/');
    p.extend(std::iter::repeat_n(b'y', 96));
    assert_eq!(p.len(), 300);

    // Component 1 (the x's) is complete within the key: replaced, still unterminated.
    let key = wildcard(&p, 1).unwrap();
    let mut expected = b"/d/*/".to_vec();
    expected.extend(std::iter::repeat_n(b'y', 251 - 204));
    assert_eq!(key.prefixlen, prefix_bits(5 + expected.len()));
    assert_eq!(&key.data[5..5 + expected.len()], &expected[..]);

    // Component 2 (the y's) is cut off by the capacity: nothing to look up.
    assert_eq!(wildcard(&p, 2), None);
    // Component 0 is complete.
    let key = wildcard(&p, 0).unwrap();
    assert_eq!(&key.data[5..9], b"/*/x");
    assert_eq!(key.prefixlen, 8 * 256);

    // A path of exactly 250 bytes keeps its terminator through the replacement.
    let mut p = b"/d/".to_vec();
    p.extend(std::iter::repeat_n(b'x', 247));
    let key = wildcard(&p, 1).unwrap();
    assert_eq!(key, lookup(b"/d/*"));
}

#[test]
fn better_prefers_specific_then_severe_then_low_rule_id() {
    use Decision::{Allow, Audit, Deny, Hold};
    let b = |a, b| better(Some(a), Some(b)).unwrap();
    // Longer literal prefix wins even against a more severe decision.
    let specific = value(Allow, 9, 10, 10);
    let general = value(Deny, 1, 5, 40);
    assert_eq!(b(specific, general), specific);
    assert_eq!(b(general, specific), specific);
    // Same literal prefix: longer pattern wins.
    let long = value(Allow, 9, 5, 12);
    let short = value(Deny, 1, 5, 11);
    assert_eq!(b(long, short), long);
    assert_eq!(b(short, long), long);
    // Same specificity: the more severe decision.
    for (hi, lo) in [(Deny, Hold), (Hold, Audit), (Audit, Allow), (Deny, Allow)] {
        let (h, l) = (value(hi, 9, 5, 5), value(lo, 1, 5, 5));
        assert_eq!(b(h, l), h);
        assert_eq!(b(l, h), h);
    }
    // Then the lower rule id.
    let (one, two) = (value(Hold, 1, 5, 5), value(Hold, 2, 5, 5));
    assert_eq!(b(one, two), one);
    assert_eq!(b(two, one), one);
    // A corrupt decision ranks as deny.
    let corrupt = PolicyValue {
        decision: 200,
        ..value(Allow, 3, 5, 5)
    };
    assert_eq!(b(corrupt, value(Hold, 1, 5, 5)), corrupt);
    assert_eq!(b(value(Deny, 1, 5, 5), corrupt), value(Deny, 1, 5, 5));
    // Missing sides.
    assert_eq!(better(None, Some(one)), Some(one));
    assert_eq!(better(Some(one), None), Some(one));
    assert_eq!(better(None, None), None);
}

#[test]
fn merge_keeps_the_severe_decision_then_the_low_rule_id() {
    use Decision::{Allow, Audit, Deny};
    let (allow, deny) = (value(Allow, 1, 5, 5), value(Deny, 2, 5, 5));
    assert_eq!(merge(allow, deny), deny);
    assert_eq!(merge(deny, allow), deny);
    let (a3, a7) = (value(Audit, 3, 5, 5), value(Audit, 7, 5, 5));
    assert_eq!(merge(a3, a7), a3);
    assert_eq!(merge(a7, a3), a3);
}

#[test]
fn verdict_in_enforce_mode_applies_the_decision() {
    let cfg = AgentConfig::new(Decision::Hold, Mode::Enforce, 0);
    for d in Decision::ALL {
        let v = verdict(Some(value(d, 4, 1, 1)), &cfg);
        assert_eq!((v.decision, v.enforced, v.rule_id), (d, d, 4));
    }
    let v = verdict(None, &cfg);
    assert_eq!(
        v,
        Verdict {
            decision: Decision::Hold,
            enforced: Decision::Hold,
            rule_id: DEFAULT_RULE_ID
        }
    );
}

#[test]
fn verdict_in_shadow_mode_allows_and_reports() {
    let cfg = AgentConfig::new(Decision::Deny, Mode::Shadow, 0);
    for (d, enforced) in [
        (Decision::Allow, Decision::Allow),
        (Decision::Audit, Decision::Audit),
        (Decision::Hold, Decision::Audit),
        (Decision::Deny, Decision::Audit),
    ] {
        let v = verdict(Some(value(d, 4, 1, 1)), &cfg);
        assert_eq!((v.decision, v.enforced, v.rule_id), (d, enforced, 4));
    }
    let v = verdict(None, &cfg);
    assert_eq!(
        (v.decision, v.enforced, v.rule_id),
        (Decision::Deny, Decision::Audit, 0)
    );
    let cfg = AgentConfig::new(Decision::Allow, Mode::Shadow, 0);
    assert_eq!(verdict(None, &cfg).enforced, Decision::Allow);
}

#[test]
fn corrupt_values_fail_closed() {
    let corrupt_rule = PolicyValue {
        decision: 17,
        ..value(Decision::Allow, 5, 1, 1)
    };
    let cfg = AgentConfig::new(Decision::Allow, Mode::Enforce, 0);
    let v = verdict(Some(corrupt_rule), &cfg);
    assert_eq!(
        (v.decision, v.enforced, v.rule_id),
        (Decision::Deny, Decision::Deny, 5)
    );

    let corrupt_default = AgentConfig {
        default_decision: 4,
        ..cfg
    };
    assert_eq!(verdict(None, &corrupt_default), Verdict::fail_closed());

    let corrupt_mode = AgentConfig {
        mode: 2,
        ..AgentConfig::new(Decision::Deny, Mode::Shadow, 0)
    };
    let v = verdict(None, &corrupt_mode);
    assert_eq!(v.enforced, Decision::Deny, "unknown mode enforces");
    let v = verdict(Some(value(Decision::Hold, 2, 1, 1)), &corrupt_mode);
    assert_eq!(v.enforced, Decision::Hold);
}

#[test]
fn evaluate_looks_up_one_wildcard_key_per_mask_bit() {
    use core::cell::RefCell;
    let seen = RefCell::new(Vec::new());
    let (home_rule, shape) = rule("/home/*/.ssh/");
    let deny = shape.value(Decision::Deny, 1);
    let lookup_fn = |k: &PolicyKey| {
        seen.borrow_mut().push(*k);
        // Stands in for the trie: only the wildcard rule is stored.
        (k.significant().starts_with(home_rule.significant())).then_some(deny)
    };
    let key = lookup(b"/home/bob/.ssh/config");
    let mut scratch = PolicyKey::EMPTY;
    // Bits 1 and 9: component 9 does not exist, so two lookups.
    let cfg = AgentConfig::new(Decision::Allow, Mode::Enforce, (1 << 1) | (1 << 9));
    let v = evaluate(lookup_fn, &key, &cfg, &mut scratch);
    assert_eq!(
        v,
        Verdict {
            decision: Decision::Deny,
            enforced: Decision::Deny,
            rule_id: 1
        }
    );
    assert_eq!(*seen.borrow(), [key, lookup(b"/home/*/.ssh/config")]);

    // Without the bit the wildcard rule is never consulted.
    seen.borrow_mut().clear();
    let cfg = AgentConfig::new(Decision::Allow, Mode::Enforce, 0);
    assert_eq!(
        evaluate(lookup_fn, &key, &cfg, &mut scratch).decision,
        Decision::Allow
    );
    assert_eq!(seen.borrow().len(), 1);
}

#[test]
fn no_match_is_never_a_stored_value_and_always_loses() {
    for d in Decision::ALL {
        let v = value(d, 1, 1, 1);
        assert!(v.is_match(), "{d:?} compiles to a match");
        assert_eq!(v.best_of(PolicyValue::NO_MATCH), v);
        assert_eq!(PolicyValue::NO_MATCH.best_of(v), v);
    }
    assert!(!PolicyValue::NO_MATCH.is_match());
    assert_eq!(PolicyValue::NO_MATCH.rule_id, DEFAULT_RULE_ID);
}
