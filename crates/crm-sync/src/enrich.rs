//! Seed 002's contact enrichment: social profiles (platform, username, URL,
//! followers, engagement), an engagement score, touchpoints and sentiment,
//! written to a contact's custom fields in Salesforce, HubSpot or
//! Pipedrive.
//!
//! | CRM | where the data goes |
//! |---|---|
//! | Salesforce `Contact` / `Lead` | `twitter_username__c`, `twitter_url__c`, `twitter_followers__c`, `instagram_*__c` (same three), `linkedin_username__c`, `linkedin_url__c`, `social_engagement_score__c`, `social_touchpoints__c` ([`salesforce_fields`]) |
//! | HubSpot `contacts` | `twitter_username`, `twitter_url`, `twitter_followers`, `instagram_*` (same three), `social_engagement_score`, `social_platform`, `social_sentiment` ([`hubspot_fields`]) |
//! | Pipedrive `persons` | the person custom fields whose keys the caller gives ([`PipedriveEnrichmentFields`], [`pipedrive_fields`]); without them, a note on the person ([`pipedrive_note`]) |
//!
//! Data the enrichment does not have (no LinkedIn profile, no follower
//! count, no sentiment) leaves the CRM's field as it is: an enrichment
//! never clears a field. Platforms the CRM has no fields for (TikTok in
//! Salesforce, LinkedIn in HubSpot) only show in the Pipedrive note.
//!
//! # Idempotence
//!
//! [`enrich`] reads the record's current values first (one record by id,
//! through the provider's client: the [`crm_core::Source`] trait only scans)
//! and writes, with one [`WriteOp::Update`], only the fields whose value
//! differs, compared with [`values_agree`] (numbers by value, so a stored
//! `5000.0` or `"5000"` equals `5000`). Enriching again with the same data
//! sends no write at all; [`EnrichReport::written_fields`] names what was
//! written.
//!
//! The Pipedrive note starts with the stable header [`NOTE_MARKER`]. Before
//! writing, the person's notes are listed: a note with the same content
//! (compared as text, ignoring HTML line breaks and spacing Pipedrive may
//! add) means nothing is written; otherwise the newest note carrying the
//! marker is updated in place, so a changed enrichment replaces the
//! previous one instead of piling up notes; a new note is created only
//! when the person has no enrichment note yet.
//!
//! # Missing custom fields
//!
//! When the CRM lacks one of the fields (the seed's "Missing custom
//! fields"), [`enrich`] fails with [`ErrorKind::SchemaMismatch`] naming the
//! missing fields (context `field`) and saying to create them. The check
//! costs nothing while the fields exist: the provider's own answer (an
//! `INVALID_FIELD` query in Salesforce, a "property does not exist" write
//! in HubSpot) triggers one describe that lists every missing field;
//! Pipedrive's field keys are checked against the connector's cached field
//! catalog.
//!
//! ```no_run
//! # async fn run(hubspot: &crm_hubspot::HubSpot) -> crm_core::Result<()> {
//! use crm_core::RecordId;
//! use crm_sync::enrich::{EnrichTarget, Enrichment, enrich};
//!
//! let enrichment = Enrichment::from_json(&serde_json::json!({
//!     "socialProfiles": [{"platform": "twitter", "username": "johndoe",
//!         "url": "https://twitter.com/johndoe", "followers": 5000, "engagement": 250}],
//!     "engagementScore": 85,
//!     "sentiment": "positive"
//! }))?;
//! let report = enrich(&EnrichTarget::HubSpot(hubspot), "contacts", &RecordId::new("101"), &enrichment).await?;
//! println!("wrote {:?}", report.written_fields);
//! # Ok(()) }
//! ```

use std::collections::BTreeSet;

use crm_core::conflict::values_agree;
use crm_core::{
    Connector, Error, ErrorKind, Record, RecordId, Result, Sink, Value, WriteBatch, WriteOp,
    WriteOutcome,
};
use crm_hubspot::HubSpot;
use crm_pipedrive::mapping::{FieldCatalog, is_hash_key, record_id};
use crm_pipedrive::{ObjectKind, Pipedrive};
use crm_salesforce::SalesforceConnector;
use crm_salesforce::soql::{Condition, Literal, Select};
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

/// A social platform: Twitter (`x` too), Instagram, LinkedIn, ... and
/// [`SocialPlatform::Other`] for any other, kept as given. The same type as
/// [`crm_core::attribution::Platform`], so enrichment and attribution agree
/// on names.
pub use crm_core::attribution::Platform as SocialPlatform;

/// The first line of every Pipedrive enrichment note: how [`enrich`] finds
/// the previous note of a person to update it in place.
pub const NOTE_MARKER: &str = "Social profiles (crm-sync enrichment)";

/// The Pipedrive custom field names of seed 002, in
/// [`PipedriveEnrichmentFields::from_catalog`] order: engagement score,
/// primary platform, profile URL.
pub const PIPEDRIVE_FIELD_NAMES: [&str; 3] = [
    "Social Engagement Score",
    "Primary Social Platform",
    "Social Profile URL",
];

const OPERATION: &str = "enrich";

