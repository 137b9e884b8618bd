//! The dashboard's pages and their live fragments, written with maud, which escapes every
//! value it is given: a job named `<script>` shows as text.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};
use offload_provider::{LogQuery, StepRole};
use serde::Deserialize;

use super::{Filters, JobFilters, Session, CSS, HTMX, ICON};
use crate::api::jobs::parse_id;
use crate::api::AppState;
use crate::model::steps::StepLog;
use crate::model::{Event, Job, JobState};
use crate::store::{CostGrouping, CostQuery, JobRecord, ListQuery};

/// Jobs per page of the jobs list.
const PAGE: usize = 50;
/// The most of a log a job's page shows: its end.
const LOG_TAIL_BYTES: usize = 64 * 1024;
/// How often the live parts are fetched again.
const EVERY: &str = "every 1s";

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            // htmx would add a <style> element for its indicators, which the CSP refuses.
            meta name="htmx-config" content=r#"{"includeIndicatorStyles":false}"#;
            title { (title) " · offload" }
            link rel="stylesheet" href=(CSS);
            link rel="icon" href=(ICON) type="image/svg+xml";
            script src=(HTMX) {}
        }
    }
}

fn layout(title: &str, session: &Session, here: &str, body: Markup) -> Markup {
    let link = |href: &str, text: &str| {
        html! { a href=(href) class=[(href == here).then_some("here")] { (text) } }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header {
                    span.brand { "offload" }
                    nav {
                        (link("/ui/jobs", "Jobs"))
                        (link("/ui/providers", "Providers"))
                        (link("/ui/costs", "Cost"))
                    }
                    span.tenant { "tenant " (session.tenant) }
                    form #signout .inline method="post" action="/ui/signout" {
                        input type="hidden" name="csrf" value=(session.csrf);
                        button type="submit" { "Sign out" }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// A page without the signed-in frame: sign-in, not found, forbidden.
fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body { main.signin { (body) } }
        }
    }
}

pub fn signin(csrf: &str, error: Option<&str>) -> Markup {
    bare(
        "Sign in",
        html! {
            h1 { "Sign in to offload" }
            @if let Some(e) = error { p.error { (e) } }
            form #signin method="post" action="/ui/signin" {
                input type="hidden" name="csrf" value=(csrf);
                label { "Gateway token" input type="password" name="token" autocomplete="current-password" required; }
                button type="submit" { "Sign in" }
            }
            p.muted { "Signing in starts a session kept in an HttpOnly cookie for this site only; the token itself is not kept." }
        },
    )
}

pub fn message(title: &str, text: &str) -> Markup {
    bare(
        title,
        html! { h1 { (title) } p { (text) } p { a href="/ui/jobs" { "Jobs" } } },
    )
}

pub fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        message("Not found", "There is no such job, or it is not yours."),
    )
        .into_response()
}

pub fn failure(why: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        message("Not available", why),
    )
        .into_response()
}

