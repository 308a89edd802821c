//! The JSON shapes of the API: seed 002's request bodies (camelCase) and
//! the service's answers. Each type derives its OpenAPI schema.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A CRM the service integrates with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Salesforce (OAuth 2.0 refresh token).
    Salesforce,
    /// HubSpot (private-app access token, or OAuth refresh token).
    Hubspot,
    /// Pipedrive (API token and company domain).
    Pipedrive,
}

impl Provider {
    /// The lower-case name, as in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Salesforce => "salesforce",
            Provider::Hubspot => "hubspot",
            Provider::Pipedrive => "pipedrive",
        }
    }

    /// The provider of a stored integration's `provider` text.
    pub fn parse(text: &str) -> Option<Provider> {
        match text {
            "salesforce" => Some(Provider::Salesforce),
            "hubspot" => Some(Provider::Hubspot),
            "pipedrive" => Some(Provider::Pipedrive),
            _ => None,
        }
    }
}

/// Which way data flows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Platform to CRM only: `sync-from-crm` is refused.
    ToCrm,
    /// CRM to platform only: contact and lead syncs are refused.
    FromCrm,
    /// Both ways (default).
    #[default]
    Bidirectional,
}

/// An attribution model (seed 002 "Multi-Touch Attribution"; formulas in
/// `crm_core::attribution`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Model {
    /// All credit to the first touchpoint.
    FirstTouch,
    /// All credit to the last touchpoint.
    LastTouch,
    /// Equal credit to every touchpoint (default).
    #[default]
    Linear,
    /// Credit halves every half-life before the conversion.
    TimeDecay,
    /// 40% first, 40% last, 20% over the middle.
    PositionBased,
}

impl From<Model> for crm_core::attribution::AttributionModel {
    fn from(m: Model) -> Self {
        use crm_core::attribution::AttributionModel as A;
        match m {
            Model::FirstTouch => A::FirstTouch,
            Model::LastTouch => A::LastTouch,
            Model::Linear => A::Linear,
            Model::TimeDecay => A::TimeDecay,
            Model::PositionBased => A::PositionBased,
        }
    }
}

/// Keys of the Pipedrive person custom fields enrichment writes (from
/// `GET /v1/personFields`); without them, enrichment writes a note.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PipedriveFieldKeys {
    /// "Social Engagement Score" (number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[0-9a-fA-F]{40}$")]
    pub engagement_score: Option<String>,
    /// "Primary Social Platform" (text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[0-9a-fA-F]{40}$")]
    pub primary_platform: Option<String>,
    /// "Social Profile URL" (text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[0-9a-fA-F]{40}$")]
    pub profile_url: Option<String>,
}

impl PipedriveFieldKeys {
    /// The first key that is not a Pipedrive field key (40 hex digits), as
    /// `(its JSON name, the key)`.
    pub fn first_malformed(&self) -> Option<(&'static str, &str)> {
        [
            ("engagementScore", &self.engagement_score),
            ("primaryPlatform", &self.primary_platform),
            ("profileUrl", &self.profile_url),
        ]
        .into_iter()
        .find_map(|(name, key)| {
            key.as_deref()
                .filter(|k| k.len() != 40 || !k.bytes().all(|b| b.is_ascii_hexdigit()))
                .map(|k| (name, k))
        })
    }
}

/// How an integration syncs (seed 002 `syncConfig`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyncConfig {
    /// Which way data flows.
    #[serde(default)]
    pub direction: Direction,
    /// Minutes between automatic syncs (1 to 1440; default 60).
    #[serde(default = "default_interval")]
    #[schema(minimum = 1, maximum = 1440)]
    pub sync_interval: u32,
    /// Whether the scheduled jobs include this integration (default true).
    #[serde(default = "yes")]
    pub auto_sync: bool,
    /// The contact fields written to the CRM (`email`, `firstName`,
    /// `lastName`, `company`, `phone`); empty means all. `email` (the
    /// dedupe key) and `lastName` (Salesforce requires it) are always
    /// written.
    #[serde(default)]
    pub contact_fields: Vec<String>,
    /// The lead fields written (`email`, `firstName`, `lastName`,
    /// `company`, `source`, `status`); empty means all. `email`,
    /// `lastName` and `company` (Salesforce requires them) are always
    /// written.
    #[serde(default)]
    pub lead_fields: Vec<String>,
    /// The model `leads/attribution` uses when the request names none.
    #[serde(default)]
    pub attribution_model: Model,
    /// Half-life of `time_decay`, in hours (default 168, one week).
    #[serde(default = "default_half_life")]
    #[schema(format = Int64, minimum = 1, maximum = 4294967295_i64)]
    pub half_life_hours: u32,
    /// Pipedrive only: custom field keys for enrichment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipedrive_fields: Option<PipedriveFieldKeys>,
}

