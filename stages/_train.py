"""What the training stages share: runtime set-up, the MLflow epoch hook, the final evaluation."""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdflow.config import Params, params_hash
from kdflow.data.tensors import PreparedData, load_prepared
from kdflow.io import staged_outputs, write_run_record
from kdflow.metrics import summarize
from kdflow.tracking import StageRun, flatten, stage_run
from kdflow.train.augment import Augment, build_augment
from kdflow.train.checkpoint import data_fingerprint
from kdflow.train.device import configure_runtime, resolve_device
from kdflow.train.outputs import check_logits, write_training_outputs
from kdflow.train.trainer import FitConfig, FitResult, predict

PREPARED = Path("data/prepared")
CHECKPOINTS = Path("checkpoints")
log = logging.getLogger(__name__)


@dataclass
class TrainingStage:
    """A training stage in progress: its params, data, device and MLflow run."""

    name: str
    params: Params
    section: dict[str, Any]  # the params this stage reads: its model files carry their hash
    data: PreparedData
    device: torch.device
    run: StageRun
    started: float

    def elapsed(self) -> float:
        """Return the seconds since the stage started (for MLflow and the run record only)."""
        return round(time.perf_counter() - self.started, 2)

    def seed(self, seed: int) -> None:
        """Seed every generator and apply the runtime's determinism settings."""
        runtime = self.params.runtime
        configure_runtime(seed, runtime.deterministic, runtime.threads, self.device)

    def fit_config(self, optim: Any, seed: int, key_parts: dict[str, Any]) -> FitConfig:
        """Return the trainer config with a checkpoint that resumes only this exact run."""
        data = {"data": data_fingerprint(self.data.meta), "augment": self.params.data.augment}
        key = params_hash(data | key_parts)
        return FitConfig(
            optim=optim,
            seed=seed,
            device=self.device,
            checkpoint=CHECKPOINTS / f"{self.name}.pt",
            run_key=key,
            compile=self.params.runtime.compile,
        )

    def augment(self) -> Augment | None:
        """Return the training-batch augmentation data.augment asks for (None for none)."""
        return build_augment(
            self.params.data.augment,
            self.data.input_shape,
            self.data.meta["normalization"],
            raw=self.data.train.raw,
        )

    def log_epoch(self) -> Callable[[dict[str, float]], None]:
        """Return the per-epoch hook that sends a history row to MLflow."""
        return lambda row: self.run.log_metrics(
            {k: v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"])
        )

    def finish(
        self,
        model: nn.Module,
        result: FitResult,
        *,
        arch: str,
        outputs: dict[str, Path],
        extra_metrics: dict[str, Any] | None = None,
        extra_model_meta: dict[str, Any] | None = None,
        extra_run_record: dict[str, float] | None = None,
        selected_state: bool = True,
    ) -> dict[str, Any]:
        """Evaluate the selected weights on val and test, write and log outputs; return metrics.

        `selected_state=False` means the caller already loaded the selected weights into
        `model` (a student inside a peer group, say). `extra_model_meta` joins the checkpoint's
        metadata (how to rebuild a model that is not a zoo architecture, say).
        `extra_run_record` holds figures that differ between identical runs (durations): they
        go to MLflow and the untracked run record, never into the metrics file.
        """
        if selected_state:
            model.load_state_dict(result.best_state)
        val_logits = predict(model, self.data.val)
        test_logits = predict(model, self.data.test)
        checks = check_logits(val_logits, outputs["metrics"]) + check_logits(
            test_logits, outputs["metrics"]
        )
        val = summarize(val_logits, self.data.val.y, self.data.num_classes)
        test = summarize(test_logits, self.data.test.y, self.data.num_classes)
        metrics: dict[str, Any] = {f"val_{k}": v for k, v in val.items() if k != "per_class_acc"}
        metrics |= {f"test_{k}": v for k, v in test.items() if k != "per_class_acc"}
        metrics |= {
            "per_class_acc": test["per_class_acc"],
            "best_epoch": result.best_epoch,
            "epochs": len(result.history),
            "stage": self.name,  # the `kdflow.stage` tag of its MLflow runs
            # CPU kernels are reproducible for a fixed thread count only: `kdflow audit
            # --rerun` reruns the stage with this many (the flow gives each stage a share).
            "torch_threads": torch.get_num_threads(),
        }
        metrics |= extra_metrics or {}
        # What differs between identical runs stays out of every DVC-tracked file.
        volatile = {"train_seconds": self.elapsed(), **(extra_run_record or {})}
        model_meta = {
            "arch": arch,
            "input_shape": list(self.data.input_shape),
            "num_classes": self.data.num_classes,
            "data_hash": data_fingerprint(self.data.meta),
            "params_hash": params_hash(self.section),
            "stage": self.name,
            **(extra_model_meta or {}),
        }
        with staged_outputs() as out:
            checks += write_training_outputs(
                model=model,
                model_meta=model_meta,
                metrics=metrics,
                history=result.history,
                model_path=outputs["model"],
                metrics_path=outputs["metrics"],
                plots_path=outputs["plots"],
                num_classes=self.data.num_classes,
                out=out,
            )
            write_run_record(out, self.name, self.run.run_id, volatile)
        numbers = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
        self.run.log_metrics(numbers | volatile)
        self.run.set_tags({"kdflow.validation": "passed"})
        with tempfile.TemporaryDirectory() as tmp:
            checks_file = Path(tmp) / "checks.json"
            checks_file.write_text(json.dumps({"stage": self.name, "checks": checks}, indent=2))
            self.run.log_artifact(checks_file, "validation")
        self.run.log_artifact(outputs["metrics"])
        (CHECKPOINTS / f"{self.name}.pt").unlink(missing_ok=True)
        log.info(
            "%s: val_acc %.4f  test_acc %.4f  test_cmi %.4f  (%d epochs, %.1f s)",
            self.name,
            metrics["val_acc"],
            metrics["test_acc"],
            metrics["test_cmi"],
            metrics["epochs"],
            volatile["train_seconds"],
        )
        return metrics


@contextmanager
def training_stage(name: str, params: Params, section: dict[str, Any]) -> Iterator[TrainingStage]:
    """Yield a ready TrainingStage: seeded runtime, data on the device, an open MLflow run."""
    started = time.perf_counter()
    runtime = params.runtime
    device = resolve_device(runtime.device)
    configure_runtime(0, runtime.deterministic, runtime.threads, device)
    data = load_prepared(PREPARED, device)
    with stage_run(name, params, {"data": data_fingerprint(data.meta)}, device=str(device)) as run:
        run.log_params(flatten(section))
        yield TrainingStage(name, params, section, data, device, run, started)