fn when(at: &DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn usd(v: f64) -> String {
    format!("${v:.6}")
}

fn name(job: &Job) -> &str {
    job.spec.name.as_deref().unwrap_or(&job.spec.image)
}

fn state_cell(state: JobState) -> Markup {
    html! { span class={ "state state-" (state.as_str()) } { (state.as_str()) } }
}

/// The tenant's job, if it is theirs.
async fn job_of(state: &AppState, session: &Session, id: &str) -> Option<JobRecord> {
    let id = parse_id(id).ok()?;
    state
        .store
        .get(id)
        .await
        .ok()?
        .filter(|r| r.tenant == session.tenant)
}

/// The page of jobs the filters select, and the cursor of the next.
async fn list(
    state: &AppState,
    session: &Session,
    f: &JobFilters,
) -> Result<(Vec<Job>, Option<String>), String> {
    let labels = [
        ("dag_id", &f.dag_id),
        ("task_id", &f.task_id),
        ("run_id", &f.run_id),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let query = ListQuery {
        state: JobState::parse(&f.state),
        provider: (!f.provider.is_empty()).then(|| f.provider.clone()),
        labels,
        before: parse_id(&f.cursor).ok(),
        limit: PAGE,
        ..ListQuery::default()
    };
    let page = crate::api::listing::page(&*state.store, &session.tenant, &query)
        .await
        .map_err(|e| e.to_string())?;
    Ok((page.jobs, page.next.map(|id| id.to_string())))
}

fn query_string(f: &JobFilters) -> String {
    serde_urlencoded::to_string(f).unwrap_or_default()
}

fn rows(f: &JobFilters, jobs: &[Job]) -> Markup {
    let live = JobFilters {
        q: String::new(),
        ..f.clone()
    };
    html! {
        tbody #job-rows hx-get={ "/ui/jobs/rows?" (query_string(&live)) } hx-trigger=(EVERY) hx-swap="outerHTML" {
            @for job in jobs {
                tr data-job-id=(job.id) {
                    td.id { a href={ "/ui/jobs/" (job.id) } { (job.id) } }
                    td.name { (name(job)) }
                    td.state { (state_cell(job.state)) }
                    td.provider { (job.provider.as_deref().unwrap_or("")) }
                    td.labels { @for (k, v) in &job.labels { span.label { (k) "=" (v) } " " } }
                    td.created { (when(&job.created_at)) }
                }
            }
            @if jobs.is_empty() { tr { td colspan="6" { span.muted { "No jobs." } } } }
        }
    }
}

pub async fn jobs(State(state): State<AppState>, session: Session, Query(f): Filters) -> Response {
    let mut note = None;
    if !f.q.trim().is_empty() {
        match job_of(&state, &session, f.q.trim()).await {
            Some(rec) => return Redirect::to(&format!("/ui/jobs/{}", rec.job.id)).into_response(),
            None => note = Some(format!("No job of yours has the id {:?}.", f.q.trim())),
        }
    }
    let (jobs, next) = match list(&state, &session, &f).await {
        Ok(page) => page,
        Err(e) => return failure(&e),
    };
    let providers: Vec<String> = state
        .engine
        .providers()
        .into_iter()
        .map(|p| p.name)
        .collect();
    let field = |label: &str, name: &str, value: &str| {
        html! { label { (label) input type="text" name=(name) value=(value); } }
    };
    let body = html! {
        h1 { "Jobs" }
        form #filters method="get" action="/ui/jobs" {
            label { "State" select name="state" {
                option value="" { "any" }
                @for s in JobState::ALL { option value=(s.as_str()) selected[f.state == s.as_str()] { (s.as_str()) } }
            } }
            label { "Provider" select name="provider" {
                option value="" { "any" }
                @for p in &providers { option value=(p) selected[&f.provider == p] { (p) } }
            } }
            (field("dag_id", "dag_id", &f.dag_id))
            (field("task_id", "task_id", &f.task_id))
            (field("run_id", "run_id", &f.run_id))
            (field("Job id", "q", ""))
            button type="submit" { "Show" }
        }
        @if let Some(n) = &note { p.error { (n) } }
        table #jobs {
            thead { tr { th { "Id" } th { "Name" } th { "State" } th { "Provider" } th { "Labels" } th { "Created" } } }
            (rows(&f, &jobs))
        }
        @if let Some(cursor) = next {
            p.pager { a.next href={ "/ui/jobs?" (query_string(&JobFilters { cursor, q: String::new(), ..f.clone() })) } { "Older jobs" } }
        }
    };
    layout("Jobs", &session, "/ui/jobs", body).into_response()
}

pub async fn job_rows(
    State(state): State<AppState>,
    session: Session,
    Query(f): Filters,
) -> Response {
    match list(&state, &session, &f).await {
        Ok((jobs, _)) => rows(&f, &jobs).into_response(),
        Err(e) => failure(&e),
    }
}

/// 429: the tenant holds as many long-polls, followers and live views as it may.
fn too_many_views() -> Response {
    let mut response = (
        StatusCode::TOO_MANY_REQUESTS,
        message(
            "Too many open views",
            "This tenant holds as many log followers and live views open as it may; close some or try again shortly.",
        ),
    )
        .into_response();
    response
        .headers_mut()
        .insert(axum::http::header::RETRY_AFTER, 1.into());
    response
}

