/// <reference types="node" />
// Types of the Pillarbox package (the facade in index.js). Times are Dates,
// durations milliseconds.

/** The core's stable error codes. */
export type ErrorCode =
  | 'INVALID_URL'
  | 'UNKNOWN_SCHEME'
  | 'BACKEND_NOT_ENABLED'
  | 'INVALID_OPTION'
  | 'UNSUPPORTED'
  | 'MESSAGE_TOO_LARGE'
  | 'QUEUE_FULL'
  | 'INVALID_MESSAGE'
  | 'CONNECT'
  | 'BACKEND'
  | 'TIMEOUT'
  | 'LEASE_LOST'
  | 'CLOSED'
  | 'ALREADY_RUNNING'

/**
 * Every error the package throws. The core's fields of each code are
 * properties too, named as below: `INVALID_OPTION` has `option` and
 * `reason`, `MESSAGE_TOO_LARGE` `size` and `limit`, `CONNECT` `backend`,
 * `url` (redacted) and `reason`, `TIMEOUT` `operation` and `afterMs`...
 */
export class PillarboxError extends Error {
  readonly code: ErrorCode
  /** Whether the same call may succeed later (a lost connection, a timeout), as the core decides. */
  readonly transient: boolean
  /** INVALID_OPTION: the option as the caller wrote it (`maxRetries`, `retry.jitter`). */
  readonly option?: string
  /** INVALID_URL, INVALID_OPTION, INVALID_MESSAGE, CONNECT, BACKEND: what is wrong. */
  readonly reason?: string
  /** INVALID_URL, CONNECT: the URL, its credentials redacted. */
  readonly url?: string
  /** UNKNOWN_SCHEME, BACKEND_NOT_ENABLED. */
  readonly scheme?: string
  /** BACKEND_NOT_ENABLED: the cargo feature that provides the backend. */
  readonly feature?: string
  /** UNSUPPORTED, CONNECT, BACKEND. */
  readonly backend?: string
  /** UNSUPPORTED: what was asked for. */
  readonly capability?: string
  /** MESSAGE_TOO_LARGE: the message's encoded size in bytes. */
  readonly size?: number
  /** MESSAGE_TOO_LARGE (bytes), QUEUE_FULL (messages). */
  readonly limit?: number
  /** QUEUE_FULL. */
  readonly topic?: string
  /** TIMEOUT: what timed out, and after how long. */
  readonly operation?: string
  readonly afterMs?: number
  /** LEASE_LOST: the message when one is known, and how many lost their lease. */
  readonly messageId?: string | null
  readonly count?: number
}

export type Payload = Buffer | Uint8Array | string

/**
 * The core's defaults, by call and option as this package names them
 * (`DEFAULTS.worker.leaseMs`, `DEFAULTS.retry.maxRetries`,
 * `DEFAULTS.deadLetters.limit`, `DEFAULTS.app.defaultTopic`); `null` is
 * unset unless given. An option left out gets these.
 */
export const DEFAULTS: Readonly<Record<'worker' | 'retry' | 'deadLetters' | 'app', Readonly<Record<string, number | string | null>>>>

export interface PublishOptions {
  /** Ordering / routing key. */
  key?: string
  /** The handler's effect runs once per key. */
  idempotencyKey?: string
  headers?: Record<string, string>
  contentType?: string
  /** Not delivered before this many milliseconds from now. */
  delayMs?: number
  /** Not delivered before this time. */
  deliverAt?: Date
  traceparent?: string
  tracestate?: string
}

export interface MessageInput extends PublishOptions {
  payload: Payload
}

export interface Failures {
  firstFailedAt: Date
  lastFailedAt: Date
  lastErrorKind: string
  lastError: string
}

export interface Message {
  id: string
  payload: Buffer
  key?: string
  idempotencyKey?: string
  contentType?: string
  headers: Record<string, string>
  /** 1 on first delivery, +1 on each retry or redelivery. */
  attempt: number
  publishedAt: Date
  deliverAt: Date | null
  traceparent?: string
  tracestate?: string
  /** The schedule that published it, for a scheduled message. */
  schedule: string | null
  /** The tick it was published for, for a scheduled message: when it was meant to run. */
  scheduledFor: Date | null
  failures: Failures | null
}

export interface PartitionLag {
  partition: number
  committed?: number
  end: number
  lag: number
}

export interface GroupStats {
  topic: string
  group: string
  /** Ready to be received now (the depth; on Kafka, the lag). */
  ready: number
  /** Received and not yet settled; undefined when the broker could not tell (RabbitMQ without its management plugin). */
  inFlight?: number
  /** Delayed publishes and retries waiting for their time. */
  waiting: number
  deadLetters: number
  oldestAgeMs?: number
  partitions: PartitionLag[]
}

