// @ts-check
// The Vercel AI SDK's own client code against a live toolplex server's
// POST /v1/ai-sdk/chat: DefaultChatTransport (the request useChat sends, and its
// uiMessageChunkSchema check of every part), readUIMessageStream (the reader that
// rebuilds the assistant message), and AbstractChat, the class useChat wraps.
// TOOLPLEX_URL runs the demo agent, TOOLPLEX_ERROR_URL a model that fails in step 2.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  AbstractChat, DefaultChatTransport, parseJsonEventStream, readUIMessageStream,
  uiMessageChunkSchema,
} from 'ai';

const BASE = process.env.TOOLPLEX_URL ?? '';
const ERROR_BASE = process.env.TOOLPLEX_ERROR_URL ?? '';
const SKIP = BASE && ERROR_BASE ? false : 'set TOOLPLEX_URL and TOOLPLEX_ERROR_URL (see test_adapters.py)';

/**
 * The smallest ChatState: what useChat keeps in React state, in plain fields. Every
 * message the chat writes is recorded, so tests can see the intermediate states too.
 *
 * @implements {import('ai').ChatState<import('ai').UIMessage>}
 */
class State {
  /** @type {import('ai').ChatStatus} */ status = 'ready';
  /** @type {Error | undefined} */ error = undefined;
  /** @type {import('ai').UIMessage[]} */ messages = [];
  /** @type {import('ai').UIMessage[]} every snapshot written */ history = [];
  /** @param {import('ai').UIMessage} m */
  pushMessage = (m) => { this.messages = [...this.messages, m]; this.history.push(structuredClone(m)); };
  popMessage = () => { this.messages = this.messages.slice(0, -1); };
  /** @param {number} i @param {import('ai').UIMessage} m */
  replaceMessage = (i, m) => {
    this.messages = this.messages.map((old, j) => (j === i ? m : old));
    this.history.push(structuredClone(m));
  };
  /** @template T @param {T} thing @returns {T} */
  snapshot = (thing) => structuredClone(thing);
}

class Chat extends AbstractChat {
  /** @param {ConstructorParameters<typeof AbstractChat>[0] & {state?: undefined}} init */
  constructor(init) {
    const state = new State();
    super({ ...init, state });
    this.recorded = state;
  }
}

/** @param {string} base @param {Record<string, string>} [headers] */
const transport = (base, headers) => new DefaultChatTransport({ api: `${base}/v1/ai-sdk/chat`,
                                                                 headers });

/** @param {string} text @returns {import('ai').UIMessage} */
const userMessage = (text) => ({ id: `u-${Date.now()}`, role: 'user', parts: [{ type: 'text', text }] });

/**
 * @param {import('ai').UIMessage} message
 * @returns {Record<string, any>} its tool parts by tool name
 */
function toolParts(message) {
  return Object.fromEntries(message.parts.filter((p) => p.type.startsWith('tool-'))
    .map((p) => [p.type.slice('tool-'.length), p]));
}

