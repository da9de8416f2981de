// @ts-check
/**
 * Server-Sent Events over `fetch`: an incremental parser and a reader that
 * reconnects and resumes with `Last-Event-ID`. `EventSource` is not used because
 * it cannot send an `Authorization` header and is missing in Node.
 *
 * @module sse
 */

import { backoff } from './backoff.js';

/** @typedef {import('./toolplex.js').SSEMessage} SSEMessage */

/**
 * An incremental `text/event-stream` parser. Feed it bytes or text in chunks of
 * any size (a chunk may end mid-line or mid-character); it returns the messages
 * completed by each chunk.
 *
 * @example
 * const parser = new SSEParser();
 * parser.push('id: 1\nevent: run.sta');
 * parser.push('rted\ndata: {"seq":1}\n\n'); // [{id: '1', event: 'run.started', data: '{"seq":1}'}]
 */
export class SSEParser {
  #decoder = new TextDecoder();
  #buffer = '';
  /** @type {string[]} */
  #data = [];
  #event = '';
  /** @type {string | undefined} */
  #id = undefined;
  /** The last `id:` seen, kept across messages and reconnects (the resume cursor). */
  lastEventId = '';
  /** The last `retry:` the server asked for, in ms, or null. @type {number | null} */
  retry = null;

  /**
   * @param {string | Uint8Array} chunk the next piece of the stream
   * @returns {SSEMessage[]} the messages this chunk completed, in order
   */
  push(chunk) {
    this.#buffer += typeof chunk === 'string' ? chunk : this.#decoder.decode(chunk, { stream: true });
    /** @type {SSEMessage[]} */
    const out = [];
    let nl;
    while ((nl = this.#buffer.indexOf('\n')) >= 0) {
      const line = this.#buffer.slice(0, nl).replace(/\r$/, '');
      this.#buffer = this.#buffer.slice(nl + 1);
      const message = this.#line(line);
      if (message) out.push(message);
    }
    return out;
  }

  /** Forget a half-received message (the connection dropped); `lastEventId` stays. */
  reset() {
    this.#decoder = new TextDecoder();
    this.#buffer = '';
    this.#data = [];
    this.#event = '';
    this.#id = undefined;
  }

  /**
   * @param {string} line one line without its terminator
   * @returns {SSEMessage | null} a message when the line was the blank line ending one
   */
  #line(line) {
    if (line === '') return this.#dispatch();
    // A line starting with ':' is a comment: the server's heartbeat.
    if (line.startsWith(':')) return null;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') this.#data.push(value);
    else if (field === 'event') this.#event = value;
    else if (field === 'id' && !value.includes('\0')) this.#id = value;
    else if (field === 'retry' && /^\d+$/.test(value)) this.retry = Number(value);
    return null;
  }

  /** @returns {SSEMessage | null} */
  #dispatch() {
    const id = this.#id;
    if (id !== undefined) this.lastEventId = id;
    const message = this.#data.length
      ? { id, event: this.#event || 'message', data: this.#data.join('\n') }
      : null;
    this.#data = [];
    this.#event = '';
    this.#id = undefined;
    return message;
  }
}

/**
 * Default options of {@link SSEReader}.
 *
 * @example
 * new SSEReader(url, {...SSE_DEFAULTS, headers: {Authorization: 'Bearer t'}});
 */
/** @type {Readonly<import('./toolplex.js').SSEReaderOptions>} */
export const SSE_DEFAULTS = Object.freeze({
  /** @type {typeof fetch | null} null: the global fetch */
  fetch: null,
  /** @type {Record<string, string>} */
  headers: Object.freeze({}),
  /** Resume cursor for the first request (a seq as text); '' for "from the start". */
  lastEventId: '',
  reconnect: true,
  backoff: Object.freeze({ base: 500, max: 15_000, jitter: /** @type {boolean | (() => number)} */ (true) }),
});

/** HTTP statuses after which reconnecting cannot help. */
const FATAL = new Set([400, 401, 403, 404, 410]);

/**
 * Reads an SSE endpoint with `fetch`, reconnecting with backoff and resuming from
 * the last `id:` seen via `Last-Event-ID`. Dispatches `open`, `message` (a
 * {@link SSEMessageEvent}), `reconnecting`, `error` and `close`.
 *
 * @example
 * const reader = new SSEReader('/v1/sessions/s_1/events', {headers: {Authorization: 'Bearer t'}});
 * reader.addEventListener('message', (e) => console.log(e.id, e.event, JSON.parse(e.data)));
 * reader.start();
 */
