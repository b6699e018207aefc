// Deep-zoom viewers (OpenSeadragon) for the case page and the side-by-side comparison:
// zoom at the cursor, drag to pan, synchronised panes, window/level per pane, invert, reset,
// a hanging protocol (query beside result, CC above MLO, the pair mirrored back to back),
// overlays (side, view, BIRADS, pathology, rank) and a help overlay listing the keys.
//
// Markup (web/templates/_images.html, macro viewer_group): one [data-viewer-group] per
// page holding [data-viewer] panes (data-src, data-width, data-height; data-column "left" or
// "right" for the hanging; data-view on a case comparison's panes; data-result on the panes a
// chosen result fills), the toolbar controls named by data-action / data-control, and the
// SVG filter #wl-filter that each pane's canvas is drawn through (a copy per pane).
//
// Panes hang at one physical scale: each image's width in the viewer's world is its width in
// mm (data-spacing-mm, one pixel's side) when every shown image has a spacing, else in pixels
// ("scale: pixels"); a scale bar under each pane says which. A pane whose original is deeper
// than 8 bits (data-depth: bits and the window of its first rendering, in stored units) is
// previewed at once through the filter, then re-rendered on the server on all its bits at
// the window chosen (src?center=&width=) when the window settles.
//
// `window.mammosearchViewer.start()` builds the viewers of the page as it is now: search.js
// calls it after swapping results in, so the viewer works on every path to the results.
// A page may hold several groups (the launch page: one per breast); each takes its result
// choices from its [data-viewer-scope], and the keys act on the group last pointed at.
(function () {
  "use strict";
  var FULL_WINDOW = 256, MID_LEVEL = 128;
  var DEEP_WINDOW = 4096;  // a deep pane's preview may widen past its rendering's range
  var REWINDOW_AFTER_MS = 500;
  var SCALE_STEPS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000];
  var running = [];  // one controller per viewer group: { group, viewers, keys, destroy }
  var focused = null;  // the controller the keys act on: the group last pointed at

  function start() {
    running.forEach(function (controller) { controller.destroy(); });
    running = [];
    focused = null;
    var OSD = window.OpenSeadragon;
    if (!OSD) { return; }
    Array.prototype.forEach.call(document.querySelectorAll("[data-viewer-group]"), function (group) {
      running.push(startGroup(OSD, group));
    });
    focused = running[0] || null;
    window.mammosearchViewers = focused ? focused.viewers : [];  // for the browser tests
    window.mammosearchViewerGroups = running.map(function (controller) { return controller.viewers; });
  }

  function startGroup(OSD, group) {
    var controller = null;
    var panes = Array.prototype.slice.call(group.querySelectorAll("[data-viewer]"));
    var viewers = [];
    var syncing = false;
    var active = Math.max(0, panes.findIndex(function (pane) { return pane.dataset.src; }));  // the pane keys act on
    var shared = { sync: true, overlays: true };
    var looks = panes.map(function () {
      return { window: FULL_WINDOW, level: MID_LEVEL, invert: false, auto: null };
    });
    var scaleMode = null;  // "mm" or "pixels": how the panes' widths were last set
    var homed = false;  // the first home waits for every pane with an image

    function control(name) { return group.querySelector('[data-control="' + name + '"]'); }

    // --- window/level and invert per pane: a linear transfer per channel (DICOM's VOI) ---
    var template = group.querySelector("filter");
    var filters = panes.map(function (pane, index) {
      var copy = template.cloneNode(true);
      copy.id = "wl-filter-" + (pane.id || index);
      template.parentNode.appendChild(copy);
      pane.style.setProperty("--wl-filter", "url(#" + copy.id + ")");
      return copy;
    });

    function showLook(index) {
      var look = looks[index], pane = panes[index];
      var width = Math.max(2, look.window);
      var slope = 255 / (width - 1);
      var intercept = 0.5 - (look.level - 0.5) / (width - 1);
      if (look.invert) { slope = -slope; intercept = 1 - intercept; }
      Array.prototype.forEach.call(filters[index].querySelectorAll("feFuncR, feFuncG, feFuncB"),
        function (func) {
          func.setAttribute("slope", slope.toFixed(5));
          func.setAttribute("intercept", intercept.toFixed(5));
        });
      pane.dataset.window = String(Math.round(look.window));
      pane.dataset.level = String(Math.round(look.level));
      pane.dataset.invert = look.invert ? "1" : "0";
      if (index === active) { showActiveLook(); }
    }

    function showActiveLook() {
      var look = looks[active];
      var windowInput = control("window"), levelInput = control("level");
      if (windowInput) { windowInput.value = look.window; }
      if (levelInput) { levelInput.value = look.level; }
      var readout = control("wl-readout");
      if (readout) {
        var deep = depthOf(active);
        readout.textContent = "W " + Math.round(look.window) + " / L " + Math.round(look.level) +
          (deep ? " · " + deep.bits + "-bit W " + Math.round(deep.shown[1]) + " / L " + Math.round(deep.shown[0]) : "");
      }
      var invert = group.querySelector('[data-action="invert"]');
      if (invert) { invert.setAttribute("aria-pressed", look.invert ? "true" : "false"); }
      group.dataset.window = String(Math.round(look.window));
      group.dataset.level = String(Math.round(look.level));
      group.dataset.invert = look.invert ? "1" : "0";
      panes.forEach(function (pane, index) { pane.classList.toggle("active-pane", index === active && panes.length > 1); });
    }

    function setLook(index, windowWidth, level) {
      var widest = depthOf(index) ? DEEP_WINDOW : FULL_WINDOW;
      looks[index].window = Math.min(widest, Math.max(2, windowWidth));
      var reach = (looks[index].window - FULL_WINDOW) / 2;
      looks[index].level = Math.min(255 + Math.max(0, reach), Math.max(-Math.max(0, reach), level));
      showLook(index);
      if (depthOf(index)) { rewindowSoon(index); }
    }

    // --- a deeper-than-8-bit original: its window, re-rendered on the server on all bits ---
    function depthOf(index) {
      var pane = panes[index];
      if (!pane.dataset.depth || !pane.dataset.src || pane.dataset.src.indexOf("data:") === 0) { return null; }
      if (!pane.depthState || pane.depthState.json !== pane.dataset.depth) {
        var parsed = JSON.parse(pane.dataset.depth);
        pane.depthState = { json: pane.dataset.depth, bits: parsed.bits, initial: parsed.window.slice(), shown: parsed.window.slice(), timer: null, asked: null };
      }
      return pane.depthState;
    }

    // The window (center, width) in stored units that an 8-bit look over the rendering
    // made at `shown` picks out: grey g of that rendering is stored value low + g * step.
    function storedWindow(look, shown) {
      var step = shown[1] / 255, low = shown[0] - shown[1] / 2;
      var width = Math.max(1, look.window * step);
      return [low + (look.level - look.window / 2) * step + width / 2, width];
    }

    function lookOver(stored, shown) {
      var step = shown[1] / 255, low = shown[0] - shown[1] / 2;
      var windowWidth = stored[1] / step;
      return { window: windowWidth, level: (stored[0] - stored[1] / 2 - low) / step + windowWidth / 2 };
    }

    function rewindowSoon(index) {
      var deep = depthOf(index);
      clearTimeout(deep.timer);
      deep.timer = setTimeout(function () { rewindow(index); }, REWINDOW_AFTER_MS);
    }

    function rewindow(index) {
      var deep = depthOf(index), viewer = viewers[index], pane = panes[index];
      var look = looks[index], item = viewer.world.getItemAt(0);
      if (!deep || !item || (Math.round(look.window) === FULL_WINDOW && Math.round(look.level) === MID_LEVEL)) { return; }
      var wanted = storedWindow(look, deep.shown);
      var src = pane.dataset.src;
      var url = src + (src.indexOf("?") < 0 ? "?" : "&") + "center=" + wanted[0].toFixed(1) + "&width=" + wanted[1].toFixed(1);
      deep.asked = url;
      pane.dataset.rewindowing = "1";
      viewer.addTiledImage({
        tileSource: { type: "image", url: url, buildPyramid: true },
        index: 0, replace: true, width: item.getBounds().width,
        success: function () {
          if (deep.asked !== url || pane.dataset.src !== src) { return; }
          deep.shown = wanted;
          var invert = looks[index].invert;
          looks[index].window = FULL_WINDOW;
          looks[index].level = MID_LEVEL;
          looks[index].invert = invert;
          showLook(index);
          pane.dataset.depthWindow = wanted[0].toFixed(1) + "," + wanted[1].toFixed(1);
          pane.dataset.rewindowing = "0";
          pane.dataset.rewindowed = String(+(pane.dataset.rewindowed || 0) + 1);
        },
        error: function () { pane.dataset.rewindowing = "failed"; },
      });
    }

    function applyPreset(index, preset) {
      if (preset === "auto") {
        var auto = looks[index].auto, deep = depthOf(index);
        if (auto && deep) {  // auto was measured on the first rendering
          var over = lookOver(storedWindow(auto, deep.initial), deep.shown);
          setLook(index, over.window, over.level);
        } else if (auto) { setLook(index, auto.window, auto.level); }
        return;
      }
      var parts = preset.split(",");
      if (parts.length === 2) { setLook(index, +parts[0], +parts[1]); }
    }

    // --- what each image's pixels say: its auto window and which edge its chest wall is on ---
    function analyse(index, src) {
      var picture = new Image();
      picture.onload = function () {
        if (panes[index].dataset.src !== src) { return; }  // another image was chosen since
        var scale = Math.min(1, 512 / Math.max(picture.naturalWidth, picture.naturalHeight));
        var canvas = document.createElement("canvas");
        canvas.width = Math.max(1, Math.round(picture.naturalWidth * scale));
        canvas.height = Math.max(1, Math.round(picture.naturalHeight * scale));
        var context = canvas.getContext("2d");
        context.drawImage(picture, 0, 0, canvas.width, canvas.height);
        var pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
        var histogram = new Array(256).fill(0), count = 0;
        var band = Math.max(1, Math.round(canvas.width / 10)), leftEdge = 0, rightEdge = 0;
        for (var at = 0; at < pixels.length; at += 4) {
          var grey = Math.round(0.299 * pixels[at] + 0.587 * pixels[at + 1] + 0.114 * pixels[at + 2]);
          if (grey > 0) { histogram[grey] += 1; count += 1; }  // black background left out
          var column = (at / 4) % canvas.width;
          if (column < band) { leftEdge += grey; } else if (column >= canvas.width - band) { rightEdge += grey; }
        }
        if (count) {
          var seen = 0, low = 0, high = 255;
          for (var level = 0; level < 256; level += 1) {
            seen += histogram[level];
            if (seen < 0.01 * count) { low = level + 1; }
            if (seen <= 0.99 * count) { high = level; }
          }
          looks[index].auto = { window: Math.max(2, high - low + 1), level: (low + high + 1) / 2 };
          setLook(index, looks[index].auto.window, looks[index].auto.level);
        }
        hang(index, leftEdge >= rightEdge ? "left" : "right");
        panes[index].dataset.analysed = "1";
      };
      picture.src = src;
    }

    // Back to back: the left column's chest wall on its right edge, the right column's on its
    // left edge, so a right and a left breast (or a query and its result) mirror each other.
    function hang(index, chestWallEdge) {
      var pane = panes[index], column = pane.dataset.column;
      if (!column) { return; }
      var wanted = column === "left" ? "right" : "left";
      var flip = chestWallEdge !== wanted;
      pane.dataset.flipped = flip ? "1" : "0";
      if (viewers[index].viewport.getFlip() !== flip) { viewers[index].viewport.setFlip(flip); }
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
      showScale(index);
    }

    // --- one physical scale: widths in mm when every shown image has a spacing ---
    function spacingOf(pane) { var mm = parseFloat(pane.dataset.spacingMm); return mm > 0 ? mm : null; }

    function wantedMode() {
      var shown = panes.filter(function (pane) { return pane.dataset.src; });
      return shown.length && shown.every(spacingOf) ? "mm" : "pixels";
    }

    function showScale(index) {
      var viewer = viewers[index], pane = panes[index];
      var box = pane.parentNode.querySelector("[data-pane-scale]");
      if (!box || !viewer.world.getItemCount() || !scaleMode) { return; }
      var perUnit = Math.abs(viewer.viewport.deltaPixelsFromPointsNoRotate(new OSD.Point(1, 0), true).x);
      var length = SCALE_STEPS[0];
      SCALE_STEPS.forEach(function (step) { if (step * perUnit <= 150) { length = step; } });
      var unit = scaleMode === "mm" ? " mm" : " px";
      box.querySelector("[data-scale-bar]").style.width = Math.round(length * perUnit) + "px";
      var text = length + unit + (scaleMode === "mm" ? "" : " · scale: pixels (no pixel spacing)");
      box.querySelector("[data-scale-text]").textContent = text;
      pane.dataset.scale = scaleMode;
      pane.dataset.scaleText = text;
    }

    // Each open image's width in the world: its pixels times its spacing (mm), or its pixels.
    function rescale() {
      var mode = wantedMode();
      viewers.forEach(function (viewer, index) {
        var item = viewer.world.getItemAt(0);
        if (!item) { return; }
        var width = item.source.dimensions.x * (mode === "mm" ? spacingOf(panes[index]) : 1);
        if (Math.abs(item.getBounds().width - width) > 1e-6) { item.setWidth(width, true); }
      });
      var changed = mode !== scaleMode;
      scaleMode = mode;
      return changed;
    }

    // Home for the group: one zoom that fits the largest image, one centre, so the panes
    // keep one scale (each pane's own home would fit each image and lose it).
    function homeAll() {
      var open = viewers.filter(function (viewer) { return viewer.world.getItemCount(); });
      if (!open.length) { return; }
      var zoom = Infinity, width = 0, height = 0;
      open.forEach(function (viewer) {
        var bounds = viewer.world.getHomeBounds();
        width = Math.max(width, bounds.width);
        height = Math.max(height, bounds.height);
      });
      open.forEach(function (viewer) {
        var box = viewer.viewport.getContainerSize();
        zoom = Math.min(zoom, Math.min(1 / width, (box.y / box.x) / height));
      });
      syncing = true;
      open.forEach(function (viewer) {
        viewer.viewport.zoomTo(zoom, null, true);
        viewer.viewport.panTo(new OSD.Point(width / 2, height / 2), true);
      });
      syncing = false;
      viewers.forEach(function (viewer, index) { showZoom(index); });
    }

    function follow(index) {
      showZoom(index);
      // Only the pane being handled leads: a follower echoing its (one frame old) view back
      // would stop the leader's zoom animation after its first frame.
      if (!shared.sync || syncing || index !== active) { return; }
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
      (shared.sync ? [viewers[active]] : viewers).forEach(function (viewer) {
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
      homeAll();
      looks.forEach(function (look, index) {
        look.invert = false;
        if (look.auto) { applyPreset(index, "auto"); } else { setLook(index, FULL_WINDOW, MID_LEVEL); }
      });
    }

    function setSync(on) {
      shared.sync = on;
      var box = control("sync");
      if (box) { box.checked = on; }
      if (on) { follow(active); }
    }

    function setOverlays(on) {
      shared.overlays = on;
      group.classList.toggle("overlays-hidden", !on);
      var button = group.querySelector('[data-action="overlays"]');
      if (button) { button.setAttribute("aria-pressed", on ? "true" : "false"); }
    }

    function toggleHelp(show) {
      var help = group.querySelector("[data-viewer-help]");
      if (!help) { return; }
      help.hidden = show === undefined ? !help.hidden : !show;
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

    function overlayOf(pane) { return pane.parentNode.querySelector("[data-pane-overlay]"); }

    function open(index, src) {
      var pane = panes[index];
      pane.dataset.loaded = "0";
      pane.dataset.rewindowed = "0";
      pane.depthState = null;
      delete pane.dataset.depthWindow;
      pane.dataset.src = src || "";
      pane.classList.toggle("empty-pane", !src);
      if (!src) {
        viewers[index].close();
        var readout = pane.parentNode.querySelector("[data-zoom-readout]");
        if (readout) { readout.textContent = "this case has no " + (pane.dataset.view || "such") + " view"; }
        return;
      }
      looks[index].auto = null;
      pane.dataset.analysed = "0";
      viewers[index].open({ type: "image", url: src, buildPyramid: true });
      analyse(index, src);
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
        var changed = rescale();
        addOutline(viewer, pane);
        var deep = depthOf(index);
        if (deep) { pane.dataset.depthWindow = deep.shown.join(); }
        var waiting = panes.some(function (other, at) { return other.dataset.src && !viewers[at].world.getItemCount(); });
        if ((!homed || changed) && !waiting) { homed = true; homeAll(); return; }
        showZoom(index);
        var leader = active;
        if (shared.sync && leader !== index && viewers[leader].world.getItemCount()) { follow(leader); }
      });
      viewer.addHandler("tile-drawn", function () { pane.dataset.loaded = "1"; });
      viewer.addHandler("open-failed", function () {
        pane.dataset.loaded = "failed";
        var readout = pane.parentNode.querySelector("[data-zoom-readout]");
        if (readout) { readout.textContent = "the image could not be loaded"; }
      });
      viewer.addHandler("viewport-change", function () { follow(index); });
      pane.addEventListener("pointerenter", function () { setActive(index); });
      pane.addEventListener("pointerdown", function () { setActive(index); }, true);

      // Right-drag: window (left/right) and level (up/down) of this pane, as on a PACS workstation.
      var dragStart = null;
      pane.addEventListener("contextmenu", function (event) { event.preventDefault(); });
      pane.addEventListener("pointerdown", function (event) {
        if (event.button === 2) {
          dragStart = { x: event.clientX, y: event.clientY, window: looks[index].window, level: looks[index].level };
        }
      }, true);
      pane.addEventListener("pointermove", function (event) {
        if (!dragStart || !(event.buttons & 2)) { dragStart = null; return; }
        setLook(index, dragStart.window + (event.clientX - dragStart.x) * 0.5,
                dragStart.level - (event.clientY - dragStart.y) * 0.5);
      }, true);
      pane.addEventListener("pointerup", function () { dragStart = null; }, true);

      showLook(index);
      if (pane.dataset.src) { open(index, pane.dataset.src); } else if (!pane.hasAttribute("data-result")) { open(index, ""); }
    });

    // --- choosing the result shown beside the query (search results page) ---
    var scope = group.closest("[data-viewer-scope]") || document;  // a launch page has one per breast
    var choices = Array.prototype.slice.call(scope.querySelectorAll("[data-compare-src], [data-compare-views]"));
    var resultPanes = panes.filter(function (pane) { return pane.hasAttribute("data-result"); });
    if (!resultPanes.length && panes.length > 1) { resultPanes = [panes[panes.length - 1]]; }
    var chosen = 0;
    function choose(position) {
      if (!choices.length || !resultPanes.length) { return; }
      chosen = (position + choices.length) % choices.length;
      var button = choices[chosen];
      choices.forEach(function (other) {
        var card = other.closest(".result");
        if (card) { card.classList.toggle("comparing", other === button); }
        other.setAttribute("aria-pressed", other === button ? "true" : "false");
      });
      var views = button.dataset.compareViews ? JSON.parse(button.dataset.compareViews) : null;
      resultPanes.forEach(function (pane) {
        var index = panes.indexOf(pane);
        pane.dataset.imageId = button.dataset.imageId || "";
        var caption = pane.parentNode.querySelector("[data-caption]");
        if (caption) { caption.textContent = button.dataset.compareLabel || ""; }
        var link = pane.parentNode.querySelector("[data-case-link]");
        if (link && button.dataset.caseHref) { link.href = button.dataset.caseHref; }
        var view = views ? views[pane.dataset.view] : null;
        var spacing = views ? view && view.spacing_mm : button.dataset.compareSpacingMm;
        var depth = views ? view && view.depth : button.dataset.compareDepth;
        if (spacing) { pane.dataset.spacingMm = spacing; } else { delete pane.dataset.spacingMm; }
        if (depth) { pane.dataset.depth = depth; } else { delete pane.dataset.depth; }
        var overlay = overlayOf(pane);
        if (overlay) { overlay.textContent = (view && view.overlay) || button.dataset.overlay || ""; }
        open(index, views ? (view ? view.src : "") : button.dataset.compareSrc);
      });
    }
    choices.forEach(function (button, position) {
      button.addEventListener("click", function () {
        choose(position);
        group.scrollIntoView({ behavior: "smooth", block: "start" });
      });
    });
    if (choices.length && resultPanes.length && !resultPanes[0].dataset.src) { choose(0); }

    // --- toolbar ---
    var actions = {
      "zoom-in": function () { zoomBy(1.25); },
      "zoom-out": function () { zoomBy(0.8); },
      "actual-pixels": actualPixels,
      "reset": reset,
      "invert": function () { looks[active].invert = !looks[active].invert; showLook(active); },
      "next": function () { choose(chosen + 1); },
      "previous": function () { choose(chosen - 1); },
      "overlays": function () { setOverlays(!shared.overlays); },
      "help": function () { toggleHelp(); },
    };
    Array.prototype.forEach.call(group.querySelectorAll("[data-action]"), function (button) {
      button.addEventListener("click", function () { actions[button.dataset.action](); });
    });
    var windowInput = control("window"), levelInput = control("level"), presets = control("preset");
    if (windowInput) { windowInput.addEventListener("input", function () { setLook(active, +windowInput.value, looks[active].level); }); }
    if (levelInput) { levelInput.addEventListener("input", function () { setLook(active, looks[active].window, +levelInput.value); }); }
    if (presets) { presets.addEventListener("change", function () { applyPreset(active, presets.value); }); }
    var syncBox = control("sync");
    if (syncBox) { syncBox.addEventListener("change", function () { setSync(syncBox.checked); }); }

    // Number keys 2, 3, ... choose the preset list's entries in order (the list is the one
    // place the presets are named, shown in the toolbar and the help).
    var presetValues = presets ? Array.prototype.map.call(presets.options, function (option) { return option.value; }) : [];
    function pickPreset(position) {
      presets.value = presetValues[position];
      applyPreset(active, presetValues[position]);
    }

    var keys = {
      "+": actions["zoom-in"], "=": actions["zoom-in"], "-": actions["zoom-out"],
      "1": actualPixels, "0": reset, "r": reset, "i": actions.invert,
      "ArrowLeft": function () { panBy(-0.1, 0); }, "ArrowRight": function () { panBy(0.1, 0); },
      "ArrowUp": function () { panBy(0, -0.1); }, "ArrowDown": function () { panBy(0, 0.1); },
      "[": function () { setLook(active, looks[active].window - 16, looks[active].level); },
      "]": function () { setLook(active, looks[active].window + 16, looks[active].level); },
      ",": function () { setLook(active, looks[active].window, looks[active].level - 8); },
      ".": function () { setLook(active, looks[active].window, looks[active].level + 8); },
      "s": function () { setSync(!shared.sync); }, "a": function () { applyPreset(active, "auto"); },
      "n": actions.next, "p": actions.previous, "o": actions.overlays,
      "?": actions.help, "h": actions.help, "Escape": function () { toggleHelp(false); },
    };
    presetValues.forEach(function (value, position) {
      if (position < 8) { keys[String(position + 2)] = function () { pickPreset(position); }; }
    });

    showActiveLook();
    group.addEventListener("pointerenter", function () { focused = controller; });
    group.addEventListener("pointerdown", function () { focused = controller; }, true);
    controller = {
      group: group,
      viewers: viewers,
      keys: keys,
      destroy: function () { viewers.forEach(function (viewer) { viewer.destroy(); }); },
    };
    return controller;
  }

  // --- keyboard (ignored while typing in a form field), one listener for every start() ---
  function typing(target) {
    if (!target || !target.tagName) { return false; }
    if (target.isContentEditable || target.tagName === "TEXTAREA" || target.tagName === "SELECT") { return true; }
    return target.tagName === "INPUT" && target.type !== "checkbox";  // a range keeps its arrows
  }
  document.addEventListener("keydown", function (event) {
    if (!focused || event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) { return; }
    var act = focused.keys[event.key];
    if (act) { event.preventDefault(); act(); }
  });

  window.mammosearchViewer = { start: start };
  start();
})();
