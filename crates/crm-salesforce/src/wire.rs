//! Serde types of Salesforce's REST, sObject Collections and Bulk API 2.0
//! JSON, as the REST API Developer Guide and the Bulk API 2.0 Developer Guide
//! show them, and the conversion of a describe into an [`ObjectSchema`].

use std::fmt;

use crm_core::{FieldSchema, FieldType, ObjectSchema, PicklistValue};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One entry of a REST error response `[{"message","errorCode","fields"}]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiErrorBody {
    /// Human-readable message.
    #[serde(default)]
    pub message: String,
    /// The error code (`INVALID_FIELD`, `INVALID_SESSION_ID`, ...).
    #[serde(default)]
    pub error_code: String,
    /// The fields concerned, when the error is about fields.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
}

/// The `attributes` of a record in query results.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attributes {
    /// The sObject type.
    #[serde(rename = "type")]
    pub object_type: String,
    /// The record's REST URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// A page of `query` / `queryAll` results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryResponse {
    /// Records matching the whole query (not just this page).
    pub total_size: u64,
    /// True when this is the last page.
    pub done: bool,
    /// The URL of the next page (relative to the instance), when not done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_records_url: Option<String>,
    /// The records: `attributes` plus the selected fields.
    pub records: Vec<Map<String, Value>>,
}

/// A picklist entry of a describe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PicklistEntry {
    /// The API value.
    pub value: String,
    /// The label.
    #[serde(default)]
    pub label: Option<String>,
    /// Whether it can be chosen.
    #[serde(default = "yes")]
    pub active: bool,
    /// Whether it is the default.
    #[serde(default, rename = "defaultValue")]
    pub default_value: bool,
}

fn yes() -> bool {
    true
}

/// One field of an sObject describe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeField {
    /// API name (`LastName`, `LTV__c`).
    pub name: String,
    /// Label.
    #[serde(default)]
    pub label: String,
    /// Salesforce field type (`string`, `email`, `picklist`, `address`, ...).
    #[serde(rename = "type")]
    pub field_type: String,
    /// Maximum length of text fields.
    #[serde(default)]
    pub length: u32,
    /// Digits of numbers.
    #[serde(default)]
    pub precision: u32,
    /// Decimal places of numbers.
    #[serde(default)]
    pub scale: u32,
    /// A custom field (`__c`).
    #[serde(default)]
    pub custom: bool,
    /// An external id field (usable as upsert key).
    #[serde(default)]
    pub external_id: bool,
    /// Values must be unique.
    #[serde(default)]
    pub unique: bool,
    /// Null is allowed.
    #[serde(default = "yes")]
    pub nillable: bool,
    /// Can be set on create.
    #[serde(default)]
    pub createable: bool,
    /// Can be set on update.
    #[serde(default)]
    pub updateable: bool,
    /// Salesforce fills it when a create leaves it out.
    #[serde(default)]
    pub defaulted_on_create: bool,
    /// Picklist values (picklist and multipicklist fields).
    #[serde(default)]
    pub picklist_values: Vec<PicklistEntry>,
    /// Only the listed picklist values are accepted.
    #[serde(default)]
    pub restricted_picklist: bool,
    /// The compound field this one is a component of (`BillingAddress`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compound_field_name: Option<String>,
    /// Types a reference field points to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reference_to: Vec<String>,
}

impl DescribeField {
    /// The canonical type of this field.
    pub fn canonical_type(&self) -> FieldType {
        match self.field_type.as_str() {
            "id" => FieldType::Id,
            "string" | "textarea" | "combobox" | "encryptedstring" | "time" => FieldType::Text,
            "email" => FieldType::Email,
            "phone" => FieldType::Phone,
            "url" => FieldType::Url,
            "boolean" => FieldType::Bool,
            "int" | "long" => FieldType::Int,
            "double" | "currency" | "percent" => FieldType::Decimal,
            "date" => FieldType::Date,
            "datetime" => FieldType::DateTime,
            "picklist" => FieldType::Picklist,
            "multipicklist" => FieldType::MultiPicklist,
            "reference" => FieldType::Reference,
            other => FieldType::Unknown(other.to_owned()),
        }
    }

    /// Compound fields (`address`, `location`) and `base64` fields: the Bulk
    /// API rejects them in queries (Bulk API 2.0 Developer Guide, "Query
    /// Considerations"), and REST queries return a URL rather than the
    /// content of `base64` fields, so reads leave them out.
    pub fn is_compound_or_binary(&self) -> bool {
        matches!(self.field_type.as_str(), "address" | "location" | "base64")
    }

    /// The field as a [`FieldSchema`].
    pub fn to_schema(&self) -> FieldSchema {
        let mut f =
            FieldSchema::new(&self.name, self.canonical_type()).label(if self.label.is_empty() {
                self.name.clone()
            } else {
                self.label.clone()
            });
        if !self.nillable && self.createable && !self.defaulted_on_create {
            f = f.required();
        }
        f.nullable = self.nillable;
        f.custom = self.custom;
        f.writable = self.createable || self.updateable;
        f.external_id = self.external_id;
        f.unique = self.unique || self.external_id;
        if self.length > 0 {
            f.max_length = Some(self.length);
        }
        if matches!(self.field_type.as_str(), "double" | "currency" | "percent") {
            f.scale = Some(self.scale);
        }
        f.picklist = self
            .picklist_values
            .iter()
            .map(|p| PicklistValue {
                value: p.value.clone(),
                label: p.label.clone().unwrap_or_else(|| p.value.clone()),
                active: p.active,
            })
            .collect();
        f
    }
}

/// An sObject describe (`GET sobjects/{type}/describe`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeSObject {
    /// API name.
    pub name: String,
    /// Label.
    #[serde(default)]
    pub label: String,
    /// A custom object.
    #[serde(default)]
    pub custom: bool,
    /// Records can be created.
    #[serde(default)]
    pub createable: bool,
    /// Records can be updated.
    #[serde(default)]
    pub updateable: bool,
    /// Records can be deleted.
    #[serde(default)]
    pub deletable: bool,
    /// Records can be queried.
    #[serde(default = "yes")]
    pub queryable: bool,
    /// The fields.
    pub fields: Vec<DescribeField>,
}

impl DescribeSObject {
    /// A field by API name (case-insensitive, as SOQL is).
    pub fn field(&self, name: &str) -> Option<&DescribeField> {
        self.fields
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
    }

    /// The fields a read selects when every field is asked for: all but
    /// compound and binary fields (see [`DescribeField::is_compound_or_binary`]).
    pub fn readable_fields(&self) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|f| !f.is_compound_or_binary())
            .map(|f| f.name.as_str())
            .collect()
    }

    /// The describe as an [`ObjectSchema`]; the primary key is `Id`.
    pub fn to_schema(&self) -> ObjectSchema {
        let mut schema = ObjectSchema::new(&self.name).primary_key(["Id"]);
        schema.label = if self.label.is_empty() {
            self.name.clone()
        } else {
            self.label.clone()
        };
        schema.fields = self.fields.iter().map(DescribeField::to_schema).collect();
        schema
    }
}

/// The body of an sObject Collections create, update or upsert.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CollectionRequest {
    /// Roll back every record when one fails (this crate sends `false`).
    pub all_or_none: bool,
    /// The records, each with `attributes.type`.
    pub records: Vec<Map<String, Value>>,
}

/// One per-record error of an sObject Collections result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordError {
    /// The error code (`REQUIRED_FIELD_MISSING`, `DUPLICATE_VALUE`, ...).
    pub status_code: String,
    /// Human-readable message.
    #[serde(default)]
    pub message: String,
    /// The fields concerned.
    #[serde(default)]
    pub fields: Vec<String>,
}

/// The result of one record of an sObject Collections call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SaveResult {
    /// The record id, when it was saved (or is known).
    #[serde(default)]
    pub id: Option<String>,
    /// Whether the record was saved.
    pub success: bool,
    /// Why not.
    #[serde(default)]
    pub errors: Vec<RecordError>,
    /// Upserts: true when the record was created, false when updated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<bool>,
}

/// The state of a Bulk API 2.0 job.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JobState {
    /// Created; ingest data may be uploaded.
    Open,
    /// Data uploaded (or a query job submitted); waiting to be processed.
    UploadComplete,
    /// Being processed.
    InProgress,
    /// Finished; results can be read.
    JobComplete,
    /// Failed; see the job's `errorMessage`.
    Failed,
    /// Aborted by a client.
    Aborted,
    /// A state this crate does not know.
    Unknown(String),
}

impl JobState {
    /// Parses a wire state.
    pub fn parse(s: &str) -> JobState {
        match s {
            "Open" => JobState::Open,
            "UploadComplete" => JobState::UploadComplete,
            "InProgress" => JobState::InProgress,
            "JobComplete" => JobState::JobComplete,
            "Failed" => JobState::Failed,
            "Aborted" => JobState::Aborted,
            other => JobState::Unknown(other.to_owned()),
        }
    }

    /// The wire state.
    pub fn as_str(&self) -> &str {
        match self {
            JobState::Open => "Open",
            JobState::UploadComplete => "UploadComplete",
            JobState::InProgress => "InProgress",
            JobState::JobComplete => "JobComplete",
            JobState::Failed => "Failed",
            JobState::Aborted => "Aborted",
            JobState::Unknown(s) => s,
        }
    }

    /// True for `JobComplete`, `Failed` and `Aborted`.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            JobState::JobComplete | JobState::Failed | JobState::Aborted
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for JobState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for JobState {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(JobState::parse(&s))
    }
}

/// A Bulk API 2.0 job id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub String);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Job info of a Bulk API 2.0 ingest or query job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobInfo {
    /// The job id.
    pub id: JobId,
    /// `insert`, `update`, `upsert`, `delete`, `hardDelete`, `query`, `queryAll`.
    pub operation: String,
    /// The sObject type.
    pub object: String,
    /// The state.
    pub state: JobState,
    /// The upsert key of an upsert job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id_field_name: Option<String>,
    /// Records processed so far.
    #[serde(default)]
    pub number_records_processed: u64,
    /// Records that failed (ingest jobs).
    #[serde(default)]
    pub number_records_failed: u64,
    /// Why a job failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// `CSV`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// `LF` or `CRLF`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line_ending: Option<String>,
    /// `COMMA`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column_delimiter: Option<String>,
}

/// The body creating an ingest job (`POST jobs/ingest`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateIngestJob {
    /// The sObject type.
    pub object: String,
    /// `insert`, `update`, `upsert` or `delete`.
    pub operation: String,
    /// The upsert key (upsert only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id_field_name: Option<String>,
    /// `CSV`.
    pub content_type: String,
    /// `LF`.
    pub line_ending: String,
    /// `COMMA`.
    pub column_delimiter: String,
}

/// The body creating a query job (`POST jobs/query`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateQueryJob {
    /// `query` or `queryAll` (deleted and archived records too).
    pub operation: String,
    /// The SOQL.
    pub query: String,
    /// `CSV`.
    #[serde(default = "csv_type")]
    pub content_type: String,
    /// `LF`.
    #[serde(default = "lf")]
    pub line_ending: String,
    /// `COMMA`.
    #[serde(default = "comma")]
    pub column_delimiter: String,
}

fn csv_type() -> String {
    "CSV".into()
}
fn lf() -> String {
    "LF".into()
}
fn comma() -> String {
    "COMMA".into()
}

/// The body changing a job's state (`PATCH jobs/ingest/{id}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStateChange {
    /// `UploadComplete` or `Aborted`.
    pub state: JobState,
}

