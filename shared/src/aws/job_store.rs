//! The job store on one DynamoDB table (single-table design):
//!
//! | item      | pk          | sk                | GSI keys |
//! |-----------|-------------|-------------------|----------|
//! | job       | `JOB#{id}`  | `META`            | `gsi1pk = OWNER#{owner}`, `gsi1sk = {created_at}#{id}`; `gsi2pk = OWNER#{owner}#{status}`, same sort key; while not terminal, `gsi3pk = ACTIVE#{shard}`, `gsi3sk = {updated_at}#{id}` |
//! | job event | `JOB#{id}`  | `EVT#{seq:010}`   | |
//!
//! The event log is the truth and the job item its projection. A change is
//! written log first: the event at `EVT#{seq}` (only if that slot is free,
//! which makes the sequence number a lock), then the job item (only if it is
//! still at `seq - 1`; a new job only if there is none). A writer that finds the slot taken rolls the job item
//! forward from the log before trying again, so a crash between the two
//! writes heals on the next write and the two never stay apart.
//!
//! Two conditional puts instead of one `TransactWriteItems`: a transaction
//! costs twice the writes on DynamoDB, and every change of every job pays it.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::AttributeValue;

use super::{Item, boxed, s};
use crate::domain::envelope::JobEventEnvelope;
use crate::domain::job::{Applied, Job, JobId, JobStatus};
use crate::ports::error::StoreError;
use crate::ports::{Created, JobStore, ListQuery, Page, owner_sort_key};

#[derive(Debug, Clone)]
pub struct DynamoJobStore {
    client: Client,
    table: String,
}

pub(super) fn job_pk(id: &JobId) -> String {
    format!("JOB#{id}")
}

fn event_sk(seq: u64) -> String {
    format!("EVT#{seq:010}")
}

pub(super) fn job_item(job: &Job) -> Result<Item, StoreError> {
    let mut item: Item = serde_dynamo::to_item(job).map_err(|e| StoreError::Corrupt { what: "job", reason: e.to_string() })?;
    let sort = owner_sort_key(job);
    item.insert("pk".into(), s(job_pk(&job.id)));
    item.insert("sk".into(), s("META"));
    item.insert("gsi1pk".into(), s(format!("OWNER#{}", job.owner)));
    item.insert("gsi1sk".into(), s(sort.clone()));
    item.insert("gsi2pk".into(), s(format!("OWNER#{}#{}", job.owner, job.status)));
    item.insert("gsi2sk".into(), s(sort));
    // The sweeper's index holds only jobs that can still get stuck: a
    // terminal job's item has no keys for it, so it leaves the index.
    if !job.status.is_terminal() {
        item.insert("gsi3pk".into(), s(active_partition(&job.id)));
        item.insert("gsi3sk".into(), s(activity_sort_key(job.updated_at, Some(&job.id))));
    }
    Ok(item)
}

/// Active jobs are spread over this many index partitions, so no one
/// partition takes every job's writes.
const ACTIVE_SHARDS: u32 = 4;

fn active_partition(id: &JobId) -> String {
    let shard = id.as_str().bytes().fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b))) % ACTIVE_SHARDS;
    format!("ACTIVE#{shard}")
}

fn activity_sort_key(at: chrono::DateTime<chrono::Utc>, id: Option<&JobId>) -> String {
    let at = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    match id {
        Some(id) => format!("{at}#{id}"),
        None => at,
    }
}

pub(super) fn event_item(job: &Job, event: &JobEventEnvelope) -> Result<Item, StoreError> {
    let mut item: Item = serde_dynamo::to_item(event).map_err(|e| StoreError::Corrupt { what: "event", reason: e.to_string() })?;
    item.insert("pk".into(), s(job_pk(&job.id)));
    item.insert("sk".into(), s(event_sk(job.seq)));
    item.insert("expires_at".into(), AttributeValue::N(job.expires_at.to_string()));
    Ok(item)
}

/// Whether a put failed on its condition (a lost race) rather than on the service.
fn lost_condition(e: &SdkError<PutItemError>) -> bool {
    matches!(e.as_service_error(), Some(PutItemError::ConditionalCheckFailedException(_)))
}

