// End-to-end tests of the gateway's web pages, the dashboard (/ui) and the API reference
// (/docs), in headless Chromium, driven by playwright-core, against the real gateway binary
// ($OFFLOAD_BIN) with the local provider (real processes, real logs and exit codes) and a
// priced sim provider (costs); the OpenAPI documents under Spectral's `spectral:oas`
// ruleset (@stoplight/spectral-cli); and the shipped configs against the config's JSON
// Schema, checked by Taplo as an editor does. Run by tests/ui/run.sh.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createServer } from 'node:net';
import { chromium } from 'playwright-core';

const TOKEN_A = 'tenant-a-token-0123456789';
const TOKEN_B = 'tenant-b-token-0123456789';
const SHOTS = process.env.OFFLOAD_UI_SCREENSHOTS ?? 'target/ui-screenshots';
let base, gateway, browser, dir, gatewayLog = '';

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
    s.on('error', reject);
  });
}

/** Polls `check` until it returns a truthy value; fails naming `what` after `ms`. */
async function waitFor(check, what, ms = 15000) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try { last = await check(); if (last) return last; } catch (e) { last = e; }
    if (Date.now() > deadline) throw new Error(`waiting for ${what}: ${last}`);
    await new Promise(r => setTimeout(r, 50));
  }
}

