//! A seeded sheet of demo bookings in seed 000's layout, with the kinds of
//! bad rows real sheets have.

use rand::Rng;

use super::grid::{SimCell, SimSheet};

/// The demo sheet's headers: seed 000's columns A..I, then the write-back
/// columns J..M.
pub const DEMO_HEADERS: [&str; 13] = [
    "Booking ID",
    "Client",
    "Campaign",
    "Start Date",
    "End Date",
    "Budget",
    "Impressions Booked",
    "Media Type",
    "DSP",
    "Actual Spend",
    "Pacing %",
    "Campaign ID",
    "Campaign Status",
];

/// What the demo sheet holds.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DemoOptions {
    /// Data rows (below the header row).
    pub rows: usize,
    /// The sheet title.
    pub title: String,
    /// The sheet id.
    pub sheet_id: i64,
    /// Whether about one row in 100 is bad (blank row, blank key, formula
    /// error, text in a date column, repeated key).
    pub bad_rows: bool,
    /// Empty grid rows below the data.
    pub spare_rows: u32,
}

impl DemoOptions {
    /// `rows` rows with bad ones, titled `Bookings`, sheet id 0, no spare rows.
    pub fn new(rows: usize) -> Self {
        DemoOptions {
            rows,
            title: "Bookings".into(),
            sheet_id: 0,
            bad_rows: true,
            spare_rows: 0,
        }
    }

    /// Sets the title.
    #[must_use]
    pub fn title(mut self, title: &str) -> Self {
        self.title = title.to_owned();
        self
    }

    /// Switches bad rows on or off.
    #[must_use]
    pub fn bad_rows(mut self, on: bool) -> Self {
        self.bad_rows = on;
        self
    }

    /// Sets the empty rows below the data.
    #[must_use]
    pub fn spare_rows(mut self, n: u32) -> Self {
        self.spare_rows = n;
        self
    }
}

const CLIENTS: [&str; 10] = [
    "Acme Foods",
    "Globex",
    "Initech",
    "Umbrella Health",
    "Stark Motors",
    "Wayne Retail",
    "Hooli",
    "Vandelay Imports",
    "Soylent",
    "Tyrell Travel",
];
const PRODUCTS: [&str; 8] = [
    "Spring Launch",
    "Summer Sale",
    "Brand Awareness",
    "Holiday Push",
    "Retargeting",
    "App Installs",
    "Back to School",
    "Q4 Always On",
];
const MEDIA: [&str; 4] = ["display", "video", "native", "audio"];
const DSPS: [&str; 4] = ["DV360", "TTD", "Meta", "GoogleAds"];

/// The good row for booking number `n` (1-based).
pub fn demo_row(rng: &mut impl Rng, n: usize) -> Vec<SimCell> {
    let client = CLIENTS[rng.random_range(0..CLIENTS.len())];
    let product = PRODUCTS[rng.random_range(0..PRODUCTS.len())];
    // Flights in 2027: serial 46388 is 2027-01-01.
    let start = 46_388 + rng.random_range(0..330i64);
    let end = start + rng.random_range(7..60i64);
    let cents: i64 = rng.random_range(50_000..5_000_000);
    let budget = if cents % 10 == 0 {
        // Some budgets have one decimal place (1234.1), as typed.
        format!("{}.{}", cents / 100, (cents % 100) / 10)
    } else {
        format!("{}.{:02}", cents / 100, cents % 100)
    };
    vec![
        SimCell::Text(format!("BK-{n:06}")),
        SimCell::Text(client.into()),
        SimCell::Text(format!("{client} {product}")),
        SimCell::Date(start),
        SimCell::Date(end),
        SimCell::Number(budget),
        SimCell::Number((rng.random_range(10..5000i64) * 1000).to_string()),
        SimCell::Text(MEDIA[rng.random_range(0..MEDIA.len())].into()),
        SimCell::Text(DSPS[rng.random_range(0..DSPS.len())].into()),
    ]
}

/// A bookings sheet: the header row and `options.rows` data rows.
pub fn demo_bookings(rng: &mut impl Rng, options: &DemoOptions) -> SimSheet {
    let rows = u32::try_from(options.rows).unwrap_or(u32::MAX - 1);
    let mut sheet = SimSheet::new(
        options.sheet_id,
        options.title.clone(),
        rows + 1 + options.spare_rows,
        DEMO_HEADERS.len() as u32,
    );
    sheet.set_row(
        1,
        DEMO_HEADERS
            .iter()
            .map(|h| SimCell::Text((*h).into()))
            .collect(),
    );
    for i in 0..options.rows {
        let n = i + 1;
        let mut row = demo_row(rng, n);
        if options.bad_rows && n % 100 == 37 {
            match (n / 100) % 5 {
                0 => row = Vec::new(),
                1 => row[0] = SimCell::Empty,
                2 => row[5] = SimCell::Error("#REF!".into()),
                3 => row[3] = SimCell::Text("TBC".into()),
                _ => row[0] = SimCell::Text(format!("BK-{:06}", n - 1)),
            }
        }
        sheet.set_row(n as u32 + 1, row);
    }
    sheet.row_count = rows + 1 + options.spare_rows;
    sheet
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn demo_sheet_is_reproducible_and_has_bad_rows() {
        let mut a = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut b = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let s1 = demo_bookings(&mut a, &DemoOptions::new(1000));
        let s2 = demo_bookings(&mut b, &DemoOptions::new(1000));
        assert_eq!(s1, s2);
        assert_eq!(s1.row_count, 1001);
        assert_eq!(s1.cell(1, 0), &SimCell::Text("Booking ID".into()));
        // Row 38 holds booking 37: a blank row (37 / 100 % 5 == 0).
        assert!(s1.cells[37].is_empty());
        assert_eq!(s1.cell(238, 5), &SimCell::Error("#REF!".into()));
        assert_eq!(s1.cell(338, 3), &SimCell::Text("TBC".into()));
        let clean = demo_bookings(&mut a, &DemoOptions::new(300).bad_rows(false));
        assert!(clean.cells.iter().skip(1).all(|r| !r.is_empty()));
    }
}
