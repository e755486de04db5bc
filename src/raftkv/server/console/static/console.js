// raftkv console: plain JavaScript, no library. Rules kept throughout:
// - every request goes through api() (the one place a login would add its
//   Authorization header), to this node only (same origin: the browser guards let it in);
// - data from the store (keys, values, messages) reaches the page through textContent
//   only, never as HTML; keys and values travel base64 so any bytes round-trip;
// - a failed refresh shows in the page and the next one tries again: nothing stops it.
"use strict";

// -- requests -------------------------------------------------------------------------------

// With auth enabled (docs/security.md), the token of the user signed in on this tab (kept in
// sessionStorage, so a reload keeps it and closing the tab forgets it; never in a URL), sent
// as a bearer token. The first request refused for want of credentials shows the sign-in form.
let authToken = sessionStorage.getItem("raftkv-token");
let authUser = sessionStorage.getItem("raftkv-user");
const ASKS_FOR_LOGIN = new Set(["auth_required", "invalid_token"]);

class ApiFailure extends Error {
  constructor(status, code, message) {
    super(message || `HTTP ${status}`);
    this.status = status;
    this.code = code || "";
  }
}

// Lease and member ids are 64-bit: beyond 2^53 a JavaScript number would round them. Such
// integers are read as strings of digits (with the parser's source text where it has it,
// else by quoting them before parsing), and sent as BigInt, written out as digits.
const PARSER_HAS_SOURCE = (() => {
  let found = false;
  JSON.parse("1", (key, value, context) => { found = Boolean(context && "source" in context); return value; });
  return found;
})();
function parseJson(text) {
  if (!PARSER_HAS_SOURCE) text = text.replace(/([:,[]\s*)(-?\d{16,})(?=\s*[,\]}])/g, '$1"$2"');
  return JSON.parse(text, (key, value, context) =>
    typeof value === "number" && !Number.isSafeInteger(value) && context && /^-?\d+$/.test(context.source) ? context.source : value);
}
function toJson(body) {
  return JSON.stringify(body, (key, value) => (typeof value === "bigint" ? `__integer__${value}` : value))
    .replace(/"__integer__(-?\d+)"/g, "$1");
}

async function api(method, path, { query, body, signal, stream } = {}) {
  const url = new URL(path, window.location.origin);
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null) url.searchParams.set(name, String(value));
  }
  const headers = { Accept: "application/json" };
  const sentToken = authToken;
  if (sentToken) headers.Authorization = `Bearer ${sentToken}`;
  const init = { method, headers, signal, cache: "no-store", credentials: "same-origin" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = toJson(body);
  }
  const response = await fetch(url, init);
  if (stream && response.ok) return response;
  const text = await response.text();
  let data = null;
  try { data = text ? parseJson(text) : null; } catch (_) { data = null; }
  if (!response.ok) {
    const error = data && data.error ? data.error : {};
    if (response.status === 401 && ASKS_FOR_LOGIN.has(error.code)) refused(sentToken, error.message);
    throw new ApiFailure(response.status, error.code, error.message || text.slice(0, 200));
  }
  return data;
}

// -- signing in -----------------------------------------------------------------------------

// A refusal speaks only for the token its request was sent with. A request sent before
// signing in (the page refreshes every second) may be answered after it: that answer must
// neither sign out the user who has just signed in nor bring the form back.
function refused(sentToken, reason) {
  if (sentToken !== authToken) return;
  if (authToken) forgetLogin();
  askForLogin(reason);
}
function askForLogin(reason) {
  $("login-reason").textContent = reason || "";
  if ($("login").hidden) {
    $("login").hidden = false;
    $("login-name").focus();
  }
}
function forgetLogin() {
  authToken = null;
  authUser = null;
  sessionStorage.removeItem("raftkv-token");
  sessionStorage.removeItem("raftkv-user");
  showUser();
}
function showUser() {
  $("signed-in").hidden = !authUser;
  $("signed-in-user").textContent = authUser || "";
}
async function logIn(event) {
  event.preventDefault();
  const name = $("login-name").value;
  $("login-error").textContent = "";
  try {
    const answer = await api("POST", "/v1/auth/authenticate", { body: { name, password: $("login-password").value } });
    authToken = answer.token;
    authUser = name;
    sessionStorage.setItem("raftkv-token", authToken);
    sessionStorage.setItem("raftkv-user", authUser);
    $("login-password").value = "";
    $("login").hidden = true;
    showUser();
    searchKeys();
  } catch (error) { $("login-error").textContent = describe(error); }
}
function logOut() {
  forgetLogin();
  askForLogin("signed out");
}

