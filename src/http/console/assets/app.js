// voxrelay console. Plain JavaScript, no dependencies, served by voxrelay itself.
// Every piece of data comes from /api/* with the API token (kept in this tab's
// sessionStorage) and is put on the page as text, never as HTML.
"use strict";

const TOKEN_KEY = "voxrelay.token";
const REFRESH_MS = 3000;

// ---------------------------------------------------------------------------
// Words (English and Brazilian Portuguese, by the browser's language)

const WORDS = {
  en: {
    skip: "Skip to content", logout: "Sign out",
    "nav.calls": "Calls", "nav.overview": "Overview", "nav.appointments": "Appointments", "nav.try": "Try it",
    "login.title": "Sign in", "login.token": "API token", "login.submit": "Open the console",
    "login.help": "Paste the server's API token (API_TOKEN). It is kept in this tab only.",
    "login.wrong": "That token was refused. Check API_TOKEN on the server.",
    "login.failed": "The server could not be reached.",
    "calls.title": "Calls", status: "Status", direction: "Direction", mode: "Mode", agent: "Agent", from: "From", to: "To",
    start: "Start", duration: "Duration", turns: "Turns", interrupts: "Interrupts", ending: "Ending",
    number: "Number", day: "Day", any: "any", filter: "Filter", clear: "Clear", more: "Load more",
    "calls.none": "No calls match.", live: "live",
    "call.title": "Call", "call.back": "All calls", "call.transcript": "Transcript",
    "call.export": "Download transcript (.txt)", "call.recording": "Recording",
    "call.twilioRecording": "Twilio's recording", "call.noRecording": "No recording for this call.",
    "call.handoff": "Handoff data", "call.appointments": "Appointments booked",
    "call.answeredBy": "Answered by", "call.twilioDuration": "Twilio duration",
    "call.params": "Parameters", "call.llmErrors": "LLM errors", "call.notFound": "No such call.",
    "call.heard": "caller heard", "call.interrupted": "interrupted", "call.cutOff": "cut off",
    "call.firstToken": "first token out", "call.llmFirstToken": "LLM first token", tool: "Tool", arguments: "Arguments", result: "Result",
    "tool.failed": "failed", "call.loadRecording": "Load the recording",
    "overview.title": "Overview", "overview.live": "Live calls", "overview.calls": "Calls (24 h)",
    "overview.replies": "Replies (24 h)", "overview.p50": "First token p50", "overview.p95": "First token p95",
    "overview.callsPerHour": "Calls per hour", "overview.repliesPerHour": "Replies per hour",
    "overview.firstToken": "Time to first token", "overview.endings": "Calls by status",
    "overview.llmErrors": "LLM errors (this server)", "overview.none": "Nothing yet.",
    "appointments.title": "Appointments", name: "Name", email: "Email", phone: "Phone", notes: "Notes",
    when: "When", caller: "Caller", call: "Call", booked: "Booked", "appointments.none": "No appointments yet.",
    "try.title": "Try it", "try.help": "Talk to the agent as a caller would. Type what the caller says, press keys, interrupt a reply.",
    "try.start": "Start a call", "try.hangup": "Hang up", "try.send": "Say", "try.say": "What the caller says",
    "try.interrupt": "Interrupt", "try.mic": "Speak", "try.speak": "Read replies aloud",
    "try.ended": "The call ended.", "try.closed": "The connection closed.", "try.open": "See this call",
    "try.refused": "The server refused the call.", "try.calling": "Connecting…",
    "try.keys": "Keypad", "try.you": "You", "try.agent": "Agent",
    error: "Something went wrong", "error.store": "The server could not read its records.",
  },
  pt: {
    skip: "Pular para o conteúdo", logout: "Sair",
    "nav.calls": "Chamadas", "nav.overview": "Visão geral", "nav.appointments": "Agendamentos", "nav.try": "Testar",
    "login.title": "Entrar", "login.token": "Token da API", "login.submit": "Abrir o console",
    "login.help": "Cole o token da API do servidor (API_TOKEN). Ele fica guardado só nesta aba.",
    "login.wrong": "Esse token foi recusado. Confira o API_TOKEN no servidor.",
    "login.failed": "Não foi possível falar com o servidor.",
    "calls.title": "Chamadas", status: "Status", direction: "Direção", mode: "Modo", agent: "Agente", from: "De", to: "Para",
    start: "Início", duration: "Duração", turns: "Turnos", interrupts: "Interrupções", ending: "Encerramento",
    number: "Número", day: "Dia", any: "todos", filter: "Filtrar", clear: "Limpar", more: "Carregar mais",
    "calls.none": "Nenhuma chamada encontrada.", live: "ao vivo",
    "call.title": "Chamada", "call.back": "Todas as chamadas", "call.transcript": "Transcrição",
    "call.export": "Baixar transcrição (.txt)", "call.recording": "Gravação",
    "call.twilioRecording": "Gravação da Twilio", "call.noRecording": "Esta chamada não tem gravação.",
    "call.handoff": "Dados da transferência", "call.appointments": "Agendamentos feitos",
    "call.answeredBy": "Atendida por", "call.twilioDuration": "Duração na Twilio",
    "call.params": "Parâmetros", "call.llmErrors": "Erros do LLM", "call.notFound": "Chamada não encontrada.",
    "call.heard": "o cliente ouviu", "call.interrupted": "interrompida", "call.cutOff": "cortada",
    "call.firstToken": "primeiro token enviado", "call.llmFirstToken": "primeiro token do LLM", tool: "Ferramenta", arguments: "Argumentos", result: "Resultado",
    "tool.failed": "falhou", "call.loadRecording": "Carregar a gravação",
    "overview.title": "Visão geral", "overview.live": "Chamadas ao vivo", "overview.calls": "Chamadas (24 h)",
    "overview.replies": "Respostas (24 h)", "overview.p50": "Primeiro token p50", "overview.p95": "Primeiro token p95",
    "overview.callsPerHour": "Chamadas por hora", "overview.repliesPerHour": "Respostas por hora",
    "overview.firstToken": "Tempo até o primeiro token", "overview.endings": "Chamadas por status",
    "overview.llmErrors": "Erros do LLM (este servidor)", "overview.none": "Nada ainda.",
    "appointments.title": "Agendamentos", name: "Nome", email: "E-mail", phone: "Telefone", notes: "Observações",
    when: "Quando", caller: "Cliente", call: "Chamada", booked: "Agendado em", "appointments.none": "Nenhum agendamento ainda.",
    "try.title": "Testar", "try.help": "Fale com o agente como um cliente. Digite o que o cliente diz, aperte teclas, interrompa uma resposta.",
    "try.start": "Iniciar chamada", "try.hangup": "Desligar", "try.send": "Falar", "try.say": "O que o cliente diz",
    "try.interrupt": "Interromper", "try.mic": "Falar no microfone", "try.speak": "Ler as respostas em voz alta",
    "try.ended": "A chamada terminou.", "try.closed": "A conexão foi fechada.", "try.open": "Ver esta chamada",
    "try.refused": "O servidor recusou a chamada.", "try.calling": "Conectando…",
    "try.keys": "Teclado", "try.you": "Você", "try.agent": "Agente",
    error: "Algo deu errado", "error.store": "O servidor não conseguiu ler os registros.",
  },
};

