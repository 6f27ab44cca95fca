"""The incident case format: one YAML file per incident (see replay/README.md).

A case says what ran (the lab it needs, the rules), what arrived (the deliveries, in order, each with its
offset from the start, the route it came by, its headers and its body exactly as the source sent it), and
what must follow (decisions, the exact enforced actions, subjects nobody may touch, and reachability
checked with packets afterwards).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from responder.ingest import entra
from responder.journal import DecisionState

REDACTED = entra.REDACTED
"""In a header or Entra `clientState`: the run's own secret goes here (recorded drafts carry this)."""

_OFFSET = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
VIA = re.compile(r"^(okta|entra|entra-lifecycle|ssf|kafka:[a-z][a-z0-9_-]{0,31})$")


class CaseError(ValueError):
    """A case file that cannot be read or does not validate; the message names the file and the field."""


def parse_offset(value: Any) -> float:
    """Seconds from a number or a string like '0s', '250ms', '90s', '5m', '4h', '1d' (zero allowed)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (m := _OFFSET.match(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise ValueError("an offset is a number of seconds or a string like '0s', '90s', '5m', '4h'")
    if seconds < 0:
        raise ValueError("an offset cannot be negative")
    return seconds


def format_offset(seconds: float) -> str:
    """The shortest exact spelling: '0s', '1.25s', '5m', '2h'."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{round(seconds, 3):g}s"


Offset = Annotated[float, BeforeValidator(parse_offset)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeliverySpec(_Spec):
    at: Offset = 0.0
    via: str = Field(pattern=VIA.pattern, description="okta | entra | entra-lifecycle | ssf | kafka:<format>")
    headers: dict[str, str] = {}
    body: Any = None
    body_file: Path | None = None
    key: str | None = Field(default=None, description="Kafka only: the message key")
    status: int | None = Field(default=None, description="Webhooks only: the expected HTTP status (default 2xx)")
    note: str = ""

    @model_validator(mode="after")
    def _one_body(self) -> DeliverySpec:
        if (self.body is None) == (self.body_file is None):
            raise ValueError("give exactly one of body and body_file")
        if self.key is not None and not self.via.startswith("kafka:"):
            raise ValueError("key is for kafka deliveries only")
        return self

    @property
    def kafka_format(self) -> str | None:
        return self.via.split(":", 1)[1] if self.via.startswith("kafka:") else None


class ExpectedDecision(_Spec):
    subject: str = Field(min_length=1)
    response: str = Field(min_length=1)
    state: DecisionState | None = Field(default=None, description="Checked with the lab (in dry-run all are dry_run)")
    approval: bool | None = None
    actions: list[str] | None = Field(default=None, description="The decision's exact actions (as rule tests)")


class Reach(_Spec):
    src: str = Field(min_length=1, description="A lab node")
    dst: str = Field(min_length=1, description="A lab node (its tunnel address) or an address")
    port: int | None = Field(default=9090, ge=1, le=65535)
    proto: Literal["tcp", "icmp"] = "tcp"
    expect: Literal["open", "dropped", "refused", "closed"] = Field(
        description="closed: anything but open (dropped or refused)"
    )


class Expect(_Spec):
    decisions: list[ExpectedDecision] = Field(default=[], description="Exact: any other decision is a failure")
    enforced: list[str] | None = Field(default=None, description="The exact set of actions executed on the hubs")
    untouched: list[str] = Field(default=[], description="Subjects (user:, device:, peer:, ip:) nothing may act on")
    reachability: list[Reach] = []


class LabSpec(_Spec):
    hubs: int = Field(default=1, ge=1, le=200)
    inventory: Path | None = Field(
        default=None, description="Dry-run only: the inventory to decide against (default: the lab's shape)"
    )


class SsfSpec(_Spec):
    issuer: str | None = None
    audience: str | None = None


class CaseSpec(_Spec):
    name: str = Field(min_length=1)
    description: str = ""
    lab: LabSpec = LabSpec()
    rules: list[Path] | None = Field(default=None, description="Rule files/directories; default: the repo's rules/")
    start: AwareDatetime | None = Field(default=None, description="The virtual clock's start (default: now)")
    ssf: SsfSpec = SsfSpec()
    deliveries: list[DeliverySpec] = Field(min_length=1)
    advance: Offset | None = Field(
        default=None, description="After the last delivery, move the clock to this offset (TTLs run out)"
    )
    expect: Expect = Expect()

    @model_validator(mode="after")
    def _ordered(self) -> CaseSpec:
        offsets = [d.at for d in self.deliveries]
        if offsets != sorted(offsets):
            raise ValueError("deliveries must be in the order of their `at` offsets")
        if self.advance is not None and self.advance < offsets[-1]:
            raise ValueError("advance must not be before the last delivery")
        return self


@dataclass(frozen=True)
class Case:
    """A validated case and the file it came from (relative paths in it are relative to that file)."""

    spec: CaseSpec
    path: Path

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def base(self) -> Path:
        return self.path.parent

    def resolve(self, path: Path) -> Path:
        return path if path.is_absolute() else self.base / path

    def body_bytes(self, delivery: DeliverySpec) -> bytes:
        """The body as sent: a file's exact bytes, a string as UTF-8, anything else as compact JSON."""
        if delivery.body_file is not None:
            return self.resolve(delivery.body_file).read_bytes()
        if isinstance(delivery.body, str):
            return delivery.body.encode()
        return json.dumps(delivery.body, separators=(",", ":")).encode()

    def body_json(self, delivery: DeliverySpec) -> Any:
        if delivery.body_file is not None or isinstance(delivery.body, str):
            return json.loads(self.body_bytes(delivery))
        return delivery.body

    @property
    def vias(self) -> set[str]:
        return {d.via for d in self.spec.deliveries}


def load_case(path: Path) -> Case:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CaseError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise CaseError(f"{path}: not valid YAML: {exc}") from None
    try:
        spec = CaseSpec.model_validate(data)
    except ValidationError as exc:
        lines = [f"  {'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in exc.errors()]
        raise CaseError(f"{path}: invalid case:\n" + "\n".join(lines)) from None
    case = Case(spec, path)
    for d in spec.deliveries:
        if d.body_file is not None and not case.resolve(d.body_file).is_file():
            raise CaseError(f"{path}: body_file {d.body_file} does not exist")
    return case


def case_files(paths: Iterable[Path]) -> list[Path]:
    """The case files named, directories expanded to their *.yaml/*.yml (sorted, not recursive)."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out += sorted(f for f in p.iterdir() if f.suffix in {".yaml", ".yml"} and f.is_file())
        else:
            out.append(p)
    return out


def load_cases(paths: Iterable[Path]) -> list[Case]:
    return [load_case(p) for p in case_files(paths)]
