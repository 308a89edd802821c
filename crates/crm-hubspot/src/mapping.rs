//! Default field maps and the conversion between HubSpot records and
//! [`crm_core::Record`]s.
//!
//! - [`contact_mapping`] / [`deal_mapping`]: seed 004's HubSpot columns
//!   (`firstname`, `lastname`, `jobtitle`, `hs_lead_score`,
//!   `lifecyclestage`, `createdate`, `lastmodifieddate`; deals `dealname`,
//!   `dealstage`, `amount`, `closedate`), taken from
//!   `crm_core::mapping::defaults` so every crate shares one definition, and
//!   for contacts the seed 002 social properties ([`SOCIAL_PROPERTIES`]).
//! - [`record_from_object`] / [`properties_from_record`]: HubSpot sends
//!   every property value as text; with the property definitions (from
//!   [`schema_from_properties`]) values are typed on the way in, and typed
//!   values are written back as the text HubSpot accepts.

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use crm_core::mapping::defaults::{Provider, contact_map, opportunity_map};
use crm_core::{
    Direction, FieldMap, FieldSchema, FieldType, Mapping, ObjectSchema, Record, RecordId, Value,
};

use crate::error::HubSpotError;
use crate::source::parse_time_ms;
use crate::wire::{HsObject, Property, WriteProperties};

/// The seed 002 custom contact properties for social data ("Create these in
/// HubSpot"), mapped both ways under the same names.
pub const SOCIAL_PROPERTIES: [&str; 9] = [
    "twitter_username",
    "twitter_url",
    "twitter_followers",
    "instagram_username",
    "instagram_url",
    "instagram_followers",
    "social_engagement_score",
    "social_platform",
    "social_sentiment",
];

/// The modification-time property that search filters and sorts on:
/// `lastmodifieddate` for contacts, `hs_lastmodifieddate` for every other
/// object (HubSpot's CRM search guide).
pub fn time_property(object: &str) -> &'static str {
    if object == "contacts" {
        "lastmodifieddate"
    } else {
        "hs_lastmodifieddate"
    }
}

/// The prefix of record fields that carry associations: `associations.companies`
/// holds the ids of the companies a record is associated with.
pub const ASSOCIATION_PREFIX: &str = "associations.";

/// The plural object type name HubSpot's paths use: `contact`, `Contact`
/// and `contacts` all give `contacts`; other names are lower-cased.
pub fn plural_object_type(name: &str) -> String {
    let lower = name.trim().to_lowercase();
    match lower.as_str() {
        "contact" => "contacts".to_owned(),
        "company" => "companies".to_owned(),
        "deal" | "opportunity" => "deals".to_owned(),
        "note" => "notes".to_owned(),
        "task" => "tasks".to_owned(),
        _ => lower,
    }
}

/// The object type named by an association field (`associations.company`
/// gives `companies`), or `None` for a property.
pub fn association_target(field: &str) -> Option<String> {
    field
        .strip_prefix(ASSOCIATION_PREFIX)
        .map(plural_object_type)
        .filter(|t| !t.is_empty() && !t.contains(['/', '?', '#', ' ']))
}

/// The field name holding associations with `to` records.
pub fn association_field(to: &str) -> String {
    format!("{ASSOCIATION_PREFIX}{to}")
}

