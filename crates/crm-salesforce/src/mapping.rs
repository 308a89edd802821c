//! Default field maps between Salesforce objects and the canonical models,
//! built on [`crm_core::mapping::defaults`] (seed 004's tables and seed 003's
//! transforms: names `INITCAP`, email `LOWER`, phone cleaned to E.164).
//!
//! | object | canonical model | map |
//! |---|---|---|
//! | `Contact` | `Contact` | [`contact_map`] |
//! | `Lead` | `Lead` | [`lead_map`] |
//! | `Account` | `Company` | [`account_map`] |
//! | `Opportunity` | `Deal` | [`opportunity_map`] |
//!
//! Custom fields are documented maps to add to these:
//!
//! - seed 001 reverse ETL, [`reverse_etl_map`] (`Contact`, all `to_crm`):
//!   `customer_segment` -> `Customer_Segment__c` (a picklist),
//!   `lifetime_value` -> `LTV__c` rounded to 2 decimals,
//!   `churn_risk_score` -> `Churn_Risk__c` scaled 0-1 to 0-100,
//!   `last_activity_date` -> `Last_Activity__c` as a date,
//!   `propensity_scores.upsell` -> `Upsell_Score__c`;
//! - seed 002 social profile fields, [`social_map`] (`Contact` and `Lead`,
//!   bidirectional): `twitter_username` <-> `twitter_username__c`, and the
//!   same for `twitter_url`, `twitter_followers`, `instagram_username`,
//!   `instagram_url`, `instagram_followers`, `linkedin_username`,
//!   `linkedin_url`, `social_engagement_score`, `social_touchpoints`.

use crm_core::mapping::defaults::{self, Provider};
use crm_core::{Direction, FieldMap, Mapping, Transform};

/// Seed 004's contact fields that Salesforce's Contact object lacks: a
/// contact's company is its Account (`AccountId`), and `LeadScore` is no
/// standard field of Contact or Lead.
const NOT_ON_CONTACT: &[&str] = &["Company", "LeadScore"];

fn without(mapping: Mapping, crm_fields: &[&str]) -> Mapping {
    mapping
        .maps()
        .iter()
        .filter(|m| {
            let crm = match m.direction {
                Direction::FromCrm => &m.source,
                _ => &m.target,
            };
            !crm_fields.contains(&crm.as_str())
        })
        .cloned()
        .collect()
}

/// `Contact` <-> canonical `Contact`: seed 004's contact table less the
/// fields Contact does not have, plus `AccountId` <-> `account_id`.
pub fn contact_map() -> Mapping {
    without(defaults::contact_map(Provider::Salesforce), NOT_ON_CONTACT)
        .with(FieldMap::new("account_id", "AccountId").direction(Direction::Bidirectional))
}

/// `Lead` <-> canonical `Lead`: seed 004's contact table (Lead has
/// `Company`), less `LeadScore`, plus `Status` <-> `status`.
pub fn lead_map() -> Mapping {
    without(defaults::contact_map(Provider::Salesforce), &["LeadScore"])
        .with(FieldMap::new("status", "Status").direction(Direction::Bidirectional))
}

/// `Account` <-> canonical `Company`.
pub fn account_map() -> Mapping {
    let both = |canonical: &str, crm: &str| {
        FieldMap::new(canonical, crm).direction(Direction::Bidirectional)
    };
    let from =
        |crm: &str, canonical: &str| FieldMap::new(crm, canonical).direction(Direction::FromCrm);
    Mapping::from_iter([
        from("Id", "id"),
        both("name", "Name").then(Transform::Trim),
        both("domain", "Website"),
        both("industry", "Industry"),
        both("phone", "Phone").then(Transform::phone(None)),
        both("employee_count", "NumberOfEmployees"),
        both("annual_revenue", "AnnualRevenue"),
        from("CreatedDate", "created_date"),
        from("LastModifiedDate", "last_updated"),
    ])
}

