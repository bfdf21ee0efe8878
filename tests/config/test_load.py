"""Recipe loading, merging and the one-line errors a user sees for config mistakes."""

from __future__ import annotations

import pytest

from mav_train.components.registry import COMPONENTS
from mav_train.config.load import ConfigError, list_recipe_names, load_config, parse_overrides
from mav_train.config.validate import validate


def test_every_recipe_loads_and_validates_with_shards():
    names = list_recipe_names()
    assert {"decoder", "temporal_decoder", "demo/decoder", "demo/temporal_decoder"} <= set(names)
    for name in names:
        cfg = load_config(name, ["data.shards=/tmp/x/{00000..00001}.tar"])
        validate(cfg, COMPONENTS)
        assert cfg.recipe == name
        assert cfg.component in COMPONENTS


def test_base_chain_and_override_order():
    cfg = load_config("temporal_decoder", ["unet.base_channels=64"])
    assert cfg.unet.temporal is True  # from temporal_decoder.yaml
    assert cfg.unet.channel_mults == [1, 2, 3, 4]  # inherited from decoder.yaml
    assert cfg.unet.base_channels == 64  # the command line wins
    assert cfg.data.kind == "video"


def test_unknown_key_names_dotted_key_and_suggestion():
    with pytest.raises(ConfigError) as err:
        load_config("demo/decoder", ["trainer.max_step=10"])
    assert "trainer.max_step" in str(err.value)
    assert "trainer.max_steps" in str(err.value)


def test_wrong_type_names_key_and_value():
    with pytest.raises(ConfigError) as err:
        load_config("demo/decoder", ["data.batch_size=lots"])
    assert "data.batch_size" in str(err.value) and "lots" in str(err.value)


def test_missing_shards_says_how_to_fix():
    cfg = load_config("decoder")
    with pytest.raises(ConfigError) as err:
        validate(cfg, COMPONENTS)
    message = str(err.value)
    assert "data.shards" in message and "recipe=demo/decoder" in message


def test_bad_choice_is_named():
    cfg = load_config("demo/decoder", ["diffusion.schedule=cosin"])
    with pytest.raises(ConfigError, match="diffusion.schedule.*cosine"):
        validate(cfg, COMPONENTS)


def test_worker_start_typo_is_named():
    cfg = load_config("demo/decoder", ["data.worker_start=forksever"])
    with pytest.raises(ConfigError, match="data.worker_start.*forkserver"):
        validate(cfg, COMPONENTS)


def test_checkpoint_interval_must_be_positive():
    """checkpoint.every_n_steps=0 used to crash the first training step (it is also the validation interval)."""
    cfg = load_config("demo/decoder", ["checkpoint.every_n_steps=0"])
    with pytest.raises(ConfigError, match="'checkpoint.every_n_steps': 0 must be positive"):
        validate(cfg, COMPONENTS)


def test_min_snr_floor_without_gamma_fails_at_load():
    """It used to fail only when the component was built."""
    cfg = load_config("demo/decoder", ["diffusion.min_snr_gamma=0"])
    with pytest.raises(ConfigError, match="'diffusion.min_snr_floor': 1.0 needs diffusion.min_snr_gamma > 0"):
        validate(cfg, COMPONENTS)
    validate(load_config("demo/decoder", ["diffusion.min_snr_gamma=0", "diffusion.min_snr_floor=0"]), COMPONENTS)


def test_noisy_timestep_share_is_checked_at_load():
    cfg = load_config("demo/decoder", ["diffusion.noisy_fraction=1.2"])
    with pytest.raises(ConfigError, match="'diffusion.noisy_fraction': 1.2"):
        validate(cfg, COMPONENTS)
    with pytest.raises(ConfigError, match="'diffusion.noisy_from': 1.0"):
        validate(load_config("demo/decoder", ["diffusion.noisy_from=1.0"]), COMPONENTS)


def test_guidance_interval_is_checked_at_load():
    cfg = load_config("demo/decoder", ["diffusion.guidance_interval=[0.8,0.3]"])
    with pytest.raises(ConfigError, match="'diffusion.guidance_interval': \\[0.8, 0.3\\]"):
        validate(cfg, COMPONENTS)
    validate(load_config("demo/decoder", ["diffusion.guidance_interval=[0.3,0.8]"]), COMPONENTS)
    validate(load_config("demo/decoder", ["diffusion.guidance_interval=null"]), COMPONENTS)


def test_unknown_recipe_lists_known_ones():
    with pytest.raises(ConfigError, match="demo/decoder"):
        load_config("nope")


def test_list_field_accepts_a_single_value_and_logger_shorthand():
    parsed = parse_overrides(["data.filters=pwatermark<0.5", "logger=none"])
    assert list(parsed.data.filters) == ["pwatermark<0.5"]
    assert parsed.logger.kind == "none"
    cfg = load_config("demo/decoder", ["data.filters=[pwatermark<0.5,punsafe<0.5]"])
    assert list(cfg.data.filters) == ["pwatermark<0.5", "punsafe<0.5"]


def test_config_is_read_only():
    cfg = load_config("demo/decoder")
    with pytest.raises(Exception):
        cfg.data.batch_size = 3


def test_override_without_equals_fails():
    with pytest.raises(ConfigError, match="key=value"):
        load_config("demo/decoder", ["trainer.max_steps"])


def test_time_strings_are_not_base60_numbers(tmp_path):
    cfg = load_config("demo/decoder", ["slurm.time=48:00:00"])
    assert cfg.slurm.time == "48:00:00"
    recipe = tmp_path / "r.yaml"
    recipe.write_text("base: demo/decoder\nslurm:\n  time: 12:00:00\noptim:\n  lr: 1e-3\n")
    cfg = load_config(str(recipe))
    assert cfg.slurm.time == "12:00:00" and cfg.optim.lr == 1e-3


def test_null_for_optional_string_and_verbatim_strings():
    cfg = load_config("demo/decoder", ["data.shards=/data/{00000..00009}.tar", "run_dir=null"])
    assert cfg.data.shards == "/data/{00000..00009}.tar" and cfg.run_dir is None


def test_fsdp_refuses_ema_and_sampling_until_supported():
    cfg = load_config("demo/decoder", ["trainer.strategy=fsdp"])
    with pytest.raises(ConfigError, match="ema.enabled=false sampling.every_n_steps=0"):
        validate(cfg, COMPONENTS)
    validate(load_config("demo/decoder", ["trainer.strategy=deepspeed_stage_3"]), COMPONENTS)
    ok = load_config("demo/decoder", ["trainer.strategy=fsdp", "ema.enabled=false", "sampling.every_n_steps=0"])
    validate(ok, COMPONENTS)
