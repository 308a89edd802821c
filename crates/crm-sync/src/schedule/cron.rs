//! Five-field cron expressions (`minute hour day-of-month month
//! day-of-week`) with Vixie cron semantics, evaluated in UTC.
//!
//! Each field takes `*`, numbers, ranges `a-b`, steps `*/n` and `a-b/n`,
//! lists `a,b-c`, and names (`JAN`..`DEC`, `SUN`..`SAT`). Day-of-week 0 and
//! 7 are both Sunday. When both day-of-month and day-of-week are restricted
//! (neither starts with `*`), a day matches if either matches, as in Vixie
//! cron; otherwise both must match.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Timelike, Utc};

/// An expression that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid schedule {expr:?}: {reason}")]
pub struct CronError {
    expr: String,
    reason: String,
}

impl CronError {
    fn new(expr: &str, reason: impl Into<String>) -> Self {
        CronError {
            expr: expr.to_owned(),
            reason: reason.into(),
        }
    }

    pub(super) fn interval(text: &str) -> Self {
        CronError::new(text, "not an interval such as 15m, 1h or 1d")
    }
}

/// A parsed cron expression.
#[derive(Clone, PartialEq, Eq)]
pub struct Cron {
    source: String,
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    day_star: bool,
    weekday_star: bool,
}

impl fmt::Debug for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Cron").field(&self.source).finish()
    }
}

impl fmt::Display for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// Years searched ahead for a match: covers a 29 February that also needs
/// a given weekday (a 28-year cycle) and the skipped leap year of 2100.
const SEARCH_YEARS: i64 = 30;

struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    names_from: u32,
}

fn value(expr: &str, spec: &FieldSpec, s: &str) -> Result<u32, CronError> {
    if let Ok(n) = s.parse::<u32>() {
        if n < spec.min || n > spec.max {
            return Err(CronError::new(
                expr,
                format!("{} {n} outside {}-{}", spec.name, spec.min, spec.max),
            ));
        }
        return Ok(n);
    }
    let upper = s.to_ascii_uppercase();
    spec.names
        .iter()
        .position(|n| *n == upper)
        .and_then(|i| u32::try_from(i).ok())
        .map(|i| i + spec.names_from)
        .ok_or_else(|| CronError::new(expr, format!("{} value {s:?} not understood", spec.name)))
}

fn field(expr: &str, spec: &FieldSpec, text: &str) -> Result<u64, CronError> {
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step = s
                    .parse::<u32>()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| CronError::new(expr, format!("bad step {s:?}")))?;
                (r, step)
            }
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" {
            (spec.min, spec.max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(expr, spec, a)?, value(expr, spec, b)?);
            if a > b {
                return Err(CronError::new(
                    expr,
                    format!("range {range:?} runs backwards"),
                ));
            }
            (a, b)
        } else {
            let a = value(expr, spec, range)?;
            // `a/n` means from a to the end of the field, as in Vixie cron.
            if part.contains('/') {
                (a, spec.max)
            } else {
                (a, a)
            }
        };
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

impl FromStr for Cron {
    type Err = CronError;

    fn from_str(expr: &str) -> Result<Self, CronError> {
        let parts: Vec<&str> = expr.split_whitespace().collect();
        let [mi, ho, dm, mo, dw] = parts[..] else {
            return Err(CronError::new(
                expr,
                format!("expected 5 fields, found {}", parts.len()),
            ));
        };
        let plain = |name, min, max| FieldSpec {
            name,
            min,
            max,
            names: &[],
            names_from: 0,
        };
        let mut weekdays = field(
            expr,
            &FieldSpec {
                name: "day-of-week",
                min: 0,
                max: 7,
                names: &WEEKDAYS,
                names_from: 0,
            },
            dw,
        )?;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & !(1 << 7);
        }
        Ok(Cron {
            source: parts.join(" "),
            minutes: field(expr, &plain("minute", 0, 59), mi)?,
            hours: field(expr, &plain("hour", 0, 23), ho)?,
            days: field(expr, &plain("day-of-month", 1, 31), dm)?,
            months: field(
                expr,
                &FieldSpec {
                    name: "month",
                    min: 1,
                    max: 12,
                    names: &MONTHS,
                    names_from: 1,
                },
                mo,
            )?,
            weekdays,
            day_star: dm.starts_with('*'),
            weekday_star: dw.starts_with('*'),
        })
    }
}

fn has(bits: u64, v: u32) -> bool {
    bits & (1 << v) != 0
}

