// A small client for notifier on top of socket.io-client: a fresh token on every (re)connect
// and, before it expires, on the same connection (auth.expiring -> auth.refresh); acks as
// promises, typed listeners, connection state, and no event missed or seen twice (positions
// per room are sent back on reconnect; duplicates are dropped by id and offset).
// See docs/recovery.md and docs/protocol.md for the protocol it implements.
import { io } from "socket.io-client";

const SEEN_IDS = 4096;

export class NotifierError extends Error {
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.name = "NotifierError";
    this.code = code;
    this.detail = message;
  }
}

async function httpError(answer) {
  const body = await answer.json().catch(() => ({}));
  return new NotifierError(body.error?.code ?? "UNAVAILABLE", body.error?.message ?? `HTTP ${answer.status}`);
}

export class NotifierClient {
  /**
   * @param {string} url service URL, e.g. "http://127.0.0.1:8080"
   * @param {object} options see notifier-client.d.ts
   */
  constructor(url, options = {}) {
    this.url = url;
    this.options = options;
    this.positions = {};
    this.presenceRooms = new Set();
    this.tokenExpiresAt = null;
    this.session = null;
    this.state = "idle";
    this._seen = new Set();
    this._delivered = [];
    this._reporting = false;
    this._handlers = new Map();
    this._stateHandlers = new Set();
    this._resetHandlers = new Set();
    this._closed = false;
    // One connection per browser (`shared: true`): the tab holding the Web Lock connects,
    // and relays events, the session and calls to the others over a BroadcastChannel.
    this._shared = Boolean(options.shared && globalThis.BroadcastChannel && globalThis.navigator?.locks);
    this._leader = !this._shared;
    this._channel = null;
    this._calls = new Map(); // a follower's calls waiting for the leader's reply
    this._callSeq = 0;
    this._release = null;
    this._waiting = null; // connect()'s promise, until the session arrives
    this.socket = io(url, {
      autoConnect: false,
      path: options.path,  // behind a path prefix: "/prefix/socket.io/"
      transports: options.transports,
      reconnectionDelay: options.reconnectionDelay ?? 500,
      reconnectionDelayMax: options.reconnectionDelayMax ?? 5000,
      // Called on every (re)connect: a fresh token, where we stand in each room, and the
      // rooms whose presence changes we follow.
      auth: (cb) => {
        this._token()
          .then((token) => cb({ token, positions: this.positions, presence: [...this.presenceRooms] }))
          .catch(() => cb({}));
      },
    });
    this.socket.on("connect", () => this._setState("connected"));
    this.socket.on("disconnect", (reason) => {
      this._setState("disconnected", reason);
      // After a server-side disconnect (token expired, flooding) socket.io-client stays away;
      // come back with a fresh token unless we closed on purpose.
      if (reason === "io server disconnect" && !this._closed) this.socket.connect();
    });
    this.socket.on("connect_error", (err) => this._setState("refused", err.data?.code ?? err.message));
    this.socket.on("session", (env) => {
      this._relay({ kind: "session", env });
      this._onSession(env);
    });
    this.socket.on("auth.expiring", (env) => {
      this.tokenExpiresAt = env?.data?.expires_at ?? null;
      if (typeof options.token === "function") this.renewToken().catch(() => {});
    });
    this.socket.on("rooms.revoked", (env) => {
      for (const room of env?.data?.rooms ?? []) {
        delete this.positions[room];
        this.presenceRooms.delete(room);
      }
    });
    this.socket.onAny((type, env) => {
      if (type === "session" || !env || typeof env !== "object") return;
      this._relay({ kind: "event", type, env });
      if (!this._accept(env)) return;
      if (type === "notification" && options.receipts !== false && env.data?.id) this._received(env.data.id);
      this._dispatch(type, env);
    });
  }

  _onSession(env) {
    this.session = env.data;
    this._adopt(env.data.rooms ?? {});
    if (this.state !== "connected") this._setState("connected"); // a follower's tab
    this._waiting?.resolve(env.data);
    this._waiting = null;
    this._dispatch("session", env);
  }

  // Shared mode

  _relay(message) {
    if (this._channel && this._leader) this._channel.postMessage(message);
  }

  _connectShared() {
    this._channel = new BroadcastChannel(`notifier:${this.url}`);
    this._channel.onmessage = (message) => this._fromTab(message.data);
    return new Promise((resolve, reject) => {
      this._waiting = { resolve, reject };
      // Held until this tab closes (or close()): then the next tab in line leads.
      navigator.locks.request(`notifier:${this.url}`, () => new Promise((release) => {
        this._release = release;
        if (this._closed) return release();
        this._lead();
      }));
      this._channel.postMessage({ kind: "hello" }); // a leader answers with the session
    });
  }

