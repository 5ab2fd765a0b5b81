// The web pages of `threadsync serve` in a real browser (Debian's Chromium driven by
// playwright-core), against a running server and a running `threadsync lsp` that watches
// WEB_THREADS_DIR. Started by tests/web.rs, which seeds the threads described in WEB_FIXTURE.
//
// Env:
//   WEB_URL          the server's base URL (http://127.0.0.1:PORT)
//   WEB_TOKEN        team A's token;  WEB_TOKEN_B: team B's token
//   WEB_THREADS_DIR  team A's threads directory (the sidecar syncs what is written there)
//   WEB_BACKEND      sqlite | postgres (names the summary line)
//   WEB_FIXTURE      JSON: the seeded threads and what the checks look for (tests/web.rs, `seed`)
//   WEB_SCREENSHOTS=1  write docs/screenshots/{threads,thread,search,thread-dark}.png
//   CHROMIUM         the browser (default /usr/bin/chromium)
//
// Each check prints "ok   NAME (N ms)" or "FAIL NAME: why"; the last line is exactly
// "web-<backend>: N passed, N failed". Exits non-zero when a check failed.

import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const env = (k, d) => {
  const v = process.env[k] ?? d;
  if (v === undefined) {
    console.error(`web suite: env ${k} is required`);
    process.exit(2);
  }
  return v;
};
const BASE = env('WEB_URL').replace(/\/$/, '');
const TOKEN = env('WEB_TOKEN');
const TOKEN_B = env('WEB_TOKEN_B');
const THREADS_DIR = env('WEB_THREADS_DIR');
const BACKEND = env('WEB_BACKEND', 'sqlite');
const FX = JSON.parse(env('WEB_FIXTURE'));
const SCREENSHOTS = process.env.WEB_SCREENSHOTS === '1';
const SHOT_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../docs/screenshots');
const CHROMIUM = env('CHROMIUM', '/usr/bin/chromium');
const ORIGIN = new URL(BASE).origin;

const U = (p) => BASE + p;
const pathOf = (u) => new URL(u).pathname;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const rand = () => Math.random().toString(36).slice(2, 8);
const letters = (n) => Array.from({ length: n }, () => 'bcdfghjklmnprtvwz'[Math.floor(Math.random() * 17)]).join('');
const thread = (id) => FX.threads.find((t) => t.id === id);

class CheckError extends Error {}
function assert(cond, msg) {
  if (!cond) throw new CheckError(msg);
}
function eq(got, want, what) {
  if (JSON.stringify(got) !== JSON.stringify(want)) {
    throw new CheckError(`${what}: expected ${JSON.stringify(want)}, got ${JSON.stringify(got)}`);
  }
}

// ----- checks ------------------------------------------------------------------------------
// A deviation that does not stop the rest of a check from being useful is recorded with
// `later(cond, msg)`: the check goes on and fails at its end with every such message.
let deferred = [];
function later(cond, msg) {
  if (!cond) deferred.push(msg);
}
let passed = 0;
let failed = 0;
const failures = [];
const t_start = Date.now();

function log(line) {
  process.stdout.write(line + '\n');
}

async function check(name, fn, timeoutMs = 30_000) {
  const t0 = Date.now();
  let timer;
  deferred = [];
  try {
    await Promise.race([
      (async () => {
        await fn();
        if (deferred.length) throw new CheckError(deferred.join('; '));
      })(),
      new Promise((_, rej) => {
        timer = setTimeout(() => rej(new CheckError(`did not finish within ${timeoutMs} ms`)), timeoutMs);
      }),
    ]);
    passed++;
    log(`ok   ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    failed++;
    // Playwright's errors carry a call log; the first lines say what went wrong.
    let why = String(e?.message ?? e).split('\n').slice(0, 6).join('\n       ');
    if (deferred.length && !(e instanceof CheckError && e.message === deferred.join('; '))) {
      why += `\n       (also: ${deferred.join('; ')})`;
    }
    failures.push(name);
    log(`FAIL ${name}: ${why}`);
  } finally {
    clearTimeout(timer);
  }
}

// ----- thread files, written as an assistant writes them -------------------------------------
function writeAtomically(file, value) {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.tmp-${process.pid}-${rand()}`);
  fs.writeFileSync(tmp, JSON.stringify(value, null, 2));
  fs.renameSync(tmp, file);
}

/** Appends a message to a `.json` thread file (read, add, write back atomically). */
function appendToThreadFile(id, message) {
  const file = path.join(THREADS_DIR, `${id}.json`);
  const doc = JSON.parse(fs.readFileSync(file, 'utf8'));
  doc.messages.push(message);
  writeAtomically(file, doc);
}

/** Polls the sync API until the message is on the server; returns the ms it took. */
async function onServer(threadId, messageId, timeoutMs = 10_000) {
  const t0 = Date.now();
  for (;;) {
    const r = await fetch(U(`/v1/threads/${threadId}`), { headers: { authorization: `Bearer ${TOKEN}` } });
    if (r.ok) {
      const t = await r.json();
      if (t.messages?.some((m) => m.id === messageId)) return Date.now() - t0;
    }
    assert(Date.now() - t0 < timeoutMs, `message ${messageId} did not reach the server within ${timeoutMs} ms`);
    await sleep(100);
  }
}

// A failure outside any check (the browser does not start, a stray promise) still ends with
// the summary line.
function abort(why) {
  log(`FAIL setup: ${why}`);
  log(`web-${BACKEND}: ${passed} passed, ${failed + 1} failed`);
  process.exit(1);
}
process.on('unhandledRejection', (e) => abort(`unhandled rejection: ${e?.stack ?? e}`));
process.on('uncaughtException', (e) => abort(`uncaught exception: ${e?.stack ?? e}`));

// ----- the browser --------------------------------------------------------------------------
const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});

