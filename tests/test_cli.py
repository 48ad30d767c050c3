import json

from text2video.cli import main


def test_info_json_lists_versions_device_and_models(capsys):
    assert main(["info", "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["versions"]["torch"].startswith("2.13.0")
    assert facts["device"]["default"] in {"cpu", "cuda", "mps"}
    assert isinstance(facts["models"], list)


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out
