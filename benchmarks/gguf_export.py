"""GGUF export of a mixed-precision model, read back by our loader and by llama.cpp (issue 28).

Per model: quantize to a mixed plan (`compress_to_budget`, sensitivity-searched bit-widths among
`--specs`, round-to-nearest), export it with `export_gguf`, then compare:
- size: the file's tensor bytes against the plan's (`storage_bytes`: packed integers, fp16
  scales and zeros, other parameters at fp16), and the rest of the file (metadata, vocabulary);
- perplexity on the first `--eval-tokens` of the test text: our quantized model, the file read
  back by our loader, and the file in llama.cpp (where llama-cpp-python is installed), over the
  same token windows;
- greedy agreement over the HumanEval prompts: our quantized model decodes `--new-tokens`
  greedily from each prompt; the file (each reader) is fed that same sequence and its argmax at
  each position is compared with our token there (teacher-forced, so one early difference does
  not count every later position as a miss).

llama.cpp multiplies its 4/5/8-bit blocks by int8-quantized activations, so its figures differ
from ours by that rounding even where the weights are the same bits. Prints JSON; `--record`
also writes it under benchmarks/results/.

Usage: python benchmarks/gguf_export.py [--models smollm2-135m qwen2.5-coder-0.5b]
       [--specs int4-g32 int5-g32-sym int8-g32-sym] [--avg-bits 6] [--eval-tokens 8192]
       [--prompts 164] [--new-tokens 32] [--record]
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path

from mfmaccel.threads import thread_environment

os.environ.update(thread_environment())  # before torch loads OpenMP: mfmaccel/threads.py

import numpy as np
import recordfile
import torch
from gguf import GGUFReader

from mfmaccel.compress.quantize import storage_bytes
from mfmaccel.compress.search import Budget, compress_to_budget
from mfmaccel.data.code import load_humaneval
from mfmaccel.data.text import load_text_corpus
from mfmaccel.evaluate.ppl import perplexity, window_spans
from mfmaccel.models import load_model
from mfmaccel.models.gguf_export import export_gguf
from mfmaccel.runtime.engine import greedy_generate

CONTEXT = 512


def eval_ids(model, text: str, max_tokens: int) -> torch.Tensor:
    """The tokens `evaluate.ppl.perplexity` scores for `text` and `max_tokens`."""
    ids = model.tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids[0]
    return ids[:max_tokens]


def llama_cpp_perplexity(path: Path, ids: torch.Tensor) -> float:
    """Perplexity of `ids` in llama.cpp over the windows `evaluate.ppl.perplexity` uses."""
    import llama_cpp

    llm = llama_cpp.Llama(str(path), n_ctx=CONTEXT, n_batch=CONTEXT, logits_all=True,
                          verbose=False)
    total, scored = 0.0, 0
    for begin, end, n_scored in window_spans(len(ids), CONTEXT, CONTEXT):
        llm.reset()
        llm.eval(ids[begin:end].tolist())
        logits = torch.tensor(np.array(llm.scores[: end - begin]), dtype=torch.float32)
        picked = logits[-n_scored - 1 : -1]
        targets = ids[end - n_scored : end]
        total += float(torch.nn.functional.cross_entropy(picked, targets, reduction="sum"))
        scored += n_scored
    llm.close()
    return math.exp(total / scored)


def greedy_sequences(model, prompts: list[list[int]], new_tokens: int) -> list[list[int]]:
    """Each prompt followed by our quantized model's greedy continuation."""
    sequences = []
    with torch.inference_mode():
        for ids in prompts:
            out = greedy_generate(model.module, torch.tensor([ids]), new_tokens)
            sequences.append(ids + list(out.tokens))
    return sequences


def agreement(argmax_of, sequences: list[list[int]], prompt_lengths: list[int]) -> dict:
    """Positions where the reader's argmax equals our greedy token, over every prompt."""
    same = total = first_token = 0
    for sequence, start in zip(sequences, prompt_lengths, strict=True):
        predicted = argmax_of(sequence)  # argmax after each prefix, one per position
        ours = sequence[start:]
        theirs = predicted[start - 1 : len(sequence) - 1]
        same += sum(a == b for a, b in zip(ours, theirs, strict=True))
        total += len(ours)
        first_token += ours[0] == theirs[0]
    return {"positions": total, "agree": same, "fraction": same / total,
            "first_token_agree": first_token / len(sequences)}


