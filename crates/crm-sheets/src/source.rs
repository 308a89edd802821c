//! [`SheetsConnector`] and its [`Source`] implementation.
//!
//! A read:
//!
//! 1. `spreadsheets.get` (sheet properties only) finds the tab: by the
//!    configured `sheet_id`, else the `sheetId` remembered in the cursor,
//!    else by title. A tab renamed since the last run is found by its id and
//!    read under its new title.
//! 2. One `values.batchGet` per page of `page_size` rows, with
//!    `valueRenderOption=UNFORMATTED_VALUE` and
//!    `dateTimeRenderOption=SERIAL_NUMBER`; the first also fetches the header
//!    row, which is checked (see [`crate::schema`]) before any row is used.
//! 3. Rows become records ([`crate::rows`]); blank rows are skipped, reading
//!    goes on to the end of the grid. The last page is the one that reaches
//!    the grid's last row (`gridProperties.rowCount` from step 1). A page
//!    that comes back short is no sign of the end: Google leaves out empty
//!    trailing rows of a range, so a blank row at the bottom of a page (or a
//!    whole blank page) may have rows below it. Only for a sheet whose grid
//!    size is unknown does an entirely empty page end the read.
//! 4. At the grid's end the grid size is read again (`spreadsheets.get`):
//!    rows inserted during the read pushed rows below the size read in step
//!    1, and those rows are read too before the read ends.
//! 5. With a cursor, only new and changed rows are emitted, and the last page
//!    carries the deletes ([`crate::incremental`]).
//!
//! The cursor after each page is valid: a run stopped between pages resumes
//! without losing changes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use crm_core::mapping::{ColumnMapping, column_index, column_letters};
use crm_core::{
    Capabilities, Change, Connector, Cursor, Error, ErrorKind, FieldSchema, FieldType,
    ObjectSchema, Page, ReadRequest, Result, Source,
};
use futures_core::stream::BoxStream;
use futures_util::StreamExt;

use crate::a1::{A1Range, quote_sheet};
use crate::auth::GoogleCredentials;
use crate::cell::{Cell, ColumnType};
use crate::client::{ClientOptions, SheetsClient};
use crate::config::{MAX_PAGE_SIZE, SheetId, SheetsConfig};
use crate::error::SheetsError;
use crate::incremental::{ChangeTracker, SheetCursor};
use crate::mapping::{effective_columns, layout};
use crate::rows::{RowLayout, RowOutcome};
use crate::schema::check_headers;
use crate::wire::{DateTimeRenderOption, SheetProperties, ValueRenderOption};

/// The connector kind.
pub const KIND: &str = "sheets";

/// The tab a read or write works on, as found by `spreadsheets.get`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedSheet {
    /// The stable id.
    pub sheet_id: SheetId,
    /// The current title.
    pub title: String,
    /// Rows in the grid.
    pub row_count: u32,
    /// Columns in the grid.
    pub column_count: u32,
    /// Cells of every sheet of the spreadsheet together.
    pub spreadsheet_cells: u64,
}

/// A Google Sheets spreadsheet tab as a booking source and write-back target.
#[derive(Clone, Debug)]
pub struct SheetsConnector {
    pub(crate) config: Arc<SheetsConfig>,
    pub(crate) client: SheetsClient,
    pub(crate) resolved: Arc<Mutex<Option<ResolvedSheet>>>,
}

impl SheetsConnector {
    /// A connector for `config` with `credentials`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for an invalid config or credentials.
    pub fn new(config: SheetsConfig, credentials: &GoogleCredentials) -> Result<Self> {
        Self::with_options(config, credentials, ClientOptions::default())
    }

    /// Like [`SheetsConnector::new`] with client options (a root
    /// certificate, a retry policy, shared metrics).
    ///
    /// # Errors
    /// As [`SheetsConnector::new`].
    pub fn with_options(
        config: SheetsConfig,
        credentials: &GoogleCredentials,
        options: ClientOptions,
    ) -> Result<Self> {
        let config = config.build()?;
        let client = SheetsClient::new(&config, credentials, options)?;
        Ok(SheetsConnector {
            config: Arc::new(config),
            client,
            resolved: Arc::new(Mutex::new(None)),
        })
    }

    /// The config.
    pub fn config(&self) -> &SheetsConfig {
        &self.config
    }

    /// The API client.
    pub fn client(&self) -> &SheetsClient {
        &self.client
    }

