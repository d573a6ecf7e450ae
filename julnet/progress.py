"""Progress lines and quiet logs: one reporter for long loops, one logging setup for the CLI, jobs and demo.

`Progress` logs plain lines (never redrawn, so they read the same in a terminal, a log file or `ray job logs`):

    [preprocess part-1a2b] 150/~450 frames, video 3/6 bbaf2n | 8.10 frames/s | eta 0:00:37
    [preprocess part-1a2b] done: 450 frames in 0:00:55 | 8.18 frames/s, 6 videos

at most one every `every_s` seconds (default JULNET_PROGRESS_EVERY_S, else 10), plus a final line. The rate is
the average since the reporter started (work done before it, e.g. before a resume, is not counted) and is
shown per second, minute or hour, whichever reads best; the ETA is the remaining work at that rate.

Why not tqdm: its bar is redrawn with carriage returns even when the stream is a file, and it writes around the
logging setup; these lines go through `logging` (timestamp, level, the redaction filter, Ray's log_to_driver) and
read the same everywhere. So julnet does not depend on tqdm (nothing here imports it; the lpips wheel is only read
for its head weights, never imported).

`setup_logging` is the one log setup: a single line format on stderr and, when stderr is not a terminal,
the progress bars of Ray Data and of MLflow's artifact transfers off (`quiet_ray`), since bars redrawn with
carriage returns flood a log file. `ray_runtime_env` carries both to the Ray workers of a job started here.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from julnet.redact import redact_output

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
EVERY_S_ENV = "JULNET_PROGRESS_EVERY_S"
DEFAULT_EVERY_S = 10.0
# Ray Data reads this when ray.data.context is imported (its default for DataContext.enable_progress_bars).
RAY_DATA_BARS_ENV = "RAY_DATA_DISABLE_PROGRESS_BARS"
# MLflow reads this at every artifact upload or download.
MLFLOW_BARS_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
QUIET_ENV = {RAY_DATA_BARS_ENV: "1", MLFLOW_BARS_ENV: "false"}

log = logging.getLogger(__name__)


def default_every_s() -> float:
    """Seconds between progress lines: JULNET_PROGRESS_EVERY_S when set (a number >= 0), else 10."""
    value = os.environ.get(EVERY_S_ENV, "")
    try:
        return max(float(value), 0.0) if value.strip() else DEFAULT_EVERY_S
    except ValueError:
        log.warning("%s=%r is not a number of seconds; using %g", EVERY_S_ENV, value, DEFAULT_EVERY_S)
        return DEFAULT_EVERY_S


def clock(seconds: float) -> str:
    """H:MM:SS."""
    seconds = max(int(seconds), 0)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def rate_text(per_second: float, unit: str, per: str | None = None) -> str:
    """A rate per `per` ("s", "min" or "h"); by default the first of them that reads >= 0.1: `2.10 it/s`, `3.0 trials/h`."""
    scale = {"s": 1, "min": 60, "h": 3600}
    if per is None:
        per = next((p for p in ("s", "min") if per_second * scale[p] >= 0.1), "h") if per_second > 0 else "s"
    value = per_second * scale[per]
    text = f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}" if value >= 0.1 or value == 0 else f"{value:.2g}"
    return f"{text} {unit}/{per}"


def _count(n: float) -> str:
    return f"{n:g}" if isinstance(n, float) and not n.is_integer() else str(int(n))


class Progress:
    """Periodic progress lines: `what done/total unit[, note] | rate | eta H:MM:SS`, and a final line.

    update() counts work (`done=` absolute, or `advance=`) and logs a line when `every_s` seconds have passed
    since the last one, unless all of an exact total is done (or `force=True`: for callers that choose their
    own cadence); close() logs the final line.
    `done` at construction is work done before (a resumed run): it is shown but not counted in the rate.
    A total not known exactly is given with `estimated=True` and shown as `~N`; without a total there is no ETA.
    The rate is in `rate_unit` (default: `unit`) per `per` ("s", "min", "h"; default: whichever reads best).
    """

    def __init__(
        self,
        what: str,
        total: float | None = None,
        unit: str = "items",
        *,
        done: float = 0,
        rate_unit: str | None = None,
        per: str | None = None,
        every_s: float | None = None,
        estimated: bool = False,
        logger: logging.Logger | None = None,
        level: int = logging.INFO,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.what, self.total, self.unit, self.rate_unit, self.per = what, total, unit, rate_unit or unit, per
        self.done = self.start = done
        self.estimated = estimated
        self.every_s = default_every_s() if every_s is None else every_s
        self.logger, self.level, self.clock = logger or log, level, clock
        self.t0 = self.last = clock()
        self.lines = 0

    def elapsed(self) -> float:
        """Seconds since the reporter started."""
        return self.clock() - self.t0

    def rate(self) -> float:
        """Units per second since the reporter started (0 before any time has passed)."""
        elapsed = self.elapsed()
        return (self.done - self.start) / elapsed if elapsed > 0 else 0.0

    def eta(self) -> float | None:
        """Seconds left at the current rate; None without a total or before any progress."""
        rate = self.rate()
        if self.total is None or rate <= 0:
            return None
        return max(self.total - self.done, 0) / rate

    def update(
        self, done: float | None = None, *, advance: float = 0, total: float | None = None, estimated: bool | None = None,
        note: str = "", force: bool = False,
    ) -> bool:
        """Count progress; log a line when it is time (or `force`). Returns whether a line was logged."""
        if done is not None:
            self.done = done
        self.done += advance
        if total is not None:
            self.total = total
        if estimated is not None:
            self.estimated = estimated
        now = self.clock()
        finished = self.total is not None and not self.estimated and self.done >= self.total  # close() says it
        if not force and (now - self.last < self.every_s or finished):
            return False
        self.last = now
        self._emit(self.line(note))
        return True

    def line(self, note: str = "") -> str:
        """The progress line as it would be logged now."""
        total = "" if self.total is None else f"/{'~' if self.estimated else ''}{_count(self.total)}"
        eta = self.eta()
        return (f"{self.what} {_count(self.done)}{total} {self.unit}{', ' + note if note else ''}"
                f" | {rate_text(self.rate(), self.rate_unit, self.per)} | eta {'?' if eta is None else clock(eta)}")

    def close(self, note: str = "") -> str:
        """Log (and return) the final line: the work done, the time it took and the average rate."""
        text = (f"{self.what} done: {_count(self.done)} {self.unit} in {clock(self.elapsed())}"
                f" | {rate_text(self.rate(), self.rate_unit, self.per)}{', ' + note if note else ''}")
        self._emit(text)
        return text

    def _emit(self, text: str) -> None:
        self.lines += 1
        self.logger.log(self.level, "%s", text)


# ---- quiet logs ----------------------------------------------------------------------------------------


def on_terminal(stream: TextIO | None = None) -> bool:
    """Whether `stream` (default: stderr) is an interactive terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def quiet_ray(stream: TextIO | None = None) -> bool:
    """Ray Data's progress bars off when `stream` (default: stderr) is not a terminal; returns whether it is one.

    Off means: RAY_DATA_DISABLE_PROGRESS_BARS=1 in this process's environment, so the Ray processes a
    `ray.init()` here starts inherit it (Ray Data reads it for every new DataContext), and, in the current
    DataContext, `enable_progress_bars` and `enable_operator_progress_bars` False: the settings Ray Data runs
    with in this process and that Ray Train copies to its workers. Ray Data is imported only if it already is
    (importing it costs every CLI start 3-4 s); imported later, it reads the variable and starts with its bars
    off. On a terminal nothing changes.
    Datasets made in other processes follow their own DataContext: see `keep_progress_bar_settings`.
    MLflow's artifact transfer bars go off the same way (MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false).
    """
    if on_terminal(stream):
        return True
    os.environ.update(QUIET_ENV)
    if "ray.data" in sys.modules:  # read the variable at import already: tell its current DataContext too
        from ray.data import DataContext

        context = DataContext.get_current()
        context.enable_progress_bars = False
        context.enable_operator_progress_bars = False
    return False


