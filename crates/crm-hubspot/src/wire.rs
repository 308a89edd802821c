//! Serde types of HubSpot's JSON, as described in the bundled OpenAPI
//! description (`shared/specs/hubspot/crm-v3.openapi.yaml`, checked by the
//! `openapi_shapes` test).
//!
//! The client and the simulator share these types, so what one sends the
//! other reads. Every field HubSpot may leave out is optional or defaulted:
//! a missing field never fails a sync.

use std::fmt;

use chrono::{DateTime, Utc};
use indexmap::IndexMap;
use serde::{Deserialize, Deserializer, Serialize};

/// A HubSpot record id (decimal text, the same value as `hs_object_id`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ObjectId(String);

impl ObjectId {
    /// Wraps an id.
    pub fn new(id: impl Into<String>) -> Self {
        ObjectId(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The numeric value, when the id is numeric (HubSpot ids are).
    pub fn as_u64(&self) -> Option<u64> {
        self.0.parse().ok()
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for ObjectId {
    fn from(s: &str) -> Self {
        ObjectId(s.to_owned())
    }
}

impl From<String> for ObjectId {
    fn from(s: String) -> Self {
        ObjectId(s)
    }
}

/// Reads an id sent either as a JSON string or as a number.
fn id_from_string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectId, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        S(String),
        N(u64),
    }
    Ok(match Either::deserialize(d)? {
        Either::S(s) => ObjectId(s),
        Either::N(n) => ObjectId(n.to_string()),
    })
}

/// Writes a numeric id as a JSON number (where HubSpot sends integers), any
/// other id as a string.
fn id_as_number<S: serde::Serializer>(id: &ObjectId, s: S) -> Result<S::Ok, S::Error> {
    match id.as_u64() {
        Some(n) => s.serialize_u64(n),
        None => s.serialize_str(id.as_str()),
    }
}

/// Property values: name to text (or null for a requested property without a value).
pub type Properties = IndexMap<String, Option<String>>;

/// A CRM record as the objects, batch and search endpoints return it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HsObject {
    /// The record id.
    pub id: ObjectId,
    /// Property values, all as text.
    #[serde(default)]
    pub properties: Properties,
    /// When the record was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    /// When the record was last modified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
    /// Whether the record is archived (soft-deleted).
    #[serde(default)]
    pub archived: bool,
    /// When it was archived, on archived records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived_at: Option<DateTime<Utc>>,
    /// Associated record ids by object type, when requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub associations: Option<IndexMap<String, AssociatedIdPage>>,
    /// Echo of the caller's trace id on batch writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_write_trace_id: Option<String>,
    /// `batch/upsert` only: true when the input created the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new: Option<bool>,
}

impl HsObject {
    /// The text of a property, when set and not null.
    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties.get(name).and_then(|v| v.as_deref())
    }
}

/// Associated ids of one object type on a record (`associations=` on reads).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AssociatedIdPage {
    /// The associated records.
    #[serde(default)]
    pub results: Vec<AssociatedId>,
    /// More associations, when there are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paging: Option<Paging>,
}

/// One associated record id and the association type name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AssociatedId {
    /// The associated record's id.
    pub id: ObjectId,
    /// The association type name, e.g. `contact_to_company`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// Paging block of list answers; `next` absent means the last page.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Paging {
    /// The next page, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<NextPage>,
}

/// Where the next page starts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NextPage {
    /// Pass as `after` to get the next page.
    pub after: String,
    /// A ready-made link to the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

impl Paging {
    /// The `after` token of the next page, if any.
    pub fn next_after(paging: &Option<Paging>) -> Option<&str> {
        paging
            .as_ref()
            .and_then(|p| p.next.as_ref())
            .map(|n| n.after.as_str())
            .filter(|a| !a.is_empty())
    }
}

/// One page of `GET /crm/v3/objects/{objectType}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ListPage {
    /// The records.
    #[serde(default)]
    pub results: Vec<HsObject>,
    /// The next page, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paging: Option<Paging>,
}

/// A search filter operator. HubSpot owns the set, so unknown values are kept.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Operator {
    /// Equal to `value`.
    Eq,
    /// Not equal to `value`.
    Neq,
    /// Less than `value`.
    Lt,
    /// Less than or equal to `value`.
    Lte,
    /// Greater than `value`.
    Gt,
    /// Greater than or equal to `value`.
    Gte,
    /// Between `value` and `highValue`, inclusive.
    Between,
    /// One of `values`.
    In,
    /// None of `values`.
    NotIn,
    /// The property has a value.
    HasProperty,
    /// The property has no value.
    NotHasProperty,
    /// The property contains the token `value` (`*` wildcard allowed).
    ContainsToken,
    /// The property does not contain the token `value`.
    NotContainsToken,
    /// An operator this crate does not know.
    Unknown(String),
}