    /// Finds the tab (see the [module docs](self)) with `spreadsheets.get`
    /// and remembers it for writes.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when no tab has the id or title; the client's
    /// errors otherwise.
    pub async fn resolve_sheet(&self, remembered: Option<SheetId>) -> Result<ResolvedSheet> {
        let ss = self.client.get_spreadsheet().await?;
        let props: Vec<&SheetProperties> = ss.sheets.iter().map(|s| &s.properties).collect();
        let by_id = |id: SheetId| props.iter().find(|p| p.sheet_id == id.0).copied();
        let found = self
            .config
            .sheet_id
            .and_then(by_id)
            .or_else(|| {
                props
                    .iter()
                    .find(|p| p.title == self.config.sheet_name)
                    .copied()
            })
            .or_else(|| remembered.and_then(by_id));
        let Some(p) = found else {
            return Err(SheetsError::SheetNotFound {
                title: self.config.sheet_name.clone(),
                sheet_id: self.config.sheet_id.or(remembered).map(|s| s.0),
            }
            .into());
        };
        if p.title != self.config.sheet_name {
            tracing::warn!(
                configured = %self.config.sheet_name,
                current = %p.title,
                sheet_id = p.sheet_id,
                "sheet found by sheetId under a new title"
            );
        }
        let grid = |p: &SheetProperties| {
            p.grid_properties
                .as_ref()
                .map_or((0, 0), |g| (g.row_count.max(0), g.column_count.max(0)))
        };
        let (rows, cols) = grid(p);
        let spreadsheet_cells = props
            .iter()
            .map(|p| {
                let (r, c) = grid(p);
                (r as u64).saturating_mul(c as u64)
            })
            .sum();
        let resolved = ResolvedSheet {
            sheet_id: SheetId(p.sheet_id),
            title: p.title.clone(),
            row_count: u32::try_from(rows).unwrap_or(u32::MAX),
            column_count: u32::try_from(cols).unwrap_or(u32::MAX),
            spreadsheet_cells,
        };
        if let Ok(mut slot) = self.resolved.lock() {
            *slot = Some(resolved.clone());
        }
        Ok(resolved)
    }

    pub(crate) fn last_resolved(&self) -> Option<ResolvedSheet> {
        self.resolved.lock().ok().and_then(|s| s.clone())
    }

    fn check_object(&self, object: &str) -> Result<()> {
        let ok = object.is_empty()
            || object == self.config.sheet_name
            || object == "bookings"
            || object == "booking";
        if ok {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "object {object:?}: this connector reads sheet {:?} (object \"bookings\")",
                    self.config.sheet_name
                ),
            ))
        }
    }

    fn expected_headers(
        &self,
        prev: &SheetCursor,
        columns: &ColumnMapping,
    ) -> Vec<(usize, String)> {
        if let Some(h) = &self.config.expected_headers {
            return h
                .iter()
                .filter_map(|(l, n)| column_index(l).ok().map(|i| (i, n.clone())))
                .collect();
        }
        prev.headers
            .iter()
            .filter_map(|(l, n)| column_index(l).ok().map(|i| (i, n.clone())))
            .filter(|(i, _)| columns.field(*i).is_some() || columns.is_empty())
            .collect()
    }
}

struct ReadState {
    conn: SheetsConnector,
    page_size: u32,
    fields: Vec<String>,
    phase: Phase,
}

enum Phase {
    Start(Option<SheetCursor>),
    Reading(Box<Reading>),
    Done,
}

struct Reading {
    sheet: ResolvedSheet,
    layout: RowLayout,
    last_col: usize,
    next_row: u32,
    headers: BTreeMap<String, String>,
    tracker: ChangeTracker,
    /// Times the grid size was read again at the end of this read.
    regrids: u32,
}

/// At most this many looks at the grid size at the end of a read; a sheet
/// still growing after them is read to its latest size and finished.
const MAX_REGRIDS: u32 = 3;

