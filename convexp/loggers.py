"""Runs the ecosystem can read: TensorBoard event files in the run folder, an MLflow run per
convexp run. Both are watchers of the training loop (convexp/callbacks.py) that lifecycle.open_run
sets up for its run and closes with the run's final status.

A logger watches only its own run (a study's children have loggers of their own), writes an
epoch once even when a resume trains it again, and never costs a result: one that fails in the
middle of a run says so in one line and in summary.json (`loggers_stopped`), and the run goes on.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from pathlib import Path
from typing import Any

from convexp.callbacks import Callback, EpochEnd
from convexp.config import flatten, to_dict
from convexp.errors import ConvexpError
from convexp.record import RunRecord, read_metrics
from convexp.runs import RunFolder

# MLflow's final run statuses, from convexp's (a pruned trial was stopped, as an interrupted run is)
MLFLOW_STATUS = {"completed": "FINISHED", "failed": "FAILED", "interrupted": "KILLED", "pruned": "KILLED"}


def as_params(config: dict[str, Any]) -> dict[str, Any]:
    """A config by full key (train.lr), each value a scalar TensorBoard and MLflow take: lists as text."""
    return {key: value if isinstance(value, (int, float, str, bool)) else str(value) for key, value in flatten(config).items()}


class RunLogger(Callback):
    """A watcher of one run's training that also learns how the run ended."""

    name = "logger"

    def __init__(self, run: RunFolder):
        self.run = run
        self.logged = len(read_metrics(run.path))  # epochs shown already: a resume trains them again

    def fresh(self, event: EpochEnd) -> bool:
        """An epoch of this logger's own run, not shown before."""
        if event.run.path != self.run.path or event.epoch <= self.logged:
            return False
        self.logged = event.epoch
        return True

    def close(self, status: str) -> None:
        """The run has ended with `status` (completed, failed, interrupted)."""


class TensorBoardLogger(RunLogger):
    """<run>/tensorboard/: per epoch loss/* and accuracy/* (train, val, test when measured), lr and
    seconds; per batch batch/train_loss (global step); at the end the test accuracy, accuracy per
    resolution (varres) and the config as hparams with the final metrics."""

    name = "tensorboard"

    def __init__(self, run: RunFolder):
        super().__init__(run)
        self.opened = None  # the SummaryWriter, made at the first event: a study that trains nothing itself gets no folder

    @property
    def writer(self):
        if self.opened is None:
            from torch.utils.tensorboard import SummaryWriter

            self.opened = SummaryWriter(log_dir=str(self.run.path / "tensorboard"))
        return self.opened

    def on_epoch_end(self, event: EpochEnd) -> None:
        if not self.fresh(event):
            return
        for index, loss in enumerate(event.batch_losses):
            self.writer.add_scalar("batch/train_loss", loss, event.first_step + index + 1)
        for column, value in event.row.items():
            split, _, metric = column.partition("_")
            if metric:  # train_loss -> loss/train
                self.writer.add_scalar(f"{metric}/{split}", value, event.epoch)
        self.writer.add_scalar("lr", event.learning_rate, event.epoch)
        self.writer.add_scalar("seconds_per_epoch", event.seconds, event.epoch)
        self.writer.flush()

    def close(self, status: str) -> None:
        record = RunRecord.read(self.run.path)
        if status == "completed" and "final" in record.summary:
            epochs = record.summary.get("epochs", self.logged)
            if record.test_accuracy is not None:
                self.writer.add_scalar("accuracy/test", record.test_accuracy, epochs)
            for resolution, accuracy in record.summary.get("accuracy_per_resolution", {}).items():
                self.writer.add_scalar(f"accuracy_per_resolution/{resolution}px", accuracy, epochs)
            config = as_params(yaml_config(self.run))
            final = {f"hparam/{k}": v for k, v in record.final.items()}
            if record.test_accuracy is not None:
                final["hparam/test_accuracy"] = record.test_accuracy
            self.writer.add_hparams(config, final, run_name=".")
        if self.opened is not None:
            self.opened.close()


def yaml_config(run: RunFolder) -> dict[str, Any]:
    import yaml

    return yaml.safe_load((run.path / "config.yaml").read_text()) or {}


