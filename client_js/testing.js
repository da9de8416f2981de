// @ts-check
/**
 * Test doubles for code built on the client: a scriptable fake WebSocket, a fake
 * fetch that streams SSE bytes, and an event recorder with a sample session. Not
 * part of the entry point; import `./testing.js` from tests only.
 *
 * @module testing
 */

/** @typedef {import('./toolplex.js').ToolplexEvent} ToolplexEvent */

/**
 * A fresh fake WebSocket class (one per test, so instances never leak between
 * tests). The client drives it through `onopen`/`onmessage`/`onclose`; the test
 * plays the server with `serverOpen()`, `serverSend(obj)`, `serverClose(code)`.
 *
 * @returns {any} a WebSocket-like constructor with a static `instances` list
 * @example
 * const WS = fakeWebSocket();
 * const client = new ToolplexClient({sessionId: 's', token: 't', baseUrl: 'http://x', WebSocket: WS});
 * client.connect();
 * WS.instances[0].serverOpen();
 * WS.instances[0].url; // ...?token=...&after=0
 */
export function fakeWebSocket() {
  return class FakeWebSocket {
    /** @type {FakeWebSocket[]} */
    static instances = [];
    static OPEN = 1;
    readyState = 0;
    /** @type {any[]} parsed frames the client sent */
    sent = [];
    /** @type {any} */ onopen = null;
    /** @type {any} */ onmessage = null;
    /** @type {any} */ onclose = null;
    /** @type {any} */ onerror = null;
    /** @type {number | null} the code the client closed with */
    closedWith = null;

    /** @param {string} url */
    constructor(url) {
      this.url = url;
      FakeWebSocket.instances.push(this);
    }

    /** @param {string} data */
    send(data) {
      if (this.readyState !== 1) throw new Error('send() on a socket that is not open');
      this.sent.push(JSON.parse(data));
    }

    /** @param {number} [code] */
    close(code = 1000) {
      this.closedWith = code;
      this.serverClose(code);
    }

    serverOpen() {
      this.readyState = 1;
      this.onopen?.({});
    }

    /** @param {any} frame sent as one JSON text frame */
    serverSend(frame) {
      this.onmessage?.({ data: typeof frame === 'string' ? frame : JSON.stringify(frame) });
    }

    /** @param {number} code @param {string} [reason] */
    serverClose(code, reason = '') {
      if (this.readyState === 3) return;
      this.readyState = 3;
      this.onclose?.({ code, reason });
    }
  };
}

/**
 * A `Response` whose body streams the given text chunks as bytes, like an SSE
 * endpoint. With `keepOpen` the body stays open until the request is aborted.
 *
 * @param {string[]} chunks pieces of the event stream, split anywhere
 * @param {{keepOpen?: boolean, signal?: AbortSignal | null, status?: number}} [options]
 * @returns {Response} a streaming response
 * @example
 * const res = sseResponse(['id: 1\ndata: {"seq"', ':1}\n\n']);
 */
export function sseResponse(chunks, { keepOpen = false, signal = null, status = 200 } = {}) {
  const encoder = new TextEncoder();
  const body = new ReadableStream({
    start(controller) {
      for (const chunk of chunks) controller.enqueue(encoder.encode(chunk));
      if (!keepOpen) controller.close();
      else signal?.addEventListener('abort', () => controller.error(new DOMException('aborted', 'AbortError')));
    },
  });
  return new Response(body, { status, headers: { 'Content-Type': 'text/event-stream' } });
}

/**
 * A fake `fetch` that records each request and answers with `handler`.
 *
 * @param {(url: string, init: any, n: number) => Response | Promise<Response>} handler
 *   gets the URL, the init object and the 1-based request number
 * @returns {((url: string, init?: any) => Promise<Response>) & {calls: {url: string, init: any}[]}}
 * @example
 * const f = fakeFetch(() => Response.json({session_id: 's_1', token: 't'}));
 * await createSession('http://x', {fetch: f});
 * f.calls[0].url; // 'http://x/v1/sessions'
 */
export function fakeFetch(handler) {
  /** @type {{url: string, init: any}[]} */
  const calls = [];
  const f = async (/** @type {string} */ url, /** @type {any} */ init = {}) => {
    calls.push({ url, init });
    return handler(url, init, calls.length);
  };
  return Object.assign(f, { calls });
}

/**
 * An event factory that stamps the envelope: `seq` from 1, `ts` 10 ms apart.
 *
 * @param {{session?: string, t0?: number}} [options]
 * @returns {(type: string, fields?: Record<string, any>) => ToolplexEvent} makes the next event
 * @example
 * const ev = eventRecorder();
 * ev('run.started', {run_id: 'r_1', trigger: 'user'}); // {v: 1, seq: 1, ts: t0 + 10, ...}
 */
export function eventRecorder({ session = 's_1', t0 = 1_764_000_000_000 } = {}) {
  let seq = 0;
  return (type, fields = {}) => {
    seq += 1;
    return /** @type {ToolplexEvent} */ ({ v: 1, seq, type, ts: t0 + seq * 10, session_id: session, ...fields });
  };
}

/**
 * A recorded session touching every feature: parallel calls, streamed args and
 * text, a retry, a timeout with partial result, a short-circuit, a human job and
 * the run its completion starts.
 *
 * @returns {ToolplexEvent[]} the events, seq 1..n
 * @example
 * const state = replay(sampleSession());
 */
