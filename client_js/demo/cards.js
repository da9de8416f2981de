// @ts-check
/**
 * One card per tool call, filled live from the view model: streamed arguments,
 * chunks of the current attempt, retries, timeout, cancel reason, result or
 * error, and a job's progress with Approve/Reject for human jobs.
 *
 * @module demo/cards
 */

import { duration, fill, h, json, linkify, pretty } from './dom.js';

/** @typedef {import('../toolplex.js').CallView} CallView */
/** @typedef {import('../toolplex.js').ViewState} ViewState */
/** @typedef {{cancelCall: (id: string) => void, completeJob: (jobId: string, output: unknown) => void}} Actions */

/** Human-readable status names. */
const LABELS = {
  streaming_args: 'writing args', queued: 'queued', running: 'running', retrying: 'retrying',
  timed_out: 'timed out', succeeded: 'done', partial: 'partial', failed: 'failed', cancelled: 'cancelled',
  circuit_open: 'disabled', job_pending: 'job pending', job_done: 'job done',
};

/** Statuses in which a person may still cancel the call. */
const CANCELLABLE = new Set(['streaming_args', 'queued', 'running', 'retrying', 'timed_out']);

/** How many chunks a card shows before folding the older ones. */
const SHOWN_CHUNKS = 12;

/** Decisions already sent for human jobs, so a re-render keeps the buttons settled. */
const decided = new Map();

/** Which JSON blocks a person opened or closed (`call:kind`), kept across re-renders. */
const expanded = new Map();

/** A JSON block this many lines long or shorter starts open. */
const OPEN_LINES = 8;

/** JSON up to this many characters is shown on one line. */
const SHORT_JSON = 48;

/**
 * Create an empty card for a call; {@link renderCard} fills it.
 *
 * @param {CallView} call the call
 * @returns {HTMLElement} `article.card[data-call-id]`
 * @example
 * const el = createCard(state.calls.c_1);
 * renderCard(el, state.calls.c_1, state, actions);
 */
export function createCard(call) {
  return h('article', { class: 'card', 'data-call-id': call.id, 'aria-live': 'polite' });
}

/**
 * Fill a card from the call's current view.
 *
 * @param {HTMLElement} el the card from {@link createCard}
 * @param {CallView} call the call
 * @param {ViewState} state the whole view model (for the names of other calls)
 * @param {Actions} actions what the buttons do
 * @returns {void}
 * @example
 * renderCard(el, call, state, {cancelCall: (id) => client.cancelCall(id), completeJob: ...});
 */
export function renderCard(el, call, state, actions) {
  el.dataset.status = call.status;
  el.dataset.tool = call.name ?? '';
  if (call.job) el.dataset.jobStatus = call.job.status;
  fill(el, header(call, actions), args(call), notes(call, state), chunks(call), job(call, actions), outcome(call));
}

/** @param {CallView} call @param {Actions} actions */
function header(call, actions) {
  const badges = [
    h('span', { class: 'badge status', 'data-status': call.status }, label(call)),
    call.attempts.length > 1 && h('span', { class: 'badge', title: 'attempts' }, `attempt ${call.attempts.length}`),
    ...call.retries.map((r) => h('span', {
      class: 'badge retry', 'data-attempt': r.attempt, title: r.error ? `${r.error.code}: ${r.error.message}` : '',
    }, `retry ${r.attempt} · ${r.reason.replace('_', ' ')} · ${duration(r.delay_ms)}`)),
    call.upstream && h('span', { class: 'badge', title: 'shares a rate limit' }, `upstream ${call.upstream}`),
    call.cached && h('span', { class: 'badge cached' }, 'cached'),
    call.decisive && h('span', { class: 'badge decisive', title: 'its chunk cancelled the siblings' }, 'decisive'),
  ];
  const cancel = CANCELLABLE.has(call.status) && h('button', {
    type: 'button', class: 'ghost small', 'data-action': 'cancel-call',
    onclick: () => actions.cancelCall(call.id),
  }, 'Cancel');
  return h('header', { class: 'card-head' },
    h('span', { class: 'tool-name' }, call.name ?? 'tool'),
    h('span', { class: 'badges' }, badges), cancel);
}

/**
 * The status badge's text; a finished job says how it finished.
 *
 * @param {CallView} call
 * @returns {string}
 */
function label(call) {
  if (call.status === 'job_done' && call.job) return `job ${call.job.status}`;
  return LABELS[call.status] ?? call.status;
}

/**
 * A JSON value, pretty-printed with clickable URLs, in a block that folds; a long one
 * starts folded, showing a one-line preview.
 *
 * @param {CallView} call
 * @param {string} kind `args`, `result`, `partial` or `job-result` (the `pre`'s class)
 * @param {string} title the block's label
 * @param {unknown} value
 * @returns {HTMLElement}
 */
