"""How a replay runs (the lab or a dry run, the broker, the clock, timeouts) and its one error."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from responder.lab import Lab
from responder.replay.recorder import Recorder


@dataclass
class Options:
    lab: Lab | None = None  # enforce in this lab and probe it; None: dry-run
    dry_run: bool = False
    inventory: Path | None = None  # dry-run: decide against this; with a lab: the lab's hubs and more
    kafka: str | None = None  # the broker's bootstrap address, for cases with kafka deliveries
    speed: float | None = None  # None: virtual clock (no sleeping); X: sleep offset/X between deliveries
    rules: tuple[Path, ...] = (Path("rules"),)
    connectors: Path = Path("connectors")
    settle_timeout_s: float = 30.0
    restore_timeout_s: float = 30.0
    cleanup: bool = True
    recorder: Recorder | None = None  # fed every accepted delivery, as `responder run --record` does

    @property
    def mode(self) -> str:
        return "lab" if self.lab is not None and not self.dry_run else "dry-run"

    @property
    def enforcing_lab(self) -> Lab | None:
        """The lab the run enforces in and probes; None in a dry run (also one given a lab)."""
        return self.lab if not self.dry_run else None


class ReplayError(RuntimeError):
    """The case could not be run (not: its expectations failed)."""
