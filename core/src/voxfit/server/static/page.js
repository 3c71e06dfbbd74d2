// The voxfit page: plain JavaScript, no framework, nothing loaded from elsewhere.
// It talks to the server through the same routes any client uses.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY = "voxfit-api-key";
const state = { voices: [], details: {}, plans: {}, busy: false, abort: null, limit: null, pollTimer: null };
// What the last Speak did, for people (the status line) and for the browser test.
window.voxfitPage = { ready: false, last: null };

// -- small helpers -------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children.flat()) if (c != null) node.append(c instanceof Node ? c : String(c));
  return node;
}
const fmt = (x, digits = 2) => (x == null || Number.isNaN(x) ? "–" : Number(x).toFixed(digits));
function bytes(n) {
  if (n == null) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}
function label(p) {
  const parts = [p.engine, p.device, p.precision];
  if (p.quantization && p.quantization !== "none") parts.push(p.quantization);
  if (p.compile) parts.push("compiled");
  if (p.threads) parts.push(`${p.threads} thread${p.threads === 1 ? "" : "s"}`);
  if (p.options && p.options.variant) parts.push(p.options.variant);
  return `${p.plugin}: ${parts.join(", ")}`;
}
function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

// -- the API -------------------------------------------------------------------

class ApiError extends Error {}

function headers(extra) {
  const h = Object.assign({}, extra || {});
  const key = sessionStorage.getItem(KEY);
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

async function errorOf(response) {
  // Every error the server sends is one line: {"error": {"message": ...}}.
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) return body.error.message;
  } catch (e) { /* not JSON */ }
  return `${response.status} ${response.statusText || "error"}`;
}

async function api(path, options) {
  let response;
  try {
    response = await fetch(path, Object.assign({}, options, { headers: headers((options || {}).headers) }));
  } catch (e) {
    throw new ApiError("the server cannot be reached");
  }
  if (response.status === 401) {
    askKey(sessionStorage.getItem(KEY) ? "That key was refused: enter the right one." : "");
    throw new ApiError(await errorOf(response));
  }
  if (!response.ok) throw new ApiError(await errorOf(response));
  return response;
}
const getJSON = async (path) => (await api(path)).json();

function askKey(why) {
  const form = $("key-form");
  if (why) showError(why);
  if (form.hidden) {
    form.hidden = false;
    $("key").focus();
  }
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY, $("key").value.trim());
  $("key-form").hidden = true;
  showError("");
  start();
});

// -- voices and options ----------------------------------------------------------

function optionTypes(prop) {
  const kinds = (prop.anyOf || [prop]).map((p) => p.type).filter((t) => t && t !== "null");
  return kinds;
}

// "0.1 to 5, default 1": what the options model allows, from its JSON schema.
function rangeOf(prop) {
  const inner = (prop.anyOf || [prop]).find((p) => p.type === "number" || p.type === "integer") || {};
  const bits = [];
  const lo = inner.minimum ?? inner.exclusiveMinimum;
  const hi = inner.maximum ?? inner.exclusiveMaximum;
  if (lo != null && hi != null) bits.push(`${lo} to ${hi}`);
  else if (lo != null) bits.push(`from ${lo}`);
  else if (hi != null) bits.push(`up to ${hi}`);
  if (prop.default != null) bits.push(`default ${prop.default}`);
  return bits.length ? `(${bits.join(", ")})` : "";
}

