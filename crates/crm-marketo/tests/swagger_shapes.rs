//! Request and response shapes against Marketo's Swagger descriptions
//! (`swagger-mapi.json`, `swagger-identity.json` from Adobe's
//! `marketo-apis` repository; see SOURCES.md next to them).
//!
//! The spec directory is `$CRM_SPECS_DIR` or
//! `<CARGO_MANIFEST_DIR>/../../../shared/specs/marketo`.
#![cfg(feature = "sim")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use crm_core::{Connector, ReadRequest, Record, Sink, Source, WriteBatch, WriteOp};
use crm_marketo::sim::{MarketoSimConfig, MarketoSimulator, SimCampaign, SimList, SimProgram};
use crm_marketo::wire::{
    CampaignToken, ChangeLeadProgramStatusRequest, DateRange, DeleteRequest, ExportFilter,
    ExportRequest, LeadIdInput, ListOperationRequest, ProgramMemberLead, SyncAction,
    SyncLeadRequest, SyncObjectRequest, SyncProgramMemberStatusRequest, TriggerCampaignData,
    TriggerCampaignRequest,
};
use crm_marketo::{AssetFilter, LeadFullRead, Limits, Marketo, MarketoConfig, MemberFilter};
use crm_sim::SimServer;
use futures_util::StreamExt;
use secrecy::SecretString;
use serde_json::{Value, json};

fn spec_dir() -> PathBuf {
    std::env::var_os("CRM_SPECS_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/specs/marketo"),
        |d| {
            let d = PathBuf::from(d);
            if d.join("swagger-mapi.json").exists() {
                d
            } else {
                d.join("marketo")
            }
        },
    )
}

fn load(name: &str) -> Value {
    let path = spec_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

struct Specs {
    mapi: Value,
    identity: Value,
}

impl Specs {
    /// The operation for a concrete path, matching `{param}` segments.
    fn operation(&self, method: &str, path: &str) -> Option<(&Value, &Value)> {
        let method = method.to_lowercase();
        for spec in [&self.mapi, &self.identity] {
            for (template, ops) in spec["paths"].as_object().unwrap() {
                let t: Vec<&str> = template.split('/').collect();
                let p: Vec<&str> = path.split('/').collect();
                let same = t.len() == p.len()
                    && t.iter().zip(&p).all(|(a, b)| a == b || a.starts_with('{'));
                if same && let Some(op) = ops.get(&method) {
                    return Some((spec, op));
                }
            }
        }
        None
    }

    fn definition<'a>(spec: &'a Value, reference: &str) -> &'a Value {
        let name = reference.trim_start_matches("#/definitions/");
        &spec["definitions"][name]
    }

    /// The definition of the operation's `in: body` parameter.
    fn request_body(&self, method: &str, path: &str) -> &Value {
        let (spec, op) = self.operation(method, path).unwrap();
        let r = op["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["in"] == "body")
            .and_then(|p| p["schema"]["$ref"].as_str())
            .unwrap();
        Self::definition(spec, r)
    }

    /// Asserts `value` uses only properties of the operation's body definition.
    fn body_declared(&self, method: &str, path: &str, value: &Value, what: &str) {
        keys_declared(&self.mapi, self.request_body(method, path), value, what);
    }

    /// Asserts `body` uses only properties of the operation's 200 response definition.
    fn response_declared(&self, method: &str, path: &str, body: &Value, what: &str) {
        let (spec, op) = self.operation(method, path).unwrap();
        let def = Self::definition(
            spec,
            op["responses"]["200"]["schema"]["$ref"].as_str().unwrap(),
        );
        keys_declared(spec, def, body, what);
    }
}

/// Sends `req` and reads the answer as JSON.
async fn json_of(req: crm_http::reqwest::RequestBuilder) -> Value {
    req.send()
        .await
        .unwrap()
        .bytes()
        .await
        .map(|b| serde_json::from_slice(&b).unwrap())
        .unwrap()
}

