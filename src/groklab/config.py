"""Run configuration as frozen dataclasses, validated when built.

Every invalid value raises :class:`ConfigError` naming the key, the value and what is
allowed, so a typo in ``params.yaml`` or on the command line fails before any training.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

TASKS = ("x_plus_y", "x_minus_y", "x_div_y", "x_mul_y", "permutation", "multi_add", "parity")
# Tasks over Z_p whose second operand excludes 0 (Grokfast's x·y, as its code: y in [1, p)).
NONZERO_DIVISOR = ("x_div_y", "x_mul_y")
ENCODINGS = ("full", "compact")
# adam_l2: torch's Adam with L2 weight decay added to the gradient, as Grokfast's code runs
# its filtered cells (`torch.optim.Adam(weight_decay=...)`); the other studies vary AdamW's.
OPTIMIZER_KINDS = ("adamw", "adam", "sgd", "adam_l2")
# Grokfast's gradient filters (groklab.gradients): none, exponential or moving average, and
# the settings each reads (the others must be absent).
GRAD_FILTER_KEYS = {"none": (), "ema": ("alpha", "lamb"), "ma": ("window", "lamb")}
LOSSES = ("cross_entropy", "stablemax")  # groklab.losses.LOSSES computes each
PACINGS = ("none", "linear", "sqrt", "step")
ORDERS = ("easiest_first", "hardest_first", "random")
DEVICES = ("auto", "cpu", "cuda")
# groklab.models.BUILDERS builds each
ARCHITECTURES = ("transformer", "mlp", "lstm", "bit_mlp", "transformer1")
# float32 matrix products on a GPU (torch.set_float32_matmul_precision's names): highest is
# full float32, high lets the tensor cores round inputs to TF32 (10-bit mantissa). No effect
# on a CPU.
MATMUL_PRECISIONS = ("highest", "high")
# Equations each split needs at least. With fewer, accuracy moves in steps of more than 12%
# and "99% validation accuracy" is a handful of examples: the grokking metrics mean nothing.
MIN_SPLIT = 8
MAX_SEED = 2**32 - 1
# Upper bounds on every count, each an order of magnitude or more past what the papers use
# (the memory estimate, groklab.budget, then decides what fits this machine). They keep
# sizes finite before any arithmetic on them: 7^50 equations or 2^100000 parity vectors
# must be a refusal, not an overflow or an allocation minutes later.
MAX_EQUATIONS = 2**26  # rows of a task's table (the papers: 12,769 at p = 113); int64 tables
MAX_P = 8192  # p^2 <= MAX_EQUATIONS for the binary tasks
MAX_BITS = 62  # parity_bits + concealed_bits: each vector is one int64 code
MAX_STEPS = 10**8  # updates (the papers: <= 1e5; 1e8 is over a day at 1 ms per update)
MAX_BATCH = 2**24  # examples per update (the papers: <= 512 or the whole split)
MAX_LAYERS = 128  # blocks or hidden layers (the papers: 1 or 2)
MAX_WIDTH = 2**16  # width, heads and hidden sizes (the papers: <= 1000)
MAX_LINEAR_DIM = 2**15  # d_in, d_out of the linear model (d_in^2 float64 matrices)


class ConfigError(ValueError):
    """An invalid configuration value; the message names the key and the allowed values."""


def _choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not known; choose one of: {', '.join(allowed)}")


def _settings_of(obj: Any, selector: str, choice: str, wanted: tuple[str, ...] | Any,
                 keys: tuple[str, ...]) -> None:
    """Each of ``keys`` set on ``obj`` exactly when ``choice`` (of ``selector``) reads it."""
    for key in keys:
        value = getattr(obj, key)
        if key in wanted and value is None:
            raise ConfigError(f"{selector} {choice!r} needs `{key}`")
        if key not in wanted and value is not None:
            raise ConfigError(f"{selector} {choice!r} has no setting `{key}` "
                              f"(it reads: {', '.join(wanted) or 'nothing'})")


def _positive(key: str, value: Any, *, integer: bool = True, most: int | None = None,
              why: str = "") -> None:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not value > 0 \
            or not math.isfinite(value):
        noun = "a positive integer" if integer else "a positive finite number"
        raise ConfigError(f"{key}={value!r} must be {noun}")
    if most is not None and value > most:
        raise ConfigError(f"{key}={value!r} is more than {most:,}{f' ({why})' if why else ''}")


def _finite(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{key}={value!r} must be a finite number")


def check_seed(value: Any, key: str = "seed") -> None:
    """A seed is an integer from 0 to MAX_SEED (it keys the split, init and batch streams)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise ConfigError(f"{key}={value!r} must be an integer from 0 to {MAX_SEED}")


