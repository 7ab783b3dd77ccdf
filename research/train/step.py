"""The jitted train and eval steps, and where arrays live (the device mesh).

One code path for 1 or many devices: a `Mesh` with axes ("data", "fsdp"). The batch is
split over both axes; parameters and AdamW moments are sharded over "fsdp" along their
largest divisible dimension (replicated when fsdp = 1). Parameters stay float32; the
model computes in its `compute_dtype`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from research.config import RunConfig
from research.errors import UserError
from research.model.transformer import Transformer
from research.train.optim import make_optimizer


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


@dataclasses.dataclass
class Stepper:
    """Builds the model, optimiser and jitted steps for one run config on one mesh."""

    config: RunConfig
    mesh: Mesh

    def __post_init__(self):
        cfg = self.config.model
        seed = self.config.train.seed
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
        self.train_step = jax.jit(
            self._train_step,
            in_shardings=(self.param_shardings, self.opt_shardings, self.batch_sharding),
            out_shardings=(self.param_shardings, self.opt_shardings, self.replicated),
            donate_argnums=(0, 1))
        self.eval_step = jax.jit(self._eval_loss, in_shardings=(self.param_shardings, self.batch_sharding),
                                 out_shardings=self.replicated)

    def init(self):
        """Fresh (params, opt_state), created directly in their shardings."""
        cfg, seed = self.config.model, self.config.train.seed

        def make_params():
            return nnx.split(Transformer(cfg, nnx.Rngs(seed)), nnx.Param)[1]

        params = jax.jit(make_params, out_shardings=self.param_shardings)()
        opt_state = jax.jit(self.tx.init, out_shardings=self.opt_shardings)(params)
        return params, opt_state

    def _loss(self, params, tokens_BT1):
        model = nnx.merge(self.graphdef, params)
        logits_BTV = model(tokens_BT1[:, :-1])
        return cross_entropy(logits_BTV, tokens_BT1[:, 1:])

    def _train_step(self, params, opt_state, tokens_BT1):
        loss, grads = jax.value_and_grad(self._loss)(params, tokens_BT1)
        updates, opt_state = self.tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, {"loss": loss, "grad_norm": optax.global_norm(grads)}

    def _eval_loss(self, params, tokens_BT1):
        return self._loss(params, tokens_BT1)

    def put_batch(self, tokens_BT1: np.ndarray) -> jax.Array:
        return jax.device_put(jnp.asarray(tokens_BT1, jnp.int32), self.batch_sharding)
