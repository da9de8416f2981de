// @ts-check
/**
 * toolplex's JS client, the entry point: a streaming agent session over WebSocket
 * (SSE as fallback) that reconnects, resumes from the last `seq`, and folds
 * events into a view model. Types: `toolplex.d.ts`.
 *
 * @example
 * import { ToolplexClient } from '/static/toolplex.js';
 * const client = new ToolplexClient();
 * client.addEventListener('state', (e) => render(e.state));
 * await client.connect();
 * client.run('Enrich acme.com');
 *
 * @module toolplex
 */

export { backoff } from './backoff.js';
export { CALL_STATUSES } from './calls.js';
export { DEFAULTS, ToolplexClient, createSession } from './client.js';
export { ClientErrorEvent, FrameEvent, LogEvent, StateEvent, StatusEvent } from './events.js';
export { SSEMessageEvent, SSEParser, SSEReader, SSE_DEFAULTS } from './sse.js';
export { foldSnapshot, initialState, reduce, replay } from './view.js';
