// The JavaScript client against a real notifier process, over websocket and long-polling.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { NotifierClient, NotifierError } from "../notifier-client.mjs";
import { Service, sign, until } from "../testing/service.mjs";

let service;
before(async () => { service = await Service.start(); });
after(async () => { await service.stop(); });

for (const transports of [["websocket"], ["polling"]]) {
  describe(`over ${transports[0]}`, () => {
    const open = [];
    const client = (token) => {
      const c = new NotifierClient(service.url, { token, transports, reconnectionDelay: 100, reconnectionDelayMax: 200 });
      open.push(c);
      return c;
    };
    after(() => open.forEach((c) => c.close()));

    test("connects with a token callback and receives its session", async () => {
      const alice = client(() => sign({ sub: "alice", projects: ["p1"] }));
      const states = [];
      alice.onState((s) => states.push(s));
      const session = await alice.connect();
      assert.equal(session.user_id, "alice");
      assert.deepEqual(session.projects, ["p1"]);
      assert.equal(session.rooms["user:alice"].joined, true);
      assert.deepEqual(states.slice(0, 2), ["connecting", "connected"]);
    });

    for (const [name, token, code] of [
      ["missing", undefined, "AUTH_REQUIRED"],
      ["expired", sign({ sub: "alice", ttl: -60 }), "AUTH_EXPIRED"],
      ["garbage", "not-a-jwt", "AUTH_INVALID"],
    ]) {
      test(`a ${name} token is refused with ${code}`, async () => {
        const c = client(token);
        await assert.rejects(c.connect(), (err) => err instanceof NotifierError && err.code === code);
        c.close();
      });
    }

    test("subscribe acks per room and every event type arrives", async () => {
      const bob = client(sign({ sub: "bob", projects: ["p2"] }));
      await bob.connect();
      const rooms = await bob.subscribe(["project:p2", "project:secret"]);
      assert.equal(rooms["project:p2"].joined, true);
      assert.equal(rooms["project:secret"].error.code, "FORBIDDEN");

      const got = [];
      bob.on("*", (env, type) => got.push([type, env]));
      await service.publish("project:p2", "deploy", { v: 1 });
      await service.publish("*", "maintenance", {});
      await service.rest("POST", "/api/v1/notifications", { user_ids: ["bob"], title: "hi" });
      await service.rest("POST", "/api/v1/tasks", { id: `t-${transports[0]}`, project_id: "p2" });
      await service.rest("PATCH", `/api/v1/tasks/t-${transports[0]}`, { progress: 50 });
      await service.rest("PATCH", `/api/v1/tasks/t-${transports[0]}`, { status: "completed" });
      const want = ["deploy", "maintenance", "notification", "notifications.unread",
        "task.created", "refresh", "task.progress", "task.completed"];
      await until(() => want.every((t) => got.some(([type]) => type === t)), 5000, want.join());
      const deploy = got.find(([t]) => t === "deploy")[1];
      assert.equal(deploy.room, "project:p2");
      assert.deepEqual(deploy.data, { v: 1 });
      assert.equal(typeof deploy.id, "string");
      const unsubscribed = await bob.unsubscribe(["project:p2"]);
      assert.equal(unsubscribed["project:p2"].left, true);
    });

    test("a burst of notifications is reported delivered, every one", async () => {
      const user = `dora-${transports[0]}`;
      const dora = client(sign({ sub: user }));
      await dora.connect();
      // One after another: each arrives in a turn of its own, faster than the connection's
      // rate limit (100 events a second, 50 at once) would let one report per turn through.
      const ids = [];
      for (let n = 0; n < 300; n++) {
        const answer = await service.rest("POST", "/api/v1/notifications", { user_ids: [user], title: `n${n}` });
        ids.push(answer.body.notifications[0].id);
      }
      const delivered = async (id) => {
        const answer = await service.rest("GET", `/api/v1/notifications/${id}/receipts`);
        return answer.body.receipts.some((r) => r.kind === "delivered");
      };
      // Reports are batched: ask again until all are in (each asked until found, 10 s in all).
      let missing = ids;
      const deadline = Date.now() + 10000;
      while (missing.length && Date.now() < deadline) {
        const found = await Promise.all(missing.map(delivered));
        missing = missing.filter((_, i) => !found[i]);
        if (missing.length) await new Promise((r) => setTimeout(r, 100));
      }
      assert.deepEqual(missing, [], "every notification reported delivered");
    });

    test("bad payloads and unknown events answer through the ack", async () => {
      const carol = client(sign({ sub: "carol" }));
      await carol.connect();
      await assert.rejects(carol.call("subscribe", { rooms: "nope" }), { code: "INVALID_PAYLOAD" });
      await assert.rejects(carol.call("get_status", {}), { code: "UNKNOWN_EVENT" });
      const pong = await carol.call("ping", { t: 1 });
      assert.equal(pong.echo.t, 1);
    });
  });
}