function renderOptions(details) {
  const box = $("options-fields");
  box.replaceChildren();
  $("options-engine").textContent = `(${details.engine}; ${details.speed ? `speed sets ${details.speed.rule}` : "no speed control"})`;
  $("speed").disabled = !details.speed;
  const props = (details.options_schema && details.options_schema.properties) || {};
  const names = Object.keys(props);
  if (!names.length) box.append(el("p", { class: "muted", text: "This engine takes no voice options." }));
  for (const name of names) {
    const prop = props[name];
    const kinds = optionTypes(prop);
    const id = `opt-${name}`;
    const numeric = kinds.length && kinds.every((k) => k === "number" || k === "integer");
    let input;
    if (kinds.length === 1 && kinds[0] === "boolean") {
      input = el("select", { id }, el("option", { value: "", text: "default" }), el("option", { value: "true", text: "on" }),
        el("option", { value: "false", text: "off" }));
    } else {
      input = el("input", { id, type: numeric ? "number" : "text", placeholder: "default" });
      const inner = (prop.anyOf || [prop]).find((p) => p.type === "number" || p.type === "integer") || {};
      if (numeric) {
        input.step = kinds.includes("number") ? "0.01" : "1";
        if (inner.minimum != null) input.min = inner.minimum;
        if (inner.maximum != null) input.max = inner.maximum;
      }
    }
    input.dataset.option = name;
    input.dataset.kinds = kinds.join(",");
    box.append(el("div", {}, el("label", { for: id, title: prop.description || "" }, name, el("span", { class: "muted", text: ` ${rangeOf(prop)}` })), input,
      prop.description ? el("span", { class: "muted", text: prop.description }) : null));
  }
  syncSpeed();
  const uploads = (details.options_schema || {})["x-voxfit-uploads"];
  if (uploads && uploads.length) {
    box.append(el("p", { class: "muted", text: `${uploads.join(", ")}: upload files through POST /v1/tts (multipart).` }));
  }
}

// Speed and the option it sets cannot both be given: while the slider is off 1.00 the option follows it.
function syncSpeed() {
  const details = state.details[$("voice").value] || {};
  const input = details.speed ? $(`opt-${details.speed.option}`) : null;
  if (!input) return;
  const speed = Number($("speed").value);
  input.disabled = speed !== 1;
  input.placeholder = speed !== 1 ? `set by speed (${details.speed.rule})` : "default";
  if (speed !== 1) input.value = "";
}

function optionValues() {
  const out = {};
  for (const input of document.querySelectorAll("[data-option]")) {
    const raw = input.value.trim();
    if (!raw) continue;
    const kinds = input.dataset.kinds.split(",");
    if (kinds.length === 1 && kinds[0] === "boolean") out[input.dataset.option] = raw === "true";
    else if (kinds.every((k) => k === "number" || k === "integer")) out[input.dataset.option] = Number(raw);
    else if (kinds.includes("integer") && /^-?\d+$/.test(raw)) out[input.dataset.option] = Number(raw);
    else out[input.dataset.option] = raw;
  }
  return out;
}

async function selectVoice(name) {
  if (!state.details[name]) state.details[name] = await getJSON(`/v1/audio/voices/${encodeURIComponent(name)}`);
  const details = state.details[name];
  state.limit = details.limits.max_input_chars;
  renderOptions(details);
  updateCount();
  renderPlan(name);
}

function updateCount() {
  const n = $("text").value.length;
  const over = state.limit != null && n > state.limit;
  $("count").textContent = state.limit != null ? `${n} / ${state.limit} characters` : `${n} characters`;
  $("count").className = over ? "bad" : "muted";
}

// -- the plan ----------------------------------------------------------------------

function reasons(list, cls) {
  return el("ul", {}, (list || []).map((r) => el("li", cls ? { class: cls } : {}, r)));
}

function estimateLine(p) {
  const e = p.estimate || {};
  const bits = [`score ${fmt(p.score)}`];
  if (e.rtf != null) bits.push(`RTF ~${fmt(e.rtf, 3)}`);
  if (e.peak_memory_bytes != null) bits.push(`peak ~${bytes(e.peak_memory_bytes)} (${p.memory_pool === "device" ? "device memory" : "RAM"})`);
  return bits.join(" · ");
}

// Reasons every proposal gives (the CPU's load at plan time, "estimated, not measured") are said once.
function sharedReasons(proposals) {
  if (proposals.length < 2) return [];
  return (proposals[0].reasons || []).filter((r) => proposals.every((p) => (p.reasons || []).includes(r)));
}

