"""Time the training step: compile, warm up, run N steps with the device synchronised.

The step timed is `Stepper.train_step` from `research.train.step`, the very function
`scaling train` runs (same model, optimiser, shardings, donation), called as training
calls it; it is compiled ahead of time first so that compile time is measured alone.
Batches are uniform random tokens by default (`data="random"`; speed does not depend on the token values), or
the run's real training batches (`data="real"`), all put on the device before timing.

Two timed windows of `steps` steps each:
    quiet     steps back to back; the device is synchronised before and after
    logged    as `scaling train` with log_every = 1: each step's metrics fetched to the
              host one step behind (the worst case of logging)
`step_time_s` is the quiet window's mean; `logging_overhead` = logged / quiet - 1.

MFU (the headline) counts model FLOPs as PaLM (Chowdhery et al. 2022, App. B) and nanoGPT
do: `research.model.accounting.model_flops_per_token` = 6 x the parameters that take part
in matmuls (layers' matrices + output head; the input-embedding lookup excluded; tied
embeddings counted once) + 12 x L x T x d for attention, causal masking NOT halved.
MFU = model FLOP/s / (devices x dense bf16 peak of the device kind); None (unknown) when
the device kind is not in `research.train.devices`.

The FLOP/s under the two conventions for C are reported beside it, labelled as what they
are, with the would-be utilisation they imply (not MFU):
    "6n"          6 x n_params per token (embeddings included, attention ignored)
    "chinchilla"  Hoffmann et al. 2022 App. F, embeddings and attention over the full s x s square
"""

from __future__ import annotations

import datetime
import os
import platform
import time

import jax
import numpy as np

from research.config import RunConfig
from research.data import get_dataset
from research.model.accounting import FLOP_CONVENTIONS, count_model, count_params
from research.model.transformer import attention_impl, compute_dtype
from research.train.devices import peak_for_kind
from research.train.loop import resolve, versions
from research.train.step import Stepper, check_memory, loss_chunk, make_mesh

COUNTS = ("model", *FLOP_CONVENTIONS)  # "model": the MFU count; the others: conventions for C

N_RANDOM_BATCHES = 4  # distinct random batches, cycled


def _resolve_data(config: RunConfig, data: str):
    """(config with vocab_size set, batch maker) for random or real batches."""
    m, t = config.model, config.train
    dataset = None
    if data == "real" or m.vocab_size is None:

        d = config.data
        dataset = get_dataset(d.corpus, d.tokenizer, val_fraction=d.val_fraction, seed=d.seed)
        config = resolve(config, dataset)
    vocab = config.model.vocab_size
    if data == "real":
        return config, lambda i: dataset.train_batch(i, t.batch_size, m.seq_len, t.seed)
    rng = np.random.default_rng(t.seed)
    batches = [rng.integers(0, vocab, (t.batch_size, m.seq_len + 1), dtype=np.int32)
               for _ in range(N_RANDOM_BATCHES)]
    return config, lambda i: batches[i % N_RANDOM_BATCHES]


def _memory(compiled) -> dict:
    out: dict = {"peak_bytes_in_use": None, "bytes_limit": None}
    stats = [d.memory_stats() for d in jax.local_devices()]
    if all(s for s in stats):
        out["peak_bytes_in_use"] = max(int(s.get("peak_bytes_in_use", 0)) for s in stats)
        out["bytes_limit"] = min(int(s.get("bytes_limit", 0)) for s in stats) or None
    try:
        ma = compiled.memory_analysis()
    except Exception:  # not every backend implements it
        ma = None
    if ma is not None:
        out["compiled"] = {k: int(getattr(ma, k)) for k in (
            "argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes",
            "temp_size_in_bytes", "generated_code_size_in_bytes") if hasattr(ma, k)}
        # per device: live arguments + outputs not aliased to (donated) arguments + scratch
        c = out["compiled"]
        out["compiled_total_bytes"] = (c.get("argument_size_in_bytes", 0) + c.get("output_size_in_bytes", 0)
                                       - c.get("alias_size_in_bytes", 0) + c.get("temp_size_in_bytes", 0))
    return out