def torch_argmax(model):
    def argmax_of(sequence: list[int]) -> list[int]:
        with torch.inference_mode():
            logits = model.module(input_ids=torch.tensor([sequence])).logits[0]
        return logits.argmax(-1).tolist()
    return argmax_of


def llama_cpp_argmax(path: Path, window: int):
    import llama_cpp

    llm = llama_cpp.Llama(str(path), n_ctx=window, n_batch=512, logits_all=True, verbose=False)

    def argmax_of(sequence: list[int]) -> list[int]:
        llm.reset()
        llm.eval(sequence)
        return np.array(llm.scores[: len(sequence)]).argmax(-1).tolist()
    return llm, argmax_of


def llama_cpp_installed() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


def measure(name: str, args, folder: Path) -> dict:
    began = time.perf_counter()
    model = load_model(name)
    model, record = compress_to_budget(model, Budget(avg_bits=args.avg_bits), args.specs,
                                       method="rtn", log=lambda _: None)
    path = folder / f"{Path(name).name}.gguf"
    exported = export_gguf(model, path)
    tensor_bytes = sum(int(t.n_bytes) for t in GGUFReader(path).tensors)
    plan_bytes = storage_bytes(model.module)
    text = load_text_corpus("test")
    ids = eval_ids(model, text, args.eval_tokens)
    ours_ppl = perplexity(model, text, context=CONTEXT, max_tokens=args.eval_tokens)
    back = load_model(str(path))
    back_ppl = perplexity(back, text, context=CONTEXT, max_tokens=args.eval_tokens)
    same_tokens = torch.equal(eval_ids(back, text, args.eval_tokens), ids)
    prompts = [model.tokenizer(p.prompt).input_ids for p in load_humaneval()[: args.prompts]]
    sequences = greedy_sequences(model, prompts, args.new_tokens)
    lengths = [len(p) for p in prompts]
    result = {
        "model": name,
        "plan": {"specs": args.specs, "avg_bits": args.avg_bits, "method": "rtn",
                 "choice_histogram": record.choice_histogram},
        "gguf_types": _histogram(exported.tensors.values()),
        "rounded_tensors": len(exported.rounded),
        "not_kept": exported.not_kept,
        "size": {"file_bytes": exported.bytes, "tensor_bytes": tensor_bytes,
                 "plan_bytes": plan_bytes, "tensor_over_plan": tensor_bytes / plan_bytes - 1,
                 "metadata_bytes": exported.bytes - tensor_bytes},
        "perplexity": {"eval_tokens": ours_ppl.tokens, "context": CONTEXT,
                       "ours": ours_ppl.perplexity, "read_back": back_ppl.perplexity,
                       "read_back_over_ours": back_ppl.perplexity / ours_ppl.perplexity - 1,
                       "read_back_tokenizes_alike": same_tokens},
        "agreement": {"prompts": len(prompts), "new_tokens": args.new_tokens,
                      "read_back": agreement(torch_argmax(back), sequences, lengths)},
    }
    del back
    if llama_cpp_installed():
        llama_ppl = llama_cpp_perplexity(path, ids)
        result["perplexity"]["llama_cpp"] = llama_ppl
        result["perplexity"]["llama_cpp_over_ours"] = llama_ppl / ours_ppl.perplexity - 1
        window = max(len(s) for s in sequences)
        llm, argmax_of = llama_cpp_argmax(path, window)
        result["agreement"]["llama_cpp"] = agreement(argmax_of, sequences, lengths)
        llm.close()
    result["seconds"] = time.perf_counter() - began
    return result


def _histogram(values) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return dict(sorted(counts.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["smollm2-135m", "qwen2.5-coder-0.5b"])
    parser.add_argument("--specs", nargs="+", default=["int4-g32", "int5-g32-sym",
                                                       "int8-g32-sym"])
    parser.add_argument("--avg-bits", type=float, default=6.0)
    parser.add_argument("--eval-tokens", type=int, default=8192)
    parser.add_argument("--prompts", type=int, default=164)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["MFMACCEL_CACHE"] = str(Path(scratch) / "cache")  # the read-back's copy
        models = [measure(name, args, Path(scratch)) for name in args.models]
    report = {"benchmark": "gguf_export", "commit": recordfile.commit(),
              "llama_cpp": llama_cpp_installed(), "models": models}
    path = (recordfile.record_path(["gguf-export", *[Path(m).name for m in args.models]],
                                   recordfile.commit()) if args.record else None)
    recordfile.emit(report, path)


if __name__ == "__main__":
    main()