/// The parts of a job's page that change while it runs: re-fetched every second until
/// the job ends. Its log is read as a follower reads it, so the view holds one of the
/// tenant's places for long-polls and followers meanwhile (429 when there is none).
async fn live(state: &AppState, rec: &JobRecord) -> Result<Markup, Response> {
    let _place = state
        .waiters
        .enter(&rec.tenant)
        .map_err(|_| too_many_views())?;
    let job = &rec.job;
    let events: Vec<Event> = state.store.events(job.id).await.unwrap_or_default();
    let query = LogQuery {
        cursor: None,
        tail_bytes: Some(LOG_TAIL_BYTES),
    };
    // The gateway's own word goes beside the log, never in it: nothing in the log's text
    // can pass for it.
    let (log, log_error) = match state.engine.follow_logs(rec, &query).await {
        Ok(chunk) => (chunk.text, None),
        Err(e) => (String::new(), Some(format!("The log could not be read: {e}"))),
    };
    let cost = job.cost.as_ref().map(|c| match c.usd {
        Some(v) => format!("{} on {} ({}/h)", usd(v), c.provider, usd(c.hourly_usd)),
        None => format!(
            "about {} on {} ({}/h)",
            usd(c.estimated_usd),
            c.provider,
            usd(c.hourly_usd)
        ),
    });
    let result = job.result.as_ref().map(|r| r.to_string());
    Ok(html! {
        div #live hx-get={ "/ui/jobs/" (job.id) "/live" } hx-trigger=[(!job.terminal).then_some(EVERY)] hx-swap="outerHTML" {
            dl #summary {
                dt { "State" } dd #state { (state_cell(job.state)) }
                dt { "Provider" } dd #provider { (job.provider.as_deref().unwrap_or("")) " " span.muted { (job.provider_ref.as_deref().unwrap_or("")) } }
                dt { "Exit code" } dd #exit-code { @if let Some(c) = job.exit_code { (c) } }
                dt { "Reason" } dd #reason { (job.reason.as_deref().unwrap_or("")) }
                dt { "Result" } dd #result { (result.as_deref().unwrap_or("")) }
                dt { "Cost" } dd #cost { (cost.as_deref().unwrap_or("")) }
                dt { "Created" } dd { (when(&job.created_at)) }
                dt { "Started" } dd { @if let Some(t) = &job.started_at { (when(t)) } }
                dt { "Finished" } dd { @if let Some(t) = &job.finished_at { (when(t)) } }
                dt { "Attempts" } dd { (job.attempts) }
            }
            @if !job.terminal {
                p { a #cancel .danger href={ "/ui/jobs/" (job.id) "/cancel" } { "Cancel…" } }
            }
            @if !job.steps.is_empty() {
                (steps(&job.steps))
            }
            h2 { "Timeline" }
            ol #timeline {
                @for e in &events {
                    li { time { (when(&e.at)) } (state_cell(e.state)) @if let Some(r) = &e.reason { " — " (r) } }
                }
            }
            h2 { "Log" @if !job.terminal { span.muted { " (following)" } } }
            @if let Some(e) = &log_error { p.error #log-error { (e) } }
            pre #log { (log) }
        }
    })
}

/// How each step of a job of several steps (a TES task's executors, and the filer's
/// staging around them) went in its last attempt, as `Job.steps` keeps it once it ends.
fn steps(steps: &[StepLog]) -> Markup {
    let mut executor = 0;
    html! {
        h2 { "Steps" }
        table #steps {
            thead { tr { th { "Step" } th { "Exit code" } th { "Started" } th { "Finished" } th { "Output" } } }
            tbody {
                @for step in steps {
                    @let name = match step.role {
                        StepRole::StageIn => "staging in".to_string(),
                        StepRole::StageOut => "staging out".to_string(),
                        StepRole::Executor => { executor += 1; format!("executor {executor}") }
                    };
                    tr {
                        td.step { (name) }
                        td.exit { @if let Some(c) = step.exit_code { (c) } @else { span.muted { "none (not run, or stopped)" } } }
                        td { @if let Some(t) = &step.started_at { (when(t)) } }
                        td { @if let Some(t) = &step.finished_at { (when(t)) } }
                        td { @if !step.log.is_empty() { details { summary { "log" } pre { (step.log) } } } }
                    }
                }
            }
        }
    }
}