// Script errors, CSP violations and failed assets, in every page of every context.
const pageErrors = [];
async function newContext(opts = {}) {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 }, colorScheme: 'light', ...opts });
  ctx.setDefaultTimeout(8_000);
  ctx.setDefaultNavigationTimeout(15_000);
  ctx.on('weberror', (e) => pageErrors.push(`page error: ${e.error().message}`));
  ctx.on('console', (m) => {
    // A 404 page's own status shows as "Failed to load resource"; assets are checked below.
    if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) {
      pageErrors.push(`console error on ${m.page()?.url()}: ${m.text()}`);
    }
  });
  ctx.on('response', (r) => {
    if (new URL(r.url()).pathname.startsWith('/assets/') && r.status() >= 400) {
      pageErrors.push(`asset ${r.url()} answered ${r.status()}`);
    }
  });
  return ctx;
}

/** Signs in through the form. With `fallback`, a form that fails is followed by a sign-in
 *  through the HTTP API, so checks about other things can still run; `report` records the
 *  form's failure in the running check (else the sign-in check is the one that says it). */
async function signIn(ctx, token, { fallback = false, report = false } = {}) {
  const page = await ctx.newPage();
  await page.goto(U('/signin'));
  await page.fill('#token', token);
  const [r] = await Promise.all([
    page.waitForResponse((r) => pathOf(r.url()) === '/signin' && r.request().method() === 'POST'),
    page.click('form[action="/signin"] button[type="submit"]'),
  ]);
  if (r.status() !== 303 && fallback) {
    const origin = await r.request().headerValue('origin');
    if (report) later(false, `the sign-in form answered ${r.status()} (the browser sent Origin: ${origin}); signed in through the HTTP API for the rest of this check`);
    await apiSignIn(ctx, token);
    await page.goto(U('/threads'));
  }
  await page.waitForURL((u) => u.pathname === '/threads', { timeout: 5_000 }).catch(() => {
    throw new CheckError(`signing in through the form failed: POST /signin answered ${r.status()}, the page is ${page.url()}`);
  });
  return page;
}

/** Signs the context in without the form: GET /signin for its csrf, POST it back (no Origin). */
async function apiSignIn(ctx, token) {
  const html = await (await ctx.request.get(U('/signin'))).text();
  const input = html.match(/<input[^>]*name="csrf"[^>]*>/)?.[0] ?? '';
  const csrf = input.match(/value="([^"]*)"/)?.[1];
  assert(csrf, 'no csrf field in /signin');
  const r = await ctx.request.post(U('/signin'), { form: { token, csrf }, maxRedirects: 0 });
  assert(r.status() === 303, `POST /signin through the HTTP API answered ${r.status()}`);
  assert((await ctx.cookies()).some((c) => c.name === 'ts_session'), 'no session cookie after signing in through the HTTP API');
}

/** Puts a marker on the page's window: still there later means the page was not reloaded. */
async function mark(page) {
  const m = `m${rand()}`;
  await page.evaluate((m) => {
    window.__webSuiteMarker = m;
  }, m);
  return async () => (await page.evaluate(() => window.__webSuiteMarker)) === m;
}

async function waitFor(what, timeoutMs, fn, every = 50) {
  const t0 = Date.now();
  for (;;) {
    if (await fn()) return Date.now() - t0;
    assert(Date.now() - t0 < timeoutMs, `${what} (waited ${timeoutMs} ms)`);
    await sleep(every);
  }
}

const ctxA = await newContext();
let page = null; // team A's signed-in page, shared by the checks below
let sessionCookie = null;
const searchWord = `quokka${letters(8)}`;
const searchMsg = `search-${rand()}`; // a message id; its element is #m-<id>
let shareUrl = null;
let shareId = null;

// 1. Sign in ----------------------------------------------------------------------------------
await check('sign in: a wrong token shows the alert, the right one lands on /threads', async () => {
  page = await ctxA.newPage();
  const root = await page.goto(U('/'));
  eq(pathOf(page.url()), '/signin', 'GET / when signed out ends at');
  assert(root.ok(), `GET /signin answered ${root.status()}`);
  eq(await page.locator('label[for="token"]').innerText(), 'Team token', 'the token label');
  eq(await page.getAttribute('#token', 'type'), 'password', 'the token input type');
  assert((await page.locator('form[action="/signin"] input[type="hidden"][name="csrf"]').count()) === 1, 'no hidden csrf field in the sign-in form');
  await page.fill('#token', 'tsk_0000000000_not-a-real-token');
  const [bad] = await Promise.all([
    page.waitForResponse((r) => pathOf(r.url()) === '/signin' && r.request().method() === 'POST'),
    page.click('form[action="/signin"] button[type="submit"]'),
  ]);
  await page.waitForLoadState();
  const origin = await bad.request().headerValue('origin');
  eq(bad.status(), 401, `POST /signin with a wrong token (the browser sent Origin: ${origin}): status`);
  const alert = page.locator('p[role="alert"].error');
  assert(await alert.isVisible(), 'a wrong token shows no visible <p role="alert" class="error">');
  assert((await alert.innerText()).trim().length > 0, 'the alert is empty');
  eq((await ctxA.cookies()).filter((c) => c.name === 'ts_session').length, 0, 'ts_session cookies after a wrong token');
  await page.fill('#token', TOKEN);
  const [good] = await Promise.all([
    page.waitForResponse((r) => pathOf(r.url()) === '/signin' && r.request().method() === 'POST'),
    page.click('form[action="/signin"] button[type="submit"]'),
  ]);
  eq(good.status(), 303, 'POST /signin with the right token: status');
  await page.waitForURL((u) => u.pathname === '/threads');
  const again = await page.goto(U('/'));
  eq(pathOf(page.url()), '/threads', 'GET / when signed in ends at');
  assert(again.ok(), `/threads answered ${again.status()}`);
});

// The checks below are about other things than signing in: if the form failed (the check above
// said why), sign team A's context in through the HTTP API so they still run.
if (!(await ctxA.cookies()).some((c) => c.name === 'ts_session')) {
  try {
    await apiSignIn(ctxA, TOKEN);
    page = page ?? (await ctxA.newPage());
    log('     (the form did not sign in; team A is signed in through the HTTP API for the other checks)');
  } catch (e) {
    log(`     (signing in through the HTTP API failed too: ${e.message})`);
  }
}

