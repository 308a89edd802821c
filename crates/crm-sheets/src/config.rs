//! [`SheetsConfig`]: which sheet, which columns, how to read and write them.
//!
//! The shape is seed 000's `sheet:` block, plus optional keys:
//!
//! ```yaml
//! spreadsheet_id: "1BxiM..."
//! sheet_name: "Bookings"
//! header_row: 1
//! data_start_row: 2
//! column_mapping:
//!   A: "booking_id"
//!   B: "client_name"
//!   # ... AA, AB ... work too
//! # optional:
//! sheet_id: 0                      # find the tab by id if it is renamed
//! key_field: booking_id            # the row key (default booking_id)
//! expected_headers: {A: "Booking ID", B: "Client"}
//! column_types: {budget: "decimal(2)", start_date: date}
//! page_size: 1000                  # rows per read call
//! rate_limit: "100 per 100 seconds"
//! write_back:
//!   columns: {J: actual_spend, K: pacing_percent, L: campaign_id, M: campaign_status}
//!   append_new_rows: false
//! ```

use std::fmt;
use std::time::Duration;

use crm_core::mapping::{ColumnMapping, column_index, column_letters};
use indexmap::IndexMap;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::cell::ColumnType;
use crate::error::SheetsError;

/// The id of a spreadsheet (the long token in its URL).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SpreadsheetId(String);

impl SpreadsheetId {
    /// Wraps an id.
    pub fn new(id: impl Into<String>) -> Self {
        SpreadsheetId(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SpreadsheetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id of a sheet (tab) inside a spreadsheet: `sheetId`, stable across
/// renames (the `gid` in the sheet's URL).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SheetId(pub i64);

impl fmt::Display for SheetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Read-only scopes of seed 000.
pub const READ_ONLY_SCOPES: &[&str] = &[
    "https://www.googleapis.com/auth/spreadsheets.readonly",
    "https://www.googleapis.com/auth/drive.readonly",
];

/// The read-write scope needed for write-back.
pub const READ_WRITE_SCOPE: &str = "https://www.googleapis.com/auth/spreadsheets";

/// How many requests may be sent per interval.
///
/// The default is seed 000's `rate_limit: 100 # per 100 seconds`. Google's
/// current default quotas are per minute (300 read and 300 write requests per
/// project, 60 of each per user per project: Sheets API "Usage limits"), so
/// `"60 per minute"` matches one user's quota.
///
/// Serde accepts a number (requests per 100 seconds, as in the seed),
/// `"N per M seconds"`, `"N per minute"`, `"N per second"`, or
/// `{requests: N, per_seconds: M}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests allowed per interval.
    pub requests: u32,
    /// The interval.
    pub per: Duration,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            requests: 100,
            per: Duration::from_secs(100),
        }
    }
}

impl RateLimit {
    /// `requests` per `per`.
    pub fn new(requests: u32, per: Duration) -> Self {
        RateLimit { requests, per }
    }

    fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("rate limit {text:?} is not like \"100 per 100 seconds\"");
        let t = text.trim().to_ascii_lowercase();
        let (n, rest) = t.split_once(" per ").ok_or_else(bad)?;
        let requests: u32 = n.trim().parse().map_err(|_| bad())?;
        let rest = rest.trim();
        let (count, unit) = match rest.split_once(' ') {
            Some((c, u)) => (c.trim().parse::<u64>().map_err(|_| bad())?, u.trim()),
            None => (1, rest),
        };
        let unit_secs = match unit.trim_end_matches('s') {
            "second" | "sec" => 1,
            "minute" | "min" => 60,
            "hour" => 3600,
            _ => return Err(bad()),
        };
        Ok(RateLimit::new(
            requests,
            Duration::from_secs(count * unit_secs),
        ))
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} per {} seconds", self.requests, self.per.as_secs())
    }
}

impl Serialize for RateLimit {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for RateLimit {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Number(u32),
            Text(String),
            Map { requests: u32, per_seconds: u64 },
        }
        match Form::deserialize(deserializer)? {
            Form::Number(n) => Ok(RateLimit::new(n, Duration::from_secs(100))),
            Form::Text(t) => RateLimit::parse(&t).map_err(D::Error::custom),
            Form::Map {
                requests,
                per_seconds,
            } => Ok(RateLimit::new(requests, Duration::from_secs(per_seconds))),
        }
    }
}

