use chrono::{DateTime, NaiveDate, Utc};
use proptest::option;
use proptest::prelude::*;
use rust_decimal::Decimal;

use super::*;
use crate::{Record, Value};

fn arb_text() -> impl Strategy<Value = String> {
    "[A-Za-z0-9 '.-]{1,24}".prop_filter("not blank", |s| !s.trim().is_empty())
}

fn arb_decimal() -> impl Strategy<Value = Decimal> {
    (any::<i64>(), 0u32..=10).prop_map(|(m, s)| Decimal::new(m, s))
}

fn arb_date() -> impl Strategy<Value = NaiveDate> {
    (0i32..40_000)
        .prop_map(|d| NaiveDate::from_num_days_from_ce_opt(720_000 + d).unwrap_or_default())
}

fn arb_time() -> impl Strategy<Value = DateTime<Utc>> {
    (0i64..4_000_000_000).prop_map(|s| DateTime::from_timestamp(s, 0).unwrap_or_default())
}

fn arb_booking() -> impl Strategy<Value = Booking> {
    (
        (
            arb_text(),
            option::of(arb_text()),
            arb_text(),
            arb_text(),
            option::of(arb_text()),
        ),
        (
            arb_date(),
            arb_date(),
            arb_decimal(),
            "[A-Z]{3}",
            option::of(arb_decimal()),
        ),
        (
            option::of(any::<i64>()),
            option::of(any::<i64>()),
            option::of(any::<i64>()),
        ),
        (0usize..4, 0usize..4),
        (
            option::of(arb_time()),
            option::of(arb_time()),
            option::of(arb_time()),
        ),
    )
        .prop_map(|(a, b, c, d, e)| Booking {
            booking_id: BookingId::new(a.0),
            client_id: a.1.map(ClientId::new),
            client_name: a.2,
            campaign_name: a.3,
            campaign_id: a.4.map(CampaignId::new),
            start_date: b.0,
            end_date: b.1,
            budget: b.2,
            currency: b.3.parse().unwrap_or_default(),
            margin_target: b.4,
            impressions_booked: c.0,
            clicks_booked: c.1,
            conversions_booked: c.2,
            media_type: MediaType::ALL[d.0],
            dsp_platform: DspPlatform::ALL[d.1],
            created_at: e.0,
            updated_at: e.1,
            synced_at: e.2,
        })
}

fn arb_contact() -> impl Strategy<Value = Contact> {
    (
        option::of(arb_text()),
        (
            option::of(arb_text()),
            option::of(arb_text()),
            option::of(arb_text()),
        ),
        (
            option::of(arb_text()),
            option::of(arb_text()),
            option::of(arb_text()),
        ),
        (
            option::of(arb_decimal()),
            option::of(arb_text()),
            option::of(arb_text()),
        ),
        (option::of(arb_time()), option::of(arb_time())),
    )
        .prop_map(|(id, a, b, c, d)| Contact {
            id: id.map(ContactId::new),
            email: a.0,
            first_name: a.1,
            last_name: a.2,
            phone: b.0,
            company: b.1,
            title: b.2,
            lead_score: c.0,
            source: c.1,
            account_id: c.2.map(CompanyId::new),
            created_date: d.0,
            last_updated: d.1,
        })
}

fn arb_deal() -> impl Strategy<Value = Deal> {
    (
        option::of(arb_text()),
        (
            option::of(arb_text()),
            option::of(arb_text()),
            arb_text(),
            option::of(arb_text()),
        ),
        (
            option::of(arb_decimal()),
            option::of(arb_decimal()),
            option::of(arb_date()),
        ),
        (option::of(arb_time()), option::of(arb_time())),
    )
        .prop_map(|(id, a, b, c)| Deal {
            id: id.map(DealId::new),
            contact_id: a.0.map(ContactId::new),
            company_id: a.1.map(CompanyId::new),
            name: a.2,
            stage: a.3,
            value: b.0,
            probability: b.1,
            close_date: b.2,
            created_date: c.0,
            last_updated: c.1,
        })
}

