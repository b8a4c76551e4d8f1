// Perception viewer: send a still, a video or the webcam to the service and draw what comes back.
//
// Stills go to POST /v1/perceive; video and webcam frames go over WS /v1/stream as JPEG, one
// frame in flight at a time (frames presented while one is in flight are skipped: newest wins).
// Each result is drawn on the very frame that was sent, so the overlay always lines up.
// Read top to bottom: what to ask for (outputs, API key), server status, inputs, a still, a
// stream, drawing, the status strip.
"use strict";

const ALL_OUTPUTS = "detections,masks,lanes,plan,bev";
const BASIC_OUTPUTS = "detections,masks,lanes";   // a server without a camera or planner
const JPEG_QUALITY = 0.85;
const MAX_STREAM_WIDTH = 1280;   // larger video frames are scaled down before sending
const READY_POLL_MS = 2000;
const FPS_WINDOW_MS = 3000;
const BEV_DEFAULT = { x_range: [0, 40], y_range: [-10, 10] };   // metres, when no bev is sent

const MASK_COLOURS = { drivable: [46, 204, 113, 90], lanes: [255, 210, 63, 235] };
const CATEGORY_COLOURS = {
  car: "#4fc3f7", truck: "#b388ff", bus: "#b388ff", person: "#ff8a65", bicycle: "#ffd54f",
  motorcycle: "#ffd54f", traffic_light: "#69f0ae", stop_sign: "#ff5252",
};
const OTHER_COLOUR = "#cfd8dc";
const IN_PATH_COLOUR = "#ff3d00";   // a road user in the ego path: this colour, a thicker box
const EGO_BOUNDARY_COLOUR = "#00e5ff";   // the ego lane's left and right lines
const OTHER_BOUNDARY_COLOUR = "#eceff1";
const PATH_COLOUR = "#ff4fd8";
const DISTANCE_SOURCES = {
  ground: "where the box meets the road", size: "the class's typical size",
  both: "where the box meets the road and the typical size, agreeing",
};
const PLAN_PILLS = { ok: "pill-ok", degraded: "pill-warn", safe_stop: "pill-bad" };

const $ = (id) => document.getElementById(id);
const frameCanvas = $("frame-canvas");
const overlayCanvas = $("overlay-canvas");
const bevCanvas = $("bev-canvas");

// What is on screen now, kept so that toggling a layer can redraw it.
const shown = { result: null, picture: null, masks: {}, bev: null };
const stats = { results: 0, times: [], clientSkipped: 0, serverDropped: 0 };
let serverReady = false;
let outputs = ALL_OUTPUTS;
let noPlanReason = null;   // the server's words when it cannot plan
let apiKey = sessionStorage.getItem("perception-api-key") || "";

// A server started with --api-key-file answers 401 on /v1/*: ask for the key, once per tab.
function keyHeaders() {
  return apiKey ? { "x-api-key": apiKey } : {};
}

function askForKey() {
  $("key-form").hidden = false;
  $("api-key").focus();
}

function useKey(event) {
  event.preventDefault();
  const key = $("api-key").value.trim();
  if (key === apiKey) return;
  apiKey = key;
  sessionStorage.setItem("perception-api-key", apiKey);
  clearMessage();
  loadModels();
}
$("key-form").addEventListener("submit", useKey);
$("api-key").addEventListener("change", useKey);

// A server that cannot plan for this source (started without --camera, or its camera is for
// another frame size) answers 400 with a message that says so. Then ask this source only for
// detections and masks, and show that message in the bird's-eye panel.
function dropPlanOutputs(status, message) {
  if (outputs === BASIC_OUTPUTS || status !== 400 || !/\b(plan|bev|camera)\b/i.test(message)) {
    return false;
  }
  outputs = BASIC_OUTPUTS;
  noPlanReason = message;
  return true;
}

function newSource(name) {
  outputs = ALL_OUTPUTS;
  noPlanReason = null;
  $("source-name").textContent = name;
}

// ---------------------------------------------------------------------------------------------
// Server status: readiness is polled; model names are fetched once the server is ready.

