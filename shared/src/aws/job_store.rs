//! The job store on one DynamoDB table (single-table design):
//!
//! | item      | pk          | sk                | GSI keys |
//! |-----------|-------------|-------------------|----------|
//! | job       | `JOB#{id}`  | `META`            | `gsi1pk = OWNER#{owner}`, `gsi1sk = {created_at}#{id}`; `gsi2pk = OWNER#{owner}#{status}`, same sort key; while not terminal, `gsi3pk = ACTIVE#{shard}`, `gsi3sk = {updated_at}#{id}`, and `gsi5pk = ACTIVE#{owner}`, `gsi5sk = {created_at}#{id}` |
//! | job event | `JOB#{id}`  | `EVT#{seq:010}`   | |
//!
//! The event log is the truth and the job item its projection. A change is
//! one `TransactWriteItems`: the new events at their `EVT#{seq}` slots (only
//! if free) and the job item (only if it is still at the sequence number the
//! change was computed from; a new job only if there is none). The sequence
//! number is the lock, and the log and the job can never disagree: there is
//! no moment between two writes for a writer to die in.
//!
//! A transaction costs twice the write units of plain puts. It is still the
//! cheaper design: one round trip per change instead of two, and one call
//! for several events (a processor's pending progress, its log lines and its
//! result go in one), where calls are what a job's latency and the local
//! cloud's throughput are made of; and no roll-forward path to get wrong.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};

use super::{Item, boxed, s};
use crate::domain::envelope::JobEventEnvelope;
use crate::domain::job::{Job, JobId};
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
    if job.watched {
        item.insert(WATCHED.into(), AttributeValue::Bool(true));
    }
    // The sweeper's index holds only jobs that can still get stuck: a
    // terminal job's item has no keys for it, so it leaves the index.
    if !job.status.is_terminal() {
        item.insert("gsi3pk".into(), s(active_partition(&job.id)));
        item.insert("gsi3sk".into(), s(activity_sort_key(job.updated_at, Some(&job.id))));
        // And the owner's active jobs, which the quota counts.
        item.insert("gsi5pk".into(), s(format!("ACTIVE#{}", job.owner)));
        item.insert("gsi5sk".into(), s(owner_sort_key(job)));
    }
    Ok(item)
}

/// The attribute that marks a watched job, and each event stored while it is.
pub(super) const WATCHED: &str = "watched";

/// A job item read back, with its watched mark (which the job's JSON leaves out).
fn read_job(item: Item) -> Result<Job, StoreError> {
    let watched = matches!(item.get(WATCHED), Some(AttributeValue::Bool(true)));
    let job: Job = serde_dynamo::from_item(item).map_err(|e| StoreError::Corrupt { what: "job", reason: e.to_string() })?;
    Ok(Job { watched, ..job })
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
    let seq = event.seq.ok_or_else(|| StoreError::Corrupt { what: "event", reason: format!("an event of job {} has no seq", job.id) })?;
    let mut item: Item = serde_dynamo::to_item(event).map_err(|e| StoreError::Corrupt { what: "event", reason: e.to_string() })?;
    item.insert("pk".into(), s(job_pk(&job.id)));
    item.insert("sk".into(), s(event_sk(seq)));
    item.insert("expires_at".into(), AttributeValue::N(job.expires_at.to_string()));
    // For the publisher: a watched job's events go to the fan-out.
    if job.watched {
        item.insert(WATCHED.into(), AttributeValue::Bool(true));
    }
    Ok(item)
}

/// How a change's transaction ended.
enum Written {
    Done,
    /// A condition failed: on the job item (index `events.len()`) or an event slot.
    LostRace {
        on_job_item: bool,
    },
}

