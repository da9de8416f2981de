// @ts-check
// The official AG-UI client (@ag-ui/client's HttpAgent, which verifies the event order)
// against a live toolplex server's POST /ag-ui. TOOLPLEX_URL names a server running the
// demo agent, TOOLPLEX_ERROR_URL one whose model fails in its second step; the pytest
// wrapper tests/e2e/test_adapters.py starts both.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { HttpAgent } from '@ag-ui/client';

const BASE = process.env.TOOLPLEX_URL ?? '';
const ERROR_BASE = process.env.TOOLPLEX_ERROR_URL ?? '';
const SKIP = BASE && ERROR_BASE ? false : 'set TOOLPLEX_URL and TOOLPLEX_ERROR_URL (see test_adapters.py)';

/**
 * Run one user message through a fresh HttpAgent, recording every event it accepted.
 *
 * @param {string} text
 * @param {{base?: string, threadId?: string, headers?: Record<string, string>,
 *          subscriber?: import('@ag-ui/client').AgentSubscriber}} [options]
 */
async function run(text, options = {}) {
  const agent = new HttpAgent({ url: `${options.base ?? BASE}/ag-ui`, threadId: options.threadId,
                                headers: options.headers });
  agent.addMessage({ id: `u-${Date.now()}`, role: 'user', content: text });
  /** @type {any[]} */
  const events = [];
  const outcome = await agent.runAgent({}, {
    onEvent: ({ event }) => { events.push(event); },
    ...options.subscriber,
  });
  return { agent, events, outcome };
}

/** @param {any[]} events @param {string} type */
const ofType = (events, type) => events.filter((e) => e.type === type);

/** The tool messages of an agent, parsed, by the name of the tool they answer. */
function toolResults(/** @type {HttpAgent} */ agent) {
  /** @type {Record<string, string>} */
  const names = {};
  for (const m of agent.messages) {
    if (m.role === 'assistant') for (const c of m.toolCalls ?? []) names[c.id] = c.function.name;
  }
  /** @type {Record<string, any>} */
  const out = {};
  for (const m of agent.messages) {
    if (m.role === 'tool') out[names[m.toolCallId]] = JSON.parse(String(m.content));
  }
  return out;
}

test('HttpAgent runs the enrichment example to completion', { skip: SKIP, timeout: 20_000 },
  async () => {
    const { agent, events } = await run('Enrich acme.com');
    const [started] = ofType(events, 'RUN_STARTED');
    assert.equal(started.protocolVersion, '1.0');
    assert.match(started.metadata.toolplex.runId, /^r_/, 'the toolplex run id rides in metadata');
    assert.deepEqual(ofType(events, 'RUN_FINISHED').map((e) => e.outcome), [{ type: 'success' }]);
    assert.deepEqual(ofType(events, 'STEP_STARTED').map((e) => e.stepName),
                     ['step 1', 'step 2', 'step 3', 'step 4']);

    const results = toolResults(agent);
    assert.deepEqual(Object.keys(results).sort(), ['apollo', 'clearbit', 'hubspot_upsert',
                                                   'linkedin', 'slack_notify', 'verify_email']);
    assert.equal(results.apollo.contact.email, 'dana@acme.com');
    assert.equal(results.verify_email.deliverable, true);
    const starts = ofType(events, 'TOOL_CALL_START').map((e) => e.toolCallId);
    const ends = ofType(events, 'TOOL_CALL_RESULT').map((e) => e.toolCallId);
    assert.deepEqual([...ends].sort(), [...starts].sort(), 'exactly one result per call');

    const assistant = agent.messages.filter((m) => m.role === 'assistant');
    assert.equal(assistant.length, 4, 'one assistant message per step');
    assert.deepEqual(assistant[0].toolCalls?.map((c) => c.function.name),
                     ['apollo', 'linkedin', 'clearbit'], 'parallel calls share their message');
    assert.match(String(assistant[3].content), /Acme \(acme\.com\).*Saved as hs_\d+/);

    const activities = agent.messages.filter((m) => m.role === 'activity');
    assert.equal(activities.length, 6, 'one activity message per executed call');
    for (const a of activities) {
      assert.equal(a.activityType, 'toolplex_call');
      assert.equal(a.content.status, 'done');
      assert.equal(a.content.output.length, 1);
    }
  });

test('HttpAgent runs the search race: the decisive hit cancels the others, each still answered',
  { skip: SKIP, timeout: 20_000 }, async () => {
    const { agent, events } = await run('search race');
    assert.deepEqual(ofType(events, 'RUN_FINISHED').map((e) => e.outcome), [{ type: 'success' }]);
    assert.equal(ofType(events, 'TOOL_CALL_RESULT').length, 3, 'one TOOL_CALL_RESULT per call');

    const results = toolResults(agent);
    assert.ok(results.docs_search.some((/** @type {any} */ hit) => hit.score >= 0.9));
    const docs = agent.messages.find((m) => m.role === 'activity'
                                            && m.content.tool === 'docs_search');
    assert.ok(docs && docs.role === 'activity');
    for (const name of ['web_search', 'news_search']) {
      assert.equal(results[name].cancelled, true, `${name} was cancelled`);
      assert.equal(results[name].reason, 'short_circuit');
      assert.equal(results[name].by_call_id, docs.content.callId);
      assert.ok(results[name].partial_output.length >= 1, 'what it had found is kept');
      assert.ok(docs.content.shortCircuit.cancelledCallIds.length === 2);
    }
    const partial = ofType(events, 'ACTIVITY_DELTA')
      .filter((e) => e.patch.some((/** @type {any} */ op) => op.path === '/output/-'));
    assert.ok(partial.length >= 5, 'search hits stream in as activity deltas');

    const final = agent.messages.filter((m) => m.role === 'assistant').at(-1);
    assert.match(String(final?.content), /Best answer: .*docs result 3/);
  });

