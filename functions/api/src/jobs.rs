//! Reading and cancelling an owner's jobs.

use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use chrono::{DateTime, Utc};
use prism_shared::app::lifecycle;
use prism_shared::domain::lanes;
use prism_shared::ports::ListQuery;
use prism_shared::{Job, JobEvent, JobId};

use crate::problem::ApiError;
use crate::{Answer, Deps, SOURCE, to_value};

/// The job, if it exists, has not expired (TTL deletes lazily) and belongs to `owner`.
async fn owned_job(deps: &Deps, owner: &str, req: &ApiGatewayV2httpRequest) -> Result<Job, ApiError> {
    let id: JobId = req.path_parameters.get("id").and_then(|id| id.parse().ok()).ok_or(ApiError::NotFound)?;
    match deps.jobs.get(&id).await? {
        Some(job) if job.owner == owner && !job.is_expired(Utc::now()) => Ok(job),
        _ => Err(ApiError::NotFound),
    }
}

fn query<'a>(req: &'a ApiGatewayV2httpRequest, name: &str) -> Option<&'a str> {
    req.query_string_parameters.first(name)
}

/// A whole-number query parameter within `range` (as the OpenAPI document
/// bounds it), `default` when absent; anything else is a 400 problem.
fn number(req: &ApiGatewayV2httpRequest, name: &str, default: u64, range: std::ops::RangeInclusive<u64>) -> Result<u64, ApiError> {
    let Some(text) = query(req, name) else { return Ok(default) };
    match text.parse::<u64>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(ApiError::BadRequest(format!("{name} must be a whole number from {} to {}", range.start(), range.end()))),
    }
}

fn parsed<T: std::str::FromStr>(req: &ApiGatewayV2httpRequest, name: &str) -> Result<Option<T>, ApiError>
where
    T::Err: std::fmt::Display,
{
    query(req, name).map(|v| v.parse::<T>().map_err(|e| ApiError::BadRequest(format!("{name}: {e}")))).transpose()
}

/// The job's snapshot, with a short-lived download link for each output.
pub async fn get(deps: &Deps, owner: &str, req: &ApiGatewayV2httpRequest) -> Result<Answer, ApiError> {
    let mut job = owned_job(deps, owner, req).await?;
    if let Some(lane) = paused_lane(deps, &job).await {
        job.phase = format!("waiting: lane {lane} is paused");
    }
    snapshot(deps, job).await
}

/// The lane a queued job waits in, when an operator paused it. Read from the
/// lane's event-source mapping (one call, only for a classified queued job);
/// a lane that cannot be read leaves the phase as stored rather than fail
/// the read of the job.
async fn paused_lane(deps: &Deps, job: &Job) -> Option<String> {
    // A workflow's root waits for the workflow function, not in a lane.
    let lane = lanes::lane_of(&deps.config.lanes, job).filter(|_| job.workflow.is_none())?;
    match deps.lanes.state(&lane.mapping_id).await {
        Ok(state) => state.paused().then(|| lane.lane.clone()),
        Err(e) => {
            tracing::warn!(error = %e, lane = %lane.lane, "cannot tell whether the job's lane is paused");
            None
        }
    }
}

/// A workflow run: its root job's snapshot, whose `run` lists every step
/// (status, attempts, timing, outputs, error). Jobs that are not runs are 404.
pub async fn get_run(deps: &Deps, owner: &str, req: &ApiGatewayV2httpRequest) -> Result<Answer, ApiError> {
    let job = owned_job(deps, owner, req).await?;
    if job.workflow.is_none() {
        return Err(ApiError::NotFound);
    }
    snapshot(deps, job).await
}

async fn snapshot(deps: &Deps, job: Job) -> Result<Answer, ApiError> {
    let ttl = deps.config.upload_url_ttl;
    let mut links = Vec::with_capacity(job.outputs.len());
    for output in &job.outputs {
        let url = deps.blobs.presign_get(&output.uri, ttl).await?;
        links.push(serde_json::json!({
            "name": output.name, "content_type": output.content_type, "size": output.size, "url": url, "expires_in_s": ttl.as_secs(),
        }));
    }
    let mut snapshot = to_value(&job);
    snapshot["links"] = serde_json::Value::Array(links);
    Ok((200, snapshot))
}

