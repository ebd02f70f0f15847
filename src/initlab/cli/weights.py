"""``initlab weights``: W_q W_kᵀ per head and W_v W_o per layer, as a table and heatmaps.

    initlab weights vit-micro --init mimetic --png runs/weights/vit-micro-mimetic.png
    initlab weights runs/m1/checkpoint.pt --png qk_vo.png
    initlab weights runs/my-run/model.safetensors --heads 3
    initlab weights path/to/hf-model-folder --layers 0,5,11 --png weights.png

MODEL_OR_CHECKPOINT is an initlab model preset (built fresh and initialized with ``--init``, any
scheme name) or a local checkpoint: a checkpoint ``initlab train`` wrote (or its run directory;
the model is rebuilt from the checkpoint's own config), a ``.safetensors`` file, a ``torch.save``
state dict (or a training checkpoint holding one under "model"/"state_dict"), or a Hugging Face
model folder (``save_pretrained``; read with ``local_files_only``, nothing is downloaded). Files
are read with ``torch.load(weights_only=True)``: one that pickles other objects is refused, never
unpickled. The table shows, per layer, the mean diagonal of W_q^h W_k^hᵀ (averaged over heads),
its ratio to the RMS of the off-diagonal entries, its sign and how many heads are positive, and
the same for W_v W_o — the paper's Figure 1 observation is QK sign + and VO sign - in
pre-trained vision Transformers.
"""
from __future__ import annotations

from ..output import write_json



def add_parser(sub) -> None:
    p = sub.add_parser("weights", help="QK and VO products per layer: table and heatmaps",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("source", metavar="MODEL_OR_CHECKPOINT",
                   help="model preset name, an initlab train checkpoint or run directory, a "
                   ".safetensors / torch.save file, or a HF model folder")
    p.add_argument("--init", default="default", help="scheme for a fresh preset (e.g. mimetic, "
                   "trunc_normal, nt+mimetic); 'default' = PyTorch's module defaults")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--heads", type=int, default=None, help="query heads (bare state dicts only)")
    p.add_argument("--kv-heads", type=int, default=None, help="key/value heads (bare state dicts)")
    p.add_argument("--layers", default=None, help="comma-separated 0-based layers for the PNG")
    p.add_argument("--max-heads", type=int, default=4, help="heads per layer in the PNG")
    p.add_argument("--max-dim", type=int, default=64, help="crop of each heatmap (top-left)")
    p.add_argument("--png", default=None, help="write heatmaps to this PNG file")
    p.add_argument("--json", default=None, help="write the per-head numbers to this JSON file")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..errors import ConfigError
    from ..weights import attention_stats, format_table, load_for_weights, plot_products

    layers = None
    if args.layers:
        try:
            layers = [int(x) for x in args.layers.split(",") if x.strip()]
        except ValueError:
            raise ConfigError(f"--layers takes comma-separated integers, got {args.layers!r}") from None
    for flag in ("max_heads", "max_dim"):
        if getattr(args, flag) < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} must be >= 1")
    model, rmap, what = load_for_weights(args.source, init=args.init, heads=args.heads,
                                         kv_heads=args.kv_heads, seed=args.seed)
    stats = attention_stats(rmap)
    print(f"{what}: {len(stats)} attention layers, width {rmap.width}")
    print(format_table(stats))
    if args.png:
        plot_products(rmap, args.png, layers=layers, max_heads=args.max_heads, max_dim=args.max_dim,
                      title=what)
        print(f"wrote {args.png}")
    if args.json:
        rows = [{"layer": s.layer, "module": s.name,
                 "qk": [{"head": h, "diag": q.diag, "ratio": q.ratio} for h, q in enumerate(s.qk)],
                 "vo": {"diag": s.vo.diag, "ratio": s.vo.ratio}} for s in stats]
        write_json(args.json, {"source": what, "layers": rows}, indent=1)
        print(f"wrote {args.json}")
    return 0
