//! Loading mappings from the seeds' YAML/JSON shapes, column letters, and
//! property tests of the pure mapping functions.

// Helpers outside #[test] functions unwrap too; a failure is a test failure.
#![allow(clippy::unwrap_used)]

use crm_core::mapping::{
    ColumnMapping, ConfigError, DateOutput, Direction, EnumMap, FieldMap, Flow, Frequency, Mapping,
    Scale, Transform, WriteBackConfig, column_index, column_letters, initcap, round_to, to_e164,
};
use crm_core::{Record, Value};
use proptest::prelude::*;
use rust_decimal::Decimal;
use serde::Deserialize;

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

// --- seed 000: sheet column_mapping ---------------------------------------------------

const SEED_000_SHEET: &str = r#"
sheet:
  spreadsheet_id: "1BxiM..."
  sheet_name: "Bookings"
  header_row: 1
  data_start_row: 2
  
  column_mapping:
    A: "booking_id"
    B: "client_name"
    C: "campaign_name"
    D: "start_date"
    E: "end_date"
    F: "budget"
    G: "impressions_booked"
    H: "media_type"
    I: "dsp"
"#;

#[derive(Deserialize)]
struct SheetDoc {
    sheet: Sheet,
}

#[derive(Deserialize)]
struct Sheet {
    data_start_row: u32,
    column_mapping: ColumnMapping,
}

#[test]
fn seed_000_column_mapping_loads() {
    let doc: SheetDoc = serde_yaml::from_str(SEED_000_SHEET).unwrap();
    let cols = doc.sheet.column_mapping;
    assert_eq!(cols.len(), 9);
    assert_eq!(cols.field(0), Some("booking_id"));
    assert_eq!(cols.field(8), Some("dsp"));
    assert_eq!(cols.column("budget"), Some(5));
    assert_eq!(cols.width(), 9);
    assert_eq!(cols.range(doc.sheet.data_start_row).unwrap(), "A2:I");

    let row: Vec<Value> = [
        "BK-1",
        "Acme",
        "Spring",
        "2024-03-01",
        "2024-03-31",
        "2500.00",
    ]
    .into_iter()
    .map(Value::from)
    .collect();
    let rec = cols.record_from_row(&row);
    assert_eq!(rec.text("booking_id"), Some("BK-1"));
    assert_eq!(rec.text("budget"), Some("2500.00"));
    // A short row gives nulls for the missing cells.
    assert_eq!(rec.get("dsp"), Some(&Value::Null));
    let back = cols.row_from_record(&rec);
    assert_eq!(back.len(), 9);
    assert_eq!(back[0], Value::from("BK-1"));

    // Serializes back to letters.
    let yaml = serde_yaml::to_string(&cols).unwrap();
    assert!(yaml.starts_with("A: booking_id\n"), "{yaml}");
    let again: ColumnMapping = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(again, cols);
}

#[test]
fn column_letters_and_errors() {
    for (letters, index) in [
        ("A", 0),
        ("Z", 25),
        ("AA", 26),
        ("AZ", 51),
        ("BA", 52),
        ("ZZ", 701),
        ("AAA", 702),
        ("XFD", 16383),
    ] {
        assert_eq!(column_index(letters).unwrap(), index, "{letters}");
        assert_eq!(column_letters(index), letters);
    }
    assert_eq!(column_index(" aa ").unwrap(), 26);
    for bad in [
        "",
        " ",
        "A1",
        "1",
        "Ä",
        "A-B",
        "ZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ",
    ] {
        assert!(
            matches!(column_index(bad), Err(ConfigError::InvalidColumn { .. })),
            "{bad:?}"
        );
    }
    assert!(ColumnMapping::from_yaml("A1: booking_id").is_err());
    assert!(ColumnMapping::from_yaml("A: x\na: y").is_err());
    assert!(ColumnMapping::from_yaml("A: x\nB: x").is_err());
    assert!(ColumnMapping::from_yaml("A: ''").is_err());
    let aa = ColumnMapping::from_yaml("AA: x\nC: y").unwrap();
    assert_eq!(aa.width(), 27);
    assert_eq!(aa.range(2).unwrap(), "C2:AA");
}

// --- seed 001: reverse ETL `mappings: [{source, destination}]` ---------------------------