async function pollReadiness() {
  const pill = $("ready");
  try {
    const response = await fetch("/readyz", { cache: "no-store" });
    const body = await response.json().catch(() => ({}));
    serverReady = response.ok;
    if (response.ok) {
      setPill(pill, "server ready", "pill-ok");
      if ($("models").dataset.loaded !== "1") await loadModels();
    } else {
      setPill(pill, `server ${body.status || "not ready"}`, "pill-warn");
    }
  } catch {
    serverReady = false;
    setPill(pill, "server unreachable", "pill-bad");
  }
  setTimeout(pollReadiness, READY_POLL_MS);
}

async function loadModels() {
  try {
    const response = await fetch("/v1/models", { headers: keyHeaders() });
    if (response.status === 401) {
      $("models").textContent = "API key needed";
      askForKey();
    }
    if (!response.ok) return;
    const { models } = await response.json();
    $("models").textContent = models.map((m) => m.name).join(", ") || "none";
    $("models").title = models.map((m) => `${m.name}: ${m.task}`).join("\n");
    $("models").dataset.loaded = "1";
  } catch {
    // The readiness poll reports an unreachable server; the names come on the next poll.
  }
}

function setPill(element, text, kind) {
  element.textContent = text;
  element.className = `pill ${kind}`;
}

// ---------------------------------------------------------------------------------------------
// Inputs: the file picker, drag and drop anywhere on the page, the webcam and stop.

$("open").addEventListener("click", () => $("file-input").click());
$("file-input").addEventListener("change", (event) => {
  const file = event.target.files[0];
  event.target.value = "";   // picking the same file again still fires "change"
  if (file) openFile(file);
});

document.addEventListener("dragover", (event) => {
  event.preventDefault();
  $("view").classList.add("dragging");
});
document.addEventListener("dragleave", (event) => {
  if (event.relatedTarget === null) $("view").classList.remove("dragging");
});
document.addEventListener("drop", (event) => {
  event.preventDefault();
  $("view").classList.remove("dragging");
  const file = event.dataTransfer.files[0];
  if (file) openFile(file);
});

$("webcam").addEventListener("click", startWebcam);
$("stop").addEventListener("click", () => stopStream("Stopped."));
window.addEventListener("resize", drawBev);
for (const id of ["layer-drivable", "layer-lanes", "layer-boxes", "layer-path"]) {
  $(id).addEventListener("change", () => {
    drawOverlay();
    drawBev();
  });
}

function openFile(file) {
  newSource(file.name);
  $("source-name").title = `${file.name} (${file.type || "unknown type"}, ${file.size} bytes)`;
  if (file.type.startsWith("video/")) startVideo(file);
  else perceiveStill(file);   // anything else: the server says whether it can read it
}

// ---------------------------------------------------------------------------------------------
// A still: one POST with the file's bytes as the body. Only the latest still's answer is shown.

let stillTicket = 0;

async function perceiveStill(file) {
  const ticket = ++stillTicket;
  stopStream();
  clearMessage();
  if (!serverReady) showMessage("The server is not ready yet (models loading); trying anyway…", "info");
  setBusy(true);
  let picture = null;
  try {
    picture = await createImageBitmap(file);
  } catch {
    // The browser cannot decode it either; still ask the server, whose message says why.
  }
  try {
    let started, response, body;
    do {
      started = performance.now();
      response = await fetch(`/v1/perceive?outputs=${outputs}`, {
        method: "POST",
        headers: { "Content-Type": file.type || "application/octet-stream", ...keyHeaders() },
        body: file,
      });
      body = await response.json().catch(() => null);
    } while (!response.ok && body && dropPlanOutputs(response.status, body.error));
    if (ticket !== stillTicket || stream) return;   // another file was opened meanwhile
    if (!response.ok) {
      if (response.status === 401) askForKey();
      const reason = body && body.error ? body.error : `HTTP ${response.status}`;
      showMessage(`The server rejected ${file.name}: ${reason}`, "error");
      return;
    }
    clearMessage();
    await showResult(body, picture, performance.now() - started);
  } catch (error) {
    showMessage(`Could not reach the server: ${error.message}`, "error");
  } finally {
    if (ticket === stillTicket) setBusy(false);
  }
}

