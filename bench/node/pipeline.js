// Peer for bench/e2e_pipeline.py: a file → server pipeline shaped like the original Electron
// client's. npm chokidar watches one file with awaitWriteFinish {stabilityThreshold: 500}
// (the original's 500 ms quiet-period wait); on each change the bytes from the last known
// size to the new size are read and queued as chunks of at most 512 KiB; a single sender
// emits one chunk, waits for its ack, waits 50 ms, then sends the next (the original's
// buffered-send strategy). Positions live in memory only, as in the original.
// Usage: node pipeline.js URL FILE
// Prints one JSON line {"ready": true, "clientId"} once authenticated and watching, then
// runs until killed (SIGTERM/SIGINT close the socket and exit 0).
"use strict";
const { io } = require("socket.io-client");
const chokidar = require("chokidar");
const crypto = require("node:crypto");
const fs = require("node:fs");

const [url, file] = [process.argv[2], process.argv[3]];
const clientId = crypto.randomUUID();
const CHUNK_BYTES = 512 * 1024;
const SEND_GAP_MS = 50;

function connect(token) {
  return new Promise((resolve, reject) => {
    const socket = io(`${url}/client`, {
      transports: ["websocket"],
      reconnection: false,
      auth: token ? { token } : {},
      query: { clientId, hostname: "bench", userAgent: "node-pipeline-peer" },
    });
    socket.on("guestToken", (data) => { socket.close(); resolve({ guestToken: data.token }); });
    socket.on("authenticated", () => resolve({ socket }));
    socket.on("retry_auth", (data) => reject(new Error(`retry_auth ${JSON.stringify(data)}`)));
    socket.on("connect_error", reject);
  });
}

// Split on UTF-8 character boundaries so no chunk exceeds CHUNK_BYTES.
function split(buffer) {
  const chunks = [];
  let start = 0;
  while (start < buffer.length) {
    let end = Math.min(start + CHUNK_BYTES, buffer.length);
    while (end < buffer.length && end > start && (buffer[end] & 0xc0) === 0x80) end--;
    chunks.push(buffer.subarray(start, end).toString("utf8"));
    start = end;
  }
  return chunks;
}

async function main() {
  const first = await connect(null);
  const { socket } = await connect(first.guestToken);
  const queue = [];
  let seq = 0;
  let sending = false;
  let lastSize = fs.statSync(file).size;

  async function drain() {
    if (sending) return;
    sending = true;
    try {
      while (queue.length > 0) {
        const chunk = queue.shift();
        seq += 1;
        const reply = await socket.timeout(60000).emitWithAck("submit_log_chunk", {
          clientId, chunk, chunkId: `${clientId}:${seq}`, seq,
        });
        if (!reply || reply.error) throw new Error(`rejected: ${JSON.stringify(reply)}`);
        await new Promise((resolve) => setTimeout(resolve, SEND_GAP_MS));
      }
    } finally {
      sending = false;
    }
  }

  function onChange() {
    const size = fs.statSync(file).size;
    if (size < lastSize) lastSize = 0; // truncated: start over, as the original did
    if (size === lastSize) return;
    const buffer = Buffer.alloc(size - lastSize);
    const fd = fs.openSync(file, "r");
    try {
      let done = 0;
      while (done < buffer.length) {
        const n = fs.readSync(fd, buffer, done, buffer.length - done, lastSize + done);
        if (n === 0) break;
        done += n;
      }
      lastSize += done;
      queue.push(...split(buffer.subarray(0, done)));
    } finally {
      fs.closeSync(fd);
    }
    drain().catch((error) => { console.error(`node pipeline: ${error.message}`); process.exit(1); });
  }

  const watcher = chokidar.watch(file, {
    persistent: true,
    ignoreInitial: true,
    awaitWriteFinish: { stabilityThreshold: 500, pollInterval: 100 },
  });
  watcher.on("change", onChange);
  watcher.on("add", onChange);
  await new Promise((resolve) => watcher.on("ready", resolve));
  const stop = () => { watcher.close(); socket.close(); process.exit(0); };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  console.log(JSON.stringify({ ready: true, clientId }));
}

main().catch((error) => { console.error(`node pipeline: ${error.message}`); process.exit(1); });