/// The associated ids a written field holds: a JSON array of ids (text
/// or numbers), a single id, comma-separated ids as text, or null / an
/// empty text for none.
///
/// # Errors
/// [`HubSpotError::RecordInvalid`] for anything else (an id must be a
/// positive decimal number).
pub fn association_ids(field: &str, v: &Value) -> Result<Vec<String>, HubSpotError> {
    let bad = || {
        HubSpotError::RecordInvalid(format!(
            "`{field}` must hold record ids (a list, one id, or comma-separated ids)"
        ))
    };
    let raw: Vec<String> = match v {
        Value::Null => Vec::new(),
        Value::Int(i) => vec![i.to_string()],
        Value::Text(t) => t
            .split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(str::to_owned)
            .collect(),
        Value::Json(serde_json::Value::Array(items)) => items
            .iter()
            .map(|x| match x {
                serde_json::Value::String(s) => Ok(s.trim().to_owned()),
                serde_json::Value::Number(n) => Ok(n.to_string()),
                _ => Err(bad()),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(bad()),
    };
    let mut out: Vec<String> = Vec::new();
    for id in raw {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        if !out.contains(&id) {
            out.push(id);
        }
    }
    Ok(out)
}

/// The creation-time property.
pub fn created_property(object: &str) -> &'static str {
    if object == "contacts" {
        "createdate"
    } else {
        "hs_createdate"
    }
}

/// Seed 004's contact map for HubSpot plus the seed 002 social properties.
pub fn contact_mapping() -> Mapping {
    let mut m = contact_map(Provider::HubSpot);
    for p in SOCIAL_PROPERTIES {
        m.push(FieldMap::new(p, p).direction(Direction::Bidirectional));
    }
    m
}

/// Seed 004's opportunity map for HubSpot deals.
pub fn deal_mapping() -> Mapping {
    opportunity_map(Provider::HubSpot)
}

/// The crm-core field type of a HubSpot property definition.
pub fn field_type(p: &Property) -> FieldType {
    match (p.kind.as_str(), p.field_type.as_str()) {
        ("string", "email") => FieldType::Email,
        (_, "phonenumber") | ("phone_number", _) => FieldType::Phone,
        ("string", _) if p.name == "hs_object_id" => FieldType::Id,
        ("string", _) => FieldType::Text,
        ("number", _) if p.name == "hs_object_id" => FieldType::Id,
        ("number", _) => FieldType::Decimal,
        ("bool", _) => FieldType::Bool,
        ("date", _) => FieldType::Date,
        ("datetime", _) => FieldType::DateTime,
        ("enumeration", "checkbox") => FieldType::MultiPicklist,
        ("enumeration", "booleancheckbox") => FieldType::Bool,
        ("enumeration", _) => FieldType::Picklist,
        ("object_coordinates", _) => FieldType::Reference,
        ("json", _) => FieldType::Json,
        (other, _) => FieldType::Unknown(other.to_owned()),
    }
}

/// An [`ObjectSchema`] from the properties API answer. Custom properties
/// (not `hubspotDefined`) are marked custom; unique-value properties (and
/// `email` of contacts) can key upserts.
pub fn schema_from_properties(object: &str, props: &[Property]) -> ObjectSchema {
    let mut schema = ObjectSchema::new(object).primary_key(["hs_object_id"]);
    for p in props {
        if p.archived == Some(true) {
            continue;
        }
        let mut f = FieldSchema::new(p.name.clone(), field_type(p)).label(p.label.clone());
        if p.hubspot_defined != Some(true) {
            f = f.custom();
        }
        let read_only = p
            .modification_metadata
            .as_ref()
            .is_some_and(|m| m.read_only_value)
            || p.calculated == Some(true)
            || p.name == "hs_object_id";
        if read_only {
            f = f.read_only();
        }
        let unique_key =
            p.has_unique_value == Some(true) || (object == "contacts" && p.name == "email");
        if unique_key {
            f = f.unique().external_id();
        }
        if !p.options.is_empty() {
            f = f.picklist(
                p.options
                    .iter()
                    .filter(|o| !o.hidden)
                    .map(|o| o.value.clone()),
            );
        }
        schema = schema.field(f);
    }
    schema
}

/// Types one property value by its field type; text that does not parse
/// stays text so no value is lost.
pub fn typed_value(text: &str, ty: &FieldType) -> Value {
    let parsed = match ty {
        FieldType::Bool => match text {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ => None,
        },
        FieldType::Int => text.parse().ok().map(Value::Int),
        FieldType::Decimal => {
            if text.is_empty() {
                Some(Value::Null)
            } else {
                crm_core::value::parse_decimal(text).map(Value::Decimal)
            }
        }
        FieldType::Date => NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .ok()
            .or_else(|| {
                // Date properties may come as midnight-UTC epoch milliseconds.
                text.parse::<i64>()
                    .ok()
                    .and_then(DateTime::from_timestamp_millis)
                    .map(|d| d.date_naive())
            })
            .or_else(|| {
                DateTime::parse_from_rfc3339(text)
                    .ok()
                    .map(|d| d.with_timezone(&Utc).date_naive())
            })
            .map(Value::Date),
        FieldType::DateTime => parse_time_ms(text)
            .and_then(DateTime::from_timestamp_millis)
            .map(Value::DateTime),
        FieldType::Json => serde_json::from_str(text).ok().map(Value::Json),
        _ => None,
    };
    parsed.unwrap_or_else(|| Value::Text(text.to_owned()))
}

/// A [`Record`] from a HubSpot record: the id, `updatedAt` as the
/// modification time, and every returned property (typed when `schema`
/// knows it, text otherwise; null stays null).
pub fn record_from_object(o: &HsObject, schema: Option<&ObjectSchema>) -> Record {
    let mut r = Record::new().with_id(RecordId::new(o.id.as_str()));
    r.updated_at = o.updated_at;
    for (name, value) in &o.properties {
        let v = match value {
            None => Value::Null,
            Some(text) => match schema.and_then(|s| s.get(name)) {
                Some(f) => typed_value(text, &f.field_type),
                None => Value::Text(text.clone()),
            },
        };
        r.set(name.clone(), v);
    }
    r
}

/// The text HubSpot accepts for a value: booleans `true`/`false`, numbers
/// plainly, dates `YYYY-MM-DD`, date-times ISO-8601 UTC with milliseconds,
/// JSON compact, null as the empty string (which clears a value).
pub fn value_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Decimal(d) => d.normalize().to_string(),
        Value::Text(t) => t.clone(),
        Value::Date(d) => d.format("%Y-%m-%d").to_string(),
        Value::DateTime(t) => t.to_rfc3339_opts(SecondsFormat::Millis, true),
        Value::Json(j) => j.to_string(),
    }
}