impl DynamoJobStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    /// Writes `events` (each at its own slot, if free) and `job` (if
    /// `job_condition` holds) in one transaction.
    async fn write_change(
        &self,
        job: &Job,
        events: &[JobEventEnvelope],
        job_condition: &str,
        values: Option<Item>,
    ) -> Result<Written, StoreError> {
        let unbuildable = |e: aws_sdk_dynamodb::error::BuildError| StoreError::Rejected(e.to_string());
        let mut items = Vec::with_capacity(events.len() + 1);
        for event in events {
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(event_item(job, event)?))
                .condition_expression("attribute_not_exists(pk)")
                .build()
                .map_err(unbuildable)?;
            items.push(TransactWriteItem::builder().put(put).build());
        }
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(job_item(job)?))
            .condition_expression(job_condition)
            .set_expression_attribute_values(values)
            .build()
            .map_err(unbuildable)?;
        items.push(TransactWriteItem::builder().put(put).build());
        let e = match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
            Ok(_) => return Ok(Written::Done),
            Err(e) => e,
        };
        if let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) = e.as_service_error() {
            // One reason per item, in order: the events, then the job.
            let reasons = cancelled.cancellation_reasons();
            let failed = |r: &aws_sdk_dynamodb::types::CancellationReason| r.code() == Some("ConditionalCheckFailed");
            if reasons.iter().any(failed) {
                return Ok(Written::LostRace { on_job_item: reasons.get(events.len()).is_some_and(failed) });
            }
            // Another transaction on the same items at the same moment: a race too.
            if reasons.iter().any(|r| r.code() == Some("TransactionConflict")) {
                return Err(StoreError::Conflict(job.id.clone()));
            }
        }
        Err(write_error(e))
    }
}

/// An item DynamoDB refuses (too large, an invalid value) stays refused;
/// anything else (throttling, the service) is retried.
fn write_error(e: SdkError<TransactWriteItemsError>) -> StoreError {
    match e.as_service_error().and_then(|s| s.meta().code()) {
        Some("ValidationException") => {
            StoreError::Rejected(e.into_service_error().meta().message().unwrap_or("ValidationException").to_owned())
        }
        _ => StoreError::Unavailable(boxed(e)),
    }
}

#[async_trait]
impl JobStore for DynamoJobStore {
    async fn create(&self, job: &Job, events: &[JobEventEnvelope]) -> Result<Created, StoreError> {
        if crate::ports::first_seq_of_change(job, events)? != 1 {
            return Err(StoreError::Corrupt { what: "change", reason: format!("a new job {} starts its log at seq 1", job.id) });
        }
        match self.write_change(job, events, "attribute_not_exists(pk)", None).await? {
            Written::Done => Ok(Created::New),
            Written::LostRace { .. } => match self.get(&job.id).await? {
                Some(existing) => Ok(Created::Existing(Box::new(existing))),
                None => Err(StoreError::Conflict(job.id.clone())),
            },
        }
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
        out.item.map(read_job).transpose()
    }

    async fn commit(&self, job: &Job, events: &[JobEventEnvelope]) -> Result<(), StoreError> {
        let previous = crate::ports::first_seq_of_change(job, events)? - 1;
        let mut values = HashMap::from([(":prev".to_owned(), AttributeValue::N(previous.to_string()))]);
        let condition = if job.watched {
            values.insert(":watched".to_owned(), AttributeValue::Bool(true));
            "seq = :prev AND watched = :watched"
        } else {
            "seq = :prev AND attribute_not_exists(watched)"
        };
        match self.write_change(job, events, condition, Some(values)).await? {
            Written::Done => Ok(()),
            // The job moved on since the change was computed (an event slot
            // taken with the job item still at `previous` cannot happen: the
            // two are only ever written together).
            Written::LostRace { on_job_item: true } => Err(StoreError::Conflict(job.id.clone())),
            Written::LostRace { on_job_item: false } => Err(StoreError::Corrupt {
                what: "event log",
                reason: format!("job {} is at seq {previous} but its log already has a later event", job.id),
            }),
        }
    }

    async fn watch(&self, id: &JobId) -> Result<Option<Job>, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(job_pk(id)))
            .key("sk", s("META"))
            .update_expression("SET #watched = :watched")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#watched", WATCHED)
            .expression_attribute_values(":watched", AttributeValue::Bool(true))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(out) => out.attributes.map(read_job).transpose(),
            Err(e) if matches!(e.as_service_error(), Some(UpdateItemError::ConditionalCheckFailedException(_))) => Ok(None),
            Err(e) => Err(StoreError::Unavailable(boxed(e))),
        }
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
        // COUNT reads no attributes back; each page says how many it matched.
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .index_name("by-owner-active")
            .key_condition_expression("gsi5pk = :pk")
            .expression_attribute_values(":pk", s(format!("ACTIVE#{owner}")))
            .select(aws_sdk_dynamodb::types::Select::Count)
            .into_paginator()
            .page_size(at_most.clamp(1, 1000) as i32)
            .send();
        let mut count = 0u32;
        while count < at_most {
            let Some(page) = pages.next().await else { break };
            count += page.map_err(|e| StoreError::Unavailable(boxed(e)))?.count.max(0) as u32;
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