await check('session cookie: HttpOnly, SameSite=Strict, Path=/, not the token, not readable from JS', async () => {
  const cookies = await ctxA.cookies();
  const c = cookies.find((c) => c.name === 'ts_session');
  assert(c, `no ts_session cookie; cookies: ${cookies.map((c) => c.name).join(', ') || 'none'}`);
  sessionCookie = c;
  assert(c.httpOnly, 'the session cookie is not HttpOnly');
  eq(c.sameSite, 'Strict', 'the session cookie SameSite');
  eq(c.path, '/', 'the session cookie Path');
  const secret = TOKEN.split('_').pop();
  for (const k of cookies) {
    assert(!k.value.includes(TOKEN) && !(secret.length >= 8 && k.value.includes(secret)), `cookie ${k.name} contains the token`);
  }
  await page.goto(U('/threads'));
  eq(pathOf(page.url()), '/threads', 'with the cookie, /threads ends at');
  assert(!(await page.evaluate(() => document.cookie)).includes('ts_session'), 'the session cookie is readable from JS');
});

// 2. The list ---------------------------------------------------------------------------------
await check('list: the seeded threads with titles and counts, newest first', async () => {
  const r = await page.goto(U('/threads'));
  assert(r.ok(), `/threads answered ${r.status()}`);
  eq((await page.locator('h1').innerText()).trim(), 'Threads', 'the h1');
  const items = await page.$$eval('ol#threads > li.thread', (lis) =>
    lis.map((li) => ({
      id: li.dataset.thread,
      href: li.querySelector('a')?.getAttribute('href'),
      title: li.querySelector('a')?.textContent.trim(),
      count: li.querySelector('.count')?.textContent.trim(),
      time: li.querySelector('time')?.getAttribute('datetime'),
      bold: li.querySelectorAll('b').length,
    })),
  );
  assert(items.length > 0, 'no <li class="thread"> in <ol id="threads">');
  for (const t of FX.threads) {
    const it = items.find((i) => i.id === t.id);
    assert(it, `thread ${t.id} ("${t.title}") is not listed; listed: ${items.map((i) => i.id).join(', ')}`);
    eq(it.href, `/t/${t.id}`, `${t.id}'s link`);
    eq(it.title, t.title, `${t.id}'s title`);
    eq(it.count, `${t.count} messages`, `${t.id}'s count`);
    eq(it.bold, 0, `<b> elements in ${t.id}'s item (its title must be text)`);
    assert(it.time && !Number.isNaN(Date.parse(it.time)), `${t.id}'s <time datetime> is not a date: ${it.time}`);
  }
  assert(!items.some((i) => i.id === FX.other), "team B's thread is in team A's list");
  const times = items.map((i) => Date.parse(i.time));
  for (let i = 1; i < times.length; i++) {
    assert(times[i - 1] >= times[i], `not newest first: ${items[i - 1].id} (${items[i - 1].time}) before ${items[i].id} (${items[i].time})`);
  }
  const order = items.map((i) => i.id).filter((id) => FX.newestFirst.includes(id));
  eq(order, FX.newestFirst, 'the seeded threads, in list order');
});

// 3. XSS and CSP ------------------------------------------------------------------------------
await check('xss: payloads are text, nothing runs; CSP present without unsafe-inline', async () => {
  const t = thread(FX.xss);
  const dialogs = [];
  const onDialog = (d) => {
    dialogs.push(d.message());
    d.dismiss().catch(() => {});
  };
  page.on('dialog', onDialog);
  try {
    for (const p of ['/threads', `/t/${FX.xss}`]) {
      const r = await page.goto(U(p));
      assert(r.ok(), `${p} answered ${r.status()}`);
      const csp = r.headers()['content-security-policy'];
      assert(csp, `${p}: no Content-Security-Policy header`);
      assert(!/unsafe-inline|unsafe-eval/.test(csp), `${p}: the CSP allows unsafe code: ${csp}`);
      assert(/script-src 'self'/.test(csp) && /default-src 'none'/.test(csp), `${p}: unexpected CSP: ${csp}`);
      await sleep(300); // an onerror would have fired by now
      eq(await page.evaluate(() => typeof window.__xss), 'undefined', `${p}: typeof window.__xss`);
      const bad = await page.evaluate(() => {
        const out = [];
        for (const s of document.querySelectorAll('script')) {
          if (!s.src || !new URL(s.src).pathname.startsWith('/assets/')) out.push(`script ${s.outerHTML.slice(0, 80)}`);
        }
        for (const el of document.querySelectorAll('*')) {
          for (const a of el.attributes) if (/^on/i.test(a.name)) out.push(`<${el.tagName.toLowerCase()} ${a.name}>`);
          for (const a of ['href', 'src', 'action', 'formaction']) {
            const v = el.getAttribute(a);
            if (v && /^\s*javascript:/i.test(v)) out.push(`<${el.tagName.toLowerCase()} ${a}="${v}">`);
          }
        }
        for (const el of document.querySelectorAll('main img, #messages img, h1 b, #threads b, iframe, object, embed')) {
          out.push(`<${el.tagName.toLowerCase()}> ${el.outerHTML.slice(0, 80)}`);
        }
        return out;
      });
      eq(bad, [], `${p}: injected elements/attributes`);
    }
    eq((await page.locator('h1').innerText()).trim(), t.title, 'the XSS thread h1 (the title as text)');
    const text = await page.locator('#messages').innerText();
    for (const s of FX.xssVisible) {
      assert(text.includes(s), `the payload ${JSON.stringify(s)} is not visible as text in #messages`);
    }
    eq(dialogs, [], 'dialogs opened');
  } finally {
    page.off('dialog', onDialog);
  }
});

