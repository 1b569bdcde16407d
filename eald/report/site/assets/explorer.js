// eald results explorer: sortable tables and the video filters. Vanilla JS, no dependencies.
"use strict";

function cellValue(row, col) {
  const cell = row.cells[col];
  const raw = cell.dataset.sort !== undefined ? cell.dataset.sort : cell.textContent.trim();
  const num = Number(raw);
  return raw !== "" && !Number.isNaN(num) ? num : raw.toLowerCase();
}

function makeSortable(table) {
  const heads = table.tHead.rows[0].cells;
  Array.from(heads).forEach((th, col) => {
    th.addEventListener("click", () => {
      const asc = th.getAttribute("aria-sort") !== "ascending";
      Array.from(heads).forEach((h) => h.removeAttribute("aria-sort"));
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      const body = table.tBodies[0];
      const rows = Array.from(body.rows);
      rows.sort((a, b) => {
        const x = cellValue(a, col), y = cellValue(b, col);
        const c = typeof x === typeof y ? (x < y ? -1 : x > y ? 1 : 0) : (typeof x === "number" ? -1 : 1);
        return asc ? c : -c;
      });
      rows.forEach((r) => body.appendChild(r));
    });
  });
}

function setupFilters(table) {
  const form = document.getElementById("video-filters");
  if (!form) return;
  const setting = form.querySelector("[name=setting]");
  const result = form.querySelector("[name=result]");
  const text = form.querySelector("[name=q]");
  const count = document.getElementById("video-count");
  const params = new URLSearchParams(window.location.search);
  if (params.has("setting")) setting.value = params.get("setting");
  if (params.has("result")) result.value = params.get("result");
  if (params.has("q")) text.value = params.get("q");
  function apply() {
    let shown = 0;
    const q = text.value.trim().toLowerCase();
    for (const row of table.tBodies[0].rows) {
      const ok = (setting.value === "" || row.dataset.setting === setting.value) &&
                 (result.value === "" || row.dataset.result === result.value) &&
                 (q === "" || row.dataset.video.toLowerCase().includes(q));
      row.hidden = !ok;
      if (ok) shown += 1;
    }
    count.textContent = shown + " of " + table.tBodies[0].rows.length + " videos shown";
  }
  [setting, result].forEach((el) => el.addEventListener("change", apply));
  text.addEventListener("input", apply);
  apply();
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("table.sortable").forEach(makeSortable);
  const videos = document.getElementById("videos");
  if (videos) setupFilters(videos);
});
