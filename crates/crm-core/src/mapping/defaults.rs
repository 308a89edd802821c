//! Default field maps between the [canonical](super::canonical) names and each
//! provider's standard fields, as data the provider crates start from.
//!
//! Contact and opportunity maps follow seed 004's "Standardized Contact
//! Fields" and "Standardized Opportunity Fields" tables for Salesforce,
//! HubSpot and Marketo. Pipedrive is not in that seed; its maps use the
//! standard field names of Pipedrive's API v1 `persons` and `deals` objects
//! and say so on [`Provider::Pipedrive`].
//!
//! Conventions shared by all providers:
//!
//! - Ids (`Id`, `id`) and system timestamps (`CreatedDate`, `createdate`,
//!   `LastModifiedDate`, ...) are `from_crm` only: the CRM owns them.
//!   HubSpot's `hs_lead_score` is computed by HubSpot, so it is `from_crm` too.
//!   Everything else is `bidirectional`.
//! - The seed 001 normalisations apply to every provider, so the platform
//!   holds one form whichever CRM a contact came from: first and last name
//!   `trim` then `initcap`, email `trim` then `lower`, phone cleanup to E.164
//!   (no default country: set one with
//!   [`Mapping::with_phone_default_country`]). Timestamps go through
//!   `date_format` to typed date-times, close dates to typed dates.
//!   Name, email and phone maps are marked `pii`.
//! - Seed 004 cells that are not fields are left out, not mapped to a
//!   made-up field: HubSpot's opportunity `contact_id` is "(via
//!   associations)" (the deal-to-contact association API, which the HubSpot
//!   crate reads separately) and its `probability` is "(custom)" (a portal
//!   property whose name differs per account; add it to the mapping
//!   yourself). [`omitted`] lists these cells.

use std::fmt;

use super::canonical::{contact, customer, opportunity};
use super::transform::{DateFormat, Scale, Transform, TypedDate};
use super::{Direction, FieldMap, Mapping};

/// A CRM with default maps here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Provider {
    /// Salesforce (seed 004).
    Salesforce,
    /// HubSpot (seed 004); properties are read flattened (`firstname`, not
    /// `properties.firstname`).
    HubSpot,
    /// Marketo (seed 004); contacts are leads.
    Marketo,
    /// Pipedrive: not in seed 004. Contacts are `persons` (`email` and `phone`
    /// are read from the first entry of their lists, `email.0.value`, and
    /// written as plain values); opportunities are `deals` (`title`,
    /// `stage_id`, `value`, `probability`, `expected_close_date`,
    /// `person_id`). Pipedrive has no standard person title, lead score or
    /// source; those canonical fields are not mapped.
    Pipedrive,
}

impl Provider {
    /// Every provider.
    pub const ALL: [Provider; 4] = [
        Provider::Salesforce,
        Provider::HubSpot,
        Provider::Marketo,
        Provider::Pipedrive,
    ];

    /// The connector kind name (`"salesforce"`, `"hubspot"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Salesforce => "salesforce",
            Provider::HubSpot => "hubspot",
            Provider::Marketo => "marketo",
            Provider::Pipedrive => "pipedrive",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A seed 004 cell that is deliberately not a field map, with the reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Omitted {
    /// The provider.
    pub provider: Provider,
    /// The canonical field.
    pub canonical: &'static str,
    /// The seed's cell text.
    pub cell: &'static str,
    /// How the field is obtained instead.
    pub reason: &'static str,
}

/// The seed 004 cells that are not field maps.
pub fn omitted() -> &'static [Omitted] {
    &[
        Omitted {
            provider: Provider::HubSpot,
            canonical: opportunity::CONTACT_ID,
            cell: "(via associations)",
            reason: "read through the deal-to-contact associations API, not a deal property",
        },
        Omitted {
            provider: Provider::HubSpot,
            canonical: opportunity::PROBABILITY,
            cell: "(custom)",
            reason: "a custom deal property whose name is chosen per portal",
        },
    ]
}

fn trimmed(t: Transform) -> Vec<Transform> {
    vec![Transform::Trim, t]
}

fn timestamp() -> Vec<Transform> {
    vec![Transform::DateFormat(DateFormat::iso(TypedDate::DateTime))]
}

fn date() -> Vec<Transform> {
    vec![Transform::DateFormat(DateFormat::iso(TypedDate::Date))]
}

