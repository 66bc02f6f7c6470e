"""One module per stage; each exposes `STAGE` and is listed once in `pipeline.registry`."""
