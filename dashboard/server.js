#!/usr/bin/env node
// dashboard/server.js -- the throttle_jobs web dashboard.
//
//   node dashboard/server.js --database postgres://role@host/db [--port 8181] [--host 127.0.0.1]
//
// One process, one connection pool, one database role: the dashboard sees and
// does what that role may (the extension's privilege model).  It reads the
// extension's views and calls its functions only; every statement is a
// constant string with parameters (no SQL is built from request input).
// Pages are rendered on the server; static/app.js refreshes the live part of
// each page by polling and sends the actions (POST /api/action, JSON, with the
// CSRF token of the browser's session cookie).

'use strict';

const http = require('http');
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const { Pool } = require('pg');

// ------------------------------------------------------------------ options
function usage(code) {
    const text = 'usage: node server.js --database postgres://user@host:port/db [--port 8181] [--host 127.0.0.1]\n' +
        '  --database URL  connection string (libpq PG* variables fill in what it leaves out)\n' +
        '  --port N        TCP port to listen on (default 8181; 0 = any free port)\n' +
        '  --host ADDR     address to bind (default 127.0.0.1: this machine only)\n' +
        '  --refresh SECS  how often pages refresh their live part (default 5)\n' +
        '  --allow-host H  also accept requests for host name H (a reverse proxy\'s public name; repeatable)\n';
    (code ? process.stderr : process.stdout).write(text);
    process.exit(code);
}

function parseArgs(argv) {
    const opts = { database: process.env.DATABASE_URL || null, port: 8181, host: '127.0.0.1', refresh: 5, allowHosts: [] };
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        const eq = a.indexOf('=');
        const name = eq > 0 ? a.slice(0, eq) : a;
        const value = () => (eq > 0 ? a.slice(eq + 1) : argv[++i]);
        switch (name) {
        case '--database': case '-d': opts.database = value(); break;
        case '--port': case '-p': opts.port = Number(value()); break;
        case '--host': opts.host = value(); break;
        case '--refresh': opts.refresh = Number(value()); break;
        case '--allow-host': opts.allowHosts.push(...String(value()).split(',').map((h) => h.trim().toLowerCase()).filter(Boolean)); break;
        case '--help': case '-h': usage(0); break;
        default:
            process.stderr.write(`unknown option "${a}"\n`);
            usage(2);
        }
    }
    if (!opts.database) {
        process.stderr.write('--database is required\n');
        usage(2);
    }
    if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) {
        process.stderr.write(`invalid --port "${opts.port}"\n`);
        usage(2);
    }
    if (!(opts.refresh >= 1 && opts.refresh <= 3600)) {
        process.stderr.write(`invalid --refresh "${opts.refresh}"\n`);
        usage(2);
    }
    return opts;
}

// ------------------------------------------------------------------ database
const PAGE = 50;                  // rows per page of jobs and dead letters
const STATEMENT_TIMEOUT_MS = 10000;

function makePool(connectionString) {
    // Every name below is schema-qualified; the path is pinned anyway.
    const pool = new Pool({
        connectionString, max: 5, application_name: 'throttle_jobs_dashboard',
        options: `-c search_path=pg_catalog,pg_temp -c statement_timeout=${STATEMENT_TIMEOUT_MS}`,
    });
    pool.on('error', (err) => process.stderr.write(`pool error: ${err.message}\n`));
    return pool;
}

// The action functions the dashboard may call, for the privilege check.
const ACTION_FUNCTIONS = ['pause_queue', 'resume_queue', 'retry_dead', 'cancel', 'purge_dead',
    'delete_dead', 'set_concurrency_limit', 'set_rate_limit', 'drop_limit', 'explain_job'];

// caps(db): what the connected role may do.  fn: function -> EXECUTE
// privilege; manages: the queues it manages (admin, owner, or a 'manage'
// grant, as the extension checks).
async function caps(db) {
    const r = await db.query(
        `SELECT p.proname::text AS fn, pg_catalog.bool_or(pg_catalog.has_function_privilege(p.oid, 'EXECUTE')) AS ok
         FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'throttle_jobs' AND p.proname = ANY ($1::pg_catalog.name[])
         GROUP BY 1`, [ACTION_FUNCTIONS]);
    const fn = {};
    for (const row of r.rows) fn[row.fn] = row.ok;
    const who = await db.query(
        `SELECT current_user::text AS role,
                pg_catalog.pg_has_role('throttle_jobs_admin', 'USAGE') AS admin,
                pg_catalog.has_table_privilege('throttle_jobs.queue_grants', 'SELECT') AS grants_readable,
                pg_catalog.has_table_privilege('throttle_jobs.queues', 'SELECT') AS queues_readable`);
    const c = { role: who.rows[0].role, admin: who.rows[0].admin, fn, manages: new Set() };
    if (who.rows[0].queues_readable) {
        const q = await db.query(
            `SELECT q.name FROM throttle_jobs.queues q
             WHERE $1::boolean OR pg_catalog.pg_has_role(q.owner::pg_catalog.oid, 'USAGE')`, [c.admin]);
        for (const row of q.rows) c.manages.add(row.name);
        if (who.rows[0].grants_readable) {
            const g = await db.query(
                `SELECT g.queue FROM throttle_jobs.queue_grants g
                 WHERE g.privilege = 'manage' AND pg_catalog.pg_has_role(g.grantee::pg_catalog.oid, 'USAGE')`);
            for (const row of g.rows) c.manages.add(row.queue);
        }
    }
    c.can = (action, queue) => {
        switch (action) {
        case 'pause_queue': case 'resume_queue': case 'purge_dead': case 'cancel': case 'retry_dead': case 'discard_dead':
            if (action === 'discard_dead') return !!(fn.delete_dead || (fn.retry_dead && fn.cancel)) && (queue === undefined || c.manages.has(queue));
            return !!fn[action] && (queue === undefined || c.manages.has(queue));
        case 'set_concurrency_limit': case 'set_rate_limit': case 'drop_limit':
            return !!fn[action];
        default:
            return false;
        }
    };
    c.readOnly = !(c.manages.size > 0 && (fn.retry_dead || fn.pause_queue)) && !fn.set_concurrency_limit;
    return c;
}

// ------------------------------------------------------------------ keyset paging
// The job views are security barriers: the planner cannot push ORDER BY id
// LIMIT n through them, but it does push an id range (leakproof operators)
// down to the primary key.  So a page is read in id windows going down from
// `before`, each window 4 times wider than the last, until the page is full,
// the ids run out, or the time budget is spent (then the page ends early and
// its "older" link resumes where the scan stopped).  A page of a queue with a
// million jobs reads one window of a few thousand index entries.
const FIRST_WINDOW = 4096;
const PAGE_BUDGET_MS = 1500;

