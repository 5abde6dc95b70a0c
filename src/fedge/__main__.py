"""`python -m fedge ...` is the `fedge` command (what `torchrun -m fedge run ...` starts in every process)."""

import sys

from fedge.cli import main

sys.exit(main())