impl DynamoJobStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    /// Puts `item` if `condition` holds; `Ok(false)` when it did not.
    async fn put_if(&self, item: Item, condition: &str, values: Option<Item>) -> Result<bool, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition)
            .set_expression_attribute_values(values)
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if lost_condition(&e) => Ok(false),
            // An item DynamoDB refuses (too large, an invalid value) stays refused.
            Err(e) if e.as_service_error().and_then(|s| s.meta().code()) == Some("ValidationException") => {
                Err(StoreError::Rejected(e.into_service_error().meta().message().unwrap_or("ValidationException").to_owned()))
            }
            Err(e) => Err(StoreError::Unavailable(boxed(e))),
        }
    }

    /// Puts the job item if the stored one is still at `previous`.
    async fn put_job_after(&self, job: &Job, previous: u64) -> Result<bool, StoreError> {
        let values = HashMap::from([(":prev".to_owned(), AttributeValue::N(previous.to_string()))]);
        self.put_if(job_item(job)?, "seq = :prev", Some(values)).await
    }

    /// Applies logged events the job item has not caught up with (a writer
    /// that died between its two puts) and stores the result.
    async fn catch_up(&self, id: &JobId) -> Result<bool, StoreError> {
        let Some(mut job) = self.get(id).await? else { return Ok(false) };
        let stored_seq = job.seq;
        for event in self.events(id, stored_seq, 1000).await? {
            let corrupt = |reason: String| StoreError::Corrupt { what: "event log", reason };
            match job.apply(&event.body, event.timestamp) {
                Ok(Applied::Changed) if Some(job.seq) == event.seq => {}
                other => return Err(corrupt(format!("event {:?} of job {id} does not replay: {other:?}", event.seq))),
            }
        }
        if job.seq > stored_seq {
            tracing::warn!(job_id = %id, from = stored_seq, to = job.seq, "rolled the job forward from its log");
            // Losing this race means another writer rolled forward first.
            self.put_job_after(&job, stored_seq).await?;
        }
        Ok(job.seq > stored_seq)
    }
}

#[async_trait]
impl JobStore for DynamoJobStore {
    async fn create(&self, job: &Job, event: &JobEventEnvelope) -> Result<Created, StoreError> {
        crate::domain::limits::check_event_size(event)?;
        // Log first, as every change: once `EVT#1` is stored the stream
        // publishes `job.created`, whatever happens to this writer next.
        let logged = self.put_if(event_item(job, event)?, "attribute_not_exists(pk)", None).await?;
        if !self.put_if(job_item(job)?, "attribute_not_exists(pk)", None).await? {
            return match self.get(&job.id).await? {
                Some(existing) => Ok(Created::Existing(Box::new(existing))),
                None => Err(StoreError::Conflict(job.id.clone())),
            };
        }
        // The event slot was taken but the job item was not: an earlier
        // attempt died between its two puts, and this one completed it.
        if !logged {
            tracing::warn!(job_id = %job.id, "completed a job whose first write was interrupted");
        }
        Ok(Created::New)
    }

