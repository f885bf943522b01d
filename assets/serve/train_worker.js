// The Train panel's Web Worker: runs mnist-gpu's fused training step (shaders/fused.wgsl, as
// served by /api/shaders/) on the browser's WebGPU, off the page's thread so that drawing
// stays answered.
//
// It decides nothing about the run. The server computes a plan with the native trainer's own
// code (src/gpu/plan.rs driven by src/train.rs): the override constants, the buffers and bind
// groups, the initial parameters, and per step its 256-byte uniform slot, shifts or warps
// (--augment affine|elastic: the records and fields, as the native trainer uploads them) and
// workgroup counts. This file uploads, records the dispatches (two a step, three with
// augment; up to 64 steps a submit) and reads back only at progress points.
//
// Messages in:  {type: "start", options, state?}, {type: "pause"}, {type: "resume"},
//               {type: "stop"}, {type: "compile"} (build every shader and pipeline, report),
//               {type: "check"} (the fixed runs of "Check this GPU", against the CPU's trace),
//               {type: "classify", id, pixels} (one image's logits with the page's model),
//               {type: "lose-device"} (destroys the device, as a lost one: for tests).
// Messages out: {type: "adapter", info}, {type: "progress", ...}, {type: "done", ...},
//               {type: "tested", run, images, accuracy, loss} (after "done": the network
//               scored on the server's test digits), {type: "error", message},
//               {type: "compiled", ...}.

"use strict";

const STEPS_PER_PLAN = 512;
let gpu = null;          // {adapter, device, info}
let data = null;         // {images: Uint8Array, labels: Uint8Array}
let testSet = null;      // the same, of the test digits
let runs = 0;            // runs started, to tell a late "tested" from the current run's
let run = null;          // the run in progress
let paused = false;
let stopped = false;
let wake = null;
let model = null;         // the page's network: {device, built, setup} of the last run

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