const LANG = (navigator.language || "en").toLowerCase().startsWith("pt") ? "pt" : "en";
const LOCALE = LANG === "pt" ? "pt-BR" : undefined;
const t = (key) => WORDS[LANG][key] || WORDS.en[key] || key;

// ---------------------------------------------------------------------------
// Small DOM helpers (text only)

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function fmtTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return d.toLocaleString(LOCALE, { dateStyle: "short", timeStyle: "medium" });
}

function fmtClock(iso) {
  return iso ? new Date(iso).toLocaleTimeString(LOCALE) : "";
}

function fmtDuration(ms) {
  if (ms === null || ms === undefined) return "—";
  const s = Math.round(ms / 1000);
  const m = Math.floor(s / 60);
  return m > 0 ? `${m}m ${String(s % 60).padStart(2, "0")}s` : `${s}s`;
}

function pretty(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "string") {
    try { return JSON.stringify(JSON.parse(value), null, 2); } catch (_) { return value; }
  }
  return JSON.stringify(value, null, 2);
}

// ---------------------------------------------------------------------------
// The API, with the token

class Unauthorized extends Error {}

function token() { return sessionStorage.getItem(TOKEN_KEY); }

async function api(path, as) {
  const response = await fetch(path, {
    headers: { Authorization: `Bearer ${token()}` },
    cache: "no-store",
  });
  if (response.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    AGENTS = null;
    throw new Unauthorized();
  }
  if (as === "response") return response;
  if (!response.ok) {
    let message = `${response.status}`;
    try { message = (await response.json()).error || message; } catch (_) { /* not JSON */ }
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return as === "text" ? response.text() : response.json();
}

// ---------------------------------------------------------------------------
// Login and routing

const view = () => document.getElementById("view");
let timer = null;
let cleanup = null;

function showLogin(message) {
  document.getElementById("nav").hidden = true;
  view().replaceChildren();
  const form = document.getElementById("login");
  form.hidden = false;
  document.getElementById("login-error").textContent = message || "";
  document.getElementById("token").focus();
}

async function login(event) {
  event.preventDefault();
  const input = document.getElementById("token");
  sessionStorage.setItem(TOKEN_KEY, input.value.trim());
  try {
    await api("/api/calls?limit=1");
    input.value = "";
    document.getElementById("login").hidden = true;
    if (!location.hash || location.hash === "#") location.hash = "#/calls";
    else route();
  } catch (error) {
    sessionStorage.removeItem(TOKEN_KEY);
    input.value = "";
    showLogin(error instanceof Unauthorized ? t("login.wrong") : t("login.failed"));
  }
}

function route() {
  if (timer) { clearInterval(timer); timer = null; }
  if (cleanup) { cleanup(); cleanup = null; }
  if (!token()) { showLogin(); return; }
  document.getElementById("login").hidden = true;
  document.getElementById("nav").hidden = false;
  const hash = location.hash.replace(/^#/, "") || "/calls";
  const parts = hash.split("/").filter(Boolean);
  for (const link of document.querySelectorAll("nav a")) {
    const current = link.getAttribute("href") === `#/${parts[0]}`;
    if (current) link.setAttribute("aria-current", "page"); else link.removeAttribute("aria-current");
  }
  const pages = {
    calls: () => parts[1] ? callPage(decodeURIComponent(parts[1])) : callsPage(),
    overview: overviewPage,
    appointments: appointmentsPage,
    try: tryPage,
  };
  const page = pages[parts[0]] || callsPage;
  loadAgents().then(page).catch(failed);
}

// The agents' ids (for the filters and Try it), read once per sign-in.
let AGENTS = null;
async function loadAgents() {
  if (!AGENTS) AGENTS = (await api("/api/agents")).agents.map((a) => a.id);
}

function failed(error) {
  if (error instanceof Unauthorized) { showLogin(t("login.wrong")); return; }
  const text = error && error.status === 503 ? t("error.store") : `${t("error")}: ${error.message}`;
  view().replaceChildren(el("p", { class: "error", role: "alert", text }));
}

function every(fn) {
  timer = setInterval(() => { fn().catch(failed); }, REFRESH_MS);
}

// ---------------------------------------------------------------------------
// Calls

const STATUSES = ["in-progress", "completed", "handoff", "failed", "busy", "no-answer", "canceled"];
const MODES = ["relay", "stream", "sip", "console"];

function select(id, label, values, current) {
  return el("div", {},
    el("label", { for: id, text: label }),
    el("select", { id, name: id },
      el("option", { value: "", text: t("any") }),
      values.map((v) => el("option", { value: v, selected: v === current, text: v }))));
}

function filterQuery(form) {
  const data = new FormData(form);
  const query = new URLSearchParams();
  for (const key of ["status", "mode", "agent", "number"]) {
    const value = (data.get(key) || "").trim();
    if (value) query.set(key, value);
  }
  const day = data.get("day");
  if (day) {
    // The browser's own day, sent as times with its offset.
    const start = new Date(`${day}T00:00:00`);
    const end = new Date(start.getTime());
    end.setDate(end.getDate() + 1);
    query.set("since", start.toISOString());
    query.set("until", end.toISOString());
  }
  return query;
}

function ending(call) {
  const handoff = call.handoff_data;
  if (handoff && typeof handoff === "object") return handoff.reasonCode || handoff.reason || "";
  return call.ended_at ? call.status : "";
}

function callRow(call) {
  const live = call.status === "in-progress";
  const link = el("a", { href: `#/calls/${encodeURIComponent(call.call_sid)}`, text: call.from || call.call_sid });
  return el("tr", { class: live ? "live" : "", "data-sid": call.call_sid },
    el("td", {}, el("span", { class: `badge ${call.status}`, text: live ? t("live") : call.status })),
    el("td", { text: call.direction || "—" }),
    el("td", { text: call.mode || "—" }),
    el("td", { text: call.agent || "—" }),
    el("td", {}, link),
    el("td", { text: call.to || "—" }),
    el("td", { text: fmtTime(call.started_at) }),
    el("td", { text: fmtDuration(call.duration_ms) }),
    el("td", { text: call.turns }),
    el("td", { text: call.interrupts }),
    el("td", { text: ending(call) }));
}

async function callsPage() {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const form = el("form", { class: "filters", role: "search" },
    select("status", t("status"), STATUSES, params.get("status")),
    select("mode", t("mode"), MODES, params.get("mode")),
    select("agent", t("agent"), AGENTS, params.get("agent")),
    el("div", {}, el("label", { for: "number", text: t("number") }),
      el("input", { id: "number", name: "number", value: params.get("number") || "", inputmode: "tel", size: 16 })),
    el("div", {}, el("label", { for: "day", text: t("day") }),
      el("input", { id: "day", name: "day", type: "date", value: params.get("day") || "" })),
    el("button", { type: "submit", text: t("filter") }),
    el("button", { type: "button", class: "secondary", text: t("clear"), onclick: () => { location.hash = "#/calls"; } }));
  const body = el("tbody");
  const table = el("div", { class: "table-wrap" }, el("table", {},
    el("thead", {}, el("tr", {}, [t("status"), t("direction"), t("mode"), t("agent"), t("from"), t("to"), t("start"),
      t("duration"), t("turns"), t("interrupts"), t("ending")].map((h) => el("th", { scope: "col", text: h })))),
    body));
  const empty = el("p", { class: "muted", hidden: true, text: t("calls.none") });
  const more = el("button", { type: "button", class: "secondary", hidden: true, text: t("more") });
  view().replaceChildren(el("h1", { text: t("calls.title") }), form, table, empty, el("div", { class: "actions" }, more));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const query = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v) query.set(k, v);
    location.hash = `#/calls?${query}`;
  });
  const query = filterQuery(form);
  let shown = 0;
  let next = null;
  async function load(reset) {
    const q = new URLSearchParams(query);
    q.set("limit", reset ? String(Math.min(Math.max(shown, 50), 200)) : "50");
    if (!reset && next) q.set("before", next);
    const page = await api(`/api/calls?${q}`);
    if (reset) body.replaceChildren();
    page.calls.forEach((call) => body.append(callRow(call)));
    shown = body.children.length;
    next = page.next_before;
    more.hidden = !next;
    empty.hidden = shown > 0;
  }
  more.addEventListener("click", () => load(false).catch(failed));
  await load(true);
  // Live calls update by themselves.
  every(() => load(true));
}

