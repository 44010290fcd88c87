// The review page's one-picture mode (GET /label): label with the keyboard, k keep, d drop, u undo,
// s skip, arrows to move. It uses only the page's JSON API (docs/curation.md): GET /api/queue for what
// to show, POST /api/decide for each label, GET /api/model to notice a retrain. No framework, no build.
"use strict";

const main = document.querySelector("main");
const token = main.dataset.token;
const query = new URLSearchParams(location.search);
const order = query.get("order") || "uncertain";
const picture = document.getElementById("picture");
const faces = document.getElementById("faces");
const facts = document.getElementById("facts");
const said = document.getElementById("said");
const banner = document.getElementById("model");

let queue = [];          // the pictures to go through, in the queue's order
let position = 0;        // which of them is shown
const done = [];         // {artwork_id, page, before}: what each label changed, for undo
let modelVersion = null; // the last model seen, to notice a retrain
let checkedOnce = false;  // a model seen on the first check was there before the page opened

function filters() {
  const params = new URLSearchParams({order: order, n: "50"});
  for (const name of ["status", "tag", "min_score", "max_score", "manual"]) {
    if (query.get(name)) params.set(name, query.get(name));
  }
  return params;
}

async function loadQueue() {
  const answer = await fetch("/api/queue?" + filters(), {headers: {Accept: "application/json"}});
  const body = await answer.json();
  if (!answer.ok) { say(body.error || "the queue could not be read"); return; }
  queue = body.pictures;
  position = 0;
  main.dataset.queue = queue.map(p => p.artwork_id + ":" + p.page).join(" ");
  show();
}

function text(tag, content, className) {
  const element = document.createElement(tag);
  element.textContent = content;
  if (className) element.className = className;
  return element;
}

function show() {
  faces.replaceChildren();
  facts.replaceChildren();
  const current = queue[position];
  if (!current) {
    picture.removeAttribute("src");
    main.dataset.current = "";
    facts.append(text("p", "Nothing left to label here."));
    return;
  }
  main.dataset.current = current.artwork_id + ":" + current.page;
  picture.src = "/picture?" + new URLSearchParams({artwork_id: current.artwork_id, page: current.page});
  picture.alt = current.title || current.artwork_id;
  for (const url of current.faces || []) {
    const crop = document.createElement("img");
    crop.src = url;
    crop.alt = "face";
    faces.append(crop);
  }
  const score = current.scores.classifier;
  facts.append(
    text("p", `${position + 1} of ${queue.length}: ${current.artwork_id} p${current.page} ${current.title || ""}`, "title"),
    text("p", `status: ${current.status}${current.manual ? " (by hand: " + current.manual + ")" : ""}`),
    text("p", score === null ? "no classifier score yet" : `classifier: ${score.toFixed(3)}`),
    text("p", current.reason || "", "reason"),
  );
}

function say(message) {
  said.textContent = message;
}

async function decide(decision) {
  const current = queue[position];
  if (!current) return;
  const answer = await fetch("/api/decide", {
    method: "POST",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify({artwork_id: current.artwork_id, page: current.page, decision: decision, token: token}),
  });
  const body = await answer.json();
  if (!answer.ok) { say(body.error); return false; }
  say(body.said);
  return body;
}

async function label(decision) {
  const current = queue[position];
  if (!current) return;
  const before = current.manual;
  const body = await decide(decision);
  if (!body) return;
  done.push({index: position, before: before});
  current.manual = body.manual;
  current.status = body.status;
  move(1);
}

async function undo() {
  const last = done.pop();
  if (!last) { say("nothing to undo"); return; }
  position = last.index;
  const body = await decide(last.before || "clear");
  if (!body) return;
  queue[position].manual = body.manual;
  queue[position].status = body.status;
  show();
}

function move(step) {
  position = Math.max(0, Math.min(queue.length, position + step));
  show();
}

async function watchModel() {
  try {
    const answer = await fetch("/api/model");
    const body = await answer.json();
    const learning = body.learning || {};
    const last = learning.last;
    main.dataset.learning = learning.state || "";
    if (learning.state === "failed") {
      banner.textContent = "The last retrain failed: " + learning.error + ". Every label is stored.";
    } else if (learning.state === "training") {
      banner.textContent = `Learning from ${learning.trained_on} labels…`;
    } else if (last && last.version !== modelVersion) {
      modelVersion = last.version;
      main.dataset.model = last.version;
      banner.textContent = `New model live (${last.labels} labels): +${last.change.kept} kept, −${last.change.dropped}.`;
      if (checkedOnce) await loadQueue();  // a retrain since the page opened: the order follows its scores
    } else if (learning.state === "waiting") {
      banner.textContent = "Not learning yet: " + learning.error;
    }
    checkedOnce = true;
  } catch (error) {
    banner.textContent = "cannot reach the review server";
  }
}

document.addEventListener("keydown", event => {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const actions = {k: () => label("keep"), d: () => label("drop"), u: undo, s: () => move(1),
                   ArrowRight: () => move(1), ArrowLeft: () => move(-1)};
  const action = actions[event.key];
  if (action) { event.preventDefault(); action(); }
});

loadQueue().then(() => watchModel());
setInterval(watchModel, 1500);
