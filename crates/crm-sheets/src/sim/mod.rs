//! A stateful simulator of the Google Sheets API v4 (feature `sim`), built
//! on `crm-sim`.
//!
//! | route | method |
//! | --- | --- |
//! | `POST /token` | OAuth 2.0 token endpoint (refresh-token and JWT bearer grants) |
//! | `GET /v4/spreadsheets/{id}` | `spreadsheets.get` (properties, sheet properties) |
//! | `GET /v4/spreadsheets/{id}/values/{range}` | `spreadsheets.values.get` |
//! | `PUT /v4/spreadsheets/{id}/values/{range}` | `spreadsheets.values.update` |
//! | `POST /v4/spreadsheets/{id}/values/{range}:append` | `spreadsheets.values.append` |
//! | `GET /v4/spreadsheets/{id}/values:batchGet` | `spreadsheets.values.batchGet` |
//! | `POST /v4/spreadsheets/{id}/values:batchUpdate` | `spreadsheets.values.batchUpdate` |
//!
//! Ranges are A1 notation with quoted sheet names; `valueRenderOption`
//! (`FORMATTED_VALUE`, `UNFORMATTED_VALUE`, `FORMULA`) and
//! `dateTimeRenderOption` (`SERIAL_NUMBER`, `FORMATTED_STRING`) are honoured;
//! empty trailing rows and cells are left out of answers. Errors use
//! Google's shape, `{"error": {"code", "message", "status"}}`; the read and
//! write quotas are per-minute windows answering 429 `RESOURCE_EXHAUSTED`;
//! updates past the grid and growth past 10,000,000 cells are refused as
//! Google does. The fault plan, request log and token expiry come from
//! `crm-sim`.
//!
//! ```no_run
//! use crm_sheets::sim::{SheetsSimConfig, SheetsSimulator};
//! use crm_sim::SimServer;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let sim = SheetsSimulator::new(SheetsSimConfig::default());
//! let data = sim.data();
//! let handle = SimServer::new(sim).seed(7).demo_data(true).start().await?;
//! println!("{}", handle.ready_line());
//! # let _ = data; Ok(()) }
//! ```

// Handlers' helpers return the error response itself; it is built once, on
// the error path, and returned straight to axum.
#![allow(clippy::result_large_err)]

mod demo;
mod grid;

use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use crm_sim::auth::{AuthFailure, AuthGuard, AuthMethod, OAuthClient, token_endpoint};
use crm_sim::{RateLimited, RateLimiter, ResponseForm, SimContext, Simulator, Window};
use serde_json::json;

pub use demo::{DEMO_HEADERS, DemoOptions, demo_bookings, demo_row};
pub use grid::{SheetsData, SimCell, SimSheet, SimSpreadsheet};

use crate::a1::{A1Range, quote_sheet};
use crate::wire::{
    AppendValuesResponse, BatchGetValuesResponse, BatchUpdateValuesRequest,
    BatchUpdateValuesResponse, DateTimeRenderOption, Dimension, ErrorBody, GridProperties, Sheet,
    SheetProperties, Spreadsheet, SpreadsheetProperties, UpdateValuesResponse, ValueInputOption,
    ValueRange, ValueRenderOption,
};
use crate::writeback::MAX_SPREADSHEET_CELLS;

/// The simulator's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SheetsSimConfig {
    /// The demo spreadsheet's id.
    pub spreadsheet_id: String,
    /// The demo sheet's title.
    pub sheet_title: String,
    /// The OAuth client id.
    pub client_id: String,
    /// The OAuth client secret.
    pub client_secret: String,
    /// A refresh token valid from the start.
    pub refresh_token: String,
    /// The service-account email accepted as a JWT issuer.
    pub service_account_email: String,
    /// Access-token lifetime.
    pub token_ttl: Duration,
    /// Read requests per quota period (Google: 60 per minute per user).
    pub read_quota: Option<u32>,
    /// Write requests per quota period (Google: 60 per minute per user).
    pub write_quota: Option<u32>,
    /// The quota period (Google: one minute).
    pub quota_period: Duration,
    /// The most cells a spreadsheet may hold.
    pub max_cells: u64,
    /// The largest request body accepted (larger: 413).
    pub max_body_bytes: usize,
    /// Rows of demo bookings made by `seed_demo_data`.
    pub demo_rows: usize,
}