impl Operator {
    /// The wire name.
    pub fn as_str(&self) -> &str {
        match self {
            Operator::Eq => "EQ",
            Operator::Neq => "NEQ",
            Operator::Lt => "LT",
            Operator::Lte => "LTE",
            Operator::Gt => "GT",
            Operator::Gte => "GTE",
            Operator::Between => "BETWEEN",
            Operator::In => "IN",
            Operator::NotIn => "NOT_IN",
            Operator::HasProperty => "HAS_PROPERTY",
            Operator::NotHasProperty => "NOT_HAS_PROPERTY",
            Operator::ContainsToken => "CONTAINS_TOKEN",
            Operator::NotContainsToken => "NOT_CONTAINS_TOKEN",
            Operator::Unknown(s) => s,
        }
    }
}

impl From<String> for Operator {
    fn from(s: String) -> Self {
        match s.as_str() {
            "EQ" => Operator::Eq,
            "NEQ" => Operator::Neq,
            "LT" => Operator::Lt,
            "LTE" => Operator::Lte,
            "GT" => Operator::Gt,
            "GTE" => Operator::Gte,
            "BETWEEN" => Operator::Between,
            "IN" => Operator::In,
            "NOT_IN" => Operator::NotIn,
            "HAS_PROPERTY" => Operator::HasProperty,
            "NOT_HAS_PROPERTY" => Operator::NotHasProperty,
            "CONTAINS_TOKEN" => Operator::ContainsToken,
            "NOT_CONTAINS_TOKEN" => Operator::NotContainsToken,
            _ => Operator::Unknown(s),
        }
    }
}

impl Serialize for Operator {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Operator {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Operator::from)
    }
}

/// One search filter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Filter {
    /// The property compared.
    pub property_name: String,
    /// How.
    pub operator: Operator,
    /// The value compared with (EQ, GT, CONTAINS_TOKEN, BETWEEN's low bound...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// BETWEEN's high bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high_value: Option<String>,
    /// IN / NOT_IN values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
}

impl Filter {
    /// A filter with one `value`.
    pub fn new(property: impl Into<String>, operator: Operator, value: impl Into<String>) -> Self {
        Filter {
            property_name: property.into(),
            operator,
            value: Some(value.into()),
            high_value: None,
            values: None,
        }
    }
}

/// Filters ANDed together; groups are ORed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FilterGroup {
    /// The filters.
    #[serde(default)]
    pub filters: Vec<Filter>,
}

/// Sort direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SortDirection {
    /// Smallest first.
    Ascending,
    /// Largest first.
    Descending,
}

/// A sort rule. HubSpot's guide shows objects; generated clients send
/// strings (`"-createdate"` for descending), so both are read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Sort {
    /// `{"propertyName": ..., "direction": ...}`.
    Rule {
        /// The property sorted on.
        #[serde(rename = "propertyName")]
        property_name: String,
        /// The direction; ascending when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        direction: Option<SortDirection>,
    },
    /// A property name, `-` prefixed for descending.
    Text(String),
}

impl Sort {
    /// An ascending sort on `property`.
    pub fn ascending(property: impl Into<String>) -> Self {
        Sort::Rule {
            property_name: property.into(),
            direction: Some(SortDirection::Ascending),
        }
    }

    /// A descending sort on `property`.
    pub fn descending(property: impl Into<String>) -> Self {
        Sort::Rule {
            property_name: property.into(),
            direction: Some(SortDirection::Descending),
        }
    }

    /// The property and direction.
    pub fn parts(&self) -> (&str, SortDirection) {
        match self {
            Sort::Rule {
                property_name,
                direction,
            } => (property_name, direction.unwrap_or(SortDirection::Ascending)),
            Sort::Text(t) => match t.strip_prefix('-') {
                Some(p) => (p, SortDirection::Descending),
                None => (t, SortDirection::Ascending),
            },
        }
    }
}

