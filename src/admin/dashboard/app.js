// The switchyard dashboard: reads only the JSON API of the admin listener and polls it every
// second, so routes, servers, health, script errors and certificates follow reloads and
// containers live. Request and 5xx rates per route and per service, and new connections (TCP)
// or sessions (UDP) per second per TCP/UDP route, are worked out here from the counters of
// successive polls and drawn as sparklines (inline SVG) over the last HISTORY samples.
"use strict";

const POLL_MS = 1000;
// Samples kept per route and per service for the sparklines: about a minute.
const HISTORY = 60;
const newTrack = () => ({ prev: null, rates: {}, history: {} });
const state = {
  tab: "routes", routes: [], services: [], tcp: [], udp: [], selected: null,
  track: { route: newTrack(), service: newTrack(), tcp: newTrack(), udp: newTrack() }, sources: {}, certsHtml: {},
};

const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));

async function api(path, opts) {
  const r = await fetch(path, Object.assign({ headers: { accept: "application/json" }, credentials: "same-origin" }, opts || {}));
  const body = await r.json().catch(() => ({ error: `HTTP ${r.status}` }));
  if (!r.ok) throw new Error(body.error || `HTTP ${r.status}`);
  return body;
}

function target(t) {
  if (!t) return "";
  if (t.type === "service") return `service <b>${esc(t.service)}</b>`;
  if (t.type === "redirect") return `redirect ${t.permanent ? "301" : "302"} → ${esc(t.location)}`;
  if (t.type === "respond") return `respond ${esc(t.status)}`;
  return esc(t.type);
}

function card(label, value, title) {
  return `<div class="card" title="${esc(title || "")}"><b>${esc(value)}</b><span>${esc(label)}</span></div>`;
}

/// Seconds as the largest two units: "45s", "12m 5s", "3h 20m", "2d 4h".
function duration(s) {
  const units = [["d", 86400], ["h", 3600], ["m", 60], ["s", 1]];
  const parts = [];
  for (const [u, n] of units) {
    if (s >= n || (u === "s" && parts.length === 0)) {
      parts.push(`${Math.floor(s / n)}${u}`);
      s %= n;
    }
    if (parts.length === 2) break;
  }
  return parts.join(" ");
}

function renderOverview(o) {
  $("version").textContent = `v${o.version} (${o.commit}) · up ${duration(o.uptime_seconds)}`;
  const b = o.last_build;
  const build = $("build");
  build.textContent = b.ok ? `build #${b.attempt} ok` : `build #${b.attempt} failed: ${b.errors} error(s)`;
  build.className = "pill " + (b.ok ? "ok" : "err");
  const c = o.counts;
  $("overview").innerHTML =
    card("routes", c.routes) + card("services", c.services) +
    card("servers up", `${c.servers_up}/${c.servers}`) + card("middlewares", c.middlewares) +
    card("entrypoints", c.entrypoints) + card("scripts", c.scripts) +
    card("catalog entries", c.catalog_entries) + card("script errors", b.errors) +
    card("warnings", b.warnings + c.catalog_problems) +
    `<div class="card${c.unmatched_requests ? " warn" : ""}" data-testid="unmatched" title="requests no route took (404, bad Host) since start"><b>${esc(c.unmatched_requests)}</b><span>unmatched requests</span></div>` +
    (o.provider_errors.length ? `<div class="card bad" data-testid="provider-errors" title="${esc(o.provider_errors.map((p) => `${p.provider}: ${p.error}`).join("\n"))}"><b>${o.provider_errors.length}</b><span>provider down: ${esc(o.provider_errors.map((p) => p.provider).join(", "))}</span></div>` : "");
  const sel = $("ex-entrypoint");
  if (sel.options.length !== o.entrypoints.length) {
    sel.innerHTML = o.entrypoints.map((e) => `<option>${esc(e.name)}</option>`).join("");
  }
  const ep = $("route-entrypoint");
  if (ep.options.length !== o.entrypoints.length + 1) {
    ep.innerHTML = `<option value="">any entrypoint</option>` + o.entrypoints.map((e) => `<option>${esc(e.name)}</option>`).join("");
  }
}