impl Default for SheetsSimConfig {
    fn default() -> Self {
        SheetsSimConfig {
            spreadsheet_id: "1BxiMVs0XRA5nFMdKvBdBZjgmUUqptlbs74OgvE2upms".into(),
            sheet_title: "Bookings".into(),
            client_id: "sim-client.apps.googleusercontent.com".into(),
            client_secret: "sim-client-secret".into(),
            refresh_token: "1//sim-refresh-token".into(),
            service_account_email: "sync@sim-project.iam.gserviceaccount.com".into(),
            token_ttl: Duration::from_secs(3600),
            read_quota: Some(60),
            write_quota: Some(60),
            quota_period: Duration::from_secs(60),
            max_cells: MAX_SPREADSHEET_CELLS,
            max_body_bytes: 10 * 1024 * 1024,
            demo_rows: 2000,
        }
    }
}

impl SheetsSimConfig {
    /// Sets the read and write quotas per `period` (`None`: unlimited).
    #[must_use]
    pub fn quotas(mut self, read: Option<u32>, write: Option<u32>, period: Duration) -> Self {
        self.read_quota = read;
        self.write_quota = write;
        self.quota_period = period;
        self
    }

    /// Sets the access-token lifetime.
    #[must_use]
    pub fn token_ttl(mut self, ttl: Duration) -> Self {
        self.token_ttl = ttl;
        self
    }

    /// Sets the cell limit.
    #[must_use]
    pub fn max_cells(mut self, n: u64) -> Self {
        self.max_cells = n;
        self
    }

    /// Sets the number of demo rows.
    #[must_use]
    pub fn demo_rows(mut self, n: usize) -> Self {
        self.demo_rows = n;
        self
    }
}

/// Google's wording of throttling, auth failures and server errors.
#[derive(Clone, Copy, Debug, Default)]
pub struct GoogleForm;

fn google_error(status: StatusCode, canonical: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(ErrorBody::new(status.as_u16(), canonical, message)),
    )
        .into_response()
}

impl ResponseForm for GoogleForm {
    fn rate_limited(&self, limited: &RateLimited) -> Response {
        // Sheets answers quota exhaustion with 429 RESOURCE_EXHAUSTED and an
        // ErrorInfo detail naming the quota; it sends no Retry-After (clients
        // back off exponentially: Sheets API "Usage limits").
        let metric = if limited.window.starts_with("Write") {
            "Write requests"
        } else {
            "Read requests"
        };
        let body = json!({"error": {
            "code": 429,
            "message": format!(
                "Quota exceeded for quota metric '{metric}' and limit '{} per minute per user' of service 'sheets.googleapis.com' for consumer 'project_number:000000000000'.",
                limited.window
            ),
            "status": "RESOURCE_EXHAUSTED",
            "details": [{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "RATE_LIMIT_EXCEEDED",
                "domain": "googleapis.com",
                "metadata": {"service": "sheets.googleapis.com", "quota_limit_value": limited.limit.to_string()}
            }]
        }});
        (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response()
    }

    fn unauthorized(&self, failure: &AuthFailure) -> Response {
        let mut resp = google_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            format!(
                "Request had invalid authentication credentials ({}). Expected OAuth 2 access token, login cookie or other valid authentication credential.",
                failure.code()
            ),
        );
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(
                "Bearer realm=\"https://accounts.google.com/\", error=\"invalid_token\"",
            ),
        );
        resp
    }

    fn server_error(&self, status: StatusCode) -> Response {
        let (canonical, message) = match status.as_u16() {
            503 => ("UNAVAILABLE", "The service is currently unavailable."),
            504 => ("DEADLINE_EXCEEDED", "The request timed out."),
            _ => ("INTERNAL", "Internal error encountered."),
        };
        google_error(status, canonical, message)
    }
}

/// The Google Sheets simulator.
#[derive(Clone, Debug, Default)]
pub struct SheetsSimulator {
    config: SheetsSimConfig,
    data: SheetsData,
}

impl SheetsSimulator {
    /// A simulator with `config` and no spreadsheets (see
    /// [`SheetsSimulator::data`] and `seed_demo_data`).
    pub fn new(config: SheetsSimConfig) -> Self {
        SheetsSimulator {
            config,
            data: SheetsData::default(),
        }
    }

    /// The spreadsheets, to set up and inspect from tests.
    pub fn data(&self) -> SheetsData {
        self.data.clone()
    }

    /// The settings.
    pub fn config(&self) -> &SheetsSimConfig {
        &self.config
    }
}

#[derive(Clone)]
struct AppState {
    data: SheetsData,
    max_cells: u64,
}

