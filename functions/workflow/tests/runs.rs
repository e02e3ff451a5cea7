//! Runs driven through the handler with in-memory ports: each step's end is
//! fed back as the job-events topic would deliver it.

use std::sync::Arc;

use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use chrono::Utc;
use prism_shared::app::lifecycle::{self, Recorded};
use prism_shared::domain::commands::Command;
use prism_shared::domain::envelope;
use prism_shared::domain::job::{InputObject, JobFailure, Lane, Output};
use prism_shared::domain::results::{AudioLevels, AudioResult, ContactSheet, JobResult, SilenceReport, TimeSpan, VideoResult};
use prism_shared::domain::workflow::{StepStatus, step_job_id};
use prism_shared::ports::JobStore;
use prism_shared::testing::memory::{MemoryBlobStore, MemoryJobStore, MemoryQueue, SentMessage};
use prism_shared::{Envelope, Job, JobEvent, JobEventEnvelope, JobId, JobStatus, Modality, Priority, S3Uri};
use workflow::{Config, Deps, handle};

/// The workflow function's own queue, where step deadlines wait.
const WORKFLOW_QUEUE: &str = "http://sqs/workflow";

struct World {
    jobs: Arc<MemoryJobStore>,
    queue: Arc<MemoryQueue>,
    deps: Deps,
}

fn world() -> World {
    let (jobs, queue) = (Arc::new(MemoryJobStore::default()), Arc::new(MemoryQueue::default()));
    let routes = Modality::ALL.iter().flat_map(|m| Lane::ALL.iter().map(move |l| ((*m, *l), format!("http://sqs/{m}-{l}")))).collect();
    let deps = Deps {
        jobs: jobs.clone(),
        blobs: Arc::new(MemoryBlobStore::default()),
        queue: queue.clone(),
        schedules: Arc::new(prism_shared::testing::memory::MemoryScheduleStore::new(jobs.clone())),
        lanes: std::sync::Arc::new(prism_shared::testing::memory::MemoryLaneControl::default()),
        dead_letters: std::sync::Arc::new(prism_shared::testing::memory::MemoryDeadLetters::default()),
        quotas: std::sync::Arc::new(prism_shared::testing::memory::MemoryQuotas::default()),
        breakers: std::sync::Arc::new(prism_shared::testing::memory::MemoryBreakers::default()),
        breaker_policy: prism_shared::domain::breakers::BreakerPolicy::default(),
        estimates: std::sync::Arc::new(prism_shared::testing::memory::MemoryEstimates::default()),
        config: Config { routes, workflow_queue_url: WORKFLOW_QUEUE.into() },
    };
    World { jobs, queue, deps }
}

impl World {
    /// A classified video job that asked for `video_analysis`.
    async fn root(&self) -> JobId {
        let id = JobId::new_random();
        let upload: S3Uri = format!("s3://b/uploads/tester/{id}/clip.mp4").parse().expect("uri");
        let mut job = Job::new(id.clone(), "tester".into(), Priority::Normal, upload.clone(), "trace".into(), Utc::now());
        job.workflow = Some("video_analysis".into());
        job.input = Some(InputObject { uri: upload, size: 1000, etag: "e".into() });
        job.modality = Some(Modality::Video);
        job.mime = Some("video/mp4".into());
        self.jobs.create(&job, &[JobEventEnvelope::for_job("test", &job, job.created_event())]).await.expect("create");
        id
    }

    async fn deliver(&self, body: String) {
        self.deliver_on(body, 1).await;
    }

    /// Delivers `body` as its `receive`-th receive (2 and on: back after a failed attempt).
    async fn deliver_on(&self, body: String, receive: u32) {
        let mut message = SqsMessage::default();
        message.attributes.insert("ApproximateReceiveCount".into(), receive.to_string());
        message.message_id = Some(format!("m-{}", JobId::new_random()));
        message.receipt_handle = Some("r".into());
        message.body = Some(body);
        message.event_source_arn = Some("arn:aws:sqs:us-east-1:000000000000:prism-test-workflow".into());
        let mut event = SqsEvent::default();
        event.records = vec![message];
        let response = handle(&self.deps, event).await;
        assert!(response.batch_item_failures.is_empty(), "the message failed: {response:?}");
    }

