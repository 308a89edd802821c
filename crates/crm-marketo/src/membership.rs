//! Program, static list and smart campaign membership: what attribution
//! needs from Marketo besides the lead database.
//!
//! | call | Marketo endpoint |
//! | --- | --- |
//! | [`Marketo::program_members`] | `GET /rest/v1/leads/programs/{programId}.json`, every member with its `membership`, paged by `nextPageToken` |
//! | [`Marketo::program_members_updated`] | `GET /rest/v1/programs/{programId}/members.json?filterType=updatedAt&startAt&endAt`, split into 7-day ranges |
//! | [`Marketo::change_program_status`] | `POST /rest/v1/leads/programs/{programId}/status.json`, members only |
//! | [`Marketo::sync_program_status`] | `POST /rest/v1/programs/{programId}/members/status.json`, adds non-members |
//! | [`Marketo::lists`], [`Marketo::list_members`] | `GET /rest/v1/lists.json`, `GET /rest/v1/lists/{listId}/leads.json` |
//! | [`Marketo::add_to_list`], [`Marketo::remove_from_list`] | `POST` / `DELETE /rest/v1/lists/{listId}/leads.json` |
//! | [`Marketo::campaigns`], [`Marketo::request_campaign`] | `GET /rest/v1/campaigns.json`, `POST /rest/v1/campaigns/{campaignId}/trigger.json` |
//!
//! Writes take any number of lead ids, send at most 300 a call, and answer
//! one [`WriteOutcome`] per lead id, at its index, as the sink does:
//!
//! | Marketo says | outcome |
//! | --- | --- |
//! | `updated` (status changed) | [`WriteOutcome::Updated`] with the lead id |
//! | `created` (new program member), `added` (to a list) | [`WriteOutcome::Created`] |
//! | `removed` (from a list) | [`WriteOutcome::Deleted`] |
//! | `skipped` 1037 (already in or past the status), 1015 (not in the list) | [`WriteOutcome::Unchanged`]: nothing to do |
//! | `skipped` 1004 (no such lead), 1013 (not a member), others | [`WriteOutcome::Rejected`] with the reason as `provider_code` |
//!
//! Problems of the whole call come back as errors: an unknown program, list
//! or campaign (1013, [`crm_core::ErrorKind::NotFound`]), a status the
//! program's channel does not have (1025,
//! [`crm_core::ErrorKind::InvalidInput`]).

use chrono::{DateTime, TimeDelta, Utc};
use crm_core::{Error, ErrorKind, RecordId, Result, WriteOutcome};
use futures_core::stream::BoxStream;
use futures_util::StreamExt;

use crate::Marketo;
use crate::client::{
    AssetFilter, MAX_BATCH, MAX_CAMPAIGN_LEADS, MAX_MEMBER_RANGE_DAYS, MemberFilter, Paged,
};
use crate::error::{answered_past_input, fill_unanswered, record_error};
use crate::wire::{
    Campaign, CampaignToken, MembershipResult, ProgramLead, ProgramMember, StaticList, WireRecord,
};

/// The member fields [`Marketo::program_members_updated`] asks for when
/// given none: the documented defaults plus the status and its time.
pub const DEFAULT_MEMBER_FIELDS: [&str; 7] = [
    "leadId",
    "programId",
    "statusName",
    "reachedSuccess",
    "acquiredBy",
    "membershipDate",
    "updatedAt",
];

/// What a write call does, for reading its results.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Write {
    ProgramStatus,
    ListAdd,
    ListRemove,
}

enum Position {
    Start,
    Next(String),
    Done,
}

/// Pages of a paged read, until the last page or the first error.
fn paged<'a, T, F, Fut>(fetch: F) -> BoxStream<'a, Result<Vec<T>>>
where
    T: Send + 'a,
    F: FnMut(Option<String>) -> Fut + Send + 'a,
    Fut: Future<Output = Result<Paged<T>>> + Send + 'a,
{
    futures_util::stream::unfold((fetch, Position::Start), |(mut fetch, at)| async move {
        let token = match at {
            Position::Done => return None,
            Position::Start => None,
            Position::Next(t) => Some(t),
        };
        match fetch(token).await {
            Ok(page) => {
                let next = page.next_page_token.map_or(Position::Done, Position::Next);
                Some((Ok(page.items), (fetch, next)))
            }
            Err(e) => Some((Err(e), (fetch, Position::Done))),
        }
    })
    .boxed()
}

