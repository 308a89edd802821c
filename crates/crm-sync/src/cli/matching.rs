//! `crm-sync match`: ad-hoc matching of a bookings CSV to a campaigns CSV.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crm_core::Record;
use crm_core::matching::{FuzzyIndex, Matcher, MatchingConfig, Threshold};

use super::CliError;

/// Options of `crm-sync match`.
#[derive(Debug, clap::Args)]
pub struct MatchArgs {
    /// Bookings CSV (with a header row).
    #[arg(long)]
    pub bookings: PathBuf,
    /// Campaigns CSV (with a header row).
    #[arg(long)]
    pub campaigns: PathBuf,
    /// Similarity threshold, 0 to 1 (normalised Indel similarity, as
    /// rapidfuzz's fuzz.ratio / 100).
    #[arg(long, default_value = "0.85")]
    pub threshold: Threshold,
    /// Write here instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write every booking_id,campaign_id,score at or above the threshold
    /// instead of one line per booking.
    #[arg(long)]
    pub all_pairs: bool,
    /// The id column: a header name or a 1-based number (default: the first).
    #[arg(long, default_value = "1")]
    pub id_column: String,
    /// The name column: a header name or a 1-based number (default: the second).
    #[arg(long, default_value = "2")]
    pub name_column: String,
}

struct Table {
    ids: Vec<String>,
    names: Vec<String>,
}

fn column(headers: &csv::StringRecord, spec: &str, path: &Path) -> Result<usize, CliError> {
    if let Ok(n) = spec.parse::<usize>()
        && (1..=headers.len()).contains(&n)
    {
        return Ok(n - 1);
    }
    headers
        .iter()
        .position(|h| h.trim() == spec)
        .ok_or_else(|| {
            CliError::usage(format!(
                "{}: there is no column {spec:?}; the header row has {} columns: {}. Pass a header \
             name or a 1-based number with --id-column / --name-column.",
                path.display(),
                headers.len(),
                headers.iter().collect::<Vec<_>>().join(", ")
            ))
        })
}

fn read_table(path: &Path, id_spec: &str, name_spec: &str) -> Result<Table, CliError> {
    let file = File::open(path).map_err(|e| {
        CliError::usage(format!(
            "cannot open {}: {e}. Check the path passed to --bookings / --campaigns.",
            path.display()
        ))
    })?;
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(file);
    let headers = reader
        .headers()
        .map_err(|e| {
            CliError::usage(format!(
                "{}: cannot read the header row: {e}",
                path.display()
            ))
        })?
        .clone();
    let id_col = column(&headers, id_spec, path)?;
    let name_col = column(&headers, name_spec, path)?;
    let mut table = Table {
        ids: Vec::new(),
        names: Vec::new(),
    };
    for (line, row) in reader.records().enumerate() {
        let row =
            row.map_err(|e| CliError::usage(format!("{} line {}: {e}", path.display(), line + 2)))?;
        table
            .ids
            .push(row.get(id_col).unwrap_or_default().to_owned());
        table
            .names
            .push(row.get(name_col).unwrap_or_default().to_owned());
    }
    Ok(table)
}

fn output(out: Option<&Path>) -> Result<Box<dyn Write>, CliError> {
    Ok(match out {
        Some(path) => Box::new(BufWriter::new(File::create(path).map_err(|e| {
            CliError::usage(format!("cannot create {}: {e}", path.display()))
        })?)),
        None => Box::new(BufWriter::new(io::stdout().lock())),
    })
}

fn io_err(e: impl std::fmt::Display) -> CliError {
    CliError::failed(format!("writing the output failed: {e}"))
}

/// Runs `crm-sync match`.
pub fn run(args: &MatchArgs) -> Result<(), CliError> {
    let bookings = read_table(&args.bookings, &args.id_column, &args.name_column)?;
    let campaigns = read_table(&args.campaigns, &args.id_column, &args.name_column)?;
    let mut out = csv::Writer::from_writer(output(args.out.as_deref())?);
    if args.all_pairs {
        out.write_record(["booking_id", "campaign_id", "score"])
            .map_err(io_err)?;
        let index = FuzzyIndex::new(&campaigns.names);
        for (b, c, score) in index.all_pairs(&bookings.names, args.threshold) {
            let (Some(bid), Some(cid)) = (bookings.ids.get(b), campaigns.ids.get(c)) else {
                continue;
            };
            out.write_record([
                bid.as_str(),
                cid.as_str(),
                &format!("{:.4}", score.as_f64() * 100.0),
            ])
            .map_err(io_err)?;
        }
    } else {
        let config = MatchingConfig::from_yaml(&format!(
            "strategies:\n  - type: name_match\n    source: booking.name\n    target: campaign.name\n    threshold: {}\n    priority: 1\n",
            args.threshold
        ))
        .map_err(|e| CliError::failed(e.to_string()))?;
        let campaign_records: Vec<Record> = campaigns
            .ids
            .iter()
            .zip(&campaigns.names)
            .map(|(id, name)| {
                Record::new()
                    .with("id", id.as_str())
                    .with("name", name.as_str())
            })
            .collect();
        let booking_records: Vec<Record> = bookings
            .names
            .iter()
            .map(|name| Record::new().with("name", name.as_str()))
            .collect();
        let matcher = Matcher::new(&config, campaign_records);
        out.write_record([
            "booking_id",
            "status",
            "campaign_id",
            "campaign_name",
            "score",
            "candidates",
        ])
        .map_err(io_err)?;
        for (id, result) in bookings.ids.iter().zip(matcher.match_all(&booking_records)) {
            let (cid, cname, score) = match &result.best {
                Some(best) => (
                    campaigns
                        .ids
                        .get(best.campaign)
                        .cloned()
                        .unwrap_or_default(),
                    campaigns
                        .names
                        .get(best.campaign)
                        .cloned()
                        .unwrap_or_default(),
                    format!("{:.4}", best.score.as_f64()),
                ),
                None => Default::default(),
            };
            out.write_record([
                id.as_str(),
                result.status.as_str(),
                &cid,
                &cname,
                &score,
                &result.candidates.len().to_string(),
            ])
            .map_err(io_err)?;
        }
    }
    out.flush().map_err(io_err)
}