function ownReasons(p, shared, cls) {
  return reasons((p.reasons || []).filter((r) => !shared.includes(r)), cls);
}

function hardwareLine(plan) {
  const hw = plan.hardware || {};
  const accelerators = (hw.devices || []).filter((d) => d.family !== "cpu")
    .map((d) => `${d.id} ${d.name || d.family}${d.memory_total_bytes ? ` (${bytes(d.memory_total_bytes)})` : ""}`);
  return `${hw.cpu_model || hw.arch || "CPU"} with ${hw.cores_logical || "?"} logical CPUs, ${bytes(hw.memory_total_bytes)} RAM; ` +
    (accelerators.length ? accelerators.join("; ") : "no accelerator") + `; device lock: ${plan.device_lock}`;
}

// What a proposal's peak memory is measured against: its device's memory, or the RAM available at plan time.
function memoryRoom(plan, p) {
  const hw = plan.hardware || {};
  if (p.memory_pool === "device") {
    const d = (hw.devices || []).find((x) => x.id === p.device) || {};
    return { bytes: d.memory_free_bytes || d.memory_total_bytes, what: `free on ${p.device}` };
  }
  return { bytes: hw.memory_available_bytes || hw.memory_total_bytes, what: "RAM available" };
}

function meter(fraction, text, cls) {
  const fill = el("span", { class: "fill" + (cls ? ` ${cls}` : "") });
  fill.style.width = `${Math.max(1, Math.min(100, 100 * (fraction || 0)))}%`;
  return el("div", { class: "meter", role: "img", "aria-label": text }, el("span", { class: "track" }, fill), el("span", { class: "muted", text }));
}

// A small chart: each proposal's estimated speed (times real time) and peak memory against what the machine has.
function planChart(plan) {
  const proposals = [plan.chosen, ...(plan.alternatives || [])].filter(Boolean);
  const speeds = proposals.map((p) => ((p.estimate || {}).rtf ? 1 / p.estimate.rtf : null));
  const fastest = Math.max(1, ...speeds.filter((x) => x != null));
  const rows = proposals.map((p, i) => {
    const room = memoryRoom(plan, p);
    const peak = (p.estimate || {}).peak_memory_bytes;
    const speed = speeds[i];
    return el("tr", i === 0 ? { class: "is-chosen" } : {},
      el("th", { scope: "row", class: "label", text: (p.options && p.options.variant) || label(p).split(": ")[1] }),
      el("td", {}, speed == null ? el("span", { class: "muted", text: "not estimated" })
        : meter(speed / fastest, `${fmt(speed, 1)}x real time`, speed < 1 ? "hot" : "")),
      el("td", {}, peak == null || !room.bytes ? el("span", { class: "muted", text: "not estimated" })
        : meter(peak / room.bytes, `${bytes(peak)} of ${bytes(room.bytes)} ${room.what}`, peak > room.bytes ? "hot" : "")));
  });
  return el("table", { class: "chart", id: "plan-chart" },
    el("thead", {}, el("tr", {}, el("th", { scope: "col", text: "proposal" }), el("th", { scope: "col", text: "speed (estimated)" }),
      el("th", { scope: "col", text: "peak memory (estimated)" }))),
    el("tbody", {}, rows));
}

function followLine(follow) {
  if (!follow || !follow.window_seconds) return el("p", { class: "muted", text: "Planned once at start (VOXFIT_REPLAN_WINDOW=0)." });
  const last = (follow.replans || []).slice(-1)[0];
  const now = follow.load_now ? ` Load now: ${follow.load_now}.` : "";
  if (!last) return el("p", { class: "muted", text: `Threads follow the CPU load (re-planned after ${follow.window_seconds} s of change); no change yet.${now}` });
  const when = new Date(last.at * 1000).toLocaleTimeString();
  const what = last.swapped ? `${last.was} → ${last.now}` : `kept ${last.was}`;
  return el("p", { id: "plan-follow" }, el("strong", { text: `Re-planned at ${when}: ` }), `${what} (${last.why}).`,
    el("span", { class: "muted", text: now }));
}

