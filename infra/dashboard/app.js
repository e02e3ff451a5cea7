// The dashboard: one page over the REST API and the WebSocket API (no API of
// its own). State lives on the server: a reload lists the jobs again and
// follows each unfinished one from its snapshot's seq, so it comes back to
// where it was; the view (filters, open job) is kept in the URL's hash.

import { PrismClient, TERMINAL } from "./prism-client.js";

const $ = (id) => document.getElementById(id);
const jobs = new Map(); // id -> job as last seen
let prism = null;
let live = null;
let nextCursor = null;

/** An element with attributes and children; text is always set as text, never parsed. */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat()) if (child !== undefined && child !== null) node.append(child.nodeType ? child : String(child));
  return node;
}

const fileName = (job) => decodeURIComponent((job.upload || "").split("/").pop() || job.id);
const seconds = (s) => (s < 90 ? `${Math.round(s)} s` : `${Math.round(s / 60)} min`);
const bytes = (n) => (n < 1e3 ? `${n} B` : n < 1e6 ? `${(n / 1e3).toFixed(1)} kB` : `${(n / 1e6).toFixed(1)} MB`);

function view() {
  const hash = new URLSearchParams(location.hash.slice(1));
  return { status: hash.get("status") || "", modality: hash.get("modality") || "", job: hash.get("job") || "" };
}

function setView(change) {
  const next = { ...view(), ...change };
  const hash = new URLSearchParams(Object.entries(next).filter(([, v]) => v));
  history.replaceState(null, "", `#${hash}`);
}

async function start() {
  const config = await (await fetch("config.json")).json();
  const token = localStorage.getItem("prism.token");
  $("sign-in-form").onsubmit = async (e) => {
    e.preventDefault();
    await signIn(config, $("token").value.trim());
  };
  $("sign-out").onclick = () => {
    localStorage.removeItem("prism.token");
    location.reload();
  };
  if (token) await signIn(config, token);
  else $("sign-in-form").hidden = false;
}

async function signIn(config, token) {
  const client = new PrismClient({ apiUrl: config.api_url, websocketUrl: config.websocket_url, token });
  try {
    await client.listJobs({ limit: 1 });
  } catch (e) {
    $("sign-in-form").hidden = false;
    $("sign-in-error").textContent = e.status === 401 ? "That token was refused." : `Cannot reach the API: ${e.message}`;
    return;
  }
  localStorage.setItem("prism.token", token);
  prism = client;
  $("sign-in-form").hidden = true;
  $("app").hidden = false;
  $("sign-out").hidden = false;
  live = prism.live(onLive, { onState: (s) => ($("connection").textContent = s === "live" ? "Live" : "Reconnecting…") });
  wireControls();
  // An operator's token also sees the lanes; an owner's sees none.
  loadLanes().then((operator) => operator && setInterval(loadLanes, 10_000));
  await loadJobs();
  if (view().job) {
    // The page may name a job this token cannot see (signed in as someone else).
    await openJob(view().job).catch((e) => {
      if (e.status !== 404) throw e;
      setView({ job: "" });
      $("detail").hidden = true;
    });
  }
}

async function toggleLane(lane) {
  try {
    await prism.setLanePaused(lane.lane, !lane.paused);
  } catch (e) {
    $("lanes-error").textContent = `Cannot ${lane.paused ? "resume" : "pause"} ${lane.lane}: ${e.message}`;
    return;
  }
  await loadLanes();
}

/** Shows the lanes when the token is an operator's; whether it is. */
async function loadLanes() {
  let lanes;
  try {
    ({ lanes } = await prism.health());
  } catch (e) {
    $("lanes-error").textContent = `Cannot read the lanes: ${e.message}`;
    return true;
  }
  $("lanes-section").hidden = !lanes;
  if (!lanes) return false;
  $("lanes-error").textContent = "";
  $("lanes").replaceChildren(
    ...lanes.map((lane) =>
      el(
        "li",
        { class: `lane${lane.paused ? " paused" : ""}`, dataset: { lane: lane.lane, paused: lane.paused } },
        el("span", { class: "name" }, lane.lane),
        el("span", { class: "state" }, lane.paused ? "paused" : lane.state),
        el("span", { class: "meta" }, `${lane.waiting} waiting · ${lane.in_flight} in flight`),
        el("button", { type: "button", class: "toggle", onclick: () => toggleLane(lane) }, lane.paused ? "Resume" : "Pause"),
      ),
    ),
  );
  return true;
}

