// enqueue / enqueueBatch on the caller's client or transaction.

/**
 * Something with node-postgres' query(): a pg.Client, a pg.PoolClient inside
 * the caller's BEGIN..COMMIT, or a pg.Pool (each call its own transaction).
 * @typedef {{ query: (text: string, values?: any[]) => Promise<{ rows: any[] }> }} Queryable
 */

/**
 * @typedef {object} JobOptions
 * @property {Date | number} [runAt]  a time, or milliseconds from now
 * @property {number} [priority]
 * @property {number} [maxAttempts]
 * @property {string} [concurrencyKey]
 * @property {string} [rateLimitKey]
 * @property {string} [uniqueKey]
 * @property {number} [cost]
 * @property {boolean} [notify]  notify the queue's channel (default true)
 */

/** @type {Record<string, [string, string]>} option -> [SQL argument, SQL type] */
const ARGS = {
  runAt: ['run_at', 'timestamptz'],
  priority: ['priority', 'integer'],
  maxAttempts: ['max_attempts', 'integer'],
  concurrencyKey: ['concurrency_key', 'text'],
  rateLimitKey: ['rate_limit_key', 'text'],
  uniqueKey: ['unique_key', 'text'],
  cost: ['cost', 'integer'],
};

/**
 * The channel enqueue() notifies by hand: the queue's name
 * (`LISTEN "tenant-a:emails"`; pg_notify takes the name unquoted). A queue
 * with set_queue_notify on (0.2.0) notifies the server's
 * throttle_jobs.notify_channel(queue) by itself; the Worker listens on both.
 * @param {string} queue
 * @returns {string}
 */
export function notifyChannel(queue) {
  return queue;
}

/**
 * Quote an identifier for LISTEN.
 * @param {string} name
 * @returns {string}
 */
export function quoteIdent(name) {
  return '"' + name.replace(/"/g, '""') + '"';
}

/**
 * @param {Date | number} v
 * @returns {Date}
 */
function toDate(v) {
  return typeof v === 'number' ? new Date(Date.now() + v) : v;
}

/**
 * Enqueue one job in the caller's transaction. Returns its id (the live
 * job's id for a repeated uniqueKey; null when a full 'drop' queue dropped
 * it). Unless `notify: false`, notifies the queue's channel, which
 * PostgreSQL delivers at commit: a woken worker always finds the job.
 * Pass `notify: false` for a queue with set_queue_notify on (0.2.0): the
 * enqueue itself then notifies at commit.
 * @param {Queryable} client
 * @param {string} queue
 * @param {unknown} [payload]
 * @param {JobOptions} [opts]
 * @returns {Promise<string | null>}
 */
export async function enqueue(client, queue, payload = {}, opts = {}) {
  /** @type {unknown[]} */
  const values = [queue, JSON.stringify(payload ?? {})];
  const parts = ['$1::text', '$2::jsonb'];
  for (const [k, v] of Object.entries(opts)) {
    if (k === 'notify' || v === undefined || v === null) continue;
    const spec = ARGS[k];
    if (!spec) throw new TypeError(`unknown enqueue option "${k}"`);
    values.push(k === 'runAt' ? toDate(/** @type {any} */ (v)) : v);
    parts.push(`${spec[0]} => $${values.length}::${spec[1]}`);
  }
  const { rows } = await client.query(
    `SELECT throttle_jobs.enqueue(${parts.join(', ')}) AS id`, values);
  const id = rows[0].id;
  if (opts.notify !== false && id !== null) {
    await client.query("SELECT pg_catalog.pg_notify($1, '')", [notifyChannel(queue)]);
  }
  return id;
}

/**
 * @typedef {object} BatchJob
 * @property {unknown} [payload]
 * @property {Date} [runAt]
 * @property {number} [priority]
 * @property {number} [maxAttempts]
 * @property {string} [concurrencyKey]
 * @property {string} [rateLimitKey]
 * @property {string} [uniqueKey]
 * @property {number} [cost]
 */

/**
 * Enqueue many jobs in one statement, in the caller's transaction; returns
 * the ids in input order. `notify`: as enqueue().
 * @param {Queryable} client
 * @param {string} queue
 * @param {BatchJob[]} jobs
 * @param {{ notify?: boolean }} [opts]
 * @returns {Promise<(string | null)[]>}
 */
export async function enqueueBatch(client, queue, jobs, opts = {}) {
  if (jobs.length === 0) return [];
  const objs = jobs.map((j) => {
    /** @type {Record<string, unknown>} */
    const o = {};
    for (const [k, v] of Object.entries(j)) {
      if (k === 'payload') o.payload = v;
      else if (ARGS[k]) o[ARGS[k][0]] = v instanceof Date ? v.toISOString() : v;
      else throw new TypeError(`unknown job key "${k}" in enqueueBatch`);
    }
    return o;
  });
  const { rows } = await client.query(
    'SELECT id FROM throttle_jobs.enqueue_batch($1::text, $2::jsonb) AS id', [queue, JSON.stringify(objs)]);
  if (opts.notify !== false) {
    await client.query("SELECT pg_catalog.pg_notify($1, '')", [notifyChannel(queue)]);
  }
  return rows.map((r) => r.id);
}