function loadedPart(details) {
  const load = details.load;
  const items = [];
  for (const a of load.attempts || []) if (!a.ok) items.push(el("li", { class: "veto" }, `fell back from ${a.proposal}: ${a.reason}`));
  for (const n of load.notes || []) items.push(el("li", {}, n));
  for (const n of load.artifacts_disabled || []) items.push(el("li", {}, `switched off: ${n}`));
  for (const p of load.problems || []) items.push(el("li", { class: "veto" }, `plugin problem: ${p.plugin}.${p.hook}: ${p.error}`));
  const env = load.env_applied || [];
  return el("details", { id: "plan-loaded" }, el("summary", { text: `Loaded in ${fmt(load.load_seconds)} s; environment changes made (${env.length})` }),
    items.length ? el("ul", {}, items) : null,
    env.length ? el("ul", { id: "plan-env" }, env.map((e) => el("li", { class: "label" }, e)))
      : el("p", { class: "muted", text: "none: the plugins asked for no change to this process" }));
}

function foldedProposals(plan, shared) {
  const alts = plan.alternatives || [];
  const rejected = plan.rejected || [];
  return [
    el("details", { id: "plan-alternatives" }, el("summary", { text: `Alternatives, in order (${alts.length})` }),
      alts.length ? el("ol", {}, alts.map((p) => el("li", {}, el("span", { class: "label", text: label(p) }),
        el("span", { class: "muted", text: ` · ${estimateLine(p)}` }), ownReasons(p, shared)))) : el("p", { class: "muted", text: "none" })),
    el("details", { id: "plan-vetoed" }, el("summary", { text: `Vetoed (${rejected.length})` }),
      rejected.length ? el("ul", {}, rejected.map((r) => el("li", {}, el("span", { class: "label", text: label(r.proposal) }),
        reasons(r.reasons, "veto")))) : el("p", { class: "muted", text: "none" })),
  ];
}

function renderPlan(name) {
  const plan = state.plans[name];
  const details = state.details[name];
  const body = $("plan-body");
  if (!plan) { body.replaceChildren(el("p", { class: "muted", text: "No plan for this voice." })); return; }
  const proposals = [plan.chosen, ...(plan.alternatives || [])].filter(Boolean);
  const shared = sharedReasons(proposals);
  const parts = [el("p", {}, el("strong", { text: plan.model.name }), ` (${plan.model.family}, ${plan.model.source})`,
    el("br"), el("span", { class: "muted", text: hardwareLine(plan) }))];
  if (plan.chosen) {
    const c = plan.chosen;
    parts.push(el("div", { class: "chosen", id: "plan-chosen" },
      el("h3", {}, "Chosen: ", el("span", { class: "label", text: label(c) })),
      el("p", { class: "muted", text: estimateLine(c) }), ownReasons(c, shared)));
  } else parts.push(el("p", { class: "summary", text: plan.summary }));
  parts.push(followLine(state.follow));
  if (shared.length) parts.push(el("h3", { text: "Said of every proposal" }), el("ul", { id: "plan-shared" }, shared.map((r) => el("li", {}, r))));
  if (proposals.length) parts.push(el("h3", { text: "Proposals against this machine" }), el("div", { class: "scroll" }, planChart(plan)));
  if (details && details.load) parts.push(loadedPart(details));
  parts.push(...foldedProposals(plan, shared));
  if ((plan.problems || []).length) {
    parts.push(el("h3", { text: "Plugin problems" }));
    parts.push(el("ul", {}, plan.problems.map((p) => el("li", { class: "veto" }, `${p.plugin}.${p.hook}: ${p.error}`))));
  }
  body.replaceChildren(...parts);
}

// -- system and recent requests ---------------------------------------------------------

function bar(name, percent, text) {
  const fill = el("div", { class: "fill" + (percent > 85 ? " hot" : "") });
  fill.style.width = `${Math.max(0, Math.min(100, percent || 0))}%`;
  return el("div", { class: "bar" }, el("span", { text: name }), el("div", { class: "track", role: "img", "aria-label": `${name} ${fmt(percent, 0)}%` }, fill),
    el("span", { class: "muted", text }));
}

