// Acknowledged operations per second: socket.io-client on /workers sends `count` events of one
// kind (publish or notify), at most `window` awaiting their ack, and reports the rate.
//   node publisher.mjs '{"url": ..., "token": ..., "event": "publish", "count": 20000, "window": 256}'
import { io } from "socket.io-client";

const { url, token, event = "publish", count = 10000, window = 256, tag = "" } = JSON.parse(process.argv[2]);
const socket = io(`${url}/workers`, { transports: ["websocket"], auth: { token }, reconnection: false });
await new Promise((resolve, reject) => { socket.once("connect", resolve); socket.once("connect_error", reject); });

const payload = (n) => event === "publish"
  ? { room: `project:bench${n % 50}`, type: "tick", data: { n, tag } }
  : { user_ids: [`user${n % 1000}`], title: `n${n}`, data: { tag } };

let sent = 0;
let acked = 0;
let failed = 0;
const started = performance.now();
await new Promise((resolve) => {
  const next = () => {
    while (sent < count && sent - acked - failed < window) {
      const n = sent++;
      socket.timeout(30000).emit(event, payload(n), (err, reply) => {
        if (err || !reply?.ok) failed += 1; else acked += 1;
        if (acked + failed === count) resolve();
        else next();
      });
    }
  };
  next();
});
const seconds = (performance.now() - started) / 1000;
console.log(JSON.stringify({ event, count, acked, failed, seconds, per_second: acked / seconds }));
socket.disconnect();
process.exit(0);
