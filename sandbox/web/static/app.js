// The sandbox workspace's page: draws the state the server pushes (server-sent events)
// and sends what the person does to the server, which signs it as Slack would.
// Everything shown is built with DOM nodes and textContent: no message text is ever HTML.
"use strict";

let state = null;
let me = null; // the person the page acts as
let view = null; // {kind: "channel", id} or {kind: "dm", user}
let openThread = null; // {channel, ts}
const ticked = new Map(); // what this page ticked: user|ts|block|action -> values

const $ = (id) => document.getElementById(id);

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// ---------------------------------------------------------------- mrkdwn

function unescapeSlack(text) {
  return text.replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&amp;/g, "&");
}

function userName(id) {
  const user = state && state.users[id];
  return user ? user.name : id;
}

function reference(target, label, parent) {
  // <@U…>, <#C…|name>, <!subteam^S…>, <!here>, <url|text>
  if (target.startsWith("@")) {
    parent.append(el("span", "mention", "@" + userName(target.slice(1))));
  } else if (target.startsWith("#")) {
    parent.append(el("span", "mention", "#" + (label || target.slice(1))));
  } else if (target.startsWith("!subteam^")) {
    const id = target.slice("!subteam^".length);
    parent.append(el("span", "mention", "@" + (label || (state && state.groups[id]) || id)));
  } else if (target.startsWith("!date^")) {
    parent.append(document.createTextNode(unescapeSlack(label || target)));
  } else if (target.startsWith("!")) {
    parent.append(el("span", "mention", "@" + target.slice(1)));
  } else if (/^(https?:|mailto:)/i.test(target)) {
    const link = el("a", "", unescapeSlack(label || target));
    link.href = unescapeSlack(target);
    link.target = "_blank";
    link.rel = "noopener noreferrer";
    parent.append(link);
  } else {
    parent.append(document.createTextNode(unescapeSlack(label || target)));
  }
}

const INLINE =
  /`([^`\n]+)`|<([^<>|\s]+)(?:\|([^<>]*))?>|(^|[^\w*])\*([^*\n]+)\*(?!\w)|(^|[^\w_])_([^_\n]+)_(?!\w)|(^|[^\w~])~([^~\n]+)~(?!\w)/g;

function inline(text, parent) {
  let at = 0;
  // matchAll works on a copy of the pattern: the recursion below cannot move our place.
  for (const m of text.matchAll(INLINE)) {
    const start = m.index + (m[4] ?? m[6] ?? m[8] ?? "").length;
    parent.append(document.createTextNode(unescapeSlack(text.slice(at, start))));
    if (m[1] !== undefined) {
      parent.append(el("code", "", unescapeSlack(m[1])));
    } else if (m[2] !== undefined) {
      reference(m[2], m[3], parent);
    } else {
      const tag = m[5] !== undefined ? "b" : m[7] !== undefined ? "i" : "s";
      const node = el(tag);
      inline(m[5] ?? m[7] ?? m[9], node);
      parent.append(node);
    }
    at = m.index + m[0].length;
  }
  parent.append(document.createTextNode(unescapeSlack(text.slice(at))));
}

function mrkdwn(text) {
  const node = el("div", "mrkdwn");
  String(text || "")
    .split("```")
    .forEach((part, i) => {
      if (i % 2 === 1) node.append(el("pre", "code-block", unescapeSlack(part.replace(/^\n/, ""))));
      else inline(part, node);
    });
  return node;
}

function textObject(object) {
  if (!object) return el("span");
  if (object.type === "mrkdwn") return mrkdwn(object.text);
  return el("div", "mrkdwn", object.text || "");
}

// ---------------------------------------------------------------- Block Kit

function renderElement(element, block, message) {
  if (element.type === "button") {
    const button = el("button", element.style || "", (element.text && element.text.text) || "");
    button.type = "button";
    button.onclick = () =>
      confirmThen(element.confirm, () =>
        act(message, { kind: "button", action_id: element.action_id, block_id: block.block_id }),
      );
    return button;
  }
  if (element.type === "checkboxes") {
    const box = el("div", "checkboxes");
    const key = [me, message.ts, block.block_id, element.action_id].join("|");
    const chosen = ticked.get(key) || (element.initial_options || []).map((o) => o.value);
    for (const option of element.options || []) {
      const label = el("label");
      const input = el("input");
      input.type = "checkbox";
      input.value = option.value;
      input.checked = chosen.includes(option.value);
      input.onchange = () => {
        const values = [...box.querySelectorAll("input:checked")].map((i) => i.value);
        ticked.set(key, values);
        act(message, {
          kind: "checkboxes",
          action_id: element.action_id,
          block_id: block.block_id,
          selected: values,
        });
      };
      const text = textObject(option.text);
      text.style.display = "inline";
      label.append(input, " ", text);
      box.append(label);
    }
    return box;
  }
  if (element.type === "image") return el("span", "muted", `[image: ${element.alt_text || ""}]`);
  if (element.type === "mrkdwn" || element.type === "plain_text") return textObject(element);
  const text = (element.text && element.text.text) || element.placeholder?.text || "";
  return el("span", "unknown", `${element.type}${text ? ": " + text : ""}`);
}

