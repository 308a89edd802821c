//! Serde types of Marketo's JSON (Swagger `swagger-mapi.json` and
//! `swagger-identity.json` of Adobe's `marketo-apis` repository).
//!
//! Every REST response is an envelope ([`Envelope`]): `requestId`,
//! `success`, `result`, `errors`, `warnings`, and for paged calls
//! `nextPageToken` / `moreResult`. Lead, company and opportunity records are
//! open JSON objects (fields depend on the instance), kept as
//! [`serde_json::Map`].

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One error or reason: `{"code": "606", "message": "..."}`. Marketo sends
/// codes as strings; numbers are accepted too.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// The code.
    #[serde(deserialize_with = "string_or_number")]
    pub code: String,
    /// The message.
    #[serde(default)]
    pub message: String,
}

fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!(
            "code is not a string or number: {other}"
        ))),
    }
}

/// The part of an envelope the classifier reads.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorEnvelope {
    /// Whether the call succeeded.
    #[serde(default = "yes")]
    pub success: bool,
    /// The errors of a failed call.
    #[serde(default)]
    pub errors: Vec<ApiError>,
}

fn yes() -> bool {
    true
}

/// A REST response envelope.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope<T> {
    /// Marketo's request id.
    #[serde(default)]
    pub request_id: String,
    /// Whether the call succeeded.
    #[serde(default = "yes")]
    pub success: bool,
    /// The results (absent when there are none).
    #[serde(default = "Vec::new")]
    pub result: Vec<T>,
    /// Errors of a failed call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ApiError>,
    /// Warnings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Value>,
    /// The token of the next page (or, for activities, the position reached).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
    /// Whether more activities follow (activities endpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub more_result: Option<bool>,
}

impl<T> Envelope<T> {
    /// A successful envelope with `result`.
    pub fn ok(request_id: impl Into<String>, result: Vec<T>) -> Self {
        Envelope {
            request_id: request_id.into(),
            success: true,
            result,
            errors: Vec::new(),
            warnings: Vec::new(),
            next_page_token: None,
            more_result: None,
        }
    }
}

/// An open record: a lead, company or opportunity as Marketo sends it.
pub type WireRecord = Map<String, Value>;

/// The identity endpoint's answer.
#[derive(Clone, Deserialize, Serialize)]
pub struct IdentityResponse {
    /// The access token.
    pub access_token: String,
    /// `bearer`.
    pub token_type: String,
    /// Seconds left.
    pub expires_in: u64,
    /// The API user's email (the scope).
    #[serde(default)]
    pub scope: Option<String>,
}

impl std::fmt::Debug for IdentityResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityResponse")
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

/// `POST /rest/v1/leads.json` (`SyncLeadRequest`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncLeadRequest {
    /// `createOnly`, `updateOnly`, `createOrUpdate`, `createDuplicate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<SyncAction>,
    /// The field to deduplicate on (default `email`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookup_field: Option<String>,
    /// The leads.
    pub input: Vec<WireRecord>,
}

/// `POST /rest/v1/companies.json` and `/opportunities.json`
/// (`SyncCompanyRequest`, `SyncCustomObjectRequest`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncObjectRequest {
    /// The action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<SyncAction>,
    /// `dedupeFields` (default) or `idField`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedupe_by: Option<String>,
    /// The records.
    pub input: Vec<WireRecord>,
}

/// A sync action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SyncAction {
    /// Create only; existing records are skipped (1005).
    CreateOnly,
    /// Update only; missing records are skipped (1004).
    UpdateOnly,
    /// Create or update.
    CreateOrUpdate,
    /// Always create (leads).
    CreateDuplicate,
}

/// `POST /rest/v1/{object}/delete.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteRequest {
    /// `dedupeFields` or `idField` (companies, opportunities).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_by: Option<String>,
    /// The records to delete (their id or dedupe fields).
    pub input: Vec<WireRecord>,
}

/// One result of a sync or delete call.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncResult {
    /// Position in the input (companies, opportunities); leads answer in input order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<usize>,
    /// The lead or company id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    /// The opportunity's id.
    #[serde(
        default,
        rename = "marketoGUID",
        skip_serializing_if = "Option::is_none"
    )]
    pub marketo_guid: Option<String>,
    /// `created`, `updated`, `deleted`, `skipped`.
    pub status: String,
    /// Why a record was skipped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<ApiError>,
}

/// One field of `GET /rest/v1/leads/describe.json` (`LeadAttribute`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeadAttribute {
    /// The field's id.
    pub id: i64,
    /// The label.
    pub display_name: String,
    /// `string`, `email`, `integer`, `boolean`, `datetime`, ...
    pub data_type: String,
    /// Max length of text fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u32>,
    /// REST usage: name and read-only flag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rest: Option<LeadMapAttribute>,
}