fn arb_client() -> impl Strategy<Value = Client> {
    (
        (arb_text(), arb_text(), "[A-Z0-9]{3}", arb_text(), 0usize..3),
        (arb_text(), arb_text(), arb_text(), "[A-Z]{3}", arb_text()),
    )
        .prop_map(|(a, b)| Client {
            client_id: ClientId::new(a.0),
            client_name: a.1,
            client_code: a.2.parse().unwrap_or_else(|_| "ABC".parse().unwrap()),
            industry: a.3,
            tier: ClientTier::ALL[a.4],
            account_manager: b.0,
            primary_contact_email: b.1,
            billing_email: b.2,
            default_currency: b.3.parse().unwrap_or_default(),
            timezone: b.4,
        })
}

/// Any printable text, mostly outside ASCII: accents, CJK, emoji, RTL, and
/// leading or trailing spaces (only all-blank text is excluded, because a
/// blank field means "no value").
fn arb_unicode_text() -> impl Strategy<Value = String> {
    "\\PC{1,24}".prop_filter("not blank", |s| !s.trim().is_empty())
}

/// Either kind of text, so both plain and unicode values show up.
fn arb_any_text() -> impl Strategy<Value = String> {
    prop_oneof![arb_text(), arb_unicode_text()]
}

/// Decimals over the whole 96-bit mantissa and every scale `rust_decimal`
/// allows (0..=28), so a conversion that drops the scale or the precision
/// shows up.
fn arb_wide_decimal() -> impl Strategy<Value = Decimal> {
    const MAX: i128 = (1i128 << 96) - 1;
    prop_oneof![
        arb_decimal(),
        (-MAX..=MAX, 0u32..=28).prop_map(|(m, s)| Decimal::from_i128_with_scale(m, s)),
    ]
}

/// The scale of an optional decimal: `Decimal`'s `==` ignores scale
/// (`1.10 == 1.1`), so round trips compare scales separately.
fn scale(d: Option<Decimal>) -> Option<u32> {
    d.map(|d| d.scale())
}

fn arb_lead() -> impl Strategy<Value = Lead> {
    (
        option::of(arb_any_text()),
        (
            option::of(arb_any_text()),
            option::of(arb_any_text()),
            option::of(arb_any_text()),
            option::of(arb_any_text()),
        ),
        (
            option::of(arb_any_text()),
            option::of(arb_any_text()),
            option::of(arb_any_text()),
            option::of(arb_any_text()),
        ),
        (
            option::of(arb_wide_decimal()),
            option::of(arb_time()),
            option::of(arb_time()),
        ),
    )
        .prop_map(|(id, a, b, c)| Lead {
            id: id.map(LeadId::new),
            email: a.0,
            first_name: a.1,
            last_name: a.2,
            phone: a.3,
            company: b.0,
            title: b.1,
            source: b.2,
            status: b.3,
            lead_score: c.0,
            created_date: c.1,
            last_updated: c.2,
        })
}

fn arb_company() -> impl Strategy<Value = Company> {
    (
        option::of(arb_any_text()),
        (
            arb_any_text(),
            option::of(arb_any_text()),
            option::of(arb_any_text()),
            option::of(arb_any_text()),
        ),
        (
            option::of(any::<i64>()),
            option::of(arb_wide_decimal()),
            option::of(arb_time()),
            option::of(arb_time()),
        ),
    )
        .prop_map(|(id, a, b)| Company {
            id: id.map(CompanyId::new),
            name: a.0,
            domain: a.1,
            industry: a.2,
            phone: a.3,
            employee_count: b.0,
            annual_revenue: b.1,
            created_date: b.2,
            last_updated: b.3,
        })
}

fn arb_activity() -> impl Strategy<Value = Activity> {
    (
        option::of(arb_any_text()),
        (
            arb_any_text(),
            option::of(arb_any_text()),
            option::of(arb_time()),
            option::of(any::<bool>()),
        ),
        (
            option::of(arb_any_text()),
            option::of(arb_any_text()),
            option::of(arb_any_text()),
        ),
        (option::of(arb_any_text()), option::of(arb_time())),
    )
        .prop_map(|(id, a, b, c)| Activity {
            id: id.map(ActivityId::new),
            activity_type: a.0,
            subject: a.1,
            due_at: a.2,
            done: a.3,
            contact_id: b.0.map(ContactId::new),
            deal_id: b.1.map(DealId::new),
            company_id: b.2.map(CompanyId::new),
            description: c.0,
            last_updated: c.1,
        })
}