// ---------------------------------------------------------------------------
// One call

function fact(label, value) {
  if (value === null || value === undefined || value === "") return null;
  return el("div", {}, el("dt", { text: label }), el("dd", {}, value));
}

function latency(ms, scale, label, kind) {
  if (ms === null || ms === undefined) return null;
  const width = Math.min(100, Math.round((ms / scale) * 100));
  return el("span", { class: `latency ${kind}`, title: `${label}: ${ms} ms` },
    el("span", { class: "track", role: "img", "aria-label": `${label} ${ms} ms` },
      el("span", { class: "fill", "data-width": width })),
    `${label} ${ms} ms`);
}

function turnNode(turn, scale) {
  const agent = turn.role !== "caller";
  const classes = ["turn", agent ? "agent" : "caller"];
  if (turn.interrupted) classes.push("interrupted");
  const text = el("div", { class: "text" });
  if (agent && turn.interrupted) {
    const heard = turn.heard || "";
    const rest = turn.text.startsWith(heard) ? turn.text.slice(heard.length) : turn.text;
    if (heard) text.append(el("span", { class: "heard", text: heard }));
    text.append(el("span", { class: "unheard", text: heard ? rest : turn.text }));
  } else {
    text.textContent = turn.text;
  }
  const meta = el("div", { class: "meta" },
    el("span", { text: agent ? t("try.agent") : t("caller") }),
    el("time", { datetime: turn.started_at, text: fmtClock(turn.started_at) }),
    turn.interrupted ? el("span", { class: "flag", text: `${t("call.interrupted")} — ${t("call.heard")}: “${turn.heard || ""}”` }) : null,
    turn.partial ? el("span", { text: t("call.cutOff") }) : null,
    agent ? latency(turn.time_to_first_token_ms, scale, t("call.firstToken"), "out") : null,
    agent ? latency(turn.llm_first_token_ms, scale, t("call.llmFirstToken"), "llm") : null);
  return el("div", { class: classes.join(" "), "data-seq": turn.seq }, meta, text);
}

