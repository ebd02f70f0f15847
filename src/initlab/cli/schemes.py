"""``initlab schemes``: the table of initialization schemes (name, formula, source, roles).

    initlab schemes                 # one line per scheme: name, roles, description
    initlab schemes --long          # plus formula, options, models and citation
    initlab schemes --check nt+mimetic   # does this chain compose? (exit 2 with the reason if not)
    initlab schemes --show gpt2 --model vit-micro   # what a spec does to a model, tensor by tensor
"""
from __future__ import annotations

import textwrap

from ..output import text_table


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "schemes", help="list the initialization schemes (names for --init/--inits)",
        description="List every registered initialization scheme with the roles it writes, its "
                    "formula and source. Join names with '+' to chain them (applied left to right).")
    p.add_argument("--long", action="store_true", help="show formula, options, models and citation")
    p.add_argument("--check", metavar="SPEC", default=None,
                   help="check that an init spec (e.g. nt+mimetic) names known schemes and composes")
    p.add_argument("--show", metavar="SPEC", default=None,
                   help="initialize --model with SPEC and print every tensor's role, std before and after")
    p.add_argument("--model", default="vit-micro", metavar="PRESET", help="model preset for --show")
    p.add_argument("--model-option", dest="model_options", action="append", default=[],
                   metavar="KEY=VALUE", help="model argument for --show, e.g. branch_gain=rezero")
    p.add_argument("--seed", type=int, default=0, help="seed for --show")
    p.set_defaults(run=run)


def show(spec: str, preset: str, model_options: list[str], seed: int) -> str:
    """Table of one spec's effect on a freshly built model (:func:`initlab.schemes.effect.spec_effect`)."""
    from ..errors import ConfigError
    from ..schemes.effect import HEADER, spec_effect
    from ..values import parse_value

    kwargs = {}
    for item in model_options:
        k, sep, v = item.partition("=")
        if not sep:
            raise ConfigError(f"--model-option expects KEY=VALUE, got {item!r}")
        kwargs[k.strip().replace("-", "_")] = parse_value(v)
    return text_table([HEADER, *spec_effect(spec, preset, kwargs, seed)])


_GROUPS = ((("q", "k", "v", "o"), "qkvo"), (("q", "k"), "qk"), (("v", "o"), "vo"),
           (("mlp_in", "mlp_out"), "mlp"), (("token_embed", "pos_embed", "cls_token"), "tables"))


def short_roles(roles) -> str:
    """``q,k,v,o,mlp_in,mlp_out`` -> ``qkvo,mlp``: the table's roles column stays narrow."""
    left = list(roles)
    out = []
    for members, label in _GROUPS:
        if all(m in left for m in members):
            out.append(label)
            left = [r for r in left if r not in members]
    return ",".join(out + left) or "-"


def run(args) -> int:
    from ..schemes import COMPOSITION_RULES, InitPlan, aliases_of, schemes

    if args.show:
        print(show(args.show, args.model, args.model_options, args.seed))
        return 0
    if args.check:
        plan = InitPlan.build(args.check)  # names, composition and every option; one line, exit 2
        implied = any(step.scheme.parametrization for step in plan.steps)
        print(f"{args.check}: ok" + (f" (parametrization {plan.parametrization.name})" if implied else ""))
        return 0
    infos = schemes()
    if not args.long:
        rows = [("name", "roles", "description")]
        for s in infos:
            rows.append((s.name, short_roles(s.roles), s.description))
        print(text_table(rows))
    else:
        for s in infos:
            print(s.name + (f"  (aliases: {', '.join(aliases_of(s.name))})" if aliases_of(s.name) else ""))
            for label, text in (("description", s.description), ("formula", s.formula),
                                ("roles", ", ".join(s.roles) or "none"),
                                ("options", ", ".join(f"{k}={v!r}" for k, v in s.options.items()) or "none"),
                                ("parametrization", s.parametrization or "none"),
                                ("models", s.models), ("source", s.citation)):
                body = textwrap.fill(text, 100, initial_indent=" " * 20, subsequent_indent=" " * 20)
                print(f"  {label:<16}  {body.strip()}")
            print()
    print("\nchains: join names with '+', applied left to right, e.g. trunc_normal+mimetic, nt+mimetic, "
          "small_init+wang_init; options: name(value) or name(key=value;key=value).")
    print("refused: " + "; ".join(COMPOSITION_RULES) + ".")
    return 0