export function sampleSession() {
  const ev = eventRecorder();
  const r = { run_id: 'r_1' };
  return [
    ev('run.started', { ...r, trigger: 'user', input: 'Enrich acme.com' }),
    ev('step.started', { ...r, step: 1 }),
    ev('text.start', { ...r, message_id: 'm_1', role: 'assistant' }),
    ev('text.delta', { ...r, message_id: 'm_1', delta: 'Looking up ' }),
    ev('text.delta', { ...r, message_id: 'm_1', delta: 'acme.com' }),
    ev('text.end', { ...r, message_id: 'm_1' }),
    ev('tool.call.start', { ...r, call_id: 'c_1', name: 'lookup', message_id: 'm_1' }),
    ev('tool.call.delta', { ...r, call_id: 'c_1', delta: '{"domain":' }),
    ev('tool.call.delta', { ...r, call_id: 'c_1', delta: '"acme.com"}' }),
    ev('tool.call.end', { ...r, call_id: 'c_1', args: { domain: 'acme.com' } }),
    ev('tool.exec.started', { ...r, call_id: 'c_1', attempt: 1, timeout_ms: 10000 }),
    ev('tool.call.start', { ...r, call_id: 'c_2', name: 'search', message_id: 'm_1' }),
    ev('tool.call.end', { ...r, call_id: 'c_2', args: { query: 'acme' } }),
    ev('tool.exec.started', { ...r, call_id: 'c_2', attempt: 1, timeout_ms: 10000 }),
    ev('tool.call.start', { ...r, call_id: 'c_3', name: 'search_slow', message_id: 'm_1' }),
    ev('tool.call.end', { ...r, call_id: 'c_3', args: { query: 'acme' } }),
    ev('tool.queued', { ...r, call_id: 'c_3', upstream: 'bing' }),
    ev('tool.exec.started', { ...r, call_id: 'c_3', attempt: 1, timeout_ms: 10000 }),
    ev('tool.output.delta', { ...r, call_id: 'c_1', attempt: 1, index: 0, data: { partial: 'a' } }),
    ev('tool.retrying', { ...r, call_id: 'c_1', attempt: 1, delay_ms: 1000, reason: 'error',
      error: { code: 'upstream', message: '503' } }),
    ev('tool.output.delta', { ...r, call_id: 'c_3', attempt: 1, index: 0, data: { title: 'slow', score: 0.2 } }),
    ev('tool.output.delta', { ...r, call_id: 'c_2', attempt: 1, index: 0, data: { title: 'Acme', score: 0.95 } }),
    ev('tool.short_circuit', { ...r, call_id: 'c_2', cancelled_call_ids: ['c_3'] }),
    ev('tool.cancelled', { ...r, call_id: 'c_3', reason: 'short_circuit', by_call_id: 'c_2',
      partial_output: [{ title: 'slow', score: 0.2 }] }),
    ev('tool.result', { ...r, call_id: 'c_2', output: [{ title: 'Acme', score: 0.95 }], partial: false }),
    ev('tool.exec.started', { ...r, call_id: 'c_1', attempt: 2, timeout_ms: 10000 }),
    ev('tool.output.delta', { ...r, call_id: 'c_1', attempt: 2, index: 0, data: { name: 'Acme' } }),
    ev('tool.output.delta', { ...r, call_id: 'c_1', attempt: 2, index: 1, data: { size: 500 } }),
    ev('tool.timeout', { ...r, call_id: 'c_1', attempt: 2, timeout_ms: 10000, will_retry: false }),
    ev('tool.result', { ...r, call_id: 'c_1', output: [{ name: 'Acme' }, { size: 500 }], partial: true }),
    ev('step.finished', { ...r, step: 1 }),
    ev('step.started', { ...r, step: 2 }),
    ev('tool.call.start', { ...r, call_id: 'c_4', name: 'approve_discount', message_id: 'm_2' }),
    ev('tool.call.end', { ...r, call_id: 'c_4', args: { percent: 15 } }),
    ev('tool.exec.started', { ...r, call_id: 'c_4', attempt: 1, timeout_ms: 10000 }),
    ev('job.pending', { ...r, call_id: 'c_4', job_id: 'j_1', via: 'human' }),
    ev('tool.result', { ...r, call_id: 'c_4', output: { job_id: 'j_1', status: 'pending' }, partial: false }),
    ev('step.finished', { ...r, step: 2 }),
    ev('text.start', { ...r, message_id: 'm_3', role: 'assistant' }),
    ev('text.delta', { ...r, message_id: 'm_3', delta: 'Waiting for approval.' }),
    ev('text.end', { ...r, message_id: 'm_3' }),
    ev('run.finished', { ...r, outcome: 'success' }),
    ev('job.progress', { job_id: 'j_1', progress: 1, total: 2, message: 'seen by a manager' }),
    ev('job.completed', { job_id: 'j_1', status: 'succeeded', output: { approved: true } }),
    ev('run.started', { run_id: 'r_2', trigger: 'job' }),
    ev('text.start', { run_id: 'r_2', message_id: 'm_4', role: 'assistant' }),
    ev('text.delta', { run_id: 'r_2', message_id: 'm_4', delta: 'Approved: 15%.' }),
    ev('text.end', { run_id: 'r_2', message_id: 'm_4' }),
    ev('run.finished', { run_id: 'r_2', outcome: 'success' }),
  ];
}
