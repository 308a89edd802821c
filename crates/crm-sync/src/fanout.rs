//! Seed 004's multi-CRM contacts: create or update a contact in every
//! configured CRM at once ([`FanOut::upsert`]), and one unified view of the
//! contacts of all of them keyed by email ([`FanOut::unified`]).
//!
//! Each [`Target`] is a connector with its own field map, written from the
//! canonical contact names (`email`, `first_name`, `lead_score`, ...; see
//! [`crm_core::mapping::canonical::contact`]) to the provider's, and the
//! field its upserts are keyed by (HubSpot's `email` as `idProperty`,
//! Marketo's `email` lookup field, Pipedrive's email search, a Salesforce
//! external id). Every target gets one outcome per input contact, in input
//! order; one CRM refusing a contact never stops the others.
//!
//! ```no_run
//! # async fn run(hubspot: &crm_hubspot::HubSpot, marketo: &crm_marketo::Marketo)
//! # -> crm_core::Result<()> {
//! use crm_core::Record;
//! use crm_sync::fanout::{FanOut, Target, UnifiedFilter};
//!
//! let crms = FanOut::new("email")
//!     .target(Target::new("hubspot", hubspot, "contacts", crm_hubspot::mapping::contact_mapping(), "email"))
//!     .target(Target::new("marketo", marketo, "leads", crm_marketo::mapping::lead_map(), "email"));
//! let john = Record::new()
//!     .with("email", "john@example.com")
//!     .with("first_name", "John")
//!     .with("last_name", "Doe");
//! let report = crms.upsert(&[john]).await?;
//! assert!(report.all_ok());
//! let filter = UnifiedFilter::from_json(&serde_json::json!({"source_system": "hubspot"}))?;
//! for contact in crms.unified(&filter).await?.contacts {
//!     println!("{} in {:?}", contact.email, contact.systems());
//! }
//! # Ok(()) }
//! ```

use std::cmp::Ordering;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use crm_core::mapping::{Flow, Mapping};
use crm_core::{
    Change, Error, ReadRequest, Record, RecordId, Result, Value, WriteBatch, WriteOutcome,
};
use futures_util::StreamExt;
use futures_util::future::join_all;

use crate::bidi::Endpoint;

/// One CRM of a [`FanOut`].
pub struct Target<'a> {
    /// The system's name in reports and the unified view (`salesforce`).
    pub name: String,
    endpoint: &'a dyn Endpoint,
    /// The object contacts live in (`Contact`, `contacts`, `leads`, `persons`).
    pub object: String,
    /// Canonical -> provider field maps (run backwards for the unified view).
    pub mapping: Mapping,
    /// The provider field upserts are keyed by.
    pub upsert_key: String,
    /// A canonical field copied into `upsert_key` when the mapping does not
    /// write it (a Salesforce external id holding the email).
    pub key_from: Option<String>,
}

impl std::fmt::Debug for Target<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("name", &self.name)
            .field("object", &self.object)
            .field("upsert_key", &self.upsert_key)
            .finish_non_exhaustive()
    }
}

impl<'a> Target<'a> {
    /// A target writing `object` of `endpoint` through `mapping`, upserting
    /// by `upsert_key`.
    pub fn new(
        name: impl Into<String>,
        endpoint: &'a dyn Endpoint,
        object: impl Into<String>,
        mapping: Mapping,
        upsert_key: impl Into<String>,
    ) -> Self {
        Target {
            name: name.into(),
            endpoint,
            object: object.into(),
            mapping,
            upsert_key: upsert_key.into(),
            key_from: None,
        }
    }

    /// Copies the canonical field `field` into the upsert key.
    #[must_use]
    pub fn key_from(mut self, field: impl Into<String>) -> Self {
        self.key_from = Some(field.into());
        self
    }
}

/// Contacts written to, and read from, several CRMs.
#[derive(Debug)]
pub struct FanOut<'a> {
    key: String,
    targets: Vec<Target<'a>>,
}

/// What each CRM did with each contact.
#[derive(Debug, Default)]
pub struct FanOutReport {
    /// Per target, in the order they were added: one outcome per input
    /// contact, in input order.
    pub targets: Vec<(String, Vec<WriteOutcome>)>,
}