// maxId(db, view): an exclusive upper bound of the ids in view (a power of 4).
async function maxId(db, view) {
    const sql = view === 'dead'
        ? 'SELECT EXISTS (SELECT FROM throttle_jobs.dead_letters d WHERE d.id >= $1::pg_catalog.int8) AS more'
        : 'SELECT EXISTS (SELECT FROM throttle_jobs.jobs j WHERE j.id >= $1::pg_catalog.int8) AS more';
    let x = FIRST_WINDOW;
    while (x < Number.MAX_SAFE_INTEGER / 4 && (await db.query(sql, [x])).rows[0].more) x *= 4;
    return x;
}

// windowed(db, sql, params, before, want): rows of sql, whose last three
// parameters are the window's low id (inclusive), high id (exclusive) and a
// LIMIT; returns { rows, resumeAt } (resumeAt: the "before" of the next page
// when the scan stopped early, else null).
async function windowed(db, view, sql, params, before, want) {
    let hi = before ? Number(before) : await maxId(db, view);
    let w = FIRST_WINDOW;
    const rows = [];
    const t0 = Date.now();
    while (hi > 0 && rows.length < want) {
        const lo = Math.max(0, hi - w);
        const r = await db.query(sql, [...params, lo, hi, want - rows.length]);
        rows.push(...r.rows);
        hi = lo;
        w *= 4;
        if (rows.length < want && hi > 0 && Date.now() - t0 > PAGE_BUDGET_MS) return { rows, resumeAt: hi };
    }
    return { rows, resumeAt: null };
}

