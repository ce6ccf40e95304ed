// Drives Debian's Chromium (headless) through the dashboard of a running router, as a user
// would: the page loads and lists the routes of the known script, filters them, shows a route's
// servers, shows live traffic as totals, p50/p99 latency and request/error-rate sparklines per
// route and per service, shows a script error after a broken save and clears it after the fix,
// explains a request, lists the certificates of the router's TLS entrypoint (secure.test,
// declared by the script, and the self-signed default), shows resolver names from a fixed API
// answer (no ACME server here) and the empty state of a router without TLS, shows the TCP and
// UDP routes with their connections/sessions, bytes and a new-connections sparkline (and the
// TLS modes, down servers and human-readable bytes of a fixed API answer; no TCP/UDP tab for a
// router without such routes), and stays 800 px wide at 800 px (the routes, services, TCP and
// UDP tables fitting without scrolling).
// Run by tests/it/dashboard.rs, which starts the router and passes:
//   DASHBOARD_URL  the admin listener's base URL     SCRIPT_FILE  the script the router watches
//   SHOT_DIR       where screenshots go (test artifacts)   WEB_ADDR  the web entrypoint (host:port)
//   TCP_ADDR, UDP_ADDR  the TCP and UDP entrypoints (host:port), to line-echo servers
//   TCP_CONNECTIONS, UDP_SESSIONS  how many connections and sessions the Rust test made first
// Every wait is bounded; any failure exits 1 with what was expected.
import { chromium } from "playwright-core";
import fs from "node:fs";
import path from "node:path";
import http from "node:http";
import net from "node:net";
import dgram from "node:dgram";

const base = process.env.DASHBOARD_URL;
const scriptFile = process.env.SCRIPT_FILE;
const shots = process.env.SHOT_DIR;
const WAIT = 15000;

const step = (m) => console.log(`dashboard: ${m}`);

// One request to the router's web entrypoint with the given Host and path: its status.
function hit(host, path = "/") {
  const [hostname, port] = process.env.WEB_ADDR.split(":");
  return new Promise((resolve, reject) => {
    const req = http.request({ hostname, port: Number(port), path, headers: { host } }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode));
    });
    req.on("error", reject);
    req.setTimeout(5000, () => req.destroy(new Error("request timed out")));
    req.end();
  });
}

const addrOf = (v) => { const i = v.lastIndexOf(":"); return { host: v.slice(0, i), port: Number(v.slice(i + 1)) }; };
// One TCP connection through the router's TCP route: a line out, its echo back, closed.
function tcpEcho(line) {
  const { host, port } = addrOf(process.env.TCP_ADDR);
  return new Promise((resolve, reject) => {
    const c = net.connect({ host, port }, () => c.write(`${line}\n`));
    let got = "";
    c.setTimeout(5000, () => c.destroy(new Error("TCP echo timed out")));
    c.on("data", (d) => { got += d; if (got.includes("\n")) c.end(); });
    c.on("error", reject);
    c.on("close", () => (got.trim() === `echo: ${line}` ? resolve() : reject(new Error(`TCP echo answered ${JSON.stringify(got)}`))));
  });
}
// One datagram from a new socket (a new UDP session) and its answer.
function udpEcho(payload) {
  const { host, port } = addrOf(process.env.UDP_ADDR);
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket("udp4");
    const timer = setTimeout(() => { s.close(); reject(new Error("no UDP answer within 5 s")); }, 5000);
    s.on("message", (m) => {
      clearTimeout(timer);
      s.close();
      String(m).endsWith(` ${payload}`) ? resolve() : reject(new Error(`UDP echo answered ${m}`));
    });
    s.send(payload, port, host, (e) => e && reject(e));
  });
}

