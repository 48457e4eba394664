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
        # values that load and then train wrong: clip_grad_norm_ scales by grad_clip / norm (0 zeroes
        # the gradient, a negative one flips it); a negative min_lr_ratio ends the schedule below 0
        ("sft.grad_clip=0", "sft.grad_clip must be > 0"),
        ("sft.grad_clip=-1", "sft.grad_clip must be > 0"),
        ("sft.min_lr_ratio=-0.5", "sft.min_lr_ratio must be in [0, 1]"),
        ("rl.min_lr_ratio=1.5", "rl.min_lr_ratio must be in [0, 1]"),
        ("sft.patience=0", "sft.patience must be >= 1"),
        ("sft.max_new_tokens=0", "sft.max_new_tokens must be >= 1"),
        ("sft.weight_decay=-0.01", "sft.weight_decay must be >= 0"),
        ("rl.weight_decay=-0.01", "rl.weight_decay must be >= 0"),
        ("critic.weight_decay=-0.01", "critic.weight_decay must be >= 0"),
        ("sft.time_budget_s=-1", "sft.time_budget_s must be >= 0"),
        ("rl.time_budget_s=-1", "rl.time_budget_s must be >= 0"),
        ("task.sft_long_fraction=1.5", "task.sft_long_fraction must be in [0, 1]"),
        ("task.sft_long_fraction=-0.1", "task.sft_long_fraction must be in [0, 1]"),
        ("task.sft_examples=-1", "task.sft_examples must be >= 0"),
        ("task.sft_val=-1", "task.sft_val must be >= 0"),
        ("task.rl_problems=-1", "task.rl_problems must be >= 0"),
        ("task.eval_per_bucket=0", "task.eval_per_bucket must be >= 1 for task.name=arithmetic"),
        ("eval.limit=-1", "eval.limit must be >= 0"),  # heldout[:-1] would quietly drop the last problem
        ("eval.max_new_tokens=0", "eval.max_new_tokens / eval.batch_size must be >= 1"),
        ("eval.batch_size=0", "eval.max_new_tokens / eval.batch_size must be >= 1"),
        ("model.name_or_path=", "model.name_or_path is empty; set it to embedded"),
        ("output_dir=", "output_dir is empty; set it to the folder the run writes into"),
        ("model.autocast=on", "model.autocast=true is not a setting (YAML reads a bare on, yes or true as true); "
                              "use auto, off or bfloat16"),
        # the suite hides GPUs (conftest.py)
        ("rollout.cuda_graph=true", "rollout.cuda_graph=true needs a GPU, and none is visible: set "
                                    "rollout.cuda_graph=false on a CPU"),
    ],
)
def test_errors_name_the_field_and_the_fix(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, [override])


def test_limits_that_stay_allowed():
    """The edges of the new ranges: 0 means "all" / "no limit" / "none" there."""
    cfg = load_config(None, ["eval.limit=0", "sft.time_budget_s=0", "sft.min_lr_ratio=1", "rl.min_lr_ratio=0",
                             "task.sft_val=0", "task.sft_long_fraction=1", "sft.weight_decay=0"])
    assert cfg.eval.limit == 0 and cfg.sft.min_lr_ratio == 1.0
    # eval_per_bucket counts arithmetic problems only; another task ignores it
    load_config(None, ["task.name=jsonl", "task.train_path=t.jsonl", "task.eval_path=e.jsonl",
                       "task.eval_per_bucket=0"])


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


@pytest.mark.parametrize(
    "overrides, message",
    [
        # the demo's recipe skips groups with all-equal task rewards; with the KL in the reward their
        # advantages are not 0
        (["rl.advantage=rloo", "rl.kl_coef=0.1", "rl.kl_in_reward=true"],
         "rl.skip_uniform_groups=true with rl.kl_in_reward=true does not combine: groups are kept by the spread"),
        (["rl.skip_uniform_groups=false", "rl.advantage=rloo", "rl.kl_coef=0.1", "rl.kl_in_reward=true",
          "rl.dynamic_sampling=true"], "rl.dynamic_sampling=true with rl.kl_in_reward=true does not combine: groups "
                                       "are kept by the spread of their task rewards"),
        (["rl.skip_uniform_groups=false", "rl.kl_coef=0.1", "rl.kl_in_reward=true"],
         "rl.advantage=grpo with rl.kl_in_reward=true does not combine: in a group whose task rewards are all equal"),
    ],
)
def test_kl_and_entropy_terms_with_group_filters(overrides, message):
    from rlvr.cli import RECIPES

    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(RECIPES / "demo.yaml", overrides)


