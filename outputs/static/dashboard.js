// CloudArb built-in dashboard: reads /v1/stream (server-sent events over fetch, so the API key
// travels in a header, never in a URL) and renders offers, the allocation and savings.
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const money = (v) => (v == null ? "–" : (Number(v) < 0 ? "-$" : "$") + Math.abs(Number(v)).toFixed(2));
  const delta = (v) => (v == null ? "–" : (Number(v) < 0 ? "−" : "+") + money(Math.abs(Number(v))));
  const esc = (s) => String(s == null ? "" : s).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));

  // key: from the URL fragment (#key=..., never sent to the server), else sessionStorage, else ask
  const frag = new URLSearchParams(location.hash.slice(1));
  if (frag.get("key")) { sessionStorage.setItem("cloudarbKey", frag.get("key")); history.replaceState(null, "", location.pathname); }
  let key = sessionStorage.getItem("cloudarbKey");

  let chart = null;
  function renderSavings(points) {
    const labels = points.map((p) => p.at.replace("T", " ").slice(0, 16));
    const ds = [
      {label: "plan $/h", data: points.map((p) => p.usd_per_hour), borderColor: "#2f6fde", pointRadius: 0, tension: .2},
      {label: "on-demand $/h", data: points.map((p) => p.ondemand_usd_per_hour), borderColor: "#999", borderDash: [4, 3], pointRadius: 0, tension: .2},
      {label: "savings $/h", data: points.map((p) => p.savings_usd_per_hour), borderColor: "#137a3a", backgroundColor: "rgba(19,122,58,.12)", fill: true, pointRadius: 0, tension: .2},
    ];
    if (!chart) {
      chart = new Chart($("savingsChart"), {type: "line", data: {labels, datasets: ds},
        options: {animation: false, responsive: true, maintainAspectRatio: false, interaction: {mode: "index", intersect: false},
                  scales: {x: {ticks: {maxTicksLimit: 8}}}}});
    } else {
      chart.data.labels = labels;
      chart.data.datasets.forEach((d, i) => { d.data = ds[i].data; });
      chart.update();
    }
  }

  function render(s) {
    const last = s.savings.length ? s.savings[s.savings.length - 1] : null;
    $("cost").textContent = last ? money(last.usd_per_hour) + "/h" : "–";
    $("ondemand").textContent = last ? money(last.ondemand_usd_per_hour) + "/h" : "–";
    $("saving").textContent = last ? money(last.savings_usd_per_hour) + "/h" : "–";
    $("placed").textContent = s.allocation.filter((a) => a.placed).length + " / " + s.allocation.length;
    $("alloc").tBodies[0].innerHTML = s.allocation.map((a) => {
      const where = a.placed ? a.assignments.map((x) => `${x.instances}× ${esc(x.gpu_model)} ${esc(x.provider)}/${esc(x.region)} (${esc(x.market)})`).join("<br>")
                             : '<span class="unplaced">not placed</span>';
      const e = a.explanation || {};
      const why = e.summary ? esc(e.summary) : [a.reason, e.infeasible_reason, e.runner_up ? `runner-up ${e.runner_up} (${delta(e.runner_up_delta_usd_per_hour)}/h)` : null,
                   (e.binding_constraints || []).length ? "binding: " + e.binding_constraints.join(", ") : null].filter(Boolean).map(esc).join("<br>");
      return `<tr><td>${esc(a.workload_id)}</td><td>${where}</td><td class="num">${money(a.usd_per_hour)}</td><td class="why">${why}</td></tr>`;
    }).join("");
    $("offers").tBodies[0].innerHTML = s.offers.map((o) =>
      `<tr><td>${o.gpus_per_instance}× ${esc(o.gpu_model)}</td><td>${esc(o.provider)} / ${esc(o.region)}</td><td>${esc(o.market)}</td><td class="num">${money(o.effective_usd_per_gpu_hour)}</td></tr>`).join("");
    renderSavings(s.savings);
    $("status").textContent = `live · snapshot ${s.version} · ${new Date().toLocaleTimeString()}`;
    document.body.dataset.version = s.version;
  }

  async function connect() {
    if (!key) { $("keyform").hidden = false; $("status").textContent = "enter an API key"; return; }
    try {
      const resp = await fetch("/v1/stream", {headers: {"X-API-Key": key, "Accept": "text/event-stream"}});
      if (resp.status === 401 || resp.status === 403) {
        sessionStorage.removeItem("cloudarbKey"); key = null; $("keyform").hidden = false;
        $("status").textContent = "API key rejected"; return;
      }
      if (!resp.ok) throw new Error("HTTP " + resp.status);
      $("status").textContent = "live";
      const reader = resp.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buf += dec.decode(value, {stream: true});
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, i); buf = buf.slice(i + 2);
          const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
          if (data) render(JSON.parse(data));
        }
      }
    } catch (err) {
      $("status").textContent = "disconnected, retrying… (" + err.message + ")";
    }
    setTimeout(connect, 2000);
  }

  $("keyform").addEventListener("submit", (ev) => {
    ev.preventDefault(); key = $("key").value.trim(); sessionStorage.setItem("cloudarbKey", key);
    $("keyform").hidden = true; connect();
  });
  connect();
})();
