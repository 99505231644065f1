// <notifier-inbox>: a drop-in inbox for any web page, served by notifier itself.
//
//   <script type="module" src="https://notifier.example/static/notifier-inbox.js"></script>
//   <notifier-inbox url="https://notifier.example" token="..."></notifier-inbox>
//
// (or set `element.token = () => fetchToken()` for renewals). A bell with the unread badge; a
// panel with tabs by category; each notification with its actions, snooze, archive and
// read state; mark all read; per-category "escalate me" preferences. Live on every device
// through the notifier client (replay after reconnects), one DOM update per change: nothing
// is rendered again as a whole. Every field is shown as text. Styled with CSS custom
// properties (--notifier-accent, --notifier-bg, --notifier-fg, --notifier-muted,
// --notifier-line, --notifier-radius, --notifier-font, --notifier-width) and ::part(bell,
// badge, panel, tab, list, item, title, body, action, empty). Keyboard: Enter/Space on the
// bell opens it, arrows move between notifications, Enter marks one read, Escape closes.
import { NotifierClient } from "./notifier-client.standalone.mjs";

const STYLE = `
:host { --notifier-accent: #2f6fed; --notifier-bg: #fff; --notifier-fg: #1d2330;
  --notifier-muted: #6b7384; --notifier-line: #e3e6ec; --notifier-radius: 10px;
  --notifier-font: system-ui, sans-serif; --notifier-width: 380px;
  position: relative; display: inline-block; font-family: var(--notifier-font); color: var(--notifier-fg); }
@media (prefers-color-scheme: dark) {
  :host { --notifier-bg: #1b1f27; --notifier-fg: #e8ebf1; --notifier-muted: #9aa3b5; --notifier-line: #2f3542; }
}
button { font: inherit; color: inherit; background: none; border: 0; cursor: pointer; }
[part=bell] { position: relative; width: 40px; height: 40px; border-radius: 50%; display: grid; place-items: center; }
[part=bell]:focus-visible, [part=item]:focus-visible, button:focus-visible { outline: 2px solid var(--notifier-accent); outline-offset: 2px; }
[part=badge] { position: absolute; top: 2px; right: 0; min-width: 18px; height: 18px; padding: 0 5px;
  border-radius: 9px; background: #d93636; color: #fff; font-size: 11px; line-height: 18px; box-sizing: border-box; }
[part=badge][hidden] { display: none; }
[part=panel] { position: absolute; right: 0; top: 46px; width: min(var(--notifier-width), calc(100vw - 16px));
  max-height: 70vh; display: flex; flex-direction: column; background: var(--notifier-bg);
  border: 1px solid var(--notifier-line); border-radius: var(--notifier-radius); box-shadow: 0 10px 30px rgba(0,0,0,.18); z-index: 1000; }
[part=panel][hidden] { display: none; }
@media (max-width: 480px) { [part=panel] { position: fixed; left: 8px; right: 8px; top: 56px; width: auto; } }
header { display: flex; align-items: center; gap: 6px; padding: 8px 10px; border-bottom: 1px solid var(--notifier-line); }
header h2 { font-size: 15px; margin: 0; flex: 1; }
header button { font-size: 12px; color: var(--notifier-accent); }
header, .prefs, [role=tablist] { flex-shrink: 0; }
[role=tablist] { display: flex; gap: 4px; padding: 6px 8px; overflow-x: auto; border-bottom: 1px solid var(--notifier-line); }
[part~=tab] { padding: 3px 10px; border-radius: 12px; font-size: 12px; white-space: nowrap; }
[part~=tab][aria-selected=true] { background: var(--notifier-accent); color: #fff; }
[part=list] { list-style: none; margin: 0; padding: 0; overflow-y: auto; flex: 1; min-height: 0; }
[part~=item] { display: grid; grid-template-columns: 8px 1fr; gap: 4px 8px; padding: 10px 12px; border-bottom: 1px solid var(--notifier-line); }
[part~=item] .dot { width: 8px; height: 8px; border-radius: 50%; margin-top: 6px; background: transparent; }
[part~=item].unread .dot { background: var(--notifier-accent); }
[part~=item].warning .dot { background: #e09b1b; } [part~=item].critical .dot { background: #d93636; }
[part~=item].read { color: var(--notifier-muted); }
[part~=item][hidden] { display: none; }
[part=title] { font-weight: 600; font-size: 14px; overflow-wrap: anywhere; }
[part=body] { font-size: 13px; color: var(--notifier-muted); overflow-wrap: anywhere; }
.meta { grid-column: 2; display: flex; flex-wrap: wrap; gap: 6px; align-items: center; font-size: 12px; color: var(--notifier-muted); }
.meta button { font-size: 12px; color: var(--notifier-accent); padding: 0; }
[part~=action] { border: 1px solid var(--notifier-accent) !important; border-radius: 6px; padding: 1px 8px !important; }
[part~=action].primary { background: var(--notifier-accent); color: #fff !important; }
[part=empty] { padding: 28px; text-align: center; color: var(--notifier-muted); font-size: 14px; }
.prefs { padding: 8px 12px; border-bottom: 1px solid var(--notifier-line); font-size: 13px; }
.prefs label { display: flex; gap: 6px; align-items: center; padding: 2px 0; }
`;