// -- bytes ----------------------------------------------------------------------------------

const encoder = new TextEncoder();
const strictDecoder = new TextDecoder("utf-8", { fatal: true });

function bytesToBase64(bytes) {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}
function base64ToBytes(text) {
  const binary = atob(text || "");
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}
const textToBase64 = (text) => bytesToBase64(encoder.encode(text));
function utf8OrNull(bytes) {
  try { return strictDecoder.decode(bytes); } catch (_) { return null; }
}
function hex(bytes, limit) {
  const shown = bytes.subarray(0, limit === undefined ? bytes.length : limit);
  return Array.from(shown, (b) => b.toString(16).padStart(2, "0")).join(" ");
}
// How a key or value shows in one line: its text (cut at `limit` characters), or, when it
// is not UTF-8 text, its first bytes in hex.
function display(bytes, limit = 200) {
  const text = utf8OrNull(bytes);
  if (text !== null) return { text: text.length > limit ? text.slice(0, limit) + "…" : text, binary: false };
  const shown = Math.floor(limit / 3);
  return { text: "0x " + hex(bytes, shown) + (bytes.length > shown ? " …" : ""), binary: true };
}
// The range end covering every key starting with `prefix` (etcd's prefix end).
function prefixEnd(prefix) {
  const bytes = Array.from(prefix);
  while (bytes.length && bytes[bytes.length - 1] === 0xff) bytes.pop();
  if (!bytes.length) return new Uint8Array([0]);
  bytes[bytes.length - 1] += 1;
  return new Uint8Array(bytes);
}

// -- the DOM, textContent only --------------------------------------------------------------

function el(tag, { text, cls, attrs } = {}, children = []) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
  for (const child of children) node.append(child);
  return node;
}
const $ = (id) => document.getElementById(id);
function replaceRows(tbody, rows) { tbody.replaceChildren(...rows); }
function cell(text, cls) { return el("td", { text, cls }); }
function showResult(text, bad) {
  const result = $("action-result");
  result.textContent = text;
  result.className = bad ? "bad" : "";
}
function describe(error) {
  if (error instanceof ApiFailure) return `${error.status} ${error.code}: ${error.message}`;
  return String(error && error.message ? error.message : error);
}
const timeOf = (seconds) => new Date(seconds * 1000).toLocaleTimeString([], { hour12: false });

// -- members --------------------------------------------------------------------------------

const state = { members: [], leader: 0, me: 0, cluster: null };

function roleOf(member, clusterMember) {
  if (!member.reachable) return "unreachable";
  if (member.node.status.removed) return "removed";
  if (clusterMember && clusterMember.role === "learner") return "learner";
  return member.node.status.role.replace("_", "-");
}