def is_prime(n: int) -> bool:
    """Trial division; p is at most a few hundred here."""
    if n < 2:
        return False
    return all(n % d for d in range(2, int(n**0.5) + 1))


@dataclass(frozen=True)
class DataConfig:
    """Which equations exist and how they are split and encoded."""

    task: str = "x_plus_y"
    p: int = 97  # modulus of the modular tasks
    train_fraction: float = 0.5
    encoding: str = "full"  # full: [a, op, b, =]; compact: [a, b, =]
    operands: int = 2  # K for multi_add
    parity_bits: int = 3  # k informative bits of the parity task
    concealed_bits: int = 0  # n random bits appended to each parity example
    parity_examples: int = 1000  # how many bit vectors the parity task draws

    def __post_init__(self) -> None:
        _choice("task", self.task, TASKS)
        _choice("encoding", self.encoding, ENCODINGS)
        frac = self.train_fraction
        if isinstance(frac, bool) or not isinstance(frac, int | float) or not 0 < frac < 1:
            raise ConfigError(
                f"train_fraction={frac!r} must lie strictly between 0 and 1 "
                "(the rest of the equations form the validation split)"
            )
        _positive("p", self.p, most=MAX_P, why="p^2 equations stay within the table bound")
        if self.task in ("x_plus_y", "x_minus_y", *NONZERO_DIVISOR, "multi_add") and self.p < 2:
            raise ConfigError(f"p={self.p} must be at least 2")
        if self.task in NONZERO_DIVISOR and not is_prime(self.p):
            raise ConfigError(
                f"p={self.p} is not prime, so {self.task} is not defined as the papers use it "
                "(inverses, and the group Z_p^*, need a prime modulus); use a prime such as "
                "97 or 113"
            )
        _positive("operands", self.operands)
        if self.task == "multi_add" and self.operands < 2:
            raise ConfigError(f"operands={self.operands} must be at least 2 for multi_add")
        _positive("parity_bits", self.parity_bits, most=MAX_BITS)
        if isinstance(self.concealed_bits, bool) or not isinstance(self.concealed_bits, int) or (
            self.concealed_bits < 0
        ):
            raise ConfigError(f"concealed_bits={self.concealed_bits!r} must be an integer >= 0")
        if self.parity_bits + self.concealed_bits > MAX_BITS:
            raise ConfigError(f"concealed_bits={self.concealed_bits} with parity_bits="
                              f"{self.parity_bits}: at most {MAX_BITS} bits in all (each "
                              "parity vector is one int64 code)")
        _positive("parity_examples", self.parity_examples, most=MAX_EQUATIONS,
                  why="rows of the task's table")
        # in logarithms: p ** operands itself could take minutes to compute
        if self.task == "multi_add" and self.operands * math.log(self.p) > math.log(
                MAX_EQUATIONS) + 1e-9:
            raise ConfigError(f"operands={self.operands} at p={self.p}: {self.p}^"
                              f"{self.operands} equations, more than {MAX_EQUATIONS:,} (the "
                              "bound on a task's table)")
        _check_split_sizes(self)


def n_classes(cfg: DataConfig) -> int:
    """Number of labels of the task, without building it."""
    if cfg.task == "permutation":
        return math.factorial(5)
    return 2 if cfg.task == "parity" else cfg.p


def chance_accuracy(cfg: DataConfig) -> float:
    """Accuracy of uniform guessing, the floor of the accuracy curves."""
    return 1.0 / n_classes(cfg)


