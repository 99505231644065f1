// The operator's dashboard: tasks (live, with project, message, error and times), the inbox,
// presence, a live event stream with filters, and for admins the cluster and the refresh
// interval. Every URL is relative to the page, so it works behind a path prefix.
//
// Task updates are applied once per animation frame, and only to the rows that changed: a
// thousand tasks reporting progress never re-render the list.
import { NotifierClient } from "./notifier-client.mjs";

const $ = (id) => document.getElementById(id);
const base = new URL(".", location.href); // the service's root, any prefix included
const MAX_EVENTS = 300;

let client = null;
let session = null;
let pinger = null;
let statusPoller = null;
const tasks = new Map(); // id -> {task, row}
const pending = new Map(); // id -> task, rendered on the next frame
let frameRequested = false;
const projects = new Set();

const token = () => $("token").value.trim();
const authHeaders = () => ({ authorization: `Bearer ${token()}` });
const time = (ms) => (ms ? new Date(ms).toLocaleTimeString() : "–");

function setState(state, detail) {
  $("state").textContent = state;
  $("state").className = `pill ${state}`;
  $("state").title = detail ?? "";
}

function showProblem(text) {
  $("problem").textContent = text ?? "";
  $("problem").className = text ? "shown" : "";
}

// Tasks

function upsertTask(task) {
  const known = tasks.get(task.id)?.task ?? pending.get(task.id);
  if (known && known.version > task.version) return; // an older snapshot: keep the newer
  pending.set(task.id, task);
  addProject(task.project_id);
  if (!frameRequested) {
    frameRequested = true;
    requestAnimationFrame(flushTasks);
  }
}

function flushTasks() {
  frameRequested = false;
  const fresh = document.createDocumentFragment();
  for (const task of pending.values()) {
    const entry = tasks.get(task.id);
    if (entry) {
      entry.task = task;
      fillRow(entry.row, task);
    } else {
      const row = newRow(task.id);
      tasks.set(task.id, { task, row });
      fillRow(row, task);
      fresh.prepend(row);
    }
  }
  pending.clear();
  if (fresh.childNodes.length) {
    document.querySelector("#tasks .empty")?.remove();
    $("tasks").prepend(fresh);
  }
  $("task-count").textContent = `${tasks.size}`;
}

function newRow(id) {
  const row = document.createElement("div");
  row.dataset.task = id;
  row.innerHTML = '<div class="meta"><span class="title"></span><span class="project"></span>'
    + '<span class="status"></span></div><div class="bar"><div></div></div>'
    + '<div class="detail"><span class="message"></span><span class="error"></span>'
    + '<span class="times"></span></div>';
  return row;
}

function fillRow(row, task) {
  row.className = `task ${task.status}`;
  row.dataset.progress = String(task.progress);
  row.dataset.project = task.project_id;
  row.dataset.status = task.status;
  row.querySelector(".title").textContent = task.title || task.id;
  row.querySelector(".project").textContent = task.project_id;
  row.querySelector(".status").textContent = `${task.status} ${Math.round(task.progress)}%`;
  row.querySelector(".bar > div").style.width = `${task.progress}%`;
  row.querySelector(".message").textContent = task.message ?? "";
  row.querySelector(".error").textContent = task.error ? `error: ${task.error}` : "";
  const took = task.finished_at ? ` · took ${((task.finished_at - task.created_at) / 1000).toFixed(1)} s` : "";
  row.querySelector(".times").textContent =
    `created ${time(task.created_at)} · updated ${time(task.updated_at)}`
    + (task.finished_at ? ` · finished ${time(task.finished_at)}${took}` : "");
  row.hidden = !matchesTaskFilter(task);
}

function matchesTaskFilter(task) {
  const project = $("task-project").value;
  const status = $("task-status").value;
  return (!project || task.project_id === project) && (!status || task.status === status);
}

function refilterTasks() {
  for (const { task, row } of tasks.values()) row.hidden = !matchesTaskFilter(task);
}

function addProject(project) {
  if (!project || projects.has(project)) return;
  projects.add(project);
  for (const select of [$("task-project"), $("presence-room")]) {
    const option = document.createElement("option");
    option.value = select.id === "presence-room" ? `project:${project}` : project;
    option.textContent = project;
    select.append(option);
  }
}

async function loadTasks() {
  const response = await fetch(new URL("api/v1/tasks", base), { headers: authHeaders() });
  const listing = await response.json();
  if (!response.ok) throw new Error(listing.error?.message ?? response.statusText);
  const sorted = [...(listing.tasks ?? [])].sort((a, b) => a.created_at - b.created_at);
  for (const task of sorted) upsertTask(task);
}

// Notifications

function setUnread(count) {
  $("unread").textContent = String(count);
  $("unread").className = count ? "badge" : "badge zero";
}