pub async fn job(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Response {
    let Some(rec) = job_of(&state, &session, &id).await else {
        return not_found();
    };
    let spec = serde_json::to_string_pretty(&rec.job.spec).unwrap_or_default();
    let live = match live(&state, &rec).await {
        Ok(live) => live,
        Err(refused) => return refused,
    };
    let body = html! {
        h1 { (name(&rec.job)) " " span.muted { (rec.job.id) } }
        (live)
        h2 { "Spec" span.muted { " (secret values redacted)" } }
        pre #spec { (spec) }
    };
    layout(name(&rec.job), &session, "/ui/jobs", body).into_response()
}

pub async fn job_live(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Response {
    match job_of(&state, &session, &id).await {
        Some(rec) => match live(&state, &rec).await {
            Ok(live) => live.into_response(),
            Err(refused) => refused,
        },
        None => not_found(),
    }
}

pub async fn confirm_cancel(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Response {
    let Some(rec) = job_of(&state, &session, &id).await else {
        return not_found();
    };
    let job = &rec.job;
    let body = html! {
        h1 { "Cancel " (name(job)) "?" }
        @if job.terminal {
            p { "This job has already ended (" (job.state.as_str()) ")." }
        } @else {
            p { "The job " (job.id) " is " (job.state.as_str()) ". Cancelling stops its workload; this cannot be undone." }
            form #confirm-cancel method="post" action={ "/ui/jobs/" (job.id) "/cancel" } {
                input type="hidden" name="csrf" value=(session.csrf);
                button.danger type="submit" { "Cancel the job" }
            }
        }
        p { a href={ "/ui/jobs/" (job.id) } { "Back to the job" } }
    };
    layout("Cancel", &session, "/ui/jobs", body).into_response()
}

pub async fn providers(State(state): State<AppState>, session: Session) -> Response {
    let body = html! {
        h1 { "Providers" }
        table #providers {
            thead { tr { th { "Name" } th { "Kind" } th { "Health" } th { "Load" } th { "Capabilities" } th { "Price sheet" } th { "Start latency" } th { "Errors" } } }
            tbody {
                @for p in state.engine.providers() {
                    tr data-provider=(p.name) {
                        td { (p.name) }
                        td { (p.kind) }
                        td.health { @match &p.health_error { None => "healthy", Some(e) => { "unhealthy: " (e) } } }
                        td.load { (p.active) " of " (p.max_concurrency) @if p.waiting > 0 { ", " (p.waiting) " waiting" } }
                        td.capabilities { (capabilities(&p.capabilities)) }
                        td.price {
                            (prices(&p.prices))
                            br;
                            span.muted { (price_sources(&p.price_sources)) }
                            @if let Some(r) = p.price_refresh.as_ref().filter(|r| !r.ok) {
                                br;
                                span.error { "the price refresh at " (r.at) " failed, these are the last good prices: " (r.error.as_deref().unwrap_or_default()) }
                            }
                        }
                        td.latency { @match p.start_latency_ms { Some(ms) => { (ms) " ms" }, None => span.muted { "no start yet" } } }
                        td.errors { (p.errors) " of " (p.calls) " calls" }
                    }
                }
            }
        }
    };
    layout("Providers", &session, "/ui/providers", body).into_response()
}

fn capabilities(c: &serde_json::Value) -> String {
    let gib = c["max_memory_bytes"].as_f64().unwrap_or(0.0) / (1u64 << 30) as f64;
    let mut text = format!("up to {} vCPU, {gib:.0} GiB", c["max_cpu"]);
    if let Some(gpus) = c["gpu_kinds"].as_array().filter(|g| !g.is_empty()) {
        let kinds: Vec<&str> = gpus.iter().filter_map(|g| g.as_str()).collect();
        let _ = write!(text, "; GPUs {}", kinds.join(", "));
    }
    if c["spot"] == true {
        text.push_str("; spot");
    }
    text
}

/// Where the sheet's figures came from: `read from azure-retail-prices (vcpu_hour,
/// gb_hour); default (gpu_hour.K80)`.
fn price_sources(sources: &serde_json::Value) -> String {
    let mut by_source: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for (figure, source) in sources.as_object().into_iter().flatten() {
        let from = match (source["source"].as_str(), source.get("sku")) {
            (Some(catalog), Some(_)) => format!("read from {catalog}"),
            (Some(given), None) => given.to_string(),
            _ => continue,
        };
        by_source.entry(from).or_default().push(figure);
    }
    let parts: Vec<String> = by_source
        .into_iter()
        .map(|(from, figures)| format!("{from} ({})", figures.join(", ")))
        .collect();
    parts.join("; ")
}

fn prices(p: &serde_json::Value) -> String {
    let mut text = format!("${}/vCPU-h, ${}/GB-h", p["vcpu_hour"], p["gb_hour"]);
    if let Some(gpus) = p["gpu_hour"].as_object().filter(|g| !g.is_empty()) {
        for (kind, price) in gpus {
            let _ = write!(text, "; {kind} ${price}/h");
        }
    }
    let _ = write!(
        text,
        "; billed per {} s, at least {} s",
        p["billing_increment_seconds"], p["min_billed_seconds"]
    );
    text
}

#[derive(Debug, Deserialize)]
pub struct CostParams {
    #[serde(default = "by_provider")]
    group_by: String,
    /// The period: this many days up to now (1, 7 or 30).
    #[serde(default = "week")]
    days: i64,
}

fn by_provider() -> String {
    "provider".into()
}
fn week() -> i64 {
    7
}

/// Each UTC day of `query`'s period (the first and last cut at its ends), with what the
/// tenant's jobs that finished in it cost, by provider: the cost report's figures day by
/// day, so that the days add up to the period's total.
async fn daily_spend(
    state: &AppState,
    tenant: &str,
    query: &CostQuery,
) -> Result<Vec<(chrono::NaiveDate, Vec<crate::model::CostGroup>)>, crate::store::StoreError> {
    let mut days = vec![];
    let mut start = query.since;
    while start < query.until {
        let midnight = (start.date_naive() + chrono::Days::new(1))
            .and_hms_opt(0, 0, 0)
            .expect("midnight exists")
            .and_utc();
        let end = midnight.min(query.until);
        let day = CostQuery {
            group_by: CostGrouping::Provider,
            since: start,
            until: end,
        };
        days.push((start.date_naive(), state.store.costs(tenant, &day).await?));
        start = end;
    }
    Ok(days)
}

/// A bar per day, stacked by provider (each provider keeps its colour across days), with a
/// legend; each bar's part carries its dollars in `data-usd`.
fn daily_chart(days: &[(chrono::NaiveDate, Vec<crate::model::CostGroup>)]) -> Markup {
    let providers: std::collections::BTreeSet<&str> = days
        .iter()
        .flat_map(|(_, groups)| groups.iter().map(|g| g.key.as_str()))
        .collect();
    let colour = |p: &str| providers.iter().position(|q| *q == p).unwrap_or(0) % 8;
    let most = days
        .iter()
        .map(|(_, groups)| groups.iter().map(|g| g.usd).sum::<f64>())
        .fold(0.0, f64::max);
    let (height, top, width) = (160.0, 8.0, 720.0);
    let step = (width - 60.0) / days.len().max(1) as f64;
    html! {
        svg #daily xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 720 " (height + 40.0) } role="img" aria-label="spend per day, by provider" {
            @for (i, (day, groups)) in days.iter().enumerate() {
                @let x = 50.0 + i as f64 * step;
                @let mut y = top + height;
                @for g in groups.iter().filter(|g| g.usd > 0.0) {
                    @let h = if most > 0.0 { height * g.usd / most } else { 0.0 };
                    @let _ = { y -= h; };
                    rect class={ "s" (colour(&g.key)) } x=(format!("{x:.1}")) y=(format!("{y:.1}")) width=(format!("{:.1}", (step - 2.0).max(1.0))) height=(format!("{h:.1}")) data-day=(day) data-provider=(g.key) data-usd=(g.usd) {
                        title { (day) " " (if g.key.is_empty() { "(none)" } else { &g.key }) ": " (usd(g.usd)) }
                    }
                }
                @if days.len() <= 31 && (i % 7 == 0 || days.len() <= 7) {
                    text x=(format!("{x:.1}")) y=(height + top + 16.0) { (day.format("%m-%d")) }
                }
            }
            text x="4" y=(top + 10.0) { (usd(most)) }
        }
        p.legend {
            @for p in &providers {
                span { svg.swatch xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10" { rect class={ "s" (colour(p)) } width="10" height="10" {} } " " (if p.is_empty() { "(none)" } else { p }) }
            }
        }
    }
}

/// The groupings the page offers; the API takes any `label:KEY`.
const GROUPINGS: [(&str, &str); 4] = [
    ("provider", "provider"),
    ("label:dag_id", "DAG (dag_id)"),
    ("label:task_id", "task (task_id)"),
    ("label:run_id", "run (run_id)"),
];

pub async fn costs(
    State(state): State<AppState>,
    session: Session,
    Query(p): Query<CostParams>,
) -> Response {
    let group_by = match p.group_by.strip_prefix("label:") {
        Some(key) if !key.is_empty() => CostGrouping::Label(key.to_string()),
        _ => CostGrouping::Provider,
    };
    let days = p.days.clamp(1, 366);
    let until = Utc::now();
    let query = CostQuery {
        group_by,
        since: until - chrono::Duration::days(days),
        until,
    };
    let groups = match state.store.costs(&session.tenant, &query).await {
        Ok(g) => g,
        Err(e) => return failure(&e.to_string()),
    };
    let daily = match daily_spend(&state, &session.tenant, &query).await {
        Ok(d) => d,
        Err(e) => return failure(&e.to_string()),
    };
    // As the API sums them, so that the totals agree.
    let total = crate::model::usd(groups.iter().map(|g| g.usd).sum());
    let reference = crate::model::usd(groups.iter().map(|g| g.reference_usd).sum());
    let saved = crate::model::usd(reference - total);
    let most = groups.iter().map(|g| g.usd).fold(0.0, f64::max);
    let bar = 24;
    let height = bar * groups.len().max(1) + 8;
    let body = html! {
        h1 { "Cost" }
        form #period method="get" action="/ui/costs" {
            label { "Per" select name="group_by" {
                @for (value, text) in GROUPINGS { option value=(value) selected[p.group_by == value] { (text) } }
            } }
            label { "Over the last" select name="days" {
                @for d in [1, 7, 30] { option value=(d) selected[days == d] { (d) " days" } }
            } }
            button type="submit" { "Show" }
        }
        svg #chart xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 720 " (height) } role="img" aria-label="spend per group" {
            @for (i, g) in groups.iter().enumerate() {
                @let y = 4 + i * bar;
                @let width = if most > 0.0 { 400.0 * g.usd / most } else { 0.0 };
                text x="4" y=(y + 16) { (if g.key.is_empty() { "(none)" } else { &g.key }) }
                rect x="180" y=(y + 3) width=(format!("{width:.1}")) height=(bar - 8) {}
                text x=(format!("{:.1}", 186.0 + width)) y=(y + 16) { (usd(g.usd)) }
            }
        }
        table #costs {
            thead { tr { th { "Group" } th.num { "Jobs" } th.num { "Cost" } th.num { "Estimated" } th.num { "At reference" } th.num { "Saved" } } }
            tbody {
                @for g in &groups {
                    tr data-group=(g.key) {
                        td { (if g.key.is_empty() { "(none)" } else { &g.key }) }
                        td.num { (g.jobs) }
                        td.num.usd { (usd(g.usd)) }
                        td.num { (usd(g.estimated_usd)) }
                        td.num { (usd(g.reference_usd)) }
                        td.num.saved { (usd(g.saved_usd)) }
                    }
                }
            }
            tfoot { tr { th { "Total" } th {} th.num #total-usd { (usd(total)) } th {} th.num #total-reference { (usd(reference)) } th.num #total-saved { (usd(saved)) } } }
        }
        p.muted { "Jobs that finished between " (when(&query.since)) " and " (when(&query.until)) ", as " code { "GET /v1/costs" } " reports them. \"At reference\" is what the same runs would have cost at each job's reference provider (the one it named, " code { "routing.reference_provider" } ", or the dearest that could run it); \"Saved\" is that less what they cost." }
        h2 { "Spend per day, by provider" }
        (daily_chart(&daily))
    };
    layout("Cost", &session, "/ui/costs", body).into_response()
}
