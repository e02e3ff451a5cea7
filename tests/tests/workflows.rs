//! Workflow runs end to end: steps as jobs of their own, chained through the
//! job-events topic, joined once, retried, failed and cancelled.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{JOB_TIMEOUT, TestCloud, ffmpeg};
use prism_cloud::EmulatorChoice;
use prism_cloud::client::SubmitOptions;
use prism_cloud::proxy::{FaultAction, FaultPlan, FaultRule};
use prism_shared::domain::results::JobResult;
use prism_shared::domain::workflow::{StepState, StepStatus, step_job_id};
use prism_shared::{Job, JobId, JobStatus};
use serde_json::Value;

/// Six seconds of test pattern whose soundtrack is a tone with a silent
/// stretch from 2 s to 4 s.
fn video_with_a_pause(dir: &Path, name: &str) -> Vec<u8> {
    let picture = ["-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25:duration=6"];
    let sound = ["-f", "lavfi", "-i", "aevalsrc='if(between(t,2,4),0,0.5*sin(2*PI*440*t))':d=6:s=44100"];
    let codecs = ["-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-c:a", "aac", "-shortest"];
    std::fs::read(ffmpeg(dir, name, &[&picture[..], &sound[..], &codecs[..]].concat())).expect("video")
}

/// ls(1) typeset by groff: a few pages of English.
fn man_page_pdf(dir: &Path) -> Vec<u8> {
    let pdf = dir.join("ls.pdf");
    let script = format!("zcat -f /usr/share/man/man1/ls.1* | groff -Tpdf -man -P-pa4 > '{}'", pdf.display());
    assert!(std::process::Command::new("sh").args(["-c", &script]).status().expect("groff runs").success());
    std::fs::read(pdf).expect("pdf")
}

fn video_analysis() -> SubmitOptions {
    SubmitOptions { workflow: Some("video_analysis".into()), ..SubmitOptions::default() }
}

fn steps(job: &Job) -> Vec<(String, StepStatus, u32)> {
    job.run.as_ref().expect("a run").steps.iter().map(|s| (s.name.clone(), s.status, s.attempt)).collect()
}

fn step<'a>(job: &'a Job, name: &str) -> &'a StepState {
    job.run.as_ref().and_then(|r| r.step(name)).unwrap_or_else(|| panic!("no step {name} in {:?}", job.run))
}

fn event_types(events: &[Value]) -> Vec<String> {
    events.iter().filter_map(|e| e["event_type"].as_str().map(str::to_owned)).collect()
}

fn count(events: &[Value], event_type: &str) -> usize {
    events.iter().filter(|e| e["event_type"] == event_type).count()
}

