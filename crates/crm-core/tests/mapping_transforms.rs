//! Each transform of the seeds (001 "Field Mapping" tables, 003 transform
//! rules) with ordinary and odd inputs.

// Helpers outside #[test] functions unwrap too; a failure is a test failure.
#![allow(clippy::unwrap_used)]

use chrono::{NaiveDate, TimeZone, Utc};
use crm_core::Value;
use crm_core::mapping::{
    CallingCode, DateFormat, DateOutput, EnumMap, PhoneError, Scale, Transform, TransformError,
    initcap, to_e164,
};
use rust_decimal::Decimal;

fn t(s: &str) -> Transform {
    s.parse().unwrap()
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn us() -> Option<CallingCode> {
    Some(CallingCode::new(1).unwrap())
}

// --- INITCAP / LOWER / UPPER / TRIM -------------------------------------------

#[test]
fn initcap_is_word_aware() {
    assert_eq!(initcap("o'brien-smith"), "O'Brien-Smith");
    assert_eq!(initcap("ÉLODIE du pont"), "Élodie Du Pont");
    assert_eq!(initcap("mcdonald"), "Mcdonald");
    assert_eq!(initcap("JEAN-LUC  picard"), "Jean-Luc  Picard");
    assert_eq!(initcap("ödön von HORVÁTH"), "Ödön Von Horváth");
    assert_eq!(initcap("3rd street"), "3rd Street");
    assert_eq!(initcap("ΟΔΥΣΣΕΥΣ"), "Οδυσσευς");
    assert_eq!(initcap(""), "");
    assert_eq!(initcap("  "), "  ");
}

#[test]
fn text_transforms_on_values() {
    let ic = t("INITCAP()");
    assert_eq!(
        ic.apply(text("o'brien-smith")).unwrap(),
        text("O'Brien-Smith")
    );
    assert_eq!(ic.apply(Value::Null).unwrap(), Value::Null);
    assert_eq!(ic.apply(text("")).unwrap(), text(""));
    // Non-text values pass through text transforms.
    assert_eq!(ic.apply(Value::Int(3)).unwrap(), Value::Int(3));

    let lower = t("LOWER()");
    assert_eq!(
        lower.apply(text("Ada@Example.COM")).unwrap(),
        text("ada@example.com")
    );
    assert_eq!(lower.apply(text("ÉLODIE")).unwrap(), text("élodie"));
    assert_eq!(lower.apply(Value::Null).unwrap(), Value::Null);

    assert_eq!(t("upper").apply(text("straße")).unwrap(), text("STRASSE"));
    assert_eq!(t("trim").apply(text("  \t x y \n")).unwrap(), text("x y"));
    assert_eq!(t("trim").apply(text("   ")).unwrap(), text(""));
    // Text transforms are their own reverse.
    assert_eq!(lower.apply_reverse(text("ABC")).unwrap(), text("abc"));
}

// --- phone cleanup ("Clean regex") ---------------------------------------------

#[test]
fn phone_numbers_to_e164() {
    assert_eq!(to_e164("+1 (415) 555-0100", None).unwrap(), "+14155550100");
    assert_eq!(
        to_e164("00 44 20 7946 0958", None).unwrap(),
        "+442079460958"
    );
    assert_eq!(to_e164("(415) 555-0100", us()).unwrap(), "+14155550100");
    assert_eq!(to_e164("415.555.0100", us()).unwrap(), "+14155550100");
    assert_eq!(to_e164("1 415 555 0100", us()).unwrap(), "+14155550100");
    let uk = Some(CallingCode::new(44).unwrap());
    assert_eq!(to_e164("020 7946 0958", uk).unwrap(), "+442079460958");
    assert_eq!(to_e164("+33 1 23 45 67 89", us()).unwrap(), "+33123456789");
}

#[test]
fn bad_phone_numbers_are_typed_errors() {
    assert_eq!(
        to_e164("415-555-0100 x12", us()),
        Err(PhoneError::Extension)
    );
    assert_eq!(
        to_e164("415-555-0100 ext. 12", us()),
        Err(PhoneError::Extension)
    );
    assert_eq!(
        to_e164("+14155550100;ext=1", us()),
        Err(PhoneError::Extension)
    );
    assert_eq!(
        to_e164("1-800-FLOWERS", us()),
        Err(PhoneError::InvalidCharacter('F'))
    );
    assert_eq!(to_e164("(415) 555-0100", None), Err(PhoneError::NoCountry));
    assert_eq!(
        to_e164("555-0100", us()),
        Err(PhoneError::BadNanp { national: 7 })
    );
    assert_eq!(
        to_e164("+44 12", None),
        Err(PhoneError::TooShort { digits: 4 })
    );
    assert_eq!(
        to_e164("+44 1234 5678 9012 345", None),
        Err(PhoneError::TooLong { digits: 17 })
    );
    assert_eq!(
        to_e164("+0 123 4567", None),
        Err(PhoneError::BadCountryCode)
    );
    assert_eq!(
        to_e164("41+5 555", us()),
        Err(PhoneError::InvalidCharacter('+'))
    );
}

#[test]
fn phone_transform_values() {
    let p = Transform::phone(us());
    assert_eq!(p.apply(text("")).unwrap(), Value::Null);
    assert_eq!(p.apply(text("   ")).unwrap(), Value::Null);
    assert_eq!(p.apply(Value::Null).unwrap(), Value::Null);
    assert_eq!(
        p.apply(Value::Int(4155550100)).unwrap(),
        text("+14155550100")
    );
    assert!(matches!(
        p.apply(text("call me")),
        Err(TransformError::Phone(PhoneError::InvalidCharacter('c')))
    ));
    assert!(matches!(
        p.apply(Value::Bool(true)),
        Err(TransformError::WrongType { .. })
    ));
    // Cleanup is the same in reverse.
    assert_eq!(
        p.apply_reverse(text("(415) 555-0100")).unwrap(),
        text("+14155550100")
    );
    // "Clean regex" is the seed's name for it.
    assert_eq!(t("Clean regex"), Transform::phone(None));
    assert_eq!(
        t("phone(44)"),
        Transform::phone(Some(CallingCode::new(44).unwrap()))
    );
}

#[test]
fn calling_codes() {
    assert_eq!("+44".parse::<CallingCode>().unwrap().get(), 44);
    assert!("0".parse::<CallingCode>().is_err());
    assert!("1234".parse::<CallingCode>().is_err());
    assert!("4a".parse::<CallingCode>().is_err());
    assert!(CallingCode::new(1000).is_err());
}

// --- Round to 2 decimals ------------------------------------------------------

#[test]
fn round_half_away_from_zero_with_fixed_scale() {
    let r = t("Round to 2 decimals");
    assert_eq!(r, Transform::Round(2));
    let out = |v: Value| r.apply(v).unwrap().to_string();
    assert_eq!(out(Value::Decimal(dec("2.345"))), "2.35");
    assert_eq!(out(Value::Decimal(dec("2.355"))), "2.36");
    assert_eq!(out(Value::Decimal(dec("-2.345"))), "-2.35");
    assert_eq!(out(Value::Decimal(dec("2.344999"))), "2.34");
    assert_eq!(out(Value::Decimal(dec("1234.1"))), "1234.10");
    assert_eq!(out(Value::Int(5)), "5.00");
    // Text is parsed exactly, not through a float.
    assert_eq!(out(text(" 2.345 ")), "2.35");
    assert_eq!(out(text("1.005")), "1.01");
    assert_eq!(out(text("1e2")), "100.00");
    assert_eq!(r.apply(text("")).unwrap(), Value::Null);
    assert_eq!(r.apply(Value::Null).unwrap(), Value::Null);
    assert!(matches!(
        r.apply(text("12,50")),
        Err(TransformError::NotANumber { .. })
    ));
    assert!(matches!(
        r.apply(Value::Bool(false)),
        Err(TransformError::WrongType { .. })
    ));
    assert_eq!(t("round(0)").apply(text("2.5")).unwrap().to_string(), "3");
    assert_eq!(t("round(0)").apply(text("-2.5")).unwrap().to_string(), "-3");
    assert!(Transform::round(29).is_err());
    // Too many places for a large number is an error, not a silent loss.
    let big = Value::Decimal(Decimal::MAX);
    assert!(matches!(
        Transform::Round(10).apply(big),
        Err(TransformError::Overflow { .. })
    ));
}

// --- Scale 0-100 ----------------------------------------------------------------

#[test]
fn scale_is_exact_and_checks_range() {
    let s = t("Scale 0-100");
    assert_eq!(s, Transform::Scale(Scale::unit_to_percent()));
    let out = |v: Value| s.apply(v).map(|v| v.to_string());
    assert_eq!(out(Value::Decimal(dec("0.734"))).unwrap(), "73.4");
    assert_eq!(out(Value::Decimal(dec("0"))).unwrap(), "0");
    assert_eq!(out(Value::Int(1)).unwrap(), "100");
    assert_eq!(out(text("0.5")).unwrap(), "50");
    assert_eq!(out(text("0.000001")).unwrap(), "0.0001");
    assert_eq!(s.apply(text(" ")).unwrap(), Value::Null);
    assert!(matches!(
        s.apply(Value::Decimal(dec("1.5"))),
        Err(TransformError::OutOfRange { .. })
    ));
    assert!(matches!(
        s.apply(Value::Decimal(dec("-0.0001"))),
        Err(TransformError::OutOfRange { .. })
    ));
    assert!(matches!(
        s.apply(text("high")),
        Err(TransformError::NotANumber { .. })
    ));
    // Reverse maps back exactly.
    assert_eq!(
        s.apply_reverse(Value::Decimal(dec("73.4"))).unwrap(),
        Value::Decimal(dec("0.734"))
    );

    let clamped = Transform::Scale(Scale::unit_to_percent().clamped(true));
    assert_eq!(clamped.apply(text("1.5")).unwrap().to_string(), "100");
    assert_eq!(clamped.apply(text("-3")).unwrap().to_string(), "0");

    // Other ranges, including inverted ones.
    let f = Scale::new((dec("32"), dec("212")), (dec("0"), dec("100"))).unwrap();
    assert_eq!(f.map(dec("98.6")).unwrap().to_string(), "37");
    let inv = Scale::new((dec("0"), dec("1")), (dec("100"), dec("0"))).unwrap();
    assert_eq!(inv.map(dec("0.25")).unwrap().to_string(), "75");
    let thirds = Scale::new((dec("0"), dec("3")), (dec("0"), dec("1"))).unwrap();
    assert_eq!(
        thirds.map(dec("1")).unwrap().round_dp(4).to_string(),
        "0.3333"
    );
    assert!(Scale::new((dec("1"), dec("1")), (dec("0"), dec("1"))).is_err());
    assert!(Scale::new((dec("0"), dec("1")), (dec("5"), dec("5"))).is_err());
}

// --- Format date ----------------------------------------------------------------

#[test]
fn format_date_parses_iso_and_gives_typed_dates() {
    let f = t("Format date");
    let d = NaiveDate::from_ymd_opt(2024, 1, 15).unwrap();
    assert_eq!(f.apply(text("2024-01-15")).unwrap(), Value::Date(d));
    assert_eq!(
        f.apply(text(" 2024-01-15T23:30:00Z ")).unwrap(),
        Value::Date(d)
    );
    // Salesforce writes offsets without a colon.
    assert_eq!(
        f.apply(text("2024-01-15T10:00:00.000+0000")).unwrap(),
        Value::Date(d)
    );
    assert_eq!(f.apply(Value::Date(d)).unwrap(), Value::Date(d));
    assert_eq!(f.apply(text("")).unwrap(), Value::Null);
    assert_eq!(f.apply(Value::Null).unwrap(), Value::Null);
    for bad in ["15/01/2024", "2024-02-30", "yesterday", "2024-13-01"] {
        assert!(
            matches!(f.apply(text(bad)), Err(TransformError::BadDate { .. })),
            "{bad}"
        );
    }
    assert!(matches!(
        f.apply(Value::Int(20240115)),
        Err(TransformError::WrongType { .. })
    ));

    let dt = t("format datetime");
    assert_eq!(
        dt.apply(text("2024-01-15T12:00:00+02:00")).unwrap(),
        Value::DateTime(Utc.with_ymd_and_hms(2024, 1, 15, 10, 0, 0).unwrap())
    );
    assert_eq!(
        dt.apply(text("2024-01-15 10:00:00")).unwrap(),
        Value::DateTime(Utc.with_ymd_and_hms(2024, 1, 15, 10, 0, 0).unwrap())
    );
    assert_eq!(
        dt.apply(Value::Date(d)).unwrap(),
        Value::DateTime(Utc.with_ymd_and_hms(2024, 1, 15, 0, 0, 0).unwrap())
    );
}

#[test]
fn date_format_with_chrono_formats() {
    let f = Transform::DateFormat(
        DateFormat::new(
            Some("%d/%m/%Y".into()),
            DateOutput::Format("%Y-%m-%d".into()),
        )
        .unwrap(),
    );
    assert_eq!(f.apply(text("15/01/2024")).unwrap(), text("2024-01-15"));
    assert_eq!(
        f.apply_reverse(text("2024-01-15")).unwrap(),
        text("15/01/2024")
    );
    assert!(matches!(
        f.apply(text("2024-01-15")),
        Err(TransformError::BadDate { .. })
    ));
    assert!(matches!(
        f.apply(text("31/02/2024")),
        Err(TransformError::BadDate { .. })
    ));
    // Typed values skip parsing; a date may be formatted with time fields.
    let g = Transform::DateFormat(
        DateFormat::new(None, DateOutput::Format("%Y-%m-%dT%H:%M:%SZ".into())).unwrap(),
    );
    let d = NaiveDate::from_ymd_opt(2024, 1, 15).unwrap();
    assert_eq!(
        g.apply(Value::Date(d)).unwrap(),
        text("2024-01-15T00:00:00Z")
    );
    // Format strings are checked when the transform is built.
    assert!(DateFormat::new(Some("%Q".into()), DateOutput::Date).is_err());
    assert!(DateFormat::new(None, DateOutput::Format("%Y-%".into())).is_err());
    // With an offset in the format the result is an instant.
    let z = DateFormat::new(Some("%d.%m.%Y %H:%M %z".into()), DateOutput::DateTime).unwrap();
    assert_eq!(
        Transform::DateFormat(z)
            .apply(text("15.01.2024 12:00 +0200"))
            .unwrap(),
        Value::DateTime(Utc.with_ymd_and_hms(2024, 1, 15, 10, 0, 0).unwrap())
    );
}

// --- Parse JSON -----------------------------------------------------------------

#[test]
fn parse_json() {
    let p = t("Parse JSON");
    assert_eq!(
        p.apply(text(r#"{"tier": "gold", "n": [1, 2]}"#)).unwrap(),
        Value::Json(serde_json::json!({"tier": "gold", "n": [1, 2]}))
    );
    assert_eq!(p.apply(text("")).unwrap(), Value::Null);
    assert_eq!(p.apply(Value::Null).unwrap(), Value::Null);
    let j = Value::Json(serde_json::json!([1]));
    assert_eq!(p.apply(j.clone()).unwrap(), j);
    for bad in ["{bad", "{\"a\": }", "[1,]", "nul"] {
        assert!(
            matches!(p.apply(text(bad)), Err(TransformError::BadJson { .. })),
            "{bad}"
        );
    }
    assert!(matches!(
        p.apply(Value::Int(1)),
        Err(TransformError::WrongType { .. })
    ));
    assert_eq!(p.apply_reverse(j).unwrap(), text("[1]"));
}

// --- default, constant, enum map, direct -------------------------------------------

#[test]
fn default_and_constant() {
    let d = Transform::Default(text("USD"));
    assert_eq!(d.apply(Value::Null).unwrap(), text("USD"));
    assert_eq!(d.apply(text("  ")).unwrap(), text("USD"));
    assert_eq!(d.apply(text("EUR")).unwrap(), text("EUR"));
    assert_eq!(d.apply(Value::Int(0)).unwrap(), Value::Int(0));
    assert_eq!(d.apply_reverse(Value::Null).unwrap(), Value::Null);

    let c = Transform::Constant(text("adsapp"));
    assert_eq!(c.apply(text("x")).unwrap(), text("adsapp"));
    assert_eq!(c.apply(Value::Null).unwrap(), text("adsapp"));
    assert!(!c.is_reversible());
    assert!(matches!(
        c.apply_reverse(text("x")),
        Err(TransformError::NotReversible { .. })
    ));

    assert_eq!(t("Direct").apply(Value::Int(7)).unwrap(), Value::Int(7));
}

#[test]
fn enum_map() {
    let tiers = EnumMap::new([
        ("Enterprise".to_owned(), "enterprise".to_owned()),
        ("Growth".to_owned(), "growth".to_owned()),
        ("Scale-up".to_owned(), "growth".to_owned()),
    ]);
    let e = Transform::EnumMap(tiers.clone());
    assert_eq!(e.apply(text("Enterprise")).unwrap(), text("enterprise"));
    assert_eq!(e.apply(text(" GROWTH ")).unwrap(), text("growth"));
    assert_eq!(e.apply(text("")).unwrap(), Value::Null);
    assert_eq!(e.apply(Value::Null).unwrap(), Value::Null);
    match e.apply(text("Startup")) {
        Err(TransformError::UnknownEnumValue { value, known }) => {
            assert_eq!(value, "Startup");
            assert_eq!(known.len(), 3);
        }
        other => panic!("expected an unknown value error, got {other:?}"),
    }
    // Reverse: the first key listed for a value wins.
    assert_eq!(e.apply_reverse(text("growth")).unwrap(), text("Growth"));
    assert!(e.apply_reverse(text("starter")).is_err());

    let f = Transform::EnumMap(tiers.with_fallback("starter"));
    assert_eq!(f.apply(text("Startup")).unwrap(), text("starter"));
    let b = Transform::EnumMap(EnumMap::new([("true".to_owned(), "Yes".to_owned())]));
    assert_eq!(b.apply(Value::Bool(true)).unwrap(), text("Yes"));
}

#[test]
fn chains_run_in_order_and_reverse_backwards() {
    use crm_core::mapping::FieldMap;
    let m = FieldMap::new("x", "y")
        .then(t("trim"))
        .then(t("round(1)"))
        .then(Transform::Scale(
            Scale::new((dec("0"), dec("10")), (dec("0"), dec("100"))).unwrap(),
        ));
    assert_eq!(
        m.transform_value(text(" 2.35 "), false)
            .unwrap()
            .to_string(),
        "24"
    );
    // Reverse: scale back, round again, trim passes the number through.
    assert_eq!(
        m.transform_value(Value::Int(24), true).unwrap().to_string(),
        "2.4"
    );
    // A failing step is named.
    let err = m.transform_value(text("abc"), false).unwrap_err();
    assert_eq!(err.0, "round");
}
