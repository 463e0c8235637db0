"""Agentic text-to-SQL: the model may run read-only queries on the question's database before it answers.

One interaction, used by training and evaluation alike:

- the prompt is the usual chat prompt, rendered with one tool, `execute_sql(query)`, in the chat template's tool
  format (Qwen2.5 / Hermes: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`);
- each assistant turn is parsed by `parse_turn`; every tool call runs through `SQLEnvironment.execute_sql`, which
  executes the query in the same `SQLExecutor` sandbox as the rewards (one guard, timeout, row cap, memory cap)
  and returns a size-capped text rendering of the result, or the error / refusal; a malformed call gets an error
  observation, never a crash;
- the tool results go back as `tool` messages, rendered by the template, and the model continues, for at most
  `[agent] max_turns` rounds of tool calls;
- the answer is the last ```sql block in the assistant text after the last tool result (`answer_text`); an answer
  without a code block is no answer, and is scored like an empty completion. The reward components and eval
  score it exactly as they score a single-turn completion.

`grpo` with an `[agent]` table trains it through TRL's `environment_factory` (one `SQLEnvironment` per rollout,
`GRPOConfig.max_tool_calling_iterations = max_turns`); `eval` with `eval.agent = true` runs the same loop
(`agent_outputs`) with our generators. Nothing here imports torch at module level.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from nl2sql_align.errors import RecipeError
from nl2sql_align.sql import Database, ExecResult, SQLExecutor

log = logging.getLogger(__name__)

TOOL_NAME = "execute_sql"
_TOOL_CALL = re.compile(r"<tool_call>(.*?)(?:</tool_call>|\Z)", re.DOTALL)


# ---------------------------------------------------------------------------------------------------------
# Parsing an assistant turn


class MalformedCall(str):
    """The text of a tool call that could not be parsed, handed to the tool as its argument so that the model
    sees an error observation (TRL's own parser would turn the call into plain text and end the rollout)."""

    reason: str = ""

    def __new__(cls, raw: str, reason: str) -> MalformedCall:
        obj = super().__new__(cls, raw)
        obj.reason = reason
        return obj


def _one_call(raw: str) -> dict:
    """One `<tool_call>` body -> a call dict; anything unreadable (bad JSON, JSON nested past the recursion limit,
    a number past Python's digit limit) becomes a malformed call, never an exception."""
    try:
        return _parse_call(raw)
    except Exception as e:  # noqa: BLE001  untrusted model output: RecursionError, ValueError, MemoryError...
        return _malformed(raw, f"the tool call could not be read ({type(e).__name__})")


def _parse_call(raw: str) -> dict:
    body = raw.strip()
    try:
        call = json.loads(body)
    except json.JSONDecodeError as e:
        return _malformed(raw, f"the tool call is not valid JSON ({e.msg} at character {e.pos})")
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        return _malformed(raw, 'a tool call is a JSON object {"name": ..., "arguments": {...}}')
    args = call.get("arguments", {})
    if isinstance(args, str):  # some models write the arguments as a JSON string
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return _malformed(raw, "the tool call's arguments are not a JSON object")
    if args is None:
        args = {}
    if not isinstance(args, dict):
        return _malformed(raw, "the tool call's arguments are not a JSON object")
    return {"type": "function", "function": {"name": call["name"], "arguments": args}}


def _malformed(raw: str, reason: str) -> dict:
    return {"type": "function", "function": {"name": TOOL_NAME, "arguments": {"query": MalformedCall(raw, reason)}}}


def parse_turn(text: str, end_tokens: tuple[str, ...] = ()) -> dict:
    """One generated assistant turn -> {"role": "assistant", "content": ..., "tool_calls": [...]} (tool_calls
    only when the turn makes any). `content` is the text outside the tool calls; generation stops at the first of
    `end_tokens` (the end-of-turn and padding tokens). Never raises."""
    text = text if isinstance(text, str) else ""
    for tok in end_tokens:
        if tok and tok in text:
            text = text.split(tok, 1)[0]
    calls = [_one_call(m) for m in _TOOL_CALL.findall(text)]
    content = _TOOL_CALL.sub("", text).strip() if calls else text.strip()
    msg: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        msg["tool_calls"] = calls
    return msg


def turn_ends(tokenizer) -> tuple[str, ...]:
    """The texts a generated turn ends at, in training (TRL's parser) and in eval alike: the tokenizer's EOS and
    pad, and ChatML's end-of-turn and end-of-text markers (a model whose EOS is another token still closes a
    ChatML turn with <|im_end|>)."""
    return tuple(
        dict.fromkeys(t for t in (tokenizer.eos_token, tokenizer.pad_token, "<|im_end|>", "<|endoftext|>") if t)
    )


def install_parser(tokenizer) -> None:
    """Make TRL parse generated turns with `parse_turn` (TRL calls `tokenizer.parse_response` when the tokenizer
    has a response template), so training and evaluation read tool calls the same way."""
    end = turn_ends(tokenizer)

    def parse_response(ids, prefix=None, tools=None, **kw):
        return parse_turn(tokenizer.decode(list(ids), skip_special_tokens=False), end)

    if getattr(tokenizer, "response_template", None) is None:
        # TRL only checks that one is set; TRL's own for the <tool_call> JSON format, so that a saved tokenizer's
        # parse_response works with plain transformers too.
        from trl.chat_template_utils import qwen3_template

        tokenizer.response_template = qwen3_template
    tokenizer.parse_response = parse_response


def agent_chat_template(tokenizer) -> None:
    """Give `tokenizer` a chat template that renders tool calls and tool results in the `<tool_call>` JSON format
    `parse_turn` reads: the model's own when it has one, else, for a ChatML template without tool support (the
    tiny demo model's, SmolLM2's), Qwen2.5's template (TRL ships it; the same text as ChatML for a conversation
    with a system message and no tools). Anything else is a RecipeError naming model.chat_template."""
    from trl.chat_template_utils import qwen2_5_chat_template, supports_tool_calling

    template = tokenizer.chat_template or ""
    if supports_tool_calling(tokenizer):
        if "<tool_call>" not in template:
            raise RecipeError(
                "[agent]: the model's chat template calls tools in a format other than Qwen2.5's "
                "<tool_call>{json}</tool_call>; set model.chat_template to a template that uses it"
            )
        return
    if "<|im_start|>" in template and tokenizer.convert_tokens_to_ids("<|im_start|>") != tokenizer.unk_token_id:
        log.info("[agent]: the chat template has no tool support; using Qwen2.5's ChatML template with tools")
        tokenizer.chat_template = qwen2_5_chat_template
        return
    raise RecipeError(
        "[agent]: the model's chat template cannot render tool calls; set model.chat_template to one that does "
        "(Qwen2.5's <tool_call> format)"
    )


def prepare_tokenizer(tokenizer) -> None:
    agent_chat_template(tokenizer)
    install_parser(tokenizer)


# ---------------------------------------------------------------------------------------------------------
# The environment


@dataclass
class ToolSettings:
    """What the tool shows: [agent] max_result_rows and max_result_chars."""

    max_rows: int = 10
    max_chars: int = 1000
    max_cell_chars: int = 60


def _cell(v: Any, limit: int) -> str:
    text = "NULL" if v is None else str(v)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def render_result(result: ExecResult, settings: ToolSettings | None = None) -> str:
    """A compact text rendering of a query's result (columns, the first rows, how many there were) or its
    error, capped at settings.max_chars characters."""
    s = settings or ToolSettings()
    if not result.ok:
        text = f"error: {result.error}"
    else:
        rows = result.rows or []
        n = f"{len(rows)}{'+' if result.truncated else ''}"
        lines = [f"{n} row{'s' if n != '1' else ''}; columns: " + " | ".join(result.columns or [])]
        lines += [" | ".join(_cell(v, s.max_cell_chars) for v in row) for row in rows[: s.max_rows]]
        if len(rows) > s.max_rows:
            lines.append(f"... {len(rows) - s.max_rows}{'+' if result.truncated else ''} more rows")
        text = "\n".join(lines)
    if len(text) > s.max_chars:
        marker = " ... [cut]"
        text = text[: max(0, s.max_chars - len(marker))] + marker
    return text


class SQLEnvironment:
    """One rollout's database (TRL's environment_factory makes one per rollout and calls `reset` with the
    dataset row). Its one tool runs a query through the shared sandboxed executor."""

    def __init__(self, executor: SQLExecutor, settings: ToolSettings | None = None):
        self._executor = executor
        self._settings = settings or ToolSettings()
        self._db: Database | None = None
        self.calls: list[tuple[str, str]] = []  # (query, observation) of this rollout

    def reset(self, db_path: str | None = None, db_engine: str = "sqlite", **row: Any) -> None:
        """Bind to the example's database; forget the last rollout's calls. Adds nothing to the prompt."""
        self._db = Database(db_path, db_engine) if db_path else None
        self.calls = []
        return None

    def execute_sql(self, query: str) -> str:
        """Run one read-only SQL query on the question's database and see the first rows of its result.

        Args:
            query: One SELECT statement in the database's SQL dialect.

        Returns:
            The result's row count, columns and first rows, or the error.
        """
        if isinstance(query, MalformedCall):
            observation = f"error: malformed tool call: {query.reason}"
        elif not isinstance(query, str):
            observation = f"error: query must be SQL text, got {type(query).__name__}"
        elif self._db is None:
            observation = "error: no database is bound to this conversation"
        else:
            observation = render_result(self._executor.execute(self._db, query), self._settings)
        self.calls.append((str(query), observation))
        return observation


def call_tool(env: SQLEnvironment, call: dict) -> tuple[str, str]:
    """(tool name, observation) for one parsed tool call, as TRL's tool loop makes it: an unknown tool or bad
    arguments give an error observation."""
    function = call.get("function") or {}
    name = function.get("name", "unknown")
    try:
        if call.get("type") != "function":
            raise ValueError(f"Unsupported tool call type: {call.get('type')}")
        if name != TOOL_NAME:
            raise ValueError(f"Tool {name} not found.")
        return name, str(env.execute_sql(**(function.get("arguments") or {})))
    except Exception as e:  # noqa: BLE001  the observation, as TRL's loop gives it
        return name, str({"error": str(e)})


# ---------------------------------------------------------------------------------------------------------
# Scoring: the answer of a multi-turn completion, and the turn penalty


def _messages(completion) -> list[dict]:
    if isinstance(completion, str):
        return [{"role": "assistant", "content": completion}]
    if isinstance(completion, dict):
        return [completion]
    return [m for m in completion or [] if isinstance(m, dict)]


def tool_calls_made(completion) -> int:
    """Tool results in a completion: the calls that ran (a call past the turn budget never runs)."""
    return sum(1 for m in _messages(completion) if m.get("role") == "tool")


def answer_text(completion) -> str:
    """The final answer of a multi-turn completion: the assistant text after the last tool result; "" (no
    answer) when that text holds no ``` code block."""
    msgs = _messages(completion)
    last_tool = max((i for i, m in enumerate(msgs) if m.get("role") == "tool"), default=-1)
    text = "\n".join(str(m.get("content") or "") for m in msgs[last_tool + 1 :] if m.get("role") == "assistant").strip()
    return text if "```" in text else ""


class AgentAnswerReward:
    """A reward component that scores the final answer (`answer_text`) of each multi-turn completion."""

    def __init__(self, fn):
        self.fn = fn
        self.__name__ = getattr(fn, "__name__", type(fn).__name__)

    def __call__(self, prompts=None, completions=(), completion_ids=None, **kw):
        answers = [answer_text(c) for c in completions]
        return self.fn(prompts=prompts, completions=answers, completion_ids=completion_ids, **kw)


class TurnPenalty:
    """[agent] turn_penalty: minus that much per tool call that ran."""

    __name__ = "turn_penalty"

    def __init__(self, penalty: float):
        self.penalty = penalty

    def __call__(self, prompts=None, completions=(), **kw) -> list[float]:
        return [-self.penalty * tool_calls_made(c) for c in completions]


def turns_of(completion) -> list[dict]:
    """Each turn of a completion for the completions log: assistant text, its tool calls, tool results."""
    out = []
    for m in _messages(completion):
        turn = {"role": m.get("role"), "content": m.get("content")}
        calls = m.get("tool_calls")
        if calls:
            turn["tool_calls"] = [
                {"name": (c.get("function") or {}).get("name"), "arguments": (c.get("function") or {}).get("arguments")}
                for c in calls
            ]
        out.append(turn)
    return out


# ---------------------------------------------------------------------------------------------------------
# Training: what GRPOTrainer gets


def tool_settings(section) -> ToolSettings:
    return ToolSettings(max_rows=section.max_result_rows, max_chars=section.max_result_chars)


def tool_executor(recipe, engine) -> tuple[SQLExecutor, bool]:
    """(the executor the tool uses, whether it is a new one to close): the reward engine's own pool, unless
    [agent] tool_timeout asks for another timeout; then a pool with the same guard, row cap and memory cap."""
    from nl2sql_align.recipe import RewardSection

    t = recipe.agent.tool_timeout
    if t is None or t == engine.executor.timeout:
        return engine.executor, False
    r = recipe.reward or RewardSection()
    return SQLExecutor(workers=1, timeout=t, row_cap=r.row_cap, memory_mb=r.memory_mb), True


def trainer_kwargs(
    recipe, engine, funcs: list, weights: list, tokenizer, args, holder: dict
) -> tuple[dict, list, list]:
    """GRPOTrainer's extra arguments for [agent], the reward functions (execution components scoring the final
    answer, plus the turn penalty) and their weights. Sets args.max_tool_calling_iterations; a tool executor of
    its own goes in holder["tool_executor"] (run_with_engine closes it)."""
    from nl2sql_align.rewards import SQLCheckReward

    section = recipe.agent
    prepare_tokenizer(tokenizer)
    args.max_tool_calling_iterations = section.max_turns
    executor, own = tool_executor(recipe, engine)
    if own:
        holder["tool_executor"] = executor
    settings = tool_settings(section)
    funcs = [AgentAnswerReward(f) if isinstance(f, SQLCheckReward) else f for f in funcs]
    weights = list(weights)
    if section.turn_penalty:
        funcs.append(TurnPenalty(section.turn_penalty))
        weights.append(1.0)
    return {"environment_factory": lambda: SQLEnvironment(executor, settings)}, funcs, weights


# ---------------------------------------------------------------------------------------------------------
# Evaluation: the same loop with our generators


@dataclass
class Episode:
    """One question's interaction: the rendered text so far, its messages, and the tokens spent."""

    text: str
    env: SQLEnvironment
    messages: list[dict] = field(default_factory=list)
    used: int = 0  # completion tokens so far (generated + tool results), as TRL counts max_completion_length
    done: bool = False


def _called_tools_dummy(name: str) -> list[dict]:
    return [
        {"role": "user", "content": "dummy"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"type": "function", "function": {"name": name, "arguments": {}}}],
        },
    ]