/// Write-back settings: which columns receive which fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct WriteBackColumns {
    /// Column letters to the fields written there (`J: actual_spend`).
    pub columns: ColumnMapping,
    /// Append rows whose key is not in the sheet (`values.append`);
    /// otherwise such records are rejected as not found.
    #[serde(default)]
    pub append_new_rows: bool,
    /// Rows per `values.batchUpdate` call (and [`crm_core::Sink::max_batch`]).
    #[serde(default = "default_rows_per_request")]
    pub max_rows_per_request: usize,
    /// Cells per request; a batch above it is split into several requests.
    /// Google recommends payloads under 2 MB.
    #[serde(default = "default_cells_per_request")]
    pub max_cells_per_request: usize,
}

fn default_rows_per_request() -> usize {
    500
}

fn default_cells_per_request() -> usize {
    50_000
}

impl WriteBackColumns {
    /// Write-back of `columns`, with defaults for the rest.
    pub fn new(columns: ColumnMapping) -> Self {
        WriteBackColumns {
            columns,
            append_new_rows: false,
            max_rows_per_request: default_rows_per_request(),
            max_cells_per_request: default_cells_per_request(),
        }
    }

    /// Sets [`WriteBackColumns::append_new_rows`].
    #[must_use]
    pub fn append_new_rows(mut self, on: bool) -> Self {
        self.append_new_rows = on;
        self
    }

    /// Sets [`WriteBackColumns::max_rows_per_request`].
    #[must_use]
    pub fn max_rows_per_request(mut self, n: usize) -> Self {
        self.max_rows_per_request = n;
        self
    }

    /// Sets [`WriteBackColumns::max_cells_per_request`].
    #[must_use]
    pub fn max_cells_per_request(mut self, n: usize) -> Self {
        self.max_cells_per_request = n;
        self
    }
}

/// The sheet, its columns and how to read and write them. See the
/// [module docs](self) for the YAML shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SheetsConfig {
    /// The spreadsheet.
    pub spreadsheet_id: SpreadsheetId,
    /// The sheet (tab) title.
    pub sheet_name: String,
    /// The tab's `sheetId`, to find it after a rename. Learnt on the first
    /// read and kept in the cursor when not given.
    #[serde(default)]
    pub sheet_id: Option<SheetId>,
    /// The one-based row holding the headers (0: no header row).
    #[serde(default = "one")]
    pub header_row: u32,
    /// The one-based row where data starts.
    #[serde(default = "two")]
    pub data_start_row: u32,
    /// Column letters to field names. Empty: fields are named after the
    /// headers (see [`crate::schema::stable_field_names`]).
    #[serde(default)]
    pub column_mapping: ColumnMapping,
    /// Header names the sheet must have, by column letter. When absent the
    /// headers seen on the first read (kept in the cursor) are expected.
    #[serde(default)]
    pub expected_headers: Option<IndexMap<String, String>>,
    /// The field that keys rows (default `booking_id`).
    #[serde(default = "default_key")]
    pub key_field: String,
    /// Field types; fields of seed 000's booking schema have defaults
    /// (see [`SheetsConfig::column_type`]).
    #[serde(default)]
    pub column_types: IndexMap<String, ColumnType>,
    /// Rows per read call.
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Request rate.
    #[serde(default)]
    pub rate_limit: RateLimit,
    /// Write-back settings; `None` for a read-only source.
    #[serde(default)]
    pub write_back: Option<WriteBackColumns>,
    /// OAuth scopes; by default [`READ_ONLY_SCOPES`], with
    /// [`READ_WRITE_SCOPE`] in place of `spreadsheets.readonly` when
    /// write-back is configured.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// The API root (default `https://sheets.googleapis.com`), e.g. a
    /// simulator's address.
    #[serde(default)]
    pub base_url: Option<String>,
}

fn one() -> u32 {
    1
}
fn two() -> u32 {
    2
}
fn default_key() -> String {
    "booking_id".into()
}
fn default_page_size() -> u32 {
    1000
}

/// The most rows one read call may ask for.
pub const MAX_PAGE_SIZE: u32 = 100_000;

/// The Sheets API root.
pub const DEFAULT_BASE_URL: &str = "https://sheets.googleapis.com";

