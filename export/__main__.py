"""python -m export == mgca-export."""
import sys

from .cli import main

sys.exit(main())