fn arb_note() -> impl Strategy<Value = Note> {
    (
        option::of(arb_any_text()),
        arb_any_text(),
        (
            option::of(arb_any_text()),
            option::of(arb_any_text()),
            option::of(arb_any_text()),
        ),
        (option::of(arb_time()), option::of(arb_time())),
    )
        .prop_map(|(id, body, a, b)| Note {
            id: id.map(NoteId::new),
            body,
            contact_id: a.0.map(ContactId::new),
            deal_id: a.1.map(DealId::new),
            company_id: a.2.map(CompanyId::new),
            created_date: b.0,
            last_updated: b.1,
        })
}

fn arb_campaign() -> impl Strategy<Value = Campaign> {
    (
        (arb_any_text(), arb_any_text(), option::of(arb_any_text())),
        (
            option::of(arb_date()),
            option::of(arb_date()),
            option::of(arb_any_text()),
        ),
        (
            option::of(0usize..DspPlatform::ALL.len()),
            option::of(arb_wide_decimal()),
        ),
    )
        .prop_map(|(a, b, c)| Campaign {
            campaign_id: CampaignId::new(a.0),
            name: a.1,
            advertiser_name: a.2,
            start_date: b.0,
            end_date: b.1,
            status: b.2,
            dsp_platform: c.0.map(|i| DspPlatform::ALL[i]),
            budget: c.1,
        })
}

/// The record as a spreadsheet or CSV would hand it over: every value
/// rendered as text, `None` as an empty cell.
fn as_sheet_text(r: &Record) -> Record {
    let mut out = Record::new();
    out.id = r.id.clone();
    for (name, v) in &r.fields {
        out.set(name.clone(), Value::Text(v.to_string()));
    }
    out
}