function toolNode(call) {
  return el("div", { class: "tool" },
    el("strong", { text: `${t("tool")}: ${call.name}` }),
    call.ok ? null : el("span", { class: "error", text: ` (${t("tool.failed")})` }),
    el("span", { class: "muted", text: ` · ${fmtClock(call.started_at)} · ${call.duration_ms} ms` }),
    el("div", { class: "muted", text: t("arguments") }), el("pre", { text: pretty(call.arguments) }),
    el("div", { class: "muted", text: t("result") }), el("pre", { text: pretty(call.result) }));
}

async function transcriptOf(sid) {
  const turns = [];
  const tools = [];
  let after = null;
  for (let page = 0; page < 20; page++) {
    const q = after === null ? "" : `?after=${after}`;
    const part = await api(`/api/calls/${encodeURIComponent(sid)}/transcript${q}`);
    turns.push(...part.turns);
    tools.push(...part.tool_calls);
    if (part.next_after === null || part.next_after === undefined) break;
    after = part.next_after;
  }
  return { turns, tools };
}

async function download(path, name) {
  const response = await api(path, "response");
  const blob = await response.blob();
  const url = URL.createObjectURL(blob);
  const a = el("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

function recordingNode(call) {
  const box = el("div", {});
  const recording = call.recording || {};
  if (recording.path) {
    const button = el("button", { type: "button", class: "secondary", text: t("call.loadRecording") });
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        const response = await api(`/api/calls/${encodeURIComponent(call.call_sid)}/recording`, "response");
        if (!response.ok) throw new Error(`${response.status}`);
        const url = URL.createObjectURL(await response.blob());
        const audio = el("audio", { controls: true, src: url, "aria-label": t("call.recording") });
        button.replaceWith(audio);
      } catch (error) { failed(error); }
    });
    box.append(button);
  }
  if (recording.url) {
    box.append(el("p", {}, el("a", { href: recording.url, rel: "noreferrer noopener", target: "_blank", text: t("call.twilioRecording") }),
      recording.duration_secs ? ` (${recording.duration_secs}s)` : ""));
  }
  if (!recording.path && !recording.url) box.append(el("p", { class: "muted", text: t("call.noRecording") }));
  return box;
}

