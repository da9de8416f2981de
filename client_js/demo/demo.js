// @ts-check
/**
 * The demo page: a session kept in sessionStorage (a reload resumes it and
 * replays the log from seq 0), a chat box with suggestions, the conversation
 * with live tool-call cards, and the timeline. `?transport=sse` forces SSE.
 *
 * @module demo/demo
 */

import { ToolplexClient, createSession } from '/static/toolplex.js';

import { fill, h } from './dom.js';
import { Feed } from './feed.js';
import { loadMarkdown } from './markdown.js';
import { isLive, renderTimeline } from './timeline.js';

/** @typedef {import('../toolplex.js').ViewState} ViewState */

const KEY = 'toolplex.demo.session';
const transport = new URLSearchParams(location.search).get('transport') === 'sse' ? 'sse' : 'auto';

/** @param {string} sel @returns {HTMLElement} */
const $ = (sel) => /** @type {HTMLElement} */ (document.querySelector(sel));

/** @type {ToolplexClient | null} */
let client = null;
/** @type {ViewState | null} */
let state = null;
/** Server clock minus ours, learnt from live events, so running bars grow in server time. */
let skew = 0;
let headSeq = 0;
let frame = 0;
/** @type {'session' | 'run'} */
let scope = 'session';
/** @type {ReturnType<typeof setInterval> | undefined} */
let ticker;
/** What was sent and not yet seen to start: the page shows "Thinking…" meanwhile. */
let awaiting = '';
/** The runs the view had when it was sent, to notice the new one. */
let runsAtSend = 0;

const feed = new Feed($('#feed'), {
  cancelCall: (id) => client?.cancelCall(id),
  completeJob: (jobId, output) => client?.completeJob(jobId, output),
});

/**
 * The saved session, or a new one.
 *
 * @param {boolean} fresh true to drop the saved session
 * @returns {Promise<{session_id: string, token: string}>}
 */
async function session(fresh) {
  if (!fresh) {
    try {
      const saved = JSON.parse(sessionStorage.getItem(KEY) ?? 'null');
      if (saved?.session_id && saved?.token) return saved;
    } catch { /* a corrupt entry: make a new session */ }
  }
  const created = await createSession('');
  sessionStorage.setItem(KEY, JSON.stringify(created));
  return created;
}

/** @param {boolean} [fresh] */
async function start(fresh = false) {
  client?.close();
  client = null;
  state = null;
  headSeq = 0;
  feed.reset();
  draw();
  let s;
  try { s = await session(fresh); } catch (err) {
    showStatus('closed');
    toast(`Cannot create a session: ${/** @type {Error} */ (err).message}`);
    return;
  }
  const c = new ToolplexClient({ sessionId: s.session_id, token: s.token, transport });
  client = c;
  $('#session').textContent = s.session_id;
  let opened = false;
  c.addEventListener('state', (e) => { state = e.state; schedule(); });
  c.addEventListener('hello', (e) => { headSeq = e.frame.head_seq ?? 0; });
  c.addEventListener('event', (e) => {
    // Replayed events are old; only a live one tells how far the server clock is from ours.
    if (e.event.seq > headSeq) skew = e.event.ts - Date.now();
  });
  c.addEventListener('status', (e) => {
    if (c !== client) return;
    opened ||= e.status === 'open';
    showStatus(e.status, e.delay);
    // A saved session the server no longer knows never opens (a refused handshake looks
    // like a network error to a browser): after a few tries, start a new one.
    if (!opened && !fresh && e.status === 'reconnecting' && e.attempt >= 2) start(true);
  });
  c.addEventListener('command-error', (e) => {
    // A refused run says so itself (ask() puts the text back); other refusals are shown here.
    if (e.frame.error?.code !== 'run_active') toast(`${e.frame.error?.code}: ${e.frame.error?.message}`);
  });
  c.addEventListener('gap', (e) => toast(`Events ${e.frame.from_seq}–${e.frame.to_seq} are no longer in the server's log (a restart, or an old session): the conversation is shown from its history.`));
  c.addEventListener('error', (e) => { if (!e.fatal) toast(e.error.message); });
  try {
    await c.connect();
  } catch (err) {
    if (c !== client) return;
    if (!fresh) { toast('That session has ended; starting a new one.'); start(true); return; }
    toast(`Cannot connect: ${/** @type {Error} */ (err).message}`);
  }
}

function schedule() {
  if (!frame) frame = requestAnimationFrame(draw);
}

function draw() {
  frame = 0;
  const root = document.documentElement;
  const nearBottom = window.innerHeight + window.scrollY >= root.scrollHeight - 160;
  const empty = !state || state.feed.length === 0;
  $('#intro').hidden = !empty;
  if (!state) {
    renderTimeline($('#timeline'), { ...emptyState() }, Date.now());
    return;
  }
  const changed = feed.render(state);
  renderTimeline($('#timeline'), state, Date.now() + skew, scope);
  renderNotices(state);
  const running = [...state.runOrder].reverse().find((id) => state?.runs[id].status === 'running');
  const stop = /** @type {HTMLButtonElement} */ ($('#stop'));
  stop.hidden = !running;
  stop.dataset.runId = running ?? '';
  if (awaiting && state.runOrder.length > runsAtSend) awaiting = '';
  $('#pending').hidden = !awaiting;
  setBusy(!!running || !!awaiting);
  if (changed && nearBottom) window.scrollTo({ top: root.scrollHeight });
  // While a call runs or a job waits, bars grow with the clock: redraw ten times a second.
  if (isLive(state) && !ticker) ticker = setInterval(schedule, 100);
  if (!isLive(state) && ticker) { clearInterval(ticker); ticker = undefined; }
}