test('readUIMessageStream rebuilds the enrichment answer with its tool parts',
  { skip: SKIP, timeout: 20_000 }, async () => {
    /** @type {Headers | undefined} */
    let headers;
    const chat = new DefaultChatTransport({
      api: `${BASE}/v1/ai-sdk/chat`,
      fetch: async (url, init) => {
        const response = await fetch(url, init);
        headers = response.headers;
        return response;
      },
    });
    const stream = await chat.sendMessages({
      chatId: `chat-${Date.now()}`, messages: [userMessage('Enrich acme.com')],
      trigger: 'submit-message', messageId: undefined, abortSignal: undefined,
    });
    /** @type {import('ai').UIMessage | undefined} */
    let message;
    for await (const snapshot of readUIMessageStream({ stream, terminateOnError: true })) {
      message = snapshot;
    }
    assert.equal(headers?.get('x-vercel-ai-ui-message-stream'), 'v1');
    assert.ok(message);
    assert.equal(message.role, 'assistant');
    assert.match(message.id, /^r_/, 'the message is the run');
    assert.equal(message.parts.filter((p) => p.type === 'step-start').length, 4);
    const tools = toolParts(message);
    assert.deepEqual(Object.keys(tools).sort(), ['apollo', 'clearbit', 'hubspot_upsert',
                                                 'linkedin', 'slack_notify', 'verify_email']);
    for (const part of Object.values(tools)) {
      assert.equal(part.state, 'output-available');
      assert.equal(part.preliminary, undefined, 'the final output is not preliminary');
    }
    assert.deepEqual(tools.apollo.input, { domain: 'acme.com' });
    assert.equal(tools.apollo.output.contact.email, 'dana@acme.com');
    assert.equal(tools.verify_email.input.email, 'dana@acme.com');
    const text = message.parts.filter((p) => p.type === 'text').map((p) => p.text).join('');
    assert.match(text, /^I'll research it.*Saved as hs_\d+; #sales was notified\.$/s);
    assert.ok(message.parts.filter((p) => p.type === 'text').every((p) => p.state === 'done'));
  });

test('every part of the stream passes the SDK schema, and it ends with [DONE]',
  { skip: SKIP, timeout: 20_000 }, async () => {
    const response = await fetch(`${BASE}/v1/ai-sdk/chat`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ id: `chat-${Date.now()}`, messages: [userMessage('search race')],
                             trigger: 'submit-message' }),
    });
    assert.ok(response.body);
    const [raw, parsed] = response.body.tee();
    const types = [];
    for await (const chunk of parseJsonEventStream({ stream: parsed, schema: uiMessageChunkSchema })) {
      assert.ok(chunk.success, `schema rejected a part: ${!chunk.success && chunk.error}`);
      types.push(chunk.value.type);
    }
    const text = await new Response(raw).text();
    assert.ok(!text.includes('\r'), 'LF line endings only');
    assert.ok(text.endsWith('data: [DONE]\n\n'));
    assert.equal(types[0], 'start');
    assert.equal(types.at(-1), 'finish');
    assert.ok(types.includes('data-toolplex-short-circuit'));
  });

test('useChat\'s chat runs the search race: preliminary output streams, siblings are cancelled',
  { skip: SKIP, timeout: 20_000 }, async () => {
    const chat = new Chat({ transport: transport(BASE) });
    await chat.sendMessage({ text: 'search race' });
    assert.equal(chat.status, 'ready');
    assert.equal(chat.error, undefined);
    const answer = chat.messages[1];
    const tools = toolParts(answer);
    assert.ok(tools.docs_search.output.some((/** @type {any} */ hit) => hit.score >= 0.9));
    for (const name of ['web_search', 'news_search']) {
      assert.equal(tools[name].state, 'output-available');
      assert.equal(tools[name].output.cancelled, true);
      assert.equal(tools[name].output.reason, 'short_circuit');
      assert.equal(tools[name].output.by_call_id, tools.docs_search.toolCallId);
      assert.ok(tools[name].output.partial_output.length >= 1);
    }
    const preliminary = chat.recorded.history.flatMap((m) => m.parts)
      .filter((p) => p.type === 'tool-docs_search' && 'preliminary' in p && p.preliminary);
    assert.ok(preliminary.length >= 2, 'partial results showed while the search ran');
    const circuit = answer.parts.find((p) => p.type === 'data-toolplex-short-circuit');
    assert.deepEqual(/** @type {any} */ (circuit)?.data.cancelledCallIds.sort(),
                     [tools.web_search.toolCallId, tools.news_search.toolCallId].sort());
    assert.match(answer.parts.filter((p) => p.type === 'text').map((p) => p.text).join(''),
                 /Best answer: .*docs result 3/);
  });