const PAGE = 50;

class NotifierInbox extends HTMLElement {
  constructor() {
    super();
    this._items = new Map(); // notification id -> {note, li}
    this._tab = "all";
    this._counts = { unread: 0, unseen: 0, categories: {}, severities: {} };
    this._client = null;
    const root = this.attachShadow({ mode: "open" });
    root.innerHTML = `<style>${STYLE}</style>
      <button part="bell" aria-haspopup="dialog" aria-expanded="false" aria-label="Notifications"><svg viewBox="0 0 24 24" width="22" height="22" aria-hidden="true"><path fill="currentColor" d="M12 22a2.5 2.5 0 0 0 2.45-2h-4.9A2.5 2.5 0 0 0 12 22Zm7-6V11a7 7 0 0 0-5.5-6.84V3.5a1.5 1.5 0 0 0-3 0v.66A7 7 0 0 0 5 11v5l-2 2v1h18v-1l-2-2Z"/></svg><span part="badge" hidden>0</span></button>
      <div part="panel" role="dialog" aria-label="Notifications" hidden>
        <header><h2>Notifications</h2>
          <button class="prefs-toggle" aria-expanded="false">Preferences</button>
          <button class="mark-all">Mark all read</button></header>
        <div class="prefs" hidden></div>
        <div role="tablist" aria-label="Categories"></div>
        <ul part="list" role="list" aria-live="polite"></ul>
        <div part="empty" hidden>Nothing new.</div>
      </div>`;
    this._bell = root.querySelector("[part=bell]");
    this._badge = root.querySelector("[part=badge]");
    this._panel = root.querySelector("[part=panel]");
    this._list = root.querySelector("[part=list]");
    this._tabs = root.querySelector("[role=tablist]");
    this._empty = root.querySelector("[part=empty]");
    this._prefs = root.querySelector(".prefs");
    this._bell.addEventListener("click", () => this.toggle());
    root.querySelector(".mark-all").addEventListener("click", () => this._markAllRead());
    root.querySelector(".prefs-toggle").addEventListener("click", (event) => this._togglePrefs(event.target));
    this._panel.addEventListener("keydown", (event) => this._onKey(event));
  }

  static get observedAttributes() { return ["url", "token"]; }

  /** A token, or a function returning one (called on every reconnect and renewal). */
  set token(value) { this._token = value; this._start(); }
  get token() { return this._token; }

  get client() { return this._client; }

  attributeChangedCallback(name, _old, value) {
    if (name === "token") this._token = value;
    this._start();
  }

  connectedCallback() {
    // A token set before this module loaded is an own property of the element, hiding the
    // setter: take it over.
    if (Object.prototype.hasOwnProperty.call(this, "token")) {
      const token = this.token;
      delete this.token;
      this._token = token;
    }
    this._start();
  }

  disconnectedCallback() {
    this._client?.close();
    this._client = null;
  }

  toggle(open = this._panel.hidden) {
    this._panel.hidden = !open;
    this._bell.setAttribute("aria-expanded", String(open));
    if (open) this._list.querySelector("[part~=item]:not([hidden])")?.focus();
    else this._bell.focus();
  }

