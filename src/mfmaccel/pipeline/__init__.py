"""Recipes of stages run in order on one model, each evaluated before and after."""
