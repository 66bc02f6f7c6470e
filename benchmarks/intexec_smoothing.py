"""Choose the integer Llama program's SmoothQuant strength without the test half: for each
alpha, integer-only perplexity against float on a validation slice of the corpus's train half
(past every calibration window), then the chosen alpha's figure on the test half.

`LLAMA_SMOOTHING` in `hw/intexec/llama.py` is the alpha this picks. Prints JSON.

Usage: python benchmarks/intexec_smoothing.py [--model smollm2-135m] [--alphas 0.4 0.5 ...]
"""

from __future__ import annotations

import argparse
import json
import os

from mfmaccel.threads import thread_environment

os.environ.update(thread_environment())  # before torch loads OpenMP: mfmaccel/threads.py

import torch

from mfmaccel.hw.intexec.quality import decoder_agreement
from mfmaccel.models import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.4, 0.5, 0.6, 0.7, 0.8])
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--calibration-tokens", type=int, default=2048)
    parser.add_argument("--no-test", action="store_true", help="Skip the test-half figure")
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = load_model(args.model)

    def agreement(alpha: float, split: str) -> dict:
        record = decoder_agreement(model, tokens=args.tokens, calibration=args.calibration_tokens,
                                   split=split, alpha=alpha)
        return record.to_dict()

    validation = [agreement(alpha, "validation") for alpha in args.alphas]
    best = min(validation, key=lambda row: row["ppl_change"])
    result = {"model": args.model, "validation": validation, "chosen_alpha": best["alpha"]}
    if not args.no_test:
        result["test"] = agreement(best["alpha"], "test")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