// ---------------------------------------------------------------------------------------------
// A stream: frames of a <video> (a file or the webcam) over the WebSocket, one in flight.

let stream = null;   // {socket, video, grab, sent, inFlight, opened, ended, onStop}

async function startVideo(file) {
  const video = document.createElement("video");
  video.muted = true;
  video.playsInline = true;
  video.src = URL.createObjectURL(file);
  const playable = await new Promise((resolve) => {
    video.onloadeddata = () => resolve(true);
    video.onerror = () => resolve(false);
  });
  if (!playable) {
    URL.revokeObjectURL(video.src);
    stopStream();
    showMessage(`This browser cannot play ${file.name} (${file.type}); try an MP4 (H.264) or WebM file.`, "error");
    return;
  }
  startStream(video, () => URL.revokeObjectURL(video.src));
}

async function startWebcam() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    showMessage("This browser offers no webcam here (it needs https or localhost).", "error");
    return;
  }
  let media;
  try {
    media = await navigator.mediaDevices.getUserMedia({ video: { width: 1280, height: 720 } });
  } catch (error) {
    showMessage(`No webcam: ${error.message}`, "error");
    return;
  }
  const video = document.createElement("video");
  video.muted = true;
  video.playsInline = true;
  video.srcObject = media;
  newSource("webcam");
  startStream(video, () => media.getTracks().forEach((track) => track.stop()));
}

function startStream(video, onStop) {
  stopStream();
  clearMessage();
  resetStats();
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const key = apiKey ? `&api_key=${encodeURIComponent(apiKey)}` : "";
  const socket = new WebSocket(`${scheme}://${location.host}/v1/stream?outputs=${outputs}${key}`);
  socket.binaryType = "arraybuffer";
  stream = { socket, video, grab: document.createElement("canvas"), sent: 0, inFlight: null,
             opened: false, ended: false, onStop };
  const mine = stream;
  socket.onmessage = (event) => onStreamMessage(mine, event.data);
  socket.onclose = async (event) => {
    if (stream !== mine) return;
    if (!mine.opened) {   // refused before the handshake: the browser is told no reason
      const check = await fetch("/v1/models", { headers: keyHeaders() }).catch(() => null);
      if (stream !== mine) return;
      const noKey = check !== null && check.status === 401;
      if (noKey) askForKey();
      finishStream(`The server refused the stream${noKey ? ": missing or wrong API key" : ""}.`);
      return;
    }
    const why = event.reason ? `: ${event.reason}` : "";
    finishStream(mine.ended ? null : `The server closed the stream (code ${event.code})${why}.`);
  };
  socket.onopen = () => {
    mine.opened = true;
    video.play().catch((error) => showMessage(`Cannot play: ${error.message}`, "error"));
    video.requestVideoFrameCallback(() => onVideoFrame(mine));
  };
  video.onended = () => {
    mine.ended = true;
    if (!mine.inFlight) finishStream(null);
  };
  $("stop").disabled = false;
  $("webcam").classList.toggle("live", video.srcObject !== null);
}

function onVideoFrame(current) {
  if (stream !== current) return;
  if (current.inFlight) stats.clientSkipped += 1;
  else sendFrame(current);
  updateStats();
  current.video.requestVideoFrameCallback(() => onVideoFrame(current));
}

async function sendFrame(current) {
  const { video, grab } = current;
  const scale = Math.min(1, MAX_STREAM_WIDTH / video.videoWidth);
  grab.width = Math.round(video.videoWidth * scale);
  grab.height = Math.round(video.videoHeight * scale);
  grab.getContext("2d").drawImage(video, 0, 0, grab.width, grab.height);
  const flight = { sequence: current.sent, picture: null, started: performance.now() };
  current.inFlight = flight;   // set before any await: no second frame may start meanwhile
  current.sent += 1;
  flight.picture = await createImageBitmap(grab);
  const jpeg = await new Promise((resolve) => grab.toBlob(resolve, "image/jpeg", JPEG_QUALITY));
  if (stream !== current || current.socket.readyState !== WebSocket.OPEN) return;
  current.socket.send(await jpeg.arrayBuffer());
}