    async fn get(&self, id: &JobId) -> Result<Option<Job>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(job_pk(id)))
            .key("sk", s("META"))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(boxed(e)))?;
        out.item
            .map(|item| serde_dynamo::from_item(item).map_err(|e| StoreError::Corrupt { what: "job", reason: e.to_string() }))
            .transpose()
    }

    async fn commit(&self, job: &Job, event: &JobEventEnvelope) -> Result<(), StoreError> {
        crate::domain::limits::check_event_size(event)?;
        let previous = job.seq.checked_sub(1).ok_or_else(|| StoreError::Conflict(job.id.clone()))?;
        if !self.put_if(event_item(job, event)?, "attribute_not_exists(pk)", None).await? {
            // Someone logged this sequence number first: make sure the job item
            // shows it, so the caller's re-read sees the winner's change.
            self.catch_up(&job.id).await?;
            return Err(StoreError::Conflict(job.id.clone()));
        }
        // Lost only if another writer rolled our logged event forward already.
        self.put_job_after(job, previous).await?;
        Ok(())
    }

    async fn roll_forward(&self, id: &JobId) -> Result<bool, StoreError> {
        self.catch_up(id).await
    }

    async fn events(&self, id: &JobId, after_seq: u64, limit: u32) -> Result<Vec<JobEventEnvelope>, StoreError> {
        let mut items = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
            .expression_attribute_values(":pk", s(job_pk(id)))
            .expression_attribute_values(":from", s(event_sk(after_seq + 1)))
            .expression_attribute_values(":to", s(event_sk(9_999_999_999)))
            .consistent_read(true)
            .into_paginator()
            .page_size(limit.clamp(1, 1000) as i32)
            .items()
            .send();
        let mut events = Vec::new();
        // Stops after `limit`, so no page past the one that holds the last is read.
        while events.len() < limit as usize {
            let Some(item) = items.next().await else { break };
            let item = item.map_err(|e| StoreError::Unavailable(boxed(e)))?;
            events.push(serde_dynamo::from_item(item).map_err(|e| StoreError::Corrupt { what: "event", reason: e.to_string() })?);
        }
        Ok(events)
    }

    async fn idle(&self, since: chrono::DateTime<chrono::Utc>, limit: u32) -> Result<Vec<Job>, StoreError> {
        let mut jobs = Vec::new();
        for shard in 0..ACTIVE_SHARDS {
            let mut items = self
                .client
                .query()
                .table_name(&self.table)
                .index_name("by-activity")
                .key_condition_expression("gsi3pk = :pk AND gsi3sk < :before")
                .expression_attribute_values(":pk", s(format!("ACTIVE#{shard}")))
                .expression_attribute_values(":before", s(activity_sort_key(since, None)))
                .into_paginator()
                .page_size(limit.clamp(1, 1000) as i32)
                .items()
                .send();
            // Each partition comes oldest first: its first `limit` are all it can add.
            for _ in 0..limit {
                let Some(item) = items.next().await else { break };
                let item = item.map_err(|e| StoreError::Unavailable(boxed(e)))?;
                jobs.push(serde_dynamo::from_item(item).map_err(|e| StoreError::Corrupt { what: "job", reason: e.to_string() })?);
            }
        }
        jobs.sort_by_key(|j: &Job| j.updated_at);
        jobs.truncate(limit as usize);
        Ok(jobs)
    }

    async fn active_count(&self, owner: &str, at_most: u32) -> Result<u32, StoreError> {
        let mut count = 0u32;
        for status in [JobStatus::Queued, JobStatus::Processing] {
            // COUNT reads no attributes back; each page says how many it matched.
            let mut pages = self
                .client
                .query()
                .table_name(&self.table)
                .index_name("by-owner-status")
                .key_condition_expression("gsi2pk = :pk")
                .expression_attribute_values(":pk", s(format!("OWNER#{owner}#{status}")))
                .select(aws_sdk_dynamodb::types::Select::Count)
                .into_paginator()
                .page_size(at_most.clamp(1, 1000) as i32)
                .send();
            while count < at_most {
                let Some(page) = pages.next().await else { break };
                count += page.map_err(|e| StoreError::Unavailable(boxed(e)))?.count.max(0) as u32;
            }
        }
        Ok(count.min(at_most))
    }

    async fn list(&self, owner: &str, query: &ListQuery, now: chrono::DateTime<chrono::Utc>) -> Result<Page, StoreError> {
        let (index, pk_attr, sk_attr, pk) = match query.status {
            Some(status) => ("by-owner-status", "gsi2pk", "gsi2sk", format!("OWNER#{owner}#{status}")),
            None => ("by-owner", "gsi1pk", "gsi1sk", format!("OWNER#{owner}")),
        };
        let mut key_condition = "#pk = :pk".to_owned();
        let mut values =
            HashMap::from([(":pk".to_owned(), s(pk.clone())), (":now".to_owned(), AttributeValue::N(now.timestamp().to_string()))]);
        if let Some(since) = query.since {
            key_condition.push_str(" AND #sk >= :since");
            values.insert(":since".into(), s(since.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)));
        }
        let mut names = HashMap::from([("#pk".to_owned(), pk_attr.to_owned())]);
        if query.since.is_some() {
            names.insert("#sk".to_owned(), sk_attr.to_owned());
        }
        let mut filter = "expires_at > :now".to_owned();
        if let Some(m) = query.modality {
            filter.push_str(" AND modality = :modality");
            values.insert(":modality".into(), s(m.as_str()));
        }
        if query.runs_only {
            filter.push_str(" AND attribute_exists(workflow)");
        }
        let start_key = |sort: &str| -> Option<Item> {
            let id = sort.rsplit('#').next()?;
            Some(HashMap::from([
                ("pk".to_owned(), s(format!("JOB#{id}"))),
                ("sk".to_owned(), s("META")),
                (pk_attr.to_owned(), s(pk.clone())),
                (sk_attr.to_owned(), s(sort)),
            ]))
        };
        let limit = query.limit.max(1) as usize;
        let mut jobs: Vec<Job> = Vec::new();
        let mut start = query.cursor.as_deref().and_then(start_key);
        // By hand, not the paginator: each page asks for just what is still
        // missing (plus one, to know whether there is more), and the page
        // starts at the caller's cursor.
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(index)
                .key_condition_expression(&key_condition)
                .filter_expression(&filter)
                .set_expression_attribute_names(Some(names.clone()))
                .set_expression_attribute_values(Some(values.clone()))
                .scan_index_forward(false)
                .limit((limit - jobs.len() + 1).min(1000) as i32)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| StoreError::Unavailable(boxed(e)))?;
            for item in out.items.unwrap_or_default() {
                jobs.push(serde_dynamo::from_item(item).map_err(|e| StoreError::Corrupt { what: "job", reason: e.to_string() })?);
                if jobs.len() > limit {
                    break;
                }
            }
            if jobs.len() > limit || out.last_evaluated_key.is_none() {
                let more = jobs.len() > limit;
                jobs.truncate(limit);
                let cursor = more.then(|| jobs.last().map(owner_sort_key)).flatten();
                return Ok(Page { jobs, cursor });
            }
            start = out.last_evaluated_key;
        }
    }
}
