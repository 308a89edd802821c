//! [`SheetsClient`]: typed calls of the Sheets API v4 on `crm-http`.
//!
//! Paths and parameter names are those of Google's discovery document
//! (`resources.spreadsheets.methods.get`,
//! `resources.spreadsheets.resources.values.methods.{get,batchGet,update,batchUpdate,append}`);
//! a test checks them against it. Auth, rate limiting, retries (honouring
//! `Retry-After`, backing off on 429 `RESOURCE_EXHAUSTED`), timeouts and
//! metrics are `crm-http`'s layers.

use std::sync::Arc;
use std::time::Duration;

use crm_core::{Error, ErrorKind, Result};
use crm_http::reqwest::Method;
use crm_http::reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use crm_http::{
    HttpClient, Metrics, RateLimitConfig, RequestOptions, ResponseClassifier, ResponseParts,
    RetryPolicy, Verdict, default_classify,
};
use serde::de::DeserializeOwned;
use url::Url;

use crate::auth::GoogleCredentials;
use crate::config::{SheetsConfig, SpreadsheetId};
use crate::wire::{
    AppendValuesResponse, BatchGetValuesResponse, BatchUpdateValuesRequest,
    BatchUpdateValuesResponse, DateTimeRenderOption, InsertDataOption, Spreadsheet,
    UpdateValuesResponse, ValueInputOption, ValueRange, ValueRenderOption,
};

/// The provider name in metrics and errors.
pub const PROVIDER: &str = "sheets";

/// The partial response asked of `spreadsheets.get`: ids, title and sheet
/// properties only, never grid data.
pub const SPREADSHEET_FIELDS: &str =
    "spreadsheetId,properties(title,locale,timeZone),sheets.properties";

/// Google's reading of its error responses.
///
/// Google APIs answer errors as `{"error": {"code", "message", "status"}}`
/// (Google Cloud "API design guide: errors"). The Sheets API signals quota
/// exhaustion with HTTP 429 and status `RESOURCE_EXHAUSTED` (Sheets API
/// "Usage limits": per-minute quotas, retry with exponential backoff); older
/// Google APIs used 403 with reason `rateLimitExceeded` /
/// `userRateLimitExceeded`, which is read the same way.
#[derive(Clone, Copy, Debug, Default)]
pub struct SheetsClassifier;

impl ResponseClassifier for SheetsClassifier {
    fn classify(&self, r: &ResponseParts<'_>) -> Verdict {
        if r.status.is_success() {
            return Verdict::Success;
        }
        let json = r.json();
        let status = json
            .as_ref()
            .and_then(|j| j["error"]["status"].as_str())
            .unwrap_or_default()
            .to_owned();
        let body = String::from_utf8_lossy(r.body);
        let rate_reason =
            body.contains("rateLimitExceeded") || body.contains("userRateLimitExceeded");
        if status == "RESOURCE_EXHAUSTED" || r.status.as_u16() == 429 || rate_reason {
            return Verdict::Failure(r.error(ErrorKind::RateLimited {
                retry_after: r.retry_after(),
            }));
        }
        if status == "UNAUTHENTICATED" || r.status.as_u16() == 401 {
            return Verdict::RefreshAuth(r.error(ErrorKind::Auth));
        }
        if status == "PERMISSION_DENIED" {
            return Verdict::Failure(r.error(ErrorKind::Auth));
        }
        // A range naming a sheet that does not exist: "Unable to parse range".
        if status == "INVALID_ARGUMENT" && body.contains("Unable to parse range") {
            return Verdict::Failure(r.error(ErrorKind::NotFound));
        }
        default_classify(r)
    }
}

/// Typed calls on one spreadsheet.
#[derive(Clone, Debug)]
pub struct SheetsClient {
    http: HttpClient,
    spreadsheet: SpreadsheetId,
    root: Url,
}

