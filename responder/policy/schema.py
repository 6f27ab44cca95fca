"""The rule-file schema (pydantic). Unknown keys are errors: a typo must not silently disable a rule."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from responder.core.actions import ActionType
from responder.core.events import SeverityField, Source

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def _duration(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise ValueError("a duration is a number of seconds or a string like '90s', '15m', '4h', '7d'")
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return seconds


def _listify(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


Duration = Annotated[float, BeforeValidator(_duration)]
RuleId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")]
StrList = Annotated[list[str], BeforeValidator(_listify)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SignalSpec(_Spec):
    id: RuleId
    description: str = ""
    source: Source | None = None
    type: StrList = []
    product: StrList = []
    min_severity: SeverityField | None = None
    when: str | None = Field(default=None, description="CEL over event, subject, signals")
    points: float = Field(ge=0, le=1000, description="0: it scores nothing, only lifts a response (lifted_by)")
    window: Duration = Field(description="How long a hit counts at all")
    half_life: Duration | None = Field(default=None, description="Points halve every half_life")
    requires: StrList = Field(default=[], description="Fires only while the subject holds one of these signals")
    cap: float | None = Field(default=None, gt=0, description="Most this signal adds, however often it fires")
    reason: str = Field(min_length=1, max_length=500)


class SetsArgument(_Spec):
    sets: StrList = []


class ActionSpec(_Spec):
    """One action of a response: a bare name (`remove_peer`) or `{delete_element: {sets: [admin_devices]}}`."""

    type: ActionType
    sets: tuple[str, ...] = ()


def _action(value: Any) -> Any:
    if isinstance(value, str):
        return {"type": value}
    if isinstance(value, dict) and len(value) == 1:
        ((name, args),) = value.items()
        parsed = SetsArgument.model_validate(args or {})
        return {"type": name, "sets": tuple(parsed.sets)}
    raise ValueError("an action is a name (e.g. remove_peer) or a one-key mapping like {delete_element: {sets: [...]}}")


class ResponseSpec(_Spec):
    id: RuleId
    description: str = ""
    level: int = Field(ge=1, le=100, description="Higher replaces lower (escalation)")
    min_score: float | None = Field(default=None, ge=0)
    any_signals: StrList = []
    all_signals: StrList = []
    when: str | None = Field(default=None, description="CEL over score, signals, subject, event")
    actions: list[Annotated[ActionSpec, BeforeValidator(_action)]] = Field(min_length=1)
    ttl: Duration | None = None
    approval: bool | str = Field(default=False, description="true, or a CEL condition that requires approval")
    dry_run: bool = False
    lifted_by: StrList = Field(
        default=[], description="Signals that undo this response's live decisions on the subject (a reactivation)"
    )
    approval_timeout: Duration | None = Field(
        default=None, description="How long a decision waits for an approval before on_timeout happens"
    )
    on_timeout: Literal["reject", "escalate", "approve"] = Field(
        default="reject",
        description="reject or approve it (by policy:approval-timeout), or escalate: tell escalate_to, wait as long"
        " again, then reject",
    )
    escalate_to: str | None = Field(
        default=None, min_length=1, max_length=64, description="The notify channel an escalation goes to"
    )

    @model_validator(mode="after")
    def _timeout_consistent(self) -> ResponseSpec:
        # Each of these would be silently ignored otherwise: a timeout that never fires, or nowhere to escalate.
        if self.approval_timeout is None:
            if "on_timeout" in self.model_fields_set or self.escalate_to is not None:
                raise ValueError("on_timeout and escalate_to need approval_timeout")
            return self
        if self.approval is False:
            raise ValueError("approval_timeout needs approval (true or a condition)")
        if self.on_timeout == "escalate" and self.escalate_to is None:
            raise ValueError("on_timeout: escalate needs escalate_to (a notify channel)")
        if self.on_timeout != "escalate" and self.escalate_to is not None:
            raise ValueError("escalate_to is only used with on_timeout: escalate")
        return self


class ProtectedSpec(_Spec):
    users: StrList = []
    devices: StrList = []
    keys: StrList = []
    addresses: StrList = Field(default=[], description="Addresses or networks (CIDR)")
    hubs: bool = Field(default=True, description="Never act on a hub's own address")
    management: bool = Field(default=True, description="Never act on the responder's management address")


class SettingsSpec(_Spec):
    max_score: float = Field(default=100, gt=0)
    quarantine_set: str = Field(default="quarantine", pattern=r"^[A-Za-z][A-Za-z0-9_]{0,31}$")
    dry_run: bool = False


class RuleFileSpec(_Spec):
    version: Literal[1] = 1
    settings: SettingsSpec | None = None
    protected: ProtectedSpec | None = None
    signals: list[SignalSpec] = []
    responses: list[ResponseSpec] = []