proptest! {
    #[test]
    fn booking_round_trips(b in arb_booking()) {
        let r = Record::from(b.clone());
        prop_assert_eq!(r.id.as_ref().map(|i| i.as_str()), Some(b.booking_id.as_str()));
        let back = Booking::try_from(&r).unwrap();
        prop_assert_eq!(&back, &b);
        // And the record made from the round-tripped model is the same record.
        prop_assert_eq!(Record::from(back), r);
    }

    #[test]
    fn client_round_trips(c in arb_client()) {
        let r = Record::from(c.clone());
        prop_assert_eq!(Client::try_from(&r).unwrap(), c);
    }

    #[test]
    fn contact_round_trips(c in arb_contact()) {
        let r = Record::from(c.clone());
        prop_assert_eq!(Contact::try_from(&r).unwrap(), c);
    }

    #[test]
    fn deal_round_trips(d in arb_deal()) {
        let r = Record::from(d.clone());
        prop_assert_eq!(Deal::try_from(&r).unwrap(), d);
    }

    #[test]
    fn lead_round_trips(l in arb_lead()) {
        let r = Record::from(l.clone());
        prop_assert_eq!(r.id.as_ref().map(|i| i.as_str()), l.id.as_ref().map(|i| i.as_str()));
        prop_assert_eq!(r.fields.len(), Lead::FIELDS.len());
        let back = Lead::try_from(&r).unwrap();
        prop_assert_eq!(&back, &l);
        prop_assert_eq!(scale(back.lead_score), scale(l.lead_score));
        prop_assert_eq!(Record::from(back), r);
    }

    #[test]
    fn company_round_trips(c in arb_company()) {
        let r = Record::from(c.clone());
        prop_assert_eq!(r.id.as_ref().map(|i| i.as_str()), c.id.as_ref().map(|i| i.as_str()));
        prop_assert_eq!(r.fields.len(), Company::FIELDS.len());
        let back = Company::try_from(&r).unwrap();
        prop_assert_eq!(&back, &c);
        prop_assert_eq!(scale(back.annual_revenue), scale(c.annual_revenue));
        prop_assert_eq!(Record::from(back), r);
    }

    #[test]
    fn activity_round_trips(a in arb_activity()) {
        let r = Record::from(a.clone());
        prop_assert_eq!(r.id.as_ref().map(|i| i.as_str()), a.id.as_ref().map(|i| i.as_str()));
        prop_assert_eq!(r.fields.len(), Activity::FIELDS.len());
        let back = Activity::try_from(&r).unwrap();
        prop_assert_eq!(&back, &a);
        prop_assert_eq!(Record::from(back), r);
    }

    #[test]
    fn note_round_trips(n in arb_note()) {
        let r = Record::from(n.clone());
        prop_assert_eq!(r.id.as_ref().map(|i| i.as_str()), n.id.as_ref().map(|i| i.as_str()));
        prop_assert_eq!(r.fields.len(), Note::FIELDS.len());
        let back = Note::try_from(&r).unwrap();
        prop_assert_eq!(&back, &n);
        prop_assert_eq!(Record::from(back), r);
    }

    #[test]
    fn campaign_round_trips(c in arb_campaign()) {
        let r = Record::from(c.clone());
        prop_assert_eq!(r.id.as_ref().map(|i| i.as_str()), Some(c.campaign_id.as_str()));
        prop_assert_eq!(r.fields.len(), Campaign::FIELDS.len());
        let back = Campaign::try_from(&r).unwrap();
        prop_assert_eq!(&back, &c);
        prop_assert_eq!(scale(back.budget), scale(c.budget));
        prop_assert_eq!(Record::from(back), r);
    }

    /// The same models survive being flattened to text cells (a sheet or CSV
    /// row) and parsed back, scale of decimals included.
    #[test]
    fn crm_models_round_trip_through_sheet_text(
        l in arb_lead(),
        co in arb_company(),
        a in arb_activity(),
        n in arb_note(),
        ca in arb_campaign(),
    ) {
        let back = Lead::try_from(&as_sheet_text(&Record::from(l.clone()))).unwrap();
        prop_assert_eq!(scale(back.lead_score), scale(l.lead_score));
        prop_assert_eq!(back, l);
        let back = Company::try_from(&as_sheet_text(&Record::from(co.clone()))).unwrap();
        prop_assert_eq!(scale(back.annual_revenue), scale(co.annual_revenue));
        prop_assert_eq!(back, co);
        let back = Activity::try_from(&as_sheet_text(&Record::from(a.clone()))).unwrap();
        prop_assert_eq!(back, a);
        let back = Note::try_from(&as_sheet_text(&Record::from(n.clone()))).unwrap();
        prop_assert_eq!(back, n);
        let back = Campaign::try_from(&as_sheet_text(&Record::from(ca.clone()))).unwrap();
        prop_assert_eq!(scale(back.budget), scale(ca.budget));
        prop_assert_eq!(back, ca);
    }

    #[test]
    fn models_survive_serde(b in arb_booking()) {
        let json = serde_json::to_string(&b).unwrap();
        let back: Booking = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(back, b);
    }
}

fn sheet_row() -> Record {
    Record::new()
        .with("booking_id", Value::Int(1001))
        .with("client_name", "Acme")
        .with("campaign_name", "Spring Sale")
        .with("start_date", "2024-03-01")
        .with("end_date", "2024-03-31")
        .with("budget", "2500.10")
        .with("impressions_booked", "1000000")
        .with("media_type", "Display")
        .with("dsp_platform", "google ads")
}

#[test]
fn loose_sheet_values_convert() {
    let b = Booking::try_from(&sheet_row()).unwrap();
    assert_eq!(b.booking_id.as_str(), "1001");
    assert_eq!(b.budget.to_string(), "2500.10");
    assert_eq!(b.impressions_booked, Some(1_000_000));
    assert_eq!(b.media_type, MediaType::Display);
    assert_eq!(b.dsp_platform, DspPlatform::GoogleAds);
    assert_eq!(b.currency, Currency::USD);
}

