"""Signal propagation at initialization, measured: :func:`probe` (one forward and one backward
with hooks found through the role map), the architecture it reads off the forward
(:mod:`.structure`), and the commands' bodies (:mod:`.runs`: building a model from a name, a
Hugging Face type or a config.json, batches from the role map's input facts, the agreement table
and the coordinate check), so the CLI only parses flags and prints."""
from .measure import BLOCK_FIELDS, GRAD_ROLES, ProbeReport, probe

__all__ = ["probe", "ProbeReport", "BLOCK_FIELDS", "GRAD_ROLES"]