def test_kl_combinations_that_stay_allowed():
    for ok in (["rl.skip_uniform_groups=false", "rl.kl_coef=0.1"],  # KL in the loss, every group trains
               ["rl.kl_coef=0.1", "rl.entropy_coef=0.01"],  # in the loss, on the groups kept (a choice, as in DAPO)
               ["rl.skip_uniform_groups=false", "rl.advantage=rloo", "rl.kl_coef=0.1", "rl.kl_in_reward=true"],
               ["rl.skip_uniform_groups=false", "rl.advantage=dr_grpo", "rl.kl_coef=0.1", "rl.kl_in_reward=true"],
               ["rl.dynamic_sampling=true"]):  # DAPO: no KL
        load_config(None, ok)


def test_every_shipped_recipe_loads():
    from rlvr.cli import RECIPES

    from rlvr.tasks.math_data import installed

    names = sorted(p.name for p in RECIPES.glob("*.yaml"))
    assert len(names) >= 8
    for name in names:
        # the math recipe reads the hub through `datasets` (a test extra CI does not install):
        # without it, a local file stands in, which the check accepts as the data's source
        local = [] if installed("datasets") else ["task.train_path=train.jsonl"]
        load_config(RECIPES / name, local if "math" in name else [])


def test_errors_name_where_the_value_was_set(tmp_path):
    """An override, or a field a `base:` recipe set, is blamed on itself, not on the recipe the
    command named."""
    from rlvr.cli import RECIPES

    with pytest.raises(ConfigError, match=re.escape("command-line override `rl.learning_rate=1e-4`: unknown field "
                                                    "rl.learning_rate; did you mean rl.lr?")):
        load_config(RECIPES / "demo.yaml", ["rl.learning_rate=1e-4"])
    with pytest.raises(ConfigError, match=re.escape("command-line override `rl.group_size=1`: rl.group_size must "
                                                    "be >= 2")):
        load_config(RECIPES / "demo.yaml", ["rl.group_size=1"])
    (tmp_path / "base.yaml").write_text("rl:\n  temprature: 0.5\n  group_size: 1\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\nrl:\n  lr: 1.0e-4\n")
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path / 'base.yaml'}: unknown field rl.temprature")):
        load_config(tmp_path / "child.yaml")
    (tmp_path / "base.yaml").write_text("rl:\n  group_size: 1\n")
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path / 'base.yaml'}: rl.group_size must be >= 2")):
        load_config(tmp_path / "child.yaml")
    # the child's own value is the child's; a combination names both places
    (tmp_path / "child.yaml").write_text("base: base.yaml\nrl:\n  group_size: 0\n")
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path / 'child.yaml'}: rl.group_size must be >= 2")):
        load_config(tmp_path / "child.yaml")
    with pytest.raises(ConfigError, match=re.escape(f"{RECIPES / 'demo.yaml'} and command-line override "
                                                    "`rl.kl_in_reward=true`: rl.skip_uniform_groups=true")):
        load_config(RECIPES / "dapo.yaml", ["rl.kl_coef=0.1", "rl.kl_in_reward=true"])  # dapo takes it from demo


def test_base_falls_back_to_the_shipped_recipes(tmp_path):
    """README: a recipe of your own starts from a shipped one with `base: demo.yaml`."""
    for base in ("demo.yaml", "demo"):
        (tmp_path / "mine.yaml").write_text(f"base: {base}\nrl:\n  steps: 3\n")
        cfg = load_config(tmp_path / "mine.yaml")
        assert cfg.rl.steps == 3 and cfg.rl.prompts_per_step == 64 and cfg.task.sft_long_fraction == 0.15
    (tmp_path / "demo.yaml").write_text("rl:\n  prompts_per_step: 5\n")  # a file of that name next to it wins
    assert load_config(tmp_path / "mine.yaml").rl.prompts_per_step == 64  # `demo` names no file here...
    (tmp_path / "mine.yaml").write_text("base: demo.yaml\n")
    assert load_config(tmp_path / "mine.yaml").rl.prompts_per_step == 5  # ...`demo.yaml` does
    (tmp_path / "mine.yaml").write_text("base: nope.yaml\n")
    with pytest.raises(ConfigError, match=r"base: nope.yaml not found \(looked for .*nope.yaml and "
                                          r".*recipes/nope.yaml\); give a path relative to this recipe or "
                                          r"the name of a shipped recipe: dapo, demo"):
        load_config(tmp_path / "mine.yaml")


