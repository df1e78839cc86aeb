/*! touchpoint.js: Touchpoint's web tracker (README.md, "JavaScript tracker"). ES2017, no deps. */
(() => {
  "use strict";
  // The gateway fills this in: writeKey, honorDnt, cookieDomain, cookieDays, decide.
  const cfg = /*__TOUCHPOINT_CONFIG__*/{};
  const VERSION = "0.1.0", BATCH = 20, MAX_BYTES = 32000, CAP = 500, Q = "tp_q", AID = "tp_aid";
  const w = window, d = document, nav = navigator, loc = location, stub = w.touchpoint;
  if (stub && stub.version) return; // loaded twice
  const script = d.currentScript ||
    [].slice.call(d.scripts).reverse().find(s => s.src.indexOf("/t.js") >= 0);
  if (!script) return;
  const src = new URL(script.src, loc.href), url = src.origin + "/v1/batch";
  const writeKey =
    cfg.writeKey || script.getAttribute("data-write-key") || src.searchParams.get("k");
  if (!writeKey) return;
  // Do-Not-Track / Global Privacy Control: no identifier, no cookie, events marked dnt.
  const dnt = cfg.honorDnt !== false &&
    (nav.doNotTrack === "1" || w.doNotTrack === "1" || nav.globalPrivacyControl === true);

  const ls = (op, k, v) => { try { return localStorage[op](k, v); } catch (e) { return null; } };
  const uuid = () => crypto.randomUUID ? crypto.randomUUID() : // secure contexts only
    "10000000-1000-4000-8000-100000000000".replace(/[018]/g, c =>
      (c ^ crypto.getRandomValues(new Uint8Array(1))[0] & 15 >> c / 4).toString(16));
  const cookie = (value, maxAge) => {
    d.cookie = AID + "=" + value + "; path=/; SameSite=Lax; max-age=" + maxAge +
      (cfg.cookieDomain ? "; domain=" + cfg.cookieDomain : "") +
      (loc.protocol === "https:" ? "; Secure" : "");
  };
  // The cookie wins (it may span subdomains); localStorage mirrors it, alone if cookies are off.
  let aid = null, uid = null, traits = {};
  const remember = id => {
    aid = id;
    cookie(id, (cfg.cookieDays || 365) * 86400);
    ls("setItem", AID, id);
  };
  if (!dnt) {
    remember((d.cookie.match(/(?:^|; )tp_aid=([^;]+)/) || [])[1] || ls("getItem", AID) || uuid());
    uid = ls("getItem", "tp_uid");
  }

  // Every event waits in localStorage (read-modify-write: tabs share it; memory if storage
  // fails) until the gateway is done with it.
  let mem = [], persist = true;
  const load = () => {
    if (!persist) return mem;
    try { const q = JSON.parse(localStorage.getItem(Q)); return Array.isArray(q) ? q : []; }
    catch (e) { if (e.name !== "SyntaxError") persist = false; return mem; }
  };
  const save = q => {
    mem = q;
    try {
      if (persist && q.length) localStorage.setItem(Q, JSON.stringify(q));
      else if (persist) localStorage.removeItem(Q);
    } catch (e) { persist = false; }
  };
  const enqueue = m => {
    const q = load();
    q.push(m);
    // Over the cap the oldest go; the newest carries their count (plus what they carried), so
    // the sum of context.touchpoint.dropped over all events is the loss.
    for (const gone of q.splice(0, Math.max(0, q.length - CAP))) {
      m.context.touchpoint.dropped += 1 + (((gone.context || {}).touchpoint || {}).dropped || 0);
    }
    save(q);
    if (!attempt) schedule(q.length >= BATCH ? 0 : 1000);
  };

  const sending = new Set();
  let timer = 0, due = 0, attempt = 0, draining = null;
  const schedule = (ms, force) => {
    if (timer && !force && due <= Date.now() + ms) return; // a sooner send is due already
    clearTimeout(timer);
    due = Date.now() + ms;
    timer = setTimeout(() => { timer = 0; drain(); }, ms);
  };
  // true: the gateway is done with it (2xx; or 4xx but 429: bad data is not retried).
  const post = body => {
    try {
      return fetch(url, {
        method: "POST", body, keepalive: body.length < 60000, credentials: "omit",
        headers: {"Content-Type": "text/plain"}, // a CORS "simple" request: no preflight
      }).then(r => r.text().then(() => r.status)) // reading frees the 64 KB keepalive quota
        .then(s => s < 300 || (s >= 400 && s < 500 && s !== 429), () => false);
    } catch (e) { // no fetch
      return Promise.resolve(!!(nav.sendBeacon && nav.sendBeacon(url, body)));
    }
  };
  const chunk = () => { // the next request's worth: <= 20 events, ~32 KB
    const q = load().filter(m => !sending.has(m.messageId));
    let n = 0, size = 0;
    for (; n < q.length && n < BATCH; n++) {
      size += JSON.stringify(q[n]).length;
      if (n && size > MAX_BYTES) break;
    }
    return q.slice(0, n);
  };
  const deliver = batch => {
    const ids = batch.map(m => m.messageId);
    ids.forEach(id => sending.add(id));
    const body = JSON.stringify({writeKey, sentAt: new Date().toISOString(), batch});
    return post(body).then(done => {
      ids.forEach(id => sending.delete(id));
      if (done) {
        attempt = 0;
        save(load().filter(m => ids.indexOf(m.messageId) < 0));
      } else { // capped exponential backoff with jitter
        attempt++;
        schedule(Math.min(60000, 1000 * 2 ** attempt) * (0.5 + Math.random() / 2), true);
      }
      return done;
    });
  };
  // One request at a time until the queue is empty or a request fails.
  const drain = () => draining || (draining = (async () => {
    clearTimeout(timer);
    timer = 0;
    const results = [];
    try {
      for (let batch = chunk(); batch.length; batch = chunk()) {
        results.push(await deliver(batch));
        if (!results[results.length - 1]) break;
      }
    } finally {
      draining = null;
    }
    return results;
  })());
  // The page may be going: all at once (keepalive outlives the page; the rest stays queued).
  const leave = () => { for (let batch = chunk(); batch.length; batch = chunk()) deliver(batch); };

  let current = "", referrer = d.referrer;
  const pageInfo = () =>
    ({path: loc.pathname, url: loc.href, referrer, title: d.title, search: loc.search});
  const msg = (type, fields) => {
    const campaign = {};
    const m = Object.assign({type, messageId: uuid(), timestamp: new Date().toISOString()}, fields);
    new URLSearchParams(loc.search).forEach((v, k) => {
      if (k.indexOf("utm_") === 0) campaign[k === "utm_campaign" ? "name" : k.slice(4)] = v;
    });
    m.context = {
      // The page's own user agent: a request sent as the page unloads may carry the
      // browser's default one instead.
      page: pageInfo(), locale: nav.language, userAgent: nav.userAgent,
      timezone: Intl.DateTimeFormat().resolvedOptions().timeZone,
      screen: {width: screen.width, height: screen.height, density: w.devicePixelRatio},
      library: {name: "touchpoint.js", version: VERSION}, touchpoint: {dropped: 0},
    };
    if (Object.keys(campaign).length) m.context.campaign = campaign;
    if (dnt) m.context.dnt = true;
    else {
      m.anonymousId = aid;
      if (uid) m.userId = uid;
    }
    try { enqueue(JSON.parse(JSON.stringify(m))); } catch (e) { /* e.g. circular properties */ }
  };
  const isObject = v => v !== null && typeof v === "object";

  const api = {
    version: VERSION,
    track: (event, properties) =>
      msg("track", {event: String(event), properties: properties || {}}),
    page: (name, properties) => {
      if (isObject(name)) { properties = name; name = undefined; }
      if (current && current !== loc.href) referrer = current; // single-page apps
      current = loc.href;
      msg("page", {name, properties: Object.assign(pageInfo(), properties)});
    },
    identify: (userId, more) => {
      if (dnt) return;
      if (isObject(userId)) { more = userId; userId = null; }
      if (userId != null) { uid = String(userId); ls("setItem", "tp_uid", uid); }
      msg("identify", {traits: Object.assign(traits, more)});
    },
    reset: () => {
      uid = null;
      traits = {};
      ls("removeItem", "tp_uid");
      ls("removeItem", AID);
      cookie("", 0);
      if (!dnt) remember(uuid());
    },
    // Send the queue now, backoff or not: one boolean per request (false: failed, will retry).
    flush: () => { attempt = 0; return drain(); },
    push: args => {
      if (typeof api[args[0]] === "function") return api[args[0]].apply(api, args.slice(1));
    },
  };

  const spa = () => setTimeout(() => { if (loc.href !== current) api.page(); }, 0);
  ["pushState", "replaceState"].forEach(k => {
    const original = history[k];
    history[k] = function () { const r = original.apply(this, arguments); spa(); return r; };
  });
  w.addEventListener("popstate", spa);
  w.addEventListener("hashchange", spa);
  const click = e => { // outbound links, sent at once: the page may be going
    const a = e.target.closest && e.target.closest("a[href]");
    if (!a || (e.type === "auxclick" && e.button !== 1) || !/^https?:$/.test(a.protocol) ||
      a.host === loc.host) return;
    api.track("Outbound Link Clicked",
      {href: a.href, text: (a.innerText || a.textContent || "").trim().slice(0, 200)});
    leave();
  };
  d.addEventListener("click", click, true);
  d.addEventListener("auxclick", click, true);
  w.addEventListener("pagehide", leave);
  d.addEventListener("visibilitychange", () => { if (d.visibilityState === "hidden") leave(); });
  w.addEventListener("online", api.flush);

  // Personalization slots, once the gateway's decision API is on: GET /v1/decide -> {"html"}.
  const fill = () => d.querySelectorAll("[data-touchpoint-slot]").forEach(el => {
    const q = new URLSearchParams({k: writeKey, slot: el.getAttribute("data-touchpoint-slot")});
    if (aid) q.set("anonymousId", aid);
    if (uid) q.set("userId", uid);
    fetch(src.origin + "/v1/decide?" + q, {credentials: "omit"}).then(r => r.ok ? r.json() : {})
      .then(r => { if (typeof r.html === "string") el.innerHTML = r.html; }).catch(() => {});
  });
  if (cfg.decide) {
    if (d.readyState === "loading") d.addEventListener("DOMContentLoaded", fill);
    else fill();
  }

  // The page view comes first (none when the stub queued a page call), then the stub's calls
  // in order: an identify among them links the anonymous id, the page view included.
  const queued = Array.isArray(stub) ? stub : [];
  w.touchpoint = api;
  if (!queued.some(args => args[0] === "page")) api.page();
  queued.forEach(args => api.push(args));
  schedule(1000); // what earlier pages left in the queue
})();