async function callPage(sid) {
  let call;
  try {
    call = await api(`/api/calls/${encodeURIComponent(sid)}`);
  } catch (error) {
    if (error.status === 404) {
      view().replaceChildren(el("p", { class: "error", text: t("call.notFound") }),
        el("a", { href: "#/calls", text: t("call.back") }));
      return;
    }
    throw error;
  }
  const conversation = el("div", { class: "conversation", id: "conversation" });
  const facts = el("dl", { class: "facts" });
  const extra = el("div", {});
  const exportButton = el("button", { type: "button", class: "secondary", text: t("call.export") });
  exportButton.addEventListener("click", () =>
    download(`/api/calls/${encodeURIComponent(sid)}/transcript?format=text`, `${sid}.txt`).catch(failed));
  view().replaceChildren(
    el("p", {}, el("a", { href: "#/calls", text: `← ${t("call.back")}` })),
    el("h1", { text: `${t("call.title")} ${sid}` }),
    el("div", { class: "panel" }, facts),
    el("h2", { text: t("call.recording") }), recordingNode(call),
    extra,
    el("h2", { text: t("call.transcript") }),
    el("div", { class: "actions" }, exportButton),
    conversation);
  async function render() {
    call = await api(`/api/calls/${encodeURIComponent(sid)}`);
    facts.replaceChildren(...[
      fact(t("status"), el("span", { class: `badge ${call.status}`, text: call.status })),
      fact(t("direction"), call.direction), fact(t("mode"), call.mode), fact(t("agent"), call.agent),
      fact(t("from"), call.from), fact(t("to"), call.to),
      fact(t("start"), fmtTime(call.started_at)), fact(t("duration"), fmtDuration(call.duration_ms)),
      fact(t("turns"), String(call.turns)), fact(t("interrupts"), String(call.interrupts)),
      fact(t("call.llmErrors"), String(call.llm_errors)),
      fact(t("call.answeredBy"), call.answered_by ? `${call.answered_by}${call.answered_by_signal ? ` (${call.answered_by_signal})` : ""}` : null),
      fact(t("call.twilioDuration"), call.twilio_duration_secs !== null && call.twilio_duration_secs !== undefined ? `${call.twilio_duration_secs}s` : null),
      fact(t("call.params"), call.parameters ? el("pre", { text: pretty(call.parameters) }) : null),
    ].filter(Boolean));
    extra.replaceChildren();
    if (call.handoff_data) {
      extra.append(el("h2", { text: t("call.handoff") }), el("pre", { class: "panel", text: pretty(call.handoff_data) }));
    }
    if (call.appointments && call.appointments.length) {
      extra.append(el("h2", { text: t("call.appointments") }),
        el("ul", {}, call.appointments.map((a) => el("li", { text:
          `${a.name} — ${a.preferred_day}${a.preferred_time ? ` ${a.preferred_time}` : ""}${a.email ? ` · ${a.email}` : ""}` }))));
    }
    const { turns, tools } = await transcriptOf(sid);
    const scale = Math.max(100, ...turns.map((x) => Math.max(x.time_to_first_token_ms || 0, x.llm_first_token_ms || 0)));
    const items = [
      ...turns.map((x) => ({ at: x.started_at, order: 0, node: turnNode(x, scale) })),
      ...tools.map((x) => ({ at: x.started_at, order: 1, node: toolNode(x) })),
    ].sort((a, b) => (a.at < b.at ? -1 : a.at > b.at ? 1 : a.order - b.order));
    conversation.replaceChildren(...items.map((x) => x.node));
    for (const fill of conversation.querySelectorAll(".fill")) fill.style.width = `${fill.dataset.width}%`;
    if (call.status !== "in-progress" && timer) { clearInterval(timer); timer = null; }
  }
  await render();
  if (call.status === "in-progress") every(render);
}

