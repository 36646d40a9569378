"""Config loading, grid expansion, run ids, and user errors as one line with exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.core.errors import HarnessError
from harness.experiments.config import expand, load_experiment

from .conftest import write_yaml

BASE = """
experiment: demo
dataset: {name: synthetic}
method: {name: sum, params: {embed_dim: 64}}
train: {epochs: 1, batch_size: 8}
"""


def _error_line(tmp_path: Path, text: str, *extra: str) -> str:
    config = write_yaml(tmp_path / "exp.yaml", text)
    result = CliRunner().invoke(app, ["run", str(config), "--dry-run", *extra])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    assert lines[0].startswith("error: ")
    return lines[0]


def test_unknown_field_names_file_field_and_fix(tmp_path: Path):
    line = _error_line(tmp_path, BASE + "trian: {epochs: 2}\n")
    assert "exp.yaml" in line and "trian" in line and "did you mean 'train'" in line and "fix:" in line


def test_unknown_nested_field(tmp_path: Path):
    line = _error_line(tmp_path, BASE.replace("epochs: 1", "epoch: 1"))
    assert "train.epoch" in line and "did you mean 'epochs'" in line


def test_wrong_type(tmp_path: Path):
    line = _error_line(tmp_path, BASE.replace("epochs: 1", "epochs: many"))
    assert "train.epochs" in line and "'many'" in line and "integer" in line


def test_unknown_method_suggests_close_name(tmp_path: Path):
    line = _error_line(tmp_path, BASE.replace("name: sum", "name: image_onyl"))
    assert "method.name" in line and "unknown method 'image_onyl'" in line and "did you mean 'image_only'" in line


def test_unknown_method_parameter(tmp_path: Path):
    line = _error_line(tmp_path, BASE.replace("embed_dim: 64", "embed_dimm: 64"))
    assert "method.params.embed_dimm" in line and "did you mean 'embed_dim'" in line


def test_missing_file(tmp_path: Path):
    result = CliRunner().invoke(app, ["run", str(tmp_path / "nope.yaml"), "--dry-run"])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "nope.yaml" in result.stderr and "not found" in result.stderr


def test_bad_include(tmp_path: Path):
    line = _error_line(tmp_path, "include: missing_base.yaml\n" + BASE)
    assert "include" in line and "missing_base.yaml" in line and "not found" in line


def test_include_cycle(tmp_path: Path):
    write_yaml(tmp_path / "a.yaml", "include: exp.yaml\n")
    line = _error_line(tmp_path, "include: a.yaml\n" + BASE)
    assert "cycle" in line


def test_bad_yaml(tmp_path: Path):
    line = _error_line(tmp_path, "experiment: [unclosed\n")
    assert "YAML" in line and "line" in line


def test_bad_override(tmp_path: Path):
    line = _error_line(tmp_path, BASE, "--set", "train.epochs")
    assert "--set" in line and "=" in line


def test_unknown_grid_path(tmp_path: Path):
    line = _error_line(tmp_path, BASE + "grid: {train.lrr: [0.1, 0.2]}\n")
    assert "train.lrr" in line and "did you mean 'lr'" in line


def test_include_merges_and_set_overrides(tmp_path: Path):
    write_yaml(tmp_path / "base.yaml", "train: {epochs: 3, lr: 0.001}\neval: {batch_size: 32}\n")
    config = write_yaml(tmp_path / "exp.yaml", "include: base.yaml\n" + BASE)
    experiment, raw = load_experiment(config, ["train.lr=0.002", "eval.ks=[1, 10]"])
    assert experiment.train.epochs == 1  # the including file wins
    assert experiment.train.lr == 0.002  # --set wins over both
    assert experiment.eval.batch_size == 32 and experiment.eval.ks == [1, 10]


def test_grid_times_seeds_and_stable_ids(tmp_path: Path):
    text = BASE + ("grid:\n  train.lr: [0.001, 0.002]\n  method:\n    - {name: image_only}\n    - {name: sum}\n"
                   "seeds: [0, 1]\n")
    config = write_yaml(tmp_path / "exp.yaml", text)
    experiment, raw = load_experiment(config)
    specs = expand(experiment, raw, str(config))
    assert len(specs) == 2 * 2 * 2
    assert len({s.run_id for s in specs}) == 8
    # method params were filled with the method's defaults and the grid value replaced the node
    assert specs[0].config.method.params["embed_dim"] == 256
    again = expand(*load_experiment(config), str(config))
    assert [s.run_id for s in specs] == [s.run_id for s in again]
    # key order in the YAML does not change ids
    body = text.replace("train: {epochs: 1, batch_size: 8}\n", "")
    reordered = write_yaml(tmp_path / "b.yaml", "train: {batch_size: 8, epochs: 1}\n" + body)
    assert {s.run_id for s in expand(*load_experiment(reordered), "b")} == {s.run_id for s in specs}


def test_output_and_tracking_do_not_change_run_id(tmp_path: Path):
    config = write_yaml(tmp_path / "exp.yaml", BASE)
    first = expand(*load_experiment(config), "x")[0].run_id
    second = expand(*load_experiment(config, ["output_dir=elsewhere", "tracking.enabled=false"]), "x")[0].run_id
    assert first == second


def test_no_method_anywhere(tmp_path: Path):
    config = write_yaml(tmp_path / "exp.yaml", "experiment: demo\n")
    experiment, raw = load_experiment(config)
    with pytest.raises(HarnessError, match="no method"):
        expand(experiment, raw, str(config))


def test_dry_run_lists_runs(tmp_path: Path):
    config = write_yaml(tmp_path / "exp.yaml", BASE + "seeds: [0, 1]\n")
    result = CliRunner().invoke(app, ["run", str(config), "--dry-run", "--output", str(tmp_path / "out")])
    assert result.exit_code == 0
    assert "2 runs" in result.stdout and "seed=1" in result.stdout


def test_repository_configs_are_valid():
    root = Path(__file__).resolve().parents[1]
    for path in sorted((root / "ablations").glob("*.yaml")):
        if path.name == "base.yaml":
            continue
        experiment, raw = load_experiment(path)
        assert expand(experiment, raw, str(path)), path


def test_image_size_is_one_setting(tmp_path: Path):
    config = write_yaml(tmp_path / "exp.yaml", BASE.replace("{name: synthetic}", "{name: synthetic, image_size: 32}"))
    experiment, _ = load_experiment(config)
    assert experiment.dataset.synthetic.image_size == 32
    line = _error_line(tmp_path, BASE.replace("{name: synthetic}", "{name: synthetic, image_size: 32, synthetic: "
                                                                   "{image_size: 48}}"))
    assert "dataset" in line and "set image_size only" in line


def test_cuda_without_gpu_is_a_user_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from harness.core.device import resolve_device

    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(HarnessError, match="eval.device"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


@pytest.mark.parametrize("name", ["cirr", "fashioniq", "shoes"])
def test_paper_configs_validate_without_data(name: str):
    from typer.testing import CliRunner

    from harness.cli import app

    result = CliRunner().invoke(app, ["run", f"ablations/paper/{name}.yaml", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "cir_lvlm(" in result.stdout and "(to run)" in result.stdout


def test_environment_variables_fill_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from harness.experiments.config import load_experiment

    text = BASE.replace("{name: synthetic}", "{name: cirr, root: '${MY_CIRR_ROOT:-data/cirr}'}")
    path = tmp_path / "x.yaml"
    path.write_text(text)
    assert load_experiment(path)[0].dataset.root == "data/cirr"  # the default
    monkeypatch.setenv("MY_CIRR_ROOT", "/data/elsewhere")
    assert load_experiment(path)[0].dataset.root == "/data/elsewhere"
    path.write_text(BASE.replace("{name: synthetic}", "{name: cirr, root: '${NOT_SET_ANYWHERE}'}"))
    line = _error_line(tmp_path, path.read_text())
    assert "environment variable NOT_SET_ANYWHERE is not set" in line and "dataset.root" in line


GRID_METHODS = """experiment: demo
train: {epochs: 1, batch_size: 8}
grid:
  method:
    - {name: cir_lvlm, params: {backbone: {source: pretrained, lvlm_dir: /mnt/shared/checkpoints/qwen2.5-vl-7b}}}
    - {name: sum}
