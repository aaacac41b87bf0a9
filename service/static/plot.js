// plot.js: small SVG line charts (no library). Each series' values are kept on its path as data-values.
const SVG = "http://www.w3.org/2000/svg";
const W = 640;
const HEIGHT = 240;
const PAD = { left: 52, right: 12, top: 10, bottom: 26 };

function el(name, attrs = {}, parent = null) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (parent) parent.appendChild(node);
  return node;
}

function niceTicks(lo, hi, count) {
  const span = hi - lo || 1;
  const raw = span / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => span / s <= count) || raw;
  const ticks = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(Number(t.toPrecision(12)));
  return ticks;
}

function fmt(value) {
  if (value === 0) return "0";
  const a = Math.abs(value);
  return a >= 1e4 || a < 1e-3 ? value.toExponential(0) : String(Number(value.toPrecision(3)));
}

/**
 * Draw a chart into `figure` (replacing its content).
 * series: [{name, label, values: number[], x?: number[]}]; options: {shade: n (mark x < n), logY, dots, height, title}.
 */
export function lineChart(figure, series, options = {}) {
  figure.replaceChildren();
  const H = options.height || HEIGHT;
  const logY = Boolean(options.logY);
  const ty = (v) => (logY ? Math.log10(v) : v);
  const points = series.map((s) =>
    s.values
      .map((v, i) => [s.x ? s.x[i] : i, v])
      .filter(([, v]) => Number.isFinite(v) && (!logY || v > 0)),
  );
  const xs = points.flat().map(([x]) => x);
  const ys = points.flat().map(([, y]) => ty(y));
  let [x0, x1] = [Math.min(...xs, 0), Math.max(...xs, 1)];
  let [y0, y1] = ys.length ? [Math.min(...ys), Math.max(...ys)] : [0, 1];
  if (y0 === y1) [y0, y1] = [y0 - 1, y1 + 1];
  const margin = (y1 - y0) * 0.05;
  [y0, y1] = [y0 - margin, y1 + margin];
  if (x0 === x1) x1 = x0 + 1;
  const sx = (x) => PAD.left + ((x - x0) / (x1 - x0)) * (W - PAD.left - PAD.right);
  const sy = (y) => H - PAD.bottom - ((ty(y) - y0) / (y1 - y0)) * (H - PAD.top - PAD.bottom);

  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img" });
  if (options.title) el("title", {}, svg).textContent = options.title;
  if (options.shade) {
    const right = Math.min(sx(options.shade - 0.5), W - PAD.right);
    el("rect", { class: "unreliable", x: PAD.left, y: PAD.top, width: Math.max(right - PAD.left, 0), height: H - PAD.top - PAD.bottom }, svg);
  }
  const axes = el("g", { class: "axes" }, svg);
  const yTicks = logY
    ? niceTicks(Math.ceil(y0), Math.floor(y1), 5).filter(Number.isInteger).map((e) => 10 ** e)
    : niceTicks(y0, y1, 5);
  for (const t of yTicks) {
    const y = sy(t);
    el("line", { x1: PAD.left, x2: W - PAD.right, y1: y, y2: y, class: "grid" }, axes);
    el("text", { x: PAD.left - 6, y: y + 4, class: "tick y" }, axes).textContent = fmt(t);
  }
  for (const t of niceTicks(x0, x1, 8)) {
    el("text", { x: sx(t), y: H - 8, class: "tick x" }, axes).textContent = fmt(t);
  }
  el("rect", { class: "frame", x: PAD.left, y: PAD.top, width: W - PAD.left - PAD.right, height: H - PAD.top - PAD.bottom }, axes);
  series.forEach((s, k) => {
    const d = points[k].map(([x, y], i) => `${i ? "L" : "M"}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join("");
    el("path", { d, class: `series ${s.name}`, "data-series": s.name, "data-values": JSON.stringify(s.values) }, svg);
    if (options.dots && points[k].length <= 80) {
      for (const [x, y] of points[k]) el("circle", { cx: sx(x).toFixed(1), cy: sy(y).toFixed(1), r: 3, class: `dot ${s.name}` }, svg);
    }
  });
  figure.appendChild(svg);
  const legend = document.createElement("figcaption");
  legend.className = "legend";
  for (const s of series) {
    const item = document.createElement("span");
    item.className = `key ${s.name}`;
    item.textContent = s.label;
    legend.appendChild(item);
  }
  if (options.shade) {
    const item = document.createElement("span");
    item.className = "key unreliable";
    item.textContent = `first ${options.shade} samples: unreliable`;
    legend.appendChild(item);
  }
  figure.appendChild(legend);
}
