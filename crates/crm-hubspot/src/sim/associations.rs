//! v4 associations in the simulator: links kept in the object store (object
//! [`LINKS_OBJECT`], one stored record per direction and type) so that they
//! are seeded, reset and inspected with the rest of the data.
//!
//! Associations are directional with one type id per direction; linking a
//! pair links both directions, each with its own default type, as HubSpot
//! does.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use crm_core::RecordId;
use crm_sim::SimContext;
use crm_sim::store::{Fields, ObjectStore};
use serde::Deserialize;
use serde_json::{Value as Json_, json};

use super::{AppState, error};
use crate::wire::{
    AssociatedRecord, AssociatedRecordPage, AssociationArchiveInput, AssociationBatchCreateResult,
    AssociationBatchReadResult, AssociationCategory, AssociationCreateInput, AssociationCreated,
    AssociationReadInput, AssociationReadResult, AssociationSpec, AssociationType, BatchError,
    BatchInput, BatchStatus, DefaultAssociationCreated, DefaultAssociationInput,
    DefaultAssociationResult, IdInput, NextPage, Paging,
};

/// The store object holding association links.
pub const LINKS_OBJECT: &str = "hs_associations";

/// The default (unlabelled) HUBSPOT_DEFINED association type id from one
/// object type to another.
///
/// The ids are those of `x-hubspot-association-type-ids` in the bundled
/// OpenAPI description (only 279, contact to company, was re-read on
/// HubSpot's current page; an account lists its own with
/// `GET /crm/v4/associations/{from}/{to}/labels`). The directions from
/// contacts, companies and deals to notes and tasks are not in that table;
/// they follow HubSpot's numbering (the reverse id minus one) and are
/// unconfirmed.
pub fn default_type_id(from: &str, to: &str) -> Option<i32> {
    Some(match (from, to) {
        ("contacts", "companies") => 279,
        ("companies", "contacts") => 280,
        ("deals", "contacts") => 3,
        ("contacts", "deals") => 4,
        ("deals", "companies") => 341,
        ("companies", "deals") => 342,
        ("notes", "contacts") => 202,
        ("contacts", "notes") => 201,
        ("notes", "companies") => 190,
        ("companies", "notes") => 189,
        ("notes", "deals") => 214,
        ("deals", "notes") => 213,
        ("tasks", "contacts") => 204,
        ("contacts", "tasks") => 203,
        ("tasks", "companies") => 192,
        ("companies", "tasks") => 191,
        ("tasks", "deals") => 216,
        ("deals", "tasks") => 215,
        _ => return None,
    })
}

/// HubSpot's object type id (`0-1` for contacts, ...).
fn object_type_id(object: &str) -> &'static str {
    match object {
        "contacts" => "0-1",
        "companies" => "0-2",
        "deals" => "0-3",
        "tasks" => "0-27",
        "notes" => "0-46",
        _ => "",
    }
}

/// One link (one direction, one type) as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Link {
    record: RecordId,
    to_id: String,
    type_id: i32,
}

