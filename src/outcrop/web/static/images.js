// The page of an image collection: searches /api/images as the form says, lists a page of
// images, and previews a PNG cutout around the typed position. Everything shown is set
// with textContent or as a URL parameter, never as markup.
(function () {
  "use strict";
  const script = document.currentScript;
  const root = document.body.dataset.root || "";
  const collection = script.dataset.collection;
  const limit = Number(script.dataset.limit || "25");
  const form = document.getElementById("image-search");
  const body = document.querySelector("#images tbody");
  const count = document.getElementById("count");
  const message = document.getElementById("message");
  const prev = document.getElementById("prev");
  const next = document.getElementById("next");
  const figure = document.getElementById("preview");
  const img = document.getElementById("cutout");
  const caption = document.getElementById("caption");
  let offset = 0;

  function value(id) {
    return document.getElementById(id).value.trim();
  }

  function searchParams() {
    const params = new URLSearchParams({ collection: collection, limit: String(limit), offset: String(offset) });
    for (const name of ["ra", "dec", "radius", "instrument", "filter"]) {
      if (value(name)) params.set(name, value(name));
    }
    return params;
  }

  function cutoutUrl(image) {
    const params = new URLSearchParams({ ra: value("ra"), dec: value("dec"), size: value("size") || "2arcmin", format: "png" });
    return root + "/api/images/" + encodeURI(image.id) + "?" + params;
  }

  async function preview(image) {
    const url = cutoutUrl(image);
    const response = await fetch(url);
    if (!response.ok) {
      const problem = await response.json().catch(() => ({ detail: response.statusText }));
      message.textContent = "Cutout of " + image.id + ": " + problem.detail;
      figure.hidden = true;
      return;
    }
    img.src = URL.createObjectURL(await response.blob());
    img.dataset.image = image.id;
    caption.textContent = image.id + " around " + value("ra") + ", " + value("dec") + " (" + (value("size") || "2arcmin") + ")";
    figure.hidden = false;
  }

  function row(image, positioned) {
    const tr = document.createElement("tr");
    const link = document.createElement("a");
    link.href = root + "/api/images/" + encodeURI(image.id);
    link.textContent = image.id;
    const cells = [link, image.start || "", image.instrument, image.filter, image.ra.toFixed(5), image.dec.toFixed(5)];
    for (const content of cells) {
      const td = document.createElement("td");
      td.append(content);
      tr.append(td);
    }
    const td = document.createElement("td");
    if (positioned) {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = "preview";
      button.addEventListener("click", () => preview(image));
      td.append(button);
    }
    tr.append(td);
    return tr;
  }

  async function search() {
    message.textContent = "";
    const params = searchParams();
    const response = await fetch(root + "/api/images?" + params, { headers: { Accept: "application/json" } });
    const page = await response.json();
    if (!response.ok) {
      message.textContent = page.detail;
      return;
    }
    const positioned = Boolean(value("ra") && value("dec"));
    body.replaceChildren(...page.images.map((image) => row(image, positioned)));
    const shown = page.images.length ? (page.offset + 1) + "\u2013" + (page.offset + page.images.length) + " of " : "";
    count.textContent = shown + page.total + (page.total === 1 ? " image" : " images") + (positioned ? " at this position." : ".");
    prev.hidden = page.offset === 0;
    next.hidden = page.offset + page.images.length >= page.total;
    const address = new URLSearchParams(params);
    address.delete("collection");
    address.delete("limit");
    if (value("size")) address.set("size", value("size"));
    history.replaceState(null, "", "?" + address);
    if (positioned && page.images.length) {
      await preview(page.images[0]);
    } else {
      figure.hidden = true;
    }
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    offset = 0;
    search();
  });
  prev.addEventListener("click", function () {
    offset = Math.max(0, offset - limit);
    search();
  });
  next.addEventListener("click", function () {
    offset += limit;
    search();
  });
  offset = Number(new URLSearchParams(location.search).get("offset") || "0");
  search();
})();