// ---------------------------------------------------------------------------
// Overview

function barChart(title, rows, label) {
  const box = el("section", { class: "panel" }, el("h2", { text: title }));
  if (!rows.length) { box.append(el("p", { class: "muted", text: t("overview.none") })); return box; }
  const width = 320;
  const height = 150;
  const max = Math.max(1, ...rows.map((r) => r.value));
  const step = width / rows.length;
  const chart = svg("svg", { class: "chart", viewBox: `0 0 ${width} ${height + 20}`, role: "img", "aria-label": title });
  rows.forEach((row, i) => {
    const h = Math.round((row.value / max) * height);
    const rect = svg("rect", { x: i * step + 2, y: height - h, width: Math.max(2, step - 4), height: h });
    rect.append(svg("title", {}, `${row.label}: ${row.value}`));
    chart.append(rect);
    if (rows.length <= 12 || i % Math.ceil(rows.length / 8) === 0) {
      chart.append(svg("text", { x: i * step + 2, y: height + 14 }, label(row)));
    }
  });
  box.append(chart);
  return box;
}

function card(title, value) {
  return el("div", { class: "panel card" }, el("div", { class: "muted", text: title }), el("div", { class: "value", text: value }));
}

async function overviewPage() {
  const o = await api("/api/overview?hours=24");
  const sum = (rows) => rows.reduce((n, r) => n + r.count, 0);
  const hour = (iso) => new Date(iso).toLocaleTimeString(LOCALE, { hour: "2-digit", minute: "2-digit" });
  const ms = (v) => (v === null || v === undefined ? "—" : `${v} ms`);
  const modes = Object.entries(o.live_calls).filter(([, n]) => n > 0).map(([m, n]) => `${m} ${n}`).join(" · ");
  view().replaceChildren(
    el("h1", { text: t("overview.title") }),
    el("div", { class: "cards" },
      card(t("overview.live"), `${o.live_calls_total}${modes ? ` (${modes})` : ""}`),
      card(t("overview.calls"), String(sum(o.calls_per_hour))),
      card(t("overview.replies"), String(sum(o.replies_per_hour))),
      card(t("overview.p50"), ms(o.first_token.p50_ms)),
      card(t("overview.p95"), ms(o.first_token.p95_ms))),
    el("div", { class: "charts" },
      barChart(t("overview.callsPerHour"), o.calls_per_hour.map((r) => ({ label: hour(r.hour), value: r.count })), (r) => r.label),
      barChart(t("overview.repliesPerHour"), o.replies_per_hour.map((r) => ({ label: hour(r.hour), value: r.count })), (r) => r.label),
      barChart(t("overview.firstToken"), o.first_token.replies ? o.first_token.buckets.map((b) => ({
        label: b.le_ms === null ? "more" : `≤${b.le_ms}`, value: b.count })) : [], (r) => r.label),
      barChart(t("overview.endings"), o.calls_by_status.map((s) => ({ label: s.status, value: s.count })), (r) => r.label),
      barChart(t("overview.llmErrors"), Object.entries(o.llm_errors).filter(([, n]) => n > 0)
        .map(([kind, n]) => ({ label: kind, value: n })), (r) => r.label)));
  every(async () => { if (location.hash.startsWith("#/overview")) await overviewPage(); });
}