/// A token endpoint response (`POST /services/oauth2/token`): Salesforce
/// adds `instance_url` (where data calls go), `id` (the identity URL),
/// `issued_at` and `signature`, and sends no `expires_in`.
#[derive(Clone, Deserialize)]
pub struct TokenResponse {
    /// The access token.
    pub access_token: String,
    /// The org's instance, e.g. `https://mycompany.my.salesforce.com`.
    pub instance_url: String,
    /// The identity URL.
    #[serde(default)]
    pub id: Option<String>,
    /// `Bearer`.
    #[serde(default)]
    pub token_type: Option<String>,
    /// Milliseconds since the epoch.
    #[serde(default)]
    pub issued_at: Option<String>,
}

impl fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &"[REDACTED]")
            .field("instance_url", &self.instance_url)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// One limit of `GET limits`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Limit {
    /// The allocation.
    pub max: u64,
    /// What is left.
    pub remaining: u64,
}

/// `Sforce-Limit-Info: api-usage=N/M`: N API requests used of an allocation
/// of M over the last 24 hours (REST API Developer Guide, "Limit Info Header").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApiUsage {
    /// Requests used.
    pub used: u64,
    /// The allocation.
    pub max: u64,
}

impl ApiUsage {
    /// Reads the `api-usage` entry of a `Sforce-Limit-Info` header value
    /// (which may hold other entries, comma-separated).
    pub fn parse(header: &str) -> Option<ApiUsage> {
        header.split(',').find_map(|part| {
            let usage = part.trim().strip_prefix("api-usage=")?;
            let (used, max) = usage.split_once('/')?;
            Some(ApiUsage {
                used: used.trim().parse().ok()?,
                max: max.trim().parse().ok()?,
            })
        })
    }

