// Drives Debian's Chromium (headless) through the dashboard of a running router, as a user
// would: the page loads and lists the routes of the known script, filters them, shows a route's
// servers, shows live traffic as totals, p50/p99 latency and request/error-rate sparklines per
// route and per service, shows a script error after a broken save and clears it after the fix,
// explains a request, lists the certificates of the router's TLS entrypoint (secure.test,
// declared by the script, and the self-signed default), shows resolver names from a fixed API
// answer (no ACME server here) and the empty state of a router without TLS, and stays 800 px
// wide at 800 px (the routes and services tables fitting without scrolling).
// Run by tests/it/dashboard.rs, which starts the router and passes:
//   DASHBOARD_URL  the admin listener's base URL     SCRIPT_FILE  the script the router watches
//   SHOT_DIR       where screenshots go (test artifacts)   WEB_ADDR  the web entrypoint (host:port)
// Every wait is bounded; any failure exits 1 with what was expected.
import { chromium } from "playwright-core";
import fs from "node:fs";
import path from "node:path";
import http from "node:http";

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
  await page.click('nav button[data-tab="routes"]');

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
  for (const tab of ["routes", "services", "scripts", "explain", "certificates"]) {
    await page.click(`nav button[data-tab="${tab}"]`);
    const w = await pageWidth();
    if (w > 800) throw new Error(`${tab} tab at 800 px: the page is ${w} px wide`);
  }
  for (const tab of ["routes", "services"]) {
    await page.click(`nav button[data-tab="${tab}"]`);
    const box = await page.locator(`[data-testid="${tab}"]`).evaluate((t) => ({
      scroll: t.parentElement.scrollWidth, client: t.parentElement.clientWidth,
      columns: [...t.querySelectorAll("thead th")].map((th) => `${th.textContent}: ${th.offsetWidth}`).join(", "),
    }));
    if (box.scroll > box.client) throw new Error(`the ${tab} table does not fit 800 px: ${JSON.stringify(box)}`);
    if (tab === "routes" && (await page.locator(`${api} svg[data-testid="spark-rps"]`).count()) !== 1) throw new Error("no chart at 800 px");
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
