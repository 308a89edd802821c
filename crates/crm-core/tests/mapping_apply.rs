//! `Mapping::apply`: direction filtering, reverse maps, absent vs null
//! fields, error collection, and the provider default maps.

// Helpers outside #[test] functions unwrap too; a failure is a test failure.
#![allow(clippy::unwrap_used)]

use chrono::{NaiveDate, TimeZone, Utc};
use crm_core::mapping::canonical::{contact, opportunity};
use crm_core::mapping::defaults::{self, Provider};
use crm_core::mapping::{
    CallingCode, Direction, FieldMap, Flow, Mapping, Transform, TransformError,
};
use crm_core::{Error, ErrorKind, Record, Value};

fn t(s: &str) -> Transform {
    s.parse().unwrap()
}

fn three_way() -> Mapping {
    Mapping::new()
        .with(FieldMap::new("segment", "Segment__c"))
        .with(FieldMap::new("Owner", "owner").direction(Direction::FromCrm))
        .with(
            FieldMap::new("email", "Email")
                .direction(Direction::Bidirectional)
                .then(t("lower")),
        )
}

#[test]
fn maps_only_run_in_their_directions() {
    let m = three_way();
    let platform = Record::new()
        .with("segment", "gold")
        .with("email", "Ada@Example.com")
        .with("Owner", "ignored on the way out");
    let crm = m.apply(&platform, Flow::ToCrm).unwrap();
    let names: Vec<_> = crm.fields.keys().map(String::as_str).collect();
    assert_eq!(names, ["Segment__c", "Email"]);
    assert_eq!(crm.text("Email"), Some("ada@example.com"));

    let from = Record::new()
        .with("Segment__c", "ignored on the way in")
        .with("Owner", "Grace")
        .with("Email", "GRACE@example.com");
    let back = m.apply(&from, Flow::FromCrm).unwrap();
    let names: Vec<_> = back.fields.keys().map(String::as_str).collect();
    assert_eq!(names, ["owner", "email"]);
    assert_eq!(back.text("email"), Some("grace@example.com"));

    assert_eq!(m.fields_read(Flow::ToCrm), ["segment", "email"]);
    assert_eq!(m.fields_read(Flow::FromCrm), ["Owner", "Email"]);
    assert_eq!(m.fields_written(Flow::FromCrm), ["owner", "email"]);
    assert!(Direction::Bidirectional.runs_in(Flow::FromCrm));
    assert!(!Direction::ToCrm.runs_in(Flow::FromCrm));
}

#[test]
fn id_and_updated_at_are_carried_over() {
    let at = Utc.with_ymd_and_hms(2024, 1, 15, 10, 0, 0).unwrap();
    let r = Record::new()
        .with_id("003XX")
        .with_updated_at(at)
        .with("segment", "x");
    let out = three_way().apply(&r, Flow::ToCrm).unwrap();
    assert_eq!(out.id.unwrap().as_str(), "003XX");
    assert_eq!(out.updated_at, Some(at));
}

#[test]
fn reverse_uses_inverse_transforms() {
    let m = Mapping::from_yaml(
        r#"
- source: churn_risk_score
  target: Churn_Risk__c
  direction: both
  transform: Scale 0-100
- source: signup
  target: Signup__c
  direction: bidirectional
  transform: {date_format: {from: "%d/%m/%Y", to: "%Y-%m-%d"}}
- source: origin
  target: Origin__c
  direction: bidirectional
  transform: {constant: adsapp}
"#,
    )
    .unwrap();
    let out = m
        .apply(
            &Record::new()
                .with("churn_risk_score", "0.25")
                .with("signup", "15/01/2024"),
            Flow::ToCrm,
        )
        .unwrap();
    assert_eq!(out.get("Churn_Risk__c").unwrap().to_string(), "25");
    assert_eq!(out.text("Signup__c"), Some("2024-01-15"));
    assert_eq!(out.text("Origin__c"), Some("adsapp"));

    let back = m.apply(&out, Flow::FromCrm).unwrap();
    assert_eq!(back.get("churn_risk_score").unwrap().to_string(), "0.25");
    assert_eq!(back.text("signup"), Some("15/01/2024"));
    // A constant has nothing to write back: the map is skipped in reverse.
    assert!(back.get("origin").is_none());
}