/// `LeadMapAttribute`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeadMapAttribute {
    /// The REST API name.
    pub name: String,
    /// Whether the field cannot be written.
    #[serde(default)]
    pub read_only: bool,
}

/// The result of `companies/describe.json` and `opportunities/describe.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectDescription {
    /// The object's name.
    pub name: String,
    /// Its description.
    #[serde(default)]
    pub description: String,
    /// The id field (`id`, `marketoGUID`).
    pub id_field: String,
    /// The dedupe fields (`externalCompanyId`, `externalOpportunityId`).
    #[serde(default)]
    pub dedupe_fields: Vec<String>,
    /// Field groups usable as `filterType`.
    #[serde(default)]
    pub searchable_fields: Vec<Vec<String>>,
    /// The fields.
    #[serde(default)]
    pub fields: Vec<ObjectField>,
}

/// One field of an object description.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectField {
    /// The API name.
    pub name: String,
    /// The label.
    #[serde(default)]
    pub display_name: String,
    /// The data type.
    pub data_type: String,
    /// Max length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u32>,
    /// Whether it can be written.
    #[serde(default)]
    pub updateable: bool,
}

/// A lead-change or deleted-lead activity (`LeadChange`, `Activity`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Activity {
    /// The activity id.
    pub id: i64,
    /// The activity's GUID.
    #[serde(
        default,
        rename = "marketoGUID",
        skip_serializing_if = "Option::is_none"
    )]
    pub marketo_guid: Option<String>,
    /// The lead.
    pub lead_id: i64,
    /// When.
    pub activity_date: String,
    /// 12 New Lead, 13 Change Data Value, 37 Delete Lead.
    pub activity_type_id: i64,
    /// Changed fields (lead changes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<LeadChangeField>,
    /// Secondary attributes.
    #[serde(default)]
    pub attributes: Vec<Value>,
}

/// One changed field of a lead-change activity (`LeadChangeField`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeadChangeField {
    /// The field's id.
    pub id: i64,
    /// The REST name.
    pub name: String,
    /// The new value.
    #[serde(default)]
    pub new_value: Option<String>,
    /// The old value.
    #[serde(default)]
    pub old_value: Option<String>,
}

/// Activity type ids used here (Marketo's standard activity types, see
/// `GET /rest/v1/activities/types.json`).
pub mod activity_type {
    /// New Lead.
    pub const NEW_LEAD: i64 = 12;
    /// Change Data Value.
    pub const CHANGE_DATA_VALUE: i64 = 13;
    /// Delete Lead.
    pub const DELETE_LEAD: i64 = 37;
}

/// `POST /bulk/v1/{leads,activities}/export/create.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportRequest {
    /// Columns (leads; activities export a fixed set).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    /// Selection.
    pub filter: ExportFilter,
    /// `CSV` (default), `TSV`, `SSV`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

/// `ExportLeadFilter` / `ExportActivityFilter`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportFilter {
    /// Created within.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateRange>,
    /// Updated within (leads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateRange>,
    /// Activity types (activities).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity_type_ids: Option<Vec<i64>>,
}

/// `DateRange` (ISO 8601 strings).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DateRange {
    /// Start (inclusive).
    pub start_at: String,
    /// End (inclusive).
    pub end_at: String,
}

/// `ExportResponse`: one export job.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportJob {
    /// The job id.
    pub export_id: String,
    /// `Created`, `Queued`, `Processing`, `Completed`, `Failed`, `Cancelled`.
    pub status: String,
    /// When created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// When queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_at: Option<String>,
    /// When finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Rows in the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_of_records: Option<u64>,
    /// File size in bytes (when completed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_size: Option<u64>,
    /// Format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_msg: Option<String>,
}

/// `{"id": leadId}`: `LeadLookupInputData` (Change Lead Program Status),
/// `LeadInputData` (static list operations) and `InputLead` (Request Campaign).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeadIdInput {
    /// The lead id.
    pub id: i64,
}

/// `POST /rest/v1/leads/programs/{programId}/status.json`
/// (`ChangeLeadProgramStatusRequest`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeLeadProgramStatusRequest {
    /// The program status to set, one of the program channel's statuses.
    pub status: String,
    /// The leads (at most 300).
    pub input: Vec<LeadIdInput>,
}

/// `{"leadId": leadId}` (`ProgramMemberStatus`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgramMemberLead {
    /// The lead id.
    pub lead_id: i64,
}

