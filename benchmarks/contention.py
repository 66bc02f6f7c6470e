"""Decode alone and beside one busy process: does a second process on the cores collapse it?

Issue 20 saw smollm2-135m decode fall from about 18 to 0.5 tokens/s on 2 cores beside one busy
process, because OpenMP threads spin-wait at every barrier. This measures, for each model and
each thread setting, our greedy loop (the fixed prompt of `evaluate.speed`, a fixed number of
new tokens, no end-of-sequence stop) alone and beside a busy process, in the same run:

- settings: `new` is what `mfmaccel.threads` sets (passive wait, every usable core); `old` is
  what ran before it (libgomp's default wait, which spins about 300,000 times at every barrier,
  on every core); `old-1thread` is the issue's workaround (OMP_NUM_THREADS=1). A custom setting
  reads `wait=passive|active|default,threads=N,spin=N` (GOMP_SPINCOUNT), from libgomp's
  defaults. The user's own OMP_*/GOMP_*/MFMACCEL_THREADS variables are not passed on.
- the busy process: `python` runs `while True: pass` in a separate Python process (one core's
  worth of a pure-Python loop, not pinned: the scheduler places it); `matmul` runs a 1-thread
  torch loop of 512x512 fp32 matrix products. It starts before, and is killed after, each
  timing.
- order: each repeat starts a fresh worker process per setting (OpenMP reads its settings when
  torch loads), settings in rotating order; the worker loads the model, warms up once, then
  times alone and beside in an order that alternates between repeats. A timing stops after
  `--max-seconds` (and 2 decode steps), so a collapsed setting still finishes; its rate covers
  the tokens it made.

Reports medians over repeats and beside/alone per model and setting (target: >= 0.4). Prints
JSON; `--out FILE` writes it too.
Usage: python benchmarks/contention.py [--models smollm2-135m qwen2.5-coder-0.5b]
       [--settings new old] [--repeats 5] [--new-tokens 48] [--busy python|matmul] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from mfmaccel.threads import thread_environment, usable_cores

TARGET = 0.4  # issue 20: beside one busy process, at least 0.4x of the rate alone
BUSY = {
    "python": "print('ready', flush=True)\nwhile True:\n    pass\n",
    "matmul": ("import torch\ntorch.set_num_threads(1)\na = torch.randn(512, 512)\n"
               "print('ready', flush=True)\nwhile True:\n    a @ a\n"),
}
WAITS = {"passive": "PASSIVE", "active": "ACTIVE", "default": None}
OUR_VARIABLES = ("OMP_", "GOMP_", "KMP_", "MKL_NUM_THREADS", "MFMACCEL_THREADS")


def setting_environment(setting: str) -> dict[str, str]:
    """The OpenMP variables of a named or custom setting (on top of libgomp's defaults)."""
    if setting == "new":
        return thread_environment({})
    if setting == "old":
        return {}
    if setting == "old-1thread":
        return {"OMP_NUM_THREADS": "1"}
    env: dict[str, str] = {"OMP_NUM_THREADS": str(usable_cores())}
    for item in setting.split(","):
        key, _, value = item.partition("=")
        if key == "wait" and value in WAITS:
            if WAITS[value]:
                env["OMP_WAIT_POLICY"] = WAITS[value]
        elif key == "threads" and value.isdigit() and int(value) > 0:
            env["OMP_NUM_THREADS"] = value
        elif key == "spin" and value.isdigit():
            env["GOMP_SPINCOUNT"] = value
        else:
            raise SystemExit(f"bad setting {setting!r}: use new, old, old-1thread or "
                             f"wait=passive|active|default,threads=N,spin=N")
    return env


def clean_environment(setting: dict[str, str]) -> dict[str, str]:
    """This process's environment without any thread variable, plus the setting's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(OUR_VARIABLES)}
    env.update(TRANSFORMERS_VERBOSITY="error", HF_HUB_DISABLE_PROGRESS_BARS="1", **setting)
    return env


@contextmanager
def busy_process(kind: str):
    """A separate process keeping one core busy while the block runs."""
    env = clean_environment({"OMP_NUM_THREADS": "1"})
    proc = subprocess.Popen([sys.executable, "-c", BUSY[kind]], stdout=subprocess.PIPE,
                            env=env, text=True)
    try:
        proc.stdout.readline()  # "ready": imports done, the loop starts now
        time.sleep(0.3)
        yield
    finally:
        proc.kill()
        proc.wait()


def worker(model_name: str, new_tokens: int, max_seconds: float) -> None:
    """Load the model, warm up, then answer each line on stdin with one timing (JSON).

    torch is imported here, not at the top: this process's OpenMP settings are the ones its
    parent put in the environment for the setting under test.
    """
    import torch
    from transformers.utils import logging as hf_logging

    from mfmaccel.evaluate.speed import DEFAULT_PROMPT
    from mfmaccel.models import load_model
    from mfmaccel.runtime.engine import greedy_generate

    hf_logging.disable_progress_bar()
    model = load_model(model_name)
    ids = model.tokenizer(DEFAULT_PROMPT, return_tensors="pt").input_ids

    def timed() -> float:
        deadline = time.perf_counter() + max_seconds

        def past_deadline(tokens: list[int]) -> bool:  # after 2 decode steps at least
            return len(tokens) > 2 and time.perf_counter() > deadline

        out = greedy_generate(model.module, ids, new_tokens, should_stop=past_deadline)
        return out.decode_tokens_per_s

    timed()  # warm-up
    print(json.dumps({"threads": torch.get_num_threads()}), flush=True)
    for _ in sys.stdin:
        print(json.dumps({"tokens_per_s": timed()}), flush=True)


class Worker:
    """A worker process for one model under one setting."""

    def __init__(self, args: argparse.Namespace, model: str, setting: dict[str, str]) -> None:
        command = [sys.executable, __file__, "--worker", model, "--new-tokens",
                   str(args.new_tokens), "--max-seconds", str(args.max_seconds)]
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env=clean_environment(setting), text=True)
        self.threads = self._read()["threads"]

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"worker exited with {self.proc.wait()}")
        return json.loads(line)

    def time_decode(self) -> float:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        return self._read()["tokens_per_s"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def measure_model(args: argparse.Namespace, model: str) -> dict:
    """Alone and beside timings per setting, repeats interleaved, then medians and ratios."""
    runs = {s: {"threads": None, "alone_tokens_per_s": [], "beside_tokens_per_s": []}
            for s in args.settings}
    for repeat in range(args.repeats):
        shift = repeat % len(args.settings)
        for setting in args.settings[shift:] + args.settings[:shift]:
            worker_proc = Worker(args, model, setting_environment(setting))
            runs[setting]["threads"] = worker_proc.threads
            beside_first = (repeat + args.settings.index(setting)) % 2 == 1  # flips each repeat
            for beside in (beside_first, not beside_first):
                if beside:
                    with busy_process(args.busy):
                        rate = worker_proc.time_decode()
                else:
                    rate = worker_proc.time_decode()
                key = "beside_tokens_per_s" if beside else "alone_tokens_per_s"
                runs[setting][key].append(round(rate, 3))
            worker_proc.close()
            print(json.dumps({"model": model, "setting": setting, "repeat": repeat,
                              **{k: v[-1] for k, v in runs[setting].items() if k != "threads"}}),
                  file=sys.stderr, flush=True)
    for row in runs.values():
        row["alone_median"] = statistics.median(row["alone_tokens_per_s"])
        row["beside_median"] = statistics.median(row["beside_tokens_per_s"])
        row["beside_over_alone"] = round(row["beside_median"] / row["alone_median"], 3)
        row["meets_target"] = row["beside_over_alone"] >= TARGET
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["smollm2-135m", "qwen2.5-coder-0.5b"])
    parser.add_argument("--settings", nargs="+", default=["new", "old"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--max-seconds", type=float, default=20.0,
                        help="a timing stops after this long (a collapsed setting still ends)")
    parser.add_argument("--busy", choices=sorted(BUSY), default="python")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.new_tokens, args.max_seconds)
    settings = {s: setting_environment(s) for s in args.settings}
    report = {
        "machine": {"usable_cores": usable_cores(), "cpu_count": os.cpu_count(),
                    "processor": platform.processor() or platform.machine(),
                    "load_average_at_start": os.getloadavg()},
        "busy": {"kind": args.busy, "program": BUSY[args.busy]},
        "new_tokens": args.new_tokens, "repeats": args.repeats,
        "max_seconds": args.max_seconds, "settings": settings, "target_beside_over_alone": TARGET,
        "models": {model: measure_model(args, model) for model in args.models},
    }
    if {"new", "old"} <= set(args.settings):  # medians of the new setting over the old one
        report["new_over_old"] = {
            model: {when: round(rows["new"][f"{when}_median"] / rows["old"][f"{when}_median"], 3)
                    for when in ("alone", "beside")}
            for model, rows in report["models"].items()}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