#[test]
fn absent_fields_write_nothing_but_null_is_written() {
    let m = Mapping::new()
        .with(FieldMap::new("a", "A").then(t("lower")))
        .with(FieldMap::new("b", "B").then(Transform::Default(Value::from("n/a"))))
        .with(FieldMap::new("c", "C"));
    let out = m
        .apply(&Record::new().with("c", Value::Null), Flow::ToCrm)
        .unwrap();
    assert!(out.get("A").is_none());
    assert_eq!(out.text("B"), Some("n/a"));
    assert_eq!(out.get("C"), Some(&Value::Null));
}

#[test]
fn dotted_source_paths_and_targets() {
    let m = Mapping::new().with(
        FieldMap::new("propensity_scores.upsell", "Upsell_Score__c")
            .direction(Direction::Bidirectional)
            .then(t("round(2)")),
    );
    let r = Record::new().with(
        "propensity_scores",
        serde_json::json!({"upsell": 0.7251, "churn": 0.1}),
    );
    let crm = m.apply(&r, Flow::ToCrm).unwrap();
    assert_eq!(crm.get("Upsell_Score__c").unwrap().to_string(), "0.73");
    // In reverse the dotted path is written as a field of that name, which
    // get_path reads back.
    let back = m.apply(&crm, Flow::FromCrm).unwrap();
    assert_eq!(
        back.get_path("propensity_scores.upsell")
            .unwrap()
            .to_string(),
        "0.73"
    );
}

#[test]
fn every_failed_field_is_reported_with_record_and_field() {
    let m = Mapping::new()
        .with(FieldMap::new("budget", "Budget__c").then(t("round(2)")))
        .with(FieldMap::new("name", "Name").then(t("initcap")))
        .with(FieldMap::new("risk", "Risk__c").then(t("Scale 0-100")))
        .with(FieldMap::new("extra", "Extra__c").then(t("Parse JSON")))
        .with(FieldMap::new("start", "Start__c").then(t("Format date")));
    let r = Record::new()
        .with_id("BK-7")
        .with("budget", "lots")
        .with("name", "ok")
        .with("risk", "1.7")
        .with("extra", "{not json")
        .with("start", "31/12/2024");
    let err = m.apply(&r, Flow::ToCrm).unwrap_err();
    assert_eq!(err.record, "BK-7");
    let targets: Vec<_> = err.errors.iter().map(|e| e.target.as_str()).collect();
    assert_eq!(targets, ["Budget__c", "Risk__c", "Extra__c", "Start__c"]);
    assert!(err.errors.iter().all(|e| e.record == "BK-7"));
    assert!(matches!(
        err.field("budget").unwrap().error,
        TransformError::NotANumber { .. }
    ));
    assert_eq!(err.field("Extra__c").unwrap().transform, "parse_json");
    assert!(matches!(
        err.field("extra").unwrap().error,
        TransformError::BadJson { .. }
    ));
    assert!(matches!(
        err.field("start").unwrap().error,
        TransformError::BadDate { .. }
    ));
    let msg = err.to_string();
    assert!(msg.contains("record BK-7"), "{msg}");
    assert!(msg.contains("extra -> Extra__c"), "{msg}");
    assert!(msg.contains("4 field(s)"), "{msg}");

    let e: Error = err.into();
    assert_eq!(e.kind(), &ErrorKind::InvalidInput);
    assert_eq!(e.context_value("record"), Some("BK-7"));
    assert_eq!(
        e.context_value("fields"),
        Some("Budget__c,Risk__c,Extra__c,Start__c")
    );
}

#[test]
fn records_are_labelled_by_key_field_or_index() {
    let m = Mapping::new()
        .with(FieldMap::new("budget", "Budget").then(t("round(2)")))
        .with_key_field("booking_id");
    let rows = [
        Record::new()
            .with("booking_id", "BK-1")
            .with("budget", "10"),
        Record::new().with("booking_id", "BK-2").with("budget", "x"),
        Record::new().with("budget", "y"),
    ];
    let results = m.apply_all(&rows, Flow::ToCrm);
    assert!(results[0].is_ok());
    assert_eq!(results[1].as_ref().unwrap_err().record, "BK-2");
    assert_eq!(results[2].as_ref().unwrap_err().record, "#2");
}

