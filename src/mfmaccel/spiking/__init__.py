"""Spiking programs converted from the integer-only ones (`hw.intexec`): multi-threshold
integrate-and-fire neurons whose spike counts, once the network settles, equal the integer
program's activations bit for bit."""
