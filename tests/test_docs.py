"""The docs are code (issue 18, item 6): every Python block of README.md and docs/*.md runs as written,
and every `initlab` command in their code blocks is run here at a tiny size or carries its measured time.

Python blocks run page by page, top to bottom, in one namespace per page and a temporary working
directory, as a reader pasting them in order would run them. A block that cannot run that way says
so on its first line (``# not runnable: <why>``) and is run here another way: ``OTHER_WAY`` says how.

Commands (fenced ``bash`` blocks and unlabelled ones; ``text`` blocks hold synopses and output) are run
in-process through ``initlab.cli.main`` in page order in a temporary directory, with the explicit
per-command size overrides of ``TINY`` (synthetic 28x28 images instead of Fashion-MNIST, width 16,
2 steps, ...). A ``$ initlab ...`` line followed by an error line is run as written and must print
that error. Otherwise a command names an equivalent test (``EQUIVALENT``), carries its measured time
in its comment (``# ... 18 s ...``), or is a step command that ``initlab results`` writes into
docs/results.md (regenerated with the page, whose meta lines give the measured training time).

``AWAITING`` lists blocks/commands that fail today because of library bugs being fixed on other
branches; they are strict xfails until then (empty the dict when those branches are merged).
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
NOT_RUNNABLE = "# not runnable:"
FASHION = Path("/usr/share/datasets/fashion-mnist")

# --- blocks and commands that wait for library fixes on other branches (the lead empties this) ----
# keys: (page, index of the ```python block on its page, from 0) or (page, command as collected below)
AWAITING: dict = {}


def _fences(page: str):
    text = (ROOT / page).read_text()
    for m in FENCE.finditer(text):
        yield m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1, text[m.end():]


def _python_blocks(page: str) -> list[tuple[int, str, int]]:
    return [(i, body, line) for i, (_, body, line, _) in
            enumerate(b for b in _fences(page) if b[0] == "python")]


# --- Python blocks that are run another way ------------------------------------------------------
# docs/adapters.md's explicit mapping is a template: run it on a module that has exactly its names.
_TEMPLATE_MODEL = '''
import torch, torch.nn as nn, initlab
class _Attn(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))
class _Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.norm1, self.attn, self.norm2 = nn.LayerNorm(d), _Attn(d), nn.LayerNorm(d)
        self.fc1, self.fc2 = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)
        self.ls1, self.ls2 = nn.Parameter(torch.ones(d)), nn.Parameter(torch.ones(d))
class _Model(nn.Module):
    def __init__(self, d=32):
        super().__init__()
        self.stem = nn.Module(); self.stem.conv = nn.Conv2d(1, d, 7, 7)
        self.tok_emb, self.pos_emb = nn.Embedding(50, d), nn.Parameter(torch.zeros(1, 16, d))
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.blocks = nn.ModuleList(_Block(d) for _ in range(2))
        self.rotary = nn.Module(); self.rotary.freq = nn.Parameter(torch.ones(d // 8))
        self.lm_head = nn.Linear(d, 50)
model = _Model()
'''


def _substitute(*pairs):
    def transform(code):
        for old, new in pairs:
            assert old in code, f"the substitution {old!r} no longer matches the block: update OTHER_WAY"
            code = code.replace(old, new)
        return code
    return transform


@contextlib.contextmanager
def _torchrun_one_process():
    """What `torchrun --nproc_per_node 1` sets: the script's own init_process_group("gloo") then works."""
    import socket

    import torch.distributed as dist
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# Blocks are named by (page, a line of the block), not by their index: a block added above one on
# the same page must not silently move an entry onto another block.
# (page, the block's first line) -> (how the code is changed, context it runs in, why this is the block)
OTHER_WAY = {
    ("docs/adapters.md", "# not runnable: a template; `model` stands for your own module with these names"):
        (lambda code: _TEMPLATE_MODEL + code, contextlib.nullcontext,
         "`model` = a module with exactly the template's names"),
    ("docs/training.md", "# not runnable: a script for `torchrun --nproc_per_node 2 script.py` (gloo on CPU works)"):
        (lambda code: code, _torchrun_one_process,
                              "as written, in one process with torchrun's environment (world size 1); "
                              "2 processes: tests/test_fsdp.py::test_fsdp2_sharded_init_equals_unsharded"),
}

