"""End-to-end prefill of a vision-language model with co-optimised knobs and CPU fusion, against
the unchanged model, in one run (issue 23). Prints JSON.

Variants: `unchanged` (the model as loaded), `fused` (`execute.fusion.fuse`), and for each
file of `--knobs` (a `mfmaccel cooptimize` record or a JSON of knobs, named by its stem) the
knobs alone and `<stem>+fused` (both, as `mfmaccel eval --knobs K --fuse` applies them: fused
first, then the knobs). Each variant's
prefill (processor + forward, the last token's logits) is timed on the first `--timing`
medvqa2 test prompts, `--repeats` rounds with the variants' order rotating each round; medians,
and speed-ups over `unchanged`. FLOPs of one prefill by torch's counter (the unfused variants:
fusion does the same arithmetic). With `--accuracy N`
(0: the whole test split), each `<stem>+fused` (what would be deployed) is held out against
`unchanged` on the first N test questions, paired question by question (`evaluate.paired`).

Usage: python benchmarks/knobs_speed.py --knobs FILE [FILE ...] [--model medvlm] [--timing 16]
       [--repeats 5] [--accuracy N] [--record]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import recordfile

from mfmaccel.threads import thread_environment

os.environ.update(thread_environment())  # before torch loads OpenMP: mfmaccel/threads.py

import torch  # noqa: E402

from mfmaccel.evaluate.paired import compare_paired  # noqa: E402
from mfmaccel.evaluate.run import vqa_samples  # noqa: E402
from mfmaccel.evaluate.vqa import prompt_inputs, vqa_hits  # noqa: E402
from mfmaccel.execute.cooptimize import prefill_gflops  # noqa: E402
from mfmaccel.execute.fusion import fuse  # noqa: E402
from mfmaccel.execute.settings import apply_knobs, load_knobs  # noqa: E402
from mfmaccel.models import load_model  # noqa: E402


def variants(model, settings: dict) -> dict:
    fused = fuse(model)
    models = {"unchanged": model, "fused": fused}
    for name, knobs in settings.items():
        models[name] = apply_knobs(model, knobs)
        models[f"{name}+fused"] = apply_knobs(fused, knobs)
    return models


@torch.inference_mode()
def prefill_medians(models: dict, samples, *, repeats: int) -> dict[str, float]:
    """Median seconds per prompt of each variant; the order rotates each round."""
    names = list(models)
    times = {name: [] for name in names}
    for round_ in range(repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            for sample in samples:
                start = time.perf_counter()
                models[name].module(**prompt_inputs(models[name], sample), logits_to_keep=1)
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def held_out(models: dict, settings: dict, limit: int | None) -> dict:
    test = vqa_samples(None, "test", limit=limit, benchmark="medvqa2")
    baseline = vqa_hits(models["unchanged"], test)
    return {f"{name}+fused": compare_paired(baseline,
                                            vqa_hits(models[f"{name}+fused"], test)).to_dict()
            for name in settings}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="medvlm")
    parser.add_argument("--knobs", type=Path, nargs="+", required=True)
    parser.add_argument("--timing", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--accuracy", type=int, default=None,
                        help="held-out test questions (0: the whole split); unset: skipped")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    settings = {path.stem: load_knobs(path) for path in args.knobs}
    models = variants(load_model(args.model), settings)
    samples = vqa_samples(None, "test", limit=args.timing, benchmark="medvqa2")
    seconds = prefill_medians(models, samples, repeats=args.repeats)
    report = {
        "model": args.model,
        "knobs": {name: knobs.to_dict() for name, knobs in settings.items()},
        "timing_prompts": len(samples), "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "prefill_ms": {name: round(s * 1e3, 1) for name, s in seconds.items()},
        "speedup": {name: round(seconds["unchanged"] / s, 3) for name, s in seconds.items()},
        # fused variants do the same arithmetic; torch's counter cannot see oneDNN's packed ops
        "gflops": {name: round(prefill_gflops(models[name],
                                              prompt_inputs(models[name], samples[0])), 3)
                   for name in ("unchanged", *settings)},
    }
    if args.accuracy is not None:
        report["held_out"] = held_out(models, settings, args.accuracy or None)
    report["load_average_at_end"] = os.getloadavg()
    report["commit"] = recordfile.commit()
    parts = ["knobs-speed", args.model, *settings,
             *(["heldout"] if args.accuracy is not None else [])]  # options name the record
    path = recordfile.record_path(parts, report["commit"]) if args.record else None
    recordfile.emit(report, path)


if __name__ == "__main__":
    main()
