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
use crm_core::mapping::{DateFormat, TypedDate};
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
/// `Company`), less `LeadScore`, plus `Status` <-> `status`. The id is read
/// into `id`, the canonical Lead's id field (seed 004's `customer_id` names
/// a contact's).
pub fn lead_map() -> Mapping {
    let rest = without(
        defaults::contact_map(Provider::Salesforce),
        &["LeadScore", "Id"],
    );
    std::iter::once(FieldMap::new("Id", "id").direction(Direction::FromCrm))
        .chain(rest.maps().iter().cloned())
        .collect::<Mapping>()
        .with(FieldMap::new("status", "Status").direction(Direction::Bidirectional))
}

/// Salesforce date-times (`2024-03-01T12:00:00.000+0000`) to typed
/// date-times, as the seed 004 maps do for contacts.
fn timestamp() -> Transform {
    Transform::DateFormat(DateFormat::iso(TypedDate::DateTime))
}

/// `Account` <-> canonical `Company`; system timestamps become typed
/// date-times.
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
        from("CreatedDate", "created_date").then(timestamp()),
        from("LastModifiedDate", "last_updated").then(timestamp()),
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

    fn utc(s: &str) -> Value {
        Value::DateTime(
            chrono::DateTime::parse_from_rfc3339(s)
                .unwrap()
                .with_timezone(&chrono::Utc),
        )
    }

    /// A Lead as the connector reads it: Salesforce field names and
    /// date-times in Salesforce's `+0000` form.
    fn sf_lead() -> Record {
        Record::new()
            .with_id("00Q000000000001AAA")
            .with("Id", "00Q000000000001AAA")
            .with("FirstName", "  grace ")
            .with("LastName", "HOPPER")
            .with("Email", " Grace.Hopper@Navy.MIL ")
            .with("Phone", "+1 (202) 555-0143")
            .with("Company", "US Navy")
            .with("Title", "Rear Admiral")
            .with("LeadSource", "Web")
            .with("Status", "Open - Not Contacted")
            .with("LeadScore", 90)
            .with("CreatedDate", "2024-03-01T12:00:00.000+0000")
            .with("LastModifiedDate", "2024-03-02T08:30:15.250+0000")
    }

    #[test]
    fn lead_from_salesforce_uses_seed_transforms() {
        let c = lead_map().apply(&sf_lead(), Flow::FromCrm).unwrap();
        assert_eq!(c.text("first_name"), Some("Grace"));
        assert_eq!(c.text("last_name"), Some("Hopper"));
        assert_eq!(c.text("email"), Some("grace.hopper@navy.mil"));
        assert_eq!(c.text("phone"), Some("+12025550143"));
        assert_eq!(c.text("company"), Some("US Navy"));
        assert_eq!(c.text("title"), Some("Rear Admiral"));
        assert_eq!(c.text("source"), Some("Web"));
        assert_eq!(c.text("status"), Some("Open - Not Contacted"));
        assert_eq!(c.get("created_date"), Some(&utc("2024-03-01T12:00:00Z")));
        assert_eq!(
            c.get("last_updated"),
            Some(&utc("2024-03-02T08:30:15.250Z"))
        );
        // Lead has no standard LeadScore: it is not read.
        assert!(c.get("lead_score").is_none());
        assert_eq!(c.id.as_ref().unwrap().as_str(), "00Q000000000001AAA");

        // The mapped record is a valid canonical Lead.
        let lead = crm_core::model::Lead::try_from(&c).unwrap();
        assert_eq!(lead.id.unwrap().to_string(), "00Q000000000001AAA");
        assert_eq!(lead.first_name.as_deref(), Some("Grace"));
        assert_eq!(lead.email.as_deref(), Some("grace.hopper@navy.mil"));
        assert_eq!(lead.phone.as_deref(), Some("+12025550143"));
        assert_eq!(lead.status.as_deref(), Some("Open - Not Contacted"));
        assert_eq!(lead.lead_score, None);
        assert_eq!(
            lead.created_date.unwrap().to_rfc3339(),
            "2024-03-01T12:00:00+00:00"
        );
    }

    #[test]
    fn lead_id_survives_without_a_record_id() {
        // A row whose id is only in its fields (e.g. read back from a file):
        // the canonical Lead finds its id in the mapped `id` field.
        let mut sf = sf_lead();
        sf.id = None;
        let c = lead_map().apply(&sf, Flow::FromCrm).unwrap();
        assert_eq!(c.text("id"), Some("00Q000000000001AAA"));
        let lead = crm_core::model::Lead::try_from(&c).unwrap();
        assert_eq!(lead.id.unwrap().to_string(), "00Q000000000001AAA");
    }

    #[test]
    fn lead_to_salesforce_round_trip() {
        let lead = crm_core::model::Lead {
            id: None,
            email: Some(" Ada@Example.COM".into()),
            first_name: Some("ada".into()),
            last_name: Some("de la LOVELACE".into()),
            phone: Some("+44 20 7946 0018".into()),
            company: Some("Analytical Engines Ltd".into()),
            title: Some("Mathematician".into()),
            source: Some("Partner Referral".into()),
            status: Some("Working - Contacted".into()),
            lead_score: Some(rust_decimal::Decimal::from(75)),
            created_date: None,
            last_updated: None,
        };
        let sf = lead_map().apply(&Record::from(lead), Flow::ToCrm).unwrap();
        assert_eq!(sf.text("FirstName"), Some("Ada"));
        assert_eq!(sf.text("LastName"), Some("De La Lovelace"));
        assert_eq!(sf.text("Email"), Some("ada@example.com"));
        assert_eq!(sf.text("Phone"), Some("+442079460018"));
        assert_eq!(sf.text("Company"), Some("Analytical Engines Ltd"));
        assert_eq!(sf.text("Title"), Some("Mathematician"));
        assert_eq!(sf.text("LeadSource"), Some("Partner Referral"));
        assert_eq!(sf.text("Status"), Some("Working - Contacted"));
        // The CRM owns ids and system stamps; Lead has no LeadScore.
        for f in ["Id", "CreatedDate", "LastModifiedDate", "LeadScore"] {
            assert!(sf.get(f).is_none(), "{f} is not written");
        }
        // And back: the same canonical values.
        let back = lead_map().apply(&sf, Flow::FromCrm).unwrap();
        assert_eq!(back.text("first_name"), Some("Ada"));
        assert_eq!(back.text("last_name"), Some("De La Lovelace"));
        assert_eq!(back.text("email"), Some("ada@example.com"));
        assert_eq!(back.text("phone"), Some("+442079460018"));
        assert_eq!(back.text("status"), Some("Working - Contacted"));
    }

    #[test]
    fn account_from_salesforce_to_company() {
        let sf = Record::new()
            .with_id("001000000000001AAA")
            .with("Id", "001000000000001AAA")
            .with("Name", "  Acme Corp ")
            .with("Website", "acme.example.com")
            .with("Industry", "Technology")
            .with("Phone", "+1 415.555.0100")
            .with("NumberOfEmployees", 250)
            .with("AnnualRevenue", Value::Decimal("1250000".parse().unwrap()))
            .with("CreatedDate", "2023-11-05T09:00:00.000+0000")
            .with("LastModifiedDate", "2024-01-15T17:45:00.000+0000");
        let c = account_map().apply(&sf, Flow::FromCrm).unwrap();
        assert_eq!(c.text("id"), Some("001000000000001AAA"));
        assert_eq!(c.text("name"), Some("Acme Corp"));
        assert_eq!(c.text("domain"), Some("acme.example.com"));
        assert_eq!(c.text("industry"), Some("Technology"));
        assert_eq!(c.text("phone"), Some("+14155550100"));
        assert_eq!(c.get("employee_count"), Some(&Value::Int(250)));
        assert_eq!(
            c.get("annual_revenue").unwrap().as_decimal(),
            Some("1250000".parse().unwrap())
        );
        assert_eq!(c.get("created_date"), Some(&utc("2023-11-05T09:00:00Z")));
        assert_eq!(c.get("last_updated"), Some(&utc("2024-01-15T17:45:00Z")));

        let company = crm_core::model::Company::try_from(&c).unwrap();
        assert_eq!(company.id.unwrap().to_string(), "001000000000001AAA");
        assert_eq!(company.name, "Acme Corp");
        assert_eq!(company.phone.as_deref(), Some("+14155550100"));
        assert_eq!(company.employee_count, Some(250));
        assert_eq!(company.annual_revenue, Some("1250000".parse().unwrap()));
    }

    #[test]
    fn company_to_salesforce_account_round_trip() {
        let company = crm_core::model::Company {
            id: None,
            name: " Initech ".into(),
            domain: Some("initech.example".into()),
            industry: Some("Finance".into()),
            phone: Some("+1 (512) 555-0199".into()),
            employee_count: Some(42),
            annual_revenue: Some("3500000.50".parse().unwrap()),
            created_date: Some(chrono::Utc::now()),
            last_updated: None,
        };
        let sf = account_map()
            .apply(&Record::from(company), Flow::ToCrm)
            .unwrap();
        assert_eq!(sf.text("Name"), Some("Initech"));
        assert_eq!(sf.text("Website"), Some("initech.example"));
        assert_eq!(sf.text("Industry"), Some("Finance"));
        assert_eq!(sf.text("Phone"), Some("+15125550199"));
        assert_eq!(sf.get("NumberOfEmployees"), Some(&Value::Int(42)));
        assert_eq!(
            sf.get("AnnualRevenue").unwrap().as_decimal(),
            Some("3500000.50".parse().unwrap())
        );
        for f in ["Id", "CreatedDate", "LastModifiedDate"] {
            assert!(sf.get(f).is_none(), "{f} is not written");
        }
        let back = account_map().apply(&sf, Flow::FromCrm).unwrap();
        assert_eq!(back.text("name"), Some("Initech"));
        assert_eq!(back.text("phone"), Some("+15125550199"));
        assert_eq!(back.get("employee_count"), Some(&Value::Int(42)));
    }

    /// Every field the default maps write to Salesforce exists on the
    /// simulated org's object and can be written.
    #[cfg(feature = "sim")]
    #[test]
    fn default_maps_write_createable_fields() {
        let control = crate::sim::SalesforceSimulator::default().control();
        for object in ["Contact", "Lead", "Account", "Opportunity"] {
            let describe = control.describe(object).unwrap();
            for written in default_map(object).unwrap().fields_written(Flow::ToCrm) {
                let f = describe
                    .field(written)
                    .unwrap_or_else(|| panic!("{object}.{written} is not a field"));
                assert!(f.createable, "{object}.{written} is not createable");
            }
            for read in default_map(object).unwrap().fields_read(Flow::FromCrm) {
                assert!(
                    describe.field(read).is_some(),
                    "{object}.{read} is not a field"
                );
            }
        }
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
