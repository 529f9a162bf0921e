"""MLflow: a run in experiment tracking.project, at tracking.mlflow_tracking_uri ($MLFLOW_TRACKING_URI;
unset: a local SQLite store, <run_dir>/mlflow.db, with artifacts in <run_dir>/mlartifacts, read by
`mlflow ui --backend-store-uri sqlite:///<run_dir>/mlflow.db`). SQLite, not a ./mlruns directory:
MLflow 3 refuses its file store unless MLFLOW_ALLOW_FILE_STORE=true (it is in maintenance mode).

Through MlflowClient, which takes the URI and run explicitly, not the fluent API's process-wide active run.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from learner.tracking.loggers.base import Logger, flat_config, register_logger, require, scalars
from protos import RunConfig

PARAMS_PER_CALL = 100  # MLflow's log_batch limit for params


@register_logger("mlflow", package="mlflow", requirement="mlflow-skinny sqlalchemy alembic")
class MLflowLogger(Logger):
    def __init__(self, cfg: RunConfig, run_dir: Path, run_id: str):
        mlflow = require(self.name)
        from mlflow.entities import Param

        local = run_dir.resolve()
        self.uri = (cfg.tracking.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
                    or f"sqlite:///{local / 'mlflow.db'}")
        self.client = mlflow.MlflowClient(tracking_uri=self.uri)
        experiment = self.client.get_experiment_by_name(cfg.tracking.project)
        # a local store's artifacts stay in the run directory (MLflow's default is ./mlartifacts of the working directory)
        artifacts = (local / "mlartifacts").as_uri() if self.uri.startswith("sqlite:///" + str(local)) else None
        experiment_id = (experiment.experiment_id if experiment
                         else self.client.create_experiment(cfg.tracking.project, artifact_location=artifacts))
        self.run_id = self.client.create_run(experiment_id, run_name=run_id).info.run_id
        params = [Param(key, json.dumps(value) if not isinstance(value, str) else value) for key, value in flat_config(cfg).items()]
        for i in range(0, len(params), PARAMS_PER_CALL):
            self.client.log_batch(self.run_id, params=params[i:i + PARAMS_PER_CALL])

    def log(self, record: dict) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, value, now, record["step"]) for key, value in scalars(record).items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def finish(self, table: str, rows: dict[str, dict[str, float]]) -> None:
        self.client.log_text(self.run_id, table + "\n", "eval_table.txt")
        self.client.set_terminated(self.run_id, "FINISHED")

    def close(self) -> None:
        self.client.set_terminated(self.run_id, "FAILED")