function renderMembers(answer, cluster) {
  const byId = new Map((cluster ? cluster.members : []).map((m) => [m.id, m]));
  const reachable = answer.members.filter((m) => m.reachable);
  const highestCommit = Math.max(0, ...reachable.map((m) => m.node.status.commit_index));
  const leaders = new Set(reachable.map((m) => m.node.status.leader));
  const leader = leaders.size === 1 ? [...leaders][0] : 0;
  state.members = answer.members;
  state.leader = leader;
  state.me = answer.member;
  const rows = answer.members.map((member) => {
    const clusterMember = byId.get(member.id);
    const role = roleOf(member, clusterMember);
    const tr = el("tr", { cls: (member.id === leader && role === "leader" ? "leader" : "") + (member.reachable ? "" : " down"), attrs: { "data-member": String(member.id) } });
    const name = member.id === answer.member ? `${member.id} (this node)` : String(member.id);
    tr.append(cell(name));
    const roleCell = el("td");
    roleCell.append(el("span", { text: role, cls: "tag " + (role === "leader" ? "leader" : role === "unreachable" ? "down" : "") }));
    tr.append(roleCell);
    if (!member.reachable) {
      tr.append(cell(""), cell(""), cell(""), cell(""), cell(""));
      const contact = clusterMember && clusterMember.last_contact_s !== null ? `${clusterMember.last_contact_s.toFixed(1)} s ago` : "—";
      tr.append(cell(contact));
      const health = el("td", { text: "unreachable", attrs: { title: member.error } });
      tr.append(health, cell(""), cell(member.client_url || "—"));
      return tr;
    }
    const status = member.node.status;
    tr.append(
      cell(status.leader ? String(status.leader) : "none"),
      cell(String(status.term), "num"),
      cell(String(status.commit_index), "num"),
      cell(String(status.applied_index), "num"),
      cell(String(Math.max(0, highestCommit - status.applied_index)), "num"),
    );
    let contact = "—";
    if (member.id === answer.member) contact = "this node";
    else if (clusterMember && clusterMember.last_contact_s !== null && clusterMember.last_contact_s !== undefined) contact = `${clusterMember.last_contact_s.toFixed(1)} s ago`;
    tr.append(cell(contact));
    const alarms = (status.alarms || []).filter((a) => a.member === member.id).map((a) => a.alarm);
    tr.append(cell([member.node.health, ...alarms].join(", ")));
    tr.append(cell(member.node.version), cell(member.client_url || "—"));
    return tr;
  });
  replaceRows($("members-table").tBodies[0], rows);
  const banners = [];
  if (!leader) banners.push(["bad", "No leader: an election is on, or too few members are up to elect one. Writes and linearizable reads wait."]);
  for (const member of answer.members.filter((m) => !m.reachable)) {
    banners.push(["warn", `Member ${member.id} is unreachable: ${member.error}`]);
  }
  for (const member of reachable) {
    if (member.node.health !== "ok") banners.push(["bad", `Member ${member.id}: ${member.node.health}`]);
  }
  $("banners").replaceChildren(...banners.map(([cls, text]) => el("p", { text, cls: "banner " + cls })));
  const leaderText = leader ? `leader: member ${leader}` : "no leader";
  $("served-by").textContent = `member ${answer.member} · ${leaderText} · ${answer.members.length} members`;
  updateMemberChoices(answer.members);
}

function updateMemberChoices(members) {
  const ids = members.map((m) => String(m.id));
  for (const [select, keepFirst] of [[$("transfer-to"), true], [$("member-id"), false]]) {
    const fixed = keepFirst ? 1 : 0;
    const current = Array.from(select.options).slice(fixed).map((o) => o.value);
    if (current.join(",") === ids.join(",")) continue;
    const chosen = select.value;
    while (select.options.length > fixed) select.remove(fixed);
    for (const id of ids) select.append(el("option", { text: `member ${id}`, attrs: { value: id } }));
    if (Array.from(select.options).some((o) => o.value === chosen)) select.value = chosen;
  }
}

async function refreshMembers() {
  try {
    const [answer, cluster] = await Promise.all([
      api("GET", "/v1/console/members"),
      api("GET", "/v1/cluster").catch(() => null),
    ]);
    renderMembers(answer, cluster);
  } catch (error) {
    $("banners").replaceChildren(el("p", { text: `This node does not answer: ${describe(error)}`, cls: "banner bad" }));
  }
}

