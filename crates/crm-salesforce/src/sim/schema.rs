//! The simulated org's objects (describes) and the field validation that
//! makes its rejections realistic.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde_json::{Map, Value as Json};

use crate::source::parse_datetime;
use crate::wire::{DescribeField, DescribeSObject, PicklistEntry, RecordError};

fn field(name: &str, ftype: &str) -> DescribeField {
    DescribeField {
        name: name.to_owned(),
        label: name.trim_end_matches("__c").replace('_', " "),
        field_type: ftype.to_owned(),
        length: match ftype {
            "string" | "email" | "phone" | "url" | "picklist" => 255,
            "textarea" => 32_000,
            "id" | "reference" => 18,
            _ => 0,
        },
        precision: if matches!(ftype, "double" | "currency" | "percent") {
            18
        } else {
            0
        },
        scale: if matches!(ftype, "currency" | "percent") {
            2
        } else {
            0
        },
        custom: name.ends_with("__c"),
        external_id: false,
        unique: false,
        nillable: true,
        createable: true,
        updateable: true,
        defaulted_on_create: false,
        picklist_values: Vec::new(),
        restricted_picklist: false,
        compound_field_name: None,
        reference_to: Vec::new(),
    }
}

trait Tweak {
    fn len(self, n: u32) -> Self;
    fn required(self) -> Self;
    fn system(self) -> Self;
    fn external(self) -> Self;
    fn picklist(self, values: &[&str], restricted: bool) -> Self;
    fn defaulted(self) -> Self;
    fn number(self, precision: u32, scale: u32) -> Self;
    fn refers(self, to: &str) -> Self;
}

impl Tweak for DescribeField {
    fn len(mut self, n: u32) -> Self {
        self.length = n;
        self
    }
    fn required(mut self) -> Self {
        self.nillable = false;
        self
    }
    fn system(mut self) -> Self {
        self.createable = false;
        self.updateable = false;
        self
    }
    fn external(mut self) -> Self {
        self.external_id = true;
        self.unique = true;
        self
    }
    fn picklist(mut self, values: &[&str], restricted: bool) -> Self {
        self.picklist_values = values
            .iter()
            .enumerate()
            .map(|(i, v)| PicklistEntry {
                value: (*v).to_owned(),
                label: Some((*v).to_owned()),
                active: true,
                default_value: i == 0 && self.defaulted_on_create,
            })
            .collect();
        self.restricted_picklist = restricted;
        self
    }
    fn defaulted(mut self) -> Self {
        self.defaulted_on_create = true;
        if let Some(p) = self.picklist_values.first_mut() {
            p.default_value = true;
        }
        self
    }
    fn number(mut self, precision: u32, scale: u32) -> Self {
        self.precision = precision;
        self.scale = scale;
        self
    }
    fn refers(mut self, to: &str) -> Self {
        self.reference_to = vec![to.to_owned()];
        self
    }
}

fn system_fields() -> Vec<DescribeField> {
    vec![
        field("Id", "id").system().required(),
        field("IsDeleted", "boolean").system().required(),
        field("CreatedDate", "datetime").system().required(),
        field("LastModifiedDate", "datetime").system().required(),
        field("SystemModstamp", "datetime").system().required(),
    ]
}

fn address(prefix: &str) -> Vec<DescribeField> {
    let compound = format!("{prefix}Address");
    let mut out = vec![field(&compound, "address").system()];
    for part in ["Street", "City", "State", "PostalCode", "Country"] {
        let mut f = field(&format!("{prefix}{part}"), "string");
        f.compound_field_name = Some(compound.clone());
        out.push(f);
    }
    out
}

fn social() -> Vec<DescribeField> {
    let mut out = Vec::new();
    for net in ["twitter", "instagram", "linkedin"] {
        out.push(field(&format!("{net}_username__c"), "string").len(50));
        out.push(field(&format!("{net}_url__c"), "url"));
        if net != "linkedin" {
            out.push(field(&format!("{net}_followers__c"), "double").number(18, 0));
        }
    }
    out.push(field("social_engagement_score__c", "double").number(5, 2));
    out.push(field("social_touchpoints__c", "double").number(18, 0));
    out
}

fn object(name: &str, fields: Vec<DescribeField>) -> DescribeSObject {
    let mut all = system_fields();
    all.extend(fields);
    DescribeSObject {
        name: name.to_owned(),
        label: name.to_owned(),
        custom: false,
        createable: true,
        updateable: true,
        deletable: true,
        queryable: true,
        fields: all,
    }
}

const LEAD_SOURCES: &[&str] = &[
    "Web",
    "Phone Inquiry",
    "Partner Referral",
    "Purchased List",
    "Other",
];

