//! Request and response shapes of the client and simulator checked against
//! Pipedrive's OpenAPI descriptions in `shared/specs/pipedrive/`
//! (`CRM_SPECS_DIR` overrides the specs directory).
#![cfg(feature = "sim")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::PathBuf;

use crm_pipedrive::sim::{PipedriveSimConfig, PipedriveSimulator};
use crm_sim::SimServer;
use crm_sim::store::Fields;
use serde_json::{Value, json};
use serde_yaml::Value as Y;

fn spec(file: &str) -> Y {
    let dir = std::env::var("CRM_SPECS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/specs")
        });
    let text = std::fs::read_to_string(dir.join("pipedrive").join(file)).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

fn resolve<'a>(spec: &'a Y, s: &'a Y) -> &'a Y {
    match s.get("$ref").and_then(Y::as_str) {
        Some(r) => {
            let mut cur = spec;
            for seg in r.trim_start_matches("#/").split('/') {
                cur = &cur[seg];
            }
            resolve(spec, cur)
        }
        None => s,
    }
}

/// Every property a schema allows, through `allOf`/`anyOf`/`oneOf`.
fn props<'a>(spec: &'a Y, s: &'a Y, out: &mut Vec<(String, &'a Y)>) {
    let s = resolve(spec, s);
    if let Some(p) = s.get("properties").and_then(Y::as_mapping) {
        for (k, v) in p {
            out.push((k.as_str().unwrap().to_owned(), v));
        }
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(list) = s.get(key).and_then(Y::as_sequence) {
            for x in list {
                props(spec, x, out);
            }
        }
    }
}

fn prop<'a>(spec: &'a Y, s: &'a Y, name: &str) -> Option<&'a Y> {
    let mut all = Vec::new();
    props(spec, s, &mut all);
    all.into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| resolve(spec, v))
}

fn items<'a>(spec: &'a Y, s: &'a Y) -> &'a Y {
    let s = resolve(spec, s);
    resolve(spec, s.get("items").unwrap_or(s))
}

fn operation<'a>(spec: &'a Y, path: &str, method: &str) -> &'a Y {
    let op = &spec["paths"][path][method];
    assert!(!op.is_null(), "{method} {path} is not in the spec");
    op
}

fn response<'a>(spec: &'a Y, path: &str, method: &str) -> &'a Y {
    let op = operation(spec, path, method);
    let r = ["200", "201"]
        .iter()
        .map(|c| &op["responses"][*c])
        .find(|r| !r.is_null())
        .unwrap();
    resolve(
        spec,
        &resolve(spec, r)["content"]["application/json"]["schema"],
    )
}

/// The query parameters we send exist (and their values are in the enums).
fn check_params(spec: &Y, path: &str, params: &[(&str, Option<&str>)]) {
    let op = operation(spec, path, "get");
    let declared: Vec<&Y> = op["parameters"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| resolve(spec, p))
        .collect();
    for (name, value) in params {
        let p = declared
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("GET {path}: parameter `{name}` is not in the spec"));
        if let (Some(v), Some(e)) = (value, p["schema"].get("enum").and_then(Y::as_sequence)) {
            for part in v.split(',') {
                assert!(
                    e.iter().any(|x| x.as_str() == Some(part)),
                    "GET {path}: `{name}={part}` not in the enum"
                );
            }
        }
    }
}

/// Every key of `v` is a property of `s` (custom-field hashes aside).
fn keys_in(spec: &Y, s: &Y, v: &Value, at: &str) {
    let Value::Object(map) = v else { return };
    let mut all = Vec::new();
    props(spec, s, &mut all);
    let names: BTreeSet<&str> = all.iter().map(|(k, _)| k.as_str()).collect();
    for k in map.keys() {
        if crm_pipedrive::mapping::is_hash_key(k) {
            continue;
        }
        assert!(
            names.contains(k.as_str()),
            "{at}: `{k}` is not in the spec (has {names:?})"
        );
    }
}