// ---------------------------------------------------------------------------
// Appointments

async function appointmentsPage() {
  const body = el("tbody");
  const more = el("button", { type: "button", class: "secondary", hidden: true, text: t("more") });
  const empty = el("p", { class: "muted", hidden: true, text: t("appointments.none") });
  view().replaceChildren(el("h1", { text: t("appointments.title") }),
    el("div", { class: "table-wrap" }, el("table", {},
      el("thead", {}, el("tr", {}, [t("name"), t("when"), t("caller"), t("email"), t("phone"), t("notes"), t("booked"), t("call")]
        .map((h) => el("th", { scope: "col", text: h })))), body)), empty, el("div", { class: "actions" }, more));
  let next = null;
  async function load() {
    const q = next ? `?before=${next}` : "";
    const page = await api(`/api/appointments${q}`);
    for (const a of page.appointments) {
      body.append(el("tr", {},
        el("td", { text: a.name }),
        el("td", { text: `${a.preferred_day}${a.preferred_time ? ` ${a.preferred_time}` : ""}` }),
        el("td", { text: a.caller_number || "—" }), el("td", { text: a.email || "" }),
        el("td", { text: a.phone || "" }), el("td", { text: a.notes || "" }),
        el("td", { text: fmtTime(a.created_at) }),
        el("td", {}, el("a", { href: `#/calls/${encodeURIComponent(a.call_sid)}`, text: a.call_sid }))));
    }
    next = page.next_before;
    more.hidden = next === null || next === undefined;
    empty.hidden = body.children.length > 0;
  }
  more.addEventListener("click", () => load().catch(failed));
  await load();
}

// ---------------------------------------------------------------------------
// Try it: a softphone over the ConversationRelay protocol

