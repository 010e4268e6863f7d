/**
 * A small line chart in SVG, with no library: time along x (whole seconds since the epoch),
 * lines from 0 up along y, gridlines, axis labels with their unit, a legend with each line's
 * newest value, and a readout of the values under the pointer.
 *
 * Accessible as an image with a title and a description: the SVG is labelled by the chart's
 * heading and described by a sentence with the newest values and the highest of the window,
 * rewritten at each draw but not live (a screen reader reads it when it comes to the chart,
 * instead of hearing it every second). Colours come from the stylesheet (`.tone-*`), so dark
 * mode and the Content-Security-Policy (no inline style) need nothing here.
 * @module admin/chart
 */

const SVG = "http://www.w3.org/2000/svg";
const HEIGHT = 190;
// Room around the plot: the unit above the y labels, the time labels and the axis title below.
const MARGIN = { top: 22, right: 12, bottom: 40, left: 46 };
const TICK_S = 300; // a time label every 5 minutes
const clock = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const clockSeconds = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
const compact = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 2 });

let charts = 0;

function svg(tag, attributes = {}, text = null) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, String(value));
  if (text !== null) element.textContent = text;
  return element;
}

function html(tag, className, text = null) {
  const element = document.createElement(tag);
  if (className) element.className = className;
  if (text !== null) element.textContent = text;
  return element;
}

/** The smallest of 1, 2, 2.5 or 5 times a power of ten that is at least `value`. */
function niceStep(value) {
  const power = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 2.5, 5, 10].map((m) => m * power).find((step) => step >= value * (1 - 1e-9));
}

/**
 * @typedef {object} Line
 * @property {string} key
 * @property {string} label
 * @property {string} tone a colour of the stylesheet: blue, orange, green, red, purple
 *
 * @typedef {object} ChartOptions
 * @property {string} key names the chart (`data-chart`)
 * @property {string} title
 * @property {string} unit the y axis's, e.g. "per second"
 * @property {Line[]} lines
 * @property {(value: number) => string} format a value with its unit, for the legend and readout
 * @property {number} [floor] the y axis reaches at least this (an idle chart is not all noise)
 * @property {boolean} [whole] values are whole numbers: no tick between them
 */

export class LineChart {
  /**
   * @param {HTMLElement} parent where the chart's figure is appended
   * @param {ChartOptions} options
   */
  constructor(parent, options) {
    this.options = options;
    const id = `chart-${++charts}`;
    this.figure = html("figure", "chart");
    this.figure.dataset.chart = options.key;
    const caption = html("figcaption", "chart-head");
    const title = html("h3", "chart-title", options.title);
    title.id = `${id}-title`;
    caption.append(title);
    this.legend = html("ul", "chart-legend");
    this.legend.setAttribute("aria-hidden", "true"); // the description says the same
    this.items = new Map();
    for (const line of options.lines) {
      const item = html("li", `tone-${line.tone}`);
      item.dataset.series = line.key;
      const value = html("span", "chart-value", "–");
      item.append(html("span", "swatch"), html("span", "chart-label", line.label), value);
      this.legend.append(item);
      this.items.set(line.key, { item, value });
    }
    caption.append(this.legend);

    this.plot = html("div", "chart-plot");
    this.svg = svg("svg", { role: "img", "aria-labelledby": title.id, "aria-describedby": `${id}-summary`, height: HEIGHT });
    this.grid = svg("g", { class: "grid" });
    this.axes = svg("g", { class: "axes" });
    this.paths = new Map(options.lines.map((line) => [line.key, svg("path", { class: `line tone-${line.tone}` })]));
    this.cursor = svg("line", { class: "cursor", visibility: "hidden" });
    this.svg.append(this.grid, this.axes, ...this.paths.values(), this.cursor);
    this.readout = html("div", "chart-readout");
    this.readout.hidden = true;
    this.readout.setAttribute("aria-hidden", "true");
    this.plot.append(this.svg, this.readout);
    this.summary = html("p", "visually-hidden chart-summary", `${options.title}: no figures yet.`);
    this.summary.id = `${id}-summary`;
    this.figure.append(caption, this.plot, this.summary);
    parent.append(this.figure);

    this.data = null;
    this.layout = null;
    this.svg.addEventListener("pointermove", (event) => this.point(event));
    this.svg.addEventListener("pointerdown", (event) => this.point(event));
    this.svg.addEventListener("pointerleave", () => this.unpoint());
  }