# (page, a line of the block) -> (importable module it needs, why)
NEEDS = {
    ("docs/training.md", "trainer = Trainer(model=model, args=args, train_dataset=data, optimizers=(opt, sched))"):
        ("accelerate", "transformers' Trainer needs accelerate (the hf extra installs it)"),
}
# (page, a line of the block) of the blocks that read the real Fashion-MNIST files
NEEDS_FASHION = {("docs/data.md", 'train = load_vision("fashion-mnist", split="train")'),
                 ("docs/training.md", 'result = run(TrainConfig(task="vision", data="fashion-mnist", train_size=1000, model="vit-micro",')}


def _first_line(code: str) -> str:
    return code.lstrip().splitlines()[0].strip()


def _entry(table: dict, page: str, code: str):
    """The entry of ``table`` whose (page, text) names this block (the text occurs in it)."""
    hits = [key for key in table if key[0] == page and key[1] in code]
    assert len(hits) <= 1, f"{hits} name the same block"
    return hits[0] if hits else None


def _missing(page: str, code: str) -> str | None:
    if _entry({k: None for k in NEEDS_FASHION}, page, code) and not FASHION.is_dir():
        return "Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)"
    key = _entry(NEEDS, page, code)
    if key:
        import importlib.util
        module, why = NEEDS[key]
        if importlib.util.find_spec(module) is None:
            return why
    return None


_PAGE_RESULTS: dict[str, dict[int, BaseException | str | None]] = {}
_PAGE_NAMESPACES: dict[str, dict] = {}  # what a page's blocks left defined, for the checks below


def _run_python_page(page: str, tmp_root: Path) -> dict:
    """Run every Python block of ``page`` in order, in one namespace: block index -> None (ran),
    the exception it raised, or the reason it was skipped."""
    if page in _PAGE_RESULTS:
        return _PAGE_RESULTS[page]
    import matplotlib.pyplot as plt

    from initlab.threads import single_threaded  # tiny models: one thread is fastest on a busy 2-core box
    results: dict = {}
    ns: dict = {"__name__": "__docs__"}
    work = tmp_root / re.sub(r"\W", "_", page)
    work.mkdir(parents=True)
    cwd = os.getcwd()
    os.chdir(work)
    try:
        for i, code, line in _python_blocks(page):
            why = _missing(page, code)
            if why:
                results[i] = why
                continue
            transform, context = (lambda c: c), contextlib.nullcontext
            if code.lstrip().startswith(NOT_RUNNABLE):
                transform, context, _ = OTHER_WAY[(page, _first_line(code))]
            try:
                with single_threaded(), context(), contextlib.redirect_stdout(io.StringIO()):
                    exec(compile(transform(code), f"{page}, python block {i} (line {line})", "exec"), ns)
                results[i] = None
            except Exception as exc:  # noqa: BLE001 - reported by the block's own test
                results[i] = exc
    finally:
        os.chdir(cwd)
        plt.close("all")
    _PAGE_RESULTS[page] = results
    _PAGE_NAMESPACES[page] = ns
    return results


def _python_params():
    for page in PAGES:
        for i, code, line in _python_blocks(page):
            marks = [pytest.mark.xfail(strict=True, reason=AWAITING[(page, i)])] if (page, i) in AWAITING else []
            yield pytest.param(page, i, id=f"{page}:{i}:line{line}", marks=marks)


@pytest.mark.parametrize("page,index", list(_python_params()))
def test_python_block_runs(page, index, tmp_path_factory):
    result = _run_python_page(page, tmp_path_factory.mktemp("docs-python"))[index]
    if isinstance(result, str):
        pytest.skip(result)
    if result is not None:
        raise result


