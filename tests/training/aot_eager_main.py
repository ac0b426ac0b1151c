"""`python tests/training/aot_eager_main.py train ...`: the rwkvft CLI with --compile's backend
set to aot_eager in this process, for multi-process tests (Lightning's DDP launcher starts each
further rank by running this same script, so every rank compiles with aot_eager). aot_eager is
dynamo's graphs, the graph breaks and autograd's partitioned backward as under inductor without
the C++ code generation, which costs minutes per process cold on 2 cores (tests/models/test_compile.py)."""
import sys

import rwkvft.models.compile
from rwkvft.cli import main

if __name__ == "__main__":
    rwkvft.models.compile.BACKEND = "aot_eager"
    sys.exit(main(sys.argv[1:]))