def n_equations(cfg: DataConfig) -> int:
    """Size of the task's equation table without building it (tasks.build_task)."""
    if cfg.task in NONZERO_DIVISOR:
        return cfg.p * (cfg.p - 1)
    if cfg.task == "multi_add":
        return cfg.p**cfg.operands
    if cfg.task == "permutation":
        return math.factorial(5) ** 2
    if cfg.task == "parity":  # per seed
        return min(cfg.parity_examples, 2 ** (cfg.parity_bits + cfg.concealed_bits))
    return cfg.p**2


def split_sizes(cfg: DataConfig, **changes: Any) -> tuple[int, int]:
    """Training and validation equations of one seed's split (the cut of tasks.split),
    for ``cfg`` with ``changes`` applied (not validated: this is part of validation)."""
    values = SimpleNamespace(**{**vars(cfg), **changes})
    n = n_equations(values)
    n_train = int(n * values.train_fraction)
    return n_train, n - n_train


def _check_split_sizes(cfg: DataConfig) -> None:
    """Refuse a split with fewer than MIN_SPLIT equations on either side, naming the key
    that sets the table's size and the values that would do."""
    n_train, n_val = split_sizes(cfg)
    if min(n_train, n_val) >= MIN_SPLIT:
        return
    keys = {"permutation": ["train_fraction"],
            "parity": ["parity_examples", "concealed_bits", "train_fraction"]
            }.get(cfg.task, ["p", "train_fraction"])
    for key in keys:  # the first key some value of which would do
        ok = [v for v in _candidates(cfg, key) if min(split_sizes(cfg, **{key: v})) >= MIN_SPLIT]
        if ok:
            break
    if not ok:
        key = keys[0]
        allowed = "larger " + " and ".join(k for k in keys if k != "train_fraction")
    elif key == "train_fraction":
        allowed = f"a train_fraction from {min(ok)} to {max(ok)}"
    else:
        allowed = f"{key} >= {ok[0]}" + (" (a prime)" if cfg.task in NONZERO_DIVISOR else "")
    raise ConfigError(
        f"{key}={getattr(cfg, key)!r} leaves {n_train} training and {n_val} validation "
        f"equations (task {cfg.task}, train_fraction {cfg.train_fraction}); each split needs "
        f"at least {MIN_SPLIT}: use {allowed}"
    )


