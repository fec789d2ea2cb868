use jiff::{SignedDuration, Timestamp, tz::TimeZone};

use super::*;

fn when(activity: Activity, window: &str, tz: &str) -> When {
    When {
        activity,
        window: TimeWindow::parse(window).unwrap(),
        tz_name: tz.to_owned(),
        tz: TimeZone::get(tz).unwrap(),
    }
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn dt(s: &str) -> DateTime {
    s.parse().unwrap()
}

#[test]
fn parses_the_documented_forms() {
    for (text, shown) in [
        ("Mon-Fri 08:00-18:00", "Mon,Tue,Wed,Thu,Fri 08:00-18:00"),
        ("Sat,Sun 00:00-24:00", "Sat,Sun 00:00-24:00"),
        (
            "Mon-Sun 22:00-06:00",
            "Mon,Tue,Wed,Thu,Fri,Sat,Sun 22:00-06:00",
        ),
        ("Wed 09:00-10:00", "Wed 09:00-10:00"),
        ("  fri-mon 22:00-00:00 ", "Mon,Fri,Sat,Sun 22:00-24:00"),
        ("Mon, Wed-Thu 07:30-08:15", "Mon,Wed,Thu 07:30-08:15"),
    ] {
        assert_eq!(
            TimeWindow::parse(text).unwrap().to_string(),
            shown,
            "{text}"
        );
    }
}

#[test]
fn rejects_malformed_windows() {
    for (text, err) in [
        ("", WindowError::Shape),
        ("Mon-Fri", WindowError::Shape),
        ("Mon-Fri 08:00", WindowError::Shape),
        ("Mon-Fry 08:00-18:00", WindowError::Day("Fry".into())),
        ("Mon,,Tue 08:00-18:00", WindowError::Day(String::new())),
        ("Mon 8:00-18:00", WindowError::Time("8:00".into())),
        ("Mon 08:00-18:60", WindowError::Time("18:60".into())),
        ("Mon 24:00-18:00", WindowError::Time("24:00".into())),
        ("Mon 08:00-24:01", WindowError::Time("24:01".into())),
        ("Mon 09:00-09:00", WindowError::Empty("09:00".into())),
    ] {
        assert_eq!(TimeWindow::parse(text), Err(err), "{text:?}");
    }
    assert_eq!(
        WindowError::Empty("09:00".into()).to_string(),
        "the window is empty: it starts and ends at 09:00 (a whole day is 00:00-24:00)"
    );
}

#[test]
fn office_hours() {
    let w = TimeWindow::parse("Mon-Fri 08:00-18:00").unwrap();
    // 2025-06-02 is a Monday.
    assert!(!w.contains(dt("2025-06-02T07:59:59")));
    assert!(w.contains(dt("2025-06-02T08:00")));
    assert!(w.contains(dt("2025-06-06T17:59:59.999")));
    assert!(!w.contains(dt("2025-06-06T18:00")));
    assert!(!w.contains(dt("2025-06-07T12:00")));
}

#[test]
fn a_window_crossing_midnight_belongs_to_its_start_day() {
    let w = TimeWindow::parse("Fri 22:00-06:00").unwrap();
    // 2025-06-06 is a Friday.
    assert!(!w.contains(dt("2025-06-05T23:00")), "Thursday night");
    assert!(!w.contains(dt("2025-06-06T05:00")), "Friday early morning");
    assert!(w.contains(dt("2025-06-06T22:00")));
    assert!(w.contains(dt("2025-06-07T05:59")));
    assert!(!w.contains(dt("2025-06-07T06:00")));
    assert!(!w.contains(dt("2025-06-07T22:30")), "Saturday night");
    let nightly = TimeWindow::parse("Mon-Sun 22:00-06:00").unwrap();
    assert!(
        nightly.contains(dt("2025-06-02T03:00")),
        "Monday 03:00 is Sunday's night"
    );
    assert!(!nightly.contains(dt("2025-06-02T12:00")));
}

#[test]
fn whole_days() {
    let w = TimeWindow::parse("Sat,Sun 00:00-24:00").unwrap();
    assert!(!w.contains(dt("2025-06-06T23:59:59")));
    assert!(w.contains(dt("2025-06-07T00:00")));
    assert!(w.contains(dt("2025-06-08T23:59:59")));
    assert!(!w.contains(dt("2025-06-09T00:00")));
}

#[test]
fn activity_inverts_outside() {
    let outside = when(Activity::Outside, "Mon-Fri 08:00-18:00", "UTC");
    assert!(outside.is_active(ts("2025-06-07T12:00Z")));
    assert!(!outside.is_active(ts("2025-06-06T12:00Z")));
    let inside = when(Activity::Inside, "Mon-Fri 08:00-18:00", "UTC");
    assert!(inside.is_active(ts("2025-06-06T12:00Z")));
}

#[test]
fn next_transition_in_utc() {
    let w = when(Activity::Inside, "Mon-Fri 08:00-18:00", "UTC");
    let next = |s| w.next_transition(ts(s));
    assert_eq!(next("2025-06-02T07:00Z"), Some(ts("2025-06-02T08:00Z")));
    // Strictly after: at a boundary, the following one.
    assert_eq!(next("2025-06-02T08:00Z"), Some(ts("2025-06-02T18:00Z")));
    assert_eq!(next("2025-06-06T18:00Z"), Some(ts("2025-06-09T08:00Z")));
    let nightly = when(Activity::Inside, "Mon-Sun 22:00-06:00", "UTC");
    assert_eq!(
        nightly.next_transition(ts("2025-06-02T03:00Z")),
        Some(ts("2025-06-02T06:00Z"))
    );
    // Adjacent occurrences merge: no transition at midnight.
    let weekend = when(Activity::Inside, "Sat,Sun 00:00-24:00", "UTC");
    assert_eq!(
        weekend.next_transition(ts("2025-06-07T10:00Z")),
        Some(ts("2025-06-09T00:00Z"))
    );
}

#[test]
fn a_window_covering_the_week_never_changes() {
    let always = when(Activity::Inside, "Mon-Sun 00:00-24:00", "Europe/Berlin");
    assert_eq!(always.next_transition(ts("2025-03-29T12:00Z")), None);
    assert!(always.is_inside(ts("2025-03-30T01:30Z")));
}

#[test]
fn office_hours_follow_the_wall_clock_across_dst() {
    let w = when(Activity::Inside, "Mon-Fri 08:00-18:00", "Europe/Berlin");
    // Friday 18:00 CET is 17:00Z; Berlin switches to CEST on Sunday 2025-03-30, so Monday
    // 08:00 is 06:00Z.
    assert_eq!(
        w.next_transition(ts("2025-03-28T17:00Z")),
        Some(ts("2025-03-31T06:00Z"))
    );
    assert!(!w.is_inside(ts("2025-03-31T05:59Z")));
    assert!(w.is_inside(ts("2025-03-31T06:00Z")));
}

#[test]
fn a_window_opening_in_the_skipped_hour_opens_at_the_jump() {
    // 2025-03-30 (a Sunday), Berlin: 02:00 CET becomes 03:00 CEST at 01:00Z; 02:30 never
    // happens on the wall clock.
    let w = when(Activity::Inside, "Sun 02:30-04:00", "Europe/Berlin");
    assert!(!w.is_inside(ts("2025-03-30T00:59:59Z")));
    assert!(w.is_inside(ts("2025-03-30T01:00Z")));
    assert_eq!(
        w.next_transition(ts("2025-03-29T12:00Z")),
        Some(ts("2025-03-30T01:00Z"))
    );
    assert_eq!(
        w.next_transition(ts("2025-03-30T01:00Z")),
        Some(ts("2025-03-30T02:00Z"))
    );
}

#[test]
fn a_window_in_the_repeated_hour_is_entered_twice() {
    // 2025-10-26 (a Sunday), Berlin: 03:00 CEST becomes 02:00 CET at 01:00Z, so 02:30-02:45
    // happens at 00:30Z and again at 01:30Z.
    let w = when(Activity::Inside, "Sun 02:30-02:45", "Europe/Berlin");
    let mut t = ts("2025-10-25T12:00Z");
    let mut seen = Vec::new();
    for _ in 0..4 {
        t = w.next_transition(t).unwrap();
        seen.push(t);
    }
    assert_eq!(
        seen,
        [
            ts("2025-10-26T00:30Z"),
            ts("2025-10-26T00:45Z"),
            ts("2025-10-26T01:30Z"),
            ts("2025-10-26T01:45Z"),
        ]
    );
}

/// Reference: scan minute by minute (every boundary and DST change in these zones falls on a
/// whole UTC minute, so membership is constant within each minute).
fn brute_force_next(w: &When, after: Timestamp) -> Option<Timestamp> {
    let minute = SignedDuration::from_mins(1);
    let secs = after.as_second();
    let mut t = Timestamp::from_second(secs - secs.rem_euclid(60)).unwrap();
    let start = w.is_inside(after);
    for _ in 0..(9 * 24 * 60) {
        t = t.checked_add(minute).unwrap();
        if w.is_inside(t) != start {
            return Some(t);
        }
    }
    None
}

#[test]
fn next_transition_matches_a_minute_by_minute_scan() {
    let windows = [
        ("Mon-Fri 08:00-18:00", "Europe/Berlin"),
        ("Mon-Sun 22:00-06:00", "America/New_York"),
        ("Sun 02:30-04:00", "Europe/Berlin"),
        ("Sun 01:15-01:45", "America/New_York"),
        ("Sat,Sun 00:00-24:00", "Australia/Lord_Howe"),
        ("Wed 09:00-10:00", "UTC"),
    ];
    // Around the 2025 DST changes of Europe and North America, starting at odd offsets.
    for start in [
        "2025-03-06T00:00Z",
        "2025-10-23T00:00Z",
        "2025-11-01T00:00Z",
    ] {
        for (window, tz) in windows {
            let w = when(Activity::Inside, window, tz);
            let mut after = ts(start);
            for _ in 0..40 {
                assert_eq!(
                    w.next_transition(after),
                    brute_force_next(&w, after),
                    "{window} in {tz} after {after}"
                );
                after = after
                    .checked_add(SignedDuration::from_secs(7 * 3600 + 13 * 60 + 7))
                    .unwrap();
            }
        }
    }
}
