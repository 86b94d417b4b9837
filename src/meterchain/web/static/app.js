// meterchain pages: charts (ECharts), live updates (server-sent events), htmx partials.
"use strict";

const body = document.body;
const charts = {};

function data(id) {
  const node = document.getElementById(id);
  return node ? JSON.parse(node.textContent) : null;
}

function chart(id) {
  const node = document.getElementById(id);
  if (!node || typeof echarts === "undefined") return null;
  if (!charts[id]) {
    charts[id] = echarts.init(node, null, { renderer: "canvas" });
    window.addEventListener("resize", () => charts[id].resize());
  }
  return charts[id];
}

function localTime(iso) {
  const options = { timeZone: body.dataset.tz, dateStyle: "short", timeStyle: "short" };
  return new Date(iso).toLocaleString(body.dataset.lang, options);
}

const zoom = [{ type: "inside" }, { type: "slider", height: 18, bottom: 4 }];

function drawCommunity(community) {
  const words = data("i18n-community");
  const power = chart("chart-power");
  if (power) {
    power.setOption({
      aria: { enabled: true },
      animation: false,
      grid: { left: 50, right: 16, top: 20, bottom: 60 },
      tooltip: { trigger: "axis" },
      xAxis: { type: "category", data: community.meters.map((m) => m.meter_id), axisLabel: { rotate: 45 } },
      yAxis: { type: "value", name: "kW" },
      dataZoom: zoom,
      series: [{ name: words.import, type: "bar",
        data: community.meters.map((m) => (m.power_w == null ? null : +(m.power_w / 1000).toFixed(3))),
        itemStyle: { color: "#0b6e4f" } }],
    });
  }
  const prices = chart("chart-prices");
  if (prices) {
    const times = community.intervals.map((i) => localTime(i.start));
    prices.setOption({
      aria: { enabled: true },
      animation: false,
      legend: { top: 0 },
      grid: { left: 50, right: 50, top: 36, bottom: 60 },
      tooltip: { trigger: "axis" },
      xAxis: { type: "category", data: times },
      yAxis: [{ type: "value", name: "R$/kWh" }, { type: "value", name: "kWh" }],
      dataZoom: zoom,
      series: [
        { name: words.price, type: "line", step: "end", data: community.intervals.map((i) => i.price), color: "#0b6e4f" },
        { name: words.retail, type: "line", data: community.intervals.map((i) => i.retail_price), color: "#a4161a", lineStyle: { type: "dashed" } },
        { name: words.feed_in, type: "line", data: community.intervals.map((i) => i.feed_in_price), color: "#7a4b00", lineStyle: { type: "dashed" } },
        { name: words.traded, type: "bar", yAxisIndex: 1, data: community.intervals.map((i) => i.traded_wh / 1000), color: "#8fb8a8" },
      ],
    }, true);
  }
}

let meterSpan = "day";

async function drawMeter() {
  const node = document.getElementById("chart-meter");
  if (!node) return;
  const words = data("i18n-meter");
  const response = await fetch(`/api/meters/${node.dataset.meter}/readings?span=${meterSpan}`, { credentials: "same-origin" });
  if (!response.ok) return;
  const series = await response.json();
  const times = series.t.map(localTime);
  const kwh = (values) => values.map((v) => (v == null ? null : +(v / 1000).toFixed(3)));
  chart("chart-meter").setOption({
    aria: { enabled: true },
    animation: false,
    legend: { top: 0 },
    grid: { left: 50, right: 50, top: 36, bottom: 60 },
    tooltip: { trigger: "axis" },
    xAxis: { type: "category", data: times },
    yAxis: [{ type: "value", name: "kWh" }, { type: "value", name: "SoC", min: 0, max: 1 }],
    dataZoom: zoom,
    series: [
      { name: words.imported, type: "bar", stack: "grid", data: kwh(series.imported_wh), color: "#a4161a" },
      { name: words.exported, type: "bar", stack: "grid", data: kwh(series.exported_wh).map((v) => (v == null ? null : -v)), color: "#0b6e4f" },
      { name: words.bought, type: "line", data: kwh(series.bought_wh), color: "#7a4b00" },
      { name: words.sold, type: "line", data: kwh(series.sold_wh), color: "#2f5d9e" },
      { name: words.soc, type: "line", yAxisIndex: 1, data: series.soc_fraction, color: "#6b3fa0" },
    ],
  }, true);
  let saved = 0;
  chart("chart-balance").setOption({
    aria: { enabled: true },
    animation: false,
    legend: { top: 0 },
    grid: { left: 60, right: 60, top: 36, bottom: 60 },
    tooltip: { trigger: "axis" },
    xAxis: { type: "category", data: times },
    yAxis: [{ type: "value", name: "R$" }, { type: "value", name: "R$" }],
    dataZoom: zoom,
    series: [
      { name: words.balance, type: "line", data: series.balance_units.map((v) => (v == null ? null : v / 100)), color: "#0b6e4f", connectNulls: true },
      { name: words.savings, type: "line", yAxisIndex: 1, data: series.savings.map((v) => +(saved += v || 0).toFixed(2)), color: "#7a4b00" },
    ],
  }, true);
  node.dataset.points = String(series.t.length);
  node.dataset.span = meterSpan;
}

