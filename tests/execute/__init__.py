"""Tests of mfmaccel.execute."""