def _candidates(cfg: DataConfig, key: str) -> list[Any]:
    """Values of ``key`` to try, smallest first, for :func:`_check_split_sizes`' advice."""
    if key == "train_fraction":
        return [f / 10_000 for f in range(1, 10_000)]
    if key == "parity_examples":
        return list(range(cfg.parity_examples + 1, 1000 * MIN_SPLIT))
    if key == "concealed_bits":
        return list(range(cfg.concealed_bits + 1, 62 - cfg.parity_bits))
    return [q for q in range(max(cfg.p, 2) + 1, 1000)
            if cfg.task not in NONZERO_DIVISOR or is_prime(q)][:50]


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and its sizes (defaults of the course project and Exploring Grokking)."""

    arch: str = "transformer"
    layers: int = 2  # transformer blocks
    width: int = 128  # embedding / residual width
    heads: int = 4
    dropout: float = 0.0
    mlp_hidden: int = 512  # MLP hidden width (the Exploring Grokking paper)
    mlp_layers: int = 2  # MLP hidden layers (the Exploring Grokking paper)
    lstm_hidden: int = 20  # LSTM hidden size (the Exploring Grokking paper)
    bit_mlp_hidden: int = 1000  # parity MLP hidden width (the sharpness paper)

    def __post_init__(self) -> None:
        _choice("arch", self.arch, ARCHITECTURES)
        for key in ("layers", "mlp_layers"):
            _positive(key, getattr(self, key), most=MAX_LAYERS, why="the papers use 1 or 2")
        for key in ("width", "heads", "mlp_hidden", "lstm_hidden", "bit_mlp_hidden"):
            _positive(key, getattr(self, key), most=MAX_WIDTH, why="the papers use <= 1000")
        if self.width % self.heads:
            raise ConfigError(f"width={self.width} must be divisible by heads={self.heads}")
        _finite("dropout", self.dropout)
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout={self.dropout!r} must lie in [0, 1)")


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser, its hyper-parameters and the linear warm-up (``name``: the variant's)."""

    name: str = "adamw"
    kind: str = "adamw"
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.98)
    weight_decay: float = 0.5
    momentum: float = 0.0  # sgd only
    nesterov: bool = False  # sgd only
    warmup: int = 50  # updates of linear warm-up
    grad_filter: str = "none"  # Grokfast: none | ema | ma (groklab.gradients)
    alpha: float | None = None  # ema: the filter's momentum
    lamb: float | None = None  # ema, ma: the filtered gradient's amplification
    window: int | None = None  # ma: updates averaged
    orthogonal: bool = False  # ⊥Grad: drop each weight's gradient component along itself

    def __post_init__(self) -> None:
        _choice("optimizer kind", self.kind, OPTIMIZER_KINDS)
        _choice("grad_filter", self.grad_filter, tuple(GRAD_FILTER_KEYS))
        _settings_of(self, "grad_filter", self.grad_filter, GRAD_FILTER_KEYS[self.grad_filter],
                     ("alpha", "lamb", "window"))
        if self.alpha is not None and not (
                isinstance(self.alpha, int | float) and 0 <= self.alpha < 1):
            raise ConfigError(f"alpha={self.alpha!r} must lie in [0, 1)")
        if self.lamb is not None and (isinstance(self.lamb, bool) or not isinstance(
                self.lamb, int | float) or self.lamb < 0):
            raise ConfigError(f"lamb={self.lamb!r} must be a number >= 0")
        if self.window is not None:
            _positive("window", self.window)
        if not isinstance(self.orthogonal, bool):
            raise ConfigError(f"orthogonal={self.orthogonal!r} must be true or false")
        _positive("lr", self.lr, integer=False)
        if not isinstance(self.betas, list | tuple) or len(self.betas) != 2 or not all(
                isinstance(b, int | float) and not isinstance(b, bool) and 0 <= b < 1
                for b in self.betas):
            raise ConfigError(f"betas={self.betas!r} must be two numbers in [0, 1)")
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        _finite("weight_decay", self.weight_decay)
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay={self.weight_decay!r} must be >= 0")
        _finite("momentum", self.momentum)
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"momentum={self.momentum!r} must lie in [0, 1)")
        if not isinstance(self.nesterov, bool):
            raise ConfigError(f"nesterov={self.nesterov!r} must be true or false")
        if self.kind == "adam" and self.weight_decay:
            raise ConfigError(
                f"weight_decay={self.weight_decay} with kind={self.kind!r}: Adam adds L2 to the "
                "gradient, which is not what the papers vary; use kind 'adamw' for decoupled decay "
                "(or 'adam_l2' to mean L2 on purpose)"
            )
        if self.nesterov and (self.kind != "sgd" or self.momentum <= 0):
            raise ConfigError("nesterov=true needs kind 'sgd' and momentum > 0")
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0:
            raise ConfigError(f"warmup={self.warmup!r} must be an integer >= 0")
        if self.warmup > MAX_STEPS:
            raise ConfigError(f"warmup={self.warmup} is more than {MAX_STEPS:,} updates")


def _fraction(key: str, value: Any, low_open: bool = True) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and (
        (0 < value <= 1) if low_open else (0 <= value <= 1))
    if not ok:
        raise ConfigError(f"{key}={value!r} must lie in {'(0, 1]' if low_open else '[0, 1]'}")


@dataclass(frozen=True)
class AugmentConfig:
    """Operand augmentation of sampled training examples (see groklab.augment).

    ``p_reverse``: probability of swapping the operands; ``p_negate``: of negating them.
    """

    name: str = "baseline"
    p_reverse: float = 0.0
    p_negate: float = 0.0

    def __post_init__(self) -> None:
        _fraction("reverse", self.p_reverse, low_open=False)
        _fraction("negate", self.p_negate, low_open=False)

    @property
    def active(self) -> bool:
        return self.p_reverse > 0 or self.p_negate > 0


