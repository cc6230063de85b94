"""Helpers and fixtures shared by tests/unit/test_age_transformer.py and
tests/e2e/test_age_transformer.py."""

import os
import numpy as np
from facejax import config_lib
from helpers import ROOT


ONE_DEVICE = (("data", 1), ("fsdp", 1), ("model", 1))


# The learning run (trained once per module, reused by the report and CLI
# tests): the smoke config's one 32 px stage of 600 steps (its w_recon);
# the smooth regressor is the age loss and DEX (not used in training)
# judges the edits.
SIZE = 32


STEPS = 800


BATCH = 16


def _config(age_data, loss_workdir, eval_workdir=None, **overrides):
  values = {
      "data.root": age_data, "age_loss.estimator": "regressor",
      "age_loss.workdir": loss_workdir,
      "data.image_size": SIZE, "data.batch_size": BATCH,
      "data.eval_batch_size": 16, "eval_every_steps": STEPS,
      "ckpt.every_steps": STEPS, "model.num_res_blocks": 1,
      "eval.estimator.estimator": "dex", "mesh": ONE_DEVICE}
  if eval_workdir:
    values["eval.estimator.workdir"] = eval_workdir
  values.update(overrides)
  return config_lib.load_config(
      os.path.join(ROOT, "configs", "age_transformer.py:smoke"), values)


def _torch_state_dicts(rng, with_v=True):
  """The official checkpoint's names and shapes (model_lib.md section 10)."""
  def sn(prefix, o, i, k):
    d = {f"{prefix}.weight_orig": rng.normal(size=(o, i, k, k)),
         f"{prefix}.bias": rng.normal(size=(o,)),
         f"{prefix}.weight_u": rng.normal(size=(o,))}
    if with_v:
      d[f"{prefix}.weight_v"] = rng.normal(size=(i * k * k,))
    return d

  def norm(prefix, c, running=False):
    d = {f"{prefix}.weight": rng.normal(size=(c,)),
         f"{prefix}.bias": rng.normal(size=(c,))}
    if running:
      d.update({f"{prefix}.running_mean": rng.normal(size=(c,)),
                f"{prefix}.running_var": rng.uniform(size=(c,)),
                f"{prefix}.num_batches_tracked": np.array(7)})
    return d

  enc = {**sn("conv_1.conv", 32, 3, 9), **norm("conv_1.norm", 32),
         **sn("conv_2.conv", 64, 32, 3), **norm("conv_2.norm", 64),
         **sn("conv_3.conv", 128, 64, 3), **norm("conv_3.norm", 128)}
  for i in range(4):
    for j in range(2):
      p = f"res_block.{i}.block.{j}"
      enc.update({**sn(f"{p}.conv", 128, 128, 3), **norm(f"{p}.norm", 128)})
  dec = {**sn("conv_1.1.conv", 64, 256, 3), **norm("conv_1.1.norm", 64),
         **sn("conv_2.1.conv", 32, 128, 3), **norm("conv_2.1.norm", 32),
         "conv_3.1.weight": rng.normal(size=(3, 32, 9, 9)),
         "conv_3.1.bias": rng.normal(size=(3,))}
  mlp = {"fc_mix.weight": rng.normal(size=(128, 101))}
  dis = {}
  for i, (o, c) in enumerate(((32, 3), (64, 32), (128, 64), (256, 128),
                              (512, 256), (1, 512))):
    dis.update(sn(f"conv.{i}.conv", o, c, 4))
    if 1 <= i <= 4:
      dis.update(norm(f"conv.{i}.norm", o, running=True))
  cast = lambda d: {k: np.asarray(v, np.float32) if v.dtype != np.int64
                    else v for k, v in d.items()}
  return {"enc": cast(enc), "dec": cast(dec), "mlp_style": cast(mlp),
          "dis": cast(dis)}