fn default_interval() -> u32 {
    60
}
fn default_half_life() -> u32 {
    168
}
fn yes() -> bool {
    true
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            direction: Direction::default(),
            sync_interval: default_interval(),
            auto_sync: true,
            contact_fields: Vec::new(),
            lead_fields: Vec::new(),
            attribution_model: Model::default(),
            half_life_hours: default_half_life(),
            pipedrive_fields: None,
        }
    }
}

/// `POST /api/crm/integrations`.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateIntegration {
    /// The CRM.
    pub provider: Provider,
    /// A name, unique within the workspace (1 to 200 characters, not
    /// blank, without `/`; surrounding spaces are trimmed).
    #[schema(min_length = 1, max_length = 200, pattern = r"^[^/]*[^/\s][^/]*$")]
    pub name: String,
    /// A description.
    #[serde(default)]
    pub description: Option<String>,
    /// Secrets and endpoints, by provider:
    /// Salesforce `clientId`, `clientSecret`, `refreshToken`, `domain`
    /// (My Domain URL), optional `accessToken`;
    /// HubSpot `accessToken` (private app; `apiKey` is read as one) or
    /// `clientId`, `clientSecret`, `refreshToken`;
    /// Pipedrive `apiToken` and `domain` (company domain).
    /// Stored encrypted; answers show them masked.
    pub credentials: BTreeMap<String, String>,
    /// The scopes granted (informational).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// How it syncs.
    #[serde(default)]
    pub sync_config: SyncConfig,
}

/// A stored integration. Credentials are masked: a secret's value is
/// never returned.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Integration {
    /// Its id.
    pub id: String,
    /// The workspace it belongs to.
    pub workspace: String,
    /// The CRM.
    pub provider: Provider,
    /// Its name.
    pub name: String,
    /// Its description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The scopes granted.
    pub scopes: Vec<String>,
    /// How it syncs.
    pub sync_config: SyncConfig,
    /// Credential names with masked values (`********`); endpoints
    /// (`domain`) are shown as stored.
    pub credentials: BTreeMap<String, String>,
    /// `active`, `paused`, `error` or `disabled`.
    pub status: String,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When it last changed.
    pub updated_at: String,
    /// When it last synced from the CRM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_sync_at: Option<String>,
}

/// `GET /api/crm/integrations`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct IntegrationList {
    /// The workspace's integrations, oldest first.
    pub integrations: Vec<Integration>,
}

/// One social profile (seed 002 `socialProfiles[]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SocialProfileInput {
    /// `twitter` (or `x`), `instagram`, `linkedin`, `facebook`, `tiktok`,
    /// `youtube`, or another name; not blank, one profile per platform.
    #[schema(min_length = 1, pattern = r"\S")]
    pub platform: String,
    /// The handle; one leading `@` is dropped, and what remains is not
    /// blank.
    #[schema(min_length = 1, pattern = r"^\s*([^\s@]|@\s*\S)")]
    pub username: String,
    /// The profile URL: `http://` or `https://` and a host name.
    #[serde(default)]
    #[schema(
        pattern = r"^https?://([A-Za-z0-9-]+\.)*[A-Za-z][A-Za-z0-9-]*(:[0-9]{1,4})?(/[A-Za-z0-9._~%/-]*)?$"
    )]
    pub url: Option<String>,
    /// Followers.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 9223372036854775807_i64)]
    pub followers: Option<u64>,
    /// Interactions with the profile.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 9223372036854775807_i64)]
    pub engagement: Option<u64>,
}

