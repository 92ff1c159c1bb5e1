"""What the side-by-side benchmarks share: copies of a pristine data directory for each
contender, and rounds that alternate the contenders' order (the one that runs second finds warmer
caches) with each one's median."""

from __future__ import annotations

import statistics
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path


def copy_tree(source: Path, dest: Path) -> Path:
    """`source` copied to `dest` with owners and modes kept (a reflink where the filesystem has them)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", "--reflink=auto", str(source), str(dest)], check=True)
    return dest


def medians(contenders: Mapping[str, Callable[[Path], object]], rounds: int, base: Path) -> dict[str, float]:
    """Each contender timed once per round on the round's work directory (`base/round-N`), in
    the given order in even rounds and reversed in odd ones; prints every time, returns the
    medians."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for r in range(rounds):
        work = base / f"round-{r}"
        for name in list(contenders) if r % 2 == 0 else list(contenders)[::-1]:
            start = time.perf_counter()
            contenders[name](work)
            times[name].append(time.perf_counter() - start)
            print(f"round {r + 1} {name}: {times[name][-1]:.2f} s", flush=True)
    return {name: statistics.median(t) for name, t in times.items()}