impl Marketo {
    /// Every member of a program with its membership (progression status,
    /// success, acquisition, membership date), in pages of up to 300 leads.
    /// `fields` are lead fields (Marketo's defaults when empty: `id`,
    /// `email`, `firstName`, `lastName`, `createdAt`, `updatedAt`).
    ///
    /// # Errors
    /// The stream ends with an error from the client, e.g.
    /// [`ErrorKind::NotFound`] for an unknown program.
    ///
    /// # Cancel safety
    /// A read: dropping the stream is harmless.
    pub fn program_members(
        &self,
        program_id: i64,
        fields: &[String],
    ) -> BoxStream<'_, Result<Vec<ProgramLead>>> {
        let fields = fields.to_vec();
        paged(move |token: Option<String>| {
            let fields = fields.clone();
            async move {
                self.client
                    .leads_by_program(program_id, &fields, MAX_BATCH, token.as_deref())
                    .await
            }
        })
    }

    /// Members of a program whose membership changed in `[start, end)`,
    /// read in consecutive ranges of at most 7 days (Marketo's limit for
    /// `filterType=updatedAt`), each paged; a member changed on a range
    /// boundary may come twice. `fields` are member fields
    /// ([`DEFAULT_MEMBER_FIELDS`] when empty).
    ///
    /// # Errors
    /// The stream ends with an error from the client.
    ///
    /// # Cancel safety
    /// A read: dropping the stream is harmless.
    pub fn program_members_updated(
        &self,
        program_id: i64,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        fields: &[String],
    ) -> BoxStream<'_, Result<Vec<ProgramMember>>> {
        let fields: Vec<String> = if fields.is_empty() {
            DEFAULT_MEMBER_FIELDS
                .iter()
                .map(|f| (*f).to_owned())
                .collect()
        } else {
            fields.to_vec()
        };
        let step = TimeDelta::days(MAX_MEMBER_RANGE_DAYS);
        let state = (start, None::<String>, start >= end);
        futures_util::stream::unfold(state, move |(from, token, done)| {
            let fields = fields.clone();
            async move {
                if done {
                    return None;
                }
                let to = (from + step).min(end);
                let filter = MemberFilter::UpdatedBetween {
                    start: from,
                    end: to,
                };
                match self
                    .client
                    .program_members(program_id, &filter, &fields, MAX_BATCH, token.as_deref())
                    .await
                {
                    Ok(page) => {
                        let next = match page.next_page_token {
                            Some(t) => (from, Some(t), false),
                            None => (to, None, to >= end),
                        };
                        Some((Ok(page.items), next))
                    }
                    Err(e) => Some((Err(e), (from, None, true))),
                }
            }
        })
        .boxed()
    }

    /// Sets `status` for leads that are members of the program, 300 a call
    /// (Change Lead Program Status). Leads that are not members are skipped
    /// by Marketo; [`Marketo::sync_program_status`] adds them instead.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] for an unknown program,
    /// [`ErrorKind::InvalidInput`] for a status its channel lacks, and the
    /// client's errors; per-lead problems are [`WriteOutcome::Rejected`].
    /// A failing call after earlier ones leaves those written.
    ///
    /// # Cancel safety
    /// Safe to repeat: leads already in the status come back `Unchanged`.
    pub async fn change_program_status(
        &self,
        program_id: i64,
        status: &str,
        lead_ids: &[i64],
    ) -> Result<Vec<WriteOutcome>> {
        self.write_chunks(
            lead_ids,
            MAX_BATCH,
            "leads.programs.status",
            Write::ProgramStatus,
            |chunk| {
                self.client
                    .change_lead_program_status(program_id, status, chunk)
            },
        )
        .await
    }

    /// Sets `status` for leads in the program, adding those that are not
    /// members yet, 300 a call (Sync Program Member Status).
    ///
    /// # Errors
    /// As [`Marketo::change_program_status`].
    ///
    /// # Cancel safety
    /// Safe to repeat: leads already in (or past) the status come back `Unchanged`.
    pub async fn sync_program_status(
        &self,
        program_id: i64,
        status: &str,
        lead_ids: &[i64],
    ) -> Result<Vec<WriteOutcome>> {
        self.write_chunks(
            lead_ids,
            MAX_BATCH,
            "programs.members.status",
            Write::ProgramStatus,
            |chunk| {
                self.client
                    .sync_program_member_status(program_id, status, chunk)
            },
        )
        .await
    }

    /// Every static list matching `filter`.
    ///
    /// # Errors
    /// The client's errors.
    ///
    /// # Cancel safety
    /// A read: cancelling is harmless.
    pub async fn lists(&self, filter: &AssetFilter) -> Result<Vec<StaticList>> {
        collect(paged(move |token: Option<String>| async move {
            self.client.lists(filter, MAX_BATCH, token.as_deref()).await
        }))
        .await
    }

    /// The leads of a static list, in pages of up to 300. `fields` are lead
    /// fields (Marketo's defaults when empty).
    ///
    /// # Errors
    /// The stream ends with an error from the client, e.g.
    /// [`ErrorKind::NotFound`] for an unknown list.
    ///
    /// # Cancel safety
    /// A read: dropping the stream is harmless.
    pub fn list_members(
        &self,
        list_id: i64,
        fields: &[String],
    ) -> BoxStream<'_, Result<Vec<WireRecord>>> {
        let fields = fields.to_vec();
        paged(move |token: Option<String>| {
            let fields = fields.clone();
            async move {
                self.client
                    .list_leads(list_id, &fields, MAX_BATCH, token.as_deref())
                    .await
            }
        })
    }

    /// Adds leads to a static list, 300 a call.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] for an unknown list and the client's errors;
    /// unknown leads are [`WriteOutcome::Rejected`] (1004).
    ///
    /// # Cancel safety
    /// Safe to repeat.
    pub async fn add_to_list(&self, list_id: i64, lead_ids: &[i64]) -> Result<Vec<WriteOutcome>> {
        self.write_chunks(
            lead_ids,
            MAX_BATCH,
            "lists.leads.add",
            Write::ListAdd,
            |chunk| self.client.add_to_list(list_id, chunk),
        )
        .await
    }

    /// Removes leads from a static list, 300 a call; leads not in it come
    /// back [`WriteOutcome::Unchanged`].
    ///
    /// # Errors
    /// As [`Marketo::add_to_list`].
    ///
    /// # Cancel safety
    /// Safe to repeat.
    pub async fn remove_from_list(
        &self,
        list_id: i64,
        lead_ids: &[i64],
    ) -> Result<Vec<WriteOutcome>> {
        self.write_chunks(
            lead_ids,
            MAX_BATCH,
            "lists.leads.remove",
            Write::ListRemove,
            |chunk| self.client.remove_from_list(list_id, chunk),
        )
        .await
    }

    /// Every smart campaign matching `filter` (with `parent program`, type
    /// and whether it is active, for attributing program success).
    ///
    /// # Errors
    /// The client's errors.
    ///
    /// # Cancel safety
    /// A read: cancelling is harmless.
    pub async fn campaigns(&self, filter: &AssetFilter) -> Result<Vec<Campaign>> {
        collect(paged(move |token: Option<String>| async move {
            self.client
                .campaigns(filter, MAX_BATCH, token.as_deref())
                .await
        }))
        .await
    }

    /// Runs leads through a requestable trigger campaign, 100 a call, with
    /// My Token overrides.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] for an unknown campaign,
    /// [`ErrorKind::InvalidInput`] for one that cannot be requested, and the
    /// client's errors; a failing call after earlier ones leaves those run.
    ///
    /// # Cancel safety
    /// Not safe to repeat: each call runs the campaign's flow again.
    pub async fn request_campaign(
        &self,
        campaign_id: i64,
        lead_ids: &[i64],
        tokens: &[CampaignToken],
    ) -> Result<()> {
        for chunk in lead_ids.chunks(MAX_CAMPAIGN_LEADS) {
            self.client
                .request_campaign(campaign_id, chunk, tokens)
                .await?;
        }
        Ok(())
    }

    async fn write_chunks<'a, F, Fut>(
        &'a self,
        lead_ids: &'a [i64],
        size: usize,
        op: &'static str,
        write: Write,
        mut call: F,
    ) -> Result<Vec<WriteOutcome>>
    where
        F: FnMut(&'a [i64]) -> Fut,
        Fut: Future<Output = Result<Vec<MembershipResult>>>,
    {
        let mut out = Vec::with_capacity(lead_ids.len());
        for (n, chunk) in lead_ids.chunks(size).enumerate() {
            let base = n * size;
            let results = call(chunk).await?;
            out.extend(
                outcomes(op, write, chunk, results)?
                    .into_iter()
                    .map(|o| match o {
                        WriteOutcome::Rejected { index, error } => WriteOutcome::Rejected {
                            index: base + index,
                            error,
                        },
                        other => other,
                    }),
            );
        }
        Ok(out)
    }
}

