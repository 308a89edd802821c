//! Request and response shapes of the client and simulator checked against
//! the OpenAPI description in `shared/specs/hubspot/crm-v3.openapi.yaml`
//! (`CRM_SPECS_DIR` overrides the specs directory).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use crm_hubspot::wire::*;
use serde_json::{Value, json};

fn spec() -> serde_yaml::Value {
    let dir = std::env::var("CRM_SPECS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/specs")
        });
    let text = std::fs::read_to_string(dir.join("hubspot/crm-v3.openapi.yaml")).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

fn schema<'a>(spec: &'a serde_yaml::Value, name: &str) -> &'a serde_yaml::Value {
    &spec["components"]["schemas"][name]
}

fn resolve<'a>(spec: &'a serde_yaml::Value, s: &'a serde_yaml::Value) -> &'a serde_yaml::Value {
    if let Some(r) = s.get("$ref").and_then(|r| r.as_str()) {
        return schema(spec, r.trim_start_matches("#/components/schemas/"));
    }
    // `allOf` with one member (used to describe a reference): that member.
    match s.get("allOf").and_then(|a| a.as_sequence()) {
        Some(all) if all.len() == 1 => resolve(spec, &all[0]),
        _ => s,
    }
}

/// Every key we send or read is a property of the schema, every required
/// property is present, and nested objects and arrays are checked too.
fn conforms(spec: &serde_yaml::Value, s: &serde_yaml::Value, v: &Value, at: &str) {
    let s = resolve(spec, s);
    if let Some(one_of) = s.get("oneOf").and_then(|o| o.as_sequence()) {
        // Accept when any branch's type matches loosely.
        assert!(!one_of.is_empty(), "{at}: empty oneOf");
        return;
    }
    match v {
        Value::Object(map) => {
            let props = s.get("properties");
            if let Some(req) = s.get("required").and_then(|r| r.as_sequence()) {
                for r in req {
                    let r = r.as_str().unwrap();
                    assert!(map.contains_key(r), "{at}: required `{r}` missing");
                }
            }
            for (k, child) in map {
                let sub = props.and_then(|p| p.get(k.as_str()));
                match sub {
                    Some(sub) => conforms(spec, sub, child, &format!("{at}.{k}")),
                    None => assert!(
                        s.get("additionalProperties").is_some(),
                        "{at}: `{k}` is not in the spec"
                    ),
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = s.get("items") {
                for (i, x) in items.iter().enumerate() {
                    conforms(spec, item, x, &format!("{at}[{i}]"));
                }
            }
        }
        Value::String(text) => {
            if let Some(e) = s.get("enum").and_then(|e| e.as_sequence()) {
                assert!(
                    e.iter().any(|x| x.as_str() == Some(text)),
                    "{at}: `{text}` not in enum"
                );
            }
        }
        _ => {}
    }
}

fn check<T: serde::Serialize + serde::de::DeserializeOwned>(name: &str, sample: Value) {
    let spec = spec();
    // What we would read parses, and what we send conforms.
    let parsed: T = serde_json::from_value(sample.clone()).unwrap();
    let sent = serde_json::to_value(&parsed).unwrap();
    conforms(&spec, schema(&spec, name), &sent, name);
    conforms(&spec, schema(&spec, name), &sample, name);
}

#[test]
fn records_pages_and_batches_match_the_spec() {
    let rec = json!({"id": "512", "properties": {"email": "a@example.com", "firstname": null},
        "createdAt": "2024-01-15T10:30:00.000Z", "updatedAt": "2024-01-16T10:30:00.000Z",
        "archived": false});
    check::<HsObject>("Record", rec.clone());
    check::<ListPage>(
        "RecordPage",
        json!({"results": [rec.clone()], "paging": {"next": {"after": "513", "link": "?after=513"}}}),
    );
    check::<SearchResult>(
        "SearchResult",
        json!({"total": 1, "results": [rec.clone()]}),
    );
    check::<BatchResponse>(
        "BatchResult",
        json!({"status": "COMPLETE", "results": [rec],
        "startedAt": "2024-01-15T10:30:00Z", "completedAt": "2024-01-15T10:30:01Z",
        "numErrors": 1, "errors": [{"status": "error", "category": "VALIDATION_ERROR",
        "message": "Email address x is invalid", "context": {"ids": ["x"]}}]}),
    );
    check::<BatchReadInput>(
        "BatchReadInput",
        json!({"inputs": [{"id": "a@example.com"}],
        "properties": ["email"], "propertiesWithHistory": [], "idProperty": "email"}),
    );
    check::<BatchInput<UpsertInput>>(
        "BatchUpsertInput",
        json!({"inputs": [{"id": "a@example.com",
        "idProperty": "email", "properties": {"firstname": "Ada"}, "objectWriteTraceId": "0"}]}),
    );
    check::<BatchInput<UpdateInput>>(
        "BatchUpdateInput",
        json!({"inputs": [{"id": "1",
        "properties": {"firstname": "Ada"}, "objectWriteTraceId": "0"}]}),
    );
    check::<BatchInput<CreateInput>>(
        "BatchCreateInput",
        json!({"inputs": [{
        "properties": {"firstname": "Ada"}, "objectWriteTraceId": "0"}]}),
    );
    check::<BatchInput<IdInput>>("BatchIdsInput", json!({"inputs": [{"id": "1"}]}));
}

#[test]
fn search_errors_properties_tokens_and_events_match_the_spec() {
    check::<SearchRequest>(
        "SearchRequest",
        json!({
        "filterGroups": [{"filters": [
            {"propertyName": "lastmodifieddate", "operator": "GTE", "value": "1700000000000"},
            {"propertyName": "hs_object_id", "operator": "IN", "values": ["1", "2"]}]}],
        "sorts": [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}],
        "properties": ["email"], "limit": 200}),
    );
    check::<RateLimitBody>(
        "RateLimitError",
        json!({"status": "error",
        "message": "You have reached your daily limit.", "errorType": "RATE_LIMIT",
        "correlationId": "c", "policyName": "DAILY"}),
    );
    check::<ErrorBody>(
        "Error",
        json!({"status": "error", "message": "m",
        "category": "MISSING_SCOPES", "correlationId": "c"}),
    );
    check::<Property>(
        "Property",
        json!({"name": "email", "label": "Email", "type": "string",
        "fieldType": "text", "groupName": "contactinformation", "options": [],
        "hasUniqueValue": true, "hubspotDefined": true}),
    );
    check::<TokenResponse>(
        "TokenResponse",
        json!({"access_token": "a", "refresh_token": "r",
        "expires_in": 1800, "token_type": "bearer"}),
    );
    check::<WebhookEvent>(
        "WebhookEvent",
        json!({"eventId": 1, "subscriptionId": 12345,
        "portalId": 62515, "appId": 54321, "occurredAt": 1564113600000i64,
        "subscriptionType": "contact.propertyChange", "attemptNumber": 0, "objectId": 123,
        "propertyName": "lifecyclestage", "propertyValue": "customer", "changeSource": "CRM"}),
    );
}

#[test]
fn paths_used_exist_in_the_spec() {
    let spec = spec();
    let paths = spec["paths"].as_mapping().unwrap();
    for p in [
        "/crm/v3/objects/{objectType}",
        "/crm/v3/objects/{objectType}/{objectId}",
        "/crm/v3/objects/{objectType}/batch/read",
        "/crm/v3/objects/{objectType}/batch/create",
        "/crm/v3/objects/{objectType}/batch/update",
        "/crm/v3/objects/{objectType}/batch/upsert",
        "/crm/v3/objects/{objectType}/batch/archive",
        "/crm/v3/objects/{objectType}/search",
        "/crm/v3/properties/{objectType}",
        "/crm/v4/associations/{fromObjectType}/{toObjectType}/batch/read",
        "/crm/v4/associations/{fromObjectType}/{toObjectType}/batch/create",
        "/oauth/v1/token",
    ] {
        assert!(paths.contains_key(p), "{p} is not in the spec");
    }
}

/// The request body schema of `POST path`.
fn request_schema<'a>(spec: &'a serde_yaml::Value, path: &str) -> &'a serde_yaml::Value {
    &spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
}

