// Peer for bench/ship_throughput.py: npm socket.io-client 4.8 sends the same chunks to the
// same reference server with emitWithAck, keeping WINDOW acknowledgements in flight.
// Usage: node ship.js URL CHUNK_BYTES COUNT WINDOW
// Prints one JSON line: {"chunks", "bytes", "seconds", "cpuSeconds"}.
"use strict";
const { io } = require("socket.io-client");
const crypto = require("node:crypto");

const [url, chunkBytes, count, windowSize] = [
  process.argv[2], Number(process.argv[3]), Number(process.argv[4]), Number(process.argv[5]),
];
const clientId = crypto.randomUUID();
const line = "2026-11-25 12:00:00.000 [INFO] player joined the session id=42 region=eu\n";
const text = line.repeat(Math.ceil(chunkBytes / line.length)).slice(0, chunkBytes);

function connect(token) {
  return new Promise((resolve, reject) => {
    const socket = io(`${url}/client`, {
      transports: ["websocket"],
      reconnection: false,
      auth: token ? { token } : {},
      query: { clientId, hostname: "bench", userAgent: "node-peer" },
    });
    socket.on("guestToken", (data) => { socket.close(); resolve({ guestToken: data.token }); });
    socket.on("authenticated", () => resolve({ socket }));
    socket.on("retry_auth", (data) => reject(new Error(`retry_auth ${JSON.stringify(data)}`)));
    socket.on("connect_error", reject);
  });
}

async function main() {
  const first = await connect(null);
  const { socket } = await connect(first.guestToken);
  const cpuStart = process.cpuUsage();
  const started = process.hrtime.bigint();
  let next = 1;
  const inFlight = new Set();
  while (next <= count) {
    while (inFlight.size < windowSize && next <= count) {
      const seq = next++;
      const ack = socket.timeout(60000).emitWithAck("submit_log_chunk", {
        clientId, chunk: text, chunkId: `${clientId}:${seq}`, seq,
      }).then((reply) => {
        if (!reply || reply.error) throw new Error(`rejected: ${JSON.stringify(reply)}`);
        inFlight.delete(ack);
      });
      inFlight.add(ack);
    }
    await Promise.race(inFlight);
  }
  await Promise.all(inFlight);
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const cpu = process.cpuUsage(cpuStart);
  socket.close();
  console.log(JSON.stringify({
    chunks: count, bytes: count * Buffer.byteLength(text), seconds,
    cpuSeconds: (cpu.user + cpu.system) / 1e6,
  }));
}

main().catch((error) => { console.error(`node peer: ${error.message}`); process.exit(1); });
