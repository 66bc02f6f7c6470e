"""`mfmaccel generate`: one prompt in, its completion out, with an optional draft."""

from __future__ import annotations

from mfmaccel.decode.drafts import code_vocabulary, draft_from_spec
from mfmaccel.decode.gamma import START_GAMMA
from mfmaccel.decode.speculative import SpeculativeOutput, speculative_generate
from mfmaccel.errors import UserInputError
from mfmaccel.evaluate.codegen import chat_or_raw_ids
from mfmaccel.evaluate.ppl import require_causal_lm
from mfmaccel.models.record import LoadedModel
from mfmaccel.runtime.engine import eos_ids
from mfmaccel.runtime.sampling import Sampling


def prompt_ids(model: LoadedModel, prompt: str, chat: bool) -> list[int]:
    """The prompt's token ids, wrapped in the model's chat template when `chat`."""
    if not prompt:
        raise UserInputError("the prompt is empty; give some text with --prompt")
    if chat and not getattr(model.tokenizer, "chat_template", None):
        raise UserInputError(f"{model.name} has no chat template; drop --chat")
    if chat:
        return chat_or_raw_ids(model, prompt, prompt)[0].tolist()
    return model.tokenizer(prompt).input_ids


def generate_text(model: LoadedModel, prompt: str, *, max_new_tokens: int,
                  sampling: Sampling | None = None, draft: str | None = None,
                  gamma: int = START_GAMMA, chat: bool = False,
                  draft_vocab: int = 0) -> tuple[str, SpeculativeOutput]:
    """The completion of `prompt` (decoded text) and how it was produced. `draft_vocab` > 0
    narrows a model draft's head to that many of the most frequent code tokens."""
    require_causal_lm(model, "generation")
    if max_new_tokens < 1:
        raise UserInputError(f"max-new-tokens must be at least 1, got {max_new_tokens}")
    ids = prompt_ids(model, prompt, chat)
    vocab = model.module.get_output_embeddings().out_features
    vocab_ids = (code_vocabulary(model.tokenizer, draft_vocab, vocab_size=vocab)
                 if draft_vocab else None)
    out = speculative_generate(model.module, draft_from_spec(draft, model.module, vocab_ids), ids,
                               max_new_tokens=max_new_tokens, gamma=gamma, sampling=sampling,
                               eos_token_ids=eos_ids(model.module, model.tokenizer))
    return model.tokenizer.decode(out.tokens, skip_special_tokens=True), out