const SEED_001_MODEL: &str = r#"
models:
  - name: customer_segments
    source:
      type: snowflake
      query: |
        SELECT 
          crm_id,
          customer_segment,
          lifetime_value,
          propensity_scores
        FROM PRESENTATION.CUSTOMER_ANALYTICS
        WHERE sync_to_crm = TRUE
    
    destination:
      type: salesforce
      object: Contact
      mode: upsert
      unique_identifier: crm_id
      
    mappings:
      - source: customer_segment
        destination: Customer_Segment__c
      - source: lifetime_value
        destination: LTV__c
      - source: propensity_scores.upsell
        destination: Upsell_Score__c
    
    schedule:
      interval: hourly
      timezone: UTC
"#;

#[derive(Deserialize)]
struct Models {
    models: Vec<Model>,
}

#[derive(Deserialize)]
struct Model {
    name: String,
    mappings: Mapping,
}

#[test]
fn seed_001_model_mappings_load() {
    let doc: Models = serde_yaml::from_str(SEED_001_MODEL).unwrap();
    let model = &doc.models[0];
    assert_eq!(model.name, "customer_segments");
    let m = &model.mappings;
    assert_eq!(m.len(), 3);
    assert_eq!(m.maps()[2].source, "propensity_scores.upsell");
    assert_eq!(m.maps()[2].target, "Upsell_Score__c");
    assert!(m.maps().iter().all(|f| f.direction == Direction::ToCrm));
    assert!(m.maps().iter().all(|f| f.transform.is_empty() && !f.pii));
    let out = m
        .apply(
            &Record::new()
                .with("customer_segment", "gold")
                .with("propensity_scores", serde_json::json!({"upsell": 0.5})),
            Flow::ToCrm,
        )
        .unwrap();
    assert_eq!(out.text("Customer_Segment__c"), Some("gold"));
    assert_eq!(out.get("Upsell_Score__c").unwrap().to_string(), "0.5");
}

#[test]
fn seed_001_field_mapping_tables_as_yaml() {
    // "CRM to Data Platform" table.
    let inbound = Mapping::from_yaml(
        r#"
mappings:
  - {source: Id, destination: crm_id, direction: from_crm, transform: Direct}
  - {source: FirstName, destination: first_name, direction: from_crm, transform: INITCAP()}
  - {source: LastName, destination: last_name, direction: from_crm, transform: INITCAP()}
  - {source: Email, destination: email, direction: from_crm, transform: LOWER(), pii: true}
  - {source: Phone, destination: phone_primary, direction: from_crm, transform: Clean regex}
  - {source: AccountId, destination: account_id, direction: from_crm, transform: Direct}
  - {source: Custom_Field__c, destination: custom_field, direction: from_crm, transform: Parse JSON}
"#,
    )
    .unwrap();
    assert_eq!(
        inbound.maps()[1].transform,
        [Transform::Initcap],
        "INITCAP()"
    );
    assert_eq!(inbound.maps()[3].transform, [Transform::Lower]);
    assert!(inbound.maps()[3].pii);
    assert_eq!(inbound.maps()[4].transform, [Transform::phone(None)]);
    assert_eq!(inbound.maps()[6].transform, [Transform::ParseJson]);

    // "Data Platform to CRM" table.
    let outbound = Mapping::from_yaml(
        r#"
- {source: customer_segment, destination: Customer_Segment__c, transform: Direct}
- {source: lifetime_value, destination: LTV__c, transform: Round to 2 decimals}
- {source: churn_risk_score, destination: Churn_Risk__c, transform: Scale 0-100}
- {source: last_activity_date, destination: Last_Activity__c, transform: Format date}
"#,
    )
    .unwrap();
    assert_eq!(outbound.maps()[1].transform, [Transform::Round(2)]);
    assert_eq!(
        outbound.maps()[2].transform,
        [Transform::Scale(Scale::unit_to_percent())]
    );
    match &outbound.maps()[3].transform[..] {
        [Transform::DateFormat(f)] => {
            assert_eq!(f.from_format(), None);
            assert_eq!(f.output(), &DateOutput::Date);
        }
        other => panic!("expected a date format, got {other:?}"),
    }
}

// --- seed 000: write_back ---------------------------------------------------------------

const SEED_000_WRITE_BACK: &str = r#"
write_back:
  enabled: true
  
  fields:
    - source: "gold.pacing_snapshots.actual_spend"
      target: "bookings.actual_spend"
      frequency: "daily"
    
    - source: "gold.pacing_snapshots.pacing_rate"
      target: "bookings.pacing_percent"
      frequency: "hourly"
  
  conflict_resolution: "platform_wins"
  audit_trail: true
"#;