/// One social profile of a contact, as seed 002's `socialProfiles` entries.
///
/// ```
/// use crm_sync::enrich::{SocialPlatform, SocialProfile};
///
/// let p: SocialProfile = serde_json::from_value(serde_json::json!({
///     "platform": "twitter", "username": "johndoe",
///     "url": "https://twitter.com/johndoe", "followers": 5000, "engagement": 250
/// })).unwrap();
/// assert_eq!(p.platform, SocialPlatform::Twitter);
/// assert_eq!(p, SocialProfile::new("twitter", "johndoe")
///     .with_url("https://twitter.com/johndoe")
///     .with_followers(5000)
///     .with_engagement(250));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct SocialProfile {
    /// The platform (`"twitter"`, `"instagram"`, `"linkedin"`, ...).
    pub platform: SocialPlatform,
    /// The handle; a leading `@` is dropped when written.
    pub username: String,
    /// The profile's URL (`http` or `https`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Followers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub followers: Option<u64>,
    /// Interactions with the contact on this platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engagement: Option<u64>,
}

impl SocialProfile {
    /// A profile of `username` on `platform`.
    pub fn new(platform: impl Into<SocialPlatform>, username: impl Into<String>) -> Self {
        SocialProfile {
            platform: platform.into(),
            username: username.into(),
            url: None,
            followers: None,
            engagement: None,
        }
    }

    /// Sets the URL.
    #[must_use]
    pub fn with_url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// Sets the follower count.
    #[must_use]
    pub fn with_followers(mut self, followers: u64) -> Self {
        self.followers = Some(followers);
        self
    }

    /// Sets the engagement.
    #[must_use]
    pub fn with_engagement(mut self, engagement: u64) -> Self {
        self.engagement = Some(engagement);
        self
    }

    /// The username as written: trimmed, without a leading `@`.
    pub fn handle(&self) -> &str {
        let u = self.username.trim();
        u.strip_prefix('@').unwrap_or(u).trim()
    }

    fn url_text(&self) -> Option<&str> {
        self.url.as_deref().map(str::trim).filter(|u| !u.is_empty())
    }
}

/// What an enrichment writes about one contact.
///
/// Deserialises from seed 002's camelCase JSON: `socialProfiles` (or
/// `profiles`), `engagementScore` (0 to 100), `touchpoints` (or
/// `socialTouchpoints`), `sentiment` and `primaryPlatform` (or `platform`,
/// so a seed `socialContext` object fits too). Other keys are ignored, so
/// the whole "Sync Contact to CRM" body can be given.
///
/// ```
/// use crm_core::Value;
/// use crm_sync::enrich::{Enrichment, SocialPlatform, SocialProfile, salesforce_fields};
///
/// let e = Enrichment::new(vec![
///     SocialProfile::new("twitter", "johndoe").with_followers(5000),
///     SocialProfile::new("instagram", "john.doe").with_followers(1200),
/// ])
/// .with_engagement_score(85);
/// e.validate().unwrap();
/// assert_eq!(e.primary(), Some(&SocialPlatform::Twitter), "most followers");
/// let fields = salesforce_fields(&e);
/// assert_eq!(fields.get("twitter_followers__c"), Some(&Value::Int(5000)));
/// assert_eq!(fields.get("social_engagement_score__c"), Some(&Value::Int(85)));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Enrichment {
    /// The social profiles, one per platform.
    #[serde(default, rename = "socialProfiles", alias = "profiles")]
    pub profiles: Vec<SocialProfile>,
    /// The engagement score, 0 to 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engagement_score: Option<u8>,
    /// Social touchpoints (interactions across platforms).
    #[serde(
        default,
        alias = "socialTouchpoints",
        alias = "social_touchpoints",
        skip_serializing_if = "Option::is_none"
    )]
    pub touchpoints: Option<u64>,
    /// The sentiment of the conversations (`positive`, `neutral`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentiment: Option<String>,
    /// The primary platform; when `None`, the platform of the profile with
    /// the most followers (see [`Enrichment::primary`]).
    #[serde(default, alias = "platform", skip_serializing_if = "Option::is_none")]
    pub primary_platform: Option<SocialPlatform>,
}

impl Enrichment {
    /// An enrichment with `profiles` and nothing else.
    pub fn new(profiles: Vec<SocialProfile>) -> Self {
        Enrichment {
            profiles,
            ..Enrichment::default()
        }
    }

    /// Reads seed 002's JSON and [validates](Self::validate) it.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] with the offending field's path in the
    /// context `field` (`socialProfiles[0].followers` for a negative
    /// count, `engagementScore` for 150, ...).
    pub fn from_json(json: &Json) -> Result<Enrichment> {
        let e: Enrichment = serde_path_to_error::deserialize(json).map_err(|err| {
            let path = err.path().to_string();
            let field = path.trim_start_matches('.').to_owned();
            Error::invalid_input(format!("enrichment: {}", err.inner()))
                .with_operation(OPERATION)
                .with_context("field", field)
        })?;
        e.validate()?;
        Ok(e)
    }

    /// Sets the engagement score (0 to 100).
    #[must_use]
    pub fn with_engagement_score(mut self, score: u8) -> Self {
        self.engagement_score = Some(score);
        self
    }

    /// Sets the touchpoints.
    #[must_use]
    pub fn with_touchpoints(mut self, touchpoints: u64) -> Self {
        self.touchpoints = Some(touchpoints);
        self
    }

