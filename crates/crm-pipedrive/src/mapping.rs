//! Field resolution and record conversion.
//!
//! Pipedrive keys custom fields by 40-character hashes
//! (`9dc80c50d78a15643bfc4ca79d76156a73a1ca0e`). A [`FieldCatalog`], read from
//! `personFields` / `organizationFields` / `dealFields`, turns them into the
//! names people see ("Customer Type") on read and back into hashes on write,
//! and `enum` / `set` option ids into labels and back. Sources read the
//! catalog again every run, so a field renamed between runs is read under
//! its new name and written by its unchanged hash. Names are matched
//! case-insensitively; a hash is accepted as a name too. A name that matches
//! nothing is refused before anything is sent (mangled keys answer 400).
//!
//! Records use Pipedrive's v1 field names, so the default maps of
//! `crm_core::mapping::defaults` ([`contact_map`], [`opportunity_map`])
//! apply unchanged: v2's `emails` / `phones` become `email` / `phone` lists
//! of `{value, primary, label}` (`email.0.value` is the primary address),
//! and `person_id` / `org_id` become `{"value": id}`. Deals also carry
//! `pipeline_name` and `stage_name` from the pipelines and stages.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDateTime, Utc};
use crm_core::mapping::defaults::{self, Provider};
use crm_core::{
    FieldSchema, FieldType, Mapping, ObjectSchema, PicklistValue, Record, RecordId, Value,
};
use serde_json::{Map, Value as Json, json};

use crate::ObjectKind;
use crate::error::PipedriveError;
use crate::wire::{Field, PdRecord, Pipeline, Stage};

/// The default person map (contacts): `crm_core`'s, for [`Provider::Pipedrive`].
pub fn contact_map() -> Mapping {
    defaults::contact_map(Provider::Pipedrive)
}

/// The default deal map (opportunities): `crm_core`'s, for [`Provider::Pipedrive`].
pub fn opportunity_map() -> Mapping {
    defaults::opportunity_map(Provider::Pipedrive)
}

/// Fields written as the record's own, per object (API v2 bodies for
/// persons, organizations, deals, activities; v1 for notes and leads).
pub fn standard_fields(kind: ObjectKind) -> &'static [&'static str] {
    match kind {
        ObjectKind::Persons => &[
            "name",
            "first_name",
            "last_name",
            "owner_id",
            "org_id",
            "emails",
            "phones",
            "visible_to",
            "label_ids",
            "marketing_status",
        ],
        ObjectKind::Organizations => &["name", "owner_id", "address", "visible_to", "label_ids"],
        ObjectKind::Deals => &[
            "title",
            "owner_id",
            "person_id",
            "org_id",
            "pipeline_id",
            "stage_id",
            "value",
            "currency",
            "status",
            "probability",
            "lost_reason",
            "visible_to",
            "close_time",
            "won_time",
            "lost_time",
            "expected_close_date",
            "label_ids",
        ],
        ObjectKind::Activities => &[
            "subject",
            "type",
            "owner_id",
            "deal_id",
            "lead_id",
            "person_id",
            "org_id",
            "project_id",
            "due_date",
            "due_time",
            "duration",
            "busy",
            "done",
            "location",
            "note",
            "public_description",
            "priority",
            "participants",
            "attendees",
        ],
        ObjectKind::Notes => &[
            "content",
            "person_id",
            "org_id",
            "deal_id",
            "lead_id",
            "project_id",
            "user_id",
            "pinned_to_person_flag",
            "pinned_to_organization_flag",
            "pinned_to_deal_flag",
            "pinned_to_lead_flag",
        ],
        ObjectKind::Leads => &[
            "title",
            "owner_id",
            "label_ids",
            "person_id",
            "organization_id",
            "value",
            "expected_close_date",
            "visible_to",
            "was_seen",
            "origin_id",
            "channel",
            "channel_id",
        ],
    }
}

