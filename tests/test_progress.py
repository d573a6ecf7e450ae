"""julnet.progress: periodic progress lines (a fake clock), and Ray's progress bars off when not on a terminal."""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from julnet import progress
from julnet.progress import Progress, clock, keep_progress_bar_settings, quiet_ray, rate_text
from tests.conftest import REPO


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def lines(caplog: pytest.LogCaptureFixture) -> Callable[[], list[str]]:
    """The progress lines logged so far."""
    caplog.set_level(logging.INFO, logger="julnet.progress")
    return lambda: caplog.messages


def test_lines_at_most_every_interval_with_rate_eta_and_a_final_line(lines: Callable[[], list[str]]) -> None:
    t = FakeClock()
    p = Progress("[work]", 100, "frames", every_s=10, clock=t)
    for _ in range(4):  # 4 frames in 4 s: too soon for a line
        t.now += 1
        assert p.update(advance=1) is False
    t.now += 6
    assert p.update(advance=6, note="video 1/2 a") is True  # 10 frames in 10 s
    assert lines() == ["[work] 10/100 frames, video 1/2 a | 1.00 frames/s | eta 0:01:30"]
    t.now += 5
    p.update(advance=5)  # 5 s after the last line: nothing
    assert p.update(advance=0, force=True) is True  # a caller with its own cadence
    assert lines()[-1] == "[work] 15/100 frames | 1.00 frames/s | eta 0:01:25"
    t.now += 85
    assert p.update(100) is False  # all done: the final line says it
    final = p.close("2 videos")
    assert final == "[work] done: 100 frames in 0:01:40 | 1.00 frames/s, 2 videos" and lines()[-1] == final
    assert len(lines()) == 3


def test_interval_from_the_environment(monkeypatch: pytest.MonkeyPatch, lines: Callable[[], list[str]]) -> None:
    monkeypatch.setenv("JULNET_PROGRESS_EVERY_S", "0.5")
    t = FakeClock()
    p = Progress("[w]", 10, clock=t)
    assert p.every_s == 0.5
    t.now += 0.4
    assert not p.update(advance=1)
    t.now += 0.1
    assert p.update(advance=1)
    monkeypatch.setenv("JULNET_PROGRESS_EVERY_S", "soon")
    assert Progress("[w]").every_s == 10.0
    monkeypatch.delenv("JULNET_PROGRESS_EVERY_S")
    assert Progress("[w]").every_s == 10.0


def test_unknown_or_estimated_totals_and_work_done_before(lines: Callable[[], list[str]]) -> None:
    t = FakeClock()
    p = Progress("[w]", None, "frames", every_s=0, clock=t)
    t.now += 2
    p.update(advance=3)
    assert lines()[-1] == "[w] 3 frames | 1.50 frames/s | eta ?"
    p.update(total=12, estimated=True)
    assert lines()[-1] == "[w] 3/~12 frames | 1.50 frames/s | eta 0:00:06"

    resumed = Progress("[w]", 100, "steps", done=40, rate_unit="it", per="s", every_s=0, clock=t)
    assert resumed.line() == "[w] 40/100 steps | 0.00 it/s | eta ?"
    t.now += 10
    resumed.update(50)  # 10 steps in 10 s: the 40 before do not count
    assert lines()[-1] == "[w] 50/100 steps | 1.00 it/s | eta 0:00:50"


@pytest.mark.parametrize(
    "per_second, per, text",
    [(2.1, None, "2.10 it/s"), (15.26, None, "15.3 it/s"), (250.4, None, "250 it/s"), (0.05, None, "3.00 it/min"),
     (1 / 1800, None, "2.00 it/h"), (0.0, None, "0.00 it/s"), (0.002, "s", "0.002 it/s"), (0.5, "h", "1800 it/h")],
)
def test_rates_read_in_a_fitting_unit(per_second: float, per: str | None, text: str) -> None:
    assert rate_text(per_second, "it", per) == text


def test_clock() -> None:
    assert [clock(s) for s in (0, 59.9, 61, 3600 * 27 + 62)] == ["0:00:00", "0:00:59", "0:01:01", "27:01:02"]


def test_sweep_lines_count_only_the_trials_ended_since_a_resume(caplog: pytest.LogCaptureFixture) -> None:
    from types import SimpleNamespace

    from julnet.sweep import SweepProgress

    caplog.set_level(logging.INFO, logger="julnet.sweep")
    callback = SweepProgress("s1", "eval_mouth_l1", 4)
    callback.setup(total_num_samples=1)  # Tune's count before a grid expands; the sweep's own count wins
    t = FakeClock()
    callback.lines.clock, callback.lines.t0 = t, t()
    before = [SimpleNamespace(trial_id=i, status="TERMINATED") for i in "ab"]  # ended before the driver was restarted
    t.now += 1800
    trial = SimpleNamespace(trial_id="c", status="RUNNING", last_result={"global_step": 40, "eval_mouth_l1": 0.1234})
    callback.on_trial_complete(1, [*before, trial], trial)
    assert caplog.messages[-1] == "[sweep s1] 3/4 trials, trial c ended at step 40 with eval_mouth_l1=0.1234 | 2.00 trials/h | eta 0:30:00"


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def data_context(monkeypatch: pytest.MonkeyPatch):
    """The process's Ray DataContext, restored after the test (and the environment variables quiet_ray sets)."""
    from ray.data import DataContext

    for name in progress.QUIET_ENV:
        monkeypatch.setenv(name, "")  # recorded as it was before: undone after the test
        monkeypatch.delenv(name)
    context = DataContext.get_current()
    saved = context.enable_progress_bars, context.enable_operator_progress_bars
    context.enable_progress_bars = context.enable_operator_progress_bars = True
    yield context
    context.enable_progress_bars, context.enable_operator_progress_bars = saved