export class SSEReader extends EventTarget {
  #url;
  #o;
  #parser = new SSEParser();
  /** @type {AbortController | null} */
  #abort = null;
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  #timer = undefined;
  #attempt = 0;
  #open = false;
  #closed = true;

  /**
   * @param {string} url the events URL
   * @param {Partial<import('./toolplex.js').SSEReaderOptions>} [options] merged over
   *   {@link SSE_DEFAULTS}
   */
  constructor(url, options = {}) {
    super();
    this.#url = url;
    this.#o = { ...SSE_DEFAULTS, ...options, backoff: { ...SSE_DEFAULTS.backoff, ...options.backoff } };
    this.#parser.lastEventId = String(this.#o.lastEventId ?? '');
  }

  /** The resume cursor sent as `Last-Event-ID` on the next connect. */
  get lastEventId() { return this.#parser.lastEventId; }

  /** True while a response body is being read. */
  get open() { return this.#open; }

  /** Start reading (no-op when already started). */
  start() {
    if (!this.#closed) return;
    this.#closed = false;
    this.#connect();
  }

  /** Stop reading and never reconnect. */
  close() {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#abort?.abort();
    this.#open = false;
    this.dispatchEvent(new Event('close'));
  }

  async #connect() {
    const abort = new AbortController();
    this.#abort = abort;
    this.#parser.reset();
    /** @type {Record<string, string>} */
    const headers = { Accept: 'text/event-stream', ...this.#o.headers };
    // [protocol] resume with Last-Event-ID: the server replays everything after it.
    if (this.#parser.lastEventId) headers['Last-Event-ID'] = this.#parser.lastEventId;
    const fetchImpl = this.#o.fetch ?? globalThis.fetch.bind(globalThis);
    try {
      const res = await fetchImpl(this.#url, { headers, signal: abort.signal, cache: 'no-store' });
      if (!res.ok || !res.body) {
        const error = { code: 'http', message: `GET events: HTTP ${res.status}` };
        if (FATAL.has(res.status)) return this.#fatal(error);
        return this.#retry(error);
      }
      this.#open = true;
      this.dispatchEvent(new Event('open'));
      const reader = res.body.getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done || this.#closed) break;
        for (const message of this.#parser.push(value)) {
          this.#attempt = 0;
          this.dispatchEvent(new SSEMessageEvent(message, this.#parser.lastEventId));
          if (this.#closed || this.#abort !== abort) return;
        }
      }
      this.#open = false;
      this.#retry({ code: 'network', message: 'event stream ended' });
    } catch (err) {
      this.#open = false;
      if (this.#closed || this.#abort !== abort) return;
      this.#retry({ code: 'network', message: String(/** @type {any} */ (err)?.message ?? err) });
    }
  }

  /** @param {{code: string, message: string}} error */
  #retry(error) {
    if (this.#closed) return;
    if (!this.#o.reconnect) return this.#fatal(error);
    // A server `retry:` is a floor, not a replacement for growing backoff.
    const delay = Math.max(this.#parser.retry ?? 0, backoff(this.#attempt, this.#o.backoff));
    const detail = { error, attempt: this.#attempt, delay };
    this.#attempt += 1;
    this.dispatchEvent(Object.assign(new Event('reconnecting'), detail));
    this.#timer = setTimeout(() => { if (!this.#closed) this.#connect(); }, delay);
  }

  /** @param {{code: string, message: string}} error */
  #fatal(error) {
    this.dispatchEvent(Object.assign(new Event('error'), { error, fatal: true }));
    this.close();
  }
}

/**
 * Type `message`: one SSE message.
 *
 * @example
 * reader.addEventListener('message', (e) => console.log(e.event, e.data));
 */
export class SSEMessageEvent extends Event {
  /**
   * @param {SSEMessage} message the parsed message
   * @param {string} lastEventId the reader's cursor after it
   */
  constructor(message, lastEventId) {
    super('message');
    /** The message's own `id:` (undefined when it had none). */
    this.id = message.id;
    /** The `event:` name (`message` when absent). */
    this.event = message.event;
    /** The `data:` lines joined with LF. */
    this.data = message.data;
    /** The reader's resume cursor after this message. */
    this.lastEventId = lastEventId;
  }
}