/// Properties that HubSpot computes: never sent on writes.
pub fn is_system_property(name: &str) -> bool {
    matches!(
        name,
        "hs_object_id"
            | "createdate"
            | "lastmodifieddate"
            | "hs_createdate"
            | "hs_lastmodifieddate"
            | "id"
    )
}

/// The properties to write for a record: every field except HubSpot's
/// system properties, association fields ([`ASSOCIATION_PREFIX`]) and,
/// when `schema` is given, its read-only ones.
///
/// # Errors
/// [`HubSpotError::RecordInvalid`] when a field name is empty.
pub fn properties_from_record(
    r: &Record,
    schema: Option<&ObjectSchema>,
) -> Result<WriteProperties, HubSpotError> {
    let mut out = WriteProperties::new();
    for (name, value) in &r.fields {
        if name.is_empty() {
            return Err(HubSpotError::RecordInvalid(
                "a field has an empty name".into(),
            ));
        }
        if is_system_property(name) || name.starts_with(ASSOCIATION_PREFIX) {
            continue;
        }
        if schema
            .and_then(|s| s.get(name))
            .is_some_and(|f| !f.writable)
        {
            continue;
        }
        out.insert(name.clone(), value_text(value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{ModificationMetadata, ObjectId, Properties};
    use crm_core::Flow;

    fn prop(name: &str, kind: &str, field_type: &str) -> Property {
        Property {
            name: name.into(),
            label: name.into(),
            kind: kind.into(),
            field_type: field_type.into(),
            hubspot_defined: Some(true),
            ..Property::default()
        }
    }

    #[test]
    fn seed_004_and_002_maps() {
        let m = contact_mapping();
        for f in [
            "firstname",
            "lastname",
            "jobtitle",
            "hs_lead_score",
            "lifecyclestage",
            "createdate",
            "lastmodifieddate",
        ] {
            assert!(m.fields_read(Flow::FromCrm).contains(&f), "{f}");
        }
        for f in SOCIAL_PROPERTIES {
            assert!(m.fields_written(Flow::ToCrm).contains(&f), "{f}");
        }
        let d = deal_mapping();
        for f in ["dealname", "dealstage", "amount", "closedate"] {
            assert!(d.fields_read(Flow::FromCrm).contains(&f), "{f}");
        }
        assert_eq!(time_property("contacts"), "lastmodifieddate");
        assert_eq!(time_property("deals"), "hs_lastmodifieddate");
    }

    #[test]
    fn a_hubspot_contact_maps_to_the_canonical_contact() {
        let mut p = Properties::new();
        for (k, v) in [
            ("firstname", "  ada "),
            ("lastname", "LOVELACE"),
            ("email", "Ada@Example.com "),
            ("jobtitle", "Engineer"),
            ("hs_lead_score", "42"),
            ("lifecyclestage", "lead"),
            ("createdate", "2024-01-15T10:30:00.000Z"),
            ("lastmodifieddate", "2024-02-01T08:00:00.000Z"),
        ] {
            p.insert(k.into(), Some(v.into()));
        }
        let o = HsObject {
            id: ObjectId::new("101"),
            properties: p,
            created_at: None,
            updated_at: None,
            archived: false,
            archived_at: None,
            associations: None,
            object_write_trace_id: None,
            new: None,
        };
        let canonical = contact_mapping()
            .apply(&record_from_object(&o, None), Flow::FromCrm)
            .unwrap();
        assert_eq!(canonical.text("first_name"), Some("Ada"));
        assert_eq!(canonical.text("last_name"), Some("Lovelace"));
        assert_eq!(canonical.text("email"), Some("ada@example.com"));
        assert_eq!(canonical.text("title"), Some("Engineer"));
        assert_eq!(canonical.text("source"), Some("lead"));
        assert!(
            canonical
                .get("last_updated")
                .unwrap()
                .as_datetime()
                .is_some()
        );
    }

    #[test]
    fn schema_marks_custom_unique_and_read_only() {
        let mut score = prop("hs_lead_score", "number", "number");
        score.modification_metadata = Some(ModificationMetadata {
            archivable: false,
            read_only_definition: true,
            read_only_value: true,
        });
        let mut ext = prop("external_id", "string", "text");
        ext.hubspot_defined = None;
        ext.has_unique_value = Some(true);
        let s = schema_from_properties(
            "contacts",
            &[
                prop("email", "string", "text"),
                score,
                ext,
                prop("closedate", "datetime", "date"),
            ],
        );
        assert!(s.get("email").unwrap().external_id);
        assert!(!s.get("hs_lead_score").unwrap().writable);
        assert!(s.get("external_id").unwrap().custom);
        assert!(s.get("external_id").unwrap().external_id);
        assert_eq!(s.get("closedate").unwrap().field_type, FieldType::DateTime);
    }

    #[test]
    fn values_round_trip_through_hubspot_text() {
        for (v, ty) in [
            (Value::Bool(true), FieldType::Bool),
            (Value::Decimal("12.50".parse().unwrap()), FieldType::Decimal),
            (
                Value::Date(NaiveDate::from_ymd_opt(2024, 3, 1).unwrap()),
                FieldType::Date,
            ),
            (
                Value::DateTime(DateTime::from_timestamp_millis(1_700_000_000_123).unwrap()),
                FieldType::DateTime,
            ),
            (Value::Text("x".into()), FieldType::Text),
        ] {
            let back = typed_value(&value_text(&v), &ty);
            match (&v, &back) {
                (Value::Decimal(a), Value::Decimal(b)) => assert_eq!(a.normalize(), *b),
                _ => assert_eq!(back, v),
            }
        }
        assert_eq!(
            typed_value("n/a", &FieldType::Decimal),
            Value::Text("n/a".into())
        );
        assert_eq!(value_text(&Value::Null), "");
    }

    #[test]
    fn writes_skip_system_and_read_only_properties() {
        let r = Record::new()
            .with("email", "a@example.com")
            .with("hs_object_id", "1")
            .with("lastmodifieddate", "x")
            .with("hs_lead_score", 3);
        let mut score = prop("hs_lead_score", "number", "number");
        score.calculated = Some(true);
        let s = schema_from_properties("contacts", &[prop("email", "string", "text"), score]);
        let p = properties_from_record(&r, Some(&s)).unwrap();
        assert_eq!(p.keys().collect::<Vec<_>>(), ["email"]);
    }

    #[test]
    fn association_fields_name_types_and_hold_ids() {
        assert_eq!(
            association_target("associations.company").as_deref(),
            Some("companies")
        );
        assert_eq!(
            association_target("associations.contacts").as_deref(),
            Some("contacts")
        );
        assert_eq!(association_target("associations."), None);
        assert_eq!(association_target("associations.a/b"), None);
        assert_eq!(association_target("email"), None);
        let ids = |v: Value| association_ids("associations.companies", &v);
        assert_eq!(
            ids(Value::Json(serde_json::json!(["12", 13, "12"]))).unwrap(),
            vec!["12", "13"]
        );
        assert_eq!(ids(Value::Text(" 5, 6 ,".into())).unwrap(), vec!["5", "6"]);
        assert_eq!(ids(Value::Int(7)).unwrap(), vec!["7"]);
        assert!(ids(Value::Null).unwrap().is_empty());
        assert!(ids(Value::Json(serde_json::json!([]))).unwrap().is_empty());
        assert!(ids(Value::Text("acme".into())).is_err());
        assert!(ids(Value::Json(serde_json::json!([{"id": "1"}]))).is_err());
        assert!(ids(Value::Bool(true)).is_err());
        // Association fields are never written as properties.
        let r = Record::new().with("firstname", "Ada").with(
            "associations.companies",
            Value::Json(serde_json::json!(["1"])),
        );
        let props = properties_from_record(&r, None).unwrap();
        assert_eq!(props.keys().collect::<Vec<_>>(), vec!["firstname"]);
    }
}