function plainOf(value) {
  // Any text a block we do not know carries, shown as text.
  if (typeof value === "string") return value;
  if (Array.isArray(value)) return value.map(plainOf).join("");
  if (value && typeof value === "object") {
    if (typeof value.text === "string") return value.text;
    return plainOf(value.elements || value.text || "");
  }
  return "";
}

function renderBlock(block, message) {
  const node = el("div", "block");
  switch (block.type) {
    case "header":
      node.className = "block block-header";
      node.textContent = (block.text && block.text.text) || "";
      break;
    case "divider":
      return el("hr", "divider");
    case "section": {
      node.classList.add("section");
      const content = el("div", "content");
      if (block.text) content.append(textObject(block.text));
      if (block.fields) {
        const fields = el("div", "fields");
        for (const field of block.fields) fields.append(textObject(field));
        content.append(fields);
      }
      node.append(content);
      if (block.accessory) node.append(renderElement(block.accessory, block, message));
      break;
    }
    case "context":
      node.classList.add("context");
      for (const element of block.elements || []) node.append(renderElement(element, block, message));
      break;
    case "actions":
      node.classList.add("actions");
      for (const element of block.elements || []) node.append(renderElement(element, block, message));
      break;
    case "input":
      node.append(textObject(block.label));
      if (block.element) node.append(renderElement(block.element, block, message));
      break;
    case "image":
      node.append(el("span", "muted", `[image: ${block.alt_text || ""}]`));
      break;
    default:
      node.append(el("div", "unknown", plainOf(block.elements || block.text || "") || `[${block.type} block]`));
  }
  return node;
}

function renderMessage(message, { inThread = false } = {}) {
  const row = el("div", "message" + (message.ephemeral_to ? " ephemeral" : ""));
  row.dataset.ts = message.ts;
  const user = state.users[message.user] || { name: message.user || "?", is_bot: false };
  row.append(el("div", "avatar" + (user.is_bot ? " bot" : ""), (user.name || "?")[0].toUpperCase()));
  const body = el("div", "body");
  const meta = el("div", "meta");
  meta.append(el("b", "", user.real_name || user.name));
  meta.append(new Date(message.posted_at * 1000).toLocaleTimeString());
  if (message.edited) meta.append(" (edited)");
  body.append(meta);
  if (message.ephemeral_to) body.append(el("div", "note", "Only visible to you"));
  if (message.blocks && message.blocks.length) {
    for (const block of message.blocks) body.append(renderBlock(block, message));
  } else {
    body.append(mrkdwn(message.text));
  }
  if (!inThread && message.replies && message.replies.length) {
    const link = el("button", "replies", `${message.replies.length} repl${message.replies.length === 1 ? "y" : "ies"}`);
    link.type = "button";
    link.onclick = () => {
      openThread = { channel: message.channel, ts: message.ts };
      draw();
    };
    body.append(link);
  }
  row.append(body);
  return row;
}

// ---------------------------------------------------------------- the page

function shownMessages() {
  if (view.kind === "dm") return state.dms[view.user] || [];
  return (state.messages[view.id] || []).filter((m) => !m.ephemeral_to || m.ephemeral_to === me);
}

function fillList(list, items) {
  list.replaceChildren(
    ...items.map(({ label, active, onclick }) => {
      const item = el("li", active ? "active" : "", label);
      item.onclick = onclick;
      return item;
    }),
  );
}

function drawSidebar() {
  $("team").textContent = state.team;
  const select = $("acting-as");
  if (select.options.length !== state.people.length) {
    select.replaceChildren(
      ...state.people.map((p) => {
        const option = el("option", "", `${userName(p.id)} (${p.role})`);
        option.value = p.id;
        return option;
      }),
    );
  }
  select.value = me;
  fillList(
    $("channels"),
    state.channels.map((c) => ({
      label: "# " + c.name,
      active: view.kind === "channel" && view.id === c.id,
      onclick: () => show({ kind: "channel", id: c.id }),
    })),
  );
  // The bot's direct messages with the person acted as; others' DMs are theirs.
  fillList($("dms"), [
    {
      label: `${state.bot.name} → ${userName(me)} (${(state.dms[me] || []).length})`,
      active: view.kind === "dm",
      onclick: () => show({ kind: "dm", user: me }),
    },
  ]);
}

