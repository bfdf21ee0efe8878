"""``consolidate``: a DeepSpeed / FSDP checkpoint directory (or any .ckpt) → one plain .ckpt or .safetensors."""

from __future__ import annotations

from mav_train.checkpoints import consolidate
from mav_train.config.load import ConfigError

HELP = """\
Turn a DeepSpeed or FSDP sharded checkpoint (a directory) into one .ckpt for sampling and init.checkpoint.

usage: python -m mav_train consolidate checkpoint=PATH [out=FILE] [format=ckpt|safetensors] [trust_pickle=true]

  checkpoint    a checkpoint written by fit: a DeepSpeed directory (runs/x/last.ckpt/), an FSDP sharded
                directory, or a .ckpt file (its optimizer state is dropped)
  out           where to write the result (default: beside it, <name>.consolidated.ckpt or .safetensors)
  format        ckpt (a torch file) or safetensors (weights + the config as JSON in the file's metadata, the
                format to share); default: safetensors when out ends in .safetensors, else ckpt
  trust_pickle  true: read a .ckpt that needs full unpickling (it could run code: only for a file whose author
                you trust), e.g. to convert a legacy file once into a safe one

The result holds `state_dict` (network.* and ema_network.* as full fp32 tensors) and `hyper_parameters`, so
`sample checkpoint=OUT` and `fit init.checkpoint=OUT` accept it. Training cannot resume from it (no optimizer
state)."""

KEYS = ("checkpoint", "out", "format", "trust_pickle")


def parse(args: list[str]) -> dict[str, str | None]:
    values: dict[str, str | None] = dict.fromkeys(KEYS)
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or key not in KEYS:
            raise ConfigError(f"consolidate: unknown argument '{arg}'; expected key=value with key in "
                              f"{', '.join(KEYS)}")
        values[key] = value
    if values["format"] not in (None, "ckpt", "safetensors"):
        raise ConfigError(f"consolidate: format '{values['format']}' is not one of ckpt, safetensors")
    if values["trust_pickle"] not in (None, "true", "false"):
        raise ConfigError(f"consolidate: trust_pickle '{values['trust_pickle']}' is not true or false")
    if not values["checkpoint"]:
        raise ConfigError("consolidate: missing required value 'checkpoint' (checkpoint=runs/x/last.ckpt)")
    return values


def run(args: list[str]) -> int:
    values = parse(args)
    try:
        out = consolidate(values["checkpoint"], values["out"], fmt=values["format"],
                          trusted=values["trust_pickle"] == "true")
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(str(err)) from err
    print(f"wrote {out}")
    return 0