/// `POST /rest/v1/programs/{programId}/members/status.json`
/// (`SyncProgramMemberStatusRequest`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncProgramMemberStatusRequest {
    /// The program status to set.
    pub status_name: String,
    /// The leads (at most 300).
    pub input: Vec<ProgramMemberLead>,
}

/// `POST` / `DELETE /rest/v1/lists/{listId}/leads.json` (`ListOperationRequest`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListOperationRequest {
    /// The leads (at most 300).
    pub input: Vec<LeadIdInput>,
}

/// One result of a membership call: `ChangeLeadProgramStatusOutputData`
/// (`id`, `status`, `reasons`), `ProgramMemberStatusResponse` (`seq`,
/// `leadId`, `status`, `reasons`) and `ListOperationOutputData` (`id`,
/// `status`, `reasons`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MembershipResult {
    /// Position in the input (Sync Program Member Status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<usize>,
    /// The lead (program status and list calls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    /// The lead (Sync Program Member Status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lead_id: Option<i64>,
    /// `updated`, `created`, `added`, `removed`, `memberof`, `notmemberof`
    /// or `skipped`.
    #[serde(default)]
    pub status: String,
    /// Why a lead was skipped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<ApiError>,
}

impl MembershipResult {
    /// The lead this result is for, when Marketo named it.
    pub fn lead(&self) -> Option<i64> {
        self.lead_id.or(self.id)
    }
}

/// One program member of `GET /rest/v1/programs/{programId}/members.json`
/// (`ProgramMember`): the documented fields plus whatever `fields` asked
/// for (`statusName`, `updatedAt`, custom member fields, ...).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgramMember {
    /// Position in the page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<usize>,
    /// The lead.
    pub lead_id: i64,
    /// The program.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program_id: Option<i64>,
    /// Whether the member reached the program's success status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reached_success: Option<bool>,
    /// Whether the program acquired the lead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acquired_by: Option<bool>,
    /// When the lead first became a member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub membership_date: Option<String>,
    /// The other fields returned (`statusName`, `updatedAt`, ...).
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

impl ProgramMember {
    /// The member's program status (`statusName`), when it was asked for.
    pub fn status_name(&self) -> Option<&str> {
        self.fields.get("statusName").and_then(Value::as_str)
    }
}

/// `ProgramMembership`: a lead's membership in the program of
/// `GET /rest/v1/leads/programs/{programId}.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgramMembership {
    /// The lead's program status.
    pub progression_status: String,
    /// When the lead first became a member.
    #[serde(default)]
    pub membership_date: String,
    /// Whether the status is a success status.
    #[serde(default)]
    pub reached_success: bool,
    /// Whether the program acquired the lead.
    #[serde(default)]
    pub acquired_by: bool,
    /// Whether the lead is exhausted in the stream (engagement programs).
    #[serde(default)]
    pub is_exhausted: bool,
    /// The stream (engagement programs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// The stream's cadence (engagement programs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nurture_cadence: Option<String>,
    /// When the membership last changed (sent by Marketo, not in the Swagger
    /// description).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

/// A lead of `GET /rest/v1/leads/programs/{programId}.json`: its fields and
/// its `membership`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProgramLead {
    /// The lead id.
    pub id: i64,
    /// The membership in the program.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub membership: Option<ProgramMembership>,
    /// The lead fields asked for.
    #[serde(flatten)]
    pub fields: WireRecord,
}

/// A static list (`StaticList` of `GET /rest/v1/lists.json`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StaticList {
    /// The list id.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// Its description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The program holding it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program_name: Option<String>,
    /// Its workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_name: Option<String>,
    /// When created.
    #[serde(default)]
    pub created_at: String,
    /// When last changed.
    #[serde(default)]
    pub updated_at: String,
}

/// A smart campaign (`Campaign` of `GET /rest/v1/campaigns.json`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Campaign {
    /// The campaign id.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// Its description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `batch` or `trigger`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The parent program, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program_id: Option<i64>,
    /// The parent program's name, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program_name: Option<String>,
    /// Its workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_name: Option<String>,
    /// Whether a trigger campaign is active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    /// When created.
    #[serde(default)]
    pub created_at: String,
    /// When last changed.
    #[serde(default)]
    pub updated_at: String,
}

/// A My Token overridden for one campaign run (`Token`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignToken {
    /// `{{my.name}}`.
    pub name: String,
    /// The value.
    pub value: String,
}

/// `TriggerCampaignData`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerCampaignData {
    /// The leads (at most 100).
    pub leads: Vec<LeadIdInput>,
    /// Token overrides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<CampaignToken>,
}

/// `POST /rest/v1/campaigns/{campaignId}/trigger.json` (`TriggerCampaignRequest`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerCampaignRequest {
    /// The run.
    pub input: TriggerCampaignData,
}