    /// Sets the sentiment.
    #[must_use]
    pub fn with_sentiment(mut self, sentiment: impl Into<String>) -> Self {
        self.sentiment = Some(sentiment.into());
        self
    }

    /// Sets the primary platform.
    #[must_use]
    pub fn with_primary_platform(mut self, platform: impl Into<SocialPlatform>) -> Self {
        self.primary_platform = Some(platform.into());
        self
    }

    /// Checks the values: a username on every profile, at most one profile
    /// per platform, `http(s)` URLs, counts a CRM number can hold, a score
    /// of at most 100, no blank sentiment.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] naming the field (context `field`, as the
    /// JSON path: `socialProfiles[1].username`, `engagementScore`).
    pub fn validate(&self) -> Result<()> {
        let bad = |field: String, message: String| {
            Error::invalid_input(message)
                .with_operation(OPERATION)
                .with_context("field", field)
        };
        let mut seen = BTreeSet::new();
        for (i, p) in self.profiles.iter().enumerate() {
            let at = |name: &str| format!("socialProfiles[{i}].{name}");
            let platform = p.platform.as_str().trim().to_lowercase();
            if platform.is_empty() {
                return Err(bad(at("platform"), "the platform is empty".into()));
            }
            if !seen.insert(platform.clone()) {
                return Err(bad(
                    at("platform"),
                    format!("a second {platform} profile: give one profile per platform"),
                ));
            }
            if p.handle().is_empty() {
                return Err(bad(
                    at("username"),
                    format!("the {platform} username is empty"),
                ));
            }
            if let Some(url) = &p.url {
                let ok = reqwest::Url::parse(url.trim())
                    .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host());
                if !ok {
                    return Err(bad(at("url"), format!("{url:?} is not an http(s) URL")));
                }
            }
            for (name, n) in [("followers", p.followers), ("engagement", p.engagement)] {
                if n.is_some_and(|n| i64::try_from(n).is_err()) {
                    return Err(bad(at(name), format!("{name} is too large")));
                }
            }
        }
        if let Some(s) = self.engagement_score
            && s > 100
        {
            return Err(bad(
                "engagementScore".into(),
                format!("the engagement score is {s}; it goes from 0 to 100"),
            ));
        }
        if self.touchpoints.is_some_and(|n| i64::try_from(n).is_err()) {
            return Err(bad("touchpoints".into(), "touchpoints is too large".into()));
        }
        if self
            .sentiment
            .as_deref()
            .is_some_and(|s| s.trim().is_empty())
        {
            return Err(bad("sentiment".into(), "the sentiment is blank".into()));
        }
        if self
            .primary_platform
            .as_ref()
            .is_some_and(|p| p.as_str().trim().is_empty())
        {
            return Err(bad(
                "primaryPlatform".into(),
                "the primary platform is empty".into(),
            ));
        }
        Ok(())
    }

    /// The profile on `platform`, if any.
    pub fn profile(&self, platform: &SocialPlatform) -> Option<&SocialProfile> {
        self.profiles.iter().find(|p| &p.platform == platform)
    }

    /// The primary platform: [`Enrichment::primary_platform`] when set,
    /// else the platform of the profile with the most followers (the first
    /// of equals; no count counts as 0).
    pub fn primary(&self) -> Option<&SocialPlatform> {
        self.primary_platform.as_ref().or_else(|| {
            self.profiles
                .iter()
                .rev()
                .max_by_key(|p| p.followers.unwrap_or(0))
                .map(|p| &p.platform)
        })
    }

    /// The profile on the [primary](Self::primary) platform, if any.
    pub fn primary_profile(&self) -> Option<&SocialProfile> {
        self.primary().and_then(|p| self.profile(p))
    }
}

