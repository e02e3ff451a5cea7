//! The quota store on the jobs table:
//!
//! | item            | pk              | sk               | |
//! |-----------------|-----------------|------------------|-|
//! | an owner's quota| `OWNER#{owner}` | `QUOTA`          | `max_active_jobs`, `max_bytes_per_day` (absent: the default) |
//! | bytes of a day  | `OWNER#{owner}` | `BYTES#{date}`   | `bytes`; `expires_at` (TTL) two days after the day |
//!
//! A day's bytes are counted by one conditional `UpdateItem` (`ADD`, only
//! while the sum stays within the limit), so concurrent submissions cannot
//! pass the quota together.

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::NaiveDate;

use super::{Item, boxed, s};
use crate::domain::quotas::OwnerQuota;
use crate::ports::QuotaStore;
use crate::ports::error::StoreError;

#[derive(Debug, Clone)]
pub struct DynamoQuotaStore {
    client: Client,
    table: String,
}

impl DynamoQuotaStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }
}

fn pk(owner: &str) -> AttributeValue {
    s(format!("OWNER#{owner}"))
}

fn day_sk(day: NaiveDate) -> AttributeValue {
    s(format!("BYTES#{day}"))
}

fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

#[async_trait]
impl QuotaStore for DynamoQuotaStore {
    async fn quota(&self, owner: &str) -> Result<Option<OwnerQuota>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", pk(owner))
            .key("sk", s("QUOTA"))
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(boxed(e)))?;
        out.item
            .map(|mut item| {
                // The quota refuses fields it does not know; the keys are the table's.
                item.remove("pk");
                item.remove("sk");
                serde_dynamo::from_item(item).map_err(|e| StoreError::Corrupt { what: "quota", reason: e.to_string() })
            })
            .transpose()
    }

    async fn set_quota(&self, owner: &str, quota: &OwnerQuota) -> Result<(), StoreError> {
        let mut item: Item = serde_dynamo::to_item(quota).map_err(|e| StoreError::Corrupt { what: "quota", reason: e.to_string() })?;
        item.insert("pk".into(), pk(owner));
        item.insert("sk".into(), s("QUOTA"));
        self.client.put_item().table_name(&self.table).set_item(Some(item)).send().await.map_err(|e| StoreError::Unavailable(boxed(e)))?;
        Ok(())
    }

    async fn charge_bytes(&self, owner: &str, day: NaiveDate, bytes: u64, limit: u64) -> Result<bool, StoreError> {
        let Some(room) = limit.checked_sub(bytes) else { return Ok(false) };
        let expires = day.and_hms_opt(0, 0, 0).map_or(0, |t| t.and_utc().timestamp()) + 3 * 86_400;
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", pk(owner))
            .key("sk", day_sk(day))
            .update_expression("ADD bytes :bytes SET expires_at = :expires")
            .condition_expression("attribute_not_exists(bytes) OR bytes <= :room")
            .expression_attribute_values(":bytes", n(bytes))
            .expression_attribute_values(":room", n(room))
            .expression_attribute_values(":expires", AttributeValue::N(expires.to_string()));
        match request.send().await {
            Ok(_) => Ok(true),
            Err(e) if matches!(e.as_service_error(), Some(UpdateItemError::ConditionalCheckFailedException(_))) => Ok(false),
            Err(e) => Err(StoreError::Unavailable(boxed(e))),
        }
    }

    async fn bytes_used(&self, owner: &str, day: NaiveDate) -> Result<u64, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", pk(owner))
            .key("sk", day_sk(day))
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(boxed(e)))?;
        match out.item.as_ref().and_then(|i| i.get("bytes")) {
            None => Ok(0),
            Some(AttributeValue::N(v)) => v.parse().map_err(|_| StoreError::Corrupt { what: "byte count", reason: v.clone() }),
            Some(other) => Err(StoreError::Corrupt { what: "byte count", reason: format!("{other:?}") }),
        }
    }
}
