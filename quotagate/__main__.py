import sys

from quotagate.cli.main import main

sys.exit(main())
