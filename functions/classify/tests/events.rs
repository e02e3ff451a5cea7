//! The sample classify command, round-tripped and run through the handler with fakes.

use std::sync::Arc;

use aws_lambda_events::sqs::SqsEvent;
use chrono::Utc;
use classify::{Config, Deps, handle};
use prism_shared::domain::commands::{Command, StoredJob};
use prism_shared::domain::job::Lane;
use prism_shared::domain::limits::SizeLimits;
use prism_shared::ports::JobStore;
use prism_shared::testing::memory::{MemoryBlobStore, MemoryEstimates, MemoryJobStore, MemoryQueue};
use prism_shared::testing::sample_event;
use prism_shared::{Envelope, Job, JobEventEnvelope, JobId, JobStatus, Modality, Priority, S3Uri, domain::envelope};

const JOB: &str = "0196f0a0-0000-7000-8000-00000000c1a5";

async fn run(content: &[u8]) -> (Job, Vec<prism_shared::testing::memory::SentMessage>) {
    run_declared(content, None, Priority::Normal).await
}

async fn run_declared(
    content: &[u8],
    declared_size: Option<u64>,
    priority: Priority,
) -> (Job, Vec<prism_shared::testing::memory::SentMessage>) {
    run_with(content, declared_size, priority, Arc::default()).await
}

async fn run_with(
    content: &[u8],
    declared_size: Option<u64>,
    priority: Priority,
    estimates: Arc<MemoryEstimates>,
) -> (Job, Vec<prism_shared::testing::memory::SentMessage>) {
    let setup = Setup::new(content, declared_size, priority, estimates).await;
    setup.handle(sample_event("sqs-classify-command.json")).await;
    (setup.job().await, setup.queue.sent())
}

/// A stored job with its upload, and classify's dependencies on fakes.
struct Setup {
    deps: Deps,
    jobs: Arc<MemoryJobStore>,
    queue: Arc<MemoryQueue>,
    id: JobId,
}

impl Setup {
    async fn new(content: &[u8], declared_size: Option<u64>, priority: Priority, estimates: Arc<MemoryEstimates>) -> Self {
        let (jobs, blobs, queue) =
            (Arc::new(MemoryJobStore::default()), Arc::new(MemoryBlobStore::default()), Arc::new(MemoryQueue::default()));
        let id: JobId = JOB.parse().expect("id");
        let upload: S3Uri = format!("s3://prism-dev-000000000000-uploads/uploads/default/{JOB}/notes.txt").parse().expect("uri");
        let mut job = Job::new(id.clone(), "default".into(), priority, upload.clone(), "t".into(), Utc::now());
        job.declared_size = declared_size;
        jobs.create(&job, &[JobEventEnvelope::for_job("test", &job, job.created_event())]).await.expect("create");
        blobs.insert(&upload, content.to_vec());
        let config = Config {
            routes: Lane::ALL.iter().map(|l| ((Modality::Text, *l), format!("http://sqs/text-{l}"))).collect(),
            workflow_queue_url: Some("http://sqs/workflow".into()),
            limits: SizeLimits { text: 1000, ..SizeLimits::default() },
        };
        let deps = Deps { queue: queue.clone(), estimates, ..prism_shared::testing::memory_deps(jobs.clone(), blobs, config) };
        Self { deps, jobs, queue, id }
    }

    async fn job(&self) -> Job {
        self.jobs.get(&self.id).await.expect("store").expect("job")
    }

    async fn handle(&self, event: SqsEvent) {
        let response = handle(&self.deps, event).await;
        assert!(response.batch_item_failures.is_empty());
    }

    /// The sample command, carrying `stored` as the sender's copy of the job.
    async fn handle_carrying(&self, stored: &Job) {
        let mut event: SqsEvent = sample_event("sqs-classify-command.json");
        let mut command: Envelope<Command> = envelope::decode(event.records[0].body.as_deref().unwrap_or_default()).expect("sample");
        let Command::Classify { stored: carried, .. } = &mut command.body else { panic!("the sample is a job.classify") };
        *carried = StoredJob::of(stored);
        event.records[0].body = Some(command.to_json());
        self.handle(event).await;
    }
}

#[tokio::test]
async fn text_is_classified_and_routed_to_the_text_queue() {
    let (job, sent) = run(b"hello world, this is text\n").await;
    assert_eq!(job.modality, Some(Modality::Text));
    assert_eq!(job.mime.as_deref(), Some("text/plain"));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].queue_url, "http://sqs/text-normal", "normal priority takes the normal lane");
    let command: Envelope<Command> = envelope::decode(&sent[0].body).expect("envelope");
    let Command::Process { modality: Modality::Text, stored: Some(stored), .. } = command.body else {
        panic!("not a text job.process carrying its job: {:?}", command.body)
    };
    assert_eq!(stored.into_job(), job, "the job as classify stored it, so the processor need not read it");
}