// The counters each kind of row is charted from: rate key → counter value (null: not charted).
// A TCP/UDP route's connections (sessions) started are the ended ones plus the open ones.
const httpCounters = (x) => (typeof x.requests === "number" ? { rps: x.requests, eps: x.errors || 0 } : null);
const l4Counters = (x) => (typeof x.connections === "number" ? { cps: x.connections + Math.max(0, x.open || 0) } : null);
const COUNTERS = { route: httpCounters, service: httpCounters, tcp: l4Counters, udp: l4Counters };

// Per second rates of each route or service (`kind`; requests and 5xx, or new connections),
// from the counters of two polls (delta count / delta time); each set also goes into the item's
// ring buffer of the last HISTORY samples. Items gone from the list lose their history.
function updateRates(kind, items, now) {
  const t = state.track[kind];
  const rates = {}, counts = {}, history = {};
  for (const x of items) {
    const c = COUNTERS[kind](x);
    if (!c) continue;
    counts[x.name] = c;
    const h = history[x.name] = t.history[x.name] || [];
    const p = t.prev && t.prev.counts[x.name];
    if (!p) continue;
    const dt = Math.max(0.001, (now - t.prev.at) / 1000);
    // A counter that went down (the route left the table and came back) counts from zero.
    const r = {};
    for (const k of Object.keys(c)) r[k] = Math.max(0, (c[k] - (p[k] || 0)) / dt);
    rates[x.name] = r;
    h.push(r);
    if (h.length > HISTORY) h.splice(0, h.length - HISTORY);
  }
  state.track[kind] = { prev: { at: now, counts }, rates, history };
}

