// The foleyscope page: no build step, no dependencies. Upload with XMLHttpRequest (its progress events
// give bytes and seconds, shown apart from processing), then the job's server-sent events read over
// fetch (so a bearer token can be sent), then the audio and the muxed video in the page.
"use strict";

const $ = (id) => document.getElementById(id);
let health = null;
let jobId = null;
let reader = null;

function token() { return $("token").value.trim(); }
function authHeaders() { return token() ? { Authorization: `Bearer ${token()}` } : {}; }
function show(id, on = true) { $(id).hidden = !on; }
function mb(bytes) { return (bytes / 1048576).toFixed(bytes < 10485760 ? 2 : 1) + " MB"; }
function secs(s) { return s == null ? "?" : s < 1 ? `${Math.round(s * 1000)} ms` : `${s.toFixed(1)} s`; }

function fail(message) {
  $("error").textContent = message;
  show("error");
  $("submit").disabled = false;
}

async function loadHealth() {
  try {
    const r = await fetch("/health");
    health = await r.json();
    $("health").textContent = health.status;
    $("health").className = `badge ${health.status}`;
    const w = health.workers.length;
    $("health-detail").textContent = health.mode
      ? `${health.preset} on ${health.device}, ${health.mode} · loaded in ${secs(health.load_s)} · ${w} worker${w === 1 ? "" : "s"} · ${health.queued} queued`
      : `${w} worker${w === 1 ? "" : "s"} starting`;
    show("token-row", health.auth);
    if (!$("steps").value) $("steps").placeholder = health.defaults.steps;
    if (!$("cfg").value) $("cfg").placeholder = health.defaults.cfg;
  } catch (e) {
    $("health").textContent = "down";
    $("health").className = "badge down";
  }
}

function pickFile(file) {
  const input = $("video");
  if (file) {
    const list = new DataTransfer();
    list.items.add(file);
    input.files = list.files;
  }
  const f = input.files[0];
  $("drop-text").textContent = f ? `${f.name} (${mb(f.size)})` : "Drop a video here, or click to pick one";
}

function formData() {
  const data = new FormData();
  data.append("prompt", $("prompt").value);  // the prompt first: a streaming server sees it before the file
  for (const name of ["negative_prompt", "steps", "cfg", "seed"]) {
    if ($(name).value !== "") data.append(name, $(name).value);
  }
  data.append("mux", "auto");
  data.append("video", $("video").files[0]);
  return data;
}

function submit(event) {
  event.preventDefault();
  show("error", false);
  const file = $("video").files[0];
  if (!file) return fail("Pick a video first.");
  if (health && file.size > health.max_upload_mb * 1048576) {
    return fail(`${file.name} is ${mb(file.size)}; this server takes up to ${health.max_upload_mb} MB.`);
  }
  if (token()) localStorage.setItem("foleyscope-token", token());
  $("submit").disabled = true;
  for (const id of ["job", "result"]) show(id, false);
  show("upload");
  const xhr = new XMLHttpRequest();
  const start = performance.now();
  xhr.upload.onprogress = (e) => {
    const s = (performance.now() - start) / 1000;
    $("upload-bar").max = e.total || 1;
    $("upload-bar").value = e.loaded;
    const rate = s > 0 ? ` at ${mb(e.loaded / s)}/s` : "";
    $("upload-text").textContent = `${mb(e.loaded)} of ${mb(e.total)} sent in ${s.toFixed(1)} s${rate}`;
  };
  xhr.upload.onload = () => {
    const s = (performance.now() - start) / 1000;
    $("upload-text").textContent = `Uploaded ${mb(file.size)} in ${s.toFixed(2)} s (not counted as processing).`;
  };
  xhr.onload = () => {
    let body = {};
    try { body = JSON.parse(xhr.responseText); } catch (e) { /* not JSON: the status says enough */ }
    if (xhr.status >= 400) return fail(`${body.detail || xhr.statusText} (${xhr.status})`);
    follow(body.id);
  };
  xhr.onerror = () => fail("The upload failed (network error, or the server refused it).");
  xhr.open("POST", "/v1/jobs");
  for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
  xhr.send(formData());
}

// Server-sent events over fetch: EventSource cannot send an Authorization header.
async function follow(id) {
  jobId = id;
  show("job");
  $("stages").innerHTML = "";
  $("cancel").disabled = false;
  while (jobId === id) {
    try {
      const r = await fetch(`/v1/jobs/${id}/events`, { headers: authHeaders() });
      if (!r.ok) return fail(`Following the job failed (${r.status}).`);
      reader = r.body.getReader();
      if (await readEvents(reader)) return;
    } catch (e) { /* connection dropped: reconnect, the first event is the current state */ }
    await new Promise((done) => setTimeout(done, 1000));
  }
}