#[test]
fn pii_values_never_appear_in_errors() {
    let m = Mapping::new()
        .with(
            FieldMap::new("phone", "Phone")
                .then(Transform::phone(Some(CallingCode::new(1).unwrap())))
                .pii(true),
        )
        .with(FieldMap::new("tier", "Tier").then(t("round(0)")).pii(true))
        .with(FieldMap::new("code", "Code").then(t("round(0)")));
    let r = Record::new()
        .with("phone", "call 555-SECRET")
        .with("tier", "secret-tier")
        .with("code", "visible-code");
    let err = m.apply(&r, Flow::ToCrm).unwrap_err();
    let msg = err.to_string();
    assert!(!msg.contains("SECRET"), "{msg}");
    assert!(!msg.contains("secret-tier"), "{msg}");
    assert!(msg.contains("visible-code"), "{msg}");
    for e in &err.errors {
        let one = e.to_string();
        assert!(!one.contains("secret"), "{one}");
    }
}

// --- provider defaults (seed 004) ------------------------------------------------------

#[test]
fn salesforce_contact_defaults_apply_seed_001_transforms() {
    let m = defaults::contact_map(Provider::Salesforce)
        .with_phone_default_country(CallingCode::new(1).unwrap());
    let sf = Record::new()
        .with_id("003XX")
        .with("Id", "003XX")
        .with("FirstName", "o'brien-smith")
        .with("LastName", " ÉLODIE du pont ")
        .with("Email", "Ada@Example.COM")
        .with("Phone", "(415) 555-0100")
        .with("Company", "Acme")
        .with("CreatedDate", "2024-01-15T10:00:00.000+0000");
    let c = m.apply(&sf, Flow::FromCrm).unwrap();
    assert_eq!(c.text(contact::CUSTOMER_ID), Some("003XX"));
    assert_eq!(c.text(contact::FIRST_NAME), Some("O'Brien-Smith"));
    assert_eq!(c.text(contact::LAST_NAME), Some("Élodie Du Pont"));
    assert_eq!(c.text(contact::EMAIL), Some("ada@example.com"));
    assert_eq!(c.text(contact::PHONE), Some("+14155550100"));
    assert_eq!(c.text(contact::COMPANY), Some("Acme"));
    assert_eq!(
        c.get(contact::CREATED_DATE),
        Some(&Value::DateTime(
            Utc.with_ymd_and_hms(2024, 1, 15, 10, 0, 0).unwrap()
        ))
    );
    // Going out, ids and system timestamps are not written.
    let out = m.apply(&c, Flow::ToCrm).unwrap();
    assert!(out.get("Id").is_none());
    assert!(out.get("CreatedDate").is_none());
    assert_eq!(out.text("Email"), Some("ada@example.com"));
}

#[test]
fn defaults_cover_the_seed_tables() {
    for p in Provider::ALL {
        let c = defaults::contact_map(p);
        for m in c.maps() {
            let canonical = match m.direction {
                Direction::FromCrm => &m.target,
                _ => &m.source,
            };
            assert!(
                contact::ALL.contains(&canonical.as_str()),
                "{p}: {canonical}"
            );
        }
        let o = defaults::opportunity_map(p);
        for m in o.maps() {
            let canonical = match m.direction {
                Direction::FromCrm => &m.target,
                _ => &m.source,
            };
            assert!(
                opportunity::ALL.contains(&canonical.as_str()),
                "{p}: {canonical}"
            );
        }
    }
    // Every seed 004 contact field is mapped for the three seed providers.
    for p in [Provider::Salesforce, Provider::HubSpot, Provider::Marketo] {
        let written = defaults::contact_map(p);
        let written = written.fields_written(Flow::FromCrm);
        for f in contact::ALL {
            assert!(written.contains(f), "{p} misses {f}");
        }
    }
    let hs = defaults::contact_map(Provider::HubSpot);
    assert_eq!(
        hs.map_for_target(contact::TITLE, Flow::FromCrm)
            .unwrap()
            .target,
        "jobtitle"
    );
    // HubSpot's "(via associations)" and "(custom)" cells are not maps.
    let hs_opp = defaults::opportunity_map(Provider::HubSpot);
    let fields = hs_opp.fields_written(Flow::FromCrm);
    assert!(!fields.contains(&opportunity::CONTACT_ID));
    assert!(!fields.contains(&opportunity::PROBABILITY));
    assert_eq!(defaults::omitted().len(), 2);
    let mk = defaults::opportunity_map(Provider::Marketo);
    assert_eq!(
        mk.map_for_target("leadId", Flow::ToCrm).unwrap().source,
        opportunity::CONTACT_ID
    );
}

