// A worker process for test/clients/node_test.mjs (the Node twin of
// py_worker.py).  The handler does what the job's payload says, and logs
// one JSON line per start and end to --log:
//   {"sleep": S}          sleep S seconds (on every attempt, or only on the
//                         attempts listed in "sleep_attempts")
//   {"raise": MSG}        throw new Error(MSG)
//   {"fail": MSG}         throw new Fail(MSG) (no retry)
//   {"snooze_once": S}    throw new Snooze(S s) the first time this process
//                         runs the job (a snooze does not count an attempt)
//   {"result": X}         return X (the job's result)
//   {"result_pad": N}     return {"pad": N x's} (a result larger than the
//                         payload may be)
// and a line {"ev": "lost", "reason": R} when the worker reports the job's
// lease lost (onLeaseLost).
// Run from a copy of clients/node holding node_modules (node.sh makes it).
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { Worker, Fail, Snooze } from '../src/index.js';

const { values: a } = parseArgs({
  options: {
    queue: { type: 'string' }, log: { type: 'string' }, concurrency: { type: 'string', default: '1' },
    lease: { type: 'string' }, heartbeat: { type: 'string' }, poll: { type: 'string', default: '5' },
    grace: { type: 'string', default: '10' }, app: { type: 'string', default: 'tj-test-worker' },
  },
});
const secs = (/** @type {string | undefined} */ v) => (v === undefined ? undefined : Number(v) * 1000);
const snoozed = new Set();

function note(ev, job, extra = {}) {
  fs.appendFileSync(a.log, JSON.stringify({ ev, id: Number(job.id), attempt: job.attempt, pid: process.pid, t: Date.now() / 1000, ...extra }) + '\n');
}

async function handler(job) {
  const p = job.payload || {};
  note('start', job);
  try {
    if ('sleep' in p && (p.sleep_attempts || [job.attempt]).includes(job.attempt)) {
      await new Promise((r) => setTimeout(r, p.sleep * 1000));
    }
    if ('raise' in p) throw new Error(p.raise);
    if ('fail' in p) throw new Fail(p.fail);
    if ('snooze_once' in p && !snoozed.has(job.id)) {
      snoozed.add(job.id);
      throw new Snooze(p.snooze_once * 1000);
    }
    if ('result_pad' in p) return { pad: 'x'.repeat(p.result_pad) };
    return p.result;
  } finally {
    note('end', job);
  }
}

const w = new Worker({
  queue: a.queue, handler, concurrency: Number(a.concurrency), leaseMs: secs(a.lease),
  heartbeatMs: secs(a.heartbeat), pollMs: secs(a.poll), graceMs: secs(a.grace),
  name: `node-${process.pid}`, applicationName: a.app,
  onLeaseLost: (job, reason) => note('lost', job, { reason }),
});
await w.run();
console.info(`stopped: ${JSON.stringify(w.stats)}`);
process.exit(0);
