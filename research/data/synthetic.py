"""The `synthetic` corpus: a sparse random Markov chain whose entropy rate is known exactly.

Spec syntax (all options optional, any order)::

    synthetic
    synthetic:states=64,branch=4,tokens=2000000,doc=16384,seed=0

* ``states`` K (2..94): each state is one printable ASCII byte, so the
  ``bytes`` tokenizer gives exactly one token per symbol.
* ``branch``: allowed successors per state (1..K). State s always may go to
  s+1 (mod K), which makes the chain irreducible; the other successors are
  drawn at random, with Dirichlet(1) transition probabilities.
* ``tokens``: total symbols generated; ``doc``: symbols per document.
* ``seed``: seeds both the chain and the sample.

Every document is an independent run of the chain started from its
stationary distribution pi, so each document is exactly stationary. The
entropy rate H = sum_s pi(s) * H(P(.|s)) nats/symbol is the lowest achievable
loss per symbol. Documents are joined WITHOUT a separator; at each document
boundary the next symbol is drawn from pi rather than P(.|s), which adds at
most log(K)/doc nats/symbol (~2.5e-4 with the defaults) to the achievable loss.
"""

from __future__ import annotations

import re
import string
from dataclasses import asdict, dataclass

import numpy as np

from research.errors import UserError, closest

# The 94 printable, non-space ASCII characters; state i is ALPHABET[i].
ALPHABET = string.ascii_lowercase + string.ascii_uppercase + string.digits + string.punctuation


@dataclass(frozen=True)
class SyntheticSpec:
    """Options of the synthetic Markov source (see module docstring)."""

    states: int = 64
    branch: int = 4
    tokens: int = 2_000_000
    doc: int = 16_384
    seed: int = 0

    @property
    def name(self) -> str:
        """Canonical corpus string with every option spelled out."""
        return "synthetic:" + ",".join(f"{k}={v}" for k, v in asdict(self).items())


def parse_synthetic_spec(corpus: str) -> SyntheticSpec:
    """Parse 'synthetic' or 'synthetic:key=value,...'; raise UserError on bad options."""
    _, _, options = corpus.partition(":")
    values: dict[str, int] = {}
    fields = SyntheticSpec.__dataclass_fields__
    for item in filter(None, (part.strip() for part in options.split(","))):
        match = re.fullmatch(r"(\w+)=([0-9_]+)", item)
        if not match:
            raise UserError(
                f"bad synthetic option {item!r} in {corpus!r}: write key=integer, "
                f"e.g. 'synthetic:states=64,branch=4,tokens=2000000,doc=16384,seed=0'"
            )
        key, value = match.group(1), int(match.group(2))
        if key not in fields:
            raise UserError(
                f"unknown synthetic option {key!r}{closest(key, fields)}; known options: {', '.join(fields)}"
            )
        values[key] = value
    spec = SyntheticSpec(**values)
    if not 2 <= spec.states <= len(ALPHABET):
        raise UserError(f"synthetic states={spec.states} must be between 2 and {len(ALPHABET)} (one printable byte each)")
    if not 1 <= spec.branch <= spec.states:
        raise UserError(f"synthetic branch={spec.branch} must be between 1 and states={spec.states}")
    if spec.tokens < 2 or spec.doc < 1:
        raise UserError("synthetic tokens must be at least 2 and doc at least 1")
    if -(-spec.tokens // spec.doc) < 2:
        raise UserError(
            f"synthetic tokens={spec.tokens} with doc={spec.doc} gives one document; "
            "a train/validation split needs at least two: lower doc or raise tokens"
        )
    return spec


@dataclass(frozen=True)
class MarkovChain:
    """Sparse chain: successors[s, j] is the j-th allowed next state of s, with probability probs[s, j]."""

    successors: np.ndarray  # int [K, branch]
    probs: np.ndarray  # float64 [K, branch], rows sum to 1

    @property
    def n_states(self) -> int:
        return self.successors.shape[0]

    def transition_matrix(self) -> np.ndarray:
        """Dense K x K matrix P[s, t] = P(next = t | current = s)."""
        matrix = np.zeros((self.n_states, self.n_states))
        rows = np.repeat(np.arange(self.n_states), self.successors.shape[1])
        np.add.at(matrix, (rows, self.successors.ravel()), self.probs.ravel())
        return matrix


def build_chain(spec: SyntheticSpec) -> MarkovChain:
    """The random sparse chain for spec (deterministic in spec.seed)."""
    rng = np.random.default_rng([spec.seed, 0])
    k, b = spec.states, spec.branch
    successors = np.empty((k, b), dtype=np.int64)
    for s in range(k):
        forced = (s + 1) % k
        others = rng.permutation(np.array([t for t in range(k) if t != forced]))[: b - 1]
        successors[s] = np.sort(np.concatenate([[forced], others]))
    probs = rng.dirichlet(np.ones(b), size=k)
    return MarkovChain(successors, probs)


def stationary_distribution(chain: MarkovChain) -> np.ndarray:
    """pi with pi P = pi, sum(pi) = 1 (unique: the chain is irreducible)."""
    matrix = chain.transition_matrix()
    k = chain.n_states
    system = np.vstack([matrix.T - np.eye(k), np.ones((1, k))])
    target = np.zeros(k + 1)
    target[-1] = 1.0
    pi, *_ = np.linalg.lstsq(system, target, rcond=None)
    pi = np.clip(pi, 0.0, None)
    return pi / pi.sum()


def entropy_rate(chain: MarkovChain) -> float:
    """Exact entropy rate in nats per symbol: sum_s pi(s) * H(P(.|s))."""
    pi = stationary_distribution(chain)
    p = chain.probs
    row_entropy = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=1)
    return float(pi @ row_entropy)


def generate_documents(spec: SyntheticSpec) -> list[str]:
    """Documents of spec.doc symbols (the last may be shorter), spec.tokens symbols in all."""
    chain = build_chain(spec)
    pi = stationary_distribution(chain)
    rng = np.random.default_rng([spec.seed, 1])
    n_docs = -(-spec.tokens // spec.doc)
    cumulative = np.cumsum(chain.probs, axis=1)
    cumulative[:, -1] = 1.0
    symbols = np.empty((n_docs, spec.doc), dtype=np.int64)
    state = rng.choice(chain.n_states, size=n_docs, p=pi)
    # All documents advance together: one vectorised step per position.
    for position in range(spec.doc):
        symbols[:, position] = state
        u = rng.random(n_docs)
        choice = (u[:, None] >= cumulative[state]).sum(axis=1)
        state = chain.successors[state, np.minimum(choice, chain.successors.shape[1] - 1)]
    alphabet = np.frombuffer(ALPHABET.encode("ascii"), dtype=np.uint8)
    as_bytes = alphabet[symbols]
    lengths = [spec.doc] * (n_docs - 1) + [spec.tokens - spec.doc * (n_docs - 1)]
    return [as_bytes[i, :n].tobytes().decode("ascii") for i, n in enumerate(lengths)]