#[test]
fn unknown_enum_text_names_the_field() {
    let err = Booking::try_from(&sheet_row().with("dsp_platform", "AmazonDSP")).unwrap_err();
    assert_eq!(err.field(), "dsp_platform");
    assert_eq!(err.record(), "1001");
    assert!(
        err.to_string().contains("DV360, TTD, Meta, GoogleAds"),
        "{err}"
    );
}

#[test]
fn missing_required_field_names_the_field() {
    let mut row = sheet_row();
    row.remove("budget");
    let err = Booking::try_from(&row).unwrap_err();
    assert!(matches!(
        err,
        ModelError::Missing {
            field: "budget",
            ..
        }
    ));
    let e: crate::Error = err.into();
    assert_eq!(e.context_value("field"), Some("budget"));
}

#[test]
fn bad_numbers_are_errors_not_zero() {
    let err = Booking::try_from(&sheet_row().with("budget", "n/a")).unwrap_err();
    assert_eq!(err.field(), "budget");
    let err = Booking::try_from(&sheet_row().with("impressions_booked", "1.5")).unwrap_err();
    assert_eq!(err.field(), "impressions_booked");
}

#[test]
fn client_code_is_exactly_three_chars() {
    assert!("ACM".parse::<ClientCode>().is_ok());
    assert!("AC".parse::<ClientCode>().is_err());
    assert!("ACME".parse::<ClientCode>().is_err());
    assert!(" AC".parse::<ClientCode>().is_err());
    assert!(
        "ÉTÉ".parse::<ClientCode>().is_ok(),
        "three characters, not bytes"
    );
}

#[test]
fn currency_codes() {
    assert_eq!(" eur".parse::<Currency>().unwrap().as_str(), "EUR");
    assert!("EURO".parse::<Currency>().is_err());
    assert!("E1R".parse::<Currency>().is_err());
}

#[test]
fn record_id_fills_missing_key() {
    let mut row = sheet_row();
    row.remove("booking_id");
    let row = row.with_id("BK-9");
    assert_eq!(Booking::try_from(&row).unwrap().booking_id.as_str(), "BK-9");
}

#[test]
fn id_fields_from_field_maps_fill_the_id() {
    let mapped = Record::new()
        .with("customer_id", "003A")
        .with("email", "a@b.co");
    assert_eq!(
        Contact::try_from(&mapped).unwrap().id,
        Some(ContactId::new("003A"))
    );
    let deal = Record::new().with("id", Value::Int(42)).with("name", "Big");
    assert_eq!(Deal::try_from(&deal).unwrap().id, Some(DealId::new("42")));
    // Record::id wins over fields.
    let both = mapped.clone().with_id("003B");
    assert_eq!(
        Contact::try_from(&both).unwrap().id,
        Some(ContactId::new("003B"))
    );
}

fn campaign_row() -> Record {
    Record::new()
        .with("campaign_id", "CMP-7")
        .with("name", "Été 2024 — 夏")
        .with("start_date", "2024-06-01")
        .with("end_date", "2024-08-31")
        .with("dsp_platform", "the trade desk")
        .with("budget", "12500.50")
}

#[test]
fn campaign_unknown_dsp_names_the_field() {
    let err = Campaign::try_from(&campaign_row()).unwrap_err();
    assert_eq!(err.field(), "dsp_platform");
    assert_eq!(err.record(), "CMP-7");
    assert!(
        err.to_string().contains("DV360, TTD, Meta, GoogleAds"),
        "{err}"
    );

    let c = Campaign::try_from(&campaign_row().with("dsp_platform", " google-ads ")).unwrap();
    assert_eq!(c.dsp_platform, Some(DspPlatform::GoogleAds));
    assert_eq!(c.name, "Été 2024 — 夏");
    assert_eq!(c.budget.map(|b| b.to_string()).as_deref(), Some("12500.50"));
    // A blank cell is no platform, not an error.
    let c = Campaign::try_from(&campaign_row().with("dsp_platform", "  ")).unwrap();
    assert_eq!(c.dsp_platform, None);
}

