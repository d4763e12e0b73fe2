"""`python -m semrec.cli ...` (e.g. under `torchrun --nproc_per_node=N -m semrec.cli run RECIPE`)."""

import sys

from semrec.cli import main

sys.exit(main())
