// tunterm's status page: hand-written, no dependencies. It reads
// /api/summary, /api/tunnels and /api/clients every few seconds, plots the
// rates /api/events streams once a second, and posts the two actions with
// the page's token (X-Tunterm-Token), which a page of another site cannot
// read.
"use strict";

const TOKEN = document.querySelector('meta[name="tunterm-token"]').content;
const $ = (id) => document.getElementById(id);

function msg(text) {
  $("msg").textContent = text;
}

function el(tag, text, attrs) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

function kv(table, rows) {
  table.replaceChildren(
    ...rows.map(([k, v, cls]) => {
      const tr = el("tr");
      tr.append(el("td", k));
      const td = el("td", v);
      if (cls) td.className = cls;
      tr.append(td);
      return tr;
    })
  );
}

function human(n) {
  if (n >= 1e9) return (n / 1e9).toFixed(2) + " G";
  if (n >= 1e6) return (n / 1e6).toFixed(2) + " M";
  if (n >= 1e3) return (n / 1e3).toFixed(1) + " k";
  return n.toFixed(n < 10 && n % 1 ? 1 : 0);
}

async function getJson(url) {
  const r = await fetch(url, { cache: "no-store" });
  if (!r.ok) throw new Error(url + ": " + r.status + " " + (await r.text()));
  return r.json();
}

// ---- summary: edge, VLANs, monitoring, fast path ----
async function refreshSummary() {
  const s = await getJson("/api/summary");
  $("edge-name").textContent = s.name;
  const healthy = s.monitoring.state === "healthy";
  kv($("edge"), [
    ["name", s.name],
    ["version", s.version],
    ["config", s.config_digest.slice(0, 19) + "…"],
    ["uptime", s.uptime + " s"],
    ["health", s.monitoring.state, healthy ? "ok" : "bad"],
    ["L2TP tunnels", s.num_tunnels],
    ["mGRE peers", s.gre_peers.length],
    ["FDB entries", s.fdb_entries],
    ["clients", s.clients.clients],
    ["captures running", s.captures.length],
    ["control connections", s.control.active + " / " + s.control.max_connections],
    ["HTTP connections", s.http.connections_active + " / " + s.http.connections_max],
    ["HTTP refused (busy / host / token)",
      s.http.refused_busy + " / " + s.http.refused_host + " / " + s.http.refused_token],
  ]);
  const vlanRows = [];
  for (const h of s.services.host_ports || []) {
    vlanRows.push(["host port VLAN " + h.vlan, (h.ipv4 || "") + " " + (h.ipv6 || "") + " (" + h.ifname + ")"]);
  }
  for (const r of s.services.dhcp_relay_vlans || []) {
    vlanRows.push(["DHCP relay VLAN " + r.vlan, r.giaddr + " → " + r.servers.join(", ")]);
  }
  vlanRows.push(["IGMP snooping VLANs", s.mcast.snooping_vlans || "none"]);
  vlanRows.push(["multicast groups", s.mcast.groups]);
  vlanRows.push(["mDNS VLANs", s.mcast.mdns_vlans || "none"]);
  vlanRows.push(["SSDP VLANs", s.mcast.ssdp_vlans || "none"]);
  kv($("vlans"), vlanRows);
  const mon = [["state", s.monitoring.state, healthy ? "ok" : "bad"]];
  for (const c of s.monitoring.checks || []) {
    mon.push([c.name, c.state + " (" + c.probes + " probes, " + c.probe_failures + " failed)",
      c.state === "ok" || c.state === "passing" ? "ok" : ""]);
  }
  kv($("monitoring"), mon);
  const f = s.fast_path;
  const fp = [["mode", f.mode]];
  if (f.mode !== "off") {
    fp.push(["attached", (f.attached || []).join(", ")]);
    fp.push(["sessions / templates", f.sessions + " / " + f.templates]);
    fp.push(["FDB", f.fdb + " of " + f.fdb_capacity + " (overflow " + f.fdb_overflow + ")"]);
    for (const [k, v] of Object.entries(f.counters || {})) fp.push([k, v]);
  }
  kv($("fastpath"), fp);
}

// ---- tunnels: server-side filter, sort and pages ----
const tunnels = { offset: 0, limit: 50, sort: "id", desc: false, filter: "", matching: 0 };

async function refreshTunnels() {
  const q = new URLSearchParams({
    filter: tunnels.filter, sort: tunnels.sort, desc: tunnels.desc ? "1" : "0",
    offset: tunnels.offset, limit: tunnels.limit,
  });
  const page = await getJson("/api/tunnels?" + q);
  tunnels.matching = page.matching;
  const last = Math.max(0, Math.ceil(page.matching / tunnels.limit) - 1);
  $("tunnel-pages").textContent =
    "page " + (Math.floor(tunnels.offset / tunnels.limit) + 1) + " of " + (last + 1) +
    " (" + page.matching + " of " + page.total + ")";
  $("tunnels").tBodies[0].replaceChildren(
    ...page.rows.map((t) => {
      const tr = el("tr", null, { "data-ap": t.ap, "data-kind": t.kind });
      for (const v of [t.kind + " " + t.id, t.ap, t.remote, t.state, t.uptime, t.sessions, t.retransmits]) {
        tr.append(el("td", v));
      }
      const td = el("td");
      if (t.kind === "l2tp" && t.ap) {
        const b = el("button", "Disconnect", { "data-ap": t.ap, class: "disconnect" });
        b.addEventListener("click", () => disconnect(t.ap));
        td.append(b);
      }
      tr.append(td);
      return tr;
    })
  );
}

