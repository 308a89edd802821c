//! Program, static list and smart campaign membership in the simulator.
//!
//! Programs, lists and campaigns are defined through [`SimState`]
//! ([`SimState::add_program`], [`SimState::add_list`],
//! [`SimState::add_campaign`]); their members are leads of the store. The
//! routes answer as Marketo documents them:
//!
//! - an unknown program, list or campaign: `success: false` with 1013 in a
//!   200 body; a status the program's channel lacks: 1025; missing
//!   parameters 1002, bad values 1001/1003, unsupported filter fields 1011,
//!   unknown member fields 1006, more than 300 leads (100 for Request
//!   Campaign) 1003;
//! - per lead: `skipped` with 1004 (no such lead), 1013 (Change Lead
//!   Program Status on a lead that is not a member: "Only existing members
//!   of the program may have their status changed with this API"), 1037
//!   (already in the status, or in one of a higher step), 1015 (removing a
//!   lead that is not in the list); record faults of the fault plan answer
//!   611 for the lead at that position.
//!
//! Paging tokens are opaque to clients (offsets here); `updatedAt` ranges
//! are at most 7 days and read as `[startAt, endAt)`.

// Helpers return the error answer itself, as handlers do.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::PoisonError;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use chrono::{DateTime, TimeDelta, Utc};
use crm_core::RecordId;
use crm_sim::RecordFaults;
use serde_json::{Map, Value as J, json};

use super::{App, SimState, error_body, iso, ok, render};
use crate::ObjectKind;

/// One status of a program's channel.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SimProgramStatus {
    /// Its name (`Registered`, `Attended`, ...).
    pub name: String,
    /// Its step; members only move to statuses of the same or a higher step.
    pub step: u32,
    /// Whether it is a success status.
    pub success: bool,
}

/// A program of the simulator and its channel's statuses.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SimProgram {
    /// The program id.
    pub id: u64,
    /// Its name.
    pub name: String,
    /// The channel (`Webinar`, ...).
    pub channel: String,
    /// The channel's statuses.
    pub statuses: Vec<SimProgramStatus>,
}

impl SimProgram {
    /// A webinar program: Invited (10), Registered (20), No Show (30),
    /// Attended (30, success), as Marketo's default Webinar channel.
    pub fn new(id: u64, name: impl Into<String>) -> Self {
        SimProgram {
            id,
            name: name.into(),
            channel: "Webinar".into(),
            statuses: Vec::new(),
        }
        .with_status("Invited", 10, false)
        .with_status("Registered", 20, false)
        .with_status("No Show", 30, false)
        .with_status("Attended", 30, true)
    }

    /// A program of `channel` with no statuses yet.
    pub fn with_channel(id: u64, name: impl Into<String>, channel: impl Into<String>) -> Self {
        SimProgram {
            id,
            name: name.into(),
            channel: channel.into(),
            statuses: Vec::new(),
        }
    }

    /// Adds a status to the channel.
    #[must_use]
    pub fn with_status(mut self, name: impl Into<String>, step: u32, success: bool) -> Self {
        self.statuses.push(SimProgramStatus {
            name: name.into(),
            step,
            success,
        });
        self
    }

    fn status(&self, name: &str) -> Option<&SimProgramStatus> {
        self.statuses
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(name.trim()))
    }
}

/// A lead's membership in a program.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SimMembership {
    /// The program status.
    pub status: String,
    /// Whether the lead reached a success status.
    pub reached_success: bool,
    /// Whether the program acquired the lead.
    pub acquired_by: bool,
    /// When the lead became a member.
    pub membership_date: DateTime<Utc>,
    /// When the membership last changed.
    pub updated_at: DateTime<Utc>,
}

/// A static list of the simulator.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SimList {
    /// The list id.
    pub id: u64,
    /// Its name.
    pub name: String,
    /// The program holding it, if any.
    pub program_name: Option<String>,
}

impl SimList {
    /// A list outside any program.
    pub fn new(id: u64, name: impl Into<String>) -> Self {
        SimList {
            id,
            name: name.into(),
            program_name: None,
        }
    }

    /// The list inside the program named.
    #[must_use]
    pub fn in_program(mut self, program_name: impl Into<String>) -> Self {
        self.program_name = Some(program_name.into());
        self
    }
}

