import sys

from quotagate.fake_provider.cli import main

sys.exit(main())
