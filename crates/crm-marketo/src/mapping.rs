//! Between Marketo's JSON and CSV and crm-core's [`Record`] and
//! [`ObjectSchema`], plus the default field maps of seed 004.
//!
//! Values are typed by the field types describe reports: a bulk export CSV
//! cell `""` or `"null"` is null for every type, `"true"`/`"false"` is a
//! boolean in a boolean column, integers and decimals parse exactly, and a
//! cell that does not parse as its column's type stays text rather than
//! turning into a wrong value.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use crm_core::mapping::Mapping;
use crm_core::mapping::defaults::{self, Provider};
use crm_core::{FieldSchema, FieldType, ObjectSchema, Record, RecordId, Value};
use serde_json::Value as Json;

use crate::ObjectKind;
use crate::wire::{LeadAttribute, ObjectDescription, WireRecord};

/// Seed 004's contact map for Marketo leads (`firstName`, `lastName`,
/// `leadScore`, `leadSource`, `createdAt`, `updatedAt`, ...).
pub fn lead_map() -> Mapping {
    defaults::contact_map(Provider::Marketo)
}

/// Seed 004's opportunity map for Marketo (`name`, `stage`, `amount`,
/// `probability`, `closeDate`, `leadId`).
pub fn opportunity_map() -> Mapping {
    defaults::opportunity_map(Provider::Marketo)
}

/// The crm-core type of a Marketo `dataType`.
pub fn field_type(data_type: &str) -> FieldType {
    match data_type {
        "string" | "text" => FieldType::Text,
        "email" => FieldType::Email,
        "phone" => FieldType::Phone,
        "url" => FieldType::Url,
        "boolean" => FieldType::Bool,
        "integer" | "score" => FieldType::Int,
        "float" | "currency" | "percent" => FieldType::Decimal,
        "date" => FieldType::Date,
        "datetime" => FieldType::DateTime,
        "reference" => FieldType::Reference,
        other => FieldType::Unknown(other.to_owned()),
    }
}

/// The lead schema from `leads/describe.json`.
pub fn schema_from_lead_describe(attrs: &[LeadAttribute]) -> ObjectSchema {
    let mut schema = ObjectSchema::new("leads").primary_key(["id"]);
    for a in attrs {
        let Some(rest) = &a.rest else { continue };
        let ty = if rest.name == "id" {
            FieldType::Id
        } else {
            field_type(&a.data_type)
        };
        let mut f = FieldSchema::new(rest.name.clone(), ty).label(a.display_name.clone());
        if rest.read_only {
            f = f.read_only();
        }
        if let Some(n) = a.length {
            f = f.max_length(n);
        }
        if rest.name == "email" {
            f = f.external_id();
        }
        schema = schema.field(f);
    }
    schema
}

/// A company or opportunity schema from its description: the id field is
/// the key, dedupe fields are external ids.
pub fn schema_from_description(object: ObjectKind, d: &ObjectDescription) -> ObjectSchema {
    let mut schema = ObjectSchema::new(object.path()).primary_key([d.id_field.clone()]);
    for field in &d.fields {
        let ty = if field.name == d.id_field {
            FieldType::Id
        } else {
            field_type(&field.data_type)
        };
        let mut f = FieldSchema::new(field.name.clone(), ty).label(field.display_name.clone());
        if !field.updateable && !d.dedupe_fields.contains(&field.name) {
            f = f.read_only();
        }
        if d.dedupe_fields.contains(&field.name) {
            f = f.external_id();
        }
        if let Some(n) = field.length {
            f = f.max_length(n);
        }
        schema = schema.field(f);
    }
    schema
}

/// The fixed columns of an activity export.
pub fn activity_schema() -> ObjectSchema {
    let fields = [
        ("marketoGUID", FieldType::Id),
        ("leadId", FieldType::Reference),
        ("activityDate", FieldType::DateTime),
        ("activityTypeId", FieldType::Int),
        ("campaignId", FieldType::Int),
        ("primaryAttributeValueId", FieldType::Int),
        ("primaryAttributeValue", FieldType::Text),
        ("attributes", FieldType::Json),
    ];
    fields.into_iter().fold(
        ObjectSchema::new("activities").primary_key(["marketoGUID"]),
        |s, (n, t)| s.field(FieldSchema::new(n, t).read_only()),
    )
}