  _lead() {
    this._leader = true;
    this._setState("connecting");
    const onError = (err) => {
      this.socket.off("connect_error", onError);
      this._waiting?.reject(new NotifierError(err.data?.code ?? "UNAVAILABLE", err.data?.message ?? err.message));
      this._waiting = null;
    };
    this.socket.on("connect_error", onError);
    this.socket.once("session", () => this.socket.off("connect_error", onError));
    // The positions this tab kept from relayed events: the server replays what the old
    // leader's tab took with it, and ids drop what was seen already.
    this.socket.connect();
  }

  _fromTab(message) {
    if (this._leader) {
      if (message.kind === "hello" && this.session) this._relay({ kind: "session", env: { data: this.session } });
      if (message.kind === "call") {
        this.call(message.event, message.payload, message.timeoutMs).then(
          (reply) => this._relay({ kind: "reply", id: message.id, reply }),
          (err) => this._relay({ kind: "reply", id: message.id, error: { code: err.code ?? "UNAVAILABLE", message: err.detail ?? String(err) } }),
        );
      }
      return;
    }
    if (message.kind === "session") this._onSession(message.env);
    else if (message.kind === "event") {
      const { type, env } = message;
      if (type === "rooms.revoked") for (const room of env?.data?.rooms ?? []) delete this.positions[room];
      if (this._accept(env)) this._dispatch(type, env);
    } else if (message.kind === "reply") {
      const waiting = this._calls.get(message.id);
      if (!waiting) return;
      this._calls.delete(message.id);
      if (message.error) waiting.reject(new NotifierError(message.error.code, message.error.message));
      else waiting.resolve(message.reply);
    }
  }