async function api(token, method, path, body) {
  const r = await fetch(base + path, {
    method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  return { status: r.status, json: text ? JSON.parse(text) : null };
}

async function submit(token, spec) {
  const r = await api(token, 'POST', '/v1/jobs', spec);
  assert.equal(r.status, 201, JSON.stringify(r.json));
  return r.json;
}

const job = async (token, id) => (await api(token, 'GET', `/v1/jobs/${id}`)).json;
const ended = (token, id) => waitFor(async () => { const j = await job(token, id); return j.terminal && j; }, `job ${id} to end`);

/** A new page in a fresh context, with its console errors and page errors collected. */
async function open() {
  const context = await browser.newContext();
  context.setDefaultTimeout(15000);
  const page = await context.newPage();
  const errors = [];
  page.on('console', m => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('pageerror', e => errors.push(String(e)));
  page.on('response', r => { if (r.status() >= 400) errors.push(`${r.status()} ${r.url()}`); });
  return { context, page, errors };
}

async function signIn(page, token = TOKEN_A) {
  await page.goto(base + '/ui/signin');
  await page.fill('form#signin input[name=token]', token);
  await Promise.all([page.waitForURL(base + '/ui/jobs'), page.click('form#signin button[type=submit]')]);
}

const shot = (page, name) => page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });

before(async () => {
  assert.ok(process.env.OFFLOAD_BIN, 'OFFLOAD_BIN names the gateway binary');
  mkdirSync(SHOTS, { recursive: true });
  dir = mkdtempSync(join(tmpdir(), 'offload-ui-'));
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  const config = join(dir, 'offload.toml');
  writeFileSync(config, `listen = "127.0.0.1:${port}"
[store]
path = "${join(dir, 'offload.db')}"
[engine]
release_after_seconds = 1
[[auth.tokens]]
token = "${TOKEN_A}"
tenant = "a"
[[auth.tokens]]
token = "${TOKEN_B}"
tenant = "b"
[providers.local]
kind = "local"
allow_several_tenants = true
poll_interval_ms = 100
[providers.sim]
kind = "sim"
start_ms = 100
run_ms = 400
poll_interval_ms = 100
price = { vcpu_hour = 0.05, gb_hour = 0.005 }
`);
  gateway = spawn(process.env.OFFLOAD_BIN, ['serve', '--config', config], { stdio: ['ignore', 'pipe', 'pipe'] });
  gateway.stdout.on('data', d => { gatewayLog += d; });
  gateway.stderr.on('data', d => { gatewayLog += d; });
  // Ready, or failed with the gateway's log: at once when it exits, else after 30 s.
  let exitedEarly;
  const early = new Promise((_, reject) => {
    exitedEarly = (code, signal) => reject(new Error(`the gateway exited (${code ?? signal}) before it was ready`));
    gateway.once('exit', exitedEarly);
  });
  try {
    await Promise.race([early, waitFor(async () => (await fetch(base + '/readyz')).status === 200, `the gateway at ${base} to be ready`, 30000)]);
  } catch (e) {
    throw new Error(`${e.message}; its log:\n${gatewayLog.slice(-4000)}`);
  } finally {
    gateway.off('exit', exitedEarly);
    early.catch(() => {});
  }
  browser = await chromium.launch({
    executablePath: process.env.OFFLOAD_CHROMIUM ?? '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});

after(async () => {
  await browser?.close();
  if (gateway && gateway.exitCode === null && gateway.signalCode === null) {
    const exited = new Promise(resolve => gateway.once('exit', resolve));
    gateway.kill('SIGTERM');
    const timer = setTimeout(() => gateway.kill('SIGKILL'), 10000);
    await exited;
    clearTimeout(timer);
  }
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('signing in keeps the token in an HttpOnly SameSite=Strict cookie; a wrong one is refused', async () => {
  const { context, page, errors } = await open();
  await page.goto(base + '/ui');
  assert.equal(page.url(), base + '/ui/signin');
  await shot(page, 'signin');
  await page.fill('form#signin input[name=token]', 'not-a-token');
  await page.click('form#signin button[type=submit]');
  assert.match(await page.textContent('p.error'), /not one of this gateway's/);
  await signIn(page);
  const cookie = (await context.cookies()).find(c => c.name === 'offload_session');
  assert.ok(cookie, 'the session cookie is set');
  assert.equal(cookie.httpOnly, true);
  assert.equal(cookie.sameSite, 'Strict');
  assert.deepEqual(errors, []);
  await context.close();
});

test('jobs appear and change state without a reload; filters and the id search work', async () => {
  const { context, page, errors } = await open();
  await signIn(page);
  await page.evaluate(() => { window.__notReloaded = true; });
  const ids = [];
  for (const run of ['r1', 'r2', 'r3']) {
    ids.push((await submit(TOKEN_A, { image: 'alpine:3', provider: 'sim', name: `nightly ${run}`,
      labels: { dag_id: 'etl', task_id: 'load', run_id: run } })).id);
  }
  for (const id of ids) {
    await waitFor(async () => (await page.textContent(`tr[data-job-id="${id}"] td.state`).catch(() => null))?.trim() === 'succeeded',
      `job ${id} to show as succeeded`);
  }
  assert.equal(await page.evaluate(() => window.__notReloaded), true, 'the page was not reloaded');
  const failing = await submit(TOKEN_A, { image: 'alpine:3', provider: 'local', command: ['sh', '-c', 'exit 4'], labels: { dag_id: 'other' } });
  await ended(TOKEN_A, failing.id);
  await page.goto(base + '/ui/jobs?state=failed');
  const failedStates = await page.$$eval('table#jobs tr[data-job-id] td.state', cells => cells.map(c => c.textContent.trim()));
  assert.ok(failedStates.length >= 1 && failedStates.every(s => s === 'failed'), failedStates.join(','));
  await page.goto(base + '/ui/jobs?dag_id=etl');
  const shown = await page.$$eval('table#jobs tr[data-job-id]', rows => rows.map(r => r.dataset.jobId));
  assert.deepEqual([...shown].sort(), [...ids].sort());
  await page.goto(base + '/ui/jobs');
  await shot(page, 'jobs');
  await page.fill('form#filters input[name=q]', ids[1]);
  await Promise.all([page.waitForURL(base + `/ui/jobs/${ids[1]}`), page.click('form#filters button[type=submit]')]);
  assert.deepEqual(errors, []);
  await context.close();
});

test('a TES task shows as a job with its TES id and name, and each executor\'s step', async () => {
  const created = await api(TOKEN_A, 'POST', '/ga4gh/tes/v1/tasks', {
    name: 'align reads', description: 'two executors in order',
    resources: { backend_parameters: { provider: 'local' } },
    executors: [
      { image: 'alpine', command: ['sh', '-c', 'echo first step'] },
      { image: 'alpine', command: ['sh', '-c', 'echo second step; exit 2'] },
    ],
  });
  assert.equal(created.status, 200, JSON.stringify(created.json));
  const id = created.json.id;
  const task = await waitFor(async () => {
    const t = (await api(TOKEN_A, 'GET', `/ga4gh/tes/v1/tasks/${id}`)).json;
    return t.state === 'EXECUTOR_ERROR' && t;
  }, `task ${id} to end in EXECUTOR_ERROR`);
  const { context, page, errors } = await open();
  await signIn(page);
  // In the jobs list under its TES name, by the id TES gave.
  await page.goto(base + '/ui/jobs');
  assert.equal((await page.textContent(`tr[data-job-id="${task.id}"] td.name`)).trim(), 'align reads');
  await page.goto(base + `/ui/jobs/${task.id}`);
  assert.equal((await page.textContent('h1')).replace(/\s+/g, ' ').trim(), `align reads ${task.id}`);
  const steps = await page.$$eval('table#steps tbody tr', rows => rows.map(r => ({
    step: r.querySelector('td.step').textContent.trim(),
    exit: r.querySelector('td.exit').textContent.trim(),
    log: r.querySelector('pre')?.textContent ?? '',
  })));
  assert.deepEqual(steps, [
    { step: 'executor 1', exit: '0', log: 'first step\n' },
    { step: 'executor 2', exit: '2', log: 'second step\n' },
  ]);
  await shot(page, 'tes-task');
  assert.deepEqual(errors, []);
  await context.close();
});

test('a failed job shows its exit code, reason, timeline and log tail', async () => {
  const failed = await submit(TOKEN_A, { image: 'alpine:3', provider: 'local', name: 'load warehouse',
    command: ['sh', '-c', 'echo connecting; echo boom >&2; exit 3'], secret_env: { PASSWORD: 'hunter2' } });
  await ended(TOKEN_A, failed.id);
  const { context, page, errors } = await open();
  await signIn(page);
  await page.goto(base + `/ui/jobs/${failed.id}`);
  assert.equal((await page.textContent('#state')).trim(), 'failed');
  assert.equal((await page.textContent('#exit-code')).trim(), '3');
  assert.match(await page.textContent('#reason'), /code 3/);
  assert.match(await page.textContent('pre#log'), /boom/);
  assert.ok((await page.$$('ol#timeline li')).length >= 3);
  assert.equal(await page.$('a#cancel'), null, 'an ended job has no cancel');
  assert.doesNotMatch(await page.content(), /hunter2/);
  await shot(page, 'job-failed');
  assert.deepEqual(errors, []);
  await context.close();
});

test("a running job's log is followed, and the job is cancelled from the page", async () => {
  const running = await submit(TOKEN_A, { image: 'alpine:3', provider: 'local', name: 'train model',
    command: ['sh', '-c', 'echo epoch 1; sleep 1; echo epoch 2; sleep 60'] });
  const { context, page, errors } = await open();
  await signIn(page);
  await page.goto(base + `/ui/jobs/${running.id}`);
  await page.evaluate(() => { window.__notReloaded = true; });
  await waitFor(async () => /epoch 1/.test(await page.textContent('pre#log')), 'the first line');
  await waitFor(async () => /epoch 2/.test(await page.textContent('pre#log')), 'the second line, without a reload');
  await waitFor(async () => (await page.textContent('#state')).trim() === 'running', 'the page to show running');
  assert.equal(await page.evaluate(() => window.__notReloaded), true);
  await shot(page, 'job-running-log');

  // The cancel form refuses a post without the page's CSRF token.
  const forged = await context.request.post(base + `/ui/jobs/${running.id}/cancel`, { form: { csrf: 'x' } });
  assert.equal(forged.status(), 403, 'a wrong csrf');
  const bare = await context.request.post(base + `/ui/jobs/${running.id}/cancel`, { form: { confirm: 'yes' } });
  assert.equal(bare.status(), 403, 'no csrf field');
  assert.equal((await job(TOKEN_A, running.id)).state, 'running');

  await Promise.all([page.waitForURL(base + `/ui/jobs/${running.id}/cancel`), page.click('a#cancel')]);
  await Promise.all([page.waitForURL(base + `/ui/jobs/${running.id}`), page.click('form#confirm-cancel button[type=submit]')]);
  await waitFor(async () => (await page.textContent('#state')).trim() === 'cancelled', 'the page to show cancelled');
  assert.equal((await job(TOKEN_A, running.id)).state, 'cancelled');
  assert.deepEqual(errors, []);
  await context.close();
});

test("another tenant's job is not reachable by URL", async () => {
  const theirs = await submit(TOKEN_B, { image: 'alpine:3', provider: 'sim', name: 'tenant b secret project' });
  const { context, page } = await open();
  await signIn(page);
  for (const path of [`/ui/jobs/${theirs.id}`, `/ui/jobs/${theirs.id}/live`, `/ui/jobs/${theirs.id}/cancel`]) {
    const r = await page.goto(base + path);
    assert.equal(r.status(), 404, path);
    assert.equal((await page.textContent('h1')).trim(), 'Not found', path);
    assert.doesNotMatch(await page.content(), /tenant b secret project/);
    assert.ok(!(await page.content()).includes(theirs.id), `${path} shows the id`);
  }
  await page.goto(base + `/ui/jobs?q=${theirs.id}`);
  assert.match(await page.textContent('p.error'), /No job of yours/);
  await page.goto(base + '/ui/jobs');
  assert.doesNotMatch(await page.content(), new RegExp(theirs.id));
  await context.close();
});

test('a job named <script> renders as text', async () => {
  const name = '<script>alert(1)</script>';
  const j = await submit(TOKEN_A, { image: 'alpine:3', provider: 'sim', name, labels: { dag_id: '<b>x</b>' } });
  const { context, page, errors } = await open();
  const dialogs = [];
  page.on('dialog', d => { dialogs.push(d.message()); d.dismiss(); });
  await signIn(page);
  await waitFor(async () => (await page.getByText(name, { exact: true }).count()) >= 1, 'the name as text in the list');
  await page.goto(base + `/ui/jobs/${j.id}`);
  assert.ok((await page.getByText(name).count()) >= 1);
  assert.equal(await page.$$eval('script', ss => ss.filter(s => s.textContent.includes('alert(1)')).length), 0);
  assert.deepEqual(dialogs, []);
  assert.deepEqual(errors, []);
  await context.close();
});

test("the cost page's totals equal the API's", async () => {
  const { context, page, errors } = await open();
  await signIn(page);
  for (const groupBy of ['provider', 'label:dag_id']) {
    const report = (await api(TOKEN_A, 'GET', `/v1/costs?group_by=${encodeURIComponent(groupBy)}`)).json;
    assert.ok(report.total_usd > 0, JSON.stringify(report));
    await page.goto(base + `/ui/costs?group_by=${encodeURIComponent(groupBy)}`);
    assert.equal(await page.textContent('#total-usd'), `$${report.total_usd.toFixed(6)}`);
    const rows = await page.$$eval('table#costs tr[data-group]', rs => rs.map(r => [r.dataset.group, r.querySelector('td.usd').textContent]));
    assert.deepEqual(rows, report.groups.map(g => [g.key, `$${g.usd.toFixed(6)}`]));
    assert.ok(await page.$('svg#chart rect'));
    assert.equal(await page.textContent('#total-reference'), `$${report.total_reference_usd.toFixed(6)}`);
    assert.equal(await page.textContent('#total-saved'), `$${report.total_saved_usd.toFixed(6)}`);
    // The days' bars add up to the period's total, each part one provider's.
    const parts = await page.$$eval('svg#daily rect[data-usd]', rs => rs.map(r => [r.dataset.provider, Number(r.dataset.usd)]));
    assert.ok(parts.length > 0);
    const sum = parts.reduce((s, [, usd]) => s + usd, 0);
    assert.ok(Math.abs(sum - report.total_usd) < 1e-6 * (parts.length + 1), `${sum} against ${report.total_usd}`);
    if (groupBy === 'label:dag_id') await shot(page, 'costs');
  }
  assert.deepEqual(errors, []);
  await context.close();
});

test('the providers page shows health, load, prices and calls', async () => {
  const { context, page, errors } = await open();
  await signIn(page);
  await page.goto(base + '/ui/providers');
  const providers = (await api(TOKEN_A, 'GET', '/v1/providers')).json;
  for (const p of providers) {
    const row = `tr[data-provider="${p.name}"]`;
    assert.equal((await page.textContent(`${row} td.health`)).trim(), p.healthy ? 'healthy' : `unhealthy: ${p.health_error}`);
    assert.match(await page.textContent(`${row} td.load`), new RegExp(`of ${p.max_concurrency}`));
    assert.match(await page.textContent(`${row} td.price`), /vCPU-h/);
    assert.match(await page.textContent(`${row} td.errors`), /calls/);
  }
  assert.match(await page.textContent('tr[data-provider="sim"] td.latency'), / ms/);
  await shot(page, 'providers');
  assert.deepEqual(errors, []);
  await context.close();
});

test('signing out ends the session', async () => {
  const { context, page, errors } = await open();
  await signIn(page);
  await Promise.all([page.waitForURL(base + '/ui/signin'), page.click('form#signout button[type=submit]')]);
  await page.goto(base + '/ui/jobs');
  assert.equal(page.url(), base + '/ui/signin');
  assert.deepEqual(errors, []);
  await context.close();
});

// The API reference: both documents, as this gateway serves them, each operation and schema
// on the page, every in-page link leading somewhere, nothing refused by the CSP.
for (const [pagePath, docPath, prefix] of [['/docs', '/openapi.json', ''], ['/docs/tes', '/ga4gh/tes/v1/openapi.json', '/ga4gh/tes/v1']]) {
  test(`${pagePath} shows every operation and schema of ${docPath}, under the CSP, with no token`, async () => {
    const doc = await (await fetch(base + docPath)).json();
    const { context, page, errors } = await open();
    const r = await page.goto(base + pagePath);
    assert.equal(r.status(), 200);
    assert.match(r.headers()['content-security-policy'], /script-src 'self'; style-src 'self'/);
    assert.equal(await page.title(), `${doc.info.title} · API reference`);
    let operations = 0;
    for (const [path, item] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(item)) {
        const section = page.locator(`article[id="op-${op.operationId}"]`);
        assert.equal(await section.count(), 1, `${method} ${path} has a section`);
        const heading = (await section.locator('h3').textContent()).replace(/\s+/g, ' ');
        assert.equal(heading, `${method.toUpperCase()} ${prefix}${path}`);
        assert.ok(op.summary && op.description, `${method} ${path} has a summary and a description`);
        assert.equal(await section.locator('p.summary').textContent(), op.summary);
        for (const status of Object.keys(op.responses)) {
          assert.equal(await section.locator(`td > code:text-is("${status}")`).count(), 1, `${method} ${path} answers ${status}`);
        }
        operations++;
      }
    }
    assert.ok(operations >= 5);
    assert.equal(await page.locator('nav.toc li').count(), operations);
    for (const name of Object.keys(doc.components.schemas)) {
      assert.equal(await page.locator(`article[id="schema-${name}"] h3`).textContent(), name);
    }
    const broken = await page.$$eval('a[href^="#"]', links => links
      .map(a => decodeURIComponent(a.getAttribute('href').slice(1)))
      .filter(id => !document.getElementById(id)));
    assert.deepEqual(broken, []);
    // The stylesheet applies (the CSP lets it): a GET's badge is coloured.
    const badge = await page.locator('span.method.get').first().evaluate(e => getComputedStyle(e).backgroundColor);
    assert.notEqual(badge, 'rgba(0, 0, 0, 0)');
    // A link to a schema leads to it.
    const first = page.locator('a[href^="#schema-"]').first();
    const target = (await first.getAttribute('href')).slice(1);
    await first.click();
    assert.equal(new URL(page.url()).hash, `#${target}`);
    await shot(page, `reference${pagePath.replaceAll('/', '-')}`);
    assert.deepEqual(errors, []);
    await context.close();
  });
}

test("the OpenAPI documents, committed and served, are clean under Spectral's spectral:oas", async () => {
  const spectral = join(dirname(fileURLToPath(import.meta.url)), 'node_modules', '.bin', 'spectral');
  const ruleset = join(dir, '.spectral.yaml');
  writeFileSync(ruleset, 'extends: ["spectral:oas"]\n');
  const files = ['openapi/offload.v1.yaml', 'openapi/tes.v1.yaml'];
  for (const [name, path] of [['served-v1.json', '/openapi.json'], ['served-tes.json', '/ga4gh/tes/v1/openapi.json']]) {
    const r = await fetch(base + path);
    assert.equal(r.status, 200);
    writeFileSync(join(dir, name), await r.text());
    files.push(join(dir, name));
  }
  const report = join(dir, 'spectral.json');
  const run = spawnSync(spectral, ['lint', '--ruleset', ruleset, '--format', 'json', '--output', report, '--fail-severity', 'hint', ...files], { encoding: 'utf8' });
  assert.equal(run.error, undefined, `running ${spectral}`);
  let results;
  try { results = JSON.parse(readFileSync(report, 'utf8')); } catch (e) { assert.fail(`no report from spectral (${e}; exit ${run.status}): ${run.stdout}${run.stderr}`); }
  assert.deepEqual(results.map(p => `${p.source}: ${p.code} at ${p.path.join('.')}: ${p.message}`), []);
  assert.equal(run.status, 0, run.stderr);
});

test('the shipped configs are valid under deploy/offload.schema.json, as Taplo checks them in an editor', async () => {
  const taplo = join(dirname(fileURLToPath(import.meta.url)), 'node_modules', '.bin', 'taplo');
  const schema = `file://${process.cwd()}/deploy/offload.schema.json`;
  // The example names its schema with a `#:schema` line, as an editor reads it.
  const configs = [['deploy/offload.example.toml'], ...['deploy/compose/offload.toml', 'deploy/kubernetes/base/offload.toml',
    'tests/schemathesis/offload.toml'].map(f => ['--schema', schema, f])];
  for (const args of configs) {
    const run = spawnSync(taplo, ['check', ...args], { encoding: 'utf8', env: { ...process.env, RUST_LOG: 'error' } });
    assert.equal(run.error, undefined, `running ${taplo}`);
    assert.equal(run.status, 0, `${args.at(-1)}: ${run.stdout}${run.stderr}`);
  }
  // A mistake is found: the check can fail.
  const bad = join(dir, 'bad.toml');
  writeFileSync(bad, '[log]\nformat = "yaml"\n');
  const run = spawnSync(taplo, ['check', '--schema', schema, bad], { encoding: 'utf8' });
  assert.notEqual(run.status, 0);
  assert.match(run.stdout + run.stderr, /"yaml" is not one of/);
});