def test_recipes_merge_at_every_depth_and_empty_sections(tmp_path, monkeypatch):
    """A child's rollout.vllm_args.b keeps the base's rollout.vllm_args.a; a section whose fields are
    all commented out (YAML: null) is an empty one, and changes nothing of its base's."""
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "vllm" else find_spec(name, *a))
    (tmp_path / "base.yaml").write_text("rollout:\n  engine: vllm\n  vllm_args: {a: 1, b: 2}\ncritic:\n  lr: 0.5\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\nrollout:\n  vllm_args: {b: 3}\ncritic:\n#  lr: 0.1\n")
    cfg = load_config(tmp_path / "child.yaml")
    assert cfg.rollout.vllm_args == {"a": 1, "b": 3} and cfg.critic.lr == 0.5
    (tmp_path / "alone.yaml").write_text("critic:\n#  lr: 0.1\nrollout:\n  vllm_args:\n")
    cfg = load_config(tmp_path / "alone.yaml", ["critic.epochs=2"])
    assert cfg.critic.lr == 1e-3 and cfg.critic.epochs == 2 and cfg.rollout.vllm_args == {}


def test_text_fields_take_an_override_as_typed(tmp_path):
    """`output_dir=2024`: YAML reads a number, the field is text, the override's text is kept
    exactly (010 would read as 8). In a file the digits may already have changed: quote them."""
    cfg = load_config(None, ["output_dir=2024", "task.eval_path=010", "task.template=plain", "eval.by=1.10"])
    assert (cfg.output_dir, cfg.task.eval_path, cfg.eval.by) == ("2024", "010", "1.10")
    (tmp_path / "r.yaml").write_text("output_dir: 2024\n")
    with pytest.raises(ConfigError, match=re.escape("r.yaml: output_dir is text, but YAML reads 2024 as a number; "
                                                    "put the value in quotes (output_dir: \"...\")")):
        load_config(tmp_path / "r.yaml")
    (tmp_path / "r.yaml").write_text("output_dir: \"2024\"\n")
    assert load_config(tmp_path / "r.yaml").output_dir == "2024"
    with pytest.raises(ConfigError, match="rl.steps must be int"):  # a number field still wants a number
        load_config(None, ["rl.steps=many"])
    assert load_config(None, ["output_dir=2024-06-01"]).output_dir == "2024-06-01"  # YAML reads a date


def test_an_override_clears_a_mapping_a_recipe_filled(tmp_path):
    """Mappings merge key by key, but an override states its field: `rollout.vllm_args={}` (or
    nothing after the =) empties what the recipe set, so a vLLM recipe can run with engine=hf."""
    (tmp_path / "v.yaml").write_text("rollout:\n  engine: vllm\n  vllm_args: {enforce_eager: true}\n")
    for empty in ("rollout.vllm_args={}", "rollout.vllm_args="):
        assert load_config(tmp_path / "v.yaml", ["rollout.engine=hf", empty]).rollout.vllm_args == {}


def test_the_readme_override_example_trains_after_sft():
    """README's override example: a shipped recipe that runs the demo's SFT first (`rlvr train demo`
    alone is RL from the untrained model, where every reward is 0)."""
    from pathlib import Path

    from rlvr.cli import recipe_path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    example = re.search(r"Overrides use dotted names[^`]*`rlvr train ([^`]+)`", readme).group(1).split()
    cfg = load_config(recipe_path(example[0]), example[1:])
    assert cfg.sft.before_rl and cfg.rl.lr == 1e-4


def test_an_evaluation_reads_a_config_an_older_rlvr_accepted(tmp_path):
    """`rlvr eval` scores a run's model with the run's own config.yaml; RL option combinations
    refused since (here kl_in_reward with skip_uniform_groups) do not matter to an evaluation."""
    (tmp_path / "config.yaml").write_text("rl:\n  advantage: rloo\n  kl_coef: 0.1\n  kl_in_reward: true\n"
                                          "  skip_uniform_groups: true\n")
    with pytest.raises(ConfigError, match="rl.skip_uniform_groups=true with rl.kl_in_reward=true"):
        load_config(tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml", for_eval=True).rl.kl_in_reward
