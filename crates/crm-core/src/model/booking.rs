//! The seed 000 booking and client records.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;

use super::{
    BookingId, CampaignId, ClientCode, ClientId, ClientTier, Currency, DspPlatform, MediaType,
    canonical_model,
};

canonical_model! {
    /// A media booking, with every field and type of seed 000's `booking` schema.
    ///
    /// The seed's tracking timestamps (`created_at`, `updated_at`, `synced_at`)
    /// are optional here because a row read from a sheet has none yet; the
    /// store sets them.
    Booking("booking") {
        /// Primary key; also the record id.
        key booking_id: BookingId,
        /// The advertiser client (foreign key), when known.
        client_id: Option<ClientId>,
        /// The advertiser's name as booked.
        client_name: String,
        /// The campaign name as booked.
        campaign_name: String,
        /// The DSP campaign id, once matched.
        campaign_id: Option<CampaignId>,
        /// First day of the flight.
        start_date: NaiveDate,
        /// Last day of the flight.
        end_date: NaiveDate,
        /// Booked budget.
        budget: Decimal,
        /// Currency of the budget; USD when not given.
        currency: Currency = Currency::USD,
        /// Target margin.
        margin_target: Option<Decimal>,
        /// Impressions booked.
        impressions_booked: Option<i64>,
        /// Clicks booked.
        clicks_booked: Option<i64>,
        /// Conversions booked.
        conversions_booked: Option<i64>,
        /// Display, video, native or audio.
        media_type: MediaType,
        /// DV360, TTD, Meta or GoogleAds.
        dsp_platform: DspPlatform,
        /// When the booking was first stored.
        created_at: Option<DateTime<Utc>>,
        /// When the booking was last changed.
        updated_at: Option<DateTime<Utc>>,
        /// When the booking was last synced.
        synced_at: Option<DateTime<Utc>>,
    }
}

canonical_model! {
    /// An advertiser client, with every field and type of seed 000's `client` schema.
    Client("client") {
        /// Primary key; also the record id.
        key client_id: ClientId,
        /// The client's name.
        client_name: String,
        /// A three-character code.
        client_code: ClientCode,
        /// Industry.
        industry: String,
        /// Enterprise, growth or starter.
        tier: ClientTier,
        /// The account manager's name.
        account_manager: String,
        /// Primary contact's email.
        primary_contact_email: String,
        /// Billing email.
        billing_email: String,
        /// Default currency of the client's bookings.
        default_currency: Currency,
        /// IANA time zone name, e.g. `Europe/London`.
        timezone: String,
    }
}
