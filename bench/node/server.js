// Peer server for bench/pipeline_ceiling.py: npm socket.io 4.8 speaking just enough of the
// wire protocol (docs/PROTOCOL.md) for our client and the benchmark peers, and storing
// nothing: it counts the bytes it would store. Namespace "/client", path "/socket.io/",
// Engine.IO's default 1e6-byte message limit (a 512 KiB chunk fits).
// - a handshake without auth.token gets `guestToken` {"token"}; one with a token this
//   server issued gets `authenticated` {"identity": "guest"}; any other token `retry_auth`
//   {"reason": "invalid_token"}, as the protocol says, so a client never loops on it;
// - `submit_log_chunk` counts Buffer.byteLength(chunk, "utf8") once per chunkId (a resend
//   is answered duplicate, as the reference server does) and acks {"ok": true, "chunkId"};
// - `ping` answers `pong` {"timestamp"};
// - HTTP `GET /api/stats` answers {"bytes_stored", "chunks"}.
// Usage: node server.js   (listens on 127.0.0.1, a free port)
// Prints one JSON line {"port"} once listening; SIGTERM/SIGINT close it and exit 0.
"use strict";
const http = require("node:http");
const crypto = require("node:crypto");
const { Server } = require("socket.io");

const stats = { bytes_stored: 0, chunks: 0 };
const issuedTokens = new Set();
const storedChunkIds = new Set();

const httpServer = http.createServer((request, response) => {
  // socket.io answers its own path before this handler sees the request.
  if (request.method === "GET" && request.url === "/api/stats") {
    response.writeHead(200, { "content-type": "application/json" });
    response.end(JSON.stringify(stats));
    return;
  }
  response.writeHead(404, { "content-type": "application/json" });
  response.end(JSON.stringify({ error: "not_found" }));
});

const io = new Server(httpServer, { path: "/socket.io/", transports: ["websocket"] });

io.of("/client").on("connection", (socket) => {
  const token = socket.handshake.auth && socket.handshake.auth.token;
  if (!token) {
    const guestToken = crypto.randomBytes(24).toString("base64url");
    issuedTokens.add(guestToken);
    socket.emit("guestToken", { token: guestToken });
    return;
  }
  if (!issuedTokens.has(token)) {
    socket.emit("retry_auth", { reason: "invalid_token" });
    return;
  }

  socket.on("submit_log_chunk", (payload, ack) => {
    if (typeof ack !== "function") return;
    if (!payload || typeof payload.chunk !== "string") {
      ack({ error: "invalid", message: "chunk must be a string" });
      return;
    }
    const chunkId = typeof payload.chunkId === "string" ? payload.chunkId : undefined;
    if (chunkId !== undefined && storedChunkIds.has(chunkId)) {
      ack({ ok: true, chunkId, duplicate: true });
      return;
    }
    if (chunkId !== undefined) storedChunkIds.add(chunkId);
    stats.bytes_stored += Buffer.byteLength(payload.chunk, "utf8");
    stats.chunks += 1;
    ack({ ok: true, chunkId });
  });
  socket.on("ping", () => socket.emit("pong", { timestamp: Date.now() }));
  socket.emit("authenticated", { identity: "guest" });
});

function stop() {
  io.close(() => process.exit(0));
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);

httpServer.listen(0, "127.0.0.1", () => {
  console.log(JSON.stringify({ port: httpServer.address().port }));
});
