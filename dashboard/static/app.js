// dashboard/static/app.js -- live refresh and confirmed actions.
// No inline scripts (the server's Content-Security-Policy forbids them).
'use strict';

(function () {
    const csrf = document.querySelector('meta[name="csrf-token"]').content;
    const every = Number(document.querySelector('meta[name="refresh-seconds"]').content || 5) * 1000;
    const live = document.getElementById('live');
    const flash = document.getElementById('flash');
    const dialog = document.getElementById('confirm');
    const updated = document.getElementById('updated');

    function show(ok, text) {
        flash.className = ok ? 'ok' : 'error';
        flash.textContent = text;
    }

    // ask(text): resolves true when the user confirms.
    function ask(text) {
        return new Promise((resolve) => {
            document.getElementById('confirm-text').textContent = text;
            dialog.returnValue = '';
            dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
            dialog.showModal();
        });
    }

    async function act(action, args, confirmText) {
        if (!(await ask(confirmText || `Run ${action}?`))) {
            show(true, 'Cancelled: nothing was changed.');
            return;
        }
        let res, body;
        try {
            res = await fetch('/api/action', {
                method: 'POST',
                credentials: 'same-origin',
                headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': csrf },
                body: JSON.stringify({ action, args }),
            });
            body = await res.json();
        } catch (e) {
            show(false, `The request failed: ${e.message}`);
            return;
        }
        show(!!body.ok, body.message || (body.ok ? 'Done.' : `Refused (HTTP ${res.status}).`));
        await refresh(true);
    }

    function busy() {
        if (dialog.open) return true;
        const a = document.activeElement;
        if (a && live.contains(a) && (a.tagName === 'INPUT' || a.tagName === 'SELECT')) return true;
        return live.querySelector('input[name="sel"]:checked') !== null;
    }

    async function refresh(force) {
        if (!force && (busy() || document.hidden)) return;
        try {
            const res = await fetch(location.href, { headers: { 'X-Partial': '1' }, credentials: 'same-origin' });
            if (!res.ok) throw new Error(`HTTP ${res.status}`);
            live.innerHTML = await res.text();
            updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
            updated.className = '';
        } catch (e) {
            updated.textContent = `refresh failed: ${e.message}`;
            updated.className = 'error';
        }
    }

    document.addEventListener('click', (ev) => {
        const b = ev.target.closest('button[data-action]');
        if (b) {
            ev.preventDefault();
            const args = JSON.parse(b.dataset.args || '{}');
            if (b.dataset.bulk) {
                args.ids = [...live.querySelectorAll('input[name="sel"]:checked')].map((x) => x.value);
                if (args.ids.length === 0) {
                    show(false, 'Select some dead letters first.');
                    return;
                }
            }
            act(b.dataset.action, args, b.dataset.confirm + (args.ids && args.ids.length > 1 ? ` (${args.ids.length} jobs)` : ''));
            return;
        }
        const all = ev.target.closest('input.select-all');
        if (all) live.querySelectorAll('input[name="sel"]').forEach((x) => { x.checked = all.checked; });
    });

    document.addEventListener('submit', (ev) => {
        const f = ev.target.closest('form[data-action]');
        if (!f) return;
        ev.preventDefault();
        const args = {};
        new FormData(f).forEach((v, k) => { args[k] = v; });
        act(f.dataset.action, args, f.dataset.confirm);
    });

    setInterval(() => refresh(false), every);
})();
