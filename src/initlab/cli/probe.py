"""``initlab probe``: signal propagation at initialization, measured next to the leading-order theory.

    initlab probe --model vit --width 256 --depth 12 --param nt --out runs/probe
    initlab probe --hf gpt2 --width 512 --depth 6 --param native --out runs/probe-gpt2
    initlab probe --config path/config.json --param native
    initlab probe --model vit --depth 12 --widths 128,256,512 --out runs/probe-widths
    initlab probe --agreement --widths 512,1024 --depths 1,6,12,24 --params standard,nt,mu --out docs

``--model vit|gpt`` is the paper's model (arXiv 2304.02034 §1): pre-LN, bias-free, frozen LayerNorm
affine, mean pooling, learned position table; head_dim 64 unless ``--heads`` says otherwise.
``--hf TYPE`` / ``--config FILE`` build a Hugging Face model (width, depth and heads set, MLP 4x
width, ``--set key=value`` for any other config field) fed random inputs; ``--param native`` keeps
its own initialization. The work lives in :mod:`initlab.probe.runs`.
"""
from __future__ import annotations

from ..errors import ConfigError
from ..experiments.grid import parse_ints


def add_model_flags(p, *, width_default: int | None = 256, depth_default: int | None = 12) -> None:
    p.add_argument("--model", choices=("vit", "gpt"), default="vit")
    p.add_argument("--hf", default=None, metavar="TYPE",
                   help="a Hugging Face model_type (gpt2, llama, bert, vit, t5, ...) built from its config")
    p.add_argument("--config", default=None, metavar="FILE", help="a Hugging Face config.json to build from")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of the Hugging Face config (repeatable), e.g. image_size=64")
    p.add_argument("--tokens", type=int, default=16, help="sequence length of token inputs")


def model_spec(args, *, heads=None):
    from ..probe.runs import ModelSpec
    from ..values import parse_value

    if args.hf and args.config:
        raise ConfigError("pass --hf TYPE or --config FILE, not both")
    sets = {}
    for item in args.set:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: write KEY=VALUE, e.g. --set image_size=64")
        k, v = item.split("=", 1)
        sets[k.strip()] = parse_value(v)
    if sets and not (args.hf or args.config):
        raise ConfigError("--set overrides a Hugging Face config; pass --hf TYPE or --config FILE with it")
    return ModelSpec(model=args.model, hf=args.hf, config=args.config, heads=heads, tokens=args.tokens, set=sets)


def add_parser(sub) -> None:
    p = sub.add_parser("probe", help="measure signal propagation at init next to the effective theory",
                       description=__doc__.split("\n\n")[0])
    add_model_flags(p)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--depth", type=int, default=12)
    p.add_argument("--heads", type=int, default=None, help="default: width // 64 (head_dim 64)")
    p.add_argument("--param", default="nt", help="standard, nt, hybrid, mu, s=<value> or native (the model's own init)")
    p.add_argument("--init", default="default",
                   help="initialization scheme applied after the parametrization (e.g. mimetic); "
                        "'default' = the parametrization's own draws")
    p.add_argument("--widths", default=None, help="comma-separated widths: probe each and plot across widths")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--data", choices=("auto", "synthetic"), default="auto",
                   help="auto: Fashion-MNIST test images / Shakespeare when present (--model only), else random")
    p.add_argument("--targets", action="store_true",
                   help="backward of the cross-entropy (default: of Σ_batch logit 0, which the theory predicts)")
    p.add_argument("--samples", type=int, default=128, help="Monte Carlo draws of attention logits per block")
    p.add_argument("--no-theory", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--agreement", action="store_true",
                   help="write the agreement table (widths x depths x params) to OUT/theory_agreement.{md,json,png}")
    p.add_argument("--depths", default="1,6,12,24", help="depths for --agreement")
    p.add_argument("--params", default="standard,nt,mu", help="parametrizations for --agreement")
    p.add_argument("--seeds", default=None, help="comma-separated seeds for --agreement (default: --seed)")
    p.add_argument("--out", default=None, help="directory for JSON/CSV/PNG (nothing written without it)")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..probe.runs import ProbeSettings, run_agreement, run_probe

    s = ProbeSettings(spec=model_spec(args, heads=args.heads), param=args.param, init=args.init,
                      batch=args.batch, data=args.data, targets=args.targets, samples=args.samples,
                      theory=not args.no_theory, seed=args.seed)
    if args.agreement:
        res = run_agreement(s, parse_ints(args.widths or str(args.width), "--widths"),
                            parse_ints(args.depths, "--depths"),
                            [p.strip() for p in args.params.split(",") if p.strip()],
                            _seeds(args.seeds) if args.seeds else [args.seed],
                            out=args.out or ".", progress=lambda row: print(_row_line(row), flush=True))
        print(res.markdown)
        print(f"wrote {args.out or '.'}/theory_agreement.{{md,json,png}}")
        return 0
    widths = parse_ints(args.widths, "--widths") if args.widths else [args.width]
    res = run_probe(s, widths, args.depth, args.out)
    for rep in res.reports:
        print(rep.table())
        print(f"(data: {rep.meta['data']}; param {args.param}, init {args.init})\n")
    if args.out:
        print(f"wrote {args.out}/")
    return 0


def _seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"bad --seeds {text!r}: write integers separated by commas, e.g. 0,1,2") from None


def _row_line(row: dict) -> str:
    """One progress line per agreement row: its scalars (the per-block list stays in the JSON)."""
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
                    if not isinstance(v, (list, tuple)))
