// @ts-check
/**
 * The toolplex client: one session's event log over WebSocket (or SSE), with
 * reconnect, resume from the last `seq`, commands, and the folded view model.
 *
 * @module client
 */

import { backoff } from './backoff.js';
import { ClientErrorEvent, FrameEvent, LogEvent, StateEvent, StatusEvent, untilOpen } from './events.js';
import { createSession, hasHttpRoute, httpBase, postCommand } from './http.js';
import { SSEReader } from './sse.js';
import { foldSnapshot, initialState, reduce } from './view.js';

export { backoff, createSession };

/** @typedef {import('./toolplex.js').ClientOptions} ClientOptions */
/** @typedef {import('./toolplex.js').Command} Command */
/** @typedef {import('./toolplex.js').ConnectionStatus} ConnectionStatus */
/** @typedef {import('./toolplex.js').ViewState} ViewState */

/**
 * Default client options; `new ToolplexClient(options)` merges over them.
 *
 * @type {Readonly<ClientOptions>}
 * @example
 * new ToolplexClient({...DEFAULTS, transport: 'sse'});
 */
export const DEFAULTS = Object.freeze({
  baseUrl: '',
  token: '',
  sessionId: '',
  transport: /** @type {'auto' | 'ws' | 'sse'} */ ('auto'),
  WebSocket: null,
  fetch: null,
  reconnect: true,
  backoff: Object.freeze({ base: 500, max: 15_000, jitter: /** @type {boolean | (() => number)} */ (true) }),
  state: null,
});

/** WebSocket close codes the client acts on (4008, reader too slow, just resumes). */
const CLOSE = Object.freeze({ NORMAL: 1000, AUTH_REFUSED: 1008, OVERSIZE: 1009 });

/**
 * A client for one session. Dispatches `event` ({@link LogEvent}, once per new
 * seq), `state` ({@link StateEvent}), `hello`/`gap`/`snapshot`/`command-error`
 * ({@link FrameEvent}), `status` ({@link StatusEvent}) and `error` ({@link ClientErrorEvent}).
 *
 * @example
 * const client = new ToolplexClient({baseUrl: 'http://127.0.0.1:8000'});
 * client.addEventListener('state', (e) => render(e.state));
 * await client.connect();           // creates a session when none is given
 * const runId = await client.run('Enrich acme.com');  // once the server accepted it
 */
export class ToolplexClient extends EventTarget {
  /** @type {ClientOptions} */
  #o;
  /** @type {ViewState} */
  #state;
  #sessionId;
  #token;
  /** @type {'ws' | 'sse'} */
  #transport;
  /** @type {any} */
  #ws = null;
  /** @type {SSEReader | null} */
  #sse = null;
  /** @type {Command[]} */
  #queue = [];
  #attempt = 0;
  /** @type {unknown[]} the messages of a snapshot's parts so far (`more: true`) */
  #snapshotParts = [];
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  #timer = undefined;
  /** @type {ConnectionStatus} */
  #status = 'idle';
  #closed = true;
  #http = Promise.resolve();
  #refs = 0;
  /** @type {Map<string, {resolve: (runId: string) => void, reject: (err: Error) => void, sent: boolean}>} */
  #pending = new Map();

