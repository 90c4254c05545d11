"""``python -m eks_inference.cli``: the same as the ``eks-inference`` command."""

import sys

from eks_inference.cli import main

sys.exit(main())