# The settings each pacing reads (see groklab.curriculum); the others must be absent.
PACING_KEYS = {"none": (), "linear": ("order", "start", "ramp"), "sqrt": ("order", "start", "ramp"),
               "step": ("order", "start", "step_size", "step_threshold")}


@dataclass(frozen=True)
class CurriculumConfig:
    """Pacing of the training pool (see groklab.curriculum); unused settings are None."""

    name: str = "none"
    pacing: str = "none"
    order: str | None = None  # which examples enter the pool first
    start: float | None = None  # delta0: fraction of the training split in the first pool
    ramp: float | None = None  # fraction of training over which the pool grows to all of it
    step_size: float | None = None  # step pacing: how much delta grows when the pool is fit
    step_threshold: float | None = None  # step pacing: pool accuracy that advances delta

    def __post_init__(self) -> None:
        _choice("pacing", self.pacing, PACINGS)
        _settings_of(self, "pacing", self.pacing, PACING_KEYS[self.pacing],
                     ("order", "start", "ramp", "step_size", "step_threshold"))
        if self.order is not None:
            _choice("order", self.order, ORDERS)
        for key in ("start", "ramp", "step_size", "step_threshold"):
            if getattr(self, key) is not None:
                _fraction(key, getattr(self, key))


@dataclass(frozen=True)
class TrainConfig:
    """The training loop: budget, batches, evaluation cadence, data regime."""

    steps: int = 7500
    batch_size: int | None = 512  # None: full batch (the whole training split every update)
    eval_every: int = 10
    curve_examples: int = 1024  # training examples in the training-curve sample (at most)
    aug: AugmentConfig = field(default_factory=AugmentConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    stop_after_grok: int | None = None  # updates to continue once val acc first reaches 0.99
    device: str = "auto"
    matmul_precision: str = "highest"  # see MATMUL_PRECISIONS
    measures_every: int = 10  # evaluations between Fourier progress measures; 0: none
    loss: str = "cross_entropy"  # the training loss, one of LOSSES (an optimizer variant sets it)

    def __post_init__(self) -> None:
        for key, cls in (("aug", AugmentConfig), ("curriculum", CurriculumConfig)):
            if not isinstance(getattr(self, key), cls):  # a mapping from JSON
                object.__setattr__(self, key, _build(cls, getattr(self, key), key))
        _positive("steps", self.steps, most=MAX_STEPS,
                  why="the papers use <= 1e5; 1e8 is over a day at 1 ms per update")
        if self.batch_size is not None:
            _positive("batch_size", self.batch_size, most=MAX_BATCH,
                      why="examples per update; the papers use <= 512 or the whole split")
        _positive("eval_every", self.eval_every, most=MAX_STEPS)
        _positive("curve_examples", self.curve_examples, most=MAX_EQUATIONS)
        _choice("device", self.device, DEVICES)
        _choice("matmul_precision", self.matmul_precision, MATMUL_PRECISIONS)
        if isinstance(self.measures_every, bool) or not isinstance(self.measures_every, int) or (
            self.measures_every < 0
        ):
            raise ConfigError(f"measures_every={self.measures_every!r} must be an integer >= 0 "
                              "(0: no progress measures)")
        _choice("loss", self.loss, LOSSES)
        if self.stop_after_grok is not None and (
            isinstance(self.stop_after_grok, bool) or not isinstance(self.stop_after_grok, int)
            or not 0 <= self.stop_after_grok <= MAX_STEPS
        ):
            raise ConfigError(
                f"stop_after_grok={self.stop_after_grok!r} must be null or an integer from 0 "
                f"to {MAX_STEPS:,}"
            )


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines one cell's training, for any number of seeds."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.model.arch == "bit_mlp" and self.data.task != "parity":
            raise ConfigError(
                f"arch='bit_mlp' reads binary vectors, which only the parity task has "
                f"(task={self.data.task!r}); use transformer, mlp or lstm"
            )
        if self.data.task == "parity" and self.data.encoding != "full":
            raise ConfigError("the parity task has no compact encoding; use encoding='full'")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        """Rebuild from :meth:`to_dict` output; unknown keys are errors."""
        return cls(
            data=_build(DataConfig, d.get("data", {}), "data"),
            model=_build(ModelConfig, d.get("model", {}), "model"),
            optim=_build(OptimConfig, d.get("optim", {}), "optim"),
            train=_build(TrainConfig, d.get("train", {}), "train"),
        )

    def replace(self, **sections: dict[str, Any]) -> RunConfig:
        """A copy with some fields of some sections changed.

        ``cfg.replace(train={"steps": 10}, data={"p": 31})``
        """
        new = {}
        for name, changes in sections.items():
            new[name] = _build(type(getattr(self, name)), changes, name, base=getattr(self, name))
        return dataclasses.replace(self, **new)


def _build(cls: type, values: Any, section: str, base: Any = None) -> Any:
    """Instantiate ``cls`` from a mapping, naming any unknown key and the known ones."""
    if isinstance(values, cls):
        return values
    if not isinstance(values, dict):
        raise ConfigError(f"{section} must be a mapping, got {values!r}")
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown key(s) in {section}: {', '.join(unknown)}; known keys: {', '.join(known)}"
        )
    if base is not None:
        return dataclasses.replace(base, **values)
    return cls(**values)