/// The simulated org's standard objects with their seed custom fields.
pub(crate) fn standard_objects() -> BTreeMap<String, DescribeSObject> {
    let mut contact = vec![
        field("FirstName", "string").len(40),
        field("LastName", "string").len(80).required(),
        field("Email", "email").len(80),
        field("Phone", "phone").len(40),
        field("Title", "string").len(128),
        field("AccountId", "reference").refers("Account"),
        field("LeadSource", "picklist").picklist(LEAD_SOURCES, false),
        field("External_Id__c", "string").external(),
        field("Customer_Segment__c", "picklist")
            .picklist(&["Enterprise", "Mid-Market", "SMB", "Consumer"], true),
        field("LTV__c", "currency").number(16, 2),
        field("Churn_Risk__c", "percent").number(5, 2),
        field("Last_Activity__c", "date"),
        field("Upsell_Score__c", "double").number(5, 2),
        field("Custom_Field__c", "textarea"),
        field("Photo__c", "base64"),
    ];
    contact.extend(address("Mailing"));
    contact.extend(social());
    let mut lead = vec![
        field("FirstName", "string").len(40),
        field("LastName", "string").len(80).required(),
        field("Company", "string").len(255).required(),
        field("Email", "email").len(80),
        field("Phone", "phone").len(40),
        field("Title", "string").len(128),
        field("Status", "picklist")
            .defaulted()
            .picklist(
                &[
                    "Open - Not Contacted",
                    "Working - Contacted",
                    "Closed - Converted",
                    "Closed - Not Converted",
                ],
                true,
            )
            .required(),
        field("LeadSource", "picklist").picklist(LEAD_SOURCES, false),
        field("External_Id__c", "string").external(),
    ];
    lead.extend(address(""));
    lead.extend(social());
    let mut account = vec![
        field("Name", "string").len(255).required(),
        field("Website", "url"),
        field("Industry", "picklist")
            .picklist(&["Technology", "Finance", "Retail", "Other"], false),
        field("Phone", "phone").len(40),
        field("NumberOfEmployees", "int"),
        field("AnnualRevenue", "currency").number(18, 0),
        field("External_Id__c", "string").external(),
    ];
    account.extend(address("Billing"));
    let opportunity = vec![
        field("Name", "string").len(120).required(),
        field("StageName", "picklist")
            .picklist(
                &[
                    "Prospecting",
                    "Qualification",
                    "Needs Analysis",
                    "Closed Won",
                    "Closed Lost",
                ],
                true,
            )
            .required(),
        field("CloseDate", "date").required(),
        field("Amount", "currency").number(16, 2),
        field("Probability", "percent").number(3, 0),
        field("AccountId", "reference").refers("Account"),
        field("ContactId", "reference").refers("Contact"),
        field("External_Id__c", "string").external(),
    ];
    let task = vec![
        field("Subject", "string").len(255),
        field("Status", "picklist")
            .defaulted()
            .picklist(&["Not Started", "In Progress", "Completed"], true)
            .required(),
        field("ActivityDate", "date"),
        field("WhoId", "reference").refers("Contact"),
        field("WhatId", "reference").refers("Account"),
        field("Description", "textarea"),
    ];
    let note = vec![
        field("Title", "string").len(80).required(),
        field("Body", "textarea"),
        field("ParentId", "reference").refers("Account").required(),
    ];
    let campaign = vec![
        field("Name", "string").len(80).required(),
        field("Type", "picklist").picklist(&["Email", "Webinar", "Social", "Other"], false),
        field("Status", "picklist").picklist(&["Planned", "In Progress", "Completed"], false),
        field("StartDate", "date"),
        field("EndDate", "date"),
        field("External_Id__c", "string").external(),
    ];
    [
        object("Contact", contact),
        object("Lead", lead),
        object("Account", account),
        object("Opportunity", opportunity),
        object("Task", task),
        object("Note", note),
        object("Campaign", campaign),
    ]
    .into_iter()
    .map(|o| (o.name.clone(), o))
    .collect()
}

/// The 3-character key prefix of an object's ids.
pub(crate) fn key_prefix(object: &str) -> &'static str {
    match object {
        "Account" => "001",
        "Note" => "002",
        "Contact" => "003",
        "Opportunity" => "006",
        "Task" => "00T",
        "Lead" => "00Q",
        "Campaign" => "701",
        _ => "a00",
    }
}

fn err(code: &str, message: String, fields: &[&str]) -> RecordError {
    RecordError {
        status_code: code.to_owned(),
        message,
        fields: fields.iter().map(|f| (*f).to_owned()).collect(),
    }
}

fn digits_ok(n: f64, f: &DescribeField) -> bool {
    if f.precision == 0 {
        return true;
    }
    let int_digits = f.precision.saturating_sub(f.scale);
    n.abs() < 10f64.powi(i32::try_from(int_digits).unwrap_or(18))
}

fn looks_like_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s.contains(char::is_whitespace)
}

