"""`python -m sparsenet ...` is the `sparsenet` command."""
import sys

from .cli import main

sys.exit(main())
