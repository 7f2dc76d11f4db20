// The chain view's players: "Play the sequence" (the chosen takes one after the other, cut
// where the join cuts, with no visible gap) and "Compare" (two takes of a step on one clock).
//
// The cuts come from the page: each timeline button carries its step's start and end in the
// clip (data-start, data-end, from models.sequence_cuts, the rule the join uses too). The
// stage survives the live part's swaps (hx-preserve), so a poll never interrupts playback;
// the timeline is read again from the page whenever the next step is needed.
(function () {
  "use strict";

  // A step that starts after frame 0 is sought a hair past its first kept frame, so rounding
  // in the browser never shows the frame before it (the repeated seam picture).
  var SEEK_PAST = 0.001;

  function $all(root, selector) {
    return Array.prototype.slice.call(root.querySelectorAll(selector));
  }

  function seekTime(segment) {
    return segment.start > 0 ? segment.start + SEEK_PAST : 0;
  }

  function seconds(value) {
    return (Math.round(value * 10) / 10).toFixed(1) + " s";
  }

  // --- Play the sequence ------------------------------------------------------------------

  function segments() {
    return $all(document, "[data-seq-step]").map(function (button) {
      return {
        step: Number(button.dataset.seqStep),
        clip: button.dataset.clip,
        src: button.dataset.src || "",
        poster: button.dataset.poster || "",
        start: parseFloat(button.dataset.start || "0"),
        end: parseFloat(button.dataset.end || "0"),
        fps: parseFloat(button.dataset.fps || "24") || 24,
        button: button,
      };
    });
  }

  function SequencePlayer(stage) {
    this.stage = stage;
    this.videos = $all(stage, "video.stage-video");
    this.button = stage.querySelector("[data-seq-play]");
    this.status = stage.querySelector("[data-seq-status]");
    this.current = null; // the segment playing (or paused) on the front video
    this.playing = false;
    this.cutTimer = null;
    this.frameRequest = null;
    var self = this;
    this.button.addEventListener("click", function () {
      if (self.playing) self.pause();
      else if (self.current && !self.front().ended && self.front().currentTime < self.current.end) self.resume();
      else self.playFrom(0);
    });
    this.videos.forEach(function (video) {
      video.addEventListener("ended", function () {
        if (video === self.front() && self.playing) self.cut();
      });
      video.addEventListener("timeupdate", function () {
        if (video !== self.front() || !self.current) return;
        self.showProgress();
        // A fallback for browsers without requestVideoFrameCallback: cut on the clock.
        if (self.playing && !self.cutTimer && video.currentTime >= self.current.end) self.cut();
      });
    });
    document.addEventListener("click", function (event) {
      var button = event.target.closest("[data-seq-step]");
      if (!button || button.disabled) return;
      var index = segments().findIndex(function (s) { return s.button === button; });
      if (index >= 0) self.playFrom(index);
    });
    this.refresh();
  }

  SequencePlayer.prototype.front = function () {
    return this.videos[0].classList.contains("is-front") ? this.videos[0] : this.videos[1];
  };

  SequencePlayer.prototype.back = function () {
    return this.front() === this.videos[0] ? this.videos[1] : this.videos[0];
  };

  // After the live part was swapped: the timeline is new, the stage is the same.
  SequencePlayer.prototype.refresh = function () {
    var all = segments();
    var playable = all.filter(function (s) { return s.src; });
    this.button.disabled = playable.length === 0;
    if (!this.current && playable.length) {
      this.front().poster = playable[0].poster;
      this.say(all.length + " step" + (all.length === 1 ? "" : "s") + " · " + seconds(total(all)));
    } else if (!playable.length) {
      this.say("Nothing to play until step 1 is ready.");
    }
    this.highlight();
  };

  function total(all) {
    return all.reduce(function (sum, s) { return sum + Math.max(0, s.end - s.start); }, 0);
  }

  SequencePlayer.prototype.index = function () {
    var current = this.current;
    if (!current) return -1;
    return segments().findIndex(function (s) { return s.clip === current.clip; });
  };

  SequencePlayer.prototype.highlight = function () {
    var index = this.index();
    segments().forEach(function (s, i) {
      var on = i === index;
      s.button.classList.toggle("is-current", on);
      if (on) s.button.setAttribute("aria-current", "step");
      else s.button.removeAttribute("aria-current");
    });
    this.stage.dataset.step = index >= 0 ? String(index + 1) : "";
    this.stage.dataset.clip = this.current ? this.current.clip : "";
  };

  SequencePlayer.prototype.say = function (text) {
    this.status.textContent = text;
  };

  SequencePlayer.prototype.showProgress = function () {
    var s = this.current;
    if (!s) return;
    var done = (this.front().currentTime - s.start) / Math.max(0.001, s.end - s.start);
    var button = segments().find(function (x) { return x.clip === s.clip; });
    if (button) button.button.style.setProperty("--progress", String(Math.min(1, Math.max(0, done))));
  };

  // Load a segment into a video and seek to its first kept frame; resolves once that frame
  // is decoded (the video can show it at once).
  function load(video, segment) {
    return new Promise(function (resolve) {
      video.dataset.ready = "";
      function seek() {
        video.addEventListener("seeked", function done() {
          video.removeEventListener("seeked", done);
          video.dataset.ready = segment.clip;
          resolve(video);
        });
        video.currentTime = seekTime(segment);
      }
      if (video.dataset.src === segment.src && video.readyState >= 1) {
        seek();
        return;
      }
      video.dataset.src = segment.src;
      video.preload = "auto";
      video.poster = segment.poster;
      video.src = segment.src;
      video.addEventListener("loadedmetadata", function meta() {
        video.removeEventListener("loadedmetadata", meta);
        seek();
      });
      video.load();
    });
  }

  // Play from a step: it is loaded and sought on the hidden video, then brought to the
  // front, so even a jump never shows the frame before the cut (or a blank one).
  SequencePlayer.prototype.playFrom = function (index) {
    var all = segments();
    var segment = all[index];
    this.stopWatching();
    if (!segment) return;
    if (!segment.src) {
      this.stop("Step " + segment.step + " is not ready yet.");
      return;
    }
    var self = this;
    var front = this.front();
    var back = this.back();
    this.current = segment;
    this.playing = true;
    this.button.textContent = "Pause";
    this.highlight();
    this.say("Step " + segment.step + " of " + all.length);
    var ready = back.dataset.ready === segment.clip ? Promise.resolve(back) : load(back, segment);
    ready.then(function () {
      if (self.current !== segment || !self.playing) return;
      return back.play().then(function () {
        if (self.current !== segment) return;
        self.toFront(back, front);
        self.watch();
        self.prepare();
      });
    }).catch(function () {
      self.stop("The browser could not play step " + segment.step + ".");
    });
  };

  SequencePlayer.prototype.toFront = function (video, other) {
    video.classList.add("is-front");
    other.classList.remove("is-front");
    video.removeAttribute("aria-hidden");
    other.setAttribute("aria-hidden", "true");
    other.pause();
    other.dataset.ready = "";
  };

  // Have the next step loaded and sought on the hidden video well before this one ends.
  SequencePlayer.prototype.prepare = function () {
    var next = segments()[this.index() + 1];
    var back = this.back();
    if (next && next.src && back.dataset.ready !== next.clip) load(back, next);
  };

  SequencePlayer.prototype.watch = function () {
    var self = this;
    var video = this.front();
    var segment = this.current;
    if (!video.requestVideoFrameCallback) return; // the timeupdate and ended fallbacks cut
    function onFrame(now, meta) {
      if (self.current !== segment || !self.playing) return;
      var frame = 1 / segment.fps;
      // The last kept frame is on screen: cut when its time is up, not a frame later.
      if (meta.mediaTime >= segment.end - frame * 1.5) {
        var wait = Math.max(0, (segment.end - meta.mediaTime) * 1000);
        self.cutTimer = window.setTimeout(function () { self.cut(); }, wait);
        return;
      }
      self.frameRequest = video.requestVideoFrameCallback(onFrame);
    }
    this.frameRequest = video.requestVideoFrameCallback(onFrame);
  };

  SequencePlayer.prototype.stopWatching = function () {
    if (this.cutTimer) window.clearTimeout(this.cutTimer);
    this.cutTimer = null;
    var front = this.front();
    if (this.frameRequest && front.cancelVideoFrameCallback) front.cancelVideoFrameCallback(this.frameRequest);
    this.frameRequest = null;
  };

  // The cut: the next step, already sought on the hidden video, plays and comes to the
  // front in the same frame as the current one stops.
  SequencePlayer.prototype.cut = function () {
    if (!this.current) return;
    var from = this.current;
    var index = this.index();
    var next = segments()[index + 1];
    this.stopWatching();
    if (index < 0 || !next) {
      this.front().pause();
      this.stop(index < 0 ? "The sequence changed: play it again." : "End of the sequence.");
      return;
    }
    if (!next.src) {
      this.front().pause();
      this.stop("Step " + next.step + " is not ready yet.");
      return;
    }
    var front = this.front();
    var back = this.back();
    var prepared = back.dataset.ready === next.clip;
    this.stage.dispatchEvent(new CustomEvent("sequence:cut", {
      detail: { from: from.step, to: next.step, prepared: prepared, readyState: back.readyState, at: front.currentTime },
    }));
    if (!prepared) {
      this.playFrom(index + 1);
      return;
    }
    var self = this;
    this.current = next;
    back.play().then(function () {
      if (self.current !== next) return;
      self.watch();
      self.prepare();
    });
    this.toFront(back, front);
    this.highlight();
    this.say("Step " + next.step + " of " + segments().length);
  };

  SequencePlayer.prototype.pause = function () {
    this.playing = false;
    this.stopWatching();
    this.front().pause();
    this.button.textContent = "Play the sequence";
    if (this.current) this.say("Paused at step " + this.current.step);
  };

  SequencePlayer.prototype.resume = function () {
    var self = this;
    this.playing = true;
    this.button.textContent = "Pause";
    this.front().play().then(function () {
      self.watch();
      self.prepare();
    });
  };

  SequencePlayer.prototype.stop = function (message) {
    this.playing = false;
    this.stopWatching();
    this.button.textContent = "Play the sequence";
    this.say(message);
  };

  // --- Compare ----------------------------------------------------------------------------

  function Compare(dialog) {
    this.dialog = dialog;
    this.sides = $all(dialog, "[data-compare-side]").map(function (figure) {
      return { figure: figure, video: figure.querySelector("video"), pick: figure.querySelector("select"), take: null };
    });
    this.playButton = dialog.querySelector("[data-compare-play]");
    this.seek = dialog.querySelector("[data-compare-seek]");
    this.time = dialog.querySelector("[data-compare-time]");
    this.takes = [];
    this.loop = null;
    var self = this;
    document.addEventListener("click", function (event) {
      var button = event.target.closest("[data-compare]");
      if (button) self.open(document.getElementById(button.dataset.compare), button);
    });
    dialog.querySelector("[data-compare-close]").addEventListener("click", function () { dialog.close(); });
    dialog.addEventListener("close", function () { self.pause(); });
    this.playButton.addEventListener("click", function () {
      if (self.isPlaying()) self.pause();
      else self.play();
    });
    this.seek.addEventListener("input", function () {
      self.goTo((Number(self.seek.value) / 1000) * self.length());
    });
    $all(dialog, "input[name=compare-sound]").forEach(function (radio) {
      radio.addEventListener("change", function () { self.sound(); });
    });
    this.sides.forEach(function (side, n) {
      side.pick.addEventListener("change", function () {
        var position = self.position();
        self.show(n, self.takes[Number(side.pick.value)]).then(function () { self.goTo(position); });
      });
      side.video.addEventListener("ended", function () {
        if (self.master() === side) self.pause();
      });
    });
  }

  Compare.prototype.open = function (step, opener) {
    if (!step) return;
    var takes = $all(step, "[data-take][data-src]").map(function (li) {
      return {
        label: li.dataset.label + " · " + (li.querySelector(".take-title a") || {}).textContent,
        src: li.dataset.src,
        poster: li.dataset.poster,
        start: parseFloat(li.dataset.start || "0"),
        chosen: li.classList.contains("take--chosen"),
      };
    });
    if (takes.length < 2) return;
    this.takes = takes;
    this.opener = opener;
    var chosen = Math.max(0, takes.findIndex(function (t) { return t.chosen; }));
    var other = chosen === 0 ? 1 : 0;
    var title = step.querySelector("h3");
    this.dialog.querySelector("#compare-title").textContent = "Compare takes of " + (title ? title.firstChild.textContent.trim().toLowerCase() : "this step");
    var self = this;
    this.sides.forEach(function (side, n) {
      side.pick.innerHTML = "";
      takes.forEach(function (take, i) {
        side.pick.add(new Option(take.label, String(i)));
      });
      side.pick.value = String(n === 0 ? chosen : other);
    });
    this.dialog.querySelector("input[name=compare-sound][value='0']").checked = true;
    this.dialog.showModal();
    Promise.all([this.show(0, takes[chosen]), this.show(1, takes[other])]).then(function () {
      self.goTo(0);
    });
    this.sound();
  };

  Compare.prototype.show = function (n, take) {
    var side = this.sides[n];
    side.take = take;
    side.video.poster = take.poster;
    return load(side.video, { clip: take.src, src: take.src, poster: take.poster, start: take.start });
  };

  Compare.prototype.sound = function () {
    var picked = this.dialog.querySelector("input[name=compare-sound]:checked");
    this.sides.forEach(function (side, n) {
      side.video.muted = !picked || String(n) !== picked.value;
    });
  };

  // Each take's length from its own start; the clock is the longer one, so the shorter
  // one holds its last frame while the other plays on.
  Compare.prototype.lengthOf = function (side) {
    return Math.max(0, (side.video.duration || 0) - side.take.start);
  };

  Compare.prototype.length = function () {
    var self = this;
    return Math.max.apply(null, this.sides.map(function (s) { return self.lengthOf(s); }));
  };

  Compare.prototype.master = function () {
    return this.lengthOf(this.sides[0]) >= this.lengthOf(this.sides[1]) ? this.sides[0] : this.sides[1];
  };

  Compare.prototype.position = function () {
    var master = this.master();
    return master.take ? Math.max(0, master.video.currentTime - master.take.start) : 0;
  };

  Compare.prototype.isPlaying = function () {
    return this.sides.some(function (s) { return !s.video.paused; });
  };

  Compare.prototype.goTo = function (position) {
    var self = this;
    this.sides.forEach(function (side) {
      if (!side.take) return;
      side.video.currentTime = side.take.start + Math.min(position, self.lengthOf(side));
    });
    this.showTime(position);
  };

  Compare.prototype.play = function () {
    var self = this;
    var position = this.position();
    if (position >= this.length() - 0.05) position = 0;
    this.goTo(position);
    // Both start together, from the same position, once both can play.
    Promise.all(this.sides.map(function (side) {
      return side.video.readyState >= 3 ? Promise.resolve() : new Promise(function (resolve) {
        side.video.addEventListener("canplay", function ready() {
          side.video.removeEventListener("canplay", ready);
          resolve();
        });
      });
    })).then(function () {
      return Promise.all(self.sides.map(function (side) {
        return self.position() < self.lengthOf(side) ? side.video.play() : Promise.resolve();
      }));
    }).then(function () {
      self.playButton.textContent = "Pause both";
      self.follow();
    });
  };

  // One clock: the longer take leads; the other is brought back to it when it drifts.
  Compare.prototype.follow = function () {
    var self = this;
    if (this.loop) window.cancelAnimationFrame(this.loop);
    function tick() {
      var master = self.master();
      var position = self.position();
      self.sides.forEach(function (side) {
        if (side === master || !side.take) return;
        if (position >= self.lengthOf(side)) {
          if (!side.video.paused) side.video.pause(); // it has ended: its last frame stays
          return;
        }
        var target = side.take.start + position;
        if (Math.abs(side.video.currentTime - target) > 0.08) side.video.currentTime = target;
        if (side.video.paused && !master.video.paused) side.video.play();
      });
      self.showTime(position);
      if (!master.video.paused) self.loop = window.requestAnimationFrame(tick);
    }
    this.loop = window.requestAnimationFrame(tick);
  };

  Compare.prototype.showTime = function (position) {
    var length = this.length() || 1;
    this.seek.value = String(Math.round((position / length) * 1000));
    this.time.textContent = seconds(position) + " / " + seconds(length);
    this.dialog.dataset.position = position.toFixed(3);
  };

  Compare.prototype.pause = function () {
    if (this.loop) window.cancelAnimationFrame(this.loop);
    this.loop = null;
    this.sides.forEach(function (side) { side.video.pause(); });
    this.playButton.textContent = "Play both";
  };

  // --- Wiring -----------------------------------------------------------------------------

  var player = null;

  function init() {
    var stage = document.querySelector("[data-sequence-stage]");
    if (stage && !player) player = new SequencePlayer(stage);
    var dialog = document.getElementById("compare-dialog");
    if (dialog && !dialog.compare && typeof dialog.showModal === "function") dialog.compare = new Compare(dialog);
    reveal();
  }

  // "Compare" needs this script: shown only when it runs.
  function reveal() {
    if (!document.getElementById("compare-dialog")) return;
    $all(document, "[data-compare][hidden]").forEach(function (button) { button.hidden = false; });
  }

  document.addEventListener("htmx:afterSettle", function () {
    reveal();
    if (player) player.refresh();
  });

  // Escape leaves the title unchanged.
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape" || !event.target.matches("[data-title-input]")) return;
    var cancel = document.querySelector("[data-title-cancel]");
    if (cancel) cancel.click();
  });

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
