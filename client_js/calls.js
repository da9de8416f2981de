// @ts-check
/**
 * The tool-call half of the view model: how `tool.*` and `job.*` events change a
 * call's card (status, streamed arguments, attempts and their chunks, retries,
 * timeout, cancel, result, job). Pure functions over plain objects; used by
 * `view.js`'s reducer.
 *
 * @module calls
 */

/** @typedef {import('./toolplex.js').ViewState} ViewState */
/** @typedef {import('./toolplex.js').CallView} CallView */
/** @typedef {import('./toolplex.js').AttemptView} AttemptView */
/** @typedef {import('./toolplex.js').ChunkView} ChunkView */
/** @typedef {import('./toolplex.js').CallStatus} CallStatus */
/** @typedef {import('./toolplex.js').JobView} JobView */

/**
 * Every status a tool call can be in, roughly in the order a call moves through them.
 *
 * @type {readonly CallStatus[]}
 * @example
 * CALL_STATUSES.includes('retrying'); // true
 */
export const CALL_STATUSES = Object.freeze(/** @type {CallStatus[]} */ ([
  'streaming_args', 'queued', 'running', 'retrying', 'timed_out', 'succeeded', 'partial',
  'failed', 'cancelled', 'circuit_open', 'job_pending', 'job_done',
]));

/** After the call's terminal event; a late non-terminal event never leaves these. */
const ENDED = new Set(['succeeded', 'partial', 'failed', 'cancelled', 'circuit_open',
  'job_pending', 'job_done']);

/**
 * Reducers for the `tool.*` and `job.*` event types, keyed by type. Each takes a
 * state whose `lastSeq` is already advanced and returns the next state.
 *
 * @type {Readonly<Record<string, (s: ViewState, e: any) => ViewState>>}
 * @example
 * const next = CALL_HANDLERS['tool.call.delta'](state, event);
 */
