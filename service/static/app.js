// app.js: the page's three sections: Try it (predict and plot), Versions (metrics, reports, promote), Train (SSE).
import { admin, get, post } from "./api.js";
import { lineChart } from "./plot.js";

const UNRELIABLE = 3; // the first outputs of every sequence are guesses (README, "Ask it for cosines")
const $ = (id) => document.getElementById(id);
let models = []; // the last GET /models answer

function setStatus(id, text, isError = false) {
  const node = $(id);
  node.textContent = text;
  node.classList.toggle("error", isError);
}

function make(tag, attrs = {}, text = null) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== null) node.textContent = text;
  return node;
}

function num(id) {
  const value = Number($(id).value);
  if ($(id).value.trim() === "" || !Number.isFinite(value)) throw new Error(`${$(id).name} must be a number`);
  return value;
}

function gaussian() {
  const u = 1 - Math.random();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * Math.random());
}

// ---- Try it -------------------------------------------------------------------------------------------------

function chosenInput() {
  const pasted = $("try-values").value.trim();
  if (pasted) {
    const values = pasted.split(/[\s,;]+/).filter(Boolean).map(Number);
    if (!values.length || values.some((v) => !Number.isFinite(v))) throw new Error("pasted values must be numbers");
    return { sine: values, cosine: null };
  }
  const step = num("try-step");
  const phase = num("try-phase");
  const length = Math.round(num("try-length"));
  const noise = num("try-noise");
  if (length < 1 || length > 5000) throw new Error("length must be 1 to 5000");
  const angles = Array.from({ length }, (_, t) => phase + step * t);
  return {
    sine: angles.map((a) => Math.sin(a) + (noise > 0 ? noise * gaussian() : 0)),
    cosine: angles.map((a) => Math.cos(a)),
  };
}

async function predict(event) {
  event?.preventDefault();
  let input;
  try {
    input = chosenInput();
  } catch (error) {
    setStatus("try-status", error.message, true);
    return;
  }
  const body = { inputs: input.sine.map((v) => [[v]]), model: $("try-model").value || "lstm" };
  if ($("try-version").value) body.version = Number($("try-version").value);
  setStatus("try-status", "asking the model…");
  let answer;
  try {
    answer = await post("predict", body);
  } catch (error) {
    setStatus("try-status", `prediction refused: ${error.message}`, true);
    return;
  }
  const predicted = answer.outputs.map((row) => row[0][0]);
  const series = [{ name: "sine", label: "input sine", values: input.sine }];
  if (input.cosine) series.push({ name: "cosine", label: "true cosine", values: input.cosine });
  series.push({ name: "model", label: `model's cosine (${answer.model} v${answer.version})`, values: predicted });
  lineChart($("try-plot"), series, { shade: UNRELIABLE, title: "input sine, true and predicted cosine" });
  const figure = $("try-error");
  if (input.cosine) {
    const error = predicted.map((p, t) => p - input.cosine[t]);
    lineChart(figure, [{ name: "error", label: "model − true cosine", values: error }], { shade: UNRELIABLE, height: 150, title: "error" });
    const scored = error.slice(UNRELIABLE);
    const mse = scored.reduce((s, e) => s + e * e, 0) / Math.max(scored.length, 1);
    const worst = Math.max(0, ...scored.map(Math.abs));
    setStatus("try-status", `${answer.model} version ${answer.version}: MSE ${mse.toExponential(2)}, max |error| ${worst.toFixed(3)} (after the first ${UNRELIABLE} samples)`);
  } else {
    figure.replaceChildren();
    setStatus("try-status", `${answer.model} version ${answer.version}: pasted values have no true cosine to compare with`);
  }
  $("try-plot").dataset.model = answer.model;
  $("try-plot").dataset.version = String(answer.version);
}

function fillModelChoices() {
  const select = $("try-model");
  const chosen = select.value;
  select.replaceChildren(...models.map((m) => make("option", { value: m.name }, m.name)));
  if (models.some((m) => m.name === chosen)) select.value = chosen;
  fillVersionChoices();
}

function fillVersionChoices() {
  const select = $("try-version");
  const chosen = select.value;
  const entry = models.find((m) => m.name === $("try-model").value);
  const options = [make("option", { value: "" }, entry ? `serving (v${entry.serving_version ?? "–"})` : "serving")];
  for (const v of entry ? [...entry.versions].reverse() : []) options.push(make("option", { value: v.version }, `v${v.version}`));
  select.replaceChildren(...options);
  if ([...select.options].some((o) => o.value === chosen)) select.value = chosen;
}

// ---- Versions -----------------------------------------------------------------------------------------------

function metric(value) {
  return typeof value === "number" ? value.toExponential(2) : "–";
}

