import sys

from hpff_bench.cli import main

sys.exit(main())