#[test]
fn campaign_key_comes_from_record_id_or_is_missing() {
    let mut row = campaign_row().with("dsp_platform", "TTD");
    row.remove("campaign_id");
    let err = Campaign::try_from(&row).unwrap_err();
    assert!(matches!(
        err,
        ModelError::Missing {
            object: "campaign",
            field: "campaign_id",
            ..
        }
    ));
    assert_eq!(err.record(), "#0");
    let c = Campaign::try_from(&row.with_id("CMP-8")).unwrap();
    assert_eq!(c.campaign_id.as_str(), "CMP-8");
}

#[test]
fn crm_models_missing_required_fields_name_the_field() {
    let cases: [(Result<(), ModelError>, &str, &str); 4] = [
        (
            Company::try_from(&Record::new().with_id("001A").with("domain", "acme.io")).map(drop),
            "company",
            "name",
        ),
        (
            Activity::try_from(&Record::new().with_id("T-1").with("subject", "Call")).map(drop),
            "activity",
            "activity_type",
        ),
        (
            // Whitespace-only text is blank, so it counts as missing.
            Note::try_from(&Record::new().with_id("N-1").with("body", " \t ")).map(drop),
            "note",
            "body",
        ),
        (
            Campaign::try_from(&Record::new().with("campaign_id", "CMP-1")).map(drop),
            "campaign",
            "name",
        ),
    ];
    for (result, object, field) in cases {
        match result.unwrap_err() {
            ModelError::Missing {
                object: o,
                field: f,
                ..
            } => assert_eq!((o, f), (object, field)),
            other => panic!("expected {object}.{field} missing, got {other}"),
        }
    }
    // A lead has no required fields.
    assert_eq!(
        Lead::try_from(&Record::new()).unwrap(),
        Lead {
            id: None,
            email: None,
            first_name: None,
            last_name: None,
            phone: None,
            company: None,
            title: None,
            source: None,
            status: None,
            lead_score: None,
            created_date: None,
            last_updated: None,
        }
    );
}

#[test]
fn crm_models_reject_bad_values_by_field() {
    let err = Lead::try_from(&Record::new().with_id("L-1").with("lead_score", "hot")).unwrap_err();
    assert_eq!((err.field(), err.record()), ("lead_score", "L-1"));
    let err = Company::try_from(
        &Record::new()
            .with("name", "Acme")
            .with("employee_count", "12.5"),
    )
    .unwrap_err();
    assert_eq!((err.field(), err.record()), ("employee_count", "#0"));
    let err = Activity::try_from(
        &Record::new()
            .with("activity_type", "call")
            .with("done", "maybe"),
    )
    .unwrap_err();
    assert_eq!(err.field(), "done");
    let err = Note::try_from(
        &Record::new()
            .with("body", "hi")
            .with("created_date", "yesterday"),
    )
    .unwrap_err();
    assert_eq!(err.field(), "created_date");
}

#[test]
fn crm_models_accept_loose_values() {
    let a = Activity::try_from(
        &Record::new()
            .with("id", Value::Int(77))
            .with("activity_type", "meeting")
            .with("done", "yes")
            .with("due_at", "2024-03-01T09:30:00+02:00"),
    )
    .unwrap();
    assert_eq!(a.id, Some(ActivityId::new("77")));
    assert_eq!(a.done, Some(true));
    assert_eq!(
        a.due_at,
        DateTime::parse_from_rfc3339("2024-03-01T07:30:00Z")
            .ok()
            .map(|t| t.with_timezone(&Utc))
    );
    let c = Company::try_from(
        &Record::new()
            .with("name", "Acme")
            .with("employee_count", "250")
            .with("annual_revenue", "1.5e6"),
    )
    .unwrap();
    assert_eq!(c.employee_count, Some(250));
    assert_eq!(c.annual_revenue, Some(Decimal::new(1_500_000, 0)));
    let n = Note::try_from(&Record::new().with("id", "N-9").with("body", Value::Int(42))).unwrap();
    assert_eq!(n.id, Some(NoteId::new("N-9")));
    assert_eq!(n.body, "42");
}
