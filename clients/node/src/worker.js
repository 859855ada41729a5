// Worker: runs handlers over the complete_and_reserve loop.
//
// One pg.Client (the worker connection) records outcomes, reserves and
// heartbeats; node-postgres runs its queries one at a time in call order.
// A second client LISTENs on each queue's channels and wakes the loop: the
// queue's name (producers notify it by hand) and, against 0.2.0,
// notify_channel(queue), which set_queue_notify makes every enqueue notify
// at commit. The fallback poll covers scheduled and retried jobs, which
// nobody notifies. Against 0.2.0 the loop calls complete_and_reserve_ex,
// which says which completions were refused ('stale' or 'cancelled').
// Handlers run concurrently as promises, up to `concurrency` at once.

import os from 'node:os';
import pg from 'pg';
import { notifyChannel, quoteIdent } from './producer.js';

/** Error texts are kept up to 8 kB by the extension. */
const MAX_ERROR = 8000;

/** Raise from a handler to put the job back for `delayMs` (0 allowed)
 * without consuming its attempt. */
export class Snooze extends Error {
  /** @param {number} [delayMs] */
  constructor(delayMs = 0) {
    super(`snoozed for ${delayMs} ms`);
    this.name = 'Snooze';
    this.delayMs = delayMs;
  }
}

/** Raise from a handler to fail the job without retry: it goes to the dead
 * letters at once, with the message as its error. */
export class Fail extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = 'Fail';
  }
}

/** Raise from a handler to fail this attempt and retry after `retryInMs`
 * (default: the queue's backoff). */
export class Retry extends Error {
  /** @param {string} [message] @param {number} [retryInMs] */
  constructor(message = 'retry requested', retryInMs) {
    super(message);
    this.name = 'Retry';
    this.retryInMs = retryInMs;
  }
}

/**
 * A reserved job, as reserve() returns it, plus the worker's view.
 * @typedef {object} Job
 * @property {string} id  a bigint, as a string
 * @property {string} queue
 * @property {any} payload
 * @property {number} attempt
 * @property {number} maxAttempts
 * @property {string} leaseToken
 * @property {Date} leaseUntil
 * @property {number} priority
 * @property {string | null} concurrencyKey
 * @property {string | null} rateLimitKey
 * @property {Date} enqueuedAt
 * @property {AbortSignal} signal  aborted when the worker shuts down
 * @property {boolean} leaseLost  a heartbeat or the completion was refused:
 *   the job may run elsewhere, or was cancelled
 * @property {boolean} handedBack
 */

/** @typedef {(job: Job) => unknown} Handler */

/**
 * @typedef {object} WorkerOptions
 * @property {string | pg.ClientConfig} [connection]  default: the PG* environment
 * @property {string} [queue]
 * @property {Handler} [handler]
 * @property {Record<string, Handler>} [handlers]  queue -> handler
 * @property {number} [concurrency]  handlers running at once (default 1)
 * @property {number} [leaseMs]  lease asked for (default: the queue's)
 * @property {number} [heartbeatMs]  default: a third of the lease
 * @property {number} [pollMs]  fallback poll (default 5000)
 * @property {number} [graceMs]  shutdown grace period (default 30000)
 * @property {string} [name]  the worker name recorded on jobs
 * @property {boolean} [listen]  LISTEN for wake-ups (default true)
 * @property {[number, number]} [reconnectMs]  first and longest reconnect delay
 * @property {string} [applicationName]
 * @property {Pick<Console, 'info' | 'warn'>} [logger]
 * @property {(job: Job, reason: string) => void} [onLeaseLost]  called when the
 *   server refused the job's heartbeat ('heartbeat') or its completion
 *   ('stale': the lease was lost; 'cancelled': cancel(id, running => true);
 *   against 0.1.0 only refusals of complete(), as 'stale')
 */

/**
 * @typedef {object} InternalJob
 * @property {number} hbDue
 * @property {AbortController} abort
 */

class ConnectionLost extends Error {}

/** @param {any} err */
function isConnectionError(err) {
  const code = err && err.code;
  if (typeof code !== 'string' || !/^[0-9A-Z]{5}$/.test(code)) return true;
  return code.startsWith('08') || code.startsWith('57P');
}

