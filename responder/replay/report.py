"""What a replay found: the timeline (deliveries, decisions, actions, verification, with latencies),
the expectation failures as a diff, and the same as data for `--json`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from responder.replay.case import format_offset


@dataclass
class ActionView:
    action: str  # as rule tests spell it: "delete_element hub1 admin_devices 10.100.0.10"
    kind: str  # apply | undo
    state: str
    verified: bool | None
    result: str | None
    latency_ms: float | None


@dataclass
class DecisionView:
    id: str
    subject: str
    response: str
    state: str
    approval: bool
    actions: list[str]  # what the decision asks for
    intents: list[ActionView]  # what was done about it
    delivery: int | None  # the delivery (1-based) after which it appeared
    latency_ms: float | None  # from that delivery being sent to the decision being recorded
    score: float | None = None

    def line(self) -> str:
        flags = " (approval)" if self.approval else ""
        return f"{self.subject} -> {self.response} [{self.state}]{flags}: {', '.join(sorted(self.actions)) or '-'}"


@dataclass
class Step:
    """One line of the timeline."""

    kind: str  # delivery | decision | action | clock | probe | cleanup
    at: str  # the case offset it belongs to
    text: str
    latency_ms: float | None = None
    ok: bool = True
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class CaseReport:
    name: str
    path: str
    mode: str  # lab | dry-run
    failures: list[str] = field(default_factory=list)
    timeline: list[Step] = field(default_factory=list)
    decisions: list[DecisionView] = field(default_factory=list)
    enforced: list[str] = field(default_factory=list)
    cleanup: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.failures

    def step(self, kind: str, at: float, text: str, **extra: Any) -> Step:
        """Add a line to the timeline at case offset `at` (seconds)."""
        step = Step(kind, f"+{format_offset(at)}", text, **extra)
        self.timeline.append(step)
        return step

    def fail(self, message: str) -> None:
        self.failures.append(message)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "mode": self.mode,
            "passed": self.passed,
            "failures": list(self.failures),
            "timeline": [asdict(s) for s in self.timeline],
            "decisions": [asdict(d) for d in self.decisions],
            "enforced": list(self.enforced),
            "cleanup": list(self.cleanup),
            "duration_s": round(self.duration_s, 3),
        }

    @property
    def diff(self) -> str:
        return "\n".join(self.failures)

    def render(self) -> str:
        lines = [f"== {self.name}  ({self.path}, {self.mode})"]
        for s in self.timeline:
            latency = f"  (+{s.latency_ms:.0f} ms)" if s.latency_ms is not None else ""
            mark = "" if s.ok else "  <-- !"
            indent = {"decision": "  ", "action": "    "}.get(s.kind, "")
            lines.append(f"  {s.at:>6}  {s.kind:<8}  {indent}{s.text}{latency}{mark}")
        for c in self.cleanup:
            lines.append(f"  {'after':>6}  {'cleanup':<8}  {c}")
        if self.passed:
            lines.append(f"  PASS in {self.duration_s:.1f}s")
        else:
            lines.append(f"  FAIL ({len(self.failures)}) in {self.duration_s:.1f}s: expected vs got")
            lines += [f"    {f}" for f in self.failures]
        return "\n".join(lines)


def render_all(reports: list[CaseReport]) -> str:
    out = [r.render() for r in reports]
    failed = [r.name for r in reports if not r.passed]
    summary = f"{len(reports) - len(failed)} of {len(reports)} cases passed"
    out.append(summary + (f"; failed: {', '.join(failed)}" if failed else ""))
    return "\n\n".join(out)