test('a human job ends the run with an interrupt; resume answers it and the run goes on',
  { skip: SKIP, timeout: 20_000 }, async () => {
    // Answering a person's job needs the session's token: the thread is a session.
    const created = await (await fetch(`${BASE}/v1/sessions`, { method: 'POST' })).json();
    const { agent, events } = await run('approve discount for Acme', {
      threadId: created.session_id, headers: { Authorization: `Bearer ${created.token}` } });
    const [finished] = ofType(events, 'RUN_FINISHED');
    assert.equal(finished.outcome.type, 'interrupt');
    const [interrupt] = finished.outcome.interrupts;
    assert.match(interrupt.id, /^j_/, 'the interrupt is the job');
    assert.deepEqual(agent.pendingInterrupts.map((i) => i.id), [interrupt.id]);

    await assert.rejects(agent.runAgent({}), /pending interrupt/,
                         'the client refuses to go on without answering');
    /** @type {any[]} */
    const resumed = [];
    const { newMessages } = await agent.runAgent(
      { resume: [{ interruptId: interrupt.id, status: 'resolved', payload: { approved: true } }] },
      { onEvent: ({ event }) => { resumed.push(event); } });
    assert.deepEqual(ofType(resumed, 'RUN_FINISHED').map((e) => e.outcome), [{ type: 'success' }]);
    assert.deepEqual(agent.pendingInterrupts, []);
    assert.match(String(newMessages.at(-1)?.content), /manager approved the discount/);
  });

test('failing case: the run errors: RUN_ERROR reaches the subscriber, runAgent resolves',
  { skip: SKIP, timeout: 20_000 }, async () => {
    /** @type {any[]} */
    const errors = [];
    const { agent, events } = await run('look it up', {
      base: ERROR_BASE, subscriber: { onRunErrorEvent: ({ event }) => { errors.push(event); } },
    });
    assert.equal(errors.length, 1);
    assert.equal(errors[0].code, 'model_error');
    assert.match(errors[0].message, /no earlier result for 'missing'/);
    assert.equal(events.at(-1).type, 'RUN_ERROR', 'nothing follows RUN_ERROR');
    assert.equal(ofType(events, 'RUN_FINISHED').length, 0);
    assert.ok(ofType(events, 'STEP_FINISHED').length === 2, 'steps were closed before the error');
    assert.equal(agent.isRunning, false);
    assert.deepEqual(agent.messages.map((m) => m.role),
                     ['user', 'reasoning', 'assistant', 'tool', 'activity'],
                     'what arrived before the error stays');
    assert.equal(ofType(events, 'REASONING_MESSAGE_CONTENT').map((e) => e.delta).join(''),
                 'The domain needs a lookup.', 'the reasoning streams as REASONING_* events');
    assert.deepEqual(ofType(events, 'REASONING_START').map((e) => e.messageId),
                     ofType(events, 'REASONING_END').map((e) => e.messageId));
  });

test('failing case: the run is cancelled: outcome cancelled, every call still has its result',
  { skip: SKIP, timeout: 20_000 }, async () => {
    // A session made with POST /v1/sessions is a thread too; its token is then required.
    const created = await (await fetch(`${BASE}/v1/sessions`, { method: 'POST' })).json();
    const auth = { Authorization: `Bearer ${created.token}` };
    await assert.rejects(run('search race', { threadId: created.session_id }), /401/,
                         'a session thread needs its token');
    let cancelled = false;
    /** @type {string} */
    let runId = '';
    const { agent, events } = await run('search race', {
      threadId: created.session_id, headers: auth, subscriber: {
        onRunStartedEvent: ({ event }) => { runId = event.metadata?.toolplex.runId; },
        onActivityDeltaEvent: async () => {
          if (cancelled) return;
          cancelled = true;
          const url = `${BASE}/v1/sessions/${created.session_id}/runs/${runId}/cancel`;
          const response = await fetch(url, { method: 'POST', headers: auth });
          assert.equal(response.status, 202);
        },
      },
    });
    assert.ok(cancelled);
    assert.deepEqual(ofType(events, 'RUN_FINISHED').map((e) => e.outcome), [{ type: 'cancelled' }]);
    const results = toolResults(agent);
    assert.deepEqual(Object.keys(results).sort(), ['docs_search', 'news_search', 'web_search']);
    for (const result of Object.values(results)) {
      assert.equal(result.cancelled, true);
      assert.equal(result.reason, 'run_cancelled');
    }
    assert.ok(agent.messages.filter((m) => m.role === 'activity')
      .every((m) => m.role === 'activity' && m.content.status === 'cancelled'));
  });
