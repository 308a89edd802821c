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
use crm_sheets::wire::{
    AppendValuesResponse, BatchGetValuesResponse, BatchUpdateValuesRequest,
    BatchUpdateValuesResponse, Dimension, GridProperties, Sheet, SheetProperties, Spreadsheet,
    SpreadsheetProperties, UpdateValuesResponse, ValueInputOption, ValueRange,
};
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
    // values.update (PUT), which the client offers but the connector's
    // write-back does not use.
    conn.client()
        .update_values("'Bookings'!J2", &value_range_one())
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
        "spreadsheets.values.update",
    ] {
        assert!(used.contains(m), "{m} was not exercised: {used:?}");
    }

    // Request bodies use the schemas' field names (values.update's body is
    // a ValueRange, batchUpdate's a BatchUpdateValuesRequest).
    let vr = value_range();
    let body = BatchUpdateValuesRequest {
        value_input_option: ValueInputOption::Raw,
        data: vec![vr.clone()],
        include_values_in_response: Some(false),
    };
    check_fields(&d, "ValueRange", &serde_json::to_value(&vr).unwrap(), "");
    let json = serde_json::to_value(&body).unwrap();
    check_fields(&d, "BatchUpdateValuesRequest", &json, "");
    assert_eq!(json["valueInputOption"], "RAW");
    assert_eq!(json["data"][0]["majorDimension"], "ROWS");
}

/// One cell, J2.
fn value_range_one() -> ValueRange {
    ValueRange {
        range: Some("'Bookings'!J2".into()),
        major_dimension: Some(Dimension::Rows),
        values: vec![vec![Cell::Number("1.5".into())]],
    }
}

/// A value range with every field set.
fn value_range() -> ValueRange {
    ValueRange {
        range: Some("'Bookings'!J2:K2".into()),
        major_dimension: Some(Dimension::Rows),
        values: vec![vec![Cell::Number("1.5".into()), Cell::Text("x".into())]],
    }
}

/// An update response with every field set.
fn update_response() -> UpdateValuesResponse {
    UpdateValuesResponse {
        spreadsheet_id: "s".into(),
        updated_range: Some("Bookings!J2:K2".into()),
        updated_rows: Some(1),
        updated_columns: Some(2),
        updated_cells: Some(2),
        updated_data: Some(value_range()),
    }
}

/// Checks every field of `v`, and of the objects in it, against
/// `schemas.{schema}`: the name is a property, an enum value is one of the
/// property's, and nested objects (`$ref`, arrays of `$ref`) are checked
/// against their own schemas.
fn check_fields(d: &Json, schema: &str, v: &Json, at: &str) {
    let props = &d["schemas"][schema]["properties"];
    assert!(props.is_object(), "no schema {schema} in the document");
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("{at}: {schema} is not an object: {v}"));
    assert!(
        !obj.is_empty(),
        "{at}: empty {schema} sample checks nothing"
    );
    for (k, val) in obj {
        let path = format!("{at}.{k}");
        let p = &props[k];
        assert!(
            p.is_object(),
            "{path}: field {k:?} is not in the discovery document's {schema}"
        );
        assert!(!val.is_null(), "{path}: sample field is null");
        if let Some(e) = p["enum"].as_array() {
            assert!(e.contains(val), "{path}: {val} is not one of {e:?}");
        }
        if let Some(r) = p["$ref"].as_str() {
            check_fields(d, r, val, &path);
        }
        if let Some(r) = p["items"]["$ref"].as_str() {
            let items = val.as_array().unwrap_or_else(|| panic!("{path}: no array"));
            assert!(!items.is_empty(), "{path}: empty array checks nothing");
            for (i, item) in items.iter().enumerate() {
                check_fields(d, r, item, &format!("{path}[{i}]"));
            }
        }
    }
}

/// Response types read the schemas' field names. The samples are struct
/// literals with every field set (no `..Default::default()`), so an
/// optional field is never skipped unchecked and a new field does not
/// compile until it is added here.
#[test]
fn wire_types_use_the_discovery_documents_field_names() {
    let d = discovery();
    let grid = GridProperties {
        row_count: 1001,
        column_count: 13,
        frozen_row_count: Some(1),
    };
    let sheet_props = SheetProperties {
        sheet_id: 7,
        title: "Bookings".into(),
        index: 0,
        sheet_type: Some("GRID".into()),
        hidden: Some(false),
        grid_properties: Some(grid.clone()),
    };
    let spreadsheet = Spreadsheet {
        spreadsheet_id: "s".into(),
        properties: Some(SpreadsheetProperties {
            title: "T".into(),
            locale: Some("en_US".into()),
            time_zone: Some("Etc/GMT".into()),
        }),
        sheets: vec![Sheet {
            properties: sheet_props.clone(),
        }],
    };
    let samples = [
        (
            "BatchGetValuesResponse",
            serde_json::to_value(BatchGetValuesResponse {
                spreadsheet_id: "s".into(),
                value_ranges: vec![value_range()],
            }),
        ),
        (
            "BatchUpdateValuesResponse",
            serde_json::to_value(BatchUpdateValuesResponse {
                spreadsheet_id: "s".into(),
                total_updated_rows: Some(1),
                total_updated_columns: Some(2),
                total_updated_cells: Some(2),
                total_updated_sheets: Some(1),
                responses: vec![update_response()],
            }),
        ),
        (
            "AppendValuesResponse",
            serde_json::to_value(AppendValuesResponse {
                spreadsheet_id: "s".into(),
                table_range: Some("Bookings!A1:M10".into()),
                updates: Some(update_response()),
            }),
        ),
        (
            "UpdateValuesResponse",
            serde_json::to_value(update_response()),
        ),
        ("Spreadsheet", serde_json::to_value(&spreadsheet)),
        ("SheetProperties", serde_json::to_value(&sheet_props)),
        ("GridProperties", serde_json::to_value(&grid)),
        ("ValueRange", serde_json::to_value(value_range())),
    ];
    for (schema, sample) in samples {
        check_fields(&d, schema, &sample.unwrap(), schema);
    }
    // The optional names are there (and so were checked above).
    let json = serde_json::to_value(&spreadsheet).unwrap();
    let p = &json["sheets"][0]["properties"];
    assert_eq!(p["sheetType"], "GRID");
    assert_eq!(p["gridProperties"]["rowCount"], 1001);
    assert_eq!(p["gridProperties"]["frozenRowCount"], 1);
    assert_eq!(json["properties"]["timeZone"], "Etc/GMT");
    // And they read back.
    let back: Spreadsheet = serde_json::from_value(json).unwrap();
    assert_eq!(back, spreadsheet);
}
