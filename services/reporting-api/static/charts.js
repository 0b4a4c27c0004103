// Charts of the admin panel, drawn with uPlot (vendored in static/vendor/, MIT): axes
// with labels, the values under the pointer in the legend, and for screen readers a
// name on each chart and its numbers in a table only they read.
'use strict';

const CHART_COLORS = {today: '#2962ff', yesterday: '#9aa3b5', clicks: '#2962ff', conversions: '#ff9100'};

// Steps of an axis of counts: whole numbers only.
const COUNT_STEPS = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 2500, 5000, 10000, 20000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000];

const axisStyle = {stroke: '#556', grid: {stroke: '#eef0f4', width: 1}, ticks: {stroke: '#dde', width: 1}, font: '11px system-ui, sans-serif', labelFont: '12px system-ui, sans-serif'};

// Draws `opts`/`data` into `holder` once it is in the page, at the holder's width, and
// again when that width changes.
function mountPlot(holder, opts, data) {
  const width = () => Math.max(240, holder.clientWidth || 400);
  const plot = new uPlot(Object.assign({}, opts, {width: width()}), data, holder);
  if (typeof ResizeObserver === 'function') {
    new ResizeObserver(() => {
      if (Math.abs(plot.width - width()) > 4) plot.setSize({width: width(), height: opts.height});
    }).observe(holder);
  }
  requestAnimationFrame(() => plot.setSize({width: width(), height: opts.height}));
  return plot;
}

// The numbers of a chart as a table for screen readers.
function chartTable(caption, headings, rows) {
  // In a box of its own: a table is never narrower than its content, the box can be.
  return el('div', {class: 'sr-only'}, el('table', {}, el('caption', {}, caption),
    el('thead', {}, el('tr', {}, headings.map(h => el('th', {scope: 'col'}, h)))),
    el('tbody', {}, rows.map(r => el('tr', {}, r.map(v => el('td', {}, v ?? '–')))))));
}

// Today against yesterday by hour in `tz`: hours 0–23 on the x axis (today's line stops
// at the current hour), `unit` on the y axis, the hour's two values in the legend.
function hourChart(id, title, unit, today, yesterday, tz, options = {}) {
  const format = options.format || (v => String(v));
  const now = options.currentHour ?? 23;
  const hours = [...Array(24).keys()];
  const todayShown = today.map((v, h) => h <= now ? v : null);
  const name = `${title}: today against yesterday, by hour (${tz})`;
  const holder = el('div', {class: 'plot'});
  const figure = el('figure', {class: 'card chart', id, role: 'figure', 'aria-label': name},
    el('figcaption', {}, title), holder,
    chartTable(name, ['Hour', 'Today', 'Yesterday'], hours.map(h => [String(h).padStart(2, '0') + ':00', todayShown[h] === null ? null : format(todayShown[h]), format(yesterday[h])])));
  const value = (u, v) => v === null || v === undefined ? '–' : format(v);
  const opts = {
    height: 200,
    scales: {x: {time: false, range: [0, 23]}, y: {range: (u, min, max) => [0, Math.max(1, max) * 1.1]}},
    cursor: {points: {size: 7}},
    legend: {live: true},
    series: [
      {label: 'Hour', value: (u, v) => v === null || v === undefined ? '–' : String(v).padStart(2, '0') + ':00'},
      {label: 'Today', stroke: CHART_COLORS.today, width: 2, points: {show: false}, value},
      {label: 'Yesterday', stroke: CHART_COLORS.yesterday, width: 2, dash: [5, 4], points: {show: false}, value},
    ],
    axes: [
      Object.assign({}, axisStyle, {label: 'Hour (' + tz + ')', labelSize: 20, size: 34,
        splits: () => [0, 3, 6, 9, 12, 15, 18, 21], values: (u, splits) => splits.map(h => String(h).padStart(2, '0') + ':00')}),
      Object.assign({}, axisStyle, {label: unit, labelSize: 20, size: 56, values: (u, splits) => splits.map(v => format(v))},
        options.format ? {} : {incrs: COUNT_STEPS}),
    ],
  };
  requestAnimationFrame(() => { figure.plot = mountPlot(holder, opts, [hours, todayShown, yesterday]); });
  return figure;
}

// A report's clicks and conversions per row (grouped by `dimension`) as side-by-side bars, each on its own axis
// (clicks left, conversions right), the row's label under its bars (every few rows
// when there are many) and its two figures in the legend.
function reportChart(id, dimension, labels, clicks, conversions) {
  const n = labels.length;
  const index = labels.map((_, i) => i);
  const holder = el('div', {class: 'plot'});
  const name = 'Clicks and conversions by ' + dimension;
  const figure = el('figure', {class: 'card chart wide', id, role: 'figure', 'aria-label': name},
    el('figcaption', {}, name), holder,
    chartTable(name, ['Row', 'Clicks', 'Conversions'], labels.map((l, i) => [l, clicks[i], conversions[i]])));
  const bars = (align) => uPlot.paths.bars({size: [0.4, 48], align});
  const step = Math.max(1, Math.ceil(n / 12));
  const short = (s) => s.length > 16 ? s.slice(0, 15) + '…' : s;
  const opts = {
    height: 240,
    scales: {x: {time: false, range: [-0.6, Math.max(0, n - 1) + 0.6]}, y: {range: (u, min, max) => [0, Math.max(1, max) * 1.1]},
      conv: {range: (u, min, max) => [0, Math.max(1, max) * 1.1]}},
    legend: {live: true},
    cursor: {points: {show: false}},
    series: [
      {label: 'Row', value: (u, i) => i === null || i === undefined ? '–' : labels[i] ?? '–'},
      {label: 'Clicks', stroke: CHART_COLORS.clicks, fill: CHART_COLORS.clicks + 'cc', width: 0, paths: bars(-1), points: {show: false}},
      {label: 'Conversions', scale: 'conv', stroke: CHART_COLORS.conversions, fill: CHART_COLORS.conversions + 'cc', width: 0, paths: bars(1), points: {show: false}},
    ],
    axes: [
      Object.assign({}, axisStyle, {size: 40, splits: () => index.filter(i => i % step === 0),
        values: (u, splits) => splits.map(i => short(String(labels[i] ?? ''))), grid: {show: false}}),
      Object.assign({}, axisStyle, {label: 'Clicks', labelSize: 20, size: 56, incrs: COUNT_STEPS}),
      Object.assign({}, axisStyle, {scale: 'conv', side: 1, label: 'Conversions', labelSize: 20, size: 56, grid: {show: false}, incrs: COUNT_STEPS}),
    ],
  };
  requestAnimationFrame(() => { figure.plot = mountPlot(holder, opts, [index, clicks, conversions]); });
  return figure;
}
