// vos app: the page. Plain JavaScript over the JSON API of vos/app/server.py; the server does all
// segmentation, the page only draws frames, id maps and prompts on a canvas and sends prompts.
"use strict";

const $ = (id) => document.getElementById(id);
const app = {
  info: null,           // /api/info
  state: null,          // /api/state
  frame: 0,             // the frame shown
  selected: null,       // the selected object id
  image: null,          // the shown frame's <img>
  ids: null,            // the shown frame's id map (Uint8Array, H·W) or null
  prompts: [],          // the shown frame's prompts
  drag: null,           // box being drawn {x0, y0, x1, y1} in frame pixels
  brush: null,          // {frame, object, canvas} mask being painted
  loadToken: 0,
};

// ------------------------------------------------------------------ API
async function api(method, path, body) {
  const options = { method, headers: {} };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, options);
  } catch (err) {
    throw new Error("the vos app server does not answer (was it stopped?)");
  }
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.error || `${method} ${path}: HTTP ${response.status}`);
  return data;
}

function showMessage(text, kind) {
  const box = $("message");
  box.textContent = text;
  box.className = kind || "";
  box.hidden = !text;
}

async function guarded(action) {
  try {
    showMessage("");
    await action();
  } catch (err) {
    showMessage(err.message);
  }
}

// ------------------------------------------------------------------ frames
function colourOf(id) {
  const obj = app.state && app.state.objects.find((o) => o.id === id);
  if (!obj) return [255, 255, 255];
  return [1, 3, 5].map((i) => parseInt(obj.colour.slice(i, i + 2), 16));
}

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error(`cannot load ${url}`));
    img.src = url;
  });
}

async function loadIds(k) {
  if (!app.state.results.includes(k)) return null;
  const img = await loadImage(`/api/results/${k}.png?v=${app.state.version}`);
  const c = document.createElement("canvas");
  c.width = img.width; c.height = img.height;
  const ctx = c.getContext("2d");
  ctx.drawImage(img, 0, 0);
  const rgba = ctx.getImageData(0, 0, img.width, img.height).data;
  const ids = new Uint8Array(img.width * img.height);
  for (let i = 0; i < ids.length; i++) ids[i] = rgba[4 * i];
  return ids;
}

async function showFrame(k) {
  k = Math.max(0, Math.min(app.info.frames - 1, k | 0));
  const token = ++app.loadToken;
  const [image, ids, prompts] = await Promise.all([
    loadImage(`/api/frames/${k}.jpg`), loadIds(k), api("GET", `/api/prompts/${k}`),
  ]);
  if (token !== app.loadToken) return; // a later request won
  if (app.brush && app.brush.frame !== k) app.brush = null;
  Object.assign(app, { frame: k, image, ids, prompts });
  $("frame-slider").value = k;
  $("frame-number").value = k;
  $("frame-name").textContent = app.info.names[k];
  draw();
  drawTimeline();
}

function draw() {
  const canvas = $("canvas");
  const ctx = canvas.getContext("2d");
  const { width, height } = app.info;
  ctx.drawImage(app.image, 0, 0, width, height);
  if (app.ids && !app.brush) {
    const tint = ctx.createImageData(width, height);
    const colours = {};
    for (let i = 0; i < app.ids.length; i++) {
      const id = app.ids[i];
      if (!id) continue;
      const c = colours[id] || (colours[id] = colourOf(id));
      tint.data.set([c[0], c[1], c[2], 128], 4 * i);
    }
    const layer = document.createElement("canvas");
    layer.width = width; layer.height = height;
    layer.getContext("2d").putImageData(tint, 0, 0);
    ctx.drawImage(layer, 0, 0);
  }
  if (app.brush) {
    ctx.globalAlpha = 0.6;
    ctx.drawImage(app.brush.tinted(), 0, 0);
    ctx.globalAlpha = 1;
  }
  const scale = width / (canvas.clientWidth || width); // frame pixels per screen pixel
  const line = 2 * scale;
  ctx.lineWidth = line;
  for (const p of app.prompts) {
    const [r, g, b] = colourOf(p.object);
    ctx.strokeStyle = `rgb(${r},${g},${b})`;
    ctx.fillStyle = ctx.strokeStyle;
    ctx.font = `${Math.round(13 * scale)}px sans-serif`;
    if (p.box) {
      const [x0, y0, x1, y1] = p.box;
      ctx.setLineDash([4 * line, 3 * line]);
      ctx.strokeRect(x0 + line / 2, y0 + line / 2, x1 - x0 - line, y1 - y0 - line);
      ctx.setLineDash([]);
      ctx.fillText(nameOf(p.object), x0 + 2 * scale, y0 > 16 * scale ? y0 - 4 * scale : y0 + 14 * scale);
    }
  }
  if (app.drag) {
    const { x0, y0, x1, y1 } = app.drag;
    ctx.strokeStyle = "#fff";
    ctx.setLineDash([3 * line, 3 * line]);
    ctx.strokeRect(Math.min(x0, x1), Math.min(y0, y1), Math.abs(x1 - x0), Math.abs(y1 - y0));
    ctx.setLineDash([]);
  }
}