"""


def test_set_reaches_the_methods_a_grid_sweeps(tmp_path: Path):
    config = write_yaml(tmp_path / "exp.yaml", GRID_METHODS)
    specs = expand(*load_experiment(config, ["method.params.pool_size=3", "method.params.temperature=0.2"]), "x")
    lvlm, summed = (s.config.method for s in specs)
    assert lvlm.params["pool_size"] == 3 and lvlm.params["temperature"] == 0.2
    assert summed.params["temperature"] == 0.2 and "pool_size" not in summed.params  # sum has no prompt pool
    assert lvlm.params["backbone"]["lvlm_dir"] == "/mnt/shared/checkpoints/qwen2.5-vl-7b"  # the entry was merged into
    with pytest.raises(HarnessError, match=r"--set method.params.pool_sise: no method of the grid \(cir_lvlm, sum\)"):
        load_experiment(config, ["method.params.pool_sise=3"])


def test_labels_name_checkpoints_by_their_folder_and_ids_survive_a_move(tmp_path: Path):
    config = write_yaml(tmp_path / "exp.yaml", GRID_METHODS)
    [lvlm, _] = expand(*load_experiment(config), "x")
    assert lvlm.label == "cir_lvlm(backbone.source=pretrained, backbone.lvlm_dir=qwen2.5-vl-7b)"
    moved = write_yaml(tmp_path / "moved.yaml", GRID_METHODS.replace("/mnt/shared/checkpoints/", "/scratch/me/"))
    assert expand(*load_experiment(moved), "x")[0].run_id == lvlm.run_id
    other = write_yaml(tmp_path / "other.yaml", GRID_METHODS.replace("qwen2.5-vl-7b", "qwen2.5-vl-3b"))
    assert expand(*load_experiment(other), "x")[0].run_id != lvlm.run_id
    data = write_yaml(tmp_path / "data.yaml", BASE)
    here = expand(*load_experiment(data, ["dataset.root=/data/cirr"]), "x")[0].run_id
    assert expand(*load_experiment(data, ["dataset.root=/elsewhere/cirr/"]), "x")[0].run_id == here


def test_set_addresses_a_grid_key_whole(tmp_path: Path):
    """`--set grid.method.name=[sum]` replaces the sweep over the key path method.name (grid keys are
    dotted paths themselves), leaving the grid's other keys."""
    text = BASE + "grid:\n  method.name: [image_only, sum]\n  train.lr: [0.001, 0.002]\n"
    config = write_yaml(tmp_path / "exp.yaml", text)
    experiment, raw = load_experiment(config, ["grid.method.name=[sum]"])
    assert experiment.grid == {"method.name": ["sum"], "train.lr": [0.001, 0.002]}
    assert len(expand(experiment, raw, "x")) == 2