// 4. The thread page --------------------------------------------------------------------------
await check('thread: messages in order with role, time and machine; rust code highlighted', async () => {
  const t = thread(FX.code);
  const r = await page.goto(U(`/t/${FX.code}`));
  assert(r.ok(), `/t/${FX.code} answered ${r.status()}`);
  eq((await page.locator('h1').innerText()).trim(), t.title, 'the h1');
  const msgs = await page.$$eval('ol#messages > li.message', (lis) =>
    lis.map((li) => ({
      id: li.id,
      role: li.dataset.role,
      roleText: li.querySelector('header .role')?.textContent.trim(),
      time: li.querySelector('header time')?.getAttribute('datetime'),
      machine: li.querySelector('header .machine')?.textContent.trim(),
      permalink: li.querySelector('header a.permalink')?.getAttribute('href'),
      body: !!li.querySelector('div.body'),
    })),
  );
  eq(msgs.slice(0, t.messages.length).map((m) => m.id), t.messages.map((m) => `m-${m.id}`), 'message ids in order');
  t.messages.forEach((want, i) => {
    const m = msgs[i];
    eq(m.role, want.role, `${m.id} data-role`);
    assert(m.roleText && m.roleText.toLowerCase().includes(want.role), `${m.id}: .role says ${JSON.stringify(m.roleText)}`);
    assert(m.time && !Number.isNaN(Date.parse(m.time)), `${m.id}: <time datetime> is ${JSON.stringify(m.time)}`);
    assert(Math.abs(Date.parse(m.time) - want.timestamp) < 1000, `${m.id}: time ${m.time} is not the message's timestamp ${new Date(want.timestamp).toISOString()}`);
    assert(m.machine, `${m.id}: no machine in <span class="machine">`);
    eq(m.permalink, `#${m.id}`, `${m.id}: permalink`);
    assert(m.body, `${m.id}: no <div class="body">`);
  });
  const code = page.locator(`#m-${FX.codeMessage} div.body pre > code.language-rust`);
  eq(await code.count(), 1, '<pre><code class="language-rust"> in the answer');
  const spans = await code.locator('span[class^="hl-"], span[class*=" hl-"]').count();
  assert(spans >= 3, `the rust code block has ${spans} highlight spans (class hl-*)`);
  assert((await code.innerText()).includes('toml::from_str(&text)?'), 'the code block does not show the code as written');
  const colours = await code.evaluate((c) => {
    const plain = getComputedStyle(c).color;
    const set = new Set([...c.querySelectorAll('span')].map((e) => getComputedStyle(e).color));
    set.delete(plain);
    return [...set];
  });
  assert(colours.length >= 2, `the highlight spans show ${colours.length} colour(s) besides the code's: is /assets/highlight.css applied?`);
});

await check('thread: a tool call is a collapsed <details>, its body shown on click', async () => {
  const r = await page.goto(U(`/t/${FX.tools}`));
  assert(r.ok(), `/t/${FX.tools} answered ${r.status()}`);
  const use = page.locator(`#m-${FX.toolUseMessage} details.block.tool`);
  const result = page.locator(`#m-${FX.toolResultMessage} details.block.tool`);
  assert((await use.count()) >= 1, `no <details class="block tool"> in the tool_use message m-${FX.toolUseMessage}`);
  assert((await result.count()) >= 1, `no <details class="block tool"> in the tool_result message m-${FX.toolResultMessage}`);
  for (const [d, hidden] of [
    [use.first(), FX.toolInput],
    [result.first(), FX.toolOutput],
  ]) {
    eq(await d.evaluate((e) => e.open), false, 'details.open before a click');
    const summary = d.locator('summary');
    assert(await summary.isVisible(), 'the <summary> is not visible');
    assert((await summary.innerText()).trim().length > 0, 'the <summary> is empty');
    // The body: what the details holds besides its summary.
    const body = d.locator(':scope > :not(summary)');
    assert((await body.count()) >= 1, 'the tool <details> has nothing besides its <summary>');
    assert((await body.allTextContents()).join('\n').includes(hidden), `the tool block's body does not contain ${JSON.stringify(hidden)}`);
    const shown = async () => {
      for (const b of await body.all()) if (await b.isVisible()) return true;
      return false;
    };
    assert(!(await shown()), 'the tool block\'s body is visible before the summary is clicked');
    await summary.click();
    eq(await d.evaluate((e) => e.open), true, 'details.open after a click');
    assert(await shown(), 'the tool block\'s body is not visible after the summary is clicked');
    assert(await d.getByText(hidden).last().isVisible(), `${JSON.stringify(hidden)} is not visible after the click`);
  }
  // The assistant's text in the same message is not hidden.
  assert(await page.getByText(FX.toolText).first().isVisible(), `the text block ${JSON.stringify(FX.toolText)} is not visible`);
});

await check('thread: the 1 MB message shows a preview and "Show all" loads it in place', async () => {
  const r = await page.goto(U(`/t/${FX.big}`));
  assert(r.ok(), `/t/${FX.big} answered ${r.status()}`);
  const li = page.locator(`#m-${FX.bigMessage}`);
  const link = li.locator('a.load-full');
  eq(await link.count(), 1, 'a.load-full links in the big message');
  eq(await link.getAttribute('href'), `/t/${FX.big}/m/${FX.bigMessage}`, 'the Show all link');
  const label = (await link.innerText()).trim();
  assert(/^Show all \(1(\.\d)? MB\)$/.test(label), `the link says ${JSON.stringify(label)}, expected "Show all (1.x MB)"`);
  const before = await li.locator('div.body').innerText();
  assert(before.includes(FX.bigStart), 'the preview does not start with the message');
  assert(!before.includes(FX.bigEnd), 'the preview already holds the end of the 1 MB message');
  assert(before.length < FX.bigSize / 4, `the preview is ${before.length} characters long`);
  const same = await mark(page);
  const url = page.url();
  await link.click();
  const ms = await waitFor('the full message was not loaded in place', 10_000, async () =>
    (await li.locator('div.body').innerText()).includes(FX.bigEnd),
  );
  assert(await same(), 'the page was reloaded (Show all must replace the preview in place)');
  eq(page.url(), url, 'the URL after Show all');
  const after = await li.locator('div.body').innerText();
  assert(after.length >= FX.bigSize * 0.9, `after Show all the body is ${after.length} characters, the message ${FX.bigSize}`);
  eq(await li.locator('a.load-full').count(), 0, 'Show all links left after loading');
  log(`     full message loaded in ${ms} ms`);
});

