use super::*;

const SEED_000: &str = r#"
validation:
  booking_id:
    type: "string"
    required: true
    unique: true
  budget:
    type: "decimal"
    min: 0
  start_date:
    type: "date"
    format: "YYYY-MM-DD"
  end_date:
    type: "date"
    after: "start_date"
"#;

fn validator() -> Validator {
    ValidationRules::from_yaml(SEED_000).unwrap().validator()
}

fn valid_row() -> Record {
    Record::new()
        .with("booking_id", "BK-1001")
        .with("client_name", "Acme")
        .with("budget", "2500.00")
        .with("start_date", "2024-03-01")
        .with("end_date", "2024-03-31")
}

fn only_failure(report: &ValidationReport) -> (&str, Rule) {
    assert_eq!(report.failures.len(), 1, "{report}");
    (report.failures[0].field.as_str(), report.failures[0].rule)
}

#[test]
fn a_valid_row_passes_and_is_cleaned() {
    let clean = validator().validate(&valid_row(), 0).unwrap();
    assert_eq!(
        clean.get("budget"),
        Some(&Value::Decimal(Decimal::new(250000, 2)))
    );
    assert_eq!(
        clean.get("start_date"),
        Some(&Value::Date(NaiveDate::from_ymd_opt(2024, 3, 1).unwrap()))
    );
    // Fields without rules pass through untouched.
    assert_eq!(clean.text("client_name"), Some("Acme"));
}

#[test]
fn end_date_before_start_date_fails_after() {
    let row = valid_row().with("end_date", "2024-02-28");
    let report = validator().validate(&row, 0).unwrap_err();
    assert_eq!(only_failure(&report), ("end_date", Rule::After));
    assert_eq!(report.record, "BK-1001");
    assert!(
        report.failures[0].message.contains("start_date"),
        "{report}"
    );
}

#[test]
fn one_day_flight_is_valid() {
    let row = valid_row().with("end_date", "2024-03-01");
    assert!(validator().validate(&row, 0).is_ok());
}

#[test]
fn negative_budget_fails_min() {
    let row = valid_row().with("budget", "-0.01");
    let report = validator().validate(&row, 0).unwrap_err();
    assert_eq!(only_failure(&report), ("budget", Rule::Min));
}

#[test]
fn zero_budget_is_allowed_by_min_0() {
    assert!(
        validator()
            .validate(&valid_row().with("budget", "0"), 0)
            .is_ok()
    );
}

#[test]
fn missing_booking_id_fails_required() {
    let mut row = valid_row();
    row.remove("booking_id");
    let report = validator().validate(&row, 7).unwrap_err();
    assert_eq!(only_failure(&report), ("booking_id", Rule::Required));
    assert_eq!(
        report.record, "#7",
        "labelled by position when the key is missing"
    );
    let blank = valid_row().with("booking_id", "   ");
    let report = validator().validate(&blank, 0).unwrap_err();
    assert_eq!(only_failure(&report), ("booking_id", Rule::Required));
}

#[test]
fn duplicate_booking_id_fails_unique_across_batches() {
    let mut v = validator();
    let first = v.validate_batch(vec![valid_row(), valid_row()], 0);
    assert_eq!(first.valid.len(), 1);
    assert_eq!(first.invalid.len(), 1);
    assert_eq!(
        only_failure(&first.invalid[0].1),
        ("booking_id", Rule::Unique)
    );
    assert_eq!(first.invalid[0].1.index, 1);
    // A later page still knows BK-1001.
    let second = v.validate_batch(vec![valid_row()], 2);
    assert_eq!(
        only_failure(&second.invalid[0].1),
        ("booking_id", Rule::Unique)
    );
    // A number and the same text are the same key.
    let mut v = validator();
    assert!(
        v.validate(&valid_row().with("booking_id", Value::Int(7)), 0)
            .is_ok()
    );
    assert!(v.validate(&valid_row().with("booking_id", "7"), 1).is_err());
}

#[test]
fn an_invalid_row_does_not_claim_its_key() {
    let mut v = validator();
    let bad = valid_row().with("budget", "-1");
    assert!(v.validate(&bad, 0).is_err());
    assert!(
        v.validate(&valid_row(), 1).is_ok(),
        "the fixed row is not a duplicate"
    );
}

