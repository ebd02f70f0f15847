"""Tied-head types of the causal-LM, masked-LM and seq2seq auto mappings, built tiny from configs
(tools/hf_coverage.shrink, never a hub download): parametrize mu, save_pretrained to a temporary
folder, from_pretrained, then the logits without initlab.restore_ (ratio to the original) and with
it (same to 1e-5?). One JSON line per type on stdout, all rows in the JSON file given (default
persist_sweep.json). About 16 minutes on one CPU core:

    PYTHONPATH=src python tools/persist_sweep.py /tmp/persist_sweep.json
"""
import json, signal, sys, tempfile, time, warnings
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
import torch, transformers
from transformers.utils import logging
logging.set_verbosity_error()
logging.disable_progress_bar()
import hf_coverage as hc
import initlab
from transformers.models.auto import modeling_auto
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

AUTOS = {"causal-lm": ("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", "AutoModelForCausalLM"),
         "masked-lm": ("MODEL_FOR_MASKED_LM_MAPPING_NAMES", "AutoModelForMaskedLM"),
         "seq2seq": ("MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES", "AutoModelForSeq2SeqLM")}

def build(head, t):
    cfg = CONFIG_MAPPING[t](); hc.shrink(cfg)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getattr(transformers, AUTOS[head][1]).from_config(cfg).eval()

def logits(m, ids, head):
    kw = dict(input_ids=ids)
    if head == "seq2seq" or getattr(m.config, "is_encoder_decoder", False):
        kw["decoder_input_ids"] = ids
    with torch.no_grad():
        out = m(**kw)
    return out.logits if hasattr(out, "logits") else out[0]

def alarm(*a): raise TimeoutError("timeout")
signal.signal(signal.SIGALRM, alarm)
rows = []
for head, (mapping, _) in AUTOS.items():
    for t in sorted(getattr(modeling_auto, mapping)):
        signal.alarm(90)
        row = {"head": head, "type": t}
        try:
            m = build(head, t)
            if initlab.roles.persist.tied_output(m) is None:
                row["status"] = "untied"; continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                initlab.parametrize_(m, "mu", generator=torch.Generator().manual_seed(0))
            vocab = m.get_input_embeddings().weight.shape[0]
            ids = torch.randint(3, min(vocab, 100), (1, 6), generator=torch.Generator().manual_seed(1))
            ref = logits(m, ids, head)
            with tempfile.TemporaryDirectory() as d:
                m.save_pretrained(d)
                r = type(m).from_pretrained(d).eval()
                lost = logits(r, ids, head)
                row["ratio_without_restore"] = float(lost.abs().mean() / ref.abs().mean())
                initlab.restore_(r)
                got = logits(r, ids, head)
            ok = torch.allclose(got, ref, rtol=1e-5, atol=1e-6 * float(ref.abs().max()))
            row["status"] = "same" if ok else f"differs (max rel {float(((got-ref).abs().max()/ref.abs().max())):.3g})"
        except Exception as e:  # noqa
            row["status"] = f"error: {type(e).__name__}: {str(e)[:120]}"
        finally:
            signal.alarm(0)
            rows.append(row)
            print(json.dumps(row), flush=True)
json.dump(rows, open(sys.argv[1] if len(sys.argv) > 1 else "persist_sweep.json", "w"), indent=1)
from collections import Counter
print(Counter(r["status"].split(":")[0].split(" (")[0] for r in rows))
