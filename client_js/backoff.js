// @ts-check
/**
 * The reconnect delay schedule, shared by the WebSocket client and the SSE reader.
 *
 * @module backoff
 */

/**
 * How long to wait before reconnect attempt number `attempt` (0 for the first retry):
 * `base * 2^attempt` capped at `max`, with "equal jitter" (half fixed, half random)
 * so many tabs reconnecting after a server restart spread out instead of arriving
 * together, yet never retry at 0 ms. Pure when `jitter` is `false` or a function.
 *
 * @param {number} attempt how many reconnects were already tried since the last success
 * @param {{base?: number, max?: number, jitter?: boolean | (() => number)}} [options]
 *   `base` ms (500), `max` ms (15000), `jitter`: `true` for Math.random, `false` for
 *   none, or a function returning a number in [0, 1)
 * @returns {number} the delay in whole milliseconds
 * @example
 * backoff(0, {base: 500, max: 8000, jitter: false}); // 500
 * backoff(3, {base: 500, max: 8000, jitter: false}); // 4000
 * backoff(9, {base: 500, max: 8000, jitter: false}); // 8000
 * backoff(2, {base: 500, jitter: () => 0});          // 1000 (half of 2000)
 */
export function backoff(attempt, { base = 500, max = 15_000, jitter = true } = {}) {
  const ceiling = Math.min(max, base * 2 ** Math.max(0, Math.min(attempt, 30)));
  if (jitter === false) return Math.round(ceiling);
  const random = typeof jitter === 'function' ? jitter() : Math.random();
  return Math.round(ceiling / 2 + (ceiling / 2) * Math.min(Math.max(random, 0), 1));
}