#[tokio::test]
async fn video_analysis_runs_every_step_once_and_its_timeline_matches_the_audio_step() {
    // Every SQS batch reaches its function twice, the workflow queue's included:
    // a repeated step end must start nothing twice.
    let tc = TestCloud::with_faults(EmulatorChoice::Localstack, FaultPlan { duplicate_deliveries: true, ..FaultPlan::default() }).await;
    let dir = tempfile::tempdir().expect("dir");
    let root = tc.api.submit_with("clip.mp4", video_with_a_pause(dir.path(), "clip.mp4"), &video_analysis()).await.expect("submit");
    // Beside it, a PDF through the document workflow its modality defaults to.
    let default = SubmitOptions { workflow: Some("default".into()), ..SubmitOptions::default() };
    let document = tc.api.submit_with("ls.pdf", man_page_pdf(dir.path()), &default).await.expect("submit");
    // And a photo through image_analysis: two steps from the upload side by side, then the join.
    let image_analysis = SubmitOptions { workflow: Some("image_analysis".into()), ..SubmitOptions::default() };
    let photo = tc.api.submit_with("photo.jpg", common::images::jpeg(1200, 800), &image_analysis).await.expect("submit");
    let done = tc.api.wait(&root.id, JOB_TIMEOUT).await.expect("run ended");
    assert_eq!(done.status, JobStatus::Completed, "{:?} {:?}", done.error, done.run);
    assert_eq!(
        steps(&done),
        [
            ("video".to_owned(), StepStatus::Completed, 1),
            ("audio".to_owned(), StepStatus::Completed, 1),
            ("timeline".to_owned(), StepStatus::Completed, 1)
        ]
    );
    let mut outputs: Vec<&str> = done.outputs.iter().map(|o| o.name.as_str()).collect();
    outputs.sort_unstable();
    assert_eq!(outputs, ["audio.waveform", "video.audio", "video.contact_sheet", "video.poster"]);

    // Each step is a job of its own, readable through the API.
    let video = tc.api.job(&step_job_id(&root.id, "video", 1)).await.expect("video step");
    let audio = tc.api.job(&step_job_id(&root.id, "audio", 1)).await.expect("audio step");
    let (Some(JobResult::Video(video_result)), Some(JobResult::Audio(audio_result))) = (&video.result, &audio.result) else {
        panic!("step results: {:?} / {:?}", video.result, audio.result)
    };
    assert_eq!(audio.input.as_ref().map(|i| &i.uri), video.outputs.iter().find(|o| o.name == "audio").map(|o| &o.uri));
    let Some(JobResult::Workflow(result)) = &done.result else { panic!("not a workflow result: {:?}", done.result) };
    let timeline = result.timeline.as_ref().expect("timeline");
    assert_eq!(timeline.silence, audio_result.silence.spans, "the timeline's silences are the audio step's");
    assert_eq!(timeline.integrated_lufs, audio_result.levels.integrated_lufs);
    let keyframes: Vec<f64> = timeline.keyframes.iter().map(|k| k.at_s).collect();
    assert_eq!(keyframes, video_result.contact_sheet.timestamps_s, "beside the video step's keyframes");
    let pause = timeline.silence.iter().find(|s| s.start_s < 2.5 && s.end_s > 3.5).expect("the 2–4 s pause is found");
    for k in &timeline.keyframes {
        assert_eq!(k.silent, pause.start_s <= k.at_s && k.at_s < pause.end_s, "keyframe at {} s", k.at_s);
    }

    // The join ran once: its job started and completed once, the run recorded one end.
    let join = tc.api.events(&step_job_id(&root.id, "timeline", 1), 0).await.expect("join events");
    assert_eq!(event_types(&join), ["job.created", "job.started", "job.completed"]);
    let log = tc.api.events(&root.id, 0).await.expect("run events");
    assert_eq!((count(&log, "job.run_started"), count(&log, "job.completed")), (1, 1), "{:?}", event_types(&log));
    assert!(log.iter().all(|e| e["run"]["run_id"] == root.id.as_str()), "root events name their run");

    let summary = tc.api.wait(&document.id, JOB_TIMEOUT).await.expect("document run ended");
    assert_eq!(summary.status, JobStatus::Completed, "{:?} {:?}", summary.error, summary.run);
    assert_eq!(summary.run.as_ref().map(|r| r.workflow.as_str()), Some("document_analysis"), "default picked the modality's workflow");
    let text = tc.api.job(&step_job_id(&document.id, "text", 1)).await.expect("text step");
    let extracted = tc.api.job(&step_job_id(&document.id, "document", 1)).await.expect("document step");
    assert_eq!(text.input.as_ref().map(|i| &i.uri), extracted.outputs.iter().find(|o| o.name == "text").map(|o| &o.uri));
    let (Some(JobResult::Workflow(combined)), Some(JobResult::Text(text_result))) = (&summary.result, &text.result) else {
        panic!("results: {:?} / {:?}", summary.result, text.result)
    };
    let facts = combined.document.as_ref().expect("document summary");
    assert!(facts.pages >= 1 && facts.words > 100, "{facts:?}");
    assert_eq!(facts.language.as_deref(), Some("en"));
    assert_eq!(facts.keywords, text_result.keywords, "the text step's keywords");
    assert_eq!(facts.reading_time_s, Some(text_result.reading_time_s));

    let pictured = tc.api.wait(&photo.id, JOB_TIMEOUT).await.expect("image run ended");
    assert_eq!(pictured.status, JobStatus::Completed, "{:?} {:?}", pictured.error, pictured.run);
    let mut outputs: Vec<&str> = pictured.outputs.iter().map(|o| o.name.as_str()).collect();
    outputs.sort_unstable();
    assert_eq!(outputs, ["thumbnails.thumbnail_1024", "thumbnails.thumbnail_256"], "only the thumbnails step writes files");
    let (thumbs, palette) = (step(&pictured, "thumbnails"), step(&pictured, "palette"));
    let (Some(thumbs_started), Some(palette_started), Some(thumbs_ended)) = (thumbs.started_at, palette.started_at, thumbs.finished_at)
    else {
        panic!("step times: {thumbs:?} / {palette:?}")
    };
    assert!(palette_started < thumbs_ended && thumbs_started < palette.finished_at.expect("ended"), "started together from the upload");
    let thumbs = tc.api.job(&step_job_id(&photo.id, "thumbnails", 1)).await.expect("thumbnails step");
    let palette = tc.api.job(&step_job_id(&photo.id, "palette", 1)).await.expect("palette step");
    let (Some(JobResult::Image(thumbs)), Some(JobResult::Image(palette)), Some(JobResult::Workflow(combined))) =
        (&thumbs.result, &palette.result, &pictured.result)
    else {
        panic!("results: {:?} / {:?} / {:?}", thumbs.result, palette.result, pictured.result)
    };
    assert!(thumbs.perceptual_hash.is_none() && palette.thumbnails.is_empty(), "each step did its part only");
    let summary = combined.image.as_ref().expect("image summary");
    assert_eq!((summary.width, summary.height, summary.thumbnails), (1200, 800, 2));
    assert_eq!(summary.perceptual_hash, palette.perceptual_hash, "the palette step's hash");
    assert_eq!(summary.dominant_color.as_ref(), palette.palette.first().map(|c| &c.hex), "and its dominant colour");

    // GET /v1/runs/{id} is the root's snapshot; a plain job is not a run.
    let path = format!("/v1/runs/{}", root.id);
    let run: Value = tc.api.request(reqwest::Method::GET, &path).send().await.expect("get").json().await.expect("json");
    assert_eq!(run["run"]["workflow"], "video_analysis");
    common::openapi::OpenApi::load().check("GET", "/v1/runs/{id}", 200, "application/json", &run);
    let plain = tc.api.submit("notes.txt", b"plain text".to_vec(), None).await.expect("submit");
    let status = tc.api.request(reqwest::Method::GET, &format!("/v1/runs/{}", plain.id)).send().await.expect("get").status();
    assert_eq!(status, 404);
    let runs: Value = tc.api.request(reqwest::Method::GET, "/v1/runs").send().await.expect("list").json().await.expect("json");
    common::openapi::OpenApi::load().check("GET", "/v1/runs", 200, "application/json", &runs);
    let mut listed: Vec<&str> = runs["runs"].as_array().expect("runs").iter().filter_map(|r| r["id"].as_str()).collect();
    listed.sort_unstable();
    let mut expected = vec![root.id.as_str(), document.id.as_str(), photo.id.as_str()];
    expected.sort_unstable();
    assert_eq!(listed, expected, "the three runs, not the plain job nor the steps");
    tc.finish().await;
}

