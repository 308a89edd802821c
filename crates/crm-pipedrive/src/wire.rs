//! Serde types of Pipedrive's JSON: the response envelope, pagination,
//! errors, field definitions, search hits, recents, pipelines and stages.
//!
//! Records themselves stay JSON objects ([`PdRecord`]): their custom fields
//! are keys chosen by each account (40-character hashes), so a fixed struct
//! would drop them.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One Pipedrive record as JSON (`id`, standard fields, custom fields).
pub type PdRecord = Map<String, Value>;

/// Every answer: `{"success": true, "data": ..., "additional_data": ...}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// Whether the request succeeded.
    pub success: bool,
    /// The payload.
    #[serde(default = "none")]
    pub data: Option<T>,
    /// Pagination (v1 `pagination`, v2 `next_cursor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_data: Option<AdditionalData>,
}

fn none<T>() -> Option<T> {
    None
}

/// `additional_data` of a list answer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AdditionalData {
    /// v1 offset pagination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pagination: Option<Pagination>,
    /// v2 cursor of the next page; absent or null on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// v1 offset pagination: `start`/`limit` and whether more follow.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pagination {
    /// Offset of this page.
    #[serde(default)]
    pub start: u64,
    /// Items asked for.
    #[serde(default)]
    pub limit: u64,
    /// Whether more items follow this page.
    #[serde(default)]
    pub more_items_in_collection: bool,
    /// The `start` of the next page, when more follow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_start: Option<u64>,
}

impl AdditionalData {
    /// The v1 `start` of the next page, only when Pipedrive says more follow.
    pub fn next_start(this: Option<&AdditionalData>) -> Option<u64> {
        let p = this?.pagination.as_ref()?;
        if p.more_items_in_collection {
            p.next_start.or(Some(p.start + p.limit))
        } else {
            None
        }
    }

    /// The v2 cursor of the next page, if any.
    pub fn cursor(this: Option<&AdditionalData>) -> Option<String> {
        this?.next_cursor.clone().filter(|c| !c.is_empty())
    }
}

/// A failure: `{"success": false, "error": "...", "error_info": "..."}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Always false.
    #[serde(default)]
    pub success: bool,
    /// The message.
    #[serde(default)]
    pub error: Option<String>,
    /// More detail.
    #[serde(default)]
    pub error_info: Option<String>,
    /// A code some answers carry (`errorCode`).
    #[serde(default, rename = "errorCode", skip_serializing_if = "Option::is_none")]
    pub error_code: Option<Value>,
    /// Usually null.
    #[serde(default)]
    pub data: Option<Value>,
    /// Usually null.
    #[serde(default)]
    pub additional_data: Option<Value>,
}

/// One field definition from `personFields`, `organizationFields`, `dealFields`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Field {
    /// Numeric id.
    pub id: i64,
    /// The key in records: a standard name or a 40-character hash.
    pub key: String,
    /// The human name shown in the app (what mappings use).
    pub name: String,
    /// `varchar`, `double`, `monetary`, `enum`, `set`, `date`, `user`, ...
    pub field_type: String,
    /// Options of `enum` and `set` fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Vec<FieldOption>>,
    /// Whether this is a custom field (editable definition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edit_flag: Option<bool>,
    /// Whether a value is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mandatory_flag: Option<Value>,
    /// Whether the field is active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_flag: Option<bool>,
    /// Whether values can be written through the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bulk_edit_allowed: Option<bool>,
}

/// One option of an `enum` or `set` field.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FieldOption {
    /// The id stored in records (a number; text for a few system fields).
    pub id: Value,
    /// The label shown.
    pub label: String,
}

/// `data` of a v2 search answer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SearchData {
    /// The hits.
    #[serde(default)]
    pub items: Vec<SearchItem>,
}

/// One search hit.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SearchItem {
    /// Relevance.
    #[serde(default)]
    pub result_score: f64,
    /// The hit (`id`, `type`, `name`, `emails`, ...).
    pub item: PdRecord,
}

/// One entry of `/v1/recents`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RecentItem {
    /// The item type (`person`, `deal`, ...).
    pub item: String,
    /// The record id.
    #[serde(default)]
    pub id: Option<i64>,
    /// The record as it is now (deleted records carry `active_flag: false`).
    #[serde(default)]
    pub data: Option<Value>,
}

/// A pipeline.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Pipeline {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_nr: Option<i64>,
}

/// A stage of a pipeline.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// The pipeline it belongs to.
    pub pipeline_id: i64,
    /// Position within the pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_nr: Option<i64>,
    /// Deal probability of the stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deal_probability: Option<i64>,
}

/// `data` of a v1 bulk delete: the ids deleted.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BulkDeleted {
    /// The ids.
    #[serde(default)]
    pub id: Vec<i64>,
}

/// An email or phone entry: `{"value", "primary", "label"}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactEntry {
    /// The address or number.
    pub value: String,
    /// Whether it is the primary one.
    #[serde(default)]
    pub primary: bool,
    /// `work`, `home`, `mobile`, `other`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn next_page_only_when_more_items_follow() {
        let env: Envelope<Vec<PdRecord>> = serde_json::from_value(json!({
            "success": true, "data": [{"id": 1}],
            "additional_data": {"pagination": {"start": 0, "limit": 1,
                "more_items_in_collection": true, "next_start": 1}}}))
        .unwrap();
        assert_eq!(
            AdditionalData::next_start(env.additional_data.as_ref()),
            Some(1)
        );
        let last: Envelope<Vec<PdRecord>> = serde_json::from_value(json!({
            "success": true, "data": [],
            "additional_data": {"pagination": {"start": 1, "limit": 1,
                "more_items_in_collection": false}}}))
        .unwrap();
        assert_eq!(
            AdditionalData::next_start(last.additional_data.as_ref()),
            None
        );
        let v2: Envelope<Vec<PdRecord>> = serde_json::from_value(json!({
            "success": true, "data": [], "additional_data": {"next_cursor": null}}))
        .unwrap();
        assert_eq!(AdditionalData::cursor(v2.additional_data.as_ref()), None);
        let nulls: Envelope<Vec<PdRecord>> =
            serde_json::from_value(json!({"success": true, "data": null})).unwrap();
        assert!(nulls.data.is_none());
    }
}
