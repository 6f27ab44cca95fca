"""Running the lab's commands: a fixed argv, never a shell, always a timeout."""

from __future__ import annotations

import asyncio
import shlex
from dataclasses import dataclass


class CommandError(RuntimeError):
    def __init__(self, argv: tuple[str, ...], returncode: int | None, stderr: str) -> None:
        status = "timed out" if returncode is None else f"exit {returncode}"
        super().__init__(f"{shlex.join(argv)}: {status}: {stderr.strip()}")
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr


@dataclass(frozen=True, slots=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


async def run(*argv: str, stdin: str | None = None, timeout: float = 10.0, check: bool = True) -> Result:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise CommandError(tuple(argv), None, f"no answer within {timeout:g}s") from None
    except asyncio.CancelledError:
        proc.kill()
        await proc.wait()
        raise
    result = Result(tuple(argv), proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace"))
    if check and not result.ok:
        raise CommandError(result.argv, result.returncode, result.stderr)
    return result