#[test]
fn seed_000_write_back_loads() {
    let wb = WriteBackConfig::from_yaml(SEED_000_WRITE_BACK).unwrap();
    assert!(wb.enabled);
    assert!(wb.audit_trail);
    assert_eq!(
        wb.conflict_resolution.default,
        crm_core::conflict::ConflictPolicy::SourceWins
    );
    assert_eq!(wb.fields.len(), 2);
    let f = &wb.fields[0];
    assert_eq!(f.frequency, Frequency::Daily);
    assert_eq!(f.source_table(), Some("gold.pacing_snapshots"));
    assert_eq!(f.source_column(), "actual_spend");
    assert_eq!(f.target_table(), Some("bookings"));
    assert_eq!(f.target_column(), "actual_spend");
    assert_eq!(wb.fields_at(Frequency::Hourly).count(), 1);

    let hourly = wb.mapping(Some(Frequency::Hourly));
    assert_eq!(hourly.len(), 1);
    let out = hourly
        .apply(
            &Record::new().with("pacing_rate", Value::Decimal(dec("0.97"))),
            Flow::ToCrm,
        )
        .unwrap();
    assert_eq!(
        out.get("pacing_percent"),
        Some(&Value::Decimal(dec("0.97")))
    );
    assert_eq!(wb.mapping(None).len(), 2);
}

#[test]
fn write_back_frequencies_and_errors() {
    for (s, f) in [
        ("daily", Frequency::Daily),
        ("Hourly", Frequency::Hourly),
        ("on_change", Frequency::OnChange),
        ("On change", Frequency::OnChange),
        ("on-match", Frequency::OnMatch),
        ("On match", Frequency::OnMatch),
    ] {
        assert_eq!(s.parse::<Frequency>().unwrap(), f, "{s}");
    }
    assert!("weekly".parse::<Frequency>().is_err());
    let err =
        WriteBackConfig::from_yaml("fields:\n  - {source: a.b, target: c.d, frequency: weekly}\n")
            .unwrap_err();
    assert!(err.to_string().contains("weekly"), "{err}");
    // Without `enabled` the block is on; the top-level key is optional.
    let wb = WriteBackConfig::from_yaml(
        "fields:\n  - {source: campaign_status, target: bookings.campaign_status, frequency: On change, direction: both}\n",
    )
    .unwrap();
    assert!(wb.enabled);
    assert_eq!(wb.fields[0].direction, Direction::Bidirectional);
    assert_eq!(wb.fields[0].source_table(), None);
    assert!(WriteBackConfig::from_yaml("fields: []\nextra: 1\n").is_err());
}

// --- seed 003: {adsapp_field, crm_field, direction, transform_rule} ------------------------

#[test]
fn seed_003_field_mappings_load() {
    let m = Mapping::from_yaml(
        r#"
- adsapp_field: firstName
  crm_field: FirstName
  direction: bidirectional
  transform_rule: null
- adsapp_field: email
  crm_field: Email
  direction: to_crm
  transform_rule: lower
- adsapp_field: leadStatus
  crm_field: Status
  direction: from_crm
  transform_rule:
    enum_map:
      values: {Open: open, Closed: closed}
      fallback: other
  is_custom: true
"#,
    )
    .unwrap();
    assert_eq!(m.maps()[0].source, "firstName");
    assert_eq!(m.maps()[0].target, "FirstName");
    assert!(m.maps()[0].transform.is_empty());
    assert_eq!(m.maps()[1].transform, [Transform::Lower]);
    // from_crm: the CRM field is the source.
    assert_eq!(m.maps()[2].source, "Status");
    assert_eq!(m.maps()[2].target, "leadStatus");
    let out = m
        .apply(&Record::new().with("Status", "Weird"), Flow::FromCrm)
        .unwrap();
    assert_eq!(out.text("leadStatus"), Some("other"));

    // The seed 003 API body, camelCase.
    let api = Mapping::from_json(
        r#"{
  "crmType": "salesforce",
  "mappings": [
    {
      "adsappField": "firstName",
      "crmField": "FirstName",
      "direction": "bidirectional",
      "transformRule": null
    }
  ]
}"#,
    )
    .unwrap();
    assert_eq!(api.maps()[0].direction, Direction::Bidirectional);
    assert_eq!(api.maps()[0].target, "FirstName");
}