  async _start() {
    const url = this.getAttribute("url") ?? location.origin;
    if (this._client || !this._token || !this.isConnected) return;
    const client = (this._client = new NotifierClient(url, { token: this._token }));
    client.on("notification", (env) => this._arrived(env.data));
    // After each new notification the service sends the unread count (the full counts come
    // with every change of state).
    client.on("notifications.unread", (env) => this._setCounts({ ...this._counts, unread: env.data.count }));
    client.on("notification.updated", (env) => this._upsert(env.data.notification, { prepend: false }));
    client.on("notification.recalled", (env) => this._remove([env.data.id]));
    client.on("notifications.deleted", (env) => this._remove(env.data.ids ?? []));
    client.on("notifications.changed", (env) => this._changed(env.data));
    client.on("notifications.counts", (env) => this._setCounts(env.data));
    client.onReset((room) => { if (room.startsWith("user:")) this._load(); });
    try {
      await client.connect();
      await this._load();
      this.dataset.ready = "true";
      this.dispatchEvent(new CustomEvent("notifier-ready"));
    } catch (err) {
      this.dataset.error = err.code ?? "UNAVAILABLE";
      this.dispatchEvent(new CustomEvent("notifier-error", { detail: err }));
    }
  }

  async _load() {
    const page = await this._client.call("notifications.list", { limit: PAGE, state: "active" });
    this._items.clear();
    this._list.replaceChildren();
    for (const note of page.notifications) this._upsert(note, { prepend: false });
    this._setCounts(page.counts);
    this._refilter();
  }

  _arrived(note) {
    const before = this._items.get(note.id)?.note;
    if (!before || before.read) {
      const categories = { ...this._counts.categories };
      categories[note.category] = (categories[note.category] ?? 0) + 1;
      this._counts = { ...this._counts, categories };
    }
    this._upsert(note, { prepend: true });
  }

  // One notification: its <li> is made once and changed in place afterwards.
  _upsert(note, { prepend }) {
    if (note.archived || note.snoozed_until) return this._remove([note.id]);
    let entry = this._items.get(note.id);
    if (!entry) {
      const li = document.createElement("li");
      li.setAttribute("part", "item");
      li.setAttribute("role", "listitem");
      li.tabIndex = -1;
      li.innerHTML = `<span class="dot" aria-hidden="true"></span><span part="title"></span>
        <span></span><span part="body"></span><div class="meta"></div>`;
      entry = { note, li };
      this._items.set(note.id, entry);
      if (prepend) this._list.prepend(li); else this._list.append(li);
    } else if (prepend) {
      this._list.prepend(entry.li); // a group's entry that grew comes first again
    }
    entry.note = note;
    this._render(entry);
    this._place(entry);
  }

  // Shown under the selected tab or not; the rest of the list is left alone.
  _place({ note, li }) {
    li.hidden = !(this._tab === "all" || (note.category ?? "general") === this._tab);
    if (!li.hidden) this._empty.hidden = true;
    this._renderTabs();
  }

  _render({ note, li }) {
    li.dataset.id = note.id;
    li.dataset.category = note.category ?? "general";
    li.className = `${note.read ? "read" : "unread"} ${note.severity ?? "info"}`;
    const count = note.group_count > 1 ? ` (${note.group_count})` : "";
    li.querySelector("[part=title]").textContent = note.title + count;
    li.querySelector("[part=body]").textContent = note.body ?? "";
    li.setAttribute("aria-label", `${note.read ? "" : "Unread: "}${note.title}`);
    const meta = li.querySelector(".meta");
    meta.replaceChildren();
    meta.append(Object.assign(document.createElement("time"), { textContent: new Date(note.created_at).toLocaleString() }));
    (note.actions ?? []).forEach((action, index) => {
      const button = this._button(action.label, () => this._act(note, action));
      button.setAttribute("part", "action");
      if (index === 0) button.classList.add("primary");
      meta.append(button);
    });
    if (!note.read) meta.append(this._button("Mark read", () => this._change([note.id], { read: true })));
    meta.append(this._button("Snooze 1 h", () => this._change([note.id], { snoozed_until: Date.now() + 3600_000 })));
    meta.append(this._button("Archive", () => this._change([note.id], { archived: true })));
  }

  _button(label, onClick) {
    const button = document.createElement("button");
    button.textContent = label;
    button.addEventListener("click", (event) => { event.stopPropagation(); onClick(); });
    return button;
  }

  async _act(note, action) {
    await this._client.call("notifications.action", { id: note.id, action: action.id });
    if (action.url) window.open(action.url, "_blank", "noopener");
    if (!note.read) await this._change([note.id], { read: true });
  }

  _change(ids, set) { return this._client.call("notifications.change", { ids, set }); }

  async _markAllRead() {
    const filter = this._tab === "all" ? { state: "unread" } : { state: "unread", category: this._tab };
    await this._client.call("notifications.change", { filter, set: { read: true } });
  }

