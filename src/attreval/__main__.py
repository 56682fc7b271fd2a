import sys

from attreval.cli import main

sys.exit(main())
