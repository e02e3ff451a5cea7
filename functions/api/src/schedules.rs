//! An owner's schedules: jobs (or workflow runs) on a stored object, later,
//! once or at a rate. The `schedules` function fires them.

use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use chrono::{DateTime, Duration, Utc};
use prism_shared::domain::schedule::{self, Schedule, ScheduledJob, When};
use prism_shared::{Priority, S3Uri};
use serde::Deserialize;

use crate::problem::ApiError;
use crate::submit::{self, SubmitRequest};
use crate::{Answer, Deps, parse_body, to_value};

/// How far ahead a schedule may start.
const MAX_AHEAD: Duration = Duration::days(366);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRequest {
    pub name: String,
    /// Once, at this time.
    #[serde(default)]
    pub at: Option<DateTime<Utc>>,
    /// Once, this many seconds from now.
    #[serde(default)]
    pub delay_s: Option<u64>,
    /// Again and again: `rate(N seconds|minutes|hours|days)`, from `start_at` (default now).
    #[serde(default)]
    pub rate: Option<String>,
    #[serde(default)]
    pub start_at: Option<DateTime<Utc>>,
    /// Again and again at the times `cron(minutes hours day-of-month month
    /// day-of-week year)` names, as EventBridge Scheduler reads it, in `timezone`.
    #[serde(default)]
    pub cron: Option<String>,
    /// An IANA time zone for `cron` (default UTC).
    #[serde(default)]
    pub timezone: Option<String>,
    pub job: ScheduledJobRequest,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduledJobRequest {
    /// An object under the caller's `uploads/{owner}/`.
    pub source: String,
    #[serde(default)]
    pub priority: Option<Priority>,
    #[serde(default)]
    pub workflow: Option<String>,
    #[serde(default)]
    pub metadata: std::collections::BTreeMap<String, String>,
}

fn when(req: &ScheduleRequest, now: DateTime<Utc>) -> Result<When, ApiError> {
    let when = match (req.at, req.delay_s, &req.rate, &req.cron) {
        (Some(at), None, None, None) => When::At(at),
        (None, Some(delay), None, None) => {
            let delay = i64::try_from(delay).ok().and_then(Duration::try_seconds).unwrap_or(MAX_AHEAD + Duration::days(1));
            When::At(now + delay)
        }
        (None, None, Some(rate), None) => {
            let every_s = schedule::parse_rate(rate).map_err(|e| ApiError::Invalid(e.to_string()))?;
            When::Every { start: req.start_at.unwrap_or(now), every_s }
        }
        (None, None, None, Some(cron)) => {
            let timezone = req.timezone.clone().unwrap_or_else(|| "UTC".to_owned());
            schedule::CronSchedule::parse(cron, &timezone).map_err(|e| ApiError::Invalid(e.to_string()))?;
            When::Cron { expression: cron.clone(), timezone }
        }
        _ => return Err(ApiError::Invalid("give exactly one of at, delay_s, rate and cron".into())),
    };
    if req.start_at.is_some() && req.rate.is_none() {
        return Err(ApiError::Invalid("start_at goes with rate".into()));
    }
    if req.timezone.is_some() && req.cron.is_none() {
        return Err(ApiError::Invalid("timezone goes with cron".into()));
    }
    let first = when.first(now).ok_or_else(|| ApiError::Invalid("the cron expression names no time to come".into()))?;
    if first > now + MAX_AHEAD {
        return Err(ApiError::Invalid("a schedule starts within a year".into()));
    }
    Ok(when)
}

pub async fn create(deps: &Deps, owner: &str, req: &ApiGatewayV2httpRequest) -> Result<Answer, ApiError> {
    let request: ScheduleRequest = parse_body(req, false)?;
    schedule::check_name(&request.name).map_err(|e| ApiError::Invalid(e.to_string()))?;
    let now = Utc::now();
    let when = when(&request, now)?;
    let spec = request.job;
    // The job each firing starts must be one `POST /v1/jobs` would take now.
    let as_submit = SubmitRequest {
        source: Some(spec.source.clone()),
        priority: spec.priority,
        workflow: spec.workflow.clone(),
        metadata: spec.metadata.clone(),
        ..SubmitRequest::default()
    };
    submit::validate(&as_submit, deps)?;
    let source: S3Uri = submit::owned_source(deps, owner, &spec.source)?;
    let job = ScheduledJob { source, priority: spec.priority.unwrap_or_default(), workflow: spec.workflow, metadata: spec.metadata };
    let schedule = Schedule::new(owner.to_owned(), request.name, when, job, now);
    if !deps.schedules.create(&schedule).await? {
        return Err(ApiError::Conflict(format!("a schedule named {:?} exists", schedule.name)));
    }
    Ok((201, to_value(&schedule)))
}

pub async fn list(deps: &Deps, owner: &str) -> Result<Answer, ApiError> {
    Ok((200, serde_json::json!({ "schedules": deps.schedules.list(owner).await? })))
}

fn name(req: &ApiGatewayV2httpRequest) -> Result<&str, ApiError> {
    let name = req.path_parameters.get("name").map(String::as_str).unwrap_or_default();
    schedule::check_name(name).map_err(|_| ApiError::NoSchedule)?;
    Ok(name)
}

pub async fn get(deps: &Deps, owner: &str, req: &ApiGatewayV2httpRequest) -> Result<Answer, ApiError> {
    let schedule = deps.schedules.get(owner, name(req)?).await?.ok_or(ApiError::NoSchedule)?;
    Ok((200, to_value(&schedule)))
}

pub async fn delete(deps: &Deps, owner: &str, req: &ApiGatewayV2httpRequest) -> Result<Answer, ApiError> {
    if !deps.schedules.delete(owner, name(req)?).await? {
        return Err(ApiError::NoSchedule);
    }
    Ok((200, serde_json::json!({ "deleted": true })))
}
