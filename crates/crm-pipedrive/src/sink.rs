//! Writing Pipedrive: create, update and delete one record a call (the
//! current API has no batch writes or bulk deletes for these objects), and
//! upserts keyed by a searchable field.
//!
//! # Upsert by email (or name, title, a custom field)
//!
//! Pipedrive has no upsert. For each distinct key in a batch the sink
//! searches once (`/api/v2/persons/search?term=..&fields=email&exact_match=true`),
//! keeps the answer for the rest of the batch, reads the current values of
//! the records found (`ids=`, 100 a call) and then writes in input order:
//! create when nothing matched (and remember the new id, so the same email
//! twice in a batch creates one person), update when a value differs,
//! nothing (`Unchanged`) otherwise. A repeated batch therefore writes
//! nothing, and a create whose answer was lost is found by the search of
//! the retry instead of being duplicated.
//!
//! # Social enrichment (seed 002)
//!
//! [`Pipedrive::enrich_person`] writes a person's social profiles as a note
//! on the person (no second note with the same text) and, when configured,
//! into person custom fields ("Social Engagement Score", "Primary Social
//! Platform", "Social Profile URL").

use std::collections::HashMap;

use async_trait::async_trait;
use crm_core::{
    Error, ErrorKind, Record, RecordId, Result, Sink, WriteBatch, WriteOp, WriteOutcome,
};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

use crate::error::PipedriveError;
use crate::mapping::{FieldCatalog, StageNames, body_from_record, differs, json_text, record_id};
use crate::wire::PdRecord;
use crate::{ObjectKind, Pipedrive};

/// Records per write call the sink takes.
pub const MAX_BATCH: usize = 100;
/// Searches in flight at once within one batch.
pub const SEARCH_CONCURRENCY: usize = 4;

/// One social profile of seed 002's enrichment.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SocialProfile {
    /// `twitter`, `instagram`, `linkedin`, ...
    pub platform: String,
    /// The handle.
    pub username: String,
    /// The profile URL.
    #[serde(default)]
    pub url: Option<String>,
    /// Followers.
    #[serde(default)]
    pub followers: Option<i64>,
    /// Engagement (interactions).
    #[serde(default)]
    pub engagement: Option<i64>,
}

impl SocialProfile {
    /// A profile on `platform` for `username`.
    pub fn new(platform: impl Into<String>, username: impl Into<String>) -> Self {
        SocialProfile {
            platform: platform.into(),
            username: username.into(),
            ..SocialProfile::default()
        }
    }

    /// With a URL, followers and engagement.
    #[must_use]
    pub fn with_stats(mut self, url: impl Into<String>, followers: i64, engagement: i64) -> Self {
        self.url = Some(url.into());
        self.followers = Some(followers);
        self.engagement = Some(engagement);
        self
    }
}

/// The note text of an enrichment: stable for the same profiles, so an
/// identical note is recognised.
pub fn enrichment_note(profiles: &[SocialProfile]) -> String {
    let mut sorted: Vec<&SocialProfile> = profiles.iter().collect();
    sorted.sort_by(|a, b| (&a.platform, &a.username).cmp(&(&b.platform, &b.username)));
    let mut out = String::from("Social profiles:");
    for p in sorted {
        out.push_str(&format!("\n- {}: @{}", p.platform, p.username));
        if let Some(u) = &p.url {
            out.push_str(&format!(" ({u})"));
        }
        if let Some(f) = p.followers {
            out.push_str(&format!(", {f} followers"));
        }
        if let Some(e) = p.engagement {
            out.push_str(&format!(", engagement {e}"));
        }
    }
    out
}

/// The search field of an upsert key: `(fields parameter, record key to compare)`.
fn search_field(
    kind: ObjectKind,
    key: &str,
    catalog: &FieldCatalog,
) -> Option<(&'static str, Option<String>)> {
    let k = key.trim().to_lowercase();
    match (kind, k.as_str()) {
        (ObjectKind::Persons, "email" | "emails") => Some(("email", None)),
        (ObjectKind::Persons, "phone" | "phones") => Some(("phone", None)),
        (ObjectKind::Persons | ObjectKind::Organizations, "name") => Some(("name", None)),
        (ObjectKind::Deals, "title") => Some(("title", None)),
        _ if kind.searchable() => catalog
            .resolve(key)
            .map(|f| ("custom_fields", Some(f.key.clone()))),
        _ => None,
    }
}