/// `POST .../contacts/sync` and one item of `.../contacts/batch-sync`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContactInput {
    /// The email: the dedupe key (compared trimmed and lower-cased).
    #[schema(format = Email, max_length = 254)]
    pub email: String,
    /// First name.
    #[serde(default)]
    pub first_name: Option<String>,
    /// Last name (Salesforce requires one).
    #[serde(default)]
    pub last_name: Option<String>,
    /// The company (Salesforce: the Account, found by name or created).
    #[serde(default)]
    pub company: Option<String>,
    /// Phone in international form, `+` and 8 to 15 digits (spaces,
    /// dots, dashes and parentheses between them are dropped), normalized
    /// to E.164 (`+1234567890`); blank is the same as absent.
    #[serde(default)]
    #[schema(pattern = r"^\s*$|^\s*\+[ .()-]*([0-9][ .()-]*){8,15}\s*$")]
    pub phone: Option<String>,
    /// Social profiles, written to the CRM's social fields.
    #[serde(default)]
    pub social_profiles: Vec<SocialProfileInput>,
    /// Other CRM fields by API name; a name the CRM does not have is
    /// reported in `skippedFields`, not written.
    #[serde(default)]
    pub custom_fields: BTreeMap<String, String>,
}

/// `POST .../contacts/batch-sync`: 1 to 5000 contacts. Each item is
/// checked on its own: one with a wrong value (an email that is not one,
/// a blank username) fails alone, in its `results` entry, and the others
/// are written; a body that is not an array of such objects (a wrong
/// type, an unknown field) is refused whole.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct ContactBatch(pub Vec<ContactInput>);

/// The most contacts one batch holds.
pub const MAX_BATCH_ITEMS: usize = 5000;

impl utoipa::PartialSchema for ContactBatch {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::ArrayBuilder;
        use utoipa::openapi::{Ref, RefOr};
        ArrayBuilder::new()
            .items(RefOr::Ref(Ref::from_schema_name(ContactInput::name())))
            .min_items(Some(1))
            .max_items(Some(MAX_BATCH_ITEMS))
            .description(Some(
                "1 to 5000 contacts. Each item is checked on its own: one with a wrong \
                 value (an email that is not one, a blank username) fails alone, in its \
                 `results` entry, and the others are written; a body that is not an \
                 array of such objects (a wrong type, an unknown field) is refused whole.",
            ))
            .into()
    }
}

impl ToSchema for ContactBatch {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        use utoipa::PartialSchema;
        schemas.push((ContactInput::name().into_owned(), ContactInput::schema()));
        ContactInput::schemas(schemas);
    }
}

/// The social side of a lead (seed 002 `socialContext`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SocialContext {
    /// Where the lead came from.
    #[serde(default)]
    pub platform: Option<String>,
    /// The conversation.
    #[serde(default)]
    pub conversation_id: Option<String>,
    /// `positive`, `neutral`, `negative`, ...
    #[serde(default)]
    pub sentiment: Option<String>,
    /// 0 to 100.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 100)]
    pub engagement_score: Option<u8>,
}

/// `POST .../leads/sync`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeadInput {
    /// The email: the dedupe key (compared trimmed and lower-cased).
    #[schema(format = Email, max_length = 254)]
    pub email: String,
    /// First name.
    #[serde(default)]
    pub first_name: Option<String>,
    /// Last name (Salesforce requires one).
    #[serde(default)]
    pub last_name: Option<String>,
    /// The company (Salesforce requires one).
    #[serde(default)]
    pub company: Option<String>,
    /// Where the lead came from (`twitter_dm`).
    #[serde(default)]
    pub source: Option<String>,
    /// `new`, `working`, `qualified`, `unqualified`, or the CRM's own value
    /// (passed on as it is: Salesforce refuses, with a 422, one that is not
    /// in its Lead Status picklist).
    #[serde(default)]
    pub status: Option<String>,
    /// The social context.
    #[serde(default)]
    pub social_context: Option<SocialContext>,
}

/// A field the service did not write, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct SkippedField {
    /// The request's name of the field.
    pub field: String,
    /// Why it was not written.
    pub reason: String,
}

/// What a sync did to one record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A new record.
    Created,
    /// An existing record (matched by email) changed.
    Updated,
    /// An existing record already held every value.
    Unchanged,
}

