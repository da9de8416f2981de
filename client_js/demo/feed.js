// @ts-check
/**
 * The conversation: one group per run (its trigger, the user's input, streamed
 * assistant messages, a card per tool call, how the run ended). Elements are
 * keyed by id and only redrawn when their view object changed, which the
 * reducer's structural sharing makes a reference comparison.
 *
 * @module demo/feed
 */

import { createCard, renderCard } from './cards.js';
import { fill, h, json, linkify } from './dom.js';
import { renderMarkdown } from './markdown.js';

/** @typedef {import('../toolplex.js').ViewState} ViewState */
/** @typedef {import('../toolplex.js').RunView} RunView */
/** @typedef {import('../toolplex.js').MessageView} MessageView */
/** @typedef {import('./cards.js').Actions} Actions */

const TRIGGERS = { user: 'You asked', job: 'A job finished: new turn', resume: 'Resumed' };

/**
 * Renders the view model's feed into a list element.
 *
 * @example
 * const feed = new Feed(document.querySelector('#feed'), actions);
 * client.addEventListener('state', (e) => feed.render(e.state));
 */
export class Feed {
  #root;
  #actions;
  /** @type {Map<string, {el: HTMLElement, value: unknown}>} */
  #nodes = new Map();
  /** @type {Map<string, HTMLElement>} */
  #bodies = new Map();

  /**
   * @param {HTMLElement} root the list to fill
   * @param {Actions} actions what card buttons do
   */
  constructor(root, actions) {
    this.#root = root;
    this.#actions = actions;
  }

  /** Draw every item again on the next render (the markdown renderer just loaded). */
  invalidate() {
    for (const node of this.#nodes.values()) node.value = null;
  }

  /** Forget everything drawn (a new session). */
  reset() {
    this.#nodes.clear();
    this.#bodies.clear();
    fill(this.#root);
  }

  /**
   * Draw what changed since the last call.
   *
   * @param {ViewState} state the view model
   * @returns {boolean} true when something was added or redrawn: the page may have grown,
   *   so a caller following the bottom scrolls (a card's chunks grow it as much as a message)
   */
  render(state) {
    let changed = false;
    for (const item of state.feed) {
      const key = `${item.kind}:${item.id}`;
      const value = item.kind === 'run' ? state.runs[item.id]
        : item.kind === 'message' ? state.messages[item.id] : state.calls[item.id];
      let node = this.#nodes.get(key);
      if (!node) {
        node = { el: this.#create(item.kind, value, state), value: null };
        this.#nodes.set(key, node);
      }
      if (node.value !== value) {
        node.value = value;
        this.#update(item.kind, node.el, value, state);
        changed = true;
      }
    }
    return changed;
  }

  /**
   * @param {string} kind
   * @param {any} value
   * @param {ViewState} state
   * @returns {HTMLElement}
   */
  #create(kind, value, state) {
    if (kind === 'run') {
      const body = h('div', { class: 'run-body' });
      const el = h('li', { class: 'run', 'data-run-id': value.id, 'data-trigger': value.trigger },
        h('div', { class: 'run-head' }), body, h('div', { class: 'run-foot' }));
      this.#bodies.set(value.id, body);
      this.#root.appendChild(el);
      return el;
    }
    const el = kind !== 'message' ? createCard(value)
      // Reasoning is shown collapsed: a summary line the user may open.
      : value.role === 'reasoning'
        ? h('details', { class: 'msg reasoning', 'data-message-id': value.id,
          'data-role': 'reasoning' }, h('summary', {}, 'Reasoning'), h('div', { class: 'body' }))
        : h('div', { class: 'msg', 'data-message-id': value.id, 'data-role': value.role });
    this.#bodyFor(value.runId, state).appendChild(el);
    return el;
  }

  /**
   * The run group an item goes in; items whose run was lost in a gap share one.
   *
   * @param {string | null} runId
   * @param {ViewState} state
   * @returns {HTMLElement}
   */
  #bodyFor(runId, state) {
    const body = runId ? this.#bodies.get(runId) : null;
    if (body) return body;
    const key = runId && !state.runs[runId] ? `orphan:${runId}` : 'orphan';
    let orphan = this.#bodies.get(key);
    if (!orphan) {
      orphan = h('div', { class: 'run-body' });
      // Messages with no run: the conversation before a gap, from the snapshot's history.
      this.#root.appendChild(h('li', { class: 'run orphan' },
        h('div', { class: 'run-sep' }, h('span', {}, 'Earlier in this conversation')), orphan));
      this.#bodies.set(key, orphan);
    }
    return orphan;
  }

  /**
   * @param {string} kind
   * @param {HTMLElement} el
   * @param {any} value
   * @param {ViewState} state
   */
  #update(kind, el, value, state) {
    if (kind === 'run') return renderRun(el, value, state);
    if (kind === 'call') return renderCard(el, value, state, this.#actions);
    const m = /** @type {MessageView} */ (value);
    el.dataset.role = m.role;
    el.dataset.status = m.status;
    if (m.snapshot) el.dataset.snapshot = 'true';
    const body = m.role === 'reasoning' ? el.querySelector('.body') : null;
    if (body) body.textContent = m.text;
    else if (m.role === 'assistant') renderMarkdown(el, m.text);
    else el.replaceChildren(...linkify(m.text));
    if (m.tools?.length) el.appendChild(h('p', { class: 'msg-tools muted' }, `Called ${m.tools.join(', ')}.`));
  }
}

