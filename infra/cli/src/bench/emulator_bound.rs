//! The bound the emulators set on the pipeline: how many requests a second
//! each serves (several clients at once, a mix like the pipeline's), divided
//! by the calls a job makes of it. The load run's throughput is read
//! against the lower of the two, measured twice: each emulator with nothing
//! else asking anything of the machine, and both asked at once, as the
//! pipeline asks them. On a machine of two cores the two emulators share
//! them, so the first bound counts each core twice.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, Put, ScalarAttributeType, TransactWriteItem,
};
use prism_cloud::load::Pace;
use prism_cloud::provision::Clients;

/// Clients asking at once, and for how long.
const CLIENTS: u64 = 8;
const WINDOW: Duration = Duration::from_secs(5);
const SCRATCH: &str = "prism-bench-bound";

/// Requests per second each emulator served.
#[derive(Debug, Clone, Copy)]
pub struct EmulatorRates {
    /// moto: DynamoDB (two `TransactWriteItems` of two items to a `GetItem` and an `UpdateItem`).
    pub dynamodb: f64,
    /// LocalStack: S3 `PutObject`/`GetObject`, SQS `SendMessage`, SNS `Publish`.
    pub others: f64,
}

/// Each emulator alone, and both asked at once as the pipeline asks them
/// (they share the machine's cores, so each alone overstates what the two
/// serve together).
#[derive(Debug, Clone, Copy)]
pub struct EmulatorBound {
    pub alone: EmulatorRates,
    pub together: EmulatorRates,
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

/// Measures each emulator alone, then both at once, on scratch resources of their own.
pub async fn measure(clients: &Clients) -> anyhow::Result<EmulatorBound> {
    let key = |name: &str, kind| KeySchemaElement::builder().attribute_name(name).key_type(kind).build();
    let attribute = |name: &str| AttributeDefinition::builder().attribute_name(name).attribute_type(ScalarAttributeType::S).build();
    clients
        .dynamodb
        .create_table()
        .table_name(SCRATCH)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key("pk", KeyType::Hash)?)
        .key_schema(key("sk", KeyType::Range)?)
        .attribute_definitions(attribute("pk")?)
        .attribute_definitions(attribute("sk")?)
        .send()
        .await?;
    clients.s3.create_bucket().bucket(SCRATCH).send().await?;
    let queue = clients.sqs.create_queue().queue_name(SCRATCH).send().await?.queue_url.unwrap_or_default();
    let topic = clients.sns.create_topic().name(SCRATCH).send().await?.topic_arn.unwrap_or_default();
    let alone = EmulatorRates { dynamodb: dynamodb_rate(clients, "alone").await?, others: others_rate(clients, &queue, &topic).await? };
    let (dynamodb, others) = tokio::try_join!(dynamodb_rate(clients, "together"), others_rate(clients, &queue, &topic))?;
    clients.dynamodb.delete_table().table_name(SCRATCH).send().await?;
    Ok(EmulatorBound { alone, together: EmulatorRates { dynamodb, others } })
}

