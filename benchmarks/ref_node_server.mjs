// Reference: Node socket.io 4.8 with its defaults. A client's "publish" is broadcast to all others.
import { createServer } from "node:http";
import { Server } from "socket.io";

const http = createServer();
const io = new Server(http, { cors: { origin: "*" } });
io.on("connection", (socket) => {
  socket.on("publish", (message, ack) => {
    socket.broadcast.emit(message.type, message);
    if (typeof ack === "function") ack({ ok: true });
  });
});
http.listen(Number(process.env.PORT), "127.0.0.1", () => console.log("listening"));
