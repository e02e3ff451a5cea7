use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::Client;

use super::boxed;
use crate::ports::Queue;
use crate::ports::error::QueueError;

#[derive(Debug)]
pub struct SqsQueue {
    client: super::LazyClient<Client>,
    /// Queue URLs by ARN: event records name their queue by ARN, but
    /// `ChangeMessageVisibility` wants the URL. Looked up once per queue.
    urls: Mutex<HashMap<String, String>>,
}

impl SqsQueue {
    pub fn new(client: super::LazyClient<Client>) -> Self {
        Self { client, urls: Mutex::default() }
    }

    fn client(&self) -> &Client {
        self.client.get()
    }

    async fn url_of(&self, arn: &str) -> Result<String, QueueError> {
        if let Some(url) = self.urls.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(arn) {
            return Ok(url.clone());
        }
        // arn:aws:sqs:{region}:{account}:{name}
        let parts: Vec<&str> = arn.split(':').collect();
        let [_, _, "sqs", _, account, name] = parts[..] else {
            return Err(QueueError::BadArn(arn.to_owned()));
        };
        let out = self
            .client()
            .get_queue_url()
            .queue_name(name)
            .queue_owner_aws_account_id(account)
            .send()
            .await
            .map_err(|e| QueueError::Unavailable(boxed(e)))?;
        let url = out.queue_url.ok_or_else(|| QueueError::BadArn(arn.to_owned()))?;
        self.urls.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(arn.to_owned(), url.clone());
        Ok(url)
    }
}

#[async_trait]
impl Queue for SqsQueue {
    async fn send_after(&self, queue_url: &str, body: String, delay: Duration) -> Result<(), QueueError> {
        let mut request = self.client().send_message().queue_url(queue_url).message_body(body);
        if !delay.is_zero() {
            // SQS takes whole seconds up to 900; a part second rounds up so the wait is never shorter.
            request = request.delay_seconds(delay.as_secs_f64().ceil().min(900.0) as i32);
        }
        request.send().await.map_err(|e| QueueError::Unavailable(boxed(e)))?;
        Ok(())
    }

    async fn send_again(&self, queue_arn: &str, body: String, delay: Duration) -> Result<(), QueueError> {
        let url = self.url_of(queue_arn).await?;
        self.send_after(&url, body, delay).await
    }

    async fn retry_later(&self, queue_arn: &str, receipt_handle: &str, delay: Duration) -> Result<(), QueueError> {
        let url = self.url_of(queue_arn).await?;
        self.client()
            .change_message_visibility()
            .queue_url(url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(i32::try_from(delay.as_secs()).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(|e| QueueError::Unavailable(boxed(e)))?;
        Ok(())
    }
}