def turn_close(tokenizer) -> str:
    """The marker the chat template closes an assistant turn with: of `turn_ends`, the one its rendering of a
    turn that called a tool ends in (ChatML: <|im_end|>, whatever the EOS is), else the EOS. Eval appends it to
    a generated turn, so the conversation reads as the template writes it."""
    prefix = tokenizer.apply_chat_template(_called_tools_dummy(TOOL_NAME), tokenize=False)
    found = [(prefix.rindex(t), t) for t in turn_ends(tokenizer) if t in prefix]
    return max(found)[1] if found else tokenizer.eos_token or ""


def tool_suffix(tokenizer, tool_messages: list[dict]) -> str:
    """The template's text between an assistant turn that called tools (closed with `turn_close`) and the next
    assistant turn: the tool results and the generation prompt (what TRL's `_get_tool_suffix_ids` adds, as text)."""
    dummy = _called_tools_dummy(tool_messages[0]["name"])
    prefix = tokenizer.apply_chat_template(dummy, tokenize=False)
    full = tokenizer.apply_chat_template(dummy + tool_messages, tokenize=False, add_generation_prompt=True)
    close = turn_close(tokenizer)
    if close and close in prefix:
        prefix = prefix[: prefix.rindex(close) + len(close)]
    if not full.startswith(prefix):
        raise RecipeError("[agent]: the chat template does not render a conversation as a prefix of its extension")
    return full[len(prefix) :]