function drawTimeline() {
  const c = $("timeline");
  c.width = c.clientWidth || 800;
  const ctx = c.getContext("2d");
  const n = app.info.frames;
  const w = c.width / n;
  ctx.clearRect(0, 0, c.width, c.height);
  ctx.fillStyle = "#5a5";
  for (const k of app.state.results) ctx.fillRect(k * w, 4, Math.max(1, w), c.height - 4);
  ctx.fillStyle = "#e0b020";
  for (const k of app.state.prompted) ctx.fillRect(k * w, 0, Math.max(2, w), 4);
  ctx.fillStyle = "#000";
  ctx.fillRect(app.frame * w + w / 2 - 1, 0, 2, c.height);
}

function nameOf(id) {
  const obj = app.state.objects.find((o) => o.id === id);
  return obj ? obj.name : `object ${id}`;
}

// ------------------------------------------------------------------ objects
let shownObjects = "";

function renderObjects() {
  const list = $("objects");
  if (app.selected !== null && !app.state.objects.some((o) => o.id === app.selected)) app.selected = null;
  if (app.selected === null && app.state.objects.length) app.selected = app.state.objects[0].id;
  // rebuild only on a change: a rebuild under the cursor would eat a name being typed
  const signature = JSON.stringify([app.state.objects, app.selected]);
  if (signature === shownObjects) return;
  shownObjects = signature;
  list.innerHTML = "";
  for (const obj of app.state.objects) {
    const li = document.createElement("li");
    li.dataset.id = obj.id;
    li.className = obj.id === app.selected ? "selected" : "";
    const pick = document.createElement("input");
    pick.type = "radio"; pick.name = "object"; pick.checked = obj.id === app.selected;
    pick.title = "select: box and brush prompt this object";
    pick.className = "select-object";
    pick.onchange = () => { app.selected = obj.id; app.brush = null; renderObjects(); draw(); };
    const colour = document.createElement("input");
    colour.type = "color"; colour.value = obj.colour;
    colour.onchange = () => guarded(async () => { await api("PATCH", `/api/objects/${obj.id}`, { colour: colour.value }); await refresh(); draw(); });
    const name = document.createElement("input");
    name.type = "text"; name.value = obj.name;
    name.onchange = () => guarded(async () => { await api("PATCH", `/api/objects/${obj.id}`, { name: name.value }); await refresh(); draw(); });
    const del = document.createElement("button");
    del.textContent = "✕"; del.title = "delete this object everywhere"; del.className = "delete-object";
    del.onclick = () => guarded(async () => {
      if (!confirm(`Delete ${obj.name} from every frame?`)) return;
      await api("DELETE", `/api/objects/${obj.id}`);
      await refresh(); await showFrame(app.frame);
    });
    li.append(pick, colour, name, del);
    list.append(li);
  }
}

// ------------------------------------------------------------------ canvas input
function framePoint(event) {
  const canvas = $("canvas");
  const r = canvas.getBoundingClientRect();
  const x = ((event.clientX - r.left) / r.width) * app.info.width;
  const y = ((event.clientY - r.top) / r.height) * app.info.height;
  return [Math.max(0, Math.min(app.info.width, x)), Math.max(0, Math.min(app.info.height, y))];
}

function tool() {
  return document.querySelector("input[name=tool]:checked").value;
}

