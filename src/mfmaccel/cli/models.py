"""`mfmaccel models`: the built-in models and where each stands on this machine."""

from __future__ import annotations

from rich.table import Table

from mfmaccel.cli.root import app, console


@app.command("models")
def list_models() -> None:
    """List the built-in models, whether their packages are installed, and whether cached."""
    import importlib.util

    from mfmaccel.models import BUILTIN_MODELS
    from mfmaccel.runtime.cachedir import cache_root

    table = Table("name", "upstream", "installed", "converted")
    for model in BUILTIN_MODELS.values():
        installed = all(
            importlib.util.find_spec(p.replace("-", "_")) for p in model.weights.packages
        )
        converted = (cache_root() / "models" / model.name).is_dir()
        table.add_row(model.name, model.upstream, "yes" if installed else "no",
                      "yes" if converted or model.weights.fmt == "hf-folder" else "no")
    console.print(table)
    console.print("Also: medvlm (SmolLM2 + dinov2-s14 + the trained parts in weights/medvlm), "
                  "medvlm-base (before fine-tuning), medvlm-v1 (the first medvlm: from-scratch "
                  "tower, weights/medvlm-v1); tiny-llama, tiny-gpt2, tiny-qwen2, tiny-bert, "
                  "tiny-vit, tiny-llava (random init, for tests); a Hugging Face folder, or a "
                  ".gguf file.")
