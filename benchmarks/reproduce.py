"""Do three deterministic outputs stay byte-identical across a change? Runs an int8 quantize,
a greedy decode of the int8 model and an `hw simulate` through the CLI, and prints the sha256
of what each wrote (JSON). Run it before and after a change that must not alter behaviour
(issue 21's restructuring) and compare the digests.

    python benchmarks/reproduce.py [--model smollm2-135m]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

PROMPT = "def fibonacci(n):\n    "


def _mfmaccel(*args: str) -> str:
    command = [str(Path(sys.executable).parent / "mfmaccel"), *args]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "int8"
        _mfmaccel("quantize", "--model", args.model, "--uniform", "int8-c-sym", "--method",
                  "rtn", "--activations", "token", "--out", str(folder))
        text = _mfmaccel("generate", "--model", str(folder), "--prompt", PROMPT,
                         "--max-new-tokens", "48")
        simulation = Path(tmp) / "simulate.json"
        _mfmaccel("hw", "simulate", "--model", args.model, "--arch", "edge", "--out",
                  str(simulation))
        print(json.dumps({
            "model": args.model,
            "quantize": {name: _sha(folder / name)
                         for name in ("model.safetensors", "quantization.json", "config.json")},
            "int8_decode": {"text": text, "sha256": hashlib.sha256(text.encode()).hexdigest()},
            "hw_simulate": _sha(simulation),
        }, indent=1))


if __name__ == "__main__":
    main()