/// Checks one record's fields for a create (`creating`) or an update, and
/// normalises them. Returns the fields to store, or the first error.
pub(crate) fn validate(
    d: &DescribeSObject,
    input: &Map<String, Json>,
    creating: bool,
) -> Result<Map<String, Json>, RecordError> {
    let mut out = Map::new();
    for (name, value) in input {
        if name == "attributes" {
            continue;
        }
        let Some(f) = d.field(name) else {
            return Err(err(
                "INVALID_FIELD",
                format!("No such column '{name}' on sobject of type {}", d.name),
                &[],
            ));
        };
        if name == "Id" {
            continue;
        }
        if (creating && !f.createable) || (!creating && !f.updateable) {
            return Err(err(
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                format!(
                    "Unable to create/update fields: {}. Please check the security settings of this field and verify that it is read/write for your profile or permission set.",
                    f.name
                ),
                &[&f.name],
            ));
        }
        let v = match value {
            Json::Null => {
                if !f.nillable {
                    return Err(err(
                        "REQUIRED_FIELD_MISSING",
                        format!("Required fields are missing: [{}]", f.name),
                        &[&f.name],
                    ));
                }
                Json::Null
            }
            v => check_value(f, v)?,
        };
        out.insert(f.name.clone(), v);
    }
    if creating {
        let mut missing = Vec::new();
        for f in &d.fields {
            if !f.createable || f.nillable {
                continue;
            }
            if out.get(&f.name).is_none_or(Json::is_null) {
                if f.defaulted_on_create
                    && let Some(p) = f.picklist_values.iter().find(|p| p.default_value)
                {
                    out.insert(f.name.clone(), Json::String(p.value.clone()));
                    continue;
                }
                missing.push(f.name.as_str());
            }
        }
        if !missing.is_empty() {
            return Err(err(
                "REQUIRED_FIELD_MISSING",
                format!("Required fields are missing: [{}]", missing.join(", ")),
                &missing,
            ));
        }
    }
    Ok(out)
}

fn check_value(f: &DescribeField, v: &Json) -> Result<Json, RecordError> {
    let bad_type = || {
        err(
            "INVALID_TYPE_ON_FIELD_IN_RECORD",
            format!("{}: value not of required type: {v}", f.label),
            &[&f.name],
        )
    };
    match f.field_type.as_str() {
        "string" | "textarea" | "phone" | "url" | "email" | "picklist" | "multipicklist"
        | "reference" | "combobox" => {
            let s = match v {
                Json::String(s) => s.clone(),
                Json::Number(n) if f.field_type != "reference" => n.to_string(),
                _ => return Err(bad_type()),
            };
            if f.length > 0 && s.chars().count() > f.length as usize {
                return Err(err(
                    "STRING_TOO_LONG",
                    format!(
                        "{}: data value too large: {} (max length={})",
                        f.label,
                        s.chars().take(40).collect::<String>(),
                        f.length
                    ),
                    &[&f.name],
                ));
            }
            if f.field_type == "email" && !s.is_empty() && !looks_like_email(&s) {
                return Err(err(
                    "INVALID_EMAIL_ADDRESS",
                    format!("{}: invalid email address: {s}", f.label),
                    &[&f.name],
                ));
            }
            if f.field_type == "picklist"
                && f.restricted_picklist
                && !f.picklist_values.iter().any(|p| p.active && p.value == s)
            {
                return Err(err(
                    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                    format!("{}: bad value for restricted picklist field: {s}", f.label),
                    &[&f.name],
                ));
            }
            if f.field_type == "reference"
                && !((s.len() == 15 || s.len() == 18)
                    && s.bytes().all(|b| b.is_ascii_alphanumeric()))
            {
                return Err(err(
                    "MALFORMED_ID",
                    format!("{}: id value of incorrect type: {s}", f.label),
                    &[&f.name],
                ));
            }
            Ok(Json::String(s))
        }
        "double" | "currency" | "percent" | "int" | "long" => {
            let n = match v {
                Json::Number(n) => n.as_f64(),
                Json::String(s) => s.trim().parse::<f64>().ok(),
                _ => None,
            }
            .ok_or_else(bad_type)?;
            if !digits_ok(n, f) || (f.field_type == "int" && n.fract() != 0.0) {
                return Err(err(
                    "NUMBER_OUTSIDE_VALID_RANGE",
                    format!(
                        "{}: value outside of valid range on numeric field: {n}",
                        f.label
                    ),
                    &[&f.name],
                ));
            }
            Ok(serde_json::Number::from_f64(n).map_or(Json::Null, Json::Number))
        }
        "boolean" => match v {
            Json::Bool(_) => Ok(v.clone()),
            Json::String(s) if s == "true" || s == "false" => Ok(Json::Bool(s == "true")),
            _ => Err(bad_type()),
        },
        "date" => match v.as_str().map(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d")) {
            Some(Ok(d)) => Ok(Json::String(d.to_string())),
            _ => Err(bad_type()),
        },
        "datetime" => match v.as_str().and_then(parse_datetime) {
            Some(t) => Ok(Json::String(crate::sim::sf_time(t))),
            None => Err(bad_type()),
        },
        _ => Ok(v.clone()),
    }
}
