import pytest
import yaml

from text2video.config import Config, config_from_dict, load_config, parse_override, preset_names
from text2video.errors import ConfigError


def test_every_shipped_preset_loads_and_the_required_ones_exist():
    names = preset_names()
    for required in ("tiny-cpu", "text2video-from-scratch", "moving-digits", "gpu-64"):
        assert required in names
    for name in names:
        assert isinstance(load_config(name), Config)


def test_default_is_tiny_cpu():
    assert load_config().to_dict() == load_config("tiny-cpu").to_dict()


def test_seed_001_preset_fixes_the_seed_defects():
    config = load_config("text2video-from-scratch")
    assert config.train.cond_drop == pytest.approx(0.1)
    assert config.train.save_every >= 1000
    assert config.model.kwargs["dim_mults"] == [1, 2, 4, 8]
    timesteps = [v for k, v in config.diffusion.kwargs.items() if "timesteps" in k]
    assert timesteps in ([], [1000])  # the objective's default is 1000; never text2video-from-scratch's 10


def test_dotted_overrides_are_parsed_as_yaml_values():
    config = load_config(
        "tiny-cpu",
        [
            "train.lr=2e-4",
            "model.dim=16",
            "train.betas=[0.8, 0.95]",
            "train.max_grad_norm=null",
            "sample.prompts=[a b, c d]",
            "data.options.n=10",
        ],
    )
    assert config.train.lr == pytest.approx(2e-4) and isinstance(config.train.lr, float)
    assert config.model.kwargs["dim"] == 16
    assert config.train.betas == [0.8, 0.95]
    assert config.train.max_grad_norm is None
    assert config.sample.prompts == ["a b", "c d"]
    assert config.data.options["n"] == 10


def test_unknown_key_names_it_and_suggests_the_close_one():
    with pytest.raises(ConfigError) as err:
        load_config("tiny-cpu", ["train.lrr=1"])  # (train.lrate is now closer to train.lora)
    message = str(err.value)
    assert "train.lrr" in message and "Did you mean 'train.lr'" in message and "train.batch_size" in message


def test_unknown_section_and_bad_literal_values():
    with pytest.raises(ConfigError, match="Did you mean 'train'"):
        config_from_dict({"trian": {}})
    with pytest.raises(ConfigError, match="Allowed values: no, fp16, bf16"):
        load_config("tiny-cpu", ["train.mixed_precision=fp32"])
    with pytest.raises(ConfigError, match="train.steps: expected an integer"):
        load_config("tiny-cpu", ["train.steps=ten"])
    with pytest.raises(ConfigError, match="train.cond_drop = 1.5 is out of range"):
        load_config("tiny-cpu", ["train.cond_drop=1.5"])
    with pytest.raises(ConfigError, match="not divisible by train.grad_accum"):
        load_config("tiny-cpu", ["train.batch_size=6", "train.grad_accum=4"])
    with pytest.raises(ConfigError, match="must look like section.key=value"):
        parse_override("train.lr")


def test_unknown_model_and_missing_preset():
    with pytest.raises(ConfigError, match="Did you mean 'unet3d'"):
        load_config("tiny-cpu", ["model.name=unet3e"])
    with pytest.raises(ConfigError, match="Did you mean 'tiny-cpu'"):
        load_config("tiny-cpux")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("nowhere/config.yaml")


def test_model_keys_are_checked_against_the_constructor():
    with pytest.raises(ConfigError, match="model.dimm.*Did you mean 'model.dim'"):
        load_config("tiny-cpu", ["model.dimm=8"])


def test_yaml_round_trip(tmp_path):
    config = load_config("tiny-cpu", ["train.lr=3e-4", "model.dim=8"])
    path = config.save(tmp_path / "c.yaml")
    assert yaml.safe_load(path.read_text())["model"]["dim"] == 8
    assert load_config(path).to_dict() == config.to_dict()


def test_diffusion_section_is_checked_against_the_objective():
    with pytest.raises(ConfigError, match="Did you mean 'diffusion.prediction_type'"):
        load_config("tiny-cpu", ["diffusion.prediction_typ=epsilon"])
    with pytest.raises(ConfigError, match="prediction_type"):
        load_config("tiny-cpu", ["diffusion.prediction_type=noise"])
    with pytest.raises(ConfigError, match="use train.cond_drop"):
        load_config("tiny-cpu", ["diffusion.cond_drop_prob=0.2"])
    with pytest.raises(ConfigError, match="sample.sampler"):
        load_config("tiny-cpu", ["sample.sampler=dimm"])


def test_training_objective_leaves_the_dropping_to_the_trainer():
    from text2video.config import objective_config

    config = load_config("tiny-cpu", ["train.cond_drop=0.25"])
    assert not hasattr(objective_config(config), "cond_drop_prob")
    assert config.train.cond_drop == 0.25