// 5. Screenshots (before the live checks add threads and messages) ----------------------------
if (SCREENSHOTS) {
  await check('screenshots: docs/screenshots/{threads,thread,search,thread-dark}.png', async () => {
    fs.mkdirSync(SHOT_DIR, { recursive: true });
    const settle = async (p) => {
      await p.waitForLoadState('load');
      await p.evaluate(() => document.fonts?.ready);
      await sleep(200);
    };
    const openTools = async (p) => {
      await p.goto(U(`/t/${FX.tools}`));
      await p.locator(`#m-${FX.toolUseMessage} details.block.tool summary`).first().click();
      await p.mouse.move(0, 0);
      await settle(p);
    };
    const light = await newContext({ colorScheme: 'light' });
    const dark = await newContext({ colorScheme: 'dark' });
    try {
      const pl = await signIn(light, TOKEN, { fallback: true });
      await settle(pl);
      await pl.screenshot({ path: path.join(SHOT_DIR, 'threads.png'), fullPage: true });
      await openTools(pl);
      await pl.screenshot({ path: path.join(SHOT_DIR, 'thread.png'), fullPage: true });
      await pl.goto(U(`/search?q=${encodeURIComponent(FX.screenshotQuery)}`));
      await settle(pl);
      assert((await pl.locator('li.hit').count()) >= 2, `the screenshot's search ${FX.screenshotQuery} has < 2 hits`);
      await pl.screenshot({ path: path.join(SHOT_DIR, 'search.png'), fullPage: true });
      const pd = await signIn(dark, TOKEN, { fallback: true });
      await openTools(pd);
      const bg = await pd.evaluate(() => getComputedStyle(document.body).backgroundColor);
      await pd.screenshot({ path: path.join(SHOT_DIR, 'thread-dark.png'), fullPage: true });
      const lum = (bg.match(/\d+/g) ?? [255, 255, 255]).slice(0, 3).reduce((a, b) => a + Number(b), 0) / 3;
      assert(lum < 128, `the dark scheme's page background is ${bg}`);
    } finally {
      await light.close();
      await dark.close();
    }
    log(`     wrote ${SHOT_DIR}/{threads,thread,search,thread-dark}.png`);
  }, 60_000);
}

// 6. Live list --------------------------------------------------------------------------------
await check('live list: a thread file written by an assistant shows up without reload', async () => {
  const r = await page.goto(U('/threads'));
  assert(r.ok(), `/threads answered ${r.status()}`);
  await sleep(300); // the page's event stream connects
  const same = await mark(page);
  const id = `T-web-live-${rand()}`;
  const now = Date.now();
  writeAtomically(path.join(THREADS_DIR, `${id}.json`), {
    id,
    v: 0,
    created: now,
    title: 'Live: written while the list was open',
    messages: [
      { id: 'm-live-1', role: 'user', content: 'Is this list live?', timestamp: now },
      { id: 'm-live-2', role: 'assistant', content: 'It should be.', timestamp: now + 1 },
    ],
    env: {},
  });
  const ms = await waitFor(`${id} did not appear in the open list`, 8_000, async () =>
    (await page.locator(`li.thread[data-thread="${id}"]`).count()) > 0,
  );
  assert(await same(), 'the page was reloaded');
  eq(await page.locator('ol#threads > li.thread').first().getAttribute('data-thread'), id, 'the first thread (newest)');
  eq((await page.locator(`li.thread[data-thread="${id}"] .count`).innerText()).trim(), '2 messages', 'its count');
  log(`     appeared ${ms} ms after the file was written`);
});

// 7. Search -----------------------------------------------------------------------------------
await check('search: as you type, <mark>ed hit; Enter submits; the hit targets the message', async () => {
  const now = Date.now();
  appendToThreadFile(FX.big, {
    id: searchMsg,
    role: 'user',
    content: `Which step mentions the ${searchWord} warning? It is somewhere in the middle.`,
    timestamp: now,
  });
  const synced = await onServer(FX.big, searchMsg);
  log(`     the message reached the server ${synced} ms after the file write`);
  // Search-as-you-type on the search page.
  const r = await page.goto(U('/search'));
  assert(r.status() < 400, `/search (no query) answered ${r.status()}`);
  eq((await page.locator('h1').innerText()).trim(), 'Search', 'the search page h1');
  const partials = [];
  const onReq = (q) => {
    const u = new URL(q.url());
    if (u.pathname === '/search' && u.searchParams.get('partial') === '1') partials.push(u.search);
  };
  page.on('request', onReq);
  const same = await mark(page);
  const hitSel = `ol#results > li.hit a[href="/t/${FX.big}#m-${searchMsg}"]`;
  let found = false;
  const t0 = Date.now();
  try {
    await page.fill('#q', '');
    await page.locator('#q').pressSequentially(searchWord, { delay: 40 });
    // The index may lag the push a little: type one more key if the first round found nothing.
    while (!found && Date.now() - t0 < 8_000) {
      found = (await page.locator(hitSel).count()) > 0;
      if (!found) {
        await sleep(400);
        if (!(await page.locator(hitSel).count())) {
          await page.press('#q', 'End');
          await page.press('#q', 'Space');
          await page.press('#q', 'Backspace');
        }
      }
    }
  } finally {
    page.off('request', onReq);
  }
  assert(partials.length > 0, 'typing made no /search?…&partial=1 request (search-as-you-type)');
  assert(found, `typing ${searchWord} did not list the hit ${hitSel}; results: ${JSON.stringify(await page.locator('#results, #no-results').allInnerTexts())}`);
  assert(await same(), 'the page was reloaded while typing');
  const hits = page.locator('ol#results > li.hit');
  eq(await hits.count(), 1, 'hits for a word that is in one message');
  eq((await hits.first().locator('a').innerText()).trim(), thread(FX.big).title, "the hit's link text (the thread title)");
  const marks = await hits.first().locator('p.snippet mark').allInnerTexts();
  assert(marks.map((m) => m.toLowerCase()).includes(searchWord), `the snippet marks ${JSON.stringify(marks)}, not ${searchWord}`);
  // No match.
  await page.goto(U(`/search?q=${encodeURIComponent('zzqqxxnomatch')}`));
  assert(await page.locator('#no-results').isVisible(), 'no <p id="no-results"> for a query without hits');
  // Enter in the header's search form: an ordinary GET form submission.
  await page.goto(U('/threads'));
  await page.fill('#q', searchWord);
  await Promise.all([page.waitForURL((u) => u.pathname === '/search'), page.press('#q', 'Enter')]);
  eq(new URL(page.url()).searchParams.get('q'), searchWord, 'q after Enter');
  await page.locator(hitSel).waitFor();
  // Following the hit targets the message.
  await Promise.all([page.waitForURL((u) => u.pathname === `/t/${FX.big}`), page.click(hitSel)]);
  eq(new URL(page.url()).hash, `#m-${searchMsg}`, 'the hash after following the hit');
  await page.waitForLoadState('load');
  await sleep(300);
  const target = await page.evaluate(() => {
    const t = document.querySelector(':target');
    if (!t) return null;
    const r = t.getBoundingClientRect();
    return { id: t.id, top: r.top, bottom: r.bottom, h: innerHeight, scrollY };
  });
  assert(target, 'no element is the :target');
  eq(target.id, `m-${searchMsg}`, 'the :target');
  assert(target.top < target.h && target.bottom > 0, `the message is not scrolled into view: ${JSON.stringify(target)}`);
  assert(target.scrollY > 0, `the page did not scroll to the message: ${JSON.stringify(target)}`);
}, 45_000);