def agent_prompt_texts(tokenizer, examples, schema, system_prompt) -> list[str]:
    from nl2sql_align.data import build_messages

    tools = [SQLEnvironment(None).execute_sql]  # type: ignore[arg-type]  (only its schema is rendered)
    return [
        tokenizer.apply_chat_template(
            build_messages(ex, schema, system_prompt), tools=tools, tokenize=False, add_generation_prompt=True
        )
        for ex in examples
    ]


def _count(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def run_episodes(generator, examples, recipe, executor: SQLExecutor) -> list[Episode]:
    """Play every question's interaction with `generator` (greedy): generate a turn, run its tool calls, append
    the results, until a turn calls no tool, the turn budget ([agent] max_turns) is spent, or the token budget
    (eval.max_new_tokens for the whole completion, tool results included, as TRL's max_completion_length) is."""
    from nl2sql_align.recipe import AgentSection

    section = recipe.agent or AgentSection()
    tok = generator.tokenizer
    prepare_tokenizer(tok)
    e = recipe.eval
    settings = tool_settings(section)
    end = turn_ends(tok)
    prompts = agent_prompt_texts(tok, examples, recipe.data.schema, recipe.data.system_prompt)
    episodes = []
    for ex, text in zip(examples, prompts, strict=True):
        env = SQLEnvironment(executor, settings)
        env.reset(db_path=ex.db.path, db_engine=ex.db.engine)
        episodes.append(Episode(text, env))
    for turn in range(section.max_turns + 1):
        live = [ep for ep in episodes if not ep.done and ep.used < e.max_new_tokens]
        if not live:
            break
        budgets = [e.max_new_tokens - ep.used for ep in live]
        outs = generator.continue_texts([ep.text for ep in live], budgets, batch_size=e.batch_size)
        for ep, out in zip(live, outs, strict=True):
            _advance(ep, out, tok, end, turn == section.max_turns, e.max_new_tokens)
    return episodes


def _advance(ep: Episode, out: str, tok, end: tuple[str, ...], last: bool, budget: int) -> None:
    msg = parse_turn(out, end)
    ep.messages.append(msg)
    raw = out
    for t in end:  # the turn ends at its end-of-turn token (padding follows it in a batch)
        raw = raw.split(t, 1)[0]
    ep.text += raw + turn_close(tok)
    ep.used += _count(tok, raw) + 1
    if last or not msg.get("tool_calls"):
        ep.done = True
        return
    results = [call_tool(ep.env, c) for c in msg["tool_calls"]]
    tool_messages = [{"role": "tool", "name": n, "content": c} for n, c in results]
    suffix = tool_suffix(tok, tool_messages)
    cost = _count(tok, suffix)
    if ep.used + cost > budget:  # TRL drops a tool result that would overrun the completion budget, and stops
        ep.done = True
        return
    ep.messages += tool_messages
    ep.text += suffix
    ep.used += cost


def transcript(messages: list[dict]) -> str:
    """A completion's turns as readable text (per_example.jsonl's "output" for an agent eval)."""
    parts = []
    for m in messages:
        if m.get("role") == "tool":
            parts.append(f"[tool result]\n{m.get('content')}")
            continue
        if m.get("content"):
            parts.append(str(m["content"]))
        for c in m.get("tool_calls") or []:
            f = c.get("function") or {}
            parts.append(f"[tool call] {f.get('name')}({json.dumps(f.get('arguments'), ensure_ascii=False)})")
    return "\n".join(parts)


def agent_outputs(generator, examples, recipe) -> tuple[list[str], list[str], list[dict]]:
    """(transcripts, final answers' SQL, per-question agent facts) of `generator` on `examples` under [agent]
    and [eval]: the outputs `evaluate` scores, like a single-turn model's. Facts: `tool_calls` (calls answered by a
    tool result: a malformed one gets an error result and counts) and `assistant_turns` (the answer's
    included)."""
    from nl2sql_align.data import extract_sql
    from nl2sql_align.errors import UserError
    from nl2sql_align.recipe import AgentSection, RewardSection

    e = recipe.eval
    if e.samples is not None:
        raise UserError("eval.agent does not sample: leave eval.samples (--samples) unset")
    if not hasattr(generator, "continue_texts"):
        raise UserError(f"eval.agent: the {generator.backend} generator cannot continue a conversation")
    section = recipe.agent or AgentSection()
    if section.problem():
        raise UserError(section.problem())
    r = recipe.reward or RewardSection()
    timeout = section.tool_timeout or e.timeout
    with SQLExecutor(workers=e.workers, timeout=timeout, row_cap=r.row_cap, memory_mb=r.memory_mb) as executor:
        episodes = run_episodes(generator, examples, recipe, executor)
    texts = [transcript(ep.messages) for ep in episodes]
    answers = [extract_sql(answer_text(ep.messages)) for ep in episodes]
    facts = [
        {
            "tool_calls": tool_calls_made(ep.messages),
            "assistant_turns": sum(m.get("role") == "assistant" for m in ep.messages),
        }
        for ep in episodes
    ]
    return texts, answers, facts
