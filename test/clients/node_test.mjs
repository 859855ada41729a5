// Tests of clients/node against a real server (no mocks): the same cases as
// python_test.py.  Run by node.sh from a copy of clients/node holding
// node_modules, with PGHOST/PGPORT/PGUSER set and TJ_SCRATCH for logs.
// Works in database tj_clients_node (dropped first and at the end), runs
// worker processes (node_worker.mjs) and prints "ok: NAME" or
// "FAILED: NAME: why" per case; exits 1 if any case failed.
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { enqueue, enqueueBatch } from '../src/index.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const DB = 'tj_clients_node';
const LOGDIR = path.join(process.env.TJ_SCRATCH || '/tmp', 'clients-node');
fs.mkdirSync(LOGDIR, { recursive: true });
/** @type {import('node:child_process').ChildProcess[]} */
const PROCS = [];

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function withClient(db, fn) {
  const c = new pg.Client({ database: db });
  c.on('error', () => {});
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}
const q = (sql, params) => withClient(DB, async (c) => (await c.query(sql, params)).rows);
const q1 = async (sql, params) => {
  const rows = await q(sql, params);
  return rows.length ? Object.values(rows[0])[0] : undefined;
};

function check(cond, msg) {
  if (!cond) throw new Error(msg);
}

/** Poll pred() until true (each() runs between polls, e.g. maintain()). */
async function waitFor(pred, timeoutS, what, each, tickMs = 200) {
  const end = Date.now() + timeoutS * 1000;
  for (;;) {
    if (await pred()) return;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutS}s waiting for ${what}`);
    if (each) await each();
    await sleep(tickMs);
  }
}
const maintain = () => q('SELECT throttle_jobs.maintain()');

function startWorker(queue, log, opts = {}) {
  const args = [path.join(HERE, 'node_worker.mjs'), '--queue', queue, '--log', log];
  for (const [k, v] of Object.entries(opts)) args.push(`--${k}`, String(v));
  const out = fs.openSync(path.join(LOGDIR, `worker-${queue.replace(/:/g, '_')}-${PROCS.length}.out`), 'w');
  const p = spawn(process.execPath, args, { stdio: ['ignore', out, out], env: { ...process.env, PGDATABASE: DB } });
  p.exited = new Promise((r) => p.on('exit', (code, sig) => r(code ?? sig)));
  PROCS.push(p);
  return p;
}

async function stop(p, timeoutS = 20) {
  if (p.exitCode === null && p.signalCode === null) p.kill('SIGTERM');
  return Promise.race([p.exited, sleep(timeoutS * 1000).then(() => 'timeout')]);
}

function readLog(file) {
  if (!fs.existsSync(file)) return [];
  return fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));
}

function logpath(name) {
  const p = path.join(LOGDIR, `${name}.log`);
  fs.rmSync(p, { force: true });
  return p;
}

const archived = async (queue) => Number(await q1(
  "SELECT count(*) FROM throttle_jobs.archived_jobs WHERE queue = $1 AND state = 'completed'", [queue]));
const live = async (queue) => Number(await q1('SELECT count(*) FROM throttle_jobs.jobs WHERE queue = $1', [queue]));
const withDb = (fn) => withClient(DB, fn);

// ---------------------------------------------------------------- cases
const cases = {
  // enqueue is transactional; its notification reaches a LISTENer at commit,
  // on a quoted channel; enqueueBatch keeps order; uniqueKey returns the live job.
  async producer() {
    const queue = 'tenant-a:node';
    await q('SELECT throttle_jobs.create_queue($1)', [queue]);
    const listener = new pg.Client({ database: DB });
    await listener.connect();
    const got = [];
    listener.on('notification', (n) => got.push(n.channel));
    await listener.query('LISTEN "tenant-a:node"');
    try {
      await withDb(async (c) => {
        await c.query('BEGIN');
        await enqueue(c, queue, { n: 0 });
        await c.query('ROLLBACK');
      });
      check(await live(queue) === 0, 'a rolled-back enqueue left a job');
      const id = await withDb(async (c) => {
        await c.query('BEGIN');
        const jid = await enqueue(c, queue, { n: 1 }, { priority: 5, concurrencyKey: 'k1', runAt: 0 });
        await sleep(200);
        check(got.length === 0, 'notified before commit');
        await c.query('COMMIT');
        return jid;
      });
      await waitFor(() => got.length > 0, 5, 'the notification');
      check(got[0] === queue, `notified on ${got}, not ${queue}`);
      const row = await q('SELECT priority, concurrency_key, payload FROM throttle_jobs.jobs WHERE id = $1', [id]);
      check(JSON.stringify(row) === JSON.stringify([{ priority: 5, concurrency_key: 'k1', payload: { n: 1 } }]),
        `enqueued row ${JSON.stringify(row)}`);
      const ids = await withDb((c) => enqueueBatch(c, queue, [0, 1, 2, 3, 4].map((i) => ({ payload: { n: i }, priority: i }))));
      check(ids.length === 5 && ids.every((x, i) => i === 0 || Number(x) > Number(ids[i - 1])), `batch ids ${ids}`);
      const pl = (await q("SELECT payload->>'n' AS n FROM throttle_jobs.jobs WHERE id = ANY($1) ORDER BY id", [ids])).map((r) => r.n);
      check(pl.join() === '0,1,2,3,4', `batch payloads ${pl}`);
      const [u1, u2] = await withDb(async (c) => [await enqueue(c, queue, {}, { uniqueKey: 'u' }),
        await enqueue(c, queue, {}, { uniqueKey: 'u' })]);
      check(u1 === u2, `uniqueKey gave two jobs ${u1} ${u2}`);
      let refused = false;
      try {
        await withDb((c) => enqueueBatch(c, queue, [{ payload: {}, bogus: 1 }]));
      } catch (e) {
        refused = e instanceof TypeError;
      }
      check(refused, 'an unknown batch key was accepted');
    } finally {
      await listener.end();
    }
  },

  // 300 jobs, 3 worker processes x 4 handlers: each job done exactly once.
  // The workers are idle when the jobs arrive and poll only every 60 s, so
  // the jobs are picked up through LISTEN.
  async once() {
    const queue = 'node_once';
    await q('SELECT throttle_jobs.create_queue($1)', [queue]);
    const log = logpath('once');
    const ws = [0, 1, 2].map(() => startWorker(queue, log, { concurrency: 4, poll: 60 }));
    await waitFor(async () => Number(await q1('SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE query = $1',
      ['LISTEN "node_once"'])) === 3, 20, '3 listening workers');
    await withDb((c) => enqueueBatch(c, queue, Array.from({ length: 300 }, () => ({ payload: { sleep: 0.01 } }))));
    await waitFor(async () => await archived(queue) === 300, 30, '300 completed jobs');
    for (const w of ws) check(await stop(w) === 0, 'a worker did not exit 0');
    const ends = readLog(log).filter((e) => e.ev === 'end').map((e) => e.id);
    check(ends.length === 300 && new Set(ends).size === 300, `${ends.length} handler runs for ${new Set(ends).size} distinct jobs`);
    check(Number(await q1('SELECT count(*) FROM throttle_jobs.archived_jobs WHERE queue = $1 AND attempt = 1', [queue])) === 300,
      'some job took more than one attempt');
    const pids = new Set(readLog(log).map((e) => e.pid));
    check(pids.size === 3, `only ${pids.size} of 3 workers got jobs`);
  },

  // A worker killed (SIGKILL) mid-job: after its lease expires the job is
  // retried by another worker (attempt 2, error 'lease expired').
  async sigkill() {
    const queue = 'node_kill';
    await q("SELECT throttle_jobs.create_queue($1, lease => '2 s', backoff_base => '100 ms')", [queue]);
    const log = logpath('kill');
    const w1 = startWorker(queue, log);
    const jid = await withDb((c) => enqueue(c, queue, { sleep: 60, sleep_attempts: [1] }));
    await waitFor(() => readLog(log).some((e) => e.ev === 'start'), 20, 'the job to start');
    w1.kill('SIGKILL');
    await w1.exited;
    check(await q1('SELECT state FROM throttle_jobs.jobs WHERE id = $1', [jid]) === 'running', "the killed worker's job is not running");
    const w2 = startWorker(queue, log, { poll: 0.3 });
    await waitFor(async () => await archived(queue) === 1, 30, 'the job retried and completed', maintain, 300);
    check(await stop(w2) === 0, 'worker exit status');
    const row = await q("SELECT attempt, errors->0->>'error' AS e FROM throttle_jobs.archived_jobs WHERE id = $1", [jid]);
    check(row.length === 1 && row[0].attempt === 2 && row[0].e === 'lease expired', `archived ${JSON.stringify(row)}`);
  },

  // SIGTERM: a handler that ends within the grace period completes its job;
  // one that does not has its job handed back (available at once, attempt
  // not counted) and the worker exits 0 soon after the grace.
  async sigterm() {
    const queue = 'node_term';
    await q('SELECT throttle_jobs.create_queue($1)', [queue]);
    const log = logpath('term');
    const w = startWorker(queue, log, { concurrency: 2, grace: 1.5 });
    const [short, long] = await withDb(async (c) => [await enqueue(c, queue, { sleep: 0.8 }), await enqueue(c, queue, { sleep: 60 })]);
    await waitFor(() => readLog(log).filter((e) => e.ev === 'start').length === 2, 20, 'both jobs to start');
    const t0 = Date.now();
    const rc = await stop(w);
    const took = (Date.now() - t0) / 1000;
    check(rc === 0, `worker exit status ${rc}`);
    check(took < 8, `the worker took ${took} s to stop`);
    check(await q1('SELECT state FROM throttle_jobs.archived_jobs WHERE id = $1', [short]) === 'completed', 'the short job was not completed');
    const row = await q('SELECT state, attempt, worker FROM throttle_jobs.jobs WHERE id = $1', [long]);
    check(JSON.stringify(row) === JSON.stringify([{ state: 'available', attempt: 0, worker: null }]),
      `the long job is ${JSON.stringify(row)}, not handed back`);
  },

  // A handler error is retried, then dead-lettered with its text and stack;
  // Fail dead-letters at once; Snooze does not count the attempt; a returned
  // value is the job's result.
  async errors() {
    const queue = 'node_err';
    await q("SELECT throttle_jobs.create_queue($1, max_attempts => 3, backoff_base => '50 ms', backoff_factor => 1)", [queue]);
    const log = logpath('err');
    const w = startWorker(queue, log, { concurrency: 2, poll: 0.2 });
    const [boom, nope, snz, res] = await withDb(async (c) => [
      await enqueue(c, queue, { raise: 'boom' }), await enqueue(c, queue, { fail: 'nope' }),
      await enqueue(c, queue, { snooze_once: 0.1 }), await enqueue(c, queue, { result: { x: 1 } })]);
    await waitFor(async () => Number(await q1('SELECT count(*) FROM throttle_jobs.dead_letters WHERE queue = $1', [queue])) === 2
      && await archived(queue) === 2, 30, '2 dead and 2 completed jobs');
    check(await stop(w) === 0, 'worker exit status');
    let row = (await q('SELECT reason, attempt, pg_catalog.jsonb_array_length(errors) AS n, last_error ' +
      'FROM throttle_jobs.dead_letters WHERE id = $1', [boom]))[0];
    check(row.reason === 'attempts exhausted' && row.attempt === 3 && row.n === 3, `boom: ${JSON.stringify(row)}`);
    check(row.last_error.includes('Error: boom') && row.last_error.includes('node_worker.mjs'),
      `boom's error lacks its text or stack: ${row.last_error}`);
    row = await q('SELECT reason, attempt, last_error FROM throttle_jobs.dead_letters WHERE id = $1', [nope]);
    check(JSON.stringify(row) === JSON.stringify([{ reason: 'failed without retry', attempt: 1, last_error: 'nope' }]), `nope: ${JSON.stringify(row)}`);
    row = await q('SELECT attempt, result FROM throttle_jobs.archived_jobs WHERE id = ANY($1) ORDER BY id', [[snz, res]]);
    check(JSON.stringify(row) === JSON.stringify([{ attempt: 1, result: null }, { attempt: 1, result: { x: 1 } }]),
      `snoozed/result jobs: ${JSON.stringify(row)}`);
    const runs = readLog(log).filter((e) => e.ev === 'start' && e.id === Number(snz));
    check(runs.length === 2, `the snoozed job ran ${runs.length} times`);
  },

  // Results ride on the next reservation: 20 jobs' results are kept while
  // complete() runs only for the other jobs of the batch whose statement
  // the server refused; a result over max_payload_size fails its own job.
  async results() {
    const queue = 'node_res';
    await q("SELECT throttle_jobs.create_queue($1, max_attempts => 1)", [queue]);
    // (for the worker's sessions, which connect later)
    await q(`ALTER DATABASE ${DB} SET track_functions = 'all'`);
    await q(`ALTER DATABASE ${DB} SET throttle_jobs.max_payload_size = 4096`);
    let ids;
    let big;
    try {
      [ids, big] = await withDb(async (c) => {
        const r = [];
        for (let i = 0; i < 20; i++) r.push(await enqueue(c, queue, { result: { n: i } }));
        return [r, await enqueue(c, queue, { result_pad: 10000 })];
      });
      const w = startWorker(queue, logpath('res'), { concurrency: 4, poll: 0.2 });
      await waitFor(async () => await archived(queue) === 20
        && Number(await q1('SELECT count(*) FROM throttle_jobs.dead_letters WHERE queue = $1', [queue])) === 1,
      30, '20 completed jobs and 1 dead');
      check(await stop(w) === 0, 'worker exit status');
    } finally {
      await q(`ALTER DATABASE ${DB} RESET track_functions`);
      await q(`ALTER DATABASE ${DB} RESET throttle_jobs.max_payload_size`);
    }
    const rows = await q('SELECT id, result FROM throttle_jobs.archived_jobs WHERE queue = $1 ORDER BY id', [queue]);
    check(JSON.stringify(rows) === JSON.stringify(ids.map((id, i) => ({ id, result: { n: i } }))),
      `results: ${JSON.stringify(rows)}`);
    const err = await q1('SELECT last_error FROM throttle_jobs.dead_letters WHERE id = $1', [big]);
    check(typeof err === 'string' && err.startsWith('result refused'), `the big result's job: ${err}`);
    const calls = async () => Object.fromEntries((await q("SELECT funcname, calls FROM pg_catalog.pg_stat_user_functions " +
      "WHERE schemaname = 'throttle_jobs' AND funcname IN ('complete', 'complete_and_reserve_ex')")).map((r) => [r.funcname, Number(r.calls)]));
    // (the worker's backend reports its counts when idle and when it exits;
    // a call that raised an error is not counted)
    await waitFor(async () => ((await calls()).complete_and_reserve_ex ?? 0) > 0, 10, "the worker's function counts");
    const n = (await calls()).complete ?? 0;
    check(n <= 3, `complete() ran ${n} times for 20 jobs with results (4 at once)`);
  },

  // Heartbeats keep a 4 s job alive under a 1 s lease while maintain() runs;
  // without them (heartbeat every 100 s) the lease expires.
  async heartbeat() {
    const queue = 'node_hb';
    await q("SELECT throttle_jobs.create_queue($1, lease => '1 s', backoff_base => '100 ms')", [queue]);
    const log = logpath('hb');
    let w = startWorker(queue, log);
    let jid = await withDb((c) => enqueue(c, queue, { sleep: 4 }));
    await waitFor(async () => await archived(queue) === 1, 30, 'the long job to complete', maintain);
    check(await stop(w) === 0, 'worker exit status');
    let row = await q('SELECT attempt, errors FROM throttle_jobs.archived_jobs WHERE id = $1', [jid]);
    check(JSON.stringify(row) === JSON.stringify([{ attempt: 1, errors: [] }]), `heartbeated job: ${JSON.stringify(row)}`);
    w = startWorker(queue, log, { heartbeat: 100, poll: 0.3 });
    jid = await withDb((c) => enqueue(c, queue, { sleep: 3, sleep_attempts: [1] }));
    await waitFor(async () => await archived(queue) === 2, 30, 'the job to complete', maintain);
    check(await stop(w) === 0, 'worker exit status');
    row = await q("SELECT attempt, errors->0->>'error' AS e FROM throttle_jobs.archived_jobs WHERE id = $1", [jid]);
    check(row.length === 1 && row[0].attempt === 2 && row[0].e === 'lease expired', `job without heartbeats: ${JSON.stringify(row)}`);
  },

  // pg_terminate_backend on the worker's connections (worker and LISTEN)
  // while a job runs: the job still completes (attempt 1) and later jobs are
  // still woken and done.
  async reconnect() {
    const queue = 'node_conn';
    await q('SELECT throttle_jobs.create_queue($1)', [queue]);
    const log = logpath('conn');
    const w = startWorker(queue, log, { concurrency: 2, poll: 60, app: 'tj-test-conn' });
    const first = await withDb((c) => enqueue(c, queue, { sleep: 2 }));
    await waitFor(() => readLog(log).some((e) => e.ev === 'start'), 20, 'the job to start');
    const n = Number(await q1('SELECT count(*) FROM (SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity ' +
      "WHERE application_name = 'tj-test-conn') t"));
    check(n === 2, `${n} worker connections terminated, not 2`);
    await waitFor(async () => await archived(queue) === 1, 30, 'the running job to complete after the reconnect');
    check(await q1('SELECT attempt FROM throttle_jobs.archived_jobs WHERE id = $1', [first]) === 1, 'attempt');
    await waitFor(async () => Number(await q1("SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE application_name = 'tj-test-conn'")) === 2,
      20, 'the worker to reconnect both connections');
    await withDb((c) => enqueueBatch(c, queue, Array.from({ length: 5 }, () => ({ payload: {} }))));
    await waitFor(async () => await archived(queue) === 6, 20, 'jobs enqueued after the reconnect (woken by LISTEN)');
    check(await stop(w) === 0, 'worker exit status');
  },

  // A key capped at 2: 3 worker processes x 3 handlers never run more than 2
  // of its jobs at once, and do run 2 at once.
  async throttled() {
    const queue = 'node_cap';
    await q('SELECT throttle_jobs.create_queue($1)', [queue]);
    await q("SELECT throttle_jobs.set_concurrency_limit('node:cap', 2)");
    const log = logpath('cap');
    const ws = [0, 1, 2].map(() => startWorker(queue, log, { concurrency: 3, poll: 0.2 }));
    await withDb((c) => enqueueBatch(c, queue, Array.from({ length: 16 }, () => ({ payload: { sleep: 0.3 }, concurrencyKey: 'node:cap' }))));
    await waitFor(async () => await archived(queue) === 16, 60, '16 completed jobs');
    for (const w of ws) check(await stop(w) === 0, 'worker exit status');
    // at equal times count the end first: intervals that touch do not overlap
    const events = readLog(log).map((e) => [e.t, e.ev === 'start' ? 1 : -1]).sort((x, y) => x[0] - y[0] || x[1] - y[1]);
    let cur = 0;
    let peak = 0;
    for (const [, d] of events) {
      cur += d;
      peak = Math.max(peak, cur);
    }
    check(peak === 2, `at most ${peak} jobs of the capped key ran at once, not 2`);
  },

  // examples/node_worker.js: its producer enqueues, its worker completes the
  // job with the handler's result, dead-letters a bad recipient without
  // retry, and stops with status 0 on SIGTERM.
  async example() {
    const ex = path.join(HERE, '..', '..', '..', 'examples', 'node_worker.js');
    const env = { ...process.env, PGDATABASE: DB, EXAMPLE_QUEUE: 'ex-node' };
    const out = fs.openSync(path.join(LOGDIR, 'example.out'), 'w');
    const w = spawn(process.execPath, [ex], { stdio: ['ignore', out, out], env });
    w.exited = new Promise((r) => w.on('exit', (code, sig) => r(code ?? sig)));
    PROCS.push(w);
    await waitFor(async () => Number(await q1(`SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE query = 'LISTEN "ex-node-reports"'`)) === 1,
      20, 'the example worker to listen on its queues');
    const run = (to) => new Promise((resolve, reject) => {
      const p = spawn(process.execPath, [ex, 'enqueue', to], { env, stdio: ['ignore', 'pipe', 'inherit'] });
      let s = '';
      p.stdout.on('data', (d) => { s += d; });
      p.on('exit', (code) => (code === 0 ? resolve(s.trim()) : reject(new Error(`enqueue exited ${code}`))));
    });
    const ok = await run('a@example.com');
    const bad = await run('nobody');
    await waitFor(async () => await archived('ex-node') === 1 &&
      Number(await q1("SELECT count(*) FROM throttle_jobs.dead_letters WHERE queue = 'ex-node'")) === 1, 20, 'both jobs done');
    check(JSON.stringify(await q1('SELECT result FROM throttle_jobs.archived_jobs WHERE id = $1', [ok])) === '{"sent":true}', 'result');
    check(await q1('SELECT reason FROM throttle_jobs.dead_letters WHERE id = $1', [bad]) === 'failed without retry', 'the bad recipient');
    check(await stop(w) === 0, 'example exit status');
  },

  // set_queue_notify (0.2.0): a worker that polls only every 60 s is woken by
  // an enqueue with notify: false (no hand-made notification), through
  // notify_channel(queue): 'tj:' + a short name, an md5 for a long one. A job
  // enqueued while the queue's notify is off waits (the control).
  async queueNotify() {
    for (const queue of ['node-qn', 'node-qn-' + 'x'.repeat(54)]) {
      await q('SELECT throttle_jobs.create_queue($1)', [queue]);
      const log = logpath('qn');
      const w = startWorker(queue, log, { poll: 60 });
      // the worker LISTENs on notify_channel(queue) before the queue's name
      await waitFor(async () => Number(await q1('SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE query = $1',
        [`LISTEN "${queue}"`])) === 1, 20, 'the worker listening');
      const first = await withDb((c) => enqueue(c, queue, { n: 1 }, { notify: false }));
      await sleep(2000);
      check(await live(queue) === 1 && readLog(log).length === 0, 'a job without any notification was taken before the poll');
      await q('SELECT throttle_jobs.set_queue_notify($1, true)', [queue]);
      const [second] = await withDb((c) => enqueueBatch(c, queue, [{ payload: { n: 2 } }], { notify: false }));
      await waitFor(async () => await archived(queue) === 2, 10, 'the woken worker to run both jobs');
      const ids = new Set(readLog(log).filter((e) => e.ev === 'end').map((e) => String(e.id)));
      check(ids.size === 2 && ids.has(String(first)) && ids.has(String(second)), `the worker ran ${[...ids]}`);
      check(await stop(w) === 0, 'worker exit status');
    }
  },

  // A running job cancelled (cancel(id, running => true)): the handler's
  // completion is refused, and complete_and_reserve_ex tells the worker,
  // which calls onLeaseLost(job, 'cancelled'); nothing is completed.
  async leaseLost() {
    const queue = 'node_lost';
    await q('SELECT throttle_jobs.create_queue($1)', [queue]);
    const log = logpath('lost');
    const w = startWorker(queue, log, { lease: 60, poll: 0.5 });
    const jid = await withDb((c) => enqueue(c, queue, { sleep: 3 }));
    await waitFor(() => readLog(log).some((e) => e.ev === 'start'), 20, 'the job to start');
    check(await q1('SELECT throttle_jobs.cancel($1, running => true)', [jid]) === true, 'cancel refused');
    await waitFor(() => readLog(log).some((e) => e.ev === 'lost'), 20, 'the lease-lost report');
    const lost = readLog(log).filter((e) => e.ev === 'lost').map((e) => `${e.id}:${e.reason}`);
    check(lost.length === 1 && lost[0] === `${jid}:cancelled`, `reported ${lost}`);
    check(await archived(queue) === 0, 'the cancelled job was completed');
    check(await q1('SELECT state FROM throttle_jobs.archived_jobs WHERE id = $1', [jid]) === 'cancelled',
      'the job is not archived as cancelled');
    check(await stop(w) === 0, 'worker exit status');
  },
};

async function main() {
  const only = process.argv.slice(2);
  await withClient('postgres', async (c) => {
    await c.query(`DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`);
    await c.query(`CREATE DATABASE ${DB}`);
  });
  await q('CREATE EXTENSION throttle_jobs');
  let failed = 0;
  try {
    for (const [name, fn] of Object.entries(cases)) {
      if (only.length && !only.includes(name)) continue;
      const t0 = Date.now();
      try {
        await fn();
        console.log(`ok: node/${name} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
      } catch (e) {
        failed++;
        console.log(`FAILED: node/${name}: ${e && e.stack ? e.stack : e}`);
      } finally {
        for (const p of PROCS) {
          if (p.exitCode === null && p.signalCode === null) {
            p.kill('SIGKILL');
            await p.exited;
          }
        }
        PROCS.length = 0;
      }
    }
  } finally {
    await withClient('postgres', (c) => c.query(`DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`));
  }
  process.exit(failed ? 1 : 0);
}

await main();
