// Drives Debian's Chromium (headless) through the dashboard of a running router, as a user
// would: the page loads and lists the routes of the known script, filters them, shows a route's
// servers, shows a script error after a broken save and clears it after the fix, and explains a
// request. Run by tests/it/dashboard.rs, which starts the router and passes:
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

// One request to the router's web entrypoint with the given Host: its status.
function hit(host) {
  const [hostname, port] = process.env.WEB_ADDR.split(":");
  return new Promise((resolve, reject) => {
    const req = http.request({ hostname, port: Number(port), path: "/", headers: { host } }, (res) => {
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
