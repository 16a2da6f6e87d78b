// The page at /: choose an image, type classes, detect through POST /v1/detect, draw the answer.
// Plain JS, no build step and nothing from the internet: served by the same app.
"use strict";

const $ = (id) => document.getElementById(id);
// one request at the lowest threshold the slider offers; moving the slider filters what came back, which
// equals asking again at the higher threshold (NMS never lets a lower-scored box remove a higher one)
const REQUEST_CONF = 0.01;
const state = { model: null, file: null, bitmap: null, answer: null };

function color(classId) {
  return `hsl(${(classId * 137.508) % 360}, 75%, 45%)`;
}

// "person, car/automobile" -> [["person"], ["car", "automobile"]] (a class-text JSON)
function parseClasses(text) {
  return text.split(",").map((c) => c.split("/").map((p) => p.trim()).filter(Boolean)).filter((c) => c.length);
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function loadModel() {
  const reply = await fetch("/v1/model");
  const model = await reply.json();
  state.model = model;
  const r = model.ran;
  $("model").textContent = `${model.weights}: ${r.backend} ${r.precision}, ${r.imgsz} px, ${r.letterbox} letterbox`;
  $("conf").value = model.defaults.conf;
  $("conf-value").textContent = Number(model.defaults.conf).toFixed(2);
  if (model.open_vocabulary) {
    $("classes").placeholder = model.vocabulary.join(", ");
    $("merge").textContent = model.prompt_merge === "first"
      ? "Synonyms count when the server runs with --prompt-merge mean or max." : `Synonyms merged: ${model.prompt_merge}.`;
  } else {
    $("open-vocabulary").hidden = true;
    $("fixed-vocabulary").hidden = false;
    $("fixed-classes").textContent = model.vocabulary.join(", ");
  }
}

async function chooseFile(file) {
  if (!file) return;
  state.file = file;
  state.answer = null;
  try {
    state.bitmap = await createImageBitmap(file);
  } catch (e) {
    state.bitmap = null;  // the server says what is wrong with it
  }
  $("detect").disabled = false;
  detect();
}

async function detect() {
  if (!state.file) return;
  const form = new FormData();
  form.append("image", state.file, state.file.name || "image");
  form.append("conf", REQUEST_CONF);
  const classes = parseClasses($("classes").value);
  if (state.model && state.model.open_vocabulary && classes.length) form.append("classes", JSON.stringify(classes));
  setStatus("detecting…");
  $("detect").disabled = true;
  try {
    const reply = await fetch("/v1/detect", { method: "POST", body: form });
    const body = await reply.json();
    if (!reply.ok) {
      state.answer = null;
      setStatus(`${reply.status}: ${body.error}`, true);
    } else {
      state.answer = body;
    }
  } catch (e) {
    setStatus(`request failed: ${e}`, true);
  } finally {
    $("detect").disabled = false;
  }
  render();
}

function shown() {
  const conf = Number($("conf").value);
  return state.answer ? state.answer.detections.filter((d) => d.score >= conf) : [];
}

function render() {
  const canvas = $("canvas");
  const ctx = canvas.getContext("2d");
  const dets = shown();
  if (state.bitmap) {
    canvas.width = state.bitmap.width;
    canvas.height = state.bitmap.height;
    ctx.drawImage(state.bitmap, 0, 0);
  }
  const line = Math.max(2, Math.round(Math.max(canvas.width, canvas.height) / 320));
  ctx.font = `${6 * line + 4}px system-ui, sans-serif`;
  ctx.lineWidth = line;
  for (const d of dets) {
    const [x1, y1, x2, y2] = d.box;
    ctx.strokeStyle = ctx.fillStyle = color(d.class_id);
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    const label = `${d.class_name} ${d.score.toFixed(2)}`;
    const h = 6 * line + 8;
    const top = y1 >= h ? y1 - h : y1;
    ctx.fillRect(x1 - line / 2, top, ctx.measureText(label).width + 2 * line, h);
    ctx.fillStyle = "#fff";
    ctx.fillText(label, x1 + line / 2, top + h - 2 * line);
  }
  canvas.dataset.boxes = String(dets.length);
  const rows = dets.map((d, i) => {
    const tr = document.createElement("tr");
    const box = d.box.map((v) => v.toFixed(1)).join(", ");
    for (const text of [String(i + 1), d.class_name, d.score.toFixed(3), box]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.appendChild(td);
    }
    tr.children[1].className = "swatch";
    tr.children[1].style.color = color(d.class_id);
    return tr;
  });
  $("detections").querySelector("tbody").replaceChildren(...rows);
  if (state.answer) {
    const t = state.answer.times_ms;
    setStatus(`${dets.length} of ${state.answer.detections.length} detections shown; ` +
              `${t.total.toFixed(0)} ms (inference ${t.inference.toFixed(0)} ms)`);
  }
}

$("image-input").addEventListener("change", (e) => chooseFile(e.target.files[0]));
$("detect").addEventListener("click", detect);
$("classes").addEventListener("keydown", (e) => { if (e.key === "Enter") detect(); });
$("conf").addEventListener("input", () => {
  $("conf-value").textContent = Number($("conf").value).toFixed(2);
  render();
});
const drop = $("drop");
for (const name of ["dragenter", "dragover"]) {
  drop.addEventListener(name, (e) => { e.preventDefault(); drop.classList.add("over"); });
}
for (const name of ["dragleave", "drop"]) {
  drop.addEventListener(name, (e) => { e.preventDefault(); drop.classList.remove("over"); });
}
drop.addEventListener("drop", (e) => chooseFile(e.dataTransfer.files[0]));
loadModel().catch((e) => setStatus(`cannot read /v1/model: ${e}`, true));
