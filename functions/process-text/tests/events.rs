//! The sample process command, round-tripped and run through the handler with fakes.

use std::sync::Arc;

use aws_lambda_events::sqs::SqsEvent;
use chrono::Utc;
use prism_shared::app::lifecycle;
use prism_shared::domain::commands::Command;
use prism_shared::domain::envelope;
use prism_shared::domain::job::{Classification, InputObject};
use prism_shared::domain::results::{JobResult, TextEncoding};
use prism_shared::ports::JobStore;
use prism_shared::testing::memory::{MemoryBlobStore, MemoryEstimates, MemoryJobStore, MemoryQueue};
use prism_shared::testing::sample_event;
use prism_shared::{Envelope, Job, JobEvent, JobEventEnvelope, JobId, JobStatus, Modality, Priority, S3Uri};
use process_text::{Config, Deps, handle};

const JOB: &str = "0196f0a0-0000-7000-8000-00000000c1a5";

async fn run(content: &[u8], max_bytes: u64, cancel: bool) -> Job {
    run_calibrating(content, max_bytes, cancel).await.0
}

/// [`run`], with the store the completed job's time was added to.
async fn run_calibrating(content: &[u8], max_bytes: u64, cancel: bool) -> (Job, Arc<MemoryEstimates>) {
    let (mut jobs, estimates) = run_batch(&[content], max_bytes, cancel).await;
    (jobs.remove(0), estimates)
}

/// One batch of texts, each a job of its own (the first is [`JOB`], the
/// sample command's), run through the handler.
async fn run_batch(contents: &[&[u8]], max_bytes: u64, cancel: bool) -> (Vec<Job>, Arc<MemoryEstimates>) {
    run_batch_with(contents, max_bytes, cancel, Input::Stored).await
}

/// Where a command's input is: in the bucket, or only in the command.
#[derive(Clone, Copy, PartialEq)]
enum Input {
    Stored,
    CarriedOnly,
}

async fn run_batch_with(contents: &[&[u8]], max_bytes: u64, cancel: bool, input_at: Input) -> (Vec<Job>, Arc<MemoryEstimates>) {
    let sample: SqsEvent = sample_event("sqs-process-text-command.json");
    let (jobs, blobs) = (Arc::new(MemoryJobStore::default()), Arc::new(MemoryBlobStore::default()));
    let mut event = SqsEvent::default();
    let mut ids = Vec::new();
    for (i, content) in contents.iter().enumerate() {
        let id: JobId = format!("0196f0a0-0000-7000-8000-00000000c1{:02x}", 0xa5 + i).parse().expect("id");
        let upload: S3Uri = format!("s3://prism-dev-000000000000-uploads/uploads/default/{id}/notes.txt").parse().expect("uri");
        let job = Job::new(id.clone(), "default".into(), Priority::Normal, upload.clone(), "t".into(), Utc::now());
        jobs.create(&job, &[JobEventEnvelope::for_job("test", &job, job.created_event())]).await.expect("create");
        let input = InputObject { uri: upload.clone(), size: content.len() as u64, etag: "e".into() };
        for ev in [
            JobEvent::Uploaded { input },
            JobEvent::Classified(Classification {
                modality: Modality::Text,
                mime: "text/plain".into(),
                confidence: 1.0,
                estimated_seconds: 0.1,
            }),
        ] {
            lifecycle::record(jobs.as_ref(), &id, "test", ev).await.expect("record");
        }
        if cancel {
            lifecycle::record(jobs.as_ref(), &id, "test", JobEvent::CancelRequested).await.expect("cancel");
        }
        let mut record = sample.records[0].clone();
        record.message_id = Some(format!("message-{i}"));
        record.body = record.body.map(|b| b.replace(JOB, id.as_str()));
        match input_at {
            Input::Stored => blobs.insert(&upload, content.to_vec()),
            Input::CarriedOnly => {
                let mut command: Envelope<Command> = envelope::decode(record.body.as_deref().unwrap_or_default()).expect("sample");
                let Command::Process { input, content: carried, .. } = &mut command.body else { panic!("the sample is a job.process") };
                input.size = content.len() as u64;
                *carried = Some(content.to_vec().into());
                record.body = Some(command.to_json());
            }
        }
        event.records.push(record);
        ids.push(id);
    }
    let estimates = Arc::new(MemoryEstimates::default());
    let deps = Deps {
        jobs: jobs.clone(),
        blobs,
        queue: Arc::new(MemoryQueue::default()),
        schedules: Arc::new(prism_shared::testing::memory::MemoryScheduleStore::new(jobs.clone())),
        lanes: std::sync::Arc::new(prism_shared::testing::memory::MemoryLaneControl::default()),
        dead_letters: std::sync::Arc::new(prism_shared::testing::memory::MemoryDeadLetters::default()),
        quotas: std::sync::Arc::new(prism_shared::testing::memory::MemoryQuotas::default()),
        breakers: std::sync::Arc::new(prism_shared::testing::memory::MemoryBreakers::default()),
        breaker_policy: prism_shared::domain::breakers::BreakerPolicy::default(),
        estimates: estimates.clone(),
        config: Config { max_bytes },
    };
    let response = handle(&deps, event).await;
    assert!(response.batch_item_failures.is_empty());
    let mut done = Vec::new();
    for id in &ids {
        done.push(jobs.get(id).await.expect("store").expect("job"));
    }
    (done, estimates)
}