  _changed({ ids, set }) {
    if (!ids) return this._load(); // a change of many, by filter
    for (const id of ids) {
      const entry = this._items.get(id);
      if (!entry) continue;
      const note = { ...entry.note, ...set };
      if (note.archived || note.snoozed_until) this._remove([id]);
      else { entry.note = note; this._render(entry); }
    }
  }

  _remove(ids) {
    for (const id of ids) {
      const li = this._items.get(id)?.li;
      if (li?.contains(this.shadowRoot.activeElement)) {
        // Keyboard users keep their place: the next notification (or the one before).
        (li.nextElementSibling ?? li.previousElementSibling ?? this._bell).focus();
      }
      li?.remove();
      this._items.delete(id);
    }
    this._empty.hidden = [...this._items.values()].some(({ li }) => !li.hidden);
  }

  _setCounts(counts) {
    if (!counts) return;
    this._counts = counts;
    this._badge.textContent = counts.unread > 99 ? "99+" : String(counts.unread);
    this._badge.hidden = !counts.unread;
    this._bell.setAttribute("aria-label", `Notifications, ${counts.unread} unread`);
    this._renderTabs();
  }

  _renderTabs() {
    const categories = new Set(Object.keys(this._counts.categories ?? {}));
    for (const { note } of this._items.values()) categories.add(note.category ?? "general");
    const names = ["all", ...[...categories].sort()];
    const known = [...this._tabs.children].map((tab) => tab.dataset.tab);
    if (names.join() !== known.join()) {
      this._tabs.replaceChildren(...names.map((name) => {
        const tab = this._button(name === "all" ? "All" : name, () => this._select(name));
        tab.setAttribute("part", "tab");
        tab.setAttribute("role", "tab");
        tab.dataset.tab = name;
        return tab;
      }));
    }
    for (const tab of this._tabs.children) {
      const unread = tab.dataset.tab === "all" ? this._counts.unread : this._counts.categories?.[tab.dataset.tab] ?? 0;
      tab.setAttribute("aria-selected", String(tab.dataset.tab === this._tab));
      tab.textContent = `${tab.dataset.tab === "all" ? "All" : tab.dataset.tab}${unread ? ` ${unread}` : ""}`;
    }
  }

  _select(name) {
    this._tab = name;
    this._renderTabs();
    this._refilter();
  }

  _refilter() {
    let shown = 0;
    for (const { note, li } of this._items.values()) {
      const visible = this._tab === "all" || (note.category ?? "general") === this._tab;
      li.hidden = !visible;
      shown += visible ? 1 : 0;
    }
    this._empty.hidden = shown > 0;
    this._renderTabs();
  }

  _onKey(event) {
    const items = [...this._list.querySelectorAll("[part~=item]:not([hidden])")];
    const at = items.indexOf(this.shadowRoot.activeElement);
    if (event.key === "Escape") { this.toggle(false); event.preventDefault(); }
    else if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      const next = items[Math.max(0, Math.min(items.length - 1, at + (event.key === "ArrowDown" ? 1 : -1)))];
      next?.focus();
      event.preventDefault();
    } else if (event.key === "Enter" && at >= 0 && event.target === items[at]) {
      const entry = this._items.get(items[at].dataset.id);
      if (entry && !entry.note.read) this._change([entry.note.id], { read: true });
      event.preventDefault();
    }
  }

  async _togglePrefs(button) {
    const open = this._prefs.hidden;
    this._prefs.hidden = !open;
    button.setAttribute("aria-expanded", String(open));
    if (!open) return;
    const { preferences } = await this._client.call("preferences.get", {});
    const categories = new Set([...Object.keys(this._counts.categories ?? {}), ...Object.keys(preferences.channels ?? {})]);
    for (const { note } of this._items.values()) categories.add(note.category ?? "general");
    this._prefs.replaceChildren(...[...categories].sort().map((category) => {
      const label = document.createElement("label");
      const box = Object.assign(document.createElement("input"), { type: "checkbox" });
      box.checked = !(preferences.channels?.[category]?.length === 0); // [] means: never escalate
      box.addEventListener("change", async () => {
        const channels = { ...(preferences.channels ?? {}) };
        if (box.checked) delete channels[category]; else channels[category] = [];
        preferences.channels = channels;
        await this._client.call("preferences.set", { ...preferences, channels });
      });
      label.append(box, document.createTextNode(`Reach me elsewhere for ${category}`));
      return label;
    }));
  }
}

if (!customElements.get("notifier-inbox")) customElements.define("notifier-inbox", NotifierInbox);
export { NotifierInbox };