// 8. Live thread ------------------------------------------------------------------------------
await check('live thread: a message written to the file appears on the open page within 5 s', async () => {
  const r = await page.goto(U(`/t/${FX.code}`));
  assert(r.ok(), `/t/${FX.code} answered ${r.status()}`);
  await sleep(300);
  const same = await mark(page);
  const id = `live-${rand()}`;
  const text = `Live message ${id}`;
  const t0 = Date.now();
  appendToThreadFile(FX.code, { id, role: 'assistant', content: text, timestamp: t0 });
  const sel = `ol#messages > li.message#m-${id}`;
  const ms = await waitFor(`${id} did not appear on the open thread page`, 5_000, async () =>
    (await page.locator(sel).count()) > 0, 20);
  log(`     appeared ${ms} ms after the file write`);
  assert(await same(), 'the page was reloaded');
  assert((await page.locator(sel).innerText()).includes(text), 'the live message does not show its text');
  eq(await page.locator('ol#messages > li.message').last().getAttribute('id'), `m-${id}`, 'the last message');
});

// 9. Another team -----------------------------------------------------------------------------
await check("teams: team A gets 404 for team B's thread (which team B can read)", async () => {
  const ctxB = await newContext();
  try {
    const pb = await signIn(ctxB, TOKEN_B, { fallback: true });
    const rb = await pb.goto(U(`/t/${FX.other}`));
    eq([pathOf(pb.url()), rb.status()], [`/t/${FX.other}`, 200], `team B: /t/${FX.other} (where it ends, status)`);
    const listB = await pb.goto(U('/threads'));
    assert(listB.ok(), `team B: /threads answered ${listB.status()}`);
    const idsB = await pb.$$eval('li.thread', (l) => l.map((x) => x.dataset.thread));
    assert(idsB.includes(FX.other), `team B's list lacks ${FX.other}`);
    assert(!idsB.some((id) => FX.threads.some((t) => t.id === id)), `team B's list shows team A's threads: ${idsB}`);
  } finally {
    await ctxB.close();
  }
  const r = await page.goto(U(`/t/${FX.other}`));
  eq([pathOf(page.url()), r.status()], [`/t/${FX.other}`, 404], `team A: /t/${FX.other} (where it ends, status)`);
  assert(!(await page.content()).includes(FX.otherTitle), "team A's 404 shows team B's title");
  eq(await page.locator('h1').count(), 1, 'h1 on the 404 page');
  const missing = await page.goto(U('/t/T-no-such-thread'));
  eq(missing.status(), 404, '/t/T-no-such-thread');
  const msg = await page.request.get(U(`/t/${FX.other}/m/${FX.otherMessage}`), { maxRedirects: 0 });
  eq(msg.status(), 404, `team A: /t/${FX.other}/m/${FX.otherMessage}`);
});