pub async fn events(deps: &Deps, owner: &str, req: &ApiGatewayV2httpRequest) -> Result<Answer, ApiError> {
    let job = owned_job(deps, owner, req).await?;
    // Sequence numbers are stored in ten digits.
    let after = number(req, "after", 0, 0..=9_999_999_999)?;
    let limit = number(req, "limit", 100, 1..=1000)? as u32;
    let events = deps.jobs.events(&job.id, after, limit).await?;
    let next = events.last().and_then(|e| e.seq).filter(|_| events.len() == limit as usize);
    Ok((200, serde_json::json!({ "events": events, "next_after": next })))
}

/// The job's log lines after event `after`, whole `job.log` events at a
/// time (a page may pass `limit` by the rest of one event's lines, so none
/// is split across pages); each line carries its event's `seq`.
pub async fn logs(deps: &Deps, owner: &str, req: &ApiGatewayV2httpRequest) -> Result<Answer, ApiError> {
    /// Events read per table query while looking for log lines.
    const READ: u32 = 200;
    let job = owned_job(deps, owner, req).await?;
    let mut after = number(req, "after", 0, 0..=9_999_999_999)?;
    let limit = number(req, "limit", 100, 1..=1000)? as usize;
    let mut lines = Vec::new();
    // The job's seq bounds the log: no read past it, and none at all when nothing is after `after`.
    'pages: while after < job.seq && lines.len() < limit {
        let events = deps.jobs.events(&job.id, after, READ).await?;
        for event in &events {
            let seq = event.seq.unwrap_or(after);
            after = seq;
            if let JobEvent::Logged { lines: logged } = &event.body {
                lines.extend(logged.iter().map(|line| {
                    let mut value = to_value(line);
                    value["seq"] = seq.into();
                    value
                }));
                if lines.len() >= limit {
                    break 'pages;
                }
            }
        }
        if events.len() < READ as usize {
            break;
        }
    }
    let next = (lines.len() >= limit).then_some(after);
    Ok((200, serde_json::json!({ "lines": lines, "log_lines": job.log_lines, "next_after": next })))
}

pub async fn cancel(deps: &Deps, owner: &str, req: &ApiGatewayV2httpRequest) -> Result<Answer, ApiError> {
    let job = owned_job(deps, owner, req).await?;
    // A finished job answers 409 with its status (see `ApiError::from`).
    let job = lifecycle::request_cancel(deps.jobs.as_ref(), &job, SOURCE).await?;
    Ok((202, to_value(&job)))
}

/// The caller's workflow runs (their root jobs), listed as jobs are.
pub async fn list_runs(deps: &Deps, owner: &str, req: &ApiGatewayV2httpRequest) -> Result<Answer, ApiError> {
    let (jobs, next) = page(deps, owner, req, true).await?;
    Ok((200, serde_json::json!({ "runs": jobs, "next_cursor": next })))
}

pub async fn list(deps: &Deps, owner: &str, req: &ApiGatewayV2httpRequest) -> Result<Answer, ApiError> {
    let (jobs, next) = page(deps, owner, req, false).await?;
    Ok((200, serde_json::json!({ "jobs": jobs, "next_cursor": next })))
}

async fn page(deps: &Deps, owner: &str, req: &ApiGatewayV2httpRequest, runs_only: bool) -> Result<(Vec<Job>, Option<String>), ApiError> {
    let cursor = query(req, "cursor")
        .map(|c| {
            B64.decode(c).ok().and_then(|b| String::from_utf8(b).ok()).ok_or_else(|| ApiError::BadRequest("cursor is not valid".into()))
        })
        .transpose()?;
    let list = ListQuery {
        status: parsed(req, "status")?,
        modality: parsed(req, "modality")?,
        since: parsed::<DateTime<Utc>>(req, "since")?,
        runs_only,
        limit: number(req, "limit", 20, 1..=100)? as u32,
        cursor,
    };
    let page = deps.jobs.list(owner, &list, Utc::now()).await?;
    Ok((page.jobs, page.cursor.map(|c| B64.encode(c))))
}
