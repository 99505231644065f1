// Follow rooms from Node and print every event as one JSON line.
//   NOTIFIER_URL=http://127.0.0.1:8080 NOTIFIER_TOKEN=$(notifier token --sub alice --project demo) \
//     node client_examples/node_subscriber.mjs project:demo [--count N]
import { NotifierClient } from "./notifier-client.mjs";

const args = process.argv.slice(2);
const countAt = args.indexOf("--count");
const limit = countAt >= 0 ? Number(args.splice(countAt, 2)[1]) : Infinity;
const rooms = args;

const client = new NotifierClient(process.env.NOTIFIER_URL ?? "http://127.0.0.1:8080", {
  token: () => process.env.NOTIFIER_TOKEN,
});
client.onState((state, detail) => console.error(`state=${state}${detail ? ` detail=${detail}` : ""}`));
client.onReset((room, reason) => console.error(`reset room=${room} reason=${reason} (reload its state)`));

let seen = 0;
client.on("*", (env, type) => {
  if (type === "session") return;
  console.log(JSON.stringify(env));
  if (++seen >= limit) {
    client.close();
    process.exit(0);
  }
});

try {
  const session = await client.connect();
  console.error(`connected user=${session.user_id} unread=${session.unread}`);
  if (rooms.length) {
    const joined = await client.subscribe(rooms);
    console.error(`subscribed ${JSON.stringify(joined)}`);
  }
  console.error("ready");
} catch (err) {
  console.error(`refused code=${err.code} message=${err.detail ?? err.message}`);
  process.exit(2);
}