impl SheetsConfig {
    /// A config for `sheet_name` of `spreadsheet_id` with seed 000's defaults
    /// (headers on row 1, data from row 2); add columns with the builder
    /// methods and finish with [`SheetsConfig::build`].
    pub fn builder(spreadsheet_id: impl Into<String>, sheet_name: impl Into<String>) -> Self {
        SheetsConfig {
            spreadsheet_id: SpreadsheetId::new(spreadsheet_id),
            sheet_name: sheet_name.into(),
            sheet_id: None,
            header_row: 1,
            data_start_row: 2,
            column_mapping: ColumnMapping::default(),
            expected_headers: None,
            key_field: default_key(),
            column_types: IndexMap::new(),
            page_size: default_page_size(),
            rate_limit: RateLimit::default(),
            write_back: None,
            scopes: None,
            base_url: None,
        }
    }

    /// Loads the config from YAML: the `sheet:` block itself or a document
    /// with a top-level `sheet:` key; then validates it.
    ///
    /// # Errors
    /// [`SheetsError::ConfigInvalid`] for YAML not in this shape or a config
    /// that fails [`SheetsConfig::build`].
    pub fn from_yaml(text: &str) -> Result<Self, SheetsError> {
        let mut json: serde_json::Value =
            serde_yaml::from_str(text).map_err(|e| SheetsError::ConfigInvalid(e.to_string()))?;
        if let Some(inner) = json.as_object_mut().and_then(|o| o.remove("sheet")) {
            json = inner;
        }
        let cfg: SheetsConfig =
            serde_json::from_value(json).map_err(|e| SheetsError::ConfigInvalid(e.to_string()))?;
        cfg.build()
    }

    /// Maps a column (`"A"`, `"AA"`) to a field.
    ///
    /// # Errors
    /// [`SheetsError::ConfigInvalid`] for bad letters or a repeated column or field.
    pub fn column(mut self, letters: &str, field: &str) -> Result<Self, SheetsError> {
        let i = column_index(letters).map_err(|e| SheetsError::ConfigInvalid(e.to_string()))?;
        self.column_mapping
            .insert(i, field.to_owned())
            .map_err(|e| SheetsError::ConfigInvalid(e.to_string()))?;
        Ok(self)
    }

    /// Sets the column mapping.
    #[must_use]
    pub fn columns(mut self, mapping: ColumnMapping) -> Self {
        self.column_mapping = mapping;
        self
    }

    /// Sets the header row and the first data row.
    #[must_use]
    pub fn rows(mut self, header_row: u32, data_start_row: u32) -> Self {
        self.header_row = header_row;
        self.data_start_row = data_start_row;
        self
    }

    /// Sets the tab's `sheetId`.
    #[must_use]
    pub fn sheet_id(mut self, id: i64) -> Self {
        self.sheet_id = Some(SheetId(id));
        self
    }

    /// Sets the key field.
    #[must_use]
    pub fn key_field(mut self, field: impl Into<String>) -> Self {
        self.key_field = field.into();
        self
    }

    /// Sets the type of a field.
    #[must_use]
    pub fn with_column_type(mut self, field: impl Into<String>, ty: ColumnType) -> Self {
        self.column_types.insert(field.into(), ty);
        self
    }

    /// Sets the expected header of a column.
    #[must_use]
    pub fn expected_header(mut self, letters: &str, header: impl Into<String>) -> Self {
        self.expected_headers
            .get_or_insert_with(IndexMap::new)
            .insert(letters.to_owned(), header.into());
        self
    }

    /// Sets the rows per read call.
    #[must_use]
    pub fn page_size(mut self, rows: u32) -> Self {
        self.page_size = rows;
        self
    }