function tryPage() {
  const log = el("div", { class: "conversation", id: "phone-log", "aria-live": "polite" });
  const status = el("p", { class: "muted", role: "status" });
  const from = el("input", { id: "phone-from", value: "+5511999990000", inputmode: "tel", size: 16 });
  const agent = el("select", { id: "phone-agent" }, AGENTS.map((a) => el("option", { value: a, text: a })));
  const start = el("button", { type: "button", id: "phone-start", text: t("try.start") });
  const hangup = el("button", { type: "button", id: "phone-hangup", class: "secondary", disabled: true, text: t("try.hangup") });
  const interrupt = el("button", { type: "button", id: "phone-interrupt", class: "secondary", disabled: true, text: t("try.interrupt") });
  const say = el("input", { id: "phone-say", "aria-label": t("try.say"), placeholder: t("try.say"), disabled: true, autocomplete: "off" });
  const send = el("button", { type: "submit", id: "phone-send", disabled: true, text: t("try.send") });
  const Recognition = window.SpeechRecognition || window.webkitSpeechRecognition;
  const mic = Recognition ? el("button", { type: "button", class: "secondary", disabled: true, text: t("try.mic") }) : null;
  const speak = "speechSynthesis" in window ? el("input", { type: "checkbox", id: "phone-speak" }) : null;
  const keys = el("div", { class: "keypad", role: "group", "aria-label": t("try.keys") },
    "123456789*0#".split("").map((k) => el("button", { type: "button", class: "secondary", disabled: true, "data-key": k, text: k })));
  const form = el("form", { class: "say" }, say, send, mic);
  view().replaceChildren(
    el("h1", { text: t("try.title") }), el("p", { class: "muted", text: t("try.help") }),
    el("div", { class: "phone" },
      el("div", {},
        el("div", { class: "actions" },
          el("div", {}, el("label", { for: "phone-from", text: t("from") }), from),
          AGENTS.length > 1 ? el("div", {}, el("label", { for: "phone-agent", text: t("agent") }), agent) : null,
          start, hangup, interrupt),
        status, log, form,
        speak ? el("label", {}, speak, ` ${t("try.speak")}`) : null),
      el("div", {}, el("h2", { text: t("try.keys") }), keys)));

  let socket = null;
  let callSid = null;
  let reply = null; // { node, text, started }
  const controls = [hangup, interrupt, say, send, mic, ...keys.children].filter(Boolean);
  const setLive = (live) => {
    controls.forEach((c) => { c.disabled = !live; });
    start.disabled = live;
    from.disabled = live;
    agent.disabled = live;
  };
  const note = (text) => log.append(el("div", { class: "note", text }));
  const bubble = (who, text) => {
    const node = el("div", { class: `turn ${who}` }, el("div", { class: "meta", text: who === "caller" ? t("try.you") : t("try.agent") }),
      el("div", { class: "text", text }));
    log.append(node);
    node.scrollIntoView({ block: "end" });
    return node;
  };
  const sendJson = (message) => { if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message)); };
  const ended = (text) => {
    setLive(false);
    note(text);
    if (callSid) log.append(el("p", {}, el("a", { href: `#/calls/${encodeURIComponent(callSid)}`, id: "phone-record", text: t("try.open") })));
    socket = null;
  };

  start.addEventListener("click", () => {
    log.replaceChildren();
    callSid = null;
    status.textContent = t("try.calling");
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    socket = new WebSocket(`${scheme}://${location.host}/console/call`);
    socket.addEventListener("open", () => {
      socket.send(JSON.stringify({ type: "start", token: token(), from: from.value.trim(), agent: agent.value, parameters: {} }));
    });
    socket.addEventListener("message", (event) => {
      let message;
      try { message = JSON.parse(event.data); } catch (_) { return; }
      switch (message.type) {
        case "started":
          callSid = message.callSid;
          status.textContent = callSid;
          setLive(true);
          say.focus();
          break;
        case "text":
          if (!reply) reply = { node: bubble("agent", ""), text: "", started: Date.now() };
          reply.text += message.token || "";
          reply.node.querySelector(".text").textContent = reply.text;
          if (message.last) {
            if (speak && speak.checked && reply.text.trim()) {
              speechSynthesis.speak(Object.assign(new SpeechSynthesisUtterance(reply.text), { lang: "pt-BR" }));
            }
            reply = null;
          }
          break;
        case "end":
          ended(`${t("try.ended")} ${message.handoffData || ""}`);
          break;
        case "sendDigits": note(`⌨ ${message.digits}`); break;
        case "language": note(`🌐 ${message.ttsLanguage || message.transcriptionLanguage || ""}`); break;
        case "play": note(`▶ ${message.source}`); break;
        case "error": note(`${t("try.refused")} ${message.description || ""}`); break;
        default: break;
      }
    });
    socket.addEventListener("close", () => { if (socket) ended(t("try.closed")); });
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = say.value.trim();
    if (!text) return;
    if (reply) interruptReply();
    bubble("caller", text);
    sendJson({ type: "prompt", voicePrompt: text, lang: "pt-BR", last: true });
    say.value = "";
  });
  function interruptReply() {
    if (!reply) return;
    sendJson({ type: "interrupt", utteranceUntilInterrupt: reply.text, durationUntilInterruptMs: Date.now() - reply.started });
    reply.node.classList.add("interrupted");
    reply = null;
  }
  interrupt.addEventListener("click", interruptReply);
  keys.addEventListener("click", (event) => {
    const key = event.target.dataset && event.target.dataset.key;
    if (!key) return;
    sendJson({ type: "dtmf", digit: key });
    note(`⌨ ${key}`);
  });
  hangup.addEventListener("click", () => { const s = socket; socket = null; if (s) s.close(1000); ended(t("try.ended")); });
  if (mic) {
    mic.addEventListener("click", () => {
      const recognition = new Recognition();
      recognition.lang = "pt-BR";
      recognition.interimResults = false;
      recognition.addEventListener("result", (event) => {
        say.value = event.results[0][0].transcript;
        form.requestSubmit();
      });
      recognition.start();
    });
  }
  cleanup = () => { if (socket) { const s = socket; socket = null; s.close(1000); } };
}

// ---------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  document.documentElement.lang = LANG === "pt" ? "pt-BR" : "en";
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  document.title = `voxrelay — ${t("nav.calls").toLowerCase()}`;
  document.getElementById("login").addEventListener("submit", login);
  document.getElementById("logout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    AGENTS = null;
    location.hash = "";
    showLogin();
  });
  window.addEventListener("hashchange", route);
  route();
});
