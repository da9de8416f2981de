// @ts-check
/**
 * The HTTP side of PROTOCOL.md §5: creating a session, and sending commands as
 * HTTP requests when the event stream is SSE (an SSE stream is one-way).
 *
 * @module http
 */

/** @typedef {import('./toolplex.js').Command} Command */

/**
 * Create a session: `POST /v1/sessions`.
 *
 * @param {string} [baseUrl] the server, e.g. `http://127.0.0.1:8000`; '' for this page's origin
 * @param {{fetch?: typeof fetch | null}} [options] an injectable fetch
 * @returns {Promise<{session_id: string, token: string}>} the new session and its token
 * @example
 * const {session_id, token} = await createSession('http://127.0.0.1:8000');
 */
export async function createSession(baseUrl = '', { fetch: fetchImpl = null } = {}) {
  const f = fetchImpl ?? globalThis.fetch.bind(globalThis);
  const res = await f(`${httpBase(baseUrl)}/v1/sessions`, {
    method: 'POST', headers: { 'Content-Type': 'application/json', Accept: 'application/json' }, body: '{}',
  });
  if (!res.ok) throw new Error(`POST /v1/sessions: HTTP ${res.status}`);
  return res.json();
}

/** The HTTP route and body of each command that has one. */
const ROUTES = Object.freeze({
  /** @param {any} c @param {string} sid */
  'run.start': (c, sid) => [`/v1/sessions/${sid}/runs`, { input: c.input }],
  /** @param {any} c @param {string} sid */
  'run.cancel': (c, sid) => [`/v1/sessions/${sid}/runs/${encodeURIComponent(c.run_id)}/cancel`, {}],
  /** @param {any} c @param {string} sid */
  'tool.cancel': (c, sid) => [`/v1/sessions/${sid}/calls/${encodeURIComponent(c.call_id)}/cancel`, {}],
  /** @param {any} c */
  'job.complete': (c) => [`/v1/jobs/${encodeURIComponent(c.job_id)}/complete`, { output: c.output }],
});

/**
 * Whether a command type can be sent over HTTP (`subscribe` cannot: SSE resumes
 * with `Last-Event-ID` instead).
 *
 * @param {string} type a command type
 * @returns {boolean} true for `run.start`, `run.cancel`, `tool.cancel`, `job.complete`
 * @example
 * hasHttpRoute('run.start'); // true
 */
export function hasHttpRoute(type) {
  return Object.hasOwn(ROUTES, type);
}

/**
 * Send one command as its HTTP request (`POST /v1/sessions/{id}/runs` and so on).
 *
 * @param {Command} command a command with an HTTP route
 * @param {{baseUrl: string, sessionId: string, token: string, fetch?: typeof fetch | null}} target
 * @returns {Promise<{error: {code: string, message: string} | null, body: any}>} the
 *   error (null when accepted) and the answer's JSON body (`{run_id}` for `run.start`)
 * @example
 * const {error, body} = await postCommand({type: 'run.start', input: 'hi'},
 *   {baseUrl: '', sessionId: 's_1', token: 't'});
 */
export async function postCommand(command, { baseUrl, sessionId, token, fetch: fetchImpl = null }) {
  const route = /** @type {any} */ (ROUTES)[command.type];
  if (!route) return { error: { code: 'unsupported', message: `${command.type} has no HTTP route` }, body: null };
  const [path, body] = route(command, encodeURIComponent(sessionId));
  const f = fetchImpl ?? globalThis.fetch.bind(globalThis);
  try {
    const res = await f(`${httpBase(baseUrl)}${path}`, {
      method: 'POST', body: JSON.stringify(body),
      headers: {
        Authorization: `Bearer ${token}`, 'Content-Type': 'application/json', Accept: 'application/json',
      },
    });
    const payload = await res.json().catch(() => ({}));
    if (res.ok) return { error: null, body: payload };
    return { error: payload?.error ?? { code: 'http', message: `POST ${path}: HTTP ${res.status}` }, body: payload };
  } catch (err) {
    return { error: { code: 'network', message: String(/** @type {any} */ (err)?.message ?? err) }, body: null };
  }
}

/**
 * The base URL without a trailing slash; this page's origin when `baseUrl` is ''.
 *
 * @param {string} baseUrl as given in the options
 * @returns {string} e.g. `http://127.0.0.1:8000`
 * @example
 * httpBase('http://h:1/'); // 'http://h:1'
 */
export function httpBase(baseUrl) {
  const base = baseUrl || globalThis.location?.origin || '';
  return base.replace(/\/+$/, '');
}