function needObject() {
  if (app.selected === null) throw new Error("add an object first (+ add object), then draw its box or paint it");
}

function startBrush() {
  const { width, height } = app.info;
  const mask = document.createElement("canvas");
  mask.width = width; mask.height = height;
  const ctx = mask.getContext("2d");
  if (app.ids) { // start from the object's current mask on this frame
    const data = ctx.createImageData(width, height);
    for (let i = 0; i < app.ids.length; i++) if (app.ids[i] === app.selected) data.data.set([255, 255, 255, 255], 4 * i);
    ctx.putImageData(data, 0, 0);
  }
  const object = app.selected;
  app.brush = {
    frame: app.frame, object, canvas: mask,
    tinted() { // the mask in the object's colour
      const t = document.createElement("canvas");
      t.width = width; t.height = height;
      const tctx = t.getContext("2d");
      tctx.drawImage(mask, 0, 0);
      tctx.globalCompositeOperation = "source-in";
      const [r, g, b] = colourOf(object);
      tctx.fillStyle = `rgb(${r},${g},${b})`;
      tctx.fillRect(0, 0, width, height);
      return t;
    },
  };
}

function paint(x, y) {
  // a round-capped segment from the previous point, so a fast stroke leaves no gaps
  const ctx = app.brush.canvas.getContext("2d");
  const [x0, y0] = app.lastPoint || [x, y];
  ctx.globalCompositeOperation = tool() === "erase" ? "destination-out" : "source-over";
  ctx.strokeStyle = "#fff";
  ctx.lineWidth = Number($("brush-size").value);
  ctx.lineCap = "round";
  ctx.beginPath();
  ctx.moveTo(x0, y0);
  ctx.lineTo(x, y);
  ctx.stroke();
  app.lastPoint = [x, y];
}

function onDown(event) {
  guarded(async () => {
    needObject();
    const [x, y] = framePoint(event);
    if (tool() === "box") {
      app.drag = { x0: x, y0: y, x1: x, y1: y };
    } else {
      if (!app.brush || app.brush.object !== app.selected) startBrush();
      app.painting = true;
      app.lastPoint = null;
      paint(x, y);
    }
    draw();
  });
}

function onMove(event) {
  if (!app.drag && !app.painting) return;
  const [x, y] = framePoint(event);
  if (app.drag) Object.assign(app.drag, { x1: x, y1: y });
  else paint(x, y);
  draw();
}

function onUp(event) {
  if (app.painting) { app.painting = false; return; }
  if (!app.drag) return;
  const [x, y] = framePoint(event);
  const d = app.drag;
  app.drag = null;
  const box = [Math.floor(Math.min(d.x0, x)), Math.floor(Math.min(d.y0, y)), Math.ceil(Math.max(d.x0, x)), Math.ceil(Math.max(d.y0, y))];
  guarded(async () => {
    if (box[2] - box[0] < 2 || box[3] - box[1] < 2) { draw(); throw new Error("drag on the frame to draw a box"); }
    await api("POST", `/api/prompts/${app.frame}`, { object: app.selected, box });
    await refresh();
    await showFrame(app.frame);
  });
}

// ------------------------------------------------------------------ state and propagation
let lastVersion = -1;
let wasRunning = false;

async function refresh() {
  app.state = await api("GET", "/api/state");
  renderObjects();
  const s = app.state.status;
  const busy = s.running;
  for (const id of ["propagate-forward", "propagate-backward", "propagate-both", "apply-mask", "clear-prompt", "add-object"]) $(id).disabled = busy;
  for (const b of document.querySelectorAll("[data-format]")) b.disabled = busy;
  $("stop").disabled = !busy;
  $("progress").max = Math.max(1, s.total);
  $("progress").value = s.done;
  let text = "idle";
  if (busy) text = `propagating ${s.direction} from frame ${s.start}: ${s.done}/${s.total} frames`;
  else if (s.error) text = `stopped by an error: ${s.error}`;
  else if (s.direction) text = `${s.stopped ? "stopped" : "done"}: ${s.done}/${s.total} frames ${s.direction} from frame ${s.start}`;
  $("status").textContent = text;
  if (wasRunning && !busy && s.error) showMessage(s.error);
  wasRunning = busy;
}

