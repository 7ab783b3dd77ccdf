"""Whole loss curves as data: laws of the loss at every step under any learning-rate schedule.

    laws.py       the Multi-Power Law (Luo et al. 2025) and the LR-annealing law (Tissue et al. 2024)
    schedules.py  schedules as per-step LR arrays, from the trainer's own schedule function
    fitting.py    the fit (Huber on log loss over every logged step, several starts) and its bootstrap
    table.py      per-step tables (run, step, lr, loss) and sweep / run directories in
    record.py     LAW.json out and in; `fit_curve_law` (fit + bootstrap + warmup curve + in-sample errors)
    offsets.py    per-trunk offsets of a sweep, and its results table corrected by them
    anchor.py     a law anchored to each trunk's measured curve: the trunk gives the level, the law the drop
    trunks_only.py  a trunks-plus-1-2-cooldowns design evaluated on a finished branch sweep
    synthetic.py  curves drawn from a known law (tests, benchmarks, docs)
    cli.py        `scaling curves fit|predict|offsets|trunks-only`

Layering: above fit (reads tables with research.fit.data), below plots and sweep.
"""
