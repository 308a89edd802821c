//! The review pages, rendered on the server. Every value from a record,
//! a provider or a person goes through [`esc`].

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use crm_core::{Record, Result};
use crm_sql::state::{DeadLetter, PageAfter, ReviewItem, ReviewReason};

use super::web::{Auth, ListQuery};
use super::{ConflictView, DEFAULT_PAGE_SIZE, MatchView, Queue, QueueCounts, ReviewDesk};

/// The stylesheet (served from `/review/style.css`, so the pages' content
/// security policy allows no inline style).
pub(crate) const STYLE: &str = "\
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d2330;background:#f5f6f8}\
header{background:#1d2330;color:#fff;padding:10px 20px;display:flex;gap:18px;align-items:center}\
header a{color:#cfd8ea;text-decoration:none;padding:4px 8px;border-radius:4px}\
header a.on{background:#3b4a6b;color:#fff}\
header .who{margin-left:auto;font-size:13px}\
header form{display:inline;margin:0}\
main{padding:16px 20px;max-width:1100px}\
.count{display:inline-block;min-width:18px;padding:0 6px;border-radius:9px;background:#e6543a;color:#fff;font-size:12px;text-align:center}\
.item{background:#fff;border:1px solid #dde1e8;border-radius:6px;padding:12px 14px;margin:0 0 12px}\
.item h3{margin:0 0 6px;font-size:15px}\
.muted{color:#6b7385;font-size:12px}\
table{border-collapse:collapse;width:100%;margin:6px 0}\
th,td{border-bottom:1px solid #eceff3;padding:4px 6px;text-align:left;vertical-align:top}\
th{font-weight:600;color:#4b5366;font-size:12px}\
table.record th{width:180px}\
.badge{font-size:11px;padding:1px 6px;border-radius:3px;background:#e8ecf5;color:#3b4a6b}\
.badge.multiple_match{background:#fde9c8;color:#7a4b00}\
.flash{background:#e3f4e6;border:1px solid #b7dfbf;padding:8px 12px;border-radius:4px;margin-bottom:12px}\
.error{background:#fbe5e1;border:1px solid #f0b8ad;padding:8px 12px;border-radius:4px}\
.filters{display:flex;gap:8px;align-items:end;flex-wrap:wrap;margin-bottom:12px}\
.filters label{display:flex;flex-direction:column;font-size:12px;color:#4b5366}\
input,select,textarea,button{font:inherit}\
textarea{width:100%;min-height:180px;font-family:ui-monospace,monospace;font-size:12px}\
button{padding:4px 12px;border:1px solid #3b4a6b;background:#3b4a6b;color:#fff;border-radius:4px;cursor:pointer}\
button.secondary{background:#fff;color:#3b4a6b}\
.actions{display:flex;gap:8px;flex-wrap:wrap;margin-top:8px;align-items:center}\
.actions form{margin:0}\
pre{white-space:pre-wrap;margin:0;font-size:12px}\
nav.pages{margin-top:12px;display:flex;gap:12px}\
";

/// HTML-escapes text for element content and quoted attributes.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a query value.
pub(crate) fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char);
            }
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// A stored record (`Record`'s serde form) as a plain JSON object of its
/// fields.
pub(crate) fn plain_fields(stored: &serde_json::Value) -> serde_json::Value {
    match serde_json::from_value::<Record>(stored.clone()) {
        Ok(r) => serde_json::Value::Object(
            r.fields
                .iter()
                .map(|(k, v)| (k.clone(), v.to_json()))
                .collect(),
        ),
        Err(_) => stored.clone(),
    }
}

