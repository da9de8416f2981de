// @ts-check
/**
 * The timeline: one bar per tool call on a time axis shared by the whole
 * session, so parallel calls show as overlapping bars. A bar has segments
 * (writing args, queued, running, job pending), ticks for chunks, markers for
 * retries and timeouts, and an end marker coloured by outcome; each run starts
 * with a separator naming its trigger.
 *
 * @module demo/timeline
 */

import { duration, fill, h } from './dom.js';

/** @typedef {import('../toolplex.js').ViewState} ViewState */
/** @typedef {import('../toolplex.js').CallView} CallView */

/** Statuses after which the call's bar stops growing. */
const ENDED = new Set(['succeeded', 'partial', 'failed', 'cancelled', 'circuit_open', 'job_pending', 'job_done']);

/**
 * Whether anything on the timeline still grows with the clock (a running call or
 * a pending job), so the page knows to keep redrawing.
 *
 * @param {ViewState} state the view model
 * @returns {boolean} true while something is live
 * @example
 * if (isLive(state)) requestAnimationFrame(tick);
 */
export function isLive(state) {
  return Object.values(state.calls).some((c) => !ENDED.has(c.status) || c.job?.status === 'pending');
}

/**
 * Draw the timeline into `root` (rebuilt each time: a few dozen elements).
 * `data-start-ms`/`data-end-ms` are always ms from the session's first event
 * (`root.dataset.originTs`); `scope: 'run'` only zooms the picture onto the latest run.
 *
 * @param {HTMLElement} root the container
 * @param {ViewState} state the view model
 * @param {number} now the current time in server milliseconds
 * @param {'session' | 'run'} [scope] the whole session, or the latest run with calls
 * @returns {void}
 * @example
 * renderTimeline(document.querySelector('#timeline'), state, Date.now());
 */
export function renderTimeline(root, state, now, scope = 'session') {
  const origin = state.origin;
  if (origin == null || !Object.keys(state.calls).length) {
    fill(root, h('p', { class: 'muted empty' }, 'Tool calls appear here on one time axis.'));
    return;
  }
  /** @param {number} ts @returns {number} ms from the origin */
  const rel = (ts) => Math.max(0, ts - origin);
  const withCalls = state.runOrder.filter((id) => state.runs[id].callIds.length);
  const latestId = withCalls[withCalls.length - 1] ?? state.runOrder[state.runOrder.length - 1];
  const latest = scope === 'run' ? state.runs[latestId] : null;
  const from = latest ? rel(latest.startedAt) : 0;
  // The axis grows with the clock only while something is live; a quiet session keeps its scale.
  const end = isLive(state) ? Math.max(now, state.lastTs ?? origin) : state.lastTs ?? origin;
  const span = Math.max(rel(end) - from, 1000);
  /** @param {number} ms from the origin @returns {string} a CSS left percentage */
  const pct = (ms) => `${((100 * (ms - from)) / span).toFixed(3)}%`;
  /** @param {number} ms a length @returns {string} a CSS width percentage */
  const len = (ms) => `${((100 * ms) / span).toFixed(3)}%`;
  root.dataset.originTs = String(origin);
  root.dataset.spanMs = String(span);
  root.dataset.scope = scope;

  const rows = [axis(span, len)];
  for (const item of state.feed) {
    if (item.kind === 'run' && (!latest || item.id === latest.id)) {
      const run = state.runs[item.id];
      rows.push(h('div', { class: 'tl-run', 'data-run-id': run.id, 'data-trigger': run.trigger,
        'data-start-ms': rel(run.startedAt) },
      h('span', { class: 'tl-label' }, `${run.trigger} turn`),
      h('div', { class: 'tl-track' }, h('i', { class: 'tl-run-mark', style: `left:${pct(rel(run.startedAt))}` }))));
    } else if (item.kind === 'call' && (!latest || state.calls[item.id].runId === latest.id)) {
      const call = state.calls[item.id];
      rows.push(h('div', { class: 'tl-row', 'data-call-id': call.id },
        h('span', { class: 'tl-label', title: call.id }, call.name ?? call.id),
        h('div', { class: 'tl-track' }, bar(call, rel, pct, len, now))));
    }
  }
  fill(root, ...rows);
}

/**
 * @param {CallView} call
 * @param {(ts: number) => number} rel
 * @param {(ms: number) => string} pct
 * @param {(ms: number) => string} len
 * @param {number} now
 * @returns {HTMLElement}
 */
