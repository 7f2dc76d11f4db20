// The hand-off frame picker (templates/studio/_handoff_picker.html): the player, the slider
// and the frame number show the same frame, and touching any of them chooses "Continue from
// this frame". Frame n is shown from n / fps to (n + 1) / fps: the player is sought to the
// middle of that span, so rounding in the browser never shows its neighbour.
(function () {
  "use strict";

  function setUp(picker) {
    if (picker.dataset.handoffReady) return;
    picker.dataset.handoffReady = "1";
    var fps = parseFloat(picker.dataset.fps) || 24;
    var video = picker.querySelector("[data-handoff-video]");
    var slider = picker.querySelector("[data-handoff-slider]");
    var number = picker.querySelector("[data-handoff-number]");
    var use = picker.querySelector("[data-handoff-any]");
    var preview = picker.querySelector("[data-handoff-preview]");
    // The large picture follows the strip: the chosen frame, or none while "any frame" is.
    picker.addEventListener("change", function (event) {
      var radio = event.target;
      if (!preview || radio.name !== "handoff_frame") return;
      preview.hidden = radio.value === "any";
      if (radio.value === "any") return;
      var isLast = radio.value === preview.dataset.last;
      var tile = radio.parentNode.querySelector("img");
      preview.src = isLast && preview.dataset.lastUrl ? preview.dataset.lastUrl : (tile ? tile.src : preview.src);
      preview.alt = isLast
        ? "First frame: last frame of the clip being continued"
        : "First frame: frame " + radio.value + " of the clip being continued";
    });
    if (!video || !slider || !number || !use) return;
    slider.hidden = false;
    var last = Number(number.max) || 0;
    var seeking = false;

    function clamp(n) {
      return Math.max(0, Math.min(last, Math.round(n)));
    }

    // A number typed by hand stays as typed (one outside the clip is refused beside the
    // field by the server); the slider and the player show the nearest frame there is.
    function choose(n, seek, typed) {
      n = clamp(n);
      if (!typed) number.value = String(n);
      slider.value = String(n);
      if (!use.checked) {
        use.checked = true;
        if (preview) preview.hidden = true;
      }
      label(picker);
      if (seek) {
        seeking = true;
        video.currentTime = (n + 0.5) / fps;
      }
    }

    slider.addEventListener("input", function () { choose(Number(slider.value), true); });
    number.addEventListener("input", function () {
      if (number.value !== "") choose(Number(number.value), true, true);
    });
    video.addEventListener("seeked", function () {
      if (seeking) {
        seeking = false;
        return;
      }
      if (video.paused) choose(Math.floor(video.currentTime * fps + 1e-3), false);
    });
    video.addEventListener("pause", function () {
      choose(Math.floor(video.currentTime * fps + 1e-3), false);
    });
    video.addEventListener("loadedmetadata", function () {
      if (use.checked) choose(Number(number.value), true);
    });
  }

  // The chain view's button says which frame it continues from.
  function label(picker) {
    var button = document.querySelector('[data-handoff-submit="' + picker.id + '"]');
    if (!button) return;
    var checked = picker.querySelector("input[name=handoff_frame]:checked");
    var number = picker.querySelector("[data-handoff-number]");
    var frame = !checked ? "" : checked.value === "any" ? (number ? number.value : "") : checked.value;
    button.textContent = frame === "" || frame === button.dataset.last
      ? "Continue from last frame"
      : "Continue from frame " + frame;
  }

  document.addEventListener("change", function (event) {
    var picker = event.target.closest && event.target.closest("[data-handoff]");
    if (picker) label(picker);
  });
  document.addEventListener("input", function (event) {
    var picker = event.target.closest && event.target.closest("[data-handoff]");
    if (picker) label(picker);
  });

  function init() {
    Array.prototype.forEach.call(document.querySelectorAll("[data-handoff]"), function (picker) {
      setUp(picker);
      label(picker); // a swap redraws the button, not the picker it names (hx-preserve)
    });
  }

  document.addEventListener("htmx:afterSettle", init);
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
