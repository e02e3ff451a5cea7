//! WebSocket connections and subscriptions in the jobs table:
//!
//! | item         | pk            | sk               | attributes |
//! |--------------|---------------|------------------|------------|
//! | connection   | `CONN#{id}`   | `META`           | owner, connected_at, expires_at, `jobs` (string set of subscribed jobs) |
//! | fan-out cursor | `JOB#{job}` | `SUB`            | sent_seq (events pushed to every subscription so far), expires_at |
//! | subscription | `JOB#{job}`   | `SUB#{conn}`     | expires_at |
//!
//! Fan-out reads a job's cursor and its subscriptions with one Query on its
//! partition (`begins_with(sk, "SUB")`: the cursor sorts first, at the head
//! of the subscriptions it tracks), beside the job and its events: no scans,
//! no index, one round trip. TTL (`expires_at`) removes what a lost
//! `$disconnect` leaves behind. (Cursors were once at `FANOUT`, read with a
//! `GetItem` of their own; one left there is read as 0, so that job's next
//! fan-out pushes its events again, which clients drop, and TTL removes it.)

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::AttributeValue;

use super::job_store::job_pk;
use super::{Item, boxed, s};
use crate::domain::job::JobId;
use crate::ports::error::StoreError;
use crate::ports::{Connection, ConnectionStore, FanOutState, Subscription};

#[derive(Debug, Clone)]
pub struct DynamoConnectionStore {
    client: Client,
    table: String,
}

fn conn_key(connection_id: &str) -> Item {
    HashMap::from([("pk".to_owned(), s(format!("CONN#{connection_id}"))), ("sk".to_owned(), s("META"))])
}

fn sub_key(job_id: &JobId, connection_id: &str) -> Item {
    HashMap::from([("pk".to_owned(), s(job_pk(job_id))), ("sk".to_owned(), s(format!("{SUBSCRIPTION_SK_PREFIX}{connection_id}")))])
}

fn unavailable<E: std::error::Error + Send + Sync + 'static>(e: E) -> StoreError {
    StoreError::Unavailable(boxed(e))
}

fn to_item<T: serde::Serialize>(what: &'static str, value: &T, key: Item) -> Result<Item, StoreError> {
    let mut item: Item = serde_dynamo::to_item(value).map_err(|e| StoreError::Corrupt { what, reason: e.to_string() })?;
    item.extend(key);
    Ok(item)
}

fn from_item<T: serde::de::DeserializeOwned>(what: &'static str, item: Item) -> Result<T, StoreError> {
    serde_dynamo::from_item(item).map_err(|e| StoreError::Corrupt { what, reason: e.to_string() })
}

impl DynamoConnectionStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    /// Adds or removes a job in the connection's set, if the connection still exists.
    async fn update_jobs(&self, connection_id: &str, op: &str, job_id: &JobId) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(conn_key(connection_id)))
            .update_expression(format!("{op} jobs :job"))
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":job", AttributeValue::Ss(vec![job_id.to_string()]))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Disconnected meanwhile: $disconnect cleans up what it finds.
            Err(e) if matches!(e.as_service_error(), Some(UpdateItemError::ConditionalCheckFailedException(_))) => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }
}

#[async_trait]
impl ConnectionStore for DynamoConnectionStore {
    async fn connect(&self, connection: &Connection) -> Result<(), StoreError> {
        let item = to_item("connection", connection, conn_key(&connection.connection_id))?;
        self.client.put_item().table_name(&self.table).set_item(Some(item)).send().await.map_err(unavailable)?;
        Ok(())
    }

    async fn connection(&self, connection_id: &str) -> Result<Option<Connection>, StoreError> {
        self.connection_item(connection_id).await?.map(|item| from_item("connection", item)).transpose()
    }

