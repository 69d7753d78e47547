"""The service's web page (``GET /``): one self-contained HTML file, no external resource.

Choose image files or drop them on the zone; the page posts them to ``/predict`` with
``fetch`` (in groups of at most the server's ``max_images``, read from ``/metadata``) and
shows, for each image, its thumbnail and one horizontal bar per top class with the class
name and its percentage. Class names and file names are user data: the page only ever
sets them with ``textContent``, never as HTML. The run's name goes into the title escaped
by ``html.escape``.

Example:
    >>> html = render_page("quick")
"""

import html

__all__ = ["PAGE", "render_page"]

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>resnet-transfer: __RUN__</title>
<link rel="icon" href="data:,">
<style>
  body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; padding: 0 1rem; color: #222; }
  h1 { font-size: 1.4rem; }
  #about { color: #555; font-size: 0.9rem; }
  #zone { border: 2px dashed #888; border-radius: 8px; padding: 2rem; text-align: center; margin: 1rem 0; }
  #zone.over { background: #eef5ff; border-color: #3578e5; }
  #status { min-height: 1.5em; }
  #status.error { color: #b00020; }
  #results { display: grid; grid-template-columns: repeat(auto-fill, minmax(17rem, 1fr)); gap: 1rem; }
  .card { border: 1px solid #ddd; border-radius: 8px; padding: 0.75rem; display: flex; gap: 0.75rem; }
  .card img { width: 64px; height: 64px; object-fit: contain; image-rendering: pixelated; background: #f4f4f4; }
  .card .name { font-weight: 600; overflow-wrap: anywhere; margin-bottom: 0.25rem; }
  .card .error { color: #b00020; }
  .bars { flex: 1; min-width: 0; }
  .bar { display: grid; grid-template-columns: minmax(3rem, auto) 1fr 3.5rem; gap: 0.4rem; align-items: center;
         font-size: 0.85rem; margin: 0.15rem 0; }
  .bar .label { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
  .bar .track { background: #eee; height: 0.8rem; border-radius: 3px; overflow: hidden; }
  .bar .fill { background: #3578e5; height: 100%; }
  .bar .percent { text-align: right; font-variant-numeric: tabular-nums; }
</style>
</head>
<body>
<h1>resnet-transfer: <span id="run">__RUN__</span></h1>
<p id="about">Loading the model's description...</p>
<div id="zone">
  <p>Drop images here, or</p>
  <label for="files">choose image files:</label>
  <input id="files" type="file" accept="image/*" multiple>
</div>
<p id="status" role="status" aria-live="polite"></p>
<div id="results"></div>
<script>
"use strict";
const about = document.getElementById("about");
const zone = document.getElementById("zone");
const input = document.getElementById("files");
const statusLine = document.getElementById("status");
const results = document.getElementById("results");
let maxImages = 64;

function say(text, isError) {
  statusLine.textContent = text;
  statusLine.className = isError ? "error" : "";
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function card(file, prediction) {
  const box = element("div", "card");
  const thumbnail = element("img");
  thumbnail.alt = file.name;
  thumbnail.src = URL.createObjectURL(file);
  thumbnail.onload = () => URL.revokeObjectURL(thumbnail.src);
  const bars = element("div", "bars");
  bars.appendChild(element("div", "name", file.name));
  for (const entry of prediction.top) {
    const percent = (100 * entry.probability).toFixed(1) + " %";
    const row = element("div", "bar");
    row.setAttribute("aria-label", entry.class + ": " + percent);
    const label = element("span", "label", entry.class);
    label.title = entry.class;
    const track = element("div", "track");
    const fill = element("div", "fill");
    fill.style.width = Math.max(0, Math.min(100, 100 * entry.probability)) + "%";
    track.appendChild(fill);
    row.append(label, track, element("span", "percent", percent));
    bars.appendChild(row);
  }
  box.append(thumbnail, bars);
  return box;
}

async function send(files) {
  const form = new FormData();
  for (const file of files) form.append("image", file, file.name);
  const response = await fetch("predict", { method: "POST", body: form });
  let body;
  try { body = await response.json(); } catch (error) { body = { error: "the server answered " + response.status }; }
  if (!response.ok) throw new Error(body.error || ("the server answered " + response.status));
  return body;
}

async function predictFiles(fileList) {
  const files = Array.from(fileList);
  if (files.length === 0) return;
  results.replaceChildren();
  say("Predicting " + files.length + " image" + (files.length === 1 ? "" : "s") + "...", false);
  try {
    let runtime = "";
    for (let start = 0; start < files.length; start += maxImages) {
      const group = files.slice(start, start + maxImages);
      const body = await send(group);
      runtime = body.runtime;
      body.predictions.forEach((prediction, index) => results.appendChild(card(group[index], prediction)));
    }
    say(files.length + " image" + (files.length === 1 ? "" : "s") + " predicted (runtime " + runtime + ").", false);
  } catch (error) {
    say(error.message, true);
  }
}

input.addEventListener("change", () => predictFiles(input.files));
zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
zone.addEventListener("dragleave", () => zone.classList.remove("over"));
zone.addEventListener("drop", (event) => {
  event.preventDefault();
  zone.classList.remove("over");
  predictFiles(event.dataTransfer.files);
});

fetch("metadata").then((response) => response.json()).then((metadata) => {
  maxImages = metadata.limits.max_images;
  about.textContent = metadata.classes.length + " classes, " + metadata.input_size[0] + "x" + metadata.input_size[1] +
    " pixels (" + metadata.resize + "), runtime " + metadata.runtime + ", model " + metadata.model_version + ".";
}).catch(() => { about.textContent = "The model's description could not be loaded."; });
</script>
</body>
</html>
"""


def render_page(run_id: str) -> str:
    """The page, titled with the run's name (escaped)."""
    return PAGE.replace("__RUN__", html.escape(str(run_id)))
