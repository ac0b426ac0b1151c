"""`rwkvft train`'s settings: the flag declaration and what is derived from it.

    flag.py       the Flag record (name, default/type, help, range, choices, data/eval use)
    flags.py      the declaration: every flag, once (with its --resume rule) and the words it
                  accepts; IGNORED_FLAGS (RWKV-PEFT flags without effect)
    record.py     FLAGS, RANGES and TrainConfig derived from it; declare()/undeclare() at run time
    ranges.py     Range and check_ranges (other commands use them with their own tables)
    arguments.py  argparse arguments for train (and eval's data flags)
    resolve.py    defaults < --config FILE < command line -> TrainConfig
    validate.py   how the settings fit together
"""
from __future__ import annotations

from .arguments import add_eval_arguments, add_train_arguments, parse_bool
from .flag import Flag, shown_default
from .flags import (DPO_LOSSES, IGNORED_FLAGS, INFCTX_BPTT, OBJECTIVES, PRECISIONS, QUANT_MODES,
                    SCHEDULES, STRATEGIES, TRAIN_TYPES)
from .ranges import Range, check_ranges
from .record import FLAGS, RANGES, TrainConfig, data_flags, declare, eval_flags, undeclare
from .resolve import coerce, config_from_values, load_config_file, resolve_config
from .validate import check_choices, validate, validate_infctx

__all__ = ["Flag", "FLAGS", "RANGES", "Range", "TrainConfig", "DPO_LOSSES", "IGNORED_FLAGS", "INFCTX_BPTT",
           "OBJECTIVES",
           "PRECISIONS", "QUANT_MODES", "SCHEDULES", "STRATEGIES", "TRAIN_TYPES",
           "add_eval_arguments", "add_train_arguments", "check_choices", "check_ranges", "coerce",
           "config_from_values",
           "data_flags", "declare", "eval_flags", "load_config_file", "parse_bool",
           "resolve_config", "shown_default", "undeclare", "validate", "validate_infctx"]