#[test]
fn transform_spellings() {
    let cases: &[(&str, Transform)] = &[
        ("lower", Transform::Lower),
        ("LOWER()", Transform::Lower),
        ("Lowercase", Transform::Lower),
        ("upper", Transform::Upper),
        ("INITCAP()", Transform::Initcap),
        (" initcap ", Transform::Initcap),
        ("trim", Transform::Trim),
        ("Direct", Transform::Direct),
        ("round(2)", Transform::Round(2)),
        ("ROUND(0)", Transform::Round(0)),
        ("Round to 2 decimals", Transform::Round(2)),
        ("round to 3 decimal places", Transform::Round(3)),
        ("Parse JSON", Transform::ParseJson),
        ("parse_json", Transform::ParseJson),
        ("Clean regex", Transform::phone(None)),
        ("phone", Transform::phone(None)),
        ("Scale 0-100", Transform::Scale(Scale::unit_to_percent())),
        (
            "scale(0, 10, 0, 1)",
            Transform::Scale(Scale::new((dec("0"), dec("10")), (dec("0"), dec("1"))).unwrap()),
        ),
    ];
    for (s, want) in cases {
        assert_eq!(&s.parse::<Transform>().unwrap(), want, "{s}");
        let json: Transform = serde_json::from_value(serde_json::json!(s)).unwrap();
        assert_eq!(&json, want, "{s}");
    }
    let err = "soundex".parse::<Transform>().unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("soundex"), "{msg}");
    for known in ["lower", "initcap", "phone", "round(n)", "scale", "enum_map"] {
        assert!(msg.contains(known), "{msg}");
    }
    for bad in [
        "round",
        "round(x)",
        "round(29)",
        "Scale high",
        "LOWER(",
        "scale(1,1,0,1)",
    ] {
        assert!(bad.parse::<Transform>().is_err(), "{bad}");
    }
}

#[test]
fn transform_maps_and_chains_in_yaml() {
    let m = Mapping::from_yaml(
        r#"
- source: a
  target: A
  transform:
    - trim
    - {round: 2}
- source: b
  target: B
  transform: {scale: {from: [0, 1], to: [0, 100], clamp: true}}
- source: c
  target: C
  transform: {date_format: {from: "%d/%m/%Y", to: "%Y-%m-%d"}}
- source: d
  target: D
  transform: {default: USD}
- source: e
  target: E
  transform: {constant: 3}
- source: f
  target: F
  transform: {enum_map: {values: {Y: "yes", N: "no"}}}
- source: g
  target: G
  transform: {phone: {default_country: "1"}}
- source: h
  target: H
  transform: {date_format: {to: datetime}}
"#,
    )
    .unwrap();
    let maps = m.maps();
    assert_eq!(maps[0].transform, [Transform::Trim, Transform::Round(2)]);
    assert_eq!(
        maps[1].transform,
        [Transform::Scale(Scale::unit_to_percent().clamped(true))]
    );
    assert_eq!(maps[3].transform, [Transform::Default(Value::from("USD"))]);
    assert_eq!(maps[4].transform, [Transform::Constant(Value::Int(3))]);
    assert_eq!(
        maps[5].transform,
        [Transform::EnumMap(EnumMap::new([
            ("Y".to_owned(), "yes".to_owned()),
            ("N".to_owned(), "no".to_owned())
        ]))]
    );
    let out = m
        .apply(
            &Record::new()
                .with("a", " 1.005 ")
                .with("b", "2")
                .with("c", "01/02/2024")
                .with("d", "")
                .with("f", "n")
                .with("g", "(415) 555-0100")
                .with("h", "2024-01-15"),
            Flow::ToCrm,
        )
        .unwrap();
    assert_eq!(out.get("A").unwrap().to_string(), "1.01");
    assert_eq!(out.get("B").unwrap().to_string(), "100");
    assert_eq!(out.text("C"), Some("2024-02-01"));
    assert_eq!(out.text("D"), Some("USD"));
    assert_eq!(out.get("E"), Some(&Value::Int(3)));
    assert_eq!(out.text("F"), Some("no"));
    assert_eq!(out.text("G"), Some("+14155550100"));
    assert_eq!(out.get("H").unwrap().to_string(), "2024-01-15T00:00:00Z");

    // Serialize and load back.
    let yaml = serde_yaml::to_string(&m).unwrap();
    let again = Mapping::from_yaml(&yaml).unwrap();
    assert_eq!(again, m);
}