// -- charts ---------------------------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";
const CHARTS = [
  { id: "writes", title: "Writes/s", lines: ["writes_per_s"], unit: "/s" },
  { id: "reads", title: "Reads/s", lines: ["reads_per_s"], unit: "/s" },
  { id: "latency", title: "Latency p50 (solid) / p99 (dashed)", lines: ["latency_p50_ms", "latency_p99_ms"], unit: " ms" },
  { id: "commit", title: "Commit index", lines: ["commit_index"], unit: "" },
  { id: "fsync", title: "fsync p99", lines: ["fsync_p99_ms"], unit: " ms" },
  { id: "lag", title: "Event-loop lag (max)", lines: ["loop_lag_max_ms"], unit: " ms" },
];
const history = { points: [], last: 0, capacity: 600 };

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  return node;
}

function buildCharts() {
  const grid = $("chart-grid");
  for (const chart of CHARTS) {
    const value = el("b", { text: "—", attrs: { id: `chart-${chart.id}-value` } });
    const caption = el("figcaption", {}, [el("span", { text: chart.title }), value]);
    const drawing = svg("svg", { class: "chart", viewBox: "0 0 300 90", preserveAspectRatio: "none", role: "img", "aria-label": chart.title, id: `chart-${chart.id}` });
    grid.append(el("figure", {}, [caption, drawing]));
  }
}

function formatNumber(value, unit) {
  if (value === null || value === undefined) return "—";
  const shown = Math.abs(value) >= 100 ? Math.round(value).toString() : value.toFixed(value % 1 ? 2 : 0);
  return shown + unit;
}

function drawCharts() {
  const points = history.points;
  const end = points.length ? points[points.length - 1].at : Date.now() / 1000;
  const span = Math.max(60, Math.min(600, end - (points.length ? points[0].at : end)));
  for (const chart of CHARTS) {
    const drawing = $(`chart-${chart.id}`);
    const values = points.flatMap((p) => chart.lines.map((name) => p[name])).filter((v) => v !== null && v !== undefined);
    let low = values.length ? Math.min(...values) : 0;
    let high = values.length ? Math.max(...values) : 1;
    if (chart.id !== "commit") low = 0;
    if (high <= low) high = low + 1;
    const children = [svg("line", { class: "axis", x1: 0, y1: 89, x2: 300, y2: 89 })];
    chart.lines.forEach((name, index) => {
      const coordinates = [];
      for (const point of points) {
        const value = point[name];
        if (value === null || value === undefined) continue;
        const x = 300 - ((end - point.at) / span) * 300;
        if (x < 0) continue;
        const y = 86 - ((value - low) / (high - low)) * 76;
        coordinates.push(`${x.toFixed(1)},${y.toFixed(1)}`);
      }
      if (coordinates.length) children.push(svg("polyline", { class: `line${index + 1}`, points: coordinates.join(" ") }));
    });
    const top = svg("text", { x: 2, y: 10 });
    top.textContent = formatNumber(high, chart.unit);
    const left = svg("text", { x: 2, y: 86 });
    left.textContent = `−${Math.round(span / 60)} min`;
    children.push(top, left);
    drawing.replaceChildren(...children);
    const last = points.length ? points[points.length - 1] : null;
    $(`chart-${chart.id}-value`).textContent = last ? chart.lines.map((n) => formatNumber(last[n], chart.unit)).join(" / ") : "—";
  }
}

async function refreshHistory() {
  try {
    const answer = await api("GET", "/v1/console/history", { query: { after: history.last } });
    history.capacity = answer.capacity;
    if (answer.points.length) {
      history.points.push(...answer.points);
      history.points.splice(0, Math.max(0, history.points.length - history.capacity));
      history.last = history.points[history.points.length - 1].at;
    }
    $("charts-node").textContent = `(member ${answer.member}, one point per ${answer.interval_s} s)`;
    drawCharts();
  } catch (_) { /* shown by the members banner; tried again next second */ }
}

// -- events ---------------------------------------------------------------------------------