impl FanOutReport {
    /// True when every CRM took every contact.
    pub fn all_ok(&self) -> bool {
        self.targets
            .iter()
            .all(|(_, o)| o.iter().all(WriteOutcome::is_ok))
    }

    /// The outcomes of one target.
    pub fn outcomes(&self, target: &str) -> Option<&[WriteOutcome]> {
        self.targets
            .iter()
            .find(|(n, _)| n == target)
            .map(|(_, o)| o.as_slice())
    }

    /// How many contacts a target created (new records).
    pub fn created(&self, target: &str) -> usize {
        self.outcomes(target).map_or(0, |o| {
            o.iter()
                .filter(|x| matches!(x, WriteOutcome::Created(_)))
                .count()
        })
    }

    /// `(target, input index, error)` of every refusal.
    pub fn failures(&self) -> Vec<(&str, usize, &Error)> {
        let mut out = Vec::new();
        for (name, outcomes) in &self.targets {
            for (i, o) in outcomes.iter().enumerate() {
                if let WriteOutcome::Rejected { error, .. } = o {
                    out.push((name.as_str(), i, error));
                }
            }
        }
        out
    }
}

/// One contact as one CRM holds it, in canonical names.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceRecord {
    /// The system (`hubspot`).
    pub system: String,
    /// The record's id there.
    pub id: Option<RecordId>,
    /// When it last changed there.
    pub updated_at: Option<DateTime<Utc>>,
    /// The canonical fields.
    pub record: Record,
}

/// A person across CRMs, keyed by email.
#[derive(Clone, Debug, PartialEq)]
pub struct UnifiedContact {
    /// The normalised email (trimmed, lower case).
    pub email: String,
    /// Field by field the newest non-blank value of any system.
    pub merged: Record,
    /// Each system's record, newest first.
    pub sources: Vec<SourceRecord>,
}

impl UnifiedContact {
    /// The systems holding the contact.
    pub fn systems(&self) -> Vec<&str> {
        self.sources.iter().map(|s| s.system.as_str()).collect()
    }
}

/// The result of [`FanOut::unified`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UnifiedView {
    /// One entry per email, ordered by email.
    pub contacts: Vec<UnifiedContact>,
    /// Records left out because their fields did not map: `(system, id,
    /// error)`. The rest of the view is still complete.
    pub skipped: Vec<(String, Option<RecordId>, String)>,
}

/// A comparison of a [`UnifiedFilter`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Equal (text compares case-insensitively).
    Eq,
    /// Not equal.
    Ne,
    /// Greater than.
    Gt,
    /// Greater than or equal.
    Gte,
    /// Less than.
    Lt,
    /// Less than or equal.
    Lte,
    /// Text contains (case-insensitive).
    Contains,
}

/// Which unified contacts to return, in seed 004's shape: `source_system`
/// plus `field` or `field__op` conditions (`lead_score__gt: 50`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UnifiedFilter {
    /// Only contacts held by this system.
    pub source_system: Option<String>,
    /// Conditions on the merged canonical fields, all of which must hold.
    pub conditions: Vec<(String, Op, Value)>,
}

impl UnifiedFilter {
    /// Everything.
    pub fn all() -> Self {
        UnifiedFilter::default()
    }

