//! Typed canonical models that convert to and from [`Record`].
//!
//! Records are dynamic so custom fields travel without code; these models are
//! for users who want types. Each model has an `OBJECT` name, converts into a
//! [`Record`] with `From`, and back with `TryFrom<&Record>`, which fails with a
//! [`ModelError`] naming the object, the record and the field.
//!
//! ```
//! use crm_core::model::{Booking, DspPlatform, MediaType};
//! use crm_core::Record;
//!
//! let row = Record::new()
//!     .with("booking_id", "BK-1001")
//!     .with("client_name", "Acme")
//!     .with("campaign_name", "Spring Sale")
//!     .with("start_date", "2024-03-01")
//!     .with("end_date", "2024-03-31")
//!     .with("budget", "2500.00")
//!     .with("media_type", "video")
//!     .with("dsp_platform", "DV360");
//! let booking = Booking::try_from(&row).unwrap();
//! assert_eq!(booking.media_type, MediaType::Video);
//! assert_eq!(booking.dsp_platform, DspPlatform::Dv360);
//! assert_eq!(booking.currency.as_str(), "USD"); // the seed's default
//!
//! let bad = row.clone().with("media_type", "hologram");
//! let err = Booking::try_from(&bad).unwrap_err();
//! assert_eq!(err.field(), "media_type");
//! ```

mod booking;
mod crm;
mod field;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind};
use crate::record::Record;

pub use booking::{Booking, Client};
pub use crm::{Activity, Campaign, Company, Contact, Deal, Lead, Note};
pub use field::FieldValue;

/// A record could not be converted into a typed model.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// A required field is missing or blank.
    #[error("{object} {record}: required field `{field}` is missing")]
    Missing {
        /// The model (`booking`, `contact`, ...).
        object: &'static str,
        /// The record's label (its id or key, else its position).
        record: String,
        /// The field.
        field: &'static str,
    },
    /// A field holds a value of the wrong type or outside the allowed set.
    #[error("{object} {record}: field `{field}`: {message}")]
    Invalid {
        /// The model.
        object: &'static str,
        /// The record's label.
        record: String,
        /// The field.
        field: &'static str,
        /// What was wrong.
        message: String,
    },
}

impl ModelError {
    /// The field the error is about.
    pub fn field(&self) -> &'static str {
        match self {
            ModelError::Missing { field, .. } | ModelError::Invalid { field, .. } => field,
        }
    }

    /// The record label the error is about.
    pub fn record(&self) -> &str {
        match self {
            ModelError::Missing { record, .. } | ModelError::Invalid { record, .. } => record,
        }
    }
}

impl From<ModelError> for Error {
    fn from(e: ModelError) -> Self {
        let field = e.field();
        let record = e.record().to_owned();
        Error::new(ErrorKind::InvalidInput, e.to_string())
            .with_context("record", record)
            .with_context("field", field)
    }
}

/// Reads one typed field of `record` (used by the model conversions).
///
/// # Errors
/// [`ModelError::Missing`] for a blank required field, [`ModelError::Invalid`]
/// for a value of the wrong type.
pub fn read_field<T: FieldValue>(
    record: &Record,
    object: &'static str,
    label: &str,
    field: &'static str,
) -> Result<T, ModelError> {
    match record.get(field) {
        Some(v) if !v.is_blank() => T::from_value(v).map_err(|message| ModelError::Invalid {
            object,
            record: label.to_owned(),
            field,
            message,
        }),
        _ => T::when_missing().ok_or_else(|| ModelError::Missing {
            object,
            record: label.to_owned(),
            field,
        }),
    }
}

/// Declares a newtype id: a `String` wrapper with `Display`, serde
/// transparency and conversions.
macro_rules! id_type {
    ($($(#[$meta:meta])* $name:ident;)*) => {$(
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps an id.
            pub fn new(id: impl Into<String>) -> Self { $name(id.into()) }
            /// The id as text.
            pub fn as_str(&self) -> &str { &self.0 }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(&self.0) }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self { $name(s.to_owned()) }
        }

        impl From<$name> for crate::record::RecordId {
            fn from(id: $name) -> Self { crate::record::RecordId::new(id.0) }
        }

        impl From<crate::record::RecordId> for $name {
            fn from(id: crate::record::RecordId) -> Self { $name(id.into_inner()) }
        }

        impl $crate::model::FieldValue for $name {
            fn to_value(&self) -> crate::Value { crate::Value::Text(self.0.clone()) }
            fn from_value(value: &crate::Value) -> Result<Self, String> {
                <String as $crate::model::FieldValue>::from_value(value).map($name)
            }
        }
    )*};
}
pub(crate) use id_type;