function renderNote(note, { prepend = true } = {}) {
  const item = document.createElement("li");
  item.className = `note ${note.read ? "read" : "unread"}`;
  item.dataset.note = note.id;
  item.innerHTML = "<span><strong></strong> <span class=body></span></span>";
  item.querySelector("strong").textContent = note.title;
  item.querySelector(".body").textContent = note.body ?? "";
  if (!note.read) {
    const button = document.createElement("button");
    button.textContent = "Mark read";
    button.className = "mark-read";
    button.onclick = async () => markReadInPage((await client.call("notifications.mark_read", { ids: [note.id] })).marked);
    item.append(button);
  }
  if (session?.role === "admin") {
    const receipts = document.createElement("button");
    receipts.textContent = "Receipts";
    receipts.className = "receipts";
    receipts.onclick = () => showReceipts(note.id).catch((err) => showProblem(err.message));
    item.append(receipts);
  }
  if (prepend) $("notes").prepend(item); else $("notes").append(item);
  while ($("notes").children.length > 50) $("notes").lastChild.remove();
}

function markReadInPage(ids) {
  for (const id of ids) {
    const item = document.querySelector(`[data-note="${CSS.escape(id)}"]`);
    if (!item) continue;
    item.className = "note read";
    item.querySelector(".mark-read")?.remove();
  }
}

async function loadInbox() {
  const inbox = await client.call("notifications.list", { limit: 20 });
  $("notes").replaceChildren();
  for (const note of inbox.notifications) renderNote(note, { prepend: false });
  setUnread(inbox.unread);
}

// Receipts (admins): who got a notification, on which device, and its escalation

async function showReceipts(id) {
  $("receipt-id").value = id;
  const url = new URL(`api/v1/notifications/${encodeURIComponent(id)}/receipts`, base);
  const response = await fetch(url, { headers: authHeaders() });
  const answer = await response.json();
  if (!response.ok) throw new Error(`${answer.error?.code}: ${answer.error?.message}`);
  const rows = answer.receipts.map((receipt) => {
    const row = document.createElement("tr");
    for (const text of [receipt.kind, receipt.device, time(receipt.at), receipt.action ?? ""]) {
      row.append(Object.assign(document.createElement("td"), { textContent: text }));
    }
    return row;
  });
  $("receipts").replaceChildren(...rows);
  $("receipts").dataset.for = id;
  const escalation = answer.escalation;
  $("escalation").textContent = escalation
    ? `escalation ${escalation.state}, due ${time(escalation.due_at)}, ${escalation.attempts} attempts` +
      (escalation.last_error ? ` (${escalation.last_error})` : "")
    : "no escalation";
}

// Presence

async function showPresence() {
  const room = $("presence-room").value;
  if (!room) return;
  if (!client.presenceRooms.has(room)) await client.subscribe([room], { presence: true });
  const reply = await client.call("presence.get", { room });
  const items = reply.users.map((user) => {
    const item = document.createElement("li");
    item.dataset.user = user.user_id;
    item.className = user.connections ? "" : "grace";
    item.innerHTML = "<span></span><span></span>";
    item.firstChild.textContent = user.user_id;
    item.lastChild.textContent = user.connections
      ? `${user.connections} connection${user.connections > 1 ? "s" : ""}` : "reconnecting…";
    return item;
  });
  $("presence").replaceChildren(...(items.length ? items : [Object.assign(document.createElement("li"),
    { className: "empty", textContent: "Nobody here." })]));
}

// Events

function addEvent(type, env) {
  const item = document.createElement("li");
  item.dataset.type = type;
  item.dataset.room = env.room ?? "";
  const data = JSON.stringify(env.data ?? {});
  item.innerHTML = "<span class=time></span> <span class=type></span> <span class=room></span> <span class=data></span>";
  item.querySelector(".time").textContent = time(env.ts);
  item.querySelector(".type").textContent = type;
  item.querySelector(".room").textContent = env.room ?? "(direct)";
  item.querySelector(".data").textContent = data.length > 200 ? `${data.slice(0, 200)}…` : data;
  if (env.replayed) item.classList.add("replayed");
  item.hidden = !matchesEventFilter(item);
  $("events").prepend(item);
  while ($("events").children.length > MAX_EVENTS) $("events").lastChild.remove();
  $("event-count").textContent = `${$("events").children.length}`;
}

function matchesEventFilter(item) {
  const room = $("filter-room").value.trim();
  const type = $("filter-type").value.trim();
  return (!room || item.dataset.room.includes(room)) && (!type || item.dataset.type.includes(type));
}

function refilterEvents() {
  for (const item of $("events").children) item.hidden = !matchesEventFilter(item);
}

// Admin: the cluster and the refresh interval

