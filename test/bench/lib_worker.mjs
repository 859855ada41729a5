// P1 with clients/node (group W of test/bench/run): one Worker, an instant
// handler, on QUEUE, until SIGTERM (the library's own shutdown).
//
//     node lib_worker.mjs QUEUE APPLICATION_NAME PIDFILE
//
// Connects with the PG* environment; writes its pid to PIDFILE.  Run from
// clients/node/bench/ of a copy of clients/node holding node_modules (made
// with `npm ci`, as test/clients/node.sh makes it).
import fs from 'node:fs';
import { Worker } from '../src/index.js';

const [queue, app, pidfile] = process.argv.slice(2);
fs.writeFileSync(pidfile, `${process.pid}\n`);
// no LISTEN: the backlog is full while measured; the poll only matters at
// the start (the queue is resumed while the workers wait)
const w = new Worker({
  queue, handler: () => undefined, concurrency: 1, pollMs: 50, listen: false,
  graceMs: 5000, applicationName: app,
});
await w.run();
console.info(`stopped: ${JSON.stringify(w.stats)}`);
process.exit(0);
