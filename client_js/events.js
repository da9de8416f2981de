// @ts-check
/**
 * The DOM events a {@link ToolplexClient} dispatches. Each is a plain `Event`
 * subclass carrying its data on read-only-by-convention properties, so they work
 * the same in browsers and Node.
 *
 * @module events
 */

/** @typedef {import('./toolplex.js').ToolplexEvent} ToolplexEvent */
/** @typedef {import('./toolplex.js').ViewState} ViewState */
/** @typedef {import('./toolplex.js').ConnectionStatus} ConnectionStatus */

/**
 * Type `event`: one logged protocol event, dispatched once (only when `seq` is new).
 *
 * @example
 * client.addEventListener('event', (e) => console.log(e.event.seq, e.event.type));
 */
export class LogEvent extends Event {
  /** @param {ToolplexEvent} event the PROTOCOL.md envelope */
  constructor(event) {
    super('event');
    /** The protocol event. */
    this.event = event;
  }

  /** The protocol event, for code written against `CustomEvent`. */
  get detail() { return this.event; }
}

/**
 * Type `state`: the view model after a logged event was folded into it.
 *
 * @example
 * client.addEventListener('state', (e) => render(e.state));
 */
export class StateEvent extends Event {
  /**
   * @param {ViewState} state the new view model
   * @param {ToolplexEvent | null} event the event that produced it (null for a snapshot)
   */
  constructor(state, event) {
    super('state');
    /** The new view model. */
    this.state = state;
    /** The event that produced it. */
    this.event = event;
  }

  /** The view model, for code written against `CustomEvent`. */
  get detail() { return this.state; }
}

/**
 * Types `hello`, `gap`, `snapshot` and `command-error`: a non-logged frame
 * (`stream.hello`, `stream.gap`, the snapshot after a gap, `command.error`).
 *
 * @example
 * client.addEventListener('command-error', (e) => alert(e.frame.error.message));
 */
export class FrameEvent extends Event {
  /**
   * @param {'hello' | 'gap' | 'snapshot' | 'command-error'} type the DOM event type
   * @param {Record<string, any>} frame the frame as received
   */
  constructor(type, frame) {
    super(type);
    /** The frame as received. */
    this.frame = frame;
  }

  /** The frame, for code written against `CustomEvent`. */
  get detail() { return this.frame; }
}

/**
 * Type `status`: the connection changed state.
 *
 * @example
 * client.addEventListener('status', (e) => { badge.textContent = e.status; });
 */
export class StatusEvent extends Event {
  /**
   * @param {ConnectionStatus} status the new status
   * @param {{attempt?: number, delay?: number, code?: number}} [detail] for `reconnecting`:
   *   the attempt number and the delay in ms; `code`: the close code that caused it
   */
  constructor(status, detail = {}) {
    super('status');
    /** `idle`, `connecting`, `open`, `reconnecting` or `closed`. */
    this.status = status;
    /** Reconnect attempt number (from 0). */
    this.attempt = detail.attempt ?? 0;
    /** Delay before the reconnect, in ms. */
    this.delay = detail.delay ?? 0;
    /** Close code of the connection that ended, when known. */
    this.code = detail.code ?? null;
  }
}

/**
 * Type `error`: something went wrong. `fatal` errors (auth refused) end the
 * connection for good; others are followed by a reconnect.
 *
 * @example
 * client.addEventListener('error', (e) => { if (e.fatal) showLogin(); });
 */
export class ClientErrorEvent extends Event {
  /**
   * @param {{code: string, message: string}} error what happened
   * @param {boolean} fatal true when the client will not reconnect
   */
  constructor(error, fatal) {
    super('error');
    /**
     * `{code, message}`; codes: `auth_refused` (WS close 1008), `oversize` (1009),
     * `http` (SSE refused), `network`, `closed` (reconnect disabled), `session` (create failed).
     */
    this.error = error;
    /** True when the client stopped for good. */
    this.fatal = fatal;
  }
}

/**
 * Wait for a client's connection to open.
 *
 * @param {EventTarget} client a {@link ToolplexClient}
 * @returns {Promise<void>} resolves on status `open`; rejects (with `.code`) on a
 *   fatal `error` or on status `closed` first
 * @example
 * const opened = untilOpen(client);
 * client.connect();
 * await opened;
 */
export function untilOpen(client) {
  return new Promise((resolve, reject) => {
    const settled = new AbortController();
    /** @param {{code: string, message: string} | null} error */
    const done = (error) => {
      settled.abort();
      if (error) reject(Object.assign(new Error(error.message), { code: error.code })); else resolve();
    };
    client.addEventListener('status', (ev) => {
      const { status } = /** @type {StatusEvent} */ (ev);
      if (status === 'open') done(null);
      if (status === 'closed') done({ code: 'closed', message: 'closed before it opened' });
    }, { signal: settled.signal });
    client.addEventListener('error', (ev) => {
      const { error, fatal } = /** @type {ClientErrorEvent} */ (ev);
      if (fatal) done(error);
    }, { signal: settled.signal });
  });
}
