"""Progress a person can follow: a tqdm bar on a terminal, a plain line every N steps when
stderr is a file or a pipe (a batch job's log), so a long step is never silent.

A line reads ``<desc>: iter 40/200  loss 0.5321  seg 0.4410  lr 9.1e-04  1.52 it/s  ETA
1m45s`` (training) or ``<desc>: 8/27 images  3.1 s/image  ETA 59s`` (evaluation).
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any, Mapping

__all__ = ["Progress", "format_duration"]


def format_duration(seconds: float) -> str:
    """``"45s"``, ``"3m05s"`` or ``"2h07m"``."""
    s = int(max(0.0, seconds) + 0.5)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3e}" if v and (abs(v) < 1e-3 or abs(v) >= 1e4) else f"{v:.4f}"
    return str(v)


class Progress:
    """Counts steps towards ``total``; shows them as tqdm on a terminal, as lines otherwise.

    Args:
        total: the step count at the end.
        initial: steps already done (a resumed run).
        desc: what is counted, printed first on each line.
        every: print a line every this many steps (and at the last one) when not on a
            terminal; 0 prints none.
        unit: "iter" (training: ``iter k/n``), "pixels" (``12.6/40.0 Mpx  3.10 Mpx/s``;
            a bar in px with SI prefixes) or a plural noun (``k/n images``).
        enabled: False shows nothing (processes other than rank 0).
        stream: where to write (stderr).
    """

    def __init__(self, total: int, initial: int = 0, desc: str = "", every: int = 10,
                 unit: str = "iter", enabled: bool = True, stream: IO[str] | None = None
                 ) -> None:
        self.total, self.done, self.desc, self.unit = int(total), int(initial), desc, unit
        self.every = max(0, int(every))
        self.stream = stream if stream is not None else sys.stderr
        self._start_done, self._t0 = self.done, time.perf_counter()
        self._bar = None
        self.enabled = enabled
        if enabled and _isatty(self.stream):
            try:
                from tqdm import tqdm
            except ImportError:  # tqdm is optional: lines then
                tqdm = None
            if tqdm is not None:
                extra = dict(unit="px", unit_scale=True) if unit == "pixels" else {}
                self._bar = tqdm(total=self.total, initial=self.done, desc=desc,
                                 dynamic_ncols=True, file=self.stream, **extra)
        self._calls = 0

    def update(self, terms: Mapping[str, Any] | None = None, n: int = 1) -> None:
        """``n`` more steps (one call: one line at most); ``terms`` (loss terms, lr, ...) go
        on the line / bar."""
        self.done += int(n)
        self._calls += 1
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(int(n))
            if terms:
                self._bar.set_postfix({k: _value(v) for k, v in list(terms.items())[:4]})
            return
        if self.every and (self._calls % self.every == 0 or self.done == self.total):
            self.stream.write(self.line(terms) + "\n")
            self.stream.flush()

    def line(self, terms: Mapping[str, Any] | None = None) -> str:
        """The text of a progress line at the current step."""
        elapsed = time.perf_counter() - self._t0
        steps = self.done - self._start_done
        rate = steps / elapsed if elapsed > 0 else 0.0
        left = self.total - self.done
        if self.unit == "iter":
            parts = [f"{self.desc}: iter {self.done}/{self.total}"]
        elif self.unit == "pixels":
            parts = [f"{self.desc}: {self.done / 1e6:.1f}/{self.total / 1e6:.1f} Mpx"]
        else:
            parts = [f"{self.desc}: {self.done}/{self.total} {self.unit}"]
        parts += [f"{k} {_value(v)}" for k, v in (terms or {}).items()]
        if self.unit == "iter":
            parts.append(f"{rate:.2f} it/s")
        elif self.unit == "pixels":
            parts.append(f"{rate / 1e6:.2f} Mpx/s")
        elif rate:
            parts.append(f"{1.0 / rate:.2f} s/{self.unit.rstrip('s')}")
        if rate and left > 0:
            parts.append(f"ETA {format_duration(left / rate)}")
        return "  ".join(parts)

    def write(self, text: str) -> None:
        """A message that does not break the bar (e.g. a validation result)."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _isatty(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