@dataclass(frozen=True)
class LinearTeacherConfig:
    """One linear student-teacher run; defaults give S-shaped, delayed rises for lam in [0.5, 0.95].

    ``threshold = 1e-3`` is small compared with the initial per-example loss (~1), so both
    accuracies start near 0.02 and training accuracy is delayed (~400-750 steps) rather than
    immediate; ``steps = 100_000`` lets validation accuracy reach > 0.99 even at lam = 0.95.
    """

    d_in: int = 1000  # input dimension
    lam: float = 0.9  # d_in / n_train, in (0, 1)
    d_out: int = 1  # output dimension
    lr: float = 0.01  # GD learning rate eta, in (0, 0.25) so that GD is stable
    init_scale: float = 0.0  # student init std in units of 1/sqrt(d_in)
    threshold: float = 1e-3  # squared error below which an output counts as correct
    steps: int = 100_000  # horizon in GD steps
    n_points: int = 200  # at most this many recorded steps (0 plus a log-spaced grid)
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("d_in", "d_out", "steps", "n_points", "seed"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{key}={value!r} is invalid; must be an integer")
        for key in ("lam", "lr", "init_scale", "threshold"):
            _finite(key, getattr(self, key))
        for key, most in (("d_in", MAX_LINEAR_DIM), ("d_out", MAX_LINEAR_DIM),
                          ("steps", 10**15), ("n_points", 10**6)):
            if getattr(self, key) > most:
                raise ConfigError(f"{key}={getattr(self, key)!r} is more than {most:,} "
                                  "(the closed form holds d_in x d_in float64 matrices and "
                                  "n_train x n_points curves)")
        checks = {
            "d_in": (self.d_in >= 1, "an integer >= 1"),
            "lam": (0.0 < self.lam < 1.0, "in the open interval (0, 1)"),
            "d_out": (self.d_out >= 1, "an integer >= 1"),
            "lr": (0.0 < self.lr < 0.25, "in the open interval (0, 0.25)"),
            "init_scale": (self.init_scale >= 0.0, ">= 0"),
            "threshold": (self.threshold > 0.0, "> 0"),
            "steps": (self.steps >= 1, "an integer >= 1"),
            "n_points": (self.n_points >= 2, "an integer >= 2"),
            "seed": (self.seed >= 0, "an integer >= 0"),
        }
        for name, (ok, allowed) in checks.items():
            if not ok:
                raise ConfigError(f"{name}={getattr(self, name)!r} is invalid; must be {allowed}")

    @property
    def n_train(self) -> int:
        """Number of training samples, ``round(d_in / lam)`` (at least ``d_in + 1``)."""
        return max(round(self.d_in / self.lam), self.d_in + 1)
