//! The schedule store on the jobs table:
//!
//! | item     | pk               | sk       | GSI keys |
//! |----------|------------------|----------|----------|
//! | schedule | `SCHED#{owner}`  | `{name}` | while it has a next firing, `gsi4pk = DUE`, `gsi4sk = {next_at}#{owner}#{name}` |
//!
//! An owner's schedules are one partition (list = one Query); due schedules
//! are one sparse index partition in time order (the `schedules` function
//! reads it, never a scan). A firing moves `next_at` on only if it is still
//! the slot it fired, so two firings of one slot cannot both advance it.
//!
//! A slot's job is created in one `TransactWriteItems` with a check that the
//! schedule still waits for the slot, so a delete and a firing cannot both
//! win: the one write that spans items, paid once per fired slot (the job
//! store's hot path stays on single conditional puts, see `job_store`).

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{ConditionCheck, Put, TransactWriteItem};
use chrono::{DateTime, SecondsFormat, Utc};

use super::job_store::{event_item, job_item};
use super::{Item, boxed, s};
use crate::domain::envelope::JobEventEnvelope;
use crate::domain::job::Job;
use crate::domain::schedule::Schedule;
use crate::ports::error::StoreError;
use crate::ports::{ScheduleStore, SlotStart};

#[derive(Debug, Clone)]
pub struct DynamoScheduleStore {
    client: Client,
    table: String,
}

impl DynamoScheduleStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    async fn put(
        &self,
        item: Item,
        condition: &str,
        values: Vec<(&str, aws_sdk_dynamodb::types::AttributeValue)>,
    ) -> Result<bool, StoreError> {
        let mut request = self.client.put_item().table_name(&self.table).set_item(Some(item)).condition_expression(condition);
        for (name, value) in values {
            request = request.expression_attribute_values(name, value);
        }
        match request.send().await {
            Ok(_) => Ok(true),
            Err(e) if matches!(e.as_service_error(), Some(PutItemError::ConditionalCheckFailedException(_))) => Ok(false),
            Err(SdkError::ServiceError(e)) if e.err().meta().code() == Some("ValidationException") => {
                Err(StoreError::Rejected(e.err().meta().message().unwrap_or("refused").to_owned()))
            }
            Err(e) => Err(StoreError::Unavailable(boxed(e))),
        }
    }
}

fn pk(owner: &str) -> String {
    format!("SCHED#{owner}")
}

fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn item(schedule: &Schedule) -> Result<Item, StoreError> {
    let mut item: Item = serde_dynamo::to_item(schedule).map_err(|e| StoreError::Corrupt { what: "schedule", reason: e.to_string() })?;
    item.insert("pk".into(), s(pk(&schedule.owner)));
    item.insert("sk".into(), s(schedule.name.clone()));
    if let Some(next) = schedule.next_at {
        item.insert("gsi4pk".into(), s("DUE"));
        item.insert("gsi4sk".into(), s(due_key(schedule, next)));
    }
    Ok(item)
}

/// The due index's sort key of `schedule`'s `slot`.
fn due_key(schedule: &Schedule, slot: DateTime<Utc>) -> String {
    format!("{}#{}#{}", time(slot), schedule.owner, schedule.name)
}

/// A request the SDK refuses to build names a bug here, never a retry.
fn unbuildable(e: aws_sdk_dynamodb::error::BuildError) -> StoreError {
    StoreError::Rejected(format!("malformed request: {e}"))
}

fn read(item: Item) -> Result<Schedule, StoreError> {
    serde_dynamo::from_item(item).map_err(|e| StoreError::Corrupt { what: "schedule", reason: e.to_string() })
}

#[async_trait]
impl ScheduleStore for DynamoScheduleStore {
    async fn create(&self, schedule: &Schedule) -> Result<bool, StoreError> {
        self.put(item(schedule)?, "attribute_not_exists(pk)", Vec::new()).await
    }

    async fn get(&self, owner: &str, name: &str) -> Result<Option<Schedule>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk(owner)))
            .key("sk", s(name))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(boxed(e)))?;
        out.item.map(read).transpose()
    }

    async fn list(&self, owner: &str) -> Result<Vec<Schedule>, StoreError> {
        let items: Vec<Item> = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(pk(owner)))
            .into_paginator()
            .items()
            .send()
            .collect::<Result<_, _>>()
            .await
            .map_err(|e| StoreError::Unavailable(boxed(e)))?;
        items.into_iter().map(read).collect()
    }

    async fn delete(&self, owner: &str, name: &str) -> Result<bool, StoreError> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(pk(owner)))
            .key("sk", s(name))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(boxed(e)))?;
        Ok(out.attributes.is_some_and(|a| !a.is_empty()))
    }

    async fn due(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Schedule>, StoreError> {
        // `~` sorts after every character of a key, so every key of the due millisecond is included.
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name("by-due")
            .key_condition_expression("gsi4pk = :pk AND gsi4sk <= :now")
            .expression_attribute_values(":pk", s("DUE"))
            .expression_attribute_values(":now", s(format!("{}~", time(now))))
            .limit(limit.clamp(1, 1000) as i32)
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(boxed(e)))?;
        out.items.unwrap_or_default().into_iter().map(read).collect()
    }

    async fn start_slot(
        &self,
        schedule: &Schedule,
        slot: DateTime<Utc>,
        job: &Job,
        created: &JobEventEnvelope,
    ) -> Result<SlotStart, StoreError> {
        crate::domain::limits::check_event_size(created)?;
        let waiting = ConditionCheck::builder()
            .table_name(&self.table)
            .key("pk", s(pk(&schedule.owner)))
            .key("sk", s(schedule.name.clone()))
            .condition_expression("gsi4sk = :slot")
            .expression_attribute_values(":slot", s(due_key(schedule, slot)))
            .build()
            .map_err(unbuildable)?;
        let new_item = |item: Item| {
            Put::builder().table_name(&self.table).set_item(Some(item)).condition_expression("attribute_not_exists(pk)").build()
        };
        // Log first, as every change (the stream publishes `job.created` from it).
        let first_event = new_item(event_item(job, created)?).map_err(unbuildable)?;
        let job_item = new_item(job_item(job)?).map_err(unbuildable)?;
        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().condition_check(waiting).build())
            .transact_items(TransactWriteItem::builder().put(first_event).build())
            .transact_items(TransactWriteItem::builder().put(job_item).build())
            .send()
            .await;
        let e = match result {
            Ok(_) => return Ok(SlotStart::New),
            Err(e) => e,
        };
        if let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) = e.as_service_error() {
            // One reason per item, in order: the check, the event, the job.
            let failed = |i: usize| cancelled.cancellation_reasons().get(i).and_then(|r| r.code()) == Some("ConditionalCheckFailed");
            if failed(1) || failed(2) {
                return Ok(SlotStart::Existing);
            }
            if failed(0) {
                return Ok(SlotStart::Withdrawn);
            }
        }
        match e.as_service_error().and_then(|s| s.meta().code()) {
            Some("ValidationException") => {
                Err(StoreError::Rejected(e.into_service_error().meta().message().unwrap_or("refused").to_owned()))
            }
            // Conflicts with another transaction, throttling, the service: retried.
            _ => Err(StoreError::Unavailable(boxed(e))),
        }
    }

    async fn advance(&self, next: &Schedule, slot: DateTime<Utc>) -> Result<bool, StoreError> {
        self.put(item(next)?, "gsi4sk = :slot", vec![(":slot", s(due_key(next, slot)))]).await
    }
}