function fmtRate(v) { return v === undefined ? "–" : v < 10 ? v.toFixed(1) : Math.round(v).toString(); }
// Milliseconds (p50/p99); null before the first request.
function fmtMs(v) { return typeof v !== "number" ? "–" : v < 10 ? v.toFixed(1) : Math.round(v).toString(); }
// Bytes in binary units: "0 B", "512 B", "1.5 KiB", "23 MiB".
function fmtBytes(n) {
  if (typeof n !== "number") return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let v = n, i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return i === 0 ? `${v} B` : `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

const SPARK_W = 60, SPARK_H = 16;

// A sparkline of `key` (rps, eps or cps) over `samples`, the newest at the right edge, scaled to the
// largest value shown; a flat line along the bottom while everything is 0.
function spark(samples, key, label) {
  const vals = samples.map((s) => s[key]);
  const max = Math.max(0, ...vals);
  const step = SPARK_W / (HISTORY - 1);
  const x0 = SPARK_W - (vals.length - 1) * step;
  const y = (v) => (max > 0 ? SPARK_H - 1 - (v / max) * (SPARK_H - 2) : SPARK_H - 1);
  const pts = vals.map((v, i) => `${(x0 + i * step).toFixed(1)} ${y(v).toFixed(1)}`);
  const line = pts.length ? "M" + pts.join("L") : "";
  const area = pts.length > 1 ? `${line}L${SPARK_W} ${SPARK_H}L${x0.toFixed(1)} ${SPARK_H}Z` : "";
  const title = vals.length
    ? `${label}: ${fmtRate(vals[vals.length - 1])} now, at most ${fmtRate(max)} over the last ${vals.length} s`
    : `${label}: no sample yet`;
  // The baseline spans the whole window, so the time axis shows while the buffer fills.
  return `<svg class="spark ${key}" data-testid="spark-${key}" width="${SPARK_W}" height="${SPARK_H}" viewBox="0 0 ${SPARK_W} ${SPARK_H}" preserveAspectRatio="none" role="img" aria-label="${esc(title)}"><title>${esc(title)}</title>` +
    `<line class="base" x1="0" y1="${SPARK_H - 0.5}" x2="${SPARK_W}" y2="${SPARK_H - 0.5}"/>` +
    `${area ? `<path class="area" d="${area}"/>` : ""}<path class="line" d="${line}"/></svg>`;
}

// The traffic cells of a route or service row: total, rates with their sparklines, p50, p99.
function trafficCells(kind, x) {
  const t = state.track[kind];
  const rate = t.rates[x.name] || {};
  const h = t.history[x.name] || [];
  const totals = typeof x.requests === "number" ? `${x.requests} requests, ${x.client_errors || 0} 4xx, ${x.errors || 0} 5xx` : "";
  return `<td class="num" data-testid="total" title="${esc(totals)}">${esc(typeof x.requests === "number" ? x.requests : "–")}</td>
      <td class="num"><span data-testid="rps">${fmtRate(rate.rps)}</span>${spark(h, "rps", "requests/s")}</td>
      <td class="num"><span data-testid="eps">${fmtRate(rate.eps)}</span>${spark(h, "eps", "5xx/s")}</td>
      <td class="num" data-testid="p50">${fmtMs(x.p50_ms)}</td><td class="num" data-testid="p99">${fmtMs(x.p99_ms)}</td>`;
}

function renderRoutes() {
  const q = $("route-search").value.trim().toLowerCase();
  const st = $("route-status").value;
  const ep = $("route-entrypoint").value;
  const rows = state.routes.filter((r) =>
    (!q || [r.name, r.rule, r.service || ""].some((s) => s.toLowerCase().includes(q))) &&
    (!st || r.status === st) &&
    (!ep || r.entrypoints.length === 0 || r.entrypoints.includes(ep)));
  $("routes-body").innerHTML = rows.map((r) => `<tr data-route="${esc(r.name)}" class="${r.name === state.selected ? "sel" : ""}">
      <td><b>${esc(r.name)}</b>${r.tls ? ` <span class="tls" title="serves TLS requests only">TLS</span>` : ""}</td><td class="wrap"><code>${esc(r.rule)}</code></td><td class="wide">${esc(r.priority)}</td>
      <td class="wrap">${r.middlewares.map((m) => `<code>${esc(m)}</code>`).join("<br>")}</td>
      <td class="wrap">${target(r.target)}</td>
      <td class="status-${esc(r.status)}" title="${esc(r.warning || "")}">${esc(r.status)}</td>
      ${trafficCells("route", r)}
      <td class="mono wrap wide">${esc(r.declared_at)}</td></tr>`).join("") ||
    `<tr><td colspan="12">no routes${q || st || ep ? " match the filters" : ""}</td></tr>`;
  renderDetail();
}

function servers(svc) {
  if (!svc) return "";
  return svc.servers.map((s) =>
    `<div><span class="${s.healthy ? "up" : "down"}">${s.healthy ? "▲<span class=\"unit\">&nbsp;up</span>" : "▼<span class=\"unit\">&nbsp;down</span>"}</span>&nbsp;<code>${esc(s.address)}</code> weight ${esc(s.weight)}, ${esc(s.in_flight)} in flight</div>`).join("");
}

function tlsText(r) {
  if (!r.tls) return r.cleartext ? "cleartext requests only" : "cleartext, and TLS on the entrypoints it names";
  const parts = ["TLS requests only"];
  if (r.tls.options) parts.push(`options ${esc(r.tls.options)}`);
  if (r.tls.resolver) parts.push(`certificate resolver ${esc(r.tls.resolver)}`);
  for (const d of r.tls.domains || []) parts.push(`domain ${esc(d.main)} ${(d.sans || []).map(esc).join(" ")}`);
  return parts.join(", ");
}

function renderDetail() {
  const box = $("route-detail");
  const r = state.routes.find((x) => x.name === state.selected);
  if (!r) { box.hidden = true; return; }
  const svc = state.services.find((s) => s.name === r.service);
  box.hidden = false;
  box.innerHTML = `<h2>${esc(r.name)}</h2><dl>
    <dt>rule</dt><dd><code>${esc(r.rule)}</code></dd>
    <dt>priority</dt><dd>${esc(r.priority)}</dd>
    <dt>entrypoints</dt><dd>${r.entrypoints.length ? r.entrypoints.map(esc).join(", ") : "all"}</dd>
    <dt>tls</dt><dd>${tlsText(r)}</dd>
    <dt>middlewares</dt><dd>${r.middlewares.map((m) => `<code>${esc(m)}</code>`).join("<br>") || "none"}</dd>
    <dt>target</dt><dd>${target(r.target)}</dd>
    ${svc ? `<dt>balancer</dt><dd>${esc(svc.balancer)}${svc.sticky_cookie ? `, sticky cookie <code>${esc(svc.sticky_cookie)}</code>` : ""}</dd>
    <dt>health check</dt><dd>${esc(svc.health_check || "none")}</dd>
    <dt>servers</dt><dd data-testid="detail-servers">${servers(svc)}</dd>` : ""}
    <dt>status</dt><dd class="status-${esc(r.status)}">${esc(r.status)} ${esc(r.warning || "")}</dd>
    <dt>requests</dt><dd data-testid="detail-totals">${esc(r.requests)} since it appeared: ${esc(r.client_errors)} 4xx, ${esc(r.errors)} 5xx</dd>
    <dt>latency</dt><dd data-testid="detail-latency">${typeof r.p50_ms === "number" ? `p50 ${fmtMs(r.p50_ms)} ms, p99 ${fmtMs(r.p99_ms)} ms` : "no request yet"}</dd>
    <dt>declared at</dt><dd class="mono">${esc(r.declared_at)}</dd></dl>`;
}

function renderServices() {
  $("services-body").innerHTML = state.services.map((s) => `<tr data-service="${esc(s.name)}">
    <td><b>${esc(s.name)}</b></td><td>${esc(s.balancer)}</td><td class="wrap">${servers(s)}</td>
    <td class="wrap">${esc(s.sticky_cookie || "")}</td><td class="wrap">${esc(s.health_check || "")}</td>
    <td class="wrap">${(s.used_by || []).map(esc).join(", ")}</td>
    ${trafficCells("service", s)}</tr>`).join("");
}

// The servers of a TCP/UDP route's service, one a line: up or down (the word left out in a
// narrow window), address, weight when not 1.
function l4Servers(svc) {
  return (svc.servers || []).map((s) =>
    `<div data-testid="server" title="${esc(`${s.address}: ${s.healthy ? "up" : "down (no new connections)"}, weight ${s.weight}, ${s.in_flight} open`)}"><span class="${s.healthy ? "up" : "down"}">${s.healthy ? "▲<span class=\"unit\">&nbsp;up</span>" : "▼<span class=\"unit\">&nbsp;down</span>"}</span>&nbsp;<code>${esc(s.address)}</code>${s.weight !== 1 ? ` <span class="hint">×${esc(s.weight)}</span>` : ""}</div>`).join("");
}

function l4Service(svc) {
  if (!svc) return "";
  const notes = [];
  if (svc.proxy_protocol) notes.push(`PROXY v${svc.proxy_protocol}`);
  if (svc.health_check) notes.push(svc.health_check);
  return `<b title="${esc(`balancer ${svc.balancer}, declared at ${svc.declared_at}`)}">${esc(svc.name)}</b>${notes.length ? ` <span class="hint">${esc(notes.join(", "))}</span>` : ""}${l4Servers(svc)}`;
}

// How a TCP route treats TLS: passthrough, terminate (with what) or cleartext.
function tcpTls(r) {
  if (!r.tls) return `<td data-testid="tls" title="cleartext connections only"><span class="tag clear">cleartext</span></td>`;
  const t = r.tls;
  const parts = t.mode === "passthrough" ? ["TLS passed to the server untouched"] : ["TLS terminated by the router"];
  if (t.options) parts.push(`options ${t.options}`);
  if (t.resolver) parts.push(`certificate resolver ${t.resolver}`);
  for (const d of t.domains || []) parts.push(`domain ${[d.main, ...(d.sans || [])].join(" ")}`);
  return `<td data-testid="tls" title="${esc(parts.join(", "))}"><span class="tag ${t.mode === "passthrough" ? "pass" : ""}">${esc(t.mode)}</span></td>`;
}

// The traffic cells of a TCP/UDP route: ended, open, failed, new per second over its sparkline,
// bytes from and to clients.
function l4Cells(kind, r) {
  const t = state.track[kind];
  const rate = (t.rates[r.name] || {}).cps;
  const h = t.history[r.name] || [];
  const what = kind === "tcp" ? "connections" : "sessions";
  return `<td class="num" data-testid="connections" title="${esc(`${r.connections} ${what} ended since the route appeared, ${r.failed} of them failed`)}">${esc(r.connections)}</td>
      <td class="num" data-testid="open">${esc(r.open)}</td>
      <td class="num${r.failed ? " down" : ""}" data-testid="failed">${esc(r.failed)}</td>
      <td class="num"><span data-testid="cps">${fmtRate(rate)}</span>${spark(h, "cps", `new ${what}/s`)}</td>
      <td class="num" data-testid="bytes-in" title="${esc(`${r.bytes_in} bytes from clients`)}">${fmtBytes(r.bytes_in)}</td>
      <td class="num" data-testid="bytes-out" title="${esc(`${r.bytes_out} bytes to clients`)}">${fmtBytes(r.bytes_out)}</td>`;
}

const entrypointList = (list) => (list.length ? list.map(esc).join(", ") : `<span class="hint">all</span>`);
const statusCell = (r) => `<td class="status-${esc(r.status)}" data-testid="status" title="${esc(r.status === "warning" ? "no server of its service is up" : "")}">${esc(r.status)}</td>`;

function renderTcp() {
  $("tcp-body").innerHTML = state.tcp.map((r) => `<tr data-tcp-route="${esc(r.name)}">
      ${statusCell(r)}<td class="wrap" title="${esc(`priority ${r.priority}, declared at ${r.declared_at}`)}"><b>${esc(r.name)}</b>${r.middlewares.map((m) => `<div><code class="hint">${esc(m)}</code></div>`).join("")}</td>
      <td class="wrap"><code>${esc(r.rule)}</code></td>${tcpTls(r)}<td class="wrap" data-testid="entrypoints">${entrypointList(r.entrypoints)}</td>
      <td class="wrap" data-testid="service">${l4Service(r.service)}</td>
      ${l4Cells("tcp", r)}
      <td class="mono wrap wide">${esc(r.declared_at)}</td></tr>`).join("") ||
    `<tr><td colspan="14" data-testid="no-tcp-routes">no TCP routes (<code>tcp_route(...)</code>)</td></tr>`;
}

function renderUdp() {
  $("udp-body").innerHTML = state.udp.map((r) => `<tr data-udp-route="${esc(r.name)}">
      ${statusCell(r)}<td class="wrap" title="${esc(`declared at ${r.declared_at}`)}"><b>${esc(r.name)}</b></td>
      <td class="wrap" data-testid="entrypoints">${entrypointList(r.entrypoints)}</td>
      <td class="wrap" data-testid="service">${l4Service(r.service)}</td>
      ${l4Cells("udp", r)}
      <td class="mono wrap wide">${esc(r.declared_at)}</td></tr>`).join("") ||
    `<tr><td colspan="11" data-testid="no-udp-routes">no UDP routes (<code>udp_route(...)</code>)</td></tr>`;
}

// The TCP and UDP tabs show only while the router has such routes, or while one is open (it
// then says it has none).
function updateTabs() {
  for (const kind of ["tcp", "udp"]) {
    document.querySelector(`nav button[data-tab="${kind}"]`).hidden = state[kind].length === 0 && state.tab !== kind;
  }
}

// A time ahead as its largest unit: "in 42 s", "in 5 min", "in 3 h", "in 23 d", "in 5 y".
function inTime(s) {
  if (s < 60) return `in ${Math.max(0, Math.floor(s))} s`;
  if (s < 3600) return `in ${Math.floor(s / 60)} min`;
  if (s < 86400) return `in ${Math.floor(s / 3600)} h`;
  if (s < 730 * 86400) return `in ${Math.floor(s / 86400)} d`;
  return `in ${Math.floor(s / (365 * 86400))} y`;
}

const SOON_DAYS = 14;

/// An expiry cell: the RFC 3339 time and how far off it is, marked when within SOON_DAYS or past.
function expiryCell(notAfter) {
  const at = Date.parse(notAfter || "");
  if (Number.isNaN(at)) return `<td class="mono" data-testid="expiry">${esc(notAfter || "–")}</td>`;
  const left = (at - Date.now()) / 1000;
  const cls = left <= 0 ? "down" : left < SOON_DAYS * 86400 ? "status-warning" : "";
  const title = left <= 0 ? "expired" : left < SOON_DAYS * 86400 ? `expires within ${SOON_DAYS} days` : "";
  return `<td class="mono ${cls}" data-testid="expiry" title="${title}"><span class="nowrap">${esc(notAfter)}</span> <span class="hint nowrap">(${left <= 0 ? "expired" : inTime(left)})</span></td>`;
}

function renderCertificates(c) {
  // A router without TLS entrypoints answers {"certificates": []} and no resolvers.
  const certs = c.certificates || [];
  const resolvers = c.resolvers || [];
  const table = certs.map((x) => `<tr data-cert="${esc((x.names || []).join(","))}">
    <td title="${esc(x.subject)}">${(x.names || []).length ? esc(x.names.join(", ")) : `<span class="hint">${esc(x.subject)}</span>`}${x.default ? ` <span class="tag" data-testid="default-cert" title="served when no certificate lists the name a client asks for">default</span>` : ""}</td>
    <td>${esc(x.issuer)}</td>${expiryCell(x.not_after)}<td class="mono">${esc(x.source)}</td></tr>`).join("") ||
    `<tr><td colspan="4" data-testid="no-certificates">no certificates: no entrypoint terminates TLS</td></tr>`;
  const res = resolvers.map((r) => `<h3 class="sub">Resolver ${esc(r.name)}</h3>
    <div class="scroll"><table data-testid="resolver" data-resolver="${esc(r.name)}">
      <thead><tr><th>name</th><th>expires</th><th>orders</th><th>failures</th><th>last error</th><th>next attempt</th></tr></thead>
      <tbody>${(r.names || []).map((n) => `<tr data-name="${esc(n.name)}">
        <td><b>${esc(n.name)}</b>${n.on_demand ? ` <span class="tag" data-testid="on-demand" title="ordered at a handshake, not for a route">on demand</span>` : ""}</td>
        ${n.not_after ? expiryCell(n.not_after) : `<td data-testid="expiry">none yet</td>`}
        <td class="mono">${esc(n.orders)}</td><td class="mono">${esc(n.failures)}</td>
        <td class="down" data-testid="last-error">${esc(n.last_error || "")}</td>
        <td class="nowrap" data-testid="next-attempt">${typeof n.next_attempt_in_seconds === "number" ? inTime(n.next_attempt_in_seconds) : ""}</td></tr>`).join("") ||
        `<tr><td colspan="6">no names: no route asks this resolver for a certificate</td></tr>`}</tbody>
    </table></div>`).join("") ||
    `<p class="hint" data-testid="no-resolvers">no certificate resolvers (<code>--acme.NAME.*</code>)</p>`;
  // Redrawn only on a change, so a name or an error can be selected and copied.
  if (state.certsHtml.table !== table) $("certificates-body").innerHTML = table;
  if (state.certsHtml.res !== res) $("resolvers").innerHTML = res;
  state.certsHtml = { table, res };
}

function sourceBlock(text, errors) {
  const lines = text.split("\n");
  const bad = new Map(errors.map((e) => [e.line, e]));
  // Errors with three lines of context around each.
  const keep = new Set();
  for (const e of errors) for (let i = e.line - 3; i <= e.line + 3; i++) keep.add(i);
  let out = "", last = 0;
  lines.forEach((l, i) => {
    const n = i + 1;
    if (!keep.has(n)) return;
    if (last && n > last + 1) out += `<div class="ln">…</div>`;
    const e = bad.get(n);
    out += `<div class="${e ? "err" : ""}"><span class="ln">${n}</span>${esc(l)}</div>`;
    if (e && e.column > 0) out += `<div class="err"><span class="ln"></span><span class="caret">${" ".repeat(e.column - 1)}^ ${esc(e.message)}</span></div>`;
    last = n;
  });
  return `<div class="source mono" data-testid="source">${out}</div>`;
}

async function renderScripts(s) {
  $("script-errors").textContent = s.errors.length ? `(${s.errors.length})` : "";
  const parts = [];
  const listed = new Set(s.scripts.map((f) => f.file));
  // Errors of files a failed build could not list (e.g. unreadable) still show.
  const loose = s.errors.filter((e) => !listed.has(e.file));
  for (const f of s.scripts) {
    let body = "";
    if (!f.ok) {
      let src = state.sources[f.file];
      const key = JSON.stringify(f.errors);
      if (!src || src.key !== key) {
        try {
          const r = await api(`/api/scripts/source?file=${encodeURIComponent(f.file)}`);
          src = state.sources[f.file] = { key, text: r.text };
        } catch (e) { src = { key, text: "" }; }
      }
      body = f.errors.map((e) => `<div class="msg" data-testid="script-error">${esc(e.file)}:${e.line}:${e.column}: ${esc(e.message)}</div>`).join("") +
        (src.text ? sourceBlock(src.text, f.errors) : "");
    }
    const warn = f.warnings.map((w) => `<div class="warnings">${esc(w.file)}:${w.line}:${w.column}: ${esc(w.message)}</div>`).join("");
    parts.push(`<div class="script ${f.ok ? "good" : "bad"}" data-file="${esc(f.file)}"><h3>${f.ok ? "✓" : "✗"} ${esc(f.file)}</h3>${body}${warn}</div>`);
  }
  for (const e of loose) parts.push(`<div class="script bad"><h3>✗ ${esc(e.file)}</h3><div class="msg" data-testid="script-error">${esc(e.file)}:${e.line}:${e.column}: ${esc(e.message)}</div></div>`);
  const other = s.warnings.filter((w) => !listed.has(w.file));
  if (other.length) parts.push(`<div class="script"><h3>provider warnings</h3>${other.map((w) => `<div class="warnings">${esc(w.message)}</div>`).join("")}</div>`);
  $("scripts").innerHTML = `<p>Build #${s.attempt} at ${esc(s.at)}: ${s.ok ? `<span class="up">ok</span>, ${s.routes} routes` : `<span class="down">failed</span> — the previous table (build #${s.live_attempt}) keeps serving`}</p>` + parts.join("");
}

