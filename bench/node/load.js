// Load generator for bench/server_load.py: many concurrent socket.io-client connections,
// each a guest of its own, as the original Electron client is. Every guest is registered
// first (POST /api/auth/register-guest, 64 at a time), then the HTTP connections are
// closed and the WebSockets opened with the tokens at RAMP per second: a client keeps its
// guest token across connections, and the server's connection limit is then all
// WebSockets (at 10,000 on a machine whose descriptor limit is 20,000, nothing spare).
//
// Usage: node load.js URL CLIENTS SECONDS MODE [RAMP]
//   MODE "stream": each client sends one 2 KiB chunk per second (at a random phase, so the
//                  load is even over time) and times its ack. Open loop: a client sends its
//                  next chunk on time whether or not the previous one was acknowledged, as
//                  a game writing its log would.
//        "idle":   clients only keep their connection: Engine.IO heartbeats (the server
//                  pings every 25 s, the client answers) and the protocol's ping every 20 s,
//                  whose pong is timed.
// Prints JSON lines on stdout: {"event": "measuring"} when the measured window starts,
// {"event": "measured"} when it ends (bench/server_load.py samples CPU and the server's
// counters at both), then the outcome: {"clients", "connected", "acked", "errors",
// "timeouts", "disconnects", "connectFailures", "firstConnectFailure", "p50Ms", "p99Ms",
// "seconds", "chunksPerSecond", "openSeconds"}. Disconnects are counted from a client's
// connect to the end of the measured window; a failed connect is a connectFailure.
"use strict";
const { io } = require("socket.io-client");
const crypto = require("node:crypto");
const http = require("node:http");

const [url, clients, seconds, mode, ramp] = [
  process.argv[2], Number(process.argv[3]), Number(process.argv[4]), process.argv[5],
  Number(process.argv[6] || 400),
];
if (!url || !(clients > 0) || !(seconds > 0) || !["stream", "idle"].includes(mode) || !(ramp > 0)) {
  console.error("usage: node load.js URL CLIENTS SECONDS stream|idle [RAMP]");
  process.exit(2);
}
const CHUNK_BYTES = 2048;
const ACK_TIMEOUT_MS = 10000;
const WARM_UP_MS = 2000;
const line = "2026-11-25 12:00:00.000 [INFO] player joined the session id=42 region=eu\n";
const text = line.repeat(Math.ceil(CHUNK_BYTES / line.length)).slice(0, CHUNK_BYTES);
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });

const latencies = [];
const stats = { acked: 0, errors: 0, timeouts: 0, disconnects: 0, connectFailures: 0 };
let firstConnectFailure = null;
let measuring = false;
let closing = false;

function say(object) {
  process.stdout.write(JSON.stringify(object) + "\n");
}

function registerGuest(clientId) {
  const body = JSON.stringify({ clientId, hostname: "bench" });
  return new Promise((resolve, reject) => {
    const request = http.request(`${url}/api/auth/register-guest`, {
      method: "POST", agent, headers: { "content-type": "application/json" },
    }, (response) => {
      let data = "";
      response.on("data", (part) => { data += part; });
      response.on("end", () => {
        if (response.statusCode !== 200) return reject(new Error(`register-guest answered ${response.statusCode}`));
        resolve(JSON.parse(data).guestToken);
      });
    });
    request.setTimeout(30000, () => request.destroy(new Error("register-guest timed out")));
    request.on("error", reject);
    request.end(body);
  });
}

function openClient({ clientId, token }) {
  return new Promise((resolve, reject) => {
    const socket = io(`${url}/client`, {
      transports: ["websocket"], reconnection: false, auth: { token },
      query: { clientId, hostname: "bench", userAgent: "node-load" },
      timeout: 30000,
    });
    let authenticated = false;
    socket.on("authenticated", () => {
      authenticated = true;
      resolve({ socket, clientId, seq: 0, timer: null });
    });
    socket.on("retry_auth", (data) => {
      socket.close();
      reject(new Error(`retry_auth ${JSON.stringify(data)}`));
    });
    socket.on("connect_error", (error) => reject(error));
    socket.on("disconnect", (reason) => {
      if (!authenticated) return reject(new Error(`disconnected before authenticated: ${reason}`));
      // Our own close at the end is not a disconnect; one after the window is not measured.
      if (!closing) stats.disconnects += 1;
    });
  });
}

function send(client) {
  if (!client.socket.connected) return;
  client.seq += 1;
  const started = performance.now();
  client.socket.timeout(ACK_TIMEOUT_MS).emit(
    "submit_log_chunk",
    { clientId: client.clientId, chunk: text, chunkId: `${client.clientId}:${client.seq}`, seq: client.seq },
    (error, ack) => {
      if (!measuring) return;
      if (error) { stats.timeouts += 1; return; }
      if (!ack || ack.ok !== true) { stats.errors += 1; return; }
      stats.acked += 1;
      latencies.push(performance.now() - started);
    });
}

function ping(client) {
  if (!client.socket.connected) return;
  const started = performance.now();
  let answered = false;
  client.socket.once("pong", () => {
    answered = true;
    if (measuring) { stats.acked += 1; latencies.push(performance.now() - started); }
  });
  client.socket.emit("ping", { timestamp: Date.now(), clientId: client.clientId });
  setTimeout(() => { if (!answered && measuring) stats.timeouts += 1; }, ACK_TIMEOUT_MS);
}

function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)];
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  const failed = (error) => {
    stats.connectFailures += 1;
    if (firstConnectFailure === null) firstConnectFailure = String(error && error.message || error);
  };
  const guests = [];
  let next = 0;
  const registrar = async () => {
    while (next < clients) {
      next += 1;
      const clientId = crypto.randomUUID();
      try { guests.push({ clientId, token: await registerGuest(clientId) }); } catch (error) { failed(error); }
    }
  };
  await Promise.all(Array.from({ length: 64 }, registrar));
  agent.destroy();
  const opened = [];
  const pending = [];
  const interval = 1000 / ramp;
  const openStarted = performance.now();
  for (const guest of guests) {
    pending.push(openClient(guest).then((c) => opened.push(c), failed));
    await sleep(interval);
  }
  await Promise.all(pending);
  const openSeconds = (performance.now() - openStarted) / 1000;
  const period = mode === "idle" ? 20000 : 1000;
  const action = mode === "idle" ? ping : send;
  const starts = opened.map((client) => setTimeout(() => {
    action(client);
    client.timer = setInterval(() => action(client), period);
  }, Math.random() * period));
  await sleep(WARM_UP_MS);
  measuring = true;
  say({ event: "measuring" });
  const begun = performance.now();
  await sleep(seconds * 1000);
  const elapsed = (performance.now() - begun) / 1000;
  measuring = false;
  closing = true;
  say({ event: "measured" });
  const connected = opened.filter((c) => c.socket.connected).length;
  for (const start of starts) clearTimeout(start);
  for (const client of opened) { clearInterval(client.timer); client.socket.close(); }
  latencies.sort((a, b) => a - b);
  say({
    clients, connected, ...stats, firstConnectFailure, seconds: elapsed, openSeconds,
    p50Ms: percentile(latencies, 0.5), p99Ms: percentile(latencies, 0.99),
    chunksPerSecond: mode === "idle" ? 0 : stats.acked / elapsed,
  });
  process.exit(0);
}

main().catch((error) => { console.error(error); process.exit(1); });
