// Deep-zoom viewers (OpenSeadragon) for the case page and the side-by-side comparison:
// zoom at the cursor, drag to pan, synchronised panes, window/level, invert, reset, keys.
//
// Markup (web/templates/_images.html, macro viewer_group): one [data-viewer-group] per
// page holding [data-viewer] panes (data-src, data-width, data-height), the toolbar
// controls named by data-action / data-control, and the SVG filter #wl-filter that the
// panes' canvases are drawn through (window/level and invert, on the drawn pixels).
(function () {
  "use strict";
  var OSD = window.OpenSeadragon;
  var group = document.querySelector("[data-viewer-group]");
  if (!OSD || !group) { return; }

  var panes = Array.prototype.slice.call(group.querySelectorAll("[data-viewer]"));
  var viewers = [];
  var syncing = false;
  var active = 0;  // the pane keyboard zoom/pan acts on (the others follow when synced)
  var FULL_WINDOW = 256, MID_LEVEL = 128;
  var state = { window: FULL_WINDOW, level: MID_LEVEL, invert: false, sync: true };

  function control(name) { return group.querySelector('[data-control="' + name + '"]'); }

  // --- window/level and invert: one linear transfer per channel (DICOM's linear VOI) ---
  function applyWindowLevel() {
    var width = Math.max(2, state.window);
    var slope = 255 / (width - 1);
    var intercept = 0.5 - (state.level - 0.5) / (width - 1);
    if (state.invert) { slope = -slope; intercept = 1 - intercept; }
    var funcs = document.querySelectorAll("#wl-filter feFuncR, #wl-filter feFuncG, #wl-filter feFuncB");
    Array.prototype.forEach.call(funcs, function (func) {
      func.setAttribute("slope", slope.toFixed(5));
      func.setAttribute("intercept", intercept.toFixed(5));
    });
    var windowInput = control("window"), levelInput = control("level");
    if (windowInput) { windowInput.value = state.window; }
    if (levelInput) { levelInput.value = state.level; }
    var readout = control("wl-readout");
    if (readout) { readout.textContent = "W " + Math.round(state.window) + " / L " + Math.round(state.level); }
    var invert = group.querySelector('[data-action="invert"]');
    if (invert) { invert.setAttribute("aria-pressed", state.invert ? "true" : "false"); }
    group.dataset.window = String(Math.round(state.window));
    group.dataset.level = String(Math.round(state.level));
    group.dataset.invert = state.invert ? "1" : "0";
  }

  function setWindowLevel(windowWidth, level) {
    state.window = Math.min(FULL_WINDOW, Math.max(2, windowWidth));
    state.level = Math.min(255, Math.max(0, level));
    applyWindowLevel();
  }

  // --- zoom and pan ---
  function showZoom(index) {
    var viewer = viewers[index], pane = panes[index];
    if (!viewer.world.getItemCount()) { return; }
    var zoom = viewer.viewport.getZoom(true);
    var imagePercent = viewer.viewport.viewportToImageZoom(zoom) * 100;
    pane.dataset.zoom = zoom.toFixed(4);
    pane.dataset.imageZoom = imagePercent.toFixed(1);
    var readout = pane.parentNode.querySelector("[data-zoom-readout]");
    if (readout) { readout.textContent = imagePercent.toFixed(0) + "% of full resolution"; }
  }

  function follow(index) {
    showZoom(index);
    // Only the pane being handled leads: a follower echoing its (one frame old) view back
    // would stop the leader's zoom animation after its first frame.
    if (!state.sync || syncing || index !== active) { return; }
    syncing = true;
    var source = viewers[index].viewport;
    viewers.forEach(function (viewer, other) {
      if (other === index || !viewer.world.getItemCount()) { return; }
      viewer.viewport.zoomTo(source.getZoom(true), null, true);
      viewer.viewport.panTo(source.getCenter(true), true);
      showZoom(other);
    });
    syncing = false;
  }

  function eachTarget(act) {
    // Synced: act on the active pane and let the others follow; else act on every pane.
    (state.sync ? [viewers[active]] : viewers).forEach(function (viewer) {
      if (viewer && viewer.world.getItemCount()) { act(viewer.viewport); }
    });
  }

  function zoomBy(factor) { eachTarget(function (viewport) { viewport.zoomBy(factor); viewport.applyConstraints(); }); }

  function panBy(dx, dy) {
    eachTarget(function (viewport) {
      var bounds = viewport.getBounds(true);
      viewport.panBy(new OSD.Point(dx * bounds.width, dy * bounds.height));
      viewport.applyConstraints();
    });
  }

  function actualPixels() {
    eachTarget(function (viewport) { viewport.zoomTo(viewport.imageToViewportZoom(1)); });
  }

  function reset() {
    syncing = true;
    viewers.forEach(function (viewer) { if (viewer.world.getItemCount()) { viewer.viewport.goHome(true); } });
    syncing = false;
    viewers.forEach(function (viewer, index) { showZoom(index); });
    state.invert = false;
    setWindowLevel(FULL_WINDOW, MID_LEVEL);
  }

  function setSync(on) {
    state.sync = on;
    var box = control("sync");
    if (box) { box.checked = on; }
    if (on) { follow(active); }
  }

  // --- the panes ---
  function addOutline(viewer, pane) {
    var outline = pane.dataset.outline && document.getElementById(pane.dataset.outline);
    if (!outline) { return; }
    var item = viewer.world.getItemAt(0);
    var size = item.getContentSize();
    outline.classList.add("outline-overlay");
    viewer.addOverlay({ element: outline, location: item.imageToViewportRectangle(0, 0, size.x, size.y) });
  }

  function open(index, src) {
    var pane = panes[index];
    pane.dataset.loaded = "0";
    viewers[index].open({ type: "image", url: src, buildPyramid: true });
  }

  panes.forEach(function (pane, index) {
    var viewer = OSD({
      element: pane,
      drawer: "canvas",
      showNavigationControl: false,
      keyboardNavEnabled: false,  // the page's own keys below act on every pane
      visibilityRatio: 0.2,
      minZoomImageRatio: 0.5,
      maxZoomPixelRatio: 16,  // 16 screen pixels per image pixel: calcifications, not blur
      animationTime: 0.4,
      zoomPerScroll: 1.25,
      gestureSettingsMouse: { clickToZoom: false, dblClickToZoom: true, scrollToZoom: true, dragToPan: true },
      crossOriginPolicy: false,
    });
    viewers.push(viewer);
    viewer.addHandler("open", function () {
      addOutline(viewer, pane);
      showZoom(index);
      var leader = active;
      if (state.sync && leader !== index && viewers[leader].world.getItemCount()) { follow(leader); }
    });
    viewer.addHandler("tile-drawn", function () { pane.dataset.loaded = "1"; });
    viewer.addHandler("open-failed", function () {
      pane.dataset.loaded = "failed";
      var readout = pane.parentNode.querySelector("[data-zoom-readout]");
      if (readout) { readout.textContent = "the image could not be loaded"; }
    });
    viewer.addHandler("viewport-change", function () { follow(index); });
    pane.addEventListener("pointerenter", function () { active = index; });
    pane.addEventListener("pointerdown", function () { active = index; }, true);

    // Right-drag: window (left/right) and level (up/down), as on a PACS workstation.
    var dragStart = null;
    pane.addEventListener("contextmenu", function (event) { event.preventDefault(); });
    pane.addEventListener("pointerdown", function (event) {
      if (event.button === 2) {
        dragStart = { x: event.clientX, y: event.clientY, window: state.window, level: state.level };
      }
    }, true);
    pane.addEventListener("pointermove", function (event) {
      if (!dragStart || !(event.buttons & 2)) { dragStart = null; return; }
      setWindowLevel(dragStart.window + (event.clientX - dragStart.x) * 0.5,
                     dragStart.level - (event.clientY - dragStart.y) * 0.5);
    }, true);
    pane.addEventListener("pointerup", function () { dragStart = null; }, true);

    if (pane.dataset.src) { open(index, pane.dataset.src); }
  });

  // --- choosing the result shown beside the query (search results page) ---
  var choices = Array.prototype.slice.call(document.querySelectorAll("[data-compare-src]"));
  var chosen = 0;
  function choose(position) {
    if (!choices.length || panes.length < 2) { return; }
    chosen = (position + choices.length) % choices.length;
    var button = choices[chosen];
    choices.forEach(function (other) {
      var card = other.closest(".result");
      if (card) { card.classList.toggle("comparing", other === button); }
      other.setAttribute("aria-pressed", other === button ? "true" : "false");
    });
    var pane = panes[panes.length - 1];
    pane.dataset.imageId = button.dataset.imageId || "";
    var caption = pane.parentNode.querySelector("[data-caption]");
    if (caption) { caption.textContent = button.dataset.compareLabel || ""; }
    var link = pane.parentNode.querySelector("[data-case-link]");
    if (link && button.dataset.caseHref) { link.href = button.dataset.caseHref; }
    open(panes.length - 1, button.dataset.compareSrc);
  }
  choices.forEach(function (button, position) {
    button.addEventListener("click", function () {
      choose(position);
      group.scrollIntoView({ behavior: "smooth", block: "start" });
    });
  });
  if (choices.length && panes.length > 1 && !panes[panes.length - 1].dataset.src) { choose(0); }

  // --- toolbar ---
  var actions = {
    "zoom-in": function () { zoomBy(1.25); },
    "zoom-out": function () { zoomBy(0.8); },
    "actual-pixels": actualPixels,
    "reset": reset,
    "invert": function () { state.invert = !state.invert; applyWindowLevel(); },
    "next": function () { choose(chosen + 1); },
    "previous": function () { choose(chosen - 1); },
  };
  Array.prototype.forEach.call(group.querySelectorAll("[data-action]"), function (button) {
    button.addEventListener("click", function () { actions[button.dataset.action](); });
  });
  var windowInput = control("window"), levelInput = control("level"), presets = control("preset");
  if (windowInput) { windowInput.addEventListener("input", function () { setWindowLevel(+windowInput.value, state.level); }); }
  if (levelInput) { levelInput.addEventListener("input", function () { setWindowLevel(state.window, +levelInput.value); }); }
  // "auto": the window spanning the 1st to 99th percentile of the first pane's grey levels.
  function autoWindow() {
    var src = panes[0].dataset.src;
    if (!src) { return; }
    var picture = new Image();
    picture.onload = function () {
      var scale = Math.min(1, 512 / Math.max(picture.naturalWidth, picture.naturalHeight));
      var canvas = document.createElement("canvas");
      canvas.width = Math.max(1, Math.round(picture.naturalWidth * scale));
      canvas.height = Math.max(1, Math.round(picture.naturalHeight * scale));
      var context = canvas.getContext("2d");
      context.drawImage(picture, 0, 0, canvas.width, canvas.height);
      var pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
      var histogram = new Array(256).fill(0), count = 0;
      for (var at = 0; at < pixels.length; at += 4) {
        var grey = Math.round(0.299 * pixels[at] + 0.587 * pixels[at + 1] + 0.114 * pixels[at + 2]);
        if (grey > 0) { histogram[grey] += 1; count += 1; }  // black background left out
      }
      if (!count) { return; }
      var seen = 0, low = 0, high = 255;
      for (var level = 0; level < 256; level += 1) {
        seen += histogram[level];
        if (seen < 0.01 * count) { low = level + 1; }
        if (seen <= 0.99 * count) { high = level; }
      }
      setWindowLevel(Math.max(2, high - low + 1), (low + high + 1) / 2);
    };
    picture.src = src;
  }
  if (presets) {
    presets.addEventListener("change", function () {
      if (presets.value === "auto") { autoWindow(); return; }
      var parts = presets.value.split(",");
      if (parts.length === 2) { setWindowLevel(+parts[0], +parts[1]); }
    });
  }
  var syncBox = control("sync");
  if (syncBox) { syncBox.addEventListener("change", function () { setSync(syncBox.checked); }); }

  // --- keyboard (ignored while typing in a form field) ---
  var keys = {
    "+": actions["zoom-in"], "=": actions["zoom-in"], "-": actions["zoom-out"],
    "1": actualPixels, "0": reset, "r": reset, "i": actions.invert,
    "ArrowLeft": function () { panBy(-0.1, 0); }, "ArrowRight": function () { panBy(0.1, 0); },
    "ArrowUp": function () { panBy(0, -0.1); }, "ArrowDown": function () { panBy(0, 0.1); },
    "[": function () { setWindowLevel(state.window - 16, state.level); },
    "]": function () { setWindowLevel(state.window + 16, state.level); },
    ",": function () { setWindowLevel(state.window, state.level - 8); },
    ".": function () { setWindowLevel(state.window, state.level + 8); },
    "s": function () { setSync(!state.sync); }, "a": autoWindow,
    "n": actions.next, "p": actions.previous,
  };
  function typing(target) {
    if (!target || !target.tagName) { return false; }
    if (target.isContentEditable || target.tagName === "TEXTAREA" || target.tagName === "SELECT") { return true; }
    return target.tagName === "INPUT" && target.type !== "checkbox";  // a range keeps its arrows
  }
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) { return; }
    var act = keys[event.key];
    if (act) { event.preventDefault(); act(); }
  });

  applyWindowLevel();
  window.mammosearchViewers = viewers;  // for the browser tests and the console
})();
