// The affectllm page: pick or upload a clip, ask, read the streamed answer, labels, AUs and the AU timeline.
// Plain browser JavaScript, no build step and no external library: it talks to the same server's OpenAI API.
"use strict";

const KEY_STORE = "affectllm.apiKey";
const COLORS = ["#3d6fd8", "#d8553d", "#2e9e5b", "#9b4dca", "#d89a1e", "#1aa3b8", "#c23b7a", "#6b7b2a", "#7a5230",
  "#4a4a8a", "#e07b9a"];
const $ = (id) => document.getElementById(id);
let apiKey = localStorage.getItem(KEY_STORE) || "";
let modelId = null;

function headers() {
  const h = { "Content-Type": "application/json" };
  if (apiKey) h.Authorization = `Bearer ${apiKey}`;
  return h;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

async function errorMessage(resp) {
  try {
    const body = await resp.json();
    return `${resp.status}: ${body.error.message}`;
  } catch (_) {
    return `${resp.status}: ${resp.statusText}`;
  }
}

// The key is asked for once (when the server answers 401) and kept in this browser's storage.
async function api(path, options = {}) {
  const resp = await fetch(path, { ...options, headers: headers() });
  if (resp.status === 401) {
    localStorage.removeItem(KEY_STORE);
    $("key-form").hidden = false;
    $("api-key").focus();
    throw new Error("this server needs an API key: enter it above");
  }
  if (!resp.ok) throw new Error(await errorMessage(resp));
  return resp;
}

async function start() {
  try {
    const models = await (await api("/v1/models")).json();
    modelId = models.data[0].id;
    $("model-name").textContent = modelId;
    $("key-form").hidden = true;
    const media = await (await api("/v1/affect/media")).json();
    const select = $("clip-select");
    select.length = 1;
    for (const item of media.data) select.add(new Option(item.id, item.url));
    showError("");
  } catch (err) {
    showError(err.message);
  }
}

function kindOf(name, mime) {
  const type = mime || "";
  if (type.startsWith("image/") || /\.(png|jpe?g|webp|bmp)$/i.test(name)) return "image";
  if (type.startsWith("audio/") || /\.(wav|mp3|flac|ogg|m4a)$/i.test(name)) return "audio";
  return "video";
}

function readAsDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error(`could not read ${file.name}`));
    reader.readAsDataURL(file);
  });
}

async function mediaPart() {
  const file = $("clip-file").files[0];
  let url, kind;
  if (file) {
    url = await readAsDataUrl(file);
    kind = kindOf(file.name, file.type);
  } else if ($("clip-select").value) {
    url = $("clip-select").value;
    kind = kindOf(url, "");
  } else {
    return null;
  }
  const key = `${kind}_url`;
  return { type: key, [key]: { url } };
}

function clearAnswer() {
  $("explanation").textContent = "";
  $("labels").replaceChildren();
  $("aus").replaceChildren();
  showError("");
}

function renderAnswer(affect) {
  const labels = $("labels");
  labels.replaceChildren();
  if (!affect.labels.length) labels.append(Object.assign(document.createElement("li"),
    { textContent: "no labels in the answer", className: "muted" }));
  for (const label of affect.labels) {
    const li = document.createElement("li");
    li.className = "label";
    const conf = affect.confidence;
    const pct = conf == null ? 0 : Math.round(conf * 100);
    li.innerHTML = `<span class="name"></span><div class="bar" title="calibrated confidence"><span></span></div>
      <span class="value"></span>`;
    li.querySelector(".name").textContent = label;
    li.querySelector(".bar > span").style.width = `${pct}%`;
    li.querySelector(".value").textContent = conf == null ? "n/a" : `${pct}%`;
    labels.append(li);
  }
  const aus = $("aus");
  aus.replaceChildren();
  if (!affect.aus.length) aus.append(Object.assign(document.createElement("li"),
    { textContent: "no AUs named", className: "muted" }));
  for (const au of affect.aus) {
    aus.append(Object.assign(document.createElement("li"), { textContent: `${au.code} ${au.name || ""}` }));
  }
  if (affect.explanation) $("explanation").textContent = affect.explanation;
}

