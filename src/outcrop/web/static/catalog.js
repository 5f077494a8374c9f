// Live search on the landing page: asks /api/datasets?q= and redraws the table.
// Rows are built with textContent, never innerHTML, so no id or title can inject markup.
(function () {
  "use strict";
  const script = document.currentScript;
  const root = document.body.dataset.root || "";
  const base = script.dataset.base;
  const limit = script.dataset.limit || "100";
  const form = document.getElementById("search");
  const input = document.getElementById("q");
  const body = document.querySelector("#datasets tbody");
  const count = document.getElementById("count");
  const pages = document.querySelector(".pages");
  let timer = null;
  let latest = 0;

  function cell(row, child) {
    const td = document.createElement("td");
    td.append(child);
    row.append(td);
  }

  function draw(page, q) {
    body.replaceChildren();
    for (const ds of page.datasets) {
      const tr = document.createElement("tr");
      const link = document.createElement("a");
      link.href = root + "/datasets/" + encodeURI(ds.id);
      link.textContent = ds.id;
      cell(tr, link);
      cell(tr, document.createTextNode(ds.title));
      const code = document.createElement("code");
      code.textContent = base + "zarr/" + ds.id;
      cell(tr, code);
      body.append(tr);
    }
    const n = page.total;
    let text = n + (n === 1 ? " dataset" : " datasets");
    if (q) text += " matching \u201c" + q + "\u201d";
    if (n > page.datasets.length) text += ", showing 1\u2013" + page.datasets.length;
    count.textContent = text + ".";
    if (pages) pages.replaceChildren();
  }

  async function search() {
    const q = input.value.trim();
    const ticket = ++latest;
    const params = new URLSearchParams({ q: q, limit: limit });
    const response = await fetch(root + "/api/datasets?" + params, { headers: { Accept: "application/json" } });
    if (!response.ok || ticket !== latest) return;
    draw(await response.json(), q);
    history.replaceState(null, "", q ? "?q=" + encodeURIComponent(q) : root + "/");
  }

  input.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(search, 150);
  });
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    search();
  });
})();
