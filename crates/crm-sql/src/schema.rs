//! Table shapes: what `describe` finds in the database, the seed 000
//! reference tables (`booking`, `client`), and `CREATE TABLE` from an
//! [`ObjectSchema`].

use crm_core::{FieldSchema, FieldType, ObjectSchema};

use crate::config::DatabaseKind;
use crate::error::SqlError;
use crate::params::{quote_ident, quote_table};

/// What kind of value a column holds, as far as conversion is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ColumnKind {
    Bool,
    /// Integer of `bits` width (16, 32, 64); unsigned MySQL columns say so.
    Int {
        bits: u8,
        unsigned: bool,
    },
    /// Exact decimal, with precision and scale when the column fixes them.
    Decimal {
        precision: Option<u32>,
        scale: Option<u32>,
    },
    /// Binary floating point; read into a decimal.
    Float,
    /// Text, with the most characters the column holds.
    Text {
        max_len: Option<u32>,
    },
    Date,
    /// Date and time; `precision` is the fractional-second digits kept.
    DateTime {
        tz: bool,
        precision: u32,
    },
    Json,
    /// A type this crate does not convert (enum, uuid, interval...), read as text.
    Other,
}

impl ColumnKind {
    pub(crate) fn field_type(&self) -> FieldType {
        match self {
            ColumnKind::Bool => FieldType::Bool,
            ColumnKind::Int { .. } => FieldType::Int,
            ColumnKind::Decimal { .. } | ColumnKind::Float => FieldType::Decimal,
            ColumnKind::Text { .. } => FieldType::Text,
            ColumnKind::Date => FieldType::Date,
            ColumnKind::DateTime { .. } => FieldType::DateTime,
            ColumnKind::Json => FieldType::Json,
            ColumnKind::Other => FieldType::Text,
        }
    }
}

/// One column of a table as the database describes it.
#[derive(Clone, Debug)]
pub(crate) struct ColumnInfo {
    pub(crate) name: String,
    pub(crate) kind: ColumnKind,
    /// The declared type as the database prints it (`character varying(3)`).
    pub(crate) sql_type: String,
    pub(crate) nullable: bool,
    pub(crate) has_default: bool,
}

/// A table as the database describes it.
#[derive(Clone, Debug)]
pub(crate) struct TableInfo {
    /// The name as given (possibly `schema.table`).
    pub(crate) name: String,
    pub(crate) columns: Vec<ColumnInfo>,
    pub(crate) primary_key: Vec<String>,
    /// Column sets with a unique index or constraint (the primary key included).
    pub(crate) unique: Vec<Vec<String>>,
}

impl TableInfo {
    pub(crate) fn column(&self, name: &str) -> Option<&ColumnInfo> {
        self.columns.iter().find(|c| c.name == name)
    }

    pub(crate) fn is_unique_key(&self, cols: &[String]) -> bool {
        self.unique
            .iter()
            .any(|u| u.len() == cols.len() && u.iter().all(|c| cols.iter().any(|k| k == c)))
    }

    /// The crm-core description of the table.
    pub(crate) fn to_object_schema(&self) -> ObjectSchema {
        let mut schema = ObjectSchema::new(self.name.clone()).primary_key(self.primary_key.clone());
        for c in &self.columns {
            let mut f = FieldSchema::new(c.name.clone(), c.kind.field_type());
            f.nullable = c.nullable;
            f.required = !c.nullable && !c.has_default;
            if self.is_unique_key(std::slice::from_ref(&c.name)) {
                f = f.external_id();
            }
            if let ColumnKind::Text { max_len: Some(n) } = c.kind {
                f = f.max_length(n);
            }
            if let ColumnKind::Decimal { scale: Some(s), .. } = c.kind {
                f = f.scale(s);
            }
            if c.name == "synced_at" {
                f = f.read_only();
            }
            schema = schema.field(f);
        }
        schema
    }
}