fn parse_datetime(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .or_else(|| DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%z").ok())
        .map(|d| d.with_timezone(&Utc))
}

/// A CSV cell typed by its column's type: `""` and `"null"` are null;
/// booleans, integers, decimals, dates and date-times parse; anything that
/// does not parse stays text (never a made-up value).
pub fn typed_cell(cell: &str, ty: Option<&FieldType>) -> Value {
    if cell.is_empty() || cell == "null" {
        return Value::Null;
    }
    let parsed = match ty {
        Some(FieldType::Bool) => match cell {
            "true" | "TRUE" | "True" | "1" => Some(Value::Bool(true)),
            "false" | "FALSE" | "False" | "0" => Some(Value::Bool(false)),
            _ => None,
        },
        Some(FieldType::Int | FieldType::Reference) => cell.parse::<i64>().ok().map(Value::Int),
        Some(FieldType::Decimal) => crm_core::value::parse_decimal(cell).map(Value::Decimal),
        Some(FieldType::Date) => NaiveDate::parse_from_str(cell, "%Y-%m-%d")
            .ok()
            .map(Value::Date),
        Some(FieldType::DateTime) => parse_datetime(cell).map(Value::DateTime),
        Some(FieldType::Json) => serde_json::from_str(cell).ok().map(Value::Json),
        _ => None,
    };
    parsed.unwrap_or_else(|| Value::Text(cell.to_owned()))
}

/// A JSON value typed by its field's type (date-times and dates from their
/// ISO strings, numbers sent as strings parsed).
pub fn typed_json(v: Json, ty: Option<&FieldType>) -> Value {
    match (&v, ty) {
        (Json::String(s), Some(t)) => typed_cell(s, Some(t)),
        _ => Value::from_json(v),
    }
}

/// A record from a REST result: the id field becomes [`Record::id`] (and
/// stays a field), `updatedAt` becomes [`Record::updated_at`].
pub fn record_from_wire(
    object: ObjectKind,
    wire: WireRecord,
    types: &HashMap<String, FieldType>,
) -> Record {
    let mut record = Record::new();
    for (name, v) in wire {
        if name == "seq" {
            continue;
        }
        let value = typed_json(v, types.get(&name));
        record.set(name, value);
    }
    finish_record(object, record)
}

/// Sets [`Record::id`] and [`Record::updated_at`] from the fields.
pub fn finish_record(object: ObjectKind, mut record: Record) -> Record {
    let id = match record.get(object.id_field()) {
        Some(Value::Int(i)) => Some(i.to_string()),
        Some(Value::Text(s)) => Some(s.clone()),
        _ => None,
    };
    if let Some(id) = id {
        record.id = Some(RecordId::new(id));
    }
    if let Some(at) = record.get("updatedAt").and_then(Value::as_datetime) {
        record.updated_at = Some(at);
    }
    record
}

/// A record's fields as Marketo JSON: decimals as JSON numbers where exact,
/// date-times as ISO 8601.
pub fn wire_from_record(record: &Record) -> WireRecord {
    record
        .fields
        .iter()
        .map(|(k, v)| {
            let j = match v {
                Value::Decimal(d) => serde_json::from_str::<Json>(&d.to_string())
                    .unwrap_or_else(|_| Json::String(d.to_string())),
                other => other.to_json(),
            };
            (k.clone(), j)
        })
        .collect()
}

/// A comparable text of a JSON value (numbers and numeric strings alike).
pub(crate) fn comparable(v: &Json) -> String {
    match v {
        Json::Null => String::new(),
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_are_typed_or_null() {
        let int = FieldType::Int;
        let b = FieldType::Bool;
        assert_eq!(typed_cell("", Some(&int)), Value::Null);
        assert_eq!(typed_cell("null", Some(&int)), Value::Null);
        assert_eq!(typed_cell("42", Some(&int)), Value::Int(42));
        assert_eq!(typed_cell("true", Some(&b)), Value::Bool(true));
        assert_eq!(typed_cell("false", Some(&b)), Value::Bool(false));
        assert_eq!(typed_cell("", Some(&b)), Value::Null);
        assert_eq!(typed_cell("null", Some(&b)), Value::Null);
        // A text column keeps "true" as text.
        assert_eq!(
            typed_cell("true", Some(&FieldType::Text)),
            Value::Text("true".into())
        );
        // A cell that does not parse stays text, not a wrong number.
        assert_eq!(typed_cell("n/a", Some(&int)), Value::Text("n/a".into()));
        assert_eq!(
            typed_cell("12.50", Some(&FieldType::Decimal)).to_string(),
            "12.50"
        );
    }

    #[test]
    fn seed_004_maps_name_marketo_fields() {
        let m = lead_map();
        let targets: Vec<&str> = m.maps().iter().map(|f| f.target.as_str()).collect();
        let sources: Vec<&str> = m.maps().iter().map(|f| f.source.as_str()).collect();
        for f in [
            "firstName",
            "lastName",
            "leadScore",
            "leadSource",
            "createdAt",
            "updatedAt",
        ] {
            assert!(
                targets.contains(&f) || sources.contains(&f),
                "{f} missing in {targets:?} / {sources:?}"
            );
        }
        let o = opportunity_map();
        let names: Vec<String> = o
            .maps()
            .iter()
            .flat_map(|f| [f.source.clone(), f.target.clone()])
            .collect();
        for f in ["name", "stage", "amount", "probability", "closeDate"] {
            assert!(names.iter().any(|n| n == f), "{f}");
        }
    }

    #[test]
    fn wire_records_get_ids_and_types() {
        let types: HashMap<String, FieldType> = [
            ("updatedAt".to_owned(), FieldType::DateTime),
            ("leadScore".to_owned(), FieldType::Int),
        ]
        .into();
        let wire: WireRecord = serde_json::from_str(
            r#"{"id":7,"email":"a@b.c","leadScore":"12","updatedAt":"2024-01-02T03:04:05Z"}"#,
        )
        .unwrap();
        let r = record_from_wire(ObjectKind::Leads, wire, &types);
        assert_eq!(r.id.as_ref().map(RecordId::as_str), Some("7"));
        assert_eq!(r.get("leadScore"), Some(&Value::Int(12)));
        assert!(r.updated_at.is_some());
        let back =
            wire_from_record(&Record::new().with("amount", Value::Decimal("1.5".parse().unwrap())));
        assert_eq!(back["amount"], serde_json::json!(1.5));
    }
}