function jsonBlock(call, kind, title, value) {
  // A small value reads best on one line; a larger one indented.
  // (Newlines in JSON text are structure only: strings escape theirs.)
  const oneLine = typeof value === 'string' ? value : pretty(value).replace(/\n\s*/g, ' ');
  const text = oneLine.length <= SHORT_JSON ? oneLine : pretty(value);
  const key = `${call.id}:${kind}`;
  const open = expanded.get(key) ?? text.split('\n').length <= OPEN_LINES;
  return h('details', {
    class: `json json-${kind}`, open,
    ontoggle: (/** @type {Event} */ e) => expanded.set(key, /** @type {HTMLDetailsElement} */ (e.currentTarget).open),
  }, h('summary', {}, h('span', { class: 'json-label' }, title), h('code', { class: 'json-preview' }, json(value, 90))),
  h('pre', { class: kind === 'job-result' ? 'result' : kind }, linkify(text)));
}

/** @param {CallView} call */
function args(call) {
  const writing = call.status === 'streaming_args' || call.args === undefined;
  if (!writing) return jsonBlock(call, 'args', 'arguments', call.args);
  return h('pre', { class: `args${call.status === 'streaming_args' ? ' caret' : ''}`, title: 'arguments' },
    call.argsText || (call.status === 'streaming_args' ? '' : '{}'));
}

/** @param {CallView} call @param {ViewState} state */
function notes(call, state) {
  const out = [];
  for (const t of call.timeouts) {
    const attempt = call.attempts.find((a) => a.attempt === t.attempt);
    const kept = call.partial || (attempt?.chunks.length ?? 0) > 0;
    const then = t.will_retry ? 'retrying' : kept ? 'partial output kept' : 'no output to keep';
    const text = `Timed out after ${duration(t.timeout_ms)} (attempt ${t.attempt}), ${then}.`;
    out.push(h('p', { class: 'note timeout' }, text));
  }
  for (const a of call.attempts.filter((x) => x.dropped && x.chunks.length)) {
    const n = a.chunks.length;
    const text = `Attempt ${a.attempt}: ${n} chunk${n === 1 ? '' : 's'} dropped by the retry.`;
    out.push(h('p', { class: 'note dropped' }, text));
  }
  if (call.cancel) out.push(h('p', { class: 'note cancel' }, cancelText(call, state)));
  return out.length ? h('div', { class: 'notes' }, out) : null;
}

/**
 * @param {CallView} call
 * @param {ViewState} state
 * @returns {string} why the call was cancelled, naming the decisive call
 */
function cancelText(call, state) {
  const by = call.cancel?.by_call_id ?? call.cancelledBy;
  switch (call.cancel?.reason) {
    case 'short_circuit': {
      const name = by ? state.calls[by]?.name ?? 'a sibling' : 'a sibling';
      return `Cancelled by ${name}${by ? ` (${by})` : ''}: its result made this call unnecessary.`;
    }
    case 'user': return 'Cancelled by you.';
    case 'run_cancelled': return 'Cancelled with its run.';
    case 'discarded': return 'Discarded: the model response was cut off.';
    default: return `Cancelled (${call.cancel?.reason}).`;
  }
}

/** @param {CallView} call */
function chunks(call) {
  if (!call.chunks.length) return null;
  // Progress reports (an MCP server's notifications/progress) read as a bar with its
  // message, not as JSON; the rest of the chunks stay as they came.
  const reports = call.chunks.filter((c) => isProgress(c.data));
  const rest = call.chunks.filter((c) => !isProgress(c.data));
  // A plain (non-streaming) tool's value arrives as one chunk and again as the result:
  // once it ended, show it once, as the result.
  const only = rest.length === 1 && call.output !== undefined && !call.job;
  const shown = only && json(rest[0].data, Infinity) === json(call.output, Infinity) ? [] : rest;
  const hidden = Math.max(0, shown.length - SHOWN_CHUNKS);
  return [
    reports.length ? progress(reports[reports.length - 1].data, reports.length, call) : null,
    shown.length ? h('ol', { class: 'chunks', 'aria-label': 'output chunks' },
      hidden > 0 && h('li', { class: 'more' }, `${hidden} earlier chunk${hidden === 1 ? '' : 's'}`),
      shown.slice(hidden).map((c) => h('li', { 'data-index': c.index }, linkify(json(c.data, 240))))) : null,
  ];
}

/**
 * A chunk shaped like a progress report: `{progress, total?, message?}` and nothing else.
 * @param {unknown} data
 */
function isProgress(data) {
  if (!data || typeof data !== 'object' || Array.isArray(data)) return false;
  const d = /** @type {Record<string, unknown>} */ (data);
  return typeof d.progress === 'number'
    && Object.keys(d).every((k) => k === 'progress' || k === 'total' || k === 'message');
}

