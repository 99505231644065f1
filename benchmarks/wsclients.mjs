// Lean Socket.IO clients for the connection benchmarks: each is a bare `ws` websocket speaking
// Engine.IO v4 / Socket.IO v5 itself (open, CONNECT with a token, pong, events), so that one
// generator process holds thousands of them. Spread over several processes (each under the
// per-process file limit); JSON lines on stdin/stdout (commands: report, heads <json>, quit).
//
// Modes:
//   connect  open `count` connections, `window` handshakes in flight per process; report the
//            time from the first attempt to the last CONNECT answer, then close them.
//   hold     open `count` connections at `rate` per second, keep them (answering pings) and
//            count the ones that drop.
//   storm    `count` clients, client i in room project:p<i % rooms> with its own token; each
//            keeps its last offset, reconnects after a drop with jittered exponential backoff
//            and its position, and counts events lost (a gap) or seen twice.
import { fork } from "node:child_process";
import { createHmac } from "node:crypto";
import { createInterface } from "node:readline";
import WebSocket from "ws";

const SHARD = process.env.WSCLIENTS_SHARD !== undefined;

function sign(secret, sub, projects, ttl = 3600) {
  const b64 = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const now = Math.floor(Date.now() / 1000);
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub, projects, iat: now, exp: now + ttl })}`;
  return `${body}.${createHmac("sha256", secret).update(body).digest("base64url")}`;
}

const wsUrl = (url) => `${url.replace(/^http/, "ws")}/socket.io/?EIO=4&transport=websocket`;

class Client {
  constructor(shard, index) {
    this.shard = shard;
    this.index = index;
    this.room = `project:p${index % shard.config.rooms}`;
    this.token = sign(shard.config.secret, `u${index}`, [`p${index % shard.config.rooms}`]);
    this.position = null; // {epoch, offset} in its room
    this.received = 0;
    this.connects = 0;
    this.attempt = 0;
    this.recoveredAt = 0;
    this.closed = false;
  }

  open(url) {
    return new Promise((resolve) => {
      // A handshake that has not completed in 20 s is given up and retried after the backoff,
      // as socket.io-client's `timeout` does: a SYN dropped by a full accept queue would
      // otherwise wait for the kernel's retransmissions (1, 3, 7, 15, 31, 63 s).
      const socket = new WebSocket(wsUrl(url), { perMessageDeflate: false, handshakeTimeout: 20000 });
      this.socket = socket;
      let settled = false;
      const settle = (ok) => { if (!settled) { settled = true; resolve(ok); } };
      socket.on("message", (raw) => {
        const text = raw.toString();
        const kind = text[0];
        if (kind === "2") { socket.send("3"); return; }
        if (kind === "0") {
          const auth = { token: this.token };
          if (this.shard.config.mode === "storm") {
            auth.positions = { [this.room]: this.position };
          }
          socket.send(`40${JSON.stringify(auth)}`);
          return;
        }
        if (kind !== "4") return;
        const type = text[1];
        if (type === "0") { this.connects += 1; this.attempt = 0; settle(true); return; }
        if (type === "4") { this.shard.refused += 1; settle(false); socket.terminate(); return; }
        if (type === "2") this.onEvent(text);
      });
      socket.on("error", () => settle(false));
      socket.on("close", () => {
        settle(false);
        if (this.connects && this.shard.config.mode !== "connect") this.shard.dropped += 1;
        if (this.shard.config.mode === "storm" && !this.closed) this.reconnect();
      });
    });
  }

  onEvent(text) {
    if (this.shard.config.mode !== "storm") return;
    const [type, env] = JSON.parse(text.slice(2));
    if (type === "session") {
      const result = env.data.rooms[this.room];
      if (!result?.joined) { this.shard.failed += 1; return; }
      if (this.position && result.recovered !== true) this.shard.unrecovered += 1;
      if (!this.position) this.position = { epoch: result.epoch, offset: result.offset };
      if (this.connects > 1) this.recoveredAt = Date.now();
      return;
    }
    if (env.room !== this.room || env.offset == null) return;
    const known = this.position;
    if (known && env.epoch === known.epoch) {
      if (env.offset <= known.offset) { this.shard.duplicates += 1; return; }
      if (env.offset > known.offset + 1) this.shard.lost += env.offset - known.offset - 1;
    }
    this.position = { epoch: env.epoch, offset: env.offset };
    this.received += 1;
  }

  reconnect() {
    // Jittered exponential backoff, as socket.io-client's (randomization 0.5).
    const { delay = 500, delayMax = 5000 } = this.shard.config;
    const base = Math.min(delay * 2 ** this.attempt, delayMax);
    this.attempt += 1;
    const wait = base * (0.5 + Math.random());
    const urls = this.shard.config.reconnectUrls ?? [this.shard.config.url];
    setTimeout(() => this.open(urls[this.index % urls.length]), wait);
  }
}

async function runShard(config) {
  const shard = { config, refused: 0, dropped: 0, failed: 0, lost: 0, duplicates: 0, unrecovered: 0 };
  const clients = Array.from({ length: config.count }, (_, i) => new Client(shard, config.offset + i));
  const started = Date.now();
  if (config.mode === "connect") {
    let next = 0;
    let connected = 0;
    const worker = async () => {
      while (next < clients.length) {
        const client = clients[next++];
        if (await client.open(config.url)) connected += 1;
      }
    };
    process.send({ kind: "ready" });
    await new Promise((resolve) => process.once("message", resolve)); // "go"
    const go = Date.now();
    await Promise.all(Array.from({ length: config.window }, worker));
    const done = Date.now();
    process.send({ kind: "connected", started: go, finished: done, connected, refused: shard.refused });
    clients.forEach((c) => { c.closed = true; c.socket?.terminate(); });
  } else {
    // Paced opening: `rate` per second per process, many in flight.
    const pending = [];
    for (let i = 0; i < clients.length; i++) {
      const due = started + (i * 1000) / config.rate;
      const wait = due - Date.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      pending.push(clients[i].open(config.url));
    }
    const results = await Promise.all(pending);
    process.send({ kind: "connected", connected: results.filter(Boolean).length, refused: shard.refused,
      seconds: (Date.now() - started) / 1000 });
  }
  process.on("message", (command) => {
    if (command.kind === "report") {
      const heads = command.heads ?? {};
      let behind = 0;
      let recoveredAt = 0;
      let notRecovered = 0;
      const stuck = {};
      for (const client of clients) {
        const head = heads[client.room];
        if (head !== undefined && (client.position?.offset ?? 0) < head) behind += 1;
        if (client.connects > 1) recoveredAt = Math.max(recoveredAt, client.recoveredAt);
        else if (config.mode === "storm") {
          notRecovered += 1;
          const state = `attempt ${client.attempt}, socket ${client.socket?.readyState}`;
          stuck[state] = (stuck[state] ?? 0) + 1;
        }
      }
      process.send({ kind: "report", refused: shard.refused, dropped: shard.dropped,
        failed: shard.failed, lost: shard.lost, duplicates: shard.duplicates,
        unrecovered: shard.unrecovered, behind, recoveredAt, notReconnected: notRecovered, stuck,
        open: clients.filter((c) => c.socket?.readyState === WebSocket.OPEN).length });
    }
    if (command.kind === "quit") {
      clients.forEach((c) => { c.closed = true; c.socket?.terminate(); });
      setTimeout(() => process.exit(0), 100);
    }
  });
}

if (SHARD) {
  await runShard(JSON.parse(process.env.WSCLIENTS_SHARD));
} else {
  const config = JSON.parse(process.argv[2]);
  const shards = config.shards ?? 4;
  const children = [];
  for (let s = 0, offset = 0; s < shards; s++) {
    const share = Math.floor(config.count / shards) + (s < config.count % shards ? 1 : 0);
    const shardConfig = { ...config, count: share, offset, rate: (config.rate ?? 1000) / shards,
      window: Math.max(1, Math.round((config.window ?? 400) / shards)) };
    offset += share;
    children.push(fork(new URL(import.meta.url).pathname, [], {
      env: { ...process.env, WSCLIENTS_SHARD: JSON.stringify(shardConfig) },
    }));
  }
  const once = (child, kind) => new Promise((resolve) => {
    const listener = (message) => { if (message.kind === kind) { child.off("message", listener); resolve(message); } };
    child.on("message", listener);
  });
  const say = (message) => console.log(JSON.stringify(message));
  if (config.mode === "connect") {
    await Promise.all(children.map((c) => once(c, "ready")));
    const results = children.map((c) => once(c, "connected"));
    children.forEach((c) => c.send("go"));
    const reports = await Promise.all(results);
    const started = Math.min(...reports.map((r) => r.started));
    const finished = Math.max(...reports.map((r) => r.finished));
    say({ kind: "connected", connected: reports.reduce((n, r) => n + r.connected, 0),
      refused: reports.reduce((n, r) => n + r.refused, 0), seconds: (finished - started) / 1000 });
  } else {
    const reports = await Promise.all(children.map((c) => once(c, "connected")));
    say({ kind: "connected", connected: reports.reduce((n, r) => n + r.connected, 0),
      refused: reports.reduce((n, r) => n + r.refused, 0),
      seconds: Math.max(...reports.map((r) => r.seconds)) });
  }
  for await (const line of createInterface({ input: process.stdin })) {
    const [word, rest] = [line.split(" ")[0], line.slice(line.indexOf(" ") + 1)];
    if (word === "report") {
      const heads = line.includes(" ") ? JSON.parse(rest) : {};
      const pending = children.map((c) => once(c, "report"));
      children.forEach((c) => c.send({ kind: "report", heads }));
      const reports = await Promise.all(pending);
      const sum = (key) => reports.reduce((n, r) => n + r[key], 0);
      say({ kind: "report", refused: sum("refused"), dropped: sum("dropped"), failed: sum("failed"),
        lost: sum("lost"), duplicates: sum("duplicates"), unrecovered: sum("unrecovered"),
        behind: sum("behind"), open: sum("open"), notReconnected: sum("notReconnected"),
        recoveredAt: Math.max(...reports.map((r) => r.recoveredAt)),
        stuck: reports.reduce((all, r) => {
          for (const [state, n] of Object.entries(r.stuck)) all[state] = (all[state] ?? 0) + n;
          return all;
        }, {}) });
    } else if (word === "quit") {
      children.forEach((c) => c.send({ kind: "quit" }));
      break;
    }
  }
  process.exit(0);
}
