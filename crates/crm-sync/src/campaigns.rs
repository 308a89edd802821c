//! Loading the campaigns bookings are matched to.

use std::path::Path;

use crm_core::model::Campaign;
use crm_core::{Error, Record, Result, Value};

/// Reads campaigns from a CSV file with a header row.
///
/// Columns: `campaign_id` (or `id`), `name` (or `campaign_name`), and
/// optionally `advertiser_name`, `start_date`, `end_date` (`YYYY-MM-DD`),
/// `status`, `dsp_platform`, `budget`. Other columns are ignored. Blank cells
/// are missing values.
///
/// # Errors
/// [`crm_core::ErrorKind::InvalidInput`] naming the file and line for a
/// missing file, a missing required column, or a row that is not a valid
/// campaign (its fields and the reason).
pub fn from_csv(path: &Path) -> Result<Vec<Campaign>> {
    let shown = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|e| {
        Error::invalid_input(format!("cannot open the campaigns file {shown}: {e}"))
    })?;
    from_reader(file, &shown)
}

/// Reads campaigns from CSV text (see [`from_csv`]); `origin` names it in errors.
///
/// # Errors
/// As [`from_csv`].
pub fn from_reader(reader: impl std::io::Read, origin: &str) -> Result<Vec<Campaign>> {
    let mut csv = csv::ReaderBuilder::new().flexible(true).from_reader(reader);
    let headers: Vec<String> = csv
        .headers()
        .map_err(|e| Error::invalid_input(format!("{origin}: cannot read the header row: {e}")))?
        .iter()
        .map(|h| canonical_column(h.trim()).to_owned())
        .collect();
    for required in ["campaign_id", "name"] {
        if !headers.iter().any(|h| h == required) {
            return Err(Error::invalid_input(format!(
                "{origin}: the header row has no `{required}` column (found: {})",
                headers.join(", ")
            )));
        }
    }
    let mut out = Vec::new();
    for (n, row) in csv.records().enumerate() {
        let line = n + 2;
        let row = row.map_err(|e| Error::invalid_input(format!("{origin} line {line}: {e}")))?;
        let record: Record = headers
            .iter()
            .zip(row.iter())
            .filter(|(_, cell)| !cell.trim().is_empty())
            .map(|(h, cell)| (h.clone(), Value::Text(cell.trim().to_owned())))
            .collect();
        let campaign = Campaign::try_from(&record)
            .map_err(|e| Error::invalid_input(format!("{origin} line {line}: {e}")))?;
        out.push(campaign);
    }
    Ok(out)
}

fn canonical_column(header: &str) -> &str {
    match header {
        "id" => "campaign_id",
        "campaign_name" => "name",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_campaigns_with_optional_columns() {
        let text = "id,campaign_name,advertiser_name,start_date,extra\n\
                    C1,Spring Sale,Acme,2024-03-01,x\n\
                    C2,Autumn Launch,,,\n";
        let campaigns = from_reader(text.as_bytes(), "campaigns.csv").unwrap();
        assert_eq!(campaigns.len(), 2);
        assert_eq!(campaigns[0].advertiser_name.as_deref(), Some("Acme"));
        assert_eq!(
            campaigns[0].start_date.map(|d| d.to_string()).as_deref(),
            Some("2024-03-01")
        );
        assert_eq!(campaigns[1].advertiser_name, None);
    }

    #[test]
    fn errors_name_the_file_line_and_field() {
        let err =
            from_reader("id,name,start_date\nC1,X,2024-13-01\n".as_bytes(), "c.csv").unwrap_err();
        assert!(err.to_string().contains("c.csv line 2"), "{err}");
        assert!(err.to_string().contains("start_date"), "{err}");
        let err = from_reader("id,title\n".as_bytes(), "c.csv").unwrap_err();
        assert!(err.to_string().contains("no `name` column"), "{err}");
    }
}
