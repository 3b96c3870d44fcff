import sys

from gemma_core.cli import main

sys.exit(main())