/// Parses `name(a, b)` type arguments: `varchar(3)` -> `[3]`.
#[cfg_attr(not(any(feature = "postgres", feature = "sqlite")), allow(dead_code))]
pub(crate) fn type_args(sql_type: &str) -> Vec<u32> {
    let Some(open) = sql_type.find('(') else {
        return Vec::new();
    };
    let close = sql_type[open..]
        .find(')')
        .map_or(sql_type.len(), |c| open + c);
    sql_type[open + 1..close]
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

/// The seed 000 `booking` table: the reference schema of this crate.
///
/// `booking_id` is the primary key; `currency` defaults to `USD`;
/// `media_type` and `dsp_platform` are open picklists (a new value is kept,
/// not rejected); `synced_at` is set by the sink on every write.
pub fn booking_schema() -> ObjectSchema {
    ObjectSchema::new("booking")
        .field(
            FieldSchema::new("booking_id", FieldType::Id)
                .required()
                .external_id()
                .max_length(64),
        )
        .field(
            FieldSchema::new("client_id", FieldType::Reference)
                .required()
                .max_length(64),
        )
        .field(
            FieldSchema::new("client_name", FieldType::Text)
                .required()
                .max_length(255),
        )
        .field(
            FieldSchema::new("campaign_name", FieldType::Text)
                .required()
                .max_length(255),
        )
        .field(FieldSchema::new("campaign_id", FieldType::Text).max_length(64))
        .field(FieldSchema::new("start_date", FieldType::Date).required())
        .field(FieldSchema::new("end_date", FieldType::Date).required())
        .field(
            FieldSchema::new("budget", FieldType::Decimal)
                .required()
                .scale(4),
        )
        .field(
            FieldSchema::new("currency", FieldType::Text)
                .required()
                .max_length(3),
        )
        .field(FieldSchema::new("margin_target", FieldType::Decimal).scale(4))
        .field(FieldSchema::new("impressions_booked", FieldType::Int))
        .field(FieldSchema::new("clicks_booked", FieldType::Int))
        .field(FieldSchema::new("conversions_booked", FieldType::Int))
        .field(
            FieldSchema::new("media_type", FieldType::Picklist)
                .required()
                .max_length(32)
                .picklist(["display", "video", "native", "audio"]),
        )
        .field(
            FieldSchema::new("dsp_platform", FieldType::Picklist)
                .required()
                .max_length(32)
                .picklist(["DV360", "TTD", "Meta", "GoogleAds"]),
        )
        .field(FieldSchema::new("created_at", FieldType::DateTime).required())
        .field(FieldSchema::new("updated_at", FieldType::DateTime).required())
        .field(FieldSchema::new("synced_at", FieldType::DateTime).read_only())
        .primary_key(["booking_id"])
}

/// The seed 000 `client` table, with `updated_at` (for incremental reads)
/// and `synced_at` added.
pub fn client_schema() -> ObjectSchema {
    ObjectSchema::new("client")
        .field(
            FieldSchema::new("client_id", FieldType::Id)
                .required()
                .external_id()
                .max_length(64),
        )
        .field(
            FieldSchema::new("client_name", FieldType::Text)
                .required()
                .max_length(255),
        )
        .field(FieldSchema::new("client_code", FieldType::Text).max_length(3))
        .field(FieldSchema::new("industry", FieldType::Text).max_length(128))
        .field(
            FieldSchema::new("tier", FieldType::Picklist)
                .max_length(32)
                .picklist(["enterprise", "growth", "starter"]),
        )
        .field(FieldSchema::new("account_manager", FieldType::Text).max_length(255))
        .field(FieldSchema::new("primary_contact_email", FieldType::Email).max_length(320))
        .field(FieldSchema::new("billing_email", FieldType::Email).max_length(320))
        .field(FieldSchema::new("default_currency", FieldType::Text).max_length(3))
        .field(FieldSchema::new("timezone", FieldType::Text).max_length(64))
        .field(FieldSchema::new("updated_at", FieldType::DateTime).required())
        .field(FieldSchema::new("synced_at", FieldType::DateTime).read_only())
        .primary_key(["client_id"])
}

/// The statements that create `schema` as a table on `dialect` (if it does
/// not exist yet), plus an index on (`updated_at`, primary key) when the
/// table has `updated_at`, so incremental reads page through an index.
///
/// Types: text with a maximum length is `VARCHAR(n)` (length enforced by the
/// sink on every backend, SQLite included); decimals are `NUMERIC(28, s)`
/// (SQLite: a text-affinity `DECIMAL_TEXT(28, s)`, so no digit is lost to
/// floating point); date-times are `TIMESTAMPTZ` on PostgreSQL and
/// `DATETIME(6)` in UTC on MySQL.
///
/// # Errors
/// [`SqlError::Schema`] if the schema has no fields or its primary key names
/// a field it does not have.
pub fn create_table_sql(
    dialect: DatabaseKind,
    schema: &ObjectSchema,
) -> Result<Vec<String>, SqlError> {
    if schema.fields.is_empty() {
        return Err(SqlError::Schema(format!("`{}` has no fields", schema.name)));
    }
    for k in &schema.primary_key {
        if schema.get(k).is_none() {
            return Err(SqlError::Schema(format!(
                "primary key `{k}` is not a field of `{}`",
                schema.name
            )));
        }
    }
    let table = quote_table(&schema.name, dialect);
    let mut cols = Vec::new();
    for f in &schema.fields {
        let keyish = f.unique || schema.primary_key.contains(&f.name);
        let mut def = format!(
            "{} {}",
            quote_ident(&f.name, dialect),
            column_type(dialect, f, keyish)
        );
        if !f.nullable || schema.primary_key.contains(&f.name) {
            def.push_str(" NOT NULL");
        }
        if let Some(d) = column_default(dialect, f) {
            def.push_str(" DEFAULT ");
            def.push_str(&d);
        }
        cols.push(def);
    }
    if !schema.primary_key.is_empty() {
        cols.push(format!(
            "PRIMARY KEY ({})",
            schema
                .primary_key
                .iter()
                .map(|k| quote_ident(k, dialect))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    for f in &schema.fields {
        if f.unique && !schema.primary_key.contains(&f.name) {
            cols.push(format!("UNIQUE ({})", quote_ident(&f.name, dialect)));
        }
    }
    let mut out = vec![format!(
        "CREATE TABLE IF NOT EXISTS {table} (\n  {}\n)",
        cols.join(",\n  ")
    )];
    if schema.get("updated_at").is_some() {
        let base = schema.name.rsplit('.').next().unwrap_or(&schema.name);
        let index = quote_ident(&format!("{base}_updated_at_idx"), dialect);
        let mut idx_cols = vec![quote_ident("updated_at", dialect)];
        idx_cols.extend(schema.primary_key.iter().map(|k| quote_ident(k, dialect)));
        let cols = idx_cols.join(", ");
        out.push(match dialect {
            // MySQL has no CREATE INDEX IF NOT EXISTS (MariaDB has); the
            // caller ignores "duplicate key name" there.
            DatabaseKind::MySql => format!("CREATE INDEX {index} ON {table} ({cols})"),
            // The index goes into the table's schema on PostgreSQL.
            _ => format!("CREATE INDEX IF NOT EXISTS {index} ON {table} ({cols})"),
        });
    }
    Ok(out)
}

fn column_type(dialect: DatabaseKind, f: &FieldSchema, keyish: bool) -> String {
    use DatabaseKind::*;
    match (&f.field_type, dialect) {
        (FieldType::Bool, _) => "BOOLEAN".into(),
        (FieldType::Int, Sqlite) => "INTEGER".into(),
        (FieldType::Int, _) => "BIGINT".into(),
        (FieldType::Decimal, d) => {
            let scale = f.scale.unwrap_or(if d == MySql { 10 } else { 4 });
            match d {
                Sqlite => format!("DECIMAL_TEXT(28, {scale})"),
                MySql => format!("DECIMAL(38, {scale})"),
                Postgres => {
                    if f.scale.is_some() {
                        format!("NUMERIC(28, {scale})")
                    } else {
                        "NUMERIC".into()
                    }
                }
            }
        }
        (FieldType::Date, _) => "DATE".into(),
        (FieldType::DateTime, Postgres) => "TIMESTAMPTZ".into(),
        (FieldType::DateTime, MySql) => "DATETIME(6)".into(),
        (FieldType::DateTime, Sqlite) => "DATETIME".into(),
        (FieldType::Json, Postgres) => "JSONB".into(),
        (FieldType::Json, MySql) => "JSON".into(),
        (FieldType::Json, Sqlite) => "JSON".into(),
        (_, d) => match f.max_length {
            Some(n) => format!("VARCHAR({n})"),
            None if d == MySql && keyish => "VARCHAR(255)".into(),
            None => "TEXT".into(),
        },
    }
}

fn column_default(dialect: DatabaseKind, f: &FieldSchema) -> Option<String> {
    match f.name.as_str() {
        "currency" | "default_currency" if f.field_type == FieldType::Text => Some("'USD'".into()),
        "created_at" | "updated_at" if f.field_type == FieldType::DateTime => Some(match dialect {
            DatabaseKind::Postgres => "CURRENT_TIMESTAMP".into(),
            DatabaseKind::MySql => "CURRENT_TIMESTAMP(6)".into(),
            DatabaseKind::Sqlite => "(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))".into(),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booking_ddl_per_dialect() {
        let pg = create_table_sql(DatabaseKind::Postgres, &booking_schema()).unwrap();
        assert!(
            pg[0].contains("\"budget\" NUMERIC(28, 4) NOT NULL"),
            "{}",
            pg[0]
        );
        assert!(pg[0].contains("\"synced_at\" TIMESTAMPTZ"));
        assert!(pg[0].contains("PRIMARY KEY (\"booking_id\")"));
        assert!(pg[1].contains("(\"updated_at\", \"booking_id\")"));
        let my = create_table_sql(DatabaseKind::MySql, &client_schema()).unwrap();
        assert!(my[0].contains("`client_code` VARCHAR(3)"), "{}", my[0]);
        let lite = create_table_sql(DatabaseKind::Sqlite, &booking_schema()).unwrap();
        assert!(lite[0].contains("DECIMAL_TEXT(28, 4)"));
    }

    #[test]
    fn bad_schemas_fail() {
        assert!(create_table_sql(DatabaseKind::Postgres, &ObjectSchema::new("x")).is_err());
        let s = ObjectSchema::new("x")
            .field(FieldSchema::new("a", FieldType::Text))
            .primary_key(["b"]);
        assert!(create_table_sql(DatabaseKind::Postgres, &s).is_err());
    }

    #[test]
    fn type_arguments() {
        assert_eq!(type_args("numeric(28,4)"), [28, 4]);
        assert_eq!(type_args("character varying(3)"), [3]);
        assert!(type_args("text").is_empty());
    }
}
