"""``python -m bench NAME [--quick]``."""

import importlib
import sys

NAMES = ("train", "generate", "data", "tui", "gpu", "soak", "variants", "serve", "flood", "chat", "layer_stats")


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in NAMES:
        print(f"usage: python -m bench {{{','.join(NAMES)}}} [--quick]", file=sys.stderr)
        return 2
    module = importlib.import_module(f"bench.{sys.argv[1]}")
    return int(module.main(sys.argv[2:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
