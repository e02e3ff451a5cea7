//! The breaker store on the jobs table:
//!
//! | item      | pk        | sk           | |
//! |-----------|-----------|--------------|-|
//! | a breaker | `BREAKER` | `{dependency}` | the [`Breaker`], `version` checked on every put |
//!
//! A handful of items in one partition: `all` is one Query.

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::AttributeValue;

use super::{Item, boxed, s};
use crate::domain::breakers::{Breaker, Dependency};
use crate::ports::BreakerStore;
use crate::ports::error::StoreError;

const PK: &str = "BREAKER";

#[derive(Debug, Clone)]
pub struct DynamoBreakerStore {
    client: Client,
    table: String,
}

impl DynamoBreakerStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }
}

fn read(item: Item) -> Result<Breaker, StoreError> {
    serde_dynamo::from_item(item).map_err(|e| StoreError::Corrupt { what: "breaker", reason: e.to_string() })
}

#[async_trait]
impl BreakerStore for DynamoBreakerStore {
    async fn get(&self, dependency: Dependency) -> Result<Option<Breaker>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(PK))
            .key("sk", s(dependency.to_string()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(boxed(e)))?;
        out.item.map(read).transpose()
    }

    async fn all(&self) -> Result<Vec<Breaker>, StoreError> {
        super::partition(&self.client, &self.table, PK).await?.into_iter().map(read).collect()
    }

    async fn put(&self, next: &Breaker) -> Result<bool, StoreError> {
        let mut item: Item = serde_dynamo::to_item(next).map_err(|e| StoreError::Corrupt { what: "breaker", reason: e.to_string() })?;
        item.insert("pk".into(), s(PK));
        item.insert("sk".into(), s(next.dependency.to_string()));
        let request = self.client.put_item().table_name(&self.table).set_item(Some(item));
        let request = match next.version {
            0 | 1 => request.condition_expression("attribute_not_exists(pk)"),
            v => {
                request.condition_expression("version = :prev").expression_attribute_values(":prev", AttributeValue::N((v - 1).to_string()))
            }
        };
        match request.send().await {
            Ok(_) => Ok(true),
            Err(e) if matches!(e.as_service_error(), Some(PutItemError::ConditionalCheckFailedException(_))) => Ok(false),
            Err(e) => Err(StoreError::Unavailable(boxed(e))),
        }
    }
}
