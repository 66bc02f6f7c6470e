"""Operation optimisation II: resolution, stride, token and prompt-length knobs, fusion."""