/// A bidirectional map, canonical (platform) name as source.
fn both(canonical: &str, crm: &str, transform: Vec<Transform>, pii: bool) -> FieldMap {
    FieldMap {
        source: canonical.to_owned(),
        target: crm.to_owned(),
        direction: Direction::Bidirectional,
        transform,
        pii,
    }
}

/// A from-CRM map, CRM name as source.
fn inbound(crm: &str, canonical: &str, transform: Vec<Transform>, pii: bool) -> FieldMap {
    FieldMap {
        source: crm.to_owned(),
        target: canonical.to_owned(),
        direction: Direction::FromCrm,
        transform,
        pii,
    }
}

/// A to-CRM map, canonical name as source.
fn outbound(canonical: &str, crm: &str, transform: Vec<Transform>, pii: bool) -> FieldMap {
    FieldMap {
        source: canonical.to_owned(),
        target: crm.to_owned(),
        direction: Direction::ToCrm,
        transform,
        pii,
    }
}

/// The default contact map of a provider (Salesforce Contact, HubSpot
/// contact, Marketo lead, Pipedrive person), canonical names on the platform
/// side. See the [module docs](self) for directions and transforms.
pub fn contact_map(provider: Provider) -> Mapping {
    use contact::*;
    let name = || trimmed(Transform::Initcap);
    let email = || trimmed(Transform::Lower);
    let phone = || vec![Transform::phone(None)];
    if provider == Provider::Pipedrive {
        return Mapping::from_iter([
            inbound("id", CUSTOMER_ID, vec![], false),
            inbound("email.0.value", EMAIL, email(), true),
            outbound(EMAIL, "email", email(), true),
            inbound("first_name", FIRST_NAME, name(), true),
            inbound("last_name", LAST_NAME, name(), true),
            inbound("phone.0.value", PHONE, phone(), true),
            outbound(PHONE, "phone", phone(), true),
            inbound("org_name", COMPANY, vec![], false),
            inbound("add_time", CREATED_DATE, timestamp(), false),
            inbound("update_time", LAST_UPDATED, timestamp(), false),
        ]);
    }
    // Columns of seed 004 "Standardized Contact Fields".
    let [
        id,
        em,
        first,
        last,
        ph,
        company,
        title,
        score,
        source,
        created,
        updated,
    ] = match provider {
        Provider::Salesforce => [
            "Id",
            "Email",
            "FirstName",
            "LastName",
            "Phone",
            "Company",
            "Title",
            "LeadScore",
            "LeadSource",
            "CreatedDate",
            "LastModifiedDate",
        ],
        Provider::HubSpot => [
            "id",
            "email",
            "firstname",
            "lastname",
            "phone",
            "company",
            "jobtitle",
            "hs_lead_score",
            "lifecyclestage",
            "createdate",
            "lastmodifieddate",
        ],
        Provider::Marketo | Provider::Pipedrive => [
            "id",
            "email",
            "firstName",
            "lastName",
            "phone",
            "company",
            "title",
            "leadScore",
            "leadSource",
            "createdAt",
            "updatedAt",
        ],
    };
    let score_map = if provider == Provider::HubSpot {
        inbound(score, LEAD_SCORE, vec![], false)
    } else {
        both(LEAD_SCORE, score, vec![], false)
    };
    Mapping::from_iter([
        inbound(id, CUSTOMER_ID, vec![], false),
        both(EMAIL, em, email(), true),
        both(FIRST_NAME, first, name(), true),
        both(LAST_NAME, last, name(), true),
        both(PHONE, ph, phone(), true),
        both(COMPANY, company, vec![], false),
        both(TITLE, title, vec![], false),
        score_map,
        both(SOURCE, source, vec![], false),
        inbound(created, CREATED_DATE, timestamp(), false),
        inbound(updated, LAST_UPDATED, timestamp(), false),
    ])
}

