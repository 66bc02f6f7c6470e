"""Layer 2 of the method, compression: quantizers and packed storage (`quant`), hierarchy-aware
sensitivity (`sensitivity`), mixed-precision search (`mixed`) and structural pruning (`prune`)."""
