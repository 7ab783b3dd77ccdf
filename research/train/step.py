"""The jitted train and eval steps, and where arrays live (the device mesh).

One code path for 1 or many devices: a `Mesh` with axes ("data", "fsdp"). The batch is
split over both axes; parameters and AdamW moments are sharded over "fsdp" along their
largest divisible dimension (replicated when fsdp = 1). Parameters stay float32; the
model computes in its `compute_dtype`.

Multi-host: call `initialize_distributed()` before anything touches a device; every
process then computes the same global batch (a pure function of the step) and
`put_batch` hands each process's devices their slices.

The loss can be computed over chunks of tokens (`loss_chunk`): each chunk's logits are
built, reduced to a log-sum-exp and dropped, and rebuilt in the backward pass, so the
full [B, T, V] float32 logits never exist. It trades one extra unembedding matmul for
that memory traffic: on by default on CPU (faster there, cache-sized chunks), off on
GPU/TPU unless `[train] loss_chunk` (or SCALING_LOSS_CHUNK) says otherwise. Losses agree
to float rounding.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from research.config import RunConfig
from research.errors import UserError
from research.model.accounting import MEMORY_BYTES_PER_PARAM
from research.guards import check_environment
from research.model.transformer import Transformer
from research.train.optim import make_optimizer, schedule_numbers


def initialize_distributed() -> bool:
    """`jax.distributed.initialize` when launched as several processes; True if it did.

    Several processes means Slurm with SLURM_NTASKS > 1 (JAX reads the rest from Slurm), or
    JAX_COORDINATOR_ADDRESS with JAX_NUM_PROCESSES and JAX_PROCESS_ID. A single process, or
    a second call, does nothing. Must run before the first use of any device.
    """
    global _DISTRIBUTED
    if _DISTRIBUTED:
        return True
    env = os.environ
    check_environment(env)
    if env.get("JAX_COORDINATOR_ADDRESS") or env.get("JAX_NUM_PROCESSES"):
        missing = [k for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID") if not env.get(k)]
        if missing:
            raise UserError(f"multi-process launch needs {', '.join(missing)} in the environment as well")
        if int(env["JAX_NUM_PROCESSES"]) <= 1:
            return False
        jax.distributed.initialize(env["JAX_COORDINATOR_ADDRESS"], int(env["JAX_NUM_PROCESSES"]),
                                   int(env["JAX_PROCESS_ID"]))
    elif int(env.get("SLURM_NTASKS", "1") or 1) > 1:
        jax.distributed.initialize()
    else:
        return False
    _DISTRIBUTED = True
    return True


_DISTRIBUTED = False


CPU_LOSS_CHUNK = 256  # tokens; measured fastest on CPU (cache-sized logits chunks), see results/bench


def loss_chunk(configured: int | str = "auto") -> int:
    """Tokens per chunk of the chunked loss; 0 = the plain loss.

    `configured` is `[train] loss_chunk` (N tokens, 0 = off, or "auto"); the environment
    variable SCALING_LOSS_CHUNK, when set, overrides it (benchmark variants use that).
    "auto": CPU_LOSS_CHUNK on CPU, where it is measured faster, and off on GPU/TPU until
    `scaling bench` shows it faster there.
    """
    text = os.environ.get("SCALING_LOSS_CHUNK", "").strip().lower()
    if text and text != "auto" and not text.isdigit():
        raise UserError(f"SCALING_LOSS_CHUNK = {text!r}: expected a number of tokens, 0 (off) or auto")
    value = (int(text) if text.isdigit() else text) if text else configured
    if value == "auto":
        return CPU_LOSS_CHUNK if jax.default_backend() == "cpu" else 0
    return int(value)


def make_mesh(config: RunConfig) -> Mesh:
    devices = jax.devices()
    fsdp = config.train.mesh_fsdp
    data = config.train.mesh_data if config.train.mesh_data > 0 else max(1, len(devices) // fsdp)
    if fsdp < 1 or data * fsdp > len(devices):
        raise UserError(f"[train] mesh_data x mesh_fsdp = {data} x {fsdp} needs more than the "
                        f"{len(devices)} {devices[0].platform} device(s) available")
    if config.train.batch_size % (data * fsdp):
        raise UserError(f"[train] batch_size = {config.train.batch_size} is not divisible by the "
                        f"{data * fsdp} devices of the mesh (data {data} x fsdp {fsdp})")
    return Mesh(np.array(devices[: data * fsdp]).reshape(data, fsdp), ("data", "fsdp"))


def device_memory_bytes(device) -> int:
    """What one device can hold: its allocator limit on GPU/TPU, the host's RAM on CPU."""
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_memory(config: RunConfig, n_params: int, mesh: Mesh) -> None:
    """Refuse a run that cannot fit, before anything is allocated or written. A lower bound:
    fp32 weights, gradients and AdamW moments (16 bytes/parameter, sharded over fsdp at best)
    plus one int32 batch per device; activations are not counted, so this never refuses a run
    that could fit."""
    t, m = config.train, config.model
    data, fsdp = mesh.shape["data"], mesh.shape["fsdp"]
    state = MEMORY_BYTES_PER_PARAM["fp32"] * n_params / fsdp
    batch = 4 * t.batch_size * (m.seq_len + 1) / (data * fsdp)
    device = next(d for d in mesh.devices.flat if d.process_index == jax.process_index())  # one of ours
    limit = device_memory_bytes(device)
    if state + batch > limit:
        raise UserError(f"the run needs at least {(state + batch) / 2**30:,.4g} GiB per device (fp32 weights, "
                        f"gradients and AdamW moments of {n_params:,} parameters over fsdp {fsdp}, plus a batch of "
                        f"{t.batch_size:,} x {m.seq_len + 1:,} tokens) but a {device.platform} device holds "
                        f"{limit / 2**30:,.4g} GiB; lower [model] sizes or [train] batch_size, or raise mesh_fsdp")


