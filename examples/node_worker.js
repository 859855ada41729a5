#!/usr/bin/env node
// A throttle_jobs worker in Node (clients/node, on node-postgres).
//
//   node examples/node_worker.js                      # work until SIGTERM/Ctrl-C
//   node examples/node_worker.js enqueue a@example.com
//
// Connection settings come from the usual libpq variables (PGHOST,
// PGDATABASE, ...) or DATABASE_URL.  The queues are created if missing;
// creating queues is for admins, so in production create them in a migration.
// Needs `npm ci` in clients/node (for pg).  In an application, depend on the
// package and write instead:
//   import pg from 'pg';
//   import { Worker, Fail, Retry, Snooze, enqueue } from 'throttle-jobs-client';
import { createRequire } from 'node:module';
import { Worker, Fail, Retry, Snooze, enqueue } from '../clients/node/src/index.js';

const pg = createRequire(new URL('../clients/node/package.json', import.meta.url))('pg');

const connection = process.env.DATABASE_URL;
const EMAILS = process.env.EXAMPLE_QUEUE || 'emails';
const REPORTS = `${EMAILS}-reports`;

/** One handler per queue.  Resolve a JSON value to store it as the job's
 * result; throw to fail the attempt (retried with the queue's backoff).
 * @param {import('../clients/node/src/worker.js').Job} job */
async function sendEmail(job) {
  const { to, smtpBusy, notBefore } = job.payload;
  if (!to || !to.includes('@')) throw new Fail(`no valid recipient in ${JSON.stringify(job.payload)}`); // dead at once
  if (smtpBusy) throw new Retry('SMTP 451', 60_000);                         // retry in a minute
  if (notBefore && Date.now() < notBefore) throw new Snooze(notBefore - Date.now()); // attempt not counted
  console.info(`sending to ${to} (job ${job.id}, attempt ${job.attempt})`);
  return { sent: true };
}

/** A long job: the worker heartbeats its lease while it runs; job.signal is
 * aborted at shutdown, so a loop can return early (or finish in the grace).
 * @param {import('../clients/node/src/worker.js').Job} job */
async function buildReport(job) {
  for (let i = 0; i < (job.payload.steps ?? 3); i++) {
    if (job.signal.aborted) throw new Snooze(0);
    await new Promise((r) => setTimeout(r, 100));
  }
  return { rows: 42 };
}

const admin = new pg.Client(connection);
await admin.connect();
for (const q of [EMAILS, REPORTS]) {
  const { rows } = await admin.query('SELECT count(*)::int AS n FROM throttle_jobs.queues WHERE name = $1', [q]);
  if (rows[0].n === 0) await admin.query('SELECT throttle_jobs.create_queue($1, max_attempts => 5)', [q]);
}
if (process.argv[2] === 'enqueue') {
  // The producer: in the caller's transaction; the notification that wakes
  // the workers is delivered at commit.
  await admin.query('BEGIN');
  const id = await enqueue(admin, EMAILS, { to: process.argv[3] }, { concurrencyKey: 'smtp' });
  await admin.query('COMMIT');
  console.log(id);
  await admin.end();
  process.exit(0);
}
await admin.end();

const worker = new Worker({
  connection, handlers: { [EMAILS]: sendEmail, [REPORTS]: buildReport },
  concurrency: 4, leaseMs: 60_000, graceMs: 20_000,
});
await worker.run();   // resolves after SIGTERM/SIGINT and the hand-back
console.info(`stopped: ${JSON.stringify(worker.stats)}`);
process.exit(0);      // handlers abandoned after the grace may still hold timers
