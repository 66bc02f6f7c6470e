"""What every layer runs a model with: the packed quantized layers (`linear`, `embedding`), their
number formats (`grid`, `pack`, `activation`), the C++ int8 kernel (`kernels`, `csrc/`), the
weight-stationary few-rows path (`fewrows`), the on-disk format of a quantized model (`plan`,
`parts`, `storage`), where a transformer's parts sit (`anatomy`), the generation loops
(`engine`), sampling (`sampling`) and the KV cache that rolls back (`cached`). It imports no
other layer of mfmaccel but the shared records, files and errors."""