/// A smart campaign of the simulator.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SimCampaign {
    /// The campaign id.
    pub id: u64,
    /// Its name.
    pub name: String,
    /// The parent program's id and name, if any.
    pub program: Option<(u64, String)>,
    /// A trigger campaign (else a batch campaign).
    pub trigger: bool,
    /// Whether a trigger campaign is active.
    pub active: bool,
    /// Whether it has a "Campaign is Requested: Web Service API" trigger.
    pub requestable: bool,
}

impl SimCampaign {
    /// An active trigger campaign requestable through the API.
    pub fn requestable(id: u64, name: impl Into<String>) -> Self {
        SimCampaign {
            id,
            name: name.into(),
            program: None,
            trigger: true,
            active: true,
            requestable: true,
        }
    }

    /// A batch campaign (cannot be requested).
    pub fn batch(id: u64, name: impl Into<String>) -> Self {
        SimCampaign {
            trigger: false,
            active: false,
            requestable: false,
            ..SimCampaign::requestable(id, name)
        }
    }

    /// The campaign inside a program.
    #[must_use]
    pub fn in_program(mut self, id: u64, name: impl Into<String>) -> Self {
        self.program = Some((id, name.into()));
        self
    }

    /// Makes a trigger campaign inactive (or active).
    #[must_use]
    pub fn active(mut self, on: bool) -> Self {
        self.active = on;
        self
    }

    fn can_be_requested(&self) -> bool {
        self.trigger && self.active && self.requestable
    }
}

/// One Request Campaign call the simulator accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CampaignRun {
    /// The campaign.
    pub campaign_id: u64,
    /// The leads run (unknown ids left out).
    pub lead_ids: Vec<u64>,
    /// Token overrides, name and value.
    pub tokens: Vec<(String, String)>,
    /// When.
    pub at: DateTime<Utc>,
}

#[derive(Debug, Default)]
pub(super) struct Catalog {
    programs: BTreeMap<u64, (SimProgram, BTreeMap<u64, SimMembership>)>,
    lists: BTreeMap<u64, (SimList, DateTime<Utc>, BTreeSet<u64>)>,
    campaigns: BTreeMap<u64, (SimCampaign, DateTime<Utc>)>,
    runs: Vec<CampaignRun>,
}

impl SimState {
    fn catalog(&self) -> std::sync::MutexGuard<'_, Catalog> {
        self.catalog.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Defines (or redefines, keeping its members) a program.
    pub fn add_program(&self, program: SimProgram) {
        let mut c = self.catalog();
        match c.programs.get_mut(&program.id) {
            Some(entry) => entry.0 = program,
            None => {
                c.programs.insert(program.id, (program, BTreeMap::new()));
            }
        }
    }

    /// Defines (or redefines, keeping its members) a static list.
    pub fn add_list(&self, list: SimList) {
        let mut c = self.catalog();
        match c.lists.get_mut(&list.id) {
            Some(entry) => entry.0 = list,
            None => {
                c.lists.insert(list.id, (list, Utc::now(), BTreeSet::new()));
            }
        }
    }

    /// Defines (or redefines) a smart campaign.
    pub fn add_campaign(&self, campaign: SimCampaign) {
        self.catalog()
            .campaigns
            .insert(campaign.id, (campaign, Utc::now()));
    }

    /// A lead's membership in a program.
    pub fn program_member(&self, program_id: u64, lead_id: u64) -> Option<SimMembership> {
        self.catalog()
            .programs
            .get(&program_id)
            .and_then(|(_, m)| m.get(&lead_id).cloned())
    }

    /// Every member of a program, by lead id.
    pub fn program_members(&self, program_id: u64) -> Vec<(u64, SimMembership)> {
        self.catalog()
            .programs
            .get(&program_id)
            .map(|(_, m)| m.iter().map(|(k, v)| (*k, v.clone())).collect())
            .unwrap_or_default()
    }

    /// Makes a lead a member of a program with `status` at `at` (seeding;
    /// no checks but that the program exists). Returns false for an
    /// unknown program.
    pub fn set_program_member(
        &self,
        program_id: u64,
        lead_id: u64,
        status: &str,
        at: DateTime<Utc>,
    ) -> bool {
        let mut c = self.catalog();
        let Some((program, members)) = c.programs.get_mut(&program_id) else {
            return false;
        };
        let success = program.status(status).is_some_and(|s| s.success);
        let m = members.entry(lead_id).or_insert_with(|| SimMembership {
            status: status.to_owned(),
            reached_success: false,
            acquired_by: false,
            membership_date: at,
            updated_at: at,
        });
        m.status = status.to_owned();
        m.reached_success |= success;
        m.updated_at = at;
        true
    }