impl Simulator for SheetsSimulator {
    fn provider(&self) -> &'static str {
        "sheets"
    }

    fn form(&self) -> std::sync::Arc<dyn ResponseForm> {
        std::sync::Arc::new(GoogleForm)
    }

    fn setup(&self, ctx: &SimContext) {
        let auth = ctx.auth();
        auth.set_token_ttl(self.config.token_ttl);
        auth.register_client(OAuthClient::confidential(
            self.config.client_id.clone(),
            self.config.client_secret.clone(),
        ));
        auth.add_refresh_token(&self.config.client_id, &self.config.refresh_token);
        // Service accounts sign assertions as their email, for the token URI.
        auth.register_client(OAuthClient::public(
            self.config.service_account_email.clone(),
        ));
        auth.set_jwt_audience(Some(format!("{}/token", ctx.base_url())));
    }

    fn router(&self, ctx: &SimContext) -> Router {
        let state = AppState {
            data: self.data.clone(),
            max_cells: self.config.max_cells,
        };
        let guard = ctx.auth_guard(vec![AuthMethod::Bearer]);
        let limit = |name: &str, n: Option<u32>| {
            n.map(|n| ctx.rate_limiter(vec![Window::fixed(name, n, self.config.quota_period)]))
        };
        let mut reads = Router::new()
            .route("/v4/spreadsheets/{id}", get(spreadsheets_get))
            .route(
                "/v4/spreadsheets/{id}/values:batchGet",
                get(values_batch_get),
            )
            .route("/v4/spreadsheets/{id}/values/{range}", get(values_get))
            .with_state(state.clone());
        if let Some(l) = limit("ReadRequestsPerMinutePerUser", self.config.read_quota) {
            reads = reads.layer(axum::middleware::from_fn_with_state(
                l,
                RateLimiter::middleware,
            ));
        }
        let mut writes = Router::new()
            .route(
                "/v4/spreadsheets/{id}/values:batchUpdate",
                post(values_batch_update),
            )
            .route(
                "/v4/spreadsheets/{id}/values/{range}",
                axum::routing::put(values_update).post(values_append),
            )
            .with_state(state)
            .layer(DefaultBodyLimit::max(self.config.max_body_bytes));
        if let Some(l) = limit("WriteRequestsPerMinutePerUser", self.config.write_quota) {
            writes = writes.layer(axum::middleware::from_fn_with_state(
                l,
                RateLimiter::middleware,
            ));
        }
        let api = reads
            .merge(writes)
            .layer(axum::middleware::from_fn_with_state(
                guard,
                AuthGuard::middleware,
            ));
        Router::new()
            .route("/token", post(token_endpoint))
            .with_state(ctx.auth().clone())
            .merge(api)
    }

    fn credentials(&self, ctx: &SimContext) -> serde_json::Value {
        json!({
            "type": "authorized_user",
            "client_id": self.config.client_id,
            "client_secret": self.config.client_secret,
            "refresh_token": self.config.refresh_token,
            "token_uri": format!("{}/token", ctx.base_url()),
            "service_account_email": self.config.service_account_email,
            "spreadsheet_id": self.config.spreadsheet_id,
            "sheet_name": self.config.sheet_title,
        })
    }

    fn seed_demo_data(&self, ctx: &SimContext, seed: u64) {
        let mut rng = ctx.rng(&format!("bookings-{seed}"));
        let sheet = demo_bookings(
            &mut rng,
            &DemoOptions::new(self.config.demo_rows).title(&self.config.sheet_title),
        );
        self.data
            .add_spreadsheet(&self.config.spreadsheet_id, "Bookings 2027", sheet);
    }
}

fn not_found(id: &str) -> Response {
    google_error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!("Requested entity was not found. (spreadsheet {id})"),
    )
}

fn bad_range(range: &str) -> Response {
    google_error(
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        format!("Unable to parse range: {range}"),
    )
}

fn invalid(message: impl Into<String>) -> Response {
    google_error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", message)
}

/// Google's display form of a range: the sheet title quoted only when needed.
fn display_range(title: &str, r0: u32, r1: u32, c0: usize, c1: usize) -> String {
    let plain = title.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && title
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic());
    let t = if plain {
        title.to_owned()
    } else {
        quote_sheet(title)
    };
    let cl = crm_core::mapping::column_letters;
    format!("{t}!{}{r0}:{}{r1}", cl(c0), cl(c1))
}

