"""Scaling-law research harness.

Data flow, one subpackage per stage:
    data -> model -> train -> sweep -> fit -> plots
"""

__version__ = "0.1.0"
