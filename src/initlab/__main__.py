"""``python -m initlab`` (also what ``torchrun -m initlab`` runs)."""
import sys

from .cli import main

sys.exit(main())
