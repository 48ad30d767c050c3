import pytest

from text2video.errors import ModelError
from text2video.models.registry import build_model, load_model


def test_unknown_model_names_the_choices():
    with pytest.raises(ModelError, match="unet3d"):
        build_model("no-such-model")


def test_load_model_from_a_folder_without_config(tmp_path):
    with pytest.raises(ModelError, match="config.json"):
        load_model(tmp_path)
