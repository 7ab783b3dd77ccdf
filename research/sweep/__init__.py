"""Sweeps: declare (plan.py, recipe.py), launch (runner.py, slurm.py), collect (collect.py)."""
