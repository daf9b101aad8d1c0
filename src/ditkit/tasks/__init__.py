"""Behaviours a weight diff can hide; one module per task, each with the same small interface."""