async function onStreamMessage(current, data) {
  const message = JSON.parse(data);
  if (message.error && dropPlanOutputs(message.status, message.error)) {
    const onStop = current.onStop;   // reconnect without plan and bev, same video
    current.onStop = () => {};
    startStream(current.video, onStop);
    return;
  }
  if (message.error && message.sequence === undefined) {   // the stream itself was refused
    finishStream(`The server refused the stream: ${message.error}`);
    return;
  }
  const flight = current.inFlight;
  if (message.error) {
    showMessage(`Frame ${message.sequence ?? "?"} was rejected: ${message.error}`, "error");
  } else if (stream === current || current.ended) {
    stats.serverDropped += message.dropped || 0;
    await showResult(message, flight ? flight.picture : null,
                     flight ? performance.now() - flight.started : null);
  }
  current.inFlight = null;
  if (current.ended && stream === current) finishStream(null);
}

function finishStream(problem) {
  const current = stream;
  if (!current) return;
  stopStream();
  if (problem) showMessage(problem, "error");
  else if (current.ended) {
    showMessage(`Video finished: ${stats.results} frames analysed, ${stats.clientSkipped} skipped ` +
                "while the server was busy.", "info");
  }
}

function stopStream(note) {
  const current = stream;
  stream = null;
  if (current) {
    current.video.pause();
    if (current.socket.readyState <= WebSocket.OPEN) current.socket.close(1000, "viewer stopped");
    current.onStop();
    if (note) showMessage(note, "info");
  }
  $("stop").disabled = true;
  $("webcam").classList.remove("live");
}

// ---------------------------------------------------------------------------------------------
// Drawing a result: the frame, the overlay (masks, boxes, path), the bird's-eye panel, the
// control command, the list of detections and the status strip.

async function showResult(result, picture, roundTripMs) {
  const [drivable, lanes, bev] = await Promise.all([
    maskLayer(result.masks && result.masks.drivable, MASK_COLOURS.drivable),
    maskLayer(result.masks && result.masks.lanes, MASK_COLOURS.lanes),
    result.bev && result.bev.png ? decodePng(result.bev.png) : null,
  ]);
  Object.assign(shown, { result, picture, masks: { drivable, lanes }, bev });
  drawFrame();
  drawOverlay();
  drawBev();
  showControl(result.plan);
  showLane(result.ego_lane, result.camera_check);
  listDetections(result.detections || []);
  stats.results += 1;
  stats.times.push(performance.now());
  showTimings(result.timings_ms || {}, roundTripMs);
  updateStats();
  $("view").classList.remove("empty");
  document.body.dataset.results = String(stats.results);
}

function drawFrame() {
  const { result, picture } = shown;
  for (const canvas of [frameCanvas, overlayCanvas]) {
    canvas.width = result.width;
    canvas.height = result.height;
  }
  const context = frameCanvas.getContext("2d");
  context.fillStyle = "#000";
  context.fillRect(0, 0, result.width, result.height);
  if (picture) context.drawImage(picture, 0, 0, result.width, result.height);
}

function drawOverlay() {
  const { result, masks } = shown;
  if (!result) return;
  const context = overlayCanvas.getContext("2d");
  context.clearRect(0, 0, overlayCanvas.width, overlayCanvas.height);
  // Masks come at the model's resolution: stretched over the frame, nearest neighbour.
  context.imageSmoothingEnabled = false;
  for (const [layer, mask] of [["layer-drivable", masks.drivable], ["layer-lanes", masks.lanes]]) {
    if ($(layer).checked && mask) context.drawImage(mask, 0, 0, result.width, result.height);
  }
  context.imageSmoothingEnabled = true;
  if ($("layer-lanes").checked) {
    drawBoundaries(context, result.lane_boundaries || [], "image_points", (u, v) => [u, v],
                   Math.max(2, result.width / 640));
  }
  if ($("layer-path").checked) drawImagePath(context, result.plan);
  if ($("layer-boxes").checked) drawBoxes(context, result.detections || [], result.width);
}

