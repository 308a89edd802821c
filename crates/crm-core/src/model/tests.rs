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
