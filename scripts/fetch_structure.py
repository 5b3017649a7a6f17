"""Entry point of rule `fetch_structure` (a shell: rule, see workflow/rules/structures.smk):

    python scripts/fetch_structure.py ID OUT URL LOG

downloads PDB entry ID from URL to OUT (affinity_vae/structures/sources.py, fetch_main), logging
to LOG; a user-fixable failure is one line and exit status 1, as in every stage.
"""
import sys
from types import SimpleNamespace

from affinity_vae.runner import run
from affinity_vae.structures.sources import fetch_main

if len(sys.argv) != 5:
    sys.exit("usage: python scripts/fetch_structure.py ID OUT URL LOG")
pdb_id, out, url, log = sys.argv[1:]
run(SimpleNamespace(rule="fetch_structure", threads=1, output=[out], log=[log],
                    params=SimpleNamespace(pdb_id=pdb_id, url=url)), fetch_main)
