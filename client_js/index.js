// @ts-check
/**
 * toolplex's JS client: named re-exports only. `toolplex.js` is the documented
 * entry point and exports the same names.
 *
 * @module index
 */

export { backoff } from './backoff.js';
export { CALL_STATUSES } from './calls.js';
export { DEFAULTS, ToolplexClient, createSession } from './client.js';
export { ClientErrorEvent, FrameEvent, LogEvent, StateEvent, StatusEvent } from './events.js';
export { SSEMessageEvent, SSEParser, SSEReader, SSE_DEFAULTS } from './sse.js';
export { foldSnapshot, initialState, reduce, replay } from './view.js';
