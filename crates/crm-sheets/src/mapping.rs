//! Default column maps: seed 000's bookings sheet, and the layout of mapped
//! columns with their types.

use crm_core::mapping::ColumnMapping;

use crate::cell::Cell;
use crate::config::SheetsConfig;
use crate::rows::RowLayout;
use crate::schema::stable_field_names;

/// Seed 000's `column_mapping` (A..I: booking_id, client_name,
/// campaign_name, start_date, end_date, budget, impressions_booked,
/// media_type, dsp).
pub fn seed_000_columns() -> ColumnMapping {
    ColumnMapping::new([
        ("A", "booking_id"),
        ("B", "client_name"),
        ("C", "campaign_name"),
        ("D", "start_date"),
        ("E", "end_date"),
        ("F", "budget"),
        ("G", "impressions_booked"),
        ("H", "media_type"),
        ("I", "dsp"),
    ])
    .unwrap_or_default()
}

/// The mapping in use: the configured one, or one field per header named
/// by [`stable_field_names`] when none is configured.
pub fn effective_columns(config: &SheetsConfig, headers: &[Cell]) -> ColumnMapping {
    if !config.column_mapping.is_empty() {
        return config.column_mapping.clone();
    }
    let texts: Vec<String> = headers.iter().map(Cell::to_string).collect();
    let names = stable_field_names(&texts);
    let mut m = ColumnMapping::default();
    for (i, n) in names.into_iter().enumerate() {
        // Names are unique by construction; a clash cannot happen.
        let _ = m.insert(i, n);
    }
    m
}

/// The row layout of `columns` with `config`'s types and key.
pub fn layout(config: &SheetsConfig, columns: &ColumnMapping) -> RowLayout {
    RowLayout::new(
        columns
            .iter()
            .map(|(i, f)| (i, f.to_owned(), config.column_type(f)))
            .collect(),
        config.key_field.clone(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_columns_and_header_named_columns() {
        let m = seed_000_columns();
        assert_eq!(m.len(), 9);
        assert_eq!(m.range(2).as_deref(), Some("A2:I"));
        let cfg = SheetsConfig::builder("s", "t").key_field("task_id");
        let headers: Vec<Cell> = ["A", "A", "", "Task ID", "task_id"]
            .iter()
            .map(|h| Cell::Text((*h).into()))
            .collect();
        let m = effective_columns(&cfg, &headers);
        let names: Vec<_> = m.iter().map(|(_, f)| f.to_owned()).collect();
        assert_eq!(names, ["a", "a_b", "column_c", "task_id", "task_id_e"]);
    }
}
