"""The console's HTML, rendered on the server from plain data (pure: no I/O). Every value is escaped."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any
from urllib.parse import quote

from responder.service.operators import Operator, Role

LIVE_STATES = ("active", "awaiting_approval")


def layout(title: str, body: str, operator: Operator | None, *, script: bool = True) -> str:
    who = ""
    if operator is not None:
        who = (
            f'<p class="who">{escape(operator.id)} · {operator.role.name.lower()}</p>'
            '<form method="post" action="/console/logout"><button type="submit">Log out</button></form>'
        )
    nav = (
        '<nav aria-label="Console"><ul><li><a href="/console">Timeline</a></li>'
        '<li><a href="/console/hubs">Hubs</a></li></ul></nav>'
        if operator is not None
        else ""
    )
    role = operator.role.name.lower() if operator is not None else ""
    js = '<script src="/console/static/console.js" defer></script>' if script else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)} · responder</title>"
        f'<link rel="stylesheet" href="/console/static/console.css">{js}</head>'
        f'<body data-role="{role}"><a class="skip" href="#main">Skip to content</a>'
        f'<header><p class="brand">responder</p>{nav}{who}</header>'
        f'<main id="main"><h1>{escape(title)}</h1>'
        '<p id="status" role="status" aria-live="polite"></p>'
        '<p id="live" class="live" aria-live="polite"></p>'
        f"{body}</main></body></html>"
    )


def login(error: str | None = None) -> str:
    problem = f'<p class="error" role="alert">{escape(error)}</p>' if error else ""
    form = (
        f'{problem}<form method="post" action="/console/login" class="login">'
        '<label for="token">Bearer token (from your identity provider, or an API token)</label>'
        '<input id="token" name="token" type="password" autocomplete="off" required autofocus>'
        '<button type="submit">Log in</button></form>'
    )
    return layout("Log in", form, None, script=False)


def buttons(decision_id: str, state: str, operator: Operator) -> str:
    """The buttons this operator may use on a decision in this state (the server checks again)."""
    out = []
    if state == "awaiting_approval" and operator.may(Role.APPROVER):
        out += [_button(decision_id, "approve", "Approve"), _button(decision_id, "reject", "Reject")]
    if state in LIVE_STATES and operator.may(Role.ADMIN):
        out.append(_button(decision_id, "undo", "Undo"))
    return "".join(out)


def _button(decision_id: str, verb: str, label: str) -> str:
    return (
        f'<form method="post" action="/console/decisions/{quote(decision_id)}/{verb}" class="act">'
        f'<button type="submit" data-verb="{verb}">{label}</button></form>'
    )


def subject_link(subject: str) -> str:
    return f'<a href="/console/subjects/{quote(subject, safe="")}">{escape(subject)}</a>'


def timeline(rows: Sequence[Mapping[str, Any]], operator: Operator) -> str:
    body = "".join(_timeline_row(r, operator) for r in rows)
    return layout(
        "Timeline",
        "<p>Decisions as they are made and change, newest first. Live: new ones appear without reloading.</p>"
        '<table id="timeline"><caption>Decisions</caption><thead><tr><th scope="col">When</th>'
        '<th scope="col">Subject</th><th scope="col">Response</th><th scope="col">State</th>'
        '<th scope="col">Score</th><th scope="col">Rules</th><th scope="col">Actions</th></tr></thead>'
        f"<tbody>{body}</tbody></table>",
        operator,
    )


def _timeline_row(r: Mapping[str, Any], operator: Operator) -> str:
    score = "" if r.get("score") is None else f"{r['score']:g}"
    return (
        f'<tr data-id="{escape(r["id"])}" data-state="{escape(r["state"])}">'
        f'<td><time datetime="{escape(r["created_at"])}">{escape(r["created_at"][:19].replace("T", " "))}</time></td>'
        f"<td>{subject_link(r['subject'])}</td><td>{escape(r['response'])}</td>"
        f'<td class="state">{escape(r["state"])}</td><td>{score}</td><td>{escape(", ".join(r["rules"]))}</td>'
        f'<td class="actions">{buttons(r["id"], r["state"], operator)}</td></tr>'
    )


def subject(
    key: str,
    state: Mapping[str, object] | None,
    plot_svg: str,
    decisions: Sequence[Mapping[str, Any]],
    operator: Operator,
    *,
    plot_note: str = "At each decision, and now.",
) -> str:
    now = ""
    if state is not None:
        signals = ", ".join(str(s) for s in state.get("signals", []) or []) or "none"  # type: ignore[attr-defined]
        now = (
            '<dl class="now"><dt>Score now</dt>'
            f'<dd id="score-now">{escape(str(state.get("score")))}</dd>'
            f"<dt>Signals held</dt><dd>{escape(signals)}</dd>"
            f"<dt>Response in force</dt><dd>{escape(str(state.get('active_response') or 'none'))}</dd></dl>"
        )
    sections = "".join(_decision_section(d, operator) for d in decisions) or "<p>No decisions about this subject.</p>"
    return layout(
        f"Subject {key}",
        f'{now}<section aria-labelledby="plot-h"><h2 id="plot-h">Score over time</h2>'
        f"<p>{escape(plot_note)}</p>{plot_svg}</section>"
        f'<section id="decisions" data-subject="{escape(key)}" aria-labelledby="why-h">'
        '<h2 id="why-h">Why: decisions, signals, rules and hubs</h2>'
        f"{sections}</section>",
        operator,
    )


def _decision_section(d: Mapping[str, Any], operator: Operator) -> str:
    body = d["body"]
    signals = "".join(
        f'<tr class="signal"><th scope="row">{escape(str(c["rule"]))}</th><td>{c["points"]:g}</td>'
        f"<td>{escape(str(c['reason']))}</td><td><code>{escape(str(body.get('event_id') or ''))}</code></td></tr>"
        for c in body.get("contributions", [])
    )
    actions = "".join(
        f"<tr><td>{escape(str(a['action'].get('hub', '')))}</td><td>{escape(str(a['action'].get('type', '')))}</td>"
        f"<td>{escape(_target(a['action']))}</td><td>{escape(a['kind'])}</td><td>{escape(a['state'])}</td>"
        f"<td>{_verified(a['verified'])}</td></tr>"
        for a in d["actions"]
    )
    audit = "".join(
        f"<li><time>{escape(a['at'][:19].replace('T', ' '))}</time> {escape(a['actor'])}: {escape(a['kind'])}</li>"
        for a in d["audit"]
    )
    did = escape(d["id"])
    return (
        f'<article class="decision" data-id="{did}" aria-labelledby="d-{did}">'
        f'<h3 id="d-{did}">{escape(d["response"])} · <span class="state">{escape(d["state"])}</span> · '
        f"{escape(d['created_at'][:19].replace('T', ' '))}</h3>"
        f"<p>Score {body.get('score', 0):g}, level {d['level']}.</p>"
        # A div: a form may not sit inside a paragraph (the parser would move it out).
        f'<div class="actions">{buttons(d["id"], d["state"], operator)}</div>'
        '<table class="signals"><caption>Signals that scored (as <code>rules explain</code> shows them)</caption>'
        '<thead><tr><th scope="col">Rule</th><th scope="col">Points</th><th scope="col">Reason</th>'
        f'<th scope="col">Event</th></tr></thead><tbody>{signals}</tbody></table>'
        '<table class="hubs"><caption>On the hubs, and what was verified there</caption>'
        '<thead><tr><th scope="col">Hub</th><th scope="col">Action</th><th scope="col">Target</th>'
        '<th scope="col">Kind</th><th scope="col">State</th><th scope="col">Verified</th></tr></thead>'
        f"<tbody>{actions}</tbody></table>"
        f'<h4>Audit trail</h4><ul class="audit">{audit or "<li>nothing yet</li>"}</ul></article>'
    )


def _target(action: Mapping[str, Any]) -> str:
    return " ".join(str(action[k]) for k in ("set", "address", "peer_key") if action.get(k))


def _verified(value: bool | None) -> str:
    return {True: "yes", False: '<strong class="bad">no</strong>', None: "not yet"}[value]


def hubs(statuses: Mapping[str, Mapping[str, Any]], unenforced: Mapping[str, Any], operator: Operator) -> str:
    sections = "".join(_hub_section(n, s, unenforced.get(n)) for n, s in statuses.items())
    return layout(
        "Hubs",
        "<p>Read from the hubs at most every 15 seconds, however many people look.</p>"
        + (sections or "<p>No WireGuard hubs in the inventory.</p>"),
        operator,
    )


def _hub_section(name: str, status: Mapping[str, Any], outstanding: object) -> str:
    reach = {True: "reachable", False: "unreachable", None: "unknown"}[status.get("reachable")]
    drift = (
        f"<p>Unenforced: <code>{escape(json.dumps(outstanding))}</code></p>"
        if outstanding
        else "<p>Nothing unenforced: the hub holds what the journal says.</p>"
    )
    error = f'<p class="error">{escape(str(status["error"]))}</p>' if status.get("error") else ""
    sets = "".join(
        f"<tr><th scope='row'>{escape(k)}</th><td>{'' if v is None else v}</td></tr>"
        for k, v in (status.get("sets") or {}).items()
    )
    peers = "".join(
        f"<tr><td><code>{escape(str(p.get('key', ''))[:12])}…</code></td>"
        f"<td>{escape(', '.join(p.get('allowed_ips') or []))}</td>"
        f"<td>{'never' if p.get('handshake_age_s') is None else str(p['handshake_age_s']) + ' s'}</td>"
        f"<td>{'stale' if p.get('stale') else 'fresh'}</td></tr>"
        for p in status.get("peers") or []
    )
    return (
        f'<section class="hub" aria-labelledby="h-{escape(name)}"><h2 id="h-{escape(name)}">{escape(name)} · '
        f'<span class="reach">{reach}</span></h2>{error}{drift}'
        f"<table><caption>Set sizes</caption><tbody>{sets}</tbody></table>"
        '<table><caption>Peers and handshake ages</caption><thead><tr><th scope="col">Key</th>'
        '<th scope="col">Allowed IPs</th><th scope="col">Last handshake</th><th scope="col">Fresh</th></tr>'
        f"</thead><tbody>{peers}</tbody></table></section>"
    )
