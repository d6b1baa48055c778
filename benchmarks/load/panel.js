// connbench's connection panel in the browser (served by benchmarks/load/panel.py at /connbench/panel.js).
// Once a second it reads /connbench/history and /connbench/connections and draws, per target, the connections
// PostgreSQL sees (total, active, idle) under max_connections and the sessions the target opened per second,
// with its requests and errors by cause; as small SVG line charts, on the panel's own page and, in the Locust
// UI, under the table of the "PostgreSQL connections" tab. The panel's page also gets its table here.
(() => {
  const base = document.currentScript.dataset.base;
  const COLORS = { total: "#1565c0", active: "#2e7d32", idle: "#9e9e9e", opened_per_s: "#ef6c00" };
  const W = 320, H = 120, LEFT = 34, RIGHT = 8, TOP = 18, BOTTOM = 16;
  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
  const css = `
    #connbench-charts { display: flex; flex-wrap: wrap; gap: 12px; margin: 16px 0; }
    .cb-card { border: 1px solid rgba(128,128,128,.35); border-radius: 6px; padding: 8px 10px; }
    .cb-head { font: 600 13px ui-monospace, monospace; margin-bottom: 4px; }
    .cb-head span { font: 12px system-ui, sans-serif; opacity: .75; margin-left: 8px; }
    .cb-errors { font: 12px system-ui, sans-serif; color: #c62828; max-width: ${2 * W + 8}px; min-height: 16px; }
    .cb-chart text { font: 10px system-ui, sans-serif; fill: currentColor; }
    .cb-chart .cb-axis { stroke: rgba(128,128,128,.5); }
    .cb-chart .cb-cap { stroke: #c62828; stroke-dasharray: 4 3; }
    .cb-chart text.cb-cap { fill: #c62828; stroke: none; }`;
  document.head.insertAdjacentHTML("beforeend", `<style>${css}</style>`);

  function niceMax(v) {
    const step = 10 ** Math.floor(Math.log10(Math.max(v, 1)));
    return Math.ceil(Math.max(v, 1) / step) * step;
  }

  // One chart: `series` [{name, values}] over the same readings, y from 0 to `ymax`, `cap` drawn as a line.
  function chart(title, series, ymax, cap, seconds) {
    const n = Math.max(2, ...series.map((s) => s.values.length));
    const x = (i) => LEFT + ((W - LEFT - RIGHT) * i) / (n - 1);
    const y = (v) => H - BOTTOM - ((H - TOP - BOTTOM) * Math.min(v, ymax)) / ymax;
    let svg = `<svg class="cb-chart" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" data-title="${esc(title)}">`;
    svg += `<text x="${LEFT}" y="11">${esc(title)}</text>`;
    svg += `<line class="cb-axis" x1="${LEFT}" x2="${LEFT}" y1="${TOP}" y2="${H - BOTTOM}"/>`;
    svg += `<line class="cb-axis" x1="${LEFT}" x2="${W - RIGHT}" y1="${H - BOTTOM}" y2="${H - BOTTOM}"/>`;
    svg += `<text x="${LEFT - 4}" y="${TOP + 4}" text-anchor="end">${ymax}</text>`;
    svg += `<text x="${LEFT - 4}" y="${H - BOTTOM}" text-anchor="end">0</text>`;
    svg += `<text x="${W - RIGHT}" y="${H - 3}" text-anchor="end">${Math.round(seconds)} s</text>`;
    if (cap) {
      svg += `<line class="cb-cap" x1="${LEFT}" x2="${W - RIGHT}" y1="${y(cap)}" y2="${y(cap)}"/>`;
      svg += `<text class="cb-cap" x="${W - RIGHT}" y="${y(cap) + 11}" text-anchor="end">max_connections ${cap}</text>`;
    }
    let legend = LEFT + 110;
    for (const s of series) {
      const points = s.values.map((v, i) => (v === null ? null : `${x(i).toFixed(1)},${y(v).toFixed(1)}`));
      svg += `<polyline fill="none" stroke="${COLORS[s.name]}" stroke-width="1.6" data-series="${s.name}"
        points="${points.filter(Boolean).join(" ")}"/>`;
      if (series.length > 1) {
        svg += `<text x="${legend}" y="11" style="fill:${COLORS[s.name]}">● ${s.name}</text>`;
        legend += 48;
      }
    }
    return svg + "</svg>";
  }

  function cards(history, snap) {
    const samples = history.samples;
    const seconds = samples.length > 1 ? samples[samples.length - 1].t - samples[0].t : 0;
    const idx = Object.fromEntries(history.fields.map((f, i) => [f, i]));
    const cap = history.max_connections;
    return snap.targets.map((row) => {
      const t = row.target;
      const values = (f) => samples.map((s) => (s.targets[t] ? s.targets[t][idx[f]] : null));
      const conns = ["total", "active", "idle"].map((name) => ({ name, values: values(name) }));
      const opened = [{ name: "opened_per_s", values: values("opened_per_s") }];
      const top = Math.max(0, ...opened[0].values.filter((v) => v !== null));
      const errors = Object.entries(row.errors || {}).sort((a, b) => b[1] - a[1]);
      return `<div class="cb-card" data-target="${esc(t)}">
        <div class="cb-head">${esc(t)}<span>${row.users} users · ${row.requests || 0} requests</span></div>
        ${chart("connections", conns, cap || niceMax(Math.max(...conns[0].values)), cap, seconds)}
        ${chart("sessions opened/s", opened, niceMax(top), null, seconds)}
        <div class="cb-errors">${errors.length ? "errors: " : ""}${errors.map(([c, k]) => `${esc(c)} ${k}`).join(", ")}</div>
      </div>`;
    }).join("");
  }

  function table(snap) {
    const cells = (tr, values) => values.forEach((v) => {
      const td = tr.insertCell(); td.textContent = v === null || v === undefined ? "" : v;
    });
    const body = document.getElementById("rows");
    body.replaceChildren();
    for (const r of snap.targets) {
      const tr = body.insertRow(); tr.dataset.target = r.target;
      const errors = Object.entries(r.errors || {}).map(([c, k]) => `${c} ${k}`).join(", ");
      const opened = r.opened_per_s === null ? "" : r.opened_per_s.toFixed(1);
      cells(tr, [r.target, r.users, r.requests || 0, r.total, r.active, r.idle, opened, errors]);
    }
    const sum = body.insertRow(); sum.className = "sum";
    const add = (k) => snap.targets.reduce((a, r) => a + (r[k] || 0), 0);
    const rate = snap.sessions_per_s === null ? "" : snap.sessions_per_s.toFixed(1);
    cells(sum, ["all targets", add("users"), add("requests"), snap.total.total, snap.total.active, snap.total.idle, rate, ""]);
  }

  function status(snap) {
    const st = document.getElementById("status");
    if (snap.db_up === false) { st.className = "down"; st.textContent = "PostgreSQL unreachable: " + snap.error; return; }
    if (!snap.db_up) return;
    st.className = "";
    const rate = snap.sessions_per_s === null ? "–" : snap.sessions_per_s.toFixed(1);
    st.textContent = `database ${snap.database} · max_connections ${snap.max_connections} · sessions opened/s ${rate}` +
      ` · Locust ${snap.locust ? snap.locust.state + ", " + snap.locust.users + " users" : "–"}` +
      ` · updated ${new Date(snap.updated_at * 1000).toLocaleTimeString()}`;
  }

  // In the Locust UI: the box under the tab's table while the tab is shown, gone otherwise.
  function boxInLocust() {
    let box = document.getElementById("connbench-charts");
    const tab = new URLSearchParams(location.search).get("tab") === "connbench";
    const th = tab && [...document.querySelectorAll("th")].find((h) => h.textContent === "Errors by cause");
    if (!th) { if (box) box.remove(); return null; }
    const anchor = th.closest(".MuiTableContainer-root") || th.closest("table");
    if (!box) { box = document.createElement("div"); box.id = "connbench-charts"; }
    if (anchor.nextSibling !== box) anchor.after(box);
    return box;
  }

  const onPanelPage = document.getElementById("rows") !== null;
  async function refresh() {
    const box = onPanelPage ? document.getElementById("connbench-charts") : boxInLocust();
    if (!box) return;
    try {
      const [history, snap] = await Promise.all(["/history", "/connections"].map(
        (p) => fetch(base + p, { cache: "no-store" }).then((r) => r.json())));
      if (onPanelPage) { status(snap); table(snap); }
      if (snap.db_up) box.innerHTML = cards(history, snap);
    } catch (e) {
      if (onPanelPage) document.getElementById("status").textContent = "Locust web UI unreachable";
    }
  }
  refresh();
  setInterval(refresh, 1000);
})();
