import sys

from cloudarb.cli import main

sys.exit(main())