const events = { last: 0 };
async function refreshEvents() {
  try {
    const answer = await api("GET", "/v1/events", { query: { after: events.last } });
    $("events-node").textContent = `(seen by member ${answer.member})`;
    const list = $("event-list");
    for (const event of answer.events) {
      const item = el("li", { attrs: { "data-kind": event.kind } }, [
        el("time", { text: timeOf(event.at), attrs: { datetime: new Date(event.at * 1000).toISOString() } }),
        el("span", { text: event.kind, cls: "tag" }),
        el("span", { text: event.message, cls: "message" }),
      ]);
      list.prepend(item);
      events.last = Math.max(events.last, event.seq);
    }
    while (list.children.length > answer.capacity) list.lastElementChild.remove();
  } catch (_) { /* tried again next second */ }
}

// -- keys -----------------------------------------------------------------------------------

// pages: where each earlier page started and how many keys came before it.
const keys = { prefix: new Uint8Array(), pages: [], current: null, limit: 50, selected: null };

async function loadKeyPage(start, offset) {
  const rangeEnd = keys.prefix.length ? prefixEnd(keys.prefix) : new Uint8Array([0]);
  // The empty key is no key: the whole key space starts at "\0".
  const from = start.length ? start : new Uint8Array([0]);
  const answer = await api("GET", "/v1/kv", {
    query: { key: bytesToBase64(from), range_end: bytesToBase64(rangeEnd), limit: keys.limit, encoding: "base64" },
  });
  keys.current = { start, offset, answer };
  const rows = answer.kvs.map((kv) => {
    const keyBytes = base64ToBytes(kv.key);
    const key = display(keyBytes);
    const value = display(base64ToBytes(kv.value), 120);
    const tr = el("tr", { attrs: { tabindex: "0", "data-key": kv.key } }, [
      cell(key.text, "mono" + (key.binary ? " binary" : "")),
      cell(value.text, "mono" + (value.binary ? " binary" : "")),
      cell(String(kv.mod_revision), "num"),
      cell(String(kv.version), "num"),
      cell(kv.lease ? String(kv.lease) : ""),
    ]);
    const open = () => showKey(keyBytes).catch((error) => showResult(describe(error), true));
    tr.addEventListener("click", open);
    tr.addEventListener("keydown", (event) => { if (event.key === "Enter" || event.key === " ") { event.preventDefault(); open(); } });
    return tr;
  });
  replaceRows($("key-table").tBodies[0], rows);
  const shown = answer.kvs.length ? `; showing ${offset + 1}–${offset + answer.kvs.length}` : "";
  const counted = answer.count === 1 ? "1 key" : `${answer.count} keys`;
  const where = keys.prefix.length ? "under this prefix" : "in the store";
  $("key-count").textContent = `${counted} ${where}${shown}`;
  $("key-next").disabled = !answer.more;
  $("key-previous").disabled = keys.pages.length === 0;
}

async function searchKeys(event) {
  if (event) event.preventDefault();
  keys.prefix = encoder.encode($("key-prefix").value);
  keys.limit = Number($("key-limit").value);
  keys.pages = [];
  try { await loadKeyPage(keys.prefix, 0); } catch (error) { $("key-count").textContent = describe(error); }
}

async function nextKeys() {
  const kvs = keys.current.answer.kvs;
  if (!kvs.length) return;
  const last = base64ToBytes(kvs[kvs.length - 1].key);
  const after = new Uint8Array(last.length + 1);
  after.set(last);
  const current = keys.current;
  keys.pages.push(current);
  await loadKeyPage(after, current.offset + kvs.length);
}
async function previousKeys() {
  if (!keys.pages.length) return;
  const page = keys.pages.pop();
  await loadKeyPage(page.start, page.offset);
}

// The most of a value shown on the page; the whole of it can be downloaded.
const MAX_SHOWN_BYTES = 64 * 1024;

function keyPath(keyBytes) { return "/v1/kv/" + encodeURIComponent(bytesToBase64(keyBytes)); }

function renderValue() {
  const selected = keys.selected;
  if (!selected) return;
  const value = selected.value;
  const shown = value.subarray(0, MAX_SHOWN_BYTES);
  const truncated = $("detail-truncated");
  truncated.hidden = value.length <= MAX_SHOWN_BYTES;
  truncated.textContent = `The value has ${value.length} bytes: the first ${MAX_SHOWN_BYTES} are shown. Download it for the whole.`;
  const text = utf8OrNull(value) !== null ? new TextDecoder().decode(shown) : null;
  const asHex = $("detail-view").value === "hex" || text === null;
  $("detail-value").textContent = asHex ? hex(shown) : text;
}