def test_blocks_marked_not_runnable_are_run_another_way():
    marked = {(page, _first_line(code)) for page in PAGES for i, code, _ in _python_blocks(page)
              if code.lstrip().startswith(NOT_RUNNABLE)}
    assert marked == set(OTHER_WAY), "a '# not runnable:' block needs an OTHER_WAY entry, and only such blocks"
    for table in (NEEDS, {k: None for k in NEEDS_FASHION}):  # every entry still names a block
        for page, line in table:
            assert any(_entry({(page, line): None}, page, code) for _, code, _ in _python_blocks(page)), \
                f"{page}: no python block has the line {line!r}"
    for page in PAGES:
        for i, code, line in _python_blocks(page):
            first = code.lstrip().splitlines()[0]
            if (page, _first_line(code)) in OTHER_WAY:
                assert len(first) > len(NOT_RUNNABLE) + 5, f"{page}:{line}: say why it cannot run as written"
            assert NOT_RUNNABLE not in code.lstrip()[1:], f"{page}:{line}: the marker goes on the first line"


# --- commands ----------------------------------------------------------------------------------
_CMD = re.compile(r"^(?:\$ )?(?:[A-Z_]+=\S+ +)*(?:nice -n \d+ +)?"
                  r"(?:initlab(?: +--help| +[a-z][a-z-]*(?= |$))|torchrun .*-m initlab)")
_TIME = re.compile(r"\b\d+(?:\.\d+)? ?(?:s|min|h|hours?|minutes?)\b")


def _commands(page: str):
    """(command, comment, expected error line or None, text after the block) per command line."""
    out = []
    for lang, body, _, after in _fences(page):
        if lang not in ("bash", "sh", "shell", "console", ""):
            continue
        lines = body.replace("\\\n", " ").splitlines()
        for j, raw in enumerate(lines):
            line = raw.strip()
            if not _CMD.match(line):
                continue
            command, _, comment = line.partition(" # ")
            command = " ".join(command.split())
            expected = None
            if command.startswith("$ "):
                command = command[2:]
                nxt = lines[j + 1].strip() if j + 1 < len(lines) else ""
                expected = nxt if nxt and not nxt.startswith("$") else None
            out.append((command, comment.strip(), expected, after))
    return out


# Size overrides: flag -> new value (None: drop the flag and its value; True: add a bare flag);
# "..." stands for the bare "..." of a doc command. "{fake}" is a synthetic Fashion-MNIST directory
# (240 training and 100 test images; tests/test_train_support.write_fake_fashion).
_V = {"--data-root": "{fake}", "--train-size": "100", "--epochs": None, "--steps": "2",
      "--width": "16", "--depth": "1", "--heads": "2", "--batch-size": "16", "--eval-every": "2",
      "--checkpoint-every": None, "--device": "cpu", "--quiet": True}
_LM = {"--steps": "2", "--width": "16", "--depth": "1", "--heads": "2", "--batch-size": "4",
       "--block-size": "16", "--eval-every": "2", "--eval-batches": "1", "--device": "cpu", "--quiet": True}
