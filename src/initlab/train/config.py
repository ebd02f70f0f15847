"""Configuration of one training run: what the CLI builds from flags or a TOML/YAML file.

Shared contract between the training engine (:mod:`initlab.train`) and the experiment commands
(``initlab train``/``compare``/``sweep``). Everything a run needs to be reproduced is here, and
``to_dict()`` is what a run directory's ``config.json`` holds.

Each field is declared once, with :func:`setting`: its default, its flag and help text (the
experiment commands generate their flags from it, :mod:`initlab.experiments.flags`) and its
effect on the result (what a finished run's identity and a resumable checkpoint compare).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from ..errors import ConfigError


#: what a field is to a run's result (each field declares one; read by
#: :func:`initlab.experiments.runner.identity` and :func:`initlab.train.checkpoint.config_differences`)
RESULT = "result"  # changes what the run computes: part of its identity, fixed once it checkpointed
ON_RESUME = "on_resume"  # part of the identity, but a resumed run may change it: where the data is
#                          read from, what is measured, and the run's length (extending a run: the
#                          cosine schedule is stretched to the new end from the resumed step on)
RUNTIME = "runtime"  # where things are written, how fast it runs: never part of the identity

GROUPS = ("configuration (flags override --config FILE)", "model", "initialization and parametrization",
          "optimization", "evaluation and runtime")


def setting(default=None, help: str = "", *, effect: str = RESULT, group: int = 0, default_factory=None,
            flag: dict | None = None, cli: bool = True):
    """One :class:`TrainConfig` field and everything the rest of initlab needs to know about it:
    its ``effect`` on the result (:data:`RESULT`, :data:`ON_RESUME`, :data:`RUNTIME`), and its
    command-line flag (``--name-with-dashes``, in ``GROUPS[group]``, with ``help``; ``flag``: extra
    argparse settings, e.g. ``type``/``metavar``/``choices``, where ``type`` may name one of the
    parsers of :mod:`initlab.experiments.flags`: ``"key_value"``, ``"betas"``, ``"optional_float"``;
    ``cli=False``: no generated flag). Adding a train flag is one ``setting`` here plus the code that
    uses the value."""
    meta = dict(help=help, effect=effect, group=group, flag=dict(flag or {}), cli=cli)
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    # task and data
    task: str = setting("vision", "image classification or character LM (default vision)",
                        flag=dict(choices=("vision", "lm")))
    data: str = setting("fashion-mnist", "vision: fashion-mnist|mnist|cifar10|cifar100 (default fashion-mnist); "
                        "lm: shakespeare (default), kjv or a text file", flag=dict(metavar="NAME|PATH"))
    data_root: str | None = setting(None, "where the dataset files are (else INITLAB_DATA, standard places)",
                                    effect=ON_RESUME, flag=dict(metavar="DIR"))
    train_size: int | None = setting(None, "class-balanced training subset (vision; default all)",
                                     flag=dict(type=int, metavar="N"))
    augment: bool = setting(True, "no random crop/flip (vision)",
                            flag=dict(name="--no-augment", action="store_const", const=False))
    block_size: int = setting(128, "context length (lm; {default})", flag=dict(type=int, metavar="T"))
    tokenizer: str = setting("char", "lm tokens ({default}): char (distinct characters of the text) | "
                             "byte (UTF-8 bytes)", flag=dict(choices=("char", "byte")))
    # model
    model: str = setting("vit-micro", "preset: vit-micro (default), vit-mini, vit-tiny, ...; gpt-micro, "
                         "gpt-mini (lm default), gpt-char, ...; llama-micro, llama-mini, llama-char", group=1, flag=dict(metavar="PRESET"))
    width: int | None = setting(None, "override the preset's width", group=1, flag=dict(type=int, metavar="N"))
    depth: int | None = setting(None, "override the preset's depth", group=1, flag=dict(type=int, metavar="L"))
    heads: int | None = setting(None, "override the preset's heads (must divide width)", group=1,
                                flag=dict(type=int, metavar="H"))
    patch_size: int | None = setting(None, "vision patch size (default 7 on 28px, 4 on 32px)", group=1,
                                     flag=dict(type=int, metavar="P"))
    model_options: dict = setting(help="extra model argument, e.g. pos=sincos, pool=mean (repeatable)", group=1,
                                  default_factory=dict, flag=dict(name="--model-option", action="append",
                                                                  type="key_value", metavar="KEY=VALUE"))
    # initialization and parametrization
    init: str = setting("default", "scheme from `initlab schemes`, or names joined by '+' applied left to "
                        "right (e.g. nt+mimetic); default default", group=2, flag=dict(metavar="SCHEME"))
    init_options: dict = setting(help="option passed to the scheme(s) (repeatable)", group=2,
                                 default_factory=dict, flag=dict(name="--init-option", action="append",
                                                                 type="key_value", metavar="KEY=VALUE"))
    param: str = setting("standard", "standard | nt | hybrid | mu | s=<0..1> | depth-mup | completep | "
                         "<member>,depth=<0..1> ({default})", group=2, flag=dict(metavar="P"))
    base_width: int | None = setting(None, "width at which lr factors are 1", group=2,
                                     flag=dict(type=int, metavar="N"))
    base_depth: int | None = setting(None, "depth at which the depth factors of depth-mup/completep are 1 "
                                     "(default 1)", group=2, flag=dict(type=int, metavar="L"))
    # optimization
    optimizer: str = setting("adamw", "{default}", group=3, flag=dict(choices=("adamw", "sgd")))
    lr: float = setting(1e-3, "{default}", group=3, flag=dict(type=float))
    weight_decay: float = setting(0.05, "{default}", group=3, flag=dict(type=float, metavar="WD"))
    wd_tau: float | None = setting(None, "weight decay as a timescale τ = 1/(lr·wd) (Wang & Aitchison, arXiv "
                                   "2405.13698), in --wd-tau-unit; sets the decay from lr, batch and data size "
                                   "and replaces --weight-decay", group=3, flag=dict(type=float, metavar="TAU"))
    wd_tau_unit: str | None = setting(None, "unit of --wd-tau: epochs (default; dataset size / batch steps) or "
                                      "tokens (lm: batch x block_size per step)", group=3,
                                      flag=dict(choices=("epochs", "tokens")))
    betas: tuple[float, float] = setting((0.9, 0.999), "{default}", group=3,
                                         flag=dict(type="betas", metavar="B1,B2"))
    eps: float = setting(1e-8, "AdamW's epsilon ({default})", group=3, flag=dict(type=float))
    epochs: float | None = setting(None, "training length in epochs (default 1)", effect=ON_RESUME, group=3,
                                   flag=dict(type=float, metavar="E"))
    steps: int | None = setting(None, "train for N steps instead of epochs", effect=ON_RESUME, group=3,
                                flag=dict(type=int, metavar="N"))
    batch_size: int = setting(128, "{default}", group=3, flag=dict(type=int, metavar="B"))
    warmup: float = setting(0.05, "fraction of steps if < 1, else steps ({default})", group=3,
                            flag=dict(type=float))
    min_lr_ratio: float = setting(0.0, "cosine floor / lr ({default})", group=3,
                                  flag=dict(type=float, metavar="R"))
    clip: float | None = setting(1.0, "gradient-norm clip ({default})", group=3,
                                 flag=dict(type="optional_float", metavar="NORM|none"))
    label_smoothing: float = setting(0.0, "{default}", group=3, flag=dict(type=float, metavar="EPS"))
    # evaluation, checkpoints, runtime
    eval_every: int | None = setting(None, "steps between evaluations (default: every epoch for vision, 10 "
                                     "per run otherwise)", effect=ON_RESUME, group=4,
                                     flag=dict(type=int, metavar="STEPS"))
    eval_batches: int | None = setting(None, "cap on evaluation batches (lm)", effect=ON_RESUME, group=4,
                                       flag=dict(type=int, metavar="N"))
    checkpoint_every: int = setting(0, "steps between checkpoints (default 0: at the end and on "
                                    "Ctrl-C/SIGTERM)", effect=RUNTIME, group=4,
                                    flag=dict(type=int, metavar="STEPS"))
    seed: int = setting(0, "{default}", group=4, flag=dict(type=int))
    device: str = setting("auto", "auto | cpu | cuda | cuda:N | mps (default auto)", effect=RUNTIME, group=4)
    amp: str = setting("none", "{default}", group=4, flag=dict(choices=("none", "bf16")))
    compile: bool = setting(False, "torch.compile the model", effect=RUNTIME, group=4,
                            flag=dict(action="store_const", const=True))
    fsdp: bool = setting(False, "under torchrun: shard the model with FSDP2 (fully_shard) instead of DDP",
                         group=4, flag=dict(action="store_const", const=True))
    out: str | None = setting(None, "output directory (default runs/<command>-<time>)", effect=RUNTIME,
                              group=4, flag=dict(metavar="DIR"))
    resume: bool = setting(False, "continue the run in out from its last checkpoint (initlab train "
                           "--resume [DIR])", effect=RUNTIME, cli=False)

    def __post_init__(self):
        if self.task not in ("vision", "lm"):
            raise ConfigError(f"task must be 'vision' or 'lm', got {self.task!r}")
        if self.epochs is not None and self.steps is not None:
            raise ConfigError("give either epochs or steps, not both")
        for name in ("lr", "batch_size"):
            v = getattr(self, name)
            if not (v > 0):
                raise ConfigError(f"{name} must be positive, got {v}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.wd_tau is not None and not self.wd_tau > 0:
            raise ConfigError(f"wd_tau must be a positive timescale, got {self.wd_tau}")
        if self.wd_tau_unit not in (None, "epochs", "tokens"):
            raise ConfigError(f"wd_tau_unit must be 'epochs' or 'tokens', got {self.wd_tau_unit!r}")
        if self.wd_tau_unit == "tokens" and self.wd_tau is not None and self.task != "lm":
            raise ConfigError("--wd-tau-unit tokens is for language runs (--task lm); use epochs for vision")
        if self.optimizer not in ("adamw", "sgd"):
            raise ConfigError(f"optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}")
        if self.amp not in ("none", "bf16"):
            raise ConfigError(f"amp must be 'none' or 'bf16', got {self.amp!r}")
        try:
            self.betas = tuple(float(b) for b in self.betas)
        except (TypeError, ValueError):
            raise ConfigError(f"betas must be two numbers B1,B2, got {self.betas!r}; e.g. 0.9,0.999") from None
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"betas must be two numbers in [0, 1), got {self.betas}; e.g. 0.9,0.999 "
                              f"(AdamW's defaults; SGD uses the first as momentum)")
        if not self.eps > 0:
            raise ConfigError(f"eps must be positive, got {self.eps}")
        if self.clip is not None and not self.clip >= 0:
            raise ConfigError(f"clip must be a positive gradient norm, got {self.clip}; to turn "
                              f"clipping off use clip=None (--clip none)")
        if not self.warmup >= 0:
            raise ConfigError(f"warmup must be >= 0 (a fraction of the run if < 1, else steps), got {self.warmup}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def fields_with(*effects: str) -> frozenset[str]:
        """The names of the fields whose declared effect is one of ``effects``."""
        return frozenset(f.name for f in fields(TrainConfig) if f.metadata.get("effect", RESULT) in effects)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        return cls(**d)

    def replace(self, **changes) -> "TrainConfig":
        return TrainConfig.from_dict({**self.to_dict(), **changes})