async function refreshSystem() {
  try {
    const s = await getJSON("/v1/system");
    const used = s.memory.total_bytes - s.memory.available_bytes;
    const per = s.cpu.per_cpu_percent || [];
    const parts = [bar("CPU", s.cpu.percent, `${fmt(s.cpu.percent, 0)}% average`)];
    // One column per logical CPU, labelled with its number and load: which cores are busy, not only how much.
    const cpus = el("div", { class: "cpus", id: "system-cpus", role: "img",
      "aria-label": `each of ${per.length} logical CPUs: ${per.map((p) => `${fmt(p, 0)}%`).join(", ")}` });
    per.forEach((p, i) => {
      const fill = el("span");
      fill.style.height = `${Math.max(2, p)}%`;
      cpus.append(el("figure", { title: `CPU ${i}: ${fmt(p, 0)}%` }, fill, el("figcaption", { text: `${i}: ${fmt(p, 0)}%` })));
    });
    parts.push(el("p", { class: "muted", text: `Each of the ${per.length} logical CPUs (busy %, all processes):` }), cpus);
    parts.push(bar("RAM", s.memory.used_percent, `${bytes(used)} / ${bytes(s.memory.total_bytes)}`));
    parts.push(el("p", { class: "muted", text: `this server's process: ${bytes(s.process.rss_bytes)} resident` }));
    // The CPU and RAM are shown above; a "cpu" device from detection would repeat them.
    const devices = (s.devices || []).filter((d) => d.family !== "cpu");
    for (const d of devices) {
      parts.push(el("h3", { text: `${d.id}: ${d.name || d.family}` }));
      parts.push(bar("utilisation", d.utilization_percent, d.utilization_percent == null ? "not reported" : `${fmt(d.utilization_percent, 0)}%`));
      const pct = d.memory_total_bytes ? (100 * (d.memory_used_bytes || 0)) / d.memory_total_bytes : null;
      parts.push(bar("memory", pct, d.memory_total_bytes ? `${bytes(d.memory_used_bytes)} / ${bytes(d.memory_total_bytes)}` : "not reported"));
    }
    if (!devices.length) parts.push(el("p", { class: "muted", text: "No accelerator: the plugins detected none." }));
    if (s.devices_error) parts.push(el("p", { class: "bad", text: `device detection: ${s.devices_error}` }));
    $("system-body").replaceChildren(...parts);
    $("system-age").textContent = `(updated ${new Date().toLocaleTimeString()}; devices ${fmt(s.devices_age_seconds, 1)} s old)`;
  } catch (e) { /* the next poll tries again; errors of the API key show once */ }
}

function schedulePoll() {
  clearTimeout(state.pollTimer);
  state.pollTimer = setTimeout(async () => {
    await refreshSystem();
    if (!state.busy) await refreshRecent().catch(() => {}); // Wyoming and other clients' requests too
    schedulePoll();
  }, state.busy ? 1000 : 5000);
}

async function refreshRecent() {
  const data = await getJSON("/v1/requests/recent?limit=10");
  const rows = data.requests.map((r) => el("tr", { "data-id": r.id }, el("td", { class: "label", text: r.id }), el("td", { class: "wide", text: r.voice }),
    el("td", { class: "wide", text: r.route }), el("td", { class: r.status === "ok" ? "ok" : "bad", text: r.status, title: r.error || "" }),
    el("td", { class: "num", text: r.characters }), el("td", { class: "num", text: fmt(r.audio_seconds) }),
    el("td", { class: "num wide", text: fmt(r.time_to_first_audio_seconds, 3) }), el("td", { class: "num", text: fmt(r.rtf, 3) }),
    el("td", { class: "num wide", text: fmt(r.queue_wait_seconds, 3) }), el("td", { class: "num", text: fmt(r.total_seconds, 3) })));
  $("recent-table").tBodies[0].replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: "10", class: "muted", text: "none yet" }))]));
  return data.requests;
}