fn first_from(bits: u64, from: u32) -> Option<u32> {
    (from..64).find(|v| has(bits, *v))
}

impl Cron {
    /// Parses `expr`.
    ///
    /// # Errors
    /// [`CronError`] naming the field that does not parse.
    pub fn parse(expr: &str) -> Result<Self, CronError> {
        expr.parse()
    }

    fn day_matches(&self, d: NaiveDate) -> bool {
        if !has(self.months, d.month()) {
            return false;
        }
        let dom = has(self.days, d.day());
        let dow = has(self.weekdays, d.weekday().num_days_from_sunday());
        if self.day_star || self.weekday_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// Whether the minute containing `t` is a fire time.
    pub fn matches(&self, t: DateTime<Utc>) -> bool {
        self.day_matches(t.date_naive())
            && has(self.hours, t.hour())
            && has(self.minutes, t.minute())
    }

    /// The first fire time strictly after `t` (at a whole minute), or `None`
    /// when the expression never fires (such as `0 0 30 2 *`).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let start = t
            .with_second(0)
            .and_then(|x| x.with_nanosecond(0))?
            .checked_add_signed(Duration::minutes(1))?;
        let mut day = start.date_naive();
        let mut from = (start.hour(), start.minute());
        let last = day.checked_add_signed(Duration::days(SEARCH_YEARS * 366))?;
        while day <= last {
            if self.day_matches(day) {
                let mut hour = first_from(self.hours, from.0);
                while let Some(h) = hour.filter(|h| *h < 24) {
                    let min_from = if h == from.0 { from.1 } else { 0 };
                    if let Some(m) = first_from(self.minutes, min_from).filter(|m| *m < 60) {
                        let naive = day.and_hms_opt(h, m, 0)?;
                        return Some(Utc.from_utc_datetime(&naive));
                    }
                    hour = first_from(self.hours, h + 1);
                }
            }
            day = day.succ_opt()?;
            from = (0, 0);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use proptest::prelude::*;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    fn next(expr: &str, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        Cron::parse(expr).unwrap().next_after(t)
    }

    #[test]
    fn hourly_seed_schedule() {
        assert_eq!(
            next("0 * * * *", at(2026, 3, 1, 10, 0)),
            Some(at(2026, 3, 1, 11, 0))
        );
        assert_eq!(
            next("0 * * * *", at(2026, 3, 1, 23, 59)),
            Some(at(2026, 3, 2, 0, 0))
        );
        let mid_minute = at(2026, 3, 1, 10, 59) + Duration::seconds(30);
        assert_eq!(next("0 * * * *", mid_minute), Some(at(2026, 3, 1, 11, 0)));
    }

    #[test]
    fn steps_ranges_and_lists() {
        assert_eq!(
            next("*/15 * * * *", at(2026, 3, 1, 10, 1)),
            Some(at(2026, 3, 1, 10, 15))
        );
        assert_eq!(
            next("*/15 * * * *", at(2026, 3, 1, 10, 45)),
            Some(at(2026, 3, 1, 11, 0))
        );
        assert_eq!(
            next("5-10/2 * * * *", at(2026, 3, 1, 10, 7)),
            Some(at(2026, 3, 1, 10, 9))
        );
        assert_eq!(
            next("5-10/2 * * * *", at(2026, 3, 1, 10, 9)),
            Some(at(2026, 3, 1, 11, 5))
        );
        assert_eq!(
            next("0 9,17 * * *", at(2026, 3, 1, 9, 0)),
            Some(at(2026, 3, 1, 17, 0))
        );
        assert_eq!(
            next("30 2/6 * * *", at(2026, 3, 1, 9, 0)),
            Some(at(2026, 3, 1, 14, 30))
        );
        assert_eq!(
            next("0 0 1 */3 *", at(2026, 2, 1, 0, 0)),
            Some(at(2026, 4, 1, 0, 0))
        );
    }

    #[test]
    fn names_and_sunday_as_seven() {
        // 2026-03-01 is a Sunday.
        assert_eq!(
            next("0 8 * * MON-FRI", at(2026, 3, 1, 12, 0)),
            Some(at(2026, 3, 2, 8, 0))
        );
        assert_eq!(
            next("0 8 * * sat", at(2026, 3, 1, 12, 0)),
            Some(at(2026, 3, 7, 8, 0))
        );
        assert_eq!(
            next("0 8 * * 7", at(2026, 2, 28, 12, 0)),
            Some(at(2026, 3, 1, 8, 0))
        );
        assert_eq!(
            next("0 8 * * 0", at(2026, 2, 28, 12, 0)),
            Some(at(2026, 3, 1, 8, 0))
        );
        assert_eq!(
            next("0 0 1 JAN,jul *", at(2026, 3, 1, 0, 0)),
            Some(at(2026, 7, 1, 0, 0))
        );
        assert_eq!(
            next("0 0 * FEB-MAR SUN", at(2026, 3, 2, 0, 0)),
            Some(at(2026, 3, 8, 0, 0))
        );
    }

    #[test]
    fn vixie_day_of_month_or_day_of_week() {
        // Both restricted: the 13th or any Friday. 2026-03-06 is a Friday.
        assert_eq!(
            next("0 0 13 * FRI", at(2026, 3, 1, 0, 0)),
            Some(at(2026, 3, 6, 0, 0))
        );
        assert_eq!(
            next("0 0 13 * FRI", at(2026, 3, 12, 0, 0)),
            Some(at(2026, 3, 13, 0, 0))
        );
        // A star in either: both must hold (`*/2` starts with a star).
        assert_eq!(
            next("0 0 */2 * FRI", at(2026, 3, 1, 0, 0)),
            Some(at(2026, 3, 13, 0, 0))
        );
        assert_eq!(
            next("0 0 13 * *", at(2026, 3, 1, 0, 0)),
            Some(at(2026, 3, 13, 0, 0))
        );
    }

    #[test]
    fn rare_and_impossible_dates() {
        assert_eq!(
            next("0 0 29 2 *", at(2026, 3, 1, 0, 0)),
            Some(at(2028, 2, 29, 0, 0))
        );
        // 2100 is not a leap year.
        assert_eq!(
            next("0 0 29 2 *", at(2096, 3, 1, 0, 0)),
            Some(at(2104, 2, 29, 0, 0))
        );
        assert_eq!(next("0 0 31 4 *", at(2026, 3, 1, 0, 0)), None);
        assert_eq!(next("0 0 30 2 *", at(2026, 3, 1, 0, 0)), None);
        assert_eq!(
            next("59 23 31 12 *", at(2026, 12, 31, 23, 59)),
            Some(at(2027, 12, 31, 23, 59))
        );
    }

    #[test]
    fn bad_expressions_are_rejected() {
        for bad in [
            "",
            "* * * *",
            "* * * * * *",
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "* * 32 * *",
            "* * * 13 *",
            "* * * * 8",
            "*/0 * * * *",
            "5-1 * * * *",
            "x * * * *",
            "* * * FOO *",
            "1,,2 * * * *",
        ] {
            assert!(Cron::parse(bad).is_err(), "{bad:?} parsed");
        }
        let e = Cron::parse("61 * * * *").unwrap_err().to_string();
        assert!(e.contains("minute 61"), "{e}");
    }

    fn field_text() -> impl Strategy<Value = (String, String, String, String, String)> {
        let part = |min: u32, max: u32| {
            prop_oneof![
                Just("*".to_owned()),
                (min..=max).prop_map(|v| v.to_string()),
                (min..=max, 1u32..=10).prop_map(|(a, s)| format!("{a}/{s}")),
                (1u32..=15).prop_map(|s| format!("*/{s}")),
                (min..=max, min..=max).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
                (min..=max, min..=max).prop_map(|(a, b)| format!("{a},{b}")),
            ]
        };
        (
            part(0, 59),
            part(0, 23),
            part(1, 31),
            part(1, 12),
            part(0, 7),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn next_is_the_first_match_after(
            (mi, ho, dm, mo, dw) in field_text(),
            secs in 1_600_000_000i64..2_200_000_000,
        ) {
            let cron = Cron::parse(&format!("{mi} {ho} {dm} {mo} {dw}")).unwrap();
            let t = DateTime::from_timestamp(secs, 0).unwrap();
            if let Some(n) = cron.next_after(t) {
                prop_assert!(n > t);
                prop_assert!(cron.matches(n));
                prop_assert_eq!(n.second(), 0);
                // No whole minute in (t, n) matches: walk them, but only
                // when the gap is short enough to walk (up to 40 days).
                let gap = (n - t).num_minutes();
                if gap <= 40 * 24 * 60 {
                    let mut m = t.with_second(0).unwrap() + Duration::minutes(1);
                    while m < n {
                        prop_assert!(!cron.matches(m), "{} matches before {}", m, n);
                        m += Duration::minutes(1);
                    }
                }
            }
        }
    }
}
