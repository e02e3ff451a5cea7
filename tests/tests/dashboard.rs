//! The web dashboard in a real browser: Debian's headless Chromium driven over
//! WebDriver (chromedriver) against a private local cloud, as a person uses it.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{JOB_TIMEOUT, TestCloud, ffmpeg, images, project_dir};
use fantoccini::{Client, ClientBuilder, Locator};
use prism_cloud::EmulatorChoice;
use serde_json::{Value, json};

/// chromedriver on a free port, stopped with the test.
struct Driver {
    _process: tokio::process::Child,
    url: String,
}

async fn chromedriver() -> Driver {
    let port = prism_cloud::emulator::free_port().expect("port");
    let process = tokio::process::Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromedriver (apt-get install chromium-driver; the test command installs it)");
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let started = Instant::now();
    while http.get(format!("{url}/status")).send().await.map_or(true, |r| !r.status().is_success()) {
        assert!(started.elapsed() < Duration::from_secs(30), "chromedriver did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Driver { _process: process, url }
}

async fn browser(driver: &Driver, profile: &std::path::Path) -> Client {
    // The flags keep Chromium off the network this machine does not have
    // (background services, updates, sync), which it would otherwise keep trying.
    let args = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1000",
    ];
    let mut args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    args.push(format!("--user-data-dir={}", profile.display()));
    let capabilities = json!({"goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args}});
    let Value::Object(capabilities) = capabilities else { unreachable!("an object") };
    ClientBuilder::rustls().expect("TLS roots").capabilities(capabilities).connect(&driver.url).await.expect("a browser session")
}

/// Evaluates `script` (an expression) until `done` holds for its value.
async fn wait_for(page: &Client, what: &str, script: &str, done: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let value = page.execute(&format!("return {script};"), vec![]).await.expect("script runs");
        if done(&value) {
            return value;
        }
        assert!(started.elapsed() < JOB_TIMEOUT, "timed out waiting for {what}; last value {value}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Clicks the element `css` selects, finding it again if the page redrew it
/// between the find and the click (a live update may land at any moment).
async fn click(page: &Client, css: &str) {
    for _ in 0..5 {
        let element = page.wait().for_element(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}"));
        match element.click().await {
            Ok(()) => return,
            Err(e) if e.is_stale_element_reference() => {}
            Err(e) => panic!("clicking {css}: {e}"),
        }
    }
    panic!("{css} kept being redrawn");
}

fn job_status(id: &str) -> String {
    format!(r#"document.querySelector('#jobs li[data-id="{id}"]')?.dataset.status ?? null"#)
}

/// The app is on screen and the sign-in form is not.
const SIGNED_IN: &str = "getComputedStyle(document.querySelector('#app')).display !== 'none' && getComputedStyle(document.querySelector('#sign-in-form')).display === 'none'";
/// Every listed job's id and status, in order.
const LISTED: &str = "[...document.querySelectorAll('#jobs li')].map(li => [li.dataset.id, li.dataset.status])";
/// The open job's thumbnails: how many the browser has decoded and drawn, of how many.
const DRAWN_THUMBNAILS: &str =
    "(t => [t.filter(i => i.complete && i.naturalWidth > 0).length, t.length])([...document.querySelectorAll('#detail img.thumbnail')])";
/// Every thumbnail there is, drawn.
fn all_drawn(v: &Value) -> bool {
    v[1].as_u64() > Some(0) && v[0] == v[1]
}

#[tokio::test(flavor = "multi_thread")]
async fn a_person_uploads_an_image_watches_it_finish_cancels_a_job_reloads_to_the_same_page_and_an_operator_resumes_a_paused_lane() {
    let tc = TestCloud::start(EmulatorChoice::Localstack).await;
    let dashboard = tc.cloud.info.dashboard_url.clone().expect("the local cloud serves the dashboard");
    let driver = chromedriver().await;
    let profile = tempfile::tempdir().expect("profile dir");
    let page = browser(&driver, profile.path()).await;

    // Sign in: a wrong token is refused with a message, the right one opens the app.
    page.goto(&dashboard).await.expect("open the dashboard");
    page.wait().for_element(Locator::Css("#token")).await.expect("sign-in form").send_keys("not-a-token").await.expect("type");
    click(&page, "#sign-in").await;
    wait_for(&page, "the refusal", "document.querySelector('#sign-in-error').textContent", |v| {
        v.as_str().is_some_and(|t| t.contains("refused"))
    })
    .await;
    let token_field = page.find(Locator::Css("#token")).await.expect("token field");
    token_field.clear().await.expect("clear");
    token_field.send_keys(&tc.token("tester")).await.expect("type");
    click(&page, "#sign-in").await;
    wait_for(&page, "the app", SIGNED_IN, |v| v == &json!(true)).await;
    wait_for(&page, "the live connection", "document.querySelector('#connection').textContent", |v| v == "Live").await;

    // Upload an image through the file picker: upload progress, then the job live to completed.
    let photo = tc.state_dir().join("harbour.jpg");
    std::fs::write(&photo, images::jpeg(1600, 1200)).expect("write the photo");
    page.find(Locator::Css("#files")).await.expect("file input").send_keys(&photo.display().to_string()).await.expect("choose the file");
    let upload = "[document.querySelector('#uploads li')?.dataset.state, document.querySelector('#uploads li .meta')?.textContent]";
    let uploaded = wait_for(&page, "the upload", upload, |v| v[0].is_string()).await;
    assert_eq!(uploaded[0], "uploaded", "the upload's note: {}", uploaded[1]);
    let uploaded = wait_for(&page, "the job id", "document.querySelector('#uploads li')?.dataset.jobId ?? null", Value::is_string).await;
    let image_id = uploaded.as_str().expect("id").to_owned();
    let upload_bar =
        page.execute("const p = document.querySelector('#uploads li progress'); return [p.value, p.max];", vec![]).await.expect("bar");
    assert_eq!(upload_bar[0], upload_bar[1], "the upload bar is full: {upload_bar}");
    wait_for(&page, "the image job to complete", &job_status(&image_id), |v| v == "completed").await;
    let bar = page
        .execute(&format!(r#"return document.querySelector('#jobs li[data-id="{image_id}"] progress').value;"#), vec![])
        .await
        .expect("bar");
    assert_eq!(bar, json!(100), "the job's bar reached the end");

    // Its results as a person wants them: the thumbnails drawn, the size, the palette.
    click(&page, &format!(r#"#jobs li[data-id="{image_id}"]"#)).await;
    let drawn = wait_for(&page, "thumbnails drawn", DRAWN_THUMBNAILS, all_drawn).await;
    let facts = page.find(Locator::Css("#detail")).await.expect("detail").text().await.expect("text");
    assert!(facts.contains("1600×1200"), "{facts}");
    assert!(facts.contains("completed"), "{facts}");

    // A job waiting for its upload (it would wait twenty minutes) is cancelled from the page.
    let (waiting, _) = tc.api.create("long-recording.mp4", None).await.expect("create");
    let waiting_id = waiting.id.to_string();
    click(&page, "#refresh").await;
    wait_for(&page, "the waiting job listed", &job_status(&waiting_id), |v| v == "queued").await;
    let cancel = format!(r#"#jobs li[data-id="{}"] button.cancel"#, waiting.id);
    click(&page, &cancel).await;
    wait_for(&page, "the job cancelled", &job_status(&waiting_id), |v| v == "cancelled").await;
    assert_eq!(tc.api.job(&waiting.id).await.expect("get").status.to_string(), "cancelled", "the API agrees with the page");

    // Reload: the same jobs in the same states, the same job open with its thumbnails.
    let before = page.execute(&format!("return {LISTED};"), vec![]).await.expect("list");
    page.refresh().await.expect("reload");
    wait_for(&page, "the same list after reload", LISTED, |v| v == &before).await;
    wait_for(&page, "signed in again from the stored token", SIGNED_IN, |v| v == &json!(true)).await;
    wait_for(&page, "the same thumbnails drawn after reload", DRAWN_THUMBNAILS, |v| v == &drawn).await;
    let open =
        page.execute("return document.querySelector('#jobs li[aria-current=\"true\"]')?.dataset.id ?? null;", vec![]).await.expect("open");
    assert_eq!(open, json!(image_id), "the job that was open is open again");

    let png = page.screenshot().await.expect("screenshot");
    std::fs::write(tc.state_dir().join("dashboard.png"), &png).expect("keep the screenshot");
    if std::env::var_os("PRISM_UPDATE_DOCS").is_some() {
        std::fs::write(project_dir().join("docs/dashboard.png"), &png).expect("update docs/dashboard.png");
    }
    // An owner sees no lanes; an operator sees them, a paused one marked.
    let lanes_shown = "getComputedStyle(document.querySelector('#lanes-section')).display !== 'none'";
    assert_eq!(page.execute(&format!("return {lanes_shown};"), vec![]).await.expect("lanes"), json!(false), "an owner sees no lanes");
    tc.operator().set_lanes_paused("video-bulk", true).await.expect("pause");
    click(&page, "#sign-out").await;
    wait_for(&page, "signed out", "getComputedStyle(document.querySelector('#sign-in-form')).display !== 'none'", |v| v == &json!(true))
        .await;
    let token_field = page.find(Locator::Css("#token")).await.expect("sign-in form");
    token_field.send_keys(&tc.operator_token()).await.expect("type");
    click(&page, "#sign-in").await;
    wait_for(&page, "the app for an operator", SIGNED_IN, |v| v == &json!(true)).await;
    let shown = format!("[{lanes_shown}, document.querySelector('#lanes-error').textContent]");
    wait_for(&page, "the lanes for an operator", &shown, |v| v[0] == json!(true)).await;
    let paused = "[...document.querySelectorAll('#lanes li.paused')].map((li) => li.dataset.lane)";
    wait_for(&page, "video-bulk marked paused", paused, |v| v == &json!(["video-bulk"])).await;
    // Resumed from the page: the API agrees.
    click(&page, r#"#lanes li[data-lane="video-bulk"] button.toggle"#).await;
    wait_for(&page, "no lane paused", paused, |v| v == &json!([])).await;
    let lanes = tc.operator().lanes().await.expect("lanes");
    assert!(lanes.iter().all(|l| l["paused"] == false), "{lanes:?}");

    page.close().await.expect("close the browser");
    tc.finish().await;
}

/// Opens the job `id` in the dashboard and waits until `script` (run in the
/// page) says its results are drawn; the detail pane's text.
async fn open_job(page: &Client, id: &str, what: &str, script: &str, drawn: impl Fn(&Value) -> bool) -> String {
    wait_for(page, &format!("{what} listed"), &job_status(id), |v| v == "completed").await;
    click(page, &format!(r#"#jobs li[data-id="{id}"]"#)).await;
    wait_for(page, what, script, drawn).await;
    page.find(Locator::Css("#detail")).await.expect("detail").text().await.expect("text")
}

/// The open job's pictures (thumbnails, poster, contact sheet, preview) the browser has decoded and drawn, by their alt text.
const DRAWN_PICTURES: &str = "[...document.querySelectorAll('#detail img')].filter(i => i.complete && i.naturalWidth > 0).map(i => i.alt)";

#[tokio::test(flavor = "multi_thread")]
async fn the_audio_video_document_and_workflow_views_draw_their_results() {
    let tc = TestCloud::start(EmulatorChoice::Localstack).await;
    let dir = tc.state_dir();
    let tone = ffmpeg(dir, "tone.wav", &["-f", "lavfi", "-i", "sine=frequency=440:duration=3", "-c:a", "pcm_s16le"]);
    let clip_args = [
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=25:duration=4",
        "-f",
        "lavfi",
        "-i",
        "sine=duration=4",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        "25",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-shortest",
    ];
    let clip = ffmpeg(dir, "clip.mp4", &clip_args);
    let pdf = dir.join("ls.pdf");
    let script = format!("zcat -f /usr/share/man/man1/ls.1* | groff -Tpdf -man -P-pa4 > '{}'", pdf.display());
    assert!(std::process::Command::new("sh").args(["-c", &script]).status().expect("groff runs").success());
    let read = |path: &std::path::Path| std::fs::read(path).expect("read");
    let audio = tc.api.submit("tone.wav", read(&tone), None).await.expect("submit audio");
    let video = tc.api.submit("clip.mp4", read(&clip), None).await.expect("submit video");
    let document = tc.api.submit("ls.pdf", read(&pdf), None).await.expect("submit document");
    let workflow = prism_cloud::client::SubmitOptions { workflow: Some("video_analysis".into()), ..Default::default() };
    let run = tc.api.submit_with("clip-run.mp4", read(&clip), &workflow).await.expect("submit run");
    let mut finished = Vec::new();
    for job in [&audio, &video, &document, &run] {
        let done = tc.api.wait(&job.id, JOB_TIMEOUT).await.expect("wait");
        assert_eq!(done.status.to_string(), "completed", "{:?}: {:?}", done.modality, done.error);
        finished.push(done);
    }

    let dashboard = tc.cloud.info.dashboard_url.clone().expect("the local cloud serves the dashboard");
    let driver = chromedriver().await;
    let profile = tempfile::tempdir().expect("profile dir");
    let page = browser(&driver, profile.path()).await;
    page.goto(&dashboard).await.expect("open the dashboard");
    page.wait().for_element(Locator::Css("#token")).await.expect("sign-in form").send_keys(&tc.token("tester")).await.expect("type");
    click(&page, "#sign-in").await;
    wait_for(&page, "the app", SIGNED_IN, |v| v == &json!(true)).await;

    // Audio: the waveform drawn from its peaks, one bar per bucket.
    let waveform = "Number(document.querySelector('#detail canvas.waveform')?.dataset.drawn ?? 0)";
    let facts = open_job(&page, &audio.id.to_string(), "the waveform", waveform, |v| v.as_u64() > Some(0)).await;
    let result = serde_json::to_value(&finished[0].result).expect("json");
    let (codec, rate) = (result["codec"].as_str().expect("codec"), result["sample_rate"].as_u64().expect("rate"));
    assert!(facts.contains(codec) && facts.contains(&format!("{rate} Hz")), "{codec}, {rate} Hz: {facts}");
    // Video: its poster frame and contact sheet.
    let both = |v: &Value| v == &json!(["poster frame", "contact sheet"]);
    let facts = open_job(&page, &video.id.to_string(), "the poster and contact sheet", DRAWN_PICTURES, both).await;
    assert!(facts.contains("320×240"), "{facts}");
    // Document: the first page drawn, and its text.
    let preview = format!("[{DRAWN_PICTURES}, document.querySelector('#detail pre.text')?.textContent ?? '']");
    let drawn = |v: &Value| v[0] == json!(["first page"]) && v[1].as_str().is_some_and(|t| t.contains("list directory contents"));
    open_job(&page, &document.id.to_string(), "the preview and text", &preview, drawn).await;
    // A workflow run: every step with its status.
    let heading = "document.querySelector('#detail h3')?.textContent ?? ''";
    let facts = open_job(&page, &run.id.to_string(), "the run's steps", heading, |v| v == "Workflow video_analysis").await;
    let steps = finished[3].run.as_ref().expect("a run").steps.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
    assert!(steps.len() >= 3, "{steps:?}");
    for name in &steps {
        assert!(facts.lines().any(|l| l.contains(name.as_str()) && l.contains("completed")), "step {name} not shown completed:\n{facts}");
    }

    // The same page deployed to the bucket (`prism dashboard-deploy`), served
    // by S3 from another origin, signs in and lists the jobs over the API.
    let info = &tc.cloud.info;
    let config = prism_cloud::dashboard::DashboardConfig {
        api_url: info.http_url.clone(),
        websocket_url: info.websocket_url.clone(),
        stream_url: info.stream_url.clone(),
    };
    let keys = prism_cloud::dashboard::deploy(&tc.cloud.clients().s3, &info.bucket, "dashboard", &config).await.expect("deploy");
    assert_eq!(keys.len(), prism_cloud::dashboard::files().count() + 1, "the files and config.json: {keys:?}");
    page.goto(&format!("{}/{}/dashboard/index.html", info.endpoint.trim_end_matches('/'), info.bucket))
        .await
        .expect("open the deployed page");
    page.wait().for_element(Locator::Css("#token")).await.expect("sign-in form").send_keys(&tc.token("tester")).await.expect("type");
    click(&page, "#sign-in").await;
    wait_for(&page, "the deployed app", SIGNED_IN, |v| v == &json!(true)).await;
    let ids: Vec<String> = finished.iter().map(|j| j.id.to_string()).collect();
    wait_for(&page, "the jobs listed by the deployed page", LISTED, |v| {
        ids.iter().all(|id| v.as_array().is_some_and(|rows| rows.iter().any(|r| r[0] == id.as_str() && r[1] == "completed")))
    })
    .await;

    page.close().await.expect("close the browser");
    tc.finish().await;
}