#[test]
fn bad_configuration_is_reported() {
    let cases = [
        (
            "- {source: a, target: B, transform: soundex}",
            "unknown transform",
        ),
        ("- {source: a, target: B, tranform: lower}", "tranform"),
        ("- {source: a}", "invalid field map"),
        ("- {source: a, target: B, direction: sideways}", "sideways"),
        (
            "- {source: a, target: B, transform: {round: 2, trim: null}}",
            "exactly one key",
        ),
        (
            "- {source: a, target: B, transform: {scale: {from: [0, 0], to: [0, 1]}}}",
            "empty",
        ),
        (
            "- {source: a, target: B, transform: {date_format: {from: \"%Q\"}}}",
            "chrono",
        ),
        (
            "- {source: a, target: B, transform: {phone: {default_country: \"0\"}}}",
            "calling code",
        ),
        (
            "- {source: a, target: B, transform: {enum_map: {values: [1, 2]}}}",
            "values",
        ),
        (
            "- {source: a, target: B, transform: {frobnicate: 1}}",
            "frobnicate",
        ),
        ("just text", "expected a list"),
    ];
    for (yaml, needle) in cases {
        let err = Mapping::from_yaml(yaml).unwrap_err();
        assert!(err.to_string().contains(needle), "{yaml}: {err}");
    }
    for (s, d) in [
        ("to_crm", Direction::ToCrm),
        ("FROM_CRM", Direction::FromCrm),
        ("both", Direction::Bidirectional),
        ("bi-directional", Direction::Bidirectional),
    ] {
        assert_eq!(s.parse::<Direction>().unwrap(), d);
    }
    // A constant map needs no source.
    let m = Mapping::from_yaml("- {target: Origin__c, transform: {constant: adsapp}}").unwrap();
    assert_eq!(
        m.apply(&Record::new(), Flow::ToCrm)
            .unwrap()
            .text("Origin__c"),
        Some("adsapp")
    );
    let _unused: FieldMap = m.maps()[0].clone();
}

// --- properties ---------------------------------------------------------------------------

proptest! {
    #[test]
    fn text_normalisers_are_idempotent(s in "\\PC{0,40}") {
        for t in [Transform::Lower, Transform::Upper, Transform::Trim] {
            let once = t.apply(Value::Text(s.clone())).unwrap();
            let twice = t.apply(once.clone()).unwrap();
            prop_assert_eq!(once, twice);
        }
    }

    #[test]
    // `ß` is left out: its upper case is `SS` (see `initcap`'s docs).
    fn initcap_is_idempotent_on_latin_names(s in "[a-zA-ZÀ-ÖØ-Þà-öø-ÿ' .-]{0,30}") {
        let once = initcap(&s);
        prop_assert_eq!(initcap(&once), once.clone());
        prop_assert_eq!(once.chars().count(), s.chars().count());
    }

    #[test]
    fn column_letters_round_trip(i in 0usize..10_000_000) {
        let letters = column_letters(i);
        prop_assert!(letters.chars().all(|c| c.is_ascii_uppercase()));
        prop_assert_eq!(column_index(&letters).unwrap(), i);
    }

    #[test]
    fn round_gives_scale_n(m in any::<i64>(), s in 0u32..=18, n in 0u32..=10) {
        let d = Decimal::new(m, s);
        // A decimal holds at most 28-29 significant digits: a 19-digit whole
        // part cannot take 10 places, and that must be an error, not a panic.
        let whole_digits = d.trunc().abs().to_string().len() as u32;
        match round_to(d, n) {
            Ok(r) => {
                prop_assert_eq!(r.scale(), n);
                // Within half a unit of the last place.
                let half = Decimal::new(5, n + 1);
                prop_assert!((r - d).abs() <= half);
            }
            Err(e) => prop_assert!(whole_digits + n >= 28, "{e:?} for {d} at {n} places"),
        }
    }

    #[test]
    fn percent_scale_round_trips(m in 0i64..=1_000_000, s in 6u32..=12) {
        let x = Decimal::new(m, s);
        let p = Scale::unit_to_percent();
        let y = p.map(x).unwrap();
        prop_assert_eq!(p.inverse().map(y).unwrap(), x);
    }

    #[test]
    fn e164_output_is_a_fixed_point(digits in "[2-9][0-9]{9}") {
        let us = Some(crm_core::mapping::CallingCode::new(1).unwrap());
        let e = to_e164(&digits, us).unwrap();
        prop_assert_eq!(e.len(), 12);
        prop_assert_eq!(to_e164(&e, None).unwrap(), e.clone());
        let formatted = format!("({}) {}-{}", &digits[..3], &digits[3..6], &digits[6..]);
        prop_assert_eq!(to_e164(&formatted, us).unwrap(), e);
    }
}
