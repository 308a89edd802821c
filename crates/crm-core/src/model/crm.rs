//! CRM objects: contacts, leads, companies, deals, activities, notes, campaigns.
//!
//! Field names follow seed 004's "Standardized Contact Fields" and
//! "Standardized Opportunity Fields" tables (`first_name`, `lead_score`,
//! `close_date`, ...), so the default field maps of every provider crate
//! target the same names.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;

use super::{
    ActivityId, CampaignId, CompanyId, ContactId, DealId, DspPlatform, LeadId, NoteId,
    canonical_model,
};

canonical_model! {
    /// A person in a CRM (Salesforce Contact, HubSpot contact, Pipedrive person,
    /// Marketo lead). Seed 004's `customer_id` is the record id.
    Contact("contact") {
        id: ContactId | "customer_id" | "id",
        /// Email address, the usual dedupe key.
        email: Option<String>,
        /// Given name.
        first_name: Option<String>,
        /// Family name.
        last_name: Option<String>,
        /// Phone number (E.164 after cleaning).
        phone: Option<String>,
        /// Company name.
        company: Option<String>,
        /// Job title.
        title: Option<String>,
        /// Lead score.
        lead_score: Option<Decimal>,
        /// Lead source or lifecycle stage.
        source: Option<String>,
        /// The account (company) the contact belongs to.
        account_id: Option<CompanyId>,
        /// When the CRM created the record.
        created_date: Option<DateTime<Utc>>,
        /// When the CRM last changed the record.
        last_updated: Option<DateTime<Utc>>,
    }
}

canonical_model! {
    /// A lead (Salesforce Lead, Pipedrive lead, a seed 002 lead sync).
    Lead("lead") {
        id: LeadId | "id",
        /// Email address.
        email: Option<String>,
        /// Given name.
        first_name: Option<String>,
        /// Family name.
        last_name: Option<String>,
        /// Phone number.
        phone: Option<String>,
        /// Company name.
        company: Option<String>,
        /// Job title.
        title: Option<String>,
        /// Where the lead came from (e.g. `twitter_dm`).
        source: Option<String>,
        /// Lead status (e.g. `new`).
        status: Option<String>,
        /// Lead score.
        lead_score: Option<Decimal>,
        /// When the CRM created the record.
        created_date: Option<DateTime<Utc>>,
        /// When the CRM last changed the record.
        last_updated: Option<DateTime<Utc>>,
    }
}

canonical_model! {
    /// A company (Salesforce Account, HubSpot company, Pipedrive organization).
    Company("company") {
        id: CompanyId | "id",
        /// Company name.
        name: String,
        /// Web domain.
        domain: Option<String>,
        /// Industry.
        industry: Option<String>,
        /// Main phone number.
        phone: Option<String>,
        /// Number of employees.
        employee_count: Option<i64>,
        /// Annual revenue.
        annual_revenue: Option<Decimal>,
        /// When the CRM created the record.
        created_date: Option<DateTime<Utc>>,
        /// When the CRM last changed the record.
        last_updated: Option<DateTime<Utc>>,
    }
}

canonical_model! {
    /// A deal (Salesforce Opportunity, HubSpot deal, Pipedrive deal, Marketo
    /// opportunity), with seed 004's opportunity fields.
    Deal("deal") {
        id: DealId | "id",
        /// The primary contact.
        contact_id: Option<ContactId>,
        /// The company.
        company_id: Option<CompanyId>,
        /// Deal name.
        name: String,
        /// Pipeline stage, in the CRM's own words.
        stage: Option<String>,
        /// Deal value.
        value: Option<Decimal>,
        /// Win probability in percent.
        probability: Option<Decimal>,
        /// Expected close date.
        close_date: Option<NaiveDate>,
        /// When the CRM created the record.
        created_date: Option<DateTime<Utc>>,
        /// When the CRM last changed the record.
        last_updated: Option<DateTime<Utc>>,
    }
}

canonical_model! {
    /// An activity (Salesforce Task, HubSpot engagement, Pipedrive activity).
    Activity("activity") {
        id: ActivityId | "id",
        /// Kind of activity in the CRM's words (`call`, `email`, `meeting`, `task`).
        activity_type: String,
        /// Subject line.
        subject: Option<String>,
        /// When it happened or is due.
        due_at: Option<DateTime<Utc>>,
        /// Whether it is done.
        done: Option<bool>,
        /// Related contact.
        contact_id: Option<ContactId>,
        /// Related deal.
        deal_id: Option<DealId>,
        /// Related company.
        company_id: Option<CompanyId>,
        /// Free-text description.
        description: Option<String>,
        /// When the CRM last changed the record.
        last_updated: Option<DateTime<Utc>>,
    }
}

canonical_model! {
    /// A note attached to a contact, deal or company.
    Note("note") {
        id: NoteId | "id",
        /// The note's text.
        body: String,
        /// Related contact.
        contact_id: Option<ContactId>,
        /// Related deal.
        deal_id: Option<DealId>,
        /// Related company.
        company_id: Option<CompanyId>,
        /// When the CRM created the note.
        created_date: Option<DateTime<Utc>>,
        /// When the CRM last changed the record.
        last_updated: Option<DateTime<Utc>>,
    }
}

canonical_model! {
    /// A campaign that bookings are matched to (seed 000 campaign matching:
    /// `campaign.id`, `campaign.name`, `advertiser_name`, flight dates).
    Campaign("campaign") {
        /// Primary key; also the record id.
        key campaign_id: CampaignId,
        /// Campaign name.
        name: String,
        /// The advertiser the campaign runs for.
        advertiser_name: Option<String>,
        /// First day.
        start_date: Option<NaiveDate>,
        /// Last day.
        end_date: Option<NaiveDate>,
        /// Status in the DSP or CRM (`active`, `paused`, ...).
        status: Option<String>,
        /// The DSP running it.
        dsp_platform: Option<DspPlatform>,
        /// Budget.
        budget: Option<Decimal>,
    }
}