def param_spec(shape: tuple[int, ...], fsdp: int) -> P:
    """Shard the largest dimension that fsdp divides; replicate small or indivisible arrays."""
    if fsdp == 1 or len(shape) < 2:
        return P()
    for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
        if shape[axis] % fsdp == 0:
            spec = [None] * len(shape)
            spec[axis] = "fsdp"
            return P(*spec)
    return P()


def cross_entropy(logits_BTV: jax.Array, targets_BT: jax.Array) -> jax.Array:
    """Mean next-token loss in nats per token."""
    return optax.softmax_cross_entropy_with_integer_labels(logits_BTV, targets_BT).mean()


def chunked_cross_entropy(model: Transformer, x_BTD: jax.Array, targets_BT: jax.Array, chunk: int) -> jax.Array:
    """`cross_entropy(model.logits(x_BTD), targets_BT)` without holding all the logits at once.

    Shape letters here: P = B·T token positions, M = number of chunks, K = positions per chunk
    (not N, C: those are parameters and compute in this package)."""
    D = x_BTD.shape[-1]
    x_PD, t_P = x_BTD.reshape(-1, D), targets_BT.reshape(-1)
    n_positions = t_P.shape[0]
    chunk = min(chunk, n_positions)
    n_chunks = -(-n_positions // chunk)
    pad = n_chunks * chunk - n_positions
    x_MKD = jnp.pad(x_PD, ((0, pad), (0, 0))).reshape(n_chunks, chunk, D)
    t_MK = jnp.pad(t_P, (0, pad)).reshape(n_chunks, chunk)

    @jax.checkpoint  # keep only the chunk's input; rebuild its logits in the backward pass
    def chunk_losses(x_KD, t_K):
        logits_KV = model.logits(x_KD)
        target_K = jnp.take_along_axis(logits_KV, t_K[:, None], axis=-1)[:, 0]
        return jax.nn.logsumexp(logits_KV, axis=-1) - target_K

    losses_MK = jax.lax.map(lambda xt: chunk_losses(*xt), (x_MKD, t_MK))
    return losses_MK.reshape(-1)[:n_positions].sum() / n_positions


class TrainStep:
    """`step(params, opt_state, tokens_BT1)` -> (params, opt_state, metrics), one jitted program.

    The run's schedule numbers (`schedule_numbers`) are passed to the program as an
    argument, not compiled into it: runs of one shape and optimiser that differ only in
    their horizon share a compiled program (and a persistent compilation cache entry).
    """

    def __init__(self, jitted, schedule_S: jax.Array):
        self.jitted, self.schedule_S = jitted, schedule_S

    def __call__(self, params, opt_state, tokens_BT1):
        return self.jitted(params, opt_state, tokens_BT1, self.schedule_S)

    def lower(self, params, opt_state, tokens_BT1):
        return self.jitted.lower(params, opt_state, tokens_BT1, self.schedule_S)

    def _cache_size(self) -> int:
        return self.jitted._cache_size()


@dataclasses.dataclass
class Stepper:
    """Builds the model, optimiser and jitted steps for one run config on one mesh."""

    config: RunConfig
    mesh: Mesh

    def __post_init__(self):
        cfg = self.config.model
        seed = self.config.train.seed
        self.loss_chunk = loss_chunk(self.config.train.loss_chunk)
        abstract = nnx.eval_shape(lambda: Transformer(cfg, nnx.Rngs(seed)))
        self.graphdef, abstract_params = nnx.split(abstract, nnx.Param)
        fsdp = self.mesh.shape["fsdp"]
        self.param_shardings = jax.tree.map(
            lambda x: NamedSharding(self.mesh, param_spec(x.shape, fsdp)), abstract_params)
        self.replicated = NamedSharding(self.mesh, P())
        self.batch_sharding = NamedSharding(self.mesh, P(("data", "fsdp"), None))
        self.tx = make_optimizer(self.config)
        self.opt_shardings = optax.tree_map_params(
            self.tx, lambda _, sharding: sharding, jax.eval_shape(self.tx.init, abstract_params),
            self.param_shardings, transform_non_params=lambda _: self.replicated)
        jitted = jax.jit(
            self._train_step,
            in_shardings=(self.param_shardings, self.opt_shardings, self.batch_sharding, self.replicated),
            out_shardings=(self.param_shardings, self.opt_shardings, self.replicated),
            donate_argnums=(0, 1))
        numbers = jax.device_put(schedule_numbers(self.config), self.replicated)
        self.train_step = TrainStep(jitted, numbers)
        self.eval_step = jax.jit(self._eval_loss, in_shardings=(self.param_shardings, self.batch_sharding),
                                 out_shardings=self.replicated)

    def init(self):
        """Fresh (params, opt_state), created directly in their shardings."""
        cfg, seed = self.config.model, self.config.train.seed

        def make_params(key):
            return nnx.split(Transformer(cfg, nnx.Rngs(key)), nnx.Param)[1]

        # The seed's key enters as an argument, not a constant folded into the program: runs that
        # differ only in their seed (a sweep's seeds) share one compiled init, with the same values.
        params = jax.jit(make_params, out_shardings=self.param_shardings)(jax.random.key(seed))
        opt_state = jax.jit(self.tx.init, out_shardings=self.opt_shardings)(params)
        return params, opt_state

    def _loss(self, params, tokens_BT1):
        model = nnx.merge(self.graphdef, params)
        x_BTD = model.hidden(tokens_BT1[:, :-1])
        if self.loss_chunk:
            return chunked_cross_entropy(model, x_BTD, tokens_BT1[:, 1:], self.loss_chunk)
        return cross_entropy(model.logits(x_BTD), tokens_BT1[:, 1:])

    def _train_step(self, params, opt_state, tokens_BT1, schedule_S):
        loss, grads = jax.value_and_grad(self._loss)(params, tokens_BT1)
        updates, opt_state = make_optimizer(self.config, schedule_S).update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, {"loss": loss, "grad_norm": optax.tree.norm(grads)}

    def _eval_loss(self, params, tokens_BT1):
        return self._loss(params, tokens_BT1)

    def put_batch(self, tokens_BT1: np.ndarray) -> jax.Array:
        """The global batch (the same on every process) as an array sharded over the mesh.

        With several processes each one transfers only the rows of its own devices.
        """
        tokens_BT1 = np.asarray(tokens_BT1, np.int32)
        if jax.process_count() == 1:
            return jax.device_put(tokens_BT1, self.batch_sharding)
        return jax.make_array_from_callback(tokens_BT1.shape, self.batch_sharding, lambda idx: tokens_BT1[idx])