#[derive(Default)]
struct Params {
    ranges: Vec<String>,
    value: Option<ValueRenderOption>,
    dates: Option<DateTimeRenderOption>,
    input: Option<ValueInputOption>,
    insert: Option<String>,
    major: Option<String>,
}

fn enum_param<T: serde::de::DeserializeOwned>(v: &str) -> Option<T> {
    serde_json::from_value(serde_json::Value::String(v.to_owned())).ok()
}

fn params(raw: Option<&str>) -> Result<Params, Response> {
    let mut p = Params::default();
    let Some(q) = raw else { return Ok(p) };
    for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
        let bad = || invalid(format!("Invalid value at '{k}' ({v})"));
        match k.as_ref() {
            "ranges" => p.ranges.push(v.into_owned()),
            "valueRenderOption" | "responseValueRenderOption" => {
                p.value = Some(enum_param(&v).ok_or_else(bad)?);
            }
            "dateTimeRenderOption" | "responseDateTimeRenderOption" => {
                p.dates = Some(enum_param(&v).ok_or_else(bad)?);
            }
            "valueInputOption" => p.input = Some(enum_param(&v).ok_or_else(bad)?),
            "insertDataOption" => {
                if v != "OVERWRITE" && v != "INSERT_ROWS" {
                    return Err(bad());
                }
                p.insert = Some(v.into_owned());
            }
            "majorDimension" => {
                if v != "ROWS" && v != "DIMENSION_UNSPECIFIED" {
                    // Only row-major reads are simulated.
                    if v == "COLUMNS" {
                        return Err(invalid("majorDimension=COLUMNS is not simulated"));
                    }
                    return Err(bad());
                }
                p.major = Some(v.into_owned());
            }
            // Standard parameters (fields, prettyPrint, alt, quotaUser, ...)
            // and spreadsheets.get's own are accepted and ignored.
            _ => {}
        }
    }
    Ok(p)
}

async fn spreadsheets_get(
    State(st): State<AppState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    if let Err(r) = params(q.as_deref()) {
        return r;
    }
    let g = st.data.lock();
    let Some(ss) = g.get(&id) else {
        return not_found(&id);
    };
    let body = Spreadsheet {
        spreadsheet_id: ss.spreadsheet_id.clone(),
        properties: Some(SpreadsheetProperties {
            title: ss.title.clone(),
            locale: Some("en_US".into()),
            time_zone: Some("Etc/GMT".into()),
        }),
        sheets: ss
            .sheets
            .iter()
            .enumerate()
            .map(|(i, s)| Sheet {
                properties: SheetProperties {
                    sheet_id: s.sheet_id,
                    title: s.title.clone(),
                    index: i as i64,
                    sheet_type: Some("GRID".into()),
                    hidden: None,
                    grid_properties: Some(GridProperties {
                        row_count: i64::from(s.row_count),
                        column_count: i64::from(s.column_count),
                        frozen_row_count: None,
                    }),
                },
            })
            .collect(),
    };
    Json(body).into_response()
}

fn read_range(
    ss: &SimSpreadsheet,
    range_text: &str,
    value: ValueRenderOption,
    dates: DateTimeRenderOption,
) -> Result<ValueRange, Response> {
    let range: A1Range = range_text.parse().map_err(|_| bad_range(range_text))?;
    let si = ss.sheet_for(&range).ok_or_else(|| bad_range(range_text))?;
    let sheet = &ss.sheets[si];
    let bounds = range.bounds(sheet.row_count, sheet.column_count as usize);
    let (r0, r1, c0, c1) = range.unclipped(sheet.row_count, sheet.column_count as usize);
    let shown = match bounds {
        Some((a, b, c, d)) => display_range(&sheet.title, a, b, c, d),
        None => display_range(&sheet.title, r0, r1, c0, c1),
    };
    Ok(ValueRange {
        range: Some(shown),
        major_dimension: Some(Dimension::Rows),
        values: sheet.read(bounds, value, dates),
    })
}