impl ReadState {
    async fn next_page(&mut self) -> Result<Option<Page>> {
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::Done => Ok(None),
            Phase::Start(prev) => self.first_page(prev).await,
            Phase::Reading(r) => self.page(r, None).await,
        }
    }

    async fn first_page(&mut self, prev: Option<SheetCursor>) -> Result<Option<Page>> {
        let cfg = Arc::clone(&self.conn.config);
        let prev_state = prev.clone().unwrap_or_default();
        let sheet = self.conn.resolve_sheet(prev_state.sheet_id).await?;
        let header_cells = if cfg.header_row > 0 {
            Some(A1Range {
                sheet: Some(sheet.title.clone()),
                start: Some(crate::a1::CellRef {
                    col: None,
                    row: Some(cfg.header_row),
                }),
                end: Some(crate::a1::CellRef {
                    col: None,
                    row: Some(cfg.header_row),
                }),
            })
        } else {
            None
        };
        let columns_guess = &cfg.column_mapping;
        let last_col = if columns_guess.is_empty() {
            (sheet.column_count as usize).max(1) - 1
        } else {
            columns_guess.width().max(1) - 1
        };
        let reading = Reading {
            layout: RowLayout::new(Vec::new(), cfg.key_field.clone()),
            last_col,
            next_row: cfg.data_start_row,
            headers: BTreeMap::new(),
            tracker: ChangeTracker::new(prev),
            sheet,
            regrids: 0,
        };
        let _ = prev_state;
        self.page(Box::new(reading), header_cells).await
    }

    async fn page(&mut self, mut r: Box<Reading>, header: Option<A1Range>) -> Result<Option<Page>> {
        let cfg = Arc::clone(&self.conn.config);
        let first = r.next_row;
        let last = first.saturating_add(self.page_size - 1);
        let beyond_grid = r.sheet.row_count > 0 && first > r.sheet.row_count;
        let mut rows: Vec<Vec<Cell>> = Vec::new();
        let mut header_row: Option<Vec<Cell>> = None;
        if !beyond_grid || header.is_some() {
            let data = A1Range::rows(r.sheet.title.clone(), 0, r.last_col, first, Some(last));
            let mut ranges = Vec::new();
            if let Some(h) = &header {
                ranges.push(h.to_string());
            }
            ranges.push(data.to_string());
            let resp = self
                .conn
                .client
                .batch_get(
                    &ranges,
                    ValueRenderOption::UnformattedValue,
                    DateTimeRenderOption::SerialNumber,
                )
                .await?;
            let mut vrs = resp.value_ranges.into_iter();
            if header.is_some() {
                header_row = Some(
                    vrs.next()
                        .and_then(|v| v.values.into_iter().next())
                        .unwrap_or_default(),
                );
            }
            rows = vrs.next().map(|v| v.values).unwrap_or_default();
        }
        if let Some(hcells) = &header_row {
            self.start_layout(&mut r, hcells, &cfg)?;
        } else if header.is_none() && r.layout.columns().is_empty() {
            // No header row configured: the mapping must name the columns.
            self.start_layout(&mut r, &[], &cfg)?;
        }
        let got = rows.len();
        let mut changes = Vec::new();
        for (i, cells) in rows.iter().enumerate() {
            let row_number = first + i as u32;
            let RowOutcome::Row(row) = r.layout.read_row(row_number, cells) else {
                continue;
            };
            let Some(mut change) = r.tracker.observe(row) else {
                continue;
            };
            if !self.fields.is_empty()
                && let Change::Upsert(rec) = &mut change
            {
                let keep = &self.fields;
                rec.fields
                    .retain(|k, _| keep.iter().any(|f| f == k) || k.starts_with("_sheet_"));
            }
            changes.push(change);
        }
        r.next_row = last.saturating_add(1);
        // The end is the grid's last row. A short page is not: Google omits
        // empty trailing rows, so a page whose last rows are blank comes back
        // short with data still below it. Only when the grid size is unknown
        // does an entirely empty page stand for the end.
        let at_end = if r.sheet.row_count > 0 {
            beyond_grid || r.next_row > r.sheet.row_count
        } else {
            got == 0 || last == u32::MAX
        };
        // Rows inserted above the read position during the read push rows
        // past the grid size read at the start: before the deletes are
        // computed, the grid size is read again, and rows it gained are
        // read too (one `spreadsheets.get` per read), so no row is reported
        // deleted that only moved down.
        if at_end && r.sheet.row_count > 0 && r.regrids < MAX_REGRIDS {
            let now = self.conn.resolve_sheet(Some(r.sheet.sheet_id)).await?;
            if now.sheet_id == r.sheet.sheet_id && now.row_count > r.sheet.row_count {
                r.regrids += 1;
                r.next_row = r.next_row.min(r.sheet.row_count.saturating_add(1));
                r.sheet.row_count = now.row_count;
                let state = r.tracker.checkpoint(Some(r.sheet.sheet_id), &r.headers);
                self.phase = Phase::Reading(r);
                return Ok(Some(Page {
                    changes,
                    cursor: Cursor::from_state(&state)?,
                }));
            }
            r.regrids = MAX_REGRIDS;
        }
        if at_end {
            let Reading {
                sheet,
                headers,
                tracker,
                ..
            } = *r;
            let (deletes, state) = tracker.finish(Some(sheet.sheet_id), headers);
            changes.extend(deletes);
            self.phase = Phase::Done;
            return Ok(Some(Page {
                changes,
                cursor: Cursor::from_state(&state)?,
            }));
        }
        let state = r.tracker.checkpoint(Some(r.sheet.sheet_id), &r.headers);
        self.phase = Phase::Reading(r);
        Ok(Some(Page {
            changes,
            cursor: Cursor::from_state(&state)?,
        }))
    }

    fn start_layout(&self, r: &mut Reading, header: &[Cell], cfg: &SheetsConfig) -> Result<()> {
        let columns = effective_columns(cfg, header);
        if columns.is_empty() {
            return Err(SheetsError::ConfigInvalid(format!(
                "sheet {:?} has no header row and no column_mapping",
                r.sheet.title
            ))
            .into());
        }
        if cfg.header_row > 0 {
            let expected = self.conn.expected_headers(r.tracker.previous(), &columns);
            check_headers(&r.sheet.title, &expected, header)?;
            r.headers = columns
                .iter()
                .map(|(i, _)| {
                    (
                        column_letters(i),
                        header.get(i).map(Cell::to_string).unwrap_or_default(),
                    )
                })
                .collect();
        }
        r.last_col = columns.width().max(1) - 1;
        r.layout = layout(cfg, &columns);
        Ok(())
    }
}