#[tokio::test]
async fn counts_words_lines_and_bytes() {
    let job = run("héllo wörld\nsecond line here\n".as_bytes(), 1 << 20, false).await;
    assert_eq!(job.status, JobStatus::Completed);
    let Some(JobResult::Text(r)) = job.result else { panic!("no text result") };
    assert_eq!((r.words, r.lines, r.chars, r.bytes), (5, 2, 29, 31));
    assert_eq!(r.encoding, TextEncoding::Utf8);
    assert_eq!(job.outputs.len(), 1);
    assert_eq!(job.outputs[0].uri.key, format!("outputs/{JOB}/text.txt"));
}

#[tokio::test]
async fn a_command_carrying_its_input_is_processed_without_reading_the_object() {
    // The bucket holds nothing: a read would fail the job as `input_missing`.
    let (jobs, _) = run_batch_with(&["one two three\n".as_bytes()], 1 << 20, false, Input::CarriedOnly).await;
    assert_eq!(jobs[0].status, JobStatus::Completed, "{:?}", jobs[0].error);
    let Some(JobResult::Text(r)) = &jobs[0].result else { panic!("no text result") };
    assert_eq!((r.words, r.lines, r.bytes), (3, 1, 14));
}

#[tokio::test]
async fn too_large_texts_fail_with_a_reason_and_cancelled_jobs_stop() {
    let big = run(&[b'a'; 100], 10, false).await;
    assert_eq!(big.status, JobStatus::Failed);
    assert_eq!(big.error.map(|e| e.code), Some("too_large".into()));
    let cancelled = run(b"text", 1 << 20, true).await;
    assert_eq!(cancelled.status, JobStatus::Cancelled);
}

#[tokio::test]
async fn a_completed_job_adds_its_time_against_its_sizes_plain_guess_to_the_calibration() {
    use prism_shared::ports::EstimateStore;
    let content = b"words to count\n";
    let (job, estimates) = run_calibrating(content, 1 << 20, false).await;
    assert_eq!(job.status, JobStatus::Completed);
    let totals = estimates.calibration(Utc::now().date_naive()).await.expect("calibration").totals(Modality::Text);
    assert_eq!(totals.jobs, 1);
    // The plain guess for its size, not the 0.1 s it was classified with (which may have been calibrated already).
    assert_eq!(totals.estimated_s, prism_shared::content::sniff::estimate_seconds(Modality::Text, content.len() as u64));
    let took = job.estimated_s.expect("estimate") + job.estimate_error_s.expect("error");
    assert!((totals.actual_s - took).abs() < 1e-9, "{} against {took}", totals.actual_s);

    let (cancelled, estimates) = run_calibrating(content, 1 << 20, true).await;
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    assert_eq!(
        estimates.calibration(Utc::now().date_naive()).await.expect("calibration").totals(Modality::Text).jobs,
        0,
        "only completed jobs count"
    );
}

#[tokio::test]
async fn a_batchs_completed_jobs_reach_the_calibration_in_one_write() {
    use prism_shared::ports::EstimateStore;
    let texts: [&[u8]; 3] = [b"one\n", b"two words\n", b"three more words\n"];
    let (jobs, estimates) = run_batch(&texts, 1 << 20, false).await;
    assert!(jobs.iter().all(|job| job.status == JobStatus::Completed), "{jobs:?}");
    let totals = estimates.calibration(Utc::now().date_naive()).await.expect("calibration").totals(Modality::Text);
    assert_eq!(totals.jobs, 3, "every job's time is there");
    let plain: f64 = texts.iter().map(|t| prism_shared::content::sniff::estimate_seconds(Modality::Text, t.len() as u64)).sum();
    assert!((totals.estimated_s - plain).abs() < 1e-9, "{} against {plain}", totals.estimated_s);
    assert_eq!(estimates.adds(), 1, "added in one write, not one per job");
}