function bar(call, rel, pct, len, now) {
  const t = call.timings;
  const start = rel(t.createdAt ?? t.queuedAt ?? t.startedAt ?? now);
  const live = t.endedAt == null;
  const stop = Math.max(start, rel(t.endedAt ?? now));
  const width = Math.max(stop - start, 1);
  /** @param {number} ms a length in ms @returns {string} that length as a share of the bar */
  const frac = (ms) => `${((100 * ms) / width).toFixed(3)}%`;
  /** @param {number} ms from the origin @returns {string} offset inside the bar */
  const at = (ms) => frac(ms - start);
  /** @param {string} cls @param {number | null} from @param {number | null} to @param {string} title */
  const seg = (cls, from, to, title) => (from == null ? null : h('i', {
    class: `tl-seg ${cls}`, title, style: `left:${at(rel(from))};width:${frac(Math.max(0, rel(to ?? now) - rel(from)))}`,
  }));
  const argsEnd = t.argsEndedAt ?? t.queuedAt ?? t.startedAt ?? t.endedAt;
  const queuedEnd = t.startedAt ?? t.endedAt;
  const parts = [
    seg('tl-args', t.createdAt, argsEnd, 'writing arguments'),
    t.queuedAt != null && queuedEnd !== t.queuedAt ? seg('tl-queued', t.queuedAt, queuedEnd, 'queued') : null,
    seg('tl-running', t.startedAt, t.endedAt, 'running'),
    ...t.chunkTs.map((ts) => h('i', { class: 'tl-tick', 'data-ms': rel(ts), style: `left:${at(rel(ts))}` })),
    ...call.retries.map((r) => h('i', { class: 'tl-retry', 'data-ms': rel(r.ts), 'data-attempt': r.attempt,
      title: `retry after attempt ${r.attempt} (${r.reason}), wait ${duration(r.delay_ms)}`, style: `left:${at(rel(r.ts))}` })),
    ...call.timeouts.map((x) => h('i', { class: 'tl-timeout', 'data-ms': rel(x.ts),
      title: `timed out after ${duration(x.timeout_ms)}`, style: `left:${at(rel(x.ts))}` })),
    !live && h('i', { class: 'tl-end', 'data-outcome': outcome(call), title: outcome(call), style: 'left:100%' }),
  ];
  const el = h('div', {
    class: 'tl-bar', 'data-call-id': call.id, 'data-tool': call.name ?? '', 'data-status': call.status,
    'data-start-ms': start, 'data-end-ms': stop, 'data-live': live ? 'true' : null,
    title: `${call.name} · ${call.status} · ${duration(stop - start)}`,
    style: `left:${pct(start)};width:${len(stop - start)}`,
  }, parts);
  const job = call.job;
  if (!job || t.endedAt == null) return el;
  const jobEnd = rel(job.completedAt ?? now);
  const jobEl = h('i', { class: 'tl-job', 'data-job-status': job.status, 'data-start-ms': stop, 'data-end-ms': jobEnd,
    title: `job ${job.job_id} via ${job.via}: ${job.status}`, style: `left:${pct(stop)};width:${len(jobEnd - stop)}` });
  return h('div', { class: 'tl-pair' }, el, jobEl);
}

/** @param {CallView} call @returns {string} the colour key of the end marker */
function outcome(call) {
  if (call.status === 'job_pending' || call.status === 'job_done') return 'job';
  return call.status;
}

/**
 * @param {number} span
 * @param {(ms: number) => string} len
 * @returns {HTMLElement} the axis with "nice" ticks, labelled from the left edge
 */
function axis(span, len) {
  const steps = [100, 250, 500, 1000, 2000, 5000, 10_000, 15_000, 30_000, 60_000, 120_000, 300_000,
    600_000, 1_800_000, 3_600_000];
  const hour = 3_600_000;
  const step = steps.find((s) => span / s <= 6) ?? Math.ceil(span / 6 / hour) * hour;
  const ticks = [];
  for (let ms = 0; ms <= span; ms += step) {
    const cls = `tl-axis-tick${ms > span * 0.88 ? ' last' : ''}`;
    const label = ms === 0 ? '0' : ms < 1000 ? `${ms} ms` : ms < 60_000 ? `${+(ms / 1000).toFixed(2)} s` : duration(ms);
    ticks.push(h('span', { class: cls, style: `left:${len(ms)}` }, label));
  }
  return h('div', { class: 'tl-axis', 'aria-hidden': 'true' },
    h('span', { class: 'tl-label' }), h('div', { class: 'tl-track' }, ticks));
}