    /// Sets the request rate.
    #[must_use]
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate_limit = limit;
        self
    }

    /// Configures write-back.
    #[must_use]
    pub fn write_back(mut self, write_back: WriteBackColumns) -> Self {
        self.write_back = Some(write_back);
        self
    }

    /// Sets the API root (a simulator's address).
    #[must_use]
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// Validates the whole config.
    ///
    /// # Errors
    /// [`SheetsError::ConfigInvalid`] naming every problem found.
    pub fn build(self) -> Result<Self, SheetsError> {
        let mut problems = Vec::new();
        if self.spreadsheet_id.as_str().trim().is_empty() {
            problems.push("spreadsheet_id is empty".to_owned());
        }
        if self.sheet_name.trim().is_empty() {
            problems.push("sheet_name is empty".to_owned());
        }
        if self.data_start_row == 0 {
            problems.push("data_start_row must be at least 1".to_owned());
        }
        if self.header_row != 0 && self.data_start_row <= self.header_row {
            problems.push(format!(
                "data_start_row ({}) must come after header_row ({})",
                self.data_start_row, self.header_row
            ));
        }
        if self.page_size == 0 || self.page_size > MAX_PAGE_SIZE {
            problems.push(format!("page_size must be 1..={MAX_PAGE_SIZE}"));
        }
        if self.rate_limit.requests == 0 || self.rate_limit.per.is_zero() {
            problems
                .push("rate_limit must allow at least one request per non-zero interval".into());
        }
        if self.column_mapping.is_empty() && self.header_row == 0 {
            problems
                .push("column_mapping is empty and there is no header row to name columns".into());
        }
        if !self.column_mapping.is_empty() && self.column_mapping.column(&self.key_field).is_none()
        {
            problems.push(format!(
                "key_field {:?} is not in column_mapping",
                self.key_field
            ));
        }
        if let Some(headers) = &self.expected_headers {
            for letters in headers.keys() {
                if column_index(letters).is_err() {
                    problems.push(format!("expected_headers: {letters:?} is not a column"));
                }
            }
        }
        if let Some(wb) = &self.write_back {
            if wb.columns.is_empty() {
                problems.push("write_back.columns is empty".into());
            }
            if wb.max_rows_per_request == 0 || wb.max_cells_per_request == 0 {
                problems.push("write_back limits must be at least 1".into());
            }
            for (i, f) in wb.columns.iter() {
                if let Some(j) = self.column_mapping.column(f) {
                    if j != i {
                        problems.push(format!(
                            "write_back column {} for {f:?} differs from column_mapping ({})",
                            column_letters(i),
                            column_letters(j)
                        ));
                    }
                } else if let Some(other) = self.column_mapping.field(i) {
                    problems.push(format!(
                        "write_back column {} is mapped to {other:?} for reading",
                        column_letters(i)
                    ));
                }
                if f == self.key_field {
                    problems.push(format!("write_back must not write the key field {f:?}"));
                }
            }
        }
        if let Some(url) = &self.base_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            problems.push(format!("base_url {url:?} is not an http(s) URL"));
        }
        if problems.is_empty() {
            Ok(self)
        } else {
            Err(SheetsError::ConfigInvalid(problems.join("; ")))
        }
    }

    /// The OAuth scopes to ask for (see [`SheetsConfig::scopes`]).
    pub fn oauth_scopes(&self) -> Vec<String> {
        if let Some(s) = &self.scopes {
            return s.clone();
        }
        READ_ONLY_SCOPES
            .iter()
            .map(|s| {
                if self.write_back.is_some() && s.ends_with("/spreadsheets.readonly") {
                    READ_WRITE_SCOPE.to_owned()
                } else {
                    (*s).to_owned()
                }
            })
            .collect()
    }

    /// The API root in use.
    pub fn api_root(&self) -> &str {
        self.base_url
            .as_deref()
            .unwrap_or(DEFAULT_BASE_URL)
            .trim_end_matches('/')
    }

    /// The type cells of `field` are read as: the configured one, else the
    /// seed 000 booking schema's (dates, `budget` as `decimal(2)`, counts as
    /// ints, ids and names as text), else [`ColumnType::Auto`].
    pub fn column_type(&self, field: &str) -> ColumnType {
        if let Some(t) = self.column_types.get(field) {
            return *t;
        }
        default_column_type(field)
    }
}

