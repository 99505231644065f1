// Reference: Node socket.io 4.8 with its defaults, one process (handlers: ref_node_handlers.mjs).
import { createServer } from "node:http";
import { Server } from "socket.io";
import { attach } from "./ref_node_handlers.mjs";

const http = createServer();
const io = new Server(http, { cors: { origin: "*" } });
attach(io, process.env.JWT_SECRET);
http.listen(Number(process.env.PORT), "127.0.0.1", () => console.log("listening"));
