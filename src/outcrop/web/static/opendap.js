// The OPeNDAP request form: builds the DAP2 and DAP4 constraints from the ticked variables
// and their index ranges, checks the ranges as the person types, and rewrites the request
// links. Text goes in with textContent and URLs are escaped, never markup from names.
(function () {
  "use strict";
  const script = document.currentScript;
  const root = document.body.dataset.root || "";
  const base = script.dataset.base; // absolute, ends with "/"
  const path = script.dataset.path; // "opendap/<id>", already URL-escaped
  const form = document.getElementById("opendap-form");
  const rows = Array.from(form.querySelectorAll("tr.variable"));
  const links = Array.from(document.querySelectorAll("#requests a[data-suffix]"));
  const status = document.getElementById("status");
  const WHOLE = /^\s*\d+\s*$/;
  const DAP2_KEEP = /[A-Za-z0-9_-]/;

  // DAP2 escapes a name's characters as %XX (its UTF-8 bytes); keeping only letters, digits,
  // `_` and `-` leaves nothing the constraint or the query string would read otherwise.
  function dap2Name(name) {
    let out = "";
    for (const byte of new TextEncoder().encode(name)) {
      const c = String.fromCharCode(byte);
      out += DAP2_KEEP.test(c) ? c : "%" + byte.toString(16).toUpperCase().padStart(2, "0");
    }
    return out;
  }

  // DAP4 names are paths from the root group; a backslash escapes a character that the
  // constraint syntax would read (`/`, `.`, `[`, `;`, …), as libnetcdf's FQNs do.
  function dap4Name(name) {
    return "/" + name.replace(/[\x00-\x2c\x2e\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\x7f]/g, "\\$&");
  }

  function whole(input) {
    return WHOLE.test(input.value) ? Number(input.value) : NaN;
  }

  // One dimension's [start:stride:stop], or the first thing wrong with it.
  function readDim(div) {
    const size = Number(div.dataset.size);
    const name = div.dataset.dim;
    const last = size - 1;
    const inputs = ["start", "stride", "stop"].map((c) => div.querySelector("input." + c));
    const [start, stride, stop] = inputs.map(whole);
    let bad = null;
    let problem = "";
    if (!(start >= 0 && start <= last)) {
      [bad, problem] = [inputs[0], `${name}: start must be a whole number from 0 to ${last}`];
    } else if (!(stride >= 1)) {
      [bad, problem] = [inputs[1], `${name}: stride must be a whole number of at least 1`];
    } else if (!(stop >= start && stop <= last)) {
      [bad, problem] = [inputs[2], `${name}: stop must be a whole number from ${start} to ${last}`];
    }
    if (problem) problem += ` (${name} has ${size} value${size === 1 ? "" : "s"})`;
    for (const input of inputs) input.setAttribute("aria-invalid", String(input === bad));
    return { text: `[${start}:${stride}:${stop}]`, problem: problem };
  }

  function readRow(row) {
    const dims = Array.from(row.querySelectorAll(".dim")).map(readDim);
    const problems = dims.map((d) => d.problem).filter(Boolean);
    const note = row.querySelector(".problem");
    note.textContent = problems.join("; ");
    note.hidden = problems.length === 0;
    const slabs = dims.map((d) => d.text);
    const name = row.dataset.name;
    return {
      picked: row.querySelector("input.pick").checked,
      problems: problems,
      dap2: dap2Name(name) + slabs.slice(0, Number(row.dataset.dap2Dims)).join(""),
      dap4: dap4Name(name) + slabs.join(""),
    };
  }

  function query(suffix, ce2, ce4) {
    if (suffix === ".das") return "";
    if (suffix === ".dap" || suffix === ".dmr") return ce4 ? "?dap4.ce=" + encodeURIComponent(ce4) : "";
    return ce2 ? "?" + ce2 : "";
  }

  function describe(picked, invalid) {
    status.classList.toggle("invalid", invalid.length > 0);
    if (invalid.length) {
      const names = invalid.map((r) => r.name).join(", ");
      return `Fix the ranges of ${names} (see the message under its dimensions); until then the requests are disabled.`;
    }
    if (!picked.length) return "No variable ticked: the links ask for the whole dataset.";
    return `${picked.length} variable${picked.length === 1 ? "" : "s"} ticked.`;
  }

  function update() {
    const read = rows.map((row) => Object.assign(readRow(row), { name: row.dataset.name }));
    const picked = read.filter((r) => r.picked);
    const invalid = picked.filter((r) => r.problems.length);
    const ce2 = picked.map((r) => r.dap2).join(",");
    const ce4 = picked.map((r) => r.dap4).join(";");
    document.getElementById("dap2-ce").textContent = ce2;
    document.getElementById("dap4-ce").textContent = ce4;
    status.textContent = describe(picked, invalid);
    for (const link of links) {
      const suffix = link.dataset.suffix;
      const shown = document.getElementById(link.id.replace("get-", "") + "-url");
      const tail = path + suffix + query(suffix, ce2, ce4);
      const off = invalid.length > 0 && suffix !== ".das";
      if (off) {
        link.removeAttribute("href");
        link.setAttribute("aria-disabled", "true");
        shown.textContent = "\u2014";
      } else {
        link.href = root + "/" + tail;
        link.removeAttribute("aria-disabled");
        shown.textContent = base + tail;
      }
    }
  }

  form.addEventListener("input", function (event) {
    const row = event.target.closest("tr.variable");
    if (row && event.target.matches(".dim input")) row.querySelector("input.pick").checked = true;
    update();
  });
  form.addEventListener("change", update);
  form.addEventListener("submit", function (event) {
    event.preventDefault();
  });
  document.getElementById("data-url").addEventListener("focus", function (event) {
    event.target.select();
  });
  update();
})();