async function showKey(keyBytes) {
  const answer = await api("GET", keyPath(keyBytes), { query: { encoding: "base64" } });
  const kv = answer.kv;
  keys.selected = { key: keyBytes, value: base64ToBytes(kv.value), kv };
  $("key-detail").hidden = false;
  $("detail-key").textContent = display(keyBytes, 500).text;
  const meta = [["created at revision", kv.create_revision], ["modified at revision", kv.mod_revision], ["version", kv.version], ["lease", kv.lease || "none"], ["value bytes", keys.selected.value.length]];
  $("detail-meta").replaceChildren(...meta.flatMap(([name, value]) => [el("dt", { text: name }), el("dd", { text: String(value) })]));
  renderValue();
  const list = $("detail-history");
  list.replaceChildren(el("li", { text: `revision ${kv.mod_revision}: ${display(keys.selected.value, 80).text} (current)` }));
  // Older versions: read the key at the revision before each one's, back to its creation
  // or to where history is compacted (at most 20).
  let revision = kv.mod_revision - 1;
  for (let step = 0; step < 20 && revision >= kv.create_revision; step++) {
    try {
      const older = (await api("GET", keyPath(keyBytes), { query: { encoding: "base64", revision } })).kv;
      list.append(el("li", { text: `revision ${older.mod_revision}: ${display(base64ToBytes(older.value), 80).text}` }));
      revision = older.mod_revision - 1;
    } catch (error) {
      if (error instanceof ApiFailure && error.status === 410) list.append(el("li", { text: "older revisions are compacted", cls: "binary" }));
      else if (!(error instanceof ApiFailure && error.status === 404)) list.append(el("li", { text: describe(error), cls: "error" }));
      break;
    }
  }
}