async function poll() {
  try {
    const [o, rt, sv, sc, ce, tcp, udp] = await Promise.all([api("/api/overview"), api("/api/routes?per_page=1000"), api("/api/services?per_page=1000"), api("/api/scripts"), api("/api/certificates"), api("/api/tcp/routes?per_page=1000"), api("/api/udp/routes?per_page=1000")]);
    renderOverview(o);
    state.routes = rt.routes;
    state.services = sv.services;
    state.tcp = tcp.tcp_routes || [];
    state.udp = udp.udp_routes || [];
    const now = Date.now();
    updateRates("route", rt.routes, now);
    updateRates("service", sv.services, now);
    updateRates("tcp", state.tcp, now);
    updateRates("udp", state.udp, now);
    renderRoutes();
    renderServices();
    renderTcp();
    renderUdp();
    updateTabs();
    renderCertificates(ce);
    await renderScripts(sc);
    $("live").className = "live";
    document.body.dataset.polled = String(Number(document.body.dataset.polled || 0) + 1);
  } catch (e) {
    $("live").className = "live stale";
    $("live").title = `cannot reach the API: ${e.message}`;
  }
  setTimeout(poll, POLL_MS);
}

function showTab(name) {
  state.tab = name;
  for (const b of document.querySelectorAll("nav button")) b.classList.toggle("on", b.dataset.tab === name);
  for (const t of document.querySelectorAll(".tab")) t.hidden = t.id !== `tab-${name}`;
  updateTabs();
}