#[test]
fn v4_association_shapes_match_the_spec() {
    let spec = spec();
    check::<BatchInput<AssociationReadInput>>(
        "AssociationBatchReadInput",
        json!({"inputs": [{"id": "1"}, {"id": "2", "after": "500"}]}),
    );
    check::<AssociationBatchReadResult>(
        "AssociationBatchReadResult",
        json!({"status": "COMPLETE", "results": [{"from": {"id": "1"},
        "to": [{"toObjectId": 7, "associationTypes": [{"category": "HUBSPOT_DEFINED",
        "typeId": 279, "label": null}]}],
        "paging": {"next": {"after": "2"}}}],
        "startedAt": "2024-01-15T10:30:00Z", "completedAt": "2024-01-15T10:30:01Z"}),
    );
    check::<AssociatedRecordPage>(
        "AssociatedRecordPage",
        json!({"results": [{"toObjectId": "7", "associationTypes": [{"category": "HUBSPOT_DEFINED",
        "typeId": 279, "label": null}]}]}),
    );
    check::<BatchInput<AssociationCreateInput>>(
        "AssociationBatchCreateInput",
        json!({"inputs": [{"from": {"id": "1"}, "to": {"id": "7"},
        "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 279}]}]}),
    );
    check::<AssociationBatchCreateResult>(
        "AssociationBatchCreateResult",
        json!({"status": "COMPLETE", "results": [{"fromObjectTypeId": "0-1",
        "fromObjectId": 1, "toObjectTypeId": "0-2", "toObjectId": 7, "labels": []}],
        "startedAt": "2024-01-15T10:30:00Z", "completedAt": "2024-01-15T10:30:01Z"}),
    );
    check::<BatchInput<AssociationArchiveInput>>(
        "AssociationBatchArchiveInput",
        json!({"inputs": [{"from": {"id": "1"}, "to": [{"id": "7"}, {"id": "8"}]}]}),
    );
    check::<DefaultAssociationResult>(
        "DefaultAssociationResult",
        json!({"status": "COMPLETE", "results": [{"from": {"id": "1"}, "to": {"id": "7"},
        "associationSpec": {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 279}}],
        "startedAt": "2024-01-15T10:30:00Z", "completedAt": "2024-01-15T10:30:01Z"}),
    );
    // `batch/associate/default` has its body schema inline in the path.
    let sample = json!({"inputs": [{"from": {"id": "1"}, "to": {"id": "7"}}]});
    let sent = serde_json::to_value(
        serde_json::from_value::<BatchInput<DefaultAssociationInput>>(sample).unwrap(),
    )
    .unwrap();
    conforms(
        &spec,
        request_schema(
            &spec,
            "/crm/v4/associations/{fromObjectType}/{toObjectType}/batch/associate/default",
        ),
        &sent,
        "batch/associate/default",
    );
    let paths = spec["paths"].as_mapping().unwrap();
    for p in [
        "/crm/v4/objects/{objectType}/{objectId}/associations/{toObjectType}",
        "/crm/v4/associations/{fromObjectType}/{toObjectType}/batch/associate/default",
        "/crm/v4/associations/{fromObjectType}/{toObjectType}/batch/archive",
        "/crm/v4/associations/{fromObjectType}/{toObjectType}/labels",
    ] {
        assert!(paths.contains_key(p), "{p} is not in the spec");
    }
}

/// What the simulator answers on the v4 association routes conforms too.
#[cfg(feature = "sim")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulator_association_answers_match_the_spec() {
    use crm_hubspot::sim::associations::associate;
    use crm_hubspot::sim::{HubSpotSimConfig, HubSpotSimulator};
    use crm_sim::SimServer;
    use crm_sim::store::Fields;

    let spec = spec();
    let mut cfg = HubSpotSimConfig::default();
    cfg.association_page_size = 1;
    let token = cfg.private_app_token.clone();
    let sim = SimServer::new(HubSpotSimulator::new(cfg))
        .start()
        .await
        .unwrap();
    let store = sim.context().store();
    let mut f = Fields::new();
    f.insert("email".into(), json!("a@example.com"));
    let contact = store.create("contacts", f).id.to_string();
    let companies: Vec<String> = (0..2)
        .map(|i| {
            let mut f = Fields::new();
            f.insert("name".into(), json!(format!("Co {i}")));
            store.create("companies", f).id.to_string()
        })
        .collect();
    associate(
        sim.context(),
        "contacts",
        &contact,
        "companies",
        &companies[0],
    )
    .unwrap();
    let http = crm_http::reqwest::Client::new();
    let post = |path: &str, body: Value| {
        http.post(sim.url(path))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    let linked: Value = post(
        "/crm/v4/associations/contacts/companies/batch/associate/default",
        json!({"inputs": [{"from": {"id": contact}, "to": {"id": companies[1]}}]}),
    )
    .await
    .unwrap()
    .bytes()
    .await
    .map(|b| serde_json::from_slice(&b).unwrap())
    .unwrap();
    conforms(
        &spec,
        schema(&spec, "DefaultAssociationResult"),
        &linked,
        "associate/default",
    );
    let resp = post(
        "/crm/v4/associations/contacts/companies/batch/read",
        json!({"inputs": [{"id": contact}, {"id": "999999"}]}),
    )
    .await
    .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        207,
        "an unknown id is a per-input error"
    );
    let read: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    conforms(
        &spec,
        schema(&spec, "AssociationBatchReadResult"),
        &read,
        "batch/read",
    );
    assert_eq!(read["results"][0]["paging"]["next"]["after"], "1");
    let created: Value = post(
        "/crm/v4/associations/companies/contacts/batch/create",
        json!({"inputs": [{"from": {"id": companies[1]}, "to": {"id": contact},
            "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 280}]}]}),
    )
    .await
    .unwrap()
    .bytes()
    .await
    .map(|b| serde_json::from_slice(&b).unwrap())
    .unwrap();
    conforms(
        &spec,
        schema(&spec, "AssociationBatchCreateResult"),
        &created,
        "batch/create",
    );
    let page: Value = http
        .get(sim.url(&format!(
            "/crm/v4/objects/contacts/{contact}/associations/companies"
        )))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .map(|b| serde_json::from_slice(&b).unwrap())
        .unwrap();
    conforms(&spec, schema(&spec, "AssociatedRecordPage"), &page, "list");
    assert_eq!(page["results"].as_array().unwrap().len(), 2);
    let archived = post(
        "/crm/v4/associations/contacts/companies/batch/archive",
        json!({"inputs": [{"from": {"id": contact}, "to": [{"id": companies[0]}]}]}),
    )
    .await
    .unwrap();
    assert_eq!(archived.status().as_u16(), 204);
}