async function decodePng(base64) {
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  return createImageBitmap(new Blob([bytes], { type: "image/png" }),
                           { colorSpaceConversion: "none", premultiplyAlpha: "none" });
}

// A 0/255 mask PNG (at its own size, usually the model's) becomes a canvas of one colour
// whose alpha is set where the mask is on.
async function maskLayer(encoded, [r, g, b, a]) {
  if (!encoded || encoded.encoding !== "png" || !encoded.data) return null;
  const mask = await decodePng(encoded.data);
  const canvas = document.createElement("canvas");
  canvas.width = mask.width;
  canvas.height = mask.height;
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(mask, 0, 0);
  const pixels = context.getImageData(0, 0, mask.width, mask.height);
  const p = pixels.data;
  for (let i = 0; i < p.length; i += 4) {
    const on = p[i] > 127;
    p[i] = r; p[i + 1] = g; p[i + 2] = b; p[i + 3] = on ? a : 0;
  }
  context.putImageData(pixels, 0, 0);
  return canvas;
}

// "12.3 m", whole metres from 100 m; the detection's distance is set when a plan is made.
function distanceText(metres) {
  return metres < 100 ? `${metres.toFixed(1)} m` : `${Math.round(metres)} m`;
}

function boxColour(d) {
  return d.in_path ? IN_PATH_COLOUR : CATEGORY_COLOURS[d.category] || OTHER_COLOUR;
}

function drawBoxes(context, detections, frameWidth) {
  const line = Math.max(2, frameWidth / 450);
  const fontSize = Math.round(Math.max(12, frameWidth / 75));
  context.font = `600 ${fontSize}px system-ui, sans-serif`;
  context.textBaseline = "top";
  // Lowest score first, so the surest boxes and their labels end up on top; road users in the
  // ego path last of all.
  const order = (a, b) => Boolean(a.in_path) - Boolean(b.in_path) || a.score - b.score;
  for (const d of [...detections].sort(order)) {
    const [x1, y1, x2, y2] = d.box;
    const colour = boxColour(d);
    context.lineWidth = d.in_path ? 2 * line : line;
    context.strokeStyle = colour;
    context.strokeRect(x1, y1, x2 - x1, y2 - y1);
    const distance = d.distance_m === null || d.distance_m === undefined
      ? "" : ` ${distanceText(d.distance_m)}`;
    const text = `${d.label} ${Math.round(d.score * 100)}%${distance}`;
    const width = context.measureText(text).width + fontSize * 0.6;
    const height = fontSize * 1.3;
    const top = y1 - height >= 0 ? y1 - height : y1;
    context.fillStyle = colour;
    context.fillRect(x1 - line / 2, top, width, height);
    context.fillStyle = "#0b0e12";
    context.fillText(text, x1 + fontSize * 0.3, top + fontSize * 0.15);
  }
}

// Fitted lane lines, near to far: the ego lane's bold and cyan, other lanes' thin and white.
// `key` picks the points (image_points in frame pixels, ground_points in metres) and `toPx`
// maps one to the canvas.
function drawBoundaries(context, boundaries, key, toPx, width) {
  context.lineCap = "round";
  context.lineJoin = "round";
  const egoLast = (a, b) => (a.position !== "other") - (b.position !== "other");
  for (const boundary of [...boundaries].sort(egoLast)) {
    const points = boundary[key];
    if (!points || points.length < 2) continue;
    const ego = boundary.position !== "other";
    context.strokeStyle = ego ? EGO_BOUNDARY_COLOUR : OTHER_BOUNDARY_COLOUR;
    context.lineWidth = ego ? 2 * width : width;
    context.beginPath();
    points.forEach(([a, b], i) => {
      const [u, v] = toPx(a, b);
      if (i) context.lineTo(u, v); else context.moveTo(u, v);
    });
    context.stroke();
  }
}

