"""`rwkvft train` (and `python train.py`): every flag of the RWKV-PEFT MiSS tutorial."""
from __future__ import annotations


def add_arguments(parser) -> None:
    from ..config import add_train_arguments
    parser.epilog = ("Flags that restate the checkpoint (--n_layer, --n_embd, --vocab_size, "
                     "--my_testing, --head_size_a) may be 0/omitted; given values are checked. "
                     "An epoch is epoch_steps x micro_bsz x devices samples.")
    add_train_arguments(parser)


def run(args) -> int:
    from .. import train
    from ..config import resolve_config

    result = train(resolve_config(args))
    from ..training.run_dir import rank_zero
    if not rank_zero():  # DDP ranks > 0 run this command too: the summary is rank 0's
        return 0
    if result.adapters:
        print(f"adapter: {result.adapters[-1]}")
    if result.merged:
        print(f"merged model: {result.merged}")
    print(f"logs: {result.proj_dir / 'train_log.txt'}, {result.proj_dir / 'loss.jsonl'}, "
          f"{result.proj_dir / 'loss.png'}")
    return 0
