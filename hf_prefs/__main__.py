"""``python -m hf_prefs``: the ``hf-prefs`` command line (:func:`hf_prefs.cli.main`), for environments where the
console script is not on ``PATH``."""

import sys

from hf_prefs.cli import main

if __name__ == "__main__":
    sys.exit(main())
