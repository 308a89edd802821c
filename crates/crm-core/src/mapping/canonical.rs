//! Canonical field names: the platform-side names every provider's default
//! maps translate to and from (seed 004 "iTechSmart Field" column).

/// Contact fields (seed 004 "Standardized Contact Fields").
pub mod contact {
    /// The contact's id in the CRM.
    pub const CUSTOMER_ID: &str = "customer_id";
    /// Email address (lower-cased on the way in).
    pub const EMAIL: &str = "email";
    /// Given name.
    pub const FIRST_NAME: &str = "first_name";
    /// Family name.
    pub const LAST_NAME: &str = "last_name";
    /// Phone number (E.164 once cleaned).
    pub const PHONE: &str = "phone";
    /// Company name.
    pub const COMPANY: &str = "company";
    /// Job title.
    pub const TITLE: &str = "title";
    /// Lead score.
    pub const LEAD_SCORE: &str = "lead_score";
    /// Lead source (HubSpot: lifecycle stage).
    pub const SOURCE: &str = "source";
    /// When the CRM created the record.
    pub const CREATED_DATE: &str = "created_date";
    /// When the CRM last modified the record.
    pub const LAST_UPDATED: &str = "last_updated";

    /// Every contact field, in the seed's order.
    pub const ALL: &[&str] = &[
        CUSTOMER_ID,
        EMAIL,
        FIRST_NAME,
        LAST_NAME,
        PHONE,
        COMPANY,
        TITLE,
        LEAD_SCORE,
        SOURCE,
        CREATED_DATE,
        LAST_UPDATED,
    ];
}

/// Opportunity (deal) fields (seed 004 "Standardized Opportunity Fields").
pub mod opportunity {
    /// The opportunity's id in the CRM.
    pub const ID: &str = "id";
    /// The id of the contact (or lead) it belongs to.
    pub const CONTACT_ID: &str = "contact_id";
    /// Its name.
    pub const NAME: &str = "name";
    /// Its pipeline stage.
    pub const STAGE: &str = "stage";
    /// Its amount (a decimal).
    pub const VALUE: &str = "value";
    /// Win probability, in percent.
    pub const PROBABILITY: &str = "probability";
    /// Expected close date.
    pub const CLOSE_DATE: &str = "close_date";

    /// Every opportunity field, in the seed's order.
    pub const ALL: &[&str] = &[ID, CONTACT_ID, NAME, STAGE, VALUE, PROBABILITY, CLOSE_DATE];
}

/// Customer fields of the seed 001 data platform (`PRESENTATION.CUSTOMER_360`
/// and the CRM extract), used by [`super::defaults::reverse_etl_map`] and
/// [`super::defaults::inbound_customer_map`].
pub mod customer {
    /// The customer's id in the CRM.
    pub const CRM_ID: &str = "crm_id";
    /// Given name.
    pub const FIRST_NAME: &str = "first_name";
    /// Family name.
    pub const LAST_NAME: &str = "last_name";
    /// Email address.
    pub const EMAIL: &str = "email";
    /// Main phone number.
    pub const PHONE_PRIMARY: &str = "phone_primary";
    /// The CRM account id.
    pub const ACCOUNT_ID: &str = "account_id";
    /// Custom JSON data.
    pub const CUSTOM_FIELD: &str = "custom_field";
    /// Segment name (a picklist in the CRM).
    pub const CUSTOMER_SEGMENT: &str = "customer_segment";
    /// Lifetime value (currency).
    pub const LIFETIME_VALUE: &str = "lifetime_value";
    /// Churn risk, 0 to 1.
    pub const CHURN_RISK_SCORE: &str = "churn_risk_score";
    /// Last activity date.
    pub const LAST_ACTIVITY_DATE: &str = "last_activity_date";
    /// The upsell propensity, a key inside the `propensity_scores` JSON.
    pub const PROPENSITY_UPSELL: &str = "propensity_scores.upsell";
}