id_type! {
    /// The id of a booking (seed 000 `booking_id`).
    BookingId;
    /// The id of an advertiser client (seed 000 `client_id`).
    ClientId;
    /// The id of a DSP or CRM campaign.
    CampaignId;
    /// The id of a contact in the system that holds it.
    ContactId;
    /// The id of a lead.
    LeadId;
    /// The id of a company (Salesforce Account, HubSpot company, Pipedrive organization).
    CompanyId;
    /// The id of a deal (Salesforce Opportunity).
    DealId;
    /// The id of an activity (task, call, meeting, engagement).
    ActivityId;
    /// The id of a note.
    NoteId;
}

/// Declares a closed enum stored as text: exact canonical spellings out,
/// case-, space-, `_`- and `-`-insensitive parsing in, unknown text an error.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub enum $name { $($(#[$vmeta])* $variant),* }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The canonical spelling.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),* }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                let wanted = fold_enum_text(s);
                $name::ALL
                    .iter()
                    .copied()
                    .find(|v| fold_enum_text(v.as_str()) == wanted)
                    .ok_or_else(|| format!(
                        "{:?} is not one of {}",
                        s,
                        $name::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
                    ))
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> { s.parse() }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String { v.as_str().to_owned() }
        }

        impl $crate::model::FieldValue for $name {
            fn to_value(&self) -> crate::Value { crate::Value::Text(self.as_str().to_owned()) }
            fn from_value(value: &crate::Value) -> Result<Self, String> {
                match value {
                    crate::Value::Text(s) => s.parse(),
                    other => Err(format!("expected text, found {}", other.value_type())),
                }
            }
        }
    };
}

fn fold_enum_text(s: &str) -> String {
    s.chars()
        .filter(|c| !matches!(c, ' ' | '_' | '-'))
        .flat_map(char::to_lowercase)
        .collect()
}

text_enum! {
    /// Seed 000 `media_type`.
    MediaType {
        /// Display banners.
        Display => "display",
        /// Video.
        Video => "video",
        /// Native.
        Native => "native",
        /// Audio.
        Audio => "audio",
    }
}

text_enum! {
    /// Seed 000 `dsp_platform`.
    DspPlatform {
        /// Google Display & Video 360.
        Dv360 => "DV360",
        /// The Trade Desk.
        Ttd => "TTD",
        /// Meta.
        Meta => "Meta",
        /// Google Ads.
        GoogleAds => "GoogleAds",
    }
}

text_enum! {
    /// Seed 000 client `tier`.
    ClientTier {
        /// Enterprise.
        Enterprise => "enterprise",
        /// Growth.
        Growth => "growth",
        /// Starter.
        Starter => "starter",
    }
}

/// An ISO 4217 currency code: three ASCII capital letters (`USD`, `EUR`).
///
/// Parsing upper-cases and trims, so `" usd"` is `USD`; anything that is not
/// three letters is an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

impl Currency {
    /// US dollar, the seed 000 default.
    pub const USD: Currency = Currency(*b"USD");

    /// The code as text.
    pub fn as_str(&self) -> &str {
        // The constructor only admits ASCII capital letters.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }
}

impl Default for Currency {
    fn default() -> Self {
        Currency::USD
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Currency {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let code = s.trim().to_ascii_uppercase();
        match code.as_bytes() {
            [a, b, c] if [a, b, c].iter().all(|x| x.is_ascii_uppercase()) => {
                Ok(Currency([*a, *b, *c]))
            }
            _ => Err(format!(
                "{s:?} is not a currency code (three letters, e.g. USD)"
            )),
        }
    }
}

impl TryFrom<String> for Currency {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.as_str().to_owned()
    }
}

impl FieldValue for Currency {
    fn to_value(&self) -> crate::Value {
        crate::Value::Text(self.as_str().to_owned())
    }
    fn from_value(value: &crate::Value) -> Result<Self, String> {
        String::from_value(value)?.parse()
    }
}

/// A client code: exactly three characters (seed 000 `client_code`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClientCode(String);

impl ClientCode {
    /// The code as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ClientCode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let n = s.chars().count();
        if n == 3 && !s.trim().is_empty() && s.trim() == s {
            Ok(ClientCode(s.to_owned()))
        } else {
            Err(format!(
                "client_code must be exactly 3 characters, found {n} in {s:?}"
            ))
        }
    }
}