/**
 * @param {HTMLElement} el the run group
 * @param {RunView} run
 * @param {ViewState} state
 */
function renderRun(el, run, state) {
  el.dataset.status = run.status;
  const time = new Date(run.startedAt).toLocaleTimeString();
  const hasUserText = run.messageIds.some((id) => state.messages[id]?.role === 'user');
  const input = run.trigger === 'user' && run.input !== undefined && !hasUserText
    ? h('div', { class: 'msg user', 'data-role': 'user', 'data-run-input': run.id }, inputText(run.input))
    : null;
  const head = /** @type {HTMLElement} */ (el.querySelector('.run-head'));
  fill(head,
    h('div', { class: 'run-sep', 'data-trigger': run.trigger },
      h('span', {}, `${TRIGGERS[run.trigger] ?? run.trigger} · ${time}`)),
    input,
  );
  const foot = /** @type {HTMLElement} */ (el.querySelector('.run-foot'));
  fill(foot, footer(run, state));
}

/**
 * @param {RunView} run
 * @param {ViewState} state
 */
function footer(run, state) {
  if (run.status === 'running') {
    // From the send to the first text or call: say the model is working on it.
    const started = run.messageIds.length > 0 || run.callIds.length > 0;
    return started ? null : h('p', { class: 'thinking', 'aria-live': 'polite' }, 'Thinking…');
  }
  if (run.status === 'error' && run.error?.code === 'interrupted') {
    return h('p', { class: 'run-end error', 'data-outcome': 'interrupted' },
      'Interrupted: the server stopped before this run ended.');
  }
  if (run.status === 'error') {
    return h('p', { class: 'run-end error', 'data-outcome': 'error' },
      `Run failed: ${run.error?.code}: ${run.error?.message}`);
  }
  const seconds = run.finishedAt && ((run.finishedAt - run.startedAt) / 1000).toFixed(1);
  const text = run.outcome === 'cancelled' ? 'Run cancelled' : 'Run finished';
  return h('p', { class: 'run-end', 'data-outcome': run.outcome }, `${text} in ${seconds} s`);
}

/**
 * @param {unknown} input a run's input: text, or a list of chat messages
 * @returns {string} what the person wrote
 */
function inputText(input) {
  if (typeof input === 'string') return input;
  if (Array.isArray(input)) {
    const last = [...input].reverse().find((m) => m && m.role === 'user');
    if (last) return typeof last.content === 'string' ? last.content : json(last.content);
  }
  return json(input);
}
