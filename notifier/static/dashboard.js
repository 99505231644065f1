// The dashboard: connection state, live task bars, the inbox with its badge, refreshes, latency.
import { NotifierClient } from "/static/notifier-client.mjs";

const $ = (id) => document.getElementById(id);
const tasks = new Map();
let client = null;
let pinger = null;

function token() {
  return $("token").value.trim();
}

function setState(state, detail) {
  $("state").textContent = detail ? `${state} (${detail})` : state;
  $("state").className = `pill ${state}`;
}

function log(text) {
  const item = document.createElement("li");
  item.textContent = `${new Date().toLocaleTimeString()} ${text}`;
  $("log").prepend(item);
  while ($("log").children.length > 20) $("log").lastChild.remove();
}

function renderTask(task) {
  tasks.set(task.id, task);
  let row = document.querySelector(`[data-task="${CSS.escape(task.id)}"]`);
  if (!row) {
    document.querySelector("#tasks .empty")?.remove();
    row = document.createElement("div");
    row.dataset.task = task.id;
    row.innerHTML = '<div class="meta"><span class="title"></span><span class="status"></span></div>'
      + '<div class="bar"><div></div></div>';
    $("tasks").prepend(row);
  }
  row.className = `task ${task.status}`;
  row.querySelector(".title").textContent = task.title || task.id;
  row.querySelector(".status").textContent = `${task.status} ${Math.round(task.progress)}%`;
  row.querySelector(".bar > div").style.width = `${task.progress}%`;
  row.dataset.progress = String(task.progress);
}

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
  if (prepend) $("notes").prepend(item); else $("notes").append(item);
}

function markReadInPage(ids) {
  for (const id of ids) {
    const item = document.querySelector(`[data-note="${CSS.escape(id)}"]`);
    if (!item) continue;
    item.className = "note read";
    item.querySelector(".mark-read")?.remove();
  }
}

async function loadState() {
  const headers = { authorization: `Bearer ${token()}` };
  const listing = await (await fetch("/api/v1/tasks", { headers })).json();
  for (const task of listing.tasks ?? []) renderTask(task);
  const inbox = await client.call("notifications.list", { limit: 20 });
  $("notes").replaceChildren();
  for (const note of inbox.notifications) renderNote(note, { prepend: false });
  setUnread(inbox.unread);
}

async function connect() {
  client?.close();
  clearInterval(pinger);
  client = new NotifierClient(location.origin, { token });
  client.onState(setState);
  client.onReset(() => loadState());
  for (const type of ["task.created", "task.progress", "task.completed", "task.failed", "task.cancelled"]) {
    client.on(type, (env) => renderTask(env.data));
  }
  client.on("notification", (env) => { renderNote(env.data); log(`notification: ${env.data.title}`); });
  client.on("notifications.unread", (env) => {
    setUnread(env.data.count);
    if (env.data.count === 0) markReadInPage([...document.querySelectorAll("li.note.unread")].map((li) => li.dataset.note));
  });
  client.on("refresh", (env) => { log(`refresh (${env.data.reason})`); if (env.data.reason === "interval") loadState(); });
  client.on("config.updated", (env) => { $("interval").textContent = `${env.data.refresh_interval}s`; log("config updated"); });
  try {
    const session = await client.connect();
    $("interval").textContent = session.refresh_interval ? `${session.refresh_interval}s` : "off";
    setUnread(session.unread);
    const projects = session.projects.filter((p) => p !== "*").map((p) => `project:${p}`);
    if (projects.length) await client.subscribe(projects);
    await loadState();
    document.body.dataset.ready = "true";
    pinger = setInterval(ping, 5000);
    ping();
  } catch (err) {
    setState("refused", err.code);
  }
}

async function ping() {
  const sent = performance.now();
  await client.call("ping", {});
  $("latency").textContent = `${Math.round(performance.now() - sent)} ms`;
}

$("connect").onclick = connect;
$("mark-all").onclick = async () => {
  const reply = await client.call("notifications.mark_read", { all: true });
  markReadInPage(reply.marked);
};
// A token may be given in the fragment (#token=...), which never reaches any server log.
const given = new URLSearchParams(location.hash.slice(1)).get("token");
if (given) {
  $("token").value = given;
  connect();
}
