// @ts-check
/**
 * The view model: a pure reducer that folds PROTOCOL.md events into runs,
 * messages and tool calls (see `calls.js` for the tool-call half). It never
 * mutates its input; unchanged branches are shared between old and new state.
 *
 * @module view
 */

import { CALL_HANDLERS, endOpenCalls } from './calls.js';

/** @typedef {import('./toolplex.js').ViewState} ViewState */
/** @typedef {import('./toolplex.js').RunView} RunView */
/** @typedef {import('./toolplex.js').MessageView} MessageView */
/** @typedef {import('./toolplex.js').ToolplexEvent} ToolplexEvent */

/**
 * The empty view model, before any event.
 *
 * @returns {ViewState} a fresh state with `lastSeq` 0
 * @example
 * let state = initialState();
 * state = reduce(state, event);
 */
export function initialState() {
  return {
    lastSeq: 0, sessionId: null, origin: null, lastTs: null,
    runs: {}, runOrder: [], messages: {}, calls: {}, jobs: {},
    feed: [], disabledTools: [], shortCircuits: [], gaps: [],
  };
}

/**
 * Fold one logged event into the view model.
 *
 * Events without a numeric `seq`, and events with `seq <= state.lastSeq`, are
 * ignored (the very same state object comes back), so a replay after a reconnect
 * never doubles text or chunks. Unknown event types only advance `lastSeq`.
 *
 * @param {ViewState} state the current view model (never mutated)
 * @param {ToolplexEvent | {type: string, seq?: number, ts?: number}} event a PROTOCOL.md envelope
 * @returns {ViewState} the next view model
 * @example
 * const s = reduce(initialState(), {v: 1, seq: 1, type: 'run.started', ts: 0,
 *   session_id: 's_1', run_id: 'r_1', trigger: 'user'});
 * s.runs.r_1.status; // 'running'
 */
export function reduce(state, event) {
  const e = /** @type {any} */ (event);
  // [protocol] seq is the only resume cursor: per session, strictly increasing, gapless.
  if (!e || typeof e.seq !== 'number' || e.seq <= state.lastSeq) return state;
  const ts = typeof e.ts === 'number' ? e.ts : null;
  /** @type {ViewState} */
  const s = {
    ...state,
    lastSeq: e.seq,
    lastTs: ts ?? state.lastTs,
    origin: state.origin ?? ts,
    sessionId: state.sessionId ?? e.session_id ?? null,
  };
  if (e.seq > state.lastSeq + 1) {
    s.gaps = [...state.gaps, { from_seq: state.lastSeq + 1, to_seq: e.seq - 1 }];
  }
  const handler = Object.hasOwn(HANDLERS, e.type) ? HANDLERS[e.type]
    : Object.hasOwn(CALL_HANDLERS, e.type) ? CALL_HANDLERS[e.type] : null;
  // Forward compatible: an unknown type is a logged event we skip, not an error.
  return handler ? handler(s, e) : s;
}

/**
 * Fold a list of events, in order, starting from `state`.
 *
 * @param {Iterable<ToolplexEvent>} events logged events, oldest first
 * @param {ViewState} [state] where to start; a fresh {@link initialState} by default
 * @returns {ViewState} the folded view model
 * @example
 * const state = replay(recordedEvents);
 * replay(recordedEvents, state) === state; // true: nothing is applied twice
 */
export function replay(events, state = initialState()) {
  let s = state;
  for (const event of events) s = reduce(s, event);
  return s;
}

/** @type {Record<string, (s: ViewState, e: any) => ViewState>} */
const HANDLERS = {
  'run.started': (s, e) => {
    if (typeof e.run_id !== 'string' || s.runs[e.run_id]) return s;
    /** @type {RunView} */
    const run = {
      id: e.run_id, trigger: e.trigger, input: e.input, status: 'running', outcome: null,
      error: null, usage: null, startedAt: e.ts, finishedAt: null, step: null, steps: [],
      messageIds: [], callIds: [],
    };
    return {
      ...s, runs: { ...s.runs, [run.id]: run }, runOrder: [...s.runOrder, run.id],
      feed: [...s.feed, { kind: 'run', id: run.id }],
    };
  },
  'step.started': (s, e) => withRun(s, e.run_id, (r) => ({
    ...r, step: e.step, steps: [...r.steps, { step: e.step, startedAt: e.ts, finishedAt: null }],
  })),
  'step.finished': (s, e) => withRun(s, e.run_id, (r) => ({
    ...r, steps: r.steps.map((st) => (st.step === e.step ? { ...st, finishedAt: e.ts } : st)),
  })),
  'run.finished': (s, e) => endRun(withRun(s, e.run_id, (r) => ({
    ...r, status: 'finished', outcome: e.outcome, usage: e.usage ?? null, finishedAt: e.ts,
  })), e),
  'run.error': (s, e) => endRun(withRun(s, e.run_id, (r) => ({
    ...r, status: 'error', error: e.error, finishedAt: e.ts,
  })), e),
  'text.start': (s, e) => withMessage(s, e, (m) => ({ ...m, role: e.role ?? m.role })),
  'text.delta': (s, e) => withMessage(s, e, (m) => ({ ...m, text: m.text + (e.delta ?? '') })),
  'text.end': (s, e) => withMessage(s, e, (m) => ({ ...m, status: 'done', endedAt: e.ts })),
  // The model's reasoning is a message of its own (role 'reasoning'), beside its text.
  'reasoning.start': (s, e) => withMessage(s, e, (m) => ({ ...m, role: 'reasoning' })),
  'reasoning.delta': (s, e) => withMessage(s, e, (m) => ({
    ...m, role: 'reasoning', text: m.text + (e.delta ?? ''),
  })),
  'reasoning.end': (s, e) => withMessage(s, e, (m) => ({
    ...m, role: 'reasoning', status: 'done', endedAt: e.ts,
  })),
};