// The plan's waypoints are in the vehicle frame (metres); the camera picture shows the path only
// when the server also sends it in frame pixels (`plan.image_path`, [[u, v], ...]).
function drawImagePath(context, plan) {
  const points = plan && plan.image_path;
  if (!points || points.length < 2) return;
  context.lineWidth = Math.max(4, overlayCanvas.width / 200);
  context.lineCap = "round";
  context.lineJoin = "round";
  context.strokeStyle = PATH_COLOUR;
  context.beginPath();
  points.forEach(([u, v], i) => (i ? context.lineTo(u, v) : context.moveTo(u, v)));
  context.stroke();
}

// The bird's-eye panel: x forward (up), y left (left). The server's picture covers x_range by
// y_range; the grid, obstacles and path are drawn on top in the same metres.
function drawBev() {
  const { result, bev } = shown;
  const plan = result ? result.plan : null;
  const area = (result && result.bev) || BEV_DEFAULT;
  const [xMin, xMax] = area.x_range;
  const [yMin, yMax] = area.y_range;
  const ratio = window.devicePixelRatio || 1;
  const cssWidth = bevCanvas.clientWidth || 316;
  const tall = Math.min(1.15, Math.max(0.75, (xMax - xMin) / (yMax - yMin)));
  const cssHeight = Math.round(cssWidth * tall);
  bevCanvas.width = Math.round(cssWidth * ratio);
  bevCanvas.height = Math.round(cssHeight * ratio);
  const context = bevCanvas.getContext("2d");
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  context.fillStyle = "#0b0e12";
  context.fillRect(0, 0, cssWidth, cssHeight);

  const scale = Math.min(cssWidth / (yMax - yMin), cssHeight / (xMax - xMin));   // px per metre
  const left = (cssWidth - (yMax - yMin) * scale) / 2;
  const top = (cssHeight - (xMax - xMin) * scale) / 2;
  const toPx = (x, y) => [left + (yMax - y) * scale, top + (xMax - x) * scale];
  if (bev) {
    context.imageSmoothingEnabled = false;
    context.drawImage(bev, left, top, (yMax - yMin) * scale, (xMax - xMin) * scale);
  }
  drawBevGrid(context, toPx, area, scale);
  if ($("layer-lanes").checked && result) {
    drawBoundaries(context, result.lane_boundaries || [], "ground_points", toPx, 1.5);
  }
  drawBevObstacles(context, toPx, (plan && plan.obstacles) || [], scale);
  if ($("layer-path").checked && plan && plan.waypoints && plan.waypoints.length) {
    context.strokeStyle = PATH_COLOUR;
    context.lineWidth = 3;
    context.lineCap = "round";
    context.beginPath();
    [[0, 0], ...plan.waypoints].forEach(([x, y], i) => {
      const [u, v] = toPx(x, y);
      if (i) context.lineTo(u, v); else context.moveTo(u, v);
    });
    context.stroke();
  }
  drawEgo(context, toPx, scale);
}

function drawBevGrid(context, toPx, { x_range: [xMin, xMax], y_range: [yMin, yMax] }, scale) {
  const step = niceStep(50 / scale);
  context.lineWidth = 1;
  context.font = "10px system-ui, sans-serif";
  context.fillStyle = "rgba(200, 212, 224, 0.75)";
  for (let x = Math.ceil(xMin / step) * step; x <= xMax; x += step) {
    const [u0, v] = toPx(x, yMax);
    const [u1] = toPx(x, yMin);
    context.strokeStyle = x === 0 ? "rgba(200,212,224,0.45)" : "rgba(200,212,224,0.14)";
    line(context, u0, v, u1, v);
    if (x % (2 * step) === 0) {
      context.textAlign = "right";   // the server's picture labels its own grid on the left
      context.fillText(`${x} m`, u1 - 3, v - 3);
      context.textAlign = "start";
    }
  }
  for (let y = Math.ceil(yMin / step) * step; y <= yMax; y += step) {
    const [u, v0] = toPx(xMax, y);
    const [, v1] = toPx(xMin, y);
    context.strokeStyle = y === 0 ? "rgba(200,212,224,0.35)" : "rgba(200,212,224,0.14)";
    line(context, u, v0, u, v1);
  }
}