class MLflowLogger(RunLogger):
    """One MLflow run per convexp run (a study's children nested under the study's), with the
    flattened config as params, the metrics per epoch (step = epoch), the final metrics, status,
    and summary.json, config.yaml and the plots as artifacts. A resumed run goes on in the same
    MLflow run (its id is in summary.json)."""

    name = "mlflow"

    def __init__(self, run: RunFolder, command: str, config, parent: RunFolder | None):
        super().__init__(run)
        self.uri = tracking_uri(config.log.mlflow)
        self.client = connect_mlflow(self.uri)
        summary = run.read_summary()
        self.run_id = summary.get("mlflow_run_id")
        if self.run_id:  # resumed: the epochs this run shows already are those MLflow holds
            self.client.update_run(self.run_id, status="RUNNING")
            self.logged = max((m.step for m in self.client.get_metric_history(self.run_id, "val_loss")), default=0)
            return
        experiment = experiment_id(self.client, config.log.mlflow_experiment or command, self.uri)
        parent_id = parent.read_summary().get("mlflow_run_id") if parent is not None else None
        tags = {"convexp.command": command, **({"mlflow.parentRunId": parent_id} if parent_id else {})}
        self.run_id = self.client.create_run(experiment, run_name=run.path.name, tags=tags).info.run_id
        from mlflow.entities import Param

        params = [Param(key, str(value)[:6000]) for key, value in as_params(to_dict(config)).items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params a call
            self.client.log_batch(self.run_id, params=params[start : start + 100])
        run.update_summary(mlflow_run_id=self.run_id, mlflow_tracking_uri=self.uri)

    def on_epoch_end(self, event: EpochEnd) -> None:
        if not self.fresh(event):
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        values = {k: v for k, v in event.row.items() if k != "epoch"} | {"lr": event.learning_rate,
                                                                          "seconds_per_epoch": event.seconds}
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, event.epoch) for k, v in values.items()])

    def close(self, status: str) -> None:
        record = RunRecord.read(self.run.path)
        if status == "completed":
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            final = {"best_val_accuracy": record.summary.get("best_val_accuracy"), "test_accuracy": record.test_accuracy}
            metrics = [Metric(k, float(v), now, record.summary.get("epochs", self.logged)) for k, v in final.items() if v is not None]
            if metrics:
                self.client.log_batch(self.run_id, metrics=metrics)
        for name in ("summary.json", "config.yaml"):
            self.client.log_artifact(self.run_id, str(self.run.path / name))
        if self.run.plots.is_dir() and any(self.run.plots.iterdir()):
            self.client.log_artifacts(self.run_id, str(self.run.plots), "plots")
        self.client.set_terminated(self.run_id, MLFLOW_STATUS.get(status, "FAILED"))


def tracking_uri(setting: str) -> str:
    if setting != "env":
        return setting
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri:
        raise ConvexpError("log.mlflow=env but MLFLOW_TRACKING_URI is not set: set it, or give the URI, "
                           "e.g. --set log.mlflow=sqlite:///mlflow.db")
    return uri


def connect_mlflow(uri: str):
    """An MlflowClient at `uri` that has answered once (5 s, no retries): an address that cannot be
    reached is one line before any training, not minutes of retries."""
    if importlib.util.find_spec("mlflow") is None:
        raise ConvexpError("log.mlflow needs the MLflow client, an optional dependency: pip install -e '.[log]' "
                           "(make setup installs it), or --set log.mlflow=''")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    from mlflow.tracking import MlflowClient

    for chatty in ("mlflow", "alembic"):  # "creating initial database tables" is not the run's news
        logging.getLogger(chatty).setLevel(logging.WARNING)

    try:
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)
    except Exception as exc:  # MlflowException, connection errors, a malformed URI
        why = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ConvexpError(f"log.mlflow={uri!r} cannot be reached ({why}): start the tracking server, fix the URI, "
                           "or --set log.mlflow='' to train without MLflow") from None
    return client


def experiment_id(client, name: str, uri: str) -> str:
    """The MLflow experiment `name`, made if new; a SQLite store keeps its artifacts beside the database
    (MLflow's default, ./mlruns, would be wherever the command happens to run)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts").as_uri()
    return client.create_experiment(name, artifact_location=location)


class Guarded(Callback):
    """A logger whose failure costs no result: the first error is one warning line and an entry in
    summary.json's `loggers_stopped`; the logger is then left out, and the run goes on."""

    def __init__(self, logger: RunLogger, reporter):
        self.logger, self.reporter, self.stopped = logger, reporter, False

    def guard(self, hook: str, *args) -> None:
        if self.stopped:
            return
        try:
            getattr(self.logger, hook)(*args)
        except Exception as exc:  # any failure of the logging library, the disk or the server
            self.stopped = True
            why = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            self.reporter.line(f"warning: the {self.logger.name} logger stopped ({why}); the run goes on without it")
            try:
                stopped = self.logger.run.read_summary().get("loggers_stopped", {})
                self.logger.run.update_summary(loggers_stopped={**stopped, self.logger.name: why})
            except (OSError, ConvexpError):
                pass

    def on_batch_end(self, run, epoch, batch, loss) -> None:
        self.guard("on_batch_end", run, epoch, batch, loss)

    def on_epoch_end(self, event: EpochEnd) -> None:
        self.guard("on_epoch_end", event)

    def on_run_end(self, run, result) -> None:
        self.guard("on_run_end", run, result)

    def close(self, status: str) -> None:
        self.guard("close", status)


def open_loggers(run: RunFolder, command: str, config, parent: RunFolder | None, reporter) -> list[Guarded]:
    """The loggers `config.log` asks for, opened on `run`. An MLflow URI that cannot be reached, or
    a logger asked for whose package is missing, is a ConvexpError here, before any training."""
    log = getattr(config, "log", None)
    if log is None:
        return []
    loggers: list[RunLogger] = []
    tensorboard_installed = importlib.util.find_spec("tensorboard") is not None
    if log.tensorboard is True and not tensorboard_installed:
        raise ConvexpError("log.tensorboard=true needs the tensorboard package, an optional dependency: "
                           "pip install -e '.[log]' (make setup installs it), or --set log.tensorboard=auto")
    if log.tensorboard is True or (log.tensorboard == "auto" and tensorboard_installed):
        loggers.append(TensorBoardLogger(run))
    if log.mlflow:
        loggers.append(MLflowLogger(run, command, config, parent))
    return [Guarded(logger, reporter) for logger in loggers]


def close_loggers(loggers: list[Guarded], status: str) -> None:
    for logger in loggers:
        logger.close(status)
