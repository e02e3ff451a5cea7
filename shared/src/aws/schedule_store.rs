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

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use chrono::{DateTime, SecondsFormat, Utc};

use super::{Item, boxed, s};
use crate::domain::schedule::Schedule;
use crate::ports::ScheduleStore;
use crate::ports::error::StoreError;

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
        item.insert("gsi4sk".into(), s(format!("{}#{}#{}", time(next), schedule.owner, schedule.name)));
    }
    Ok(item)
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

    async fn advance(&self, next: &Schedule, slot: DateTime<Utc>) -> Result<bool, StoreError> {
        let slot_key = format!("{}#{}#{}", time(slot), next.owner, next.name);
        self.put(item(next)?, "gsi4sk = :slot", vec![(":slot", s(slot_key))]).await
    }
}