function hourLabels(rows) {
  return rows.map((r) => localTime(r.hour));
}

function drawLedger() {
  const found = data("ledger-data");
  if (!found) return;
  const words = data("i18n-ledger") || {};
  const kwh = (wh) => +(wh / 1000).toFixed(3);
  const base = { aria: { enabled: true }, animation: false, tooltip: { trigger: "axis" }, dataZoom: zoom };
  const device = chart("chart-device-hours");
  if (device && found.device_hours) {
    device.setOption({ ...base, grid: { left: 50, right: 16, top: 30, bottom: 60 },
      xAxis: { type: "category", data: hourLabels(found.device_hours) }, yAxis: { type: "value", name: "kWh" },
      series: [{ name: words.issued, type: "bar", data: found.device_hours.map((r) => kwh(r.wh)), color: "#0b6e4f" }] }, true);
    document.getElementById("chart-device-hours").dataset.points = String(found.device_hours.length);
  }
  const matching = chart("chart-matching");
  if (matching && found.matching) {
    matching.setOption({ ...base, legend: { top: 0 }, grid: { left: 50, right: 16, top: 36, bottom: 60 },
      xAxis: { type: "category", data: hourLabels(found.matching) }, yAxis: { type: "value", name: "kWh" },
      series: [
        { name: words.consumption, type: "bar", data: found.matching.map((r) => kwh(r.consumption_wh)), color: "#a4161a" },
        { name: words.certificates, type: "bar", data: found.matching.map((r) => kwh(r.certificates_wh)), color: "#0b6e4f" },
        { name: words.matched, type: "line", step: "middle", data: found.matching.map((r) => kwh(r.matched_wh)), color: "#7a4b00" },
      ] }, true);
    document.getElementById("chart-matching").dataset.points = String(found.matching.length);
  }
  const devices = chart("chart-devices");
  if (devices && found.devices) {
    const hours = [...new Set(Object.values(found.devices).flat().map((r) => r.hour))].sort();
    const series = Object.entries(found.devices).map(([meter, rows]) => {
      const byHour = Object.fromEntries(rows.map((r) => [r.hour, kwh(r.wh)]));
      return { name: meter, type: "bar", stack: "issued", data: hours.map((h) => byHour[h] ?? 0) };
    });
    devices.setOption({ ...base, legend: { top: 0 }, grid: { left: 50, right: 16, top: 36, bottom: 60 },
      xAxis: { type: "category", data: hours.map(localTime) }, yAxis: { type: "value", name: "kWh" }, series }, true);
    document.getElementById("chart-devices").dataset.points = String(hours.length);
  }
}

async function refresh() {
  if (document.getElementById("community-data")) {
    const response = await fetch("/api/community", { credentials: "same-origin" });
    if (response.ok) drawCommunity(await response.json());
  }
  await drawMeter();
  body.dataset.lastUpdate = String(Date.now());
}

function live() {
  if (body.dataset.live !== "1" || typeof EventSource === "undefined") return;
  const source = new EventSource("/api/live");
  source.addEventListener("hello", () => { body.dataset.liveConnected = "1"; });
  source.addEventListener("update", (event) => {
    body.dataset.liveInterval = JSON.parse(event.data).interval;
    if (window.htmx) htmx.trigger(body, "live");
    refresh();
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const community = data("community-data");
  if (community) drawCommunity(community);
  for (const button of document.querySelectorAll("button.span")) {
    button.addEventListener("click", () => {
      meterSpan = button.dataset.span;
      for (const other of document.querySelectorAll("button.span")) {
        other.setAttribute("aria-pressed", String(other === button));
      }
      drawMeter();
    });
  }
  drawMeter();
  drawLedger();
  live();
});
