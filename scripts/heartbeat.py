"""Run a command, pass its output through, and say it is still working when it goes quiet.

    python3 scripts/heartbeat.py [--every 30] [--hint TEXT] -- pip install ...

pip prints nothing for the minutes llama.cpp's wheel compiles; a line every ``--every`` seconds
of silence, with the time elapsed and the last thing the command said, shows it has not hung.
Standard library only: it runs before the virtual environment exists.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

__all__ = ["Heartbeat", "main"]


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"


class Heartbeat:
    """What to say, and when: a line once ``every_s`` has passed without output (or the last beat)."""

    def __init__(self, started: float, every_s: float, hint: str = "") -> None:
        self.started = started
        self.every_s = every_s
        self.hint = hint
        self._last_line = ""
        self._last_at = started

    def heard(self, line: str, now: float) -> None:
        self._last_line, self._last_at = line.strip()[:100], now

    def due(self, now: float) -> str | None:
        if now - self._last_at < self.every_s:
            return None
        self._last_at = now
        note = f"  ... still working, {_clock(now - self.started)} elapsed"
        note += f" (last: {self._last_line})" if self._last_line else ""
        return note + (f"; {self.hint}" if self.hint else "")


def _run(command: Sequence[str], every_s: float, hint: str) -> int:
    out = sys.stdout.buffer
    beat = Heartbeat(time.monotonic(), every_s, hint)
    lock = threading.Lock()
    finished = threading.Event()

    def beats() -> None:
        while not finished.wait(min(every_s, 1.0)):
            with lock:
                note = beat.due(time.monotonic())
                if note:
                    out.write(note.encode() + b"\n")
                    out.flush()

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env) as proc:
        assert proc.stdout is not None
        beater = threading.Thread(target=beats, name="heartbeat", daemon=True)
        beater.start()
        try:
            for line in iter(proc.stdout.readline, b""):
                with lock:
                    out.write(line)
                    out.flush()
                    beat.heard(line.decode(errors="replace"), time.monotonic())
        finally:
            finished.set()
            beater.join()
        return proc.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--every", type=float, default=30.0, help="seconds of silence between heartbeats")
    parser.add_argument("--hint", default="", help="appended to each heartbeat (what is slow, and how slow)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- the command to run")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given")
    return _run(command, args.every, args.hint)


if __name__ == "__main__":
    sys.exit(main())