test("reconnects after the server drops the connection and recovers what it missed", async () => {
  const dave = new NotifierClient(service.url, {
    token: () => sign({ sub: "dave", projects: ["p3"] }), reconnectionDelay: 100, reconnectionDelayMax: 300,
  });
  const ticks = [];
  const resets = [];
  dave.on("tick", (env) => ticks.push(env));
  dave.onReset((room, reason) => resets.push([room, reason]));
  await dave.connect();
  await dave.subscribe(["project:p3"]);
  await service.publish("project:p3", "tick", { n: 0 });
  await until(() => ticks.length === 1);

  await service.stop();
  await service.start();
  await service.publish("project:p3", "tick", { n: 1 });
  await service.publish("project:p3", "tick", { n: 2 });
  await until(() => ticks.length === 3, 10000, "replayed ticks");
  await service.publish("project:p3", "tick", { n: 3 });
  await until(() => ticks.length === 4);

  assert.deepEqual(ticks.map((t) => t.offset), [1, 2, 3, 4]);
  assert.deepEqual(ticks.map((t) => t.data.n), [0, 1, 2, 3]);
  assert.deepEqual(resets, []);
  assert.equal(dave.session.rooms["project:p3"].recovered, true);
  dave.close();
});

test("recovers its own room through subscribe {since} after live events came, losing nothing", async () => {
  const first = new NotifierClient(service.url, { token: sign({ sub: "erin" }) });
  const seen = [];
  first.on("notification", (env) => seen.push(env.data.title));
  await first.connect();
  await service.rest("POST", "/api/v1/notifications", { user_ids: ["erin"], title: "one" });
  await until(() => seen.length === 1);
  const position = { ...first.positions["user:erin"] };
  first.close();

  await service.rest("POST", "/api/v1/notifications", { user_ids: ["erin"], title: "missed" });
  const again = new NotifierClient(service.url, { token: sign({ sub: "erin" }) });
  const got = [];
  again.on("notification", (env) => got.push(env));
  await again.connect();
  await service.rest("POST", "/api/v1/notifications", { user_ids: ["erin"], title: "live" });
  await until(() => got.length === 1);
  const reply = await again.call("subscribe", { rooms: ["user:erin"], since: { "user:erin": position } });
  assert.equal(reply.rooms["user:erin"].recovered, true);
  await until(() => got.length === 2, 5000, "the replayed notification");
  assert.deepEqual(got.map((e) => [e.data.title, e.replayed === true]), [["live", false], ["missed", true]]);
  again.close();
});

test("renews a short token on the same connection and follows presence when asked", async () => {
  let issued = 0;
  const erin = new NotifierClient(service.url, {
    token: () => { issued += 1; return sign({ sub: "erin", projects: ["p4"], ttl: 4 }); },
  });
  const frank = new NotifierClient(service.url, { token: sign({ sub: "frank", projects: ["p4"] }) });
  try {
    const states = [];
    erin.onState((s) => states.push(s));
    const joined = [];
    erin.on("presence.joined", (env) => joined.push(env.data.user_id));
    await erin.connect();
    await erin.subscribe(["project:p4"], { presence: true });
    await frank.connect();
    await frank.subscribe(["project:p4"]);
    await until(() => joined.includes("frank"), 5000, "presence.joined for frank");
    const present = await erin.call("presence.get", { room: "project:p4" });
    assert.deepEqual(present.users.map((u) => u.user_id), ["erin", "frank"]);

    // Two renewals of a 4-second token: the connection outlives it twice over.
    await until(() => issued >= 3, 12000, "two in-band renewals");
    await until(() => erin.tokenExpiresAt > Date.now() + 1000, 3000, "a later expiry");
    assert.deepEqual(states, ["connecting", "connected"]);
  } finally {
    erin.close();
    frank.close();
  }
});