async function loadStatus() {
  const response = await fetch(new URL("api/v1/status", base), { headers: authHeaders() });
  if (!response.ok) return;
  const status = await response.json();
  const cluster = status.cluster ?? {};
  const nodes = Array.isArray(cluster.nodes)
    ? cluster.nodes : [{ id: "this process", user_connections: status.connections["/"] }];
  $("fig-users").textContent = cluster.user_connections ?? status.connections["/"];
  $("fig-workers").textContent = status.connections["/workers"];
  $("fig-rooms").textContent = status.rooms;
  $("fig-sessions").textContent = status.sessions.websocket + status.sessions.polling;
  $("nodes").replaceChildren(...nodes.map((node) => {
    const row = document.createElement("tr");
    for (const text of [node.id, node.user_connections ?? "–", node.seen ? time(node.seen) : "now"]) {
      const cell = document.createElement("td");
      cell.textContent = String(text);
      row.append(cell);
    }
    return row;
  }));
  $("status-age").textContent = `as of ${time(status.server_time)}`;
  if (document.activeElement !== $("refresh-seconds")) $("refresh-seconds").value = status.refresh_interval;
}

async function applyRefresh() {
  try {
    const reply = await client.call("config.set_refresh_interval", { seconds: Number($("refresh-seconds").value) });
    $("interval").textContent = reply.refresh_interval ? `${reply.refresh_interval}s` : "off";
    showProblem("");
  } catch (err) {
    showProblem(`${err.code}: ${err.detail}`);
  }
}

// Connection

async function connect() {
  client?.close();
  clearInterval(pinger);
  clearInterval(statusPoller);
  showProblem("");
  client = new NotifierClient(base.origin, { token, path: `${base.pathname}socket.io/` });
  client.onState((state, detail) => setState(state, detail));
  client.onReset(() => Promise.all([loadTasks(), loadInbox()]));
  for (const type of ["task.created", "task.progress", "task.completed", "task.failed", "task.cancelled"]) {
    client.on(type, (env) => upsertTask(env.data));
  }
  client.on("*", (env, type) => addEvent(type, env));
  client.on("notification", (env) => renderNote(env.data));
  client.on("notifications.unread", (env) => {
    setUnread(env.data.count);
    if (env.data.count === 0) markReadInPage([...document.querySelectorAll("li.note.unread")].map((li) => li.dataset.note));
  });
  client.on("refresh", (env) => { if (env.data.reason === "interval") loadTasks(); });
  client.on("config.updated", (env) => { $("interval").textContent = env.data.refresh_interval ? `${env.data.refresh_interval}s` : "off"; });
  client.on("presence.joined", (env) => { if (env.room === $("presence-room").value) showPresence(); });
  client.on("presence.left", (env) => { if (env.room === $("presence-room").value) showPresence(); });
  client.on("auth.expiring", (env) => showProblem(`Your token expires at ${time(env.data.expires_at)}: paste a new one to stay connected.`));
  for (const type of ["auth.expired", "auth.revoked", "connection.closing"]) {
    client.on(type, (env) => showProblem(`Disconnected: ${env.data.message} (${env.data.code})`));
  }
  try {
    session = await client.connect();
  } catch (err) {
    setState("refused", err.code);
    showProblem(`Refused: ${err.detail} (${err.code})`);
    return;
  }
  $("who").textContent = `${session.user_id} · ${session.role}`;
  $("interval").textContent = session.refresh_interval ? `${session.refresh_interval}s` : "off";
  setUnread(session.unread);
  const everything = session.projects.includes("*");
  for (const project of session.projects) if (project !== "*") addProject(project);
  // A `*` token follows every project live; others, each project of their token.
  const rooms = everything ? ["project:*"] : session.projects.map((p) => `project:${p}`);
  if (rooms.length) await client.subscribe(rooms);
  await Promise.all([loadTasks(), loadInbox()]);
  if (session.role === "admin") {
    $("admin").className = "shown";
    await loadStatus();
    statusPoller = setInterval(loadStatus, 3000);
  }
  document.body.dataset.ready = "true";
  pinger = setInterval(ping, 5000);
  ping();
}

async function ping() {
  const sent = performance.now();
  await client.call("ping", {});
  $("latency").textContent = `${Math.round(performance.now() - sent)} ms`;
}

$("connect").onclick = connect;
$("mark-all").onclick = async () => markReadInPage((await client.call("notifications.mark_read", { all: true })).marked);
$("task-project").onchange = refilterTasks;
$("task-status").onchange = refilterTasks;
$("filter-room").oninput = refilterEvents;
$("filter-type").oninput = refilterEvents;
$("presence-room").onchange = () => showPresence().catch((err) => showProblem(`${err.code}: ${err.detail}`));
$("refresh-apply").onclick = applyRefresh;
$("receipt-show").onclick = () => showReceipts($("receipt-id").value.trim()).catch((err) => showProblem(err.message));
$("presence-room").append(Object.assign(document.createElement("option"), { value: "", textContent: "choose a project" }));
// A token may be given in the fragment (#token=...), which never reaches any server log.
const given = new URLSearchParams(location.hash.slice(1)).get("token");
if (given) {
  $("token").value = given;
  connect();
}
