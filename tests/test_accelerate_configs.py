"""The shipped Accelerate configs load through Accelerate itself, and describe the setups their names promise.

No GPU and no DeepSpeed install are needed: Accelerate parses the files, and its DeepSpeed/FSDP plugins are
built from them the way `accelerate launch` does (the ZeRO plugin only imports deepspeed when a run starts)."""

from __future__ import annotations

import pytest

from tests.conftest import REPO

CONFIGS = REPO / "recipes" / "accelerate"


def _load(name: str):
    from accelerate.commands.config.config_args import load_config_from_file

    return load_config_from_file(str(CONFIGS / f"{name}.yaml"))


def test_every_shipped_config_is_one_of_the_four():
    assert sorted(p.stem for p in CONFIGS.glob("*.yaml")) == ["ddp", "fsdp", "zero2", "zero3"]


@pytest.mark.parametrize("name, stage", [("zero2", 2), ("zero3", 3)])
def test_zero_configs_build_a_deepspeed_plugin(name, stage):
    from accelerate.utils import DeepSpeedPlugin, DistributedType

    cfg = _load(name)
    assert cfg.distributed_type == DistributedType.DEEPSPEED and cfg.mixed_precision == "bf16"
    ds = cfg.deepspeed_config
    plugin = DeepSpeedPlugin(
        zero_stage=ds["zero_stage"],
        offload_optimizer_device=ds["offload_optimizer_device"],
        offload_param_device=ds["offload_param_device"],
        zero3_init_flag=ds["zero3_init_flag"],
        zero3_save_16bit_model=ds.get("zero3_save_16bit_model", False),
    )
    zero = plugin.deepspeed_config["zero_optimization"]
    assert zero["stage"] == stage and zero["offload_optimizer"]["device"] == "none"
    # Batch sizes stay "auto": the Trainer fills them from the recipe's [train] table.
    assert plugin.deepspeed_config["train_micro_batch_size_per_gpu"] == "auto"
    if stage == 3:  # ZeRO-3 must gather full weights at save, or the output would hold shards only
        assert zero["stage3_gather_16bit_weights_on_model_save"] is True


def test_fsdp_and_ddp_configs():
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    ddp = _load("ddp")
    assert ddp.distributed_type == DistributedType.MULTI_GPU and ddp.num_machines == 1
    cfg = _load("fsdp")
    assert cfg.distributed_type == DistributedType.FSDP
    f = cfg.fsdp_config
    plugin = FullyShardedDataParallelPlugin(
        fsdp_version=f["fsdp_version"],
        auto_wrap_policy=f["fsdp_auto_wrap_policy"],
        reshard_after_forward=f["fsdp_reshard_after_forward"],
        state_dict_type=f["fsdp_state_dict_type"],
        cpu_ram_efficient_loading=f["fsdp_cpu_ram_efficient_loading"],
    )
    assert plugin.fsdp_version == 2 and "FULL_STATE_DICT" in str(plugin.state_dict_type)
