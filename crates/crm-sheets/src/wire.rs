//! Serde types of the Sheets API v4 JSON this crate sends and receives.
//!
//! Field names are the API's (camelCase), as in Google's discovery document
//! (`schemas.ValueRange`, `schemas.BatchUpdateValuesRequest`, ...). Unknown
//! response fields are ignored, so new API fields never break a read.

use serde::{Deserialize, Serialize};

use crate::cell::Cell;

/// `ValueRange`: a range and its values, row-major unless said otherwise.
/// For output, empty trailing rows and columns are left out.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValueRange {
    /// The range in A1 notation (for output, the whole requested range).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<String>,
    /// `ROWS` or `COLUMNS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub major_dimension: Option<Dimension>,
    /// The cells; a missing field means no values.
    #[serde(default)]
    pub values: Vec<Vec<Cell>>,
}

/// `majorDimension`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Dimension {
    /// Unspecified.
    DimensionUnspecified,
    /// Row-major.
    Rows,
    /// Column-major.
    Columns,
}

/// `valueRenderOption`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ValueRenderOption {
    /// Values as shown (formatted, locale-dependent).
    FormattedValue,
    /// Values as stored: numbers as JSON numbers, dates as serials.
    UnformattedValue,
    /// Formulas.
    Formula,
}

impl ValueRenderOption {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ValueRenderOption::FormattedValue => "FORMATTED_VALUE",
            ValueRenderOption::UnformattedValue => "UNFORMATTED_VALUE",
            ValueRenderOption::Formula => "FORMULA",
        }
    }
}

/// `dateTimeRenderOption`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DateTimeRenderOption {
    /// Days since 1899-12-30, time as a fraction.
    SerialNumber,
    /// As formatted in the spreadsheet's locale.
    FormattedString,
}

impl DateTimeRenderOption {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            DateTimeRenderOption::SerialNumber => "SERIAL_NUMBER",
            DateTimeRenderOption::FormattedString => "FORMATTED_STRING",
        }
    }
}

/// `valueInputOption`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ValueInputOption {
    /// Unspecified (rejected by the API).
    InputValueOptionUnspecified,
    /// Stored as given: `"0003"` stays text, `"=1+1"` is not a formula.
    Raw,
    /// Parsed as if typed into the UI.
    UserEntered,
}

impl ValueInputOption {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ValueInputOption::InputValueOptionUnspecified => "INPUT_VALUE_OPTION_UNSPECIFIED",
            ValueInputOption::Raw => "RAW",
            ValueInputOption::UserEntered => "USER_ENTERED",
        }
    }
}

/// `insertDataOption` of `values.append`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InsertDataOption {
    /// Write into the rows after the table.
    Overwrite,
    /// Insert new rows for the data.
    InsertRows,
}

impl InsertDataOption {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            InsertDataOption::Overwrite => "OVERWRITE",
            InsertDataOption::InsertRows => "INSERT_ROWS",
        }
    }
}

/// `BatchGetValuesResponse`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchGetValuesResponse {
    /// The spreadsheet.
    #[serde(default)]
    pub spreadsheet_id: String,
    /// One value range per requested range, in request order.
    #[serde(default)]
    pub value_ranges: Vec<ValueRange>,
}

/// `BatchUpdateValuesRequest`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchUpdateValuesRequest {
    /// How input is interpreted (this crate writes `RAW`).
    pub value_input_option: ValueInputOption,
    /// The ranges and values.
    pub data: Vec<ValueRange>,
    /// Whether to echo the written values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_values_in_response: Option<bool>,
}

/// `UpdateValuesResponse`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateValuesResponse {
    /// The spreadsheet.
    #[serde(default)]
    pub spreadsheet_id: String,
    /// The range written.
    #[serde(default)]
    pub updated_range: Option<String>,
    /// Rows with at least one cell written.
    #[serde(default)]
    pub updated_rows: Option<i64>,
    /// Columns with at least one cell written.
    #[serde(default)]
    pub updated_columns: Option<i64>,
    /// Cells written.
    #[serde(default)]
    pub updated_cells: Option<i64>,
    /// The written values, when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_data: Option<ValueRange>,
}

/// `BatchUpdateValuesResponse`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchUpdateValuesResponse {
    /// The spreadsheet.
    #[serde(default)]
    pub spreadsheet_id: String,
    /// Rows with at least one cell written.
    #[serde(default)]
    pub total_updated_rows: Option<i64>,
    /// Columns with at least one cell written.
    #[serde(default)]
    pub total_updated_columns: Option<i64>,
    /// Cells written.
    #[serde(default)]
    pub total_updated_cells: Option<i64>,
    /// Sheets with at least one cell written.
    #[serde(default)]
    pub total_updated_sheets: Option<i64>,
    /// One response per range.
    #[serde(default)]
    pub responses: Vec<UpdateValuesResponse>,
}

/// `AppendValuesResponse`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppendValuesResponse {
    /// The spreadsheet.
    #[serde(default)]
    pub spreadsheet_id: String,
    /// The table the values were appended to (before the append).
    #[serde(default)]
    pub table_range: Option<String>,
    /// What was written.
    #[serde(default)]
    pub updates: Option<UpdateValuesResponse>,
}