  /** @param {Partial<ClientOptions>} [options] merged over {@link DEFAULTS} */
  constructor(options = {}) {
    super();
    this.#o = { ...DEFAULTS, ...options, backoff: { ...DEFAULTS.backoff, ...options.backoff } };
    this.#state = this.#o.state ?? initialState();
    this.#sessionId = this.#o.sessionId;
    this.#token = this.#o.token;
    const hasWs = typeof (this.#o.WebSocket ?? globalThis.WebSocket) === 'function';
    this.#transport = this.#o.transport === 'sse' || (this.#o.transport === 'auto' && !hasWs) ? 'sse' : 'ws';
  }

  /** The view model so far. @returns {ViewState} */
  get state() { return this.#state; }
  /** The resume cursor: the highest seq applied. @returns {number} */
  get lastSeq() { return this.#state.lastSeq; }
  /** @returns {string} the session id ('' until connect() created one) */
  get sessionId() { return this.#sessionId; }
  /** @returns {string} the session token */
  get token() { return this.#token; }
  /** @returns {ConnectionStatus} the connection status */
  get status() { return this.#status; }
  /** @returns {'ws' | 'sse'} the transport in use */
  get transport() { return this.#transport; }

  /**
   * Open the connection (creating a session first when none was given). Resolves
   * when the first connection is open; rejects on a fatal error.
   *
   * @returns {Promise<this>} this client
   */
  connect() {
    if (!this.#closed) return Promise.resolve(this);
    if (this.#transport === 'ws' && typeof (this.#o.WebSocket ?? globalThis.WebSocket) !== 'function') {
      // Retrying cannot help: there is nothing to open a WebSocket with.
      const error = {
        code: 'no_websocket',
        message: "transport 'ws' needs a WebSocket implementation: pass {WebSocket} "
          + "(in Node, the 'ws' package's) or use transport 'sse'",
      };
      this.dispatchEvent(new ClientErrorEvent(error, true));
      return Promise.reject(Object.assign(new Error(error.message), { code: error.code }));
    }
    this.#closed = false;
    this.#attempt = 0;
    const opened = untilOpen(this);
    this.#start().catch((err) => {
      this.dispatchEvent(new ClientErrorEvent({ code: 'session', message: String(err?.message ?? err) }, true));
      this.close();
    });
    return opened.then(() => this);
  }

  /** Close the connection for good (nothing is cancelled on the server). */
  close() {
    this.#closed = true;
    clearTimeout(this.#timer);
    const ws = this.#ws;
    this.#ws = null;
    ws?.close(CLOSE.NORMAL);
    this.#sse?.close();
    this.#sse = null;
    this.#settleAll({ code: 'closed', message: 'the client was closed before the server answered' });
    this.#setStatus('closed');
  }

  /**
   * Send a command now, or queue it until the connection is (re)opened.
   *
   * @param {Command} command a PROTOCOL.md command
   * @returns {'sent' | 'queued'} what happened to it
   */
  send(command) {
    if (this.#transport === 'sse' && !hasHttpRoute(command.type)) {
      throw new TypeError(`${command.type} cannot be sent over HTTP`);
    }
    if (this.#status !== 'open') {
      this.#queue.push(command);
      return 'queued';
    }
    this.#deliver(command);
    return 'sent';
  }

  /**
   * Start a run (sent now, or queued until the connection is open).
   *
   * @param {string | object[]} input text or chat messages
   * @returns {Promise<string>} the run id, once the server accepted the run; rejects
   *   with the refusal (`.code`, e.g. `run_active`), which is also dispatched as
   *   `command-error`
   */
  run(input) {
    this.#refs += 1;
    const ref = `run-${this.#refs}`;
    /** @type {Promise<string>} */
    const accepted = new Promise((resolve, reject) => {
      this.#pending.set(ref, { resolve, reject, sent: false });
    });
    // A caller that only listens to events need not handle the promise.
    accepted.catch(() => {});
    this.send({ type: 'run.start', input, ref });
    return accepted;
  }
  /** @param {string} runId the run to cancel @returns {'sent' | 'queued'} */
  cancel(runId) { return this.send({ type: 'run.cancel', run_id: runId }); }
  /** @param {string} callId the tool call to cancel @returns {'sent' | 'queued'} */
  cancelCall(callId) { return this.send({ type: 'tool.cancel', call_id: callId }); }
  /** @param {string} jobId a human job @param {unknown} output its result @returns {'sent' | 'queued'} */
  completeJob(jobId, output) { return this.send({ type: 'job.complete', job_id: jobId, output }); }

  async #start() {
    if (!this.#sessionId) {
      const session = await createSession(this.#o.baseUrl, { fetch: this.#o.fetch });
      this.#sessionId = session.session_id;
      this.#token = session.token;
    }
    if (!this.#closed) this.#open();
  }

  #open() {
    this.#setStatus(this.#attempt ? 'reconnecting' : 'connecting', { attempt: this.#attempt });
    if (this.#transport === 'sse') this.#openSse(); else this.#openWs();
  }

  #openWs() {
    const WS = this.#o.WebSocket ?? globalThis.WebSocket;
    const base = httpBase(this.#o.baseUrl).replace(/^http/, 'ws');
    // [protocol] the cursor rides in the URL: a connection without one starts at after=0.
    const url = `${base}${this.#path('ws')}?token=${encodeURIComponent(this.#token)}`
      + `&after=${this.lastSeq}`;
    let ws;
    try { ws = new WS(url); } catch { return this.#reconnect(); }
    this.#ws = ws;
    // Browsers follow an error with a close; Node's `ws` throws on an unhandled 'error'.
    ws.onerror = () => {};
    ws.onopen = () => {
      // The server replays everything after the URL's cursor, then goes live.
      this.#setStatus('open');
      this.#flush();
    };
    ws.onmessage = (/** @type {{data: any}} */ m) => {
      let frame;
      try {
        frame = JSON.parse(typeof m.data === 'string' ? m.data : new TextDecoder().decode(m.data));
      } catch { return; /* not JSON: nothing the protocol sends */ }
      this.#onFrame(frame);
    };
    ws.onclose = (/** @type {{code: number, reason?: string}} */ c) => {
      if (ws !== this.#ws) return;
      this.#ws = null;
      this.#settleAll({
        code: 'disconnected',
        message: 'the connection closed before the server answered: the run may have started',
      }, true);
      if (c.code === CLOSE.AUTH_REFUSED) {
        this.#fail({ code: 'auth_refused', message: c.reason || 'the server refused the token' });
      } else {
        if (c.code === CLOSE.OVERSIZE) {
          const error = { code: 'oversize', message: c.reason || 'a frame was too large' };
          this.dispatchEvent(new ClientErrorEvent(error, false));
        }
        // Any other close, 4008 (reader too slow) included: reconnect and resume.
        this.#reconnect(c.code);
      }
    };
  }

  #openSse() {
    const reader = new SSEReader(`${httpBase(this.#o.baseUrl)}${this.#path('events')}`, {
      fetch: this.#o.fetch, headers: this.#auth(), reconnect: this.#o.reconnect,
      backoff: this.#o.backoff, lastEventId: this.lastSeq ? String(this.lastSeq) : '',
    });
    this.#sse = reader;
    reader.addEventListener('open', () => { this.#setStatus('open'); this.#flush(); });
    reader.addEventListener('message', (ev) => {
      const { data, event } = /** @type {import('./sse.js').SSEMessageEvent} */ (ev);
      let frame;
      try { frame = JSON.parse(data); } catch { return; }
      if (frame && typeof frame === 'object' && !frame.type) frame.type = event;
      this.#onFrame(frame);
    });
    reader.addEventListener('reconnecting', (ev) => {
      const { attempt, delay } = /** @type {any} */ (ev);
      this.#setStatus('reconnecting', { attempt, delay });
    });
    reader.addEventListener('error', (ev) => {
      if (reader === this.#sse) this.#fail(/** @type {any} */ (ev).error);
    });
    reader.start();
  }

  /** @param {any} frame a parsed frame */
  #onFrame(frame) {
    if (!frame || typeof frame !== 'object') return;
    if (frame.type === 'stream.hello') {
      this.#attempt = 0;
      this.#snapshotParts = [];
      this.dispatchEvent(new FrameEvent('hello', frame));
    } else if (frame.type === 'stream.gap') {
      this.#snapshotParts = [];  // a new gap starts a new snapshot
      this.dispatchEvent(new FrameEvent('gap', frame));
    } else if (frame.type === 'stream.snapshot' || frame.type === 'snapshot') {
      for (const event of Array.isArray(frame.events) ? frame.events : []) this.#apply(event);
      // [protocol] the snapshot's messages are the conversation the gap took away; a
      // history over max_event_bytes comes in parts, every one but the last `more: true`,
      // concatenated before it is folded (a part's message indexes start at 0 again).
      const messages = Array.isArray(frame.messages) ? frame.messages : [];
      if (frame.more === true) {
        this.#snapshotParts.push(...messages);
        this.dispatchEvent(new FrameEvent('snapshot', frame));
        return;
      }
      const whole = { ...frame, messages: [...this.#snapshotParts, ...messages] };
      this.#snapshotParts = [];
      const next = foldSnapshot(this.#state, whole);
      if (next !== this.#state) {
        this.#state = next;
        this.dispatchEvent(new StateEvent(this.#state, null));
      }
      this.dispatchEvent(new FrameEvent('snapshot', frame));
    } else if (typeof frame.seq === 'number') {
      this.#apply(frame);
    } else if (frame.type === 'command.ok') {
      this.#settle(frame.ref, null, frame.run_id);
    } else if (frame.type === 'command.error' || (frame.error && typeof frame.error === 'object')) {
      this.#settle(frame.ref, frame.error);
      this.dispatchEvent(new FrameEvent('command-error', frame));
    }
  }

  /**
   * Resolve or reject the `run()` waiting for the answer to command `ref`.
   *
   * @param {unknown} ref
   * @param {{code: string, message: string} | null} error
   * @param {string} [runId]
   */
  #settle(ref, error, runId) {
    const waiting = typeof ref === 'string' ? this.#pending.get(ref) : undefined;
    if (!waiting) return;
    this.#pending.delete(/** @type {string} */ (ref));
    if (error) waiting.reject(Object.assign(new Error(error.message), { code: error.code }));
    else waiting.resolve(runId ?? '');
  }

  /**
   * @param {{code: string, message: string}} error
   * @param {boolean} [sentOnly] only the commands that went out (queued ones still will)
   */
  #settleAll(error, sentOnly = false) {
    for (const [ref, waiting] of [...this.#pending]) {
      if (!sentOnly || waiting.sent) this.#settle(ref, error);
    }
  }

  /** @param {any} event a logged event */
  #apply(event) {
    // [protocol] seq is gapless and the only cursor: a replayed seq was already shown.
    if (!event || typeof event.seq !== 'number' || event.seq <= this.#state.lastSeq) return;
    this.#state = reduce(this.#state, event);
    this.dispatchEvent(new LogEvent(event));
    this.dispatchEvent(new StateEvent(this.#state, event));
  }

  #flush() {
    const queued = this.#queue;
    this.#queue = [];
    for (const command of queued) this.#deliver(command);
  }

  /** @param {Command} command */
  #deliver(command) {
    const waiting = command.ref ? this.#pending.get(command.ref) : undefined;
    if (waiting) waiting.sent = true;
    if (this.#transport === 'ws') { this.#ws.send(JSON.stringify(command)); return; }
    // Over HTTP, keep commands in order: each request starts after the previous one ends.
    this.#http = this.#http.then(() => this.#post(command));
  }

  /** @param {Command} command */
  async #post(command) {
    const { baseUrl, fetch } = this.#o;
    const { error, body } = await postCommand(command, { baseUrl, fetch, sessionId: this.#sessionId, token: this.#token });
    if (!error) { this.#settle(command.ref, null, body?.run_id); return; }
    this.#settle(command.ref, error);
    this.dispatchEvent(new FrameEvent('command-error', { type: 'command.error', error, ref: command.ref ?? command.type }));
  }

  /** @param {number} [code] the close code that ended the last connection */
  #reconnect(code) {
    if (this.#closed) return;
    if (!this.#o.reconnect) return this.#fail({ code: 'closed', message: `connection closed (${code})` });
    const delay = backoff(this.#attempt, this.#o.backoff);
    this.#setStatus('reconnecting', { attempt: this.#attempt, delay, code });
    this.#attempt += 1;
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => { if (!this.#closed) this.#open(); }, delay);
  }

  /** @param {{code: string, message: string}} error */
  #fail(error) {
    this.dispatchEvent(new ClientErrorEvent(error, true));
    this.close();
  }

  /**
   * @param {ConnectionStatus} status
   * @param {{attempt?: number, delay?: number, code?: number}} [detail]
   */
  #setStatus(status, detail) {
    if (status === this.#status && status !== 'reconnecting') return;
    this.#status = status;
    this.dispatchEvent(new StatusEvent(status, detail));
  }

  /** @param {string} tail @returns {string} */
  #path(tail) { return `/v1/sessions/${encodeURIComponent(this.#sessionId)}/${tail}`; }

  /** @returns {Record<string, string>} */
  #auth() { return this.#token ? { Authorization: `Bearer ${this.#token}` } : {}; }
}