// ------------------------------------------------------------------ HTML helpers
function esc(v) {
    if (v === null || v === undefined) return '';
    return String(v).replace(/[&<>"']/g, (ch) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[ch]);
}

function fmt(v) {
    if (v === null || v === undefined) return '';
    if (v instanceof Date) return v.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
    if (typeof v === 'object' && typeof v.toPostgres === 'function') return v.toPostgres() || '0';
    if (typeof v === 'object') return JSON.stringify(v);
    if (typeof v === 'boolean') return v ? 'yes' : 'no';
    return String(v);
}

function td(v, cls) { return `<td${cls ? ` class="${cls}"` : ''}>${esc(fmt(v))}</td>`; }

function qs(params) {
    const u = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== '') u.set(k, v);
    const s = u.toString();
    return s ? `?${s}` : '';
}

// p50 / p95 / p99, or a dash when none is known (nothing measured yet, or
// statistics not preloaded).
function pcts(a, b, c) {
    return [a, b, c].every((x) => x === null || x === undefined) ? '—' : [a, b, c].map(secs).join(' / ');
}

function secs(v) {
    if (v === null || v === undefined) return '';
    const n = Number(v);
    if (n < 1) return `${Math.round(n * 1000)} ms`;
    if (n < 120) return `${n.toFixed(1)} s`;
    if (n < 7200) return `${(n / 60).toFixed(1)} min`;
    return `${(n / 3600).toFixed(1)} h`;
}

// data-action button: app.js asks to confirm, posts, and shows the result.
function actionButton(label, action, args, confirmText, extra) {
    const danger = /danger/.test(extra || '');
    extra = (extra || '').replace(/ class="[^"]*"/, '');
    return `<button type="button" class="act${danger ? ' danger' : ''}" data-action="${esc(action)}" data-args="${esc(JSON.stringify(args || {}))}"` +
        ` data-confirm="${esc(confirmText)}"${extra || ''}>${esc(label)}</button>`;
}

function layout(title, nav, c, filters, live, csrf, refresh) {
    const links = [['/', 'Queues'], ['/dead', 'Dead letters'], ['/keys', 'Keys and limits'], ['/workers', 'Workers']]
        .map(([href, label]) => `<a href="${href}"${nav === href ? ' class="here"' : ''}>${label}</a>`).join('');
    const banner = c.readOnly
        ? `<p class="readonly" id="readonly">Read-only: role <b>${esc(c.role)}</b> may not act on queues, dead letters or limits.</p>`
        : '';
    return `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf-token" content="${esc(csrf)}">
<meta name="refresh-seconds" content="${esc(refresh)}">
<title>${esc(title)} · throttle_jobs</title>
<link rel="stylesheet" href="/static/style.css">
<script src="/static/app.js" defer></script>
</head><body>
<header><span class="brand">throttle_jobs</span><nav>${links}</nav>
<span class="who">role ${esc(c.role)}${c.readOnly ? ' (read-only)' : ''} · <span id="updated">live</span></span></header>
${banner}
<div id="flash" role="status" aria-live="polite"></div>
<h1>${esc(title)}</h1>
<div id="filters">${filters || ''}</div>
<div id="live">${live}</div>
<dialog id="confirm"><form method="dialog"><p id="confirm-text"></p>
<menu><button value="cancel" id="confirm-cancel">Cancel</button> <button value="ok" id="confirm-ok" class="danger">Confirm</button></menu></form></dialog>
</body></html>`;
}

// Runs fn(); a failed read becomes a message in the page instead of a 500.
async function section(fn) {
    try {
        return await fn();
    } catch (err) {
        return `<p class="error">${esc(err.code ? `${err.code}: ` : '')}${esc(err.message)}</p>`;
    }
}

// ------------------------------------------------------------------ charts
// One queue's last hour of throughput: completed (bars) and failed (red),
// per minute, as inline SVG.
function throughputSvg(rows, now) {
    const W = 240, H = 48, N = 60;
    const end = Math.floor(now / 60000) * 60000;
    const start = end - (N - 1) * 60000;
    const done = new Array(N).fill(0), failed = new Array(N).fill(0), enq = new Array(N).fill(0);
    for (const r of rows) {
        const i = Math.round((r.minute.getTime() - start) / 60000);
        if (i < 0 || i >= N) continue;
        done[i] += Number(r.completed);
        failed[i] += Number(r.failed);
        enq[i] += Number(r.enqueued);
    }
    const max = Math.max(1, ...done, ...failed, ...enq);
    const bw = W / N;
    let bars = '';
    for (let i = 0; i < N; i++) {
        const h = (done[i] / max) * (H - 2);
        const f = (failed[i] / max) * (H - 2);
        const t = new Date(start + i * 60000).toISOString().slice(11, 16);
        if (h > 0) bars += `<rect class="done" x="${(i * bw).toFixed(1)}" y="${(H - h).toFixed(1)}" width="${(bw - 1).toFixed(1)}" height="${h.toFixed(1)}"><title>${t} completed ${done[i]}</title></rect>`;
        if (f > 0) bars += `<rect class="failed" x="${(i * bw).toFixed(1)}" y="${(H - f).toFixed(1)}" width="${(bw - 1).toFixed(1)}" height="${f.toFixed(1)}"><title>${t} failed ${failed[i]}</title></rect>`;
    }
    let line = '';
    for (let i = 0; i < N; i++) line += `${(i * bw + bw / 2).toFixed(1)},${(H - (enq[i] / max) * (H - 2)).toFixed(1)} `;
    const total = done.reduce((a, b) => a + b, 0);
    return `<svg class="chart" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="completed per minute, last hour: ${total} in all">` +
        `<line x1="0" y1="${H - 0.5}" x2="${W}" y2="${H - 0.5}" class="axis"/>${bars}` +
        `<polyline class="enqueued" points="${line.trim()}"/><text x="2" y="10" class="max">${max}/min</text></svg>`;
}

// ------------------------------------------------------------------ pages
async function pageOverview(db, c, url) {
    const live = await section(async () => {
        if (!(await db.query(`SELECT pg_catalog.has_table_privilege('throttle_jobs.queue_stats', 'SELECT') AS ok`)).rows[0].ok) {
            // No statistics for this role (it needs pg_monitor or admin):
            // list the queues it may see.
            const q = await db.query('SELECT q.name, q.paused FROM throttle_jobs.queues q ORDER BY q.name');
            return `<p class="note">Role ${esc(c.role)} may not read <code>queue_stats</code> (grant it <code>pg_monitor</code> for depth, lag and throughput).</p>` +
                `<table class="grid" id="queues"><thead><tr><th>queue</th><th>state</th></tr></thead><tbody>` +
                q.rows.map((r) => `<tr data-queue="${esc(r.name)}"><td><a href="/queue${qs({ name: r.name })}">${esc(r.name)}</a></td>` +
                    `<td>${r.paused ? '<span class="badge paused">paused</span>' : '<span class="badge ok">active</span>'}</td></tr>`).join('') +
                '</tbody></table>';
        }
        const s = await db.query(
            `SELECT s.queue, s.paused, s.max_size, s.available, s.scheduled, s.running, s.retrying, s.dead,
                    s.depth_as_of, pg_catalog.date_part('epoch', s.lag) AS lag,
                    s.completed_1m, s.completed_15m, s.failed_15m, s.dead_lettered_15m, s.throttled_15m,
                    pg_catalog.date_part('epoch', s.wait_p50) AS wait_p50, pg_catalog.date_part('epoch', s.wait_p95) AS wait_p95,
                    pg_catalog.date_part('epoch', s.wait_p99) AS wait_p99, pg_catalog.date_part('epoch', s.run_p50) AS run_p50,
                    pg_catalog.date_part('epoch', s.run_p95) AS run_p95, pg_catalog.date_part('epoch', s.run_p99) AS run_p99
             FROM throttle_jobs.queue_stats s ORDER BY s.queue`);
        const t = await db.query(
            `SELECT t.queue, t.minute, t.enqueued, t.completed, t.failed
             FROM throttle_jobs.throughput t
             WHERE t.minute OPERATOR(pg_catalog.>=) (pg_catalog.now() OPERATOR(pg_catalog.-) '1 hour'::pg_catalog.interval)
             ORDER BY t.queue, t.minute`);
        const now = (await db.query('SELECT pg_catalog.now() AS now')).rows[0].now.getTime();
        const byQueue = new Map();
        for (const r of t.rows) {
            if (!byQueue.has(r.queue)) byQueue.set(r.queue, []);
            byQueue.get(r.queue).push(r);
        }
        if (s.rows.length === 0) return '<p class="empty">No queues.</p>';
        let html = `<table class="grid" id="queues"><thead><tr><th>queue</th><th>state</th>
<th>available</th><th>scheduled</th><th>running</th><th>retrying</th><th>dead</th><th>lag</th>
<th>wait p50/p95/p99</th><th>run p50/p95/p99</th><th>completed 1m / 15m</th><th>failed 15m</th><th>throttled 15m</th>
<th>throughput, last hour</th><th></th></tr></thead><tbody>`;
        for (const r of s.rows) {
            let act = '';
            if (c.can(r.paused ? 'resume_queue' : 'pause_queue', r.queue)) {
                act = r.paused
                    ? actionButton('Resume', 'resume_queue', { queue: r.queue }, `Resume queue "${r.queue}"? Workers will reserve its jobs again.`)
                    : actionButton('Pause', 'pause_queue', { queue: r.queue }, `Pause queue "${r.queue}"? It keeps accepting jobs but hands none out.`);
            }
            html += `<tr data-queue="${esc(r.queue)}"><td><a href="/queue${qs({ name: r.queue })}">${esc(r.queue)}</a></td>` +
                `<td>${r.paused ? '<span class="badge paused">paused</span>' : '<span class="badge ok">active</span>'}</td>` +
                td(r.available, 'num') + td(r.scheduled, 'num') + td(r.running, 'num') + td(r.retrying, 'num') +
                `<td class="num"><a href="/dead${qs({ queue: r.queue })}">${esc(fmt(r.dead))}</a></td>` +
                `<td class="num${Number(r.lag) > 300 ? ' warn' : ''}">${esc(secs(r.lag))}</td>` +
                `<td class="num">${esc(pcts(r.wait_p50, r.wait_p95, r.wait_p99))}</td>` +
                `<td class="num">${esc(pcts(r.run_p50, r.run_p95, r.run_p99))}</td>` +
                `<td class="num">${esc(fmt(r.completed_1m))} / ${esc(fmt(r.completed_15m))}</td>` +
                td(r.failed_15m, 'num') + td(r.throttled_15m, 'num') +
                `<td>${throughputSvg(byQueue.get(r.queue) || [], now)}</td><td>${act}</td></tr>`;
        }
        html += '</tbody></table><p class="note">Depth from the extension\'s counters (<code>queue_stats</code>); ' +
            'the chart shows completed (bars), failed (red) and enqueued (line) per minute from <code>throughput</code>.</p>';
        return html;
    });
    return { title: 'Queues', nav: '/', filters: '', live };
}

const JOB_STATES = ['available', 'scheduled', 'throttled', 'running'];

function likePattern(text) { return `%${text.replace(/[\\%_]/g, (ch) => `\\${ch}`)}%`; }

function positiveInt(v) {
    if (v === null || v === undefined || v === '') return null;
    if (!/^[0-9]{1,18}$/.test(v)) return undefined;
    return v;
}

async function pageQueue(db, c, url) {
    const p = url.searchParams;
    const name = p.get('name') || '';
    const state = p.get('state') || '';
    const key = p.get('key') || '';
    const prio = p.get('priority') || '';
    const text = p.get('q') || '';
    const before = positiveInt(p.get('before'));
    const bad = [];
    if (state && !JOB_STATES.includes(state)) bad.push(`unknown state "${state}"`);
    if (prio && !/^-?[0-9]{1,5}$/.test(prio)) bad.push(`invalid priority "${prio}"`);
    if (before === undefined) bad.push(`invalid "before" "${p.get('before')}"`);
    const filters = `<form class="filters" method="get" action="/queue">
<input type="hidden" name="name" value="${esc(name)}">
<label>state <select name="state"><option value="">any</option>${JOB_STATES.map((s) => `<option${s === state ? ' selected' : ''}>${s}</option>`).join('')}</select></label>
<label>key <input name="key" value="${esc(key)}" placeholder="concurrency or rate key"></label>
<label>priority <input name="priority" value="${esc(prio)}" size="5"></label>
<label>payload contains <input name="q" value="${esc(text)}"></label>
<button type="submit">Filter</button> <a href="/queue${qs({ name })}">clear</a></form>`;
    if (bad.length) return { title: `Queue ${name}`, nav: '/', filters, live: `<p class="error">${esc(bad.join('; '))}</p>` };
    const live = await section(async () => {
        const t0 = Date.now();
        const r = await windowed(db, 'jobs',
            `SELECT j.id, j.state, j.priority, j.run_at, j.attempt, j.max_attempts, j.worker, j.lease_until,
                    j.enqueued_at, j.concurrency_key, j.rate_limit_key, j.blocked_key, j.last_error,
                    pg_catalog.left(j.payload::pg_catalog.text, 160) AS payload
             FROM throttle_jobs.jobs j
             WHERE j.queue = $1
               AND ($2::pg_catalog.text IS NULL OR j.state = $2)
               AND ($3::pg_catalog.text IS NULL OR j.concurrency_key = $3 OR j.rate_limit_key = $3)
               AND ($4::pg_catalog.int2 IS NULL OR j.priority = $4)
               AND ($5::pg_catalog.text IS NULL OR j.payload::pg_catalog.text OPERATOR(pg_catalog.~~*) $5)
               AND j.id >= $6::pg_catalog.int8 AND j.id < $7::pg_catalog.int8
             ORDER BY j.id DESC
             LIMIT $8`,
            [name, state || null, key || null, prio || null, text ? likePattern(text) : null], before, PAGE + 1);
        const ms = Date.now() - t0;
        const rows = r.rows.slice(0, PAGE);
        const canCancel = c.can('cancel', name);
        let html = `<p class="note">Newest first, ${PAGE} a page (${ms} ms). <a href="/dead${qs({ queue: name })}">Dead letters of ${esc(name)}</a></p>`;
        if (rows.length === 0) html += '<p class="empty">No live jobs match.</p>';
        else {
            html += `<table class="grid" id="jobs"><thead><tr><th>id</th><th>state</th><th>priority</th><th>run at</th><th>attempt</th>
<th>keys</th><th>worker / lease until</th><th>last error</th><th>payload</th><th></th></tr></thead><tbody>`;
            for (const j of rows) {
                const keys = [j.concurrency_key && `c: ${j.concurrency_key}`, j.rate_limit_key && `r: ${j.rate_limit_key}`].filter(Boolean).join(', ');
                const act = canCancel && j.state !== 'running'
                    ? actionButton('Cancel', 'cancel', { id: j.id, queue: name }, `Cancel job ${j.id}? It moves to the archive as cancelled.`) : '';
                html += `<tr data-id="${esc(j.id)}"><td><a href="/job${qs({ id: j.id })}">${esc(j.id)}</a></td>` +
                    `<td><span class="badge ${esc(j.state)}">${esc(j.state)}</span>${j.blocked_key ? ` <small>by ${esc(j.blocked_key)}</small>` : ''}</td>` +
                    td(j.priority, 'num') + td(j.run_at) + td(`${j.attempt}/${j.max_attempts}`, 'num') + td(keys) +
                    td(j.worker ? `${j.worker} until ${fmt(j.lease_until)}` : '') + td(j.last_error, 'err') +
                    `<td><code>${esc(j.payload)}</code></td><td>${act}</td></tr>`;
            }
            html += '</tbody></table>';
        }
        const nav = [];
        if (before) nav.push(`<a href="/queue${qs({ name, state, key, priority: prio, q: text })}">« newest</a>`);
        if (r.rows.length > PAGE) nav.push(`<a id="next" href="/queue${qs({ name, state, key, priority: prio, q: text, before: rows[rows.length - 1].id })}">older »</a>`);
        else if (r.resumeAt) nav.push(`<a id="next" href="/queue${qs({ name, state, key, priority: prio, q: text, before: r.resumeAt })}">search older (stopped at id ${r.resumeAt}) »</a>`);
        return html + `<p class="pager">${nav.join(' ')}</p>`;
    });
    return { title: `Queue ${name}`, nav: '/', filters, live };
}

async function pageJob(db, c, url) {
    const id = positiveInt(url.searchParams.get('id'));
    if (!id) return { title: 'Job', nav: '/', filters: '', live: `<p class="error">invalid job id "${esc(url.searchParams.get('id'))}"</p>`, status: 400 };
    const live = await section(async () => {
        let where = 'live';
        let r = await db.query(
            `SELECT j.id, j.queue, j.state, j.priority, j.run_at, j.attempt, j.max_attempts, j.worker, j.lease_until,
                    j.reserved_at, j.enqueued_at, j.concurrency_key, j.rate_limit_key, j.unique_key, j.cost,
                    j.blocked_key, j.blocked_until, j.payload, j.errors
             FROM throttle_jobs.jobs j WHERE j.id = $1`, [id]);
        if (r.rows.length === 0) {
            where = 'dead';
            r = await db.query(
                `SELECT d.id, d.queue, 'dead' AS state, d.reason, d.died_at, d.priority, d.attempt, d.max_attempts, d.worker,
                        d.enqueued_at, d.concurrency_key, d.rate_limit_key, d.unique_key, d.payload, d.errors
                 FROM throttle_jobs.dead_letters d WHERE d.id = $1`, [id]);
        }
        if (r.rows.length === 0) {
            where = 'archived';
            r = await db.query(
                `SELECT a.id, a.queue, a.state, a.finished_at, a.priority, a.attempt, a.max_attempts, a.worker,
                        a.enqueued_at, a.reserved_at, a.concurrency_key, a.rate_limit_key, a.unique_key, a.payload, a.result, a.errors
                 FROM throttle_jobs.archived_jobs a WHERE a.id = $1 LIMIT 1`, [id]);
        }
        if (r.rows.length === 0) return `<p class="empty">No job ${esc(id)} that role ${esc(c.role)} may see (live, dead, or archived within retention).</p>`;
        const j = r.rows[0];
        let explain = '';
        if (where !== 'archived' && c.fn.explain_job) {
            explain = await section(async () => {
                const e = (await db.query('SELECT throttle_jobs.explain_job($1) AS e', [id])).rows[0].e;
                const reasons = (e && Array.isArray(e.reasons)) ? e.reasons : [];
                return `<h2>Why it is ${esc(e && e.state)}</h2>` + (reasons.length
                    ? `<ul id="explain">${reasons.map((x) => `<li>${esc(typeof x === 'string' ? x : JSON.stringify(x))}</li>`).join('')}</ul>`
                    : '<p id="explain">Nothing holds it back: the next reservation of its queue may take it.</p>');
            });
        }
        const skip = new Set(['payload', 'errors', 'result']);
        let html = '<table class="kv" id="job">';
        for (const [k, v] of Object.entries(j)) {
            if (skip.has(k) || v === null) continue;
            const val = k === 'queue' ? `<a href="/queue${qs({ name: v })}">${esc(v)}</a>` : esc(fmt(v));
            html += `<tr><th>${esc(k.replace(/_/g, ' '))}</th><td>${val}</td></tr>`;
        }
        html += '</table>';
        const acts = [];
        if (where === 'dead' && c.can('retry_dead', j.queue)) {
            acts.push(actionButton('Retry', 'retry_dead', { ids: [j.id], queue: j.queue }, `Retry dead job ${j.id}? It goes back to queue "${j.queue}" with its attempts reset.`));
            if (c.can('discard_dead', j.queue)) acts.push(actionButton('Discard', 'discard_dead', { ids: [j.id], queue: j.queue }, `Discard dead job ${j.id}? It is deleted for good.`, ' class="danger act"'));
        }
        if (where === 'live' && j.state !== 'running' && c.can('cancel', j.queue)) {
            acts.push(actionButton('Cancel', 'cancel', { id: j.id, queue: j.queue }, `Cancel job ${j.id}?`));
        }
        if (acts.length) html += `<p class="actions">${acts.join(' ')}</p>`;
        html += explain;
        html += `<h2>Payload</h2><pre id="payload">${esc(JSON.stringify(j.payload, null, 2))}</pre>`;
        if (j.result !== undefined && j.result !== null) html += `<h2>Result</h2><pre>${esc(JSON.stringify(j.result, null, 2))}</pre>`;
        const errors = Array.isArray(j.errors) ? j.errors : [];
        html += `<h2>Attempts and errors (${errors.length})</h2>`;
        if (errors.length === 0) html += '<p class="empty">No failed attempt.</p>';
        else {
            html += '<table class="grid" id="errors"><thead><tr><th>attempt</th><th>at</th><th>worker</th><th>error</th></tr></thead><tbody>';
            for (const e of errors) html += `<tr>${td(e.attempt, 'num')}${td(e.at)}${td(e.worker)}${td(e.error, 'err')}</tr>`;
            html += '</tbody></table>';
        }
        return html;
    });
    return { title: `Job ${id}`, nav: '/', filters: '', live };
}

async function pageDead(db, c, url) {
    const p = url.searchParams;
    const queue = p.get('queue') || '';
    const reason = p.get('reason') || '';
    const text = p.get('q') || '';
    const before = positiveInt(p.get('before'));
    const reasons = ['attempts exhausted', 'failed without retry'];
    const filters = `<form class="filters" method="get" action="/dead">
<label>queue <input name="queue" value="${esc(queue)}"></label>
<label>reason <select name="reason"><option value="">any</option>${reasons.map((s) => `<option${s === reason ? ' selected' : ''}>${s}</option>`).join('')}</select></label>
<label>error or payload contains <input name="q" value="${esc(text)}"></label>
<button type="submit">Filter</button> <a href="/dead">clear</a></form>`;
    if (before === undefined) return { title: 'Dead letters', nav: '/dead', filters, live: '<p class="error">invalid "before"</p>' };
    const live = await section(async () => {
        const r = await windowed(db, 'dead',
            `SELECT d.id, d.queue, d.reason, d.died_at, d.attempt, d.max_attempts, d.last_error,
                    pg_catalog.left(d.payload::pg_catalog.text, 120) AS payload
             FROM throttle_jobs.dead_letters d
             WHERE ($1::pg_catalog.text IS NULL OR d.queue = $1)
               AND ($2::pg_catalog.text IS NULL OR d.reason = $2)
               AND ($3::pg_catalog.text IS NULL OR d.last_error OPERATOR(pg_catalog.~~*) $3
                    OR d.payload::pg_catalog.text OPERATOR(pg_catalog.~~*) $3)
               AND d.id >= $4::pg_catalog.int8 AND d.id < $5::pg_catalog.int8
             ORDER BY d.id DESC
             LIMIT $6`,
            [queue || null, reason || null, text ? likePattern(text) : null], before, PAGE + 1);
        const rows = r.rows.slice(0, PAGE);
        if (rows.length === 0) {
            return r.resumeAt ? `<p class="empty">No match yet: <a id="next" href="/dead${qs({ queue, reason, q: text, before: r.resumeAt })}">search older (stopped at id ${r.resumeAt}) »</a></p>`
                : '<p class="empty">No dead letters match.</p>';
        }
        const any = rows.some((d) => c.can('retry_dead', d.queue));
        let html = '';
        if (any) {
            html += `<p class="actions bulk">${actionButton('Retry selected', 'retry_dead', {}, 'Retry the selected dead jobs? They go back to their queues with attempts reset.', ' data-bulk="1" id="retry-selected"')} ` +
                `${actionButton('Discard selected', 'discard_dead', {}, 'Discard the selected dead jobs? They are deleted for good.', ' data-bulk="1" id="discard-selected" class="danger act"')}</p>`;
        }
        html += `<table class="grid" id="dead"><thead><tr>${any ? '<th><input type="checkbox" class="select-all" aria-label="select all"></th>' : ''}<th>id</th><th>queue</th><th>reason</th><th>died at</th>
<th>attempts</th><th>last error</th><th>payload</th><th></th></tr></thead><tbody>`;
        for (const d of rows) {
            const can = c.can('retry_dead', d.queue);
            const acts = can ? actionButton('Retry', 'retry_dead', { ids: [d.id], queue: d.queue }, `Retry dead job ${d.id}? It goes back to queue "${d.queue}" with its attempts reset.`) : '';
            html += `<tr data-id="${esc(d.id)}">${any ? `<td>${can ? `<input type="checkbox" name="sel" value="${esc(d.id)}" aria-label="select ${esc(d.id)}">` : ''}</td>` : ''}` +
                `<td><a href="/job${qs({ id: d.id })}">${esc(d.id)}</a></td><td><a href="/queue${qs({ name: d.queue })}">${esc(d.queue)}</a></td>` +
                td(d.reason) + td(d.died_at) + td(`${d.attempt}/${d.max_attempts}`, 'num') + td(d.last_error, 'err') +
                `<td><code>${esc(d.payload)}</code></td><td>${acts}</td></tr>`;
        }
        html += '</tbody></table>';
        const nav = [];
        if (before) nav.push(`<a href="/dead${qs({ queue, reason, q: text })}">« newest</a>`);
        if (r.rows.length > PAGE) nav.push(`<a id="next" href="/dead${qs({ queue, reason, q: text, before: rows[rows.length - 1].id })}">older »</a>`);
        else if (r.resumeAt) nav.push(`<a id="next" href="/dead${qs({ queue, reason, q: text, before: r.resumeAt })}">search older (stopped at id ${r.resumeAt}) »</a>`);
        html += `<p class="pager">${nav.join(' ')}</p>`;
        return html;
    });
    let purge = '';
    if (c.fn.purge_dead && c.manages.size > 0) {
        purge = `<details class="purge"><summary>Purge dead letters of a queue</summary>
<form class="action-form" data-action="purge_dead" data-confirm="Delete the dead letters of this queue older than the given age? This cannot be undone.">
<label>queue <select name="queue">${[...c.manages].sort().map((q) => `<option${q === queue ? ' selected' : ''}>${esc(q)}</option>`).join('')}</select></label>
<label>older than <input name="older_than" value="0" size="10" title="an interval, e.g. 7 days; 0 = all"></label>
<button type="submit" class="danger">Purge</button></form></details>`;
    }
    return { title: 'Dead letters', nav: '/dead', filters: filters + purge, live };
}

async function pageKeys(db, c) {
    const canCap = c.can('set_concurrency_limit');
    const canRate = c.can('set_rate_limit');
    const live = await section(async () => {
        const r = await db.query(
            `SELECT k.key, k.cap_limit, k.max_running, k.running, k.rate_limit, k.max_per_period, k.period, k.algorithm,
                    k.tokens, k.window_used, k.next_admission_at, k.throttled_cap, k.throttled_rate, k.throttled_since,
                    k.last_admitted_at, k.adaptive_factor
             FROM throttle_jobs.key_stats k ORDER BY k.key`);
        if (r.rows.length === 0) return '<p class="empty">No limited key.</p>';
        let html = `<table class="grid" id="keys"><thead><tr><th>key</th><th>running / cap</th><th>rate</th><th>tokens / window used</th>
<th>next admission</th><th>throttled (cap / rate)</th><th>throttling since</th><th>last admitted</th><th>adaptive factor</th><th></th></tr></thead><tbody>`;
        for (const k of r.rows) {
            const full = k.max_running !== null && Number(k.running) >= Number(k.max_running);
            const rate = k.max_per_period !== null ? `${k.max_per_period} per ${fmt(k.period)} (${k.algorithm})` : '';
            const limits = [k.cap_limit && k.cap_limit !== k.key ? `cap from ${k.cap_limit}` : '', k.rate_limit && k.rate_limit !== k.key ? `rate from ${k.rate_limit}` : ''].filter(Boolean).join(', ');
            const drop = c.can('drop_limit') && (k.cap_limit === k.key || k.rate_limit === k.key)
                ? actionButton('Drop limit', 'drop_limit', { key: k.key }, `Drop the limit of key "${k.key}"? Its jobs run unlimited (or under a matching template).`, ' class="danger act"') : '';
            html += `<tr data-key="${esc(k.key)}"><td>${esc(k.key)}${limits ? `<br><small>${esc(limits)}</small>` : ''}</td>` +
                `<td class="num${full ? ' warn' : ''}">${k.max_running !== null ? `${esc(k.running)} / ${esc(k.max_running)}` : esc(fmt(k.running))}</td>` +
                td(rate) + td(k.tokens !== null ? Number(k.tokens).toFixed(2) : k.window_used, 'num') + td(k.next_admission_at) +
                td(`${fmt(k.throttled_cap)} / ${fmt(k.throttled_rate)}`, 'num') + td(k.throttled_since) + td(k.last_admitted_at) +
                td(k.adaptive_factor !== null ? Number(k.adaptive_factor).toFixed(2) : '', 'num') + `<td>${drop}</td></tr>`;
        }
        return html + '</tbody></table>';
    });
    let forms = '';
    if (canCap) {
        forms += `<form class="action-form" id="set-cap" data-action="set_concurrency_limit" data-confirm="Set this concurrency limit? It applies at once to every queue.">
<b>Concurrency limit</b> <label>key <input name="key" required placeholder="tenant:* or tenant:42"></label>
<label>max running <input name="max_running" required size="6" inputmode="numeric"></label> <button type="submit">Set</button></form>`;
    }
    if (canRate) {
        forms += `<form class="action-form" id="set-rate" data-action="set_rate_limit" data-confirm="Set this rate limit? It applies at once to every queue.">
<b>Rate limit</b> <label>key <input name="key" required></label>
<label>max per period <input name="max_per_period" required size="6" inputmode="numeric"></label>
<label>period <input name="period" required size="8" value="1 s"></label>
<label>algorithm <select name="algorithm"><option>token_bucket</option><option>sliding_window</option><option>fixed_window</option></select></label>
<label>burst <input name="burst" size="5" inputmode="numeric"></label> <button type="submit">Set</button></form>`;
    }
    return { title: 'Keys and limits', nav: '/keys', filters: forms, live };
}

async function pageWorkers(db, c) {
    const live = await section(async () => {
        const r = await db.query(
            `SELECT r.worker, r.id, r.queue, r.attempt, r.max_attempts, r.reserved_at, r.lease_until, r.lease_expired,
                    r.concurrency_key, pg_catalog.date_part('epoch', r.lease_until OPERATOR(pg_catalog.-) pg_catalog.now()) AS lease_left
             FROM throttle_jobs.running_jobs r ORDER BY r.worker, r.lease_until, r.id`);
        if (r.rows.length === 0) return '<p class="empty">No running job.</p>';
        const soon = r.rows.filter((x) => Number(x.lease_left) < 60);
        let html = `<h2>Leases about to expire (under a minute left, or expired): ${soon.length}</h2>`;
        if (soon.length) {
            html += '<table class="grid" id="expiring"><thead><tr><th>job</th><th>queue</th><th>worker</th><th>lease until</th><th>left</th></tr></thead><tbody>';
            for (const x of soon) {
                html += `<tr class="warn"><td><a href="/job${qs({ id: x.id })}">${esc(x.id)}</a></td>${td(x.queue)}${td(x.worker)}${td(x.lease_until)}` +
                    `<td class="num">${x.lease_expired ? 'expired' : esc(secs(x.lease_left))}</td></tr>`;
            }
            html += '</tbody></table>';
        }
        const groups = new Map();
        for (const x of r.rows) {
            if (!groups.has(x.worker)) groups.set(x.worker, []);
            groups.get(x.worker).push(x);
        }
        html += `<h2>Running jobs by worker (${groups.size} workers, ${r.rows.length} jobs)</h2><table class="grid" id="workers"><thead><tr><th>worker</th><th>jobs</th><th>running</th></tr></thead><tbody>`;
        for (const [w, jobs] of groups) {
            html += `<tr data-worker="${esc(w)}">${td(w)}${td(jobs.length, 'num')}<td>` +
                jobs.map((x) => `<a href="/job${qs({ id: x.id })}" title="${esc(`${x.queue}, attempt ${x.attempt}/${x.max_attempts}, lease until ${fmt(x.lease_until)}`)}">${esc(x.queue)}#${esc(x.id)}</a>`).join(' ') +
                '</td></tr>';
        }
        return html + '</tbody></table>';
    });
    return { title: 'Workers', nav: '/workers', filters: '', live };
}

// ------------------------------------------------------------------ actions
function need(args, name, re, what) {
    const v = args[name];
    if (typeof v !== 'string' && typeof v !== 'number') throw userError(`missing ${what || name}`);
    const s = String(v).trim();
    if (re && !re.test(s)) throw userError(`invalid ${what || name} "${s}"`);
    return s;
}

function userError(message, status) { const e = new Error(message); e.status = status || 400; return e; }

function ids(args) {
    const v = args.ids;
    if (!Array.isArray(v) || v.length === 0) throw userError('no job selected');
    if (v.length > 500) throw userError(`too many jobs selected (${v.length}; at most 500 at once)`);
    return v.map((x) => { const s = String(x); if (!/^[0-9]{1,18}$/.test(s)) throw userError(`invalid job id "${s}"`); return s; });
}

// The queues of dead jobs, for the privilege check (unknown ids: none).
async function deadQueues(db, list) {
    const r = await db.query('SELECT d.id::pg_catalog.text AS id, d.queue FROM throttle_jobs.dead_letters d WHERE d.id = ANY ($1::pg_catalog.int8[])', [list]);
    return new Map(r.rows.map((x) => [x.id, x.queue]));
}

async function runAction(pool, c, action, args) {
    const client = await pool.connect();
    const q = (sql, params) => client.query(sql, params);
    const refuse = (what) => userError(`role ${c.role} may not ${what} (read-only)`, 403);
    try {
        switch (action) {
        case 'pause_queue':
        case 'resume_queue': {
            const queue = need(args, 'queue');
            if (!c.can(action, queue)) throw refuse(`${action === 'pause_queue' ? 'pause' : 'resume'} queue "${queue}"`);
            await q(action === 'pause_queue' ? 'SELECT throttle_jobs.pause_queue($1)' : 'SELECT throttle_jobs.resume_queue($1)', [queue]);
            return `Queue "${queue}" ${action === 'pause_queue' ? 'paused' : 'resumed'}.`;
        }
        case 'cancel': {
            const id = need(args, 'id', /^[0-9]{1,18}$/, 'job id');
            const live = (await q('SELECT j.queue FROM throttle_jobs.jobs j WHERE j.id = $1::pg_catalog.int8', [id])).rows;
            if (!c.fn.cancel || (live.length && !c.can('cancel', live[0].queue)) || c.manages.size === 0) throw refuse(`cancel job ${id}`);
            const ok = (await q('SELECT throttle_jobs.cancel($1::pg_catalog.int8) AS ok', [id])).rows[0].ok;
            return ok ? `Job ${id} cancelled.` : `Job ${id} was not cancelled (running, or no longer live).`;
        }
        case 'retry_dead':
        case 'discard_dead': {
            const list = ids(args);
            if (!c.can(action)) throw refuse(action === 'retry_dead' ? 'retry dead jobs' : 'discard dead jobs');
            const queues = await deadQueues(client, list);
            for (const id of list) {
                const queue = queues.get(id);
                if (queue !== undefined && !c.can(action, queue)) throw refuse(`act on the dead letters of queue "${queue}"`);
            }
            const done = [], skipped = [];
            await q('BEGIN');
            try {
                for (const id of list) {
                    await q('SAVEPOINT one');
                    let ok;
                    if (action === 'discard_dead' && c.fn.delete_dead) {
                        // Discard: deleted for good (0.2.0's delete_dead).
                        ok = (await q('SELECT throttle_jobs.delete_dead($1::pg_catalog.int8) AS ok', [id])).rows[0].ok;
                    } else {
                        const back = (await q('SELECT throttle_jobs.retry_dead($1::pg_catalog.int8) AS ok', [id])).rows[0].ok;
                        // Discard without delete_dead (0.1.0): back in its
                        // queue, then cancelled in the same transaction, so no
                        // worker can take it in between; if it cannot be
                        // cancelled it stays dead (not retried).
                        ok = back && action === 'discard_dead'
                            ? (await q('SELECT throttle_jobs.cancel($1::pg_catalog.int8) AS ok', [id])).rows[0].ok : back;
                    }
                    await q(ok ? 'RELEASE SAVEPOINT one' : 'ROLLBACK TO SAVEPOINT one');
                    (ok ? done : skipped).push(id);
                }
                await q('COMMIT');
            } catch (err) {
                await q('ROLLBACK').catch(() => {});
                throw err;
            }
            const verb = action === 'retry_dead' ? 'back in their queues' : 'discarded';
            let msg = `${done.length} of ${list.length} dead jobs ${verb}${done.length ? ` (${done.join(', ')})` : ''}.`;
            if (skipped.length) msg += ` Not done: ${skipped.join(', ')} (no longer dead, or its unique key is live again).`;
            return msg;
        }
        case 'purge_dead': {
            const queue = need(args, 'queue');
            const older = need(args, 'older_than', /^[0-9a-zA-Z .:+-]{1,40}$/, 'age');
            if (!c.can('purge_dead', queue)) throw refuse(`purge the dead letters of queue "${queue}"`);
            const n = (await q('SELECT throttle_jobs.purge_dead($1, $2::pg_catalog.interval) AS n', [queue, older])).rows[0].n;
            return `${n} dead letters of queue "${queue}" deleted.`;
        }
        case 'set_concurrency_limit': {
            const key = need(args, 'key');
            const n = need(args, 'max_running', /^-?[0-9]{1,9}$/, 'max running');
            if (!c.can(action)) throw refuse('set limits');
            await q('SELECT throttle_jobs.set_concurrency_limit($1, $2::pg_catalog.int4)', [key, n]);
            return `Key "${key}": at most ${n} running.`;
        }
        case 'set_rate_limit': {
            const key = need(args, 'key');
            const n = need(args, 'max_per_period', /^-?[0-9]{1,9}$/, 'max per period');
            const period = need(args, 'period', /^[0-9a-zA-Z .:+-]{1,40}$/, 'period');
            const algorithm = need(args, 'algorithm', /^[a-z_]{1,20}$/, 'algorithm');
            const burst = args.burst === undefined || args.burst === null || String(args.burst).trim() === ''
                ? null : need(args, 'burst', /^-?[0-9]{1,9}$/, 'burst');
            if (!c.can(action)) throw refuse('set limits');
            await q(`SELECT throttle_jobs.set_rate_limit($1, $2::pg_catalog.int4, $3::pg_catalog.interval,
                        algorithm => $4, burst => $5::pg_catalog.int4)`, [key, n, period, algorithm, burst]);
            return `Key "${key}": at most ${n} per ${period} (${algorithm}${burst ? `, burst ${burst}` : ''}).`;
        }
        case 'drop_limit': {
            const key = need(args, 'key');
            if (!c.can(action)) throw refuse('drop limits');
            await q('SELECT throttle_jobs.drop_limit($1)', [key]);
            return `Limit of key "${key}" dropped.`;
        }
        default:
            throw userError(`unknown action "${action}"`);
        }
    } finally {
        client.release();
    }
}

// ------------------------------------------------------------------ HTTP
const STATIC = {
    '/static/app.js': ['app.js', 'text/javascript; charset=utf-8'],
    '/static/style.css': ['style.css', 'text/css; charset=utf-8'],
};

const SECURITY_HEADERS = {
    'Content-Security-Policy': "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    'X-Content-Type-Options': 'nosniff',
    'X-Frame-Options': 'DENY',
    'Referrer-Policy': 'same-origin',
    'Cache-Control': 'no-store',
};

function send(res, status, type, body, headers) {
    res.writeHead(status, { ...SECURITY_HEADERS, 'Content-Type': type, ...(headers || {}) });
    res.end(body);
}

function cookies(req) {
    const out = {};
    for (const part of (req.headers.cookie || '').split(';')) {
        const i = part.indexOf('=');
        if (i > 0) out[part.slice(0, i).trim()] = part.slice(i + 1).trim();
    }
    return out;
}

function readBody(req, limit) {
    return new Promise((resolve, reject) => {
        let size = 0;
        const chunks = [];
        req.on('data', (ch) => {
            size += ch.length;
            if (size > limit) { reject(userError('request too large', 413)); req.destroy(); return; }
            chunks.push(ch);
        });
        req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
        req.on('error', reject);
    });
}

// hostAllowed(opts, header): whether a request's Host header names this
// server.  Bound to loopback (the default), only loopback names and
// --allow-host names are accepted, so a page of another site whose name
// resolves to 127.0.0.1 (DNS rebinding) cannot read or drive the dashboard;
// bound elsewhere, any name unless --allow-host lists them.
function hostAllowed(opts, header) {
    const m = /^(\[[0-9a-f:.]+\]|[^:]+)(?::\d+)?$/i.exec(String(header || ''));
    if (!m) return false;
    const name = m[1].toLowerCase();
    if (opts.allowHosts.includes(name)) return true;
    const loop = ['localhost', '127.0.0.1', '[::1]'];
    const boundLoopback = /^(127\.|::1$|localhost$)/.test(opts.host);
    if (boundLoopback) return loop.includes(name) || name === opts.host.toLowerCase();
    return opts.allowHosts.length === 0 || loop.includes(name);
}

function makeServer(pool, opts) {
    const secret = crypto.randomBytes(32);
    const tokenFor = (sid) => crypto.createHmac('sha256', secret).update(sid).digest('hex');
    const pages = { '/': pageOverview, '/queue': pageQueue, '/job': pageJob, '/dead': pageDead, '/keys': pageKeys, '/workers': pageWorkers };
    const staticDir = path.join(__dirname, 'static');

    return http.createServer(async (req, res) => {
        let url;
        try {
            url = new URL(req.url, 'http://dashboard.invalid');
        } catch (e) {
            send(res, 400, 'text/plain', 'bad request');
            return;
        }
        try {
            if (!hostAllowed(opts, req.headers.host)) {
                send(res, 421, 'text/plain', `unexpected Host "${String(req.headers.host || '').slice(0, 100)}" (see --allow-host)\n`);
                return;
            }
            if (req.method === 'GET' && STATIC[url.pathname]) {
                const [file, type] = STATIC[url.pathname];
                send(res, 200, type, fs.readFileSync(path.join(staticDir, file)), { 'Cache-Control': 'no-cache' });
                return;
            }
            if (req.method === 'GET' && url.pathname === '/favicon.ico') {
                send(res, 204, 'image/x-icon', '');
                return;
            }
            if (req.method === 'GET' && url.pathname === '/healthz') {
                await pool.query('SELECT 1');
                send(res, 200, 'text/plain', 'ok\n');
                return;
            }
            const jar = cookies(req);
            let sid = /^[0-9a-f]{48}$/.test(jar.tj_sid || '') ? jar.tj_sid : null;
            if (req.method === 'POST' && url.pathname === '/api/action') {
                // CSRF: the token must match this browser's session cookie.
                const token = String(req.headers['x-csrf-token'] || '');
                const want = sid ? tokenFor(sid) : '';
                const okToken = sid && token.length === want.length &&
                    crypto.timingSafeEqual(Buffer.from(token), Buffer.from(want));
                if (!okToken) {
                    send(res, 403, 'application/json', JSON.stringify({ ok: false, message: 'missing or invalid CSRF token: reload the page' }));
                    return;
                }
                if (!/^application\/json\b/.test(req.headers['content-type'] || '')) {
                    send(res, 415, 'application/json', JSON.stringify({ ok: false, message: 'actions are sent as application/json' }));
                    return;
                }
                let body;
                try {
                    body = JSON.parse(await readBody(req, 64 * 1024));
                } catch (e) {
                    throw e.status ? e : userError('invalid JSON');
                }
                if (!body || typeof body.action !== 'string' || typeof body.args !== 'object' || body.args === null) throw userError('expected {"action": ..., "args": {...}}');
                const c = await caps(pool);
                const message = await runAction(pool, c, body.action, body.args);
                send(res, 200, 'application/json', JSON.stringify({ ok: true, message }));
                return;
            }
            const page = pages[url.pathname];
            if (req.method !== 'GET' || !page) {
                send(res, req.method === 'GET' ? 404 : 405, 'text/plain', 'not found\n');
                return;
            }
            const headers = {};
            if (!sid) {
                sid = crypto.randomBytes(24).toString('hex');
                headers['Set-Cookie'] = `tj_sid=${sid}; Path=/; HttpOnly; SameSite=Strict`;
            }
            const c = await caps(pool);
            const out = await page(pool, c, url);
            if (req.headers['x-partial'] === '1') {
                send(res, out.status || 200, 'text/html; charset=utf-8', out.live, headers);
                return;
            }
            send(res, out.status || 200, 'text/html; charset=utf-8',
                layout(out.title, out.nav, c, out.filters, out.live, tokenFor(sid), opts.refresh), headers);
        } catch (err) {
            const status = err.status || (err.code === '42501' ? 403 : (err.code && /^(22|23|42|55|53|P0)/.test(err.code) ? 400 : 500));
            const message = (err.code ? `${err.code}: ` : '') + err.message;
            if (status >= 500) process.stderr.write(`${req.method} ${req.url}: ${err.stack || err.message}\n`);
            if (url.pathname.startsWith('/api/')) send(res, status, 'application/json', JSON.stringify({ ok: false, message, sqlstate: err.code || null }));
            else send(res, status, 'text/plain; charset=utf-8', `${message}\n`);
        }
    });
}

if (require.main === module) {
    const opts = parseArgs(process.argv.slice(2));
    const pool = makePool(opts.database);
    const server = makeServer(pool, opts);
    server.listen(opts.port, opts.host, () => {
        const a = server.address();
        process.stdout.write(`throttle_jobs dashboard listening on http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}/\n`);
    });
    const stop = () => { server.close(); pool.end().finally(() => process.exit(0)); };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
}

module.exports = { makeServer, makePool, parseArgs };
