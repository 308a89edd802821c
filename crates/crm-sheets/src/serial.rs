//! Spreadsheet serial numbers to and from dates and times.
//!
//! With `dateTimeRenderOption=SERIAL_NUMBER` the Sheets API returns dates,
//! times and date-times as "serial numbers": the whole part counts days since
//! **1899-12-30**, the fraction is the time as a fraction of the day (noon is
//! `.5`). Google's reference for `DateTimeRenderOption.SERIAL_NUMBER` gives
//! 1900-01-01 noon as `2.5` and 1900-02-01 15:00 as `33.625`, and says it
//! "correctly treats the year 1900 as not a leap year".
//!
//! # The 1900 leap-year bug
//!
//! Lotus 1-2-3, and Excel after it, count from 1900-01-01 = 1 and include a
//! 29 February 1900 that never existed (serial 60). Google Sheets does not: its
//! epoch is 1899-12-30, so serial 60 is 1900-02-28 and serial 61 is
//! 1900-03-01. From serial 61 (1900-03-01) on both agree; below it an Excel
//! serial is one day later than the same Sheets serial. This module follows
//! Sheets, which is what the API returns; a sheet imported from Excel with
//! dates before March 1900 shows them shifted in Sheets itself, and this
//! module reads them as Sheets shows them.
//!
//! Serials are handled as [`Decimal`] parsed from the JSON text, so the time
//! of day is exact to the millisecond (no `f64` artefacts).

use chrono::{Duration, NaiveDate, NaiveDateTime, NaiveTime, Timelike};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

use crate::error::SheetsError;

/// Day 0 of Google Sheets serial numbers.
pub fn epoch() -> NaiveDate {
    // 1899-12-30 is a valid date; `from_ymd_opt` only fails for invalid ones.
    NaiveDate::from_ymd_opt(1899, 12, 30).unwrap_or(NaiveDate::MIN)
}

const MS_PER_DAY: i64 = 86_400_000;

fn bad(serial: Decimal, reason: &str) -> SheetsError {
    SheetsError::InvalidSerial {
        serial: serial.to_string(),
        reason: reason.to_owned(),
    }
}