// Playwright gives the browser a new empty profile of its own.
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-quic", "--no-first-run", "--disable-component-update", "--disable-sync"],
});
// How many polls the page has made (app.js counts them on <body>).
const polled = () => page.evaluate(() => Number(document.body.dataset.polled || 0));
async function waitPolls(n) {
  const until = (await polled()) + n;
  await page.waitForFunction((u) => Number(document.body.dataset.polled || 0) >= u, until, { timeout: WAIT });
}
// The sparkline `key` (rps or eps) in the row `row`: its line's path and whether it is flat
// (fewer than two points, or all at one height); null when there is none.
const chart = (row, key) => page.evaluate(([row, key]) => {
  const line = document.querySelector(`${row} svg[data-testid="spark-${key}"] path.line`);
  if (!line) return null;
  const d = line.getAttribute("d") || "";
  const ys = [...d.matchAll(/[ML](-?[\d.]+) (-?[\d.]+)/g)].map((m) => Number(m[2]));
  return { d, points: ys.length, flat: ys.length < 2 || ys.every((y) => y === ys[0]) };
}, [row, key]);
// The p50 and p99 cells of `row` show numbers > 0, p99 ≥ p50.
async function latencyShown(row) {
  const [p50, p99] = await Promise.all(["p50", "p99"].map((id) => page.locator(`${row} [data-testid="${id}"]`).innerText()));
  if (!(Number(p50) > 0) || !(Number(p99) >= Number(p50))) throw new Error(`${row}: p50 ${p50}, p99 ${p99}`);
}
// Sends 200s and 500s to api.test until both sparklines of `row` (rps and eps) have a non-flat
// line: the charts after traffic. Bounded by WAIT.
async function trafficUntilCharted(row) {
  const deadline = Date.now() + WAIT;
  for (;;) {
    for (let i = 0; i < 6; i++) await hit("api.test");
    for (let i = 0; i < 3; i++) {
      const status = await hit("api.test", "/?status=500");
      if (status !== 500) throw new Error(`api.test/?status=500 answered ${status}`);
    }
    const [rps, eps] = await Promise.all([chart(row, "rps"), chart(row, "eps")]);
    if (rps && eps && !rps.flat && !eps.flat) return { rps, eps };
    if (Date.now() > deadline) throw new Error(`${row}: no chart after traffic: ${JSON.stringify({ rps, eps })}`);
    await page.waitForTimeout(200);
  }
}
let code = 0;
const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
const requests = [];
page.on("request", (r) => requests.push(r.url()));
try {
  await page.goto(`${base}/`, { waitUntil: "load", timeout: WAIT });
  if (!page.url().endsWith("/dashboard/")) throw new Error(`/ should land on /dashboard/, got ${page.url()}`);

  step("a favicon (inline, nothing fetched elsewhere) and the uptime as a duration");
  const icon = await page.locator('link[rel="icon"]').getAttribute("href");
  if (!icon || !icon.startsWith("data:image/svg+xml")) throw new Error(`favicon: ${icon}`);
  await page.waitForFunction(() => /· up (\d+[dhms])( \d+[dhms])?$/.test(document.getElementById("version").textContent), null, { timeout: WAIT });

  step("the routes of the known script are listed");
  const names = page.locator('[data-testid="routes"] tbody tr[data-route]');
  await page.waitForFunction(() => document.querySelectorAll('tr[data-route]').length === 3, null, { timeout: WAIT });
  const listed = await names.evaluateAll((rows) => rows.map((r) => r.dataset.route));
  if (JSON.stringify(listed) !== JSON.stringify(["api", "www", "old"])) throw new Error(`routes listed: ${listed}`);
  await page.locator('[data-testid="build"]').filter({ hasText: "ok" }).waitFor({ timeout: WAIT });

  step("the filter narrows the table");
  await page.fill('[data-testid="route-search"]', "www");
  await page.waitForFunction(() => [...document.querySelectorAll('tr[data-route]')].map((r) => r.dataset.route).join() === "www", null, { timeout: WAIT });
  await page.fill('[data-testid="route-search"]', "");

  step("a route's detail shows its servers and their health");
  await page.click('tr[data-route="api"]');
  const servers = page.locator('[data-testid="detail-servers"]');
  await servers.filter({ hasText: "up" }).waitFor({ timeout: WAIT });
  const serverText = await servers.innerText();
  if (!/127\.0\.0\.1:\d+/.test(serverText)) throw new Error(`servers: ${serverText}`);

  step("live traffic shows as a request rate on its route");
  const rate = page.locator('tr[data-route="api"] [data-testid="rps"]');
  const deadline = Date.now() + WAIT;
  for (;;) {
    // Bounded: at most 15 s of 10 requests every 200 ms.
    for (let i = 0; i < 10; i++) {
      const status = await hit("api.test");
      if (status !== 200) throw new Error(`api.test answered ${status}`);
    }
    const shown = await rate.innerText();
    if (shown !== "–" && Number(shown) > 0) break;
    if (Date.now() > deadline) throw new Error(`no request rate shown for api: ${shown}`);
    await page.waitForTimeout(200);
  }
  await page.screenshot({ path: path.join(shots, "1-routes.png"), fullPage: true });

  step("latency: p50 and p99 of a route with traffic, none for a route without");
  const api = 'tr[data-route="api"]';
  await page.waitForFunction((row) => ["p50", "p99"].every((id) => Number(document.querySelector(`${row} [data-testid="${id}"]`).textContent) > 0), api, { timeout: WAIT });
  await latencyShown(api);
  for (const id of ["p50", "p99"]) {
    const none = await page.locator(`tr[data-route="www"] [data-testid="${id}"]`).innerText();
    if (none !== "–") throw new Error(`www (no traffic) ${id}: ${none}`);
  }
  if (!(Number(await page.locator(`${api} [data-testid="total"]`).innerText()) >= 10)) throw new Error("api's total");
  const latency = await page.locator('[data-testid="detail-latency"]').innerText();
  if (!/^p50 [\d.]+ ms, p99 [\d.]+ ms$/.test(latency)) throw new Error(`detail latency: ${latency}`);

  step("request and error rates are charted per route: after traffic, and still live two polls later");
  // Two quiet polls first: samples of no traffic, so traffic makes the lines rise.
  await waitPolls(2);
  for (const key of ["rps", "eps"]) {
    const quiet = await chart('tr[data-route="www"]', key);
    if (!quiet || !quiet.flat) throw new Error(`www (no traffic) ${key} chart: ${JSON.stringify(quiet)}`);
  }
  const first = await trafficUntilCharted(api);
  const until = (await polled()) + 2;
  while ((await polled()) < until) {
    for (let i = 0; i < 3; i++) await hit("api.test");
    await hit("api.test", "/?status=500");
    await page.waitForTimeout(150);
  }
  const [rps2, eps2] = await Promise.all([chart(api, "rps"), chart(api, "eps")]);
  for (const [key, before, now] of [["rps", first.rps, rps2], ["eps", first.eps, eps2]]) {
    if (!now || now.flat) throw new Error(`${key} chart flat two polls later: ${JSON.stringify(now)}`);
    if (now.d === before.d || now.points < before.points) throw new Error(`${key} chart did not move with the polls: ${before.d} → ${now.d}`);
  }
  await latencyShown(api);
  await page.screenshot({ path: path.join(shots, "6-route-charts.png"), fullPage: true });

  step("per service too: totals, rates, charts and latency");
  await page.click('nav button[data-tab="services"]');
  const svc = 'tr[data-service="api"]';
  await page.locator(svc).waitFor({ timeout: WAIT });
  await trafficUntilCharted(svc);
  await latencyShown(svc);
  for (const key of ["rps", "eps"]) {
    const quiet = await chart('tr[data-service="www"]', key);
    if (!quiet || !quiet.flat) throw new Error(`service www (no traffic) ${key} chart: ${JSON.stringify(quiet)}`);
  }
  await page.screenshot({ path: path.join(shots, "7-service-charts.png"), fullPage: true });

  step("the TCP tab: the echo route, its connections, bytes and new connections per second");
  await page.locator('nav button[data-tab="tcp"]').waitFor({ state: "visible", timeout: WAIT });
  await page.click('nav button[data-tab="tcp"]');
  const echo = 'tr[data-tcp-route="echo"]';
  await page.locator(echo).waitFor({ timeout: WAIT });
  // A cell's text, no-break spaces as spaces.
  const cell = async (row, id) => (await page.locator(`${row} [data-testid="${id}"]`).innerText()).replace(/\u00a0/g, " ");
  const made = Number(process.env.TCP_CONNECTIONS);
  if (!(Number(await cell(echo, "connections")) >= made)) throw new Error(`echo connections: ${await cell(echo, "connections")}, made ${made}`);
  for (const id of ["bytes-in", "bytes-out"]) {
    const b = await cell(echo, id);
    if (!/^[1-9][\d.]* (B|KiB)$/.test(b)) throw new Error(`echo ${id}: ${b}`);
  }
  if ((await cell(echo, "failed")) !== "0" || (await cell(echo, "status")) !== "enabled") throw new Error(`echo failed/status: ${await page.locator(echo).innerText()}`);
  if ((await cell(echo, "tls")) !== "cleartext") throw new Error(`echo TLS: ${await cell(echo, "tls")}`);
  if ((await cell(echo, "entrypoints")) !== "tcp") throw new Error(`echo entrypoints: ${await cell(echo, "entrypoints")}`);
  const echoRow = await page.locator(echo).innerText();
  if (!echoRow.includes("HostSNI(`*`)")) throw new Error(`echo rule: ${echoRow}`);
  const echoService = await cell(echo, "service");
  if (!/^echo\n/.test(echoService) || !/▲ up 127\.0\.0\.1:\d+/.test(echoService)) throw new Error(`echo service: ${echoService}`);
  // New connections while the page polls: the sparkline rises.
  await waitPolls(2);
  const quietCps = await chart(echo, "cps");
  if (!quietCps) throw new Error("no new-connections chart on the echo route");
  const chartUnder = async (row, send, what) => {
    const deadline = Date.now() + WAIT;
    for (let n = 0; ; n++) {
      for (let i = 0; i < 4; i++) await send(`${what}-${n}-${i}`);
      const c = await chart(row, "cps");
      if (c && !c.flat) return c;
      if (Date.now() > deadline) throw new Error(`${row}: no chart after ${what} traffic: ${JSON.stringify(c)}`);
      await page.waitForTimeout(200);
    }
  };
  await chartUnder(echo, tcpEcho, "conn");
  await page.waitForFunction(([row, n]) => Number(document.querySelector(`${row} [data-testid="connections"]`).textContent) > n, [echo, made], { timeout: WAIT });
  await page.screenshot({ path: path.join(shots, "9-tcp.png"), fullPage: true });

  step("the UDP tab: the dns route and its sessions");
  await page.click('nav button[data-tab="udp"]');
  const dns = 'tr[data-udp-route="dns"]';
  await page.locator(dns).waitFor({ timeout: WAIT });
  const sessions = Number(process.env.UDP_SESSIONS);
  if (!(Number(await cell(dns, "connections")) >= sessions)) throw new Error(`dns sessions: ${await cell(dns, "connections")}, made ${sessions}`);
  if (!/^[1-9]/.test(await cell(dns, "bytes-in")) || !/^[1-9]/.test(await cell(dns, "bytes-out"))) throw new Error(`dns bytes: ${await page.locator(dns).innerText()}`);
  if ((await cell(dns, "entrypoints")) !== "all" || !/▲ up 127\.0\.0\.1:\d+/.test(await cell(dns, "service"))) throw new Error(`dns row: ${await page.locator(dns).innerText()}`);
  await chartUnder(dns, udpEcho, "query");
  await page.screenshot({ path: path.join(shots, "10-udp.png"), fullPage: true });

  step("TCP routes of a fixed API answer: TLS modes, a down server, bytes in binary units");
  const tcpApi = (u) => u.pathname === "/api/tcp/routes";
  const server = (address, healthy, weight = 1) => ({ address, weight, healthy, in_flight: 0 });
  const tcpRoute = (name, tls, servers, counts) => Object.assign({
    name, rule: "HostSNI(`db.example.com`)", priority: 24, entrypoints: ["websecure"], tls, middlewares: [],
    service: { name: `${name}-svc`, balancer: "weighted_round_robin", servers, declared_at: "scripts/x.rhai:1:1" },
    declared_at: "scripts/x.rhai:2:1", status: servers.some((s) => s.healthy) ? "enabled" : "warning",
    servers_up: servers.filter((s) => s.healthy).length, connections: 0, open: 0, failed: 0, bytes_in: 0, bytes_out: 0,
  }, counts);
  const fixed = { tcp_routes: [
    tcpRoute("db", { mode: "passthrough" }, [server("10.0.0.5:5432", false)], { connections: 7, failed: 2, bytes_in: 1536, bytes_out: 1.5 * 1024 * 1024 }),
    tcpRoute("<b>mqtt</b>", { mode: "terminate", resolver: "le" }, [server("10.0.0.7:1883", true, 3), server("10.0.0.8:1883", false)], { open: 4, bytes_in: 512 }),
  ], total: 2, page: 1, per_page: 1000 };
  Object.assign(fixed.tcp_routes[1].service, { proxy_protocol: 2, health_check: "tcp connect every 5s, timeout 1s" });
  await page.route(tcpApi, (route) => route.fulfill({ status: 200, contentType: "application/json", body: JSON.stringify(fixed) }));
  await page.click('nav button[data-tab="tcp"]');
  const db = 'tr[data-tcp-route="db"]';
  await page.locator(db).waitFor({ timeout: WAIT });
  if ((await cell(db, "tls")) !== "passthrough" || (await cell(db, "status")) !== "warning") throw new Error(`db: ${await page.locator(db).innerText()}`);
  if (!(await page.locator(`${db} [data-testid="status"]`).getAttribute("class")).includes("status-warning")) throw new Error("db's warning is not marked");
  if (!(await cell(db, "service")).includes("▼ down 10.0.0.5:5432")) throw new Error(`db service: ${await cell(db, "service")}`);
  if ((await cell(db, "bytes-in")) !== "1.5 KiB" || (await cell(db, "bytes-out")) !== "1.5 MiB") throw new Error(`db bytes: ${await cell(db, "bytes-in")} / ${await cell(db, "bytes-out")}`);
  if ((await cell(db, "failed")) !== "2" || (await cell(db, "connections")) !== "7") throw new Error(`db counts: ${await page.locator(db).innerText()}`);
  const mqtt = 'tr[data-tcp-route="<b>mqtt</b>"]';
  if ((await cell(mqtt, "tls")) !== "terminate" || (await cell(mqtt, "bytes-in")) !== "512 B" || (await cell(mqtt, "open")) !== "4") throw new Error(`mqtt: ${await page.locator(mqtt).innerText()}`);
  const mqttService = await cell(mqtt, "service");
  if (!mqttService.includes("▲ up 10.0.0.7:1883 ×3") || !mqttService.includes("▼ down 10.0.0.8:1883")) throw new Error(`mqtt service: ${mqttService}`);
  if (!(await page.locator(`${mqtt} [data-testid="tls"]`).getAttribute("title")).includes("certificate resolver le")) throw new Error("mqtt's resolver is not named");
  if (!/^<b>mqtt<\/b>-svc PROXY v2, tcp connect every 5s, timeout 1s\n/.test(mqttService)) throw new Error(`mqtt service notes: ${mqttService}`);
  if ((await page.locator(`${mqtt} td:nth-child(2) > b`).innerText()) !== "<b>mqtt</b>" || (await page.locator(`${mqtt} td:nth-child(2) b b`).count()) !== 0) throw new Error("a route name was not shown as text");

  step("a router without TCP or UDP routes: no such tabs, an open one says there are none");
  const udpApi = (u) => u.pathname === "/api/udp/routes";
  const none = (key) => (route) => route.fulfill({ status: 200, contentType: "application/json", body: JSON.stringify({ [key]: [], total: 0, page: 1, per_page: 1000 }) });
  await page.unroute(tcpApi);
  await page.route(tcpApi, none("tcp_routes"));
  await page.route(udpApi, none("udp_routes"));
  // The open TCP tab stays, saying it has no routes; the UDP tab goes.
  await page.locator('[data-testid="no-tcp-routes"]').waitFor({ timeout: WAIT });
  await page.locator('nav button[data-tab="udp"]').waitFor({ state: "hidden", timeout: WAIT });
  if (!(await page.locator('nav button[data-tab="tcp"]').isVisible())) throw new Error("the open TCP tab went away");
  await page.click('nav button[data-tab="routes"]');
  await page.locator('nav button[data-tab="tcp"]').waitFor({ state: "hidden", timeout: WAIT });
  await page.unroute(tcpApi);
  await page.unroute(udpApi);
  for (const kind of ["tcp", "udp"]) await page.locator(`nav button[data-tab="${kind}"]`).waitFor({ state: "visible", timeout: WAIT });

  step("requests no route takes are counted on the overview");
  const unmatchedBefore = Number(await page.locator('[data-testid="unmatched"] b').innerText());
  for (let i = 0; i < 3; i++) {
    const status = await hit("nothing-here.test");
    if (status !== 404) throw new Error(`nothing-here.test answered ${status}`);
  }
  await page.waitForFunction((n) => Number(document.querySelector('[data-testid="unmatched"] b').textContent) >= n + 3, unmatchedBefore, { timeout: WAIT });

  step("a broken save shows the error in its source");
  const good = fs.readFileSync(scriptFile, "utf8");
  fs.writeFileSync(scriptFile, good + '\nroute("broken").rule(host("b.test")).to(;\n');
  await page.locator('[data-testid="build"]').filter({ hasText: "failed" }).waitFor({ timeout: WAIT });
  await page.click('nav button[data-tab="scripts"]');
  const err = page.locator('[data-testid="script-error"]').first();
  await err.waitFor({ timeout: WAIT });
  const errText = await err.innerText();
  if (!/10-routes\.rhai:\d+:\d+: /.test(errText)) throw new Error(`error line: ${errText}`);
  const marked = page.locator('[data-testid="source"] div.err').first();
  await marked.waitFor({ timeout: WAIT });
  if (!(await marked.innerText()).includes('route("broken")')) throw new Error(`highlighted: ${await marked.innerText()}`);
  const count = await page.locator('[data-testid="script-errors"]').innerText();
  if (count !== "(1)") throw new Error(`error count: ${count}`);
  // The last good table still serves: the routes tab keeps its three routes.
  if ((await names.count()) !== 3) throw new Error("the routes went away with the broken build");
  await page.screenshot({ path: path.join(shots, "2-script-error.png"), fullPage: true });

  step("the fix clears it");
  fs.writeFileSync(scriptFile, good);
  await page.locator('[data-testid="build"]').filter({ hasText: "ok" }).waitFor({ timeout: WAIT });
  await page.waitForFunction(() => document.querySelectorAll('[data-testid="script-error"]').length === 0, null, { timeout: WAIT });
  if ((await page.locator('[data-testid="script-errors"]').innerText()) !== "") throw new Error("error count not cleared");

  step("an ad-hoc request is explained");
  await page.click('nav button[data-tab="explain"]');
  await page.fill('[data-testid="explain-url"]', "http://www.test/index.html");
  await page.click('[data-testid="explain-submit"]');
  const out = page.locator('[data-testid="explain-out"]');
  await out.filter({ hasText: "≠" }).waitFor({ timeout: WAIT });
  const trace = await out.innerText();
  if (!trace.includes('Host(`api.test`) ≠ host "www.test"') || !trace.includes("forward www @")) throw new Error(`trace: ${trace}`);
  const summary = await page.locator('[data-testid="explain-summary"]').innerText();
  if (!summary.startsWith("GET www.test/index.html → www → www @")) throw new Error(`summary: ${summary}`);
  await page.screenshot({ path: path.join(shots, "3-explain.png"), fullPage: true });

  step("the Certificates tab lists the served certificate and the default one");
  await page.click('nav button[data-tab="certificates"]');
  const certs = page.locator('[data-testid="certificates"]');
  const served = certs.locator('tbody tr[data-cert="secure.test"]');
  await served.waitFor({ timeout: WAIT });
  const servedText = await served.innerText();
  if (!servedText.includes("switchyard test CA") || !/\(in \d+ [dy]\)/.test(servedText) || !servedText.includes("secure.crt")) {
    throw new Error(`served certificate row: ${servedText}`);
  }
  if (await served.locator('[data-testid="default-cert"]').count()) throw new Error("secure.test marked as the default certificate");
  const markedDefault = certs.locator("tbody tr").filter({ has: page.locator('[data-testid="default-cert"]') });
  if ((await markedDefault.count()) !== 1) throw new Error(`default markers: ${await markedDefault.count()}`);
  const defText = await markedDefault.innerText();
  if (!defText.includes("default") || !defText.includes("SWITCHYARD DEFAULT CERT") || !defText.includes("self-signed")) throw new Error(`default certificate row: ${defText}`);
  await page.locator('[data-testid="no-resolvers"]').waitFor({ timeout: WAIT });
  await page.screenshot({ path: path.join(shots, "4-certificates.png"), fullPage: true });

  step("at 800 px wide no tab makes the page wider");
  await page.setViewportSize({ width: 800, height: 900 });
  const pageWidth = () => page.evaluate(() => document.documentElement.scrollWidth);
  for (const tab of ["routes", "services", "tcp", "udp", "scripts", "explain", "certificates"]) {
    await page.click(`nav button[data-tab="${tab}"]`);
    const w = await pageWidth();
    if (w > 800) throw new Error(`${tab} tab at 800 px: the page is ${w} px wide`);
  }
  for (const tab of ["routes", "services", "tcp", "udp"]) {
    await page.click(`nav button[data-tab="${tab}"]`);
    const box = await page.locator(`[data-testid="${tab}"]`).evaluate((t) => ({
      scroll: t.parentElement.scrollWidth, client: t.parentElement.clientWidth,
      columns: [...t.querySelectorAll("thead th")].map((th) => `${th.textContent}: ${th.offsetWidth}`).join(", "),
    }));
    if (box.scroll > box.client) throw new Error(`the ${tab} table does not fit 800 px: ${JSON.stringify(box)}`);
    if (tab === "routes" && (await page.locator(`${api} svg[data-testid="spark-rps"]`).count()) !== 1) throw new Error("no chart at 800 px");
    if (tab === "tcp" && (await page.locator('tr[data-tcp-route="echo"] svg[data-testid="spark-cps"]').count()) !== 1) throw new Error("no TCP chart at 800 px");
    await page.screenshot({ path: path.join(shots, `8-${tab}-800px.png`), fullPage: true });
  }
  await page.click('nav button[data-tab="certificates"]');

  step("resolver names: expiry, last error, next attempt, on demand (a fixed API answer)");
  const day = 86400e3;
  const iso = (ms) => new Date(Date.now() + ms).toISOString().replace(/\.\d+Z$/, "Z");
  const long = `${"l".repeat(60)}.${"o".repeat(60)}.example.com`;
  let answer = {
    certificates: [
      { names: [long, "<b>x</b>.test"], subject: "CN=soon", issuer: "CN=Fixture CA", not_before: iso(-80 * day), not_after: iso(5 * day + 3600e3), source: "acme:le", default: false },
      { names: [], subject: "CN=SWITCHYARD DEFAULT CERT", issuer: "CN=SWITCHYARD DEFAULT CERT", not_before: iso(-day), not_after: iso(300 * day), source: "self-signed", default: true },
    ],
    resolvers: [
      { name: "le", names: [
        { name: "ok.example.com", not_after: iso(60 * day + 3600e3), orders: 1, failures: 0 },
        { name: "failing.example.com", last_error: "rateLimited: too many new orders", next_attempt_in_seconds: 42, orders: 3, failures: 2 },
        { name: "gone.example.com", not_after: iso(-day), orders: 2, failures: 1, on_demand: true },
      ] },
      { name: "idle", names: [] },
    ],
  };
  const certsApi = (u) => u.pathname === "/api/certificates";
  await page.route(certsApi, (route) =>
    route.fulfill({ status: 200, contentType: "application/json", body: JSON.stringify(answer) }));
  const soon = certs.locator(`tbody tr[data-cert^="${long}"]`);
  await soon.waitFor({ timeout: WAIT });
  const soonExpiry = soon.locator('[data-testid="expiry"]');
  if (!/\(in 5 d\)$/.test(await soonExpiry.innerText()) || !(await soonExpiry.getAttribute("class")).includes("status-warning")) {
    throw new Error(`a certificate expiring in 5 days: ${await soonExpiry.innerText()} / ${await soonExpiry.getAttribute("class")}`);
  }
  if (!(await soon.innerText()).includes("<b>x</b>.test") || (await certs.locator("tbody b").count()) !== 0) throw new Error("a name was not shown as text");
  const le = page.locator('[data-testid="resolver"][data-resolver="le"]');
  const nameRow = (n) => le.locator(`tbody tr[data-name="${n}"]`);
  const okExpiry = nameRow("ok.example.com").locator('[data-testid="expiry"]');
  if (!/\(in 60 d\)$/.test(await okExpiry.innerText()) || /status-warning|down/.test(await okExpiry.getAttribute("class"))) {
    throw new Error(`ok.example.com expiry: ${await okExpiry.innerText()} / ${await okExpiry.getAttribute("class")}`);
  }
  const lastError = nameRow("failing.example.com").locator('[data-testid="last-error"]');
  if ((await lastError.innerText()) !== "rateLimited: too many new orders" || !(await lastError.getAttribute("class")).includes("down")) throw new Error(`last error: ${await lastError.innerText()}`);
  const next = await nameRow("failing.example.com").locator('[data-testid="next-attempt"]').innerText();
  if (next !== "in 42 s") throw new Error(`next attempt: ${next}`);
  const failingCells = await nameRow("failing.example.com").locator("td").allInnerTexts();
  if (failingCells[2] !== "3" || failingCells[3] !== "2") throw new Error(`orders, failures: ${failingCells}`);
  const goneExpiry = nameRow("gone.example.com").locator('[data-testid="expiry"]');
  if (!/\(expired\)$/.test(await goneExpiry.innerText()) || !(await goneExpiry.getAttribute("class")).includes("down")) throw new Error(`gone.example.com expiry: ${await goneExpiry.innerText()}`);
  if ((await le.locator('[data-testid="on-demand"]').count()) !== 1 || (await nameRow("gone.example.com").locator('[data-testid="on-demand"]').count()) !== 1) {
    throw new Error("the on-demand marker is not on gone.example.com alone");
  }
  const idle = await page.locator('[data-testid="resolver"][data-resolver="idle"]').innerText();
  if (!idle.includes("no names")) throw new Error(`a resolver without names: ${idle}`);
  if ((await pageWidth()) > 800) throw new Error(`a long certificate name widens the page to ${await pageWidth()} px`);
  const box = await certs.evaluate((t) => ({ scroll: t.parentElement.scrollWidth, client: t.parentElement.clientWidth }));
  if (box.scroll <= box.client) throw new Error(`the certificates table does not scroll in its box: ${JSON.stringify(box)}`);
  await page.screenshot({ path: path.join(shots, "5-certificates-800px.png"), fullPage: true });

  step("a router without TLS: the empty states");
  answer = { certificates: [] };
  await page.locator('[data-testid="no-certificates"]').waitFor({ timeout: WAIT });
  await page.locator('[data-testid="no-resolvers"]').waitFor({ timeout: WAIT });
  await page.unroute(certsApi);

  const foreign = requests.filter((u) => !u.startsWith(base));
  if (foreign.length) throw new Error(`the page fetched from elsewhere: ${foreign.join(", ")}`);
  step("ok");
} catch (e) {
  code = 1;
  console.error(`dashboard: FAILED: ${e.message}`);
  await page.screenshot({ path: path.join(shots, "failure.png"), fullPage: true }).catch(() => {});
} finally {
  await browser.close();
}
process.exit(code);
