//! The client's request shapes (paths, query parameters, body fields)
//! checked against Google's Sheets v4 discovery document.
//!
//! The document is read from `$CRM_SPECS_DIR/sheets/sheets-v4-discovery.json`,
//! by default `../../../shared/specs` from this crate.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use common::*;
use crm_core::{Connector, Record, Sink, Value, WriteBatch};
use crm_sheets::cell::Cell;
use crm_sheets::wire::{BatchUpdateValuesRequest, Dimension, ValueInputOption, ValueRange};
use serde_json::Value as Json;

fn discovery() -> Json {
    let dir = std::env::var_os("CRM_SPECS_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/specs"),
        PathBuf::from,
    );
    let path = dir.join("sheets/sheets-v4-discovery.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Every method of `spreadsheets` and `spreadsheets.values`.
fn methods(d: &Json) -> Vec<(String, Json)> {
    let sp = &d["resources"]["spreadsheets"];
    let mut out = Vec::new();
    for (name, m) in sp["methods"].as_object().unwrap() {
        out.push((format!("spreadsheets.{name}"), m.clone()));
    }
    for (name, m) in sp["resources"]["values"]["methods"].as_object().unwrap() {
        out.push((format!("spreadsheets.values.{name}"), m.clone()));
    }
    out
}

/// Whether a request path matches a `flatPath` template such as
/// `v4/spreadsheets/{spreadsheetId}/values/{range}:append`.
fn path_matches(template: &str, path: &str) -> bool {
    let t: Vec<&str> = template.trim_start_matches('/').split('/').collect();
    let p: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    t.len() == p.len()
        && t.iter().zip(&p).all(|(t, p)| match t.split_once('}') {
            Some((_, suffix)) if t.starts_with('{') => {
                p.len() > suffix.len() && p.ends_with(suffix)
            }
            _ => t == p,
        })
}

fn schema_props(d: &Json, name: &str) -> BTreeSet<String> {
    d["schemas"][name]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

fn keys(v: &Json) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_requests_match_the_discovery_document() {
    let d = discovery();
    assert_eq!(d["rootUrl"], "https://sheets.googleapis.com/");
    let env = start(unlimited(), bookings(120, false), None).await;
    let wb = write_back().append_new_rows(true);
    let conn = connector(&env, config(&env).page_size(50).write_back(wb));
    read_all(&conn, None).await.unwrap();
    conn.describe("bookings").await.unwrap();
    let records = vec![
        Record::new()
            .with("booking_id", "BK-000001")
            .with("actual_spend", Value::Int(5)),
        Record::new()
            .with("booking_id", "BK-NEW")
            .with("actual_spend", Value::Int(6)),
    ];
    conn.write("bookings", WriteBatch::upsert("booking_id", records))
        .await
        .unwrap();

    let globals: BTreeSet<String> = d["parameters"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let methods = methods(&d);
    let mut used = BTreeSet::new();
    for req in env.handle.request_log().entries() {
        if !req.path.starts_with("/v4/") {
            continue;
        }
        let found = methods.iter().find(|(_, m)| {
            m["httpMethod"] == req.method.as_str()
                && path_matches(m["flatPath"].as_str().unwrap(), &req.path)
        });
        let Some((name, m)) = found else {
            panic!(
                "{} {} is no method of the discovery document",
                req.method, req.path
            )
        };
        used.insert(name.clone());
        let allowed: BTreeSet<String> = m["parameters"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, p)| p["location"] == "query")
            .map(|(k, _)| k.clone())
            .chain(globals.iter().cloned())
            .collect();
        for (k, v) in url::form_urlencoded::parse(req.query.as_deref().unwrap_or("").as_bytes()) {
            assert!(
                allowed.contains(k.as_ref()),
                "{name}: unknown query parameter {k}"
            );
            if let Some(values) = m["parameters"][k.as_ref()]["enum"].as_array() {
                assert!(
                    values.iter().any(|e| e == v.as_ref()),
                    "{name}: {k}={v} not in {values:?}"
                );
            }
        }
    }
    for m in [
        "spreadsheets.get",
        "spreadsheets.values.batchGet",
        "spreadsheets.values.get",
        "spreadsheets.values.batchUpdate",
        "spreadsheets.values.append",
    ] {
        assert!(used.contains(m), "{m} was not exercised: {used:?}");
    }

    // Request bodies use the schemas' field names.
    let vr = ValueRange {
        range: Some("'Bookings'!J2".into()),
        major_dimension: Some(Dimension::Rows),
        values: vec![vec![Cell::Number("1.5".into())]],
    };
    let body = BatchUpdateValuesRequest {
        value_input_option: ValueInputOption::Raw,
        data: vec![vr.clone()],
        include_values_in_response: Some(false),
    };
    let json = serde_json::to_value(&body).unwrap();
    assert!(keys(&json).is_subset(&schema_props(&d, "BatchUpdateValuesRequest")));
    assert!(keys(&json["data"][0]).is_subset(&schema_props(&d, "ValueRange")));
    let enums = d["schemas"]["BatchUpdateValuesRequest"]["properties"]["valueInputOption"]["enum"]
        .as_array()
        .unwrap()
        .clone();
    assert!(enums.contains(&json["valueInputOption"]));
    // Response types read the schemas' field names.
    for (schema, sample) in [
        (
            "BatchGetValuesResponse",
            serde_json::to_value(crm_sheets::wire::BatchGetValuesResponse::default()).unwrap(),
        ),
        (
            "BatchUpdateValuesResponse",
            serde_json::to_value(crm_sheets::wire::BatchUpdateValuesResponse::default()).unwrap(),
        ),
        (
            "AppendValuesResponse",
            serde_json::to_value(crm_sheets::wire::AppendValuesResponse::default()).unwrap(),
        ),
        (
            "UpdateValuesResponse",
            serde_json::to_value(crm_sheets::wire::UpdateValuesResponse::default()).unwrap(),
        ),
        (
            "Spreadsheet",
            serde_json::to_value(crm_sheets::wire::Spreadsheet::default()).unwrap(),
        ),
        (
            "SheetProperties",
            serde_json::to_value(crm_sheets::wire::SheetProperties::default()).unwrap(),
        ),
        (
            "GridProperties",
            serde_json::to_value(crm_sheets::wire::GridProperties::default()).unwrap(),
        ),
    ] {
        let extra: Vec<_> = keys(&sample)
            .difference(&schema_props(&d, schema))
            .cloned()
            .collect();
        assert!(
            extra.is_empty(),
            "{schema}: fields not in the discovery document: {extra:?}"
        );
    }
}