#[test]
fn bad_date_format_fails_format() {
    for bad in [
        "2024/03/01",
        "01-03-2024",
        "2024-3-1",
        "2024-02-30",
        "March 1",
    ] {
        let row = valid_row().with("start_date", bad);
        let report = validator().validate(&row, 0).unwrap_err();
        assert_eq!(only_failure(&report), ("start_date", Rule::Format), "{bad}");
    }
    // Without a format, a bad date is a type failure.
    let row = valid_row().with("end_date", "31/03/2024");
    let report = validator().validate(&row, 0).unwrap_err();
    assert_eq!(only_failure(&report), ("end_date", Rule::Type));
}

#[test]
fn every_failure_is_reported_at_once() {
    let row = Record::new()
        .with("budget", "lots")
        .with("start_date", "2024-13-01")
        .with("end_date", "2024-01-01");
    let report = validator().validate(&row, 0).unwrap_err();
    assert!(report.has("booking_id", Rule::Required));
    assert!(report.has("budget", Rule::Type));
    assert!(report.has("start_date", Rule::Format));
    // end_date is not compared with an invalid start_date.
    assert!(!report.has("end_date", Rule::After));
    assert_eq!(report.failures.len(), 3);
    let err: crate::Error = report.into();
    assert_eq!(
        err.context_value("fields"),
        Some("booking_id,budget,start_date")
    );
}

#[test]
fn max_one_of_email_and_length() {
    let rules = ValidationRules::from_yaml(
        r#"
impressions: { type: integer, min: 1, max: 1000000 }
media_type: { one_of: [display, video, native, audio] }
contact: { email: true, max_length: 30 }
flight_end: { type: date, max: "2030-12-31" }
"#,
    )
    .unwrap();
    let mut v = rules.validator();
    let good = Record::new()
        .with("impressions", "1000000")
        .with("media_type", "video")
        .with("contact", "ada@example.com")
        .with("flight_end", "2030-12-31");
    assert!(v.validate(&good, 0).is_ok());
    let bad = Record::new()
        .with("impressions", Value::Int(1_000_001))
        .with("media_type", "hologram")
        .with("contact", "not an email at all, and too long")
        .with("flight_end", "2031-01-01");
    let r = v.validate(&bad, 1).unwrap_err();
    assert!(r.has("impressions", Rule::Max));
    assert!(r.has("media_type", Rule::OneOf));
    assert!(r.has("contact", Rule::Email));
    assert!(r.has("contact", Rule::MaxLength));
    assert!(r.has("flight_end", Rule::Max));
}

#[test]
fn emails() {
    for ok in [
        "a@b.co",
        "first.last+tag@sub.example.org",
        "o'brien@example.ie",
    ] {
        assert!(is_email(ok), "{ok}");
    }
    for bad in [
        "",
        "a",
        "a@b",
        "a@b.c",
        "@b.com",
        "a@.com",
        "a b@c.com",
        "a@b..com",
        ".a@b.com",
        "a@-b.com",
    ] {
        assert!(!is_email(bad), "{bad}");
    }
}

#[test]
fn config_errors_are_clear() {
    let typo =
        ValidationRules::from_yaml("validation:\n  budget:\n    typ: decimal\n").unwrap_err();
    assert!(typo.to_string().contains("typ"), "{typo}");
    assert!(typo.to_string().contains("line"), "{typo}");
    let after = ValidationRules::from_yaml("end_date: {type: date, after: start}").unwrap_err();
    assert!(after.to_string().contains("`start`"), "{after}");
    let fmt = ValidationRules::from_yaml("d: {type: date, format: 'YYYY-QQ'}").unwrap_err();
    assert!(fmt.to_string().contains("Q"), "{fmt}");
}

#[test]
fn chrono_formats() {
    assert_eq!(chrono_format("YYYY-MM-DD").unwrap(), "%Y-%m-%d");
    assert_eq!(
        chrono_format("DD/MM/YY HH:mm:ss").unwrap(),
        "%d/%m/%y %H:%M:%S"
    );
    assert_eq!(chrono_format("%d.%m.%Y").unwrap(), "%d.%m.%Y");
}
