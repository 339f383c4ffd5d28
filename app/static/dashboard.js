// carrygate dashboard: draw the server-shaped Plotly figures, open a job on click, follow a running job.
"use strict";

const PLOT_CONFIG = { responsive: true, displaylogo: false, modeBarButtonsToRemove: ["lasso2d", "select2d"] };
const FINISHED = ["succeeded", "failed", "cancelled"];

function drawFigures() {
  const target = document.getElementById("click-target");
  const jobUrl = target ? JSON.parse(target.textContent) : null;
  document.querySelectorAll("[data-figure]").forEach((div) => {
    const figure = JSON.parse(document.getElementById(div.dataset.figure).textContent);
    const layout = Object.assign({ autosize: true, font: { size: 12 } }, figure.layout);
    if (window.innerWidth < 700) {  // a phone: the legend goes under the plot, which keeps the full width
      layout.legend = Object.assign({}, layout.legend, { orientation: "h", x: 0, y: -0.3 });
      layout.margin = Object.assign({}, layout.margin, { l: 50, r: 5 });
      figure.data.forEach((trace) => { if (trace.type === "heatmap") trace.texttemplate = "%{z:.3f}"; });  // cells are small
    }
    Plotly.newPlot(div, figure.data, layout, PLOT_CONFIG).then(() => {
      div.dataset.rendered = "true";
    });
    if (jobUrl) {
      div.on("plotly_click", (event) => {
        const point = event.points && event.points[0];
        if (point && point.customdata) window.location.href = jobUrl.replace("JOBID", encodeURIComponent(point.customdata));
      });
    }
  });
}

function followJob() {
  const box = document.getElementById("progress-box");
  if (!box || FINISHED.includes(box.dataset.status)) return;
  const text = document.getElementById("progress-text");
  const bar = document.getElementById("progress-bar");
  const status = document.getElementById("job-status");
  let failures = 0;
  const poll = async () => {
    try {
      const response = await fetch(box.dataset.pollUrl, { headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const job = await response.json();
      failures = 0;
      const percent = Math.round(job.progress * 1000) / 10;
      bar.style.width = `${percent}%`;
      bar.parentElement.setAttribute("aria-valuenow", String(percent));
      text.textContent = `${job.puzzles_done} / ${job.puzzles_total || "?"} puzzles`;
      status.innerHTML = "";
      const badge = document.createElement("span");
      badge.className = `status ${job.status}`;
      badge.textContent = job.status;
      status.appendChild(badge);
      if (job.status !== box.dataset.status) {
        const note = document.getElementById("progress-note");
        if (note && job.status === "running") note.textContent = "Running. This page updates by itself.";
      }
      box.dataset.status = job.status;
      if (FINISHED.includes(job.status)) {
        window.location.reload();  // the server renders the verdicts and charts
        return;
      }
    } catch (err) {
      failures += 1;
      text.textContent = `${text.textContent.split(" (")[0]} (cannot reach the server: ${err.message}; retrying)`;
    }
    setTimeout(poll, Math.min(1000 * 2 ** failures, 15000));
  };
  setTimeout(poll, 1000);
}

window.addEventListener("DOMContentLoaded", () => {
  if (window.Plotly) drawFigures();
  else document.querySelectorAll("[data-figure]").forEach((div) => { div.textContent = "The chart library did not load."; });
  followJob();
});