async function readEvents(stream) {
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await stream.read();
    if (done) return false;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const name = (block.match(/^event: (.*)$/m) || [])[1];
      const data = (block.match(/^data: (.*)$/m) || [])[1];
      if (name && data && onEvent(name, JSON.parse(data))) return true;
    }
  }
}

function onEvent(name, data) {
  if (name === "state") showState(data);
  else if (name === "stage") showStage(data);
  else if (name === "step") showStep(data);
  else if (name === "end") { showState(data); finish(data); return true; }
  return false;
}

function showState(job) {
  $("job-status").textContent = job.status;
  $("job-status").className = `badge ${job.status}`;
  if (job.status === "queued") {
    $("job-text").textContent = job.queue_position === 0 ? "Next in the queue." : `${job.queue_position} jobs ahead in the queue.`;
  } else if (job.status === "running") {
    $("job-text").textContent = job.stage ? `Stage ${job.stage}` : "Starting…";
    if (job.step != null) showStep({ stage: job.stage, step: job.step, steps: job.steps, eta_s: job.eta_s });
  }
}

function showStage(ev) {
  let li = document.querySelector(`#stages li[data-stage="${ev.stage}"]`);
  if (!li) {
    li = document.createElement("li");
    li.dataset.stage = ev.stage;
    $("stages").appendChild(li);
  }
  for (const other of document.querySelectorAll("#stages li")) other.classList.remove("active");
  if (ev.state === "start") {
    li.classList.add("active");
    li.textContent = `${ev.stage}…`;
    $("job-text").textContent = `Stage ${ev.stage}`;
  } else {
    li.textContent = `${ev.stage}: ${secs(ev.seconds)}`;
  }
}

function showStep(ev) {
  if (ev.unit === "s") {
    $("step-bar").max = ev.total || 1;
    $("step-bar").value = ev.done;
    $("job-text").textContent = `Decoding the video: ${ev.done.toFixed(1)} of ${ev.total.toFixed(1)} s`;
    return;
  }
  $("step-bar").max = ev.steps;
  $("step-bar").value = ev.step;
  const each = ev.seconds != null ? `, ${secs(ev.seconds)} per step` : "";
  const eta = ev.eta_s != null ? ` · about ${secs(ev.eta_s)} left` : "";
  $("job-text").textContent = `Denoising step ${ev.step} of ${ev.steps}${each}${eta}`;
}

async function finish(job) {
  jobId = null;
  $("cancel").disabled = true;
  $("submit").disabled = false;
  if (job.status !== "succeeded") {
    return fail(job.status === "canceled" ? "The job was cancelled." : `The job failed: ${job.error}`);
  }
  $("step-bar").value = $("step-bar").max;
  $("job-text").textContent = `Done in ${secs(job.processing_s)} of processing, after ${secs(job.queued_s)} in the queue.`;
  const s = job.settings;
  $("result-text").textContent = `"${s.prompt}" · ${s.steps} steps · cfg ${s.cfg} · seed ${s.seed} · ${job.input.duration_s} s of video`;
  show("result");
  await setMedia("audio", "audio-link", job.urls.audio);
  show("player", Boolean(job.urls.video));
  show("video-link", Boolean(job.urls.video));
  if (job.urls.video) await setMedia("player", "video-link", job.urls.video);
}

async function setMedia(elementId, linkId, url) {
  let src = url;
  if (token()) {  // media elements cannot send headers: fetch with the token, play from memory
    const r = await fetch(url, { headers: authHeaders() });
    src = URL.createObjectURL(await r.blob());
  }
  $(elementId).src = src;
  $(linkId).href = src;
}

async function cancel() {
  if (!jobId) return;
  $("cancel").disabled = true;
  const r = await fetch(`/v1/jobs/${jobId}/cancel`, { method: "POST", headers: authHeaders() });
  if (!r.ok) {
    const body = await r.json().catch(() => ({}));
    fail(body.detail || `Cancel failed (${r.status})`);
  }
}

function wireDrop() {
  const drop = $("drop");
  for (const kind of ["dragenter", "dragover"]) {
    drop.addEventListener(kind, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const kind of ["dragleave", "drop"]) {
    drop.addEventListener(kind, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (e) => { e.preventDefault(); pickFile(e.dataTransfer.files[0]); });
  $("video").addEventListener("change", () => pickFile());
}

$("token").value = localStorage.getItem("foleyscope-token") || "";
$("job-form").addEventListener("submit", submit);
$("cancel").addEventListener("click", cancel);
wireDrop();
loadHealth();
setInterval(loadHealth, 5000);