export const CALL_HANDLERS = Object.freeze({
  'tool.call.start': (s, e) => withCall(s, e, (c) => ({
    ...c, name: e.name ?? c.name, messageId: e.message_id ?? c.messageId,
  })),
  'tool.call.delta': (s, e) => withCall(s, e, (c) => ({ ...c, argsText: c.argsText + (e.delta ?? '') })),
  'tool.call.end': (s, e) => withCall(s, e, (c) => {
    const waiting = c.status === 'streaming_args';
    const queuedAt = c.timings.queuedAt ?? (waiting ? e.ts : null);
    return {
      ...c, args: e.args, status: waiting ? 'queued' : c.status,
      timings: { ...c.timings, argsEndedAt: e.ts, queuedAt },
    };
  }),
  // Extension: the call waits for its upstream's rate or concurrency limit.
  'tool.queued': (s, e) => withCall(s, e, (c) => {
    const upstream = e.upstream ?? c.upstream;
    if (!['streaming_args', 'queued', 'retrying'].includes(c.status)) return { ...c, upstream };
    return {
      ...c, status: 'queued', upstream,
      timings: { ...c.timings, queuedAt: c.timings.queuedAt ?? e.ts },
    };
  }),
  // Extension: the result is a memoised earlier one.
  'tool.cached': (s, e) => withCall(s, e, (c) => ({ ...c, cached: true })),
  'tool.exec.started': (s, e) => withCall(s, e, (c) => {
    const known = c.attempts.some((a) => a.attempt === e.attempt);
    return {
      ...c,
      attempts: known ? c.attempts : [...c.attempts, newAttempt(e.attempt, e.ts, e.timeout_ms)],
      chunks: known ? c.chunks : [],
      status: ENDED.has(c.status) ? c.status : 'running',
      timings: { ...c.timings, startedAt: c.timings.startedAt ?? e.ts },
    };
  }),
  'tool.output.delta': (s, e) => withCall(s, e, (c) => {
    let attempts = c.attempts;
    if (!attempts.some((a) => a.attempt === e.attempt)) {
      attempts = [...attempts, newAttempt(e.attempt, e.ts, null)];
    }
    const target = /** @type {AttemptView} */ (attempts.find((a) => a.attempt === e.attempt));
    // [protocol] index is per call and attempt, gapless from 0: keep chunks ordered, once each.
    if (target.chunks.some((ch) => ch.index === e.index)) return c;
    const updated = { ...target, chunks: insertChunk(target.chunks, { index: e.index, data: e.data, ts: e.ts }) };
    attempts = attempts.map((a) => (a === target ? updated : a));
    const current = !updated.dropped && attempts.every((a) => a.attempt <= updated.attempt);
    return {
      ...c, attempts, chunks: current ? updated.chunks : c.chunks,
      timings: { ...c.timings, chunkTs: [...c.timings.chunkTs, e.ts] },
    };
  }),
  'tool.timeout': (s, e) => withCall(s, e, (c) => {
    const timeout = { attempt: e.attempt, timeout_ms: e.timeout_ms, will_retry: !!e.will_retry, ts: e.ts };
    return {
      ...c, timeout, timeouts: [...c.timeouts, timeout],
      status: ENDED.has(c.status) ? c.status : 'timed_out',
      attempts: endAttempt(c.attempts, e.attempt, 'timed_out', e.ts),
    };
  }),
  // [protocol] tool.retrying: "a client drops that attempt's partial output"; the
  // attempt itself stays in `attempts` (marked dropped) as history.
  'tool.retrying': (s, e) => withCall(s, e, (c) => {
    const retry = { attempt: e.attempt, delay_ms: e.delay_ms, reason: e.reason, error: e.error ?? null, ts: e.ts };
    const attempts = endAttempt(c.attempts, e.attempt, e.reason === 'timeout' ? 'timed_out' : 'failed', e.ts)
      .map((a) => (a.attempt === e.attempt ? { ...a, dropped: true } : a));
    const last = attempts[attempts.length - 1];
    return {
      ...c, attempts, retries: [...c.retries, retry],
      chunks: !last || last.attempt === e.attempt ? [] : c.chunks,
      status: ENDED.has(c.status) ? c.status : 'retrying',
    };
  }),
  // [protocol] an async tool's call ends with tool.result {job_id, status: "pending"} after job.pending.
  'tool.result': (s, e) => withCall(s, e, (c) => {
    const out = e.output;
    const pendingJob = !!c.job
      || (!!out && typeof out === 'object' && out.status === 'pending' && 'job_id' in out);
    const status = c.status === 'job_done' ? 'job_done'
      : pendingJob ? 'job_pending' : e.partial ? 'partial' : 'succeeded';
    const cached = c.cached || e.cached === true;
    return finish({ ...c, output: out, partial: !!e.partial, cached, status }, e.ts,
      e.partial ? 'partial' : 'succeeded');
  }),
  'tool.error': (s, e) => withCall(s, e, (c) => finish({
    ...c, error: e.error, status: e.error?.code === 'circuit_open' ? 'circuit_open' : 'failed',
  }, e.ts, 'failed')),
  'tool.cancelled': (s, e) => withCall(s, e, (c) => finish({
    ...c, status: 'cancelled', cancelledBy: e.by_call_id ?? c.cancelledBy,
    cancel: { reason: e.reason, by_call_id: e.by_call_id ?? null, partial_output: e.partial_output, ts: e.ts },
  }, e.ts, 'cancelled')),
  'tool.short_circuit': (s, e) => {
    const ids = Array.isArray(e.cancelled_call_ids) ? e.cancelled_call_ids : [];
    let next = withCall(s, e, (c) => ({ ...c, decisive: true, cancelledCallIds: ids }));
    for (const id of ids) {
      if (next.calls[id]) next = withCall(next, { call_id: id }, (c) => ({ ...c, cancelledBy: e.call_id }));
    }
    const entry = { call_id: e.call_id, cancelled_call_ids: ids, ts: e.ts };
    return { ...next, shortCircuits: [...next.shortCircuits, entry] };
  },
  'tool.circuit_open': (s, e) => ({
    ...s,
    disabledTools: [...s.disabledTools.filter((d) => d.tool !== e.tool),
      { tool: e.tool, failures: e.failures, ts: e.ts }],
  }),

  'job.pending': (s, e) => {
    const job = {
      job_id: e.job_id, via: e.via, status: /** @type {const} */ ('pending'), progress: null, total: null, message: null,
      output: undefined, error: null, pendingAt: e.ts, completedAt: null,
    };
    const next = withCall(s, e, (c) => ({
      ...c, job, status: c.status === 'job_done' ? c.status : 'job_pending',
    }));
    return { ...next, jobs: { ...next.jobs, [e.job_id]: e.call_id } };
  },
  // [protocol] job.progress and job.completed carry only job_id; job.pending mapped it to a call.
  'job.progress': (s, e) => withJob(s, e, (j) => ({
    ...j, progress: e.progress, total: e.total ?? j.total, message: e.message ?? j.message,
  })),
  'job.completed': (s, e) => withJob(s, e, (j) => ({
    ...j, status: e.status, output: e.output, error: e.error ?? null, completedAt: e.ts,
  }), 'job_done'),
});