/// `POST /crm/v3/objects/{objectType}/search` body.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchRequest {
    /// ORed groups of ANDed filters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filter_groups: Vec<FilterGroup>,
    /// Sort rules (HubSpot honours one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sorts: Vec<Sort>,
    /// Free-text query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Properties to return (in the body, so no URL length limit applies).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub properties: Vec<String>,
    /// Page size, at most 200.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Offset token from the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

/// One page of search hits.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SearchResult {
    /// Matching records in total (may exceed the 10,000 reachable).
    #[serde(default)]
    pub total: u64,
    /// The hits of this page.
    #[serde(default)]
    pub results: Vec<HsObject>,
    /// The next page, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paging: Option<Paging>,
}

/// `{"id": ...}` input of batch read and archive.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IdInput {
    /// Record id, or the unique value when `idProperty` is set.
    pub id: String,
}

/// `batch/read` body.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchReadInput {
    /// Up to 100 ids.
    pub inputs: Vec<IdInput>,
    /// Properties to return.
    #[serde(default)]
    pub properties: Vec<String>,
    /// Properties to return with history.
    #[serde(default)]
    pub properties_with_history: Vec<String>,
    /// Unique property the ids refer to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_property: Option<String>,
}

/// Property values to write: text, an empty string clears a value.
pub type WriteProperties = IndexMap<String, String>;

/// One input of `batch/create`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateInput {
    /// The values.
    pub properties: WriteProperties,
    /// Records to associate the new one with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub associations: Vec<AssociationOnCreate>,
    /// Caller's id for this input, echoed on its result or error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_write_trace_id: Option<String>,
}

/// An association made while creating a record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AssociationOnCreate {
    /// The other record.
    pub to: IdInput,
    /// The association types.
    pub types: Vec<AssociationSpec>,
}

/// One input of `batch/update`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateInput {
    /// The record id (or unique value with `idProperty`).
    pub id: String,
    /// Unique property `id` refers to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_property: Option<String>,
    /// The values to change.
    pub properties: WriteProperties,
    /// Caller's id for this input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_write_trace_id: Option<String>,
}

/// One input of `batch/upsert`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpsertInput {
    /// The value of `idProperty`.
    pub id: String,
    /// The unique property matched on (`email`, a unique custom property).
    pub id_property: String,
    /// The values.
    pub properties: WriteProperties,
    /// Caller's id for this input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_write_trace_id: Option<String>,
}

/// A batch body: `{"inputs": [...]}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchInput<T> {
    /// At most 100 inputs.
    pub inputs: Vec<T>,
}

/// Status of a batch answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BatchStatus {
    /// Queued.
    Pending,
    /// Running.
    Processing,
    /// Cancelled.
    Canceled,
    /// Done (synchronous calls answer with this).
    Complete,
}

/// Answer of the batch endpoints (200, 201 or 207 Multi-Status).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchResponse {
    /// `COMPLETE` for synchronous calls.
    pub status: BatchStatus,
    /// Records that succeeded.
    #[serde(default)]
    pub results: Vec<HsObject>,
    /// When the request arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_at: Option<DateTime<Utc>>,
    /// When work started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When work ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
    /// Number of errors (207 answers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_errors: Option<u32>,
    /// One entry per failed input or group of inputs (207 answers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<BatchError>,
}

/// One failure inside a batch answer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchError {
    /// Usually `"error"`.
    #[serde(default)]
    pub status: String,
    /// The failing input's id, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// E.g. `VALIDATION_ERROR`, `OBJECT_NOT_FOUND`, `CONFLICT`.
    #[serde(default)]
    pub category: String,
    /// Finer reason (text or object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_category: Option<serde_json::Value>,
    /// What went wrong.
    #[serde(default)]
    pub message: String,
    /// Keyed lists naming the inputs concerned, e.g. `{"ids": ["123"]}`.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub context: IndexMap<String, Vec<String>>,
    /// Echo of the failing input's trace id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_write_trace_id: Option<String>,
    /// Field-level details.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ErrorDetail>,
}

/// A field-level error detail.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// What is wrong.
    #[serde(default)]
    pub message: String,
    /// The offending property.
    #[serde(default, rename = "in", skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Machine code, e.g. `INVALID_EMAIL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// General error body; HubSpot says every field may be missing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// Usually `"error"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// What went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Request id for HubSpot support.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// E.g. `VALIDATION_ERROR`, `OBJECT_NOT_FOUND`, `MISSING_SCOPES`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Finer reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_category: Option<String>,
    /// Keyed lists of values.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub context: IndexMap<String, Vec<String>>,
    /// Field-level details.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ErrorDetail>,
}