/**
 * The latest progress report of a call, as a bar (determinate when it has a total).
 * @param {any} p @param {number} reports @param {CallView} call
 */
function progress(p, reports, call) {
  const running = call.status === 'running' || call.status === 'retrying';
  const pct = p.total ? Math.min(100, Math.round((100 * p.progress) / p.total)) : null;
  const label = [`Progress ${p.total ? `${p.progress}/${p.total}` : p.progress}`,
    p.message ? ` — ${p.message}` : '', reports > 1 ? ` (${reports} reports)` : ''].join('');
  return h('div', { class: 'call-progress', 'data-progress': p.progress, 'data-total': p.total ?? '' },
    h('p', { class: 'progress-label' }, label),
    h('div', {
      class: `progress${pct === null && running ? ' indeterminate' : ''}`, role: 'progressbar',
      'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-valuenow': pct,
    }, h('div', { class: 'fill', style: `width:${pct ?? (running ? 30 : 100)}%` })));
}

/** @param {CallView} call @param {Actions} actions */
function job(call, actions) {
  const j = call.job;
  if (!j) return null;
  const pct = j.total ? Math.min(100, Math.round((100 * (j.progress ?? 0)) / j.total)) : null;
  const bar = h('div', {
    class: `progress${pct === null && j.status === 'pending' ? ' indeterminate' : ''}`, role: 'progressbar',
    'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-valuenow': pct ?? (j.status === 'pending' ? null : 100),
  }, h('div', { class: 'fill', style: `width:${pct ?? (j.status === 'pending' ? 30 : 100)}%` }));
  const label = [`Job ${j.job_id} via ${j.via}: ${j.status}`,
    j.total ? ` (${j.progress}/${j.total})` : j.progress != null ? ` (${j.progress})` : '',
    j.message ? ` — ${j.message}` : ''].join('');
  let buttons = null;
  if (j.via === 'human' && j.status === 'pending') {
    const choice = decided.get(j.job_id);
    /** @param {boolean} approved */
    const decide = (approved) => {
      decided.set(j.job_id, approved ? 'approved' : 'rejected');
      const output = approved ? { approved: true } : { approved: false, reason: 'rejected in the demo' };
      actions.completeJob(j.job_id, output);
    };
    buttons = h('div', { class: 'job-actions' },
      h('button', { type: 'button', 'data-action': 'approve', disabled: !!choice,
        onclick: () => decide(true) }, 'Approve'),
      h('button', { type: 'button', class: 'ghost', 'data-action': 'reject', disabled: !!choice,
        onclick: () => decide(false) }, 'Reject'),
      choice && h('span', { class: 'muted' }, `${choice}, waiting for the job to finish…`));
  }
  const result = j.status !== 'pending' && (j.error
    ? h('p', { class: 'error' }, `${j.error.code}: ${j.error.message}`)
    : j.output !== undefined && jsonBlock(call, 'job-result', 'job result', j.output));
  return h('div', { class: 'job', 'data-job-id': j.job_id, 'data-job-status': j.status },
    h('p', { class: 'job-label' }, label), bar, buttons, result);
}

/** @param {CallView} call */
function outcome(call) {
  if (call.error) {
    return h('p', { class: 'error' }, h('strong', {}, call.error.code), `: ${call.error.message}`);
  }
  if (call.status === 'cancelled' && call.cancel?.partial_output !== undefined) {
    const partial = call.cancel.partial_output;
    if (sameAsChunks(call, partial)) return h('p', { class: 'result-note muted' }, 'Partial output: the chunks above.');
    return h('div', { class: 'result-wrap' }, h('span', { class: 'badge partial' }, 'partial output'),
      jsonBlock(call, 'result', 'partial output', partial));
  }
  if (call.output === undefined || call.job) return null;
  // A streaming tool's result is its chunks: say so rather than print them twice.
  if (call.chunks.length > 1 && sameAsChunks(call, call.output)) {
    const n = call.chunks.length;
    return h('p', { class: 'result-note muted', 'data-result': 'chunks' },
      `${call.partial ? 'Partial result' : 'Result'}: the ${n} chunks above.`);
  }
  return h('div', { class: 'result-wrap' }, call.partial && h('span', { class: 'badge partial' }, 'partial'),
    jsonBlock(call, 'result', 'result', call.output));
}

/**
 * @param {CallView} call
 * @param {unknown} value a result or partial output
 * @returns {boolean} true when it is the list of the call's chunks
 */
function sameAsChunks(call, value) {
  return Array.isArray(value) && value.length === call.chunks.length
    && json(value, Infinity) === json(call.chunks.map((c) => c.data), Infinity);
}