// -- speaking ---------------------------------------------------------------------------

function wavHeader(rate, dataBytes) {
  const h = new DataView(new ArrayBuffer(44));
  const text = (o, s) => { for (let i = 0; i < s.length; i++) h.setUint8(o + i, s.charCodeAt(i)); };
  text(0, "RIFF"); h.setUint32(4, 36 + dataBytes, true); text(8, "WAVE"); text(12, "fmt ");
  h.setUint32(16, 16, true); h.setUint16(20, 1, true); h.setUint16(22, 1, true); h.setUint32(24, rate, true);
  h.setUint32(28, rate * 2, true); h.setUint16(32, 2, true); h.setUint16(34, 16, true); text(36, "data");
  h.setUint32(40, dataBytes, true);
  return h.buffer;
}

// The streamed WAV: a header whose sizes mean "to the end", then 16-bit mono PCM as it is made.
function parseHeader(buf) {
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  if (buf.length < 12) return null;
  let off = 12, rate = null;
  while (off + 8 <= buf.length) {
    const id = String.fromCharCode(buf[off], buf[off + 1], buf[off + 2], buf[off + 3]);
    const size = v.getUint32(off + 4, true);
    if (id === "fmt " && off + 16 <= buf.length) rate = v.getUint32(off + 12, true);
    if (id === "data") return rate ? { rate, start: off + 8 } : null;
    off += 8 + size;
  }
  return null;
}

class Player {
  constructor() {
    const Ctx = window.AudioContext || window.webkitAudioContext;
    try { this.ctx = Ctx ? new Ctx() : null; } catch (e) { this.ctx = null; }
    this.at = 0;
  }
  play(samples, rate) {
    if (!this.ctx || !samples.length) return;
    const buffer = this.ctx.createBuffer(1, samples.length, rate);
    const data = buffer.getChannelData(0);
    for (let i = 0; i < samples.length; i++) data[i] = samples[i] / 32768;
    const src = this.ctx.createBufferSource();
    src.buffer = buffer;
    src.connect(this.ctx.destination);
    this.at = Math.max(this.at, this.ctx.currentTime + 0.05);
    src.start(this.at);
    this.at += buffer.duration;
  }
  close() { if (this.ctx) setTimeout(() => this.ctx.close(), Math.max(0, (this.at - this.ctx.currentTime) * 1000) + 500); }
}