/** @param {number | undefined | null} ms @returns {string | null} */
function interval(ms) {
  return ms === undefined || ms === null ? null : `${ms / 1000} seconds`;
}

const RESERVE_COLS =
  'r.id, r.queue, r.payload, r.attempt, r.max_attempts, r.lease_token, r.lease_until, r.priority, ' +
  'r.concurrency_key, r.rate_limit_key, r.enqueued_at, ' +
  "pg_catalog.date_part('epoch', r.lease_until OPERATOR(pg_catalog.-) pg_catalog.now()) AS lease_left";
const EX_SIG = 'throttle_jobs.complete_and_reserve_ex(text, text, bigint[], uuid[], jsonb[], integer, interval)';
const PAIRS = 'ROWS FROM (pg_catalog.unnest($1::bigint[]), pg_catalog.unnest($2::uuid[])) AS t(id, tok)';
const TRIPLES = 'ROWS FROM (pg_catalog.unnest($1::bigint[]), pg_catalog.unnest($2::uuid[]), ' +
  'pg_catalog.unnest($3::jsonb[])) AS t(id, tok, res)';

/** @param {number} ms */
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Runs `handler(job)` for the jobs of `queue`, or for several queues with
 * `handlers: { queue: handler }`. A handler's resolved value (JSON, or
 * undefined) is the job's result; throwing Snooze, Fail or Retry controls
 * the outcome; any other error fails the attempt with its text and stack.
 */
export class Worker {
  /** @param {WorkerOptions} opts */
  constructor(opts) {
    /** @type {Record<string, Handler>} */
    this.handlers = { ...(opts.handlers || {}) };
    if (opts.queue !== undefined) {
      if (!opts.handler) throw new TypeError('a queue needs a handler');
      this.handlers[opts.queue] = opts.handler;
    }
    this.queues = Object.keys(this.handlers);
    if (this.queues.length === 0) throw new TypeError('no queue to work on: pass queue and handler, or handlers');
    this.concurrency = opts.concurrency ?? 1;
    if (!(this.concurrency >= 1)) throw new RangeError(`concurrency must be at least 1, not ${this.concurrency}`);
    this.connection = opts.connection;
    this.lease = interval(opts.leaseMs);
    this.heartbeatMs = opts.heartbeatMs;
    this.pollMs = opts.pollMs ?? 5000;
    this.graceMs = opts.graceMs ?? 30000;
    this.name = opts.name ?? `${os.hostname()}:${process.pid}`;
    this.listen = opts.listen ?? true;
    this.reconnectMs = opts.reconnectMs ?? [100, 5000];
    this.applicationName = opts.applicationName ?? 'throttle_jobs worker';
    this.log = opts.logger ?? console;
    this.onLeaseLost = opts.onLeaseLost;
    /** @type {boolean | null} complete_and_reserve_ex exists (per connection) */
    this.hasEx = null;
    /** @type {Map<string, Job & InternalJob>} */
    this.running = new Map();
    /** @type {[Job & InternalJob, string, any][]} */
    this.outcomes = [];
    this.stats = { completed: 0, failed: 0, snoozed: 0, handedBack: 0, reconnects: 0, leaseLost: 0 };
    /** @type {pg.Client | null} */
    this.client = null;
    this.clientBroken = false;
    /** @type {Promise<pg.Client> | null} */
    this.connecting = null;
    this.stopping = false;
    this.hurry = false;
    this.closing = false;
    this.nextQueue = 0;
    this.stopAt = 0;
    this.wakeFlag = false;
    /** @type {(() => void)[]} */
    this.waiters = [];
  }

  /** Stop reserving; run() resolves once running handlers finish or the
   * grace period ends (hurry: hand the running jobs back now).
   * @param {{ hurry?: boolean }} [opts] */
  stop(opts = {}) {
    if (this.stopping || opts.hurry) this.hurry = true;
    if (!this.stopping) this.stopAt = Date.now();
    this.stopping = true;
    for (const j of this.running.values()) j.abort.abort();
    this.wake();
  }

