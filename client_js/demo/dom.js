// @ts-check
/**
 * Tiny DOM helpers for the demo: build elements without innerHTML (every text
 * from the server goes in as text, never as markup) and format values.
 *
 * @module demo/dom
 */

/** @typedef {string | number | Node | null | undefined | false | Child[]} Child */

/**
 * Create an element. Attributes set with setAttribute (`true` for a bare one,
 * null/false/undefined skipped); `on<event>` functions become listeners.
 *
 * @param {string} tag the element name
 * @param {Record<string, any>} [attrs] attributes, `data-*` included
 * @param {...Child} children text or nodes, nested arrays flattened
 * @returns {HTMLElement} the element
 * @example
 * h('button', {class: 'ghost', onclick: () => go()}, 'Go');
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value == null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

/**
 * Replace an element's children; unlike `replaceChildren`, null/false children are
 * skipped instead of becoming the text "null".
 *
 * @param {Element} el the element to refill
 * @param {...Child} children text or nodes, nested arrays flattened
 * @returns {void}
 * @example
 * fill(card, header, maybeNull, footer);
 */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

/**
 * @param {Node} el
 * @param {Child[]} children
 */
function append(el, children) {
  for (const child of children) {
    if (child == null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.appendChild(typeof child === 'object' ? child : document.createTextNode(String(child)));
  }
}

/**
 * Compact JSON for display, cut at `max` characters.
 *
 * @param {unknown} value any JSON value
 * @param {number} [max] the longest string returned
 * @returns {string} the text
 * @example
 * json({a: 1}); // '{"a":1}'
 */
export function json(value, max = 600) {
  let text;
  try { text = typeof value === 'string' ? value : JSON.stringify(value); } catch { text = String(value); }
  text = text ?? String(value);
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/** A URL in running text; trailing punctuation is not part of it. */
const URL_RE = /\bhttps?:\/\/[^\s<>"']*[^\s<>"'.,;:!?)\]]/g;

/**
 * Text as nodes, with each http(s) URL an `<a>` that opens in a new tab.
 *
 * @param {string} text any text
 * @returns {Node[]} text nodes and links, in order
 * @example
 * el.replaceChildren(...linkify('see https://acme.com.'));
 */
export function linkify(text) {
  /** @type {Node[]} */
  const out = [];
  let last = 0;
  for (const m of text.matchAll(URL_RE)) {
    const at = m.index ?? 0;
    if (at > last) out.push(document.createTextNode(text.slice(last, at)));
    out.push(h('a', { href: m[0], target: '_blank', rel: 'noopener noreferrer' }, m[0]));
    last = at + m[0].length;
  }
  if (last < text.length) out.push(document.createTextNode(text.slice(last)));
  return out;
}

/**
 * JSON for reading: indented, strings as they are.
 *
 * @param {unknown} value any JSON value
 * @returns {string} the text
 * @example
 * pretty({a: 1}); // '{\n  "a": 1\n}'
 */
export function pretty(value) {
  if (typeof value === 'string') return value;
  try { return JSON.stringify(value, null, 2) ?? String(value); } catch { return String(value); }
}

/**
 * A duration for people: `850 ms`, `1.2 s`, `2 min 5 s`.
 *
 * @param {number} ms milliseconds
 * @returns {string} the text
 * @example
 * duration(1500); // '1.5 s'
 */
export function duration(ms) {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)} s`;
  return `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`;
}