    async fn start(&self, root: &JobId) {
        let command = Envelope::new("classify", "trace", Some(root.clone()), None, Command::StartRun { workflow: "video_analysis".into() });
        self.deliver(command.to_json()).await;
    }

    /// Runs step job `id` to `end` as its processor would; the envelope of its end.
    async fn end_step(&self, id: &JobId, end: JobEvent) -> String {
        lifecycle::record(self.jobs.as_ref(), id, "processor", JobEvent::Started { phase: "working".into() }).await.expect("start");
        match lifecycle::record(self.jobs.as_ref(), id, "processor", end).await.expect("end") {
            Recorded::Changed(_, envelopes) => envelopes.last().expect("one event").to_json(),
            Recorded::AlreadyApplied(job) => panic!("step {} had already ended: {:?}", job.id, job.status),
        }
    }

    async fn job(&self, id: &JobId) -> Job {
        self.jobs.get(id).await.expect("store").expect("job")
    }

    /// What went to the processors' queues.
    fn sent(&self) -> Vec<SentMessage> {
        self.queue.sent().into_iter().filter(|m| m.queue_url != WORKFLOW_QUEUE).collect()
    }

    /// The step deadlines sent to the workflow queue.
    fn deadlines(&self) -> Vec<SentMessage> {
        self.queue.sent().into_iter().filter(|m| m.queue_url == WORKFLOW_QUEUE).collect()
    }
}

fn process_command(message: &SentMessage) -> (JobId, InputObject) {
    let env: Envelope<Command> = envelope::decode(&message.body).expect("envelope");
    match env.body {
        Command::Process { input, .. } => (env.job_id.expect("job id"), input),
        other => panic!("expected a process command, got {other:?}"),
    }
}

fn output(name: &str, content_type: &str) -> Output {
    Output { name: name.into(), uri: format!("s3://b/outputs/x/{name}").parse().expect("uri"), content_type: content_type.into(), size: 42 }
}

fn video_done() -> JobEvent {
    let video = VideoResult {
        duration_s: 10.0,
        contact_sheet: ContactSheet { timestamps_s: vec![1.0, 5.0], ..Default::default() },
        ..Default::default()
    };
    JobEvent::Completed {
        result: JobResult::Video(Box::new(video)),
        outputs: vec![output("poster", "image/jpeg"), output("audio", "audio/flac")],
    }
}

fn audio_done() -> JobEvent {
    let audio = AudioResult {
        silence: SilenceReport { spans: vec![TimeSpan { start_s: 4.0, end_s: 6.0 }], ..Default::default() },
        levels: AudioLevels { integrated_lufs: Some(-23.0), ..Default::default() },
        ..Default::default()
    };
    JobEvent::Completed { result: JobResult::Audio(Box::new(audio)), outputs: vec![output("waveform", "application/json")] }
}