function niceStep(metres) {
  for (const step of [1, 2, 5, 10, 20, 50]) if (step >= metres) return step;
  return 100;
}

function line(context, u0, v0, u1, v1) {
  context.beginPath();
  context.moveTo(u0, v0);
  context.lineTo(u1, v1);
  context.stroke();
}

// Outlines only: the labels of a dozen parked cars would hide the road.
function drawBevObstacles(context, toPx, obstacles, scale) {
  for (const o of obstacles) {
    const width = Math.max(o.width || 1.8, 0.5);
    const length = o.length || 4.0;   // boxes give the near edge; a car is about 4 m long
    const [u, v] = toPx(o.x + length, o.y + width / 2);
    context.fillStyle = "rgba(255, 82, 82, 0.35)";
    context.strokeStyle = "#ff5252";
    context.lineWidth = 1.5;
    context.fillRect(u, v, width * scale, length * scale);
    context.strokeRect(u, v, width * scale, length * scale);
  }
}

function drawEgo(context, toPx, scale) {
  const [u, v] = toPx(0, 0);
  const half = Math.max(5, 0.9 * scale);
  context.fillStyle = "#e3e8ee";
  context.beginPath();
  context.moveTo(u, v - 2.2 * half);
  context.lineTo(u - half, v);
  context.lineTo(u + half, v);
  context.closePath();
  context.fill();
}

function showControl(plan) {
  const pill = $("plan-status");
  const reasons = $("plan-reasons");
  reasons.replaceChildren();
  if (!plan) {
    setPill(pill, "no plan", "pill-unknown");
    const item = document.createElement("li");
    item.textContent = noPlanReason || "the server sent no plan";
    reasons.append(item);
    for (const id of ["steer", "throttle", "brake", "speed"]) $(id).textContent = "–";
    for (const id of ["steer-bar", "throttle-bar", "brake-bar"]) $(id).style.width = "0";
    return;
  }
  setPill(pill, plan.status.replace("_", " "), PLAN_PILLS[plan.status] || "pill-unknown");
  for (const reason of plan.reasons || []) {
    const item = document.createElement("li");
    item.textContent = reason;
    reasons.append(item);
  }
  const { steer, throttle, brake } = plan.control;
  // CARLA's convention: steer -1 is full left, +1 full right.
  const steerBar = $("steer-bar");
  steerBar.style.left = `${50 + Math.min(steer, 0) * 50}%`;
  steerBar.style.width = `${Math.abs(steer) * 50}%`;
  const steerShown = Math.round(steer * 100) / 100;   // -0.001 shows as 0.00, not -0.00
  $("steer").textContent = `${steerShown > 0 ? "+" : ""}${steerShown.toFixed(2)}`;
  $("steer").title = steer < 0 ? "steering left" : steer > 0 ? "steering right" : "straight";
  $("throttle-bar").style.width = `${throttle * 100}%`;
  $("throttle").textContent = throttle.toFixed(2);
  $("brake-bar").style.width = `${brake * 100}%`;
  $("brake").textContent = brake.toFixed(2);
  const speed = plan.target_speed_mps;
  $("speed").textContent = `target ${speed.toFixed(1)} m/s · ${(speed * 3.6).toFixed(0)} km/h`;
}

// The ego lane and whether the camera file fits the frames, under the bird's-eye view.
function showLane(egoLane, check) {
  const parts = [];
  if (egoLane) {
    const { width_m: width, offset_m: offset } = egoLane;
    const side = offset > 0 ? "left of" : offset < 0 ? "right of" : "on";
    parts.push(`lane ${width.toFixed(1)} m wide, car ${Math.abs(offset).toFixed(2)} m ${side} centre`);
  }
  const info = $("lane-info");
  info.className = "lane-info";
  if (check) {
    const error = check.pitch_error_deg;
    const pitch = error === null || error === undefined
      ? "" : ` (pitch ${error > 0 ? "+" : ""}${error.toFixed(1)}°)`;
    parts.push(`camera ${check.status}${pitch}`);
    if (check.status === "mismatch") info.classList.add("warn");
  }
  info.textContent = parts.join(" · ");
}