async function poll() {
  try {
    await refresh();
    if (app.state.version !== lastVersion) {
      lastVersion = app.state.version;
      const s = app.state.status;
      const follow = s.running && $("follow").checked && s.frame !== null;
      if (!app.painting && !app.drag) await showFrame(follow ? s.frame : app.frame);
    } else {
      drawTimeline();
    }
  } catch (err) {
    showMessage(err.message);
  }
  setTimeout(poll, app.state && app.state.status.running ? 250 : 1000);
}

function propagate(direction) {
  guarded(async () => {
    await api("POST", "/api/propagate", { frame: app.frame, direction });
    await refresh();
  });
}

// ------------------------------------------------------------------ wiring
async function main() {
  app.info = await api("GET", "/api/info");
  const { width, height, process_width, process_height } = app.info;
  $("video-name").textContent = app.info.video;
  $("video-size").textContent = (process_width === width && process_height === height)
    ? `${width}×${height}, ${app.info.frames} frames (the network sees them at full size)`
    : `${width}×${height}, ${app.info.frames} frames; the network sees ${process_width}×${process_height}`;
  $("workspace").textContent = `workspace: ${app.info.workspace}`;
  $("canvas").width = width;
  $("canvas").height = height;
  $("frame-slider").max = app.info.frames - 1;
  $("frame-number").max = app.info.frames - 1;
  $("frame-count").textContent = app.info.frames - 1;
  await refresh();
  lastVersion = app.state.version;
  await showFrame(0);

  $("frame-slider").oninput = (e) => guarded(() => showFrame(Number(e.target.value)));
  $("frame-number").onchange = (e) => guarded(() => showFrame(Number(e.target.value)));
  $("prev").onclick = () => guarded(() => showFrame(app.frame - 1));
  $("next").onclick = () => guarded(() => showFrame(app.frame + 1));
  document.addEventListener("keydown", (e) => {
    if (e.target.tagName === "INPUT" && e.target.type !== "range" && e.target.type !== "radio") return;
    if (e.key === "ArrowLeft") guarded(() => showFrame(app.frame - 1));
    if (e.key === "ArrowRight") guarded(() => showFrame(app.frame + 1));
  });
  $("add-object").onclick = () => guarded(async () => {
    const obj = await api("POST", "/api/objects", {});
    app.selected = obj.id;
    app.brush = null;
    await refresh();
    draw();
  });
  $("apply-mask").onclick = () => guarded(async () => {
    needObject();
    if (!app.brush || app.brush.frame !== app.frame) throw new Error("paint the object with the brush on this frame first");
    await api("POST", `/api/prompts/${app.frame}`, { object: app.brush.object, mask: app.brush.canvas.toDataURL("image/png") });
    app.brush = null;
    await refresh();
    await showFrame(app.frame);
  });
  $("clear-prompt").onclick = () => guarded(async () => {
    needObject();
    await api("DELETE", `/api/prompts/${app.frame}/${app.selected}`);
    app.brush = null;
    await refresh();
    await showFrame(app.frame);
  });
  for (const name of ["box", "brush", "erase"]) $(`tool-${name}`).onchange = () => { if (name === "box") app.brush = null; draw(); };
  $("propagate-forward").onclick = () => propagate("forward");
  $("propagate-backward").onclick = () => propagate("backward");
  $("propagate-both").onclick = () => propagate("both");
  $("stop").onclick = () => guarded(() => api("POST", "/api/stop"));
  for (const button of document.querySelectorAll("[data-format]")) {
    button.onclick = () => guarded(async () => {
      $("export-path").textContent = `exporting ${button.dataset.format}…`;
      try {
        const { path } = await api("POST", "/api/export", { format: button.dataset.format });
        $("export-path").textContent = `written: ${path}`;
      } catch (err) {
        $("export-path").textContent = "";
        throw err;
      }
    });
  }
  const canvas = $("canvas");
  canvas.addEventListener("mousedown", onDown);
  window.addEventListener("mousemove", onMove);
  window.addEventListener("mouseup", onUp);
  window.addEventListener("resize", drawTimeline);
  document.body.dataset.ready = "true"; // for the browser test
  setTimeout(poll, 1000);
}

main().catch((err) => showMessage(err.message));