/// Options for building a [`SheetsClient`].
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ClientOptions {
    /// A PEM root certificate to trust (a simulator over HTTPS).
    pub root_certificate_pem: Option<Vec<u8>>,
    /// The retry policy (default: `crm-http`'s).
    pub retry: Option<RetryPolicy>,
    /// A shared metrics registry.
    pub metrics: Option<Arc<Metrics>>,
    /// Time limit per attempt.
    pub timeout: Option<Duration>,
}

impl SheetsClient {
    /// A client for `config`'s spreadsheet with `credentials`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for a bad base URL, token URI or key.
    pub fn new(
        config: &SheetsConfig,
        credentials: &GoogleCredentials,
        options: ClientOptions,
    ) -> Result<Self> {
        let root = Url::parse(&format!("{}/", config.api_root()))
            .map_err(|e| Error::invalid_input(format!("base_url is not a URL: {e}")))?;
        let rl = config.rate_limit;
        let mut b = HttpClient::builder(PROVIDER)
            .base_url(root.as_str())
            .auth(credentials.to_auth(&config.oauth_scopes())?)
            .rate_limit(RateLimitConfig::new(rl.requests, rl.per).burst(rl.requests.min(10)))
            .classifier(SheetsClassifier);
        if let Some(pem) = &options.root_certificate_pem {
            b = b.root_certificate_pem(pem);
        }
        if let Some(r) = options.retry {
            b = b.retry(r);
        }
        if let Some(m) = options.metrics {
            b = b.metrics(m);
        }
        if let Some(t) = options.timeout {
            b = b.timeout(t);
        }
        Ok(SheetsClient {
            http: b.build()?,
            spreadsheet: config.spreadsheet_id.clone(),
            root,
        })
    }

    /// The underlying HTTP client (metrics, rate limiter).
    pub fn http(&self) -> &HttpClient {
        &self.http
    }

    /// The spreadsheet.
    pub fn spreadsheet_id(&self) -> &SpreadsheetId {
        &self.spreadsheet
    }

    /// `v4/spreadsheets/{spreadsheetId}/` followed by `segments`, each
    /// percent-encoded as one path segment (an A1 range's quotes, spaces and
    /// `!` included).
    fn url(&self, segments: &[&str]) -> Result<Url> {
        let mut url = self.root.clone();
        {
            let mut p = url
                .path_segments_mut()
                .map_err(|_| Error::invalid_input("base_url cannot be a base"))?;
            p.pop_if_empty();
            p.push("v4")
                .push("spreadsheets")
                .push(self.spreadsheet.as_str());
            for s in segments {
                p.push(s);
            }
        }
        Ok(url)
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        options: RequestOptions,
    ) -> Result<T> {
        let mut req = self
            .http
            .request(method, url)
            .header(ACCEPT, HeaderValue::from_static("application/json"));
        if let Some(b) = body {
            req = req
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(b);
        }
        self.http.send(req, options).await?.json()
    }

    fn body<B: serde::Serialize>(b: &B) -> Result<Vec<u8>> {
        serde_json::to_vec(b)
            .map_err(|e| Error::invalid_input(format!("request body cannot be serialised: {e}")))
    }

    /// `spreadsheets.get`: the spreadsheet's properties and its sheets'
    /// properties (ids, titles, grid sizes), no cell data.
    ///
    /// # Errors
    /// As [`HttpClient::send`].
    ///
    /// # Cancel safety
    /// A read: cancelling is harmless.
    pub async fn get_spreadsheet(&self) -> Result<Spreadsheet> {
        let mut url = self.url(&[])?;
        url.query_pairs_mut()
            .append_pair("includeGridData", "false")
            .append_pair("fields", SPREADSHEET_FIELDS);
        self.call(
            Method::GET,
            url,
            None,
            RequestOptions::new("spreadsheets.get"),
        )
        .await
    }

    /// `spreadsheets.values.get` of one A1 range, row-major.
    ///
    /// # Errors
    /// As [`HttpClient::send`].
    ///
    /// # Cancel safety
    /// A read: cancelling is harmless.
    pub async fn get_values(
        &self,
        range: &str,
        render: ValueRenderOption,
        dates: DateTimeRenderOption,
    ) -> Result<ValueRange> {
        let mut url = self.url(&["values", range])?;
        url.query_pairs_mut()
            .append_pair("majorDimension", "ROWS")
            .append_pair("valueRenderOption", render.as_str())
            .append_pair("dateTimeRenderOption", dates.as_str());
        self.call(Method::GET, url, None, RequestOptions::new("values.get"))
            .await
    }

