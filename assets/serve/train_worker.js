// The Train panel's Web Worker: carries out, on the browser's WebGPU, the GPU work that
// mnist-gpu's own GPU backend records (src/gpu/recording.rs), off the page's thread so that
// drawing stays answered.
//
// It decides nothing about the run. The server drives the native training loop with the GPU
// backend for this adapter's limits and sends what the backend recorded (src/cli/serve/plan.rs
// says the form): buffers, layouts, pipelines and bind groups to make, then writes, dispatches,
// copies and submits, and marks where a progress point reads its numbers (computed on the
// device by the project's kernels) and what each is. This file makes, writes, dispatches,
// copies, submits and reads as told; it holds no formula, constant or shape of its own.
//
// Messages in:  {type: "start", options, resume?}, {type: "pause"}, {type: "resume"},
//               {type: "stop"}, {type: "compile"} (build every shader and both engines'
//               pipelines, report), {type: "check"} (the fixed runs of "Check this GPU",
//               against the CPU's trace), {type: "classify", id, pixels} (one image's
//               probabilities with the page's network), {type: "lose-device"} (destroys the
//               device, as a lost one: for tests).
// Messages out: {type: "adapter", info}, {type: "progress", ...}, {type: "done", ...},
//               {type: "tested", run, images, labelled, accuracy, loss} (after "done": the
//               network scored on the server's test digits), {type: "error", message},
//               {type: "compiled", ...}, {type: "classified", id, probabilities}.

"use strict";

const STEPS_PER_PLAN = 512;
let gpu = null;          // {adapter, device, info}
let runs = 0;            // runs started, to tell a late "tested" from the current run's
let run = null;          // the run in progress
let paused = false;
let stopped = false;
let wake = null;
let model = null;        // the page's network: the machine and templates of the last run
const files = {};        // the server's files, by URL (the pool's parts)

self.onmessage = async (event) => {
  const msg = event.data;
  try {
    if (msg.type === "start") {
      stopped = false;
      paused = false;
      await train(msg.options, msg.resume === undefined ? null : msg.resume);
    } else if (msg.type === "pause") {
      paused = true;
    } else if (msg.type === "resume") {
      paused = false;
      if (wake) wake();
    } else if (msg.type === "stop") {
      stopped = true;
      paused = false;
      if (wake) wake();
    } else if (msg.type === "compile") {
      await compileAll();
    } else if (msg.type === "lose-device") {
      // As a driver reset or a GPU removed would (the tests' way to lose the device).
      if (gpu) gpu.device.destroy();
    } else if (msg.type === "classify") {
      await classify(msg.id, msg.pixels);
    } else if (msg.type === "check") {
      stopped = false;
      paused = false;
      await check();
    }
  } catch (error) {
    self.postMessage({ type: "error", message: String((error && error.message) || error), state: run && run.saved });
  }
};

const LIMITS = ["maxStorageBufferBindingSize", "maxBufferSize", "maxComputeWorkgroupStorageSize", "maxStorageBuffersPerShaderStage"];

async function openDevice() {
  if (gpu) return gpu;
  if (!self.navigator.gpu) {
    throw new Error("this browser has no WebGPU (Chrome or Edge 113+, Safari 26, Firefox 141 on Windows have it); the rest of the page works");
  }
  const adapter = await navigator.gpu.requestAdapter();
  if (!adapter) throw new Error("WebGPU offers no adapter here; the rest of the page works");
  const requiredLimits = {};
  for (const name of LIMITS) requiredLimits[name] = adapter.limits[name];
  const device = await adapter.requestDevice({ requiredLimits });
  const info = adapter.info || {};
  const described = {
    vendor: info.vendor || "", architecture: info.architecture || "", device: info.device || "",
    description: info.description || "",
    software: /swiftshader|llvmpipe|lavapipe|software|warp/i.test([info.vendor, info.architecture, info.device, info.description].join(" ")),
    workgroup_storage: device.limits.maxComputeWorkgroupStorageSize,
  };
  gpu = { adapter, device, info: described, modules: {} };
  device.lost.then((lost) => {
    stopped = true;
    if (wake) wake();
    const message = `the GPU device was lost (${lost.reason}: ${lost.message}); the last progress point is kept: start again to continue`;
    gpu = null;
    self.postMessage({ type: "error", message, lost: true, state: run && run.saved });
  });
  self.postMessage({ type: "adapter", info: described });
  return gpu;
}

