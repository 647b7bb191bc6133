import sys

from federa.cli import main

sys.exit(main())