_CMP, _CMP_LM = {**_V, "--seeds": "1"}, {**_LM, "--seeds": "1"}  # compare only: one seed
_SWEEP = {**_V, "--width": None, "--widths": "16,32", "--lrs": "1e-3,1e-2"}
_PROBE = {"--width": "32", "--depth": "2", "--batch": "4", "--samples": "16"}
TINY = {
    ("README.md", "initlab --help"): {},
    ("README.md", "initlab compare --data fashion-mnist --train-size 5000 --inits default,mimetic,structured,nt "
                  "--epochs 10 --seeds 3 --out runs/cmp"): _CMP,
    ("README.md", "initlab compare --task lm --data shakespeare --inits default,mimetic-language --steps 2000"):
        {**_CMP_LM, "--out": "runs/cmp-lm"},
    ("README.md", "initlab train --model vit-mini --init nt+mimetic --param nt --epochs 20 --out runs/m1"): _V,
    ("README.md", "initlab train --resume runs/m1"): {},
    ("README.md", "initlab sweep --widths 64,128,256,512 --lrs 1e-4..1e-1:8 --param mu --out runs/sweep"): _SWEEP,
    ("README.md", "initlab probe --model vit --width 256 --depth 12 --param nt --init default --out runs/probe"):
        _PROBE,
    ("README.md", "initlab probe --hf llama --width 512 --depth 4 --param mu --out runs/probe-llama"):
        {**_PROBE, "--width": "64"},
    ("README.md", "initlab weights runs/m1/checkpoint.pt --png qk_vo.png"): {},
    ("README.md", "initlab schemes"): {},
    ("README.md", "initlab compare --data fashion-mnist --train-size 1000 --model vit-micro --model-option "
                  "pos=sincos --model-option pool=mean --inits default,mimetic --seeds 3 --epochs 30 "
                  "--eval-every 70 --out runs/demo-<timestamp>"): {**_CMP, "--out": "runs/demo"},
    ("docs/cli.md", "initlab compare --data fashion-mnist --train-size 5000 --inits default,mimetic --model "
                    "vit-micro --epochs 10 --seeds 3 --out runs/cmp"): _CMP,
    ("docs/cli.md", "initlab compare --task lm --data shakespeare --model gpt-mini --inits "
                    "default,mimetic-language --steps 2000 --seeds 2 --out runs/cmp-lm"): _CMP_LM,
    ("docs/cli.md", "initlab train --data fashion-mnist --model vit-mini --init nt+mimetic --param nt --epochs 20 "
                    "--checkpoint-every 500 --out runs/m1"): _V,
    ("docs/cli.md", "initlab train --resume runs/m1"): {},
    ("docs/cli.md", "initlab sweep --widths 64,128,256,512 --lrs 1e-4..1e-1:8 --param mu --data fashion-mnist "
                    "--train-size 5000 --epochs 2 --out runs/sweep-mu"): _SWEEP,
    ("docs/cli.md", "initlab results --profile cpu --list"): {},
    ("docs/cli.md", "initlab results --profile cpu --only lm,transfer-vision-mu-s0"): {"--list": True},
    ("docs/cli.md", "initlab results --profile cpu --report-only"): {"--list": True},
    ("docs/cli.md", "initlab results --profile cpu --quiet"): {"--list": True},
    ("docs/cli.md", "initlab compare --data fashion-mnist --train-size 1000 --model vit-micro --model-option "
                    "pos=sincos --model-option pool=mean --inits default,mimetic --seeds 3 --epochs 30 "
                    "--eval-every 70 --out runs/demo-<date-time>"): {**_CMP, "--out": "runs/demo"},
    ("docs/results.md", "initlab results --profile cpu --list"): {},
    ("docs/results.md", "initlab results --profile cpu --only lm"): {"--list": True},
    ("docs/results.md", "initlab results --profile cpu --report-only"): {"--list": True},
    ("docs/results.md", "initlab results --profile full --out results-gpu"): {"--list": True},
    ("docs/results.md", "OMP_NUM_THREADS=1 initlab results --profile cpu --out results --only "
                        "vision-n5000-p4,vision-n60000-p4"): {"--list": True},
    ("docs/results.md", "OMP_NUM_THREADS=1 initlab results --profile cpu --out results --only transfer"):
        {"--list": True},
    ("docs/results.md", "initlab results --profile long --out results --jobs 2"): {"--list": True},
    ("docs/results.md", "OMP_NUM_THREADS=1 initlab results --profile cpu --out results --only vision"):
        {"--list": True},
    ("docs/results.md", "initlab results --profile cpu --out results --report-only"): {"--list": True},
    ("docs/results.md", "initlab compare --task lm --model gpt-mini --width 128 --depth 4 --heads 4 "
                        "--block-size 128 --batch-size 16 --steps 150 --eval-every 50 --eval-batches 8 --lr 0.001 "
                        "--base-width 128 --model-option pos=learned --inits "
                        "'default,mimetic-language,mimetic-language(vo=false)' --seeds 3"):
        {**_CMP_LM, "--out": "runs/lm-pos"},
    ("docs/results.md", "initlab results --profile regime --list"): {},
    ("docs/results.md", "initlab results --profile lm-regime --list"): {},
    ("docs/results.md", "initlab results --profile depth --list"): {},
    ("docs/schemes.md", "initlab schemes"): {},
    ("docs/schemes.md", "initlab schemes --check nt+mimetic"): {},
    ("docs/schemes.md", "initlab schemes --show trunc_normal+mimetic --model vit-micro"): {},
    ("docs/schemes.md", "initlab schemes --show deepnorm --model vit-micro --model-option norm_position=post"): {},
    ("docs/schemes.md", "initlab compare --data fashion-mnist --inits default,trunc_normal,gpt2,mimetic,"
                        "structured,nt ..."): {**_CMP, "...": None, "--out": "runs/cmp"},
    ("docs/schemes.md", "initlab compare --data fashion-mnist --train-size 2000 --model vit-micro --epochs 1 "
                        "--batch-size 128 --inits default,trunc_normal,gpt2,mimetic,structured,nt --seeds 1 "
                        "--out /tmp/e_runs/cmp1"): {**_CMP, "--out": "runs/cmp1"},
    ("docs/theory.md", "initlab coordcheck --widths 64,128,256,512 --depth 2 --lr 2e-3 --steps 4 --out runs/cc"):
        {"--widths": "16,32", "--depth": "1", "--steps": "2", "--batch": "4"},
    ("docs/theory.md", "nice -n 10 initlab probe --agreement --widths 512,1024 --depths 1,6,12,24 --params "
                       "standard,nt,mu --samples 128 --out runs/agreement"):
        {"--widths": "32", "--depths": "1", "--params": "nt", "--samples": "8", "--batch": "2"},
    ("docs/theory.md", "initlab probe --model vit --width 512 --depth 12 --param nt --out runs/probe"): _PROBE,
}