/// The answer of a contact or lead sync.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncResult {
    /// The CRM record's id.
    pub record_id: String,
    /// The CRM object written (`Contact`, `Lead`, `contacts`, `persons`,
    /// `leads`).
    pub object: String,
    /// What happened.
    pub action: Action,
    /// The CRM fields written.
    pub written_fields: Vec<String>,
    /// Fields not written.
    pub skipped_fields: Vec<SkippedField>,
}

/// One item of a batch answer.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchItem {
    /// Its position in the request.
    pub index: usize,
    /// The CRM record's id, when written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_id: Option<String>,
    /// What happened; absent on failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    /// `true` when an earlier item had the same email: this one was merged
    /// into it (later non-empty values win).
    pub duplicate_of: Option<usize>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<crate::error::ErrorDetail>,
}

/// `POST .../contacts/batch-sync`.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchResult {
    /// Items received.
    pub received: usize,
    /// Distinct emails among them.
    pub unique: usize,
    /// Items merged into an earlier one with the same email.
    pub duplicates: usize,
    /// Records created.
    pub created: usize,
    /// Records updated.
    pub updated: usize,
    /// Records that already held the values.
    pub unchanged: usize,
    /// Items that failed (kept for retry by the hourly job when the CRM
    /// was unavailable).
    pub failed: usize,
    /// One entry per item, in request order.
    pub results: Vec<BatchItem>,
}

/// A CRM contact. Personal fields are masked unless `reveal=true` was
/// asked by an operator or admin.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContactOut {
    /// The CRM record's id.
    pub id: String,
    /// Email.
    pub email: Option<String>,
    /// First name.
    pub first_name: Option<String>,
    /// Last name.
    pub last_name: Option<String>,
    /// Phone.
    pub phone: Option<String>,
    /// Company.
    pub company: Option<String>,
    /// Whether personal fields are masked.
    pub masked: bool,
}

/// `GET .../contacts?email=`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ContactAnswer {
    /// The contact.
    pub contact: ContactOut,
}

/// `POST .../contacts/enrich`.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnrichRequest {
    /// The CRM contact's id.
    #[schema(min_length = 1)]
    pub contact_id: String,
    /// The integration's provider, if the caller states it: a different
    /// one is refused.
    #[serde(default)]
    pub provider: Option<Provider>,
    /// Write the social profiles (default true).
    #[serde(default = "yes")]
    pub include_social_data: bool,
    /// Write the engagement score, touchpoints and sentiment (default true).
    #[serde(default = "yes")]
    pub include_engagement_history: bool,
}

/// What enrichment wrote.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnrichResult {
    /// The CRM contact's id.
    pub contact_id: String,
    /// The CRM fields written; empty when the contact already held the data.
    pub written_fields: Vec<String>,
    /// Pipedrive's note: `created`, `updated`, `unchanged`, or `none`.
    pub note: String,
    /// `true` when nothing was written.
    pub unchanged: bool,
    /// The engagement score written (0 to 100, two decimals), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engagement_score: Option<String>,
}

/// One touchpoint (seed 002 `touchpoints[]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TouchpointInput {
    /// When (RFC 3339).
    #[schema(format = DateTime)]
    pub timestamp: String,
    /// Where; not blank.
    #[schema(min_length = 1, pattern = r"\S")]
    pub platform: String,
    /// What kind of touch.
    #[serde(rename = "type")]
    #[schema(value_type = TouchpointType)]
    pub kind: String,
    /// The post.
    #[serde(default)]
    pub post_id: Option<String>,
    /// The conversation.
    #[serde(default)]
    pub conversation_id: Option<String>,
    /// The campaign credited; the request's `campaign` when absent.
    #[serde(default)]
    pub campaign_id: Option<String>,
}

/// The kind of a touchpoint (`type`). `post_view` is read as `view`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TouchpointType {
    /// A view of a post.
    View,
    /// The same as `view`.
    PostView,
    /// A click.
    Click,
    /// A comment.
    Comment,
    /// A share.
    Share,
    /// A direct message.
    Dm,
    /// The conversion itself.
    Conversion,
}

