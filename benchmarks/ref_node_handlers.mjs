// What both Node references do with a socket.io server: with JWT_SECRET set, connections are
// refused without a valid HS256 token (signature and exp), the check notifier makes, so that
// connection set-up rates compare like with like; a client's "publish" is broadcast to all others.
import { createHmac, timingSafeEqual } from "node:crypto";

function verify(secret, token) {
  const [head, body, signature] = String(token ?? "").split(".");
  if (!signature) return null;
  const expected = createHmac("sha256", secret).update(`${head}.${body}`).digest();
  const given = Buffer.from(signature, "base64url");
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return null;
  const claims = JSON.parse(Buffer.from(body, "base64url").toString());
  if (JSON.parse(Buffer.from(head, "base64url").toString()).alg !== "HS256") return null;
  return typeof claims.exp === "number" && claims.exp > Date.now() / 1000 ? claims : null;
}

export function attach(io, secret) {
  if (secret) {
    io.use((socket, next) => {
      const claims = verify(secret, socket.handshake.auth?.token);
      if (!claims) return next(new Error("invalid token"));
      socket.data.user = claims.sub;
      next();
    });
  }
  io.on("connection", (socket) => {
    socket.on("publish", (message, ack) => {
      socket.broadcast.emit(message.type, message);
      if (typeof ack === "function") ack({ ok: true });
    });
  });
}