  wake() {
    this.wakeFlag = true;
    const w = this.waiters;
    this.waiters = [];
    for (const r of w) r();
  }

  /** @param {number} ms */
  waitWake(ms) {
    if (this.wakeFlag) {
      this.wakeFlag = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const t = setTimeout(done, ms);
      const self = this;
      function done() {
        clearTimeout(t);
        self.wakeFlag = false;
        resolve(undefined);
      }
      this.waiters.push(done);
    });
  }

  /** Work until stop(), SIGTERM or SIGINT (a second signal hands the
   * running jobs back at once). Handlers still running after the hand-back
   * are abandoned: exit the process once run() resolves.
   * @param {{ signals?: boolean }} [opts] */
  async run(opts = {}) {
    const onSignal = () => this.stop();
    if (opts.signals ?? true) {
      process.on('SIGTERM', onSignal);
      process.on('SIGINT', onSignal);
    }
    const hb = setInterval(() => { this.heartbeat().catch(() => {}); }, 200);
    /** @type {Promise<void> | null} */
    const listener = this.listen ? this.listenLoop() : null;
    try {
      while (!this.stopping) {
        const full = await this.step(true);
        if (full) continue;
        await this.waitWake(this.pollMs);
      }
      await this.drain();
    } finally {
      this.closing = true;
      clearInterval(hb);
      if (this.listenClient) this.listenClient.end().catch(() => {});
      this.wake();
      if (listener) await listener;
      if (this.client) await this.client.end().catch(() => {});
      this.client = null;
      process.removeListener('SIGTERM', onSignal);
      process.removeListener('SIGINT', onSignal);
    }
  }

  // ------------------------------------------------------------ database
  /** @returns {pg.Client} */
  newClient() {
    const cfg = typeof this.connection === 'string'
      ? { connectionString: this.connection } : { ...(this.connection || {}) };
    return new pg.Client({ application_name: this.applicationName, connectionTimeoutMillis: 10000, ...cfg });
  }

  /** @returns {Promise<pg.Client>} */
  async connect() {
    if (this.client && !this.clientBroken) return this.client;
    if (!this.connecting) {
      this.connecting = (async () => {
        if (this.client) {
          this.stats.reconnects++;
          this.client.end().catch(() => {});
          this.client = null;
        }
        const c = this.newClient();
        c.on('error', () => { if (this.client === c) this.clientBroken = true; });
        c.on('end', () => { if (this.client === c) this.clientBroken = true; });
        await c.connect();
        this.client = c;
        this.clientBroken = false;
        this.hasEx = null;
        return c;
      })().finally(() => { this.connecting = null; });
    }
    return this.connecting;
  }

  /**
   * Run a query on the worker connection, reconnecting when it was lost
   * (retry: until it works, or until the shutdown hurries).
   * @param {string} text @param {any[]} values @param {boolean} [retry]
   * @returns {Promise<any[]>}
   */
  async db(text, values, retry = true) {
    let delay = this.reconnectMs[0];
    for (;;) {
      let err;
      try {
        const c = await this.connect();
        return (await c.query(text, values)).rows;
      } catch (e) {
        if (!this.clientBroken && !isConnectionError(e)) throw e;
        this.clientBroken = true;
        err = e;
      }
      const graceOver = this.stopping && Date.now() > this.stopAt + this.graceMs;
      if (!retry || this.hurry || graceOver) throw new ConnectionLost(String(err));
      this.log.warn(`worker connection lost (${err}); reconnecting in ${delay} ms`);
      await sleep(delay);
      delay = Math.min(delay * 2, this.reconnectMs[1]);
    }
  }

  // ------------------------------------------------------------ the loop
  /** The server refused the job's heartbeat or completion.
   * @param {Job & InternalJob} job @param {string} reason */
  lost(job, reason) {
    job.leaseLost = true;
    this.stats.leaseLost++;
    this.log.warn(`job ${job.id}: lease lost (${reason})`);
    if (this.onLeaseLost) {
      try {
        this.onLeaseLost(job, reason);
      } catch (e) {
        this.log.warn(`onLeaseLost failed for job ${job.id}: ${e}`);
      }
    }
  }

  /** Count the completions of done; report the refused ones.
   * @param {(Job & InternalJob)[]} done @param {Map<string, string>} refused */
  completed(done, refused) {
    for (const j of done) {
      const reason = refused.get(j.id);
      if (reason === undefined) this.stats.completed++;
      else this.lost(j, reason);
    }
  }

  /** @param {Job & InternalJob} job @param {string} kind @param {any} arg */
  async record(job, kind, arg) {
    if (kind === 'complete') {
      try {
        const rows = await this.db('SELECT throttle_jobs.complete($1, $2, $3::jsonb) AS ok',
          [job.id, job.leaseToken, JSON.stringify(arg)]);
        if (rows[0].ok) this.stats.completed++;
        else this.lost(job, 'stale');
        return;
      } catch (e) {
        if (e instanceof ConnectionLost) throw e;
        kind = 'fail';
        arg = [`result refused: ${e}`, null, true];
      }
    }
    if (kind === 'snooze') {
      await this.db('SELECT throttle_jobs.snooze($1, $2, $3::interval)', [job.id, job.leaseToken, interval(arg)]);
      this.stats.snoozed++;
    } else if (kind === 'fail') {
      const [text, retryIn, retryable] = arg;
      await this.db('SELECT throttle_jobs.fail($1, $2, $3, retry_in => $4::interval, retryable => $5)',
        [job.id, job.leaseToken, text, interval(retryIn), retryable]);
      this.stats.failed++;
    }
  }

  /** @param {any[]} rows @returns {(Job & InternalJob)[]} */
  jobsFrom(rows) {
    const now = Date.now();
    return rows.map((r) => {
      const leaseMs = Math.max(Number(r.lease_left) * 1000, 100);
      const abort = new AbortController();
      return {
        id: r.id, queue: r.queue, payload: r.payload, attempt: r.attempt, maxAttempts: r.max_attempts,
        leaseToken: r.lease_token, leaseUntil: r.lease_until, priority: r.priority,
        concurrencyKey: r.concurrency_key, rateLimitKey: r.rate_limit_key, enqueuedAt: r.enqueued_at,
        leaseLost: false, handedBack: false, abort, signal: abort.signal,
        hbDue: now + (this.heartbeatMs ?? leaseMs / 3),
      };
    });
  }

  /** Whether complete_and_reserve_ex exists (0.2.0), asked once per connection.
   * @returns {Promise<boolean>} */
  async checkEx() {
    if (this.hasEx === null) {
      const r = await this.db('SELECT pg_catalog.to_regprocedure($1) IS NOT NULL AS ok', [EX_SIG]);
      this.hasEx = r[0].ok;
    }
    return /** @type {boolean} */ (this.hasEx);
  }

  /** Record the finished jobs' outcomes and (reserve) fill the free slots.
   * Resolves true when every free slot got a job (do not wait). The
   * completions, results included (0.2.0), ride on the reservation
   * (complete_and_reserve_ex), or on one statement when there is nothing
   * to reserve; the other outcomes are recorded one by one.
   * @param {boolean} reserve @returns {Promise<boolean>} */
  async step(reserve) {
    const outcomes = this.outcomes;
    this.outcomes = [];
    /** @type {(Job & InternalJob)[]} */
    let done = [];
    /** @type {(string | null)[]} results as JSON text, NULL: none */
    let results = [];
    /** @type {(Job & InternalJob)[]} */
    const got = [];
    let free = 0;
    try {
      for (const outcome of outcomes) {
        const j = outcome[0];
        let [, k, a] = outcome;
        /** @type {string | null} */
        let text = null;
        if (k === 'complete' && a !== undefined) {
          try {
            text = JSON.stringify(a) ?? null;
          } catch (e) {
            k = 'fail';
            a = [`result refused: ${e}`, null, true];
          }
        }
        // (against 0.1.0 a result needs complete() of its own)
        if (k === 'complete' && (text === null || await this.checkEx())) {
          done.push(j);
          results.push(text);
        } else {
          await this.record(j, k, a);
          this.running.delete(j.id);
        }
      }
      free = this.concurrency - (this.running.size - done.length);
      if (!reserve || free <= 0) {
        if (done.length > 0) {
          const rows = await this.db(`SELECT t.id, throttle_jobs.complete(t.id, t.tok, t.res) AS ok FROM ${TRIPLES}`,
            [done.map((j) => j.id), done.map((j) => j.leaseToken), results]);
          for (const j of done) this.running.delete(j.id);
          this.completed(done, new Map(rows.filter((r) => !r.ok).map((r) => [r.id, 'stale'])));
        }
        return false;
      }
      const nq = this.queues.length;
      for (let i = 0; i < nq && got.length < free; i++) {
        const queue = this.queues[(this.nextQueue + i) % nq];
        const ids = done.map((j) => j.id);
        const toks = done.map((j) => j.leaseToken);
        const rows = await this.checkEx()
          ? await this.db(`SELECT r.outcome, ${RESERVE_COLS} FROM throttle_jobs.complete_and_reserve_ex($1, $2, $3::bigint[], $4::uuid[], $5::jsonb[], $6, $7::interval) AS r`,
            [queue, this.name, ids, toks, results.some((r) => r !== null) ? results : null, free - got.length, this.lease])
          : await this.db(`SELECT 'reserved' AS outcome, ${RESERVE_COLS} FROM throttle_jobs.complete_and_reserve($1, $2, $3::bigint[], $4::uuid[], $5, $6::interval) AS r`,
            [queue, this.name, ids, toks, free - got.length, this.lease]);
        if (done.length > 0) {
          for (const j of done) this.running.delete(j.id);
          this.completed(done, new Map(rows.filter((r) => r.outcome !== 'reserved').map((r) => [r.id, r.outcome])));
          done = [];
          results = [];
        }
        got.push(...this.jobsFrom(rows.filter((r) => r.outcome === 'reserved')));
      }
      this.nextQueue = (this.nextQueue + 1) % nq;
    } catch (e) {
      // The server may have refused a result (too large): nothing of the
      // statement happened; complete those jobs one by one, so that a
      // refused result fails its own job only.
      if (!(e instanceof ConnectionLost)) {
        for (let i = 0; i < done.length; i++) {
          if (results[i] === null) continue;
          try {
            await this.record(done[i], 'complete', JSON.parse(/** @type {string} */ (results[i])));
          } catch {
            break;
          }
          this.running.delete(done[i].id);
        }
      }
      // Give the unrecorded outcomes back for the next try.
      this.outcomes = outcomes.filter(([j]) => this.running.has(j.id)).concat(this.outcomes);
      if (e instanceof ConnectionLost) return false;
      if (/** @type {any} */ (e).code?.startsWith('42')) throw e;
      this.log.warn(`worker loop: ${e}; retrying`);
      await sleep(Math.min(this.pollMs, 1000));
      return false;
    }
    for (const j of got) {
      this.running.set(j.id, j);
      if (this.stopping) j.abort.abort();
      this.runJob(j);
    }
    return got.length >= free;
  }

  /** @param {Job & InternalJob} job */
  async runJob(job) {
    /** @type {[string, any]} */
    let outcome;
    try {
      const result = await this.handlers[job.queue](job);
      outcome = ['complete', result === null ? undefined : result];
    } catch (e) {
      if (e instanceof Snooze) outcome = ['snooze', e.delayMs];
      else if (e instanceof Fail) outcome = ['fail', [e.message, null, false]];
      else if (e instanceof Retry) outcome = ['fail', [e.message, e.retryInMs, true]];
      else {
        const err = /** @type {any} */ (e);
        let text = err && err.stack ? String(err.stack) : String(e);
        const head = `${err && err.name ? err.name : 'Error'}: ${err && err.message !== undefined ? err.message : e}\n`;
        if (!text.startsWith(head.trim())) text = head + text;
        // A V8 stack lists the innermost frame first: keep the beginning.
        if (text.length > MAX_ERROR) text = text.slice(0, MAX_ERROR);
        outcome = ['fail', [text, null, true]];
      }
    }
    if (this.running.has(job.id) && !job.handedBack) this.outcomes.push([job, outcome[0], outcome[1]]);
    this.wake();
  }

  /** Shutdown: let running handlers finish within the grace period, then
   * hand the rest back (snoozed 0: available at once, attempt not counted). */
  async drain() {
    for (const j of this.running.values()) j.abort.abort();
    const deadline = Date.now() + this.graceMs;
    for (;;) {
      await this.step(false);
      const busy = this.running.size > 0 || this.outcomes.length > 0;
      const left = deadline - Date.now();
      if (!busy || left <= 0 || this.hurry) break;
      await this.waitWake(Math.min(left, 200));
    }
    await this.step(false);
    const back = [...this.running.values()];
    for (const j of back) j.handedBack = true;
    this.outcomes = [];
    if (back.length > 0) {
      this.hurry = false;
      try {
        await this.db(`SELECT throttle_jobs.snooze(t.id, t.tok, '0'::interval) FROM ${PAIRS}`,
          [back.map((j) => j.id), back.map((j) => j.leaseToken)], false);
        this.stats.handedBack += back.length;
        this.log.info(`handed back ${back.length} job(s): ${back.map((j) => j.id).join(', ')}`);
      } catch (e) {
        this.log.warn(`could not hand back ${back.map((j) => j.id).join(', ')} (${e}): their leases will expire`);
      }
      for (const j of back) this.running.delete(j.id);
    }
  }

  // ------------------------------------------------------------ helpers
  heartbeatBusy = false;

  async heartbeat() {
    if (this.heartbeatBusy || this.closing) return;
    const now = Date.now();
    const due = [...this.running.values()].filter((j) => !j.leaseLost && !j.handedBack && j.hbDue <= now);
    if (due.length === 0) return;
    this.heartbeatBusy = true;
    try {
      const rows = await this.db(
        "SELECT t.id, pg_catalog.date_part('epoch', throttle_jobs.heartbeat(t.id, t.tok, $3::interval) " +
        `OPERATOR(pg_catalog.-) pg_catalog.now()) AS left FROM ${PAIRS}`,
        [due.map((j) => j.id), due.map((j) => j.leaseToken), this.lease], false);
      const left = new Map(rows.map((r) => [r.id, r.left]));
      const t = Date.now();
      for (const j of due) {
        const l = left.get(j.id);
        if (l === null || l === undefined) {
          this.lost(j, 'heartbeat');
        } else {
          j.hbDue = t + (this.heartbeatMs ?? Math.max(Number(l) * 1000, 300) / 3);
        }
      }
    } catch (e) {
      this.log.warn(`heartbeat failed: ${e}`);
      for (const j of due) j.hbDue = now + 500;
    } finally {
      this.heartbeatBusy = false;
    }
  }

  /** @type {pg.Client | null} */
  listenClient = null;

  async listenLoop() {
    let delay = this.reconnectMs[0];
    while (!this.closing) {
      const c = this.newClient();
      /** @type {Promise<void>} */
      const lost = new Promise((resolve) => {
        c.on('error', (e) => { this.log.warn(`listen connection lost (${e.message})`); resolve(); });
        c.on('end', () => resolve());
      });
      c.on('notification', () => this.wake());
      try {
        await c.connect();
        this.listenClient = c;
        // 0.2.0: the channel set_queue_notify notifies; then the queue's
        // own name, which producers notify by hand.
        const has = await c.query("SELECT pg_catalog.to_regprocedure('throttle_jobs.notify_channel(text)') IS NOT NULL AS ok");
        if (has.rows[0].ok) {
          for (const q of this.queues) {
            const ch = await c.query('SELECT throttle_jobs.notify_channel($1) AS ch', [q]);
            await c.query(`LISTEN ${quoteIdent(ch.rows[0].ch)}`);
          }
        }
        for (const q of this.queues) await c.query(`LISTEN ${quoteIdent(notifyChannel(q))}`);
        delay = this.reconnectMs[0];
        this.wake();   // notifications may have been missed
        await lost;
      } catch (e) {
        this.log.warn(`listen connection failed (${e})`);
      }
      this.listenClient = null;
      c.end().catch(() => {});
      if (this.closing) break;
      await sleep(delay);
      delay = Math.min(delay * 2, this.reconnectMs[1]);
    }
  }
}
