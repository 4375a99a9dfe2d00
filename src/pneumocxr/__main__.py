import sys

from pneumocxr.cli.main import main

sys.exit(main())
