//! The bound the emulators set on the pipeline: how many requests a second
//! each serves when nothing else asks anything of it (several clients at
//! once, a mix like the pipeline's), divided by the calls a job makes of
//! it. The load run's throughput is read against the lower of the two.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, Put, ScalarAttributeType, TransactWriteItem,
};
use prism_cloud::provision::Clients;

/// Clients asking at once, and for how long.
const CLIENTS: u64 = 8;
const WINDOW: Duration = Duration::from_secs(5);
const SCRATCH: &str = "prism-bench-bound";

/// Requests per second each emulator served alone.
#[derive(Debug, Clone, Copy)]
pub struct EmulatorRates {
    /// moto: DynamoDB (two `TransactWriteItems` of two items to a `GetItem` and an `UpdateItem`).
    pub dynamodb: f64,
    /// LocalStack: S3 `PutObject`/`GetObject`, SQS `SendMessage`, SNS `Publish`.
    pub others: f64,
}

/// Runs `op(client, i)` from [`CLIENTS`] clients for [`WINDOW`]; requests per second.
async fn rate<F, Fut>(op: F) -> anyhow::Result<f64>
where
    F: Fn(u64, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<u64>> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (op, done) = (op.clone(), done.clone());
            tokio::spawn(async move {
                let mut i = 0;
                while started.elapsed() < WINDOW {
                    done.fetch_add(op(client, i).await?, Ordering::Relaxed);
                    i += 1;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for worker in workers {
        worker.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

/// Measures both emulators, one after the other, on scratch resources of their own.
pub async fn measure(clients: &Clients) -> anyhow::Result<EmulatorRates> {
    let dynamodb = clients.dynamodb.clone();
    let key = |name: &str, kind| KeySchemaElement::builder().attribute_name(name).key_type(kind).build();
    let attribute = |name: &str| AttributeDefinition::builder().attribute_name(name).attribute_type(ScalarAttributeType::S).build();
    dynamodb
        .create_table()
        .table_name(SCRATCH)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key("pk", KeyType::Hash)?)
        .key_schema(key("sk", KeyType::Range)?)
        .attribute_definitions(attribute("pk")?)
        .attribute_definitions(attribute("sk")?)
        .send()
        .await?;
    // The pipeline's mix per job: about 4.5 changes (each a transaction of
    // an event and the job item, conditional), 3 reads and one counter
    // update; so two transactions, a read and an update.
    let dynamodb_rate = rate(move |client, i| {
        let dynamodb = dynamodb.clone();
        async move {
            let pk = AttributeValue::S(format!("client-{client}"));
            let item = |sk: String| -> HashMap<String, AttributeValue> {
                HashMap::from([
                    ("pk".to_owned(), pk.clone()),
                    ("sk".to_owned(), AttributeValue::S(sk)),
                    ("seq".to_owned(), AttributeValue::N(i.to_string())),
                    ("body".to_owned(), AttributeValue::S("x".repeat(300))),
                ])
            };
            for half in 0..2 {
                let event = Put::builder()
                    .table_name(SCRATCH)
                    .set_item(Some(item(format!("EVT#{i:08}#{half}"))))
                    .condition_expression("attribute_not_exists(pk)")
                    .build()?;
                let job = Put::builder()
                    .table_name(SCRATCH)
                    .set_item(Some(item("META".into())))
                    .condition_expression("attribute_not_exists(pk) OR seq <= :seq")
                    .expression_attribute_values(":seq", AttributeValue::N(i.to_string()))
                    .build()?;
                dynamodb
                    .transact_write_items()
                    .transact_items(TransactWriteItem::builder().put(event).build())
                    .transact_items(TransactWriteItem::builder().put(job).build())
                    .send()
                    .await?;
            }
            dynamodb.get_item().table_name(SCRATCH).key("pk", pk.clone()).key("sk", AttributeValue::S("META".into())).send().await?;
            dynamodb
                .update_item()
                .table_name(SCRATCH)
                .key("pk", pk)
                .key("sk", AttributeValue::S("TOTALS".into()))
                .update_expression("ADD jobs :one")
                .expression_attribute_values(":one", AttributeValue::N("1".into()))
                .send()
                .await?;
            Ok(4)
        }
    })
    .await?;
    clients.dynamodb.delete_table().table_name(SCRATCH).send().await?;

    let (s3, sqs, sns) = (clients.s3.clone(), clients.sqs.clone(), clients.sns.clone());
    s3.create_bucket().bucket(SCRATCH).send().await?;
    let queue = sqs.create_queue().queue_name(SCRATCH).send().await?.queue_url.unwrap_or_default();
    let topic = sns.create_topic().name(SCRATCH).send().await?.topic_arn.unwrap_or_default();
    let others_rate = rate(move |client, i| {
        let (s3, sqs, sns, queue, topic) = (s3.clone(), sqs.clone(), sns.clone(), queue.clone(), topic.clone());
        async move {
            let key = format!("client-{client}/{i}");
            s3.put_object().bucket(SCRATCH).key(&key).body(vec![b'x'; 1024].into()).send().await?;
            s3.get_object().bucket(SCRATCH).key(&key).send().await?.body.collect().await?;
            sqs.send_message().queue_url(&queue).message_body("{}").send().await?;
            sns.publish().topic_arn(&topic).message("{}").send().await?;
            Ok(4)
        }
    })
    .await?;
    Ok(EmulatorRates { dynamodb: dynamodb_rate, others: others_rate })
}

/// The bound and the throughput against it, from the load run's calls per job.
pub fn write(rates: EmulatorRates, calls_per_job: &BTreeMap<String, f64>, jobs_per_second: f64, out: &mut String) -> std::fmt::Result {
    let calls = |emulated: &dyn Fn(&str) -> bool| calls_per_job.iter().filter(|(op, _)| emulated(op)).map(|(_, n)| n).sum::<f64>();
    let dynamodb_calls = calls(&|op| op.starts_with("dynamodb:"));
    let other_calls = calls(&|op| ["s3:", "sqs:", "sns:"].iter().any(|service| op.starts_with(service)));
    let allows = |rps: f64, per_job: f64| if per_job > 0.0 { rps / per_job } else { f64::INFINITY };
    let (moto, localstack) = (allows(rates.dynamodb, dynamodb_calls), allows(rates.others, other_calls));
    let bound = moto.min(localstack);
    writeln!(out, "### Throughput against the emulators' bound\n")?;
    writeln!(
        out,
        "Each emulator alone ({CLIENTS} clients for {} s, before the run, on scratch resources), divided by the calls a job made of it in the run:\n",
        WINDOW.as_secs()
    )?;
    writeln!(out, "| emulator | requests/s alone | calls per job | jobs/s it allows |\n|---|---:|---:|---:|")?;
    writeln!(out, "| moto (DynamoDB) | {:.0} | {dynamodb_calls:.1} | {moto:.1} |", rates.dynamodb)?;
    writeln!(out, "| S3, SQS, SNS (LocalStack; moto on the moto-only cloud) | {:.0} | {other_calls:.1} | {localstack:.1} |", rates.others)?;
    let share = jobs_per_second / bound * 100.0;
    let verdict = if share >= 50.0 { "met" } else { "missed" };
    writeln!(out, "\nThroughput {jobs_per_second:.1} jobs/s is {share:.0}% of the bound ({bound:.1} jobs/s); goal >= 50%: {verdict}.\n")
}