// What the server's recordings may use of this adapter.
function limits(device) {
  return {
    workgroup_storage: device.limits.maxComputeWorkgroupStorageSize,
    storage_binding: device.limits.maxStorageBufferBindingSize,
    buffer: device.limits.maxBufferSize,
  };
}

async function fetchOk(url, init) {
  const response = await fetch(url, init);
  if (!response.ok) {
    let text = await response.text();
    try { text = JSON.parse(text).error || text; } catch (_) { /* plain text */ }
    throw new Error(`${url}: ${text}`);
  }
  return response;
}

async function file(url) {
  if (!files[url]) files[url] = new Uint8Array(await (await fetchOk(url)).arrayBuffer());
  return files[url];
}

// A plan: its JSON header (the length first, a little-endian u32) and the blob after it.
async function fetchPlan(request) {
  const body = JSON.stringify(Object.assign({ steps: STEPS_PER_PLAN }, request));
  const response = await fetchOk("/api/train/plan", { method: "POST", headers: { "content-type": "application/json" }, body });
  const bytes = await response.arrayBuffer();
  const length = new DataView(bytes).getUint32(0, true);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(bytes, 4, length)));
  const blob = new Uint8Array(bytes, Math.ceil((4 + length) / 4) * 4);
  return { header, blob };
}

// A shader module, refused with the file and line of its first error.
async function shaderModule(device, name) {
  const file = `${name}.wgsl`;
  const code = await (await fetchOk(`/api/shaders/${file}`)).text();
  const module = device.createShaderModule({ label: file, code });
  const info = await module.getCompilationInfo();
  const errors = info.messages.filter((m) => m.type === "error");
  if (errors.length) {
    const m = errors[0];
    throw new Error(`shaders/${file}:${m.lineNum}:${m.linePos}: ${m.message}`);
  }
  return { module, warnings: info.messages.length - errors.length };
}

const ACCESS = {
  slot: { type: "uniform", hasDynamicOffset: true },
  uniform: { type: "uniform" },
  read: { type: "read-only-storage" },
  write: { type: "storage" },
};

const USAGE = {
  storage: GPUBufferUsage.STORAGE,
  uniform: GPUBufferUsage.UNIFORM,
  "storage+uniform": GPUBufferUsage.STORAGE | GPUBufferUsage.UNIFORM,
};

// The device's side of a run: its resources by the numbers the recording gives them, and the
// submit being recorded.
class Machine {
  constructor(device) {
    Object.assign(this, { device, buffers: [], layouts: [], pipelines: [], groups: [], labels: [], encoder: null, pass: null });
  }

  // The bytes of a write: from the plan's blob, the pool's files, or the caller's input.
  source(source, plan, input) {
    if (source === "input") return input;
    if (source === "images" || source === "labels") return plan.pool[source];
    const [, at, bytes] = source;
    return plan.blob.subarray(at, at + bytes);
  }