  _callThroughLeader(event, payload, timeoutMs) {
    const id = `${Date.now()}-${++this._callSeq}-${Math.random()}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._calls.delete(id);
        reject(new NotifierError("TIMEOUT", "no tab answered for the shared connection"));
      }, timeoutMs);
      this._calls.set(id, {
        resolve: (reply) => { clearTimeout(timer); resolve(reply); },
        reject: (err) => { clearTimeout(timer); reject(err); },
      });
      this._channel.postMessage({ kind: "call", id, event, payload, timeoutMs });
    });
  }

  // Delivered receipts: one report in flight at a time, with every id received meanwhile in
  // the next, so a burst costs a few calls (one per turn of the event loop would exceed the
  // connection's rate limit); a report refused over that limit goes again half a second later.
  _received(id) {
    this._delivered.push(id);
    if (this._delivered.length === 1 && !this._reporting) setTimeout(() => this._sendDelivered(), 0);
  }

  _sendDelivered() {
    if (this._reporting || !this._delivered.length) return;
    const ids = this._delivered.splice(0, 1000);
    this._reporting = true;
    this.call("notifications.delivered", { ids })
      .catch(async (err) => {
        if (err?.code !== "RATE_LIMITED") return;  // best effort: a receipt
        this._delivered.unshift(...ids);
        await new Promise((resolve) => setTimeout(resolve, 500));
      })
      .finally(() => {
        this._reporting = false;
        this._sendDelivered();
      });
  }

  /**
   * Web Push for this browser: subscribes `registration` (a ServiceWorkerRegistration of
   * notifier-sw.js, or a worker of your own) with the server's VAPID key, registers the
   * subscription for the token's user, and hands the worker the token and URL it reports
   * `seen` / `actioned` with. Call it again after renewing the token. Resolves with the
   * PushSubscription.
   */
  async registerPush(registration) {
    const token = await this._token();
    const keyAnswer = await fetch(`${this.url}/api/v1/push/vapid-public-key`);
    if (!keyAnswer.ok) throw await httpError(keyAnswer);
    const { public_key: applicationServerKey } = await keyAnswer.json();
    const subscription = await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey });
    const answer = await fetch(`${this.url}/api/v1/push/subscriptions`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
      body: JSON.stringify(subscription.toJSON()),
    });
    if (!answer.ok) throw await httpError(answer);
    (registration.active ?? registration.waiting ?? registration.installing)
      ?.postMessage({ type: "notifier.config", token, url: this.url });
    return subscription;
  }

  /** This device displayed them: their escalations are cancelled. */
  seen(ids) { return this.call("notifications.seen", { ids }); }

  read(ids) { return this.call("notifications.mark_read", { ids }); }

  actioned(id, action) { return this.call("notifications.actioned", { id, action }); }

  _token() {
    const { token } = this.options;
    return Promise.resolve(typeof token === "function" ? token() : token);
  }

  /** Send a fresh token on this connection; resolves with the new expiry (ms). */
  async renewToken() {
    const reply = await this.call("auth.refresh", { token: await this._token() });
    this.tokenExpiresAt = reply.expires_at;
    return reply.expires_at;
  }

  /** Connect; resolves with the session data, rejects with a NotifierError carrying the code. */
  connect() {
    this._closed = false;
    this._setState("connecting");
    if (this._shared) return this._connectShared();
    return new Promise((resolve, reject) => {
      const cleanup = () => {
        this.socket.off("session", onSession);
        this.socket.off("connect_error", onError);
      };
      const onSession = (env) => { cleanup(); resolve(env.data); };
      const onError = (err) => {
        cleanup();
        reject(new NotifierError(err.data?.code ?? "UNAVAILABLE", err.data?.message ?? err.message));
      };
      this.socket.on("session", onSession);
      this.socket.on("connect_error", onError);
      this.socket.connect();
    });
  }

  close() {
    this._closed = true;
    this.socket.disconnect();
    this._release?.(); // shared: the next tab leads
    this._channel?.close();
    this._setState("closed");
  }

  /** Emit with an ack; resolves with the reply, rejects with NotifierError on {ok: false}. */
  async call(event, payload = {}, timeoutMs = 10000) {
    if (this._shared && !this._leader) return this._callThroughLeader(event, payload, timeoutMs);
    const reply = await this.socket.timeout(timeoutMs).emitWithAck(event, payload);
    if (!reply?.ok) {
      throw new NotifierError(reply?.error?.code ?? "INTERNAL", reply?.error?.message ?? "");
    }
    return reply;
  }

  /**
   * Join rooms; resolves with the per-room results (joined, position, task state, error).
   * `{presence: true}` also delivers presence.joined / presence.left for them.
   */
  async subscribe(rooms, { presence = false } = {}) {
    const since = {};
    for (const room of rooms) if (this.positions[room]) since[room] = this.positions[room];
    const payload = { rooms };
    if (Object.keys(since).length) payload.since = since;
    if (presence) payload.presence = true;
    const reply = await this.call("subscribe", payload);
    this._adopt(reply.rooms);
    if (presence) {
      for (const [room, result] of Object.entries(reply.rooms)) if (result.joined) this.presenceRooms.add(room);
    }
    return reply.rooms;
  }

  async unsubscribe(rooms) {
    const reply = await this.call("unsubscribe", { rooms });
    for (const room of rooms) {
      delete this.positions[room];
      this.presenceRooms.delete(room);
    }
    return reply.rooms;
  }

  /** Listen to one event type ("*" for all); returns a function that stops listening. */
  on(type, handler) {
    if (!this._handlers.has(type)) this._handlers.set(type, new Set());
    this._handlers.get(type).add(handler);
    return () => this._handlers.get(type).delete(handler);
  }

  /** handler(state, detail) on connecting / connected / disconnected / refused / closed. */
  onState(handler) {
    this._stateHandlers.add(handler);
    return () => this._stateHandlers.delete(handler);
  }

  /** handler(room, reason) when a room's missed events could not be replayed: reload it. */
  onReset(handler) {
    this._resetHandlers.add(handler);
    return () => this._resetHandlers.delete(handler);
  }

  _setState(state, detail) {
    this.state = state;
    for (const handler of this._stateHandlers) handler(state, detail);
  }

  _dispatch(type, env) {
    for (const key of [type, "*"]) {
      for (const handler of this._handlers.get(key) ?? []) handler(env, type);
    }
  }

  _accept(env) {
    if (env.id) {
      if (this._seen.has(env.id)) return false;
      this._seen.add(env.id);
      if (this._seen.size > SEEN_IDS) this._seen.delete(this._seen.values().next().value);
    }
    // Not kept, or a room seen through project:* (ids deduplicate those).
    if (env.room == null || env.offset == null || !this.positions[env.room]) return true;
    const known = this.positions[env.room];
    if (known.epoch === env.epoch && env.offset <= known.offset) {
      // Behind our position: a duplicate, unless it is a replay of something we never had (a
      // room we were in already, recovered with `since` after live events came): ids decide.
      return env.replayed === true;
    }
    this.positions[env.room] = { epoch: env.epoch, offset: env.offset };
    return true;
  }

  _adopt(rooms) {
    for (const [room, result] of Object.entries(rooms)) {
      if (!result.joined) continue;
      if (result.live_only) { this.positions[room] = null; continue; }  // rejoined, never replayed
      const known = this.positions[room];
      if (result.recovered === false) {
        this.positions[room] = { epoch: result.epoch, offset: result.offset };
        for (const handler of this._resetHandlers) handler(room, result.reason);
      } else if (!known || known.epoch !== result.epoch) {
        this.positions[room] = { epoch: result.epoch, offset: result.offset };
      }
    }
  }
}
