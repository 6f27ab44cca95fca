"""What a notice says to a person: who, what, why, where, verified or not, and how to undo. Pure: the
channels only lay it out (Slack blocks, an Adaptive Card, JSON, an e-mail)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from responder.notify.notice import Notice, NoticeKind

_HEADLINES = {
    NoticeKind.DECIDED: "Decided",
    NoticeKind.ENFORCED: "Enforced",
    NoticeKind.AWAITING_APPROVAL: "Awaiting approval",
    NoticeKind.APPROVED: "Approved",
    NoticeKind.REJECTED: "Rejected",
    NoticeKind.UNDONE: "Undone",
    NoticeKind.EXPIRED: "Expired",
    NoticeKind.LIFTED: "Lifted by the policy",
    NoticeKind.DRIFT: "Drift re-asserted",
    NoticeKind.ENFORCEMENT_OFF: "Enforcement is off",
    NoticeKind.ESCALATED: "Approval escalated",
}
# Buttons only where pressing them can work: approve/reject while it waits, undo while it is in force.
_BUTTONS = {
    NoticeKind.AWAITING_APPROVAL: ("approve", "reject"),
    NoticeKind.ESCALATED: ("approve", "reject"),
    NoticeKind.DECIDED: ("undo",),
    NoticeKind.ENFORCED: ("undo",),
    NoticeKind.DRIFT: ("undo",),
}


@dataclass(frozen=True, slots=True)
class Message:
    """One message, laid out by each channel. `buttons` are action ids (approve, reject, undo), each
    acting on `decision_id`."""

    kind: str
    title: str
    facts: tuple[tuple[str, str], ...]
    decision_id: str | None = None
    buttons: tuple[str, ...] = ()
    undo: str | None = None  # how to undo: the command, and the console page when there is one
    link: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    links: tuple[tuple[str, str], ...] = ()  # (label, url): signed approval links, where there are no buttons

    @property
    def text(self) -> str:
        """The whole message as plain text (e-mail, Slack's fallback and notifications)."""
        lines = [self.title, *(f"{name}: {value}" for name, value in self.facts)]
        if self.undo:
            lines.append(f"Undo: {self.undo}")
        lines += [f"{label}: {url}" for label, url in self.links]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "title": self.title, "facts": [list(f) for f in self.facts],
            "decision_id": self.decision_id, "buttons": list(self.buttons), "undo": self.undo, "link": self.link,
            "extra": dict(self.extra), "links": [list(x) for x in self.links],
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Message:
        return cls(
            kind=data["kind"], title=data["title"], facts=tuple((str(a), str(b)) for a, b in data["facts"]),
            decision_id=data.get("decision_id"), buttons=tuple(data.get("buttons", ())), undo=data.get("undo"),
            link=data.get("link"), extra=data.get("extra") or {},
            links=tuple((str(a), str(b)) for a, b in data.get("links", ())),
        )  # fmt: skip


def render(notice: Notice, console_url: str | None = None, links: Sequence[tuple[str, str]] = ()) -> Message:
    """The message for `notice`. Its `detail` may carry: devices, actions (described), score, contributions
    ({rule, points, reason}, as `rules explain` shows them), hubs ({hub: verified}), state, reason. `links`:
    signed approval links (label, url), for the channels without buttons."""
    d = notice.detail
    headline = _HEADLINES.get(notice.kind, notice.kind.value)
    what = f" {notice.response}" if notice.response else ""
    title = f"{headline}:{what} on {notice.subject}"
    if notice.decision_id:
        title += f" (decision {notice.decision_id})"
    facts: list[tuple[str, str]] = [("Who", _who(notice.subject, d.get("devices")))]
    if notice.response:
        facts.append(("Response", notice.response))
    if actions := _strings(d.get("actions")):
        facts.append(("Actions", "; ".join(actions)))
    if why := _why(d):
        facts.append(("Why", why))
    if isinstance(hubs := d.get("hubs"), Mapping) and hubs:
        facts.append(("Hubs", ", ".join(f"{h} ({'verified' if ok else 'NOT verified'})" for h, ok in hubs.items())))
    if isinstance(reason := d.get("reason"), str) and reason:
        facts.append(("Reason", reason))
    if notice.actor:
        facts.append(("By", notice.actor))
    if isinstance(state := d.get("state"), str):
        facts.append(("State", state))
    facts.append(("At", notice.at.isoformat(timespec="seconds")))
    link = undo = None
    if notice.decision_id:
        if console_url:
            # The console's page of the person (or device), at this decision: the why, the hubs and the buttons.
            page = f"/console/subjects/{quote(notice.subject, safe=':@')}#d-{quote(notice.decision_id, safe='')}"
            link = console_url.rstrip("/") + page
        if (notice.kind in _BUTTONS and "undo" in _BUTTONS[notice.kind]) or notice.kind is NoticeKind.APPROVED:
            undo = f"`responder undo {notice.decision_id}`" + (f" or {link}" if link else "")
    return Message(
        kind=notice.kind.value, title=title, facts=tuple(facts), decision_id=notice.decision_id,
        buttons=_BUTTONS.get(notice.kind, ()) if notice.decision_id else (), undo=undo, link=link,
        links=tuple(links),
    )  # fmt: skip


def _who(subject: str, devices: object) -> str:
    names = _strings(devices)
    return f"{subject} (devices: {', '.join(names)})" if names else subject


def _why(d: Mapping[str, object]) -> str:
    """The rules that scored and their points, as `rules explain` lists them, and the score they make."""
    parts = []
    contributions = d.get("contributions")
    if isinstance(contributions, Sequence) and not isinstance(contributions, str):
        for c in contributions:
            if isinstance(c, Mapping):
                reason = f" ({c['reason']})" if c.get("reason") else ""
                parts.append(f"{c.get('rule')} +{_points(c.get('points'))}{reason}")
    score = d.get("score")
    text = "; ".join(parts)
    if isinstance(score, int | float):
        text = f"score {_points(score)}" + (f" = {text}" if text else "")
    return text


def _points(value: object) -> str:
    return f"{value:g}" if isinstance(value, int | float) else str(value)


def _strings(value: object) -> list[str]:
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [str(v) for v in value]
    return []