/// Fields only read, never written (ids, times, names derived on read).
const READ_ONLY: &[&str] = &[
    "id",
    "add_time",
    "update_time",
    "creator_user_id",
    "is_deleted",
    "active_flag",
    "stage_name",
    "pipeline_name",
    "stage_change_time",
    "org_name",
    "owner_name",
    "cc_email",
    "picture_id",
];

/// Whether `key` looks like a custom-field hash.
pub fn is_hash_key(key: &str) -> bool {
    key.len() == 40 && key.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The field definitions of one object, for resolving names, hashes and options.
#[derive(Clone, Debug, Default)]
pub struct FieldCatalog {
    kind: Option<ObjectKind>,
    fields: Vec<Field>,
    by_key: HashMap<String, usize>,
    by_name: HashMap<String, usize>,
}

fn norm(name: &str) -> String {
    name.trim().to_lowercase()
}

impl FieldCatalog {
    /// A catalog of `fields` for `kind`.
    pub fn new(kind: ObjectKind, fields: Vec<Field>) -> Self {
        let mut by_key = HashMap::new();
        let mut by_name = HashMap::new();
        for (i, f) in fields.iter().enumerate() {
            by_key.insert(f.key.clone(), i);
            if Self::custom(f) {
                by_name.entry(norm(&f.name)).or_insert(i);
            }
        }
        FieldCatalog {
            kind: Some(kind),
            fields,
            by_key,
            by_name,
        }
    }

    fn custom(f: &Field) -> bool {
        is_hash_key(&f.key) || f.edit_flag == Some(true)
    }

    /// Every definition.
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// The custom field with this hash key.
    pub fn by_key(&self, key: &str) -> Option<&Field> {
        self.by_key
            .get(key)
            .and_then(|i| self.fields.get(*i))
            .filter(|f| Self::custom(f))
    }

    /// The custom field a mapping names: by name (case-insensitive) or by hash.
    pub fn resolve(&self, name: &str) -> Option<&Field> {
        self.by_name
            .get(&norm(name))
            .and_then(|i| self.fields.get(*i))
            .or_else(|| self.by_key(name.trim()))
    }

    /// The label of option `id` of `field`.
    pub fn option_label(field: &Field, id: &Json) -> Option<String> {
        let want = json_text(id);
        field
            .options
            .as_ref()?
            .iter()
            .find(|o| json_text(&o.id) == want)
            .map(|o| o.label.clone())
    }

    /// The id of the option labelled `label` (case-insensitive), or of id `label`.
    pub fn option_id(field: &Field, label: &str) -> Option<Json> {
        let opts = field.options.as_ref()?;
        opts.iter()
            .find(|o| norm(&o.label) == norm(label))
            .or_else(|| opts.iter().find(|o| json_text(&o.id) == label.trim()))
            .map(|o| o.id.clone())
    }

    /// The object's schema: standard fields and custom fields by name.
    pub fn schema(&self) -> ObjectSchema {
        let kind = self.kind.unwrap_or(ObjectKind::Persons);
        let mut s = ObjectSchema::new(kind.as_str())
            .field(FieldSchema::new("id", FieldType::Id).read_only())
            .primary_key(["id"]);
        for f in &self.fields {
            if f.key == "id" {
                continue;
            }
            let custom = Self::custom(f);
            let name = if custom {
                f.name.clone()
            } else {
                f.key.clone()
            };
            let mut fs =
                FieldSchema::new(name, field_type(&f.field_type, &f.key)).label(f.name.clone());
            if custom {
                fs = fs.custom();
            }
            if f.mandatory_flag
                .as_ref()
                .is_some_and(|m| m.as_bool() == Some(true))
            {
                fs = fs.required();
            }
            if READ_ONLY.contains(&f.key.as_str()) {
                fs = fs.read_only();
            }
            if kind == ObjectKind::Persons && f.key == "email" {
                fs = fs.external_id();
            }
            if let Some(opts) = &f.options {
                fs.picklist = opts
                    .iter()
                    .map(|o| PicklistValue {
                        value: o.label.clone(),
                        label: o.label.clone(),
                        active: true,
                    })
                    .collect();
            }
            s = s.field(fs);
        }
        s
    }
}

fn field_type(t: &str, key: &str) -> FieldType {
    match (t, key) {
        (_, "email") => FieldType::Email,
        (_, "phone") | ("phone", _) => FieldType::Phone,
        ("double" | "monetary", _) => FieldType::Decimal,
        ("int", _) => FieldType::Int,
        ("enum" | "status" | "visible_to", _) => FieldType::Picklist,
        ("set", _) => FieldType::MultiPicklist,
        ("date", _) => FieldType::Date,
        ("user" | "org" | "people", _) => FieldType::Reference,
        ("varchar" | "varchar_auto" | "text" | "varchar_options", _) => FieldType::Text,
        ("address" | "daterange" | "timerange", _) => FieldType::Json,
        (other, _) => FieldType::Unknown(other.to_owned()),
    }
}

/// Pipeline and stage names, so a deal's `stage_id` reads as a name.
#[derive(Clone, Debug, Default)]
pub struct StageNames {
    stages: HashMap<i64, (String, String)>,
}

impl StageNames {
    /// From the pipelines and stages of the account.
    pub fn new(pipelines: &[Pipeline], stages: &[Stage]) -> Self {
        let pipes: HashMap<i64, &str> = pipelines.iter().map(|p| (p.id, p.name.as_str())).collect();
        StageNames {
            stages: stages
                .iter()
                .map(|s| {
                    let p = pipes.get(&s.pipeline_id).copied().unwrap_or_default();
                    (s.id, (p.to_owned(), s.name.clone()))
                })
                .collect(),
        }
    }

    /// `(pipeline name, stage name)` of a stage.
    pub fn get(&self, stage_id: i64) -> Option<(&str, &str)> {
        self.stages
            .get(&stage_id)
            .map(|(p, s)| (p.as_str(), s.as_str()))
    }

    /// The id of the stage named `name` (`Stage` or `Pipeline / Stage`).
    pub fn id_of(&self, name: &str) -> Option<i64> {
        let n = norm(name);
        self.stages
            .iter()
            .filter(|(_, (p, s))| norm(s) == n || format!("{} / {}", norm(p), norm(s)) == n)
            .map(|(id, _)| *id)
            .min()
    }
}

/// JSON as comparable text: strings bare, numbers canonical.
pub fn json_text(v: &Json) -> String {
    match v {
        Json::String(s) => s.trim().to_owned(),
        Json::Number(n) => n
            .as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 9e15)
            .map(|f| format!("{}", f as i64))
            .unwrap_or_else(|| n.to_string()),
        Json::Null => String::new(),
        Json::Object(o) if o.contains_key("value") && o.len() <= 4 => {
            o.get("value").map(json_text).unwrap_or_default()
        }
        other => other.to_string(),
    }
}