  async make(command) {
    const [kind, id] = command;
    const table = { buffer: this.buffers, layout: this.layouts, pipeline: this.pipelines, group: this.groups }[kind];
    if (table[id]) return;
    const d = this.device;
    if (kind === "buffer") {
      const [, , label, size, usage] = command;
      table[id] = d.createBuffer({ label, size, usage: USAGE[usage] | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
    } else if (kind === "layout") {
      const [, , label, entries] = command;
      table[id] = d.createBindGroupLayout({ label, entries: entries.map(([binding, access]) => ({ binding, visibility: GPUShaderStage.COMPUTE, buffer: ACCESS[access] })) });
    } else if (kind === "pipeline") {
      const [, , label, shader, entryPoint, layout, constants] = command;
      if (!gpu.modules[shader]) gpu.modules[shader] = (await shaderModule(d, shader)).module;
      this.labels.push(label);
      table[id] = await d.createComputePipelineAsync({
        label, layout: d.createPipelineLayout({ bindGroupLayouts: [this.layouts[layout]] }),
        compute: { module: gpu.modules[shader], entryPoint, constants },
      });
    } else {
      const [, , label, layout, entries] = command;
      table[id] = d.createBindGroup({
        label, layout: this.layouts[layout],
        entries: entries.map(([binding, buffer, offset, size]) => ({
          binding, resource: size === null ? { buffer: this.buffers[buffer], offset } : { buffer: this.buffers[buffer], offset, size },
        })),
      });
    }
  }

  // Carries out `commands` (a plan's, or a template's with `input`); `onMark` gets each mark.
  // A run's plan (`paced`) pauses and stops between submits.
  async execute(commands, plan, input, onMark, paced) {
    const d = this.device;
    d.pushErrorScope("validation");
    for (const command of commands) {
      const kind = command[0];
      if (kind === "write") {
        const [, buffer, offset, source] = command;
        d.queue.writeBuffer(this.buffers[buffer], offset, this.source(source, plan, input));
      } else if (kind === "dispatch") {
        const [, pipeline, group, offset, x, y, z] = command;
        if (!this.encoder) this.encoder = d.createCommandEncoder();
        if (!this.pass) this.pass = this.encoder.beginComputePass();
        this.pass.setPipeline(this.pipelines[pipeline]);
        this.pass.setBindGroup(0, this.groups[group], offset === null ? [] : [offset]);
        this.pass.dispatchWorkgroups(x, y, z);
      } else if (kind === "copy") {
        const [, from, fromOffset, to, toOffset, bytes] = command;
        this.endPass();
        if (!this.encoder) this.encoder = d.createCommandEncoder();
        this.encoder.copyBufferToBuffer(this.buffers[from], fromOffset, this.buffers[to], toOffset, bytes);
      } else if (kind === "submit") {
        this.endPass();
        if (this.encoder) d.queue.submit([this.encoder.finish()]);
        this.encoder = null;
        if (run) [run.submits, run.done, run.doneEpoch] = [run.submits + 1, run.step, run.epoch];
        // Only between submits: a write and the submit it precedes stay together.
        if (paced) await waitWhilePaused();
        if (paced && stopped) break;
      } else if (kind === "step") {
        // The steps recorded so far; `run.done`: those submitted (all, where none waits).
        if (run) [run.step, run.epoch] = [command[1], command[2]];
        if (run && !this.encoder) [run.done, run.doneEpoch] = [run.step, run.epoch];
      } else if (kind === "mark") {
        await this.check();
        await onMark(command[1], await this.read(plan, command[1]));
        d.pushErrorScope("validation");
      } else {
        await this.make(command);
      }
    }
    await this.check();
  }

  endPass() {
    if (this.pass) this.pass.end();
    this.pass = null;
  }

  async check() {
    const error = await this.device.popErrorScope();
    if (error) throw new Error(`carrying out the plan in the browser: ${error.message}`);
  }

  // The regions a mark reads, by name: their floats.
  async read(plan, mark) {
    const names = [...new Set([...Object.values(mark.numbers || {}).map(([name]) => name), ...Object.values(mark.arrays || {})])];
    const regions = names.flatMap((name) => plan.regions[name].map((r) => [name, ...r]));
    const total = regions.reduce((sum, r) => sum + r[3], 0);
    const values = {};
    if (!total) return values;
    const staging = this.device.createBuffer({ size: Math.ceil(total / 4) * 4, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const encoder = this.device.createCommandEncoder();
    let at = 0;
    for (const [, buffer, offset, bytes] of regions) {
      encoder.copyBufferToBuffer(this.buffers[buffer], offset, staging, at, bytes);
      at += bytes;
    }
    this.device.queue.submit([encoder.finish()]);
    await staging.mapAsync(GPUMapMode.READ);
    const floats = new Float32Array(staging.getMappedRange().slice(0));
    staging.destroy();
    at = 0;
    for (const name of names) {
      const bytes = plan.regions[name].reduce((sum, r) => sum + r[2], 0);
      values[name] = floats.slice(at / 4, (at + bytes) / 4);
      at += bytes;
    }
    return values;
  }
}

// A mark's report with its numbers and arrays filled in from what was read.
function reported(mark, values) {
  const out = Object.assign({}, mark.report);
  for (const [key, [name, index]] of Object.entries(mark.numbers || {})) out[key] = values[name][index];
  for (const [key, name] of Object.entries(mark.arrays || {})) out[key] = values[name];
  return out;
}

// The pool's files, as the plan says to put them together.
async function pool(parts) {
  const out = {};
  for (const [name, list] of Object.entries(parts)) {
    const pieces = [];
    for (const part of list) {
      const bytes = (await file(part.url)).subarray(0, part.bytes);
      pieces.push(part.widen === 4 ? new Uint8Array(Uint32Array.from(bytes).buffer) : bytes);
    }
    const joined = new Uint8Array(pieces.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of pieces) { joined.set(p, at); at += p.length; }
    out[name] = joined;
  }
  return out;
}

async function loadPlan(request) {
  const plan = await fetchPlan(request);
  Object.assign(plan, plan.header);
  plan.pool = await pool(plan.header.pool);
  return plan;
}

// Every shader in shaders/ compiles, and both engines' pipelines build (the page's test).
async function compileAll() {
  const { device } = await openDevice();
  const names = await (await fetchOk("/api/shaders")).json();
  const results = [];
  for (const name of names) {
    const { warnings } = await shaderModule(device, name.replace(/\.wgsl$/, ""));
    results.push({ name, warnings });
  }
  const pipelines = new Set();
  // The fused step (two hidden layers of 16 and 8), the per-operation kernels (80 units).
  for (const hidden of [[16, 8], [80]]) {
    const plan = await loadPlan({ options: { hidden, iterations: 1, dev_size: 10, augment: true }, from: 0, steps: 1, limits: limits(device) });
    const machine = new Machine(device);
    await machine.execute(plan.commands.filter((c) => c[0] !== "mark"), plan, null, null, false);
    machine.labels.forEach((l) => pipelines.add(l));
  }
  self.postMessage({ type: "compiled", shaders: results, pipelines: [...pipelines].sort() });
}

async function waitWhilePaused() {
  while (paused && !stopped) {
    self.postMessage({ type: "paused", step: run ? run.step : 0 });
    await new Promise((resolve) => { wake = resolve; });
    wake = null;
  }
}

function report(progress) {
  const seconds = (performance.now() - run.started) / 1000;
  const message = Object.assign({ type: "progress", samples_per_second: progress.samples / Math.max(seconds, 1e-9), seconds, submits: run.submits }, progress);
  run.saved = { step: progress.step, params: progress.params, state: progress.state };
  run.last = message;
  run.losses.push(message.loss);
  if (!run.check) self.postMessage(message);
}

// Trains (the check's runs with `check`: quietly, returning every step's loss and the final
// parameters).
async function train(options, resume, check) {
  const { device } = await openDevice();
  const request = { options, resume, limits: limits(device), check: !!check };
  let plan = await loadPlan(Object.assign({ from: null }, request));
  const machine = new Machine(device);
  run = {
    options: plan.options, total: plan.total, epochs: plan.options.batch_size ? plan.epochs : null,
    step: plan.from, done: plan.from, epoch: null, doneEpoch: null, id: (runs += 1), started: performance.now(), submits: 0,
    saved: null, last: null, check: !!check, losses: [],
  };
  if (!check) model = { machine, plan };
  for (;;) {
    await machine.execute(plan.commands, plan, null, async (mark, values) => report(reported(mark, values)), true);
    if (stopped || plan.next >= plan.total) break;
    plan = await loadPlan(Object.assign({ from: plan.next }, request));
    if (!check) model.plan = plan;
  }
  await device.queue.onSubmittedWorkDone();
  if (check) return { losses: run.losses, params: run.last && run.last.params };
  const seconds = (performance.now() - run.started) / 1000;
  self.postMessage({
    type: "done", run: run.id, stopped, step: run.done, steps: run.total, epoch: run.doneEpoch,
    epochs: run.epochs, seconds, params: run.last && run.last.params, submits: run.submits,
  });
  const id = run.id;
  await machine.execute(plan.templates.test.commands, plan, null, async (mark, values) => {
    self.postMessage(Object.assign({ type: "tested", run: id, accuracy: null, loss: null }, reported(mark, values)));
  }, false);
}

// "Check this GPU": the fixed runs of the server's trace, run here; the server judges every
// step's loss and the final parameters against the CPU reference's (POST /api/check).
async function check() {
  const trace = await (await fetchOk("/api/check")).json();
  const results = [];
  for (const c of trace.cases) {
    self.postMessage({ type: "checking", what: c.what });
    const result = await train(c.options, null, true);
    if (stopped) return;
    results.push({ losses: result.losses, params: Array.from(result.params || []) });
  }
  const body = JSON.stringify({ results });
  const verdict = await (await fetchOk("/api/check", { method: "POST", headers: { "content-type": "application/json" }, body })).json();
  self.postMessage(Object.assign({ type: "checked", adapter: gpu && gpu.info }, verdict));
}

// One image's probabilities from the page's network: the plan's template, the image its input.
async function classify(id, pixels) {
  if (!model) {
    self.postMessage({ type: "classified", id, probabilities: null });
    return;
  }
  const { machine, plan } = model;
  const template = plan.templates.classify;
  const mark = { numbers: {}, arrays: { probabilities: template.read } };
  await machine.execute(template.commands, plan, Uint8Array.from(pixels, (p) => Math.round(p)), null, false);
  const probabilities = Array.from((await machine.read(plan, mark)).probabilities);
  self.postMessage({ type: "classified", id, probabilities });
}
