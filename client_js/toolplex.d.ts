// Types for toolplex's JS client. Wire names follow PROTOCOL.md (snake_case);
// view-model names are camelCase.

// ---------------------------------------------------------------- events (the log)

/** Fields every logged event carries. */
export interface Envelope {
  v: 1;
  /** Per-session position in the log: from 1, strictly increasing, gapless. */
  seq: number;
  type: string;
  /** Milliseconds since the epoch. */
  ts: number;
  session_id: string;
  /** On every event that belongs to a run. */
  run_id?: string;
}

export interface ErrorInfo { code: string; message: string; status?: number; [key: string]: unknown }

export interface RunStarted extends Envelope { type: 'run.started'; trigger: 'user' | 'job' | 'resume'; input?: unknown }
export interface StepStarted extends Envelope { type: 'step.started'; step: number }
export interface StepFinished extends Envelope { type: 'step.finished'; step: number }
export interface TextStart extends Envelope { type: 'text.start'; message_id: string; role: string }
export interface TextDelta extends Envelope { type: 'text.delta'; message_id: string; delta: string }
export interface TextEnd extends Envelope { type: 'text.end'; message_id: string }
/** The model's reasoning (or reasoning summary): its own message, beside the text. */
export interface ReasoningStart extends Envelope { type: 'reasoning.start'; message_id: string }
export interface ReasoningDelta extends Envelope { type: 'reasoning.delta'; message_id: string; delta: string }
export interface ReasoningEnd extends Envelope { type: 'reasoning.end'; message_id: string }
export interface ToolCallStart extends Envelope { type: 'tool.call.start'; call_id: string; name: string; message_id: string }
export interface ToolCallDelta extends Envelope { type: 'tool.call.delta'; call_id: string; delta: string }
export interface ToolCallEnd extends Envelope { type: 'tool.call.end'; call_id: string; args: unknown }
/** Extension: the call waits for its upstream's rate or concurrency limit. */
export interface ToolQueued extends Envelope { type: 'tool.queued'; call_id: string; upstream: string }
/** Extension: the call's result is a memoised earlier one. */
export interface ToolExecStarted extends Envelope { type: 'tool.exec.started'; call_id: string; attempt: number; timeout_ms: number }
export interface ToolOutputDelta extends Envelope { type: 'tool.output.delta'; call_id: string; attempt: number; index: number; data: unknown }
export interface ToolRetrying extends Envelope {
  type: 'tool.retrying'; call_id: string; attempt: number; delay_ms: number;
  reason: 'timeout' | 'error' | 'rate_limited'; error?: ErrorInfo;
}
export interface ToolTimeout extends Envelope { type: 'tool.timeout'; call_id: string; attempt: number; timeout_ms: number; will_retry: boolean }
export interface ToolResult extends Envelope { type: 'tool.result'; call_id: string; output: unknown; partial: boolean; stopped_by?: 'predicate'; cached?: boolean }
export interface ToolError extends Envelope { type: 'tool.error'; call_id: string; error: ErrorInfo }
export interface ToolCancelled extends Envelope {
  type: 'tool.cancelled'; call_id: string; reason: 'short_circuit' | 'user' | 'run_cancelled' | (string & {});
  by_call_id?: string; partial_output?: unknown;
}
export interface ToolShortCircuit extends Envelope { type: 'tool.short_circuit'; call_id: string; cancelled_call_ids: string[] }
export interface ToolCircuitOpen extends Envelope { type: 'tool.circuit_open'; tool: string; failures: number }
export interface JobPending extends Envelope { type: 'job.pending'; call_id: string; job_id: string; via: 'worker' | 'webhook' | 'human' | 'poll' }
export interface JobProgress extends Envelope { type: 'job.progress'; job_id: string; progress: number; total?: number; message?: string }
export interface JobCompleted extends Envelope {
  type: 'job.completed'; job_id: string; status: 'succeeded' | 'failed' | 'cancelled' | 'expired';
  output?: unknown; error?: ErrorInfo;
}
export interface RunFinished extends Envelope { type: 'run.finished'; outcome: 'success' | 'cancelled'; usage?: Record<string, unknown> }
export interface RunError extends Envelope { type: 'run.error'; error: ErrorInfo }

/** Every logged event this client understands (others are skipped). */
export type ToolplexEvent =
  | RunStarted | StepStarted | StepFinished | TextStart | TextDelta | TextEnd
  | ReasoningStart | ReasoningDelta | ReasoningEnd
  | ToolCallStart | ToolCallDelta | ToolCallEnd | ToolQueued | ToolExecStarted
  | ToolOutputDelta | ToolRetrying | ToolTimeout | ToolResult | ToolError | ToolCancelled
  | ToolShortCircuit | ToolCircuitOpen | JobPending | JobProgress | JobCompleted
  | RunFinished | RunError;

// ---------------------------------------------------------------- frames (not logged)