export interface DeadLetterReason {
  topic: string
  group: string
  attempts: number
  /** `retries_exhausted`, `not_retryable`, `malformed` or `redelivery_limit`. */
  cause: string
  errorKind: string
  errorMessage: string
  firstFailedAt: Date
  lastFailedAt: Date
}

export interface DeadLetter {
  /** Backend id of the dead letter (not the message id). */
  id: string
  message: Message
  reason: DeadLetterReason
}

export interface DeadLetterFilter {
  errorKind?: string
  cause?: string
  errorContains?: string
  failedBefore?: Date
  messageIds?: string[]
}

export interface RedriveOptions extends DeadLetterFilter {
  perSecond?: number
  limit?: number
}

export interface Capabilities {
  maxMessageBytes: number
  delayedDelivery: boolean
  orderedDelivery: boolean
  replayForNewGroups: boolean
  leases: boolean
  ownedPartitions: boolean
  statsDelayMs: number
}

export class Broker {
  private constructor()
  readonly backend: 'memory' | 'sqlite' | 'redis' | 'amqp' | 'kafka'
  /** The URL with its password redacted. */
  readonly url: string
  capabilities(): Capabilities
  ensureGroup(topic: string, group: string): Promise<void>
  publish(topic: string, payload: Payload | MessageInput, options?: PublishOptions): Promise<string>
  publish(topic: string, batch: Array<Payload | MessageInput>): Promise<string[]>
  inspect(topic: string, group: string): Promise<GroupStats>
  groups(topic: string): Promise<string[]>
  deadLetters(topic: string, group: string, options?: { limit?: number; after?: string }): Promise<DeadLetter[]>
  redrive(topic: string, group: string, options?: RedriveOptions): Promise<number>
  purge(topic: string, group: string, filter?: DeadLetterFilter): Promise<number>
  /** Creates or replaces the schedule `name`, and says which: `created`, `updated` or `unchanged`. */
  upsertSchedule(name: string, topic: string, payload: Payload, options: ScheduleOptions): Promise<'created' | 'updated' | 'unchanged'>
  schedules(): Promise<ScheduleInfo[]>
  pauseSchedule(name: string): Promise<boolean>
  resumeSchedule(name: string): Promise<boolean>
  /** Publishes the schedule's message now, outside its timetable; the message id, null if there is no such schedule. */
  runScheduleNow(name: string): Promise<string | null>
  removeSchedule(name: string): Promise<boolean>
  close(): Promise<void>
}

/** When a schedule fires (`cron` or `everyMs`, not both) and what its ticks publish. */
export interface ScheduleOptions {
  /** 5 fields, or 6 with seconds first; `@daily` and the like. */
  cron?: string
  /** An interval of at least 1000 ms, counted from `start` or the epoch. */
  everyMs?: number
  /** IANA time zone of `cron` (default `UTC`). */
  zone?: string
  start?: Date
  end?: Date
  /** Ticks no scheduler ran for: `once` (default, one run for all), `skip`, or `all` (up to `misfireCap`). */
  misfire?: 'skip' | 'once' | 'all'
  misfireCap?: number
  key?: string
  headers?: Record<string, string>
  contentType?: string
}

export interface ScheduleInfo {
  name: string
  topic: string
  cron: string | null
  zone: string | null
  everyMs: number | null
  misfire: 'skip' | 'once' | 'all'
  misfireCap: number | null
  paused: boolean
  start: Date | null
  end: Date | null
  lastRun: Date | null
  nextRun: Date | null
  lastMessageId: string | null
}

/** Publishes each due tick of the broker's schedules, once however many run. */
export class Scheduler {
  constructor(broker: Broker)
  run(): Promise<void>
  shutdown(): void
}

/** Options go in the URL's query; a second argument is refused. */
export function connect(url: string): Promise<Broker>

export class Job {
  private constructor()
  readonly id: string
  readonly payload: Buffer
  readonly message: Message
  readonly topic: string
  readonly group: string
  readonly attempt: number
  readonly maxAttempts: number
  readonly isLastAttempt: boolean
  /** When the attempt times out (`handlerTimeoutMs`), or null. */
  readonly deadline: Date | null
  /** Aborted when the worker gives up on this attempt (timeout, end of the shutdown grace). */
  readonly signal: AbortSignal
  text(): string
  json<T = unknown>(): T
}

/** Throw in a handler to retry the job (within the budget). */
export class Retry extends Error {
  constructor(reason?: string, options?: { afterMs?: number; cause?: unknown })
  readonly afterMs?: number
}

/** Throw in a handler to dead-letter the job at once. */
export class Fatal extends Error {
  constructor(reason?: string, options?: { kind?: string; cause?: unknown })
  readonly kind?: string
}

export interface RetryPolicy {
  /** Retries after the first attempt (default 3). */
  maxRetries?: number
  initialDelayMs?: number
  multiplier?: number
  maxDelayMs?: number
  /** Fraction (0-1) of each wait taken off at random. */
  jitter?: number
}