# Commands with an equivalent test (it runs what the command does, where the command itself cannot run here).
EQUIVALENT = {
    ("README.md", "torchrun --nproc_per_node 2 -m initlab train ..."):
        "tests/test_ddp.py::test_two_process_gloo_equals_one_process",
    ("docs/training.md", "torchrun --nproc_per_node 2 -m initlab train --data fashion-mnist --model vit-mini "
                         "--epochs 10 --out runs/ddp"): "tests/test_ddp.py::test_two_process_gloo_equals_one_process",
    ("docs/training.md", "torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d --rdzv_id vit1 "
                         "--rdzv_endpoint node0.example:29500 -m initlab train --data cifar10 --data-root /data "
                         "--model vit-tiny --batch-size 1024 --epochs 100 --checkpoint-every 500 "
                         "--out /shared/runs/vit1"): "tests/test_ddp.py::test_two_process_gloo_equals_one_process",
    ("docs/cli.md", "initlab train --out notes.txt"):
        "tests/test_cli_failures.py::test_out_that_is_a_file_or_lies_under_one",
    ("docs/cli.md", "initlab compare --out runs/cmp"):
        "tests/test_run_lock.py::test_a_second_writer_is_refused_in_one_line_naming_the_holder",
    ("docs/cli.md", "initlab train --resume runs/m1 # on a full disk"):
        "tests/test_resume.py::test_disk_full_says_so_and_keeps_the_previous_checkpoint",
}


def _key(page, command, comment):
    if (page, f"{command} # {comment}") in EQUIVALENT:
        return (page, f"{command} # {comment}")
    return (page, command)