fn count(n: u64) -> Value {
    // Enrichment::validate keeps counts within i64.
    Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

/// Username, URL and followers of the profile on `platform` under
/// `{prefix}_username{suffix}` and so on; `followers` false leaves the count out.
fn profile_fields(
    r: &mut Record,
    e: &Enrichment,
    platform: &SocialPlatform,
    suffix: &str,
    followers: bool,
) {
    let Some(p) = e.profile(platform) else { return };
    let prefix = platform.as_str();
    r.set(format!("{prefix}_username{suffix}"), p.handle());
    if let Some(url) = p.url_text() {
        r.set(format!("{prefix}_url{suffix}"), url);
    }
    if followers && let Some(n) = p.followers {
        r.set(format!("{prefix}_followers{suffix}"), count(n));
    }
}

/// The Salesforce `Contact` / `Lead` custom fields of seed 002 for `e`, in
/// the seed's order; fields `e` has no value for are left out.
///
/// Call [`Enrichment::validate`] first: counts past `i64::MAX` are written
/// as `i64::MAX`.
///
/// ```
/// use crm_sync::enrich::{Enrichment, SocialProfile, salesforce_fields};
///
/// let e = Enrichment::new(vec![SocialProfile::new("linkedin", "@jdoe")]).with_touchpoints(12);
/// let r = salesforce_fields(&e);
/// assert_eq!(r.text("linkedin_username__c"), Some("jdoe"));
/// assert_eq!(r.fields.keys().collect::<Vec<_>>(), ["linkedin_username__c", "social_touchpoints__c"]);
/// ```
pub fn salesforce_fields(e: &Enrichment) -> Record {
    let mut r = Record::new();
    profile_fields(&mut r, e, &SocialPlatform::Twitter, "__c", true);
    profile_fields(&mut r, e, &SocialPlatform::Instagram, "__c", true);
    profile_fields(&mut r, e, &SocialPlatform::Linkedin, "__c", false);
    if let Some(s) = e.engagement_score {
        r.set("social_engagement_score__c", i64::from(s));
    }
    if let Some(n) = e.touchpoints {
        r.set("social_touchpoints__c", count(n));
    }
    r
}

/// The HubSpot contact properties of seed 002 for `e`, in the seed's
/// order; properties `e` has no value for are left out. `social_platform`
/// is the [primary platform](Enrichment::primary) (`twitter`, ...).
///
/// ```
/// use crm_sync::enrich::{Enrichment, SocialProfile, hubspot_fields};
///
/// let e = Enrichment::new(vec![SocialProfile::new("instagram", "john.doe").with_followers(1200)])
///     .with_sentiment("positive");
/// let r = hubspot_fields(&e);
/// assert_eq!(r.text("social_platform"), Some("instagram"));
/// assert_eq!(r.text("social_sentiment"), Some("positive"));
/// assert!(r.get("twitter_username").is_none());
/// ```
pub fn hubspot_fields(e: &Enrichment) -> Record {
    let mut r = Record::new();
    profile_fields(&mut r, e, &SocialPlatform::Twitter, "", true);
    profile_fields(&mut r, e, &SocialPlatform::Instagram, "", true);
    if let Some(s) = e.engagement_score {
        r.set("social_engagement_score", i64::from(s));
    }
    if let Some(p) = e.primary() {
        r.set("social_platform", p.as_str().trim());
    }
    if let Some(s) = &e.sentiment {
        r.set("social_sentiment", s.trim());
    }
    r
}

/// The keys (Pipedrive's 40-character hashes) of the person custom fields
/// that hold seed 002's enrichment: "Social Engagement Score" (number),
/// "Primary Social Platform" (text) and "Social Profile URL" (text). A
/// field without a key is not written.
///
/// ```
/// use crm_sync::enrich::PipedriveEnrichmentFields;
///
/// let fields = PipedriveEnrichmentFields::new()
///     .with_engagement_score("8c4b2e0f6a0d4e1c9f3b5a7d2e4c6b8a0f1d3e5c");
/// fields.validate().unwrap();
/// assert!(PipedriveEnrichmentFields::new().with_profile_url("Social Profile URL").validate().is_err());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PipedriveEnrichmentFields {
    /// The key of "Social Engagement Score" (a number field).
    #[serde(default)]
    pub engagement_score: Option<String>,
    /// The key of "Primary Social Platform" (a text field).
    #[serde(default)]
    pub primary_platform: Option<String>,
    /// The key of "Social Profile URL" (a text field): the URL of the
    /// primary platform's profile.
    #[serde(default)]
    pub profile_url: Option<String>,
}

impl PipedriveEnrichmentFields {
    /// No fields: the enrichment goes to a note.
    pub fn new() -> Self {
        PipedriveEnrichmentFields::default()
    }

    /// The keys of the fields named as in seed 002 in `catalog` (see
    /// [`PIPEDRIVE_FIELD_NAMES`]); a name the account lacks stays `None`.
    pub fn from_catalog(catalog: &FieldCatalog) -> Self {
        let key = |name: &str| catalog.resolve(name).map(|f| f.key.clone());
        PipedriveEnrichmentFields {
            engagement_score: key(PIPEDRIVE_FIELD_NAMES[0]),
            primary_platform: key(PIPEDRIVE_FIELD_NAMES[1]),
            profile_url: key(PIPEDRIVE_FIELD_NAMES[2]),
        }
    }

    /// Sets the key of "Social Engagement Score".
    #[must_use]
    pub fn with_engagement_score(mut self, key: impl Into<String>) -> Self {
        self.engagement_score = Some(key.into());
        self
    }

    /// Sets the key of "Primary Social Platform".
    #[must_use]
    pub fn with_primary_platform(mut self, key: impl Into<String>) -> Self {
        self.primary_platform = Some(key.into());
        self
    }

    /// Sets the key of "Social Profile URL".
    #[must_use]
    pub fn with_profile_url(mut self, key: impl Into<String>) -> Self {
        self.profile_url = Some(key.into());
        self
    }

    /// True when no key is set.
    pub fn is_empty(&self) -> bool {
        self.keys().next().is_none()
    }

    /// `(seed field name, key)` of every key set.
    pub fn keys(&self) -> impl Iterator<Item = (&'static str, &str)> {
        PIPEDRIVE_FIELD_NAMES
            .into_iter()
            .zip([
                &self.engagement_score,
                &self.primary_platform,
                &self.profile_url,
            ])
            .filter_map(|(name, key)| key.as_deref().map(|k| (name, k.trim())))
    }

    /// Checks that every key is a 40-character hex hash.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] naming the field (context `field`).
    pub fn validate(&self) -> Result<()> {
        for (name, key) in self.keys() {
            if !is_hash_key(key) {
                return Err(Error::invalid_input(format!(
                    "the key of Pipedrive field \"{name}\" is {key:?}, not a 40-character field key \
                     (GET /v1/personFields lists the keys)"
                ))
                .with_operation(OPERATION)
                .with_context("field", name));
            }
        }
        Ok(())
    }
}

