"""Evaluation: scoring a model on a task and deciding, with honest statistics, whether it changed."""