type ErrorClass = abstract new (...args: any[]) => unknown

export interface WorkerOptions {
  /** Handlers running at once (default 1). */
  concurrency?: number
  /**
   * Messages held beyond the running ones. By default it follows the handlers:
   * about 20 ms of their work (at most 200 messages and 1 MiB), nothing extra
   * once they are slow; on Kafka 100.
   */
  prefetch?: number
  retry?: RetryPolicy
  /** A handler running longer fails with kind `timeout` and its signal is aborted. */
  handlerTimeoutMs?: number
  leaseMs?: number
  pollWaitMs?: number
  shutdownGraceMs?: number
  idempotencyRetentionMs?: number
  busyKeyDelayMs?: number
  consumerName?: string
  /**
   * URL of the idempotency store the worker shares with others (`redis://...`,
   * `sqlite://PATH`, `memory://`); by default the backend's own where it has
   * one (embedded, Redis), else this process's memory. Opened when the worker is made.
   */
  idempotencyStore?: string
  /** Only these errors are retried; the others dead-letter at once. */
  retryFor?: ErrorClass[]
  /** These errors dead-letter at once. */
  fatalFor?: ErrorClass[]
}

export interface WorkerStats {
  received: number
  succeeded: number
  retried: number
  deadLettered: number
  duplicates: number
  deferred: number
  released: number
  settleErrors: number
  /** Taken back by the broker while their handler ran (an expired lease, RabbitMQ's consumer timeout): not recorded, delivered again. */
  lost: number
}

export class Worker {
  constructor(broker: Broker, topic: string, group: string, handler: (job: Job) => Promise<unknown> | unknown, options?: WorkerOptions)
  readonly consumerName: string
  /** Runs until `shutdown()`, then shuts down gracefully. */
  run(): Promise<void>
  shutdown(): void
  stats(): WorkerStats
}

export declare const conformance: {
  scenarios(): string[]
  run(url: string, name: string, handler: (job: Job, data: { script?: string }) => Promise<unknown>): Promise<string | null>
}

export interface ApplyOptions {
  /** Keyword arguments (a JavaScript task receives them as one last argument). */
  kwargs?: Record<string, unknown>
  countdownMs?: number
  eta?: Date
  key?: string
  idempotencyKey?: string
  headers?: Record<string, string>
}

/** A registered task. */
export class Task<Args extends unknown[] = unknown[]> {
  private constructor()
  readonly name: string
  readonly topic: string
  /** Publishes a call; resolves to the message id. */
  delay(...args: Args): Promise<string>
  applyAsync(args?: Args, options?: ApplyOptions): Promise<string>
}

/** Tasks in the JSON envelope every language reads (docs/tasks.md). */
export class App {
  constructor(url: string, options?: { group?: string; defaultTopic?: string })
  broker(): Promise<Broker>
  task<Args extends unknown[]>(
    name: string,
    handler: (...args: Args) => Promise<unknown> | unknown,
    options?: { topic?: string; retry?: RetryPolicy; idempotencyKey?: (...args: Args) => string | undefined },
  ): Task<Args>
  /** A task registered elsewhere (another service, another language), to call by name. */
  signature<Args extends unknown[] = unknown[]>(name: string, options?: { topic?: string }): Task<Args>
  /** The broker, once the group that runs `topic`'s tasks exists (done before each topic's first call). */
  ensureTopic(topic: string): Promise<Broker>
  topics(): string[]
  workers(options?: WorkerOptions & { topics?: string[] }): Promise<Worker[]>
  /** Runs the app's tasks until SIGTERM or Ctrl-C. */
  /** The workers and (unless `scheduler: false`) a Scheduler of the broker's schedules. */
  runners(options?: WorkerOptions & { topics?: string[]; scheduler?: boolean }): Promise<Array<Worker | Scheduler>>
  /** Runs the workers, and the schedules' ticks unless `scheduler: false`, until SIGTERM or Ctrl-C. */
  runWorker(options?: WorkerOptions & { topics?: string[]; scheduler?: boolean }): Promise<void>
  /** Runs `task` with `args` and `kwargs` at each tick: the schedule `name`, kept by the broker. */
  schedule(
    name: string,
    task: Task | string,
    options: Omit<ScheduleOptions, 'key' | 'headers' | 'contentType'> & { args?: unknown[]; kwargs?: Record<string, unknown> },
  ): Promise<'created' | 'updated' | 'unchanged'>
}

export type LogLevel = 'error' | 'warn' | 'info' | 'debug' | 'trace'
export interface Logger {
  error?(message: string): void
  warn?(message: string): void
  info?(message: string): void
  debug?(message: string): void
  log?(message: string): void
}

/** Where the core's log events go (warnings and errors to the console by default); null for nowhere. */
export function setLogger(logger: Logger | ((level: LogLevel, message: string) => void) | null, options?: { level?: LogLevel }): void
