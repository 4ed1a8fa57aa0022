// Log monitor window: renders what the bridge pushes and turns clicks into js_api calls.
//
// The bridge (renderer/bridge.py) calls window.lm.applyStatus / applyStats / applyHistory /
// appendLines / appendEvents at most ~30 times a second. Everything that comes from outside (log text,
// file names, server events, error messages) is written with textContent, never parsed as
// HTML, so a log line holding markup shows that markup as characters and runs nothing.
// window.lm.describe() reads back what the DOM shows, for diagnostics and tests.
"use strict";

(function () {
  const MAX_LINES = 1000; // lines kept in the page; older ones are dropped
  const MAX_EVENTS = 200;
  const MAX_FILES = 200; // entries in the file filter
  const RATE_WINDOW_MS = 5000; // send rate is averaged over this window

  const STATE_WORDS = {
    connected: "Connected to the server",
    connecting: "Connecting to the server…",
    disconnected: "Not connected",
    error: "Connection failed",
  };

  const byId = (id) => document.getElementById(id);
  const el = {
    state: byId("state"),
    stateWords: byId("state-words"),
    retry: byId("retry"),
    attempt: byId("attempt"),
    countdown: byId("countdown"),
    spoolFull: byId("spool-full"),
    lastError: byId("last-error"),
    identity: byId("identity"),
    server: byId("server"),
    clientId: byId("client-id"),
    windows: byId("windows"),
    credentialStore: byId("credential-store"),
    gameLabel: byId("game-label"),
    game: byId("game"),
    bufferedChunks: byId("buffered-chunks"),
    bufferedBytes: byId("buffered-bytes"),
    sentChunks: byId("sent-chunks"),
    sentBytes: byId("sent-bytes"),
    sendRate: byId("send-rate"),
    deadLettered: byId("dead-lettered"),
    backlog: byId("backlog"),
    backlogWords: byId("backlog-words"),
    connect: byId("connect"),
    disconnect: byId("disconnect"),
    logout: byId("logout"),
    openWindow: byId("open-window"),
    loginForm: byId("login-form"),
    loginFields: byId("login-fields"),
    loginIdentifier: byId("login-identifier"),
    loginPassword: byId("login-password"),
    actionResult: byId("action-result"),
    pause: byId("pause"),
    filterText: byId("filter-text"),
    filterFile: byId("filter-file"),
    tailCount: byId("tail-count"),
    lines: byId("lines"),
    events: byId("events"),
    chartDesc: byId("chart-desc"),
    chartRateArea: byId("chart-rate-area"),
    chartRate: byId("chart-rate"),
    chartWaiting: byId("chart-waiting"),
    chartRateNow: byId("chart-rate-now"),
    chartRatePeak: byId("chart-rate-peak"),
    chartWaitingNow: byId("chart-waiting-now"),
    chartWaitingPeak: byId("chart-waiting-peak"),
    chartSpan: byId("chart-span"),
  };

  // ---- formatting -------------------------------------------------------------------

  function formatBytes(n) {
    if (!Number.isFinite(n) || n < 0) return "–";
    if (n < 1000) return `${Math.round(n)} B`;
    const units = ["kB", "MB", "GB", "TB"];
    let value = n;
    let unit = "B";
    for (const u of units) {
      if (value < 1000) break;
      value /= 1000;
      unit = u;
    }
    return `${value.toFixed(value < 10 ? 1 : 0)} ${unit}`;
  }

  function formatCount(n) {
    return Number.isFinite(n) ? Math.round(n).toLocaleString("en") : "–";
  }

  function setValue(node, value, text) {
    node.dataset.value = String(value);
    node.textContent = text;
  }

  function asNumber(v) {
    return typeof v === "number" && Number.isFinite(v) ? v : null;
  }

  function asText(v) {
    return typeof v === "string" ? v : v === null || v === undefined ? "" : String(v);
  }

  // ---- status -------------------------------------------------------------------------

  const MAX_STATE_CHANGES = 16;
  const stateChanges = []; // [state, Date.now()] of each change shown, oldest first
  let retryDeadline = null; // performance.now() at which the next retry is due
  let countdownTimer = null;
  let sentSamples = []; // [performance.now(), sentBytes], for a derived send rate
  let rateFromStats = null; // bytes/s when the main process reports it
  let backlogPeak = 0;
  let backlogFromStats = null;

  function tickCountdown() {
    if (retryDeadline === null) {
      el.countdown.dataset.ms = "";
      el.countdown.textContent = "Waiting to retry.";
      return;
    }
    const left = Math.max(0, retryDeadline - performance.now());
    el.countdown.dataset.ms = String(Math.round(left));
    el.countdown.textContent =
      left > 0 ? `Next try in ${(left / 1000).toFixed(1)} s.` : "Trying again now…";
  }

  function stopCountdown() {
    if (countdownTimer !== null) clearInterval(countdownTimer);
    countdownTimer = null;
    retryDeadline = null;
  }

  function applyState(s) {
    if (!("state" in s)) return;
    const state = Object.hasOwn(STATE_WORDS, s.state) ? s.state : "unknown";
    if (el.state.dataset.state !== state) {
      el.state.dataset.state = state;
      el.stateWords.textContent =
        state === "unknown" ? `Unknown state: ${asText(s.state)}` : STATE_WORDS[state];
      // Wall-clock time of the DOM change, read by tests and benchmarks.
      const at = Date.now();
      el.state.dataset.changedAt = String(at);
      // The last few changes, so a reader polling now and then still sees each one.
      stateChanges.push([state, at]);
      if (stateChanges.length > MAX_STATE_CHANGES) stateChanges.shift();
    }
    const waiting = state === "disconnected";
    el.retry.hidden = !waiting;
    if (!waiting) {
      stopCountdown();
      return;
    }
    const attempt = asNumber(s.attempt);
    setValue(el.attempt, attempt ?? "", attempt === null ? "?" : String(attempt));
    const next = asNumber(s.nextRetryMs);
    retryDeadline = next === null ? null : performance.now() + Math.max(0, next);
    tickCountdown();
    if (countdownTimer === null) countdownTimer = setInterval(tickCountdown, 100);
  }

  function applyIdentity(s) {
    if (!("identity" in s) && !("authenticated" in s) && !("username" in s)) return;
    const signedIn = s.authenticated === true && s.identity === "user";
    let words;
    if (signedIn) words = asText(s.username) || "a signed-in user";
    else if (s.identity === "guest") words = "Guest";
    else words = "Nobody yet";
    setValue(el.identity, signedIn ? "user" : s.identity === "guest" ? "guest" : "none", words);
    el.logout.hidden = !signedIn;
    el.loginForm.hidden = signedIn;
  }

  function applyCounters(s) {
    const counters = [
      ["bufferedChunks", el.bufferedChunks, formatCount],
      ["bufferedBytes", el.bufferedBytes, formatBytes],
      ["sentChunks", el.sentChunks, formatCount],
      ["sentBytes", el.sentBytes, formatBytes],
      ["deadLettered", el.deadLettered, formatCount],
    ];
    for (const [key, node, format] of counters) {
      const v = asNumber(s[key]);
      if (v !== null) setValue(node, v, format(v));
    }
    const sent = asNumber(s.sentBytes);
    if (sent !== null) {
      const now = performance.now();
      sentSamples.push([now, sent]);
      sentSamples = sentSamples.filter(([t]) => now - t <= RATE_WINDOW_MS);
    }
    const buffered = asNumber(s.bufferedBytes);
    if (buffered !== null) backlogPeak = buffered === 0 ? 0 : Math.max(backlogPeak, buffered);
    renderRate();
    renderBacklog();
  }

  function renderRate() {
    let rate = rateFromStats;
    if (rate === null && sentSamples.length >= 2) {
      const [t0, b0] = sentSamples[0];
      const [t1, b1] = sentSamples[sentSamples.length - 1];
      rate = t1 > t0 ? Math.max(0, ((b1 - b0) * 1000) / (t1 - t0)) : 0;
    }
    if (rate === null) return;
    const chunks = asNumber(Number(el.sendRate.dataset.chunks));
    const chunkWords = chunks === null ? "" : ` (${chunks.toFixed(chunks < 10 ? 1 : 0)} chunks/s)`;
    setValue(el.sendRate, rate, `${formatBytes(rate)}/s${chunkWords}`);
  }

  function renderBacklog() {
    let done;
    let total;
    if (backlogFromStats !== null) {
      [done, total] = backlogFromStats;
    } else {
      const buffered = Number(el.bufferedBytes.dataset.value) || 0;
      total = backlogPeak;
      done = total - buffered;
    }
    if (!(total > 0)) {
      el.backlog.max = 1;
      el.backlog.value = 1;
      el.backlog.textContent = "100%";
      el.backlogWords.textContent = "nothing waiting";
      return;
    }
    const fraction = Math.min(1, Math.max(0, done / total));
    el.backlog.max = 1;
    el.backlog.value = fraction;
    const percent = `${Math.floor(fraction * 100)}%`;
    el.backlog.textContent = percent;
    el.backlogWords.textContent = `${percent} of ${formatBytes(total)}`;
  }

  function applyStatus(s) {
    if (s === null || typeof s !== "object") return;
    applyState(s);
    applyIdentity(s);
    if ("server" in s) setValue(el.server, asText(s.server), asText(s.server) || "–");
    if ("clientId" in s) setValue(el.clientId, asText(s.clientId), asText(s.clientId) || "–");
    if ("windows" in s) {
      const w = asNumber(s.windows);
      setValue(el.windows, w ?? "", w === null ? "–" : String(w));
    }
    if ("credentialStore" in s) {
      // "file" or "keychain (<backend>)": where the main process keeps the tokens (never
      // a token: the page is not given any).
      const store = asText(s.credentialStore);
      setValue(el.credentialStore, store, store || "–");
    }
    if ("game" in s) {
      // Which game installs and channels are followed; the row only with a game.
      const game = asText(s.game);
      setValue(el.game, game, game);
      el.game.hidden = !game;
      el.gameLabel.hidden = !game;
    }
    applyCounters(s);
    if ("lastError" in s) {
      const text = asText(s.lastError);
      el.lastError.textContent = text ? `Last error: ${text}` : "";
      el.lastError.hidden = !text;
    }
    if ("spoolFull" in s) el.spoolFull.hidden = s.spoolFull !== true;
    document.body.dataset.hasStatus = "true";
  }

  // Stats (ipc.messages.Stats): sendRateBytes, sendRateChunks, bytesDone, bytesTotal, ...
  function applyStats(s) {
    if (s === null || typeof s !== "object") return;
    const rate = asNumber(s.sendRateBytes);
    if (rate !== null) rateFromStats = rate;
    const chunkRate = asNumber(s.sendRateChunks);
    if (chunkRate !== null) el.sendRate.dataset.chunks = String(chunkRate);
    const done = asNumber(s.bytesDone);
    const total = asNumber(s.bytesTotal);
    if (done !== null && total !== null) backlogFromStats = total > 0 ? [done, total] : null;
    applyCounters(s);
  }

  // ---- the shipping chart ---------------------------------------------------------------
  //
  // ShippingHistory (ipc.messages): samples [atMs, sentBytesPerS, bufferedChunks], one a
  // second, oldest first. Drawn as SVG paths (no canvas: what is drawn can be read back
  // from the DOM): bytes sent per second in the top band, chunks waiting in the bottom
  // one, each scaled to its own peak, on one time axis ending at the newest sample.

  const CHART_SPAN_MS = 10 * 60 * 1000;
  const CHART_WIDTH = 600;
  const RATE_BAND = [4, 78]; // y of the band's top and bottom in the viewBox
  const WAITING_BAND = [86, 148];
  let chart = {
    samples: 0,
    spanMs: null,
    ratePoints: 0,
    waitingPoints: 0,
    peakRate: null,
    lastRate: null,
    peakWaiting: null,
    lastWaiting: null,
  };

  function bandY(value, peak, band) {
    const [top, bottom] = band;
    return peak > 0 ? bottom - (value / peak) * (bottom - top) : bottom;
  }

  function pathOf(points) {
    return points.map(([x, y], i) => `${i ? "L" : "M"}${x.toFixed(1)} ${y.toFixed(1)}`).join("");
  }

  function applyHistory(h) {
    if (h === null || typeof h !== "object" || !Array.isArray(h.samples)) return;
    const samples = h.samples.filter(
      (s) => Array.isArray(s) && s.length >= 3 && s.every((v) => asNumber(v) !== null),
    );
    if (samples.length === 0) return;
    const end = samples[samples.length - 1][0];
    const shown = samples.filter(([at]) => at > end - CHART_SPAN_MS);
    const peakRate = Math.max(...shown.map((s) => s[1]));
    const peakWaiting = Math.max(...shown.map((s) => s[2]));
    const x = (at) => CHART_WIDTH - ((end - at) / CHART_SPAN_MS) * CHART_WIDTH;
    const rate = shown.map((s) => [x(s[0]), bandY(s[1], peakRate, RATE_BAND)]);
    const waiting = shown.map((s) => [x(s[0]), bandY(s[2], peakWaiting, WAITING_BAND)]);
    const line = pathOf(rate);
    el.chartRate.setAttribute("d", line);
    el.chartRateArea.setAttribute(
      "d",
      `${line}L${rate[rate.length - 1][0].toFixed(1)} ${RATE_BAND[1]}L${rate[0][0].toFixed(1)} ${RATE_BAND[1]}Z`,
    );
    el.chartWaiting.setAttribute("d", pathOf(waiting));
    const last = shown[shown.length - 1];
    const spanMs = end - shown[0][0];
    chart = {
      samples: shown.length,
      spanMs,
      ratePoints: rate.length,
      waitingPoints: waiting.length,
      peakRate,
      lastRate: last[1],
      peakWaiting,
      lastWaiting: last[2],
    };
    el.chartRateNow.textContent = `${formatBytes(last[1])}/s`;
    el.chartRatePeak.textContent = `${formatBytes(peakRate)}/s`;
    el.chartWaitingNow.textContent = formatCount(last[2]);
    el.chartWaitingPeak.textContent = formatCount(peakWaiting);
    const minutes = Math.max(1, Math.round(spanMs / 60000));
    el.chartSpan.textContent =
      spanMs < 60000 ? `the last ${Math.round(spanMs / 1000)} s` : `the last ${minutes} min`;
    el.chartDesc.textContent =
      `Over ${el.chartSpan.textContent}: sent up to ${formatBytes(peakRate)}/s, ` +
      `now ${formatBytes(last[1])}/s; chunks waiting up to ${formatCount(peakWaiting)}, ` +
      `now ${formatCount(last[2])}.`;
  }

  // ---- live tail ----------------------------------------------------------------------

  let buffer = []; // {file, text}; at most MAX_LINES after each append
  let waitingWhilePaused = 0;
  const knownFiles = new Set();

  function normaliseLine(item) {
    if (typeof item === "string") return { file: "", text: item };
    if (item === null || typeof item !== "object") return { file: "", text: asText(item) };
    return { file: asText(item.file ?? item.path), text: asText(item.text ?? item.line) };
  }

  function matches(line) {
    const file = el.filterFile.value;
    if (file && line.file !== file) return false;
    const needle = el.filterText.value;
    return !needle || line.text.includes(needle);
  }

  function lineElement(line) {
    const li = document.createElement("li");
    if (line.file) {
      const file = document.createElement("span");
      file.className = "file";
      file.textContent = line.file;
      li.append(file);
    }
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = line.text;
    li.append(text);
    return li;
  }

  function rememberFile(file) {
    if (!file || knownFiles.has(file) || knownFiles.size >= MAX_FILES) return;
    knownFiles.add(file);
    const option = document.createElement("option");
    option.value = file;
    option.textContent = file;
    el.filterFile.append(option);
  }

  function isPaused() {
    return el.pause.getAttribute("aria-pressed") === "true";
  }

  function renderTailCount() {
    const shown = el.lines.childElementCount;
    el.tailCount.textContent = isPaused()
      ? `Paused: ${shown} lines shown, ${waitingWhilePaused} new lines waiting`
      : `${shown} lines shown`;
  }

  function appendToDom(lines) {
    const atBottom = el.lines.scrollHeight - el.lines.scrollTop - el.lines.clientHeight < 8;
    const fragment = document.createDocumentFragment();
    for (const line of lines) if (matches(line)) fragment.append(lineElement(line));
    el.lines.append(fragment);
    let excess = el.lines.childElementCount - MAX_LINES;
    while (excess-- > 0) el.lines.firstElementChild.remove();
    if (atBottom) el.lines.scrollTop = el.lines.scrollHeight;
  }

  function rerenderTail() {
    el.lines.replaceChildren();
    appendToDom(buffer);
    renderTailCount();
  }

  function appendLines(list) {
    if (!Array.isArray(list) || list.length === 0) return;
    // Only the newest MAX_LINES can ever be shown; skip building the rest.
    const fresh = list.slice(-MAX_LINES).map(normaliseLine);
    for (const line of fresh) rememberFile(line.file);
    buffer = buffer.concat(fresh);
    if (buffer.length > MAX_LINES) buffer = buffer.slice(-MAX_LINES);
    if (isPaused()) {
      waitingWhilePaused += list.length;
    } else {
      appendToDom(fresh);
    }
    renderTailCount();
  }

  function setPaused(paused) {
    el.pause.setAttribute("aria-pressed", paused ? "true" : "false");
    el.pause.textContent = paused ? "Resume" : "Pause";
    if (!paused) {
      waitingWhilePaused = 0;
      rerenderTail();
    } else {
      renderTailCount();
    }
  }

  el.pause.addEventListener("click", () => setPaused(!isPaused()));
  el.filterText.addEventListener("input", rerenderTail);
  el.filterFile.addEventListener("change", rerenderTail);
  el.filterText.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && el.filterText.value) {
      el.filterText.value = "";
      rerenderTail();
    }
  });

  // ---- server events ------------------------------------------------------------------

  function appendEvents(list) {
    if (!Array.isArray(list) || list.length === 0) return;
    const fragment = document.createDocumentFragment();
    for (const item of list.slice(-MAX_EVENTS)) {
      const li = document.createElement("li");
      const when = document.createElement("span");
      when.className = "when";
      const at = item && typeof item === "object" ? asNumber(item.at) : null;
      when.textContent = new Date(at ?? Date.now()).toLocaleTimeString("en-GB");
      const body = document.createElement("span");
      body.className = "text";
      const payload = item && typeof item === "object" && "payload" in item ? item.payload : item;
      try {
        body.textContent = typeof payload === "string" ? payload : JSON.stringify(payload);
      } catch (err) {
        body.textContent = asText(payload);
      }
      li.append(when, body);
      fragment.append(li);
    }
    el.events.append(fragment);
    let excess = el.events.childElementCount - MAX_EVENTS;
    while (excess-- > 0) el.events.firstElementChild.remove();
    el.events.scrollTop = el.events.scrollHeight;
  }

  // ---- actions --------------------------------------------------------------------------

  const actionButtons = [el.connect, el.disconnect, el.logout, el.openWindow];

  function api() {
    return window.pywebview && window.pywebview.api ? window.pywebview.api : null;
  }

  function showResult(reply, doneWords) {
    const ok = reply && reply.ok === true;
    el.actionResult.dataset.ok = ok ? "true" : "false";
    el.actionResult.textContent = ok
      ? doneWords
      : asText(reply && reply.message) || "The main process did not answer.";
  }

  async function runAction(button, call, doneWords) {
    const bridge = api();
    if (!bridge) {
      showResult({ ok: false, message: "Not ready yet: the window is still starting." });
      return;
    }
    button.disabled = true;
    try {
      showResult(await call(bridge), doneWords);
    } catch (err) {
      showResult({ ok: false, message: asText(err && err.message) });
    } finally {
      button.disabled = false;
    }
  }

  const DONE_WORDS = {
    connect: "Asked to connect.",
    disconnect: "Asked to disconnect.",
    logout: "Signed out.",
    open_window: "Opening a new window.",
  };

  for (const button of actionButtons) {
    const action = button.dataset.action;
    button.addEventListener("click", () =>
      runAction(button, (bridge) => bridge[action](), DONE_WORDS[action]),
    );
  }

  el.loginForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const identifier = el.loginIdentifier.value.trim();
    let password = el.loginPassword.value;
    // The password leaves the page once, towards the main process, and is never kept.
    el.loginPassword.value = "";
    if (!identifier || !password) {
      showResult({ ok: false, message: "Enter a user name and a password." });
      return;
    }
    const submit = byId("login-submit");
    runAction(submit, (bridge) => bridge.login(identifier, password), "Signed in.");
    password = "";
  });

  function enableActions() {
    for (const button of actionButtons) button.disabled = false;
    el.loginFields.disabled = false;
    document.body.dataset.apiReady = "true";
  }

  if (api()) enableActions();
  else window.addEventListener("pywebviewready", enableActions);

  // ---- readback ---------------------------------------------------------------------------

  function dataNumber(node) {
    const v = node.dataset.value;
    return v === undefined || v === "" ? null : Number(v);
  }

  function describe() {
    const retryShown = !el.retry.hidden;
    const lastLine = el.lines.lastElementChild;
    return {
      apiReady: document.body.dataset.apiReady === "true",
      hasStatus: document.body.dataset.hasStatus === "true",
      state: el.state.dataset.state,
      stateText: el.stateWords.textContent,
      stateChangedAt: el.state.dataset.changedAt ? Number(el.state.dataset.changedAt) : null,
      stateChanges: stateChanges.map((change) => change.slice()),
      retryShown,
      attempt: retryShown ? dataNumber(el.attempt) : null,
      countdownText: retryShown ? el.countdown.textContent : "",
      countdownMs:
        retryShown && el.countdown.dataset.ms !== "" ? Number(el.countdown.dataset.ms) : null,
      identity: el.identity.dataset.value || null,
      identityText: el.identity.textContent,
      server: el.server.textContent,
      clientId: el.clientId.textContent,
      windows: dataNumber(el.windows),
      credentialStore: el.credentialStore.dataset.value || null,
      game: el.game.hidden ? "" : el.game.textContent,
      counters: {
        bufferedChunks: dataNumber(el.bufferedChunks),
        bufferedBytes: dataNumber(el.bufferedBytes),
        sentChunks: dataNumber(el.sentChunks),
        sentBytes: dataNumber(el.sentBytes),
        sendRate: dataNumber(el.sendRate),
        deadLettered: dataNumber(el.deadLettered),
      },
      countersText: {
        buffered: `${el.bufferedChunks.textContent} chunks, ${el.bufferedBytes.textContent}`,
        sent: `${el.sentChunks.textContent} chunks, ${el.sentBytes.textContent}`,
        sendRate: el.sendRate.textContent,
        deadLettered: el.deadLettered.textContent,
      },
      backlog: el.backlog.max > 0 ? el.backlog.value / el.backlog.max : null,
      backlogText: el.backlogWords.textContent,
      lastError: el.lastError.hidden ? "" : el.lastError.textContent,
      spoolFull: !el.spoolFull.hidden,
      signInShown: !el.loginForm.hidden,
      signOutShown: !el.logout.hidden,
      passwordFieldEmpty: el.loginPassword.value === "",
      actionResult: el.actionResult.textContent,
      paused: isPaused(),
      tailCountText: el.tailCount.textContent,
      lines: el.lines.childElementCount,
      lastLineText: lastLine ? lastLine.querySelector(".text").textContent : null,
      events: el.events.childElementCount,
      chart: { ...chart, text: el.chartDesc.textContent },
    };
  }

  window.lm = Object.freeze({
    applyStatus,
    applyStats,
    applyHistory,
    appendLines,
    appendEvents,
    describe,
  });
})();