#[async_trait]
impl Connector for SheetsConnector {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        let c = Capabilities::none().incremental().deletes().describe();
        if self.config.write_back.is_some() {
            c.upsert()
        } else {
            c
        }
    }

    async fn check(&self) -> Result<()> {
        self.resolve_sheet(None).await.map(|_| ())
    }

    async fn describe(&self, object: &str) -> Result<ObjectSchema> {
        self.check_object(object)?;
        let sheet = self.resolve_sheet(None).await?;
        let header: Vec<Cell> = if self.config.header_row > 0 {
            let range = format!(
                "{}!{}:{}",
                quote_sheet(&sheet.title),
                self.config.header_row,
                self.config.header_row
            );
            self.client
                .get_values(
                    &range,
                    ValueRenderOption::FormattedValue,
                    DateTimeRenderOption::FormattedString,
                )
                .await?
                .values
                .into_iter()
                .next()
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let columns = effective_columns(&self.config, &header);
        let wb = self.config.write_back.as_ref();
        let mut schema =
            ObjectSchema::new(sheet.title.clone()).primary_key([self.config.key_field.clone()]);
        let all = columns.iter().map(|(i, f)| (i, f.to_owned())).chain(
            wb.into_iter()
                .flat_map(|w| w.columns.iter().map(|(i, f)| (i, f.to_owned()))),
        );
        let mut seen = Vec::new();
        for (i, f) in all {
            if seen.contains(&f) {
                continue;
            }
            seen.push(f.clone());
            let ty = self.config.column_type(&f);
            let ft = match ty {
                ColumnType::Auto | ColumnType::Text => FieldType::Text,
                ColumnType::Int => FieldType::Int,
                ColumnType::Decimal { .. } => FieldType::Decimal,
                ColumnType::Date => FieldType::Date,
                ColumnType::DateTime => FieldType::DateTime,
                ColumnType::Bool => FieldType::Bool,
            };
            let label = header
                .get(i)
                .map(Cell::to_string)
                .filter(|h| !h.trim().is_empty())
                .unwrap_or_else(|| column_letters(i));
            let mut fs = FieldSchema::new(f.clone(), ft).label(label);
            if let ColumnType::Decimal { scale: Some(s) } = ty {
                fs = fs.scale(s);
            }
            if f == self.config.key_field {
                fs = fs.required().unique().external_id();
            }
            if wb.is_none_or(|w| w.columns.column(&f).is_none()) {
                fs = fs.read_only();
            }
            schema = schema.field(fs);
        }
        Ok(schema)
    }
}

impl Source for SheetsConnector {
    fn read<'a>(&'a self, req: ReadRequest) -> BoxStream<'a, Result<Page>> {
        let page_size = req
            .page_size
            .map_or(self.config.page_size, |n| {
                u32::try_from(n).unwrap_or(MAX_PAGE_SIZE)
            })
            .clamp(1, MAX_PAGE_SIZE);
        let start = match (
            self.check_object(&req.object),
            req.since
                .as_ref()
                .map(Cursor::to_state::<SheetCursor>)
                .transpose(),
        ) {
            (Err(e), _) | (_, Err(e)) => {
                return futures_util::stream::once(async move { Err(e) }).boxed();
            }
            (Ok(()), Ok(prev)) => prev,
        };
        let state = ReadState {
            conn: self.clone(),
            page_size,
            fields: req.fields,
            phase: Phase::Start(start),
        };
        futures_util::stream::unfold(state, |mut st| async move {
            match st.next_page().await {
                Ok(Some(p)) => Some((Ok(p), st)),
                Ok(None) => None,
                Err(e) => {
                    st.phase = Phase::Done;
                    let e = if e.operation().is_none() {
                        e.with_operation("sheets.read")
                    } else {
                        e
                    };
                    Some((Err(e), st))
                }
            }
        })
        .boxed()
    }
}