    async fn disconnect(&self, connection_id: &str) -> Result<(), StoreError> {
        let item = self.connection_item(connection_id).await?;
        let jobs = match item.as_ref().and_then(|item| item.get("jobs")) {
            Some(AttributeValue::Ss(jobs)) => jobs.clone(),
            _ => Vec::new(),
        };
        for job in jobs {
            let Ok(job_id) = job.parse::<JobId>() else { continue };
            self.unsubscribe_only(connection_id, &job_id).await?;
        }
        self.client.delete_item().table_name(&self.table).set_key(Some(conn_key(connection_id))).send().await.map_err(unavailable)?;
        Ok(())
    }

    async fn subscribe(&self, subscription: &Subscription) -> Result<(), StoreError> {
        let item = to_item("subscription", subscription, sub_key(&subscription.job_id, &subscription.connection_id))?;
        self.client.put_item().table_name(&self.table).set_item(Some(item)).send().await.map_err(unavailable)?;
        self.update_jobs(&subscription.connection_id, "ADD", &subscription.job_id).await
    }

    async fn unsubscribe(&self, connection_id: &str, job_id: &JobId) -> Result<(), StoreError> {
        self.unsubscribe_only(connection_id, job_id).await?;
        self.update_jobs(connection_id, "DELETE", job_id).await
    }

    async fn fan_out_state(&self, job_id: &JobId) -> Result<FanOutState, StoreError> {
        let mut items = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :head)")
            .expression_attribute_values(":pk", s(job_pk(job_id)))
            .expression_attribute_values(":head", s(FAN_OUT_CURSOR_SK))
            .consistent_read(true)
            .into_paginator()
            .items()
            .send();
        let mut state = FanOutState::default();
        while let Some(item) = items.next().await {
            let item = item.map_err(unavailable)?;
            match item.get("sk") {
                Some(AttributeValue::S(sk)) if sk == FAN_OUT_CURSOR_SK => state.sent_seq = sent_seq(job_id, &item)?,
                Some(AttributeValue::S(sk)) if sk.starts_with(SUBSCRIPTION_SK_PREFIX) => {
                    state.subscriptions.push(from_item("subscription", item)?);
                }
                _ => {
                    return Err(StoreError::Corrupt {
                        what: "subscription",
                        reason: format!("unexpected item in job {job_id}'s fan-out range"),
                    });
                }
            }
        }
        Ok(state)
    }

    async fn advance_fan_out(&self, job_id: &JobId, sent_seq: u64) -> Result<(), StoreError> {
        let expires_at = chrono::Utc::now() + crate::domain::job::RETENTION;
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(fan_out_key(job_id)))
            .update_expression("SET sent_seq = :sent, expires_at = :expires_at")
            .condition_expression("attribute_not_exists(sent_seq) OR sent_seq < :sent")
            .expression_attribute_values(":sent", AttributeValue::N(sent_seq.to_string()))
            .expression_attribute_values(":expires_at", AttributeValue::N(expires_at.timestamp().to_string()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Another sender got further first: the cursor never goes back.
            Err(e) if matches!(e.as_service_error(), Some(UpdateItemError::ConditionalCheckFailedException(_))) => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }
}

/// The cursor's sort key: a prefix of every subscription's, so it sorts first among them.
const FAN_OUT_CURSOR_SK: &str = "SUB";
const SUBSCRIPTION_SK_PREFIX: &str = "SUB#";

fn fan_out_key(job_id: &JobId) -> Item {
    HashMap::from([("pk".to_owned(), s(job_pk(job_id))), ("sk".to_owned(), s(FAN_OUT_CURSOR_SK))])
}

fn sent_seq(job_id: &JobId, cursor: &Item) -> Result<u64, StoreError> {
    match cursor.get("sent_seq").map(|v| v.as_n().map(|n| n.parse::<u64>())) {
        None => Ok(0),
        Some(Ok(Ok(seq))) => Ok(seq),
        Some(_) => Err(StoreError::Corrupt { what: "fan-out cursor", reason: format!("sent_seq of job {job_id} is not a number") }),
    }
}

impl DynamoConnectionStore {
    async fn connection_item(&self, connection_id: &str) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(conn_key(connection_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(out.item)
    }

    async fn unsubscribe_only(&self, connection_id: &str, job_id: &JobId) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(sub_key(job_id, connection_id)))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