    /// Reads `{"source_system": "salesforce", "lead_score__gt": 50}`.
    ///
    /// # Errors
    /// [`crm_core::ErrorKind::InvalidInput`] naming an unknown operator or a
    /// value that is not a string, number or boolean.
    pub fn from_json(v: &serde_json::Value) -> Result<Self> {
        let Some(map) = v.as_object() else {
            return Err(Error::invalid_input("a contact filter is a JSON object"));
        };
        let mut f = UnifiedFilter::default();
        for (k, v) in map {
            if k == "source_system" {
                f.source_system = Some(
                    v.as_str()
                        .ok_or_else(|| {
                            Error::invalid_input("source_system must be a string")
                                .with_context("field", "source_system")
                        })?
                        .to_owned(),
                );
                continue;
            }
            let (field, op) = match k.rsplit_once("__") {
                Some((field, op)) => (field, Self::op(op, k)?),
                None => (k.as_str(), Op::Eq),
            };
            let value = match v {
                serde_json::Value::String(s) => Value::Text(s.clone()),
                serde_json::Value::Bool(b) => Value::Bool(*b),
                serde_json::Value::Number(n) => n
                    .as_i64()
                    .map(Value::Int)
                    .or_else(|| n.to_string().parse().ok().map(Value::Decimal))
                    .ok_or_else(|| {
                        Error::invalid_input(format!("`{k}`: {n} is not a usable number"))
                            .with_context("field", k)
                    })?,
                _ => {
                    return Err(Error::invalid_input(format!(
                        "`{k}`: filter values are strings, numbers or booleans"
                    ))
                    .with_context("field", k));
                }
            };
            f.conditions.push((field.to_owned(), op, value));
        }
        Ok(f)
    }

    fn op(op: &str, key: &str) -> Result<Op> {
        Ok(match op {
            "eq" => Op::Eq,
            "ne" => Op::Ne,
            "gt" => Op::Gt,
            "gte" => Op::Gte,
            "lt" => Op::Lt,
            "lte" => Op::Lte,
            "contains" | "icontains" => Op::Contains,
            other => {
                return Err(Error::invalid_input(format!(
                    "`{key}`: unknown operator `{other}` (eq, ne, gt, gte, lt, lte, contains)"
                ))
                .with_context("field", key));
            }
        })
    }

    fn matches(&self, c: &UnifiedContact) -> bool {
        if let Some(s) = &self.source_system
            && !c.sources.iter().any(|x| x.system.eq_ignore_ascii_case(s))
        {
            return false;
        }
        self.conditions.iter().all(|(field, op, want)| {
            let have = c.merged.get_or_null(field);
            if have.is_blank() {
                return *op == Op::Ne;
            }
            match op {
                Op::Contains => text_of(have)
                    .to_lowercase()
                    .contains(&text_of(want).to_lowercase()),
                _ => {
                    let ord = compare(have, want);
                    match op {
                        Op::Eq => ord == Some(Ordering::Equal),
                        Op::Ne => ord != Some(Ordering::Equal),
                        Op::Gt => ord == Some(Ordering::Greater),
                        Op::Gte => matches!(ord, Some(Ordering::Greater | Ordering::Equal)),
                        Op::Lt => ord == Some(Ordering::Less),
                        Op::Lte => matches!(ord, Some(Ordering::Less | Ordering::Equal)),
                        Op::Contains => false,
                    }
                }
            }
        })
    }
}

fn text_of(v: &Value) -> String {
    match v {
        Value::Text(t) => t.clone(),
        other => other.to_string(),
    }
}