async function showReport(details, name, version) {
  if (details.dataset.loaded) return;
  details.dataset.loaded = "1";
  const holder = details.querySelector(".report");
  try {
    const manifest = await get(`models/${name}/versions/${version}`);
    if (!(manifest.files || []).includes("report.png")) {
      holder.textContent = "this version has no report picture";
      return;
    }
    const url = `models/${name}/versions/${version}/report.png`;
    const link = make("a", { href: url, target: "_blank", rel: "noopener" });
    link.appendChild(make("img", { src: url, alt: `report of ${name} version ${version}`, loading: "lazy" }));
    holder.replaceChildren(link);
  } catch (error) {
    holder.textContent = `cannot load: ${error.message}`;
  }
}

function versionRow(entry, v, production) {
  const row = make("tr", { "data-version": v.version });
  const aliases = Object.entries(entry.aliases).filter(([, target]) => target === v.version).map(([alias]) => alias);
  const serving = entry.serving_version === v.version;
  row.append(
    make("td", {}, `v${v.version}`),
    make("td", { class: "when" }, v.created_at.replace("T", " ").slice(0, 19)),
    make("td", {}, metric(v.metrics.worst_mse)),
    make("td", {}, metric(v.metrics.tutorial_test_mse)),
  );
  const tags = make("td", { class: "aliases" });
  for (const alias of aliases) tags.appendChild(make("span", { class: "tag alias" }, alias));
  if (serving) tags.appendChild(make("span", { class: "tag serving" }, "serving"));
  row.appendChild(tags);
  const actions = make("td");
  if (production !== v.version) {
    const label = production !== undefined && v.version < production ? "Roll back" : "Promote";
    const button = make("button", { type: "button", class: "promote", "data-model": entry.name, "data-version": v.version }, label);
    button.addEventListener("click", () => promote(entry.name, v.version));
    actions.appendChild(button);
  }
  row.appendChild(actions);
  return row;
}

function reportRow(entry, v, open) {
  const row = make("tr", { class: "report-row" });
  const cell = make("td", { colspan: 6 });
  const details = make("details");
  details.appendChild(make("summary", {}, `report of v${v.version}`));
  details.appendChild(make("div", { class: "report" }, "loading…"));
  details.addEventListener("toggle", () => details.open && showReport(details, entry.name, v.version));
  details.open = open;
  cell.appendChild(details);
  row.appendChild(cell);
  return row;
}

async function loadVersions() {
  try {
    models = (await get("models")).models;
  } catch (error) {
    setStatus("versions-status", `cannot list models: ${error.message}`, true);
    return;
  }
  const list = $("versions-list");
  list.replaceChildren();
  if (!models.length) setStatus("versions-status", "the store has no model yet: train one below");
  for (const entry of models) {
    const card = make("article", { class: "model", "data-model": entry.name });
    const production = entry.aliases.production;
    const aliasText = Object.entries(entry.aliases).map(([a, v]) => `${a} → v${v}`).join(", ") || "no alias (newest serves)";
    card.append(make("h3", {}, entry.name), make("p", { class: "summary" }, `serving v${entry.serving_version ?? "–"}; ${aliasText}`));
    if (entry.load_error) card.appendChild(make("p", { class: "error" }, `load error: v${entry.load_error.version}: ${entry.load_error.error}`));
    const wrap = make("div", { class: "table-wrap" });
    const table = make("table", { class: "versions" });
    const head = make("tr");
    for (const title of ["version", "created (UTC)", "worst MSE", "tutorial MSE", "aliases", ""]) head.appendChild(make("th", {}, title));
    table.appendChild(make("thead")).appendChild(head);
    const body = make("tbody");
    for (const v of [...entry.versions].reverse()) {
      body.appendChild(versionRow(entry, v, production));
      body.appendChild(reportRow(entry, v, v.version === entry.serving_version));
    }
    table.appendChild(body);
    wrap.appendChild(table);
    card.appendChild(wrap);
    list.appendChild(card);
    for (const details of card.querySelectorAll("details[open]")) details.dispatchEvent(new Event("toggle"));
  }
  fillModelChoices();
}

async function promote(name, version) {
  setStatus("versions-status", `moving ${name} production to v${version}…`);
  try {
    const answer = await admin("PUT", `models/${name}/aliases/production`, { version });
    setStatus("versions-status", `${name}: production → v${answer.version}, serving v${answer.serving_version}`);
  } catch (error) {
    setStatus("versions-status", `promotion refused: ${error.message}`, true);
  }
  await loadVersions();
}

// ---- Train --------------------------------------------------------------------------------------------------

let running = null; // {id, source, losses: [[epoch, loss]]}