/// The Pipedrive person custom field values for `e`, keyed by the keys of
/// `fields`; values `e` lacks and keys not set are left out.
///
/// ```
/// use crm_core::Value;
/// use crm_sync::enrich::{Enrichment, PipedriveEnrichmentFields, SocialProfile, pipedrive_fields};
///
/// let key = "8c4b2e0f6a0d4e1c9f3b5a7d2e4c6b8a0f1d3e5c";
/// let e = Enrichment::new(vec![SocialProfile::new("twitter", "johndoe")]).with_engagement_score(85);
/// let r = pipedrive_fields(&e, &PipedriveEnrichmentFields::new().with_engagement_score(key));
/// assert_eq!(r.get(key), Some(&Value::Int(85)));
/// ```
pub fn pipedrive_fields(e: &Enrichment, fields: &PipedriveEnrichmentFields) -> Record {
    let mut r = Record::new();
    fn key(k: &Option<String>) -> Option<&str> {
        k.as_deref().map(str::trim).filter(|k| !k.is_empty())
    }
    if let (Some(k), Some(s)) = (key(&fields.engagement_score), e.engagement_score) {
        r.set(k, i64::from(s));
    }
    if let (Some(k), Some(p)) = (key(&fields.primary_platform), e.primary()) {
        r.set(k, p.as_str().trim());
    }
    if let (Some(k), Some(url)) = (
        key(&fields.profile_url),
        e.primary_profile().and_then(SocialProfile::url_text),
    ) {
        r.set(k, url);
    }
    r
}

/// The text of the Pipedrive note of `e`: [`NOTE_MARKER`], one line per
/// profile (sorted by platform, so the same data gives the same text), then
/// the primary platform, score, touchpoints and sentiment when known.
///
/// ```
/// use crm_sync::enrich::{Enrichment, NOTE_MARKER, SocialProfile, pipedrive_note};
///
/// let e = Enrichment::new(vec![SocialProfile::new("twitter", "johndoe")
///     .with_url("https://twitter.com/johndoe").with_followers(5000).with_engagement(250)]);
/// let note = pipedrive_note(&e);
/// assert!(note.starts_with(NOTE_MARKER));
/// assert!(note.contains("- twitter: @johndoe, https://twitter.com/johndoe, 5000 followers, engagement 250"));
/// ```
pub fn pipedrive_note(e: &Enrichment) -> String {
    let mut profiles: Vec<&SocialProfile> = e.profiles.iter().collect();
    profiles.sort_by_key(|p| p.platform.as_str().trim().to_lowercase());
    let mut lines = vec![NOTE_MARKER.to_owned()];
    for p in profiles {
        let mut line = format!("- {}: @{}", p.platform.as_str().trim(), p.handle());
        if let Some(url) = p.url_text() {
            line.push_str(&format!(", {url}"));
        }
        if let Some(n) = p.followers {
            line.push_str(&format!(", {n} followers"));
        }
        if let Some(n) = p.engagement {
            line.push_str(&format!(", engagement {n}"));
        }
        lines.push(line);
    }
    if let Some(p) = e.primary() {
        lines.push(format!("Primary platform: {}", p.as_str().trim()));
    }
    if let Some(s) = e.engagement_score {
        lines.push(format!("Engagement score: {s}/100"));
    }
    if let Some(n) = e.touchpoints {
        lines.push(format!("Touchpoints: {n}"));
    }
    if let Some(s) = &e.sentiment {
        lines.push(format!("Sentiment: {}", s.trim()));
    }
    lines.join("\n")
}