/// `Spreadsheet` (the parts this crate reads).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spreadsheet {
    /// The id.
    #[serde(default)]
    pub spreadsheet_id: String,
    /// Title, locale, time zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<SpreadsheetProperties>,
    /// The sheets (tabs).
    #[serde(default)]
    pub sheets: Vec<Sheet>,
}

/// `SpreadsheetProperties` (the parts this crate reads).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpreadsheetProperties {
    /// The title.
    #[serde(default)]
    pub title: String,
    /// The locale, e.g. `en_US`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    /// The time zone, e.g. `America/New_York`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
}

/// `Sheet` (its properties only).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sheet {
    /// The properties.
    #[serde(default)]
    pub properties: SheetProperties,
}

/// `SheetProperties`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SheetProperties {
    /// The stable id of the sheet.
    #[serde(default)]
    pub sheet_id: i64,
    /// The title (tab name).
    #[serde(default)]
    pub title: String,
    /// The position among the tabs.
    #[serde(default)]
    pub index: i64,
    /// `GRID`, `OBJECT`, `DATA_SOURCE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sheet_type: Option<String>,
    /// Whether the tab is hidden.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden: Option<bool>,
    /// Grid size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grid_properties: Option<GridProperties>,
}

/// `GridProperties`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GridProperties {
    /// Rows in the grid.
    #[serde(default)]
    pub row_count: i64,
    /// Columns in the grid.
    #[serde(default)]
    pub column_count: i64,
    /// Frozen rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frozen_row_count: Option<i64>,
}

/// Google's error body: `{"error": {"code": 429, "message": "...",
/// "status": "RESOURCE_EXHAUSTED"}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorStatus,
}

/// The `error` object of [`ErrorBody`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorStatus {
    /// The HTTP status.
    pub code: u16,
    /// A message for developers.
    pub message: String,
    /// The canonical code name (`INVALID_ARGUMENT`, `PERMISSION_DENIED`,
    /// `NOT_FOUND`, `RESOURCE_EXHAUSTED`, `UNAUTHENTICATED`, ...).
    pub status: String,
    /// Typed details (`google.rpc.ErrorInfo`, ...), when given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<serde_json::Value>,
}

impl ErrorBody {
    /// An error body of `code`, canonical `status` and `message`.
    pub fn new(code: u16, status: impl Into<String>, message: impl Into<String>) -> Self {
        ErrorBody {
            error: ErrorStatus {
                code,
                message: message.into(),
                status: status.into(),
                details: Vec::new(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_get_response_parses_with_exact_numbers() {
        let body = r#"{"spreadsheetId":"s1","valueRanges":[
            {"range":"'Bookings'!A1:I1","majorDimension":"ROWS","values":[["Booking ID","Budget"]]},
            {"range":"'Bookings'!A2:I1001","majorDimension":"ROWS","values":[["BK-1",1234.1],[],["BK-3"]]},
            {"range":"'Bookings'!A1002:I2001","majorDimension":"ROWS"}]}"#;
        let r: BatchGetValuesResponse = serde_json::from_str(body).unwrap();
        assert_eq!(r.value_ranges.len(), 3);
        assert_eq!(
            r.value_ranges[1].values[0][1],
            Cell::Number("1234.1".into())
        );
        assert!(r.value_ranges[1].values[1].is_empty());
        assert!(r.value_ranges[2].values.is_empty());
        assert_eq!(r.value_ranges[0].major_dimension, Some(Dimension::Rows));
    }

    #[test]
    fn batch_update_request_uses_api_names() {
        let req = BatchUpdateValuesRequest {
            value_input_option: ValueInputOption::Raw,
            data: vec![ValueRange {
                range: Some("'Bookings'!J5:K5".into()),
                major_dimension: Some(Dimension::Rows),
                values: vec![vec![
                    Cell::Number("1234.10".into()),
                    Cell::Text("0003".into()),
                ]],
            }],
            include_values_in_response: None,
        };
        let json = serde_json::to_string(&req).unwrap();
        assert_eq!(
            json,
            r#"{"valueInputOption":"RAW","data":[{"range":"'Bookings'!J5:K5","majorDimension":"ROWS","values":[[1234.10,"0003"]]}]}"#
        );
    }

    #[test]
    fn error_and_spreadsheet_shapes() {
        let e: ErrorBody = serde_json::from_str(
            r#"{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo"}]}}"#,
        )
        .unwrap();
        assert_eq!(e.error.status, "RESOURCE_EXHAUSTED");
        let s: Spreadsheet = serde_json::from_str(
            r#"{"spreadsheetId":"s","properties":{"title":"T","locale":"en_US"},"sheets":[{"properties":{"sheetId":0,"title":"Bookings","index":0,"sheetType":"GRID","gridProperties":{"rowCount":1000,"columnCount":26}}}]}"#,
        )
        .unwrap();
        assert_eq!(s.sheets[0].properties.title, "Bookings");
        assert_eq!(
            s.sheets[0]
                .properties
                .grid_properties
                .as_ref()
                .unwrap()
                .row_count,
            1000
        );
        let a: AppendValuesResponse = serde_json::from_str(
            r#"{"spreadsheetId":"s","tableRange":"Bookings!A1:I10","updates":{"spreadsheetId":"s","updatedRange":"Bookings!A11:I12","updatedRows":2,"updatedColumns":9,"updatedCells":18}}"#,
        )
        .unwrap();
        assert_eq!(a.updates.unwrap().updated_rows, Some(2));
    }
}
