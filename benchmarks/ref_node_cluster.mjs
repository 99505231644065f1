// Reference: Node socket.io 4.8 on WORKERS processes, as its documentation sets it up: the
// cluster module, @socket.io/sticky in the primary (a connection goes to a worker by the sid
// of its first request) and @socket.io/cluster-adapter between the workers (broadcasts go
// through the primary). The primary listens once every worker is ready.
import cluster from "node:cluster";
import { createServer } from "node:http";
import { createAdapter, setupPrimary } from "@socket.io/cluster-adapter";
import { setupMaster, setupWorker } from "@socket.io/sticky";
import { Server } from "socket.io";
import { attach } from "./ref_node_handlers.mjs";

const workers = Number(process.env.WORKERS ?? 2);

if (cluster.isPrimary) {
  const http = createServer();
  setupMaster(http, { loadBalancingMethod: "least-connection" });
  setupPrimary();
  cluster.setupPrimary({ serialization: "advanced" });
  let ready = 0;
  for (let i = 0; i < workers; i++) {
    cluster.fork().on("message", (message) => {
      if (message === "ready" && ++ready === workers) {
        http.listen(Number(process.env.PORT), "127.0.0.1", () => console.log("listening"));
      }
    });
  }
} else {
  const http = createServer();
  const io = new Server(http, { cors: { origin: "*" } });
  io.adapter(createAdapter());
  setupWorker(io);
  attach(io, process.env.JWT_SECRET);
  process.send("ready");
}
