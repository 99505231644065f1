// Load generator: N socket.io-client websocket connections, spread over several processes so
// the generator is not the bottleneck. Speaks JSON lines: stdin commands (report, reset, quit),
// stdout answers. Each delivery's latency is now - data.sent (same machine, same clock).
import { fork } from "node:child_process";
import { createInterface } from "node:readline";
import { io } from "socket.io-client";

const SHARD = process.env.LOADGEN_SHARD !== undefined;

if (SHARD) {
  const { url, count, token, event } = JSON.parse(process.env.LOADGEN_SHARD);
  let delivered = 0;
  let last = 0;
  let latencies = [];
  const sockets = [];
  const connectOne = () => new Promise((resolve, reject) => {
    const socket = io(url, { transports: ["websocket"], auth: token ? { token } : undefined,
      reconnection: false, timeout: 20000 });
    socket.on(event, (message) => {
      delivered += 1;
      last = Date.now();
      latencies.push(last - message.data.sent);
    });
    socket.once("connect", () => resolve(socket));
    socket.once("connect_error", reject);
    sockets.push(socket);
  });
  for (let i = 0; i < count; i += 50) {
    await Promise.all(Array.from({ length: Math.min(50, count - i) }, connectOne));
  }
  const cpuStart = process.cpuUsage();
  process.send({ kind: "connected" });
  process.on("message", (command) => {
    if (command === "reset") { delivered = 0; latencies = []; last = 0; }
    if (command === "report") {
      const cpu = process.cpuUsage(cpuStart);
      process.send({ kind: "report", delivered, last, latencies, cpuMs: (cpu.user + cpu.system) / 1000 });
      latencies = [];
    }
    if (command === "quit") { sockets.forEach((s) => s.disconnect()); process.exit(0); }
  });
} else {
  const { url, count, token, event = "tick", shards = 2 } = JSON.parse(process.argv[2]);
  const children = [];
  for (let s = 0; s < shards; s++) {
    const share = Math.floor(count / shards) + (s < count % shards ? 1 : 0);
    children.push(fork(new URL(import.meta.url).pathname, [], {
      env: { ...process.env, LOADGEN_SHARD: JSON.stringify({ url, count: share, token, event }) },
    }));
  }
  const once = (child, kind) => new Promise((resolve) => {
    const listener = (message) => { if (message.kind === kind) { child.off("message", listener); resolve(message); } };
    child.on("message", listener);
  });
  await Promise.all(children.map((c) => once(c, "connected")));
  console.log(JSON.stringify({ kind: "connected", count }));
  for await (const line of createInterface({ input: process.stdin })) {
    if (line === "report") {
      const pending = children.map((c) => once(c, "report"));
      children.forEach((c) => c.send("report"));
      const reports = await Promise.all(pending);
      console.log(JSON.stringify({
        kind: "report",
        delivered: reports.reduce((sum, r) => sum + r.delivered, 0),
        last: Math.max(...reports.map((r) => r.last)),
        latencies: reports.flatMap((r) => r.latencies),
        cpuMs: reports.map((r) => r.cpuMs),
      }));
    } else if (line === "reset") {
      children.forEach((c) => c.send("reset"));
      console.log(JSON.stringify({ kind: "reset" }));
    } else if (line === "quit") {
      children.forEach((c) => c.send("quit"));
      break;
    }
  }
  process.exit(0);
}