/**
 * Fail the calls among `callIds` that have not ended (their run ended without their
 * terminal event: a gap, or a restart). Pending jobs are left alone: they outlive runs.
 *
 * @param {ViewState} s
 * @param {string[]} callIds
 * @param {{code: string, message: string}} error
 * @param {number} ts
 * @returns {ViewState}
 * @example
 * endOpenCalls(state, run.callIds, {code: 'interrupted', message: 'restarted'}, ts);
 */
export function endOpenCalls(s, callIds, error, ts) {
  let calls = s.calls;
  for (const id of callIds) {
    const c = calls[id];
    if (!c || ENDED.has(c.status)) continue;
    calls = { ...calls, [id]: finish({ ...c, status: 'failed', error }, ts, 'failed') };
  }
  return calls === s.calls ? s : { ...s, calls };
}

/**
 * Update a call, creating it on first sight (after a gap a call may have no start).
 *
 * @param {ViewState} s
 * @param {any} e
 * @param {(c: CallView) => CallView} fn
 * @returns {ViewState}
 */
function withCall(s, e, fn) {
  const id = e.call_id;
  if (typeof id !== 'string') return s;
  const old = s.calls[id];
  const updated = fn(old ?? newCall(e));
  if (updated === old) return s;
  const next = { ...s, calls: { ...s.calls, [id]: updated } };
  if (!old) {
    next.feed = [...s.feed, { kind: 'call', id }];
    const run = s.runs[e.run_id];
    if (run) next.runs = { ...s.runs, [run.id]: { ...run, callIds: [...run.callIds, id] } };
  }
  return next;
}

/**
 * @param {ViewState} s
 * @param {any} e
 * @param {(j: any) => any} fn
 * @param {CallStatus} [status]
 * @returns {ViewState}
 */
function withJob(s, e, fn, status) {
  const callId = s.jobs[e.job_id];
  const call = callId ? s.calls[callId] : null;
  if (!call || !call.job) return s;
  const updated = { ...call, job: fn(call.job), status: status ?? call.status };
  return { ...s, calls: { ...s.calls, [call.id]: updated } };
}

/**
 * @param {any} e
 * @returns {CallView}
 */
function newCall(e) {
  return {
    id: e.call_id, name: e.name ?? null, messageId: e.message_id ?? null, runId: e.run_id ?? null,
    status: 'streaming_args', argsText: '', args: undefined, attempts: [], chunks: [],
    retries: [], timeout: null, timeouts: [], cancel: null, cancelledBy: null,
    output: undefined, partial: false, error: null, job: null, cached: false, upstream: null,
    decisive: false, cancelledCallIds: [],
    timings: {
      createdAt: e.ts ?? null, argsEndedAt: null, queuedAt: null, startedAt: null, chunkTs: [], endedAt: null,
    },
  };
}

/**
 * @param {number} attempt
 * @param {number} ts
 * @param {number | null | undefined} timeoutMs
 * @returns {AttemptView}
 */
function newAttempt(attempt, ts, timeoutMs) {
  return {
    attempt, timeoutMs: timeoutMs ?? null, startedAt: ts, endedAt: null, status: 'running',
    chunks: [], dropped: false,
  };
}

/**
 * @param {ChunkView[]} chunks
 * @param {ChunkView} chunk
 * @returns {ChunkView[]}
 */
function insertChunk(chunks, chunk) {
  const at = chunks.findIndex((ch) => ch.index > chunk.index);
  return at < 0 ? [...chunks, chunk] : [...chunks.slice(0, at), chunk, ...chunks.slice(at)];
}

/**
 * @param {AttemptView[]} attempts
 * @param {number} n
 * @param {AttemptView['status']} status
 * @param {number} ts
 * @returns {AttemptView[]}
 */
function endAttempt(attempts, n, status, ts) {
  return attempts.map((a) => (a.attempt === n && a.status === 'running' ? { ...a, status, endedAt: ts } : a));
}

/**
 * Close the call on its terminal event; its last running attempt closes with it.
 *
 * @param {CallView} c
 * @param {number} ts
 * @param {AttemptView['status']} attemptStatus
 * @returns {CallView}
 */
function finish(c, ts, attemptStatus) {
  const last = c.attempts[c.attempts.length - 1];
  const attempts = last ? endAttempt(c.attempts, last.attempt, attemptStatus, ts) : c.attempts;
  return { ...c, attempts, timings: { ...c.timings, endedAt: c.timings.endedAt ?? ts } };
}