/// A note's text for comparison: HTML line breaks as new lines, other tags
/// and blank lines dropped, lines trimmed, the basic entities decoded.
fn note_text(content: &str) -> String {
    let mut text = String::with_capacity(content.len());
    let mut rest = content;
    while let Some(start) = rest.find('<') {
        text.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('>') else {
            text.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let tag = rest[start + 1..start + end]
            .trim_start_matches('/')
            .trim()
            .to_lowercase();
        if ["br", "p", "div", "li"].iter().any(|t| {
            tag == *t || tag.starts_with(&format!("{t} ")) || tag.starts_with(&format!("{t}/"))
        }) {
            text.push('\n');
        }
        rest = &rest[start + end + 1..];
    }
    text.push_str(rest);
    let text = text
        .replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The CRM an enrichment is written to: its connector and, for Pipedrive,
/// where the data goes.
///
/// ```no_run
/// # fn demo(pipedrive: &crm_pipedrive::Pipedrive) {
/// use crm_sync::enrich::{EnrichTarget, PipedriveEnrichmentFields};
///
/// // Social data as a note on the person:
/// let notes = EnrichTarget::Pipedrive { connector: pipedrive, fields: None };
/// // Into the seed's person custom fields instead (keys from /v1/personFields):
/// let keys = PipedriveEnrichmentFields::new()
///     .with_engagement_score("8c4b2e0f6a0d4e1c9f3b5a7d2e4c6b8a0f1d3e5c");
/// let fields = EnrichTarget::Pipedrive { connector: pipedrive, fields: Some(&keys) };
/// # }
/// ```
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum EnrichTarget<'a> {
    /// Salesforce: the seed's `__c` fields of a `Contact` or `Lead`.
    Salesforce(&'a SalesforceConnector),
    /// HubSpot: the seed's custom properties of a contact.
    HubSpot(&'a HubSpot),
    /// Pipedrive: the person custom fields of `fields` when it sets a key,
    /// else a note on the person.
    Pipedrive {
        /// The connector.
        connector: &'a Pipedrive,
        /// The custom field keys; `None` (or no key set) writes a note.
        fields: Option<&'a PipedriveEnrichmentFields>,
    },
}

/// What happened to the Pipedrive enrichment note.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoteOutcome {
    /// No note is involved (Salesforce, HubSpot, Pipedrive custom fields).
    None,
    /// A new note was created.
    Created(RecordId),
    /// The previous enrichment note was updated in place.
    Updated(RecordId),
    /// A note with the same content was already there; nothing was written.
    Unchanged(RecordId),
}

impl NoteOutcome {
    /// True when the note was created or updated.
    pub fn is_write(&self) -> bool {
        matches!(self, NoteOutcome::Created(_) | NoteOutcome::Updated(_))
    }
}

/// What [`enrich`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EnrichReport {
    /// The fields written (their values differed), in write order; empty
    /// when the record already held the enrichment.
    pub written_fields: Vec<String>,
    /// The Pipedrive note.
    pub note: NoteOutcome,
}

impl EnrichReport {
    /// The write requests sent: one for the fields (if any differed) and
    /// one for the note (if created or updated).
    pub fn write_requests(&self) -> usize {
        usize::from(!self.written_fields.is_empty()) + usize::from(self.note.is_write())
    }

    /// True when nothing was written.
    pub fn is_unchanged(&self) -> bool {
        self.write_requests() == 0
    }
}

/// Writes `enrichment` to record `id` of `object` in `target`, writing only
/// what differs from the record's current values (see the
/// [module docs](self)).
///
/// `object` is `Contact` or `Lead` in Salesforce, `contacts` in HubSpot,
/// `persons` in Pipedrive.
///
/// ```no_run
/// # async fn run(sf: &crm_salesforce::SalesforceConnector) -> crm_core::Result<()> {
/// use crm_core::RecordId;
/// use crm_sync::enrich::{EnrichTarget, Enrichment, SocialProfile, enrich};
///
/// let e = Enrichment::new(vec![
///     SocialProfile::new("twitter", "johndoe")
///         .with_url("https://twitter.com/johndoe")
///         .with_followers(5000)
///         .with_engagement(250),
/// ]);
/// let target = EnrichTarget::Salesforce(sf);
/// let id = RecordId::new("003000000000001AAA");
/// let first = enrich(&target, "Contact", &id, &e).await?;
/// assert!(first.written_fields.contains(&"twitter_followers__c".to_owned()));
/// let again = enrich(&target, "Contact", &id, &e).await?;
/// assert!(again.is_unchanged());
/// # Ok(()) }
/// ```
///
/// # Errors
/// - [`ErrorKind::InvalidInput`] for an enrichment that does not
///   [validate](Enrichment::validate), bad Pipedrive field keys, or a
///   Pipedrive object other than persons.
/// - [`ErrorKind::NotFound`] when the record does not exist.
/// - [`ErrorKind::SchemaMismatch`] when the CRM lacks a custom field; the
///   context `field` names the missing fields.
/// - The provider's error when the write is refused, or as its client.
///
/// # Cancel safety
/// Dropping the future may leave the fields written but not the note (or
/// part of neither). Enriching again converges: what already holds the
/// values is not written, and the note is found by its marker.
pub async fn enrich(
    target: &EnrichTarget<'_>,
    object: &str,
    id: &RecordId,
    enrichment: &Enrichment,
) -> Result<EnrichReport> {
    enrichment.validate()?;
    if id.as_str().trim().is_empty() {
        return Err(Error::invalid_input("the record id is empty")
            .with_operation(OPERATION)
            .with_context("field", "id"));
    }
    let report = match *target {
        EnrichTarget::Salesforce(sf) => EnrichReport {
            written_fields: salesforce(sf, object, id, salesforce_fields(enrichment)).await?,
            note: NoteOutcome::None,
        },
        EnrichTarget::HubSpot(hs) => EnrichReport {
            written_fields: hubspot(hs, object, id, hubspot_fields(enrichment)).await?,
            note: NoteOutcome::None,
        },
        EnrichTarget::Pipedrive { connector, fields } => {
            pipedrive_person(connector, object)?;
            match fields.filter(|f| !f.is_empty()) {
                Some(fields) => EnrichReport {
                    written_fields: pipedrive_custom(connector, id, fields, enrichment).await?,
                    note: NoteOutcome::None,
                },
                None => EnrichReport {
                    written_fields: Vec::new(),
                    note: pipedrive_note_write(connector, id, &pipedrive_note(enrichment)).await?,
                },
            }
        }
    };
    tracing::debug!(
        object,
        id = %id,
        written = ?report.written_fields,
        note = ?report.note,
        "enrichment written"
    );
    Ok(report)
}

/// The fields of `wanted` whose current value (by `current`) differs.
fn differing(wanted: &Record, current: impl Fn(&str) -> Value) -> Record {
    let mut out = Record::new();
    for (name, value) in &wanted.fields {
        if !values_agree(&current(name), value) {
            out.set(name.clone(), value.clone());
        }
    }
    out
}

/// Writes `changes` to record `id` with one update and answers the fields
/// written; `Err` carries the rejection (or the failure of the whole call).
async fn update(
    sink: &dyn Sink,
    object: &str,
    id: &RecordId,
    changes: Record,
) -> Result<Vec<String>> {
    if changes.fields.is_empty() {
        return Ok(Vec::new());
    }
    let names: Vec<String> = changes.fields.keys().cloned().collect();
    let mut record = changes;
    record.id = Some(id.clone());
    let outcomes = sink
        .write(object, WriteBatch::new(WriteOp::Update, vec![record]))
        .await?;
    match outcomes.into_iter().next() {
        Some(WriteOutcome::Updated(_) | WriteOutcome::Created(_)) => Ok(names),
        // The sink found the values already there (written meanwhile): nothing sent.
        Some(WriteOutcome::Unchanged(_)) => Ok(Vec::new()),
        Some(WriteOutcome::Rejected { error, .. }) => Err(error),
        Some(WriteOutcome::Deleted(_)) | None => Err(Error::new(
            ErrorKind::Permanent,
            "the CRM answered no outcome for the update",
        )
        .with_operation(OPERATION)),
    }
}

/// The fields of `names` that `object`'s describe lacks.
async fn missing_fields(
    connector: &dyn Connector,
    object: &str,
    names: &[String],
) -> Result<Vec<String>> {
    let schema = connector.describe(object).await?;
    Ok(names
        .iter()
        .filter(|n| !schema.fields.iter().any(|f| f.name.eq_ignore_ascii_case(n)))
        .cloned()
        .collect())
}

fn missing_error(crm: &str, object: &str, what: &str, missing: &[String]) -> Error {
    let list = missing.join(", ");
    let (noun, them) = if missing.len() == 1 {
        (what.to_owned(), "it")
    } else {
        (format!("{what}s"), "them")
    };
    Error::new(
        ErrorKind::SchemaMismatch,
        format!(
            "{crm} {object} has no custom {noun} {list}: create {them} in {crm} \
             (seed 002, \"Custom Field Mapping\") and enrich again"
        ),
    )
    .with_operation(OPERATION)
    .with_context("field", missing.join(","))
    .with_context("object", object)
}

/// When `err` may come from missing fields, the missing-field error if the
/// describe confirms some; else `err`.
async fn explain(
    err: Error,
    connector: &dyn Connector,
    crm: &str,
    object: &str,
    what: &str,
    names: &[String],
) -> Error {
    match missing_fields(connector, object, names).await {
        Ok(missing) if !missing.is_empty() => missing_error(crm, object, what, &missing),
        _ => err,
    }
}

async fn salesforce(
    sf: &SalesforceConnector,
    object: &str,
    id: &RecordId,
    wanted: Record,
) -> Result<Vec<String>> {
    if wanted.fields.is_empty() {
        return Ok(Vec::new());
    }
    let names: Vec<String> = wanted.fields.keys().cloned().collect();
    let soql = Select::new(object)?
        .fields(std::iter::once("Id").chain(names.iter().map(String::as_str)))?
        .filter(Condition::eq("Id", Literal::text(id.as_str()))?)
        .limit(1)
        .to_soql();
    let answer = match sf.client().query(&soql, false).await {
        Ok(a) => a,
        Err(e) if e.kind() == &ErrorKind::SchemaMismatch => {
            return Err(explain(e, sf, "Salesforce", object, "field", &names).await);
        }
        Err(e) => return Err(e),
    };
    let Some(current) = answer.records.into_iter().next() else {
        return Err(not_found("Salesforce", object, id));
    };
    let changes = differing(&wanted, |name| {
        current
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map_or(Value::Null, |(_, v)| Value::from_json(v.clone()))
    });
    match update(sf, object, id, changes).await {
        Err(e) if e.kind() == &ErrorKind::SchemaMismatch => {
            Err(explain(e, sf, "Salesforce", object, "field", &names).await)
        }
        other => other,
    }
}

async fn hubspot(hs: &HubSpot, object: &str, id: &RecordId, wanted: Record) -> Result<Vec<String>> {
    if wanted.fields.is_empty() {
        return Ok(Vec::new());
    }
    let object_type = hs.object_type(object)?;
    let names: Vec<String> = wanted.fields.keys().cloned().collect();
    let current = hs
        .client()
        .objects(&object_type)
        .get(id.as_str(), &names)
        .await
        .map_err(|e| e.with_context("id", id))?;
    let changes = differing(&wanted, |name| {
        match current.properties.get(name).cloned().flatten() {
            Some(text) => Value::Text(text),
            None => Value::Null,
        }
    });
    match update(hs, object, id, changes).await {
        // HubSpot answers an unknown property as a validation error of the record.
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::InvalidInput | ErrorKind::SchemaMismatch
            ) =>
        {
            Err(explain(e, hs, "HubSpot", &object_type, "property", &names).await)
        }
        other => other,
    }
}