/// `Opportunity` <-> canonical `Deal` (seed 004's opportunity table), plus
/// `AccountId` <-> `company_id`.
pub fn opportunity_map() -> Mapping {
    defaults::opportunity_map(Provider::Salesforce)
        .with(FieldMap::new("company_id", "AccountId").direction(Direction::Bidirectional))
}

/// Seed 001's reverse-ETL push to custom `Contact` fields (see the module docs).
pub fn reverse_etl_map() -> Mapping {
    defaults::reverse_etl_map()
}

/// Seed 002's social profile fields (see the module docs).
pub fn social_map() -> Mapping {
    SOCIAL_FIELDS
        .iter()
        .map(|f| FieldMap::new(*f, format!("{f}__c")).direction(Direction::Bidirectional))
        .collect()
}

/// The canonical names of seed 002's social fields; the Salesforce field is
/// the name with `__c`.
pub const SOCIAL_FIELDS: &[&str] = &[
    "twitter_username",
    "twitter_url",
    "twitter_followers",
    "instagram_username",
    "instagram_url",
    "instagram_followers",
    "linkedin_username",
    "linkedin_url",
    "social_engagement_score",
    "social_touchpoints",
];

/// The default map of a standard object, if it has one.
pub fn default_map(object: &str) -> Option<Mapping> {
    match object {
        "Contact" => Some(contact_map()),
        "Lead" => Some(lead_map()),
        "Account" => Some(account_map()),
        "Opportunity" => Some(opportunity_map()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crm_core::mapping::Flow;
    use crm_core::{Record, Value};

    #[test]
    fn contact_round_trip_uses_seed_transforms() {
        let sf = Record::new()
            .with_id("003A")
            .with("Id", "003A")
            .with("FirstName", "ada")
            .with("LastName", "LOVELACE")
            .with("Email", " Ada@Example.COM ")
            .with("Phone", "+44 (20) 7946-0018")
            .with("AccountId", "001B");
        let c = contact_map().apply(&sf, Flow::FromCrm).unwrap();
        assert_eq!(c.text("first_name"), Some("Ada"));
        assert_eq!(c.text("last_name"), Some("Lovelace"));
        assert_eq!(c.text("email"), Some("ada@example.com"));
        assert_eq!(c.text("phone"), Some("+442079460018"));
        assert_eq!(c.text("account_id"), Some("001B"));
        assert_eq!(c.text("customer_id"), Some("003A"));
        let back = contact_map().apply(&c, Flow::ToCrm).unwrap();
        assert!(back.get("Company").is_none() && back.get("LeadScore").is_none());
        assert_eq!(back.text("LastName"), Some("Lovelace"));
    }

    #[test]
    fn reverse_etl_and_social() {
        let row = Record::new()
            .with_id("003A")
            .with("customer_segment", "Enterprise")
            .with(
                "lifetime_value",
                Value::Decimal("1234.567".parse().unwrap()),
            )
            .with("churn_risk_score", Value::Decimal("0.42".parse().unwrap()))
            .with("last_activity_date", "2024-05-01");
        let sf = reverse_etl_map().apply(&row, Flow::ToCrm).unwrap();
        assert_eq!(sf.get("LTV__c").unwrap().to_string(), "1234.57");
        assert_eq!(
            sf.get("Churn_Risk__c").unwrap().as_decimal().unwrap(),
            "42".parse::<rust_decimal::Decimal>().unwrap()
        );
        assert_eq!(
            sf.get("Last_Activity__c").unwrap().to_string(),
            "2024-05-01"
        );
        let social = social_map()
            .apply(&Record::new().with("twitter_username", "ada"), Flow::ToCrm)
            .unwrap();
        assert_eq!(social.text("twitter_username__c"), Some("ada"));
        assert_eq!(social_map().len(), 10);
        for o in ["Contact", "Lead", "Account", "Opportunity"] {
            assert!(default_map(o).is_some());
        }
    }
}