def _kind(page, command, comment, expected, after) -> str:
    key = _key(page, command, comment)
    if key in EQUIVALENT:
        return "equivalent"
    if key in TINY:
        return "tiny"
    if expected is not None and "error" in expected:
        return "error"
    if _TIME.search(comment):
        return "timed"
    # a step command that `initlab results` writes between its markers: regenerated with the page, which
    # gives the measured training time (per profile in its meta line, per run in the vision tables)
    marker = re.search(r"<!-- (/?)results:", after)
    if page == "docs/results.md" and marker and marker.group(1) == "/":
        return "generated"
    return "unaccounted"


def _override(argv: list[str], changes: dict, fake: str) -> list[str]:
    argv = list(argv)
    for flag, value in changes.items():
        if flag in argv:
            i = argv.index(flag)
            takes_value = flag.startswith("--") and i + 1 < len(argv) and not argv[i + 1].startswith("--")
            if value is None:
                del argv[i:i + 1 + takes_value]
            elif value is not True:
                argv[i + 1] = value.format(fake=fake)
        elif value is True:
            argv.append(flag)
        elif value is not None:
            argv += [flag, value.format(fake=fake)]
    return argv


def _argv(command: str) -> list[str]:
    words = shlex.split(command)
    while words and (re.fullmatch(r"[A-Z_]+=\S+", words[0]) or words[0] in ("nice", "-n") or words[0].isdigit()):
        words.pop(0)
    assert words[0] == "initlab", command
    return words[1:]


_CMD_RESULTS: dict[str, dict] = {}


def _run(argv):
    from initlab.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # --help
            code = exc.code or 0
    return code, out.getvalue(), err.getvalue()


def _run_commands(page: str, tmp_root: Path) -> dict:
    """Run the page's tiny and error commands in order in one directory: key -> (code, out, err)."""
    if page in _CMD_RESULTS:
        return _CMD_RESULTS[page]
    from test_train_support import write_fake_fashion
    from initlab.threads import single_threaded
    work = tmp_root / re.sub(r"\W", "_", page)
    work.mkdir(parents=True)
    fake = str(write_fake_fashion(tmp_root / "fake-fashion")) if not (tmp_root / "fake-fashion").exists() \
        else str(tmp_root / "fake-fashion")
    results = {}
    cwd = os.getcwd()
    os.chdir(work)
    try:
        with single_threaded():
            for command, comment, expected, after in _commands(page):
                kind = _kind(page, command, comment, expected, after)
                if kind == "tiny":
                    argv = _override(_argv(command), TINY[(page, command)], fake)
                elif kind == "error":
                    argv = _argv(command)
                else:
                    continue
                results[(page, command)] = _run(argv)
    finally:
        os.chdir(cwd)
    _CMD_RESULTS[page] = results
    return results


def _command_params():
    for page in PAGES:
        for command, comment, expected, after in _commands(page):
            kind = _kind(page, command, comment, expected, after)
            if kind in ("tiny", "error"):
                marks = [pytest.mark.xfail(strict=True, reason=AWAITING[(page, command)])] \
                    if (page, command) in AWAITING else []
                yield pytest.param(page, command, expected, id=f"{page}:{command[:60]}", marks=marks)


@pytest.fixture(scope="module")
def cmd_root(tmp_path_factory):
    return tmp_path_factory.mktemp("docs-commands")


@pytest.mark.parametrize("page,command,expected", list(_command_params()))
def test_command_runs_at_tiny_size(page, command, expected, cmd_root):
    code, out, err = _run_commands(page, cmd_root)[(page, command)]
    if expected is None or "error" not in expected:
        assert code == 0, f"{command}: exit {code}\n{err[-2000:]}"
        return
    # an error transcript: exit 2 and the line the doc shows (up to its first "...")
    assert code == 2 and "Traceback" not in err, err
    shown = expected.split("...")[0].strip()
    assert err.strip().startswith(shown), f"the doc shows\n  {expected}\nthe command prints\n  {err.strip()}"