fn not_found(crm: &str, object: &str, id: &RecordId) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!("{crm} {object} {id} does not exist"),
    )
    .with_operation(OPERATION)
    .with_context("id", id)
}

fn pipedrive_person(pd: &Pipedrive, object: &str) -> Result<()> {
    if pd.object_kind(object)? == ObjectKind::Persons {
        Ok(())
    } else {
        Err(
            Error::invalid_input(format!("Pipedrive enrichment writes persons, not {object}"))
                .with_operation(OPERATION)
                .with_context("object", object),
        )
    }
}

async fn pipedrive_custom(
    pd: &Pipedrive,
    id: &RecordId,
    fields: &PipedriveEnrichmentFields,
    enrichment: &Enrichment,
) -> Result<Vec<String>> {
    fields.validate()?;
    let wanted = pipedrive_fields(enrichment, fields);
    if wanted.fields.is_empty() {
        return Ok(Vec::new());
    }
    // Every configured key must exist; the catalog is cached by the connector.
    let unknown = |cat: &FieldCatalog| -> Vec<(&'static str, String)> {
        fields
            .keys()
            .filter(|(_, k)| cat.by_key(k).is_none())
            .map(|(n, k)| (n, k.to_owned()))
            .collect()
    };
    let mut catalog = pd.catalog(ObjectKind::Persons, false).await?;
    if !unknown(&catalog).is_empty() {
        catalog = pd.catalog(ObjectKind::Persons, true).await?;
    }
    let missing = unknown(&catalog);
    if !missing.is_empty() {
        let named: Vec<String> = missing
            .iter()
            .map(|(n, k)| format!("\"{n}\" (key {k})"))
            .collect();
        let keys: Vec<String> = missing.into_iter().map(|(_, k)| k).collect();
        return Err(missing_error("Pipedrive", "persons", "field", &named)
            .with_context("keys", keys.join(",")));
    }
    let Some(current) = pd.client().get(ObjectKind::Persons, id.as_str()).await? else {
        return Err(not_found("Pipedrive", "persons", id));
    };
    let changes = differing(&wanted, |key| {
        current
            .get("custom_fields")
            .and_then(|c| c.get(key))
            .or_else(|| current.get(key))
            .cloned()
            .map_or(Value::Null, Value::from_json)
    });
    update(pd, ObjectKind::Persons.as_str(), id, changes).await
}