/// A run's progress while it is still going.
async fn wait_until(tc: &TestCloud, id: &JobId, what: &str, ready: impl Fn(&Job) -> bool) -> Job {
    let started = Instant::now();
    loop {
        let job = tc.api.job(id).await.expect("job");
        if ready(&job) {
            return job;
        }
        assert!(started.elapsed() < JOB_TIMEOUT, "{what}: still {:?} {:?}", job.status, job.run);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn steps_retry_with_backoff_fail_the_run_by_name_and_stop_when_cancelled() {
    // One receive per message: a failing attempt goes to its DLQ, whose
    // consumer ends the step's job `retries_exhausted`, at once.
    let fail = |file: &str, times: u64| FaultRule {
        function: Some("process-video".into()),
        operation: "s3:GetObject".into(),
        body_contains: None,
        uri_contains: Some(file.into()),
        after: 0,
        times,
        action: FaultAction::Fail { status: Some(403), code: Some("AccessDenied".into()) },
    };
    let slow = FaultRule { action: FaultAction::Delay { ms: 4000 }, ..fail("slow.mp4", 1) };
    let faults = FaultPlan { faults: vec![fail("flaky.mp4", 2), fail("broken.mp4", 1000), slow], ..FaultPlan::default() };
    let tc = TestCloud::with(EmulatorChoice::Localstack, faults, vec![("MaxReceiveCount".into(), "1".into())]).await;
    let dir = tempfile::tempdir().expect("dir");
    let bytes = video_with_a_pause(dir.path(), "clip.mp4");
    let flaky = tc.api.submit_with("flaky.mp4", bytes.clone(), &video_analysis()).await.expect("submit");
    let broken = tc.api.submit_with("broken.mp4", bytes.clone(), &video_analysis()).await.expect("submit");
    let slow = tc.api.submit_with("slow.mp4", bytes, &video_analysis()).await.expect("submit");

    // Cancelled while its first step is held up: nothing after it starts.
    wait_until(&tc, &slow.id, "slow run started", |j| j.run.is_some()).await;
    let cancel = tc.api.request(reqwest::Method::POST, &format!("/v1/runs/{}/cancel", slow.id)).send().await.expect("cancel");
    assert_eq!(cancel.status(), 202);

    // Two failed attempts, then the third completes; the waits grow.
    let done = tc.api.wait(&flaky.id, JOB_TIMEOUT).await.expect("flaky run ended");
    assert_eq!(done.status, JobStatus::Completed, "{:?} {:?}", done.error, done.run);
    assert_eq!(step(&done, "video").attempt, 3);
    let mut attempts = Vec::new();
    for attempt in 1..=3 {
        attempts.push(tc.api.job(&step_job_id(&flaky.id, "video", attempt)).await.expect("attempt"));
    }
    for failed in &attempts[..2] {
        assert_eq!(failed.error.as_ref().map(|e| e.code.as_str()), Some("retries_exhausted"), "{:?}", failed.error);
    }
    // From an attempt's failure to the next one's start: 2 s, then 4 s, less up to a quarter of jitter.
    let mut started = Vec::new();
    for job in &attempts {
        let events = tc.api.events(&job.id, 0).await.expect("events");
        let start = events.iter().find(|e| e["event_type"] == "job.started").expect("started");
        started.push(start["timestamp"].as_str().expect("timestamp").parse::<chrono::DateTime<chrono::Utc>>().expect("time"));
    }
    let gap = |n: usize| started[n + 1] - attempts[n].updated_at;
    assert!(gap(0) >= chrono::Duration::milliseconds(1500), "first backoff {}", gap(0));
    assert!(gap(1) >= chrono::Duration::milliseconds(3000), "second backoff {}", gap(1));

    // Every attempt fails: the run fails naming the step, its attempt and the reason.
    let failed = tc.api.wait(&broken.id, JOB_TIMEOUT).await.expect("broken run ended");
    assert_eq!(failed.status, JobStatus::Failed);
    let error = failed.error.clone().expect("reason");
    assert_eq!(error.code, "step_failed");
    assert!(
        error.message.contains("`video`") && error.message.contains("attempt 3") && error.message.contains("retries_exhausted"),
        "{}",
        error.message
    );
    assert!(tc.log("dead-letter").contains(&step_job_id(&broken.id, "video", 3).to_string()), "its last message went through the DLQ");
    assert_eq!(step(&failed, "audio").status, StepStatus::Cancelled, "nothing after the failed step started");

    let cancelled = tc.api.wait(&slow.id, JOB_TIMEOUT).await.expect("slow run ended");
    assert_eq!(cancelled.status, JobStatus::Cancelled, "{:?}", cancelled.run);
    assert_eq!(step(&cancelled, "audio").attempt, 0, "the audio step never started");
    let video = tc.api.wait(&step_job_id(&slow.id, "video", 1), JOB_TIMEOUT).await.expect("video step ended");
    assert_eq!(video.status, JobStatus::Cancelled, "the running step was stopped");
    tc.finish().await;
}

/// The caller's jobs started by schedule `name`.
async fn jobs_of_schedule(tc: &TestCloud, name: &str) -> Vec<Value> {
    let page: Value = tc.api.request(reqwest::Method::GET, "/v1/jobs?limit=100").send().await.expect("list").json().await.expect("json");
    page["jobs"].as_array().expect("jobs").iter().filter(|j| j["metadata"]["schedule"] == name).cloned().collect()
}

/// Waits until schedule `name` has started at least `n` jobs; returns them.
async fn wait_for_jobs(tc: &TestCloud, name: &str, n: usize) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let jobs = jobs_of_schedule(tc, name).await;
        if jobs.len() >= n {
            return jobs;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "schedule {name} started {} jobs of {n}", jobs.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_schedule_due_in_two_seconds_fires_one_job_a_deleted_one_fires_no_more_and_a_cron_one_is_due_at_its_zones_time() {
    let tc =
        TestCloud::with(EmulatorChoice::Localstack, FaultPlan::default(), vec![("ScheduleTick".into(), "rate(1 second)".into())]).await;
    let key = "uploads/tester/report.txt";
    let s3 = tc.cloud.clients().s3;
    let body = aws_sdk_s3::primitives::ByteStream::from_static(b"Quarterly numbers, read again every night.\n");
    s3.put_object().bucket(&tc.cloud.info.bucket).key(key).body(body).send().await.expect("put");
    let source = format!("s3://{}/{key}", tc.cloud.info.bucket);
    let create = |body: Value| tc.api.request(reqwest::Method::POST, "/v1/schedules").json(&body).send();

    let created = create(serde_json::json!({"name": "soon", "delay_s": 2, "job": {"source": source}})).await.expect("create");
    assert_eq!(created.status(), 201);
    let schedule: Value = created.json().await.expect("json");
    common::openapi::OpenApi::load().check("POST", "/v1/schedules", 201, "application/json", &schedule);
    let again = create(serde_json::json!({"name": "soon", "delay_s": 2, "job": {"source": source}})).await.expect("create");
    assert_eq!(again.status(), 409, "names are unique per owner");
    let foreign =
        create(serde_json::json!({"name": "theirs", "delay_s": 2, "job": {"source": "s3://elsewhere/uploads/x/y"}})).await.expect("create");
    assert_eq!(foreign.status(), 403);
    let recurring =
        create(serde_json::json!({"name": "often", "rate": "rate(2 seconds)", "job": {"source": source}})).await.expect("create");
    assert_eq!(recurring.status(), 201);
    // Weekday mornings in London: the first slot is the next one, in UTC, as the wall clock there reads it.
    let cron =
        serde_json::json!({"name": "weekdays", "cron": "cron(0 9 ? * MON-FRI *)", "timezone": "Europe/London", "job": {"source": source}});
    let weekdays = create(cron).await.expect("create");
    assert_eq!(weekdays.status(), 201);
    let weekdays: Value = weekdays.json().await.expect("json");
    common::openapi::OpenApi::load().check("POST", "/v1/schedules", 201, "application/json", &weekdays);
    let next: chrono::DateTime<chrono::Utc> = weekdays["next_at"].as_str().expect("next_at").parse().expect("time");
    let expected = prism_shared::domain::schedule::CronSchedule::parse("cron(0 9 ? * MON-FRI *)", "Europe/London")
        .expect("valid")
        .next_after(chrono::Utc::now() - chrono::Duration::minutes(1));
    assert_eq!(Some(next), expected);
    for (body, says) in [
        (serde_json::json!({"name": "both-days", "cron": "cron(0 9 * * MON *)", "job": {"source": source}}), "only one"),
        (
            serde_json::json!({"name": "nowhere", "cron": "cron(0 9 ? * MON *)", "timezone": "Mars/Olympus", "job": {"source": source}}),
            "IANA",
        ),
    ] {
        let refused = create(body).await.expect("create");
        assert_eq!(refused.status(), 422);
        let problem: Value = refused.json().await.expect("problem");
        assert!(problem["detail"].as_str().is_some_and(|d| d.contains(says)), "{problem}");
    }

    // Fired once, two seconds on, and the job runs like any other.
    let job = wait_for_jobs(&tc, "soon", 1).await.remove(0);
    let id: JobId = job["id"].as_str().expect("id").parse().expect("uuid");
    let slot: chrono::DateTime<chrono::Utc> = job["metadata"]["schedule_slot"].as_str().expect("slot").parse().expect("time");
    let created: chrono::DateTime<chrono::Utc> = job["created_at"].as_str().expect("created").parse().expect("time");
    let asked: chrono::DateTime<chrono::Utc> = schedule["next_at"].as_str().expect("next_at").parse().expect("time");
    assert_eq!(slot.timestamp_millis(), asked.timestamp_millis(), "fired for the slot it was asked for");
    assert!(created >= slot, "fired early: created {created}, due {slot}");
    let done = tc.api.wait(&id, JOB_TIMEOUT).await.expect("job ended");
    assert_eq!(done.status, JobStatus::Completed, "{:?}", done.error);
    let fired: Value = tc.api.request(reqwest::Method::GET, "/v1/schedules/soon").send().await.expect("get").json().await.expect("json");
    assert_eq!((fired["fired"].as_u64(), fired["last_job"].as_str()), (Some(1), Some(id.as_str())));
    assert!(fired.get("next_at").is_none(), "a one-time schedule is done: {fired}");

    // The recurring one fires at its rate; once its delete has returned, no
    // firing starts a job for it, even one that read it before the delete.
    wait_for_jobs(&tc, "often", 2).await;
    let deleted = tc.api.request(reqwest::Method::DELETE, "/v1/schedules/often").send().await.expect("delete");
    assert_eq!(deleted.status(), 200);
    let so_far = jobs_of_schedule(&tc, "often").await.len();
    // Ticks run one after another: once a schedule created after the delete
    // has fired, every tick that began before the delete has ended.
    let marker = create(serde_json::json!({"name": "after-delete", "delay_s": 1, "job": {"source": source}})).await.expect("create");
    assert_eq!(marker.status(), 201);
    wait_for_jobs(&tc, "after-delete", 1).await;
    assert_eq!(jobs_of_schedule(&tc, "often").await.len(), so_far, "a job started after the delete");
    assert_eq!(jobs_of_schedule(&tc, "soon").await.len(), 1, "one job for its one slot");
    let gone = tc.api.request(reqwest::Method::GET, "/v1/schedules/often").send().await.expect("get");
    assert_eq!(gone.status(), 404);
    tc.finish().await;
}