def test_instruction_tuning_settings_enter_only_cir_lvlm_run_ids(tmp_path: Path):
    text = BASE + "grid:\n  method:\n    - {name: sum}\n    - {name: cir_lvlm}\n"  # the grid replaces BASE's method
    config = write_yaml(tmp_path / "exp.yaml", text)
    on = [s.run_id for s in expand(*load_experiment(config), "x")]
    off = [s.run_id for s in expand(*load_experiment(config, ["method.params.stage0.instruct_steps=0"]), "x")]
    fewer = [s.run_id for s in expand(*load_experiment(config, ["method.params.stage0.instructions=[count]"]), "x")]
    assert on[0] == off[0] == fewer[0]  # sum reads stage 0's CLIP alone: its id (and finished runs) stay
    assert len({on[1], off[1], fewer[1]}) == 3  # CIR-LVLM's LM learns them: each is another run


def test_stage0_seed_run_draws_each_runs_stage0_with_its_own_seed(tmp_path: Path):
    """`stage0: {seed: run}` resolves to each run's seed before validation, so the run id is the
    one an explicit stage-0 seed gives (the same run, the same cache entry)."""
    from harness.experiments.executor import plan_experiment

    from .conftest import TINY_LVLM

    text = "experiment: s0\n" + TINY_LVLM.replace("stage0: {", "stage0: {seed: run, ") + "seeds: [0, 3]\n"
    specs = plan_experiment(write_yaml(tmp_path / "s0.yaml", text)).specs
    assert [s.config.method.params["stage0"]["seed"] for s in specs] == [0, 3]
    explicit = plan_experiment(write_yaml(tmp_path / "x.yaml", text.replace("seed: run", "seed: 3")
                                          .replace("seeds: [0, 3]", "seeds: [3]"))).specs
    assert explicit[0].run_id == specs[1].run_id