function drawMessages() {
  const box = $("messages");
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  const title =
    view.kind === "dm"
      ? `${state.bot.name} (direct messages with ${userName(view.user)})`
      : "# " + (state.channels.find((c) => c.id === view.id) || { name: view.id }).name;
  $("conversation-title").textContent = title;
  box.replaceChildren(...shownMessages().map((m) => renderMessage(m)));
  if (atBottom) box.scrollTop = box.scrollHeight;
  $("composer").hidden = view.kind === "dm";
}

function drawThread() {
  const pane = $("thread");
  if (!openThread) {
    pane.hidden = true;
    return;
  }
  const parent = (state.messages[openThread.channel] || []).find((m) => m.ts === openThread.ts);
  if (!parent) {
    pane.hidden = true;
    return;
  }
  pane.hidden = false;
  $("thread-messages").replaceChildren(
    renderMessage(parent, { inThread: true }),
    el("hr", "divider"),
    ...parent.replies.map((m) => renderMessage(m, { inThread: true })),
  );
}

function table(headings, rows) {
  const node = el("table");
  const head = el("tr");
  for (const h of headings) head.append(el("th", "", h));
  node.append(head);
  for (const cells of rows) {
    const row = el("tr");
    for (const cell of cells) row.append(cell instanceof Node ? cell : el("td", "", String(cell)));
    node.append(row);
  }
  return node;
}

function drawEnvironment() {
  const env = state.environment;
  const body = $("environment-body");
  if (!env) return;
  const states = env.containers.map((c) => {
    const cell = el("td", "state-" + c.state, c.state);
    cell.title = c.status || "";
    return [c.service || c.name, cell];
  });
  const tables = env.tables.map((t) => {
    const count = el("td", "num", Number(t.rows).toLocaleString());
    return [t.name, count];
  });
  const backups = env.backups.map((b) => [b.name, el("td", "num", (b.bytes / 1024).toFixed(0) + " KB")]);
  body.replaceChildren(
    el("h4", "", `Containers (${env.project})`),
    table(["service", "state"], states),
    el("h4", "", "Database rows"),
    ...(env.tables_note ? [el("p", "note", env.tables_note)] : []),
    table(["table", "rows"], tables),
    el("h4", "", "Backups"),
    table(["file", "size"], backups),
  );
}

function draw() {
  if (!state) return;
  drawSidebar();
  drawMessages();
  drawThread();
  drawEnvironment();
}

function show(next) {
  view = next;
  draw();
}

function notice(text) {
  $("notice").textContent = text;
}

// ---------------------------------------------------------------- acting

async function post(path, body) {
  notice("");
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ user: me, ...body }),
  });
  if (!response.ok) {
    notice(`${response.status}: ${await response.text()}`);
    return;
  }
  const delivery = await response.json();
  if (delivery.status !== 200) notice(`the bot answered HTTP ${delivery.status}: ${delivery.body}`);
  else if (!delivery.acked) notice("the bot took longer than Slack's 3 seconds to answer");
}

function act(message, action) {
  return post("/action", { channel: message.channel, ts: message.ts, ...action });
}

function confirmThen(confirm, then) {
  if (!confirm) {
    then();
    return;
  }
  const dialog = $("confirm");
  $("confirm-title").textContent = (confirm.title && confirm.title.text) || "Are you sure?";
  $("confirm-text").replaceChildren(textObject(confirm.text));
  $("confirm-yes").textContent = (confirm.confirm && confirm.confirm.text) || "Yes";
  $("confirm-yes").className = confirm.style === "danger" ? "danger" : "primary";
  $("confirm-deny").textContent = (confirm.deny && confirm.deny.text) || "Cancel";
  dialog.onclose = () => {
    if (dialog.returnValue === "yes") then();
  };
  dialog.returnValue = "";
  dialog.showModal();
}

function start() {
  $("acting-as").onchange = (event) => {
    me = event.target.value;
    if (view.kind === "dm") view = { kind: "dm", user: me };
    draw();
  };
  $("close-thread").onclick = () => {
    openThread = null;
    draw();
  };
  $("composer").onsubmit = (event) => {
    event.preventDefault();
    const box = $("message-box");
    const text = box.value.trim();
    if (!text) return;
    box.value = "";
    post("/command", { channel: view.id, text });
  };
  const events = new EventSource("/events");
  events.onmessage = (event) => {
    state = JSON.parse(event.data);
    if (me === null) me = state.people.length ? state.people[0].id : null;
    if (view === null) view = { kind: "channel", id: state.channel };
    document.body.dataset.ready = "true";
    draw();
  };
}

document.addEventListener("DOMContentLoaded", start);