document.querySelector("nav").addEventListener("click", (e) => {
  const b = e.target.closest("button");
  if (b) showTab(b.dataset.tab);
});
$("routes-body").addEventListener("click", (e) => {
  const tr = e.target.closest("tr[data-route]");
  if (!tr) return;
  state.selected = state.selected === tr.dataset.route ? null : tr.dataset.route;
  renderRoutes();
});
for (const id of ["route-search", "route-status", "route-entrypoint"]) $(id).addEventListener("input", renderRoutes);

$("explain-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const headers = [];
  for (const line of $("ex-headers").value.split("\n")) {
    const i = line.indexOf(":");
    if (i > 0) headers.push([line.slice(0, i).trim(), line.slice(i + 1).trim()]);
  }
  const body = { method: $("ex-method").value, url: $("ex-url").value.trim(), headers, entrypoint: $("ex-entrypoint").value || undefined };
  if ($("ex-client").value.trim()) body.client = $("ex-client").value.trim();
  try {
    const r = await api("/api/explain", { method: "POST", body: JSON.stringify(body), headers: { "content-type": "application/json" } });
    $("explain-summary").textContent = `${r.request} → ${r.summary}`;
    $("explain-out").textContent = r.text;
  } catch (err) {
    $("explain-summary").textContent = `error: ${err.message}`;
    $("explain-out").textContent = "";
  }
});

poll();
