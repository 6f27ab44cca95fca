"""A case's expectations against what the run decided and did, as a diff: pure, one line per difference.

Lines start with `-` (expected, missing), `+` (there, not expected), `~` (there, but different) or `!`
(a subject that had to stay untouched was acted on). Reachability is probed in the lab; whether an
outcome meets a check is decided here.
"""

from __future__ import annotations

from collections.abc import Sequence

from responder.core.identity import IdentityMap
from responder.replay.case import Expect, ExpectedDecision, Reach
from responder.replay.report import DecisionView


def subject_key(subject: str) -> str:
    """A subject as a case may write it (`alice@example.com`, `admin1`) as the engine keys it."""
    if ":" in subject:
        return subject
    return f"user:{subject}" if "@" in subject else f"device:{subject}"


def enforced(decisions: Sequence[DecisionView]) -> list[str]:
    """The actions carried out on the hubs, sorted."""
    return sorted({a.action for d in decisions for a in d.intents if a.kind == "apply" and a.state == "done"})


def diff(expect: Expect, decisions: Sequence[DecisionView], *, lab_mode: bool, identity: IdentityMap) -> list[str]:
    """Every difference between `expect` and `decisions`, reachability aside. In a dry run nothing is
    enforced, so decision states and enforced actions are not compared."""
    failures = decision_failures(expect.decisions, decisions, lab_mode=lab_mode)
    if expect.enforced is not None and lab_mode:
        failures += enforcement_failures(expect.enforced, decisions)
    failures += untouched_failures(expect.untouched, decisions, identity)
    return failures


def decision_failures(
    expected: Sequence[ExpectedDecision], decisions: Sequence[DecisionView], *, lab_mode: bool
) -> list[str]:
    """Exact: each expected decision matches one decision of the same subject and response; any left over
    is unexpected."""
    failures: list[str] = []
    unmatched = list(decisions)
    for exp in expected:
        got = next((d for d in unmatched if (d.subject, d.response) == (exp.subject, exp.response)), None)
        label = f"{exp.subject} -> {exp.response}"
        if got is None:
            state = f" [{exp.state.value}]" if exp.state else ""
            others = [f"{d.subject} -> {d.response} [{d.state}]" for d in unmatched if d.subject == exp.subject]
            hint = f"; got instead: {'; '.join(others)}" if others else "; got nothing for this subject"
            failures.append(f"- expected: {label}{state}{hint}")
            continue
        unmatched.remove(got)
        if exp.state is not None and lab_mode and got.state != exp.state.value:
            failures.append(f"~ {label}: state: expected {exp.state.value}, got {got.state}")
        if exp.approval is not None and got.approval != exp.approval:
            failures.append(f"~ {label}: approval: expected {exp.approval}, got {got.approval}")
        if exp.actions is not None:
            wanted, actual = sorted(exp.actions), sorted(got.actions)
            failures += [f"~ {label}: action missing: {a}" for a in wanted if a not in actual]
            failures += [f"~ {label}: action not expected: {a}" for a in actual if a not in wanted]
    failures += [f"+ unexpected: {d.line()}" for d in unmatched]
    return failures


def enforcement_failures(expected: Sequence[str], decisions: Sequence[DecisionView]) -> list[str]:
    """Exact: the actions carried out are the ones expected, and each was verified on its hub."""
    done, wanted = enforced(decisions), sorted(expected)
    failures = [f"- enforced, missing: {a}" for a in wanted if a not in done]
    failures += [f"+ enforced, not expected: {a}" for a in done if a not in wanted]
    unverified = {
        a.action for d in decisions for a in d.intents
        if a.kind == "apply" and a.state == "done" and a.verified is not True
    }  # fmt: skip
    failures += [f"~ enforced but not verified: {a}" for a in sorted(unverified)]
    return failures


def untouched_failures(untouched: Sequence[str], decisions: Sequence[DecisionView], identity: IdentityMap) -> list[str]:
    """No decision is about an untouched subject, and no action names one of its devices' addresses or
    peers."""
    failures: list[str] = []
    for subject in untouched:
        key = subject_key(subject)
        peers = identity.subject(key).peers
        targets = {str(p.tunnel_ip) for p in peers} | {p.name for p in peers}
        for d in decisions:
            if d.subject == key:
                failures.append(f"! untouched {key}: decided {d.line()}")
                continue
            hit = [a for a in d.actions if set(a.split()[2:]) & targets]
            if hit:
                failures.append(f"! untouched {key}: {d.id} ({d.subject} -> {d.response}) acts on it: {', '.join(hit)}")
    return failures


def reach_met(reach: Reach, outcome: str) -> bool:
    """Whether a probe's outcome (open, dropped, refused) is what the check expects; closed: not open."""
    return outcome != "open" if reach.expect == "closed" else outcome == reach.expect