function wireControls() {
  const { status, modality } = view();
  $("filter-status").value = status;
  $("filter-modality").value = modality;
  $("filter-status").onchange = () => { setView({ status: $("filter-status").value }); loadJobs(); };
  $("filter-modality").onchange = () => { setView({ modality: $("filter-modality").value }); loadJobs(); };
  $("refresh").onclick = () => { loadJobs(); loadLanes(); };
  $("more").onclick = () => loadJobs(nextCursor);
  $("files").onchange = () => submitFiles([...$("files").files]);
  const drop = $("drop");
  drop.ondragover = (e) => { e.preventDefault(); drop.classList.add("over"); };
  drop.ondragleave = () => drop.classList.remove("over");
  drop.ondrop = (e) => { e.preventDefault(); drop.classList.remove("over"); submitFiles([...e.dataTransfer.files]); };
}

async function loadJobs(cursor) {
  const { status, modality } = view();
  const page = await prism.listJobs({ status, modality, limit: 50, cursor: cursor || undefined });
  if (!cursor) {
    jobs.clear();
    $("jobs").replaceChildren();
  }
  for (const job of page.jobs) {
    jobs.set(job.id, job);
    $("jobs").append(jobRow(job));
    live.follow(job);
  }
  nextCursor = page.next_cursor;
  $("more").hidden = !nextCursor;
}

function jobRow(job) {
  const meta = [job.modality, job.phase, job.status === "processing" && job.eta_s ? `about ${seconds(job.eta_s)} left` : null, job.error?.message]
    .filter(Boolean)
    .join(" · ");
  const row = el(
    "li",
    { class: "job", tabindex: 0, dataset: { id: job.id, status: job.status }, "aria-current": view().job === job.id ? "true" : null,
      onclick: () => openJob(job.id), onkeydown: (e) => e.key === "Enter" && openJob(job.id) },
    el("span", { class: "name" }, fileName(job)),
    el("span", { class: `status ${job.status}` }, job.cancel_requested && !TERMINAL.has(job.status) ? "cancelling" : job.status),
    el("progress", { max: 100, value: job.progress || 0, "aria-label": `${fileName(job)} progress` }),
    el("span", { class: "meta" }, meta),
  );
  if (!TERMINAL.has(job.status) && !job.cancel_requested) {
    row.append(el("button", { class: "cancel", type: "button", onclick: (e) => { e.stopPropagation(); cancel(job.id); } }, "Cancel"));
  }
  return row;
}

function showJob(job) {
  const known = jobs.has(job.id);
  jobs.set(job.id, job);
  const row = jobRow(job);
  const old = document.querySelector(`#jobs li[data-id="${CSS.escape(job.id)}"]`);
  if (old) {
    // Updated in place, and only where something shows a change: the row
    // keeps its focus, its buttons stay the ones a person is about to click,
    // and screen readers hear nothing new when nothing is.
    old.dataset.status = job.status;
    if (old.innerHTML !== row.innerHTML) old.replaceChildren(...row.childNodes);
  } else if (!known) {
    $("jobs").prepend(row);
  }
}

async function onLive(job, message) {
  if (message.type === "error") return;
  showJob(job);
  // The finished job's outputs come with presigned links from the REST snapshot.
  if (TERMINAL.has(job.status)) {
    const snapshot = await prism.getJob(job.id);
    showJob(snapshot);
    if (view().job === job.id) renderDetail(snapshot);
  } else if (view().job === job.id) {
    renderDetail(job);
  }
}

async function cancel(id) {
  try {
    showJob(await prism.cancel(id));
  } catch (e) {
    alert(`Could not cancel: ${e.message}`);
  }
}

async function submitFiles(files) {
  for (const file of files) {
    const bar = el("progress", { max: file.size || 1, value: 0, "aria-label": `${file.name} upload` });
    const note = el("span", { class: "meta" }, "creating job…");
    const row = el("li", { class: "upload" }, el("span", { class: "name" }, file.name), el("span", { class: "status" }, bytes(file.size)), bar, note);
    $("uploads").prepend(row);
    try {
      const { job, upload } = await prism.submitFile(file, { priority: $("priority").value });
      row.dataset.jobId = job.id;
      showJob(job);
      live.follow(job);
      note.textContent = "uploading…";
      await prism.upload(upload, file, (sent, total) => { bar.max = total || 1; bar.value = sent; });
      bar.value = bar.max;
      note.textContent = "uploaded";
      row.dataset.state = "uploaded";
    } catch (e) {
      note.textContent = e.message;
      note.classList.add("error");
      row.dataset.state = "failed";
    }
  }
}

async function openJob(id) {
  setView({ job: id });
  for (const li of document.querySelectorAll("#jobs li")) li.setAttribute("aria-current", li.dataset.id === id ? "true" : "false");
  renderDetail(await prism.getJob(id));
}