def benchmark(config: RunConfig, *, steps: int = 20, warmup: int = 3, data: str = "random") -> dict:
    """Measure the train step of `config` on all devices of its mesh; a JSON-ready dict."""
    if steps < 1 or warmup < 0:
        raise ValueError("steps must be >= 1 and warmup >= 0")
    config, make_batch = _resolve_data(config, data)
    m, t = config.model, config.train
    mesh = make_mesh(config)
    check_memory(config, count_params(m)[0], mesh)  # refused at once, as `train` refuses it
    n_devices = mesh.devices.size
    stepper = Stepper(config, mesh)
    params, opt_state = stepper.init()
    n_batches = N_RANDOM_BATCHES if data == "random" else warmup + 2 * steps
    batches = [stepper.put_batch(make_batch(i)) for i in range(n_batches)]
    jax.block_until_ready(batches)

    # Compiled ahead of time to time it alone; JAX keeps the executable, so the jitted
    # `train_step` called below reuses it (its cache then holds exactly one entry).
    t0 = time.perf_counter()
    compiled = stepper.train_step.lower(params, opt_state, batches[0]).compile()
    compile_s = time.perf_counter() - t0

    losses = []
    i = 0
    for _ in range(warmup):
        params, opt_state, metrics = stepper.train_step(params, opt_state, batches[i % n_batches])
        i += 1
    jax.block_until_ready((params, opt_state))

    def window(fetch_behind: bool) -> float:
        nonlocal params, opt_state, i
        pending = None
        start = time.perf_counter()
        for _ in range(steps):
            params, opt_state, metrics = stepper.train_step(params, opt_state, batches[i % n_batches])
            i += 1
            if fetch_behind and pending is not None:
                losses.append(float(jax.device_get(pending)["loss"]))
            pending = metrics
        jax.block_until_ready((params, opt_state, metrics))
        elapsed = time.perf_counter() - start
        if fetch_behind:
            losses.append(float(jax.device_get(metrics)["loss"]))
        return elapsed

    quiet_s = window(fetch_behind=False)
    logged_s = window(fetch_behind=True)
    memory = _memory(compiled)

    counts = count_model(m)
    tokens_per_step = t.batch_size * m.seq_len
    step_s = quiet_s / steps
    tokens_per_s = tokens_per_step / step_s
    kind = jax.devices()[0].device_kind
    peak = peak_for_kind(kind)
    per_token = {"model": counts.flops_per_token_model,
                 **{c: counts.flops_per_token(c) for c in FLOP_CONVENTIONS}}
    flops, mfu = {}, {}
    for name in COUNTS:
        achieved = per_token[name] * tokens_per_s
        flops[name] = achieved
        mfu[name] = achieved / (peak.bf16_flops * n_devices) if peak else None
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "config": config.to_dict(),
        "data": "uniform random tokens" if data == "random" else "real training batches",
        "device": {"backend": jax.default_backend(), "kind": kind, "count": n_devices,
                   "mesh": dict(mesh.shape), "processes": jax.process_count(),
                   "peak_name": peak.name if peak else None,
                   "peak_bf16_flops_per_device": peak.bf16_flops if peak else None},
        "compute_dtype": str(np.dtype(compute_dtype(m))), "attention": attention_impl(m),
        "loss_chunk": loss_chunk(t.loss_chunk), "remat": m.remat, "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "steps": steps, "warmup": warmup, "tokens_per_step": tokens_per_step,
        "compile_s": compile_s, "step_time_s": step_s, "step_time_logged_s": logged_s / steps,
        "logging_overhead": logged_s / quiet_s - 1.0,
        "tokens_per_s": tokens_per_s, "tokens_per_s_per_device": tokens_per_s / n_devices,
        "flops_per_token": per_token,
        "flops_per_s": flops, "tflops_per_s_per_device": {c: v / n_devices / 1e12 for c, v in flops.items()},
        "mfu": mfu,
        "mfu_note": "MFU = mfu['model'] = model FLOP/s / (devices x dense bf16 peak); model FLOPs per token "
                    "= 6 x matmul params (input-embedding lookup excluded, tied head counted once) + "
                    "12 x L x T x d attention, causal masking not halved (PaLM App. B). '6n' (6 x n_params) "
                    "and 'chinchilla' (Hoffmann et al. App. F) are conventions for C, not MFU: their "
                    "entries are the utilisation those counts would imply",
        "n_params_matmul": counts.n_params_matmul,
        "memory": memory,
        "n_params": counts.n_params,
        "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
        "jit_cache_size": stepper.train_step._cache_size(),
        "versions": versions(), "host": platform.node(),
    }


def _fmt_bytes(n) -> str:
    return "unknown" if n is None else f"{n / 2**30:.2f} GiB"


def _fmt_mfu(x) -> str:
    return "unknown" if x is None else f"{100 * x:.1f}%"


def format_report(r: dict) -> str:
    d, m = r["device"], r["config"]["model"]
    peak = (f"{d['peak_name']}, {d['peak_bf16_flops_per_device'] / 1e12:.0f} TFLOP/s dense bf16 per device"
            if d["peak_name"] else "unknown device kind: MFU unknown")
    lines = [
        f"model       {m['layers']} layers, d_model {m['d_model']}, {m['heads']} heads, vocab {m['vocab_size']}, "
        f"seq {m['seq_len']}, batch {r['config']['train']['batch_size']}; {r['n_params']:,} params",
        f"device      {d['count']} x {d['kind']} ({d['backend']}, mesh {d['mesh']}); peak: {peak}",
        f"step        {r['compute_dtype']}, attention {r['attention']}, remat {r['remat']}, "
        f"loss chunk {r['loss_chunk'] or 'off'}; data: {r['data']}",
        f"compile     {r['compile_s']:.1f} s",
        f"step time   {1e3 * r['step_time_s']:.2f} ms  ({r['steps']} steps after {r['warmup']} warm-up); "
        f"with metrics fetched every step: {1e3 * r['step_time_logged_s']:.2f} ms "
        f"({100 * r['logging_overhead']:+.1f}%)",
        f"tokens/s    {r['tokens_per_s']:,.0f}  ({r['tokens_per_s_per_device']:,.0f} per device)",
    ]
    lines.append(f"MFU         {_fmt_mfu(r['mfu']['model'])}  ({r['tflops_per_s_per_device']['model']:.2f} TFLOP/s "
                 f"per device of model FLOPs, {r['flops_per_token']['model']:.3e} FLOP/token: 6 x "
                 f"{r['n_params_matmul']:,} matmul params + 12 L T d attention, no causal halving; PaLM App. B)")
    for conv in FLOP_CONVENTIONS:
        label = ("6 x all params" if conv == "6n"
                 else "Hoffmann et al. App. F, embeddings + attention full s x s")
        lines.append(f"C [{conv:10s}] {r['tflops_per_s_per_device'][conv]:8.2f} TFLOP/s per device "
                     f"({label}, {r['flops_per_token'][conv]:.3e} FLOP/token; a convention for C, "
                     f"not MFU: would be {_fmt_mfu(r['mfu'][conv])})")
    mem = r["memory"]
    lines.append(f"memory      peak in use {_fmt_bytes(mem['peak_bytes_in_use'])}; compiled step needs "
                 f"{_fmt_bytes(mem.get('compiled_total_bytes'))} per device (arguments + outputs + temporaries)")
    return "\n".join(lines)