async function openDevice() {
  if (gpu) return gpu;
  if (!self.navigator.gpu) {
    throw new Error("this browser has no WebGPU (Chrome or Edge 113+, Safari 26, Firefox 141 on Windows have it); the rest of the page works");
  }
  const adapter = await navigator.gpu.requestAdapter();
  if (!adapter) throw new Error("WebGPU offers no adapter here; the rest of the page works");
  const limits = {};
  for (const name of ["maxStorageBufferBindingSize", "maxBufferSize", "maxComputeWorkgroupStorageSize", "maxStorageBuffersPerShaderStage"]) {
    limits[name] = adapter.limits[name];
  }
  const device = await adapter.requestDevice({ requiredLimits: limits });
  const info = adapter.info || {};
  const described = {
    vendor: info.vendor || "", architecture: info.architecture || "", device: info.device || "",
    description: info.description || "",
    software: /swiftshader|llvmpipe|lavapipe|software|warp/i.test([info.vendor, info.architecture, info.device, info.description].join(" ")),
    workgroup_storage: device.limits.maxComputeWorkgroupStorageSize,
  };
  gpu = { adapter, device, info: described, lost: false };
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

async function fetchOk(url, init) {
  const response = await fetch(url, init);
  if (!response.ok) {
    let text = await response.text();
    try { text = JSON.parse(text).error || text; } catch (_) { /* plain text */ }
    throw new Error(`${url}: ${text}`);
  }
  return response;
}

async function trainingData() {
  if (data) return data;
  const [images, labels] = await Promise.all([
    fetchOk("/api/train/images").then((r) => r.arrayBuffer()),
    fetchOk("/api/train/labels").then((r) => r.arrayBuffer()),
  ]);
  data = { images: new Uint8Array(images), labels: new Uint8Array(labels) };
  return data;
}

async function testData() {
  if (testSet) return testSet;
  const [images, labels] = await Promise.all([
    fetchOk("/api/test/images").then((r) => r.arrayBuffer()),
    fetchOk("/api/test/labels").then((r) => r.arrayBuffer()),
  ]);
  testSet = { images: new Uint8Array(images), labels: new Uint8Array(labels) };
  return testSet;
}

async function fetchPlan(options, resume, from, storage, check) {
  const body = JSON.stringify({ options, resume, from, steps: STEPS_PER_PLAN, workgroup_storage: storage, check: !!check });
  const response = await fetchOk("/api/train/plan", { method: "POST", headers: { "content-type": "application/json" }, body });
  return response.json();
}

// A shader module, refused with the file and line of its first error.
async function shaderModule(device, file) {
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

const KINDS = {
  slot: { type: "uniform", hasDynamicOffset: true },
  uniform: { type: "uniform" },
  read: { type: "read-only-storage" },
  write: { type: "storage" },
};

// Pipelines, layouts, buffers and bind groups, as the plan's setup describes them.
async function build(device, setup, pool) {
  device.pushErrorScope("validation");
  const modules = {};
  for (const [, [file]] of Object.entries(setup.pipelines)) {
    if (!modules[file]) modules[file] = (await shaderModule(device, `${file}.wgsl`)).module;
  }
  const layouts = {};
  for (const [name, entries] of Object.entries(setup.layouts)) {
    layouts[name] = device.createBindGroupLayout({
      label: name,
      entries: entries.map(([binding, kind]) => ({ binding, visibility: GPUShaderStage.COMPUTE, buffer: KINDS[kind] })),
    });
  }
  const pipelines = {};
  for (const [name, [file, entryPoint, layout]] of Object.entries(setup.pipelines)) {
    pipelines[name] = await device.createComputePipelineAsync({
      label: name,
      layout: device.createPipelineLayout({ bindGroupLayouts: [layouts[layout]] }),
      compute: { module: modules[file], entryPoint, constants: file === "fused" ? setup.constants : {} },
    });
  }
  const U = GPUBufferUsage;
  const storage = U.STORAGE | U.COPY_DST | U.COPY_SRC;
  const sizes = Object.assign({}, setup.buffers, { images: pool.images.length, labels: 4 * pool.labels.length });
  const usage = { params: storage | U.UNIFORM, slots: U.UNIFORM | U.COPY_DST };
  const buffers = {};
  for (const [name, size] of Object.entries(sizes)) {
    const bytes = Math.max(16, Math.ceil(size / 16) * 16);
    buffers[name] = device.createBuffer({ label: name, size: bytes, usage: usage[name] || storage });
  }
  device.queue.writeBuffer(buffers.images, 0, pool.images);
  device.queue.writeBuffer(buffers.labels, 0, Uint32Array.from(pool.labels));
  const groups = {};
  for (const [name, group] of Object.entries(setup.groups)) {
    groups[name] = device.createBindGroup({
      label: name,
      layout: layouts[group.layout],
      entries: group.entries.map(([binding, buffer, offset, size]) => ({
        binding, resource: size ? { buffer: buffers[buffer], offset, size } : { buffer: buffers[buffer] },
      })),
    });
  }
  const error = await device.popErrorScope();
  if (error) throw new Error(`building the fused step in the browser: ${error.message}`);
  return { pipelines, buffers, groups };
}

// Every shader in shaders/ compiles, and the fused step's pipelines build (the page's test).
async function compileAll() {
  const { device } = await openDevice();
  const names = await (await fetchOk("/api/shaders")).json();
  const results = [];
  for (const name of names) {
    const { warnings } = await shaderModule(device, name);
    results.push({ name, warnings });
  }
  const plan = await fetchPlan({ hidden: [16, 8], iterations: 1, dev_size: 10 }, null, 0, device.limits.maxComputeWorkgroupStorageSize);
  const pool = await trainingData();
  await build(device, plan.setup, pool);
  self.postMessage({ type: "compiled", shaders: results, pipelines: Object.keys(plan.setup.pipelines) });
}

async function waitWhilePaused() {
  while (paused && !stopped) {
    self.postMessage({ type: "paused", step: run ? run.step : 0 });
    await new Promise((resolve) => { wake = resolve; });
    wake = null;
  }
}

// Executes one plan's commands.
async function execute(device, built, commands) {
  const { pipelines, buffers, groups } = built;
  for (const command of commands) {
    if (stopped) return;
    await waitWhilePaused();
    if (command.write) {
      device.queue.writeBuffer(buffers.indices, 4 * command.write.offset, Uint32Array.from(command.write.indices));
    } else if (command.submit) {
      const { slots, shifts, warps, dispatches } = command.submit;
      device.queue.writeBuffer(buffers.slots, 0, Uint32Array.from(slots));
      if (shifts.length) device.queue.writeBuffer(buffers.shifts, 0, Int32Array.from(shifts));
      // Each region at its start, in floats.
      for (const [start, floats] of warps) device.queue.writeBuffer(buffers.warps, 4 * start, Float32Array.from(floats));
      const encoder = device.createCommandEncoder();
      const pass = encoder.beginComputePass();
      for (const [pipeline, group, slot, [x, y, z]] of dispatches) {
        pass.setPipeline(pipelines[pipeline]);
        pass.setBindGroup(0, groups[group], [slot * run.slotBytes]);
        pass.dispatchWorkgroups(x, y, z);
        if (pipeline === "update") run.step += 1;
      }
      pass.end();
      device.queue.submit([encoder.finish()]);
      run.submits += 1;
      run.dispatches += dispatches.length;
    } else if (command.read_dev) {
      run.dev = await readBack(device, built, command.read_dev.labels);
    } else if (command.progress) {
      report(command.progress);
    }
  }
}

// The dev logits, the history ring and the parameters, read at a progress point.
async function readBack(device, built, labels) {
  const { buffers } = built;
  const n = labels.length;
  const parts = [["logits", 40 * n], ["history", 8 * run.historySlots], ["params", 4 * run.paramFloats], ["state", run.stateBytes]];
  const encoder = device.createCommandEncoder();
  const staging = parts.map(([name, size]) => {
    const bytes = Math.max(16, Math.ceil(size / 16) * 16);
    const buffer = device.createBuffer({ size: bytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    encoder.copyBufferToBuffer(buffers[name], 0, buffer, 0, bytes);
    return buffer;
  });
  device.queue.submit([encoder.finish()]);
  await Promise.all(staging.map((b) => b.mapAsync(GPUMapMode.READ)));
  const [logits, history, params, state] = staging.map((b) => new Float32Array(b.getMappedRange().slice(0)));
  staging.forEach((b) => b.destroy());
  run.history = history;
  run.params = params.slice(0, run.paramFloats);
  run.state = state;
  return score(logits, labels);
}

// The mean cross-entropy and the accuracy of `labels.length` columns of 10 logits; null for
// none.
function score(logits, labels) {
  const n = labels.length;
  let loss = 0;
  let correct = 0;
  for (let j = 0; j < n; j++) {
    const z = logits.subarray(10 * j, 10 * j + 10);
    let max = -Infinity, best = 0;
    for (let k = 0; k < 10; k++) if (z[k] > max) { max = z[k]; best = k; }
    let sum = 0;
    for (let k = 0; k < 10; k++) sum += Math.exp(z[k] - max);
    loss += Math.log(sum) + max - z[labels[j]];
    if (best === labels[j]) correct += 1;
  }
  return n ? { loss: loss / n, accuracy: correct / n } : null;
}

// The epoch step `step` falls in; null in full-batch mode.
function epochOf(step) {
  return run.options.batch_size ? Math.ceil(step / run.stepsPerEpoch) : null;
}

function report(progress) {
  let loss = 0, correct = 0, samples = 0;
  for (const [slot, m] of progress.window) {
    loss += run.history[2 * slot];
    correct += run.history[2 * slot + 1];
    samples += m;
  }
  const seconds = (performance.now() - run.started) / 1000;
  run.samples += samples;
  const message = {
    type: "progress",
    step: progress.step,
    steps: run.total,
    epoch: epochOf(progress.step),
    epochs: run.options.batch_size ? run.epochs : null,
    alpha: progress.alpha,
    loss: samples ? loss / samples : null,
    accuracy: samples ? correct / samples : null,
    dev_loss: run.dev ? run.dev.loss : null,
    dev_accuracy: run.dev ? run.dev.accuracy : null,
    samples_per_second: run.samples / Math.max(seconds, 1e-9),
    seconds,
    submits: run.submits,
    dispatches: run.dispatches,
    params: run.params,
    state: run.state,
  };
  run.saved = { step: progress.step, params: run.params, state: run.state };
  run.losses.push(message.loss);
  if (!run.check) self.postMessage(message);
}

// Trains (the check's runs with `check`: quietly, returning every step's loss and the final
// parameters).
async function train(options, resume, check) {
  const { device } = await openDevice();
  const pool = await trainingData();
  const storage = device.limits.maxComputeWorkgroupStorageSize;
  let plan = await fetchPlan(options, resume, null, storage, check);
  const setup = plan.setup;
  const built = await build(device, setup, pool);
  if (!check) model = { device, built, setup };
  run = {
    options: plan.options, total: plan.total, stepsPerEpoch: plan.steps_per_epoch, epochs: plan.epochs,
    step: 0, id: (runs += 1),
    slotBytes: setup.slot_bytes, historySlots: setup.history_slots, paramFloats: setup.param_floats,
    stateBytes: setup.buffers.state, started: performance.now(), samples: 0, submits: 0, dispatches: 0,
    history: null, params: null, state: null, dev: null, saved: null, check: !!check, losses: [],
  };
  device.queue.writeBuffer(built.buffers.params, 0, Float32Array.from(plan.params));
  if (plan.state) device.queue.writeBuffer(built.buffers.state, 0, Float32Array.from(plan.state));
  run.step = plan.from;
  for (;;) {
    await execute(device, built, plan.commands);
    if (stopped || plan.next >= plan.total) break;
    plan = await fetchPlan(options, resume, plan.next, storage, check);
  }
  await device.queue.onSubmittedWorkDone();
  if (check) return { losses: run.losses, params: run.params };
  const seconds = (performance.now() - run.started) / 1000;
  self.postMessage({
    type: "done", run: run.id, stopped, step: run.step, steps: run.total, epoch: epochOf(run.step),
    epochs: run.options.batch_size ? run.epochs : null, seconds, params: run.params,
    submits: run.submits, dispatches: run.dispatches,
  });
  await evaluateTest(run.id);
}

// The network as the run left it, scored on the test digits (their labelled ones): chunk by
// chunk, each written to `shifted` and classified with the `logits` kernel as
// `Fused::classify` does (the plan's chunk; the last padded with blank images, whose logits
// are left out), the logits gathered in one buffer and read once.
async function evaluateTest(id) {
  const { device, built, setup } = model;
  const test = await testData();
  const n = Math.min(test.labels.length, test.images.length / 784);
  const images = test.images.length / 784;
  if (!n) {
    self.postMessage({ type: "tested", run: id, images, labelled: 0, accuracy: null, loss: null });
    return;
  }
  const { pipelines, buffers, groups } = built;
  const chunk = setup.classify_chunk;
  const staging = device.createBuffer({ size: Math.ceil(40 * n / 16) * 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const pixels = new Uint8Array(784 * chunk.images);
  for (let start = 0; start < n; start += chunk.images) {
    const m = Math.min(chunk.images, n - start);
    pixels.fill(0);
    pixels.set(test.images.subarray(784 * start, 784 * (start + m)));
    device.queue.writeBuffer(buffers.shifted, 0, pixels);
    device.queue.writeBuffer(buffers.slots, 0, Uint32Array.from(chunk.slot));
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    pass.setPipeline(pipelines.logits);
    pass.setBindGroup(0, groups.shifted, [0]);
    pass.dispatchWorkgroups(chunk.groups, 1, 1);
    pass.end();
    encoder.copyBufferToBuffer(buffers.logits, 0, staging, 40 * start, 40 * m);
    device.queue.submit([encoder.finish()]);
  }
  await staging.mapAsync(GPUMapMode.READ);
  const logits = new Float32Array(staging.getMappedRange().slice(0, 40 * n));
  staging.destroy();
  const scored = score(logits, test.labels.subarray(0, n));
  self.postMessage({ type: "tested", run: id, images, labelled: n, accuracy: scored.accuracy, loss: scored.loss });
}

// "Check this GPU": the fixed runs, each step's loss and the final parameters compared with
// the CPU reference's trace (the server's) within atol + rtol·|reference|.
async function check() {
  const trace = await (await fetchOk("/api/check")).json();
  const tol = trace.tolerance;
  let worst = null;
  let pass = true;
  const failures = [];
  const judge = (what, got, want, atol, rtol) => {
    const ratio = Math.abs(got - want) / (atol + rtol * Math.abs(want));
    if (!(ratio <= 1)) { pass = false; failures.push(what); }
    if (!worst || !(ratio <= worst.ratio)) worst = { what, got, want, deviation: Math.abs(got - want), ratio };
  };
  for (const c of trace.cases) {
    self.postMessage({ type: "checking", what: c.what });
    const result = await train(c.options, null, true);
    if (stopped) return;
    if (result.losses.length !== c.losses.length) throw new Error(`${c.what}: ${result.losses.length} steps, the reference ${c.losses.length}`);
    c.losses.forEach((want, i) => judge(`${c.what}: the loss of step ${i + 1}`, result.losses[i], want, tol.loss_atol, tol.loss_rtol));
    c.params.forEach((want, i) => {
      const t = c.tensors.find(([, at, rows, , row]) => i >= at && i < at + rows * row);
      if (!t) return; // padding
      const [name, at, , cols, row] = t;
      const r = Math.floor((i - at) / row), k = (i - at) % row;
      if (k >= cols) return;
      judge(`${c.what}: ${name}[${r}${cols > 1 ? `, ${k}` : ""}] at the end`, result.params[i], want, tol.atol, tol.rtol);
    });
  }
  self.postMessage({ type: "checked", pass, worst, failures: failures.length, first_failures: failures.slice(0, 5), adapter: gpu && gpu.info });
}

// One image's logits from the page's network, with the fused step's `logits` kernel (as
// `Fused::classify`: the image in the shifted-images buffer, the plan's slot for it).
async function classify(id, pixels) {
  if (!model) {
    self.postMessage({ type: "classified", id, logits: null });
    return;
  }
  const { device, built, setup } = model;
  const { pipelines, buffers, groups } = built;
  device.queue.writeBuffer(buffers.shifted, 0, Uint8Array.from(pixels, (p) => Math.round(p)));
  device.queue.writeBuffer(buffers.slots, 0, Uint32Array.from(setup.classify_slot));
  const staging = device.createBuffer({ size: 48, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const encoder = device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  pass.setPipeline(pipelines.logits);
  pass.setBindGroup(0, groups.shifted, [0]);
  pass.dispatchWorkgroups(1, 1, 1);
  pass.end();
  encoder.copyBufferToBuffer(buffers.logits, 0, staging, 0, 48);
  device.queue.submit([encoder.finish()]);
  await staging.mapAsync(GPUMapMode.READ);
  const logits = Array.from(new Float32Array(staging.getMappedRange().slice(0, 40)));
  staging.destroy();
  self.postMessage({ type: "classified", id, logits });
}
