// Live fleet status for the demo booth: subscribes to the agents' MQTT telemetry over WebSocket
// and shows one card per device plus an event log. Wire format: agent/src/mqtt (schema 1; the
// state's `last` is optional, agents before it do not send it).
//
// Every text from a message goes into the DOM through textContent, never innerHTML: a device
// name or an error string is data from the network, not markup.
'use strict';

(function () {
  const LOG_MAX = 200; // the booth page runs for days: keep the log (and the DOM) bounded
  const LEAVES = ['online', 'state', 'progress', 'inventory'];
  const PHASES = ['downloading', 'installing', 'rebooting', 'testing', 'idle'];

  const params = new URLSearchParams(location.search);
  const broker = params.get('broker') || `ws://${location.hostname || '127.0.0.1'}:9001`;
  const prefix = (params.get('prefix') || 'cip/devices').replace(/\/+$/, '');

  const el = (id) => document.getElementById(id);
  const devices = new Map(); // client-id -> { online, state, progress, inventory, card }

  function make(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function setBanner(state, text) {
    const b = el('conn');
    // The log says when the data stopped being live, once per change.
    if (b.dataset.state !== state && state !== 'connecting') addLog('broker', text, state === 'up' ? 'online' : 'offline');
    b.dataset.state = state;
    b.textContent = text;
  }

  function hhmmss(d) {
    return d.toTimeString().slice(0, 8);
  }

  function addLog(id, text, kind) {
    const log = el('log');
    const li = make('li', `ev ev-${kind}`);
    li.append(make('time', 'ev-time', hhmmss(new Date())), ' ', make('b', 'ev-dev', id), ' ', text);
    log.prepend(li); // newest on top: the one worth reading from a distance
    while (log.children.length > LOG_MAX) log.lastElementChild.remove();
  }

  function mib(bytes) {
    if (bytes < 1024 * 1024) return `${bytes} B`;
    return `${(bytes / (1024 * 1024)).toFixed(1)} MiB`;
  }

  // The card is built once per device; updates only change text and attributes.
  function card(id) {
    let d = devices.get(id);
    if (d) return d;
    const c = make('article', 'card');
    c.dataset.device = id;
    const f = {};
    const row = (label, key) => {
      const r = make('div', `row row-${key}`);
      r.append(make('span', 'label', label), (f[key] = make('span', 'value', '—')));
      return r;
    };
    const head = make('header', 'card-head');
    head.append((f.name = make('h3', 'name', id)), (f.online = make('span', 'online badge')));
    const prog = make('div', 'prog');
    f.bar = make('progress', 'bar');
    f.bar.max = 100;
    f.bar.value = 0;
    prog.append(f.bar, (f.pct = make('span', 'pct', '')));
    f.phase = make('div', 'phase badge');
    f.error = make('div', 'error');
    f.lastRow = row('last update', 'last');
    c.append(head, f.phase, prog, row('version', 'version'), row('boot slot', 'slot'),
      row('update', 'path'), row('device', 'hw'), f.lastRow, f.error);
    d = { online: null, state: null, progress: null, inventory: null, card: c, f };
    devices.set(id, d);
    el('empty').hidden = true;
    // Keep cards in name order so a device does not jump around between visits.
    const after = [...el('cards').querySelectorAll('.card')].find((x) => x.dataset.device > id);
    el('cards').insertBefore(c, after || null);
    return d;
  }

  // The progress message that refines the current state, if any. Progress (QoS 0) can overtake
  // the state (QoS 1, sent one at a time), so it is matched by job, phase and time rather than
  // by arrival order; timestamps come from the same device clock.
  function liveProgress(d) {
    const p = d.progress;
    const s = d.state;
    if (!p || !s) return null;
    return p.job_id === s.job_id && p.phase === s.phase && p.timestamp >= s.timestamp ? p : null;
  }

  // `2026-12-03T20:08:54Z` as `2026-12-03 20:08 UTC`: the device's clock, not the booth's.
  function when(t) {
    const m = /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2})/.exec(t || '');
    return m ? `${m[1]} ${m[2]} UTC` : null;
  }

  // How the last update ended: `2.0 ACTIVATED at <time>`, `2.0 rolled back at <time>`.
  function lastText(l) {
    const how = l.rolled_back === true ? 'rolled back' : l.wfx_state;
    const at = when(l.time);
    return [l.version, how, at && `at ${at}`].filter(Boolean).join(' ');
  }

  function render(id) {
    const d = devices.get(id);
    const { f, card: c } = d;
    const s = d.state || {};
    const online = d.online === 'online';
    c.dataset.online = d.online || 'unknown';
    f.online.textContent = d.online === null ? '? unknown' : online ? '● online' : '○ offline';

    const phase = s.phase || 'unknown';
    c.dataset.phase = phase;
    f.phase.textContent = phase;

    const live = liveProgress(d);
    const pct = live ? live.percent : typeof s.progress === 'number' ? s.progress : null;
    f.bar.value = pct === null ? 0 : pct;
    f.bar.hidden = pct === null;
    f.pct.textContent = pct === null ? '' : `${pct} %`;

    const running = s.running_version || (d.inventory && d.inventory.os_release &&
      d.inventory.os_release.VERSION_ID) || '?';
    f.version.textContent = s.target_version ? `${running} → ${s.target_version}` : running;
    f.slot.textContent = s.boot_slot
      ? `${s.boot_slot}${s.trial === true ? ' (trial boot)' : s.trial === false ? ' (committed)' : ''}`
      : '—';
    const bytes = live ? live.bytes : s.bytes;
    f.path.textContent = s.path
      ? `${s.path}${typeof bytes === 'number' ? ` · ${mib(bytes)}` : ''}` : '—';
    f.hw.textContent = d.inventory
      ? [d.inventory.hardware_revision, d.inventory.agent_version && `agent ${d.inventory.agent_version}`]
        .filter(Boolean).join(' · ') || '—'
      : '—';
    // The last outcome while idle; during an update the card is about the update in hand.
    const last = phase === 'idle' && isObj(s.last) ? s.last : null;
    f.lastRow.hidden = !last;
    f.last.textContent = last ? lastText(last) : '';
    c.dataset.last = last ? (last.rolled_back === true ? 'rolled-back' : last.wfx_state.toLowerCase()) : '';
    c.classList.toggle('has-error', Boolean(s.last_error));
    f.error.textContent = s.last_error ? `✖ ${s.last_error}` : '';
    f.error.hidden = !s.last_error;
  }

  // Validators: a message that does not match the schema is ignored, never half-applied.
  const isObj = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
  const optStr = (v) => v === null || v === undefined || typeof v === 'string';
  const validLast = (l) => l == null || (isObj(l) && typeof l.job_id === 'string' &&
    typeof l.wfx_state === 'string' && ['version', 'message', 'time'].every((k) => optStr(l[k])) &&
    (l.rolled_back == null || typeof l.rolled_back === 'boolean'));
  function validState(v) {
    return isObj(v) && v.schema === 1 && PHASES.includes(v.phase) && typeof v.timestamp === 'string' &&
      ['job_id', 'running_version', 'target_version', 'boot_slot', 'last_error'].every((k) => optStr(v[k])) &&
      validLast(v.last) &&
      (v.path == null || v.path === 'delta' || v.path === 'full') &&
      (v.progress == null || (Number.isFinite(v.progress) && v.progress >= 0 && v.progress <= 100)) &&
      (v.bytes == null || Number.isFinite(v.bytes));
  }
  function validProgress(v) {
    return isObj(v) && v.schema === 1 && typeof v.job_id === 'string' && PHASES.includes(v.phase) &&
      Number.isFinite(v.percent) && v.percent >= 0 && v.percent <= 100 && Number.isFinite(v.bytes) &&
      typeof v.timestamp === 'string';
  }
  const validInventory = (v) => isObj(v) && v.schema === 1 && (v.os_release == null || isObj(v.os_release));

  function onState(id, d, s) {
    const old = d.state;
    d.state = s;
    // Retained states come again after each reconnect: log changes only.
    if (!old || old.phase !== s.phase) {
      const ver = s.target_version ? ` (${s.running_version || '?'} → ${s.target_version})` : '';
      addLog(id, old ? `${old.phase} → ${s.phase}${ver}` : `is ${s.phase}${ver}`, s.phase);
    }
    if (s.last_error && (!old || old.last_error !== s.last_error)) addLog(id, `error: ${s.last_error}`, 'error');
    // Once per outcome: a retained state seen again after a reconnect is not news.
    const l = s.last;
    const o = old && old.last;
    if (l && (!o || o.job_id !== l.job_id || o.wfx_state !== l.wfx_state)) {
      addLog(id, `last update: ${lastText(l)}`, l.wfx_state === 'ACTIVATED' ? 'idle' : 'error');
    }
    if (old && old.trial !== true && s.trial === true) addLog(id, `trial boot on slot ${s.boot_slot || '?'}`, 'testing');
  }

  function onMessage(topic, payload) {
    if (!topic.startsWith(`${prefix}/`)) return;
    const parts = topic.slice(prefix.length + 1).split('/');
    if (parts.length !== 2 || !parts[0] || !LEAVES.includes(parts[1])) {
      console.warn('kiosk: ignoring topic', topic);
      return;
    }
    const [id, leaf] = parts;
    const text = new TextDecoder().decode(payload);
    if (leaf === 'online') {
      if (text !== 'online' && text !== 'offline') {
        console.warn('kiosk: ignoring online payload', topic, text);
        return;
      }
      const d = card(id);
      if (d.online !== text) addLog(id, text === 'online' ? 'came online' : 'went offline', text);
      d.online = text;
      render(id);
      return;
    }
    let v;
    try {
      v = JSON.parse(text);
    } catch (e) {
      console.warn('kiosk: ignoring non-JSON payload on', topic, e.message);
      return;
    }
    const check = { state: validState, progress: validProgress, inventory: validInventory }[leaf];
    if (!check(v)) {
      console.warn('kiosk: ignoring malformed payload on', topic, text.slice(0, 200));
      return;
    }
    const d = card(id);
    if (leaf === 'state') onState(id, d, v);
    else d[leaf] = v;
    render(id);
  }

  el('source').textContent = `${broker} · ${prefix}/+/…`;
  if (typeof mqtt === 'undefined') {
    setBanner('down', 'mqtt library missing: run npm ci in kiosk/');
    return;
  }
  // Reconnects forever on its own (reconnectPeriod); the banner follows the connection.
  const client = mqtt.connect(broker, {
    clientId: `kiosk-${Math.random().toString(16).slice(2, 10)}`,
    clean: true,
    reconnectPeriod: 1000,
    connectTimeout: 4000,
    keepalive: 10,
  });
  const down = () => setBanner('down', 'broker unreachable, reconnecting…');
  client.on('connect', () => {
    // "connected" only once subscribed: from then on, every change reaches the page.
    client.subscribe(LEAVES.map((l) => `${prefix}/+/${l}`), { qos: 1 }, (err) => {
      if (err) {
        console.warn('kiosk: subscribe failed', err.message);
        setBanner('down', `subscribe failed: ${err.message}`);
      } else {
        setBanner('up', 'connected');
      }
    });
  });
  client.on('reconnect', down);
  client.on('close', down);
  client.on('offline', down);
  client.on('error', (e) => console.warn('kiosk: mqtt error', e.message));
  client.on('message', (topic, payload) => {
    try {
      onMessage(topic, payload);
    } catch (e) {
      // One bad message must not stop the page.
      console.warn('kiosk: error handling', topic, e);
    }
  });
})();