async fn values_get(
    State(st): State<AppState>,
    Path((id, range)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Response {
    let p = match params(q.as_deref()) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let g = st.data.lock();
    let Some(ss) = g.get(&id) else {
        return not_found(&id);
    };
    match read_range(
        ss,
        &range,
        p.value.unwrap_or(ValueRenderOption::FormattedValue),
        p.dates.unwrap_or(DateTimeRenderOption::SerialNumber),
    ) {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

async fn values_batch_get(
    State(st): State<AppState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let p = match params(q.as_deref()) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let g = st.data.lock();
    let Some(ss) = g.get(&id) else {
        return not_found(&id);
    };
    let mut out = Vec::with_capacity(p.ranges.len());
    for r in &p.ranges {
        match read_range(
            ss,
            r,
            p.value.unwrap_or(ValueRenderOption::FormattedValue),
            p.dates.unwrap_or(DateTimeRenderOption::SerialNumber),
        ) {
            Ok(v) => out.push(v),
            Err(resp) => return resp,
        }
    }
    Json(BatchGetValuesResponse {
        spreadsheet_id: id,
        value_ranges: out,
    })
    .into_response()
}

/// Validates one write of `values` into `range_text`: the target sheet
/// index and the top-left cell, or Google's error.
fn plan_cells(
    ss: &SimSpreadsheet,
    range_text: &str,
    values: &[Vec<crate::cell::Cell>],
) -> Result<(usize, u32, usize), Response> {
    let range: A1Range = range_text.parse().map_err(|_| bad_range(range_text))?;
    let si = ss.sheet_for(&range).ok_or_else(|| bad_range(range_text))?;
    let sheet = &ss.sheets[si];
    let (r0, r1, c0, c1) = range.unclipped(sheet.row_count, sheet.column_count as usize);
    let rows = values.len() as u32;
    let cols = values.iter().map(Vec::len).max().unwrap_or(0);
    if rows == 0 {
        return Ok((si, r0, c0));
    }
    let last_row = r0 + rows - 1;
    let last_col = c0 + cols.saturating_sub(1);
    if range.start.is_some()
        && (last_row > r1.max(r0) && range.end.is_some()
            || last_col > c1.max(c0) && range.end.is_some())
    {
        return Err(invalid(format!(
            "Requested writing within range [{range_text}], but tried writing to row [{last_row}]"
        )));
    }
    if last_row > sheet.row_count || last_col >= sheet.column_count as usize {
        return Err(invalid(format!(
            "Range ({}!{}{last_row}) exceeds grid limits. Max rows: {}, max columns: {}",
            quote_sheet(&sheet.title),
            crm_core::mapping::column_letters(last_col),
            sheet.row_count,
            sheet.column_count
        )));
    }
    Ok((si, r0, c0))
}

fn write_cells(
    sheet: &mut SimSheet,
    r0: u32,
    c0: usize,
    values: &[Vec<crate::cell::Cell>],
    input: ValueInputOption,
) -> UpdateValuesResponse {
    let mut cells = 0i64;
    let mut max_cols = 0usize;
    for (i, row) in values.iter().enumerate() {
        let r = r0 + i as u32;
        max_cols = max_cols.max(row.len());
        for (j, v) in row.iter().enumerate() {
            let current = sheet.cell(r, c0 + j).clone();
            sheet.set(r, c0 + j, SimCell::from_input(v, input, &current));
            cells += 1;
        }
    }
    let rows = values.len();
    let updated_range = (rows > 0 && max_cols > 0).then(|| {
        display_range(
            &sheet.title,
            r0,
            r0 + rows as u32 - 1,
            c0,
            c0 + max_cols - 1,
        )
    });
    UpdateValuesResponse {
        spreadsheet_id: String::new(),
        updated_range,
        updated_rows: Some(rows as i64),
        updated_columns: Some(max_cols as i64),
        updated_cells: Some(cells),
        updated_data: None,
    }
}

fn input_option(p: &Params, body: Option<ValueInputOption>) -> Result<ValueInputOption, Response> {
    match p.input.or(body) {
        Some(ValueInputOption::Raw) => Ok(ValueInputOption::Raw),
        Some(ValueInputOption::UserEntered) => Ok(ValueInputOption::UserEntered),
        _ => Err(invalid(
            "Invalid valueInputOption: INPUT_VALUE_OPTION_UNSPECIFIED",
        )),
    }
}

fn body_error(e: &JsonRejection) -> Response {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return google_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "INVALID_ARGUMENT",
            "Request payload size exceeds the limit.",
        );
    }
    invalid(format!("Invalid JSON payload received. {}", e.body_text()))
}

async fn values_update(
    State(st): State<AppState>,
    Path((id, range)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    body: Result<Json<ValueRange>, JsonRejection>,
) -> Response {
    let p = match params(q.as_deref()) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => return body_error(&e),
    };
    let input = match input_option(&p, None) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let mut g = st.data.lock();
    let Some(ss) = g.get_mut(&id) else {
        return not_found(&id);
    };
    let (si, r0, c0) = match plan_cells(ss, &range, &body.values) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mut resp = write_cells(&mut ss.sheets[si], r0, c0, &body.values, input);
    resp.spreadsheet_id = id;
    Json(resp).into_response()
}

async fn values_batch_update(
    State(st): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<BatchUpdateValuesRequest>, JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => return body_error(&e),
    };
    let input = match input_option(&Params::default(), Some(body.value_input_option)) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let mut g = st.data.lock();
    let Some(ss) = g.get_mut(&id) else {
        return not_found(&id);
    };
    // Atomic: every range is checked before anything is written.
    let mut planned = Vec::with_capacity(body.data.len());
    for vr in &body.data {
        let Some(range) = vr.range.as_deref() else {
            return invalid("Invalid data[].range: missing");
        };
        match plan_cells(ss, range, &vr.values) {
            Ok(x) => planned.push(x),
            Err(r) => return r,
        }
    }
    let mut responses = Vec::with_capacity(planned.len());
    let mut sheets = std::collections::BTreeSet::new();
    let (mut rows, mut cells) = (0i64, 0i64);
    let mut cols = std::collections::BTreeSet::new();
    for ((si, r0, c0), vr) in planned.into_iter().zip(&body.data) {
        let mut r = write_cells(&mut ss.sheets[si], r0, c0, &vr.values, input);
        r.spreadsheet_id = id.clone();
        sheets.insert(si);
        rows += r.updated_rows.unwrap_or(0);
        cells += r.updated_cells.unwrap_or(0);
        for j in 0..r.updated_columns.unwrap_or(0) {
            cols.insert((si, c0 + j as usize));
        }
        responses.push(r);
    }
    Json(BatchUpdateValuesResponse {
        spreadsheet_id: id,
        total_updated_rows: Some(rows),
        total_updated_columns: Some(cols.len() as i64),
        total_updated_cells: Some(cells),
        total_updated_sheets: Some(sheets.len() as i64),
        responses,
    })
    .into_response()
}

async fn values_append(
    State(st): State<AppState>,
    Path((id, range)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    body: Result<Json<ValueRange>, JsonRejection>,
) -> Response {
    let Some(range) = range.strip_suffix(":append") else {
        return google_error(StatusCode::NOT_FOUND, "NOT_FOUND", "Method not found.");
    };
    let p = match params(q.as_deref()) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => return body_error(&e),
    };
    let input = match input_option(&p, None) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let insert = p.insert.as_deref() != Some("OVERWRITE");
    let mut g = st.data.lock();
    let Some(ss) = g.get_mut(&id) else {
        return not_found(&id);
    };
    let parsed: A1Range = match range.parse() {
        Ok(r) => r,
        Err(_) => return bad_range(range),
    };
    let Some(si) = ss.sheet_for(&parsed) else {
        return bad_range(range);
    };
    let total_cells = ss.cells();
    let sheet = &mut ss.sheets[si];
    let (r0, _, c0, c1) = parsed.unclipped(sheet.row_count, sheet.column_count as usize);
    let n = body.values.len() as u32;
    let width = body.values.iter().map(Vec::len).max().unwrap_or(0);
    // The table: from the range's first row to the last row with data.
    let last = sheet.last_data_row(r0, c0, c1.max(c0 + width.saturating_sub(1)));
    let table_range = last.map(|l| display_range(&sheet.title, r0, l, c0, c1));
    let at = last.map_or(r0, |l| l + 1);
    let grow_rows = if insert {
        n
    } else {
        (at + n).saturating_sub(1).saturating_sub(sheet.row_count)
    };
    let grow_cols = (c0 + width).saturating_sub(sheet.column_count as usize) as u64;
    let added = u64::from(grow_rows) * u64::from(sheet.column_count)
        + grow_cols * u64::from(sheet.row_count + grow_rows);
    if total_cells + added > st.max_cells {
        return invalid(format!(
            "This action would increase the number of cells in the workbook above the limit of {} cells.",
            st.max_cells
        ));
    }
    if insert && n > 0 {
        sheet.insert_rows(at, n);
    } else {
        sheet.row_count += grow_rows;
    }
    sheet.column_count += u32::try_from(grow_cols).unwrap_or(0);
    let mut updates = write_cells(sheet, at, c0, &body.values, input);
    updates.spreadsheet_id = id.clone();
    Json(AppendValuesResponse {
        spreadsheet_id: id,
        table_range,
        updates: Some(updates),
    })
    .into_response()
}
