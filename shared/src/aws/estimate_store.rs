//! The estimate store on the jobs table:
//!
//! | item | pk | sk | |
//! |------|----|----|-|
//! | a modality's day | `ESTIMATES` | `{modality}#{yyyy-mm-dd}` | `estimated_s`, `actual_s`, `jobs`: added to by each completed job; expires after the window |
//!
//! Each completion is one `UpdateItem` of `ADD`s, so concurrent processors
//! never conflict; the calibration is one Query of at most five modalities
//! times seven days. (One partition takes every completion: at a thousand
//! completions a second it would want its key spread over shards.)

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::NaiveDate;

use super::{boxed, s};
use crate::domain::estimates::{Calibration, EstimateTotals, WINDOW_DAYS, in_window};
use crate::domain::job::Modality;
use crate::ports::EstimateStore;
use crate::ports::error::StoreError;

const PK: &str = "ESTIMATES";

#[derive(Debug, Clone)]
pub struct DynamoEstimateStore {
    client: Client,
    table: String,
}

impl DynamoEstimateStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }
}

fn number(value: f64) -> AttributeValue {
    AttributeValue::N(format!("{value:.6}"))
}

#[async_trait]
impl EstimateStore for DynamoEstimateStore {
    async fn add(&self, modality: Modality, day: NaiveDate, job: EstimateTotals) -> Result<(), StoreError> {
        let expires = day.and_hms_opt(0, 0, 0).map_or(0, |t| t.and_utc().timestamp()) + (WINDOW_DAYS as i64 + 1) * 86_400;
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(PK))
            .key("sk", s(format!("{modality}#{day}")))
            .update_expression("ADD estimated_s :estimated, actual_s :actual, jobs :jobs SET expires_at = :expires")
            .expression_attribute_values(":estimated", number(job.estimated_s))
            .expression_attribute_values(":actual", number(job.actual_s))
            .expression_attribute_values(":jobs", AttributeValue::N(job.jobs.to_string()))
            .expression_attribute_values(":expires", AttributeValue::N(expires.to_string()))
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(boxed(e)))?;
        Ok(())
    }

    async fn calibration(&self, today: NaiveDate) -> Result<Calibration, StoreError> {
        let items = super::partition(&self.client, &self.table, PK).await?;
        let corrupt = |reason: String| StoreError::Corrupt { what: "estimate totals", reason };
        let mut days = Vec::new();
        for item in items {
            let Some(AttributeValue::S(sk)) = item.get("sk") else { return Err(corrupt("no sort key".into())) };
            let (modality, day) = sk.split_once('#').ok_or_else(|| corrupt(sk.clone()))?;
            let day: NaiveDate = day.parse().map_err(|_| corrupt(sk.clone()))?;
            // Past the window (its expiry may not have run yet), or a modality this build does not know.
            let Ok(modality) = modality.parse::<Modality>() else { continue };
            if !in_window(day, today) {
                continue;
            }
            let field = |name: &str| match item.get(name) {
                Some(AttributeValue::N(v)) => v.parse::<f64>().map_err(|_| corrupt(format!("{sk}: {name} = {v}"))),
                _ => Ok(0.0),
            };
            let totals = EstimateTotals { estimated_s: field("estimated_s")?, actual_s: field("actual_s")?, jobs: field("jobs")? as u64 };
            days.push((modality, totals));
        }
        Ok(Calibration::from_totals(days))
    }
}