/** @returns {boolean} whether the latest view has a run still going */
function isRunning() {
  return !!state && state.runOrder.some((id) => state?.runs[id].status === 'running');
}

/** @returns {ViewState} */
function emptyState() {
  return { lastSeq: 0, sessionId: null, origin: null, lastTs: null, runs: {}, runOrder: [], messages: {},
    calls: {}, jobs: {}, feed: [], disabledTools: [], shortCircuits: [], gaps: [] };
}

/** @param {ViewState} s */
function renderNotices(s) {
  fill($('#notices'), ...s.disabledTools.map((d) => h('li', { class: 'notice', 'data-tool': d.tool },
    `${d.tool} is disabled for this session after ${d.failures} failures in a row.`)));
}

/**
 * @param {string} status
 * @param {number} [delay]
 */
function showStatus(status, delay = 0) {
  const el = $('#conn');
  el.dataset.status = status;
  el.textContent = status === 'open' ? 'live'
    : status === 'reconnecting' ? `reconnecting${delay ? ` in ${(delay / 1000).toFixed(1)} s` : '…'}`
      : status === 'closed' ? 'offline' : `${status}…`;
}

/** @param {string} text */
function toast(text) {
  const el = $('#toast');
  el.textContent = text;
  el.hidden = false;
  clearTimeout(Number(el.dataset.timer));
  el.dataset.timer = String(setTimeout(() => { el.hidden = true; }, 5000));
}

/**
 * While a run streams (or one was just sent), Send and the chips wait: the typed text
 * stays in the box instead of being lost behind a refusal.
 *
 * @param {boolean} busy
 */
function setBusy(busy) {
  const send = /** @type {HTMLButtonElement} */ ($('#send'));
  send.disabled = busy;
  send.title = busy ? 'A run is streaming: send when it ends (or Stop it)' : '';
  for (const chip of $('#suggestions').querySelectorAll('button')) {
    /** @type {HTMLButtonElement} */ (chip).disabled = busy;
  }
}

/**
 * Send a message; true when it went (or was queued for the reconnect).
 *
 * @param {string} text
 * @returns {boolean}
 */
function ask(text) {
  const message = text.trim();
  if (!message || !client || /** @type {HTMLButtonElement} */ ($('#send')).disabled) return false;
  if (client.status !== 'open') toast('Offline: your message goes out when the connection is back.');
  awaiting = message;
  runsAtSend = state?.runOrder.length ?? 0;
  const input = /** @type {HTMLInputElement} */ ($('#input'));
  client.run(message).catch((/** @type {any} */ err) => {
    awaiting = '';
    // Refused (another tab's run is streaming, say): give the text back to edit and resend.
    if (!input.value) input.value = message;
    if (err?.code === 'run_active') toast('A run is already streaming in this session: send again when it ends.');
    schedule();
  });
  schedule();
  return true;
}

$('#composer').addEventListener('submit', (e) => {
  e.preventDefault();
  const input = /** @type {HTMLInputElement} */ ($('#input'));
  if (ask(input.value)) input.value = '';
});
$('#suggestions').addEventListener('click', (e) => {
  const button = /** @type {HTMLElement} */ (e.target).closest('button[data-prompt]');
  if (button) ask(/** @type {HTMLElement} */ (button).dataset.prompt ?? '');
});
$('#scope').addEventListener('click', (e) => {
  const button = /** @type {HTMLElement} */ (e.target).closest('button[data-scope]');
  if (!button) return;
  scope = /** @type {HTMLElement} */ (button).dataset.scope === 'run' ? 'run' : 'session';
  for (const b of $('#scope').querySelectorAll('button')) b.setAttribute('aria-pressed', String(b === button));
  schedule();
});
$('#stop').addEventListener('click', () => {
  const runId = $('#stop').dataset.runId;
  if (runId) client?.cancel(runId);
});
$('#new-session').addEventListener('click', () => {
  sessionStorage.removeItem(KEY);
  start(true);
});
$('#toggle-timeline').addEventListener('click', () => {
  const side = $('#side');
  const collapsed = side.dataset.collapsed !== 'true';
  side.dataset.collapsed = String(collapsed);
  $('#toggle-timeline').setAttribute('aria-expanded', String(!collapsed));
  schedule();
});

/** The agent's example prompts as chips; none (an agent of your own): no chips. */
async function loadPrompts() {
  let prompts = [];
  try {
    const res = await fetch('/v1/agent', { headers: { Accept: 'application/json' } });
    if (res.ok) prompts = (await res.json()).prompts ?? [];
  } catch { /* no chips */ }
  const box = $('#suggestions');
  fill(box, ...prompts.map((/** @type {string} */ p) => h('button', { type: 'button', class: 'chip', 'data-prompt': p }, p)));
  box.hidden = prompts.length === 0;
}

// On a narrow screen the timeline starts folded under its heading.
if (matchMedia('(max-width: 860px)').matches) {
  $('#side').dataset.collapsed = 'true';
  $('#toggle-timeline').setAttribute('aria-expanded', 'false');
}
// Nothing waits for these: messages drawn before the renderer loaded are drawn again.
loadMarkdown().then((loaded) => { if (loaded) { feed.invalidate(); schedule(); } });
loadPrompts().then(() => setBusy(!!awaiting || isRunning()));
start();