/// `POST .../leads/attribution`.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AttributionRequest {
    /// The CRM lead's id; not blank.
    #[schema(min_length = 1, pattern = r"\S")]
    pub lead_id: String,
    /// The lead's source platform.
    #[serde(default)]
    pub source: Option<String>,
    /// The campaign of touchpoints that name none.
    #[serde(default)]
    pub campaign: Option<String>,
    /// The post that converted.
    #[serde(default)]
    pub post_id: Option<String>,
    /// The conversation that converted.
    #[serde(default)]
    pub conversation_id: Option<String>,
    /// New touchpoints; ones already recorded for the lead are not counted
    /// twice.
    #[serde(default)]
    pub touchpoints: Vec<TouchpointInput>,
    /// The model; the integration's `attributionModel` when absent.
    #[serde(default)]
    pub model: Option<Model>,
    /// When the lead converted (RFC 3339); the latest touchpoint's time
    /// when absent. Touchpoints after it do not count.
    #[serde(default)]
    #[schema(format = DateTime)]
    pub converted_at: Option<String>,
}

/// Credit of one campaign.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct CampaignCreditOut {
    /// The campaign; `null` for touchpoints without one.
    pub campaign: Option<String>,
    /// Its share, a decimal in `[0, 1]` (shares sum to exactly 1).
    pub credit: String,
}

/// The answer of `leads/attribution`.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttributionResult {
    /// The CRM lead's id.
    pub lead_id: String,
    /// The model used.
    pub model: Model,
    /// Touchpoints recorded for the lead, all requests together.
    pub touchpoints: usize,
    /// Touchpoints of this request already recorded (not counted again).
    pub repeated: usize,
    /// Credit per campaign, largest first.
    pub credits: Vec<CampaignCreditOut>,
    /// The lead's engagement score from its touchpoints (0 to 100), as of
    /// the start of the current hour; returned, not written (enrichment
    /// writes the score).
    pub engagement_score: String,
    /// The CRM fields written.
    pub written_fields: Vec<String>,
}

/// `POST .../sync-from-crm`.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PullResult {
    /// Contacts read from the CRM since the last pull.
    pub pulled: usize,
    /// Contacts the platform did not know.
    pub created: usize,
    /// Contacts whose values changed.
    pub updated: usize,
    /// Contacts already up to date.
    pub unchanged: usize,
    /// Contacts deleted in the CRM.
    pub deleted: usize,
    /// Contacts without an email (not kept: email is the key).
    pub skipped: usize,
}

/// A platform event for the automatic workflows (seed 002 "Automatic
/// Workflows").
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PlatformEvent {
    /// A new conversation: its participant becomes a CRM contact.
    ConversationCreated {
        /// The conversation; not blank.
        #[serde(rename = "conversationId")]
        #[schema(min_length = 1, pattern = r"\S")]
        conversation_id: String,
        /// Where.
        platform: String,
        /// The participant's email.
        #[schema(format = Email, max_length = 254)]
        email: String,
        /// The participant's name.
        #[serde(default)]
        name: Option<String>,
        /// The participant's handle.
        #[serde(default)]
        username: Option<String>,
    },
    /// A message sent or received in a conversation: the contact's
    /// engagement score is updated.
    MessageSent {
        /// The conversation.
        #[serde(rename = "conversationId")]
        conversation_id: String,
        /// When (RFC 3339).
        #[schema(format = DateTime)]
        timestamp: String,
        /// `positive`, `neutral`, `negative`.
        #[serde(default)]
        sentiment: Option<String>,
    },
    /// A lead engaged with a post: a touchpoint, and attribution again.
    PostEngagement {
        /// The CRM lead's id; not blank.
        #[serde(rename = "leadId")]
        #[schema(min_length = 1, pattern = r"\S")]
        lead_id: String,
        /// The touchpoint.
        #[serde(deserialize_with = "strict::object")]
        touchpoint: TouchpointInput,
        /// The post's campaign.
        #[serde(default)]
        campaign: Option<String>,
    },
}

/// What a workflow did.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventResult {
    /// The workflow run: `contact_linked`, `engagement_updated`,
    /// `attribution_updated`.
    pub workflow: String,
    /// The CRM record concerned.
    pub record_id: String,
    /// The CRM fields written.
    pub written_fields: Vec<String>,
}