/// Body of a 429.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitBody {
    /// `"error"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// E.g. "You have reached your ten_secondly_rolling limit."
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `RATE_LIMIT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    /// Request id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// Which limit: `DAILY`, `SECONDLY`, `TEN_SECONDLY_ROLLING`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_name: Option<String>,
    /// Internal bucket name (undocumented).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_name: Option<String>,
}

impl RateLimitBody {
    /// The policy that was hit; a missing name reads as the rolling window.
    pub fn policy(&self) -> RateLimitPolicy {
        match self.policy_name.as_deref() {
            None => RateLimitPolicy::TenSecondlyRolling,
            Some(p) => RateLimitPolicy::parse(p),
        }
    }
}

/// HubSpot's rate-limit policies named in 429 bodies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RateLimitPolicy {
    /// The account's daily allowance: waiting seconds does not help.
    Daily,
    /// The older per-second policy.
    Secondly,
    /// The rolling 10-second window.
    TenSecondlyRolling,
    /// A policy this crate does not know (treated as a short window).
    Unknown(String),
}

impl RateLimitPolicy {
    /// Parses a `policyName`.
    pub fn parse(name: &str) -> Self {
        match name {
            "DAILY" => RateLimitPolicy::Daily,
            "SECONDLY" => RateLimitPolicy::Secondly,
            "TEN_SECONDLY_ROLLING" => RateLimitPolicy::TenSecondlyRolling,
            other => RateLimitPolicy::Unknown(other.to_owned()),
        }
    }

    /// The wire name.
    pub fn as_str(&self) -> &str {
        match self {
            RateLimitPolicy::Daily => "DAILY",
            RateLimitPolicy::Secondly => "SECONDLY",
            RateLimitPolicy::TenSecondlyRolling => "TEN_SECONDLY_ROLLING",
            RateLimitPolicy::Unknown(s) => s,
        }
    }
}

/// A property definition (`/crm/v3/properties/{objectType}`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Property {
    /// Internal name used in API calls.
    pub name: String,
    /// Display label.
    #[serde(default)]
    pub label: String,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Property group.
    #[serde(default)]
    pub group_name: String,
    /// Data type: string, number, date, datetime, enumeration, bool, phone_number...
    #[serde(default, rename = "type")]
    pub kind: String,
    /// UI control: text, select, checkbox, booleancheckbox...
    #[serde(default)]
    pub field_type: String,
    /// Choices of enumeration properties.
    #[serde(default)]
    pub options: Vec<PropertyOption>,
    /// Display order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_order: Option<i64>,
    /// Calculated by HubSpot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calculated: Option<bool>,
    /// Values must be unique (usable as `idProperty`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_unique_value: Option<bool>,
    /// Hidden in the app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden: Option<bool>,
    /// HubSpot's own property (not custom).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hubspot_defined: Option<bool>,
    /// Shown on forms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub form_field: Option<bool>,
    /// Whether values and definition may be changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modification_metadata: Option<ModificationMetadata>,
    /// Archived definition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived: Option<bool>,
}

/// Whether a property's definition and value may be changed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModificationMetadata {
    /// Can be archived.
    #[serde(default)]
    pub archivable: bool,
    /// Definition is read-only.
    #[serde(default)]
    pub read_only_definition: bool,
    /// Value is read-only (API writes are rejected or ignored).
    #[serde(default)]
    pub read_only_value: bool,
}

/// A choice of an enumeration property.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PropertyOption {
    /// Label.
    pub label: String,
    /// Stored value.
    pub value: String,
    /// Hidden choice.
    #[serde(default)]
    pub hidden: bool,
    /// Display order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_order: Option<i64>,
}

/// Property definitions of an object type.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PropertyPage {
    /// The definitions.
    #[serde(default)]
    pub results: Vec<Property>,
}

/// Who defined an association type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AssociationCategory {
    /// HubSpot's built-in types.
    HubspotDefined,
    /// Labels defined in the account.
    UserDefined,
    /// Types defined by an integration.
    IntegratorDefined,
}

/// An association type to create.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssociationSpec {
    /// Category.
    pub association_category: AssociationCategory,
    /// Type id (e.g. 279 contact to company).
    pub association_type_id: i32,
}

/// An association type on a v4 association read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssociationType {
    /// Category.
    pub category: AssociationCategory,
    /// Type id.
    pub type_id: i32,
    /// Label; null for the unlabelled type.
    #[serde(default)]
    pub label: Option<String>,
}

/// An associated record in v4 reads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssociatedRecord {
    /// The associated record (string or number on the wire).
    #[serde(deserialize_with = "id_from_string_or_number")]
    pub to_object_id: ObjectId,
    /// The types linking the pair.
    #[serde(default)]
    pub association_types: Vec<AssociationType>,
}

/// One page of v4 associations of one record.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AssociatedRecordPage {
    /// The associated records.
    #[serde(default)]
    pub results: Vec<AssociatedRecord>,
    /// The next page, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paging: Option<Paging>,
}

/// Input of v4 association batch read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AssociationReadInput {
    /// A from-record id.
    pub id: String,
    /// Continue that record's list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

/// One from-record's associations in a v4 batch read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AssociationReadResult {
    /// The from-record.
    pub from: IdInput,
    /// Its associated records.
    #[serde(default)]
    pub to: Vec<AssociatedRecord>,
    /// More for this record, when there are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paging: Option<Paging>,
}

/// Answer of v4 association batch read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssociationBatchReadResult {
    /// `COMPLETE`.
    pub status: BatchStatus,
    /// Per from-record.
    #[serde(default)]
    pub results: Vec<AssociationReadResult>,
    /// When work started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When work ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
    /// Failures (207).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<BatchError>,
}

/// Input of v4 association batch create.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AssociationCreateInput {
    /// From-record.
    pub from: IdInput,
    /// To-record.
    pub to: IdInput,
    /// Types to link the pair with.
    pub types: Vec<AssociationSpec>,
}

/// One created association in a v4 batch create answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssociationCreated {
    /// From object type id, e.g. `0-1`.
    #[serde(default)]
    pub from_object_type_id: String,
    /// From-record id (an integer on the wire).
    #[serde(
        deserialize_with = "id_from_string_or_number",
        serialize_with = "id_as_number"
    )]
    pub from_object_id: ObjectId,
    /// To object type id.
    #[serde(default)]
    pub to_object_type_id: String,
    /// To-record id (an integer on the wire).
    #[serde(
        deserialize_with = "id_from_string_or_number",
        serialize_with = "id_as_number"
    )]
    pub to_object_id: ObjectId,
    /// Labels now linking the pair.
    #[serde(default)]
    pub labels: Vec<String>,
}

/// Answer of v4 association batch create.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssociationBatchCreateResult {
    /// `COMPLETE`.
    pub status: BatchStatus,
    /// Created associations.
    #[serde(default)]
    pub results: Vec<AssociationCreated>,
    /// When work started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When work ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
    /// Failures (207).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<BatchError>,
}

/// Input of v4 association batch archive.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AssociationArchiveInput {
    /// From-record.
    pub from: IdInput,
    /// To-records whose associations with it are removed.
    pub to: Vec<IdInput>,
}

/// Input of v4 `batch/associate/default`: one pair to link with the
/// default (most generic, unlabelled) association type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DefaultAssociationInput {
    /// From-record.
    pub from: IdInput,
    /// To-record.
    pub to: IdInput,
}

/// One pair linked by v4 `batch/associate/default`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DefaultAssociationCreated {
    /// From-record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<IdInput>,
    /// To-record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<IdInput>,
    /// The type the pair was linked with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub association_spec: Option<AssociationSpec>,
}

/// Answer of v4 `batch/associate/default`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DefaultAssociationResult {
    /// `COMPLETE`.
    pub status: BatchStatus,
    /// Linked pairs.
    #[serde(default)]
    pub results: Vec<DefaultAssociationCreated>,
    /// When work started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When work ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
    /// Failures (207).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<BatchError>,
}

/// OAuth token endpoint answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenResponse {
    /// The access token (up to 300 characters).
    pub access_token: String,
    /// The refresh token (the newest one is current).
    pub refresh_token: String,
    /// Seconds until the access token expires (1800).
    pub expires_in: u64,
    /// `bearer`.
    pub token_type: String,
}

/// One webhook event of a delivery (HubSpot posts a JSON array of them).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEvent {
    /// Event id; unique together with the subscription.
    pub event_id: u64,
    /// Subscription id.
    pub subscription_id: u64,
    /// HubSpot account id.
    pub portal_id: u64,
    /// App id.
    #[serde(default)]
    pub app_id: u64,
    /// Epoch milliseconds of the change.
    pub occurred_at: i64,
    /// `<object>.<event>`, e.g. `contact.propertyChange`.
    pub subscription_type: String,
    /// 0 for the first delivery, incremented on each retry.
    #[serde(default)]
    pub attempt_number: u32,
    /// The record the event is about.
    #[serde(default)]
    pub object_id: u64,
    /// propertyChange: the property.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property_name: Option<String>,
    /// propertyChange: the new value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property_value: Option<String>,
    /// What caused the change (CRM, API, IMPORT...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_source: Option<String>,
    /// E.g. `NEW`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_flag: Option<String>,
    /// merge: the surviving record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_object_id: Option<u64>,
    /// merge: records merged into it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_object_ids: Option<Vec<u64>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_and_reads_nulls() {
        let json = r#"{"id":"512","properties":{"email":"a@example.com","firstname":null},
            "createdAt":"2024-01-15T10:30:00.000Z","updatedAt":"2024-01-16T10:30:00.123Z","archived":false}"#;
        let o: HsObject = serde_json::from_str(json).unwrap();
        assert_eq!(o.id.as_str(), "512");
        assert_eq!(o.property("email"), Some("a@example.com"));
        assert_eq!(o.property("firstname"), None);
        assert_eq!(
            o.updated_at.unwrap().timestamp_millis() % 1000,
            123,
            "milliseconds kept"
        );
        let back: HsObject = serde_json::from_value(serde_json::to_value(&o).unwrap()).unwrap();
        assert_eq!(back, o);
    }

    #[test]
    fn sorts_read_both_forms() {
        let s: Vec<Sort> =
            serde_json::from_str(r#"[{"propertyName":"createdate","direction":"DESCENDING"},"-lastmodifieddate","email"]"#)
                .unwrap();
        assert_eq!(s[0].parts(), ("createdate", SortDirection::Descending));
        assert_eq!(
            s[1].parts(),
            ("lastmodifieddate", SortDirection::Descending)
        );
        assert_eq!(s[2].parts(), ("email", SortDirection::Ascending));
    }

    #[test]
    fn operators_keep_unknown_values() {
        let f: Filter =
            serde_json::from_str(r#"{"propertyName":"x","operator":"SOUNDS_LIKE","value":"y"}"#)
                .unwrap();
        assert_eq!(f.operator, Operator::Unknown("SOUNDS_LIKE".into()));
        assert_eq!(
            serde_json::to_value(&f).unwrap()["operator"],
            serde_json::json!("SOUNDS_LIKE")
        );
    }

    #[test]
    fn association_ids_read_as_string_or_number() {
        let a: AssociatedRecord = serde_json::from_str(
            r#"{"toObjectId":123,"associationTypes":[{"category":"HUBSPOT_DEFINED","typeId":279,"label":null}]}"#,
        )
        .unwrap();
        assert_eq!(a.to_object_id.as_str(), "123");
        let b: AssociatedRecord =
            serde_json::from_str(r#"{"toObjectId":"124","associationTypes":[]}"#).unwrap();
        assert_eq!(b.to_object_id.as_str(), "124");
    }

    #[test]
    fn batch_multi_status_parses_errors_with_context() {
        let json = r#"{"status":"COMPLETE","results":[],"numErrors":1,"errors":[{"status":"error",
            "category":"VALIDATION_ERROR","message":"Property values were not valid",
            "context":{"ids":["bad@"]},"objectWriteTraceId":"3"}],
            "startedAt":"2024-01-15T10:30:00Z","completedAt":"2024-01-15T10:30:01Z"}"#;
        let r: BatchResponse = serde_json::from_str(json).unwrap();
        assert_eq!(r.errors[0].context["ids"], vec!["bad@".to_owned()]);
        assert_eq!(r.errors[0].object_write_trace_id.as_deref(), Some("3"));
    }

    #[test]
    fn rate_limit_policies() {
        let b: RateLimitBody = serde_json::from_str(
            r#"{"status":"error","message":"You have reached your daily limit.","errorType":"RATE_LIMIT","policyName":"DAILY"}"#,
        )
        .unwrap();
        assert_eq!(b.policy(), RateLimitPolicy::Daily);
        assert_eq!(
            RateLimitBody::default().policy(),
            RateLimitPolicy::TenSecondlyRolling
        );
        assert_eq!(
            RateLimitPolicy::parse("MINUTELY"),
            RateLimitPolicy::Unknown("MINUTELY".into())
        );
    }
}