function listDetections(detections) {
  const list = $("detections");
  list.replaceChildren();
  $("detection-count").textContent = String(detections.length);
  if (!detections.length) {
    const item = document.createElement("li");
    item.className = "empty-note";
    item.textContent = "nothing detected";
    list.append(item);
    return;
  }
  for (const d of [...detections].sort((a, b) => b.score - a.score)) {
    const item = document.createElement("li");
    item.className = "detection";
    item.dataset.label = d.label;
    item.dataset.score = String(d.score);
    item.dataset.box = d.box.join(",");
    const known = d.distance_m !== null && d.distance_m !== undefined;
    if (known) item.dataset.distance = String(d.distance_m);
    if (d.in_path) item.classList.add("in-path");
    const swatch = document.createElement("i");
    swatch.className = "sw";
    swatch.style.background = boxColour(d);
    const label = document.createElement("span");
    label.textContent = d.label;
    if (known) {
      const distance = document.createElement("span");
      distance.className = "distance";
      distance.textContent = distanceText(d.distance_m);
      distance.title = `distance from ${DISTANCE_SOURCES[d.distance_source] || "?"}` +
                       (d.in_path ? "; in the ego path" : "");
      label.append(" ", distance);
    }
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = `${Math.round(d.score * 100)}%`;
    const box = document.createElement("span");
    box.className = "box";
    const [x1, y1, x2, y2] = d.box.map(Math.round);
    box.textContent = `(${x1}, ${y1}) – (${x2}, ${y2}) px`;
    item.append(swatch, label, score, box);
    list.append(item);
  }
}

// ---------------------------------------------------------------------------------------------
// Status strip and messages.

// Stage times come as "model/stage" (per model) or "stage" (whole frame); grouped per model.
function showTimings(timings, roundTripMs) {
  const groups = new Map();
  const entries = Object.entries(timings);
  if (roundTripMs !== null && roundTripMs !== undefined) entries.push(["round trip", roundTripMs]);
  for (const [key, ms] of entries) {
    const cut = key.lastIndexOf("/");
    const group = cut < 0 ? "" : key.slice(0, cut);
    if (!groups.has(group)) groups.set(group, []);
    groups.get(group).push([key, key.slice(cut + 1), ms]);
  }
  const latency = $("latency");
  latency.replaceChildren();
  for (const [group, stages] of [...groups].sort(([a], [b]) => (a === "") - (b === ""))) {
    const box = document.createElement("span");
    box.className = "stage-group";
    if (group) {
      const name = document.createElement("em");
      name.textContent = group;
      box.append(name);
    }
    for (const [key, stage, ms] of stages) {
      const item = document.createElement("span");
      item.className = "stage-time";
      item.dataset.stage = key;
      const value = document.createElement("b");
      value.textContent = ms.toFixed(ms < 10 ? 1 : 0);
      item.append(`${stage} `, value);
      box.append(item);
    }
    latency.append(box);
  }
}

function updateStats() {
  const now = performance.now();
  stats.times = stats.times.filter((t) => now - t <= FPS_WINDOW_MS);
  const fps = stats.times.length > 1
    ? (stats.times.length - 1) / ((stats.times.at(-1) - stats.times[0]) / 1000) : null;
  $("fps").textContent = stream && fps ? fps.toFixed(1) : "–";
  $("frames").textContent = String(stats.results);
  $("dropped").textContent = String(stats.clientSkipped + stats.serverDropped);
  $("dropped").title = `${stats.clientSkipped} skipped in the browser while a frame was in ` +
                       `flight, ${stats.serverDropped} dropped by the server`;
}

function resetStats() {
  Object.assign(stats, { results: 0, times: [], clientSkipped: 0, serverDropped: 0 });
  updateStats();
}

function showMessage(text, kind) {
  const message = $("message");
  message.textContent = text;
  message.className = `message ${kind}`;
  message.hidden = false;
}

function clearMessage() {
  $("message").hidden = true;
  $("message").textContent = "";
}

function setBusy(busy) {
  $("busy").hidden = !busy;
}

drawBev();
pollReadiness();
