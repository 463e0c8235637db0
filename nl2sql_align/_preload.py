"""What the pipeline's forkserver imports once, so that each step forked from it starts without importing it
again (~7 s a step on 2 cores): the libraries every training step loads, after silencing their import-time noise
as the CLI does. A test imports this module, so a renamed module fails there, not silently in the forkserver
(which ignores an ImportError in what it preloads)."""

from nl2sql_align.logs import quiet_libraries

quiet_libraries()

import datasets  # noqa: E402, F401
import peft  # noqa: E402, F401
import torch  # noqa: E402, F401
import transformers  # noqa: E402, F401
import trl.trainer.dpo_trainer  # noqa: E402, F401
import trl.trainer.grpo_trainer  # noqa: E402, F401
import trl.trainer.reward_trainer  # noqa: E402, F401
import trl.trainer.sft_trainer  # noqa: E402, F401

import nl2sql_align.cli  # noqa: E402, F401