// The AU timeline as an SVG line plot: one line per AU over the sampled frames' times, a gap where no face.
function renderTimeline(timeline) {
  const box = $("timeline");
  box.replaceChildren();
  if (!timeline) {
    box.innerHTML = '<p class="muted">No AU timeline: the clip has no video or no face was found.</p>';
    return;
  }
  const W = 640, H = 220, L = 36, R = 10, T = 10, B = 28;
  const times = timeline.times;
  const t0 = times[0], t1 = times[times.length - 1] > t0 ? times[times.length - 1] : t0 + 1;
  const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
  const y = (v) => T + (1 - v) * (H - T - B);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("id", "timeline-plot");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "AU intensity over time");
  const add = (tag, attrs, text) => {
    const el = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    if (text) el.textContent = text;
    svg.append(el);
    return el;
  };
  add("rect", { x: L, y: T, width: W - L - R, height: H - T - B, fill: "#f7f8fb", stroke: "#ccc" });
  for (const v of [0, 0.5, 1]) {
    add("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", "font-size": 11, fill: "#666" }, v.toFixed(1));
  }
  add("text", { x: L, y: H - 8, "font-size": 11, fill: "#666" }, `${t0.toFixed(2)} s`);
  add("text", { x: W - R, y: H - 8, "text-anchor": "end", "font-size": 11, fill: "#666" }, `${t1.toFixed(2)} s`);
  const legend = document.createElement("div");
  legend.className = "legend";
  Object.entries(timeline.aus).forEach(([code, values], i) => {
    const color = COLORS[i % COLORS.length];
    let d = "";
    let pen = false;
    values.forEach((v, k) => {
      if (v == null) { pen = false; return; }
      d += `${pen ? "L" : "M"}${x(times[k]).toFixed(1)},${y(Math.max(0, Math.min(1, v))).toFixed(1)} `;
      pen = true;
    });
    if (d) add("path", { d, fill: "none", stroke: color, "stroke-width": 2, class: "au-line", "data-au": code });
    const item = document.createElement("span");
    item.innerHTML = `<span class="swatch" style="background:${color}"></span>`;
    item.append(`${code} ${timeline.names[code] || ""}`);
    legend.append(item);
  });
  box.append(svg, legend);
}

// Reads OpenAI's SSE stream: "data: {chunk}" events, then "data: [DONE]".
async function readStream(resp) {
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut).trim();
      buffer = buffer.slice(cut + 2);
      if (!event.startsWith("data: ")) continue;
      const data = event.slice(6);
      if (data === "[DONE]") return;
      handleChunk(JSON.parse(data));
    }
  }
}

function handleChunk(chunk) {
  if (chunk.error) throw new Error(chunk.error.message);
  if (chunk.affect) renderTimeline(chunk.affect.timeline);
  for (const choice of chunk.choices || []) {
    if (choice.index !== 0) continue;
    if (choice.delta && choice.delta.content) $("explanation").textContent += choice.delta.content;
    if (choice.finish_reason && choice.affect) renderAnswer(choice.affect);
  }
}

async function ask() {
  const button = $("ask-button");
  button.disabled = true;
  clearAnswer();
  try {
    if (!modelId) await start();
    if (!modelId) return;
    const content = [];
    const part = await mediaPart();
    if (part) content.push(part);
    const question = $("question").value.trim();
    if (question) content.push({ type: "text", text: question });
    const transcript = $("transcript").value.trim();
    const body = {
      model: modelId, stream: true, messages: [{ role: "user", content }],
      affect: { timeline: true, ...(transcript ? { transcript } : {}) },
    };
    const resp = await api("/v1/chat/completions", { method: "POST", body: JSON.stringify(body) });
    await readStream(resp);
    document.body.dataset.answered = "true";
  } catch (err) {
    showError(err.message);
  } finally {
    button.disabled = false;
  }
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  apiKey = $("api-key").value.trim();
  localStorage.setItem(KEY_STORE, apiKey);
  start();
});
$("clip-file").addEventListener("change", () => {
  const file = $("clip-file").files[0];
  const preview = $("preview");
  preview.hidden = !(file && file.type.startsWith("video/"));
  if (!preview.hidden) preview.src = URL.createObjectURL(file);
});
$("ask-button").addEventListener("click", ask);
start();