/// `GET /health`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
}

/// Reading request bodies as the document describes them.
///
/// serde's derived structs also accept a JSON array (their fields in
/// order), and its integers refuse a JSON number written with a fraction
/// (`60.0`), which JSON Schema counts as an integer. [`Strict`](strict::Strict) reads a
/// [`serde_json::Value`] so that a struct is only ever an object and an
/// integral number is an integer, whatever its spelling; everything else
/// is serde_json's own reading (and `serde_path_to_error` still names the
/// field at fault).
pub mod strict {
    use serde::de::value::StringDeserializer;
    use serde::de::{
        self, DeserializeOwned, DeserializeSeed, MapAccess, SeqAccess, Unexpected, Visitor,
    };
    use serde::forward_to_deserialize_any;
    use serde_json::{Map, Value};

    type E = serde_json::Error;

    /// `deserialize_u8` ... `deserialize_i64` of [`Strict`]: every integer
    /// type reads through [`integer`].
    macro_rules! integers {
        ($($name:ident),*) => {
            $(
                fn $name<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, E> {
                    integer(self.0, visitor)
                }
            )*
        };
    }

    /// A JSON value read strictly (see the [module](self)).
    #[derive(Debug)]
    pub struct Strict(pub Value);

    fn unexpected(v: &Value) -> Unexpected<'_> {
        match v {
            Value::Null => Unexpected::Unit,
            Value::Bool(b) => Unexpected::Bool(*b),
            Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
                (Some(u), _, _) => Unexpected::Unsigned(u),
                (None, Some(i), _) => Unexpected::Signed(i),
                (None, None, Some(f)) => Unexpected::Float(f),
                _ => Unexpected::Other("number"),
            },
            Value::String(s) => Unexpected::Str(s),
            Value::Array(_) => Unexpected::Seq,
            Value::Object(_) => Unexpected::Map,
        }
    }

    /// 2^64 and -2^63 as f64: integral floats within are integers.
    const U64_END: f64 = 18_446_744_073_709_551_616.0;
    const I64_START: f64 = -9_223_372_036_854_775_808.0;

    fn integer<'de, V: Visitor<'de>>(v: Value, visitor: V) -> Result<V::Value, E> {
        if let Value::Number(n) = &v {
            if let Some(u) = n.as_u64() {
                return visitor.visit_u64(u);
            }
            if let Some(i) = n.as_i64() {
                return visitor.visit_i64(i);
            }
            if let Some(f) = n.as_f64()
                && f.fract() == 0.0
            {
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                if (0.0..U64_END).contains(&f) {
                    return visitor.visit_u64(f as u64);
                } else if (I64_START..0.0).contains(&f) {
                    return visitor.visit_i64(f as i64);
                }
            }
        }
        Err(de::Error::invalid_type(unexpected(&v), &visitor))
    }

    struct Seq(std::vec::IntoIter<Value>);

    impl<'de> SeqAccess<'de> for Seq {
        type Error = E;
        fn next_element_seed<T: DeserializeSeed<'de>>(
            &mut self,
            seed: T,
        ) -> Result<Option<T::Value>, E> {
            self.0
                .next()
                .map(|v| seed.deserialize(Strict(v)))
                .transpose()
        }
        fn size_hint(&self) -> Option<usize> {
            Some(self.0.len())
        }
    }

    struct Obj {
        entries: serde_json::map::IntoIter,
        value: Option<Value>,
    }

    impl<'de> MapAccess<'de> for Obj {
        type Error = E;
        fn next_key_seed<K: DeserializeSeed<'de>>(
            &mut self,
            seed: K,
        ) -> Result<Option<K::Value>, E> {
            match self.entries.next() {
                Some((k, v)) => {
                    self.value = Some(v);
                    seed.deserialize(StringDeserializer::<E>::new(k)).map(Some)
                }
                None => Ok(None),
            }
        }
        fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, E> {
            let v = self
                .value
                .take()
                .ok_or_else(|| <E as de::Error>::custom("a value without its key"))?;
            seed.deserialize(Strict(v))
        }
        fn size_hint(&self) -> Option<usize> {
            Some(self.entries.len())
        }
    }

    fn visit_array<'de, V: Visitor<'de>>(a: Vec<Value>, visitor: V) -> Result<V::Value, E> {
        let len = a.len();
        let mut seq = Seq(a.into_iter());
        let out = visitor.visit_seq(&mut seq)?;
        if seq.0.len() == 0 {
            Ok(out)
        } else {
            Err(de::Error::invalid_length(
                len,
                &"fewer elements in the array",
            ))
        }
    }

    fn visit_object<'de, V: Visitor<'de>>(
        m: Map<String, Value>,
        visitor: V,
    ) -> Result<V::Value, E> {
        visitor.visit_map(Obj {
            entries: m.into_iter(),
            value: None,
        })
    }

    impl<'de> de::Deserializer<'de> for Strict {
        type Error = E;

        fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, E> {
            match self.0 {
                Value::Array(a) => visit_array(a, visitor),
                Value::Object(m) => visit_object(m, visitor),
                other => de::Deserializer::deserialize_any(other, visitor),
            }
        }

        fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, E> {
            match self.0 {
                Value::Null => visitor.visit_none(),
                v => visitor.visit_some(Strict(v)),
            }
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            _fields: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value, E> {
            match self.0 {
                Value::Object(m) => visit_object(m, visitor),
                other => Err(de::Error::invalid_type(unexpected(&other), &visitor)),
            }
        }

        fn deserialize_newtype_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            visitor: V,
        ) -> Result<V::Value, E> {
            visitor.visit_newtype_struct(self)
        }

        fn deserialize_enum<V: Visitor<'de>>(
            self,
            name: &'static str,
            variants: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value, E> {
            // The API's enums are plain strings (the tagged `PlatformEvent`
            // is read through `deserialize_any`).
            de::Deserializer::deserialize_enum(self.0, name, variants, visitor)
        }

        integers!(
            deserialize_u8,
            deserialize_u16,
            deserialize_u32,
            deserialize_u64,
            deserialize_i8,
            deserialize_i16,
            deserialize_i32,
            deserialize_i64
        );

        fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, E> {
            visitor.visit_unit()
        }

        /// A name is a string: serde would also take a variant's number
        /// (`"type": 0` for the first event type).
        fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, E> {
            match self.0 {
                Value::String(s) => visitor.visit_string(s),
                other => Err(de::Error::invalid_type(unexpected(&other), &visitor)),
            }
        }

        forward_to_deserialize_any! {
            bool i128 u128 f32 f64 char str string bytes byte_buf unit unit_struct
            seq tuple tuple_struct map
        }
    }

    /// For a field that serde reads from its buffered form (inside the
    /// internally tagged `PlatformEvent`): the value must be an object, and
    /// is then read strictly.
    ///
    /// # Errors
    /// Anything but an object, or what reading it strictly refuses.
    pub fn object<'de, D, T>(d: D) -> Result<T, D::Error>
    where
        D: de::Deserializer<'de>,
        T: DeserializeOwned,
    {
        let v = <Value as serde::Deserialize>::deserialize(d)?;
        if !v.is_object() {
            return Err(de::Error::invalid_type(unexpected(&v), &"an object"));
        }
        T::deserialize(Strict(v)).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::strict::Strict;
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    fn read<T: for<'de> Deserialize<'de>>(v: serde_json::Value) -> Result<T, String> {
        T::deserialize(Strict(v)).map_err(|e| e.to_string())
    }

    #[test]
    fn structs_only_from_objects_and_integers_from_integral_numbers() {
        let c: SyncConfig =
            read(json!({"syncInterval": 60.0, "halfLifeHours": 24})).unwrap_or_default();
        assert_eq!(c.sync_interval, 60);
        assert_eq!(c.half_life_hours, 24);
        assert!(read::<SyncConfig>(json!({"syncInterval": 60.5})).is_err());
        assert!(read::<SyncConfig>(json!({"syncInterval": -1})).is_err());
        // serde's derive would take an array as the fields in order.
        assert!(read::<ContactInput>(json!(["a@example.com"])).is_err());
        let ok: ContactInput =
            read(json!({"email": "a@example.com"})).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok.email, "a@example.com");
        assert!(read::<ContactInput>(json!({"email": "a@example.com", "extra": 1})).is_err());
    }
}