/// The default opportunity map of a provider (Salesforce Opportunity,
/// HubSpot deal, Marketo opportunity, Pipedrive deal). HubSpot has no
/// `contact_id` or `probability` map (see [`omitted`]).
pub fn opportunity_map(provider: Provider) -> Mapping {
    use opportunity::*;
    match provider {
        Provider::Salesforce => Mapping::from_iter([
            inbound("Id", ID, vec![], false),
            both(CONTACT_ID, "ContactId", vec![], false),
            both(NAME, "Name", vec![], false),
            both(STAGE, "StageName", vec![], false),
            both(VALUE, "Amount", vec![], false),
            both(PROBABILITY, "Probability", vec![], false),
            both(CLOSE_DATE, "CloseDate", date(), false),
        ]),
        Provider::HubSpot => Mapping::from_iter([
            inbound("id", ID, vec![], false),
            both(NAME, "dealname", vec![], false),
            both(STAGE, "dealstage", vec![], false),
            both(VALUE, "amount", vec![], false),
            both(CLOSE_DATE, "closedate", date(), false),
        ]),
        Provider::Marketo => Mapping::from_iter([
            inbound("id", ID, vec![], false),
            both(CONTACT_ID, "leadId", vec![], false),
            both(NAME, "name", vec![], false),
            both(STAGE, "stage", vec![], false),
            both(VALUE, "amount", vec![], false),
            both(PROBABILITY, "probability", vec![], false),
            both(CLOSE_DATE, "closeDate", date(), false),
        ]),
        Provider::Pipedrive => Mapping::from_iter([
            inbound("id", ID, vec![], false),
            inbound("person_id.value", CONTACT_ID, vec![], false),
            outbound(CONTACT_ID, "person_id", vec![], false),
            both(NAME, "title", vec![], false),
            both(STAGE, "stage_id", vec![], false),
            both(VALUE, "value", vec![], false),
            both(PROBABILITY, "probability", vec![], false),
            both(CLOSE_DATE, "expected_close_date", date(), false),
        ]),
    }
}

/// Seed 001 "Data Platform to CRM": the reverse-ETL push of
/// `PRESENTATION.CUSTOMER_360` to custom Salesforce Contact fields, all
/// `to_crm`:
///
/// | platform field | Salesforce field | transform |
/// |---|---|---|
/// | `customer_segment` | `Customer_Segment__c` | direct |
/// | `lifetime_value` | `LTV__c` | `round(2)` |
/// | `churn_risk_score` | `Churn_Risk__c` | `scale` 0-1 -> 0-100 |
/// | `last_activity_date` | `Last_Activity__c` | `date_format` to a date |
/// | `propensity_scores.upsell` | `Upsell_Score__c` | direct |
///
/// The last row comes from the seed's reverse-ETL YAML. The seed's Python
/// example names two fields differently (`Lifetime_Value__c`,
/// `Last_Platform_Activity__c`); the table's names are used here. The
/// upsert key (`crm_id`) is the record id, carried over by
/// [`Mapping::apply`], not a field map.
pub fn reverse_etl_map() -> Mapping {
    use customer::*;
    let percent = Transform::Scale(Scale::unit_to_percent());
    Mapping::from_iter([
        outbound(CUSTOMER_SEGMENT, "Customer_Segment__c", vec![], false),
        outbound(LIFETIME_VALUE, "LTV__c", vec![Transform::Round(2)], false),
        outbound(CHURN_RISK_SCORE, "Churn_Risk__c", vec![percent], false),
        outbound(LAST_ACTIVITY_DATE, "Last_Activity__c", date(), false),
        outbound(PROPENSITY_UPSELL, "Upsell_Score__c", vec![], false),
    ])
}

/// Seed 001 "CRM to Data Platform": the Salesforce Contact extract into the
/// platform's customer table, all `from_crm`: `Id` -> `crm_id`, `FirstName`
/// and `LastName` `initcap`, `Email` `lower`, `Phone` -> `phone_primary`
/// cleaned to E.164, `AccountId` -> `account_id`, `Custom_Field__c` ->
/// `custom_field` parsed as JSON.
pub fn inbound_customer_map() -> Mapping {
    use customer::*;
    Mapping::from_iter([
        inbound("Id", CRM_ID, vec![], false),
        inbound("FirstName", FIRST_NAME, vec![Transform::Initcap], true),
        inbound("LastName", LAST_NAME, vec![Transform::Initcap], true),
        inbound("Email", EMAIL, vec![Transform::Lower], true),
        inbound("Phone", PHONE_PRIMARY, vec![Transform::phone(None)], true),
        inbound("AccountId", ACCOUNT_ID, vec![], false),
        inbound(
            "Custom_Field__c",
            CUSTOM_FIELD,
            vec![Transform::ParseJson],
            false,
        ),
    ])
}
