"""Experiment trackers beside metrics.jsonl: Weights & Biases and TensorBoard.

The run directory (metrics.jsonl, summary.json) stays the record; a tracker is a copy
for the tool a lab already watches. Every tracker is a sink with one interface:

    open(run_dir, config, start_step)   once, before the first row; config = config.json's record
    log_row(step, row)                  every metrics row, the dict written to metrics.jsonl
    log_summary(summary)                summary.json (a run's), or a sweep's fitted laws
    log_figures(paths)                  image files (a sweep's plots)
    log_table(name, rows)               a list of dicts (a sweep's results.csv)
    close(ok)                           flush and finish

`Tracking` holds the configured sinks and calls each through one guard: a tracker that
fails (package missing, not logged in, network down, disk full under its directory)
prints one warning line and is off for the rest of the run. Training never stops for a
tracker, and the guard wraps only tracker calls, so it cannot hide a fault of training.

    [logging]
    wandb = { project = "scaling", group = "ablation-3" }   # W&B; pip install -e '.[wandb]'
    tensorboard = true                                      # <run dir>/tensorboard/; '.[tensorboard]'

A trial of a sweep is grouped under the sweep's name (unless `group` says otherwise) and
named by its trial id; the sweep itself logs its results, fit and figures as one more run
of that group (`log_sweep`). A resumed run continues the same W&B run (its id is kept in
<run dir>/tracking.json) and TensorBoard drops the events past the restored checkpoint.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import math
import os
import secrets
import sys
from pathlib import Path

from research.config import WANDB_MODES, LoggingConfig, WandbConfig
from research.errors import UserError
from research.fsutil import atomic_write_json, read_json
from research.train.sweep_dir import SweepDir

TRACKING_FILE = "tracking.json"  # the W&B run id, so that a resumed run continues its W&B run
TENSORBOARD_DIR = "tensorboard"


def _numbers(row: dict) -> dict:
    """The numeric entries of a row (bools and strings are not scalars to plot)."""
    return {k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def flatten(tree: dict, prefix: str = "") -> dict:
    """{'a': {'b': 1, 'c': [..]}} -> {'a/b': 1}: the scalar leaves (numbers, strings, None); lists dropped."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "/"))
        elif value is None or isinstance(value, (int, float, str, bool)):
            out[name] = value
    return out


class WandbSink:
    """Weights & Biases: config at open, each row against its own `step`, summary, figures, table."""

    name = "W&B"

    def __init__(self, settings: WandbConfig, *, run_name: str, group: str | None, job_type: str):
        self.settings, self.run_name, self.group, self.job_type = settings, run_name, group, job_type
        self.run = None

    def open(self, run_dir: Path, config: dict, start_step: int) -> None:
        try:
            import wandb
        except ImportError:
            raise ImportError("the wandb package is not installed (pip install -e '.[wandb]')") from None
        self._wandb = wandb
        s = self.settings
        self.run = wandb.init(
            project=s.project, entity=s.entity, group=s.group or self.group, name=self.run_name,
            job_type=self.job_type, id=_wandb_run_id(run_dir), resume="allow", config=config, mode=s.mode,
            dir=None if os.environ.get("WANDB_DIR") else str(run_dir))
        # Rows are plotted against the run's own step (and may be re-logged after a resume),
        # not W&B's internal _step, which must only grow.
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")

    def log_row(self, step: int, row: dict) -> None:
        self.run.log({**_numbers(row), "step": step})

    def log_summary(self, summary: dict) -> None:
        self.run.summary.update(flatten(summary))

    def log_figures(self, paths: list[Path]) -> None:
        if paths:
            self.run.log({f"figures/{p.stem}": self._wandb.Image(str(p)) for p in paths})

    def log_table(self, name: str, rows: list[dict]) -> None:
        columns = sorted({k for r in rows for k in r})
        self.run.log({name: self._wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in rows])})

    def close(self, ok: bool) -> None:
        if self.run is not None:
            self.run.finish(exit_code=0 if ok else 1)
            self.run = None