impl TryFrom<String> for ClientCode {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<ClientCode> for String {
    fn from(c: ClientCode) -> String {
        c.0
    }
}

impl FieldValue for ClientCode {
    fn to_value(&self) -> crate::Value {
        crate::Value::Text(self.0.clone())
    }
    fn from_value(value: &crate::Value) -> Result<Self, String> {
        String::from_value(value)?.parse()
    }
}

/// Declares a canonical model struct with its `Record` conversions.
///
/// Two forms: `key FIELD: TYPE` (the key is an ordinary field that is also
/// mirrored into `Record::id`, as seed 000's `booking_id`), or `id: TYPE`
/// (the struct's `id` is `Record::id`, as a CRM object id, falling back to
/// the id fields listed after `|` when the record has no id). Fields may
/// have `= default` used when the record's field is missing or blank.
macro_rules! canonical_model {
    (@struct $(#[$meta:meta])* $name:ident [$($idfield:tt)*] { $($(#[$fmeta:meta])* $field:ident : $ty:ty $(= $default:expr)?),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        pub struct $name {
            $($idfield)*
            $($(#[$fmeta])* pub $field: $ty,)*
        }
    };
    (@fields $record:ident, $label:ident, $name:ident { $($field:ident : $ty:ty $(= $default:expr)?),* }) => {
        $(let $field: $ty = canonical_model!(@read $record, $label, $name, $field, $ty $(, $default)?);)*
    };
    (@read $record:ident, $label:ident, $name:ident, $field:ident, $ty:ty) => {
        $crate::model::read_field::<$ty>($record, $name::OBJECT, &$label, stringify!($field))?
    };
    (@read $record:ident, $label:ident, $name:ident, $field:ident, $ty:ty, $default:expr) => {
        $crate::model::read_field::<Option<$ty>>($record, $name::OBJECT, &$label, stringify!($field))?
            .unwrap_or_else(|| $default)
    };

    // `key FIELD: TYPE` form.
    ($(#[$meta:meta])* $name:ident($object:literal) {
        $(#[$kmeta:meta])* key $key:ident : $kty:ty,
        $($(#[$fmeta:meta])* $field:ident : $ty:ty $(= $default:expr)?),* $(,)?
    }) => {
        canonical_model!(@struct $(#[$meta])* $name [$(#[$kmeta])* pub $key: $kty,] {
            $($(#[$fmeta])* $field: $ty $(= $default)?),*
        });

        impl $name {
            /// The object name used in records, errors and stores.
            pub const OBJECT: &'static str = $object;
            /// The record field names, in order.
            pub const FIELDS: &'static [&'static str] = &[stringify!($key), $(stringify!($field)),*];
        }

        impl From<$name> for $crate::record::Record {
            fn from(m: $name) -> Self {
                let mut r = $crate::record::Record::new();
                r.id = Some($crate::record::RecordId::new(m.$key.to_string()));
                r.set(stringify!($key), $crate::model::FieldValue::to_value(&m.$key));
                $(r.set(stringify!($field), $crate::model::FieldValue::to_value(&m.$field));)*
                r
            }
        }

        impl TryFrom<&$crate::record::Record> for $name {
            type Error = $crate::model::ModelError;
            fn try_from(record: &$crate::record::Record) -> Result<Self, Self::Error> {
                let label = record.label(Some(stringify!($key)), 0);
                let $key: $kty = match record.get(stringify!($key)) {
                    Some(v) if !v.is_blank() => $crate::model::read_field::<$kty>(
                        record, $name::OBJECT, &label, stringify!($key))?,
                    _ => match &record.id {
                        Some(id) => id.clone().into(),
                        None => return Err($crate::model::ModelError::Missing {
                            object: $name::OBJECT, record: label, field: stringify!($key),
                        }),
                    },
                };
                canonical_model!(@fields record, label, $name { $($field: $ty $(= $default)?),* });
                Ok($name { $key, $($field),* })
            }
        }
    };

    // `id: TYPE` form.
    ($(#[$meta:meta])* $name:ident($object:literal) {
        id: $idty:ty $(| $idfield:literal)*,
        $($(#[$fmeta:meta])* $field:ident : $ty:ty $(= $default:expr)?),* $(,)?
    }) => {
        canonical_model!(@struct $(#[$meta])* $name [
            /// The id in the system that holds the record (`Record::id`).
            pub id: Option<$idty>,
        ] {
            $($(#[$fmeta])* $field: $ty $(= $default)?),*
        });

        impl $name {
            /// The object name used in records, errors and stores.
            pub const OBJECT: &'static str = $object;
            /// The record field names, in order (the id is `Record::id`).
            pub const FIELDS: &'static [&'static str] = &[$(stringify!($field)),*];
        }

        impl From<$name> for $crate::record::Record {
            fn from(m: $name) -> Self {
                let mut r = $crate::record::Record::new();
                r.id = m.id.map(Into::into);
                $(r.set(stringify!($field), $crate::model::FieldValue::to_value(&m.$field));)*
                r
            }
        }

        impl TryFrom<&$crate::record::Record> for $name {
            type Error = $crate::model::ModelError;
            fn try_from(record: &$crate::record::Record) -> Result<Self, Self::Error> {
                let label = record.label(None, 0);
                // `Record::id` first, else the first non-blank id field a
                // field map may have produced (`customer_id`, `id`).
                let id = record.id.clone().map(Into::into).or_else(|| {
                    [$($idfield),*].into_iter().find_map(|f: &str| {
                        record.get(f).filter(|v| !v.is_blank()).map(|v| <$idty>::new(v.to_string()))
                    })
                });
                canonical_model!(@fields record, label, $name { $($field: $ty $(= $default)?),* });
                Ok($name { id, $($field),* })
            }
        }
    };
}

pub(crate) use canonical_model;

#[cfg(test)]
mod tests;