/// moto's requests per second on the scratch table, in items of `round`'s own.
async fn dynamodb_rate(clients: &Clients, round: &'static str) -> anyhow::Result<f64> {
    let dynamodb = clients.dynamodb.clone();
    // The pipeline's mix per job: about 4.5 changes (each a transaction of
    // an event and the job item, conditional), 3 reads and one counter
    // update; so two transactions, a read and an update.
    rate(move |client, i| {
        let dynamodb = dynamodb.clone();
        async move {
            let pk = AttributeValue::S(format!("{round}-client-{client}"));
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
    .await
}

/// LocalStack's requests per second on the scratch bucket, queue and topic.
async fn others_rate(clients: &Clients, queue: &str, topic: &str) -> anyhow::Result<f64> {
    let (s3, sqs, sns, queue, topic) = (clients.s3.clone(), clients.sqs.clone(), clients.sns.clone(), queue.to_owned(), topic.to_owned());
    rate(move |client, i| {
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
    .await
}

/// The bound and the throughput against it, from the load run's calls per job.
pub fn write(
    bound: EmulatorBound,
    calls_per_job: &BTreeMap<String, f64>,
    jobs_per_second: f64,
    pace: Pace,
    out: &mut String,
) -> std::fmt::Result {
    let calls = |emulated: &dyn Fn(&str) -> bool| calls_per_job.iter().filter(|(op, _)| emulated(op)).map(|(_, n)| n).sum::<f64>();
    let dynamodb_calls = calls(&|op| op.starts_with("dynamodb:"));
    let other_calls = calls(&|op| ["s3:", "sqs:", "sns:"].iter().any(|service| op.starts_with(service)));
    let allows = |rps: f64, per_job: f64| if per_job > 0.0 { rps / per_job } else { f64::INFINITY };
    let jobs_allowed = |rates: EmulatorRates| (allows(rates.dynamodb, dynamodb_calls), allows(rates.others, other_calls));
    writeln!(out, "### Throughput against the emulators' bound\n")?;
    writeln!(
        out,
        "Each emulator alone, then both at once ({CLIENTS} clients each for {} s, before the run, on scratch resources), divided by the calls a job made of it in the run:\n",
        WINDOW.as_secs()
    )?;
    writeln!(out, "| emulator | calls per job | requests/s alone | jobs/s it allows | requests/s together | jobs/s it allows |")?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|")?;
    let ((moto_alone, others_alone), (moto_together, others_together)) = (jobs_allowed(bound.alone), jobs_allowed(bound.together));
    writeln!(
        out,
        "| moto (DynamoDB) | {dynamodb_calls:.1} | {:.0} | {moto_alone:.1} | {:.0} | {moto_together:.1} |",
        bound.alone.dynamodb, bound.together.dynamodb
    )?;
    writeln!(
        out,
        "| S3, SQS, SNS (LocalStack; moto on the moto-only cloud) | {other_calls:.1} | {:.0} | {others_alone:.1} | {:.0} | {others_together:.1} |",
        bound.alone.others, bound.together.others
    )?;
    let verdict = |share: f64| if share >= 50.0 { "met" } else { "missed" };
    let (alone, together) = (moto_alone.min(others_alone), moto_together.min(others_together));
    let (share_alone, share_together) = (jobs_per_second / alone * 100.0, jobs_per_second / together * 100.0);
    if let Pace::PerSecond(rate) = pace {
        // A paced run's throughput is its rate: it says how loaded the cloud
        // was while its latencies were measured, not what the pipeline can do.
        return writeln!(
            out,
            "\nPaced at {rate:.1} jobs/s, the run's {jobs_per_second:.1} jobs/s is {share_alone:.0}% of the bound each emulator sets alone \
             ({alone:.1} jobs/s) and {share_together:.0}% of the bound they set together ({together:.1} jobs/s): the load its latencies were measured at.\n"
        );
    }
    writeln!(
        out,
        "\nThroughput {jobs_per_second:.1} jobs/s is {share_alone:.0}% of the bound each emulator sets alone ({alone:.1} jobs/s; goal >= 50%: {}) \
         and {share_together:.0}% of the bound they set together ({together:.1} jobs/s; {}).\n",
        verdict(share_alone),
        verdict(share_together)
    )
}

/// Every request each emulator served during the run, per job: the
/// functions' calls and also what they do not count, the event sources'
/// receives and deletes, the submitters' uploads and drops, the stream's
/// reads and the bench's own, from the emulators' request logs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Served {
    pub moto: f64,
    pub localstack: f64,
}

impl Served {
    /// From two readings of the request logs (`emulator: operation` counts) around a run of `jobs`.
    pub fn since(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, jobs: usize) -> Self {
        let total = |emulator: &str| {
            let prefix = format!("{emulator}: ");
            after
                .iter()
                .filter(|(op, _)| op.starts_with(&prefix))
                .map(|(op, n)| n.saturating_sub(before.get(op).copied().unwrap_or(0)))
                .sum::<u64>() as f64
                / jobs.max(1) as f64
        };
        Self { moto: total("moto"), localstack: total("localstack") }
    }
}

/// The bound again, from every request each emulator served: the load an
/// emulator carries per job is more than the functions' calls. Only on the
/// default cloud, where each emulator has its own services.
pub fn write_served(bound: EmulatorBound, served: Served, jobs_per_second: f64, out: &mut String) -> std::fmt::Result {
    if served.localstack == 0.0 || served.moto == 0.0 {
        return Ok(());
    }
    let allows = |rps: f64, per_job: f64| rps / per_job;
    let alone = allows(bound.alone.dynamodb, served.moto).min(allows(bound.alone.others, served.localstack));
    let together = allows(bound.together.dynamodb, served.moto).min(allows(bound.together.others, served.localstack));
    writeln!(
        out,
        "Counting every request each emulator served during the run (from their request logs: the event sources' receives \
         and deletes, the submitters' uploads and drops, the stream's reads and the bench's own included), a job cost moto \
         {:.1} and LocalStack {:.1} requests; against those the bound is {alone:.1} jobs/s alone and {together:.1} together, \
         and the throughput {:.0}% and {:.0}% of it.\n",
        served.moto,
        served.localstack,
        jobs_per_second / alone * 100.0,
        jobs_per_second / together * 100.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throughput_is_read_against_the_lower_bound_alone_and_together() {
        let calls =
            BTreeMap::from([("dynamodb:GetItem".to_owned(), 8.0), ("s3:GetObject".to_owned(), 4.0), ("sqs:SendMessage".to_owned(), 2.0)]);
        let bound = EmulatorBound {
            alone: EmulatorRates { dynamodb: 500.0, others: 600.0 },
            together: EmulatorRates { dynamodb: 300.0, others: 300.0 },
        };
        let mut out = String::new();
        write(bound, &calls, 26.0, Pace::FlatOut, &mut out).expect("write");
        assert!(out.contains("| moto (DynamoDB) | 8.0 | 500 | 62.5 | 300 | 37.5 |"), "{out}");
        assert!(out.contains("| 6.0 | 600 | 100.0 | 300 | 50.0 |"), "{out}");
        assert!(out.contains("42% of the bound each emulator sets alone (62.5 jobs/s; goal >= 50%: missed)"), "{out}");
        assert!(out.contains("69% of the bound they set together (37.5 jobs/s; met)"), "{out}");
    }

    #[test]
    fn every_request_an_emulator_served_in_the_run_counts_against_its_bound() {
        let before = BTreeMap::from([("moto: dynamodb.GetItem".to_owned(), 100), ("localstack: sqs.ReceiveMessage".to_owned(), 50)]);
        let after = BTreeMap::from([
            ("moto: dynamodb.GetItem".to_owned(), 700),
            ("moto: dynamodbstreams.GetRecords".to_owned(), 200),
            ("localstack: sqs.ReceiveMessage".to_owned(), 450),
            ("localstack: s3.PutObject".to_owned(), 400),
        ]);
        let served = Served::since(&before, &after, 100);
        assert_eq!(served, Served { moto: 8.0, localstack: 8.0 });
        let rates = |dynamodb, others| EmulatorRates { dynamodb, others };
        let bound = EmulatorBound { alone: rates(400.0, 320.0), together: rates(200.0, 240.0) };
        let mut out = String::new();
        write_served(bound, served, 20.0, &mut out).expect("write");
        // LocalStack's 320 requests/s at 8 a job allow 40 jobs/s alone; moto's 200 together allow 25.
        assert!(out.contains("the bound is 40.0 jobs/s alone and 25.0 together, and the throughput 50% and 80% of it"), "{out}");
        let mut none = String::new();
        write_served(bound, Served { moto: 8.0, localstack: 0.0 }, 20.0, &mut none).expect("write");
        assert!(none.is_empty(), "the moto-only cloud has no second emulator: {none}");
    }

    #[test]
    fn a_paced_run_is_read_as_the_load_it_offered_and_not_against_the_goal() {
        let calls = BTreeMap::from([("dynamodb:GetItem".to_owned(), 8.0), ("s3:GetObject".to_owned(), 6.0)]);
        let bound = EmulatorBound {
            alone: EmulatorRates { dynamodb: 500.0, others: 600.0 },
            together: EmulatorRates { dynamodb: 300.0, others: 300.0 },
        };
        let mut out = String::new();
        write(bound, &calls, 12.4, Pace::PerSecond(12.5), &mut out).expect("write");
        assert!(
            out.contains("Paced at 12.5 jobs/s, the run's 12.4 jobs/s is 20% of the bound each emulator sets alone (62.5 jobs/s)"),
            "{out}"
        );
        assert!(out.contains("33% of the bound they set together (37.5 jobs/s)"), "{out}");
        assert!(!out.contains("goal"), "a paced run is not held to the throughput goal: {out}");
    }
}