function download(bytes, name) {
  const link = el("a", { attrs: { download: name } });
  link.href = URL.createObjectURL(new Blob([bytes], { type: "application/octet-stream" }));
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

async function deleteSelected() {
  const selected = keys.selected;
  if (!selected) return;
  if (!window.confirm(`Delete the key ${display(selected.key, 100).text}?`)) return;
  try {
    await api("DELETE", keyPath(selected.key), { query: { encoding: "base64" } });
    showResult(`Deleted ${display(selected.key, 100).text}`);
    $("key-detail").hidden = true;
    keys.selected = null;
    if (keys.current) await loadKeyPage(keys.current.start, keys.current.offset);
  } catch (error) { showResult(describe(error), true); }
}

async function putKey(event) {
  event.preventDefault();
  const key = $("put-key").value;
  const value = $("put-value").value;
  const leaseText = $("put-lease").value.trim();
  if (!key) return;
  if (!window.confirm(`Put ${key.length > 100 ? key.slice(0, 100) + "…" : key} = ${value.length} characters?`)) return;
  const body = { value: textToBase64(value) };
  if (leaseText) body.lease = BigInt(leaseText);
  try {
    const answer = await api("PUT", keyPath(encoder.encode(key)), { query: { encoding: "base64" }, body });
    showResult(`Put ${key} at revision ${answer.header.revision}`);
    if (keys.current) await loadKeyPage(keys.current.start, keys.current.offset);
  } catch (error) { showResult(describe(error), true); }
}

// -- the watch tail -------------------------------------------------------------------------

const watch = { controller: null, rows: 0 };
const MAX_WATCH_ROWS = 200;

function addWatchRow(event) {
  const kv = event.kv;
  const key = display(base64ToBytes(kv.key));
  const value = event.type === "put" ? display(base64ToBytes(kv.value), 120) : { text: "", binary: false };
  const tbody = $("watch-table").tBodies[0];
  tbody.prepend(el("tr", {}, [
    cell(String(kv.mod_revision), "num"),
    cell(event.type),
    cell(key.text, "mono" + (key.binary ? " binary" : "")),
    cell(value.text, "mono" + (value.binary ? " binary" : "")),
  ]));
  while (tbody.rows.length > MAX_WATCH_ROWS) tbody.lastElementChild.remove();
}

async function startWatch(event) {
  event.preventDefault();
  stopWatch();
  const controller = new AbortController();
  watch.controller = controller;
  const prefix = encoder.encode($("watch-prefix").value);
  $("watch-start").disabled = true;
  $("watch-stop").disabled = false;
  $("watch-state").textContent = "connecting…";
  let revision = 0;
  while (watch.controller === controller) {
    try {
      const query = { key: bytesToBase64(prefix), encoding: "base64", progress_notify: "true" };
      if (prefix.length) query.range_end = bytesToBase64(prefixEnd(prefix));
      else query.range_end = bytesToBase64(new Uint8Array([0]));
      if (revision) query.start_revision = revision + 1;
      const response = await api("GET", "/v1/watch", { query, signal: controller.signal, stream: true });
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffered = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffered += decoder.decode(value, { stream: true });
        let newline;
        while ((newline = buffered.indexOf("\n")) >= 0) {
          const message = parseJson(buffered.slice(0, newline));
          buffered = buffered.slice(newline + 1);
          if (message.type === "created") $("watch-state").textContent = `watching from revision ${message.start_revision || message.revision + 1}`;
          if (message.type === "events") for (const change of message.events) addWatchRow(change);
          if (message.revision) revision = Math.max(revision, message.revision);
          if (message.type === "canceled") throw new ApiFailure(200, message.error.code, message.error.message);
        }
      }
    } catch (error) {
      if (watch.controller !== controller) return;
      $("watch-state").textContent = `interrupted (${describe(error)}); resuming…`;
      if (error instanceof ApiFailure && error.code === "compacted") revision = 0;
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

function stopWatch() {
  if (watch.controller) watch.controller.abort();
  watch.controller = null;
  $("watch-start").disabled = false;
  $("watch-stop").disabled = true;
  $("watch-state").textContent = "stopped";
}

// -- leases ---------------------------------------------------------------------------------

// The rows are rebuilt only when the leases change, so that a focused button stays
// focused; the countdown and the keys shown are updated in place.
const leases = { fetchedAt: 0, list: [], shown: new Map(), rows: new Map(), ids: "" };

function leaseRow(lease) {
  const show = el("button", { text: "Show keys", attrs: { type: "button" } });
  show.addEventListener("click", () => showLeaseKeys(lease.id));
  const revoke = el("button", { text: "Revoke…", cls: "danger", attrs: { type: "button" } });
  revoke.addEventListener("click", () => revokeLease(lease.id));
  return el("tr", {}, [cell(String(lease.id)), cell("", "num"), cell(`${lease.granted_ttl} s`, "num"), cell("", "mono"), el("td", {}, [show, document.createTextNode(" "), revoke])]);
}

function renderLeases() {
  const ids = leases.list.map((lease) => String(lease.id)).join(",");
  if (ids !== leases.ids) {
    leases.ids = ids;
    leases.rows = new Map(leases.list.map((lease) => [lease.id, leaseRow(lease)]));
    const rows = [...leases.rows.values()];
    replaceRows($("lease-table").tBodies[0], rows.length ? rows : [el("tr", {}, [el("td", { text: "no leases", attrs: { colspan: "5" } })])]);
  }
  const elapsed = (Date.now() - leases.fetchedAt) / 1000;
  for (const lease of leases.list) {
    const row = leases.rows.get(lease.id);
    row.cells[1].textContent = `${Math.max(0, Math.round(lease.ttl - elapsed))} s`;
    const shown = leases.shown.get(lease.id);
    if (shown) row.cells[3].textContent = shown.length ? shown.join(", ") : "no keys";
  }
}

async function refreshLeases() {
  try {
    const answer = await api("GET", "/v1/leases", { query: { consistency: "serializable" } });
    leases.list = answer.leases;
    leases.fetchedAt = Date.now();
  } catch (_) { /* tried again */ }
}

async function showLeaseKeys(id) {
  try {
    const answer = await api("GET", `/v1/lease/${id}`, { query: { keys: "true", encoding: "base64" } });
    leases.shown.set(id, (answer.keys || []).map((key) => display(base64ToBytes(key), 80).text));
    renderLeases();
  } catch (error) { showResult(describe(error), true); }
}

async function revokeLease(id) {
  if (!window.confirm(`Revoke lease ${id}? Its keys are deleted.`)) return;
  try {
    await api("DELETE", `/v1/lease/${id}`);
    showResult(`Revoked lease ${id}`);
    await refreshLeases();
    renderLeases();
  } catch (error) { showResult(describe(error), true); }
}

// -- actions --------------------------------------------------------------------------------

async function act(question, method, path, body, done) {
  if (!window.confirm(question)) return;
  showResult("working…");
  try {
    const answer = await api(method, path, { body });
    showResult(done(answer));
    await refreshMembers();
  } catch (error) { showResult(describe(error), true); }
}

function wireActions() {
  $("transfer-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const to = BigInt($("transfer-to").value);
    act(`Transfer leadership to ${to ? `member ${to}` : "the most caught-up voter"}?`, "POST", "/v1/leader/transfer", { to }, (answer) => `Member ${answer.leader} leads now`);
  });
  $("member-promote").addEventListener("click", () => {
    const id = $("member-id").value;
    act(`Promote learner ${id} to voter?`, "POST", `/v1/members/${id}/promote`, undefined, () => `Member ${id} is a voter`);
  });
  $("member-remove").addEventListener("click", () => {
    const id = $("member-id").value;
    act(`Remove member ${id} from the cluster? It stops serving; joining again needs a new id and an empty data dir.`, "DELETE", `/v1/members/${id}`, undefined, () => `Member ${id} was removed`);
  });
  $("compact-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const revision = Number($("compact-revision").value);
    act(`Discard the history before revision ${revision}? Reads and watches of older revisions will fail.`, "POST", "/v1/compact", { revision }, () => `History compacted to revision ${revision}`);
  });
  $("backup").addEventListener("click", async (event) => {
    // Fetched rather than followed, so that the request carries the token.
    event.preventDefault();
    if (!window.confirm("Take a backup of the whole store now and download it?")) return;
    showResult("taking a backup…");
    try {
      const response = await api("GET", "/v1/snapshot", { stream: true });
      download(await response.blob(), "raftkv-backup.snap");
      showResult("backup downloaded");
    } catch (error) { showResult(describe(error), true); }
  });
}

// -- start ----------------------------------------------------------------------------------

function every(seconds, task) {
  let running = false;
  const run = async () => {
    if (running) return;
    running = true;
    try { await task(); } finally { running = false; }
  };
  run();
  setInterval(run, seconds * 1000);
}

function start() {
  buildCharts();
  showUser();
  $("login-form").addEventListener("submit", logIn);
  $("sign-out").addEventListener("click", logOut);
  $("key-search").addEventListener("submit", searchKeys);
  $("key-next").addEventListener("click", () => nextKeys().catch((error) => showResult(describe(error), true)));
  $("key-previous").addEventListener("click", () => previousKeys().catch((error) => showResult(describe(error), true)));
  $("detail-view").addEventListener("change", renderValue);
  $("detail-download").addEventListener("click", () => keys.selected && download(keys.selected.value, "value.bin"));
  $("detail-delete").addEventListener("click", deleteSelected);
  $("put-form").addEventListener("submit", putKey);
  $("watch-form").addEventListener("submit", startWatch);
  $("watch-stop").addEventListener("click", stopWatch);
  wireActions();
  every(1, refreshMembers);
  every(1, refreshHistory);
  every(1, refreshEvents);
  every(2, refreshLeases);
  every(1, async () => renderLeases());
  searchKeys();
}

document.addEventListener("DOMContentLoaded", start);