async function speak() {
  if (state.busy) return;
  showError("");
  const voice = $("voice").value;
  const details = state.details[voice] || {};
  const body = { text: $("text").value, voice, format: "wav", stream: true, options: optionValues() };
  const speed = Number($("speed").value);
  if (details.speed && speed !== 1) body.speed = speed;
  const started = performance.now();
  const last = { id: null, bytes: 0, seconds: 0, firstAudioMs: null, doneMs: null, reads: 0, rate: null, done: false,
    error: null, playing: null };
  window.voxfitPage.last = last;
  state.busy = true;
  state.abort = new AbortController();
  $("speak").disabled = true; $("stop").disabled = false; $("download").hidden = true;
  $("status").textContent = "Waiting for the first sentence…";
  schedulePoll();
  refreshSystem();
  const player = new Player();
  const pcm = [];
  try {
    const response = await api("/v1/tts", { method: "POST", body: JSON.stringify(body), signal: state.abort.signal,
      headers: { "Content-Type": "application/json" } });
    last.id = response.headers.get("X-Request-Id");
    const reader = response.body.getReader();
    let head = new Uint8Array(0), info = null, odd = null;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      let chunk = value;
      if (!info) {
        const joined = new Uint8Array(head.length + chunk.length);
        joined.set(head); joined.set(chunk, head.length);
        info = parseHeader(joined);
        if (!info) { head = joined; continue; }
        last.rate = info.rate;
        chunk = joined.subarray(info.start);
      }
      if (odd) { const j = new Uint8Array(odd.length + chunk.length); j.set(odd); j.set(chunk, odd.length); chunk = j; odd = null; }
      const even = chunk.length - (chunk.length % 2);
      if (even < chunk.length) odd = chunk.slice(even);
      if (!even) continue;
      const part = chunk.slice(0, even);
      pcm.push(part);
      last.reads += 1;
      last.bytes += even;
      last.seconds = last.bytes / 2 / info.rate;
      if (last.firstAudioMs == null) last.firstAudioMs = performance.now() - started;
      player.play(new Int16Array(part.buffer, 0, even / 2), info.rate);
      if (last.playing == null && player.ctx) last.playing = player.ctx.state;
      $("status").textContent = `Playing as it streams: ${fmt(last.seconds)} s of audio so far (first audio after ${fmt(last.firstAudioMs, 0)} ms)`;
    }
    last.doneMs = performance.now() - started;
    last.done = true;
  } catch (e) {
    last.error = e.name === "AbortError" ? "stopped" : e.message;
    if (e.name !== "AbortError") showError(e.message);
  } finally {
    player.close();
    state.busy = false;
    $("speak").disabled = false; $("stop").disabled = true;
  }
  if (pcm.length && last.rate) {
    const blob = new Blob([wavHeader(last.rate, last.bytes), ...pcm], { type: "audio/wav" });
    const url = URL.createObjectURL(blob);
    const audio = $("audio");
    if (audio.src) URL.revokeObjectURL(audio.src);
    audio.src = url; audio.hidden = false;
    const link = $("download");
    link.href = url; link.hidden = false;
    link.download = `voxfit-${voice}.wav`;
  }
  let records = [];
  try { records = await refreshRecent(); } catch (e) { /* shown already */ }
  const record = records.find((r) => r.id === last.id);
  if (record && record.status !== "ok" && record.status !== "cancelled") {
    last.error = record.error || record.status;
    showError(`The request ended early: ${last.error}`);
  }
  if (last.bytes) {
    const m = record ? `; RTF ${fmt(record.rtf, 3)}, queue wait ${fmt(record.queue_wait_seconds, 3)} s` : "";
    $("status").textContent = `${last.error === "stopped" ? "Stopped after" : "Spoke"} ${fmt(last.seconds)} s of audio (${bytes(last.bytes)}), first audio after ${fmt(last.firstAudioMs, 0)} ms${m}.`;
  } else $("status").textContent = "";
  refreshSystem();
  schedulePoll();
}

// -- start -------------------------------------------------------------------------------

async function start() {
  try {
    const [voices, plans] = await Promise.all([getJSON("/v1/audio/voices"), getJSON("/v1/plan")]);
    state.voices = voices.voices.filter((v) => !v.alias_of); // aliases speak as one of these
    state.plans = plans.voices;
    state.follow = plans.load_follow;
    const select = $("voice");
    select.replaceChildren(...state.voices.map((v) => el("option", { value: v.voice, text: `${v.voice} (${v.device})` })));
    select.value = voices.default;
    $("server-line").textContent = `${state.voices.length} voice${state.voices.length === 1 ? "" : "s"}; formats ${voices.formats.join(", ")}`;
    await selectVoice(select.value);
    await refreshRecent();
    refreshSystem();
    schedulePoll();
    window.voxfitPage.ready = true;
  } catch (e) {
    if (!$("key-form").hidden) return; // waiting for the key
    showError(e.message);
  }
}

$("speak-form").addEventListener("submit", (event) => { event.preventDefault(); speak(); });
$("text").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { event.preventDefault(); speak(); }
});
$("text").addEventListener("input", updateCount);
$("speed").addEventListener("input", () => { $("speed-out").textContent = Number($("speed").value).toFixed(2); syncSpeed(); });
$("voice").addEventListener("change", () => selectVoice($("voice").value).catch((e) => showError(e.message)));
$("stop").addEventListener("click", () => { if (state.abort) state.abort.abort(); });
start();