// 10. Share -----------------------------------------------------------------------------------
await check('share: a read-only link for one thread, nothing else; revoked → 404 at once', async () => {
  const t = thread(FX.code);
  const r = await page.goto(U(`/t/${FX.code}`));
  assert(r.ok(), `/t/${FX.code} answered ${r.status()}`);
  const form = page.locator(`form[method="post"][action="/t/${FX.code}/shares"]`);
  eq(await form.count(), 1, 'share forms on the thread page');
  eq(await form.locator('label[for="expires"]').innerText(), 'Expires', 'the expiry label');
  const options = await form.locator('select#expires option').evaluateAll((os) => os.map((o) => [o.value, o.textContent.trim()]));
  const never = options.find(([v, l]) => /never/i.test(v) || /never/i.test(l));
  assert(never, `no "never" option in #expires: ${JSON.stringify(options)}`);
  await form.locator('select#expires').selectOption(never[0]);
  const csrf = await form.locator('input[type="hidden"][name="csrf"]').inputValue();
  const [posted] = await Promise.all([
    page.waitForResponse((r) => pathOf(r.url()) === `/t/${FX.code}/shares` && r.request().method() === 'POST'),
    form.locator('button[type="submit"]').click(),
  ]);
  await page.waitForLoadState('load');
  if ((await page.locator('#share-url').count()) === 0) {
    // The form failed: say so, and make the link through the HTTP API to check the rest.
    const origin = await posted.request().headerValue('origin');
    later(false, `the Share form answered ${posted.status()} (the browser sent Origin: ${origin}); the link was made through the HTTP API for the rest of this check`);
    const r = await page.request.post(U(`/t/${FX.code}/shares`), { form: { expires: never[0], csrf } });
    assert(r.ok(), `POST /t/${FX.code}/shares through the HTTP API answered ${r.status()}`);
    const html = await r.text();
    const input = html.match(/<input[^>]*id="share-url"[^>]*>/)?.[0] ?? '';
    shareUrl = input.match(/value="([^"]*)"/)?.[1];
    shareId = new URL(r.url()).searchParams.get('created') ?? input.match(/data-share="([^"]*)"/)?.[1];
    assert(shareUrl && shareId, `no #share-url with a share id in the answer to POST /t/${FX.code}/shares`);
    later(new URL(r.url()).searchParams.has('created'), `POST /t/${FX.code}/shares ended at ${r.url()}, not a 303 to /t/${FX.code}/shares?created=SHAREID`);
    await page.goto(U(`/t/${FX.code}/shares`));
  } else {
    later(posted.status() === 303, `POST /t/${FX.code}/shares answered ${posted.status()}, not 303 to /t/${FX.code}/shares?created=SHAREID`);
    const created = new URL(page.url()).searchParams.get('created');
    later(pathOf(page.url()) === `/t/${FX.code}/shares` && created, `after Share the page is ${page.url()}, not /t/${FX.code}/shares?created=SHAREID`);
    shareId = created ?? (await page.getAttribute('#share-url', 'data-share'));
    assert(shareId, 'no share id: neither ?created= nor #share-url[data-share]');
    shareUrl = await page.inputValue('#share-url');
    assert(await page.locator('#share-url').evaluate((e) => e.readOnly), '#share-url is not readonly');
  }
  assert(shareUrl.startsWith(`${ORIGIN}/s/`), `#share-url is ${JSON.stringify(shareUrl)}, expected ${ORIGIN}/s/SECRET`);
  eq(await page.locator(`ul#shares > li.share[data-share="${shareId}"]`).count(), 1, `li.share[data-share=${shareId}]`);
  const secret = shareUrl.split('/s/')[1];

  const anon = await newContext();
  try {
    const p = await anon.newPage();
    const rs = await p.goto(shareUrl);
    eq(rs.status(), 200, 'the share link, without cookies');
    const csp = rs.headers()['content-security-policy'] ?? '';
    assert(csp && !/unsafe-inline/.test(csp), `the shared page's CSP: ${JSON.stringify(csp)}`);
    eq((await p.locator('h1').innerText()).trim(), t.title, "the shared page's h1");
    const ids = await p.$$eval('ol#messages > li.message', (l) => l.map((x) => x.id));
    for (const m of t.messages) assert(ids.includes(`m-${m.id}`), `the shared page lacks m-${m.id}`);
    assert((await p.locator('pre code [class^="hl-"]').count()) > 0, 'the shared page has no highlighted code');
    const nav = await p.evaluate(() =>
      [...document.querySelectorAll('a[href], form')]
        .map((e) => e.getAttribute('href') ?? `form ${e.getAttribute('action')}`)
        .filter((h) => /(^|\/)(threads|search|signout)(\b|$)|^\/t\//.test(h) || /^form /.test(h)),
    );
    eq(nav, [], 'links/forms to the team (threads, search, sign out) on the shared page');
    eq(await p.locator('#q, [role="search"]').count(), 0, 'search boxes on the shared page');
    const full = await anon.request.get(U(`/s/${secret}/m/${FX.codeMessage}`));
    eq(full.status(), 200, `/s/SECRET/m/${FX.codeMessage}`);
    const foreignMsg = await anon.request.get(U(`/s/${secret}/m/${FX.bigMessage}`), { maxRedirects: 0 });
    eq(foreignMsg.status(), 404, `/s/SECRET/m/${FX.bigMessage} (a message of another thread)`);
    await p.goto(U('/threads'));
    eq(pathOf(p.url()), '/signin', '/threads with only a share link ends at');
    for (const other of [FX.tools, FX.other]) {
      const ro = await p.goto(U(`/t/${other}`));
      assert(pathOf(p.url()) === '/signin' || ro.status() === 404, `/t/${other} with only a share link: ${ro.status()} at ${p.url()}`);
      const html = await p.content();
      assert(!html.includes(thread(other)?.title ?? FX.otherTitle), `/t/${other} shows its title to a share link holder`);
    }
    // Revoke in the signed-in context: the link is dead at once.
    const revoke = page.locator(`li.share[data-share="${shareId}"] form[action="/t/${FX.code}/shares/${shareId}/revoke"]`);
    eq(await revoke.count(), 1, `revoke forms for ${shareId}`);
    const revokeCsrf = await revoke.locator('input[type="hidden"][name="csrf"]').inputValue();
    const [revoked] = await Promise.all([
      page.waitForResponse((r) => pathOf(r.url()).endsWith('/revoke') && r.request().method() === 'POST'),
      revoke.locator('button[type="submit"]').click(),
    ]);
    await page.waitForLoadState('load');
    if (revoked.status() >= 400) {
      const origin = await revoked.request().headerValue('origin');
      later(false, `the Revoke form answered ${revoked.status()} (the browser sent Origin: ${origin}); revoked through the HTTP API instead`);
      const r = await page.request.post(U(`/t/${FX.code}/shares/${shareId}/revoke`), { form: { csrf: revokeCsrf } });
      assert(r.ok(), `POST …/revoke through the HTTP API answered ${r.status()}`);
    }
    const gone = await anon.request.get(shareUrl, { maxRedirects: 0 });
    eq(gone.status(), 404, 'the share link right after Revoke');
    const gonePage = await p.goto(shareUrl);
    eq(gonePage.status(), 404, 'the share page right after Revoke');
    assert(!(await p.content()).includes(FX.codeAnswerSnippet), 'the revoked link still shows the thread');
    const goneMsg = await anon.request.get(U(`/s/${secret}/m/${FX.codeMessage}`), { maxRedirects: 0 });
    eq(goneMsg.status(), 404, '/s/SECRET/m/… right after Revoke');
  } finally {
    await anon.close();
  }
});

// 11. CSRF ------------------------------------------------------------------------------------
await check('csrf: POSTs without the right csrf field answer 403', async () => {
  const cases = [
    ['/signout', {}],
    ['/signout', { csrf: 'not-the-token' }],
    [`/t/${FX.code}/shares`, { expires: 'never' }],
    [`/t/${FX.code}/shares`, { expires: 'never', csrf: 'not-the-token' }],
  ];
  if (shareId) cases.push([`/t/${FX.code}/shares/${shareId}/revoke`, {}]);
  for (const [p, form] of cases) {
    const r = await page.request.post(U(p), { form, maxRedirects: 0 });
    eq(r.status(), 403, `POST ${p} with ${JSON.stringify(form)}`);
  }
  const anon = await newContext();
  try {
    const r = await anon.request.post(U('/signin'), { form: { token: TOKEN }, maxRedirects: 0 });
    eq(r.status(), 403, 'POST /signin with the right token but no csrf');
    assert(!(await anon.cookies()).some((c) => c.name === 'ts_session'), 'a sign-in without csrf set a session cookie');
  } finally {
    await anon.close();
  }
  const still = await page.goto(U('/threads'));
  eq(pathOf(page.url()), '/threads', 'still signed in after the refused sign-out');
  assert(still.ok(), `/threads answered ${still.status()}`);
});

