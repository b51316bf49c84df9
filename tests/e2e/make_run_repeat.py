"""`make run` from a fresh clone, N times in a row, as a newcomer runs it: each run clones the
repository's HEAD into a new directory, uses a new data dir, runs `make run` (install, `metarl
up`, the demo job, the model URI), then `metarl down`.  Every other run has another Ray cluster
on the machine first (`ray start --head` with Ray's defaults: GCS 6379, dashboard 8265, client
server 10001, agent 52365; its own token and temp dir), stopped after the run.

Not part of `make test` (it takes about an hour on 2 cores).  Writes its JSON after every run:

    .venv/bin/python tests/e2e/make_run_repeat.py [--runs 10] [--out benchmarks/results/make_run_repeat.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RAY = Path(sys.executable).parent / "ray"


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def _processes_naming(text: str) -> list[int]:
    """Pids of this user's processes whose command line names ``text`` (a temp dir)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if text in (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                out.append(int(d.name))
        except OSError:
            continue
    return [p for p in out if p != os.getpid()]


def _kill(pids: list[int]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        time.sleep(3)


class ForeignRay:
    """Another user's Ray head on Ray's default ports, with its own token and temp dir."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.temp_dir = root / "foreign-ray"
        token = root / "foreign-token"
        token.write_text(secrets.token_hex(32))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "METARL_"))}
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token), RAY_USAGE_STATS_ENABLED="0")
        r = subprocess.run([str(RAY), "start", "--head", "--num-cpus=1", f"--temp-dir={self.temp_dir}",
                            "--disable-usage-stats"], env=env, capture_output=True, text=True,
                           start_new_session=True, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"the other Ray cluster did not start:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")

    def stop(self) -> None:
        _kill(_processes_naming(str(self.temp_dir)))
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _figures(output: str) -> dict[str, Any]:
    """The demo's summary: returns before/after adaptation (first -> last iteration), the URI."""
    out: dict[str, Any] = {}
    for key, label in (("return_pre", "return before adaptation"), ("return_post", "return after adaptation")):
        m = re.search(rf"{label}\s+(-?[\d.]+)\s*→\s*(-?[\d.]+)", output)
        if m:
            out[key] = [float(m[1]), float(m[2])]
    m = re.search(r"model URI: (models:/\S+)", output)
    out["model_uri"] = m[1] if m else None
    out["busy_ports_reported"] = re.findall(r"port (\d+) is busy", output)
    return out


def one_run(index: int, *, foreign: bool, work: Path, logs: Path, timeout_s: float) -> dict[str, Any]:
    clone, home = work / f"clone-{index}", work / f"home-{index}"
    _git_clone = subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], capture_output=True, text=True,
                                check=False)
    row: dict[str, Any] = {"run": index, "another_ray_cluster": foreign, "ok": False}
    if _git_clone.returncode != 0:
        row["error"] = _git_clone.stderr[-2000:]
        return row
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_", "METARL_", "MLFLOW_TRACKING", "VIRTUAL_ENV")) and k != "COLUMNS"}
    env["METARL_HOME"] = str(home)
    other = ForeignRay(work) if foreign else None
    log = logs / f"make_run_{index}.log"
    t0 = time.monotonic()
    try:
        with log.open("w") as f:
            try:
                rc = subprocess.run(["make", "run"], cwd=clone, env=env, stdout=f, stderr=subprocess.STDOUT,
                                    timeout=timeout_s, check=False).returncode
            except subprocess.TimeoutExpired:
                rc = None
        row["seconds"] = round(time.monotonic() - t0, 1)
        output = log.read_text(errors="replace")
        row.update(_figures(output))
        row["exit_code"] = rc
        row["ok"] = rc == 0 and bool(row.get("model_uri"))
        if not row["ok"]:
            row["tail"] = output[-3000:]
    finally:
        metarl = clone / ".venv" / "bin" / "metarl"
        if metarl.is_file():
            subprocess.run([str(metarl), "down"], cwd=clone, env=env, capture_output=True, timeout=300, check=False)
        if other is not None:
            other.stop()
        shutil.rmtree(clone, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)
    row["log"] = str(log.relative_to(ROOT)) if log.is_relative_to(ROOT) else str(log)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "make_run_repeat.json"))
    parser.add_argument("--logs", default=None, help="where each run's output goes [default: a temp dir]")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds one `make run` may take")
    args = parser.parse_args()
    out = Path(args.out)
    logs = Path(args.logs or tempfile.mkdtemp(prefix="make-run-logs-"))
    logs.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "what": "`make run` from a fresh clone, repeated; every other run with another Ray cluster "
                "on Ray's default ports",
        "command": "tests/e2e/make_run_repeat.py --runs " + str(args.runs),
        "commit": _git("rev-parse", "HEAD"), "cpus": os.cpu_count(), "runs": [],
    }
    with tempfile.TemporaryDirectory(prefix="make-run-") as tmp:
        for i in range(args.runs):
            row = one_run(i, foreign=i % 2 == 1, work=Path(tmp), logs=logs, timeout_s=args.timeout)
            result["runs"].append(row)
            result["successes"] = sum(r["ok"] for r in result["runs"])
            result["successes_with_another_ray_cluster"] = sum(
                r["ok"] for r in result["runs"] if r["another_ray_cluster"]
            )
            out.write_text(json.dumps(result, indent=1) + "\n")
            print(json.dumps({k: v for k, v in row.items() if k != "tail"}), flush=True)
    print(json.dumps({"successes": result["successes"], "runs": args.runs}), flush=True)


if __name__ == "__main__":
    main()
