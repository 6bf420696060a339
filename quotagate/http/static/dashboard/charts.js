// A small SVG chart kit with no dependencies: time series (stacked bars or an area), horizontal bars,
// a donut and a gauge. Colours come from CSS classes (the page's policy allows no inline styles), and
// every chart redraws itself when its box changes size.

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, parent = null) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

const observer = new ResizeObserver((entries) => {
  for (const entry of entries) {
    const box = entry.target;
    const width = Math.round(entry.contentRect.width);
    if (box.drawnWidth !== width && box.draw) box.draw();
  }
});

// Draws now and again on every resize of `box`.
function responsive(box, draw) {
  box.draw = () => {
    box.drawnWidth = Math.round(box.clientWidth);
    box.replaceChildren();
    draw(box.drawnWidth);
  };
  box.draw();
  observer.observe(box);
}

// 1, 2, 2.5 or 5 times a power of ten, at least `value`.
function niceCeiling(value) {
  if (value <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (value <= step * power) return step * power;
  return 10 * power;
}

// Gridlines at round values (whole ones for counts), about four of them, the top one above `max`.
function ticks(max, integers) {
  const step = integers ? Math.max(1, Math.ceil(niceCeiling(max / 4))) : niceCeiling(max / 4);
  const count = Math.max(1, Math.ceil(max / step));
  return Array.from({ length: count + 1 }, (_, i) => i * step);
}

function tooltip(box) {
  const tip = el("div", "chart-tip");
  tip.hidden = true;
  box.appendChild(tip);
  return {
    show(x, y, title, lines) {
      tip.replaceChildren(el("div", "chart-tip-title", title));
      for (const line of lines) {
        const row = el("div", "chart-tip-row");
        row.append(el("span", `swatch ${line.className}`), el("span", "", line.label), el("b", "", line.value));
        tip.appendChild(row);
      }
      tip.hidden = false;
      const maxLeft = box.clientWidth - tip.offsetWidth - 4;
      tip.style.left = `${Math.max(4, Math.min(x + 12, maxLeft))}px`;
      tip.style.top = `${Math.max(0, y - tip.offsetHeight - 8)}px`;
    },
    hide() {
      tip.hidden = true;
    },
  };
}

/**
 * points: [{start, ...values}]; series: [{key, label, className}], stacked bottom-up.
 * options: {kind: "bar" | "area", integers, height, format (values), axisFormat, label(start), title(start)}
 */
export function timeSeries(box, points, series, options) {
  const { kind = "bar", height = 220, format, axisFormat = format, label, title } = options;
  box.classList.add("chart");
  responsive(box, (width) => {
    const pad = { top: 12, right: 12, bottom: 26, left: 64 };
    const w = Math.max(width, 200);
    const plotW = w - pad.left - pad.right;
    const plotH = height - pad.top - pad.bottom;
    const totals = points.map((p) => series.reduce((sum, s) => sum + Number(p[s.key] || 0), 0));
    const grid = ticks(Math.max(0, ...totals), options.integers);
    const top = grid[grid.length - 1];
    const root = svg("svg", { width: w, height, viewBox: `0 0 ${w} ${height}`, role: "img" }, box);
    root.setAttribute("aria-label", options.ariaLabel || "chart");
    const y = (v) => pad.top + plotH - (v / top) * plotH;
    for (const v of grid) {
      svg("line", { x1: pad.left, x2: w - pad.right, y1: y(v), y2: y(v), class: v ? "gridline" : "axis" }, root);
      const t = svg("text", { x: pad.left - 8, y: y(v) + 4, class: "tick", "text-anchor": "end" }, root);
      t.textContent = axisFormat(v);
    }
    const n = points.length;
    const step = plotW / Math.max(n, 1);
    const every = Math.max(1, Math.ceil(n / Math.max(2, Math.floor(plotW / 70))));
    points.forEach((p, i) => {
      if (i % every) return;
      const t = svg(
        "text",
        { x: pad.left + step * (i + 0.5), y: height - 8, class: "tick", "text-anchor": "middle" },
        root,
      );
      t.textContent = label(p.start);
    });
    if (kind === "bar") {
      const barW = Math.max(1, step * 0.72);
      points.forEach((p, i) => {
        let base = 0;
        for (const s of series) {
          const v = Number(p[s.key] || 0);
          if (v > 0) {
            const x = pad.left + step * i + (step - barW) / 2;
            svg(
              "rect",
              {
                x,
                y: y(base + v),
                width: barW,
                height: Math.max(1, y(base) - y(base + v)),
                class: `bar ${s.className}`,
              },
              root,
            );
          }
          base += v;
        }
      });
    } else {
      const s = series[0];
      const xs = (i) => pad.left + step * (i + 0.5);
      const line = points
        .map((p, i) => `${i ? "L" : "M"}${xs(i).toFixed(1)},${y(Number(p[s.key] || 0)).toFixed(1)}`)
        .join("");
      if (n) {
        svg("path", { d: `${line}L${xs(n - 1)},${y(0)}L${xs(0)},${y(0)}Z`, class: `area ${s.className}` }, root);
        svg("path", { d: line, class: `line ${s.className}` }, root);
      }
    }
    const tip = tooltip(box);
    const guide = svg("line", { y1: pad.top, y2: pad.top + plotH, class: "guide", visibility: "hidden" }, root);
    points.forEach((p, i) => {
      const hit = svg("rect", { x: pad.left + step * i, y: pad.top, width: step, height: plotH, class: "hit" }, root);
      hit.addEventListener("mouseenter", () => {
        const x = pad.left + step * (i + 0.5);
        guide.setAttribute("x1", x);
        guide.setAttribute("x2", x);
        guide.setAttribute("visibility", "visible");
        const lines = series.map((s) => ({
          className: s.className,
          label: s.label,
          value: format(Number(p[s.key] || 0)),
        }));
        tip.show(x, y(totals[i]), title(p.start), lines);
      });
    });
    root.addEventListener("mouseleave", () => {
      guide.setAttribute("visibility", "hidden");
      tip.hide();
    });
  });
}

/** rows: [{label, sub?, value, display, href?}] drawn as labelled horizontal bars, in the given order. */
export function bars(box, rows, { className = "s0" } = {}) {
  box.replaceChildren();
  box.classList.add("bars");
  const max = Math.max(0, ...rows.map((r) => r.value));
  for (const r of rows) {
    const row = el(r.href ? "a" : "div", "bar-row");
    if (r.href) row.href = r.href;
    const head = el("div", "bar-head");
    const name = el("span", "bar-label", r.label);
    name.title = r.title || r.label;
    head.append(name);
    if (r.sub) head.append(el("span", "bar-sub", r.sub));
    head.append(el("span", "bar-value", r.display));
    const track = el("div", "bar-track");
    const fill = el("div", `bar-fill ${r.className || className}`);
    fill.style.width = `${max > 0 ? Math.max(1.5, (r.value / max) * 100) : 0}%`;
    track.appendChild(fill);
    row.append(head, track);
    box.appendChild(row);
  }
}

/** rows: [{label, value, display}]; the donut shows shares, the legend the figures. */
export function donut(box, rows, { centre, centreSub } = {}) {
  box.replaceChildren();
  box.classList.add("donut");
  const total = rows.reduce((sum, r) => sum + r.value, 0);
  const size = 168;
  const r = 64;
  const root = svg("svg", { width: size, height: size, viewBox: `0 0 ${size} ${size}`, role: "img" }, box);
  root.setAttribute("aria-label", "share of spend");
  svg("circle", { cx: size / 2, cy: size / 2, r, class: "donut-track" }, root);
  let angle = -Math.PI / 2;
  rows.forEach((row, i) => {
    const share = total > 0 ? row.value / total : 0;
    if (share <= 0) return;
    const className = `c${i % 8}`;
    if (share >= 0.9999) {
      svg("circle", { cx: size / 2, cy: size / 2, r, class: `donut-slice ${className}` }, root);
      return;
    }
    const end = angle + share * Math.PI * 2;
    const p = (a) => `${(size / 2 + r * Math.cos(a)).toFixed(2)},${(size / 2 + r * Math.sin(a)).toFixed(2)}`;
    const large = end - angle > Math.PI ? 1 : 0;
    const arc = svg(
      "path",
      { d: `M${p(angle)}A${r},${r} 0 ${large} 1 ${p(end)}`, class: `donut-slice ${className}` },
      root,
    );
    svg("title", {}, arc).textContent = `${row.label}: ${row.display}`;
    angle = end;
  });
  const c = svg("text", { x: size / 2, y: size / 2 + 2, class: "donut-centre", "text-anchor": "middle" }, root);
  c.textContent = centre ?? "";
  const s = svg("text", { x: size / 2, y: size / 2 + 20, class: "donut-sub", "text-anchor": "middle" }, root);
  s.textContent = centreSub ?? "";
  const legend = el("ul", "legend");
  rows.forEach((row, i) => {
    const li = el("li");
    const share = total > 0 ? Math.round((row.value / total) * 100) : 0;
    li.append(
      el("span", `swatch c${i % 8}`),
      el("span", "legend-label", row.label),
      el("span", "legend-value", `${row.display} · ${share}%`),
    );
    legend.appendChild(li);
  });
  box.appendChild(legend);
}

/** A half-circle gauge of `value` against `max`: green, then amber from 75%, red from 90%. */
export function gauge(box, { value, max, title, caption, note }) {
  box.replaceChildren();
  box.classList.add("gauge");
  const fraction = max > 0 ? value / max : 0;
  const level = fraction >= 0.9 ? "danger" : fraction >= 0.75 ? "warn" : "ok";
  const w = 180;
  const r = 72;
  const cx = w / 2;
  const cy = 86;
  const root = svg("svg", { width: w, height: 100, viewBox: `0 0 ${w} 100`, role: "meter" }, box);
  root.setAttribute("aria-valuenow", String(value));
  root.setAttribute("aria-valuemax", String(max));
  root.setAttribute("aria-label", title);
  const point = (f) => `${(cx - r * Math.cos(Math.PI * f)).toFixed(2)},${(cy - r * Math.sin(Math.PI * f)).toFixed(2)}`;
  svg("path", { d: `M${point(0)}A${r},${r} 0 0 1 ${point(1)}`, class: "gauge-track" }, root);
  const shown = Math.min(1, Math.max(0, fraction));
  if (shown > 0)
    svg(
      "path",
      { d: `M${point(0)}A${r},${r} 0 0 1 ${point(Math.max(shown, 0.004))}`, class: `gauge-value ${level}` },
      root,
    );
  const pct = svg("text", { x: cx, y: cy - 14, class: "gauge-pct", "text-anchor": "middle" }, root);
  pct.textContent = `${fraction > 0 && fraction < 0.01 ? "<1" : Math.round(fraction * 100)}%`;
  box.append(el("div", "gauge-title", title), el("div", "gauge-caption", caption));
  if (note) box.append(el("div", "gauge-note", note));
  box.dataset.level = level;
}