// 12. Without JavaScript ----------------------------------------------------------------------
await check('no JS: sign in, list, search, read a thread and a full message', async () => {
  const ctx = await newContext({ javaScriptEnabled: false });
  try {
    const p = await signIn(ctx, TOKEN, { fallback: true, report: true });
    for (const t of FX.threads) {
      eq(await p.locator(`li.thread[data-thread="${t.id}"] a`).innerText(), t.title, `${t.id} in the list`);
    }
    await p.fill('#q', FX.seedWord);
    await Promise.all([p.waitForURL((u) => u.pathname === '/search'), p.press('#q', 'Enter')]);
    const hit = p.locator(`ol#results > li.hit a[href^="/t/${FX.code}#"]`);
    assert((await hit.count()) >= 1, `no hit in ${FX.code} for ${FX.seedWord} without JS`);
    assert((await p.locator('ol#results p.snippet mark').count()) >= 1, 'no <mark> in the snippets without JS');
    await Promise.all([p.waitForURL((u) => u.pathname === `/t/${FX.code}`), hit.first().click()]);
    eq((await p.locator('h1').innerText()).trim(), thread(FX.code).title, 'the thread h1 without JS');
    assert((await p.locator('ol#messages > li.message').count()) >= thread(FX.code).count, 'messages missing without JS');
    await p.goto(U(`/t/${FX.big}`));
    await Promise.all([
      p.waitForURL((u) => u.pathname === `/t/${FX.big}/m/${FX.bigMessage}`),
      p.click(`#m-${FX.bigMessage} a.load-full`),
    ]);
    assert((await p.locator('body').innerText()).includes(FX.bigEnd), 'the full message page lacks the end of the message');
  } finally {
    await ctx.close();
  }
});

// 13. Keyboard and headings -------------------------------------------------------------------
await check('keyboard: Tab reaches the search field, then the first thread; h1 and labels everywhere', async () => {
  await page.goto(U('/threads'));
  await page.evaluate(() => {
    document.activeElement?.blur();
    window.scrollTo(0, 0);
  });
  const seen = [];
  let q = -1;
  let first = -1;
  for (let i = 0; i < 40 && first < 0; i++) {
    await page.keyboard.press('Tab');
    const f = await page.evaluate(() => {
      const a = document.activeElement;
      return {
        d: a ? `${a.tagName.toLowerCase()}${a.id ? '#' + a.id : ''}${a.getAttribute('href') ? `[${a.getAttribute('href')}]` : ''}` : 'none',
        q: a?.id === 'q',
        first: a === document.querySelector('ol#threads > li.thread a'),
      };
    });
    seen.push(f.d);
    if (f.q && q < 0) q = i;
    if (f.first) first = i;
  }
  assert(q >= 0, `Tab never reached #q; focus went: ${seen.join(' → ')}`);
  assert(first >= 0, `Tab never reached the first thread link; focus went: ${seen.join(' → ')}`);
  assert(q < first, `the first thread link came before the search field: ${seen.join(' → ')}`);
  eq(await page.getByLabel('Search threads').getAttribute('id'), 'q', 'the input labelled "Search threads"');
  const pages = ['/threads', `/search?q=${FX.seedWord}`, `/t/${FX.code}`, `/t/${FX.code}/shares`, '/t/T-no-such-thread'];
  for (const p of pages) {
    await page.goto(U(p));
    eq(await page.locator('h1').count(), 1, `h1 elements on ${p}`);
    assert((await page.locator('h1').innerText()).trim(), `empty h1 on ${p}`);
    if (!p.includes('no-such')) eq(await page.locator('label[for="q"]').count(), 1, `label[for=q] on ${p}`);
  }
  const anon = await newContext();
  try {
    const p = await anon.newPage();
    await p.goto(U('/signin'));
    eq(await p.locator('h1').count(), 1, 'h1 elements on /signin');
    eq(await p.getByLabel('Team token').getAttribute('id'), 'token', 'the input labelled "Team token"');
  } finally {
    await anon.close();
  }
});

// 14. Sign out --------------------------------------------------------------------------------
await check('sign out: back to /signin, and the old session cookie no longer works', async () => {
  await page.goto(U('/threads'));
  const [r] = await Promise.all([
    page.waitForResponse((r) => pathOf(r.url()) === '/signout' && r.request().method() === 'POST'),
    page.locator('header button[type="submit"]', { hasText: 'Sign out' }).click(),
  ]);
  const origin = await r.request().headerValue('origin');
  eq(r.status(), 303, `POST /signout from the Sign out button (the browser sent Origin: ${origin}): status`);
  await page.waitForURL((u) => u.pathname === '/signin');
  await page.goto(U('/threads'));
  eq(pathOf(page.url()), '/signin', '/threads after signing out ends at');
  assert(sessionCookie, 'no session cookie was recorded at sign-in');
  const replay = await newContext();
  try {
    await replay.addCookies([{ ...sessionCookie }]);
    const p = await replay.newPage();
    await p.goto(U('/threads'));
    eq(pathOf(p.url()), '/signin', '/threads with the signed-out session cookie ends at');
  } finally {
    await replay.close();
  }
});

// 15. No script errors anywhere ---------------------------------------------------------------
await check('no script errors, CSP violations or failed assets in any page', async () => {
  eq(pageErrors, [], 'errors seen');
});

await browser.close().catch(() => {});
log(`web suite (${BACKEND}): ${((Date.now() - t_start) / 1000).toFixed(1)} s${failures.length ? `; failed: ${failures.join('; ')}` : ''}`);
log(`web-${BACKEND}: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
