import sys

from gemma_tui.cli import main

sys.exit(main())