#[tokio::test]
async fn a_small_input_travels_whole_with_its_command_and_a_larger_one_is_left_to_be_read() {
    let text = b"hello world, this is text\n";
    let (_, sent) = run(text).await;
    let command: Envelope<Command> = envelope::decode(&sent[0].body).expect("envelope");
    let Command::Process { content, .. } = command.body else { panic!("not a job.process: {:?}", command.body) };
    assert_eq!(content.as_deref(), Some(&text[..]), "read whole to sniff it, so sent whole");

    let larger = vec![b'a'; Command::MAX_CARRIED_CONTENT + 1];
    let mut setup = Setup::new(&larger, None, Priority::Normal, Arc::default()).await;
    setup.deps.config.limits.text = 1 << 20;
    setup.handle(sample_event("sqs-classify-command.json")).await;
    let sent = setup.queue.sent();
    let command: Envelope<Command> = envelope::decode(&sent[0].body).expect("envelope");
    let Command::Process { content, .. } = command.body else { panic!("not a job.process: {:?}", command.body) };
    assert_eq!(content, None, "only the sniffed head was read: the processor reads the object");
}

#[tokio::test]
async fn content_without_a_processor_or_with_no_bytes_fails_the_job() {
    let (png, sent) = run(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR").await;
    assert_eq!(png.status, JobStatus::Failed);
    assert_eq!(png.modality, Some(Modality::Image), "a failed job still says what it was");
    assert_eq!(png.error.map(|e| e.code), Some("no_processor".into()));
    assert!(sent.is_empty());

    let (empty, _) = run(b"").await;
    assert_eq!(empty.error.map(|e| e.message), Some("empty upload".into()));

    let (noise, _) = run(&[0, 1, 2, 3, 0, 0, 0xFE, 7]).await;
    assert_eq!(noise.error.map(|e| e.message), Some("unsupported content".into()));

    let (big, sent) = run(&[b'a'; 2000]).await;
    assert_eq!(big.error.map(|e| e.code), Some("too_large".into()));
    assert!(sent.is_empty());
}

#[tokio::test]
async fn recognised_images_no_processor_decodes_fail_as_unsupported_formats_and_are_not_routed() {
    for (header, format) in [(&b"\0\0\0\x1cftypavif\0\0\0\0avifmif1miaf"[..], "AVIF"), (&b"\0\0\0\x18ftypheic\0\0\0\0mif1heic"[..], "HEIC")]
    {
        let (job, sent) = run(header).await;
        assert_eq!(job.status, JobStatus::Failed);
        assert_eq!(job.modality, Some(Modality::Image), "it still says what it was");
        let error = job.error.expect("error");
        assert_eq!(error.code, "unsupported_format");
        assert!(error.message.starts_with(&format!("{format} images are recognised")), "{}", error.message);
        assert!(sent.is_empty());
    }
}

#[tokio::test]
async fn an_upload_that_differs_from_its_declared_size_fails() {
    let (job, sent) = run_declared(b"twelve bytes", Some(100), Priority::Normal).await;
    assert_eq!(job.error.map(|e| e.code), Some("size_mismatch".into()));
    assert!(sent.is_empty());
    let (job, _) = run_declared(b"twelve bytes", Some(12), Priority::Normal).await;
    assert_eq!(job.error, None);
}

#[tokio::test]
async fn priorities_pick_their_lane() {
    for (priority, lane) in [(Priority::Urgent, "fast"), (Priority::High, "fast"), (Priority::Low, "bulk"), (Priority::Batch, "bulk")] {
        let (_, sent) = run_declared(b"some text", None, priority).await;
        assert_eq!(sent[0].queue_url, format!("http://sqs/text-{lane}"), "{priority}");
    }
}

#[tokio::test]
async fn a_job_is_estimated_from_what_its_modalitys_finished_jobs_took_against_their_guesses() {
    use prism_shared::content::sniff::estimate_seconds;
    use prism_shared::domain::estimates::{EstimateTotals, MIN_JOBS};
    use prism_shared::ports::EstimateStore;
    let content = b"hello world, this is text\n";
    let guess = estimate_seconds(Modality::Text, content.len() as u64);
    let (uncalibrated, _) = run(content).await;
    assert_eq!(uncalibrated.estimated_s, Some(guess), "no finished jobs yet: the plain guess");

    // Text jobs have been taking four times their guesses this week; images as guessed.
    let estimates = Arc::new(MemoryEstimates::default());
    let today = Utc::now().date_naive();
    for _ in 0..MIN_JOBS {
        estimates.add(Modality::Text, today, EstimateTotals::one(0.5, 2.0)).await.expect("add");
        estimates.add(Modality::Image, today, EstimateTotals::one(1.0, 1.0)).await.expect("add");
    }
    let (calibrated, _) = run_with(content, None, Priority::Normal, estimates).await;
    let estimated = calibrated.estimated_s.expect("estimated");
    assert!((estimated - 4.0 * guess).abs() < 1e-9, "{estimated} against 4 x {guess}");
}

#[tokio::test]
async fn a_command_carrying_its_job_is_classified_and_routed_without_reading_the_job() {
    let setup = Setup::new(b"hello world, this is text\n", None, Priority::Normal, Arc::default()).await;
    let stored = setup.job().await;
    let reads = setup.jobs.reads();
    setup.handle_carrying(&stored).await;
    assert_eq!(setup.jobs.reads(), reads, "classified on the sender's copy");
    assert_eq!(setup.job().await.modality, Some(Modality::Text));
    assert_eq!(setup.queue.sent().len(), 1, "routed");
}

#[tokio::test]
async fn a_copy_of_a_job_cancelled_since_is_read_again_and_the_job_is_neither_classified_nor_routed() {
    let setup = Setup::new(b"hello world, this is text\n", None, Priority::Normal, Arc::default()).await;
    let stale = setup.job().await;
    prism_shared::app::lifecycle::request_cancel(setup.jobs.as_ref(), &stale, "test").await.expect("cancelled");
    let reads = setup.jobs.reads();
    setup.handle_carrying(&stale).await;
    assert!(setup.jobs.reads() > reads, "the copy conflicted and the job was read");
    let job = setup.job().await;
    assert_eq!((job.status, job.modality), (JobStatus::Cancelled, None));
    assert!(setup.queue.sent().is_empty(), "nothing routed");
}

#[tokio::test]
async fn a_batch_routes_its_jobs_in_one_request_per_destination_queue() {
    // Five normal jobs and two urgent ones in one batch: two queues, two requests.
    let (jobs, blobs, queue) =
        (Arc::new(MemoryJobStore::default()), Arc::new(MemoryBlobStore::default()), Arc::new(MemoryQueue::default()));
    let priorities =
        [Priority::Normal, Priority::Urgent, Priority::Normal, Priority::Normal, Priority::Urgent, Priority::Normal, Priority::Normal];
    let mut event = SqsEvent::default();
    for (i, priority) in priorities.iter().enumerate() {
        let id = JobId::new_random();
        let upload: S3Uri = format!("s3://prism-dev-000000000000-uploads/uploads/default/{id}/notes.txt").parse().expect("uri");
        let job = Job::new(id.clone(), "default".into(), *priority, upload.clone(), "t".into(), Utc::now());
        jobs.create(&job, &[JobEventEnvelope::for_job("test", &job, job.created_event())]).await.expect("create");
        blobs.insert(&upload, format!("note number {i}\n").into_bytes());
        let input = prism_shared::domain::job::InputObject { uri: upload, size: 15, etag: "e".into() };
        let command = Envelope::new("test", "t", Some(id), None, Command::Classify { input, stored: None });
        let mut msg = aws_lambda_events::sqs::SqsMessage::default();
        msg.message_id = Some(format!("m{i}"));
        msg.body = Some(command.to_json());
        event.records.push(msg);
    }
    let config = Config {
        routes: Lane::ALL.iter().map(|l| ((Modality::Text, *l), format!("http://sqs/text-{l}"))).collect(),
        workflow_queue_url: None,
        limits: SizeLimits::default(),
    };
    let deps = Deps { queue: queue.clone(), ..prism_shared::testing::memory_deps(jobs, blobs, config) };
    let response = handle(&deps, event).await;
    assert!(response.batch_item_failures.is_empty());
    let mut sizes = queue.batch_sizes();
    sizes.sort();
    assert_eq!(sizes, [2, 5], "one request per lane's queue");
    let to = |url: &str| queue.sent().iter().filter(|sent| sent.queue_url == url).count();
    assert_eq!((to("http://sqs/text-normal"), to("http://sqs/text-fast")), (5, 2));
}