def _wandb_run_id(run_dir: Path) -> str:
    """The W&B run id of this run directory: made once, kept in tracking.json."""
    path = run_dir / TRACKING_FILE
    record = read_json(path) or {}
    if not record.get("wandb_run_id"):
        record["wandb_run_id"] = secrets.token_hex(6)
        atomic_write_json(path, record)
    return record["wandb_run_id"]


class TensorBoardSink:
    """TensorBoard event files (tensorboardX) under <dir>/tensorboard; scalars are float32 there."""

    name = "TensorBoard"

    def __init__(self):
        self.writer = None
        self.last_step = 0

    def open(self, run_dir: Path, config: dict, start_step: int) -> None:
        try:
            from tensorboardX import SummaryWriter
            from tensorboardX.proto.summary_pb2 import Summary
            from tensorboardX.summary import scalar
        except ImportError:
            raise ImportError("the tensorboardX package is not installed (pip install -e '.[tensorboard]')") from None
        self._summary, self._scalar = Summary, scalar
        # purge_step: a resumed run's events past the restored checkpoint are dropped on reading,
        # as its metrics.jsonl rows are.
        self.writer = SummaryWriter(str(run_dir / TENSORBOARD_DIR), purge_step=start_step + 1 if start_step else None,
                                    flush_secs=30)
        self.last_step = start_step
        self.writer.add_text("config", _code_block(config), start_step)

    def log_row(self, step: int, row: dict) -> None:
        # One event holding the row's scalars, not one event per scalar (add_scalar): each event
        # is a put on tensorboardX's writer queue, and one per row measured ~6x cheaper per row.
        values = [self._scalar(key, value).value[0] for key, value in _numbers(row).items() if key != "step"]
        self.writer.file_writer.add_summary(self._summary(value=values), step)
        self.last_step = step

    def log_summary(self, summary: dict) -> None:
        self.writer.add_text("summary", _markdown_table([flatten(summary)], transpose=True), self.last_step)

    def log_figures(self, paths: list[Path]) -> None:
        import matplotlib.image

        for p in paths:
            self.writer.add_image(f"figures/{p.stem}", matplotlib.image.imread(p)[..., :3], self.last_step,
                                  dataformats="HWC")

    def log_table(self, name: str, rows: list[dict]) -> None:
        self.writer.add_text(name, _markdown_table(rows), self.last_step)

    def close(self, ok: bool) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _code_block(record: dict) -> str:
    text = json.dumps(record, indent=2, default=str)
    return "    " + text.replace("\n", "\n    ")  # Markdown code block (TensorBoard renders text as Markdown)


def _markdown_table(rows: list[dict], transpose: bool = False) -> str:
    def cell(v) -> str:
        return f"{v:.6g}" if isinstance(v, float) and math.isfinite(v) else str(v)

    if transpose:  # one row: key | value
        return "| key | value |\n|---|---|\n" + "".join(f"| {k} | {cell(v)} |\n" for k, v in rows[0].items())
    columns = sorted({k for r in rows for k in r})
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    return head + "".join("| " + " | ".join(cell(r.get(c)) for c in columns) + " |\n" for r in rows)


class Tracking:
    """The configured sinks of one run, each called through `_call`'s guard."""

    def __init__(self, sinks: list):
        self.sinks = list(sinks)
        if self.sinks:
            atexit.register(self.close, False)  # a run that dies still flushes and finishes its trackers

    def open(self, run_dir: Path, config: dict, start_step: int = 0) -> "Tracking":
        self._call("open", Path(run_dir), config, start_step)
        return self

    def log_row(self, step: int, row: dict) -> None:
        self._call("log_row", step, row)

    def log_summary(self, summary: dict) -> None:
        self._call("log_summary", summary)

    def log_figures(self, paths: list[Path]) -> None:
        self._call("log_figures", [Path(p) for p in paths])

    def log_table(self, name: str, rows: list[dict]) -> None:
        self._call("log_table", name, rows)

    def close(self, ok: bool = True) -> None:
        self._call("close", ok)
        self.sinks = []
        atexit.unregister(self.close)

    def _call(self, method: str, *args) -> None:
        for sink in list(self.sinks):
            try:
                getattr(sink, method)(*args)
            # Deliberate boundary: a tracker is third-party code talking to a network service
            # or a disk, and its failures are open-ended (ImportError, wandb's CommError and
            # UsageError, OSError, protobuf errors...). Only the tracker's own call is inside
            # this `try`; training code never is. The failure is reported, never silent.
            except Exception as err:  # noqa: BLE001 (see above)
                self.sinks.remove(sink)
                first_line = (str(err).strip().splitlines() or [""])[0][:300]
                print(f"warning: {sink.name} tracking is off for this run ({method} failed: "
                      f"{type(err).__name__}: {first_line}); training goes on, metrics.jsonl has every row",
                      file=sys.stderr)