    /// Requests left.
    pub fn remaining(&self) -> u64 {
        self.max.saturating_sub(self.used)
    }

    /// The header value.
    pub fn header_value(&self) -> String {
        format!("api-usage={}/{}", self.used, self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn limit_info_parses() {
        assert_eq!(
            ApiUsage::parse("api-usage=25/5000"),
            Some(ApiUsage {
                used: 25,
                max: 5000
            })
        );
        assert_eq!(
            ApiUsage::parse("per-app-api-usage=2/250(appName=x), api-usage=7/15000")
                .map(|u| u.remaining()),
            Some(14993)
        );
        assert_eq!(ApiUsage::parse("api-usage=x/5"), None);
        assert_eq!(ApiUsage::parse(""), None);
    }

    #[test]
    fn query_response_round_trips() {
        let body = json!({
            "totalSize": 3, "done": false,
            "nextRecordsUrl": "/services/data/v59.0/query/01gD0000002HU6KIAW-2000",
            "records": [{"attributes": {"type": "Contact", "url": "/services/data/v59.0/sobjects/Contact/003"},
                         "Id": "003", "LastName": "Lovelace"}]
        });
        let q: QueryResponse = serde_json::from_value(body.clone()).unwrap();
        assert!(!q.done);
        assert_eq!(q.records[0]["LastName"], "Lovelace");
        assert_eq!(serde_json::to_value(&q).unwrap(), body);
    }

    #[test]
    fn describe_converts_to_schema() {
        let d: DescribeSObject = serde_json::from_value(json!({
            "name": "Contact", "label": "Contact", "custom": false,
            "fields": [
                {"name": "Id", "type": "id", "nillable": false, "createable": false, "updateable": false, "length": 18},
                {"name": "LastName", "type": "string", "nillable": false, "createable": true, "updateable": true, "length": 80},
                {"name": "Customer_Segment__c", "type": "picklist", "custom": true, "createable": true, "updateable": true,
                 "restrictedPicklist": true,
                 "picklistValues": [{"value": "Enterprise", "label": "Enterprise", "active": true, "defaultValue": false}]},
                {"name": "External_Id__c", "type": "string", "custom": true, "externalId": true, "createable": true, "updateable": true, "length": 255},
                {"name": "MailingAddress", "type": "address", "createable": false, "updateable": false},
                {"name": "Photo__c", "type": "base64", "custom": true, "createable": true, "updateable": true},
                {"name": "LTV__c", "type": "currency", "custom": true, "createable": true, "updateable": true, "precision": 18, "scale": 2}
            ]
        }))
        .unwrap();
        let s = d.to_schema();
        assert_eq!(s.primary_key, vec!["Id"]);
        let last = s.get("LastName").unwrap();
        assert!(last.required && !last.custom && last.writable);
        assert_eq!(last.max_length, Some(80));
        let id = s.get("Id").unwrap();
        assert!(!id.required && !id.writable);
        let seg = s.get("Customer_Segment__c").unwrap();
        assert_eq!(seg.field_type, FieldType::Picklist);
        assert_eq!(seg.picklist[0].value, "Enterprise");
        assert!(s.get("External_Id__c").unwrap().external_id);
        assert_eq!(s.get("LTV__c").unwrap().scale, Some(2));
        assert_eq!(
            s.external_id_fields()
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>(),
            ["External_Id__c"]
        );
        let readable = d.readable_fields();
        assert!(!readable.contains(&"MailingAddress"));
        assert!(!readable.contains(&"Photo__c"));
        assert!(readable.contains(&"LTV__c"));
    }

    #[test]
    fn save_results_and_jobs_parse() {
        let r: Vec<SaveResult> = serde_json::from_value(json!([
            {"id": "003A", "success": true, "errors": [], "created": true},
            {"success": false, "errors": [{"statusCode": "REQUIRED_FIELD_MISSING",
              "message": "Required fields are missing: [LastName]", "fields": ["LastName"]}]}
        ]))
        .unwrap();
        assert_eq!(r[0].created, Some(true));
        assert_eq!(r[1].errors[0].fields, ["LastName"]);
        let j: JobInfo = serde_json::from_value(json!({
            "id": "750R0000000zlh9IAA", "operation": "upsert", "object": "Contact",
            "state": "JobComplete", "externalIdFieldName": "External_Id__c",
            "numberRecordsProcessed": 10, "numberRecordsFailed": 1
        }))
        .unwrap();
        assert!(j.state.is_final());
        assert_eq!(JobState::parse("Shiny"), JobState::Unknown("Shiny".into()));
    }
}