fn text(f: &Fields, name: &str) -> String {
    match f.get(name) {
        Some(Json_::String(s)) => s.clone(),
        Some(Json_::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// The links from one record to records of `to`.
fn links_from(store: &ObjectStore, from: &str, from_id: &str, to: &str) -> Vec<Link> {
    store
        .find_by(LINKS_OBJECT, "from_id", &Json_::String(from_id.to_owned()))
        .into_iter()
        .filter(|r| !r.is_deleted())
        .filter(|r| text(&r.fields, "from_type") == from && text(&r.fields, "to_type") == to)
        .map(|r| Link {
            to_id: text(&r.fields, "to_id"),
            type_id: r
                .fields
                .get("type_id")
                .and_then(Json_::as_i64)
                .and_then(|n| i32::try_from(n).ok())
                .unwrap_or_default(),
            record: r.id,
        })
        .collect()
}

fn add_one(store: &ObjectStore, from: &str, from_id: &str, to: &str, to_id: &str, type_id: i32) {
    let exists = links_from(store, from, from_id, to)
        .iter()
        .any(|l| l.to_id == to_id && l.type_id == type_id);
    if exists {
        return;
    }
    let mut f = Fields::new();
    f.insert("from_type".into(), json!(from));
    f.insert("from_id".into(), json!(from_id));
    f.insert("to_type".into(), json!(to));
    f.insert("to_id".into(), json!(to_id));
    f.insert("type_id".into(), json!(type_id));
    store.create(LINKS_OBJECT, f);
}

/// Links two records with the default types of both directions; the type
/// id of the `from -> to` direction, or an error for a pair without one.
///
/// # Errors
/// The message HubSpot-style routes answer with, when the pair of object
/// types has no default association type.
pub fn link(
    store: &ObjectStore,
    from: &str,
    from_id: &str,
    to: &str,
    to_id: &str,
) -> Result<i32, String> {
    let (Some(there), Some(back)) = (default_type_id(from, to), default_type_id(to, from)) else {
        return Err(format!("no default association type from {from} to {to}"));
    };
    add_one(store, from, from_id, to, to_id, there);
    add_one(store, to, to_id, from, from_id, back);
    Ok(there)
}

/// Removes every association between two records (both directions).
pub fn unlink(store: &ObjectStore, from: &str, from_id: &str, to: &str, to_id: &str) {
    for l in links_from(store, from, from_id, to) {
        if l.to_id == to_id {
            store.purge(LINKS_OBJECT, &l.record);
        }
    }
    for l in links_from(store, to, to_id, from) {
        if l.to_id == from_id {
            store.purge(LINKS_OBJECT, &l.record);
        }
    }
}

/// Links a pair of records in a running simulator (test seeding).
///
/// # Errors
/// As [`link`].
pub fn associate(
    ctx: &SimContext,
    from: &str,
    from_id: &str,
    to: &str,
    to_id: &str,
) -> Result<(), String> {
    link(ctx.store(), from, from_id, to, to_id).map(|_| ())
}

/// The ids of the live `to` records a record is associated with, in
/// ascending numeric order.
pub fn associated_ids(ctx: &SimContext, from: &str, from_id: &str, to: &str) -> Vec<String> {
    grouped(ctx.store(), from, from_id, to)
        .into_iter()
        .map(|r| r.to_object_id.to_string())
        .collect()
}

/// Associated live records with their types, in ascending numeric id order.
fn grouped(store: &ObjectStore, from: &str, from_id: &str, to: &str) -> Vec<AssociatedRecord> {
    let mut by: BTreeMap<(u64, String), Vec<i32>> = BTreeMap::new();
    for l in links_from(store, from, from_id, to) {
        if store
            .get_live(to, &RecordId::new(l.to_id.clone()))
            .is_none()
        {
            continue;
        }
        let n = l.to_id.parse::<u64>().unwrap_or(u64::MAX);
        by.entry((n, l.to_id)).or_default().push(l.type_id);
    }
    by.into_iter()
        .map(|((_, id), mut types)| {
            types.sort_unstable();
            types.dedup();
            AssociatedRecord {
                to_object_id: crate::wire::ObjectId::new(id),
                association_types: types
                    .into_iter()
                    .map(|t| AssociationType {
                        category: AssociationCategory::HubspotDefined,
                        type_id: t,
                        label: None,
                    })
                    .collect(),
            }
        })
        .collect()
}

fn live(store: &ObjectStore, object: &str, id: &str) -> bool {
    store
        .get_live(object, &RecordId::new(id.to_owned()))
        .is_some()
}

fn not_found(ids: Vec<String>, what: &str) -> BatchError {
    BatchError {
        status: "error".into(),
        category: "OBJECT_NOT_FOUND".into(),
        message: format!("No {what} with these ids"),
        context: [("ids".to_owned(), ids)].into_iter().collect(),
        ..BatchError::default()
    }
}

fn bad(m: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", m)
}

fn known_pair(from: &str, to: &str) -> Option<Response> {
    if !AppState::known(from) || !AppState::known(to) {
        return Some(error(
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            format!("Unable to infer object type from: {from} or {to}"),
        ));
    }
    None
}

#[derive(Deserialize)]
pub(super) struct ListParams {
    after: Option<String>,
    limit: Option<usize>,
}

/// `GET /crm/v4/objects/{objectType}/{objectId}/associations/{toObjectType}`.
pub(super) async fn list(
    State(st): State<AppState>,
    Path((from, id, to)): Path<(String, String, String)>,
    Query(p): Query<ListParams>,
) -> Response {
    if let Some(r) = known_pair(&from, &to) {
        return r;
    }
    let store = st.ctx.store();
    if !live(store, &from, &id) {
        return error(
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            format!("Object not found. {id}"),
        );
    }
    let limit = p.limit.unwrap_or(500);
    if !(1..=500).contains(&limit) {
        return bad("limit must be between 1 and 500");
    }
    let Ok(offset) = p.after.as_deref().map_or(Ok(0), str::parse::<usize>) else {
        return bad("after is not a valid cursor");
    };
    let all = grouped(store, &from, &id, &to);
    Json(page(&all, offset, limit)).into_response()
}

fn page(all: &[AssociatedRecord], offset: usize, limit: usize) -> AssociatedRecordPage {
    let results: Vec<AssociatedRecord> = all.iter().skip(offset).take(limit).cloned().collect();
    let next = offset + results.len();
    AssociatedRecordPage {
        paging: (next < all.len()).then(|| Paging {
            next: Some(NextPage {
                after: next.to_string(),
                link: None,
            }),
        }),
        results,
    }
}

/// `POST /crm/v4/associations/{from}/{to}/batch/{read,create,archive}`.
pub(super) async fn batch(
    State(st): State<AppState>,
    Path((from, to, op)): Path<(String, String, String)>,
    body: String,
) -> Response {
    if let Some(r) = known_pair(&from, &to) {
        return r;
    }
    let store = st.ctx.store();
    let now = Utc::now();
    match op.as_str() {
        "read" => {
            let Ok(input) = serde_json::from_str::<BatchInput<AssociationReadInput>>(&body) else {
                return bad("Invalid input JSON");
            };
            if input.inputs.len() > 1_000 {
                return bad("Batch input limit is 1000");
            }
            let per_record = st.config.association_page_size.max(1);
            let mut results = Vec::new();
            let mut missing = Vec::new();
            for AssociationReadInput { id, after } in input.inputs {
                if !live(store, &from, &id) {
                    missing.push(id);
                    continue;
                }
                let Ok(offset) = after.as_deref().map_or(Ok(0), str::parse::<usize>) else {
                    return bad("after is not a valid cursor");
                };
                let p = page(&grouped(store, &from, &id, &to), offset, per_record);
                results.push(AssociationReadResult {
                    from: IdInput { id },
                    to: p.results,
                    paging: p.paging,
                });
            }
            let errors = if missing.is_empty() {
                Vec::new()
            } else {
                vec![not_found(missing, &from)]
            };
            let status = if errors.is_empty() {
                StatusCode::OK
            } else {
                StatusCode::MULTI_STATUS
            };
            let body = AssociationBatchReadResult {
                status: BatchStatus::Complete,
                results,
                started_at: Some(now),
                completed_at: Some(now),
                errors,
            };
            (status, Json(body)).into_response()
        }
        "create" => {
            let Ok(input) = serde_json::from_str::<BatchInput<AssociationCreateInput>>(&body)
            else {
                return bad("Invalid input JSON");
            };
            if input.inputs.len() > 100 {
                return bad("Batch input limit is 100");
            }
            let (Some(default_there), Some(back)) =
                (default_type_id(&from, &to), default_type_id(&to, &from))
            else {
                return bad(format!("no association types from {from} to {to}"));
            };
            let mut results = Vec::new();
            let mut missing = Vec::new();
            for AssociationCreateInput {
                from: f,
                to: t,
                types,
            } in input.inputs
            {
                if !live(store, &from, &f.id) || !live(store, &to, &t.id) {
                    missing.push(f.id);
                    continue;
                }
                if types.is_empty() {
                    return bad("types must not be empty");
                }
                for AssociationSpec {
                    association_type_id,
                    ..
                } in &types
                {
                    if *association_type_id != default_there {
                        return bad(format!(
                            "association type {association_type_id} is not defined from {from} to {to}"
                        ));
                    }
                    add_one(store, &from, &f.id, &to, &t.id, *association_type_id);
                    add_one(store, &to, &t.id, &from, &f.id, back);
                }
                results.push(AssociationCreated {
                    from_object_type_id: object_type_id(&from).into(),
                    from_object_id: crate::wire::ObjectId::new(f.id),
                    to_object_type_id: object_type_id(&to).into(),
                    to_object_id: crate::wire::ObjectId::new(t.id),
                    labels: Vec::new(),
                });
            }
            let errors = if missing.is_empty() {
                Vec::new()
            } else {
                vec![not_found(missing, "records")]
            };
            let status = if errors.is_empty() {
                StatusCode::CREATED
            } else {
                StatusCode::MULTI_STATUS
            };
            let body = AssociationBatchCreateResult {
                status: BatchStatus::Complete,
                results,
                started_at: Some(now),
                completed_at: Some(now),
                errors,
            };
            (status, Json(body)).into_response()
        }
        "archive" => {
            let Ok(input) = serde_json::from_str::<BatchInput<AssociationArchiveInput>>(&body)
            else {
                return bad("Invalid input JSON");
            };
            if input.inputs.len() > 100 {
                return bad("Batch input limit is 100");
            }
            for AssociationArchiveInput { from: f, to: ts } in input.inputs {
                for t in ts {
                    unlink(store, &from, &f.id, &to, &t.id);
                }
            }
            StatusCode::NO_CONTENT.into_response()
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            format!("no batch operation {op}"),
        ),
    }
}

/// `POST /crm/v4/associations/{from}/{to}/batch/associate/default`.
pub(super) async fn associate_default(
    State(st): State<AppState>,
    Path((from, to)): Path<(String, String)>,
    body: String,
) -> Response {
    if let Some(r) = known_pair(&from, &to) {
        return r;
    }
    let Ok(input) = serde_json::from_str::<BatchInput<DefaultAssociationInput>>(&body) else {
        return bad("Invalid input JSON");
    };
    if input.inputs.len() > 100 {
        return bad("Batch input limit is 100");
    }
    let store = st.ctx.store();
    let mut results = Vec::new();
    let mut missing = Vec::new();
    for DefaultAssociationInput { from: f, to: t } in input.inputs {
        if !live(store, &from, &f.id) || !live(store, &to, &t.id) {
            missing.push(f.id);
            continue;
        }
        match link(store, &from, &f.id, &to, &t.id) {
            Ok(type_id) => results.push(DefaultAssociationCreated {
                from: Some(f),
                to: Some(t),
                association_spec: Some(AssociationSpec {
                    association_category: AssociationCategory::HubspotDefined,
                    association_type_id: type_id,
                }),
            }),
            Err(m) => return bad(m),
        }
    }
    let errors = if missing.is_empty() {
        Vec::new()
    } else {
        vec![not_found(missing, "records")]
    };
    // HubSpot's reference gives 200 here (UNCONFIRMED against 201).
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::MULTI_STATUS
    };
    let now = Utc::now();
    let body = DefaultAssociationResult {
        status: BatchStatus::Complete,
        results,
        started_at: Some(now),
        completed_at: Some(now),
        errors,
    };
    (status, Json(body)).into_response()
}

/// `GET /crm/v4/associations/{from}/{to}/labels`: the default type.
pub(super) async fn labels(Path((from, to)): Path<(String, String)>) -> Response {
    if let Some(r) = known_pair(&from, &to) {
        return r;
    }
    let results: Vec<AssociationType> = default_type_id(&from, &to)
        .map(|t| AssociationType {
            category: AssociationCategory::HubspotDefined,
            type_id: t,
            label: None,
        })
        .into_iter()
        .collect();
    Json(json!({ "results": results })).into_response()
}