function facts(rows) {
  return el("table", { class: "facts" }, rows.filter(([, v]) => v !== undefined && v !== null && v !== "").map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, String(v)))));
}

function renderDetail(job) {
  $("detail").hidden = false;
  $("detail-title").textContent = fileName(job);
  const links = Object.fromEntries((job.links || []).map((l) => [l.name, l]));
  const body = [
    facts([
      ["Status", job.status], ["Modality", job.modality], ["Type", job.mime], ["Phase", job.phase], ["Progress", `${job.progress || 0}%`],
      ["Priority", job.priority], ["Created", job.created_at], ["Job id", job.id],
    ]),
  ];
  if (job.error) body.push(el("p", { class: "error", role: "alert" }, `${job.error.code}: ${job.error.message}`));
  for (const phase of job.phases || []) {
    const count = phase.total_count ? ` (${phase.processed_count ?? 0}/${phase.total_count})` : "";
    body.push(el("div", { class: "meta" }, `${phase.name}: ${phase.status}${count}`));
  }
  if (job.run?.steps) {
    const step = (s) => `${s.status}${s.attempt > 1 ? `, attempt ${s.attempt}` : ""}${s.error ? ` (${s.error.code})` : ""}`;
    body.push(el("h3", {}, `Workflow ${job.run.workflow}`), facts(job.run.steps.map((s) => [s.name, step(s)])));
  }
  const result = job.result;
  if (result) body.push(...renderResult(result, links));
  $("detail-body").replaceChildren(...body);
}

function renderResult(result, links) {
  const out = [];
  const image = (name, alt, cls) => links[name] && el("img", { src: links[name].url, alt, class: cls, loading: "lazy" });
  switch (result.kind) {
    case "image":
      out.push(facts([["Size", `${result.width}×${result.height}`], ["Format", result.format], ["Hash", result.perceptual_hash]]));
      out.push(el("div", { class: "thumbs" }, (result.thumbnails || []).map((t) => image(t.name, `thumbnail ${t.width}×${t.height}`, "thumbnail"))));
      out.push(el("p", {}, (result.palette || []).map((c) => el("span", { class: "swatch", title: `${c.hex} (${Math.round(c.share * 100)}%)`, style: `background:${c.hex}` }))));
      break;
    case "audio": {
      out.push(facts([["Codec", result.codec], ["Duration", seconds(result.duration_s)], ["Channels", result.channels], ["Sample rate", `${result.sample_rate} Hz`]]));
      const canvas = el("canvas", { class: "waveform", width: 1000, height: 120, role: "img", "aria-label": "waveform" });
      out.push(canvas);
      if (links.waveform) drawWaveform(canvas, links.waveform.url);
      break;
    }
    case "video":
      out.push(facts([["Size", `${result.width}×${result.height}`], ["Duration", seconds(result.duration_s)], ["Codec", result.video_codec], ["Audio", result.has_audio ? "yes" : "no"]]));
      out.push(el("div", { class: "thumbs" }, image("poster", "poster frame", "thumbnail"), image("contact_sheet", "contact sheet", "sheet")));
      break;
    case "document":
      out.push(facts([["Pages", result.pages], ["Words", result.words], ["Title", result.metadata?.title]]));
      out.push(el("div", { class: "thumbs" }, image("preview", "first page", "thumbnail")));
      if (links.text) out.push(textOf(links.text.url));
      break;
    case "text":
      out.push(facts([["Words", result.words], ["Lines", result.lines], ["Sentences", result.sentences], ["Language", result.language], ["Reading time", seconds(result.reading_time_s)], ["Keywords", (result.keywords || []).map((k) => k.word).join(", ")]]));
      if (links.text) out.push(textOf(links.text.url));
      break;
    default:
      out.push(el("pre", { class: "text" }, JSON.stringify(result, null, 2)));
  }
  return out;
}

function textOf(url) {
  const pre = el("pre", { class: "text" }, "loading…");
  fetch(url).then((r) => r.text()).then((t) => (pre.textContent = t.length > 20000 ? `${t.slice(0, 20000)}\n…` : t), (e) => (pre.textContent = `could not load: ${e.message}`));
  return pre;
}

async function drawWaveform(canvas, url) {
  const { peaks } = await (await fetch(url)).json();
  const ctx = canvas.getContext("2d");
  const { width, height } = canvas;
  ctx.fillStyle = "#2456c5";
  const step = width / Math.max(peaks.length, 1);
  peaks.forEach((p, i) => {
    const h = Math.max(1, p * height);
    ctx.fillRect(i * step, (height - h) / 2, Math.max(step - 0.5, 0.5), h);
  });
  canvas.dataset.drawn = String(peaks.length);
}

start().catch((e) => ($("connection").textContent = `Cannot start: ${e.message}`));