def keep_progress_bar_settings(make: Callable[[], Any]) -> Callable[[], Any]:
    """A dataset factory whose datasets, wherever they are made, show progress bars as this process would.

    Ray Train calls dataset factories in its controller actor, whose DataContext is not this one; the dataset
    carries its DataContext to the actor that executes it (Ray Data's split coordinator), which draws the bars.
    """
    from ray.data import DataContext

    here = DataContext.get_current()
    bars, operator_bars = here.enable_progress_bars, here.enable_operator_progress_bars

    def made() -> Any:
        dataset = make()
        dataset.context.enable_progress_bars = bars
        dataset.context.enable_operator_progress_bars = operator_bars
        return dataset

    return made


def setup_logging(level: int = logging.INFO, *, others: int | None = None, stream: TextIO | None = None) -> bool:
    """Log lines in one format on stderr: julnet's at `level`, other libraries' at `others` (default: `level`).

    Also quiet_ray(): Ray's progress bars off unless stderr is a terminal (returns whether it is one), and
    redact_output(): no credential reaches the terminal or a job's log.
    """
    redact_output()
    _log_format(level, others, stream)
    return quiet_ray(stream)


def _log_format(level: int, others: int | None, stream: TextIO | None) -> None:
    logging.basicConfig(level=level if others is None else others, format=LOG_FORMAT, stream=stream)
    logging.getLogger("julnet").setLevel(level)


def setup_ray_worker() -> None:
    """Ray worker processes of a job that ray_runtime_env set up: julnet's INFO lines, and this cluster's address.

    Ray leaves a task's root logger unconfigured (warnings only), so a shard task's progress would be lost:
    julnet logs at INFO, other libraries warnings only (Ray Train reconfigures the root logger of its
    workers; julnet's level set here stays). Progress bars are left to the environment ray_runtime_env gives
    (importing Ray Data in every worker would cost seconds).

    RAY_ADDRESS is set to this worker's own cluster: Ray code that looks a cluster up without an address
    (Ray Train's placement-group cleaner queries the State API that way, every second) otherwise fails with
    "Found multiple active Ray instances" when other Ray clusters run on the machine.
    """
    import ray

    redact_output()
    _log_format(logging.INFO, logging.WARNING, None)
    if ray.is_initialized():
        os.environ.setdefault("RAY_ADDRESS", ray.get_runtime_context().gcs_address)


def ray_runtime_env(stream: TextIO | None = None) -> dict[str, Any]:
    """runtime_env for a `ray.init()` that starts (or joins as) a job: its workers set up by setup_ray_worker
    and, when `stream` (default stderr) is not a terminal, with the progress bars off (quiet_ray)."""
    env: dict[str, Any] = {"worker_process_setup_hook": f"{__name__}.setup_ray_worker"}
    if not on_terminal(stream):
        env["env_vars"] = dict(QUIET_ENV)
    return env