def test_every_command_is_run_or_timed():
    unaccounted = [(page, command) for page in PAGES for command, comment, expected, after in _commands(page)
                   if _kind(page, command, comment, expected, after) == "unaccounted"]
    assert not unaccounted, ("run these at a tiny size (TINY), name an equivalent test (EQUIVALENT) or write "
                             f"their measured time in their comment: {unaccounted}")
    listed = {k for page in PAGES for c, cm, e, a in _commands(page) for k in [_key(page, c, cm)]}
    stale = (set(TINY) | set(EQUIVALENT)) - listed
    assert not stale, f"no longer in the docs: {stale}"


def test_equivalent_tests_exist():
    for target in set(EQUIVALENT.values()) | {w.split(": ")[-1] for _, _, w in OTHER_WAY.values() if "::" in w}:
        path, name = target.split("::")
        assert re.search(rf"^def {name}\(", (ROOT / path).read_text(), re.M), target


def test_tiny_commands_wrote_what_the_docs_promise(cmd_root):
    """The README's train run leaves a run directory that resume and weights read; compare leaves its table."""
    res = _run_commands("README.md", cmd_root)
    work = cmd_root / "README_md"
    assert (work / "runs/m1/checkpoint.pt").is_file()
    assert (work / "runs/m1/metrics.csv").is_file()
    _, out, _ = res[("README.md", "initlab compare --data fashion-mnist --train-size 5000 --inits "
                                   "default,mimetic,structured,nt --epochs 10 --seeds 3 --out runs/cmp")]
    for init in ("default", "mimetic", "structured", "nt"):
        assert re.search(rf"^{init} ", out, re.M), out
    assert np.isfinite(float(re.search(r"^default +([\d.]+)", out, re.M).group(1)))


def test_trainer_recipe_trains_with_initlabs_groups(tmp_path_factory):
    """docs/training.md's Hugging Face Trainer recipe (issue 18, item 7): after its 6 steps the optimizer the
    Trainer stepped holds param_groups' own groups (role, tensors, lr, weight decay), mu's per-role lrs
    differ as intended, and every trained tensor moved."""
    page = "docs/training.md"
    index = next(i for i, code, _ in _python_blocks(page) if "Trainer(" in code)
    result = _run_python_page(page, tmp_path_factory.mktemp("docs-python"))[index]
    if isinstance(result, str):
        pytest.skip(result)
    assert result is None, result
    import initlab
    import torch
    ns = _PAGE_NAMESPACES[page]
    model, p, trainer, before = ns["model"], ns["p"], ns["trainer"], ns["before"]
    assert trainer.state.global_step == 6
    want = initlab.param_groups(model, p, lr=1e-3, weight_decay=0.1)
    got = trainer.optimizer.param_groups
    assert [g["role"] for g in got] == [g["role"] for g in want]
    for g, w in zip(got, want):
        assert len(g["params"]) == len(w["params"]) and all(a is b for a, b in zip(g["params"], w["params"]))
        assert g["lr"] == pytest.approx(w["lr"], rel=1e-12) and g["weight_decay"] == w["weight_decay"]
    by_role = {g["role"]: g for g in got}
    # mu at width 64 over base 32: hidden matrices and the head at lr/2 with weight decay x2 (lr*wd kept),
    # embeddings at the base lr, norms without decay
    assert by_role["q"]["lr"] == pytest.approx(0.5e-3) and by_role["token_embed"]["lr"] == pytest.approx(1e-3)
    assert by_role["q"]["lr"] * by_role["q"]["weight_decay"] == pytest.approx(1e-3 * 0.1)
    assert by_role["norm"]["weight_decay"] == 0.0
    trained = dict(model.named_parameters())
    assert set(trained) == set(before) and all(not torch.equal(trained[n], before[n]) for n in trained)
    assert all(torch.isfinite(t).all() for t in trained.values())