/// Parses Pipedrive times: RFC 3339 (v2) or `YYYY-MM-DD HH:MM:SS` UTC (v1).
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
                .ok()
                .map(|n| n.and_utc())
        })
}

/// The record's id as text.
pub fn record_id(rec: &PdRecord) -> Option<String> {
    match rec.get("id")? {
        Json::Number(n) => Some(n.to_string()),
        Json::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// The record's `update_time`.
pub fn update_time(rec: &PdRecord) -> Option<DateTime<Utc>> {
    rec.get("update_time")
        .and_then(Json::as_str)
        .and_then(parse_time)
}

fn custom_value(field: &Field, v: Json) -> Value {
    match field.field_type.as_str() {
        "enum" => match &v {
            Json::Null => Value::Null,
            Json::Object(o) if o.contains_key("label") => {
                Value::Text(o.get("label").map(json_text).unwrap_or_default())
            }
            other => FieldCatalog::option_label(field, other)
                .map(Value::Text)
                .unwrap_or_else(|| Value::from_json(v.clone())),
        },
        "set" => {
            let ids: Vec<Json> = match v {
                Json::Null => return Value::Null,
                Json::Array(a) => a,
                Json::String(s) => s
                    .split(',')
                    .filter(|x| !x.trim().is_empty())
                    .map(|x| Json::String(x.trim().to_owned()))
                    .collect(),
                other => vec![other],
            };
            Value::Json(Json::Array(
                ids.iter()
                    .map(|id| match id {
                        Json::Object(o) if o.contains_key("label") => {
                            o.get("label").cloned().unwrap_or(Json::Null)
                        }
                        other => FieldCatalog::option_label(field, other)
                            .map(Json::String)
                            .unwrap_or_else(|| other.clone()),
                    })
                    .collect(),
            ))
        }
        _ => Value::from_json(v),
    }
}

/// A Pipedrive record (v2 or v1 shape) as a [`Record`]: custom fields under
/// their names, option ids as labels, v1 field names (see the module docs).
pub fn record_from_wire(
    kind: ObjectKind,
    rec: &PdRecord,
    catalog: &FieldCatalog,
    stages: Option<&StageNames>,
) -> Record {
    let mut r = Record::new();
    if let Some(id) = record_id(rec) {
        r.id = Some(RecordId::new(id));
    }
    r.updated_at = update_time(rec);
    for (k, v) in rec {
        match k.as_str() {
            "custom_fields" => {
                if let Json::Object(cf) = v {
                    for (ck, cv) in cf {
                        set_custom(&mut r, catalog, ck, cv.clone());
                    }
                }
            }
            "emails" => {
                r.set("email", Value::Json(v.clone()));
            }
            "phones" => {
                r.set("phone", Value::Json(v.clone()));
            }
            "person_id" | "org_id" | "organization_id" | "deal_id" => {
                let value = match v {
                    Json::Number(_) | Json::String(_) => Value::Json(json!({"value": v})),
                    Json::Null => Value::Null,
                    other => Value::Json(other.clone()),
                };
                r.set(k.clone(), value);
            }
            "add_time" | "update_time" | "delete_time" => {
                let value = v
                    .as_str()
                    .and_then(parse_time)
                    .map(Value::DateTime)
                    .unwrap_or_else(|| Value::from_json(v.clone()));
                r.set(k.clone(), value);
            }
            _ if is_hash_key(k) || catalog.by_key(k).is_some() => {
                set_custom(&mut r, catalog, k, v.clone());
            }
            _ => {
                r.set(k.clone(), Value::from_json(v.clone()));
            }
        }
    }
    let stage = rec.get("stage_id").and_then(Json::as_i64);
    if let (ObjectKind::Deals, Some(names), Some(stage)) = (kind, stages, stage)
        && let Some((p, s)) = names.get(stage)
    {
        r.set("pipeline_name", p.to_owned());
        r.set("stage_name", s.to_owned());
    }
    r
}

fn set_custom(r: &mut Record, catalog: &FieldCatalog, key: &str, v: Json) {
    match catalog.by_key(key) {
        Some(f) => {
            let value = custom_value(f, v);
            r.set(f.name.clone(), value);
        }
        None => {
            r.set(key.to_owned(), Value::from_json(v));
        }
    }
}

fn number_json(v: &Value) -> Json {
    match v {
        Value::Decimal(d) => serde_json::from_str::<Json>(&d.normalize().to_string())
            .unwrap_or_else(|_| Json::String(d.to_string())),
        Value::Text(t) => match crm_core::value::parse_decimal(t) {
            Some(d) => serde_json::from_str::<Json>(&d.normalize().to_string())
                .unwrap_or_else(|_| Json::String(t.clone())),
            None => Json::String(t.clone()),
        },
        other => other.to_json(),
    }
}

fn contact_entries(v: &Value) -> Json {
    match v {
        Value::Json(Json::Array(items)) => Json::Array(
            items
                .iter()
                .enumerate()
                .filter_map(|(i, e)| match e {
                    Json::String(s) => {
                        Some(json!({"value": s, "primary": i == 0, "label": "work"}))
                    }
                    Json::Object(o) => {
                        let value = o.get("value")?.clone();
                        Some(json!({
                            "value": value,
                            "primary": o.get("primary").and_then(Json::as_bool).unwrap_or(i == 0),
                            "label": o.get("label").cloned().unwrap_or(json!("work")),
                        }))
                    }
                    _ => None,
                })
                .collect(),
        ),
        Value::Null => Json::Array(Vec::new()),
        other => {
            let s = other.to_string();
            if s.trim().is_empty() {
                Json::Array(Vec::new())
            } else {
                json!([{"value": s.trim(), "primary": true, "label": "work"}])
            }
        }
    }
}

fn reference(v: &Value) -> Json {
    match v {
        Value::Json(Json::Object(o)) => o.get("value").cloned().unwrap_or(Json::Null),
        Value::Text(t) => t
            .trim()
            .parse::<i64>()
            .map(Json::from)
            .unwrap_or_else(|_| Json::String(t.clone())),
        other => other.to_json(),
    }
}

/// The body writing `record` to `kind`: names resolved to hashes (v2 puts
/// custom fields in `custom_fields`), option labels to ids, `email` /
/// `phone` to v2 lists.
///
/// # Errors
/// [`PipedriveError::UnknownField`] / [`PipedriveError::UnknownOption`]
/// for names or labels the account does not have.
pub fn body_from_record(
    kind: ObjectKind,
    record: &Record,
    catalog: &FieldCatalog,
    stages: Option<&StageNames>,
) -> Result<Json, PipedriveError> {
    let standard = standard_fields(kind);
    let mut body = Map::new();
    let mut custom = Map::new();
    for (name, value) in &record.fields {
        let n = name.as_str();
        if READ_ONLY.contains(&n) && !(n == "stage_name" && kind == ObjectKind::Deals) {
            continue;
        }
        if n.starts_with(crm_core::METADATA_PREFIX) {
            continue;
        }
        match n {
            "email" | "emails" if kind == ObjectKind::Persons => {
                body.insert("emails".into(), contact_entries(value));
            }
            "phone" | "phones" if kind == ObjectKind::Persons => {
                body.insert("phones".into(), contact_entries(value));
            }
            "stage_name" => {
                if let (Some(names), Some(text)) = (stages, value.as_str()) {
                    let id = names
                        .id_of(text)
                        .ok_or_else(|| PipedriveError::UnknownOption {
                            field: "stage_name".into(),
                            label: text.to_owned(),
                        })?;
                    body.insert("stage_id".into(), Json::from(id));
                }
            }
            "person_id" | "org_id" | "organization_id" | "deal_id" | "owner_id" | "user_id"
            | "lead_id" | "stage_id" | "pipeline_id"
                if standard.contains(&n) =>
            {
                body.insert(n.to_owned(), reference(value));
            }
            "value" | "probability"
                if standard.contains(&n) && !matches!(value, Value::Json(_)) =>
            {
                body.insert(n.to_owned(), number_json(value));
            }
            _ if standard.contains(&n) => {
                body.insert(n.to_owned(), value.to_json());
            }
            _ => {
                let Some(f) = catalog.resolve(n) else {
                    return Err(PipedriveError::UnknownField {
                        object: kind.as_str().to_owned(),
                        field: n.to_owned(),
                    });
                };
                let v = match f.field_type.as_str() {
                    "enum" => match value {
                        Value::Null => Json::Null,
                        Value::Int(i) => Json::from(*i),
                        other => {
                            let label = other.to_string();
                            FieldCatalog::option_id(f, &label).ok_or(
                                PipedriveError::UnknownOption {
                                    field: f.name.clone(),
                                    label,
                                },
                            )?
                        }
                    },
                    "set" => {
                        let labels: Vec<String> = match value {
                            Value::Null => Vec::new(),
                            Value::Json(Json::Array(a)) => a.iter().map(json_text).collect(),
                            other => other
                                .to_string()
                                .split(',')
                                .map(|s| s.trim().to_owned())
                                .filter(|s| !s.is_empty())
                                .collect(),
                        };
                        let mut ids = Vec::new();
                        for l in labels {
                            ids.push(FieldCatalog::option_id(f, &l).ok_or(
                                PipedriveError::UnknownOption {
                                    field: f.name.clone(),
                                    label: l.clone(),
                                },
                            )?);
                        }
                        Json::Array(ids)
                    }
                    "double" | "monetary" => number_json(value),
                    _ => value.to_json(),
                };
                custom.insert(f.key.clone(), v);
            }
        }
    }
    if !custom.is_empty() {
        if kind.is_v2() {
            body.insert("custom_fields".into(), Json::Object(custom));
        } else {
            body.extend(custom);
        }
    }
    Ok(Json::Object(body))
}

fn same(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Array(x), Json::Array(y)) => {
            let mut xs: Vec<String> = x.iter().map(|v| json_text(v).to_lowercase()).collect();
            let mut ys: Vec<String> = y.iter().map(|v| json_text(v).to_lowercase()).collect();
            xs.sort();
            ys.sort();
            xs == ys
        }
        (Json::Null, Json::Array(y)) | (Json::Array(y), Json::Null) => y.is_empty(),
        (Json::Object(x), Json::Object(y))
            if !x.contains_key("value") || !y.contains_key("value") =>
        {
            x.iter().all(|(k, v)| {
                y.get(k).is_some_and(|w| same(v, w)) || (v.is_null() && !y.contains_key(k))
            })
        }
        _ => json_text(a) == json_text(b),
    }
}