#[test]
fn paths_and_query_parameters_used_exist() {
    let v1 = spec("openapi-v1.yaml");
    let v2 = spec("openapi-v2.yaml");
    for object in ["persons", "organizations", "deals", "activities"] {
        let list = format!("/{object}");
        operation(&v2, &list, "get");
        operation(&v2, &list, "post");
        let one = format!("/{object}/{{id}}");
        for m in ["get", "patch", "delete"] {
            operation(&v2, &one, m);
        }
        let mut params = vec![
            ("limit", None),
            ("cursor", None),
            ("updated_since", None),
            ("sort_by", Some("update_time")),
            ("sort_direction", Some("asc")),
            ("ids", None),
        ];
        if object == "deals" {
            params.push(("status", Some("deleted")));
        }
        check_params(&v2, &list, &params);
    }
    for (object, field) in [
        ("persons", "email"),
        ("organizations", "name"),
        ("deals", "title"),
    ] {
        check_params(
            &v2,
            &format!("/{object}/search"),
            &[
                ("term", None),
                ("fields", Some(field)),
                ("exact_match", None),
                ("limit", None),
                ("cursor", None),
            ],
        );
        check_params(&v2, "/persons/search", &[("fields", Some("custom_fields"))]);
    }
    for p in ["/pipelines", "/stages"] {
        check_params(&v2, p, &[("limit", None), ("cursor", None)]);
    }
    for p in ["/personFields", "/organizationFields", "/dealFields"] {
        check_params(&v1, p, &[("start", None), ("limit", None)]);
    }
    check_params(
        &v1,
        "/recents",
        &[
            ("since_timestamp", None),
            ("items", Some("person")),
            ("start", None),
            ("limit", None),
        ],
    );
    check_params(
        &v1,
        "/notes",
        &[
            ("start", None),
            ("limit", None),
            ("sort", None),
            ("updated_since", None),
            ("person_id", None),
        ],
    );
    check_params(
        &v1,
        "/leads",
        &[
            ("start", None),
            ("limit", None),
            ("sort", None),
            ("updated_since", None),
        ],
    );
    operation(&v1, "/notes/{id}", "put");
    operation(&v1, "/notes/{id}", "delete");
    operation(&v1, "/leads/{id}", "patch");
    operation(&v1, "/leads/{id}", "delete");
    operation(&v1, "/notes", "post");
    operation(&v1, "/leads", "post");
}