def test_quiet_ray_turns_ray_data_bars_off_only_when_not_on_a_terminal(data_context) -> None:
    assert quiet_ray(Tty()) is True
    assert (data_context.enable_progress_bars, data_context.enable_operator_progress_bars) == (True, True)
    assert not set(progress.QUIET_ENV) & set(os.environ)
    assert "env_vars" not in progress.ray_runtime_env(Tty())

    assert quiet_ray(io.StringIO()) is False
    assert (data_context.enable_progress_bars, data_context.enable_operator_progress_bars) == (False, False)
    # for the Ray processes a ray.init() here starts, and MLflow's artifact bars
    assert (os.environ["RAY_DATA_DISABLE_PROGRESS_BARS"], os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"]) == ("1", "false")
    assert progress.ray_runtime_env(io.StringIO())["env_vars"] == progress.QUIET_ENV


def test_quiet_ray_leaves_ray_data_unimported_and_its_later_import_starts_with_bars_off() -> None:
    """Importing Ray Data costs every CLI start seconds; a process that imports it after quiet_ray gets no bars."""
    code = (
        "import io, sys\n"
        "from julnet.progress import quiet_ray\n"
        "assert quiet_ray(io.StringIO()) is False\n"
        "assert 'ray.data' not in sys.modules\n"
        "from ray.data import DataContext\n"
        "print(DataContext.get_current().enable_progress_bars)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in progress.QUIET_ENV}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "False", proc.stderr[-2000:]


def test_a_dataset_factory_carries_the_setting_to_the_process_that_calls_it(data_context) -> None:
    """Ray Train calls dataset factories in its controller actor, whose DataContext has bars on."""
    from types import SimpleNamespace

    from ray import cloudpickle
    from ray.data import DataContext

    quiet_ray(io.StringIO())
    shipped = cloudpickle.loads(cloudpickle.dumps(keep_progress_bar_settings(lambda: SimpleNamespace(context=DataContext()))))
    made = shipped()
    assert (made.context.enable_progress_bars, made.context.enable_operator_progress_bars) == (False, False)

    quiet_ray(Tty())
    data_context.enable_progress_bars = True
    assert keep_progress_bar_settings(lambda: SimpleNamespace(context=DataContext()))().context.enable_progress_bars


RAY_DATA_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import ray
    from julnet.progress import keep_progress_bar_settings, setup_logging

    if sys.argv[2] == "quiet":
        setup_logging()
    ray.init(address=sys.argv[1], log_to_driver=True)

    def slow(batch):
        time.sleep(0.05)
        return batch

    def build():
        return ray.data.range(200, override_num_blocks=20).map_batches(slow)

    @ray.remote(num_cpus=0)
    def consume(make):  # as Ray Train does: the dataset is made in another process and executed by a split coordinator
        [shard] = make().streaming_split(1)
        return sum(len(b["id"]) for b in shard.iter_batches())

    print("rows", ray.get(consume.remote(keep_progress_bar_settings(build))), flush=True)
    """
)


@pytest.mark.parametrize("mode", ["quiet", "default"])
def test_no_progress_bar_redraws_in_a_log_file(ray_cluster, tmp_path: Path, mode: str) -> None:
    """A Ray Data pipeline executed the way Ray Train executes one, stderr to a file: bars are redrawn with
    carriage returns unless julnet's logging setup turned them off (the default run shows the test can fail)."""
    script = tmp_path / "pipeline.py"
    script.write_text(RAY_DATA_SCRIPT)
    log = tmp_path / "stderr.log"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for name in progress.QUIET_ENV:
        env.pop(name, None)
    with log.open("w") as stderr:
        proc = subprocess.run([sys.executable, str(script), ray_cluster.address, mode], stdout=subprocess.PIPE,
                              stderr=stderr, text=True, env=env, cwd=REPO, timeout=300)
    text = log.read_bytes().decode(errors="replace")  # bytes: text mode would turn "\r" into "\n"
    assert proc.returncode == 0 and "rows 200" in proc.stdout, text[-3000:]
    redraws = text.count("\r")
    if mode == "quiet":
        assert redraws == 0, text[-3000:]
        assert re.search(r"Progress bars disabled", text), "the split coordinator ran with the driver's setting"
    else:
        assert redraws > 0, "Ray Data draws its bars here by default; without them this test would prove nothing"


def test_one_table_layout_for_every_command():
    """Columns two spaces apart; a row's last cell (free text) neither padded nor widening the columns."""
    from julnet.table import aligned

    text = aligned([("metric", "value", "better"), ("psnr", "12.3456", "higher"), ("lpips", "unavailable: no VGG-16 weights")], right=(1,))
    assert text.splitlines() == ["metric    value  better", "psnr    12.3456  higher", "lpips   unavailable: no VGG-16 weights"]
