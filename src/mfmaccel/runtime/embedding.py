"""`QuantEmbedding`: untied token embeddings stored exactly like a `QuantLinear`'s weight
(one row per token, groups along the hidden size), read by lookup.

Qwen2.5-Coder-0.5B keeps its embeddings apart from its head: 136M of its 630M parameters, a
fifth of the FP16 bytes, which no byte budget near a third of FP16 can leave in 16 bits. A
lookup reads only the rows it needs, so for `int8-c-sym` and for 4-bit tables the 4-bit kernel
serves it dequantizes just those rows and never holds an fp32 table; other specs build the
dequantized table once, like `QuantLinear`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mfmaccel.runtime.linear import QuantLinear


class QuantEmbedding(QuantLinear):
    """Packed (vocab, hidden) table; `forward` takes token ids."""

    is_lookup = True

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.spec_has_kernel:
            table, scale = self._int8()
            return table[ids].float() * scale[ids].unsqueeze(-1)
        if self.uses_int4_kernel:  # the table stays packed: unpack just the rows looked up
            return self._int4_rows_dequantized(ids.reshape(-1)).view(*ids.shape, -1)
        return F.embedding(ids, self.dequantized_weight())

    def extra_repr(self) -> str:
        return f"{self.out_features} tokens x {self.in_features}, {self.spec.label}"
