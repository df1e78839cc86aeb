/* Touchpoint dashboard: small helpers over the JSON APIs; charts with uPlot. No dependencies. */
const dashboard = (() => {
  "use strict";
  const COLORS = ["#2f6fdf", "#e07a1f", "#1e9e5a", "#b23aa8", "#c9302c", "#5b6b7b", "#0097a7", "#8d6e63"];
  const json = async url => {
    const r = await fetch(url, {credentials: "same-origin"});
    if (!r.ok) throw new Error(url + ": " + r.status + " " + (await r.text()));
    return r.json();
  };
  const fmt = v => typeof v === "number" ? v.toLocaleString(undefined, {maximumFractionDigits: 2}) : (v ?? "—");
  const isoDay = d => d.toISOString().slice(0, 10);

  function liveChart(el, note) {
    let plot = null;
    const draw = async () => {
      try {
        const data = await json("/v1/dashboard/live");
        const names = Object.keys(data.series);
        const rows = [data.minutes].concat(names.map(n => data.series[n]));
        const opts = {
          width: el.clientWidth || 900, height: 280,
          series: [{}].concat(names.map((n, i) => ({label: n, stroke: COLORS[i % COLORS.length], width: 2}))),
          axes: [{}, {label: "events / min"}],
        };
        if (plot && plot.series.length === opts.series.length) plot.setData(rows);
        else { if (plot) plot.destroy(); plot = new uPlot(opts, rows, el); }
        const total = names.reduce((s, n) => s + data.series[n].reduce((a, b) => a + b, 0), 0);
        note.textContent = total ? total.toLocaleString() + " events in the last hour" : "No events in the last hour.";
      } catch (e) { note.textContent = "Live counts unavailable: " + e.message; }
    };
    draw();
    setInterval(draw, 10000);
  }

  async function todayTiles(section) {
    const today = new Date(), tomorrow = new Date(Date.now() + 86400000);
    const cells = section.querySelectorAll("[data-measure]");
    const measures = [].map.call(cells, c => c.dataset.measure).join(",");
    try {
      const r = await json(`/v1/olap?measures=${measures}&from=${isoDay(today)}&to=${isoDay(tomorrow)}`);
      cells.forEach(c => { const i = r.columns.indexOf(c.dataset.measure); c.textContent = fmt(r.rows.length ? r.rows[0][i] : 0); });
    } catch (e) { cells.forEach(c => { c.textContent = "—"; c.title = e.message; }); }
  }

  /* A table and a chart for an OLAP answer: the first dimension on x, one series per measure. */
  function olapResult(table, chartEl, result, measures, dims) {
    table.innerHTML = "";
    const head = table.createTHead().insertRow();
    result.columns.forEach(c => { const th = document.createElement("th"); th.textContent = c; head.appendChild(th); });
    const body = table.createTBody();
    result.rows.forEach(r => { const tr = body.insertRow(); r.forEach(v => { tr.insertCell().textContent = fmt(v); }); });
    chartEl.innerHTML = "";
    if (!result.rows.length) return;
    const labels = result.rows.map(r => dims.map(d => r[result.columns.indexOf(d)]).join(" · ") || "all");
    const xs = labels.map((_, i) => i);
    const series = measures.map(m => result.rows.map(r => r[result.columns.indexOf(m)]));
    new uPlot({
      width: chartEl.clientWidth || 900, height: 300,
      scales: {x: {time: false, range: [-0.5, xs.length - 0.5]}},
      series: [{}].concat(measures.map((m, i) => ({label: m, stroke: COLORS[i % COLORS.length], width: 2,
                                                   paths: uPlot.paths.bars({size: [0.6, 60]}), fill: COLORS[i % COLORS.length] + "55"}))),
      axes: [{values: (u, ticks) => ticks.map(t => labels[t] ?? ""), rotate: -30}, {}],
    }, [xs].concat(series), chartEl);
  }

  return {json, fmt, liveChart, todayTiles, olapResult};
})();
