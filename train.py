"""`python train.py <RWKV-PEFT tutorial flags>` is `rwkvft train <same flags>`."""
import sys

from rwkvft.cli import main

sys.exit(main(["train", *sys.argv[1:]]))