test('resumeStream replays the active run; 204 when nothing runs', { skip: SKIP, timeout: 20_000 },
  async () => {
    const id = `chat-${Date.now()}`;
    const idle = await transport(BASE).reconnectToStream({ chatId: id });
    assert.equal(idle, null, 'an unknown chat has nothing to resume (204)');

    const first = new Chat({ id, transport: transport(BASE) });
    const sending = first.sendMessage({ text: 'search race' });
    while (!first.recorded.history.length) await new Promise((r) => setTimeout(r, 20));
    const second = new Chat({ id, transport: transport(BASE) });
    await second.resumeStream();
    await sending;
    assert.equal(second.status, 'ready');
    assert.deepEqual(second.messages.at(-1), first.messages.at(-1),
                     'the replay rebuilds the same message');
    assert.equal(await transport(BASE).reconnectToStream({ chatId: id }), null,
                 'after the run, 204 again');
  });

test('failing case: the run errors: the chat ends in status "error" and keeps what arrived',
  { skip: SKIP, timeout: 20_000 }, async () => {
    /** @type {Error[]} */
    const errors = [];
    const chat = new Chat({ transport: transport(ERROR_BASE), onError: (e) => { errors.push(e); } });
    await chat.sendMessage({ text: 'look it up' });
    assert.equal(chat.status, 'error');
    assert.match(String(chat.error?.message), /^model_error: .*no earlier result for 'missing'/);
    assert.deepEqual(errors, [chat.error]);
    const answer = chat.messages[1];
    assert.equal(answer.role, 'assistant');
    const tools = toolParts(answer);
    assert.equal(tools.lookup.state, 'output-available', 'step 1 completed before the error');
    assert.deepEqual(tools.lookup.output, { company: 'Acme' });
    const reasoning = answer.parts.filter((p) => p.type === 'reasoning');
    assert.deepEqual(reasoning.map((p) => [p.text, p.state]),
                     [['The domain needs a lookup.', 'done']], 'reasoning-* parts');
  });

test('failing case: the run is cancelled: abort part, the chat is ready, calls say cancelled',
  { skip: SKIP, timeout: 20_000 }, async () => {
    // A session made with POST /v1/sessions is a chat too; its token is then required.
    const created = await (await fetch(`${BASE}/v1/sessions`, { method: 'POST' })).json();
    const auth = { Authorization: `Bearer ${created.token}` };
    const refused = new Chat({ id: created.session_id, transport: transport(BASE) });
    await refused.sendMessage({ text: 'search race' });
    assert.equal(refused.status, 'error');
    assert.match(String(refused.error?.message), /unauthorized/);

    /** @type {Promise<Response> | undefined} */
    let cancel;
    /** @type {any} */
    let finish;
    const chat = new Chat({
      id: created.session_id, transport: transport(BASE, auth),
      onFinish: (options) => { finish = options; },
    });
    const state = chat.recorded;
    const record = state.replaceMessage;
    state.replaceMessage = (i, m) => {
      record(i, m);
      const runId = /** @type {any} */ (m.metadata)?.toolplex?.runId;
      const streaming = m.parts.some((p) => 'preliminary' in p && p.preliminary);
      if (runId && streaming && !cancel) {
        cancel = fetch(`${BASE}/v1/sessions/${created.session_id}/runs/${runId}/cancel`,
                       { method: 'POST', headers: auth });
      }
    };
    await chat.sendMessage({ text: 'search race' });
    assert.equal((await cancel)?.status, 202);
    assert.equal(chat.status, 'ready', 'a cancelled run is not an error to the chat');
    assert.equal(finish.isError, false);
    assert.equal(finish.finishReason, undefined, 'abort, not finish');
    const tools = toolParts(chat.messages[1]);
    assert.deepEqual(Object.keys(tools).sort(), ['docs_search', 'news_search', 'web_search']);
    for (const part of Object.values(tools)) {
      assert.equal(part.output.cancelled, true);
      assert.equal(part.output.reason, 'run_cancelled');
    }
  });