#[test]
fn pipedrive_reads_list_fields() {
    let m = defaults::contact_map(Provider::Pipedrive);
    let person = Record::new()
        .with("id", 42i64)
        .with(
            "email",
            serde_json::json!([{"value": "Ada@Example.com", "primary": true}]),
        )
        .with("first_name", "ada")
        .with("add_time", "2024-01-15 10:00:00");
    let c = m.apply(&person, Flow::FromCrm).unwrap();
    assert_eq!(c.get(contact::CUSTOMER_ID), Some(&Value::Int(42)));
    assert_eq!(c.text(contact::EMAIL), Some("ada@example.com"));
    assert_eq!(c.text(contact::FIRST_NAME), Some("Ada"));
    let out = m.apply(&c, Flow::ToCrm).unwrap();
    assert_eq!(out.text("email"), Some("ada@example.com"));

    let deal = defaults::opportunity_map(Provider::Pipedrive);
    let d = deal
        .apply(
            &Record::new()
                .with("title", "Renewal")
                .with("person_id", serde_json::json!({"value": 7, "name": "Ada"}))
                .with("expected_close_date", "2024-03-31"),
            Flow::FromCrm,
        )
        .unwrap();
    assert_eq!(d.get(opportunity::CONTACT_ID), Some(&Value::Int(7)));
    assert_eq!(
        d.get(opportunity::CLOSE_DATE),
        Some(&Value::Date(NaiveDate::from_ymd_opt(2024, 3, 31).unwrap()))
    );
}

#[test]
fn seed_001_reverse_etl_and_inbound_maps() {
    let m = defaults::reverse_etl_map();
    let row = Record::new()
        .with_id("003XX")
        .with("customer_segment", "High Value")
        .with("lifetime_value", "1234.1")
        .with("churn_risk_score", "0.734")
        .with("last_activity_date", "2024-01-15T08:00:00Z")
        .with("propensity_scores", serde_json::json!({"upsell": 0.72}));
    let sf = m.apply(&row, Flow::ToCrm).unwrap();
    assert_eq!(sf.text("Customer_Segment__c"), Some("High Value"));
    assert_eq!(sf.get("LTV__c").unwrap().to_string(), "1234.10");
    assert_eq!(sf.get("Churn_Risk__c").unwrap().to_string(), "73.4");
    assert_eq!(
        sf.get("Last_Activity__c"),
        Some(&Value::Date(NaiveDate::from_ymd_opt(2024, 1, 15).unwrap()))
    );
    assert_eq!(sf.get("Upsell_Score__c").unwrap().to_string(), "0.72");
    assert_eq!(sf.id.unwrap().as_str(), "003XX");
    // All to_crm: nothing flows back.
    assert!(
        m.apply(&Record::new().with("LTV__c", "1"), Flow::FromCrm)
            .unwrap()
            .is_empty()
    );

    let inbound = defaults::inbound_customer_map();
    let err = inbound
        .apply(
            &Record::new()
                .with("Id", "003XX")
                .with("Phone", "555-0100")
                .with("Custom_Field__c", "{oops"),
            Flow::FromCrm,
        )
        .unwrap_err();
    let targets: Vec<_> = err.errors.iter().map(|e| e.target.as_str()).collect();
    assert_eq!(targets, ["phone_primary", "custom_field"]);
    let ok = inbound
        .apply(
            &Record::new()
                .with("Id", "003XX")
                .with("FirstName", "GRACE")
                .with("Custom_Field__c", r#"{"tier": 2}"#),
            Flow::FromCrm,
        )
        .unwrap();
    assert_eq!(ok.text("crm_id"), Some("003XX"));
    assert_eq!(ok.text("first_name"), Some("Grace"));
    assert_eq!(
        ok.get("custom_field"),
        Some(&Value::Json(serde_json::json!({"tier": 2})))
    );
}