#[tokio::test]
async fn a_video_run_chains_its_steps_and_joins_once_with_the_timeline() {
    let w = world();
    let root = w.root().await;
    w.start(&root).await;
    w.start(&root).await; // a redelivered start starts nothing twice
    let sent = w.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].queue_url, "http://sqs/video-normal");
    let (video_job, input) = process_command(&sent[0]);
    assert_eq!(video_job, step_job_id(&root, "video", 1));
    assert_eq!(input.uri, w.job(&root).await.input.expect("input").uri);
    assert_eq!(w.job(&root).await.status, JobStatus::Processing);

    let video_end = w.end_step(&video_job, video_done()).await;
    w.deliver(video_end.clone()).await;
    w.deliver(video_end).await; // the topic delivered it twice
    let sent = w.sent();
    assert_eq!(sent.len(), 2, "the duplicate sent nothing: {sent:?}");
    assert_eq!(sent[1].queue_url, "http://sqs/audio-normal");
    let (audio_job, audio_input) = process_command(&sent[1]);
    assert_eq!(audio_input.uri, output("audio", "").uri, "the audio step reads the video step's `audio` output");
    let step = w.job(&audio_job).await;
    assert_eq!(step.mime.as_deref(), Some("audio/flac"));
    assert_eq!(step.step_of.map(|s| (s.step, s.attempt)), Some(("audio".into(), 1)));

    let audio_end = w.end_step(&audio_job, audio_done()).await;
    w.deliver(audio_end.clone()).await;
    w.deliver(audio_end).await;
    let join = step_job_id(&root, "timeline", 1);
    let join_events = w.jobs.events(&join, 0, 100).await.expect("events");
    let types: Vec<&str> = join_events.iter().map(|e| e.body.event_type()).collect();
    assert_eq!(types, ["job.created", "job.started", "job.completed"], "the join ran once");
    assert_eq!(w.sent().len(), 2, "combine needs no queue");

    // The join's completion ends the run with its result.
    let join_end = w.jobs.events(&join, 2, 1).await.expect("events").remove(0).to_json();
    w.deliver(join_end).await;
    let done = w.job(&root).await;
    assert_eq!(done.status, JobStatus::Completed, "{:?}", done.error);
    let Some(JobResult::Workflow(result)) = &done.result else { panic!("not a workflow result: {:?}", done.result) };
    let timeline = result.timeline.as_ref().expect("timeline");
    assert_eq!(timeline.silence, [TimeSpan { start_s: 4.0, end_s: 6.0 }]);
    assert_eq!(timeline.integrated_lufs, Some(-23.0));
    assert_eq!(timeline.keyframes.iter().map(|k| k.silent).collect::<Vec<_>>(), [false, true]);
    let names: Vec<&str> = done.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["video.poster", "video.audio", "audio.waveform"]);
    let run = done.run.expect("run");
    assert!(run.steps.iter().all(|s| s.status == StepStatus::Completed), "{run:?}");
}

#[tokio::test]
async fn a_message_back_after_a_failed_attempt_sends_the_step_again_and_a_duplicate_copy_does_not() {
    let w = world();
    let root = w.root().await;
    let start =
        Envelope::new("classify", "trace", Some(root.clone()), None, Command::StartRun { workflow: "video_analysis".into() }).to_json();
    w.deliver(start.clone()).await;
    w.deliver(start.clone()).await;
    assert_eq!(w.sent().len(), 1, "a duplicate copy finds the step sent");
    // Back after an attempt that may have died between creating the step's job and sending it.
    w.deliver_on(start, 2).await;
    let sent = w.sent();
    assert_eq!(sent.len(), 2, "sent again, to be safe");
    assert_eq!(process_command(&sent[1]).0, step_job_id(&root, "video", 1), "the same job: a processor ignores the repeat once started");
}

#[tokio::test]
async fn an_exhausted_step_is_retried_after_a_delay_and_a_content_failure_fails_the_run_naming_the_step() {
    let w = world();
    let root = w.root().await;
    w.start(&root).await;
    let first = step_job_id(&root, "video", 1);
    let end = w.end_step(&first, JobEvent::Failed(JobFailure::new("retries_exhausted", "kept failing"))).await;
    w.deliver(end).await;
    let sent = w.sent();
    assert_eq!(sent.len(), 2);
    let (second, _) = process_command(&sent[1]);
    assert_eq!(second, step_job_id(&root, "video", 2));
    assert!(sent[1].delay.as_secs_f64() >= 1.0, "the retry waits out a backoff: {:?}", sent[1].delay);
    let step = w.job(&root).await.run.expect("run").step("video").cloned().expect("step");
    assert_eq!((step.status, step.attempt), (StepStatus::Running, 2));

    let end = w.end_step(&second, JobEvent::Failed(JobFailure::new("corrupt_video", "no moov atom"))).await;
    w.deliver(end).await;
    let failed = w.job(&root).await;
    assert_eq!(failed.status, JobStatus::Failed);
    let error = failed.error.expect("error");
    assert_eq!(error.code, "step_failed");
    assert!(
        error.message.contains("`video`") && error.message.contains("attempt 2") && error.message.contains("no moov atom"),
        "{}",
        error.message
    );
    assert_eq!(w.sent().len(), 2, "nothing started after the failure");
}