#[test]
fn request_bodies_we_send_match_the_spec() {
    let v1 = spec("openapi-v1.yaml");
    let v2 = spec("openapi-v2.yaml");
    let body = |s: &Y, path: &str, m: &str| -> Y {
        let op = operation(s, path, m);
        resolve(
            s,
            &resolve(s, &op["requestBody"])["content"]["application/json"]["schema"],
        )
        .clone()
    };
    let person = json!({"name": "Ada", "emails": [{"value": "ada@example.com", "primary": true, "label": "work"}],
        "phones": [{"value": "+1555", "primary": true, "label": "work"}], "visible_to": 3,
        "custom_fields": {"9dc80c50d78a15643bfc4ca79d76156a73a1ca0e": 27}});
    keys_in(
        &v2,
        &body(&v2, "/persons", "post"),
        &person,
        "POST /persons",
    );
    keys_in(
        &v2,
        &body(&v2, "/persons/{id}", "patch"),
        &person,
        "PATCH /persons/{id}",
    );
    let emails = prop(&v2, &body(&v2, "/persons", "post"), "emails")
        .unwrap()
        .clone();
    keys_in(&v2, items(&v2, &emails), &person["emails"][0], "emails[]");
    let deal = json!({"title": "T", "value": 12.5, "currency": "USD", "stage_id": 3, "person_id": 4, "org_id": 2,
        "probability": 50, "expected_close_date": "2025-01-01", "custom_fields": {}});
    keys_in(&v2, &body(&v2, "/deals", "post"), &deal, "POST /deals");
    keys_in(
        &v2,
        &body(&v2, "/organizations", "post"),
        &json!({"name": "Acme", "address": {"value": "Street 1"}}),
        "POST /organizations",
    );
    keys_in(
        &v2,
        &body(&v2, "/activities", "post"),
        &json!({"subject": "Call", "person_id": 1, "deal_id": 2, "done": false}),
        "POST /activities",
    );
    keys_in(
        &v1,
        &body(&v1, "/notes", "post"),
        &json!({"content": "Social profiles:", "person_id": 1}),
        "POST /notes",
    );
    keys_in(
        &v1,
        &body(&v1, "/leads", "post"),
        &json!({"title": "Lead", "person_id": 1}),
        "POST /leads",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulator_answers_match_the_spec() {
    let v1 = spec("openapi-v1.yaml");
    let v2 = spec("openapi-v2.yaml");
    let sim = SimServer::new(PipedriveSimulator::new(PipedriveSimConfig::default()))
        .start()
        .await
        .unwrap();
    let store = sim.context().store();
    let mut f = Fields::new();
    f.insert("name".into(), json!("Ada"));
    f.insert(
        "emails".into(),
        json!([{"value": "ada@example.com", "primary": true, "label": "work"}]),
    );
    let p = store.create("persons", f);
    let mut d = Fields::new();
    d.insert("title".into(), json!("Deal"));
    d.insert("stage_id".into(), json!(1));
    d.insert(
        "person_id".into(),
        json!(p.id.as_str().parse::<i64>().unwrap()),
    );
    store.create("deals", d);
    let mut n = Fields::new();
    n.insert("content".into(), json!("Hello"));
    n.insert("person_id".into(), json!(1));
    store.create("notes", n);
    let token = sim.credentials()["api_token"].as_str().unwrap().to_owned();
    let base = sim.base_url().to_owned();
    let get = |path: String| {
        let url = format!("{base}{path}");
        let token = token.clone();
        async move {
            let resp = crm_http::reqwest::Client::new()
                .get(url)
                .header("x-api-token", token)
                .send()
                .await
                .unwrap();
            assert!(resp.status().is_success(), "{path}: {}", resp.status());
            serde_json::from_slice::<Value>(&resp.bytes().await.unwrap()).unwrap()
        }
    };
    for (object, path) in [("persons", "/persons"), ("deals", "/deals")] {
        let body = get(format!("/api/v2/{object}?limit=1")).await;
        let schema = response(&v2, path, "get");
        keys_in(&v2, schema, &body, path);
        let data = prop(&v2, schema, "data").unwrap();
        keys_in(
            &v2,
            items(&v2, data),
            &body["data"][0],
            &format!("GET {path} data[]"),
        );
        // The deals description nests `additional_data` one level too deep
        // (an indentation slip in Pipedrive's YAML); persons has it in place.
        if let Some(add) = prop(&v2, schema, "additional_data") {
            keys_in(
                &v2,
                add,
                &body["additional_data"],
                &format!("GET {path} additional_data"),
            );
        } else {
            assert_eq!(path, "/deals");
        }
    }
    let body =
        get("/api/v2/persons/search?term=ada@example.com&fields=email&exact_match=true".to_owned())
            .await;
    let schema = response(&v2, "/persons/search", "get");
    let data = prop(&v2, schema, "data").unwrap();
    let item = items(&v2, prop(&v2, data, "items").unwrap());
    keys_in(&v2, item, &body["data"]["items"][0], "search items[]");
    keys_in(
        &v2,
        prop(&v2, item, "item").unwrap(),
        &body["data"]["items"][0]["item"],
        "search item",
    );
    let body = get("/api/v1/personFields?start=0&limit=500".to_owned()).await;
    let schema = response(&v1, "/personFields", "get");
    keys_in(
        &v1,
        items(&v1, prop(&v1, schema, "data").unwrap()),
        &body["data"][0],
        "personFields data[]",
    );
    let pag = prop(&v1, response(&v1, "/notes", "get"), "additional_data")
        .and_then(|a| prop(&v1, a, "pagination"))
        .expect("v1 pagination schema");
    keys_in(
        &v1,
        pag,
        &body["additional_data"]["pagination"],
        "pagination",
    );
    for path in ["/pipelines", "/stages"] {
        let body = get(format!("/api/v2{path}")).await;
        let schema = response(&v2, path, "get");
        keys_in(
            &v2,
            items(&v2, prop(&v2, schema, "data").unwrap()),
            &body["data"][0],
            path,
        );
    }
    let body =
        get("/api/v1/recents?since_timestamp=2000-01-01%2000:00:00&items=person".to_owned()).await;
    let schema = response(&v1, "/recents", "get");
    keys_in(&v1, schema, &body, "/recents");
}
