// lab_web's browser: the system Chromium, headless, driven by
// playwright-core against tunterm's status page. Run inside the edge's
// namespace (the page listens on its loopback):
//
//   node drive.js BASE_URL AP_TO_DISCONNECT OUT_DIR
//
// It saves OUT_DIR/metrics.txt (one scrape) and OUT_DIR/capture.pcapng
// (the capture button's download), and prints one JSON object with what
// it saw; the Rust test judges it (with tunterm stats, promtool, tshark).
"use strict";

const http = require("http");
const net = require("net");
const fs = require("fs");
const path = require("path");
const { chromium } = require("playwright-core");

const [base, apToDisconnect, outDir] = process.argv.slice(2);
const url = new URL(base);

// A raw request, any Host and headers (fetch would not let us forge Host).
function raw(method, p, headers, body) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: url.hostname, port: url.port, method, path: p, headers, agent: false },
      (res) => {
        let data = "";
        res.on("data", (c) => (data += c));
        res.on("end", () => resolve({ status: res.statusCode, body: data }));
      }
    );
    req.on("error", reject);
    if (body) req.write(body);
    req.end();
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// A connection that sends `request` and collects what comes back.
function connect(request) {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: url.hostname, port: Number(url.port) }, () => {
      s.data = "";
      s.on("data", (c) => (s.data += c));
      if (request) s.write(request);
      resolve(s);
    });
    s.on("error", reject);
  });
}

// The server's caps: event streams, then connections.
async function caps() {
  const get = (p) => `GET ${p} HTTP/1.1\r\nHost: ${url.host}\r\n\r\n`;
  const streams = [];
  for (let i = 0; i < 8; i++) streams.push(await connect(get("/api/events")));
  const extra = await connect(get("/api/events"));
  await sleep(500);
  const first = streams.map((s) => s.data.split("\r\n")[0]);
  const ninth = extra.data.split("\r\n")[0];
  for (const s of [...streams, extra]) s.destroy();
  await sleep(2500); // the streams notice their clients went
  const idle = [];
  for (let i = 0; i < 32; i++) idle.push(await connect(null));
  await sleep(200);
  const over = await connect(null);
  await sleep(500);
  const overAnswer = over.data.split("\r\n")[0];
  for (const s of [...idle, over]) s.destroy();
  await sleep(500);
  return { streams: first, ninth_stream: ninth, connection_33: overAnswer };
}

async function main() {
  const out = { steps: [] };
  const step = (name, value) => {
    out.steps.push(name);
    out[name] = value;
  };

  const metrics = await raw("GET", "/metrics", {});
  fs.writeFileSync(path.join(outDir, "metrics.txt"), metrics.body);
  step("metrics_status", metrics.status);

  // Cross-site attempts: no token, a foreign origin, a rebinding Host.
  const json = { "Content-Type": "application/json" };
  const noToken = await raw("POST", "/api/disconnect", json, JSON.stringify({ macs: [apToDisconnect] }));
  step("no_token_status", noToken.status);
  const page0 = await raw("GET", "/", {});
  const token = (page0.body.match(/name="tunterm-token" content="([0-9a-f]+)"/) || [])[1] || "";
  step("token_length", token.length);
  const foreign = await raw(
    "POST",
    "/api/disconnect",
    { ...json, "X-Tunterm-Token": token, Origin: "http://evil.example" },
    JSON.stringify({ macs: [apToDisconnect] })
  );
  step("foreign_origin_status", foreign.status);
  const rebound = await raw("GET", "/api/summary", { Host: "evil.example:" + url.port });
  step("foreign_host_status", rebound.status);
  step("caps", await caps());
  const after = await raw("GET", "/metrics", {});
  fs.writeFileSync(path.join(outDir, "metrics-after.txt"), after.body);

  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
  try {
    const context = await browser.newContext({ acceptDownloads: true });
    const page = await context.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    page.on("dialog", (d) => d.accept());
    await page.goto(base, { waitUntil: "load" });

    // The lab's tunnels in the table.
    await page.waitForFunction(() => document.querySelectorAll("#tunnels tbody tr").length >= 2, null, {
      timeout: 15000,
    });
    step(
      "tunnel_aps",
      await page.$$eval("#tunnels tbody tr", (rows) => rows.map((r) => r.dataset.ap).sort())
    );
    // The filter narrows it to one.
    await page.fill("#tunnel-filter", apToDisconnect);
    await page.waitForFunction(
      (ap) => {
        const rows = [...document.querySelectorAll("#tunnels tbody tr")];
        return rows.length === 1 && rows[0].dataset.ap === ap;
      },
      apToDisconnect,
      { timeout: 10000 }
    );
    step("filtered_rows", await page.$$eval("#tunnels tbody tr", (rows) => rows.length));

    // The plot's data: samples arrive, and one shows the ping's packets.
    const t0 = Date.now();
    await page.waitForFunction(
      () => window.tuntermRates && window.tuntermRates.pps_in.filter((v) => v > 0).length >= 2,
      null,
      { timeout: 15000 }
    );
    step("plot_ms", Date.now() - t0);
    step("pps_in", await page.evaluate(() => window.tuntermRates.pps_in.slice()));
    step("bps_in", await page.evaluate(() => window.tuntermRates.bps_in.slice()));
    step("pps_fast", await page.evaluate(() => window.tuntermRates.pps_fast.slice()));
    step(
      "plot_pixels",
      await page.evaluate(() => {
        const c = document.getElementById("plot-pps");
        const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
        let blue = 0;
        for (let i = 0; i < d.length; i += 4) if (d[i + 2] > 150 && d[i] < 60) blue++;
        return blue;
      })
    );

    // The capture button: a pcapng download.
    await page.fill("#capture-filter", "vlan and icmp");
    await page.fill("#capture-count", "4");
    await page.fill("#capture-duration", "20");
    const [download] = await Promise.all([
      page.waitForEvent("download", { timeout: 30000 }),
      page.click("#capture-start"),
    ]);
    const pcap = path.join(outDir, "capture.pcapng");
    await download.saveAs(pcap);
    step("capture_bytes", fs.statSync(pcap).size);
    step("capture_name", download.suggestedFilename());

    // The disconnect button of the AP's row.
    await page.click(`button.disconnect[data-ap="${apToDisconnect}"]`);
    await page.waitForFunction(() => document.getElementById("msg").textContent.startsWith("disconnected"), null, {
      timeout: 10000,
    });
    step("disconnect_message", await page.textContent("#msg"));
    step("page_errors", errors);
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(out));
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : String(e));
  process.exit(1);
});