async fn pipedrive_note_write(pd: &Pipedrive, id: &RecordId, content: &str) -> Result<NoteOutcome> {
    let person: i64 = id.as_str().trim().parse().map_err(|_| {
        Error::invalid_input(format!("Pipedrive person id `{id}` is not a number"))
            .with_operation(OPERATION)
            .with_context("field", "id")
    })?;
    if pd
        .client()
        .get(ObjectKind::Persons, id.as_str())
        .await?
        .is_none()
    {
        return Err(not_found("Pipedrive", "persons", id));
    }
    let wanted = note_text(content);
    // The newest enrichment note (highest id), to update in place.
    let mut previous: Option<(i64, String)> = None;
    let mut page = None;
    loop {
        let notes = pd
            .client()
            .list(ObjectKind::Notes)
            .limit(500)
            .page(page)
            .filter("person_id", person.to_string())
            .send()
            .await?;
        for n in &notes.records {
            let Some(note_id) = record_id(n) else {
                continue;
            };
            let text = note_text(n.get("content").and_then(Json::as_str).unwrap_or_default());
            if text == wanted {
                return Ok(NoteOutcome::Unchanged(RecordId::new(note_id)));
            }
            if text.lines().next() == Some(NOTE_MARKER) {
                let order = note_id.parse::<i64>().unwrap_or(i64::MIN);
                if previous.as_ref().is_none_or(|(o, _)| order > *o) {
                    previous = Some((order, note_id));
                }
            }
        }
        match notes.next {
            Some(next) => page = Some(next),
            None => break,
        }
    }
    let client = pd.client();
    match previous {
        Some((_, note_id)) => {
            client
                .update(ObjectKind::Notes, &note_id, &json!({ "content": content }))
                .await?;
            Ok(NoteOutcome::Updated(RecordId::new(note_id)))
        }
        None => {
            let note = client
                .create(
                    ObjectKind::Notes,
                    &json!({ "content": content, "person_id": person }),
                )
                .await?;
            let note_id = record_id(&note).ok_or_else(|| {
                Error::new(
                    ErrorKind::Permanent,
                    "Pipedrive created a note without an id",
                )
                .with_operation(OPERATION)
            })?;
            Ok(NoteOutcome::Created(RecordId::new(note_id)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn note_text_ignores_html_breaks_and_spacing() {
        let plain = "Social profiles (crm-sync enrichment)\n- twitter: @a, https://x.test/?a=1&b=2";
        let html = "<p>Social profiles (crm-sync enrichment)</p><p> - twitter: @a, https://x.test/?a=1&amp;b=2 </p>";
        assert_eq!(note_text(plain), note_text(html));
        assert_eq!(note_text("a<br/>b<br />c<BR>d"), "a\nb\nc\nd");
        assert_eq!(note_text("x < y"), "x < y");
    }

    #[test]
    fn primary_is_most_followers_first_of_equals() {
        let e = Enrichment::new(vec![
            SocialProfile::new("twitter", "a").with_followers(10),
            SocialProfile::new("instagram", "b").with_followers(10),
        ]);
        assert_eq!(e.primary(), Some(&SocialPlatform::Twitter));
        let e = e.with_primary_platform("instagram");
        assert_eq!(e.primary(), Some(&SocialPlatform::Instagram));
        assert_eq!(Enrichment::default().primary(), None);
    }
}