fn hit_matches(field: &str, custom_key: Option<&str>, hit: &PdRecord, term: &str) -> bool {
    let t = term.trim().to_lowercase();
    let eq = |v: &Json| json_text(v).to_lowercase() == t;
    match field {
        "email" | "phone" => hit
            .get(if field == "email" { "emails" } else { "phones" })
            .and_then(Json::as_array)
            .is_some_and(|a| {
                a.iter().any(|e| {
                    e.as_str()
                        .map(|s| s.to_lowercase() == t)
                        .unwrap_or_else(|| eq(e))
                })
            }),
        "name" | "title" => hit.get(field).or_else(|| hit.get("name")).is_some_and(eq),
        _ => custom_key
            .and_then(|k| {
                hit.get("custom_fields")
                    .and_then(|c| c.get(k))
                    .or_else(|| hit.get(k))
            })
            .is_none_or(eq),
    }
}

fn fatal(e: &Error) -> bool {
    matches!(e.kind(), ErrorKind::Auth | ErrorKind::QuotaExhausted)
}

impl Pipedrive {
    async fn body(
        &self,
        kind: ObjectKind,
        record: &Record,
        catalog: &mut std::sync::Arc<FieldCatalog>,
        stages: Option<&StageNames>,
    ) -> Result<Json> {
        match body_from_record(kind, record, catalog, stages) {
            Ok(b) => Ok(b),
            Err(PipedriveError::UnknownField { .. } | PipedriveError::UnknownOption { .. })
                if kind.fields_endpoint().is_some() =>
            {
                // A field added or renamed since the catalog was read: read it again once.
                *catalog = self.catalog(kind, true).await?;
                body_from_record(kind, record, catalog, stages).map_err(Error::from)
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn find(
        &self,
        kind: ObjectKind,
        field: &'static str,
        custom_key: Option<&str>,
        term: &str,
    ) -> Result<Option<String>> {
        let hits = self.client.search(kind, term, field, true).await?;
        let mut ids: Vec<(i64, String)> = hits
            .iter()
            .filter(|h| hit_matches(field, custom_key, &h.item, term))
            .filter_map(|h| {
                record_id(&h.item).map(|id| (id.parse::<i64>().unwrap_or(i64::MAX), id))
            })
            .collect();
        ids.sort();
        Ok(ids.into_iter().next().map(|(_, id)| id))
    }

    async fn current(&self, kind: ObjectKind, ids: &[String]) -> Result<HashMap<String, PdRecord>> {
        let mut out = HashMap::new();
        if kind.is_v2() {
            for chunk in ids.chunks(100) {
                let page = self
                    .client
                    .list(kind)
                    .limit(100)
                    .ids(chunk.to_vec())
                    .send()
                    .await?;
                for r in page.records {
                    if let Some(id) = record_id(&r) {
                        out.insert(id, r);
                    }
                }
            }
        } else {
            for id in ids {
                if let Some(r) = self.client.get(kind, id).await? {
                    out.insert(id.clone(), r);
                }
            }
        }
        Ok(out)
    }

    async fn upsert_batch(
        &self,
        kind: ObjectKind,
        key: &str,
        records: &[Record],
        catalog: &mut std::sync::Arc<FieldCatalog>,
        stages: Option<&StageNames>,
    ) -> Result<Vec<WriteOutcome>> {
        let search = search_field(kind, key, catalog);
        // Pass 1: one search per distinct key value.
        let mut terms: Vec<String> = Vec::new();
        let mut wanted: HashMap<String, ()> = HashMap::new();
        for r in records {
            if r.id.is_some() {
                continue;
            }
            if let Some(v) = r
                .get(key)
                .map(|v| json_text(&v.to_json()))
                .filter(|v| !v.is_empty())
            {
                let norm = v.to_lowercase();
                if wanted.insert(norm, ()).is_none() {
                    terms.push(v);
                }
            }
        }
        let mut found: HashMap<String, Option<String>> = HashMap::new();
        if let Some((field, custom_key)) = &search {
            let results: Vec<(String, Result<Option<String>>)> = futures_util::stream::iter(terms)
                .map(|t| async move {
                    let r = self.find(kind, field, custom_key.as_deref(), &t).await;
                    (t, r)
                })
                .buffer_unordered(SEARCH_CONCURRENCY)
                .collect()
                .await;
            for (t, r) in results {
                match r {
                    Ok(id) => {
                        found.insert(t.to_lowercase(), id);
                    }
                    Err(e) if fatal(&e) => return Err(e),
                    // Left out: records with this key are rejected below.
                    Err(_) => {}
                }
            }
        }
        let ids: Vec<String> = found.values().flatten().cloned().collect();
        let mut current = self.current(kind, &ids).await?;
        // Pass 2: write in input order.
        let mut out = Vec::with_capacity(records.len());
        for (index, r) in records.iter().enumerate() {
            let outcome = self
                .upsert_one(
                    kind,
                    key,
                    r,
                    catalog,
                    stages,
                    search.is_some(),
                    &mut found,
                    &mut current,
                )
                .await;
            match outcome {
                Ok(o) => out.push(o),
                Err(e) if fatal(&e) => return Err(e),
                Err(error) => out.push(WriteOutcome::Rejected { index, error }),
            }
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    async fn upsert_one(
        &self,
        kind: ObjectKind,
        key: &str,
        r: &Record,
        catalog: &mut std::sync::Arc<FieldCatalog>,
        stages: Option<&StageNames>,
        searchable: bool,
        found: &mut HashMap<String, Option<String>>,
        current: &mut HashMap<String, PdRecord>,
    ) -> Result<WriteOutcome> {
        let body = self.body(kind, r, catalog, stages).await?;
        let term = r
            .get(key)
            .map(|v| json_text(&v.to_json()).to_lowercase())
            .filter(|v| !v.is_empty());
        let id = match (&r.id, &term) {
            (Some(id), _) => Some(id.as_str().to_owned()),
            (None, Some(t)) if searchable => match found.get(t) {
                Some(id) => id.clone(),
                None => {
                    return Err(Error::new(
                        ErrorKind::Transient,
                        format!("the search for `{key}` failed; the record was not written"),
                    ));
                }
            },
            (None, None) => None,
            (None, Some(_)) => {
                return Err(PipedriveError::RecordInvalid(format!(
                    "{} cannot be matched by `{key}`: upsert by id, or by a searchable field",
                    kind.as_str()
                ))
                .into());
            }
        };
        match id {
            Some(id) => {
                let cur = match current.get(&id) {
                    Some(c) => Some(c.clone()),
                    None => self.client.get(kind, &id).await?,
                };
                match cur {
                    Some(c) if !differs(&body, &c) => {
                        Ok(WriteOutcome::Unchanged(RecordId::new(id)))
                    }
                    _ => {
                        let rec = self.client.update(kind, &id, &body).await?;
                        current.insert(id.clone(), rec);
                        Ok(WriteOutcome::Updated(RecordId::new(id)))
                    }
                }
            }
            None => {
                let rec = self.client.create(kind, &body).await?;
                let id = record_id(&rec).ok_or_else(|| {
                    Error::from(PipedriveError::UnexpectedAnswer(
                        "created record without id".into(),
                    ))
                })?;
                if let Some(t) = term {
                    found.insert(t, Some(id.clone()));
                }
                current.insert(id.clone(), rec);
                Ok(WriteOutcome::Created(RecordId::new(id)))
            }
        }
    }

    /// Writes seed 002's social enrichment for a person: a note on the
    /// person with [`enrichment_note`] (unless an identical note is there)
    /// and, when configured, the enrichment custom fields.
    ///
    /// Returns the note's outcome: `Created`, or `Unchanged` with the id of
    /// the existing identical note.
    ///
    /// # Errors
    /// As the HTTP client; [`ErrorKind::NotFound`] for an unknown person.
    ///
    /// # Cancel safety
    /// Safe to repeat: a repeat finds the note and writes nothing new.
    pub async fn enrich_person(
        &self,
        person_id: &str,
        profiles: &[SocialProfile],
    ) -> Result<WriteOutcome> {
        if self
            .client
            .get(ObjectKind::Persons, person_id)
            .await?
            .is_none()
        {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("no person {person_id}"),
            ));
        }
        let wanted = self.config.enrichment_fields();
        if !wanted.is_empty() && !profiles.is_empty() {
            let top = profiles.iter().max_by_key(|p| p.followers.unwrap_or(0));
            let score: i64 = profiles.iter().filter_map(|p| p.engagement).sum();
            let mut rec = Record::new();
            for name in wanted {
                match name.trim().to_lowercase().as_str() {
                    "social engagement score" => {
                        rec.set(name.clone(), score);
                    }
                    "primary social platform" => {
                        if let Some(p) = top {
                            rec.set(name.clone(), p.platform.clone());
                        }
                    }
                    "social profile url" => {
                        if let Some(u) = top.and_then(|p| p.url.clone()) {
                            rec.set(name.clone(), u);
                        }
                    }
                    _ => {}
                }
            }
            if !rec.is_empty() {
                let mut cat = self.catalog(ObjectKind::Persons, false).await?;
                let body = self.body(ObjectKind::Persons, &rec, &mut cat, None).await?;
                let cur = self.client.get(ObjectKind::Persons, person_id).await?;
                if cur.as_ref().is_none_or(|c| differs(&body, c)) {
                    self.client
                        .update(ObjectKind::Persons, person_id, &body)
                        .await?;
                }
            }
        }
        let content = enrichment_note(profiles);
        let mut page = None;
        loop {
            let notes = self
                .client
                .list(ObjectKind::Notes)
                .limit(500)
                .page(page)
                .filter("person_id", person_id)
                .send()
                .await?;
            if let Some(n) = notes.records.iter().find(|n| {
                n.get("content").and_then(Json::as_str).map(str::trim) == Some(content.trim())
            }) {
                let id = record_id(n).unwrap_or_default();
                return Ok(WriteOutcome::Unchanged(RecordId::new(id)));
            }
            match notes.next {
                Some(n) => page = Some(n),
                None => break,
            }
        }
        let person: i64 = person_id.parse().map_err(|_| {
            Error::invalid_input(format!("person id `{person_id}` is not a number"))
        })?;
        let note = self
            .client
            .create(
                ObjectKind::Notes,
                &json!({"content": content, "person_id": person}),
            )
            .await?;
        let id = record_id(&note).ok_or_else(|| {
            Error::from(PipedriveError::UnexpectedAnswer(
                "created note without id".into(),
            ))
        })?;
        Ok(WriteOutcome::Created(RecordId::new(id)))
    }
}

#[async_trait]
impl Sink for Pipedrive {
    fn max_batch(&self, _object: &str) -> usize {
        MAX_BATCH
    }

    /// Writes `batch` to `object`, one outcome per record in input order
    /// (see the [module docs](self)). `Err` only when the whole call fails:
    /// credentials refused, or the daily quota used up.
    async fn write(&self, object: &str, batch: WriteBatch) -> Result<Vec<WriteOutcome>> {
        let kind = self.object_kind(object)?;
        if batch.records.len() > MAX_BATCH {
            return Err(Error::invalid_input(format!(
                "{} records given; a write takes at most {MAX_BATCH}",
                batch.records.len()
            )));
        }
        let mut catalog = self.catalog(kind, false).await?;
        let stages = if kind == ObjectKind::Deals
            && batch.records.iter().any(|r| r.get("stage_name").is_some())
        {
            let p = self.client.pipelines().await?;
            let s = self.client.stages().await?;
            Some(StageNames::new(&p, &s))
        } else {
            None
        };
        match &batch.op {
            WriteOp::Upsert { key } => {
                self.upsert_batch(kind, key, &batch.records, &mut catalog, stages.as_ref())
                    .await
            }
            op => {
                let mut out = Vec::with_capacity(batch.records.len());
                for (index, r) in batch.records.iter().enumerate() {
                    let res: Result<WriteOutcome> = async {
                        let id = || {
                            r.id.clone().ok_or_else(|| {
                                Error::from(PipedriveError::RecordInvalid(
                                    "the record has no id".into(),
                                ))
                            })
                        };
                        match op {
                            WriteOp::Delete => {
                                let id = id()?;
                                match self.client.delete(kind, id.as_str()).await {
                                    Ok(()) => Ok(WriteOutcome::Deleted(id)),
                                    Err(e) if e.kind() == &ErrorKind::NotFound => {
                                        Ok(WriteOutcome::Deleted(id))
                                    }
                                    Err(e) => Err(e),
                                }
                            }
                            WriteOp::Update => {
                                let id = id()?;
                                let body =
                                    self.body(kind, r, &mut catalog, stages.as_ref()).await?;
                                self.client.update(kind, id.as_str(), &body).await?;
                                Ok(WriteOutcome::Updated(id))
                            }
                            _ => {
                                let body =
                                    self.body(kind, r, &mut catalog, stages.as_ref()).await?;
                                let rec = self.client.create(kind, &body).await?;
                                let id = record_id(&rec).ok_or_else(|| {
                                    Error::from(PipedriveError::UnexpectedAnswer(
                                        "created record without id".into(),
                                    ))
                                })?;
                                Ok(WriteOutcome::Created(RecordId::new(id)))
                            }
                        }
                    }
                    .await;
                    match res {
                        Ok(o) => out.push(o),
                        Err(e) if fatal(&e) => return Err(e),
                        Err(error) => out.push(WriteOutcome::Rejected { index, error }),
                    }
                }
                Ok(out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enrichment_note_is_stable() {
        let a = SocialProfile::new("twitter", "johndoe").with_stats(
            "https://twitter.com/johndoe",
            5000,
            250,
        );
        let b = SocialProfile::new("instagram", "jd");
        assert_eq!(
            enrichment_note(&[a.clone(), b.clone()]),
            enrichment_note(&[b, a])
        );
        assert!(enrichment_note(&[SocialProfile::new("twitter", "x")]).contains("twitter: @x"));
    }

    #[test]
    fn search_hits_are_checked_exactly() {
        let hit: PdRecord =
            serde_json::from_value(json!({"id": 1, "name": "Ada", "emails": ["ADA@example.com"]}))
                .unwrap();
        assert!(hit_matches("email", None, &hit, "ada@example.com"));
        assert!(!hit_matches("email", None, &hit, "ad@example.com"));
        assert!(hit_matches("name", None, &hit, "ada"));
    }
}
