//! [`ObjectSchema`] and [`FieldSchema`]: what a connector's `describe` returns.

use serde::{Deserialize, Serialize};

use crate::value::ValueType;

/// The type of a field as the holding system describes it.
///
/// Providers have more types than [`ValueType`] (an email, a picklist, a
/// reference); each maps to the value type records carry. A type this crate
/// does not know is kept as [`FieldType::Unknown`] so a new vendor type never
/// breaks a sync.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FieldType {
    /// The record's own id.
    Id,
    /// Free text.
    Text,
    /// An email address.
    Email,
    /// A phone number.
    Phone,
    /// A URL.
    Url,
    /// A true/false flag.
    Bool,
    /// A whole number.
    Int,
    /// An exact decimal number (also currency and percent).
    Decimal,
    /// A date.
    Date,
    /// A date and time.
    DateTime,
    /// One value of a fixed list.
    Picklist,
    /// Several values of a fixed list.
    MultiPicklist,
    /// The id of another record.
    Reference,
    /// Structured data.
    Json,
    /// A vendor type this crate does not model, kept by name.
    Unknown(String),
}

impl FieldType {
    /// The [`ValueType`] a record carries for a field of this type.
    pub fn value_type(&self) -> ValueType {
        match self {
            FieldType::Bool => ValueType::Bool,
            FieldType::Int => ValueType::Int,
            FieldType::Decimal => ValueType::Decimal,
            FieldType::Date => ValueType::Date,
            FieldType::DateTime => ValueType::DateTime,
            FieldType::Json => ValueType::Json,
            FieldType::Id
            | FieldType::Text
            | FieldType::Email
            | FieldType::Phone
            | FieldType::Url
            | FieldType::Picklist
            | FieldType::MultiPicklist
            | FieldType::Reference
            | FieldType::Unknown(_) => ValueType::Text,
        }
    }
}

/// One allowed value of a picklist field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PicklistValue {
    /// The value stored in records.
    pub value: String,
    /// The label people see (may equal `value`).
    pub label: String,
    /// Whether the value can still be chosen.
    #[serde(default = "yes")]
    pub active: bool,
}

fn yes() -> bool {
    true
}

/// One field of an object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FieldSchema {
    /// The field's API name (`Email`, `hs_lead_score`, a Pipedrive hash key).
    pub name: String,
    /// The human label.
    pub label: String,
    /// The type.
    pub field_type: FieldType,
    /// A value is required on create.
    pub required: bool,
    /// Values are unique across records.
    pub unique: bool,
    /// The field was added by the user (Salesforce `__c`, HubSpot custom property).
    pub custom: bool,
    /// The field can be written (created or updated) through the API.
    pub writable: bool,
    /// The field can be set to null.
    pub nullable: bool,
    /// The field can key upserts (Salesforce external id, HubSpot unique property).
    pub external_id: bool,
    /// Maximum text length, where the holding system enforces one.
    pub max_length: Option<u32>,
    /// Decimal places, where the holding system fixes them.
    pub scale: Option<u32>,
    /// Allowed values of a picklist.
    pub picklist: Vec<PicklistValue>,
}

impl FieldSchema {
    /// A writable, nullable, optional field of `field_type`, labelled with its name.
    pub fn new(name: impl Into<String>, field_type: FieldType) -> Self {
        let name = name.into();
        FieldSchema {
            label: name.clone(),
            name,
            field_type,
            required: false,
            unique: false,
            custom: false,
            writable: true,
            nullable: true,
            external_id: false,
            max_length: None,
            scale: None,
            picklist: Vec::new(),
        }
    }

    /// Sets the label.
    #[must_use]
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    /// Marks the field required (and so not nullable).
    #[must_use]
    pub fn required(mut self) -> Self {
        self.required = true;
        self.nullable = false;
        self
    }

    /// Marks the field unique.
    #[must_use]
    pub fn unique(mut self) -> Self {
        self.unique = true;
        self
    }

    /// Marks the field custom.
    #[must_use]
    pub fn custom(mut self) -> Self {
        self.custom = true;
        self
    }

    /// Marks the field read-only.
    #[must_use]
    pub fn read_only(mut self) -> Self {
        self.writable = false;
        self
    }

    /// Marks the field usable as an upsert key (implies unique).
    #[must_use]
    pub fn external_id(mut self) -> Self {
        self.external_id = true;
        self.unique = true;
        self
    }

    /// Sets the maximum length.
    #[must_use]
    pub fn max_length(mut self, n: u32) -> Self {
        self.max_length = Some(n);
        self
    }

    /// Sets the decimal scale.
    #[must_use]
    pub fn scale(mut self, n: u32) -> Self {
        self.scale = Some(n);
        self
    }

    /// Sets the picklist values (value = label).
    #[must_use]
    pub fn picklist<I, S>(mut self, values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.picklist = values
            .into_iter()
            .map(|v| {
                let value = v.into();
                PicklistValue {
                    label: value.clone(),
                    value,
                    active: true,
                }
            })
            .collect();
        self
    }
}

/// The shape of one object type (Contact, `contacts`, a SQL table).
///
/// ```
/// use crm_core::{FieldSchema, FieldType, ObjectSchema};
///
/// let schema = ObjectSchema::new("Contact")
///     .field(FieldSchema::new("Id", FieldType::Id).read_only())
///     .field(FieldSchema::new("Email", FieldType::Email).external_id())
///     .primary_key(["Id"]);
/// assert!(schema.get("Email").unwrap().external_id);
/// assert_eq!(schema.external_id_fields().count(), 1);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ObjectSchema {
    /// The object's API name.
    pub name: String,
    /// The human label.
    pub label: String,
    /// The fields, in the holding system's order.
    pub fields: Vec<FieldSchema>,
    /// The fields that make up the primary key (the record id).
    pub primary_key: Vec<String>,
}

impl ObjectSchema {
    /// An object with no fields yet.
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        ObjectSchema {
            label: name.clone(),
            name,
            fields: Vec::new(),
            primary_key: Vec::new(),
        }
    }

    /// Adds a field (builder style).
    #[must_use]
    pub fn field(mut self, field: FieldSchema) -> Self {
        self.fields.push(field);
        self
    }

    /// Sets the primary key (builder style).
    #[must_use]
    pub fn primary_key<I, S>(mut self, fields: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.primary_key = fields.into_iter().map(Into::into).collect();
        self
    }

    /// The field named `name`.
    pub fn get(&self, name: &str) -> Option<&FieldSchema> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// The fields that can key upserts.
    pub fn external_id_fields(&self) -> impl Iterator<Item = &FieldSchema> {
        self.fields.iter().filter(|f| f.external_id)
    }

    /// The custom fields.
    pub fn custom_fields(&self) -> impl Iterator<Item = &FieldSchema> {
        self.fields.iter().filter(|f| f.custom)
    }
}