  /**
   * Draw the window `from`..`to` (seconds): `values[key][i]` is the figure of second `from + i`,
   * null where there is none (the line breaks there).
   * @param {{from: number, to: number, values: Record<string, (number|null)[]>}} data
   */
  draw(data) {
    this.data = data;
    const { from, to, values } = data;
    const { floor = 1, whole = false } = this.options;
    const width = Math.max(240, Math.round(this.plot.clientWidth || 600));
    const plotWidth = width - MARGIN.left - MARGIN.right;
    const plotHeight = HEIGHT - MARGIN.top - MARGIN.bottom;
    let highest = 0;
    for (const line of this.options.lines) for (const value of values[line.key]) if (value > highest) highest = value;
    let step = niceStep(Math.max(highest, floor) / 4);
    if (whole) step = Math.max(1, Math.round(step));
    const top = step * Math.ceil(Math.max(highest, floor) / step);
    const x = (second) => MARGIN.left + ((second - from) / (to - from)) * plotWidth;
    const y = (value) => MARGIN.top + plotHeight - (value / top) * plotHeight;
    this.layout = { width, plotWidth, x, y };
    this.svg.setAttribute("viewBox", `0 0 ${width} ${HEIGHT}`);
    this.svg.setAttribute("width", width);
    this.svg.dataset.from = from;
    this.svg.dataset.last = to;

    const grid = [];
    const axes = [svg("text", { class: "axis-title", x: 4, y: 12 }, this.options.unit)];
    for (let value = 0; value <= top + step / 2; value += step) {
      const at = y(value).toFixed(1);
      grid.push(svg("line", { x1: MARGIN.left, x2: width - MARGIN.right, y1: at, y2: at }));
      axes.push(svg("text", { class: "tick y", x: MARGIN.left - 6, y: at, "dominant-baseline": "middle", "text-anchor": "end" }, compact.format(value)));
    }
    const bottom = MARGIN.top + plotHeight;
    for (let second = Math.ceil(from / TICK_S) * TICK_S; second <= to; second += TICK_S) {
      const at = x(second).toFixed(1);
      grid.push(svg("line", { class: "vertical", x1: at, x2: at, y1: MARGIN.top, y2: bottom }));
      axes.push(svg("text", { class: "tick x", x: at, y: bottom + 15, "text-anchor": "middle" }, clock.format(second * 1000)));
    }
    axes.push(svg("text", { class: "axis-title", x: MARGIN.left + plotWidth / 2, y: HEIGHT - 4, "text-anchor": "middle" }, "time (local), last 15 minutes"));
    this.grid.replaceChildren(...grid);
    this.axes.replaceChildren(...axes);

    for (const line of this.options.lines) {
      // A line through the seconds that have a figure; one alone is a dot (round caps).
      const column = values[line.key];
      let d = "";
      let open = false;
      for (let i = 0; i < column.length; i += 1) {
        const value = column[i];
        if (value === null || value === undefined) {
          open = false;
          continue;
        }
        const next = column[i + 1];
        const lone = !open && (next === null || next === undefined);
        d += `${open ? "L" : "M"}${x(from + i).toFixed(1)} ${y(value).toFixed(1)}${lone ? "l0 0" : ""}`;
        open = true;
      }
      this.paths.get(line.key).setAttribute("d", d);
    }
    this.describe(values);
    if (this.pointed !== undefined) this.show(this.pointed);
  }

  /** The legend's values and the description: the newest figures and the window's highest. */
  describe(values) {
    const { format, lines, title } = this.options;
    const now = [];
    const peaks = [];
    for (const line of lines) {
      const column = values[line.key];
      const latest = column[column.length - 1];
      const { item, value } = this.items.get(line.key);
      const text = typeof latest === "number" ? format(latest) : "–";
      if (value.textContent !== text) value.textContent = text;
      item.dataset.value = typeof latest === "number" ? String(latest) : "";
      now.push(`${line.label} ${typeof latest === "number" ? format(latest) : "no figure"}`);
      const highest = column.reduce((top, v) => (typeof v === "number" && v > top ? v : top), 0);
      peaks.push(`${line.label} ${format(highest)}`);
    }
    const at = clockSeconds.format(this.data.to * 1000);
    this.summary.textContent = `${title}, last 15 minutes. At ${at}: ${now.join(", ")}. Highest: ${peaks.join(", ")}.`;
  }

  /** The readout of the second under the pointer. */
  point(event) {
    if (!this.data || !this.layout) return;
    const box = this.svg.getBoundingClientRect();
    const scale = this.layout.width / box.width;
    const px = (event.clientX - box.left) * scale;
    const { from, to } = this.data;
    const second = Math.round(from + ((px - MARGIN.left) / this.layout.plotWidth) * (to - from));
    if (second < from || second > to) return this.unpoint();
    this.pointed = second;
    this.show(second);
  }

  show(second) {
    const { from, to, values } = this.data;
    if (second < from || second > to) return this.unpoint();
    const at = this.layout.x(second);
    this.cursor.setAttribute("x1", at);
    this.cursor.setAttribute("x2", at);
    this.cursor.setAttribute("y1", MARGIN.top);
    this.cursor.setAttribute("y2", HEIGHT - MARGIN.bottom);
    this.cursor.setAttribute("visibility", "visible");
    const rows = [html("div", "readout-time", clockSeconds.format(second * 1000))];
    for (const line of this.options.lines) {
      const value = values[line.key][second - from];
      const row = html("div", `tone-${line.tone}`);
      row.append(html("span", "swatch"), `${line.label}: ${typeof value === "number" ? this.options.format(value) : "–"}`);
      rows.push(row);
    }
    this.readout.replaceChildren(...rows);
    this.readout.hidden = false;
    // Beside the cursor, on whichever side has room (CSSOM, which the CSP allows).
    const fraction = at / this.layout.width;
    this.readout.classList.toggle("left", fraction > 0.5);
    this.readout.style.setProperty("--at", `${(fraction * 100).toFixed(2)}%`);
  }

  unpoint() {
    this.pointed = undefined;
    this.cursor.setAttribute("visibility", "hidden");
    this.readout.hidden = true;
  }
}
