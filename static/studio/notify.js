// Telling a creator that a clip has finished while the studio sits in a background tab:
// a browser notification (permission asked once, after the first Generate, with the
// reason; never again after a "no"), the tab's title and icon, and an optional sound (off
// by default). A screen reader hears every finished clip, in the background or not.
(function () {
  var ASKED = "studio.notify.asked";
  var SOUND = "studio.notify.sound";
  var PREFIX = /^✓ \d+ ready · /;
  var seenUnfinished = {};
  var readyWhileAway = 0;
  var audio = null;

  function read(key) { try { return window.localStorage.getItem(key); } catch (e) { return null; } }
  function write(key, value) { try { window.localStorage.setItem(key, value); } catch (e) { /* private mode */ } }
  function supported() { return "Notification" in window; }
  function away() { return document.visibilityState === "hidden"; }
  function icon() { return document.querySelector('link[rel="icon"]'); }

  function say(text) {
    var live = document.getElementById("studio-live");
    if (!live) { return; }
    live.textContent = "";
    setTimeout(function () { live.textContent = text; }, 50);
  }

  function showStatus() {
    var status = document.getElementById("notify-status");
    if (!status) { return; }
    if (!supported()) { status.textContent = "This browser cannot show notifications."; return; }
    var words = {
      granted: "Notifications are on: you are told when a clip is ready.",
      denied: "Notifications are off in this browser (its site settings can turn them on).",
      "default": read(ASKED) ? "Notifications are off." : ""
    };
    status.textContent = words[Notification.permission] || "";
  }

  function markTab() {
    document.title = "✓ " + readyWhileAway + " ready · " + document.title.replace(PREFIX, "");
    var link = icon();
    if (link && link.getAttribute("data-ready-href")) {
      if (!link.getAttribute("data-href")) { link.setAttribute("data-href", link.getAttribute("href")); }
      link.setAttribute("href", link.getAttribute("data-ready-href"));
    }
  }

  function unmarkTab() {
    readyWhileAway = 0;
    document.title = document.title.replace(PREFIX, "");
    var link = icon();
    if (link && link.getAttribute("data-href")) { link.setAttribute("href", link.getAttribute("data-href")); }
  }

  function chime() {
    try {
      audio = audio || new (window.AudioContext || window.webkitAudioContext)();
      var now = audio.currentTime;
      [880, 1318.5].forEach(function (pitch, i) {
        var tone = audio.createOscillator();
        var gain = audio.createGain();
        tone.frequency.value = pitch;
        gain.gain.setValueAtTime(0.0001, now + i * 0.16);
        gain.gain.exponentialRampToValueAtTime(0.15, now + i * 0.16 + 0.02);
        gain.gain.exponentialRampToValueAtTime(0.0001, now + i * 0.16 + 0.3);
        tone.connect(gain).connect(audio.destination);
        tone.start(now + i * 0.16);
        tone.stop(now + i * 0.16 + 0.32);
      });
    } catch (e) { /* no sound on this device: the title and the notification still say it */ }
  }

  // The title counts the clips still generating ("(2 generating) ..."). A card's poll does
  // not count them again (that read every creator's row on every poll): one that finishes
  // takes one off here; pages and Generate write the whole count.
  function countOneFinished() {
    var counted = /\((\d+) generating\) /;
    var match = document.title.match(counted);
    if (!match) { return; }
    var left = parseInt(match[1], 10) - 1;
    document.title = document.title.replace(counted, left > 0 ? "(" + left + " generating) " : "");
  }

  function finished(card) {
    countOneFinished();
    var name = (card.querySelector(".card-link") || {}).textContent || "A clip";
    var ready = card.classList.contains("card--ready");
    var what = ready ? name + " is ready" : name + " " + ((card.getAttribute("data-status") || "finished").toLowerCase());
    say(what + ".");
    if (!away()) { return; }
    readyWhileAway += 1;
    markTab();
    if (supported() && Notification.permission === "granted") {
      try {
        var prompt = (card.querySelector(".prompt") || {}).textContent || "";
        var note = new Notification(what, { body: prompt.trim().slice(0, 140), tag: card.id, icon: (icon() || {}).href });
        note.onclick = function () {
          window.focus();
          var current = document.getElementById(card.id);
          if (current) { current.focus(); current.scrollIntoView({ block: "center" }); }
          note.close();
        };
      } catch (e) { /* some browsers only notify from a service worker: the tab still says it */ }
    }
    if (read(SOUND) === "on") { chime(); }
  }

  // Cards seen unfinished, then drawn again finished, are the clips that just finished.
  function watch(root) {
    var cards = [];
    if (root.matches && root.matches("[data-card]")) { cards.push(root); }
    if (root.querySelectorAll) { cards = cards.concat(Array.prototype.slice.call(root.querySelectorAll("[data-card]"))); }
    cards.forEach(function (card) {
      if (card.getAttribute("data-finished") === "false") {
        seenUnfinished[card.id] = true;
      } else if (seenUnfinished[card.id]) {
        delete seenUnfinished[card.id];
        finished(card);
      }
    });
  }

  function ask() {
    if (!supported() || Notification.permission !== "default" || read(ASKED)) { return; }
    var box = document.getElementById("notify-ask");
    if (box) { box.hidden = false; }
  }

  function answer(yes) {
    write(ASKED, "1");
    var box = document.getElementById("notify-ask");
    if (box) { box.hidden = true; }
    if (yes && supported()) {
      var asked = Notification.requestPermission(showStatus);
      if (asked && asked.then) { asked.then(showStatus); }
    }
    showStatus();
  }

  document.addEventListener("studio:clip-queued", ask);
  document.addEventListener("click", function (e) {
    var choice = e.target.closest && e.target.closest("[data-notify-answer]");
    if (choice) { answer(choice.getAttribute("data-notify-answer") === "yes"); }
  });
  document.addEventListener("change", function (e) {
    if (e.target.id !== "sound-toggle") { return; }
    write(SOUND, e.target.checked ? "on" : "off");
    if (e.target.checked) { chime(); }  // a first sound now, while the click allows one
  });
  document.addEventListener("visibilitychange", function () { if (!away()) { unmarkTab(); } });
  // htmx writes the title of an answer that carries one (Generate): keep the mark on it.
  document.addEventListener("htmx:afterSettle", function () { if (readyWhileAway) { markTab(); } });

  if (window.htmx) { window.htmx.onLoad(watch); }
  document.addEventListener("DOMContentLoaded", function () {
    watch(document);
    var toggle = document.getElementById("sound-toggle");
    if (toggle) { toggle.checked = read(SOUND) === "on"; }
    showStatus();
  });
})();
