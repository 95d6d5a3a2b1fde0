"""Where a student stage's wall time goes: fixed start-up cost against training.

Run in a checkout where `make repro` has run (the stage needs the prepared data and the MLL
teacher). Each figure is the median of `--repeats` fresh processes:

- `python -c pass`, `import torch`, MLflow with its SQLite store: the imports every training
  stage pays;
- the student stage `distill@mll-kd-full-0` run directly, with the training seconds it
  reports (its "(N epochs, X s)" line) subtracted: the stage's own fixed cost;
- the same stage under `dvc repro -f -s`, minus the direct run: DVC's share, which includes
  building the pipeline graph once (paid once per `dvc repro`, not per stage);
- DVC's per-stage rewrite of dvc.lock (its round-trip YAML load and dump), timed in process.

    .venv/bin/python benchmarks/stage_startup.py --repeats 3

The stage writes its usual outputs; with the same inputs they come out byte-identical, so
the checkout stays up to date. The last line is `fixed/train per student stage: X.XX`.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

STAGE = "distill@mll-kd-full-0"
COMMAND = [
    sys.executable,
    "-m",
    "stages.distill",
    "--teacher",
    "mll",
    "--method",
    "kd",
    "--protocol",
    "full",
    "--seed",
    "0",
]
TRAINED = re.compile(r"\((\d+) epochs, ([0-9.]+) s\)")
IMPORTS = {
    "python": "pass",
    "torch": "import torch",
    "mlflow + sqlite store": "import mlflow.tracking, mlflow.store.tracking.sqlalchemy_store",
}


def wall(command: list[str]) -> tuple[float, str]:
    """Return the seconds `command` took and its stderr; exit on failure."""
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return seconds, done.stderr + done.stdout


def lock_rewrite_seconds(lock: Path) -> float:
    """Return the seconds DVC's round-trip load and dump of `lock` take (what each stage pays)."""
    from dvc.utils.serialize import modify_yaml

    copy = lock.with_name(".bench-dvc.lock")
    copy.write_bytes(lock.read_bytes())
    try:
        start = time.perf_counter()
        with modify_yaml(copy):
            pass
        return time.perf_counter() - start
    finally:
        copy.unlink()


def main() -> None:
    """Print each cost, then the fixed/train ratio of a student stage."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="processes per figure")
    args = parser.parse_args()
    if not Path("models/teacher/mll.pt").is_file():
        sys.exit("models/teacher/mll.pt not found; run `make repro` first")
    dvc = str(Path(sys.executable).with_name("dvc"))

    def median(command: list[str]) -> tuple[float, str]:
        runs = [wall(command) for _ in range(args.repeats)]
        return statistics.median(s for s, _ in runs), runs[-1][1]

    for name, code in IMPORTS.items():
        print(f"{name:24s} {median([sys.executable, '-c', code])[0]:6.2f} s")
    direct, log = median(COMMAND)
    found = TRAINED.findall(log)
    if not found:
        sys.exit("the stage printed no '(N epochs, X s)' line")
    epochs, train = int(found[-1][0]), float(found[-1][1])
    under_dvc, _ = median([dvc, "repro", "-f", "-s", STAGE])
    lock = lock_rewrite_seconds(Path("dvc.lock"))
    lines = len(Path("dvc.lock").read_text().splitlines())
    print(f"{'stage, direct':24s} {direct:6.2f} s  (training {train:.2f} s, {epochs} epochs)")
    print(f"{'stage, fixed cost':24s} {direct - train:6.2f} s")
    print(f"{'dvc repro -f -s stage':24s} {under_dvc:6.2f} s  (DVC: {under_dvc - direct:.2f} s)")
    print(f"{'dvc.lock rewrite':24s} {lock:6.2f} s  ({lines} lines)")
    print(f"fixed/train per student stage: {(direct - train + lock) / train:.2f}")


if __name__ == "__main__":
    main()