async fn collect<T>(mut pages: BoxStream<'_, Result<Vec<T>>>) -> Result<Vec<T>> {
    let mut out = Vec::new();
    while let Some(page) = pages.next().await {
        out.extend(page?);
    }
    Ok(out)
}

/// Marketo's results (by `seq` when given, else in order) as one outcome per
/// lead id of `lead_ids`.
fn outcomes(
    op: &'static str,
    write: Write,
    lead_ids: &[i64],
    results: Vec<MembershipResult>,
) -> Result<Vec<WriteOutcome>> {
    let mut slots: Vec<Option<WriteOutcome>> = vec![None; lead_ids.len()];
    for (n, r) in results.into_iter().enumerate() {
        let index = r.seq.unwrap_or(n);
        let Some(&lead) = lead_ids.get(index) else {
            return Err(answered_past_input(op, index, lead_ids.len()));
        };
        let id = RecordId::new(r.lead().unwrap_or(lead).to_string());
        let code = r.reasons.first().map(|e| e.code.as_str());
        let outcome = match (r.status.as_str(), write) {
            ("skipped", _) if matches!(code, Some("1037" | "1015")) => WriteOutcome::Unchanged(id),
            ("skipped", _) => WriteOutcome::Rejected {
                index,
                error: record_error(&r.reasons, op).with_context("lead_id", lead),
            },
            ("created" | "added", _) => WriteOutcome::Created(id),
            ("removed", Write::ListRemove) => WriteOutcome::Deleted(id),
            ("updated", _) => WriteOutcome::Updated(id),
            // The Swagger description calls a program status result's
            // `status` the lead's program status: anything but a skip is a change.
            (_, Write::ProgramStatus) => WriteOutcome::Updated(id),
            (status, _) => WriteOutcome::Rejected {
                index,
                error: Error::new(
                    ErrorKind::SchemaMismatch,
                    format!("unexpected membership result status `{status}`"),
                )
                .with_operation(op)
                .with_context("lead_id", lead),
            },
        };
        if let Some(slot) = slots.get_mut(index) {
            *slot = Some(outcome);
        }
    }
    Ok(fill_unanswered(slots, op, "lead"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ApiError;

    fn skipped(seq: Option<usize>, code: &str) -> MembershipResult {
        MembershipResult {
            seq,
            status: "skipped".into(),
            reasons: vec![ApiError {
                code: code.into(),
                message: "m".into(),
            }],
            ..MembershipResult::default()
        }
    }

    #[test]
    fn results_map_to_outcomes_at_their_index() {
        let results = vec![
            skipped(Some(2), "1004"),
            MembershipResult {
                seq: Some(0),
                lead_id: Some(10),
                status: "created".into(),
                ..MembershipResult::default()
            },
            skipped(Some(1), "1037"),
        ];
        let out = outcomes(
            "programs.members.status",
            Write::ProgramStatus,
            &[10, 11, 12],
            results,
        )
        .unwrap();
        assert!(matches!(&out[0], WriteOutcome::Created(id) if id.as_str() == "10"));
        assert!(matches!(&out[1], WriteOutcome::Unchanged(id) if id.as_str() == "11"));
        match &out[2] {
            WriteOutcome::Rejected { index, error } => {
                assert_eq!(*index, 2);
                assert_eq!(error.kind(), &ErrorKind::NotFound);
                assert_eq!(error.context_value("provider_code"), Some("1004"));
                assert_eq!(error.context_value("lead_id"), Some("12"));
            }
            other => panic!("{other:?}"),
        }
        // Missing answers are retryable rejections; answers past the input are an error.
        let out = outcomes("lists.leads.add", Write::ListAdd, &[1, 2], Vec::new()).unwrap();
        assert!(out.iter().all(|o| !o.is_ok()));
        assert!(
            outcomes(
                "lists.leads.add",
                Write::ListAdd,
                &[1],
                vec![skipped(Some(5), "1004")]
            )
            .is_err()
        );
    }

    #[test]
    fn list_statuses() {
        let r = |status: &str| MembershipResult {
            id: Some(7),
            status: status.into(),
            ..MembershipResult::default()
        };
        let out = outcomes(
            "lists.leads.remove",
            Write::ListRemove,
            &[7, 7, 7],
            vec![r("removed"), skipped(None, "1015"), r("weird")],
        )
        .unwrap();
        assert!(matches!(&out[0], WriteOutcome::Deleted(id) if id.as_str() == "7"));
        assert!(matches!(&out[1], WriteOutcome::Unchanged(id) if id.as_str() == "7"));
        assert!(!out[2].is_ok());
    }
}