/**
 * Fold a `stream.snapshot` frame's `messages` (the session's chat history, sent after a
 * `stream.gap` in place of the events the log no longer has) into the view model, so a
 * page that reconnects after a restart or a long absence still shows the conversation.
 * User and assistant messages become done {@link MessageView}s with `runId: null` and
 * `snapshot: true`, appended to the feed; messages the view already shows (a run's
 * input, a streamed message with the same text) are not added twice.
 *
 * @param {ViewState} state the current view model (never mutated)
 * @param {{messages?: unknown}} frame the snapshot frame
 * @returns {ViewState} the next view model (the same object when nothing was added)
 * @example
 * const s = foldSnapshot(initialState(), {type: 'stream.snapshot',
 *   messages: [{role: 'user', content: 'Enrich acme.com'}]});
 * s.feed; // [{kind: 'message', id: 'h0_0'}]
 */
export function foldSnapshot(state, frame) {
  const history = Array.isArray(frame?.messages) ? frame.messages : [];
  /** @type {Map<string, number>} */
  const shown = new Map();
  const count = (/** @type {string} */ key) => shown.set(key, (shown.get(key) ?? 0) + 1);
  for (const m of Object.values(state.messages)) count(`${m.role}\u0000${m.text}`);
  for (const id of state.runOrder) {
    const input = state.runs[id].input;
    if (typeof input === 'string') count(`user\u0000${input}`);
  }
  let { messages, feed } = state;
  history.forEach((m, i) => {
    if (!m || (m.role !== 'user' && m.role !== 'assistant')) return;
    const text = contentText(m.content);
    const tools = Array.isArray(m.tool_calls)
      ? m.tool_calls.map((/** @type {any} */ c) => c?.function?.name).filter((/** @type {unknown} */ n) => typeof n === 'string')
      : [];
    if (!text && !tools.length) return;
    const key = `${m.role}\u0000${text}`;
    const left = shown.get(key) ?? 0;
    if (left > 0) { shown.set(key, left - 1); return; }
    // Ids from the snapshot's place in the log: a second snapshot at the same cursor adds nothing.
    const id = `h${state.lastSeq}_${i}`;
    if (messages[id]) return;
    messages = { ...messages, [id]: {
      id, runId: null, role: m.role, text, status: 'done', startedAt: state.lastTs ?? 0,
      endedAt: null, tools, snapshot: true,
    } };
    feed = [...feed, { kind: 'message', id }];
  });
  return messages === state.messages ? state : { ...state, messages, feed };
}

/**
 * @param {unknown} content a chat message's content: text, or a list of parts
 * @returns {string} its text
 */
function contentText(content) {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return '';
  return content.map((p) => (typeof p === 'string' ? p : typeof p?.text === 'string' ? p.text : '')).join('');
}

/**
 * A run's terminal event closes what it left open: a message still streaming is done,
 * and a call with no terminal event of its own (lost in a gap, or a run ended by a
 * restart) is failed with the run's reason instead of staying "running".
 *
 * @param {ViewState} s
 * @param {any} e the run.finished or run.error event
 * @returns {ViewState}
 */
function endRun(s, e) {
  const run = s.runs[e.run_id];
  if (!run) return s;
  let messages = s.messages;
  for (const id of run.messageIds) {
    if (messages[id]?.status === 'streaming') {
      messages = { ...messages, [id]: { ...messages[id], status: 'done', endedAt: e.ts } };
    }
  }
  const error = e.error ?? { code: 'run_ended', message: 'the run ended before this call did' };
  const next = messages === s.messages ? s : { ...s, messages };
  return endOpenCalls(next, run.callIds, error, e.ts);
}

/**
 * @param {ViewState} s
 * @param {string} id
 * @param {(r: RunView) => RunView} fn
 * @returns {ViewState}
 */
function withRun(s, id, fn) {
  const run = s.runs[id];
  return run ? { ...s, runs: { ...s.runs, [id]: fn(run) } } : s;
}

/**
 * Update a message, creating it on first sight (after a gap a delta may have no start).
 *
 * @param {ViewState} s
 * @param {any} e
 * @param {(m: MessageView) => MessageView} fn
 * @returns {ViewState}
 */
function withMessage(s, e, fn) {
  const id = e.message_id;
  if (typeof id !== 'string') return s;
  const old = s.messages[id];
  /** @type {MessageView} */
  const base = old ?? {
    id, runId: e.run_id ?? null, role: 'assistant', text: '', status: 'streaming',
    startedAt: e.ts, endedAt: null,
  };
  let next = { ...s, messages: { ...s.messages, [id]: fn(base) } };
  if (!old) {
    next.feed = [...s.feed, { kind: 'message', id }];
    next = withRun(next, e.run_id, (r) => ({ ...r, messageIds: [...r.messageIds, id] }));
  }
  return next;
}