    /// The leads of a static list.
    pub fn list_members(&self, list_id: u64) -> Vec<u64> {
        self.catalog()
            .lists
            .get(&list_id)
            .map(|(_, _, m)| m.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The Request Campaign calls accepted so far.
    pub fn campaign_runs(&self) -> Vec<CampaignRun> {
        self.catalog().runs.clone()
    }

    /// Forgets memberships and campaign runs, keeping the definitions.
    pub(super) fn reset_membership(&self) {
        let mut c = self.catalog();
        for (_, members) in c.programs.values_mut() {
            members.clear();
        }
        for (_, _, members) in c.lists.values_mut() {
            members.clear();
        }
        c.runs.clear();
    }
}

/// The routes (all under the API's auth, rate and concurrency layers).
pub(super) fn routes(router: Router<App>) -> Router<App> {
    use axum::routing::{get, post};
    router
        .route("/rest/v1/leads/programs/{program}", get(leads_by_program))
        .route(
            "/rest/v1/leads/programs/{program}/status.json",
            post(change_lead_program_status),
        )
        .route(
            "/rest/v1/programs/{program}/members.json",
            get(program_members),
        )
        .route(
            "/rest/v1/programs/{program}/members/status.json",
            post(sync_program_member_status),
        )
        .route("/rest/v1/lists.json", get(lists))
        .route(
            "/rest/v1/lists/{list}/leads.json",
            get(list_leads).post(add_to_list).delete(remove_from_list),
        )
        .route("/rest/v1/lists/{list}/leads/ismember.json", get(is_member))
        .route("/rest/v1/campaigns.json", get(campaigns))
        .route(
            "/rest/v1/campaigns/{campaign}/trigger.json",
            post(trigger_campaign),
        )
}

type Params = Vec<(String, String)>;

/// The last value of a query parameter.
fn param<'a>(q: &'a Params, name: &str) -> Option<&'a str> {
    q.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Every value of a query parameter, repeated or comma-separated.
fn values(q: &Params, name: &str) -> Vec<String> {
    q.iter()
        .filter(|(k, _)| k == name)
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect()
}

fn path_id(raw: &str, name: &str) -> Result<u64, Response> {
    raw.trim_end_matches(".json").parse().map_err(|_| {
        error_body(
            "1001",
            &format!("Invalid value '{raw}'. Required of type 'Integer' for {name}"),
        )
    })
}

/// `batchSize` (1 to 300, default 300) and the offset in `nextPageToken`.
fn page_params(q: &Params) -> Result<(usize, usize), Response> {
    let batch = match param(q, "batchSize") {
        None => 300,
        Some(b) => match b.parse::<usize>() {
            Ok(n) if (1..=300).contains(&n) => n,
            _ => return Err(error_body("1003", "Invalid batchSize (1 to 300)")),
        },
    };
    let offset = match param(q, "nextPageToken") {
        None | Some("") => 0,
        Some(t) => t
            .parse()
            .map_err(|_| error_body("1001", &format!("Invalid value '{t}' for nextPageToken")))?,
    };
    Ok((batch, offset))
}

/// A page of `items` with `nextPageToken` (and `moreResult` when asked).
fn page_body(
    items: Vec<J>,
    total: usize,
    offset: usize,
    batch: usize,
    more_result: bool,
) -> Response {
    let more = total > offset + batch;
    let mut body = json!({"requestId": "sim#5", "success": true, "result": items});
    if more {
        body["nextPageToken"] = J::String((offset + batch).to_string());
    }
    if more_result {
        body["moreResult"] = J::Bool(more);
    }
    Json(body).into_response()
}

fn lead_exists(app: &App, lead: u64) -> bool {
    app.ctx
        .store()
        .get_live("leads", &RecordId::new(lead.to_string()))
        .is_some()
}

fn skip(code: &str, message: &str) -> J {
    json!([{"code": code, "message": message}])
}

const DEFAULT_LEAD_FIELDS: [&str; 6] = [
    "email",
    "updatedAt",
    "createdAt",
    "lastName",
    "firstName",
    "id",
];

fn lead_fields(q: &Params) -> Vec<String> {
    fields_or(q, &DEFAULT_LEAD_FIELDS)
}

/// The `fields` asked for, else `defaults`.
fn fields_or(q: &Params, defaults: &[&str]) -> Vec<String> {
    let asked = values(q, "fields");
    if asked.is_empty() {
        defaults.iter().map(|f| (*f).to_owned()).collect()
    } else {
        asked
    }
}

/// Leads as Marketo renders them, with `extra` added to each.
fn render_leads(
    app: &App,
    ids: &[u64],
    wanted: &[String],
    mut extra: impl FnMut(u64) -> Option<(String, J)>,
) -> Vec<J> {
    let store = app.ctx.store();
    ids.iter()
        .filter_map(|id| {
            let rec = store.get_live("leads", &RecordId::new(id.to_string()))?;
            let mut m = render(ObjectKind::Leads, &rec, wanted);
            if let Some((k, v)) = extra(*id) {
                m.insert(k, v);
            }
            Some(J::Object(m))
        })
        .collect()
}

/// The program named in the path, the page asked for and the program's members.
struct ProgramPage {
    program: u64,
    batch: usize,
    offset: usize,
    members: BTreeMap<u64, SimMembership>,
}

/// Reads the path's program id, then the page parameters, then finds the program.
fn program_page(app: &App, raw: &str, q: &Params) -> Result<ProgramPage, Response> {
    let program = path_id(raw, "programId")?;
    let (batch, offset) = page_params(q)?;
    let members = app
        .st
        .catalog()
        .programs
        .get(&program)
        .map(|(_, m)| m.clone())
        .ok_or_else(|| error_body("1013", "Program not found"))?;
    Ok(ProgramPage {
        program,
        batch,
        offset,
        members,
    })
}

async fn leads_by_program(
    State(app): State<App>,
    Path(program): Path<String>,
    Query(q): Query<Params>,
) -> Response {
    let ProgramPage {
        batch,
        offset,
        members,
        ..
    } = match program_page(&app, &program, &q) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let live: Vec<u64> = members
        .keys()
        .copied()
        .filter(|l| lead_exists(&app, *l))
        .collect();
    let page: Vec<u64> = live.iter().skip(offset).take(batch).copied().collect();
    let items = render_leads(&app, &page, &lead_fields(&q), |lead| {
        let m = members.get(&lead)?;
        Some((
            "membership".to_owned(),
            json!({
                "progressionStatus": m.status,
                "acquiredBy": m.acquired_by,
                "reachedSuccess": m.reached_success,
                "membershipDate": iso(m.membership_date),
                "isExhausted": false,
            }),
        ))
    });
    page_body(items, live.len(), offset, batch, false)
}

/// Which members a `filterType` selects.
type Keep = Box<dyn Fn(u64, &SimMembership) -> bool>;

const MEMBER_FIELDS: [&str; 7] = [
    "leadId",
    "programId",
    "acquiredBy",
    "reachedSuccess",
    "membershipDate",
    "statusName",
    "updatedAt",
];
const DEFAULT_MEMBER_FIELDS: [&str; 5] = [
    "leadId",
    "reachedSuccess",
    "programId",
    "acquiredBy",
    "membershipDate",
];

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

async fn program_members(
    State(app): State<App>,
    Path(program): Path<String>,
    Query(q): Query<Params>,
) -> Response {
    let ProgramPage {
        program,
        batch,
        offset,
        members,
    } = match program_page(&app, &program, &q) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let Some(filter_type) = param(&q, "filterType") else {
        return error_body(
            "1002",
            "Value for required parameter 'filterType' is missing",
        );
    };
    let wanted = values(&q, "filterValues");
    let needs_values = filter_type != "updatedAt";
    if needs_values && wanted.is_empty() {
        return error_body(
            "1002",
            "Value for required parameter 'filterValues' is missing",
        );
    }
    if wanted.len() > 300 {
        return error_body("1003", "Too many filter values (max 300)");
    }
    let keep: Keep = match filter_type {
        "leadId" => {
            let mut ids = BTreeSet::new();
            for v in &wanted {
                match v.parse::<u64>() {
                    Ok(n) => {
                        ids.insert(n);
                    }
                    Err(_) => {
                        return error_body(
                            "1001",
                            &format!("Invalid value '{v}'. Required of type 'Integer'"),
                        );
                    }
                }
            }
            Box::new(move |lead, _| ids.contains(&lead))
        }
        "statusName" => {
            Box::new(move |_, m| wanted.iter().any(|w| w.eq_ignore_ascii_case(&m.status)))
        }
        "reachedSuccess" => {
            let want: Vec<bool> = wanted
                .iter()
                .map(|w| w.eq_ignore_ascii_case("true"))
                .collect();
            Box::new(move |_, m| want.contains(&m.reached_success))
        }
        "updatedAt" => {
            let (Some(start), Some(end)) = (param(&q, "startAt"), param(&q, "endAt")) else {
                return error_body(
                    "1002",
                    "Value for required parameter 'startAt' or 'endAt' is missing",
                );
            };
            let (Some(start), Some(end)) = (parse_time(start), parse_time(end)) else {
                return error_body("1003", "Invalid date in startAt or endAt");
            };
            if end < start || end - start > TimeDelta::days(7) {
                return error_body("1003", "Date range must not exceed 7 days");
            }
            Box::new(move |_, m| m.updated_at >= start && m.updated_at < end)
        }
        other => return error_body("1011", &format!("Field '{other}' not supported")),
    };
    let fields = fields_or(&q, &DEFAULT_MEMBER_FIELDS);
    if let Some(bad) = fields.iter().find(|f| !MEMBER_FIELDS.contains(&f.as_str())) {
        return error_body("1006", &format!("Field '{bad}' not found"));
    }
    let matching: Vec<(u64, SimMembership)> = members
        .into_iter()
        .filter(|(lead, m)| keep(*lead, m) && lead_exists(&app, *lead))
        .collect();
    let items: Vec<J> = matching
        .iter()
        .skip(offset)
        .take(batch)
        .enumerate()
        .map(|(seq, (lead, m))| {
            let mut o = Map::new();
            o.insert("seq".into(), J::from(seq));
            o.insert("leadId".into(), J::from(*lead));
            for f in &fields {
                let v = match f.as_str() {
                    "programId" => J::from(program),
                    "acquiredBy" => J::Bool(m.acquired_by),
                    "reachedSuccess" => J::Bool(m.reached_success),
                    "membershipDate" => J::String(iso(m.membership_date)),
                    "statusName" => J::String(m.status.clone()),
                    "updatedAt" => J::String(iso(m.updated_at)),
                    _ => continue,
                };
                o.insert(f.clone(), v);
            }
            J::Object(o)
        })
        .collect();
    page_body(items, matching.len(), offset, batch, true)
}

/// A status change request, read leniently to answer Marketo's codes.
struct StatusChange {
    status: String,
    leads: Vec<u64>,
}

fn status_change(body: &[u8], status_key: &str, lead_key: &str) -> Result<StatusChange, Response> {
    let v: J = serde_json::from_slice(body)
        .map_err(|e| error_body("609", &format!("Invalid JSON: {e}")))?;
    let status = v
        .get(status_key)
        .and_then(J::as_str)
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| {
            error_body(
                "1002",
                &format!("Value for required parameter '{status_key}' is missing"),
            )
        })?;
    let input = v
        .get("input")
        .and_then(J::as_array)
        .ok_or_else(|| error_body("1002", "Value for required parameter 'input' is missing"))?;
    if input.len() > 300 {
        return Err(error_body("1003", "Too many records (max 300)"));
    }
    let leads = input
        .iter()
        .map(|i| i.get(lead_key).and_then(J::as_u64))
        .collect::<Option<Vec<u64>>>()
        .ok_or_else(|| {
            error_body(
                "1003",
                &format!("Every input needs an integer '{lead_key}'"),
            )
        })?;
    Ok(StatusChange {
        status: status.to_owned(),
        leads,
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum StatusCall {
    /// Change Lead Program Status: members only; results `{id, status}`.
    Legacy,
    /// Sync Program Member Status: adds members; results `{seq, leadId, status}`.
    Sync,
}

fn set_status(
    app: &App,
    program: &str,
    body: &[u8],
    faults: Option<&RecordFaults>,
    call: StatusCall,
) -> Response {
    let program = match path_id(program, "programId") {
        Ok(p) => p,
        Err(r) => return r,
    };
    let (status_key, lead_key) = match call {
        StatusCall::Legacy => ("status", "id"),
        StatusCall::Sync => ("statusName", "leadId"),
    };
    let req = match status_change(body, status_key, lead_key) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let now = app.ctx.clock().now();
    let live: Vec<bool> = req.leads.iter().map(|l| lead_exists(app, *l)).collect();
    let mut c = app.st.catalog();
    let Some((program, members)) = c.programs.get_mut(&program) else {
        return error_body("1013", "Program not found");
    };
    let Some(target) = program.status(&req.status).cloned() else {
        return error_body("1025", "Program status not found");
    };
    let steps: HashMap<String, u32> = program
        .statuses
        .iter()
        .map(|s| (s.name.to_lowercase(), s.step))
        .collect();
    let results: Vec<J> = req
        .leads
        .iter()
        .zip(live)
        .enumerate()
        .map(|(seq, (&lead, exists))| {
            let outcome: Result<&str, J> = if faults.is_some_and(|f| f.rejects(seq)) {
                Err(skip("611", "System error"))
            } else if !exists {
                Err(skip("1004", "Lead not found"))
            } else {
                match members.get_mut(&lead) {
                    None if call == StatusCall::Legacy => Err(skip("1013", "Membership not found")),
                    None => {
                        members.insert(
                            lead,
                            SimMembership {
                                status: target.name.clone(),
                                reached_success: target.success,
                                acquired_by: false,
                                membership_date: now,
                                updated_at: now,
                            },
                        );
                        Ok("created")
                    }
                    Some(m) => {
                        let step = steps.get(&m.status.to_lowercase()).copied().unwrap_or(0);
                        if m.status.eq_ignore_ascii_case(&target.name) || step > target.step {
                            Err(skip(
                                "1037",
                                "Lead skipped because it is already in or past this status",
                            ))
                        } else {
                            m.status = target.name.clone();
                            m.reached_success |= target.success;
                            m.updated_at = now;
                            Ok("updated")
                        }
                    }
                }
            };
            match (call, outcome) {
                (StatusCall::Legacy, Ok(s)) => json!({"id": lead, "status": s}),
                (StatusCall::Legacy, Err(r)) => {
                    json!({"id": lead, "status": "skipped", "reasons": r})
                }
                (StatusCall::Sync, Ok(s)) => json!({"seq": seq, "leadId": lead, "status": s}),
                (StatusCall::Sync, Err(r)) => {
                    json!({"seq": seq, "status": "skipped", "reasons": r})
                }
            }
        })
        .collect();
    ok(J::Array(results))
}

async fn change_lead_program_status(
    State(app): State<App>,
    Path(program): Path<String>,
    faults: Option<Extension<RecordFaults>>,
    body: Bytes,
) -> Response {
    set_status(
        &app,
        &program,
        &body,
        faults.as_ref().map(|Extension(f)| f),
        StatusCall::Legacy,
    )
}

async fn sync_program_member_status(
    State(app): State<App>,
    Path(program): Path<String>,
    faults: Option<Extension<RecordFaults>>,
    body: Bytes,
) -> Response {
    set_status(
        &app,
        &program,
        &body,
        faults.as_ref().map(|Extension(f)| f),
        StatusCall::Sync,
    )
}

/// Whether a named asset passes the `id`/`name`/`programName` filters.
fn asset_matches(q: &Params, id: u64, name: &str, program: Option<&str>) -> Result<bool, Response> {
    let mut ids = Vec::new();
    for v in values(q, "id") {
        ids.push(v.parse::<u64>().map_err(|_| {
            error_body(
                "1001",
                &format!("Invalid value '{v}'. Required of type 'Integer'"),
            )
        })?);
    }
    let names = values(q, "name");
    let programs = values(q, "programName");
    let workspaces = values(q, "workspaceName");
    Ok((ids.is_empty() || ids.contains(&id))
        && (names.is_empty() || names.iter().any(|n| n == name))
        && (programs.is_empty() || program.is_some_and(|p| programs.iter().any(|n| n == p)))
        && (workspaces.is_empty() || workspaces.iter().any(|w| w == "Default")))
}

async fn lists(State(app): State<App>, Query(q): Query<Params>) -> Response {
    let (batch, offset) = match page_params(&q) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let all: Vec<(SimList, DateTime<Utc>)> = app
        .st
        .catalog()
        .lists
        .values()
        .map(|(l, at, _)| (l.clone(), *at))
        .collect();
    let mut matching = Vec::new();
    for (l, at) in all {
        match asset_matches(&q, l.id, &l.name, l.program_name.as_deref()) {
            Ok(true) => matching.push((l, at)),
            Ok(false) => {}
            Err(r) => return r,
        }
    }
    let items: Vec<J> = matching
        .iter()
        .skip(offset)
        .take(batch)
        .map(|(l, at)| {
            let mut v = json!({
                "id": l.id,
                "name": l.name,
                "workspaceName": "Default",
                "createdAt": iso(*at),
                "updatedAt": iso(*at),
            });
            if let Some(p) = &l.program_name {
                v["programName"] = J::String(p.clone());
            }
            v
        })
        .collect();
    page_body(items, matching.len(), offset, batch, false)
}

fn list_members_of(app: &App, list: &str) -> Result<(u64, BTreeSet<u64>), Response> {
    let id = path_id(list, "listId")?;
    app.st
        .catalog()
        .lists
        .get(&id)
        .map(|(_, _, m)| (id, m.clone()))
        .ok_or_else(|| error_body("1013", "Static list not found"))
}

async fn list_leads(
    State(app): State<App>,
    Path(list): Path<String>,
    Query(q): Query<Params>,
) -> Response {
    let (batch, offset) = match page_params(&q) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let members = match list_members_of(&app, &list) {
        Ok((_, m)) => m,
        Err(r) => return r,
    };
    let live: Vec<u64> = members
        .into_iter()
        .filter(|l| lead_exists(&app, *l))
        .collect();
    let page: Vec<u64> = live.iter().skip(offset).take(batch).copied().collect();
    let items = render_leads(&app, &page, &lead_fields(&q), |_| None);
    page_body(items, live.len(), offset, batch, false)
}

/// Lead ids of a list operation: the body's `input`, else the `id` query parameter.
fn list_input(q: &Params, body: &[u8]) -> Result<Vec<u64>, Response> {
    let from_body = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let v: J = serde_json::from_slice(body)
            .map_err(|e| error_body("609", &format!("Invalid JSON: {e}")))?;
        let input = v
            .get("input")
            .and_then(J::as_array)
            .ok_or_else(|| error_body("1002", "Value for required parameter 'input' is missing"))?;
        Some(
            input
                .iter()
                .map(|i| i.get("id").and_then(J::as_u64))
                .collect::<Option<Vec<u64>>>()
                .ok_or_else(|| error_body("1003", "Every input needs an integer 'id'"))?,
        )
    };
    let ids = match from_body {
        Some(ids) => ids,
        None => {
            let mut ids = Vec::new();
            for v in values(q, "id") {
                ids.push(v.parse::<u64>().map_err(|_| {
                    error_body(
                        "1001",
                        &format!("Invalid value '{v}'. Required of type 'Integer'"),
                    )
                })?);
            }
            ids
        }
    };
    if ids.is_empty() {
        return Err(error_body(
            "1002",
            "Value for required parameter 'id' is missing",
        ));
    }
    if ids.len() > 300 {
        return Err(error_body("1003", "Too many leads (max 300)"));
    }
    Ok(ids)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ListOp {
    Add,
    Remove,
    Check,
}

fn list_operation(
    app: &App,
    list: &str,
    q: &Params,
    body: &[u8],
    faults: Option<&RecordFaults>,
    op: ListOp,
) -> Response {
    let id = match path_id(list, "listId") {
        Ok(id) => id,
        Err(r) => return r,
    };
    let leads = match list_input(q, body) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let live: Vec<bool> = leads.iter().map(|l| lead_exists(app, *l)).collect();
    let mut c = app.st.catalog();
    let Some((_, _, members)) = c.lists.get_mut(&id) else {
        return error_body("1013", "Static list not found");
    };
    let results: Vec<J> = leads
        .iter()
        .zip(live)
        .enumerate()
        .map(|(seq, (&lead, exists))| {
            let status = if op != ListOp::Check && faults.is_some_and(|f| f.rejects(seq)) {
                Err(skip("611", "System error"))
            } else if !exists {
                Err(skip("1004", "Lead not found"))
            } else {
                match op {
                    ListOp::Add => {
                        members.insert(lead);
                        Ok("added")
                    }
                    ListOp::Remove if members.remove(&lead) => Ok("removed"),
                    ListOp::Remove => Err(skip("1015", "Lead not in list")),
                    ListOp::Check if members.contains(&lead) => Ok("memberof"),
                    ListOp::Check => Ok("notmemberof"),
                }
            };
            match status {
                Ok(s) => json!({"id": lead, "status": s}),
                Err(r) => json!({"id": lead, "status": "skipped", "reasons": r}),
            }
        })
        .collect();
    ok(J::Array(results))
}

async fn add_to_list(
    State(app): State<App>,
    Path(list): Path<String>,
    Query(q): Query<Params>,
    faults: Option<Extension<RecordFaults>>,
    body: Bytes,
) -> Response {
    let f = faults.as_ref().map(|Extension(f)| f);
    list_operation(&app, &list, &q, &body, f, ListOp::Add)
}

async fn remove_from_list(
    State(app): State<App>,
    Path(list): Path<String>,
    Query(q): Query<Params>,
    faults: Option<Extension<RecordFaults>>,
    body: Bytes,
) -> Response {
    let f = faults.as_ref().map(|Extension(f)| f);
    list_operation(&app, &list, &q, &body, f, ListOp::Remove)
}

async fn is_member(
    State(app): State<App>,
    Path(list): Path<String>,
    Query(q): Query<Params>,
    body: Bytes,
) -> Response {
    list_operation(&app, &list, &q, &body, None, ListOp::Check)
}

async fn campaigns(State(app): State<App>, Query(q): Query<Params>) -> Response {
    let (batch, offset) = match page_params(&q) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let triggerable = match param(&q, "isTriggerable") {
        None => None,
        Some(v) if v.eq_ignore_ascii_case("true") => Some(true),
        Some(v) if v.eq_ignore_ascii_case("false") => Some(false),
        Some(v) => {
            return error_body(
                "1001",
                &format!("Invalid value '{v}'. Required of type 'Boolean'"),
            );
        }
    };
    let all: Vec<(SimCampaign, DateTime<Utc>)> =
        app.st.catalog().campaigns.values().cloned().collect();
    let mut matching = Vec::new();
    for (c, at) in all {
        let program = c.program.as_ref().map(|(_, n)| n.as_str());
        match asset_matches(&q, c.id, &c.name, program) {
            Ok(true) if triggerable.is_none_or(|t| t == c.can_be_requested()) => {
                matching.push((c, at));
            }
            Ok(_) => {}
            Err(r) => return r,
        }
    }
    let items: Vec<J> = matching
        .iter()
        .skip(offset)
        .take(batch)
        .map(|(c, at)| {
            let mut v = json!({
                "id": c.id,
                "name": c.name,
                "type": if c.trigger { "trigger" } else { "batch" },
                "workspaceName": "Default",
                "createdAt": iso(*at),
                "updatedAt": iso(*at),
            });
            if c.trigger {
                v["active"] = J::Bool(c.active);
            }
            if let Some((id, name)) = &c.program {
                v["programId"] = J::from(*id);
                v["programName"] = J::String(name.clone());
            }
            v
        })
        .collect();
    page_body(items, matching.len(), offset, batch, false)
}

async fn trigger_campaign(
    State(app): State<App>,
    Path(campaign): Path<String>,
    body: Bytes,
) -> Response {
    let id = match path_id(&campaign, "campaignId") {
        Ok(id) => id,
        Err(r) => return r,
    };
    let Some((c, _)) = app.st.catalog().campaigns.get(&id).cloned() else {
        return error_body("1013", "Campaign not found");
    };
    if !c.can_be_requested() {
        return error_body(
            "1003",
            "Campaign is not an active trigger campaign with a 'Campaign is Requested: Web Service API' trigger",
        );
    }
    let v: J = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error_body("609", &format!("Invalid JSON: {e}")),
    };
    let Some(leads) = v.pointer("/input/leads").and_then(J::as_array) else {
        return error_body(
            "1002",
            "Value for required parameter 'input.leads' is missing",
        );
    };
    if leads.len() > 100 {
        return error_body("1003", "Too many leads (max 100)");
    }
    let Some(ids) = leads
        .iter()
        .map(|l| l.get("id").and_then(J::as_u64))
        .collect::<Option<Vec<u64>>>()
    else {
        return error_body("1003", "Every lead needs an integer 'id'");
    };
    let mut tokens = Vec::new();
    for t in v
        .pointer("/input/tokens")
        .and_then(J::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let (Some(name), Some(value)) = (
            t.get("name").and_then(J::as_str),
            t.get("value").and_then(J::as_str),
        ) else {
            return error_body("1003", "A token needs a name and a value");
        };
        if !(name.starts_with("{{my.") && name.ends_with("}}")) {
            return error_body(
                "1003",
                &format!("Invalid token name '{name}' (expected {{{{my.name}}}})"),
            );
        }
        tokens.push((name.to_owned(), value.to_owned()));
    }
    let lead_ids: Vec<u64> = ids.into_iter().filter(|l| lead_exists(&app, *l)).collect();
    let at = app.ctx.clock().now();
    app.st.catalog().runs.push(CampaignRun {
        campaign_id: id,
        lead_ids,
        tokens,
        at,
    });
    ok(json!([{"id": id}]))
}