/// A JSON value as short text: strings bare, null as an em dash.
fn show(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "—".to_owned(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn hidden_csrf(auth: &Auth) -> String {
    match auth.csrf() {
        Some(c) => format!(r#"<input type="hidden" name="csrf" value="{}">"#, esc(c)),
        None => String::new(),
    }
}

fn flash(done: Option<&str>) -> String {
    let text = match done {
        Some("accepted") => "Match accepted; the booking was written with the chosen campaign.",
        Some("accepted_hook_failed") => {
            "Match accepted and written; the write-back after it failed and runs again with the next write-back."
        }
        Some("rejected") => "Candidates rejected; the booking was written as unmatched.",
        Some("rejected_hook_failed") => {
            "Candidates rejected and written; the write-back after it failed and runs again with the next write-back."
        }
        Some("resolved") => "Conflict resolved; both sides were written.",
        Some("retried") => "Dead letter retried: the record was written.",
        Some("failed") => "The retry failed again; the error below is the new one.",
        Some("discarded") => "Dead letter discarded.",
        _ => return String::new(),
    };
    format!(r#"<p class="flash" role="status">{}</p>"#, esc(text))
}

fn layout(
    title: &str,
    auth: Option<&Auth>,
    counts: Option<&QueueCounts>,
    on: Option<Queue>,
    body: &str,
) -> String {
    let mut nav = String::new();
    if let Some(auth) = auth {
        for q in [Queue::Matches, Queue::Conflicts, Queue::DeadLetters] {
            let label = match q {
                Queue::Matches => "Matches",
                Queue::Conflicts => "Conflicts",
                Queue::DeadLetters => "Dead letters",
            };
            let count = counts
                .map(|c| {
                    format!(
                        r#" <span class="count" data-count="{}">{}</span>"#,
                        q.slug(),
                        c.of(q)
                    )
                })
                .unwrap_or_default();
            let class = if on == Some(q) { r#" class="on""# } else { "" };
            let _ = write!(
                nav,
                r#"<a href="/review/{}"{class}>{label}{count}</a>"#,
                q.slug()
            );
        }
        let p = auth.principal();
        let logout = match auth.csrf() {
            Some(_) => format!(
                r#"<form method="post" action="/review/logout">{}<button class="secondary" type="submit">Sign out</button></form>"#,
                hidden_csrf(auth)
            ),
            None => String::new(),
        };
        let _ = write!(
            nav,
            r#"<span class="who">{} · <span data-role="{}">{}</span> {logout}</span>"#,
            esc(&p.name),
            p.role,
            p.role
        );
    }
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><title>{} · review</title><link rel="stylesheet" href="/review/style.css"></head><body><header><strong>Review</strong>{nav}</header><main>{body}</main></body></html>"#,
        esc(title)
    )
}

pub(crate) fn error_page(auth: Option<&Auth>, status: u16, message: &str) -> String {
    let body = format!(
        r#"<h1>{status}</h1><p class="error" role="alert">{}</p><p><a href="/review/matches">Back to the queues</a></p>"#,
        esc(message)
    );
    layout("Error", auth, None, None, &body)
}

pub(crate) fn login_page(nonce: &str, next: &str, failed: bool) -> String {
    let failed = if failed {
        r#"<p class="error" role="alert">That token is not accepted.</p>"#
    } else {
        ""
    };
    let body = format!(
        r#"<h1>Sign in</h1>{failed}<form method="post" action="/review/login" class="item"><input type="hidden" name="csrf" value="{}"><input type="hidden" name="next" value="{}"><label>Token <input type="password" name="token" id="token" autocomplete="off" required></label> <button type="submit" id="sign-in">Sign in</button></form>"#,
        esc(nonce),
        esc(next)
    );
    layout("Sign in", None, None, None, &body)
}

fn filter_form(queue: Queue, q: &ListQuery, connections: &[(String, String)]) -> String {
    let f = &q.filter;
    let mut options = String::from(r#"<option value="">all</option>"#);
    for (id, name) in connections {
        let sel = if f.connection.as_deref() == Some(id.as_str()) {
            " selected"
        } else {
            ""
        };
        let _ = write!(
            options,
            r#"<option value="{}"{sel}>{}</option>"#,
            esc(id),
            esc(name)
        );
    }
    let ages = ["", "1h", "1d", "7d", "30d"];
    let age_options = |current: Option<&str>| {
        ages.iter()
            .map(|a| {
                let sel = if current.unwrap_or("") == *a {
                    " selected"
                } else {
                    ""
                };
                let label = if a.is_empty() { "any" } else { a };
                format!(r#"<option value="{a}"{sel}>{label}</option>"#)
            })
            .collect::<String>()
    };
    format!(
        r#"<form method="get" action="/review/{}" class="filters"><label>Connection <select name="connection">{options}</select></label><label>Object <input name="object" value="{}" size="14"></label><label>Older than <select name="older_than">{}</select></label><label>Newer than <select name="newer_than">{}</select></label><button type="submit" class="secondary">Filter</button></form>"#,
        queue.slug(),
        esc(f.object.as_deref().unwrap_or("")),
        age_options(f.older_than.as_deref()),
        age_options(f.newer_than.as_deref()),
    )
}

fn next_link(queue: Queue, q: &ListQuery, next: Option<&PageAfter>) -> String {
    let mut params = String::new();
    let f = &q.filter;
    for (k, v) in [
        ("connection", &f.connection),
        ("object", &f.object),
        ("older_than", &f.older_than),
        ("newer_than", &f.newer_than),
    ] {
        if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
            let _ = write!(params, "{k}={}&", url_encode(v));
        }
    }
    if let Some(l) = q.limit {
        let _ = write!(params, "limit={l}&");
    }
    let first = if q.after.is_some() {
        format!(
            r#"<a href="/review/{}?{}">First page</a>"#,
            queue.slug(),
            esc(params.trim_end_matches('&'))
        )
    } else {
        String::new()
    };
    let next = match next {
        Some(n) => format!(
            r#"<a rel="next" id="next-page" href="/review/{}?{}after={}">Next page →</a>"#,
            queue.slug(),
            esc(&params),
            url_encode(&n.encode())
        ),
        None => String::new(),
    };
    format!(r#"<nav class="pages">{first}{next}</nav>"#)
}

/// A queue page.
pub(crate) async fn queue_page(
    desk: &ReviewDesk,
    auth: &Auth,
    queue: Queue,
    q: &ListQuery,
) -> Result<String> {
    let filter = q.filter.to_filter(Utc::now())?;
    let after = match q.after.as_deref().filter(|a| !a.is_empty()) {
        None => None,
        Some(a) => Some(PageAfter::decode(a).ok_or_else(|| {
            crm_core::Error::invalid_input("`after` is not a page position this page gave out")
                .with_context("field", "after")
        })?),
    };
    let counts = desk.counts(&filter).await?;
    let connections: Vec<(String, String)> = desk
        .store()
        .connections()
        .await?
        .into_iter()
        .map(|c| {
            (
                c.id.as_str().to_owned(),
                format!("{}/{}", c.provider, c.name),
            )
        })
        .collect();
    let limit = q.limit.unwrap_or(DEFAULT_PAGE_SIZE);
    let mut body = String::new();
    let title = match queue {
        Queue::Matches => "Probable and multiple matches",
        Queue::Conflicts => "Manual conflicts",
        Queue::DeadLetters => "Dead letters",
    };
    let _ = write!(
        body,
        "<h1>{title} <span class=\"muted\" id=\"queue-count\">{} waiting</span></h1>",
        counts.of(queue)
    );
    body.push_str(&flash(q.done.as_deref()));
    body.push_str(&filter_form(queue, q, &connections));
    let next = if queue == Queue::DeadLetters {
        let page = desk
            .dead_letter_page(&filter, after.as_ref(), limit)
            .await?;
        if page.items.is_empty() {
            body.push_str(r#"<p class="muted">Nothing here.</p>"#);
        }
        for d in &page.items {
            body.push_str(&dead_letter_card(d));
        }
        page.next
    } else {
        let page = desk
            .review_page(queue, &filter, after.as_ref(), limit)
            .await?;
        if page.items.is_empty() {
            body.push_str(r#"<p class="muted">Nothing here.</p>"#);
        }
        for item in &page.items {
            if queue == Queue::Matches {
                body.push_str(&match_card(auth, item, true));
            } else {
                body.push_str(&conflict_card(desk, item));
            }
        }
        page.next
    };
    body.push_str(&next_link(queue, q, next.as_ref()));
    Ok(layout(title, Some(auth), Some(&counts), Some(queue), &body))
}

/// The booking fields a card shows first; the others follow.
const BOOKING_FIRST: [&str; 6] = [
    "advertiser_name",
    "campaign_name",
    "booking_date",
    "start_date",
    "end_date",
    "budget",
];

fn record_table(fields: &serde_json::Map<String, serde_json::Value>, max: usize) -> String {
    let mut keys: Vec<&String> = BOOKING_FIRST
        .iter()
        .filter_map(|k| fields.get_key_value(*k).map(|(k, _)| k))
        .collect();
    for k in fields.keys() {
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    let mut out = String::from("<table class=\"record\"><tbody>");
    for k in keys.into_iter().take(max) {
        let v = fields.get(k).map(show).unwrap_or_default();
        let _ = write!(out, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(&v));
    }
    out.push_str("</tbody></table>");
    out
}

fn match_card(auth: &Auth, item: &ReviewItem, link: bool) -> String {
    let view = MatchView::from_item(item);
    let id = esc(item.id.as_str());
    let mut out = format!(
        r#"<article class="item match" id="item-{id}" data-id="{id}"><h3>Booking {} <span class="badge {}">{}</span></h3><p class="muted">{} · queued {}</p>"#,
        esc(&item.record_id),
        item.reason.as_str(),
        match item.reason {
            ReviewReason::MultipleMatch => "multiple",
            _ => "probable",
        },
        esc(&item.object),
        when(item.created_at)
    );
    out.push_str(&record_table(&view.record, if link { 6 } else { 40 }));
    let can_act = auth.can_act();
    let form_open = if can_act {
        format!(
            r#"<form method="post" action="/review/matches/{id}/accept">{}"#,
            hidden_csrf(auth)
        )
    } else {
        String::new()
    };
    out.push_str(&form_open);
    out.push_str("<table class=\"candidates\"><thead><tr>");
    if can_act {
        out.push_str("<th></th>");
    }
    out.push_str(
        "<th>Candidate campaign</th><th>Id</th><th>Score</th><th>Strategy</th></tr></thead><tbody>",
    );
    for (n, c) in view.candidates.iter().enumerate() {
        out.push_str("<tr>");
        if can_act {
            let checked = if n == 0 { " checked" } else { "" };
            let _ = write!(
                out,
                r#"<td><input type="radio" name="campaign_id" value="{}" id="pick-{id}-{n}"{checked}></td>"#,
                esc(&c.campaign_id)
            );
        }
        let _ = write!(
            out,
            r#"<td><label for="pick-{id}-{n}">{}</label></td><td>{}</td><td>{:.0}%</td><td>{}</td></tr>"#,
            esc(&c.name),
            esc(&c.campaign_id),
            c.score * 100.0,
            esc(&c.strategy)
        );
    }
    out.push_str("</tbody></table>");
    if can_act {
        out.push_str(r#"<div class="actions"><button type="submit" data-action="accept">Accept selected</button></div></form>"#);
        let _ = write!(
            out,
            r#"<div class="actions"><form method="post" action="/review/matches/{id}/reject">{}<button type="submit" class="secondary" data-action="reject">Reject all (unmatched)</button></form>"#,
            hidden_csrf(auth)
        );
        if link {
            let _ = write!(
                out,
                r#"<a href="/review/matches/{id}" data-action="search">Search campaigns by name</a>"#
            );
        }
        out.push_str("</div>");
    }
    out.push_str("</article>");
    out
}

pub(crate) fn match_page(
    desk: &ReviewDesk,
    auth: &Auth,
    counts: &QueueCounts,
    item: &ReviewItem,
    query: Option<&str>,
    done: Option<&str>,
) -> String {
    let mut body = format!(
        r#"<p><a href="/review/matches">← All matches</a></p>{}"#,
        flash(done)
    );
    body.push_str(&match_card(auth, item, false));
    let id = esc(item.id.as_str());
    let q = query.unwrap_or("").trim();
    let _ = write!(
        body,
        r#"<section class="item"><h3>Find a campaign by name</h3><form method="get" action="/review/matches/{id}" class="filters"><label>Name <input name="q" id="campaign-search" value="{}" size="30"></label><button type="submit" class="secondary" id="search">Search</button></form>"#,
        esc(q)
    );
    if !q.is_empty() {
        let found = desk.search_campaigns(q);
        if found.is_empty() {
            body.push_str(r#"<p class="muted">No campaign name contains those words.</p>"#);
        } else {
            body.push_str("<table class=\"search\"><thead><tr><th>Campaign</th><th>Id</th><th>Advertiser</th><th>Status</th><th></th></tr></thead><tbody>");
            for c in found {
                let action = if auth.can_act() {
                    format!(
                        r#"<form method="post" action="/review/matches/{id}/accept">{}<input type="hidden" name="campaign_id" value="{}"><button type="submit" data-action="accept-found">Accept</button></form>"#,
                        hidden_csrf(auth),
                        esc(c.campaign_id.as_str())
                    )
                } else {
                    String::new()
                };
                let _ = write!(
                    body,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{action}</td></tr>",
                    esc(&c.name),
                    esc(c.campaign_id.as_str()),
                    esc(c.advertiser_name.as_deref().unwrap_or("—")),
                    esc(c.status.as_deref().unwrap_or("—"))
                );
            }
            body.push_str("</tbody></table>");
        }
    }
    body.push_str("</section>");
    layout(
        "Match",
        Some(auth),
        Some(counts),
        Some(Queue::Matches),
        &body,
    )
}

fn conflict_card(desk: &ReviewDesk, item: &ReviewItem) -> String {
    let view = ConflictView::from_item(item);
    let id = esc(item.id.as_str());
    let fields: Vec<String> = view.fields.iter().map(|f| esc(&f.field)).collect();
    let state = if !view.decidable() {
        r#" · <em>waiting for the next sync round to fill in field values</em>"#
    } else if !desk.resolves(&item.object) {
        r#" · <em>no sync of this object is attached here: read only</em>"#
    } else {
        ""
    };
    format!(
        r#"<article class="item conflict" id="item-{id}" data-id="{id}"><h3><a href="/review/conflicts/{id}">{} {}</a></h3><p class="muted">queued {} · fields: {}{state}</p></article>"#,
        esc(&item.object),
        esc(&item.record_id),
        when(item.created_at),
        if fields.is_empty() {
            "—".to_owned()
        } else {
            fields.join(", ")
        }
    )
}

pub(crate) fn conflict_page(
    desk: &ReviewDesk,
    auth: &Auth,
    counts: &QueueCounts,
    item: &ReviewItem,
    done: Option<&str>,
) -> String {
    let view = ConflictView::from_item(item);
    let id = esc(item.id.as_str());
    let opt = |s: &Option<String>| esc(s.as_deref().unwrap_or("—"));
    let mut body = format!(
        r#"<p><a href="/review/conflicts">← All conflicts</a></p>{}<article class="item" id="item-{id}"><h3>{} {}</h3><table class="sides"><thead><tr><th></th><th>Platform</th><th>CRM</th></tr></thead><tbody><tr><th>Record</th><td>{}</td><td>{}</td></tr><tr><th>Modified</th><td>{}</td><td>{}</td></tr></tbody></table>"#,
        flash(done),
        esc(&item.object),
        esc(&item.record_id),
        opt(&view.platform_id),
        opt(&view.crm_id),
        opt(&view.platform_updated_at),
        opt(&view.crm_updated_at),
    );
    let can_apply = auth.can_act() && view.decidable() && desk.resolves(&item.object);
    if can_apply {
        let _ = write!(
            body,
            r#"<form method="post" action="/review/conflicts/{id}/resolve">{}"#,
            hidden_csrf(auth)
        );
    }
    body.push_str("<table class=\"fields\"><thead><tr><th>Field</th><th>Platform value</th><th>CRM value</th><th>At last sync</th>");
    if can_apply {
        body.push_str("<th>Typed value</th>");
    }
    body.push_str("</tr></thead><tbody>");
    for f in &view.fields {
        let name = esc(&f.field);
        let radio = |side: &str, checked: bool| {
            if can_apply {
                format!(
                    r#"<input type="radio" name="pick.{name}" value="{side}" id="pick-{name}-{side}"{}> "#,
                    if checked { " checked" } else { "" }
                )
            } else {
                String::new()
            }
        };
        let _ = write!(
            body,
            r#"<tr data-field="{name}"><th>{name}</th><td><label>{}{}</label></td><td><label>{}{}</label></td><td>{}</td>"#,
            radio("platform", false),
            esc(&show(&f.platform_value)),
            radio("crm", false),
            esc(&show(&f.crm_value)),
            esc(&show(&f.base_value)),
        );
        if can_apply {
            let _ = write!(
                body,
                r#"<td><label>{}<input name="value.{name}" id="value-{name}" size="18" placeholder="type a value"></label></td>"#,
                radio("value", false)
            );
        }
        body.push_str("</tr>");
    }
    body.push_str("</tbody></table>");
    if can_apply {
        body.push_str(r#"<div class="actions"><button type="submit" data-action="resolve">Apply to both sides</button></div></form>"#);
    } else if !view.decidable() {
        body.push_str(r#"<p class="muted">Conflict detection flagged this record; its field values appear after the next bidirectional round.</p>"#);
    } else if !desk.resolves(&item.object) {
        body.push_str(r#"<p class="muted">No bidirectional sync of this object is attached to this desk, so the decision cannot be applied here.</p>"#);
    }
    body.push_str("</article>");
    layout(
        "Conflict",
        Some(auth),
        Some(counts),
        Some(Queue::Conflicts),
        &body,
    )
}

fn dead_letter_card(d: &DeadLetter) -> String {
    let id = esc(d.id.as_str());
    let fields = match plain_fields(&d.record) {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    let errors: String = d
        .error
        .lines()
        .map(|l| format!("<li>{}</li>", esc(l)))
        .collect();
    format!(
        r#"<article class="item dead-letter" id="item-{id}" data-id="{id}"><h3><a href="/review/dead-letters/{id}">{} {}</a> <span class="badge">{}</span></h3><p class="muted">{} attempt(s) · first failed {} · last {}</p><ul class="errors">{errors}</ul>{}</article>"#,
        esc(&d.object),
        esc(d.record_key.as_deref().unwrap_or("")),
        esc(&d.stage),
        d.attempts,
        when(d.first_failed_at),
        when(d.last_failed_at),
        record_table(&fields, 6),
    )
}

pub(crate) fn dead_letter_page(
    auth: &Auth,
    counts: &QueueCounts,
    d: &DeadLetter,
    done: Option<&str>,
) -> String {
    let id = esc(d.id.as_str());
    let mut body = format!(
        r#"<p><a href="/review/dead-letters">← All dead letters</a></p>{}"#,
        flash(done)
    );
    body.push_str(&dead_letter_card(d));
    if auth.can_act() {
        let pretty = serde_json::to_string_pretty(&plain_fields(&d.record)).unwrap_or_default();
        let _ = write!(
            body,
            r#"<section class="item"><h3>Edit and retry</h3><form method="post" action="/review/dead-letters/{id}/retry">{}<textarea name="record" id="record" spellcheck="false">{}</textarea><div class="actions"><button type="submit" data-action="retry">Retry</button></div></form></section><section class="item"><h3>Discard</h3><form method="post" action="/review/dead-letters/{id}/discard" class="actions">{}<label>Reason <input name="reason" id="reason" size="40" required></label><button type="submit" class="secondary" data-action="discard">Discard</button></form></section>"#,
            hidden_csrf(auth),
            esc(&pretty),
            hidden_csrf(auth),
        );
    }
    layout(
        "Dead letter",
        Some(auth),
        Some(counts),
        Some(Queue::DeadLetters),
        &body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            esc(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(url_encode("a b&c=/d"), "a%20b%26c%3D/d");
    }
}