/// Whether writing `body` would change `current` (the record as read).
pub fn differs(body: &Json, current: &PdRecord) -> bool {
    let Json::Object(b) = body else {
        return true;
    };
    for (k, v) in b {
        let cur = current.get(k).cloned().unwrap_or(Json::Null);
        let changed = match (k.as_str(), v) {
            ("custom_fields", Json::Object(cf)) => cf.iter().any(|(ck, cv)| {
                let c = current
                    .get("custom_fields")
                    .and_then(|o| o.get(ck))
                    .or_else(|| current.get(ck))
                    .cloned()
                    .unwrap_or(Json::Null);
                !same(cv, &c)
            }),
            _ => !same(v, &cur),
        };
        if changed {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::FieldOption;

    fn catalog() -> FieldCatalog {
        FieldCatalog::new(
            ObjectKind::Persons,
            vec![
                Field {
                    id: 1,
                    key: "name".into(),
                    name: "Name".into(),
                    field_type: "varchar".into(),
                    ..Field::default()
                },
                Field {
                    id: 2,
                    key: "9dc80c50d78a15643bfc4ca79d76156a73a1ca0e".into(),
                    name: "Customer Type".into(),
                    field_type: "enum".into(),
                    options: Some(vec![
                        FieldOption {
                            id: json!(27),
                            label: "Gold".into(),
                        },
                        FieldOption {
                            id: json!(28),
                            label: "Silver".into(),
                        },
                    ]),
                    edit_flag: Some(true),
                    ..Field::default()
                },
                Field {
                    id: 3,
                    key: "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678".into(),
                    name: "Channels".into(),
                    field_type: "set".into(),
                    options: Some(vec![
                        FieldOption {
                            id: json!(1),
                            label: "Twitter".into(),
                        },
                        FieldOption {
                            id: json!(2),
                            label: "Instagram".into(),
                        },
                    ]),
                    edit_flag: Some(true),
                    ..Field::default()
                },
            ],
        )
    }

    #[test]
    fn names_resolve_to_hashes_and_labels_to_ids_and_back() {
        let cat = catalog();
        let rec = Record::new()
            .with("name", "Ada")
            .with("email", "ada@example.com")
            .with("customer type", "gold")
            .with("Channels", Value::Json(json!(["Instagram", "Twitter"])));
        let body = body_from_record(ObjectKind::Persons, &rec, &cat, None).unwrap();
        assert_eq!(
            body["custom_fields"]["9dc80c50d78a15643bfc4ca79d76156a73a1ca0e"],
            json!(27)
        );
        assert_eq!(
            body["custom_fields"]["a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"],
            json!([2, 1])
        );
        assert_eq!(body["emails"][0]["value"], "ada@example.com");
        let wire: PdRecord = serde_json::from_value(json!({
            "id": 5, "name": "Ada", "emails": [{"value": "ada@example.com", "primary": true, "label": "work"}],
            "update_time": "2025-01-01T10:20:00Z",
            "custom_fields": {"9dc80c50d78a15643bfc4ca79d76156a73a1ca0e": 27,
                              "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678": [1]}}))
        .unwrap();
        let r = record_from_wire(ObjectKind::Persons, &wire, &cat, None);
        assert_eq!(r.id.as_ref().unwrap().as_str(), "5");
        assert_eq!(r.text("Customer Type"), Some("Gold"));
        assert_eq!(r.get("Channels"), Some(&Value::Json(json!(["Twitter"]))));
        assert_eq!(
            r.get_path("email.0.value"),
            Some(Value::Text("ada@example.com".into()))
        );
        assert!(!differs(
            &body_from_record(
                ObjectKind::Persons,
                &Record::new().with("Customer Type", "Gold"),
                &cat,
                None
            )
            .unwrap(),
            &wire
        ));
        assert!(differs(&body, &wire));
    }

    #[test]
    fn unknown_names_and_labels_are_refused_before_sending() {
        let cat = catalog();
        let e = body_from_record(
            ObjectKind::Persons,
            &Record::new().with("d_1_f_443", "x"),
            &cat,
            None,
        )
        .unwrap_err();
        assert!(matches!(e, PipedriveError::UnknownField { .. }));
        let e = body_from_record(
            ObjectKind::Persons,
            &Record::new().with("Customer Type", "Bronze"),
            &cat,
            None,
        )
        .unwrap_err();
        assert!(matches!(e, PipedriveError::UnknownOption { .. }));
        // A hash is accepted as a name.
        let b = body_from_record(
            ObjectKind::Persons,
            &Record::new().with("9dc80c50d78a15643bfc4ca79d76156a73a1ca0e", 28),
            &cat,
            None,
        )
        .unwrap();
        assert_eq!(
            b["custom_fields"]["9dc80c50d78a15643bfc4ca79d76156a73a1ca0e"],
            json!(28)
        );
    }

    #[test]
    fn deal_stages_read_as_names_and_times_parse() {
        let names = StageNames::new(
            &[Pipeline {
                id: 1,
                name: "Sales".into(),
                order_nr: None,
            }],
            &[Stage {
                id: 3,
                name: "Qualified".into(),
                pipeline_id: 1,
                order_nr: None,
                deal_probability: None,
            }],
        );
        let wire: PdRecord = serde_json::from_value(
            json!({"id": 9, "title": "T", "stage_id": 3, "value": 10.5, "person_id": 4}),
        )
        .unwrap();
        let r = record_from_wire(
            ObjectKind::Deals,
            &wire,
            &FieldCatalog::default(),
            Some(&names),
        );
        assert_eq!(r.text("stage_name"), Some("Qualified"));
        assert_eq!(r.text("pipeline_name"), Some("Sales"));
        assert_eq!(r.get_path("person_id.value"), Some(Value::Int(4)));
        assert_eq!(names.id_of("sales / qualified"), Some(3));
        assert_eq!(
            parse_time("2020-07-14 13:19:26").unwrap().to_rfc3339(),
            "2020-07-14T13:19:26+00:00"
        );
        let body = body_from_record(
            ObjectKind::Deals,
            &Record::new()
                .with("value", Value::Text("12.50".into()))
                .with("stage_name", "Qualified"),
            &FieldCatalog::default(),
            Some(&names),
        )
        .unwrap();
        assert_eq!(body["value"], json!(12.5));
        assert_eq!(body["stage_id"], json!(3));
    }

    #[test]
    fn default_maps_come_from_core() {
        assert!(!contact_map().is_empty());
        assert!(!opportunity_map().is_empty());
    }
}
