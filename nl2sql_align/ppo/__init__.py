"""Our own PPO for text-to-SQL (TRL removed PPOTrainer and AutoModelForCausalLMWithValueHead in 1.13).

Design note. Per rollout, for each prompt x a completion y = (a_1..a_T) is sampled from pi_theta (temperature,
top-p from the recipe; it ends at EOS or where its ```sql block closes). Then, with everything detached:

    score(x, y)  = sum_k w_k R_k(x, y)      execution components (rewards/) and/or a reward model from `rm`
    kl_t         = log pi_old(a_t | s_t) - log pi_ref(a_t | s_t)                    (k1 estimator)
    r_t          = -beta kl_t  +  [t = T] score(x, y)                               (Ziegler et al. 2019)
    delta_t      = r_t + gamma V(s_{t+1}) - V(s_t),   A_t = delta_t + gamma lam A_{t+1}   (GAE, Schulman 2016)
    R_t          = A_t + V(s_t);  A whitened over the rollout's tokens

and for `num_ppo_epochs` passes over `num_mini_batches` shuffled minibatches (Schulman et al. 2017):

    ratio_t = exp(log pi_theta(a_t|s_t) - log pi_old(a_t|s_t))
    L_pi    = mean_t max(-A_t ratio_t, -A_t clip(ratio_t, 1-eps, 1+eps))
    L_V     = 0.5 mean_t max((V_t - R_t)^2, (V_old,t + clip(V_t - V_old,t, -eps_v, eps_v) - R_t)^2)
    L       = L_pi + vf_coef L_V - ent_coef H

beta is fixed, or adapted towards a target KL: beta <- beta (1 + clip(KL/target - 1, +-0.2) n / horizon).
The reference policy is the starting model: with LoRA the same backbone with adapters disabled (no second
copy), otherwise a frozen copy. The critic is a value head on the policy's backbone (see ppo/model.py for why).

Implementation details follow "The N+ Implementation Details of RLHF with PPO" (Huang et al. 2024, which
documents OpenAI's lm-human-preferences and TRL's PPOv2): no dropout, the score on the last real token,
log-probs at the sampling temperature, values of the state before each token, per-token KL in the reward,
an optional penalty for completions that never end (`missing_eos_penalty`).
"""

from nl2sql_align.ppo.core import (
    KLController,
    gae,
    masked_mean,
    masked_whiten,
    policy_loss,
    token_rewards,
    value_loss,
)

__all__ = ["KLController", "gae", "masked_mean", "masked_whiten", "policy_loss", "token_rewards", "value_loss"]