export interface StreamHello { type: 'stream.hello'; session_id: string; head_seq: number; resume_from: number }
export interface StreamGap { type: 'stream.gap'; from_seq: number; to_seq: number }
/**
 * The frame after a gap: `messages` is the session's chat history (folded by {@link foldSnapshot}).
 * A history over the server's `max_event_bytes` comes in parts: every part but the last has
 * `more: true`, and the client folds the concatenated messages when the last one arrives.
 */
export interface StreamSnapshot { type: 'stream.snapshot'; session_id: string; messages: object[]; more?: boolean }
export interface CommandError { type: 'command.error'; error: ErrorInfo; ref?: unknown }
/** The answer to an accepted command that carried a `ref` (WebSocket; not logged). */
export interface CommandOk { type: 'command.ok'; ref: string; run_id?: string }

// ---------------------------------------------------------------- commands

/** `ref`: a correlation id of the client's, echoed on `command.ok` and `command.error`. */
export type Command = (
  | { type: 'run.start'; input: string | object[] }
  | { type: 'run.cancel'; run_id: string }
  | { type: 'tool.cancel'; call_id: string }
  | { type: 'job.complete'; job_id: string; output: unknown }
  | { type: 'subscribe'; after: number }
) & { ref?: string };

// ---------------------------------------------------------------- view model

export type CallStatus =
  | 'streaming_args' | 'queued' | 'running' | 'retrying' | 'timed_out' | 'succeeded' | 'partial'
  | 'failed' | 'cancelled' | 'circuit_open' | 'job_pending' | 'job_done';

export interface RunView {
  id: string;
  trigger: 'user' | 'job' | 'resume';
  input: unknown;
  status: 'running' | 'finished' | 'error';
  outcome: 'success' | 'cancelled' | null;
  error: ErrorInfo | null;
  usage: Record<string, unknown> | null;
  startedAt: number;
  finishedAt: number | null;
  /** The current step number. */
  step: number | null;
  steps: { step: number; startedAt: number; finishedAt: number | null }[];
  messageIds: string[];
  callIds: string[];
}

export interface MessageView {
  id: string;
  runId: string | null;
  /** 'assistant', 'user', or 'reasoning' (the model's reasoning, from reasoning.* events). */
  role: string;
  /** The text streamed so far. */
  text: string;
  status: 'streaming' | 'done';
  startedAt: number;
  endedAt: number | null;
  /** Tools the message called (messages from a snapshot's history). */
  tools?: string[];
  /** True for a message folded from `stream.snapshot` rather than streamed. */
  snapshot?: boolean;
}

export interface ChunkView { index: number; data: unknown; ts: number }

export interface AttemptView {
  attempt: number;
  timeoutMs: number | null;
  startedAt: number;
  endedAt: number | null;
  status: 'running' | 'timed_out' | 'failed' | 'succeeded' | 'partial' | 'cancelled';
  /** This attempt's chunks, ordered by index, each once. */
  chunks: ChunkView[];
  /** True once a retry discarded this attempt's output. */
  dropped: boolean;
}

export interface JobView {
  job_id: string;
  via: 'worker' | 'webhook' | 'human' | 'poll';
  status: 'pending' | 'succeeded' | 'failed' | 'cancelled' | 'expired';
  progress: number | null;
  total: number | null;
  message: string | null;
  output: unknown;
  error: ErrorInfo | null;
  pendingAt: number;
  completedAt: number | null;
}

export interface CallView {
  id: string;
  name: string | null;
  messageId: string | null;
  runId: string | null;
  status: CallStatus;
  /** The arguments JSON as the model writes it. */
  argsText: string;
  /** The parsed arguments, from tool.call.end. */
  args: unknown;
  /** Every attempt, dropped ones included (history). */
  attempts: AttemptView[];
  /** The current attempt's chunks (empty right after a retry dropped them). */
  chunks: ChunkView[];
  retries: { attempt: number; delay_ms: number; reason: string; error: ErrorInfo | null; ts: number }[];
  /** The latest timeout, and all of them. */
  timeout: { attempt: number; timeout_ms: number; will_retry: boolean; ts: number } | null;
  timeouts: { attempt: number; timeout_ms: number; will_retry: boolean; ts: number }[];
  cancel: { reason: string; by_call_id: string | null; partial_output: unknown; ts: number } | null;
  /** The decisive call that cancelled this one (from tool.cancelled or tool.short_circuit). */
  cancelledBy: string | null;
  output: unknown;
  partial: boolean;
  error: ErrorInfo | null;
  job: JobView | null;
  cached: boolean;
  /** The upstream whose limit queued this call (tool.queued). */
  upstream: string | null;
  /** True for the call whose chunk short-circuited its siblings. */
  decisive: boolean;
  cancelledCallIds: string[];
  timings: {
    createdAt: number | null;
    argsEndedAt: number | null;
    queuedAt: number | null;
    /** The first tool.exec.started. */
    startedAt: number | null;
    /** The ts of every chunk of every attempt, in arrival order. */
    chunkTs: number[];
    endedAt: number | null;
  };
}

export type FeedItem = { kind: 'run' | 'message' | 'call'; id: string };

