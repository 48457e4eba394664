import re

import pytest

from rlvr.config import ConfigError, load_config


def test_defaults_and_overrides(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("rl:\n  lr: 1.0e-4\n  group_size: 4\ntask:\n  reward: exact\n")
    cfg = load_config(recipe, ["rl.lr=2e-5", "rl.steps=7", "output_dir=/tmp/x", "task.eval_path=null"])
    assert cfg.rl.lr == 2e-5 and cfg.rl.group_size == 4 and cfg.rl.steps == 7
    assert cfg.output_dir == "/tmp/x" and cfg.task.eval_path is None
    assert isinstance(cfg.rl.lr, float)


@pytest.mark.parametrize(
    "override, message",
    [
        ("rl.lerning_rate=1", "unknown field rl.lerning_rate; did you mean rl.lr"),
        ("rl.group_size=1", "rl.group_size must be >= 2"),
        ("rl.steps=many", "rl.steps must be int"),
        ("rl.advantage=magic", "rl.advantage='magic' is unknown; use one of"),
        ("task.template=fancy", "task.template='fancy'"),
        ("rl", "write it as section.field=value"),
        ("rl.lr.x=1", "rl.lr must be float, got {'x': 1}"),
        ("rl.learning_rate=1", "did you mean rl.lr"),
        ("rl.num_generations=4", "did you mean rl.group_size"),
        ("rl.save_every=0", "rl.save_every must be >= 1"),
        ("rl.grad_clip=0", "rl.grad_clip / critic.grad_clip must be > 0"),
        ("rl.clip_low=1.5", "rl.clip_low must be in (0, 1)"),
        ("rl.clip_high=-0.1", "rl.clip_high must be > 0"),
        ("rl.entropy_coef=-0.01", "rl.entropy_coef must be >= 0"),
        ("critic.value_clip=-1", "critic.value_clip must be >= 0"),
        ("rl.overlong_penalty=-1", "rl.overlong_penalty must be >= 0"),
        ("rl.warmup_steps=-2", "rl.warmup_steps / sft.warmup_steps must be >= 0"),
        ("rl.loss=gspo", "set rl.clip_low and rl.clip_high"),
        ("critic.epochs=0", "critic.epochs must be >= 1"),
        # the suite hides GPUs (conftest.py)
        ("rollout.cuda_graph=true", "rollout.cuda_graph=true needs a GPU, and none is visible: set "
                                    "rollout.cuda_graph=false on a CPU"),
    ],
)
def test_errors_name_the_field_and_the_fix(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, [override])


def test_error_names_the_file(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("rl:\n  temprature: 0.5\n")
    with pytest.raises(ConfigError, match="bad.yaml: unknown field rl.temprature; did you mean rl.temperature"):
        load_config(recipe)


def test_checks_that_combine_fields():
    with pytest.raises(ConfigError, match=re.escape("rollout.cuda_graph=true with rollout.engine=vllm applies to the "
                                                    "hf engine only (vLLM captures its own graphs)")):
        load_config(None, ["rollout.engine=vllm", "rollout.cuda_graph=true"])
    with pytest.raises(ConfigError, match="set rl.aggregation=seq_mean_token_mean"):
        load_config(None, ["rl.loss=gspo", "rl.aggregation=token_mean", "rl.clip_low=3e-4", "rl.clip_high=4e-4"])
    load_config(None, ["rl.loss=gspo", "rl.aggregation=seq_mean_token_mean", "rl.clip_low=3e-4", "rl.clip_high=4e-4"])
    with pytest.raises(ConfigError, match="rl.dynamic_sampling must be false with rl.advantage=reinforce_pp"):
        load_config(None, ["rl.advantage=reinforce_pp", "rl.skip_uniform_groups=false", "rl.dynamic_sampling=true"])
    # whitened over the batch after the group mean: a uniform group's rows are not 0 either
    with pytest.raises(ConfigError, match="rl.skip_uniform_groups must be false with rl.advantage=reinforce_pp_baseline"):
        load_config(None, ["rl.advantage=reinforce_pp_baseline", "rl.skip_uniform_groups=true"])
    with pytest.raises(ConfigError, match=re.escape("rollout.vllm_args.dtype is set by rlvr itself; remove it")):
        load_config(None, ["rollout.engine=vllm", "rollout.vllm_args.dtype=float16"])
    with pytest.raises(ConfigError, match="rollout.vllm_args applies to rollout.engine=vllm only"):
        load_config(None, ["rollout.vllm_args.enforce_eager=true"])


def test_an_empty_override_of_a_string_field_is_the_empty_string():
    """`rlvr eval --task gsm8k` appends eval.by= (GSM8K has no subject or level)."""
    assert load_config(None, ["eval.by="]).eval.by == ""
    with pytest.raises(ConfigError, match="sft.max_steps / sft.eval_every must be >= 1"):
        load_config(None, ["sft.eval_every=0"])


def test_vllm_args_collect_from_a_recipe_and_overrides(tmp_path, monkeypatch):
    """rollout.vllm_args gathers vllm.LLM keywords from a recipe and from overrides alike
    (whether vLLM is installed does not matter to the config: find_spec is told it is)."""
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "vllm" else find_spec(name, *a))
    recipe = tmp_path / "r.yaml"
    recipe.write_text("rollout:\n  engine: vllm\n  vllm_args: {max_model_len: 2048}\n")
    cfg = load_config(recipe, ["rollout.vllm_args.enforce_eager=true"])
    assert cfg.rollout.vllm_args == {"max_model_len": 2048, "enforce_eager": True}
    with pytest.raises(ConfigError, match=re.escape("rollout.vllm_args must be dict, got [1]")):
        load_config(None, ["rollout.vllm_args=[1]"])


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.autocast=float16"], "model.autocast=float16 is not supported: float16 gradients underflow without loss"),
        (["model.autocast=fp8"], "model.autocast='fp8' is unknown; use auto, off or bfloat16"),
        (["model.dtype=bf16"], "model.dtype='bf16' is unknown; use auto (float32), float32, bfloat16 or float16"),
        (["model.autocast=bfloat16", "model.dtype=bfloat16"], "model.autocast=bfloat16 with model.dtype=bfloat16 does "
         "not combine: autocast runs bf16 matmuls over float32 master weights; set model.dtype=auto for mixed "
         "precision, or model.autocast=off to train the bfloat16 weights as they are"),
        (["model.autocast=bfloat16", "model.dtype=float16"], "model.autocast=bfloat16 with model.dtype=float16 does not "
         "combine"),
    ],
)
def test_precision_settings_that_do_not_combine(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, overrides)


def test_autocast_off_survives_yaml(tmp_path):
    """YAML 1.1 reads a bare `off` as false; the field still gets the word."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model:\n  autocast: off\n  dtype: bfloat16\n")
    assert load_config(recipe).model.autocast == "off"
    assert load_config(None, ["model.autocast=off"]).model.autocast == "off"
    for ok in (["model.autocast=bfloat16"], ["model.autocast=bfloat16", "model.dtype=float32"], ["model.dtype=float16"]):
        load_config(None, ok)