#[tokio::test]
async fn cancelling_the_root_cancels_the_running_step_and_then_the_run() {
    let w = world();
    let root = w.root().await;
    w.start(&root).await;
    let cancel = lifecycle::request_cancel(w.jobs.as_ref(), &w.job(&root).await, "api").await.expect("cancel");
    assert_eq!(cancel.status, JobStatus::Processing, "a running run only asks");
    let asked = w.jobs.events(&root, cancel.seq - 1, 1).await.expect("events").remove(0);
    w.deliver(asked.to_json()).await;
    let video = w.job(&step_job_id(&root, "video", 1)).await;
    assert_eq!(video.status, JobStatus::Cancelled, "the queued step is cancelled at once");
    let video_end = w.jobs.events(&video.id, video.seq - 1, 1).await.expect("events").remove(0);
    w.deliver(video_end.to_json()).await;
    let done = w.job(&root).await;
    assert_eq!(done.status, JobStatus::Cancelled);
    let run = done.run.expect("run");
    assert!(run.steps.iter().all(|s| s.status == StepStatus::Cancelled), "{run:?}");
    assert_eq!(w.sent().len(), 1, "no step started after the cancel");
}

#[tokio::test]
async fn a_step_still_running_at_its_deadline_is_stopped_and_retried_and_an_early_deadline_waits_again() {
    let w = world();
    let root = w.root().await;
    w.start(&root).await;
    let deadlines = w.deadlines();
    assert_eq!(deadlines.len(), 1, "the first step's deadline went out with it");
    let delay = deadlines[0].delay.as_secs_f64();
    assert!((899.0..=900.0).contains(&delay), "video's timeout_s from its start, SQS's longest delay: {delay}");
    let env: Envelope<Command> = envelope::decode(&deadlines[0].body).expect("envelope");
    let Command::StepDeadline { step, attempt, due_at } = env.body else { panic!("a deadline: {:?}", env.body) };
    assert_eq!((step.as_str(), attempt), ("video", 1));

    // Back before it is due (a longer timeout than one SQS delay): it waits another hop.
    let early = Envelope::new(
        "workflow",
        "trace",
        Some(root.clone()),
        None,
        Command::StepDeadline { step: step.clone(), attempt, due_at: Utc::now() + chrono::Duration::seconds(1800) },
    );
    w.deliver(early.to_json()).await;
    assert_eq!(w.deadlines().len(), 2, "sent on");
    assert_eq!(w.job(&root).await.run.expect("run").step("video").map(|s| s.attempt), Some(1), "nothing changed");

    // Due: the attempt fails with step_timeout, its job is stopped, and the step is retried.
    let due = Envelope::new(
        "workflow",
        "trace",
        Some(root.clone()),
        None,
        Command::StepDeadline { step, attempt, due_at: due_at - chrono::Duration::seconds(900) },
    );
    w.deliver(due.to_json()).await;
    let first = w.job(&step_job_id(&root, "video", 1)).await;
    assert_eq!(first.status, JobStatus::Cancelled, "the overrunning job was asked to stop (queued: at once)");
    let run = w.job(&root).await.run.expect("run");
    let video = run.step("video").expect("step");
    assert_eq!((video.status, video.attempt), (StepStatus::Running, 2));
    let retry = w.sent().into_iter().map(|m| process_command(&m).0).find(|id| *id == step_job_id(&root, "video", 2));
    assert!(retry.is_some(), "the second attempt was sent");
    // The same deadline again (a duplicate) changes nothing more.
    w.deliver(due.to_json()).await;
    assert_eq!(w.job(&root).await.run.expect("run").step("video").map(|s| s.attempt), Some(2));
}
