// Keyboard shortcuts of the gallery and the chain view, as in video tools: j / k move to
// the next / previous clip, space plays or pauses it, c continues from its last frame,
// ? lists them. Never while typing in a field, and never with Ctrl, Alt or Cmd held.
(function () {
  function area() { return document.querySelector("[data-shortcuts]"); }

  function items() {
    var root = area();
    if (!root) { return []; }
    return Array.prototype.filter.call(root.querySelectorAll("[data-shortcut-item]"), function (el) {
      return el.offsetParent !== null;  // shown (not filtered away or hidden)
    });
  }

  function typing(target) {
    if (!target || !target.closest) { return false; }
    return Boolean(target.isContentEditable || target.closest("input, textarea, select, [contenteditable]"));
  }

  function current() {
    var active = document.activeElement;
    return active && active.closest ? active.closest("[data-shortcut-item]") : null;
  }

  function say(text) {
    var live = document.getElementById("studio-live");
    if (!live) { return; }
    live.textContent = "";
    setTimeout(function () { live.textContent = text; }, 50);
  }

  function name(item) {
    return item.getAttribute("data-shortcut-name") || (item.querySelector(".card-link") || {}).textContent || "This clip";
  }

  function move(step) {
    var all = items();
    if (!all.length) { return; }
    var at = all.indexOf(current());
    var next = at < 0 ? (step > 0 ? 0 : all.length - 1) : Math.min(all.length - 1, Math.max(0, at + step));
    all[next].focus({ preventScroll: true });
    all[next].scrollIntoView({ block: "nearest" });
  }

  function playerOf(item) {
    var video = item.querySelector("video");
    var source = item.getAttribute("data-video");
    if (video || !source) { return video; }
    // A chain step shows a still: put its clip's player in place of the still.
    var still = item.querySelector("[data-still]");
    video = document.createElement("video");
    video.controls = true;
    video.playsInline = true;
    video.src = source;
    video.className = "inline-player";
    video.setAttribute("aria-label", name(item));
    var img = still && still.querySelector("img");
    if (img) { video.poster = img.src; }
    if (still) { still.replaceWith(video); } else { item.prepend(video); }
    return video;
  }

  function togglePlay(item) {
    var video = playerOf(item);
    if (!video) { say(name(item) + " has no video yet."); return; }
    if (video.paused) {
      var playing = video.play();
      if (playing && playing.catch) { playing.catch(function () { say("The video could not start."); }); }
    } else {
      video.pause();
    }
  }

  function continueFrom(item) {
    var link = item.querySelector("[data-continue]");
    var href = link ? link.getAttribute("href") : item.getAttribute("data-continue-url");
    if (href) { window.location.assign(href); } else { say(name(item) + " is not ready, so it cannot be continued yet."); }
  }

  function help() { return document.getElementById("shortcuts-help"); }

  function openHelp() {
    var dialog = help();
    if (dialog && !dialog.open) { dialog.showModal(); }
  }

  document.addEventListener("click", function (e) {
    if (e.target.closest && e.target.closest("[data-shortcuts-open]")) { openHelp(); }
  });

  document.addEventListener("keydown", function (e) {
    if (!area() || e.defaultPrevented || e.ctrlKey || e.metaKey || e.altKey || typing(e.target)) { return; }
    var dialog = help();
    if (dialog && dialog.open) { return; }  // the dialog has the keyboard (Esc closes it)
    var item = current();
    if (e.key === "j" || e.key === "k") {
      e.preventDefault();
      move(e.key === "j" ? 1 : -1);
    } else if (e.key === "?") {
      e.preventDefault();
      openHelp();
    } else if (e.key === " " && item && e.target === item) {
      // Only on the clip itself: on a button, a link or the player, space keeps its own meaning.
      e.preventDefault();
      togglePlay(item);
    } else if (e.key === "c" && item) {
      e.preventDefault();
      continueFrom(item);
    }
  });
})();