fn keys_declared(spec: &Value, def: &Value, value: &Value, what: &str) {
    let props = def["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("{what}: no properties"));
    for k in value.as_object().unwrap().keys() {
        assert!(
            props.contains_key(k),
            "{what}: `{k}` is not in the Swagger definition"
        );
    }
    // Nested fixed shapes: arrays of $ref items with properties.
    for (k, v) in value.as_object().unwrap() {
        if let (Some(items), Value::Array(arr)) = (props.get(k).map(|p| &p["items"]), v)
            && let Some(r) = items["$ref"].as_str()
        {
            let item_def = Specs::definition(spec, r);
            let fixed = [
                "Error",
                "ExportResponse",
                "LeadChange",
                "LeadAttribute",
                "Activity",
                "LeadLookupInputData",
                "LeadInputData",
                "InputLead",
                "ProgramMemberStatus",
                "Token",
                "ChangeLeadProgramStatusOutputData",
                "ProgramMemberStatusResponse",
                "ListOperationOutputData",
                "StaticList",
                "Campaign",
            ]
            .iter()
            .any(|n| r.ends_with(n));
            if fixed {
                for item in arr {
                    keys_declared(spec, item_def, item, &format!("{what}.{k}[]"));
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_and_responses_match_the_swagger_description() {
    let specs = Specs {
        mapi: load("swagger-mapi.json"),
        identity: load("swagger-identity.json"),
    };
    let mut cfg = MarketoSimConfig::default();
    cfg.export_processing_polls = 1;
    let simulator = MarketoSimulator::new(cfg);
    let state = Arc::clone(simulator.state());
    state.add_program(SimProgram::new(1001, "Webinar"));
    state.add_list(SimList::new(7, "Attendees").in_program("Webinar"));
    state.add_campaign(SimCampaign::requestable(31, "Follow-up").in_program(1001, "Webinar"));
    let sim = SimServer::new(simulator).start().await.unwrap();
    let creds = sim.credentials();
    let builder = |mode| {
        MarketoConfig::builder(
            sim.base_url(),
            creds["client_id"].as_str().unwrap(),
            SecretString::from(creds["client_secret"].as_str().unwrap().to_owned()),
        )
        .objects(["leads", "companies", "opportunities", "activities"])
        .limits(Limits::new(1000, Duration::from_secs(2), 10, None))
        .lead_full_read(mode)
        .id_scan_empty_batches(1)
        .lookback(Duration::ZERO)
        .start_date(Utc::now() - TimeDelta::days(3))
        .export_poll(Duration::from_millis(5), Duration::from_millis(20))
        .build()
        .unwrap()
    };
    // A workload touching every endpoint the connector uses.
    let clock = sim.context().clock();
    clock.freeze_at(Utc::now() - TimeDelta::hours(1));
    sim.context().store().create(
        "activities",
        [("leadId".to_owned(), json!(1))].into_iter().collect(),
    );
    clock.resume();
    let m = Arc::new(Marketo::new(builder(LeadFullRead::IdScan)).unwrap());
    for o in ["leads", "companies", "opportunities"] {
        m.describe(o).await.unwrap();
    }
    let lead = Record::new()
        .with("email", "a@example.com")
        .with("firstName", "A");
    let lead_out = m
        .write(
            "leads",
            WriteBatch::upsert(
                "email",
                vec![lead, Record::new().with("email", "b@example.com")],
            ),
        )
        .await
        .unwrap();
    let co = Record::new()
        .with("externalCompanyId", "c1")
        .with("company", "C");
    m.write(
        "companies",
        WriteBatch::upsert("externalCompanyId", vec![co]),
    )
    .await
    .unwrap();
    let opp = Record::new()
        .with("externalOpportunityId", "o1")
        .with("name", "O");
    let out = m
        .write(
            "opportunities",
            WriteBatch::upsert("externalOpportunityId", vec![opp]),
        )
        .await
        .unwrap();
    let mut last = None;
    let mut s = m.read(ReadRequest::full("leads"));
    while let Some(p) = s.next().await {
        last = Some(p.unwrap().cursor);
    }
    drop(s);
    let mut s = m.read(ReadRequest::since("leads", last.unwrap()));
    while let Some(p) = s.next().await {
        p.unwrap();
    }
    drop(s);
    let gone_lead = Record::new().with_id(lead_out[1].id().unwrap().clone());
    m.write("leads", WriteBatch::new(WriteOp::Delete, vec![gone_lead]))
        .await
        .unwrap();
    let gone = Record::new().with_id(out[0].id().unwrap().clone());
    m.write(
        "opportunities",
        WriteBatch::new(WriteOp::Delete, vec![gone]),
    )
    .await
    .unwrap();
    // Membership: programs, static lists, smart campaigns.
    let lead: i64 = lead_out[0].id().unwrap().as_str().parse().unwrap();
    m.sync_program_status(1001, "Registered", &[lead])
        .await
        .unwrap();
    m.change_program_status(1001, "Attended", &[lead])
        .await
        .unwrap();
    let mut pages = m.program_members(1001, &[]);
    while let Some(p) = pages.next().await {
        p.unwrap();
    }
    drop(pages);
    let now = Utc::now();
    let mut pages = m.program_members_updated(
        1001,
        now - TimeDelta::days(1),
        now + TimeDelta::hours(1),
        &[],
    );
    while let Some(p) = pages.next().await {
        assert_eq!(p.unwrap().len(), 1);
    }
    drop(pages);
    m.client()
        .program_members(1001, &MemberFilter::LeadIds(vec![lead]), &[], 300, None)
        .await
        .unwrap();
    m.lists(&AssetFilter::all().names(["Attendees"]))
        .await
        .unwrap();
    m.add_to_list(7, &[lead]).await.unwrap();
    let mut pages = m.list_members(7, &[]);
    while let Some(p) = pages.next().await {
        p.unwrap();
    }
    drop(pages);
    m.client().list_membership(7, &[lead]).await.unwrap();
    m.remove_from_list(7, &[lead]).await.unwrap();
    m.campaigns(&AssetFilter::all().triggerable(true))
        .await
        .unwrap();
    let tokens = [CampaignToken {
        name: "{{my.Topic}}".into(),
        value: "APIs".into(),
    }];
    m.request_campaign(31, &[lead], &tokens).await.unwrap();

    let bulk = Marketo::new(builder(LeadFullRead::BulkExtract)).unwrap();
    for o in ["leads", "activities"] {
        let mut s = bulk.read(ReadRequest::full(o));
        while let Some(p) = s.next().await {
            p.unwrap();
        }
    }

    // Every request: a described operation, with described query parameters.
    let entries = sim.request_log().entries();
    assert!(entries.len() > 15);
    for e in &entries {
        let (_, op) = specs
            .operation(&e.method, &e.path)
            .unwrap_or_else(|| panic!("{} {} is not in the Swagger description", e.method, e.path));
        let declared: Vec<&str> = op["parameters"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter(|p| p["in"] == "query")
                    .filter_map(|p| p["name"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        for pair in e
            .query
            .as_deref()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let name = pair.split('=').next().unwrap();
            assert!(
                declared.contains(&name),
                "{} {}: query `{name}` not declared",
                e.method,
                e.path
            );
        }
    }

    // Request bodies: our serialised types use declared properties only.
    let rec: serde_json::Map<String, Value> =
        [("email".to_owned(), json!("a@b.c"))].into_iter().collect();
    let lead_req = serde_json::to_value(SyncLeadRequest {
        action: Some(SyncAction::CreateOrUpdate),
        lookup_field: Some("email".into()),
        input: vec![rec.clone()],
    })
    .unwrap();
    specs.body_declared("POST", "/rest/v1/leads.json", &lead_req, "SyncLeadRequest");
    let obj_req = serde_json::to_value(SyncObjectRequest {
        action: Some(SyncAction::UpdateOnly),
        dedupe_by: Some("dedupeFields".into()),
        input: vec![rec.clone()],
    })
    .unwrap();
    for p in ["/rest/v1/companies.json", "/rest/v1/opportunities.json"] {
        specs.body_declared("POST", p, &obj_req, p);
    }
    let del = serde_json::to_value(DeleteRequest {
        delete_by: Some("idField".into()),
        input: vec![rec],
    })
    .unwrap();
    for p in [
        "/rest/v1/companies/delete.json",
        "/rest/v1/opportunities/delete.json",
    ] {
        specs.body_declared("POST", p, &del, p);
    }
    let export = serde_json::to_value(ExportRequest {
        fields: vec!["id".into()],
        filter: ExportFilter {
            created_at: Some(DateRange {
                start_at: "2024-01-01T00:00:00Z".into(),
                end_at: "2024-01-31T00:00:00Z".into(),
            }),
            ..ExportFilter::default()
        },
        format: Some("CSV".into()),
    })
    .unwrap();
    let def = specs.request_body("POST", "/bulk/v1/leads/export/create.json");
    keys_declared(&specs.mapi, def, &export, "ExportLeadRequest");
    let filter_def = Specs::definition(
        &specs.mapi,
        def["properties"]["filter"]["$ref"].as_str().unwrap(),
    );
    keys_declared(
        &specs.mapi,
        filter_def,
        &export["filter"],
        "ExportLeadFilter",
    );

    let ids = vec![LeadIdInput { id: 1 }];
    let status_req = serde_json::to_value(ChangeLeadProgramStatusRequest {
        status: "Attended".into(),
        input: ids.clone(),
    })
    .unwrap();
    specs.body_declared(
        "POST",
        "/rest/v1/leads/programs/1001/status.json",
        &status_req,
        "ChangeLeadProgramStatusRequest",
    );
    let member_req = serde_json::to_value(SyncProgramMemberStatusRequest {
        status_name: "Attended".into(),
        input: vec![ProgramMemberLead { lead_id: 1 }],
    })
    .unwrap();
    specs.body_declared(
        "POST",
        "/rest/v1/programs/1001/members/status.json",
        &member_req,
        "SyncProgramMemberStatusRequest",
    );
    let list_req = serde_json::to_value(ListOperationRequest { input: ids.clone() }).unwrap();
    for method in ["POST", "DELETE"] {
        specs.body_declared(
            method,
            "/rest/v1/lists/7/leads.json",
            &list_req,
            "ListOperationRequest",
        );
    }
    let trigger_req = serde_json::to_value(TriggerCampaignRequest {
        input: TriggerCampaignData {
            leads: ids,
            tokens: tokens.to_vec(),
        },
    })
    .unwrap();
    let def = specs.request_body("POST", "/rest/v1/campaigns/31/trigger.json");
    keys_declared(&specs.mapi, def, &trigger_req, "TriggerCampaignRequest");
    keys_declared(
        &specs.mapi,
        Specs::definition(
            &specs.mapi,
            def["properties"]["input"]["$ref"].as_str().unwrap(),
        ),
        &trigger_req["input"],
        "TriggerCampaignData",
    );

    // Responses of the simulator: declared envelope and item properties.
    let http = crm_http::reqwest::Client::new();
    let token: Value = json_of(http.get(sim.url(&format!(
        "/identity/oauth/token?grant_type=client_credentials&client_id={}&client_secret={}",
        creds["client_id"].as_str().unwrap(),
        creds["client_secret"].as_str().unwrap()
    ))))
    .await;
    keys_declared(
        &specs.identity,
        Specs::definition(&specs.identity, "ResponseOfIdentity"),
        &token,
        "identity",
    );
    let bearer = format!("Bearer {}", token["access_token"].as_str().unwrap());
    let gets = [
        "/rest/v1/leads/describe.json",
        "/rest/v1/companies/describe.json",
        "/rest/v1/opportunities/describe.json",
        "/rest/v1/leads.json?filterType=email&filterValues=a@example.com",
        "/rest/v1/companies.json?filterType=externalCompanyId&filterValues=c1",
        "/rest/v1/activities/pagingtoken.json?sinceDatetime=2024-01-01T00:00:00Z",
        "/bulk/v1/leads/export/1/status.json",
        "/rest/v1/leads.json?filterType=id&filterValues=1&batchSize=301",
        "/rest/v1/leads/programs/1001.json",
        "/rest/v1/leads/programs/4242.json",
        "/rest/v1/programs/1001/members.json?filterType=leadId&filterValues=1",
        "/rest/v1/programs/1001/members.json?filterType=statusName&filterValues=Attended",
        "/rest/v1/lists.json",
        "/rest/v1/lists/7/leads.json",
        "/rest/v1/lists/7/leads/ismember.json?id=1",
        "/rest/v1/campaigns.json",
    ];
    for g in gets {
        let (path, _) = g.split_once('?').unwrap_or((g, ""));
        let body: Value = json_of(http.get(sim.url(g)).header("authorization", &bearer)).await;
        specs.response_declared("GET", path, &body, g);
    }
    let token_resp: Value = json_of(
        http.get(
            sim.url("/rest/v1/activities/pagingtoken.json?sinceDatetime=2024-01-01T00:00:00Z"),
        )
        .header("authorization", &bearer),
    )
    .await;
    let t = token_resp["nextPageToken"].as_str().unwrap();
    for feed in ["leadchanges", "deletedleads"] {
        let path = format!("/rest/v1/activities/{feed}.json");
        let body: Value = json_of(
            http.get(sim.url(&format!("{path}?nextPageToken={t}&fields=email")))
                .header("authorization", &bearer),
        )
        .await;
        assert!(
            body["result"].as_array().is_some_and(|a| !a.is_empty()),
            "{feed}: {body}"
        );
        specs.response_declared("GET", &path, &body, &path);
    }
    let lead_id = lead;
    let writes = [
        (
            "POST",
            "/rest/v1/programs/1001/members/status.json",
            json!({"statusName": "Registered", "input": [{"leadId": lead_id}, {"leadId": 999_999}]}),
        ),
        (
            "POST",
            "/rest/v1/leads/programs/1001/status.json",
            json!({"status": "Attended", "input": [{"id": lead_id}, {"id": 999_999}]}),
        ),
        (
            "POST",
            "/rest/v1/leads/programs/1001/status.json",
            json!({"status": "Nope", "input": [{"id": lead_id}]}),
        ),
        (
            "POST",
            "/rest/v1/lists/7/leads.json",
            json!({"input": [{"id": lead_id}, {"id": 999_999}]}),
        ),
        (
            "DELETE",
            "/rest/v1/lists/7/leads.json",
            json!({"input": [{"id": lead_id}, {"id": lead_id}]}),
        ),
        (
            "POST",
            "/rest/v1/campaigns/31/trigger.json",
            json!({"input": {"leads": [{"id": lead_id}]}}),
        ),
    ];
    for (method, path, req) in writes {
        let method = crm_http::reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let body: Value = json_of(
            http.request(method.clone(), sim.url(path))
                .header("authorization", &bearer)
                .header("content-type", "application/json")
                .body(req.to_string()),
        )
        .await;
        specs.response_declared(method.as_str(), path, &body, path);
    }
}