    /// `spreadsheets.values.batchGet` of several A1 ranges in one call,
    /// row-major; the answer has one value range per range, in order.
    ///
    /// # Errors
    /// As [`HttpClient::send`]; [`ErrorKind::SchemaMismatch`] when the answer
    /// has another number of ranges.
    ///
    /// # Cancel safety
    /// A read: cancelling is harmless.
    pub async fn batch_get(
        &self,
        ranges: &[String],
        render: ValueRenderOption,
        dates: DateTimeRenderOption,
    ) -> Result<BatchGetValuesResponse> {
        let mut url = self.url(&["values:batchGet"])?;
        {
            let mut q = url.query_pairs_mut();
            for r in ranges {
                q.append_pair("ranges", r);
            }
            q.append_pair("majorDimension", "ROWS")
                .append_pair("valueRenderOption", render.as_str())
                .append_pair("dateTimeRenderOption", dates.as_str());
        }
        let resp: BatchGetValuesResponse = self
            .call(
                Method::GET,
                url,
                None,
                RequestOptions::new("values.batchGet"),
            )
            .await?;
        if resp.value_ranges.len() != ranges.len() {
            return Err(Error::new(
                ErrorKind::SchemaMismatch,
                format!(
                    "values.batchGet answered {} ranges for {} asked",
                    resp.value_ranges.len(),
                    ranges.len()
                ),
            )
            .with_operation("values.batchGet"));
        }
        Ok(resp)
    }

    /// `spreadsheets.values.batchUpdate`. Setting values is idempotent, so
    /// the call is retried like a read.
    ///
    /// # Errors
    /// As [`HttpClient::send`].
    ///
    /// # Cancel safety
    /// The update is atomic on Google's side: either all of it or none was
    /// applied; sending it again is harmless.
    pub async fn batch_update(
        &self,
        request: &BatchUpdateValuesRequest,
    ) -> Result<BatchUpdateValuesResponse> {
        let url = self.url(&["values:batchUpdate"])?;
        self.call(
            Method::POST,
            url,
            Some(Self::body(request)?),
            RequestOptions::new("values.batchUpdate").idempotent(true),
        )
        .await
    }

    /// `spreadsheets.values.update` of one range with `RAW` input.
    ///
    /// # Errors
    /// As [`HttpClient::send`].
    ///
    /// # Cancel safety
    /// Idempotent: sending it again is harmless.
    pub async fn update_values(
        &self,
        range: &str,
        values: &ValueRange,
    ) -> Result<UpdateValuesResponse> {
        let mut url = self.url(&["values", range])?;
        url.query_pairs_mut()
            .append_pair("valueInputOption", ValueInputOption::Raw.as_str());
        self.call(
            Method::PUT,
            url,
            Some(Self::body(values)?),
            RequestOptions::new("values.update"),
        )
        .await
    }

    /// `spreadsheets.values.append` of rows after the table found in
    /// `range`, inserting rows, with `RAW` input.
    ///
    /// # Errors
    /// As [`HttpClient::send`].
    ///
    /// # Cancel safety
    /// Not idempotent: a call cancelled or failed after Google applied it
    /// appends the rows again when repeated. It is not retried after it may
    /// have been processed.
    pub async fn append_values(
        &self,
        range: &str,
        values: &ValueRange,
    ) -> Result<AppendValuesResponse> {
        let mut url = self.url(&["values", &format!("{range}:append")])?;
        url.query_pairs_mut()
            .append_pair("valueInputOption", ValueInputOption::Raw.as_str())
            .append_pair("insertDataOption", InsertDataOption::InsertRows.as_str());
        self.call(
            Method::POST,
            url,
            Some(Self::body(values)?),
            RequestOptions::new("values.append").idempotent(false),
        )
        .await
    }
}