/// The date and time of a serial number, to the millisecond (rounded half
/// away from zero; a time that rounds up to midnight is the next day).
///
/// ```
/// use crm_sheets::serial::serial_to_datetime;
/// let t = serial_to_datetime("33.625".parse().unwrap()).unwrap();
/// assert_eq!(t.to_string(), "1900-02-01 15:00:00");
/// ```
///
/// # Errors
/// [`SheetsError::InvalidSerial`] for a negative serial or one past the
/// dates this crate can represent.
pub fn serial_to_datetime(serial: Decimal) -> Result<NaiveDateTime, SheetsError> {
    if serial.is_sign_negative() && !serial.is_zero() {
        return Err(bad(serial, "negative serial numbers are not dates"));
    }
    let ms = serial
        .checked_mul(Decimal::from(MS_PER_DAY))
        .ok_or_else(|| bad(serial, "out of range"))?
        .round_dp_with_strategy(0, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
        .to_i64()
        .ok_or_else(|| bad(serial, "out of range"))?;
    let days = ms / MS_PER_DAY;
    let rest = ms % MS_PER_DAY;
    let date = epoch()
        .checked_add_signed(Duration::try_days(days).ok_or_else(|| bad(serial, "out of range"))?)
        .ok_or_else(|| bad(serial, "out of range"))?;
    let time = NaiveTime::MIN + Duration::milliseconds(rest);
    Ok(date.and_time(time))
}

/// The date of a serial number; a time of day, if any, is dropped.
///
/// ```
/// use crm_sheets::serial::serial_to_date;
/// assert_eq!(serial_to_date(43831.into()).unwrap().to_string(), "2020-01-01");
/// ```
///
/// # Errors
/// As [`serial_to_datetime`].
pub fn serial_to_date(serial: Decimal) -> Result<NaiveDate, SheetsError> {
    if serial.is_sign_negative() && !serial.is_zero() {
        return Err(bad(serial, "negative serial numbers are not dates"));
    }
    let days = serial
        .trunc()
        .to_i64()
        .ok_or_else(|| bad(serial, "out of range"))?;
    epoch()
        .checked_add_signed(Duration::try_days(days).ok_or_else(|| bad(serial, "out of range"))?)
        .ok_or_else(|| bad(serial, "out of range"))
}

/// The serial number of a date (a whole number of days).
///
/// # Errors
/// [`SheetsError::InvalidSerial`] for a date before 1899-12-30, which has no
/// serial number.
pub fn date_to_serial(date: NaiveDate) -> Result<i64, SheetsError> {
    let days = (date - epoch()).num_days();
    if days < 0 {
        return Err(SheetsError::InvalidSerial {
            serial: date.to_string(),
            reason: "dates before 1899-12-30 have no serial number".to_owned(),
        });
    }
    Ok(days)
}

/// The serial number of a date and time, exact to the millisecond
/// (the fraction has up to 10 decimal places, which
/// [`serial_to_datetime`] reads back to the same millisecond).
///
/// # Errors
/// As [`date_to_serial`].
pub fn datetime_to_serial(t: NaiveDateTime) -> Result<Decimal, SheetsError> {
    let days = date_to_serial(t.date())?;
    let ms = i64::from(t.time().num_seconds_from_midnight()) * 1000
        + i64::from(t.time().nanosecond() / 1_000_000);
    let frac = Decimal::from(ms) / Decimal::from(MS_PER_DAY);
    Ok((Decimal::from(days) + frac).round_dp(10).normalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }
    fn date(y: i32, m: u32, dd: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, dd).unwrap()
    }

    #[test]
    fn serial_43831_is_2020_01_01_and_back() {
        assert_eq!(serial_to_date(d("43831")).unwrap(), date(2020, 1, 1));
        assert_eq!(date_to_serial(date(2020, 1, 1)).unwrap(), 43831);
    }

    #[test]
    fn epoch_and_googles_documented_examples() {
        assert_eq!(serial_to_date(d("0")).unwrap(), date(1899, 12, 30));
        assert_eq!(serial_to_date(d("1")).unwrap(), date(1899, 12, 31));
        assert_eq!(
            serial_to_datetime(d("2.5")).unwrap(),
            date(1900, 1, 1).and_hms_opt(12, 0, 0).unwrap()
        );
        assert_eq!(
            serial_to_datetime(d("33.625")).unwrap(),
            date(1900, 2, 1).and_hms_opt(15, 0, 0).unwrap()
        );
    }

    #[test]
    fn leap_bug_region_follows_sheets_not_excel() {
        // Sheets has no 1900-02-29: serial 60 is 28 February, 61 is 1 March.
        assert_eq!(serial_to_date(d("59")).unwrap(), date(1900, 2, 27));
        assert_eq!(serial_to_date(d("60")).unwrap(), date(1900, 2, 28));
        assert_eq!(serial_to_date(d("61")).unwrap(), date(1900, 3, 1));
        assert!(NaiveDate::from_ymd_opt(1900, 2, 29).is_none());
        // Round trip across the region is exact.
        for s in 0..200 {
            let dt = serial_to_date(Decimal::from(s)).unwrap();
            assert_eq!(date_to_serial(dt).unwrap(), s);
        }
    }

    #[test]
    fn times_as_fractions() {
        let t = serial_to_datetime(d("43831.75")).unwrap();
        assert_eq!(t, date(2020, 1, 1).and_hms_opt(18, 0, 0).unwrap());
        // A time alone (no date part) is on the epoch day.
        let t = serial_to_datetime(d("0.5")).unwrap();
        assert_eq!(t, date(1899, 12, 30).and_hms_opt(12, 0, 0).unwrap());
        // One second: 1/86400 written to many places rounds to the second.
        let t = serial_to_datetime(d("43831.0000115740740740")).unwrap();
        assert_eq!(t, date(2020, 1, 1).and_hms_opt(0, 0, 1).unwrap());
        // A fraction that rounds up to midnight is the next day.
        let t = serial_to_datetime(d("43831.99999999999")).unwrap();
        assert_eq!(t, date(2020, 1, 2).and_hms_opt(0, 0, 0).unwrap());
        // The date of a date-time serial drops the time.
        assert_eq!(serial_to_date(d("43831.99")).unwrap(), date(2020, 1, 1));
        // Writing and reading back keeps the millisecond.
        let t = date(2024, 2, 29).and_hms_milli_opt(13, 45, 7, 123).unwrap();
        let s = datetime_to_serial(t).unwrap();
        assert_eq!(serial_to_datetime(s).unwrap(), t);
        assert_eq!(
            datetime_to_serial(date(2020, 1, 1).and_hms_opt(12, 0, 0).unwrap()).unwrap(),
            d("43831.5")
        );
    }

    #[test]
    fn negative_and_huge_serials_are_rejected() {
        assert!(serial_to_date(d("-1")).is_err());
        assert!(serial_to_datetime(d("-0.5")).is_err());
        let huge = Decimal::from(10i64.pow(15));
        assert!(serial_to_date(huge).is_err());
        assert!(serial_to_datetime(huge).is_err());
        assert!(serial_to_datetime(Decimal::MAX).is_err());
        assert!(date_to_serial(date(1899, 12, 29)).is_err());
        // Negative zero is zero.
        assert_eq!(serial_to_date(d("-0")).unwrap(), date(1899, 12, 30));
    }

    proptest::proptest! {
        #[test]
        fn datetime_round_trip(days in 0i64..2_958_465, ms in 0i64..MS_PER_DAY) {
            let t = epoch().and_hms_opt(0, 0, 0).unwrap()
                + Duration::days(days) + Duration::milliseconds(ms);
            let s = datetime_to_serial(t).unwrap();
            proptest::prop_assert_eq!(serial_to_datetime(s).unwrap(), t);
        }
    }
}