export interface ViewState {
  /** The highest seq applied; events at or below it are ignored. */
  lastSeq: number;
  sessionId: string | null;
  /** ts of the first event applied: the timeline's origin. */
  origin: number | null;
  lastTs: number | null;
  runs: Record<string, RunView>;
  runOrder: string[];
  messages: Record<string, MessageView>;
  calls: Record<string, CallView>;
  /** job_id to call_id. */
  jobs: Record<string, string>;
  /** Runs, messages and calls in order of first appearance. */
  feed: FeedItem[];
  disabledTools: { tool: string; failures: number; ts: number }[];
  shortCircuits: { call_id: string; cancelled_call_ids: string[]; ts: number }[];
  /** Seq ranges never seen (the log had dropped them). */
  gaps: { from_seq: number; to_seq: number }[];
}

export declare const CALL_STATUSES: readonly CallStatus[];
export declare function initialState(): ViewState;
export declare function reduce(state: ViewState, event: ToolplexEvent | { type: string; seq?: number; ts?: number }): ViewState;
export declare function replay(events: Iterable<ToolplexEvent>, state?: ViewState): ViewState;
export declare function foldSnapshot(state: ViewState, frame: { messages?: unknown }): ViewState;

// ---------------------------------------------------------------- backoff, SSE

export interface BackoffOptions { base?: number; max?: number; jitter?: boolean | (() => number) }
export declare function backoff(attempt: number, options?: BackoffOptions): number;

export interface SSEMessage { id: string | undefined; event: string; data: string }

export declare class SSEParser {
  lastEventId: string;
  retry: number | null;
  push(chunk: string | Uint8Array): SSEMessage[];
  reset(): void;
}

export interface SSEReaderOptions {
  fetch: typeof fetch | null;
  headers: Record<string, string>;
  lastEventId: string;
  reconnect: boolean;
  backoff: BackoffOptions;
}
export declare const SSE_DEFAULTS: Readonly<SSEReaderOptions>;

export declare class SSEMessageEvent extends Event {
  readonly id: string | undefined;
  readonly event: string;
  readonly data: string;
  readonly lastEventId: string;
}

export declare class SSEReader extends EventTarget {
  constructor(url: string, options?: Partial<SSEReaderOptions>);
  readonly lastEventId: string;
  readonly open: boolean;
  start(): void;
  close(): void;
}

// ---------------------------------------------------------------- client

export type ConnectionStatus = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed';

export interface ClientOptions {
  /** The server, e.g. `http://127.0.0.1:8000`; '' for the page's origin. */
  baseUrl: string;
  token: string;
  /** '' to create a session on connect(). */
  sessionId: string;
  /** 'auto': WebSocket when available, else SSE. */
  transport: 'auto' | 'ws' | 'sse';
  /** A WebSocket constructor (e.g. from the `ws` package in Node); null for the global one. */
  WebSocket: (new (url: string) => any) | null;
  fetch: typeof fetch | null;
  reconnect: boolean;
  backoff: BackoffOptions;
  /** A view model to resume from; its lastSeq is the first cursor. */
  state: ViewState | null;
}
export declare const DEFAULTS: Readonly<ClientOptions>;

export declare function createSession(
  baseUrl?: string, options?: { fetch?: typeof fetch | null },
): Promise<{ session_id: string; token: string }>;

export declare class LogEvent extends Event { readonly event: ToolplexEvent; readonly detail: ToolplexEvent }
export declare class StateEvent extends Event {
  readonly state: ViewState; readonly event: ToolplexEvent | null; readonly detail: ViewState;
}
export declare class FrameEvent extends Event {
  readonly frame: StreamHello | StreamGap | StreamSnapshot | CommandError | Record<string, any>;
  readonly detail: FrameEvent['frame'];
}
export declare class StatusEvent extends Event {
  readonly status: ConnectionStatus; readonly attempt: number; readonly delay: number; readonly code: number | null;
}
export declare class ClientErrorEvent extends Event { readonly error: { code: string; message: string }; readonly fatal: boolean }

export interface ToolplexClientEventMap {
  event: LogEvent;
  state: StateEvent;
  hello: FrameEvent;
  gap: FrameEvent;
  snapshot: FrameEvent;
  'command-error': FrameEvent;
  status: StatusEvent;
  error: ClientErrorEvent;
}

export declare class ToolplexClient extends EventTarget {
  constructor(options?: Partial<ClientOptions>);
  readonly state: ViewState;
  readonly lastSeq: number;
  readonly sessionId: string;
  readonly token: string;
  readonly status: ConnectionStatus;
  readonly transport: 'ws' | 'sse';
  connect(): Promise<this>;
  close(): void;
  send(command: Command): 'sent' | 'queued';
  /** Resolves to the run id once the server accepted the run; rejects with its refusal. */
  run(input: string | object[]): Promise<string>;
  cancel(runId: string): 'sent' | 'queued';
  cancelCall(callId: string): 'sent' | 'queued';
  completeJob(jobId: string, output: unknown): 'sent' | 'queued';
  addEventListener<K extends keyof ToolplexClientEventMap>(
    type: K, listener: (ev: ToolplexClientEventMap[K]) => void, options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
}