/// Seed 000's booking schema (and write-back fields) as column types.
pub fn default_column_type(field: &str) -> ColumnType {
    match field {
        "booking_id" | "client_id" | "client_name" | "campaign_name" | "campaign_id"
        | "currency" | "media_type" | "dsp" | "dsp_platform" | "campaign_status"
        | "pacing_status" => ColumnType::Text,
        "start_date" | "end_date" => ColumnType::Date,
        "created_at" | "updated_at" | "synced_at" => ColumnType::DateTime,
        "budget" | "actual_spend" => ColumnType::Decimal { scale: Some(2) },
        "margin_target" | "pacing_percent" | "pacing_rate" => ColumnType::Decimal { scale: None },
        "impressions_booked" | "clicks_booked" | "conversions_booked" => ColumnType::Int,
        _ => ColumnType::Auto,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = r#"
sheet:
  spreadsheet_id: "1BxiM..."
  sheet_name: "Bookings"
  header_row: 1
  data_start_row: 2

  column_mapping:
    A: "booking_id"
    B: "client_name"
    C: "campaign_name"
    D: "start_date"
    E: "end_date"
    F: "budget"
    G: "impressions_booked"
    H: "media_type"
    I: "dsp"
"#;

    #[test]
    fn seed_000_sheet_block_loads() {
        let cfg = SheetsConfig::from_yaml(SEED).unwrap();
        assert_eq!(cfg.spreadsheet_id.as_str(), "1BxiM...");
        assert_eq!(cfg.sheet_name, "Bookings");
        assert_eq!(cfg.column_mapping.len(), 9);
        assert_eq!(cfg.column_mapping.field(8), Some("dsp"));
        assert_eq!(
            cfg.rate_limit,
            RateLimit::new(100, Duration::from_secs(100))
        );
        assert_eq!(cfg.oauth_scopes(), READ_ONLY_SCOPES);
        assert_eq!(
            cfg.column_type("budget"),
            ColumnType::Decimal { scale: Some(2) }
        );
        assert_eq!(cfg.column_type("start_date"), ColumnType::Date);
        assert_eq!(cfg.column_type("custom"), ColumnType::Auto);
        assert_eq!(cfg.api_root(), DEFAULT_BASE_URL);
    }

    #[test]
    fn write_back_switches_to_read_write_scope() {
        let cfg = SheetsConfig::from_yaml(&format!(
            "{SEED}  write_back:\n    columns: {{J: actual_spend, AA: campaign_status}}\n    append_new_rows: true\n"
        ))
        .unwrap();
        let wb = cfg.write_back.as_ref().unwrap();
        assert_eq!(wb.columns.column("campaign_status"), Some(26));
        assert!(wb.append_new_rows);
        assert_eq!(wb.max_rows_per_request, 500);
        assert_eq!(
            cfg.oauth_scopes(),
            vec![READ_WRITE_SCOPE.to_owned(), READ_ONLY_SCOPES[1].to_owned()]
        );
    }

    #[test]
    fn rate_limit_forms() {
        let p = |y: &str| serde_yaml::from_str::<RateLimit>(y).unwrap();
        assert_eq!(p("100"), RateLimit::new(100, Duration::from_secs(100)));
        assert_eq!(p("\"100 per 100 seconds\""), RateLimit::default());
        assert_eq!(
            p("60 per minute"),
            RateLimit::new(60, Duration::from_secs(60))
        );
        assert_eq!(p("5 per second"), RateLimit::new(5, Duration::from_secs(1)));
        assert_eq!(
            p("{requests: 300, per_seconds: 60}"),
            RateLimit::new(300, Duration::from_secs(60))
        );
        assert!(serde_yaml::from_str::<RateLimit>("\"lots\"").is_err());
        let cfg = SheetsConfig::from_yaml(&format!("{SEED}  rate_limit: 60 per minute\n")).unwrap();
        assert_eq!(cfg.rate_limit.per, Duration::from_secs(60));
    }

    #[test]
    fn build_reports_every_problem() {
        let err = SheetsConfig::builder("", "")
            .rows(3, 2)
            .page_size(0)
            .column("A", "name")
            .unwrap()
            .write_back(WriteBackColumns::new(
                ColumnMapping::new([("A", "spend")]).unwrap(),
            ))
            .build()
            .unwrap_err()
            .to_string();
        for needle in [
            "spreadsheet_id",
            "sheet_name",
            "data_start_row",
            "page_size",
            "key_field",
            "write_back column A",
        ] {
            assert!(err.contains(needle), "{needle} missing from {err}");
        }
        assert!(SheetsConfig::from_yaml("spreadsheet_id: x\nsheet_name: y\nbogus: 1\n").is_err());
        assert!(SheetsConfig::builder("x", "y").column("A1", "f").is_err());
    }
}