def sinks_for(logging: LoggingConfig, run_name: str, group: str | None, job_type: str) -> list:
    sinks = []
    if logging.wandb is not None:
        sinks.append(WandbSink(logging.wandb, run_name=run_name, group=group, job_type=job_type))
    if logging.tensorboard:
        sinks.append(TensorBoardSink())
    return sinks


def open_run_tracking(logging: LoggingConfig, run_dir: Path, config: dict, start_step: int,
                      enabled: bool = True) -> Tracking:
    """The trackers of one training run (none when `enabled` is False: not the writing process).

    A sweep trial (a run directory with trial.json) is named by its trial id and grouped
    under its sweep's name; any other run is named after its directory.
    """
    if not enabled:
        return Tracking([])
    run_dir = Path(run_dir)
    trial = read_json(run_dir / "trial.json") or {}
    sinks = sinks_for(logging, run_name=trial.get("trial", run_dir.name), group=trial.get("sweep"),
                      job_type="trial" if trial else "train")
    return Tracking(sinks).open(run_dir, config, start_step)


def log_sweep(sweep_dir: Path, logging: LoggingConfig, sweep_name: str) -> None:
    """The sweep's own run, in the group of its trials: plan, results table, fitted laws, figures.

    Called after `fit_and_plot`; logs whatever of fit.json and plots/ exists.
    """
    sinks = sinks_for(logging, run_name=f"{sweep_name}-fit", group=sweep_name, job_type="sweep")
    if not sinks:
        return
    sweep = SweepDir(sweep_dir)
    config = {"sweep": read_json(sweep.record_path),
              "plan": {k: v for k, v in (read_json(sweep.plan_path) or {}).items() if k != "trials"}}
    tracking = Tracking(sinks).open(sweep.path, config, 0)
    rows = _results_rows(sweep.results_path)
    if rows:
        tracking.log_table("results", rows)
    fit = read_json(sweep.fit_path)
    if fit:
        tracking.log_summary(fit)
    tracking.log_figures(sorted(sweep.plots_dir.glob("*.png")))
    tracking.close(ok=True)


def _results_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    import pandas as pd

    frame = pd.read_csv(path)
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
            for row in frame.to_dict("records")]


def add_flags(parser) -> None:
    """`--wandb PROJECT`, `--wandb-group`, `--wandb-mode`, `--tensorboard`: [logging] from the command line."""
    g = parser.add_argument_group("experiment tracking (override [logging])")
    g.add_argument("--wandb", metavar="PROJECT", default=None, help="log to Weights & Biases, in this project")
    g.add_argument("--wandb-group", metavar="GROUP", default=None, help="W&B group (default: the sweep's name)")
    g.add_argument("--wandb-mode", choices=WANDB_MODES, default=None,
                   help="offline: write under the run directory, upload later with `wandb sync`")
    g.add_argument("--tensorboard", action="store_true", help="write TensorBoard event files in the run directory")


def apply_flags(logging: LoggingConfig, args) -> LoggingConfig:
    """`logging` with the command line's tracking flags applied over it."""
    wandb = logging.wandb
    if args.wandb is not None:
        wandb = dataclasses.replace(wandb or WandbConfig(), project=args.wandb)
    if (args.wandb_group or args.wandb_mode) and wandb is None:
        raise UserError("--wandb-group and --wandb-mode need --wandb PROJECT (or [logging] wandb = {...})")
    if args.wandb_group:
        wandb = dataclasses.replace(wandb, group=args.wandb_group)
    if args.wandb_mode:
        wandb = dataclasses.replace(wandb, mode=args.wandb_mode)
    return LoggingConfig(wandb=wandb, tensorboard=logging.tensorboard or args.tensorboard)