$("tunnel-filter").addEventListener("input", (e) => {
  tunnels.filter = e.target.value.trim();
  tunnels.offset = 0;
  refreshTunnels().catch((err) => msg(err.message));
});
$("tunnel-prev").addEventListener("click", () => {
  tunnels.offset = Math.max(0, tunnels.offset - tunnels.limit);
  refreshTunnels().catch((err) => msg(err.message));
});
$("tunnel-next").addEventListener("click", () => {
  if (tunnels.offset + tunnels.limit < tunnels.matching) tunnels.offset += tunnels.limit;
  refreshTunnels().catch((err) => msg(err.message));
});
for (const th of document.querySelectorAll("th.sortable")) {
  th.addEventListener("click", () => {
    const s = th.dataset.sort;
    tunnels.desc = tunnels.sort === s ? !tunnels.desc : false;
    tunnels.sort = s;
    refreshTunnels().catch((err) => msg(err.message));
  });
}

// ---- clients ----
async function refreshClients() {
  const r = await getJson("/api/clients?limit=100");
  if (r.error) throw new Error("clients: " + r.error);
  const page = r.result.clients;
  $("clients").tBodies[0].replaceChildren(
    ...page.entries.map((c) => {
      const tr = el("tr");
      for (const v of [c.mac, c.vlan, (c.ips || []).join(" "), c.ap]) tr.append(el("td", v));
      return tr;
    })
  );
  $("clients-more").textContent = page.total > page.entries.length ? page.entries.length + " of " + page.total : "";
}

// ---- actions ----
async function post(url, body) {
  return fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Tunterm-Token": TOKEN },
    body: JSON.stringify(body),
  });
}

async function disconnect(ap) {
  if (!window.confirm("Disconnect AP " + ap + "? Its tunnel closes; the AP will reconnect (maybe to another edge).")) return;
  const r = await post("/api/disconnect", { macs: [ap] });
  const text = await r.text();
  if (!r.ok) return msg("disconnect refused: " + text);
  const line = JSON.parse(text);
  if (line.error) return msg("disconnect: " + line.error);
  msg("disconnected: " + line.result["disconnect-aps"].disconnected_aps.join(", "));
  refreshTunnels().catch((err) => msg(err.message));
}

$("capture-start").addEventListener("click", async () => {
  const req = {
    points: [{ name: $("capture-point").value }],
    num_packets: Number($("capture-count").value),
    duration: Number($("capture-duration").value),
  };
  const f = $("capture-filter").value.trim();
  if (f) req.filter = f;
  $("capture-state").textContent = "capturing…";
  try {
    const r = await post("/api/capture", req);
    if (!r.ok) {
      $("capture-state").textContent = "refused: " + (await r.text());
      return;
    }
    const name = (r.headers.get("Content-Disposition") || "").match(/filename="([^"]+)"/);
    const blob = await r.blob();
    const a = el("a", null, { href: URL.createObjectURL(blob), download: name ? name[1] : "capture.pcapng" });
    document.body.append(a);
    a.click();
    a.remove();
    $("capture-state").textContent = "done: " + blob.size + " bytes";
  } catch (err) {
    $("capture-state").textContent = "failed: " + err.message;
  }
});

// ---- live plots ----
const HISTORY = 120;
const series = { pps_in: [], pps_out: [], bps_in: [], bps_out: [], pps_fast: [] };
// For tests and the curious: the samples received so far.
window.tuntermRates = series;

function plot(canvas, lines, unit) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 40;
  ctx.clearRect(0, 0, w, h);
  let max = 1;
  for (const [data] of lines) for (const v of data) max = Math.max(max, v);
  ctx.strokeStyle = "#ccc";
  ctx.fillStyle = "#666";
  ctx.font = "11px sans-serif";
  ctx.beginPath();
  ctx.moveTo(pad, 5);
  ctx.lineTo(pad, h - 15);
  ctx.lineTo(w - 5, h - 15);
  ctx.stroke();
  ctx.fillText(human(max) + unit, 2, 12);
  ctx.fillText("0", 2, h - 15);
  let lx = pad + 10;
  for (const [data, color, label] of lines) {
    ctx.strokeStyle = color;
    ctx.beginPath();
    data.forEach((v, i) => {
      const x = pad + ((w - pad - 5) * (i + HISTORY - data.length)) / (HISTORY - 1);
      const y = h - 15 - ((h - 25) * v) / max;
      if (i === 0) ctx.moveTo(x, y);
      else ctx.lineTo(x, y);
    });
    ctx.stroke();
    ctx.fillStyle = color;
    ctx.fillText(label, lx, h - 2);
    lx += 80;
  }
}

function draw() {
  plot($("plot-pps"), [[series.pps_in, "#06c", "in"], [series.pps_out, "#c60", "out"], [series.pps_fast, "#090", "fast path"]], "pps");
  plot($("plot-bps"), [[series.bps_in, "#06c", "in"], [series.bps_out, "#c60", "out"]], "B/s");
}

function startEvents() {
  const es = new EventSource("/api/events");
  es.addEventListener("rates", (e) => {
    const r = JSON.parse(e.data);
    for (const k of Object.keys(series)) {
      series[k].push(r[k]);
      if (series[k].length > HISTORY) series[k].shift();
    }
    $("rates").textContent =
      "in " + human(r.pps_in) + "pps " + human(r.bps_in) + "B/s · out " +
      human(r.pps_out) + "pps " + human(r.bps_out) + "B/s";
    draw();
  });
  es.onerror = () => msg("live rates: reconnecting…");
  es.onopen = () => msg("");
}

async function refreshAll() {
  try {
    await Promise.all([refreshSummary(), refreshTunnels(), refreshClients()]);
  } catch (err) {
    msg(err.message);
  }
}

draw();
startEvents();
refreshAll();
setInterval(refreshAll, 3000);
