//! The dead-letter store on the jobs table:
//!
//! | item        | pk            | sk                    | |
//! |-------------|---------------|-----------------------|-|
//! | dead letter | `DEADLETTERS` | `{dlq}#{message_id}`  | `expires_at` (TTL): 14 days |
//!
//! One partition: dead letters are rare, and an operator reads them all at
//! once (one Query). Keyed by message id, so a redelivered dead letter is
//! kept once.

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::AttributeValue;

use super::{Item, boxed, s};
use crate::domain::dead_letters::DeadLetter;
use crate::ports::DeadLetterStore;
use crate::ports::error::StoreError;

const PK: &str = "DEADLETTERS";

#[derive(Debug, Clone)]
pub struct DynamoDeadLetterStore {
    client: Client,
    table: String,
}

impl DynamoDeadLetterStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }
}

fn sk(letter: &DeadLetter) -> String {
    format!("{}#{}", letter.dlq, letter.message_id)
}

fn item(letter: &DeadLetter) -> Result<Item, StoreError> {
    let mut item: Item = serde_dynamo::to_item(letter).map_err(|e| StoreError::Corrupt { what: "dead letter", reason: e.to_string() })?;
    item.insert("pk".into(), s(PK));
    item.insert("sk".into(), s(sk(letter)));
    item.insert("expires_at".into(), AttributeValue::N(letter.expires_at().timestamp().to_string()));
    Ok(item)
}

fn read(item: Item) -> Result<DeadLetter, StoreError> {
    serde_dynamo::from_item(item).map_err(|e| StoreError::Corrupt { what: "dead letter", reason: e.to_string() })
}

#[async_trait]
impl DeadLetterStore for DynamoDeadLetterStore {
    async fn keep(&self, letter: &DeadLetter) -> Result<bool, StoreError> {
        let request =
            self.client.put_item().table_name(&self.table).set_item(Some(item(letter)?)).condition_expression("attribute_not_exists(pk)");
        match request.send().await {
            Ok(_) => Ok(true),
            Err(e) if matches!(e.as_service_error(), Some(PutItemError::ConditionalCheckFailedException(_))) => Ok(false),
            Err(SdkError::ServiceError(e)) if e.err().meta().code() == Some("ValidationException") => {
                Err(StoreError::Rejected(e.err().meta().message().unwrap_or("refused").to_owned()))
            }
            Err(e) => Err(StoreError::Unavailable(boxed(e))),
        }
    }

    async fn list(&self, limit: u32) -> Result<Vec<DeadLetter>, StoreError> {
        let items = super::partition(&self.client, &self.table, PK).await?;
        let mut letters = items.into_iter().map(read).collect::<Result<Vec<_>, _>>()?;
        letters.sort_by(|a, b| a.dead_lettered_at.cmp(&b.dead_lettered_at).then_with(|| a.message_id.cmp(&b.message_id)));
        letters.truncate(limit as usize);
        Ok(letters)
    }

    async fn forget(&self, letter: &DeadLetter) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(PK))
            .key("sk", s(sk(letter)))
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(boxed(e)))?;
        Ok(())
    }
}