/// Numbers by value (a CRM answering numbers as text included), text
/// case-insensitively, dates and times in order.
fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    let num = |v: &Value| match v {
        Value::Text(t) => crm_core::value::parse_decimal(t.trim()),
        other => other.as_decimal(),
    };
    if let (Some(x), Some(y)) = (num(a), num(b)) {
        return Some(x.cmp(&y));
    }
    match (a, b) {
        (Value::Date(x), Value::Date(y)) => Some(x.cmp(y)),
        (Value::DateTime(x), Value::DateTime(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => Some(text_of(a).to_lowercase().cmp(&text_of(b).to_lowercase())),
    }
}

fn norm_key(v: &Value) -> Option<String> {
    if v.is_blank() {
        return None;
    }
    Some(text_of(v).trim().to_lowercase())
}

impl<'a> FanOut<'a> {
    /// Contacts keyed by the canonical field `key` (normally `email`).
    pub fn new(key: impl Into<String>) -> Self {
        FanOut {
            key: key.into(),
            targets: Vec::new(),
        }
    }

    /// Adds a CRM.
    #[must_use]
    pub fn target(mut self, target: Target<'a>) -> Self {
        self.targets.push(target);
        self
    }

    /// The CRMs, in order.
    pub fn targets(&self) -> &[Target<'a>] {
        &self.targets
    }

    /// Creates or updates `contacts` (canonical names) in every CRM,
    /// concurrently. Contacts sharing a key within the call are written
    /// once, their fields merged in input order (a later non-blank value
    /// wins), and share that write's outcome. A contact without a key is
    /// rejected for every target.
    ///
    /// # Errors
    /// Never for per-record problems (those are `Rejected` outcomes). A
    /// whole call failing at one CRM turns into a `Rejected` outcome for
    /// each contact of that call, so the other CRMs still get theirs.
    pub async fn upsert(&self, contacts: &[Record]) -> Result<FanOutReport> {
        // One record per key, remembering which inputs it stands for.
        let mut slots: Vec<Record> = Vec::new();
        let mut slot_of: Vec<Option<usize>> = Vec::with_capacity(contacts.len());
        let mut by_key: BTreeMap<String, usize> = BTreeMap::new();
        for c in contacts {
            let Some(k) = norm_key(c.get_or_null(&self.key)) else {
                slot_of.push(None);
                continue;
            };
            match by_key.get(&k) {
                Some(&s) => {
                    for (f, v) in &c.fields {
                        if !v.is_blank() {
                            slots[s].set(f.clone(), v.clone());
                        }
                    }
                    slot_of.push(Some(s));
                }
                None => {
                    by_key.insert(k, slots.len());
                    slot_of.push(Some(slots.len()));
                    slots.push(c.clone());
                }
            }
        }
        let runs = self.targets.iter().map(|t| self.write_target(t, &slots));
        let results = join_all(runs).await;
        let mut report = FanOutReport::default();
        for (t, per_slot) in self.targets.iter().zip(results) {
            let outcomes = slot_of
                .iter()
                .enumerate()
                .map(|(i, s)| match s {
                    Some(s) => match &per_slot[*s] {
                        WriteOutcome::Rejected { error, .. } => WriteOutcome::Rejected {
                            index: i,
                            error: error.clone(),
                        },
                        ok => ok.clone(),
                    },
                    None => WriteOutcome::Rejected {
                        index: i,
                        error: Error::invalid_input(format!(
                            "contact #{i} has no `{}`, so it cannot be matched in {}",
                            self.key, t.name
                        ))
                        .with_context("field", &self.key),
                    },
                })
                .collect();
            report.targets.push((t.name.clone(), outcomes));
        }
        Ok(report)
    }

    /// Updates the contact whose key is `key_value` with `fields` in every
    /// CRM (seed 004's `update_contact_in_all_crms`).
    ///
    /// # Errors
    /// As [`FanOut::upsert`].
    pub async fn update(&self, key_value: &str, fields: &Record) -> Result<FanOutReport> {
        let mut r = fields.clone();
        r.set(self.key.clone(), Value::Text(key_value.to_owned()));
        self.upsert(&[r]).await
    }

    /// One outcome per slot.
    async fn write_target(&self, t: &Target<'_>, slots: &[Record]) -> Vec<WriteOutcome> {
        let mut out: Vec<Option<WriteOutcome>> = vec![None; slots.len()];
        let mut ready: Vec<(usize, Record)> = Vec::new();
        for (i, c) in slots.iter().enumerate() {
            match t.mapping.apply(c, Flow::ToCrm) {
                Ok(mut r) => {
                    r.id = None;
                    if let Some(from) = &t.key_from
                        && !r.fields.contains_key(&t.upsert_key)
                        && let Some(k) = norm_key(c.get_or_null(from))
                    {
                        r.set(t.upsert_key.clone(), Value::Text(k));
                    }
                    ready.push((i, r));
                }
                Err(e) => {
                    out[i] = Some(WriteOutcome::Rejected {
                        index: i,
                        error: Error::from(e),
                    });
                }
            }
        }
        let max = t.endpoint.max_batch(&t.object).max(1);
        for chunk in ready.chunks(max) {
            let records: Vec<Record> = chunk.iter().map(|(_, r)| r.clone()).collect();
            let res = t
                .endpoint
                .write(&t.object, WriteBatch::upsert(t.upsert_key.clone(), records))
                .await;
            match res {
                Ok(outcomes) if outcomes.len() == chunk.len() => {
                    for ((i, _), o) in chunk.iter().zip(outcomes) {
                        out[*i] = Some(o);
                    }
                }
                Ok(outcomes) => {
                    let e = Error::new(
                        crm_core::ErrorKind::Permanent,
                        format!(
                            "{} answered {} outcomes for {} contacts",
                            t.name,
                            outcomes.len(),
                            chunk.len()
                        ),
                    );
                    for (i, _) in chunk {
                        out[*i] = Some(WriteOutcome::Rejected {
                            index: *i,
                            error: e.clone(),
                        });
                    }
                }
                Err(e) => {
                    let e = e.with_context("target", &t.name);
                    for (i, _) in chunk {
                        out[*i] = Some(WriteOutcome::Rejected {
                            index: *i,
                            error: e.clone(),
                        });
                    }
                }
            }
        }
        out.into_iter()
            .enumerate()
            .map(|(i, o)| {
                o.unwrap_or_else(|| WriteOutcome::Rejected {
                    index: i,
                    error: Error::new(crm_core::ErrorKind::Permanent, "no outcome"),
                })
            })
            .collect()
    }

    /// Reads every CRM's contacts and joins them by key: one
    /// [`UnifiedContact`] per email, merged field by field (the newest
    /// non-blank value wins), filtered by `filter`, ordered by email.
    /// Contacts without an email are left out; records whose fields do not
    /// map are listed in [`UnifiedView::skipped`].
    ///
    /// # Errors
    /// A read that failed at any CRM (the view would be incomplete).
    pub async fn unified(&self, filter: &UnifiedFilter) -> Result<UnifiedView> {
        let reads = self.targets.iter().map(|t| self.read_target(t));
        let mut by_email: BTreeMap<String, Vec<SourceRecord>> = BTreeMap::new();
        let mut view = UnifiedView::default();
        for res in join_all(reads).await {
            let (records, skipped) = res?;
            view.skipped.extend(skipped);
            for s in records {
                if let Some(k) = norm_key(s.record.get_or_null(&self.key)) {
                    by_email.entry(k).or_default().push(s);
                }
            }
        }
        for (email, mut sources) in by_email {
            // Newest first; unknown times last; ties by system name.
            sources.sort_by(|a, b| {
                b.updated_at
                    .cmp(&a.updated_at)
                    .then_with(|| a.system.cmp(&b.system))
            });
            let mut merged = Record::new();
            for s in &sources {
                for (f, v) in &s.record.fields {
                    if !v.is_blank() && merged.get(f).is_none_or(Value::is_blank) {
                        merged.set(f.clone(), v.clone());
                    }
                }
            }
            merged.set(self.key.clone(), Value::Text(email.clone()));
            merged.updated_at = sources.iter().filter_map(|s| s.updated_at).max();
            let c = UnifiedContact {
                email,
                merged,
                sources,
            };
            if filter.matches(&c) {
                view.contacts.push(c);
            }
        }
        Ok(view)
    }

    #[allow(clippy::type_complexity)]
    async fn read_target(
        &self,
        t: &Target<'_>,
    ) -> Result<(Vec<SourceRecord>, Vec<(String, Option<RecordId>, String)>)> {
        let fields: Vec<String> = t
            .mapping
            .fields_read(Flow::FromCrm)
            .into_iter()
            .map(str::to_owned)
            .collect();
        let mut stream = t
            .endpoint
            .read(ReadRequest::full(t.object.clone()).fields(fields));
        let mut out = Vec::new();
        let mut skipped = Vec::new();
        while let Some(page) = stream.next().await {
            let page = page.map_err(|e| e.with_context("target", &t.name))?;
            for change in page.changes {
                let Change::Upsert(r) = change else { continue };
                let canonical = match t.mapping.apply(&r, Flow::FromCrm) {
                    Ok(c) => c,
                    Err(e) => {
                        skipped.push((t.name.clone(), r.id.clone(), e.to_string()));
                        continue;
                    }
                };
                out.push(SourceRecord {
                    system: t.name.clone(),
                    id: r.id.clone(),
                    updated_at: r.updated_at,
                    record: canonical,
                });
            }
        }
        Ok((out, skipped))
    }
}