function trainParams() {
  const params = {};
  for (const id of ["train-max-epochs", "train-hidden-size", "train-lr", "train-seed"]) {
    const input = $(id);
    if (input.value.trim() !== "") params[input.name] = num(id);
  }
  for (const pair of $("train-extra").value.split(/[\s,]+/).filter(Boolean)) {
    const [key, value] = pair.split("=");
    if (!key || value === undefined) throw new Error(`"${pair}": more parameters are name=value`);
    params[key] = Number.isFinite(Number(value)) ? Number(value) : value;
  }
  return params;
}

function drawLoss(job) {
  const epochs = running.losses.map(([e]) => e);
  lineChart($("train-plot"), [{ name: "loss", label: "training loss", values: running.losses.map(([, l]) => l), x: epochs }], {
    logY: true,
    dots: true,
    height: 180,
    title: "training loss by epoch",
  });
  $("train-plot").dataset.job = job.id;
}

function showJob(job) {
  const p = job.progress;
  if (p.loss !== null && running && running.id === job.id) {
    const last = running.losses[running.losses.length - 1];
    if (!last || last[0] !== p.epoch) running.losses.push([p.epoch, p.loss]);
    drawLoss(job);
  }
  let text = `job ${job.id}: ${job.status}, epoch ${p.epoch}/${p.max_epochs}` + (p.loss !== null ? `, loss ${p.loss.toExponential(2)}` : "");
  if (job.result) text += ` → ${job.result.model} v${job.result.version}${job.result.promoted ? " (promoted)" : ""}`;
  if (job.error) text += ` (${job.error})`;
  setStatus("train-status", text, job.status === "failed");
  $("train-status").dataset.status = job.status;
}

function follow(job) {
  running?.source.close();
  const source = new EventSource(`train/${encodeURIComponent(job.id)}/events`);
  running = { id: job.id, source, losses: [] };
  $("train-cancel").hidden = false;
  for (const name of ["progress", "succeeded", "failed", "cancelled"]) {
    source.addEventListener(name, (event) => showJob(JSON.parse(event.data)));
  }
  source.addEventListener("end", () => {
    source.close();
    $("train-cancel").hidden = true;
    loadVersions();
    loadJobs();
  });
  source.addEventListener("error", () => {
    // EventSource reconnects by itself after a dropped stream; a refused one (e.g. 429, the server's stream
    // limit) stays closed: poll the job instead until it ends.
    if (source.readyState === EventSource.CLOSED && running && running.id === job.id) poll(job.id);
  });
}

async function poll(id) {
  while (running && running.id === id) {
    let job;
    try {
      job = await get(`train/${encodeURIComponent(id)}`);
    } catch (error) {
      setStatus("train-status", `cannot follow job ${id}: ${error.message}`, true);
      return;
    }
    showJob(job);
    if (["succeeded", "failed", "cancelled"].includes(job.status)) {
      $("train-cancel").hidden = true;
      loadVersions();
      loadJobs();
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

async function startTraining(event) {
  event.preventDefault();
  let body;
  try {
    body = { model: $("train-model").value || "lstm", preset: $("train-preset").value, promote: $("train-promote").value, params: trainParams() };
  } catch (error) {
    setStatus("train-status", error.message, true);
    return;
  }
  try {
    const job = await admin("POST", "train", body);
    showJob(job);
    follow(job);
    loadJobs();
  } catch (error) {
    setStatus("train-status", `training refused: ${error.message}`, true);
  }
}

async function cancelTraining() {
  if (!running) return;
  try {
    showJob(await admin("DELETE", `train/${encodeURIComponent(running.id)}`));
  } catch (error) {
    setStatus("train-status", `cancel refused: ${error.message}`, true);
  }
}

async function loadJobs() {
  let page;
  try {
    page = await get("train?limit=10");
  } catch {
    return;
  }
  const rows = page.jobs.map((job) => {
    const row = make("tr", { "data-job": job.id });
    const result = job.result ? `${job.result.model} v${job.result.version}` : job.error || "";
    row.append(
      make("td", { class: "id" }, job.id.slice(0, 8)),
      make("td", {}, job.status),
      make("td", {}, `${job.preset} ${job.progress.epoch}/${job.progress.max_epochs}`),
      make("td", {}, result),
    );
    return row;
  });
  $("jobs-body").replaceChildren(...rows);
}

// ---- start --------------------------------------------------------------------------------------------------

$("try-form").addEventListener("submit", predict);
$("try-model").addEventListener("change", fillVersionChoices);
$("train-form").addEventListener("submit", startTraining);
$("train-cancel").addEventListener("click", cancelTraining);
$("versions-refresh").addEventListener("click", loadVersions);
loadJobs();
loadVersions().then(() => {
  document.body.dataset.ready = "1";
  if (models.length) predict();
});
